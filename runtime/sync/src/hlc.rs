//! Hybrid logical clock: physical milliseconds in the high 48 bits, a counter in the low 16,
//! so timestamps order causally even when device clocks disagree or stand still.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// A timestamp for a local event at physical time `now_ms`.
    pub fn now(&mut self, now_ms: u64) -> u64 {
        let phys = (now_ms & 0xFFFF_FFFF_FFFF) << 16;
        self.last = if phys > self.last {
            phys
        } else {
            self.last + 1
        };
        self.last
    }
    /// Merge a timestamp seen from a peer.
    pub fn observe(&mut self, remote: u64) {
        if remote > self.last {
            self.last = remote;
        }
    }
    pub fn last(&self) -> u64 {
        self.last
    }
}

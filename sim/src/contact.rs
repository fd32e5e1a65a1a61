//! One contact between two nodes: a real sync session each, driven over the pair's link in
//! virtual time (frames delayed by airtime and latency, lost, duplicated, reordered,
//! corrupted per direction), until both sides close (or one has closed and the other has
//! lingered two retransmission timeouts), the contact window ends, or either device loses
//! power. An attacker on the air replays into it frames overheard in earlier contacts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cairn_node::SessionSettings;
use cairn_sync::{Event, Reject, Role};

use crate::flash::Power;
use crate::fleet::SimNodeInner;
use crate::link::Direction;
use crate::rng::Rng;

/// What one contact did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContactReport {
    /// Bytes on the wire, both directions (frames sent, retransmissions included).
    pub bytes: u64,
    pub frames: u64,
    /// Both sessions finished the protocol.
    pub complete: bool,
    pub items: u64,
    pub rejected: [u32; Reject::COUNT],
    /// Bytes of data frames the first time each was sent (no retransmissions, no
    /// ack-only frames): `bytes / first_sends` is what the channel costs per byte carried.
    pub first_sends: u64,
    /// Frames the link dropped, and copies it delivered damaged.
    pub lost: u64,
    pub corrupted: u64,
    /// Frames the sessions sent again (their retransmission timers).
    pub retransmits: u64,
}

/// The link a contact runs over.
pub struct Contact<'l> {
    /// Initiator → responder, and back.
    pub ab: &'l Direction,
    pub ba: &'l Direction,
    pub mtu: usize,
    pub start_ms: u64,
    pub window_ms: u64,
    pub byte_budget: u64,
}

/// An attacker on the air: it overhears frames of every contact and replays some into
/// later ones, in either direction, at random times.
#[derive(Default)]
pub struct Replayer {
    pub captured: Vec<Vec<u8>>,
    heard: u64,
}

impl Replayer {
    fn overhear(&mut self, frame: &[u8], rng: &mut Rng) {
        self.heard += 1;
        if self.captured.len() < 256 {
            self.captured.push(frame.to_vec());
        } else if self.heard.is_multiple_of(7) {
            let at = rng.range(0, 255) as usize;
            self.captured[at] = frame.to_vec();
        }
    }
}

const MAX_STEPS: usize = 200_000;

/// Frames in flight: (arrival, sequence, to the responder, bytes).
type InFlight = BinaryHeap<Reverse<(u64, u64, bool, Vec<u8>)>>;

/// Run a contact: `a` initiates, `b` responds; `attacker`, if any, replays overheard
/// frames into it.
pub fn run(
    a: &mut SimNodeInner<'_>,
    b: &mut SimNodeInner<'_>,
    power: (&Power, &Power),
    c: &Contact<'_>,
    rng: &mut Rng,
    mut attacker: Option<&mut Replayer>,
) -> Result<ContactReport, String> {
    // Retransmit after a round trip of full frames plus the time a full window of frames
    // takes on the air (an acknowledgement waits behind the peer's own frames): what a
    // driver that knows its radio configures.
    let airtime = |d: &Direction| (c.mtu as u64 * 8000).div_ceil(d.bandwidth_bps.max(1));
    let rtt = c.ab.latency_ms + c.ba.latency_ms + airtime(c.ab) + airtime(c.ba);
    let drain = cairn_sync::session::WINDOW as u64 * airtime(c.ab).max(airtime(c.ba));
    let settings = SessionSettings {
        mtu: c.mtu,
        byte_budget: c.byte_budget,
        rto_ms: 2 * rtt + drain + 50,
    };
    let (ra, rb) = (rng.bytes::<48>(), rng.bytes::<48>());
    let t0 = c.start_ms;
    let end = t0 + c.window_ms;
    let mut sa = a
        .session(Role::Initiator, settings, &ra, t0)
        .map_err(|e| format!("session: {e:?}"))?;
    let mut sb = b
        .session(Role::Responder, settings, &rb, t0)
        .map_err(|e| format!("session: {e:?}"))?;
    let mut q: InFlight = BinaryHeap::new();
    let mut seq = 0u64;
    let (mut busy_a, mut busy_b) = (t0, t0);
    let mut now = t0;
    let mut rep = ContactReport::default();
    let mut buf = vec![0u8; c.mtu.max(64)];
    let mut sent_seq = [None::<u32>; 2];
    if let Some(r) = attacker.as_mut() {
        for _ in 0..3.min(r.captured.len()) {
            let f = r.captured[rng.range(0, r.captured.len() as u64 - 1) as usize].clone();
            let at = t0 + rng.range(1, c.window_ms.max(2));
            seq += 1;
            q.push(Reverse((at, seq, rng.chance(0.5), f)));
        }
    }
    let mut linger_until: Option<u64> = None;
    for _ in 0..MAX_STEPS {
        #[allow(clippy::needless_range_loop)] // `side` picks the session, too
        for side in 0..2 {
            // A radio sends one frame at a time: take the next from the session only when
            // the last one is on the air.
            loop {
                let busy = if side == 0 { busy_a } else { busy_b };
                if busy > now {
                    break;
                }
                let n = if side == 0 {
                    sa.poll_transmit(&mut buf)
                } else {
                    sb.poll_transmit(&mut buf)
                };
                let Some(n) = n else { break };
                rep.bytes += n as u64;
                rep.frames += 1;
                if let Ok(h) = cairn_sync::frame::Header::parse(&buf[..n]) {
                    let data = h.flags & cairn_sync::frame::F_ACK == 0;
                    if data && sent_seq[side].is_none_or(|s| h.seq > s) {
                        sent_seq[side] = Some(h.seq);
                        rep.first_sends += n as u64;
                    }
                }
                if let Some(r) = attacker.as_mut() {
                    r.overhear(&buf[..n], rng);
                }
                let (dir, busy) = if side == 0 {
                    (c.ab, &mut busy_a)
                } else {
                    (c.ba, &mut busy_b)
                };
                let copies = dir.carry(&buf[..n], now, busy, rng);
                rep.lost += copies.is_empty() as u64;
                for (at, f) in copies {
                    rep.corrupted += (f[..] != buf[..n]) as u64;
                    seq += 1;
                    q.push(Reverse((at, seq, side == 0, f)));
                }
            }
        }
        if (sa.is_closed() && sb.is_closed()) || power.0.is_dead() || power.1.is_dead() {
            break;
        }
        // One side closed: the other may still need its last acknowledgements; then a
        // driver gives up on a silent peer.
        if sa.is_closed() || sb.is_closed() {
            let until = *linger_until.get_or_insert(now + 2 * settings.rto_ms);
            if now >= until {
                break;
            }
        }
        let next = [
            q.peek().map(|Reverse(x)| x.0),
            sa.poll_timeout(),
            sb.poll_timeout(),
            (busy_a > now).then_some(busy_a),
            (busy_b > now).then_some(busy_b),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(t) = next else { break };
        if t > end {
            break;
        }
        now = t.max(now + 1);
        while q.peek().is_some_and(|Reverse(x)| x.0 <= now) {
            let Some(Reverse((_, _, to_b, f))) = q.pop() else {
                break;
            };
            let _ = if to_b {
                sb.handle_input(&f, now)
            } else {
                sa.handle_input(&f, now)
            };
        }
        sa.handle_timeout(now);
        sb.handle_timeout(now);
    }
    let mut completes = 0;
    for s in [&mut sa, &mut sb] {
        while let Some(e) = s.poll_event() {
            completes += (e == Event::Complete) as u32;
        }
        let st = s.stats();
        rep.items += st.items_received;
        rep.retransmits += st.retransmits;
        for (r, v) in rep.rejected.iter_mut().zip(st.rejected) {
            *r += v;
        }
    }
    rep.complete = completes == 2;
    Ok(rep)
}

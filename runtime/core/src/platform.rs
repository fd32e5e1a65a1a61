//! Narrow traits for what a device provides. Implementations live at the edges
//! (cli, mcu, ffi, sim); nothing in cairn's runtime reads a clock or an RNG directly.

/// A monotonic clock.
///
/// Implementations MUST be monotonic (never go backwards) and MUST NOT block.
pub trait Clock {
    /// Microseconds since an arbitrary, fixed origin.
    fn now_us(&self) -> u64;
}

/// A source of random bytes.
///
/// Implementations for security use (keys, nonces) MUST be cryptographically secure; a
/// simulator MAY use a seeded generator so that runs replay bit for bit.
pub trait Rng {
    fn fill(&mut self, buf: &mut [u8]);
}

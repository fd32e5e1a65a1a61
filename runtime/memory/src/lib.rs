//! cairn-memory: what a device that works alone remembers.
//!
//! A log-structured store of [`Record`]s (an int8 embedding, a label, a few metadata fields,
//! a small payload) over storage shaped like NOR flash (`embedded_storage::nor_flash`):
//! appends are durable when [`Store::append`] returns, recovery after a power cut at any
//! byte keeps every acknowledged record and never a torn one, compaction reclaims deleted
//! and evicted records and rotates segments round-robin to spread erases. The layout is in
//! `runtime/memory/spec.md`.
//!
//! This crate owns no clock, no file and no thread: storage comes in through the
//! `NorFlash` trait (RAM, file and fault-injecting backends are in [`flash`]).
//!
//! Two RAM sides share the store and the log format: [`Store`] (`alloc`, grows) and
//! [`FixedStore`] (no allocation, capacities in const generics) for microcontrollers.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod format;
pub mod record;

#[cfg(feature = "alloc")]
pub mod consolidate;
#[cfg(feature = "alloc")]
pub mod flash;
#[cfg(feature = "alloc")]
pub mod hnsw;
#[cfg(feature = "alloc")]
pub mod ivf;
pub mod ram;
pub mod search;
#[allow(unsafe_code)]
mod simd;
pub mod slice_flash;
pub mod store;
#[cfg(all(test, feature = "alloc"))]
mod testutil;

pub use record::{Id, Record, RecordError};

/// SplitMix64's output function: spreads any seed (0 and small ones included) over all
/// 64 bits before it starts an xorshift generator (the index builders' sampling).
#[cfg(feature = "alloc")]
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(feature = "alloc")]
pub use store::Store;
pub use store::{Config, FixedStore, LogStore, Recovery, StoreError};

#[cfg(all(test, feature = "alloc"))]
mod tests {
    /// The published SplitMix64 sequence: the generator seeded with `s` first outputs
    /// `splitmix64(s)`, then `splitmix64(s + 0x9E37_79B9_7F4A_7C15)`.
    #[test]
    fn splitmix64_is_the_published_generator() {
        assert_eq!(super::splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(super::splitmix64(1_234_567), 6_457_827_717_110_365_317);
        assert_eq!(
            super::splitmix64(1_234_567u64.wrapping_add(0x9E37_79B9_7F4A_7C15)),
            3_203_168_211_198_807_973
        );
    }
}

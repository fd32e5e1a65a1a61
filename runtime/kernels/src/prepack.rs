//! Weights packed once per model instead of once per call (hosts, `std`).
//!
//! The implicit-GEMM conv and the FullyConnected path pack their constant int8 weights
//! into the register block's order. Without a cache that happens on every call (a
//! transformer's FullyConnected layers spend as long packing as multiplying). A
//! [`PackCache`] owned by a `HostModel` is lent to the running thread for the duration of
//! a run ([`with_cache`]); the kernels then pack each weight tensor on its first call and
//! reuse it. Entries are keyed by the weight bytes' address and length plus the packing
//! kind: the model bytes are borrowed by the `HostModel` for its whole life, so an
//! address cannot be reused by other weights while its cache exists. Without an active
//! cache (a bare `Interpreter`), kernels pack into a per-call scratch as before.

extern crate std;
use std::cell::RefCell;
use std::collections::HashMap;
use std::vec::Vec;

/// The cache's hasher: its keys are addresses, lengths and kind words the process
/// itself made (no one outside chooses them), and it hashes one on every op of a run, so
/// a multiply-rotate per word instead of SipHash (whose `entry` calls were 2% of a
/// 4628-op streaming model's run).
#[derive(Default)]
struct KeyHasher(u64);

impl core::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
}

type Keys = core::hash::BuildHasherDefault<KeyHasher>;

/// Packed weights of one model (a `HostModel` owns one).
#[derive(Default)]
pub struct PackCache {
    map: HashMap<(usize, usize, u32), Vec<i32>, Keys>,
    /// The model's bytes (addresses): only weights that lie there are kept. Anything else
    /// may change between runs (an int8 FullyConnected's or Conv's weights may be an arena
    /// tensor), so it is packed per call. Empty by default: nothing is kept.
    models: Vec<core::ops::Range<usize>>,
}

impl PackCache {
    /// A cache for the model in `bytes`, which must stay borrowed (unchanged, in place)
    /// while the cache lives, as a `HostModel` borrows its model's.
    pub fn for_model(bytes: &[u8]) -> PackCache {
        PackCache::default().and_model(bytes)
    }

    /// Keep the weights of the model in `bytes` too (a cache shared by several models).
    pub fn and_model(mut self, bytes: &[u8]) -> PackCache {
        let at = bytes.as_ptr() as usize;
        self.models.push(at..at + bytes.len());
        self
    }

    fn keeps(&self, at: usize) -> bool {
        self.models.iter().any(|m| m.contains(&at))
    }

    /// Bytes held by the packed copies.
    pub fn bytes(&self) -> usize {
        self.map.values().map(|v| v.len() * 4).sum()
    }
}

std::thread_local! {
    static ACTIVE: RefCell<Option<PackCache>> = const { RefCell::new(None) };
}

/// Run `f` with `cache` active on this thread (the kernels `f` runs fill and use it).
pub fn with_cache<R>(cache: &mut PackCache, f: impl FnOnce() -> R) -> R {
    struct Restore<'a>(&'a mut PackCache);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            // Move the cache back even when `f` unwinds.
            if let Some(c) = ACTIVE.with(|a| a.borrow_mut().take()) {
                *self.0 = c;
            }
        }
    }
    let taken = core::mem::take(cache);
    ACTIVE.with(|a| *a.borrow_mut() = Some(taken));
    let _restore = Restore(cache);
    f()
}

/// Whether the cache active on this thread (a `HostModel` run) keeps weights at address
/// `at` across runs: work that pays only when kept (recognizing an STFT's weights,
/// `fast_f32/dft.rs`; the GEMV's panels) is done only then.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) fn keeps(at: usize) -> bool {
    ACTIVE.with(|a| a.borrow().as_ref().is_some_and(|c| c.keeps(at)))
}

/// Call `use_` with the packed form of the weights `key` names: from the active cache
/// (built by `build` on first use) when the weights lie in its model's bytes, else built
/// into `scratch`.
/// (The x86_64 and aarch64 kernels pack.)
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) fn with_packed<R>(
    key: (usize, usize, u32),
    scratch: &mut Vec<i32>,
    build: impl FnOnce(&mut Vec<i32>),
    use_: impl FnOnce(&[i32]) -> R,
) -> R {
    ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        match a.as_mut() {
            Some(cache) if cache.keeps(key.0) => {
                let v = cache.map.entry(key).or_insert_with(|| {
                    let mut v = Vec::new();
                    build(&mut v);
                    v
                });
                use_(v)
            }
            _ => {
                drop(a);
                scratch.clear();
                build(scratch);
                use_(scratch)
            }
        }
    })
}

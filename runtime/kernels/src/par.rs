//! Splitting one op's work across the caller's threads (hosts, `std`).
//!
//! A [`Pool`] (a `HostModel` owns one, sized by its caller) is lent to the running thread
//! for the duration of a run ([`with_pool`]), like the weight cache of `prepack.rs`. Its
//! threads are the caller and `n − 1` workers (`par/workers.rs`), which take an op's parts
//! one at a time and poll briefly for the next op before they sleep. A kernel asks
//! [`parts_for`] how many parts its op is worth (one below [`MIN_PART_WORK`] multiply-adds
//! a part by default, so small ops stay on the calling thread) and hands [`run`] a closure
//! over part indices; [`split`] cuts a range into those parts. Kernels whose cost is not
//! multiply-adds (tables, softmax, element-wise) state it in multiply-adds of the same time.
//!
//! What a kernel must keep, so that every thread count gives the same bytes:
//! - each output element is computed by one part, with the same operations in the same
//!   order as on one thread (parts split *which* outputs, never a sum);
//! - anything shared (packed weights from the `prepack` cache, a packed input) is built
//!   before [`run`], on the calling thread, and only read by the parts; path counters
//!   (`paths.rs`) are noted on the calling thread;
//! - scratch a part writes is its own (a thread-local of the worker, or the stack).
//!
//! A kernel a part calls runs on that one thread (a nested [`run`] runs its parts in
//! order). Without `std` there are no threads: [`parts_for`] is 1 and [`run`] calls part 0.

use core::ops::Range;

/// Multiply-adds (or the same time of other work) below which a part is not worth a
/// thread hand-off: 64 K of the unit (25 int8 multiply-adds a nanosecond, the AVX2
/// `vpmaddwd` GEMM's rate) take ~2.6 µs, about twice what a hand-off to a polling worker
/// costs. It was 1 M (~40 µs), which left MobileNetV2's depthwise convs under 2 M
/// multiply-adds, its 1792 × 1000 classifier and every element-wise op on one thread:
/// two threads gave 1.13–1.3× there, 1.5× now (`examples/thread_ab.rs`, 2-core AMD EPYC).
pub const MIN_PART_WORK: u64 = 1 << 16;

/// The `i`-th of `parts` contiguous pieces of `0..len`, cut at multiples of `align`
/// (the last piece takes the remainder). Pieces are as even as `align` allows.
pub fn split(len: usize, parts: usize, align: usize, i: usize) -> Range<usize> {
    let align = align.max(1);
    let parts = parts.max(1);
    let units = len.div_ceil(align);
    let at = |p: usize| (units * p / parts * align).min(len);
    at(i)..at(i + 1)
}

#[cfg(feature = "std")]
mod workers;

#[cfg(feature = "std")]
mod pool {
    extern crate std;
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::workers::Workers;

    /// Most threads a [`Pool`] takes (a guard against a count from outside, not a tuning).
    pub const MAX_THREADS: usize = 256;

    /// Why a [`Pool`] was not built.
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum PoolError {
        /// More than [`MAX_THREADS`] threads asked for.
        TooMany { asked: usize },
        /// The operating system refused to start the threads.
        Spawn,
    }

    impl core::fmt::Display for PoolError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                PoolError::TooMany { asked } => {
                    write!(f, "{asked} threads asked for, at most {MAX_THREADS}")
                }
                PoolError::Spawn => write!(f, "the thread pool's threads did not start"),
            }
        }
    }

    impl std::error::Error for PoolError {}

    /// The threads a model's kernels split their work across: none of its own for 1 (the
    /// calling thread does everything), the calling thread and `n − 1` workers otherwise
    /// (`workers.rs`).
    #[derive(Clone, Default)]
    pub struct Pool {
        pool: Option<Lent>,
    }

    /// What a run lends its thread: the workers and the smallest part worth a worker.
    #[derive(Clone)]
    struct Lent {
        workers: Arc<Workers>,
        min_part_work: u64,
    }

    impl core::fmt::Debug for Pool {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "Pool({} threads)", self.threads())
        }
    }

    impl Pool {
        /// A pool of `threads` threads, the caller's included (0 and 1: the calling thread
        /// alone, no workers).
        pub fn new(threads: usize) -> Result<Pool, PoolError> {
            if threads > MAX_THREADS {
                return Err(PoolError::TooMany { asked: threads });
            }
            if threads <= 1 {
                return Ok(Pool { pool: None });
            }
            let workers = Workers::new(threads).map_err(|_| PoolError::Spawn)?;
            Ok(Pool {
                pool: Some(Lent {
                    workers: Arc::new(workers),
                    min_part_work: super::MIN_PART_WORK,
                }),
            })
        }

        /// Threads the work is split across (1 without a pool).
        pub fn threads(&self) -> usize {
            self.pool.as_ref().map_or(1, |p| p.workers.threads())
        }

        /// The same workers, splitting ops into parts of at least `work` multiply-adds
        /// (default [`MIN_PART_WORK`](super::MIN_PART_WORK)): 1 splits every op the
        /// kernels can split, which is what the thread-count tests use on small shapes.
        pub fn with_min_part_work(mut self, work: u64) -> Pool {
            if let Some(p) = self.pool.as_mut() {
                p.min_part_work = work.max(1);
            }
            self
        }
    }

    std::thread_local! {
        static ACTIVE: RefCell<Option<Lent>> = const { RefCell::new(None) };
    }

    /// Run `f` with `pool` lent to this thread: the kernels `f` runs split their work
    /// across it.
    pub fn with_pool<R>(pool: &Pool, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Lent>);
        impl Drop for Restore {
            fn drop(&mut self) {
                // Put back what was lent before, even when `f` unwinds.
                let before = self.0.take();
                ACTIVE.with(|a| *a.borrow_mut() = before);
            }
        }
        let before = ACTIVE.with(|a| a.replace(pool.pool.clone()));
        let _restore = Restore(before);
        f()
    }

    /// Threads lent to this thread (1 when none), and the smallest part worth a thread.
    pub fn lent() -> (usize, u64) {
        ACTIVE.with(|a| {
            a.borrow()
                .as_ref()
                .map_or((1, u64::MAX), |p| (p.workers.threads(), p.min_part_work))
        })
    }

    /// `f(0)`, …, `f(parts − 1)`, on this thread and the lent pool's workers (each call on
    /// one thread) when there is a pool and `parts > 1`, else in order on this thread.
    /// Returns when all are done; a panic in a part resumes here.
    pub fn run(parts: usize, f: impl Fn(usize) + Sync) {
        let pool = if parts > 1 {
            ACTIVE.with(|a| a.borrow().as_ref().map(|p| p.workers.clone()))
        } else {
            None
        };
        match pool {
            Some(workers) => workers.run(parts, &f),
            None => (0..parts).for_each(f),
        }
    }

    /// `f(i, &mut data[cut(i)..cut(i + 1)])` for `i` in `0..parts`, as [`run`] does
    /// (`cut` rises from `cut(0) = 0` to `cut(parts) = data.len()`).
    pub fn run_pieces<T: Send>(
        data: &mut [T],
        parts: usize,
        cut: impl Fn(usize) -> usize + Sync,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        assert!(
            cut(0) == 0 && cut(parts) == data.len(),
            "pieces cover the data"
        );
        let shared = super::SharedMut::new(data);
        run(parts, |i| {
            let (start, end) = (cut(i), cut(i + 1));
            assert!(start <= end, "pieces rise");
            // SAFETY: part i takes cut(i)..cut(i + 1); the cuts rise (asserted), so the
            // pieces of different parts are disjoint.
            #[allow(unsafe_code)]
            let piece = unsafe { shared.piece(start, end - start) };
            f(i, piece)
        });
    }
}

#[cfg(feature = "std")]
pub use pool::{lent, run, run_pieces, with_pool, Pool, PoolError, MAX_THREADS};

/// Without `std`: no threads.
#[cfg(not(feature = "std"))]
pub fn lent() -> (usize, u64) {
    (1, u64::MAX)
}

/// Without `std`: the parts in order on this thread.
#[cfg(not(feature = "std"))]
pub fn run(parts: usize, f: impl Fn(usize) + Sync) {
    (0..parts).for_each(f)
}

/// Without `std`: the pieces in order on this thread.
#[cfg(not(feature = "std"))]
pub fn run_pieces<T: Send>(
    data: &mut [T],
    parts: usize,
    cut: impl Fn(usize) -> usize + Sync,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let mut rest = data;
    for i in 0..parts {
        let (piece, tail) = rest.split_at_mut(cut(i + 1) - cut(i));
        f(i, piece);
        rest = tail;
    }
}

/// Parts an op of `work` multiply-adds splits into on the lent threads: at most
/// [`PARTS_PER_THREAD`] per thread, none smaller than the pool's smallest part
/// ([`MIN_PART_WORK`] by default), at least 1.
pub fn parts_for(work: u64) -> usize {
    let (threads, min_part_work) = lent();
    if threads <= 1 {
        return 1;
    }
    (work / min_part_work).clamp(1, (threads * PARTS_PER_THREAD) as u64) as usize
}

/// Parts an op of `work` multiply-adds over `units` equal units (channel blocks, row
/// bands, tiles) splits into, cut as [`split`] cuts: [`parts_for`]'s count at most, fewer
/// where fewer finish sooner. Few units cut into many parts leave uneven parts (6 blocks
/// of a 64-channel conv in 4 parts: 1, 2, 1, 2, and the last part found two threads each
/// done with 2), so each count from the threads' up to the most is scored by the time its
/// parts take when each goes to the thread free first, and the most parts of the least
/// time win (more parts absorb a thread that is late).
pub fn parts_over(work: u64, units: usize) -> usize {
    parts_and_span(work, units).0
}

/// Past this many threads [`parts_and_span`]'s scoring (threads² steps per count) is not
/// worth it.
const SCORED_THREADS: usize = 16;

/// [`parts_over`]'s count, with the units the busiest thread takes when each part goes
/// to the thread free first (its span; `units` where nothing is split), so a kernel that
/// can cut along two axes takes the evener one.
pub fn parts_and_span(work: u64, units: usize) -> (usize, usize) {
    let most = parts_for(work).min(units).max(1);
    let threads = lent().0.max(1);
    let span = |parts: usize| -> usize {
        let mut free = [0usize; SCORED_THREADS];
        let free = &mut free[..threads.min(SCORED_THREADS)];
        for i in 0..parts {
            let r = split(units, parts, 1, i);
            if let Some(first) = free.iter_mut().min() {
                *first += r.len();
            }
        }
        free.iter().copied().max().unwrap_or(0)
    };
    // Parts of eight units or more are within an eighth of each other.
    if most <= threads || units >= 8 * most || threads > SCORED_THREADS {
        return (most, span(most));
    }
    (threads..=most)
        .rev()
        .map(|p| (p, span(p)))
        .min_by_key(|&(_, s)| s)
        .unwrap_or((most, span(most)))
}

/// Parts per thread a big op is cut into: more than one, so a worker that finishes first
/// (or one whose core is busy elsewhere) leaves the rest to the others (rayon's work
/// stealing) instead of the op waiting on one late part.
pub const PARTS_PER_THREAD: usize = 2;

/// `f(range)` over `parts_over(work, units)` contiguous pieces of `0..len` cut at multiples of
/// `align`, each piece on its own worker: the helper for kernels whose units (channels,
/// rows, planes) are independent. With one part, `f(0..len)` on this thread.
pub fn par_ranges(len: usize, align: usize, work: u64, f: impl Fn(Range<usize>) + Sync) {
    let parts = parts_over(work, len.div_ceil(align.max(1)));
    run(parts, |i| {
        let r = split(len, parts, align, i);
        if !r.is_empty() {
            f(r)
        }
    });
}

/// `f(offset, piece)` over `parts_over(work, units)` contiguous pieces of `data` cut at multiples
/// of `align` (from the start of `data`), each piece on its own worker: the helper for
/// element-wise kernels, and for any kernel whose units (channels, planes) are contiguous
/// in its output. With one part, `f(0, data)` on this thread.
pub fn par_pieces<T: Send>(
    data: &mut [T],
    align: usize,
    work: u64,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let len = data.len();
    let parts = parts_over(work, len.div_ceil(align.max(1)));
    let cut = |i: usize| split(len, parts, align, i).start.min(len);
    let at = |i: usize| if i == parts { len } else { cut(i) };
    run_pieces(data, parts, at, |i, piece| f(at(i), piece));
}

/// Pixels a map's planes (one channel's pixels) must hold for a conv to split it by
/// pixels ([`pixel_parts`]) rather than by output channels.
pub const MIN_SPLIT_PLANE: usize = 1024;

/// Parts a conv of `work` multiply-adds over planes of `plane` pixels splits its pixels
/// into (each part a range of pixels, cut at multiples of `align`, of every channel), or
/// `None` where the planes are too small to split ([`MIN_SPLIT_PLANE`]) or one part does
/// it all.
pub fn pixel_parts(plane: usize, align: usize, work: u64) -> Option<usize> {
    if plane < MIN_SPLIT_PLANE {
        return None;
    }
    let parts = parts_over(work, plane.div_ceil(align.max(1)));
    (parts > 1).then_some(parts)
}

/// A mutable slice that parts of one [`run`] write at disjoint places, when the places
/// are not one contiguous piece per part (rows of every output channel, say). Bounds are
/// checked; disjointness is the caller's promise. (Unused where no kernel splits so:
/// microcontrollers.)
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: core::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a SharedMut is a `&mut [T]` handed to several threads; every access goes through
// `piece`, whose contract is that no two live pieces overlap, so sending it is as safe as
// sending disjoint `&mut` sub-slices.
#[allow(unsafe_code)]
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
#[allow(unsafe_code)]
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

#[cfg_attr(not(feature = "std"), allow(dead_code))]
impl<'a, T> SharedMut<'a, T> {
    pub(crate) fn new(s: &'a mut [T]) -> SharedMut<'a, T> {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _borrow: core::marker::PhantomData,
        }
    }

    /// `&mut slice[start..start + len]`.
    ///
    /// # Safety
    /// No other piece overlapping this one is alive at the same time (parts of one run
    /// take disjoint pieces).
    #[allow(unsafe_code, clippy::mut_from_ref)]
    pub(crate) unsafe fn piece(&self, start: usize, len: usize) -> &mut [T] {
        assert!(
            start <= self.len && len <= self.len - start,
            "piece out of bounds"
        );
        // SAFETY: in bounds (asserted); not aliased (the caller's contract); the borrow
        // 'a of the whole slice outlives every piece.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// A pointer to `slice[start]`, where `slice[start..start + len]` is in bounds
    /// (asserted), for a kernel that writes scattered pieces of that span (one tile's
    /// bytes in each of several channel planes) with one bounds check; no reference to the
    /// span is made, so other parts may write the bytes of it that are theirs.
    ///
    /// # Safety
    /// Through the pointer the caller writes only bytes inside the span that no other
    /// part reads or writes meanwhile.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[allow(unsafe_code)]
    pub(crate) unsafe fn span(&self, start: usize, len: usize) -> *mut T {
        assert!(
            start <= self.len && len <= self.len - start,
            "span out of bounds"
        );
        // SAFETY: in bounds (asserted).
        unsafe { self.ptr.add(start) }
    }

    /// The slice's length (for the x86_64 f32 GEMMs' bounds checks).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The slice's start and length, for a kernel that reads it through a pointer while
    /// parts write pieces of it (it reads only what its own part wrote, or what no part
    /// writes).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn ptr(&self) -> (*const T, usize) {
        (self.ptr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_covers_the_range_once_at_aligned_cuts() {
        for len in 0..200 {
            for parts in 1..7 {
                for align in [1, 6, 16] {
                    let mut next = 0;
                    for i in 0..parts {
                        let r = split(len, parts, align, i);
                        assert_eq!(r.start, next);
                        assert!(r.start.is_multiple_of(align) || r.start == len);
                        next = r.end;
                    }
                    assert_eq!(next, len);
                }
            }
        }
    }
}

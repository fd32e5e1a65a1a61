//! The threads of a [`Pool`](super::Pool) (hosts, `std`): `threads − 1` workers beside the
//! thread that runs the model, which claims parts of an op like any worker.
//!
//! An op's parts are dealt out in contiguous shares, one a thread (the caller's share is
//! the first, worker `i`'s the `i`-th after it), so that consecutive ops split along the
//! same axis give each thread the same region of the data: what one op's part wrote is
//! in the cache of the core that reads it next, instead of half of it being fetched from
//! the other core's. Each share is claimed a part at a time from its front by its thread;
//! a thread done with its own share takes parts from the back of the others' (work
//! stealing), so a late thread still leaves no part waiting on it.
//! A worker that runs out of parts polls for the next op for [`SPIN`] before it sleeps:
//! the ops of one model run follow each other within microseconds, and waking a sleeping
//! thread costs tens to hundreds of them (more than a small op takes).
//!
//! What it must never do: run a part of an op after the op's [`Workers::run`] returned (the
//! closure borrows the caller's stack), or run two ops at once (a second caller, or a part
//! that splits again, runs its parts alone on its own thread).

extern crate std;
use std::any::Any;
use std::boxed::Box;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::vec::Vec;

/// How long a worker with nothing to do polls for the next op before it sleeps: long
/// enough to bridge the runs of one-part ops between split ones (a Resize, a Concat, a
/// chain of small convs), so the next split op finds it awake. At 100 µs it slept
/// through them and paid a wake-up at the next split op: two threads on this project's
/// 2-core Zen 4 host, 100 µs → 2 ms, rec 7.8–9.4 → 6.8–6.9 ms, YOLOX 28.3–28.5 →
/// 23.5–23.6 ms, the orientation classifier 3.3–3.6 → 3.1 ms (`cairn run --threads 2
/// --runs 20`, interleaved). After a model's last op the worker polls (yielding its core
/// after `BUSY_POLLS`) for this long, then sleeps.
pub const SPIN: Duration = Duration::from_millis(2);

/// Polls of an idle worker (or a caller waiting on workers) before it starts yielding
/// its core between polls (a few microseconds of `pause`).
const BUSY_POLLS: u32 = 256;

/// Most parts one op is cut into here (a share's word holds 16 bits of them); an op cut
/// finer runs on the calling thread alone.
const MAX_PARTS: usize = 0xFFFF;

/// The op the workers are running: the caller's closure, on the caller's stack.
struct Job<'a> {
    part: &'a (dyn Fn(usize) + Sync),
}

/// What the calling thread and the workers share.
struct Shared {
    /// One word a thread: bits 32..64 the op's epoch, 16..32 the end of the thread's
    /// unclaimed share of its parts, 0..16 its start (empty when start ≥ end).
    shares: Vec<Share>,
    /// The op whose parts are being claimed (valid while any of them is unfinished).
    job: AtomicPtr<Job<'static>>,
    /// Parts of the current op finished (run or panicked).
    done: AtomicUsize,
    /// Workers asleep (or about to be) on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// The pool is being dropped: workers return.
    stop: AtomicBool,
    /// An op is in flight (held by its caller from publishing to the last part's end).
    busy: AtomicBool,
    /// The first panic of a part of the current op, resumed on the calling thread.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// A thread's share word, alone in its cache line: the owner claims from it while the
/// others poll theirs.
#[repr(align(64))]
struct Share(AtomicU64);

/// A share's word: `epoch`, parts `start..end`.
fn share_word(epoch: u64, start: usize, end: usize) -> u64 {
    epoch << 32 | (end as u64) << 16 | start as u64
}

impl Shared {
    /// Thread `t`'s share of an op of `parts` parts: the `t`-th of `threads` contiguous,
    /// even pieces of `0..parts` (`par::split`'s cut).
    fn share(parts: usize, threads: usize, t: usize) -> (usize, usize) {
        (parts * t / threads, parts * (t + 1) / threads)
    }

    /// Take one part of share `s`: its first if `front` (the owner), else its last.
    fn take(&self, s: usize, front: bool) -> Option<usize> {
        let mut word = self.shares[s].0.load(SeqCst);
        loop {
            let (end, start) = ((word >> 16) & 0xFFFF, word & 0xFFFF);
            if start >= end {
                return None;
            }
            let (next, part) = if front {
                (word + 1, start)
            } else {
                (word - (1 << 16), end - 1)
            };
            match self.shares[s]
                .0
                .compare_exchange_weak(word, next, SeqCst, SeqCst)
            {
                Ok(_) => return Some(part as usize),
                Err(now) => word = now,
            }
        }
    }

    /// The next part thread `t` runs, now its own: the front of its share, else the
    /// back of the next thread's that has any left.
    fn claim(&self, t: usize) -> Option<usize> {
        let n = self.shares.len();
        self.take(t, true)
            .or_else(|| (1..n).find_map(|k| self.take((t + k) % n, false)))
    }

    fn has_work(&self) -> bool {
        self.shares.iter().any(|w| {
            let word = w.0.load(SeqCst);
            word & 0xFFFF < (word >> 16) & 0xFFFF
        })
    }

    /// Run part `i` of the current op (claimed by this thread) and count it done.
    fn run_claimed(&self, i: usize) {
        // SAFETY: part `i` was claimed and is not yet counted done, so the op's caller is
        // still inside `Workers::run` (it returns only once `done` reaches the part count)
        // and the job it published, on its stack, is alive and not replaced.
        #[allow(unsafe_code)]
        let job = unsafe { &*self.job.load(SeqCst) };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.part)(i)));
        if let Err(payload) = result {
            let mut first = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(payload);
        }
        self.done.fetch_add(1, SeqCst);
    }

    /// A worker's life: run parts as they come, poll for [`SPIN`] when there are none,
    /// then sleep until the next op or the pool's drop.
    fn work(&self, t: usize) {
        loop {
            while let Some(i) = self.claim(t) {
                self.run_claimed(i);
            }
            if self.stop.load(SeqCst) {
                return;
            }
            let since = Instant::now();
            let mut polls = 0u32;
            while !self.has_work() && !self.stop.load(SeqCst) {
                // Busy polls first, then polls that give the core to any thread waiting
                // for it (on a loaded machine, the thread this worker waits on).
                if polls < BUSY_POLLS {
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                polls = polls.saturating_add(1);
                if polls.is_multiple_of(64) && since.elapsed() > SPIN {
                    self.sleep_until_work();
                    break;
                }
            }
        }
    }

    fn sleep_until_work(&self) {
        let mut guard = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted before `has_work` is read, and a caller reads `sleepers` after it
        // publishes (both SeqCst): either this sees the op, or its caller sees a sleeper
        // and notifies under `sleep`, which this holds until `wait` releases it.
        self.sleepers.fetch_add(1, SeqCst);
        while !self.has_work() && !self.stop.load(SeqCst) {
            guard = self
                .wake
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, SeqCst);
    }

    fn notify(&self) {
        if self.sleepers.load(SeqCst) > 0 {
            let _guard = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
            self.wake.notify_all();
        }
    }
}

/// `threads − 1` worker threads; dropping it stops and joins them.
pub struct Workers {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// The calling thread and `threads − 1` workers (`threads` ≥ 2). `Err` when the
    /// operating system refuses a thread (those already started are stopped).
    pub fn new(threads: usize) -> Result<Workers, std::io::Error> {
        let shared = Arc::new(Shared {
            shares: (0..threads).map(|_| Share(AtomicU64::new(0))).collect(),
            job: AtomicPtr::new(core::ptr::null_mut()),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let mut workers = Workers {
            shared,
            handles: Vec::new(),
        };
        for i in 1..threads {
            let shared = workers.shared.clone();
            let handle = std::thread::Builder::new()
                .name(std::format!("cairn-worker-{i}"))
                .spawn(move || shared.work(i))?;
            workers.handles.push(handle);
        }
        Ok(workers)
    }

    /// Threads that run parts: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.handles.len() + 1
    }

    /// `part(0)`, …, `part(parts − 1)`, each once, on this thread and the workers; returns
    /// when all are done, resuming the first panic of a part. When another op is in
    /// flight on these workers (another thread sharing the pool, or a part that splits
    /// again), the parts run in order on this thread.
    pub fn run(&self, parts: usize, part: &(dyn Fn(usize) + Sync)) {
        let sh = &*self.shared;
        if parts <= 1 || parts > MAX_PARTS || sh.busy.swap(true, SeqCst) {
            (0..parts).for_each(part);
            return;
        }
        let job = Job { part };
        sh.job
            .store(&job as *const Job<'_> as *mut Job<'static>, SeqCst);
        sh.done.store(0, SeqCst);
        // Every share word carries the last op's epoch in its top bits (claims change only
        // the low 32), so the caller's own word says which comes next.
        let epoch = ((sh.shares[0].0.load(SeqCst) >> 32) + 1) & 0xFFFF_FFFF;
        let threads = sh.shares.len();
        for (t, word) in sh.shares.iter().enumerate() {
            let (start, end) = Shared::share(parts, threads, t);
            word.0.store(share_word(epoch, start, end), SeqCst);
        }
        sh.notify();
        while let Some(i) = sh.claim(0) {
            sh.run_claimed(i);
        }
        // The rest are running on workers: poll, then give the core away between polls
        // (a worker may be waiting for this core on a busy machine).
        let mut polls = 0u32;
        while sh.done.load(SeqCst) < parts {
            if polls < BUSY_POLLS {
                core::hint::spin_loop();
                polls += 1;
            } else {
                std::thread::yield_now();
            }
        }
        let panic = sh
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        sh.busy.store(false, SeqCst);
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _guard = self
                .shared
                .sleep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.wake.notify_all();
        }
        for handle in self.handles.drain(..) {
            // A worker's parts catch their panics, so a join error cannot come from them.
            let _ = handle.join();
        }
    }
}

//! How far two (or N) threads can scale on this machine, independent of cairn: each
//! thread runs the same work on its own data, once alone and then N at a time, and the
//! throughput ratio is printed for four kinds of work (a register-bound `vpmaddwd` loop,
//! and streaming add passes over buffers that stay in L2, in L3, or in DRAM), then for a
//! hand-off: each thread writes its own buffer and reads the next thread's, as an op reads
//! what the parts of the op before it wrote on other cores. A kernel's thread scaling is
//! read against these ceilings.
//!
//!     cargo run --release -p cairn-kernels --example thread_ceiling [-- THREADS]

use std::hint::black_box;
use std::time::Instant;

/// A register-bound multiply-add loop: eight independent accumulators.
fn compute(rounds: u64) -> i64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { compute_avx2(rounds) };
    }
    let mut acc = [0i64; 8];
    for r in 0..rounds {
        for (i, a) in acc.iter_mut().enumerate() {
            *a = a
                .wrapping_mul(3)
                .wrapping_add(black_box(r as i64 + i as i64));
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn compute_avx2(rounds: u64) -> i64 {
    use std::arch::x86_64::*;
    let x = _mm256_set1_epi32(black_box(3));
    let w = _mm256_set1_epi16(black_box(5));
    let mut acc = [_mm256_setzero_si256(); 8];
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            // Each accumulator feeds its own next product: nothing to hoist.
            *a = _mm256_add_epi32(x, _mm256_madd_epi16(*a, w));
        }
    }
    let mut s = 0i64;
    for a in acc {
        s += _mm256_extract_epi32::<0>(a) as i64;
    }
    s
}

/// `passes` passes of `c[i] += b[i]` over two buffers of `bytes` each.
fn stream(bytes: usize, passes: usize) -> u64 {
    let b = vec![1u64; bytes / 8];
    let mut c = vec![2u64; bytes / 8];
    for _ in 0..passes {
        for (c, &b) in c.iter_mut().zip(&b) {
            *c = c.wrapping_add(b);
        }
        black_box(&mut c);
    }
    c[7]
}

/// Seconds for `threads` threads to run `rounds` rounds of: each thread adds 1 to every
/// word of its own buffer of `bytes`, then (all waiting for all) sums the buffer of the
/// next thread (its own when alone), as an op's parts read what the parts of the op
/// before wrote. With two threads, every word read was written by the other core.
fn handoff(threads: usize, bytes: usize, rounds: usize) -> f64 {
    let bufs: Vec<std::sync::Mutex<Vec<u64>>> = (0..threads)
        .map(|_| std::sync::Mutex::new(vec![1u64; bytes / 8]))
        .collect();
    // A spinning barrier (a futex wake would cost more than the copy): the k-th wait
    // returns once every thread has arrived k times.
    let arrived = std::sync::atomic::AtomicUsize::new(0);
    let wait = |k: usize| {
        use std::sync::atomic::Ordering::SeqCst;
        arrived.fetch_add(1, SeqCst);
        while arrived.load(SeqCst) < k * threads {
            std::hint::spin_loop();
        }
    };
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..threads {
            let (bufs, wait) = (&bufs, &wait);
            s.spawn(move || {
                let mut sum = 0u64;
                for r in 0..rounds {
                    for v in bufs[i].lock().expect("own buffer").iter_mut() {
                        *v = v.wrapping_add(1);
                    }
                    wait(2 * r + 1);
                    let other = bufs[(i + 1) % threads].lock().expect("next buffer");
                    sum = other.iter().fold(sum, |a, &v| a.wrapping_add(v));
                    drop(other);
                    wait(2 * r + 2);
                }
                black_box(sum)
            });
        }
    });
    t.elapsed().as_secs_f64()
}

/// One kind of work, run by each thread.
type Work = Box<dyn Fn() -> u64 + Sync>;

/// Seconds for `threads` threads each running `work` once, at the same time.
fn timed(threads: usize, work: &(dyn Fn() -> u64 + Sync)) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| black_box(work())))
            .collect();
        for h in hs {
            h.join().expect("worker");
        }
    });
    t.elapsed().as_secs_f64()
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let cases: [(&str, Work); 4] = [
        (
            "register-bound vpmaddwd",
            Box::new(|| compute(50_000_000) as u64),
        ),
        (
            "stream, 2 x 128 KiB (L2)",
            Box::new(|| stream(128 << 10, 8000)),
        ),
        ("stream, 2 x 4 MiB (L3)", Box::new(|| stream(4 << 20, 250))),
        (
            "stream, 2 x 64 MiB (DRAM)",
            Box::new(|| stream(64 << 20, 16)),
        ),
    ];
    println!(
        "{threads} threads against 1, the best of 3 (throughput ratio; {threads}.00 is perfect):"
    );
    for (name, work) in &cases {
        ceiling_row(name, threads, |n| timed(n, work.as_ref()));
    }
    // Every word read comes from the other core's cache: what the kernels pay where an
    // op reads what another thread's part of the op before wrote.
    ceiling_row("hand-off, 128 KiB a thread", threads, |n| {
        handoff(n, 128 << 10, 4000)
    });
}

/// One line: `time(n)` (seconds for `n` threads) at one thread and at `threads`, best of 3.
fn ceiling_row(name: &str, threads: usize, time: impl Fn(usize) -> f64) {
    let best = |n: usize| (0..3).map(|_| time(n)).fold(f64::MAX, f64::min);
    let (one, many) = (best(1), best(threads));
    println!(
        "  {name:<28} {:.2}x  (1 thread {:.3} s, {threads} threads {:.3} s)",
        threads as f64 * one / many,
        one,
        many
    );
}

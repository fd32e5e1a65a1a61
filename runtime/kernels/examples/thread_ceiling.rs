//! How far two (or N) threads can scale on this machine, independent of cairn: each
//! thread runs the same work on its own data, once alone and then N at a time, and the
//! throughput ratio is printed for four kinds of work (a register-bound `vpmaddwd` loop,
//! and streaming add passes over buffers that stay in L2, in L3, or in DRAM). A kernel's
//! thread scaling is read against these ceilings.
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
        let best = |n: usize| {
            (0..3)
                .map(|_| timed(n, work.as_ref()))
                .fold(f64::MAX, f64::min)
        };
        let (one, many) = (best(1), best(threads));
        println!(
            "  {name:<28} {:.2}x  (1 thread {:.3} s, {threads} threads {:.3} s)",
            threads as f64 * one / many,
            one,
            many
        );
    }
}

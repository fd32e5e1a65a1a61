//! The int8 dot product of search. On x86_64 with `std`, an AVX2 version (run-time
//! detection): sign-extend 16 lanes to i16, `vpmaddwd` pairs into i32 — 16 MACs per
//! instruction, exact (|a·b| ≤ 2^14 per product, i32 sums for dims ≤ 4096). Same integer
//! result as the portable loop, which the compiler vectorizes on other targets.

// The graph-search kernels are used by the alloc-only HNSW index.
#![cfg_attr(not(feature = "alloc"), allow(dead_code))]

#[inline(always)]
fn dot_body(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as i16 as i32 * y as i16 as i32)
        .sum()
}

/// Inlines into callers compiled with AVX2 (see [`Kernel`]).
#[cfg(all(target_arch = "x86_64", feature = "std"))]
#[target_feature(enable = "avx2")]
#[inline]
fn dot_avx2(a: &[i8], b: &[i8]) -> i32 {
    use core::arch::x86_64::*;
    let n = a.len().min(b.len());
    let full = n / 16 * 16;
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i < full {
        // SAFETY: i + 16 <= n, both slices hold n bytes; unaligned loads.
        let (x, y) = unsafe {
            (
                _mm_loadu_si128(a.as_ptr().add(i) as *const __m128i),
                _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i),
            )
        };
        let p = _mm256_madd_epi16(_mm256_cvtepi8_epi16(x), _mm256_cvtepi8_epi16(y));
        acc = _mm256_add_epi32(acc, p);
        i += 16;
    }
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256(acc, 1),
    );
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s) + dot_body(&a[full..n], &b[full..n])
}

/// A dot product chosen once, for loops that call it many times (graph search): the loop
/// is compiled per kernel, so the AVX2 one inlines with no per-call feature check.
pub trait Kernel: Copy {
    fn dot(self, a: &[i8], b: &[i8]) -> i32;
}

/// The portable loop (vectorized by the compiler for the target).
#[derive(Clone, Copy)]
pub struct Portable;
impl Kernel for Portable {
    #[inline(always)]
    fn dot(self, a: &[i8], b: &[i8]) -> i32 {
        dot_body(a, b)
    }
}

/// AVX2; only constructed by [`with_kernel`] after detection.
#[cfg(all(target_arch = "x86_64", feature = "std"))]
#[derive(Clone, Copy)]
pub struct Avx2(());
#[cfg(all(target_arch = "x86_64", feature = "std"))]
impl Kernel for Avx2 {
    #[inline(always)]
    fn dot(self, a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: an `Avx2` exists only where AVX2 was detected.
        unsafe { dot_avx2(a, b) }
    }
}

/// Run `f` with the best kernel for this machine; with AVX2, `f` is compiled with AVX2
/// enabled so the kernel's loop inlines into it.
#[inline(always)]
pub fn with_kernel<R>(f: impl KernelFn<R>) -> R {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    if std::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn run<R>(f: impl KernelFn<R>) -> R {
            f.call(Avx2(()))
        }
        // SAFETY: AVX2 is present (checked above).
        return unsafe { run(f) };
    }
    f.call(Portable)
}

/// A computation generic over the kernel (closures cannot be generic).
pub trait KernelFn<R> {
    fn call<K: Kernel>(self, k: K) -> R;
}

/// Σ a[i]·b[i] over the common length.
#[inline]
pub fn dot(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_body(a, b)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::Kernel;

    #[test]
    fn simd_dot_equals_the_loop() {
        let mut s = 0x5EEDu64;
        for n in [0usize, 1, 15, 16, 17, 383, 384, 4096] {
            let mut v = || {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 33) as i8
            };
            let a: std::vec::Vec<i8> = (0..n).map(|_| v()).collect();
            let b: std::vec::Vec<i8> = (0..n).map(|_| v()).collect();
            let a = if n == 4096 { std::vec![-128i8; n] } else { a };
            let b = if n == 4096 { std::vec![-128i8; n] } else { b };
            assert_eq!(super::dot(&a, &b), super::dot_body(&a, &b), "n {n}");
            let want: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
            assert_eq!(super::Portable.dot(&a, &b), want, "n {n}");
            super::with_kernel(Check(&a, &b, want));
        }
        // Known values: the extremes and a sign mix.
        assert_eq!(
            super::Portable.dot(&[-128, 127, 3], &[-128, -128, -2]),
            16384 - 16256 - 6
        );
    }

    /// The kernel `with_kernel` picks agrees with the plain sum.
    struct Check<'a>(&'a [i8], &'a [i8], i32);
    impl super::KernelFn<()> for Check<'_> {
        fn call<K: super::Kernel>(self, k: K) {
            assert_eq!(k.dot(self.0, self.1), self.2);
        }
    }
}

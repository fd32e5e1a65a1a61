//! The int8 dot product of search, compiled a second time with AVX2 on x86_64 (run-time
//! detection with `std`) so the loop vectorizes 8 lanes wide; same integer result.

#[inline(always)]
fn dot_body(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as i16 as i32 * y as i16 as i32)
        .sum()
}

#[cfg(all(target_arch = "x86_64", feature = "std"))]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[i8], b: &[i8]) -> i32 {
    dot_body(a, b)
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

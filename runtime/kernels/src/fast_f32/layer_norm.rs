//! f32 LayerNorm over the last axes, eight lanes at a time with AVX2 + FMA (x86_64,
//! detected at run time with `std`; other hosts: the reference).
//!
//! Per row of `inner` values: the mean (summed in eight lanes, then across them), the
//! variance of `x − mean` the same way, `inv = 1 / sqrt(var + eps)`, then per element the
//! reference's `(x − mean) · inv · γ + β`, operation for operation (no fused
//! multiply-add), so only the two sums' order differs from the reference. Held to
//! `|fast − ref| ≤ (1e-5 + n·2.4e-7)·|γ|·(|x − mean| + mean|x|)·inv + 1e-6·|β| + 1e-7` for
//! rows of `n` (`tests/exact_f32_fast.rs`).

use cairn_core::{DType, ExecError, OpCall, TensorMut};

/// f32 LayerNorm through the vector path, or `None`.
pub fn layer_norm_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    #[cfg(target_arch = "x86_64")]
    {
        if !super::avx2::available() {
            return None;
        }
        let crate::norm::LnArgs {
            x: xt,
            gamma,
            beta,
            eps,
            outer,
            inner,
        } = crate::norm::LnArgs::of(call).ok()?;
        if xt.info.dtype != DType::F32 || out.info.dtype != DType::F32 {
            return None;
        }
        let len = outer.checked_mul(inner)?;
        let x = xt.f32s().ok()?;
        if inner == 0 || x.len() < len || out.data.len() < len.checked_mul(4)? {
            return None;
        }
        let y = match out.f32s_mut() {
            Ok(y) => y,
            Err(e) => return Some(Err(e)),
        };
        let mut done = 0;
        if inner < avx2::NARROW {
            // Rows narrower than a vector (an NHWC map normalized over its 4 to 16
            // channels): eight rows at a time, one lane each.
            let blocks = outer / 8 * 8 * inner;
            for (xb, yb) in x[..blocks]
                .chunks_exact(8 * inner)
                .zip(y[..blocks].chunks_exact_mut(8 * inner))
            {
                // SAFETY: AVX2 and FMA are present (checked above).
                unsafe { avx2::eight_rows(xb, yb, gamma, beta, eps) };
            }
            done = blocks;
        }
        for (xr, yr) in x[done..len]
            .chunks_exact(inner)
            .zip(y[done..len].chunks_exact_mut(inner))
        {
            // SAFETY: AVX2 and FMA are present (checked above).
            unsafe { avx2::row(xr, yr, gamma, beta, eps) };
        }
        super::dispatch::taken();
        Some(Ok(()))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (call, out, DType::F32);
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    /// The sum of a vector's eight lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        _mm_cvtss_f32(h)
    }

    /// Rows narrower than this go eight at a time (`eight_rows`).
    pub const NARROW: usize = 8;

    /// Eight rows of `n` (< `NARROW`) values each (`x`, `y`: 8·n), one per lane: the same
    /// operations as `row`'s tail for each (the sums in element order, then
    /// `(x − mean) · inv · γ + β`), so the same values.
    ///
    /// # Safety
    /// AVX2 and FMA must be present. (Slice bounds are checked here.)
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn eight_rows(
        x: &[f32],
        y: &mut [f32],
        gamma: &[f32],
        beta: Option<&[f32]>,
        eps: f32,
    ) {
        let n = gamma.len();
        assert!(n < NARROW && x.len() == 8 * n && y.len() == 8 * n);
        assert!(beta.is_none_or(|b| b.len() == n));
        // Column k of the block: element k of each of the eight rows.
        let mut cols = [_mm256_setzero_ps(); NARROW];
        let mut t = [0f32; 8];
        for (k, c) in cols.iter_mut().enumerate().take(n) {
            for (j, v) in t.iter_mut().enumerate() {
                *v = x[j * n + k];
            }
            *c = _mm256_loadu_ps(t.as_ptr());
        }
        let mut sum = _mm256_setzero_ps();
        for c in &cols[..n] {
            sum = _mm256_add_ps(sum, *c);
        }
        let mean = _mm256_div_ps(sum, _mm256_set1_ps(n as f32));
        let mut var = _mm256_setzero_ps();
        for c in &cols[..n] {
            let d = _mm256_sub_ps(*c, mean);
            var = _mm256_add_ps(var, _mm256_mul_ps(d, d));
        }
        let var = _mm256_div_ps(var, _mm256_set1_ps(n as f32));
        let inv = _mm256_div_ps(
            _mm256_set1_ps(1.0),
            _mm256_sqrt_ps(_mm256_add_ps(var, _mm256_set1_ps(eps))),
        );
        for (k, c) in cols.iter().enumerate().take(n) {
            let d = _mm256_sub_ps(*c, mean);
            let v = _mm256_mul_ps(_mm256_mul_ps(d, inv), _mm256_set1_ps(gamma[k]));
            let v = _mm256_add_ps(v, _mm256_set1_ps(beta.map_or(0.0, |b| b[k])));
            _mm256_storeu_ps(t.as_mut_ptr(), v);
            for (j, &v) in t.iter().enumerate() {
                y[j * n + k] = v;
            }
        }
    }

    /// One row: `y = (x − mean) · inv · γ + β`.
    ///
    /// # Safety
    /// AVX2 and FMA must be present. (Slice bounds are checked here.)
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn row(x: &[f32], y: &mut [f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32) {
        let n = x.len();
        assert!(y.len() == n && gamma.len() == n && beta.is_none_or(|b| b.len() == n));
        let body = n - n % 8;
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < body {
            acc = _mm256_add_ps(acc, _mm256_loadu_ps(x.as_ptr().add(i)));
            i += 8;
        }
        let mut sum = hsum(acc);
        for &v in &x[body..] {
            sum += v;
        }
        let mean = sum / n as f32;
        let vm = _mm256_set1_ps(mean);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < body {
            let d = _mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), vm);
            acc = _mm256_fmadd_ps(d, d, acc);
            i += 8;
        }
        let mut var = hsum(acc);
        for &v in &x[body..] {
            let d = v - mean;
            var += d * d;
        }
        var /= n as f32;
        // The vector unit's square root (the same correctly rounded value): `libm::sqrtf`
        // is a legacy-SSE `sqrtss`, which in this AVX code stalled on the upper halves of
        // the registers, most of a 32-wide row's time.
        let inv = 1.0 / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(var + eps)));
        let vi = _mm256_set1_ps(inv);
        let mut i = 0;
        while i < body {
            let d = _mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), vm);
            let mut v = _mm256_mul_ps(_mm256_mul_ps(d, vi), _mm256_loadu_ps(gamma.as_ptr().add(i)));
            v = match beta {
                Some(b) => _mm256_add_ps(v, _mm256_loadu_ps(b.as_ptr().add(i))),
                // The reference adds 0 without β: a −0 result becomes +0 there too.
                None => _mm256_add_ps(v, _mm256_setzero_ps()),
            };
            _mm256_storeu_ps(y.as_mut_ptr().add(i), v);
            i += 8;
        }
        for k in body..n {
            y[k] = (x[k] - mean) * inv * gamma[k] + beta.map_or(0.0, |b| b[k]);
        }
    }
}

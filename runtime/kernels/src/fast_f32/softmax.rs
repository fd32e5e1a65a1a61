//! f32 Softmax, eight lanes at a time with AVX2 + FMA (x86_64, detected at run time with
//! `std`; other hosts: the reference).
//!
//! Over the last axis (`inner` = 1), per row: the maximum, then `e = exp(x − max)` (the
//! vector exp of `unary.rs`, within `ERR_REL` of libm's; 0 below f32's smallest normal,
//! whose subnormal products cost Intel cores a microcode assist each) stored and summed
//! in eight lanes,
//! then `e / sum` as the reference. Over another axis (`inner` > 1: a YOLOv8 head's
//! distribution over 16 bins, attention laid out channels-first), eight neighbouring
//! columns at a time: each lane walks its own column in the reference's order (maximum,
//! then the sum of the exps from the first element to the last, then the division).
//! Held to `|fast − ref| ≤ (2·ERR_REL + n·2.4e-7)·|ref| + 1e-9` for rows of `n`
//! (`tests/exact_f32_fast.rs`): the exp error on both sides of the division and the two
//! sums' rounding in different orders.

use cairn_core::{DType, ExecError, OpCall, TensorMut};

/// f32 Softmax through the vector path, or `None`.
pub fn softmax_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    #[cfg(target_arch = "x86_64")]
    {
        if !super::avx2::available() {
            return None;
        }
        let xt = call.req(0).ok()?;
        if xt.info.dtype != DType::F32 || out.info.dtype != DType::F32 {
            return None;
        }
        let (outer, n, inner) = (
            call.param(0) as usize,
            call.param(1) as usize,
            call.param(2) as usize,
        );
        let x = xt.f32s().ok()?;
        let len = outer.checked_mul(n)?;
        let len = len.checked_mul(inner)?;
        if n == 0 || inner == 0 || x.len() < len || out.data.len() < 4 * len {
            return None;
        }
        let y = match out.f32s_mut() {
            Ok(y) => y,
            Err(e) => return Some(Err(e)),
        };
        let (x, y) = (&x[..len], &mut y[..len]);
        if inner == 1 {
            for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
                // SAFETY: AVX2 and FMA are present (checked above).
                unsafe { avx2::row(xr, yr) };
            }
        } else {
            let block = n * inner;
            for (xb, yb) in x.chunks_exact(block).zip(y.chunks_exact_mut(block)) {
                // SAFETY: AVX2 and FMA are present (checked above).
                unsafe { avx2::columns(xb, yb, n, inner) };
            }
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
    use super::super::unary::avx2::exp_flush as exp;
    use core::arch::x86_64::*;

    /// One row: `y = softmax(x)`.
    ///
    /// # Safety
    /// AVX2 and FMA must be present. (Slice bounds are checked here.)
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn row(x: &[f32], y: &mut [f32]) {
        let n = x.len();
        assert!(y.len() == n);
        let mut vm = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n.
            let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) };
            // The running maximum second: a NaN element is skipped, as `f32::max` does.
            vm = _mm256_max_ps(v, vm);
            i += 8;
        }
        let mut m = hmax(vm);
        for &v in &x[i..] {
            m = m.max(v);
        }
        let vmax = _mm256_set1_ps(m);
        let mut vs = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n.
            let e = exp(_mm256_sub_ps(
                unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) },
                vmax,
            ));
            vs = _mm256_add_ps(vs, e);
            // SAFETY: i + 8 ≤ n = y.len().
            unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(i), e) };
            i += 8;
        }
        let mut sum = hsum(vs);
        if i < n {
            let mut buf = [m; 8];
            buf[..n - i].copy_from_slice(&x[i..]);
            // SAFETY: `buf` holds 8 floats.
            let e = exp(_mm256_sub_ps(
                unsafe { _mm256_loadu_ps(buf.as_ptr()) },
                vmax,
            ));
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), e) };
            for (d, &v) in y[i..].iter_mut().zip(&buf) {
                *d = v;
                sum += v;
            }
        }
        let vsum = _mm256_set1_ps(sum);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n = y.len().
            unsafe {
                let p = y.as_mut_ptr().add(i);
                _mm256_storeu_ps(p, _mm256_div_ps(_mm256_loadu_ps(p), vsum));
            }
            i += 8;
        }
        for v in &mut y[i..] {
            *v /= sum;
        }
    }

    /// `n` rows of `inner` columns: `y[k][i] = softmax over k of x[k][i]`, eight columns
    /// at a time (the last few masked).
    ///
    /// # Safety
    /// AVX2 and FMA must be present. (Slice bounds are checked here.)
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn columns(x: &[f32], y: &mut [f32], n: usize, inner: usize) {
        assert!(x.len() == n * inner && y.len() == n * inner);
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut i = 0;
        while i < inner {
            let w = (inner - i).min(8);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(w as i32), idx);
            let xp = x[i..].as_ptr();
            let yp = y[i..].as_mut_ptr();
            // Row k's lanes are the `w` floats at k·inner from column i, inside x and y
            // (k < n, i + w ≤ inner); masked-off lanes are neither read nor written. That
            // is the SAFETY of each masked load and store below.
            let mut vm = _mm256_set1_ps(f32::NEG_INFINITY);
            for k in 0..n {
                let v = unsafe { _mm256_maskload_ps(xp.wrapping_add(k * inner), mask) };
                // The running maximum second: a NaN element is skipped, as `f32::max` does.
                vm = _mm256_max_ps(v, vm);
            }
            let mut vs = _mm256_setzero_ps();
            for k in 0..n {
                let v = unsafe { _mm256_maskload_ps(xp.wrapping_add(k * inner), mask) };
                let e = exp(_mm256_sub_ps(v, vm));
                vs = _mm256_add_ps(vs, e);
                unsafe { _mm256_maskstore_ps(yp.wrapping_add(k * inner), mask, e) };
            }
            for k in 0..n {
                let at = yp.wrapping_add(k * inner);
                let e = unsafe { _mm256_maskload_ps(at, mask) };
                unsafe { _mm256_maskstore_ps(at, mask, _mm256_div_ps(e, vs)) };
            }
            i += 8;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hmax(v: __m256) -> f32 {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l))
    }
}

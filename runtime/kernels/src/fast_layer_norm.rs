//! int8 LayerNormalization on AVX2 (x86_64 hosts with `std`), bit-exact with
//! `norm::layer_norm`: the same f32 operations in the same order, so the same bytes.
//!
//! The reference sums each row's mean and variance one element after another; that order
//! is kept by putting eight rows in the eight lanes of a vector (each lane is one row's
//! sequential sum) instead of splitting a row across lanes. The rows of a block are
//! dequantized into a transposed block once (element `k` of row `r` at `8·k + r`, through a
//! 256-entry table: the same `(x − zx) as f32 · scale` products). The output pass has no
//! reduction, so it runs along each row, eight elements at a time, with the reference's
//! expression `((x − mean) · inv) · gamma + beta` and `quantize_f32` in vector form.
//! Only `1 / sqrt(var + eps)` is scalar (libm's `sqrtf`, as the reference).
//!
//! Not here (they keep the reference): f32 LayerNorm, rows longer than `MAX_INNER`.

use core::arch::x86_64::*;

use cairn_core::quant::quantize_f32;
use cairn_core::{DType, ExecError, OpCall, TensorMut};

use crate::util::qp;

/// Rows per block: one per lane.
const LANES: usize = 8;
/// Longest row (elements of the normalized axes) the transposed block holds (64 KB).
const MAX_INNER: usize = 2048;
/// Multiply-adds one element costs about as much time as (the unit of `crate::par`):
/// ~2.5 ns an element, 25 int8 multiply-adds a nanosecond.
const ELEMENT_WORK: u64 = 64;

/// int8 → int8 LayerNorm over rows of at most `MAX_INNER` elements on AVX2, or `None`
/// (the reference runs) for anything else.
pub fn layer_norm_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    if !crate::paths::avx2() {
        return None;
    }
    let crate::norm::LnArgs {
        x,
        gamma,
        beta,
        eps,
        outer,
        inner,
    } = crate::norm::LnArgs::of(call).ok()?;
    if x.info.dtype != DType::I8 || out.info.dtype != DType::I8 {
        return None;
    }
    let x_data = x.i8s().ok()?;
    let fits = inner > 0 && inner <= MAX_INNER && x_data.len() >= outer * inner;
    if !fits {
        return None;
    }
    let norm = Norm {
        gamma,
        beta,
        eps,
        qx: qp(&x.info),
        qy: qp(&out.info),
        inner,
    };
    let y = match out.i8s_mut() {
        Ok(y) if y.len() >= outer * inner => y,
        Ok(_) => return Some(Err(ExecError::Shape)),
        Err(e) => return Some(Err(e)),
    };
    crate::paths::note(crate::paths::Path::LayerNormRows);
    // Rows are independent: parts of whole eight-row blocks, each row in the lane it has
    // on one thread (a block's lanes do not mix), so the bytes do not depend on the split.
    let x_data = &x_data[..outer * inner];
    let work = (outer * inner) as u64 * ELEMENT_WORK;
    crate::par::par_pieces(&mut y[..outer * inner], LANES * inner, work, |at, y| {
        // SAFETY: AVX2 is present (checked above); both slices hold the same whole rows.
        unsafe { rows(&norm, &x_data[at..at + y.len()], y) };
    });
    Some(Ok(()))
}

/// The operands of one LayerNorm: per-element affine, epsilon, input and output
/// quantization, row length.
struct Norm<'a> {
    gamma: &'a [f32],
    beta: Option<&'a [f32]>,
    eps: f32,
    qx: (f32, i32),
    qy: (f32, i32),
    inner: usize,
}

/// Every row of `x` into `y`, eight rows per block (the last block repeats its last row in
/// the lanes past the end and drops their results).
///
/// # Safety
/// The CPU must support AVX2; `x` and `y` hold whole rows of `norm.inner`.
#[target_feature(enable = "avx2")]
unsafe fn rows(norm: &Norm<'_>, x: &[i8], y: &mut [i8]) {
    let inner = norm.inner;
    let outer = x.len() / inner;
    // The reference's dequantized value of every byte.
    let mut real = [0f32; 256];
    for (b, v) in real.iter_mut().enumerate() {
        *v = ((b as u8 as i8) as i32 - norm.qx.1) as f32 * norm.qx.0;
    }
    let mut block = [0f32; LANES * MAX_INNER];
    let n = _mm256_set1_ps(inner as f32);
    let mut o = 0;
    while o < outer {
        for lane in 0..LANES {
            let row = (o + lane).min(outer - 1);
            let xr = &x[row * inner..(row + 1) * inner];
            for (k, &b) in xr.iter().enumerate() {
                block[LANES * k + lane] = real[b as u8 as usize];
            }
        }
        let bp = block.as_ptr();
        // SAFETY (both loops): 8 floats at 8·k for k < inner <= MAX_INNER: inside `block`.
        let mut mean = _mm256_setzero_ps();
        for k in 0..inner {
            mean = _mm256_add_ps(mean, unsafe { _mm256_loadu_ps(bp.add(LANES * k)) });
        }
        let mean = _mm256_div_ps(mean, n);
        let mut var = _mm256_setzero_ps();
        for k in 0..inner {
            let d = _mm256_sub_ps(unsafe { _mm256_loadu_ps(bp.add(LANES * k)) }, mean);
            var = _mm256_add_ps(var, _mm256_mul_ps(d, d));
        }
        let var = _mm256_div_ps(var, n);
        let (mut means, mut vars) = ([0f32; LANES], [0f32; LANES]);
        // SAFETY: two arrays of 8 floats.
        unsafe {
            _mm256_storeu_ps(means.as_mut_ptr(), mean);
            _mm256_storeu_ps(vars.as_mut_ptr(), var);
        }
        for lane in 0..LANES.min(outer - o) {
            let row = o + lane;
            // The vector unit's square root (the same correctly rounded value), not
            // `libm::sqrtf`'s legacy-SSE `sqrtss`, which stalls in AVX code.
            let inv = 1.0 / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(vars[lane] + norm.eps)));
            let (xr, yr) = (
                &x[row * inner..(row + 1) * inner],
                &mut y[row * inner..(row + 1) * inner],
            );
            // SAFETY: AVX2 is present (this function's contract).
            unsafe { output_row(norm, means[lane], inv, xr, yr) };
        }
        o += LANES;
    }
}

/// `y[k] = quantize(((real(x[k]) − mean) · inv) · gamma[k] + beta[k])` along one row.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn output_row(norm: &Norm<'_>, mean: f32, inv: f32, x: &[i8], y: &mut [i8]) {
    let (sx, zx) = norm.qx;
    let (sy, zy) = norm.qy;
    let (vmean, vinv, vsx, vzx) = (
        _mm256_set1_ps(mean),
        _mm256_set1_ps(inv),
        _mm256_set1_ps(sx),
        _mm256_set1_epi32(zx),
    );
    let inner = x.len();
    let mut k = 0;
    while k + 8 <= inner {
        // SAFETY: 8 bytes of x, 8 floats of gamma and beta from k (k + 8 <= inner); the
        // loads are unaligned-safe.
        let v = unsafe {
            let xb = _mm_loadl_epi64(x.as_ptr().add(k) as *const __m128i);
            let xi = _mm256_sub_epi32(_mm256_cvtepi8_epi32(xb), vzx);
            let real = _mm256_mul_ps(_mm256_cvtepi32_ps(xi), vsx);
            let g = _mm256_loadu_ps(norm.gamma.as_ptr().add(k));
            let b = match norm.beta {
                Some(b) => _mm256_loadu_ps(b.as_ptr().add(k)),
                None => _mm256_setzero_ps(),
            };
            let t = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(real, vmean), vinv), g);
            _mm256_add_ps(t, b)
        };
        // SAFETY: AVX2 is present (this function's contract).
        let q = unsafe { quantize8(v, sy, zy) };
        // SAFETY: AVX2 is present; every lane is in [-128, 127].
        unsafe { crate::fast::store8(q, &mut y[k..k + 8]) };
        k += 8;
    }
    for k in k..inner {
        let real = (x[k] as i32 - zx) as f32 * sx;
        let v = (real - mean) * inv * norm.gamma[k] + norm.beta.map_or(0.0, |b| b[k]);
        y[k] = quantize_f32(v, sy, zy, -128, 127) as i8;
    }
}

/// `cairn_core::quant::quantize_f32(v, scale, zp, -128, 127)` on eight lanes: the same
/// division, NaN rule, rounding (the same `(v + 1.5·2²³) − 1.5·2²³` below 2²²), zero point
/// and clamp.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn quantize8(v: __m256, scale: f32, zp: i32) -> __m256i {
    const MAGIC: f32 = 12_582_912.0;
    let v = _mm256_div_ps(v, _mm256_set1_ps(scale));
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
    let abs = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX)));
    let small = _mm256_cmp_ps::<_CMP_LT_OQ>(abs, _mm256_set1_ps(4_194_304.0));
    let magic = _mm256_set1_ps(MAGIC);
    let rounded = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
    let r = _mm256_blendv_ps(v, rounded, small);
    let q = _mm256_add_ps(r, _mm256_set1_ps(zp as f32));
    let q = _mm256_min_ps(
        _mm256_max_ps(q, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    let q = _mm256_cvttps_epi32(q);
    _mm256_blendv_epi8(
        q,
        _mm256_set1_epi32(zp.clamp(-128, 127)),
        _mm256_castps_si256(nan),
    )
}

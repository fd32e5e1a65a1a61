//! FullyConnected.f32-w8 with one or two rows (a recurrent step, a classifier's head):
//! each weight row read once, eight at a time: on VNNI as the row's bytes times the weights
//! through `vpdpbusd` (32 products an instruction; `zp·Σw` taken off, the sums cached with
//! the packed weights), else the row widened once to int16 `q − zp` and multiplied as int16
//! pairs through `vpmaddwd` (exact: a pair of products of 255 · 128 stays far inside i32);
//! then `gemm::w8_out` per output, so the bits are the reference's. The
//! block path (`mm.rs`) computes six rows per pass and would waste five of them here.

extern crate std;
use std::cell::RefCell;
use std::vec::Vec;

use core::arch::x86_64::*;

std::thread_local! {
    static ROW: RefCell<(Vec<u8>, Vec<i16>, Vec<i32>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// The packing kind word of the weight-row sums in the `prepack` cache.
const WSUM: u32 = 0x5738_0000;

/// `y[i][j]` for the `m` (≤ 2) rows of `op`. The caller checked AVX2 and the lengths.
pub(super) fn fc_w8_gemv(op: &super::mm::W8Fc<'_>, y: &mut [f32]) {
    let super::mm::W8Fc {
        x,
        m,
        w,
        n,
        k,
        sw,
        bias,
        clamp: (lo, hi),
    } = *op;
    if crate::prepack::keeps(w.as_ptr() as usize) && k <= super::gemv::MAX_K {
        panels(op, y);
        return;
    }
    let vnni = crate::paths::vnni();
    ROW.with(|r| {
        let mut r = r.borrow_mut();
        let (bytes, centred, wsum_scratch) = &mut *r;
        bytes.resize(k, 0);
        let key = (w.as_ptr() as usize, n * k, WSUM);
        let build = |v: &mut Vec<i32>| {
            v.clear();
            v.extend(
                w.chunks_exact(k)
                    .take(n)
                    .map(|r| r.iter().map(|&b| b as i32).sum::<i32>()),
            );
        };
        // Σw of each weight row (for VNNI's unsigned bytes), from the pack cache when the
        // weights are the model's.
        crate::prepack::with_packed(key, wsum_scratch, build, |wsum| {
            for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)).take(m) {
                let (s, zp) = w8_row_avx2(xr, bytes);
                if vnni.is_none() {
                    centred.clear();
                    centred.extend(bytes.iter().map(|&b| b as i16 - zp as i16));
                }
                let work = (n * k) as u64;
                let out = crate::par::SharedMut::new(yr);
                let (us, xs): (&[u8], &[i16]) = (bytes, centred);
                crate::par::par_ranges(n, 8, work, |js| {
                    // SAFETY: each part writes its own range of outputs.
                    let yp = unsafe { out.piece(js.start, js.len()) };
                    // SAFETY: AVX2 (the caller checked), VNNI where `vnni` says so; rows js
                    // of w lie in w (n·k long), wsum holds n.
                    unsafe {
                        match vnni {
                            Some(crate::paths::Vnni::Evex) => {
                                dots_vnni::<false>(us, w, k, js.clone(), zp, wsum, yp)
                            }
                            Some(crate::paths::Vnni::Vex) => {
                                dots_vnni::<true>(us, w, k, js.clone(), zp, wsum, yp)
                            }
                            None => dots(xs, w, k, js.clone(), yp),
                        }
                    };
                    for (v, j) in yp.iter_mut().zip(js) {
                        let acc = f32::to_bits(*v) as i32;
                        let swj = sw[if sw.len() == 1 { 0 } else { j }];
                        *v = crate::gemm::w8_out(acc, s, swj, bias.map_or(0.0, |b| b[j]), lo, hi);
                    }
                });
            }
        });
    });
}

/// [`fc_w8_gemv`] where the pack cache keeps the weights (a `HostModel` run): each row
/// quantized, then its exact sums `Σ(q − zp)·w` over the int8 GEMV's weight panels
/// (`gemv::panel_dots`: one sequential stream of weights instead of eight strided rows,
/// which a recurrent step re-reads from cache every call), then `gemm::w8_out` per output
/// as the reference does it.
fn panels(op: &super::mm::W8Fc<'_>, y: &mut [f32]) {
    let super::mm::W8Fc {
        x,
        m,
        w,
        n,
        k,
        sw,
        bias,
        clamp: (lo, hi),
    } = *op;
    let work = (n * k) as u64 * super::gemv::GEMV_WORK;
    ROW.with(|r| {
        let mut r = r.borrow_mut();
        let (bytes, centred, _) = &mut *r;
        bytes.resize(k, 0);
        for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)).take(m) {
            let (s, zp) = w8_row_avx2(xr, bytes);
            centred.clear();
            centred.extend(bytes.iter().map(|&b| b as i16 - zp as i16));
            let out = crate::par::SharedMut::new(yr);
            super::gemv::panel_dots(centred, zp, w, n, work, |o, d| {
                let len = n.saturating_sub(o).min(8);
                // SAFETY: rows o..o + 8 are one part's (`panel_dots` splits by blocks).
                let yp = unsafe { out.piece(o, len) };
                if len == 8 {
                    // SAFETY: AVX2 (the caller checked); rows o..o + 8 exist, so do
                    // their scales (when one per row) and biases; `yp` holds eight.
                    unsafe { store8(d, o, s, sw, bias, (lo, hi), yp) };
                    return;
                }
                let mut sums = [0i32; 8];
                // SAFETY: AVX2 (the caller checked); `sums` holds eight int32.
                unsafe { _mm256_storeu_si256(sums.as_mut_ptr() as *mut __m256i, d) };
                for (j, (v, &acc)) in yp.iter_mut().zip(&sums).enumerate() {
                    let swj = sw[if sw.len() == 1 { 0 } else { o + j }];
                    let b = bias.map_or(0.0, |b| b[o + j]);
                    *v = crate::gemm::w8_out(acc, s, swj, b, lo, hi);
                }
            });
        }
    });
}

/// `gemm::w8_out` of rows `o..o + 8` from their sums `d`, eight lanes at a time: the same
/// operations in the same order (no fused multiply-add), so the same bits.
///
/// # Safety
/// AVX2; `sw` holds one scale or `o + 8`; `bias` (when given) `o + 8` values; `y` eight.
#[target_feature(enable = "avx2")]
unsafe fn store8(
    d: __m256i,
    o: usize,
    s: f32,
    sw: &[f32],
    bias: Option<&[f32]>,
    (lo, hi): (f32, f32),
    y: &mut [f32],
) {
    let sw8 = if sw.len() == 1 {
        _mm256_set1_ps(sw[0])
    } else {
        // SAFETY: sw holds o + 8 (the contract).
        unsafe { _mm256_loadu_ps(sw[o..o + 8].as_ptr()) }
    };
    let b8 = match bias {
        // SAFETY: b holds o + 8 (the contract).
        Some(b) => unsafe { _mm256_loadu_ps(b[o..o + 8].as_ptr()) },
        None => _mm256_setzero_ps(),
    };
    let sc = _mm256_mul_ps(_mm256_set1_ps(s), sw8);
    let v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d), sc), b8);
    let v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
    // SAFETY: y holds eight (the contract).
    unsafe { _mm256_storeu_ps(y[..8].as_mut_ptr(), v) };
}

/// [`dots`] on VNNI: `Σ_t u[t]·w[j][t] − zp·Σw_j` with the row's bytes `u` unsigned, 32
/// products per `vpdpbusd`, eight weight rows a pass; the tail (under 32) in scalar code.
///
/// # Safety
/// AVX2 and the VNNI encoding `VEX` names; `u` holds k bytes; `w` every row of `js`;
/// `wsum` n sums; `out` holds `js.len()`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn dots_vnni<const VEX: bool>(
    u: &[u8],
    w: &[i8],
    k: usize,
    js: core::ops::Range<usize>,
    zp: i32,
    wsum: &[i32],
    out: &mut [f32],
) {
    use super::gemv::dpbusd;
    const R: usize = 8;
    let whole = k / 32 * 32;
    let finish = |j: usize, main: i32| -> f32 {
        let wr = &w[j * k..(j + 1) * k];
        let tail: i32 = u[whole..k]
            .iter()
            .zip(&wr[whole..k])
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        let acc = main
            .wrapping_add(tail)
            .wrapping_sub(zp.wrapping_mul(wsum[j]));
        f32::from_bits(acc as u32)
    };
    let mut j = js.start;
    let mut o = 0;
    // SAFETY: every load reads 32 bytes at t < whole ≤ k within u and within row j.
    unsafe {
        while j + R <= js.end {
            let mut acc = [_mm256_setzero_si256(); R];
            let rows: [*const i8; R] = core::array::from_fn(|r| w.as_ptr().add((j + r) * k));
            let mut t = 0;
            while t < whole {
                let uv = _mm256_loadu_si256(u.as_ptr().add(t) as *const __m256i);
                for r in 0..R {
                    let wv = _mm256_loadu_si256(rows[r].add(t) as *const __m256i);
                    acc[r] = dpbusd::<VEX>(acc[r], uv, wv);
                }
                t += 32;
            }
            for r in 0..R {
                out[o + r] = finish(j + r, hsum(acc[r]));
            }
            j += R;
            o += R;
        }
        while j < js.end {
            let mut acc = _mm256_setzero_si256();
            let row = w.as_ptr().add(j * k);
            let mut t = 0;
            while t < whole {
                let uv = _mm256_loadu_si256(u.as_ptr().add(t) as *const __m256i);
                let wv = _mm256_loadu_si256(row.add(t) as *const __m256i);
                acc = dpbusd::<VEX>(acc, uv, wv);
                t += 32;
            }
            out[o] = finish(j, hsum(acc));
            j += 1;
            o += 1;
        }
    }
}

/// The exact sums `Σ_t x[t]·w[j][t]` for the rows `js`, stored as their bit patterns in
/// `out` (an f32 slot each, turned into the output by the caller).
///
/// # Safety
/// AVX2; `x` holds k values; `w` holds every row of `js` (k each); `out` holds `js.len()`.
#[target_feature(enable = "avx2")]
unsafe fn dots(x: &[i16], w: &[i8], k: usize, js: core::ops::Range<usize>, out: &mut [f32]) {
    const R: usize = 8;
    let whole = k / 16 * 16;
    let dot_tail = |wr: &[i8]| -> i32 {
        x[whole..k]
            .iter()
            .zip(&wr[whole..k])
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum()
    };
    let mut j = js.start;
    let mut o = 0;
    // SAFETY: every load reads 16 values at t < whole ≤ k within x and within row j.
    unsafe {
        while j + R <= js.end {
            let mut acc = [_mm256_setzero_si256(); R];
            let rows: [*const i8; R] = core::array::from_fn(|r| w.as_ptr().add((j + r) * k));
            let mut t = 0;
            while t < whole {
                let xv = _mm256_loadu_si256(x.as_ptr().add(t) as *const __m256i);
                for r in 0..R {
                    let wv = _mm_loadu_si128(rows[r].add(t) as *const __m128i);
                    let wv = _mm256_cvtepi8_epi16(wv);
                    acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(xv, wv));
                }
                t += 16;
            }
            for r in 0..R {
                let s = hsum(acc[r]).wrapping_add(dot_tail(&w[(j + r) * k..(j + r + 1) * k]));
                out[o + r] = f32::from_bits(s as u32);
            }
            j += R;
            o += R;
        }
        while j < js.end {
            let mut acc = _mm256_setzero_si256();
            let row = w.as_ptr().add(j * k);
            let mut t = 0;
            while t < whole {
                let xv = _mm256_loadu_si256(x.as_ptr().add(t) as *const __m256i);
                let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(row.add(t) as *const __m128i));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xv, wv));
                t += 16;
            }
            let s = hsum(acc).wrapping_add(dot_tail(&w[j * k..(j + 1) * k]));
            out[o] = f32::from_bits(s as u32);
            j += 1;
            o += 1;
        }
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256i) -> i32 {
    // SAFETY: AVX2 (the callers' contract).
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }
}

/// `gemm::w8_row_q` on AVX2, with its bits: the row's range with 0 in it (NaN ignored:
/// `vminps`/`vmaxps` return the accumulator when the value is NaN), then per value the
/// division, the half-to-even rounding below 2^22, the zero point, the clamp to 0..=255
/// and NaN to the zero point, as `quant::quantize_f32` does them. A row's last partial
/// vector goes through a mask, so a short row (a recurrent cell's 25 hidden values) costs
/// no scalar tail: its lanes past the row read 0, which the range holds already, and are
/// not stored.
pub(super) fn w8_row_avx2(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    if crate::paths::avx512_f32() {
        // SAFETY: AVX-512F (avx512_f32 says the CPU has it).
        return unsafe { w8_row_512(x, q) };
    }
    // SAFETY: AVX2 (the callers checked).
    unsafe { w8_row_impl(x, q) }
}

/// The per-value steps of [`w8_row_avx2`] on sixteen lanes: `v` divided by the scale,
/// rounded, shifted by the zero point, clamped, NaN to the zero point; 0..=255 as int32.
macro_rules! quant16 {
    ($v:expr, $vs:expr, $vz:expr) => {{
        let v = _mm512_div_ps($v, $vs);
        let small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(v), _mm512_set1_ps(4_194_304.0));
        let magic = _mm512_set1_ps(12_582_912.0);
        let r = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
        let r = _mm512_mask_blend_ps(small, v, r);
        let y = _mm512_min_ps(
            _mm512_max_ps(_mm512_add_ps(r, $vz), _mm512_setzero_ps()),
            _mm512_set1_ps(255.0),
        );
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_cvttps_epi32(_mm512_mask_blend_ps(nan, y, $vz))
    }};
}

/// [`w8_row_impl`] sixteen lanes at a time: the same operations per value, so the same
/// bytes (the range's minimum and maximum do not depend on the order they are taken in;
/// a zero's sign does not change the scale or the zero point).
#[target_feature(enable = "avx512f")]
unsafe fn w8_row_512(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let n = x.len().min(q.len());
    let whole = n / 16 * 16;
    let tail = ((1u32 << (n - whole)) - 1) as __mmask16;
    // SAFETY: full loads and stores at t + 16 <= whole <= n, within x and q; the masked
    // ones touch only the lanes below n (masked-off lanes neither load nor fault).
    unsafe {
        let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut t = 0;
        while t < whole {
            let v = _mm512_loadu_ps(x.as_ptr().add(t));
            lo = _mm512_min_ps(v, lo);
            hi = _mm512_max_ps(v, hi);
            t += 16;
        }
        if tail != 0 {
            let v = _mm512_maskz_loadu_ps(tail, x.as_ptr().add(whole));
            lo = _mm512_min_ps(v, lo);
            hi = _mm512_max_ps(v, hi);
        }
        let (s, zp) = crate::gemm::w8_params(_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        let (vs, vz) = (_mm512_set1_ps(s), _mm512_set1_ps(zp as f32));
        let mut t = 0;
        while t < whole {
            let i = quant16!(_mm512_loadu_ps(x.as_ptr().add(t)), vs, vz);
            // Sixteen values 0..=255 to bytes (the saturation never applies).
            _mm_storeu_si128(
                q.as_mut_ptr().add(t) as *mut __m128i,
                _mm512_cvtusepi32_epi8(i),
            );
            t += 16;
        }
        if tail != 0 {
            let i = quant16!(_mm512_maskz_loadu_ps(tail, x.as_ptr().add(whole)), vs, vz);
            _mm512_mask_cvtusepi32_storeu_epi8(q.as_mut_ptr().add(whole) as *mut i8, tail, i);
        }
        (s, zp)
    }
}

/// The per-value steps of [`w8_row_avx2`] on eight lanes, as [`quant16`]: the eight
/// results as bytes in a `u64`, lane 0 lowest.
macro_rules! quant8 {
    ($v:expr, $vs:expr, $vz:expr) => {{
        let v = _mm256_div_ps($v, $vs);
        let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
        let small = _mm256_cmp_ps::<_CMP_LT_OQ>(abs, _mm256_set1_ps(4_194_304.0));
        let magic = _mm256_set1_ps(12_582_912.0);
        let r = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
        let r = _mm256_blendv_ps(v, r, small);
        let y = _mm256_min_ps(
            _mm256_max_ps(_mm256_add_ps(r, $vz), _mm256_setzero_ps()),
            _mm256_set1_ps(255.0),
        );
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
        let i = _mm256_cvttps_epi32(_mm256_blendv_ps(y, $vz, nan));
        // Eight values 0..=255 to bytes.
        let p = _mm256_packus_epi32(i, i);
        let p = _mm256_packus_epi16(p, p);
        let lo4 = _mm256_castsi256_si128(p);
        let hi4 = _mm256_extracti128_si256::<1>(p);
        (_mm_cvtsi128_si32(lo4) as u32 as u64) | ((_mm_cvtsi128_si32(hi4) as u32 as u64) << 32)
    }};
}

#[target_feature(enable = "avx2")]
unsafe fn w8_row_impl(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let n = x.len().min(q.len());
    let whole = n / 8 * 8;
    let rest = n - whole;
    // Lanes below `rest` on, for the last partial vector.
    let tail = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(rest as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    // SAFETY: full loads and stores at t + 8 <= whole <= n, within x and q; the masked
    // load reads only the lanes below n (masked-off lanes neither load nor fault), and
    // the last store writes `rest` bytes at whole.
    unsafe {
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut t = 0;
        while t < whole {
            let v = _mm256_loadu_ps(x.as_ptr().add(t));
            lo = _mm256_min_ps(v, lo);
            hi = _mm256_max_ps(v, hi);
            t += 8;
        }
        if rest != 0 {
            let v = _mm256_maskload_ps(x.as_ptr().add(whole), tail);
            lo = _mm256_min_ps(v, lo);
            hi = _mm256_max_ps(v, hi);
        }
        // The lanes hold no NaN, so any order of the reductions gives the same range.
        let lo = _mm_min_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps::<1>(lo));
        let lo = _mm_min_ps(lo, _mm_movehl_ps(lo, lo));
        let lo = _mm_min_ss(lo, _mm_movehdup_ps(lo));
        let hi = _mm_max_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps::<1>(hi));
        let hi = _mm_max_ps(hi, _mm_movehl_ps(hi, hi));
        let hi = _mm_max_ss(hi, _mm_movehdup_ps(hi));
        let (s, zp) = crate::gemm::w8_params(_mm_cvtss_f32(lo), _mm_cvtss_f32(hi));
        let (vs, vz) = (_mm256_set1_ps(s), _mm256_set1_ps(zp as f32));
        let mut t = 0;
        while t < whole {
            let b = quant8!(_mm256_loadu_ps(x.as_ptr().add(t)), vs, vz);
            core::ptr::write_unaligned(q.as_mut_ptr().add(t) as *mut u64, b);
            t += 8;
        }
        if rest != 0 {
            let b = quant8!(_mm256_maskload_ps(x.as_ptr().add(whole), tail), vs, vz);
            let bytes = b.to_le_bytes();
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), q.as_mut_ptr().add(whole), rest);
        }
        (s, zp)
    }
}

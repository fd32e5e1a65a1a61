//! The int8 depthwise conv on NEON (aarch64; NEON is part of the base ISA): the layout of
//! `depthwise.rs` (AVX2) with NEON's widening multiply-accumulate. Kernels of up to 64
//! taps, horizontal stride 1 or 2, any vertical stride, dilation 1, channel multiplier 1.
//! Bit-exact with the reference (`conv::conv_i8`): the same integer sums, and
//! `cairn_core::quant::requantize` in vector form (convert, multiply, clamp, round half to
//! even, add the zero point: the same operations).
//!
//! Each input row a band of output rows reads is staged once per channel as int16
//! `x − zx`, zeros in the padding columns and for rows outside the image. A block of 8
//! output columns keeps two int32x4 accumulators over every tap: one load of the 8 inputs
//! of a tap (`ld1`, or `ld2` for stride 2, whose even half is `x[2·ox + kx]`) and two
//! `smlal` by the tap's weight. The kernel runs over a range `[c0, c1)` of the planes
//! `n·C + c` (image, channel), so a caller may split the planes across threads (the
//! results do not depend on the split).

use core::arch::aarch64::*;

use super::{Geo, Q};

/// int16 entries of the staged rows of one band (32 KB of stack).
const STAGE_LEN: usize = 16384;
/// Staged entries a band aims to stay within (16 KB).
const BAND_TARGET: usize = 8192;
/// Output columns per register block (two vectors of four).
const BLOCK: usize = 8;
/// Largest kernel (taps) the weight table holds.
const MAX_TAPS: usize = 64;
/// Staged rows of a band: a staged row holds at least 9 entries (`plan`).
const MAX_ROWS: usize = STAGE_LEN / 9 + 1;

/// How one depthwise conv is cut: staged row length and output rows per band.
struct Plan {
    row_len: usize,
    band: usize,
}

fn plan(g: &Geo) -> Option<Plan> {
    let shape_ok = g.g == g.c
        && g.oc == g.c
        && g.dh == 1
        && g.dw == 1
        && (1..=2).contains(&g.sw)
        && g.sh >= 1
        && g.pt >= 0
        && g.pl >= 0
        && g.kh >= 1
        && g.kw >= 1
        && g.kh * g.kw <= MAX_TAPS
        && g.oh > 0
        && g.ow > 0;
    if !shape_ok {
        return None;
    }
    // The last block's loads end before staged column s·blocks·8 + kw − 1 (stride 2: `ld2`
    // of 16 from 2·ox0 + kx).
    let row_len =
        g.sw.checked_mul(g.ow.div_ceil(BLOCK).checked_mul(BLOCK)?)?
            .checked_add(g.kw)?;
    let rows = |band: usize| (band - 1) * g.sh + g.kh;
    if rows(1).checked_mul(row_len)? > STAGE_LEN {
        return None;
    }
    let mut band = 1;
    while band < g.oh && rows(band + 1) * row_len <= BAND_TARGET {
        band += 1;
    }
    Some(Plan { row_len, band })
}

/// Whether `depthwise` takes this conv.
pub(super) fn fits(g: &Geo) -> bool {
    plan(g).is_some()
}

/// The depthwise conv of output planes `[c0, c1)` (plane `n·C + c`: image `n`, channel
/// `c`) into `y`, which holds those planes only. Requires `fits(g)`, `c0 <= c1 <= N·C`
/// and `y` of `c1 − c0` planes (asserted).
pub(super) fn depthwise(g: &Geo, q: &Q<'_>, y: &mut [i8], c0: usize, c1: usize) {
    let plan = plan(g).expect("depthwise: the caller checked `fits`");
    assert!(c0 <= c1 && c1 <= g.n * g.c && y.len() == (c1 - c0) * g.oh * g.ow);
    match g.sw {
        1 => channels::<1>(g, q, y, c0, c1, &plan),
        _ => channels::<2>(g, q, y, c0, c1, &plan),
    }
}

fn channels<const S: usize>(g: &Geo, q: &Q<'_>, y: &mut [i8], c0: usize, c1: usize, plan: &Plan) {
    let (h, w, oh, ow, kh, kw) = (g.h, g.w, g.oh, g.ow, g.kh, g.kw);
    let (plane, out_plane, ksz) = (h * w, oh * ow, kh * kw);
    let row_len = plan.row_len;
    // Starts zeroed: the padding columns of every row, and the rows outside the image.
    let mut stage = [0i16; STAGE_LEN];
    // Whether staged row r holds image data (else it is all zeros).
    let mut has_data = [false; MAX_ROWS];
    let mut weights = [0i16; MAX_TAPS];
    let pl = g.pl as usize;
    for ch in c0..c1 {
        let c = ch % g.c;
        let xc = &q.x[ch * plane..(ch + 1) * plane];
        for (d, &v) in weights.iter_mut().zip(&q.w[c * ksz..(c + 1) * ksz]) {
            *d = v as i16;
        }
        let bias = q.bias.map_or(0, |b| b[c]);
        let yc = &mut y[(ch - c0) * out_plane..(ch - c0 + 1) * out_plane];
        let mut oy0 = 0;
        while oy0 < oh {
            let oy1 = (oy0 + plan.band).min(oh);
            // Staged row r is input row top + r.
            let top = (oy0 * g.sh) as isize - g.pt;
            let rows = (oy1 - 1 - oy0) * g.sh + kh;
            for r in 0..rows {
                let iy = top + r as isize;
                let dst = &mut stage[r * row_len..(r + 1) * row_len];
                if iy >= 0 && iy < h as isize {
                    let start = pl.min(row_len);
                    let n = w.min(row_len - start);
                    let src = &xc[iy as usize * w..iy as usize * w + n];
                    for (d, &s) in dst[start..start + n].iter_mut().zip(src) {
                        *d = s as i16 - q.zx as i16;
                    }
                    has_data[r] = true;
                } else if has_data[r] {
                    dst.fill(0);
                    has_data[r] = false;
                }
            }
            for oy in oy0..oy1 {
                let window = &stage[(oy - oy0) * g.sh * row_len..];
                let yr = &mut yc[oy * ow..(oy + 1) * ow];
                let mut ox0 = 0;
                while ox0 < ow {
                    // The last block of a row of at least 8 ends at the row's end
                    // (recomputing a few outputs, with the same values).
                    if ox0 + BLOCK > ow && ow >= BLOCK {
                        ox0 = ow - BLOCK;
                    }
                    let acc = block::<S>(window, row_len, S * ox0, kh, kw, &weights, bias);
                    let n = BLOCK.min(ow - ox0);
                    store(acc, q, c, &mut yr[ox0..ox0 + n]);
                    ox0 += BLOCK;
                }
            }
            oy0 = oy1;
        }
    }
}

/// `bias + Σ w·x` for 8 outputs whose taps start at staged column `at` of the `kh` rows of
/// `window` (`row_len` apart).
#[inline(always)]
fn block<const S: usize>(
    window: &[i16],
    row_len: usize,
    at: usize,
    kh: usize,
    kw: usize,
    weights: &[i16; MAX_TAPS],
    bias: i32,
) -> [int32x4_t; 2] {
    // Every load below reads S·8 int16 from `at + ky·row_len + kx`, which `plan` keeps
    // inside the window's staged rows: checked here once per block.
    let last = (kh - 1) * row_len + at + kw - 1 + S * 8;
    assert!(last <= window.len());
    // SAFETY: NEON is part of this target's base ISA; the loads read inside `window`
    // (checked above).
    unsafe {
        let (mut lo, mut hi) = (vdupq_n_s32(bias), vdupq_n_s32(bias));
        for ky in 0..kh {
            let row = window.as_ptr().add(ky * row_len + at);
            for kx in 0..kw {
                let wv = weights[ky * kw + kx];
                let xv = match S {
                    1 => vld1q_s16(row.add(kx)),
                    _ => vld2q_s16(row.add(kx)).0,
                };
                lo = vmlal_n_s16(lo, vget_low_s16(xv), wv);
                hi = vmlal_high_n_s16(hi, xv, wv);
            }
        }
        [lo, hi]
    }
}

/// `requantize` of 8 accumulators into `out` (up to 8 bytes): convert, multiply, clamp to
/// the activation range less the zero point, round half to even, add the zero point. The
/// multiplier is channel `c`'s for the accumulator's sign (`Q::neg`).
#[inline(always)]
fn store(acc: [int32x4_t; 2], q: &Q<'_>, c: usize, out: &mut [i8]) {
    // SAFETY: NEON is part of this target's base ISA; the 8-byte store goes to a local
    // array.
    unsafe {
        let (lo, hi) = ((q.lo - q.zy) as f32, (q.hi - q.zy) as f32);
        let (vlo, vhi, vs, vn, zy) = (
            vdupq_n_f32(lo),
            vdupq_n_f32(hi),
            vdupq_n_f32(q.scales[c]),
            vdupq_n_f32(q.neg_scale(c)),
            vdupq_n_s32(q.zy),
        );
        let one = |a: int32x4_t| {
            let s = vbslq_f32(vcltzq_s32(a), vn, vs);
            let v = vmulq_f32(vcvtq_f32_s32(a), s);
            let v = vminq_f32(vmaxq_f32(v, vlo), vhi);
            vaddq_s32(vcvtnq_s32_f32(v), zy)
        };
        let (a, b) = (one(acc[0]), one(acc[1]));
        // Saturating narrows are exact: every lane is in [-128, 127].
        let bytes = vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b)));
        let mut block = [0i8; 8];
        vst1_s8(block.as_mut_ptr(), bytes);
        for (o, v) in out.iter_mut().zip(block) {
            *o = v;
        }
    }
}

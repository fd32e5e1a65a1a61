//! The NEON micro-kernels (aarch64; NEON is part of the base ISA).

use core::arch::aarch64::*;

use super::{row_offset, Q};

/// Largest K the packed weight block holds.
pub const MAX_K: usize = 2048;
/// Output channels per register block (the four lanes of a weight vector).
const MR: usize = 4;
/// Pixels per tile (four vectors of four int32 accumulators per channel).
const PT: usize = 16;

/// The int8 GEMM of `avx2::gemm` with NEON: a register block of 4 output channels ×
/// 16 pixels (16 int32x4 accumulators) runs down K, each input row widened to int16
/// once per tile (`sxtl`) and multiplied by one lane of the block's weight vector
/// (`smlal` by lane: 4 exact int16 × int16 → int32 MACs per instruction). The block's
/// weights are transposed once into `[c][4]` int16. Sums run on raw int8 values and
/// `zx·Σw` is subtracted once; requantization is the scalar `requantize`, so the bytes
/// are the reference's.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    x: &[i8],
    xs: usize,
    q: &Q<'_>,
    ic: usize,
    oc: usize,
    pix: usize,
    y: &mut [i8],
    ys: usize,
    y0: usize,
) {
    let mut wpk = [0i16; MAX_K * MR];
    let mut o = 0;
    while o < oc {
        let ob = MR.min(oc - o);
        for c in 0..ic {
            for k in 0..MR {
                wpk[c * MR + k] = if k < ob {
                    match q.wp {
                        Some((wp, g)) => wp[g.index(o + k, c)],
                        None => q.w[(o + k) * ic + c] as i16,
                    }
                } else {
                    0
                };
            }
        }
        let offs: [i32; MR] =
            core::array::from_fn(|k| if k < ob { row_offset(q, o + k, ic) } else { 0 });
        let mut p0 = 0;
        while p0 < pix {
            let pt = PT.min(pix - p0);
            let acc = block(x, xs, p0, pt, ic, &wpk);
            for (k, row) in acc.iter().enumerate().take(ob) {
                let at = (o + k) * ys + y0 + p0;
                for (d, &a) in y[at..at + pt].iter_mut().zip(row) {
                    *d = q.requant(o + k, a.wrapping_add(offs[k])) as i8;
                }
            }
            p0 += pt;
        }
        o += ob;
    }
}

/// Σ_c W[k][c] · X[c][p0 + p] for the 4 × 16 block (pixels past `pt` read as zero).
#[inline(always)]
fn block(x: &[i8], xs: usize, p0: usize, pt: usize, ic: usize, wpk: &[i16]) -> [[i32; PT]; MR] {
    // SAFETY: NEON is part of this target's base ISA (cfg above); every load reads
    // inside a slice of the length it needs.
    unsafe {
        let z = vdupq_n_s32(0);
        let mut a = [[z; 4]; MR];
        let w_at = |c: usize| vld1_s16(wpk[c * MR..c * MR + MR].as_ptr());
        macro_rules! step {
            ($xv:expr, $w:expr) => {
                let (xv, w) = ($xv, $w);
                let lo = vmovl_s8(vget_low_s8(xv));
                let hi = vmovl_high_s8(xv);
                macro_rules! lane {
                    ($k:literal) => {
                        a[$k][0] = vmlal_lane_s16::<$k>(a[$k][0], vget_low_s16(lo), w);
                        a[$k][1] = vmlal_high_lane_s16::<$k>(a[$k][1], lo, w);
                        a[$k][2] = vmlal_lane_s16::<$k>(a[$k][2], vget_low_s16(hi), w);
                        a[$k][3] = vmlal_high_lane_s16::<$k>(a[$k][3], hi, w);
                    };
                }
                lane!(0);
                lane!(1);
                lane!(2);
                lane!(3);
            };
        }
        // Full tiles load in place; a partial tile copies each row into a padded
        // vector (a separate loop, so the copy's call does not spill the accumulators of
        // the full-tile loop).
        if pt == PT {
            for c in 0..ic {
                let row = &x[c * xs + p0..c * xs + p0 + PT];
                step!(vld1q_s8(row.as_ptr()), w_at(c));
            }
        } else {
            let mut pad = [0i8; PT];
            for c in 0..ic {
                pad[..pt].copy_from_slice(&x[c * xs + p0..c * xs + p0 + pt]);
                step!(vld1q_s8(pad.as_ptr()), w_at(c));
            }
        }
        let mut out = [[0i32; PT]; MR];
        for (o, v) in out.iter_mut().zip(&a) {
            for (j, v) in v.iter().enumerate() {
                vst1q_s32(o[4 * j..4 * j + 4].as_mut_ptr(), *v);
            }
        }
        out
    }
}

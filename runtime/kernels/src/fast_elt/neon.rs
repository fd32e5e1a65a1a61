//! The int8 element-wise bodies of `fast_elt` on aarch64 NEON (the base ISA: no run-time
//! check), sixteen bytes a step, the same entry points as the AVX2 module so the
//! dispatchers in `fast_elt.rs` take either.
//!
//! Each performs the reference's operations one for one: Add's two fused multiply-adds
//! (`fmla`), Mul's integer product then a separately rounded multiply and add, round half
//! to even (`fcvtns`; the reference's magic-number rounding gives the same integer for the
//! clamped range), NaN to the zero point in QuantizeLinear; so the bytes are the
//! reference's (`tests/exact.rs`, run under qemu-aarch64).

use core::arch::aarch64::*;

use super::{Arith, Operand};
use cairn_core::quant::quantize_f32;

/// NEON is aarch64's base ISA (the module is compiled only with it).
#[inline(always)]
pub fn available() -> bool {
    true
}

/// Sixteen int8 as four int32x4, in order.
#[target_feature(enable = "neon")]
#[inline]
fn widen(v: int8x16_t) -> [int32x4_t; 4] {
    let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
    [
        vmovl_s16(vget_low_s16(lo)),
        vmovl_high_s16(lo),
        vmovl_s16(vget_low_s16(hi)),
        vmovl_high_s16(hi),
    ]
}

/// Four int32x4 (each within int16) narrowed to sixteen int8 with saturation, in order.
#[target_feature(enable = "neon")]
#[inline]
fn narrow(r: [int32x4_t; 4]) -> int8x16_t {
    let lo = vcombine_s16(vqmovn_s32(r[0]), vqmovn_s32(r[1]));
    let hi = vcombine_s16(vqmovn_s32(r[2]), vqmovn_s32(r[3]));
    vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi))
}

/// `binary_i8` over one run: `a` and `y` (and `b` when a run) have one length.
///
/// # Safety
/// NEON (always, where this module is compiled); the slices' lengths are asserted.
#[target_feature(enable = "neon")]
pub unsafe fn binary_run(arith: Arith, a: &[i8], b: Operand<'_>, y: &mut [i8], lo: i32, hi: i32) {
    let n = y.len();
    assert!(a.len() == n && !matches!(b, Operand::Run(b) if b.len() != n));
    let (vlo, vhi) = (vdupq_n_s32(lo), vdupq_n_s32(hi));
    let (fmin, fmax) = (vdupq_n_f32(-129.0), vdupq_n_f32(128.0));
    // `fin` of the reference: clamp to [-129, 128], round half to even, clamp to the
    // activation range.
    let fin = |v: float32x4_t| {
        let v = vminq_f32(vmaxq_f32(v, fmin), fmax);
        vminq_s32(vmaxq_s32(vcvtnq_s32_f32(v), vlo), vhi)
    };
    let lanes = |av: int32x4_t, bv: int32x4_t| match arith {
        Arith::Add {
            ra,
            rb,
            fixed,
            a_scalar,
            b_scalar,
        } => {
            let (fa, fb) = (vcvtq_f32_s32(av), vcvtq_f32_s32(bv));
            let (vra, vrb, vf) = (vdupq_n_f32(ra), vdupq_n_f32(rb), vdupq_n_f32(fixed));
            // vfmaq_f32(c, x, y) = c + x·y, one rounding: the reference's `fma(x, y, c)`.
            fin(if a_scalar {
                vfmaq_f32(vf, fb, vrb)
            } else if b_scalar {
                vfmaq_f32(vf, fa, vra)
            } else {
                vfmaq_f32(vfmaq_f32(vf, fb, vrb), fa, vra)
            })
        }
        Arith::Mul { za, zb, r, zf } => {
            let p = vmulq_s32(
                vsubq_s32(av, vdupq_n_s32(za)),
                vsubq_s32(bv, vdupq_n_s32(zb)),
            );
            fin(vaddq_f32(
                vmulq_f32(vcvtq_f32_s32(p), vdupq_n_f32(r)),
                vdupq_n_f32(zf),
            ))
        }
    };
    let step = |av: int8x16_t, bv: int8x16_t| {
        let (aw, bw) = (widen(av), widen(bv));
        narrow(core::array::from_fn(|i| lanes(aw[i], bw[i])))
    };
    let splat = match b {
        Operand::Splat(v) => Some(vdupq_n_s8(v)),
        Operand::Run(_) => None,
    };
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n bytes of a, y and (a run) b.
        unsafe {
            let av = vld1q_s8(a.as_ptr().add(i));
            let bv = match b {
                Operand::Run(b) => vld1q_s8(b.as_ptr().add(i)),
                Operand::Splat(_) => splat.unwrap_or(vdupq_n_s8(0)),
            };
            vst1q_s8(y.as_mut_ptr().add(i), step(av, bv));
        }
        i += 16;
    }
    if i < n {
        // A short tail runs through the same body on padded copies.
        let len = n - i;
        let (mut pa, mut pb, mut py) = ([0i8; 16], [0i8; 16], [0i8; 16]);
        pa[..len].copy_from_slice(&a[i..]);
        if let Operand::Run(b) = b {
            pb[..len].copy_from_slice(&b[i..]);
        }
        // SAFETY: 16-byte stack buffers.
        unsafe {
            let bv = splat.unwrap_or_else(|| vld1q_s8(pb.as_ptr()));
            vst1q_s8(py.as_mut_ptr(), step(vld1q_s8(pa.as_ptr()), bv));
        }
        y[i..].copy_from_slice(&py[..len]);
    }
}

/// `y[i] = table[x[i] + 128]` (`x` is `src`, or `y` itself in place), 16 bytes a step:
/// the index is the byte with its sign bit flipped; `tbl` over entries 0–63, then `tbx`
/// over 64–127, 128–191, 192–255 with the index less 64, 128, 192 (an index out of a
/// table's 64 leaves the byte as it was).
///
/// # Safety
/// NEON (always, where this module is compiled); `src`, when given, holds `y.len()`
/// bytes (asserted).
#[target_feature(enable = "neon")]
pub unsafe fn lut(table: &[i8; 256], src: Option<&[i8]>, y: &mut [i8]) {
    assert!(src.is_none_or(|x| x.len() == y.len()));
    // SAFETY: 64 bytes at 64k (k < 4) are inside the 256-byte table.
    let t = |k: usize| unsafe { vld1q_s8_x4(table.as_ptr().add(64 * k)) };
    let (t0, t1, t2, t3) = (t(0), t(1), t(2), t(3));
    let (flip, d64) = (vdupq_n_u8(0x80), vdupq_n_u8(64));
    let n = y.len() / 16 * 16;
    let yp = y.as_mut_ptr();
    let from = src.map_or(yp as *const i8, |x| x.as_ptr());
    for i in (0..n).step_by(16) {
        // SAFETY: bytes i..i + 16 of `from` and y exist (i + 16 <= n); in place, each
        // step reads its 16 bytes before it writes them.
        unsafe {
            let idx = veorq_u8(vld1q_u8(from.add(i) as *const u8), flip);
            let mut r = vqtbl4q_s8(t0, idx);
            let idx = vsubq_u8(idx, d64);
            r = vqtbx4q_s8(r, t1, idx);
            let idx = vsubq_u8(idx, d64);
            r = vqtbx4q_s8(r, t2, idx);
            r = vqtbx4q_s8(r, t3, vsubq_u8(idx, d64));
            vst1q_s8(yp.add(i), r);
        }
    }
    for (i, v) in y.iter_mut().enumerate().skip(n) {
        let x = src.map_or(*v, |x| x[i]);
        *v = table[(x as i32 + 128) as usize];
    }
}

/// Per-tensor QuantizeLinear of `x` into `y` (same length): divide, round half to even,
/// add the zero point, clamp; NaN gives the zero point, as in `quantize_f32`. (The
/// reference rounds only below 2^22 in magnitude; above, the value clamps to an end of
/// the range either way.)
///
/// # Safety
/// NEON (always, where this module is compiled).
#[target_feature(enable = "neon")]
pub unsafe fn quantize(x: &[f32], scale: f32, zp: i32, y: &mut [i8]) {
    let n = x.len().min(y.len()) / 8 * 8;
    let (vs, vz) = (vdupq_n_f32(scale), vdupq_n_f32(zp as f32));
    let (vlo, vhi) = (vdupq_n_f32(-128.0), vdupq_n_f32(127.0));
    let vnan = vdupq_n_s32(zp.clamp(-128, 127));
    let four = |p: *const f32| {
        // SAFETY: the caller's chunk holds four f32 at p.
        let v = vdivq_f32(unsafe { vld1q_f32(p) }, vs);
        let ok = vceqq_f32(v, v); // false for NaN
        let q = vminq_f32(vmaxq_f32(vaddq_f32(vrndnq_f32(v), vz), vlo), vhi);
        vbslq_s32(ok, vcvtq_s32_f32(q), vnan)
    };
    for (x8, y8) in x[..n].chunks_exact(8).zip(y[..n].chunks_exact_mut(8)) {
        let (a, b) = (four(x8.as_ptr()), four(x8[4..].as_ptr()));
        let v = vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b)));
        // SAFETY: y8 holds eight bytes.
        unsafe { vst1_s8(y8.as_mut_ptr(), v) };
    }
    for (v, o) in x[n..].iter().zip(&mut y[n..]) {
        *o = quantize_f32(*v, scale, zp, -128, 127) as i8;
    }
}

/// 2×2 max pooling with stride 2 of one output row: `yr[o] = max(r0[2o], r0[2o + 1],
/// r1[2o], r1[2o + 1])`, 16 outputs a step (`ld2` splits even and odd bytes).
///
/// # Safety
/// NEON (always, where this module is compiled); `r0` and `r1` hold at least
/// `2·yr.len()` bytes (asserted).
#[target_feature(enable = "neon")]
pub unsafe fn max_pool_2x2_row(r0: &[i8], r1: &[i8], yr: &mut [i8]) {
    let n = yr.len();
    assert!(r0.len() >= 2 * n && r1.len() >= 2 * n);
    let mut o = 0;
    while o + 16 <= n {
        // SAFETY: 32 bytes from 2·o of each row lie below 2·n; outputs o..o + 16 in yr.
        unsafe {
            let a = vld2q_s8(r0.as_ptr().add(2 * o));
            let b = vld2q_s8(r1.as_ptr().add(2 * o));
            let m = vmaxq_s8(vmaxq_s8(a.0, a.1), vmaxq_s8(b.0, b.1));
            vst1q_s8(yr.as_mut_ptr().add(o), m);
        }
        o += 16;
    }
    super::max_pool_2x2_tail(r0, r1, yr, o);
}

/// `Σ v` over int8 values, wrapping in i32: pairwise widening adds (`saddlp`, `sadalp`),
/// 16 bytes a step.
///
/// # Safety
/// NEON (always, where this module is compiled).
#[target_feature(enable = "neon")]
pub unsafe fn sum_i8(v: &[i8]) -> i32 {
    let mut acc = vdupq_n_s32(0);
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        // SAFETY: 16 readable bytes.
        let x = unsafe { vld1q_s8(c.as_ptr()) };
        acc = vpadalq_s16(acc, vpaddlq_s8(x));
    }
    vaddvq_s32(acc).wrapping_add(crate::pool::sum_i8(chunks.remainder()))
}

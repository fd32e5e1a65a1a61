//! Cortex-M int8 element-wise kernels (`dsp` feature, 32-bit Arm with an FPU): `Mul`
//! over equal shapes or with one operand constant along the innermost run (the
//! squeeze-excitation scale, hard-swish's `x · hsigmoid(x)`), `Add` over equal shapes
//! (the residual adds), per-tensor `QuantizeLinear` to int8, and the one-table `Lut`
//! a word (four bytes) at a time, indexed from the table's middle by the signed byte.
//!
//! `Mul` computes the reference's `(a − za)(b − zb) · r + zf` with the same float
//! operations (`vmul`, then `vadd`, each rounded), then rounds with `vcvtr` (nearest
//! even) and clamps in integers to [lo, hi] ∩ [−129, 128]: the reference's
//! clamp-to-[−129, 128], round, clamp-to-[lo, hi] (the bounds are integers and rounding
//! is monotonic); NaN gives 0 and ±∞ saturates in both. `Add` is the reference's two fused multiply-adds (`vfma.f32`, as the
//! `vfma` feature's and libm's `fmaf`: one rounding each), then the same rounding and
//! clamp. `QuantizeLinear` divides (`vdiv.f32`, as the reference), rounds with `vcvtr`
//! and adds the zero point in integers (saturating), which equals the reference's
//! round-unless-huge, add in float, clamp (NaN → zero point there, 0 + zero point here).
//! Results are identical (the firmware's QEMU test compares them with
//! the host's). Anything else returns `None` and runs the reference.

use cairn_core::quant::qrange;
use cairn_core::{DType, ExecError, OpCall, OpKind, Quant, TensorMut};

use cairn_core::shape::broadcast_strides;

use crate::eltwise::{constant_b_run, outer_index, Arith};
use crate::util::qp;

/// The reference's clamp to [−129, 128] then to [lo, hi] as one clamp: `None` when the
/// two ranges do not overlap or [lo, hi] is empty (the reference's order decides those).
fn clamp_bounds(lo: i32, hi: i32) -> Option<(i32, i32)> {
    let (lo, hi) = (lo.max(-129), hi.min(128));
    (lo <= hi).then_some((lo, hi))
}

/// `round_nearest_even(p as f32 * r + zf)` as i32, saturating (NaN → 0).
#[inline(always)]
fn scale_round(p: i32, r: f32, zf: f32) -> i32 {
    let out: i32;
    // SAFETY: FPU register moves and arithmetic on s14/s15 (declared clobbered); no memory,
    // no stack. FPSCR keeps its reset rounding mode (nearest even).
    unsafe {
        core::arch::asm!(
            "vmov s14, {p}",
            "vmov s15, {r}",
            "vcvt.f32.s32 s14, s14",
            "vmul.f32 s14, s14, s15",
            "vmov s15, {zf}",
            "vadd.f32 s14, s14, s15",
            "vcvtr.s32.f32 s14, s14",
            "vmov {out}, s14",
            p = in(reg) p,
            r = in(reg) r.to_bits(),
            zf = in(reg) zf.to_bits(),
            out = lateout(reg) out,
            out("s14") _,
            out("s15") _,
            options(pure, nomem, nostack)
        )
    };
    out
}

/// `round_nearest_even(fma(a, ra, fma(b, rb, fixed)))` as i32, saturating (NaN → 0).
#[inline(always)]
fn add_round(a: i32, b: i32, ra: f32, rb: f32, fixed: f32) -> i32 {
    let out: i32;
    // SAFETY: FPU register moves and arithmetic on s13–s15 (declared clobbered); no
    // memory, no stack; FPSCR in its reset mode.
    unsafe {
        core::arch::asm!(
            "vmov s14, {b}",
            "vmov s15, {rb}",
            "vmov s13, {fixed}",
            "vcvt.f32.s32 s14, s14",
            "vfma.f32 s13, s14, s15",
            "vmov s14, {a}",
            "vmov s15, {ra}",
            "vcvt.f32.s32 s14, s14",
            "vfma.f32 s13, s14, s15",
            "vcvtr.s32.f32 s13, s13",
            "vmov {out}, s13",
            a = in(reg) a,
            b = in(reg) b,
            ra = in(reg) ra.to_bits(),
            rb = in(reg) rb.to_bits(),
            fixed = in(reg) fixed.to_bits(),
            out = lateout(reg) out,
            out("s13") _,
            out("s14") _,
            out("s15") _,
            options(pure, nomem, nostack)
        )
    };
    out
}

/// `round_nearest_even(x / scale)` as i32, saturating (NaN → 0).
#[inline(always)]
fn div_round(x: f32, scale: f32) -> i32 {
    let out: i32;
    // SAFETY: as `add_round`, on s14–s15.
    unsafe {
        core::arch::asm!(
            "vmov s14, {x}",
            "vmov s15, {s}",
            "vdiv.f32 s14, s14, s15",
            "vcvtr.s32.f32 s14, s14",
            "vmov {out}, s14",
            x = in(reg) x.to_bits(),
            s = in(reg) scale.to_bits(),
            out = lateout(reg) out,
            out("s14") _,
            out("s15") _,
            options(pure, nomem, nostack)
        )
    };
    out
}

/// int8 `Add` of two operands of the output's length; `None` otherwise.
fn add_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let (lo, hi) = clamp_bounds(call.param(0), call.param(1))?;
    let (at, bt) = (call.req(0).ok()?, call.req(1).ok()?);
    let (a, b) = (at.i8s().ok()?, bt.i8s().ok()?);
    let ((sa, za), (sb, zb), (sy, zy)) = (qp(&at.info), qp(&bt.info), qp(&out.info));
    let Arith::Add {
        ra,
        rb,
        fixed,
        a_scalar: false,
        b_scalar: false,
    } = Arith::of(OpKind::Add, a, b, (sa, za), (sb, zb), (sy, zy))
    else {
        return None;
    };
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if a.len() != y.len() || b.len() != y.len() {
        return None;
    }
    let add = |av: i8, bv: i8| add_round(av as i32, bv as i32, ra, rb, fixed);
    if lo == -128 && hi == 127 {
        for ((o, &av), &bv) in y.iter_mut().zip(a).zip(b) {
            *o = ssat8(add(av, bv)) as i8;
        }
    } else {
        for ((o, &av), &bv) in y.iter_mut().zip(a).zip(b) {
            *o = add(av, bv).max(lo).min(hi) as i8;
        }
    }
    Some(Ok(()))
}

/// Per-tensor `QuantizeLinear` of f32 to int8; `None` otherwise.
pub(crate) fn quantize(
    call: &OpCall<'_>,
    out: &mut TensorMut<'_>,
) -> Option<Result<(), ExecError>> {
    if out.info.dtype != DType::I8 {
        return None;
    }
    let Quant::PerTensor { scale, zero_point } = out.info.quant else {
        return None;
    };
    let x = call.req(0).ok()?.f32s().ok()?;
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if x.len() != y.len() {
        return None;
    }
    let (lo, hi) = qrange(DType::I8);
    for (o, &v) in y.iter_mut().zip(x) {
        *o = div_round(v, scale)
            .saturating_add(zero_point)
            .max(lo)
            .min(hi) as i8;
    }
    Some(Ok(()))
}

/// int8 `Mul` where one operand runs along the output and the other runs with it or is
/// constant over the innermost `inner` elements, or `Add` (`add_i8`); `None` otherwise.
pub(crate) fn binary_i8(
    call: &OpCall<'_>,
    out: &mut TensorMut<'_>,
) -> Option<Result<(), ExecError>> {
    if call.kind == OpKind::Add {
        return add_i8(call, out);
    }
    if call.kind != OpKind::Mul {
        return None;
    }
    let (lo, hi) = clamp_bounds(call.param(0), call.param(1))?;
    let (mut at, mut bt) = (call.req(0).ok()?, call.req(1).ok()?);
    let shape = out.info.shape;
    let n = shape.prod(0, shape.rank());
    // The product commutes exactly: put the operand that runs along the output first.
    if at.i8s().ok()?.len() != n {
        core::mem::swap(&mut at, &mut bt);
    }
    let (a, b) = (at.i8s().ok()?, bt.i8s().ok()?);
    let ((sa, za), (sb, zb), (sy, zy)) = (qp(&at.info), qp(&bt.info), qp(&out.info));
    let Arith::Mul { za, zb, r, zf } = Arith::of(OpKind::Mul, a, b, (sa, za), (sb, zb), (sy, zy))
    else {
        return None;
    };
    if a.len() != n {
        return None;
    }
    // b runs with the output (`inner` = n), or is constant over runs of `inner`.
    let (inner, d, sb) = if b.len() == n {
        (n.max(1), 0, [0; 6])
    } else {
        let sa = broadcast_strides(&at.info.shape, &shape);
        let sb = broadcast_strides(&bt.info.shape, &shape);
        let (inner, d) = constant_b_run(&shape, &sa, &sb, a.len(), n)?;
        (inner, d, sb)
    };
    let b_index = |k: usize| outer_index(&shape, &sb, d, k);
    if b.len() != n && (0..n / inner).any(|k| b_index(k) >= b.len()) {
        return None;
    }
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    let runs = y.chunks_mut(inner).zip(a.chunks(inner)).enumerate();
    if lo == -128 && hi == 127 {
        for (k, (o, ac)) in runs {
            if b.len() == n {
                mul_run_full(o, ac, Some(b), za, zb, r, zf);
            } else {
                mul_run_full(o, ac, None, za, b[b_index(k)] as i32 - zb, r, zf);
            }
        }
    } else {
        let fin = |p: i32| scale_round(p, r, zf).max(lo).min(hi) as i8;
        for (k, (o, ac)) in runs {
            mul_run(o, ac, b, b.len() == n, b_index(k), za, zb, fin);
        }
    }
    Some(Ok(()))
}

/// One run of `Mul`: `o[i] = fin((ac[i] − za)(b_i − zb))` with `b_i` = `b[i]` when
/// `b_runs` (then the run is the whole tensor), else `b[at]` for the whole run.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn mul_run(
    o: &mut [i8],
    ac: &[i8],
    b: &[i8],
    b_runs: bool,
    at: usize,
    za: i32,
    zb: i32,
    fin: impl Fn(i32) -> i8,
) {
    if b_runs {
        for ((o, &av), &bv) in o.iter_mut().zip(ac).zip(b) {
            *o = fin((av as i32 - za) * (bv as i32 - zb));
        }
    } else {
        let bv = b[at] as i32 - zb;
        for (o, &av) in o.iter_mut().zip(ac) {
            *o = fin((av as i32 - za) * bv);
        }
    }
}

/// One run of `Mul` with the whole int8 range as clamp, in one assembly loop that keeps
/// `r` and `zf` in FPU registers: `o[i] = ssat8(vcvtr(((ac[i] − za)·bm_i) · r + zf))`
/// with `bm_i = b[i] − zb` when `b` is given, else `bm_i = bz` (the constant `b − zb`).
/// 13–15 instructions an element.
#[inline(always)]
fn mul_run_full(o: &mut [i8], ac: &[i8], b: Option<&[i8]>, za: i32, bz: i32, r: f32, zf: f32) {
    let n = o.len().min(ac.len()).min(b.map_or(usize::MAX, |b| b.len()));
    if n == 0 {
        return;
    }
    let end = o.as_ptr() as usize + n;
    // SAFETY: reads ac[..n] (and b[..n]) and writes o[..n] through post-incremented
    // pointers, n ≥ 1 checked above; FPU registers s12–s14 declared clobbered; no stack.
    unsafe {
        match b {
            Some(b) => core::arch::asm!(
                "vmov s12, {r}",
                "vmov s13, {zf}",
                "2:",
                "ldrsb {t}, [{pa}], #1",
                "ldrsb {u}, [{pb}], #1",
                "sub {t}, {t}, {za}",
                "sub {u}, {u}, {zb}",
                "mul {t}, {t}, {u}",
                "vmov s14, {t}",
                "vcvt.f32.s32 s14, s14",
                "vmul.f32 s14, s14, s12",
                "vadd.f32 s14, s14, s13",
                "vcvtr.s32.f32 s14, s14",
                "vmov {t}, s14",
                "ssat {t}, #8, {t}",
                "strb {t}, [{py}], #1",
                "cmp {py}, {end}",
                "bne 2b",
                r = in(reg) r.to_bits(),
                zf = in(reg) zf.to_bits(),
                pa = inout(reg) ac.as_ptr() => _,
                pb = inout(reg) b.as_ptr() => _,
                py = inout(reg) o.as_mut_ptr() => _,
                end = in(reg) end,
                za = in(reg) za,
                zb = in(reg) bz,
                t = out(reg) _,
                u = out(reg) _,
                out("s12") _,
                out("s13") _,
                out("s14") _,
                options(nostack)
            ),
            None => core::arch::asm!(
                "vmov s12, {r}",
                "vmov s13, {zf}",
                "2:",
                "ldrsb {t}, [{pa}], #1",
                "sub {t}, {t}, {za}",
                "mul {t}, {t}, {bz}",
                "vmov s14, {t}",
                "vcvt.f32.s32 s14, s14",
                "vmul.f32 s14, s14, s12",
                "vadd.f32 s14, s14, s13",
                "vcvtr.s32.f32 s14, s14",
                "vmov {t}, s14",
                "ssat {t}, #8, {t}",
                "strb {t}, [{py}], #1",
                "cmp {py}, {end}",
                "bne 2b",
                r = in(reg) r.to_bits(),
                zf = in(reg) zf.to_bits(),
                pa = inout(reg) ac.as_ptr() => _,
                py = inout(reg) o.as_mut_ptr() => _,
                end = in(reg) end,
                za = in(reg) za,
                bz = in(reg) bz,
                t = out(reg) _,
                out("s12") _,
                out("s13") _,
                out("s14") _,
                options(nostack)
            ),
        }
    }
}

/// `v` clamped to −128..=127 (`ssat #8`).
#[inline(always)]
fn ssat8(v: i32) -> i32 {
    let r: i32;
    // SAFETY: register-only; `ssat` may set the Q flag, which nothing reads.
    unsafe {
        core::arch::asm!("ssat {r}, #8, {v}", r = lateout(reg) r, v = in(reg) v, options(pure, nomem, nostack))
    };
    r
}

/// int8 `Lut` with one table (axis < 0): `y = table[x + 128]`, four bytes per word
/// load and store; `None` for per-channel tables.
pub(crate) fn lut_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    if call.param(0) >= 0 {
        return None;
    }
    let table: &[i8; 256] = call.req(1).ok()?.i8s().ok()?.get(..256)?.try_into().ok()?;
    let src = if call.in_place {
        None
    } else {
        Some(call.req(0).ok()?.i8s().ok()?)
    };
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if let Some(x) = src {
        if x.len() != y.len() {
            return None;
        }
        y.copy_from_slice(x);
    }
    // Entry of v (−128..=127) at `mid + v`.
    let mid = table[128..].as_ptr();
    // SAFETY: every offset is a sign-extended byte, in −128..=127: inside the table.
    let look =
        |v: u32, shift: u32| unsafe { *mid.offset(((v >> shift) as i8) as isize) as u8 as u32 };
    let mut words = y.chunks_exact_mut(4);
    for o in &mut words {
        let w = u32::from_le_bytes([o[0] as u8, o[1] as u8, o[2] as u8, o[3] as u8]);
        let m = look(w, 0) | (look(w, 8) << 8) | (look(w, 16) << 16) | (look(w, 24) << 24);
        o.copy_from_slice(&bytemuck::cast::<u32, [i8; 4]>(m.to_le()));
    }
    for v in words.into_remainder() {
        *v = table[(*v as u8 ^ 0x80) as usize];
    }
    Some(Ok(()))
}

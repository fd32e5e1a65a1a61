//! Cortex-M DSP-extension dot products (Armv7E-M: Cortex-M4/M7/M33 with DSP), enabled by
//! the `dsp` feature on 32-bit Arm targets.
//!
//! Without it, the compiler gives `ldrsb` + `mla` on thumbv7em: one 32-bit multiply-add
//! and two byte loads per MAC; it never forms SMLAD from the portable loops. Here four
//! int8 weights load as one word, `sxtb16` splits them into two pairs of int16 (bytes 0, 2
//! and, rotated, 1, 3) and `smlad` adds two 16 × 16 products to the accumulator: four MACs
//! in one load, two extends and two dual MACs. The activations minus their zero point are
//! paired the same way once per input row. Arithmetic is exact and wraps modulo 2^32 like
//! the reference's `wrapping_add`, so results are identical (checked against the host by
//! the firmware's QEMU test).

use core::arch::asm;

#[inline(always)]
pub(crate) fn sxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: a register-only DSP instruction (Armv7E-M), no memory or stack access.
    unsafe {
        asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

#[inline(always)]
pub(crate) fn sxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: as above.
    unsafe {
        asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// Two int16 halves minus the same value each (no wrap for int8 inputs).
#[inline(always)]
pub(crate) fn ssub16(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only; it sets the GE flags, which nothing here reads.
    unsafe {
        asm!("ssub16 {r}, {a}, {b}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, options(pure, nomem, nostack))
    };
    r
}

/// `acc + a.lo·b.lo + a.hi·b.hi` (int16 halves), wrapping.
#[inline(always)]
pub(crate) fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let r: i32;
    // SAFETY: register-only; it may set the Q flag, which nothing here reads.
    unsafe {
        asm!("smlad {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

/// `acc + a.hi·b.lo` (int16 halves), wrapping.
#[inline(always)]
pub(crate) fn smlatb(a: u32, b: u32, acc: i32) -> i32 {
    let r: i32;
    // SAFETY: register-only; it may set the Q flag, which nothing here reads.
    unsafe {
        asm!("smlatb {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

/// `Σ v` over int8 values, wrapping in i32: four bytes per `usada8` (the sum of the
/// bytes as unsigned after flipping their sign bits, i.e. `Σ (v + 128)`), less 128 per
/// byte at the end; the unaligned head and the tail byte by byte.
pub fn sum_i8(v: &[i8]) -> i32 {
    let (head, words, tail) = bytemuck::pod_align_to::<i8, u32>(v);
    let mut biased: u32 = 0;
    for &w in words {
        // SAFETY: a register-only DSP instruction (Armv7E-M).
        unsafe {
            asm!("usada8 {acc}, {w}, {zero}, {acc}",
                acc = inout(reg) biased,
                w = in(reg) w ^ 0x8080_8080,
                zero = in(reg) 0u32,
                options(pure, nomem, nostack, preserves_flags))
        };
    }
    let edge = head
        .iter()
        .chain(tail)
        .fold(0i32, |s, &x| s.wrapping_add(x as i32));
    (biased.wrapping_sub((words.len() as u32).wrapping_mul(512)) as i32).wrapping_add(edge)
}

/// Bytewise signed maximum of two words: `ssub8` sets each byte's GE flag where
/// `a ≥ b`, `sel` takes those bytes from `a` and the others from `b`.
#[inline(always)]
fn max8(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only DSP instructions; they write the GE flags, which only the
    // `sel` right after reads.
    unsafe {
        asm!("ssub8 {r}, {a}, {b}", "sel {r}, {a}, {b}",
            r = out(reg) r, a = in(reg) a, b = in(reg) b, options(pure, nomem, nostack))
    };
    r
}

/// Bytewise signed minimum of two words (`ssub8` sets GE where `a ≥ b`; `sel` then
/// takes those bytes from `b`).
#[inline(always)]
fn min8(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: as `max8`.
    unsafe {
        asm!("ssub8 {r}, {a}, {b}", "sel {r}, {b}, {a}",
            r = out(reg) r, a = in(reg) a, b = in(reg) b, options(pure, nomem, nostack))
    };
    r
}

/// 2×2 int8 max pooling with stride 2 over `planes` planes of `h × w` into `oh × ow`,
/// every window inside the plane (`2·oh ≤ h`, `2·ow ≤ w`, checked): two outputs per
/// pair of word loads (`max8` down the rows, then across neighbouring bytes). The
/// reference's values: each output is the largest of its four taps.
pub fn max_pool_2x2(
    x: &[i8],
    y: &mut [i8],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> bool {
    if 2 * oh > h || 2 * ow > w || x.len() < planes * h * w || y.len() < planes * oh * ow {
        return false;
    }
    let word = |r: &[i8], i: usize| {
        u32::from_le_bytes([r[i] as u8, r[i + 1] as u8, r[i + 2] as u8, r[i + 3] as u8])
    };
    for p in 0..planes {
        let xp = &x[p * h * w..(p + 1) * h * w];
        for oy in 0..oh {
            let (r0, r1) = (
                &xp[2 * oy * w..(2 * oy + 1) * w],
                &xp[(2 * oy + 1) * w..(2 * oy + 2) * w],
            );
            let yr = &mut y[(p * oh + oy) * ow..(p * oh + oy + 1) * ow];
            let pairs = ow / 2;
            for (j, o) in yr[..2 * pairs].chunks_exact_mut(2).enumerate() {
                let v = max8(word(r0, 4 * j), word(r1, 4 * j));
                let m = max8(v, v >> 8);
                o[0] = m as u8 as i8;
                o[1] = (m >> 16) as u8 as i8;
            }
            if ow % 2 == 1 {
                let i = 2 * (ow - 1);
                yr[ow - 1] = r0[i].max(r0[i + 1]).max(r1[i]).max(r1[i + 1]);
            }
        }
    }
    true
}

/// Largest K whose paired activations fit the stack buffer (2 KB).
pub const MAX_K: usize = 1024;

/// Activations `x − zx` as int16 pairs in `sxtb16` order: for each word of four,
/// `[x0, x2]` then `[x1, x3]`. Returns how many leading elements were paired (a multiple
/// of 4, at most `2 · out.len()`); the rest go through the scalar loop.
pub fn pair_activations(x: &[i8], zx: i32, out: &mut [u32]) -> usize {
    let n = (x.len().min(2 * out.len())) / 4 * 4;
    let z = (zx as u16 as u32) * 0x0001_0001;
    for (c, o) in x[..n].chunks_exact(4).zip(out.chunks_exact_mut(2)) {
        let v = u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]);
        o[0] = ssub16(sxtb16(v), z);
        o[1] = ssub16(sxtb16_ror8(v), z);
    }
    n
}

/// `acc + Σ w[t] · (x[t] − zx)` over the first `n` elements (paired by
/// `pair_activations`).
#[inline(always)]
pub fn dot(w: &[i8], xp: &[u32], n: usize, mut acc: i32) -> i32 {
    // Arrays of 4 weights and 2 pairs: plain slice iterators, which inline at opt-level
    // "s" (a `chunks_exact` zip does not, and costs a call per dot product).
    let w4: &[[i8; 4]] = bytemuck::cast_slice(&w[..n / 4 * 4]);
    let xp2: &[[u32; 2]] = bytemuck::cast_slice(&xp[..n / 4 * 2]);
    for (c, p) in w4.iter().zip(xp2) {
        let v = u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]);
        acc = smlad(sxtb16(v), p[0], acc);
        acc = smlad(sxtb16_ror8(v), p[1], acc);
    }
    acc
}

/// `requantize(acc, scale, zy, lo, hi)` (for `lo <= hi`) with the FPU's round-to-nearest-
/// even conversion (`vcvtr`, the default FPSCR mode) in place of clamp-then-round-trick:
/// the bounds are integers and rounding is monotonic, so rounding and then clamping gives
/// the reference's clamp-then-round; `vcvtr` saturates, and a saturated value clamps the
/// same. With `FULL` (the caller has checked `lo == -128 && hi == 127`) the clamp is a
/// saturating add of the zero point and `ssat #8`. About 8–12 instructions instead of
/// 20. Hard-float targets only (an FPU).
#[cfg(target_abi = "eabihf")]
#[inline(always)]
pub(crate) fn requantize_fpu<const FULL: bool>(
    acc: i32,
    scale: f32,
    zy: i32,
    lo: i32,
    hi: i32,
) -> i32 {
    debug_assert!(lo <= hi && (!FULL || (lo == -128 && hi == 127)));
    let r: i32;
    // SAFETY: FPU register moves and arithmetic on s14/s15 (declared clobbered); no memory,
    // no stack. The FPSCR rounding mode is the reset default (nearest even): nothing in
    // cairn changes it.
    unsafe {
        asm!(
            "vmov s14, {acc}",
            "vmov s15, {scale}",
            "vcvt.f32.s32 s14, s14",
            "vmul.f32 s14, s14, s15",
            "vcvtr.s32.f32 s14, s14",
            "vmov {r}, s14",
            acc = in(reg) acc,
            scale = in(reg) scale.to_bits(),
            r = lateout(reg) r,
            out("s14") _,
            out("s15") _,
            options(pure, nomem, nostack)
        )
    };
    if FULL {
        // clamp(r, −128 − zy, 127 − zy) + zy = clamp(r + zy, −128, 127), the sum saturating
        // where it would wrap (then it clamps to the same bound).
        let v: i32;
        // SAFETY: register-only; `qadd`/`ssat` may set the Q flag, which nothing reads.
        unsafe {
            asm!(
                "qadd {v}, {r}, {z}",
                "ssat {v}, #8, {v}",
                v = out(reg) v,
                r = in(reg) r,
                z = in(reg) zy,
                options(pure, nomem, nostack)
            )
        };
        v
    } else {
        r.max(lo - zy).min(hi - zy) + zy
    }
}

/// Four `requantize_fpu` values (for `−128 <= lo <= hi <= 127`) packed as the bytes of a
/// little-endian word, the first value in the low byte: the accumulators move to the FPU
/// and back two per `vmov`, the scale once; each value gets the zero point added
/// saturating and `ssat #8` (`requantize_fpu`'s `FULL` clamp), then, unless `FULL`, the
/// packed bytes are clamped to `[lo, hi]` four at a time (`ssub8` + `sel`). Clamping to
/// the int8 range first changes nothing, `[lo, hi]` lying inside it.
#[cfg(target_abi = "eabihf")]
#[inline(always)]
pub(crate) fn requantize4_fpu<const FULL: bool>(
    acc: [i32; 4],
    scale: f32,
    zy: i32,
    lo: i32,
    hi: i32,
) -> u32 {
    debug_assert!(-128 <= lo && lo <= hi && hi <= 127 && (!FULL || (lo == -128 && hi == 127)));
    let r: u32;
    // SAFETY: FPU register moves and arithmetic on s8–s11 and s15 (declared clobbered) and
    // register-only DSP instructions (`qadd`/`ssat` may set the Q flag, which nothing
    // reads); no memory, no stack. Rounding as in `requantize_fpu` (the FPSCR default).
    unsafe {
        asm!(
            "vmov s8, s9, {a0}, {a1}",
            "vmov s10, s11, {a2}, {a3}",
            "vmov s15, {scale}",
            "vcvt.f32.s32 s8, s8",
            "vcvt.f32.s32 s9, s9",
            "vcvt.f32.s32 s10, s10",
            "vcvt.f32.s32 s11, s11",
            "vmul.f32 s8, s8, s15",
            "vmul.f32 s9, s9, s15",
            "vmul.f32 s10, s10, s15",
            "vmul.f32 s11, s11, s15",
            "vcvtr.s32.f32 s8, s8",
            "vcvtr.s32.f32 s9, s9",
            "vcvtr.s32.f32 s10, s10",
            "vcvtr.s32.f32 s11, s11",
            "vmov {a0}, {a1}, s8, s9",
            "vmov {a2}, {a3}, s10, s11",
            "qadd {a0}, {a0}, {z}",
            "qadd {a1}, {a1}, {z}",
            "qadd {a2}, {a2}, {z}",
            "qadd {a3}, {a3}, {z}",
            "ssat {a0}, #8, {a0}",
            "ssat {a1}, #8, {a1}",
            "ssat {a2}, #8, {a2}",
            "ssat {a3}, #8, {a3}",
            "bfi {a0}, {a1}, #8, #8",
            "bfi {a0}, {a2}, #16, #8",
            "bfi {a0}, {a3}, #24, #8",
            "mov {r}, {a0}",
            a0 = inout(reg) acc[0] => _,
            a1 = inout(reg) acc[1] => _,
            a2 = inout(reg) acc[2] => _,
            a3 = inout(reg) acc[3] => _,
            scale = in(reg) scale.to_bits(),
            z = in(reg) zy,
            r = lateout(reg) r,
            out("s8") _,
            out("s9") _,
            out("s10") _,
            out("s11") _,
            out("s15") _,
            options(pure, nomem, nostack)
        )
    };
    if FULL {
        r
    } else {
        let b = |v: i32| (v as u8 as u32) * 0x0101_0101;
        min8(max8(r, b(lo)), b(hi))
    }
}

/// Without an FPU: four reference requantizations, packed as `requantize4_fpu` does.
#[cfg(not(target_abi = "eabihf"))]
#[inline(always)]
pub(crate) fn requantize4_fpu<const FULL: bool>(
    acc: [i32; 4],
    scale: f32,
    zy: i32,
    lo: i32,
    hi: i32,
) -> u32 {
    let v = acc.map(|a| cairn_core::quant::requantize(a, scale, zy, lo, hi) as u8);
    u32::from_le_bytes(v)
}

/// Without an FPU (soft-float `eabi` targets): the reference requantization.
#[cfg(not(target_abi = "eabihf"))]
#[inline(always)]
pub(crate) fn requantize_fpu<const FULL: bool>(
    acc: i32,
    scale: f32,
    zy: i32,
    lo: i32,
    hi: i32,
) -> i32 {
    cairn_core::quant::requantize(acc, scale, zy, lo, hi)
}

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
fn sxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: a register-only DSP instruction (Armv7E-M), no memory or stack access.
    unsafe {
        asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

#[inline(always)]
fn sxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: as above.
    unsafe {
        asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// Two int16 halves minus the same value each (no wrap for int8 inputs).
#[inline(always)]
fn ssub16(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only; it sets the GE flags, which nothing here reads.
    unsafe {
        asm!("ssub16 {r}, {a}, {b}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, options(pure, nomem, nostack))
    };
    r
}

/// `acc + a.lo·b.lo + a.hi·b.hi` (int16 halves), wrapping.
#[inline(always)]
fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let r: i32;
    // SAFETY: register-only; it may set the Q flag, which nothing here reads.
    unsafe {
        asm!("smlad {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack))
    };
    r
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

/// Largest input-channel count of the pointwise path (its two column buffers, 1.5 KB of
/// stack, sit beside the conv's per-channel offsets).
pub const PW_MAX_K: usize = 512;

/// Pointwise (1×1) int8 conv on planes of `pix` pixels, `x` `[ic][pix]`, `w` `[oc][ic]`:
/// for each pixel its input column is gathered and paired once, then every output channel
/// is an SMLAD dot product over it. `bias` is the raw int32 bias. Same sums as the
/// reference (exact, wrapping). `false` (nothing written) when `ic` exceeds `PW_MAX_K`.
#[allow(clippy::too_many_arguments)]
pub fn pointwise(
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    zx: i32,
    ic: usize,
    oc: usize,
    pix: usize,
    mut out: impl FnMut(usize, usize, i32),
) -> bool {
    if ic > PW_MAX_K {
        return false;
    }
    let mut col = [0i8; PW_MAX_K];
    let mut xp = [0u32; PW_MAX_K / 2];
    for p in 0..pix {
        for (c, v) in col[..ic].iter_mut().enumerate() {
            *v = x[c * pix + p];
        }
        let col = &col[..ic];
        let done = pair_activations(col, zx, &mut xp);
        for (o, wr) in w.chunks_exact(ic).take(oc).enumerate() {
            let acc = dot(wr, &xp, done, bias.map_or(0, |b| b[o]));
            let acc = col[done..]
                .iter()
                .zip(&wr[done..])
                .fold(acc, |a, (&xv, &wv)| {
                    a.wrapping_add((xv as i32 - zx) * wv as i32)
                });
            out(o, p, acc);
        }
    }
    true
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

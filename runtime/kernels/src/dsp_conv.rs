//! Cortex-M DSP-extension int8 convolutions (`dsp` feature, 32-bit Arm), the kernels
//! CMSIS-NN uses for these layers, reworked for cairn's NCHW planes:
//! - one-group convs (pointwise, 3×3, the stem; any stride, padding, dilation) as im2col
//!   into int16 columns, two output pixels at a time, and a 2-output-channel × 2-column
//!   SMLAD block (`im2col`; the idea of CMSIS-NN's `arm_nn_mat_mult_kernel_s8_s16`);
//! - depthwise convs (dilation 1, any kernel up to 8 × 8, any stride) over int16 input
//!   rows: weight pairs along the kernel row, two output pixels per step (`depthwise`).
//!
//! Sums are exact and wrap modulo 2^32 like the reference's `wrapping_add`; padding
//! contributes `0 = zx − zx`, as the reference's skipped taps do; requantization gives
//! the reference's `requantize` values (`dsp::requantize_fpu`). So results are identical to `conv::conv_i8` (checked against
//! the host by the firmware's QEMU test, `tests/tests/mcu_qemu.rs`).
//!
//! Each entry returns `false`, having written nothing, when the conv is not its case.

use crate::conv::Geo;
use crate::dsp::{requantize_fpu, smlad, ssub16, sxtb16, sxtb16_ror8};

/// The operands of an int8 Conv with plain (row-major) weights.
pub(crate) struct Operands<'a> {
    pub x: &'a [i8],
    pub w: &'a [i8],
    pub bias: Option<&'a [i32]>,
    pub scales: &'a [f32],
    pub zx: i32,
    pub zy: i32,
    pub lo: i32,
    pub hi: i32,
}

impl Operands<'_> {
    #[inline(always)]
    fn requant<const FULL: bool>(&self, acc: i32, o: usize) -> i8 {
        requantize_fpu::<FULL>(acc, self.scales[o], self.zy, self.lo, self.hi) as i8
    }
}

/// The conv through the depthwise kernel or im2col + SMLAD; `false` (nothing written)
/// when neither takes it.
pub(crate) fn conv(g: &Geo, q: &Operands<'_>, y: &mut [i8]) -> bool {
    // `requantize_fpu` takes a non-empty clamp range (the reference's order of tests
    // decides an empty one).
    if q.lo > q.hi {
        false
    } else if g.g == 1 {
        match q.lo == -128 && q.hi == 127 {
            true => im2col::<true>(g, q, y),
            false => im2col::<false>(g, q, y),
        }
    } else {
        match q.lo == -128 && q.hi == 127 {
            true => depthwise::<true>(g, q, y),
            false => depthwise::<false>(g, q, y),
        }
    }
}

/// Largest patch (input channels × kernel taps) of the im2col path: its two int16 columns
/// take 2 KB of stack.
pub const COL_MAX_K: usize = 512;

/// One-group conv through im2col + the 2 × 2 SMLAD block. `FULL`: the clamp is the whole
/// int8 range (`requantize_fpu`).
#[inline(never)]
pub(crate) fn im2col<const FULL: bool>(g: &Geo, q: &Operands<'_>, y: &mut [i8]) -> bool {
    let k = g.c * g.kh * g.kw;
    if g.g != 1 || k > COL_MAX_K || k == 0 || q.w.len() < g.oc * k {
        return false;
    }
    let k4 = k / 4 * 4;
    let pointwise = g.kh == 1 && g.kw == 1 && g.pt == 0 && g.pl == 0 && g.sh == 1 && g.sw == 1;
    // Two columns interleaved per four k: `[c0 x0x2, c0 x1x3, c1 x0x2, c1 x1x3]`.
    let mut cols = [0u32; COL_MAX_K];
    let mut tails = [[0i32; 3]; 2];
    let mut stage = [0i16; COL_MAX_K];
    // Each tap's offset from the window's first element (weights' order: channel, ky,
    // kx), for windows inside the image: increasing, so the last is the largest.
    let mut offs = [0u32; COL_MAX_K];
    if !pointwise {
        let plane = g.h * g.w;
        let taps = (0..g.c)
            .flat_map(|c| (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| (c, ky, kx))));
        for (o, (c, ky, kx)) in offs.iter_mut().zip(taps) {
            *o = (c * plane + ky * g.dh * g.w + kx * g.dw) as u32;
        }
    }
    let ohw = g.oh * g.ow;
    for n in 0..g.n {
        let x = &q.x[n * g.c * g.h * g.w..(n + 1) * g.c * g.h * g.w];
        let y = &mut y[n * g.oc * ohw..(n + 1) * g.oc * ohw];
        let mut p = 0;
        while p < ohw {
            let ncol = if p + 1 < ohw { 2 } else { 1 };
            for (c, tail) in tails.iter_mut().enumerate().take(ncol) {
                if pointwise {
                    gather_pointwise(g, x, q.zx, p + c, &mut cols[..2 * k4], c, tail);
                } else if let Some(base) = window_inside(g, p + c) {
                    gather_inside(x, base, &offs[..k], q.zx, &mut cols[..2 * k4], c, tail);
                } else {
                    gather(g, x, q.zx, p + c, &mut stage[..k]);
                    pair_column(&stage[..k], &mut cols[..2 * k4], c, tail);
                }
            }
            let cols = &cols[..2 * k4];
            let o = if ncol == 2 {
                channel_pairs::<FULL>(q, k, cols, &tails, &mut y[p..], ohw, g.oc)
            } else {
                0
            };
            // An odd last channel, or every channel for a last single pixel.
            for oo in o..g.oc {
                let b = q.bias.map_or(0, |b| b[oo]);
                let w = &q.w[oo * k..(oo + 1) * k];
                for (c, tail) in tails.iter().enumerate().take(ncol) {
                    let mut acc = dot(&w[..k4], cols, c, b);
                    for (&wt, &xt) in w[k4..].iter().zip(tail) {
                        acc = acc.wrapping_add(wt as i32 * xt);
                    }
                    y[oo * ohw + p + c] = q.requant::<FULL>(acc, oo);
                }
            }
            p += ncol;
        }
    }
    true
}

/// Output channels `0..oc & !1` in pairs for two output pixels: `y[o·ohw]` and
/// `y[o·ohw + 1]` for each channel `o` (`y` starts at the first pixel). Bounds are
/// checked once here, not per block. Returns the first channel not written.
#[inline(always)]
fn channel_pairs<const FULL: bool>(
    q: &Operands<'_>,
    k: usize,
    cols: &[u32],
    tails: &[[i32; 3]; 2],
    y: &mut [i8],
    ohw: usize,
    oc: usize,
) -> usize {
    let k4 = cols.len() / 2;
    let pairs = oc / 2;
    if pairs == 0 {
        return 0;
    }
    // Every index below: weights (2·pairs)·k, channels 2·pairs, outputs up to
    // (2·pairs − 1)·ohw + 1.
    let last = (2 * pairs - 1) * ohw + 1;
    assert!(
        q.w.len() >= 2 * pairs * k
            && q.scales.len() >= 2 * pairs
            && q.bias.is_none_or(|b| b.len() >= 2 * pairs)
            && y.len() > last
            && k4 <= k
            && k - k4 <= 3
    );
    let (w, yp) = (q.w.as_ptr(), y.as_mut_ptr());
    for pair in 0..pairs {
        let o = 2 * pair;
        // SAFETY: o + 1 < 2·pairs and the reads and writes below stay inside the bounds
        // asserted above; `block2x2_raw` reads rows o and o + 1 (k4 bytes each) and
        // `cols[..2·k4]`.
        unsafe {
            let (b0, b1) = match q.bias {
                Some(b) => (*b.get_unchecked(o), *b.get_unchecked(o + 1)),
                None => (0, 0),
            };
            let w0 = w.add(o * k);
            let mut acc = block2x2_raw(w0, k, k4, cols.as_ptr(), [b0, b0, b1, b1]);
            // An index loop: the iterator form costs about 1 % more on the cls model.
            #[allow(clippy::needless_range_loop)]
            for t in 0..k - k4 {
                let a = *w0.add(k4 + t) as i32;
                let b = *w0.add(k + k4 + t) as i32;
                acc[0] = acc[0].wrapping_add(a * tails[0][t]);
                acc[1] = acc[1].wrapping_add(a * tails[1][t]);
                acc[2] = acc[2].wrapping_add(b * tails[0][t]);
                acc[3] = acc[3].wrapping_add(b * tails[1][t]);
            }
            let (s0, s1) = (*q.scales.get_unchecked(o), *q.scales.get_unchecked(o + 1));
            let y0 = yp.add(o * ohw);
            *y0 = requantize_fpu::<FULL>(acc[0], s0, q.zy, q.lo, q.hi) as i8;
            *y0.add(1) = requantize_fpu::<FULL>(acc[1], s0, q.zy, q.lo, q.hi) as i8;
            *y0.add(ohw) = requantize_fpu::<FULL>(acc[2], s1, q.zy, q.lo, q.hi) as i8;
            *y0.add(ohw + 1) = requantize_fpu::<FULL>(acc[3], s1, q.zy, q.lo, q.hi) as i8;
        }
    }
    2 * pairs
}

/// A pointwise conv's column for output pixel `p` (`x − zx` of every channel at that
/// pixel) straight into column `c` of the interleaved pair (`pair_column`'s order).
#[inline(always)]
fn gather_pointwise(
    g: &Geo,
    x: &[i8],
    zx: i32,
    p: usize,
    cols: &mut [u32],
    c: usize,
    tail: &mut [i32; 3],
) {
    let plane = g.h * g.w;
    let at = (p / g.ow) * g.w + p % g.ow;
    let k4 = cols.len() / 2;
    assert!(g.c >= k4 && g.c - k4 <= 3 && x.len() > (g.c - 1) * plane + at);
    // SAFETY: channel ch < g.c is read at ch·plane + at, inside `x` (asserted).
    let v = |ch: usize| unsafe { (*x.get_unchecked(ch * plane + at) as i32 - zx) as u16 as u32 };
    let z = (zx as u16 as u32) * 0x0001_0001;
    // Four channels a step: a pointer that moves one plane per channel (no multiply per
    // element), the bytes paired as int16 and the zero point taken off both halves at once.
    let mut px = x[at..].as_ptr();
    for o in cols.chunks_exact_mut(4) {
        // SAFETY: four channels from the current one, each below k4 <= g.c, at offsets
        // ch·plane + at inside `x` (asserted); `px` then moves to the next four.
        let (a, b, c2, d) = unsafe {
            let a = *px as i16 as u16 as u32;
            let b = *px.add(plane) as i16 as u16 as u32;
            let c2 = *px.add(2 * plane) as i16 as u16 as u32;
            let d = *px.add(3 * plane) as i16 as u16 as u32;
            px = px.add(4 * plane);
            (a, b, c2, d)
        };
        o[2 * c] = ssub16(a | (c2 << 16), z);
        o[2 * c + 1] = ssub16(b | (d << 16), z);
    }
    for (t, ch) in tail.iter_mut().zip(k4..g.c) {
        *t = v(ch) as u16 as i16 as i32;
    }
}

/// The flat offset of output pixel `p`'s window origin in its image, when the whole
/// window lies inside the image.
#[inline(always)]
fn window_inside(g: &Geo, p: usize) -> Option<usize> {
    let (oy, ox) = (p / g.ow, p % g.ow);
    let iy0 = (oy * g.sh) as isize - g.pt;
    let ix0 = (ox * g.sw) as isize - g.pl;
    let inside = iy0 >= 0
        && ix0 >= 0
        && iy0 as usize + (g.kh - 1) * g.dh < g.h
        && ix0 as usize + (g.kw - 1) * g.dw < g.w;
    inside.then(|| iy0 as usize * g.w + ix0 as usize)
}

/// Column `c` of the interleaved pair (`pair_column`'s order) for a window inside the
/// image at `base`: tap `t` is `x[base + offs[t]] − zx`, four taps a step, paired as int16
/// and the zero point taken off both halves at once.
#[inline(always)]
fn gather_inside(
    x: &[i8],
    base: usize,
    offs: &[u32],
    zx: i32,
    cols: &mut [u32],
    c: usize,
    tail: &mut [i32; 3],
) {
    let k4 = cols.len() / 2;
    let last = offs.last().map_or(0, |&o| o as usize);
    assert!(offs.len() >= k4 && offs.len() - k4 <= 3 && base + last < x.len());
    let z = (zx as u16 as u32) * 0x0001_0001;
    let xp = x[base..].as_ptr();
    for (o, t) in cols.chunks_exact_mut(4).zip(offs.chunks_exact(4)) {
        // SAFETY: every offset is at most `last` (they increase), and base + last is
        // inside `x` (asserted).
        let v = |i: usize| unsafe { *xp.add(*t.get_unchecked(i) as usize) as i16 as u16 as u32 };
        o[2 * c] = ssub16(v(0) | (v(2) << 16), z);
        o[2 * c + 1] = ssub16(v(1) | (v(3) << 16), z);
    }
    for (t, &off) in tail.iter_mut().zip(&offs[k4..]) {
        *t = x[base + off as usize] as i32 - zx;
    }
}

/// The patch of output pixel `p` (flat within the image), `x − zx` per element in the
/// weights' order (channel, ky, kx); 0 where the window leaves the image.
#[inline(always)]
fn gather(g: &Geo, x: &[i8], zx: i32, p: usize, out: &mut [i16]) {
    let (oy, ox) = (p / g.ow, p % g.ow);
    let plane = g.h * g.w;
    if g.kh == 1 && g.kw == 1 && g.pt == 0 && g.pl == 0 && g.sh == 1 && g.sw == 1 {
        let at = oy * g.w + ox;
        for (c, v) in out.iter_mut().enumerate() {
            *v = (x[c * plane + at] as i32 - zx) as i16;
        }
        return;
    }
    let iy0 = (oy * g.sh) as isize - g.pt;
    let ix0 = (ox * g.sw) as isize - g.pl;
    let inside = iy0 >= 0
        && ix0 >= 0
        && iy0 as usize + (g.kh - 1) * g.dh < g.h
        && ix0 as usize + (g.kw - 1) * g.dw < g.w;
    if inside {
        // The whole window is in the image: no per-tap tests.
        let (iy0, ix0) = (iy0 as usize, ix0 as usize);
        let mut k = 0;
        for xc in x.chunks_exact(plane).take(g.c) {
            for ky in 0..g.kh {
                let row = &xc[(iy0 + ky * g.dh) * g.w + ix0..];
                for (kx, o) in out[k..k + g.kw].iter_mut().enumerate() {
                    *o = (row[kx * g.dw] as i32 - zx) as i16;
                }
                k += g.kw;
            }
        }
        return;
    }
    let mut k = 0;
    for c in 0..g.c {
        let xc = &x[c * plane..(c + 1) * plane];
        for ky in 0..g.kh {
            let iy = iy0 + (ky * g.dh) as isize;
            let row_in = iy >= 0 && iy < g.h as isize;
            for kx in 0..g.kw {
                let ix = ix0 + (kx * g.dw) as isize;
                out[k] = if row_in && ix >= 0 && ix < g.w as isize {
                    (xc[iy as usize * g.w + ix as usize] as i32 - zx) as i16
                } else {
                    0
                };
                k += 1;
            }
        }
    }
}

/// int16 values into `sxtb16` order, as column `c` (0 or 1) of the interleaved pair
/// `out`: per four values, `[v0, v2]` then `[v1, v3]` (low half first) at words
/// `4i + 2c` and `4i + 2c + 1`; the last `len % 4` go to `tail` as i32.
#[inline(always)]
fn pair_column(v: &[i16], out: &mut [u32], c: usize, tail: &mut [i32; 3]) {
    let k4 = v.len() / 4 * 4;
    for (s, o) in v[..k4].chunks_exact(4).zip(out.chunks_exact_mut(4)) {
        o[2 * c] = (s[0] as u16 as u32) | ((s[2] as u16 as u32) << 16);
        o[2 * c + 1] = (s[1] as u16 as u32) | ((s[3] as u16 as u32) << 16);
    }
    for (t, &s) in tail.iter_mut().zip(&v[k4..]) {
        *t = s as i32;
    }
}

/// Two weight rows (`w[..k4]` and `w[k..k + k4]`, `k4 = cols.len() / 2`) × the two
/// interleaved columns: `[r0·c0, r0·c1, r1·c0, r1·c1]` added to `acc`. Per four k: two
/// weight words, four extends, four column words, eight SMLADs and the loop's three:
/// 21 instructions for 16 MACs. In assembly: the compiler's version of the same loop
/// spills accumulators (about 30 instructions).
/// # Safety
/// `w` points to two rows `k` bytes apart, each with `k4` readable bytes; `cols` to
/// `2·k4` words; `k4` is a multiple of 4.
#[inline(always)]
unsafe fn block2x2_raw(
    w: *const i8,
    k: usize,
    k4: usize,
    cols: *const u32,
    acc: [i32; 4],
) -> [i32; 4] {
    debug_assert!(k4.is_multiple_of(4) && k4 <= k);
    let [mut a0, mut a1, mut a2, mut a3] = acc;
    if k4 == 0 {
        return acc;
    }
    let end = w as usize + k4;
    // SAFETY: reads `w[..k4]`, `w[k..k + k4]` and `cols[..2 * k4]` only (the caller's
    // promise: the loop runs k4 / 4 times, each step 4 weight bytes per row and 4 column
    // words); register-only DSP instructions otherwise. `end` is pushed and dropped
    // around the loop, leaving the stack as it was.
    unsafe {
        core::arch::asm!(
            "push {{{x}}}",
            "2:",
            "ldr {b}, [{pw}, {ks}]",
            "ldr {a}, [{pw}], #4",
            "sxtb16 {t}, {a}",
            "sxtb16 {a}, {a}, ror #8",
            "sxtb16 {u}, {b}",
            "sxtb16 {b}, {b}, ror #8",
            "ldr {x}, [{pc}], #16",
            "smlad {a0}, {t}, {x}, {a0}",
            "smlad {a2}, {u}, {x}, {a2}",
            "ldr {x}, [{pc}, #-12]",
            "smlad {a0}, {a}, {x}, {a0}",
            "smlad {a2}, {b}, {x}, {a2}",
            "ldr {x}, [{pc}, #-8]",
            "smlad {a1}, {t}, {x}, {a1}",
            "smlad {a3}, {u}, {x}, {a3}",
            "ldr {x}, [{pc}, #-4]",
            "smlad {a1}, {a}, {x}, {a1}",
            "smlad {a3}, {b}, {x}, {a3}",
            "ldr {x}, [sp]",
            "cmp {pw}, {x}",
            "bne 2b",
            "add sp, sp, #4",
            pw = inout(reg) w => _,
            ks = in(reg) k,
            pc = inout(reg) cols => _,
            a0 = inout(reg) a0,
            a1 = inout(reg) a1,
            a2 = inout(reg) a2,
            a3 = inout(reg) a3,
            a = out(reg) _,
            b = out(reg) _,
            t = out(reg) _,
            u = out(reg) _,
            x = inout(reg) end => _,
        );
    }
    [a0, a1, a2, a3]
}

/// One weight row × column `c` of the interleaved pair.
#[inline(always)]
fn dot(w: &[i8], cols: &[u32], c: usize, mut acc: i32) -> i32 {
    let w: &[[i8; 4]] = bytemuck::cast_slice(w);
    for (a, x) in w.iter().zip(cols.chunks_exact(4)) {
        let a = u32::from_le_bytes([a[0] as u8, a[1] as u8, a[2] as u8, a[3] as u8]);
        acc = smlad(
            sxtb16_ror8(a),
            x[2 * c + 1],
            smlad(sxtb16(a), x[2 * c], acc),
        );
    }
    acc
}

/// Largest kernel side of the depthwise path.
const DW_MAX_SIDE: usize = 8;
/// int16 elements of its row ring (kernel-height rows of the padded input row): 2 KB.
const DW_RING: usize = 1024;

/// Depthwise conv (one input channel per group, dilation 1) over int16 rows: each weight
/// row is paired along x (`[w0, w1]`, `[w2, w3]`, …, a zero past the end), each input row
/// is converted once to `x − zx` with zero padding, and an output pixel is one SMLAD per
/// weight pair and kernel row inside the image, two output pixels per step.
#[inline(never)]
pub(crate) fn depthwise<const FULL: bool>(g: &Geo, q: &Operands<'_>, y: &mut [i8]) -> bool {
    let pairs = g.kw.div_ceil(2);
    // The padded row spans every pair any output reads.
    let row_len = (g.ow.saturating_sub(1) * g.sw + 2 * pairs).max(g.pl.max(0) as usize + g.w);
    if !(g.g == g.c
        && g.oc == g.c
        && g.dh == 1
        && g.dw == 1
        && g.kh <= DW_MAX_SIDE
        && g.kw <= DW_MAX_SIDE
        && g.kh > 0
        && g.kw > 0
        && g.pl >= 0
        && g.pt >= 0
        && g.kh * row_len <= DW_RING
        && q.w.len() >= g.c * g.kh * g.kw)
    {
        return false;
    }
    let mut ring = [0i16; DW_RING];
    let mut wp = [0u32; DW_MAX_SIDE * DW_MAX_SIDE / 2];
    let (plane, ohw) = (g.h * g.w, g.oh * g.ow);
    let pl = g.pl as usize;
    for n in 0..g.n {
        for c in 0..g.c {
            let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
            let yc = &mut y[(n * g.c + c) * ohw..(n * g.c + c + 1) * ohw];
            let wc = &q.w[c * g.kh * g.kw..(c + 1) * g.kh * g.kw];
            for (ky, wr) in wc.chunks_exact(g.kw).enumerate() {
                for j in 0..pairs {
                    let lo = wr[2 * j] as i16 as u16 as u32;
                    let hi = wr.get(2 * j + 1).map_or(0, |&v| v as i16 as u16 as u32);
                    wp[ky * pairs + j] = lo | (hi << 16);
                }
            }
            let b = q.bias.map_or(0, |b| b[c]);
            let mut next_iy = 0usize;
            for oy in 0..g.oh {
                let iy0 = (oy * g.sh) as isize - g.pt;
                // Convert the rows this output row reads that are not in the ring yet.
                let iy_end = (iy0 + g.kh as isize).clamp(0, g.h as isize) as usize;
                while next_iy < iy_end {
                    let slot = next_iy % g.kh;
                    let row = &mut ring[slot * row_len..(slot + 1) * row_len];
                    row.fill(0);
                    let src = &xc[next_iy * g.w..(next_iy + 1) * g.w];
                    for (d, &s) in row[pl..pl + g.w].iter_mut().zip(src) {
                        *d = (s as i32 - q.zx) as i16;
                    }
                    next_iy += 1;
                }
                let ky0 = (-iy0).max(0) as usize;
                let ky1 = (g.h as isize - iy0).clamp(0, g.kh as isize) as usize;
                // The ring row and weight pairs of each kernel row inside the image.
                let mut rows = [(&ring[..0], &wp[..0]); DW_MAX_SIDE];
                for (r, ky) in rows.iter_mut().zip(ky0..ky1) {
                    let slot = (iy0 + ky as isize) as usize % g.kh;
                    *r = (
                        &ring[slot * row_len..(slot + 1) * row_len],
                        &wp[ky * pairs..(ky + 1) * pairs],
                    );
                }
                let rows = &rows[..ky1.saturating_sub(ky0)];
                let yr = &mut yc[oy * g.ow..(oy + 1) * g.ow];
                match pairs {
                    1 => row_out::<1>(rows, g.sw, b, g.ow, |a, ox| {
                        yr[ox] = q.requant::<FULL>(a, c)
                    }),
                    2 => row_out::<2>(rows, g.sw, b, g.ow, |a, ox| {
                        yr[ox] = q.requant::<FULL>(a, c)
                    }),
                    3 => row_out::<3>(rows, g.sw, b, g.ow, |a, ox| {
                        yr[ox] = q.requant::<FULL>(a, c)
                    }),
                    _ => row_out::<4>(rows, g.sw, b, g.ow, |a, ox| {
                        yr[ox] = q.requant::<FULL>(a, c)
                    }),
                }
            }
        }
    }
    true
}

/// One output row of `ow` pixels (through `store(acc, ox)`), two at a time: for each
/// kernel row in `rows` (its int16 input row, its `P` weight pairs),
/// `Σ_j smlad(w[j], row[ox·sw + 2j .. +2])`.
#[inline(always)]
fn row_out<const P: usize>(
    rows: &[(&[i16], &[u32])],
    sw: usize,
    bias: i32,
    ow: usize,
    mut store: impl FnMut(i32, usize),
) {
    if ow == 0 {
        return;
    }
    // Every pair any output of the row reads, checked once here.
    let need = (ow - 1) * sw + 2 * P;
    for &(row, w) in rows {
        assert!(row.len() >= need && w.len() == P);
    }
    let mut ox = 0;
    while ox + 1 < ow {
        let (mut a0, mut a1) = (bias, bias);
        for &(row, w) in rows {
            // SAFETY: ox + 1 < ow, so both outputs' pairs lie below `need` (asserted).
            unsafe {
                let (x0, x1) = (row.as_ptr().add(ox * sw), row.as_ptr().add(ox * sw + sw));
                (a0, a1) = taps2::<P>(w.as_ptr(), x0, x1, a0, a1);
            }
        }
        store(a0, ox);
        store(a1, ox + 1);
        ox += 2;
    }
    if ox < ow {
        let mut a0 = bias;
        for &(row, w) in rows {
            // SAFETY: ox < ow: its pairs lie below `need` (asserted). The second output is
            // the same pixel (read, not stored).
            unsafe {
                let x0 = row.as_ptr().add(ox * sw);
                (a0, _) = taps2::<P>(w.as_ptr(), x0, x0, a0, 0);
            }
        }
        store(a0, ox);
    }
}

/// `P` weight pairs at `w` against the pairs at `x0` and at `x1`, unrolled.
///
/// # Safety
/// `w` points to `P` words, `x0` and `x1` to `2P` int16 values each.
#[inline(always)]
unsafe fn taps2<const P: usize>(
    w: *const u32,
    x0: *const i16,
    x1: *const i16,
    mut a0: i32,
    mut a1: i32,
) -> (i32, i32) {
    macro_rules! tap {
        ($j:expr) => {
            if $j < P {
                // SAFETY: $j < P, inside the caller's promise.
                let (wj, p0, p1) = unsafe {
                    (
                        *w.add($j),
                        core::ptr::read_unaligned(x0.add(2 * $j) as *const u32),
                        core::ptr::read_unaligned(x1.add(2 * $j) as *const u32),
                    )
                };
                a0 = smlad(wj, p0, a0);
                a1 = smlad(wj, p1, a1);
            }
        };
    }
    tap!(0);
    tap!(1);
    tap!(2);
    tap!(3);
    (a0, a1)
}

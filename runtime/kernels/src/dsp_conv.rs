//! Cortex-M DSP-extension int8 convolutions (`dsp` feature, 32-bit Arm), the kernels
//! CMSIS-NN uses for these layers, reworked for cairn's NCHW planes:
//! - pointwise convs with a multiple of 8 input channels up to 256 (`pointwise_narrow`):
//!   a chunk of pixels transposed once into int16 channel pairs, then per output channel
//!   `ldm` + four SMLADs per eight MACs, four output pixels requantized and stored at once;
//! - other one-group convs (3×3, the stem; any stride, padding, dilation) as im2col into
//!   int16 columns, two output pixels at a time, and a 2-output-channel × 2-column SMLAD
//!   block (`im2col`; the idea of CMSIS-NN's `arm_nn_mat_mult_kernel_s8_s16`);
//! - depthwise convs (dilation 1, any kernel up to 8 × 8, any stride) over int16 input
//!   rows, converted four bytes at a time: 3- and 5-wide kernels with stride 1 along x
//!   four output pixels per step, each row's weight pairs loaded once per step and the
//!   pixels' pairs shared between them (`row_out3`, `row_out5`); other kernels weight
//!   pairs along the kernel row, two output pixels per step (`row_out`).
//!
//! Sums are exact and wrap modulo 2^32 like the reference's `wrapping_add`; padding
//! contributes `0 = zx − zx`, as the reference's skipped taps do; requantization gives
//! the reference's `requantize` values (`dsp::requantize_fpu`). So results are identical to `conv::conv_i8` (checked against
//! the host by the firmware's QEMU test, `tests/tests/mcu_qemu.rs`).
//!
//! Each entry returns `false`, having written nothing, when the conv is not its case.

use crate::conv::Geo;
use crate::dsp::{requantize4_fpu, requantize_fpu, smlad, smlatb, ssub16, sxtb16, sxtb16_ror8};

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
    } else if g.g == 1 && narrow_pointwise(g, q) {
        match g.c {
            8 => pointwise_narrow::<4>(g, q, y),
            16 => pointwise_narrow::<8>(g, q, y),
            32 => pointwise_narrow::<16>(g, q, y),
            _ => pointwise_narrow::<0>(g, q, y),
        }
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

/// Words of `pointwise_narrow`'s transposed input chunk (4 KB of stack).
const NARROW_WORDS: usize = 1024;
/// Most input channels `pointwise_narrow` takes (a chunk of at least 8 pixels).
const NARROW_MAX_K: usize = 256;

/// Whether `pointwise_narrow` takes the conv: pointwise, a multiple of 8 input channels
/// (whole `dot8` steps) up to `NARROW_MAX_K`, at least 16 pixels (fewer go faster through
/// `im2col`), int8 clamp bounds.
fn narrow_pointwise(g: &Geo, q: &Operands<'_>) -> bool {
    let pointwise = g.kh == 1 && g.kw == 1 && g.pt == 0 && g.pl == 0 && g.sh == 1 && g.sw == 1;
    pointwise
        && g.c.is_multiple_of(8)
        && g.c > 0
        && g.c <= NARROW_MAX_K
        && g.h * g.w >= 16
        && g.oh == g.h
        && g.ow == g.w
        && q.lo >= -128
        && q.hi <= 127
        && q.w.len() >= g.oc * g.c
}

/// A pointwise conv with up to `NARROW_MAX_K` input channels (`K`, a multiple of 8),
/// weight-stationary: a chunk of pixels is transposed once into int16 pairs of channels in `sxtb16` order (pair `2m`: channels `4m`, `4m + 2`; pair `2m + 1`:
/// `4m + 1`, `4m + 3`; `x − zx`; a row of `K / 2` words per pixel), then for each output
/// channel its weights (two extends per word, once per chunk) meet the chunk's pixels:
/// `dot8` per four pairs (eight MACs in six instructions), four pixels a step, the four
/// outputs (contiguous in the output plane) requantized and stored as one word (the
/// clamp chosen per call as in `narrow_row`). `K2`: the pairs per pixel when 4, 8 or 16
/// (unrolled), 0 for any other count (`dotn`, a loop).
#[inline(never)]
fn pointwise_narrow<const K2: usize>(g: &Geo, q: &Operands<'_>, y: &mut [i8]) -> bool {
    // A constant for K2 > 0.
    let k = if K2 > 0 { 2 * K2 } else { g.c };
    let k2 = k / 2;
    if !(narrow_pointwise(g, q) && g.c == k && K2.is_multiple_of(4)) {
        return false;
    }
    let plane = g.h * g.w;
    let z = (q.zx as u16 as u32) * 0x0001_0001;
    let full = q.lo == -128 && q.hi == 127;
    // Pixels per chunk: a multiple of 4, at least 8.
    let chunk = NARROW_WORDS / k2 / 4 * 4;
    let mut xt = [0u32; NARROW_WORDS];
    let mut wp = [0u32; NARROW_MAX_K / 2];
    let wp = &mut wp[..k2];
    for n in 0..g.n {
        let x = &q.x[n * k * plane..(n + 1) * k * plane];
        let y = &mut y[n * g.oc * plane..(n + 1) * g.oc * plane];
        let mut p0 = 0;
        while p0 < plane {
            let np = chunk.min(plane - p0);
            let np4 = np / 4 * 4;
            let xt = &mut xt[..np * k2];
            for j in 0..k2 {
                let ca = 4 * (j / 2) + j % 2;
                let ra = &x[ca * plane + p0..][..np];
                let rb = &x[(ca + 2) * plane + p0..][..np];
                let (pa, pb) = (ra.as_ptr(), rb.as_ptr());
                let xo = &mut xt[j..];
                let mut i = 0;
                while i < np4 {
                    // SAFETY: i + 4 <= np4 <= np, the length of `ra` and `rb` (unaligned
                    // word loads).
                    let (a, b) = unsafe {
                        (
                            core::ptr::read_unaligned(pa.add(i) as *const u32),
                            core::ptr::read_unaligned(pb.add(i) as *const u32),
                        )
                    };
                    let (ea, oa) = (ssub16(sxtb16(a), z), ssub16(sxtb16_ror8(a), z));
                    let (eb, ob) = (ssub16(sxtb16(b), z), ssub16(sxtb16_ror8(b), z));
                    xo[i * k2] = (ea & 0xffff) | (eb << 16);
                    xo[(i + 1) * k2] = (oa & 0xffff) | (ob << 16);
                    xo[(i + 2) * k2] = (ea >> 16) | (eb & 0xffff_0000);
                    xo[(i + 3) * k2] = (oa >> 16) | (ob & 0xffff_0000);
                    i += 4;
                }
                for i in np4..np {
                    let (a, b) = (ra[i] as i32 - q.zx, rb[i] as i32 - q.zx);
                    xo[i * k2] = (a as u16 as u32) | ((b as u32) << 16);
                }
            }
            for o in 0..g.oc {
                let wo = &q.w[o * k..(o + 1) * k];
                assert!(wo.len() == 2 * wp.len());
                let (src, dst) = (wo.as_ptr(), wp.as_mut_ptr());
                for m in 0..k / 4 {
                    // SAFETY: m < k / 4: bytes 4m..4m + 4 of `wo` (k bytes) and words
                    // 2m, 2m + 1 of `wp` (k / 2 words).
                    unsafe {
                        let v = core::ptr::read_unaligned(src.add(4 * m) as *const u32);
                        *dst.add(2 * m) = sxtb16(v);
                        *dst.add(2 * m + 1) = sxtb16_ror8(v);
                    }
                }
                let b = q.bias.map_or(0, |b| b[o]);
                let s = q.scales[o];
                let yo = &mut y[o * plane + p0..][..np];
                let mut xp = xt.as_ptr();
                let wpp = wp.as_ptr();
                // SAFETY: `xp` walks the rows of `xt[..np4 · k2]`, k2 words each (k2 a
                // multiple of 4: k2 / 4 calls per pixel, each reading four words and
                // moving on by four); the calls read `wp`'s k2 words four at a time.
                let pixel = |xp: &mut *const u32| unsafe {
                    if K2 == 0 {
                        return dotn(xp, wpp, k2 / 4, b);
                    }
                    let (mut a, mut w) = (b, wpp);
                    // Unrolled: K2 / 4 calls (the guards are constant).
                    macro_rules! quad {
                        ($($m:literal)*) => {$(
                            if 4 * $m < K2 {
                                a = dot8(xp, &mut w, a);
                            }
                        )*};
                    }
                    quad!(0 1 2 3 4 5 6 7);
                    a
                };
                for i in 0..np4 / 4 {
                    let a0 = pixel(&mut xp);
                    let a1 = pixel(&mut xp);
                    let a2 = pixel(&mut xp);
                    let a3 = pixel(&mut xp);
                    let v = match full {
                        true => requantize4_fpu::<true>([a0, a1, a2, a3], s, q.zy, q.lo, q.hi),
                        false => requantize4_fpu::<false>([a0, a1, a2, a3], s, q.zy, q.lo, q.hi),
                    };
                    yo[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes().map(|b| b as i8));
                }
                for (yv, xs) in yo[np4..].iter_mut().zip(xt[np4 * k2..].chunks_exact(k2)) {
                    let mut a = b;
                    for (&w, &x) in wp.iter().zip(xs) {
                        a = smlad(w, x, a);
                    }
                    *yv = requantize_fpu::<false>(a, s, q.zy, q.lo, q.hi) as i8;
                }
            }
            p0 += np;
        }
    }
    true
}

/// `acc + Σ_j smlad(w[j], x[j])` over four words at `*xp` and at `*w` (both then moved
/// past them): one `ldm` for each and four SMLADs, eight MACs in six instructions.
/// # Safety
/// `*xp` and `*w` each point to four readable words.
#[inline(always)]
unsafe fn dot8(xp: &mut *const u32, w: &mut *const u32, acc: i32) -> i32 {
    let mut a = acc;
    // SAFETY: reads the four words at `*xp` and at `*w` (the caller's promise); `ldm`
    // takes its registers in ascending order, so the fixed registers pair x[j] (r0–r3)
    // with w[j] (r4, r5, r8, r9).
    unsafe {
        core::arch::asm!(
            "ldm {xp}!, {{r0, r1, r2, r3}}",
            "ldm {w}!, {{r4, r5, r8, r9}}",
            "smlad {a}, r4, r0, {a}",
            "smlad {a}, r5, r1, {a}",
            "smlad {a}, r8, r2, {a}",
            "smlad {a}, r9, r3, {a}",
            xp = inout(reg) *xp,
            w = inout(reg) *w,
            a = inout(reg) a,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            out("r8") _,
            out("r9") _,
            options(pure, readonly, nostack)
        );
    }
    a
}

/// `dot8` over `4·n` words at `*xp` (then moved past them) and at `w`: one step when `n`
/// is odd, then a loop of two steps (fourteen instructions for sixteen MACs).
/// # Safety
/// `n > 0`; `*xp` and `w` each point to `4·n` readable words.
#[inline(always)]
unsafe fn dotn(xp: &mut *const u32, w: *const u32, n: usize, acc: i32) -> i32 {
    let (mut a, mut w) = (acc, w);
    // SAFETY: `n` steps of `dot8`'s reads (the caller's promise).
    unsafe {
        if n % 2 == 1 {
            a = dot8(xp, &mut w, a);
        }
        if n >= 2 {
            core::arch::asm!(
                "2:",
                "ldm {xp}!, {{r0, r1, r2, r3}}",
                "ldm {w}!, {{r4, r5, r8, r9}}",
                "smlad {a}, r4, r0, {a}",
                "smlad {a}, r5, r1, {a}",
                "smlad {a}, r8, r2, {a}",
                "smlad {a}, r9, r3, {a}",
                "ldm {xp}!, {{r0, r1, r2, r3}}",
                "ldm {w}!, {{r4, r5, r8, r9}}",
                "smlad {a}, r4, r0, {a}",
                "smlad {a}, r5, r1, {a}",
                "smlad {a}, r8, r2, {a}",
                "smlad {a}, r9, r3, {a}",
                "subs {n}, {n}, #1",
                "bne 2b",
                xp = inout(reg) *xp,
                w = inout(reg) w => _,
                n = inout(reg) n / 2 => _,
                a = inout(reg) a,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                options(pure, readonly, nostack)
            );
        }
    }
    a
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

/// The depthwise row ring, word-aligned.
#[repr(align(4))]
struct Ring([i16; DW_RING]);

/// Depthwise conv (one input channel per group, dilation 1) over int16 rows: each weight
/// row is paired along x (`[w0, w1]`, `[w2, w3]`, …, a zero past the end), each input row
/// is converted once to `x − zx` with zero padding, and an output pixel is one SMLAD per
/// weight pair and kernel row inside the image, two output pixels per step; 3- and 5-wide
/// kernels with stride 1 along x go four pixels per step (`narrow_row`).
#[inline(never)]
pub(crate) fn depthwise<const FULL: bool>(g: &Geo, q: &Operands<'_>, y: &mut [i8]) -> bool {
    let pairs = g.kw.div_ceil(2);
    // The padded row spans every pair any output reads; an even length keeps every ring
    // row word-aligned (`row_out3` loads words with `ldm`).
    let row_len = (g.ow.saturating_sub(1) * g.sw + 2 * pairs).max(g.pl.max(0) as usize + g.w);
    let row_len = row_len + row_len % 2;
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
    // A 3-wide kernel with stride 1 along x, up to three kernel rows and int8 clamp
    // bounds: `row_out3`; a 5-wide one with up to five rows: `row_out5`.
    let narrow = g.sw == 1 && q.lo >= -128 && q.hi <= 127;
    let three = narrow && g.kw == 3 && g.kh <= 3;
    let five = narrow && g.kw == 5 && g.kh <= 5;
    let mut ring = Ring([0; DW_RING]);
    let ring = &mut ring.0;
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
                    convert_row(&xc[next_iy * g.w..(next_iy + 1) * g.w], q.zx, row, pl);
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
                if (three || five) && narrow_row(g.kw, rows, b, yr, q, c) {
                    continue;
                }
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

/// `x − zx` of the input row `src` into the ring row `row` from `pl` on, zeros around:
/// four elements a step (one word load, `sxtb16` ×2, `ssub16` ×2, packed back in order).
#[inline(always)]
fn convert_row(src: &[i8], zx: i32, row: &mut [i16], pl: usize) {
    let w = src.len();
    row[..pl].fill(0);
    row[pl + w..].fill(0);
    let d = &mut row[pl..pl + w];
    let z = (zx as u16 as u32) * 0x0001_0001;
    let w4 = w / 4 * 4;
    let (sp, dp) = (src.as_ptr(), d.as_mut_ptr());
    let mut i = 0;
    while i < w4 {
        // SAFETY: i + 4 <= w4 <= w: four bytes of `src` and four int16 of `d` (unaligned
        // word accesses, which Armv7-M allows for `ldr`/`str`).
        unsafe {
            let v = core::ptr::read_unaligned(sp.add(i) as *const u32);
            let e = ssub16(sxtb16(v), z); // [x0, x2]
            let o = ssub16(sxtb16_ror8(v), z); // [x1, x3]
            let lo = (e & 0xffff) | (o << 16);
            let hi = (o & 0xffff_0000) | (e >> 16);
            core::ptr::write_unaligned(dp.add(i) as *mut u32, lo);
            core::ptr::write_unaligned(dp.add(i + 2) as *mut u32, hi);
        }
        i += 4;
    }
    for (o, &s) in d[w4..].iter_mut().zip(&src[w4..]) {
        *o = (s as i32 - zx) as i16;
    }
}

/// One output row of a `kw`-wide depthwise kernel, 3 or 5 (stride 1 along x, int8 clamp
/// bounds), over one to `kw` kernel rows (`rows`): `row_out3` / `row_out5`, unrolled over
/// the rows; the clamp is chosen per call, not per copy (`requantize4_fpu`'s two clamps;
/// single outputs take the general one, which a full int8 range leaves as it is). `false`
/// (nothing written) for any other width or row count. Not generic, so one copy serves
/// both clamp variants of `depthwise`.
#[inline(never)]
fn narrow_row(
    kw: usize,
    rows: &[(&[i16], &[u32])],
    b: i32,
    yr: &mut [i8],
    q: &Operands<'_>,
    c: usize,
) -> bool {
    let s = q.scales[c];
    let rq = |a: i32| requantize_fpu::<false>(a, s, q.zy, q.lo, q.hi) as i8;
    let full = q.lo == -128 && q.hi == 127;
    let rq4 = |a: [i32; 4]| match full {
        true => requantize4_fpu::<true>(a, s, q.zy, q.lo, q.hi),
        false => requantize4_fpu::<false>(a, s, q.zy, q.lo, q.hi),
    };
    match (kw, rows.len()) {
        (3, 1) => row_out3::<1>(rows, b, yr, rq, rq4),
        (3, 2) => row_out3::<2>(rows, b, yr, rq, rq4),
        (3, 3) => row_out3::<3>(rows, b, yr, rq, rq4),
        (5, 1) => row_out5::<1>(rows, b, yr, rq, rq4),
        (5, 2) => row_out5::<2>(rows, b, yr, rq, rq4),
        (5, 3) => row_out5::<3>(rows, b, yr, rq, rq4),
        (5, 4) => row_out5::<4>(rows, b, yr, rq, rq4),
        (5, 5) => row_out5::<5>(rows, b, yr, rq, rq4),
        _ => return false,
    }
    true
}

/// A kernel row of `row_out3`: its int16 row (word-aligned) and weight pairs
/// `[w0, w1]`, `[w1, w2]`, in the order `taps3` loads them.
#[repr(C)]
#[derive(Clone, Copy)]
struct Row3 {
    p: *const i16,
    w01: u32,
    w12: u32,
}

/// One output row of a 3-wide kernel with stride 1 along x over the `R` kernel rows
/// `rows` (their int16 rows and weight pairs `[w0, w1]`, `[w2, 0]`), four outputs a step
/// (`taps3` per kernel row, the rows unrolled), the four outputs requantized and stored
/// together (`rq4`, packed bytes). Each row is word-aligned and holds at least `ow + 2`
/// values.
#[inline(always)]
fn row_out3<const R: usize>(
    rows: &[(&[i16], &[u32])],
    bias: i32,
    y: &mut [i8],
    rq: impl Fn(i32) -> i8,
    rq4: impl Fn([i32; 4]) -> u32,
) {
    let ow = y.len();
    assert!(R <= 3 && rows.len() == R);
    let mut rr = [Row3 {
        p: core::ptr::null(),
        w01: 0,
        w12: 0,
    }; 3];
    for (r, &(row, w)) in rr.iter_mut().zip(rows) {
        assert!(row.len() >= ow + 2 && w.len() == 2 && (row.as_ptr() as usize).is_multiple_of(4));
        *r = Row3 {
            p: row.as_ptr(),
            w01: w[0],
            w12: (w[0] >> 16) | (w[1] << 16),
        };
    }
    let mut ox = 0;
    while ox + 4 <= ow {
        let mut a = (bias, bias, bias, bias);
        // SAFETY: each row holds ow + 2 >= ox + 6 values and is word-aligned, and ox is a
        // multiple of 4 (asserted above). Unrolled: the guards are constant.
        unsafe {
            if R > 0 {
                a = taps3(&rr[0], ox, a);
            }
            if R > 1 {
                a = taps3(&rr[1], ox, a);
            }
            if R > 2 {
                a = taps3(&rr[2], ox, a);
            }
        }
        let v = rq4([a.0, a.1, a.2, a.3]);
        // SAFETY: ox + 4 <= ow = y.len(); an unaligned word store.
        unsafe { core::ptr::write_unaligned(y.as_mut_ptr().add(ox) as *mut u32, v) };
        ox += 4;
    }
    // SAFETY (reads below): a single output at ox < ow reads values ox..ox + 4, below
    // ow + 2 (asserted).
    let rd = |p: *const i16, i: usize| unsafe { core::ptr::read_unaligned(p.add(i) as *const u32) };
    while ox < ow {
        let mut a = bias;
        for r in &rr[..R] {
            a = smlatb(r.w12, rd(r.p, ox + 2), smlad(r.w01, rd(r.p, ox), a));
        }
        y[ox] = rq(a);
        ox += 1;
    }
}

/// Four outputs of one kernel row of `row_out3` at `ox`: with `W01 = [w0, w1]`,
/// `W12 = [w1, w2]` and the row's pairs `Q0 = [q0, q1]`, `Q1 = [q2, q3]`, `Q2 = [q4, q5]`
/// from `ox` on, outputs 0–3 gain `W01·Q0 + w2·q2`, `W12·Q1 + w0·q1`, `W01·Q1 + w2·q4`,
/// `W12·Q2 + w0·q3`: two `ldm` (the row, then its three words) and eight multiply-adds
/// for twelve MACs.
/// # Safety
/// `r.p` is word-aligned with six readable values from `ox`, a multiple of 4.
#[inline(always)]
unsafe fn taps3(r: &Row3, ox: usize, a: (i32, i32, i32, i32)) -> (i32, i32, i32, i32) {
    let (mut a0, mut a1, mut a2, mut a3) = a;
    // SAFETY: reads `*r` (three words, `#[repr(C)]`) and three words at r.p + ox (the
    // caller's promise); `ldm` fills its registers in ascending order: p, w01, w12 into
    // r3–r5 and the pairs Q0–Q2 into r0–r2.
    unsafe {
        core::arch::asm!(
            "ldm {r}, {{r3, r4, r5}}",
            "add r3, r3, {ox}, lsl #1",
            "ldm r3, {{r0, r1, r2}}",
            "smlad {a0}, r4, r0, {a0}",
            "smlatb {a0}, r5, r1, {a0}",
            "smlad {a1}, r5, r1, {a1}",
            "smlabt {a1}, r4, r0, {a1}",
            "smlad {a2}, r4, r1, {a2}",
            "smlatb {a2}, r5, r2, {a2}",
            "smlad {a3}, r5, r2, {a3}",
            "smlabt {a3}, r4, r1, {a3}",
            r = in(reg) r as *const Row3,
            ox = in(reg) ox,
            a0 = inout(reg) a0,
            a1 = inout(reg) a1,
            a2 = inout(reg) a2,
            a3 = inout(reg) a3,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            options(pure, readonly, nostack)
        );
    }
    (a0, a1, a2, a3)
}

/// A kernel row of `row_out5`: its int16 row (word-aligned) and weight pairs
/// `[w0, w1]`, `[w2, w3]`, `[w4, 0]`, `[w1, w2]`, `[w3, w4]`, in the order `taps5` loads
/// them.
#[repr(C)]
#[derive(Clone, Copy)]
struct Row5 {
    p: *const i16,
    w01: u32,
    w23: u32,
    w4: u32,
    w12: u32,
    w34: u32,
}

/// `row_out3` for a 5-wide kernel over `R` (at most 5) kernel rows (their int16 rows and
/// weight pairs `[w0, w1]`, `[w2, w3]`, `[w4, 0]`): `taps5` per kernel row, four outputs a
/// step. Each row is word-aligned and holds at least `ow + 4` values.
#[inline(always)]
fn row_out5<const R: usize>(
    rows: &[(&[i16], &[u32])],
    bias: i32,
    y: &mut [i8],
    rq: impl Fn(i32) -> i8,
    rq4: impl Fn([i32; 4]) -> u32,
) {
    let ow = y.len();
    assert!(R <= 5 && rows.len() == R);
    let mut rr = [Row5 {
        p: core::ptr::null(),
        w01: 0,
        w23: 0,
        w4: 0,
        w12: 0,
        w34: 0,
    }; 5];
    for (r, &(row, w)) in rr.iter_mut().zip(rows) {
        assert!(row.len() >= ow + 4 && w.len() == 3 && (row.as_ptr() as usize).is_multiple_of(4));
        *r = Row5 {
            p: row.as_ptr(),
            w01: w[0],
            w23: w[1],
            w4: w[2],
            w12: (w[0] >> 16) | (w[1] << 16),
            w34: (w[1] >> 16) | (w[2] << 16),
        };
    }
    let mut ox = 0;
    while ox + 4 <= ow {
        let mut a = (bias, bias, bias, bias);
        // SAFETY: each row holds ow + 4 >= ox + 8 values and is word-aligned, and ox is a
        // multiple of 4 (asserted above). Unrolled: the guards are constant.
        unsafe {
            if R > 0 {
                a = taps5(&rr[0], ox, a);
            }
            if R > 1 {
                a = taps5(&rr[1], ox, a);
            }
            if R > 2 {
                a = taps5(&rr[2], ox, a);
            }
            if R > 3 {
                a = taps5(&rr[3], ox, a);
            }
            if R > 4 {
                a = taps5(&rr[4], ox, a);
            }
        }
        let v = rq4([a.0, a.1, a.2, a.3]);
        // SAFETY: ox + 4 <= ow = y.len(); an unaligned word store.
        unsafe { core::ptr::write_unaligned(y.as_mut_ptr().add(ox) as *mut u32, v) };
        ox += 4;
    }
    // SAFETY (reads below): a single output at ox < ow reads values ox..ox + 6, below
    // ow + 4 (asserted).
    let rd = |p: *const i16, i: usize| unsafe { core::ptr::read_unaligned(p.add(i) as *const u32) };
    while ox < ow {
        let mut a = bias;
        for r in &rr[..R] {
            a = smlad(r.w01, rd(r.p, ox), a);
            a = smlad(r.w23, rd(r.p, ox + 2), a);
            a = smlad(r.w4, rd(r.p, ox + 4), a);
        }
        y[ox] = rq(a);
        ox += 1;
    }
}

/// Four outputs of one kernel row of `row_out5` at `ox`: with the row's pairs
/// `Q0 = [q0, q1]` … `Q3 = [q6, q7]` from `ox` on, outputs 0–3 gain
/// `W01·Q0 + W23·Q1 + w4·q4`, `w0·q1 + W12·Q1 + W34·Q2`, `W01·Q1 + W23·Q2 + w4·q6`,
/// `w0·q3 + W12·Q2 + W34·Q3`: four loads (two `ldm`, `ldr`, `ldrd`) and twelve
/// multiply-adds for twenty MACs.
/// # Safety
/// `r.p` is word-aligned with eight readable values from `ox`, a multiple of 4.
#[inline(always)]
unsafe fn taps5(r: &Row5, ox: usize, a: (i32, i32, i32, i32)) -> (i32, i32, i32, i32) {
    let (mut a0, mut a1, mut a2, mut a3) = a;
    // SAFETY: reads `*r` (six words, `#[repr(C)]`) and four words at r.p + ox (the
    // caller's promise); `ldm` fills its registers in ascending order: p, w01, w23 into
    // r0, r4, r5, then (from p + ox, the base overwritten, no writeback) Q0–Q3 into r0–r3.
    unsafe {
        core::arch::asm!(
            "ldm {r}, {{r0, r4, r5}}",
            "add r0, r0, {ox}, lsl #1",
            "ldm r0, {{r0, r1, r2, r3}}",
            "smlad {a0}, r4, r0, {a0}",
            "smlad {a0}, r5, r1, {a0}",
            "smlad {a2}, r4, r1, {a2}",
            "smlad {a2}, r5, r2, {a2}",
            "smlabt {a1}, r4, r0, {a1}",
            "smlabt {a3}, r4, r1, {a3}",
            "ldr r4, [{r}, #12]",
            "smlabb {a0}, r4, r2, {a0}",
            "smlabb {a2}, r4, r3, {a2}",
            "ldrd r4, r5, [{r}, #16]",
            "smlad {a1}, r4, r1, {a1}",
            "smlad {a1}, r5, r2, {a1}",
            "smlad {a3}, r4, r2, {a3}",
            "smlad {a3}, r5, r3, {a3}",
            r = in(reg) r as *const Row5,
            ox = in(reg) ox,
            a0 = inout(reg) a0,
            a1 = inout(reg) a1,
            a2 = inout(reg) a2,
            a3 = inout(reg) a3,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            options(pure, readonly, nostack)
        );
    }
    (a0, a1, a2, a3)
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

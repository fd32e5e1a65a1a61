//! Faster int8 convolution paths, bit-exact with the reference kernels (tested in
//! `runtime/kernels/tests/exact.rs`):
//! - pointwise (1×1, stride 1, no padding, one group) as a GEMM: AVX2 `vpmaddwd` micro-kernel
//!   of 8 output channels × 8 pixels on x86_64 (detected at run time with `std`, at compile
//!   time without), portable blocked loop elsewhere;
//! - every other conv with a kernel of at most 49 taps (depthwise included): the interior
//!   of the image without bounds checks, borders through the reference tap loop.
//!
//! Each returns `None` when the op is not its case, and the caller falls back.

use cairn_core::op::conv as p;
use cairn_core::quant::requantize;
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::conv::{geo, Geo};
use crate::util::qp;

struct Q<'a> {
    x: &'a [i8],
    w: &'a [i8],
    bias: Option<&'a [i32]>,
    scales: &'a [f32],
    zx: i32,
    zy: i32,
    lo: i32,
    hi: i32,
}

fn operands<'a>(call: &OpCall<'a>, out: &TensorMut<'_>) -> Result<Q<'a>, ExecError> {
    let xt = call.req(0)?;
    let bias = match call.input(2) {
        Some(b) => Some(b.i32s()?),
        None => None,
    };
    Ok(Q {
        x: xt.i8s()?,
        w: call.req(1)?.i8s()?,
        bias,
        scales: call.req(3)?.f32s()?,
        zx: qp(&xt.info).1,
        zy: qp(&out.info).1,
        lo: call.param(p::ACT_LO),
        hi: call.param(p::ACT_HI),
    })
}

/// int8 Conv through a fast path, or `None` if no fast path covers this op.
pub fn conv_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let g = geo(call, out).ok()?;
    let pointwise = g.kh == 1
        && g.kw == 1
        && g.sh == 1
        && g.sw == 1
        && g.pt == 0
        && g.pl == 0
        && g.g == 1
        && g.oh == g.h
        && g.ow == g.w;
    let small = g.kh * g.kw <= 49;
    if !(pointwise || small) {
        return None;
    }
    let q = match operands(call, out) {
        Ok(q) => q,
        Err(e) => return Some(Err(e)),
    };
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if pointwise {
        pointwise_i8(&g, &q, y);
    } else if g.g == 1 && g.c * g.kh * g.kw <= IM2COL_MAX_K && simd_gemm_available() {
        #[cfg(any(
            target_arch = "x86_64",
            all(target_arch = "aarch64", target_feature = "neon")
        ))]
        if g.c * g.kh * g.kw <= 64 {
            im2col_i8::<64>(&g, &q, y);
        } else {
            im2col_i8::<IM2COL_MAX_K>(&g, &q, y);
        }
    } else if g.g == g.c && g.oc == g.c {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() && avx2::depthwise_fits(&g) {
            // SAFETY: AVX2 is present; the geometry fits the padded buffer (checked).
            unsafe { avx2::depthwise(&g, &q, y) };
            return Some(Ok(()));
        }
        depthwise_rows_i8(&g, &q, y);
    } else {
        direct_i8(&g, &q, y);
    }
    Some(Ok(()))
}

/// Y[n, oc, p] = requant(bias[oc] + Σ_ic W[oc, ic] · (X[n, ic, p] − zx)).
/// Computed as Σ W·X − zx·Σ W so the inner loop works on raw int8 values.
fn pointwise_i8(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let (ic, oc, pix) = (g.c, g.oc, g.h * g.w);
    for n in 0..g.n {
        let x = &q.x[n * ic * pix..(n + 1) * ic * pix];
        let y = &mut y[n * oc * pix..(n + 1) * oc * pix];
        if !gemm_simd(x, pix, q, ic, oc, pix, y, pix, 0) {
            pointwise_portable(x, q, ic, oc, pix, y);
        }
    }
}

/// Run `f` in a function compiled with AVX2 when the CPU has it, so the loops the
/// compiler inlines into it vectorize 8 lanes wide. The arithmetic is unchanged (Rust never
/// contracts float operations), so results are identical either way.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::call(f) };
    }
    f()
}

const IM2COL_MAX_K: usize = 2048;
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
const IM2COL_TILE: usize = 48;

/// Whether a SIMD GEMM micro-kernel runs here: AVX2 on x86_64 (detected at run time with
/// `std`), NEON on aarch64 (part of the base ISA: selected at compile time).
fn simd_gemm_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::available()
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        true
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    {
        false
    }
}

/// The int8 GEMM of `avx2::gemm` (same arguments and result) through this CPU's SIMD
/// micro-kernel; `false` (nothing written) where there is none or `ic` is too large.
#[allow(clippy::too_many_arguments, unused_variables)]
fn gemm_simd(
    x: &[i8],
    xs: usize,
    q: &Q<'_>,
    ic: usize,
    oc: usize,
    pix: usize,
    y: &mut [i8],
    ys: usize,
    y0: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() && ic <= avx2::MAX_K {
        // SAFETY: AVX2 is present (checked above); the caller sizes the slices.
        unsafe { avx2::gemm(x, xs, q, ic, oc, pix, y, ys, y0) };
        return true;
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if ic <= neon::MAX_K {
        neon::gemm(x, xs, q, ic, oc, pix, y, ys, y0);
        return true;
    }
    false
}

/// Convs with one group and up to 2048 patch elements: gather the patches of 48
/// output pixels into a stack tile (zero point where the window leaves the image, which
/// contributes nothing once `zx·Σw` is subtracted) and run the GEMM micro-kernel on it.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[inline(never)]
fn im2col_i8<const KMAX: usize>(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let k = g.c * g.kh * g.kw;
    let (oh, ow) = (g.oh, g.ow);
    let pix = oh * ow;
    let plane = g.h * g.w;
    // Sized by the caller's bound on K: a stem conv (K = 27) zeroes 3 KB, not 96 KB.
    let mut tile = [[0i8; IM2COL_TILE]; KMAX];
    let tile = tile.as_flattened_mut();
    for n in 0..g.n {
        let x = &q.x[n * g.c * plane..(n + 1) * g.c * plane];
        let y = &mut y[n * g.oc * pix..(n + 1) * g.oc * pix];
        let mut t0 = 0;
        while t0 < pix {
            let len = IM2COL_TILE.min(pix - t0);
            for c in 0..g.c {
                let xc = &x[c * plane..(c + 1) * plane];
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let row = (c * g.kh + ky) * g.kw + kx;
                        let dst = &mut tile[row * IM2COL_TILE..row * IM2COL_TILE + len];
                        // Walk the tile one output row segment at a time.
                        let (mut oy, mut ox) = (t0 / ow, t0 % ow);
                        let mut j = 0;
                        while j < len {
                            let seg = (ow - ox).min(len - j);
                            let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                            let d = &mut dst[j..j + seg];
                            if iy < 0 || iy >= g.h as isize {
                                d.fill(q.zx as i8);
                            } else {
                                let xrow = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                                // ix = (ox + s)·sw + off: the s inside the row, then a
                                // branch-free copy (contiguous when sw = 1).
                                let off = (kx * g.dw) as isize - g.pl;
                                let sw = g.sw as isize;
                                let ix0 = ox as isize * sw + off;
                                let s_lo = if ix0 >= 0 {
                                    0
                                } else {
                                    ((-ix0 + sw - 1) / sw) as usize
                                };
                                let s_hi = if ix0 >= g.w as isize {
                                    0
                                } else {
                                    (((g.w as isize - 1 - ix0) / sw + 1) as usize).min(seg)
                                };
                                let s_lo = s_lo.min(s_hi);
                                d[..s_lo].fill(q.zx as i8);
                                d[s_hi..].fill(q.zx as i8);
                                if s_hi > s_lo {
                                    let a = (ix0 + s_lo as isize * sw) as usize;
                                    let n = s_hi - s_lo;
                                    let src = &xrow[a..a + (n - 1) * g.sw + 1];
                                    if g.sw == 1 {
                                        d[s_lo..s_hi].copy_from_slice(src);
                                    } else if g.sw == 2 && cfg!(target_arch = "x86_64") {
                                        #[cfg(target_arch = "x86_64")]
                                        // SAFETY: on x86_64 im2col only runs with AVX2.
                                        unsafe {
                                            avx2::copy_stride2(src, &mut d[s_lo..s_hi])
                                        };
                                    } else {
                                        for (v, &xv) in
                                            d[s_lo..s_hi].iter_mut().zip(src.iter().step_by(g.sw))
                                        {
                                            *v = xv;
                                        }
                                    }
                                }
                            }
                            j += seg;
                            ox = 0;
                            oy += 1;
                        }
                    }
                }
            }
            // The caller checked simd_gemm_available() and k <= IM2COL_MAX_K.
            gemm_simd(tile, IM2COL_TILE, q, k, g.oc, len, y, pix, t0);
            t0 += len;
        }
    }
}

fn row_offset(q: &Q<'_>, o: usize, ic: usize) -> i32 {
    let wsum: i32 = q.w[o * ic..(o + 1) * ic].iter().map(|&v| v as i32).sum();
    q.bias
        .map_or(0, |b| b[o])
        .wrapping_sub(q.zx.wrapping_mul(wsum))
}

fn pointwise_portable(x: &[i8], q: &Q<'_>, ic: usize, oc: usize, pix: usize, y: &mut [i8]) {
    const PB: usize = 64;
    let mut acc = [0i32; PB];
    for o in 0..oc {
        let base = row_offset(q, o, ic);
        let wr = &q.w[o * ic..(o + 1) * ic];
        let mut p0 = 0;
        while p0 < pix {
            let len = PB.min(pix - p0);
            acc[..len].iter_mut().for_each(|a| *a = base);
            for (c, &w) in wr.iter().enumerate() {
                let w = w as i32;
                let xr = &x[c * pix + p0..c * pix + p0 + len];
                for (a, &v) in acc[..len].iter_mut().zip(xr) {
                    *a = a.wrapping_add(w * v as i32);
                }
            }
            for (k, a) in acc[..len].iter().enumerate() {
                y[o * pix + p0 + k] = requantize(*a, q.scales[o], q.zy, q.lo, q.hi) as i8;
            }
            p0 += len;
        }
    }
}

/// Depthwise, one output row at a time: for each tap, the run of output columns whose input
/// column is inside the image gets `w · (x − zx)` added; the inner loop is a contiguous
/// (stride 1) or strided multiply-add the compiler vectorizes. Same sums as the reference.
/// Not inlined: its stack buffers are only live while a depthwise conv runs.
#[inline(never)]
fn depthwise_rows_i8(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let same = g.sh == 1
        && g.sw == 1
        && g.dh == 1
        && g.dw == 1
        && g.kh % 2 == 1
        && g.kw % 2 == 1
        && g.pt == (g.kh / 2) as isize
        && g.pl == (g.kw / 2) as isize
        && g.oh == g.h
        && g.ow == g.w
        && g.h * g.w <= PLANE_MAX;
    if same {
        vectorized(
            #[inline(always)]
            || depthwise_plane_body(g, q, y),
        );
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present (checked above).
        unsafe { avx2::depthwise_rows(g, q, y) };
        return;
    }
    depthwise_rows_body(g, q, y);
}

/// Largest plane the whole-plane depthwise path takes (its accumulator lives on the stack:
/// 64 KB on hosts and phones, 4 KB on microcontrollers; larger planes take the row path).
#[cfg(not(target_os = "none"))]
const PLANE_MAX: usize = 16384;
#[cfg(target_os = "none")]
const PLANE_MAX: usize = 1024;

/// Depthwise "same" convs with stride 1: each tap is one contiguous multiply-add over the
/// whole flattened plane (`x[p + (ky−pt)·W + kx−pl]`), nine long runs instead of nine per
/// row. Taps that wrap across a row end only touch the border columns, which are then
/// recomputed exactly with the bounds-checked loop.
#[inline(always)]
fn depthwise_plane_body(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let (h, w) = (g.h, g.w);
    let plane = h * w;
    let ksz = g.kh * g.kw;
    let (left, right) = (g.pl as usize, g.kw - 1 - g.pl as usize);
    let mut acc = [0i32; PLANE_MAX];
    for n in 0..g.n {
        for c in 0..g.c {
            let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
            let wc = &q.w[c * ksz..(c + 1) * ksz];
            let base = q.bias.map_or(0, |b| b[c]);
            let acc = &mut acc[..plane];
            acc.iter_mut().for_each(|a| *a = base);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let wv = wc[ky * g.kw + kx] as i32;
                    let off = (ky as isize - g.pt) * w as isize + kx as isize - g.pl;
                    let lo = (-off).max(0) as usize;
                    let hi = (plane as isize - off).min(plane as isize).max(0) as usize;
                    if lo >= hi {
                        continue;
                    }
                    let src = &xc[(lo as isize + off) as usize..(hi as isize + off) as usize];
                    for (a, &v) in acc[lo..hi].iter_mut().zip(src) {
                        *a = a.wrapping_add(wv * (v as i32 - q.zx));
                    }
                }
            }
            // Border columns: redo exactly (their sums above include wrapped taps).
            for oy in 0..h {
                for ox in (0..left.min(w)).chain(w.saturating_sub(right).max(left.min(w))..w) {
                    let (iy0, ix0) = (oy as isize - g.pt, ox as isize - g.pl);
                    acc[oy * w + ox] = base.wrapping_add(checked_taps(g, xc, wc, iy0, ix0, q.zx));
                }
            }
            let yc = &mut y[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
            requant_row(acc, q.scales[c], q, yc);
        }
    }
}

/// The body of `depthwise_rows_i8`, inlined into an AVX2-enabled copy on x86_64 so the
/// multiply-add loops vectorize 8 lanes wide (same integer arithmetic either way).
#[inline(always)]
fn depthwise_rows_body(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    const CHUNK: usize = 256;
    const PHASE_MAX: usize = 1024;
    // Up to 4 phases of a strided input row (stride > 4 takes the strided loop).
    let mut phases = [0i8; 4 * PHASE_MAX];
    let (h, w, oh, ow) = (g.h as isize, g.w as isize, g.oh, g.ow);
    let ksz = g.kh * g.kw;
    let plane = g.h * g.w;
    let mut acc = [0i32; CHUNK];
    for n in 0..g.n {
        for c in 0..g.c {
            let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
            let wc = &q.w[c * ksz..(c + 1) * ksz];
            let base = q.bias.map_or(0, |b| b[c]);
            let yc = &mut y[(n * g.c + c) * oh * ow..(n * g.c + c + 1) * oh * ow];
            for oy in 0..oh {
                let mut x0 = 0;
                while x0 < ow {
                    let len = CHUNK.min(ow - x0);
                    let acc = &mut acc[..len];
                    acc.iter_mut().for_each(|a| *a = base);
                    for ky in 0..g.kh {
                        let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                        if iy < 0 || iy >= h {
                            continue;
                        }
                        let xrow = &xc[(iy * w) as usize..((iy + 1) * w) as usize];
                        // Strided rows are split into `sw` contiguous phases once per row,
                        // so every tap below reads contiguously: x[ix] = phase[ix % sw][ix / sw].
                        let split = g.sw > 1 && g.sw <= 4 && g.w <= PHASE_MAX;
                        if split {
                            for (i, &v) in xrow.iter().enumerate() {
                                phases[(i % g.sw) * PHASE_MAX + i / g.sw] = v;
                            }
                        }
                        for kx in 0..g.kw {
                            let wv = wc[ky * g.kw + kx] as i32;
                            // ix = ox * sw + off for output column ox.
                            let off = (kx * g.dw) as isize - g.pl;
                            let sw = g.sw as isize;
                            // Output columns (within this chunk) whose ix is in [0, w).
                            let first = if off >= 0 { 0 } else { ((-off) + sw - 1) / sw } as usize;
                            let last_excl = if w - 1 - off < 0 {
                                0
                            } else {
                                ((w - 1 - off) / sw + 1) as usize
                            };
                            let lo = first.max(x0);
                            let hi = last_excl.min(x0 + len);
                            if lo >= hi {
                                continue;
                            }
                            let ix0 = (lo as isize * sw + off) as usize;
                            let dst = &mut acc[lo - x0..hi - x0];
                            if g.sw == 1 {
                                let src = &xrow[ix0..ix0 + dst.len()];
                                for (a, &v) in dst.iter_mut().zip(src) {
                                    *a = a.wrapping_add(wv * (v as i32 - q.zx));
                                }
                            } else if split {
                                let (ph, at) = (ix0 % g.sw, ix0 / g.sw);
                                let src =
                                    &phases[ph * PHASE_MAX + at..ph * PHASE_MAX + at + dst.len()];
                                for (a, &v) in dst.iter_mut().zip(src) {
                                    *a = a.wrapping_add(wv * (v as i32 - q.zx));
                                }
                            } else {
                                let n = dst.len();
                                let src = &xrow[ix0..ix0 + (n - 1) * g.sw + 1];
                                for (a, &v) in dst.iter_mut().zip(src.iter().step_by(g.sw)) {
                                    *a = a.wrapping_add(wv * (v as i32 - q.zx));
                                }
                            }
                        }
                    }
                    let row = &mut yc[oy * ow + x0..oy * ow + x0 + len];
                    requant_row(acc, q.scales[c], q, row);
                    x0 += len;
                }
            }
        }
    }
}

/// `requantize` over a run of accumulators (8 at a time with AVX2: the same conversions,
/// multiply, clamp and round-half-even, so the bytes are identical).
#[inline(always)]
fn requant_row(acc: &[i32], scale: f32, q: &Q<'_>, out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    let done = if avx2::available() {
        // SAFETY: AVX2 is present (checked above); the call reads acc and writes out only
        // within their common length.
        unsafe { avx2::requant8(acc, scale, q, out) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (o, a) in out[done..].iter_mut().zip(&acc[done..]) {
        *o = requantize(*a, scale, q.zy, q.lo, q.hi) as i8;
    }
}

/// Σ w·(x − zx) over the taps of one filter whose window starts at input (iy0, ix0) in
/// one channel plane, skipping taps outside the image (the border case of every path).
#[inline(always)]
fn checked_taps(g: &Geo, xc: &[i8], wc: &[i8], iy0: isize, ix0: isize, zx: i32) -> i32 {
    let (h, w) = (g.h as isize, g.w as isize);
    let mut a = 0i32;
    for ky in 0..g.kh {
        let iy = iy0 + (ky * g.dh) as isize;
        if iy < 0 || iy >= h {
            continue;
        }
        for kx in 0..g.kw {
            let ix = ix0 + (kx * g.dw) as isize;
            if ix >= 0 && ix < w {
                let v = xc[(iy * w + ix) as usize] as i32 - zx;
                a = a.wrapping_add(v * wc[ky * g.kw + kx] as i32);
            }
        }
    }
    a
}

/// Any grouped conv (depthwise included): output pixels whose whole window lies inside the
/// input run without bounds checks (the zero point folded into a per-channel constant);
/// border pixels go through the bounds-checked tap loop.
fn direct_i8(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let (h, w, oh, ow) = (g.h as isize, g.w as isize, g.oh, g.ow);
    let ksz = g.kh * g.kw;
    let (cg, ocg) = (g.c / g.g, g.oc / g.g);
    let plane = g.h * g.w;
    // Output rows/cols whose whole window is inside the input.
    let inside = |o: usize, s: usize, pad: isize, k: usize, d: usize, len: isize| {
        let start = (o * s) as isize - pad;
        start >= 0 && start + (((k - 1) * d) as isize) < len
    };
    for n in 0..g.n {
        for oc in 0..g.oc {
            let grp = oc / ocg;
            let xg = &q.x[(n * g.c + grp * cg) * plane..(n * g.c + (grp + 1) * cg) * plane];
            let wo = &q.w[oc * cg * ksz..(oc + 1) * cg * ksz];
            let base = q.bias.map_or(0, |b| b[oc]);
            let wsum: i32 = wo.iter().map(|&v| v as i32).sum();
            let inner_base = base.wrapping_sub(q.zx.wrapping_mul(wsum));
            let yc = &mut y[(n * g.oc + oc) * oh * ow..(n * g.oc + oc + 1) * oh * ow];
            for oy in 0..oh {
                let row_in = inside(oy, g.sh, g.pt, g.kh, g.dh, h);
                let iy0 = (oy * g.sh) as isize - g.pt;
                for ox in 0..ow {
                    let ix0 = (ox * g.sw) as isize - g.pl;
                    let acc = if row_in && inside(ox, g.sw, g.pl, g.kw, g.dw, w) {
                        let mut a = inner_base;
                        for ic in 0..cg {
                            let xc = &xg[ic * plane..(ic + 1) * plane];
                            let wc = &wo[ic * ksz..(ic + 1) * ksz];
                            for ky in 0..g.kh {
                                let row = ((iy0 + (ky * g.dh) as isize) * w + ix0) as usize;
                                let xr = &xc[row..row + (g.kw - 1) * g.dw + 1];
                                let wr = &wc[ky * g.kw..(ky + 1) * g.kw];
                                for (kx, &wv) in wr.iter().enumerate() {
                                    a = a.wrapping_add(xr[kx * g.dw] as i32 * wv as i32);
                                }
                            }
                        }
                        a
                    } else {
                        (0..cg).fold(base, |a, ic| {
                            let xc = &xg[ic * plane..(ic + 1) * plane];
                            let wc = &wo[ic * ksz..(ic + 1) * ksz];
                            a.wrapping_add(checked_taps(g, xc, wc, iy0, ix0, q.zx))
                        })
                    };
                    yc[oy * ow + ox] = requantize(acc, q.scales[oc], q.zy, q.lo, q.hi) as i8;
                }
            }
        }
    }
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon {
    use core::arch::aarch64::*;

    use super::{row_offset, Q};
    use cairn_core::quant::requantize;

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
                        q.w[(o + k) * ic + c] as i16
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
                        *d = requantize(a.wrapping_add(offs[k]), q.scales[o + k], q.zy, q.lo, q.hi)
                            as i8;
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
            let mut pad = [0i8; PT];
            for c in 0..ic {
                let row = &x[c * xs + p0..c * xs + p0 + pt];
                let xv = if pt == PT {
                    vld1q_s8(row.as_ptr())
                } else {
                    pad[..pt].copy_from_slice(row);
                    vld1q_s8(pad.as_ptr())
                };
                let lo = vmovl_s8(vget_low_s8(xv));
                let hi = vmovl_high_s8(xv);
                let w = vld1_s16(wpk[c * MR..c * MR + MR].as_ptr());
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
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    use super::{row_offset, Q};

    #[cfg(feature = "std")]
    pub fn available() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    #[cfg(not(feature = "std"))]
    pub fn available() -> bool {
        cfg!(target_feature = "avx2")
    }

    /// Pixels per tile of the GEMM micro-kernel (three vectors of eight).
    const PT: usize = 24;
    /// Output channels per register block.
    const MR: usize = 4;
    /// Largest K (input channels, or patch elements for im2col) the packed tile holds.
    pub const MAX_K: usize = 2048;
    const MAX_PAIRS: usize = MAX_K / 2;
    const OFFS_MAX: usize = 1024;

    /// The int8 GEMM `Y[o, p] = requant(Σ_c W[o, c] · (X[c, p] − zx) + bias[o])` over
    /// strided rows (input row `c` at `x[c * xs]`, output row `o` at `y[o * ys + y0]`,
    /// `pix` columns), for `ic <= MAX_K`.
    ///
    /// Each tile of 24 pixels is packed once as int16 pairs of consecutive channels
    /// (`[x[c][p], x[c+1][p]]`, 96 bytes per pair of channels); then a register block of
    /// 4 output channels × 24 pixels (12 accumulators) runs down K with `vpmaddwd`
    /// (16 MACs, exact: int8 widened to int16, no saturation), the weight pair of each
    /// channel read in place from its int8 row and sign-extended by `vpmovsxbw`. The sum runs
    /// on raw int8 values and `zx·Σw` is subtracted once (`row_offset`). Requantization in
    /// vector form is the same arithmetic as `cairn_core::quant::requantize`: convert,
    /// multiply, clamp, convert with the default rounding (nearest even).
    ///
    /// # Safety
    /// The CPU must support AVX2; the slices hold every row the strides address; the weight
    /// matrix is `oc × ic` int8.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
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
        debug_assert!(ic <= MAX_K && q.w.len() >= oc * ic);
        let pairs = ic.div_ceil(2);
        let full = ic / 2;
        // Not zeroed (96 KB per call would cost more than a small conv): every element
        // read below was written by the packing loop of the same tile.
        let mut xp_buf = core::mem::MaybeUninit::<[i32; MAX_PAIRS * PT]>::uninit();
        let xpw = xp_buf.as_mut_ptr() as *mut i32;
        let mut offs = [0i32; OFFS_MAX];
        let cached = oc <= OFFS_MAX;
        if cached {
            for (o, off) in offs.iter_mut().enumerate().take(oc) {
                *off = row_offset(q, o, ic);
            }
        }
        let mut p0 = 0;
        while p0 < pix {
            let pt = PT.min(pix - p0);
            // Pack the tile: pair row cp holds channels 2cp and 2cp+1 (zero past ic or pix).
            for cp in 0..pairs {
                for j in 0..3 {
                    let n = pt.saturating_sub(8 * j).min(8);
                    let (a, b) = if n == 0 {
                        (_mm_setzero_si128(), _mm_setzero_si128())
                    } else {
                        let a = load8(x, 2 * cp * xs + p0 + 8 * j, n);
                        let b = if 2 * cp + 1 < ic {
                            load8(x, (2 * cp + 1) * xs + p0 + 8 * j, n)
                        } else {
                            _mm_setzero_si128()
                        };
                        (a, b)
                    };
                    let (a16, b16) = (_mm_cvtepi8_epi16(a), _mm_cvtepi8_epi16(b));
                    let v = _mm256_set_m128i(
                        _mm_unpackhi_epi16(a16, b16),
                        _mm_unpacklo_epi16(a16, b16),
                    );
                    // SAFETY: cp < pairs <= MAX_PAIRS and 8j + 8 <= PT: inside the buffer.
                    unsafe { _mm256_storeu_si256(xpw.add(cp * PT + 8 * j) as *mut __m256i, v) };
                }
            }
            let mut o = 0;
            while o < oc {
                let ob = MR.min(oc - o);
                // Rows past oc repeat the last row (computed, never stored).
                let rows: [&[i8]; MR] = core::array::from_fn(|k| {
                    let r = (o + k).min(oc - 1);
                    &q.w[r * ic..(r + 1) * ic]
                });
                let mut acc = [[_mm256_setzero_si256(); 3]; MR];
                let xpp = xpw as *const i32;
                for cp in 0..full {
                    // SAFETY: cp < pairs, so the 24 i32 at cp * PT are inside xp.
                    let xv = unsafe {
                        let p = xpp.add(cp * PT) as *const __m256i;
                        [
                            _mm256_loadu_si256(p),
                            _mm256_loadu_si256(p.add(1)),
                            _mm256_loadu_si256(p.add(2)),
                        ]
                    };
                    for k in 0..MR {
                        // SAFETY: 2cp + 1 < ic: both bytes are inside row k.
                        let raw = unsafe {
                            (rows[k].as_ptr().add(2 * cp) as *const i16).read_unaligned()
                        };
                        let wv = _mm256_cvtepi8_epi16(_mm_set1_epi16(raw));
                        for j in 0..3 {
                            acc[k][j] = _mm256_add_epi32(acc[k][j], _mm256_madd_epi16(xv[j], wv));
                        }
                    }
                }
                if pairs > full {
                    // Odd ic: the last channel alone (its partner row in the tile is zero).
                    let cp = full;
                    let xv: [__m256i; 3] = core::array::from_fn(|j| {
                        // SAFETY: row cp < pairs of this tile was written above.
                        unsafe { _mm256_loadu_si256(xpp.add(cp * PT + 8 * j) as *const __m256i) }
                    });
                    for k in 0..MR {
                        let wv = _mm256_set1_epi32(rows[k][2 * cp] as i32 & 0xffff);
                        for j in 0..3 {
                            acc[k][j] = _mm256_add_epi32(acc[k][j], _mm256_madd_epi16(xv[j], wv));
                        }
                    }
                }
                for (k, acc) in acc.iter().enumerate().take(ob) {
                    let oo = o + k;
                    let off = if cached {
                        offs[oo]
                    } else {
                        row_offset(q, oo, ic)
                    };
                    let (voff, vs) = (_mm256_set1_epi32(off), _mm256_set1_ps(q.scales[oo]));
                    let vlo = _mm256_set1_ps(q.lo as f32 - q.zy as f32);
                    let vhi = _mm256_set1_ps(q.hi as f32 - q.zy as f32);
                    for (j, a) in acc.iter().enumerate() {
                        let n = pt.saturating_sub(8 * j).min(8);
                        if n == 0 {
                            break;
                        }
                        let v = _mm256_add_epi32(*a, voff);
                        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), vs);
                        let f = _mm256_min_ps(_mm256_max_ps(f, vlo), vhi);
                        let r = _mm256_add_epi32(_mm256_cvtps_epi32(f), _mm256_set1_epi32(q.zy));
                        // Eight int32 in [-128, 127] -> eight int8 (saturating packs are exact).
                        let r16 = _mm_packs_epi32(
                            _mm256_castsi256_si128(r),
                            _mm256_extracti128_si256(r, 1),
                        );
                        let at = oo * ys + y0 + p0 + 8 * j;
                        crate::util::put8(
                            _mm_cvtsi128_si64(_mm_packs_epi16(r16, r16)) as u64,
                            &mut y[at..at + n],
                        );
                    }
                }
                o += ob;
            }
            p0 += pt;
        }
    }

    /// Requantize the leading multiple of 8 of `acc` into `out`; returns how many were done.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn requant8(acc: &[i32], scale: f32, q: &Q<'_>, out: &mut [i8]) -> usize {
        let n = acc.len().min(out.len()) / 8 * 8;
        let (vs, vlo, vhi, vz) = (
            _mm256_set1_ps(scale),
            _mm256_set1_ps(q.lo as f32 - q.zy as f32),
            _mm256_set1_ps(q.hi as f32 - q.zy as f32),
            _mm256_set1_epi32(q.zy),
        );
        for (a8, o8) in acc[..n].chunks_exact(8).zip(out[..n].chunks_exact_mut(8)) {
            // SAFETY: a8 is exactly 8 i32 (32 bytes); the load is unaligned-safe.
            let v = unsafe { _mm256_loadu_si256(a8.as_ptr() as *const __m256i) };
            let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), vs);
            let f = _mm256_min_ps(_mm256_max_ps(f, vlo), vhi);
            let r = _mm256_add_epi32(_mm256_cvtps_epi32(f), vz);
            let r16 = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
            crate::util::put8(_mm_cvtsi128_si64(_mm_packs_epi16(r16, r16)) as u64, o8);
        }
        n
    }

    /// int16 pairs in the padded, phase-split plane of the depthwise kernel.
    const DW_BUF: usize = 16384;
    /// Pairs a band of the depthwise kernel aims to stay within (16 KB).
    const DW_L1: usize = 4096;
    /// Output columns per register block of the depthwise kernel (four vectors of eight).
    const DW_OX: usize = 32;
    /// Columns of slack after each phase row of the byte staging row.
    const DW_SLACK: usize = 16;

    /// (rows, columns per phase) of the depthwise kernel's padded plane, if it fits.
    /// (output rows per band, columns per phase) of the depthwise kernel's padded plane,
    /// if one output row's input rows fit the buffer. Bands keep the staged rows within
    /// 16 KB (L1) where they can: a whole 112×112 plane of pairs would be 60 KB.
    fn dw_dims(g: &super::Geo) -> Option<(usize, usize)> {
        if g.sw > 4 || g.kh * g.kw > 49 || g.oh == 0 || g.ow == 0 {
            return None;
        }
        let rows_for = |b: usize| (b - 1) * g.sh + (g.kh - 1) * g.dh + 1;
        // Columns a block reads: up to DW_OX past its start, plus the widest tap offset.
        let jw = g.ow.div_ceil(DW_OX) * DW_OX + (g.kw - 1) * g.dw / g.sw + 1;
        if rows_for(1) * g.sw * jw > DW_BUF {
            return None;
        }
        let mut band = 1;
        while band < g.oh && rows_for(band + 1) * g.sw * jw <= DW_L1 {
            band += 1;
        }
        Some((band, jw))
    }

    pub fn depthwise_fits(g: &super::Geo) -> bool {
        dw_dims(g).is_some()
    }

    /// Depthwise conv with the accumulators in registers and two taps per `vpmaddwd`.
    ///
    /// Each channel's plane is laid out once, padded with the zero point (so every output
    /// reads every tap, with no bounds) and, for horizontal stride `sw` > 1, split into `sw`
    /// column phases (column `ox·sw + kx·dw` is phase `kx·dw mod sw`, index
    /// `ox + kx·dw / sw`, contiguous in `ox`). It is stored as int16 pairs of neighbours
    /// `(x[j], x[j+1])`, so two taps of one row and phase whose indices differ by one are
    /// one `vpmaddwd` against the weight pair `(w_a, w_b)`; a tap without a partner is paired
    /// with weight 0. Each block of 32 output columns of a row sums its taps in four int32
    /// vectors: `Σ w·x` on raw values, `bias − zx·Σw` added once (the reference's sums
    /// modulo 2^32, where its wrapping arithmetic lives).
    ///
    /// # Safety
    /// The CPU must support AVX2; `depthwise_fits(g)`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn depthwise(g: &super::Geo, q: &Q<'_>, y: &mut [i8]) {
        let Some((band, jw)) = dw_dims(g) else {
            return;
        };
        let (h, w, oh, ow, sw) = (g.h, g.w, g.oh, g.ow, g.sw);
        let ksz = g.kh * g.kw;
        let plane = h * w;
        // Pairs plane: row r, phase ph at (r·sw + ph)·jw, all jw entries of every row and
        // phase written for each channel before any is read. Not zeroed (64 KB per call
        // would cost more than a small conv); only raw-pointer accesses touch it.
        let mut pairs_buf = core::mem::MaybeUninit::<[i32; DW_BUF]>::uninit();
        let pw = pairs_buf.as_mut_ptr() as *mut i32;
        let sj = jw + DW_SLACK;
        // sw·(jw + slack) <= DW_BUF + 4·DW_SLACK since rows·sw·jw <= DW_BUF.
        let mut stage = [0i8; DW_BUF + 4 * DW_SLACK];
        let zx = q.zx as i8;
        let (vlo, vhi, vzy) = (
            _mm256_set1_ps(q.lo as f32 - q.zy as f32),
            _mm256_set1_ps(q.hi as f32 - q.zy as f32),
            _mm256_set1_epi32(q.zy),
        );
        // Pair-taps (ky, phase, index offset, packed weight pair), from the tap layout
        // alone; weights filled per channel. Taps of a phase have increasing offsets.
        let mut taps = [(0usize, 0usize, 0usize, 0usize, usize::MAX); 49];
        let mut nt = 0;
        for ky in 0..g.kh {
            for ph in 0..sw {
                let mut kx = 0;
                while kx < g.kw {
                    let t = kx * g.dw;
                    if t % sw != ph {
                        kx += 1;
                        continue;
                    }
                    // Partner: the next tap of this phase, if its index is one further.
                    let mut kb = usize::MAX;
                    let mut k2 = kx + 1;
                    while k2 < g.kw {
                        let t2 = k2 * g.dw;
                        if t2 % sw == ph {
                            if t2 / sw == t / sw + 1 {
                                kb = k2;
                            }
                            break;
                        }
                        k2 += 1;
                    }
                    taps[nt] = (ky, ph, t / sw, kx, kb);
                    nt += 1;
                    kx = if kb == usize::MAX { kx + 1 } else { kb + 1 };
                }
            }
        }
        let mut wpair = [0i32; 49];
        for n in 0..g.n {
            for c in 0..g.c {
                let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
                let wc = &q.w[c * ksz..(c + 1) * ksz];
                for (wp, &(ky, _, _, ka, kb)) in wpair.iter_mut().zip(&taps[..nt]) {
                    let wa = wc[ky * g.kw + ka] as i16 as u16 as u32;
                    let wb = if kb == usize::MAX {
                        0
                    } else {
                        wc[ky * g.kw + kb] as i16 as u16 as u32
                    };
                    *wp = (wa | (wb << 16)) as i32;
                }
                let wsum: i32 = wc.iter().map(|&v| v as i32).sum();
                let base = q
                    .bias
                    .map_or(0, |b| b[c])
                    .wrapping_sub(q.zx.wrapping_mul(wsum));
                let vs = _mm256_set1_ps(q.scales[c]);
                let yc = &mut y[(n * g.c + c) * oh * ow..(n * g.c + c + 1) * oh * ow];
                let pp = pw as *const i32;
                let mut oy0 = 0;
                while oy0 < oh {
                    let ob = band.min(oh - oy0);
                    let rows = (ob - 1) * g.sh + (g.kh - 1) * g.dh + 1;
                    // Padded row r of the band is input row oy0·sh + r − pt, column col is
                    // input column col − pl (zero point outside), at phase col % sw, index col / sw.
                    for r in 0..rows {
                        let iy = (oy0 * g.sh + r) as isize - g.pt;
                        for ph in 0..sw {
                            let dst = &mut stage[ph * sj..(ph + 1) * sj];
                            if iy < 0 || iy >= h as isize {
                                dst.fill(zx);
                            } else {
                                let xr = &xc[iy as usize * w..(iy as usize + 1) * w];
                                stage_row(xr, g.pl - ph as isize, sw, zx, dst);
                            }
                            // Widen to pairs (x[j], x[j+1]), 16 at a time.
                            let base = (r * sw + ph) * jw;
                            let sp = dst.as_ptr();
                            let mut j = 0;
                            while j < jw {
                                // SAFETY: j + 17 <= jw + 16 = sj: inside this phase's staging row.
                                let (a, b) = unsafe {
                                    (
                                        _mm_loadu_si128(sp.add(j) as *const __m128i),
                                        _mm_loadu_si128(sp.add(j + 1) as *const __m128i),
                                    )
                                };
                                let lo = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b));
                                let hi = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b));
                                let n = (jw - j).min(16);
                                if n == 16 && base + j + 16 <= DW_BUF {
                                    // SAFETY: 16 i32 at base + j are inside the buffer (checked).
                                    unsafe {
                                        let p = pw.add(base + j) as *mut __m256i;
                                        _mm256_storeu_si256(p, lo);
                                        _mm256_storeu_si256(p.add(1), hi);
                                    }
                                } else {
                                    let mut tmp = [0i32; 16];
                                    // SAFETY: tmp is 16 i32; base + j + n <= (r·sw + ph + 1)·jw
                                    // <= rows·sw·jw <= DW_BUF.
                                    unsafe {
                                        let p = tmp.as_mut_ptr() as *mut __m256i;
                                        _mm256_storeu_si256(p, lo);
                                        _mm256_storeu_si256(p.add(1), hi);
                                        core::ptr::copy_nonoverlapping(
                                            tmp.as_ptr(),
                                            pw.add(base + j),
                                            n,
                                        );
                                    }
                                }
                                j += 16;
                            }
                        }
                    }
                    for oy in oy0..oy0 + ob {
                        let mut ox0 = 0;
                        while ox0 < ow {
                            let mut acc = [_mm256_set1_epi32(base); 4];
                            for (&(ky, ph, off, _, _), &wp) in taps[..nt].iter().zip(&wpair) {
                                let r = (oy - oy0) * g.sh + ky * g.dh;
                                let at = (r * sw + ph) * jw + ox0 + off;
                                let wv = _mm256_set1_epi32(wp);
                                for (v, a) in acc.iter_mut().enumerate() {
                                    // SAFETY: r < rows and ox0 + off + 32 <= jw (dw_dims), so
                                    // the 8 pairs are inside this phase row of `pairs`.
                                    let xv = unsafe {
                                        _mm256_loadu_si256(pp.add(at + 8 * v) as *const __m256i)
                                    };
                                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wv));
                                }
                            }
                            for (v, a) in acc.iter().enumerate() {
                                let o = ox0 + 8 * v;
                                if o >= ow {
                                    break;
                                }
                                let cnt = 8.min(ow - o);
                                let f = _mm256_mul_ps(_mm256_cvtepi32_ps(*a), vs);
                                let f = _mm256_min_ps(_mm256_max_ps(f, vlo), vhi);
                                let r = _mm256_add_epi32(_mm256_cvtps_epi32(f), vzy);
                                let r16 = _mm_packs_epi32(
                                    _mm256_castsi256_si128(r),
                                    _mm256_extracti128_si256(r, 1),
                                );
                                crate::util::put8(
                                    _mm_cvtsi128_si64(_mm_packs_epi16(r16, r16)) as u64,
                                    &mut yc[oy * ow + o..oy * ow + o + cnt],
                                );
                            }
                            ox0 += DW_OX;
                        }
                    }
                    oy0 += ob;
                }
            }
        }
    }

    /// One phase of a padded input row: `dst[j] = xr[j·sw − first]` where that column is
    /// inside the row, the zero point elsewhere (the whole of `dst`, slack included).
    #[inline(always)]
    unsafe fn stage_row(xr: &[i8], first: isize, sw: usize, zx: i8, dst: &mut [i8]) {
        let w = xr.len() as isize;
        let s = sw as isize;
        let lo = if first > 0 {
            ((first + s - 1) / s) as usize
        } else {
            0
        };
        let hi = if w - 1 + first < 0 {
            0
        } else {
            (((w - 1 + first) / s + 1) as usize).min(dst.len())
        };
        let lo = lo.min(hi);
        dst[..lo].fill(zx);
        dst[hi..].fill(zx);
        if hi > lo {
            let a = (lo as isize * s - first) as usize;
            let src = &xr[a..a + (hi - lo - 1) * sw + 1];
            match sw {
                1 => dst[lo..hi].copy_from_slice(src),
                // SAFETY: the caller runs with AVX2.
                2 => unsafe { copy_stride2(src, &mut dst[lo..hi]) },
                _ => {
                    for (d, v) in dst[lo..hi].iter_mut().zip(src.iter().step_by(sw)) {
                        *d = *v;
                    }
                }
            }
        }
    }

    /// `dst[i] = src[2i]` (src holds at least 2·len − 1 bytes): 8 at a time with `pshufb`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn copy_stride2(src: &[i8], dst: &mut [i8]) {
        let evens = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
        let mut i = 0;
        while i + 8 <= dst.len() && 2 * i + 16 <= src.len() {
            // SAFETY: 16 bytes from 2i are inside src (checked above); unaligned-safe.
            let v = unsafe { _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i) };
            crate::util::put8(
                _mm_cvtsi128_si64(_mm_shuffle_epi8(v, evens)) as u64,
                &mut dst[i..i + 8],
            );
            i += 8;
        }
        for (d, s) in dst[i..].iter_mut().zip(src[2 * i..].iter().step_by(2)) {
            *d = *s;
        }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn call<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// `depthwise_rows_body` compiled with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn depthwise_rows(g: &super::Geo, q: &Q<'_>, y: &mut [i8]) {
        super::depthwise_rows_body(g, q, y)
    }

    /// Up to 8 int8 values starting at `at` (missing lanes zero).
    #[inline(always)]
    unsafe fn load8(x: &[i8], at: usize, n: usize) -> __m128i {
        if n == 8 {
            let s = &x[at..at + 8];
            // SAFETY: `s` is exactly 8 bytes long; the read is unaligned-safe.
            let v = unsafe { core::ptr::read_unaligned(s.as_ptr() as *const i64) };
            _mm_cvtsi64_si128(v)
        } else {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(&x[at..at + n]) {
                *d = *s as u8;
            }
            _mm_cvtsi64_si128(i64::from_le_bytes(b))
        }
    }
}

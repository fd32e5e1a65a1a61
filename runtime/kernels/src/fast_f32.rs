//! Faster f32 Conv and FullyConnected for models that stay f32 (converted without
//! calibration), on x86_64 and aarch64 hosts only (microcontrollers keep the reference):
//! - one-group convs as a GEMM `Y[o, p] = clamp(bias[o] + Σ_k W[o, k] · X[k, p])`:
//!   pointwise convs read the input planes in place, every other one-group conv gathers the
//!   patches of a few output pixels into a stack tile (im2col) first; pointwise convs on a
//!   1×1 image (squeeze-excitation blocks) take the FullyConnected kernel, a batch of
//!   them (four or more) one multi-row FullyConnected; a batch of maps smaller than a tile
//!   (windows folded into the batch) one GEMM over every image's pixels (`fold.rs`);
//! - depthwise convs one output row at a time (`depthwise.rs`);
//! - FullyConnected as dot products of four weight rows at a time.
//!
//! The GEMM and dot micro-kernels are AVX2 + FMA on x86_64 (detected at run time with
//! `std`, `avx2.rs`: 6 output channels × 16 pixels in 12 accumulators; the GEMM on AVX-512F
//! where the CPU has it, `avx512.rs`: 12 × 32 in 24, the same bits, on weights packed once
//! per model into the block's panels where a `prepack` cache keeps them), portable loops the
//! compiler vectorizes elsewhere (run through `crate::fast::vectorized`). Accuracy contract:
//! the results differ from the reference only by summation order and fused multiply-adds
//! (tested in `runtime/kernels/tests/exact_f32.rs`, with the tolerance stated there); the
//! depthwise path performs the reference's operations one for one.
//!
//! Scratch memory is fixed-size stack tiles; each entry returns `None` (the caller runs the
//! reference) when the op is not its case or a shape exceeds the tiles.
//!
//! Beside these, on the strided GEMM of `kernel.rs` (the same 6 × 16 AVX2+FMA block):
//! one-group convs with large patches (`bigk.rs`), ConvTranspose (`deconv.rs`), MatMul and
//! multi-row FullyConnected (`matmul.rs`); convs with ≤ 8 output channels over padded,
//! phase-split input rows on AVX2 (`narrow_avx2.rs`), ≤ 4 row by row elsewhere
//! (`direct.rs`, bit-exact); vector Unary, Binary, Softmax, LayerNorm (`unary.rs`,
//! `binary.rs`, `softmax.rs`, `layer_norm.rs`), MaxPool / mean pooling (`pool.rs`) and the
//! recurrent products and gates of `Recurrent` (`recurrent.rs`), routed by `dispatch.rs`.

use cairn_core::op::conv as p;
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::conv::{geo, Geo};
use crate::util::f32_clamp;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod bigk;
mod binary;
mod deconv;
mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_avx2;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod depthwise_cl;
#[cfg(feature = "std")]
mod dft;
mod direct;
pub(crate) mod dispatch;
mod fold;
mod kernel;
mod layer_norm;
mod matmul;
#[cfg(target_arch = "x86_64")]
mod narrow_avx2;
mod pool;
mod recurrent;
mod softmax;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod taps;
#[cfg(feature = "std")]
mod topk;
mod unary;

/// Pixels per micro-tile (two AVX vectors, four NEON vectors).
const PT: usize = 16;
/// Output channels per register block of the portable micro-kernel.
const MR_PORTABLE: usize = 4;
/// Pixels one weight block is reused across before the next block of output channels.
const CHUNK: usize = 64;
/// Floats in the large im2col tile (64 KB): patch sizes up to `TILE_BIG / PT` = 1024.
const TILE_BIG: usize = 16384;
/// Floats in the small im2col tile (16 KB), for stem-sized patches.
const TILE_SMALL: usize = 4096;
/// Most pixels an im2col tile holds (the weight rows stay in L1 across them).
const TILE_PIX_MAX: usize = 256;

/// Output channels a split part starts at a multiple of (both micro-kernels' row blocks).
const OC_SPLIT: usize = 12;

/// One GEMM's weights and epilogue: `oc × k` row-major weights, optional bias, clamp.
#[derive(Clone, Copy)]
pub(crate) struct Gemm<'a> {
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    lo: f32,
    hi: f32,
    k: usize,
    oc: usize,
    /// The same weights in the AVX-512 block's panels (`avx512::pack_panels`), where the
    /// `prepack` cache keeps them; that kernel reads these instead of `w`.
    panels: Option<&'a [f32]>,
}

impl<'a> Gemm<'a> {
    /// Output channels `o0..o0 + oc` of this GEMM.
    fn rows(&self, o0: usize, oc: usize) -> Gemm<'a> {
        Gemm {
            w: &self.w[o0 * self.k..(o0 + oc) * self.k],
            bias: self.bias.map(|b| &b[o0..o0 + oc]),
            // Panels start at every multiple of 12 (a split part's first row).
            panels: self.panels.map(|p| {
                debug_assert!(o0.is_multiple_of(OC_SPLIT));
                &p[o0 * self.k..(o0 + oc) * self.k]
            }),
            oc,
            ..*self
        }
    }
}

/// f32 Conv through a fast path, or `None` if none covers this op.
pub fn conv_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let g = geo(call, out).ok()?;
    let x = call.req(0).ok()?.f32s().ok()?;
    let w = call.req(1).ok()?.f32s().ok()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.f32s().ok()?),
        None => None,
    };
    let (lo, hi) = f32_clamp(call.param(p::ACT_LO), call.param(p::ACT_HI));
    let cg = g.c.checked_div(g.g)?;
    let k = cg * g.kh * g.kw;
    let (plane, pix) = (g.h * g.w, g.oh * g.ow);
    let fits = k > 0
        && x.len() >= g.n * g.c * plane
        && w.len() >= g.oc * k
        && bias.is_none_or(|b| b.len() >= g.oc)
        && out.data.len() >= 4 * g.n * g.oc * pix;
    if !fits {
        return None;
    }
    let gm = Gemm {
        w,
        bias,
        lo,
        hi,
        k,
        oc: g.oc,
        panels: None,
    };
    let pointwise = g.kh == 1
        && g.kw == 1
        && g.sh == 1
        && g.sw == 1
        && g.pt == 0
        && g.pl == 0
        && g.g == 1
        && g.oh == g.h
        && g.ow == g.w;
    // An STFT written as a conv (weights a windowed DFT basis): FFTs.
    #[cfg(feature = "std")]
    if dft::fits(&g, gm.w) {
        match out.f32s_mut() {
            Ok(y) => {
                if dft::conv(&g, &gm, x, y) {
                    return Some(Ok(()));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
    let depthwise = g.g == g.c && g.oc == g.c && g.g > 1;
    let covered =
        pointwise || (g.g == 1 && k <= TILE_BIG / PT) || (depthwise && depthwise::fits(&g));
    // A window as large as the unpadded input (a head written as a conv, a pointwise conv
    // on 1×1 maps such as a squeeze-excitation block): each image's whole input is its
    // patch, in the weights' [c][kh][kw] order, so the conv is a FullyConnected over the
    // batch (one image: a dot product per output channel, instead of a GEMM block with one
    // pixel of its 16 or 32).
    let whole = g.g == 1
        && (g.oh, g.ow) == (1, 1)
        && (g.kh, g.kw) == (g.h, g.w)
        && (g.kh == 1 || g.dh == 1)
        && (g.kw == 1 || g.dw == 1)
        && g.pt == 0
        && g.pl == 0;
    if whole {
        return Some(out.f32s_mut().map(|y| {
            if g.n >= matmul::FC_MIN_ROWS {
                matmul::fc(&gm, x, g.n, y);
            } else {
                for (xn, yn) in x.chunks_exact(k).zip(y.chunks_exact_mut(g.oc)) {
                    dot_rows(&gm, xn, yn);
                }
            }
            dispatch::taken();
        }));
    }
    #[cfg(target_arch = "x86_64")]
    if !pointwise && narrow_avx2::fits(&g) && avx2::available() {
        return Some(out.f32s_mut().map(|y| {
            // SAFETY: AVX2 and FMA are present (checked above), `fits` holds and the
            // slice lengths were checked above.
            unsafe { narrow_avx2::conv(&g, &gm, x, y) };
            dispatch::taken();
        }));
    }
    if !pointwise && direct::fits(&g, k) {
        return Some(out.f32s_mut().map(|y| {
            direct::conv(&g, &gm, x, y);
            dispatch::taken();
        }));
    }
    // One-group convs go to the GEMM paths below; with AVX-512 and weights the `prepack`
    // cache keeps, on the weights packed once into the register block's panels.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if g.g == 1 && avx512::available() && crate::prepack::keeps(w.as_ptr() as usize) {
        let w = &w[..g.oc * k];
        let key = (w.as_ptr() as usize, w.len(), avx512::PANELS_KIND);
        return crate::prepack::with_packed(
            key,
            &mut std::vec::Vec::new(),
            |v| avx512::pack_panels(w, g.oc, k, v),
            |p| {
                let gm = Gemm {
                    panels: Some(bytemuck::cast_slice(p)),
                    ..gm
                };
                gemm_convs(&g, gm, x, out, pointwise, covered)
            },
        );
    }
    gemm_convs(&g, gm, x, out, pointwise, covered)
}

/// The GEMM paths of `conv_f32` (and depthwise, when `covered`): batches of small maps,
/// large patches, pointwise and im2col convs.
fn gemm_convs(
    g: &Geo,
    gm: Gemm<'_>,
    x: &[f32],
    out: &mut TensorMut<'_>,
    pointwise: bool,
    covered: bool,
) -> Option<Result<(), ExecError>> {
    let k = gm.k;
    let (plane, pix) = (g.h * g.w, g.oh * g.ow);
    // A batch of small maps: one GEMM over every image's pixels.
    if fold::fits::<TILE_BIG>(g, k) {
        return Some(out.f32s_mut().map(|y| {
            if k * CHUNK <= TILE_SMALL {
                fold::conv::<TILE_SMALL>(g, &gm, x, y)
            } else {
                fold::conv::<TILE_BIG>(g, &gm, x, y)
            }
        }));
    }
    // Stride-1 convs over wide maps: every tap read in place from a padded band of rows.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if let Some(panels) = gm.panels.filter(|_| !pointwise && taps::fits(g)) {
        return Some(out.f32s_mut().map(|y| taps::conv(g, &gm, panels, x, y)));
    }
    if !covered || (!pointwise && g.g == 1 && k > bigk::K_FROM) {
        return big_k(g, &gm, x, out);
    }
    let y = match out.f32s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if pointwise {
        for n in 0..g.n {
            let xn = &x[n * g.c * plane..(n + 1) * g.c * plane];
            let yn = &mut y[n * g.oc * pix..(n + 1) * g.oc * pix];
            let work = (g.oc * pix * k) as u64;
            // Maps with more pixels than output channels: pixels split across the lent
            // threads (a range of every output channel a part, at multiples of the
            // 16-pixel block), so each thread reads its share of the input (k · pix) and
            // all the weights (k · oc), the smaller; split by output channels, every
            // thread read the whole input. PicoDet's 128 → 128 convs over 100×76 (3.9 MB
            // in, 64 KB of weights) went from 1.3–1.5× to 1.7–1.8× at two threads
            // (`examples/thread_ab.rs`). Each output's sum is the one-thread sum (a
            // block's lanes are summed alike wherever it starts).
            let parts = crate::par::pixel_parts(pix, PT, work).filter(|_| pix > g.oc);
            if let Some(parts) = parts {
                let out = crate::par::SharedMut::new(yn);
                crate::par::run(parts, |i| {
                    let r = crate::par::split(pix, parts, PT, i);
                    if !r.is_empty() {
                        gemm_into(&gm, &xn[r.start..], pix, r.len(), &out, pix, r.start);
                    }
                });
                continue;
            }
            // Output channels split across the lent threads at multiples of both register
            // blocks (6 and 4 rows), so every block is the one-thread block.
            crate::par::par_pieces(yn, OC_SPLIT * pix, work, |at, yp| {
                let o0 = at / pix;
                gemm(&gm.rows(o0, yp.len() / pix), xn, pix, pix, yp, pix, 0);
            });
        }
    } else if g.g == 1 {
        if k * CHUNK <= TILE_SMALL {
            im2col::<TILE_SMALL>(g, &gm, x, y);
        } else {
            im2col::<TILE_BIG>(g, &gm, x, y);
        }
    } else {
        depthwise::depthwise(g, &gm, x, y);
    }
    Some(Ok(()))
}

/// The GEMM over strided rows: input row `c` at `x[c · xs..]`, output row `o` at
/// `y[o · ys + y0..]`, `pix` columns. The caller sizes the slices to hold every row.
fn gemm(gm: &Gemm<'_>, x: &[f32], xs: usize, pix: usize, y: &mut [f32], ys: usize, y0: usize) {
    gemm_into(gm, x, xs, pix, &crate::par::SharedMut::new(y), ys, y0)
}

/// [`gemm`] into outputs that other parts of one `par::run` write elsewhere: this call
/// writes rows `o·ys + y0 .. + pix` of `y` only, and no other part writes those.
fn gemm_into(
    gm: &Gemm<'_>,
    x: &[f32],
    xs: usize,
    pix: usize,
    y: &crate::par::SharedMut<'_, f32>,
    ys: usize,
    y0: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F is present (checked above); `avx512::gemm` checks the slice
        // bounds itself before reading through pointers; the outputs it writes are this
        // call's alone (this function's contract).
        unsafe { avx512::gemm(gm, x, xs, pix, y, ys, y0) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 and FMA are present (checked above); `avx2::gemm` checks the slice
        // bounds itself before reading through pointers; the outputs it writes are this
        // call's alone (this function's contract).
        unsafe { avx2::gemm(gm, x, xs, pix, y, ys, y0) };
        return;
    }
    crate::fast::vectorized(
        #[inline(always)]
        || gemm_portable(gm, x, xs, pix, y, ys, y0),
    );
}

/// `gemm` in loops the compiler vectorizes: blocks of 4 output channels × 16 pixels.
#[inline(always)]
fn gemm_portable(
    gm: &Gemm<'_>,
    x: &[f32],
    xs: usize,
    pix: usize,
    y: &crate::par::SharedMut<'_, f32>,
    ys: usize,
    y0: usize,
) {
    let mut p0 = 0;
    while p0 < pix {
        let end = (p0 + CHUNK).min(pix);
        let mut o = 0;
        while o < gm.oc {
            let mut p = p0;
            while p < end {
                let n = PT.min(end - p);
                let at = Block { o, p, n };
                match MR_PORTABLE.min(gm.oc - o) {
                    4 => block_portable::<4>(gm, at, x, xs, y, ys, y0),
                    3 => block_portable::<3>(gm, at, x, xs, y, ys, y0),
                    2 => block_portable::<2>(gm, at, x, xs, y, ys, y0),
                    _ => block_portable::<1>(gm, at, x, xs, y, ys, y0),
                }
                p += PT;
            }
            o += MR_PORTABLE;
        }
        p0 = end;
    }
}

/// Where one register block sits: first output channel, first pixel, pixels (≤ `PT`).
#[derive(Clone, Copy)]
struct Block {
    o: usize,
    p: usize,
    n: usize,
}

#[inline(always)]
fn block_portable<const R: usize>(
    gm: &Gemm<'_>,
    at: Block,
    x: &[f32],
    xs: usize,
    y: &crate::par::SharedMut<'_, f32>,
    ys: usize,
    y0: usize,
) {
    let k = gm.k;
    let mut acc = [[0f32; PT]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        *a = [gm.bias.map_or(0.0, |b| b[at.o + r]); PT];
    }
    let rows: [&[f32]; R] = core::array::from_fn(|r| &gm.w[(at.o + r) * k..(at.o + r + 1) * k]);
    let mut xv = [0f32; PT];
    for c in 0..k {
        xv[..at.n].copy_from_slice(&x[c * xs + at.p..c * xs + at.p + at.n]);
        for (a, row) in acc.iter_mut().zip(rows) {
            let wv = row[c];
            for (a, &v) in a.iter_mut().zip(&xv) {
                *a += wv * v;
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let at_y = (at.o + r) * ys + y0 + at.p;
        // SAFETY: outputs `at_y..at_y + at.n` are this block's, written by this call
        // only (`gemm_into`'s contract).
        let dst = unsafe { y.piece(at_y, at.n) };
        for (d, &v) in dst.iter_mut().zip(a) {
            *d = v.max(gm.lo).min(gm.hi);
        }
    }
}

/// One-group convs with patches of up to `T / PT` elements: gather the patches of up to
/// `T / k` output pixels into a stack tile (zero where the window leaves the image) and run
/// the GEMM on it.
#[inline(never)]
fn im2col<const T: usize>(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    let k = gm.k;
    let pix = g.oh * g.ow;
    let plane = g.h * g.w;
    let tp = (T / k / PT * PT).min(TILE_PIX_MAX);
    #[cfg(feature = "std")]
    let parts = crate::par::parts_over((g.oc * pix * k) as u64, pix.div_ceil(tp));
    for n in 0..g.n {
        let xn = &x[n * g.c * plane..(n + 1) * g.c * plane];
        let yn = &mut y[n * g.oc * pix..(n + 1) * g.oc * pix];
        #[cfg(feature = "std")]
        if parts > 1 {
            im2col_split::<T>(g, gm, xn, yn, parts);
            continue;
        }
        let mut tile = [0f32; T];
        for t0 in (0..pix).step_by(tp) {
            let len = tp.min(pix - t0);
            gather_tile(g, xn, t0, tp, len, &mut tile);
            gemm(gm, &tile, tp, len, yn, pix, t0);
        }
    }
}

/// One image of `im2col` in `parts` parts: the tiles (the one-thread tiles, so every sum
/// is the one-thread sum) split across the lent threads; each part stages a tile's
/// outputs and copies them out.
#[cfg(feature = "std")]
fn im2col_split<const T: usize>(g: &Geo, gm: &Gemm<'_>, xn: &[f32], yn: &mut [f32], parts: usize) {
    std::thread_local! {
        static STAGE: core::cell::RefCell<std::vec::Vec<f32>> =
            const { core::cell::RefCell::new(std::vec::Vec::new()) };
    }
    let pix = g.oh * g.ow;
    let tp = (T / gm.k / PT * PT).min(TILE_PIX_MAX);
    let tiles = pix.div_ceil(tp);
    let out = crate::par::SharedMut::new(yn);
    crate::par::run(parts, |part| {
        let mut tile = [0f32; T];
        STAGE.with(|s| {
            let mut stage = s.borrow_mut();
            stage.resize(g.oc * tp, 0.0);
            for t in crate::par::split(tiles, parts, 1, part) {
                let (t0, len) = (t * tp, tp.min(pix - t * tp));
                gather_tile(g, xn, t0, tp, len, &mut tile);
                gemm(gm, &tile, tp, len, &mut stage[..g.oc * len], len, 0);
                for o in 0..g.oc {
                    // SAFETY: outputs t0..t0 + len of every channel are this tile's.
                    let dst = unsafe { out.piece(o * pix + t0, len) };
                    dst.copy_from_slice(&stage[o * len..(o + 1) * len]);
                }
            }
        });
    });
}

/// The patches of output pixels `t0..t0 + len` into `tile` (row `r` of the patch at
/// `tile[r·tp..]`).
#[inline(always)]
fn gather_tile(g: &Geo, xn: &[f32], t0: usize, tp: usize, len: usize, tile: &mut [f32]) {
    let plane = g.h * g.w;
    for c in 0..g.c {
        let xc = &xn[c * plane..(c + 1) * plane];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                let dst = &mut tile[row * tp..row * tp + len];
                gather_tap(g, xc, (ky, kx), t0, dst);
            }
        }
    }
}

/// `dst[j]` = the input under tap (ky, kx) of output pixel `t0 + j`, 0 outside the image.
#[inline(always)]
fn gather_tap(g: &Geo, xc: &[f32], (ky, kx): (usize, usize), t0: usize, dst: &mut [f32]) {
    if g.sw == 1 && g.sh == 1 && g.ow == g.w {
        crate::paths::note(crate::paths::Path::TapRunsFlat);
        // Output pixel p reads input p + shift of the flattened plane: one run for the
        // whole tile, zero where the row leaves the image, then zero the columns the
        // window leaves the image at (the run wrapped into the next row there).
        let dx = (kx * g.dw) as isize - g.pl;
        let shift = ((ky * g.dh) as isize - g.pt) * g.w as isize + dx;
        let plane = (g.h * g.w) as isize;
        let first = t0 as isize + shift;
        let lo = (-first).clamp(0, dst.len() as isize) as usize;
        let hi = (plane - first).clamp(lo as isize, dst.len() as isize) as usize;
        dst[..lo].fill(0.0);
        dst[hi..].fill(0.0);
        if hi > lo {
            let a = (first + lo as isize) as usize;
            dst[lo..hi].copy_from_slice(&xc[a..a + hi - lo]);
        }
        if dx != 0 {
            // Columns ox with ox + dx outside 0..w.
            let bad = if dx < 0 {
                0..(-dx as usize).min(g.w)
            } else {
                g.w.saturating_sub(dx as usize)..g.w
            };
            let mut row0 = t0 - t0 % g.w;
            while row0 < t0 + dst.len() {
                for ox in bad.clone() {
                    if let Some(v) = (row0 + ox).checked_sub(t0).and_then(|j| dst.get_mut(j)) {
                        *v = 0.0;
                    }
                }
                row0 += g.w;
            }
        }
        return;
    }
    let (mut oy, mut ox) = (t0 / g.ow, t0 % g.ow);
    let mut j = 0;
    while j < dst.len() {
        let seg = (g.ow - ox).min(dst.len() - j);
        let d = &mut dst[j..j + seg];
        let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
        if iy < 0 || iy >= g.h as isize {
            d.fill(0.0);
        } else {
            let xrow = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
            // ix = (ox + s)·sw + kx·dw − pl for the s-th pixel of the segment.
            let off = (ox * g.sw + kx * g.dw) as isize - g.pl;
            let (lo, hi) = crate::util::inside(off, g.sw, g.w, seg);
            d[..lo].fill(0.0);
            d[hi..].fill(0.0);
            if hi > lo {
                let a = (lo as isize * g.sw as isize + off) as usize;
                if g.sw == 1 {
                    d[lo..hi].copy_from_slice(&xrow[a..a + hi - lo]);
                } else if g.sw == 2 {
                    copy_stride2(&mut d[lo..hi], &xrow[a..]);
                } else {
                    let src = xrow[a..].iter().step_by(g.sw);
                    for (v, &s) in d[lo..hi].iter_mut().zip(src) {
                        *v = s;
                    }
                }
            }
        }
        j += seg;
        ox = 0;
        oy += 1;
    }
}

/// `dst[j] = src[2j]` (every other input: a stride-2 conv's tap row); `src` holds at
/// least `2·dst.len() − 1` floats.
#[inline(always)]
fn copy_stride2(dst: &mut [f32], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present (checked above); `stride2` checks the slice bounds.
        unsafe { avx2::stride2(dst, src) };
        return;
    }
    for (v, &s) in dst.iter_mut().zip(src.iter().step_by(2)) {
        *v = s;
    }
}

/// One-group convs with patches larger than the im2col tiles (`bigk.rs`).
fn big_k(
    g: &Geo,
    gm: &Gemm<'_>,
    x: &[f32],
    out: &mut TensorMut<'_>,
) -> Option<Result<(), ExecError>> {
    if g.g != 1 || !bigk::fits(g) {
        return None;
    }
    Some(out.f32s_mut().map(|y| {
        bigk::conv(g, gm, x, y);
        dispatch::taken();
    }))
}

/// `dst[i·ds + j] = src[off + i + j·s]` for i < `rows`, j < `cols`: a transpose of
/// 4-byte elements (moved as bits, never computed on) in 8×8 AVX2 blocks, the edges
/// element by element; false (nothing written) without AVX2 or with fewer than 8 rows or
/// columns. The 4-byte Transpose (`movement.rs`) and the long-kernel im2col gather
/// (`bigk.rs`) both take it. Panics when a slice is too short.
#[cfg(target_arch = "x86_64")]
pub(crate) fn transpose4<T: Copy>(
    src: &[T],
    off: usize,
    s: usize,
    rows: usize,
    cols: usize,
    dst: &mut [T],
    ds: usize,
) -> bool {
    const { assert!(core::mem::size_of::<T>() == 4) };
    if rows < 8 || cols < 8 || !avx2::available() {
        return false;
    }
    assert!(off + (rows - 1) + (cols - 1) * s < src.len() && (rows - 1) * ds + cols <= dst.len());
    let (sp, dp) = (src.as_ptr() as *const f32, dst.as_mut_ptr() as *mut f32);
    let (rb, cb) = (rows / 8 * 8, cols / 8 * 8);
    for j0 in (0..cb).step_by(8) {
        for i0 in (0..rb).step_by(8) {
            // SAFETY: AVX2 is present (checked above). The block reads 8 elements at
            // off + i0 + (j0 + r)·s and writes 8 at (i0 + a)·ds + j0 (r, a < 8), all
            // below the bounds asserted above; `src` and `dst` are distinct slices, and
            // T is 4 bytes (checked at compile time), moved as f32 bits.
            unsafe { avx2::transpose8(sp.add(off + i0 + j0 * s), s, dp.add(i0 * ds + j0), ds) };
        }
        for i in rb..rows {
            for j in j0..j0 + 8 {
                dst[i * ds + j] = src[off + i + j * s];
            }
        }
    }
    for j in cb..cols {
        for i in 0..rows {
            dst[i * ds + j] = src[off + i + j * s];
        }
    }
    true
}

/// f32 FullyConnected (`Y[i, j] = clamp(bias[j] + Σ_t X[i, t] · W[j, t])`) through a fast
/// path, or `None`.
pub fn fc_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let x = call.req(0).ok()?.f32s().ok()?;
    let wt = call.req(1).ok()?;
    let (n, k) = (wt.info.shape.dim(0), wt.info.shape.dim(1));
    let w = wt.f32s().ok()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.f32s().ok()?),
        None => None,
    };
    let (lo, hi) = f32_clamp(call.param(0), call.param(1));
    let m = x.len().checked_div(k)?;
    let fits = m * k == x.len()
        && w.len() >= n * k
        && bias.is_none_or(|b| b.len() >= n)
        && out.data.len() >= 4 * m * n;
    if !fits {
        return None;
    }
    let gm = Gemm {
        w,
        bias,
        lo,
        hi,
        k,
        oc: n,
        panels: None,
    };
    let y = match out.f32s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if m >= matmul::FC_MIN_ROWS && n >= matmul::FC_MIN_COLS {
        matmul::fc(&gm, x, m, y);
        return Some(Ok(()));
    }
    // Few input rows on panels kept by the weight cache (a recurrent step).
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if n >= matmul::FC_MIN_COLS && matmul::gemv_panels(&gm, x, m, y) {
        return Some(Ok(()));
    }
    // Few input rows, or few weight rows (an attention score's 512 → 1 projection over
    // every query-key pair, where the GEMM's 32-wide panel would be 1/32 used): dot
    // products, input rows split across the pool.
    let work = (m * n * k) as u64;
    crate::par::par_pieces(&mut y[..m * n], n.max(1), work, |at, yp| {
        let i0 = at / n.max(1);
        #[cfg(target_arch = "x86_64")]
        if (1..matmul::FC_MIN_COLS).contains(&n) && avx2::available() {
            // SAFETY: AVX2 and FMA are present (checked above); `fc_few_cols` checks the
            // slice bounds itself.
            unsafe { avx2::fc_few_cols(&gm, &x[i0 * k..], yp.len() / n, yp) };
            return;
        }
        for (xr, yr) in x[i0 * k..].chunks_exact(k).zip(yp.chunks_exact_mut(n)) {
            dot_rows(&gm, xr, yr);
        }
    });
    dispatch::taken();
    Some(Ok(()))
}

/// `yr[j] = clamp(bias[j] + Σ_t xr[t] · W[j, t])` for every weight row `j`.
fn dot_rows(gm: &Gemm<'_>, xr: &[f32], yr: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 and FMA are present (checked above); `avx2::fc_row` checks the slice
        // bounds itself.
        unsafe { avx2::fc_row(gm, xr, yr) };
        return;
    }
    crate::fast::vectorized(
        #[inline(always)]
        || fc_row_portable(gm, xr, yr),
    );
}

/// One output row of FullyConnected: a 16-lane dot product per weight row.
#[inline(always)]
fn fc_row_portable(gm: &Gemm<'_>, xr: &[f32], yr: &mut [f32]) {
    let k = gm.k;
    for (j, yv) in yr.iter_mut().enumerate().take(gm.oc) {
        let wr = &gm.w[j * k..(j + 1) * k];
        let mut lanes = [0f32; PT];
        let (xc, wc) = (xr.chunks_exact(PT), wr.chunks_exact(PT));
        let (xt, wt) = (xc.remainder(), wc.remainder());
        for (xs, ws) in xc.zip(wc) {
            for ((l, &a), &b) in lanes.iter_mut().zip(xs).zip(ws) {
                *l += a * b;
            }
        }
        let tail: f32 = xt.iter().zip(wt).map(|(&a, &b)| a * b).sum();
        let acc = gm.bias.map_or(0.0, |b| b[j]) + lanes.iter().sum::<f32>() + tail;
        *yv = acc.max(gm.lo).min(gm.hi);
    }
}

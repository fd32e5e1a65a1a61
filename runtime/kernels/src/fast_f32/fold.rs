//! One-group f32 convs over a batch of small maps (an exporter that folds time windows into
//! the batch: 32 windows of 1×4 outputs; heads on 1×1 or 7×7 maps): the im2col columns
//! are every image's output pixels (column `n·oh·ow + p`), so a tile is full however small
//! each map is, and the packed weights serve all of the batch's pixels at once, instead
//! of one starved GEMM (a 16-column micro-tile holding 1–4 pixels) per image.
//!
//! Each tile's outputs go to a stack stage in blocks of `OC_BLOCK` output channels and are
//! copied out in runs of one image's pixels. Every output's sum is the one-GEMM sum over
//! its patch, so results do not depend on the tiling or the thread count.

use crate::conv::Geo;

use super::{gemm, Gemm, PT, TILE_PIX_MAX};

/// Output channels per staged block (the stage is `OC_BLOCK × TILE_PIX_MAX` floats, 48 KB).
const OC_BLOCK: usize = 48;

/// Pixels per im2col tile of `T` floats for patches of `k` elements (a multiple of `PT`).
pub(super) fn tile_pix<const T: usize>(k: usize) -> usize {
    (T / k.max(1) / PT * PT).min(TILE_PIX_MAX)
}

/// Whether the batch folds: more than one image, one group, a patch the tile holds at
/// least `PT` pixels of, and maps smaller than a tile (else per-image tiles are full).
pub(super) fn fits<const T: usize>(g: &Geo, k: usize) -> bool {
    let tp = tile_pix::<T>(k);
    g.g == 1 && g.n > 1 && tp >= PT && g.oh * g.ow < tp && g.kw <= KW_MAX
}

/// The conv of `g` with the batch folded into the columns; the caller checked `fits` and
/// the slice lengths.
#[inline(never)]
pub(super) fn conv<const T: usize>(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    let k = gm.k;
    let pix = g.oh * g.ow;
    let total = g.n * pix;
    let tp = tile_pix::<T>(k);
    let tiles = total.div_ceil(tp);
    let parts = crate::par::parts_over((g.oc * total * k) as u64, tiles);
    let out = crate::par::SharedMut::new(y);
    crate::par::run(parts, |part| {
        let mut tile = [0f32; T];
        let mut stage = [0f32; OC_BLOCK * TILE_PIX_MAX];
        for t in crate::par::split(tiles, parts, 1, part) {
            let t0 = t * tp;
            let len = tp.min(total - t0);
            gather(g, x, t0, tp, len, &mut tile);
            for o0 in (0..g.oc).step_by(OC_BLOCK) {
                let ob = OC_BLOCK.min(g.oc - o0);
                let st = &mut stage[..ob * len];
                gemm(&gm.rows(o0, ob), &tile, tp, len, st, len, 0);
                for_each_run(pix, t0, len, |j, n, p, seg| {
                    for o in 0..ob {
                        let at = (n * g.oc + o0 + o) * pix + p;
                        // SAFETY: outputs p..p + seg of image n, channel o0 + o belong to
                        // columns t0 + j.. of this tile, which only this part computes.
                        let dst = unsafe { out.piece(at, seg) };
                        dst.copy_from_slice(&st[o * len + j..o * len + j + seg]);
                    }
                });
            }
        }
    });
    super::dispatch::taken();
}

/// `f(j, n, p, seg)` for each run of columns `t0 + j..t0 + j + seg` inside one image
/// `n` (its pixels `p..p + seg`), over the `len` columns from `t0`.
#[inline(always)]
fn for_each_run(pix: usize, t0: usize, len: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut j = 0;
    while j < len {
        let col = t0 + j;
        let (n, p) = (col / pix, col % pix);
        let seg = (pix - p).min(len - j);
        f(j, n, p, seg);
        j += seg;
    }
}

/// Kernel widths this path takes (each tap column's inside range sits in a stack table).
const KW_MAX: usize = 1024;

/// The patches of columns `t0..t0 + len` (across images) into `tile` (patch row `r` at
/// `tile[r·tp..]`; 0 where a window leaves its image). The output columns whose tap `kx`
/// lies inside the input row are found once per conv; then each (run of one output row,
/// channel, ky) reads one input row, and each of its taps is a short fill and copy (a
/// map's runs are a few pixels, so per-run index work or a memcpy call would cost more
/// than the copies).
#[inline(always)]
fn gather(g: &Geo, x: &[f32], t0: usize, tp: usize, len: usize, tile: &mut [f32]) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if g.h == 1 && g.kh == 1 && g.oh == 1 && g.pt == 0 && gather_1d(g, x, (t0, tp, len), tile) {
        crate::paths::note(crate::paths::Path::FoldPatches1d);
        return;
    }
    let plane = g.h * g.w;
    let pix = g.oh * g.ow;
    let mut cols = [(0usize, 0usize); KW_MAX];
    for (kx, c) in cols.iter_mut().enumerate().take(g.kw) {
        *c = crate::util::inside((kx * g.dw) as isize - g.pl, g.sw, g.w, g.ow);
    }
    for_each_run(pix, t0, len, |j, n, p, seg| {
        let (mut at, mut q) = (j, p);
        while q < p + seg {
            let (oy, ox) = (q / g.ow, q % g.ow);
            let s = (g.ow - ox).min(p + seg - q);
            if s < SHORT_RUN {
                short_run(g, x, n, (oy, ox, s), tp, at, tile);
                at += s;
                q += s;
                continue;
            }
            for c in 0..g.c {
                let xc = &x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
                for ky in 0..g.kh {
                    let r0 = (c * g.kh + ky) * g.kw;
                    let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                    if iy < 0 || iy >= g.h as isize {
                        for kx in 0..g.kw {
                            tile[(r0 + kx) * tp + at..][..s].fill(0.0);
                        }
                        continue;
                    }
                    let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    for (kx, &(lo, hi)) in cols.iter().enumerate().take(g.kw) {
                        let d = &mut tile[(r0 + kx) * tp + at..][..s];
                        // Outputs ox + a..ox + b of this run read inside the row.
                        let (a, b) = (lo.clamp(ox, ox + s) - ox, hi.clamp(ox, ox + s) - ox);
                        if a >= b {
                            d.fill(0.0);
                            continue;
                        }
                        d[..a].fill(0.0);
                        d[b..].fill(0.0);
                        // ix = (ox + i)·sw + kx·dw − pl ≥ 0 for i ≥ a.
                        let i0 = (((ox + a) * g.sw + kx * g.dw) as isize - g.pl) as usize;
                        let src = &xr[i0..=i0 + (b - a - 1) * g.sw];
                        if g.sw == 1 && b - a >= 16 {
                            d[a..b].copy_from_slice(src);
                        } else {
                            for (v, &sv) in d[a..b].iter_mut().zip(src.iter().step_by(g.sw)) {
                                *v = sv;
                            }
                        }
                    }
                }
            }
            at += s;
            q += s;
        }
    });
}

/// [`gather`] for 1-D maps (one input row, kernel height 1, no row padding: a streaming model's 1×4 and
/// 1×2 time windows, whose runs are a few pixels, so the run-by-run gather spends its time
/// on per-run setup): each column's patch first, in a row of its own (its taps `c·kw + kx`
/// read down the channels, `w` floats apart), then all patches transposed into the tile
/// in 8×8 AVX2 blocks. False (nothing written) when the blocks do not apply (fewer than 8
/// columns or patch rows).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
fn gather_1d(g: &Geo, x: &[f32], (t0, tp, len): (usize, usize, usize), tile: &mut [f32]) -> bool {
    extern crate std;
    std::thread_local! {
        static PATCHES: core::cell::RefCell<std::vec::Vec<f32>> =
            const { core::cell::RefCell::new(std::vec::Vec::new()) };
    }
    let k = g.c * g.kw;
    if len < 8 || k < 8 {
        return false;
    }
    PATCHES.with(|p| {
        let mut p = p.borrow_mut();
        p.resize(len * k, 0.0);
        let image = g.c * g.w;
        for (j, pr) in p.chunks_exact_mut(k).enumerate() {
            let (n, ox) = ((t0 + j) / g.ow, (t0 + j) % g.ow);
            let xn = &x[n * image..(n + 1) * image];
            for kx in 0..g.kw {
                let ix = (ox * g.sw + kx * g.dw) as isize - g.pl;
                let taps = pr[kx..].iter_mut().step_by(g.kw);
                if ix < 0 || ix >= g.w as isize {
                    taps.for_each(|v| *v = 0.0);
                } else {
                    for (v, &xv) in taps.zip(xn[ix as usize..].iter().step_by(g.w)) {
                        *v = xv;
                    }
                }
            }
        }
        // tile[r·tp + j] = p[j·k + r]: patch row r, column j.
        super::transpose4(&p, 0, k, k, len, tile, tp)
    })
}

/// Runs of output pixels shorter than this take [`short_run`]: a tap's few outputs are
/// cheaper to gather in one loop than to clamp, fill and copy (the 1×4 and 1×5 maps of a
/// streaming model's time windows spent 15 ns a tap that way).
const SHORT_RUN: usize = 16;

/// [`gather`] for one run of `s` (< [`SHORT_RUN`]) outputs `ox..ox + s` of output row `oy`
/// of image `n`, into tile columns `at..at + s`: each (channel, ky, kx) row is one loop
/// over the run, unchecked where all its taps lie inside the input row. (The (channel, ky)
/// loop is [`gather`]'s again: one shared closure over the rows ran 12–25% slower.)
#[inline(always)]
fn short_run(
    g: &Geo,
    x: &[f32],
    n: usize,
    (oy, ox, s): (usize, usize, usize),
    tp: usize,
    at: usize,
    tile: &mut [f32],
) {
    let plane = g.h * g.w;
    let span = (s - 1) * g.sw;
    for c in 0..g.c {
        let xc = &x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
        for ky in 0..g.kh {
            let r0 = (c * g.kh + ky) * g.kw;
            let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
            if iy < 0 || iy >= g.h as isize {
                for kx in 0..g.kw {
                    tile[(r0 + kx) * tp + at..][..s].fill(0.0);
                }
                continue;
            }
            let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
            for kx in 0..g.kw {
                let d = &mut tile[(r0 + kx) * tp + at..][..s];
                // Input column of the run's first output for this tap.
                let i0 = (ox * g.sw + kx * g.dw) as isize - g.pl;
                if i0 >= 0 && i0 as usize + span < g.w {
                    let src = &xr[i0 as usize..=i0 as usize + span];
                    if g.sw == 1 {
                        for (v, &sv) in d.iter_mut().zip(src) {
                            *v = sv;
                        }
                    } else {
                        for (i, v) in d.iter_mut().enumerate() {
                            // SAFETY: i < s, so i·sw ≤ (s − 1)·sw = span < src.len().
                            *v = unsafe { *src.get_unchecked(i * g.sw) };
                        }
                    }
                } else {
                    for (i, v) in d.iter_mut().enumerate() {
                        let ix = i0 + (i * g.sw) as isize;
                        *v = if ix >= 0 && (ix as usize) < g.w {
                            xr[ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

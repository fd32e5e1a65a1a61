//! One-group f32 convs whose patches are too large for the im2col tiles of `fast_f32.rs`
//! (more than `TILE_BIG / PT` = 1024 elements: 3×3 convs over 114+ channels, such as
//! YOLOX's and PP-OCR's 13×13 and 1×40 stages), and long 1-D kernels of up to 1024 taps
//! per channel (an STFT front end's frame).
//!
//! The patch dimension is split into chunks of whole input channels: for each tile of
//! output pixels, each chunk's im2col rows are gathered into the stack tile and multiplied
//! in (`kernel::gemm`, the weights read in place with their full row stride); the first
//! chunk starts at the bias, later ones add to the output, the last one clamps. Sums are
//! the reference's in another order.

use crate::conv::Geo;

use super::kernel::{gemm, Dims, Dst, Lhs, Rhs, Start};
use super::{gather_tap, Gemm, PT};

/// Patch sizes from which one-group convs take this path: the im2col tiles of
/// `fast_f32.rs` would hold fewer than `TILE_PIX` pixels, so each weight block would serve
/// too few pixels before the next is read.
pub(super) const K_FROM: usize = TILE / TILE_PIX;
/// Floats in the im2col tile (64 KB on the stack).
const TILE: usize = 16384;
/// Most output pixels per tile.
const TILE_PIX: usize = 64;

/// The conv of `g` (one group); the caller checked the slice lengths.
pub(super) fn conv(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    let kk = g.kh * g.kw;
    let k = gm.k;
    let (plane, pix) = (g.h * g.w, g.oh * g.ow);
    // Fewer pixels per tile for patches over TILE / TILE_PIX (long 1-D kernels such as
    // an STFT's 1×512 frame), so one channel's patch still fits.
    let tp = pix
        .div_ceil(PT)
        .min(TILE_PIX / PT)
        .min(TILE / (kk * PT))
        .max(1)
        * PT;
    // Input channels per chunk (at least one: a single channel's patch fits the tile,
    // since kk ≤ TILE / PT is checked by `fits` and tp · kk ≤ TILE).
    let cpc = (TILE / tp / kk).clamp(1, g.c);
    for n in 0..g.n {
        let xn = &x[n * g.c * plane..(n + 1) * g.c * plane];
        let yn = &mut y[n * gm.oc * pix..(n + 1) * gm.oc * pix];
        if gm.oc == 1 {
            // One output row (a 1-D head, a long kernel's single filter): its tiles of
            // pixels split across the lent threads, each the tile one thread would do.
            let work = (pix * k) as u64;
            crate::par::par_pieces(yn, tp, work, |at, yp| {
                tiles(g, gm, xn, yp, at, (tp, cpc));
            });
        } else {
            tiles(g, gm, xn, yn, 0, (tp, cpc));
        }
    }
}

/// The output pixels `at..at + len` of every output channel of one image (`xn`), in
/// tiles of `tp` pixels from `at` and chunks of `cpc` input channels, with `len` =
/// `yn.len() / oc`: `yn` holds channel `o`'s pixels at `o · len` (all of them with `at` =
/// 0, or a piece of a one-channel output).
fn tiles(g: &Geo, gm: &Gemm<'_>, xn: &[f32], yn: &mut [f32], at: usize, (tp, cpc): (usize, usize)) {
    let kk = g.kh * g.kw;
    let k = gm.k;
    let len_all = yn.len() / gm.oc;
    let mut tile = [0f32; TILE];
    let plane = g.h * g.w;
    let mut t0 = at;
    while t0 < at + len_all {
        let len = tp.min(at + len_all - t0);
        let mut c0 = 0;
        while c0 < g.c {
            let nc = cpc.min(g.c - c0);
            for c in c0..c0 + nc {
                let xc = &xn[c * plane..(c + 1) * plane];
                for ky in 0..g.kh {
                    let row0 = ((c - c0) * g.kh + ky) * g.kw;
                    let rows = &mut tile[row0 * tp..(row0 + g.kw) * tp];
                    if !taps_by_blocks(g, xc, ky, t0, len, rows, tp) {
                        for kx in 0..g.kw {
                            let d = &mut rows[kx * tp..kx * tp + len];
                            gather_tap(g, xc, (ky, kx), t0, d);
                        }
                    }
                }
            }
            let first = c0 == 0;
            let last = c0 + nc == g.c;
            let a = Lhs {
                a: &gm.w[c0 * kk..],
                rs: k,
                cs: 1,
            };
            let b = Rhs { b: &tile, bs: tp };
            let mut dst = Dst {
                c: &mut *yn,
                rs: len_all,
                c0: t0 - at,
            };
            let start = match (first, gm.bias) {
                (false, _) => Start::Load,
                (true, Some(bias)) => Start::RowBias(bias),
                (true, None) => Start::Zero,
            };
            let d = Dims {
                m: gm.oc,
                n: len,
                k: nc * kk,
                start,
                clamp: last.then_some((gm.lo, gm.hi)),
            };
            match gm.panels {
                // SAFETY: panels are only given where AVX-512F is present
                // (`conv_f32`); `panel_gemm` checks the slice bounds.
                #[cfg(target_arch = "x86_64")]
                Some(p) => unsafe { super::avx512::panel_gemm(p, k, c0 * kk, b, &mut dst, d) },
                _ => gemm(a, b, &mut dst, d),
            }
            c0 += nc;
        }
        t0 += len;
    }
}

/// The im2col rows of every tap `kx` of kernel row `ky` (row `kx` of `rows`, stride `tp`)
/// for the `len` output pixels from `t0`, when those pixels lie in one output row and
/// every tap of theirs inside the input row, the taps contiguous (`dw = 1`) and at least
/// 8 of them: then tap `kx` of pixel `j` is `xrow[(ox + j)·sw − pl + kx]`, so 8 pixels ×
/// 8 taps are an 8×8 block of the input transposed, instead of 64 strided reads (an STFT
/// frame's 512 taps at a hop of 160). Returns false (nothing written) otherwise.
fn taps_by_blocks(
    g: &Geo,
    xc: &[f32],
    ky: usize,
    t0: usize,
    len: usize,
    rows: &mut [f32],
    tp: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let (oy, ox) = (t0 / g.ow, t0 % g.ow);
        let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
        let first = (ox * g.sw) as isize - g.pl;
        let fits = g.dw == 1
            && len > 0
            && ox + len <= g.ow
            && iy >= 0
            && (iy as usize) < g.h
            && first >= 0
            && first as usize + (len - 1) * g.sw + g.kw <= g.w
            && rows.len() >= (g.kw - 1) * tp + len;
        if !fits {
            return false;
        }
        let xrow = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
        // Row kx of `rows` is tap kx: rows[kx·tp + j] = xrow[first + kx + j·sw].
        let done = super::transpose4(xrow, first as usize, g.sw, g.kw, len, rows, tp);
        if done {
            crate::paths::note(crate::paths::Path::TapBlocks);
        }
        done
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, xc, ky, t0, len, rows, tp);
        false
    }
}

/// Whether `conv` takes a one-group conv of `g`.
pub(super) fn fits(g: &Geo) -> bool {
    g.kh * g.kw <= TILE / PT && g.c > 0
}

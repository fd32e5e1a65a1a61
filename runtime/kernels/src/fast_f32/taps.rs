//! One-group stride-1 f32 convs as an implicit GEMM (hosts with AVX-512F and the weights
//! in the `prepack` cache's panels): for each band of output rows, the input rows the
//! band reads are copied once into a zero-padded band, channel after channel, and the
//! GEMM reads every tap `(c, ky, kx)` of an output row in place from it, at a fixed
//! offset per tap (`avx512::panel_gemm_taps`). The im2col paths instead copy each input
//! value once per tap into a tile (nine times for a 3×3 kernel), which took a fifth of a
//! large-map model's time in `memmove` (DNSMOS: 128-channel 3×3 convs over 900 × 161).
//!
//! The taps are the im2col rows in the same order and each output the same chain from the
//! bias, so the bits are those of the im2col paths on the same panels. An output row is
//! one run of blocks (32 pixels, the tail one or two vectors), so rows whose tail wastes
//! much of a block stay with the im2col paths, which pack pixels of several rows.

use crate::conv::Geo;

use super::kernel::{Dims, Dst, Start};
use super::Gemm;

/// Floats of a band (all channels' rows, padded), sized to stay in a core's L2: 512 KB.
const BAND: usize = 1 << 17;

/// Pixels per register block and per vector.
const NR: usize = 32;
const VEC: usize = 16;

/// Whether `conv` takes `g` (panels given): one group, stride 1, no batch folding needed,
/// outputs at least a block wide with at most 15% of the lanes of a row's blocks idle, and
/// one channel's band row within the band.
pub(super) fn fits(g: &Geo) -> bool {
    let lanes = g.ow / NR * NR
        + match g.ow % NR {
            0 => 0,
            r if r <= VEC => VEC,
            _ => NR,
        };
    let wp = g.ow + (g.kw - 1) * g.dw;
    g.g == 1
        && g.sh == 1
        && g.sw == 1
        && !(g.kh == 1 && g.kw == 1)
        && g.ow >= NR
        && g.oh > 0
        && 100 * g.ow >= 85 * lanes
        && g.c * (1 + (g.kh - 1) * g.dh) * wp <= BAND
}

/// The conv of `g` on `panels` (the caller checked that `fits` holds and the slice
/// lengths: `x` holds `n·c·h·w`, `y` `n·oc·oh·ow`).
pub(super) fn conv(g: &Geo, gm: &Gemm<'_>, panels: &[f32], x: &[f32], y: &mut [f32]) {
    std::thread_local! {
        static SCRATCH: core::cell::RefCell<(std::vec::Vec<f32>, std::vec::Vec<f32>)> =
            const { core::cell::RefCell::new((std::vec::Vec::new(), std::vec::Vec::new())) };
    }
    let (plane, pix) = (g.h * g.w, g.oh * g.ow);
    let wp = g.ow + (g.kw - 1) * g.dw;
    let reach = (g.kh - 1) * g.dh;
    // Output rows per band: as many as the band holds, at least one.
    let rows = (BAND / (g.c * wp)).saturating_sub(reach).clamp(1, g.oh);
    let brows = rows + reach;
    let band_plane = brows * wp;
    let mut offs: std::vec::Vec<usize> = (0..g.c)
        .flat_map(|c| {
            (0..g.kh).flat_map(move |ky| {
                (0..g.kw).map(move |kx| c * band_plane + ky * g.dh * wp + kx * g.dw)
            })
        })
        .collect();
    // The last tap again, for the kernel's look-ahead.
    let last = offs.last().copied().unwrap_or(0);
    offs.extend(core::iter::repeat_n(last, super::avx512::TAPS_AHEAD));
    let bands = g.oh.div_ceil(rows);
    let parts = crate::par::parts_over((g.oc * pix * gm.k) as u64, bands);
    for n in 0..g.n {
        let xn = &x[n * g.c * plane..(n + 1) * g.c * plane];
        let yn = &mut y[n * g.oc * pix..(n + 1) * g.oc * pix];
        if parts <= 1 {
            SCRATCH.with(|s| {
                let band = &mut s.borrow_mut().0;
                band.resize(g.c * band_plane, 0.0);
                for b in 0..bands {
                    let oy0 = b * rows;
                    let r = rows.min(g.oh - oy0);
                    fill_band(g, xn, oy0, brows, wp, band);
                    let mut dst = Dst {
                        c: &mut *yn,
                        rs: pix,
                        c0: oy0 * g.ow,
                    };
                    band_rows(g, gm, panels, band, &offs, r, wp, &mut dst);
                }
            });
            continue;
        }
        // Bands across the lent threads; each stages its outputs and copies them out.
        let out = crate::par::SharedMut::new(yn);
        crate::par::run(parts, |part| {
            SCRATCH.with(|s| {
                let (band, stage) = &mut *s.borrow_mut();
                band.resize(g.c * band_plane, 0.0);
                stage.resize(g.oc * rows * g.ow, 0.0);
                for b in crate::par::split(bands, parts, 1, part) {
                    let oy0 = b * rows;
                    let r = rows.min(g.oh - oy0);
                    fill_band(g, xn, oy0, brows, wp, band);
                    let span = r * g.ow;
                    let mut dst = Dst {
                        c: &mut stage[..g.oc * span],
                        rs: span,
                        c0: 0,
                    };
                    band_rows(g, gm, panels, band, &offs, r, wp, &mut dst);
                    for o in 0..g.oc {
                        // SAFETY: outputs oy0·ow .. + span of every channel are this
                        // band's, and bands are split disjointly across the parts.
                        let to = unsafe { out.piece(o * pix + oy0 * g.ow, span) };
                        to.copy_from_slice(&stage[o * span..(o + 1) * span]);
                    }
                }
            });
        });
    }
}

/// The GEMM of `r` output rows from a filled band into `dst` (row `o` at `o·rs`, the
/// band's first output at column `c0`).
#[allow(clippy::too_many_arguments)]
fn band_rows(
    g: &Geo,
    gm: &Gemm<'_>,
    panels: &[f32],
    band: &[f32],
    offs: &[usize],
    r: usize,
    wp: usize,
    dst: &mut Dst<'_>,
) {
    let c0 = dst.c0;
    for row in 0..r {
        let mut d = Dst {
            c: &mut *dst.c,
            rs: dst.rs,
            c0: c0 + row * g.ow,
        };
        let dims = Dims {
            m: gm.oc,
            n: g.ow,
            k: gm.k,
            start: match gm.bias {
                Some(b) => Start::RowBias(b),
                None => Start::Zero,
            },
            clamp: Some((gm.lo, gm.hi)),
        };
        // SAFETY: `panels` are only given where AVX-512F is present (`conv_f32`);
        // `panel_gemm_taps` checks every bound.
        unsafe {
            super::avx512::panel_gemm_taps(panels, gm.k, &band[row * wp..], offs, &mut d, dims)
        };
    }
    crate::paths::note(crate::paths::Path::GemmF32Taps);
}

/// Band rows `0..brows` (input rows `oy0 − pt + j`) of every channel, `wp` floats each:
/// input column `j − pl` at `j`, zero outside the image.
fn fill_band(g: &Geo, xn: &[f32], oy0: usize, brows: usize, wp: usize, band: &mut [f32]) {
    let plane = g.h * g.w;
    let band_plane = brows * wp;
    // Band columns j with 0 ≤ j − pl < w.
    let lo = (g.pl.max(0) as usize).min(wp);
    let hi = ((g.pl + g.w as isize).clamp(0, wp as isize) as usize).max(lo);
    let from = (lo as isize - g.pl) as usize;
    for c in 0..g.c {
        let xc = &xn[c * plane..(c + 1) * plane];
        for j in 0..brows {
            let row = &mut band[c * band_plane + j * wp..c * band_plane + (j + 1) * wp];
            let iy = oy0 as isize - g.pt + j as isize;
            if iy < 0 || iy >= g.h as isize {
                row.fill(0.0);
                continue;
            }
            let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
            row[..lo].fill(0.0);
            row[lo..hi].copy_from_slice(&xr[from..from + hi - lo]);
            row[hi..].fill(0.0);
        }
    }
}

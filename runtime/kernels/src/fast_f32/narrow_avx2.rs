//! One-group f32 convs with few output channels (≤ `OC_MAX`) on AVX2 + FMA (x86_64): a
//! network's output head (one score or depth map, three colour planes), a spectrogram
//! model's narrow filters (Basic Pitch's 3×39 convs into 1 and 8 channels) and a
//! resampling FIR (a 256-tap, stride-2 low-pass over a waveform). The im2col GEMM copies
//! as many patch elements as it multiplies there, since its 6-row block is mostly idle.
//!
//! For a band of up to 8 output rows and a tile of up to `TILE_MAX` output columns, every
//! input row the band reads (of every input channel) is copied once into a stack buffer
//! with its zero border and, for horizontal strides 2–4, split into `sw` column phases, so
//! that a tap reads eight consecutive outputs' inputs with one load. Then each block of outputs holds
//! its accumulators (all output channels × one to four vectors) in registers across every
//! tap, one fused multiply-add per tap and vector, the weight broadcast from its row.
//!
//! Accuracy contract (the GEMM paths' one): the sum of each output is the bias plus its
//! in-bounds taps in another order and with fused multiply-adds (a padding tap adds
//! `0 · w`); with one output channel the taps alternate between two partial sums, added
//! at the end. Kernel rows outside the image are skipped as in the reference.
//! `runtime/kernels/tests/exact_f32_fast.rs` checks it against the reference.

use core::arch::x86_64::*;

use super::Gemm;
use crate::conv::Geo;

/// Most output channels this path takes (all of them in one register block).
pub(super) const OC_MAX: usize = 8;
/// Floats in the padded-row buffer (64 KB of stack).
const SCRATCH: usize = 16384;
/// Largest horizontal stride split into phases.
const PHASES_MAX: usize = 4;
/// Outputs of one register block at the widest (four vectors).
const BLOCK_MAX: usize = 32;
/// Most output columns per tile.
const TILE_MAX: usize = 512;
/// Floats of the weights repacked tap-major (32 KB): the output channels' weights of one
/// tap side by side, so a tap's broadcasts read one cache line.
const WPACK: usize = 8192;
/// Longest kernel row (the per-tap offset table).
const KW_MAX: usize = 1024;

/// The tiling of `g`: output rows per band, output columns per tile (a multiple of
/// `BLOCK_MAX`), input rows kept per channel, and the floats of one phase of one input row.
#[derive(Clone, Copy)]
struct Tile {
    band: usize,
    cols: usize,
    rows: usize,
    phase: usize,
}

fn tile_of(g: &Geo) -> Option<Tile> {
    if g.sw == 0 || g.sw > PHASES_MAX || g.dw == 0 || g.kw == 0 || g.kh == 0 || g.oh == 0 {
        return None;
    }
    let span = (g.kw - 1) * g.dw;
    let want = g.ow.div_ceil(BLOCK_MAX) * BLOCK_MAX;
    // The band and tile width that copy the fewest floats per output row: a band copies
    // each input row once for several output rows, but leaves less room for columns
    // (more tiles, each copying the kernel's span again).
    let mut best: Option<(usize, Tile)> = None;
    for band in [16, 8, 4, 2, 1] {
        let band = band.min(g.oh);
        let rows = (band - 1) * g.sh + (g.kh - 1) * g.dh + 1;
        let per_row = SCRATCH / g.c.checked_mul(rows)?.checked_mul(g.sw)?.max(1);
        let Some(room) = per_row.checked_sub(span / g.sw) else {
            continue;
        };
        let cols = (room / BLOCK_MAX * BLOCK_MAX).min(want).min(TILE_MAX);
        if cols < BLOCK_MAX {
            continue;
        }
        let phase = cols + span / g.sw;
        let copied = g.c * g.sw * rows * phase * g.ow.div_ceil(cols) / band;
        if best.is_none_or(|(c, _)| copied < c) {
            let t = Tile {
                band,
                cols,
                rows,
                phase,
            };
            best = Some((copied, t));
        }
    }
    best.map(|(_, t)| t)
}

/// Whether `conv` takes the one-group conv of `g` (pointwise convs stay on the GEMM).
pub(super) fn fits(g: &Geo) -> bool {
    g.g == 1
        && (1..=OC_MAX).contains(&g.oc)
        && g.ow >= 8
        && g.c > 0
        && g.kw <= KW_MAX
        && g.c * g.kh * g.kw * g.oc <= WPACK
        && tile_of(g).is_some()
}

/// The conv of `g`.
///
/// # Safety
/// AVX2 and FMA must be present; the caller checked `fits` and the slice lengths
/// (`x` holds `n·c·h·w` floats, `y` `n·oc·oh·ow`, the weights `oc·c·kh·kw`).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn conv(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    // SAFETY (every call below): as for this function.
    unsafe {
        match g.oc {
            1 => body::<1, 4, 2>(g, gm, x, y),
            2 => body::<2, 4, 1>(g, gm, x, y),
            3 => body::<3, 2, 1>(g, gm, x, y),
            4 => body::<4, 2, 1>(g, gm, x, y),
            5 => body::<5, 1, 1>(g, gm, x, y),
            6 => body::<6, 1, 1>(g, gm, x, y),
            7 => body::<7, 1, 1>(g, gm, x, y),
            _ => body::<8, 1, 1>(g, gm, x, y),
        }
    }
}

/// `R` output channels, `NV` vectors of outputs per block, `P` partial sums per output.
/// Output rows split across the lent threads in whole bands (each output is computed
/// the same way whatever the split, so every thread count gives the same bits).
#[target_feature(enable = "avx2,fma")]
unsafe fn body<const R: usize, const NV: usize, const P: usize>(
    g: &Geo,
    gm: &Gemm<'_>,
    x: &[f32],
    y: &mut [f32],
) {
    let Some(t) = tile_of(g) else { return };
    let (k, sw) = (gm.k, g.sw);
    // Weights tap-major: wp[tap · R + r] = w[r · k + tap].
    let mut wp = [0f32; WPACK];
    for (tap, taps) in wp[..k * R].chunks_exact_mut(R).enumerate() {
        for (r, v) in taps.iter_mut().enumerate() {
            *v = gm.w[r * k + tap];
        }
    }
    // Where tap kx of a kept row reads, relative to the block's first output.
    let mut toff = [0usize; KW_MAX];
    for (kx, t_off) in toff[..g.kw].iter_mut().enumerate() {
        let pos = kx * g.dw;
        *t_off = (pos % sw) * t.phase + pos / sw;
    }
    let work = (g.n * g.oc * g.oh * g.ow) as u64 * k as u64;
    let out = crate::par::SharedMut::new(y);
    let (wp, toff) = (&wp, &toff);
    // Units of work: each band of output rows by each tile of columns, so a map of one
    // row (a 1-D conv over a waveform or a spectrum's frames) splits too.
    let tiles = g.ow.div_ceil(t.cols);
    crate::par::par_ranges(g.oh.div_ceil(t.band) * tiles, 1, work, |units| {
        // SAFETY: AVX2 and FMA are present (this function's contract); the parts write
        // disjoint tiles of output rows.
        unsafe { rows_of::<R, NV, P>(g, gm, &t, wp, toff, x, &out, units) }
    });
}

/// Units `units` of every image and output channel: unit `u` is band `u / tiles` of
/// output rows (`t.band` rows from the first) by tile `u % tiles` of output columns
/// (`t.cols` columns from the first), with `tiles` the tiles of a row.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_of<const R: usize, const NV: usize, const P: usize>(
    g: &Geo,
    gm: &Gemm<'_>,
    t: &Tile,
    wp: &[f32; WPACK],
    toff: &[usize; KW_MAX],
    x: &[f32],
    out: &crate::par::SharedMut<'_, f32>,
    units: core::ops::Range<usize>,
) {
    let (plane, pix) = (g.h * g.w, g.oh * g.ow);
    let sw = g.sw;
    let slot = sw * t.phase;
    let mut buf = [0f32; SCRATCH];
    // Whether each kept input row (channel, row of the band) lies inside the image.
    let mut valid = [false; SCRATCH / BLOCK_MAX];
    // The rows an output row reads: (slot start, weight offset of the kernel row).
    let mut live = [(0usize, 0usize); SCRATCH / BLOCK_MAX];
    let bias: [f32; R] = core::array::from_fn(|r| gm.bias.map_or(0.0, |b| b[r]));
    let (lo, hi) = (_mm256_set1_ps(gm.lo), _mm256_set1_ps(gm.hi));
    let tiles = g.ow.div_ceil(t.cols);
    for n in 0..g.n {
        let xn = &x[n * g.c * plane..(n + 1) * g.c * plane];
        for u in units.clone() {
            let oy0 = u / tiles * t.band;
            let nb = t.band.min(g.oh - oy0);
            let t0 = u % tiles * t.cols;
            let len = t.cols.min(g.ow - t0);
            // Copy the band's input rows, phase by phase, with their zero border.
            for c in 0..g.c {
                for j in 0..t.rows {
                    let iy = (oy0 * g.sh + j) as isize - g.pt;
                    let si = c * t.rows + j;
                    valid[si] = iy >= 0 && iy < g.h as isize;
                    if !valid[si] {
                        continue;
                    }
                    let row = &xn[c * plane + iy as usize * g.w..][..g.w];
                    let s0 = si * slot;
                    for p in 0..sw {
                        let dst = &mut buf[s0 + p * t.phase..s0 + (p + 1) * t.phase];
                        // Input column of element e: (t0 + e)·sw + p − pl.
                        let off = (t0 * sw + p) as isize - g.pl;
                        let (a, b) = crate::util::inside(off, sw, g.w, dst.len());
                        dst[..a].fill(0.0);
                        dst[b..].fill(0.0);
                        if b > a {
                            let src = &row[(a as isize * sw as isize + off) as usize..];
                            if sw == 1 {
                                dst[a..b].copy_from_slice(&src[..b - a]);
                            } else {
                                for (d, &v) in dst[a..b].iter_mut().zip(src.iter().step_by(sw)) {
                                    *d = v;
                                }
                            }
                        }
                    }
                }
            }
            for oy in oy0..oy0 + nb {
                let mut nl = 0;
                for c in 0..g.c {
                    for ky in 0..g.kh {
                        let si = c * t.rows + (oy - oy0) * g.sh + ky * g.dh;
                        if valid[si] {
                            live[nl] = (si * slot, (c * g.kh + ky) * g.kw);
                            nl += 1;
                        }
                    }
                }
                let mut o = 0;
                while o < len {
                    let mut acc = [[[_mm256_setzero_ps(); NV]; R]; P];
                    for r in 0..R {
                        acc[0][r] = [_mm256_set1_ps(bias[r]); NV];
                    }
                    for &(s0, w0) in &live[..nl] {
                        let rowp = buf.as_ptr().add(s0 + o);
                        let wrow = wp.as_ptr().add(w0 * R);
                        // Taps in groups of P, tap kx + part into partial sum `part`
                        // (static indices, so the accumulators stay in registers).
                        let mut kx = 0;
                        while kx < g.kw {
                            for (part, accp) in acc.iter_mut().enumerate() {
                                let kt = kx + part;
                                if kt >= g.kw {
                                    break;
                                }
                                // SAFETY: phase element o + pos/sw + 8·NV − 1 < t.phase
                                // (pos = kt·dw), since o + 8·NV ≤ t.cols and
                                // pos/sw ≤ span/sw.
                                let src = rowp.add(toff[kt]);
                                let wt = wrow.add(kt * R);
                                for v in 0..NV {
                                    let xv = _mm256_loadu_ps(src.add(8 * v));
                                    for (r, a) in accp.iter_mut().enumerate() {
                                        let wv = _mm256_broadcast_ss(&*wt.add(r));
                                        a[v] = _mm256_fmadd_ps(xv, wv, a[v]);
                                    }
                                }
                            }
                            kx += P;
                        }
                    }
                    let keep = (len - o).min(8 * NV);
                    for r in 0..R {
                        let mut vals = [0f32; BLOCK_MAX];
                        for v in 0..NV {
                            let mut s = acc[0][r][v];
                            for part in acc.iter().skip(1) {
                                s = _mm256_add_ps(s, part[r][v]);
                            }
                            let s = _mm256_min_ps(_mm256_max_ps(s, lo), hi);
                            _mm256_storeu_ps(vals.as_mut_ptr().add(8 * v), s);
                        }
                        let at = (n * g.oc + r) * pix + oy * g.ow + t0 + o;
                        // SAFETY: output row oy is this part's alone.
                        unsafe { out.piece(at, keep) }.copy_from_slice(&vals[..keep]);
                    }
                    o += 8 * NV;
                }
            }
        }
    }
}

//! f32 depthwise Conv one output row at a time: for each tap, the run of output columns
//! whose input column is inside the image gets `x · w` added, a contiguous multiply-add
//! the compiler vectorizes (strided rows are first split into contiguous phases). Each
//! output gets the bias, then the in-bounds taps in the reference's order, each a separate
//! multiply and add: the same operations as `conv::conv_f32`, so the same bits.

use crate::conv::Geo;

use super::Gemm;

/// Output columns accumulated at once (a 1 KB stack row).
const CHUNK: usize = 256;
/// Widest input row the phase split holds (a 16 KB stack buffer).
const ROW_MAX: usize = 4096;
/// Largest stride split into phases (wider strides read the row strided).
const PHASES_MAX: usize = 4;
/// Widest kernel (its per-column runs are computed once per conv).
const KW_MAX: usize = 16;

/// Whether `depthwise` takes this (depthwise) geometry.
pub(super) fn fits(g: &Geo) -> bool {
    g.w + PHASES_MAX <= ROW_MAX && g.sw >= 1 && g.kw <= KW_MAX
}

/// The depthwise conv of `g` (one input channel per group, one output channel per input
/// channel) over the whole batch; the caller checked the slice lengths and `fits`.
pub(super) fn depthwise(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    // Small maps: eight channels at a time, channels last (the same bits as the plane
    // kernel below).
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if super::avx2::available() && crate::paths::small_depthwise() && super::depthwise_cl::fits(g) {
        super::depthwise_cl::depthwise(g, gm, x, y);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() && super::depthwise_avx2::fits(g) {
        super::depthwise_avx2::depthwise(g, gm, x, y);
        return;
    }
    crate::fast::vectorized(
        #[inline(always)]
        || depthwise_body(g, gm, x, y),
    );
}

#[inline(always)]
fn depthwise_body(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    let (oh, ow) = (g.oh, g.ow);
    let ksz = g.kh * g.kw;
    let plane = g.h * g.w;
    let split = g.sw > 1 && g.sw <= PHASES_MAX;
    let phase_len = g.w.div_ceil(g.sw);
    let mut acc = [0f32; CHUNK];
    let mut phases = [0f32; ROW_MAX];
    let mut x0 = 0;
    while x0 < ow {
        let len = CHUNK.min(ow - x0);
        // The columns each tap covers are the same in every row and channel.
        let mut runs = [Run::default(); KW_MAX];
        for (kx, run) in runs.iter_mut().enumerate().take(g.kw) {
            *run = Run::of(g, kx, x0, len, split, phase_len);
        }
        for n in 0..g.n {
            for c in 0..g.c {
                let xc = &x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
                let wc = &gm.w[c * ksz..(c + 1) * ksz];
                let base = gm.bias.map_or(0.0, |b| b[c]);
                let yc = &mut y[(n * g.c + c) * oh * ow..(n * g.c + c + 1) * oh * ow];
                for oy in 0..oh {
                    let acc = &mut acc[..len];
                    acc.fill(base);
                    for ky in 0..g.kh {
                        let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let xrow = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                        // x[ix] = phases[(ix % sw) · phase_len + ix / sw].
                        if split {
                            for ph in 0..g.sw.min(g.w) {
                                let dst = &mut phases[ph * phase_len..(ph + 1) * phase_len];
                                for (d, &v) in dst.iter_mut().zip(xrow[ph..].iter().step_by(g.sw)) {
                                    *d = v;
                                }
                            }
                        }
                        let wr = &wc[ky * g.kw..(ky + 1) * g.kw];
                        if g.sw == 1 || split {
                            let src = if split { &phases[..] } else { xrow };
                            add_row_taps(acc, &runs[..g.kw], wr, src);
                            continue;
                        }
                        for (run, &wv) in runs.iter().zip(wr) {
                            let dst = &mut acc[run.dst..run.dst + run.len];
                            if run.len > 0 {
                                let src = xrow[run.src..].iter().step_by(g.sw);
                                for (a, &v) in dst.iter_mut().zip(src) {
                                    *a += v * wv;
                                }
                            }
                        }
                    }
                    let row = &mut yc[oy * ow + x0..oy * ow + x0 + len];
                    for (d, &a) in row.iter_mut().zip(acc.iter()) {
                        *d = a.max(gm.lo).min(gm.hi);
                    }
                }
            }
        }
        x0 += len;
    }
}

/// The output columns (within a chunk) one tap column `kx` adds to, and where its inputs
/// start (in the row, or in the phase buffer for split strided rows).
#[derive(Clone, Copy, Default)]
struct Run {
    dst: usize,
    len: usize,
    src: usize,
}

impl Run {
    fn of(g: &Geo, kx: usize, x0: usize, len: usize, split: bool, phase_len: usize) -> Run {
        // ix = ox · sw + off for output column ox; the columns with ix in [0, w).
        let off = (kx * g.dw) as isize - g.pl;
        let (lo, hi) = crate::util::inside(off, g.sw, g.w, x0 + len);
        let lo = lo.max(x0);
        if lo >= hi {
            return Run::default();
        }
        let ix0 = (lo as isize * g.sw as isize + off) as usize;
        let src = if split {
            (ix0 % g.sw) * phase_len + ix0 / g.sw
        } else {
            ix0
        };
        Run {
            dst: lo - x0,
            len: hi - lo,
            src,
        }
    }
}

/// Add one kernel row's taps to `acc`, each tap's inputs contiguous in `src` (`runs[kx]`
/// says where). The columns every tap covers take all the taps in one pass, the
/// accumulator in a register (3- and 5-wide kernels); the border columns take them one
/// tap at a time. Each column still gets its taps in ascending `kx` order.
#[inline(always)]
fn add_row_taps(acc: &mut [f32], runs: &[Run], wr: &[f32], src: &[f32]) {
    let lo = runs.iter().map(|r| r.dst).max().unwrap_or(0);
    let hi = runs.iter().map(|r| r.dst + r.len).min().unwrap_or(0);
    let fused = hi > lo
        && match runs.len() {
            3 => fused_taps::<3>(acc, runs, wr, src, (lo, hi)),
            5 => fused_taps::<5>(acc, runs, wr, src, (lo, hi)),
            _ => false,
        };
    for (run, &wv) in runs.iter().zip(wr) {
        let end = run.dst + run.len;
        if fused {
            // The columns left and right of the fused interior [lo, hi).
            add_scaled(
                &mut acc[run.dst..lo],
                &src[run.src..run.src + lo - run.dst],
                wv,
            );
            let from = run.src + hi - run.dst;
            add_scaled(&mut acc[hi..end], &src[from..from + end - hi], wv);
        } else {
            add_scaled(&mut acc[run.dst..end], &src[run.src..run.src + run.len], wv);
        }
    }
}

/// `acc[i] += src_0[i]·w_0; … += src_{KW−1}[i]·w_{KW−1}` over the columns `[lo, hi)` that
/// every tap covers; `true` when done.
#[inline(always)]
fn fused_taps<const KW: usize>(
    acc: &mut [f32],
    runs: &[Run],
    wr: &[f32],
    src: &[f32],
    (lo, hi): (usize, usize),
) -> bool {
    let m = hi - lo;
    let srcs: [&[f32]; KW] = core::array::from_fn(|kx| {
        let at = runs[kx].src + lo - runs[kx].dst;
        &src[at..at + m]
    });
    let w: [f32; KW] = core::array::from_fn(|kx| wr[kx]);
    for (i, a) in acc[lo..hi].iter_mut().enumerate() {
        let mut v = *a;
        for kx in 0..KW {
            v += srcs[kx][i] * w[kx];
        }
        *a = v;
    }
    true
}

/// `dst[i] += src[i] · w`, a separate multiply and add (as the reference).
#[inline(always)]
fn add_scaled(dst: &mut [f32], src: &[f32], w: f32) {
    for (a, &v) in dst.iter_mut().zip(src) {
        *a += v * w;
    }
}

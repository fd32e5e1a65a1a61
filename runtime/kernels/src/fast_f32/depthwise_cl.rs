//! f32 depthwise Conv eight channels at a time in channels-last order (x86_64 AVX2 + FMA,
//! `std`), for the small maps where the plane kernel (`depthwise_avx2.rs`) spends most of
//! a channel on its set-up and on vectors a 7- or 14-wide row fills in part.
//!
//! Eight channel planes are transposed into pixels of eight floats (8×8 transposes) and
//! written into a staged window with a zero border (the border is written once per call:
//! every block writes the same interior); each output pixel is then the bias plus the taps
//! in the reference's order (`ky`, then `kx`), one fused multiply-add each, then
//! `max(lo)`, `min(hi)`: the chain of the plane kernel, lane for lane, so the two give the
//! same bits (a padding tap adds `0 · w` in both). Eight output pixels go at once (eight
//! independent chains keep both FMA pipes busy), and the pixels of eight floats are
//! transposed back into the output planes.
//!
//! Any kernel of up to 64 taps, stride and dilation, as long as the staged window is small
//! ([`MAX_STAGE`]): there it measured faster than the plane kernel (`tests/exact_f32.rs`
//! `depthwise_f32_throughput`).

extern crate std;
use std::cell::RefCell;
use std::vec::Vec;

use core::arch::x86_64::*;

use super::Gemm;
use crate::conv::Geo;

/// Channels a block (one vector).
const CB: usize = 8;
/// Staged pixels of a block's window (32 bytes each: 32 KB). Past it the plane kernel
/// measured as fast here.
const MAX_STAGE: usize = 1024;
/// Taps a kernel may have.
const MAX_TAPS: usize = 64;
/// Output pixels summed at once.
const GROUP: usize = 8;

std::thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { staged: Vec::new(), out: Vec::new(), at: Vec::new(), bases: Vec::new() })
    };
}

struct Scratch {
    /// The staged window: `[hs][ws]` pixels of eight floats.
    staged: Vec<__m256>,
    /// The block's output pixels, `⌈oh·ow/8⌉·8` of eight floats.
    out: Vec<__m256>,
    /// Each input pixel's place in the window (`usize::MAX`: outside it).
    at: Vec<usize>,
    /// Each output pixel's first tap's place in the window (the last one repeated to a
    /// whole group).
    bases: Vec<usize>,
}

/// Rows and columns of the staged window: every input pixel an output's taps read.
fn window(g: &Geo) -> Option<(usize, usize)> {
    let ok = g.g == g.c
        && g.oc == g.c
        && g.c > 1
        && g.kh >= 1
        && g.kw >= 1
        && g.kh.checked_mul(g.kw)? <= MAX_TAPS
        && g.sh >= 1
        && g.sw >= 1
        && g.dh >= 1
        && g.dw >= 1
        && g.pt >= 0
        && g.pl >= 0
        && g.h > 0
        && g.w > 0
        && g.oh > 0
        && g.ow > 0;
    if !ok {
        return None;
    }
    let hs = (g.oh - 1).checked_mul(g.sh)? + (g.kh - 1).checked_mul(g.dh)? + 1;
    let ws = (g.ow - 1).checked_mul(g.sw)? + (g.kw - 1).checked_mul(g.dw)? + 1;
    (hs.checked_mul(ws)? <= MAX_STAGE).then_some((hs, ws))
}

/// Whether this kernel takes the depthwise conv `g` (the caller checked AVX2 and FMA).
pub(super) fn fits(g: &Geo) -> bool {
    window(g).is_some()
}

/// The depthwise conv of `g` over the whole batch; the caller checked AVX2 and FMA, `fits`
/// and the slice lengths (`x`: `n·c` planes of `h·w`; `y`: `n·c` planes of `oh·ow`; the
/// weights `c·kh·kw`).
pub(super) fn depthwise(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    let Some((hs, ws)) = window(g) else { return };
    super::dispatch::taken();
    crate::paths::note(crate::paths::Path::DepthwiseF32ChannelsLast);
    let out_plane = g.oh * g.ow;
    let work = (g.n * g.c * out_plane * g.kh * g.kw) as u64;
    crate::par::par_pieces(
        &mut y[..g.n * g.c * out_plane],
        out_plane,
        work,
        |at, yp| {
            let p0 = at / out_plane;
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                let Scratch {
                    staged,
                    out,
                    at,
                    bases,
                } = &mut *s;
                staged.clear();
                // SAFETY: AVX (the caller checked AVX2) for the zero vector.
                let z = unsafe { _mm256_setzero_ps() };
                // Zeros: the border, which no block writes.
                staged.resize(hs * ws, z);
                out.resize(out_plane.div_ceil(GROUP) * GROUP, z);
                // Places computed once a call (a division each; per block they cost more
                // than a 7×7 block's sums).
                let (pt, pl) = (g.pt as usize, g.pl as usize);
                at.clear();
                at.extend((0..g.h * g.w).map(|p| {
                    let (r, col) = (p / g.w + pt, p % g.w + pl);
                    if r < hs && col < ws {
                        r * ws + col
                    } else {
                        usize::MAX
                    }
                }));
                bases.clear();
                bases.extend((0..out_plane.div_ceil(GROUP) * GROUP).map(|p| {
                    let p = p.min(out_plane - 1);
                    (p / g.ow) * g.sh * ws + (p % g.ow) * g.sw
                }));
                // SAFETY: AVX2 and FMA (the caller's contract); the buffers were sized
                // above for the window and the output pixels.
                unsafe { planes(g, gm, x, yp, p0, ws, (staged, out), (at, bases)) };
            });
        },
    );
}

/// Output planes `p0..` (`yp` holds whole planes; plane `n·C + c`), block by block.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn planes(
    g: &Geo,
    gm: &Gemm<'_>,
    x: &[f32],
    yp: &mut [f32],
    p0: usize,
    ws: usize,
    (staged, out): (&mut [__m256], &mut [__m256]),
    (at, bases): (&[usize], &[usize]),
) {
    let (plane, out_plane, k) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let p1 = p0 + yp.len() / out_plane;
    // Staged offset of each tap (reference order) and of each output pixel.
    let mut taps = [0usize; MAX_TAPS];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            taps[ky * g.kw + kx] = ky * g.dh * ws + kx * g.dw;
        }
    }
    let taps = &taps[..k];
    let (vlo, vhi) = (_mm256_set1_ps(gm.lo), _mm256_set1_ps(gm.hi));
    let mut b = p0;
    while b < p1 {
        let c = b % g.c;
        // The block's channels stay within one image.
        let cn = CB.min(g.c - c).min(p1 - b);
        // Weights and biases, lane = channel (channels past cn: zeros, outputs dropped).
        let mut wv = [_mm256_setzero_ps(); MAX_TAPS];
        let mut wt = [[0f32; CB]; MAX_TAPS];
        for ch in 0..cn {
            for (t, row) in wt.iter_mut().enumerate().take(k) {
                row[ch] = gm.w[(c + ch) * k + t];
            }
        }
        for (v, row) in wv.iter_mut().zip(&wt).take(k) {
            *v = _mm256_loadu_ps(row.as_ptr());
        }
        let mut bias = [0f32; CB];
        for (ch, v) in bias.iter_mut().enumerate().take(cn) {
            *v = gm.bias.map_or(0.0, |bs| bs[c + ch]);
        }
        let vb = _mm256_loadu_ps(bias.as_ptr());
        stage(g, &x[b * plane..], cn, at, staged);
        // Eight output pixels at a time (the last group repeats its last pixel).
        let sp = staged.as_ptr();
        for (o, base) in bases.chunks_exact(GROUP).enumerate() {
            let mut acc = [vb; GROUP];
            for (&t, &w) in taps.iter().zip(&wv) {
                for (a, &at) in acc.iter_mut().zip(base) {
                    // SAFETY: every tap of every output lies in the window (`window`).
                    *a = _mm256_fmadd_ps(*sp.add(at + t), w, *a);
                }
            }
            for (d, a) in out[o * GROUP..(o + 1) * GROUP].iter_mut().zip(&acc) {
                *d = _mm256_min_ps(_mm256_max_ps(*a, vlo), vhi);
            }
        }
        to_planes(out, out_plane, cn, &mut yp[(b - p0) * out_plane..]);
        b += cn;
    }
}

/// The first `cn` planes of `x` (`h·w` floats each) into the staged window's interior:
/// input pixel `p` at `at[p]` (`usize::MAX`: outside the window, read by no output).
#[target_feature(enable = "avx2,fma")]
unsafe fn stage(g: &Geo, x: &[f32], cn: usize, at: &[usize], staged: &mut [__m256]) {
    let plane = g.h * g.w;
    let mut p0 = 0;
    while p0 < plane {
        let n = CB.min(plane - p0);
        let mut rows = [_mm256_setzero_ps(); CB];
        for (r, v) in rows.iter_mut().enumerate().take(cn) {
            let from = r * plane + p0;
            *v = if from + CB <= x.len() {
                // SAFETY: 8 floats inside `x` (past this plane: the next one's, dropped).
                _mm256_loadu_ps(x.as_ptr().add(from))
            } else {
                let mut t = [0f32; CB];
                t[..n].copy_from_slice(&x[from..from + n]);
                _mm256_loadu_ps(t.as_ptr())
            };
        }
        let px = super::avx2::transpose8_regs(rows);
        for (v, &to) in px.iter().zip(&at[p0..p0 + n]) {
            if let Some(d) = staged.get_mut(to) {
                *d = *v;
            }
        }
        p0 += n;
    }
}

/// The block's output pixels into the first `cn` planes of `out_plane` floats of `y`.
#[target_feature(enable = "avx2,fma")]
unsafe fn to_planes(out: &[__m256], out_plane: usize, cn: usize, y: &mut [f32]) {
    let mut p0 = 0;
    while p0 < out_plane {
        let n = CB.min(out_plane - p0);
        let mut rows = [_mm256_setzero_ps(); CB];
        rows[..n].copy_from_slice(&out[p0..p0 + n]);
        let ch = super::avx2::transpose8_regs(rows);
        for (r, v) in ch.iter().enumerate().take(cn) {
            let at = r * out_plane + p0;
            if n == CB {
                // SAFETY: 8 floats of plane r, inside `y`.
                _mm256_storeu_ps(y.as_mut_ptr().add(at), *v);
            } else {
                let mut t = [0f32; CB];
                _mm256_storeu_ps(t.as_mut_ptr(), *v);
                y[at..at + n].copy_from_slice(&t[..n]);
            }
        }
        p0 += n;
    }
}

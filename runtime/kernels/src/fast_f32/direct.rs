//! One-group f32 convs with few output channels (≤ `OC_MAX`) and row stride 1, such as
//! Basic Pitch's single-channel 3×7 and 3×39 filters: the im2col path would copy
//! as many patch elements as it multiplies. Here each output row is computed a tile of 16
//! columns at a time straight from the input rows, the tile's accumulators (one per output
//! channel, 16 lanes) held across every tap; the columns whose window leaves the row take
//! the taps one output at a time.
//!
//! Every output gets the bias, then the in-bounds taps in the reference's order (input
//! channel, kernel row, kernel column), each a separate multiply and add: the operations
//! of `conv::conv_f32`, so the same bits. (Loops the compiler vectorizes, compiled with
//! AVX2 where present.)

use crate::conv::Geo;

use super::Gemm;

/// Most output channels this path takes.
pub(super) const OC_MAX: usize = 4;
/// Smallest patch this path takes (smaller ones: the im2col tiles copy little).
pub(super) const K_MIN: usize = 32;
/// Columns per tile.
const T: usize = 16;

/// Whether `conv` takes a one-group conv of `g` with patches of `k`. Strided rows stay on
/// the im2col GEMM: besides the gather, its lane-parallel sums are the more accurate on
/// long filters (Basic Pitch's 256-tap, stride-2 CQT filters: its outputs stay within
/// 2e-7 of ONNX Runtime's through the GEMM, 5e-5 with the reference's sequential sums).
pub(super) fn fits(g: &Geo, k: usize) -> bool {
    g.g == 1 && g.sw == 1 && g.pl >= 0 && g.oc <= OC_MAX && k >= K_MIN && g.ow >= T
}

/// The conv of `g`; the caller checked the slice lengths and `fits`.
pub(super) fn conv(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    crate::fast::vectorized(
        #[inline(always)]
        || match g.oc {
            1 => body::<1>(g, gm, x, y),
            2 => body::<2>(g, gm, x, y),
            3 => body::<3>(g, gm, x, y),
            _ => body::<4>(g, gm, x, y),
        },
    );
}

#[inline(always)]
fn body<const R: usize>(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    let (plane, pix) = (g.h * g.w, g.oh * g.ow);
    let k = gm.k;
    let span = (g.kw - 1) * g.dw;
    let sw = g.sw;
    // Output columns whose whole window is inside the row: ox·sw − pl ≥ 0 and
    // ox·sw − pl + span ≤ w − 1.
    let a = (g.pl as usize).div_ceil(sw).min(g.ow);
    let last = g.w as isize - 1 + g.pl - span as isize;
    let b = if last < 0 {
        a
    } else {
        (last as usize / sw + 1).clamp(a, g.ow)
    };
    let bias: [f32; R] = core::array::from_fn(|r| gm.bias.map_or(0.0, |bv| bv[r]));
    for n in 0..g.n {
        let xn = &x[n * g.c * plane..(n + 1) * g.c * plane];
        for oy in 0..g.oh {
            // The kernel rows inside the image for this output row.
            let rows = |ky: usize| {
                let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                (iy >= 0 && iy < g.h as isize).then_some(iy as usize)
            };
            let mut ox = a;
            while ox + T <= b {
                let mut acc = [[0f32; T]; R];
                for (r, row) in acc.iter_mut().enumerate() {
                    *row = [bias[r]; T];
                }
                for c in 0..g.c {
                    let xc = &xn[c * plane..(c + 1) * plane];
                    for ky in 0..g.kh {
                        let Some(iy) = rows(ky) else { continue };
                        let xrow = &xc[iy * g.w..(iy + 1) * g.w];
                        let tap0 = (c * g.kh + ky) * g.kw;
                        for kx in 0..g.kw {
                            let at = ox * sw + kx * g.dw - g.pl as usize;
                            let src: &[f32; T] = xrow[at..at + T].try_into().unwrap();
                            for (r, row) in acc.iter_mut().enumerate() {
                                let wv = gm.w[r * k + tap0 + kx];
                                for (s, &v) in row.iter_mut().zip(src) {
                                    *s += v * wv;
                                }
                            }
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    let at = (n * g.oc + r) * pix + oy * g.ow + ox;
                    for (d, &v) in y[at..at + T].iter_mut().zip(row) {
                        *d = v.max(gm.lo).min(gm.hi);
                    }
                }
                ox += T;
            }
            // Border columns and the interior's last partial tile, one output at a time.
            for ox in (0..a).chain(ox..g.ow) {
                for r in 0..R {
                    let mut s = bias[r];
                    for c in 0..g.c {
                        let xc = &xn[c * plane..(c + 1) * plane];
                        for ky in 0..g.kh {
                            let Some(iy) = rows(ky) else { continue };
                            for kx in 0..g.kw {
                                let ix = (ox * sw) as isize - g.pl + (kx * g.dw) as isize;
                                if ix >= 0 && ix < g.w as isize {
                                    let wv = gm.w[r * k + (c * g.kh + ky) * g.kw + kx];
                                    s += xc[iy * g.w + ix as usize] * wv;
                                }
                            }
                        }
                    }
                    y[(n * g.oc + r) * pix + oy * g.ow + ox] = s.max(gm.lo).min(gm.hi);
                }
            }
        }
    }
}

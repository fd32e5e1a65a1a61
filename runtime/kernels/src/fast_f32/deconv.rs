//! f32 ConvTranspose as a GEMM and a col2im scatter.
//!
//! Per group, the products of every input pixel with every (output channel, tap) are one
//! GEMM: `cols[(o, ky, kx), p] = Σ_ic W[ic, o, ky, kx] · X[ic, p]`, where `W` (stored
//! `[ic][oc/g][kh][kw]`) is read transposed in place (`kernel::Lhs` with row stride 1) and
//! `X`'s planes are the contiguous rows of `B`. The columns are computed a tile of input
//! pixels and a block of rows at a time into a stack buffer, then each row is added to the
//! output pixels its tap lands on (`oy = iy·sh − pt + ky·dh`, `ox = ix·sw − pl + kx·dw`):
//! a contiguous run for stride 1, a strided one otherwise. The output starts at the bias;
//! the clamp comes last. Sums are those of the reference in another order.

use cairn_core::op::conv as p;
use cairn_core::{ExecError, OpCall, TensorMut};

use super::kernel::{gemm, Dims, Dst, Lhs, Rhs, Start};
use crate::conv::{geo, Geo};
use crate::util::f32_clamp;

/// Floats in the column buffer (64 KB on the stack).
const COLS: usize = 16384;
/// Most input pixels per tile.
const TILE_PIX: usize = 512;

/// f32 ConvTranspose, or `None` when the op is not this path's case.
pub fn conv_transpose_f32(
    call: &OpCall<'_>,
    out: &mut TensorMut<'_>,
) -> Option<Result<(), ExecError>> {
    let g = geo(call, out).ok()?;
    let x = call.req(0).ok()?.f32s().ok()?;
    let w = call.req(1).ok()?.f32s().ok()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.f32s().ok()?),
        None => None,
    };
    let (lo, hi) = f32_clamp(call.param(p::T_ACT_LO), call.param(p::T_ACT_HI));
    let cg = g.c.checked_div(g.g)?;
    let ocg = g.oc.checked_div(g.g)?;
    let kk = g.kh * g.kw;
    let rows = ocg * kk;
    let fits = g.sh > 0
        && g.sw > 0
        && rows > 0
        && cg * g.g == g.c
        && ocg * g.g == g.oc
        && x.len() >= g.n * g.c * g.h * g.w
        && w.len() >= g.c * rows
        && bias.is_none_or(|b| b.len() >= g.oc)
        && out.data.len() >= 4 * g.n * g.oc * g.oh * g.ow;
    if !fits {
        return None;
    }
    let y = match out.f32s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    run(&g, x, w, bias, y);
    let opix = g.oh * g.ow;
    crate::fast::vectorized(
        #[inline(always)]
        || {
            for v in y[..g.n * g.oc * opix].iter_mut() {
                *v = v.max(lo).min(hi);
            }
        },
    );
    super::dispatch::taken();
    Some(Ok(()))
}

fn run(g: &Geo, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (cg, ocg) = (g.c / g.g, g.oc / g.g);
    let kk = g.kh * g.kw;
    let rows = ocg * kk;
    let (plane, opix) = (g.h * g.w, g.oh * g.ow);
    // Pixels per tile (a multiple of 16 unless the image is smaller), then rows per block.
    let tp = plane
        .min(TILE_PIX)
        .min((COLS / rows.min(COLS / 16)) / 16 * 16)
        .max(1);
    let rb = (COLS / tp).min(rows);
    let mut cols = [0f32; COLS];
    for n in 0..g.n {
        let yn = &mut y[n * g.oc * opix..(n + 1) * g.oc * opix];
        for (o, plane_y) in yn.chunks_exact_mut(opix).enumerate() {
            plane_y.fill(bias.map_or(0.0, |b| b[o]));
        }
        for grp in 0..g.g {
            let xg = &x[(n * g.c + grp * cg) * plane..(n * g.c + (grp + 1) * cg) * plane];
            let wg = &w[grp * cg * rows..(grp + 1) * cg * rows];
            let yg = &mut yn[grp * ocg * opix..(grp + 1) * ocg * opix];
            let mut p0 = 0;
            while p0 < plane {
                let np = tp.min(plane - p0);
                let mut r0 = 0;
                while r0 < rows {
                    let nr = rb.min(rows - r0);
                    let a = Lhs {
                        a: &wg[r0..],
                        rs: 1,
                        cs: rows,
                    };
                    let b = Rhs {
                        b: &xg[p0..],
                        bs: plane,
                    };
                    let mut c = Dst {
                        c: &mut cols[..nr * np],
                        rs: np,
                        c0: 0,
                    };
                    let d = Dims {
                        m: nr,
                        n: np,
                        k: cg,
                        start: Start::Zero,
                        clamp: None,
                    };
                    gemm(a, b, &mut c, d);
                    crate::fast::vectorized(
                        #[inline(always)]
                        || scatter(g, &cols[..nr * np], r0, p0, np, yg),
                    );
                    r0 += nr;
                }
                p0 += np;
            }
        }
    }
}

/// Add the column rows `r0..` (row `r` = output channel `r / kk`, tap `r % kk`) of input
/// pixels `p0..p0 + np` to the output planes `yg` of the group.
#[inline(always)]
fn scatter(g: &Geo, cols: &[f32], r0: usize, p0: usize, np: usize, yg: &mut [f32]) {
    let kk = g.kh * g.kw;
    let opix = g.oh * g.ow;
    for (i, col) in cols.chunks_exact(np).enumerate() {
        let r = r0 + i;
        let (o, tap) = (r / kk, r % kk);
        let (ky, kx) = (tap / g.kw, tap % g.kw);
        let yo = &mut yg[o * opix..(o + 1) * opix];
        // Walk the tile's pixels a segment (one input row) at a time.
        let (mut iy, mut ix) = (p0 / g.w, p0 % g.w);
        let mut j = 0;
        while j < np {
            let seg = (g.w - ix).min(np - j);
            let oy = (iy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
            if oy >= 0 && (oy as usize) < g.oh {
                let yrow = &mut yo[oy as usize * g.ow..(oy as usize + 1) * g.ow];
                // ox = (ix + s)·sw + kx·dw − pl for the s-th pixel of the segment.
                let off = (ix * g.sw + kx * g.dw) as isize - g.pl;
                let (lo, hi) = crate::util::inside(off, g.sw, g.ow, seg);
                if hi > lo {
                    let src = &col[j + lo..j + hi];
                    let a = (lo as isize * g.sw as isize + off) as usize;
                    if g.sw == 1 {
                        for (d, &v) in yrow[a..a + hi - lo].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in yrow[a..].iter_mut().step_by(g.sw).zip(src) {
                            *d += v;
                        }
                    }
                }
            }
            j += seg;
            ix = 0;
            iy += 1;
        }
    }
}

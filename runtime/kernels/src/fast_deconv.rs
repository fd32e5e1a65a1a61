//! int8 ConvTranspose on hosts, bit-exact with the reference (`conv::conv_transpose_i8`;
//! tested in `tests/exact.rs`).
//!
//! The reference visits every (output pixel, input channel, tap) and tests each tap's
//! stride divisibility: 0.06 GMAC/s. Here an output row is built from the input rows that
//! reach it. For one tap column `kx`, the output columns it writes are
//! `ox = ix·sw − pl + kx·dw`: one residue class modulo `sw`, consecutive within it. So the
//! row's int32 accumulators are kept split by phase (`ox mod sw`), each tap adds
//! `(x − zx)·w` into a contiguous run of one phase (a loop the compiler vectorizes), and
//! the row is requantized once with the reference's `requantize`. Integer sums do not
//! depend on their order, so the bytes equal the reference's.
//!
//! Accumulators for `OC_BLOCK` output channels share each converted input row. Rows wider
//! than `MAX_OW` and cores without the hosts' stack to spare use the reference.

use cairn_core::op::conv as p;
use cairn_core::quant::requantize;
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::conv::{geo, Geo};
use crate::fast_conv_rows::{Operands, OC_BLOCK};

/// Widest output row this path takes (the accumulators live on the stack).
pub(crate) const MAX_OW: usize = 1024;
/// Widest kernel this path takes.
const MAX_KW: usize = 16;

/// Input columns `ix0..ix1` of one tap column and where the first lands in the row's
/// phase-split accumulators; `None` when none lands inside the row.
type Span = Option<(usize, usize, usize)>;

/// int8 ConvTranspose, or `None` when the op is not this path's case.
pub fn conv_transpose_i8(
    call: &OpCall<'_>,
    out: &mut TensorMut<'_>,
) -> Option<Result<(), ExecError>> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return None;
    }
    let g = geo(call, out).ok()?;
    if g.ow > MAX_OW || g.w > MAX_OW || g.kw > MAX_KW || g.ow == 0 || g.oh == 0 {
        return None;
    }
    Some(run(call, out, &g))
}

fn run(call: &OpCall<'_>, out: &mut TensorMut<'_>, g: &Geo) -> Result<(), ExecError> {
    let q = Operands::of(call, out, (p::T_ACT_LO, p::T_ACT_HI))?;
    let y = out.i8s_mut()?;
    // Each tap column's span depends on kx alone.
    let mut spans = [None; MAX_KW];
    for (kx, sp) in spans.iter_mut().enumerate().take(g.kw) {
        *sp = tap_span(g, kx);
    }
    let taps = (g.kh * g.kw).div_ceil(g.sh * g.sw) as u64;
    let work = (g.n * g.oc * g.oh * g.ow) as u64 * (g.c / g.g) as u64 * taps;
    crate::fast_conv_rows::par_blocks(g, work, y, |blocks, piece, y0| {
        let mut acc = [[0i32; MAX_OW]; OC_BLOCK];
        let mut xr = [0i32; MAX_OW];
        for (n, grp, ocl, nb) in blocks {
            for oy in 0..g.oh {
                let rows = Rows {
                    g,
                    q: &q,
                    spans: &spans,
                    at: (n, grp, ocl, nb, oy),
                    y0,
                };
                crate::fast::deconv_row(&rows, &mut acc, &mut xr, piece);
            }
        }
    });
    Ok(())
}

/// One output row of one block of output channels: what [`row_and_store`] reads.
pub(crate) struct Rows<'a> {
    g: &'a Geo,
    q: &'a Operands<'a>,
    spans: &'a [Span; MAX_KW],
    /// (batch item, group, first output channel in the group, channels, output row).
    at: (usize, usize, usize, usize, usize),
    /// Where the `y` given to [`row_and_store`] starts in the whole output.
    y0: usize,
}

/// Accumulate one output row for a block of output channels and requantize it into `y`
/// (the output from `r.y0` on). Inlined into `fast::deconv_row`, which compiles it with AVX2 where
/// the CPU has it; the buffers are parameters (not captured), so the compiler knows they
/// do not alias and vectorizes the loops.
#[inline(always)]
pub(crate) fn row_and_store(
    r: &Rows<'_>,
    acc: &mut [[i32; MAX_OW]; OC_BLOCK],
    xr: &mut [i32; MAX_OW],
    y: &mut [i8],
) {
    let (g, (n, grp, ocl, nb, oy)) = (r.g, r.at);
    row(g, r.q, r.spans, r.at, acc, xr);
    let ocg = g.oc / g.g;
    for (b, a) in acc.iter().enumerate().take(nb) {
        let oc = grp * ocg + ocl + b;
        let base = ((n * g.oc + oc) * g.oh + oy) * g.ow - r.y0;
        store_row(g, r.q, oc, a, &mut y[base..base + g.ow]);
    }
}

/// Where phase `ph` (output columns `ox ≡ ph mod sw`) starts in a row's accumulators.
fn phase_start(g: &Geo, ph: usize) -> usize {
    // Phases 0..ph hold ceil((ow - k) / sw) columns each.
    (0..ph).map(|k| (g.ow - k).div_ceil(g.sw)).sum()
}

/// The accumulators of output row `oy` for output channels `ocl..ocl + nb` of group `grp`
/// (of batch item `n`).
#[inline(always)]
fn row(
    g: &Geo,
    q: &Operands<'_>,
    spans: &[Span; MAX_KW],
    (n, grp, ocl, nb, oy): (usize, usize, usize, usize, usize),
    acc: &mut [[i32; MAX_OW]; OC_BLOCK],
    xr: &mut [i32; MAX_OW],
) {
    let (cg, ocg) = (g.c / g.g, g.oc / g.g);
    let ksz = g.kh * g.kw;
    for (b, a) in acc.iter_mut().enumerate().take(nb) {
        let oc = grp * ocg + ocl + b;
        a[..g.ow].fill(q.bias.map_or(0, |bv| bv[oc]));
    }
    for ky in 0..g.kh {
        let ny = oy as isize + g.pt - (ky * g.dh) as isize;
        if ny < 0 || ny % g.sh as isize != 0 || ny / g.sh as isize >= g.h as isize {
            continue;
        }
        let iy = (ny / g.sh as isize) as usize;
        for icl in 0..cg {
            let ic = grp * cg + icl;
            let xb = ((n * g.c + ic) * g.h + iy) * g.w;
            for (d, &s) in xr[..g.w].iter_mut().zip(&q.x[xb..xb + g.w]) {
                *d = s as i32 - q.zx;
            }
            for (b, a) in acc.iter_mut().enumerate().take(nb) {
                let wb = (ic * ocg + ocl + b) * ksz + ky * g.kw;
                for (kx, span) in spans.iter().enumerate().take(g.kw) {
                    let wv = q.w[wb + kx] as i32;
                    if let Some((ix0, ix1, at)) = *span {
                        let dst = &mut a[at..at + (ix1 - ix0)];
                        for (d, &s) in dst.iter_mut().zip(&xr[ix0..ix1]) {
                            *d = d.wrapping_add(s * wv);
                        }
                    }
                }
            }
        }
    }
}

/// For tap column `kx`: the input columns `ix0..ix1` that land inside the output row, and
/// where the first one's output column sits in the phase-split accumulators.
fn tap_span(g: &Geo, kx: usize) -> Span {
    // ox = ix·sw + off, off = kx·dw − pl.
    let off = (kx * g.dw) as isize - g.pl;
    let sw = g.sw as isize;
    // First ix with ox >= 0, last with ox < ow.
    let ix0 = if off >= 0 { 0 } else { (-off + sw - 1) / sw };
    let ix1 = ((g.ow as isize - off + sw - 1) / sw).min(g.w as isize);
    if ix1 <= ix0 {
        return None;
    }
    let ox0 = ix0 * sw + off;
    let ph = (ox0 % sw) as usize;
    Some((
        ix0 as usize,
        ix1 as usize,
        phase_start(g, ph) + (ox0 / sw) as usize,
    ))
}

/// Requantize one row's accumulators (phase-split) into the output row: first in phase
/// order (a contiguous loop the compiler vectorizes), then interleaved into place.
#[inline(always)]
fn store_row(g: &Geo, q: &Operands<'_>, oc: usize, acc: &[i32; MAX_OW], y: &mut [i8]) {
    let scale = q.scales[oc];
    stack_buf!(phased: i8, g.ow, 256, MAX_OW);
    for (t, &a) in phased[..g.ow].iter_mut().zip(&acc[..g.ow]) {
        *t = requantize(a, scale, q.zy, q.lo, q.hi) as i8;
    }
    if g.sw == 1 {
        y.copy_from_slice(&phased[..g.ow]);
        return;
    }
    if g.sw == 2 {
        // Phase 0 holds ceil(ow / 2) columns, phase 1 the rest.
        let (even, odd) = phased[..g.ow].split_at(g.ow.div_ceil(2));
        for (pair, (&e, &o)) in y.chunks_exact_mut(2).zip(even.iter().zip(odd)) {
            pair[0] = e;
            pair[1] = o;
        }
        if g.ow % 2 == 1 {
            y[g.ow - 1] = even[even.len() - 1];
        }
        return;
    }
    let mut at = 0;
    for ph in 0..g.sw.min(g.ow) {
        for ox in (ph..g.ow).step_by(g.sw) {
            y[ox] = phased[at];
            at += 1;
        }
    }
}

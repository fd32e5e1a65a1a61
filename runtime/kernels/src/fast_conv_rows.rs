//! int8 Conv with wide kernels (more taps than the im2col and interior paths of `fast/`
//! take: audio models' 1×39 or 3×39 filters) on hosts, bit-exact with the reference
//! (`conv::conv_i8`; tested in `tests/exact_wide.rs`).
//!
//! An output row is built from the input rows its taps read. Each input row is copied
//! once, with the zero point subtracted, into a zero-padded row split by phase
//! (`t mod sw` of the padded column `t = ox·sw + kx·dw`), so every tap adds
//! `(x − zx)·w` over a contiguous run (a loop the compiler vectorizes); padding
//! contributes 0, as the reference's skipped taps do. Integer sums do not depend on their
//! order, so the row requantized with the reference's `requantize` is the same bytes.

use cairn_core::layout::Layout;
use cairn_core::op::conv as p;
use cairn_core::quant::requantize;
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::conv::{geo, Geo};
use crate::util::qp;

/// Widest padded input row and output row this path takes (stack buffers).
pub(crate) const MAX_ROW: usize = 2048;
/// Output channels accumulated together.
pub(crate) const OC_BLOCK: usize = 4;

/// int8 Conv for what the other fast paths leave to the reference, or `None`.
pub fn conv_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return None;
    }
    let g = geo(call, out).ok()?;
    // Output columns are taken in tiles whose padded input span fits the row buffer.
    let reach = (g.kw - 1).checked_mul(g.dw)? + 1;
    let tile = (MAX_ROW.checked_sub(reach)? / g.sw + 1).min(MAX_ROW);
    // A tile must be worth its padded copy: with long strides (a strided filter bank)
    // the copy would outweigh the taps, and the reference does better.
    // A folded PRelu (two multipliers per channel: `conv_multipliers`) takes the reference
    // here: this path's output stage has one.
    if call.req(1).ok()?.info.layout != Layout::Plain
        || call.req(3).ok()?.info.numel() != g.oc
        || g.oh == 0
        || g.ow == 0
        || g.sw > 4
        || tile < 32.min(g.ow)
    {
        return None;
    }
    Some(run(call, out, &g, tile))
}

/// What the row-wise int8 paths (this one and `fast_deconv`) read of a conv op.
pub(crate) struct Operands<'a> {
    pub(crate) x: &'a [i8],
    pub(crate) w: &'a [i8],
    pub(crate) bias: Option<&'a [i32]>,
    pub(crate) scales: &'a [f32],
    pub(crate) zx: i32,
    pub(crate) zy: i32,
    pub(crate) lo: i32,
    pub(crate) hi: i32,
}

impl<'a> Operands<'a> {
    /// The op's inputs, zero points and the activation clamp in param words `act`.
    pub(crate) fn of(
        call: &OpCall<'a>,
        out: &TensorMut<'_>,
        act: (usize, usize),
    ) -> Result<Operands<'a>, ExecError> {
        let xt = call.req(0)?;
        Ok(Operands {
            x: xt.i8s()?,
            w: call.req(1)?.i8s()?,
            bias: match call.input(2) {
                Some(b) => Some(b.i32s()?),
                None => None,
            },
            scales: call.req(3)?.f32s()?,
            zx: qp(&xt.info).1,
            zy: qp(&out.info).1,
            lo: call.param(act.0),
            hi: call.param(act.1),
        })
    }
}

/// Every (batch item, group, first output channel in the group, channel count) block of
/// at most `OC_BLOCK` output channels of a conv.
pub(crate) fn blocks(g: &Geo) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
    let ocg = g.oc / g.g;
    (0..g.n).flat_map(move |n| {
        (0..g.g).flat_map(move |grp| {
            (0..ocg)
                .step_by(OC_BLOCK)
                .map(move |ocl| (n, grp, ocl, OC_BLOCK.min(ocg - ocl)))
        })
    })
}

/// One output row for a block of output channels: what [`row_and_store`] reads.
pub(crate) struct Rows<'a> {
    g: &'a Geo,
    q: &'a Operands<'a>,
    /// The output columns of this tile: `ox0..ox0 + ow`.
    ox0: usize,
    ow: usize,
    /// (batch item, group, first output channel in the group, channels, output row).
    at: (usize, usize, usize, usize, usize),
    /// Where the `y` given to [`row_and_store`] starts in the whole output.
    y0: usize,
}

fn run(call: &OpCall<'_>, out: &mut TensorMut<'_>, g: &Geo, tile: usize) -> Result<(), ExecError> {
    let q = Operands::of(call, out, (p::ACT_LO, p::ACT_HI))?;
    let y = out.i8s_mut()?;
    let work = (g.n * g.oc * g.oh * g.ow) as u64 * (g.c / g.g * g.kh * g.kw) as u64;
    par_blocks(g, work, y, |blocks, piece, y0| {
        let mut acc = [[0i32; MAX_ROW]; OC_BLOCK];
        let mut xr = [0i32; MAX_ROW];
        for (n, grp, ocl, nb) in blocks {
            for oy in 0..g.oh {
                for ox0 in (0..g.ow).step_by(tile) {
                    let rows = Rows {
                        g,
                        q: &q,
                        ox0,
                        ow: tile.min(g.ow - ox0),
                        at: (n, grp, ocl, nb, oy),
                        y0,
                    };
                    crate::fast::conv_row(&rows, &mut acc, &mut xr, piece);
                }
            }
        }
    });
    Ok(())
}

/// The blocks of `blocks(g)` (all output rows of each) split across the lent threads in
/// contiguous ranges: `f(the range's blocks, its piece of y, where the piece starts)`;
/// a range's outputs are one contiguous piece of `y` (`[n][oc][oh][ow]`).
pub(crate) fn par_blocks(
    g: &Geo,
    work: u64,
    y: &mut [i8],
    f: impl Fn(&mut dyn Iterator<Item = (usize, usize, usize, usize)>, &mut [i8], usize) + Sync,
) {
    let (ocg, plane) = (g.oc / g.g, g.oh * g.ow);
    let per_group = ocg.div_ceil(OC_BLOCK);
    let nblocks = g.n * g.g * per_group;
    let parts = crate::par::parts_over(work, nblocks);
    let first = |part: usize| crate::par::split(nblocks, parts, 1, part).start;
    // Block b is the b-th of `blocks(g)`: (n, grp, j) → channels grp·ocg + j·OC_BLOCK….
    let start = |b: usize| {
        if b >= nblocks {
            return g.n * g.oc * plane;
        }
        let (n, grp, j) = (b / (g.g * per_group), b / per_group % g.g, b % per_group);
        (n * g.oc + grp * ocg + j * OC_BLOCK) * plane
    };
    crate::par::run_pieces(
        y,
        parts,
        |part| start(first(part)),
        |part, piece| {
            let (b0, b1) = (first(part), first(part + 1));
            let mut mine = blocks(g).skip(b0).take(b1 - b0);
            f(&mut mine, piece, start(b0));
        },
    );
}

/// Accumulate one output row for a block of output channels and requantize it into `y`
/// (the output from `r.y0` on). Inlined into `fast::conv_row`, which compiles it with AVX2 where
/// the CPU has it; the buffers are parameters, so the compiler knows they do not alias.
#[inline(always)]
pub(crate) fn row_and_store(
    r: &Rows<'_>,
    acc: &mut [[i32; MAX_ROW]; OC_BLOCK],
    xr: &mut [i32; MAX_ROW],
    y: &mut [i8],
) {
    let (g, q, ow) = (r.g, r.q, r.ow);
    let (n, grp, ocl, nb, oy) = r.at;
    let (cg, ocg) = (g.c / g.g, g.oc / g.g);
    for (b, a) in acc.iter_mut().enumerate().take(nb) {
        let oc = grp * ocg + ocl + b;
        a[..ow].fill(q.bias.map_or(0, |bv| bv[oc]));
    }
    // The tile reads padded columns t0.. t0 + padded_w (t = ox·sw + kx·dw).
    let padded_w = (ow - 1) * g.sw + (g.kw - 1) * g.dw + 1;
    // Phase ph of that span starts at phase_at(ph); it holds ceil((padded_w - ph) / sw).
    let phase_at = |ph: usize| -> usize { (0..ph).map(|k| (padded_w - k).div_ceil(g.sw)).sum() };
    for ky in 0..g.kh {
        let iy = (oy * g.sh + ky * g.dh) as isize - g.pt;
        if iy < 0 || iy >= g.h as isize {
            continue;
        }
        for icl in 0..cg {
            let ic = grp * cg + icl;
            let xb = ((n * g.c + ic) * g.h + iy as usize) * g.w;
            phase_split(g, r.ox0 * g.sw, padded_w, &q.x[xb..xb + g.w], q.zx, xr);
            for (b, a) in acc.iter_mut().enumerate().take(nb) {
                let oc = grp * ocg + ocl + b;
                let wb = ((oc * cg + icl) * g.kh + ky) * g.kw;
                for kx in 0..g.kw {
                    let wv = q.w[wb + kx] as i32;
                    let t0 = kx * g.dw;
                    let at = phase_at(t0 % g.sw) + t0 / g.sw;
                    for (d, &s) in a[..ow].iter_mut().zip(&xr[at..at + ow]) {
                        *d = d.wrapping_add(s * wv);
                    }
                }
            }
        }
    }
    for (b, a) in acc.iter().enumerate().take(nb) {
        let oc = grp * ocg + ocl + b;
        let base = ((n * g.oc + oc) * g.oh + oy) * g.ow + r.ox0 - r.y0;
        let scale = q.scales[oc];
        for (o, &v) in y[base..base + ow].iter_mut().zip(&a[..ow]) {
            *o = requantize(v, scale, q.zy, q.lo, q.hi) as i8;
        }
    }
}

/// `x − zx` of one input row into `dst`: padded columns `t0..t0 + padded_w` of the row
/// (`pl` zeros before it, zeros after), split by phase modulo `sw`.
#[inline(always)]
fn phase_split(g: &Geo, t0: usize, padded_w: usize, x: &[i8], zx: i32, dst: &mut [i32; MAX_ROW]) {
    let mut at = 0;
    for ph in 0..g.sw.min(padded_w) {
        for t in (ph..padded_w).step_by(g.sw) {
            let ix = (t0 + t) as isize - g.pl;
            dst[at] = if ix >= 0 && (ix as usize) < g.w {
                x[ix as usize] as i32 - zx
            } else {
                0
            };
            at += 1;
        }
    }
}

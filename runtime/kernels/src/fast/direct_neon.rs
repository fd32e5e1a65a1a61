//! int8 Conv as an implicit GEMM on the Armv8.2 dot product (aarch64 with `std`, CPUs
//! with `sdot`): the design of `direct.rs` (AVX2) with channel quads for `sdot`.
//! One-group convs with up to 256 taps and strides up to 4.
//!
//! The input of each image is copied once into int8 channel quads (`x[4cq..4cq + 4]` of
//! one pixel in one int32), zero-point padded, and split by stride phase: phase
//! `(py, px)` holds padded pixel `(r·sh + py, q·sw + px)` at `(r, q)` of a `hq × wq`
//! plane. Numbering outputs over the phase width (`p = oy·wq + ox`), tap `(ky, kx)` of
//! output `p` is one fixed offset from `p`, so 16 consecutive outputs read 16 consecutive
//! quads (four vectors) whatever the stride. Columns `ox ≥ ow` of that numbering are
//! computed and dropped.
//!
//! The register block is 4 output channels × 16 outputs (16 int32x4 accumulators): per
//! (quad, tap) step, four input vectors and one weight vector (the four channels' quads)
//! feed 16 `sdot` by element (256 MACs). Weights are packed per call in that order
//! (block of 4 channels, quad, tap), or once per model with an active `prepack` cache.
//! Sums run on raw int8 values and `bias − zx·Σw` is added once, so padding (the zero
//! point) contributes nothing; int32 lanes cannot overflow (K ≤ 256·C, products ≤ 2^14,
//! and the sums equal the reference's modulo 2^32 in any case). The output stage is
//! `cairn_core::quant::requantize`, so the bytes are the reference's
//! (`tests/exact_neon.rs`, `tests/exact.rs`).
//!
//! On CPUs with i8mm (`paths::i8mm`) the block is `smmla` instead: the quad planes are
//! zipped pairwise into channel octets (`x[8co..8co + 8]` of one pixel in 8 bytes), so 16
//! consecutive outputs at one tap are 8 vectors, each the 2 × 8 operand of two pixels;
//! the weights are packed as the two 2 × 8 operands of a block's four channel rows per
//! (octet, tap). Per step: 8 + 2 loads and 16 `smmla` (512 MACs; `sdot` takes 16 for 256).

extern crate std;
use std::cell::RefCell;
use std::vec::Vec;

use core::arch::aarch64::*;

use super::{Geo, Q};

/// Outputs per micro-kernel tile (four vectors of four).
const PT: usize = 16;
/// Output channels per register block (the four lanes of a weight vector).
const MR: usize = 4;
/// Most taps and largest stride the path takes.
const MAX_TAPS: usize = 256;
const MAX_STRIDE: usize = 4;

std::thread_local! {
    /// Packed input planes, packed weights and step offsets, kept between calls.
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { xp: Vec::new(), xo: Vec::new(), wpk: Vec::new(), steps: Vec::new() })
    };
}

struct Scratch {
    xp: Vec<i32>,
    /// Channel octets (the `smmla` form), zipped from `xp`'s quads.
    xo: Vec<i64>,
    wpk: Vec<i32>,
    steps: Vec<usize>,
}

/// Whether this path takes the conv: one group, the CPU has the dot product, and the
/// geometry fits.
pub(super) fn fits(g: &Geo) -> bool {
    g.g == 1
        && g.kh * g.kw <= MAX_TAPS
        && (1..=MAX_STRIDE).contains(&g.sh)
        && (1..=MAX_STRIDE).contains(&g.sw)
        && g.dh >= 1
        && g.dw >= 1
        && g.pt >= 0
        && g.pl >= 0
        && g.oh > 0
        && g.ow > 0
        && g.c > 0
        && dims(g).is_some()
        && super::neon_dot::available()
}

/// Geometry of one phase plane: `hq × wq` quads, `len` with slack for the last tile.
struct Dims {
    hq: usize,
    wq: usize,
    len: usize,
    tiles: usize,
}

fn dims(g: &Geo) -> Option<Dims> {
    let (pt, pl) = (g.pt as usize, g.pl as usize);
    let hp = (g.h + pt).max((g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1);
    let wp = (g.w + pl).max((g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1);
    let (hq, wq) = (hp.div_ceil(g.sh), wp.div_ceil(g.sw));
    let tiles = (g.oh * wq).div_ceil(PT);
    let max_off = (g.kh - 1) * g.dh / g.sh * wq + (g.kw - 1) * g.dw / g.sw;
    // The last tile reads up to tiles·16 − 1 + max_off; everything else is inside.
    let len = (hq * wq).max(tiles * PT + max_off);
    let quads = g.c.div_ceil(4);
    (quads.checked_mul(g.sh * g.sw)?.checked_mul(len)? <= 1 << 24).then_some(Dims {
        hq,
        wq,
        len,
        tiles,
    })
}

/// Run the conv (all images). The caller checked `fits(g)`.
pub(super) fn conv(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let Some(d) = dims(g) else { return };
    let quads = g.c.div_ceil(4);
    let ntaps = g.kh * g.kw;
    let k_all = g.c * ntaps;
    let set = g.sh * g.sw * d.len;
    let mut taps = [0usize; MAX_TAPS];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let (yy, xx) = (ky * g.dh, kx * g.dw);
            let phase = (yy % g.sh) * g.sw + xx % g.sw;
            taps[ky * g.kw + kx] = phase * d.len + (yy / g.sh) * d.wq + xx / g.sw;
        }
    }
    let taps = &taps[..ntaps];
    let wkey = match q.wp {
        Some((wp, _)) => (wp.as_ptr() as usize, wp.len()),
        None => (q.w.as_ptr() as usize, q.w.len()),
    };
    // `smmla` on channel octets where the CPU has i8mm, else `sdot` on quads.
    let mm = crate::paths::i8mm();
    if mm {
        crate::paths::note(crate::paths::Path::GemmSmmla);
    }
    let octs = g.c.div_ceil(8);
    // Channel groups along K, and int32 of packed weights per (group, tap) step.
    let (groups, step_w) = if mm { (octs, 8) } else { (quads, MR) };
    // A kind of its own: bits 29 and 30 (the x86 keys set bit 31 or neither,
    // `neon_dot.rs` bit 30 alone); bit 28 for the octet packing.
    let kind = (3 << 29) | ((mm as u32) << 28) | ((ntaps as u32) << 16) | (g.oc as u32 & 0xFFFF);
    // Layout: [Σw per channel, packed blocks].
    let build = |v: &mut Vec<i32>| {
        v.clear();
        v.resize(g.oc + g.oc.div_ceil(MR) * groups * ntaps * step_w, 0);
        for (o, ws) in v.iter_mut().enumerate().take(g.oc) {
            *ws = (0..k_all).map(|k| weight(q, k_all, o, k) as i32).sum();
        }
        if mm {
            pack_weights_octets(g, q, octs, &mut v[g.oc..]);
        } else {
            pack_weights(g, q, quads, &mut v[g.oc..]);
        }
    };
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let Scratch { xp, xo, wpk, steps } = &mut *s;
        crate::prepack::with_packed((wkey.0, wkey.1, kind), wpk, build, |packed| {
            let (wsum, wpk) = packed.split_at(g.oc);
            steps.clear();
            steps.extend((0..groups).flat_map(|cg| taps.iter().map(move |&t| cg * set + t)));
            if xp.len() < quads * set {
                xp.resize(quads * set, 0);
            }
            if mm && xo.len() < octs * set {
                xo.resize(octs * set, 0);
            }
            let mut offs = Vec::with_capacity(g.oc);
            offs.extend(wsum.iter().enumerate().map(|(o, &ws)| {
                q.bias
                    .map_or(0, |b| b[o])
                    .wrapping_sub(q.zx.wrapping_mul(ws))
            }));
            let pix = g.oh * g.ow;
            let plane = g.h * g.w;
            for n in 0..g.n {
                let xn = &q.x[n * g.c * plane..(n + 1) * g.c * plane];
                pack_input(g, &d, q.zx as i8, xn, quads, xp);
                if mm {
                    zip_octets(
                        &xp[..quads * set],
                        quads,
                        set,
                        q.zx as i8,
                        &mut xo[..octs * set],
                    );
                }
                let yn = &mut y[n * g.oc * pix..(n + 1) * g.oc * pix];
                let job = Job {
                    g,
                    d: &d,
                    q,
                    offs: &offs,
                    steps,
                    x: if mm {
                        Input::Octets(xo)
                    } else {
                        Input::Quads(xp)
                    },
                    wpk,
                };
                job.run(yn);
            }
        });
    });
}

/// One image's conv once its input and weights are packed.
struct Job<'a> {
    g: &'a Geo,
    d: &'a Dims,
    q: &'a Q<'a>,
    offs: &'a [i32],
    steps: &'a [usize],
    x: Input<'a>,
    wpk: &'a [i32],
}

/// The packed input planes a job reads.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// Channel quads, one int32 a pixel (`sdot`).
    Quads(&'a [i32]),
    /// Channel octets, eight bytes a pixel (`smmla`).
    Octets(&'a [i64]),
}

impl Job<'_> {
    /// Every tile × every block of 4 channels, tiles split across the lent threads.
    fn run(&self, y: &mut [i8]) {
        let (g, d) = (self.g, self.d);
        let pix = g.oh * g.ow;
        let (x_len, step_w) = match self.x {
            Input::Quads(x) => (x.len(), MR),
            Input::Octets(x) => (x.len(), 8),
        };
        let blk_len = self.steps.len() * step_w;
        assert!(self.wpk.len() >= g.oc.div_ceil(MR) * blk_len);
        assert!(self
            .steps
            .iter()
            .all(|&t| t % d.len + d.tiles * PT <= d.len && t < x_len));
        let out = crate::par::SharedMut::new(y);
        let work = (g.oc * pix) as u64 * (g.c * g.kh * g.kw) as u64;
        crate::par::par_ranges(d.tiles, 1, work, |ts| {
            for tile in ts {
                let p0 = tile * PT;
                for b in 0..g.oc.div_ceil(MR) {
                    let w = self.wpk[b * blk_len..].as_ptr();
                    // SAFETY: the dot product is present (`fits`), i8mm where the input
                    // is in octets (`paths::i8mm`); every step plus 16 pixels is inside
                    // the input (asserted above) and block b holds blk_len int32.
                    let acc = unsafe {
                        match self.x {
                            Input::Quads(x) => block(x.as_ptr().add(p0), self.steps, w),
                            Input::Octets(x) => block_mm(x.as_ptr().add(p0), self.steps, w),
                        }
                    };
                    for (k, row) in acc.iter().enumerate().take(MR.min(g.oc - b * MR)) {
                        let o = b * MR + k;
                        let off = self.offs[o];
                        for (j, &a) in row.iter().enumerate() {
                            let p = p0 + j;
                            let (oy, ox) = (p / d.wq, p % d.wq);
                            if oy >= g.oh || ox >= g.ow {
                                continue;
                            }
                            let (q, at) = (self.q, o * pix + oy * g.ow + ox);
                            let v = q.requant(o, a.wrapping_add(off));
                            // SAFETY: output (o, oy, ox) belongs to this tile only.
                            let dst = unsafe { out.piece(at, 1) };
                            dst[0] = v as i8;
                        }
                    }
                }
            }
        });
    }
}

/// Weight (o, k) from either layout.
#[inline(always)]
fn weight(q: &Q<'_>, k_all: usize, o: usize, k: usize) -> i8 {
    match q.wp {
        // Row o's pairs are 12 int16 apart within its block (`Layout::Pairs6`).
        Some((wp, g)) => wp[g.index(o, 0) + 12 * (k / 2) + k % 2] as i8,
        None => q.w[o * k_all + k],
    }
}

/// Packed weights: block `b`, quad `cq`, tap `t`, row `k` is one int32 holding
/// `w[4b + k][4cq + j][t]` as byte `j` (zero past oc or c).
fn pack_weights(g: &Geo, q: &Q<'_>, quads: usize, wpk: &mut [i32]) {
    let ntaps = g.kh * g.kw;
    let k_all = g.c * ntaps;
    let mut i = 0;
    for b in 0..g.oc.div_ceil(MR) {
        for cq in 0..quads {
            for t in 0..ntaps {
                for k in 0..MR {
                    let o = b * MR + k;
                    let mut bytes = [0u8; 4];
                    if o < g.oc {
                        for (j, v) in bytes.iter_mut().enumerate() {
                            let c = 4 * cq + j;
                            if c < g.c {
                                *v = weight(q, k_all, o, c * ntaps + t) as u8;
                            }
                        }
                    }
                    wpk[i] = i32::from_le_bytes(bytes);
                    i += 1;
                }
            }
        }
    }
}

/// Packed weights for the `smmla` block: block `b`, octet `co`, tap `t` is 32 bytes, the
/// two 2 × 8 operands `[w[4b][8co..8co + 8][t], w[4b + 1][..][t]]` and the same of rows
/// `4b + 2`, `4b + 3` (zero past oc or c).
fn pack_weights_octets(g: &Geo, q: &Q<'_>, octs: usize, wpk: &mut [i32]) {
    let ntaps = g.kh * g.kw;
    let k_all = g.c * ntaps;
    let mut i = 0;
    for b in 0..g.oc.div_ceil(MR) {
        for co in 0..octs {
            for t in 0..ntaps {
                let mut bytes = [0u8; 32];
                for k in 0..MR {
                    let o = b * MR + k;
                    if o >= g.oc {
                        continue;
                    }
                    for j in 0..8 {
                        let c = 8 * co + j;
                        if c < g.c {
                            bytes[8 * k + j] = weight(q, k_all, o, c * ntaps + t) as u8;
                        }
                    }
                }
                for (d, w4) in wpk[i..i + 8].iter_mut().zip(bytes.chunks_exact(4)) {
                    *d = i32::from_le_bytes([w4[0], w4[1], w4[2], w4[3]]);
                }
                i += 8;
            }
        }
    }
}

/// Quad planes `2co` and `2co + 1` (each `set` int32) zipped into octet plane `co`: a
/// pixel's low four bytes from the first, high four from the second (all `zx` where
/// `2co + 1` is past the last quad: its weights are zero).
fn zip_octets(xp: &[i32], quads: usize, set: usize, zx: i8, xo: &mut [i64]) {
    let pad = i32::from_le_bytes([zx as u8; 4]);
    let octs = quads.div_ceil(2);
    assert!(xp.len() >= quads * set && xo.len() >= octs * set);
    crate::par::par_pieces(
        &mut xo[..octs * set],
        set,
        (octs * set) as u64,
        |at, planes| {
            for (k, dst) in planes.chunks_exact_mut(set).enumerate() {
                let co = at / set + k;
                let lo = &xp[2 * co * set..(2 * co + 1) * set];
                let hi = (2 * co + 1 < quads).then(|| &xp[(2 * co + 1) * set..(2 * co + 2) * set]);
                match hi {
                    Some(hi) => {
                        for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                            *d = (l as u32 as i64) | ((h as i64) << 32);
                        }
                    }
                    None => {
                        for (d, &l) in dst.iter_mut().zip(lo) {
                            *d = (l as u32 as i64) | ((pad as i64) << 32);
                        }
                    }
                }
            }
        },
    );
}

/// One image's input as int8 channel quads in zero-point padded phase planes (quads
/// split across the lent threads: each writes its own planes).
fn pack_input(g: &Geo, d: &Dims, zx: i8, x: &[i8], quads: usize, xp: &mut [i32]) {
    let set = g.sh * g.sw * d.len;
    let work = (quads * set) as u64;
    crate::par::par_pieces(&mut xp[..quads * set], set, work, |at, planes| {
        for (k, dst) in planes.chunks_exact_mut(set).enumerate() {
            pack_quad(g, d, zx, x, at / set + k, dst);
        }
    });
}

/// Channel quad `cq` of one image into its `sh·sw` phase planes. Channels past `c` hold
/// the zero point (their weights are zero).
fn pack_quad(g: &Geo, d: &Dims, zx: i8, x: &[i8], cq: usize, dst_set: &mut [i32]) {
    let plane = g.h * g.w;
    let pad = i32::from_le_bytes([zx as u8; 4]);
    let (pt, pl) = (g.pt as usize, g.pl as usize);
    let chans: [Option<&[i8]>; 4] = core::array::from_fn(|j| {
        let c = 4 * cq + j;
        (c < g.c).then(|| &x[c * plane..(c + 1) * plane])
    });
    for py in 0..g.sh {
        for px in 0..g.sw {
            let base = (py * g.sw + px) * d.len;
            let dst = &mut dst_set[base..base + d.len];
            for r in 0..d.hq {
                let row = &mut dst[r * d.wq..(r + 1) * d.wq];
                let iy = r * g.sh + py;
                if iy < pt || iy - pt >= g.h {
                    row.fill(pad);
                    continue;
                }
                let iy = iy - pt;
                let rows = chans.map(|c| c.map(|c| &c[iy * g.w..(iy + 1) * g.w]));
                // Columns q with pl <= q·sw + px < pl + w are inside the row.
                let first = pl.saturating_sub(px).div_ceil(g.sw).min(d.wq);
                let end = (pl + g.w).saturating_sub(px).div_ceil(g.sw).min(d.wq);
                let end = end.max(first);
                row[..first].fill(pad);
                row[end..].fill(pad);
                let ix0 = first * g.sw + px - pl;
                interleave4(rows, zx, ix0, g.sw, &mut row[first..end]);
            }
            // Slack past the planes' last row: read by dropped columns only.
            dst[d.hq * d.wq..].fill(pad);
        }
    }
}

/// `dst[j]` = the four rows' bytes at `ix0 + j·sw` (an absent row: `pad`); 16 at a time
/// with `st4` for stride 1.
#[inline(always)]
fn interleave4(rows: [Option<&[i8]>; 4], pad: i8, ix0: usize, sw: usize, dst: &mut [i32]) {
    let n = dst.len();
    let mut j = 0;
    if sw == 1 {
        let r = rows.map(|r| r.map(|r| &r[ix0..ix0 + n]));
        while j + 16 <= n {
            // SAFETY: j + 16 <= n: 16 bytes of every present row, 64 bytes of dst.
            unsafe {
                let ld =
                    |r: Option<&[i8]>| r.map_or(vdupq_n_s8(pad), |r| vld1q_s8(r.as_ptr().add(j)));
                let v = int8x16x4_t(ld(r[0]), ld(r[1]), ld(r[2]), ld(r[3]));
                vst4q_s8(dst.as_mut_ptr().add(j) as *mut i8, v);
            }
            j += 16;
        }
    }
    for (jj, d) in dst.iter_mut().enumerate().skip(j) {
        let ix = ix0 + jj * sw;
        *d = i32::from_le_bytes(rows.map(|r| r.map_or(pad, |r| r[ix]) as u8));
    }
}

/// `acc + Σ` over the four byte products of each int32 lane of `a` with the quad in lane
/// `$lane` of `b` (`sdot` by element).
macro_rules! sdot_lane {
    ($acc:expr, $a:expr, $b:expr, $lane:literal) => {{
        let mut r: int32x4_t = $acc;
        core::arch::asm!(
            concat!("sdot {r:v}.4s, {a:v}.16b, {b:v}.4b[", $lane, "]"),
            r = inout(vreg) r,
            a = in(vreg) $a,
            b = in(vreg) $b,
            options(pure, nomem, nostack, preserves_flags),
        );
        r
    }};
}

/// One register block: 4 output channels × 16 outputs summed over every (quad, tap)
/// offset of `steps`.
///
/// # Safety
/// The dot product is present; `x` + every step + 16 quads is inside the packed input;
/// `w` holds `steps.len()·4` int32.
#[target_feature(enable = "dotprod")]
#[inline]
unsafe fn block(x: *const i32, steps: &[usize], w: *const i32) -> [[i32; PT]; MR] {
    let z = vdupq_n_s32(0);
    let mut acc = [[z; 4]; MR];
    let mut wp = w;
    for &t in steps {
        // SAFETY: the contract above, for every step.
        unsafe {
            let p = x.add(t) as *const i8;
            let xv = [
                vld1q_s8(p),
                vld1q_s8(p.add(16)),
                vld1q_s8(p.add(32)),
                vld1q_s8(p.add(48)),
            ];
            let wv = vld1q_s8(wp as *const i8);
            for (v, &xq) in xv.iter().enumerate() {
                acc[0][v] = sdot_lane!(acc[0][v], xq, wv, "0");
                acc[1][v] = sdot_lane!(acc[1][v], xq, wv, "1");
                acc[2][v] = sdot_lane!(acc[2][v], xq, wv, "2");
                acc[3][v] = sdot_lane!(acc[3][v], xq, wv, "3");
            }
            wp = wp.add(MR);
        }
    }
    let mut out = [[0i32; PT]; MR];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (v, &a) in a.iter().enumerate() {
            // SAFETY: four int32 into a four-element slot of a 16-element row.
            unsafe { vst1q_s32(o[4 * v..4 * v + 4].as_mut_ptr(), a) };
        }
    }
    out
}

/// The `smmla` register block: 4 output channels × 16 outputs summed over every
/// (octet, tap) offset of `steps`, `x` the octet planes at the tile's first output, `w`
/// 32 bytes a step ([`pack_weights_octets`]).
///
/// # Safety
/// i8mm is present; `x` + every step + 16 octets is inside the packed input; `w` holds
/// `steps.len()·8` int32.
#[target_feature(enable = "i8mm")]
#[inline]
unsafe fn block_mm(x: *const i64, steps: &[usize], w: *const i32) -> [[i32; PT]; MR] {
    let z = vdupq_n_s32(0);
    // [pixel pair][channel pair]: lanes p0·o0, p0·o1, p1·o0, p1·o1.
    let mut acc = [[z; 2]; PT / 2];
    let mut wp = w as *const i8;
    for &t in steps {
        // SAFETY: the contract above, for every step.
        unsafe {
            let p = x.add(t) as *const i8;
            let (w0, w1) = (vld1q_s8(wp), vld1q_s8(wp.add(16)));
            for (pp, a) in acc.iter_mut().enumerate() {
                let xv = vld1q_s8(p.add(16 * pp));
                a[0] = smmla!(a[0], xv, w0);
                a[1] = smmla!(a[1], xv, w1);
            }
            wp = wp.add(32);
        }
    }
    let mut out = [[0i32; PT]; MR];
    for (pp, a) in acc.iter().enumerate() {
        for (op, &v) in a.iter().enumerate() {
            let mut l = [0i32; 4];
            // SAFETY: four int32 into a four-element array.
            unsafe { vst1q_s32(l.as_mut_ptr(), v) };
            out[2 * op][2 * pp] = l[0];
            out[2 * op + 1][2 * pp] = l[1];
            out[2 * op][2 * pp + 1] = l[2];
            out[2 * op + 1][2 * pp + 1] = l[3];
        }
    }
    out
}

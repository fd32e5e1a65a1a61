//! int8 Conv as an implicit GEMM over a packed, padded, phase-split copy of the input
//! (x86_64 AVX2 hosts, `std`): one-group convs with up to 256 taps and strides up to 4.
//!
//! The input of each image is copied once into int16 channel pairs (`[x[2cp], x[2cp+1]]`
//! per pixel, one int32), zero-point padded, and split by stride phase: for strides
//! `sh × sw` there are `sh·sw` phase planes of `hq × wq` pairs, where phase `(py, px)` holds
//! padded pixel `(r·sh + py, q·sw + px)` at `(r, q)`. Output pixel `(oy, ox)` then reads tap
//! `(ky, kx)` from phase `(ky·dh mod sh, kx·dw mod sw)` at `(oy + ky·dh / sh, ox + kx·dw /
//! sw)`: numbering outputs over the phase width (`p = oy·wq + ox`), every tap is one fixed
//! offset from `p`, so 16 consecutive outputs read 16 consecutive pairs whatever the
//! stride. Columns `ox ≥ ow` of that numbering are computed into a staging block and
//! dropped when the block is copied out (2 of 54 columns for a 52-wide 3×3 conv).
//!
//! The micro-kernel is the register block of `avx2::gemm` (6 output channels × 16
//! outputs, 12 `vpmaddwd` accumulators), reading the pairs in place instead of an im2col
//! tile re-packed per 16 pixels; weights are packed once per call in the order it walks
//! (block of 6 channels, channel pair, tap). Sums run on raw int8 values and
//! `bias − zx·Σw` is added once, so padded pixels (zero point) contribute nothing: the
//! integer result is the reference's, and the output stage is `avx2::Requant`, so the
//! bytes are the reference's (`tests/exact.rs`).
//!
//! Weights that all lie in [−64, 63] (7 bits: checked once, when they are packed) take the
//! u8×s8 form instead: the input as channel quads of `x + 128` bytes (padding `zx + 128`),
//! the weights as quads of int8, and `block_u8s8` (`vpmaddubsw` then `vpmaddwd` by ones:
//! 32 products per pair of instructions, no int16 saturation at 7 bits) with
//! `bias − (zx + 128)·Σw` added once. Same integers, same bytes (`tests/exact_u8s8.rs`).
//! On CPUs with VNNI (AVX-512 VNNI with VL, or AVX-VNNI; detected at run time,
//! `paths::vnni`) the quads take `vpdpbusd` instead, one instruction for the 32 products,
//! summed into int32 with no int16 stage: exact for any int8 weights, so every conv packs
//! its weights as quads there (`tests/exact_vnni.rs`).

extern crate std;
use std::cell::RefCell;
use std::vec::Vec;

use core::ops::Range;

use core::arch::x86_64::*;

use super::avx2::{Narrow, Requant, Scale};
use super::{Geo, Q};

/// Outputs per micro-kernel tile (two vectors of eight).
const PT: usize = 16;
/// Output channels per register block.
pub(super) const MR: usize = 6;
/// Most taps and largest stride the path takes (an audio model's 3×39 and 1×256 filters
/// included).
pub(super) const MAX_TAPS: usize = 256;
const MAX_STRIDE: usize = 4;

std::thread_local! {
    /// Packed input planes, packed weights and the output staging block, kept between
    /// calls so a model's convs reuse the same pages.
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            xp: Vec::new(),
            wpk: Vec::new(),
            offs: Vec::new(),
            steps: Vec::new(),
        })
    };
}

struct Scratch {
    xp: Vec<i32>,
    wpk: Vec<i32>,
    offs: Vec<i32>,
    steps: Vec<usize>,
}

/// Whether this path takes the conv (the caller checked AVX2 and one group).
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
}

/// Plane geometry: (hq, wq, plane length with slack) of one phase plane.
struct Dims {
    hq: usize,
    wq: usize,
    len: usize,
    tiles: usize,
}

fn dims(g: &Geo) -> Option<Dims> {
    let (pt, pl) = (g.pt as usize, g.pl as usize);
    // Padded extent: the input plus its leading padding, and at least every row and
    // column the last output's window reaches.
    let hp = (g.h + pt).max((g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1);
    let wp = (g.w + pl).max((g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1);
    let (hq, wq) = (hp.div_ceil(g.sh), wp.div_ceil(g.sw));
    let tiles = (g.oh * wq).div_ceil(PT);
    let max_off = (g.kh - 1) * g.dh / g.sh * wq + (g.kw - 1) * g.dw / g.sw;
    // The last tile reads up to tiles·16 − 1 + max_off; everything else is inside.
    let len = (hq * wq).max(tiles * PT + max_off);
    // Keep the scratch within reason (a 640×640 stem is 2 MB of pairs per phase set).
    let pairs = g.c.div_ceil(2);
    (pairs.checked_mul(g.sh * g.sw)?.checked_mul(len)? <= 1 << 24).then_some(Dims {
        hq,
        wq,
        len,
        tiles,
    })
}

/// Run the conv (all images). The caller checked `fits(g)` and AVX2.
pub(super) fn conv(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    if !width_windows(g, q, y) && !transposed(g, q, y) {
        conv_keyed(g, q, y, None, false);
    }
}

std::thread_local! {
    /// The transposed form's input and output planes (`transposed`), kept between calls.
    static TRANSPOSED: RefCell<(Vec<i8>, Vec<i8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The transposed form takes at least one tile in this many off the plain form's.
const MIN_SAVED: usize = 8;

/// What transposing one byte of a plane costs, in multiply-adds of the same time: the
/// 8×8 blocks move about 16 bytes a cycle against the GEMM's 20 or so multiply-adds, but
/// a narrow plane's edges go a byte at a time, so 4 rather than about 1.25.
const TRANSPOSE_WORK: u64 = 4;

/// A conv whose outputs, numbered over the padded width, waste many tiles on dropped
/// columns (horizontal padding on a narrow map: a `1×3` kernel with one column of padding
/// on each side of a map 4 wide computes 6 columns to keep 4), run on the transposed
/// planes instead: rows become columns, so the padding is above and below, where it costs
/// no outputs. Input planes are transposed (`c × w × h`), the conv runs with the kernel's
/// axes swapped (each tap keeps its packed weights; only its offset in the planes
/// changes), and its `oc × ow × oh` output is transposed back. Same integers, same
/// bytes. Taken where the tiles it saves outweigh the two transposes. Returns false
/// (nothing done) where it does not apply.
fn transposed(g: &Geo, q: &Q<'_>, y: &mut [i8]) -> bool {
    let gt = Geo {
        h: g.w,
        w: g.h,
        oh: g.ow,
        ow: g.oh,
        kh: g.kw,
        kw: g.kh,
        sh: g.sw,
        sw: g.sh,
        pt: g.pl,
        pl: g.pt,
        dh: g.dw,
        dw: g.dh,
        ..*g
    };
    let (Some(d), Some(dt)) = (dims(g), dims(&gt)) else {
        return false;
    };
    if dt.tiles >= d.tiles || !fits(&gt) {
        return false;
    }
    // Planes of one row (a 1-d signal as [c, 1, w]) are their own transposes: the same
    // bytes serve both forms, and nothing is copied.
    if g.h == 1 && g.oh == 1 {
        crate::paths::note(crate::paths::Path::DirectTransposed);
        conv_keyed(&gt, q, y, None, true);
        return true;
    }
    // Else a small share saved is not worth the two transposes, whatever the estimate
    // says (a dilated 1 × 3 conv over a 7756-wide row of two rows would save 3% of its
    // tiles; one such row, copied, ran at half the speed: 4.3 against 2.3 ms).
    if (d.tiles - dt.tiles) * MIN_SAVED < d.tiles {
        return false;
    }
    let tile = (g.oc.div_ceil(MR) * MR * g.c * g.kh * g.kw * PT) as u64;
    let bytes = (g.n * (g.c * g.h * g.w + g.oc * g.oh * g.ow)) as u64;
    if ((d.tiles - dt.tiles) as u64) * tile < TRANSPOSE_WORK * bytes {
        return false;
    }
    TRANSPOSED.with(|s| {
        let mut s = s.borrow_mut();
        let (xt, yt) = &mut *s;
        grow(xt, g.n * g.c * g.h * g.w, 0);
        grow(yt, g.n * g.oc * g.oh * g.ow, 0);
        let xt = &mut xt[..g.n * g.c * g.h * g.w];
        let yt = &mut yt[..g.n * g.oc * g.oh * g.ow];
        transpose_planes(q.x, g.n * g.c, g.h, g.w, xt);
        let qt = Q { x: xt, ..*q };
        crate::paths::note(crate::paths::Path::DirectTransposed);
        conv_keyed(&gt, &qt, yt, None, true);
        transpose_planes(yt, g.n * g.oc, g.ow, g.oh, y);
    });
    true
}

std::thread_local! {
    /// The width-window form's input and weights (`width_windows`), kept between calls.
    static WINDOWS: RefCell<(Vec<i8>, Vec<i8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Window quads the width-window form takes (kernels up to 16 columns wide).
const WIN_QUADS: usize = 4;

/// A one-channel conv (a grayscale or spectrogram stem) in the quad forms (VNNI, or 7-bit
/// weights), run as a conv of `4·⌈kw/4⌉` channels whose channel `j` is the padded input
/// shifted left by `j` columns, with a `kh × 1` kernel: each quad then carries four taps
/// of a kernel row instead of one real channel and three zero ones, so a 3×3 stem takes 3
/// quad steps a tile instead of 9. The sums are the same integers (the extra channels'
/// weights are zero; the padding columns hold the zero point, as the implicit GEMM's own
/// padding does), so the same bytes. Returns false (nothing done) where it does not apply.
fn width_windows(g: &Geo, q: &Q<'_>, y: &mut [i8]) -> bool {
    let nq = g.kw.div_ceil(4);
    if g.c != 1 || g.kw < 2 || g.dw != 1 || nq > WIN_QUADS || g.pl < 0 {
        return false;
    }
    let k_all = g.kh * g.kw;
    if quad_kind(seven_bit(q, k_all, g.oc)) == 0 {
        return false;
    }
    let (c2, w2, pl) = (4 * nq, (g.ow - 1) * g.sw + 1, g.pl as usize);
    let g2 = Geo {
        c: c2,
        w: w2,
        kw: 1,
        pl: 0,
        dw: 1,
        ..*g
    };
    if !fits(&g2) {
        return false;
    }
    WINDOWS.with(|s| {
        let mut s = s.borrow_mut();
        let (xs, ws) = &mut *s;
        // Channel j, row r, column x: the padded input at column x + j (the zero point
        // outside the input).
        let zx = q.zx as i8;
        xs.clear();
        xs.resize(g.n * c2 * g.h * w2, zx);
        for n in 0..g.n {
            for j in 0..c2 {
                // Columns x whose x + j − pl lies inside the input.
                let lo = pl.saturating_sub(j).min(w2);
                let hi = (pl + g.w).saturating_sub(j).min(w2);
                if hi <= lo {
                    continue;
                }
                for r in 0..g.h {
                    let src = &q.x[(n * g.h + r) * g.w..][..g.w];
                    let dst = &mut xs[((n * c2 + j) * g.h + r) * w2..][..w2];
                    let at = lo + j - pl;
                    dst[lo..hi].copy_from_slice(&src[at..at + hi - lo]);
                }
            }
        }
        // Weight (o, j, ky): tap (ky, j) of the original, zero for j ≥ kw.
        ws.clear();
        ws.resize(g.oc * c2 * g.kh, 0);
        for o in 0..g.oc {
            for j in 0..g.kw {
                for ky in 0..g.kh {
                    ws[(o * c2 + j) * g.kh + ky] = weight(q, k_all, o, ky * g.kw + j);
                }
            }
        }
        let q2 = Q {
            x: xs,
            w: ws,
            wp: None,
            ..*q
        };
        // Packed once per model, keyed by the original weights (the buffer above is
        // shared by every such conv) and marked apart from their own form.
        let src = match q.wp {
            Some((wp, _)) => (wp.as_ptr() as usize, wp.len()),
            None => (q.w.as_ptr() as usize, q.w.len()),
        };
        let key = (
            src.0,
            src.1,
            (1 << 30) | ((g.kh as u32) << 16) | g.oc as u32 & 0xffff,
        );
        crate::paths::note(crate::paths::Path::WidthWindows);
        conv_keyed(&g2, &q2, y, Some(key), false);
    });
    true
}

/// [`conv`] with the packed weights cached under `key` (default: the weights' own address,
/// length, layout, taps and channels). `swapped`: `g` is the transposed geometry of the
/// weights' conv (`transposed`), so its tap `(ky, kx)` is the weights' tap `(kx, ky)`.
fn conv_keyed(g: &Geo, q: &Q<'_>, y: &mut [i8], key: Option<(usize, usize, u32)>, swapped: bool) {
    let Some(d) = dims(g) else { return };
    let pairs = g.c.div_ceil(2);
    let quads = g.c.div_ceil(4);
    let phases = g.sh * g.sw;
    let ntaps = g.kh * g.kw;
    let blocks = g.oc.div_ceil(MR);
    // Tap offsets from an output's index in its phase-pair set.
    let mut taps = [0usize; MAX_TAPS];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let (yy, xx) = (ky * g.dh, kx * g.dw);
            let phase = (yy % g.sh) * g.sw + xx % g.sw;
            let t = if swapped {
                kx * g.kh + ky
            } else {
                ky * g.kw + kx
            };
            taps[t] = phase * d.len + (yy / g.sh) * d.wq + xx / g.sw;
        }
    }
    let taps = &taps[..ntaps];
    let set = phases * d.len;
    let pix = g.oh * g.ow;
    let k_all = g.c * ntaps;
    // Row sums of the weights, then the packed blocks: built once per model with an
    // active `prepack` cache, once per call otherwise.
    let wkey = match q.wp {
        Some((wp, _)) => (wp.as_ptr() as usize, wp.len(), 1),
        None => (q.w.as_ptr() as usize, q.w.len(), 0),
    };
    let key = key.unwrap_or((
        wkey.0,
        wkey.1,
        (wkey.2 << 31) | ((ntaps as u32) << 16) | g.oc as u32 & 0xffff,
    ));
    // Layout: [kind (`quad_kind`: 0 int16 pairs, else u8×s8 quads), Σw per channel,
    // packed blocks]; the 7-bit check runs here, so once per model with a cache.
    let build = |v: &mut Vec<i32>| {
        let kind = quad_kind(seven_bit(q, k_all, g.oc));
        let u8s8 = kind != 0;
        let units = if u8s8 { quads } else { pairs };
        v.clear();
        v.resize(1 + g.oc + blocks * units * ntaps * MR, 0);
        v[0] = kind;
        for (o, ws) in v[1..].iter_mut().enumerate().take(g.oc) {
            *ws = (0..k_all).map(|k| weight(q, k_all, o, k) as i32).sum();
        }
        if u8s8 {
            pack_weights_u8s8(g, q, quads, &mut v[1 + g.oc..]);
        } else {
            pack_weights(g, q, pairs, &mut v[1 + g.oc..]);
        }
    };
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let Scratch {
            xp,
            wpk,
            offs,
            steps,
        } = &mut *s;
        crate::prepack::with_packed(key, wpk, build, |packed| {
            let mode = quad_mode(packed[0]);
            let u8s8 = mode != PAIRS;
            let (wsum, wpk) = packed[1..].split_at(g.oc);
            // u8×s8 sums run on u = x + 128: Σ(x − zx)·w = Σu·w − (zx + 128)·Σw.
            let (units, zsum) = if u8s8 {
                note_quads(mode);
                (quads, q.zx + 128)
            } else {
                (pairs, q.zx)
            };
            // Every (pair or quad, tap) offset, in the order the packed weights hold them.
            steps.clear();
            steps.extend((0..units).flat_map(|cp| taps.iter().map(move |&t| cp * set + t)));
            let steps = &steps[..];
            grow(xp, units * set, 0);
            offs.clear();
            offs.extend(wsum.iter().enumerate().map(|(o, &ws)| {
                q.bias
                    .map_or(0, |b| b[o])
                    .wrapping_sub(zsum.wrapping_mul(ws))
            }));
            let q = &Q { offs, ..*q };
            let work = (g.oc * pix) as u64 * k_all as u64;
            let parts = crate::par::parts_for(work);
            // A pointwise conv split by tiles packs each part's own positions in the part
            // (its tiles read no others), so that the thread that packs them reads them
            // from its own cache: packed by channels on one thread and read by pixels on
            // another, two threads took 1.38× one thread's time in the block loop on a
            // 2-core Xeon (MobileNetV2's 288 → 48 over 28×28, `perf`).
            let by_tiles = d.tiles >= 2 * parts;
            let fused = parts > 1 && by_tiles && ntaps == 1 && phases == 1 && flat(g, &d);
            for n in 0..g.n {
                let plane = g.h * g.w;
                let xn = &q.x[n * g.c * plane..(n + 1) * g.c * plane];
                if fused {
                    // Only the positions the tiles cover: nothing past them is read.
                    debug_assert!(d.tiles * PT == d.len);
                } else if u8s8 {
                    pack_input_u8(g, &d, q.zx as i8, xn, quads, xp);
                } else {
                    pack_input(g, &d, q.zx as i8, xn, pairs, xp);
                }
                let yn = &mut y[n * g.oc * pix..(n + 1) * g.oc * pix];
                let xs = crate::par::SharedMut::new(&mut xp[..]);
                let job = Job {
                    g,
                    d: &d,
                    q,
                    steps,
                    xp: &xs,
                    wpk,
                    mode,
                };
                if parts <= 1 {
                    job.part(0..g.oc, 0..d.tiles, &crate::par::SharedMut::new(yn));
                } else if fused {
                    let units = if u8s8 { quads } else { pairs };
                    job.split_packing(parts, yn, |at| {
                        pack_span(g, &d, q.zx as i8, xn, units, u8s8, at, &xs)
                    });
                } else {
                    job.split(parts, yn);
                }
            }
        });
    });
}

/// One image's conv once its input and weights are packed: what every part reads.
struct Job<'a> {
    g: &'a Geo,
    d: &'a Dims,
    q: &'a Q<'a>,
    steps: &'a [usize],
    /// The packed input: read only, except where [`Job::split_packing`] has each part
    /// write its own positions first.
    xp: &'a crate::par::SharedMut<'a, i32>,
    wpk: &'a [i32],
    /// How the block multiplies ([`PAIRS`], or u8 / s8 quads: [`MADD`], [`VNNI_EVEX`],
    /// [`VNNI_VEX`]).
    mode: u8,
}

impl Job<'_> {
    /// Output channels `os` (starting at a block of 6) × tiles `ts`, requantized straight
    /// into the image's output `y` (`C × oh × ow`); other parts may write other channels
    /// or tiles of `y` at the same time.
    fn part(&self, os: Range<usize>, ts: Range<usize>, y: &crate::par::SharedMut<'_, i8>) {
        let (g, d) = (self.g, self.d);
        debug_assert!(os.start.is_multiple_of(MR) && os.end <= g.oc && ts.end <= d.tiles);
        let out = Out {
            pix: g.oh * g.ow,
            ow: g.ow,
            wq: d.wq,
            end: g.oh * d.wq,
        };
        // SAFETY: AVX2 is present (the caller of `conv` checked); the buffers were sized
        // for `pairs` sets of `phases` planes of `d.len` pairs (every tap offset of every
        // tile stays below d.len: see `dims`) and the packed weights for every block;
        // `y` holds the image's outputs, and this part writes only its channels × tiles.
        unsafe {
            let (q, steps, xp, wpk) = (self.q, self.steps, self.xp.ptr(), self.wpk);
            match self.mode {
                PAIRS => tiles::<PAIRS>(d, q, os, ts, steps, xp, wpk, &out, y),
                MADD => tiles::<MADD>(d, q, os, ts, steps, xp, wpk, &out, y),
                VNNI_EVEX => tiles::<VNNI_EVEX>(d, q, os, ts, steps, xp, wpk, &out, y),
                _ => tiles::<VNNI_VEX>(d, q, os, ts, steps, xp, wpk, &out, y),
            }
        };
    }

    /// The image's conv in `parts` parts on the lent threads: by tiles (output pixels)
    /// when there are enough of them, else by blocks of output channels.
    fn split(&self, parts: usize, y: &mut [i8]) {
        let (g, d) = (self.g, self.d);
        let by_tiles = d.tiles >= 2 * parts;
        let out = crate::par::SharedMut::new(y);
        crate::par::run(parts, |i| {
            let (os, ts) = if by_tiles {
                (0..g.oc, crate::par::split(d.tiles, parts, 1, i))
            } else {
                (crate::par::split(g.oc, parts, MR, i), 0..d.tiles)
            };
            if os.is_empty() || ts.is_empty() {
                return;
            }
            self.part(os, ts, &out);
        });
    }

    /// [`Job::split`] by tiles of a pointwise conv whose input is not packed yet: each
    /// part first packs the positions its tiles read (`pack(positions)`, which writes
    /// only those), then runs them.
    fn split_packing(&self, parts: usize, y: &mut [i8], pack: impl Fn(Range<usize>) + Sync) {
        let (g, d) = (self.g, self.d);
        let out = crate::par::SharedMut::new(y);
        crate::par::run(parts, |i| {
            let ts = crate::par::split(d.tiles, parts, 1, i);
            if ts.is_empty() {
                return;
            }
            pack(ts.start * PT..ts.end * PT);
            self.part(0..g.oc, ts, &out);
        });
    }
}

/// Positions `at` of every unit's phase plane of `xp` (a flat pointwise conv: one
/// phase, no taps but the first), as [`pack_quad`] (`u8s8`) or [`pack_pair`] write them:
/// the padding rows above the plane, the plane's pixels, the padding after it.
#[allow(clippy::too_many_arguments)]
fn pack_span(
    g: &Geo,
    d: &Dims,
    zx: i8,
    x: &[i8],
    units: usize,
    u8s8: bool,
    at: Range<usize>,
    xp: &crate::par::SharedMut<'_, i32>,
) {
    let plane = g.h * g.w;
    let top = g.pt as usize * d.wq;
    // The plane's pixels among `at` (an empty range where `at` is all padding).
    let lo = at.start.max(top).min(at.end);
    let hi = at.end.min(top + plane).max(lo);
    let pad_byte = (zx as u8) ^ 0x80;
    let pad = if u8s8 {
        i32::from_le_bytes([pad_byte; 4])
    } else {
        pair(zx, zx)
    };
    let chan = |c: usize| (c < g.c).then(|| &x[c * plane..(c + 1) * plane]);
    for u in 0..units {
        // SAFETY: unit u's positions `at` (within its plane of d.len: at.end <= tiles·16
        // <= d.len); every part packs positions of its own tiles only.
        let dst = unsafe { xp.piece(u * d.len + at.start, at.len()) };
        let (before, rest) = dst.split_at_mut(lo - at.start);
        let (mid, after) = rest.split_at_mut(hi - lo);
        before.fill(pad);
        after.fill(pad);
        // A range all in the padding rows above the plane has no pixels (and lo < top).
        if mid.is_empty() {
            continue;
        }
        if u8s8 {
            let rows = core::array::from_fn(|j| chan(4 * u + j));
            interleave4(rows, pad_byte, lo - top, 1, mid);
        } else if let Some(a) = chan(2 * u) {
            interleave(a, chan(2 * u + 1), lo - top, 1, mid);
        }
    }
}

/// `planes` planes of `rows × cols` bytes from `src`, each transposed into `dst`
/// (`cols × rows`): 8×8 blocks through SSE2 unpacks, the edges a byte at a time.
fn transpose_planes(src: &[i8], planes: usize, rows: usize, cols: usize, dst: &mut [i8]) {
    let len = rows * cols;
    let (src, dst) = (&src[..planes * len], &mut dst[..planes * len]);
    let (rb, cb) = (rows / 8 * 8, cols / 8 * 8);
    for (a, b) in src.chunks_exact(len).zip(dst.chunks_exact_mut(len)) {
        for r in (0..rb).step_by(8) {
            for c in (0..cb).step_by(8) {
                // SAFETY: rows r..r+8 and columns c..c+8 lie inside both planes (rb ≤ rows,
                // cb ≤ cols); SSE2 is part of x86_64.
                unsafe {
                    block8(
                        a.as_ptr().add(r * cols + c),
                        cols,
                        b.as_mut_ptr().add(c * rows + r),
                        rows,
                    )
                };
            }
        }
        for r in 0..rows {
            let from = if r < rb { cb } else { 0 };
            for c in from..cols {
                b[c * rows + r] = a[r * cols + c];
            }
        }
    }
}

/// One 8×8 byte block: `dst[j·ds + i] = src[i·ss + j]`.
///
/// # Safety
/// Eight rows of eight bytes at `src` (stride `ss`) and at `dst` (stride `ds`).
#[inline(always)]
unsafe fn block8(src: *const i8, ss: usize, dst: *mut i8, ds: usize) {
    // SAFETY: the contract; SSE2 only.
    unsafe {
        let r = |i: usize| _mm_loadl_epi64(src.add(i * ss) as *const __m128i);
        // Bytes of rows (0,1), (2,3), (4,5), (6,7) interleaved; then words, then dwords:
        // each 64-bit half of the last four holds one source column.
        let t0 = _mm_unpacklo_epi8(r(0), r(1));
        let t1 = _mm_unpacklo_epi8(r(2), r(3));
        let t2 = _mm_unpacklo_epi8(r(4), r(5));
        let t3 = _mm_unpacklo_epi8(r(6), r(7));
        let (u0, u1) = (_mm_unpacklo_epi16(t0, t1), _mm_unpackhi_epi16(t0, t1));
        let (u2, u3) = (_mm_unpacklo_epi16(t2, t3), _mm_unpackhi_epi16(t2, t3));
        let cols = [
            _mm_unpacklo_epi32(u0, u2),
            _mm_unpackhi_epi32(u0, u2),
            _mm_unpacklo_epi32(u1, u3),
            _mm_unpackhi_epi32(u1, u3),
        ];
        for (k, v) in cols.into_iter().enumerate() {
            _mm_storel_epi64(dst.add(2 * k * ds) as *mut __m128i, v);
            _mm_storel_epi64(
                dst.add((2 * k + 1) * ds) as *mut __m128i,
                _mm_unpackhi_epi64(v, v),
            );
        }
    }
}

fn grow<T: Copy>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// Weight (o, c, tap) from either layout.
#[inline(always)]
fn weight(q: &Q<'_>, k_all: usize, o: usize, k: usize) -> i8 {
    match q.wp {
        // Row o's pairs are 12 int16 apart within its block (`Layout::Pairs6`).
        Some((wp, g)) => wp[g.index(o, 0) + 12 * (k / 2) + k % 2] as i8,
        None => q.w[o * k_all + k],
    }
}

/// Packed weights: block `b`, pair `cp`, tap `t`, row `k` is one int32 holding
/// `w[6b + k][2cp][t]` and `w[6b + k][2cp + 1][t]` as int16 (zero past oc or c).
fn pack_weights(g: &Geo, q: &Q<'_>, pairs: usize, wpk: &mut [i32]) {
    let ntaps = g.kh * g.kw;
    let k_all = g.c * ntaps;
    if q.wp.is_some() {
        let mut i = 0;
        for b in 0..g.oc.div_ceil(MR) {
            for cp in 0..pairs {
                for t in 0..ntaps {
                    for k in 0..MR {
                        let o = b * MR + k;
                        let c0 = 2 * cp;
                        let (lo, hi) = if o < g.oc {
                            let lo = weight(q, k_all, o, c0 * ntaps + t);
                            let hi = if c0 + 1 < g.c {
                                weight(q, k_all, o, (c0 + 1) * ntaps + t)
                            } else {
                                0
                            };
                            (lo, hi)
                        } else {
                            (0, 0)
                        };
                        wpk[i] = pair(lo, hi);
                        i += 1;
                    }
                }
            }
        }
        return;
    }
    // Plain rows: one block of six rows at a time, a (pair, tap) step of six int32.
    let zero = [0i8; 1];
    let blocks = g.oc.div_ceil(MR);
    for (b, dst) in wpk
        .chunks_exact_mut(pairs * ntaps * MR)
        .take(blocks)
        .enumerate()
    {
        let rows: [&[i8]; MR] = core::array::from_fn(|k| {
            let o = b * MR + k;
            if o < g.oc {
                &q.w[o * k_all..(o + 1) * k_all]
            } else {
                &zero[..]
            }
        });
        for cp in 0..pairs {
            let (c0, c1) = (2 * cp * ntaps, (2 * cp + 1) * ntaps);
            let odd = 2 * cp + 1 >= g.c;
            for t in 0..ntaps {
                let step = &mut dst[(cp * ntaps + t) * MR..(cp * ntaps + t + 1) * MR];
                for (d, r) in step.iter_mut().zip(&rows) {
                    *d = if r.len() < k_all {
                        0
                    } else if odd {
                        pair(r[c0 + t], 0)
                    } else {
                        pair(r[c0 + t], r[c1 + t])
                    };
                }
            }
        }
    }
}

/// One image's input as channel pairs in zero-point padded phase planes, split across
/// the lent threads by phase plane (each writes its own): a stride-2 stem of one or two
/// pairs still splits four ways.
fn pack_input(g: &Geo, d: &Dims, zx: i8, x: &[i8], pairs: usize, xp: &mut [i32]) {
    pack_planes(g, d, pairs, xp, |cp, phase, dst| {
        pack_pair(g, d, zx, x, cp, phase, dst)
    });
}

/// `groups` channel groups × the `sh·sw` phase planes of `xp`, each plane written by
/// `pack(group, phase, plane)`, the planes split across the lent threads.
fn pack_planes(
    g: &Geo,
    d: &Dims,
    groups: usize,
    xp: &mut [i32],
    pack: impl Fn(usize, usize, &mut [i32]) + Sync,
) {
    let phases = g.sh * g.sw;
    let work = (groups * phases * d.len) as u64 * PACK_WORK;
    crate::par::par_pieces(
        &mut xp[..groups * phases * d.len],
        d.len,
        work,
        |at, planes| {
            for (k, dst) in planes.chunks_exact_mut(d.len).enumerate() {
                let i = at / d.len + k;
                pack(i / phases, i % phases, dst);
            }
        },
    );
}

/// Packing one int32 of a phase plane, in multiply-adds of the same time (what
/// `par::parts_for` weighs): a gather of two or four bytes and a store.
const PACK_WORK: u64 = 4;

/// Channel pair `cp` of one image into phase plane `phase` (`py·sw + px`), `dst`.
fn pack_pair(g: &Geo, d: &Dims, zx: i8, x: &[i8], cp: usize, phase: usize, dst: &mut [i32]) {
    let plane = g.h * g.w;
    let pad = pair(zx, zx);
    let (pt, pl) = (g.pt as usize, g.pl as usize);
    let c0 = 2 * cp;
    let a = &x[c0 * plane..(c0 + 1) * plane];
    // An odd last channel pairs with zeros (its weights are zero too).
    let b = (c0 + 1 < g.c).then(|| &x[(c0 + 1) * plane..(c0 + 2) * plane]);
    if flat(g, d) {
        // One run (see `pack_quad`).
        let top = pt * d.wq;
        dst[..top].fill(pad);
        interleave(a, b, 0, 1, &mut dst[top..top + plane]);
        dst[top + plane..].fill(pad);
        return;
    }
    let (py, px) = (phase / g.sw, phase % g.sw);
    for r in 0..d.hq {
        let row = &mut dst[r * d.wq..(r + 1) * d.wq];
        let iy = r * g.sh + py;
        if iy < pt || iy - pt >= g.h {
            row.fill(pad);
            continue;
        }
        let iy = iy - pt;
        let (ar, br) = (
            &a[iy * g.w..(iy + 1) * g.w],
            b.map(|b| &b[iy * g.w..(iy + 1) * g.w]),
        );
        // Columns q with pl <= q·sw + px < pl + w are inside the row.
        let first = pl.saturating_sub(px).div_ceil(g.sw).min(d.wq);
        let end = (pl + g.w).saturating_sub(px).div_ceil(g.sw).min(d.wq);
        let end = end.max(first);
        row[..first].fill(pad);
        row[end..].fill(pad);
        let ix0 = first * g.sw + px - pl;
        interleave(ar, br, ix0, g.sw, &mut row[first..end]);
    }
    // Slack past the planes' last row: read by dropped columns only.
    dst[d.hq * d.wq..].fill(pad);
}

/// Whether the input's rows are one run in its phase plane: stride 1, no padding columns
/// (rows of padding above and below the image are allowed).
fn flat(g: &Geo, d: &Dims) -> bool {
    g.sh == 1 && g.sw == 1 && g.pl == 0 && d.wq == g.w && d.hq >= g.h + g.pt as usize
}

#[inline(always)]
fn pair(a: i8, b: i8) -> i32 {
    (a as i16 as u16 as u32 | ((b as i16 as u16 as u32) << 16)) as i32
}

/// `dst[j] = pair(a[ix0 + j·sw], b[ix0 + j·sw])` (b absent: 0).
#[inline(always)]
fn interleave(a: &[i8], b: Option<&[i8]>, ix0: usize, sw: usize, dst: &mut [i32]) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    if sw == 1 {
        let a = &a[ix0..ix0 + n];
        match b {
            Some(b) => {
                let b = &b[ix0..ix0 + n];
                // SAFETY: AVX2 is present (the caller of `conv` checked); the slices
                // are n long.
                unsafe { interleave1(a, b, dst) }
            }
            None => {
                for (d, &v) in dst.iter_mut().zip(a) {
                    *d = pair(v, 0);
                }
            }
        }
        return;
    }
    for (j, d) in dst.iter_mut().enumerate() {
        let ix = ix0 + j * sw;
        *d = pair(a[ix], b.map_or(0, |b| b[ix]));
    }
}

/// `dst[j] = pair(a[j], b[j])`, 16 at a time.
#[target_feature(enable = "avx2")]
unsafe fn interleave1(a: &[i8], b: &[i8], dst: &mut [i32]) {
    let n = dst.len().min(a.len()).min(b.len());
    let mut j = 0;
    while j + 16 <= n {
        // SAFETY: j + 16 <= n: 16 bytes of a and b, 16 int32 of dst.
        unsafe {
            let va = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.as_ptr().add(j) as *const __m128i));
            let vb = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.as_ptr().add(j) as *const __m128i));
            let lo = _mm256_unpacklo_epi16(va, vb);
            let hi = _mm256_unpackhi_epi16(va, vb);
            let d = dst.as_mut_ptr().add(j) as *mut __m256i;
            _mm256_storeu_si256(d, _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256(d.add(1), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
        j += 16;
    }
    for k in j..n {
        dst[k] = pair(a[k], b[k]);
    }
}

/// Where a tile's outputs go: output `p = oy·wq + ox` of channel `o` (numbered over the
/// phase width) is byte `o·pix + oy·ow + ox` of the image's output, for `ox < ow` and
/// `p < end` (= oh·wq); the others are dropped.
struct Out {
    pix: usize,
    ow: usize,
    wq: usize,
    end: usize,
}

/// The runs of one tile's 16 outputs that land in the output plane: (first lane, offset
/// in the plane, length), at most 16 (one per lane when the phase width is 1).
struct Runs {
    n: usize,
    runs: [(u8, u32, u8); PT],
}

impl Out {
    /// How many output bytes the positions before `p` land on (the outputs of positions
    /// `0..p` are the first that many bytes of each channel plane: the runs leave no gap).
    fn bytes_before(&self, p: usize) -> usize {
        let p = p.min(self.end);
        (p / self.wq) * self.ow + (p % self.wq).min(self.ow)
    }

    #[inline]
    fn runs(&self, p0: usize) -> Runs {
        let mut r = Runs {
            n: 0,
            runs: [(0, 0, 0); PT],
        };
        // Without dropped columns (`wq == ow`, a pointwise conv) output p is byte p: a
        // whole tile is one run, found without a division a row.
        if self.wq == self.ow && p0 + PT <= self.end {
            r.runs[0] = (0, p0 as u32, PT as u8);
            r.n = 1;
            return r;
        }
        let end = (p0 + PT).min(self.end);
        let mut p = p0;
        while p < end {
            let (oy, ox) = (p / self.wq, p % self.wq);
            let row_end = (p - ox + self.wq).min(end);
            if ox < self.ow {
                let len = (row_end - p).min(self.ow - ox);
                let (from, at) = ((p - p0) as u8, (oy * self.ow + ox) as u32);
                match r.n.checked_sub(1).map(|i| &mut r.runs[i]) {
                    // Rows with no dropped columns between them (`wq == ow`: a pointwise
                    // conv) continue one run, so such a tile is one store.
                    Some(last) if last.0 + last.2 == from && last.1 + last.2 as u32 == at => {
                        last.2 += len as u8;
                    }
                    _ => {
                        r.runs[r.n] = (from, at, len as u8);
                        r.n += 1;
                    }
                }
            }
            p = row_end;
        }
        r
    }
}

/// Tiles `ts` × output channels `os` (blocks of 6 from `os.start`), requantized into `y`
/// (the image's output, laid out as `out` says).
///
/// # Safety
/// AVX2; every step plus `tiles·16` pairs is inside `xp` (and inside its phase plane);
/// `wpk` holds ⌈oc/6⌉ blocks of `pairs·taps·6`; `os.start` is a multiple of 6; no other
/// part writes channels `os` of tiles `ts` of `y` meanwhile.
/// `M`: [`PAIRS`] (`block` on int16 pairs), else `xp` and `wpk` hold u8 / s8 quads
/// (`block_u8s8::<true, M>`).
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<const M: u8>(
    d: &Dims,
    q: &Q<'_>,
    os: Range<usize>,
    ts: Range<usize>,
    steps: &[usize],
    xp: (*const i32, usize),
    wpk: &[i32],
    out: &Out,
    y: &crate::par::SharedMut<'_, i8>,
) {
    let blk_len = steps.len() * MR;
    debug_assert!(wpk.len() >= os.end.div_ceil(MR) * blk_len);
    debug_assert!(steps
        .iter()
        .all(|&t| t % d.len + d.tiles * PT <= d.len && t < xp.1));
    debug_assert!(q.offs.len() >= os.end && os.start.is_multiple_of(MR));
    let rq = Requant::of(q);
    let narrow = Narrow::of(q);
    let plain =
        narrow.filter(|nr| nr.plain() && q.scales.len() >= os.end && q.offs.len() >= os.end);
    let xb = xp.0;
    // Panels of output channels whose packed weights stay in L2 (about 128 KB); each
    // panel walks every tile, so a big layer's weights are not streamed from L3 per tile.
    let panel = (PANEL_BYTES / (blk_len * 4).max(1)).max(1) * MR;
    // The end of this part's output bytes in each channel plane: the tiles `ts` write
    // one contiguous range of every plane, ending here.
    let part_end = out.bytes_before(ts.end * PT);
    let mut o0 = os.start;
    while o0 < os.end {
        let o1 = (o0 + panel).min(os.end);
        for tile in ts.clone() {
            let p0 = tile * PT;
            let runs = out.runs(p0);
            // The common case: the tile's 16 outputs are 16 consecutive bytes.
            let whole = runs.n == 1 && runs.runs[0].2 as usize == PT;
            // Otherwise (columns past `ow` dropped, or the plane's end) the kept lanes,
            // moved together, are still consecutive bytes of each plane (the runs leave no
            // gap); stored as sixteen bytes where the rest of them lie in this part's later
            // outputs, which later tiles of the same channel overwrite.
            let compact =
                !whole && runs.n > 0 && runs.runs[0].1 as usize + PT <= part_end && plain.is_some();
            let squeeze = if compact { Some(squeeze(&runs)) } else { None };
            let mut o = o0;
            while o < o1 {
                let ob = MR.min(o1 - o);
                // SAFETY (whole block): the function's contract; wp walks block o/6.
                let sums = || unsafe {
                    let w = wpk.as_ptr().add((o / MR) * blk_len);
                    if M != PAIRS {
                        block_u8s8::<true, M>(xb.add(p0), steps, w)
                    } else {
                        block(xb.add(p0), steps, w)
                    }
                };
                if let (Some(nr), true, MR) = (plain, whole || compact, ob) {
                    // Its own call of the block, so the accumulators are only ever
                    // indexed by constants here and need not go through the stack.
                    let acc = sums();
                    // The common case in one piece: a full block of six channels, each
                    // tile's sixteen bytes one store per channel, the accumulators kept in
                    // registers and two channels packed together.
                    let at = o * out.pix + runs.runs[0].1 as usize;
                    // SAFETY: AVX2; channels o..o + 6 (< os.end ≤ offs.len(), scales.len(),
                    // checked for `plain`) of this tile are this part's outputs (the
                    // contract), and the span covers them.
                    unsafe {
                        let dst = y.span(at, (MR - 1) * out.pix + PT);
                        store_block_plain(
                            nr,
                            &acc,
                            &q.offs[o..o + MR],
                            &q.scales[o..o + MR],
                            squeeze,
                            dst,
                            out.pix,
                        );
                    }
                    o += ob;
                    continue;
                }
                let acc = sums();
                for (k, acc) in acc.iter().enumerate().take(ob) {
                    let oo = o + k;
                    // SAFETY: AVX2; the pieces are this part's outputs (the contract).
                    unsafe {
                        let bytes = match plain {
                            // The common stage: no PRelu, no clamp narrower than int8.
                            // oo < os.end ≤ offs.len(), scales.len() (checked for `plain`).
                            Some(nr) => {
                                let (off, s) =
                                    (*q.offs.get_unchecked(oo), *q.scales.get_unchecked(oo));
                                let voff = _mm256_set1_epi32(off);
                                nr.pack16_plain(
                                    _mm256_add_epi32(acc[0], voff),
                                    _mm256_add_epi32(acc[1], voff),
                                    _mm256_set1_ps(s),
                                )
                            }
                            None => {
                                let off = q.offs[oo];
                                let (voff, vs) = (_mm256_set1_epi32(off), Scale::of(q, oo));
                                let (a, b) = (
                                    _mm256_add_epi32(acc[0], voff),
                                    _mm256_add_epi32(acc[1], voff),
                                );
                                match narrow {
                                    Some(nr) => nr.pack16(a, b, vs),
                                    None => pack16(rq.lanes_q(a, vs), rq.lanes_q(b, vs)),
                                }
                            }
                        };
                        let base = oo * out.pix;
                        if whole {
                            let at = base + runs.runs[0].1 as usize;
                            let dst = y.piece(at, PT);
                            _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, bytes);
                        } else {
                            let mut lanes = [0i8; PT];
                            _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, bytes);
                            for &(from, at, len) in &runs.runs[..runs.n] {
                                let (from, len) = (from as usize, len as usize);
                                y.piece(base + at as usize, len)
                                    .copy_from_slice(&lanes[from..from + len]);
                            }
                        }
                    }
                }
                o += ob;
            }
        }
        o0 = o1;
    }
}

/// The `vpshufb` control that moves a tile's kept lanes (its runs, in order) to the front.
fn squeeze(runs: &Runs) -> __m128i {
    let mut idx = [0x80u8; PT];
    let mut n = 0;
    for &(from, _, len) in &runs.runs[..runs.n] {
        for l in from..from + len {
            idx[n] = l;
            n += 1;
        }
    }
    // SAFETY: SSE2 (x86_64's base); sixteen bytes from a sixteen-byte array.
    unsafe { _mm_loadu_si128(idx.as_ptr() as *const __m128i) }
}

/// A block's six channels of one tile, requantized by `nr` (plain: no PRelu, no clamp
/// narrower than int8) with each channel's row offset and multiplier, stored as sixteen
/// bytes at `dst + k·pix` for channel `k`; with `squeeze`, the lanes are first moved by
/// that `vpshufb` control (the kept lanes to the front, the rest of the sixteen bytes
/// garbage for later tiles to overwrite).
///
/// # Safety
/// AVX2; `offs` and `scales` hold six values; the six sixteen-byte runs are writable and
/// no other part touches them.
#[inline(always)]
unsafe fn store_block_plain(
    nr: Narrow,
    acc: &[[__m256i; 2]; MR],
    offs: &[i32],
    scales: &[f32],
    squeeze: Option<__m128i>,
    dst: *mut i8,
    pix: usize,
) {
    debug_assert!(offs.len() >= MR && scales.len() >= MR && MR.is_multiple_of(2));
    // SAFETY: the contract above; k + 1 < MR indexes the six values.
    unsafe {
        for k in (0..MR).step_by(2) {
            let with = |k: usize| {
                let off = _mm256_set1_epi32(*offs.get_unchecked(k));
                let [a, b] = acc[k];
                [_mm256_add_epi32(a, off), _mm256_add_epi32(b, off)]
            };
            let mut bytes = nr.pack32_plain(
                with(k),
                with(k + 1),
                _mm256_set1_ps(*scales.get_unchecked(k)),
                _mm256_set1_ps(*scales.get_unchecked(k + 1)),
            );
            if let Some(sq) = squeeze {
                bytes = _mm256_shuffle_epi8(bytes, _mm256_broadcastsi128_si256(sq));
            }
            let d = dst.add(k * pix);
            _mm_storeu_si128(d as *mut __m128i, _mm256_castsi256_si128(bytes));
            _mm_storeu_si128(
                d.add(pix) as *mut __m128i,
                _mm256_extracti128_si256(bytes, 1),
            );
        }
    }
}

/// Two vectors of eight int32 lanes in [−128, 127] as 16 bytes in lane order (saturating
/// packs are exact there).
#[inline(always)]
unsafe fn pack16(a: __m256i, b: __m256i) -> __m128i {
    // SAFETY: AVX2 (the callers' contract); register-only instructions.
    unsafe {
        // Quads (a0–3, b0–3, a4–7, b4–7) → (a0–3, a4–7, b0–3, b4–7).
        let words = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
        _mm_packs_epi16(
            _mm256_castsi256_si128(words),
            _mm256_extracti128_si256(words, 1),
        )
    }
}

/// Packed weights a panel of output channels aims to stay within (L2).
const PANEL_BYTES: usize = 128 * 1024;

/// One register block: 6 output channels × 16 outputs summed over every (pair, tap)
/// offset of `steps`. Twelve named accumulators so that they stay in registers (with the
/// two input vectors and the weight, 15 of the 16).
///
/// # Safety
/// AVX2; `x` + every step + 16 pairs is inside the packed input; `w` holds
/// `steps.len()·6` int32.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn block(x: *const i32, steps: &[usize], w: *const i32) -> [[__m256i; 2]; MR] {
    let z = _mm256_setzero_si256();
    let (mut a00, mut a01, mut a10, mut a11, mut a20, mut a21) = (z, z, z, z, z, z);
    let (mut a30, mut a31, mut a40, mut a41, mut a50, mut a51) = (z, z, z, z, z, z);
    let mut wp = w;
    for &t in steps {
        // SAFETY: the contract above, for every step.
        unsafe {
            let p = x.add(t) as *const __m256i;
            let (x0, x1) = (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)));
            macro_rules! row {
                ($k:expr, $a0:ident, $a1:ident) => {
                    let wv = _mm256_set1_epi32(wp.add($k).read());
                    $a0 = _mm256_add_epi32($a0, _mm256_madd_epi16(x0, wv));
                    $a1 = _mm256_add_epi32($a1, _mm256_madd_epi16(x1, wv));
                };
            }
            row!(0, a00, a01);
            row!(1, a10, a11);
            row!(2, a20, a21);
            row!(3, a30, a31);
            row!(4, a40, a41);
            row!(5, a50, a51);
            wp = wp.add(MR);
        }
    }
    [
        [a00, a01],
        [a10, a11],
        [a20, a21],
        [a30, a31],
        [a40, a41],
        [a50, a51],
    ]
}

/// [`block`] on u8 × s8 quads: each step's int32 holds four bytes (four consecutive `k`).
/// `M` = [`MADD`]: `vpmaddubsw` sums the two products of each byte pair into int16 and
/// `vpmaddwd` with ones sums the two pairs into int32, exact, with no saturation, when the
/// s8 side lies in [−64, 63] (|255·64 + 255·64| < 32767; the callers check that when
/// packing). [`VNNI_EVEX`] / [`VNNI_VEX`]: `vpdpbusd` adds the four products into the
/// int32 accumulator at once, exact for any s8 (the caller checked the CPU has it).
/// `X_UNSIGNED`: the loaded operand `x` holds the u8 (a conv's input) and `w` the s8, or
/// the other way round (FullyConnected: `x` the weights, `w` the input rows).
///
/// # Safety
/// As [`block`], with quads for pairs.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn block_u8s8<const X_UNSIGNED: bool, const M: u8>(
    x: *const i32,
    steps: &[usize],
    w: *const i32,
) -> [[__m256i; 2]; MR] {
    let z = _mm256_setzero_si256();
    let ones = ONES.0.as_ptr();
    let (mut a00, mut a01, mut a10, mut a11, mut a20, mut a21) = (z, z, z, z, z, z);
    let (mut a30, mut a31, mut a40, mut a41, mut a50, mut a51) = (z, z, z, z, z, z);
    let mut wp = w;
    for &t in steps {
        // SAFETY: the contract above, for every step.
        unsafe {
            let p = x.add(t) as *const __m256i;
            let (x0, x1) = (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)));
            macro_rules! row {
                ($k:expr, $a0:ident, $a1:ident) => {
                    let wv = _mm256_set1_epi32(wp.add($k).read());
                    $a0 = quad_dot::<X_UNSIGNED, M>($a0, x0, wv, ones);
                    $a1 = quad_dot::<X_UNSIGNED, M>($a1, x1, wv, ones);
                };
            }
            row!(0, a00, a01);
            row!(1, a10, a11);
            row!(2, a20, a21);
            row!(3, a30, a31);
            row!(4, a40, a41);
            row!(5, a50, a51);
            wp = wp.add(MR);
        }
    }
    [
        [a00, a01],
        [a10, a11],
        [a20, a21],
        [a30, a31],
        [a40, a41],
        [a50, a51],
    ]
}

/// `acc` plus, per int32 lane, the four products of the u8 and s8 bytes of `x` and `w`
/// (`X_UNSIGNED`: `x` holds the u8), by `vpmaddubsw` + `vpmaddwd` ([`MADD`]) or
/// `vpdpbusd` (the VNNI modes).
///
/// # Safety
/// AVX2; `ones` points at sixteen readable int16; a VNNI mode only where the CPU has that
/// encoding (`paths::vnni_hardware`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quad_dot<const X_UNSIGNED: bool, const M: u8>(
    acc: __m256i,
    x: __m256i,
    w: __m256i,
    ones: *const i16,
) -> __m256i {
    let (u, s) = if X_UNSIGNED { (x, w) } else { (w, x) };
    let mut a = acc;
    // SAFETY: the contract above; register-only instructions.
    unsafe {
        match M {
            VNNI_EVEX => core::arch::asm!(
                "vpdpbusd {a}, {u}, {s}",
                a = inout(ymm_reg) a,
                u = in(ymm_reg) u,
                s = in(ymm_reg) s,
                options(pure, nomem, nostack, preserves_flags),
            ),
            VNNI_VEX => core::arch::asm!(
                "{{vex}} vpdpbusd {a}, {u}, {s}",
                a = inout(ymm_reg) a,
                u = in(ymm_reg) u,
                s = in(ymm_reg) s,
                options(pure, nomem, nostack, preserves_flags),
            ),
            _ => a = _mm256_add_epi32(a, madd_ones(_mm256_maddubs_epi16(u, s), ones)),
        }
    }
    a
}

/// How a GEMM block multiplies: int16 pairs (`vpmaddwd`), or u8 × s8 quads through
/// `vpmaddubsw` (7-bit weights) or VNNI's `vpdpbusd` (EVEX or VEX encoded).
pub(super) const PAIRS: u8 = 0;
pub(super) const MADD: u8 = 1;
pub(super) const VNNI_EVEX: u8 = 2;
pub(super) const VNNI_VEX: u8 = 3;

/// The packed kind of a GEMM's weights (stored with them): 0 int16 pairs; 1 quads of 7-bit
/// weights (any quad mode); 2 quads of 8-bit weights (VNNI only, packed where the CPU has
/// it and [`crate::paths::allow_vnni`] allows it).
pub(super) fn quad_kind(seven_bit: bool) -> i32 {
    if seven_bit {
        1
    } else if crate::paths::vnni().is_some() {
        2
    } else {
        0
    }
}

/// The block mode for a packed `kind`: VNNI where allowed (7-bit quads) or packed for it
/// (8-bit quads, which only a CPU with it packs), else `vpmaddubsw`.
pub(super) fn quad_mode(kind: i32) -> u8 {
    use crate::paths::{vnni, vnni_hardware, Vnni};
    let v = match kind {
        0 => return PAIRS,
        1 => vnni(),
        _ => vnni_hardware(),
    };
    match v {
        Some(Vnni::Evex) => VNNI_EVEX,
        Some(Vnni::Vex) => VNNI_VEX,
        None => MADD,
    }
}

/// Count a quad GEMM run (and a VNNI one).
pub(super) fn note_quads(mode: u8) {
    crate::paths::note(crate::paths::Path::GemmU8S8);
    if mode == VNNI_EVEX || mode == VNNI_VEX {
        crate::paths::note(crate::paths::Path::GemmVnni);
    }
}

/// The int16 ones of [`madd_ones`], on a cache line of their own: a stack array aligned
/// to 2 bytes could straddle two lines, and every `vpmaddwd` of `block_u8s8` reads it
/// (24 split loads a step cost a fifth of the u8×s8 GEMM's speed on a Zen 3).
#[repr(C, align(64))]
struct Ones([i16; 16]);
static ONES: Ones = Ones([1; 16]);

/// `vpmaddwd` of `p` with sixteen int16 ones read from memory (`ones`): the int16 pairs
/// summed into int32. In `asm!` so that the ones stay a memory operand: held in a
/// register they push one of `block_u8s8`'s twelve accumulators onto the stack.
///
/// # Safety
/// AVX2; `ones` points at sixteen readable int16.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn madd_ones(p: __m256i, ones: *const i16) -> __m256i {
    let mut r = p;
    // SAFETY: the contract above; reads 32 bytes at `ones`, touches no flags or stack.
    unsafe {
        core::arch::asm!(
            "vpmaddwd {r}, {r}, ymmword ptr [{ones}]",
            r = inout(ymm_reg) r,
            ones = in(reg) ones,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    r
}

/// Whether every weight of the `oc` rows of `k_all` lies in [−64, 63] (7 bits), so the
/// u8×s8 kernel's int16 pair sums cannot saturate.
fn seven_bit(q: &Q<'_>, k_all: usize, oc: usize) -> bool {
    match q.wp {
        Some(_) => {
            (0..oc).all(|o| (0..k_all).all(|k| (-64..=63).contains(&weight(q, k_all, o, k))))
        }
        None => q.w[..oc * k_all].iter().all(|v| (-64..=63).contains(v)),
    }
}

/// Packed u8×s8 weights: block `b`, quad `cq`, tap `t`, row `k` is one int32 holding
/// `w[6b + k][4cq + j][t]` as byte `j` (zero past oc or c).
fn pack_weights_u8s8(g: &Geo, q: &Q<'_>, quads: usize, wpk: &mut [i32]) {
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

/// One image's input as u8 channel quads (`x ^ 0x80 = x + 128` per byte) in the phase
/// planes of [`pack_input`], padded with `zx + 128`.
fn pack_input_u8(g: &Geo, d: &Dims, zx: i8, x: &[i8], quads: usize, xp: &mut [i32]) {
    pack_planes(g, d, quads, xp, |cq, phase, dst| {
        pack_quad(g, d, zx, x, cq, phase, dst)
    });
}

/// Channel quad `cq` of one image into phase plane `phase` (`py·sw + px`), `dst`.
/// Channels past `c` repeat the padding byte (their weights are zero).
fn pack_quad(g: &Geo, d: &Dims, zx: i8, x: &[i8], cq: usize, phase: usize, dst: &mut [i32]) {
    let plane = g.h * g.w;
    let pad_byte = (zx as u8) ^ 0x80;
    let pad = i32::from_le_bytes([pad_byte; 4]);
    let (pt, pl) = (g.pt as usize, g.pl as usize);
    let chans: [Option<&[i8]>; 4] = core::array::from_fn(|j| {
        let c = 4 * cq + j;
        (c < g.c).then(|| &x[c * plane..(c + 1) * plane])
    });
    let (py, px) = (phase / g.sw, phase % g.sw);
    // Unstrided, no column padding, full quad: the plane's rows are one run in the source
    // and in the phase plane (a pointwise conv, a `k×1` kernel, any transposed one), so
    // they interleave as one (no per-row tail); padding rows above and below are fills.
    if let (true, [Some(a), Some(b), Some(c), Some(e)]) = (flat(g, d), chans) {
        let top = pt * d.wq;
        dst[..top].fill(pad);
        interleave4(
            [Some(a), Some(b), Some(c), Some(e)],
            pad_byte,
            0,
            1,
            &mut dst[top..top + plane],
        );
        dst[top + plane..].fill(pad);
        return;
    }
    for r in 0..d.hq {
        let row = &mut dst[r * d.wq..(r + 1) * d.wq];
        let iy = r * g.sh + py;
        if iy < pt || iy - pt >= g.h {
            row.fill(pad);
            continue;
        }
        let iy = iy - pt;
        let rows = chans.map(|c| c.map(|c| &c[iy * g.w..(iy + 1) * g.w]));
        let first = pl.saturating_sub(px).div_ceil(g.sw).min(d.wq);
        let end = (pl + g.w).saturating_sub(px).div_ceil(g.sw).min(d.wq);
        let end = end.max(first);
        row[..first].fill(pad);
        row[end..].fill(pad);
        let ix0 = first * g.sw + px - pl;
        interleave4(rows, pad_byte, ix0, g.sw, &mut row[first..end]);
    }
    dst[d.hq * d.wq..].fill(pad);
}

/// `dst[j]` = the four rows' bytes at `ix0 + j·sw`, each `^ 0x80` (an absent row: `pad`).
#[inline(always)]
fn interleave4(rows: [Option<&[i8]>; 4], pad: u8, ix0: usize, sw: usize, dst: &mut [i32]) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    if let (1, [Some(a), Some(b), Some(c), Some(e)]) = (sw, rows) {
        let r = [a, b, c, e].map(|r| &r[ix0..ix0 + n]);
        // SAFETY: AVX2 is present (the caller of `conv` checked); every row is n long.
        unsafe { interleave4_sw1(r, dst) };
        return;
    }
    let mut j = 0;
    if sw <= 2 {
        // SAFETY: AVX2 is present (the caller of `conv` checked).
        j = unsafe { interleave4_sw12(rows, pad, ix0, sw, dst) };
    }
    for (j, d) in dst.iter_mut().enumerate().skip(j) {
        let ix = ix0 + j * sw;
        *d = i32::from_le_bytes(rows.map(|r| r.map_or(pad, |r| r[ix] as u8 ^ 0x80)));
    }
}

/// `interleave4` for strides 1 and 2 with absent rows (a last quad of fewer than four
/// channels: a stem's three), sixteen outputs a step while every present row holds the
/// bytes a step loads; returns how many outputs it wrote (the caller does the rest).
#[target_feature(enable = "avx2")]
unsafe fn interleave4_sw12(
    rows: [Option<&[i8]>; 4],
    pad: u8,
    ix0: usize,
    sw: usize,
    dst: &mut [i32],
) -> usize {
    debug_assert!(sw == 1 || sw == 2);
    let n = dst.len();
    // A step loads 16·sw bytes from ix0 + sw·j of each present row.
    let fit = rows
        .iter()
        .flatten()
        .map(|r| match r.len().checked_sub(ix0 + 16 * sw) {
            // Steps j with ix0 + sw·j + 16·sw <= len.
            Some(room) => room / sw + 16,
            None => 0,
        })
        .min()
        .unwrap_or(usize::MAX)
        .min(n);
    let flip = _mm_set1_epi8(-128);
    let padv = _mm_set1_epi8(pad as i8);
    // Even bytes of each 128-bit lane to its low eight.
    let evens = _mm256_setr_epi8(
        0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1, 0, 2, 4, 6, 8, 10, 12, 14, -1,
        -1, -1, -1, -1, -1, -1, -1,
    );
    let mut j = 0;
    while j + 16 <= fit {
        // SAFETY: j + 16 <= fit: each present row holds 16·sw bytes from ix0 + sw·j, and
        // dst 16 int32 from j.
        unsafe {
            let ld = |r: Option<&[i8]>| match r {
                None => padv,
                Some(r) if sw == 1 => {
                    _mm_xor_si128(_mm_loadu_si128(r.as_ptr().add(ix0 + j) as *const _), flip)
                }
                Some(r) => {
                    let v = _mm256_loadu_si256(r.as_ptr().add(ix0 + 2 * j) as *const _);
                    let e = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, evens), 0b1000);
                    _mm_xor_si128(_mm256_castsi256_si128(e), flip)
                }
            };
            let (a, b, c, e) = (ld(rows[0]), ld(rows[1]), ld(rows[2]), ld(rows[3]));
            quads16([a, b, c, e], dst.as_mut_ptr().add(j));
        }
        j += 16;
    }
    j
}

/// Sixteen int32 at `d`: int32 `j` holds byte `j` of each of the four vectors, in order.
///
/// # Safety
/// AVX2; `d` holds sixteen writable int32.
#[inline(always)]
unsafe fn quads16([a, b, c, e]: [__m128i; 4], d: *mut i32) {
    // SAFETY: the caller's contract; four 16-byte stores into d's 64 bytes.
    unsafe {
        let (ab0, ab1) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
        let (ce0, ce1) = (_mm_unpacklo_epi8(c, e), _mm_unpackhi_epi8(c, e));
        let d = d as *mut __m128i;
        _mm_storeu_si128(d, _mm_unpacklo_epi16(ab0, ce0));
        _mm_storeu_si128(d.add(1), _mm_unpackhi_epi16(ab0, ce0));
        _mm_storeu_si128(d.add(2), _mm_unpacklo_epi16(ab1, ce1));
        _mm_storeu_si128(d.add(3), _mm_unpackhi_epi16(ab1, ce1));
    }
}

/// `dst[j]` = bytes `r[0][j]..r[3][j]`, each `^ 0x80`, 32 (then 16) at a time.
#[target_feature(enable = "avx2")]
unsafe fn interleave4_sw1(r: [&[i8]; 4], dst: &mut [i32]) {
    let n = r.iter().fold(dst.len(), |n, r| n.min(r.len()));
    let flip = _mm_set1_epi8(-128);
    let flip256 = _mm256_set1_epi8(-128);
    let mut j = 0;
    while j + 32 <= n {
        // SAFETY: j + 32 <= n: 32 bytes of every row, 32 int32 of dst.
        unsafe {
            let ld = |r: &[i8]| {
                _mm256_xor_si256(
                    _mm256_loadu_si256(r.as_ptr().add(j) as *const __m256i),
                    flip256,
                )
            };
            let (a, b, c, e) = (ld(r[0]), ld(r[1]), ld(r[2]), ld(r[3]));
            // Per 128-bit lane, as the 16-wide step below: lane 0 holds quads 0..15 of
            // the 32, lane 1 quads 16..31, four at a time in q0..q3.
            let (ab0, ab1) = (_mm256_unpacklo_epi8(a, b), _mm256_unpackhi_epi8(a, b));
            let (ce0, ce1) = (_mm256_unpacklo_epi8(c, e), _mm256_unpackhi_epi8(c, e));
            let q0 = _mm256_unpacklo_epi16(ab0, ce0);
            let q1 = _mm256_unpackhi_epi16(ab0, ce0);
            let q2 = _mm256_unpacklo_epi16(ab1, ce1);
            let q3 = _mm256_unpackhi_epi16(ab1, ce1);
            let d = dst.as_mut_ptr().add(j) as *mut __m256i;
            _mm256_storeu_si256(d, _mm256_permute2x128_si256(q0, q1, 0x20));
            _mm256_storeu_si256(d.add(1), _mm256_permute2x128_si256(q2, q3, 0x20));
            _mm256_storeu_si256(d.add(2), _mm256_permute2x128_si256(q0, q1, 0x31));
            _mm256_storeu_si256(d.add(3), _mm256_permute2x128_si256(q2, q3, 0x31));
        }
        j += 32;
    }
    while j + 16 <= n {
        // SAFETY: j + 16 <= n: 16 bytes of every row, 16 int32 of dst.
        unsafe {
            let ld = |r: &[i8]| {
                _mm_xor_si128(_mm_loadu_si128(r.as_ptr().add(j) as *const __m128i), flip)
            };
            let (a, b, c, e) = (ld(r[0]), ld(r[1]), ld(r[2]), ld(r[3]));
            quads16([a, b, c, e], dst.as_mut_ptr().add(j));
        }
        j += 16;
    }
    for k in j..n {
        dst[k] = i32::from_le_bytes(r.map(|r| r[k] as u8 ^ 0x80));
    }
}

//! One-group int8 convs as an implicit GEMM on AMX tiles (x86_64 CPUs with AMX-INT8,
//! Linux, `std`), bit-exact with `conv::conv_i8` (`tests/exact_amx.rs`).
//!
//! The input is staged once per image as bytes `u = x + 128` in a padded channels-last
//! plane (`[row][column][channel]`, padding `zx + 128`, so that `u − zx − 128` is 0
//! there). In it, kernel row `ky` of output pixel `(oy, ox)` is one run of `kw·c` bytes
//! from `(oy·sh + ky·dh, ox·sw)`, and the runs of neighbouring pixels of an output row lie
//! `sw·c` bytes apart: 16 pixels' runs are one A tile with that stride, read in place, no
//! im2col. Each run is read in 64-byte steps up to `kp = ⌈kw·c/64⌉·64` bytes; the weights
//! are laid out to match (`[oc][ky][kp]`, kernel column then channel, zero past `kw·c`), so
//! the bytes a step reads past a run meet zero weights. B is those weights in the FC
//! block's quad panels (`mm::pack_fc`), packed once per model with a pack cache.
//!
//! The sums are `Σ u·w`; the offset `bias − (zx + 128)·Σw` makes them `Σ (x − zx)·w +
//! bias`, the reference's accumulator, and the FC block's output stage (`mm::I8Out`, with
//! a folded PRelu's second multiplier) requantizes them. Each tile's 16 pixels × 16
//! channels of outputs are transposed in registers and stored into the channel planes.

extern crate std;
use std::cell::RefCell;
use std::vec::Vec;

use core::arch::x86_64::*;

use super::amx::{block, Tiles, TK, TM};
use super::avx2::{Narrow, Requant, Scale};
use super::mm::{pack_fc, use_tiles, Cols, I8Out, Stage, NR};
use crate::conv::Geo;

/// The packing kind word of these convs' weights in the `prepack` cache.
const CONV_PACK: u32 = 0x4100_0000;

/// Largest staged plane, packed weight matrix and pixel-major output this path takes
/// (bytes; a bound against hostile shapes, as `mm::MAX_KN`).
const MAX_BYTES: usize = 1 << 26;

/// Fewest bytes of K (`kh` runs of `kp`) worth the tiles: below four tile steps a block's
/// products take less time than its output stage, and the AVX2 implicit GEMM is as fast
/// (measured on openWakeWord's embedding convs: 3×1 over 48 channels 1.4× slower on the
/// tiles, 3×3 over 24 channels 1.6× faster).
const MIN_DEPTH: usize = 256;

/// Bytes of kernel row `kw·c` rounded up to whole tile steps.
fn run_bytes(g: &Geo) -> usize {
    (g.kw * g.c).div_ceil(TK) * TK
}

/// Whether this path takes the conv: one group, kernel columns adjacent (`dw` 1),
/// non-negative pads, AMX in use with VNNI, runs long enough that rounding them up to 64
/// bytes at most doubles them, at least `MIN_DEPTH` bytes of K, enough products to pay for
/// the staging, and buffers within `MAX_BYTES`.
pub(super) fn fits(g: &Geo, packed: bool) -> bool {
    if packed
        || g.g != 1
        || g.dw != 1
        || g.pt < 0
        || g.pl < 0
        || g.c == 0
        || g.oc == 0
        || g.oh == 0
        || g.ow == 0
        || !crate::paths::amx()
        || crate::paths::vnni().is_none()
    {
        return false;
    }
    let run = g.kw * g.c;
    if run < 32 || 2 * run < run_bytes(g) || g.kh * run_bytes(g) < MIN_DEPTH {
        return false;
    }
    let Some(macs) = (g.n * g.oh * g.ow)
        .checked_mul(g.oc)
        .and_then(|v| v.checked_mul(run * g.kh))
    else {
        return false;
    };
    let (hp, wp) = plane(g);
    let staged = hp
        .checked_mul(wp)
        .and_then(|v| v.checked_mul(g.c))
        .unwrap_or(usize::MAX);
    let weights = g.oc.saturating_mul(g.kh * run_bytes(g));
    let out = (g.oh * g.ow).saturating_mul(g.oc);
    macs >= 1 << 20
        && macs / g.n >= MIN_MACS_PER_STAGED * staged
        && staged <= MAX_BYTES
        && weights <= MAX_BYTES
        && out <= MAX_BYTES
}

/// Fewest multiply-adds per staged input byte (an image's) worth the staging: below it
/// (a 1×1 conv to fewer than 64 channels) staging the plane channels-last costs as much
/// as the tiles save, and the AVX-512 / AVX2 kernels, which read the channel planes in
/// place, are as fast on one thread and faster on two (MobileNetV2's 288 → 48 over 28×28:
/// 74 against 73 µs, 82 against 57 at two threads; `tests/exact_amx.rs`
/// `amx_conv_throughput`).
const MIN_MACS_PER_STAGED: usize = 64;

/// The staged plane's rows and columns: the padded input as far as any window reaches.
fn plane(g: &Geo) -> (usize, usize) {
    let (pt, pl) = (g.pt as usize, g.pl as usize);
    let hp = (pt + g.h).max((g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1);
    let wp = (pl + g.w).max((g.ow - 1) * g.sw + g.kw);
    (hp, wp.div_ceil(g.sw) * g.sw)
}

/// How output pixels map to A tiles' rows. With a vertical stride of 1, one raster of
/// `wp / sw` virtual pixels an output row, whose pixel `v` starts at staged byte
/// `v·sw·c`: 16 consecutive ones are a tile even across output rows (the `wp/sw − ow`
/// virtual pixels past each row's end are computed and dropped), so narrow maps fill
/// their tiles. Otherwise each output row's pixels in tiles of their own.
#[derive(Clone, Copy)]
struct Raster {
    /// Virtual pixels an output row (`wp / sw`), or `None`: tiles by output row.
    across: Option<usize>,
    /// Tiles of one output row (row tiles only).
    per_row: usize,
    /// Tiles in all.
    tiles: usize,
}

impl Raster {
    fn of(g: &Geo) -> Raster {
        let (_, wp) = plane(g);
        let per_row = g.ow.div_ceil(TM);
        if g.sh == 1 {
            let v = wp / g.sw;
            let tiles = ((g.oh - 1) * v + g.ow).div_ceil(TM);
            Raster {
                across: Some(v),
                per_row,
                tiles,
            }
        } else {
            Raster {
                across: None,
                per_row,
                tiles: g.oh * per_row,
            }
        }
    }

    /// Tile `t`'s first staged byte.
    fn start(&self, g: &Geo, wp: usize, t: usize) -> usize {
        match self.across {
            Some(_) => TM * t * g.sw * g.c,
            None => {
                let (oy, ox0) = (t / self.per_row, TM * (t % self.per_row));
                (oy * g.sh * wp + ox0 * g.sw) * g.c
            }
        }
    }

    /// Tile `t`'s rows' output pixels, in order.
    fn first(&self, t: usize) -> Pixels {
        match self.across {
            Some(v) => Pixels {
                oy: TM * t / v,
                ox: TM * t % v,
                row: v,
            },
            None => Pixels {
                oy: t / self.per_row,
                ox: TM * (t % self.per_row),
                row: usize::MAX,
            },
        }
    }
}

/// A walk over a tile's rows: the output pixel of each (`oy·ow + ox`), or `None` for a
/// virtual one (past a row's end or the last row).
struct Pixels {
    oy: usize,
    ox: usize,
    /// Virtual pixels an output row (`usize::MAX`: tiles by output row).
    row: usize,
}

impl Pixels {
    #[inline(always)]
    fn next(&mut self, g: &Geo) -> Option<usize> {
        let (oy, ox) = (self.oy, self.ox);
        self.ox += 1;
        if self.ox == self.row {
            self.ox = 0;
            self.oy += 1;
        }
        (oy < g.oh && ox < g.ow).then_some(oy * g.ow + ox)
    }
}

/// The staged plane, the weights laid out before packing, the packing scratch.
type Scratch = (Vec<u8>, Vec<i8>, Vec<i32>);

std::thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// The conv (`fits` said yes; the caller checked the operands' lengths as for every conv
/// path); `false`, nothing written, where the packed weights cannot go on the tiles (the
/// caller takes its next path).
pub(super) fn conv(g: &Geo, q: &super::Q<'_>, y: &mut [i8]) -> bool {
    let kp = run_bytes(g);
    let kk = g.kh * kp;
    let n16 = g.oc.div_ceil(NR) * NR;
    let key = (q.w.as_ptr() as usize, q.w.len(), CONV_PACK);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (staged, wl, bscratch) = &mut *s;
        let build = |v: &mut Vec<i32>| {
            // [oc][ky][kp]: kernel column, then channel; zero past kw·c.
            wl.clear();
            wl.resize(g.oc * kk, 0);
            let taps = g.kh * g.kw;
            for o in 0..g.oc {
                for ch in 0..g.c {
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            wl[o * kk + ky * kp + kx * g.c + ch] =
                                q.w[(o * g.c + ch) * taps + ky * g.kw + kx];
                        }
                    }
                }
            }
            pack_fc(v, wl, g.oc, kk);
        };
        crate::prepack::with_packed(key, bscratch, build, |packed| {
            let mode = super::direct::quad_mode(packed[0]);
            let (wsum, bp) = packed[1..].split_at(n16);
            // `fits` asked for VNNI and AMX and pack_fc leaves the slack, so this holds;
            // checked all the same, since the tiles read up to the slack.
            if !use_tiles(mode, bp, g.oc, kk) {
                return false;
            }
            super::direct::note_quads(mode);
            crate::paths::note(crate::paths::Path::ConvAmx);
            let zsum = q.zx + 128;
            let offs: Vec<i32> = (0..n16)
                .map(|j| {
                    if j < g.oc {
                        q.bias
                            .map_or(0, |b| b[j])
                            .wrapping_sub(zsum.wrapping_mul(wsum[j]))
                    } else {
                        0
                    }
                })
                .collect();
            let col = |f: &dyn Fn(usize) -> f32| -> Vec<f32> {
                (0..n16)
                    .map(|j| if j < g.oc { f(j) } else { 1.0 })
                    .collect()
            };
            let sc = col(&|j| q.scales[j]);
            let neg = q.neg.map(|_| col(&|j| q.neg_scale(j)));
            let stage = I8Out {
                cols: Cols::PerColumn(&offs, &sc, neg.as_deref()),
                rows: None,
                rq: Requant::new(q.lo, q.hi, q.zy),
            };
            // The narrow stage where it is exact (`Narrow::of`): the same bytes, with
            // each tile's column offsets and multipliers loaded once.
            let fast = Narrow::of(q).map(|nr| FastCols {
                nr,
                offs: &offs,
                pos: &sc,
                neg: neg.as_deref().unwrap_or(&sc),
            });
            let pix = g.oh * g.ow;
            let plane_len = g.c * g.h * g.w;
            for (img, yo) in y.chunks_exact_mut(g.oc * pix).take(g.n).enumerate() {
                stage_plane(
                    g,
                    &q.x[img * plane_len..(img + 1) * plane_len],
                    q.zx,
                    staged,
                );
                image(g, staged, bp, kp, &stage, fast, yo);
            }
            true
        })
    })
}

/// One image's channel planes `x` (`[c][h][w]`) into `staged` as bytes `x + 128` in the
/// padded channels-last plane ([`plane`]), `zx + 128` around them, then zero slack that
/// the last tiles' reads may reach.
fn stage_plane(g: &Geo, x: &[i8], zx: i32, staged: &mut Vec<u8>) {
    let (hp, wp) = plane(g);
    let (pt, pl, c) = (g.pt as usize, g.pl as usize, g.c);
    let len = hp * wp * c;
    let slack = (TM * g.sw + g.kw) * c + run_bytes(g) + TK;
    let plane = g.h * g.w;
    if hp == g.h && wp == g.w {
        // No padding: the runs below write every byte of the plane; only the slack is
        // set here (no fill of bytes about to be written).
        staged.truncate(len);
        staged.resize(len + slack, 0);
    } else {
        staged.clear();
        staged.resize(len, (zx + 128) as u8);
        staged.resize(len + slack, 0);
    }
    // Input rows split across the lent threads: each writes its own staged rows. With no
    // horizontal padding (every 1×1 conv) the staged rows follow each other as the input
    // rows do, so a part's rows are one run of pixels.
    let shared = crate::par::SharedMut::new(&mut staged[..]);
    let work = (c * plane) as u64 * STAGE_WORK;
    let one_run = pl == 0 && wp == g.w;
    // A part of a run takes at least 16 pixels (one transpose step).
    let align = if one_run { 16usize.div_ceil(g.w) } else { 1 };
    crate::par::par_ranges(g.h, align, work, |ys| {
        if one_run {
            // SAFETY: rows ys' w·c bytes each, adjacent; parts' row ranges are disjoint.
            let run = unsafe { shared.piece((pt + ys.start) * wp * c, ys.len() * g.w * c) };
            stage_run(x, plane, ys.start * g.w, ys.len() * g.w, c, run);
            return;
        }
        for yy in ys {
            // SAFETY: row yy's w·c bytes; rows are disjoint, each in one part.
            let row = unsafe { shared.piece(((pt + yy) * wp + pl) * c, g.w * c) };
            stage_run(x, plane, yy * g.w, g.w, c, row);
        }
    });
}

/// Work units (`crate::par`) per staged byte.
const STAGE_WORK: u64 = 8;

/// Pixels `at..at + n` of every channel plane of `x` (`plane` values apart) as `x + 128`
/// into `run` (`[pixel][channel]`, `n·c` bytes): sixteen channels × sixteen pixels a
/// step through a byte transpose, the channels left over four at a time, then one.
fn stage_run(x: &[i8], plane: usize, at: usize, n: usize, c: usize, run: &mut [u8]) {
    let mut ch = 0;
    // Sixteen channels' loads of sixteen bytes from `at` stay within x (short runs read
    // past their pixels, into the planes' next rows).
    let fits = |ch: usize| (ch + 15) * plane + at + n.max(16) <= x.len();
    let whole = n > 0 && run.len() >= n * c;
    while whole && ch + 16 <= c && fits(ch) {
        // SAFETY: SSE2 (every x86_64); channels ch..ch + 16 hold max(n, 16) bytes from
        // at within x (`fits`), and run holds n·c bytes.
        unsafe { sixteens(x, plane, ch, at, n, c, run) };
        ch += 16;
    }
    // Four channels at a time: their bytes interleaved into pixel quads.
    if crate::paths::avx2() {
        while ch + 4 <= c {
            // SAFETY: AVX2 (checked above); the four rows lie in x, the n pixels' bytes
            // ch..ch + 4 in `run`.
            unsafe { quads(x, plane, ch, at, n, c, run) };
            ch += 4;
        }
    }
    for ch in ch..c {
        let src = &x[ch * plane + at..][..n];
        for (px, &v) in src.iter().enumerate() {
            run[px * c + ch] = (v as u8) ^ 0x80;
        }
    }
}

/// Channels `ch..ch + 16` of pixels `at..at + n` as `x + 128` into
/// `run[px·c + ch..][..16]`: sixteen 16-byte channel rows transposed into sixteen pixels'
/// channel bytes a step. Where 16 does not divide `n`, the last step overlaps the one
/// before (it writes the same bytes again); a run shorter than 16 reads 16 bytes and
/// stores its `n` pixels.
///
/// # Safety
/// `n >= 1`, `ch + 16 <= c`; channels `ch..ch + 16` hold `max(n, 16)` values from `at`
/// in their planes within `x`; `run` holds `n·c` bytes.
unsafe fn sixteens(
    x: &[i8],
    plane: usize,
    ch: usize,
    at: usize,
    n: usize,
    c: usize,
    run: &mut [u8],
) {
    debug_assert!(n >= 1 && ch + 16 <= c && run.len() >= n * c);
    debug_assert!(x.len() >= (ch + 15) * plane + at + n.max(16));
    let flip = _mm_set1_epi8(-128);
    let mut p0 = 0;
    loop {
        let p = p0.min(n.saturating_sub(16));
        // SAFETY: channel ch + i's bytes at + p..at + p + 16 lie in x (p + 16 <=
        // max(n, 16)); pixel p + j's 16 bytes from ch lie in run for p + j < n
        // ((p + j)·c + ch + 16 <= n·c).
        unsafe {
            let rows: [__m128i; 16] = core::array::from_fn(|i| {
                let src = x.as_ptr().add((ch + i) * plane + at + p);
                _mm_xor_si128(_mm_loadu_si128(src.cast()), flip)
            });
            let pixels = super::depthwise_cl::transpose16(rows);
            for (j, v) in pixels.iter().enumerate().take(n - p) {
                let dst = run.as_mut_ptr().add((p + j) * c + ch);
                _mm_storeu_si128(dst.cast(), *v);
            }
        }
        if p0 + 16 >= n {
            return;
        }
        p0 += 16;
    }
}

/// Channels `ch..ch + 4` of pixels `0..w` of one run (from `at` in each plane) as
/// `x + 128` into `row[px·c + ch..][..4]`: 32 pixels a step, four rows interleaved by
/// unpacks, then a 4-byte store per pixel.
///
/// # Safety
/// AVX2; channels `ch..ch + 4` have `at + w` values in their planes within `x`; `row`
/// holds `w·c` bytes and `ch + 4 <= c`.
#[target_feature(enable = "avx2")]
unsafe fn quads(x: &[i8], plane: usize, ch: usize, at: usize, w: usize, c: usize, row: &mut [u8]) {
    debug_assert!(ch + 4 <= c && row.len() >= w * c && x.len() >= (ch + 3) * plane + at + w);
    let flip = _mm256_set1_epi8(-128);
    let row_of = |i: usize| &x[(ch + i) * plane + at..][..w];
    let src = [row_of(0), row_of(1), row_of(2), row_of(3)];
    let mut px = 0;
    // SAFETY: loads at px + 32 <= w within each source row; each store writes 4 bytes at
    // (px + i)·c + ch, within row (ch + 4 <= c, px + i < w).
    unsafe {
        while px + 32 <= w {
            let a = _mm256_xor_si256(_mm256_loadu_si256(src[0].as_ptr().add(px).cast()), flip);
            let b = _mm256_xor_si256(_mm256_loadu_si256(src[1].as_ptr().add(px).cast()), flip);
            let cc = _mm256_xor_si256(_mm256_loadu_si256(src[2].as_ptr().add(px).cast()), flip);
            let d = _mm256_xor_si256(_mm256_loadu_si256(src[3].as_ptr().add(px).cast()), flip);
            // Bytes (a, b) and (c, d) paired, then the pairs paired: each 32-bit lane one
            // pixel's four channels. The unpacks work within 128-bit halves.
            let ab_lo = _mm256_unpacklo_epi8(a, b);
            let ab_hi = _mm256_unpackhi_epi8(a, b);
            let cd_lo = _mm256_unpacklo_epi8(cc, d);
            let cd_hi = _mm256_unpackhi_epi8(cc, d);
            let q = [
                _mm256_unpacklo_epi16(ab_lo, cd_lo),
                _mm256_unpackhi_epi16(ab_lo, cd_lo),
                _mm256_unpacklo_epi16(ab_hi, cd_hi),
                _mm256_unpackhi_epi16(ab_hi, cd_hi),
            ];
            let mut lanes = [0u32; 32];
            for (k, v) in q.iter().enumerate() {
                _mm256_storeu_si256(lanes.as_mut_ptr().add(8 * k) as *mut __m256i, *v);
            }
            // q[k] lane j (half h = j / 4): pixel 16·h + 4·k + j % 4.
            for (k, chunk) in lanes.chunks_exact(8).enumerate() {
                for (j, &v) in chunk.iter().enumerate() {
                    let p = px + 16 * (j / 4) + 4 * k + j % 4;
                    core::ptr::write_unaligned(row.as_mut_ptr().add(p * c + ch) as *mut u32, v);
                }
            }
            px += 32;
        }
    }
    for p in px..w {
        for i in 0..4 {
            row[p * c + ch + i] = (src[i][p] as u8) ^ 0x80;
        }
    }
}

/// One staged image: every output row's pixels 16 at a time (two such tiles a block),
/// every 32 output channels, into the image's channel planes `out`, split across the
/// lent threads by blocks or by pairs of column panels.
#[allow(clippy::too_many_arguments)]
fn image<S: Stage<Out = i8>>(
    g: &Geo,
    staged: &[u8],
    bp: &[i32],
    kp: usize,
    stage: &S,
    fast: Option<FastCols<'_>>,
    out: &mut [i8],
) {
    let blocks = Raster::of(g).tiles.div_ceil(2);
    let pairs = g.oc.div_ceil(2 * NR);
    let work = (g.oh * g.ow * g.oc) as u64 * (g.kh * kp) as u64;
    let shared = crate::par::SharedMut::new(out);
    let run = |range: core::ops::Range<usize>, cols: core::ops::Range<usize>| {
        // SAFETY: AVX2 and AMX (`fits`, `use_tiles`); the staged plane has `plane`'s rows
        // and columns plus the slack; bp the panels and slack use_tiles checked; each
        // part writes its own blocks' pixels or its own column pairs only.
        unsafe { blocks_amx(g, staged, bp, kp, stage, fast, range, cols, &shared) };
    };
    if crate::par::parts_for(work) <= 1 {
        return run(0..blocks, 0..pairs);
    }
    // By blocks of pixels or pairs of column panels, whichever leaves the busiest thread
    // the smaller share; where the weights are the larger operand, by columns unless
    // blocks are more than a tenth evener, so that each thread reads only its part of
    // them (a 7×7 map is two blocks, one a thread, and 1792 output channels 56 pairs, 28
    // a thread: by pixels each thread streamed all 800 KB of the weights, by columns
    // half: MobileNetV2's last conv 169 → 117 µs at two threads; 224 → 1344 over 7×7,
    // 42 pairs split 22 + 20, 45.9 → 42.0 µs, `exact_amx`'s `amx_conv_throughput`).
    let ((pb, sb), (pc, sc)) = (
        crate::par::parts_and_span(work, blocks),
        crate::par::parts_and_span(work, pairs),
    );
    let (share_b, share_c) = (sb * pairs, sc * blocks);
    let weights_larger = g.oc * g.kh * kp > staged.len();
    let by_blocks = if weights_larger {
        share_b * 11 < share_c * 10
    } else {
        share_b <= share_c
    };
    let parts = if by_blocks { pb } else { pc };
    crate::par::run(parts, |i| {
        if by_blocks {
            run(crate::par::split(blocks, parts, 1, i), 0..pairs);
        } else {
            run(0..blocks, crate::par::split(pairs, parts, 1, i));
        }
    });
}

/// Output channels `j..j + rows.len()` of a tile's pixels (`pixels`, in order; `None`
/// for a virtual one) into their channel planes (`pix` bytes each) of `out`: row `c`
/// byte `r` is pixel `pixels[r]` of channel `j + c`. Sixteen adjacent pixels are one
/// 16-byte store a channel; otherwise each run of adjacent ones is a copy.
fn put_planes(
    rows: &[__m128i],
    pixels: &[Option<usize>; TM],
    j: usize,
    pix: usize,
    out: &crate::par::SharedMut<'_, i8>,
) {
    if let (Some(p0), Some(last)) = (pixels[0], pixels[TM - 1]) {
        if last == p0 + TM - 1 {
            for (c, v) in rows.iter().enumerate() {
                // SAFETY: pixels p0..p0 + 16 of plane j + c, this tile's own (the caller's
                // part owns the tile's pixels in every plane it writes).
                let dst = unsafe { out.piece((j + c) * pix + p0, TM) };
                // SAFETY: dst holds 16 bytes; SSE2 on every x86_64.
                unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), *v) };
            }
            return;
        }
    }
    // The runs of adjacent pixels (first row, end row, first pixel), found once.
    let mut runs = [(0, 0, 0); TM];
    let (mut n, mut r) = (0, 0);
    while r < TM {
        let Some(p) = pixels[r] else {
            r += 1;
            continue;
        };
        let mut e = r + 1;
        while e < TM && pixels[e] == Some(p + (e - r)) {
            e += 1;
        }
        runs[n] = (r, e, p);
        n += 1;
        r = e;
    }
    for (c, v) in rows.iter().enumerate() {
        let mut b = [0i8; TM];
        // SAFETY: 16 bytes into b; SSE2.
        unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), *v) };
        for &(r, e, p) in &runs[..n] {
            // SAFETY: pixels p..p + (e − r) of plane j + c, this tile's own.
            let dst = unsafe { out.piece((j + c) * pix + p, e - r) };
            dst.copy_from_slice(&b[r..e]);
        }
    }
}

/// The narrow output stage's columns ([`Narrow`], where its `of` allows: exact, the same
/// bytes as [`I8Out`]): per output channel the offset added to the sums and the multipliers
/// for sums at or above zero (`pos`) and below (`neg`), `n16` long.
#[derive(Clone, Copy)]
struct FastCols<'a> {
    nr: Narrow,
    offs: &'a [i32],
    pos: &'a [f32],
    neg: &'a [f32],
}

impl FastCols<'_> {
    /// Rows `r0..r0 + 16` of `acc` (32 × 32 sums), columns `c0..c0 + 16`, which are output
    /// channels `j..j + 16`: each row's sixteen channels as bytes into `m`.
    ///
    /// # Safety
    /// AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn sixteen(
        &self,
        acc: &[i32; 32 * 32],
        r0: usize,
        c0: usize,
        j: usize,
        m: &mut [__m128i; TM],
    ) {
        assert!(r0 + TM <= 32 && c0 + NR <= 32);
        let (offs, pos, neg) = (
            &self.offs[j..j + NR],
            &self.pos[j..j + NR],
            &self.neg[j..j + NR],
        );
        let lanes = |v: &[f32]| -> [f32; 8] { core::array::from_fn(|i| v[i]) };
        let s = [
            Scale::from_lanes(&lanes(&pos[..8]), &lanes(&neg[..8])),
            Scale::from_lanes(&lanes(&pos[8..]), &lanes(&neg[8..])),
        ];
        // SAFETY: 8 i32 from each half of `offs` (16 long, sliced above).
        let off = unsafe {
            [
                _mm256_loadu_si256(offs.as_ptr() as *const __m256i),
                _mm256_loadu_si256(offs.as_ptr().add(8) as *const __m256i),
            ]
        };
        for (r, mr) in m.iter_mut().enumerate() {
            // SAFETY: row r0 + r, columns c0..c0 + 16 of acc (asserted above); AVX2.
            unsafe {
                let v = acc.as_ptr().add((r0 + r) * 32 + c0) as *const __m256i;
                let a = _mm256_add_epi32(_mm256_loadu_si256(v), off[0]);
                let b = _mm256_add_epi32(_mm256_loadu_si256(v.add(1)), off[1]);
                let nr = self.nr;
                let w = nr.words(nr.scaled(a, s[0]), nr.scaled(b, s[1]));
                // Quads (a0–3, b0–3, a4–7, b4–7) → (a0–3, a4–7, b0–3, b4–7).
                let w = _mm256_permute4x64_epi64(w, 0xD8);
                *mr = nr.bytes(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            }
        }
    }
}

/// Blocks `range` of [`image`], column pairs `cols` (32 output channels each).
///
/// # Safety
/// As [`image`]'s call: AVX2 and AMX usable; `staged`, `bp` as there; the pieces of
/// `out` these blocks and columns write are no other thread's.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn blocks_amx<S: Stage<Out = i8>>(
    g: &Geo,
    staged: &[u8],
    bp: &[i32],
    kp: usize,
    stage: &S,
    fast: Option<FastCols<'_>>,
    range: core::ops::Range<usize>,
    cols: core::ops::Range<usize>,
    out: &crate::par::SharedMut<'_, i8>,
) {
    let (_, wp) = plane(g);
    let raster = Raster::of(g);
    let tiles = raster.tiles;
    let c = g.c;
    let sa = g.sw * c;
    let steps = kp / TK;
    let kk = g.kh * kp;
    let mut acc = [0i32; 32 * 32];
    let mut tmp = [0i8; NR];
    let pix = g.oh * g.ow;
    // SAFETY: the contract above.
    let _tiles = unsafe { Tiles::new() };
    let a = staged.as_ptr();
    let b = bp.as_ptr() as *const u8;
    for pair in cols {
        let j0 = 2 * NR * pair;
        let two = j0 + NR < g.oc;
        // Panel j0/16 and the next: kk/4 quad rows of 64 bytes each.
        // SAFETY: within bp (use_tiles checked the panels and the slack).
        let (b0, b1) = unsafe {
            let b0 = b.add(j0 * (kk / 4) * 4);
            (b0, if two { b0.add(NR * (kk / 4) * 4) } else { b0 })
        };
        for blk in range.clone() {
            let t0 = 2 * blk;
            let rows2 = t0 + 1 < tiles;
            let at0 = raster.start(g, wp, t0);
            let at1 = if rows2 {
                raster.start(g, wp, t0 + 1)
            } else {
                at0
            };
            // Step (ky, s): A from kernel row ky's run, byte 64·s; B from quad row
            // (ky·kp + 64·s)/4 of the panels, 64 bytes a row.
            let walk = (0..g.kh).flat_map(|ky| {
                (0..steps).map(move |s| (ky * g.dh * wp * c + s * TK, (ky * kp + s * TK) * 16))
            });
            // SAFETY: the tiles read from at0/at1 plus every step lie in the staged plane
            // and its slack (`plane`, `stage_plane`); B's within bp; acc is 32 × 32.
            unsafe {
                let (a0, a1) = (a.add(at0), a.add(at1));
                let cp = acc.as_mut_ptr();
                match (rows2, two) {
                    (true, true) => block::<true, true>(a0, a1, sa, b0, b1, walk, cp),
                    (true, false) => block::<true, false>(a0, a1, sa, b0, b1, walk, cp),
                    (false, true) => block::<false, true>(a0, a1, sa, b0, b1, walk, cp),
                    (false, false) => block::<false, false>(a0, a1, sa, b0, b1, walk, cp),
                }
            }
            for half in 0..1 + rows2 as usize {
                let mut px = raster.first(t0 + half);
                let pixels: [Option<usize>; TM] = core::array::from_fn(|_| px.next(g));
                for h in 0..1 + two as usize {
                    let j = j0 + h * NR;
                    // Sixteen pixels' sixteen channels, transposed into sixteen channel
                    // rows of the tile's pixels.
                    let mut m = [_mm_setzero_si128(); TM];
                    if let Some(f) = fast {
                        // SAFETY: AVX2 (the contract); acc is 32 × 32 (`sixteen` checks
                        // the rows, columns and channels it reads).
                        unsafe { f.sixteen(&acc, TM * half, h * NR, j, &mut m) };
                    } else {
                        for (r, p) in pixels.iter().enumerate() {
                            let Some(p) = *p else {
                                continue;
                            };
                            // SAFETY: row 16·half + r's 16 sums of column tile h lie in
                            // acc; AVX2; j + 16 <= n16, the stage's columns.
                            unsafe {
                                let v = acc.as_ptr().add((TM * half + r) * 32 + h * NR);
                                let v = v as *const __m256i;
                                let halves = [_mm256_loadu_si256(v), _mm256_loadu_si256(v.add(1))];
                                stage.store(p, j, &halves, &mut tmp);
                                m[r] = _mm_loadu_si128(tmp.as_ptr().cast());
                            }
                        }
                    }
                    let rows = super::depthwise_cl::transpose16(m);
                    let cnt = NR.min(g.oc - j);
                    put_planes(&rows[..cnt], &pixels, j, pix, out);
                }
            }
        }
    }
}

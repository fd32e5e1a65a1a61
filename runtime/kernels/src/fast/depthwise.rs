//! The int8 depthwise conv on AVX2 (x86_64 hosts with `std`): kernels up to 8 columns wide
//! (3×3, 5×5, 7×7 and any other height), horizontal stride 1 or 2, any vertical stride,
//! dilation 1, channel multiplier 1. Bit-exact with the reference (`conv::conv_i8`): the
//! same integer sums and the output stage of the other AVX2 convs (`avx2::Requant`).
//!
//! Each input row a band of output rows reads is staged once per channel as int16
//! `x − zx`, with zeros for the padding columns and for rows outside the image (so padding
//! adds nothing, as the reference's skipped taps; the zeros are written once, not per
//! channel). Two neighbouring
//! taps `(kx, kx+1)` of a kernel row are one `vpmaddwd` against the weight pair
//! `(w[kx], w[kx+1])` (an odd last tap is paired with weight 0): a 256-bit load at staged
//! column `s·ox + kx` holds the int16 pairs `(xp[j], xp[j+1])` for `j = s·ox + kx + 2i`, so
//!
//! - with horizontal stride 2, lane `i` is output `ox + i`: two loads make 16 outputs;
//! - with stride 1, lane `i` is output `ox + 2i`; a second load one column further gives
//!   the odd outputs, and the two accumulators are interleaved before requantization.
//!
//! A block of 16 output columns keeps its two accumulators in registers over every tap;
//! rows of at most 8 outputs (7×7 maps) put two output rows in one block instead.
//! The kernel runs over a range `[c0, c1)` of the planes `n·C + c` (image, channel), so a
//! caller may split the planes across threads (the results do not depend on the split).
//!
//! Not here (they keep the older paths of `fast/mod.rs`): dilation > 1, horizontal
//! stride > 2, kernels wider than 8, channel multipliers > 1.

use core::arch::x86_64::*;

use super::avx2::{Narrow, Requant, Scale};
use super::{Geo, Q};

/// int16 entries of the staged rows of one band (32 KB of stack).
const STAGE_LEN: usize = 16384;
/// Staged entries a band aims to stay within (16 KB: in L1 with the output rows).
const BAND_TARGET: usize = 8192;
/// Output columns per register block (two vectors of eight).
const BLOCK: usize = 16;
/// Tap pairs per kernel row: kernels up to 8 columns wide.
const MAX_ROW_PAIRS: usize = 4;
/// Kernel rows × tap pairs the weight table holds (7×7: 28).
const MAX_PAIRS: usize = 32;
/// Staged rows of a band: a staged row holds at least 18 entries (`plan`).
const MAX_ROWS: usize = STAGE_LEN / 18 + 1;

/// How one depthwise conv is cut: staged row length and output rows per band.
struct Plan {
    /// int16 entries of one staged row: every column a block reads, padding included.
    row_len: usize,
    /// Output rows whose input rows are staged together.
    band: usize,
}

fn plan(g: &Geo) -> Option<Plan> {
    let shape_ok = g.g == g.c
        && g.oc == g.c
        && g.dh == 1
        && g.dw == 1
        && (1..=2).contains(&g.sw)
        && g.sh >= 1
        && g.pt >= 0
        && g.pl >= 0
        && g.kh >= 1
        && (1..=2 * MAX_ROW_PAIRS).contains(&g.kw)
        && g.kh * g.kw.div_ceil(2) <= MAX_PAIRS
        && g.oh > 0
        && g.ow > 0;
    if !shape_ok {
        return None;
    }
    // The last block reads up to staged column s·(blocks·16 − 1) + kw (its odd-output
    // load for s = 1, its second vector for s = 2, 16 int16 each).
    let row_len =
        g.sw.checked_mul(g.ow.div_ceil(BLOCK).checked_mul(BLOCK)?)?
            .checked_add(g.kw + 1)?;
    let rows = |band: usize| (band - 1) * g.sh + g.kh;
    if rows(1).checked_mul(row_len)? > STAGE_LEN {
        return None;
    }
    let mut band = 1;
    while band < g.oh && rows(band + 1) * row_len <= BAND_TARGET {
        band += 1;
    }
    Some(Plan { row_len, band })
}

/// Whether `depthwise` takes this conv.
pub(super) fn fits(g: &Geo) -> bool {
    plan(g).is_some()
}

/// The depthwise conv of output planes `[c0, c1)` (plane `n·C + c`: image `n`, channel
/// `c`) into `y`, which holds those planes only.
///
/// # Safety
/// The CPU must support AVX2; `fits(g)`; the slices of `q` hold the conv's operands.
/// (`c0 <= c1 <= N·C` and the length of `y` are asserted.)
#[target_feature(enable = "avx2")]
pub(super) unsafe fn depthwise(g: &Geo, q: &Q<'_>, y: &mut [i8], c0: usize, c1: usize) {
    let plan = plan(g).expect("depthwise: the caller checked `fits`");
    assert!(c0 <= c1 && c1 <= g.n * g.c && y.len() == (c1 - c0) * g.oh * g.ow);
    // Output rows whose window reaches past the image's top or bottom.
    let partial = (0..g.oh)
        .filter(|&oy| image_rows(g, oy) != (0, g.kh))
        .count();
    let skip = 2 * partial >= g.oh;
    // Square 3×3, 5×5 and 7×7 kernels (and 3×5) get their own copies (every tap loop
    // unrolled, the weight pairs in registers); other shapes loop over the kernel rows.
    // SAFETY (all arms): AVX2 is present and the conv fits (the caller's contract).
    unsafe {
        match (g.sw, g.kh, g.kw) {
            // Most output rows' windows reach past the image (a map of a few rows): the
            // copies that skip the kernel rows reading only padding.
            (1, 5, 5) if skip => channels::<1, 3, 5, true>(g, q, y, c0, c1, &plan),
            (1, 7, 7) if skip => channels::<1, 4, 7, true>(g, q, y, c0, c1, &plan),
            (1, 3, 5) if skip => channels::<1, 3, 3, true>(g, q, y, c0, c1, &plan),
            (2, 5, 5) if skip => channels::<2, 3, 5, true>(g, q, y, c0, c1, &plan),
            (2, 7, 7) if skip => channels::<2, 4, 7, true>(g, q, y, c0, c1, &plan),
            (1, 3, 3) => channels::<1, 2, 3, false>(g, q, y, c0, c1, &plan),
            (1, 5, 5) => channels::<1, 3, 5, false>(g, q, y, c0, c1, &plan),
            (1, 7, 7) => channels::<1, 4, 7, false>(g, q, y, c0, c1, &plan),
            // 5×5 kernels on maps of two rows: the converter drops the kernel rows that
            // only ever read padding, which leaves 3×5.
            (1, 3, 5) => channels::<1, 3, 3, false>(g, q, y, c0, c1, &plan),
            (2, 3, 3) => channels::<2, 2, 3, false>(g, q, y, c0, c1, &plan),
            (2, 5, 5) => channels::<2, 3, 5, false>(g, q, y, c0, c1, &plan),
            (2, 7, 7) => channels::<2, 4, 7, false>(g, q, y, c0, c1, &plan),
            (1, _, kw) => match kw.div_ceil(2) {
                1 => channels::<1, 1, 0, false>(g, q, y, c0, c1, &plan),
                2 => channels::<1, 2, 0, false>(g, q, y, c0, c1, &plan),
                3 => channels::<1, 3, 0, false>(g, q, y, c0, c1, &plan),
                _ => channels::<1, 4, 0, false>(g, q, y, c0, c1, &plan),
            },
            (_, _, kw) => match kw.div_ceil(2) {
                1 => channels::<2, 1, 0, false>(g, q, y, c0, c1, &plan),
                2 => channels::<2, 2, 0, false>(g, q, y, c0, c1, &plan),
                3 => channels::<2, 3, 0, false>(g, q, y, c0, c1, &plan),
                _ => channels::<2, 4, 0, false>(g, q, y, c0, c1, &plan),
            },
        }
    }
}

/// The kernel rows `[ky0, ky1)` of output row `oy`'s window that lie on image rows.
fn image_rows(g: &Geo, oy: usize) -> (usize, usize) {
    let iy0 = (oy * g.sh) as isize - g.pt;
    let ky0 = (-iy0).clamp(0, g.kh as isize) as usize;
    (
        ky0,
        (g.h as isize - iy0).clamp(ky0 as isize, g.kh as isize) as usize,
    )
}

/// `depthwise` for horizontal stride `S`, `P` tap pairs per kernel row and `KH` kernel
/// rows (0: `g.kh`, read at run time); with `SKIP`, the wide rows' blocks sum only the
/// kernel rows over image rows.
#[target_feature(enable = "avx2")]
unsafe fn channels<const S: usize, const P: usize, const KH: usize, const SKIP: bool>(
    g: &Geo,
    q: &Q<'_>,
    y: &mut [i8],
    c0: usize,
    c1: usize,
    plan: &Plan,
) {
    let (h, w, oh, ow, kw) = (g.h, g.w, g.oh, g.ow, g.kw);
    let kh = if KH == 0 { g.kh } else { KH };
    debug_assert_eq!(kh, g.kh);
    let (plane, out_plane) = (h * w, oh * ow);
    let row_len = plan.row_len;
    // Starts zeroed: the padding columns of every row, and the rows outside the image.
    // Only the entries a band uses are zeroed (the whole 32 KB was a `memset` a call).
    let used = ((plan.band - 1) * g.sh + kh) * row_len;
    debug_assert!(used <= STAGE_LEN);
    let mut stage_mem = core::mem::MaybeUninit::<[i16; STAGE_LEN]>::uninit();
    // SAFETY: `used` <= STAGE_LEN (`plan` bounds a band's rows to the buffer); the first
    // `used` entries are written (zeros) before the slice over them is made.
    let stage = unsafe {
        let p = stage_mem.as_mut_ptr() as *mut i16;
        core::ptr::write_bytes(p, 0, used);
        core::slice::from_raw_parts_mut(p, used)
    };
    // Whether staged row r holds image data (else it is all zeros).
    let mut has_data = [false; MAX_ROWS];
    let rq = Requant::of(q);
    let nr = Narrow::of(q);
    // Bytes (0..ow, 8..8 + ow) of a two-row block, contiguous.
    let mut squeeze_idx = [0x80u8 as i8; 16];
    for (i, v) in squeeze_idx.iter_mut().enumerate().take(2 * ow.min(8)) {
        *v = if i < ow { i } else { 8 + i - ow } as i8;
    }
    // SAFETY: 16 bytes from a 16-byte array; unaligned-safe.
    let squeeze = unsafe { _mm_loadu_si128(squeeze_idx.as_ptr() as *const __m128i) };
    let mut weights = [_mm256_setzero_si256(); MAX_PAIRS];
    for ch in c0..c1 {
        let c = ch % g.c;
        let xc = &q.x[ch * plane..(ch + 1) * plane];
        let wc = &q.w[c * kh * kw..(c + 1) * kh * kw];
        for ky in 0..kh {
            for p in 0..P {
                let tap = |kx: usize| match kx < kw {
                    true => wc[ky * kw + kx] as i16 as u16 as u32,
                    false => 0,
                };
                let pair = tap(2 * p) | (tap(2 * p + 1) << 16);
                weights[ky * P + p] = _mm256_set1_epi32(pair as i32);
            }
        }
        let base = _mm256_set1_epi32(q.bias.map_or(0, |b| b[c]));
        let scale = Scale::of(q, c);
        // Channel ch's plane starts at y[ybase]. Stores run 16 bytes wide wherever y has
        // room: bytes past a row land on later rows of this channel, or on later channels'
        // planes, all written after (rows and channels go in order).
        let ybase = (ch - c0) * out_plane;
        let mut oy0 = 0;
        while oy0 < oh {
            let oy1 = (oy0 + plan.band).min(oh);
            // Staged row r is input row top + r; rows outside the image are zeros
            // (they add nothing, as the reference's skipped taps).
            let top = (oy0 * g.sh) as isize - g.pt;
            let rows = (oy1 - 1 - oy0) * g.sh + kh;
            for r in 0..rows {
                let iy = top + r as isize;
                let dst = &mut stage[r * row_len..(r + 1) * row_len];
                if iy >= 0 && iy < h as isize {
                    // SAFETY: AVX2 is present (this function's contract).
                    unsafe { stage_row(xc, iy as usize * w, w, g.pl as usize, q.zx, dst) };
                    has_data[r] = true;
                } else if has_data[r] {
                    dst.fill(0);
                    has_data[r] = false;
                }
            }
            let sp = stage.as_ptr();
            // Row `oy`'s window starts at staged row (oy − oy0)·sh.
            let window = |oy: usize| (oy - oy0) * g.sh * row_len;
            if ow <= 8 {
                // Narrow rows: one block is output rows oy and oy + 1 (eight lanes each:
                // bytes 0..8 and 8..16 of the block, then `squeeze` makes them the
                // 2·ow contiguous bytes of the two rows).
                let mut oy = oy0;
                while oy < oy1 {
                    let next = if oy + 1 < oy1 { oy + 1 } else { oy };
                    // SAFETY: both windows are staged rows of this band; a block reads
                    // staged columns below 2·(P − 1) + 17 < row_len.
                    let bytes = unsafe {
                        let (r0, r1) = (sp.add(window(oy)), sp.add(window(next)));
                        let (even, odd) = match S {
                            1 => block_two_rows::<P, KH>(kh, row_len, &weights, base, r0, r1),
                            _ => {
                                block::<P, KH, false>(kh, (0, kh), row_len, &weights, base, r0, r1)
                            }
                        };
                        // The float-clamped stage: the saturating one measured 3–7% slower
                        // here (7×7 maps on a Zen 3).
                        _mm_shuffle_epi8(pack16::<S>(rq, None, even, odd, scale), squeeze)
                    };
                    let (at, end) = (ybase + oy * ow, ybase + (next + 1) * ow);
                    // 16 bytes where y has room, else only the two rows' bytes.
                    let room = (at + 16).min(y.len());
                    // SAFETY: SSE2 stores into `y` (see `store_bytes`).
                    unsafe { store_bytes(bytes, &mut y[at..room.max(end)]) };
                    oy += 2;
                }
                oy0 = oy1;
                continue;
            }
            for oy in oy0..oy1 {
                let yr = ybase + oy * ow;
                // With SKIP, kernel rows [ky0, ky1) of this output row read image rows;
                // the others read staged zeros and are skipped. (Always asked, the test
                // made the many-row maps 10–25% slower on a Zen 3.)
                let rows = match SKIP {
                    true => image_rows(g, oy),
                    false => (0, kh),
                };
                let mut ox0 = 0;
                while ox0 < ow {
                    // The last block of a row of at least 16 ends at the row's end
                    // (recomputing a few outputs, with the same values).
                    if ox0 + BLOCK > ow && ow >= BLOCK {
                        ox0 = ow - BLOCK;
                    }
                    // S = 1: outputs ox0 + 2i, then ox0 + 1 + 2i; S = 2: outputs
                    // ox0 + i, then ox0 + 8 + i.
                    let (at0, at1) = match S {
                        1 => (window(oy) + ox0, window(oy) + ox0 + 1),
                        _ => (window(oy) + 2 * ox0, window(oy) + 2 * ox0 + 16),
                    };
                    debug_assert!(at1 - window(oy) + 2 * (P - 1) + 16 <= row_len);
                    // SAFETY: the window's rows are staged rows of this band, and a
                    // block reads staged columns below at1 + 2·(P − 1) + 16 <= row_len
                    // (`plan`: the last block reads up to S·(blocks·16 − 1) + kw).
                    let (even, odd) = unsafe {
                        block::<P, KH, SKIP>(
                            kh,
                            rows,
                            row_len,
                            &weights,
                            base,
                            sp.add(at0),
                            sp.add(at1),
                        )
                    };
                    // A row narrower than a block (ow < 16) spills into the next row
                    // where y has room.
                    let at = yr + ox0;
                    let n = match at + BLOCK <= y.len() {
                        true => BLOCK,
                        false => BLOCK.min(ow - ox0),
                    };
                    // SAFETY: AVX2 is present (this function's contract).
                    unsafe {
                        store_bytes(pack16::<S>(rq, nr, even, odd, scale), &mut y[at..at + n])
                    };
                    ox0 += BLOCK;
                }
            }
            oy0 = oy1;
        }
    }
}

/// The sums of one block: `base` plus every tap pair of the `kh` kernel rows (with `SKIP`,
/// of kernel rows `rows.0..rows.1` only), for the two vectors whose windows start at `at0`
/// and `at1` (staged rows `row_len` apart).
///
/// # Safety
/// The CPU must support AVX2; `kh` rows of `2·(P − 1) + 16` int16 from each start are
/// inside the staging buffer.
#[inline(always)]
unsafe fn block<const P: usize, const KH: usize, const SKIP: bool>(
    kh: usize,
    rows: (usize, usize),
    row_len: usize,
    weights: &[__m256i; MAX_PAIRS],
    base: __m256i,
    at0: *const i16,
    at1: *const i16,
) -> (__m256i, __m256i) {
    let kh = if KH == 0 { kh } else { KH };
    let (mut even, mut odd) = (base, base);
    for ky in 0..kh {
        if SKIP && (ky < rows.0 || ky >= rows.1) {
            continue;
        }
        for p in 0..P {
            let wv = weights[ky * P + p];
            // SAFETY: inside the staged rows (this function's contract).
            unsafe {
                let off = ky * row_len + 2 * p;
                let x0 = _mm256_loadu_si256(at0.add(off) as *const __m256i);
                let x1 = _mm256_loadu_si256(at1.add(off) as *const __m256i);
                even = _mm256_add_epi32(even, _mm256_madd_epi16(x0, wv));
                odd = _mm256_add_epi32(odd, _mm256_madd_epi16(x1, wv));
            }
        }
    }
    (even, odd)
}

/// `block` for stride 1 on two rows of at most 8 outputs: the low 128-bit lanes are the
/// row whose window starts at `row0` (outputs 0, 2, 4, 6, then 1, 3, 5, 7), the high
/// lanes the row at `row1`.
///
/// # Safety
/// The CPU must support AVX2; `kh` rows of `2·(P − 1) + 9` int16 from each start are
/// inside the staging buffer.
#[inline(always)]
unsafe fn block_two_rows<const P: usize, const KH: usize>(
    kh: usize,
    row_len: usize,
    weights: &[__m256i; MAX_PAIRS],
    base: __m256i,
    row0: *const i16,
    row1: *const i16,
) -> (__m256i, __m256i) {
    let kh = if KH == 0 { kh } else { KH };
    let (mut even, mut odd) = (base, base);
    for ky in 0..kh {
        for p in 0..P {
            let wv = weights[ky * P + p];
            // SAFETY: inside the staged rows (this function's contract).
            unsafe {
                let off = ky * row_len + 2 * p;
                let (a, b) = (row0.add(off), row1.add(off));
                let x0 = _mm256_loadu2_m128i(b as *const __m128i, a as *const __m128i);
                let x1 =
                    _mm256_loadu2_m128i(b.add(1) as *const __m128i, a.add(1) as *const __m128i);
                even = _mm256_add_epi32(even, _mm256_madd_epi16(x0, wv));
                odd = _mm256_add_epi32(odd, _mm256_madd_epi16(x1, wv));
            }
        }
    }
    (even, odd)
}

/// Requantize a block's two accumulators into its 16 output bytes, in column order: for
/// `S = 1` the lanes are outputs `2i` and `2i + 1`, for `S = 2` outputs `i` and `8 + i`.
#[inline(always)]
unsafe fn pack16<const S: usize>(
    rq: Requant,
    nr: Option<Narrow>,
    even: __m256i,
    odd: __m256i,
    scale: Scale,
) -> __m128i {
    // SAFETY: AVX2 is present (the callers' contract).
    unsafe {
        let words = match nr {
            // The saturating output stage (exact where `Narrow::of` allows it).
            Some(nr) => nr.words(nr.scaled(even, scale), nr.scaled(odd, scale)),
            // Saturating packs are exact: every lane is in [-128, 127].
            None => _mm256_packs_epi32(rq.lanes_q(even, scale), rq.lanes_q(odd, scale)),
        };
        let words = match S {
            // Each 128-bit lane holds outputs (0, 2, 4, 6, 1, 3, 5, 7) + 8·lane.
            1 => _mm256_shuffle_epi8(
                words,
                _mm256_setr_epi8(
                    0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15, 0, 1, 8, 9, 2, 3, 10, 11,
                    4, 5, 12, 13, 6, 7, 14, 15,
                ),
            ),
            // Quads (0–3, 8–11, 4–7, 12–15).
            _ => _mm256_permute4x64_epi64(words, 0xD8),
        };
        let (lo, hi) = (
            _mm256_castsi256_si128(words),
            _mm256_extracti128_si256(words, 1),
        );
        match nr {
            Some(nr) => nr.bytes(lo, hi),
            None => _mm_packs_epi16(lo, hi),
        }
    }
}

/// The first `out.len()` (at most 16) bytes of `bytes` into `out`.
#[inline(always)]
unsafe fn store_bytes(bytes: __m128i, out: &mut [i8]) {
    // SAFETY: SSE2 stores of 16 bytes, into `out` only when it holds 16.
    unsafe {
        if out.len() >= 16 {
            _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, bytes);
        } else {
            let mut block = [0i8; 16];
            _mm_storeu_si128(block.as_mut_ptr() as *mut __m128i, bytes);
            for (o, b) in out.iter_mut().zip(block) {
                *o = b;
            }
        }
    }
}

/// One staged row: `dst[pl + i] = x[i] − zx` for the `w` input columns of the row at
/// `row` in `plane` that fit. The other entries stay zero: the buffer starts zeroed and
/// only these columns (the same in every row), or whole rows of zeros, are ever written.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn stage_row(plane: &[i8], row: usize, w: usize, pl: usize, zx: i32, dst: &mut [i16]) {
    let start = pl.min(dst.len());
    let n = w.min(dst.len() - start);
    let zv = _mm256_set1_epi16(zx as i16);
    if n < 16 {
        if row + 16 <= plane.len() && start + 16 <= dst.len() {
            // One vector, the lanes past the row zeroed (padding columns).
            let lane = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let keep = _mm256_cmpgt_epi16(_mm256_set1_epi16(n as i16), lane);
            // SAFETY: 16 bytes of plane from row and 16 int16 of dst from start (checked).
            unsafe {
                let v = _mm_loadu_si128(plane.as_ptr().add(row) as *const __m128i);
                let v = _mm256_sub_epi16(_mm256_cvtepi8_epi16(v), zv);
                let d = dst.as_mut_ptr().add(start) as *mut __m256i;
                _mm256_storeu_si256(d, _mm256_and_si256(v, keep));
            }
        } else {
            for (d, &s) in dst[start..start + n].iter_mut().zip(&plane[row..row + n]) {
                *d = s as i16 - zx as i16;
            }
        }
        return;
    }
    let (src, body) = (&plane[row..row + n], &mut dst[start..start + n]);
    // SAFETY: 16 bytes of src and 16 int16 of body from i, where i + 16 <= n; unaligned-safe.
    let widen16 = |body: &mut [i16], i: usize| unsafe {
        let v = _mm256_cvtepi8_epi16(_mm_loadu_si128(src.as_ptr().add(i) as *const __m128i));
        let d = body.as_mut_ptr().add(i) as *mut __m256i;
        _mm256_storeu_si256(d, _mm256_sub_epi16(v, zv));
    };
    let mut i = 0;
    while i + 16 <= n {
        widen16(body, i);
        i += 16;
    }
    // The last 16 again (overlapping, the same values) for the tail.
    if i < n {
        widen16(body, n - 16);
    }
}

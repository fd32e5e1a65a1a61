//! The int8 depthwise conv on small maps, sixteen channels at a time in channels-last
//! order (x86_64 AVX2 hosts, `std`). Bit-exact with the reference (`conv::conv_i8`): the
//! same integer sums and the output stage of the other AVX2 convs (`avx2::Narrow`, else
//! `avx2::Requant`).
//!
//! The plane kernels (`depthwise.rs`, `depthwise_vnni.rs`) vectorize along a channel's
//! output row and set up each channel alone: its weights, staged rows and output stage.
//! On a map of a few hundred pixels or less (the 14×14 and 7×7 layers of every MobileNet
//! and PP-LCNet) that setup is most of the channel's time, and a 7-wide row fills half a
//! vector. Here the lanes are channels instead:
//!
//! 1. sixteen channel planes are transposed to pixels of sixteen bytes (16×16 byte blocks
//!    through SSE2 unpacks), each widened to int16 `x − zx`;
//! 2. each pixel of the padded window is staged (zeros for padding), interleaved with its
//!    right-hand tap partner (the pixel `dw` columns on): the two
//!    taps `(kx, kx + 1)` of a kernel row are then one `vpmaddwd` against the weight pair
//!    `(w[kx], w[kx + 1])` of each channel (an odd last tap is paired with weight 0);
//! 3. an output pixel sums its `kh · ⌈kw/2⌉` tap pairs into two vectors of eight channels
//!    (the unpacks put channels 0–3 and 8–11 in one, 4–7 and 12–15 in the other, and the
//!    output stage's `packs` puts them back in order), then the output stage runs with
//!    each lane's own multiplier;
//! 4. the pixels of sixteen bytes are transposed back into the sixteen output planes.
//!
//! Any kernel of up to 32 tap pairs, any stride and dilation, channel multiplier 1, as long
//! as the staged window of one block is small ([`MAX_STAGE`]): that is where it measured
//! faster than the plane kernels (`tests/exact_depthwise.rs` `depthwise_throughput`).

extern crate std;
use std::cell::RefCell;
use std::vec::Vec;

use core::arch::x86_64::*;

use super::avx2::{Narrow, Requant, Scale};
use super::{Geo, Q};

/// Channels a block.
const CB: usize = 16;
/// Kernel rows × tap pairs a block's weights hold (7×7: 28).
const MAX_PAIRS: usize = 32;
/// Taps a kernel may have (the conv fast paths send depthwise kernels of up to 49).
const MAX_TAPS: usize = 64;
/// Staged pixels of one block (64 bytes each: 16 KB, in L1 with the block's input and
/// output pixels). Past it, or where the output plane is larger than [`MAX_PLANE`], the
/// plane kernel measured as fast or faster on this project's Zen 3 host (`--test
/// exact_depthwise depthwise_throughput`): a 14 × 14 map at stride 1 (16 × 16 staged)
/// 1.15× faster here, 7 × 7 maps 1.6–1.9×, but 14 × 14 outputs at stride 2 (29 × 29
/// staged) and 16 × 16 maps at stride 1 no faster.
const MAX_STAGE: usize = 256;
/// Largest output plane (pixels) this kernel takes.
const MAX_PLANE: usize = 256;

std::thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { pixels: Vec::new(), staged: Vec::new(), out: Vec::new() })
    };
}

/// Buffers kept between calls.
struct Scratch {
    /// The block's input, channels last: `[h·w]` vectors of sixteen int16 `x − zx`.
    pixels: Vec<__m256i>,
    /// The staged window: `[hs][ws]` pixels, each two vectors of int16 pairs.
    staged: Vec<__m256i>,
    /// The block's output, channels last: `[⌈oh·ow/16⌉·16][16]` bytes.
    out: Vec<i8>,
}

/// The staged window of a block: `hs` rows of `ws` pixels, `pk` tap pairs a kernel row.
struct Window {
    hs: usize,
    ws: usize,
    pk: usize,
}

fn window(g: &Geo) -> Option<Window> {
    let pk = g.kw.div_ceil(2);
    let ok = g.g == g.c
        && g.oc == g.c
        && g.c > 0
        && g.kh >= 1
        && g.kw >= 1
        && g.kh.checked_mul(pk)? <= MAX_PAIRS
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
        && g.ow > 0
        && g.oh.checked_mul(g.ow)? <= MAX_PLANE;
    if !ok {
        return None;
    }
    // Staged row oy·sh + ky·dh, column ox·sw + 2p·dw: the last output's last pair.
    let hs = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    let ws = (g.ow - 1) * g.sw + 2 * (pk - 1) * g.dw + 1;
    (hs.checked_mul(ws)? <= MAX_STAGE && g.h.checked_mul(g.w)? <= 4 * MAX_STAGE).then_some(Window {
        hs,
        ws,
        pk,
    })
}

/// Whether this kernel takes the depthwise conv `g` (the caller checked AVX2).
pub(super) fn fits(g: &Geo) -> bool {
    window(g).is_some()
}

/// The depthwise conv of output planes `[c0, c1)` (plane `n·C + c`: image `n`, channel
/// `c`) into `y`, which holds those planes only.
///
/// # Safety
/// The CPU must support AVX2; `fits(g)`; the slices of `q` hold the conv's operands.
/// (`c0 <= c1 <= N·C` and the length of `y` are asserted.)
#[target_feature(enable = "avx2")]
pub(super) unsafe fn depthwise(g: &Geo, q: &Q<'_>, y: &mut [i8], c0: usize, c1: usize) {
    let win = window(g).expect("depthwise_cl: the caller checked `fits`");
    let (plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    assert!(c0 <= c1 && c1 <= g.n * g.c && y.len() == (c1 - c0) * out_plane);
    assert!(q.x.len() >= g.n * g.c * plane && q.w.len() >= g.c * g.kh * g.kw);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let Scratch {
            pixels,
            staged,
            out,
        } = &mut *s;
        pixels.resize(plane, _mm256_setzero_si256());
        staged.resize(win.hs * win.ws * 2, _mm256_setzero_si256());
        out.resize(out_plane.div_ceil(CB) * CB * CB, 0);
        // The output stage's checks read every multiplier: once a call.
        let stage_of = (Narrow::of(q), Requant::of(q));
        let mut b = c0;
        while b < c1 {
            let c = b % g.c;
            // The block's channels stay within one image.
            let cn = CB.min(g.c - c).min(c1 - b);
            // SAFETY: AVX2 (the caller's contract); each step's buffers were sized above.
            unsafe {
                to_pixels(&q.x[b * plane..], plane, cn, q.zx, pixels);
                stage(g, &win, pixels, staged);
                sums(g, &win, q, stage_of, c, cn, staged, out);
                to_planes(out, out_plane, cn, &mut y[(b - c0) * out_plane..]);
            }
            b += cn;
        }
    });
}

/// The first `cn` planes of `plane` bytes of `x` as `plane` pixels of sixteen int16
/// `x − zx` (channels past `cn`: garbage, never read into an output) in `pixels`.
#[target_feature(enable = "avx2")]
unsafe fn to_pixels(x: &[i8], plane: usize, cn: usize, zx: i32, pixels: &mut [__m256i]) {
    debug_assert!(x.len() >= cn * plane && pixels.len() >= plane);
    let vzx = _mm256_set1_epi16(zx as i16);
    let mut p0 = 0;
    while p0 < plane {
        let n = CB.min(plane - p0);
        let mut rows = [_mm_setzero_si128(); CB];
        for (r, v) in rows.iter_mut().enumerate().take(cn) {
            let at = r * plane + p0;
            // A plane's last pixels read on into the next plane where `x` goes on (those
            // columns are dropped below); at the end of `x`, through a copy.
            *v = if at + CB <= x.len() {
                // SAFETY: 16 bytes inside `x`.
                unsafe { _mm_loadu_si128(x.as_ptr().add(at) as *const __m128i) }
            } else {
                let mut t = [0i8; CB];
                t[..n].copy_from_slice(&x[at..at + n]);
                // SAFETY: 16 bytes of a 16-byte array.
                unsafe { _mm_loadu_si128(t.as_ptr() as *const __m128i) }
            };
        }
        let cols = transpose16(rows);
        for (d, v) in pixels[p0..p0 + n].iter_mut().zip(&cols) {
            *d = _mm256_sub_epi16(_mm256_cvtepi8_epi16(*v), vzx);
        }
        p0 += n;
    }
}

/// The pixels of sixteen bytes of the block's output (`out`, channels last) into the
/// first `cn` planes of `out_plane` bytes of `y`.
#[target_feature(enable = "avx2")]
unsafe fn to_planes(out: &[i8], out_plane: usize, cn: usize, y: &mut [i8]) {
    debug_assert!(out.len() >= out_plane.div_ceil(CB) * CB * CB && y.len() >= cn * out_plane);
    let blocks = out_plane.div_ceil(CB);
    // The last (partial) block of pixels first, channels in order, each a 16-byte store
    // where `y` has room: the bytes past a plane's end land on the next planes' first
    // pixels, which the next channel's store (or a whole block after) writes again.
    for blk in core::iter::once(blocks - 1).chain(0..blocks - 1) {
        let p0 = blk * CB;
        let n = CB.min(out_plane - p0);
        let mut rows = [_mm_setzero_si128(); CB];
        for (j, v) in rows.iter_mut().enumerate() {
            // SAFETY: `out` holds ⌈out_plane/16⌉·16 pixels (rows past the plane are
            // read and dropped).
            *v = unsafe { _mm_loadu_si128(out.as_ptr().add((p0 + j) * CB) as *const __m128i) };
        }
        let chans = transpose16(rows);
        for (r, v) in chans.iter().enumerate().take(cn) {
            let at = r * out_plane + p0;
            if at + CB <= y.len() {
                _mm_storeu_si128(y[at..at + CB].as_mut_ptr() as *mut __m128i, *v);
            } else {
                let mut t = [0i8; CB];
                _mm_storeu_si128(t.as_mut_ptr() as *mut __m128i, *v);
                y[at..at + n].copy_from_slice(&t[..n]);
            }
        }
    }
}

/// Sixteen rows of sixteen bytes transposed: four rounds of interleaving row `i` with
/// row `i + 8` (each round moves one bit of the row index into the column index).
#[inline(always)]
pub(super) fn transpose16(mut r: [__m128i; CB]) -> [__m128i; CB] {
    for _ in 0..4 {
        let mut o = [r[0]; CB];
        for i in 0..CB / 2 {
            // SAFETY: SSE2, present on every x86_64.
            unsafe {
                o[2 * i] = _mm_unpacklo_epi8(r[i], r[i + CB / 2]);
                o[2 * i + 1] = _mm_unpackhi_epi8(r[i], r[i + CB / 2]);
            }
        }
        r = o;
    }
    r
}

/// The staged window from the block's pixels: pixel `(r, j)` is padded-input pixel
/// `(r − pt, j − pl)` as int16 `x − zx` (0 outside the image), interleaved with the one
/// `dw` columns on: channels 0–3 and 8–11 in the first vector, 4–7 and 12–15 in the
/// second (`vpunpcklwd` / `vpunpckhwd` within 128-bit lanes).
#[target_feature(enable = "avx2")]
unsafe fn stage(g: &Geo, win: &Window, pixels: &[__m256i], staged: &mut [__m256i]) {
    let (pt, pl) = (g.pt as usize, g.pl as usize);
    let z = _mm256_setzero_si256();
    let (ws, dw) = (win.ws, g.dw);
    debug_assert!(staged.len() >= win.hs * ws * 2 && pixels.len() >= g.h * g.w);
    for r in 0..win.hs {
        let row = &mut staged[r * ws * 2..(r + 1) * ws * 2];
        let Some(iy) = r.checked_sub(pt).filter(|&iy| iy < g.h) else {
            row.fill(z);
            continue;
        };
        let src = &pixels[iy * g.w..(iy + 1) * g.w];
        // Column j of the padded row (zeros outside the image).
        let col = |j: usize| match j.checked_sub(pl).and_then(|ix| src.get(ix)) {
            Some(&v) => v,
            None => z,
        };
        for (j, e) in row.chunks_exact_mut(2).enumerate() {
            let (a, b) = (col(j), col(j + dw));
            e[0] = _mm256_unpacklo_epi16(a, b);
            e[1] = _mm256_unpackhi_epi16(a, b);
        }
    }
}

/// Lane `i` of the first vector of a staged pixel is channel `LO[i]`, of the second
/// channel `HI[i]`.
const LO: [usize; 8] = [0, 1, 2, 3, 8, 9, 10, 11];
const HI: [usize; 8] = [4, 5, 6, 7, 12, 13, 14, 15];

/// Every output pixel of the block (channels `c..c + cn` of the conv) from the staged
/// window, requantized into `out` (sixteen bytes a pixel, channels past `cn` garbage).
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn sums(
    g: &Geo,
    win: &Window,
    q: &Q<'_>,
    (nr, rq): (Option<Narrow>, Requant),
    c: usize,
    cn: usize,
    staged: &[__m256i],
    out: &mut [i8],
) {
    let (kh, kw, pk) = (g.kh, g.kw, win.pk);
    let k = kh * kw;
    // Each tap's sixteen channel weights as a row of bytes: 16×16 transposes of the
    // channels' kernels (k taps each, one after another), sixteen taps at a time.
    // Channels past cn get zero weights (their outputs are dropped).
    let mut taps = [_mm_setzero_si128(); MAX_TAPS];
    let wb = &q.w[c * k..(c + cn) * k];
    for t0 in (0..k).step_by(CB) {
        let mut rows = [_mm_setzero_si128(); CB];
        for (r, v) in rows.iter_mut().enumerate().take(cn) {
            let at = r * k + t0;
            // Bytes past this channel's taps belong to the next channel: loaded, unused.
            *v = if at + CB <= wb.len() {
                // SAFETY: 16 bytes inside `wb`.
                unsafe { _mm_loadu_si128(wb.as_ptr().add(at) as *const __m128i) }
            } else {
                let mut t = [0i8; CB];
                t[..wb.len() - at].copy_from_slice(&wb[at..]);
                // SAFETY: 16 bytes of a 16-byte array.
                unsafe { _mm_loadu_si128(t.as_ptr() as *const __m128i) }
            };
        }
        let cols = transpose16(rows);
        let n = CB.min(k - t0);
        taps[t0..t0 + n].copy_from_slice(&cols[..n]);
    }
    // Weight pairs in the staged lanes' channel order (the same unpacks as `stage`).
    let mut wv = [[_mm256_setzero_si256(); 2]; MAX_PAIRS];
    for ky in 0..kh {
        for p in 0..pk {
            let a = _mm256_cvtepi8_epi16(taps[ky * kw + 2 * p]);
            let b = match 2 * p + 1 < kw {
                true => _mm256_cvtepi8_epi16(taps[ky * kw + 2 * p + 1]),
                false => _mm256_setzero_si256(),
            };
            wv[ky * pk + p] = [_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b)];
        }
    }
    // Biases and multipliers: sixteen in channel order, then lanes LO and HI.
    let mut bias = [0i32; CB];
    let (mut pos, mut neg) = ([0f32; CB], [0f32; CB]);
    for ch in 0..cn {
        bias[ch] = q.bias.map_or(0, |b| b[c + ch]);
        pos[ch] = q.scales[c + ch];
        neg[ch] = q.neg_scale(c + ch);
    }
    // SAFETY: 32-byte loads of the halves of 16-lane arrays.
    let (b_lo, b_hi) = unsafe {
        let (v0, v1) = (
            _mm256_loadu_si256(bias.as_ptr() as *const __m256i),
            _mm256_loadu_si256(bias.as_ptr().add(8) as *const __m256i),
        );
        (
            _mm256_permute2x128_si256(v0, v1, 0x20),
            _mm256_permute2x128_si256(v0, v1, 0x31),
        )
    };
    let pick = |v: &[f32; CB], order: &[usize; 8]| core::array::from_fn(|i| v[order[i]]);
    let s_lo = Scale::from_lanes(&pick(&pos, &LO), &pick(&neg, &LO));
    let s_hi = Scale::from_lanes(&pick(&pos, &HI), &pick(&neg, &HI));
    // SAFETY (both arms): AVX2; the window and buffers fit the conv (`window`, `depthwise`).
    unsafe {
        match (kh, pk) {
            (3, 2) => {
                pixels_out::<3, 2>(g, win, &wv, (b_lo, b_hi), (s_lo, s_hi), nr, rq, staged, out)
            }
            (5, 3) => {
                pixels_out::<5, 3>(g, win, &wv, (b_lo, b_hi), (s_lo, s_hi), nr, rq, staged, out)
            }
            (7, 4) => {
                pixels_out::<7, 4>(g, win, &wv, (b_lo, b_hi), (s_lo, s_hi), nr, rq, staged, out)
            }
            _ => pixels_out::<0, 0>(g, win, &wv, (b_lo, b_hi), (s_lo, s_hi), nr, rq, staged, out),
        }
    }
}

/// [`sums`]' pixel loop for `KH` kernel rows of `PK` tap pairs (0: the window's, read at
/// run time).
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn pixels_out<const KH: usize, const PK: usize>(
    g: &Geo,
    win: &Window,
    wv: &[[__m256i; 2]; MAX_PAIRS],
    (b_lo, b_hi): (__m256i, __m256i),
    (s_lo, s_hi): (Scale, Scale),
    nr: Option<Narrow>,
    rq: Requant,
    staged: &[__m256i],
    out: &mut [i8],
) {
    let kh = if KH == 0 { g.kh } else { KH };
    let pk = if PK == 0 { win.pk } else { PK };
    let ws = win.ws;
    // Entries (two a pixel) between a kernel row's staged rows and between tap pairs.
    let (row_step, pair_step) = (g.dh * ws * 2, 2 * g.dw * 2);
    debug_assert!(out.len() >= g.oh * g.ow * CB);
    debug_assert!(
        ((g.oh - 1) * g.sh * ws + (g.ow - 1) * g.sw) * 2
            + (kh - 1) * row_step
            + (pk - 1) * pair_step
            + 2
            <= staged.len()
    );
    let sp = staged.as_ptr();
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let (mut lo, mut hi) = (b_lo, b_hi);
            let at = ((oy * g.sh) * ws + ox * g.sw) * 2;
            for ky in 0..kh {
                for p in 0..pk {
                    // SAFETY: every tap pair of every output lies in the staged window
                    // (`window`: hs and ws reach the last output's last pair).
                    unsafe {
                        let e = sp.add(at + ky * row_step + p * pair_step);
                        let w = &wv[ky * pk + p];
                        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_load_si256(e), w[0]));
                        hi = _mm256_add_epi32(
                            hi,
                            _mm256_madd_epi16(_mm256_load_si256(e.add(1)), w[1]),
                        );
                    }
                }
            }
            // Lanes LO and HI packed together come back in channel order 0..16.
            let bytes = match nr {
                Some(nr) => {
                    let w = nr.words(nr.scaled(lo, s_lo), nr.scaled(hi, s_hi));
                    nr.bytes(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1))
                }
                None => {
                    let w = _mm256_packs_epi32(rq.lanes_q(lo, s_lo), rq.lanes_q(hi, s_hi));
                    _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1))
                }
            };
            let o = (oy * g.ow + ox) * CB;
            _mm_storeu_si128(out[o..o + CB].as_mut_ptr() as *mut __m128i, bytes);
        }
    }
}

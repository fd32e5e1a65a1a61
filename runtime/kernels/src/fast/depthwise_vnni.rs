//! The int8 depthwise conv on AVX-512 with VNNI and VBMI (x86_64 hosts with `std`: Ice
//! Lake and later Intel cores, AMD Zen 4 and later), for the shapes of `depthwise.rs`:
//! kernels up to 8 columns wide, horizontal stride 1 or 2, any vertical stride, dilation 1,
//! channel multiplier 1. Bit-exact with the reference (`conv::conv_i8`): the same integer
//! sums and the same float output stage as `avx2::Requant`, sixteen lanes wide.
//!
//! Each input row a band of output rows reads is staged once per channel as unsigned bytes
//! `u = x + 128` (the sign bit flipped), with the padding columns and the rows outside the
//! image holding `zx + 128`, the byte of a real zero. A kernel row is cut into quads of four
//! taps (a short last quad holds weight 0): one `vpermb` gathers, for sixteen outputs, the
//! four staged bytes each output's quad reads (output `i` reads staged column `s·i + j` of
//! the quad, `j < 4`), and one `vpdpbusd` adds the four products into each output's int32
//! sum. Over every tap the sum is `Σ w·(x − zx) + (zx + 128)·Σ w` (padding adds exactly
//! `(zx + 128)·w`), so each channel's sums start from `bias − (zx + 128)·Σ w`: the
//! reference's sums, padding skipped. No saturation anywhere: the products are summed in
//! int32.
//!
//! A vector is sixteen outputs of one row (rows of 8 or fewer outputs put two rows in
//! one vector, through the two-source `vpermt2b`); its bytes are stored with one masked
//! store, so no write leaves the output row. The kernel runs over a range `[c0, c1)` of the
//! planes `n·C + c`, as `depthwise.rs`, so a caller may split the planes across threads.

use core::arch::x86_64::*;

use super::{Geo, Q};

/// Bytes of the staged rows of one band (32 KB of stack).
const STAGE_LEN: usize = 32768;
/// Staged bytes a band aims to stay within (16 KB: in L1 with the output rows).
const BAND_TARGET: usize = 16384;
/// Outputs per vector.
const LANES: usize = 16;
/// Quads per kernel row: kernels up to 8 columns wide.
const MAX_ROW_QUADS: usize = 2;
/// Kernel rows × quads the weight table holds (7×7: 14).
const MAX_QUADS: usize = 32;
/// Staged rows of a band: a staged row holds at least 64 bytes (`plan`).
const MAX_ROWS: usize = STAGE_LEN / 64 + 1;

/// Whether this CPU runs the kernel: AVX-512 F, BW, VL, VBMI and VNNI, and VNNI is allowed
/// (`paths::vnni`: `CAIRN_VNNI=0` or `paths::allow_vnni(false)` leave depthwise convs to
/// the AVX2 kernel, so one host tests both).
pub(super) fn available() -> bool {
    crate::paths::vnni() == Some(crate::paths::Vnni::Evex)
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vbmi")
}

/// How one depthwise conv is cut: staged row length and output rows per band.
struct Plan {
    /// Bytes of one staged row: every column a vector reads, padding included.
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
        && (1..=4 * MAX_ROW_QUADS).contains(&g.kw)
        && g.kh * g.kw.div_ceil(4) <= MAX_QUADS
        && g.oh > 0
        && g.ow > 0;
    if !shape_ok {
        return None;
    }
    // A vector at output column ox0 reads, for quad k of a row, up to 64 bytes from
    // staged column s·ox0 + 4k, and the last vector of a row starts at most at
    // max(ow, 16) − 16.
    let quads = g.kw.div_ceil(4);
    let row_len =
        g.sw.checked_mul(g.ow.max(LANES))?
            .checked_add(4 * quads + 64)?;
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

/// Whether `depthwise` takes this conv (given [`available`]).
pub(super) fn fits(g: &Geo) -> bool {
    plan(g).is_some()
}

/// The depthwise conv of output planes `[c0, c1)` (plane `n·C + c`: image `n`, channel
/// `c`) into `y`, which holds those planes only.
///
/// # Safety
/// [`available`]; `fits(g)`; the slices of `q` hold the conv's operands. (`c0 <= c1 <=
/// N·C` and the length of `y` are asserted.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
pub(super) unsafe fn depthwise(g: &Geo, q: &Q<'_>, y: &mut [i8], c0: usize, c1: usize) {
    let plan = plan(g).expect("depthwise_vnni: the caller checked `fits`");
    assert!(c0 <= c1 && c1 <= g.n * g.c && y.len() == (c1 - c0) * g.oh * g.ow);
    // SAFETY (all arms): the CPU features and the fit are the caller's contract.
    unsafe {
        match (g.sw, g.kh, g.kw.div_ceil(4)) {
            (1, 3, 1) => channels::<1, 1, 3>(g, q, y, c0, c1, &plan),
            (2, 3, 1) => channels::<2, 1, 3>(g, q, y, c0, c1, &plan),
            (1, 5, 2) => channels::<1, 2, 5>(g, q, y, c0, c1, &plan),
            (2, 5, 2) => channels::<2, 2, 5>(g, q, y, c0, c1, &plan),
            (1, 7, 2) => channels::<1, 2, 7>(g, q, y, c0, c1, &plan),
            (2, 7, 2) => channels::<2, 2, 7>(g, q, y, c0, c1, &plan),
            (1, _, 1) => channels::<1, 1, 0>(g, q, y, c0, c1, &plan),
            (1, _, _) => channels::<1, 2, 0>(g, q, y, c0, c1, &plan),
            (_, _, 1) => channels::<2, 1, 0>(g, q, y, c0, c1, &plan),
            (_, _, _) => channels::<2, 2, 0>(g, q, y, c0, c1, &plan),
        }
    }
}

/// One vector's place: the staged offsets of its rows' windows (`b` is used only by two-row
/// vectors), where its bytes go in the channel's output plane, and how many.
#[derive(Clone, Copy)]
struct Spot {
    a: usize,
    b: usize,
    out: usize,
    n: usize,
}

/// `depthwise` for horizontal stride `S`, `G` quads per kernel row and `KH` kernel rows
/// (0: `g.kh`, read at run time).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
unsafe fn channels<const S: usize, const G: usize, const KH: usize>(
    g: &Geo,
    q: &Q<'_>,
    y: &mut [i8],
    c0: usize,
    c1: usize,
    plan: &Plan,
) {
    let (h, w, oh, ow, kw) = (g.h, g.w, g.oh, g.ow, g.kw);
    let kh = if KH == 0 { g.kh } else { KH };
    debug_assert!(kh == g.kh && G == kw.div_ceil(4));
    let (plane, out_plane) = (h * w, oh * ow);
    let row_len = plan.row_len;
    let two_rows = ow <= LANES / 2;
    // The byte of a real zero: padding columns and rows outside the image hold it.
    let pad = (q.zx + 128) as u8;
    let mut stage = [pad; STAGE_LEN];
    // Whether staged row r holds image data (else it is all `pad`).
    let mut has_data = [false; MAX_ROWS];
    // Byte 4i + j of a vector: tap j of output lane i's quad. Two-row vectors take lanes
    // ow..2·ow from the second row (`vpermt2b`'s second source: index bit 6).
    let mut idx_bytes = [0u8; 64];
    for (lane, quad) in idx_bytes.chunks_exact_mut(4).enumerate() {
        let (src, col) = match two_rows {
            false => (0, lane),
            true if lane < ow => (0, lane),
            true if lane < 2 * ow => (64, lane - ow),
            true => (0, 0),
        };
        for (j, b) in quad.iter_mut().enumerate() {
            *b = (src + S * col + j) as u8;
        }
    }
    // SAFETY: 64 bytes from a 64-byte array; unaligned load.
    let idx = unsafe { _mm512_loadu_si512(idx_bytes.as_ptr() as *const _) };
    let lo = _mm512_set1_ps(q.lo as f32 - q.zy as f32);
    let hi = _mm512_set1_ps(q.hi as f32 - q.zy as f32);
    let zy = _mm512_set1_epi32(q.zy);
    let mut weights = [_mm512_setzero_si512(); MAX_QUADS];
    // Vectors per output row (two-row vectors: per two rows).
    let per_row = ow.div_ceil(LANES);
    for ch in c0..c1 {
        let c = ch % g.c;
        let xc = &q.x[ch * plane..(ch + 1) * plane];
        let wc = &q.w[c * kh * kw..(c + 1) * kh * kw];
        let mut sum_w = 0i32;
        for ky in 0..kh {
            for k in 0..G {
                let mut quad = [0u8; 4];
                for (j, b) in quad.iter_mut().enumerate() {
                    if 4 * k + j < kw {
                        let wv = wc[ky * kw + 4 * k + j];
                        sum_w += wv as i32;
                        *b = wv as u8;
                    }
                }
                weights[ky * G + k] = _mm512_set1_epi32(i32::from_le_bytes(quad));
            }
        }
        let bias = q.bias.map_or(0, |b| b[c]);
        let base = _mm512_set1_epi32(bias.wrapping_sub((q.zx + 128) * sum_w));
        let scale = (_mm512_set1_ps(q.scales[c]), _mm512_set1_ps(q.neg_scale(c)));
        let yc = &mut y[(ch - c0) * out_plane..(ch - c0 + 1) * out_plane];
        let mut oy0 = 0;
        while oy0 < oh {
            let oy1 = (oy0 + plan.band).min(oh);
            // Staged row r is input row top + r.
            let top = (oy0 * g.sh) as isize - g.pt;
            let rows = (oy1 - 1 - oy0) * g.sh + kh;
            for r in 0..rows {
                let iy = top + r as isize;
                let dst = &mut stage[r * row_len..(r + 1) * row_len];
                if iy >= 0 && iy < h as isize {
                    let src = &xc[iy as usize * w..(iy as usize + 1) * w];
                    // SAFETY: AVX-512 BW is present (this function's contract).
                    unsafe { stage_row(src, g.pl as usize, dst) };
                    has_data[r] = true;
                } else if has_data[r] {
                    dst.fill(pad);
                    has_data[r] = false;
                }
            }
            // Row `oy`'s window starts at staged row (oy − oy0)·sh.
            let window = |oy: usize| (oy - oy0) * g.sh * row_len;
            // The vectors of the band in order, with no division per vector: output row
            // `oy`, and the vector's index `k` in its row (two-row vectors: k = 0).
            let (mut oy, mut k) = (oy0, 0);
            let mut next = || -> Option<Spot> {
                if oy >= oy1 {
                    return None;
                }
                let s = if two_rows {
                    let second = (oy + 1).min(oy1 - 1);
                    let s = Spot {
                        a: window(oy),
                        b: window(second),
                        out: oy * ow,
                        n: if second > oy { 2 * ow } else { ow },
                    };
                    oy += 2;
                    s
                } else {
                    // The last vector of a row of at least 16 ends at the row's end
                    // (recomputing a few outputs, with the same values).
                    let ox0 = if k + 1 == per_row && ow >= LANES {
                        ow - LANES
                    } else {
                        k * LANES
                    };
                    let at = window(oy) + S * ox0;
                    let s = Spot {
                        a: at,
                        b: at,
                        out: oy * ow + ox0,
                        n: LANES.min(ow - ox0),
                    };
                    k += 1;
                    if k == per_row {
                        (oy, k) = (oy + 1, 0);
                    }
                    s
                };
                Some(s)
            };
            let sp = stage.as_ptr();
            // Two vectors a step: independent sums for the out-of-order core.
            while let Some(s0) = next() {
                let s1 = next();
                // SAFETY: every spot's windows are staged rows of this band, and a
                // vector reads at most 64 bytes from column s·ox0 + 4k of each
                // (`plan`'s row length); the stores are masked to the spot's n bytes,
                // inside `yc`.
                unsafe {
                    let a0 = sums::<S, G, KH>(kh, row_len, &weights, base, idx, two_rows, sp, s0);
                    let a1 = s1.map(|s1| {
                        sums::<S, G, KH>(kh, row_len, &weights, base, idx, two_rows, sp, s1)
                    });
                    store(
                        requant(a0, scale, lo, hi, zy),
                        &mut yc[s0.out..s0.out + s0.n],
                    );
                    if let (Some(s1), Some(a1)) = (s1, a1) {
                        store(
                            requant(a1, scale, lo, hi, zy),
                            &mut yc[s1.out..s1.out + s1.n],
                        );
                    }
                }
            }
            oy0 = oy1;
        }
    }
}

/// The sums of one vector: `base` plus every quad of the `kh` kernel rows.
///
/// # Safety
/// AVX-512 F, BW, VBMI and VNNI; `kh` staged rows of `4·(G − 1) + 64` bytes from `sp +
/// s.a` (and from `sp + s.b` for two-row vectors) are inside the staging buffer.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn sums<const S: usize, const G: usize, const KH: usize>(
    kh: usize,
    row_len: usize,
    weights: &[__m512i; MAX_QUADS],
    base: __m512i,
    idx: __m512i,
    two_rows: bool,
    sp: *const u8,
    s: Spot,
) -> __m512i {
    let kh = if KH == 0 { kh } else { KH };
    let mut acc = base;
    for ky in 0..kh {
        for k in 0..G {
            let off = ky * row_len + 4 * k;
            // SAFETY: inside the staged rows (this function's contract).
            unsafe {
                let x = if two_rows {
                    // Lanes from either row: 32 bytes of each hold s·7 + 3 < 32.
                    let a = _mm256_loadu_si256(sp.add(s.a + off) as *const __m256i);
                    let b = _mm256_loadu_si256(sp.add(s.b + off) as *const __m256i);
                    _mm512_permutex2var_epi8(
                        _mm512_castsi256_si512(a),
                        idx,
                        _mm512_castsi256_si512(b),
                    )
                } else if S == 1 {
                    // Sixteen outputs read 19 bytes.
                    let a = _mm256_loadu_si256(sp.add(s.a + off) as *const __m256i);
                    _mm512_permutexvar_epi8(idx, _mm512_castsi256_si512(a))
                } else {
                    // Stride 2: 34 bytes.
                    let a = _mm512_loadu_si512(sp.add(s.a + off) as *const _);
                    _mm512_permutexvar_epi8(idx, a)
                };
                acc = _mm512_dpbusd_epi32(acc, x, weights[ky * G + k]);
            }
        }
    }
    acc
}

/// The output stage of `avx2::Requant::lanes`, sixteen lanes: scale, clamp to the
/// activation range less the zero point, round half to even, add the zero point; then the
/// int32 lanes (in [−128, 127]) as bytes. `scale`: the multipliers of accumulators at or
/// above zero and below it (`avx2::Requant::lanes_q`).
#[inline(always)]
unsafe fn requant(
    acc: __m512i,
    scale: (__m512, __m512),
    lo: __m512,
    hi: __m512,
    zy: __m512i,
) -> __m128i {
    // SAFETY: AVX-512 F (the callers' contract); register-only instructions.
    unsafe {
        let below = _mm512_cmplt_epi32_mask(acc, _mm512_setzero_si512());
        let s = _mm512_mask_blend_ps(below, scale.0, scale.1);
        let f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s);
        let f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
        _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(f), zy))
    }
}

/// The first `out.len()` (at most 16) bytes of `bytes` into `out`, through a masked store.
#[inline(always)]
unsafe fn store(bytes: __m128i, out: &mut [i8]) {
    debug_assert!(out.len() <= 16);
    let mask = ((1u32 << out.len()) - 1) as u16;
    // SAFETY: AVX-512 BW and VL (the callers' contract); the mask limits the store to
    // `out`.
    unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr(), mask, bytes) }
}

/// One staged row: `dst[pl + i] = x[i] + 128` (as a byte: the sign bit flipped) for the
/// input columns of `src` that fit. The other bytes keep the padding byte: only these
/// columns (the same in every row), or whole rows of padding, are ever written.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn stage_row(src: &[i8], pl: usize, dst: &mut [u8]) {
    let start = pl.min(dst.len());
    let n = src.len().min(dst.len() - start);
    let flip = _mm512_set1_epi8(-128);
    let mut i = 0;
    while i < n {
        let k = (n - i).min(64);
        let m = if k == 64 { u64::MAX } else { (1u64 << k) - 1 };
        // SAFETY: masked to the k bytes left of both `src` (from i) and `dst` (from
        // start + i); masked-off bytes are neither read nor written.
        unsafe {
            let v = _mm512_maskz_loadu_epi8(m, src.as_ptr().add(i));
            _mm512_mask_storeu_epi8(
                dst.as_mut_ptr().add(start + i) as *mut i8,
                m,
                _mm512_xor_si512(v, flip),
            );
        }
        i += 64;
    }
}

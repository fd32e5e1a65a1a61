//! The AVX2 + FMA f32 micro-kernels (x86_64; detected at run time with `std`).
//!
//! GEMM: a register block of 6 output channels × 16 pixels (12 accumulators; with the two
//! pixel vectors and the broadcast weight, 15 of the 16 registers) runs down K with one
//! `vfmadd` per weight and pixel vector. The accumulators start at the bias; the clamp is
//! `max` then `min`, as the reference (a NaN sum becomes `lo` in both). Pixel tails of
//! fewer than 16 use masked loads and stores. FullyConnected: four weight rows at a time
//! against one input row, 16 lanes each, summed horizontally at the end.

use core::arch::x86_64::*;

use super::{Gemm, CHUNK, PT};

pub(crate) use crate::paths::avx2_fma as available;

/// Output channels per GEMM register block.
const MR: usize = 6;
/// Weight rows per FullyConnected block.
const FC_ROWS: usize = 4;
const _: () = assert!(PT == 16);

/// `super::gemm` (same arguments and result).
///
/// # Safety
/// The CPU must support AVX2 and FMA; no other thread writes the outputs this call
/// writes (rows `o·ys + y0 ..` of `pix` columns of `y`) while it runs. (Slice bounds are
/// checked here.)
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm(
    gm: &Gemm<'_>,
    x: &[f32],
    xs: usize,
    pix: usize,
    y: &crate::par::SharedMut<'_, f32>,
    ys: usize,
    y0: usize,
) {
    if pix == 0 || gm.oc == 0 {
        return;
    }
    let (k, oc) = (gm.k, gm.oc);
    assert!(k > 0 && x.len() >= (k - 1) * xs + pix);
    assert!(y.len() >= (oc - 1) * ys + y0 + pix);
    assert!(gm.w.len() >= oc * k && gm.bias.is_none_or(|b| b.len() >= oc));
    let mut p0 = 0;
    while p0 < pix {
        let end = (p0 + CHUNK).min(pix);
        let mut o = 0;
        while o < oc {
            let mut p = p0;
            while p < end {
                let n = PT.min(end - p);
                let at = super::Block { o, p, n };
                let tile = Tile { x, xs, ys, y0 };
                match MR.min(oc - o) {
                    6 => block::<6>(gm, at, &tile, y),
                    5 => block::<5>(gm, at, &tile, y),
                    4 => block::<4>(gm, at, &tile, y),
                    3 => block::<3>(gm, at, &tile, y),
                    2 => block::<2>(gm, at, &tile, y),
                    _ => block::<1>(gm, at, &tile, y),
                }
                p += PT;
            }
            o += MR;
        }
        p0 = end;
    }
}

/// The strided operands of `gemm` (besides `y`).
struct Tile<'a> {
    x: &'a [f32],
    xs: usize,
    ys: usize,
    y0: usize,
}

/// Lane masks selecting the first `n` of 16 lanes (two vectors of eight).
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) fn tail_masks(n: usize) -> (__m256i, __m256i) {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let n = n.min(PT) as i32;
    (
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8), idx),
    )
}

/// Load `src[..n]` (n ≤ 16) as two vectors, zero past `n`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn load16(src: &[f32], masks: (__m256i, __m256i)) -> (__m256, __m256) {
    if src.len() >= PT {
        // SAFETY: `src` holds 16 floats.
        unsafe {
            (
                _mm256_loadu_ps(src.as_ptr()),
                _mm256_loadu_ps(src.as_ptr().add(8)),
            )
        }
    } else {
        let ptr = src.as_ptr();
        // SAFETY: the masks select lanes below `src.len()` only (built from it), and
        // masked-off lanes are never read; `wrapping_add` keeps the pointer arithmetic
        // defined when the second vector lies wholly past the slice.
        unsafe {
            (
                _mm256_maskload_ps(ptr, masks.0),
                _mm256_maskload_ps(ptr.wrapping_add(8), masks.1),
            )
        }
    }
}

/// Store the first `dst.len()` (≤ 16) lanes of `v`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn store16(dst: &mut [f32], v: (__m256, __m256), masks: (__m256i, __m256i)) {
    let ptr = dst.as_mut_ptr();
    if dst.len() >= PT {
        // SAFETY: `dst` holds 16 floats.
        unsafe {
            _mm256_storeu_ps(ptr, v.0);
            _mm256_storeu_ps(ptr.add(8), v.1);
        }
    } else {
        // SAFETY: the masks select lanes below `dst.len()` only; masked-off lanes are
        // never written.
        unsafe {
            _mm256_maskstore_ps(ptr, masks.0, v.0);
            _mm256_maskstore_ps(ptr.wrapping_add(8), masks.1, v.1);
        }
    }
}

/// One register block: `R` output channels from `at.o`, `at.n` pixels from `at.p`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn block<const R: usize>(
    gm: &Gemm<'_>,
    at: super::Block,
    t: &Tile<'_>,
    y: &crate::par::SharedMut<'_, f32>,
) {
    let k = gm.k;
    let masks = tail_masks(at.n);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    if let Some(b) = gm.bias {
        for (r, a) in acc.iter_mut().enumerate() {
            let v = _mm256_set1_ps(b[at.o + r]);
            *a = [v, v];
        }
    }
    // Every row c < k reads x[c·xs + p .. c·xs + p + n]: inside x (checked once here, so
    // the K loop has no bounds checks); every weight row o + r < oc holds k floats.
    assert!(at.n <= PT && (k - 1) * t.xs + at.p + at.n <= t.x.len());
    assert!((at.o + R) * k <= gm.w.len());
    let xp = t.x[at.p..].as_ptr();
    let wp = gm.w[at.o * k..].as_ptr();
    // SAFETY: the two asserts above are `k_loop`'s requirements; the masks select `at.n`.
    let acc = unsafe {
        if at.n == PT {
            k_loop::<R, true>(acc, wp, k, xp, t.xs, masks)
        } else {
            k_loop::<R, false>(acc, wp, k, xp, t.xs, masks)
        }
    };
    let (lo, hi) = (_mm256_set1_ps(gm.lo), _mm256_set1_ps(gm.hi));
    for (r, a) in acc.iter().enumerate() {
        let v0 = _mm256_min_ps(_mm256_max_ps(a[0], lo), hi);
        let v1 = _mm256_min_ps(_mm256_max_ps(a[1], lo), hi);
        let from = (at.o + r) * t.ys + t.y0 + at.p;
        // SAFETY: outputs `from..from + at.n` are this block's, written by this call only
        // (`gemm`'s contract).
        store16(unsafe { y.piece(from, at.n) }, (v0, v1), masks);
    }
}

/// `acc[r] += Σ_c W[r][c] · X[c][0..16]` for the `R` weight rows at `wp` (row stride `k`)
/// and the input rows at `xp` (row stride `xs`); all 16 lanes when `FULL`, else the lanes
/// `masks` selects. The accumulators stay in registers (12 of the 16 for `R` = 6).
///
/// # Safety
/// `wp` addresses `R · k` floats; for every `c < k`, the 16 floats at `xp + c · xs` (the
/// lanes `masks` selects when not `FULL`) are inside one slice.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn k_loop<const R: usize, const FULL: bool>(
    mut acc: [[__m256; 2]; R],
    wp: *const f32,
    k: usize,
    xp: *const f32,
    xs: usize,
    masks: (__m256i, __m256i),
) -> [[__m256; 2]; R] {
    for c in 0..k {
        let xr = xp.wrapping_add(c * xs);
        // The same pixels of the next chunk (see `avx512::k_loop`; a prefetch never
        // faults).
        _mm_prefetch::<_MM_HINT_T0>(xr.wrapping_add(CHUNK) as *const i8);
        // SAFETY: the 16 floats at c·xs (those the masks select when not FULL;
        // masked-off lanes are never read) are inside x (the caller's guarantee).
        let (x0, x1) = unsafe {
            if FULL {
                (_mm256_loadu_ps(xr), _mm256_loadu_ps(xr.add(8)))
            } else {
                (
                    _mm256_maskload_ps(xr, masks.0),
                    _mm256_maskload_ps(xr.wrapping_add(8), masks.1),
                )
            }
        };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and c < k: inside the R · k floats at wp (the caller's guarantee).
            let wv = _mm256_set1_ps(unsafe { *wp.add(r * k + c) });
            a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
            a[1] = _mm256_fmadd_ps(wv, x1, a[1]);
        }
    }
    acc
}

/// One output row of FullyConnected: `yr[j] = clamp(bias[j] + Σ_t xr[t] · W[j, t])`.
///
/// # Safety
/// The CPU must support AVX2 and FMA. (Slice bounds are checked here.)
#[target_feature(enable = "avx2,fma")]
pub unsafe fn fc_row(gm: &Gemm<'_>, xr: &[f32], yr: &mut [f32]) {
    let (k, n) = (gm.k, gm.oc);
    assert!(xr.len() >= k && yr.len() >= n && gm.w.len() >= n * k);
    assert!(gm.bias.is_none_or(|b| b.len() >= n));
    let mut j = 0;
    while j < n {
        match FC_ROWS.min(n - j) {
            4 => dot_rows::<4>(gm, xr, j, yr),
            3 => dot_rows::<3>(gm, xr, j, yr),
            2 => dot_rows::<2>(gm, xr, j, yr),
            _ => dot_rows::<1>(gm, xr, j, yr),
        }
        j += FC_ROWS;
    }
}

/// FullyConnected over the `m` rows of `x` (`k` each) for few weight rows (`gm.oc`):
/// `y[i·oc + j] = clamp(bias[j] + Σ_t x[i, t] · W[j, t])`, four input rows a pass against
/// each weight row, so eight accumulator chains run at once instead of two (one row's
/// dot product waits on its fused multiply-adds' latency). Each output is `fc_row`'s
/// chain, so the same bits.
///
/// # Safety
/// The CPU must support AVX2 and FMA. (Slice bounds are checked here.)
#[target_feature(enable = "avx2,fma")]
pub unsafe fn fc_few_cols(gm: &Gemm<'_>, x: &[f32], m: usize, y: &mut [f32]) {
    let (k, n) = (gm.k, gm.oc);
    assert!(x.len() >= m * k && y.len() >= m * n && gm.w.len() >= n * k);
    assert!(gm.bias.is_none_or(|b| b.len() >= n));
    let mut i = 0;
    while i < m {
        let rows = FC_ROWS.min(m - i);
        for j in 0..n {
            match rows {
                4 => dot_x_rows::<4>(gm, x, i, j, y),
                3 => dot_x_rows::<3>(gm, x, i, j, y),
                2 => dot_x_rows::<2>(gm, x, i, j, y),
                _ => dot_x_rows::<1>(gm, x, i, j, y),
            }
        }
        i += rows;
    }
}

/// Input rows `i..i + R` of `x` against weight row `j`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot_x_rows<const R: usize>(gm: &Gemm<'_>, x: &[f32], i: usize, j: usize, y: &mut [f32]) {
    let (k, n) = (gm.k, gm.oc);
    let xs: [&[f32]; R] = core::array::from_fn(|r| &x[(i + r) * k..(i + r + 1) * k]);
    let sums = dots(&gm.w[j * k..(j + 1) * k], xs, k);
    for (r, s) in sums.into_iter().enumerate() {
        let sum = s + gm.bias.map_or(0.0, |b| b[j]);
        y[(i + r) * n + j] = sum.max(gm.lo).min(gm.hi);
    }
}

/// `R` weight rows from row `j` against `x`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot_rows<const R: usize>(gm: &Gemm<'_>, x: &[f32], j: usize, y: &mut [f32]) {
    let k = gm.k;
    let rows: [&[f32]; R] = core::array::from_fn(|r| &gm.w[(j + r) * k..(j + r + 1) * k]);
    let sums = dots(x, rows, k);
    for (r, s) in sums.into_iter().enumerate() {
        let sum = s + gm.bias.map_or(0.0, |b| b[j + r]);
        y[j + r] = sum.max(gm.lo).min(gm.hi);
    }
}

/// `Σ_t one[t] · rows[r][t]` for each of the `R` rows (`k` terms): 16 lanes a step in two
/// chains of eight, the tail masked, then the lanes summed; the chain of every f32
/// FullyConnected dot product here, so a row's result is the same bits whichever operand
/// is shared.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dots<const R: usize>(one: &[f32], rows: [&[f32]; R], k: usize) -> [f32; R] {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let mut t = 0;
    while t < k {
        let n = PT.min(k - t);
        let masks = tail_masks(n);
        let (o0, o1) = load16(&one[t..t + n], masks);
        for (a, row) in acc.iter_mut().zip(rows) {
            let (v0, v1) = load16(&row[t..t + n], masks);
            a[0] = _mm256_fmadd_ps(v0, o0, a[0]);
            a[1] = _mm256_fmadd_ps(v1, o1, a[1]);
        }
        t += PT;
    }
    let mut sums = [0f32; R];
    for (s, a) in sums.iter_mut().zip(&acc) {
        *s = hsum(_mm256_add_ps(a[0], a[1]));
    }
    sums
}

/// The sum of the eight lanes of `v`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// `dst[j] = src[2j]`: eight outputs from two loads, an in-lane shuffle of the even
/// elements and a swap of the middle 64-bit quarters; the last few one at a time.
///
/// # Safety
/// The CPU must support AVX2. (Slice bounds are checked here.)
#[target_feature(enable = "avx2,fma")]
pub unsafe fn stride2(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    assert!(n == 0 || src.len() > 2 * (n - 1));
    let mut j = 0;
    // A block of eight reads src[2j .. 2j + 16]: inside src while 2j + 16 ≤ src.len().
    while j + 8 <= n && 2 * j + 16 <= src.len() {
        // SAFETY: the 16 floats at 2j are inside src (the loop condition); the 8 at j
        // inside dst (j + 8 ≤ n).
        unsafe {
            let a = _mm256_loadu_ps(src.as_ptr().add(2 * j));
            let b = _mm256_loadu_ps(src.as_ptr().add(2 * j + 8));
            // [a0 a2 b0 b2 | a4 a6 b4 b6], then 64-bit quarters in order 0, 2, 1, 3.
            let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
            _mm256_storeu_ps(dst.as_mut_ptr().add(j), e);
        }
        j += 8;
    }
    for (v, &s) in dst[j..].iter_mut().zip(src[2 * j..].iter().step_by(2)) {
        *v = s;
    }
}

/// The 8×8 block of floats at `src` (row `r` at `src + r·ss`) transposed into `dst` (row
/// `i` at `dst + i·ds`): `dst[i·ds + r] = src[r·ss + i]`.
///
/// # Safety
/// AVX2 must be present; the 8 floats at `src + r·ss` and at `dst + r·ds` (r < 8) must be
/// inside their slices, and the two blocks must not overlap.
#[target_feature(enable = "avx2")]
pub unsafe fn transpose8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    // SAFETY: the caller's guarantee covers each row read and written.
    unsafe {
        let rows = core::array::from_fn(|i| _mm256_loadu_ps(src.add(i * ss)));
        for (i, v) in transpose8_regs(rows).into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(i * ds), v);
        }
    }
}

/// Eight vectors of eight floats (rows) transposed in registers: lane `r` of result `i` is
/// lane `i` of row `r`.
#[target_feature(enable = "avx2")]
#[inline]
pub fn transpose8_regs(r: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved: (a_r0 a_s0 a_r1 a_s1 | a_r4 a_s4 a_r5 a_s5) ...
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    // Columns c and c + 4 of four rows each: (a_0c a_1c a_2c a_3c | a_0,c+4 ...).
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

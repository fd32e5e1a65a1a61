//! f32 depthwise Conv over a zero-padded copy of each input plane (x86_64: AVX2 + FMA,
//! or AVX-512F where its 16-column vectors take fewer steps).
//!
//! The row kernel of `depthwise.rs` pays its per-row set-up on every row, which dominates
//! on the 7- to 28-wide planes of mobile backbones. Here each channel's plane is first
//! copied into a stack buffer with its zero border (a band of rows at a time when the plane
//! is larger than the buffer; and, for strides 2–4, split into
//! `sw` column phases so that every tap reads a vector of consecutive outputs' inputs with
//! one load), then every output lane is the bias plus the taps in the reference's order
//! (`ky`, then `kx`), one fused multiply-add each, then `max(lo)`, `min(hi)`. Every lane
//! runs the same chain whatever the vector width, so the AVX2 and AVX-512 forms give the
//! same bits; against the reference (a multiply, then an add) they differ by the fused
//! roundings only, within the f32 fast paths' tolerance (`tests/exact_f32.rs`). A padding
//! tap adds `0 · w`, a signed zero, which leaves every sum unchanged except a bias of
//! exactly −0.

use core::arch::x86_64::*;

use super::Gemm;
use crate::conv::Geo;

/// Floats in the padded-plane buffer (64 KB of stack): a 112×112 plane with a 3×3 border.
const SCRATCH: usize = 16384;
/// Largest horizontal stride split into phases.
const PHASES_MAX: usize = 4;

/// The padded layout of one band of a plane: the input rows that `bo` output rows read,
/// as `sw` phases of `ph` rows × `pw` columns. A plane whose padded copy fits the buffer
/// is one band; a larger one (PP-OCR's 160×160 and 320×320 maps) goes band by band.
#[derive(Clone, Copy)]
struct Pad {
    ph: usize,
    pw: usize,
    bo: usize,
}

/// The band layout for vectors of `lanes` columns (8 or 16: every output vector's loads,
/// the discarded lanes past `ow` included, lie inside its rows).
fn pad_of(g: &Geo, lanes: usize) -> Option<Pad> {
    if g.sw == 0 || g.sw > PHASES_MAX || g.oh == 0 || g.ow == 0 || g.pt < 0 || g.pl < 0 {
        return None;
    }
    let owl = g.ow.div_ceil(lanes) * lanes;
    let pw = owl + ((g.kw - 1) * g.dw) / g.sw + 1;
    // The padded rows `bo` output rows read.
    let rows = |bo: usize| (bo - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    let fits = |bo: usize| {
        g.sw.checked_mul(rows(bo))
            .and_then(|r| r.checked_mul(pw))
            .is_some_and(|t| t <= SCRATCH)
    };
    if !fits(1) {
        return None;
    }
    // The most output rows per band (all of them when the plane fits).
    let per_row = g.sw * g.sh * pw;
    let first = g.sw * rows(1) * pw;
    let bo = (1 + (SCRATCH - first) / per_row.max(1)).min(g.oh);
    debug_assert!(fits(bo));
    Some(Pad {
        ph: rows(bo),
        pw,
        bo,
    })
}

/// Whether this kernel takes the (depthwise) geometry.
pub(super) fn fits(g: &Geo) -> bool {
    g.kh >= 1 && g.kw >= 1 && g.kh * g.kw <= 64 && pad_of(g, 8).is_some()
}

/// Whether the AVX-512 form takes `g`: the CPU has it, 16-column vectors need fewer steps
/// a row than 8-column ones (not on a 7-wide plane), and its wider rows fit the buffer.
fn wide(g: &Geo) -> Option<Pad> {
    if !super::avx512::available() || g.ow.div_ceil(16) >= g.ow.div_ceil(8) {
        return None;
    }
    pad_of(g, 16)
}

/// The depthwise conv of `g` over the whole batch; the caller checked AVX2, `fits` and the
/// slice lengths (`x` holds `n·c` planes of `h·w`, `y` `n·c` planes of `oh·ow`, the
/// weights `c·kh·kw`).
pub(super) fn depthwise(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    let (pad, wide) = match wide(g) {
        Some(pad) => (pad, true),
        None => match pad_of(g, 8) {
            Some(pad) => (pad, false),
            None => return,
        },
    };
    super::dispatch::taken();
    if wide {
        crate::paths::note(crate::paths::Path::DepthwiseF32Avx512);
    }
    let (plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    let ksz = g.kh * g.kw;
    let work = (g.n * g.c * out_plane * ksz) as u64;
    crate::par::par_pieces(
        &mut y[..g.n * g.c * out_plane],
        out_plane,
        work,
        |at, yp| {
            let mut buf = [0f32; SCRATCH];
            let mut offs = [0usize; 64];
            let nt = tap_offsets(g, pad, &mut offs);
            // Per tap: its offset (the same for every channel) and this channel's weight.
            let mut taps = [(0usize, 0f32); 64];
            for (i, yc) in yp.chunks_exact_mut(out_plane).enumerate() {
                let nc = at / out_plane + i;
                let c = nc % g.c;
                let xc = &x[nc * plane..(nc + 1) * plane];
                let wc = &gm.w[c * ksz..(c + 1) * ksz];
                let bias = gm.bias.map_or(0.0, |b| b[c]);
                for ((tap, &off), &w) in taps.iter_mut().zip(&offs[..nt]).zip(wc) {
                    *tap = (off, w);
                }
                let taps = &taps[..nt.min(wc.len())];
                for oy0 in (0..g.oh).step_by(pad.bo) {
                    let rows = pad.bo.min(g.oh - oy0);
                    fill(g, pad, xc, &mut buf, oy0 * g.sh);
                    let band = &mut yc[oy0 * g.ow..(oy0 + rows) * g.ow];
                    let act = (bias, gm.lo, gm.hi);
                    // SAFETY: the caller checked AVX2 and FMA, `wide` AVX-512F; the plane
                    // kernels read `buf` within the padded layout `fill` wrote (sized by
                    // `pad_of` for their vector width and `bo` ≥ `rows` output rows) and
                    // write `band` within `rows·ow`.
                    unsafe {
                        if wide {
                            plane_avx512(g, pad, &buf, taps, act, band, rows);
                        } else {
                            plane_avx2(g, pad, &buf, taps, act, band, rows);
                        }
                    }
                }
            }
        },
    );
}

/// Copy one band of a plane, padded rows `r0..r0 + ph`, into `buf` with its zero border,
/// column phase `p` of padded column `pc` (= input column + left padding) at
/// `p·ph·pw + (row − r0)·pw + pc / sw`.
///
/// `buf` must hold zeros wherever no band of this layout writes input values (it is
/// zeroed once per buffer, then reused for every channel): each row inside the input
/// writes the same columns every time, and a row outside it (padding) is zeroed here,
/// since another band may have written input values there. Zeroing the whole band for
/// every channel cost as much as its sums on 28×28 planes.
fn fill(g: &Geo, pad: Pad, xc: &[f32], buf: &mut [f32], r0: usize) {
    let (pt, pl) = (g.pt as usize, g.pl as usize);
    for pr in 0..pad.ph {
        let Some(iy) = (r0 + pr).checked_sub(pt).filter(|&iy| iy < g.h) else {
            for p in 0..g.sw {
                buf[(p * pad.ph + pr) * pad.pw..][..pad.pw].fill(0.0);
            }
            continue;
        };
        let row = &xc[iy * g.w..(iy + 1) * g.w];
        if g.sw == 1 {
            let n = g.w.min(pad.pw.saturating_sub(pl));
            // SAFETY: this kernel runs only where the caller checked AVX2 and FMA.
            unsafe { copy_row(&row[..n], &mut buf[pr * pad.pw + pl..pr * pad.pw + pl + n]) };
            continue;
        }
        if g.sw == 2 {
            // Input column 2m goes to phase pl mod 2 at m + pl/2, column 2m + 1 to the
            // other phase at m + (pl + 1)/2: one deinterleave of the row.
            let (pe, je, jo) = (pl % 2, pl / 2, pl.div_ceil(2));
            let ne = g.w.div_ceil(2).min(pad.pw.saturating_sub(je));
            let no = (g.w / 2).min(pad.pw.saturating_sub(jo));
            let (lo, hi) = buf.split_at_mut(pad.ph * pad.pw);
            let (p0, p1) = (
                &mut lo[pr * pad.pw..][..pad.pw],
                &mut hi[pr * pad.pw..][..pad.pw],
            );
            let (ev, od) = if pe == 0 { (p0, p1) } else { (p1, p0) };
            // SAFETY: this kernel runs only where the caller checked AVX2.
            unsafe { split2(row, &mut ev[je..je + ne], &mut od[jo..jo + no]) };
            continue;
        }
        // Phase p holds padded columns pc = j·sw + p, input column pc − pl: a strided
        // read per phase, with no division per element (which made stride-2 planes
        // cost more than their taps).
        for p in 0..g.sw {
            let dst = &mut buf[(p * pad.ph + pr) * pad.pw..][..pad.pw];
            let j0 = pl.saturating_sub(p).div_ceil(g.sw);
            let j1 = (g.w + pl).saturating_sub(p).div_ceil(g.sw).min(pad.pw);
            for (j, d) in dst.iter_mut().enumerate().take(j1).skip(j0) {
                *d = row[j * g.sw + p - pl];
            }
        }
    }
}

/// `dst.copy_from_slice(src)` in vectors, the tail masked: a row of a small plane was a
/// call to the C library's `memmove` (as much time as the row's sums).
///
/// # Safety
/// AVX2 and FMA must be present. Panics when the lengths differ.
#[target_feature(enable = "avx2,fma")]
unsafe fn copy_row(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let n = src.len();
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n, inside both slices.
        unsafe { _mm256_storeu_ps(dp.add(i), _mm256_loadu_ps(sp.add(i))) };
        i += 8;
    }
    if i < n {
        let mask = super::avx2::tail_masks(n - i).0;
        // SAFETY: the mask selects the n − i lanes from i, inside both slices; masked-off
        // lanes are neither read nor written.
        unsafe { _mm256_maskstore_ps(dp.add(i), mask, _mm256_maskload_ps(sp.add(i), mask)) };
    }
}

/// `ev[i] = row[2i]` and `od[i] = row[2i + 1]` for every `i` below each slice's length
/// (sixteen input columns a step: two loads, two shuffles, two lane permutes). Panics when
/// `row` is too short for them.
#[target_feature(enable = "avx2")]
unsafe fn split2(row: &[f32], ev: &mut [f32], od: &mut [f32]) {
    let mut m = 0;
    while m + 8 <= ev.len() && m + 8 <= od.len() && 2 * m + 16 <= row.len() {
        // SAFETY: AVX2 is present (this function's feature); row[2m..2m + 16],
        // ev[m..m + 8] and od[m..m + 8] are inside their slices (the loop condition).
        unsafe {
            let a = _mm256_loadu_ps(row.as_ptr().add(2 * m));
            let b = _mm256_loadu_ps(row.as_ptr().add(2 * m + 8));
            let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
            let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
            _mm256_storeu_ps(ev.as_mut_ptr().add(m), e);
            _mm256_storeu_ps(od.as_mut_ptr().add(m), o);
        }
        m += 8;
    }
    for (i, e) in ev.iter_mut().enumerate().skip(m) {
        *e = row[2 * i];
    }
    for (i, o) in od.iter_mut().enumerate().skip(m) {
        *o = row[2 * i + 1];
    }
}

/// Per tap (`ky`, then `kx`): the offset in `fill`'s layout of output (0, 0)'s input
/// (computed once per op: per channel, with two divisions a tap, it cost more than a
/// 7×7 plane's sums).
fn tap_offsets(g: &Geo, pad: Pad, offs: &mut [usize; 64]) -> usize {
    let nt = (g.kh * g.kw).min(offs.len());
    for (t, off) in offs.iter_mut().enumerate().take(nt) {
        let (ky, kx) = (t / g.kw, t % g.kw);
        let cx = kx * g.dw;
        *off = ((cx % g.sw) * pad.ph + ky * g.dh) * pad.pw + cx / g.sw;
    }
    nt
}

/// The plane kernel for one vector type: `$plane` computes `oh` output rows of one band
/// (`yc`: `oh·ow` floats) from the band `fill` wrote, each tap its offset (`tap_offsets`)
/// and this channel's weight; `$block` the sums of an `R × N` block of output vectors.
macro_rules! plane_kernel {
    (
        $plane:ident, $block:ident, $feature:literal, $v:ty, $lanes:literal,
        $load:ident, $fma:ident, $set1:ident, $max:ident, $min:ident, $store:ident,
        $tail:ident
    ) => {
        #[target_feature(enable = $feature)]
        unsafe fn $plane(
            g: &Geo,
            pad: Pad,
            buf: &[f32; SCRATCH],
            taps: &[(usize, f32)],
            (bias, lo, hi): (f32, f32, f32),
            yc: &mut [f32],
            oh: usize,
        ) {
            const L: usize = $lanes;
            let (vlo, vhi, vb) = ($set1(lo), $set1(hi), $set1(bias));
            let b = buf.as_ptr();
            // Blocks of about eight output vectors (eight independent chains keep both
            // FMA pipes busy through their four cycles' latency): along one row where it
            // has eight or more, else over 2, 4 or 8 rows at once; each lane's sum is the
            // reference's chain whatever the block.
            let per_row = g.ow.div_ceil(L);
            let stride = g.sh * pad.pw;
            let group = match per_row {
                1 => 8,
                2 | 3 => 4,
                4..=7 => 2,
                _ => 1,
            };
            macro_rules! run {
                ($r:literal, $n:literal, $oy:expr, $ox:expr) => {{
                    let (oy, ox): (usize, usize) = ($oy, $ox);
                    // SAFETY: every vector's loads lie inside the band's padded layout
                    // (`pad_of` for L lanes: rows `oy..oy + R`, columns to `ow` rounded up
                    // to L); the caller checked the CPU feature.
                    let acc =
                        unsafe { $block::<$r, $n>(b.add(oy * stride + ox), stride, taps, vb) };
                    for (r, row) in acc.iter().enumerate() {
                        let yr = &mut yc[(oy + r) * g.ow..(oy + r + 1) * g.ow];
                        for (j, &a) in row.iter().enumerate() {
                            let x0 = ox + j * L;
                            let v = $min($max(a, vlo), vhi);
                            let left = g.ow - x0;
                            if left >= L {
                                // SAFETY: L floats from `x0` lie inside the row.
                                unsafe { $store(yr.as_mut_ptr().add(x0), v) };
                            } else {
                                // SAFETY: the `left` (< L) floats from `x0` lie inside the
                                // row; the other lanes are not written.
                                unsafe { $tail(yr.as_mut_ptr().add(x0), v, left) };
                            }
                        }
                    }
                }};
            }
            let mut oy = 0;
            while oy < oh {
                // The rows left under a full group take the largest smaller block (a
                // 7-row plane as 4 + 2 + 1 rows, not 7 single-chain rows, each a chain of
                // dependent FMAs waiting out their latency).
                let rows = match oh - oy {
                    r if r >= group => group,
                    r if r >= 4 && group > 4 => 4,
                    r if r >= 2 && group > 2 => 2,
                    _ => 1,
                };
                let mut j = 0;
                while j < per_row {
                    let left = per_row - j;
                    let ox = j * L;
                    j += match (rows, left) {
                        (8, _) => {
                            run!(8, 1, oy, ox);
                            1
                        }
                        (4, 2..) => {
                            run!(4, 2, oy, ox);
                            2
                        }
                        (4, _) => {
                            run!(4, 1, oy, ox);
                            1
                        }
                        (2, 4..) => {
                            run!(2, 4, oy, ox);
                            4
                        }
                        (2, 2..) => {
                            run!(2, 2, oy, ox);
                            2
                        }
                        (2, _) => {
                            run!(2, 1, oy, ox);
                            1
                        }
                        (_, 8..) => {
                            run!(1, 8, oy, ox);
                            8
                        }
                        (_, 4..) => {
                            run!(1, 4, oy, ox);
                            4
                        }
                        _ => {
                            run!(1, 1, oy, ox);
                            1
                        }
                    };
                }
                oy += rows;
            }
        }

        /// The sums of `R` rows (`stride` floats apart) × `N` output vectors from the
        /// bias `vb`: vector (r, j) reads `p + r·stride + L·j + off` at tap `(off, w)`,
        /// taps in order, one fused multiply-add each, the chains interleaved.
        ///
        /// # Safety
        /// The CPU feature must be present, and those L floats must be readable for every
        /// vector and tap (`pad_of` sizes the buffer so).
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn $block<const R: usize, const N: usize>(
            p: *const f32,
            stride: usize,
            taps: &[(usize, f32)],
            vb: $v,
        ) -> [[$v; N]; R] {
            const L: usize = $lanes;
            let mut acc = [[vb; N]; R];
            let rows: [usize; R] = core::array::from_fn(|r| r * stride);
            for &(off, w) in taps {
                let wv = $set1(w);
                let q = p.wrapping_add(off);
                for (row, &at) in acc.iter_mut().zip(&rows) {
                    let qr = q.wrapping_add(at);
                    for (j, a) in row.iter_mut().enumerate() {
                        // SAFETY: in bounds (the caller's guarantee).
                        let x = unsafe { $load(qr.add(L * j)) };
                        *a = $fma(x, wv, *a);
                    }
                }
            }
            acc
        }
    };
}

plane_kernel!(
    plane_avx2,
    block_avx2,
    "avx2,fma",
    __m256,
    8,
    _mm256_loadu_ps,
    _mm256_fmadd_ps,
    _mm256_set1_ps,
    _mm256_max_ps,
    _mm256_min_ps,
    _mm256_storeu_ps,
    tail_avx2
);

plane_kernel!(
    plane_avx512,
    block_avx512,
    "avx512f",
    __m512,
    16,
    _mm512_loadu_ps,
    _mm512_fmadd_ps,
    _mm512_set1_ps,
    _mm512_max_ps,
    _mm512_min_ps,
    _mm512_storeu_ps,
    tail_avx512
);

/// Store the first `left` (< 8) lanes of `v` at `p` (a row's last, partial vector: a copy
/// through a stack vector was a C library call per row).
///
/// # Safety
/// AVX2 and FMA must be present and the `left` floats from `p` writable.
#[target_feature(enable = "avx2,fma")]
unsafe fn tail_avx2(p: *mut f32, v: __m256, left: usize) {
    let mask = super::avx2::tail_masks(left).0;
    // SAFETY: the mask selects the `left` lanes the caller vouches for.
    unsafe { _mm256_maskstore_ps(p, mask, v) };
}

/// `tail_avx2` for 16 lanes (`left` < 16).
///
/// # Safety
/// AVX-512F must be present and the `left` floats from `p` writable.
#[target_feature(enable = "avx512f")]
unsafe fn tail_avx512(p: *mut f32, v: __m512, left: usize) {
    let mask = super::avx512::tail_masks(left).0;
    // SAFETY: the mask selects the `left` lanes the caller vouches for.
    unsafe { _mm512_mask_storeu_ps(p, mask, v) };
}

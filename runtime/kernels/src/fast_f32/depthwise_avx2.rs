//! f32 depthwise Conv with AVX2 over a zero-padded copy of each input plane (x86_64).
//!
//! The row kernel of `depthwise.rs` pays its per-row set-up on every row, which dominates
//! on the 7- to 28-wide planes of mobile backbones. Here each channel's plane is first
//! copied into a stack buffer with its zero border (a band of rows at a time when the plane
//! is larger than the buffer; and, for strides 2–4, split into
//! `sw` column phases so that every tap reads eight consecutive outputs' inputs with one
//! load), then every output vector is the bias plus the taps in the reference's order
//! (`ky`, then `kx`), each a separate multiply and add (no FMA), then `max(lo)`, `min(hi)`.
//! A padding tap adds `0 · w`, a signed zero, which leaves every sum unchanged except a
//! bias of exactly −0 (the reference would keep −0 where this gives +0; equal as floats).

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

fn pad_of(g: &Geo) -> Option<Pad> {
    if g.sw == 0 || g.sw > PHASES_MAX || g.oh == 0 || g.ow == 0 || g.pt < 0 || g.pl < 0 {
        return None;
    }
    let ow8 = g.ow.div_ceil(8) * 8;
    let pw = ow8 + ((g.kw - 1) * g.dw) / g.sw + 1;
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
    g.kh >= 1 && g.kw >= 1 && g.kh * g.kw <= 64 && pad_of(g).is_some()
}

/// The depthwise conv of `g` over the whole batch; the caller checked AVX2, `fits` and the
/// slice lengths (`x` holds `n·c` planes of `h·w`, `y` `n·c` planes of `oh·ow`, the
/// weights `c·kh·kw`).
pub(super) fn depthwise(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) {
    let Some(pad) = pad_of(g) else { return };
    super::dispatch::taken();
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
                    // SAFETY: the caller checked AVX2; `plane_avx2` reads `buf` within the
                    // padded layout `fill` wrote (sized by `pad_of` for `bo` ≥ `rows`
                    // output rows) and writes `band` within `rows·ow`.
                    unsafe { plane_avx2(g, pad, &buf, taps, (bias, gm.lo, gm.hi), band, rows) };
                }
            }
        },
    );
}

/// Copy one band of a plane, padded rows `r0..r0 + ph`, into `buf` with its zero border,
/// column phase `p` of padded column `pc` (= input column + left padding) at
/// `p·ph·pw + (row − r0)·pw + pc / sw`.
fn fill(g: &Geo, pad: Pad, xc: &[f32], buf: &mut [f32], r0: usize) {
    let (pt, pl) = (g.pt as usize, g.pl as usize);
    let size = g.sw * pad.ph * pad.pw;
    buf[..size].fill(0.0);
    for pr in 0..pad.ph {
        let Some(iy) = (r0 + pr).checked_sub(pt).filter(|&iy| iy < g.h) else {
            continue;
        };
        let row = &xc[iy * g.w..(iy + 1) * g.w];
        if g.sw == 1 {
            let n = g.w.min(pad.pw.saturating_sub(pl));
            buf[pr * pad.pw + pl..pr * pad.pw + pl + n].copy_from_slice(&row[..n]);
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

/// `oh` output rows of one band (`yc`: `oh·ow` floats) from the band `fill` wrote; each
/// tap its offset (`tap_offsets`) and this channel's weight.
#[target_feature(enable = "avx2")]
unsafe fn plane_avx2(
    g: &Geo,
    pad: Pad,
    buf: &[f32; SCRATCH],
    taps: &[(usize, f32)],
    (bias, lo, hi): (f32, f32, f32),
    yc: &mut [f32],
    oh: usize,
) {
    let (vlo, vhi, vb) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi), _mm256_set1_ps(bias));
    let b = buf.as_ptr();
    // Output vectors (8 columns of one row) four at a time: each lane's sum is the
    // reference's chain, but four independent chains keep the adder busy where one would
    // wait out its latency at every tap.
    let per_row = g.ow.div_ceil(8);
    let slots = oh * per_row;
    let at = |v: usize| (v / per_row, (v % per_row) * 8);
    let store = |yc: &mut [f32], (oy, ox): (usize, usize), acc: __m256| {
        let r = _mm256_min_ps(_mm256_max_ps(acc, vlo), vhi);
        let yr = &mut yc[oy * g.ow..(oy + 1) * g.ow];
        let left = g.ow - ox;
        if left >= 8 {
            // SAFETY: eight floats from `ox` lie inside the row (`left ≥ 8`).
            unsafe { _mm256_storeu_ps(yr.as_mut_ptr().add(ox), r) };
        } else {
            let mut t = [0f32; 8];
            // SAFETY: `t` holds eight floats.
            unsafe { _mm256_storeu_ps(t.as_mut_ptr(), r) };
            yr[ox..].copy_from_slice(&t[..left]);
        }
    };
    let base = |(oy, ox): (usize, usize)| oy * g.sh * pad.pw + ox;
    if per_row >= 4 {
        // Rows of four or more vectors: eight (then four) vectors of one row a pass, read
        // at fixed offsets from one pointer (the add's latency is four cycles on two
        // ports, so eight chains keep it busy), the rest of the row one at a time.
        for oy in 0..oh {
            let mut ox = 0;
            while ox + 32 <= per_row * 8 {
                let n = if ox + 64 <= per_row * 8 { 8 } else { 4 };
                // SAFETY: the `n` vectors from (oy, ox) are inside the row's padded
                // layout, so every load is in bounds (`pad_of`); AVX2 is present.
                let p = unsafe { b.add(base((oy, ox))) };
                let (a8, a4);
                let acc: &[__m256] = if n == 8 {
                    a8 = unsafe { row_chains::<8>(p, taps, vb) };
                    &a8
                } else {
                    a4 = unsafe { row_chains::<4>(p, taps, vb) };
                    &a4
                };
                for (i, &a) in acc.iter().enumerate() {
                    store(yc, (oy, ox + 8 * i), a);
                }
                ox += 8 * n;
            }
            while ox < g.ow {
                // SAFETY: as above, one vector.
                let acc = unsafe { row_chains::<1>(b.add(base((oy, ox))), taps, vb) };
                store(yc, (oy, ox), acc[0]);
                ox += 8;
            }
        }
        return;
    }
    let mut v = 0;
    while v + 4 <= slots {
        let pos = [at(v), at(v + 1), at(v + 2), at(v + 3)];
        let bases = pos.map(base);
        let mut acc = [vb; 4];
        for &(off, w) in taps {
            let wv = _mm256_set1_ps(w);
            for (a, &b0) in acc.iter_mut().zip(&bases) {
                // In bounds: b0 + off + 7 < sw·ph·pw by `pad_of`.
                let x = _mm256_loadu_ps(b.add(b0 + off));
                *a = _mm256_add_ps(*a, _mm256_mul_ps(x, wv));
            }
        }
        for (p, a) in pos.into_iter().zip(acc) {
            store(yc, p, a);
        }
        v += 4;
    }
    while v < slots {
        let p = at(v);
        let b0 = base(p);
        let mut acc = vb;
        for &(off, w) in taps {
            // In bounds: as above.
            let x = _mm256_loadu_ps(b.add(b0 + off));
            acc = _mm256_add_ps(acc, _mm256_mul_ps(x, _mm256_set1_ps(w)));
        }
        store(yc, p, acc);
        v += 1;
    }
}

/// The sums of `N` consecutive output vectors of one row from the bias `vb`: vector `i`
/// reads `p + off + 8i` at tap `(off, w)`, taps in order, one multiply then one add each
/// (the reference's chain per lane), the vectors' chains interleaved.
///
/// # Safety
/// AVX2 must be present, and the `8·N` floats at `p + off` must be readable for every tap
/// (`pad_of` sizes the buffer so).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn row_chains<const N: usize>(
    p: *const f32,
    taps: &[(usize, f32)],
    vb: __m256,
) -> [__m256; N] {
    let mut acc = [vb; N];
    for &(off, w) in taps {
        let wv = _mm256_set1_ps(w);
        let q = p.wrapping_add(off);
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: in bounds (the caller's guarantee).
            let x = unsafe { _mm256_loadu_ps(q.add(8 * i)) };
            *a = _mm256_add_ps(*a, _mm256_mul_ps(x, wv));
        }
    }
    acc
}

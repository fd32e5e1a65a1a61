//! f32 MaxPool and mean pooling (GlobalAveragePool, ReduceMean over trailing axes),
//! bit-exact with `pool.rs`:
//! - MaxPool in two passes (row maxima over the window's columns, then over its rows) where
//!   the plane's row maxima fit a stack buffer, else an output row at a time: each output
//!   starts at −∞ and takes the in-bounds taps with the reference's comparison (`v > m`),
//!   over a run of output columns at once (loops the compiler vectorizes, compiled with
//!   AVX2 where present);
//! - means of contiguous runs eight outputs at a time: each output's sum is the
//!   reference's, element by element in order (eight independent chains instead of one),
//!   then divided by the count.

use cairn_core::{ExecError, OpCall, OpKind, TensorMut};

use crate::pool::{win, Win};

/// Output columns per MaxPool run (a 2 KB stack row).
const RUN: usize = 512;
/// Floats of row maxima the two-pass MaxPool holds (a 64 KB stack buffer).
const ROWS_MAX: usize = 16384;
/// Columns of the dense row maxima of a strided two-pass MaxPool (a 4 KB stack row).
const DENSE: usize = 1024;
/// Means computed side by side.
const LANES: usize = 8;
/// The most window rows the column-phase MaxPool takes.
#[cfg(target_arch = "x86_64")]
const PHASE_ROWS: usize = 16;

/// f32 MaxPool, or `None`.
pub fn max_pool_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let xt = call.req(0).ok()?;
    let (n, c, h, w) = xt.info.shape.nchw()?;
    let (_, _, oh, ow) = out.info.shape.nchw()?;
    let x = xt.f32s().ok()?;
    let g = win(call);
    let planes = n * c;
    if g.sw == 0 || g.sh == 0 || x.len() < planes * h * w || out.data.len() < 4 * planes * oh * ow {
        return None;
    }
    let y = match out.f32s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    // Windows as wide as their stride (2 or 4: 2×2/2 in VGG-style and audio CNNs, 1×4/4
    // over a spectrum's bins) whose columns all lie inside the plane: every row's taps
    // split into column phases, eight outputs a step; rows above or below the plane are
    // skipped as the reference skips them.
    #[cfg(target_arch = "x86_64")]
    if g.kw == g.sw
        && matches!(g.sw, 2 | 4)
        && g.dw == 1
        && g.pl == 0
        && ow * g.sw <= w
        && g.kh <= PHASE_ROWS
        && crate::paths::avx2()
    {
        // SAFETY (every call below): AVX2 is present (checked above); each row holds
        // sw·y.len() floats.
        let run = |rows: &[&[f32]], y: &mut [f32]| unsafe {
            if g.sw == 2 {
                pool_phases_row::<2>(rows, y)
            } else {
                pool_phases_row::<4>(rows, y)
            }
        };
        // One-row windows over rows exactly `sw` times the output (a 1×4/4 pool over 16
        // bins): the whole tensor is one row.
        if (g.kh, g.sh, g.pt, ow * g.sw, oh) == (1, 1, 0, w, h) {
            run(&[&x[..planes * h * w]], &mut y[..planes * oh * ow]);
        } else {
            for (xp, yp) in x
                .chunks_exact(h * w)
                .zip(y.chunks_exact_mut(oh * ow))
                .take(planes)
            {
                for (oy, yr) in yp.chunks_exact_mut(ow).enumerate() {
                    let row_at = |ky: usize| {
                        let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                        (iy >= 0 && (iy as usize) < h).then(|| &xp[iy as usize * w..][..ow * g.sw])
                    };
                    // One or two rows (the common windows) as fixed lists, without filling
                    // the whole list: small planes have many short rows. No row inside
                    // leaves the outputs at −∞.
                    if g.kh <= 2 {
                        match (row_at(0), if g.kh == 2 { row_at(1) } else { None }) {
                            (Some(a), Some(b)) => run(&[a, b], yr),
                            (Some(a), None) | (None, Some(a)) => run(&[a], yr),
                            (None, None) => run(&[], yr),
                        }
                        continue;
                    }
                    let mut rows: [&[f32]; PHASE_ROWS] = [&[]; PHASE_ROWS];
                    let mut nr = 0;
                    for r in (0..g.kh).filter_map(row_at) {
                        rows[nr] = r;
                        nr += 1;
                    }
                    run(&rows[..nr], yr);
                }
            }
        }
        crate::paths::note(crate::paths::Path::MaxPoolPhasesF32);
        super::dispatch::taken();
        return Some(Ok(()));
    }
    // Windows three columns wide at stride two (3×3/2, the pool of ResNet stems and
    // MTCNN), any left pad: eight outputs a step from even and odd column phases.
    #[cfg(target_arch = "x86_64")]
    if g.kw == 3 && g.sw == 2 && g.dw == 1 && g.kh <= PHASE_ROWS && crate::paths::avx2() {
        let pl = g.pl.max(0) as usize;
        for (xp, yp) in x
            .chunks_exact(h * w)
            .zip(y.chunks_exact_mut(oh * ow))
            .take(planes)
        {
            for (oy, yr) in yp.chunks_exact_mut(ow).enumerate() {
                let mut rows: [&[f32]; PHASE_ROWS] = [&[]; PHASE_ROWS];
                let nr = g.rows_of(xp, (h, w), oy, &mut rows);
                // SAFETY: AVX2 is present (checked above); every row holds w floats.
                unsafe { pool_3s2_row(&rows[..nr], pl, yr) };
            }
        }
        crate::paths::note(crate::paths::Path::MaxPool3s2F32);
        super::dispatch::taken();
        return Some(Ok(()));
    }
    if h * ow <= ROWS_MAX && ow <= RUN && g.kh > 1 {
        crate::fast::vectorized(
            #[inline(always)]
            || separable(&g, (h, w, oh, ow), &x[..planes * h * w], y),
        );
        super::dispatch::taken();
        return Some(Ok(()));
    }
    crate::fast::vectorized(
        #[inline(always)]
        || {
            let mut acc = [f32::NEG_INFINITY; RUN];
            for p in 0..planes {
                let xp = &x[p * h * w..(p + 1) * h * w];
                let yp = &mut y[p * oh * ow..(p + 1) * oh * ow];
                for oy in 0..oh {
                    let mut x0 = 0;
                    while x0 < ow {
                        let len = RUN.min(ow - x0);
                        let acc = &mut acc[..len];
                        acc.fill(f32::NEG_INFINITY);
                        for ky in 0..g.kh {
                            let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let row = &xp[iy as usize * w..(iy as usize + 1) * w];
                            for kx in 0..g.kw {
                                // ix = (x0 + s)·sw − pl + kx·dw for output x0 + s.
                                let off = (x0 * g.sw + kx * g.dw) as isize - g.pl;
                                let (lo, hi) = crate::util::inside(off, g.sw, w, len);
                                if hi <= lo {
                                    continue;
                                }
                                let a = (lo as isize * g.sw as isize + off) as usize;
                                let dst = &mut acc[lo..hi];
                                if g.sw == 1 {
                                    take_all(dst, &row[a..a + hi - lo]);
                                } else {
                                    for (m, &v) in dst.iter_mut().zip(row[a..].iter().step_by(g.sw))
                                    {
                                        take(m, v);
                                    }
                                }
                            }
                        }
                        yp[oy * ow + x0..oy * ow + x0 + len].copy_from_slice(acc);
                        x0 += len;
                    }
                }
            }
        },
    );
    super::dispatch::taken();
    Some(Ok(()))
}

/// One output row of a MaxPool whose windows are `S` columns wide at stride `S` (2 or 4),
/// from the window's input rows in order (`S·y.len()` floats each): each output takes its
/// taps in the reference's order, row by row and left to right within a row, from −∞,
/// each as `vmaxps(v, m)` (`v > m ? v : m`, as `take`). Eight outputs' `S·8` columns are
/// split into `S` phase vectors (`vshufps` for 2; two rounds of `vunpcklps`/`vunpckhps`
/// for 4), whose lanes hold the eight outputs in a fixed shuffled order, and the maximum
/// is put back in column order once.
///
/// # Safety
/// AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pool_phases_row<const S: usize>(rows: &[&[f32]], y: &mut [f32]) {
    // One and two rows (1×S and 2×2 windows) as fixed-length lists, so the row loop unrolls.
    // SAFETY: AVX2, as this function's caller guarantees.
    unsafe {
        match rows {
            [a] => phases_body::<S>(&[a], y),
            [a, b] => phases_body::<S>(&[a, b], y),
            _ => phases_body::<S>(rows, y),
        }
    }
}

/// One output row of a MaxPool whose windows are three columns wide at stride two, from
/// the window's in-bounds input rows in order (whole rows, all of one length): output
/// `ox` takes columns `2·ox − pl + {0, 1, 2}` of each row, in the reference's order (row
/// by row, left to right, from −∞, each as `vmaxps(v, m)`, which is `take`), columns
/// outside the row skipped as the reference skips them. Eight outputs a step: the even
/// columns of sixteen from `2·ox − pl`, the odd ones, and the even ones of sixteen from
/// two further on (`vshufps`), their lanes in one shuffled order that a `vpermpd` puts
/// back before the store. Outputs whose taps or loads would leave the row go one at a
/// time; the last full step may overlap the one before it (the same values again).
///
/// # Safety
/// AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pool_3s2_row(rows: &[&[f32]], pl: usize, y: &mut [f32]) {
    use core::arch::x86_64::*;
    let w = rows.iter().map(|r| r.len()).min().unwrap_or(0);
    let ow = y.len();
    let one = |ox: usize| {
        let mut m = f32::NEG_INFINITY;
        for r in rows {
            for kx in 0..3 {
                let c = (2 * ox + kx) as isize - pl as isize;
                if c >= 0 && (c as usize) < w {
                    take(&mut m, r[c as usize]);
                }
            }
        }
        m
    };
    // Vector steps start at outputs whose first tap is in the row and whose loads (18
    // floats from 2·ox − pl) end inside it.
    let first = pl.div_ceil(2);
    let last = if w + pl >= 18 { (w + pl - 18) / 2 } else { 0 };
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut done = 0;
    if w + pl >= 18 && first <= last && first + 8 <= ow {
        let end = last.min(ow - 8);
        let mut o = first;
        loop {
            let base = 2 * o - pl;
            let mut m = ninf;
            for r in rows {
                let p = r[base..base + 18].as_ptr();
                // SAFETY: the slice above holds 18 floats from p.
                let (lo, hi, lo2, hi2) = unsafe {
                    (
                        _mm256_loadu_ps(p),
                        _mm256_loadu_ps(p.add(8)),
                        _mm256_loadu_ps(p.add(2)),
                        _mm256_loadu_ps(p.add(10)),
                    )
                };
                // Lanes: outputs 0, 1, 4, 5 | 2, 3, 6, 7 of the step.
                m = _mm256_max_ps(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi), m);
                m = _mm256_max_ps(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi), m);
                m = _mm256_max_ps(_mm256_shuffle_ps::<0b10_00_10_00>(lo2, hi2), m);
            }
            let m = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(m)));
            // SAFETY: o + 8 <= ow = y.len().
            unsafe { _mm256_storeu_ps(y[o..o + 8].as_mut_ptr(), m) };
            if o == end {
                break;
            }
            o = (o + 8).min(end);
        }
        for (ox, v) in y.iter_mut().enumerate().take(first) {
            *v = one(ox);
        }
        done = end + 8;
    }
    for (ox, v) in y.iter_mut().enumerate().skip(done) {
        *v = one(ox);
    }
}

/// [`pool_phases_row`]'s loop, inlined into it once per row count.
///
/// # Safety
/// AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn phases_body<const S: usize>(rows: &[&[f32]], y: &mut [f32]) {
    use core::arch::x86_64::*;
    let n = rows.iter().fold(y.len(), |n, r| n.min(r.len() / S));
    let n8 = n / 8 * 8;
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    // The lane each output ends in: for S = 2 outputs 0,1,4,5 | 2,3,6,7, for S = 4
    // outputs 0,4,2,6 | 1,5,3,7; `back` gathers them in order.
    let back = if S == 2 {
        _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7)
    } else {
        _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7)
    };
    let mut o = 0;
    // Past the last full step, one more that ends at n and overlaps it (outputs computed
    // twice are the same values); fewer than eight outputs go one at a time.
    let last = if n >= 8 && n8 < n { n - 8 } else { usize::MAX };
    while o < n8 || o == last {
        let mut m = ninf;
        for r in rows {
            let p = r[S * o..S * o + 8 * S].as_ptr();
            if S == 2 {
                // SAFETY: the slice above holds 16 floats from p.
                let (lo, hi) = unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) };
                m = _mm256_max_ps(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi), m);
                m = _mm256_max_ps(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi), m);
            } else {
                // SAFETY: the slice above holds 32 floats from p.
                let (a, b, c, d) = unsafe {
                    (
                        _mm256_loadu_ps(p),
                        _mm256_loadu_ps(p.add(8)),
                        _mm256_loadu_ps(p.add(16)),
                        _mm256_loadu_ps(p.add(24)),
                    )
                };
                let (t0, t1) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
                let (t2, t3) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
                m = _mm256_max_ps(_mm256_unpacklo_ps(t0, t2), m);
                m = _mm256_max_ps(_mm256_unpackhi_ps(t0, t2), m);
                m = _mm256_max_ps(_mm256_unpacklo_ps(t1, t3), m);
                m = _mm256_max_ps(_mm256_unpackhi_ps(t1, t3), m);
            }
        }
        let m = _mm256_permutevar8x32_ps(m, back);
        // SAFETY: o + 8 <= n <= y.len().
        unsafe { _mm256_storeu_ps(y[o..o + 8].as_mut_ptr(), m) };
        o = if o == last {
            n
        } else if o + 8 >= n8 && last != usize::MAX {
            last
        } else {
            o + 8
        };
    }
    for (k, v) in y[..n].iter_mut().enumerate().skip(o) {
        let mut m = f32::NEG_INFINITY;
        for r in rows {
            for &t in &r[S * k..S * k + S] {
                take(&mut m, t);
            }
        }
        *v = m;
    }
}

/// The running maximum as the reference takes it: `v` replaces `m` only when greater (a
/// NaN never does; of equal values, ±0 included, the first stays).
#[inline(always)]
fn take(m: &mut f32, v: f32) {
    *m = if v > *m { v } else { *m };
}

/// `take(m[i], v[i])` for every `i` (equal lengths). With AVX, eight at a time as
/// `vmaxps(v, m)`, which is `v > m ? v : m` exactly (NaN and equal values included): the
/// compiler vectorizes `take`'s loop with only the taken stores, as masked stores
/// (`vmaskmovps`), which AMD cores run microcoded (O-Net's 3×3 MaxPools took 40% of its
/// f32 run that way).
#[inline(always)]
fn take_all(m: &mut [f32], v: &[f32]) {
    let n = m.len().min(v.len());
    let (m, v) = (&mut m[..n], &v[..n]);
    #[cfg(target_arch = "x86_64")]
    if crate::paths::avx2() {
        use core::arch::x86_64::{_mm256_loadu_ps, _mm256_max_ps, _mm256_storeu_ps};
        let n8 = n / 8 * 8;
        for (mc, vc) in m[..n8].chunks_exact_mut(8).zip(v[..n8].chunks_exact(8)) {
            // SAFETY: AVX is present (AVX2 checked above); each chunk holds 8 floats.
            unsafe {
                let cur = _mm256_loadu_ps(mc.as_ptr());
                let new = _mm256_loadu_ps(vc.as_ptr());
                _mm256_storeu_ps(mc.as_mut_ptr(), _mm256_max_ps(new, cur));
            }
        }
        for (m, &v) in m[n8..].iter_mut().zip(&v[n8..]) {
            take(m, v);
        }
        return;
    }
    for (m, &v) in m.iter_mut().zip(v) {
        take(m, v);
    }
}

/// `acc[s] = take(acc[s], row[s·sw + off])` for the outputs `s` whose column is inside the
/// row.
#[inline(always)]
fn take_run(acc: &mut [f32], row: &[f32], off: isize, sw: usize) {
    let (lo, hi) = crate::util::inside(off, sw, row.len(), acc.len());
    if hi <= lo {
        return;
    }
    let a = (lo as isize * sw as isize + off) as usize;
    if sw == 1 {
        take_all(&mut acc[lo..hi], &row[a..a + hi - lo]);
    } else {
        for (m, &v) in acc[lo..hi].iter_mut().zip(row[a..].iter().step_by(sw)) {
            take(m, v);
        }
    }
}

/// MaxPool in two passes per plane: each input row's maxima over the window's columns
/// (`hmax[iy][ox]`, taps left to right; for a strided window taken at every column and
/// then every `sw`-th), then each output's maximum over the window's rows
/// of those (top to bottom). The reference keeps the first of the greatest values in
/// row-major tap order; so do the two passes (the first greatest in the first row that
/// holds one), hence the same bits.
#[inline(always)]
fn separable(g: &Win, (h, w, oh, ow): (usize, usize, usize, usize), x: &[f32], y: &mut [f32]) {
    let mut hmax = [f32::NEG_INFINITY; ROWS_MAX];
    let mut dense = [f32::NEG_INFINITY; DENSE];
    // A strided window (a 3×3 / 2 pool) takes its row maxima at every column first, where
    // the taps are contiguous runs the compiler vectorizes, then every `sw`-th of them:
    // output `ox`'s taps are the dense maximum's at column `ox·sw`, in the same order.
    let span = ow.saturating_sub(1) * g.sw + 1;
    let dense_first = g.sw > 1 && span <= DENSE;
    for (xp, yp) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
        for (row, acc) in xp.chunks_exact(w).zip(hmax.chunks_exact_mut(ow)) {
            if dense_first {
                let d = &mut dense[..span];
                d.fill(f32::NEG_INFINITY);
                for kx in 0..g.kw {
                    take_run(d, row, (kx * g.dw) as isize - g.pl, 1);
                }
                for (a, &v) in acc.iter_mut().zip(d.iter().step_by(g.sw)) {
                    *a = v;
                }
                continue;
            }
            acc.fill(f32::NEG_INFINITY);
            for kx in 0..g.kw {
                take_run(acc, row, (kx * g.dw) as isize - g.pl, g.sw);
            }
        }
        for (oy, yr) in yp.chunks_exact_mut(ow).enumerate() {
            yr.fill(f32::NEG_INFINITY);
            for ky in 0..g.kh {
                let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                take_all(yr, &hmax[iy as usize * ow..(iy as usize + 1) * ow]);
            }
        }
    }
}

/// f32 GlobalAveragePool / ReduceMean whose reduced axes are the trailing ones, or `None`.
pub fn mean_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let xt = call.req(0).ok()?;
    let xs = xt.info.shape;
    let r = xs.rank();
    if r == 0 || r > 6 {
        return None;
    }
    let mask: u32 = if call.kind == OpKind::GlobalAveragePool {
        !0b11 & ((1 << r) - 1)
    } else {
        call.param(0) as u32
    };
    // The reduced axes must be exactly the last k (k ≥ 1).
    let k = mask.count_ones() as usize;
    if k == 0 || k > r || mask != ((1u32 << r) - 1) & !((1u32 << (r - k)) - 1) {
        return None;
    }
    let count = xs.prod(r - k, r);
    let outer = xs.prod(0, r - k);
    let x = xt.f32s().ok()?;
    if count == 0 || x.len() < outer * count || out.data.len() < 4 * outer {
        return None;
    }
    let y = match out.f32s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    let mut o = 0;
    while o < outer {
        let nl = LANES.min(outer - o);
        let mut s = [0f32; LANES];
        if nl == LANES {
            let runs: [&[f32]; LANES] =
                core::array::from_fn(|l| &x[(o + l) * count..(o + l + 1) * count]);
            for i in 0..count {
                for (sl, run) in s.iter_mut().zip(&runs) {
                    *sl += run[i];
                }
            }
        } else {
            for (l, sl) in s.iter_mut().enumerate().take(nl) {
                for &v in &x[(o + l) * count..(o + l + 1) * count] {
                    *sl += v;
                }
            }
        }
        for l in 0..nl {
            y[o + l] = s[l] / count as f32;
        }
        o += nl;
    }
    super::dispatch::taken();
    Some(Ok(()))
}

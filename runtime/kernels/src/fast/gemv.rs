//! int8 matrix × vector for ops with one or a few output pixels or rows (x86_64 AVX2):
//! a classifier's FullyConnected on one row, a conv after global pooling (1×1 map), a
//! streaming audio model's filter bank on four frames. The GEMM micro-kernels waste 15 of
//! their 16 columns there; this kernel streams each int8 weight row once.
//!
//! `y[o] = requantize(bias[o] + Σ_k (x[k] − zx)·w[o][k])`: the input is widened once with
//! its zero point subtracted (−255..255, exact in int16), the weights are widened 16 at a
//! time, and `vpmaddwd` sums pairs of products exactly; the integer sum is the
//! reference's (modulo 2^32, like its wrapping adds), and the output stage is
//! `cairn_core::quant::requantize` itself. On CPUs with VNNI (`paths::vnni`) the rows run
//! on `vpdpbusd` instead: the input as `u = x + 128` bytes, 32 products per instruction,
//! and `Σ(x − zx)·w = Σu·w − (zx + 128)·Σw` with `Σw` summed alongside (a second
//! `vpdpbusd` against ones), the same integer modulo 2^32.

use core::arch::x86_64::*;

use super::{Geo, Q};

/// Longest input vector (patch) this path takes.
pub(super) const MAX_K: usize = 8192;
/// Most output pixels (all images) a conv may have to take this path.
pub(super) const MAX_PIX: usize = 4;

/// Work units (`crate::par`'s: 25 int8 multiply-adds a nanosecond) a multiply-add of a
/// weight-streaming GEMV costs: each weight byte is read once, so it runs at memory
/// speed, 7–9 GMAC/s for MobileNetV2's 1792 × 1000 classifier (`cairn run --profile`).
pub(super) const GEMV_WORK: u64 = 3;

/// The scratch vectors below are `SMALL_K` long unless `k` needs more (`stack_buf!`).
const SMALL_K: usize = 512;

/// Whether a conv goes through the GEMV: one group, plain weights, a tiny output.
pub(super) fn conv_fits(g: &Geo, q: &Q<'_>) -> bool {
    g.g == 1
        && q.wp.is_none()
        && g.n * g.oh * g.ow <= MAX_PIX
        && g.c * g.kh * g.kw <= MAX_K
        && super::avx2::available()
}

/// The conv, one output pixel at a time: its patch (zero point where the window leaves
/// the image, which contributes nothing) against every weight row; the rows split across
/// the lent threads when there are enough of them.
pub(super) fn conv(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let k = g.c * g.kh * g.kw;
    let pix = g.oh * g.ow;
    stack_buf!(col: i16, k, SMALL_K, MAX_K);
    let out = crate::par::SharedMut::new(y);
    for n in 0..g.n {
        for p in 0..pix {
            patch(g, q, n, p, &mut col[..k]);
            let base = n * g.oc * pix + p;
            split_rows(&col[..k], q, g.oc, |o, vs| {
                for (j, &v) in vs.iter().enumerate() {
                    // SAFETY: each output row o + j is one part's (split_rows).
                    let at = unsafe { out.piece(base + (o + j) * pix, 1) };
                    at[0] = v;
                }
            });
        }
    }
}

/// `rows` over all `n` weight rows, in parts of whole blocks of eight rows on the lent
/// threads (each row's sum is computed as on one thread). `put(o, ys)` takes the outputs
/// of rows `o..o + ys.len()`.
fn split_rows(xw: &[i16], q: &Q<'_>, n: usize, put: impl Fn(usize, &[i8]) + Sync) {
    let work = (n * xw.len()) as u64 * GEMV_WORK;
    // Only where a pack cache keeps these weights (a `HostModel` run, weights in the
    // model's bytes): packing on every call would cost as much as the product.
    #[cfg(feature = "std")]
    if crate::prepack::keeps(q.w.as_ptr() as usize) {
        let k = xw.len();
        panel_dots(xw, q.zx + 128, q.w, n, work, |o, d| {
            let block = Block::new(xw, q, k, n);
            // SAFETY: AVX2 (the callers checked).
            unsafe { emit8(&block, o, d, &put) };
        });
        return;
    }
    let vnni = crate::paths::vnni();
    if vnni.is_some() {
        crate::paths::note(crate::paths::Path::GemvVnni);
    }
    crate::par::par_ranges(n, 8, work, |os| {
        // SAFETY: AVX2 (the callers checked), VNNI where `vnni` says so; the weights hold
        // n rows of xw.len().
        unsafe {
            match vnni {
                Some(crate::paths::Vnni::Evex) => rows_vnni::<false>(xw, q, os, &put),
                Some(crate::paths::Vnni::Vex) => rows_vnni::<true>(xw, q, os, &put),
                None => rows(xw, q, os, &put),
            }
        }
    });
}

/// Whether the rows run on 512-bit `vpdpbusd` (`rows_vnni512`): the CPU has AVX-512 F,
/// BW and VNNI, and the AVX-512 kernels are allowed (`paths::avx512_f32`, which
/// `CAIRN_AVX512=0` or `paths::allow_avx512(false)` turn off, so one host tests both).
#[cfg(feature = "std")]
fn avx512_rows() -> bool {
    crate::paths::avx512_f32() && std::is_x86_feature_detected!("avx512bw")
}

/// The exact sums `Σ_t xw[t]·w[j][t]` (modulo 2^32) of the `n` weight rows of `w`
/// (`[n, xw.len()]`) with one input vector `xw` (zero point subtracted, so that `xw + zs`
/// is a byte 0..=255), over the weights packed in panels (`pack_panels`, kept by the pack
/// cache: callers check `prepack::keeps`), in parts of whole blocks of eight rows on the
/// lent threads: `sink(o, d)` takes the sums of rows `o..o + 8` as the lanes of `d`
/// (lanes past `n` zero). `work` is the op's cost in `par`'s units. The int8 GEMV and
/// FullyConnected.f32-w8's one-row path (`gemv_w8`) share it.
///
/// The caller checked AVX2 and `xw.len() <= MAX_K`.
#[cfg(feature = "std")]
pub(super) fn panel_dots(
    xw: &[i16],
    zs: i32,
    w: &[i8],
    n: usize,
    work: u64,
    sink: impl Fn(usize, __m256i) + Sync,
) {
    use crate::paths::Vnni;
    let vnni = crate::paths::vnni();
    if vnni.is_some() {
        crate::paths::note(crate::paths::Path::GemvVnni);
    }
    // Panels of 64-byte steps for AVX-512, 32 for 256-bit VNNI, 16 weights (widened to
    // int16) for vpmaddwd.
    let wide = vnni == Some(Vnni::Evex) && avx512_rows();
    let step = match vnni {
        _ if wide => 64,
        Some(_) => 32,
        None => 16,
    };
    if wide {
        crate::paths::note(crate::paths::Path::GemvAvx512);
    }
    crate::paths::note(crate::paths::Path::GemvPanels);
    let k = xw.len();
    let key = (w.as_ptr() as usize, n * k, 0x7000_0000 | step as u32);
    let mut scratch = Vec::new();
    crate::prepack::with_packed(
        key,
        &mut scratch,
        |v| pack_panels(w, n, k, step, v),
        |p| {
            crate::par::par_ranges(n, 8, work, |os| {
                // SAFETY: AVX2 (the callers checked); AVX-512 F/BW/VNNI where `wide`
                // (`avx512_rows`), VNNI where `vnni` says so; `p` is `pack_panels` of
                // the n rows of k with this step.
                unsafe {
                    match vnni {
                        _ if wide => rows_vnni512(xw, zs, (p, n), os, &sink),
                        Some(Vnni::Evex) => rows_panel_vnni::<false>(xw, zs, (p, n), os, &sink),
                        Some(Vnni::Vex) => rows_panel_vnni::<true>(xw, zs, (p, n), os, &sink),
                        None => rows_panel_madd(xw, (p, n), os, &sink),
                    }
                }
            });
        },
    );
}

/// The weights of `n` rows of `k` for the panel rows (`rows_vnni512`, `rows_panel_vnni`,
/// `rows_panel_madd`): `Σw` of each row (`n` rounded up to 8, zero past `n`), then each
/// block of eight rows as one sequential panel: for each `step`-column step, the eight
/// rows' `step` bytes in turn (zero past `k` and past `n`). One stream of weights instead
/// of eight strided ones: the step GEMVs of a recurrent layer read theirs from L2 on every
/// call.
#[cfg(feature = "std")]
fn pack_panels(w: &[i8], n: usize, k: usize, step: usize, v: &mut Vec<i32>) {
    let (n8, steps) = (n.div_ceil(8) * 8, k.div_ceil(step));
    v.clear();
    v.resize(n8 + n8 * steps * step / 4, 0);
    let (wsum, panel) = v.split_at_mut(n8);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(panel);
    for (r, row) in w.chunks_exact(k).take(n).enumerate() {
        wsum[r] = row.iter().map(|&x| x as i32).sum();
        for (s, part) in row.chunks(step).enumerate() {
            let at = (((r / 8) * steps + s) * 8 + r % 8) * step;
            for (d, &x) in bytes[at..at + part.len()].iter_mut().zip(part) {
                *d = x as u8;
            }
        }
    }
}

/// [`rows_vnni`] at 512 bits: 64 products per `vpdpbusd`, eight rows a pass over their
/// panel of `packed` (`pack_panels`: the bytes past `k` are zero and add nothing), `Σw` of
/// each row read from there (summed once per weights through `prepack`) instead of
/// summed alongside. The eight sums reduce to one vector and take `Block`'s output
/// stage. The same integer as the reference, modulo 2^32.
///
/// # Safety
/// AVX2, AVX-512 F, BW and VNNI; `packed` is `pack_panels` (step 64) of all `n_all` rows
/// of `xw.len()`
/// (`os` a part of them, starting on a multiple of 8).
#[cfg(feature = "std")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
unsafe fn rows_vnni512(
    xw: &[i16],
    zs: i32,
    (packed, n_all): (&[i32], usize),
    os: core::ops::Range<usize>,
    sink: &impl Fn(usize, __m256i),
) {
    let k = xw.len();
    let Some((_, wsum, panel, steps)) = panel_parts(k, (packed, n_all), &os, 64) else {
        return;
    };
    stack_buf!(u: u8, steps * 64, SMALL_K, MAX_K);
    biased_bytes(u, xw, zs);
    let zsv = _mm256_set1_epi32(zs);
    for o in os.step_by(8) {
        // This block's panel: steps × 8 vectors of 64 bytes (16 words each).
        let p = &panel[(o / 8) * steps * 128..(o / 8 + 1) * steps * 128];
        let mut acc = [_mm512_setzero_si512(); 8];
        for s in 0..steps {
            // SAFETY: 64 bytes of `u` (steps · 64 long) and eight vectors of this block's
            // panel at step s; AVX-512 F/VNNI (the contract).
            unsafe {
                let uv = _mm512_loadu_si512(u.as_ptr().add(64 * s) as *const __m512i);
                let ws = p.as_ptr().add(s * 128) as *const __m512i;
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_dpbusd_epi32(*a, uv, _mm512_loadu_si512(ws.add(j)));
                }
            }
        }
        // SAFETY: wsum holds n8 ≥ o + 8 sums; AVX2 (the contract).
        let d = unsafe {
            let wsv = _mm256_loadu_si256(wsum[o..o + 8].as_ptr() as *const __m256i);
            // Σ(x − zx)·w = Σu·w − (zx + 128)·Σw, lane by lane (modulo 2^32).
            _mm256_sub_epi32(reduce8(acc), _mm256_mullo_epi32(zsv, wsv))
        };
        sink(o, d);
    }
}

/// The parts of `pack_panels` (`step`-byte steps) of `n_all` rows of `k` that the rows
/// `os` (a part starting on a multiple of 8) read: their end row, the rows' sums, the
/// panels and the steps a row takes. `None` where the buffer does not match (a bug: the
/// caller packed it).
#[cfg(feature = "std")]
#[allow(clippy::type_complexity)]
fn panel_parts<'p>(
    k: usize,
    (packed, n_all): (&'p [i32], usize),
    os: &core::ops::Range<usize>,
    step: usize,
) -> Option<(usize, &'p [i32], &'p [i32], usize)> {
    // The layout is the whole op's; this part's rows end at `n`.
    let (n8, steps, n) = (n_all.div_ceil(8) * 8, k.div_ceil(step), os.end);
    if k == 0 || n == 0 || n > n_all || packed.len() < n8 + n8 * steps * step / 4 {
        return None;
    }
    let (wsum, panel) = packed.split_at(n8);
    Some((n, wsum, panel, steps))
}

/// `u = xw + zs` as bytes (the raw input plus 128), element by element; the rest of `u`
/// (past `xw`, zero like the panels there) untouched.
#[cfg(feature = "std")]
fn biased_bytes(u: &mut [u8], xw: &[i16], zs: i32) {
    for (d, &v) in u.iter_mut().zip(xw) {
        *d = (v as i32 + zs) as u8;
    }
}

/// Rows `o..o + 8`'s outputs (clipped to the block's end) from their sums `d` (vector
/// part and zero-point term done): bias, then the reference's requantization, eight rows
/// in one vector when all exist, else `Block::scalar`.
///
/// # Safety
/// AVX2.
#[cfg(feature = "std")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn emit8(block: &Block<'_, '_>, o: usize, d: __m256i, put: &impl Fn(usize, &[i8])) {
    let q = block.q;
    if o + 8 > block.n {
        block.scalar(o, d, put);
        return;
    }
    let mut ys = [0i8; 8];
    // SAFETY: rows o..o + 8 exist, so do their bias and multipliers; AVX2.
    unsafe {
        let acc = match q.bias {
            Some(b) => _mm256_add_epi32(
                d,
                _mm256_loadu_si256(b[o..o + 8].as_ptr() as *const __m256i),
            ),
            None => d,
        };
        let vs = super::avx2::Scale::lanes(q, o);
        super::avx2::Requant::of(q).store_q(acc, vs, &mut ys);
    }
    put(o, &ys);
}

/// [`rows_vnni512`] at 256 bits (CPUs with AVX-VNNI, or AVX-512 VNNI where the 512-bit
/// kernels are off): 32 products per `vpdpbusd` over panels of 32-byte steps.
///
/// # Safety
/// AVX2 and the VNNI encoding `VEX` names; `packed` is `pack_panels` (step 32) of all
/// `n_all` rows of `xw.len()` (`os` a part of them, starting on a multiple of 8).
#[cfg(feature = "std")]
#[target_feature(enable = "avx2")]
unsafe fn rows_panel_vnni<const VEX: bool>(
    xw: &[i16],
    zs: i32,
    (packed, n_all): (&[i32], usize),
    os: core::ops::Range<usize>,
    sink: &impl Fn(usize, __m256i),
) {
    let k = xw.len();
    let Some((_, wsum, panel, steps)) = panel_parts(k, (packed, n_all), &os, 32) else {
        return;
    };
    stack_buf!(u: u8, steps * 32, SMALL_K, MAX_K);
    biased_bytes(u, xw, zs);
    let zsv = _mm256_set1_epi32(zs);
    for o in os.step_by(8) {
        let p = &panel[(o / 8) * steps * 64..(o / 8 + 1) * steps * 64];
        let mut acc = [_mm256_setzero_si256(); 8];
        for s in 0..steps {
            // SAFETY: 32 bytes of `u` (steps · 32 long) and eight vectors of this block's
            // panel at step s; VNNI (the contract).
            unsafe {
                let uv = _mm256_loadu_si256(u.as_ptr().add(32 * s) as *const __m256i);
                let ws = p.as_ptr().add(s * 64) as *const __m256i;
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = dpbusd::<VEX>(*a, uv, _mm256_loadu_si256(ws.add(j)));
                }
            }
        }
        // SAFETY: wsum holds n8 ≥ o + 8 sums; AVX2 (the contract).
        let d = unsafe {
            let sums = _mm256_set_m128i(
                sum4([acc[4], acc[5], acc[6], acc[7]]),
                sum4([acc[0], acc[1], acc[2], acc[3]]),
            );
            let wsv = _mm256_loadu_si256(wsum[o..o + 8].as_ptr() as *const __m256i);
            _mm256_sub_epi32(sums, _mm256_mullo_epi32(zsv, wsv))
        };
        sink(o, d);
    }
}

/// The panel rows on `vpmaddwd` (AVX2 without VNNI): the input widened once (`xw`, zero
/// point subtracted, zero past `k`), each 16-weight step widened to int16 and summed in
/// pairs, exactly, eight rows a pass.
///
/// # Safety
/// AVX2; `packed` is `pack_panels` (step 16) of all `n_all` rows of `xw.len()` (`os` a
/// part of them, starting on a multiple of 8).
#[cfg(feature = "std")]
#[target_feature(enable = "avx2")]
unsafe fn rows_panel_madd(
    xw: &[i16],
    (packed, n_all): (&[i32], usize),
    os: core::ops::Range<usize>,
    sink: &impl Fn(usize, __m256i),
) {
    let k = xw.len();
    let Some((_, _, panel, steps)) = panel_parts(k, (packed, n_all), &os, 16) else {
        return;
    };
    stack_buf!(x: i16, steps * 16, SMALL_K, MAX_K);
    x[..k].copy_from_slice(xw);
    for o in os.step_by(8) {
        let p = &panel[(o / 8) * steps * 32..(o / 8 + 1) * steps * 32];
        let mut acc = [_mm256_setzero_si256(); 8];
        for s in 0..steps {
            // SAFETY: 16 int16 of `x` (steps · 16 long) and eight 16-byte rows of this
            // block's panel at step s; AVX2 (the contract).
            unsafe {
                let xv = _mm256_loadu_si256(x.as_ptr().add(16 * s) as *const __m256i);
                let ws = p.as_ptr().add(s * 32) as *const __m128i;
                for (j, a) in acc.iter_mut().enumerate() {
                    let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(ws.add(j)));
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wv));
                }
            }
        }
        // SAFETY: AVX2 (the contract).
        unsafe {
            let d = _mm256_set_m128i(
                sum4([acc[4], acc[5], acc[6], acc[7]]),
                sum4([acc[0], acc[1], acc[2], acc[3]]),
            );
            sink(o, d);
        }
    }
}

/// The eight int32 totals of eight 16-lane vectors, lane `j` the sum of `a[j]` (adds
/// modulo 2^32, in any order).
///
/// # Safety
/// AVX-512 F.
#[cfg(feature = "std")]
#[target_feature(enable = "avx2,avx512f")]
#[inline]
unsafe fn reduce8(a: [__m512i; 8]) -> __m256i {
    // Pairs interleaved: each 128-bit lane of p01 holds (a0 + a0', a1 + a1', ...).
    let pair = |x: __m512i, y: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y))
    };
    let (p01, p23, p45, p67) = (
        pair(a[0], a[1]),
        pair(a[2], a[3]),
        pair(a[4], a[5]),
        pair(a[6], a[7]),
    );
    // Each 128-bit lane of q0 holds partial sums of rows 0..4, of q1 rows 4..8.
    let quad = |x: __m512i, y: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y))
    };
    let (q0, q1) = (quad(p01, p23), quad(p45, p67));
    // Lanes (q0.0 + q0.1, q0.2 + q0.3, q1.0 + q1.1, q1.2 + q1.3), then the pairs added.
    let h = _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0b10_00_10_00>(q0, q1),
        _mm512_shuffle_i32x4::<0b11_01_11_01>(q0, q1),
    );
    let g = _mm512_shuffle_i32x4::<0b11_01_10_00>(h, h);
    _mm256_add_epi32(_mm512_castsi512_si256(g), _mm512_extracti64x4_epi64::<1>(g))
}

/// The patch of output pixel `p` of image `n` in (c, ky, kx) order, zero point subtracted
/// (0 where the window leaves the image, which then contributes nothing).
pub(super) fn patch(g: &Geo, q: &Q<'_>, n: usize, p: usize, dst: &mut [i16]) {
    let plane = g.h * g.w;
    let (oy, ox) = (p / g.ow, p % g.ow);
    for c in 0..g.c {
        let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
        for ky in 0..g.kh {
            let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
            let row = &mut dst[(c * g.kh + ky) * g.kw..(c * g.kh + ky + 1) * g.kw];
            if iy < 0 || iy >= g.h as isize {
                row.fill(0);
                continue;
            }
            let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
            for (kx, d) in row.iter_mut().enumerate() {
                let ix = (ox * g.sw) as isize - g.pl + (kx * g.dw) as isize;
                *d = if ix >= 0 && ix < g.w as isize {
                    (xr[ix as usize] as i32 - q.zx) as i16
                } else {
                    0
                };
            }
        }
    }
}

/// FullyConnected on `m` rows of `x` (`[m, k]`), weights `[n, k]`.
pub(super) fn fc(q: &Q<'_>, m: usize, n: usize, k: usize, y: &mut [i8]) {
    stack_buf!(col: i16, k, SMALL_K, MAX_K);
    let out = crate::par::SharedMut::new(y);
    for i in 0..m {
        for (d, &v) in col.iter_mut().zip(&q.x[i * k..(i + 1) * k]) {
            *d = (v as i32 - q.zx) as i16;
        }
        split_rows(&col[..k], q, n, |o, vs| {
            // SAFETY: output rows o..o + vs.len() are one part's (split_rows).
            unsafe { out.piece(i * n + o, vs.len()) }.copy_from_slice(vs);
        });
    }
}

/// The outputs `os` of one input vector `xw` (zero point subtracted), four rows a pass,
/// eight rows an output block (`Block`).
///
/// # Safety
/// AVX2; `q.w` holds `os.end` rows of `xw.len()`.
#[target_feature(enable = "avx2")]
unsafe fn rows(xw: &[i16], q: &Q<'_>, os: core::ops::Range<usize>, put: impl Fn(usize, &[i8])) {
    let k = xw.len();
    let k16 = k / 16 * 16;
    let mut block = Block::new(xw, q, k16, os.end);
    for o in os.step_by(4) {
        let w = block.rows4(o);
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut k0 = 0;
        while k0 < k16 {
            // SAFETY: k0 + 16 <= k: 16 int16 of xw, 16 bytes of each row.
            unsafe {
                let xv = _mm256_loadu_si256(xw.as_ptr().add(k0) as *const __m256i);
                for j in 0..4 {
                    let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(
                        w[j].as_ptr().add(k0) as *const __m128i
                    ));
                    acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(xv, wv));
                }
            }
            k0 += 16;
        }
        // SAFETY: AVX2 (this function's contract).
        unsafe { block.push(o, sum4(acc), &put) };
    }
}

/// The four rows' sums of four vectors of int32 partial sums, as one 128-bit vector
/// (`_mm256_hadd_epi32` adds modulo 2^32, like the reference's wrapping adds, in any
/// order).
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn sum4(a: [__m256i; 4]) -> __m128i {
    let s = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1))
}

/// The output stage of the row kernels: the sums of each pass of four rows are gathered
/// until eight consecutive rows are in, then the tail products past `from` (the vector
/// part's end), the bias and the reference's requantization are applied to the eight in
/// one vector (`avx2::Requant`, each lane with its own channel's multipliers) and the
/// eight bytes handed to `put` at once. A last block of fewer rows goes through the
/// scalar `finish`.
struct Block<'a, 'q> {
    xw: &'a [i16],
    q: &'a Q<'q>,
    from: usize,
    /// Rows of the whole op (`os.end` of the part): the last block may be short.
    n: usize,
    /// The first row of the pending block, and its first four sums.
    pending: Option<(usize, __m128i)>,
}

impl<'a, 'q> Block<'a, 'q> {
    fn new(xw: &'a [i16], q: &'a Q<'q>, from: usize, n: usize) -> Self {
        Block {
            xw,
            q,
            from,
            n,
            pending: None,
        }
    }

    /// The weight rows `o..o + 4` (rows past the end repeat the last one; their sums are
    /// dropped).
    fn rows4(&self, o: usize) -> [&'a [i8]; 4] {
        let k = self.xw.len();
        core::array::from_fn(|j| {
            let row = (o + j).min(self.n - 1);
            &self.q.w[row * k..(row + 1) * k]
        })
    }

    /// The vector sums of rows `o..o + 4` (clipped to the end).
    ///
    /// # Safety
    /// AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn push(&mut self, o: usize, s: __m128i, put: &impl Fn(usize, &[i8])) {
        let q = self.q;
        let mut ys = [0i8; 8];
        if let Some((o0, lo)) = self.pending.take() {
            let v = _mm256_set_m128i(s, lo);
            if o + 4 <= self.n {
                let mut lanes = [0i32; 8];
                // SAFETY: 8 int32 into an 8-element array.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v) };
                for (j, l) in lanes.iter_mut().enumerate() {
                    *l = self
                        .tail(*l, o0 + j)
                        .wrapping_add(q.bias.map_or(0, |b| b[o0 + j]));
                }
                // SAFETY: rows o0..o0 + 8 exist, so do their multipliers; AVX2.
                unsafe {
                    let acc = _mm256_loadu_si256(lanes.as_ptr() as *const __m256i);
                    let vs = super::avx2::Scale::lanes(q, o0);
                    super::avx2::Requant::of(q).store_q(acc, vs, &mut ys);
                }
                put(o0, &ys);
                return;
            }
            self.scalar(o0, v, put);
            return;
        }
        if o + 4 >= self.n {
            self.scalar(o, _mm256_castsi128_si256(s), put);
        } else {
            self.pending = Some((o, s));
        }
    }

    /// The rows from `o0` up to eight (clipped to the end) from their vector sums `v`, one
    /// at a time.
    fn scalar(&self, o0: usize, v: __m256i, put: &impl Fn(usize, &[i8])) {
        let mut lanes = [0i32; 8];
        // SAFETY: 8 int32 into an 8-element array (AVX, implied by the callers' AVX2).
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v) };
        let r = 8.min(self.n - o0);
        let mut ys = [0i8; 8];
        for (j, y) in ys[..r].iter_mut().enumerate() {
            let acc = self
                .tail(lanes[j], o0 + j)
                .wrapping_add(self.q.bias.map_or(0, |b| b[o0 + j]));
            *y = self.q.requant(o0 + j, acc) as i8;
        }
        put(o0, &ys[..r]);
    }

    /// Row `o`'s sum `s` of the vector part plus its products past `from`.
    #[inline(always)]
    fn tail(&self, s: i32, o: usize) -> i32 {
        let k = self.xw.len();
        let w = &self.q.w[o * k..(o + 1) * k];
        (self.from..k).fold(s, |s, t| s.wrapping_add(self.xw[t] as i32 * w[t] as i32))
    }
}

/// `acc + Σ` of the four products of u8 `u` and s8 `s` per int32 lane (`vpdpbusd`, EVEX
/// encoded, or VEX with `VEX`).
///
/// # Safety
/// AVX2 and the CPU has that encoding (`paths::vnni`).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn dpbusd<const VEX: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    let mut a = acc;
    // SAFETY: the contract above; register-only.
    unsafe {
        if VEX {
            core::arch::asm!("{{vex}} vpdpbusd {a}, {u}, {s}", a = inout(ymm_reg) a,
                u = in(ymm_reg) u, s = in(ymm_reg) s, options(pure, nomem, nostack, preserves_flags));
        } else {
            core::arch::asm!("vpdpbusd {a}, {u}, {s}", a = inout(ymm_reg) a,
                u = in(ymm_reg) u, s = in(ymm_reg) s, options(pure, nomem, nostack, preserves_flags));
        }
    }
    a
}

/// [`rows`] on VNNI: `u = xw + zx + 128` as bytes (the raw input plus 128), four rows at a
/// time, 32 products per `vpdpbusd`, `Σw` alongside; the tail (under 32) in scalar code on
/// `xw`.
///
/// # Safety
/// AVX2 and the VNNI encoding `VEX` names; `q.w` holds `os.end` rows of `xw.len()`.
#[target_feature(enable = "avx2")]
unsafe fn rows_vnni<const VEX: bool>(
    xw: &[i16],
    q: &Q<'_>,
    os: core::ops::Range<usize>,
    put: impl Fn(usize, &[i8]),
) {
    let k = xw.len();
    let k32 = k / 32 * 32;
    let zs = q.zx + 128;
    stack_buf!(u: u8, k, SMALL_K, MAX_K);
    for (d, &v) in u.iter_mut().zip(&xw[..k32]) {
        *d = (v as i32 + zs) as u8;
    }
    let ones = _mm256_set1_epi8(1);
    let zsv = _mm256_set1_epi32(zs);
    let mut block = Block::new(xw, q, k32, os.end);
    for o in os.step_by(4) {
        let w = block.rows4(o);
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut sw = [_mm256_setzero_si256(); 4];
        let mut k0 = 0;
        while k0 < k32 {
            // SAFETY: k0 + 32 <= k32: 32 bytes of u and of each row; VNNI (the contract).
            unsafe {
                let uv = _mm256_loadu_si256(u.as_ptr().add(k0) as *const __m256i);
                for j in 0..4 {
                    let wv = _mm256_loadu_si256(w[j].as_ptr().add(k0) as *const __m256i);
                    acc[j] = dpbusd::<VEX>(acc[j], uv, wv);
                    sw[j] = dpbusd::<VEX>(sw[j], ones, wv);
                }
            }
            k0 += 32;
        }
        // Σ(x − zx)·w = Σu·w − (zx + 128)·Σw, lane by lane (modulo 2^32).
        let d: [__m256i; 4] =
            core::array::from_fn(|j| _mm256_sub_epi32(acc[j], _mm256_mullo_epi32(zsv, sw[j])));
        // SAFETY: AVX2 (this function's contract).
        unsafe { block.push(o, sum4(d), &put) };
    }
}

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
const GEMV_WORK: u64 = 3;

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
    let mut col = [0i16; MAX_K];
    let out = crate::par::SharedMut::new(y);
    for n in 0..g.n {
        for p in 0..pix {
            patch(g, q, n, p, &mut col[..k]);
            let base = n * g.oc * pix + p;
            split_rows(&col[..k], q, g.oc, |o, v| {
                // SAFETY: each output row o is one part's (split_rows).
                let at = unsafe { out.piece(base + o * pix, 1) };
                at[0] = v;
            });
        }
    }
}

/// `rows` over all `n` weight rows, in parts of whole blocks of four rows on the lent
/// threads (each row's sum is computed as on one thread).
fn split_rows(xw: &[i16], q: &Q<'_>, n: usize, put: impl Fn(usize, i8) + Sync) {
    let work = (n * xw.len()) as u64 * GEMV_WORK;
    let vnni = crate::paths::vnni();
    if vnni.is_some() {
        crate::paths::note(crate::paths::Path::GemvVnni);
    }
    crate::par::par_ranges(n, 4, work, |os| {
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
    let mut col = [0i16; MAX_K];
    let out = crate::par::SharedMut::new(y);
    for i in 0..m {
        for (d, &v) in col.iter_mut().zip(&q.x[i * k..(i + 1) * k]) {
            *d = (v as i32 - q.zx) as i16;
        }
        split_rows(&col[..k], q, n, |o, v| {
            // SAFETY: each output row o is one part's (split_rows).
            let at = unsafe { out.piece(i * n + o, 1) };
            at[0] = v;
        });
    }
}

/// The outputs `os` of one input vector `xw` (zero point subtracted), four rows at a time.
///
/// # Safety
/// AVX2; `q.w` holds `os.end` rows of `xw.len()`.
#[target_feature(enable = "avx2")]
unsafe fn rows(xw: &[i16], q: &Q<'_>, os: core::ops::Range<usize>, put: impl Fn(usize, i8)) {
    let k = xw.len();
    let k16 = k / 16 * 16;
    let n = os.end;
    let mut o = os.start;
    while o < n {
        let r = 4.min(n - o);
        let w: [&[i8]; 4] = core::array::from_fn(|j| {
            let row = (o + j).min(n - 1);
            &q.w[row * k..(row + 1) * k]
        });
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
        for (j, a) in acc.iter().enumerate().take(r) {
            let mut lanes = [0i32; 8];
            // SAFETY: 8 int32 into an 8-element array.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, *a) };
            let s = lanes.iter().fold(0i32, |s, &v| s.wrapping_add(v));
            put(o + j, finish(s, xw, w[j], k16, q, o + j));
        }
        o += r;
    }
}

/// Output `o` from the vector part `s` of its sum (elements below `from`): the tail
/// products, the bias and the reference's requantization.
#[inline(always)]
fn finish(s: i32, xw: &[i16], w: &[i8], from: usize, q: &Q<'_>, o: usize) -> i8 {
    let s = (from..xw.len()).fold(s, |s, t| s.wrapping_add(xw[t] as i32 * w[t] as i32));
    let acc = s.wrapping_add(q.bias.map_or(0, |b| b[o]));
    q.requant(o, acc) as i8
}

/// `acc + Σ` of the four products of u8 `u` and s8 `s` per int32 lane (`vpdpbusd`, EVEX
/// encoded, or VEX with `VEX`).
///
/// # Safety
/// AVX2 and the CPU has that encoding (`paths::vnni`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dpbusd<const VEX: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
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
    put: impl Fn(usize, i8),
) {
    let k = xw.len();
    let k32 = k / 32 * 32;
    let zs = q.zx + 128;
    let mut u = [0u8; MAX_K];
    for (d, &v) in u.iter_mut().zip(&xw[..k32]) {
        *d = (v as i32 + zs) as u8;
    }
    let ones = _mm256_set1_epi8(1);
    let n = os.end;
    let mut o = os.start;
    while o < n {
        let r = 4.min(n - o);
        let w: [&[i8]; 4] = core::array::from_fn(|j| {
            let row = (o + j).min(n - 1);
            &q.w[row * k..(row + 1) * k]
        });
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
        for j in 0..r {
            let mut lanes = [[0i32; 8]; 2];
            // SAFETY: 8 int32 into each 8-element array.
            unsafe {
                _mm256_storeu_si256(lanes[0].as_mut_ptr() as *mut __m256i, acc[j]);
                _mm256_storeu_si256(lanes[1].as_mut_ptr() as *mut __m256i, sw[j]);
            }
            let sum = |l: &[i32; 8]| l.iter().fold(0i32, |s, &v| s.wrapping_add(v));
            let s = sum(&lanes[0]).wrapping_sub(zs.wrapping_mul(sum(&lanes[1])));
            put(o + j, finish(s, xw, w[j], k32, q, o + j));
        }
        o += r;
    }
}

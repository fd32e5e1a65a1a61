//! A strided f32 GEMM `C[i, j] = start + Σ_c A[i, c] · B[c, j]` (then an optional clamp),
//! the engine of the ConvTranspose, large-patch Conv, MatMul and FullyConnected paths.
//!
//! `A` is read through two strides (`A[i, c] = a[i · rs + c · cs]`), so transposed weights
//! (ConvTranspose's `[ic][oc·kh·kw]`) and activations (MatMul's left operand) are read in
//! place; `B`'s rows are contiguous (`B[c, j] = b[c · bs + j]`); `C`'s rows are strided. The
//! register block is the one of `avx2.rs`: 6 rows × 16 columns in 12 AVX accumulators, one
//! broadcast of `A` and one `vfmadd` per column vector, with the columns walked in chunks of
//! `CHUNK` so a chunk of `B` stays in cache across the row blocks; on AVX-512F, the 12 × 32
//! block of `avx512.rs` (`strided_gemm`, the same bits). Elsewhere (no AVX2+FMA,
//! aarch64) the same blocking in loops the compiler vectorizes.
//!
//! Accumulators start at zero, at a per-row bias, or at `C` itself (`Start::Load`: a
//! product split along `c` into several calls); the clamp is `max` then `min`, as the
//! reference's.

use super::{CHUNK, PT};

/// The left operand: `A[i, c] = a[i · rs + c · cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Lhs<'a> {
    pub a: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// The right operand: `B[c, j] = b[c · bs + j]`.
#[derive(Clone, Copy)]
pub(crate) struct Rhs<'a> {
    pub b: &'a [f32],
    pub bs: usize,
}

/// The result: `C[i, j] = c[i · rs + c0 + j]`.
pub(crate) struct Dst<'a> {
    pub c: &'a mut [f32],
    pub rs: usize,
    pub c0: usize,
}

/// What the accumulators start from.
#[derive(Clone, Copy)]
pub(crate) enum Start<'a> {
    Zero,
    /// `bias[i]` for row `i`.
    RowBias(&'a [f32]),
    /// The values already in `C` (a later part of a sum split along `c`).
    Load,
}

/// `m × k` times `k × n`, with its start and optional clamp `(lo, hi)`.
#[derive(Clone, Copy)]
pub(crate) struct Dims<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub start: Start<'a>,
    pub clamp: Option<(f32, f32)>,
}

/// Rows per register block.
const MR: usize = 6;

/// `C = start + A · B`, clamped when asked. Panics (never reads out of bounds) when a
/// slice is too short for the strides and sizes.
pub(crate) fn gemm(a: Lhs<'_>, b: Rhs<'_>, c: &mut Dst<'_>, d: Dims<'_>) {
    if d.m == 0 || d.n == 0 {
        return;
    }
    // Every index the loops form is below these bounds (checked once, here).
    assert!(d.k == 0 || (d.m - 1) * a.rs + (d.k - 1) * a.cs < a.a.len());
    check_rest(&b, c, &d);
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        // SAFETY: AVX-512F is present (checked above); the asserts above are
        // `strided_gemm`'s bounds requirements.
        unsafe { super::avx512::strided_gemm(a, b, c, d) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: AVX2 and FMA are present (checked above); the asserts above are
        // `avx2_gemm`'s bounds requirements.
        unsafe { avx2_gemm(a, b, c, d) };
        return;
    }
    crate::fast::vectorized(
        #[inline(always)]
        || portable_gemm(a, b, c, d),
    );
}

/// The bounds of `B`, `C` and the bias for a product of `d.m × d.n` (`d.m`, `d.n` > 0):
/// every index the kernels form from them is inside. Panics otherwise.
pub(super) fn check_rest(b: &Rhs<'_>, c: &Dst<'_>, d: &Dims<'_>) {
    assert!(d.k == 0 || (d.k - 1) * b.bs + d.n <= b.b.len());
    assert!((d.m - 1) * c.rs + c.c0 + d.n <= c.c.len());
    if let Start::RowBias(bias) = d.start {
        assert!(bias.len() >= d.m);
    }
}

/// The blocking shared by both bodies: column chunks, row blocks, 16-column tiles.
#[inline(always)]
fn walk(d: &Dims<'_>, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut p0 = 0;
    while p0 < d.n {
        let end = (p0 + CHUNK).min(d.n);
        let mut i = 0;
        while i < d.m {
            let rows = MR.min(d.m - i);
            let mut p = p0;
            while p < end {
                f(i, rows, p, PT.min(end - p));
                p += PT;
            }
            i += MR;
        }
        p0 = end;
    }
}

#[inline(always)]
fn portable_gemm(a: Lhs<'_>, b: Rhs<'_>, c: &mut Dst<'_>, d: Dims<'_>) {
    walk(&d, |i, rows, p, n| {
        let mut acc = [[0f32; PT]; MR];
        for (r, row) in acc.iter_mut().enumerate().take(rows) {
            let at = (i + r) * c.rs + c.c0 + p;
            match d.start {
                Start::Zero => {}
                Start::RowBias(bias) => *row = [bias[i + r]; PT],
                Start::Load => row[..n].copy_from_slice(&c.c[at..at + n]),
            }
        }
        let mut xv = [0f32; PT];
        for t in 0..d.k {
            xv[..n].copy_from_slice(&b.b[t * b.bs + p..t * b.bs + p + n]);
            for (r, row) in acc.iter_mut().enumerate().take(rows) {
                let wv = a.a[(i + r) * a.rs + t * a.cs];
                for (s, &v) in row.iter_mut().zip(&xv) {
                    *s += wv * v;
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(rows) {
            let at = (i + r) * c.rs + c.c0 + p;
            let dst = &mut c.c[at..at + n];
            match d.clamp {
                Some((lo, hi)) => {
                    for (o, &v) in dst.iter_mut().zip(row) {
                        *o = v.max(lo).min(hi);
                    }
                }
                None => dst.copy_from_slice(&row[..n]),
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

/// Lane masks selecting the first `n` of 16 lanes (two vectors of eight).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn masks(n: usize) -> (__m256i, __m256i) {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let n = n.min(PT) as i32;
    (
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8), idx),
    )
}

/// # Safety
/// AVX2 and FMA must be present, and the slices must satisfy the bounds `gemm` asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_gemm(a: Lhs<'_>, b: Rhs<'_>, c: &mut Dst<'_>, d: Dims<'_>) {
    let cp = c.c.as_mut_ptr();
    walk(&d, |i, rows, p, n| {
        let at = Block {
            ap: a.a.as_ptr().wrapping_add(i * a.rs),
            rs: a.rs,
            cs: a.cs,
            bp: b.b.as_ptr().wrapping_add(p),
            bs: b.bs,
            cp: cp.wrapping_add(i * c.rs + c.c0 + p),
            crs: c.rs,
            n,
            bias: match d.start {
                Start::RowBias(bias) => Some(&bias[i..i + rows]),
                _ => None,
            },
        };
        // SAFETY: block `(i, p)` has `rows` rows from `i` and `n` columns from `p`, all
        // inside `m × n`, so every element it reads or writes is inside the slices (the
        // bounds `gemm` asserted); AVX2 and FMA are present (the caller's guarantee).
        unsafe {
            match rows {
                6 => block::<6>(&at, &d),
                5 => block::<5>(&at, &d),
                4 => block::<4>(&at, &d),
                3 => block::<3>(&at, &d),
                2 => block::<2>(&at, &d),
                _ => block::<1>(&at, &d),
            }
        }
    });
}

/// One register block's operands, as pointers to its first element.
#[cfg(target_arch = "x86_64")]
struct Block<'a> {
    ap: *const f32,
    rs: usize,
    cs: usize,
    bp: *const f32,
    bs: usize,
    cp: *mut f32,
    crs: usize,
    n: usize,
    bias: Option<&'a [f32]>,
}

/// # Safety
/// AVX2 and FMA must be present; `A[r, t]` at `ap + r·rs + t·cs` (r < R, t < k), the `n`
/// floats at `bp + t·bs` (t < k) and at `cp + r·crs` (r < R) must be inside their slices.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block<const R: usize>(at: &Block<'_>, d: &Dims<'_>) {
    let mk = masks(at.n);
    let full = at.n == PT;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for (r, v) in acc.iter_mut().enumerate() {
        let row = at.cp.wrapping_add(r * at.crs);
        match d.start {
            Start::Zero => {}
            Start::RowBias(_) => {
                let s = _mm256_set1_ps(at.bias.map_or(0.0, |b| b[r]));
                *v = [s, s];
            }
            // SAFETY: the `n` floats of row r are inside C (the caller's guarantee);
            // masked-off lanes are not read.
            Start::Load => unsafe {
                *v = if full {
                    [_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8))]
                } else {
                    [
                        _mm256_maskload_ps(row, mk.0),
                        _mm256_maskload_ps(row.wrapping_add(8), mk.1),
                    ]
                };
            },
        }
    }
    // SAFETY: the caller's guarantee covers every A and B element the loop reads.
    let acc = unsafe {
        if full {
            k_loop::<R, true>(acc, at, d.k, mk)
        } else {
            k_loop::<R, false>(acc, at, d.k, mk)
        }
    };
    for (r, v) in acc.iter().enumerate() {
        let (mut v0, mut v1) = (v[0], v[1]);
        if let Some((lo, hi)) = d.clamp {
            let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
            v0 = _mm256_min_ps(_mm256_max_ps(v0, lo), hi);
            v1 = _mm256_min_ps(_mm256_max_ps(v1, lo), hi);
        }
        let row = at.cp.wrapping_add(r * at.crs);
        // SAFETY: the `n` floats of row r are inside C (the caller's guarantee); masked-off
        // lanes are not written.
        unsafe {
            if full {
                _mm256_storeu_ps(row, v0);
                _mm256_storeu_ps(row.add(8), v1);
            } else {
                _mm256_maskstore_ps(row, mk.0, v0);
                _mm256_maskstore_ps(row.wrapping_add(8), mk.1, v1);
            }
        }
    }
}

/// # Safety
/// As `block`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn k_loop<const R: usize, const FULL: bool>(
    mut acc: [[__m256; 2]; R],
    at: &Block<'_>,
    k: usize,
    mk: (__m256i, __m256i),
) -> [[__m256; 2]; R] {
    let (mut ap, mut bp) = (at.ap, at.bp);
    for _ in 0..k {
        // SAFETY: row t of B's block is inside B (the caller's guarantee); masked-off
        // lanes are not read.
        let (x0, x1) = unsafe {
            if FULL {
                (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)))
            } else {
                (
                    _mm256_maskload_ps(bp, mk.0),
                    _mm256_maskload_ps(bp.wrapping_add(8), mk.1),
                )
            }
        };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: A[r, t] is inside A (the caller's guarantee).
            let wv = _mm256_set1_ps(unsafe { *ap.add(r * at.rs) });
            a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
            a[1] = _mm256_fmadd_ps(wv, x1, a[1]);
        }
        ap = ap.wrapping_add(at.cs);
        bp = bp.wrapping_add(at.bs);
    }
    acc
}

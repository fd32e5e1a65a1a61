//! The AVX-512F f32 GEMM micro-kernel (x86_64; detected at run time with `std`): the
//! block of `avx2.rs` twice as tall and twice as wide, 12 output channels × 32 pixels in
//! 24 of the 32 `zmm` registers. On CPUs with two 512-bit FMA pipes (Zen 5, Intel server
//! cores) it does twice the multiply-adds per cycle of the AVX2 block; on Zen 4, whose
//! 512-bit FMAs issue as two halves, about the same.
//!
//! Each output is the same chain as in `avx2.rs` and the reference's summation order:
//! start at the bias, one fused multiply-add per `c` in order, then `max` and `min`. So the
//! two kernels give the same bits (`runtime/kernels/tests/exact_f32.rs` checks it), and the
//! block shape is free to differ. Pixel tails use masked loads and stores, and a tail of at
//! most 16 pixels one vector instead of two.

use core::arch::x86_64::*;

use super::kernel::{Dims, Dst, Lhs, Rhs, Start};
use super::{Block, Gemm, CHUNK};

/// Output channels per register block.
const MR: usize = 12;
/// Pixels per register block (two vectors of 16).
const NR: usize = 32;

/// How a K loop reads its pixels: all 32 lanes, the lanes two masks select, or (a tail of
/// at most 16 pixels) the lanes the first mask selects of one vector, so a narrow tail
/// costs half the multiply-adds of a full block instead of all of them.
const FULL: u8 = 0;
const MASKED: u8 = 1;
const HALF: u8 = 2;

/// The kind (in `prepack` keys) of weights packed by [`pack_panels`].
#[cfg(feature = "std")]
pub(super) const PANELS_KIND: u32 = 0x5000_0000 | MR as u32;

/// Rows of the register block at a row with `left` rows left: 12, then the rest as 8, 4,
/// 2 and 1 (`gemm`'s and `pack_panels`' shared sequence).
#[inline]
fn block_rows(left: usize) -> usize {
    [MR, 8, 4, 2, 1]
        .into_iter()
        .find(|&r| r <= left)
        .unwrap_or(1)
}

/// The `oc × k` row-major weights `w` in `gemm`'s register-block order, as f32 bits into
/// `out`: the block of `R` rows at row `o` (12 at a time, then 8, 4, 2, 1) holds weight
/// `(o + r, c)` at `o·k + c·R + r`, so each block's K loop reads one sequential stream
/// (12 broadcasts at fixed offsets a step) instead of `R` rows `k` apart. A part of the
/// rows from a multiple of 12 is the same blocks, so `Gemm::rows` slices it.
#[cfg(feature = "std")]
pub(super) fn pack_panels(w: &[f32], oc: usize, k: usize, out: &mut std::vec::Vec<i32>) {
    out.clear();
    out.resize(oc * k, 0);
    let mut o = 0;
    while o < oc {
        let rows = block_rows(oc - o);
        let dst = &mut out[o * k..(o + rows) * k];
        for r in 0..rows {
            let src = &w[(o + r) * k..(o + r + 1) * k];
            for (c, &v) in src.iter().enumerate() {
                dst[c * rows + r] = v.to_bits() as i32;
            }
        }
        o += rows;
    }
}

/// The K-loop mode for a block of `n` (≤ 32) pixels.
#[inline]
fn mode(n: usize) -> u8 {
    match n {
        NR => FULL,
        0..=16 => HALF,
        _ => MASKED,
    }
}

/// Whether this kernel runs: the CPU has AVX-512F and `paths::allow_avx512` has not turned
/// it off (with `std`); without `std`, whether the build targets AVX-512F.
pub fn available() -> bool {
    crate::paths::avx512_f32()
}

/// `super::gemm` (same arguments and result).
///
/// # Safety
/// The CPU must support AVX-512F; no other thread writes the outputs this call writes
/// (rows `o·ys + y0 ..` of `pix` columns of `y`) while it runs. (Slice bounds are checked
/// here.)
#[target_feature(enable = "avx512f")]
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
    crate::paths::note(crate::paths::Path::GemmF32Avx512);
    if gm.panels.is_some() {
        crate::paths::note(crate::paths::Path::GemmF32Panels);
    }
    let tile = Tile { x, xs, ys, y0 };
    let mut p0 = 0;
    while p0 < pix {
        let end = (p0 + CHUNK).min(pix);
        let mut o = 0;
        while o < oc {
            let rows = block_rows(oc - o);
            let mut p = p0;
            while p < end {
                let at = Block {
                    o,
                    p,
                    n: NR.min(end - p),
                };
                match rows {
                    MR => block::<MR>(gm, at, &tile, y),
                    8 => block::<8>(gm, at, &tile, y),
                    4 => block::<4>(gm, at, &tile, y),
                    2 => block::<2>(gm, at, &tile, y),
                    _ => block::<1>(gm, at, &tile, y),
                }
                p += NR;
            }
            o += rows;
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

/// The masks of the first `n` (≤ 32) of two vectors' 16 lanes each.
#[inline]
pub(super) fn tail_masks(n: usize) -> (__mmask16, __mmask16) {
    let lanes = |n: usize| -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    };
    (lanes(n), lanes(n.saturating_sub(16)))
}

/// One register block: `R` output channels from `at.o`, `at.n` (≤ 32) pixels from `at.p`.
#[target_feature(enable = "avx512f")]
#[inline]
fn block<const R: usize>(
    gm: &Gemm<'_>,
    at: Block,
    t: &Tile<'_>,
    y: &crate::par::SharedMut<'_, f32>,
) {
    let k = gm.k;
    let masks = tail_masks(at.n);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if let Some(b) = gm.bias {
        for (r, a) in acc.iter_mut().enumerate() {
            let v = _mm512_set1_ps(b[at.o + r]);
            *a = [v, v];
        }
    }
    // Every row c < k reads x[c·xs + p .. c·xs + p + n]: inside x (checked once here, so
    // the K loop has no bounds checks); every weight row o + r < oc holds k floats.
    assert!(at.n <= NR && (k - 1) * t.xs + at.p + at.n <= t.x.len());
    let xp = t.x[at.p..].as_ptr();
    // The block's R · k weights: rows k apart, or one panel (`pack_panels`).
    let w = gm.panels.unwrap_or(gm.w);
    assert!((at.o + R) * k <= w.len());
    let wp = w[at.o * k..].as_ptr();
    // SAFETY: the asserts above are `k_loop`'s requirements; the masks select `at.n`.
    let acc = unsafe {
        match (mode(at.n), gm.panels.is_some()) {
            (FULL, false) => k_loop::<R, FULL, false>(acc, wp, k, xp, t.xs, masks),
            (HALF, false) => k_loop::<R, HALF, false>(acc, wp, k, xp, t.xs, masks),
            (_, false) => k_loop::<R, MASKED, false>(acc, wp, k, xp, t.xs, masks),
            (FULL, true) => k_loop::<R, FULL, true>(acc, wp, k, xp, t.xs, masks),
            (HALF, true) => k_loop::<R, HALF, true>(acc, wp, k, xp, t.xs, masks),
            (_, true) => k_loop::<R, MASKED, true>(acc, wp, k, xp, t.xs, masks),
        }
    };
    let (lo, hi) = (_mm512_set1_ps(gm.lo), _mm512_set1_ps(gm.hi));
    for (r, a) in acc.iter().enumerate() {
        // max then min, the reference's clamp: a NaN sum becomes `lo` (vmaxps returns its
        // second operand when either is NaN, as in avx2.rs).
        let v0 = _mm512_min_ps(_mm512_max_ps(a[0], lo), hi);
        let v1 = _mm512_min_ps(_mm512_max_ps(a[1], lo), hi);
        let from = (at.o + r) * t.ys + t.y0 + at.p;
        // SAFETY: outputs `from..from + at.n` are this block's, written by this call only
        // (`gemm`'s contract).
        let dst = unsafe { y.piece(from, at.n) };
        let ptr = dst.as_mut_ptr();
        // SAFETY: `dst` holds `at.n` floats and the masks select lanes below `at.n` only;
        // masked-off lanes are never written (and a masked store does not fault on them).
        unsafe {
            _mm512_mask_storeu_ps(ptr, masks.0, v0);
            _mm512_mask_storeu_ps(ptr.wrapping_add(16), masks.1, v1);
        }
    }
}

/// `acc[r] += Σ_c W[r][c] · X[c][0..32]` for the `R` weight rows at `wp` (row stride `k`;
/// with `P`, one panel: `W[r][c]` at `c·R + r`) and the input rows at `xp` (row stride
/// `xs`): all 32 lanes in `FULL` mode, else the lanes `masks` selects (in `HALF` mode, of
/// the first vector only: `acc[r][1]` is left as it came).
///
/// # Safety
/// `wp` addresses `R · k` floats; for every `c < k`, the 32 floats at `xp + c · xs` (the
/// lanes `masks` selects when not `FULL`) are inside one slice.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn k_loop<const R: usize, const M: u8, const P: bool>(
    mut acc: [[__m512; 2]; R],
    wp: *const f32,
    k: usize,
    xp: *const f32,
    xs: usize,
    masks: (__mmask16, __mmask16),
) -> [[__m512; 2]; R] {
    for c in 0..k {
        let xr = xp.wrapping_add(c * xs);
        // The same pixels of the next chunk: the rows are `xs` apart (a whole plane for a
        // pointwise conv), too many streams for the hardware prefetcher, so the first
        // block of a chunk would wait on every row. A prefetch never faults, so an
        // address past the input is harmless.
        _mm_prefetch::<_MM_HINT_T0>(xr.wrapping_add(CHUNK) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(xr.wrapping_add(CHUNK + 16) as *const i8);
        // SAFETY: the 32 floats at c·xs (those the masks select when not FULL; masked
        // loads do not touch the others) are inside x (the caller's guarantee).
        let (x0, x1) = unsafe { load_pair::<M>(xr, masks) };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and c < k: inside the R · k floats at wp (the caller's guarantee).
            let at = if P { c * R + r } else { r * k + c };
            let wv = _mm512_set1_ps(unsafe { *wp.add(at) });
            a[0] = _mm512_fmadd_ps(wv, x0, a[0]);
            if M != HALF {
                a[1] = _mm512_fmadd_ps(wv, x1, a[1]);
            }
        }
    }
    acc
}

/// The two vectors of pixels at `p` for K-loop mode `M` (in `HALF` mode the second is
/// zero and unread).
///
/// # Safety
/// The 32 floats at `p` (the lanes `masks` selects when `M` is not `FULL`; only the first
/// vector's in `HALF` mode) are inside one slice.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_pair<const M: u8>(p: *const f32, masks: (__mmask16, __mmask16)) -> (__m512, __m512) {
    // SAFETY: the caller's guarantee; masked loads do not touch masked-off lanes.
    unsafe {
        match M {
            FULL => (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))),
            HALF => (_mm512_maskz_loadu_ps(masks.0, p), _mm512_setzero_ps()),
            _ => (
                _mm512_maskz_loadu_ps(masks.0, p),
                _mm512_maskz_loadu_ps(masks.1, p.wrapping_add(16)),
            ),
        }
    }
}

/// `kernel::gemm` on this block (same arguments and result): the strided GEMM of the
/// large-patch conv, ConvTranspose and MatMul paths, in blocks of 12 rows × 32 columns
/// within the same column chunks.
///
/// # Safety
/// AVX-512F must be present, and the slices must satisfy the bounds `kernel::gemm` asserts.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn strided_gemm(a: Lhs<'_>, b: Rhs<'_>, c: &mut Dst<'_>, d: Dims<'_>) {
    // SAFETY: the caller's guarantee.
    unsafe { strided_body::<false, false>(a, 0, b, c, d, core::ptr::null()) }
}

/// `strided_gemm` with `A` the columns `c0..c0 + d.k` of the `d.m × kt` matrix whose
/// panels (`pack_panels`) are `panels` (the large-patch conv's chunks of input channels).
///
/// # Safety
/// AVX-512F must be present (the slice bounds are checked here).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn panel_gemm(
    panels: &[f32],
    kt: usize,
    c0: usize,
    b: Rhs<'_>,
    c: &mut Dst<'_>,
    d: Dims<'_>,
) {
    if d.m == 0 || d.n == 0 {
        return;
    }
    assert!(d.m * kt <= panels.len() && c0 + d.k <= kt);
    super::kernel::check_rest(&b, c, &d);
    let a = Lhs {
        a: panels,
        rs: kt,
        cs: 1,
    };
    // SAFETY: AVX-512F is present (the caller's guarantee); B, C and the bias are checked
    // above, and block i's R · k floats from i·kt + c0·R lie in its panel
    // (i·kt .. (i + R)·kt), inside `panels` (asserted above).
    unsafe { strided_body::<true, false>(a, c0, b, c, d, core::ptr::null()) }
}

/// Taps fetched ahead by `panel_gemm_taps`; its offset table holds this many entries past
/// the last tap.
pub(super) const TAPS_AHEAD: usize = 16;

/// `C = A · B` (+ the start, then the clamp) for weights packed by [`pack_panels`] (`kt`
/// columns, all of them read) and a B whose row `t` is the `d.n` floats from `offs[t]`
/// of `x` (`offs` holds `TAPS_AHEAD` more, inside `x` too): an implicit GEMM, each row a tap of the input read in place
/// (`fast_f32::taps`), instead of an im2col tile. Each output is the same chain as in
/// `panel_gemm` over the same rows.
///
/// # Safety
/// The CPU must have AVX-512F. Every bound is checked here.
pub(super) unsafe fn panel_gemm_taps(
    panels: &[f32],
    kt: usize,
    x: &[f32],
    offs: &[usize],
    c: &mut Dst<'_>,
    d: Dims<'_>,
) {
    if d.m == 0 || d.n == 0 {
        return;
    }
    assert!(d.k == kt && offs.len() == kt + TAPS_AHEAD && d.m * kt <= panels.len());
    assert!(offs.iter().all(|&o| o + d.n <= x.len()));
    assert!((d.m - 1) * c.rs + c.c0 + d.n <= c.c.len());
    if let Start::RowBias(bias) = d.start {
        assert!(bias.len() >= d.m);
    }
    let a = Lhs {
        a: panels,
        rs: kt,
        cs: 1,
    };
    let b = Rhs { b: x, bs: 0 };
    // SAFETY: AVX-512F is present (the caller's guarantee); block `(i, p)` reads rows
    // `offs[t] + p .. + n` of x (asserted inside x above for every t, as p + n ≤ d.n),
    // panel rows i..i + R (inside `panels`), and writes C rows i.. at columns c0 + p..
    // (inside C, asserted above).
    unsafe { strided_body::<true, true>(a, 0, b, c, d, offs.as_ptr()) }
}

/// The body of `strided_gemm` (`P` false), `panel_gemm` (`P`: `a.a` holds panels of rows
/// `a.rs` long, and the product reads their columns from `c0`) and `panel_gemm_taps` (`T`:
/// B's row t at `offs[t]` from the block's first column, instead of `t · b.bs`; `offs`
/// is read only with `T`).
///
/// # Safety
/// As `strided_gemm` / `panel_gemm` / `panel_gemm_taps`.
#[target_feature(enable = "avx512f")]
unsafe fn strided_body<const P: bool, const T: bool>(
    a: Lhs<'_>,
    c0: usize,
    b: Rhs<'_>,
    c: &mut Dst<'_>,
    d: Dims<'_>,
    offs: *const usize,
) {
    crate::paths::note(crate::paths::Path::GemmF32Avx512);
    if P {
        crate::paths::note(crate::paths::Path::GemmF32Panels);
    }
    let cp = c.c.as_mut_ptr();
    let mut p0 = 0;
    while p0 < d.n {
        let end = (p0 + CHUNK).min(d.n);
        let mut i = 0;
        while i < d.m {
            let rows = block_rows(d.m - i);
            let mut p = p0;
            while p < end {
                let at = Strided {
                    ap: if P {
                        a.a.as_ptr().wrapping_add(i * a.rs + c0 * rows)
                    } else {
                        a.a.as_ptr().wrapping_add(i * a.rs)
                    },
                    rs: a.rs,
                    cs: a.cs,
                    bp: b.b.as_ptr().wrapping_add(p),
                    bs: b.bs,
                    cp: cp.wrapping_add(i * c.rs + c.c0 + p),
                    crs: c.rs,
                    n: NR.min(end - p),
                    bias: match d.start {
                        Start::RowBias(bias) => Some(&bias[i..i + rows]),
                        _ => None,
                    },
                    offs,
                };
                // SAFETY: block `(i, p)` has `rows` rows from `i` and `n` columns from `p`,
                // all inside `m × n`, so every element it reads or writes is inside the
                // slices (the bounds `kernel::gemm` asserted); AVX-512F is present.
                unsafe {
                    match rows {
                        MR => strided_block::<MR, P, T>(&at, &d),
                        8 => strided_block::<8, P, T>(&at, &d),
                        4 => strided_block::<4, P, T>(&at, &d),
                        2 => strided_block::<2, P, T>(&at, &d),
                        _ => strided_block::<1, P, T>(&at, &d),
                    }
                }
                p += NR;
            }
            i += rows;
        }
        p0 = end;
    }
}

/// One strided register block's operands, as pointers to its first element.
struct Strided<'a> {
    ap: *const f32,
    rs: usize,
    cs: usize,
    bp: *const f32,
    bs: usize,
    cp: *mut f32,
    crs: usize,
    n: usize,
    bias: Option<&'a [f32]>,
    /// With taps (`T`): row t of B at `bp + offs[t]` instead of `bp + t·bs`.
    offs: *const usize,
}

/// # Safety
/// AVX-512F must be present; `A[r, t]` at `ap + r·rs + t·cs` (with `P`, at `ap + t·R + r`;
/// r < R, t < k), the `n` floats at `bp + t·bs` (t < k) and at `cp + r·crs` (r < R) must be
/// inside their slices.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn strided_block<const R: usize, const P: bool, const T: bool>(
    at: &Strided<'_>,
    d: &Dims<'_>,
) {
    let mk = tail_masks(at.n);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for (r, v) in acc.iter_mut().enumerate() {
        let row = at.cp.wrapping_add(r * at.crs);
        match d.start {
            Start::Zero => {}
            Start::RowBias(_) => {
                let s = _mm512_set1_ps(at.bias.map_or(0.0, |b| b[r]));
                *v = [s, s];
            }
            // SAFETY: the `n` floats of row r are inside C (the caller's guarantee);
            // masked-off lanes are not read.
            Start::Load => unsafe {
                *v = [
                    _mm512_maskz_loadu_ps(mk.0, row),
                    _mm512_maskz_loadu_ps(mk.1, row.wrapping_add(16)),
                ];
            },
        }
    }
    // SAFETY: the caller's guarantee covers every A and B element the loop reads.
    let acc = unsafe {
        match mode(at.n) {
            FULL => strided_k_loop::<R, FULL, P, T>(acc, at, d.k, mk),
            HALF => strided_k_loop::<R, HALF, P, T>(acc, at, d.k, mk),
            _ => strided_k_loop::<R, MASKED, P, T>(acc, at, d.k, mk),
        }
    };
    for (r, v) in acc.iter().enumerate() {
        let (mut v0, mut v1) = (v[0], v[1]);
        if let Some((lo, hi)) = d.clamp {
            let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
            v0 = _mm512_min_ps(_mm512_max_ps(v0, lo), hi);
            v1 = _mm512_min_ps(_mm512_max_ps(v1, lo), hi);
        }
        let row = at.cp.wrapping_add(r * at.crs);
        // SAFETY: the `n` floats of row r are inside C (the caller's guarantee); masked-off
        // lanes are not written.
        unsafe {
            _mm512_mask_storeu_ps(row, mk.0, v0);
            _mm512_mask_storeu_ps(row.wrapping_add(16), mk.1, v1);
        }
    }
}

/// # Safety
/// As `strided_block`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn strided_k_loop<const R: usize, const M: u8, const P: bool, const T: bool>(
    mut acc: [[__m512; 2]; R],
    at: &Strided<'_>,
    k: usize,
    mk: (__mmask16, __mmask16),
) -> [[__m512; 2]; R] {
    let (mut ap, mut bp) = (at.ap, at.bp);
    for t in 0..k {
        // SAFETY: row t of B's block is inside B (the caller's guarantee: with taps,
        // `offs[t]` from `bp`); masked-off lanes are not read.
        let row = if T {
            // The tap `TAPS_AHEAD` rows on (the table holds that many more) is fetched
            // now: taps jump between rows and channels, which the hardware prefetcher
            // does not follow.
            let ahead = at.bp.wrapping_add(unsafe { *at.offs.add(t + TAPS_AHEAD) });
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
            at.bp.wrapping_add(unsafe { *at.offs.add(t) })
        } else {
            bp
        };
        let (x0, x1) = unsafe { load_pair::<M>(row, mk) };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: A[r, t] is inside A (the caller's guarantee).
            let wv = _mm512_set1_ps(unsafe { *ap.add(if P { r } else { r * at.rs }) });
            a[0] = _mm512_fmadd_ps(wv, x0, a[0]);
            if M != HALF {
                a[1] = _mm512_fmadd_ps(wv, x1, a[1]);
            }
        }
        ap = ap.wrapping_add(if P { R } else { at.cs });
        bp = bp.wrapping_add(at.bs);
    }
    acc
}

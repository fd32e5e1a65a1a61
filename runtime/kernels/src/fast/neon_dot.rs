//! int8 dot-product kernels for aarch64: the GEMM of pointwise and im2col convs, the
//! FullyConnected block and the GEMV (convs with a few output pixels), all on one register
//! block that multiplies rows by rows along K.
//!
//! Both operands are read as rows of `k` contiguous int8 (a FullyConnected's input rows and
//! weight rows in place; a conv's weight rows in place and its pixels' patches transposed
//! into rows once per chunk of 32 pixels), so the weights need no packing: the 4-deep K
//! groups `sdot` reduces are four consecutive bytes of a row. A block of 4 a-rows × 4
//! b-rows keeps 16 int32x4 accumulators; each 16-byte step loads 4 + 4 vectors and issues
//! 16 `sdot` (256 MACs), and the block's 16 sums are reduced across lanes (`addv`) once
//! at the end of K. CPUs without the dot product (Cortex-A53, A55 without it enabled)
//! take the same driver with a 4 × 2 block of `smlal` on operands widened to int16.
//!
//! CPUs with the Armv8.6 int8 matrix multiply (i8mm: Cortex-A510/A710/X2 and later,
//! Neoverse V1/N2) take `smmla` for GEMMs of 8 or more a-rows: one instruction multiplies
//! a 2 × 8 block of two a-rows by the 8 × 2 of two b-rows into four int32 sums (32 MACs,
//! twice `sdot`'s 16). The a-rows are interleaved once per 32 rows into that form (for each
//! 8 bytes of K, the two rows' bytes side by side, zero-padded to whole blocks), the b-rows
//! (weights, in place) zipped in registers; a block of 8 a-rows × 4 b-rows keeps 8
//! accumulators and issues 16 `smmla` and 4 `zip` per 16 bytes of K (512 MACs), against 32
//! `sdot` for the same block. `paths::i8mm` chooses it (`CAIRN_I8MM=0` turns it off).
//!
//! Exactness: sums run on raw int8 values and `bias − zx·Σw` is added once (as `neon.rs`
//! does). A product is at most 128·128 = 2^14 in magnitude, so int32 lanes cannot
//! overflow for K < 2^17 (every K these paths take: at most 8192); beyond that the sums
//! would still equal the reference's, which adds modulo 2^32 too. The output stage is
//! `cairn_core::quant::requantize` itself, so the bytes are the reference's
//! (`tests/exact_neon.rs`).
//!
//! `sdot` and `smmla` are emitted with `asm!` (the `vdotq_s32` / `vmmlaq_s32` intrinsics
//! are unstable) inside functions compiled with `dotprod` / `i8mm`, reached only after
//! [`available`] / `paths::i8mm` said yes.

use core::arch::aarch64::*;

use super::{row_offset, Geo, Q};

/// Longest patch the conv GEMV takes (its patches live on the stack: 32 KB).
pub(super) const MAX_K: usize = 8192;
/// Most output pixels (all images) a conv may have to take the GEMV.
pub(super) const MAX_PIX: usize = 4;
/// Pixels whose patches the GEMM transposes into rows at a time (64 KB of stack).
const CHUNK: usize = 32;
/// Output channels whose offsets are computed at a time (4 KB of stack).
const OFFS_CHUNK: usize = 1024;
/// a-rows the `smmla` panel interleaves at a time, and the longest K it takes (the
/// interleaved rows live on the stack: 64 KB).
const MM_ROWS: usize = 32;
const MM_MAX_K: usize = 2048;
/// Fewest a-rows for which `smmla` pays for interleaving them (one register block).
const MM_MIN_ROWS: usize = 8;

/// The register block a panel runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kern {
    /// 8 × 4 `smmla` (i8mm), a-rows interleaved.
    Smmla,
    /// 4 × 4 `sdot` (dot product).
    Sdot,
    /// 4 × 2 `smlal` on int16 (base NEON).
    Smlal,
}

/// Whether the CPU has the Armv8.2 dot product (`sdot`): detected at run time with `std`,
/// the compile-time target feature without.
#[inline]
pub(super) fn available() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "dotprod")
    }
}

/// The int8 GEMM of `neon::gemm` (same arguments and result: `x` is [ic][pix] with row
/// stride `xs`, output channel `o` goes to `y[o·ys + y0 ..]`) on the dot-product block.
/// `false` (nothing written) where it cannot run: no dot product, or pre-packed weights
/// without `std` to unpack them into.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    x: &[i8],
    xs: usize,
    q: &Q<'_>,
    ic: usize,
    oc: usize,
    pix: usize,
    y: &mut [i8],
    ys: usize,
    y0: usize,
) -> bool {
    if !available() || ic == 0 || ic > super::neon::MAX_K {
        return false;
    }
    match q.wp {
        None => gemm_rows(x, xs, q, q.w, ic, oc, pix, y, ys, y0),
        #[cfg(feature = "std")]
        Some(_) => with_plain(q, oc, ic, |w| {
            gemm_rows(x, xs, q, w, ic, oc, pix, y, ys, y0)
        }),
        #[cfg(not(feature = "std"))]
        Some(_) => return false,
    }
    true
}

/// [`gemm`] with the weights as plain rows `w` ([oc][ic]).
#[allow(clippy::too_many_arguments)]
fn gemm_rows(
    x: &[i8],
    xs: usize,
    q: &Q<'_>,
    w: &[i8],
    ic: usize,
    oc: usize,
    pix: usize,
    y: &mut [i8],
    ys: usize,
    y0: usize,
) {
    let mut rows = [0i8; CHUNK * super::neon::MAX_K];
    let mut offs = [0i32; OFFS_CHUNK];
    let q_rows = Q { w, wp: None, ..*q };
    let mm = pix >= MM_MIN_ROWS && choose(pix.min(CHUNK), ic) == Kern::Smmla;
    if mm {
        crate::paths::note(crate::paths::Path::GemmSmmla);
    }
    for o0 in (0..oc).step_by(OFFS_CHUNK) {
        let nb = OFFS_CHUNK.min(oc - o0);
        let offs = offsets(&q_rows, o0, nb, ic, &mut offs);
        let wb = &w[o0 * ic..(o0 + nb) * ic];
        for p0 in (0..pix).step_by(CHUNK) {
            let pt = CHUNK.min(pix - p0);
            let a = &mut rows[..pt * ic];
            transpose(x, xs, p0, pt, ic, a);
            // The last chunk may have fewer than 8 pixels: `sdot` there.
            let kern = if mm && pt >= MM_MIN_ROWS {
                Kern::Smmla
            } else {
                Kern::Sdot
            };
            // SAFETY: the dot product is present (`available` above), i8mm where `mm`
            // (`choose`).
            unsafe {
                panel(kern, a, pt, wb, nb, ic, |p, o, s| {
                    let oo = o0 + o;
                    y[oo * ys + y0 + p0 + p] = q.requant(oo, s.wrapping_add(offs[o])) as i8;
                });
            }
        }
    }
}

/// `bias − zx·Σw` of output channels `o0 .. o0 + nb` (`q.w` plain rows of `k`): the
/// conv's table when it computed one, else computed into `buf`.
fn offsets<'a>(q: &'a Q<'_>, o0: usize, nb: usize, k: usize, buf: &'a mut [i32]) -> &'a [i32] {
    if q.offs.len() >= o0 + nb {
        return &q.offs[o0..o0 + nb];
    }
    for (o, v) in buf.iter_mut().enumerate().take(nb) {
        *v = row_offset(q, o0 + o, k);
    }
    &buf[..nb]
}

/// `a[p·ic + c] = x[c·xs + p0 + p]` for `p < pt`, `c < ic`: 16 × 16 byte blocks through
/// four rounds of `zip1`/`zip2`, the edges byte by byte.
fn transpose(x: &[i8], xs: usize, p0: usize, pt: usize, ic: usize, a: &mut [i8]) {
    assert!(a.len() >= pt * ic && (ic == 0 || x.len() >= (ic - 1) * xs + p0 + pt));
    let (c16, p16) = (ic / 16 * 16, pt / 16 * 16);
    for c0 in (0..c16).step_by(16) {
        for pp in (0..p16).step_by(16) {
            // SAFETY: rows c0..c0 + 16 < ic of x hold pixels p0 + pp .. + 16 <= p0 + pt
            // (asserted bounds); a holds rows pp .. pp + 16 <= pt of ic >= c0 + 16 bytes.
            unsafe {
                let mut v: [int8x16_t; 16] =
                    core::array::from_fn(|r| vld1q_s8(x.as_ptr().add((c0 + r) * xs + p0 + pp)));
                for _ in 0..4 {
                    v = core::array::from_fn(|i| {
                        let (s, t) = (v[i / 2], v[i / 2 + 8]);
                        if i % 2 == 0 {
                            vzip1q_s8(s, t)
                        } else {
                            vzip2q_s8(s, t)
                        }
                    });
                }
                for (j, r) in v.iter().enumerate() {
                    vst1q_s8(a.as_mut_ptr().add((pp + j) * ic + c0), *r);
                }
            }
        }
        for p in p16..pt {
            for c in c0..c0 + 16 {
                a[p * ic + c] = x[c * xs + p0 + p];
            }
        }
    }
    for c in c16..ic {
        let xr = &x[c * xs + p0..c * xs + p0 + pt];
        for (p, &v) in xr.iter().enumerate() {
            a[p * ic + c] = v;
        }
    }
}

/// Plain weight rows ([oc][ic] int8) of pre-packed (`Layout::Pairs6`) weights, passed to
/// `f`: unpacked once per model with an active `prepack` cache, once per call otherwise.
#[cfg(feature = "std")]
fn with_plain<R>(q: &Q<'_>, oc: usize, ic: usize, f: impl FnOnce(&[i8]) -> R) -> R {
    extern crate std;
    use std::cell::RefCell;
    use std::vec::Vec;
    std::thread_local! {
        static SCRATCH: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
    }
    let Some((wp, g)) = q.wp else {
        return f(q.w);
    };
    // A kind of its own: bit 30, the channels and K (the x86 keys set bit 31 or neither).
    let kind = (1 << 30) | ((oc as u32 & 0x3FFFF) << 12) | (ic as u32 & 0xFFF);
    let key = (wp.as_ptr() as usize, wp.len(), kind);
    let bytes = oc * ic;
    let build = |v: &mut Vec<i32>| {
        v.clear();
        v.resize(bytes.div_ceil(4), 0);
        let mut at = 0;
        for o in 0..oc {
            let r = g.index(o, 0);
            // Row o's pairs are 12 int16 apart within its block (`Layout::Pairs6`).
            for c in 0..ic {
                let b = wp[r + 12 * (c / 2) + c % 2] as i8 as u8 as u32;
                v[at / 4] |= (b << (8 * (at % 4))) as i32;
                at += 1;
            }
        }
    };
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        crate::prepack::with_packed(key, &mut scratch, build, |packed| {
            assert!(packed.len() * 4 >= bytes);
            // SAFETY: the int32 words hold `bytes` int8 in little-endian order (built
            // above); i8 has alignment 1 and the borrow lives as long as `packed`.
            let w = unsafe { core::slice::from_raw_parts(packed.as_ptr() as *const i8, bytes) };
            f(w)
        })
    })
}

/// int8 BatchMatMul of two activations (`gemm::bmm_i8`'s result) on the panel: per matrix
/// pair, B [k, n] is transposed into n rows of k bytes (`transpose`), so A's rows and B's
/// columns are both rows along K; the raw sums become `Σ(a − za)(b − zb)` through
/// `− za·Σb_j − zb·Σa_i + k·za·zb` (wrapping, as the reference's sums), then the
/// reference's `requantize`. Pairs split across the lent threads, or one pair's columns.
/// `None` where the op is not two int8 matrices.
#[cfg(feature = "std")]
pub(crate) fn bmm_i8(
    call: &cairn_core::OpCall<'_>,
    out: &mut cairn_core::TensorMut<'_>,
) -> Option<Result<(), cairn_core::ExecError>> {
    extern crate std;
    use std::vec::Vec;
    let (at, bt) = (call.req(0).ok()?, call.req(1).ok()?);
    let (sa, sb, sy) = (at.info.shape, bt.info.shape, out.info.shape);
    let (m, k, n) = crate::gemm::bmm_dims(&sa, &sb, &sy)?;
    if m == 0 || k == 0 || n == 0 {
        return None;
    }
    let (a, b) = (at.i8s().ok()?, bt.i8s().ok()?);
    let scale = *call.req(2).ok()?.f32s().ok()?.first()?;
    use crate::util::qp;
    let ((_, za), (_, zb), (_, zy)) = (qp(&at.info), qp(&bt.info), qp(&out.info));
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    let mut pairs = Vec::new();
    crate::gemm::bmm_walk(&sa, &sb, &sy, |o, ia, ib| pairs.push((o, ia, ib)));
    if pairs.is_empty() {
        return Some(Ok(()));
    }
    if pairs.iter().any(|&(o, ia, ib)| {
        (o + 1) * m * n > y.len() || (ia + 1) * m * k > a.len() || (ib + 1) * k * n > b.len()
    }) {
        return None;
    }
    crate::paths::note(crate::paths::Path::MatMulBlock);
    let kern = note_kernel(m, k);
    let kzz = (k as i32).wrapping_mul(za).wrapping_mul(zb);
    // Σ of each k-byte row (A's rows, B's columns once transposed).
    let row_sums =
        |rows: &[i8]| -> Vec<i32> { rows.chunks_exact(k).map(crate::pool::sum_i8).collect() };
    // One pair's columns `js` into `y` (the pair's m × n output), B's transpose in `bt`.
    let columns = |ia: usize,
                   bt: &[i8],
                   asum: &[i32],
                   js: core::ops::Range<usize>,
                   y: &crate::par::SharedMut<'_, i8>,
                   yo: usize| {
        let bsum = row_sums(&bt[js.start * k..js.end * k]);
        let put = |i: usize, j: usize, s: i32| {
            let v = s
                .wrapping_sub(za.wrapping_mul(bsum[j]))
                .wrapping_sub(zb.wrapping_mul(asum[i]))
                .wrapping_add(kzz);
            // SAFETY: output (i, js.start + j) of this pair belongs to this part only.
            let d = unsafe { y.piece(yo + i * n + js.start + j, 1) };
            d[0] = cairn_core::quant::requantize(v, scale, zy, -128, 127) as i8;
        };
        let a_rows = &a[ia * m * k..(ia + 1) * m * k];
        // SAFETY: `note_kernel` chose a block the CPU has.
        unsafe {
            panel(
                kern,
                a_rows,
                m,
                &bt[js.start * k..js.end * k],
                js.len(),
                k,
                put,
            )
        };
    };
    let transposed = |ib: usize| -> Vec<i8> {
        let mut bt = std::vec![0i8; n * k];
        transpose(&b[ib * k * n..(ib + 1) * k * n], n, 0, n, k, &mut bt);
        bt
    };
    let out = crate::par::SharedMut::new(y);
    let work = (pairs.len() * m * n) as u64 * k as u64;
    if pairs.len() > 1 {
        crate::par::par_ranges(pairs.len(), 1, work, |r| {
            // A B shared by consecutive pairs (broadcast over A's batch) is transposed once.
            let mut last: Option<(usize, Vec<i8>)> = None;
            for &(o, ia, ib) in &pairs[r] {
                if last.as_ref().is_some_and(|l| l.0 != ib) {
                    last = None;
                }
                let bt = &last.get_or_insert_with(|| (ib, transposed(ib))).1;
                let asum = row_sums(&a[ia * m * k..(ia + 1) * m * k]);
                columns(ia, bt, &asum, 0..n, &out, o * m * n);
            }
        });
    } else {
        let (o, ia, ib) = pairs[0];
        let (bt, asum) = (transposed(ib), row_sums(&a[ia * m * k..(ia + 1) * m * k]));
        crate::par::par_ranges(n, 4, work, |js| {
            columns(ia, &bt, &asum, js, &out, o * m * n)
        });
    }
    Some(Ok(()))
}

/// Whether a conv takes the GEMV: one group, plain weights, a tiny output.
pub(super) fn conv_fits(g: &Geo, q: &Q<'_>) -> bool {
    g.g == 1 && q.wp.is_none() && g.n * g.oh * g.ow <= MAX_PIX && g.c * g.kh * g.kw <= MAX_K
}

/// The conv as matrix × vector: every output pixel's patch (raw int8, the zero point
/// where the window leaves the image, which contributes nothing once `zx·Σw` is
/// subtracted) is one a-row, the weight rows the b-rows.
pub(super) fn conv_gemv(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let k = g.c * g.kh * g.kw;
    let pix = g.oh * g.ow;
    let total = g.n * pix;
    assert!(total <= MAX_PIX && k <= MAX_K);
    let mut patches = [0i8; MAX_PIX * MAX_K];
    for t in 0..total {
        patch(g, q, t / pix, t % pix, &mut patches[t * k..(t + 1) * k]);
    }
    let a = &patches[..total * k];
    let kern = note_kernel(total, k);
    let mut offs = [0i32; OFFS_CHUNK];
    for o0 in (0..g.oc).step_by(OFFS_CHUNK) {
        let nb = OFFS_CHUNK.min(g.oc - o0);
        let offs = offsets(q, o0, nb, k, &mut offs);
        // SAFETY: `note_kernel` chose a block the CPU has.
        unsafe {
            panel(
                kern,
                a,
                total,
                &q.w[o0 * k..(o0 + nb) * k],
                nb,
                k,
                |t, o, s| {
                    let oo = o0 + o;
                    y[((t / pix) * g.oc + oo) * pix + t % pix] =
                        q.requant(oo, s.wrapping_add(offs[o])) as i8;
                },
            );
        }
    }
}

/// The patch of output pixel `p` of image `n` in (c, ky, kx) order, raw int8 (`zx`
/// outside the image).
fn patch(g: &Geo, q: &Q<'_>, n: usize, p: usize, dst: &mut [i8]) {
    let plane = g.h * g.w;
    let (oy, ox) = (p / g.ow, p % g.ow);
    let zx = q.zx as i8;
    for c in 0..g.c {
        let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
        for ky in 0..g.kh {
            let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
            let row = &mut dst[(c * g.kh + ky) * g.kw..(c * g.kh + ky + 1) * g.kw];
            if iy < 0 || iy >= g.h as isize {
                row.fill(zx);
                continue;
            }
            let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
            for (kx, d) in row.iter_mut().enumerate() {
                let ix = (ox * g.sw) as isize - g.pl + (kx * g.dw) as isize;
                *d = if ix >= 0 && ix < g.w as isize {
                    xr[ix as usize]
                } else {
                    zx
                };
            }
        }
    }
}

/// FullyConnected on `m` rows of `x` ([m, k]), weights [n, k] plain, output [m, n]: the
/// rows of x against the weight rows in place, output channels split across the lent
/// threads in multiples of 4. Any `k` (the int32 sums are exact for K < 2^17).
pub(super) fn fc(q: &Q<'_>, m: usize, n: usize, k: usize, y: &mut [i8]) {
    assert!(q.x.len() >= m * k && q.w.len() >= n * k && y.len() >= m * n);
    let kern = note_kernel(m, k);
    let out = crate::par::SharedMut::new(y);
    let work = (m * n) as u64 * k as u64;
    crate::par::par_ranges(n, 4, work, |os| {
        let mut offs = [0i32; OFFS_CHUNK];
        let mut o0 = os.start;
        while o0 < os.end {
            let nb = OFFS_CHUNK.min(os.end - o0);
            let offs = offsets(q, o0, nb, k, &mut offs);
            let wb = &q.w[o0 * k..(o0 + nb) * k];
            let put = |i: usize, o: usize, s: i32| {
                let oo = o0 + o;
                let v = q.requant(oo, s.wrapping_add(offs[o]));
                // SAFETY: output (i, oo) belongs to this part's channels only.
                let at = unsafe { out.piece(i * n + oo, 1) };
                at[0] = v as i8;
            };
            // SAFETY: `note_kernel` chose a block the CPU has.
            unsafe { panel(kern, &q.x[..m * k], m, wb, nb, k, put) };
            o0 += nb;
        }
    });
}

/// The block for `m` a-rows of `k` bytes on this CPU.
fn choose(m: usize, k: usize) -> Kern {
    if !available() {
        Kern::Smlal
    } else if m >= MM_MIN_ROWS && k <= MM_MAX_K && crate::paths::i8mm() {
        Kern::Smmla
    } else {
        Kern::Sdot
    }
}

/// [`choose`], counting the kernel that will run (on the calling thread, before any
/// split): `smmla` counts as `sdot` too.
fn note_kernel(m: usize, k: usize) -> Kern {
    let kern = choose(m, k);
    use crate::paths::{note, Path};
    match kern {
        Kern::Smmla => {
            note(Path::GemmSmmla);
            note(Path::GemmSdot);
        }
        Kern::Sdot => note(Path::GemmSdot),
        Kern::Smlal => note(Path::GemmSmlal),
    }
    kern
}

/// `put(i, j, Σ_k a[i·k + t]·b[j·k + t])` (wrapping int32) for every row `i < m` of `a`
/// and `j < n` of `b`, both rows of `k` bytes. Blocks of 4 a-rows × 4 b-rows (`sdot`)
/// or × 2 (`smlal`); the b-blocks are the outer loop, so a block of weight rows stays in
/// L1 while every a-row passes it. Rows past the end of a block repeat the last row
/// (their sums are dropped).
///
/// `Smmla` goes to [`panel_mmla`] (at most `MM_MAX_K` bytes a row).
///
/// # Safety
/// `kern` is a block the CPU has ([`choose`]).
unsafe fn panel(
    kern: Kern,
    a: &[i8],
    m: usize,
    b: &[i8],
    n: usize,
    k: usize,
    mut put: impl FnMut(usize, usize, i32),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= m * k && b.len() >= n * k);
    if kern == Kern::Smmla {
        // SAFETY: the CPU has i8mm (the contract).
        unsafe { panel_mmla(a, m, b, n, k, put) };
        return;
    }
    let dot = kern == Kern::Sdot;
    let nb = if dot { 4 } else { 2 };
    for j0 in (0..n).step_by(nb) {
        // SAFETY (rows): every row index is clamped below m (n), so k bytes from each
        // pointer are inside a (b) (asserted above).
        let brow = |j: usize| unsafe { b.as_ptr().add((j0 + j).min(n - 1) * k) };
        let jn = nb.min(n - j0);
        for i0 in (0..m).step_by(4) {
            let arow = |i: usize| unsafe { a.as_ptr().add((i0 + i).min(m - 1) * k) };
            let ar = core::array::from_fn(arow);
            let im = 4.min(m - i0);
            if dot {
                // SAFETY: the function's contract; every row holds k bytes.
                let s = unsafe { block_sdot(ar, core::array::from_fn(brow), k) };
                for (j, col) in s.iter().enumerate().take(jn) {
                    for (i, &v) in col.iter().enumerate().take(im) {
                        put(i0 + i, j0 + j, v);
                    }
                }
            } else {
                // SAFETY: every row holds k bytes.
                let s = unsafe { block_smlal(ar, core::array::from_fn(brow), k) };
                for (j, col) in s.iter().enumerate().take(jn) {
                    for (i, &v) in col.iter().enumerate().take(im) {
                        put(i0 + i, j0 + j, v);
                    }
                }
            }
        }
    }
}

/// [`panel`] on the `smmla` block: `a` interleaved `MM_ROWS` rows at a time (see
/// [`interleave`]); within each such chunk the b-blocks are the outer loop, so four weight
/// rows stay in L1 while the chunk's blocks of 8 a-rows pass them.
///
/// # Safety
/// The CPU has i8mm and the dot product ([`choose`]).
unsafe fn panel_mmla(
    a: &[i8],
    m: usize,
    b: &[i8],
    n: usize,
    k: usize,
    mut put: impl FnMut(usize, usize, i32),
) {
    assert!(k <= MM_MAX_K && a.len() >= m * k && b.len() >= n * k && n > 0);
    let kp = k.div_ceil(16) * 16;
    let mut il = [0i8; MM_ROWS * MM_MAX_K];
    for r0 in (0..m).step_by(MM_ROWS) {
        let rn = MM_ROWS.min(m - r0);
        let blocks = rn.div_ceil(8);
        let il = &mut il[..blocks * 8 * kp];
        interleave(&a[r0 * k..(r0 + rn) * k], rn, k, kp, il);
        for j0 in (0..n).step_by(4) {
            // SAFETY (rows): the index is clamped below n, so k bytes from it are in b.
            let brow = |j: usize| unsafe { b.as_ptr().add((j0 + j).min(n - 1) * k) };
            let br: [*const i8; 4] = core::array::from_fn(brow);
            let jn = 4.min(n - j0);
            for bi in 0..blocks {
                // SAFETY: block bi holds 8·kp interleaved bytes; the CPU has i8mm.
                let s = unsafe { block_smmla(il.as_ptr().add(bi * 8 * kp), br, k) };
                let im = 8.min(rn - bi * 8);
                for (i, row) in s.iter().enumerate().take(im) {
                    for (j, &v) in row.iter().enumerate().take(jn) {
                        put(r0 + bi * 8 + i, j0 + j, v);
                    }
                }
            }
        }
    }
}

/// Rows `a` (`rn` rows of `k` bytes) in the `smmla` operand order: per block of 8 rows
/// (`8·kp` bytes), per 16 bytes of K, per row pair `p` and half `h`, one 16-byte vector
/// holding bytes `16s + 8h ..` of rows `2p` and `2p + 1`. Rows past `rn` and bytes past
/// `k` are zero (they add nothing; their sums are dropped).
fn interleave(a: &[i8], rn: usize, k: usize, kp: usize, dst: &mut [i8]) {
    assert!(a.len() >= rn * k && dst.len() >= rn.div_ceil(8) * 8 * kp && kp >= k);
    if !rn.is_multiple_of(8) || !k.is_multiple_of(16) {
        dst.fill(0);
    }
    for r in 0..rn {
        let row = &a[r * k..(r + 1) * k];
        let base = (r / 8) * 8 * kp + ((r % 8) / 2) * 32 + (r % 2) * 8;
        for (c, bytes) in row.chunks(8).enumerate() {
            let at = base + (c / 2) * 128 + (c % 2) * 16;
            dst[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }
}

/// The 8 × 4 block: `[i][j]` = Σ_k a_i[k]·b_j[k], `a` the block's interleaved rows
/// ([`interleave`], `8·kp` bytes), `b` four rows of `k` bytes zipped into row pairs per
/// 16-byte step (a tail under 16 through zero-padded copies).
///
/// # Safety
/// The CPU has i8mm; `a` holds the interleaved block for this `k`; each `b` pointer has
/// `k` readable bytes.
#[target_feature(enable = "i8mm")]
#[inline]
unsafe fn block_smmla(a: *const i8, b: [*const i8; 4], k: usize) -> [[i32; 4]; 8] {
    let z = vdupq_n_s32(0);
    // [row pair p][b pair q]
    let mut acc = [[z; 2]; 4];
    // A macro, not a closure: the `smmla`s must stay in this i8mm function.
    macro_rules! step {
        ($s:expr, $bv:expr) => {
            let bv: [int8x16_t; 4] = $bv;
            // SAFETY: the block holds 128 bytes per 16-byte step of K, `$s / 16` < kp / 16.
            let ap = unsafe { a.add($s / 16 * 128) };
            let w = bv.map(|v| vreinterpretq_s64_s8(v));
            let bz = [
                vreinterpretq_s8_s64(vzip1q_s64(w[0], w[1])),
                vreinterpretq_s8_s64(vzip2q_s64(w[0], w[1])),
                vreinterpretq_s8_s64(vzip1q_s64(w[2], w[3])),
                vreinterpretq_s8_s64(vzip2q_s64(w[2], w[3])),
            ];
            for (p, accp) in acc.iter_mut().enumerate() {
                for h in 0..2 {
                    // SAFETY: the block holds 128 bytes per 16-byte step of K.
                    let av = unsafe { vld1q_s8(ap.add((p * 2 + h) * 16)) };
                    for (q, c) in accp.iter_mut().enumerate() {
                        // SAFETY: the CPU has i8mm (the function's contract).
                        *c = unsafe { smmla!(*c, av, bz[q * 2 + h]) };
                    }
                }
            }
        };
    }
    let k16 = k / 16 * 16;
    let mut s = 0;
    while s < k16 {
        // SAFETY: s + 16 <= k bytes of every row.
        step!(s, b.map(|p| unsafe { vld1q_s8(p.add(s)) }));
        s += 16;
    }
    if k16 < k {
        // SAFETY: every row holds k bytes.
        step!(k16, unsafe { tail(b, k16, k) });
    }
    let mut out = [[0i32; 4]; 8];
    for (p, accp) in acc.iter().enumerate() {
        for (q, &v) in accp.iter().enumerate() {
            let mut l = [0i32; 4];
            // SAFETY: four int32 into a four-element array.
            unsafe { vst1q_s32(l.as_mut_ptr(), v) };
            out[2 * p][2 * q] = l[0];
            out[2 * p][2 * q + 1] = l[1];
            out[2 * p + 1][2 * q] = l[2];
            out[2 * p + 1][2 * q + 1] = l[3];
        }
    }
    out
}

/// `acc + Σ` of the four byte products in each int32 lane of `a` and `b` (`sdot`).
macro_rules! sdot {
    ($acc:expr, $a:expr, $b:expr) => {{
        let mut r: int32x4_t = $acc;
        core::arch::asm!(
            "sdot {r:v}.4s, {a:v}.16b, {b:v}.16b",
            r = inout(vreg) r,
            a = in(vreg) $a,
            b = in(vreg) $b,
            options(pure, nomem, nostack, preserves_flags),
        );
        r
    }};
}

/// The 4 × 4 block: `[j][i]` = Σ_k a_i[k]·b_j[k], 16 `sdot` per 16-byte step; a tail of
/// K under 16 goes through zero-padded copies of the rows.
///
/// # Safety
/// The dot product is present; each pointer has `k` readable bytes.
#[target_feature(enable = "dotprod")]
#[inline]
unsafe fn block_sdot(a: [*const i8; 4], b: [*const i8; 4], k: usize) -> [[i32; 4]; 4] {
    let z = vdupq_n_s32(0);
    let mut acc = [[z; 4]; 4];
    // A macro, not a closure: the `sdot`s must stay in this dot-product function.
    macro_rules! step {
        ($av:expr, $bv:expr) => {
            let (av, bv): ([int8x16_t; 4], [int8x16_t; 4]) = ($av, $bv);
            for (accj, bj) in acc.iter_mut().zip(bv) {
                for (c, ai) in accj.iter_mut().zip(av) {
                    // SAFETY: the dot product is present (the function's contract).
                    *c = unsafe { sdot!(*c, ai, bj) };
                }
            }
        };
    }
    let k16 = k / 16 * 16;
    let mut s = 0;
    while s < k16 {
        // SAFETY: s + 16 <= k bytes of every row.
        let av = a.map(|p| unsafe { vld1q_s8(p.add(s)) });
        let bv = b.map(|p| unsafe { vld1q_s8(p.add(s)) });
        step!(av, bv);
        s += 16;
    }
    if k16 < k {
        // SAFETY: every row holds k bytes.
        step!(unsafe { tail(a, k16, k) }, unsafe { tail(b, k16, k) });
    }
    acc.map(|col| col.map(|v| vaddvq_s32(v)))
}

/// The 4 × 2 block on NEON without the dot product: both sides widened to int16
/// (`sxtl`), four `smlal` per row pair and 16-byte step (exact int16 products).
///
/// # Safety
/// Each pointer has `k` readable bytes.
#[inline]
unsafe fn block_smlal(a: [*const i8; 4], b: [*const i8; 2], k: usize) -> [[i32; 4]; 2] {
    let z = vdupq_n_s32(0);
    let mut acc = [[z; 4]; 2];
    let widen = |v: int8x16_t| (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
    let step = |acc: &mut [[int32x4_t; 4]; 2], av: [int8x16_t; 4], bv: [int8x16_t; 2]| {
        let (aw, bw) = (av.map(widen), bv.map(widen));
        for (accj, bj) in acc.iter_mut().zip(bw) {
            for (c, ai) in accj.iter_mut().zip(aw) {
                let mut t = vmlal_s16(*c, vget_low_s16(ai.0), vget_low_s16(bj.0));
                t = vmlal_high_s16(t, ai.0, bj.0);
                t = vmlal_s16(t, vget_low_s16(ai.1), vget_low_s16(bj.1));
                *c = vmlal_high_s16(t, ai.1, bj.1);
            }
        }
    };
    let k16 = k / 16 * 16;
    let mut s = 0;
    while s < k16 {
        // SAFETY: s + 16 <= k bytes of every row.
        let av = a.map(|p| unsafe { vld1q_s8(p.add(s)) });
        let bv = b.map(|p| unsafe { vld1q_s8(p.add(s)) });
        step(&mut acc, av, bv);
        s += 16;
    }
    if k16 < k {
        // SAFETY: every row holds k bytes.
        let (av, bv) = unsafe { (tail(a, k16, k), tail(b, k16, k)) };
        step(&mut acc, av, bv);
    }
    acc.map(|col| col.map(|v| vaddvq_s32(v)))
}

/// Bytes `k16 .. k` (fewer than 16) of each row, zero-padded to one vector.
///
/// # Safety
/// Each pointer has `k` readable bytes and `k − k16 <= 16`.
#[inline(always)]
unsafe fn tail<const R: usize>(rows: [*const i8; R], k16: usize, k: usize) -> [int8x16_t; R] {
    rows.map(|p| {
        let mut buf = [0i8; 16];
        // SAFETY: the function's contract: k − k16 bytes from k16 fit the buffer.
        unsafe {
            core::ptr::copy_nonoverlapping(p.add(k16), buf.as_mut_ptr(), k - k16);
            vld1q_s8(buf.as_ptr())
        }
    })
}

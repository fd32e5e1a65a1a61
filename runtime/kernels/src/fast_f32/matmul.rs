//! f32 MatMul of two activations (`BatchMatMul`) and FullyConnected with several input
//! rows, on the strided GEMM of `kernel.rs`.
//!
//! - BatchMatMul: per matrix pair (`gemm::bmm_walk`, broadcast batches included),
//!   `Y = A · B` with both operands read in place (A's rows broadcast, B's rows as the
//!   column vectors).
//! - FullyConnected `Y[i, j] = clamp(bias[j] + Σ_t X[i, t] · W[j, t])` with `m ≥ FC_MIN_ROWS`
//!   input rows and `n ≥ FC_MIN_COLS` weight rows: 32 weight rows at a time are transposed into a stack panel
//!   (`[t][32]`, a chunk of `t` at a time, in 8×8 AVX2 blocks; the AVX-512 block's full
//!   width, two of the AVX2 block's) that serves every input row, so the weights are
//!   read once per call instead of once per input row. With a weight cache (a
//!   `HostModel`), the panels of the whole matrix are transposed once per model and kept:
//!   a copy the size of the weights, which saved a third of a 32-row transformer
//!   FullyConnected's time. `Y` starts at the bias.
//!
//! Sums are the reference's in another order (and with fused multiply-adds).

use cairn_core::{ExecError, OpCall, TensorMut};

use super::kernel::{gemm, Dims, Dst, Lhs, Rhs, Start};
use super::Gemm;
use crate::gemm::bmm_walk;

/// Input rows from which FullyConnected takes the GEMM (fewer: one dot product per row).
pub(super) const FC_MIN_ROWS: usize = 4;
/// Weight rows from which FullyConnected takes the GEMM (fewer: one dot product per input
/// row and weight row; a panel 32 wide would be mostly empty).
pub(super) const FC_MIN_COLS: usize = 4;
/// Weight rows (`j`) per transposed panel.
const PANEL_W: usize = 32;
/// Weight columns (`t`) per transposed panel: 32 × 512 floats, 64 KB on the stack.
const PANEL_K: usize = 512;

/// f32 BatchMatMul, or `None` when the op is not this path's case.
pub fn bmm_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let (at, bt) = (call.req(0).ok()?, call.req(1).ok()?);
    let (sa, sb, sy) = (at.info.shape, bt.info.shape, out.info.shape);
    let (m, k, n) = crate::gemm::bmm_dims(&sa, &sb, &sy)?;
    let (a, b) = (at.f32s().ok()?, bt.f32s().ok()?);
    let batches = sy.numel()?.checked_div(m * n)?;
    let fits = sb.dim(sb.rank() - 2) == k
        && a.len() % (m * k).max(1) == 0
        && b.len() % (k * n).max(1) == 0
        && out.data.len() >= 4 * batches * m * n;
    if !fits {
        return None;
    }
    let y = match out.f32s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    // Output matrices split across the lent threads: each part walks every pair and
    // runs those whose output lies in its piece of `y`.
    let bad = core::sync::atomic::AtomicBool::new(false);
    let mn = m * n;
    let total = batches * mn;
    let work = (total * k) as u64;
    crate::par::par_pieces(&mut y[..total], mn.max(1), work, |at, piece| {
        let mine = at..at + piece.len();
        bmm_walk(&sa, &sb, &sy, |o, ia, ib| {
            let (ao, bo, yo) = (ia * m * k, ib * k * n, o * mn);
            if !mine.contains(&yo) || mn == 0 {
                return;
            }
            if ao + m * k > a.len() || bo + k * n > b.len() || yo + mn > mine.end {
                bad.store(true, core::sync::atomic::Ordering::Relaxed);
                return;
            }
            let yb = &mut piece[yo - at..yo - at + mn];
            if k == 0 {
                yb.fill(0.0);
                return;
            }
            let lhs = Lhs {
                a: &a[ao..ao + m * k],
                rs: k,
                cs: 1,
            };
            let rhs = Rhs {
                b: &b[bo..bo + k * n],
                bs: n,
            };
            let mut dst = Dst {
                c: yb,
                rs: n,
                c0: 0,
            };
            let d = Dims {
                m,
                n,
                k,
                start: Start::Zero,
                clamp: None,
            };
            gemm(lhs, rhs, &mut dst, d);
        });
    });
    let bad = bad.into_inner();
    if bad {
        return Some(Err(ExecError::Shape));
    }
    super::dispatch::taken();
    Some(Ok(()))
}

/// Input rows a split part starts at a multiple of (the micro-kernels' row blocks).
const ROW_SPLIT: usize = 12;

/// FullyConnected over `m` input rows `x` (`m × k`) into `y` (`m × n`); the caller checked
/// the slice lengths. The rows split across the lent threads at multiples of the register
/// blocks, so each output is summed as on one thread. With a `prepack` cache that keeps
/// the weights (a `HostModel` run), the transposed panels are built once per model, on the
/// calling thread, and every part reads them; otherwise each part transposes the panels
/// for itself, a chunk at a time on the stack.
pub(super) fn fc(gm: &Gemm<'_>, x: &[f32], m: usize, y: &mut [f32]) {
    #[cfg(feature = "std")]
    if crate::prepack::keeps(gm.w.as_ptr() as usize) {
        return with_fc_panels(gm, |p| fc_parts(gm, x, m, y, Some(p)));
    }
    fc_parts(gm, x, m, y, None)
}

/// Call `use_` with `gm`'s weights as the transposed panels of [`pack_fc_panels`], from the
/// `prepack` cache (built on first use; the caller checked that the cache keeps them).
#[cfg(feature = "std")]
fn with_fc_panels<R>(gm: &Gemm<'_>, use_: impl FnOnce(&[f32]) -> R) -> R {
    let (k, n) = (gm.k, gm.oc);
    let key = (gm.w.as_ptr() as usize, n * k, FC_PANELS_KIND);
    crate::paths::note(crate::paths::Path::FcF32Panels);
    crate::prepack::with_packed(
        key,
        &mut std::vec::Vec::new(),
        |v| pack_fc_panels(gm.w, n, k, v),
        |p| use_(bytemuck::cast_slice(p)),
    )
}

/// FullyConnected over fewer rows than the GEMM takes (a recurrent step, a decoder's
/// token) on the cached transposed panels (`pack_fc_panels`, shared with the GEMM path):
/// per input value one broadcast and one fused multiply-add per 8 outputs, two panels
/// (64 outputs) in registers at a time, instead of a dot product and a horizontal sum per
/// output. `false` (nothing written) without AVX2 + FMA or without a cache that keeps the
/// weights. Sums from the bias in input order (the reference's order, with fused
/// multiply-adds), then the clamp.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(super) fn gemv_panels(gm: &Gemm<'_>, x: &[f32], m: usize, y: &mut [f32]) -> bool {
    if !super::avx2::available() || !crate::prepack::keeps(gm.w.as_ptr() as usize) {
        return false;
    }
    let (k, n) = (gm.k, gm.oc);
    if k == 0 || x.len() < m * k || y.len() < m * n {
        return false;
    }
    with_fc_panels(gm, |panels| {
        for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)).take(m) {
            // SAFETY: AVX2 and FMA are present (checked above); `gemv_row` checks the
            // slice bounds itself.
            unsafe { gemv_row(gm, panels, xr, yr) };
        }
    });
    super::dispatch::taken();
    true
}

/// One output row of `gemv_panels`.
///
/// # Safety
/// AVX2 and FMA must be present. (Slice bounds are checked here.)
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemv_row(gm: &Gemm<'_>, panels: &[f32], xr: &[f32], yr: &mut [f32]) {
    use core::arch::x86_64::*;
    let (k, n) = (gm.k, gm.oc);
    let np = n.div_ceil(PANEL_W);
    assert!(xr.len() == k && yr.len() == n && panels.len() >= np * PANEL_W * k);
    if let Some(b) = gm.bias {
        assert!(b.len() >= n);
    }
    let (lo, hi) = (_mm256_set1_ps(gm.lo), _mm256_set1_ps(gm.hi));
    let mut p = 0;
    while p < np {
        let two = np - p >= 2;
        let cols = if two { 2 * PANEL_W } else { PANEL_W };
        let j0 = p * PANEL_W;
        // Accumulators: 8 outputs each, from the bias (0 past n or without one).
        let mut start = [0f32; 2 * PANEL_W];
        if let Some(b) = gm.bias {
            let end = (j0 + cols).min(n);
            start[..end - j0].copy_from_slice(&b[j0..end]);
        }
        let mut acc = [_mm256_setzero_ps(); 8];
        for (a, c) in acc.iter_mut().zip(start.chunks_exact(8)) {
            // SAFETY: 8 floats of `start`.
            *a = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        }
        let base = panels.as_ptr().wrapping_add(p * PANEL_W * k);
        let second = base.wrapping_add(PANEL_W * k);
        for (t, &xv) in xr.iter().enumerate() {
            let v = _mm256_set1_ps(xv);
            // SAFETY: row t of panel p (and p + 1 when `two`) holds 32 floats inside
            // `panels` (asserted above: np panels of 32·k).
            unsafe {
                let (lo4, hi4) = acc.split_at_mut(4);
                let r0 = base.add(t * PANEL_W);
                for (q, a) in lo4.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(r0.add(8 * q)), v, *a);
                }
                if two {
                    let r1 = second.add(t * PANEL_W);
                    for (q, a) in hi4.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(r1.add(8 * q)), v, *a);
                    }
                }
            }
        }
        let mut out = [0f32; 2 * PANEL_W];
        for (a, c) in acc.iter().zip(out.chunks_exact_mut(8)) {
            // SAFETY: 8 floats of `out`.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), _mm256_min_ps(_mm256_max_ps(*a, lo), hi)) };
        }
        let end = (j0 + cols).min(n);
        yr[j0..end].copy_from_slice(&out[..end - j0]);
        p += if two { 2 } else { 1 };
    }
}

/// The kind (in `prepack` keys) of FullyConnected weights packed by [`pack_fc_panels`].
#[cfg(feature = "std")]
const FC_PANELS_KIND: u32 = 0x3200_0000 | PANEL_W as u32;

/// The `n × k` row-major weights as the panels `fc_rows` multiplies by, f32 bits into
/// `out`: panel `p` (weight rows `32p..32p + 32`) holds `W[32p + jj, t]` at
/// `32p·k + t·32 + jj`, zero past the last row.
#[cfg(feature = "std")]
fn pack_fc_panels(w: &[f32], n: usize, k: usize, out: &mut std::vec::Vec<i32>) {
    out.clear();
    out.resize(n.div_ceil(PANEL_W) * PANEL_W * k, 0);
    for (j, row) in w[..n * k].chunks_exact(k.max(1)).enumerate().take(n) {
        let (p, jj) = (j / PANEL_W, j % PANEL_W);
        let panel = &mut out[p * PANEL_W * k..(p + 1) * PANEL_W * k];
        for (t, &v) in row.iter().enumerate() {
            panel[t * PANEL_W + jj] = v.to_bits() as i32;
        }
    }
}

/// `fc`'s rows across the lent threads, on the cached panels when there are some.
fn fc_parts(gm: &Gemm<'_>, x: &[f32], m: usize, y: &mut [f32], panels: Option<&[f32]>) {
    let (k, n) = (gm.k, gm.oc);
    let work = (m * n * k) as u64;
    crate::par::par_pieces(&mut y[..m * n], ROW_SPLIT * n.max(1), work, |at, yp| {
        let i0 = at / n.max(1);
        let rows = yp.len() / n.max(1);
        fc_rows(gm, &x[i0 * k..(i0 + rows) * k], rows, yp, panels);
    });
    super::dispatch::taken();
}

/// `fc` on one range of rows: per panel of 32 weight rows, the cached panel over all of
/// `k` at once, or a stack copy a chunk of `k` at a time (the same sums: each chunk's
/// partial results pass through `y` unchanged).
fn fc_rows(gm: &Gemm<'_>, x: &[f32], m: usize, y: &mut [f32], panels: Option<&[f32]>) {
    let (k, n) = (gm.k, gm.oc);
    for row in y[..m * n].chunks_exact_mut(n) {
        match gm.bias {
            Some(b) => row.copy_from_slice(&b[..n]),
            None => row.fill(0.0),
        }
    }
    let mut panel = [0f32; PANEL_W * PANEL_K];
    let mut j0 = 0;
    while j0 < n {
        let nj = PANEL_W.min(n - j0);
        let mut t0 = 0;
        while t0 < k {
            // The cached panel holds all of k; the stack panel a chunk of it.
            let nt = if panels.is_some() {
                k
            } else {
                PANEL_K.min(k - t0)
            };
            let b: &[f32] = match panels {
                Some(p) => &p[j0 * k..(j0 + PANEL_W) * k],
                None => {
                    // panel[t][jj] = W[j0 + jj, t0 + t]: in 8×8 blocks where AVX2 is
                    // present (one element at a time it cost half the time of the
                    // products).
                    #[cfg(target_arch = "x86_64")]
                    let blocked =
                        super::transpose4(gm.w, j0 * k + t0, k, nt, nj, &mut panel, PANEL_W);
                    #[cfg(not(target_arch = "x86_64"))]
                    let blocked = false;
                    if !blocked {
                        for jj in 0..nj {
                            let wr = &gm.w[(j0 + jj) * k + t0..(j0 + jj) * k + t0 + nt];
                            for (t, &v) in wr.iter().enumerate() {
                                panel[t * PANEL_W + jj] = v;
                            }
                        }
                    }
                    &panel[..nt * PANEL_W]
                }
            };
            let lhs = Lhs {
                a: &x[t0..m * k],
                rs: k,
                cs: 1,
            };
            let rhs = Rhs { b, bs: PANEL_W };
            let mut dst = Dst {
                c: &mut *y,
                rs: n,
                c0: j0,
            };
            let d = Dims {
                m,
                n: nj,
                k: nt,
                start: Start::Load,
                clamp: (t0 + nt == k).then_some((gm.lo, gm.hi)),
            };
            gemm(lhs, rhs, &mut dst, d);
            t0 += nt;
        }
        j0 += nj;
    }
}

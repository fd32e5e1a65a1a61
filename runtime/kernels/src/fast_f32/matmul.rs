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
        let (k, n) = (gm.k, gm.oc);
        let key = (gm.w.as_ptr() as usize, n * k, FC_PANELS_KIND);
        crate::paths::note(crate::paths::Path::FcF32Panels);
        return crate::prepack::with_packed(
            key,
            &mut std::vec::Vec::new(),
            |v| pack_fc_panels(gm.w, n, k, v),
            |p| fc_parts(gm, x, m, y, Some(bytemuck::cast_slice(p))),
        );
    }
    fc_parts(gm, x, m, y, None)
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
        if let Some(p) = panels {
            let lhs = Lhs {
                a: &x[..m * k],
                rs: k,
                cs: 1,
            };
            let rhs = Rhs {
                b: &p[j0 * k..(j0 + PANEL_W) * k],
                bs: PANEL_W,
            };
            let mut dst = Dst {
                c: &mut *y,
                rs: n,
                c0: j0,
            };
            let d = Dims {
                m,
                n: nj,
                k,
                start: Start::Load,
                clamp: Some((gm.lo, gm.hi)),
            };
            gemm(lhs, rhs, &mut dst, d);
            j0 += nj;
            continue;
        }
        let mut t0 = 0;
        while t0 < k {
            let nt = PANEL_K.min(k - t0);
            // panel[t][jj] = W[j0 + jj, t0 + t]: in 8×8 blocks where AVX2 is present
            // (one element at a time it cost half the time of the products).
            #[cfg(target_arch = "x86_64")]
            let blocked = super::transpose4(gm.w, j0 * k + t0, k, nt, nj, &mut panel, PANEL_W);
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
            let lhs = Lhs {
                a: &x[t0..m * k],
                rs: k,
                cs: 1,
            };
            let rhs = Rhs {
                b: &panel[..nt * PANEL_W],
                bs: PANEL_W,
            };
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

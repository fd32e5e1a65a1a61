//! int8 FullyConnected on the GEMM micro-kernel of this module (x86_64 AVX2) or the rows ×
//! rows block of `neon_dot.rs` (aarch64: `sdot`, or `smlal` without the dot product),
//! bit-exact with `gemm::fc_i8` (`tests/exact_matmul.rs`, `tests/exact_neon.rs`).

use cairn_core::layout::Layout;
use cairn_core::{ExecError, OpCall, TensorMut};

use super::{
    gemm_simd, row_offset, simd_gemm_available, FOLD_MAX_OC, IM2COL_MAX_K, IM2COL_TILE, Q,
};
use crate::util::qp;

/// int8 FullyConnected (`x · Wᵀ`, W as [N, K]) through the GEMM micro-kernel, bit-exact
/// with `gemm::fc_i8`: 48 rows of x are transposed into the column tile the kernel reads
/// (K up to 2048), output channels are taken 512 at a time into a staging block, and the
/// [channels, rows] result is scattered back to row-major [rows, N]. `None` when the
/// micro-kernel is absent, K is too long, or there are too few rows to fill a tile.
/// FullyConnected.f32-w8 on the FC block (AVX2 hosts with `std`), bit-exact with
/// `gemm::fc_w8`; `None` where the reference runs.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub fn fc_w8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    if !super::avx2::available() {
        return None;
    }
    let xt = call.req(0).ok()?;
    let wt = call.req(1).ok()?;
    let (n, k) = (wt.info.shape.dim(0), wt.info.shape.dim(1));
    if wt.info.layout != Layout::Plain || k == 0 || n == 0 || k.checked_mul(n)? > super::mm::MAX_KN
    {
        return None;
    }
    let m = xt.info.numel() / k;
    let x = xt.f32s().ok()?;
    let w = wt.i8s().ok()?;
    let sw = crate::gemm::w8_scales(&wt.info);
    let bias = match call.input(2) {
        Some(b) => Some(b.f32s().ok()?),
        None => None,
    };
    let clamp = crate::util::f32_clamp(call.param(0), call.param(1));
    let y = match out.f32s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if x.len() < m * k
        || w.len() < n * k
        || y.len() < m * n
        || (sw.len() != 1 && sw.len() < n)
        || bias.is_some_and(|b| b.len() < n)
        || m.checked_mul(k)? > super::mm::MAX_KN
    {
        return None;
    }
    crate::paths::note(crate::paths::Path::FcW8);
    let op = super::mm::W8Fc {
        x: &x[..m * k],
        m,
        w,
        n,
        k,
        sw,
        bias,
        clamp,
    };
    if m <= 2 {
        super::gemv_w8::fc_w8_gemv(&op, y);
    } else {
        super::mm::fc_w8_rows(&op, y);
    }
    Some(Ok(()))
}

pub fn fc_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    // AVX2 hosts with std: weights packed per call for the implicit GEMM's block.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if let Some(r) = super::mm::fc_i8(call, out) {
        return Some(r);
    }
    let xt = call.req(0).ok()?;
    let wt = call.req(1).ok()?;
    let (n, k) = (wt.info.shape.dim(0), wt.info.shape.dim(1));
    if wt.info.layout != Layout::Plain || k == 0 {
        return None;
    }
    let m = xt.info.numel() / k;
    // One or two rows (a classifier's head, a recurrent layer's step): stream each weight
    // row once. The GEMV takes longer rows than the tiles (an LSTM step over a flattened
    // 512×8 feature map is 4096 long).
    #[cfg(target_arch = "x86_64")]
    let gemv = m <= 2 && k <= super::gemv::MAX_K && super::avx2::available();
    // aarch64: every FullyConnected runs on the rows × rows block of `neon_dot.rs`.
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    let gemv = true;
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    let gemv = false;
    if !gemv && (k > IM2COL_MAX_K || !simd_gemm_available() || m < FC_MIN_ROWS) {
        return None;
    }
    let q = match fc_operands(call, out) {
        Ok(q) => q,
        Err(e) => return Some(Err(e)),
    };
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if q.x.len() < m * k || q.w.len() < n * k || q.scales.len() < n || y.len() < m * n {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if gemv {
        crate::paths::note(crate::paths::Path::Gemv);
        super::gemv::fc(&q, m, n, k, y);
        return Some(Ok(()));
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    return {
        let path = if m <= 2 {
            crate::paths::Path::Gemv
        } else {
            crate::paths::Path::FcBlock
        };
        crate::paths::note(path);
        super::neon_dot::fc(&q, m, n, k, y);
        Some(Ok(()))
    };
    #[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
    {
        if k <= 256 {
            fc_tiles::<256>(&q, m, n, k, y);
        } else {
            fc_tiles::<IM2COL_MAX_K>(&q, m, n, k, y);
        }
        Some(Ok(()))
    }
}

/// Rows below which the per-row dot products of `gemm::fc_i8` do as well.
const FC_MIN_ROWS: usize = 4;

fn fc_operands<'a>(call: &OpCall<'a>, out: &TensorMut<'_>) -> Result<Q<'a>, ExecError> {
    let xt = call.req(0)?;
    Ok(Q {
        x: xt.i8s()?,
        w: call.req(1)?.i8s()?,
        wp: None,
        offs: &[],
        bias: match call.input(2) {
            Some(b) => Some(b.i32s()?),
            None => None,
        },
        scales: call.req(3)?.f32s()?,
        neg: None,
        zx: qp(&xt.info).1,
        zy: qp(&out.info).1,
        lo: call.param(0),
        hi: call.param(1),
    })
}

#[cfg_attr(
    all(target_arch = "aarch64", target_feature = "neon"),
    allow(dead_code)
)]
#[inline(never)]
fn fc_tiles<const KMAX: usize>(q: &Q<'_>, m: usize, n: usize, k: usize, y: &mut [i8]) {
    let mut tile = [[0i8; IM2COL_TILE]; KMAX];
    let tile = tile.as_flattened_mut();
    let mut stage = [0i8; FOLD_MAX_OC * IM2COL_TILE];
    let mut offs = [0i32; FOLD_MAX_OC];
    for m0 in (0..m).step_by(IM2COL_TILE) {
        let len = IM2COL_TILE.min(m - m0);
        for j in 0..len {
            let xr = &q.x[(m0 + j) * k..(m0 + j + 1) * k];
            for (kk, &v) in xr.iter().enumerate() {
                tile[kk * IM2COL_TILE + j] = v;
            }
        }
        for o0 in (0..n).step_by(FOLD_MAX_OC) {
            let nb = FOLD_MAX_OC.min(n - o0);
            let mut qs = Q {
                x: &[],
                w: &q.w[o0 * k..(o0 + nb) * k],
                wp: None,
                offs: &[],
                bias: q.bias.map(|b| &b[o0..o0 + nb]),
                scales: &q.scales[o0..o0 + nb],
                neg: q.neg.map(|n| &n[o0..o0 + nb]),
                ..*q
            };
            for (o, v) in offs.iter_mut().enumerate().take(nb) {
                *v = row_offset(&qs, o, k);
            }
            qs.offs = &offs[..nb];
            gemm_simd(
                tile,
                IM2COL_TILE,
                &qs,
                k,
                nb,
                len,
                &mut stage,
                IM2COL_TILE,
                0,
            );
            for o in 0..nb {
                let row = &stage[o * IM2COL_TILE..o * IM2COL_TILE + len];
                for (j, &v) in row.iter().enumerate() {
                    y[(m0 + j) * n + o0 + o] = v;
                }
            }
        }
    }
}

//! The entry for the f32 fast paths of `deconv.rs`, `matmul.rs`, `unary.rs`, `binary.rs`
//! (Add/Sub/Mul/Div/PRelu and the f32 `Binary` functions), `softmax.rs`, `layer_norm.rs`
//! `pool.rs`, `topk.rs` and `recurrent.rs` (called from `CpuBackend`'s dispatch), and the per-thread
//! count of ops that these and the large-patch, few-channel Conv and multi-row
//! FullyConnected paths ran, by which tests check that a path was taken.

use cairn_core::{ExecError, OpCall, OpKind, TensorMut};

/// Whether `kind` has a path here (the caller routes its f32 variant to `execute`).
pub fn covers(kind: OpKind) -> bool {
    use OpKind::*;
    matches!(
        kind,
        ConvTranspose
            | BatchMatMul
            | Unary
            | Softmax
            | LayerNorm
            | Add
            | Sub
            | Mul
            | Div
            | PRelu
            | MaxPool
            | GlobalAveragePool
            | ReduceMean
            | Binary
            | Reduce
            | Recurrent
    )
}

/// An f32 op through one of these fast paths, or `None` (the caller runs the reference).
pub fn execute(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    match call.kind {
        OpKind::ConvTranspose => super::deconv::conv_transpose_f32(call, out),
        OpKind::BatchMatMul => super::matmul::bmm_f32(call, out),
        OpKind::Unary => super::unary::unary_f32(call, out),
        OpKind::Softmax => super::softmax::softmax_f32(call, out),
        OpKind::LayerNorm => super::layer_norm::layer_norm_f32(call, out),
        OpKind::MaxPool => super::pool::max_pool_f32(call, out),
        OpKind::GlobalAveragePool | OpKind::ReduceMean => super::pool::mean_f32(call, out),
        OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div | OpKind::PRelu => {
            super::binary::binary_f32(call, out)
        }
        OpKind::Binary => super::binary::math_f32(call, out),
        OpKind::Recurrent => super::recurrent::recurrent_f32(call, out),
        #[cfg(feature = "std")]
        OpKind::Reduce => {
            super::topk::top_k(call, out).or_else(|| crate::reduce::reduce_fast(call, out))
        }
        #[cfg(not(feature = "std"))]
        OpKind::Reduce => crate::reduce::reduce_fast(call, out),
        _ => None,
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    static TAKEN: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Count one op run by a path of this module's family (with `std`; a no-op without).
#[inline]
pub(super) fn taken() {
    #[cfg(feature = "std")]
    TAKEN.with(|t| t.set(t.get() + 1));
}

/// Ops this thread has run through these f32 fast paths (and the large-patch Conv and
/// multi-row FullyConnected GEMMs).
#[cfg(feature = "std")]
pub fn taken_count() -> u64 {
    TAKEN.with(|t| t.get())
}

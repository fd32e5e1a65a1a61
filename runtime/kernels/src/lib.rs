//! cairn-kernels: the CPU backend.
//!
//! The scalar kernels here are the reference: every faster path (SIMD, GPU, NPU) is tested
//! against them on the same inputs. int8 arithmetic follows ONNX Runtime's (see
//! `cairn_core::quant`); f32 follows the ONNX operator specs.
//!
//! Kernels trust the plan: shapes, dtypes and offsets were checked by `Model::parse`.
//! They still never panic on a bad call: slices are obtained through checked casts and a
//! mismatch is an `ExecError`.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

mod conv;
mod eltwise;
#[allow(unsafe_code)]
mod fast;
pub use eltwise::unary_value;
mod gemm;
#[cfg(feature = "std")]
pub mod host;
mod movement;
mod norm;
mod pool;
mod quantize;
mod resize;
pub mod util;

use cairn_core::kernel::{KernelId, Variant};
use cairn_core::{Backend, ExecError, OpCall, OpKind, TensorMut};

/// The CPU backend: fast paths where they exist (SIMD on x86_64 with AVX2, detected at run
/// time with `std`), the reference kernels for everything else. Results equal the
/// reference bit for bit (int8) — see `RefBackend`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// The reference kernels alone: the truth every faster path is tested against.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefBackend;

impl Backend for RefBackend {
    fn name(&self) -> &'static str {
        "cpu-ref"
    }

    fn supports(&self, k: KernelId) -> bool {
        supports(k)
    }

    fn execute(&mut self, call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
        execute_reference(call, out)
    }
}

impl CpuBackend {
    pub const fn new() -> CpuBackend {
        CpuBackend
    }
}

/// Kernels this backend has: every op in both flavours, except the f32-only ones.
pub fn supports(k: KernelId) -> bool {
    use OpKind::*;
    match (k.kind, k.variant) {
        (Div | PRelu | Unary, Variant::F32) => true,
        (Div | PRelu | Unary, _) => false,
        (Lut, Variant::I8) => true,
        (Lut, _) => false,
        (Conv, _) => true,
        (_, Variant::F32 | Variant::I8) => true,
        _ => false,
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports(&self, k: KernelId) -> bool {
        supports(k)
    }

    fn execute(&mut self, call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
        if call.kind == OpKind::Conv && matches!(call.kernel.variant, Variant::I8 | Variant::DwI8) {
            if let Some(r) = fast::conv_i8(call, &mut out) {
                return r;
            }
        }
        execute_reference(call, out)
    }
}

/// Run one op with the reference kernels.
pub fn execute_reference(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    use OpKind::*;
    let q = matches!(call.kernel.variant, Variant::I8 | Variant::DwI8);
    match call.kind {
        Conv if q => conv::conv_i8(call, out),
        Conv => conv::conv_f32(call, out),
        ConvTranspose if q => conv::conv_transpose_i8(call, out),
        ConvTranspose => conv::conv_transpose_f32(call, out),
        FullyConnected if q => gemm::fc_i8(call, out),
        FullyConnected => gemm::fc_f32(call, out),
        BatchMatMul if q => gemm::bmm_i8(call, out),
        BatchMatMul => gemm::bmm_f32(call, out),
        Add | Sub | Mul if q => eltwise::binary_i8(call, out),
        Add | Sub | Mul | Div | PRelu => eltwise::binary_f32(call, out),
        Unary => eltwise::unary_f32(call, out),
        Lut => eltwise::lut_i8(call, out),
        Concat => movement::concat(call, out),
        Reshape => movement::reshape(call, out),
        Transpose => movement::transpose(call, out),
        Slice => movement::slice(call, out),
        Split => movement::split(call, out),
        Pad => movement::pad(call, out),
        MaxPool => pool::max_pool(call, out),
        AveragePool => pool::avg_pool(call, out),
        GlobalAveragePool | ReduceMean => pool::reduce_mean(call, out),
        Resize => resize::resize(call, out),
        Softmax => norm::softmax(call, out),
        LayerNorm => norm::layer_norm(call, out),
        Quantize => quantize::quantize(call, out),
        Dequantize => quantize::dequantize(call, out),
    }
}

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

/// `stack_buf!(name: T, n, SMALL, MAX)` binds `name: &mut [T]`, a zeroed scratch of
/// `n` elements (at most `MAX`) on the stack: an array of `SMALL` when `n` fits, else one
/// of `MAX`, and only the array used is zeroed. Kernels sized their scratch for the
/// largest shape; zeroing 8 to 48 KiB per call was a tenth of a run of hundreds of small
/// ops (a recurrent cell's FullyConnected, an attention head's MatMul).
#[allow(unused_macros)]
macro_rules! stack_buf {
    ($name:ident: $t:ty, $n:expr, $small:expr, $max:expr) => {
        let (mut small, mut big);
        let n: usize = $n;
        let $name: &mut [$t] = if n <= $small {
            small = [<$t>::default(); $small];
            &mut small[..n]
        } else {
            big = [<$t>::default(); $max];
            &mut big[..n.min($max)]
        };
    };
}

mod conv;
#[cfg(all(feature = "dsp", target_arch = "arm"))]
#[allow(unsafe_code)]
mod dsp;
#[cfg(all(feature = "dsp", target_arch = "arm"))]
#[allow(unsafe_code)]
mod dsp_conv;
#[cfg(all(feature = "dsp", target_arch = "arm", target_abi = "eabihf"))]
#[allow(unsafe_code)]
mod dsp_elt;
mod eltwise;
#[allow(unsafe_code)]
mod fast;
pub mod paths;
#[cfg(feature = "std")]
pub mod prepack;
#[cfg(all(
    feature = "vfma",
    not(feature = "std"),
    target_arch = "arm",
    target_abi = "eabihf"
))]
#[allow(unsafe_code)]
mod vfma;
#[cfg(all(feature = "vfma", target_arch = "arm", not(target_abi = "eabihf")))]
compile_error!("the `vfma` feature needs a hard-float (eabihf) Arm target with an FPU");
mod fast_conv_rows;
mod fast_deconv;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[allow(unsafe_code)]
mod fast_layer_norm;
// Two-activation MatMul for hosts and phones; microcontrollers keep the reference.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod fast_matmul;
mod fast_resize;
// Its AVX2 column body (x86_64) is the only unsafe code in it.
#[allow(unsafe_code)]
mod fast_softmax;
// Its vector bodies exist on x86_64 only; elsewhere every entry returns `None`.
#[allow(unsafe_code)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod fast_elt;
// f32 Conv/FullyConnected for hosts and phones; microcontrollers keep the reference.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[allow(unsafe_code)]
mod fast_f32;
#[cfg(feature = "std")]
mod fast_gather;
pub use eltwise::unary_value;
/// Resize's input coordinate for an output coordinate (the reference's transform), for
/// accelerators that must compute the same taps.
pub use resize::source as resize_source;
mod gather;
mod gemm;
pub mod hetero;
#[cfg(feature = "std")]
pub mod host;
mod logic;
mod movement;
mod norm;
pub mod par;
mod pool;
mod quantize;
mod recurrent;
mod reduce;
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
        (Div | PRelu | Unary | Binary | Where | Recurrent, v) => v == Variant::F32,
        (Lut, v) => v == Variant::I8,
        (Conv, v) => v != Variant::W8F32,
        (FullyConnected, Variant::W8F32) => true,
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
        if let Some(r) = execute_fast(call, &mut out) {
            return r;
        }
        execute_reference(call, out)
    }
}

/// The fast paths (SIMD where the CPU has it), or `None` where none covers the op.
fn execute_fast(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let q = matches!(call.kernel.variant, Variant::I8 | Variant::DwI8);
    match call.kind {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        k if call.kernel.variant == Variant::F32 && fast_f32::dispatch::covers(k) => {
            fast_f32::dispatch::execute(call, out)
        }
        OpKind::Conv if q || call.kernel.variant == Variant::PackedI8 => {
            fast::conv_i8(call, out).or_else(|| fast_conv_rows::conv_i8(call, out))
        }
        OpKind::ConvTranspose if q => fast_deconv::conv_transpose_i8(call, out),
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        OpKind::Pad => movement::pad_fast(call, out),
        OpKind::Resize => fast_resize::resize(call, out),
        OpKind::Add | OpKind::Mul if q => fast_elt::binary_i8(call, out),
        OpKind::Quantize => fast_elt::quantize(call, out),
        OpKind::Dequantize => fast_elt::dequantize(call, out),
        #[cfg(any(
            target_arch = "x86_64",
            all(target_arch = "aarch64", target_feature = "neon")
        ))]
        OpKind::FullyConnected if q => fast::fc_i8(call, out),
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        OpKind::FullyConnected if call.kernel.variant == Variant::W8F32 => fast::fc_w8(call, out),
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        OpKind::BatchMatMul if q => fast_matmul::bmm_i8(call, out),
        OpKind::Lut => fast_elt::lut_i8(call, out),
        #[cfg(feature = "std")]
        OpKind::Gather => fast_gather::gather(call, out),
        OpKind::MaxPool => fast_elt::max_pool_i8(call, out),
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        OpKind::AveragePool if q => pool::avg_pool_i8_fast(call, out),
        OpKind::GlobalAveragePool | OpKind::ReduceMean if q => fast_elt::reduce_mean_i8(call, out),
        OpKind::Softmax if q => fast_softmax::softmax_i8(call, out),
        OpKind::Reduce => reduce::reduce_fast(call, out),
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        OpKind::LayerNorm if q => fast_layer_norm::layer_norm_i8(call, out),
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        OpKind::Conv if matches!(call.kernel.variant, Variant::F32 | Variant::DwF32) => {
            fast_f32::conv_f32(call, out)
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        OpKind::FullyConnected if call.kernel.variant == Variant::F32 => {
            fast_f32::fc_f32(call, out)
        }
        _ => None,
    }
}

/// Ops this thread has run through the f32 fast paths of `fast_f32/` for ConvTranspose,
/// BatchMatMul, Unary, Add/Sub/Mul/Div/PRelu, Softmax, MaxPool, mean pooling, the AVX2
/// depthwise Conv, large-patch and few-channel Conv and multi-row FullyConnected (0 where
/// there are none): tests check with it that a path was taken.
#[cfg(feature = "std")]
pub fn f32_fast_ops() -> u64 {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    return fast_f32::dispatch::taken_count();
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    0
}

/// Run one op with the reference kernels.
pub fn execute_reference(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    use OpKind::*;
    let q = matches!(call.kernel.variant, Variant::I8 | Variant::DwI8);
    match call.kind {
        Conv if call.kernel.variant == Variant::PackedI8 => conv::conv_i8_packed(call, out),
        Conv if q => conv::conv_i8(call, out),
        Conv => conv::conv_f32(call, out),
        ConvTranspose if q => conv::conv_transpose_i8(call, out),
        ConvTranspose => conv::conv_transpose_f32(call, out),
        FullyConnected if q => gemm::fc_i8(call, out),
        FullyConnected if call.kernel.variant == Variant::W8F32 => gemm::fc_w8(call, out),
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
        Pad => movement::pad_reference(call, out),
        MaxPool => pool::max_pool(call, out),
        AveragePool => pool::avg_pool(call, out),
        GlobalAveragePool | ReduceMean => pool::reduce_mean(call, out),
        Resize => resize::resize(call, out),
        Softmax => norm::softmax(call, out),
        LayerNorm => norm::layer_norm(call, out),
        Quantize => quantize::quantize(call, out),
        Dequantize => quantize::dequantize(call, out),
        Binary => logic::binary(call, out),
        Where => logic::where_select(call, out),
        Reduce => reduce::reduce(call, out),
        Gather => gather::gather(call, out),
        Tile => gather::tile(call, out),
        Recurrent => recurrent::recurrent(call, out),
    }
}

/// Kernel families for [`Select`]: a device links only the kernels its models use.
pub mod family {
    use cairn_core::OpKind;

    /// Conv: one-group, grouped and depthwise.
    pub const CONV: u32 = 1 << 0;
    /// FullyConnected.
    pub const GEMM: u32 = 1 << 1;
    /// Add, Sub, Mul (+ Div, PRelu, f32 unary functions), int8 lookup tables.
    pub const ELTWISE: u32 = 1 << 2;
    /// Concat, Reshape, Pad.
    pub const MOVEMENT: u32 = 1 << 3;
    /// MaxPool, AveragePool, GlobalAveragePool, ReduceMean.
    pub const POOL: u32 = 1 << 4;
    /// Resize and ConvTranspose: decoders, segmentation and detection heads.
    pub const UPSAMPLE: u32 = 1 << 5;
    /// Softmax.
    pub const NORM: u32 = 1 << 6;
    /// Quantize, Dequantize (the f32 edges of an int8 model).
    pub const QUANTIZE: u32 = 1 << 7;
    /// The f32 variants of the families above (an int8 model needs none).
    pub const F32: u32 = 1 << 8;
    /// The CPU backend's fast paths (convolutions, int8 Add/Mul, lookup tables, MaxPool, Quantize) for the
    /// families above that are enabled.
    pub const FAST: u32 = 1 << 9;
    /// int8 Conv with pre-packed weights (`Layout::Pairs6`, from
    /// `ModelBuilder::pack_conv_weights` / `cairn convert --pack`), with `CONV`.
    pub const PACKED: u32 = 1 << 10;
    /// BatchMatMul and LayerNormalization: transformer blocks.
    pub const ATTENTION: u32 = 1 << 11;
    /// Transpose, Slice, Split: channel shuffles (ShuffleNet) and tensor surgery.
    pub const SHUFFLE: u32 = 1 << 12;
    /// Pow/Max/Min, comparisons and logic (`Binary`), `Where`, the reductions beyond
    /// ReduceMean (`Reduce`, ArgMax): f32 math and masks, as in transformers and
    /// detection post-processing.
    pub const MATH: u32 = 1 << 13;
    /// Gather (embeddings), GatherElements, Tile/Expand.
    pub const INDEX: u32 = 1 << 14;
    /// `Recurrent`: LSTM, GRU and RNN layers over a sequence (f32, with `F32`).
    pub const RECURRENT: u32 = 1 << 15;
    pub const ALL: u32 = (1 << 16) - 1;
    /// An int8 CNN classifier (MobileNet, ResNet, EfficientNet-Lite, SqueezeNet kinds):
    /// convolutions (depthwise too), elementwise, pooling, reshapes/concats/pads,
    /// FullyConnected, Softmax, Quantize/Dequantize. A ShuffleNet also needs `SHUFFLE`.
    pub const CNN_I8: u32 = CONV | GEMM | ELTWISE | MOVEMENT | POOL | NORM | QUANTIZE;
    /// An int8 MLP: FullyConnected, Softmax, Quantize/Dequantize.
    pub const MLP_I8: u32 = GEMM | NORM | QUANTIZE;

    /// The family that holds `kind` (read from a table of 16-bit entries: a few dozen
    /// bytes less flash than the match compiles to).
    pub const fn of(kind: OpKind) -> u32 {
        FAMILY_OF[kind as usize] as u32
    }

    const _: () = assert!(ALL <= u16::MAX as u32);

    const FAMILY_OF: [u16; cairn_core::op::OP_KIND_COUNT] = {
        let mut table = [0u16; cairn_core::op::OP_KIND_COUNT];
        let mut code = 0;
        while code < table.len() {
            if let Some(kind) = OpKind::from_code(code as u16) {
                table[code] = family_of(kind) as u16;
            }
            code += 1;
        }
        table
    };

    const fn family_of(kind: OpKind) -> u32 {
        use OpKind::*;
        match kind {
            Conv => CONV,
            FullyConnected => GEMM,
            BatchMatMul | LayerNorm => ATTENTION,
            Add | Sub | Mul | Div | PRelu | Unary | Lut => ELTWISE,
            Concat | Reshape | Pad => MOVEMENT,
            Transpose | Slice | Split => SHUFFLE,
            MaxPool | AveragePool | GlobalAveragePool | ReduceMean => POOL,
            Resize | ConvTranspose => UPSAMPLE,
            Softmax => NORM,
            Quantize | Dequantize => QUANTIZE,
            Binary | Where | Reduce => MATH,
            Gather | Tile => INDEX,
            Recurrent => RECURRENT,
        }
    }

    /// The op kinds of the families in `f`, for `Model::parse_kinds`: firmware built with
    /// `Select<F>` loads models with `Model::parse_kinds::<{ family::kinds(F) }>` and links
    /// the load checks of those kinds only.
    pub const fn kinds(f: u32) -> cairn_core::op::Kinds {
        let mut set = 0;
        let mut code = 0;
        while code < cairn_core::op::OP_KIND_COUNT as u16 {
            if let Some(kind) = OpKind::from_code(code) {
                if f & of(kind) != 0 {
                    set |= cairn_core::op::kind_bit(kind);
                }
            }
            code += 1;
        }
        set
    }
}

/// A CPU backend with only the kernel families in `F` (see [`family`]): the others are
/// not linked, and a model that needs one is refused by `Interpreter::new` (unsupported
/// kernel), before anything runs. Same results as [`CpuBackend`] for what it has.
#[derive(Clone, Copy, Debug, Default)]
pub struct Select<const F: u32>;

impl<const F: u32> Select<F> {
    /// The kinds of the families in `F`, computed at compile time.
    const KINDS: cairn_core::op::Kinds = family::kinds(F);

    const fn has(kind: OpKind, variant: Variant) -> bool {
        let float = matches!(variant, Variant::F32 | Variant::W8F32)
            && !matches!(kind, OpKind::Quantize | OpKind::Dequantize);
        let packed = matches!(variant, Variant::PackedI8);
        // A bit test against a constant set (not a table lookup of each kind's family).
        cairn_core::op::has_kind(Self::KINDS, kind)
            && (!float || F & family::F32 != 0)
            && (!packed || F & family::PACKED != 0)
    }
}

impl<const F: u32> Backend for Select<F> {
    fn name(&self) -> &'static str {
        "cpu-select"
    }

    fn supports(&self, k: KernelId) -> bool {
        supports(k) && Self::has(k.kind, k.variant)
    }

    fn execute(&mut self, call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
        use OpKind::*;
        if !Self::has(call.kind, call.kernel.variant) {
            return Err(ExecError::Unsupported(call.kernel));
        }
        let q = matches!(call.kernel.variant, Variant::I8 | Variant::DwI8);
        // Each arm is behind a constant test, so a disabled family's code is never
        // referenced and the linker drops it.
        if F & family::FAST != 0 {
            // Only the enabled families' fast paths are referenced (and linked).
            let packed = F & family::PACKED != 0 && call.kernel.variant == Variant::PackedI8;
            let fast = match call.kind {
                Conv if F & family::CONV != 0 && (q || packed) => fast::conv_i8(call, &mut out),
                ConvTranspose if F & family::UPSAMPLE != 0 && q => {
                    fast_deconv::conv_transpose_i8(call, &mut out)
                }
                Resize if F & family::UPSAMPLE != 0 => fast_resize::resize(call, &mut out),
                Add | Mul if F & family::ELTWISE != 0 && q => fast_elt::binary_i8(call, &mut out),
                Quantize if F & family::QUANTIZE != 0 => fast_elt::quantize(call, &mut out),
                Dequantize if F & family::QUANTIZE != 0 => fast_elt::dequantize(call, &mut out),
                Lut if F & family::ELTWISE != 0 => fast_elt::lut_i8(call, &mut out),
                MaxPool if F & family::POOL != 0 => fast_elt::max_pool_i8(call, &mut out),
                #[cfg(all(feature = "dsp", target_arch = "arm"))]
                GlobalAveragePool if F & family::POOL != 0 && q => {
                    Some(pool::reduce_mean_i8_by(call, &mut out, dsp::sum_i8))
                }
                #[cfg(target_arch = "x86_64")]
                GlobalAveragePool | ReduceMean if F & family::POOL != 0 && q => {
                    fast_elt::reduce_mean_i8(call, &mut out)
                }
                _ => None,
            };
            if let Some(r) = fast {
                return r;
            }
        }
        match call.kind {
            Conv if F & family::PACKED != 0 && call.kernel.variant == Variant::PackedI8 => {
                conv::conv_i8_packed(call, out)
            }
            Conv if F & family::CONV != 0 && q => conv::conv_i8(call, out),
            FullyConnected if F & family::GEMM != 0 && q => gemm::fc_i8(call, out),
            Add | Sub | Mul if F & family::ELTWISE != 0 && q => eltwise::binary_i8(call, out),
            Lut if F & family::ELTWISE != 0 => eltwise::lut_i8(call, out),
            Reshape if F & family::MOVEMENT != 0 => movement::reshape(call, out),
            Concat if F & family::MOVEMENT != 0 => movement::concat(call, out),
            Pad if F & family::MOVEMENT != 0 => movement::pad(call, out),
            MaxPool if F & family::POOL != 0 && q => pool::max_pool_i8(call, out),
            AveragePool if F & family::POOL != 0 && q => pool::avg_pool_i8(call, out),
            GlobalAveragePool | ReduceMean if F & family::POOL != 0 && q => {
                pool::reduce_mean_i8(call, out)
            }
            Softmax if F & family::NORM != 0 && q => norm::softmax_i8(call, out),
            Quantize if F & family::QUANTIZE != 0 => quantize::quantize(call, out),
            Dequantize if F & family::QUANTIZE != 0 => quantize::dequantize(call, out),
            Transpose if F & family::SHUFFLE != 0 => movement::transpose(call, out),
            Slice if F & family::SHUFFLE != 0 => movement::slice(call, out),
            Split if F & family::SHUFFLE != 0 => movement::split(call, out),
            BatchMatMul if F & family::ATTENTION != 0 && q => gemm::bmm_i8(call, out),
            ConvTranspose if F & family::UPSAMPLE != 0 && q => conv::conv_transpose_i8(call, out),
            LayerNorm if F & family::ATTENTION != 0 => norm::layer_norm(call, out),
            Resize if F & family::UPSAMPLE != 0 => resize::resize(call, out),
            Reduce if F & family::MATH != 0 && q => reduce::reduce(call, out),
            Gather if F & family::INDEX != 0 && q => gather::gather(call, out),
            Tile if F & family::INDEX != 0 && q => gather::tile(call, out),
            // The f32 variants through the full table, only when asked for (a constant test:
            // without F32 the table is not linked).
            _ if F & family::F32 != 0 => execute_reference(call, out),
            _ => Err(ExecError::Unsupported(call.kernel)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::op::{has_kind, OP_KIND_COUNT};

    /// `family::kinds` and `Select` agree on every kind, each kind is in exactly one
    /// family, and the families a CNN classifier leaves out are refused by its backend.
    #[test]
    fn families_partition_the_kinds() {
        let fams = [
            family::CONV,
            family::GEMM,
            family::ELTWISE,
            family::MOVEMENT,
            family::POOL,
            family::UPSAMPLE,
            family::NORM,
            family::QUANTIZE,
            family::ATTENTION,
            family::SHUFFLE,
            family::MATH,
            family::INDEX,
            family::RECURRENT,
        ];
        for code in 0..OP_KIND_COUNT as u16 {
            let Some(kind) = OpKind::from_code(code) else {
                continue;
            };
            let holders = fams.iter().filter(|&&f| has_kind(family::kinds(f), kind));
            assert_eq!(holders.count(), 1, "{kind:?}");
            let k = KernelId {
                kind,
                variant: Variant::I8,
            };
            let in_cnn = has_kind(family::kinds(family::CNN_I8), kind);
            assert_eq!(
                Select::<{ family::CNN_I8 }>.supports(k),
                in_cnn && supports(k)
            );
        }
        for kind in [
            OpKind::BatchMatMul,
            OpKind::LayerNorm,
            OpKind::ConvTranspose,
            OpKind::Resize,
            OpKind::Transpose,
        ] {
            assert!(!has_kind(family::kinds(family::CNN_I8), kind), "{kind:?}");
            assert!(has_kind(family::kinds(family::ALL), kind), "{kind:?}");
        }
    }
}

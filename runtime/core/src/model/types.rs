//! The dtype/quantization rules of each op (checked once at load), the kernel an op
//! needs, and MAC counts.

use super::{Model, OpView};
use crate::error::OpProblem;
use crate::kernel::{KernelId, Variant};
use crate::layout::Layout;
use crate::op::{self, OpKind};
use crate::{DType, Quant, Shape, TensorInfo};

impl<'a> Model<'a> {
    /// The dtype rules of the kinds in `K` (the caller has checked `op.kind` is one).
    pub(super) fn check_types<const K: op::Kinds>(
        &self,
        op: &OpView<'a>,
    ) -> Result<KernelId, OpProblem> {
        use OpKind::*;
        let has = |k: OpKind| op::has_kind(K, k);
        let info = |k: usize| op.input(k).map(|t| self.tensor(t).info);
        let x = info(0).ok_or(OpProblem::Arity)?;
        let y = self.tensor(op.output(0)).info;
        let per_tensor = |i: &TensorInfo| matches!(i.quant, Quant::PerTensor { .. });
        let q8 = x.dtype == DType::I8;
        let same_all = (0..op.n_in).all(|k| info(k).is_none_or(|i| i.dtype == x.dtype))
            && (0..op.n_out).all(|k| self.tensor(op.output(k)).info.dtype == x.dtype);
        let f32_only = x.dtype == DType::F32 && same_all;
        let dt_ok = match op.kind {
            Conv | ConvTranspose | FullyConnected => {
                let w = info(1).ok_or(OpProblem::Arity)?;
                if q8 {
                    let sym = match w.quant {
                        Quant::PerTensor { zero_point, .. } => zero_point == 0,
                        Quant::PerAxis {
                            zero_points, axis, ..
                        } => {
                            axis == if op.kind == ConvTranspose { 1 } else { 0 }
                                && zero_points.iter().all(|&z| z == 0)
                        }
                        Quant::None => false,
                    };
                    // The multipliers' count (one per output channel, or a Conv's two:
                    // `op::conv_multipliers`) is a shape rule (`op::infer_output`).
                    let rq = info(3).ok_or(OpProblem::Arity)?;
                    w.dtype == DType::I8
                        && sym
                        && per_tensor(&x)
                        && y.dtype == DType::I8
                        && per_tensor(&y)
                        && info(2).is_none_or(|b| b.dtype == DType::I32)
                        && rq.dtype == DType::F32
                        && self.is_const(op.input(3))
                } else {
                    // FullyConnected.f32-w8 (f32 rows quantized at run time, symmetric int8
                    // weights, K ≤ 65,536 so that the i32 sums cannot overflow): linked with
                    // the general kinds only, so CNN firmware keeps its size.
                    let w_ok = w.dtype == DType::F32
                        || (K & op::PLAIN_KINDS != 0
                            && op.kind == FullyConnected
                            && w8_weights(&w));
                    x.dtype == DType::F32
                        && w_ok
                        && y.dtype == DType::F32
                        && info(2).is_none_or(|b| b.dtype == DType::F32)
                        && op.n_in <= 3
                }
            }
            BatchMatMul if has(BatchMatMul) => {
                if q8 {
                    let b = info(1).ok_or(OpProblem::Arity)?;
                    let rq = info(2).ok_or(OpProblem::Arity)?;
                    b.dtype == DType::I8
                        && per_tensor(&x)
                        && per_tensor(&b)
                        && y.dtype == DType::I8
                        && per_tensor(&y)
                        && rq.dtype == DType::F32
                        && rq.numel() == 1
                        && self.is_const(op.input(2))
                } else {
                    op.n_in == 2 && f32_only
                }
            }
            Add | Sub | Mul => {
                same_all
                    && (!q8
                        || (0..2).all(|k| info(k).is_some_and(|i| per_tensor(&i)))
                            && per_tensor(&y))
                    && (q8 || x.dtype == DType::F32)
            }
            Div | PRelu | Unary => f32_only,
            Concat | Reshape | Transpose | Slice | Split | Pad | MaxPool | Resize
                if has(op.kind) =>
            {
                // Data movement keeps the quantization, except Concat/Resize which requantize.
                let keep = matches!(op.kind, Concat | Resize)
                    || (0..op.n_out).all(|k| self.tensor(op.output(k)).info.quant == x.quant);
                same_all
                    && keep
                    && (!q8 || (0..op.n_in).all(|k| info(k).is_some_and(|i| per_tensor(&i))))
            }
            AveragePool | GlobalAveragePool | ReduceMean if has(op.kind) => {
                same_all && (x.dtype == DType::F32 || (q8 && per_tensor(&x) && per_tensor(&y)))
            }
            Softmax if has(Softmax) => {
                // Flavour 1 (ORT's QLinearSoftmax arithmetic) reads a constant f32 exp table.
                let ort = op.param(3) == 1;
                let table_ok = info(1).is_none_or(|t| t.dtype == DType::F32)
                    && (!ort || (q8 && self.is_const(op.input(1))))
                    && (ort || op.n_inputs() == 1);
                table_ok
                    && y.dtype == x.dtype
                    && (x.dtype == DType::F32 || (q8 && per_tensor(&x) && per_tensor(&y)))
            }
            LayerNorm if has(LayerNorm) => {
                let g = info(1).ok_or(OpProblem::Arity)?;
                (x.dtype == DType::F32 || (q8 && per_tensor(&x) && per_tensor(&y)))
                    && y.dtype == x.dtype
                    && g.dtype == DType::F32
                    && info(2).is_none_or(|b| b.dtype == DType::F32)
            }
            Lut if has(Lut) => {
                let t = info(1).ok_or(OpProblem::Arity)?;
                q8 && y.dtype == DType::I8 && t.dtype == DType::I8 && self.is_const(op.input(1))
            }
            Quantize if has(Quantize) => {
                let ok_q = match y.quant {
                    Quant::PerTensor { .. } => true,
                    Quant::PerAxis { axis, .. } => axis < y.shape.rank(),
                    Quant::None => false,
                };
                // An unquantized i32 output: a float-to-int cast (truncation toward zero).
                let cast = y.dtype == DType::I32 && y.quant == Quant::None;
                x.dtype == DType::F32 && (matches!(y.dtype, DType::I8 | DType::U8) && ok_q || cast)
            }
            Dequantize if has(Dequantize) => {
                // An unquantized i32 reads as scale 1, zero point 0 (an int-to-float cast).
                let ok_q = !matches!(x.quant, Quant::None) || x.dtype == DType::I32;
                matches!(x.dtype, DType::I8 | DType::U8 | DType::I32)
                    && y.dtype == DType::F32
                    && ok_q
            }
            // int8 Gather/Tile and ReduceMax/Min move or select values: one per-tensor
            // quantization in and out.
            Gather | Tile | Reduce if K & op::PLAIN_KINDS != 0 && has(op.kind) && q8 => {
                let indices_ok =
                    op.kind != Gather || info(1).is_some_and(|i| i.dtype == DType::I32);
                let arg = op.kind == Reduce
                    && crate::op::ReduceFn::from_code(op.param(0)).is_some_and(|f| f.is_arg());
                // ArgMax/ArgMin of int8 values write i32 indices.
                let out_ok = if arg {
                    y.dtype == DType::I32 && y.quant == Quant::None
                } else {
                    y.dtype == DType::I8 && y.quant == x.quant
                };
                per_tensor(&x)
                    && out_ok
                    && indices_ok
                    && (op.kind != Reduce || arg || selects_nonempty(op, &x))
            }
            Binary | Where | Reduce | Gather | Tile | Recurrent
                if K & op::PLAIN_KINDS != 0 && has(op.kind) =>
            {
                let ins = (0..op.n_in).filter_map(info);
                let plain = ins.chain([y]).all(|i| i.quant == Quant::None);
                plain && self.plain_types_ok(op, &x, &y)
            }
            _ => false,
        };
        if !dt_ok {
            return Err(OpProblem::DType);
        }
        // int8 activation clamps must lie in the int8 range.
        if q8 {
            let slots = match op.kind {
                Conv => Some((op::conv::ACT_LO, op::conv::ACT_HI)),
                ConvTranspose => Some((op::conv::T_ACT_LO, op::conv::T_ACT_HI)),
                FullyConnected | Add | Sub | Mul => Some((0, 1)),
                _ => None,
            };
            if let Some((a, b)) = slots {
                let (lo, hi) = (op.param(a), op.param(b));
                if !(-128..=127).contains(&lo) || !(-128..=127).contains(&hi) || lo > hi {
                    return Err(OpProblem::Quant);
                }
            }
        }
        // A pre-packed tensor may only be the weights of a one-group int8 Conv.
        let group = if op.kind == Conv {
            op.param(op::conv::GROUP)
        } else {
            0
        };
        for k in 0..op.n_in {
            if info(k).is_some_and(|i| i.layout != Layout::Plain)
                && !(op.kind == Conv && k == 1 && q8 && group == 1)
            {
                return Err(OpProblem::Layout);
            }
        }
        let w_layout = if op.kind == Conv {
            info(1).map_or(Layout::Plain, |w| w.layout)
        } else {
            Layout::Plain
        };
        let id = kernel_id(op.kind, &x, &y, group, w_layout);
        if K & op::PLAIN_KINDS != 0 && op.kind == FullyConnected {
            return Ok(weights_variant(id, info(1).as_ref()));
        }
        Ok(id)
    }
}

/// Whether `w` can be the weights of a FullyConnected.f32-w8: int8 `[N, K]` with K at most
/// 65,536, symmetric (zero points 0), one scale or one per output row.
pub fn w8_weights(w: &TensorInfo) -> bool {
    let sym = match w.quant {
        Quant::PerTensor { zero_point, .. } => zero_point == 0,
        Quant::PerAxis {
            zero_points, axis, ..
        } => axis == 0 && zero_points.iter().all(|&z| z == 0),
        Quant::None => false,
    };
    w.dtype == DType::I8 && sym && w.shape.rank() == 2 && w.shape.dim(1) <= 1 << 16
}

/// `id` (a FullyConnected's kernel from [`kernel_id`]) made `W8F32` when its activations
/// are f32 and its weights `w` int8.
pub fn weights_variant(id: KernelId, w: Option<&TensorInfo>) -> KernelId {
    match w {
        Some(w) if id.variant == Variant::F32 && w.dtype == DType::I8 => KernelId {
            kind: id.kind,
            variant: Variant::W8F32,
        },
        _ => id,
    }
}

impl Model<'_> {
    /// The dtypes of the unquantized kinds (Binary, Where, Reduce, Gather, Tile,
    /// Recurrent): f32 values, i32 for booleans and indices.
    fn plain_types_ok(&self, op: &OpView<'_>, x: &TensorInfo, y: &TensorInfo) -> bool {
        use crate::op::{BinaryFn, ReduceFn};
        let dtype = |k: usize| op.input(k).map(|t| self.tensor(t).info.dtype);
        let value = |d: DType| matches!(d, DType::F32 | DType::I32);
        let (f32_, i32_) = (Some(DType::F32), Some(DType::I32));
        match op.kind {
            OpKind::Binary => match BinaryFn::from_code(op.param(0)) {
                Some(f) if f.is_arithmetic() => {
                    dtype(0) == f32_ && dtype(1) == f32_ && y.dtype == DType::F32
                }
                Some(f) if f.is_logic() => {
                    dtype(0) == i32_ && dtype(1) == i32_ && y.dtype == DType::I32
                }
                Some(_) => value(x.dtype) && dtype(1) == Some(x.dtype) && y.dtype == DType::I32,
                None => false,
            },
            OpKind::Where => {
                dtype(0) == i32_
                    && dtype(1).is_some_and(value)
                    && dtype(2) == dtype(1)
                    && Some(y.dtype) == dtype(1)
            }
            OpKind::Reduce => {
                let arg = ReduceFn::from_code(op.param(0)).is_some_and(|f| f.writes_indices());
                x.dtype == DType::F32 && y.dtype == if arg { DType::I32 } else { DType::F32 }
            }
            OpKind::Gather => value(x.dtype) && dtype(1) == i32_ && y.dtype == x.dtype,
            OpKind::Tile => value(x.dtype) && y.dtype == x.dtype,
            OpKind::Recurrent => {
                (0..op.n_in).all(|k| dtype(k).is_none_or(|d| d == DType::F32))
                    && x.dtype == DType::F32
                    && y.dtype == DType::F32
            }
            _ => false,
        }
    }
}

/// An int8 Reduce: Max or Min over axes that all hold elements (an empty one has no int8
/// identity).
fn selects_nonempty(op: &OpView<'_>, x: &TensorInfo) -> bool {
    use crate::op::ReduceFn;
    let mask = op.param(1) as u32;
    let f = ReduceFn::from_code(op.param(0));
    matches!(f, Some(ReduceFn::Max | ReduceFn::Min))
        && (0..x.shape.rank()).all(|d| mask & (1 << d) == 0 || x.shape.dim(d) > 0)
}

/// The kernel an op needs, from its kind, first input, first output, and for Conv its
/// group and the layout of its weights (pass 0 and `Plain` for other ops).
pub fn kernel_id(
    kind: OpKind,
    x: &TensorInfo,
    y: &TensorInfo,
    group: i32,
    w_layout: Layout,
) -> KernelId {
    let q8 = |d: DType| matches!(d, DType::I8 | DType::U8);
    let v = if q8(x.dtype) || q8(y.dtype) {
        Variant::I8
    } else {
        Variant::F32
    };
    let variant = match kind {
        OpKind::Conv if group > 1 && x.shape.rank() == 4 && group as usize == x.shape.dim(1) => {
            if v == Variant::I8 {
                Variant::DwI8
            } else {
                Variant::DwF32
            }
        }
        OpKind::Conv if v == Variant::I8 && w_layout == Layout::Pairs6 => Variant::PackedI8,
        _ => v,
    };
    KernelId { kind, variant }
}

impl Model<'_> {
    /// Multiply-accumulates op `i` performs (0 for ops without a reduction).
    pub fn op_macs(&self, i: usize) -> u64 {
        let Some(op) = self.op(i) else { return 0 };
        let info = |t: Option<u16>| t.map(|t| self.tensor(t).info);
        let (Some(x), y) = (info(op.input(0)), self.tensor(op.output(0)).info) else {
            return 0;
        };
        let w = info(op.input(1));
        let n = |s: &Shape| s.numel().unwrap_or(0) as u64;
        match op.kind {
            OpKind::Conv => w.map_or(0, |w| n(&y.shape) * (w.shape.prod(1, 4) as u64)),
            OpKind::ConvTranspose => w.map_or(0, |w| n(&x.shape) * (w.shape.prod(1, 4) as u64)),
            OpKind::FullyConnected => w.map_or(0, |w| n(&y.shape) * w.shape.dim(1) as u64),
            OpKind::BatchMatMul => n(&y.shape) * x.shape.dim(x.shape.rank() - 1) as u64,
            // The recurrent products: T·B steps of [H] × [H, G·H].
            OpKind::Recurrent => w.map_or(0, |w| n(&x.shape) * w.shape.dim(0) as u64),
            _ => 0,
        }
    }
}

//! Which ops the WGSL kernels run, and each op's parameter words. `encode` is the one
//! place that decides support: the partitioner asks it (no device needed) and the
//! accelerator builds its per-op parameters from it.

use cairn_core::kernel::Variant;
use cairn_core::model::Storage;
use cairn_core::op::conv as cp;
use cairn_core::{DType, Layout, Model, OpKind, Quant};

/// The shader entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Conv,
    Fc,
    Lut,
    MaxPool,
    Binary,
    Gap,
    Copy,
}

impl Kernel {
    pub const ALL: [Kernel; 7] = [
        Kernel::Conv,
        Kernel::Fc,
        Kernel::Lut,
        Kernel::MaxPool,
        Kernel::Binary,
        Kernel::Gap,
        Kernel::Copy,
    ];
    pub fn entry(self) -> &'static str {
        match self {
            Kernel::Conv => "conv",
            Kernel::Fc => "fc",
            Kernel::Lut => "lut",
            Kernel::MaxPool => "maxpool",
            Kernel::Binary => "binary",
            Kernel::Gap => "gap",
            Kernel::Copy => "copy",
        }
    }
}

// Parameter word indices (int8.wgsl has the same list).
const X_OFF: usize = 0;
const W_OFF: usize = 1;
const B_OFF: usize = 2;
const S_OFF: usize = 3;
const Y_OFF: usize = 4;
const NUMEL: usize = 5;
const ZX: usize = 6;
const ZY: usize = 7;
const LO: usize = 8;
const HI: usize = 9;
const C: usize = 10;
const H: usize = 11;
const W: usize = 12;
const OC: usize = 13;
const OH: usize = 14;
const OW: usize = 15;
const KH: usize = 16;
const KW: usize = 17;
const SH: usize = 18;
const SW: usize = 19;
const PT: usize = 20;
const PL: usize = 21;
const DH: usize = 22;
const DW: usize = 23;
const G: usize = 24;
const K: usize = 25;
const N: usize = 26;
const PACKED: usize = 27;
// Add and Mul.
const D0: usize = 10;
const SA0: usize = 14;
const SB0: usize = 18;
/// Byte offset of an Add/Mul op's 256×256 result table in the weights buffer (set when
/// the accelerator is created: the tables follow the model's bytes).
pub const TABLE: usize = 22;
const F0: usize = 23;
pub const PARAM_WORDS: usize = 32;

/// One op ready for the GPU: its kernel, parameter words and output elements.
#[derive(Clone, Copy, Debug)]
pub struct Encoded {
    pub kernel: Kernel,
    pub params: [i32; PARAM_WORDS],
    pub numel: u32,
}

/// Byte offset of a value that must fit a parameter word.
fn word(v: usize) -> Option<i32> {
    i32::try_from(v).ok()
}

/// Offset of an arena tensor, or of a constant within the model's bytes (the weights
/// buffer is the whole model).
fn offset_of(model: &Model<'_>, t: u16, want_arena: bool) -> Option<i32> {
    match model.tensor(t).storage {
        Storage::Arena { offset, .. } if want_arena => word(offset),
        Storage::Const(c) if !want_arena => {
            let at = (c.as_ptr() as usize).checked_sub(model.bytes().as_ptr() as usize)?;
            (at % 4 == 0).then_some(())?;
            word(at)
        }
        _ => None,
    }
}

fn per_tensor_i8(q: &Quant<'_>, dt: DType) -> Option<i32> {
    match (q, dt) {
        (Quant::PerTensor { zero_point, .. }, DType::I8) => Some(*zero_point),
        _ => None,
    }
}

/// The op as GPU work, or `None` when no kernel here runs it exactly.
pub fn encode(model: &Model<'_>, op_index: usize) -> Option<Encoded> {
    let op = model.op(op_index)?;
    let kernel_id = model.kernel_of(op_index)?;
    if op.n_outputs() != 1 {
        return None;
    }
    let y = model.tensor(op.output(0));
    let x_t = op.input(0)?;
    let x = model.tensor(x_t);
    let numel = u32::try_from(y.info.numel()).ok()?;
    let mut p = [0i32; PARAM_WORDS];
    p[X_OFF] = offset_of(model, x_t, true)?;
    p[Y_OFF] = offset_of(model, op.output(0), true)?;
    p[NUMEL] = word(numel as usize)?;
    p[B_OFF] = -1;
    let plain_const = |k: usize, dt: DType| {
        let t = op.input(k)?;
        let d = model.tensor(t);
        (d.info.dtype == dt && d.info.layout == Layout::Plain).then_some(())?;
        offset_of(model, t, false)
    };
    let kernel = match (op.kind, kernel_id.variant) {
        (OpKind::Conv, Variant::I8 | Variant::DwI8) => {
            let (n, c, h, w) = x.info.shape.nchw()?;
            let (_, oc, oh, ow) = y.info.shape.nchw()?;
            let (_, _, kh, kw) = model.tensor(op.input(1)?).info.shape.nchw()?;
            let _ = n;
            p[ZX] = per_tensor_i8(&x.info.quant, x.info.dtype)?;
            p[ZY] = per_tensor_i8(&y.info.quant, y.info.dtype)?;
            p[W_OFF] = plain_const(1, DType::I8)?;
            if op.input(2).is_some() {
                p[B_OFF] = plain_const(2, DType::I32)?;
            }
            p[S_OFF] = plain_const(3, DType::F32)?;
            p[LO] = op.param(cp::ACT_LO);
            p[HI] = op.param(cp::ACT_HI);
            for (slot, v) in [
                (C, c),
                (H, h),
                (W, w),
                (OC, oc),
                (OH, oh),
                (OW, ow),
                (KH, kh),
                (KW, kw),
            ] {
                p[slot] = word(v)?;
            }
            for (slot, param) in [
                (SH, cp::SH),
                (SW, cp::SW),
                (PT, cp::PT),
                (PL, cp::PL),
                (DH, cp::DH),
                (DW, cp::DW),
                (G, cp::GROUP),
            ] {
                p[slot] = op.param(param);
            }
            Kernel::Conv
        }
        (OpKind::FullyConnected, Variant::I8) => {
            let wshape = model.tensor(op.input(1)?).info.shape;
            let (n, k) = (wshape.dim(0), wshape.dim(1));
            p[ZX] = per_tensor_i8(&x.info.quant, x.info.dtype)?;
            p[ZY] = per_tensor_i8(&y.info.quant, y.info.dtype)?;
            p[W_OFF] = plain_const(1, DType::I8)?;
            if op.input(2).is_some() {
                p[B_OFF] = plain_const(2, DType::I32)?;
            }
            p[S_OFF] = plain_const(3, DType::F32)?;
            p[LO] = op.param(0);
            p[HI] = op.param(1);
            p[N] = word(n)?;
            p[K] = word(k)?;
            // Rows start on word boundaries (x and w start 16-aligned): packed dot products.
            p[PACKED] = i32::from(k % 4 == 0 && p[W_OFF] % 4 == 0);
            Kernel::Fc
        }
        (OpKind::Lut, Variant::I8) if x.info.dtype == DType::I8 => {
            p[W_OFF] = plain_const(1, DType::I8)?;
            let (inner, chans) = match op.param(0) {
                a if a < 0 => (1, 1),
                a => {
                    let a = a as usize;
                    let s = x.info.shape;
                    (s.prod(a + 1, s.rank()), s.dim(a))
                }
            };
            p[K] = word(inner)?;
            p[N] = word(chans)?;
            Kernel::Lut
        }
        (OpKind::MaxPool, Variant::I8) if x.info.dtype == DType::I8 => {
            let (_, _, h, w) = x.info.shape.nchw()?;
            let (_, _, oh, ow) = y.info.shape.nchw()?;
            for (slot, v) in [(H, h), (W, w), (OH, oh), (OW, ow)] {
                p[slot] = word(v)?;
            }
            for (slot, param) in [
                (KH, 0),
                (KW, 1),
                (SH, 2),
                (SW, 3),
                (PT, 4),
                (PL, 5),
                (DH, 8),
                (DW, 9),
            ] {
                p[slot] = op.param(param);
            }
            Kernel::MaxPool
        }
        (OpKind::Add | OpKind::Mul, Variant::I8) => binary(model, &op, &mut p)?,
        (OpKind::GlobalAveragePool, Variant::I8) if x.info.dtype == DType::I8 => {
            let (_, _, h, w) = x.info.shape.nchw()?;
            let count = h.checked_mul(w)?.max(1);
            let ((sx, zx), (sy, zy)) = (x.info.quant.per_tensor(), y.info.quant.per_tensor());
            p[ZX] = zx;
            p[ZY] = zy;
            p[K] = word(count)?;
            // reduce_mean_i8's scale, computed the same way.
            p[F0] = (sx / (sy * count as f32)).to_bits() as i32;
            Kernel::Gap
        }
        (OpKind::Reshape, Variant::I8 | Variant::F32) => {
            // NUMEL counts bytes here.
            p[NUMEL] = word(y.info.numel().checked_mul(y.info.dtype.size_bytes())?)?;
            Kernel::Copy
        }
        _ => return None,
    };
    let numel = u32::try_from(p[NUMEL]).ok()?;
    Some(Encoded {
        kernel,
        params: p,
        numel,
    })
}

/// Add (QLinearAdd's fused form) or Mul, both operands in the arena with more than one
/// element (a scalar operand is folded into Add's constant from its value: CPU only).
fn binary(
    model: &Model<'_>,
    op: &cairn_core::model::OpView<'_>,
    p: &mut [i32; PARAM_WORDS],
) -> Option<Kernel> {
    let (a_t, b_t) = (op.input(0)?, op.input(1)?);
    let (a, b, y) = (
        model.tensor(a_t).info,
        model.tensor(b_t).info,
        model.tensor(op.output(0)).info,
    );
    if [a.dtype, b.dtype, y.dtype] != [DType::I8; 3] || a.numel() < 2 || b.numel() < 2 {
        return None;
    }
    let rank = y.shape.rank();
    if rank > 4 {
        return None;
    }
    p[W_OFF] = offset_of(model, b_t, true)?;
    let (sa_st, sb_st) = (
        cairn_core::shape::broadcast_strides(&a.shape, &y.shape),
        cairn_core::shape::broadcast_strides(&b.shape, &y.shape),
    );
    // Right-align to four axes (leading axes of size 1).
    for d in 0..4 {
        let src = (d + rank).checked_sub(4);
        p[D0 + d] = src.map_or(Some(1), |s| word(y.shape.dim(s)))?;
        p[SA0 + d] = src.map_or(Some(0), |s| word(sa_st[s]))?;
        p[SB0 + d] = src.map_or(Some(0), |s| word(sb_st[s]))?;
    }
    Some(Kernel::Binary)
}

/// The 256×256 results of Add/Mul op `op_index` for every pair of int8 operands (row: a,
/// column: b, both from −128), computed by the reference kernel itself with the op's
/// quantization and parameters.
pub fn binary_table(model: &Model<'_>, op_index: usize) -> Option<Vec<u8>> {
    use cairn_core::{OpCall, Shape, TensorMut, TensorRef};
    let op = model.op(op_index)?;
    let kernel = model.kernel_of(op_index)?;
    let (a, b) = (
        model.tensor(op.input(0)?).info,
        model.tensor(op.input(1)?).info,
    );
    let y = model.tensor(op.output(0)).info;
    let values: Vec<u8> = (-128i32..128).map(|v| v as i8 as u8).collect();
    let (params, n) = op.param_words();
    let mut call = OpCall::new(op.kind, kernel, &params[..n], 0);
    let a_in = TensorRef {
        info: cairn_core::TensorInfo {
            shape: Shape::new(&[256, 1])?,
            ..a
        },
        data: &values,
    };
    let b_in = TensorRef {
        info: cairn_core::TensorInfo {
            shape: Shape::new(&[1, 256])?,
            ..b
        },
        data: &values,
    };
    call.push_input(Some(a_in)).ok()?;
    call.push_input(Some(b_in)).ok()?;
    let mut table = vec![0u8; 256 * 256];
    let out = TensorMut {
        info: cairn_core::TensorInfo {
            shape: Shape::new(&[256, 256])?,
            ..y
        },
        data: &mut table,
    };
    cairn_kernels::execute_reference(&call, out).ok()?;
    Some(table)
}

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
    Gather,
    Softmax,
    Bilinear,
    Bmm,
}

impl Kernel {
    pub const ALL: [Kernel; 11] = [
        Kernel::Conv,
        Kernel::Fc,
        Kernel::Lut,
        Kernel::MaxPool,
        Kernel::Binary,
        Kernel::Gap,
        Kernel::Copy,
        Kernel::Gather,
        Kernel::Softmax,
        Kernel::Bilinear,
        Kernel::Bmm,
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
            Kernel::Gather => "gather",
            Kernel::Softmax => "softmax",
            Kernel::Bilinear => "bilinear",
            Kernel::Bmm => "bmm",
        }
    }
}

// Parameter word indices (int8.wgsl has the same list).
const X_OFF: usize = 0;
pub const W_OFF: usize = 1;
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
pub const K: usize = 25;
const N: usize = 26;
const PACKED: usize = 27;
// Add and Mul.
const D0: usize = 10;
const SA0: usize = 14;
const SB0: usize = 18;
/// Byte offset of an Add/Mul op's 256×256 result table in the weights buffer (set when
/// the accelerator is created: the tables follow the model's bytes).
pub const TABLE: usize = 22;
pub const F0: usize = 23;
pub const PARAM_WORDS: usize = 32;

/// One dispatch ready for the GPU: its kernel, parameter words and output elements, and
/// which output of the op it writes (Split has one dispatch per output).
#[derive(Clone, Copy, Debug)]
pub struct Encoded {
    pub kernel: Kernel,
    pub params: [i32; PARAM_WORDS],
    pub numel: u32,
    pub out_index: usize,
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

/// An int8 tensor's per-tensor scale and zero point, when it has them (the reference
/// kernels read anything else as scale 1, zero point 0: such ops stay on the CPU).
fn per_tensor_q(info: &cairn_core::TensorInfo<'_>) -> Option<(f32, i32)> {
    match (&info.quant, info.dtype) {
        (Quant::PerTensor { scale, zero_point }, DType::I8) => Some((*scale, *zero_point)),
        _ => None,
    }
}

/// The op's dispatches: one per output for Split, else `encode`'s one. `None` when no
/// kernel here runs it exactly.
pub fn encode_op(model: &Model<'_>, op_index: usize) -> Option<Vec<Encoded>> {
    let op = model.op(op_index)?;
    if op.kind != OpKind::Split {
        return Some(vec![encode(model, op_index)?]);
    }
    (0..op.n_outputs())
        .map(|k| encode_split(model, op_index, k))
        .collect()
}

/// Output `out_index` of an int8 Split: a gather (Split is Slice with several outputs).
fn encode_split(model: &Model<'_>, op_index: usize, out_index: usize) -> Option<Encoded> {
    let op = model.op(op_index)?;
    let kernel_id = model.kernel_of(op_index)?;
    if kernel_id.variant != Variant::I8 || !movement_operands(model, &op, out_index) {
        return None;
    }
    let y = model.tensor(op.output(out_index));
    let mut p = [0i32; PARAM_WORDS];
    p[X_OFF] = offset_of(model, op.input(0)?, true)?;
    p[Y_OFF] = offset_of(model, op.output(out_index), true)?;
    p[NUMEL] = word(y.info.numel())?;
    p[B_OFF] = -1;
    Some(Encoded {
        kernel: Kernel::Gather,
        params: p,
        numel: u32::try_from(p[NUMEL]).ok()?,
        out_index,
    })
}

/// The op as GPU work (ops with one output), or `None` when no kernel here runs it
/// exactly.
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
            // A folded PRelu (a second row of multipliers: `conv_multipliers`) is not in
            // the shader: the op stays on the CPU.
            if model.tensor(op.input(3)?).info.numel() != y.info.shape.dim(1) {
                return None;
            }
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
        // Data movement: each output element is one input element, requantized for
        // Concat/Resize. Gather only with indices fixed in the model (`movement_operands`
        // refuses an arena input that is not int8). Split, the same kind of op with several
        // outputs, is `encode_split`. The source of every element and the requantization
        // tables come from the reference kernel itself (`gather_tables`, when the
        // accelerator is made).
        (
            OpKind::Concat | OpKind::Transpose | OpKind::Slice | OpKind::Tile | OpKind::Gather,
            Variant::I8,
        ) if movement_operands(model, &op, 0) => Kernel::Gather,
        // Nearest-neighbour Resize (mode 0) is a gather; every other mode is the
        // reference's bilinear (`exact::bilinear_tables` makes its taps).
        (OpKind::Resize, Variant::I8) if op.param(0) == 0 => {
            movement_operands(model, &op, 0).then_some(Kernel::Gather)?
        }
        (OpKind::Resize, Variant::I8) => {
            let (_, _, h, w) = x.info.shape.nchw()?;
            let (_, _, oh, ow) = y.info.shape.nchw()?;
            let ((sx, zx), _) = (per_tensor_q(&x.info)?, per_tensor_q(&y.info)?);
            for (slot, v) in [(H, h), (W, w), (OH, oh), (OW, ow)] {
                p[slot] = word(v)?;
            }
            p[ZX] = zx;
            p[F0] = sx.to_bits() as i32;
            Kernel::Bilinear
        }
        // Flavour 0 only (ORT's QLinearSoftmax arithmetic, flavour 1, stays on the CPU: it
        // leaves a row with a zero sum unwritten).
        (OpKind::Softmax, Variant::I8) if op.param(3) == 0 => {
            per_tensor_q(&x.info)?;
            per_tensor_q(&y.info)?;
            let (outer, n, inner) = (op.param(0), op.param(1), op.param(2));
            let rows = [outer, n, inner]
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))?;
            if rows != y.info.numel() || rows != x.info.numel() || n < 1 {
                return None;
            }
            p[N] = n;
            p[K] = inner;
            Kernel::Softmax
        }
        (OpKind::BatchMatMul, Variant::I8) => bmm(model, &op, &mut p)?,
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
        out_index: 0,
    })
}

/// What one dispatch needs in the weights buffer besides the model's bytes: (parameter
/// word, bytes) pairs; the accelerator places each blob and writes its byte offset into
/// that word. `None` when the tables cannot be made (the op then stays on the CPU).
pub fn tables(
    model: &Model<'_>,
    op_index: usize,
    enc: &mut Encoded,
) -> Option<Vec<(usize, Vec<u8>)>> {
    match enc.kernel {
        Kernel::Binary => Some(vec![(TABLE, binary_table(model, op_index)?)]),
        Kernel::Gather => {
            let t = gather_tables(model, op_index, enc.out_index)?;
            let src: Vec<u8> = t.src.iter().flat_map(|w| w.to_le_bytes()).collect();
            enc.params[TABLE] = -1;
            let mut blobs = vec![(W_OFF, src)];
            if let Some((which, maps)) = t.maps {
                blobs.push((K, which));
                blobs.push((TABLE, maps));
            }
            Some(blobs)
        }
        Kernel::Softmax => crate::exact::softmax_tables(model, op_index),
        Kernel::Bilinear => crate::exact::bilinear_tables(model, op_index),
        Kernel::Bmm => Some(vec![(TABLE, bmm_table(model, op_index)?)]),
        _ => Some(Vec::new()),
    }
}

/// Most output elements a data-movement op may have on the GPU (its source table holds
/// four bytes per element), and most int8 elements its arena inputs may hold together
/// (each is tagged with a 24-bit id when the tables are made).
const GATHER_MAX: usize = 1 << 22;

/// An int8 data-movement op the gather kernel can run: int8 output, every arena input
/// int8 (the data; anything else, such as indices, must be a constant of the model),
/// and sizes within [`GATHER_MAX`].
fn movement_operands(
    model: &Model<'_>,
    op: &cairn_core::model::OpView<'_>,
    out_index: usize,
) -> bool {
    let y = model.tensor(op.output(out_index)).info;
    if y.dtype != DType::I8 || y.numel() > GATHER_MAX || op.n_inputs() > 255 {
        return false;
    }
    let mut total = 0usize;
    for j in 0..op.n_inputs() {
        let Some(t) = op.input(j) else { continue };
        let d = model.tensor(t);
        if let Storage::Arena { .. } = d.storage {
            if d.info.dtype != DType::I8 {
                return false;
            }
            total += d.info.numel();
        }
    }
    total > 0 && total < GATHER_MAX
}

/// Where a data-movement op's output elements (of output `out_index`) come from, found by running the reference
/// kernel: `src[e]` is the arena byte of output element `e`'s source; `maps`, when an
/// input's quantization differs from the output's, is one 256-byte requantization table
/// per arena input (row `v + 128` of input `k` at `k · 256`) and `which[e]` the input of
/// element `e`. `None` when the op is not a pure gather (an element from no input, or a
/// self-check on a seeded input that differs from the reference): it then stays on the
/// CPU.
pub struct GatherTables {
    pub src: Vec<u32>,
    pub maps: Option<(Vec<u8>, Vec<u8>)>,
}

pub fn gather_tables(model: &Model<'_>, op_index: usize, out_index: usize) -> Option<GatherTables> {
    use cairn_core::{OpCall, TensorMut, TensorRef};
    let op = model.op(op_index)?;
    let kernel = model.kernel_of(op_index)?;
    let y_t = op.output(out_index);
    let y = model.tensor(y_t).info;
    let (y_off, y_bytes) = match model.tensor(y_t).storage {
        Storage::Arena { offset, bytes } => (offset, bytes),
        Storage::Const(_) => return None,
    };
    // The arena inputs, each tensor once: (tensor, arena offset, element count, first
    // tag id).
    let mut data: Vec<(u16, usize, usize, usize)> = Vec::new();
    let mut next = 1usize;
    for j in 0..op.n_inputs() {
        let Some(t) = op.input(j) else { continue };
        if let Storage::Arena { offset, bytes } = model.tensor(t).storage {
            // The GPU reads inputs while it writes the output: they must not overlap.
            if offset < y_off + y_bytes && y_off < offset + bytes {
                return None;
            }
            if data.iter().all(|a| a.0 != t) {
                let n = model.tensor(t).info.numel();
                data.push((t, offset, n, next));
                next += n;
            }
        }
    }
    if next >= GATHER_MAX {
        return None;
    }
    let numel = y.numel();
    let params = op.param_words();
    // Run the reference with the arena inputs filled by `fill(k, element)` and quantized
    // as the output (`same_quant`: a pure copy) or as in the model.
    let run = |fill: &dyn Fn(usize, usize) -> u8, same_quant: bool| -> Option<Vec<u8>> {
        let bufs: Vec<Vec<u8>> = data
            .iter()
            .enumerate()
            .map(|(k, &(_, _, n, _))| (0..n).map(|e| fill(k, e)).collect())
            .collect();
        let mut refs = Vec::new();
        for j in 0..op.n_inputs() {
            let t = match op.input(j) {
                None => None,
                Some(t) => {
                    let d = model.tensor(t);
                    Some(match d.storage {
                        Storage::Const(c) => TensorRef {
                            info: d.info,
                            data: c,
                        },
                        Storage::Arena { .. } => {
                            let k = data.iter().position(|a| a.0 == t)?;
                            let mut info = d.info;
                            if same_quant {
                                info.quant = y.quant;
                            }
                            TensorRef {
                                info,
                                data: &bufs[k],
                            }
                        }
                    })
                }
            };
            refs.push(t);
        }
        let mut call = OpCall::new(op.kind, kernel, &params, out_index);
        for t in &refs {
            call.push_input(t.as_ref()).ok()?;
        }
        let mut out = vec![0u8; numel];
        cairn_kernels::execute_reference(
            &call,
            TensorMut {
                info: y,
                data: &mut out,
            },
        )
        .ok()?;
        Some(out)
    };
    // Three byte planes of each element's tag id, copied as they are.
    let mut tag = vec![0u32; numel];
    for plane in 0..3 {
        let out = run(&|k, e| ((data[k].3 + e) >> (8 * plane)) as u8, true)?;
        for (t, b) in tag.iter_mut().zip(out) {
            *t |= (b as u32) << (8 * plane);
        }
    }
    let mut which = vec![0u8; numel];
    let mut src = vec![0u32; numel];
    for e in 0..numel {
        let id = tag[e] as usize;
        let k = data.iter().position(|a| id >= a.3 && id < a.3 + a.2)?;
        which[e] = k as u8;
        src[e] = u32::try_from(data[k].1 + id - data[k].3).ok()?;
    }
    // Requantization tables, when any input's quantization differs from the output's:
    // element j of each input holds (j + shift) mod 256, so one run fills the table of
    // every input with at least 256 elements in the output; smaller inputs take a few
    // more shifts.
    let requant = data.iter().any(|a| model.tensor(a.0).info.quant != y.quant);
    let maps = if requant {
        let mut maps = vec![0u8; 256 * data.len()];
        let mut known = vec![false; 256 * data.len()];
        // One element of each input that reaches the output (an input with none needs no
        // table).
        let mut first = vec![None; data.len()];
        for e in 0..numel {
            let k = which[e] as usize;
            first[k].get_or_insert(src[e] as usize - data[k].1);
        }
        for (k, f) in first.iter().enumerate() {
            if f.is_none() {
                known[k * 256..(k + 1) * 256].fill(true);
            }
        }
        // Each run is chosen to bring the first missing value to an element that reaches
        // the output, so it fills that entry at least: 256 runs at most per input.
        while let Some(gap) = known.iter().position(|&b| !b) {
            let (k, v) = (gap / 256, gap % 256);
            let shift = (v + 256 - first[k]? % 256) % 256;
            let out = run(&|_, e| ((e + shift) as u8) ^ 0x80, false)?;
            for e in 0..numel {
                let k = which[e] as usize;
                let v = (src[e] as usize - data[k].1 + shift) & 0xff;
                maps[k * 256 + v] = out[e];
                known[k * 256 + v] = true;
            }
        }
        Some((which.clone(), maps))
    } else {
        None
    };
    // Self-check on a seeded input with the model's quantization: the gather must give
    // the reference's bytes.
    let noise = |k: usize, e: usize| {
        let mut z = ((k as u64) << 32 | e as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z ^= z >> 29;
        (z.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 56) as u8
    };
    let want = run(&noise, false)?;
    for e in 0..numel {
        let k = which[e] as usize;
        let v = noise(k, src[e] as usize - data[k].1);
        let got = match &maps {
            Some((_, m)) => m[k * 256 + (v ^ 0x80) as usize],
            None => v,
        };
        if got != want[e] {
            return None;
        }
    }
    Some(GatherTables { src, maps })
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
    let params = op.param_words();
    let mut call = OpCall::new(op.kind, kernel, &params, 0);
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
    call.push_input(Some(&a_in)).ok()?;
    call.push_input(Some(&b_in)).ok()?;
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

// BatchMatMul's words besides the common ones: b's zero point and the rows of a.
const ZB: usize = C;
const M: usize = H;

/// int8 BatchMatMul of two arena activations (`gemm::bmm_i8`): a at X_OFF, b at W_OFF,
/// the one requantization scale at S_OFF, the per-batch matrix offsets at TABLE
/// (`bmm_table`). Refused (CPU) when an operand is a constant, a quantization is not
/// per-tensor int8, the scale is not finite and normal (or zero: a GPU may flush
/// subnormals), or the output overlaps an input.
fn bmm(
    model: &Model<'_>,
    op: &cairn_core::model::OpView<'_>,
    p: &mut [i32; PARAM_WORDS],
) -> Option<Kernel> {
    let (a_t, b_t, s_t, y_t) = (op.input(0)?, op.input(1)?, op.input(2)?, op.output(0));
    let (a, b, y) = (
        model.tensor(a_t).info,
        model.tensor(b_t).info,
        model.tensor(y_t).info,
    );
    let ((_, za), (_, zb), (_, zy)) = (per_tensor_q(&a)?, per_tensor_q(&b)?, per_tensor_q(&y)?);
    let (ra, rb, ry) = (a.shape.rank(), b.shape.rank(), y.shape.rank());
    if ra < 2 || rb < 2 || ry < 2 {
        return None;
    }
    let (m, k, n) = (
        a.shape.dim(ra - 2),
        a.shape.dim(ra - 1),
        b.shape.dim(rb - 1),
    );
    if b.shape.dim(rb - 2) != k || y.shape.dim(ry - 2) != m || y.shape.dim(ry - 1) != n {
        return None;
    }
    let s = model.tensor(s_t);
    if s.info.dtype != DType::F32 || s.info.numel() < 1 {
        return None;
    }
    let scale = match s.storage {
        Storage::Const(c) => f32::from_le_bytes(c.get(..4)?.try_into().ok()?),
        Storage::Arena { .. } => return None,
    };
    if !(scale == 0.0 || scale.is_normal()) {
        return None;
    }
    let range = |t: u16| match model.tensor(t).storage {
        Storage::Arena { offset, bytes } => Some(offset..offset + bytes),
        Storage::Const(_) => None,
    };
    let yr = range(y_t)?;
    for r in [range(a_t)?, range(b_t)?] {
        if r.start < yr.end && yr.start < r.end {
            return None;
        }
    }
    p[W_OFF] = offset_of(model, b_t, true)?;
    p[S_OFF] = offset_of(model, s_t, false)?;
    p[ZX] = za;
    p[ZB] = zb;
    p[ZY] = zy;
    p[M] = word(m)?;
    p[K] = word(k)?;
    p[N] = word(n)?;
    // Every index the kernel forms stays below the larger tensor's size.
    word(a.numel().max(b.numel()).max(y.numel()))?;
    Some(Kernel::Bmm)
}

/// Per output batch (row-major over y's leading axes), the element offsets of its a and
/// b matrices (two little-endian u32), broadcast over the leading axes exactly as the
/// reference's `bmm_walk`.
pub fn bmm_table(model: &Model<'_>, op_index: usize) -> Option<Vec<u8>> {
    use cairn_core::shape::broadcast_strides;
    use cairn_core::Shape;
    let op = model.op(op_index)?;
    let (a, b, y) = (
        model.tensor(op.input(0)?).info.shape,
        model.tensor(op.input(1)?).info.shape,
        model.tensor(op.output(0)).info.shape,
    );
    let lead = |s: &Shape| -> Option<Shape> {
        let d: Vec<usize> = s.dims().iter().map(|&v| v as usize).collect();
        let r = d.len().checked_sub(2)?;
        Some(Shape::new(&d[..r]).unwrap_or(Shape::SCALAR))
    };
    let (ab, bb, yb) = (lead(&a)?, lead(&b)?, lead(&y)?);
    if ab.rank() > yb.rank() || bb.rank() > yb.rank() {
        return None;
    }
    let (sa, sb) = (broadcast_strides(&ab, &yb), broadcast_strides(&bb, &yb));
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, n) = (a.dim(ra - 2), a.dim(ra - 1), b.dim(rb - 1));
    let batches = yb.numel()?;
    let r = yb.rank();
    let mut out = Vec::with_capacity(batches * 8);
    for o in 0..batches {
        let (mut rest, mut ia, mut ib) = (o, 0usize, 0usize);
        for d in (0..r).rev() {
            let dim = yb.dim(d);
            let i = rest % dim;
            rest /= dim;
            ia += i * sa[d];
            ib += i * sb[d];
        }
        let ao = u32::try_from(ia.checked_mul(m)?.checked_mul(k)?).ok()?;
        let bo = u32::try_from(ib.checked_mul(k)?.checked_mul(n)?).ok()?;
        out.extend_from_slice(&ao.to_le_bytes());
        out.extend_from_slice(&bo.to_le_bytes());
    }
    // The weights buffer takes whole words; an empty table still gets one.
    if out.is_empty() {
        out.resize(8, 0);
    }
    Some(out)
}

//! A segment of a checked `.cairn` model (or the whole model), exported back to an ONNX
//! graph in QDQ form: int8 tensors stay int8 between ops, each quantized op is
//! DequantizeLinear on its inputs, the float op, an optional Clip for the fused activation
//! clamp, and QuantizeLinear on its output; weights, biases and tables are initializers with
//! their scales and zero points. This is the form NPU execution providers (QNN, NNAPI,
//! CoreML, OpenVINO) and ONNX Runtime's CPU provider fuse into integer kernels.
//!
//! The weight and bias scales come from each op's requantization multipliers (`rq = sx·sw/sy`
//! per output channel), so the float graph means what cairn computes; ONNX Runtime
//! rounds in its own order, so an output may differ from cairn's by 1 LSB.
//!
//! [`op_exportable`] is the capability query: an op this module cannot express (kind,
//! dtype, layout or parameters) is reported unsupported and stays on the CPU; nothing here
//! is an error for a checked model. Ops covered: Quantize, Dequantize, int8 Conv (every
//! group, pre-packed weights unpacked), ConvTranspose, FullyConnected, BatchMatMul, Add,
//! Sub, Mul, Lut (as an exact int8 Gather), MaxPool, AveragePool, GlobalAveragePool,
//! ReduceMean, Reduce Max/Min, Softmax, LayerNorm and bilinear Resize (int8); f32 Add, Sub,
//! Mul and Div; and Concat, Reshape, Transpose, Slice, Split, Pad, Gather and nearest
//! Resize of any dtype (`export/movement.rs`, `export/numeric.rs`). Not exported: Softmax's
//! ORT-table flavour, int8 Div, PRelu, Unary, the other reductions and the other f32
//! compute ops (Binary, Where, Reduce, Tile, f32 Conv/MatMul/Softmax/LayerNorm...): they
//! run on the CPU.

mod movement;
mod numeric;

use cairn_core::layout::Pairs6;
use cairn_core::model::{OpView, Storage};
use cairn_core::op::conv as cp;
use cairn_core::partition::{segment_inputs, segment_outputs, Segment};
use cairn_core::{DType, Layout, Model, OpKind, Quant, TensorInfo};

use crate::proto::{Attr, ElemType, Graph, Init, Node, ValueInfo};

/// Opset the exported graphs declare.
/// 17 for LayerNormalization; ReduceMean still takes `axes` as an attribute there.
pub const OPSET: i64 = 17;

/// One exported segment: the ONNX model and the cairn tensors it reads and writes, in the
/// order of the graph's inputs and outputs (named `t<index>`).
#[derive(Clone, Debug)]
pub struct Exported {
    pub onnx: Vec<u8>,
    pub inputs: Vec<u16>,
    pub outputs: Vec<u16>,
}

/// The ONNX name of cairn tensor `t`.
pub fn tensor_name(t: u16) -> String {
    format!("t{t}")
}

fn elem(dt: DType) -> ElemType {
    match dt {
        DType::F32 => ElemType::Float,
        DType::I8 => ElemType::Int8,
        DType::U8 => ElemType::Uint8,
        DType::I32 => ElemType::Int32,
    }
}

fn dims(info: &TensorInfo<'_>) -> Vec<i64> {
    info.shape.dims().iter().map(|&d| i64::from(d)).collect()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A node's attributes.
type Attrs = Vec<(&'static str, Attr)>;

/// A weighted int8 op's tensors (input, weights, requantization scales), the input's,
/// weights' and output's descriptions, and the input and output scales.
struct Weighted<'b> {
    op: OpView<'b>,
    x_t: u16,
    w_t: u16,
    rq_t: u16,
    x: TensorInfo<'b>,
    w: TensorInfo<'b>,
    y: TensorInfo<'b>,
    sx: f32,
    sy: f32,
}

/// Builds one graph; `None` from any step means "not exportable".
struct Builder<'m, 'b> {
    model: &'m Model<'b>,
    g: Graph,
    fresh: usize,
    /// Constant cairn tensors already added as initializers.
    consts: Vec<u16>,
}

impl<'m, 'b> Builder<'m, 'b> {
    fn new(model: &'m Model<'b>) -> Self {
        Builder {
            model,
            g: Graph::default(),
            fresh: 0,
            consts: Vec::new(),
        }
    }

    fn tmp(&mut self, what: &str) -> String {
        self.fresh += 1;
        format!("{what}_{}", self.fresh)
    }

    fn init(&mut self, what: &str, elem: ElemType, dims: Vec<i64>, raw: Vec<u8>) -> String {
        let name = self.tmp(what);
        self.g.inits.push(Init {
            name: name.clone(),
            elem,
            dims,
            raw,
        });
        name
    }

    fn scalar_f32(&mut self, v: f32) -> String {
        self.init("f", ElemType::Float, vec![], v.to_le_bytes().to_vec())
    }

    fn zero_point(&mut self, dt: DType, zp: i32) -> Option<String> {
        let (elem, raw) = match dt {
            DType::I8 => (ElemType::Int8, vec![i8::try_from(zp).ok()? as u8]),
            DType::U8 => (ElemType::Uint8, vec![u8::try_from(zp).ok()?]),
            DType::I32 => (ElemType::Int32, zp.to_le_bytes().to_vec()),
            DType::F32 => return None,
        };
        Some(self.init("zp", elem, vec![], raw))
    }

    fn node(&mut self, op_type: &'static str, inputs: Vec<String>, attrs: Attrs) -> String {
        let out = self.tmp(op_type);
        self.node_to(op_type, inputs, out.clone(), attrs);
        out
    }

    fn node_to(&mut self, op_type: &'static str, inputs: Vec<String>, out: String, attrs: Attrs) {
        self.g.nodes.push(Node {
            op_type,
            inputs,
            outputs: vec![out],
            attrs,
        });
    }

    /// The ONNX value of cairn tensor `t`: its name for an arena tensor (a graph input or
    /// an earlier node's output), an initializer with its bytes for a plain constant.
    fn value(&mut self, t: u16) -> Option<String> {
        let d = self.model.tensor(t);
        let name = tensor_name(t);
        match d.storage {
            Storage::Arena { .. } => Some(name),
            Storage::Const(bytes) => {
                if d.info.layout != Layout::Plain {
                    return None;
                }
                if !self.consts.contains(&t) {
                    self.consts.push(t);
                    self.g.inits.push(Init {
                        name: name.clone(),
                        elem: elem(d.info.dtype),
                        dims: dims(&d.info),
                        raw: bytes.to_vec(),
                    });
                }
                Some(name)
            }
        }
    }

    /// DequantizeLinear of a per-tensor int8/uint8 value.
    fn dq(&mut self, v: String, info: &TensorInfo<'_>) -> Option<String> {
        let Quant::PerTensor { scale, zero_point } = info.quant else {
            return None;
        };
        let s = self.scalar_f32(scale);
        let z = self.zero_point(info.dtype, zero_point)?;
        Some(self.node("DequantizeLinear", vec![v, s, z], vec![]))
    }

    /// Clip to the int8 activation range `lo..=hi` of an output quantized (sy, zy), when
    /// narrower than int8, then QuantizeLinear into `out`.
    fn q_out(
        &mut self,
        v: String,
        y: &TensorInfo<'_>,
        out: String,
        lo: i32,
        hi: i32,
    ) -> Option<()> {
        let Quant::PerTensor { scale, zero_point } = y.quant else {
            return None;
        };
        if y.dtype != DType::I8 {
            return None;
        }
        let v = if lo > -128 || hi < 127 {
            let a = self.scalar_f32((lo - zero_point) as f32 * scale);
            let b = self.scalar_f32((hi - zero_point) as f32 * scale);
            self.node("Clip", vec![v, a, b], vec![])
        } else {
            v
        };
        let s = self.scalar_f32(scale);
        let z = self.zero_point(DType::I8, zero_point)?;
        self.node_to("QuantizeLinear", vec![v, s, z], out, vec![]);
        Some(())
    }

    fn op(&mut self, i: usize) -> Option<()> {
        let m = self.model;
        let op = m.op(i)?;
        let kernel = m.kernel_of(i)?;
        if op.kind == OpKind::Split {
            return self.split(i);
        }
        if op.n_outputs() != 1 {
            return None;
        }
        let y_t = op.output(0);
        let y = m.tensor(y_t).info;
        if !matches!(m.tensor(y_t).storage, Storage::Arena { .. }) {
            return None;
        }
        let out = tensor_name(y_t);
        let x_t = op.input(0)?;
        let x = m.tensor(x_t).info;
        // FullyConnected.f32-w8 has no ONNX form of its own (it stays on the CPU).
        if kernel.variant == cairn_core::kernel::Variant::W8F32 {
            return None;
        }
        let q8 = kernel.variant != cairn_core::kernel::Variant::F32;
        let per_tensor_i8 =
            |i: &TensorInfo<'_>| i.dtype == DType::I8 && matches!(i.quant, Quant::PerTensor { .. });
        match op.kind {
            OpKind::Quantize => {
                if x.dtype != DType::F32 {
                    return None;
                }
                let xv = self.value(x_t)?;
                let (s, z, attrs) = self.qparams(&y)?;
                self.node_to("QuantizeLinear", vec![xv, s, z], out, attrs);
            }
            OpKind::Dequantize => {
                if y.dtype != DType::F32 {
                    return None;
                }
                let xv = self.value(x_t)?;
                let (s, z, attrs) = self.qparams(&x)?;
                self.node_to("DequantizeLinear", vec![xv, s, z], out, attrs);
            }
            OpKind::Conv if q8 => self.conv(i, out)?,
            OpKind::FullyConnected if q8 => self.fc(i, out)?,
            OpKind::BatchMatMul if q8 => {
                let (b_t, rq_t) = (op.input(1)?, op.input(2)?);
                let b = m.tensor(b_t).info;
                let rq = const_f32s(m, rq_t)?;
                let (
                    Quant::PerTensor { scale: sx, .. },
                    Quant::PerTensor { zero_point: zb, .. },
                    Quant::PerTensor { scale: sy, .. },
                ) = (x.quant, b.quant, y.quant)
                else {
                    return None;
                };
                if !per_tensor_i8(&x) || b.dtype != DType::I8 || rq.len() != 1 {
                    return None;
                }
                // a·b·rq·sy = (sx·a)(sb'·b) with sb' = rq·sy/sx.
                let sb = scale_ok(rq[0] * sy / sx)?;
                let xv = self.value(x_t)?;
                let xf = self.dq(xv, &x)?;
                let bv = self.value(b_t)?;
                let s = self.scalar_f32(sb);
                let z = self.zero_point(DType::I8, zb)?;
                let bf = self.node("DequantizeLinear", vec![bv, s, z], vec![]);
                let mm = self.node("MatMul", vec![xf, bf], vec![]);
                self.q_out(mm, &y, out, -128, 127)?;
            }
            OpKind::Add | OpKind::Sub | OpKind::Mul if q8 => {
                let b_t = op.input(1)?;
                let b = m.tensor(b_t).info;
                if !per_tensor_i8(&x) || !per_tensor_i8(&b) {
                    return None;
                }
                let xv = self.value(x_t)?;
                let xf = self.dq(xv, &x)?;
                let bv = self.value(b_t)?;
                let bf = self.dq(bv, &b)?;
                let kind = match op.kind {
                    OpKind::Add => "Add",
                    OpKind::Sub => "Sub",
                    _ => "Mul",
                };
                let r = self.node(kind, vec![xf, bf], vec![]);
                self.q_out(r, &y, out, op.param(0), op.param(1))?;
            }
            OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div if !q8 => {
                self.binary_f32(i, out)?
            }
            OpKind::Reduce => self.reduce_select(i, out)?,
            OpKind::Lut => self.lut(i, out)?,
            OpKind::MaxPool if x.dtype == DType::I8 && y.quant == x.quant => {
                let attrs = self.pool_attrs(i, true)?;
                let xv = self.value(x_t)?;
                self.node_to("MaxPool", vec![xv], out, attrs);
            }
            OpKind::AveragePool if q8 && per_tensor_i8(&x) => {
                let mut attrs = self.pool_attrs(i, false)?;
                attrs.push(("count_include_pad", Attr::Int(i64::from(op.param(8) != 0))));
                let xv = self.value(x_t)?;
                let xf = self.dq(xv, &x)?;
                let r = self.node("AveragePool", vec![xf], attrs);
                self.q_out(r, &y, out, -128, 127)?;
            }
            OpKind::GlobalAveragePool if q8 && per_tensor_i8(&x) => {
                let xv = self.value(x_t)?;
                let xf = self.dq(xv, &x)?;
                let r = self.node("GlobalAveragePool", vec![xf], vec![]);
                self.q_out(r, &y, out, -128, 127)?;
            }
            OpKind::ConvTranspose if q8 => self.conv_transpose(i, out)?,
            OpKind::Softmax if q8 => self.softmax(i, out)?,
            OpKind::LayerNorm if q8 => self.layer_norm(i, out)?,
            OpKind::ReduceMean if q8 => self.reduce_mean(i, out)?,
            OpKind::Slice => self.slice(i, out)?,
            OpKind::Pad => self.pad(i, out)?,
            OpKind::Gather => self.gather(i, out)?,
            OpKind::Resize => self.resize(i, out)?,
            OpKind::Concat => {
                let axis = i64::from(op.param(0));
                let mut ins = Vec::new();
                for k in 0..op.n_inputs() {
                    let t = op.input(k)?;
                    let info = m.tensor(t).info;
                    let v = self.value(t)?;
                    ins.push(if q8 { self.dq(v, &info)? } else { v });
                }
                if q8 {
                    let r = self.node("Concat", ins, vec![("axis", Attr::Int(axis))]);
                    self.q_out(r, &y, out, -128, 127)?;
                } else if y.dtype == DType::F32 {
                    self.node_to("Concat", ins, out, vec![("axis", Attr::Int(axis))]);
                } else {
                    return None;
                }
            }
            OpKind::Reshape if y.quant == x.quant => {
                let xv = self.value(x_t)?;
                let shape = dims(&y);
                let n = shape.len() as i64;
                let s = self.init("shape", ElemType::Int64, vec![n], i64s(&shape));
                self.node_to("Reshape", vec![xv, s], out, vec![]);
            }
            OpKind::Transpose if y.quant == x.quant => {
                let perm: Vec<i64> = (0..x.shape.rank())
                    .map(|k| i64::from(op.param(k)))
                    .collect();
                let xv = self.value(x_t)?;
                self.node_to("Transpose", vec![xv], out, vec![("perm", Attr::Ints(perm))]);
            }
            _ => return None,
        }
        Some(())
    }

    /// Scale and zero point initializers of a quantized tensor, with `axis` for a
    /// per-axis one.
    fn qparams(&mut self, info: &TensorInfo<'_>) -> Option<(String, String, Attrs)> {
        match info.quant {
            Quant::PerTensor { scale, zero_point } => {
                let s = self.scalar_f32(scale);
                let z = self.zero_point(info.dtype, zero_point)?;
                Some((s, z, vec![]))
            }
            Quant::PerAxis {
                axis,
                scales,
                zero_points,
            } => {
                let n = scales.len() as i64;
                let s = self.init("s", ElemType::Float, vec![n], f32s(scales));
                let raw: Vec<u8> = match info.dtype {
                    DType::I8 => zero_points
                        .iter()
                        .map(|&z| i8::try_from(z).map(|v| v as u8).ok())
                        .collect::<Option<_>>()?,
                    DType::U8 => zero_points
                        .iter()
                        .map(|&z| u8::try_from(z).ok())
                        .collect::<Option<_>>()?,
                    DType::I32 => i32s(zero_points),
                    DType::F32 => return None,
                };
                let z = self.init("z", elem(info.dtype), vec![n], raw);
                Some((s, z, vec![("axis", Attr::Int(axis as i64))]))
            }
            Quant::None => None,
        }
    }

    /// int8 Conv: DQ(x), DQ(w) per output channel, DQ(bias), Conv, Clip, Q.
    /// An int32 bias (one per output channel, `scales.len()` of them) as a constant
    /// dequantized with `scales` (zero point 0); `None` when its length differs.
    pub(crate) fn bias_dq(&mut self, b_t: u16, scales: &[f32]) -> Option<String> {
        let b = const_i32s(self.model, b_t)?;
        let oc = scales.len();
        if b.len() != oc {
            return None;
        }
        let bq = self.init("b", ElemType::Int32, vec![oc as i64], i32s(&b));
        let bs = self.init("bs", ElemType::Float, vec![oc as i64], f32s(scales));
        let bz = self.init("bz", ElemType::Int32, vec![oc as i64], vec![0; 4 * oc]);
        Some(self.node(
            "DequantizeLinear",
            vec![bq, bs, bz],
            vec![("axis", Attr::Int(0))],
        ))
    }

    /// Op `i`, its first input, and that input's and its output's descriptions.
    fn first_io(&self, i: usize) -> Option<(OpView<'b>, u16, TensorInfo<'b>, TensorInfo<'b>)> {
        let m = self.model;
        let op = m.op(i)?;
        let x_t = op.input(0)?;
        Some((op, x_t, m.tensor(x_t).info, m.tensor(op.output(0)).info))
    }

    /// The parts of a weighted int8 op (Conv, ConvTranspose, FullyConnected) whose input
    /// and output are quantized per tensor.
    fn weighted(&self, i: usize) -> Option<Weighted<'b>> {
        let m = self.model;
        let (op, x_t, x, y) = self.first_io(i)?;
        let (w_t, rq_t) = (op.input(1)?, op.input(3)?);
        let (Quant::PerTensor { scale: sx, .. }, Quant::PerTensor { scale: sy, .. }) =
            (x.quant, y.quant)
        else {
            return None;
        };
        Some(Weighted {
            op,
            x_t,
            w_t,
            rq_t,
            x,
            w: m.tensor(w_t).info,
            y,
            sx,
            sy,
        })
    }

    fn conv(&mut self, i: usize, out: String) -> Option<()> {
        let m = self.model;
        let Weighted {
            op,
            x_t,
            w_t,
            rq_t,
            x,
            w,
            y,
            sx,
            sy,
        } = self.weighted(i)?;
        if x.dtype != DType::I8 {
            return None;
        }
        let (oc, icg, kh, kw) = w.shape.nchw()?;
        let rq = const_f32s(m, rq_t)?;
        // A folded PRelu (2·oc multipliers: `conv_multipliers`) is not exported: the op
        // stays on the CPU.
        if rq.len() != oc {
            return None;
        }
        let wbytes = weights_plain(m, w_t)?;
        let sw: Vec<f32> = rq
            .iter()
            .map(|&r| scale_ok(r * sy / sx))
            .collect::<Option<_>>()?;
        let sb: Vec<f32> = rq
            .iter()
            .map(|&r| scale_ok(r * sy))
            .collect::<Option<_>>()?;
        let xv = self.value(x_t)?;
        let xf = self.dq(xv, &x)?;
        let wq = self.init(
            "w",
            ElemType::Int8,
            vec![oc as i64, icg as i64, kh as i64, kw as i64],
            wbytes,
        );
        let ws = self.init("ws", ElemType::Float, vec![oc as i64], f32s(&sw));
        let wz = self.init("wz", ElemType::Int8, vec![oc as i64], vec![0; oc]);
        let wf = self.node(
            "DequantizeLinear",
            vec![wq, ws, wz],
            vec![("axis", Attr::Int(0))],
        );
        let mut ins = vec![xf, wf];
        if let Some(b_t) = op.input(2) {
            ins.push(self.bias_dq(b_t, &sb)?);
        }
        let attrs = conv_attrs(|k| i64::from(op.param(k)), kh, kw);
        let c = self.node("Conv", ins, attrs);
        self.q_out(c, &y, out, op.param(cp::ACT_LO), op.param(cp::ACT_HI))
    }

    /// int8 FullyConnected (`y[.., n] = x[.., k] · w[n, k]ᵀ + b`): MatMul with the
    /// transposed weights, Add of the bias, Clip, Q.
    fn fc(&mut self, i: usize, out: String) -> Option<()> {
        let m = self.model;
        let Weighted {
            op,
            x_t,
            w_t,
            rq_t,
            x,
            w,
            y,
            sx,
            sy,
        } = self.weighted(i)?;
        if x.dtype != DType::I8 || w.shape.rank() != 2 || w.layout != Layout::Plain {
            return None;
        }
        let (n, k) = (w.shape.dim(0), w.shape.dim(1));
        if x.shape.rank() == 0 || x.shape.dim(x.shape.rank() - 1) != k {
            return None;
        }
        let rq = const_f32s(m, rq_t)?;
        if rq.len() != n {
            return None;
        }
        let Storage::Const(wb) = m.tensor(w_t).storage else {
            return None;
        };
        let mut wt = vec![0u8; n * k];
        for r in 0..n {
            for c in 0..k {
                wt[c * n + r] = *wb.get(r * k + c)?;
            }
        }
        let sw: Vec<f32> = rq
            .iter()
            .map(|&r| scale_ok(r * sy / sx))
            .collect::<Option<_>>()?;
        let xv = self.value(x_t)?;
        let xf = self.dq(xv, &x)?;
        let wq = self.init("w", ElemType::Int8, vec![k as i64, n as i64], wt);
        let ws = self.init("ws", ElemType::Float, vec![n as i64], f32s(&sw));
        let wz = self.init("wz", ElemType::Int8, vec![n as i64], vec![0; n]);
        let wf = self.node(
            "DequantizeLinear",
            vec![wq, ws, wz],
            vec![("axis", Attr::Int(1))],
        );
        let mut r = self.node("MatMul", vec![xf, wf], vec![]);
        if let Some(b_t) = op.input(2) {
            let b = const_i32s(m, b_t)?;
            if b.len() != n {
                return None;
            }
            let sb: Vec<f32> = rq
                .iter()
                .map(|&q| scale_ok(q * sy))
                .collect::<Option<_>>()?;
            let bq = self.init("b", ElemType::Int32, vec![n as i64], i32s(&b));
            let bs = self.init("bs", ElemType::Float, vec![n as i64], f32s(&sb));
            let bz = self.init("bz", ElemType::Int32, vec![n as i64], vec![0; 4 * n]);
            let bf = self.node(
                "DequantizeLinear",
                vec![bq, bs, bz],
                vec![("axis", Attr::Int(0))],
            );
            r = self.node("Add", vec![r, bf], vec![]);
        }
        self.q_out(r, &y, out, op.param(0), op.param(1))
    }

    /// int8 table lookup as an exact Gather: `y = table[ch·256 + x + 128]`.
    fn lut(&mut self, i: usize, out: String) -> Option<()> {
        let m = self.model;
        let op = m.op(i)?;
        let (x_t, tab_t) = (op.input(0)?, op.input(1)?);
        let (x, y) = (m.tensor(x_t).info, m.tensor(op.output(0)).info);
        if x.dtype != DType::I8 || y.dtype != DType::I8 {
            return None;
        }
        let Storage::Const(table) = m.tensor(tab_t).storage else {
            return None;
        };
        let axis = op.param(0);
        // Per-index offsets: 128, plus 256 per channel along `axis` for per-channel tables.
        let (off_dims, offs): (Vec<i64>, Vec<i32>) = if axis < 0 {
            (vec![], vec![128])
        } else {
            let axis = axis as usize;
            if axis >= y.shape.rank() {
                return None;
            }
            let c = y.shape.dim(axis);
            let mut d = vec![c as i64];
            d.extend(std::iter::repeat_n(1, y.shape.rank() - axis - 1));
            (d, (0..c as i32).map(|ch| 128 + 256 * ch).collect())
        };
        if table.len() < offs.len() * 256 {
            return None;
        }
        let tab = self.init(
            "table",
            ElemType::Int8,
            vec![table.len() as i64],
            table.to_vec(),
        );
        let off = self.init("lut_off", ElemType::Int32, off_dims, i32s(&offs));
        let xv = self.value(x_t)?;
        let xi = self.node(
            "Cast",
            vec![xv],
            vec![("to", Attr::Int(ElemType::Int32 as i64))],
        );
        let idx = self.node("Add", vec![xi, off], vec![]);
        self.node_to("Gather", vec![tab, idx], out, vec![("axis", Attr::Int(0))]);
        Some(())
    }

    /// MaxPool/AveragePool attributes; `ceil_mode` from the declared output size.
    fn pool_attrs(&mut self, i: usize, max: bool) -> Option<Attrs> {
        let m = self.model;
        let op = m.op(i)?;
        let p = |k: usize| i64::from(op.param(k));
        let (_, _, h, w) = m.tensor(op.input(0)?).info.shape.nchw()?;
        let (_, _, oh, ow) = m.tensor(op.output(0)).info.shape.nchw()?;
        let (dh, dw) = if max { (p(8), p(9)) } else { (1, 1) };
        let floor = |n: usize, k: i64, s: i64, a: i64, b: i64, d: i64| {
            (n as i64 + a + b - (d * (k - 1) + 1)) / s + 1
        };
        let fh = floor(h, p(0), p(2), p(4), p(6), dh);
        let fw = floor(w, p(1), p(3), p(5), p(7), dw);
        let ceil = oh as i64 != fh || ow as i64 != fw;
        let mut attrs = vec![
            ("kernel_shape", Attr::Ints(vec![p(0), p(1)])),
            ("strides", Attr::Ints(vec![p(2), p(3)])),
            ("pads", Attr::Ints(vec![p(4), p(5), p(6), p(7)])),
            ("ceil_mode", Attr::Int(i64::from(ceil))),
        ];
        if max {
            attrs.push(("dilations", Attr::Ints(vec![dh, dw])));
        }
        Some(attrs)
    }
}

/// A finite, positive scale (ONNX Runtime refuses others); `None` otherwise.
fn scale_ok(s: f32) -> Option<f32> {
    (s.is_finite() && s > 0.0).then_some(s)
}

/// A constant tensor of 4-byte little-endian values of `dtype`, decoded by `read`.
fn const_words<T>(m: &Model<'_>, t: u16, dtype: DType, read: fn([u8; 4]) -> T) -> Option<Vec<T>> {
    let d = m.tensor(t);
    match d.storage {
        Storage::Const(b) if d.info.dtype == dtype => Some(
            b.chunks_exact(4)
                .map(|c| read([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        _ => None,
    }
}

fn const_f32s(m: &Model<'_>, t: u16) -> Option<Vec<f32>> {
    const_words(m, t, DType::F32, f32::from_le_bytes)
}

fn const_i32s(m: &Model<'_>, t: u16) -> Option<Vec<i32>> {
    const_words(m, t, DType::I32, i32::from_le_bytes)
}

/// int8 Conv weights `[oc, ic/g, kh, kw]` in row-major order, pre-packed ones unpacked.
fn weights_plain(m: &Model<'_>, w_t: u16) -> Option<Vec<u8>> {
    let d = m.tensor(w_t);
    let Storage::Const(b) = d.storage else {
        return None;
    };
    if d.info.dtype != DType::I8 {
        return None;
    }
    match d.info.layout {
        Layout::Plain => Some(b.to_vec()),
        Layout::Pairs6 => {
            let g = Pairs6::of(&d.info.shape)?;
            let v: Vec<i16> = b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            let mut out = Vec::with_capacity(g.oc * g.k);
            for o in 0..g.oc {
                for k in 0..g.k {
                    out.push(i8::try_from(*v.get(g.index(o, k))?).ok()? as u8);
                }
            }
            Some(out)
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Whether op `i` of `model` can be exported (the capability query the partitioner asks).
/// The attributes a Conv and a ConvTranspose share, from cairn's conv params.
/// `p(k)` is conv param `k`.
pub(crate) fn conv_attrs(p: impl Fn(usize) -> i64, kh: usize, kw: usize) -> Attrs {
    vec![
        ("kernel_shape", Attr::Ints(vec![kh as i64, kw as i64])),
        ("strides", Attr::Ints(vec![p(cp::SH), p(cp::SW)])),
        (
            "pads",
            Attr::Ints(vec![p(cp::PT), p(cp::PL), p(cp::PB), p(cp::PR)]),
        ),
        ("dilations", Attr::Ints(vec![p(cp::DH), p(cp::DW)])),
        ("group", Attr::Int(p(cp::GROUP))),
    ]
}

pub fn op_exportable(model: &Model<'_>, i: usize) -> bool {
    let mut b = Builder::new(model);
    b.op(i).is_some()
}

fn value_info(model: &Model<'_>, t: u16) -> ValueInfo {
    let info = model.tensor(t).info;
    ValueInfo {
        name: tensor_name(t),
        elem: elem(info.dtype),
        dims: dims(&info),
    }
}

/// Export the ops of `seg` (whatever its placement) as one ONNX model; `None` when an op
/// cannot be exported or the segment writes nothing read after it.
pub fn export_segment(model: &Model<'_>, seg: Segment) -> Option<Exported> {
    let mut b = Builder::new(model);
    for i in seg.ops() {
        b.op(i)?;
    }
    let inputs: Vec<u16> = segment_inputs(model, seg).collect();
    let outputs: Vec<u16> = segment_outputs(model, seg).collect();
    if outputs.is_empty() {
        return None;
    }
    b.g.inputs = inputs.iter().map(|&t| value_info(model, t)).collect();
    b.g.outputs = outputs.iter().map(|&t| value_info(model, t)).collect();
    Some(Exported {
        onnx: b.g.to_model_bytes(OPSET),
        inputs,
        outputs,
    })
}

/// The whole model as one QDQ ONNX graph (`None` when an op cannot be exported).
pub fn export_model(model: &Model<'_>) -> Option<Exported> {
    let n = u16::try_from(model.n_ops()).ok()?;
    export_segment(
        model,
        Segment {
            start: 0,
            end: n,
            placement: cairn_core::partition::Placement::Cpu,
        },
    )
}

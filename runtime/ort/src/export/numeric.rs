//! Arithmetic ops of the exporter beyond the convolutions and matrix products of the
//! parent module: int8 Softmax, LayerNorm and ReduceMean (float between DequantizeLinear
//! and QuantizeLinear, as cairn computes them), int8 ConvTranspose (per-channel weights
//! like Conv), int8 ReduceMax/ReduceMin (exact) and f32 Add/Sub/Mul/Div (one IEEE operation
//! per element on both sides: exact).
//!
//! cairn's int8 Softmax takes `x − x_max` in integers before `expf` and its LayerNorm sums
//! in element order; ONNX Runtime does the same float math in its own order, so an output
//! may differ by 1 LSB (the bound `tests/tests/ort_backend.rs` holds them to).

use cairn_core::model::Storage;
use cairn_core::op::conv as cp;
use cairn_core::op::ReduceFn;
use cairn_core::{DType, Layout, OpKind};

use super::{const_f32s, f32s, i64s, scale_ok, Builder, Weighted};
use crate::proto::{Attr, ElemType};

impl Builder<'_, '_> {
    /// int8 Softmax (flavour 0) over the middle axis of `[outer, n, inner]` (params 0..3):
    /// DQ, Reshape, Softmax(axis 1), Reshape back, Q. Flavour 1 (ONNX Runtime's
    /// QLinearSoftmax table) is not a float softmax and stays on the CPU.
    pub(super) fn softmax(&mut self, i: usize, out: String) -> Option<()> {
        let (op, x_t, x, y) = self.first_io(i)?;
        if op.param(3) != 0 || x.dtype != DType::I8 {
            return None;
        }
        let rows: Vec<i64> = (0..3).map(|k| i64::from(op.param(k))).collect();
        let back: Vec<i64> = y.shape.dims().iter().map(|&d| i64::from(d)).collect();
        let xv = self.value(x_t)?;
        let xf = self.dq(xv, &x)?;
        let s3 = self.init("shape", ElemType::Int64, vec![3], i64s(&rows));
        let x3 = self.node("Reshape", vec![xf, s3], vec![]);
        let e = self.node("Softmax", vec![x3], vec![("axis", Attr::Int(1))]);
        let sy = self.init(
            "shape",
            ElemType::Int64,
            vec![back.len() as i64],
            i64s(&back),
        );
        let r = self.node("Reshape", vec![e, sy], vec![]);
        self.q_out(r, &y, out, -128, 127)
    }

    /// int8 LayerNorm over the axes from param 0 on, epsilon param 1 (f32 bits), f32 gamma
    /// and optional beta: DQ, LayerNormalization (opset 17), Q.
    pub(super) fn layer_norm(&mut self, i: usize, out: String) -> Option<()> {
        let m = self.model;
        let (op, x_t, x, y) = self.first_io(i)?;
        if x.dtype != DType::I8 {
            return None;
        }
        let axis = usize::try_from(op.param(0)).ok()?;
        let eps = f32::from_bits(op.param(1) as u32);
        let norm_dims: Vec<i64> = x
            .shape
            .dims()
            .get(axis..)?
            .iter()
            .map(|&d| i64::from(d))
            .collect();
        let inner = x.shape.prod(axis, x.shape.rank());
        let mut affine = |k: usize, what: &str| -> Option<String> {
            let v = const_f32s(m, op.input(k)?)?;
            (v.len() == inner)
                .then(|| self.init(what, ElemType::Float, norm_dims.clone(), f32s(&v)))
        };
        let gamma = affine(1, "gamma")?;
        let mut ins = vec![gamma];
        if op.input(2).is_some() {
            ins.push(affine(2, "beta")?);
        }
        let xv = self.value(x_t)?;
        let xf = self.dq(xv, &x)?;
        ins.insert(0, xf);
        let attrs = vec![
            ("axis", Attr::Int(axis as i64)),
            ("epsilon", Attr::Float(eps)),
        ];
        let r = self.node("LayerNormalization", ins, attrs);
        self.q_out(r, &y, out, -128, 127)
    }

    /// int8 ReduceMean over the axes of mask param 0 (kept as 1 with param 1): DQ,
    /// ReduceMean, Q.
    pub(super) fn reduce_mean(&mut self, i: usize, out: String) -> Option<()> {
        let (op, x_t, x, y) = self.first_io(i)?;
        if x.dtype != DType::I8 {
            return None;
        }
        let mask = op.param(0) as u32;
        let axes: Vec<i64> = (0..x.shape.rank() as i64)
            .filter(|&d| mask & (1 << d) != 0)
            .collect();
        let xv = self.value(x_t)?;
        let xf = self.dq(xv, &x)?;
        let attrs = vec![
            ("axes", Attr::Ints(axes)),
            ("keepdims", Attr::Int(i64::from(op.param(1) != 0))),
        ];
        let r = self.node("ReduceMean", vec![xf], attrs);
        self.q_out(r, &y, out, -128, 127)
    }

    /// int8 ConvTranspose: weights `[c, oc/g, kh, kw]` dequantized per output channel
    /// (axis 1, so one group; grouped ones only with one scale for all), DQ(bias),
    /// ConvTranspose, Clip, Q.
    pub(super) fn conv_transpose(&mut self, i: usize, out: String) -> Option<()> {
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
        if x.dtype != DType::I8 || w.dtype != DType::I8 || w.layout != Layout::Plain {
            return None;
        }
        let Storage::Const(wb) = m.tensor(w_t).storage else {
            return None;
        };
        let (c, ocg, kh, kw) = w.shape.nchw()?;
        let group = usize::try_from(op.param(cp::GROUP)).ok()?;
        let oc = ocg.checked_mul(group)?;
        let rq = const_f32s(m, rq_t)?;
        if rq.len() != oc || (group > 1 && rq.iter().any(|&r| r != rq[0])) {
            return None;
        }
        let sw: Vec<f32> = rq
            .iter()
            .map(|&r| scale_ok(r * sy / sx))
            .collect::<Option<_>>()?;
        let xv = self.value(x_t)?;
        let xf = self.dq(xv, &x)?;
        let wdims = vec![c as i64, ocg as i64, kh as i64, kw as i64];
        let wq = self.init("w", ElemType::Int8, wdims, wb.to_vec());
        let wf = if group == 1 {
            let ws = self.init("ws", ElemType::Float, vec![oc as i64], f32s(&sw));
            let wz = self.init("wz", ElemType::Int8, vec![oc as i64], vec![0; oc]);
            self.node(
                "DequantizeLinear",
                vec![wq, ws, wz],
                vec![("axis", Attr::Int(1))],
            )
        } else {
            let ws = self.scalar_f32(sw[0]);
            let wz = self.zero_point(DType::I8, 0)?;
            self.node("DequantizeLinear", vec![wq, ws, wz], vec![])
        };
        let mut ins = vec![xf, wf];
        if let Some(b_t) = op.input(2) {
            let sb: Vec<f32> = rq
                .iter()
                .map(|&r| scale_ok(r * sy))
                .collect::<Option<_>>()?;
            ins.push(self.bias_dq(b_t, &sb)?);
        }
        let p = |k: usize| i64::from(op.param(k));
        let mut attrs = super::conv_attrs(p, kh, kw);
        attrs.push(("output_padding", Attr::Ints(vec![p(cp::OPH), p(cp::OPW)])));
        let r = self.node("ConvTranspose", ins, attrs);
        self.q_out(r, &y, out, op.param(cp::T_ACT_LO), op.param(cp::T_ACT_HI))
    }
    /// f32 Add, Sub, Mul or Div with broadcasting and the fused clamp (params 0, 1: f32
    /// bits), Clip only where a bound is finite. One IEEE operation per element, so the
    /// results are cairn's bit for bit (but a NaN from 0/0 stays NaN here, where cairn's
    /// clamp turns it into the lower bound).
    pub(super) fn binary_f32(&mut self, i: usize, out: String) -> Option<()> {
        let m = self.model;
        let op = m.op(i)?;
        let (a_t, b_t) = (op.input(0)?, op.input(1)?);
        let types = [a_t, b_t, op.output(0)].map(|t| m.tensor(t).info.dtype);
        if types != [DType::F32; 3] {
            return None;
        }
        let kind = match op.kind {
            OpKind::Add => "Add",
            OpKind::Sub => "Sub",
            OpKind::Mul => "Mul",
            OpKind::Div => "Div",
            _ => return None,
        };
        let (lo, hi) = (
            f32::from_bits(op.param(0) as u32),
            f32::from_bits(op.param(1) as u32),
        );
        if lo.is_nan() || hi.is_nan() {
            return None;
        }
        let (a, b) = (self.value(a_t)?, self.value(b_t)?);
        if lo == f32::NEG_INFINITY && hi == f32::INFINITY {
            self.node_to(kind, vec![a, b], out, vec![]);
        } else {
            let r = self.node(kind, vec![a, b], vec![]);
            let (l, h) = (self.scalar_f32(lo), self.scalar_f32(hi));
            self.node_to("Clip", vec![r, l, h], out, vec![]);
        }
        Some(())
    }

    /// int8 Reduce Max or Min over the axes of mask param 1 (kept with param 2): ONNX
    /// ReduceMax/ReduceMin on the stored values (the quantization is monotonic), exact.
    pub(super) fn reduce_select(&mut self, i: usize, out: String) -> Option<()> {
        let (op, x_t, x, y) = self.first_io(i)?;
        if x.dtype != DType::I8 || y.quant != x.quant {
            return None;
        }
        let kind = match ReduceFn::from_code(op.param(0))? {
            ReduceFn::Max => "ReduceMax",
            ReduceFn::Min => "ReduceMin",
            _ => return None,
        };
        let mask = op.param(1) as u32;
        let axes: Vec<i64> = (0..x.shape.rank() as i64)
            .filter(|&d| mask & (1 << d) != 0)
            .collect();
        let xv = self.value(x_t)?;
        let attrs = vec![
            ("axes", Attr::Ints(axes)),
            ("keepdims", Attr::Int(i64::from(op.param(2) != 0))),
        ];
        self.node_to(kind, vec![xv], out, attrs);
        Some(())
    }
}

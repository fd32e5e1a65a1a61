//! Models quantized by ONNX Runtime: the QOperator format (QLinearConv, QLinearMatMul and
//! the com.microsoft QLinear* ops, QGemm) and dynamic quantization (DynamicQuantizeLinear,
//! MatMulInteger, ConvInteger).
//!
//! A QLinear node is read as DequantizeLinear → float op → QuantizeLinear with the node's
//! own scales and zero points, so the QDQ machinery (`Hint::Act` on the float tensor,
//! `Hint::Weight`/`Hint::Bias` on exactly dequantized constants) turns it into cairn's
//! int8 op. A quantized activation is carried as its float value in real units
//! (`Val::FakeQ`); uint8 params map to int8 exactly (zero point − 128). When every input
//! of a node is a constant, the node is folded exactly as ONNX defines it (integer sums,
//! requantization in f64, round half to even) and its output stays an integer constant.
//!
//! Dynamic quantization has no scales known at convert time: DynamicQuantizeLinear feeding
//! only MatMulInteger/ConvInteger whose results are cast to float and multiplied by the
//! scales (what `quantize_dynamic` emits) is lowered to a FullyConnected whose constant
//! weights keep their integers (`Hint::Weight`: without calibration `run_time_int8` makes
//! it FullyConnected.f32-w8, with `--calibrate` it becomes static int8 on those integers),
//! or a float Conv on the exactly dequantized weights. Anywhere else these ops are computed exactly in f32 (integers below 2^24).
//! The older `quantize_dynamic` Conv form adds an int32 bias before the cast, quantized at
//! run time as `Floor(bias / (x_scale · w_scale))`: the activation's scale is taken as the
//! constant [`DYN_SCALE`] (the weights scaled by its inverse, exactly), so that bias folds
//! at convert time with an error below `DYN_SCALE · w_scale`. DynamicQuantizeLSTM becomes
//! an LSTM on its exactly dequantized weights.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Context, Result};
use cairn_core::emit::QuantSpec;
use cairn_core::op::{BinaryFn, ReduceFn, UnaryFn};
use cairn_core::quant::quantize_f32;
use cairn_core::{DType, OpKind};

use crate::ir::Hint;
use crate::lower::{Lower, Val, INF_BITS};
use crate::lower_math::op_as;
use crate::onnx::{Attrs, HData, HostTensor, NodeProto};

/// What the lowering of quantized ops remembers between nodes.
#[derive(Clone, Debug, Default)]
pub(crate) struct QopState {
    /// Outputs of DynamicQuantizeLinear nodes lowered as the dynamic-quantization pattern:
    /// the value is the float input itself (real units), its scale [`DYN_SCALE`] and its
    /// zero point 0.
    dyn_real: HashSet<String>,
    /// A note was already given for the dynamic pattern.
    noted_dynamic: bool,
    /// Run-time values already in real units that DequantizeLinear passes on without
    /// taking params from (rows gathered from a quantized table).
    real_rows: HashSet<String>,
}

/// Exact integers in f32: sums below this bound hold no rounding.
const F32_EXACT: f64 = 16_777_216.0;

/// The scale a dynamically quantized activation is given at convert time: the activation
/// stays real (`x`), read as `x / DYN_SCALE` integers by dividing the weights of the
/// integer op by it (a power of two, so exactly). Small, so that a bias quantized with it
/// (`Floor(b / (DYN_SCALE · w_scale))`) loses at most `DYN_SCALE · w_scale`.
const DYN_SCALE: f32 = 1.0 / 4096.0;

/// Positions of the quantized inputs of a QLinear op with `n` inputs (each value is
/// followed by its scale and zero point).
fn quant_inputs(op: &str, n: usize) -> Option<Vec<usize>> {
    Some(match op {
        "QLinearConv" | "QLinearMatMul" | "QLinearAdd" | "QLinearMul" | "QGemm" => vec![0, 3],
        "QLinearSigmoid"
        | "QLinearLeakyRelu"
        | "QLinearGlobalAveragePool"
        | "QLinearAveragePool"
        | "QLinearSoftmax" => vec![0],
        "QLinearConcat" => (2..n).step_by(3).collect(),
        _ => return None,
    })
}

/// Ops that move or select int8 values without arithmetic: their output keeps the input's
/// scale and zero point (ONNX Runtime's QOperator graphs run them on uint8 tensors).
const MOVEMENT: &[&str] = &[
    "MaxPool",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Identity",
    "Slice",
    "Split",
    "Gather",
    "Resize",
    "DepthToSpace",
    "SpaceToDepth",
];

/// Lower `n` if it is one of the quantized ops; false if it is not.
pub(crate) fn lower_qop_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    if !(n.domain.is_empty() || n.domain == "ai.onnx" || n.domain == "com.microsoft") {
        return Ok(false);
    }
    match n.op_type.as_str() {
        "QLinearConv" => qlinear_conv(l, n)?,
        "QLinearMatMul" => qlinear_matmul(l, n)?,
        "QGemm" => qgemm(l, n)?,
        "QLinearAdd" | "QLinearMul" => {
            let (a, b) = (real_in(l, n, 0, None)?, real_in(l, n, 3, None)?);
            let op = &n.op_type[7..];
            let y = float_node(l, n, op, &[a, b], vec![])?;
            quantized_out(l, n, y, 6, 7)?;
        }
        "QLinearSigmoid" | "QLinearLeakyRelu" => {
            let x = real_in(l, n, 0, None)?;
            let op = &n.op_type[7..];
            let y = float_node(l, n, op, &[x], n.attribute.clone())?;
            quantized_out(l, n, y, 3, 4)?;
        }
        "QLinearGlobalAveragePool" | "QLinearAveragePool" => {
            if Attrs(n).int("channels_last", 0) != 0 {
                bail!(
                    "{} with channels_last = 1 (NHWC) is not supported; cairn pools NCHW",
                    n.op_type
                );
            }
            let x = real_in(l, n, 0, None)?;
            let attrs = n
                .attribute
                .iter()
                .filter(|a| a.name != "channels_last")
                .cloned()
                .collect();
            let y = float_node(l, n, &n.op_type[7..], &[x], attrs)?;
            quantized_out(l, n, y, 3, 4)?;
        }
        "QLinearSoftmax" => {
            let x = real_in(l, n, 0, None)?;
            let a = Attrs(n);
            // The node's `opset` says which Softmax it means (before 13: the input is
            // coerced to 2-d at `axis`).
            let opset = a.int("opset", l.opset);
            let attrs = n
                .attribute
                .iter()
                .filter(|a| a.name == "axis")
                .cloned()
                .collect();
            let saved = l.opset;
            l.opset = opset;
            let y = float_node(l, n, "Softmax", &[x], attrs);
            l.opset = saved;
            quantized_out(l, n, y?, 3, 4)?;
        }
        "QLinearConcat" => {
            if n.input.len() < 5 || !(n.input.len() - 2).is_multiple_of(3) {
                bail!(
                    "QLinearConcat takes Y_scale, Y_zero_point and (X, scale, zero point) triples; it has {} inputs",
                    n.input.len()
                );
            }
            let xs: Vec<usize> = (2..n.input.len())
                .step_by(3)
                .map(|k| real_in(l, n, k, None))
                .collect::<Result<_>>()?;
            let attrs = n
                .attribute
                .iter()
                .filter(|a| a.name == "axis")
                .cloned()
                .collect();
            let y = float_node(l, n, "Concat", &xs, attrs)?;
            quantized_out(l, n, y, 0, 1)?;
        }
        "Gather" if quantized_table(l, n) => gather_quantized(l, n)?,
        "MatMulInteger" => integer_op(l, n, false)?,
        "ConvInteger" => integer_op(l, n, true)?,
        "DynamicQuantizeLinear" => dynamic_quantize(l, n)?,
        "DynamicQuantizeLSTM" => dynamic_quantize_lstm(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Scales, zero points and the integer type of one quantized value.
#[derive(Clone, Debug)]
struct Qp {
    scales: Vec<f32>,
    zps: Vec<i64>,
    dt: DType,
}

impl Qp {
    fn range(&self) -> (i32, i32) {
        if self.dt == DType::I8 {
            (-128, 127)
        } else {
            (0, 255)
        }
    }
    /// The zero point in cairn's int8 domain (uint8 values shift by −128).
    fn zp8(&self) -> i32 {
        self.zps[0] as i32 - if self.dt == DType::U8 { 128 } else { 0 }
    }
    fn per_tensor(&self, what: &str) -> Result<(f32, i64)> {
        if self.scales.len() != 1 || self.zps.len() != 1 {
            bail!(
                "{what}: per-channel quantization of an activation is not supported ({} scales)",
                self.scales.len()
            );
        }
        Ok((self.scales[0], self.zps[0]))
    }
}

fn zp_dtype(h: &HostTensor) -> Result<DType> {
    Ok(match h.data {
        HData::U8(_) => DType::U8,
        HData::I8(_) => DType::I8,
        _ => bail!("quantized zero points must be uint8 or int8"),
    })
}

/// The params at inputs `ks` (scale) and `kz` (zero point, optional: uint8 0).
fn qparams(l: &Lower, n: &NodeProto, ks: usize, kz: usize) -> Result<Qp> {
    let sname = n
        .input
        .get(ks)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("{}: missing scale input {ks}", n.op_type))?;
    let scales = l
        .host(sname)
        .with_context(|| format!("{}: the scale '{sname}' must be a constant", n.op_type))?
        .to_f32();
    if scales.is_empty() || scales.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        bail!("{}: scales must be finite and positive", n.op_type);
    }
    let (zps, dt) = match l.opt_host(n, kz).with_context(|| {
        format!(
            "{}: the zero point (input {kz}) must be a constant",
            n.op_type
        )
    })? {
        Some(h) => (h.to_i64(), zp_dtype(&h)?),
        None => (vec![0; scales.len()], DType::U8),
    };
    if zps.len() != scales.len() && zps.len() != 1 {
        bail!(
            "{}: {} scales but {} zero points",
            n.op_type,
            scales.len(),
            zps.len()
        );
    }
    let zps = if zps.len() == 1 && scales.len() > 1 {
        vec![zps[0]; scales.len()]
    } else {
        zps
    };
    Ok(Qp { scales, zps, dt })
}

/// Two optional param inputs name the same constant (by name or by value and type).
fn same_param(l: &Lower, a: Option<&String>, b: Option<&String>) -> bool {
    let a = a.filter(|s| !s.is_empty());
    let b = b.filter(|s| !s.is_empty());
    if a == b {
        return true;
    }
    let host = |s: Option<&String>| match s {
        Some(s) => l.host(s).ok(),
        None => Some(HostTensor {
            shape: vec![],
            data: HData::U8(vec![0]),
        }),
    };
    match (host(a), host(b)) {
        (Some(x), Some(y)) => {
            std::mem::discriminant(&x.data) == std::mem::discriminant(&y.data)
                && x.to_f32() == y.to_f32()
        }
        _ => false,
    }
}

/// Every reader of the quantized value `v` (params `scale`, `zp`) reads it as its real
/// value: DequantizeLinear or a QLinear op with the same params, or a movement op whose
/// outputs are read that way in turn. Then the value can be carried in real units.
pub(crate) fn read_as_real(
    l: &Lower,
    v: &str,
    scale: Option<&String>,
    zp: Option<&String>,
) -> bool {
    reads_real(l, v, scale, zp, 0)
}

fn reads_real(
    l: &Lower,
    v: &str,
    scale: Option<&String>,
    zp: Option<&String>,
    depth: usize,
) -> bool {
    let Some(cons) = l.consumers.get(v) else {
        return false;
    };
    if cons.is_empty() || depth > 16 {
        return false;
    }
    cons.iter().all(|c| {
        let same = |k: usize| {
            same_param(l, c.input.get(k + 1), scale) && same_param(l, c.input.get(k + 2), zp)
        };
        let op = c.op_type.as_str();
        if op == "DequantizeLinear" {
            return c.input.first().map(String::as_str) == Some(v) && same(0);
        }
        if let Some(ins) = quant_inputs(op, c.input.len()) {
            return c
                .input
                .iter()
                .enumerate()
                .filter(|(_, s)| s.as_str() == v)
                .all(|(k, _)| ins.contains(&k) && same(k));
        }
        if MOVEMENT.contains(&op) && c.domain.is_empty() {
            // Only the data input may be the value (not a shape, index or scale).
            let data_only = c.input.iter().skip(1).all(|s| s.as_str() != v);
            return data_only
                && c.input.first().map(String::as_str) == Some(v)
                && c.output
                    .iter()
                    .filter(|o| !o.is_empty())
                    .all(|o| reads_real(l, o, scale, zp, depth + 1));
        }
        false
    })
}

/// Gather from an int8/uint8 constant table with run-time indices (`quantize_dynamic`
/// quantizes embedding tables so).
fn quantized_table(l: &Lower, n: &NodeProto) -> bool {
    let table = n.input.first().map(|s| l.val(s));
    let idx = n.input.get(1).map(|s| l.val(s));
    matches!(table, Some(Ok(Val::Int(h))) if matches!(h.data, HData::U8(_) | HData::I8(_)))
        && matches!(idx, Some(Ok(Val::T(_))))
}

/// The first DequantizeLinear reading `v`, directly or through movement ops on their data
/// input (a Transpose between a Gather and its DequantizeLinear).
fn first_dequantize<'m>(l: &Lower<'m>, v: &str, depth: usize) -> Option<&'m NodeProto> {
    let cons = l.consumers.get(v)?;
    if let Some(d) = cons
        .iter()
        .find(|c| c.op_type == "DequantizeLinear" && c.input.first().map(String::as_str) == Some(v))
    {
        return Some(*d);
    }
    if depth > 16 {
        return None;
    }
    cons.iter()
        .filter(|c| {
            MOVEMENT.contains(&c.op_type.as_str())
                && c.domain.is_empty()
                && c.input.first().map(String::as_str) == Some(v)
        })
        .flat_map(|c| c.output.iter().filter(|o| !o.is_empty()))
        .find_map(|o| first_dequantize(l, o, depth + 1))
}

/// Rows of a quantized table read through DequantizeLinear: the gather runs on the exactly
/// dequantized table, so the rows leave in real units (int8 again after calibration).
fn gather_quantized(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let out = n.output.first().cloned().unwrap_or_default();
    let cons = l.consumers.get(&out).cloned().unwrap_or_default();
    if cons.is_empty() {
        return Ok(());
    }
    // Every reader a DequantizeLinear with the same params, directly or through movement
    // ops (a Transpose to the time-major layout of an LSTM after it).
    let first = first_dequantize(l, &out, 0);
    let Some(first) = first.filter(|d| read_as_real(l, &out, d.input.get(1), d.input.get(2)))
    else {
        bail!("Gather of a quantized table whose rows are read other than by DequantizeLinear nodes of one scale (directly or through movement ops) is not supported");
    };
    let qp = qparams(l, first, 1, 2)?;
    qp.per_tensor("Gather of a quantized table")?;
    let Val::Int(h) = l.val(&n.input[0])? else {
        bail!("Gather: the table is not a constant");
    };
    let real = dequant(&h, &qp, None, "Gather")?;
    let table =
        l.g.add_f32(format!("{}:real", n.input[0]), h.shape.clone(), &real);
    // Its integers, for a conversion that keeps the table int8 (`run_time_int8`).
    let shifted: Option<(Vec<i8>, i32)> = match &h.data {
        HData::I8(v) => Some((v.clone(), qp.zps[0] as i32)),
        HData::U8(v) => Some((
            v.iter().map(|&x| (x as i32 - 128) as i8).collect(),
            qp.zps[0] as i32 - 128,
        )),
        _ => None,
    };
    if let Some((q, zero_point)) = shifted.filter(|(_, z)| (-128..=127).contains(z)) {
        l.g.tensors[table].hint = Some(Hint::Table {
            q,
            scale: qp.scales[0],
            zero_point,
        });
    }
    let idx = crate::lower_math::typed_t(l, &n.input[1], DType::I32)?;
    let y = float_node(l, n, "Gather", &[table, idx], n.attribute.clone())?;
    // The rows and every movement op's output on them are real values: their
    // DequantizeLinear passes them on unchanged and states no activation params (a model
    // quantized dynamically has none: with them it would not be calibrated).
    let mut todo = vec![out];
    while let Some(v) = todo.pop() {
        for c in l.consumers.get(&v).cloned().unwrap_or_default() {
            if MOVEMENT.contains(&c.op_type.as_str()) && c.input.first() == Some(&v) {
                todo.extend(c.output.iter().filter(|o| !o.is_empty()).cloned());
            }
        }
        l.qop.real_rows.insert(v);
    }
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// DequantizeLinear of a value carried in real units (a movement op's output on one):
/// the value itself.
/// Whether the value `name` is rows of a quantized table in real units (`gather_quantized`).
pub(crate) fn is_real_rows(l: &Lower, name: &str) -> bool {
    l.qop.real_rows.contains(name)
}

pub(crate) fn dequantize_real(l: &mut Lower, n: &NodeProto, t: usize) -> Result<()> {
    if n.input.first().is_some_and(|s| l.qop.real_rows.contains(s)) {
        l.out(n, 0, Val::T(t));
        return Ok(());
    }
    let qp = qparams(l, n, 1, 2)?;
    let (s, _) = qp.per_tensor("DequantizeLinear")?;
    let h = &mut l.g.tensors[t];
    if h.hint.is_none() {
        h.hint = Some(Hint::Act {
            scale: s,
            zero_point: qp.zp8(),
        });
    }
    l.out(n, 0, Val::T(t));
    Ok(())
}

fn set_act_hint(l: &mut Lower, t: usize, s: f32, zp8: i32) {
    let h = &mut l.g.tensors[t];
    if h.hint.is_none() && h.dtype == DType::F32 && !h.is_const() {
        h.hint = Some(Hint::Act {
            scale: s,
            zero_point: zp8,
        });
    }
}

/// The exact real values of an integer constant under `qp` (per channel along `axis`).
fn dequant(h: &HostTensor, qp: &Qp, axis: Option<usize>, what: &str) -> Result<Vec<f32>> {
    let q = h.to_i64();
    let ch = qp.scales.len();
    // Every caller's params: one zero point per scale, at least one (an empty zero-point
    // tensor of an integer op gives none).
    if ch == 0 || qp.zps.len() != ch {
        bail!(
            "{what}: {ch} scales and {} zero points (one of each, or one per channel)",
            qp.zps.len()
        );
    }
    let inner: usize = match axis {
        Some(a) if ch > 1 => {
            if h.shape.get(a) != Some(&ch) {
                bail!(
                    "{what}: {ch} scales do not match axis {a} of shape {:?}",
                    h.shape
                );
            }
            h.shape[a + 1..].iter().product()
        }
        _ if ch > 1 => bail!("{what}: per-channel params are not supported here"),
        _ => 1,
    };
    Ok(q.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = if ch > 1 { (i / inner.max(1)) % ch } else { 0 };
            (v - qp.zps[c]) as f32 * qp.scales[c]
        })
        .collect())
}

/// The weight hint for an integer constant whose params make it symmetric int8.
fn weight_hint(h: &HostTensor, qp: &Qp, axis: Option<usize>) -> Option<Hint> {
    let axis = (qp.scales.len() > 1).then_some(axis).flatten();
    let q: Vec<i8> = match &h.data {
        HData::I8(v) if qp.zps.iter().all(|&z| z == 0) => v.clone(),
        HData::U8(v) if qp.zps.iter().all(|&z| z == 128) => {
            v.iter().map(|&x| (x as i32 - 128) as i8).collect()
        }
        _ => return None,
    };
    Some(Hint::Weight {
        q,
        scales: qp.scales.clone(),
        axis,
    })
}

/// Quantized input `k` of `n` in real units (a float tensor). Constants are dequantized
/// exactly (per channel along `axis` when given); a run-time int8/uint8 tensor gets a
/// Dequantize op.
fn real_in(l: &mut Lower, n: &NodeProto, k: usize, axis: Option<usize>) -> Result<usize> {
    let qp = qparams(l, n, k + 1, k + 2)?;
    let name = n
        .input
        .get(k)
        .ok_or_else(|| anyhow!("{}: missing input {k}", n.op_type))?
        .clone();
    let what = format!("{} input {k}", n.op_type);
    match l.val(&name)? {
        Val::FakeQ { t, .. } => {
            let (s, _) = qp.per_tensor(&what)?;
            set_act_hint(l, t, s, qp.zp8());
            Ok(t)
        }
        Val::Int(h) => {
            zp_dtype(&h).with_context(|| format!("{what}: the tensor"))?;
            let real = dequant(&h, &qp, axis, &what)?;
            let id = l
                .g
                .add_f32(format!("{name}:real"), h.shape.clone(), &real);
            l.g.tensors[id].hint = weight_hint(&h, &qp, axis);
            Ok(id)
        }
        Val::T(t) if l.g.tensors[t].dtype == DType::F32 => {
            let (s, _) = qp.per_tensor(&what)?;
            set_act_hint(l, t, s, qp.zp8());
            Ok(t)
        }
        Val::T(t) if matches!(l.g.tensors[t].dtype, DType::U8 | DType::I8) => {
            let shape = l.shape(t);
            let y = l.op_n(
                OpKind::Dequantize,
                vec![Some(t)],
                vec![],
                &[shape],
                Some((DType::F32, QuantSpec::None)),
            )?;
            let (s, _) = qp.per_tensor(&what)?;
            set_act_hint(l, y[0], s, qp.zp8());
            Ok(y[0])
        }
        Val::T(_) => bail!(
            "{what}: a run-time integer tensor (a model input of an integer type) is not supported as a quantized input; quantize a float input with QuantizeLinear"
        ),
        Val::Absent => bail!("{what} is absent"),
    }
}

/// Lower a float op of ONNX type `op` on cairn tensors, as the node `n` would, and return
/// its output tensor.
pub(crate) fn float_node(
    l: &mut Lower,
    n: &NodeProto,
    op: &str,
    ins: &[usize],
    attribute: Vec<crate::onnx_pb::AttributeProto>,
) -> Result<usize> {
    let base = n.output.first().cloned().unwrap_or_default();
    let names: Vec<String> = ins
        .iter()
        .enumerate()
        .map(|(k, &t)| {
            let name = format!("{base}\u{1}qop_in{k}");
            l.vals.insert(name.clone(), Val::T(t));
            name
        })
        .collect();
    let out = format!("{base}\u{1}qop_out");
    let node = NodeProto {
        op_type: op.to_string(),
        input: names.clone(),
        output: vec![out.clone()],
        attribute,
        ..Default::default()
    };
    let r = if crate::lower_shape::lower_shape_op(l, &node)? {
        Ok(())
    } else {
        crate::lower_nn::lower_nn_op(l, &node)
    };
    for name in &names {
        l.vals.remove(name);
    }
    r?;
    match l.vals.remove(&out) {
        Some(Val::T(t)) | Some(Val::FakeQ { t, .. }) => Ok(t),
        Some(Val::Int(h)) => Ok(l.g.add_f32(&out, h.shape.clone(), &h.to_f32())),
        _ => bail!("{op} gave no value"),
    }
}

/// The output of a QLinear node from its real value `y` and its params at `ks`, `kz`:
/// an exact integer constant when `y` is constant; a value carried in real units when
/// every reader takes it so; else an explicit Quantize op.
fn quantized_out(l: &mut Lower, n: &NodeProto, y: usize, ks: usize, kz: usize) -> Result<()> {
    let qp = qparams(l, n, ks, kz)?;
    let (s, zp) = qp.per_tensor(&format!("{} output", n.op_type))?;
    let name = n.output.first().cloned().unwrap_or_default();
    if let Some(v) = l.g.tensors[y].const_f32() {
        let (lo, hi) = qp.range();
        let q: Vec<i64> = v
            .iter()
            .map(|&x| quantize_f32(x, s, zp as i32, lo, hi) as i64)
            .collect();
        let h = int_tensor(l.shape(y), &q, qp.dt);
        l.out(n, 0, Val::Int(h));
        return Ok(());
    }
    if read_as_real(l, &name, n.input.get(ks), n.input.get(kz)) {
        let h = &l.g.tensors[y];
        if h.hint.is_some()
            && h.hint
                != Some(Hint::Act {
                    scale: s,
                    zero_point: qp.zp8(),
                })
        {
            l.notes.push(format!(
                "'{}': its output tensor already had quantization params; the node's own were not applied",
                l.node_name
            ));
        }
        set_act_hint(l, y, s, qp.zp8());
        l.out(
            n,
            0,
            Val::FakeQ {
                t: y,
                scale: s,
                zero_point: qp.zp8(),
            },
        );
        return Ok(());
    }
    set_act_hint(l, y, s, qp.zp8());
    let shape = l.shape(y);
    let out = l.op_n(
        OpKind::Quantize,
        vec![Some(y)],
        vec![],
        &[shape],
        Some((
            qp.dt,
            QuantSpec::PerTensor {
                scale: s,
                zero_point: zp as i32,
            },
        )),
    )?;
    l.out(n, 0, Val::T(out[0]));
    Ok(())
}

fn int_tensor(shape: Vec<usize>, q: &[i64], dt: DType) -> HostTensor {
    let data = match dt {
        DType::I8 => HData::I8(q.iter().map(|&v| v as i8).collect()),
        DType::U8 => HData::U8(q.iter().map(|&v| v as u8).collect()),
        _ => HData::I32(q.iter().map(|&v| v as i32).collect()),
    };
    HostTensor { shape, data }
}

/// Integer constant input `k` minus its zero points as exact f32 values (for exact folds),
/// with the largest magnitude.
fn centered(
    l: &Lower,
    n: &NodeProto,
    k: usize,
    qp: &Qp,
    axis: Option<usize>,
) -> Result<Option<(HostTensor, f64)>> {
    let Some(Val::Int(h)) = n.input.get(k).map(|s| l.val(s)).transpose()? else {
        return Ok(None);
    };
    let ones = Qp {
        scales: vec![1.0; qp.scales.len()],
        ..qp.clone()
    };
    let v = dequant(&h, &ones, axis, &n.op_type)?;
    let m = v.iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64));
    Ok(Some((HostTensor::f32(h.shape.clone(), v), m)))
}

/// Requantize exact integer sums `acc` as ONNX's reference does: acc · (s_a·s_b/s_y) in
/// f64, plus the zero point, rounded half to even, clamped. `col` gives each element's
/// channel of `sb`.
fn requant_exact(
    acc: &[f32],
    sa: f32,
    sb: &[f32],
    y: &Qp,
    col: impl Fn(usize) -> usize,
) -> Result<Vec<i64>> {
    let (s, zp) = y.per_tensor("output")?;
    let (lo, hi) = y.range();
    Ok(acc
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let m = sa * sb[col(i) % sb.len()] / s;
            let r = (a as f64 * m as f64 + zp as f64).round_ties_even();
            r.clamp(lo as f64, hi as f64) as i64
        })
        .collect())
}

fn qlinear_conv(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let (qx, qw, qy) = (
        qparams(l, n, 1, 2)?,
        qparams(l, n, 4, 5)?,
        qparams(l, n, 6, 7)?,
    );
    let (sx, _) = qx.per_tensor("QLinearConv x")?;
    let bias_q = l
        .opt_host(n, 8)
        .context("QLinearConv: the bias must be a constant")?;
    if let Some(b) = &bias_q {
        if !matches!(b.data, HData::I32(_)) {
            bail!("QLinearConv: the bias must be int32");
        }
    }
    // Every input constant: the exact integer fold.
    if let (Some((x, mx)), Some((w, mw))) = (
        centered(l, n, 0, &qx, None)?,
        centered(l, n, 3, &qw, Some(0))?,
    ) {
        let taps: usize = w.shape.iter().skip(1).product();
        let mb = bias_q.as_ref().map_or(0.0, |b| {
            b.to_f32()
                .iter()
                .fold(0.0f64, |m, &v| m.max(v.abs() as f64))
        });
        if (taps as f64) * mx * mw + mb < F32_EXACT {
            let xt =
                l.g.add_f32(format!("{}:xi", l.node_name), x.shape.clone(), &x.to_f32());
            let wt =
                l.g.add_f32(format!("{}:wi", l.node_name), w.shape.clone(), &w.to_f32());
            let mut ins = vec![xt, wt];
            if let Some(b) = &bias_q {
                ins.push(l.g.add_f32(format!("{}:bi", l.node_name), b.shape.clone(), &b.to_f32()));
            }
            let acc = float_node(l, n, "Conv", &ins, n.attribute.clone())?;
            let ys = l.shape(acc);
            let inner: usize = ys.iter().skip(2).product();
            let oc = ys.get(1).copied().unwrap_or(1);
            let v = l.g.tensors[acc]
                .const_f32()
                .ok_or_else(|| anyhow!("QLinearConv: constant fold failed"))?;
            let q = requant_exact(&v, sx, &qw.scales, &qy, |i| (i / inner.max(1)) % oc.max(1))?;
            l.out(n, 0, Val::Int(int_tensor(ys, &q, qy.dt)));
            return Ok(());
        }
    }
    let x = real_in(l, n, 0, None)?;
    let w = real_in(l, n, 3, Some(0))?;
    let mut ins = vec![x, w];
    if let Some(b) = bias_q {
        let q: Vec<i32> = b.to_i64().iter().map(|&v| v as i32).collect();
        let oc = l.shape(w).first().copied().unwrap_or(0);
        if q.len() != oc {
            bail!(
                "QLinearConv: bias of {} values for {oc} output channels",
                q.len()
            );
        }
        let scales: Vec<f32> = (0..oc)
            .map(|c| sx * qw.scales[c % qw.scales.len()])
            .collect();
        let real: Vec<f32> = q.iter().zip(&scales).map(|(&v, &s)| v as f32 * s).collect();
        let bt =
            l.g.add_f32(format!("{}:bias", l.node_name), vec![oc], &real);
        l.g.tensors[bt].hint = Some(Hint::Bias { q, scales });
        ins.push(bt);
    }
    let y = float_node(l, n, "Conv", &ins, n.attribute.clone())?;
    quantized_out(l, n, y, 6, 7)
}

/// A constant [K, N] weight (real values, per-column params) as FullyConnected's [N, K]
/// with its int8 hint, scaled by `alpha`.
fn fc_weight(
    l: &mut Lower,
    h: &HostTensor,
    qp: &Qp,
    trans: bool,
    alpha: f32,
    what: &str,
) -> Result<usize> {
    if h.shape.len() != 2 {
        bail!("{what}: the weight must be 2-d");
    }
    // Params run along the output (N) axis: 1 for [K, N], 0 for [N, K].
    let n_axis = if trans { 0 } else { 1 };
    let (k, nn) = if trans {
        (h.shape[1], h.shape[0])
    } else {
        (h.shape[0], h.shape[1])
    };
    let real = dequant(h, qp, Some(n_axis), what)?;
    let hint = weight_hint(h, qp, Some(n_axis));
    let at = |r: usize, c: usize| if trans { r * k + c } else { c * nn + r };
    let mut w = vec![0.0f32; nn * k];
    let mut q8 = vec![0i8; nn * k];
    for r in 0..nn {
        for c in 0..k {
            w[r * k + c] = real[at(r, c)] * alpha;
            if let Some(Hint::Weight { q, .. }) = &hint {
                q8[r * k + c] = q[at(r, c)];
            }
        }
    }
    let id = l.g.add_f32(format!("{}:w", l.node_name), vec![nn, k], &w);
    if let Some(Hint::Weight { scales, axis, .. }) = hint {
        l.g.tensors[id].hint = Some(Hint::Weight {
            q: q8,
            scales: scales.iter().map(|s| s * alpha).collect(),
            axis: axis.map(|_| 0),
        });
    }
    Ok(id)
}

fn fully_connected(l: &mut Lower, x: usize, w: usize, bias: Option<usize>) -> Result<usize> {
    l.op(
        OpKind::FullyConnected,
        vec![Some(x), Some(w), bias],
        vec![INF_BITS.0, INF_BITS.1],
        &[],
    )
}

fn qlinear_matmul(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let (qa, qb, qy) = (
        qparams(l, n, 1, 2)?,
        qparams(l, n, 4, 5)?,
        qparams(l, n, 6, 7)?,
    );
    let (sa, _) = qa.per_tensor("QLinearMatMul a")?;
    let b_rank = match l.val(&n.input[3])? {
        Val::Int(h) => h.shape.len(),
        _ => 0,
    };
    let b_axis = b_rank.checked_sub(1);
    if let (Some((a, ma)), Some((b, mb))) = (
        centered(l, n, 0, &qa, None)?,
        centered(l, n, 3, &qb, b_axis)?,
    ) {
        let k = a.shape.last().copied().unwrap_or(1);
        if (k as f64) * ma * mb < F32_EXACT {
            let at =
                l.g.add_f32(format!("{}:ai", l.node_name), a.shape.clone(), &a.to_f32());
            let bt =
                l.g.add_f32(format!("{}:bi", l.node_name), b.shape.clone(), &b.to_f32());
            let acc = crate::lower_nn::matmul(l, at, bt)?;
            let ys = l.shape(acc);
            let cols = ys.last().copied().unwrap_or(1);
            let v = l.g.tensors[acc]
                .const_f32()
                .ok_or_else(|| anyhow!("QLinearMatMul: constant fold failed"))?;
            let q = requant_exact(&v, sa, &qb.scales, &qy, |i| i % cols.max(1))?;
            l.out(n, 0, Val::Int(int_tensor(ys, &q, qy.dt)));
            return Ok(());
        }
    }
    let a = real_in(l, n, 0, None)?;
    let y = match l.val(&n.input[3])? {
        Val::Int(h) if h.shape.len() == 2 && l.shape(a).len() >= 2 => {
            let w = fc_weight(l, &h, &qb, false, 1.0, "QLinearMatMul b")?;
            fully_connected(l, a, w, None)?
        }
        _ => {
            let b = real_in(l, n, 3, b_axis)?;
            crate::lower_nn::matmul(l, a, b)?
        }
    };
    quantized_out(l, n, y, 6, 7)
}

fn qgemm(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let at = Attrs(n);
    let alpha = at.float("alpha", 1.0);
    let (ta, tb) = (at.int("transA", 0) != 0, at.int("transB", 0) != 0);
    let (qa, qb) = (qparams(l, n, 1, 2)?, qparams(l, n, 4, 5)?);
    let (sa, _) = qa.per_tensor("QGemm A")?;
    let Val::Int(bh) = l.val(&n.input[3])? else {
        bail!("QGemm with a B computed at run time is not supported (B must be a constant)");
    };
    let mut a = real_in(l, n, 0, None)?;
    if l.shape(a).len() != 2 {
        bail!("QGemm: A must be 2-d (shape {:?})", l.shape(a));
    }
    if ta {
        a = l.transpose(a, &[1, 0])?;
    }
    let w = fc_weight(l, &bh, &qb, tb, alpha, "QGemm B")?;
    let nn = l.shape(w)[0];
    let bias = match l.opt_host(n, 6).context("QGemm: C must be a constant")? {
        Some(c) => {
            let q: Vec<i32> = match &c.data {
                HData::I32(v) => v.clone(),
                _ => bail!("QGemm: C must be int32"),
            };
            if q.len() != nn {
                bail!(
                    "QGemm: C of shape {:?} is not a per-column bias of {nn} values; not supported",
                    c.shape
                );
            }
            let scales: Vec<f32> = (0..nn)
                .map(|c| alpha * sa * qb.scales[c % qb.scales.len()])
                .collect();
            let real: Vec<f32> = q.iter().zip(&scales).map(|(&v, &s)| v as f32 * s).collect();
            let id =
                l.g.add_f32(format!("{}:bias", l.node_name), vec![nn], &real);
            l.g.tensors[id].hint = Some(Hint::Bias { q, scales });
            Some(id)
        }
        None => None,
    };
    let y = fully_connected(l, a, w, bias)?;
    if n.input.get(7).is_some_and(|s| !s.is_empty()) {
        quantized_out(l, n, y, 7, 8)
    } else {
        // No output params: QGemm's output is float.
        l.out(n, 0, Val::T(y));
        Ok(())
    }
}

/// MatMulInteger / ConvInteger: int32 results of (a − a_zp)·(b − b_zp).
fn integer_op(l: &mut Lower, n: &NodeProto, conv: bool) -> Result<()> {
    let what = n.op_type.clone();
    let zp = |l: &Lower, k: usize| -> Result<Option<HostTensor>> {
        l.opt_host(n, k)
            .with_context(|| format!("{what}: zero point {k} must be a constant"))
    };
    let bz = zp(l, 3)?;
    let Val::Int(bh) = l.val(n.input.get(1).map_or("", String::as_str))? else {
        bail!(
            "{what} with a run-time second operand is not supported (it must be a constant weight)"
        );
    };
    zp_dtype(&bh).with_context(|| format!("{what}: the weight"))?;
    // b − b_zp, exact: per output channel (ConvInteger: axis 0; MatMulInteger: the last).
    let b_axis = if conv {
        0
    } else {
        bh.shape.len().saturating_sub(1)
    };
    let bzv = bz.as_ref().map_or(vec![0], |h| h.to_i64());
    let qb = Qp {
        scales: vec![1.0; bzv.len()],
        zps: bzv,
        dt: DType::I8,
    };
    let mut bc = dequant(&bh, &qb, Some(b_axis), &what)?;
    let mb = bc.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let taps: usize = if conv {
        bh.shape.iter().skip(1).product()
    } else {
        bh.shape.first().copied().unwrap_or(1)
    };
    let a_name = n.input.first().cloned().unwrap_or_default();
    let dynamic = l.qop.dyn_real.contains(&a_name);
    let a = match l.val(&a_name)? {
        _ if dynamic => l.t(&a_name)?,
        Val::Int(h) => {
            zp_dtype(&h).with_context(|| format!("{what}: the first operand"))?;
            let az = zp(l, 2)?.map_or(vec![0], |h| h.to_i64());
            if az.len() != 1 {
                bail!("{what}: per-row zero points of the first operand are not supported");
            }
            let v: Vec<f32> = h.to_i64().iter().map(|&q| (q - az[0]) as f32).collect();
            l.g.add_f32(format!("{}:ai", l.node_name), h.shape.clone(), &v)
        }
        Val::T(t) if l.g.tensors[t].dtype == DType::F32 => {
            // Integers held in f32 (a DynamicQuantizeLinear computed at run time).
            match n.input.get(2).filter(|s| !s.is_empty()) {
                Some(z) => {
                    let z = z.clone();
                    let zt = l.t(&z)?;
                    l.binary(OpKind::Sub, t, zt)?
                }
                None => t,
            }
        }
        _ => bail!(
            "{what} on a quantized tensor computed at run time other than by DynamicQuantizeLinear is not supported"
        ),
    };
    if !dynamic && (taps as f64) * 255.0 * mb >= F32_EXACT {
        bail!(
            "{what}: sums of {taps} products up to 255·{mb} may reach 2^24, beyond what cairn's f32 holds exactly; not supported"
        );
    }
    if dynamic && !conv && bh.shape.len() == 2 && l.shape(a).len() >= 2 {
        // x · (b − zb) / DYN_SCALE as a FullyConnected whose weights keep their integers
        // (`Hint::Weight`): without calibration they stay int8 (FullyConnected.f32-w8, the
        // rows quantized at run time), with it cairn's static int8 takes them as they are.
        let w = fc_weight(l, &bh, &qb, false, 1.0 / DYN_SCALE, &what)?;
        let y = fully_connected(l, a, w, None)?;
        l.out(n, 0, Val::T(y));
        return Ok(());
    }
    if dynamic {
        // conv(x / DYN_SCALE, b) = conv(x, b / DYN_SCALE); a power of two, so exact.
        bc.iter_mut().for_each(|v| *v /= DYN_SCALE);
    }
    let b =
        l.g.add_f32(format!("{}:bi", l.node_name), bh.shape.clone(), &bc);
    let y = if conv {
        float_node(l, n, "Conv", &[a, b], n.attribute.clone())?
    } else {
        crate::lower_nn::matmul(l, a, b)?
    };
    match l.g.tensors[y].const_f32() {
        Some(v) if !dynamic => {
            let q: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            l.out(n, 0, Val::Int(int_tensor(l.shape(y), &q, DType::I32)));
        }
        _ => l.out(n, 0, Val::T(y)),
    }
    Ok(())
}

/// The outputs of a DynamicQuantizeLinear are used only as `quantize_dynamic` uses them:
/// y and its zero point by MatMulInteger/ConvInteger (as the first operand), the scale by
/// Mul, and the integer results only cast to float, directly or after one Add (the int32
/// bias of the older Conv form).
fn is_dynamic_pattern(l: &Lower, n: &NodeProto) -> bool {
    let out = |k: usize| n.output.get(k).filter(|s| !s.is_empty());
    let (Some(y), Some(s), Some(z)) = (out(0), out(1), out(2)) else {
        return false;
    };
    let cons = |v: &str| l.consumers.get(v).cloned().unwrap_or_default();
    let ycons = cons(y);
    let int_op = |c: &NodeProto| matches!(c.op_type.as_str(), "MatMulInteger" | "ConvInteger");
    let to_float =
        |x: &NodeProto| x.op_type == "Cast" && matches!(Attrs(x).int("to", 0), 1 | 10 | 11 | 16);
    !ycons.is_empty()
        && ycons.iter().all(|c| {
            int_op(c)
                && c.input.first() == Some(y)
                && c.input.iter().skip(1).all(|i| i != y)
                && c.input.get(2) == Some(z)
                && c.output.iter().all(|o| {
                    let oc = cons(o);
                    !oc.is_empty()
                        && oc.iter().all(|x| {
                            to_float(x)
                                || (x.op_type == "Add"
                                    && x.input.iter().filter(|i| *i == o).count() == 1
                                    && x.output.iter().all(|ao| {
                                        let ac = cons(ao);
                                        !ac.is_empty() && ac.iter().all(|x| to_float(x))
                                    }))
                        })
                })
        })
        && cons(z)
            .iter()
            .all(|c| int_op(c) && c.input.get(2) == Some(z))
        && cons(s).iter().all(|c| c.op_type == "Mul")
}

fn dynamic_quantize(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    if l.g.tensors[x].dtype != DType::F32 {
        bail!("DynamicQuantizeLinear of a non-float tensor");
    }
    if is_dynamic_pattern(l, n) {
        let scale =
            l.g.add_f32(format!("{}:scale", l.node_name), vec![], &[DYN_SCALE]);
        l.out(n, 0, Val::T(x));
        l.out(n, 1, Val::T(scale));
        l.out(
            n,
            2,
            Val::Int(HostTensor {
                shape: vec![],
                data: HData::U8(vec![0]),
            }),
        );
        l.qop.dyn_real.insert(n.output[0].clone());
        if !l.qop.noted_dynamic {
            l.qop.noted_dynamic = true;
            l.notes.push("dynamic quantization (DynamicQuantizeLinear → MatMulInteger/ConvInteger): a MatMulInteger on constant 2-d weights keeps them as int8 (its rows quantized at run time, or cairn's static int8 with --calibrate); ConvInteger becomes a float Conv on the exactly dequantized weights".into());
        }
        return Ok(());
    }
    // Computed exactly as ONNX defines it, in f32 ops (the integers it makes are below
    // 256): scale = (max(0, max x) − min(0, min x)) / 255 (1/255 when that is 0),
    // zp = round(clamp(−min/scale, 0, 255)), y = clamp(round(x / scale) + zp, 0, 255).
    let rank = l.shape(x).len();
    let mask = (1i32 << rank) - 1;
    let reduce = |l: &mut Lower, f: ReduceFn| {
        op_as(
            l,
            OpKind::Reduce,
            vec![Some(x)],
            vec![f as i32, mask, 0, 0],
            &[],
            DType::F32,
        )
    };
    let mx = reduce(l, ReduceFn::Max)?;
    let mn = reduce(l, ReduceFn::Min)?;
    let mx = l.unary(mx, UnaryFn::Clip, 0.0, f32::INFINITY)?;
    let mn = l.unary(mn, UnaryFn::Clip, f32::NEG_INFINITY, 0.0)?;
    let range = l.binary(OpKind::Sub, mx, mn)?;
    let zero = l.scalar(0.0);
    let is0 = op_as(
        l,
        OpKind::Binary,
        vec![Some(range), Some(zero)],
        vec![BinaryFn::Equal as i32],
        &[],
        DType::I32,
    )?;
    let one = l.scalar(1.0);
    let range = op_as(
        l,
        OpKind::Where,
        vec![Some(is0), Some(one), Some(range)],
        vec![],
        &[],
        DType::F32,
    )?;
    let c255 = l.scalar(255.0);
    let scale = l.binary(OpKind::Div, range, c255)?;
    let z = l.binary(OpKind::Div, mn, scale)?;
    let z = l.unary(z, UnaryFn::Neg, 0.0, 0.0)?;
    let z = l.unary(z, UnaryFn::Clip, 0.0, 255.0)?;
    let zp = l.unary(z, UnaryFn::Round, 0.0, 0.0)?;
    let y = l.binary(OpKind::Div, x, scale)?;
    let y = l.unary(y, UnaryFn::Round, 0.0, 0.0)?;
    let y = l.op(
        OpKind::Add,
        vec![Some(y), Some(zp)],
        vec![0f32.to_bits() as i32, 255f32.to_bits() as i32],
        &[],
    )?;
    for (k, t) in [(0, y), (1, scale), (2, zp)] {
        let v = match l.g.tensors[t].const_f32() {
            Some(v) if k != 1 => {
                let q: Vec<i64> = v.iter().map(|&f| f as i64).collect();
                Val::Int(int_tensor(l.shape(t), &q, DType::U8))
            }
            _ => Val::T(t),
        };
        l.out(n, k, v);
    }
    Ok(())
}

/// com.microsoft DynamicQuantizeLSTM: an LSTM whose W `[dirs, input, 4·hidden]` and R
/// `[dirs, hidden, 4·hidden]` are integers with params per direction (`[dirs]`) or per
/// gate row (`[dirs, 4·hidden]`), inputs 8..11. Lowered as the ONNX LSTM on the exactly
/// dequantized weights, transposed to ONNX's `[dirs, 4·hidden, input]`.
fn dynamic_quantize_lstm(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let base = n.output.iter().find(|o| !o.is_empty()).cloned();
    let base = base.ok_or_else(|| anyhow!("DynamicQuantizeLSTM has no outputs"))?;
    let mut inputs: Vec<String> = n.input.iter().take(8).cloned().collect();
    for (k, ks) in [(1usize, 8usize), (2, 10)] {
        let what = format!("DynamicQuantizeLSTM input {k}");
        let Val::Int(h) = l.val(n.input.get(k).map_or("", String::as_str))? else {
            bail!("{what} must be a constant integer weight");
        };
        zp_dtype(&h).with_context(|| what.clone())?;
        let qp = qparams(l, n, ks, ks + 1)?;
        let real = lstm_weight_t(&h, &qp, &what)?;
        let (dirs, rows, cols) = (h.shape[0], h.shape[1], h.shape[2]);
        let t =
            l.g.add_f32(format!("{base}:w{k}"), vec![dirs, cols, rows], &real);
        let name = format!("{base}\u{1}dqlstm_in{k}");
        l.vals.insert(name.clone(), Val::T(t));
        inputs[k] = name;
    }
    let node = NodeProto {
        op_type: "LSTM".into(),
        input: inputs.clone(),
        output: n.output.clone(),
        attribute: n.attribute.clone(),
        ..Default::default()
    };
    let r = crate::lower_rnn::lower_rnn_unrolled(l, &node);
    for name in &inputs[1..3] {
        l.vals.remove(name);
    }
    r?;
    Ok(())
}

/// The real values of a DynamicQuantizeLSTM weight `[dirs, rows, cols]` (cols = 4·hidden),
/// transposed to `[dirs, cols, rows]`; params per direction or per (direction, column).
fn lstm_weight_t(h: &HostTensor, qp: &Qp, what: &str) -> Result<Vec<f32>> {
    let [dirs, rows, cols] = h.shape[..] else {
        bail!("{what}: expected rank 3, shape {:?}", h.shape);
    };
    let per_col = match qp.scales.len() {
        m if m == dirs => false,
        m if m == dirs * cols => true,
        m => bail!(
            "{what}: {m} scales; expected {dirs} (per direction) or {} (per column)",
            dirs * cols
        ),
    };
    let q = h.to_i64();
    let mut out = vec![0f32; q.len()];
    for d in 0..dirs {
        for r in 0..rows {
            for c in 0..cols {
                let p = if per_col { d * cols + c } else { d };
                let v = q[(d * rows + r) * cols + c] - qp.zps[p];
                out[(d * cols + c) * rows + r] = v as f32 * qp.scales[p];
            }
        }
    }
    Ok(out)
}

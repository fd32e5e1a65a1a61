//! Lowering of element-wise math beyond the CNN set: more unary functions, Pow, variadic
//! Max/Min/Sum/Mean, comparisons and logic on booleans (i32 0/1 tensors), Where, CastLike
//! (the reductions are in `lower_reduce.rs`).
//!
//! Integer values known at convert time stay `Val::Int` (shape subgraphs keep folding):
//! when every input of a node is one, the node is folded by the reference kernel on i32 or
//! f32 constants and its result is turned back into a `Val::Int` where it is an integer.

use anyhow::{bail, Result};
use cairn_core::emit::QuantSpec;
use cairn_core::op::{BinaryFn, UnaryFn};
use cairn_core::{DType, OpKind};

use crate::ir::f32_bytes;
use crate::lower::{Lower, Val};
use crate::onnx::{Attrs, HostTensor, NodeProto};

/// The unary functions named by ONNX op types (with their attributes as a, b).
pub(crate) fn unary_of(n: &NodeProto) -> Option<(UnaryFn, f32, f32)> {
    let a = Attrs(n);
    let plain = |f: UnaryFn| Some((f, 0.0, 0.0));
    match n.op_type.as_str() {
        "Reciprocal" => plain(UnaryFn::Reciprocal),
        "Log" => plain(UnaryFn::Log),
        "Sin" => plain(UnaryFn::Sin),
        "Cos" => plain(UnaryFn::Cos),
        "Tan" => plain(UnaryFn::Tan),
        "Floor" => plain(UnaryFn::Floor),
        "Ceil" => plain(UnaryFn::Ceil),
        "Round" => plain(UnaryFn::Round),
        "Sign" => plain(UnaryFn::Sign),
        "Softplus" => plain(UnaryFn::Softplus),
        "Mish" => plain(UnaryFn::Mish),
        "Softsign" => plain(UnaryFn::Softsign),
        "Acos" => plain(UnaryFn::Acos),
        "Asin" => plain(UnaryFn::Asin),
        "Atan" => plain(UnaryFn::Atan),
        "Sinh" => plain(UnaryFn::Sinh),
        "Cosh" => plain(UnaryFn::Cosh),
        "Asinh" => plain(UnaryFn::Asinh),
        "Acosh" => plain(UnaryFn::Acosh),
        "ThresholdedRelu" => Some((UnaryFn::ThresholdedRelu, a.float("alpha", 1.0), 0.0)),
        "Celu" => Some((UnaryFn::Celu, a.float("alpha", 1.0), 0.0)),
        "Shrink" => Some((UnaryFn::Shrink, a.float("lambd", 0.5), a.float("bias", 0.0))),
        "Elu" => Some((UnaryFn::Elu, a.float("alpha", 1.0), 0.0)),
        "Selu" => Some((
            UnaryFn::Selu,
            a.float("alpha", 1.673_263_2),
            a.float("gamma", 1.050_701),
        )),
        _ => None,
    }
}

pub(crate) fn lower_math_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    if let Some((f, p, q)) = unary_of(n) {
        let x = l.in_t(n, 0)?;
        let y = l.unary(x, f, p, q)?;
        l.out(n, 0, Val::T(y));
        return Ok(true);
    }
    let cmp = |f: BinaryFn| Some(f);
    let binary = match n.op_type.as_str() {
        "Equal" => cmp(BinaryFn::Equal),
        "Less" => cmp(BinaryFn::Less),
        "LessOrEqual" => cmp(BinaryFn::LessOrEqual),
        "Greater" => cmp(BinaryFn::Greater),
        "GreaterOrEqual" => cmp(BinaryFn::GreaterOrEqual),
        "And" => cmp(BinaryFn::And),
        "Or" => cmp(BinaryFn::Or),
        "Xor" => cmp(BinaryFn::Xor),
        _ => None,
    };
    if let Some(f) = binary {
        let (a, b) = (n.input[0].clone(), n.input[1].clone());
        let v = predicate(l, f, &a, &b)?;
        l.out(n, 0, v);
        return Ok(true);
    }
    match n.op_type.as_str() {
        "Not" => {
            let v = predicate(l, BinaryFn::Xor, &n.input[0], "")?;
            l.out(n, 0, v);
        }
        "IsNaN" | "IsInf" => {
            let v = float_class(l, n)?;
            l.out(n, 0, v);
        }
        "Pow" => pow(l, n)?,
        "Mod" if crate::lower_nn::int_arithmetic(l, n) => {
            let v = crate::lower_nn::int_binary(l, n)?;
            l.out(n, 0, v);
        }
        "Mod" => {
            let (x, y) = (l.in_t(n, 0)?, l.in_t(n, 1)?);
            let f = if Attrs(n).int("fmod", 0) != 0 {
                BinaryFn::Fmod
            } else {
                BinaryFn::Mod
            };
            let params = vec![f as i32];
            let r = op_as(
                l,
                OpKind::Binary,
                vec![Some(x), Some(y)],
                params,
                &[],
                DType::F32,
            )?;
            l.out(n, 0, Val::T(r));
        }
        "CastLike" => cast_like(l, n)?,
        "Max" | "Min" | "Sum" | "Mean" => variadic(l, n)?,
        "Where" => where_op(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// A tensor of `dtype` for a value: run-time tensors must have it already; constants
/// (integer or float) are converted.
pub(crate) fn typed_t(l: &mut Lower, name: &str, dtype: DType) -> Result<usize> {
    let host = match l.val(name)? {
        Val::Int(h) => h,
        Val::T(t) | Val::FakeQ { t, .. } if l.g.tensors[t].dtype == dtype => return Ok(t),
        Val::T(t) if l.g.tensors[t].is_const() => l.host(name)?,
        Val::T(_) | Val::FakeQ { .. } => bail!("'{name}' is a run-time tensor of another type"),
        Val::Absent => bail!("required input '{name}' is absent"),
    };
    Ok(match dtype {
        DType::I32 => {
            let v = host
                .to_i64()
                .iter()
                .map(|&v| i32::try_from(v))
                .collect::<Result<Vec<i32>, _>>()
                .map_err(|_| anyhow::anyhow!("'{name}' holds integers beyond 32 bits"))?;
            l.g.add_i32(name, host.shape.clone(), &v)
        }
        _ => l.g.add_const(
            name,
            DType::F32,
            host.shape.clone(),
            f32_bytes(&host.to_f32()),
        ),
    })
}

/// The dtype a value is carried in: i32 for integer constants and run-time i32 tensors
/// (ids, masks, comparison results), f32 otherwise.
pub(crate) fn dtype_of(l: &Lower, name: &str) -> Result<DType> {
    Ok(match l.val(name)? {
        Val::Int(_) => DType::I32,
        Val::T(t) | Val::FakeQ { t, .. } if l.g.tensors[t].dtype == DType::I32 => DType::I32,
        _ => DType::F32,
    })
}

/// Add an op whose output has `dtype` (unquantized); folds like `Lower::op`.
pub(crate) fn op_as(
    l: &mut Lower,
    kind: OpKind,
    inputs: Vec<Option<usize>>,
    params: Vec<i32>,
    declared: &[usize],
    dtype: DType,
) -> Result<usize> {
    let outs = l.op_n(
        kind,
        inputs,
        params,
        &[declared.to_vec()],
        Some((dtype, QuantSpec::None)),
    )?;
    Ok(outs[0])
}

/// The value of tensor `t`: a folded i32 constant becomes a `Val::Int` again.
pub(crate) fn as_val(l: &Lower, t: usize) -> Val {
    let h = &l.g.tensors[t];
    match (&h.data, h.dtype) {
        (Some(d), DType::I32) => {
            let v: &[i32] = bytemuck::cast_slice(d.as_slice());
            Val::Int(HostTensor::i64(
                h.shape.clone(),
                v.iter().map(|&x| x as i64).collect(),
            ))
        }
        _ => Val::T(t),
    }
}

fn is_runtime_i32(l: &Lower, name: &str) -> bool {
    matches!(l.val(name), Ok(Val::T(t)) if l.g.tensors[t].dtype == DType::I32)
}

/// `x ≠ 0` of a run-time f32 or i32 tensor as an i32 boolean (ONNX Cast to bool):
/// `Equal(x, 0)` then `Xor` with true, so NaN, which equals nothing, is true.
pub(crate) fn nonzero(l: &mut Lower, x: usize) -> Result<Val> {
    let dtype = l.g.tensors[x].dtype;
    let zero = match dtype {
        DType::I32 => l.g.add_i32(format!("{}:zero", l.node_name), vec![], &[0]),
        DType::F32 => l.g.add_f32(format!("{}:zero", l.node_name), vec![], &[0.0]),
        d => bail!("Cast to bool of a {d:?} tensor is not supported"),
    };
    let eq = op_as(
        l,
        OpKind::Binary,
        vec![Some(x), Some(zero)],
        vec![BinaryFn::Equal as i32],
        &[],
        DType::I32,
    )?;
    let one = l.g.add_i32(format!("{}:true", l.node_name), vec![], &[1]);
    let t = op_as(
        l,
        OpKind::Binary,
        vec![Some(eq), Some(one)],
        vec![BinaryFn::Xor as i32],
        &[],
        DType::I32,
    )?;
    Ok(as_val(l, t))
}

/// A comparison or logic function of two values (`b` empty: Not, as Xor with true).
fn predicate(l: &mut Lower, f: BinaryFn, a: &str, b: &str) -> Result<Val> {
    let both_int = l.is_int(a) && (b.is_empty() || l.is_int(b));
    let dtype = if f.is_logic() || both_int || is_runtime_i32(l, a) || is_runtime_i32(l, b) {
        DType::I32
    } else {
        DType::F32
    };
    let x = typed_t(l, a, dtype)?;
    let y = if b.is_empty() {
        l.g.add_i32(format!("{}:true", l.node_name), vec![], &[1])
    } else {
        typed_t(l, b, dtype)?
    };
    let t = op_as(
        l,
        OpKind::Binary,
        vec![Some(x), Some(y)],
        vec![f as i32],
        &[],
        DType::I32,
    )?;
    Ok(as_val(l, t))
}

/// IsNaN as `not (x == x)`; IsInf as `x == +inf` and/or `x == −inf` (its
/// `detect_positive`/`detect_negative`): booleans (i32) from f32 comparisons, which keep
/// IEEE semantics. An integer input is never NaN or infinite.
fn float_class(l: &mut Lower, n: &NodeProto) -> Result<Val> {
    let name = l.node_name.clone();
    let cmp = |l: &mut Lower, f: BinaryFn, a: usize, b: usize| {
        op_as(
            l,
            OpKind::Binary,
            vec![Some(a), Some(b)],
            vec![f as i32],
            &[],
            DType::I32,
        )
    };
    let x = l.in_t(n, 0)?;
    let shape = l.shape(x);
    if l.g.tensors[x].dtype != DType::F32 {
        let zeros = vec![0; shape.iter().product()];
        let t = l.g.add_i32(format!("{name}:false"), shape, &zeros);
        return Ok(as_val(l, t));
    }
    let t = if n.op_type == "IsNaN" {
        let same = cmp(l, BinaryFn::Equal, x, x)?;
        let yes = l.g.add_i32(format!("{name}:true"), vec![], &[1]);
        cmp(l, BinaryFn::Xor, same, yes)?
    } else {
        let a = Attrs(n);
        let (pos, neg) = (
            a.int("detect_positive", 1) != 0,
            a.int("detect_negative", 1) != 0,
        );
        let at = |l: &mut Lower, v: f32| -> Result<usize> {
            let c = l.g.add_f32(format!("{name}:{v}"), vec![], &[v]);
            cmp(l, BinaryFn::Equal, x, c)
        };
        match (pos, neg) {
            (true, true) => {
                let p = at(l, f32::INFINITY)?;
                let m = at(l, f32::NEG_INFINITY)?;
                cmp(l, BinaryFn::Or, p, m)?
            }
            (true, false) => at(l, f32::INFINITY)?,
            (false, true) => at(l, f32::NEG_INFINITY)?,
            (false, false) => {
                let zeros = vec![0; shape.iter().product()];
                l.g.add_i32(format!("{name}:false"), shape, &zeros)
            }
        }
    };
    Ok(as_val(l, t))
}

/// Pow: a constant scalar exponent is a unary function (an int8 lookup table when
/// quantized; 0.5 is Sqrt); anything else is the element-wise `Binary` Pow.
fn pow(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let e = match l.val(&n.input[1])? {
        Val::Int(h) => Some(h.to_f32()),
        Val::T(t) => l.g.tensors[t].const_f32(),
        _ => None,
    };
    let y = match e {
        Some(e) if e.len() == 1 && e[0] == 0.5 => l.unary(x, UnaryFn::Sqrt, 0.0, 0.0)?,
        Some(e) if e.len() == 1 && e[0] == 1.0 => x,
        Some(e) if e.len() == 1 => l.unary(x, UnaryFn::Pow, e[0], 0.0)?,
        _ => {
            let e = l.in_t(n, 1)?;
            op_as(
                l,
                OpKind::Binary,
                vec![Some(x), Some(e)],
                vec![BinaryFn::Pow as i32],
                &[],
                DType::F32,
            )?
        }
    };
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// Max/Min/Sum/Mean of one or more inputs: a chain of binary ops (Mean divides the sum).
fn variadic(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let names: Vec<String> = n.input.iter().filter(|s| !s.is_empty()).cloned().collect();
    if names.is_empty() {
        bail!("{} without inputs", n.op_type);
    }
    if let Some(y) = clip_form(l, n, &names)? {
        l.out(n, 0, Val::T(y));
        return Ok(());
    }
    let mut acc = l.t(&names[0])?;
    for name in &names[1..] {
        let b = l.t(name)?;
        acc = match n.op_type.as_str() {
            "Max" | "Min" => {
                let f = if n.op_type == "Max" {
                    BinaryFn::Max
                } else {
                    BinaryFn::Min
                };
                let params = vec![f as i32];
                op_as(
                    l,
                    OpKind::Binary,
                    vec![Some(acc), Some(b)],
                    params,
                    &[],
                    DType::F32,
                )?
            }
            _ => l.binary(OpKind::Add, acc, b)?,
        };
    }
    if n.op_type == "Mean" && names.len() > 1 {
        let count = l.scalar(names.len() as f32);
        acc = l.binary(OpKind::Div, acc, count)?;
    }
    l.out(n, 0, Val::T(acc));
    Ok(())
}

/// Max/Min of a tensor and a constant scalar is a Clip (fused into its producer, or an
/// int8 lookup table when quantized).
fn clip_form(l: &mut Lower, n: &NodeProto, names: &[String]) -> Result<Option<usize>> {
    if names.len() != 2 || !matches!(n.op_type.as_str(), "Max" | "Min") {
        return Ok(None);
    }
    let (a, b) = (l.t(&names[0])?, l.t(&names[1])?);
    let scalar = |l: &Lower, t: usize, other: usize| {
        let h = &l.g.tensors[t];
        let c = h.const_f32().filter(|v| v.len() == 1)?;
        (h.shape.len() <= l.g.tensors[other].shape.len() && !l.g.tensors[other].is_const())
            .then_some(c[0])
    };
    let (x, c) = match (scalar(l, b, a), scalar(l, a, b)) {
        (Some(c), _) => (a, c),
        (None, Some(c)) => (b, c),
        _ => return Ok(None),
    };
    if c.is_nan() {
        return Ok(None);
    }
    let (lo, hi) = if n.op_type == "Max" {
        (c, f32::INFINITY)
    } else {
        (f32::NEG_INFINITY, c)
    };
    Ok(Some(l.unary(x, UnaryFn::Clip, lo, hi)?))
}

/// Where(cond, x, y): cond as i32; x and y share a type (i32 when both are integers).
fn where_op(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let (c, a, b) = (&n.input[0], &n.input[1], &n.input[2]);
    let ints = l.is_int(a) && l.is_int(b);
    let dtype = if ints || is_runtime_i32(l, a) || is_runtime_i32(l, b) {
        DType::I32
    } else {
        DType::F32
    };
    let cond = typed_t(l, c, DType::I32)?;
    let (x, y) = (typed_t(l, a, dtype)?, typed_t(l, b, dtype)?);
    let t = op_as(
        l,
        OpKind::Where,
        vec![Some(cond), Some(x), Some(y)],
        vec![],
        &[],
        dtype,
    )?;
    let v = as_val(l, t);
    l.out(n, 0, v);
    Ok(())
}

/// CastLike: to f32 when the target is a float tensor; to an integer value known at
/// convert time otherwise (run-time integer tensors come only from comparisons and ArgMax).
fn cast_like(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let to_float = match l.val(&n.input[1])? {
        Val::T(t) | Val::FakeQ { t, .. } => l.g.tensors[t].dtype == DType::F32,
        Val::Int(h) => h.is_float(),
        Val::Absent => bail!("CastLike without a target"),
    };
    let v = match l.val(&n.input[0])? {
        Val::Int(h) if to_float => Val::T(l.g.add_f32(&n.output[0], h.shape.clone(), &h.to_f32())),
        v @ (Val::Int(_) | Val::T(_) | Val::FakeQ { .. }) if to_float => {
            if let Val::T(t) = v {
                if l.g.tensors[t].dtype != DType::F32 {
                    bail!("CastLike of a run-time integer tensor to float is not supported");
                }
            }
            v
        }
        Val::Int(h) => Val::Int(HostTensor::i64(h.shape.clone(), h.to_i64())),
        Val::T(t) if l.g.tensors[t].is_const() && l.g.tensors[t].dtype == DType::F32 => {
            let h = l.host(&n.input[0])?;
            let v = h.to_f32().iter().map(|&x| x.trunc() as i64).collect();
            Val::Int(HostTensor::i64(h.shape.clone(), v))
        }
        _ => bail!("CastLike of a run-time tensor to an integer type is not supported"),
    };
    l.out(n, 0, v);
    Ok(())
}

//! Lowering of the reductions onto `Reduce`: ReduceSum … ReduceLogSumExp (ReduceMean has
//! its own kind), GlobalMaxPool, ArgMax/ArgMin, Hardmax and TopK.

use anyhow::{bail, Result};
use cairn_core::op::ReduceFn;
use cairn_core::{DType, OpKind};

use crate::lower::{Lower, Val};
use crate::lower_math::{as_val, op_as};
use crate::onnx::{Attrs, NodeProto};

pub(crate) fn lower_reduce_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    match n.op_type.as_str() {
        "ArgMax" | "ArgMin" => arg(l, n)?,
        "TopK" => top_k(l, n)?,
        "GlobalMaxPool" => global_max_pool(l, n)?,
        "Hardmax" => hardmax(l, n)?,
        op if reduce_fn(op).is_some() => reduce(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn global_max_pool(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let rank = l.shape(x).len();
    if rank < 3 {
        bail!("GlobalMaxPool needs an input of rank 3 or more");
    }
    let mask = ((1i32 << rank) - 1) & !0b11;
    let params = vec![ReduceFn::Max as i32, mask, 1, 0];
    let y = op_as(l, OpKind::Reduce, vec![Some(x)], params, &[], DType::F32)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

fn reduce_fn(op: &str) -> Option<ReduceFn> {
    Some(match op {
        "ReduceSum" => ReduceFn::Sum,
        "ReduceMax" => ReduceFn::Max,
        "ReduceMin" => ReduceFn::Min,
        "ReduceProd" => ReduceFn::Prod,
        "ReduceL1" => ReduceFn::L1,
        "ReduceL2" => ReduceFn::L2,
        "ReduceLogSum" => ReduceFn::LogSum,
        "ReduceLogSumExp" => ReduceFn::LogSumExp,
        "ReduceSumSquare" => ReduceFn::SumSquare,
        _ => return None,
    })
}

/// The axes mask of a reduction, or `None` for "no axes" (with `noop_with_empty_axes`,
/// the identity). Axes come from input 1 from opset 18 (ReduceSum: 13), else the attribute.
fn reduce_mask(l: &Lower, n: &NodeProto, rank: usize) -> Result<Option<i32>> {
    let a = Attrs(n);
    let from_input = l.opset >= 18 || (n.op_type == "ReduceSum" && l.opset >= 13);
    let axes = if from_input {
        l.ints_in(n, 1)?
    } else {
        a.ints("axes")
    };
    let axes = match axes.filter(|v| !v.is_empty()) {
        Some(v) => v,
        None if a.int("noop_with_empty_axes", 0) != 0 => return Ok(None),
        None => (0..rank as i64).collect(),
    };
    let mut mask = 0i32;
    for &ax in &axes {
        let ax = if ax < 0 { ax + rank as i64 } else { ax };
        if !(0..rank as i64).contains(&ax) {
            bail!("reduction axis {ax} out of range for rank {rank}");
        }
        mask |= 1 << ax;
    }
    Ok(Some(mask))
}

fn reduce(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let f = reduce_fn(&n.op_type).unwrap_or(ReduceFn::Sum);
    let x = l.in_t(n, 0)?;
    let rank = l.shape(x).len();
    let Some(mask) = reduce_mask(l, n, rank)? else {
        l.out(n, 0, Val::T(x));
        return Ok(());
    };
    let keep = Attrs(n).int("keepdims", 1).clamp(0, 1) as i32;
    let params = vec![f as i32, mask, keep, 0];
    let y = op_as(l, OpKind::Reduce, vec![Some(x)], params, &[], DType::F32)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// ArgMax/ArgMin: i32 indices (an integer value when the input is a constant).
fn arg(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let x = l.in_t(n, 0)?;
    let rank = l.shape(x).len() as i64;
    let axis = a.int("axis", 0);
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&axis) {
        bail!("{} axis out of range", n.op_type);
    }
    let f = if n.op_type == "ArgMax" {
        ReduceFn::ArgMax
    } else {
        ReduceFn::ArgMin
    };
    let params = vec![
        f as i32,
        1 << axis,
        a.int("keepdims", 1).clamp(0, 1) as i32,
        a.int("select_last_index", 0).clamp(0, 1) as i32,
    ];
    let y = op_as(l, OpKind::Reduce, vec![Some(x)], params, &[], DType::I32)?;
    let v = as_val(l, y);
    l.out(n, 0, v);
    Ok(())
}

/// TopK: the values (f32) and the indices (i32), two `Reduce` selections along the axis.
fn top_k(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let x = l.in_t(n, 0)?;
    let rank = l.shape(x).len() as i64;
    let axis = a.int("axis", -1);
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&axis) {
        bail!("TopK axis out of range");
    }
    let k = match l.ints_in(n, 1)? {
        Some(v) if v.len() == 1 => v[0],
        Some(_) => bail!("TopK's k must be one value"),
        None => a.int("k", -1),
    };
    let k = i32::try_from(k).map_err(|_| anyhow::anyhow!("TopK k {k} out of range"))?;
    let largest = a.int("largest", 1).clamp(0, 1) as i32;
    for (out, f, dtype) in [
        (0, ReduceFn::TopK, DType::F32),
        (1, ReduceFn::TopKIndex, DType::I32),
    ] {
        if n.output.get(out).is_none_or(|o| o.is_empty()) {
            continue;
        }
        let params = vec![f as i32, 1 << axis, k, largest];
        let y = op_as(l, OpKind::Reduce, vec![Some(x)], params, &[], dtype)?;
        let v = as_val(l, y);
        l.out(n, out, v);
    }
    Ok(())
}

/// Hardmax: 1 where ArgMax (first index) lands along the axis, 0 elsewhere:
/// `Where(Equal(positions, ArgMax(x)), 1, 0)`.
fn hardmax(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let s = l.shape(x);
    let rank = s.len() as i64;
    let axis = Attrs(n).int("axis", -1);
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&axis) || l.opset < 13 {
        bail!("Hardmax: only the opset-13 form (one axis) is supported");
    }
    let axis = axis as usize;
    let params = vec![ReduceFn::ArgMax as i32, 1 << axis, 1, 0];
    let best = op_as(l, OpKind::Reduce, vec![Some(x)], params, &[], DType::I32)?;
    let mut pos_shape = vec![1; s.len()];
    pos_shape[axis] = s[axis];
    let pos: Vec<i32> = (0..s[axis] as i32).collect();
    let pos = l.g.add_i32(format!("{}:pos", l.node_name), pos_shape, &pos);
    let eq = vec![cairn_core::op::BinaryFn::Equal as i32];
    let hit = op_as(
        l,
        OpKind::Binary,
        vec![Some(pos), Some(best)],
        eq,
        &[],
        DType::I32,
    )?;
    let (one, zero) = (l.scalar(1.0), l.scalar(0.0));
    let inputs = vec![Some(hit), Some(one), Some(zero)];
    let y = op_as(l, OpKind::Where, inputs, vec![], &[], DType::F32)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

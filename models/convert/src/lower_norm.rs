//! Normalizations built from reductions and element-wise ops: LogSoftmax (the stable
//! `x − max − log Σ exp(x − max)`), LpNormalization, MeanVarianceNormalization and the
//! optional Mean/InvStdDev outputs of LayerNormalization.

use anyhow::{bail, Result};
use cairn_core::op::{BinaryFn, ReduceFn, UnaryFn};
use cairn_core::{DType, OpKind};

use crate::lower::{Lower, Val};
use crate::lower_math::op_as;
use crate::onnx::{Attrs, NodeProto};

pub(crate) fn lower_norm_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    match n.op_type.as_str() {
        "LogSoftmax" => log_softmax(l, n)?,
        "LpNormalization" => lp_normalization(l, n)?,
        "MeanVarianceNormalization" => mean_variance(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn axis_in(n: &NodeProto, default: i64, rank: usize) -> Result<usize> {
    let ax = Attrs(n).int("axis", default);
    let r = rank as i64;
    let ax = if ax < 0 { ax + r } else { ax };
    if !(0..r).contains(&ax) {
        bail!("{} axis out of range", n.op_type);
    }
    Ok(ax as usize)
}

fn reduce(l: &mut Lower, x: usize, f: ReduceFn, mask: i32) -> Result<usize> {
    let params = vec![f as i32, mask, 1, 0];
    op_as(l, OpKind::Reduce, vec![Some(x)], params, &[], DType::F32)
}

/// LogSoftmax over `axis` (before opset 13: over the axes from `axis` on).
fn log_softmax(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let rank = l.shape(x).len();
    let old = l.opset < 13;
    let axis = axis_in(n, if old { 1 } else { -1 }, rank)?;
    let mask = if old {
        ((1i32 << rank) - 1) & !((1i32 << axis) - 1)
    } else {
        1 << axis
    };
    let max = reduce(l, x, ReduceFn::Max, mask)?;
    let shifted = l.binary(OpKind::Sub, x, max)?;
    let e = l.unary(shifted, UnaryFn::Exp, 0.0, 0.0)?;
    let sum = reduce(l, e, ReduceFn::Sum, mask)?;
    let log_sum = l.unary(sum, UnaryFn::Log, 0.0, 0.0)?;
    let y = l.binary(OpKind::Sub, shifted, log_sum)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// x / ‖x‖ₚ along `axis` (p = 1 or 2).
fn lp_normalization(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let axis = axis_in(n, -1, l.shape(x).len())?;
    let f = match Attrs(n).int("p", 2) {
        1 => ReduceFn::L1,
        2 => ReduceFn::L2,
        p => bail!("LpNormalization with p = {p} is not supported (1 or 2)"),
    };
    let norm = reduce(l, x, f, 1 << axis)?;
    // A zero norm means a zero slice: ONNX gives 0 there, not 0/0. The smallest normal
    // float leaves every other norm as it is.
    let tiny = l.scalar(f32::MIN_POSITIVE);
    let norm = op_as(
        l,
        OpKind::Binary,
        vec![Some(norm), Some(tiny)],
        vec![BinaryFn::Max as i32],
        &[],
        DType::F32,
    )?;
    let y = l.binary(OpKind::Div, x, norm)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// (x − mean) / (sqrt(mean(x²) − mean²) + 1e-9) over `axes` (default N, H, W), as the
/// ONNX function defines it.
fn mean_variance(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let rank = l.shape(x).len();
    let axes = Attrs(n).ints("axes").unwrap_or_else(|| vec![0, 2, 3]);
    let mut mask = 0i32;
    for &ax in &axes {
        let ax = if ax < 0 { ax + rank as i64 } else { ax };
        if !(0..rank as i64).contains(&ax) {
            bail!("MeanVarianceNormalization axis {ax} out of range for rank {rank}");
        }
        mask |= 1 << ax;
    }
    let mean_of =
        |l: &mut Lower, t: usize| l.op(OpKind::ReduceMean, vec![Some(t)], vec![mask, 1], &[]);
    let mean = mean_of(l, x)?;
    let mean_sq = l.binary(OpKind::Mul, mean, mean)?;
    let sq = l.binary(OpKind::Mul, x, x)?;
    let sq_mean = mean_of(l, sq)?;
    let var = l.binary(OpKind::Sub, sq_mean, mean_sq)?;
    let std = l.unary(var, UnaryFn::Sqrt, 0.0, 0.0)?;
    let eps = l.scalar(1e-9);
    let std = l.binary(OpKind::Add, std, eps)?;
    let centered = l.binary(OpKind::Sub, x, mean)?;
    let y = l.binary(OpKind::Div, centered, std)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// The optional outputs 1 (Mean) and 2 (InvStdDev) of LayerNormalization over the axes
/// from `axis` on, as the ONNX reference computes them: mean(x) and
/// 1 / sqrt(mean((x − mean)²) + eps), each of shape `x.shape[..axis]` then ones. Outputs
/// the graph does not read are pruned with the ops behind them.
pub(crate) fn layer_norm_stats(
    l: &mut Lower,
    n: &NodeProto,
    x: usize,
    axis: usize,
    eps: f32,
) -> Result<()> {
    let wanted = |k: usize| n.output.get(k).is_some_and(|o| !o.is_empty());
    if !wanted(1) && !wanted(2) {
        return Ok(());
    }
    let rank = l.shape(x).len();
    if axis >= rank {
        bail!("LayerNormalization axis {axis} out of range for rank {rank}");
    }
    let mask = ((1i32 << rank) - 1) & !((1i32 << axis) - 1);
    let mean_of =
        |l: &mut Lower, t: usize| l.op(OpKind::ReduceMean, vec![Some(t)], vec![mask, 1], &[]);
    let mean = mean_of(l, x)?;
    l.out(n, 1, Val::T(mean));
    if wanted(2) {
        let diff = l.binary(OpKind::Sub, x, mean)?;
        let sq = l.binary(OpKind::Mul, diff, diff)?;
        let var = mean_of(l, sq)?;
        let eps = l.scalar(eps);
        let var = l.binary(OpKind::Add, var, eps)?;
        let std = l.unary(var, UnaryFn::Sqrt, 0.0, 0.0)?;
        let inv = l.unary(std, UnaryFn::Reciprocal, 0.0, 0.0)?;
        l.out(n, 2, Val::T(inv));
    }
    Ok(())
}

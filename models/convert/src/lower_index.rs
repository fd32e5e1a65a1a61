//! Lowering of indexed and rearranging ops onto `Gather`, `Tile`, `Where`,
//! Reshape/Transpose and LayerNorm: Gather on run-time data (embeddings), GatherElements,
//! Expand, Tile, Trilu, DepthToSpace/SpaceToDepth, InstanceNormalization and
//! GroupNormalization.

use anyhow::{bail, Result};
use cairn_core::{DType, OpKind};

use crate::lower::{Lower, Val};
use crate::lower_math::{as_val, dtype_of, op_as, typed_t};
use crate::onnx::{Attrs, NodeProto};

pub(crate) fn lower_index_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    match n.op_type.as_str() {
        "GatherElements" => gather(l, n, 1)?,
        "GatherND" => gather_nd(l, n)?,
        "Expand" => expand(l, n)?,
        "Tile" => tile(l, n)?,
        "DepthToSpace" | "SpaceToDepth" => depth_space(l, n)?,
        "InstanceNormalization" | "GroupNormalization" => group_norm(l, n)?,
        "Einsum" => crate::lower_einsum::einsum(l, n)?,
        "Trilu" => trilu(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Whether a Gather needs the run-time op: its data or its indices are computed.
pub(crate) fn gathers_at_run_time(l: &Lower, n: &NodeProto) -> bool {
    let runtime = |name: &str| match l.val(name) {
        Ok(Val::T(t)) | Ok(Val::FakeQ { t, .. }) => !l.g.tensors[t].is_const(),
        _ => false,
    };
    runtime(&n.input[0]) || n.input.get(1).is_some_and(|i| runtime(i))
}

fn axis_of(n: &NodeProto, rank: usize) -> Result<usize> {
    let ax = Attrs(n).int("axis", 0);
    let r = rank as i64;
    let ax = if ax < 0 { ax + r } else { ax };
    if !(0..r).contains(&ax) {
        bail!("{} axis out of range", n.op_type);
    }
    Ok(ax as usize)
}

/// Gather (mode 0) or GatherElements (mode 1) with i32 indices.
pub(crate) fn gather(l: &mut Lower, n: &NodeProto, mode: i32) -> Result<()> {
    let data = &n.input[0];
    let dtype = dtype_of(l, data)?;
    let x = typed_t(l, data, dtype)?;
    let idx = typed_t(l, &n.input[1], DType::I32)?;
    let axis = axis_of(n, l.shape(x).len())?;
    let y = op_as(
        l,
        OpKind::Gather,
        vec![Some(x), Some(idx)],
        vec![axis as i32, mode],
        &[],
        dtype,
    )?;
    let v = as_val(l, y);
    l.out(n, 0, v);
    Ok(())
}

/// GatherND with indices known at convert time (an attention mask built by advanced
/// indexing over `arange` grids, which fold to constants once the shapes are fixed): one
/// Gather along the first axis of the data reshaped to [batch · indexed dims, rest], each
/// index tuple (and its batch, under `batch_dims`) turned into one flat row index.
fn gather_nd(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let data = &n.input[0];
    let dtype = dtype_of(l, data)?;
    let x = typed_t(l, data, dtype)?;
    let d = l.shape(x);
    let idx = l.host(&n.input[1]).map_err(|e| {
        anyhow::anyhow!("GatherND indices computed at run time are not supported ({e})")
    })?;
    let (ishape, iv) = (idx.shape.clone(), idx.to_i64());
    let b = usize::try_from(Attrs(n).int("batch_dims", 0))?;
    let q = ishape.len();
    let m = *ishape
        .last()
        .ok_or_else(|| anyhow::anyhow!("GatherND indices are a scalar"))?;
    if b >= q || b + m > d.len() || ishape[..b] != d[..b] || m == 0 {
        bail!("GatherND: indices {ishape:?} (batch_dims {b}) do not fit data {d:?}");
    }
    let inner = &d[b..b + m];
    let inner_n: usize = inner.iter().product();
    let batches: usize = d[..b].iter().product();
    let per_batch: usize = ishape[b..q - 1].iter().product();
    let mut flat = Vec::with_capacity(batches * per_batch);
    for (i, tuple) in iv.chunks_exact(m).enumerate() {
        let mut f = (i / per_batch.max(1)) * inner_n;
        let mut stride = inner_n;
        for (k, &v) in tuple.iter().enumerate() {
            let dim = inner[k] as i64;
            let v = if v < 0 { v + dim } else { v };
            if !(0..dim).contains(&v) {
                bail!("GatherND index {v} out of range for dim {dim}");
            }
            stride /= inner[k];
            f += v as usize * stride;
        }
        flat.push(i32::try_from(f)?);
    }
    let rest = &d[b + m..];
    let mut rows = vec![batches * inner_n];
    rows.extend_from_slice(rest);
    let xr = l.reshape(x, &rows)?;
    let lead = ishape[..q - 1].to_vec();
    let ishape_t = if lead.is_empty() {
        vec![1]
    } else {
        lead.clone()
    };
    let it =
        l.g.add_i32(format!("{}:flat", l.node_name), ishape_t, &flat);
    let y = op_as(
        l,
        OpKind::Gather,
        vec![Some(xr), Some(it)],
        vec![0, 0],
        &[],
        dtype,
    )?;
    let mut out = lead;
    out.extend_from_slice(rest);
    let y = l.reshape(y, &out)?;
    let v = as_val(l, y);
    l.out(n, 0, v);
    Ok(())
}

/// Repeat `x` (rank-padded with leading 1s) to `target` with a `Tile` op.
fn tile_to(l: &mut Lower, n: &NodeProto, target: &[usize]) -> Result<()> {
    let dtype = match l.val(&n.input[0])? {
        Val::Int(_) => DType::I32,
        Val::T(t) => l.g.tensors[t].dtype,
        _ => DType::F32,
    };
    let x = typed_t(l, &n.input[0], dtype)?;
    let mut s = l.shape(x);
    if s.len() < target.len() {
        let mut padded = vec![1; target.len() - s.len()];
        padded.extend(&s);
        s = padded;
    }
    let x = l.reshape(x, &s)?;
    let y = if s == target {
        x
    } else {
        op_as(l, OpKind::Tile, vec![Some(x)], vec![], target, dtype)?
    };
    let v = as_val(l, y);
    l.out(n, 0, v);
    Ok(())
}

/// Expand: broadcast the input and the requested shape against each other.
fn expand(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let want: Vec<i64> = l.host(&n.input[1])?.to_i64();
    let have = match l.val(&n.input[0])? {
        Val::Int(h) => h.shape,
        _ => {
            let t = l.in_t(n, 0)?;
            l.shape(t)
        }
    };
    let r = want.len().max(have.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    let want: Vec<usize> = want
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()?;
    let mut target = Vec::with_capacity(r);
    for i in 0..r {
        let (a, b) = (dim(&have, i), dim(&want, i));
        target.push(match (a, b) {
            _ if a == b || b == 1 => a,
            (1, _) => b,
            _ => bail!("Expand: shape {have:?} does not broadcast to {want:?}"),
        });
    }
    tile_to(l, n, &target)
}

fn tile(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let reps = l.host(&n.input[1])?.to_i64();
    let have = match l.val(&n.input[0])? {
        Val::Int(h) => h.shape,
        _ => {
            let t = l.in_t(n, 0)?;
            l.shape(t)
        }
    };
    if reps.len() != have.len() || reps.iter().any(|&r| r < 0) {
        bail!("Tile repeats {reps:?} do not fit shape {have:?}");
    }
    let target: Vec<usize> = have
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.checked_mul(r as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("Tile output too large"))?;
    tile_to(l, n, &target)
}

/// DepthToSpace (DCR or CRD) and SpaceToDepth as Reshape → Transpose → Reshape.
fn depth_space(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let s = l.shape(x);
    let b = Attrs(n).int("blocksize", 0);
    let [nb, c, h, w] = s[..] else {
        bail!("{} needs a 4-d input", n.op_type)
    };
    if b <= 0 {
        bail!("{} blocksize must be positive", n.op_type);
    }
    let b = b as usize;
    let (inner, perm, out) = if n.op_type == "SpaceToDepth" {
        if h % b != 0 || w % b != 0 {
            bail!("SpaceToDepth: {h}x{w} is not a multiple of the blocksize {b}");
        }
        let out = vec![nb, c * b * b, h / b, w / b];
        (vec![nb, c, h / b, b, w / b, b], [0, 3, 5, 1, 2, 4], out)
    } else {
        if c % (b * b) != 0 {
            bail!("DepthToSpace: {c} channels do not split into {b}x{b} blocks");
        }
        let out = vec![nb, c / (b * b), h * b, w * b];
        if Attrs(n).string("mode", "DCR") == "CRD" {
            (vec![nb, c / (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3], out)
        } else {
            (vec![nb, b, b, c / (b * b), h, w], [0, 3, 4, 1, 5, 2], out)
        }
    };
    let t = l.reshape(x, &inner)?;
    let t = l.transpose(t, &perm)?;
    let y = l.reshape(t, &out)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// InstanceNormalization (one group per channel) and GroupNormalization: a LayerNorm over
/// each group's elements (unit gain), then the per-channel scale and bias.
fn group_norm(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let x = l.in_t(n, 0)?;
    let s = l.shape(x);
    if s.len() < 3 {
        bail!("{} needs an input of rank 3 or more", n.op_type);
    }
    let (nb, c) = (s[0], s[1]);
    let groups = if n.op_type == "GroupNormalization" {
        usize::try_from(a.int("num_groups", 0)).unwrap_or(0)
    } else {
        c
    };
    if groups == 0 || c % groups != 0 {
        bail!(
            "{}: {c} channels do not split into {groups} groups",
            n.op_type
        );
    }
    let per_group: usize = s[1..].iter().product::<usize>() / groups;
    let t = l.reshape(x, &[nb, groups, per_group])?;
    let ones = l.g.add_f32(
        format!("{}:unit", l.node_name),
        vec![per_group],
        &vec![1.0; per_group],
    );
    let eps = a.float("epsilon", 1e-5);
    let t = l.op(
        OpKind::LayerNorm,
        vec![Some(t), Some(ones), None],
        vec![2, eps.to_bits() as i32],
        &[],
    )?;
    let t = l.reshape(t, &s)?;
    let mut cs = vec![c];
    cs.extend(std::iter::repeat_n(1, s.len() - 2));
    let affine = |l: &mut Lower, k: usize| -> Result<usize> {
        let v = l.host(&n.input[k])?.to_f32();
        let per_channel: Vec<f32> = match v.len() {
            len if len == c => v,
            len if len == groups => (0..c).map(|i| v[i / (c / groups)]).collect(),
            len => bail!("{}: {len} scale/bias values for {c} channels", n.op_type),
        };
        Ok(l.g.add_f32(
            format!("{}:affine{k}", l.node_name),
            cs.clone(),
            &per_channel,
        ))
    };
    let (scale, bias) = (affine(l, 1)?, affine(l, 2)?);
    let t = l.binary(OpKind::Mul, t, scale)?;
    let y = l.binary(OpKind::Add, t, bias)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// Dropout at inference: the identity, and an all-true mask. Training mode with a
/// non-zero ratio drops at random, which a deterministic runtime does not do.
pub(crate) fn dropout(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let training = l.ints_in(n, 2)?.is_some_and(|v| v.first() != Some(&0));
    let ratio = match l.opt_host(n, 1)? {
        Some(h) => h.to_f32().first().copied().unwrap_or(0.5),
        None => Attrs(n).float("ratio", 0.5),
    };
    if training && ratio != 0.0 {
        bail!("training-mode Dropout (random) is not supported");
    }
    let v = l.val(&n.input[0])?;
    let shape = match &v {
        Val::Int(h) => h.shape.clone(),
        Val::T(t) | Val::FakeQ { t, .. } => l.shape(*t),
        Val::Absent => bail!("Dropout without an input"),
    };
    l.out(n, 0, v);
    let count = shape.iter().product();
    l.out(
        n,
        1,
        Val::Int(crate::onnx::HostTensor::i64(shape, vec![1; count])),
    );
    Ok(())
}

/// Trilu: keep the upper (or lower) triangle of the last two axes from diagonal k, zeros
/// elsewhere: `Where(constant mask, x, 0)`.
fn trilu(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let s = l.shape(x);
    if s.len() < 2 {
        bail!("Trilu needs an input of rank 2 or more");
    }
    let k = match l.ints_in(n, 1)? {
        Some(v) => v.first().copied().unwrap_or(0),
        None => 0,
    };
    let upper = Attrs(n).int("upper", 1) != 0;
    let (rows, cols) = (s[s.len() - 2], s[s.len() - 1]);
    let mut keep = Vec::with_capacity(rows * cols);
    for i in 0..rows as i64 {
        for j in 0..cols as i64 {
            let d = j - i;
            keep.push(i32::from(if upper { d >= k } else { d <= k }));
        }
    }
    let name = format!("{}:mask", l.node_name);
    let mask = l.g.add_i32(name, vec![rows, cols], &keep);
    let zero = l.scalar(0.0);
    let inputs = vec![Some(mask), Some(x), Some(zero)];
    let y = op_as(l, OpKind::Where, inputs, vec![], &[], DType::F32)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

//! Lowering of shape and data-movement ops: constants, shape arithmetic on int64 values
//! known at convert time, and Reshape/Flatten/Squeeze/Unsqueeze/Concat/Slice/Split/
//! Transpose/Pad on run-time tensors.

use anyhow::{anyhow, bail, Result};
use cairn_core::emit::AlignedBytes;
use cairn_core::{DType, OpKind};

use crate::lower::{Lower, Val};
use crate::onnx::{tensor_from_proto, Attrs, HostTensor, NodeProto};

fn norm_axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r.max(1) {
        bail!("axis {a} out of range for rank {rank}");
    }
    Ok(v as usize)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Per axis (start, step, count) of an ONNX Slice, with ONNX's clamping rules.
pub fn slice_params(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<(i64, i64, usize)>> {
    let r = shape.len();
    let mut res: Vec<(i64, i64, usize)> = shape.iter().map(|&d| (0, 1, d)).collect();
    let default_axes: Vec<i64> = (0..starts.len() as i64).collect();
    let axes = axes.unwrap_or(&default_axes);
    if starts.len() != ends.len() || axes.len() != starts.len() {
        bail!("Slice starts/ends/axes lengths differ");
    }
    for (i, &a) in axes.iter().enumerate() {
        let ax = norm_axis(a, r)?;
        let d = shape[ax] as i64;
        let step = steps.map_or(1, |s| s[i]);
        if step == 0 {
            bail!("Slice step 0");
        }
        let fix = |v: i64| if v < 0 { v + d } else { v };
        let (s, e, count);
        if step > 0 {
            s = fix(starts[i]).clamp(0, d);
            e = fix(ends[i]).clamp(0, d);
            count = if e > s { (e - s + step - 1) / step } else { 0 };
        } else {
            s = fix(starts[i]).clamp(-1, d - 1);
            e = fix(ends[i]).clamp(-1, d - 1);
            count = if s > e {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            };
        }
        res[ax] = (if count == 0 { 0 } else { s }, step, count as usize);
    }
    Ok(res)
}

fn gather_nd<T: Copy>(v: &[T], shape: &[usize], p: &[(i64, i64, usize)]) -> Vec<T> {
    let st = strides(shape);
    let base: i64 = p.iter().zip(&st).map(|(x, &s)| x.0 * s as i64).sum();
    let steps: Vec<i64> = p.iter().zip(&st).map(|(x, &s)| x.1 * s as i64).collect();
    let counts: Vec<usize> = p.iter().map(|x| x.2).collect();
    walk(v, base, &steps, &counts)
}

/// The elements of `v` at `base + Σ idx[d]·steps[d]` for every index `idx` below `counts`,
/// the last axis fastest.
fn walk<T: Copy>(v: &[T], base: i64, steps: &[i64], counts: &[usize]) -> Vec<T> {
    let n: usize = counts.iter().product();
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; counts.len()];
    for _ in 0..n {
        let off: i64 = base
            + idx
                .iter()
                .zip(steps)
                .map(|(&i, &s)| i as i64 * s)
                .sum::<i64>();
        res.push(v[off as usize]);
        for d in (0..counts.len()).rev() {
            idx[d] += 1;
            if idx[d] < counts[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    res
}

fn broadcast_int(
    a: &HostTensor,
    b: &HostTensor,
    f: impl Fn(i64, i64) -> i64,
) -> Result<HostTensor> {
    let (av, bv) = (a.to_i64(), b.to_i64());
    let r = a.shape.len().max(b.shape.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        std::iter::repeat_n(1, r - s.len())
            .chain(s.iter().copied())
            .collect()
    };
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let mut out = vec![0; r];
    for i in 0..r {
        out[i] = if sa[i] == sb[i] || sb[i] == 1 {
            sa[i]
        } else if sa[i] == 1 {
            sb[i]
        } else {
            bail!(
                "int shapes {:?} and {:?} do not broadcast",
                a.shape,
                b.shape
            )
        };
    }
    let (sta, stb) = (strides(&sa), strides(&sb));
    let n = fold_numel(&out)?;
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let ia: usize = (0..r)
            .map(|d| if sa[d] == 1 { 0 } else { idx[d] * sta[d] })
            .sum();
        let ib: usize = (0..r)
            .map(|d| if sb[d] == 1 { 0 } else { idx[d] * stb[d] })
            .sum();
        res.push(f(av[ia], bv[ib]));
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(HostTensor::i64(out, res))
}

/// The most a shape's extent, the product of max(d, 1) over its dims, may be. Every shape
/// the converter holds (graph tensors, convert-time host tensors) is within it, so the
/// product of any of its dims fits in usize even when another dim is 0 (a shape like
/// [0, 2^40, 2^40] has no elements, but a product over its last dims would overflow),
/// and so does the size in bytes of its elements (8 bytes at most), the most one Rust
/// allocation may have.
pub const MAX_EXTENT: usize = isize::MAX as usize / 8;

/// The most elements of one value the converter computes itself (a folded constant, an
/// integer shape value): 2^28, a gigabyte of f32. Far more than any real model folds (the
/// largest constants are embedding tables of tens of millions), and small enough that a
/// hostile model's ConstantOfShape, Range or Expand of 2^40 elements is refused before
/// the allocation that would abort the process.
pub const MAX_FOLD_ELEMS: usize = 1 << 28;

/// [`numel`] of a value about to be computed at convert time, refused past
/// [`MAX_FOLD_ELEMS`].
pub fn fold_numel(shape: &[usize]) -> Result<usize> {
    let n = numel(shape)?;
    if n > MAX_FOLD_ELEMS {
        bail!("a value of shape {shape:?} ({n} elements) computed at convert time is larger than cairn folds (2^28 elements)");
    }
    Ok(n)
}

/// Elements of a tensor of `shape`, refused when the shape's extent is past [`MAX_EXTENT`]
/// (dims of a hostile model: an input declared 2^40 × 2^40, a Reshape target of huge
/// constants, huge dims beside a 0). Call it on every shape from outside or freshly
/// computed before taking products over its dims.
pub fn numel(shape: &[usize]) -> Result<usize> {
    let mut extent = 1usize;
    let mut empty = false;
    for &d in shape {
        empty |= d == 0;
        extent = extent
            .checked_mul(d.max(1))
            .filter(|&e| e <= MAX_EXTENT)
            .ok_or_else(|| match shape.contains(&0) {
                false => anyhow!("shape {shape:?} has more elements than memory can address"),
                true => anyhow!("shape {shape:?}: its dims other than 0 multiply to more elements than memory can address"),
            })?;
    }
    Ok(if empty { 0 } else { extent })
}

/// Resolve an ONNX Reshape target against the input shape (0 = copy, -1 = infer).
pub fn reshape_target(input: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let n = numel(input)?;
    let mut out = Vec::new();
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        out.push(match d {
            -1 => {
                if infer.replace(i).is_some() {
                    bail!("Reshape target {target:?} has two -1");
                }
                1
            }
            0 if !allowzero => *input
                .get(i)
                .ok_or_else(|| anyhow!("Reshape 0 past the input rank"))?,
            d if d < 0 => bail!("Reshape target {target:?} has a negative dim"),
            d => d as usize,
        });
    }
    if let Some(i) = infer {
        let known = numel(&out)?;
        if known == 0 || !n.is_multiple_of(known) {
            bail!("cannot reshape {input:?} to {target:?}");
        }
        out[i] = n / known;
    }
    if numel(&out)? != n {
        bail!("cannot reshape {input:?} ({n} elements) to {target:?}");
    }
    Ok(out)
}

fn squeeze_shape(shape: &[usize], axes: Option<Vec<i64>>) -> Result<Vec<usize>> {
    let r = shape.len();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&x| norm_axis(x, r)).collect::<Result<_>>()?,
        None => (0..r).filter(|&i| shape[i] == 1).collect(),
    };
    Ok(shape
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect())
}

fn unsqueeze_shape(shape: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let r = shape.len() + axes.len();
    let mut ax: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, r))
        .collect::<Result<_>>()?;
    ax.sort_unstable();
    let mut out = Vec::new();
    let mut it = shape.iter();
    for i in 0..r {
        if ax.contains(&i) {
            out.push(1);
        } else {
            out.push(*it.next().ok_or_else(|| anyhow!("bad Unsqueeze axes"))?);
        }
    }
    Ok(out)
}

/// Returns true when `n` was a shape or data-movement op and has been lowered.
pub(crate) fn lower_shape_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    let a = Attrs(n);
    let opset = l.opset;
    let all_int = n
        .input
        .iter()
        .filter(|s| !s.is_empty())
        .all(|s| l.is_int(s));
    match n.op_type.as_str() {
        "Constant" => {
            let t = if let Some(t) = a.tensor("value") {
                tensor_from_proto(t)?
            } else if a.has("value_float") {
                HostTensor::f32(vec![], vec![a.float("value_float", 0.0)])
            } else if let Some(v) = a.floats("value_floats") {
                HostTensor::f32(vec![v.len()], v)
            } else if a.has("value_int") {
                HostTensor::i64(vec![], vec![a.int("value_int", 0)])
            } else if let Some(v) = a.ints("value_ints") {
                HostTensor::i64(vec![v.len()], v)
            } else {
                bail!("Constant without a supported value attribute");
            };
            l.set_host(&n.output[0], t);
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = l
                .host(&n.input[0])?
                .to_i64()
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow!("ConstantOfShape of a negative dim"))?;
            let count = fold_numel(&shape)?;
            let t = match a.tensor("value").map(tensor_from_proto).transpose()? {
                Some(v) if !v.is_float() => HostTensor::i64(shape, vec![v.to_i64()[0]; count]),
                Some(v) => HostTensor::f32(shape, vec![v.to_f32()[0]; count]),
                None => HostTensor::f32(shape, vec![0.0; count]),
            };
            l.set_host(&n.output[0], t);
        }
        "Shape" => {
            let s = match l.val(&n.input[0])? {
                Val::Int(h) => h.shape,
                _ => {
                    let t = l.in_t(n, 0)?;
                    l.shape(t)
                }
            };
            let r = s.len() as i64;
            let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (st, en) = (fix(a.int("start", 0)), fix(a.int("end", r)));
            let v: Vec<i64> = s[st..en.max(st)].iter().map(|&d| d as i64).collect();
            l.out(n, 0, Val::Int(HostTensor::i64(vec![v.len()], v)));
        }
        "Size" => {
            let t = l.in_t(n, 0)?;
            let c = l.shape(t).iter().product::<usize>() as i64;
            l.out(n, 0, Val::Int(HostTensor::i64(vec![], vec![c])));
        }
        "Identity" => {
            let v = l.val(&n.input[0])?;
            l.out(n, 0, v);
        }
        "Dropout" => crate::lower_index::dropout(l, n)?,
        "Cast" => {
            let to = a.int("to", 1);
            let is_float_to = matches!(to, 1 | 10 | 11 | 16);
            match l.val(&n.input[0])? {
                Val::Int(h) if is_float_to => {
                    let id = l.g.add_f32(&n.output[0], h.shape.clone(), &h.to_f32());
                    l.out(n, 0, Val::T(id));
                }
                Val::Int(h) if to == 9 => {
                    let v = h.to_i64().iter().map(|&x| (x != 0) as i64).collect();
                    l.out(n, 0, Val::Int(HostTensor::i64(h.shape.clone(), v)))
                }
                Val::Int(h) => l.out(n, 0, Val::Int(HostTensor::i64(h.shape.clone(), h.to_i64()))),
                Val::T(t) | Val::FakeQ { t, .. } if to == 9 && !l.g.tensors[t].is_const() => {
                    // A run-time tensor to bool (a mask from lengths or scores): x ≠ 0, as
                    // cairn's i32 booleans; NaN is true, as in ONNX.
                    let v = crate::lower_math::nonzero(l, t)?;
                    l.out(n, 0, v);
                }
                Val::T(t) if is_float_to && l.g.tensors[t].dtype == DType::I32 => {
                    let y = int_to_float(l, t)?;
                    l.out(n, 0, Val::T(y));
                }
                v @ (Val::T(_) | Val::FakeQ { .. }) if is_float_to => l.out(n, 0, v),
                Val::T(t) if l.g.tensors[t].dtype == DType::I32 => l.out(n, 0, Val::T(t)),
                Val::T(t) if l.g.tensors[t].is_const() => {
                    let h = l.host(&n.input[0])?;
                    let v = h
                        .to_f32()
                        .iter()
                        .map(|&x| {
                            if to == 9 {
                                (x != 0.0) as i64
                            } else {
                                x.trunc() as i64
                            }
                        })
                        .collect();
                    l.out(n, 0, Val::Int(HostTensor::i64(h.shape.clone(), v)));
                }
                Val::T(t) | Val::FakeQ { t, .. }
                    if l.g.tensors[t].dtype == DType::F32 && to != 9 =>
                {
                    // Float to an integer type at run time (token ids arriving as floats, a
                    // Keras Embedding's Cast before its Gather): truncated toward zero into
                    // i32, cairn's integer type.
                    let y = float_to_int(l, t)?;
                    l.out(n, 0, Val::T(y));
                }
                _ => bail!("Cast of this tensor to type {to} is not supported"),
            }
        }
        "Gather" if crate::lower_index::gathers_at_run_time(l, n) => {
            crate::lower_index::gather(l, n, 0)?
        }
        "Gather" => {
            let idx = l.host(&n.input[1])?;
            let data = l.val(&n.input[0])?;
            let (shape, is_int) = match &data {
                Val::Int(h) => (h.shape.clone(), true),
                Val::T(t) if l.g.tensors[*t].is_const() => (l.shape(*t), false),
                _ => bail!(
                    "Gather on run-time data is not supported (only on convert-time constants)"
                ),
            };
            let axis = norm_axis(a.int("axis", 0), shape.len())?;
            let d = shape[axis] as i64;
            let iv: Vec<i64> = idx
                .to_i64()
                .iter()
                .map(|&i| if i < 0 { i + d } else { i })
                .collect();
            if iv.iter().any(|&i| i < 0 || i >= d) {
                bail!("Gather index out of range");
            }
            let outer: usize = shape[..axis].iter().product();
            let inner: usize = shape[axis + 1..].iter().product();
            let mut out_shape = shape[..axis].to_vec();
            out_shape.extend(&idx.shape);
            out_shape.extend(&shape[axis + 1..]);
            fold_numel(&out_shape)?;
            let pick = |src: &dyn Fn(usize) -> f64| -> Vec<f64> {
                let mut v = Vec::new();
                for o in 0..outer {
                    for &i in &iv {
                        for k in 0..inner {
                            v.push(src((o * shape[axis] + i as usize) * inner + k));
                        }
                    }
                }
                v
            };
            if is_int {
                let Val::Int(h) = data else { unreachable!() };
                let hv = h.to_i64();
                let v = pick(&|i| hv[i] as f64)
                    .into_iter()
                    .map(|x| x as i64)
                    .collect();
                l.out(n, 0, Val::Int(HostTensor::i64(out_shape, v)));
            } else {
                let hv = l.host(&n.input[0])?.to_f32();
                let v: Vec<f32> = pick(&|i| hv[i] as f64)
                    .into_iter()
                    .map(|x| x as f32)
                    .collect();
                let id = l.g.add_f32(&n.output[0], out_shape, &v);
                l.out(n, 0, Val::T(id));
            }
        }
        "Range" => {
            let (s, e, d) = (
                l.host(&n.input[0])?,
                l.host(&n.input[1])?,
                l.host(&n.input[2])?,
            );
            if !s.is_float() {
                let (s, e, d) = (s.to_i64()[0], e.to_i64()[0], d.to_i64()[0]);
                if d == 0 {
                    bail!("Range with delta 0");
                }
                let count = ((e as f64 - s as f64) / d as f64).ceil().max(0.0) as usize;
                fold_numel(&[count])?;
                let v: Vec<i64> = (0..count)
                    .map(|i| s.saturating_add((i as i64).saturating_mul(d)))
                    .collect();
                l.out(n, 0, Val::Int(HostTensor::i64(vec![count], v)));
            } else {
                let (s, e, d) = (s.to_f32()[0], e.to_f32()[0], d.to_f32()[0]);
                let count = ((e - s) / d).ceil().max(0.0) as usize;
                fold_numel(&[count])?;
                let v: Vec<f32> = (0..count).map(|i| s + i as f32 * d).collect();
                let id = l.g.add_f32(&n.output[0], vec![count], &v);
                l.out(n, 0, Val::T(id));
            }
        }
        "Add" | "Sub" | "Mul" | "Div" | "Equal" | "Max" | "Min"
            if all_int && n.input.len() == 2 =>
        {
            let (x, y) = (l.host(&n.input[0])?, l.host(&n.input[1])?);
            let r = match n.op_type.as_str() {
                "Add" => broadcast_int(&x, &y, |p, q| p + q)?,
                "Sub" => broadcast_int(&x, &y, |p, q| p - q)?,
                "Mul" => broadcast_int(&x, &y, |p, q| p * q)?,
                "Max" => broadcast_int(&x, &y, |p, q| p.max(q))?,
                "Min" => broadcast_int(&x, &y, |p, q| p.min(q))?,
                "Equal" => broadcast_int(&x, &y, |p, q| (p == q) as i64)?,
                _ => {
                    if y.to_i64().contains(&0) {
                        bail!("integer division by zero");
                    }
                    broadcast_int(&x, &y, |p, q| p / q)?
                }
            };
            l.out(n, 0, Val::Int(r));
        }
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
            let in_shape = match l.val(&n.input[0])? {
                Val::Int(h) => h.shape.clone(),
                _ => {
                    let t = l.in_t(n, 0)?;
                    l.shape(t)
                }
            };
            let target = match n.op_type.as_str() {
                "Reshape" => {
                    let t = match l.ints_in(n, 1)? {
                        Some(t) => t,
                        None => a
                            .ints("shape")
                            .ok_or_else(|| anyhow!("Reshape without a shape"))?,
                    };
                    reshape_target(&in_shape, &t, a.int("allowzero", 0) != 0)?
                }
                "Flatten" => {
                    let r = in_shape.len();
                    let ax = a.int("axis", 1);
                    let ax = if ax < 0 { ax + r as i64 } else { ax } as usize;
                    if ax > r {
                        bail!("Flatten axis out of range");
                    }
                    vec![numel(&in_shape[..ax])?, numel(&in_shape[ax..])?]
                }
                "Squeeze" => {
                    let axes = if opset >= 13 {
                        l.ints_in(n, 1)?
                    } else {
                        a.ints("axes")
                    };
                    squeeze_shape(&in_shape, axes)?
                }
                _ => {
                    let axes = if opset >= 13 {
                        l.ints_in(n, 1)?
                    } else {
                        a.ints("axes")
                    };
                    unsqueeze_shape(
                        &in_shape,
                        &axes.ok_or_else(|| anyhow!("Unsqueeze without axes"))?,
                    )?
                }
            };
            match l.val(&n.input[0])? {
                Val::Int(h) => l.out(
                    n,
                    0,
                    Val::Int(HostTensor {
                        shape: target,
                        data: h.data,
                    }),
                ),
                _ => {
                    let t = l.in_t(n, 0)?;
                    let y = l.reshape(t, &target)?;
                    l.out(n, 0, Val::T(y));
                }
            }
        }
        "Concat" => {
            if all_int {
                let hs: Vec<HostTensor> = n
                    .input
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| l.host(s))
                    .collect::<Result<_>>()?;
                let r = hs[0].shape.len();
                let axis = norm_axis(a.int("axis", 0), r)?;
                let fits = |h: &HostTensor| {
                    h.shape.len() == r && (0..r).all(|i| i == axis || h.shape[i] == hs[0].shape[i])
                };
                if r == 0 || !hs.iter().all(fits) {
                    bail!("Concat of shapes that differ off axis {axis}");
                }
                let outer: usize = hs[0].shape[..axis].iter().product();
                let mut v = Vec::new();
                let mut shape = hs[0].shape.clone();
                shape[axis] = hs
                    .iter()
                    .try_fold(0usize, |s, h| s.checked_add(h.shape[axis]))
                    .ok_or_else(|| anyhow!("Concat along axis {axis} overflows"))?;
                fold_numel(&shape)?;
                for o in 0..outer {
                    for h in &hs {
                        let len: usize = h.shape[axis..].iter().product();
                        v.extend_from_slice(&h.to_i64()[o * len..(o + 1) * len]);
                    }
                }
                l.out(n, 0, Val::Int(HostTensor::i64(shape, v)));
            } else {
                let ts: Vec<usize> = n
                    .input
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| l.t(&s.clone()))
                    .collect::<Result<_>>()?;
                // Zero-sized inputs add nothing.
                let ts: Vec<usize> = ts
                    .into_iter()
                    .filter(|&t| l.g.tensors[t].numel() > 0)
                    .collect();
                let Some(&t0) = ts.first() else {
                    bail!("Concat of empty tensors only is not supported");
                };
                let r = l.shape(t0).len();
                let axis = norm_axis(a.int("axis", 0), r)?;
                let y = l.concat(&ts, axis)?;
                l.out(n, 0, Val::T(y));
            }
        }
        "Slice" => {
            let (starts, ends, axes, steps) = if opset < 10 {
                (
                    a.ints("starts").unwrap_or_default(),
                    a.ints("ends").unwrap_or_default(),
                    a.ints("axes"),
                    None,
                )
            } else {
                (
                    l.ints_in(n, 1)?
                        .ok_or_else(|| anyhow!("Slice without starts"))?,
                    l.ints_in(n, 2)?
                        .ok_or_else(|| anyhow!("Slice without ends"))?,
                    l.ints_in(n, 3)?,
                    l.ints_in(n, 4)?,
                )
            };
            let data = l.val(&n.input[0])?;
            let shape = match &data {
                Val::Int(h) => h.shape.clone(),
                _ => {
                    let t = l.in_t(n, 0)?;
                    l.shape(t)
                }
            };
            let p = slice_params(&shape, &starts, &ends, axes.as_deref(), steps.as_deref())?;
            let out_shape: Vec<usize> = p.iter().map(|x| x.2).collect();
            match data {
                Val::Int(h) => {
                    let v = gather_nd(&h.to_i64(), &shape, &p);
                    l.out(n, 0, Val::Int(HostTensor::i64(out_shape, v)));
                }
                _ => {
                    let t = l.in_t(n, 0)?;
                    let y = if p
                        .iter()
                        .zip(&shape)
                        .all(|(x, &d)| x.0 == 0 && x.1 == 1 && x.2 == d)
                    {
                        t
                    } else {
                        let mut params: Vec<i32> = p.iter().map(|x| x.0 as i32).collect();
                        params.extend(p.iter().map(|x| x.1 as i32));
                        l.op(OpKind::Slice, vec![Some(t)], params, &out_shape)?
                    };
                    l.out(n, 0, Val::T(y));
                }
            }
        }
        "Split" => {
            let t = l.in_t(n, 0)?;
            let shape = l.shape(t);
            let axis = norm_axis(a.int("axis", 0), shape.len())?;
            let nout = n.output.len();
            let sizes: Vec<usize> = match if opset >= 13 {
                l.ints_in(n, 1)?
            } else {
                a.ints("split")
            } {
                Some(s) => s.iter().map(|&x| x as usize).collect(),
                None => {
                    let parts = if a.has("num_outputs") {
                        a.int("num_outputs", 1) as usize
                    } else {
                        nout
                    };
                    let d = shape[axis];
                    let chunk = d.div_ceil(parts.max(1));
                    (0..parts)
                        .map(|i| chunk.min(d.saturating_sub(i * chunk)))
                        .collect()
                }
            };
            if sizes.len() != nout || sizes.iter().sum::<usize>() != shape[axis] {
                bail!(
                    "Split sizes {sizes:?} do not fit dim {} into {nout} outputs",
                    shape[axis]
                );
            }
            let mut params = vec![axis as i32];
            let mut off = 0;
            let mut declared = Vec::new();
            for &s in &sizes {
                params.push(off as i32);
                off += s;
                let mut d = shape.clone();
                d[axis] = s;
                declared.push(d);
            }
            let ys = l.op_n(OpKind::Split, vec![Some(t)], params, &declared, None)?;
            for (k, y) in ys.into_iter().enumerate() {
                l.out(n, k, Val::T(y));
            }
        }
        "Transpose" => {
            // An integer value known now (a quantized table's rows gathered by constant
            // indices, on their way to a DequantizeLinear) is transposed here and stays
            // integers.
            if let Val::Int(h) = l.val(&n.input[0])? {
                let perm = transpose_perm(a.ints("perm"), h.shape.len())?;
                let y = transpose_host(&h, &perm);
                l.out(n, 0, Val::Int(y));
                return Ok(true);
            }
            let t = l.in_t(n, 0)?;
            let perm = transpose_perm(a.ints("perm"), l.shape(t).len())?;
            let y = l.transpose(t, &perm)?;
            l.out(n, 0, Val::T(y));
        }
        "Pad" => {
            let t = l.in_t(n, 0)?;
            let shape = l.shape(t);
            let r = shape.len();
            let mode = match a.string("mode", "constant").as_str() {
                "constant" => 0,
                "reflect" => 1,
                "edge" => 2,
                "wrap" => WRAP,
                m => bail!("Pad mode '{m}' is not supported"),
            };
            let (pads, value) = if opset < 11 {
                (
                    a.ints("pads")
                        .or_else(|| a.ints("paddings"))
                        .unwrap_or_default(),
                    a.float("value", 0.0),
                )
            } else {
                let p = l
                    .ints_in(n, 1)?
                    .ok_or_else(|| anyhow!("Pad without pads"))?;
                let v = l
                    .opt_host(n, 2)?
                    .map_or(0.0, |h| h.to_f32().first().copied().unwrap_or(0.0));
                (p, v)
            };
            let axes: Vec<usize> = match l.ints_in(n, 3)? {
                Some(ax) => ax.iter().map(|&x| norm_axis(x, r)).collect::<Result<_>>()?,
                None => (0..r).collect(),
            };
            if pads.len() != 2 * axes.len() {
                bail!("Pad has {} pads for {} axes", pads.len(), axes.len());
            }
            let mut begin = vec![0i64; r];
            let mut end = vec![0i64; r];
            for (i, &ax) in axes.iter().enumerate() {
                begin[ax] = pads[i];
                end[ax] = pads[i + axes.len()];
            }
            if mode == WRAP {
                let y = wrap_pad(l, t, &begin, &end)?;
                l.out(n, 0, Val::T(y));
                return Ok(true);
            }
            if begin.iter().chain(&end).any(|&p| p < 0) {
                bail!("negative pads (cropping) are not supported");
            }
            let out: Vec<usize> = (0..r)
                .map(|i| shape[i] + (begin[i] + end[i]) as usize)
                .collect();
            let mut params = vec![mode, value.to_bits() as i32];
            params.extend(begin.iter().map(|&b| b as i32));
            let y = l.op(OpKind::Pad, vec![Some(t)], params, &out)?;
            l.out(n, 0, Val::T(y));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Pad mode `wrap` (not a kernel mode): the Pad arm's marker for it.
const WRAP: i32 = -1;

/// Pad in `wrap` mode: along each padded axis, output index j reads input index
/// (j − begin) mod d, one Gather with constant indices per axis (negative pads crop).
fn wrap_pad(l: &mut Lower, t: usize, begin: &[i64], end: &[i64]) -> Result<usize> {
    let mut y = t;
    for (axis, (&b, &e)) in begin.iter().zip(end).enumerate() {
        if b == 0 && e == 0 {
            continue;
        }
        let d = l.shape(y)[axis] as i64;
        let len = d + b + e;
        if d == 0 || len <= 0 {
            bail!("Pad wrap of axis {axis} (size {d}) by {b}, {e} leaves nothing");
        }
        let idx: Vec<i32> = (0..len).map(|j| (j - b).rem_euclid(d) as i32).collect();
        let idx =
            l.g.add_i32(format!("{}:wrap{axis}", l.node_name), vec![idx.len()], &idx);
        let dtype = l.g.tensors[y].dtype;
        y = crate::lower_math::op_as(
            l,
            OpKind::Gather,
            vec![Some(y), Some(idx)],
            vec![axis as i32, 0],
            &[],
            dtype,
        )?;
    }
    Ok(y)
}

/// A run-time f32 tensor truncated toward zero into i32 (saturating; NaN to 0).
pub(crate) fn float_to_int(l: &mut Lower, t: usize) -> Result<usize> {
    let shape = l.shape(t);
    let y = l.op_n(
        OpKind::Quantize,
        vec![Some(t)],
        vec![],
        &[shape],
        Some((DType::I32, cairn_core::emit::QuantSpec::None)),
    )?;
    Ok(y[0])
}

/// A run-time i32 tensor cast to float. A comparison's or a logic op's 0/1 result (a
/// one-hot, a mask) becomes `Where(t, 1, 0)` (which the one-hot MatMul rewrite reads);
/// other run-time integers (an id input read as a number) a Dequantize of the
/// unquantized i32, i.e. scale 1 and zero point 0.
pub(crate) fn int_to_float(l: &mut Lower, t: usize) -> Result<usize> {
    use cairn_core::op::BinaryFn;
    let zero_one = l.g.ops.iter().any(|op| {
        op.outputs.contains(&t)
            && op.kind == OpKind::Binary
            && op
                .params
                .first()
                .and_then(|&c| BinaryFn::from_code(c))
                .is_some_and(|f| !f.is_arithmetic())
    });
    if !zero_one {
        let shape = l.shape(t);
        let y = l.op_n(
            OpKind::Dequantize,
            vec![Some(t)],
            vec![],
            &[shape],
            Some((DType::F32, cairn_core::emit::QuantSpec::None)),
        )?;
        return Ok(y[0]);
    }
    let shape = l.shape(t);
    let (one, zero) = (l.scalar(1.0), l.scalar(0.0));
    let y = crate::lower_math::op_as(
        l,
        OpKind::Where,
        vec![Some(t), Some(one), Some(zero)],
        vec![],
        &shape,
        DType::F32,
    )?;
    if let Some(src) = one_hot_source(l, t) {
        l.one_hot.insert(y, src);
    }
    Ok(y)
}

/// The producing op of run-time tensor `t`.
fn producer<'a>(l: &'a Lower, t: usize) -> Option<&'a crate::ir::HOp> {
    l.g.ops.iter().find(|op| op.outputs.contains(&t))
}

/// `t = Equal(indices, iota)` with `iota` a constant counting 0..depth along the last
/// axis and `indices` of last dim 1 (or a Tile of such): the indices and the depth.
fn one_hot_source(l: &Lower, t: usize) -> Option<(usize, usize)> {
    use cairn_core::op::BinaryFn;
    let op = producer(l, t)?;
    if op.kind != OpKind::Binary || op.params.first() != Some(&(BinaryFn::Equal as i32)) {
        return None;
    }
    let (a, b) = (op.inputs.first().copied()??, op.inputs.get(1).copied()??);
    let (mut idx, iota) = match (l.g.tensors[a].is_const(), l.g.tensors[b].is_const()) {
        (false, true) => (a, b),
        (true, false) => (b, a),
        _ => return None,
    };
    let ys = l.shape(t);
    let depth = *ys.last()?;
    let it = &l.g.tensors[iota];
    if it.dtype != DType::I32 || it.shape.last() != Some(&depth) {
        return None;
    }
    let counts: &[i32] = bytemuck::try_cast_slice(it.data.as_ref()?.as_slice()).ok()?;
    if !counts
        .iter()
        .enumerate()
        .all(|(i, &v)| usize::try_from(v).ok() == Some(i % depth))
    {
        return None;
    }
    if l.shape(idx).last() != Some(&1) {
        let tile = producer(l, idx)?;
        if tile.kind != OpKind::Tile {
            return None;
        }
        idx = tile.inputs.first().copied()??;
    }
    let is = l.shape(idx);
    (is.len() == ys.len() && is.last() == Some(&1) && is[..is.len() - 1] == ys[..ys.len() - 1])
        .then_some((idx, depth))
}

/// MatMul of a one-hot encoding by a constant `[depth, d]`: the rows of the constant
/// at the indices (an embedding lookup), a zero row for indices outside `0..depth` (whose
/// one-hot is all zeros). None when `a` is no one-hot or `b` no such constant.
pub(crate) fn one_hot_matmul(l: &mut Lower, a: usize, b: usize) -> Result<Option<usize>> {
    use crate::lower_math::op_as;
    use cairn_core::op::BinaryFn;
    let Some(&(idx, depth)) = l.one_hot.get(&a) else {
        return Ok(None);
    };
    let sb = l.shape(b);
    let Some(w) = l.g.tensors[b].const_f32() else {
        return Ok(None);
    };
    if sb.len() != 2 || sb[0] != depth || i32::try_from(depth).is_err() {
        return Ok(None);
    }
    let mut rows = w;
    rows.resize((depth + 1) * sb[1], 0.0);
    let table = l.g.add_f32(
        format!("{}:one_hot_rows", l.node_name),
        vec![depth + 1, sb[1]],
        &rows,
    );
    let is = l.shape(idx);
    let flat = l.reshape(idx, &is[..is.len() - 1])?;
    let int = |l: &mut Lower, v: i32| {
        let bytes = AlignedBytes::from_slice(&v.to_le_bytes());
        l.g.add_const(format!("{}:i{v}", l.node_name), DType::I32, vec![], bytes)
    };
    let (zero, n) = (int(l, 0), int(l, depth as i32));
    let cmp = |l: &mut Lower, f: BinaryFn, x: usize, y: usize| {
        op_as(
            l,
            OpKind::Binary,
            vec![Some(x), Some(y)],
            vec![f as i32],
            &[],
            DType::I32,
        )
    };
    let below = cmp(l, BinaryFn::Less, flat, zero)?;
    let above = cmp(l, BinaryFn::GreaterOrEqual, flat, n)?;
    let outside = cmp(l, BinaryFn::Or, below, above)?;
    let row = op_as(
        l,
        OpKind::Where,
        vec![Some(outside), Some(n), Some(flat)],
        vec![],
        &[],
        DType::I32,
    )?;
    let y = op_as(
        l,
        OpKind::Gather,
        vec![Some(table), Some(row)],
        vec![0, 0],
        &[],
        DType::F32,
    )?;
    Ok(Some(y))
}

/// Convert-time values of one shape stacked along a new axis `axis` (as integers).
pub fn stack_host(parts: &[HostTensor], axis: usize) -> Result<HostTensor> {
    let first = &parts
        .first()
        .ok_or_else(|| anyhow!("stack of nothing"))?
        .shape;
    if axis > first.len() || parts.iter().any(|p| &p.shape != first) {
        bail!("stacked values differ in shape, or the axis is past their rank");
    }
    let mut shape = first.clone();
    shape.insert(axis, parts.len());
    fold_numel(&shape)?;
    let (outer, inner) = (numel(&first[..axis])?, numel(&first[axis..])?);
    let vals: Vec<Vec<i64>> = parts.iter().map(|p| p.to_i64()).collect();
    let mut out = Vec::with_capacity(outer * inner * parts.len());
    for o in 0..outer {
        for v in &vals {
            out.extend_from_slice(&v[o * inner..(o + 1) * inner]);
        }
    }
    Ok(HostTensor::i64(shape, out))
}

/// A Transpose's permutation of `rank` axes (reversed when not given), checked to be one.
fn transpose_perm(perm: Option<Vec<i64>>, rank: usize) -> Result<Vec<usize>> {
    let perm: Vec<usize> = match perm {
        Some(p) => p
            .iter()
            .map(|&x| usize::try_from(x).map_err(|_| anyhow!("Transpose perm {p:?}")))
            .collect::<Result<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    let permutes = perm.len() == rank
        && perm
            .iter()
            .all(|&p| seen.get_mut(p).is_some_and(|s| !std::mem::replace(s, true)));
    if !permutes {
        bail!("Transpose perm {perm:?} is not a permutation of {rank} axes");
    }
    Ok(perm)
}

/// `h` with its axes in the order `perm` (a checked permutation of its axes), as int64.
fn transpose_host(h: &HostTensor, perm: &[usize]) -> HostTensor {
    let st = strides(&h.shape);
    let steps: Vec<i64> = perm.iter().map(|&p| st[p] as i64).collect();
    let out_shape: Vec<usize> = perm.iter().map(|&p| h.shape[p]).collect();
    let v = walk(&h.to_i64(), 0, &steps, &out_shape);
    HostTensor::i64(out_shape, v)
}

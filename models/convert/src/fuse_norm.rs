//! LayerNorm written out of reductions and element-wise ops → one `LayerNorm` op.
//!
//! Exporters spell a LayerNorm many ways: `ReduceMean((x − mean)²)` or `E[x²] − E[x]²`
//! (Flax/JAX, Keras through tf2onnx), the mean as `ReduceSum · 1/N`, a square as `Mul`,
//! `Pow(·, 2)` or `ReduceSumSquare`, the inverse standard deviation as `1/Sqrt`,
//! `Reciprocal(Sqrt)` or a `Div`, γ and β applied in any order, `keepdims = 0` plus a
//! `Reshape` back, a `Max(0, ·)` on the variance, and the reduction over any set of axes
//! (magika's over the channel axis of a `[N, C, L]` tensor).
//!
//! Rather than list the spellings, the pass finds candidates by structure and proves them
//! by evaluation: from each mean-like reduction of a float tensor `x` it grows the region
//! of element-wise, reshape and reduce ops computed from `x` and constants alone; a
//! candidate output `y` of `x`'s shape is accepted when the ops between `x` and `y`
//! (none read from outside, none a graph output) contain two reductions and one ε, and,
//! run with the reference kernels, compute `LayerNorm(x)·γ + β` over the reduced axes on
//! four probe inputs (zero, two random, and one whose variance is of the order of ε, so a
//! look-alike with another ε or other axes fails). β is read from the zero probe, γ from
//! the random ones; both are snapped to the region's own constants when those match.
//!
//! It never crosses a quantization point of a QDQ model (as `fuse.rs`), and it runs
//! before activation fusion, so a clamp on the result is not mistaken for part of it.

use std::collections::{HashMap, HashSet};

use cairn_core::emit::AlignedBytes;
use cairn_core::op::ReduceFn;
use cairn_core::{DType, OpKind};

use crate::ir::{f32_bytes, Graph, HOp, Hint};

/// The most ops a decomposed LayerNorm region is searched over.
const MAX_REGION_OPS: usize = 48;

/// A LayerNorm found in the graph: the ops it replaces and what it becomes.
struct Found {
    x: usize,
    y: usize,
    ops: Vec<usize>,
    /// Reduced axes, ascending.
    axes: Vec<usize>,
    eps: f32,
    /// γ and β over the reduced axes (in their order), `None` for β all zero.
    gamma: Vec<f32>,
    beta: Option<Vec<f32>>,
}

/// Fuse every decomposed LayerNorm; returns how many were fused.
pub fn fuse_layer_norms(g: &mut Graph) -> usize {
    let mut tried: HashSet<usize> = HashSet::new();
    let mut fused = 0;
    'scan: loop {
        for seed in 0..g.ops.len() {
            let marker = g.ops[seed].outputs[0];
            if tried.contains(&marker) {
                continue;
            }
            tried.insert(marker);
            let Some((x, axes)) = mean_seed(g, seed) else {
                continue;
            };
            if let Some(found) = find(g, x, &axes) {
                rewrite(g, found);
                fused += 1;
                continue 'scan;
            }
        }
        break;
    }
    fused
}

/// `(x, reduced axes)` when op `seed` is a mean or sum reduction of a float tensor `x`.
fn mean_seed(g: &Graph, seed: usize) -> Option<(usize, Vec<usize>)> {
    let op = &g.ops[seed];
    let mask = match op.kind {
        OpKind::ReduceMean => op.params[0],
        OpKind::Reduce if op.params[0] == ReduceFn::Sum as i32 => op.params[1],
        _ => return None,
    };
    let x = op.inputs.first().copied().flatten()?;
    let t = &g.tensors[x];
    if t.dtype != DType::F32 || t.is_const() {
        return None;
    }
    let rank = t.shape.len();
    let axes: Vec<usize> = (0..rank).filter(|&a| mask & (1 << a) != 0).collect();
    (!axes.is_empty()).then_some((x, axes))
}

fn region_kind(op: &HOp) -> bool {
    matches!(
        op.kind,
        OpKind::Add
            | OpKind::Sub
            | OpKind::Mul
            | OpKind::Div
            | OpKind::Unary
            | OpKind::Binary
            | OpKind::Reshape
            | OpKind::ReduceMean
            | OpKind::Reduce
            | OpKind::Tile
    ) && op.outputs.len() == 1
}

/// The ops computed from `x` and constants alone, in graph order (at most
/// [`MAX_REGION_OPS`]).
fn grow_region(g: &Graph, x: usize) -> Vec<usize> {
    let mut known: HashSet<usize> = HashSet::from([x]);
    let mut region = Vec::new();
    for (i, op) in g.ops.iter().enumerate() {
        if region.len() >= MAX_REGION_OPS {
            break;
        }
        if !region_kind(op) {
            continue;
        }
        let mut reads_region = false;
        let all_known = op.inputs.iter().flatten().all(|&t| {
            let k = known.contains(&t);
            reads_region |= k;
            k || g.tensors[t].is_const()
        });
        if all_known && reads_region {
            region.push(i);
            known.insert(op.outputs[0]);
        }
    }
    region
}

/// The ops of `region` that `y` depends on, in graph order.
fn ancestors(g: &Graph, region: &[usize], y: usize) -> Vec<usize> {
    let by_out: HashMap<usize, usize> = region.iter().map(|&i| (g.ops[i].outputs[0], i)).collect();
    let mut keep = HashSet::new();
    let mut stack = vec![y];
    while let Some(t) = stack.pop() {
        if let Some(&i) = by_out.get(&t) {
            if keep.insert(i) {
                stack.extend(g.ops[i].inputs.iter().flatten().copied());
            }
        }
    }
    let mut v: Vec<usize> = keep.into_iter().collect();
    v.sort_unstable();
    v
}

fn find(g: &Graph, x: usize, axes: &[usize]) -> Option<Found> {
    let region = grow_region(g, x);
    let xs = g.tensors[x].shape.clone();
    let candidates: Vec<usize> = region
        .iter()
        .rev()
        .map(|&i| g.ops[i].outputs[0])
        .filter(|&t| g.tensors[t].shape == xs)
        .collect();
    for y in candidates {
        let ops = ancestors(g, &region, y);
        let Some(eps) = plausible(g, &ops, x, y, axes) else {
            continue;
        };
        if let Some((gamma, beta)) = prove(g, &ops, x, y, axes, eps) {
            return Some(Found {
                x,
                y,
                ops,
                axes: axes.to_vec(),
                eps,
                gamma,
                beta,
            });
        }
    }
    None
}

/// The structural test before any evaluation: two reductions, one ε, `x` read at least
/// twice, no intermediate tensor read outside the ops or an output or a QDQ point.
/// Returns ε.
fn plausible(g: &Graph, ops: &[usize], x: usize, y: usize, axes: &[usize]) -> Option<f32> {
    let reductions = ops
        .iter()
        .filter(|&&i| matches!(g.ops[i].kind, OpKind::ReduceMean | OpKind::Reduce))
        .count();
    let x_reads: usize = ops
        .iter()
        .map(|&i| g.ops[i].inputs.iter().filter(|&&t| t == Some(x)).count())
        .sum();
    if reductions < 2 || x_reads < 2 {
        return None;
    }
    let inside: HashSet<usize> = ops.iter().copied().collect();
    for &i in ops {
        let t = g.ops[i].outputs[0];
        if t == y {
            continue;
        }
        let qdq_point = matches!(g.tensors[t].hint, Some(Hint::Act { .. }));
        if qdq_point || g.outputs.contains(&t) || g.consumers(t).iter().any(|c| !inside.contains(c))
        {
            return None;
        }
    }
    // ε: a scalar constant added to a tensor of the reduced statistics' size.
    let stats_numel = g.tensors[x].numel()
        / axes
            .iter()
            .map(|&a| g.tensors[x].shape[a])
            .product::<usize>();
    let mut eps: Option<f32> = None;
    for &i in ops {
        let op = &g.ops[i];
        if op.kind != OpKind::Add {
            continue;
        }
        let ins: Vec<usize> = op.inputs.iter().flatten().copied().collect();
        for (a, b) in [(0, 1), (1, 0)] {
            let (Some(&v), Some(&c)) = (ins.get(a), ins.get(b)) else {
                continue;
            };
            if g.tensors[v].is_const() || g.tensors[v].numel() != stats_numel {
                continue;
            }
            let Some(e) = crate::fuse::const_scalar(g, c) else {
                continue;
            };
            match eps {
                Some(prev) if prev != e => return None,
                _ => eps = Some(e),
            }
        }
    }
    eps.filter(|e| e.is_finite() && *e > 0.0)
}

/// Run `ops` on `x = input`; returns `y`.
fn eval(g: &Graph, ops: &[usize], x: usize, y: usize, input: &[f32]) -> Option<Vec<f32>> {
    let mut vals: HashMap<usize, AlignedBytes> = HashMap::from([(x, f32_bytes(input))]);
    for &i in ops {
        let op = &g.ops[i];
        let outs = g.run_op(op, &|t| vals.get(&t).cloned()).ok()?;
        for (&o, b) in op.outputs.iter().zip(outs) {
            vals.insert(o, b);
        }
    }
    let b = vals.get(&y)?;
    if g.tensors[y].dtype != DType::F32 {
        return None;
    }
    Some(bytemuck::cast_slice::<u8, f32>(b.as_slice()).to_vec())
}

/// Element positions of `shape`, as (position within the reduced axes, group index).
struct Layout {
    /// For each flat element: index into the reduced-axes block.
    inner: Vec<usize>,
    /// For each flat element: index of its group (the other axes).
    group: Vec<usize>,
    inner_len: usize,
    groups: usize,
}

fn layout(shape: &[usize], axes: &[usize]) -> Layout {
    let numel: usize = shape.iter().product();
    let inner_len: usize = axes.iter().map(|&a| shape[a]).product();
    let (mut inner, mut group) = (Vec::with_capacity(numel), Vec::with_capacity(numel));
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel {
        let (mut i, mut o) = (0, 0);
        for (a, &d) in shape.iter().enumerate() {
            if axes.contains(&a) {
                i = i * d + idx[a];
            } else {
                o = o * d + idx[a];
            }
        }
        inner.push(i);
        group.push(o);
        for a in (0..shape.len()).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Layout {
        inner,
        group,
        inner_len,
        groups: numel / inner_len.max(1),
    }
}

/// `(x − mean) / sqrt(var + eps)` over the reduced axes, in f64.
fn normalized(x: &[f32], lay: &Layout, eps: f32) -> Vec<f64> {
    let n = lay.inner_len as f64;
    let mut sum = vec![0f64; lay.groups];
    for (k, &v) in x.iter().enumerate() {
        sum[lay.group[k]] += v as f64;
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let mut var = vec![0f64; lay.groups];
    for (k, &v) in x.iter().enumerate() {
        let d = v as f64 - mean[lay.group[k]];
        var[lay.group[k]] += d * d;
    }
    x.iter()
        .enumerate()
        .map(|(k, &v)| {
            let o = lay.group[k];
            (v as f64 - mean[o]) / (var[o] / n + eps as f64).sqrt()
        })
        .collect()
}

fn probe(state: &mut u64, numel: usize, scale: f32) -> Vec<f32> {
    (0..numel)
        .map(|_| {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            scale * (2.0 * ((z >> 40) as f32 / (1u64 << 24) as f32) - 1.0)
        })
        .collect()
}

/// γ or β read per element, collapsed to the reduced axes if it is the same in every
/// group (within `tol`).
fn collapse(full: &[f64], lay: &Layout, tol: f64) -> Option<Vec<f32>> {
    let mut v: Vec<Option<f64>> = vec![None; lay.inner_len];
    for (k, &f) in full.iter().enumerate() {
        let slot = &mut v[lay.inner[k]];
        match slot {
            None => *slot = Some(f),
            Some(p) if (*p - f).abs() <= tol * (1.0 + p.abs()) => {}
            Some(_) => return None,
        }
    }
    v.into_iter().map(|p| p.map(|p| p as f32)).collect()
}

/// γ, β such that `ops` compute `LayerNorm(x)·γ + β`, proved on four probes.
#[allow(clippy::type_complexity)]
fn prove(
    g: &Graph,
    ops: &[usize],
    x: usize,
    y: usize,
    axes: &[usize],
    eps: f32,
) -> Option<(Vec<f32>, Option<Vec<f32>>)> {
    let shape = g.tensors[x].shape.clone();
    let lay = layout(&shape, axes);
    let numel = lay.inner.len();
    if lay.inner_len < 2 {
        return None;
    }
    let mut state = 0x1a7e_u64;
    let beta_full: Vec<f64> = eval(g, ops, x, y, &vec![0.0; numel])?
        .iter()
        .map(|&v| v as f64)
        .collect();
    let beta = collapse(&beta_full, &lay, 1e-6)?;
    let (p1, p2) = (probe(&mut state, numel, 1.0), probe(&mut state, numel, 1.0));
    let (y1, y2) = (eval(g, ops, x, y, &p1)?, eval(g, ops, x, y, &p2)?);
    let (n1, n2) = (normalized(&p1, &lay, eps), normalized(&p2, &lay, eps));
    let gamma_full: Vec<f64> = (0..numel)
        .map(|k| {
            let (yk, nk) = if n1[k].abs() >= n2[k].abs() {
                (y1[k], n1[k])
            } else {
                (y2[k], n2[k])
            };
            (yk as f64 - beta_full[k]) / nk
        })
        .collect();
    let gamma = collapse(&gamma_full, &lay, 1e-3)?;
    let gamma = snap(g, ops, gamma, axes, &shape);
    let beta = snap(g, ops, beta, axes, &shape);
    // Proof: a fresh unit probe, and one whose variance is about ε.
    let small = (3.0 * eps).sqrt();
    for scale in [1.0f32, small] {
        let p = probe(&mut state, numel, scale);
        let got = eval(g, ops, x, y, &p)?;
        let n = normalized(&p, &lay, eps);
        for ((&slot, &nk), &yk) in lay.inner.iter().zip(&n).zip(&got) {
            let (gk, bk) = (gamma[slot] as f64, beta[slot] as f64);
            let want = nk * gk + bk;
            let tol = 2e-3 * (nk.abs() * gk.abs() + bk.abs()) + 1e-5 * (1.0 + gk.abs());
            let off = (yk as f64 - want).abs();
            if off.is_nan() || off > tol {
                return None;
            }
        }
    }
    let beta = beta.iter().any(|&b| b != 0.0).then_some(beta);
    Some((gamma, beta))
}

/// `values` replaced by a constant of the region (laid out over the reduced axes) when
/// one matches them to within float rounding, else by all ones / zeros when they are
/// that; otherwise as read.
fn snap(g: &Graph, ops: &[usize], values: Vec<f32>, axes: &[usize], shape: &[usize]) -> Vec<f32> {
    let close = |a: &[f32], b: &[f32]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(p, q)| (p - q).abs() <= 1e-4 * (1.0 + q.abs()))
    };
    for &i in ops {
        for &t in g.ops[i].inputs.iter().flatten() {
            let Some(c) = g.tensors[t].const_f32() else {
                continue;
            };
            if c.len() != values.len() || c.len() < 2 {
                continue;
            }
            // A constant whose non-1 dims are exactly the reduced axes, right-aligned.
            let cs = &g.tensors[t].shape;
            let lead = shape.len().saturating_sub(cs.len());
            let fits = cs.len() <= shape.len()
                && cs.iter().enumerate().all(|(j, &d)| {
                    let a = j + lead;
                    if axes.contains(&a) {
                        d == shape[a]
                    } else {
                        d == 1
                    }
                });
            if fits && close(&c, &values) {
                return c;
            }
        }
    }
    for unit in [1.0f32, 0.0] {
        let u = vec![unit; values.len()];
        if close(&u, &values) {
            return u;
        }
    }
    values
}

/// Replace the found ops by `LayerNorm` (between two Transposes when the reduced axes are
/// not the trailing ones), writing the same output tensor.
fn rewrite(g: &mut Graph, f: Found) {
    let rank = g.tensors[f.x].shape.len();
    let xs = g.tensors[f.x].shape.clone();
    let last = *f.ops.last().expect("a region has ops");
    let name = g.ops[last].name.clone();
    let inner: usize = f.axes.iter().map(|&a| xs[a]).product();
    let trailing = f
        .axes
        .iter()
        .enumerate()
        .all(|(j, &a)| a == rank - f.axes.len() + j);
    let gamma = g.add_f32(format!("{name}:gamma"), vec![inner], &f.gamma);
    let beta = f
        .beta
        .as_ref()
        .map(|b| g.add_f32(format!("{name}:beta"), vec![inner], b));
    let axis = (rank - f.axes.len()) as i32;
    let ln = |input: usize, output: usize| HOp {
        kind: OpKind::LayerNorm,
        inputs: vec![Some(input), Some(gamma), beta],
        outputs: vec![output],
        params: vec![axis, f.eps.to_bits() as i32],
        name: name.clone(),
    };
    let new_ops = if trailing {
        vec![ln(f.x, f.y)]
    } else {
        let perm: Vec<usize> = (0..rank)
            .filter(|a| !f.axes.contains(a))
            .chain(f.axes.iter().copied())
            .collect();
        let mut back = vec![0usize; rank];
        for (j, &p) in perm.iter().enumerate() {
            back[p] = j;
        }
        let ts: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
        let xt = g.add(format!("{name}:t"), DType::F32, ts.clone());
        let yt = g.add(format!("{name}:ln"), DType::F32, ts);
        let transpose = |input: usize, output: usize, perm: &[usize]| HOp {
            kind: OpKind::Transpose,
            inputs: vec![Some(input)],
            outputs: vec![output],
            params: perm.iter().map(|&p| p as i32).collect(),
            name: name.clone(),
        };
        vec![
            transpose(f.x, xt, &perm),
            ln(xt, yt),
            transpose(yt, f.y, &back),
        ]
    };
    let dead: HashSet<usize> = f.ops.iter().copied().collect();
    let mut ops = Vec::with_capacity(g.ops.len());
    for (i, op) in std::mem::take(&mut g.ops).into_iter().enumerate() {
        if i == last {
            ops.extend(new_ops.iter().cloned());
        } else if !dead.contains(&i) {
            ops.push(op);
        }
    }
    g.ops = ops;
}

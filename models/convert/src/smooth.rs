//! Per-channel scale migration before calibration (cross-layer equalization, and
//! SmoothQuant's migration from a LayerNorm into the linear layers that read it).
//!
//! int8 activations have one scale per tensor. A tensor whose channels differ in range by
//! orders of magnitude (the bins of a spectrum, where speech puts most energy in a few; a
//! normalization's outlier channels) spends its 256 codes on the widest channel and
//! leaves the others a few steps, or none. Weights are quantized per output channel, so a
//! per-channel scale is free on the weight side. This pass moves it there: for a
//! *source* that can absorb a positive factor per output channel (a Conv's or a
//! FullyConnected's weight rows and bias, a LayerNorm's γ and β) whose result reaches only
//! *absorbers* (a one-group Conv or a FullyConnected that reads the channel as an input
//! channel of a constant weight) through ops that commute with a positive per-channel
//! factor, the source divides channel c by `s_c` and every absorber multiplies the weights
//! that read it by `s_c^d`, where `d` is the degree of the ops between (1 through data
//! movement, Relu, PRelu, MaxPool, Abs; 2 through a square, ½ through a square root; an
//! Add or Sub of two such tensors ties their channels to one factor). The float function
//! of the graph does not change (up to f32 rounding).
//!
//! The factors follow SmoothQuant: at an absorber's input, channel j gets
//! `t_j = max|X_j|^α / max|W_j|^(1−α)` (α = ½), from the float graph run on calibration
//! samples, so that activation ranges and weight columns share the spread. A migration
//! is kept only when, run with int8 round trips on a few calibration samples (each
//! tensor at its own min/max, weights per output channel), every absorber's result of
//! its component comes out closer to float than without it. A component with a tensor
//! the pass cannot follow (a graph output, an op that does not commute with the scale, a
//! LayerNorm or a residual Add reading it) is left as it is.
//!
//! On the corpus (`bench.py --convert-args=--smooth`) this raises the openWakeWord mel
//! model's cosine (0.950 → 0.965) and lowers Silero VAD's frame agreement (0.957 → 0.92:
//! the acceptance test fake-quantizes the spectrum's square and sum, which the converter
//! then keeps in f32), so it is not the default (`Options::smooth`). MiniLM's error sits in
//! its residual stream's outlier channels at the input of a LayerNorm, which no factor
//! can move: its LayerNorms also feed residual Adds, so nothing there migrates.

use std::collections::HashMap;

use anyhow::Result;
use cairn_core::emit::AlignedBytes;
use cairn_core::op::{conv, UnaryFn};
use cairn_core::{DType, OpKind};

use crate::ir::Graph;
use crate::lower::INF_BITS;
use crate::quantize::per_channel_symmetric;

/// SmoothQuant's migration strength.
const ALPHA: f64 = 0.5;
/// Calibration samples the per-channel ranges come from.
const STAT_SAMPLES: usize = 4;
/// Calibration samples the acceptance test runs a component on, and the share of its
/// error a migration must stay under to be kept.
const PROBE_SAMPLES: usize = 2;
const ACCEPT: f64 = 0.9;
/// The largest ratio between two channels' factors in one component: beyond it the
/// weights of the smallest columns would round to nothing.
const MAX_SPREAD: f64 = 1e4;

/// Where a tracked tensor keeps its channels: the axis, the channel class of each position
/// along it, and the degree of the factor (the value at position p is the original
/// divided by `s[class[p]]^degree`).
#[derive(Clone, Debug)]
struct Track {
    axis: usize,
    class: Vec<usize>,
    degree: f64,
}

/// How an op of a component handles the factor.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    /// Divides its output channels by the factor (weights, bias, γ/β).
    Source,
    /// Carries it from input to output.
    Pass,
    /// Multiplies its weights' input channels by it.
    Absorb,
}

fn bits(p: &[i32], k: usize) -> f32 {
    f32::from_bits(p.get(k).copied().unwrap_or(0) as u32)
}

/// A clamp that commutes with a positive factor: none, or a Relu's [0, ∞).
fn clamp_commutes(lo: i32, hi: i32) -> bool {
    hi == INF_BITS.1 && (lo == INF_BITS.0 || f32::from_bits(lo as u32) == 0.0)
}

fn const_f32(g: &Graph, t: Option<usize>) -> Option<Vec<f32>> {
    t.and_then(|t| g.tensors[t].const_f32())
}

/// Output channels (axis, count) when `op` can be a source.
fn source_axis(g: &Graph, op: &crate::ir::HOp) -> Option<(usize, usize)> {
    let y = &g.tensors[*op.outputs.first()?];
    if y.dtype != DType::F32 || op.outputs.len() != 1 {
        return None;
    }
    match op.kind {
        OpKind::Conv => {
            const_f32(g, op.inputs.get(1).copied().flatten())?;
            if let Some(b) = op.inputs.get(2).copied().flatten() {
                g.tensors[b].const_f32()?;
            }
            let ok = clamp_commutes(op.params[conv::ACT_LO], op.params[conv::ACT_HI]);
            (ok && y.shape.len() == 4).then(|| (1, y.shape[1]))
        }
        OpKind::FullyConnected => {
            const_f32(g, op.inputs.get(1).copied().flatten())?;
            if let Some(b) = op.inputs.get(2).copied().flatten() {
                g.tensors[b].const_f32()?;
            }
            let r = y.shape.len();
            (r >= 1 && clamp_commutes(op.params[0], op.params[1])).then(|| (r - 1, y.shape[r - 1]))
        }
        OpKind::LayerNorm => {
            let r = y.shape.len();
            const_f32(g, op.inputs.get(1).copied().flatten())?;
            if let Some(b) = op.inputs.get(2).copied().flatten() {
                g.tensors[b].const_f32()?;
            }
            (r >= 1 && op.params[0] as usize == r - 1).then(|| (r - 1, y.shape[r - 1]))
        }
        _ => None,
    }
}

/// The degree factor of a one-input op that carries the factor, or `None`.
fn pass_degree(g: &Graph, op: &crate::ir::HOp) -> Option<f64> {
    use OpKind::*;
    match op.kind {
        Reshape | Transpose | Slice | MaxPool | PRelu => Some(1.0),
        Unary => {
            let a = bits(&op.params, 1);
            match UnaryFn::from_code(op.params[0])? {
                UnaryFn::Identity | UnaryFn::Relu | UnaryFn::LeakyRelu | UnaryFn::Abs => Some(1.0),
                UnaryFn::Sqrt => Some(0.5),
                UnaryFn::Pow if a > 0.0 && a.is_finite() => Some(a as f64),
                _ => None,
            }
        }
        Add | Sub => {
            let both = op
                .inputs
                .iter()
                .flatten()
                .all(|&t| !g.tensors[t].is_const());
            (both && clamp_commutes(op.params[0], op.params[1])).then_some(1.0)
        }
        _ => None,
    }
}

/// The axis of `shape_out` that holds axis `a` of `shape_in` across a reshape.
fn reshaped_axis(shape_in: &[usize], a: usize, shape_out: &[usize]) -> Option<usize> {
    let prefix: usize = shape_in[..a].iter().product();
    let size = shape_in[a];
    let mut p = 1usize;
    for (k, &d) in shape_out.iter().enumerate() {
        if p == prefix && d == size {
            return Some(k);
        }
        p *= d;
        if p > prefix {
            return None;
        }
    }
    None
}

/// Track of op `op`'s output from the track of its input `tr` (one-input ops).
fn pass_track(g: &Graph, op: &crate::ir::HOp, tr: &Track) -> Option<Track> {
    let x = op.inputs[0]?;
    let y = op.outputs[0];
    let (xs, ys) = (&g.tensors[x].shape, &g.tensors[y].shape);
    let deg = pass_degree(g, op)?;
    let mut t = tr.clone();
    t.degree *= deg;
    match op.kind {
        OpKind::Reshape => {
            t.axis = reshaped_axis(xs, tr.axis, ys)?;
        }
        OpKind::Transpose => {
            t.axis = op.params.iter().position(|&p| p as usize == tr.axis)?;
        }
        OpKind::Slice => {
            let r = xs.len();
            let (start, step) = (op.params[tr.axis] as i64, op.params[r + tr.axis] as i64);
            t.class = (0..ys[tr.axis] as i64)
                .map(|p| tr.class.get((start + p * step) as usize).copied())
                .collect::<Option<_>>()?;
        }
        OpKind::MaxPool if tr.axis != 1 => return None,
        _ => {}
    }
    (ys.get(t.axis) == Some(&t.class.len())).then_some(t)
}

/// An op that reads tensor `x` (tracked on `axis`) as input channels of a constant weight.
fn absorbs(g: &Graph, op: &crate::ir::HOp, x: usize, axis: usize) -> bool {
    if op.inputs.first() != Some(&Some(x))
        || const_f32(g, op.inputs.get(1).copied().flatten()).is_none()
    {
        return false;
    }
    let r = g.tensors[x].shape.len();
    match op.kind {
        OpKind::Conv => axis == 1 && r == 4 && op.params[conv::GROUP] <= 1,
        OpKind::FullyConnected => axis + 1 == r,
        _ => false,
    }
}

/// Union-find over channel classes.
fn find(parent: &mut [usize], mut a: usize) -> usize {
    while parent[a] != a {
        parent[a] = parent[parent[a]];
        a = parent[a];
    }
    a
}

/// One component: its ops with their roles and the track of every tensor in it.
struct Component {
    ops: Vec<(usize, Role)>,
    tracks: HashMap<usize, Track>,
    /// Channel class → its root after Add/Sub ties.
    parent: Vec<usize>,
}

/// The component grown from source op `seed`, or `None` when some tensor in it reaches an
/// op that cannot take the factor.
fn component(
    g: &Graph,
    seed: usize,
    consumers: &[Vec<usize>],
    producer: &[Option<usize>],
) -> Option<Component> {
    let mut roles: HashMap<usize, Role> = HashMap::new();
    let mut todo = vec![seed];
    roles.insert(seed, Role::Source);
    // Grow: every tensor written by a source or a pass op must be read only by pass ops or
    // absorbers; every run-time input of a pass op must come from a source or a pass op.
    while let Some(i) = todo.pop() {
        let op = &g.ops[i];
        if matches!(roles[&i], Role::Source | Role::Pass) {
            let y = op.outputs[0];
            if g.outputs.contains(&y) || consumers[y].is_empty() {
                return None;
            }
            for &c in &consumers[y] {
                if roles.contains_key(&c) {
                    continue;
                }
                let cop = &g.ops[c];
                // Read as the weight or a parameter: not a channel reader.
                if cop.inputs.iter().skip(1).any(|&t| t == Some(y))
                    && !matches!(cop.kind, OpKind::Add | OpKind::Sub)
                {
                    return None;
                }
                let role = if matches!(cop.kind, OpKind::Conv | OpKind::FullyConnected) {
                    Role::Absorb
                } else if pass_degree(g, cop).is_some() && cop.outputs.len() == 1 {
                    Role::Pass
                } else {
                    return None;
                };
                roles.insert(c, role);
                todo.push(c);
            }
        }
        if roles[&i] == Role::Pass {
            for &t in op.inputs.iter().flatten() {
                if g.tensors[t].is_const() {
                    if op.kind == OpKind::PRelu {
                        continue;
                    }
                    return None;
                }
                let p = producer[t]?;
                if roles.contains_key(&p) {
                    continue;
                }
                let role = if source_axis(g, &g.ops[p]).is_some() {
                    Role::Source
                } else if pass_degree(g, &g.ops[p]).is_some() && g.ops[p].outputs.len() == 1 {
                    Role::Pass
                } else {
                    return None;
                };
                roles.insert(p, role);
                todo.push(p);
            }
        }
    }
    // Tracks in graph order.
    let mut order: Vec<usize> = roles.keys().copied().collect();
    order.sort_unstable();
    let mut tracks: HashMap<usize, Track> = HashMap::new();
    let mut parent: Vec<usize> = Vec::new();
    let mut ops = Vec::new();
    for &i in &order {
        let op = &g.ops[i];
        let role = roles[&i];
        ops.push((i, role));
        match role {
            Role::Source => {
                let (axis, n) = source_axis(g, op)?;
                let base = parent.len();
                parent.extend(base..base + n);
                tracks.insert(
                    op.outputs[0],
                    Track {
                        axis,
                        class: (base..base + n).collect(),
                        degree: 1.0,
                    },
                );
            }
            Role::Pass => {
                let x = op.inputs[0]?;
                let tx = tracks.get(&x)?.clone();
                if matches!(op.kind, OpKind::Add | OpKind::Sub) {
                    let b = op.inputs[1]?;
                    let tb = tracks.get(&b)?;
                    let same_shape = g.tensors[x].shape == g.tensors[b].shape;
                    if !same_shape
                        || tb.axis != tx.axis
                        || tb.class.len() != tx.class.len()
                        || (tb.degree - tx.degree).abs() > 1e-9
                    {
                        return None;
                    }
                    for (&a, &c) in tx.class.iter().zip(&tb.class) {
                        let (ra, rc) = (find(&mut parent, a), find(&mut parent, c));
                        parent[ra] = rc;
                    }
                    tracks.insert(op.outputs[0], tx);
                } else {
                    // A PRelu's slopes, per channel or one, commute with a positive factor.
                    let t = pass_track(g, op, &tx)?;
                    tracks.insert(op.outputs[0], t);
                }
            }
            Role::Absorb => {
                let x = op.inputs[0]?;
                let t = tracks.get(&x)?;
                if !absorbs(g, op, x, t.axis) {
                    return None;
                }
            }
        }
    }
    Some(Component {
        ops,
        tracks,
        parent,
    })
}

/// Per-position max |x| along `axis` of a float tensor's values.
fn channel_max(v: &[f32], shape: &[usize], axis: usize, acc: &mut [f64]) {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    for (i, &x) in v.iter().enumerate() {
        if x.is_finite() {
            let c = (i / inner) % n;
            acc[c] = acc[c].max(x.abs() as f64);
        }
    }
}

/// Max |w| of each input channel of an absorber's weight.
fn weight_in_max(g: &Graph, op: &crate::ir::HOp) -> Vec<f64> {
    let w = op.inputs[1].expect("weight");
    let (wv, ws) = (
        g.tensors[w].const_f32().unwrap_or_default(),
        &g.tensors[w].shape,
    );
    // Conv [O, I, kh, kw]; FullyConnected [N, K].
    let (i_n, inner) = (ws[1], ws[2..].iter().product::<usize>());
    let mut m = vec![0f64; i_n];
    for (k, &x) in wv.iter().enumerate() {
        let c = (k / inner) % i_n;
        m[c] = m[c].max(x.abs() as f64);
    }
    m
}

/// Migrate per-channel scales in every component found; returns how many components.
/// Run on the float graph before calibration, only for models without QDQ params (those
/// keep the scales they were given).
pub fn smooth(g: &mut Graph, samples: &[Vec<Vec<f32>>]) -> Result<usize> {
    let mut consumers: Vec<Vec<usize>> = vec![vec![]; g.tensors.len()];
    let mut producer: Vec<Option<usize>> = vec![None; g.tensors.len()];
    for (i, op) in g.ops.iter().enumerate() {
        for &t in op.inputs.iter().flatten() {
            if !consumers[t].contains(&i) {
                consumers[t].push(i);
            }
        }
        for &t in &op.outputs {
            producer[t] = Some(i);
        }
    }
    // An op belongs to one component as a source or pass op (it writes that component's
    // tensor) and to at most one as an absorber (it reads one): a conv can absorb the
    // factors of the layer before it and be the source of the next.
    let mut writes = vec![false; g.ops.len()];
    let mut reads = vec![false; g.ops.len()];
    let mut comps = Vec::new();
    for i in 0..g.ops.len() {
        if writes[i] || source_axis(g, &g.ops[i]).is_none() {
            continue;
        }
        let Some(c) = component(g, i, &consumers, &producer) else {
            continue;
        };
        let clash = c.ops.iter().any(|&(k, r)| {
            if r == Role::Absorb {
                reads[k]
            } else {
                writes[k]
            }
        });
        if clash || !c.ops.iter().any(|&(_, r)| r == Role::Absorb) {
            continue;
        }
        for &(k, r) in &c.ops {
            if r == Role::Absorb {
                reads[k] = true;
            } else {
                writes[k] = true;
            }
        }
        comps.push(c);
    }
    if comps.is_empty() || samples.is_empty() {
        return Ok(0);
    }
    // Per-position activation ranges at every absorber's input.
    let mut inputs: Vec<usize> = comps
        .iter()
        .flat_map(|c| {
            c.ops
                .iter()
                .filter(|&&(_, r)| r == Role::Absorb)
                .filter_map(|&(k, _)| g.ops[k].inputs[0])
        })
        .collect();
    inputs.sort_unstable();
    inputs.dedup();
    // Values the acceptance test reads: each component's inputs from outside and its
    // absorbers' float results.
    let needed: std::collections::HashSet<usize> = comps
        .iter()
        .flat_map(|c| {
            let inside: std::collections::HashSet<usize> =
                c.ops.iter().map(|&(k, _)| g.ops[k].outputs[0]).collect();
            let mut v: Vec<usize> = Vec::new();
            for &(k, r) in &c.ops {
                let op = &g.ops[k];
                v.extend(
                    op.inputs
                        .iter()
                        .flatten()
                        .filter(|t| !inside.contains(t) && !g.tensors[**t].is_const()),
                );
                if r == Role::Absorb {
                    v.push(op.outputs[0]);
                }
            }
            v
        })
        .collect();
    let mut amax: HashMap<usize, Vec<f64>> = HashMap::new();
    let mut kept: Vec<HashMap<usize, AlignedBytes>> = Vec::new();
    for (k, s) in samples.iter().take(STAT_SAMPLES).enumerate() {
        let mut vals = g.run_all_on(s, true)?;
        for c in &comps {
            for &t in &inputs {
                let Some(tr) = c.tracks.get(&t) else { continue };
                let Some(v) = vals.get(&t) else { continue };
                let acc = amax.entry(t).or_insert_with(|| vec![0.0; tr.class.len()]);
                channel_max(
                    bytemuck::cast_slice(v.as_slice()),
                    &g.tensors[t].shape,
                    tr.axis,
                    acc,
                );
            }
        }
        if k < PROBE_SAMPLES {
            vals.retain(|t, _| needed.contains(t));
            kept.push(vals);
        }
    }
    let mut done = 0;
    for mut c in comps {
        // log s per class root, averaged over the positions that measure it.
        let n = c.parent.len();
        let mut sum = vec![0f64; n];
        let mut cnt = vec![0u32; n];
        for &(k, r) in &c.ops {
            if r != Role::Absorb {
                continue;
            }
            let x = g.ops[k].inputs[0].expect("input");
            let tr = &c.tracks[&x];
            let (Some(a), w) = (amax.get(&x), weight_in_max(g, &g.ops[k])) else {
                continue;
            };
            for (p, &cls) in tr.class.iter().enumerate() {
                let (ap, wp) = (a[p], w.get(p).copied().unwrap_or(0.0));
                if ap > 0.0 && wp > 0.0 {
                    let t = ap.powf(ALPHA) / wp.powf(1.0 - ALPHA);
                    let root = find(&mut c.parent, cls);
                    sum[root] += t.ln() / tr.degree;
                    cnt[root] += 1;
                }
            }
        }
        let measured: Vec<f64> = (0..n)
            .filter(|&k| cnt[k] > 0)
            .map(|k| sum[k] / cnt[k] as f64)
            .collect();
        if measured.is_empty() {
            continue;
        }
        // Relative to the largest factor (a common factor changes nothing in per-tensor
        // int8), with the spread bounded; unmeasured channels keep the largest.
        let top = measured.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut log_s = vec![0f64; n];
        for (k, l) in log_s.iter_mut().enumerate() {
            let root = find(&mut c.parent, k);
            if cnt[root] > 0 {
                *l = (sum[root] / cnt[root] as f64 - top).max(-MAX_SPREAD.ln());
            }
        }
        let s: Vec<f64> = log_s.iter().map(|l| l.exp()).collect();
        let before = region_error(g, &c, &kept)?;
        let mut trial = g.clone();
        apply(&mut trial, &c, &s);
        let after = region_error(&trial, &c, &kept)?;
        // Every absorber's result must come out closer to the float one.
        if before.iter().zip(&after).all(|(b, a)| *a < *b * ACCEPT) {
            *g = trial;
            done += 1;
        }
    }
    Ok(done)
}

/// Rewrite the constants of one component with factors `s` (one per channel class).
fn apply(g: &mut Graph, c: &Component, s: &[f64]) {
    for &(k, role) in &c.ops {
        let op = g.ops[k].clone();
        match role {
            Role::Source => {
                let y = op.outputs[0];
                let tr = &c.tracks[&y];
                let f: Vec<f64> = tr.class.iter().map(|&cls| 1.0 / s[cls]).collect();
                match op.kind {
                    OpKind::Conv | OpKind::FullyConnected => {
                        // Weight rows (output channels first in both layouts).
                        scale_const(g, k, 1, &f, |i, inner, n| (i / inner) % n);
                        if op.inputs.get(2).copied().flatten().is_some() {
                            scale_const(g, k, 2, &f, |i, _, n| i % n);
                        }
                    }
                    OpKind::LayerNorm => {
                        scale_const(g, k, 1, &f, |i, _, n| i % n);
                        if op.inputs.get(2).copied().flatten().is_some() {
                            scale_const(g, k, 2, &f, |i, _, n| i % n);
                        }
                    }
                    _ => {}
                }
            }
            Role::Absorb => {
                let x = op.inputs[0].expect("input");
                let tr = &c.tracks[&x];
                let f: Vec<f64> = tr.class.iter().map(|&cls| s[cls].powf(tr.degree)).collect();
                // Input channels: axis 1 of [O, I, kh, kw] and of [N, K].
                let w = op.inputs[1].expect("weight");
                let ws = g.tensors[w].shape.clone();
                let inner: usize = ws[2..].iter().product();
                let i_n = ws[1];
                let f2 = f.clone();
                scale_const(g, k, 1, &f2, move |i, _, _| (i / inner) % i_n);
            }
            Role::Pass => {}
        }
    }
}

/// Replace input `slot` of op `k` (an f32 constant) by a copy whose element `i` is
/// multiplied by `f[pick(i, inner, f.len())]`, where `inner` is the product of the dims
/// after the first.
fn scale_const(
    g: &mut Graph,
    k: usize,
    slot: usize,
    f: &[f64],
    pick: impl Fn(usize, usize, usize) -> usize,
) {
    let Some(t) = g.ops[k].inputs[slot] else {
        return;
    };
    let h = &g.tensors[t];
    let Some(v) = h.const_f32() else { return };
    let inner: usize = h.shape.iter().skip(1).product::<usize>().max(1);
    let n = f.len();
    let out: Vec<f32> = v
        .iter()
        .enumerate()
        .map(|(i, &x)| (x as f64 * f[pick(i, inner, n)]) as f32)
        .collect();
    let (name, shape) = (format!("{}:smooth{k}", h.name), h.shape.clone());
    let id = g.add_f32(name, shape, &out);
    g.ops[k].inputs[slot] = Some(id);
}

/// The int8 error of a component as a model would see it: its ops run with every
/// run-time tensor fake-quantized per tensor (its own min/max on the sample) and the
/// weights of its sources and absorbers quantized per output channel; the relative L2
/// error of each absorber's result against the float graph's, summed over the probe
/// samples (`kept`: the float values of the component's inputs and absorber outputs).
fn region_error(
    g: &Graph,
    c: &Component,
    kept: &[HashMap<usize, AlignedBytes>],
) -> Result<Vec<f64>> {
    let mut total = Vec::new();
    for f in kept {
        let mut vals: HashMap<usize, AlignedBytes> = HashMap::new();
        for (&t, v) in f {
            vals.insert(t, fake_quant(v));
        }
        let mut a_idx = 0;
        for &(k, r) in &c.ops {
            let op = &g.ops[k];
            let weighted = r != Role::Pass && op.kind != OpKind::LayerNorm;
            let y = run_quantized_weight(g, op, &vals, weighted)?;
            let o = op.outputs[0];
            if r == Role::Absorb {
                let Some(fr) = f.get(&o) else {
                    a_idx += 1;
                    continue;
                };
                let a: &[f32] = bytemuck::cast_slice(fr.as_slice());
                let b: &[f32] = bytemuck::cast_slice(y.as_slice());
                let (mut e, mut n) = (0f64, 0f64);
                for (&x, &z) in a.iter().zip(b) {
                    if x.is_finite() && z.is_finite() {
                        e += ((x - z) as f64).powi(2);
                        n += (x as f64).powi(2);
                    }
                }
                if total.len() <= a_idx {
                    total.push(0.0);
                }
                total[a_idx] += if n > 0.0 { (e / n).sqrt() } else { 0.0 };
                a_idx += 1;
            } else {
                vals.insert(o, fake_quant(&y));
            }
        }
    }
    Ok(total)
}

/// Run one op on `vals`; with `quantize_weight`, its weight (input 1) is first rounded to
/// int8 per output channel.
fn run_quantized_weight(
    g: &Graph,
    op: &crate::ir::HOp,
    vals: &HashMap<usize, AlignedBytes>,
    quantize_weight: bool,
) -> Result<AlignedBytes> {
    let w = op.inputs.get(1).copied().flatten();
    let wv = w.and_then(|w| g.tensors[w].const_f32());
    let (Some(w), Some(wv), true) = (w, wv, quantize_weight) else {
        let mut outs = g.run_op_on(op, &|t| vals.get(&t).cloned(), true)?;
        return Ok(outs.remove(0));
    };
    let oc = g.tensors[w].shape[0].max(1);
    let inner = (wv.len() / oc).max(1);
    let (q, sc) = per_channel_symmetric(&wv, oc, inner, &[]);
    let d: Vec<f32> = q
        .iter()
        .enumerate()
        .map(|(i, &x)| x as f32 * sc[i / inner])
        .collect();
    // A one-op graph over copies of the op's tensors, the weight replaced.
    let mut h = Graph::default();
    let mut op2 = op.clone();
    let mut from: HashMap<usize, usize> = HashMap::new();
    for t in op2.inputs.iter_mut().flatten() {
        let mut nt = g.tensors[*t].clone();
        if *t == w {
            nt.data = Some(AlignedBytes::from_slice(bytemuck::cast_slice(&d)));
        }
        h.tensors.push(nt);
        from.insert(h.tensors.len() - 1, *t);
        *t = h.tensors.len() - 1;
    }
    for o in op2.outputs.iter_mut() {
        h.tensors.push(g.tensors[*o].clone());
        *o = h.tensors.len() - 1;
    }
    let mut outs = h.run_op_on(
        &op2,
        &|t| from.get(&t).and_then(|o| vals.get(o).cloned()),
        true,
    )?;
    Ok(outs.remove(0))
}

/// Per-tensor int8 round trip with the tensor's own min/max.
fn fake_quant(v: &AlignedBytes) -> AlignedBytes {
    let x: &[f32] = bytemuck::cast_slice(v.as_slice());
    let (lo, hi) = x
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return v.clone();
    }
    crate::sensitive::fake_quant(v, (lo, hi))
}

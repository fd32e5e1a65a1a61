//! Cheap f32 islands where int8 input ruins an op's result. A function such as a square
//! root or a log of a power spectrum, a normalization of a residual stream with outlier
//! channels, or a softmax of wide-range scores reads an int8 input whose small values
//! are gone: the op's own result is then off by far more than int8's usual 1–2%, and
//! everything after it inherits that. For each such op (found by running it on
//! fake-quantized inputs beside its float result on calibration samples), the op and the
//! few cheap producers that feed it (element-wise ops, data movement, and weighted ops
//! only within a small share of the model's multiply-accumulates) run in f32, when that
//! brings its result back within the bound; its result is quantized again after it. The
//! bulk of the model stays int8.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use cairn_core::emit::AlignedBytes;
use cairn_core::op::UnaryFn;
use cairn_core::quant::quantize_f32;
use cairn_core::{DType, OpKind};

pub use crate::cell_state::{keep_cell_states_f32, keep_recurrences_f32};
use crate::ir::{Graph, HOp};
use crate::quantize::{params_for_range, Ranges};

/// Calibration samples compared, producer layers an island may take in, the largest
/// share of the model's MACs all islands together may move to f32, and the most islands.
const PROBE_SAMPLES: usize = 2;
const MAX_LEVELS: usize = 4;
const MAC_SHARE: f64 = 0.05;
const MAX_ISLANDS: usize = 48;

/// One island: the op whose result int8 input ruined, its error with int8 inputs and
/// with the island in f32, and the ops that run f32.
pub struct Island {
    pub op: String,
    pub before: f32,
    pub after: f32,
    pub ops: usize,
}

/// An op result off by more than this (relative L2 error) carries no information: an
/// island that leaves its op this far off has not repaired it, the damage comes from
/// producers too costly for an island (an STFT's convs before a log).
pub const RUINED: f32 = 1.0;

/// What the island search did: the islands it made, and the ops whose result stays ruined
/// (over [`RUINED`]) with or without one, with that error.
pub struct Found {
    pub islands: Vec<Island>,
    pub ruined: Vec<(String, f32)>,
}

/// Multiply-accumulates of one op (0 for ops without weights or a matrix product).
pub fn macs(g: &Graph, op: &HOp) -> u64 {
    use OpKind::*;
    let numel = |t: Option<usize>| t.map_or(0, |t| g.tensors[t].numel());
    let out = numel(op.outputs.first().copied());
    match op.kind {
        Conv | ConvTranspose => {
            let oc = op
                .outputs
                .first()
                .and_then(|&o| g.tensors[o].shape.get(1).copied())
                .unwrap_or(1)
                .max(1);
            let w = numel(op.inputs.get(1).copied().flatten());
            let per = if op.kind == ConvTranspose {
                // Weight [C_in, C_out/g, k..]: each input feeds C_out/g·k outputs.
                let ic =
                    op.inputs[0].map_or(1, |t| g.tensors[t].shape.get(1).copied().unwrap_or(1));
                w / ic.max(1)
            } else {
                w / oc
            };
            (out * per) as u64
        }
        FullyConnected => {
            let k = op.inputs[1].map_or(0, |t| g.tensors[t].shape.get(1).copied().unwrap_or(0));
            (out * k) as u64
        }
        BatchMatMul => {
            let k = op.inputs[0].map_or(0, |t| *g.tensors[t].shape.last().unwrap_or(&0));
            (out * k) as u64
        }
        _ => 0,
    }
}

/// Ops whose int8 result can be ruined by their input's rounding: compressive functions
/// (square root, log, reciprocal, a power below one), whose slope is unbounded near zero
/// so that the small values int8 rounds away come back large; normalizations, softmax
/// and divisions by a tensor. Activations of bounded slope (Sigmoid, SiLU, GELU, Tanh)
/// only carry their input's error and are not candidates: an island there would only
/// move the conv before them to f32.
fn sensitive(op: &HOp) -> bool {
    use OpKind::*;
    match op.kind {
        Unary => {
            let a = f32::from_bits(op.params.get(1).copied().unwrap_or(0) as u32);
            match op.unary_fn() {
                Some(UnaryFn::Sqrt | UnaryFn::Log | UnaryFn::Reciprocal) => true,
                Some(UnaryFn::Pow) => a < 1.0,
                _ => false,
            }
        }
        Softmax | LayerNorm | Div => true,
        _ => false,
    }
}

/// Ops an island may take in as producers besides weighted ones: element-wise arithmetic
/// and functions, and data movement.
fn cheap(op: &HOp) -> bool {
    use OpKind::*;
    matches!(
        op.kind,
        Unary | Add | Sub | Mul | Div | Reshape | Transpose | Slice | Split | Concat | Pad | Lut
    )
}

fn weighted(op: &HOp) -> bool {
    use OpKind::*;
    matches!(op.kind, Conv | ConvTranspose | FullyConnected | BatchMatMul)
}

/// Per-tensor int8 round trip of `v` with the params of `range` (non-finite values kept).
pub(crate) fn fake_quant(v: &AlignedBytes, range: (f32, f32)) -> AlignedBytes {
    let (s, z) = params_for_range(range.0, range.1);
    let x: &[f32] = bytemuck::cast_slice(v.as_slice());
    let q: Vec<f32> = x
        .iter()
        .map(|&x| {
            if x.is_finite() {
                (quantize_f32(x, s, z, -128, 127) - z) as f32 * s
            } else {
                x
            }
        })
        .collect();
    AlignedBytes::from_slice(bytemuck::cast_slice(&q))
}

/// Squared error and squared norm of `y` against the float `x`; a value that int8 made
/// infinite or NaN counts as a hundred times its size.
fn err2(x: &AlignedBytes, y: &AlignedBytes) -> (f64, f64) {
    let x: &[f32] = bytemuck::cast_slice(x.as_slice());
    let y: &[f32] = bytemuck::cast_slice(y.as_slice());
    let mut acc = (0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        if !a.is_finite() {
            continue;
        }
        let d = if b.is_finite() {
            (a - b) as f64
        } else {
            100.0 * (a.abs() as f64 + 1.0)
        };
        acc.0 += d * d;
        acc.1 += (a as f64).powi(2);
    }
    acc
}

/// Run `ops` (graph order) in f32 on the float values of one sample, with every run-time
/// input from outside them that has a range fake-quantized; the value of `target`.
fn run_region(
    g: &Graph,
    ops: &[usize],
    floats: &HashMap<usize, AlignedBytes>,
    ranges: &Ranges,
    target: usize,
) -> Result<Option<AlignedBytes>> {
    let inside: HashSet<usize> = ops.iter().flat_map(|&i| g.ops[i].outputs.clone()).collect();
    let mut vals: HashMap<usize, AlignedBytes> = HashMap::new();
    for &i in ops {
        let op = &g.ops[i];
        for &t in op.inputs.iter().flatten() {
            if inside.contains(&t) || vals.contains_key(&t) || g.tensors[t].is_const() {
                continue;
            }
            let Some(v) = floats.get(&t) else {
                return Ok(None);
            };
            let v = match ranges.get(&t) {
                Some(&r) if g.tensors[t].dtype == DType::F32 => fake_quant(v, r),
                _ => v.clone(),
            };
            vals.insert(t, v);
        }
        let outs = g.run_op_on(op, &|t| vals.get(&t).cloned(), true)?;
        for (&o, v) in op.outputs.iter().zip(outs) {
            vals.insert(o, v);
        }
    }
    Ok(vals.remove(&target))
}

/// The regions tried for op `c`: itself, then each further layer of the producers that
/// feed it (cheap ops, weighted ones within `mac_left`), up to `MAX_LEVELS`.
fn levels(g: &Graph, c: usize, ranges: &Ranges, mac_left: u64) -> Vec<(Vec<usize>, u64)> {
    let mut out = vec![(vec![c], 0u64)];
    let mut region: HashSet<usize> = [c].into();
    let mut frontier = vec![c];
    let mut cost = 0u64;
    for _ in 0..MAX_LEVELS {
        let mut next = Vec::new();
        for &i in &frontier {
            for &t in g.ops[i].inputs.iter().flatten() {
                if g.tensors[t].is_const() || !ranges.contains_key(&t) {
                    continue;
                }
                let Some(p) = g.producer(t) else { continue };
                if region.contains(&p) {
                    continue;
                }
                let op = &g.ops[p];
                let m = macs(g, op);
                if !(cheap(op) || (weighted(op) && cost + m <= mac_left)) {
                    continue;
                }
                cost += m;
                region.insert(p);
                next.push(p);
            }
        }
        if next.is_empty() {
            break;
        }
        let mut ops: Vec<usize> = region.iter().copied().collect();
        ops.sort_unstable();
        out.push((ops, cost));
        frontier = next;
    }
    out
}

/// Find the islands and drop the ranges of the tensors inside them (the island ops'
/// outputs other than the sensitive op's own, and the sensitive op's inputs), so
/// `quantize` keeps them f32.
pub fn keep_sensitive_f32(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    ranges: &mut Ranges,
    limit: f32,
) -> Result<Found> {
    let mut found = Found {
        islands: Vec::new(),
        ruined: Vec::new(),
    };
    let probe: Vec<&Vec<Vec<f32>>> = samples.iter().take(PROBE_SAMPLES).collect();
    if probe.is_empty() {
        return Ok(found);
    }
    let total: u64 = g.ops.iter().map(|op| macs(g, op)).sum();
    let mut mac_left = (total as f64 * MAC_SHARE) as u64;
    // Candidates: sensitive ops that would read int8 input and write an f32 result,
    // except the inner ops of an element-wise chain that becomes one lookup table on its
    // source (they never see an int8 input); the ops reading the source are judged.
    let mut in_family: HashSet<usize> = HashSet::new();
    for f in crate::elementwise::families(g).values() {
        for &i in &f.ops {
            if !g.ops[i].inputs.contains(&Some(f.source)) {
                in_family.insert(i);
            }
        }
    }
    let cands: Vec<usize> = (0..g.ops.len())
        .filter(|&i| {
            let op = &g.ops[i];
            !in_family.contains(&i)
                && sensitive(op)
                && op.outputs.len() == 1
                && g.tensors[op.outputs[0]].dtype == DType::F32
                && op.inputs.iter().flatten().any(|t| ranges.contains_key(t))
        })
        .collect();
    // Pass 1: each candidate alone, on the first sample.
    let first = g.run_all_on(probe[0], true)?;
    let mut flagged: Vec<(usize, f32)> = Vec::new();
    for &c in &cands {
        let y = g.ops[c].outputs[0];
        let (Some(f), Some(v)) = (first.get(&y), run_region(g, &[c], &first, ranges, y)?) else {
            continue;
        };
        let (e, n) = err2(f, &v);
        let e = if n > 0.0 { (e / n).sqrt() as f32 } else { 0.0 };
        if e > limit {
            flagged.push((c, e));
        }
    }
    drop(first);
    flagged.truncate(MAX_ISLANDS);
    // Pass 2: each flagged op with its growing islands, on every probe sample.
    let plans: Vec<Vec<(Vec<usize>, u64)>> = flagged
        .iter()
        .map(|&(c, _)| levels(g, c, ranges, mac_left))
        .collect();
    let mut acc: Vec<Vec<(f64, f64)>> = plans.iter().map(|p| vec![(0.0, 0.0); p.len()]).collect();
    for s in &probe {
        let floats = g.run_all_on(s, true)?;
        for (k, &(c, _)) in flagged.iter().enumerate() {
            let y = g.ops[c].outputs[0];
            let Some(f) = floats.get(&y) else { continue };
            for (l, (ops, _)) in plans[k].iter().enumerate() {
                if let Some(v) = run_region(g, ops, &floats, ranges, y)? {
                    let (e, n) = err2(f, &v);
                    acc[k][l].0 += e;
                    acc[k][l].1 += n;
                }
            }
        }
    }
    let mut taken: HashSet<usize> = HashSet::new();
    for (k, &(c, _)) in flagged.iter().enumerate() {
        let errs: Vec<f32> = acc[k]
            .iter()
            .map(|&(e, n)| if n > 0.0 { (e / n).sqrt() as f32 } else { 0.0 })
            .collect();
        let best = errs.iter().copied().fold(f32::INFINITY, f32::min);
        // The smallest island within a quarter of the best error (or within the bound).
        let alone = errs.first().copied().unwrap_or(0.0);
        let chosen = (0..errs.len())
            .find(|&l| errs[l] <= limit.max(best * 1.25))
            .filter(|&l| {
                let (ops, cost) = &plans[k][l];
                errs[l] < 0.5 * alone
                    && !errs[l].is_nan()
                    && *cost <= mac_left
                    && !ops.iter().any(|o| taken.contains(o) && *o != c)
            });
        let Some(l) = chosen else {
            if alone > RUINED {
                found.ruined.push((g.ops[c].name.clone(), alone));
            }
            continue;
        };
        if errs[l] > RUINED {
            found.ruined.push((g.ops[c].name.clone(), errs[l]));
        }
        let (ops, cost) = &plans[k][l];
        mac_left -= cost;
        let y = g.ops[c].outputs[0];
        for &i in ops {
            taken.insert(i);
            let op = &g.ops[i];
            for &t in op.outputs.iter() {
                if t != y {
                    ranges.remove(&t);
                }
            }
            if i == c {
                for &t in op.inputs.iter().flatten() {
                    ranges.remove(&t);
                }
            }
        }
        found.islands.push(Island {
            op: g.ops[c].name.clone(),
            before: alone,
            after: errs[l],
            ops: ops.len(),
        });
    }
    Ok(found)
}

/// Calibration samples of one graph input whose loudness (RMS) spans more than this ratio
/// (30 dB) make it a wide-dynamic-range signal: an audio stream with speech and near
/// silence, a sensor with events and a quiet floor.
const QUIET_SPREAD: f64 = 32.0;
/// A tensor computed from such an input alone that int8 damages by more than this on an
/// average sample (each sample's error against its own norm) stays f32.
const QUIET_LIMIT: f64 = 0.10;

/// The front end of a wide-dynamic-range input stays f32 while int8 would ruin its quiet
/// samples. One int8 scale, set by the loudest calibration sample, leaves a quiet one a
/// step or two: a waveform at −50 dB rounds to zeros and ±1, its spectrum to nothing, and
/// a voice detector then decides on noise. Errors pooled over the samples (what the other
/// passes measure) hide it, because the loud samples dominate the sum; here each sample's
/// error is taken against its own norm and averaged. Starting at such an input, every
/// tensor computed from it alone (a waveform's padding, an STFT conv, its magnitude, the
/// first conv on the spectrum) stays f32 while its average per-sample error exceeds
/// [`QUIET_LIMIT`]; the first tensor within it, or one that mixes in another input or a
/// later layer, is where int8 begins. Returns the names of the tensors kept.
pub fn keep_quiet_front_end_f32(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    ranges: &mut Ranges,
) -> Result<Vec<String>> {
    let mut kept = Vec::new();
    if samples.len() < 4 {
        return Ok(kept);
    }
    for (k, &input) in g.inputs.iter().enumerate() {
        if g.tensors[input].dtype != DType::F32 || !ranges.contains_key(&input) {
            continue;
        }
        let rms: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.get(k))
            .map(|v| {
                let e: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum();
                (e / v.len().max(1) as f64).sqrt()
            })
            .filter(|&r| r > 0.0 && r.is_finite())
            .collect();
        let (lo, hi) = rms
            .iter()
            .fold((f64::INFINITY, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
        if rms.len() < 4 || hi < QUIET_SPREAD * lo {
            continue;
        }
        // The tensors computed from this input alone (constants aside), in graph order.
        let mut alone: Vec<usize> = vec![input];
        let mut set: HashSet<usize> = [input].into();
        for op in &g.ops {
            if reads_only(g, op, &set) {
                for &o in &op.outputs {
                    if g.tensors[o].dtype == DType::F32 && set.insert(o) {
                        alone.push(o);
                    }
                }
            }
        }
        // Each one's int8 error per sample, against that sample's norm, averaged.
        let mut err: HashMap<usize, (f64, usize)> = HashMap::new();
        for s in samples {
            let vals = g.run_all_on(s, true)?;
            for &t in &alone {
                let (Some(v), Some(&r)) = (vals.get(&t), ranges.get(&t)) else {
                    continue;
                };
                let (e, n) = err2(v, &fake_quant(v, r));
                if n > 0.0 {
                    let a = err.entry(t).or_default();
                    a.0 += (e / n).sqrt().min(1.0);
                    a.1 += 1;
                }
            }
        }
        let lossy = |t: usize| {
            err.get(&t)
                .is_some_and(|&(e, n)| e > QUIET_LIMIT * n as f64)
        };
        if !lossy(input) {
            continue;
        }
        // Kept: the input, then each tensor whose producer reads only kept tensors.
        let mut keep: HashSet<usize> = [input].into();
        for op in &g.ops {
            if !reads_only(g, op, &keep) {
                continue;
            }
            for &o in &op.outputs {
                if lossy(o) {
                    keep.insert(o);
                }
            }
        }
        let mut ids: Vec<usize> = keep.into_iter().collect();
        ids.sort_unstable();
        for t in ids {
            ranges.remove(&t);
            kept.push(g.tensors[t].name.clone());
        }
    }
    Ok(kept)
}

/// Whether `op` reads run-time tensors, all of them in `set` (constants aside).
fn reads_only(g: &Graph, op: &HOp, set: &HashSet<usize>) -> bool {
    let mut runtime = op
        .inputs
        .iter()
        .flatten()
        .filter(|&&t| !g.tensors[t].is_const())
        .peekable();
    runtime.peek().is_some() && runtime.all(|t| set.contains(t))
}

/// The accuracy passes every calibrated conversion runs (cheap: two float runs of the
/// calibration samples and a few ops on fake-quantized inputs): ranges read only by a
/// clamp narrowed to it (`calibrate::narrow_to_clamps`), a quiet front end and the f32
/// islands above, LSTM cells (`cell_state`), and the decision layer in f32
/// (`refine::keep_decision_layer_f32`). Says what it did in `notes`; returns the ops
/// whose result stays ruined (see [`Found`]).
pub fn default_passes(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    ranges: &mut Ranges,
    limit: f32,
    notes: &mut Vec<String>,
) -> Result<Vec<(String, f32)>> {
    crate::calibrate::narrow_to_clamps(g, ranges);
    let quiet = keep_quiet_front_end_f32(g, samples, ranges)?;
    if !quiet.is_empty() {
        notes.push(format!(
            "the front end of a wide-dynamic-range input stays f32 ({} tensors: {}{}): its calibration samples span over 30 dB, and int8 at the loudest one's scale loses over {:.0}% of an average sample there",
            quiet.len(),
            quiet.iter().take(4).map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "),
            if quiet.len() > 4 { ", ..." } else { "" },
            100.0 * QUIET_LIMIT,
        ));
    }
    let Found { islands, ruined } = keep_sensitive_f32(g, samples, ranges, limit)?;
    if !islands.is_empty() {
        let shown: Vec<String> = islands
            .iter()
            .take(6)
            .map(|i| {
                format!(
                    "'{}' {:.1}% -> {:.1}% ({} ops)",
                    i.op,
                    100.0 * i.before,
                    100.0 * i.after,
                    i.ops
                )
            })
            .collect();
        notes.push(format!(
            "{} f32 islands: ops whose int8 input ruined their result (relative error) run f32 with the cheap ops that feed them: {}{}",
            islands.len(),
            shown.join(", "),
            if islands.len() > 6 { ", ..." } else { "" }
        ));
    }
    let fills = keep_mask_fills_f32(g, ranges);
    if fills > 0 {
        notes.push(format!(
            "{fills} Softmax inputs holding a mask's fill (values past ±{MASK_FILL:e}, such as Where(mask, -1e9, scores)) stay f32 with the fill's path: one int8 scale for the fill and the scores would round every score to one step"
        ));
    }
    let cells = keep_cell_states_f32(g, ranges);
    if cells > 0 {
        notes.push(format!(
            "{cells} LSTM cell states stay f32 (the recurrence c = f·c + i·g and its products: an unbounded state an int8 step would round on every step)"
        ));
    }
    let fused = keep_recurrences_f32(g, ranges);
    if fused > 0 {
        notes.push(format!(
            "{fused} recurrent layers (Recurrent ops) stay f32 with the projections' outputs that feed them and their hidden states on the way to the next projections"
        ));
    }
    let kept = crate::refine::keep_decision_layer_f32(g, ranges);
    if !kept.is_empty() {
        notes.push(format!(
            "the decision layer stays f32 (under 0.2% of the MACs; its logits are what a calibration set that missed the extreme case would clip): {}",
            kept.join(", ")
        ));
    }
    Ok(ruined)
}

/// A magnitude no score reaches and masks use as their fill (−1e4, −1e9, −3.4e38).
const MASK_FILL: f32 = 1e4;

/// Softmax inputs whose calibrated range reaches past ±[`MASK_FILL`]: a mask written into
/// the scores (`Where(mask, −1e9, s)`, `s + (1 − m)·−1e9`). One int8 scale over the fill
/// and the scores would be millions per step and every real score one code, so attention
/// comes out uniform (a GRU decoder's next token wrong in 3 rows of 4, with the outputs
/// only 13% off: under the output guard). The input stays f32, and so does each tensor
/// before it on the fill's path (through Where, Add, Sub, Mul, Neg and data movement,
/// where the range also reaches past the bound); the scores themselves keep their range.
/// Returns how many Softmax inputs it kept.
pub fn keep_mask_fills_f32(g: &Graph, ranges: &mut Ranges) -> usize {
    use OpKind::*;
    let wide = |r: &Ranges, t: usize| {
        r.get(&t)
            .is_some_and(|&(lo, hi)| !(lo.abs() < MASK_FILL && hi.abs() < MASK_FILL))
    };
    let links = crate::ir::Links::of(g);
    let mut kept = 0;
    for op in g.ops.iter().filter(|o| o.kind == Softmax) {
        let Some(Some(x)) = op.inputs.first().copied() else {
            continue;
        };
        if !wide(ranges, x) {
            continue;
        }
        kept += 1;
        // A tensor met again has lost its range already, so it is not wide.
        let mut todo = vec![x];
        while let Some(t) = todo.pop() {
            if !wide(ranges, t) {
                continue;
            }
            ranges.remove(&t);
            if let Some(p) = links.producer(t).map(|p| &g.ops[p]) {
                if matches!(
                    p.kind,
                    Where | Add | Sub | Mul | Reshape | Transpose | Slice | Concat | Unary
                ) {
                    todo.extend(p.inputs.iter().flatten().copied());
                }
            }
        }
    }
    kept
}

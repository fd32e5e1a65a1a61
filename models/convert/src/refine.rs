//! Accuracy-driven mixed precision: after calibration, run the int8 graph beside the
//! float graph on a few calibration samples, find the first op whose int8 form adds more
//! than the bound to the error (its output's relative L2 error minus the worst of its
//! inputs'), and keep it in f32; repeat until no op does. An f32 op that is still off
//! reads a damaged input: the walk up from it passes the int8 data movement that only
//! carries the damage and moves it with the op that made it. With no cap on the MACs
//! (an explicit bound), the ops over the bound on branches independent of the first
//! (a constant-Q transform's octaves) move in the same round. A waveform front end (STFT
//! as a strided conv, power, square root, log) or a detector's score map keeps its f32
//! ops; the compact layers after it stay int8. `convert` says which ops and by how much.

use std::collections::HashMap;

use anyhow::Result;
use cairn_core::emit::QuantSpec;
use cairn_core::DType;

use crate::calibrate::probed;
use crate::ir::Graph;
use crate::quantize::{quantize, Ranges};

/// Calibration samples the refinement compares on, and the most ops it moves to f32.
const PROBE_SAMPLES: usize = 4;
const MAX_ROUNDS: usize = 24;
/// With no cap on the MACs (an explicit bound), a front end of many branches (a
/// constant-Q transform's octaves) can need more rounds than that.
const MAX_ROUNDS_UNCAPPED: usize = 96;
/// The least the per-op bound halves to (see `local` in [`refine`]).
const MIN_LOCAL: f32 = 0.05;

/// One op moved to f32: its name and the error its int8 form added.
pub struct Moved {
    pub op: String,
    pub kind: &'static str,
    pub added: f32,
}

/// What a refinement did: the ops it moved, and how far off the worst output still is
/// (relative L2 error on the probe samples, measured after the last move).
pub struct Refined {
    pub moved: Vec<Moved>,
    pub off: f32,
}

/// `trigger`: refinement starts only when an output is off by more than it (at least
/// `limit`); once started it goes on until every output is within `limit`.
/// `mac_share`: the most of the model's multiply-accumulates the moved ops may hold
/// (`None`: no cap). Refinement stops before the op that would pass it.
pub fn refine(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    ranges: &mut Ranges,
    limit: f32,
    trigger: f32,
    mac_share: Option<f32>,
) -> Result<Refined> {
    let total: u64 = g.ops.iter().map(|op| crate::sensitive::macs(g, op)).sum();
    let mut mac_left = mac_share.map(|s| (total as f64 * s.clamp(0.0, 1.0) as f64) as u64);
    let probe: Vec<&Vec<Vec<f32>>> = samples.iter().take(PROBE_SAMPLES).collect();
    // Each float tensor's probed values (`probed`) and element count, per sample: only
    // those are compared, so a model of 256×256 maps keeps a few MB per sample instead of
    // every value of every tensor.
    let floats: Vec<HashMap<usize, (usize, Vec<f32>)>> = probe
        .iter()
        .map(|s| {
            let all = g.run_all_on(s, true)?;
            Ok(all
                .into_iter()
                .filter(|&(t, _)| g.tensors[t].dtype == DType::F32 && !g.tensors[t].is_const())
                .map(|(t, v)| {
                    let f: &[f32] = bytemuck::cast_slice(v.as_slice());
                    (t, (f.len(), probed(f.len()).map(|i| f[i]).collect()))
                })
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut moved = Vec::new();
    // The bound an op's own addition is held to. When an output is still off but no op
    // adds that much (error that builds up over a recurrence's steps, a little per op),
    // it halves, down to `MIN_LOCAL`, so the ops that add the most go first.
    let mut local = limit;
    let links = crate::ir::Links::of(g);
    let judged: Vec<Vec<usize>> = g
        .ops
        .iter()
        .map(|op| {
            op.outputs
                .iter()
                .map(|&t| judged_at(g, &links, t))
                .collect()
        })
        .collect();
    let (picked, answers) = selections(g, &links);
    // Magnitudes on the first probe sample decide which answers are judged by parts.
    let mag = |t: usize| -> Option<f32> {
        let (_, v) = floats.first()?.get(&t)?;
        Some(peak(v.iter().copied()))
    };
    let answers = by_parts(g, &links, &answers, &mag);
    let mut off = 0.0f32;
    // The last round only measures: `off` is always the error of the ranges returned.
    let rounds = if mac_share.is_some() {
        MAX_ROUNDS
    } else {
        MAX_ROUNDS_UNCAPPED
    };
    'rounds: for round in 0..=rounds {
        let (q, rep) = quantize(g, ranges)?;
        // Squared error and squared norm per float tensor, over the probe samples.
        let mut acc: HashMap<usize, (f64, f64)> = HashMap::new();
        for (s, fv) in probe.iter().zip(&floats) {
            let qv = q.run_all_on(s, true)?;
            for (&t, &qt) in &rep.values {
                let h = &g.tensors[t];
                if h.dtype != DType::F32 || h.is_const() || picked[t] {
                    continue;
                }
                let (Some((n, f)), Some(v)) = (fv.get(&t), qv.get(&qt)) else {
                    continue;
                };
                let Some(got) = dequantized_at(&q, qt, v.as_slice(), *n) else {
                    continue;
                };
                let a = acc.entry(t).or_default();
                for (x, y) in f.iter().zip(got) {
                    if !x.is_finite() {
                        continue;
                    }
                    // A value int8 turned infinite (a log of a zeroed magnitude) counts
                    // as a hundred times its size.
                    let d = if y.is_finite() {
                        (x - y) as f64
                    } else {
                        100.0 * (x.abs() as f64 + 1.0)
                    };
                    a.0 += d * d;
                    a.1 += (*x as f64).powi(2);
                }
            }
        }
        let err = |t: usize| -> f32 {
            acc.get(&t).map_or(
                0.0,
                |&(e, n)| if n > 0.0 { (e / n).sqrt() as f32 } else { 0.0 },
            )
        };
        // Only an answer that is off counts: a deep network's inner tensors drift by
        // more than the bound while its outputs stay right (a detector's probability
        // map); refinement stops as soon as every output is within the bound.
        off = answers.iter().map(|&o| err(o)).fold(0.0, f32::max);
        if round == rounds || off <= limit || (moved.is_empty() && off <= trigger.max(limit)) {
            break;
        }
        // The first op (in execution order) whose int8 form adds more than the bound:
        // errors downstream of it are its echo, so it is fixed first.
        let mut worst: Option<(usize, f32)> = None;
        let mut input_moved: Option<(usize, f32)> = None;
        // Quantized data movement between a damaged f32 op and the op that damaged it.
        let mut carriers: Vec<usize> = Vec::new();
        // (worst output error, worst input error) of an op.
        let errs = |i: usize, op: &crate::ir::HOp| -> (f32, f32) {
            let out = judged[i].iter().map(|&o| err(o)).fold(0.0, f32::max);
            let inp = op.inputs.iter().flatten().map(|&t| err(t));
            (out, inp.fold(0.0, f32::max))
        };
        for (i, op) in g.ops.iter().enumerate() {
            let (out, inp) = errs(i, op);
            if !quantized(op, ranges) {
                // An f32 op whose result is still off by more than the bound reads a
                // damaged input: the int8 op that made it goes to f32 too (a log or a
                // division reads an int8 magnitude whose small values are gone).
                if out > local {
                    // Walk up through f32 ops along the worst input to the int8 op that
                    // damaged it.
                    let mut at = i;
                    for _ in 0..g.ops.len() {
                        let next = g.ops[at]
                            .inputs
                            .iter()
                            .flatten()
                            .map(|&t| (t, err(t)))
                            .filter(|&(_, e)| e > 0.0)
                            .max_by(|a, b| a.1.total_cmp(&b.1));
                        let Some((t, e)) = next else {
                            // Nothing above is off: the data movement's own rounding
                            // (an exact f32 value put on a coarse int8 grid) is the
                            // damage, and its topmost op goes.
                            if let Some(c) = carriers.pop() {
                                let e = g.ops[c].outputs.iter().map(|&o| err(o));
                                worst = Some((c, e.fold(0.0, f32::max)));
                            }
                            break;
                        };
                        match g.producer(t) {
                            // Data movement in int8 (a Reshape, a Pad between a
                            // strided conv and the next) only carries the damage: it
                            // goes to f32 with the op found above it, in this round.
                            Some(p)
                                if quantized(&g.ops[p], ranges) && moves_or_clamps(&g.ops[p]) =>
                            {
                                carriers.push(p);
                                at = p;
                            }
                            Some(p) if quantized(&g.ops[p], ranges) => {
                                worst = Some((p, e));
                                break;
                            }
                            Some(p) => at = p,
                            None => {
                                // A model input quantized at the door (a waveform):
                                // its readers take it in f32.
                                if ranges.remove(&t).is_some() {
                                    input_moved = Some((t, e));
                                }
                                break;
                            }
                        }
                    }
                    if worst.is_some() || input_moved.is_some() {
                        break;
                    }
                    carriers.clear();
                }
                continue;
            }
            if moves_or_clamps(op) {
                continue;
            }
            let added = out - inp;
            if out > local && added > local {
                worst = Some((i, added));
                break;
            }
        }
        // The carriers' ranges go with the op above them (or the input): each would
        // otherwise take a round of its own.
        let carried = |ranges: &mut Ranges| {
            for &c in &carriers {
                to_f32(&g.ops[c], ranges);
            }
        };
        if let Some((t, e)) = input_moved {
            carried(ranges);
            moved.push(Moved {
                op: format!("input '{}'", g.tensors[t].name),
                kind: "input",
                added: e,
            });
            continue;
        }
        let Some((first, first_added)) = worst else {
            if local / 2.0 >= MIN_LOCAL.min(limit) {
                local /= 2.0;
                continue;
            }
            break;
        };
        // With no cap on the MACs, the ops over the bound on other branches (each octave
        // of a constant-Q transform, each head) go in the same round: their errors are
        // not echoes of this one, and moving them one per round ran out of rounds.
        let mut chosen = vec![(first, first_added)];
        if mac_left.is_none() {
            // Tensors downstream of a chosen op: their errors may be its echo.
            let mut echo: Vec<bool> = vec![false; g.tensors.len()];
            for (j, op) in g.ops.iter().enumerate().skip(first) {
                let echoes = j == first || op.inputs.iter().flatten().any(|&t| echo[t]);
                let over = !echoes && quantized(op, ranges) && !moves_or_clamps(op) && {
                    let (out, inp) = errs(j, op);
                    let over = out > local && out - inp > local;
                    if over {
                        chosen.push((j, out - inp));
                    }
                    over
                };
                if echoes || over {
                    for &t in &op.outputs {
                        echo[t] = true;
                    }
                }
            }
        }
        for (i, added) in chosen {
            // The other ops of the same model node (an LSTM's gates, a decomposed
            // LayerNorm) that also add more than the bound go with it; so do the ops in
            // its role at every other step of an unrolled recurrence (same node, kind and
            // parameters), whatever each adds alone: the error they make is the sum over
            // the steps, and moving one step a round ran out of rounds long before.
            let name = &g.ops[i].name;
            let (kind, params) = (g.ops[i].kind, &g.ops[i].params);
            let mut next = ranges.clone();
            if i == first {
                carried(&mut next);
            }
            for (j, op) in g.ops.iter().enumerate() {
                if j != i && (op.name != *name || moves_or_clamps(op)) {
                    continue;
                }
                let same_role = op.kind == kind && op.params == *params;
                if j != i && !same_role {
                    let (out, inp) = errs(j, op);
                    if !(out > local && out - inp > local) {
                        continue;
                    }
                }
                to_f32(op, &mut next);
            }
            if let Some(left) = mac_left.as_mut() {
                // Every op that leaves int8: the moved ones, and the producers whose
                // outputs lost their ranges with the moved ops' inputs (a weighted op
                // feeding a log).
                let cost: u64 = g
                    .ops
                    .iter()
                    .filter(|op| quantized(op, ranges) && !quantized(op, &next))
                    .map(|op| crate::sensitive::macs(g, op))
                    .sum();
                if cost > *left {
                    break 'rounds;
                }
                *left -= cost;
            }
            *ranges = next;
            moved.push(Moved {
                op: name.clone(),
                kind: g.ops[i].kind.name(),
                added,
            });
        }
    }
    Ok(Refined { moved, off })
}

/// The tensor whose error judges the op that writes `t`: `t` itself, or, where a Relu or
/// Clip alone reads it (`calibrate::clamp_reader`), the clamp's output. The quantizer
/// gives such a `t` the clamp's range, so the part the clamp drops anyway (a 1-d conv's
/// negative half, behind the Reshape that lifts it to 2-d) is no error of the op;
/// measured at `t` it looked like 96% of it.
fn judged_at(g: &Graph, k: &crate::ir::Links, t: usize) -> usize {
    crate::calibrate::clamp_reader(g, k, t).map_or(t, |(op, _)| g.ops[op].outputs[0])
}

/// Moves `op` to f32: its outputs and inputs lose their ranges (so the producers of its
/// inputs write f32 too).
fn to_f32(op: &crate::ir::HOp, ranges: &mut Ranges) {
    for t in op.outputs.iter().chain(op.inputs.iter().flatten()) {
        ranges.remove(t);
    }
}

/// Whether `op` runs in int8 (its output has a range).
fn quantized(op: &crate::ir::HOp, ranges: &Ranges) -> bool {
    op.outputs.iter().any(|t| ranges.contains_key(t))
}

/// Ops that move values or clamp them (Relu, Clip, MaxPool) add no error of their own in
/// int8 beyond one rounding; their output's relative error still differs from their
/// input's because the norm does (a time step of a sequence, the positive half of a
/// signal), which is no reason to keep them f32.
fn moves_or_clamps(op: &crate::ir::HOp) -> bool {
    use cairn_core::op::UnaryFn;
    use cairn_core::OpKind::*;
    match op.kind {
        Reshape | Transpose | Slice | Split | Concat | Pad | Gather | Tile | MaxPool => true,
        Unary => matches!(
            op.unary_fn(),
            Some(UnaryFn::Relu | UnaryFn::Clip | UnaryFn::Identity)
        ),
        _ => false,
    }
}

/// Values of tensor `t` of the quantized graph as f32.
fn dequantized_at(q: &Graph, t: usize, bytes: &[u8], n: usize) -> Option<Vec<f32>> {
    let h = &q.tensors[t];
    let (s, z) = match h.quant {
        QuantSpec::PerTensor { scale, zero_point } => (scale, zero_point),
        _ => (1.0, 0),
    };
    let width = match h.dtype {
        DType::F32 | DType::I32 => 4,
        DType::I8 | DType::U8 => 1,
    };
    if bytes.len() != n * width {
        return None;
    }
    Some(match h.dtype {
        DType::F32 => {
            let v = bytemuck::cast_slice::<u8, f32>(bytes);
            probed(n).map(|i| v[i]).collect()
        }
        DType::I8 => probed(n)
            .map(|i| (bytes[i] as i8 as i32 - z) as f32 * s)
            .collect(),
        DType::U8 => probed(n)
            .map(|i| (bytes[i] as i32 - z) as f32 * s)
            .collect(),
        DType::I32 => {
            let v = bytemuck::cast_slice::<u8, i32>(bytes);
            probed(n).map(|i| (v[i] - z) as f32 * s).collect()
        }
    })
}

/// Tensors that hang on a run-time selection's indices (TopK's, ArgMax's, ArgMin's, and
/// everything computed from them), and the tensors the outputs are judged at. int8 may
/// swap two nearly equal candidates, which moves such a tensor by whole elements while
/// the answer stays as good (a detector's 300 best boxes, two of them in the other
/// order): the error is measured where it is continuous, on what the selection ranked and
/// what was gathered by its indices. An output that hangs on a selection is replaced by
/// the f32 inputs, not themselves picked, of the ops between it and the selection.
fn selections(g: &Graph, k: &crate::ir::Links) -> (Vec<bool>, Vec<usize>) {
    use cairn_core::op::ReduceFn;
    use cairn_core::OpKind;
    let mut picked = vec![false; g.tensors.len()];
    for op in &g.ops {
        let selects = op.kind == OpKind::Reduce
            && matches!(
                ReduceFn::from_code(op.params[0]),
                Some(ReduceFn::ArgMax | ReduceFn::ArgMin | ReduceFn::TopKIndex)
            );
        if selects || op.inputs.iter().flatten().any(|&t| picked[t]) {
            for &o in &op.outputs {
                picked[o] = true;
            }
        }
    }
    let mut answers = Vec::new();
    let mut seen = vec![false; g.tensors.len()];
    let mut stack: Vec<usize> = g.outputs.clone();
    while let Some(t) = stack.pop() {
        if std::mem::replace(&mut seen[t], true) {
            continue;
        }
        if !picked[t] {
            answers.push(t);
            continue;
        }
        let Some(p) = k.producer(t) else { continue };
        for &x in g.ops[p].inputs.iter().flatten() {
            let h = &g.tensors[x];
            if picked[x] || (h.dtype == DType::F32 && !h.is_const()) {
                stack.push(x);
            }
        }
    }
    (picked, answers)
}

/// The largest finite magnitude among `values` (0 when there is none): a part's size for
/// [`by_parts`].
fn peak(values: impl Iterator<Item = f32>) -> f32 {
    values
        .filter(|x| x.is_finite())
        .fold(0.0, |m, x| m.max(x.abs()))
}

/// Parts joined into one answer are judged apart when the smallest part's magnitude is
/// under this share of the largest's.
const PART_SHARE: f32 = 1.0 / 8.0;

/// The tensors `answers` are judged at: each answer itself, or, where it is a Concat
/// (through Reshapes, Transposes and further Concats, at most eight deep) of f32 parts
/// whose magnitudes (`mag`: the largest absolute value) differ by more than
/// `1 / PART_SHARE` (a detector's box coordinates in pixels beside its 0–1 scores), each
/// part on its own. One relative error over the whole sees only the widest part: a YOLOv8
/// head's scores 46% off in an output 2.6% off. Parts that are all zero are not judged.
pub(crate) fn by_parts(
    g: &Graph,
    k: &crate::ir::Links,
    answers: &[usize],
    mag: &dyn Fn(usize) -> Option<f32>,
) -> Vec<usize> {
    fn walk(
        g: &Graph,
        k: &crate::ir::Links,
        t: usize,
        mag: &dyn Fn(usize) -> Option<f32>,
        out: &mut Vec<usize>,
    ) {
        use cairn_core::OpKind::*;
        let mut at = t;
        for _ in 0..8 {
            let Some(p) = k.producer(at) else { break };
            let op = &g.ops[p];
            match op.kind {
                Reshape | Transpose => match op.inputs.first().copied().flatten() {
                    Some(x) => at = x,
                    None => break,
                },
                Concat => {
                    let parts: Vec<(usize, f32)> = op
                        .inputs
                        .iter()
                        .flatten()
                        .filter(|&&x| g.tensors[x].dtype == DType::F32 && !g.tensors[x].is_const())
                        .map(|&x| mag(x).map(|m| (x, m)))
                        .collect::<Option<_>>()
                        .unwrap_or_default();
                    let live: Vec<(usize, f32)> =
                        parts.into_iter().filter(|&(_, m)| m > 0.0).collect();
                    let widest = live.iter().map(|p| p.1).fold(0.0, f32::max);
                    let narrowest = live.iter().map(|p| p.1).fold(f32::INFINITY, f32::min);
                    if live.len() < 2 || narrowest >= widest * PART_SHARE {
                        break;
                    }
                    for (x, _) in live {
                        walk(g, k, x, mag, out);
                    }
                    return;
                }
                _ => break,
            }
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    let mut out = Vec::new();
    for &t in answers {
        walk(g, k, t, mag, &mut out);
    }
    out
}

/// The worst output's relative L2 error of each graph in `qs` (quantized forms of `g`,
/// each with the map from `g`'s tensors to its own, `quantize::Report::values`) against
/// the float graph `g`, over the first `PROBE_SAMPLES` samples (the float graph runs once a
/// sample). An output joining parts of very different magnitudes is judged by its parts
/// ([`by_parts`]); outputs with no finite value are skipped.
pub fn output_errors(
    g: &Graph,
    qs: &[(&Graph, &HashMap<usize, usize>)],
    samples: &[Vec<Vec<f32>>],
) -> Result<Vec<f32>> {
    let mut judged: Vec<usize> = Vec::new();
    // Each judged tensor's place in each quantized graph.
    let mut places: Vec<Vec<Option<usize>>> = Vec::new();
    let mut acc: Vec<Vec<(f64, f64)>> = Vec::new();
    for (i, s) in samples.iter().take(PROBE_SAMPLES).enumerate() {
        let fv = g.run_all_on(s, true)?;
        if i == 0 {
            let mag = |t: usize| -> Option<f32> {
                let v: &[f32] = bytemuck::cast_slice(fv.get(&t)?.as_slice());
                Some(peak(probed(v.len()).map(|i| v[i])))
            };
            judged = by_parts(g, &crate::ir::Links::of(g), &g.outputs, &mag);
            places = qs
                .iter()
                .map(|&(q, values)| places_in(g, q, values, &judged))
                .collect();
            acc = vec![vec![(0f64, 0f64); judged.len()]; qs.len()];
        }
        for ((&(q, _), acc), place) in qs.iter().zip(acc.iter_mut()).zip(&places) {
            let qv = q.run_all_on(s, true)?;
            for ((&ft, &qt), a) in judged.iter().zip(place).zip(acc.iter_mut()) {
                let (Some(f), Some(qt)) = (fv.get(&ft), qt) else {
                    continue;
                };
                let Some(v) = qv.get(&qt) else {
                    continue;
                };
                if g.tensors[ft].dtype != DType::F32 {
                    continue;
                }
                let f: &[f32] = bytemuck::cast_slice(f.as_slice());
                let Some(got) = dequantized_at(q, qt, v.as_slice(), f.len()) else {
                    continue;
                };
                for (x, y) in probed(f.len()).map(|i| f[i]).zip(got) {
                    if x.is_finite() {
                        a.0 += ((x - y) as f64).powi(2);
                        a.1 += (x as f64).powi(2);
                    }
                }
            }
        }
    }
    Ok(acc
        .iter()
        .map(|acc| {
            acc.iter()
                .map(|&(e, n)| if n > 0.0 { (e / n).sqrt() as f32 } else { 0.0 })
                .fold(0.0, f32::max)
        })
        .collect())
}

/// Where each float tensor of `judged` is in the quantized graph `q`: a graph output at
/// its position, any other through `values` (`quantize::Report::values`).
fn places_in(
    g: &Graph,
    q: &Graph,
    values: &HashMap<usize, usize>,
    judged: &[usize],
) -> Vec<Option<usize>> {
    judged
        .iter()
        .map(|&t| match g.outputs.iter().position(|&o| o == t) {
            Some(i) => q.outputs.get(i).copied(),
            None => values.get(&t).copied(),
        })
        .collect()
}

/// The decision layer stays f32: from each graph output, back through data movement and
/// element-wise functions (a Sigmoid, a Softmax) to the first op with weights, when that
/// chain holds at most 0.2% of the model's multiply-accumulates. Its logits are where a
/// calibration set that never saw the extreme case clips the answer (a VAD calibrated on
/// quiet audio caps its speech probability), and in f32 they cost next to nothing.
/// Returns the names of the ops kept f32.
pub fn keep_decision_layer_f32(g: &Graph, ranges: &mut Ranges) -> Vec<String> {
    use cairn_core::OpKind::*;
    let macs = |op: &crate::ir::HOp| crate::sensitive::macs(g, op);
    let total: u64 = g.ops.iter().map(macs).sum();
    let mut kept = Vec::new();
    for &out in &g.outputs {
        let mut chain = Vec::new();
        let mut t = out;
        while let Some(p) = g.producer(t) {
            let op = &g.ops[p];
            chain.push(p);
            match op.kind {
                Reshape | Transpose | Slice | Gather | Unary | Lut | Softmax | Add | Mul | Sub => {}
                Conv | FullyConnected | BatchMatMul | ConvTranspose => break,
                _ => {
                    chain.clear();
                    break;
                }
            }
            // Walk on through the one run-time input; an op of two activations ends it.
            let mut live = op
                .inputs
                .iter()
                .flatten()
                .filter(|&&x| !g.tensors[x].is_const());
            match (live.next(), live.next()) {
                (Some(&x), None) => t = x,
                _ => {
                    chain.clear();
                    break;
                }
            }
        }
        let Some(&last) = chain.last() else { continue };
        if !matches!(
            g.ops[last].kind,
            Conv | FullyConnected | BatchMatMul | ConvTranspose
        ) {
            continue;
        }
        let cost: u64 = chain.iter().map(|&p| macs(&g.ops[p])).sum();
        if total == 0 || cost * 500 > total {
            continue;
        }
        for &p in &chain {
            for o in &g.ops[p].outputs {
                ranges.remove(o);
            }
            kept.push(g.ops[p].name.clone());
        }
    }
    kept.dedup();
    kept
}

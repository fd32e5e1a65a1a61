//! Recurrent cells in a calibrated conversion: an LSTM cell, found by its shape in the
//! float graph whatever wrote it (the ONNX LSTM lowering or an exporter's decomposed
//! cell), stays f32 whole (its state, gates, pre-activations and hidden state), and its
//! projections then run on int8 weights with their rows quantized at run time. One of
//! the default passes (`sensitive::default_passes`).

use std::collections::HashSet;

use cairn_core::op::UnaryFn;
use cairn_core::OpKind;

use crate::ir::Graph;
use crate::quantize::Ranges;

/// LSTM cell states `c = f·c_prev + i·g` (an Add of two Muls, each by a sigmoid gate) and
/// their products stay f32, with the initial state they start from (back through data
/// movement to the graph input): the state is unbounded (tens, where the gates and the
/// output are within ±1), carried from step to step and from call to call, and an int8
/// step sized for its largest value rounds the small values that `tanh` is steep on.
/// TFLite keeps this state in 16 bits for the same reason. The rest of the cell stays f32
/// with it: the gates, their pre-activations back to the projections that make them (the
/// input's and the recurrent one's outputs, and their sum), `tanh(c)` and the hidden state
/// `h = o·tanh(c)`. The pre-activations of the four gates share one int8 scale, set by the
/// widest of them, and a step of 0.1–0.2 there moves every gate on every step: a 3-layer,
/// 80-step LSTM embedder came out 30–47% off with them int8 and within 13% with only the
/// projections' inputs int8. The projections then read int8 inputs and write f32, so they
/// run as FullyConnected.f32-w8 where the weight passes keep int8 weights (each input row
/// quantized at run time, as dynamic quantization does it). The cost is the cell's
/// element-wise ops of the hidden size per step in f32. Returns the number of cells kept.
pub fn keep_cell_states_f32(g: &Graph, ranges: &mut Ranges) -> usize {
    use OpKind::*;
    let links = crate::ir::Links::of(g);
    let made_by = |t: usize| links.producer(t).map(|p| &g.ops[p]);
    // Made by one of `fs`, directly or through data movement (the gates of a cell often
    // share one sigmoid, split after it).
    let is_fn = |t: usize, fs: &[UnaryFn]| {
        let mut t = t;
        for _ in 0..4 {
            let Some(o) = made_by(t) else { return false };
            match o.kind {
                Unary => return o.unary_fn().is_some_and(|f| fs.contains(&f)),
                Reshape | Slice | Split => match o.inputs.first().copied().flatten() {
                    Some(x) => t = x,
                    None => return false,
                },
                _ => return false,
            }
        }
        false
    };
    let gate = |t: usize| is_fn(t, &[UnaryFn::Sigmoid, UnaryFn::HardSigmoid]);
    // A gated product: (its output, the tensor the gate multiplies, the gate).
    let gated = |t: usize| -> Option<(usize, usize, usize)> {
        let m = made_by(t).filter(|o| o.kind == Mul)?;
        let (a, b) = (m.inputs.first().copied()??, m.inputs.get(1).copied()??);
        if gate(a) && !gate(b) {
            Some((t, b, a))
        } else if gate(b) {
            Some((t, a, b))
        } else {
            None
        }
    };
    // A gate or candidate back to the projections that make it: through its activation,
    // data movement, clips and the sums of the pre-activation (peephole products
    // included), up to the outputs of FullyConnected / MatMul, which stay f32 too.
    let pre_activation = |t: usize, ranges: &mut Ranges| {
        let mut todo = vec![(t, 0)];
        let mut seen = HashSet::new();
        while let Some((t, depth)) = todo.pop() {
            if depth > 12 || !seen.insert(t) || g.inputs.contains(&t) || g.tensors[t].is_const() {
                continue;
            }
            let Some(p) = made_by(t) else { continue };
            let gate_fn = p.unary_fn().is_some_and(|f| {
                matches!(
                    f,
                    UnaryFn::Sigmoid | UnaryFn::HardSigmoid | UnaryFn::Tanh | UnaryFn::Clip
                )
            });
            let through = gate_fn
                || matches!(
                    p.kind,
                    Reshape | Slice | Split | Transpose | Concat | Add | Sub | Mul
                );
            let projection = matches!(p.kind, FullyConnected | BatchMatMul);
            // Other producers (a ConvLSTM's convs) keep their int8 output: in f32 the
            // whole conv would run f32.
            if through || projection {
                ranges.remove(&t);
            }
            if through {
                for &x in p.inputs.iter().flatten() {
                    todo.push((x, depth + 1));
                }
            } else if projection {
                projection_input_f32(g, &links, p, ranges);
            }
        }
    };
    let hidden_out = |h: usize, ranges: &mut Ranges| hidden_out_f32(g, &links, h, ranges);
    // h = o·tanh(c) from a cell state c: the tanh, the product and the output gate.
    let hidden = |c: usize, ranges: &mut Ranges| {
        for &r in links.readers(c) {
            let o = &g.ops[r];
            if o.unary_fn() != Some(UnaryFn::Tanh) {
                continue;
            }
            let hc = o.outputs[0];
            ranges.remove(&hc);
            for &r in links.readers(hc) {
                let Some((h, _, og)) = gated(g.ops[r].outputs[0]) else {
                    continue;
                };
                pre_activation(og, ranges);
                hidden_out(h, ranges);
            }
        }
    };
    let mut cells = 0;
    for op in g.ops.iter().filter(|o| o.kind == Add) {
        let (Some(Some(a)), Some(Some(b))) = (op.inputs.first(), op.inputs.get(1)) else {
            continue;
        };
        let (Some((fa, xa, ga)), Some((fb, xb, gb))) = (gated(*a), gated(*b)) else {
            continue;
        };
        // One product is the candidate `i·g` (g from a tanh); the other reads the
        // previous state. Both orders occur.
        let (prev, cand) = if is_fn(xa, &[UnaryFn::Tanh]) {
            (xb, xa)
        } else if is_fn(xb, &[UnaryFn::Tanh]) {
            (xa, xb)
        } else {
            continue;
        };
        cells += 1;
        let c = op.outputs[0];
        for t in [c, fa, fb] {
            ranges.remove(&t);
        }
        for t in [ga, gb, cand] {
            pre_activation(t, ranges);
        }
        hidden(c, ranges);
        // The new state through data movement on its way out (a reshape to the state
        // output, a concat beside the hidden state there).
        let mut next = vec![op.outputs[0]];
        while let Some(t) = next.pop() {
            for &r in links.readers(t) {
                let o = &g.ops[r];
                if matches!(o.kind, Reshape | Transpose) && ranges.contains_key(&o.outputs[0]) {
                    ranges.remove(&o.outputs[0]);
                    next.push(o.outputs[0]);
                }
            }
        }
        // The previous state back to where it comes from: another step's cell (kept
        // above) or the initial state taken out of a graph input by data movement.
        state_back_f32(g, &links, prev, ranges);
    }
    // A first step, whose state is i·g alone (no previous state to forget): the same
    // cell, found by that product and the hidden state made from it (a tanh of it times
    // a gate). The products of the cells above have lost their ranges already.
    for op in g.ops.iter().filter(|o| o.kind == Mul) {
        let c = op.outputs[0];
        if !ranges.contains_key(&c) {
            continue;
        }
        let Some((_, cand, gi)) = gated(c) else {
            continue;
        };
        let makes_h = links.readers(c).iter().any(|&r| {
            let o = &g.ops[r];
            o.unary_fn() == Some(UnaryFn::Tanh)
                && links
                    .readers(o.outputs[0])
                    .iter()
                    .any(|&r| gated(g.ops[r].outputs[0]).is_some())
        });
        if !is_fn(cand, &[UnaryFn::Tanh]) || !makes_h {
            continue;
        }
        cells += 1;
        ranges.remove(&c);
        pre_activation(gi, ranges);
        pre_activation(cand, ranges);
        hidden(c, ranges);
    }
    cells
}

/// h and its way out through data movement (the sequence output's concat and reshapes),
/// so the next layer's projection reads it as it is instead of rounded twice (static
/// int8, then its rows at run time); not into a tensor that another kind of op reads (a
/// conv over the sequence would run f32), which keeps its range.
fn hidden_out_f32(g: &Graph, links: &crate::ir::Links, h: usize, ranges: &mut Ranges) {
    use OpKind::*;
    let for_projections = |t: usize| {
        links.readers(t).iter().all(|&r| {
            matches!(
                g.ops[r].kind,
                Reshape
                    | Transpose
                    | Concat
                    | Slice
                    | Split
                    | Gather
                    | FullyConnected
                    | BatchMatMul
            )
        })
    };
    let mut next = vec![h];
    while let Some(t) = next.pop() {
        if t != h && (!for_projections(t) || ranges.remove(&t).is_none()) {
            continue;
        }
        ranges.remove(&t);
        for &r in links.readers(t) {
            let o = &g.ops[r];
            if matches!(
                o.kind,
                Reshape | Transpose | Concat | Slice | Split | Gather
            ) {
                next.extend(o.outputs.iter().copied());
            }
        }
    }
}

/// A state back through data movement (up to eight ops) to where it comes from: another
/// step's cell or a graph input, the ranges on the way dropped.
fn state_back_f32(g: &Graph, links: &crate::ir::Links, t: usize, ranges: &mut Ranges) {
    use OpKind::*;
    let mut t = t;
    for _ in 0..8 {
        if g.inputs.contains(&t) || g.tensors[t].is_const() {
            break;
        }
        let Some(p) = links.producer(t).map(|p| &g.ops[p]) else {
            break;
        };
        if !matches!(p.kind, Reshape | Transpose | Gather | Slice | Split) {
            break;
        }
        ranges.remove(&t);
        match p.inputs.first().copied().flatten() {
            Some(x) => t = x,
            None => break,
        }
    }
}

/// A projection that will quantize its rows at run time reads its input as it is where
/// that input is only moved data of a graph input (a spectrogram transposed to steps): a
/// static int8 step first would round it twice. Drops the ranges along that path.
fn projection_input_f32(
    g: &Graph,
    links: &crate::ir::Links,
    p: &crate::ir::HOp,
    ranges: &mut Ranges,
) {
    let mut x = p.inputs.first().copied().flatten();
    let mut path = vec![];
    while let Some(t) = x {
        if links.readers(t).len() != 1 || g.tensors[t].is_const() {
            break;
        }
        path.push(t);
        if g.inputs.contains(&t) {
            for t in path.drain(..) {
                ranges.remove(&t);
            }
            break;
        }
        x = links
            .producer(t)
            .map(|o| &g.ops[o])
            .filter(|o| matches!(o.kind, OpKind::Reshape | OpKind::Transpose))
            .and_then(|o| o.inputs.first().copied().flatten());
    }
}

/// `Recurrent` ops in a calibrated conversion: the op is f32, and so are the outputs of
/// the projections that feed it (the gates' pre-activations, for the reason
/// [`keep_cell_states_f32`] gives) and its hidden states on their way to the next
/// layer's projections, which then quantize their rows at run time. Returns the number
/// of such ops.
pub fn keep_recurrences_f32(g: &Graph, ranges: &mut Ranges) -> usize {
    use OpKind::*;
    let links = crate::ir::Links::of(g);
    let mut n = 0;
    for op in g.ops.iter().filter(|o| o.kind == Recurrent) {
        n += 1;
        // The projections back through data movement.
        let mut t = op.inputs.first().copied().flatten();
        for _ in 0..4 {
            let Some(x) = t else { break };
            if g.inputs.contains(&x) || g.tensors[x].is_const() {
                break;
            }
            let Some(p) = links.producer(x).map(|p| &g.ops[p]) else {
                break;
            };
            ranges.remove(&x);
            t = match p.kind {
                Reshape | Transpose => p.inputs.first().copied().flatten(),
                FullyConnected | BatchMatMul => {
                    // Its input too, as an unrolled cell's projections.
                    projection_input_f32(g, &links, p, ranges);
                    None
                }
                _ => None,
            };
        }
        // The initial states back to where they come from (a graph input, through data
        // movement), as an unrolled cell's previous state; the hidden states on to the
        // next projections, as an unrolled cell's h.
        for k in [3, 4] {
            if let Some(t) = op.inputs.get(k).copied().flatten() {
                state_back_f32(g, &links, t, ranges);
            }
        }
        hidden_out_f32(g, &links, op.outputs[0], ranges);
    }
    n
}

//! Round trips through int8 that nothing needs: a Quantize whose bytes only move (Reshape,
//! Transpose, Slice, Split) on their way to Dequantize ops. The quantizer decides op by
//! op, so a data-movement op reading a calibrated f32 tensor goes int8 before it is known
//! whether any int8 op will read its result; where none does (a recurrent model's input
//! frames, sliced and reshaped for projections that keep f32 activations), the trip cost
//! two passes over the data and rounded it to the calibration's 256 steps, clamped to the
//! calibration's range. The chain then moves the f32 values instead: the same ops on the
//! f32 kernels, the values exact.

use std::collections::{HashMap, HashSet};

use cairn_core::emit::QuantSpec;
use cairn_core::op::OpKind;
use cairn_core::DType;

use crate::ir::{Graph, Links};

/// The longest chain of data-movement ops followed from one Quantize.
const MAX_CHAIN: usize = 64;

/// Rewrites every such chain of `g` in place and returns the renames it made (an old
/// tensor id → the id that now holds its value: a Quantize's output → its f32 input, a
/// Dequantize's output → the f32 tensor it read) for maps kept beside the graph, and how
/// many data-movement ops it moved to f32. The dropped Quantize and Dequantize ops leave
/// their tensors unread, for `Graph::prune`. A chain stays when its int8 values are a
/// graph output, or read by any other op, or when their saturation stands for an op
/// (`clamps`: a QDQ model's params, a Relu the clamp does). A graph output that a
/// Dequantize wrote becomes the moved f32 tensor (the output names a conversion writes
/// come from the ONNX model, not from the tensors).
pub fn drop_round_trips(g: &mut Graph, clamps: &HashSet<usize>) -> (HashMap<usize, usize>, usize) {
    let links = Links::of(g);
    let mut renames = HashMap::new();
    let mut dropped = vec![false; g.ops.len()];
    let mut moved = 0;
    for qi in 0..g.ops.len() {
        let op = &g.ops[qi];
        if op.kind != OpKind::Quantize {
            continue;
        }
        let (Some(Some(x)), [a]) = (op.inputs.first().copied(), op.outputs.as_slice()) else {
            continue;
        };
        if g.tensors[x].dtype != DType::F32 {
            continue;
        }
        let Some((moves, dqs)) = chain(g, &links, *a, clamps) else {
            continue;
        };
        let a = *a;
        moved += moves.len();
        // The movement ops on the f32 values: their outputs become f32 tensors in place.
        for &m in &moves {
            for &o in &g.ops[m].outputs {
                let t = &mut g.tensors[o];
                t.dtype = DType::F32;
                t.quant = QuantSpec::None;
                if let Some(base) = t.name.strip_suffix(":q") {
                    t.name = base.to_string();
                }
            }
        }
        // Ops run in order, so `x`, if an earlier chain renamed it, is renamed already:
        // every value in `renames` is final when it goes in.
        let x = renames.get(&x).copied().unwrap_or(x);
        renames.insert(a, x);
        dropped[qi] = true;
        for &d in &dqs {
            let (Some(Some(from)), [to]) = (
                g.ops[d].inputs.first().copied(),
                g.ops[d].outputs.as_slice(),
            ) else {
                continue;
            };
            renames.insert(*to, if from == a { x } else { from });
            dropped[d] = true;
        }
    }
    let mut i = 0;
    g.ops.retain(|_| {
        i += 1;
        !dropped[i - 1]
    });
    for op in g.ops.iter_mut() {
        for t in op.inputs.iter_mut().flatten() {
            if let Some(&v) = renames.get(t) {
                *t = v;
            }
        }
    }
    for t in g.outputs.iter_mut() {
        if let Some(&v) = renames.get(t) {
            *t = v;
        }
    }
    (renames, moved)
}

/// The data-movement ops and the Dequantize ops reading int8 tensor `a`, itself or
/// through movement ops only; `None` when anything else reads any of them, one of them is
/// a graph output or in `clamps`, two Dequantize ops of one tensor write graph outputs, a Dequantize of
/// `a` itself writes one, or the chain is longer than [`MAX_CHAIN`].
fn chain(
    g: &Graph,
    links: &Links,
    a: usize,
    clamps: &HashSet<usize>,
) -> Option<(Vec<usize>, Vec<usize>)> {
    let (mut moves, mut dqs) = (Vec::new(), Vec::new());
    let mut todo = vec![a];
    while let Some(t) = todo.pop() {
        if g.outputs.contains(&t) || g.tensors[t].dtype != DType::I8 || clamps.contains(&t) {
            return None;
        }
        // A graph output read from a Dequantize becomes the moved f32 tensor itself: one
        // such output a tensor, and never the Quantize's own input (a graph input).
        let mut output_taken = t == a;
        for &r in links.readers(t) {
            let op = &g.ops[r];
            match op.kind {
                OpKind::Dequantize => {
                    if op.outputs.iter().any(|o| g.outputs.contains(o)) {
                        if output_taken {
                            return None;
                        }
                        output_taken = true;
                    }
                    dqs.push(r)
                }
                OpKind::Reshape | OpKind::Transpose | OpKind::Slice | OpKind::Split => {
                    // The moved tensor is the op's only tensor input.
                    if op.inputs.iter().flatten().any(|&i| i != t) || moves.contains(&r) {
                        return None;
                    }
                    moves.push(r);
                    if moves.len() > MAX_CHAIN {
                        return None;
                    }
                    todo.extend(op.outputs.iter().copied());
                }
                _ => return None,
            }
        }
    }
    Some((moves, dqs))
}

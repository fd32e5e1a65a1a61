//! Functions of one tensor written as several element-wise ops (a tanh-GELU spelled out as
//! `Pow`, `Mul`, `Add`, `Tanh`, `Mul`; a Mish; `x * x + 1`): in int8 each op would round
//! its result to 8 bits, and an intermediate such as `x³` spans a range so wide that
//! int8 keeps nothing of the values that matter. Their whole chain is one function of
//! the source tensor, so it becomes one 256-entry lookup table on it: the error of one
//! rounding, and one op instead of many.

use std::collections::HashMap;

use cairn_core::op::UnaryFn;
use cairn_core::{DType, OpKind};
use cairn_kernels::unary_value;

use crate::fuse::const_scalar;
use crate::ir::{Graph, HOp};

/// A tensor computed element-wise from one source tensor by two or more ops.
pub struct Family {
    pub source: usize,
    /// The ops that compute it, in graph order.
    pub ops: Vec<usize>,
}

/// The element-wise families of `g` whose result leaves the family (read by another kind
/// of op, or a graph output), keyed by that result tensor. A chain whose intermediate
/// values carry the model's own quantization (QDQ around each op) is not one: the model
/// rounds them, and cairn keeps what the model says.
pub fn families(g: &Graph) -> HashMap<usize, Family> {
    let mut all = chains(g);
    all.retain(|&y, f| {
        f.ops.iter().all(|&o| {
            g.ops[o]
                .outputs
                .iter()
                .all(|&t| t == y || !matches!(g.tensors[t].hint, Some(crate::ir::Hint::Act { .. })))
        })
    });
    all
}

fn chains(g: &Graph) -> HashMap<usize, Family> {
    let mut source: HashMap<usize, usize> = HashMap::new();
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    let src = |source: &HashMap<usize, usize>, t: usize| source.get(&t).copied().unwrap_or(t);
    for (i, op) in g.ops.iter().enumerate() {
        let Some(&y) = op.outputs.first() else {
            continue;
        };
        if op.outputs.len() != 1 || !elementwise(g, op) {
            continue;
        }
        let live: Vec<usize> = op
            .inputs
            .iter()
            .flatten()
            .copied()
            .filter(|&t| !g.tensors[t].is_const())
            .collect();
        let Some(&first) = live.first() else { continue };
        let s = src(&source, first);
        if live.iter().any(|&t| src(&source, t) != s)
            || live
                .iter()
                .any(|&t| g.tensors[t].shape != g.tensors[y].shape)
            || g.tensors[s].dtype != DType::F32
        {
            continue;
        }
        let mut ops: Vec<usize> = Vec::new();
        for &t in &live {
            if let Some(m) = members.get(&t) {
                ops.extend(m);
            }
        }
        ops.push(i);
        ops.sort_unstable();
        ops.dedup();
        source.insert(y, s);
        members.insert(y, ops);
    }
    let mut out = HashMap::new();
    for (&y, ops) in &members {
        // A chain of one-input steps is already a chain of exact tables; the fusion is
        // for a function that reads its source twice (x·gate(x), a GELU).
        if ops.len() < 2 || !ops.iter().any(|&i| two_live(g, &g.ops[i])) {
            continue;
        }
        let s = source[&y];
        let inside = g.consumers(y).iter().all(|&c| {
            g.ops[c]
                .outputs
                .first()
                .is_some_and(|o| source.get(o) == Some(&s))
        });
        if inside && !g.outputs.contains(&y) {
            continue;
        }
        out.insert(
            y,
            Family {
                source: s,
                ops: ops.clone(),
            },
        );
    }
    out
}

/// An op of two run-time operands.
fn two_live(g: &Graph, op: &HOp) -> bool {
    op.inputs
        .iter()
        .flatten()
        .filter(|&&t| !g.tensors[t].is_const())
        .count()
        == 2
}

/// An op whose output element i depends only on element i of its run-time inputs, with
/// any constant operand a scalar.
fn elementwise(g: &Graph, op: &HOp) -> bool {
    use OpKind::*;
    match op.kind {
        Unary => UnaryFn::from_code(op.params.first().copied().unwrap_or(-1)).is_some(),
        Add | Sub | Mul | Div => {
            op.inputs.len() == 2
                && op.inputs.iter().all(|t| {
                    t.is_some_and(|t| !g.tensors[t].is_const() || const_scalar(g, t).is_some())
                })
        }
        _ => false,
    }
}

/// The value of the family's result for source value `v`.
pub fn eval(g: &Graph, fam: &Family, v: f32) -> f32 {
    let mut vals: HashMap<usize, f32> = HashMap::new();
    vals.insert(fam.source, v);
    let mut last = v;
    for &i in &fam.ops {
        let op = &g.ops[i];
        let get = |t: Option<usize>| -> f32 {
            let t = t.expect("operand");
            const_scalar(g, t)
                .filter(|_| g.tensors[t].is_const())
                .or_else(|| vals.get(&t).copied())
                .unwrap_or(f32::NAN)
        };
        let bits = |k: usize| f32::from_bits(op.params.get(k).copied().unwrap_or(0) as u32);
        let r = match op.kind {
            OpKind::Unary => {
                let f = UnaryFn::from_code(op.params[0]).expect("checked");
                unary_value(f, bits(1), bits(2), get(op.inputs[0]))
            }
            k => {
                let (a, b) = (get(op.inputs[0]), get(op.inputs[1]));
                let r = match k {
                    OpKind::Add => a + b,
                    OpKind::Sub => a - b,
                    OpKind::Mul => a * b,
                    _ => a / b,
                };
                if op.params.len() >= 2 {
                    r.max(bits(0)).min(bits(1))
                } else {
                    r
                }
            }
        };
        vals.insert(op.outputs[0], r);
        last = r;
    }
    last
}

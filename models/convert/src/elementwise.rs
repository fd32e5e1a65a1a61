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
        Unary => op.unary_fn().is_some(),
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

/// Activations a family may compute, tried in this order.
const KNOWN: [UnaryFn; 7] = [
    UnaryFn::Gelu,
    UnaryFn::GeluTanh,
    UnaryFn::Silu,
    UnaryFn::Mish,
    UnaryFn::HardSwish,
    UnaryFn::Sigmoid,
    UnaryFn::Softplus,
];

/// The source values a family is compared on: every 1/64 over [−12, 12], and magnitudes
/// out to 10⁴ on both sides (where saturating pieces meet their asymptotes).
fn probes() -> Vec<f32> {
    let mut v: Vec<f32> = (-768..=768).map(|i| i as f32 / 64.0).collect();
    for m in [1e-4f32, 1e-2, 13.0, 20.0, 37.5, 50.0, 100.0, 1e3, 1e4] {
        v.extend([m, -m]);
    }
    v
}

/// The known activation a family computes, when it equals one at every probe within
/// `2e-5·|f| + 1e-6` (the family's own roundings, a few per op, and the approximations of
/// the reference's transcendental functions; the nearest other candidate, a tanh-GELU
/// against an erf-GELU, differs by 2e-4 at 2).
fn known_function(g: &Graph, fam: &Family, probes: &[f32]) -> Option<UnaryFn> {
    let got: Vec<f32> = probes.iter().map(|&v| eval(g, fam, v)).collect();
    KNOWN.into_iter().find(|&f| {
        probes.iter().zip(&got).all(|(&v, &y)| {
            let want = unary_value(f, 0.0, 0.0, v);
            (y - want).abs() <= 2e-5 * want.abs() + 1e-6
        })
    })
}

/// Replace each element-wise family that computes a known activation (a GELU spelled out
/// as `Div`, `Erf`, `Add`, `Mul`, `Mul`, or as eight ops around a `Tanh`; a SiLU or Mish
/// written out) by that one `Unary` on its source, whatever the order and form of its
/// steps: the family is evaluated on probe values and compared with each candidate. A
/// family whose intermediate results are read outside it, or are graph outputs, stays.
/// In f32 this is one pass over the tensor instead of up to eight; in int8 the family
/// became one lookup table anyway. Returns how many families were replaced.
pub fn fuse_known_functions(g: &mut Graph) -> usize {
    let fams = families(g);
    if fams.is_empty() {
        return 0;
    }
    let links = crate::ir::Links::of(g);
    let probes = probes();
    let mut done = 0;
    let mut keys: Vec<usize> = fams.keys().copied().collect();
    keys.sort_unstable();
    for y in keys {
        let fam = &fams[&y];
        let Some(&last) = fam.ops.last() else {
            continue;
        };
        if g.ops[last].outputs.first() != Some(&y) || fam.ops.len() > 16 {
            continue;
        }
        let closed = fam.ops[..fam.ops.len() - 1].iter().all(|&o| {
            g.ops[o].outputs.iter().all(|&t| {
                !g.outputs.contains(&t) && links.readers(t).iter().all(|r| fam.ops.contains(r))
            })
        });
        if !closed {
            continue;
        }
        let Some(f) = known_function(g, fam, &probes) else {
            continue;
        };
        let name = g.ops[last].name.clone();
        g.ops[last] = HOp {
            kind: OpKind::Unary,
            inputs: vec![Some(fam.source)],
            outputs: vec![y],
            params: vec![f as i32, 0, 0],
            name,
        };
        done += 1;
    }
    if done > 0 {
        g.prune();
    }
    done
}

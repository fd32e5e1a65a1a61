//! Exact folding of int8 element-wise chains into one lookup table, after quantization.
//!
//! An int8 tensor computed from one int8 source by per-tensor lookup tables and
//! same-shape Add/Mul/Sub (each operand the source, another such tensor, or a one-element
//! constant) is a function of the source's 256 values. So its op can be one `Lut` on the
//! source whose table is that function, evaluated by running the chain's own ops with
//! the reference kernels on the 256 source values: every intermediate rounding of the
//! model (a QDQ model's own scales included) is kept, and the result is the same bytes as
//! running the chain. Typical chains: a QDQ hard-swish (`Lut` hard-sigmoid, `Mul` with its
//! input, a requantizing `Lut`), `x + f(x)`, `x · sigmoid(x)` with QDQ between.
//!
//! Each folded op becomes one `Lut` and no op is added, so the op count never grows; ops
//! whose outputs nobody reads any more are pruned. Broadcast operands (a squeeze-excitation
//! `Mul` by a per-channel tensor) are not functions of one source and stay as they are.

use std::collections::{BTreeSet, HashMap};

use anyhow::{anyhow, Result};
use cairn_core::emit::{AlignedBytes, QuantSpec};
use cairn_core::{DType, OpKind};

use crate::ir::{Graph, HOp, HTensor};

/// One int8 tensor's recipe: the source it is a function of and the ops that compute it
/// from the source, in graph order.
#[derive(Clone)]
struct Chain {
    source: usize,
    ops: BTreeSet<usize>,
}

fn is_i8_act(g: &Graph, t: usize) -> bool {
    let h = &g.tensors[t];
    h.dtype == DType::I8 && !h.is_const() && matches!(h.quant, QuantSpec::PerTensor { .. })
}

/// A one-element int8 constant (a broadcast scalar operand).
fn is_i8_scalar_const(g: &Graph, t: usize) -> bool {
    let h = &g.tensors[t];
    h.dtype == DType::I8 && h.is_const() && h.numel() == 1
}

/// The chain of `op`'s output, when it is an element-wise function of one source.
fn chain_of(g: &Graph, i: usize, chains: &HashMap<usize, Chain>) -> Option<Chain> {
    let op = &g.ops[i];
    let &[y] = op.outputs.as_slice() else {
        return None;
    };
    if !is_i8_act(g, y) || g.tensors[y].numel() < 2 {
        return None;
    }
    let runtime: Vec<usize> = match op.kind {
        OpKind::Lut => {
            let (Some(Some(x)), Some(Some(t))) = (op.inputs.first(), op.inputs.get(1)) else {
                return None;
            };
            let per_tensor = op.params.first().is_some_and(|&a| a < 0);
            if !per_tensor || g.tensors[*t].numel() != 256 {
                return None;
            }
            vec![*x]
        }
        OpKind::Add | OpKind::Mul | OpKind::Sub => {
            if op.inputs.len() != 2 {
                return None;
            }
            let mut rt = vec![];
            for t in &op.inputs {
                let t = (*t)?;
                if is_i8_scalar_const(g, t) {
                    continue;
                }
                rt.push(t);
            }
            rt
        }
        _ => return None,
    };
    if runtime.is_empty() {
        return None;
    }
    let mut source = None;
    let mut ops = BTreeSet::from([i]);
    for &t in &runtime {
        if !is_i8_act(g, t) || g.tensors[t].shape != g.tensors[y].shape {
            return None;
        }
        let s = match chains.get(&t) {
            Some(c) => {
                ops.extend(c.ops.iter().copied());
                c.source
            }
            None => t,
        };
        if source.is_some_and(|s0| s0 != s) {
            return None;
        }
        source = Some(s);
    }
    Some(Chain {
        source: source?,
        ops,
    })
}

/// The chain's output for each of the source's 256 values (index `v + 128`), from the
/// chain's ops run by the reference kernels on a 256-element copy of each tensor.
fn evaluate(g: &Graph, chain: &Chain, y: usize) -> Result<Vec<i8>> {
    let mut mini = Graph::default();
    let mut ids: HashMap<usize, usize> = HashMap::new();
    let mut map = |mini: &mut Graph, t: usize| -> usize {
        *ids.entry(t).or_insert_with(|| {
            let h = &g.tensors[t];
            let shape = if h.is_const() && h.numel() == 1 {
                vec![1]
            } else if h.is_const() {
                h.shape.clone()
            } else {
                vec![256]
            };
            mini.tensors.push(HTensor {
                name: h.name.clone(),
                dtype: h.dtype,
                shape,
                data: h.data.clone(),
                quant: h.quant.clone(),
                hint: None,
            });
            mini.tensors.len() - 1
        })
    };
    let src = map(&mut mini, chain.source);
    let mut vals: HashMap<usize, AlignedBytes> = HashMap::new();
    let all: Vec<i8> = (-128..=127).collect();
    vals.insert(src, AlignedBytes::from_slice(bytemuck::cast_slice(&all)));
    let mut out = None;
    for &i in &chain.ops {
        let op = &g.ops[i];
        let inputs = op
            .inputs
            .iter()
            .map(|t| t.map(|t| map(&mut mini, t)))
            .collect();
        let o = map(&mut mini, op.outputs[0]);
        let mop = HOp {
            kind: op.kind,
            inputs,
            outputs: vec![o],
            params: op.params.clone(),
            name: op.name.clone(),
        };
        let r = mini
            .run_op(&mop, &|t| vals.get(&t).cloned())?
            .pop()
            .ok_or_else(|| anyhow!("{} gave no output", op.name))?;
        if op.outputs[0] == y {
            out = Some(r.as_slice().to_vec());
        }
        vals.insert(o, r);
    }
    let bytes =
        out.ok_or_else(|| anyhow!("chain of '{}' does not end at it", g.tensors[y].name))?;
    Ok(bytemuck::cast_slice(&bytes).to_vec())
}

/// Fold every int8 element-wise chain of two or more ops into one `Lut` on its source
/// (see the module comment). Returns how many ops the graph lost.
pub fn fold(g: &mut Graph) -> Result<usize> {
    let before = g.ops.len();
    let mut chains: HashMap<usize, Chain> = HashMap::new();
    let mut folds: Vec<(usize, usize, Vec<i8>)> = vec![];
    for i in 0..g.ops.len() {
        let Some(c) = chain_of(g, i, &chains) else {
            continue;
        };
        let y = g.ops[i].outputs[0];
        if c.ops.len() >= 2 {
            let table = evaluate(g, &c, y)?;
            folds.push((i, c.source, table));
        }
        chains.insert(y, c);
    }
    if folds.is_empty() {
        return Ok(0);
    }
    for (i, source, table) in folds {
        let name = g.ops[i].name.clone();
        let t = g.add_const(
            format!("{name}:folded-lut"),
            DType::I8,
            vec![256],
            AlignedBytes::from_slice(bytemuck::cast_slice(&table)),
        );
        let y = g.ops[i].outputs[0];
        g.ops[i] = HOp {
            kind: OpKind::Lut,
            inputs: vec![Some(source), Some(t)],
            outputs: vec![y],
            params: vec![-1],
            name,
        };
    }
    g.prune();
    Ok(before - g.ops.len())
}

//! Transposes pushed down through element-wise ops until they meet their inverse.
//!
//! A model exported from a channels-last framework (tf2onnx) wraps each layout-sensitive
//! op in a Transpose to channels-first and one back, and the element-wise ops between two
//! such ops (a GELU, a residual scale) often sit between a Transpose and its inverse:
//! `Conv → Transpose(NHWC) → Mul → Tanh → … → Transpose(NCHW) → Conv`. Each Transpose is a
//! pass over the tensor. An element-wise op commutes with a Transpose, so the first is
//! moved below the op (`E(T(x)) = T(E(x))`: the op runs on the untransposed tensor), and
//! two Transposes in a row become one (or none, when they cancel). A Transpose moves only
//! when its result has no other reader, so no work is duplicated, and only through ops
//! whose other operands are scalars or the same Transpose of another tensor; the values
//! are unchanged (the same element-wise operations on the same elements).

use cairn_core::OpKind;

use crate::fuse::single_reader;
use crate::ir::{Graph, Links};

/// A Transpose's permutation (`None`: not a Transpose, or malformed).
fn perm(g: &Graph, op: usize) -> Option<Vec<usize>> {
    let o = &g.ops[op];
    if o.kind != OpKind::Transpose || o.outputs.len() != 1 {
        return None;
    }
    let p: Vec<usize> = o.params.iter().map(|&v| v as usize).collect();
    let x = o.inputs.first().copied().flatten()?;
    let mut seen = vec![false; p.len()];
    let ok = p.len() == g.tensors[x].shape.len()
        && p.iter()
            .all(|&v| v < seen.len() && !std::mem::replace(&mut seen[v], true));
    ok.then_some(p)
}

/// Whether `op` is element-wise on its run-time operands (a Unary, or a binary op).
fn elementwise(g: &Graph, op: usize) -> bool {
    let o = &g.ops[op];
    o.outputs.len() == 1
        && match o.kind {
            OpKind::Unary => o.unary_fn().is_some(),
            OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div => o.inputs.len() == 2,
            _ => false,
        }
}

/// Two Transposes in a row: `T(p2)(T(p1)(x))` is `T(q)(x)` with `q[k] = p1[p2[k]]`, and
/// nothing when `q` is the identity (the second's readers read `x`).
fn merge_pair(g: &mut Graph, k: &Links) -> bool {
    for second in 0..g.ops.len() {
        let Some(p2) = perm(g, second) else { continue };
        let Some(mid) = g.ops[second].inputs[0] else {
            continue;
        };
        let Some(first) = k.producer(mid) else {
            continue;
        };
        let Some(p1) = perm(g, first) else { continue };
        if single_reader(g, k, mid) != Some(second) || p1.len() != p2.len() {
            continue;
        }
        let x = g.ops[first].inputs[0].expect("checked");
        let q: Vec<usize> = p2.iter().map(|&i| p1[i]).collect();
        let y = g.ops[second].outputs[0];
        let identity = q.iter().enumerate().all(|(i, &v)| i == v);
        // A graph output can be renamed only through the op that writes x, when x is read
        // by the first Transpose alone.
        let writer = k
            .producer(x)
            .filter(|_| single_reader(g, k, x) == Some(first) && !g.outputs.contains(&x));
        if identity && (!g.outputs.contains(&y) || writer.is_some()) {
            if g.outputs.contains(&y) {
                // The op that wrote x writes y (the same shape) instead.
                let w = writer.expect("checked");
                if g.tensors[y].hint.is_none() {
                    g.tensors[y].hint = g.tensors[x].hint.clone();
                }
                for o in &mut g.ops[w].outputs {
                    if *o == x {
                        *o = y;
                    }
                }
            } else {
                // Cancelled: every reader of y reads x.
                for op in &mut g.ops {
                    for t in op.inputs.iter_mut().flatten() {
                        if *t == y {
                            *t = x;
                        }
                    }
                }
            }
            let (a, b) = (first.min(second), first.max(second));
            g.ops.remove(b);
            g.ops.remove(a);
        } else {
            g.ops[second].inputs[0] = Some(x);
            g.ops[second].params = q.iter().map(|&v| v as i32).collect();
            g.ops.remove(first);
        }
        return true;
    }
    false
}

/// One Transpose moved below the element-wise op that alone reads it (see the module
/// comment).
fn sink_one(g: &mut Graph, k: &Links) -> bool {
    for t in 0..g.ops.len() {
        let Some(p) = perm(g, t) else { continue };
        let y = g.ops[t].outputs[0];
        let Some(e) = single_reader(g, k, y) else {
            continue;
        };
        if !elementwise(g, e) {
            continue;
        }
        // Every operand of E: this Transpose's result, a one-element constant, or the same
        // Transpose of another tensor read by E alone.
        let mut inner = Vec::new();
        let mut ok = true;
        for &op_in in &g.ops[e].inputs {
            let Some(v) = op_in else {
                ok = false;
                break;
            };
            if v == y {
                inner.push((v, g.ops[t].inputs[0].expect("checked"), None));
                continue;
            }
            let h = &g.tensors[v];
            if h.is_const() && h.numel() == 1 {
                inner.push((v, v, None));
                continue;
            }
            let other = k
                .producer(v)
                .filter(|&o| perm(g, o).as_ref() == Some(&p) && single_reader(g, k, v) == Some(e));
            match other {
                Some(o) => inner.push((v, g.ops[o].inputs[0].expect("checked"), Some(o))),
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let x = g.ops[t].inputs[0].expect("checked");
        let out = g.ops[e].outputs[0];
        if g.tensors[out].shape.len() != p.len() {
            continue;
        }
        // E now writes a new tensor in x's layout; the Transpose, placed right after E,
        // writes E's old output.
        let (name, dtype) = (g.ops[e].name.clone(), g.tensors[out].dtype);
        let pre = g.add(
            format!("{name}:before_transpose"),
            dtype,
            g.tensors[x].shape.clone(),
        );
        g.ops[e].inputs = inner.iter().map(|&(_, w, _)| Some(w)).collect();
        g.ops[e].outputs = vec![pre];
        let mut moved = g.ops[t].clone();
        moved.inputs = vec![Some(pre)];
        moved.outputs = vec![out];
        moved.name = name;
        g.ops.insert(e + 1, moved);
        // The Transposes E read are gone (ops after E were not moved by the insert).
        let mut gone: Vec<usize> = inner.iter().filter_map(|&(_, _, o)| o).collect();
        gone.push(t);
        gone.sort_unstable();
        gone.dedup();
        for d in gone.into_iter().rev() {
            g.ops.remove(d);
        }
        return true;
    }
    false
}

/// Sink and merge Transposes until neither applies. A Transpose that reaches no partner
/// stays below the element-wise ops it passed: the same work, in another place (and
/// below a binary op whose operands were both transposed alike, one instead of two).
/// Returns how many Transposes the graph lost.
pub fn sink_transposes(g: &mut Graph) -> usize {
    let count = |g: &Graph| g.ops.iter().filter(|o| o.kind == OpKind::Transpose).count();
    let before = count(g);
    if before == 0 {
        return 0;
    }
    // Each step moves a Transpose one op down or removes one; the bound only guards
    // against a cycle this pass should not have.
    for _ in 0..(4 * before + 64) * 8 {
        let k = Links::of(g);
        if !merge_pair(g, &k) && !sink_one(g, &k) {
            break;
        }
    }
    g.prune();
    before - count(g)
}

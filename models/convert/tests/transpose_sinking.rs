//! Transposes around element-wise ops (a channels-last export's Conv → Transpose → GELU →
//! Transpose → Conv) sink through the ops and cancel against their inverse, or merge with
//! the next Transpose; a binary op whose operands are transposed alike takes one
//! Transpose after it instead of two. A Transpose whose result is read twice stays. The
//! outputs are the same bits (the same element-wise operations on the same elements).

mod common;
use common::{op, NO_ACT};

use cairn_convert::fuse::fuse;
use cairn_convert::Graph;
use cairn_core::op::UnaryFn;
use cairn_core::{DType, OpKind};

const DIMS: [usize; 4] = [1, 3, 5, 7];

fn t_op(g: &mut Graph, x: usize, p: &[usize]) -> usize {
    let s = &g.tensors[x].shape;
    let shape: Vec<usize> = p.iter().map(|&i| s[i]).collect();
    let n = g.tensors.len();
    let y = g.add(format!("t{n}"), DType::F32, shape);
    let params = p.iter().map(|&v| v as i32).collect();
    g.ops.push(op(OpKind::Transpose, &[x], y, params));
    y
}

fn un(g: &mut Graph, f: UnaryFn, x: usize) -> usize {
    let n = g.tensors.len();
    let y = g.add(format!("u{n}"), DType::F32, g.tensors[x].shape.clone());
    g.ops.push(op(OpKind::Unary, &[x], y, vec![f as i32, 0, 0]));
    y
}

fn bin(g: &mut Graph, kind: OpKind, a: usize, b: usize) -> usize {
    let n = g.tensors.len();
    let y = g.add(format!("b{n}"), DType::F32, g.tensors[a].shape.clone());
    g.ops.push(op(kind, &[a, b], y, NO_ACT.to_vec()));
    y
}

fn scalar(g: &mut Graph, v: f32) -> usize {
    let n = g.tensors.len();
    g.add_f32(format!("c{n}"), vec![1], &[v])
}

/// x → T(NHWC) → Mul 0.5 → Tanh, and x → Neg → T(NHWC); Add of the two; T(NCHW) back;
/// with `shared`, the first Transpose's result is also a second output.
fn graph(shared: bool) -> Graph {
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, DIMS.to_vec());
    g.inputs.push(x);
    let nhwc = [0, 2, 3, 1];
    let a = t_op(&mut g, x, &nhwc);
    let h = scalar(&mut g, 0.5);
    let m = bin(&mut g, OpKind::Mul, a, h);
    let th = un(&mut g, UnaryFn::Tanh, m);
    let ng = un(&mut g, UnaryFn::Neg, x);
    let b = t_op(&mut g, ng, &nhwc);
    let s = bin(&mut g, OpKind::Add, th, b);
    let y = t_op(&mut g, s, &[0, 3, 1, 2]);
    g.outputs.push(y);
    if shared {
        g.outputs.push(a);
    }
    g
}

fn transposes(g: &Graph) -> usize {
    g.ops.iter().filter(|o| o.kind == OpKind::Transpose).count()
}

fn input() -> Vec<f32> {
    let seed = common::seed(7);
    let mut s = seed;
    let n: usize = DIMS.iter().product();
    (0..n)
        .map(|_| (common::splitmix(&mut s) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

#[test]
fn transposes_sink_and_cancel() {
    let g = graph(false);
    let x = input();
    let before = common::run_graph(&g, &x);
    let mut f = g.clone();
    fuse(&mut f);
    assert_eq!(transposes(&g), 3);
    assert_eq!(transposes(&f), 0, "{:?}", f.ops);
    let after = common::run_graph(&f, &x);
    let same = before.len() == after.len()
        && before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "CAIRN_SEED={}: outputs differ", common::seed(7));
}

#[test]
fn a_transpose_read_twice_stays() {
    let g = graph(true);
    let mut f = g.clone();
    fuse(&mut f);
    // The shared Transpose stays; the other two still merge into one after the Add.
    assert!(transposes(&f) >= 1, "{:?}", f.ops);
    let x = input();
    let (a, b) = (common::run_graph(&g, &x), common::run_graph(&f, &x));
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
}

//! A 1-D conv exported as a 2-D one between two Reshapes, with its bias and activation
//! after the second (Keras Conv1D through tf2onnx: `ExpandDims → Conv → Squeeze →
//! BiasAdd → Relu`): `fuse` moves the per-channel Add/Mul/Sub and the Relu in front of
//! the Reshape and into the conv, with the same float result; constants that do not run
//! along the channel axis stay where they are. Seeded; `CAIRN_SEED` replays.

mod common;
use common::{op, seed, splitmix, NO_ACT};

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::fuse::fuse;
use cairn_convert::quantize::quantize;
use cairn_convert::Graph;
use cairn_core::op::UnaryFn;
use cairn_core::{DType, OpKind};
fn values(state: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((splitmix(state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

const N: usize = 3;
const C: usize = 6;
const L: usize = 20;
const O: usize = 9;
const K: usize = 3;

/// x [N, C, L] → Reshape [N, C, 1, L] → Conv (1×K, pad 1, no bias) → Reshape [N, O, L]
/// → `kind`(·, constant of `cshape`) → Relu.
fn graph(state: &mut u64, kind: OpKind, cshape: &[usize], conv_first: bool) -> Graph {
    graph_of(state, kind, cshape, conv_first, L)
}

/// [`graph`] with length `l`.
fn graph_of(state: &mut u64, kind: OpKind, cshape: &[usize], conv_first: bool, l: usize) -> Graph {
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![N, C, l]);
    let x4 = g.add("x4", DType::F32, vec![N, C, 1, l]);
    let w = g.add_f32("w", vec![O, C, 1, K], &values(state, O * C * K, 0.5));
    let y4 = g.add("y4", DType::F32, vec![N, O, 1, l]);
    let y = g.add("y", DType::F32, vec![N, O, l]);
    let numel = cshape.iter().product();
    let c = g.add_f32("c", cshape.to_vec(), &values(state, numel, 0.8));
    let z = g.add("z", DType::F32, vec![N, O, l]);
    let out = g.add("out", DType::F32, vec![N, O, l]);
    g.ops.push(op(OpKind::Reshape, &[x], x4, vec![]));
    let mut params = vec![1, 1, 0, 1, 0, 1, 1, 1, 1];
    params.extend(NO_ACT);
    g.ops.push(op(OpKind::Conv, &[x4, w], y4, params));
    g.ops.push(op(OpKind::Reshape, &[y4], y, vec![]));
    let ins = if conv_first { [y, c] } else { [c, y] };
    g.ops.push(op(kind, &ins, z, NO_ACT.to_vec()));
    g.ops.push(op(
        OpKind::Unary,
        &[z],
        out,
        vec![UnaryFn::Relu as i32, 0, 0],
    ));
    g.inputs.push(x);
    g.outputs.push(out);
    g
}

fn run(g: &Graph, x: &[f32]) -> Vec<f32> {
    common::run_graph(g, x)
}

fn kinds(g: &Graph) -> Vec<OpKind> {
    g.ops.iter().map(|o| o.kind).collect()
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{what} at {i}: {a} vs {b}"
        );
    }
}

#[test]
fn a_bias_and_relu_after_the_squeeze_fold_into_the_conv() {
    let seed = seed(31);
    let mut state = seed;
    for (kind, cshape, conv_first) in [
        (OpKind::Add, &[1, O, 1][..], true),
        (OpKind::Add, &[O, 1][..], false),
        (OpKind::Mul, &[1, O, 1][..], false),
        (OpKind::Sub, &[1, O, 1][..], true),
        (OpKind::Add, &[1][..], true),
    ] {
        let mut g = graph(&mut state, kind, cshape, conv_first);
        let x = values(&mut state, N * C * L, 2.0);
        let want = run(&g, &x);
        fuse(&mut g);
        let what = format!("{kind:?} {cshape:?} (CAIRN_SEED={seed})");
        assert_eq!(
            kinds(&g),
            [OpKind::Reshape, OpKind::Conv, OpKind::Reshape],
            "{what}"
        );
        close(&run(&g, &x), &want, &what);
        // All int8.
        let ranges = calibrate(&g, &[vec![x.clone()]], Method::MinMax, |_| {}).unwrap();
        let (_, report) = quantize(&g, &ranges).unwrap();
        assert_eq!(report.f32_ops, Vec::<String>::new(), "{what}");
    }
}

/// A constant along the length axis, a `c − conv`, and a Reshape that moves the channel
/// axis keep the element-wise op where it was (the Relu still may not pass it).
#[test]
fn constants_off_the_channel_axis_stay_after_the_reshape() {
    let seed = seed(32);
    let mut state = seed;
    // (The length axis as long as the channel axis: a constant along it has as many
    // values as channels.)
    for (kind, cshape, conv_first) in [
        (OpKind::Add, &[1, 1, O][..], true),
        (OpKind::Mul, &[O][..], true),
        (OpKind::Sub, &[1, O, 1][..], false),
    ] {
        let mut g = graph_of(&mut state, kind, cshape, conv_first, O);
        let x = values(&mut state, N * C * O, 2.0);
        let want = run(&g, &x);
        fuse(&mut g);
        let what = format!("{kind:?} {cshape:?} (CAIRN_SEED={seed})");
        assert!(kinds(&g).contains(&kind), "{what}: {:?}", kinds(&g));
        close(&run(&g, &x), &want, &what);
    }
    // Conv → Reshape to [N, O·L] (the channel axis merged away) → Relu: not moved.
    let mut g = graph(&mut state, OpKind::Add, &[1, 1, L], true);
    let flat = g.add("flat", DType::F32, vec![N, O * L]);
    let y4 = g.ops[1].outputs[0];
    let y = g.ops[2].outputs[0];
    g.ops[2].outputs[0] = flat;
    g.ops.truncate(3);
    let out = g.add("out2", DType::F32, vec![N, O * L]);
    g.ops.push(op(
        OpKind::Unary,
        &[flat],
        out,
        vec![UnaryFn::Relu as i32, 0, 0],
    ));
    g.outputs = vec![out];
    let _ = (y4, y);
    g.prune();
    fuse(&mut g);
    assert_eq!(
        kinds(&g),
        [
            OpKind::Reshape,
            OpKind::Conv,
            OpKind::Reshape,
            OpKind::Unary
        ],
        "CAIRN_SEED={seed}"
    );
}

//! A per-feature affine op between an activation and a FullyConnected (a Keras `Dense →
//! ReLU → BatchNormalization → Dense` head exports the BN as `Mul` then `Add` after the
//! ReLU): `fuse` folds each into the FullyConnected that reads it, `x·c` into its weight
//! columns and `+ d` / `− d` into its bias, with the same float result. Constants that do
//! not run along the features, an op with a second reader, and an FC that reads the
//! op's output as its weights stay as they are. Seeded; `CAIRN_SEED` replays.

mod common;
use common::{op, seed, splitmix, NO_ACT};

use cairn_convert::fuse::fuse;
use cairn_convert::Graph;
use cairn_core::emit::AlignedBytes;
use cairn_core::op::UnaryFn;
use cairn_core::{DType, OpKind};
use cairn_kernels::host::HostModel;

const M: usize = 5;
const K: usize = 12;
const N: usize = 7;

/// Affine ops in order: kind and constant shape.
type Chain = Vec<(OpKind, Vec<usize>)>;

fn values(state: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((splitmix(state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// x [M, K] → Relu → each `(kind, constant shape)` in turn → FullyConnected [N, K] (+ bias).
/// With `also_out`, the first affine op's result is a second graph output.
fn graph(state: &mut u64, chain: &[(OpKind, Vec<usize>)], also_out: bool) -> Graph {
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![M, K]);
    let r = g.add("r", DType::F32, vec![M, K]);
    g.ops
        .push(op(OpKind::Unary, &[x], r, vec![UnaryFn::Relu as i32, 0, 0]));
    let mut t = r;
    for (i, (kind, cshape)) in chain.iter().enumerate() {
        let numel = cshape.iter().product();
        // Scales spanning orders of magnitude, as a BN's gamma / sqrt(var) can.
        let mut v = values(state, numel, 1.0);
        v.iter_mut()
            .enumerate()
            .for_each(|(j, e)| *e *= 10f32.powi(j as i32 % 4 - 1));
        let c = g.add_f32(format!("c{i}"), cshape.clone(), &v);
        let y = g.add(format!("a{i}"), DType::F32, vec![M, K]);
        g.ops.push(op(*kind, &[t, c], y, NO_ACT.to_vec()));
        if i == 0 && also_out {
            g.outputs.push(y);
        }
        t = y;
    }
    let w = g.add_f32("w", vec![N, K], &values(state, N * K, 0.5));
    let b = g.add_f32("b", vec![N], &values(state, N, 0.5));
    let out = g.add("out", DType::F32, vec![M, N]);
    g.ops
        .push(op(OpKind::FullyConnected, &[t, w, b], out, NO_ACT.to_vec()));
    g.inputs.push(x);
    g.outputs.push(out);
    g
}

fn run(g: &Graph, x: &[f32]) -> Vec<Vec<f32>> {
    let bytes = AlignedBytes::from_slice(&g.to_builder().unwrap().finish().unwrap());
    let mut m = HostModel::new(bytes.as_slice()).unwrap();
    m.run(&[x]).unwrap()
}

fn count(g: &Graph, kind: OpKind) -> usize {
    g.ops.iter().filter(|o| o.kind == kind).count()
}

#[test]
fn affine_ops_fold_into_the_fc_that_reads_them() {
    let seed = seed(0xF01D);
    let mut state = seed ^ 0xF01D;
    use OpKind::{Add, Mul, Sub};
    let cases: Vec<(Chain, bool)> = vec![
        // The BN's Mul then Add, per feature ([K] and [1, K]).
        (vec![(Mul, vec![K]), (Add, vec![K])], true),
        (vec![(Mul, vec![1, K]), (Sub, vec![1, K])], true),
        // A scalar.
        (vec![(Mul, vec![1])], true),
        // Along the rows, not the features: stays.
        (vec![(Mul, vec![M, 1])], false),
    ];
    for (case, (chain, folds)) in cases.iter().enumerate() {
        let g = graph(&mut state, chain, false);
        let x = values(&mut state, M * K, 2.0);
        let want = run(&g, &x);
        let mut fused = g.clone();
        fuse(&mut fused);
        let left = count(&fused, Mul) + count(&fused, Add) + count(&fused, Sub);
        assert_eq!(
            left == 0,
            *folds,
            "CAIRN_SEED={seed} case {case}: {left} ops left"
        );
        let got = run(&fused, &x);
        for (a, b) in want[0].iter().zip(&got[0]) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                "CAIRN_SEED={seed} case {case}: {a} vs {b}"
            );
        }
    }
    // The first op's result is also an output: it stays, and so does everything after.
    let g = graph(&mut state, &[(Mul, vec![K]), (Add, vec![K])], true);
    let mut fused = g.clone();
    fuse(&mut fused);
    assert_eq!(
        count(&fused, Mul),
        1,
        "CAIRN_SEED={seed}: a graph output was folded away"
    );
    let x = values(&mut state, M * K, 2.0);
    let (want, got) = (run(&g, &x), run(&fused, &x));
    for (w, o) in want.iter().zip(&got) {
        for (a, b) in w.iter().zip(o) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                "CAIRN_SEED={seed}: {a} vs {b}"
            );
        }
    }
}

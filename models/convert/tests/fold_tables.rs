//! `fold_tables::fold`: int8 element-wise chains become one lookup table with the same
//! bytes, and what is not a function of one source stays as it was.

mod common;

use cairn_convert::fold_tables;
use cairn_convert::ir::Graph;
use cairn_core::emit::{AlignedBytes, QuantSpec};
use cairn_core::{DType, OpKind};
use common::{op, seed, splitmix};

const SHAPE: [usize; 4] = [1, 4, 6, 8];

fn act(g: &mut Graph, name: &str, shape: &[usize], rng: &mut u64) -> usize {
    let t = g.add(name, DType::I8, shape.to_vec());
    let scale = 0.01 + (splitmix(rng) % 1000) as f32 / 5000.0;
    let zero_point = (splitmix(rng) % 200) as i32 - 100;
    g.tensors[t].quant = QuantSpec::PerTensor { scale, zero_point };
    t
}

fn table(g: &mut Graph, name: &str, rng: &mut u64) -> usize {
    let v: Vec<i8> = (0..256).map(|_| splitmix(rng) as i8).collect();
    g.add_const(
        name,
        DType::I8,
        vec![256],
        AlignedBytes::from_slice(bytemuck::cast_slice(&v)),
    )
}

/// f32 input → Quantize → x, then a hard-swish as a QDQ model spells it (a Lut, a Mul of
/// the Lut with x, a requantizing Lut), an Add of x and the result with a ReLU-like clamp,
/// a Sub by a one-element constant, and a squeeze-excitation Mul by a per-channel tensor
/// (not a function of x alone); every int8 tensor is dequantized to an output.
fn graph(rng: &mut u64) -> (Graph, Vec<usize>) {
    let mut g = Graph::default();
    let input = g.add("in", DType::F32, SHAPE.to_vec());
    g.inputs.push(input);
    let x = act(&mut g, "x", &SHAPE, rng);
    g.ops.push(op(OpKind::Quantize, &[input], x, vec![]));
    let (t1, t2) = (table(&mut g, "t1", rng), table(&mut g, "t2", rng));
    let h = act(&mut g, "h", &SHAPE, rng);
    g.ops.push(op(OpKind::Lut, &[x, t1], h, vec![-1]));
    let m = act(&mut g, "m", &SHAPE, rng);
    g.ops.push(op(OpKind::Mul, &[x, h], m, vec![-128, 127]));
    let y = act(&mut g, "y", &SHAPE, rng);
    g.ops.push(op(OpKind::Lut, &[m, t2], y, vec![-1]));
    let s = act(&mut g, "s", &SHAPE, rng);
    let zp = match g.tensors[s].quant {
        QuantSpec::PerTensor { zero_point, .. } => zero_point,
        _ => unreachable!(),
    };
    g.ops
        .push(op(OpKind::Add, &[y, x], s, vec![zp.max(-128), 127]));
    let c = g.add_const(
        "c",
        DType::I8,
        vec![1, 1, 1, 1],
        AlignedBytes::from_slice(&[37u8]),
    );
    g.tensors[c].quant = QuantSpec::PerTensor {
        scale: 0.05,
        zero_point: 3,
    };
    let d = act(&mut g, "d", &SHAPE, rng);
    g.ops.push(op(OpKind::Sub, &[s, c], d, vec![-128, 127]));
    // The squeeze-excitation operand: a per-channel tensor from the input's first plane.
    let se_shape = [1, 4, 1, 1];
    let pool = act(&mut g, "pool", &se_shape, rng);
    g.ops
        .push(op(OpKind::GlobalAveragePool, &[x], pool, vec![]));
    let e = act(&mut g, "e", &SHAPE, rng);
    g.ops.push(op(OpKind::Mul, &[d, pool], e, vec![-128, 127]));
    let mut outs = vec![];
    for (k, &t) in [h, m, y, s, d, e].iter().enumerate() {
        // Only y, d and e are outputs: h, m and s are read by the chain alone.
        if k == 2 || k >= 4 {
            let o = g.add(format!("out{k}"), DType::F32, SHAPE.to_vec());
            g.ops.push(op(OpKind::Dequantize, &[t], o, vec![]));
            g.outputs.push(o);
            outs.push(o);
        }
    }
    (g, outs)
}

#[test]
fn chains_fold_to_one_table_with_the_same_bytes() {
    let s0 = seed(0x7AB1E5);
    for case in 0..20u64 {
        let s = s0.wrapping_add(case);
        let mut rng = s;
        let (g, outs) = graph(&mut rng);
        let inputs: Vec<f32> = (0..SHAPE.iter().product::<usize>())
            .map(|_| (splitmix(&mut rng) % 2001) as f32 / 100.0 - 10.0)
            .collect();
        let before = g.run_all(std::slice::from_ref(&inputs)).unwrap();
        let mut f = g.clone();
        let lost = fold_tables::fold(&mut f).unwrap();
        // y and d become one Lut each on x; h, m and s are read by nobody else and go.
        assert_eq!(lost, 3, "seed {s}: ops lost");
        let kinds: Vec<OpKind> = f.ops.iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds.iter().filter(|&&k| k == OpKind::Lut).count(),
            2,
            "seed {s}: {kinds:?}"
        );
        assert!(
            !kinds.contains(&OpKind::Add) && !kinds.contains(&OpKind::Sub),
            "seed {s}: {kinds:?}"
        );
        // The squeeze-excitation Mul reads a per-channel tensor: it stays.
        assert_eq!(
            kinds.iter().filter(|&&k| k == OpKind::Mul).count(),
            1,
            "seed {s}: {kinds:?}"
        );
        let after = f.run_all(&[inputs]).unwrap();
        for (k, &o) in outs.iter().enumerate() {
            let o2 = f.outputs[k];
            assert_eq!(
                before[&o].as_slice(),
                after[&o2].as_slice(),
                "seed {s}: output {k} differs after folding"
            );
        }
    }
}

#[test]
fn nothing_to_fold_leaves_the_graph_alone() {
    let mut rng = seed(3);
    let (mut g, _) = graph(&mut rng);
    // Keep only the Quantize and the first Lut: a single table is not a chain.
    g.ops.truncate(2);
    let h = g.ops[1].outputs[0];
    g.outputs = vec![h];
    let n = g.ops.len();
    assert_eq!(fold_tables::fold(&mut g).unwrap(), 0);
    assert_eq!(g.ops.len(), n);
}

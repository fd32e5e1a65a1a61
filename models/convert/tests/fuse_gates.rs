//! `x · gate(x)` becomes one element-wise function of `x` (so one int8 lookup table, not a
//! float island): `Mul(x, HardSigmoid(x; a, b))` with any a, b, `Mul(x, Sigmoid(x))`, with
//! the gate as either operand; and `Mul(c, x)` with the constant first is put in the
//! `Mul(x, c)` form the lookup tables need. Seeded inputs; `CAIRN_SEED` replays.

mod common;
use common::{op, NO_ACT};

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::fuse::fuse;
use cairn_convert::quantize::quantize;
use cairn_convert::Graph;
use cairn_core::op::UnaryFn;
use cairn_core::{DType, OpKind};
/// x → gate(x) → Mul (gate first or second), n values.
fn gated(gate: UnaryFn, a: f32, b: f32, gate_first: bool, n: usize) -> Graph {
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![1, n]);
    let h = g.add("h", DType::F32, vec![1, n]);
    let y = g.add("y", DType::F32, vec![1, n]);
    let params = vec![gate as i32, a.to_bits() as i32, b.to_bits() as i32];
    g.ops.push(op(OpKind::Unary, &[x], h, params));
    let ins = if gate_first { [h, x] } else { [x, h] };
    g.ops.push(op(OpKind::Mul, &ins, y, NO_ACT.to_vec()));
    g.inputs.push(x);
    g.outputs.push(y);
    g
}

fn seeded_inputs(n: usize) -> (u64, Vec<f32>) {
    let seed = std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(41u64);
    let mut s = seed;
    let x = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 12.0 - 6.0
        })
        .collect();
    (seed, x)
}

fn run(g: &Graph, x: &[f32]) -> Vec<f32> {
    common::run_graph(g, x)
}

#[test]
fn x_times_its_gate_is_one_lookup_table() {
    let n = 256;
    let (seed, x) = seeded_inputs(n);
    let cases = [
        (UnaryFn::HardSigmoid, 0.2, 0.5, UnaryFn::HardSwishAB),
        (UnaryFn::Sigmoid, 0.0, 0.0, UnaryFn::Silu),
    ];
    for (gate, a, b, fused) in cases {
        for gate_first in [false, true] {
            let mut g = gated(gate, a, b, gate_first, n);
            let want = run(&g, &x);
            assert!(fuse(&mut g) >= 1, "{gate:?}: nothing fused");
            assert_eq!(g.ops.len(), 1, "{gate:?}: {:?}", g.ops);
            assert_eq!(g.ops[0].params[0], fused as i32);
            // The fused f32 function is the product it replaced, bit for bit.
            assert_eq!(run(&g, &x), want, "{gate:?} (CAIRN_SEED={seed})");
            let ranges = calibrate(&g, &[vec![x.clone()]], Method::MinMax, |_| {}).unwrap();
            let (q, report) = quantize(&g, &ranges).unwrap();
            assert_eq!(report.f32_ops, Vec::<String>::new(), "{gate:?}");
            assert!(q.ops.iter().any(|o| o.kind == OpKind::Lut), "{gate:?}");
            // Within an output step plus the input step's effect (slope ≤ 1.1 here).
            let step = |v: &[f32]| {
                let (lo, hi) = v
                    .iter()
                    .fold((0f32, 0f32), |(l, h), &e| (l.min(e), h.max(e)));
                (hi - lo) / 255.0
            };
            let tol = step(&want) + 1.1 * step(&x);
            for (i, (got, w)) in run(&q, &x).iter().zip(&want).enumerate() {
                assert!(
                    (got - w).abs() <= tol,
                    "{gate:?} x={} int8 {got} f32 {w} (CAIRN_SEED={seed})",
                    x[i]
                );
            }
        }
    }
}

#[test]
fn a_constant_first_operand_becomes_a_lookup_table() {
    let n = 64;
    let (seed, x) = seeded_inputs(n);
    let mut g = Graph::default();
    let xt = g.add("x", DType::F32, vec![1, n]);
    let c = g.add_f32("c", vec![1], &[0.75]);
    let y = g.add("y", DType::F32, vec![1, n]);
    g.ops.push(op(OpKind::Mul, &[c, xt], y, NO_ACT.to_vec()));
    g.inputs.push(xt);
    g.outputs.push(y);
    fuse(&mut g);
    let ranges = calibrate(&g, &[vec![x.clone()]], Method::MinMax, |_| {}).unwrap();
    let (q, report) = quantize(&g, &ranges).unwrap();
    assert_eq!(report.f32_ops, Vec::<String>::new(), "CAIRN_SEED={seed}");
    assert!(q.ops.iter().any(|o| o.kind == OpKind::Lut));
}

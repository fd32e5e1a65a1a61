//! The int8 forms of the newer ops, on seeded random inputs (`CAIRN_SEED` replays):
//! the unary functions become lookup tables whose output is the function of the
//! dequantized input, requantized; int8 Gather and Tile move values without changing them.

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::quantize::quantize;
use cairn_convert::Graph;
use cairn_core::emit::AlignedBytes;
use cairn_core::op::UnaryFn;
use cairn_core::{DType, OpKind};
use cairn_kernels::host::HostModel;
use cairn_kernels::unary_value;

/// SplitMix64 → uniform f32 in [lo, hi).
fn uniform(state: &mut u64, lo: f32, hi: f32) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
}

fn unary_graph(f: UnaryFn, a: f32, n: usize) -> Graph {
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![1, n]);
    let y = g.add("y", DType::F32, vec![1, n]);
    g.ops.push(cairn_convert::ir::HOp {
        kind: OpKind::Unary,
        inputs: vec![Some(x)],
        outputs: vec![y],
        params: vec![f as i32, a.to_bits() as i32, 0],
        name: format!("{f:?}"),
    });
    g.inputs.push(x);
    g.outputs.push(y);
    g
}

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14u64)
}

/// Calibrate on `x`, quantize, and run the int8 model: (int8 ops, output).
fn run_int8(g: &Graph, x: &[f32]) -> (usize, Vec<f32>) {
    let ranges = calibrate(g, &[vec![x.to_vec()]], Method::MinMax, |_| {}).unwrap();
    let (q, report) = quantize(g, &ranges).unwrap();
    let bytes = AlignedBytes::from_slice(&q.to_builder().unwrap().finish().unwrap());
    let mut m = HostModel::new(bytes.as_slice()).unwrap();
    (report.int8_ops, m.run(&[x]).unwrap().remove(0))
}

/// x [4, 6] → Gather(axis 1, indices [3, −1, 0, 3]) → Tile to [8, 8].
fn gather_tile_graph() -> Graph {
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![4, 6]);
    let idx: Vec<i32> = vec![3, -1, 0, 3];
    let it = g.add_const(
        "idx",
        DType::I32,
        vec![4],
        AlignedBytes::from_slice(bytemuck::cast_slice(&idx)),
    );
    let gathered = g.add("gathered", DType::F32, vec![4, 4]);
    let y = g.add("y", DType::F32, vec![8, 8]);
    let op = |kind, inputs, outputs, params| cairn_convert::ir::HOp {
        kind,
        inputs,
        outputs,
        params,
        name: format!("{kind:?}"),
    };
    g.ops.push(op(
        OpKind::Gather,
        vec![Some(x), Some(it)],
        vec![gathered],
        vec![1, 0],
    ));
    g.ops
        .push(op(OpKind::Tile, vec![Some(gathered)], vec![y], vec![]));
    g.inputs.push(x);
    g.outputs.push(y);
    g
}

#[test]
fn int8_gather_and_tile_move_values_unchanged() {
    let seed = seed();
    let mut state = seed;
    let x: Vec<f32> = (0..24).map(|_| uniform(&mut state, -3.0, 5.0)).collect();
    let g = gather_tile_graph();
    let want = g.run_all(std::slice::from_ref(&x)).unwrap()[&g.outputs[0]].clone();
    let want: &[f32] = bytemuck::cast_slice(want.as_slice());
    let (int8_ops, got) = run_int8(&g, &x);
    assert_eq!(int8_ops, 2, "Gather and Tile stay f32 (CAIRN_SEED={seed})");
    // One quantization of the input, nothing else: within half an input step.
    let step = 8.0 / 255.0;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= step * 0.5 + 1e-6,
            "y[{i}] = {a}, f32 {b} (CAIRN_SEED={seed})"
        );
    }
}

#[test]
fn new_unary_functions_become_exact_lookup_tables() {
    let seed = seed();
    let cases = [
        (UnaryFn::Reciprocal, 0.0, 0.5, 4.0),
        (UnaryFn::Log, 0.0, 0.1, 8.0),
        (UnaryFn::Sin, 0.0, -4.0, 4.0),
        (UnaryFn::Cos, 0.0, -4.0, 4.0),
        (UnaryFn::Pow, 3.0, -2.0, 2.0),
        (UnaryFn::Softplus, 0.0, -6.0, 6.0),
        (UnaryFn::Elu, 1.0, -4.0, 4.0),
        (UnaryFn::Mish, 0.0, -4.0, 4.0),
    ];
    let n = 512;
    for (f, a, lo, hi) in cases {
        let mut state = seed;
        let x: Vec<f32> = (0..n).map(|_| uniform(&mut state, lo, hi)).collect();
        let g = unary_graph(f, a, n);
        let ranges = calibrate(&g, &[vec![x.clone()]], Method::MinMax, |_| {}).unwrap();
        let (q, report) = quantize(&g, &ranges).unwrap();
        assert_eq!(report.int8_ops, 1, "{f:?}: not quantized (seed {seed})");
        assert!(
            q.ops.iter().any(|o| o.kind == OpKind::Lut),
            "{f:?}: no table"
        );
        let bytes = AlignedBytes::from_slice(&q.to_builder().unwrap().finish().unwrap());
        let mut m = HostModel::new(bytes.as_slice()).unwrap();
        let y = m.run(&[&x]).unwrap().remove(0);
        // The output step of the calibrated range bounds the table's rounding; the
        // input's quantization moves x by up to half an input step.
        let exact: Vec<f32> = x.iter().map(|&v| unary_value(f, a, 0.0, v)).collect();
        let range = |v: &[f32]| {
            let (mn, mx) = v
                .iter()
                .fold((0.0f32, 0.0f32), |(l, h), &e| (l.min(e), h.max(e)));
            mx - mn
        };
        let (step_x, step_y) = (range(&x) / 255.0, range(&exact) / 255.0);
        for (i, (&got, &want)) in y.iter().zip(&exact).enumerate() {
            let v = x[i];
            let slope = (unary_value(f, a, 0.0, v + step_x) - unary_value(f, a, 0.0, v - step_x))
                .abs()
                / 2.0;
            let tol = step_y + slope;
            assert!(
                (got - want).abs() <= tol,
                "{f:?}({v}) = {got}, f32 {want}, tolerance {tol} (CAIRN_SEED={seed})"
            );
        }
    }
}

#[test]
fn int8_reduce_max_and_min_select_values_unchanged() {
    use cairn_core::op::ReduceFn;
    let seed = seed();
    let mut state = seed ^ 0x5EED;
    let x: Vec<f32> = (0..60).map(|_| uniform(&mut state, -2.0, 6.0)).collect();
    for f in [ReduceFn::Max, ReduceFn::Min] {
        let mut g = Graph::default();
        let xt = g.add("x", DType::F32, vec![3, 5, 4]);
        let y = g.add("y", DType::F32, vec![5]);
        g.ops.push(cairn_convert::ir::HOp {
            kind: OpKind::Reduce,
            inputs: vec![Some(xt)],
            outputs: vec![y],
            params: vec![f as i32, 0b101, 0, 0],
            name: format!("{f:?}"),
        });
        g.inputs.push(xt);
        g.outputs.push(y);
        let want = g.run_all(std::slice::from_ref(&x)).unwrap()[&y].clone();
        let want: &[f32] = bytemuck::cast_slice(want.as_slice());
        let (int8_ops, got) = run_int8(&g, &x);
        assert_eq!(int8_ops, 1, "{f:?} stayed f32 (CAIRN_SEED={seed})");
        let step = 8.0 / 255.0;
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= step * 0.5 + 1e-6,
                "{f:?} y[{i}] = {a}, f32 {b} (CAIRN_SEED={seed})"
            );
        }
    }
}

/// x → Less(x, 0.5) → Where(mask, Relu(x), −x): the i32 mask and the f32 islands around
/// it survive calibration and quantization, and the result stays within input steps.
#[test]
fn masks_flow_through_int8_models() {
    use cairn_core::op::BinaryFn;
    let seed = seed();
    let mut state = seed ^ 0xA5;
    let x: Vec<f32> = (0..64).map(|_| uniform(&mut state, -4.0, 4.0)).collect();
    let mut g = Graph::default();
    let xt = g.add("x", DType::F32, vec![8, 8]);
    let half = g.add_f32("half", vec![], &[0.5]);
    let mask = g.add("mask", DType::I32, vec![8, 8]);
    let relu = g.add("relu", DType::F32, vec![8, 8]);
    let neg = g.add("neg", DType::F32, vec![8, 8]);
    let y = g.add("y", DType::F32, vec![8, 8]);
    let op = |kind, inputs, outputs, params| cairn_convert::ir::HOp {
        kind,
        inputs,
        outputs,
        params,
        name: format!("{kind:?}"),
    };
    let less = vec![BinaryFn::Less as i32];
    g.ops.push(op(
        OpKind::Binary,
        vec![Some(xt), Some(half)],
        vec![mask],
        less,
    ));
    g.ops
        .push(op(OpKind::Unary, vec![Some(xt)], vec![relu], vec![1, 0, 0]));
    g.ops
        .push(op(OpKind::Unary, vec![Some(xt)], vec![neg], vec![12, 0, 0]));
    let inputs = vec![Some(mask), Some(relu), Some(neg)];
    g.ops.push(op(OpKind::Where, inputs, vec![y], vec![]));
    g.inputs.push(xt);
    g.outputs.push(y);
    let (int8_ops, got) = run_int8(&g, &x);
    assert!(
        int8_ops >= 2,
        "the unary ops stayed f32 (CAIRN_SEED={seed})"
    );
    for (i, (&a, &v)) in got.iter().zip(&x).enumerate() {
        let want = if v < 0.5 { v.max(0.0) } else { -v };
        // Rounding v to the input grid can move it across 0.5: allow that and a step.
        let step = 8.0 / 255.0;
        let near_edge = (v - 0.5).abs() <= step;
        assert!(
            near_edge || (a - want).abs() <= 1.5 * step,
            "y[{i}] = {a} for x = {v}, f32 {want} (CAIRN_SEED={seed})"
        );
    }
}

/// int8 ArgMax compares the stored integers: the f32 index, except where the two largest
/// values fall within one input step of each other.
#[test]
fn int8_argmax_matches_f32_away_from_ties() {
    use cairn_core::op::ReduceFn;
    let seed = seed();
    let mut state = seed ^ 0xA1;
    let x: Vec<f32> = (0..80).map(|_| uniform(&mut state, -4.0, 4.0)).collect();
    let mut g = Graph::default();
    let xt = g.add("x", DType::F32, vec![8, 10]);
    let y = g.add("y", DType::I32, vec![8]);
    g.ops.push(cairn_convert::ir::HOp {
        kind: OpKind::Reduce,
        inputs: vec![Some(xt)],
        outputs: vec![y],
        params: vec![ReduceFn::ArgMax as i32, 0b10, 0, 0],
        name: "argmax".into(),
    });
    g.inputs.push(xt);
    g.outputs.push(y);
    let (int8_ops, got) = run_int8(&g, &x);
    assert_eq!(int8_ops, 1, "ArgMax stayed f32 (CAIRN_SEED={seed})");
    let step = 8.0 / 255.0;
    for (r, row) in x.chunks(10).enumerate() {
        let mut sorted = row.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let best = row.iter().position(|&v| v == sorted[0]).unwrap();
        assert!(
            sorted[0] - sorted[1] <= step || got[r] as usize == best,
            "row {r}: int8 index {}, f32 index {best} (CAIRN_SEED={seed})",
            got[r]
        );
    }
}

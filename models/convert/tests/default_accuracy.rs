//! What the default calibrated conversion does for accuracy without any flag: an
//! element-wise chain on one tensor (a tanh-GELU spelled out) is one lookup table; a
//! range read only by a Relu through a Reshape drops the codes the Relu throws away; a
//! square root of a power spectrum reads its power in f32 (an f32 island), while the rest
//! stays int8. Seeded inputs; `CAIRN_SEED` replays.

mod common;
use common::{op, NO_ACT};

use cairn_convert::calibrate::{calibrate, narrow_to_clamps, Method};
use cairn_convert::quantize::quantize;
use cairn_convert::sensitive::keep_sensitive_f32;
use cairn_convert::Graph;
use cairn_core::emit::AlignedBytes;
use cairn_core::op::UnaryFn;
use cairn_core::{DType, OpKind};
use cairn_kernels::host::HostModel;

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026)
}

fn uniform(s: &mut u64, lo: f32, hi: f32) -> f32 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    lo + (hi - lo) * ((*s >> 40) as f32 / (1u64 << 24) as f32)
}

fn unary(f: UnaryFn, a: f32) -> Vec<i32> {
    vec![f as i32, a.to_bits() as i32, 0]
}

fn run(g: &Graph, x: &[&[f32]]) -> Vec<f32> {
    let bytes = AlignedBytes::from_slice(&g.to_builder().unwrap().finish().unwrap());
    let mut m = HostModel::new(bytes.as_slice()).unwrap();
    m.run(x).unwrap().remove(0)
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let e: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let n: f32 = b.iter().map(|y| y * y).sum();
    (e / n).sqrt()
}

/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as exporters write it.
fn gelu_graph(n: usize) -> Graph {
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![1, n]);
    let t: Vec<usize> = (0..7)
        .map(|k| g.add(format!("t{k}"), DType::F32, vec![1, n]))
        .collect();
    let y = g.add("y", DType::F32, vec![1, n]);
    let c1 = g.add_f32("c1", vec![], &[0.044715]);
    let c2 = g.add_f32("c2", vec![], &[0.797_884_6]);
    let one = g.add_f32("one", vec![], &[1.0]);
    let half = g.add_f32("half", vec![], &[0.5]);
    g.ops
        .push(op(OpKind::Unary, &[x], t[0], unary(UnaryFn::Pow, 3.0)));
    g.ops
        .push(op(OpKind::Mul, &[t[0], c1], t[1], NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Add, &[x, t[1]], t[2], NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Mul, &[t[2], c2], t[3], NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Unary, &[t[3]], t[4], unary(UnaryFn::Tanh, 0.0)));
    g.ops
        .push(op(OpKind::Add, &[t[4], one], t[5], NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Mul, &[x, t[5]], t[6], NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Mul, &[t[6], half], y, NO_ACT.to_vec()));
    g.inputs.push(x);
    g.outputs.push(y);
    g
}

#[test]
fn a_spelled_out_gelu_is_one_lookup_table() {
    let s0 = seed();
    let mut s = s0;
    let n = 512;
    let g = gelu_graph(n);
    let calib: Vec<Vec<Vec<f32>>> = (0..4)
        .map(|_| vec![(0..n).map(|_| uniform(&mut s, -8.0, 12.0)).collect()])
        .collect();
    let ranges = calibrate(&g, &calib, Method::MinMax, |_| {}).unwrap();
    let (q, rep) = quantize(&g, &ranges).unwrap();
    assert!(rep.f32_ops.is_empty(), "CAIRN_SEED={s0}: {:?}", rep.f32_ops);
    let kinds: Vec<OpKind> = q.ops.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds.iter().filter(|&&k| k == OpKind::Lut).count(),
        1,
        "CAIRN_SEED={s0}: {kinds:?}"
    );
    let x: Vec<f32> = (0..n).map(|_| uniform(&mut s, -8.0, 12.0)).collect();
    let want = run(&g, &[&x]);
    let got = run(&q, &[&x]);
    // One rounding of the input and one of the output: the output step is 20/255, and
    // GELU's slope is at most about 1.13, so within two output steps everywhere.
    let step = (ranges[&g.outputs[0]].1 - ranges[&g.outputs[0]].0.min(0.0)) / 255.0;
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 2.0 * step,
            "CAIRN_SEED={s0}: x={} int8 {a} float {b}",
            x[i]
        );
    }
}

#[test]
fn a_relu_behind_a_reshape_narrows_its_input_range() {
    let s0 = seed();
    let mut s = s0;
    let n = 256;
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![1, n]);
    let r = g.add("r", DType::F32, vec![1, 1, n]);
    let y = g.add("y", DType::F32, vec![1, 1, n]);
    g.ops.push(op(OpKind::Reshape, &[x], r, vec![]));
    g.ops
        .push(op(OpKind::Unary, &[r], y, unary(UnaryFn::Relu, 0.0)));
    g.inputs.push(x);
    g.outputs.push(y);
    // Mostly negative, as a conv before a Relu often is; the positive part is small.
    let gen = |s: &mut u64| -> Vec<f32> { (0..n).map(|_| uniform(s, -40.0, 4.0)).collect() };
    let calib: Vec<Vec<Vec<f32>>> = (0..4).map(|_| vec![gen(&mut s)]).collect();
    let mut ranges = calibrate(&g, &calib, Method::MinMax, |_| {}).unwrap();
    let xin = gen(&mut s);
    let want = run(&g, &[&xin]);
    let (q0, _) = quantize(&g, &ranges).unwrap();
    let before = rel(&run(&q0, &[&xin]), &want);
    assert!(narrow_to_clamps(&g, &mut ranges) >= 1, "CAIRN_SEED={s0}");
    assert_eq!(ranges[&x].0, 0.0, "CAIRN_SEED={s0}: {:?}", ranges[&x]);
    assert_eq!(ranges[&r].0, 0.0, "CAIRN_SEED={s0}: {:?}", ranges[&r]);
    let (q1, _) = quantize(&g, &ranges).unwrap();
    let got = run(&q1, &[&xin]);
    let after = rel(&got, &want);
    // The Relu is exact on the narrowed codes: within half a step of the new scale.
    let step = ranges[&y].1 / 255.0;
    for (a, b) in got.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 0.5 * step + 1e-6,
            "CAIRN_SEED={s0}: {a} vs {b}"
        );
    }
    assert!(after < before / 4.0, "CAIRN_SEED={s0}: {after} vs {before}");
}

/// |re + i·im| = Sqrt(re² + im²), then a scale: a spectrum of quiet bins (0.01–1) with
/// a few loud ones (1–20), as a window of speech has.
#[test]
fn a_square_root_of_a_power_reads_it_in_f32() {
    let s0 = seed();
    let mut s = s0;
    let n = 512;
    let mut g = Graph::default();
    let re = g.add("re", DType::F32, vec![1, n]);
    let im = g.add("im", DType::F32, vec![1, n]);
    let t: Vec<usize> = (0..4)
        .map(|k| g.add(format!("t{k}"), DType::F32, vec![1, n]))
        .collect();
    let y = g.add("y", DType::F32, vec![1, n]);
    let two = g.add_f32("two", vec![], &[2.0]);
    g.ops
        .push(op(OpKind::Mul, &[re, re], t[0], NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Mul, &[im, im], t[1], NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Add, &[t[0], t[1]], t[2], NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Unary, &[t[2]], t[3], unary(UnaryFn::Sqrt, 0.0)));
    g.ops
        .push(op(OpKind::Mul, &[t[3], two], y, NO_ACT.to_vec()));
    g.inputs.extend([re, im]);
    g.outputs.push(y);
    let gen = |s: &mut u64| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let m = if i % 64 == 0 {
                    10f32.powf(uniform(s, 0.0, 1.3))
                } else {
                    10f32.powf(uniform(s, -2.0, 0.0))
                };
                if uniform(s, 0.0, 1.0) < 0.5 {
                    -m
                } else {
                    m
                }
            })
            .collect()
    };
    let calib: Vec<Vec<Vec<f32>>> = (0..4).map(|_| vec![gen(&mut s), gen(&mut s)]).collect();
    let mut ranges = calibrate(&g, &calib, Method::MinMax, |_| {}).unwrap();
    let (a, b) = (gen(&mut s), gen(&mut s));
    let want = run(&g, &[&a, &b]);
    let (q0, _) = quantize(&g, &ranges).unwrap();
    let before = rel(&run(&q0, &[&a, &b]), &want);
    let islands = keep_sensitive_f32(&g, &calib, &mut ranges, 0.05)
        .unwrap()
        .islands;
    assert_eq!(islands.len(), 1, "CAIRN_SEED={s0}: int8 error {before}");
    assert!(
        islands[0].after < islands[0].before / 2.0,
        "CAIRN_SEED={s0}"
    );
    // The power is f32 now; the inputs and the result stay int8.
    assert!(!ranges.contains_key(&t[2]), "CAIRN_SEED={s0}");
    assert!(
        ranges.contains_key(&re) && ranges.contains_key(&y),
        "CAIRN_SEED={s0}"
    );
    let (q1, rep) = quantize(&g, &ranges).unwrap();
    let after = rel(&run(&q1, &[&a, &b]), &want);
    assert!(rep.int8_ops >= 1, "CAIRN_SEED={s0}: {:?}", rep.f32_ops);
    assert!(
        before > 0.05 && after < before / 2.0,
        "CAIRN_SEED={s0}: error {after} with the island, {before} without"
    );
}

/// A classifier's last FC and its sigmoid (0.1% of the MACs here) stay f32 by default:
/// a calibration set that only saw negative logits would otherwise cap the probability
/// below 0.5 and flip every positive decision.
#[test]
fn the_decision_layer_stays_f32_by_default() {
    use cairn_convert::sensitive::default_passes;
    let s0 = seed();
    let mut s = s0;
    let (k1, n1) = (512usize, 1024usize);
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![1, k1]);
    let h = g.add("h", DType::F32, vec![1, n1]);
    let z = g.add("z", DType::F32, vec![1, 1]);
    let y = g.add("y", DType::F32, vec![1, 1]);
    let w1: Vec<f32> = (0..k1 * n1)
        .map(|_| uniform(&mut s, -1.0, 1.0) / (k1 as f32).sqrt())
        .collect();
    let w1 = g.add_f32("w1", vec![n1, k1], &w1);
    let w2: Vec<f32> = (0..n1).map(|_| uniform(&mut s, -1.0, 1.0)).collect();
    let w2 = g.add_f32("w2", vec![1, n1], &w2);
    g.ops
        .push(op(OpKind::FullyConnected, &[x, w1], h, NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::FullyConnected, &[h, w2], z, NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Unary, &[z], y, unary(UnaryFn::Sigmoid, 0.0)));
    g.inputs.push(x);
    g.outputs.push(y);
    let calib: Vec<Vec<Vec<f32>>> = (0..4)
        .map(|_| vec![(0..k1).map(|_| uniform(&mut s, -1.0, 1.0)).collect()])
        .collect();
    let mut ranges = calibrate(&g, &calib, Method::MinMax, |_| {}).unwrap();
    let mut notes = Vec::new();
    default_passes(&g, &calib, &mut ranges, 0.05, &mut notes).unwrap();
    assert!(
        !ranges.contains_key(&z) && !ranges.contains_key(&y) && ranges.contains_key(&h),
        "CAIRN_SEED={s0}: {notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("decision layer")),
        "CAIRN_SEED={s0}: {notes:?}"
    );
    let (_, rep) = quantize(&g, &ranges).unwrap();
    assert_eq!(rep.int8_ops, 1, "CAIRN_SEED={s0}: {:?}", rep.f32_ops);
}

//! A PRelu (or LeakyRelu) that alone reads an int8 Conv goes into the conv's
//! requantization (a second row of multipliers): one int8 op, rounded once at the
//! activation's range. Rounded at the conv's own range first (a range the negative side
//! dominates), the positive outputs lose most of their steps. Seeded inputs; `CAIRN_SEED`
//! replays.

mod common;
use common::op;

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::ir::Hint;
use cairn_convert::quantize::quantize;
use cairn_convert::Graph;
use cairn_core::emit::AlignedBytes;
use cairn_core::op::{conv, UnaryFn};
use cairn_core::{DType, OpKind};
use cairn_kernels::host::HostModel;

const C: usize = 4;
const OC: usize = 8;
const H: usize = 10;

fn uniform(s: &mut u64, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * ((common::splitmix(s) >> 40) as f32 / (1u64 << 24) as f32)
}

/// x [1, C, H, H] → Conv 3×3 (pad 1, biases well below zero) → PRelu (slope per channel,
/// 0.05–0.1; with `leaky`, a LeakyRelu of 0.1) → y; with `tap`, the conv's output is a
/// graph output too.
fn conv_prelu(s: &mut u64, tap: bool, leaky: bool) -> Graph {
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![1, C, H, H]);
    let c = g.add("c", DType::F32, vec![1, OC, H, H]);
    let y = g.add("y", DType::F32, vec![1, OC, H, H]);
    // Weights on their int8 grid (step 0.3/127, each channel's first weight the largest),
    // so the conv's int8 sums are exact and only the output is rounded.
    let w: Vec<f32> = (0..OC * C * 9)
        .map(|i| {
            let j = if i % (C * 9) == 0 {
                127
            } else {
                (common::splitmix(s) % 255) as i32 - 127
            };
            j as f32 * (0.3 / 127.0)
        })
        .collect();
    let b: Vec<f32> = (0..OC).map(|_| uniform(s, -4.0, -2.0)).collect();
    let slope: Vec<f32> = (0..OC).map(|_| uniform(s, 0.05, 0.1)).collect();
    let wt = g.add_f32("w", vec![OC, C, 3, 3], &w);
    let bt = g.add_f32("b", vec![OC], &b);
    let st = g.add_f32("slope", vec![1, OC, 1, 1], &slope);
    let (params, no_clamp) = unclamped();
    g.ops.push(op(OpKind::Conv, &[x, wt, bt], c, params));
    if leaky {
        let alpha = 0.1f32.to_bits() as i32;
        let f = UnaryFn::LeakyRelu as i32;
        g.ops.push(op(OpKind::Unary, &[c], y, vec![f, alpha, 0]));
    } else {
        g.ops.push(op(OpKind::PRelu, &[c, st], y, no_clamp));
    }
    g.inputs = vec![x];
    g.outputs = if tap { vec![y, c] } else { vec![y] };
    g
}

/// A 3×3 stride-1 pad-1 conv's params with no output clamp, and a PRelu's (no clamp).
fn unclamped() -> (Vec<i32>, Vec<i32>) {
    let mut params = vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
    params[conv::ACT_LO] = f32::NEG_INFINITY.to_bits() as i32;
    params[conv::ACT_HI] = f32::INFINITY.to_bits() as i32;
    let no_clamp = vec![params[conv::ACT_LO], params[conv::ACT_HI]];
    (params, no_clamp)
}

/// Input step: every sample is on the int8 grid of the calibrated range [−128, 127]·X_STEP
/// (each sample holds both ends).
const X_STEP: f32 = 0.02;

fn sample(s: &mut u64) -> Vec<Vec<f32>> {
    let mut v: Vec<f32> = (0..C * H * H)
        .map(|_| ((common::splitmix(s) % 256) as i32 - 128) as f32 * X_STEP)
        .collect();
    v[0] = -128.0 * X_STEP;
    v[1] = 127.0 * X_STEP;
    vec![v]
}

/// (int8 graph's op kinds with a conv's count of multipliers, the largest error of y over `calib`
/// in steps of y's int8 scale).
fn int8(g: &Graph, calib: &[Vec<Vec<f32>>]) -> (Vec<(OpKind, usize)>, f32) {
    let ranges = calibrate(g, calib, Method::MinMax, |_| {}).unwrap();
    let (q, rep) = quantize(g, &ranges).unwrap();
    assert!(rep.f32_ops.is_empty(), "every op int8: {:?}", rep.f32_ops);
    let kinds = q
        .ops
        .iter()
        .map(|o| {
            // A conv's multipliers: OC, or 2·OC with a PRelu folded in.
            let rq = (o.kind == OpKind::Conv).then(|| q.tensors[o.inputs[3].unwrap()].numel());
            (o.kind, rq.unwrap_or(0))
        })
        .collect();
    let (lo, hi) = ranges[&g.outputs[0]];
    let step = (hi.max(0.0) - lo.min(0.0)) / 255.0;
    let bytes = AlignedBytes::from_slice(&q.to_builder().unwrap().finish().unwrap());
    let mut m = HostModel::new(bytes.as_slice()).unwrap();
    let mut worst = 0.0f32;
    for x in calib {
        let want = g.run_all(x).unwrap();
        let want: &[f32] = bytemuck::cast_slice(want[&g.outputs[0]].as_slice());
        let got = m.run(&[&x[0]]).unwrap().remove(0);
        for (a, b) in got.iter().zip(want) {
            worst = worst.max((a - b).abs() / step);
        }
    }
    (kinds, worst)
}

#[test]
fn prelu_after_conv_is_one_int8_op_rounded_once() {
    rounded_once(false);
}

#[test]
fn leaky_relu_after_conv_is_one_int8_op_rounded_once() {
    rounded_once(true);
}

/// A QDQ model that rounds the conv's output keeps that rounding: no fold.
#[test]
fn a_quantized_conv_output_is_not_folded_across() {
    let mut s = common::seed(7);
    let mut g = conv_prelu(&mut s, false, false);
    let c = g.ops[0].outputs[0];
    g.tensors[c].hint = Some(Hint::Act {
        scale: 0.05,
        zero_point: 60,
    });
    let calib: Vec<_> = (0..4).map(|_| sample(&mut s)).collect();
    let (kinds, _) = int8(&g, &calib);
    assert!(
        kinds.contains(&(OpKind::Conv, OC)) && kinds.iter().any(|k| k.0 == OpKind::Lut),
        "the conv keeps its own output quantization: {kinds:?}"
    );
}

fn rounded_once(leaky: bool) {
    let seed = common::seed(7);
    let mut s = seed;
    let folded = conv_prelu(&mut s, false, leaky);
    let mut s2 = seed;
    // The same weights; the conv's output is read outside, so the activation stays its
    // own op.
    let apart = conv_prelu(&mut s2, true, leaky);
    let calib: Vec<_> = (0..8).map(|_| sample(&mut s)).collect();
    let (kinds, err) = int8(&folded, &calib);
    let convs: Vec<_> = kinds.iter().filter(|k| k.0 == OpKind::Conv).collect();
    assert_eq!(
        convs,
        [&(OpKind::Conv, 2 * OC)],
        "one conv with the negative multipliers (CAIRN_SEED={seed}): {kinds:?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k.0, OpKind::PRelu | OpKind::Lut)),
        "no PRelu left (CAIRN_SEED={seed}): {kinds:?}"
    );
    let (kinds_apart, err_apart) = int8(&apart, &calib);
    assert!(
        kinds_apart.iter().any(|k| k.0 == OpKind::Lut),
        "a conv read elsewhere keeps its PRelu (CAIRN_SEED={seed}): {kinds_apart:?}"
    );
    eprintln!("largest error of y in steps of its scale: folded {err:.3}, apart {err_apart:.3}");
    // Rounded once: half a step (and the bias's own rounding, far below it).
    assert!(err <= 0.51, "folded: {err:.3} steps (CAIRN_SEED={seed})");
    assert!(
        err_apart > 1.0,
        "apart: {err_apart:.3} steps (CAIRN_SEED={seed})"
    );
}

/// x → Conv → PRelu → MaxPool 2×2 → Conv → PRelu → y (MTCNN's pattern). The MaxPool's int8
/// output takes its input's params (the first PRelu's), not its own calibrated range, so
/// the second folded conv must read its input params when it is quantized, not before.
fn two_folds(s: &mut u64) -> Graph {
    let mut g = conv_prelu(s, false, false);
    let y1 = g.outputs[0];
    let p = g.add("p", DType::F32, vec![1, OC, H / 2, H / 2]);
    let c2 = g.add("c2", DType::F32, vec![1, OC, H / 2, H / 2]);
    let y2 = g.add("y2", DType::F32, vec![1, OC, H / 2, H / 2]);
    g.ops.push(op(
        OpKind::MaxPool,
        &[y1],
        p,
        vec![2, 2, 2, 2, 0, 0, 0, 0, 1, 1],
    ));
    let w: Vec<f32> = (0..OC * OC * 9).map(|_| uniform(s, -0.3, 0.3)).collect();
    let b: Vec<f32> = (0..OC).map(|_| uniform(s, -0.5, 0.0)).collect();
    let slope: Vec<f32> = (0..OC).map(|_| uniform(s, 0.1, 0.3)).collect();
    let wt = g.add_f32("w2", vec![OC, OC, 3, 3], &w);
    let bt = g.add_f32("b2", vec![OC], &b);
    let st = g.add_f32("slope2", vec![1, OC, 1, 1], &slope);
    let (params, no_clamp) = unclamped();
    g.ops.push(op(OpKind::Conv, &[p, wt, bt], c2, params));
    g.ops.push(op(OpKind::PRelu, &[c2, st], y2, no_clamp));
    g.outputs = vec![y2];
    g
}

#[test]
fn a_fold_after_a_max_pool_reads_the_pool_params() {
    let seed = common::seed(11);
    let mut s = seed;
    let g = two_folds(&mut s);
    let calib: Vec<_> = (0..8).map(|_| sample(&mut s)).collect();
    let (kinds, err) = int8(&g, &calib);
    let folded = kinds
        .iter()
        .filter(|k| **k == (OpKind::Conv, 2 * OC))
        .count();
    assert_eq!(
        folded, 2,
        "both PRelus folded (CAIRN_SEED={seed}): {kinds:?}"
    );
    eprintln!("largest error of y in steps of its scale: {err:.3}");
    // Two roundings upstream (the first conv's output, the pool passes it on) and the
    // second's own: a few steps at most. An input read at the wrong scale is off by the
    // ratio of the two ranges on every output.
    assert!(err <= 5.0, "{err:.3} steps (CAIRN_SEED={seed})");
}

/// x → Conv → LeakyRelu → Clip(lo) → y: with `lo` below every value the calibration saw,
/// the clip's table maps each int8 value to itself between equal params (the pattern of
/// a `Max` with a constant bound after a LeakyRelu) and is dropped, so the graph is one
/// conv; with `lo` inside the range the table stays.
fn clipped_leaky(lo: f32) -> (Vec<(OpKind, usize)>, f32, u64) {
    let seed = common::seed(11);
    let mut s = seed;
    let mut g = conv_prelu(&mut s, false, true);
    let y1 = g.outputs[0];
    let y = g.add("clipped", DType::F32, vec![1, OC, H, H]);
    let f = UnaryFn::Clip as i32;
    let params = vec![f, lo.to_bits() as i32, f32::INFINITY.to_bits() as i32];
    g.ops.push(op(OpKind::Unary, &[y1], y, params));
    g.outputs = vec![y];
    let calib: Vec<_> = (0..8).map(|_| sample(&mut s)).collect();
    let (kinds, err) = int8(&g, &calib);
    (kinds, err, seed)
}

#[test]
fn a_clip_below_the_range_is_no_op() {
    let (kinds, err, seed) = clipped_leaky(-1000.0);
    assert!(
        !kinds.iter().any(|k| k.0 == OpKind::Lut) && kinds.contains(&(OpKind::Conv, 2 * OC)),
        "one folded conv, no table (CAIRN_SEED={seed}): {kinds:?}"
    );
    assert!(err <= 0.51, "{err:.3} steps (CAIRN_SEED={seed})");
    let (kinds, err, seed) = clipped_leaky(-0.05);
    assert!(
        kinds.iter().any(|k| k.0 == OpKind::Lut),
        "a clip inside the range keeps its table (CAIRN_SEED={seed}): {kinds:?}"
    );
    // Rounded twice (the conv at the LeakyRelu's params, the table at the clip's).
    assert!(err <= 1.5, "{err:.3} steps (CAIRN_SEED={seed})");
}

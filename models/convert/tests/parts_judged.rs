//! An output that joins parts of very different magnitudes (a detector's box coordinates
//! in pixels beside its 0–1 scores, concatenated) is judged part by part: one relative
//! error over the whole sees only the boxes, and the output guard and `--weight-bits auto`
//! then accept int8 forms that ruin the scores. Outputs of parts of one magnitude are
//! judged whole, as before. Seeded: `CAIRN_SEED`, printed on failure.

mod common;
use common::{f32_init, int_attr, model_bytes, node, run_graph, splitmix, value};

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::onnx_pb::GraphProto;
use cairn_convert::quantize::quantize;
use cairn_convert::refine::output_errors;
use cairn_convert::{float_graph, Graph, Options};

const N: usize = 16;
const BOXES: usize = 4;
const SCORES: usize = 8;

fn rand_vec(s: &mut u64, n: usize, a: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((splitmix(s) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a)
        .collect()
}

/// x [1, 16] → boxes = (x·W1)·`scale` [1, 4] and scores = sigmoid(x·W2) [1, 8], joined
/// along axis 1 as the one output y [1, 12].
fn head(seed: u64, scale: f32) -> Graph {
    head_of(seed, scale, BOXES, SCORES)
}

/// [`head`] with `boxes` and `scores` outputs; the scores do not read x's first value.
fn head_of(seed: u64, scale: f32, boxes: usize, scores: usize) -> Graph {
    let (bx, sc) = (boxes, scores);
    let mut s = seed;
    let w1 = rand_vec(&mut s, N * bx, 0.5);
    let mut w2 = rand_vec(&mut s, N * sc, 0.5);
    if (bx, sc) != (BOXES, SCORES) {
        w2[..sc].fill(0.0);
    }
    let graph = GraphProto {
        node: vec![
            node("MatMul", &["x", "W1"], &["b0"], vec![]),
            node("Mul", &["b0", "k"], &["boxes"], vec![]),
            node("MatMul", &["x", "W2"], &["logits"], vec![]),
            node("Sigmoid", &["logits"], &["scores"], vec![]),
            node(
                "Concat",
                &["boxes", "scores"],
                &["y"],
                vec![int_attr("axis", 1)],
            ),
        ],
        initializer: vec![
            f32_init("W1", &[N as i64, bx as i64], &w1),
            f32_init("W2", &[N as i64, sc as i64], &w2),
            f32_init("k", &[1], &[scale]),
        ],
        input: vec![value("x", 1, &[1, N as i64])],
        output: vec![value("y", 1, &[1, (bx + sc) as i64])],
        ..Default::default()
    };
    float_graph(&model_bytes(graph, 17), &Options::default())
        .unwrap()
        .0
}

/// The judged error of `g` quantized with the scores' range widened a hundredfold (a
/// handful of int8 steps over 0–1), and, measured here on the same samples, the whole
/// output's relative error and the scores' own.
fn errors(seed: u64, scale: f32) -> (f32, f32, f32) {
    let g = head(seed, scale);
    let mut s = seed ^ 0x5eed;
    let samples: Vec<Vec<Vec<f32>>> = (0..4).map(|_| vec![rand_vec(&mut s, N, 2.0)]).collect();
    let mut ranges = calibrate(&g, &samples, Method::MinMax, |_| {}).unwrap();
    let scores = g
        .tensors
        .iter()
        .position(|t| t.name == "Sigmoid_scores:0")
        .expect("the Sigmoid's output");
    ranges.insert(scores, (-50.0, 50.0));
    let (q, rep) = quantize(&g, &ranges).unwrap();
    let judged = output_errors(&g, &[(&q, &rep.values)], &samples).unwrap()[0];
    let (mut e, mut n, mut es, mut ns) = (0f32, 0f32, 0f32, 0f32);
    for x in &samples {
        let (want, got) = (run_graph(&g, &x[0]), run_graph(&q, &x[0]));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            e += (a - b).powi(2);
            n += b * b;
            if i >= BOXES {
                es += (a - b).powi(2);
                ns += b * b;
            }
        }
    }
    (judged, (e / n).sqrt(), (es / ns).sqrt())
}

#[test]
fn scores_beside_pixel_boxes_are_judged_apart() {
    let seed = common::seed(0xb0c5);
    let (judged, whole, scores) = errors(seed, 300.0);
    println!("seed {seed}: judged {judged:.4}, whole {whole:.4}, scores {scores:.4}");
    assert!(
        scores > 0.1,
        "seed {seed}: the widened range must hurt the scores ({scores})"
    );
    assert!(
        whole < scores / 10.0,
        "seed {seed}: the boxes hide it in the whole ({whole})"
    );
    assert!(
        (judged - scores).abs() <= 0.02 * scores,
        "seed {seed}: judged {judged} should be the scores' error {scores} (whole {whole})"
    );
}

#[test]
fn parts_of_one_magnitude_are_judged_whole() {
    let seed = common::seed(0xb0c6);
    // Boxes in ±a few units beside 0–1 scores: within 8× of each other.
    let (judged, whole, scores) = errors(seed, 1.0);
    println!("seed {seed}: judged {judged:.4}, whole {whole:.4}, scores {scores:.4}");
    assert!(
        (judged - whole).abs() <= 0.02 * whole,
        "seed {seed}: judged {judged} should be the whole output's error {whole}"
    );
}

/// The f32-w8 pass judges its candidate by the same parts: its graph is pruned when the
/// f32 weights give way to int8 ones, which renumbers the tensors, and the parts must be
/// found at their new numbers. At the old ones the scores were not found and went
/// unjudged: here a spike in x's first value, which only the boxes read, leaves the rest
/// of each row a step or two of the row's run-time int8 scale, and the pass must refuse
/// the int8 weights the scores cannot bear, and keep them where x has no spike.
#[test]
fn the_int8_weight_pass_finds_the_parts_after_pruning() {
    let seed = common::seed(0xb0c7);
    // Enough outputs per product for the pass to take it.
    let (bx, sc) = (32, 48);
    let g = head_of(seed, 300.0, bx, sc);
    for spike in [0.0, 400.0] {
        let mut s = seed ^ 0x5eed;
        let samples: Vec<Vec<Vec<f32>>> = (0..4)
            .map(|_| {
                let mut x = rand_vec(&mut s, N, 2.0);
                x[0] += spike;
                vec![x]
            })
            .collect();
        // No ranges: every op f32, both products FullyConnected ops on f32 weights.
        let (q, rep) = quantize(&g, &Default::default()).unwrap();
        let (w, note) = cairn_convert::run_time_int8::rounded_weights_where_f32(
            &g,
            q.clone(),
            &rep.values,
            &samples,
        )
        .unwrap();
        // The scores' error with int8 weights, measured here.
        let mut q8 = q.clone();
        cairn_convert::run_time_int8::round_int8_weights(&mut q8);
        let (mut e, mut n) = (0f32, 0f32);
        for x in &samples {
            let (want, got) = (run_graph(&g, &x[0]), run_graph(&q8, &x[0]));
            for (a, b) in got[bx..].iter().zip(&want[bx..]) {
                e += (a - b).powi(2);
                n += b * b;
            }
        }
        let scores = (e / n).sqrt();
        println!("seed {seed}: spike {spike}: scores {scores:.4}, {note:?}");
        if spike == 0.0 {
            assert!(scores < 0.02, "seed {seed}: the scores are {scores} off");
            assert!(
                note.as_deref()
                    .is_some_and(|n| n.starts_with("2 FullyConnected ops left f32 run with int8")),
                "seed {seed}: {note:?}"
            );
            assert_ne!(w.tensors.len(), 0);
        } else {
            assert!(scores > 0.05, "seed {seed}: the spike must hurt ({scores})");
            assert!(
                note.is_none(),
                "seed {seed}: scores {scores} off, yet {note:?}"
            );
        }
    }
}

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
    let mut s = seed;
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
            f32_init(
                "W1",
                &[N as i64, BOXES as i64],
                &rand_vec(&mut s, N * BOXES, 0.5),
            ),
            f32_init(
                "W2",
                &[N as i64, SCORES as i64],
                &rand_vec(&mut s, N * SCORES, 0.5),
            ),
            f32_init("k", &[1], &[scale]),
        ],
        input: vec![value("x", 1, &[1, N as i64])],
        output: vec![value("y", 1, &[1, (BOXES + SCORES) as i64])],
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

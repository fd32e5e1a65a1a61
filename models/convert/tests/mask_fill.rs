//! Attention whose padded keys are filled with −1e9 before the Softmax (`Where(mask,
//! −1e9, q·kᵀ)`): calibrated as one int8 tensor, the fill and the scores share a scale of
//! millions per step, every real score rounds to one code and the attention comes out
//! uniform. The default passes keep that Softmax input f32; the context then stays within
//! int8's rounding of the float model's. Seeded; `CAIRN_SEED` replays.

mod common;
use common::{f32_init, model_bytes, node, seed, splitmix, value};

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::onnx_pb::{GraphProto, TensorProto};
use cairn_convert::quantize::quantize;
use cairn_convert::sensitive::default_passes;
use cairn_convert::{float_graph, Options};
use cairn_core::OpKind;

const B: usize = 4;
const L: usize = 12;
const D: usize = 32;

fn normal(s: &mut u64) -> f32 {
    // Sum of four uniforms, centred: close enough to a normal for scores.
    (0..4)
        .map(|_| (splitmix(s) >> 40) as f32 / (1u64 << 24) as f32)
        .sum::<f32>()
        - 2.0
}

/// q [B, 1, D] and k [B, L, D] in; scores q·kᵀ/√D with the keys past each row's length
/// filled with −1e9, Softmax, then the weighted sum of k.
fn model(lens: &[usize]) -> Vec<u8> {
    let mask: Vec<u8> = (0..B * L).map(|i| (i % L >= lens[i / L]) as u8).collect();
    let graph = GraphProto {
        node: vec![
            node(
                "Transpose",
                &["k"],
                &["kt"],
                vec![common::ints_attr("perm", &[0, 2, 1])],
            ),
            node("MatMul", &["q", "kt"], &["s0"], vec![]),
            node("Mul", &["s0", "scale"], &["s"], vec![]),
            node("Where", &["mask", "fill", "s"], &["sm"], vec![]),
            node(
                "Softmax",
                &["sm"],
                &["p"],
                vec![common::int_attr("axis", -1)],
            ),
            node("MatMul", &["p", "k"], &["ctx"], vec![]),
        ],
        initializer: vec![
            TensorProto {
                name: "mask".into(),
                dims: vec![B as i64, 1, L as i64],
                data_type: 9,
                raw_data: mask,
                ..Default::default()
            },
            f32_init("fill", &[], &[-1e9]),
            f32_init("scale", &[], &[1.0 / (D as f32).sqrt()]),
        ],
        input: vec![
            value("q", 1, &[B as i64, 1, D as i64]),
            value("k", 1, &[B as i64, L as i64, D as i64]),
        ],
        output: vec![value("ctx", 1, &[B as i64, 1, D as i64])],
        ..Default::default()
    };
    model_bytes(graph, 17)
}

fn sample(s: &mut u64) -> Vec<Vec<f32>> {
    vec![
        (0..B * D).map(|_| 2.0 * normal(s)).collect(),
        (0..B * L * D).map(|_| normal(s)).collect(),
    ]
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let e: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let n: f32 = b.iter().map(|y| y * y).sum();
    (e / n.max(1e-30)).sqrt()
}

#[test]
fn a_softmax_reading_a_mask_fill_stays_f32() {
    let seed = seed(0x3A5C);
    let mut s = seed;
    let lens: Vec<usize> = (0..B)
        .map(|_| 3 + (splitmix(&mut s) % 8) as usize)
        .collect();
    let (g, _) = float_graph(&model(&lens), &Options::default()).unwrap();
    let calib: Vec<Vec<Vec<f32>>> = (0..6).map(|_| sample(&mut s)).collect();
    let plain = calibrate(&g, &calib, Method::MinMax, |_| {}).unwrap();
    let mut ranges = plain.clone();
    let mut notes = Vec::new();
    default_passes(&g, &calib, &mut ranges, 0.05, &mut notes).unwrap();
    let what = format!("CAIRN_SEED={seed}");
    assert!(
        notes.iter().any(|n| n.contains("mask's fill")),
        "{what}: {notes:?}"
    );
    let (q, _) = quantize(&g, &ranges).unwrap();
    let softmax = q.ops.iter().find(|o| o.kind == OpKind::Softmax).unwrap();
    let x = softmax.inputs[0].unwrap();
    assert_eq!(q.tensors[x].dtype, cairn_core::DType::F32, "{what}");
    let (q0, _) = quantize(&g, &plain).unwrap();
    let x = sample(&mut s);
    let out = |gr: &cairn_convert::Graph| -> Vec<f32> {
        let vals = gr.run_all(&x).unwrap();
        bytemuck::cast_slice(vals[&gr.outputs[0]].as_slice()).to_vec()
    };
    let want = out(&g);
    let (got, before) = (rel(&out(&q), &want), rel(&out(&q0), &want));
    // Scores and keys in int8 (about 1% each); uniform attention was far off.
    assert!(got < 0.05, "{what}: {got}");
    assert!(before > 4.0 * got, "{what}: {before} vs {got}");
}

//! The ONNX `Attention` node (opset 23), lowered to cairn's ops: 3-d inputs with grouped
//! KV heads, a past key/value, the causal bias and a softcap, against an f64 reference
//! written from the op's definition. Seeded (`CAIRN_SEED` replays). The ONNX node tests
//! (`test_attention_*`, `test_rotary_embedding_*`) cover the other attributes.

mod common;
use common::{int_attr, node, value};

use cairn_convert::onnx_pb::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, OperatorSetIdProto,
};
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;
use prost::Message;

fn float_attr(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: AttributeType::Float as i32,
        ..Default::default()
    }
}

fn uniform(state: &mut u64) -> f32 {
    let z = common::splitmix(state);
    2.0 * ((z >> 40) as f32 / (1u64 << 24) as f32) - 1.0
}

#[test]
fn gqa_causal_softcap_with_past_matches_the_definition() {
    let seed = common::seed(31);
    let mut state = seed;
    let (b, sq, past, qh, kvh, d) = (2usize, 3usize, 2usize, 4usize, 2usize, 4usize);
    let total = past + sq;
    let softcap = 2.0f32;
    let attn = node(
        "Attention",
        &["q", "k", "v", "", "pk", "pv"],
        &["y", "present_k", "present_v"],
        vec![
            int_attr("q_num_heads", qh as i64),
            int_attr("kv_num_heads", kvh as i64),
            int_attr("is_causal", 1),
            float_attr("softcap", softcap),
        ],
    );
    let dims = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
    let model = ModelProto {
        ir_version: 10,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 23,
        }],
        graph: Some(GraphProto {
            node: vec![attn],
            input: vec![
                value("q", 1, &dims(&[b, sq, qh * d])),
                value("k", 1, &dims(&[b, sq, kvh * d])),
                value("v", 1, &dims(&[b, sq, kvh * d])),
                value("pk", 1, &dims(&[b, kvh, past, d])),
                value("pv", 1, &dims(&[b, kvh, past, d])),
            ],
            output: vec![
                value("y", 1, &dims(&[b, sq, qh * d])),
                value("present_k", 1, &dims(&[b, kvh, total, d])),
                value("present_v", 1, &dims(&[b, kvh, total, d])),
            ],
            name: "g".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let c = convert(&model, &Options::default(), |_| {})
        .unwrap_or_else(|e| panic!("CAIRN_SEED={seed}: {e:#}"));
    let mut gen = |n: usize| (0..n).map(|_| uniform(&mut state)).collect::<Vec<f32>>();
    let (q, k, v) = (
        gen(b * sq * qh * d),
        gen(b * sq * kvh * d),
        gen(b * sq * kvh * d),
    );
    let (pk, pv) = (gen(b * kvh * past * d), gen(b * kvh * past * d));
    let bytes = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(bytes.as_slice()).expect("load");
    let out = m.run(&[&q, &k, &v, &pk, &pv]).expect("run");
    // Present key/value [b, kvh, total, d]: the past, then this step's heads.
    let present = |past_t: &[f32], now: &[f32], bi: usize, h: usize, t: usize, j: usize| {
        if t < past {
            past_t[((bi * kvh + h) * past + t) * d + j]
        } else {
            now[(bi * sq + (t - past)) * kvh * d + h * d + j]
        }
    };
    let scale = 1.0 / (d as f64).sqrt();
    let mut want_y = vec![0f32; b * sq * qh * d];
    for bi in 0..b {
        for h in 0..qh {
            let kh = h / (qh / kvh);
            for i in 0..sq {
                let scores: Vec<f64> = (0..total)
                    .map(|t| {
                        let dot: f64 = (0..d)
                            .map(|j| {
                                q[(bi * sq + i) * qh * d + h * d + j] as f64
                                    * present(&pk, &k, bi, kh, t, j) as f64
                            })
                            .sum();
                        let s = (dot * scale / softcap as f64).tanh() * softcap as f64;
                        if t >= past && t - past > i {
                            f64::NEG_INFINITY
                        } else {
                            s
                        }
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for j in 0..d {
                    let y: f64 = (0..total)
                        .map(|t| e[t] / sum * present(&pv, &v, bi, kh, t, j) as f64)
                        .sum();
                    want_y[(bi * sq + i) * qh * d + h * d + j] = y as f32;
                }
            }
        }
    }
    for (k_, (p, w)) in out[0].iter().zip(&want_y).enumerate() {
        assert!(
            (p - w).abs() <= 1e-5,
            "CAIRN_SEED={seed}: y[{k_}] = {p}, want {w}"
        );
    }
    let want_pk: Vec<f32> = (0..b * kvh * total * d)
        .map(|i| {
            let (j, t, h, bi) = (
                i % d,
                i / d % total,
                i / d / total % kvh,
                i / d / total / kvh,
            );
            present(&pk, &k, bi, h, t, j)
        })
        .collect();
    assert_eq!(out[1], want_pk, "CAIRN_SEED={seed}");
    assert_eq!(out[2].len(), want_pk.len());
}

//! `ai.onnx.ml` ops that are plain arithmetic (scikit-learn exports): `Scaler` as
//! `(x − offset) · scale` per feature, one value for all features or one per feature;
//! other counts are refused with a message.

mod common;
use common::{model_bytes, run_graph, value};

use cairn_convert::onnx_pb::{attribute_proto, AttributeProto, GraphProto, NodeProto};
use cairn_convert::{convert, float_graph, Options};

fn floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Floats as i32,
        floats: v.to_vec(),
        ..Default::default()
    }
}

fn scaler(offset: &[f32], scale: &[f32]) -> Vec<u8> {
    let graph = GraphProto {
        node: vec![NodeProto {
            op_type: "Scaler".into(),
            domain: "ai.onnx.ml".into(),
            name: "scaler".into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            attribute: vec![floats("offset", offset), floats("scale", scale)],
            ..Default::default()
        }],
        input: vec![value("x", 1, &[2, 3])],
        output: vec![value("y", 1, &[2, 3])],
        ..Default::default()
    };
    model_bytes(graph, 13)
}

#[test]
fn scaler_centres_and_scales_each_feature() {
    let x = [0.5f32, -1.0, 2.0, 3.0, 0.25, -4.0];
    for (offset, scale) in [
        (vec![1.0f32, 2.0, -3.0], vec![0.5f32, 2.0, -1.5]),
        (vec![0.75], vec![4.0]),
    ] {
        let (g, _) = float_graph(&scaler(&offset, &scale), &Options::default()).unwrap();
        let y = run_graph(&g, &x);
        for (i, (&v, &got)) in x.iter().zip(&y).enumerate() {
            let f = |p: &[f32]| p[if p.len() == 1 { 0 } else { i % 3 }];
            assert_eq!(got, (v - f(&offset)) * f(&scale), "feature {}", i % 3);
        }
    }
}

#[test]
fn scaler_with_a_wrong_count_is_refused() {
    let bytes = scaler(&[1.0, 2.0], &[1.0]);
    let Err(err) = convert(&bytes, &Options::default(), |_| {}) else {
        panic!("a Scaler of 2 offsets for 3 features converted");
    };
    let msg = format!("{err:#}");
    assert!(msg.contains("2 offset values for 3 features"), "{msg}");
}

//! `cairn bench` times models of one input; given a model of two it says so and how to time
//! it instead (it used to fail with an internal `NoSuchTensor`).

use std::process::Command;

use cairn_convert::onnx_pb::tensor_shape_proto::{dimension, Dimension};
use cairn_convert::onnx_pb::{
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use prost::Message;

fn value(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: [1, 8]
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn bench_of_a_two_input_model_says_how_to_time_it() {
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                input: vec!["a".into(), "b".into()],
                output: vec!["y".into()],
                name: "add".into(),
                op_type: "Add".into(),
                ..Default::default()
            }],
            input: vec![value("a"), value("b")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = std::env::temp_dir().join(format!("cairn-bench-two-{}.onnx", std::process::id()));
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("bench")
        .arg(&path)
        .args(["--runs", "1", "--warmup", "0", "--no-tract"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("models of one input")
            && stderr.contains("has 2")
            && stderr.contains("cairn run"),
        "{stderr}"
    );
}

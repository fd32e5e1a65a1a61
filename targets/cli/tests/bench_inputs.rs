//! `cairn bench` on models of several inputs and of integer inputs: every engine gets every
//! input, by name, in the element type the ONNX graph declares (it used to refuse models of
//! more than one input, and to feed ONNX Runtime float32 where a graph takes int32 token
//! ids). An engine that cannot load or run gets a row saying why, and the command still
//! succeeds; a `cairn` copied out of the repository still finds its `.venv`'s ONNX Runtime.
//!
//! The models are a few nodes written here as ONNX protobufs; each bench is a few runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_convert::npy;
use cairn_convert::onnx_pb::tensor_shape_proto::{dimension, Dimension};
use cairn_convert::onnx_pb::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;
use serde_json::Value;

const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const BOOL: i32 = 9;

fn value(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims
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

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    output: ValueInfoProto,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: inputs,
            output: vec![output],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A 10 x 3 float table, row i = (i, i + 0.5, -i).
fn table() -> TensorProto {
    let v: Vec<u8> = (0..10)
        .flat_map(|i| [i as f32, i as f32 + 0.5, -(i as f32)])
        .flat_map(f32::to_le_bytes)
        .collect();
    TensorProto {
        name: "table".into(),
        dims: vec![10, 3],
        data_type: FLOAT,
        raw_data: v,
        ..Default::default()
    }
}

/// A fresh folder for one test.
fn temp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-bench-inputs-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bench(exe: &Path, cwd: Option<&Path>, args: &[&str]) -> (Output, String) {
    let mut c = Command::new(exe);
    c.arg("bench")
        .args(args)
        .args(["--runs", "3", "--warmup", "1", "--no-tract"])
        .env("RUST_BACKTRACE", "0");
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn cairn() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

fn ort_available() -> bool {
    if cairn_ort::find_library().is_none() {
        eprintln!("skipped the ONNX Runtime checks: libonnxruntime not found (set ORT_DYLIB_PATH)");
        return false;
    }
    true
}

/// The table row of `engine`: its timing columns, or what it says instead.
fn row<'a>(stdout: &'a str, engine: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{engine} ")))
}

/// The engine's row has a median in ms (not an error).
fn timed(stdout: &str, engine: &str) -> bool {
    row(stdout, engine)
        .and_then(|r| r.split_whitespace().nth(1))
        .is_some_and(|ms| ms.parse::<f64>().is_ok())
}

/// Two float inputs (a recurrent cell's input and state, say): the input `a` from
/// `--input a=...`, `b` from the first calibration sample folder; both reach cairn and
/// ONNX Runtime, which agree.
#[test]
fn bench_times_a_two_input_model_with_inputs_by_name_and_from_calibration() {
    let dir = temp_dir("two_inputs");
    let onnx = dir.join("add.onnx");
    std::fs::write(
        &onnx,
        model(
            vec![node("Add", &["a", "b"], "y", vec![])],
            vec![],
            vec![value("a", FLOAT, &[1, 8]), value("b", FLOAT, &[1, 8])],
            value("y", FLOAT, &[1, 8]),
        ),
    )
    .unwrap();
    let calib = dir.join("calib");
    for s in 0..4 {
        let f = calib.join(format!("s{s}"));
        std::fs::create_dir_all(&f).unwrap();
        let a: Vec<f32> = (0..8).map(|i| (i + s) as f32 * 0.1 - 0.4).collect();
        let b: Vec<f32> = (0..8).map(|i| 0.3 - (i * s) as f32 * 0.05).collect();
        npy::write(&f.join("a.npy"), &[1, 8], &a).unwrap();
        npy::write(&f.join("b.npy"), &[1, 8], &b).unwrap();
    }
    let x = dir.join("a_given.npy");
    npy::write(&x, &[1, 8], &[0.9, -0.2, 0.1, 0.0, 0.4, -0.5, 0.2, 0.3]).unwrap();
    let json = dir.join("report.json");
    let (out, text) = bench(
        &cairn(),
        None,
        &[
            onnx.to_str().unwrap(),
            "--calibrate",
            calib.to_str().unwrap(),
            "--input",
            &format!("a={}", x.display()),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 inputs:"), "{text}");
    assert!(
        text.contains(&format!("input a float32 [1, 8] from {}", x.display())),
        "{text}"
    );
    let b_file = calib.join("s0").join("b.npy");
    assert!(
        text.contains(&format!("input b float32 [1, 8] from {}", b_file.display())),
        "{text}"
    );
    assert!(timed(&text, "cairn-int8"), "{text}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["inputs"][1]["name"], "b", "{report:#}");
    if ort_available() {
        assert!(timed(&text, "ort-fp32"), "{text}");
        assert_eq!(
            report["engines"]["ort-fp32"]["top1_agrees_with_cairn"], true,
            "{report:#}"
        );
        assert_eq!(report["engine_errors"], serde_json::json!({}), "{report:#}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One int32 input (byte values, as magika takes): ONNX Runtime gets int32, not float32.
#[test]
fn bench_feeds_an_int32_input_as_int32() {
    let dir = temp_dir("int32");
    let onnx = dir.join("gather32.onnx");
    std::fs::write(
        &onnx,
        model(
            vec![node("Gather", &["table", "ids"], "y", vec![])],
            vec![table()],
            vec![value("ids", INT32, &[1, 4])],
            value("y", FLOAT, &[1, 4, 3]),
        ),
    )
    .unwrap();
    let ids = dir.join("ids.npy");
    npy::write(&ids, &[1, 4], &[3.0, 9.0, 0.0, 5.0]).unwrap();
    let json = dir.join("report.json");
    let (out, text) = bench(
        &cairn(),
        None,
        &[
            onnx.to_str().unwrap(),
            "--input",
            ids.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("input [1, 4] int32 from"), "{text}");
    assert!(timed(&text, "cairn-f32"), "{text}");
    if ort_available() {
        assert!(timed(&text, "ort-fp32"), "{text}");
        let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(
            report["engines"]["ort-fp32"]["top1_agrees_with_cairn"], true,
            "{report:#}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A text model's inputs: int64 token ids and a bool mask, neither given, so zeros of
/// their types; ONNX Runtime runs on them. A QOperator model that does not load gets a
/// row saying so, and the command still succeeds.
#[test]
fn bench_feeds_int64_ids_and_a_bool_mask_and_reports_an_engine_that_fails() {
    let dir = temp_dir("int64_bool");
    let onnx = dir.join("text.onnx");
    let to_float = AttributeProto {
        name: "to".into(),
        r#type: 2,
        i: FLOAT as i64,
        ..Default::default()
    };
    let axes = TensorProto {
        name: "axes".into(),
        dims: vec![1],
        data_type: INT64,
        int64_data: vec![2],
        ..Default::default()
    };
    std::fs::write(
        &onnx,
        model(
            vec![
                node("Gather", &["table", "ids"], "emb", vec![]),
                node("Cast", &["mask"], "m", vec![to_float]),
                node("Unsqueeze", &["m", "axes"], "m3", vec![]),
                node("Mul", &["emb", "m3"], "y", vec![]),
            ],
            vec![table(), axes],
            vec![value("ids", INT64, &[1, 4]), value("mask", BOOL, &[1, 4])],
            value("y", FLOAT, &[1, 4, 3]),
        ),
    )
    .unwrap();
    let broken = dir.join("broken_qop.onnx");
    std::fs::write(&broken, b"not an onnx model").unwrap();
    let (out, text) = bench(
        &cairn(),
        None,
        &[
            onnx.to_str().unwrap(),
            "--ort-qop",
            broken.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("input ids int64 [1, 4] from zeros"), "{text}");
    assert!(text.contains("input mask bool [1, 4] from zeros"), "{text}");
    assert!(timed(&text, "cairn-f32"), "{text}");
    let qop = row(&text, "ort-int8-qop").unwrap_or_else(|| panic!("no qop row:\n{text}"));
    assert!(qop.contains("unavailable"), "{text}");
    if ort_available() {
        assert!(timed(&text, "ort-fp32"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `cairn` copied out of the repository and run from another folder, without
/// `ORT_DYLIB_PATH`, still finds the repository's `.venv` ONNX Runtime (the tester's
/// `/work/gen/cairn` dropped ONNX Runtime silently).
#[test]
fn a_copied_cairn_run_elsewhere_finds_the_repository_venv() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let has_venv = std::fs::read_dir(root.join(".venv/lib"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|py| {
            std::fs::read_dir(py.path().join("site-packages/onnxruntime/capi"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| {
                    f.file_name()
                        .to_string_lossy()
                        .starts_with("libonnxruntime.so")
                })
        });
    if !has_venv {
        eprintln!("skipped: no .venv with the onnxruntime wheel in the repository");
        return;
    }
    let dir = temp_dir("copied");
    let exe = dir.join("cairn");
    std::fs::copy(cairn(), &exe).unwrap();
    let onnx = dir.join("relu.onnx");
    std::fs::write(
        &onnx,
        model(
            vec![node("Relu", &["x"], "y", vec![])],
            vec![],
            vec![value("x", FLOAT, &[1, 16])],
            value("y", FLOAT, &[1, 16]),
        ),
    )
    .unwrap();
    let out = Command::new(&exe)
        .arg("bench")
        .arg(&onnx)
        .args(["--runs", "2", "--warmup", "0", "--no-tract"])
        .current_dir(&dir)
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(timed(&text, "ort-fp32"), "{text}");
    assert!(!text.contains("not found"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

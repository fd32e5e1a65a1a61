//! ONNX external data: initializers (and a Constant node's value) whose bytes sit in a
//! file beside the model, at an offset and length, convert to the same `.cairn` bytes as
//! the model with the data inline, for `check` too. A location outside the model's folder,
//! a range past the file's end, a missing file and a model given without its folder are
//! clear errors.

use cairn_convert::onnx_pb::tensor_proto::DataLocation;
use cairn_convert::onnx_pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto,
};
use cairn_convert::Options;
use prost::Message;

mod common;
use common::value;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        raw_data: f32_bytes(v),
        ..Default::default()
    }
}

/// `t` with its bytes moved to `location` at `offset` (the caller writes them there).
fn external(
    mut t: TensorProto,
    location: &str,
    offset: usize,
    length: Option<usize>,
) -> TensorProto {
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: k.into(),
        value: v,
    };
    t.raw_data.clear();
    t.data_location = DataLocation::External as i32;
    t.external_data = vec![
        entry("location", location.into()),
        entry("offset", offset.to_string()),
    ];
    if let Some(l) = length {
        t.external_data.push(entry("length", l.to_string()));
    }
    t
}

const W: [f32; 12] = [
    0.5, -1.0, 0.25, 2.0, -0.75, 1.5, 0.1, -0.2, 0.3, 1.0, -1.0, 0.0,
];
const B: [f32; 3] = [0.1, -0.3, 0.7];
const S: [f32; 3] = [2.0, 0.5, -1.0];

/// y = (x · W + B) · S, with W and B initializers and S a Constant node's value.
fn model(w: TensorProto, b: TensorProto, s: TensorProto) -> Vec<u8> {
    let node = |op: &str, inputs: &[&str], out: &str| NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        name: format!("{op}_{out}"),
        op_type: op.into(),
        ..Default::default()
    };
    let mut constant = node("Constant", &[], "s");
    constant.attribute = vec![AttributeProto {
        name: "value".into(),
        r#type: 4,
        t: Some(s),
        ..Default::default()
    }];
    let graph = GraphProto {
        node: vec![
            node("MatMul", &["x", "w"], "xw"),
            node("Add", &["xw", "b"], "z"),
            constant,
            node("Mul", &["z", "s"], "y"),
        ],
        initializer: vec![w, b],
        input: vec![value("x", 1, &[2, 4])],
        output: vec![value("y", 1, &[2, 3])],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn inline() -> Vec<u8> {
    model(
        tensor("w", &[4, 3], &W),
        tensor("b", &[3], &B),
        tensor("s", &[3], &S),
    )
}

/// The model with W at offset 16 of `weights.bin` (after 16 bytes of other data), B
/// right after it, S in its own file in a subfolder with no length (the rest of the file).
fn with_external(dir: &std::path::Path, w_loc: &str, w_len: usize) -> Vec<u8> {
    let mut file = vec![0xAB; 16];
    file.extend(f32_bytes(&W));
    file.extend(f32_bytes(&B));
    std::fs::write(dir.join("weights.bin"), &file).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/s.bin"), f32_bytes(&S)).unwrap();
    model(
        external(tensor("w", &[4, 3], &W), w_loc, 16, Some(w_len)),
        external(tensor("b", &[3], &B), "weights.bin", 16 + 48, Some(12)),
        external(tensor("s", &[3], &S), "data/s.bin", 0, None),
    )
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cairn_external_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn float_opts(dir: Option<&std::path::Path>) -> Options {
    Options {
        float: true,
        external_data_dir: dir.map(|d| d.to_path_buf()),
        ..Default::default()
    }
}

#[test]
fn external_weights_convert_as_inline_ones() {
    let dir = tmp("same");
    let ext = with_external(&dir, "weights.bin", 48);
    let want = cairn_convert::convert(&inline(), &float_opts(None), |_| {}).unwrap();
    let got = cairn_convert::convert(&ext, &float_opts(Some(&dir)), |_| {}).unwrap();
    assert_eq!(got.bytes.as_slice(), want.bytes.as_slice());
    let report = cairn_convert::check(&ext, &float_opts(Some(&dir))).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_external_data_is_a_clear_error() {
    let dir = tmp("bad");
    let err = |bytes: &[u8], d: Option<&std::path::Path>| match cairn_convert::convert(
        bytes,
        &float_opts(d),
        |_| {},
    ) {
        Ok(_) => panic!("converted"),
        Err(e) => format!("{e:#}"),
    };
    for (loc, len, want) in [
        ("../weights.bin", 48, "not a path inside the model's folder"),
        ("/etc/passwd", 48, "not a path inside the model's folder"),
        ("weights.bin", 4000, "past the end of 'weights.bin'"),
        ("missing.bin", 48, "reading its external data"),
    ] {
        let e = err(&with_external(&dir, loc, len), Some(&dir));
        assert!(e.contains(want), "{loc}: {e}");
        assert!(e.contains("tensor 'w'"), "{loc}: {e}");
    }
    let e = err(&with_external(&dir, "weights.bin", 48), None);
    assert!(e.contains("uses external data"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

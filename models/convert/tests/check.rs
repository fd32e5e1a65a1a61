//! `check` lists every node cairn cannot convert, all at once: independent problems are
//! each reported with op and reason; a node that reads a value a problem left unknown is
//! counted as blocked, not reported again; what can be lowered is not reported; a refused
//! graph input is reported and the nodes behind it are still checked.

use cairn_convert::onnx_pb::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};
use prost::Message;

mod common;
use common::value;

fn node(op: &str, input: &str, output: &str) -> NodeProto {
    NodeProto {
        input: vec![input.into()],
        output: vec![output.into()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        ..Default::default()
    }
}

#[test]
fn every_problem_at_once_and_blocked_nodes_counted() {
    let graph = GraphProto {
        node: vec![
            node("NoSuchOpA", "x", "a"),
            node("Relu", "a", "b"),
            node("Relu", "x", "c"),
            node("NoSuchOpB", "c", "d"),
            node("Neg", "ids", "e"),
        ],
        input: vec![value("x", 1, &[1, 4]), value("ids", 8, &[1, 4])],
        output: vec![
            value("b", 1, &[1, 4]),
            value("d", 1, &[1, 4]),
            value("e", 7, &[1, 4]),
        ],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    let report = cairn_convert::check(&model.encode_to_vec(), &Default::default()).unwrap();
    let found: Vec<(&str, &str)> = report
        .problems
        .iter()
        .map(|p| (p.node.as_str(), p.op.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("input 'ids'", "(graph input)"),
            ("NoSuchOpA_a", "NoSuchOpA"),
            ("NoSuchOpB_d", "NoSuchOpB"),
        ],
        "{report:?}"
    );
    assert!(
        report.problems[1].reason.contains("NoSuchOpA"),
        "{report:?}"
    );
    // Relu(a) reads A's unknown output. The refused string input is checked on as an f32
    // input of its shape, so Neg(ids) is checked (and lowers), not blocked.
    assert_eq!(report.blocked, 1, "{report:?}");
    assert_eq!(report.nodes, 5);
}

#[test]
fn a_model_cairn_converts_has_no_problems() {
    let zoo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../zoo");
    let bytes = std::fs::read(zoo.join("digits/digits_mlp.onnx")).unwrap();
    let report = cairn_convert::check(&bytes, &Default::default()).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.blocked, 0);
    assert!(report.nodes > 0);
}

/// Integer model inputs (token ids) run as i32, fed as f32 values holding integers: an
/// int64 `ids` input gathers rows of an embedding table, and float arithmetic on the ids
/// themselves is refused with a clear reason instead of computing on integer bits.
#[test]
fn integer_ids_input_gathers_an_embedding() {
    use cairn_convert::onnx_pb::TensorProto;
    let table: Vec<f32> = (0..5 * 3).map(|v| v as f32 * 0.5).collect();
    let gather = NodeProto {
        input: vec!["table".into(), "ids".into()],
        output: vec!["emb".into()],
        name: "gather".into(),
        op_type: "Gather".into(),
        ..Default::default()
    };
    let model = |nodes: Vec<NodeProto>, out: ValueInfoProto| ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: vec![TensorProto {
                name: "table".into(),
                dims: vec![5, 3],
                data_type: 1,
                float_data: table.clone(),
                ..Default::default()
            }],
            input: vec![value("ids", 7, &[1, 4])],
            output: vec![out],
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = model(vec![gather], value("emb", 1, &[1, 4, 3]));
    let conv = cairn_convert::convert(&m.encode_to_vec(), &Default::default(), |_| {}).unwrap();
    let bytes = cairn_core::emit::AlignedBytes::from_slice(&conv.bytes);
    let mut hm = cairn_kernels::host::HostModel::new(bytes.as_slice()).unwrap();
    let out = hm.run(&[&[4.0, 0.0, 2.0, 4.0]]).unwrap();
    let want: Vec<f32> = [4, 0, 2, 4]
        .iter()
        .flat_map(|&r| table[r * 3..r * 3 + 3].to_vec())
        .collect();
    assert_eq!(out[0], want);

    let m = model(vec![node("Neg", "ids", "e")], value("e", 7, &[1, 4]));
    let err = cairn_convert::convert(&m.encode_to_vec(), &Default::default(), |_| {})
        .err()
        .expect("Neg on int ids is refused");
    assert!(
        format!("{err:#}").contains("run-time integer tensor 'ids'"),
        "{err:#}"
    );
}

/// Clip whose bounds are computed at run time (a log-mel front end clips at its own
/// maximum minus 80 dB): element-wise Max/Min with broadcasting.
#[test]
fn clip_with_run_time_bounds() {
    let clip = NodeProto {
        input: vec!["x".into(), "lo".into(), "hi".into()],
        output: vec!["y".into()],
        name: "clip".into(),
        op_type: "Clip".into(),
        ..Default::default()
    };
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: vec![clip],
            input: vec![
                value("x", 1, &[1, 4]),
                value("lo", 1, &[]),
                value("hi", 1, &[]),
            ],
            output: vec![value("y", 1, &[1, 4])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let conv = cairn_convert::convert(&m.encode_to_vec(), &Default::default(), |_| {}).unwrap();
    let bytes = cairn_core::emit::AlignedBytes::from_slice(&conv.bytes);
    let mut hm = cairn_kernels::host::HostModel::new(bytes.as_slice()).unwrap();
    let out = hm.run(&[&[-3.0, -0.5, 0.5, 3.0], &[-1.0], &[2.0]]).unwrap();
    assert_eq!(out[0], [-1.0, -0.5, 0.5, 2.0]);
}

/// An input whose first dim is not fixed: `check` reports the input with the
/// `--input-shape NAME=...` that fixes it, and a shape error behind it (the Concat of the
/// guessed batch of 1 with a batch of 2) names that input as the likely cause, not only
/// "Concat shapes do not fit".
#[test]
fn unfixed_input_dims_are_named_in_the_shape_errors_behind_them() {
    use cairn_convert::onnx_pb::tensor_shape_proto::dimension::Value as Dim;
    use cairn_convert::onnx_pb::type_proto::Value;
    let mut x = value("x", 1, &[1, 4]);
    if let Some(Value::TensorType(t)) = x.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        if let Some(d) = t.shape.as_mut().map(|s| &mut s.dim[0]) {
            d.value = Some(Dim::DimParam("batch".into()));
        }
    }
    let concat = NodeProto {
        input: vec!["x".into(), "y".into()],
        output: vec!["z".into()],
        name: "concat".into(),
        op_type: "Concat".into(),
        attribute: vec![common::int_attr("axis", 1)],
        ..Default::default()
    };
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: vec![concat],
            input: vec![x, value("y", 1, &[2, 4])],
            output: vec![value("z", 1, &[2, 8])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let report = cairn_convert::check(&m.encode_to_vec(), &Default::default()).unwrap();
    assert_eq!(report.problems.len(), 2, "{report:?}");
    let (input, concat) = (&report.problems[0], &report.problems[1]);
    assert_eq!(input.node, "input 'x'");
    assert!(
        input.reason.contains("[?, 4]") && input.reason.contains("--input-shape x=D0,4"),
        "{}",
        input.reason
    );
    assert_eq!(concat.op, "Concat");
    assert!(
        concat.reason.contains("input 'x'") && concat.reason.contains("--input-shape x=D0,4"),
        "{}",
        concat.reason
    );
    // Given the dim, the model checks clean.
    let opts = cairn_convert::Options {
        input_shapes: [("x".to_string(), vec![2, 4])].into_iter().collect(),
        ..Default::default()
    };
    let report = cairn_convert::check(&m.encode_to_vec(), &opts).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
}

/// A model that lowers to more ops than a `.cairn` file holds (an RNN unrolled over a long
/// sequence) is refused with the counts, the limits and what to try, not a bare
/// `TooLarge`.
#[test]
fn a_model_past_the_op_limit_says_how_far_past() {
    let n = cairn_core::model::MAX_OPS + 10;
    let names: Vec<String> = (0..=n).map(|i| format!("t{i}")).collect();
    let graph = GraphProto {
        node: (0..n)
            .map(|i| node("Relu", &names[i], &names[i + 1]))
            .collect(),
        input: vec![value("t0", 1, &[1, 4])],
        output: vec![value(&names[n], 1, &[1, 4])],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    // Without calibration, and with it: refused on the float graph's count, before the
    // calibration runs (which on a long recurrence takes minutes), not on the quantized
    // graph's (which adds a quantize and a dequantize step).
    let calibrated = cairn_convert::Options {
        calibration: vec![vec![vec![0.5, -1.0, 2.0, 3.0]]],
        ..Default::default()
    };
    for opts in [Default::default(), calibrated] {
        let e = match cairn_convert::convert(&model.encode_to_vec(), &opts, |_| {}) {
            Ok(_) => panic!("converted {n} ops"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            e.contains(&format!("lowers to {n} ops"))
                && e.contains(&format!("at most {} ops", cairn_core::model::MAX_OPS)),
            "{e}"
        );
    }
}

//! `Loop` and `Scan` unrolled at convert time (`lower_loop.rs`): a Scan running backwards
//! with its outputs stacked along axis 1 gives the hand-computed sums, and a Loop whose
//! trip count is computed at run time, or one too long to unroll, is refused with the
//! reason. (The ONNX node tests cover the forward forms: test_loop11, test_scan*_sum.)

mod common;
use common::{int_attr, ints_attr, model_bytes, node, value};

use cairn_convert::onnx_pb::attribute_proto::AttributeType;
use cairn_convert::onnx_pb::{AttributeProto, GraphProto, TensorProto};
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        g: Some(g),
        r#type: AttributeType::Graph as i32,
        ..Default::default()
    }
}

/// A running sum over x [2, 3] along axis 1, from the last column back: the state is
/// [2], the scan output stacked along axis 1 ([2, 3]), reversed back into input order.
#[test]
fn a_reverse_scan_stacks_along_its_output_axis() {
    let body = GraphProto {
        node: vec![
            node("Add", &["s_in", "col"], &["s_out"], vec![]),
            node("Identity", &["s_out"], &["seen"], vec![]),
        ],
        input: vec![value("s_in", 1, &[2]), value("col", 1, &[2])],
        output: vec![value("s_out", 1, &[2]), value("seen", 1, &[2])],
        ..Default::default()
    };
    let scan = node(
        "Scan",
        &["init", "x"],
        &["last", "sums"],
        vec![
            graph_attr("body", body),
            int_attr("num_scan_inputs", 1),
            ints_attr("scan_input_axes", &[1]),
            ints_attr("scan_input_directions", &[1]),
            ints_attr("scan_output_axes", &[1]),
            ints_attr("scan_output_directions", &[1]),
        ],
    );
    let model = model_bytes(
        GraphProto {
            node: vec![scan],
            input: vec![value("init", 1, &[2]), value("x", 1, &[2, 3])],
            output: vec![value("last", 1, &[2]), value("sums", 1, &[2, 3])],
            ..Default::default()
        },
        17,
    );
    let opts = Options {
        float: true,
        ..Options::default()
    };
    let c = convert(&model, &opts, |_| {}).unwrap();
    assert!(
        c.notes.iter().any(|n| n.contains("unrolled")),
        "{:?}",
        c.notes
    );
    let b = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(b.as_slice()).unwrap();
    let init = [10.0, 100.0];
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let out = m.run(&[&init, &x]).unwrap();
    // Backwards: row 0 adds 3, then 2, then 1; row 1 adds 6, 5, 4.
    assert_eq!(out[0], vec![16.0, 115.0]);
    // Output direction 1 stacks the steps last-first: column j holds the sum once
    // column j was added.
    assert_eq!(out[1], vec![16.0, 15.0, 13.0, 115.0, 111.0, 106.0]);
}

fn loop_model(trip_count: TensorProto, runtime_count: bool) -> Vec<u8> {
    let body = GraphProto {
        node: vec![
            node("Identity", &["c_in"], &["c_out"], vec![]),
            node("Add", &["v_in", "v_in"], &["v_out"], vec![]),
        ],
        input: vec![
            value("i", 7, &[]),
            value("c_in", 9, &[]),
            value("v_in", 1, &[2]),
        ],
        output: vec![value("c_out", 9, &[]), value("v_out", 1, &[2])],
        ..Default::default()
    };
    let mut inputs = vec![value("v", 1, &[2])];
    let mut init = vec![];
    if runtime_count {
        inputs.push(value("m", 7, &[]));
    } else {
        init.push(trip_count);
    }
    model_bytes(
        GraphProto {
            node: vec![node(
                "Loop",
                &["m", "", "v"],
                &["y"],
                vec![graph_attr("body", body)],
            )],
            input: inputs,
            initializer: init,
            output: vec![value("y", 1, &[2])],
            ..Default::default()
        },
        17,
    )
}

fn trips(n: i64) -> TensorProto {
    TensorProto {
        name: "m".into(),
        data_type: 7,
        int64_data: vec![n],
        ..Default::default()
    }
}

#[test]
fn a_loop_doubles_as_often_as_its_trip_count() {
    let opts = Options {
        float: true,
        ..Options::default()
    };
    let c = convert(&loop_model(trips(5), false), &opts, |_| {}).unwrap();
    let b = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(b.as_slice()).unwrap();
    assert_eq!(m.run(&[&[1.0, -3.0]]).unwrap()[0], vec![32.0, -96.0]);
}

#[test]
fn a_loop_known_only_at_run_time_or_too_long_is_refused() {
    let opts = Options {
        float: true,
        ..Options::default()
    };
    // An integer graph input is a run-time value unless given with --const-input.
    let refused = |model: Vec<u8>| match convert(&model, &opts, |_| {}) {
        Ok(_) => panic!("converted"),
        Err(e) => e,
    };
    let e = refused(loop_model(trips(5), true));
    assert!(format!("{e:#}").contains("known at convert time"), "{e:#}");
    let e = refused(loop_model(trips(1 << 20), false));
    assert!(format!("{e:#}").contains("iterations to unroll"), "{e:#}");
}

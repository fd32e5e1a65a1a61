//! An f32 Conv whose output only an activation function reads takes the function into its
//! parameters (`fuse::fuse_conv_functions`, `conv::ACT_FN`): SiLU (`x · sigmoid(x)`) after
//! a conv is one op; a conv output read twice, or that is a graph output, keeps its own
//! `Unary`. The model's outputs are the unfused float graph's, bit for bit. Seeded
//! (`CAIRN_SEED`).

mod common;
use common::{f32_init, ints_attr, node, value};

use cairn_convert::onnx_pb::GraphProto;
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_core::model::Model;
use cairn_core::op::conv;
use cairn_core::OpKind;
use cairn_kernels::host::HostModel;

fn run(bytes: &[u8], x: &[f32]) -> Vec<Vec<f32>> {
    let aligned = AlignedBytes::from_slice(bytes);
    let mut m = HostModel::new(aligned.as_slice()).expect("load");
    m.run(&[x]).expect("run")
}

#[test]
fn conv_then_activation_is_one_op() {
    let seed = common::seed(0xAC7);
    let mut st = seed;
    let mut rand = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| (common::splitmix(&mut st) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
            .collect()
    };
    let (c, oc, h, w) = (3usize, 8usize, 12usize, 12usize);
    let pads = || ints_attr("pads", &[1, 1, 1, 1]);
    let graph = GraphProto {
        node: vec![
            node("Conv", &["x", "wa", "ba"], &["a"], vec![pads()]),
            node("Sigmoid", &["a"], &["sa"], vec![]),
            node("Mul", &["a", "sa"], &["silu"], vec![]),
            node("Conv", &["x", "wb"], &["b"], vec![pads()]),
            node("Tanh", &["b"], &["tb"], vec![]),
            node("Add", &["tb", "b"], &["twice"], vec![]),
            node("Conv", &["x", "wc"], &["cc"], vec![pads()]),
            node("Sigmoid", &["cc"], &["sc"], vec![]),
        ],
        initializer: vec![
            f32_init("wa", &[oc as i64, c as i64, 3, 3], &rand(oc * c * 9)),
            f32_init("ba", &[oc as i64], &rand(oc)),
            f32_init("wb", &[oc as i64, c as i64, 3, 3], &rand(oc * c * 9)),
            f32_init("wc", &[oc as i64, c as i64, 3, 3], &rand(oc * c * 9)),
        ],
        input: vec![value("x", 1, &[1, c as i64, h as i64, w as i64])],
        output: ["silu", "twice", "cc", "sc"]
            .iter()
            .map(|n| value(n, 1, &[1, oc as i64, h as i64, w as i64]))
            .collect(),
        name: "g".into(),
        ..Default::default()
    };
    let conv = convert(&common::model_bytes(graph, 13), &Options::default(), |_| {})
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    assert!(
        conv.notes
            .iter()
            .any(|n| n.starts_with("1 f32 convs apply")),
        "{:?}",
        conv.notes
    );
    let aligned = AlignedBytes::from_slice(&conv.bytes);
    let m = Model::parse(aligned.as_slice()).unwrap();
    let ops: Vec<_> = (0..m.n_ops()).map(|i| m.op(i).unwrap()).collect();
    let fused: Vec<_> = ops
        .iter()
        .filter(|op| op.kind == OpKind::Conv && op.n_params() == conv::LEN_ACT)
        .collect();
    assert_eq!(fused.len(), 1, "one conv takes its SiLU");
    assert_eq!(
        fused[0].param(conv::ACT_FN),
        cairn_core::op::UnaryFn::Silu as i32
    );
    let unary = ops.iter().filter(|op| op.kind == OpKind::Unary).count();
    assert_eq!(
        unary, 2,
        "the Tanh read with its input and the Sigmoid of an output stay"
    );
    // The float graph before this rewrite, run on the same host: the same bits.
    let unfused = conv.float_graph.to_builder().unwrap().finish().unwrap();
    let x = rand(c * h * w);
    assert_eq!(run(&conv.bytes, &x), run(&unfused, &x), "seed {seed}");
}

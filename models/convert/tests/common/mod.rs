//! Helpers shared by the converter's tests (each test crate uses some of them).
#![allow(dead_code)]

use cairn_convert::ir::HOp;
use cairn_core::OpKind;

/// An op on tensors `inputs` writing tensor `out`, named after its kind and output.
pub fn op(kind: OpKind, inputs: &[usize], out: usize, params: Vec<i32>) -> HOp {
    HOp {
        kind,
        inputs: inputs.iter().map(|&t| Some(t)).collect(),
        outputs: vec![out],
        params,
        name: format!("{kind:?}{out}"),
    }
}

/// A float-typed graph value `name` (ONNX element type `elem_type`) of fixed `dims`.
pub fn value(name: &str, elem_type: i32, dims: &[i64]) -> cairn_convert::onnx_pb::ValueInfoProto {
    use cairn_convert::onnx_pb::tensor_shape_proto::{dimension, Dimension};
    use cairn_convert::onnx_pb::{type_proto, TensorShapeProto, TypeProto, ValueInfoProto};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An ONNX node `op` from `inputs` to `outputs` with `attribute`, named after its op and
/// first output.
pub fn node(
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<cairn_convert::onnx_pb::AttributeProto>,
) -> cairn_convert::onnx_pb::NodeProto {
    cairn_convert::onnx_pb::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: format!("{op}_{}", outputs[0]),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// An ONNX attribute holding a list of integers.
pub fn ints_attr(name: &str, ints: &[i64]) -> cairn_convert::onnx_pb::AttributeProto {
    cairn_convert::onnx_pb::AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: cairn_convert::onnx_pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    }
}

/// An integer ONNX attribute.
pub fn int_attr(name: &str, i: i64) -> cairn_convert::onnx_pb::AttributeProto {
    cairn_convert::onnx_pb::AttributeProto {
        name: name.into(),
        i,
        r#type: cairn_convert::onnx_pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    }
}

/// The seed of a randomised test: `CAIRN_SEED`, else `default` (print it on failure).
pub fn seed(default: u64) -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One SplitMix64 step: the next 64 random bits from `state`.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The bytes of a model holding `graph` at ONNX IR 8 and default-domain opset `opset`.
pub fn model_bytes(graph: cairn_convert::onnx_pb::GraphProto, opset: i64) -> Vec<u8> {
    use prost::Message;
    cairn_convert::onnx_pb::ModelProto {
        ir_version: 8,
        opset_import: vec![cairn_convert::onnx_pb::OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// An f32 initializer `name` of `dims` holding `v`.
pub fn f32_init(name: &str, dims: &[i64], v: &[f32]) -> cairn_convert::onnx_pb::TensorProto {
    cairn_convert::onnx_pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// No activation clamp: the (lo, hi) parameter pair of an op without one.
#[allow(dead_code)] // not every test file builds ops with an activation slot
pub const NO_ACT: [i32; 2] = [
    f32::NEG_INFINITY.to_bits() as i32,
    f32::INFINITY.to_bits() as i32,
];

/// Run a one-input graph through a `HostModel` (the host's fast kernels); its first output.
pub fn run_graph(g: &cairn_convert::Graph, x: &[f32]) -> Vec<f32> {
    let bytes =
        cairn_core::emit::AlignedBytes::from_slice(&g.to_builder().unwrap().finish().unwrap());
    let mut m = cairn_kernels::host::HostModel::new(bytes.as_slice()).unwrap();
    m.run(&[x]).unwrap().remove(0)
}

/// A uniform value in `[lo, hi)` from `state` (24 random bits).
pub fn uniform(state: &mut u64, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * ((splitmix(state) >> 40) as f32 / (1u64 << 24) as f32)
}

/// `n` uniform values in `[−a, a)`.
pub fn rand_vec(state: &mut u64, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| uniform(state, -a, a)).collect()
}

/// An int64 initializer `name` of one dimension holding `v`.
pub fn i64_init(name: &str, v: &[i64]) -> cairn_convert::onnx_pb::TensorProto {
    cairn_convert::onnx_pb::TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: 7,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

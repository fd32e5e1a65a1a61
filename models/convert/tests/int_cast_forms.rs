//! A run-time int32 tensor cast to float and used as a number (an id or byte input read
//! as a value, not a 0/1 comparison result): it converts (a Dequantize of the
//! unquantized i32, scale 1, zero point 0), builds and runs. Seeded (`CAIRN_SEED`).

mod common;
use common::{int_attr, node, value};

use cairn_convert::onnx_pb::{GraphProto, ModelProto, OperatorSetIdProto, TensorProto};
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;
use prost::Message;

fn seed() -> u64 {
    common::seed(14)
}

/// SplitMix64 → an integer in [lo, hi).
fn int_in(state: &mut u64, lo: i32, hi: i32) -> i32 {
    let z = common::splitmix(state);
    lo + (z % (hi - lo) as u64) as i32
}

fn f32_init(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// int32 x [1, 8] → Cast(float) → Mul by a per-column constant: the product of the
/// integers as floats (exact here: the integers and weights are small).
#[test]
fn run_time_int32_cast_to_float_is_its_value() {
    let seed = seed();
    let n = 8usize;
    let mut st = seed;
    let w: Vec<f32> = (0..n)
        .map(|_| int_in(&mut st, -8, 8) as f32 * 0.25)
        .collect();
    let bytes = ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            node: vec![
                node("Cast", &["x"], &["xf"], vec![int_attr("to", 1)]),
                node("Mul", &["xf", "w"], &["y"], vec![]),
            ],
            initializer: vec![f32_init("w", &[n as i64], &w)],
            input: vec![value("x", 6, &[1, n as i64])],
            output: vec![value("y", 1, &[1, n as i64])],
            name: "g".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let c = convert(&bytes, &Options::default(), |_| {})
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    let model = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(model.as_slice()).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
    for _ in 0..4 {
        let mut x: Vec<f32> = (0..n).map(|_| int_in(&mut st, -300, 300) as f32).collect();
        x[0] = 65_536.0;
        let out = m
            .run(&[&x])
            .unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        let want: Vec<f32> = x.iter().zip(&w).map(|(a, b)| a * b).collect();
        assert_eq!(out[0], want, "seed {seed}: x {x:?}");
    }
}

//! A calibrated conversion moves data in f32 where no int8 op reads the moved bytes: a
//! recurrent model's input frames, reshaped and sliced for the input projections of an
//! LSTM that keeps f32 activations, were quantized to int8 and dequantized again (two
//! passes over the data, and the values rounded to 256 steps). Where an int8 op does read
//! them, the int8 movement stays. Seeded; `CAIRN_SEED` replays.

mod common;
use common::{f32_init, i64_init, int_attr, model_bytes, node, rand_vec, seed, value};

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::onnx_pb::GraphProto;
use cairn_convert::quantize::quantize;
use cairn_convert::sensitive::default_passes;
use cairn_convert::{float_graph, Graph, Options};
use cairn_core::{DType, OpKind};

const T: usize = 6;
const I: usize = 10;
const H: usize = 8;

/// x [T, I] in; reshaped to [T, 1, I], its last `I - 2` features sliced off the front
/// two, then an LSTM of hidden H; with `fc`, the sliced frames also go through a MatMul
/// (an int8 op) to a second output.
fn model(seed: u64, fc: bool) -> Vec<u8> {
    let mut s = seed;
    let k = I - 2;
    let w = rand_vec(&mut s, 4 * H * k, 0.5);
    let r = rand_vec(&mut s, 4 * H * H, 0.3);
    let b = rand_vec(&mut s, 8 * H, 0.2);
    let m = rand_vec(&mut s, k * 4, 0.5);
    let mut nodes = vec![
        node("Reshape", &["x", "shape"], &["x3"], vec![]),
        node("Slice", &["x3", "starts", "ends", "axes"], &["xs"], vec![]),
        node(
            "LSTM",
            &["xs", "W", "R", "B"],
            &["y"],
            vec![int_attr("hidden_size", H as i64)],
        ),
    ];
    let mut output = vec![value("y", 1, &[T as i64, 1, 1, H as i64])];
    if fc {
        nodes.push(node("MatMul", &["xs", "M"], &["z"], vec![]));
        output.push(value("z", 1, &[T as i64, 1, 4]));
    }
    let graph = GraphProto {
        node: nodes,
        initializer: vec![
            f32_init("W", &[1, 4 * H as i64, k as i64], &w),
            f32_init("R", &[1, 4 * H as i64, H as i64], &r),
            f32_init("B", &[1, 8 * H as i64], &b),
            f32_init("M", &[k as i64, 4], &m),
            i64_init("shape", &[T as i64, 1, I as i64]),
            i64_init("starts", &[2]),
            i64_init("ends", &[I as i64]),
            i64_init("axes", &[2]),
        ],
        input: vec![value("x", 1, &[T as i64, I as i64])],
        output,
        ..Default::default()
    };
    model_bytes(graph, 17)
}

fn samples(s: &mut u64, n: usize) -> Vec<Vec<Vec<f32>>> {
    (0..n).map(|_| vec![rand_vec(s, T * I, 2.0)]).collect()
}

/// The float graph and its calibrated int8 graph, with the map from float tensors to
/// int8 graph tensors.
fn converted(seed: u64, fc: bool) -> (Graph, Graph, std::collections::HashMap<usize, usize>) {
    let (g, _) = float_graph(&model(seed, fc), &Options::default()).unwrap();
    let mut s = seed ^ 0xCA1;
    let calib = samples(&mut s, 4);
    let mut ranges = calibrate(&g, &calib, Method::MinMax, |_| {}).unwrap();
    // The passes of a conversion, one of which keeps the LSTM f32.
    default_passes(&g, &calib, &mut ranges, 0.05, &mut Vec::new()).unwrap();
    let (q, rep) = quantize(&g, &ranges).unwrap();
    (g, q, rep.values)
}

/// The float graph's tensor the Slice writes.
fn sliced(g: &Graph) -> usize {
    g.ops
        .iter()
        .find(|o| o.kind == OpKind::Slice)
        .expect("a Slice")
        .outputs[0]
}

#[test]
fn frames_for_f32_projections_move_in_f32() {
    let seed = seed(0x7219);
    let (g, q, values) = converted(seed, false);
    let what = format!("CAIRN_SEED={seed}");
    let kinds: Vec<OpKind> = q.ops.iter().map(|o| o.kind).collect();
    assert!(
        !kinds.contains(&OpKind::Quantize) && !kinds.contains(&OpKind::Dequantize),
        "{what}: {kinds:?}"
    );
    for o in q
        .ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Reshape | OpKind::Slice))
    {
        assert_eq!(
            q.tensors[o.outputs[0]].dtype,
            DType::F32,
            "{what}: {}",
            o.name
        );
    }
    // The sliced frames hold the input's own values, bit for bit.
    let mut s = seed ^ 0xF00D;
    let x = rand_vec(&mut s, T * I, 3.0);
    let vals = q.run_all(std::slice::from_ref(&x)).unwrap();
    let t = values[&sliced(&g)];
    let got: &[f32] = bytemuck::cast_slice(vals[&t].as_slice());
    let want: Vec<f32> = x.chunks_exact(I).flat_map(|r| r[2..].to_vec()).collect();
    assert_eq!(got, &want[..], "{what}");
}

#[test]
fn frames_an_int8_op_reads_stay_int8() {
    let seed = seed(0x7220);
    let (g, q, values) = converted(seed, true);
    let what = format!("CAIRN_SEED={seed}");
    // The MatMul reads the sliced frames as int8, so they stay int8 (the LSTM's
    // projection dequantizes them), and the input is quantized once.
    let t = values[&sliced(&g)];
    assert_eq!(q.tensors[t].dtype, DType::I8, "{what}");
    let quantizes = q.ops.iter().filter(|o| o.kind == OpKind::Quantize).count();
    assert_eq!(quantizes, 1, "{what}");
    assert!(
        q.ops.iter().any(|o| o.kind == OpKind::FullyConnected
            && o.inputs[0].is_some_and(|x| q.tensors[x].dtype == DType::I8)),
        "{what}: no int8 FullyConnected"
    );
}

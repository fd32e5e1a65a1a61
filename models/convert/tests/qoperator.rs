//! Models quantized by ONNX Runtime convert and run in integers: a small CNN quantized by
//! `quantize_static` in the QOperator format (QLinearConv, QLinearMatMul, the com.microsoft
//! QLinear* ops, QGemm, MaxPool/Reshape on uint8 tensors) must compute what its QDQ twin
//! (each QLinear node written out as DequantizeLinear → float op → QuantizeLinear with the
//! node's own params) computes, and a `quantize_dynamic` MLP (DynamicQuantizeLinear → MatMulInteger) must
//! compute the MLP on its exactly dequantized weights. Fixtures and expected outputs come
//! from tests/data/qop/make.py (seeded weights, ONNX Runtime as the oracle).

mod common;
use common::value;
use std::path::PathBuf;

use cairn_convert::onnx::{load_model, tensor_from_proto};
use cairn_convert::onnx_pb::{attribute_proto::AttributeType, AttributeProto};
use cairn_convert::{convert, npy, Converted, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;
use prost::Message;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/qop")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn run(c: &Converted, x: &[f32]) -> Vec<Vec<f32>> {
    let bytes = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(bytes.as_slice()).expect("load");
    m.run(&[x]).expect("run")
}

/// A float initializer of an ONNX file (a scale).
fn scalar(file: &str, name: &str) -> f32 {
    let m = load_model(&read(file)).unwrap();
    let t = m
        .graph
        .unwrap()
        .initializer
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} not in {file}"));
    tensor_from_proto(&t).unwrap().to_f32()[0]
}

/// Largest |a − b| in steps of `step`.
fn lsb(a: &[f32], b: &[f32], step: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) / step).abs())
        .fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn qoperator_cnn_runs_in_int8_as_its_qdq_form() {
    let x = npy::read(&data("x.npy")).unwrap().data;
    let c = convert(&read("qop.onnx"), &Options::default(), |_| {}).unwrap();
    println!(
        "qop.onnx: mode {}, {} int8 ops, f32 ops {:?}, notes {:?}",
        c.mode, c.int8_ops, c.f32_ops, c.notes
    );
    assert_eq!(
        c.mode, "qdq",
        "the QOperator params must be the model's own"
    );
    // Every compute op of the graph runs in int8 (a QLinear node left in f32 would show).
    assert!(c.f32_ops.is_empty(), "ops left in f32: {:?}", c.f32_ops);
    assert!(c.int8_ops >= 15, "only {} int8 ops", c.int8_ops);
    let out = run(&c, &x);

    // The QDQ twin, converted by cairn, computes the same integers.
    let d = convert(&read("qdq.onnx"), &Options::default(), |_| {}).unwrap();
    assert_eq!(d.mode, "qdq");
    let out_qdq = run(&d, &x);

    // And both are held to ONNX Runtime on the QDQ graph as written.
    let s_logits = scalar("qop.onnx", "logits_scale");
    let s_probs = scalar("qop.onnx", "probs_scale");
    let logits = npy::read(&data("qdq_logits.npy")).unwrap().data;
    let probs = npy::read(&data("qdq_probs.npy")).unwrap().data;
    let ort_qop = npy::read(&data("qop_logits.npy")).unwrap().data;
    let (dl, dp) = (
        lsb(&out[0], &logits, s_logits),
        lsb(&out[1], &probs, s_probs),
    );
    println!(
        "logits: {dl} LSB from ORT (QDQ as written), {} LSB from ORT's QOperator kernels, {} LSB from cairn's QDQ conversion; probs: {dp} LSB",
        lsb(&out[0], &ort_qop, s_logits),
        lsb(&out[0], &out_qdq[0], s_logits),
    );
    assert_eq!(
        out, out_qdq,
        "the QOperator model and its QDQ twin differ in cairn"
    );
    // 0 LSB when this was written. Rounding in the sums (exact integers in cairn, f32 sums
    // in ORT's float ops) may flip a value lying at a rounding boundary by one step.
    assert!(dl <= 1.0, "logits {dl} LSB from ONNX Runtime");
    assert!(dp <= 2.0, "probs {dp} LSB from ONNX Runtime");
    for r in 0..4 {
        assert_eq!(
            argmax(&out[0][r * 5..r * 5 + 5]),
            argmax(&logits[r * 5..r * 5 + 5]),
            "top-1 of row {r}"
        );
    }
}

#[test]
fn qoperator_cnn_converts_to_f32() {
    let x = npy::read(&data("x.npy")).unwrap().data;
    let opts = Options {
        float: true,
        ..Default::default()
    };
    let c = convert(&read("qop.onnx"), &opts, |_| {}).unwrap();
    assert_eq!(c.mode, "float");
    assert_eq!(c.int8_ops, 0);
    let out = run(&c, &x);
    let logits = npy::read(&data("qdq_logits.npy")).unwrap().data;
    let d = lsb(&out[0], &logits, scalar("qop.onnx", "logits_scale"));
    println!("f32 conversion: logits {d} LSB from ORT's int8 QDQ graph");
    // The float path skips every activation rounding (as it does for a QDQ model): a few
    // steps apart, no more.
    assert!(d <= 8.0, "f32 logits {d} LSB from the int8 graph");
}

/// `quantize_dynamic`'s MLP without calibration samples: its wide MatMul runs on the model's
/// own int8 weights with the rows quantized at run time (FullyConnected.f32-w8), within the
/// rounding of the rows of the float product on the exactly dequantized weights (the numpy
/// reference); with `--float`, on those weights in f32 (to 1e-5).
#[test]
fn dynamic_quantization_runs_on_the_int8_weights() {
    let x = npy::read(&data("dyn_x.npy")).unwrap().data;
    let want = npy::read(&data("dyn_ref.npy")).unwrap().data;
    let range = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let c = convert(&read("dyn.onnx"), &Options::default(), |_| {}).unwrap();
    assert_eq!(c.mode, "dynamic", "{:?}", c.notes);
    let ab = AlignedBytes::from_slice(&c.bytes);
    let m = cairn_core::Model::parse(ab.as_slice()).unwrap();
    let w8 = (0..m.n_ops())
        .filter(|&i| {
            m.kernel_of(i)
                .is_some_and(|k| k.variant == cairn_core::kernel::Variant::W8F32)
        })
        .count();
    // The hidden layer; the 6-output head stays f32 (too few outputs per row to pay for
    // quantizing its rows).
    assert!(
        w8 == 1 && c.int8_ops == w8,
        "{w8} f32-w8 ops, {:?}",
        c.notes
    );
    let err = max_error(&run(&c, &x).remove(0), &want);
    println!(
        "dynamic MLP, int8 weights and run-time rows: max error {:.2}% of the output range",
        100.0 * err / range
    );
    assert!(
        err > 0.0 && err <= 0.03 * range,
        "error {err} of range {range}"
    );
    let f = Options {
        float: true,
        ..Default::default()
    };
    let c = convert(&read("dyn.onnx"), &f, |_| {}).unwrap();
    assert_eq!(c.mode, "float");
    assert!(
        c.notes.iter().any(|n| n.contains("dynamic quantization")),
        "{:?}",
        c.notes
    );
    let y = run(&c, &x).remove(0);
    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs() + 1e-5,
            "y[{i}] = {a}, expected {b}"
        );
    }
    // With calibration samples it becomes cairn's static int8.
    let opts = Options {
        calibration: vec![vec![x.clone()]],
        ..Default::default()
    };
    let c = convert(&read("dyn.onnx"), &opts, |_| {}).unwrap();
    assert_eq!(c.mode, "calibrated");
    assert!(c.int8_ops >= 2, "{} int8 ops", c.int8_ops);
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("without --calibrate, 1 FullyConnected")),
        "{:?}",
        c.notes
    );
    let err = max_error(&run(&c, &x).remove(0), &want);
    println!(
        "dynamic MLP, calibrated int8: max error {:.2}% of the output range",
        100.0 * err / range
    );
    assert!(err <= 0.03 * range, "int8 error {err} of range {range}");
}

/// The largest |y − want|.
fn max_error(y: &[f32], want: &[f32]) -> f32 {
    y.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Set attribute `name` of every node of type `op` to the integer `v`.
fn with_int_attr(bytes: &[u8], op: &str, name: &str, v: i64) -> Vec<u8> {
    let mut m = load_model(bytes).unwrap();
    for n in m.graph.as_mut().unwrap().node.iter_mut() {
        if n.op_type == op {
            n.attribute.retain(|a| a.name != name);
            n.attribute.push(AttributeProto {
                name: name.into(),
                i: v,
                r#type: AttributeType::Int as i32,
                ..Default::default()
            });
        }
    }
    m.encode_to_vec()
}

#[test]
fn unsupported_attributes_are_errors_that_name_them() {
    let qop = read("qop.onnx");
    for (op, attr) in [
        ("QLinearAveragePool", "channels_last"),
        ("QLinearGlobalAveragePool", "channels_last"),
    ] {
        let bad = with_int_attr(&qop, op, attr, 1);
        let e = match convert(&bad, &Options::default(), |_| {}) {
            Ok(_) => panic!("{op} with {attr} = 1 converted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(op) && e.contains(attr), "{e}");
    }
    // A QGemm output with per-channel params is refused, with the node named.
    let m = load_model(&qop).unwrap();
    let mut g = m.graph.clone().unwrap();
    let ys = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "logits_scale")
        .unwrap();
    let v = ys.float_data.first().copied().or_else(|| {
        ys.raw_data
            .get(..4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    });
    ys.raw_data.clear();
    ys.float_data = vec![v.unwrap(); 5];
    ys.dims = vec![5];
    let mut m2 = m.clone();
    m2.graph = Some(g);
    let e = match convert(&m2.encode_to_vec(), &Options::default(), |_| {}) {
        Ok(_) => panic!("per-channel output params converted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("per-channel"), "{e}");
}

/// SplitMix64 → uniform f32 in [lo, hi).
fn uniform(state: &mut u64, lo: f32, hi: f32) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
}

/// DynamicQuantizeLinear and MatMulInteger computed at run time (not the
/// `quantize_dynamic` pattern: the integer results are outputs) are exact: the same
/// integers as ONNX's definition, on seeded random inputs (`CAIRN_SEED` replays).
#[test]
fn run_time_dynamic_quantization_is_exact() {
    use cairn_convert::onnx_pb::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    };
    let seed = std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14u64);
    let (m, k, n) = (3usize, 40usize, 5usize);
    let mut st = seed;
    let b: Vec<i8> = (0..k * n)
        .map(|_| uniform(&mut st, -128.0, 128.0).floor() as i8)
        .collect();
    let node = |op: &str, i: &[&str], o: &[&str]| NodeProto {
        input: i.iter().map(|s| s.to_string()).collect(),
        output: o.iter().map(|s| s.to_string()).collect(),
        name: op.into(),
        op_type: op.into(),
        ..Default::default()
    };
    let graph = GraphProto {
        node: vec![
            node("DynamicQuantizeLinear", &["x"], &["y", "ys", "yz"]),
            node("MatMulInteger", &["y", "b", "yz", "bz"], &["acc"]),
        ],
        initializer: vec![
            TensorProto {
                name: "b".into(),
                dims: vec![k as i64, n as i64],
                data_type: 3,
                raw_data: b.iter().map(|&v| v as u8).collect(),
                ..Default::default()
            },
            TensorProto {
                name: "bz".into(),
                dims: vec![],
                data_type: 3,
                raw_data: vec![3],
                ..Default::default()
            },
        ],
        input: vec![value("x", 1, &[m as i64, k as i64])],
        output: vec![
            value("acc", 6, &[m as i64, n as i64]),
            value("ys", 1, &[]),
            value("yz", 2, &[]),
        ],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    let c = convert(&model.encode_to_vec(), &Options::default(), |_| {}).unwrap();
    for trial in 0..20 {
        let hi = uniform(&mut st, 0.1, 8.0);
        let lo = if trial % 5 == 0 {
            0.5
        } else {
            -uniform(&mut st, 0.0, 8.0)
        };
        let x: Vec<f32> = (0..m * k).map(|_| uniform(&mut st, lo, hi)).collect();
        // ONNX's definition, in f32 as its reference computes it.
        let maxx = x.iter().fold(0.0f32, |a, &v| a.max(v));
        let minx = x.iter().fold(0.0f32, |a, &v| a.min(v));
        let range = if maxx == minx { 1.0 } else { maxx - minx };
        let scale = range / 255.0;
        let zp = (-(minx / scale)).clamp(0.0, 255.0).round_ties_even();
        let y: Vec<f32> = x
            .iter()
            .map(|&v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0))
            .collect();
        let mut want = vec![0.0f32; m * n];
        for r in 0..m {
            for col in 0..n {
                let s: i64 = (0..k)
                    .map(|i| (y[r * k + i] - zp) as i64 * (b[i * n + col] as i64 - 3))
                    .sum();
                want[r * n + col] = s as f32;
            }
        }
        let out = run(&c, &x);
        assert_eq!(out[0], want, "seed {seed}, trial {trial}: MatMulInteger");
        assert_eq!(out[1], vec![scale], "seed {seed}, trial {trial}: scale");
        assert_eq!(out[2], vec![zp], "seed {seed}, trial {trial}: zero point");
    }
}

/// A `quantize_dynamic` embedding table (uint8 rows gathered by run-time ids) whose rows
/// are read by a DequantizeLinear and also through a Transpose to another one of the same
/// params (a BiLSTM tagger's time-major input), or only through the Transpose (a GRU
/// seq2seq decoder's embedding): each is the exactly dequantized rows.
#[test]
fn quantized_table_rows_read_through_movement_ops() {
    for direct in [true, false] {
        table_rows_through_movement(direct);
    }
}

fn table_rows_through_movement(direct: bool) {
    use cairn_convert::onnx_pb::{GraphProto, TensorProto};
    let (n, d, len) = (7usize, 3usize, 5usize);
    let q: Vec<u8> = (0..n * d).map(|k| (k * 37 % 256) as u8).collect();
    let (scale, zp) = (0.03f32, 128u8);
    let mut nodes = vec![common::node(
        "Gather",
        &["table_q", "ids"],
        &["rows_q"],
        vec![],
    )];
    if direct {
        nodes.push(common::node(
            "DequantizeLinear",
            &["rows_q", "s", "z"],
            &["rows"],
            vec![],
        ));
    }
    nodes.extend([
        common::node(
            "Transpose",
            &["rows_q"],
            &["t_q"],
            vec![common::ints_attr("perm", &[1, 0, 2])],
        ),
        common::node("DequantizeLinear", &["t_q", "s", "z"], &["t"], vec![]),
    ]);
    let mut outputs = vec![value("t", 1, &[len as i64, 1, d as i64])];
    if direct {
        outputs.insert(0, value("rows", 1, &[1, len as i64, d as i64]));
    }
    let g = GraphProto {
        node: nodes,
        initializer: vec![
            TensorProto {
                name: "table_q".into(),
                dims: vec![n as i64, d as i64],
                data_type: 2,
                raw_data: q.clone(),
                ..Default::default()
            },
            TensorProto {
                name: "s".into(),
                data_type: 1,
                raw_data: scale.to_le_bytes().to_vec(),
                ..Default::default()
            },
            TensorProto {
                name: "z".into(),
                data_type: 2,
                raw_data: vec![zp],
                ..Default::default()
            },
        ],
        input: vec![value("ids", 7, &[1, len as i64])],
        output: outputs,
        name: "g".into(),
        ..Default::default()
    };
    let bytes = common::model_bytes(g, 13);
    let c = convert(&bytes, &Options::default(), |_| {})
        .unwrap_or_else(|e| panic!("direct reader {direct}: {e:#}"));
    let ids = [3.0f32, 0.0, 6.0, 3.0, 1.0];
    let out = run(&c, &ids);
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| (0..d).map(move |j| (i as usize * d + j, ())))
        .map(|(k, ())| (q[k] as i32 - zp as i32) as f32 * scale)
        .collect();
    // [1, len, d] and [len, 1, d] hold the same values in the same order.
    for o in &out {
        assert_eq!(o, &want, "direct reader {direct}");
    }
    assert_eq!(out.len(), 1 + direct as usize);
    // The table's params are the weights', not an activation's: the model is dynamically
    // quantized, so calibration samples make it cairn's static int8.
    let opts = Options {
        calibration: vec![vec![ids.to_vec()]],
        ..Default::default()
    };
    let c = convert(&bytes, &opts, |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(c.mode, "calibrated", "notes {:?}", c.notes);
}

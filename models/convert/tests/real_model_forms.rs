//! Forms found in real pretrained models that ship in packages, each cut down to a few
//! nodes with seeded weights (`CAIRN_SEED` replays):
//!
//! - ONNX Runtime's older `quantize_dynamic` Conv form (ddddocr's recognizer): the int32
//!   bias is quantized at run time with the activation's dynamic scale and added before
//!   the cast to float;
//! - com.microsoft DynamicQuantizeLSTM (the same model's BiLSTM);
//! - a run-time comparison cast to float (magika's byte input, one-hot by `Equal`);
//! - a detector whose output concatenates pixel boxes and 0–1 scores (YOLOv8's head).

mod common;
use common::{int_attr, ints_attr, node, value};

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::onnx_pb::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use cairn_convert::refine::refine;
use cairn_convert::{convert, Converted, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;
use prost::Message;

fn seed() -> u64 {
    common::seed(14)
}

/// SplitMix64 → uniform f32 in [lo, hi).
fn uniform(state: &mut u64, lo: f32, hi: f32) -> f32 {
    let z = common::splitmix(state);
    lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
}

fn str_attr(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: s.as_bytes().to_vec(),
        r#type: AttributeType::String as i32,
        ..Default::default()
    }
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

fn i8_init(name: &str, dims: &[i64], v: &[i8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 3,
        raw_data: v.iter().map(|&x| x as u8).collect(),
        ..Default::default()
    }
}

fn i32_init(name: &str, dims: &[i64], v: &[i32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 6,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn model(
    node: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    input: Vec<ValueInfoProto>,
    output: Vec<ValueInfoProto>,
) -> Vec<u8> {
    let opset = |domain: &str, version| OperatorSetIdProto {
        domain: domain.into(),
        version,
    };
    ModelProto {
        ir_version: 7,
        opset_import: vec![opset("", 12), opset("com.microsoft", 1)],
        graph: Some(GraphProto {
            node,
            initializer,
            input,
            output,
            name: "g".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn run(c: &Converted, inputs: &[&[f32]]) -> Vec<Vec<f32>> {
    let bytes = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(bytes.as_slice()).expect("load");
    m.run(inputs).expect("run")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// x [1, C, 6, 6] → the older `quantize_dynamic` Conv (3×3, no padding) with its int32
/// bias `Floor(b / (x_scale · w_scale))` added before the cast. It must compute the
/// float conv on the dequantized weights plus the float bias: the bias is not rounded
/// to the weight's scale.
#[test]
fn conv_integer_with_a_run_time_quantized_bias_is_the_float_conv() {
    let seed = seed();
    let mut st = seed;
    let (c, oc, hw) = (2usize, 3usize, 6usize);
    let wq: Vec<i8> = (0..oc * c * 9)
        .map(|_| uniform(&mut st, -127.0, 128.0).floor() as i8)
        .collect();
    let ws = 0.0173f32;
    let b: Vec<f32> = (0..oc).map(|_| uniform(&mut st, -1.0, 1.0)).collect();
    let x: Vec<f32> = (0..c * hw * hw)
        .map(|_| uniform(&mut st, -2.0, 3.0))
        .collect();
    let bytes = model(
        vec![
            node("DynamicQuantizeLinear", &["x"], &["xq", "xs", "xz"], vec![]),
            node("Mul", &["xs", "ws"], &["bs"], vec![]),
            node("Div", &["b", "bs"], &["bt"], vec![]),
            node("Floor", &["bt"], &["bf"], vec![]),
            node("Cast", &["bf"], &["bq"], vec![int_attr("to", 6)]),
            node(
                "ConvInteger",
                &["xq", "wq", "xz"],
                &["acc"],
                vec![ints_attr("kernel_shape", &[3, 3])],
            ),
            node("Reshape", &["bq", "bshape"], &["bqr"], vec![]),
            node("Add", &["acc", "bqr"], &["accb"], vec![]),
            node("Cast", &["accb"], &["accf"], vec![int_attr("to", 1)]),
            node("Mul", &["xs", "ws"], &["sc"], vec![]),
            node("Mul", &["accf", "sc"], &["y"], vec![]),
        ],
        vec![
            i8_init("wq", &[oc as i64, c as i64, 3, 3], &wq),
            f32_init("ws", &[], &[ws]),
            f32_init("b", &[oc as i64], &b),
            TensorProto {
                name: "bshape".into(),
                dims: vec![4],
                data_type: 7,
                int64_data: vec![1, oc as i64, 1, 1],
                ..Default::default()
            },
        ],
        vec![value("x", 1, &[1, c as i64, hw as i64, hw as i64])],
        vec![value("y", 1, &[1, oc as i64, 4, 4])],
    );
    let conv = convert(&bytes, &Options::default(), |_| {})
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    assert_eq!(conv.mode, "float");
    let y = run(&conv, &[&x]).remove(0);
    // The reference: the float conv with the dequantized weights, plus b.
    let mut want = vec![0f32; oc * 16];
    for o in 0..oc {
        for (p, w) in want[o * 16..(o + 1) * 16].iter_mut().enumerate() {
            let (oy, ox) = (p / 4, p % 4);
            let mut s = 0f64;
            for ci in 0..c {
                for k in 0..9 {
                    let xv = x[ci * hw * hw + (oy + k / 3) * hw + ox + k % 3] as f64;
                    s += xv * (wq[(o * c + ci) * 9 + k] as f64 * ws as f64);
                }
            }
            *w = (s + b[o] as f64) as f32;
        }
    }
    let range = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = max_abs_diff(&y, &want);
    // A bias rounded to the weight's scale would be off by up to ws (1.7% of the
    // range here); f32 sums differ from the f64 reference by far less.
    assert!(
        d <= 1e-4 * range,
        "seed {seed}: max |Δ| {d} of range {range}"
    );
}

/// DynamicQuantizeLSTM (bidirectional, per-direction params, the int8 weights laid out
/// `[dirs, input, 4·hidden]`) computes what the ONNX LSTM does on the dequantized weights.
#[test]
fn dynamic_quantize_lstm_is_the_lstm_on_its_dequantized_weights() {
    let seed = seed();
    let mut st = seed ^ 0x5eed;
    let (t, i, h, dirs) = (4usize, 5usize, 3usize, 2usize);
    let g = 4 * h;
    let mut ints = |n: usize| -> Vec<i8> {
        (0..n)
            .map(|_| uniform(&mut st, -127.0, 128.0).floor() as i8)
            .collect()
    };
    let (wq, rq) = (ints(dirs * i * g), ints(dirs * h * g));
    let (ws, wz, rs, rz) = ([0.011f32, 0.007], [3i8, -2], [0.013f32, 0.009], [0i8, 5]);
    let bias: Vec<f32> = (0..dirs * 2 * g)
        .map(|k| (k as f32 * 0.37).sin() * 0.3)
        .collect();
    let x: Vec<f32> = (0..t * i).map(|k| (k as f32 * 0.71).cos()).collect();
    let lstm_attrs = || {
        vec![
            str_attr("direction", "bidirectional"),
            int_attr("hidden_size", h as i64),
        ]
    };
    let outs = || {
        vec![
            value("y", 1, &[t as i64, dirs as i64, 1, h as i64]),
            value("yh", 1, &[dirs as i64, 1, h as i64]),
            value("yc", 1, &[dirs as i64, 1, h as i64]),
        ]
    };
    let xin = || vec![value("x", 1, &[t as i64, 1, i as i64])];
    let mut dq = node(
        "DynamicQuantizeLSTM",
        &["x", "w", "r", "b", "", "", "", "", "ws", "wz", "rs", "rz"],
        &["y", "yh", "yc"],
        lstm_attrs(),
    );
    dq.domain = "com.microsoft".into();
    let quantized = model(
        vec![dq],
        vec![
            i8_init("w", &[dirs as i64, i as i64, g as i64], &wq),
            i8_init("r", &[dirs as i64, h as i64, g as i64], &rq),
            f32_init("b", &[dirs as i64, 2 * g as i64], &bias),
            f32_init("ws", &[dirs as i64], &ws),
            i8_init("wz", &[dirs as i64], &wz),
            f32_init("rs", &[dirs as i64], &rs),
            i8_init("rz", &[dirs as i64], &rz),
        ],
        xin(),
        outs(),
    );
    // The same weights dequantized and transposed to ONNX's [dirs, 4·hidden, input].
    let real_t = |q: &[i8], rows: usize, s: &[f32], z: &[i8]| -> Vec<f32> {
        let mut out = vec![0f32; q.len()];
        for d in 0..dirs {
            for r in 0..rows {
                for c in 0..g {
                    let v = q[(d * rows + r) * g + c] as i32 - z[d] as i32;
                    out[(d * g + c) * rows + r] = v as f32 * s[d];
                }
            }
        }
        out
    };
    let float = model(
        vec![node(
            "LSTM",
            &["x", "w", "r", "b"],
            &["y", "yh", "yc"],
            lstm_attrs(),
        )],
        vec![
            f32_init(
                "w",
                &[dirs as i64, g as i64, i as i64],
                &real_t(&wq, i, &ws, &wz),
            ),
            f32_init(
                "r",
                &[dirs as i64, g as i64, h as i64],
                &real_t(&rq, h, &rs, &rz),
            ),
            f32_init("b", &[dirs as i64, 2 * g as i64], &bias),
        ],
        xin(),
        outs(),
    );
    let opts = Options::default();
    let got = convert(&quantized, &opts, |_| {}).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    let want = convert(&float, &opts, |_| {}).unwrap();
    let (got, want) = (run(&got, &[&x]), run(&want, &[&x]));
    assert_eq!(got.len(), 3);
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        let d = max_abs_diff(a, b);
        assert!(d <= 1e-6, "seed {seed}: output {k} differs by {d}");
    }
}

/// An int32 byte sequence one-hot encoded (`Equal` against the byte values, cast to
/// float): the cast of a run-time 0/1 result builds and runs, and so does a cast of the
/// bytes themselves (not a 0/1 result: a Dequantize of the unquantized i32).
#[test]
fn run_time_comparisons_cast_to_float() {
    let n = 6usize;
    let graph = |cast_input: bool| {
        let mut nodes = vec![
            node("Unsqueeze", &["x"], &["xu"], vec![ints_attr("axes", &[2])]),
            node("Equal", &["xu", "vals"], &["eq"], vec![]),
            node("Cast", &["eq"], &["onehot"], vec![int_attr("to", 1)]),
        ];
        let mut outs = vec![value("onehot", 1, &[1, n as i64, 4])];
        if cast_input {
            nodes.push(node("Cast", &["x"], &["xf"], vec![int_attr("to", 1)]));
            outs.push(value("xf", 1, &[1, n as i64]));
        }
        model(
            nodes,
            vec![i32_init("vals", &[4], &[0, 1, 2, 256])],
            vec![value("x", 6, &[1, n as i64])],
            outs,
        )
    };
    let c = convert(&graph(false), &Options::default(), |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    let x = [2f32, 0.0, 256.0, 7.0, 1.0, 2.0];
    let out = run(&c, &[&x]);
    let vals = [0f32, 1.0, 2.0, 256.0];
    let want: Vec<f32> = x
        .iter()
        .flat_map(|&b| vals.iter().map(move |&v| (b == v) as i32 as f32))
        .collect();
    assert_eq!(out[0], want);
    let c = convert(&graph(true), &Options::default(), |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    let out = run(&c, &[&x]);
    assert_eq!(out[0], want);
    assert_eq!(out[1], x);
}

/// A byte sequence one-hot encoded the way jax/TF export `one_hot` (the indices
/// expanded to the depth, `Equal` against a counting constant, cast to float) and
/// multiplied by a dense weight: the rows of the weight at the indices, and a zero row
/// for an index outside the depth. The lowered graph looks the rows up (a Gather), with
/// no one-hot tensor and no matrix product left.
#[test]
fn one_hot_matmul_is_a_row_lookup() {
    use cairn_convert::lower::{lower, LowerOptions};
    use cairn_core::OpKind;
    let (n, depth, d) = (5usize, 7usize, 3usize);
    let iota: Vec<i32> = (0..n * depth).map(|i| (i % depth) as i32).collect();
    let w: Vec<f32> = (0..depth * d).map(|k| k as f32 * 0.5 - 3.0).collect();
    let bytes = model(
        vec![
            node("Unsqueeze", &["x"], &["xu"], vec![ints_attr("axes", &[2])]),
            node("Expand", &["xu", "shape"], &["xe"], vec![]),
            node("Equal", &["xe", "iota"], &["eq"], vec![]),
            node("Cast", &["eq"], &["onehot"], vec![int_attr("to", 1)]),
            node("MatMul", &["onehot", "w"], &["y"], vec![]),
        ],
        vec![
            i32_init("iota", &[1, n as i64, depth as i64], &iota),
            f32_init("w", &[depth as i64, d as i64], &w),
            TensorProto {
                name: "shape".into(),
                dims: vec![3],
                data_type: 7,
                int64_data: vec![1, n as i64, depth as i64],
                ..Default::default()
            },
        ],
        vec![value("x", 6, &[1, n as i64])],
        vec![value("y", 1, &[1, n as i64, d as i64])],
    );
    let c = convert(&bytes, &Options::default(), |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    let x = [3f32, 0.0, 6.0, 7.0, -1.0];
    let y = run(&c, &[&x]).remove(0);
    let w = &w;
    let want: Vec<f32> = x
        .iter()
        .flat_map(|&i| {
            let row = (0.0..depth as f32).contains(&i).then_some(i as usize);
            (0..d).map(move |k| row.map_or(0.0, |r| w[r * d + k]))
        })
        .collect();
    assert_eq!(y, want);
    let m = cairn_convert::onnx::load_model(&bytes).unwrap();
    let (g, _) = lower(&m, &LowerOptions::default()).unwrap();
    let kinds: Vec<OpKind> = g.ops.iter().map(|op| op.kind).collect();
    assert!(kinds.contains(&OpKind::Gather), "{kinds:?}");
    assert!(
        !kinds.iter().any(|k| matches!(
            k,
            OpKind::FullyConnected | OpKind::BatchMatMul | OpKind::Tile
        )),
        "{kinds:?}"
    );
}

/// The head both detector tests share: boxes `320 · sigmoid(x)` [1, 4, n] beside scores
/// `sigmoid(s)` [1, 2, n], concatenated along axis 1 as `y`.
fn head_nodes() -> Vec<NodeProto> {
    vec![
        node("Sigmoid", &["x"], &["sx"], vec![]),
        node("Mul", &["sx", "k"], &["boxes"], vec![]),
        node("Sigmoid", &["s"], &["scores"], vec![]),
        node(
            "Concat",
            &["boxes", "scores"],
            &["y"],
            vec![int_attr("axis", 1)],
        ),
    ]
}

/// The head model calibrated to int8 on four samples, and a fifth to probe it with.
fn calibrated_head(bytes: &[u8], seed: u64, st: &mut u64, n: usize) -> (Converted, Vec<Vec<f32>>) {
    let mut sample = || {
        let x: Vec<f32> = (0..4 * n).map(|_| uniform(st, -4.0, 4.0)).collect();
        let s: Vec<f32> = (0..2 * n).map(|_| uniform(st, -6.0, 3.0)).collect();
        vec![x, s]
    };
    let calibration: Vec<Vec<Vec<f32>>> = (0..4).map(|_| sample()).collect();
    let probe = sample();
    let opts = Options {
        calibration,
        ..Default::default()
    };
    let c = convert(bytes, &opts, |_| {}).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    assert_eq!(c.mode, "calibrated");
    (c, probe)
}

/// A detector head's output: boxes in pixels (0–320) beside sigmoid scores (0–1) in one
/// Concat. Calibrated to int8, the scores must keep their own precision, not one step of
/// the boxes' scale.
#[test]
fn detector_output_concat_keeps_its_scores() {
    let seed = seed();
    let mut st = seed ^ 0xde7;
    let n = 64usize;
    let bytes = model(
        head_nodes(),
        vec![f32_init("k", &[], &[320.0])],
        vec![
            value("x", 1, &[1, 4, n as i64]),
            value("s", 1, &[1, 2, n as i64]),
        ],
        vec![value("y", 1, &[1, 6, n as i64])],
    );
    let (c, probe) = calibrated_head(&bytes, seed, &mut st, n);
    let y = run(&c, &[&probe[0], &probe[1]]).remove(0);
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let want_scores: Vec<f32> = probe[1].iter().map(|&v| sig(v)).collect();
    let d_scores = max_abs_diff(&y[4 * n..], &want_scores);
    let want_boxes: Vec<f32> = probe[0].iter().map(|&v| 320.0 * sig(v)).collect();
    let d_boxes = max_abs_diff(&y[..4 * n], &want_boxes);
    println!("int8: scores off by {d_scores}, boxes by {d_boxes} px");
    // One int8 step of the scores' own range is 1/255; one of the whole output's, 1.25.
    assert!(d_scores <= 0.01, "seed {seed}: scores off by {d_scores}");
    assert!(d_boxes <= 2.0, "seed {seed}: boxes off by {d_boxes} px");
}

/// A YOLOv10-style head: boxes in pixels beside 0–1 scores in one Concat, reshaped and
/// transposed, then split apart again for the scores' own ops (a ReduceMax before the
/// head's TopK). Calibrated to int8, the split scores must keep their own precision: the
/// Concat and the moves after it stay f32 until the Split.
#[test]
fn detector_concat_split_again_keeps_its_scores() {
    let seed = seed();
    let mut st = seed ^ 0x5b17;
    let n = 64usize;
    let mut nodes = head_nodes();
    nodes.extend([
        node("Reshape", &["y", "shape"], &["r"], vec![]),
        node(
            "Transpose",
            &["r"],
            &["t"],
            vec![ints_attr("perm", &[1, 0])],
        ),
        node(
            "Split",
            &["t"],
            &["b2", "s2"],
            vec![int_attr("axis", 1), ints_attr("split", &[4, 2])],
        ),
        node(
            "ReduceMax",
            &["s2"],
            &["best"],
            vec![ints_attr("axes", &[1]), int_attr("keepdims", 0)],
        ),
    ]);
    let bytes = model(
        nodes,
        vec![
            f32_init("k", &[], &[320.0]),
            TensorProto {
                name: "shape".into(),
                dims: vec![2],
                data_type: 7,
                int64_data: vec![6, n as i64],
                ..Default::default()
            },
        ],
        vec![
            value("x", 1, &[1, 4, n as i64]),
            value("s", 1, &[1, 2, n as i64]),
        ],
        vec![
            value("best", 1, &[n as i64]),
            value("b2", 1, &[n as i64, 4]),
        ],
    );
    let (c, probe) = calibrated_head(&bytes, seed, &mut st, n);
    let ys = run(&c, &[&probe[0], &probe[1]]);
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let want_best: Vec<f32> = (0..n)
        .map(|i| sig(probe[1][i]).max(sig(probe[1][n + i])))
        .collect();
    let d_best = max_abs_diff(&ys[0], &want_best);
    let want_boxes: Vec<f32> = (0..n)
        .flat_map(|i| (0..4).map(move |c| (i, c)))
        .map(|(i, c)| 320.0 * sig(probe[0][c * n + i]))
        .collect();
    let d_boxes = max_abs_diff(&ys[1], &want_boxes);
    println!("int8: best scores off by {d_best}, boxes by {d_boxes} px");
    // One int8 step of the scores' own range is 1/255; one of the concat's, 1.25.
    assert!(d_best <= 0.01, "seed {seed}: best scores off by {d_best}");
    assert!(d_boxes <= 2.0, "seed {seed}: boxes off by {d_boxes} px");
}

/// A YOLOv10-style end-to-end head: TopK over the flat anchor × class scores, the index
/// split into anchor (`i / nc`) and class (`i mod nc`) on run-time integers, the anchor's
/// box gathered, and [box, score, class] concatenated. Calibrated to int8:
/// - the integer arithmetic and the class ids stay exact (int8 at a box's scale would
///   round an index of hundreds and turn class 1 into 0);
/// - near-equal scores that int8 may rank in another order (the 4th to 6th picks here)
///   do not count as error: the output guard judges the scores TopK ranked and the boxes
///   it gathered from, so it moves nothing to f32 for them.
#[test]
fn detector_top_k_head_keeps_indices_exact() {
    let seed = seed();
    let mut st = seed ^ 0x70b4;
    let (n, nc, k) = (64usize, 3usize, 6usize);
    let i64_init = |name: &str, dims: &[i64], v: &[i64]| TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 7,
        int64_data: v.to_vec(),
        ..Default::default()
    };
    let nodes = vec![
        node("Sigmoid", &["x"], &["sx"], vec![]),
        node("Mul", &["sx", "px"], &["boxes"], vec![]),
        node("Sigmoid", &["s"], &["scores"], vec![]),
        node(
            "TopK",
            &["scores", "k"],
            &["vals", "idx"],
            vec![int_attr("axis", 1)],
        ),
        node("Div", &["idx", "nc"], &["anchor"], vec![]),
        node("Mod", &["idx", "nc"], &["cls"], vec![]),
        node(
            "Squeeze",
            &["anchor"],
            &["a1"],
            vec![ints_attr("axes", &[0])],
        ),
        node(
            "Gather",
            &["boxes", "a1"],
            &["picked"],
            vec![int_attr("axis", 1)],
        ),
        node("Cast", &["cls"], &["clsf"], vec![int_attr("to", 1)]),
        node(
            "Unsqueeze",
            &["clsf"],
            &["c3"],
            vec![ints_attr("axes", &[2])],
        ),
        node(
            "Unsqueeze",
            &["vals"],
            &["v3"],
            vec![ints_attr("axes", &[2])],
        ),
        node(
            "Concat",
            &["picked", "v3", "c3"],
            &["y"],
            vec![int_attr("axis", 2)],
        ),
    ];
    let bytes = model(
        nodes,
        vec![
            f32_init("px", &[], &[640.0]),
            i64_init("k", &[1], &[k as i64]),
            i64_init("nc", &[], &[nc as i64]),
        ],
        vec![
            value("x", 1, &[1, n as i64, 4]),
            value("s", 1, &[1, (n * nc) as i64]),
        ],
        vec![value("y", 1, &[1, k as i64, 6])],
    );
    // Scores: three clear winners, then a cluster of near ties (within one int8 step),
    // then the rest well below.
    let sample = |st: &mut u64| {
        let x: Vec<f32> = (0..4 * n).map(|_| uniform(st, -4.0, 4.0)).collect();
        let mut s: Vec<f32> = (0..n * nc).map(|_| uniform(st, -8.0, -3.0)).collect();
        let mut slots: Vec<usize> = (0..n * nc).collect();
        for i in 0..n * nc {
            let j = i + (common::splitmix(st) as usize) % (n * nc - i);
            slots.swap(i, j);
        }
        for (r, &at) in slots[..3].iter().enumerate() {
            s[at] = 3.0 - r as f32;
        }
        for &at in &slots[3..20] {
            s[at] = -1.0 + uniform(st, 0.0, 0.002);
        }
        vec![x, s]
    };
    let calibration: Vec<Vec<Vec<f32>>> = (0..4).map(|_| sample(&mut st)).collect();
    let probe = sample(&mut st);
    let opts = Options {
        calibration,
        ..Default::default()
    };
    let c = convert(&bytes, &opts, |_| {}).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    assert_eq!(c.mode, "calibrated");
    let y = run(&c, &[&probe[0], &probe[1]]).remove(0);
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let mut order: Vec<usize> = (0..n * nc).collect();
    order.sort_by(|&a, &b| probe[1][b].total_cmp(&probe[1][a]));
    for (r, row) in y.chunks(6).enumerate() {
        let (score, class) = (row[4], row[5]);
        assert_eq!(class, class.round(), "seed {seed}: row {r} class {class}");
        if r < 3 {
            // The clear winners: the very anchor and class, the box within int8's step.
            let i = order[r];
            let (a, want_class) = (i / nc, (i % nc) as f32);
            let want_box: Vec<f32> = (0..4).map(|c| 640.0 * sig(probe[0][a * 4 + c])).collect();
            let d_box = max_abs_diff(&row[..4], &want_box);
            assert_eq!(class, want_class, "seed {seed}: row {r}");
            assert!(d_box <= 4.0, "seed {seed}: row {r} box off by {d_box} px");
            assert!(
                (score - sig(probe[1][i])).abs() <= 0.01,
                "seed {seed}: row {r} score {score}"
            );
        } else {
            // A near tie: any of the cluster, its score and its own box.
            let i = order[3..20]
                .iter()
                .copied()
                .find(|&i| {
                    let a = i / nc;
                    (i % nc) as f32 == class
                        && (0..4).all(|c| (row[c] - 640.0 * sig(probe[0][a * 4 + c])).abs() <= 4.0)
                })
                .unwrap_or_else(|| panic!("seed {seed}: row {r} {row:?} is none of the cluster"));
            assert!(
                (score - sig(probe[1][i])).abs() <= 0.01,
                "seed {seed}: row {r} score {score}"
            );
        }
    }
    // The guard's measure: the output is judged on the scores TopK ranked and the boxes
    // it gathered from, so the reordered ties are no error and nothing is moved.
    let g = &c.float_graph;
    let mut ranges = calibrate(g, &opts.calibration, Method::MinMax, |_| {}).unwrap();
    let done = refine(g, &opts.calibration, &mut ranges, 0.02, 0.02, None).unwrap();
    assert!(
        done.off < 0.02,
        "seed {seed}: output judged {} off",
        done.off
    );
    assert!(done.moved.is_empty(), "seed {seed}: {:?}", done.moved.len());
    assert!(
        !c.f32_ops
            .iter()
            .any(|o| o.contains("Sigmoid") || o.contains("Mul")),
        "seed {seed}: {:?}",
        c.f32_ops
    );
}

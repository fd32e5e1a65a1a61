//! Models that ship int8 weights with float activations, converted without calibration
//! samples: the products run on those int8 weights with the rows quantized at run time
//! (FullyConnected.f32-w8), and a float model whose weights merely look like integers
//! stays f32. Seeded: `CAIRN_SEED`, printed on failure.

use cairn_convert::onnx_pb::{GraphProto, TensorProto};
use cairn_convert::run_time_int8::int8_grid;
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_core::kernel::Variant;
use cairn_kernels::host::HostModel;

mod common;
use common::{f32_init, model_bytes, node, value};

/// `y = relu(x · (Wq · s)) · (W2q · s2)`: int8 weights `[K, N]` cast to float and scaled
/// per column (what a weight-only int8 export writes), or the same values as plain f32
/// initializers when `as_float`.
fn mlp(state: &mut u64, k: usize, n: usize, o: usize, as_float: bool) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    for (i, (rows, cols)) in [(k, n), (n, o)].into_iter().enumerate() {
        // Quantized as exporters do it: symmetric per output column, the largest
        // magnitude at ±127.
        let real: Vec<f32> = (0..rows * cols)
            .map(|_| (common::splitmix(state) % 20001) as f32 / 10000.0 - 1.0)
            .collect();
        let s: Vec<f32> = (0..cols)
            .map(|c| (0..rows).fold(0f32, |m, r| m.max(real[r * cols + c].abs())) / 127.0)
            .collect();
        let q: Vec<i8> = (0..rows * cols)
            .map(|t| (real[t] / s[t % cols]).round() as i8)
            .collect();
        let w: Vec<f32> = (0..rows * cols)
            .map(|t| q[t] as f32 * s[t % cols])
            .collect();
        let name = format!("w{i}");
        if as_float {
            inits.push(f32_init(&name, &[rows as i64, cols as i64], &w));
        } else {
            inits.push(TensorProto {
                name: format!("{name}_q"),
                dims: vec![rows as i64, cols as i64],
                data_type: 3,
                raw_data: q.iter().map(|&v| v as u8).collect(),
                ..Default::default()
            });
            inits.push(f32_init(&format!("{name}_s"), &[1, cols as i64], &s));
            nodes.push(node(
                "Cast",
                &[&format!("{name}_q")],
                &[&format!("{name}_f")],
                vec![common::int_attr("to", 1)],
            ));
            nodes.push(node(
                "Mul",
                &[&format!("{name}_f"), &format!("{name}_s")],
                &[&name],
                vec![],
            ));
        }
    }
    nodes.push(node("MatMul", &["x", "w0"], &["h"], vec![]));
    nodes.push(node("Relu", &["h"], &["hr"], vec![]));
    nodes.push(node("MatMul", &["hr", "w1"], &["y"], vec![]));
    let g = GraphProto {
        node: nodes,
        initializer: inits,
        input: vec![value("x", 1, &[3, k as i64])],
        output: vec![value("y", 1, &[3, o as i64])],
        ..Default::default()
    };
    model_bytes(g, 13)
}

/// `g` calibrated on `samples` and quantized with the first FullyConnected's output range
/// dropped, as the output guard does: that FC stays f32 (and the one reading its output
/// with it).
/// The graph with its first FullyConnected left f32, and the map from `g`'s tensors to its
/// own (`Report::values`).
fn first_fc_left_f32(
    g: &cairn_convert::Graph,
    samples: &[Vec<Vec<f32>>],
) -> (
    cairn_convert::Graph,
    std::collections::HashMap<usize, usize>,
) {
    use cairn_convert::calibrate::{calibrate, Method};
    let mut ranges = calibrate(g, samples, Method::MinMax, |_| {}).unwrap();
    let fc = g
        .ops
        .iter()
        .position(|o| o.kind == cairn_core::OpKind::FullyConnected)
        .unwrap();
    ranges.remove(&g.ops[fc].outputs[0]);
    let (q, rep) = cairn_convert::quantize::quantize(g, &ranges).unwrap();
    (q, rep.values)
}

/// FullyConnected ops of `q` whose weights are f32.
fn f32_fcs(q: &cairn_convert::Graph) -> usize {
    q.ops
        .iter()
        .filter(|o| {
            o.kind == cairn_core::OpKind::FullyConnected
                && o.inputs[1].is_some_and(|w| q.tensors[w].dtype == cairn_core::DType::F32)
        })
        .count()
}

fn w8_ops(bytes: &[u8]) -> usize {
    let ab = AlignedBytes::from_slice(bytes);
    let m = cairn_core::Model::parse(ab.as_slice()).unwrap();
    (0..m.n_ops())
        .filter(|&i| m.kernel_of(i).is_some_and(|k| k.variant == Variant::W8F32))
        .count()
}

fn run(bytes: &[u8], x: &[f32]) -> Vec<f32> {
    let ab = AlignedBytes::from_slice(bytes);
    let mut m = HostModel::new(ab.as_slice()).unwrap();
    m.run(&[x]).unwrap().remove(0)
}

#[test]
fn weight_only_int8_runs_on_its_integers() {
    let seed = common::seed(0x1A8);
    let mut st = seed;
    let (k, n, o) = (96, 160, 24);
    let q_model = mlp(&mut st, k, n, o, false);
    let mut st2 = seed;
    let f_model = mlp(&mut st2, k, n, o, true);
    let x: Vec<f32> = (0..3 * k)
        .map(|_| (common::splitmix(&mut st) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let dynamic = convert(&q_model, &Options::default(), |_| {}).unwrap();
    assert_eq!(dynamic.mode, "dynamic", "seed {seed}: {:?}", dynamic.notes);
    assert_eq!(w8_ops(&dynamic.bytes), 2, "seed {seed}");
    // The same weights given as plain floats: nothing says the model is quantized, so it
    // stays f32 (its weights lie on the grid all the same).
    let plain = convert(&f_model, &Options::default(), |_| {}).unwrap();
    assert_eq!(plain.mode, "float", "seed {seed}");
    assert_eq!(w8_ops(&plain.bytes), 0, "seed {seed}");
    // --float keeps the int8 model's weights in f32.
    let float = Options {
        float: true,
        ..Default::default()
    };
    let forced = convert(&q_model, &float, |_| {}).unwrap();
    assert_eq!(w8_ops(&forced.bytes), 0, "seed {seed}");
    // A byte per weight instead of four.
    assert!(
        dynamic.bytes.len() * 3 < plain.bytes.len(),
        "seed {seed}: {} vs {} bytes",
        dynamic.bytes.len(),
        plain.bytes.len()
    );
    let (yd, yf) = (run(&dynamic.bytes, &x), run(&plain.bytes, &x));
    let num: f32 = yd.iter().zip(&yf).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f32 = yf.iter().map(|b| b * b).sum();
    let rel = (num / den).sqrt();
    println!("weight-only int8 MLP, rows quantized at run time: rel L2 {rel:.4} from f32");
    assert!(rel > 0.0 && rel < 0.02, "seed {seed}: rel L2 {rel}");
}

#[test]
fn the_grid_is_found_only_where_it_gives_the_values_back() {
    let mut st = common::seed(0x6E1D);
    let (n, k) = (7, 33);
    let q: Vec<i8> = (0..n * k)
        .map(|_| ((common::splitmix(&mut st) % 255) as i8).max(-127))
        .collect();
    // Per row, each row reaching ±127.
    let mut qr = q.clone();
    for j in 0..n {
        qr[j * k] = 127;
    }
    let s: Vec<f32> = (0..n).map(|j| 0.01 + j as f32 * 0.003).collect();
    let w: Vec<f32> = (0..n * k).map(|t| qr[t] as f32 * s[t / k]).collect();
    let (gq, gs) = int8_grid(&w, n, k).expect("a per-row grid");
    for t in 0..n * k {
        assert_eq!(gq[t] as f32 * gs[t / k], w[t], "value {t}");
    }
    // One scale for the tensor (rows that do not reach ±127 on their own).
    let mut qt = q.clone();
    qt[0] = -127;
    for j in 1..n {
        for v in &mut qt[j * k..(j + 1) * k] {
            *v /= 2;
        }
    }
    let w: Vec<f32> = qt.iter().map(|&v| v as f32 * 0.0173).collect();
    let (gq, gs) = int8_grid(&w, n, k).expect("a per-tensor grid");
    assert_eq!(gs.len(), 1);
    assert!(gq.iter().zip(&w).all(|(&a, &b)| a as f32 * gs[0] == b));
    // Off the grid by one ulp, or not finite: none.
    let mut off = w.clone();
    off[5] = f32::from_bits(off[5].to_bits() + 1);
    assert!(int8_grid(&off, n, k).is_none());
    let mut inf = w;
    inf[3] = f32::INFINITY;
    assert!(int8_grid(&inf, n, k).is_none());
}

/// An embedding table shipped as int8 rows with a scale each (Cast + Mul), gathered by ids
/// made from the float input, and a weight-only int8 projection after it: the table is
/// stored as int8 and gathered as bytes, with the f32 conversion's bits.
#[test]
fn int8_embedding_tables_stay_int8_with_the_same_values() {
    let seed = common::seed(0x7AB);
    let mut st = seed;
    let (rows, dim, out) = (300, 32, 16);
    let mut inits = Vec::new();
    let mut nodes = Vec::new();
    for (name, r, c, per_row) in [("emb", rows, dim, true), ("proj", dim, out, false)] {
        let q: Vec<i8> = (0..r * c)
            .map(|_| ((common::splitmix(&mut st) % 255) as i8).max(-127))
            .collect();
        let mut q = q;
        // Symmetric quantization puts ±127 in each row (per row) or column (per column).
        for i in 0..if per_row { r } else { c } {
            q[if per_row { i * c } else { i }] = 127;
        }
        let n_scales = if per_row { r } else { c };
        let s: Vec<f32> = (0..n_scales)
            .map(|_| 0.001 + (common::splitmix(&mut st) % 1000) as f32 * 2e-5)
            .collect();
        inits.push(TensorProto {
            name: format!("{name}_q"),
            dims: vec![r as i64, c as i64],
            data_type: 3,
            raw_data: q.iter().map(|&v| v as u8).collect(),
            ..Default::default()
        });
        let sdims = if per_row {
            [r as i64, 1]
        } else {
            [1, c as i64]
        };
        inits.push(f32_init(&format!("{name}_s"), &sdims, &s));
        let cast = format!("{name}_f");
        nodes.push(node(
            "Cast",
            &[&format!("{name}_q")],
            &[&cast],
            vec![common::int_attr("to", 1)],
        ));
        nodes.push(node("Mul", &[&cast, &format!("{name}_s")], &[name], vec![]));
    }
    nodes.push(node(
        "Cast",
        &["x"],
        &["ids"],
        vec![common::int_attr("to", 7)],
    ));
    nodes.push(node("Gather", &["emb", "ids"], &["e"], vec![]));
    nodes.push(node("MatMul", &["e", "proj"], &["y"], vec![]));
    table_kept(seed, &mut st, nodes, inits, (rows, dim, out));
}

/// ONNX Runtime's dynamic quantization of an embedding: a uint8 table with one scale and
/// a zero point, gathered, then DequantizeLinear. Kept as int8 (zero point − 128), with the
/// f32 conversion's bits.
#[test]
fn asymmetric_uint8_tables_stay_int8_with_the_same_values() {
    let seed = common::seed(0xA5E);
    let mut st = seed;
    let (rows, dim, out) = (300, 32, 16);
    let table: Vec<u8> = (0..rows * dim)
        .map(|_| (common::splitmix(&mut st) % 256) as u8)
        .collect();
    let proj: Vec<i8> = (0..dim * out)
        .map(|i| {
            if i < out {
                127
            } else {
                ((common::splitmix(&mut st) % 255) as i8).max(-127)
            }
        })
        .collect();
    let ps: Vec<f32> = (0..out).map(|j| 0.002 + j as f32 * 1e-4).collect();
    let inits = vec![
        TensorProto {
            name: "table".into(),
            dims: vec![rows as i64, dim as i64],
            data_type: 2,
            raw_data: table,
            ..Default::default()
        },
        f32_init("ts", &[], &[0.0061]),
        TensorProto {
            name: "tz".into(),
            dims: vec![],
            data_type: 2,
            raw_data: vec![82],
            ..Default::default()
        },
        TensorProto {
            name: "proj_q".into(),
            dims: vec![dim as i64, out as i64],
            data_type: 3,
            raw_data: proj.iter().map(|&v| v as u8).collect(),
            ..Default::default()
        },
        f32_init("proj_s", &[1, out as i64], &ps),
    ];
    let nodes = vec![
        node("Cast", &["x"], &["ids"], vec![common::int_attr("to", 7)]),
        node("Gather", &["table", "ids"], &["eq"], vec![]),
        node("DequantizeLinear", &["eq", "ts", "tz"], &["e"], vec![]),
        node(
            "Cast",
            &["proj_q"],
            &["proj_f"],
            vec![common::int_attr("to", 1)],
        ),
        node("Mul", &["proj_f", "proj_s"], &["proj"], vec![]),
        node("MatMul", &["e", "proj"], &["y"], vec![]),
    ];
    table_kept(seed, &mut st, nodes, inits, (rows, dim, out));
}

/// A uint8 table whose rows are picked by indices known at convert time (a T5 relative
/// position bias: buckets from the fixed sequence length), transposed, then
/// DequantizeLinear: the gather and the transpose fold to constants, and the rows arrive
/// in real units, each `(q − zp)·s` of its table entry, added to the input.
#[test]
fn quantized_rows_picked_now_fold_through_a_transpose() {
    let seed = common::seed(0x75B);
    let mut st = seed;
    let (rows, heads, n) = (32usize, 6usize, 4usize);
    let table: Vec<u8> = (0..rows * heads)
        .map(|_| (common::splitmix(&mut st) % 256) as u8)
        .collect();
    let idx: Vec<i64> = (0..n * n)
        .map(|_| (common::splitmix(&mut st) % rows as u64) as i64)
        .collect();
    let (scale, zp) = (0.013f32, 117u8);
    let inits = vec![
        TensorProto {
            name: "table".into(),
            dims: vec![rows as i64, heads as i64],
            data_type: 2,
            raw_data: table.clone(),
            ..Default::default()
        },
        TensorProto {
            name: "idx".into(),
            dims: vec![n as i64, n as i64],
            data_type: 7,
            raw_data: idx.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        },
        f32_init("s", &[], &[scale]),
        TensorProto {
            name: "z".into(),
            dims: vec![],
            data_type: 2,
            raw_data: vec![zp],
            ..Default::default()
        },
    ];
    // The indices as integers known now, and as a constant int32 tensor of the graph
    // (what T5's bucket arithmetic on the fixed length folds to: here their Abs).
    for via_cast in [false, true] {
        let inits = inits.clone();

        let mut nodes = vec![];
        let picked = if via_cast {
            nodes.push(node("Abs", &["idx"], &["idx_a"], vec![]));
            "idx_a"
        } else {
            "idx"
        };
        quantized_rows_case(seed, inits, nodes, picked, &table, &idx, (rows, heads, n));
    }
}

fn quantized_rows_case(
    seed: u64,
    inits: Vec<TensorProto>,
    mut nodes: Vec<cairn_convert::onnx_pb::NodeProto>,
    picked: &str,
    table: &[u8],
    idx: &[i64],
    (_rows, heads, n): (usize, usize, usize),
) {
    let (scale, zp) = (0.013f32, 117u8);
    nodes.extend([
        node("Gather", &["table", picked], &["g"], vec![]),
        node(
            "Transpose",
            &["g"],
            &["t"],
            vec![common::ints_attr("perm", &[2, 0, 1])],
        ),
        node("DequantizeLinear", &["t", "s", "z"], &["b"], vec![]),
        node("Add", &["b", "x"], &["y"], vec![]),
    ]);
    let g = GraphProto {
        node: nodes,
        initializer: inits,
        input: vec![value("x", 1, &[1])],
        output: vec![value("y", 1, &[heads as i64, n as i64, n as i64])],
        ..Default::default()
    };
    let bytes = model_bytes(g, 13);
    let x = [0.25f32];
    for float in [true, false] {
        let opts = Options {
            float,
            ..Default::default()
        };
        let c = convert(&bytes, &opts, |_| {}).unwrap();
        let y = run(&c.bytes, &x);
        for h in 0..heads {
            for (p, &r) in idx.iter().enumerate() {
                let q = table[r as usize * heads + h];
                let want = (q as i32 - zp as i32) as f32 * scale + x[0];
                assert_eq!(
                    y[h * n * n + p],
                    want,
                    "seed {seed}: {picked}: head {h} at {p}"
                );
            }
        }
    }
}

/// The graph of `nodes` and `inits` (input x `[1, 12]` of row ids as floats; outputs the
/// gathered rows `e` `[1, 12, dim]` and `y` `[1, 12, out]`) converted without calibration
/// keeps its table int8: a note says so, the rows are bit-equal to the f32 conversion's,
/// and the file is under half of it.
fn table_kept(
    seed: u64,
    st: &mut u64,
    nodes: Vec<cairn_convert::onnx_pb::NodeProto>,
    inits: Vec<TensorProto>,
    (rows, dim, out): (usize, usize, usize),
) {
    let g = GraphProto {
        node: nodes,
        initializer: inits,
        input: vec![value("x", 1, &[1, 12])],
        output: vec![
            value("e", 1, &[1, 12, dim as i64]),
            value("y", 1, &[1, 12, out as i64]),
        ],
        ..Default::default()
    };
    let bytes = model_bytes(g, 13);
    let x: Vec<f32> = (0..12)
        .map(|_| (common::splitmix(st) % rows as u64) as f32)
        .collect();
    let dynamic = convert(&bytes, &Options::default(), |_| {}).unwrap();
    assert!(
        dynamic
            .notes
            .iter()
            .any(|n| n.contains("1 embedding tables")),
        "seed {seed}: {:?}",
        dynamic.notes
    );
    let float = Options {
        float: true,
        ..Default::default()
    };
    let float = convert(&bytes, &float, |_| {}).unwrap();
    let first = |b: &[u8]| {
        let ab = AlignedBytes::from_slice(b);
        let mut m = HostModel::new(ab.as_slice()).unwrap();
        m.run(&[&x]).unwrap().remove(0)
    };
    let (d, f) = (first(&dynamic.bytes), first(&float.bytes));
    assert!(d.iter().any(|v| *v != 0.0), "seed {seed}");
    assert_eq!(
        d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "seed {seed}: the gathered rows differ"
    );
    assert!(
        dynamic.bytes.len() * 2 < float.bytes.len(),
        "seed {seed}: {} vs {} bytes",
        dynamic.bytes.len(),
        float.bytes.len()
    );
}

/// A calibrated conversion of a model that ships int8 weights: a FullyConnected left f32
/// (here: its output's range dropped, as the output guard does) runs on the model's own
/// integers with its rows quantized at run time (f32-w8) while the outputs stay within the
/// bound; under a bound tighter than that costs, it keeps its f32 weights.
#[test]
fn ops_left_f32_keep_the_shipped_int8_weights() {
    use cairn_convert::run_time_int8::int8_weights_where_f32;
    let seed = common::seed(0x1A9);
    let mut st = seed;
    let (k, n, o) = (96, 160, 24);
    let bytes = mlp(&mut st, k, n, o, false);
    let (g, _) = cairn_convert::float_graph(&bytes, &Options::default()).unwrap();
    assert!(g.int8_weights, "seed {seed}: the model ships int8 weights");
    let samples: Vec<Vec<Vec<f32>>> = (0..4)
        .map(|_| {
            vec![(0..3 * k)
                .map(|_| (common::splitmix(&mut st) % 2001) as f32 / 1000.0 - 1.0)
                .collect()]
        })
        .collect();
    let (q, values) = first_fc_left_f32(&g, &samples);
    let left = f32_fcs(&q);
    assert!(left >= 1, "seed {seed}");
    let (w, note) = int8_weights_where_f32(&g, q.clone(), &values, &samples, 0.2).unwrap();
    assert_eq!(f32_fcs(&w), 0, "seed {seed}: {note:?}");
    let note = note.unwrap_or_default();
    assert!(
        note.starts_with(&format!("{left} FullyConnected")),
        "seed {seed}: {note}"
    );
    // A bound below what the run-time rows cost: the f32 weights stay.
    let (same, none) = int8_weights_where_f32(&g, q, &values, &samples, 0.0).unwrap();
    assert_eq!((f32_fcs(&same), none), (left, None), "seed {seed}");
}

/// `y = relu(x · W0) · W1` with plain f32 weights `[K, N]`, `[N, O]`; with `outliers`,
/// each column of W0 also holds a weight of 1000 on input 0 (which the samples keep at 0).
fn float_mlp(state: &mut u64, k: usize, n: usize, o: usize, outliers: bool) -> Vec<u8> {
    let mut w = |rows: usize, cols: usize| -> Vec<f32> {
        (0..rows * cols)
            .map(|_| (common::splitmix(state) % 20001) as f32 / 10000.0 - 1.0)
            .collect()
    };
    let mut w0 = w(k, n);
    if outliers {
        w0[..n].fill(1000.0);
    }
    let w1 = w(n, o);
    let g = GraphProto {
        node: vec![
            node("MatMul", &["x", "w0"], &["h"], vec![]),
            node("Relu", &["h"], &["hr"], vec![]),
            node("MatMul", &["hr", "w1"], &["y"], vec![]),
        ],
        initializer: vec![
            f32_init("w0", &[k as i64, n as i64], &w0),
            f32_init("w1", &[n as i64, o as i64], &w1),
        ],
        input: vec![value("x", 1, &[3, k as i64])],
        output: vec![value("y", 1, &[3, o as i64])],
        ..Default::default()
    };
    model_bytes(g, 13)
}

/// A calibrated conversion of a model with f32 weights: the FullyConnected ops the output
/// guard left f32 (here: the first one's output range dropped) take int8 weights rounded
/// per output row and quantize their rows at run time, while the outputs stay as good as
/// the f32 FCs gave; weights that rounding wrecks (a row's tiny weights all 0 beside an
/// outlier on an input that is always 0) keep f32.
#[test]
fn ops_left_f32_take_rounded_int8_weights_when_as_good() {
    use cairn_convert::run_time_int8::rounded_weights_where_f32;
    let seed = common::seed(0x1AA);
    let (k, n, o) = (96, 160, 24);
    for outliers in [false, true] {
        let mut st = seed;
        let bytes = float_mlp(&mut st, k, n, o, outliers);
        let (g, _) = cairn_convert::float_graph(&bytes, &Options::default()).unwrap();
        assert!(!g.int8_weights, "seed {seed}: plain f32 weights");
        let samples: Vec<Vec<Vec<f32>>> = (0..4)
            .map(|_| {
                vec![(0..3 * k)
                    .map(|t| {
                        let v = (common::splitmix(&mut st) % 2001) as f32 / 1000.0 - 1.0;
                        if t % k == 0 {
                            0.0
                        } else {
                            v
                        }
                    })
                    .collect()]
            })
            .collect();
        let (q, values) = first_fc_left_f32(&g, &samples);
        let left = f32_fcs(&q);
        assert!(left >= 1, "seed {seed}");
        let (w, note) = rounded_weights_where_f32(&g, q, &values, &samples).unwrap();
        if outliers {
            assert_eq!((f32_fcs(&w), note), (left, None), "seed {seed}: outliers");
        } else {
            assert_eq!(f32_fcs(&w), 0, "seed {seed}: {note:?}");
            let note = note.unwrap_or_default();
            assert!(
                note.starts_with(&format!("{left} FullyConnected")),
                "seed {seed}: {note}"
            );
        }
    }
}

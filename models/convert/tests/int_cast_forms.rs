//! A run-time int32 tensor cast to float and used as a number (an id or byte input read
//! as a value, not a 0/1 comparison result): it converts (a Dequantize of the
//! unquantized i32, scale 1, zero point 0), builds and runs; and the other way, a float
//! tensor cast to an integer type at run time. Seeded (`CAIRN_SEED`).

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

/// A run-time float tensor cast to int32 or int64 (token ids arriving as floats, a Keras
/// Embedding's Cast before its Gather): truncated toward zero into i32, saturating at
/// its range, NaN to 0; as Gather indices it picks the embedding rows, in f32 and int8.
#[test]
fn run_time_float_cast_to_int_truncates() {
    let seed = seed();
    let graph = |nodes, inits, out_dims: &[i64]| {
        ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                node: nodes,
                initializer: inits,
                input: vec![value("x", 1, &[2, 4])],
                output: vec![value("y", 1, out_dims)],
                name: "g".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    };
    // Cast to int32, then back to float: the kernel's rounding and saturation.
    let round_trip = graph(
        vec![
            node("Cast", &["x"], &["xi"], vec![int_attr("to", 6)]),
            node("Cast", &["xi"], &["y"], vec![int_attr("to", 1)]),
        ],
        vec![],
        &[2, 4],
    );
    let c = convert(&round_trip, &Options::default(), |_| {})
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    let model = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(model.as_slice()).unwrap();
    let x = [
        -2.7,
        2.7,
        1e10,
        -1e10,
        f32::NAN,
        -0.5,
        2.999,
        f32::NEG_INFINITY,
    ];
    let want = [
        -2.0,
        2.0,
        2_147_483_647.0,
        -2_147_483_648.0,
        0.0,
        0.0,
        2.0,
        -2_147_483_648.0,
    ];
    assert_eq!(m.run(&[&x]).unwrap()[0], want);
    // Cast to int64 feeding a Gather of embedding rows.
    let (rows, dim) = (10usize, 3usize);
    let mut st = seed;
    let table: Vec<f32> = (0..rows * dim)
        .map(|_| int_in(&mut st, -64, 64) as f32 / 16.0)
        .collect();
    let embed = graph(
        vec![
            node("Cast", &["x"], &["ids"], vec![int_attr("to", 7)]),
            node("Gather", &["table", "ids"], &["y"], vec![]),
        ],
        vec![f32_init("table", &[rows as i64, dim as i64], &table)],
        &[2, 4, dim as i64],
    );
    let ids = |st: &mut u64| -> Vec<f32> {
        (0..8)
            .map(|_| int_in(st, 0, rows as i32 * 10) as f32 / 10.0)
            .collect()
    };
    let calibration: Vec<Vec<Vec<f32>>> = (0..4).map(|_| vec![ids(&mut st)]).collect();
    for opts in [
        Options::default(),
        Options {
            calibration,
            ..Default::default()
        },
    ] {
        let c = convert(&embed, &opts, |_| {}).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        let model = AlignedBytes::from_slice(&c.bytes);
        let mut m = HostModel::new(model.as_slice()).unwrap();
        let x = ids(&mut st);
        let want: Vec<f32> = x
            .iter()
            .flat_map(|&v| table[v as usize * dim..][..dim].to_vec())
            .collect();
        let got = &m.run(&[&x]).unwrap()[0];
        let tol = if c.mode == "float" { 0.0 } else { 0.02 };
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= tol,
                "seed {seed} {}: {got:?} vs {want:?} for {x:?}",
                c.mode
            );
        }
    }
}

/// A run-time tensor cast to bool is `x ≠ 0` (NaN true, as in ONNX), from float and from
/// int32 (any nonzero integer, not only 1), in a graph that uses it as a number again.
#[test]
fn run_time_cast_to_bool_is_nonzero() {
    let seed = seed();
    for (dtype, x, want) in [
        (
            1,
            vec![0.0, -0.0, 0.5, -3.0, f32::NAN, f32::INFINITY, 1e-30, 0.0],
            vec![0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        ),
        (
            6,
            vec![0.0, 1.0, 5.0, -7.0, 0.0, 2.0, -1.0, 300.0],
            vec![0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0],
        ),
    ] {
        let bytes = ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                node: vec![
                    node("Cast", &["x"], &["b"], vec![int_attr("to", 9)]),
                    node("Cast", &["b"], &["y"], vec![int_attr("to", 1)]),
                ],
                input: vec![value("x", dtype, &[2, 4])],
                output: vec![value("y", 1, &[2, 4])],
                name: "g".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let c = convert(&bytes, &Options::default(), |_| {})
            .unwrap_or_else(|e| panic!("seed {seed} dtype {dtype}: {e:#}"));
        let model = AlignedBytes::from_slice(&c.bytes);
        let mut m = HostModel::new(model.as_slice()).unwrap();
        let got = &m.run(&[&x]).unwrap()[0];
        assert_eq!(got, &want, "dtype {dtype}: x {x:?}");
    }
}

/// Integer arithmetic on a run-time int32 input: a TensorFlow Embedding's negative-index
/// wrap, `where(i < 0, i + n, i)` written as masks times ids (`Less`, `Not`, `Cast` to
/// int32, `Mul`, `Add` with an integer constant), then the Gather; and a plain `Sub` of
/// two run-time id tensors. Seeded (`CAIRN_SEED`).
#[test]
fn run_time_integer_add_mul_sub_are_exact() {
    let seed = seed();
    let mut st = seed;
    let (n, len) = (11usize, 16usize);
    let table: Vec<f32> = (0..n * 2).map(|k| k as f32 * 0.5 - 3.0).collect();
    let bytes = common::model_bytes(
        GraphProto {
            node: vec![
                node("Cast", &["i"], &["fi"], vec![int_attr("to", 1)]),
                node("Less", &["fi", "zero"], &["neg"], vec![]),
                node("Not", &["neg"], &["pos"], vec![]),
                node("Cast", &["neg"], &["negi"], vec![int_attr("to", 6)]),
                node("Cast", &["pos"], &["posi"], vec![int_attr("to", 6)]),
                node("Add", &["i", "n"], &["shifted"], vec![]),
                node("Mul", &["negi", "shifted"], &["a"], vec![]),
                node("Mul", &["i", "posi"], &["b"], vec![]),
                node("Add", &["a", "b"], &["idx"], vec![]),
                node(
                    "Gather",
                    &["table", "idx"],
                    &["rows"],
                    vec![int_attr("axis", 0)],
                ),
                node("Sub", &["i", "j"], &["d"], vec![]),
                node("Cast", &["d"], &["df"], vec![int_attr("to", 1)]),
            ],
            initializer: vec![
                f32_init("zero", &[], &[0.0]),
                TensorProto {
                    name: "n".into(),
                    data_type: 6,
                    int32_data: vec![n as i32],
                    ..Default::default()
                },
                f32_init("table", &[n as i64, 2], &table),
            ],
            input: vec![
                value("i", 6, &[1, len as i64]),
                value("j", 6, &[1, len as i64]),
            ],
            output: vec![
                value("rows", 1, &[1, len as i64, 2]),
                value("df", 1, &[1, len as i64]),
            ],
            name: "g".into(),
            ..Default::default()
        },
        13,
    );
    let c = convert(&bytes, &Options::default(), |_| {})
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    let model = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(model.as_slice()).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
    for _ in 0..4 {
        let i: Vec<f32> = (0..len)
            .map(|_| int_in(&mut st, -(n as i32), n as i32) as f32)
            .collect();
        let j: Vec<f32> = (0..len)
            .map(|_| int_in(&mut st, -70_000, 70_000) as f32)
            .collect();
        let out = m
            .run(&[&i, &j])
            .unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        let want: Vec<f32> = i
            .iter()
            .flat_map(|&v| {
                let k = (v as i64).rem_euclid(n as i64) as usize;
                [table[2 * k], table[2 * k + 1]]
            })
            .collect();
        assert_eq!(out[0], want, "seed {seed}: ids {i:?}");
        let d: Vec<f32> = i.iter().zip(&j).map(|(a, b)| a - b).collect();
        assert_eq!(out[1], d, "seed {seed}: i {i:?} j {j:?}");
    }
}

/// Integer Div and Mod on run-time int32 tensors, as a YOLOv10 head splits its flat TopK
/// index into anchor `i / nc` and class `i mod nc`: Div truncates toward zero (ONNX's
/// integer Div), Mod takes the divisor's sign and Mod with `fmod` the dividend's, by a
/// constant and by another run-time tensor, negative operands included; exact for
/// operands within ±2^24. A constant divisor of zero is refused. Seeded (`CAIRN_SEED`).
#[test]
fn run_time_integer_div_mod_are_exact() {
    let seed = seed();
    let mut st = seed ^ 0xd1f;
    let len = 24usize;
    let graph = |nc: i32| {
        common::model_bytes(
            GraphProto {
                node: vec![
                    node("Div", &["i", "nc"], &["q"], vec![]),
                    node("Mod", &["i", "nc"], &["r"], vec![]),
                    node("Div", &["i", "j"], &["qj"], vec![]),
                    node("Mod", &["i", "j"], &["rj"], vec![]),
                    node("Mod", &["i", "j"], &["fj"], vec![int_attr("fmod", 1)]),
                    node(
                        "Concat",
                        &["q", "r", "qj", "rj", "fj"],
                        &["all"],
                        vec![int_attr("axis", 0)],
                    ),
                    node("Cast", &["all"], &["out"], vec![int_attr("to", 1)]),
                ],
                initializer: vec![TensorProto {
                    name: "nc".into(),
                    data_type: 6,
                    int32_data: vec![nc],
                    ..Default::default()
                }],
                input: vec![
                    value("i", 6, &[1, len as i64]),
                    value("j", 6, &[1, len as i64]),
                ],
                output: vec![value("out", 1, &[5, len as i64])],
                name: "g".into(),
                ..Default::default()
            },
            13,
        )
    };
    let err = convert(&graph(0), &Options::default(), |_| {})
        .err()
        .unwrap_or_else(|| panic!("seed {seed}: a Div by a constant zero converted"));
    assert!(format!("{err:#}").contains("constant zero"), "{err:#}");
    for nc in [80, -7] {
        let c = convert(&graph(nc), &Options::default(), |_| {})
            .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        let model = AlignedBytes::from_slice(&c.bytes);
        let mut m =
            HostModel::new(model.as_slice()).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        for _ in 0..4 {
            let i: Vec<i32> = (0..len)
                .map(|_| int_in(&mut st, -700_000, 700_000))
                .collect();
            let j: Vec<i32> = (0..len)
                .map(|_| match int_in(&mut st, -300, 300) {
                    0 => 1,
                    v => v,
                })
                .collect();
            let fi: Vec<f32> = i.iter().map(|&v| v as f32).collect();
            let fj: Vec<f32> = j.iter().map(|&v| v as f32).collect();
            let out = m
                .run(&[&fi, &fj])
                .unwrap_or_else(|e| panic!("seed {seed}: {e:?}"))
                .remove(0);
            let py_mod = |a: i32, b: i32| ((a % b) + b) % b;
            let mut want = Vec::new();
            want.extend(i.iter().map(|&a| (a / nc) as f32));
            want.extend(i.iter().map(|&a| py_mod(a, nc) as f32));
            want.extend(i.iter().zip(&j).map(|(&a, &b)| (a / b) as f32));
            want.extend(i.iter().zip(&j).map(|(&a, &b)| py_mod(a, b) as f32));
            want.extend(i.iter().zip(&j).map(|(&a, &b)| (a % b) as f32));
            assert_eq!(out, want, "seed {seed} nc {nc}: i {i:?} j {j:?}");
        }
    }
}

//! ONNX LSTM, GRU and RNN as one `Recurrent` op per direction against the same nodes
//! unrolled into per-step ops (the lowering the ONNX node tests and ONNX Runtime
//! comparisons have checked): every output within f32 rounding, on random nodes covering
//! the attributes (directions, batch-first layout, clip, `linear_before_reset`, gate
//! functions) and the optional inputs and outputs (bias, initial states, peepholes,
//! `Y_h`, `Y_c`). Seeded; `CAIRN_SEED` replays.

mod common;
use common::{f32_init, int_attr, model_bytes, node, splitmix, value};

use cairn_convert::onnx_pb::attribute_proto::AttributeType;
use cairn_convert::onnx_pb::{AttributeProto, GraphProto};
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_core::OpKind;
use cairn_kernels::host::HostModel;

fn uniform(s: &mut u64, a: f32) -> f32 {
    a * (2.0 * ((splitmix(s) >> 40) as f32 / (1u64 << 24) as f32) - 1.0)
}

fn rand_vec(s: &mut u64, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| uniform(s, a)).collect()
}

fn strings_attr(name: &str, v: &[&str]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        r#type: AttributeType::Strings as i32,
        ..Default::default()
    }
}

fn string_attr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: v.as_bytes().to_vec(),
        r#type: AttributeType::String as i32,
        ..Default::default()
    }
}

fn floats_attr(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        floats: v.to_vec(),
        r#type: AttributeType::Floats as i32,
        ..Default::default()
    }
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f: v,
        r#type: AttributeType::Float as i32,
        ..Default::default()
    }
}

/// A random recurrent node's model and its run-time inputs.
fn case(s: &mut u64, k: usize) -> (Vec<u8>, Vec<Vec<f32>>, String) {
    let op = ["LSTM", "GRU", "RNN"][k % 3];
    let g = [4, 3, 1][k % 3];
    let (t, b, i) = (
        1 + (splitmix(s) % 7) as usize,
        1 + (splitmix(s) % 2) as usize,
        3,
    );
    let h = [4usize, 17][(k / 3) % 2];
    let dir = ["forward", "reverse", "bidirectional"][(splitmix(s) % 3) as usize];
    let dirs = if dir == "bidirectional" { 2 } else { 1 };
    let layout = (splitmix(s) % 2) as i64;
    let mut attrs = vec![
        int_attr("hidden_size", h as i64),
        string_attr("direction", dir),
        int_attr("layout", layout),
    ];
    let what = format!("{op} {dir} layout {layout} t {t} b {b} h {h}");
    let mut what = what;
    if splitmix(s).is_multiple_of(3) {
        attrs.push(float_attr("clip", 0.8));
        what += " clip";
    }
    if op == "GRU" && splitmix(s).is_multiple_of(2) {
        attrs.push(int_attr("linear_before_reset", 1));
        what += " lbr";
    }
    if splitmix(s).is_multiple_of(4) {
        // Other gate functions, per direction, with their alphas and betas in order.
        let per: &[&str] = match op {
            "LSTM" => &["HardSigmoid", "Softsign", "LeakyRelu"],
            "GRU" => &["HardSigmoid", "Relu"],
            _ => &["LeakyRelu"],
        };
        let names: Vec<&str> = (0..dirs).flat_map(|_| per.iter().copied()).collect();
        let mut alphas = vec![];
        let mut betas = vec![];
        for n in &names {
            match *n {
                "HardSigmoid" => {
                    alphas.push(0.25);
                    betas.push(0.4);
                }
                "LeakyRelu" => alphas.push(0.05),
                _ => {}
            }
        }
        attrs.push(strings_attr("activations", &names));
        attrs.push(floats_attr("activation_alpha", &alphas));
        attrs.push(floats_attr("activation_beta", &betas));
        what += " acts";
    }
    let (tb, bt) = if layout == 0 { (t, b) } else { (b, t) };
    let state_dims = if layout == 0 {
        [dirs as i64, b as i64, h as i64]
    } else {
        [b as i64, dirs as i64, h as i64]
    };
    let sc = 1.0 / (h as f32).sqrt();
    let mut inits = vec![
        f32_init(
            "W",
            &[dirs as i64, (g * h) as i64, i as i64],
            &rand_vec(s, dirs * g * h * i, 0.8),
        ),
        f32_init(
            "R",
            &[dirs as i64, (g * h) as i64, h as i64],
            &rand_vec(s, dirs * g * h * h, 1.5 * sc),
        ),
    ];
    let mut ins = vec!["X".to_string(), "W".into(), "R".into()];
    let mut graph_in = vec![value("X", 1, &[tb as i64, bt as i64, i as i64])];
    let mut feeds = vec![rand_vec(s, t * b * i, 1.5)];
    if !splitmix(s).is_multiple_of(3) {
        inits.push(f32_init(
            "B",
            &[dirs as i64, (2 * g * h) as i64],
            &rand_vec(s, dirs * 2 * g * h, 0.5),
        ));
        ins.push("B".into());
        what += " bias";
    } else {
        ins.push(String::new());
    }
    ins.push(String::new()); // sequence_lens
    let n_state = if op == "LSTM" { 2 } else { 1 };
    for (k, name) in ["h0", "c0"].iter().take(n_state).enumerate() {
        if splitmix(s).is_multiple_of(2) {
            graph_in.push(value(name, 1, &state_dims));
            feeds.push(rand_vec(s, dirs * b * h, if k == 0 { 0.9 } else { 2.5 }));
            ins.push(name.to_string());
            what += &format!(" {name}");
        } else {
            ins.push(String::new());
        }
    }
    if op == "LSTM" && splitmix(s).is_multiple_of(2) {
        inits.push(f32_init(
            "P",
            &[dirs as i64, 3 * h as i64],
            &rand_vec(s, dirs * 3 * h, 0.6),
        ));
        ins.push("P".into());
        what += " peepholes";
    }
    while ins.last().is_some_and(String::is_empty) {
        ins.pop();
    }
    let y_dims = if layout == 0 {
        vec![t as i64, dirs as i64, b as i64, h as i64]
    } else {
        vec![b as i64, t as i64, dirs as i64, h as i64]
    };
    let mut outs = vec!["Y", "Y_h"];
    let mut graph_out = vec![value("Y", 1, &y_dims), value("Y_h", 1, &state_dims)];
    if op == "LSTM" {
        outs.push("Y_c");
        graph_out.push(value("Y_c", 1, &state_dims));
    }
    let ins_ref: Vec<&str> = ins.iter().map(String::as_str).collect();
    let graph = GraphProto {
        node: vec![node(op, &ins_ref, &outs, attrs)],
        initializer: inits,
        input: graph_in,
        output: graph_out,
        ..Default::default()
    };
    (model_bytes(graph, 14), feeds, what)
}

fn run(bytes: &[u8], feeds: &[Vec<f32>]) -> (Vec<Vec<f32>>, usize, usize) {
    let ab = AlignedBytes::from_slice(bytes);
    let mut m = HostModel::new(ab.as_slice()).unwrap();
    let model = m.model();
    let kinds: Vec<OpKind> = (0..model.n_ops())
        .filter_map(|i| model.op_entry(i).map(|e| e.kind))
        .collect();
    let fused = kinds.iter().filter(|&&k| k == OpKind::Recurrent).count();
    let refs: Vec<&[f32]> = feeds.iter().map(Vec::as_slice).collect();
    (m.run(&refs).unwrap(), fused, kinds.len())
}

#[test]
fn fused_recurrences_match_the_unrolled_steps() {
    let s0 = common::seed(83);
    let mut s = s0;
    for k in 0..36 {
        let (bytes, feeds, what) = case(&mut s, k);
        let fused = convert(&bytes, &Options::default(), |_| {}).unwrap();
        let unrolled = convert(
            &bytes,
            &Options {
                unroll_recurrent: true,
                ..Options::default()
            },
            |_| {},
        )
        .unwrap();
        let (a, n_fused, ops_fused) = run(&fused.bytes, &feeds);
        let (b, n_unrolled, ops_unrolled) = run(&unrolled.bytes, &feeds);
        let dirs = if what.contains("bidirectional") { 2 } else { 1 };
        assert_eq!(n_fused, dirs, "CAIRN_SEED={s0} case {k}: {what}");
        assert_eq!(n_unrolled, 0, "CAIRN_SEED={s0} case {k}: {what}");
        assert!(
            ops_fused < ops_unrolled || what.contains(" t 1 "),
            "CAIRN_SEED={s0} case {k}: {ops_fused} ops fused, {ops_unrolled} unrolled: {what}"
        );
        assert_eq!(a.len(), b.len());
        for (o, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.len(), y.len());
            for (j, (p, q)) in x.iter().zip(y).enumerate() {
                assert!(
                    (p - q).abs() <= 2e-5 * (1.0 + q.abs()),
                    "CAIRN_SEED={s0} case {k}: output {o}[{j}] fused {p}, unrolled {q}: {what}"
                );
            }
        }
    }
}

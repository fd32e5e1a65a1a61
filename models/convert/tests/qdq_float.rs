//! A QDQ model converted with `--float` keeps what its Q/DQ pairs compute besides rounding:
//! the saturation to the quantized range. ONNX Runtime's quantizer drops a Relu or a
//! Relu6 whose range the pair enforces (zero point −128, or a top at 6), so a float
//! conversion that treated the pairs as identities computed a model without those
//! activations (a keyword-spotting ResNet's embedding at cosine 0.08 from ONNX Runtime).
//! Seeded (`CAIRN_SEED`).

mod common;
use common::{f32_init, node, value};

use cairn_convert::onnx_pb::{GraphProto, TensorProto};
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;

fn i8_init(name: &str, v: i8) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: 3,
        raw_data: vec![v as u8],
        ..Default::default()
    }
}

fn u8_init(name: &str, v: u8) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: 2,
        raw_data: vec![v],
        ..Default::default()
    }
}

/// x [1, 4, 3, 3] → 1×1 Conv (c → c, int8 weights `w` of scale `sw`, through a DequantizeLinear) → Q/DQ (int8, zero point −128: the
/// dropped Relu) → `a`, and x → Mul by `m` → Q/DQ (uint8, zero point 0, top `255·s2`:
/// a clamp below the data's top) → `b`, and x → 2×2 MaxPool (no activation slot of its
/// own) → Q/DQ as the first → `p`. Outputs `a`, `b`, `p`. The input has no pair, so in an
/// int8 conversion these ops stay f32: the clamps must be there too.
fn model(w: &[i8], sw: f32, m: f32, s1: f32, s2: f32) -> Vec<u8> {
    let c = 4i64;
    common::model_bytes(
        GraphProto {
            node: vec![
                node("DequantizeLinear", &["wq", "sw"], &["w"], vec![]),
                node("Conv", &["x", "w"], &["conv"], vec![]),
                node("QuantizeLinear", &["conv", "s1", "z1"], &["q1"], vec![]),
                node("DequantizeLinear", &["q1", "s1", "z1"], &["a"], vec![]),
                node("Mul", &["x", "m"], &["mul"], vec![]),
                node("QuantizeLinear", &["mul", "s2", "z2"], &["q2"], vec![]),
                node("DequantizeLinear", &["q2", "s2", "z2"], &["b"], vec![]),
                node(
                    "MaxPool",
                    &["x"],
                    &["pool"],
                    vec![common::ints_attr("kernel_shape", &[2, 2])],
                ),
                node("QuantizeLinear", &["pool", "s1", "z1"], &["q3"], vec![]),
                node("DequantizeLinear", &["q3", "s1", "z1"], &["p"], vec![]),
            ],
            initializer: vec![
                TensorProto {
                    name: "wq".into(),
                    dims: vec![c, c, 1, 1],
                    data_type: 3,
                    raw_data: w.iter().map(|&v| v as u8).collect(),
                    ..Default::default()
                },
                f32_init("sw", &[], &[sw]),
                f32_init("m", &[], &[m]),
                f32_init("s1", &[], &[s1]),
                i8_init("z1", -128),
                f32_init("s2", &[], &[s2]),
                u8_init("z2", 0),
            ],
            input: vec![value("x", 1, &[1, c, 3, 3])],
            output: vec![
                value("a", 1, &[1, c, 3, 3]),
                value("b", 1, &[1, c, 3, 3]),
                value("p", 1, &[1, c, 2, 2]),
            ],
            name: "g".into(),
            ..Default::default()
        },
        13,
    )
}

#[test]
fn float_conversion_keeps_the_qdq_saturation() {
    let seed = common::seed(21);
    let mut st = seed;
    let mut uni = |lo: f32, hi: f32| {
        let z = common::splitmix(&mut st);
        lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
    };
    let (c, hw) = (4usize, 9usize);
    let sw = 1.0 / 64.0;
    let wq: Vec<i8> = (0..c * c).map(|_| uni(-64.0, 64.0) as i8).collect();
    let w: Vec<f32> = wq.iter().map(|&q| q as f32 * sw).collect();
    let m = 1.5f32;
    let (s1, s2) = (0.05f32, 0.005f32);
    let bytes = model(&wq, sw, m, s1, s2);
    let x: Vec<f32> = (0..c * hw).map(|_| uni(-2.0, 2.0)).collect();
    // The pairs' ranges: [0, 255·s1] and [0, 255·s2].
    let conv = |o: usize, p: usize| (0..c).map(|i| w[o * c + i] * x[i * hw + p]).sum::<f32>();
    let want_a: Vec<f32> = (0..c * hw)
        .map(|k| conv(k / hw, k % hw).clamp(0.0, 255.0 * s1))
        .collect();
    let want_b: Vec<f32> = x.iter().map(|v| (v * m).clamp(0.0, 255.0 * s2)).collect();
    let want_p: Vec<f32> = (0..c * 4)
        .map(|k| {
            let (ch, oy, ox) = (k / 4, k % 4 / 2, k % 2);
            let at = |dy: usize, dx: usize| x[ch * hw + (oy + dy) * 3 + ox + dx];
            at(0, 0)
                .max(at(0, 1))
                .max(at(1, 0))
                .max(at(1, 1))
                .clamp(0.0, 255.0 * s1)
        })
        .collect();
    assert!(
        want_a.iter().filter(|&&v| v == 0.0).count() > 4
            && want_b.iter().filter(|&&v| v == 255.0 * s2).count() > 4
            && want_p.contains(&0.0),
        "seed {seed}: the data must reach both ends of the ranges"
    );

    for float in [true, false] {
        let opts = Options {
            float,
            ..Default::default()
        };
        let cv = convert(&bytes, &opts, |_| {}).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        println!(
            "float {float}: int8 ops {}, f32 ops {:?}, notes {:?}",
            cv.int8_ops, cv.f32_ops, cv.notes
        );
        assert_eq!(cv.mode, if float { "float" } else { "qdq" }, "seed {seed}");
        let mb = AlignedBytes::from_slice(&cv.bytes);
        let mut hm = HostModel::new(mb.as_slice()).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        let out = hm
            .run(&[&x])
            .unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        // f32: the clamp alone (no rounding), to f32 error; int8: within half a step.
        let tol = |s: f32| if float { 1e-5 } else { 0.5 * s + 1e-6 };
        for (got, want, s, name) in [
            (&out[0], &want_a, s1, "a"),
            (&out[1], &want_b, s2, "b"),
            (&out[2], &want_p, s1, "p"),
        ] {
            for (k, (g, e)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - e).abs() <= tol(s),
                    "seed {seed}, float {float}: {name}[{k}] = {g}, expected {e}"
                );
            }
        }
        if float {
            // The clamps of the Conv and the Mul fused into them: one Clip, the pool's.
            let ops = cairn_core::Model::parse(mb.as_slice()).unwrap().n_ops();
            assert_eq!(
                ops, 4,
                "seed {seed}: {ops} ops, Conv, Mul, MaxPool, Clip expected"
            );
        }
    }
}

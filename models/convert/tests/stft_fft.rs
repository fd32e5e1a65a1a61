//! An ONNX STFT node on a real signal converts to one strided Conv against its window's
//! cos/sin rows (`lower_signal.rs`); the runtime recognizes those rows as a windowed DFT
//! basis and runs the conv as FFTs (`runtime/kernels/src/fast_f32/dft.rs`). Checked here
//! end to end: the FFT path runs, and the output is the STFT, against a DFT computed in
//! f64 by the test.

mod common;
use common::{int_attr, model_bytes, node, value};

use cairn_convert::onnx_pb::{GraphProto, TensorProto};
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;
use cairn_kernels::paths::{taken, Path};

fn i64_scalar(name: &str, v: i64) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: 7,
        raw_data: v.to_le_bytes().to_vec(),
        ..Default::default()
    }
}

fn f32_init(name: &str, v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: 1,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Frames of `n` samples every `hop` under Hann, Hamming and rectangular windows, one-sided
/// spectra: `y[0, f, k] = (Σ x·win·cos, −Σ x·win·sin)` of bin k, within `1e-5 · Σ|x·win|`.
#[test]
fn an_onnx_stft_runs_as_ffts() {
    use std::f64::consts::TAU;
    let seed = common::seed(41);
    let mut st = seed;
    for (case, (n, hop, len)) in [
        (256usize, 64usize, 2000usize),
        (512, 160, 4000),
        (64, 16, 300),
    ]
    .into_iter()
    .enumerate()
    {
        let win: Vec<f32> = (0..n)
            .map(|t| {
                let c = (TAU * t as f64 / n as f64).cos();
                (match case {
                    0 => 0.5 - 0.5 * c,
                    1 => 0.54 - 0.46 * c,
                    _ => 1.0,
                }) as f32
            })
            .collect();
        let graph = GraphProto {
            node: vec![node(
                "STFT",
                &["x", "step", "win", "len"],
                &["y"],
                vec![int_attr("onesided", 1)],
            )],
            initializer: vec![
                i64_scalar("step", hop as i64),
                f32_init("win", &win),
                i64_scalar("len", n as i64),
            ],
            input: vec![value("x", 1, &[1, len as i64, 1])],
            output: vec![value("y", 1, &[])],
            name: "stft".into(),
            ..Default::default()
        };
        let c = convert(&model_bytes(graph, 17), &Options::default(), |_| {})
            .unwrap_or_else(|e| panic!("case {case}: {e:#}"));
        let x: Vec<f32> = (0..len)
            .map(|_| {
                let z = common::splitmix(&mut st);
                (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        let bytes = AlignedBytes::from_slice(&c.bytes);
        let mut m = HostModel::new(bytes.as_slice()).expect("load");
        let before = taken(Path::DftConv);
        let y = m.run(&[&x]).expect("run").remove(0);
        assert!(
            taken(Path::DftConv) > before,
            "CAIRN_SEED={seed} case {case}: the STFT's conv did not run as FFTs"
        );
        let (frames, bins) = ((len - n) / hop + 1, n / 2 + 1);
        assert_eq!(y.len(), frames * bins * 2, "case {case}");
        for f in 0..frames {
            let frame = &x[f * hop..f * hop + n];
            let mass: f64 = frame
                .iter()
                .zip(&win)
                .map(|(&a, &w)| (a * w).abs() as f64)
                .sum();
            for k in 0..bins {
                let (mut re, mut im) = (0f64, 0f64);
                for (t, (&a, &w)) in frame.iter().zip(&win).enumerate() {
                    let ang = TAU * ((k * t) % n) as f64 / n as f64;
                    re += a as f64 * w as f64 * ang.cos();
                    im -= a as f64 * w as f64 * ang.sin();
                }
                let at = (f * bins + k) * 2;
                let bound = 1e-5 * mass + 1e-5;
                for (got, want) in [(y[at], re), (y[at + 1], im)] {
                    assert!(
                        (got as f64 - want).abs() <= bound,
                        "CAIRN_SEED={seed} case {case} frame {f} bin {k}: {got} against \
                         {want} (bound {bound})"
                    );
                }
            }
        }
    }
}

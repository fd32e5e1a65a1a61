//! Agreement with ONNX Runtime and with the float model, on the bundled models and data.
//!
//! - QDQ models made by onnxruntime's `quantize_static` (models/zoo/make_zoo.py): cairn
//!   imports the model's own quantization; every output element must be within 1
//!   quantization step (LSB) of ONNX Runtime running the same QDQ model.
//! - Self-calibrated int8 vs the f32 model: top-1 agreement on held-out data.

use std::path::Path;

use cairn_core::emit::AlignedBytes;
use cairn_core::{Model, OpKind};
use cairn_kernels::host::HostModel;
use cairn_ort::OrtModel;
use cairn_tests::{argmax, cls_eval, convert_file, rows, zoo};

/// Scale of the quantized tensor a model output is dequantized from.
fn output_step(m: &Model, k: usize) -> f32 {
    let out = m.output_tensor(k).expect("output");
    for i in 0..m.n_ops() {
        let op = m.op(i).expect("op");
        if op.output(0) == out && op.kind == OpKind::Dequantize {
            return m
                .tensor(op.input(0).expect("input"))
                .info
                .quant
                .per_tensor()
                .0;
        }
    }
    panic!("output {k} is not dequantized from int8");
}

/// Largest difference to ORT in output steps, and how many elements differ by more than
/// 1 LSB.
fn qdq_lsb_stats(onnx: &Path, shape: &[usize], xs: &[Vec<f32>]) -> (f32, usize, usize) {
    let conv = convert_file(onnx, None, Some(shape)).expect("convert QDQ model");
    assert_eq!(
        conv.mode, "qdq",
        "the QDQ params must be imported, not recalibrated"
    );
    assert!(
        conv.f32_ops.is_empty(),
        "ops left in f32: {:?}",
        conv.f32_ops
    );
    let bytes = AlignedBytes::from_slice(&conv.bytes);
    let mut m = HostModel::new(bytes.as_slice()).expect("load");
    let step = output_step(&m.model(), 0);
    let mut ort = OrtModel::load(onnx, 1).expect("ONNX Runtime (create .venv as the README says)");
    let (mut worst, mut over_one, mut total) = (0.0f32, 0usize, 0usize);
    for x in xs {
        let ours = m.run(&[x]).expect("run");
        let theirs = ort.run(&[(shape.to_vec(), x.clone())]).expect("ort run");
        for (a, b) in ours[0].iter().zip(&theirs[0].1) {
            let lsb = (a - b).abs() / step;
            worst = worst.max(lsb);
            over_one += (lsb > 1.0 + 1e-3) as usize;
            total += 1;
        }
    }
    (worst, over_one, total)
}

#[test]
fn cls_qdq_matches_onnxruntime_within_1_lsb() {
    let (xs, _) = cls_eval().expect("bundled eval data");
    let (worst, over, total) =
        qdq_lsb_stats(&zoo().join("ppocr_cls/cls_qdq.onnx"), &[1, 3, 48, 192], &xs);
    println!("cls QDQ: worst difference {worst:.3} LSB over {total} output elements");
    assert_eq!(over, 0, "every element within 1 LSB of ORT (worst {worst})");
}

#[test]
fn digits_qdq_matches_onnxruntime_within_1_lsb() {
    let xs = rows(&cairn_convert::npy::read(&zoo().join("digits/test_x.npy")).unwrap());
    let (worst, over, total) =
        qdq_lsb_stats(&zoo().join("digits/digits_mlp_qdq.onnx"), &[1, 64], &xs);
    println!("digits QDQ: worst difference {worst:.3} LSB over {total} output elements");
    assert_eq!(over, 0, "every element within 1 LSB of ORT");
}

fn agreement(
    onnx: &Path,
    calib: &Path,
    shape: &[usize],
    xs: &[Vec<f32>],
    ys: &[i64],
) -> (f64, f64, f64) {
    let q = convert_file(onnx, Some(calib), Some(shape)).expect("convert");
    assert_eq!(q.mode, "calibrated");
    let qb = AlignedBytes::from_slice(&q.bytes);
    let mut qm = HostModel::new(qb.as_slice()).unwrap();
    let mut ort = OrtModel::load(onnx, 1).expect("ONNX Runtime");
    let (mut agree, mut acc_q, mut acc_f) = (0usize, 0usize, 0usize);
    for (x, &y) in xs.iter().zip(ys) {
        let a = argmax(&qm.run(&[x]).unwrap()[0]);
        let b = argmax(&ort.run(&[(shape.to_vec(), x.clone())]).unwrap()[0].1);
        agree += (a == b) as usize;
        acc_q += (a as i64 == y) as usize;
        acc_f += (b as i64 == y) as usize;
    }
    let n = xs.len() as f64;
    (agree as f64 / n, acc_q as f64 / n, acc_f as f64 / n)
}

#[test]
fn digits_int8_agrees_with_fp32() {
    let z = zoo().join("digits");
    let xs = rows(&cairn_convert::npy::read(&z.join("test_x.npy")).unwrap());
    let ys: Vec<i64> = cairn_convert::npy::read(&z.join("test_y.npy"))
        .unwrap()
        .data
        .iter()
        .map(|&v| v as i64)
        .collect();
    let (agree, acc_q, acc_f) = agreement(
        &z.join("digits_mlp.onnx"),
        &z.join("calib_x.npy"),
        &[1, 64],
        &xs,
        &ys,
    );
    println!(
        "digits: int8/fp32 top-1 agreement {:.2}%, accuracy int8 {:.2}% fp32 {:.2}%",
        agree * 100.0,
        acc_q * 100.0,
        acc_f * 100.0
    );
    assert!(agree >= 0.99, "agreement {agree}");
}

#[test]
fn cls_int8_agrees_with_fp32_on_text_lines() {
    let z = zoo().join("ppocr_cls");
    let (xs, ys) = cls_eval().unwrap();
    let (agree, acc_q, acc_f) = agreement(
        &z.join("ch_ppocr_mobile_v2.0_cls_infer.onnx"),
        &z.join("calib_x.npy"),
        &[1, 3, 48, 192],
        &xs,
        &ys,
    );
    println!(
        "cls: int8/fp32 top-1 agreement {:.2}%, accuracy int8 {:.2}% fp32 {:.2}%",
        agree * 100.0,
        acc_q * 100.0,
        acc_f * 100.0
    );
    assert!(agree >= 0.97, "agreement {agree}");
}

//! `Select<F>` (a CPU backend with only some kernel families, for small firmware) gives the
//! CPU backend's bytes on the models it supports, and refuses the others up front.

use cairn_core::emit::AlignedBytes;
use cairn_core::{Backend, Interpreter, LoadError, Model};
use cairn_kernels::{family, CpuBackend, Select};
use cairn_tests::{cls_eval, convert_file, zoo};

/// Output 0's bytes for each input.
fn run<B: Backend>(
    model: Model<'_>,
    backend: B,
    xs: &[Vec<f32>],
) -> Result<Vec<Vec<u8>>, LoadError> {
    let mut arena = AlignedBytes::zeroed(model.arena_bytes());
    let mut it = Interpreter::new(model, backend, arena.as_mut_slice())?;
    Ok(xs
        .iter()
        .map(|x| {
            it.set_input_f32(0, x).unwrap();
            it.invoke().unwrap();
            it.output(0).unwrap().data.to_vec()
        })
        .collect())
}

#[test]
fn selected_families_match_the_cpu_backend_and_refuse_the_rest() {
    // The int8 CNN (PP-OCR classifier, QDQ) with the CNN families.
    let c = convert_file(
        &zoo().join("ppocr_cls/cls_qdq.onnx"),
        None,
        Some(&[1, 3, 48, 192]),
    )
    .unwrap();
    let b = AlignedBytes::from_slice(&c.bytes);
    let m = Model::parse(b.as_slice()).unwrap();
    let (xs, _) = cls_eval().unwrap();
    let xs = &xs[..6];
    let want = run(m, CpuBackend, xs).unwrap();
    let got = run(m, Select::<{ family::CNN_I8 | family::FAST }>, xs).unwrap();
    assert_eq!(got, want, "CNN families vs the CPU backend");
    let slow = run(m, Select::<{ family::CNN_I8 }>, xs).unwrap();
    assert_eq!(slow, want, "without the fast paths");
    // An MLP-only backend refuses the CNN before running anything.
    assert!(matches!(
        run(m, Select::<{ family::MLP_I8 }>, xs),
        Err(LoadError::MissingKernel(_))
    ));
    // The digits MLP with the MLP families.
    let d = std::fs::read(zoo().join("../../targets/mcu/assets/digits.cairn")).unwrap();
    // (models/zoo/../../ is the repository root.)
    let db = AlignedBytes::from_slice(&d);
    let dm = Model::parse(db.as_slice()).unwrap();
    let ys: Vec<Vec<f32>> = (0..8)
        .map(|i| (0..64).map(|k| ((i * 7 + k) % 17) as f32 / 16.0).collect())
        .collect();
    assert_eq!(
        run(dm, Select::<{ family::MLP_I8 }>, &ys).unwrap(),
        run(dm, CpuBackend, &ys).unwrap()
    );
}

/// `Model::parse_kinds` with a firmware's families loads what those families run (the same
/// model as `Model::parse`) and refuses another kind up front, naming the missing kernel.
#[test]
fn parse_kinds_checks_only_the_linked_kinds() {
    let c = convert_file(
        &zoo().join("ppocr_cls/cls_qdq.onnx"),
        None,
        Some(&[1, 3, 48, 192]),
    )
    .unwrap();
    let b = AlignedBytes::from_slice(&c.bytes);
    let all = Model::parse(b.as_slice()).unwrap();
    let cnn = Model::parse_kinds::<{ family::kinds(family::CNN_I8) }>(b.as_slice()).unwrap();
    assert_eq!((cnn.n_ops(), cnn.kernels()), (all.n_ops(), all.kernels()));
    let (xs, _) = cls_eval().unwrap();
    assert_eq!(
        run(cnn, Select::<{ family::CNN_I8 }>, &xs[..2]).unwrap(),
        run(all, CpuBackend, &xs[..2]).unwrap()
    );
    // Op 0 is a Quantize (in the MLP families), op 1 the first Conv.
    match Model::parse_kinds::<{ family::kinds(family::MLP_I8) }>(b.as_slice()) {
        Err(LoadError::MissingKernel(k)) => assert_eq!(k.to_string(), "Conv.i8"),
        other => panic!("expected MissingKernel(Conv.i8), got {other:?}"),
    }
}

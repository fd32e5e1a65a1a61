//! Pre-packed conv weights (`Layout::Pairs6`, `cairn convert --pack`): the packed model
//! computes exactly what the plain one does, records its layout and kernel, is refused by
//! a backend without the packed kernel, and forged packed tensors are typed load errors.

use cairn_convert::{convert, Options};
use cairn_core::emit::{AlignedBytes, BuildError, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::error::OpProblem;
use cairn_core::format::{hdr, tns, u32_at, HEADER_BYTES, TENSOR_BYTES};
use cairn_core::kernel::Variant;
use cairn_core::layout::Pairs6;
use cairn_core::op::conv;
use cairn_core::{Backend, DType, Interpreter, Layout, LoadError, Model, OpKind, Shape};
use cairn_kernels::{family, CpuBackend, RefBackend, Select};
use cairn_tests::{cls_eval, zoo};

fn run<B: Backend>(bytes: &[u8], backend: B, input: &[u8]) -> Result<Vec<u8>, LoadError> {
    let ab = AlignedBytes::from_slice(bytes);
    let m = Model::parse(ab.as_slice())?;
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it = Interpreter::new(m, backend, &mut arena)?;
    it.input_bytes_mut(0).unwrap().copy_from_slice(input);
    it.invoke().unwrap();
    Ok(it.output(0).unwrap().data.to_vec())
}

fn cls(pack: bool) -> Vec<u8> {
    let z = zoo().join("ppocr_cls");
    let mut o = Options {
        pack_weights: pack,
        ..Default::default()
    };
    o.input_shapes.insert("#0".into(), vec![1, 3, 48, 192]);
    let onnx = std::fs::read(z.join("cls_qdq.onnx")).unwrap();
    convert(&onnx, &o, |_| {}).unwrap().bytes
}

#[test]
fn packed_cls_equals_plain_bit_for_bit() {
    let (plain, packed) = (cls(false), cls(true));
    let ab = AlignedBytes::from_slice(&packed);
    let m = Model::parse(ab.as_slice()).unwrap();
    // The artifact says what it holds: packed tensors and the packed conv kernel.
    let n_packed = (0..m.n_tensors() as u16)
        .filter(|&t| m.tensor(t).info.layout == Layout::Pairs6)
        .count();
    assert!(n_packed >= 20, "{n_packed} packed tensors");
    assert!(m.kernels().iter().any(|k| k.variant == Variant::PackedI8));
    assert!(packed.len() > plain.len());

    let (xs, _) = cls_eval().unwrap();
    let input_f32 = &xs[0];
    // The graph input is f32: feed the same bytes to both.
    let input: Vec<u8> = input_f32.iter().flat_map(|v| v.to_le_bytes()).collect();
    let want = run(&plain, RefBackend, &input).unwrap();
    assert_eq!(run(&plain, CpuBackend, &input).unwrap(), want);
    assert_eq!(run(&packed, CpuBackend, &input).unwrap(), want);
    assert_eq!(run(&packed, RefBackend, &input).unwrap(), want);
    // A firmware-sized backend without the packed family refuses the model before
    // running; with it, the same bytes come out.
    const CNN: u32 = family::CNN_I8 | family::FAST;
    match run(&packed, Select::<CNN>, &input) {
        Err(LoadError::MissingKernel(k)) => {
            assert_eq!((k.kind, k.variant), (OpKind::Conv, Variant::PackedI8))
        }
        other => panic!("expected MissingKernel, got {other:?}"),
    }
    let with = run(&packed, Select::<{ CNN | family::PACKED }>, &input).unwrap();
    assert_eq!(with, want);
}

/// A one-op int8 conv (c → oc, k×k, group) and its builder.
fn conv_builder(c: usize, oc: usize, k: usize, group: usize) -> ModelBuilder {
    let t = |dt: DType, dims: &[usize], quant: QuantSpec, data: Option<Vec<u8>>| TensorSpec {
        dtype: dt,
        shape: Shape::new(dims).unwrap(),
        quant,
        data,
        layout: Layout::Plain,
    };
    let pt = |s: f32, z: i32| QuantSpec::PerTensor {
        scale: s,
        zero_point: z,
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(t(DType::I8, &[1, c, 6, 7], pt(0.05, 3), None));
    let cg = c / group;
    let wq: Vec<u8> = (0..oc * cg * k * k).map(|i| (i * 53 % 251) as u8).collect();
    let w = b.add_tensor(t(
        DType::I8,
        &[oc, cg, k, k],
        QuantSpec::PerAxis {
            axis: 0,
            scales: vec![0.01; oc],
            zero_points: vec![0; oc],
        },
        Some(wq),
    ));
    let rq = b.add_tensor(t(
        DType::F32,
        &[oc],
        QuantSpec::None,
        Some(0.003f32.to_le_bytes().repeat(oc)),
    ));
    let y = b.add_tensor(t(DType::I8, &[1, oc, 6, 7], pt(0.05, -2), None));
    let mut p = vec![0i32; conv::LEN];
    for (i, v) in [
        (conv::SH, 1),
        (conv::SW, 1),
        (conv::DH, 1),
        (conv::DW, 1),
        (conv::GROUP, group),
    ] {
        p[i] = v as i32;
    }
    for i in [conv::PT, conv::PL, conv::PB, conv::PR] {
        p[i] = (k / 2) as i32;
    }
    p[conv::ACT_LO] = -128;
    p[conv::ACT_HI] = 127;
    b.ops.push(OpSpec {
        kind: OpKind::Conv,
        inputs: vec![Some(x), Some(w), None, Some(rq)],
        outputs: vec![y],
        params: p,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b
}

/// Tensor 1 (the weights) of a packed 5 → 7 channel 3×3 conv: (file, record offset, data
/// offset, geometry).
fn packed_file() -> (Vec<u8>, usize, usize, Pairs6) {
    let mut b = conv_builder(5, 7, 3, 1);
    assert_eq!(b.pack_conv_weights(2048), 1);
    let f = b.finish().unwrap();
    let rec = HEADER_BYTES + TENSOR_BYTES;
    assert_eq!(f[rec + tns::LAYOUT], Layout::Pairs6 as u8);
    let data = (u32_at(&f, hdr::BLOB_OFF) + u32_at(&f, rec + tns::OFFSET)) as usize;
    (f, rec, data, Pairs6 { oc: 7, k: 45 })
}

fn forged(f: impl FnOnce(&mut Vec<u8>, usize, usize, Pairs6)) -> LoadError {
    let (mut b, rec, data, g) = packed_file();
    f(&mut b, rec, data, g);
    let crc = cairn_core::format::file_crc(&b);
    b[hdr::CRC..hdr::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    let ab = AlignedBytes::from_slice(&b);
    Model::parse(ab.as_slice()).expect_err("a forged packed tensor must be refused")
}

#[test]
fn forged_packed_tensors_are_typed_errors() {
    let (f, _, _, _) = packed_file();
    let input = vec![7u8; 5 * 6 * 7];
    let plain = conv_builder(5, 7, 3, 1).finish().unwrap();
    assert_eq!(
        run(&f, CpuBackend, &input).unwrap(),
        run(&plain, RefBackend, &input).unwrap()
    );

    let tensor1 = LoadError::Tensor { index: 1 };
    let put = |b: &mut Vec<u8>, at: usize, v: i16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    // A weight outside int8 range (the kernels' exact arithmetic assumes int8 values).
    assert_eq!(
        forged(|b, _, d, g| put(b, d + 2 * g.index(3, 10), 200)),
        tensor1
    );
    assert_eq!(
        forged(|b, _, d, g| put(b, d + 2 * g.index(0, 0), -129)),
        tensor1
    );
    // Non-zero padding: row 7 of the second block, and the odd K's last half-pair.
    assert_eq!(
        forged(|b, _, d, _| put(b, d + 2 * (12 * 23 + 2), 1)),
        tensor1
    );
    assert_eq!(
        forged(|b, _, d, g| put(b, d + 2 * (g.index(2, 44) + 1), 1)),
        tensor1
    );
    // Unknown layout code, reserved bytes, a plain layout over packed bytes (size mismatch).
    assert_eq!(forged(|b, r, _, _| b[r + tns::LAYOUT] = 9), tensor1);
    assert_eq!(forged(|b, r, _, _| b[r + tns::LAYOUT + 1] = 1), tensor1);
    assert_eq!(forged(|b, r, _, _| b[r + tns::LAYOUT] = 0), tensor1);
    // The layout on a tensor that is not int8 (the f32 requant scales, tensor 2).
    let e = forged(|b, _, _, _| b[HEADER_BYTES + 2 * TENSOR_BYTES + tns::LAYOUT] = 1);
    assert_eq!(e, LoadError::Tensor { index: 2 });

    // Packed weights on a depthwise conv, which no kernel reads packed: refused by the
    // builder's own load check with the precise problem.
    let mut b = conv_builder(6, 6, 3, 6);
    let w = b.tensors[1].clone();
    let rows: Vec<i8> = w.data.unwrap().iter().map(|&v| v as i8).collect();
    let p = cairn_core::layout::pack_pairs6(&rows, 6, 9).unwrap();
    b.tensors[1].data = Some(p.iter().flat_map(|v| v.to_le_bytes()).collect());
    b.tensors[1].layout = Layout::Pairs6;
    match b.finish() {
        Err(BuildError::Invalid(LoadError::Op {
            problem: OpProblem::Layout,
            ..
        })) => {}
        other => panic!("expected a Layout problem, got {other:?}"),
    }
    // The packer leaves depthwise convs alone.
    assert_eq!(conv_builder(6, 6, 3, 6).pack_conv_weights(2048), 0);
}

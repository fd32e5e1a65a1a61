//! Bad `.cairn` bytes: truncated, bit-flipped, mutated and hand-crafted hostile files must
//! give typed errors and never panic or read out of bounds — at parse time and when run.
//! Randomised cases take a seed (`CAIRN_SEED`, default fixed) and print it on failure.

use std::panic::{catch_unwind, AssertUnwindSafe};

use cairn_core::emit::{AlignedBytes, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::format::{file_crc, hdr, tns, HEADER_BYTES, TENSOR_BYTES};
use cairn_core::{DType, Interpreter, LoadError, Model, OpKind, Shape};
use cairn_kernels::CpuBackend;
use cairn_tests::{convert_file, repo_root, seed_or, zoo, SplitMix};

fn digits_model() -> Vec<u8> {
    let z = zoo().join("digits");
    convert_file(
        &z.join("digits_mlp.onnx"),
        Some(&z.join("calib_x.npy")),
        Some(&[1, 64]),
    )
    .unwrap()
    .bytes
}

fn restamp(b: &mut [u8]) {
    let crc = file_crc(b);
    b[hdr::CRC..hdr::CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Parse, and if it loads, run once on zeros: Ok(true) if it ran.
fn load_and_run(bytes: &[u8]) -> Result<bool, LoadError> {
    let ab = AlignedBytes::from_slice(bytes);
    let m = Model::parse(ab.as_slice())?;
    // A device's arena, not what the file asks for: a mutated header may state up to 4 GiB,
    // more than a 32-bit process can allocate. A larger plan is `ArenaTooSmall`.
    let mut arena = vec![0u8; m.arena_bytes().min(64 << 20) + 16];
    let mut it = Interpreter::new(m, CpuBackend, &mut arena)?;
    let _ = it.invoke();
    Ok(true)
}

fn seed() -> u64 {
    seed_or(0xCA1F_2026)
}

#[test]
fn every_truncation_is_a_typed_error() {
    let m = digits_model();
    for len in 0..m.len() {
        let r = catch_unwind(|| load_and_run(&m[..len]));
        match r {
            Ok(Err(_)) => {}
            Ok(Ok(_)) => panic!("truncated to {len} bytes and still loaded"),
            Err(_) => panic!("panic on truncation to {len} bytes"),
        }
    }
}

#[test]
fn every_single_bit_flip_is_caught_by_the_checksum() {
    let m = digits_model();
    for byte in 0..m.len() {
        for bit in [0u8, 3, 7] {
            let mut b = m.clone();
            b[byte] ^= 1 << bit;
            match load_and_run(&b) {
                Err(_) => {}
                Ok(_) => panic!("flip of bit {bit} at byte {byte} went unnoticed"),
            }
        }
    }
}

/// Mutations with the checksum re-stamped, so the structural checks behind it are what
/// stands between the bytes and the kernels.
#[test]
fn mutated_files_never_panic() {
    mutate(&digits_model(), 20_000, 1000);
}

/// The cls model exercises conv, depthwise, LUT, pooling and softmax kernels.
#[test]
fn mutated_cnn_files_never_panic() {
    let z = zoo().join("ppocr_cls");
    let m = convert_file(&z.join("cls_qdq.onnx"), None, Some(&[1, 3, 48, 192]))
        .unwrap()
        .bytes;
    mutate(&m, 400, 100);
}

fn mutate(base: &[u8], cases: usize, min_refused: usize) {
    let seed = seed();
    let mut rng = SplitMix(seed);
    let interesting = [0u8, 1, 0x7F, 0x80, 0xFF, 0xFE, 16, 64];
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..cases {
        let mut b = base.to_vec();
        let n = 1 + rng.below(4);
        for _ in 0..n {
            // Bias mutations towards the header and tables, where the structure lives.
            let hot = (HEADER_BYTES + 16 * TENSOR_BYTES + 256).min(b.len());
            let at = if rng.below(4) > 0 {
                rng.below(hot)
            } else {
                rng.below(b.len())
            };
            b[at] = if rng.below(2) == 0 {
                interesting[rng.below(interesting.len())]
            } else {
                rng.next_u64() as u8
            };
        }
        restamp(&mut b);
        match catch_unwind(AssertUnwindSafe(|| load_and_run(&b))) {
            Ok(Ok(_)) => loaded += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("panic on mutated file: CAIRN_SEED={seed} case {case}"),
        }
    }
    println!("mutations (seed {seed}): {loaded} still loaded and ran, {refused} refused with a typed error");
    assert!(refused >= min_refused);
}

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn hostile(f: impl FnOnce(&mut Vec<u8>)) -> LoadError {
    let mut b = digits_model();
    f(&mut b);
    restamp(&mut b);
    let ab = AlignedBytes::from_slice(&b);
    Model::parse(ab.as_slice()).expect_err("hostile file must be refused")
}

#[test]
fn hand_crafted_hostile_files() {
    // Huge counts.
    assert!(matches!(
        hostile(|b| put_u16(b, hdr::N_TENSORS, u16::MAX)),
        LoadError::BadHeader | LoadError::Section
    ));
    assert!(matches!(
        hostile(|b| put_u16(b, hdr::N_OPS, u16::MAX)),
        LoadError::BadHeader | LoadError::Section
    ));
    // A section past the end.
    assert_eq!(
        hostile(|b| put_u32(b, hdr::BLOB_LEN, u32::MAX / 2)),
        LoadError::Section
    );
    // A misaligned blob.
    assert_eq!(
        hostile(|b| {
            let v = u32::from_le_bytes(b[hdr::BLOB_OFF..hdr::BLOB_OFF + 4].try_into().unwrap());
            put_u32(b, hdr::BLOB_OFF, v + 4)
        }),
        LoadError::Section
    );
    // A const tensor whose offset points past the blob.
    let e = hostile(|b| {
        let t1 = HEADER_BYTES + TENSOR_BYTES; // tensor 1 is the first weight
        put_u32(b, t1 + tns::OFFSET, 1 << 30);
    });
    assert!(matches!(e, LoadError::Tensor { .. }), "{e:?}");
    // Unknown version.
    assert_eq!(
        hostile(|b| b[hdr::VERSION] = 9),
        LoadError::UnsupportedVersion {
            found: 9,
            supported: 1
        }
    );
    // Bad magic.
    assert_eq!(hostile(|b| b[0] = b'X'), LoadError::BadMagic);
}

#[test]
fn cyclic_op_reference_is_refused() {
    // op0 reads the output of op1: a cycle in a file that claims topological order.
    let f = |dims: &[usize]| TensorSpec {
        dtype: DType::F32,
        shape: Shape::new(dims).unwrap(),
        quant: QuantSpec::None,
        data: None,
        layout: Default::default(),
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f(&[4]));
    let y = b.add_tensor(f(&[4]));
    let z = b.add_tensor(f(&[4]));
    let unary = |i: u16, o: u16| OpSpec {
        kind: OpKind::Unary,
        inputs: vec![Some(i)],
        outputs: vec![o],
        params: vec![1, 0, 0],
    };
    b.ops.push(unary(z, y));
    b.ops.push(unary(y, z));
    b.inputs = vec![x];
    b.outputs = vec![z];
    let e = b.finish().expect_err("cycle");
    assert!(
        format!("{e:?}").contains("Order") || format!("{e:?}").contains("Tensor"),
        "{e:?}"
    );
}

#[test]
fn arena_too_small_and_missing_kernel_are_load_errors() {
    let m = digits_model();
    let ab = AlignedBytes::from_slice(&m);
    let model = Model::parse(ab.as_slice()).unwrap();
    let mut small = vec![0u8; model.arena_bytes() / 2];
    assert!(matches!(
        Interpreter::new(model, CpuBackend, &mut small),
        Err(LoadError::ArenaTooSmall { .. })
    ));

    struct NoSoftmax;
    impl cairn_core::Backend for NoSoftmax {
        fn name(&self) -> &'static str {
            "no-softmax"
        }
        fn supports(&self, k: cairn_core::KernelId) -> bool {
            k.kind != OpKind::Softmax
        }
        fn execute(
            &mut self,
            c: &cairn_core::OpCall<'_>,
            o: cairn_core::TensorMut<'_>,
        ) -> Result<(), cairn_core::ExecError> {
            cairn_kernels::execute_reference(c, o)
        }
    }
    let mut arena = vec![0u8; model.arena_bytes() + 16];
    match Interpreter::new(model, NoSoftmax, &mut arena) {
        Err(LoadError::MissingKernel(k)) => assert_eq!(k.kind, OpKind::Softmax),
        other => panic!("expected MissingKernel, got {:?}", other.err()),
    }
}

/// The golden file: a fixed tiny model whose bytes must not change without a version bump.
/// `CAIRN_GOLDEN_BLESS=1` rewrites it.
#[test]
fn golden_bytes() {
    let f32t = |dims: &[usize], data: Option<Vec<f32>>| TensorSpec {
        dtype: DType::F32,
        shape: Shape::new(dims).unwrap(),
        quant: QuantSpec::None,
        data: data.map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        layout: Default::default(),
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32t(&[1, 3], None));
    let w = b.add_tensor(f32t(&[2, 3], Some(vec![1.0, -2.0, 0.5, 0.0, 1.0, 1.0])));
    let bias = b.add_tensor(f32t(&[2], Some(vec![0.25, -10.0])));
    let h = b.add_tensor(f32t(&[1, 2], None));
    let y = b.add_tensor(f32t(&[1, 2], None));
    let inf = (
        f32::NEG_INFINITY.to_bits() as i32,
        f32::INFINITY.to_bits() as i32,
    );
    b.ops.push(OpSpec {
        kind: OpKind::FullyConnected,
        inputs: vec![Some(x), Some(w), Some(bias)],
        outputs: vec![h],
        params: vec![inf.0, inf.1],
    });
    b.ops.push(OpSpec {
        kind: OpKind::Unary,
        inputs: vec![Some(h)],
        outputs: vec![y],
        params: vec![1, 0, 0],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    let bytes = b.finish().unwrap();
    let path = repo_root().join("tests/golden/tiny_fc_relu.cairn");
    if std::env::var("CAIRN_GOLDEN_BLESS").is_ok() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path).expect("tests/golden/tiny_fc_relu.cairn");
    assert_eq!(
        bytes, golden,
        "the emitter's bytes changed: bump the format version or bless deliberately"
    );
    let ab = AlignedBytes::from_slice(&golden);
    let mut m = cairn_kernels::host::HostModel::new(ab.as_slice()).unwrap();
    let out = m.run(&[&[1.0, 2.0, 3.0]]).unwrap();
    // h = [1 - 4 + 1.5 + 0.25, 0 + 2 + 3 - 10] = [-1.25, -5]; relu -> [0, 0]
    assert_eq!(out[0], vec![0.0, 0.0]);
    let out = m.run(&[&[4.0, 0.0, 2.0]]).unwrap();
    // h = [4 + 1 + 0.25, 0 + 0 + 2 - 10] = [5.25, -8] -> [5.25, 0]
    assert_eq!(out[0], vec![5.25, 0.0]);
    // The header states arena and flash bytes.
    let model = m.model();
    assert_eq!(model.flash_bytes(), golden.len());
    assert!(model.arena_bytes() >= 12 + 8);
}

mod proptests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn base() -> &'static [u8] {
        static B: OnceLock<Vec<u8>> = OnceLock::new();
        B.get_or_init(digits_model)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random byte edits (checksum re-stamped) and truncation: typed error or a run,
        /// never a panic. proptest prints the minimal failing edit list on failure.
        #[test]
        fn edits_never_panic(edits in proptest::collection::vec((0usize..2048, any::<u8>()), 1..8), cut in 0usize..10_000) {
            let mut b = base().to_vec();
            for (at, v) in edits {
                let at = at % b.len();
                b[at] = v;
            }
            let cut = b.len() - (cut % 64).min(b.len());
            b.truncate(cut.max(HEADER_BYTES));
            let len = b.len() as u32;
            b[hdr::FILE_BYTES..hdr::FILE_BYTES + 4].copy_from_slice(&len.to_le_bytes());
            restamp(&mut b);
            let r = catch_unwind(AssertUnwindSafe(|| load_and_run(&b)));
            prop_assert!(r.is_ok(), "panicked");
        }
    }
}

/// The kinds for general models (Binary, Where, Reduce, Gather, Tile) refuse bad parameter
/// words, shapes and dtypes at load; an index outside its axis is a run-time error.
#[test]
fn general_kinds_refuse_bad_params_and_indices() {
    use cairn_core::op::{BinaryFn, ReduceFn};
    let spec = |dtype: DType, dims: &[usize], data: Option<Vec<u8>>| TensorSpec {
        dtype,
        shape: Shape::new(dims).unwrap(),
        quant: QuantSpec::None,
        data,
        layout: Default::default(),
    };
    // x f32 [2, 3, 4] → kind(x, extra...) → y of `out` dtype and dims.
    let build = |kind: OpKind, params: Vec<i32>, extra: Vec<TensorSpec>, out: TensorSpec| {
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(spec(DType::F32, &[2, 3, 4], None));
        let mut inputs = vec![Some(x)];
        for t in extra {
            inputs.push(Some(b.add_tensor(t)));
        }
        let y = b.add_tensor(out);
        b.ops.push(OpSpec {
            kind,
            inputs,
            outputs: vec![y],
            params,
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        b.finish()
    };
    let f32s = |dims: &[usize]| spec(DType::F32, dims, None);
    let i32s = |dims: &[usize]| spec(DType::I32, dims, None);
    let idx = |v: &[i32]| {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        spec(DType::I32, &[v.len()], Some(bytes))
    };
    let (sum, argmax, topk) = (
        ReduceFn::Sum as i32,
        ReduceFn::ArgMax as i32,
        ReduceFn::TopK as i32,
    );
    let refused = [
        (
            OpKind::Reduce,
            vec![sum, 0b1000, 1, 0],
            vec![],
            f32s(&[2, 3, 4]),
        ),
        (OpKind::Reduce, vec![sum, 0, 1, 0], vec![], f32s(&[2, 3, 4])),
        (
            OpKind::Reduce,
            vec![99, 0b10, 1, 0],
            vec![],
            f32s(&[2, 1, 4]),
        ),
        (
            OpKind::Reduce,
            vec![sum, 0b10, 2, 0],
            vec![],
            f32s(&[2, 1, 4]),
        ),
        (
            OpKind::Reduce,
            vec![argmax, 0b11, 1, 0],
            vec![],
            i32s(&[1, 1, 4]),
        ),
        (
            OpKind::Reduce,
            vec![argmax, 0b10, 1, 0],
            vec![],
            f32s(&[2, 1, 4]),
        ),
        (
            OpKind::Reduce,
            vec![topk, 0b100, 5, 1],
            vec![],
            f32s(&[2, 3, 5]),
        ),
        (
            OpKind::Reduce,
            vec![topk, 0b100, -1, 1],
            vec![],
            f32s(&[2, 3, 4]),
        ),
        (OpKind::Binary, vec![42], vec![f32s(&[4])], f32s(&[2, 3, 4])),
        (
            OpKind::Binary,
            vec![BinaryFn::Less as i32],
            vec![f32s(&[4])],
            f32s(&[2, 3, 4]),
        ),
        (
            OpKind::Gather,
            vec![3, 0],
            vec![idx(&[0])],
            f32s(&[2, 3, 1]),
        ),
        (
            OpKind::Gather,
            vec![-1, 0],
            vec![idx(&[0])],
            f32s(&[2, 3, 1]),
        ),
        (
            OpKind::Gather,
            vec![2, 2],
            vec![idx(&[0])],
            f32s(&[2, 3, 1]),
        ),
        (OpKind::Tile, vec![], vec![], f32s(&[2, 3, 6])),
        (
            OpKind::Where,
            vec![],
            vec![f32s(&[1]), f32s(&[1])],
            f32s(&[2, 3, 4]),
        ),
    ];
    for (k, (kind, params, extra, out)) in refused.into_iter().enumerate() {
        let r = catch_unwind(AssertUnwindSafe(|| build(kind, params.clone(), extra, out)));
        assert!(
            matches!(r, Ok(Err(_))),
            "case {k}: {kind:?} {params:?} loaded or panicked"
        );
    }
    // Valid ones load and run; a constant index outside its axis fails at run time.
    let runs = [
        (
            OpKind::Reduce,
            vec![topk, 0b100, 2, 1],
            vec![],
            f32s(&[2, 3, 2]),
            true,
        ),
        (OpKind::Tile, vec![], vec![], f32s(&[4, 3, 8]), true),
        (
            OpKind::Gather,
            vec![2, 0],
            vec![idx(&[3, -4])],
            f32s(&[2, 3, 2]),
            true,
        ),
        (
            OpKind::Gather,
            vec![2, 0],
            vec![idx(&[7])],
            f32s(&[2, 3, 1]),
            false,
        ),
    ];
    for (k, (kind, params, extra, out, ok)) in runs.into_iter().enumerate() {
        let bytes = build(kind, params, extra, out).unwrap();
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let mut arena = vec![0u8; m.arena_bytes() + 16];
        let mut it = Interpreter::new(m, CpuBackend, &mut arena).unwrap();
        it.set_input_f32(0, &[0.5; 24]).unwrap();
        assert_eq!(it.invoke().is_ok(), ok, "case {k}: {kind:?}");
    }
}

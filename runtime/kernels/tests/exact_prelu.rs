//! int8 Conv with a PRelu folded into its requantization (a second row of multipliers,
//! `conv_multipliers`: accumulators below zero take their own per-channel multiplier): the
//! reference computes
//! `requantize_signed`, and every fast path that takes such a conv (implicit GEMM, GEMV,
//! the depthwise kernels, the portable row and interior paths, pre-packed weights) equals
//! the reference bit for bit and says it ran; the paths that do not take it leave it to the
//! reference (seeded: `CAIRN_SEED`, printed on failure).

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::op::conv;
use cairn_core::quant::round_half_even;
use cairn_core::{DType, OpKind};
use cairn_kernels::paths::{taken, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{conv_model, run, seed, tensor, ConvCase, ConvOpts, Rng};

/// Runs one case on both backends (and with pre-packed weights where the conv packs);
/// false when the geometry is empty.
fn check(r: &mut Rng, cs: &ConvCase, seven: bool, seed: u64, case: usize) -> bool {
    let prelu = ConvOpts { seven, prelu: true };
    let Some(mut b) = conv_model(r, cs, prelu) else {
        return false;
    };
    let bytes = b.finish().expect("valid conv model");
    let packed = (b.pack_conv_weights(2048) > 0).then(|| b.finish().expect("valid packed"));
    let input: Vec<u8> = (0..cs.n * cs.c * cs.h * cs.w)
        .map(|_| r.i8() as u8)
        .collect();
    let reference = run(&bytes, RefBackend, &input);
    let what = || format!("CAIRN_SEED={seed} case {case}: {cs:?} seven={seven}");
    assert_eq!(run(&bytes, CpuBackend, &input), reference, "{}", what());
    if let Some(p) = packed {
        assert_eq!(
            run(&p, RefBackend, &input),
            reference,
            "packed ref: {}",
            what()
        );
        assert_eq!(
            run(&p, CpuBackend, &input),
            reference,
            "packed cpu: {}",
            what()
        );
    }
    true
}

/// A one-image conv: channels, plane, output channels, kernel, stride, pads, groups.
fn case(
    c: usize,
    hw: (usize, usize),
    oc: usize,
    k: (usize, usize),
    s: usize,
    p: usize,
    group: usize,
) -> ConvCase {
    ConvCase {
        n: 1,
        c,
        h: hw.0,
        w: hw.1,
        oc,
        k,
        stride: (s, s),
        pad: [p; 4],
        dil: (1, 1),
        group,
    }
}

/// The reference's arithmetic on a 1×1 conv of one channel with weight 1: each input `x`
/// comes out as `round(x · 0.5)` at or above zero and `round(x · 0.05)` below.
#[test]
fn reference_takes_the_negative_multiplier_below_zero() {
    let cs = case(1, (1, 256), 1, (1, 1), 1, 0, 1);
    let mut b = ModelBuilder::default();
    let t = |dims: &[usize], q: QuantSpec, d: Option<Vec<u8>>, dt: DType| tensor(dt, dims, q, d);
    let pt = |s: f32| QuantSpec::PerTensor {
        scale: s,
        zero_point: 0,
    };
    let x = b.add_tensor(t(&[1, 1, 1, 256], pt(0.1), None, DType::I8));
    let w = b.add_tensor(t(
        &[1, 1, 1, 1],
        QuantSpec::PerAxis {
            axis: 0,
            scales: vec![0.05],
            zero_points: vec![0],
        },
        Some(vec![1]),
        DType::I8,
    ));
    let both = [0.5f32, 0.05]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let rq = b.add_tensor(t(&[2, 1], QuantSpec::None, Some(both), DType::F32));
    let y = b.add_tensor(t(&[1, 1, 1, 256], pt(0.1), None, DType::I8));
    let mut params = common::conv_params(&cs, 1);
    params[conv::ACT_LO] = -128;
    params[conv::ACT_HI] = 127;
    b.ops.push(OpSpec {
        kind: OpKind::Conv,
        inputs: vec![Some(x), Some(w), None, Some(rq)],
        outputs: vec![y],
        params,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    let bytes = b.finish().expect("valid conv");
    let input: Vec<u8> = (-128..128).map(|v: i32| v as i8 as u8).collect();
    let want: Vec<u8> = (-128..128)
        .map(|v: i32| {
            let s = if v < 0 { 0.05f32 } else { 0.5 };
            round_half_even(v as f32 * s) as i32 as i8 as u8
        })
        .collect();
    assert_eq!(run(&bytes, RefBackend, &input), want);
    assert_eq!(run(&bytes, CpuBackend, &input), want);
}

/// A Conv's multipliers are one or two per output channel; a FullyConnected's one.
#[test]
fn multipliers_of_the_wrong_count_are_refused() {
    let mut r = Rng(seed());
    let cs = case(4, (6, 6), 8, (3, 3), 1, 1, 1);
    let prelu = ConvOpts {
        seven: false,
        prelu: true,
    };
    let mut b = conv_model(&mut r, &cs, prelu).expect("geometry");
    let rq = b.ops[0].inputs[3].expect("multipliers") as usize;
    for n in [7, 15, 24] {
        b.tensors[rq].shape = cairn_core::Shape::new(&[n]).unwrap();
        b.tensors[rq].data = Some(vec![0; 4 * n]);
        assert!(b.finish().is_err(), "{n} multipliers for 8 channels loaded");
    }
    for n in [8, 16] {
        b.tensors[rq].shape = cairn_core::Shape::new(&[n]).unwrap();
        b.tensors[rq].data = Some(1f32.to_le_bytes().repeat(n));
        assert!(b.finish().is_ok(), "{n} multipliers for 8 channels refused");
    }
    // A FullyConnected takes no second row.
    let fc = |n: usize| {
        let mut b = ModelBuilder::default();
        let pt = QuantSpec::PerTensor {
            scale: 0.1,
            zero_point: 0,
        };
        let x = b.add_tensor(tensor(DType::I8, &[1, 4], pt.clone(), None));
        let w = b.add_tensor(tensor(
            DType::I8,
            &[3, 4],
            QuantSpec::PerAxis {
                axis: 0,
                scales: vec![0.1; 3],
                zero_points: vec![0; 3],
            },
            Some(vec![1; 12]),
        ));
        let rq = b.add_tensor(tensor(
            DType::F32,
            &[n],
            QuantSpec::None,
            Some(1f32.to_le_bytes().repeat(n)),
        ));
        let y = b.add_tensor(tensor(DType::I8, &[1, 3], pt, None));
        b.ops.push(OpSpec {
            kind: OpKind::FullyConnected,
            inputs: vec![Some(x), Some(w), None, Some(rq)],
            outputs: vec![y],
            params: vec![-128, 127],
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        b.finish()
    };
    assert!(fc(3).is_ok());
    assert!(
        fc(6).is_err(),
        "a FullyConnected took two rows of multipliers"
    );
}

/// Every conv family with a folded PRelu: one-group convs of the implicit GEMM (8- and
/// 7-bit weights, with and without VNNI), pointwise, a few outputs (GEMV), depthwise
/// (the SIMD kernels and the row path), grouped (the interior path), and batches of tiny
/// maps (which the batched FullyConnected path leaves to the reference).
#[test]
fn prelu_folded_convs_match_reference() {
    let seed = seed() ^ 0x9E1F;
    let mut r = Rng(seed);
    // The paths each case set must reach (x86_64 with AVX2: all; aarch64: 1..5).
    const PATHS: [Path; 6] = [
        Path::Direct,
        Path::Gemv,
        Path::DepthwiseSimd,
        Path::DepthwiseRows,
        Path::Interior,
        Path::DepthwiseAvx2,
    ];
    let before = PATHS.map(taken);
    let mut n = 0;
    for i in 0..6 {
        let mut run_case = |cs: ConvCase, seven: bool| {
            n += 1;
            assert!(check(&mut r, &cs, seven, seed, n), "empty case {cs:?}");
        };
        // P-Net's 3×3 convs, a stride-2 stem, pointwise.
        run_case(case(10, (20 + i, 17), 16, (3, 3), 1, 0, 1), i % 2 == 0);
        run_case(case(3, (24, 31 - i), 12, (3, 3), 2, 1, 1), false);
        run_case(case(24, (9, 13 + i), 20, (1, 1), 1, 0, 1), i % 2 == 1);
        // A 1×1 map (GEMV).
        run_case(case(16 + i, (3, 3), 10, (3, 3), 1, 0, 1), false);
        // Depthwise: 3×3 (SIMD kernels), dilated 3×3 (the AVX2 pair kernel), stride 5
        // (rows), dilated 8×8 (none: the reference).
        run_case(
            case(8 + i, (14, 15), 8 + i, (3, 3), 1 + i % 2, 1, 8 + i),
            false,
        );
        let dilated = |k| ConvCase {
            dil: (2, 2),
            ..case(4, (20, 21), 4, k, 1, 1, 4)
        };
        run_case(dilated((3, 3)), false);
        run_case(dilated((8, 8)), false);
        run_case(case(5, (20, 26), 5, (3, 3), 5, 1, 5), false);
        // Grouped.
        run_case(case(8, (7, 9), 6, (3, 3), 1, 1, 2), false);
        // A batch of tiny maps.
        run_case(
            ConvCase {
                n: 4,
                ..case(6, (2, 3), 5, (1, 1), 1, 0, 1)
            },
            false,
        );
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // The same one-group cases once more with VNNI off where the CPU has it.
        if cairn_kernels::paths::vnni_hardware().is_some() {
            let was = cairn_kernels::paths::allow_vnni(false);
            for i in 0..3 {
                n += 1;
                let cs = case(10, (20 + i, 17), 16, (3, 3), 1, 0, 1);
                assert!(check(&mut r, &cs, i % 2 == 0, seed, n));
            }
            cairn_kernels::paths::allow_vnni(was);
        }
        for (k, (p, b)) in PATHS.iter().zip(before).enumerate() {
            assert!(taken(*p) > b, "path {k} never ran (CAIRN_SEED={seed})");
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = before;
    #[cfg(target_arch = "aarch64")]
    for (k, (p, b)) in PATHS.iter().zip(before).enumerate().take(5).skip(1) {
        assert!(taken(*p) > b, "path {k} never ran (CAIRN_SEED={seed})");
    }
}

//! The on-disk codes (op kinds, function codes, dtypes, layouts, kernel ids) round-trip and
//! stay distinct; the quantization arithmetic every kernel shares rounds and clamps as the
//! reference defines.

use cairn_core::kernel::{KernelId, KernelSet, Variant};
use cairn_core::layout::{Layout, Pairs6};
use cairn_core::op::{conv_multipliers, BinaryFn, ReduceFn, UnaryFn, OP_KIND_COUNT};
use cairn_core::quant::{qrange, quantize_f32, requantize, requantize_signed, round_half_even};
use cairn_core::{DType, OpKind, Quant, Shape};
use std::collections::HashSet;

#[test]
fn op_kind_codes_round_trip_with_distinct_names() {
    let mut names = HashSet::new();
    for c in 0..=40u16 {
        match OpKind::from_code(c) {
            Some(k) => {
                assert_eq!(k as u16, c);
                assert!((1..OP_KIND_COUNT as u16).contains(&c));
                assert!(names.insert(k.name()), "{} twice", k.name());
                assert_eq!(format!("{k:?}"), k.name());
            }
            None => assert!(c == 0 || c >= OP_KIND_COUNT as u16, "code {c}"),
        }
    }
    assert_eq!(names.len(), OP_KIND_COUNT - 1);
}

#[test]
fn function_codes_round_trip() {
    for c in -2..60 {
        if let Some(f) = UnaryFn::from_code(c) {
            assert_eq!(f as i32, c);
        } else {
            assert!(!(0..=41).contains(&c), "unary {c}");
        }
        if let Some(f) = BinaryFn::from_code(c) {
            assert_eq!(f as i32, c);
        } else {
            assert!(!(0..=12).contains(&c), "binary {c}");
        }
        if let Some(f) = ReduceFn::from_code(c) {
            assert_eq!(f as i32, c);
        } else {
            assert!(!(0..=12).contains(&c), "reduce {c}");
        }
    }
    let arith: Vec<i32> = (0..=12)
        .filter(|&c| BinaryFn::from_code(c).unwrap().is_arithmetic())
        .collect();
    assert_eq!(arith, vec![0, 1, 2, 11, 12]);
    let logic: Vec<i32> = (0..=12)
        .filter(|&c| BinaryFn::from_code(c).unwrap().is_logic())
        .collect();
    assert_eq!(logic, vec![8, 9, 10]);
    let class = |c| {
        let f = ReduceFn::from_code(c).unwrap();
        (f.is_arg(), f.is_top_k(), f.writes_indices())
    };
    assert_eq!(class(0), (false, false, false));
    assert_eq!(class(9), (true, false, true));
    assert_eq!(class(10), (true, false, true));
    assert_eq!(class(11), (false, true, false));
    assert_eq!(class(12), (false, true, true));
}

#[test]
fn dtypes_and_layouts() {
    let mut seen = HashSet::new();
    for c in 0..=8u8 {
        match DType::from_code(c) {
            Some(d) => {
                assert_eq!(d as u8, c);
                assert!(seen.insert(d.name()));
                let (size, quantized) = match d {
                    DType::I8 | DType::U8 => (1, true),
                    DType::I32 | DType::F32 => (4, false),
                };
                assert_eq!(
                    (d.size_bytes(), d.is_quantized()),
                    (size, quantized),
                    "{d:?}"
                );
            }
            None => assert!(c == 0 || c > 4),
        }
    }
    assert_eq!(seen.len(), 4);
    assert_eq!(Layout::from_code(0), Some(Layout::Plain));
    assert_eq!(Layout::from_code(1), Some(Layout::Pairs6));
    assert_eq!(Layout::from_code(2), None);
    assert_ne!(Layout::Plain.name(), Layout::Pairs6.name());
    // Pairs6 geometry: rank 4 only; 6-row blocks of channel pairs.
    assert_eq!(
        Pairs6::of(&Shape::new(&[7, 3, 1, 1]).unwrap()),
        Some(Pairs6 { oc: 7, k: 3 })
    );
    assert_eq!(Pairs6::of(&Shape::new(&[7, 3]).unwrap()), None);
    let g = Pairs6 { oc: 7, k: 5 };
    assert_eq!(
        (g.pairs(), g.blocks(), g.elements()),
        (3, 2, Some(2 * 6 * 3 * 2))
    );
    assert_eq!(Pairs6 { oc: 0, k: 0 }.position(0), None);
    assert_eq!(
        Pairs6 {
            oc: usize::MAX,
            k: 4
        }
        .elements(),
        None
    );
}

#[test]
fn kernel_ids_round_trip_and_sets_hold_them() {
    let variants = [
        Variant::F32,
        Variant::I8,
        Variant::DwF32,
        Variant::DwI8,
        Variant::PackedI8,
        Variant::W8F32,
    ];
    let mut all = Vec::new();
    let mut indices = HashSet::new();
    for c in 1..OP_KIND_COUNT as u16 {
        let kind = OpKind::from_code(c).unwrap();
        for v in variants {
            let k = KernelId { kind, variant: v };
            assert!(k.index() < 256);
            assert!(indices.insert(k.index()), "{k} shares an index");
            assert_eq!(KernelId::from_index(k.index()), Some(k));
            all.push(k);
        }
    }
    // Code 32 takes the slot of code 0, which is no kind.
    assert_eq!(
        KernelId::from_index(0).map(|k| k.kind),
        Some(OpKind::Recurrent)
    );
    assert_eq!(KernelId::from_index(192), None);
    assert_eq!(KernelId::from_index(255), None);
    assert_eq!(KernelId::from_index(usize::MAX), None);
    let conv_i8 = KernelId {
        kind: OpKind::Conv,
        variant: Variant::I8,
    };
    assert_eq!(conv_i8.index(), 5);
    assert_eq!(conv_i8.to_string(), "Conv.i8");
    assert_eq!(
        KernelId {
            kind: OpKind::Conv,
            variant: Variant::PackedI8
        }
        .to_string(),
        "Conv.i8-packed"
    );
    assert_eq!(
        KernelId {
            kind: OpKind::Add,
            variant: Variant::DwF32
        }
        .to_string(),
        "Add.dw-f32"
    );

    let mut set = KernelSet::default();
    assert!(set.is_empty());
    assert_eq!(set.len(), 0);
    for (i, k) in all.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        set.insert(*k);
        assert_eq!(set.len(), i / 3 + 1);
    }
    assert!(!set.is_empty());
    let listed: Vec<KernelId> = set.iter().collect();
    assert_eq!(listed.len(), set.len());
    for (i, k) in all.iter().enumerate() {
        assert_eq!(set.contains(*k), i % 3 == 0, "{k}");
    }
    let mut sorted = listed.clone();
    sorted.sort_by_key(|k| k.index());
    assert_eq!(listed, sorted, "iter lists in index order");
}

#[test]
fn rounding_is_half_to_even() {
    for (x, want) in [
        (0.5f32, 0.0f32),
        (1.5, 2.0),
        (2.5, 2.0),
        (-0.5, 0.0),
        (-1.5, -2.0),
        (-2.5, -2.0),
        (2.4, 2.0),
        (2.6, 3.0),
        (-2.6, -3.0),
        (1000.5, 1000.0),
    ] {
        assert_eq!(round_half_even(x), want, "{x}");
    }
}

#[test]
fn requantize_clamps_then_rounds_around_the_zero_point() {
    // acc·scale, clamped to [lo − z, hi − z], rounded half to even, plus z.
    assert_eq!(requantize(10, 0.25, 3, -128, 127), 5); // 2.5 → 2, + 3
    assert_eq!(requantize(14, 0.25, 3, -128, 127), 7); // 3.5 → 4, + 3
    assert_eq!(requantize(-10, 0.25, 0, -128, 127), -2);
    assert_eq!(requantize(1000, 1.0, 10, -128, 127), 127);
    assert_eq!(requantize(-1000, 1.0, 10, -128, 127), -128);
    assert_eq!(requantize(117, 1.0, 10, -128, 127), 127);
    assert_eq!(requantize(118, 1.0, 10, -128, 127), 127);
    assert_eq!(requantize(-138, 1.0, 10, -128, 127), -128);
    assert_eq!(requantize(5, 1.0, 0, 0, 6), 5);
    assert_eq!(requantize(7, 1.0, 0, 0, 6), 6);
    assert_eq!(requantize(-1, 1.0, 0, 0, 6), 0);
    assert_eq!(requantize(i32::MAX, 1.0, 0, -128, 127), 127);
}

#[test]
fn requantize_signed_takes_the_second_multiplier_below_zero() {
    // A folded PRelu: accumulators below zero take `neg`, the rest `pos`.
    assert_eq!(requantize_signed(10, 0.5, 0.1, 3, -128, 127), 8); // 5 + 3
    assert_eq!(requantize_signed(0, 0.5, 0.1, 3, -128, 127), 3);
    assert_eq!(requantize_signed(-10, 0.5, 0.1, 3, -128, 127), 2); // −1 + 3
    assert_eq!(requantize_signed(-25, 0.5, 0.1, 0, -128, 127), -2); // −2.5 → −2
    assert_eq!(requantize_signed(-1000, 1.0, 0.5, 0, -100, 127), -100);
    assert_eq!(requantize_signed(-7, 1.0, -2.0, 0, -128, 127), 14);
}

#[test]
fn conv_multipliers_are_one_or_two_rows() {
    let m = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(conv_multipliers(&m, 6), Some((&m[..], &m[..])));
    assert_eq!(conv_multipliers(&m, 3), Some((&m[..3], &m[3..])));
    for oc in [0, 1, 2, 4, 5, 7, 12] {
        assert_eq!(conv_multipliers(&m, oc), None, "{oc}");
    }
    assert_eq!(conv_multipliers(&[], 0), Some((&[][..], &[][..])));
}

#[test]
fn quantize_divides_rounds_offsets_and_clamps() {
    let (lo, hi) = qrange(DType::I8);
    assert_eq!((lo, hi), (-128, 127));
    assert_eq!(qrange(DType::U8), (0, 255));
    assert_eq!(quantize_f32(1.0, 0.5, 0, lo, hi), 2);
    assert_eq!(quantize_f32(1.25, 0.5, 0, lo, hi), 2); // 2.5 → 2
    assert_eq!(quantize_f32(1.75, 0.5, 0, lo, hi), 4); // 3.5 → 4
    assert_eq!(quantize_f32(-1.25, 0.5, 5, lo, hi), 3);
    assert_eq!(quantize_f32(1e9, 0.5, 0, lo, hi), 127);
    assert_eq!(quantize_f32(-1e9, 0.5, 0, lo, hi), -128);
    assert_eq!(quantize_f32(f32::INFINITY, 1.0, 0, lo, hi), 127);
    assert_eq!(quantize_f32(f32::NEG_INFINITY, 1.0, 0, lo, hi), -128);
    assert_eq!(quantize_f32(f32::NAN, 1.0, 7, lo, hi), 7);
    assert_eq!(quantize_f32(f32::NAN, 1.0, 300, 0, 255), 255);
    assert_eq!(quantize_f32(f32::NAN, 1.0, -3, 0, 255), 0);
    assert_eq!(quantize_f32(100.0, 1.0, 200, 0, 255), 255);
    // Past 2^22 the value is already whole: no rounding trick that would lose it.
    assert_eq!(
        quantize_f32(5_000_001.0, 1.0, 0, i32::MIN, i32::MAX),
        5_000_001
    );
    assert_eq!(
        quantize_f32(-5_000_001.0, 1.0, 0, i32::MIN, i32::MAX),
        -5_000_001
    );
    assert_eq!(
        quantize_f32(4_194_303.5, 1.0, 0, i32::MIN, i32::MAX),
        4_194_304
    );
    let q = Quant::PerTensor {
        scale: 0.5,
        zero_point: -3,
    };
    assert_eq!(q.per_tensor(), (0.5, -3));
    assert_eq!(Quant::None.per_tensor(), (1.0, 0));
}

#[test]
fn broadcast_strides_are_zero_along_broadcast_axes() {
    use cairn_core::shape::broadcast_strides;
    let s = |d: &[usize]| Shape::new(d).unwrap();
    let out = s(&[2, 3, 4]);
    // Right-aligned: [3, 4] reads rows of 4, repeated for each of the 2.
    assert_eq!(broadcast_strides(&s(&[3, 4]), &out)[..3], [0, 4, 1]);
    assert_eq!(broadcast_strides(&s(&[2, 1, 4]), &out)[..3], [4, 0, 1]);
    assert_eq!(broadcast_strides(&s(&[4]), &out)[..3], [0, 0, 1]);
    assert_eq!(broadcast_strides(&s(&[2, 3, 1]), &out)[..3], [3, 1, 0]);
    assert_eq!(broadcast_strides(&out, &out)[..3], [12, 4, 1]);
}

#[test]
fn accelerator_errors_say_what_happened() {
    use cairn_core::accel::AccelError::*;
    let all = [
        Unavailable,
        Unsupported,
        Compile,
        DeviceLost,
        Timeout,
        Device,
    ];
    let said: HashSet<String> = all.iter().map(|e| e.to_string()).collect();
    assert_eq!(said.len(), all.len());
    assert!(said.iter().all(|s| s.len() > 5));
    assert_eq!(DeviceLost.to_string(), "the device was lost");
}

#[test]
fn only_a_packed_tensor_reads_as_pairs6() {
    use cairn_core::{ExecError, TensorInfo, TensorRef};
    let shape = Shape::new(&[2, 1, 1, 3]).unwrap();
    let g = Pairs6::of(&shape).unwrap();
    let words = vec![0i16; g.elements().unwrap()];
    let data: &[u8] = bytemuck::cast_slice(&words);
    let t = |layout| TensorRef {
        info: TensorInfo {
            dtype: DType::I8,
            shape,
            quant: Quant::None,
            layout,
        },
        data,
    };
    let (v, got) = t(Layout::Pairs6).pairs6().unwrap();
    assert_eq!((v.len(), got), (g.elements().unwrap(), g));
    assert_eq!(t(Layout::Plain).pairs6().err(), Some(ExecError::DType));
    let short = TensorRef {
        data: &data[..data.len() - 2],
        ..t(Layout::Pairs6)
    };
    assert_eq!(short.pairs6().err(), Some(ExecError::Shape));
}

#[test]
fn typed_views_check_the_dtype() {
    use cairn_core::{ExecError, TensorInfo, TensorMut, TensorRef};
    let words = [0u32; 4];
    let info = |dtype| TensorInfo {
        dtype,
        shape: Shape::new(&[4]).unwrap(),
        quant: Quant::None,
        layout: Layout::Plain,
    };
    let t = |dtype| TensorRef {
        info: info(dtype),
        data: bytemuck::cast_slice(&words),
    };
    assert_eq!(t(DType::F32).f32s().map(|v| v.len()), Ok(4));
    assert_eq!(t(DType::I32).f32s().err(), Some(ExecError::DType));
    assert_eq!(t(DType::F32).i32s().err(), Some(ExecError::DType));
    assert_eq!(t(DType::I32).i32s().map(|v| v.len()), Ok(4));
    let mut out = [0u32; 4];
    let mut m = TensorMut {
        info: info(DType::I32),
        data: bytemuck::cast_slice_mut(&mut out),
    };
    assert_eq!(m.f32s_mut().err(), Some(ExecError::DType));
    assert_eq!(m.i32s_mut().map(|v| v.len()), Ok(4));
}

//! Every fast kernel equals the reference kernel bit for bit on random shapes, params and
//! data (seeded: `CAIRN_SEED`, printed on failure).

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::op::conv;
use cairn_core::{DType, OpKind, Shape};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{conv_model, run, seed, ConvCase, ConvOpts, Rng};

fn check(r: &mut Rng, cs: ConvCase, seed: u64, case: usize) -> bool {
    let Some(mut b) = conv_model(r, &cs, ConvOpts::default()) else {
        return false;
    };
    let bytes = b.finish().expect("valid conv model");
    // The same conv with its weights pre-packed (one-group convs only).
    let packed = (b.pack_conv_weights(2048) > 0).then(|| b.finish().expect("valid packed conv"));
    assert_eq!(
        packed.is_some(),
        cs.group == 1 && cs.c * cs.k.0 * cs.k.1 <= 2048
    );
    let input: Vec<u8> = (0..cs.n * cs.c * cs.h * cs.w)
        .map(|_| r.i8() as u8)
        .collect();
    let reference = run(&bytes, RefBackend, &input);
    let what = || {
        format!(
            "CAIRN_SEED={seed} case {case}: n{} c{} {}x{} oc{} k{:?} s{:?} p{:?} d{:?} g{}",
            cs.n, cs.c, cs.h, cs.w, cs.oc, cs.k, cs.stride, cs.pad, cs.dil, cs.group
        )
    };
    assert_eq!(run(&bytes, CpuBackend, &input), reference, "{}", what());
    if let Some(p) = packed {
        assert_eq!(
            run(&p, RefBackend, &input),
            reference,
            "packed, reference: {}",
            what()
        );
        assert_eq!(
            run(&p, CpuBackend, &input),
            reference,
            "packed, cpu: {}",
            what()
        );
    }
    true
}

#[test]
fn pointwise_conv_matches_reference() {
    let seed = seed();
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..300 {
        let cs = ConvCase {
            n: r.range(1, 2),
            c: r.range(1, 37),
            h: r.range(1, 13),
            w: r.range(1, 19),
            oc: r.range(1, 35),
            k: (1, 1),
            stride: (1, 1),
            pad: [0; 4],
            dil: (1, 1),
            group: 1,
        };
        ran += check(&mut r, cs, seed, case) as usize;
    }
    assert!(ran > 250);
}

#[test]
fn depthwise_conv_matches_reference() {
    let seed = seed() ^ 0xD0;
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..300 {
        let c = r.range(2, 24);
        let cs = ConvCase {
            n: r.range(1, 2),
            c,
            h: r.range(1, 17),
            w: r.range(1, 17),
            oc: c,
            k: (r.range(1, 5), r.range(1, 5)),
            stride: (r.range(1, 3), r.range(1, 3)),
            pad: [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)],
            dil: (r.range(1, 2), r.range(1, 2)),
            group: c,
        };
        ran += check(&mut r, cs, seed, case) as usize;
    }
    assert!(ran > 100, "{ran}");
}

#[test]
fn grouped_conv_matches_reference() {
    let seed = seed() ^ 0x6E;
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..300 {
        let group = r.range(1, 3);
        let cs = ConvCase {
            n: 1,
            c: group * r.range(1, 6),
            h: r.range(1, 15),
            w: r.range(1, 15),
            oc: group * r.range(1, 6),
            k: (r.range(1, 4), r.range(1, 4)),
            stride: (r.range(1, 3), r.range(1, 3)),
            pad: [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)],
            dil: (r.range(1, 2), r.range(1, 2)),
            group,
        };
        ran += check(&mut r, cs, seed, case) as usize;
    }
    assert!(ran > 100, "{ran}");
}

/// Wide convs (hundreds of patch elements per output) through the im2col tile.
#[test]
fn wide_conv_matches_reference() {
    let seed = seed() ^ 0x3C;
    let mut r = Rng(seed);
    for case in 0..30 {
        let cs = ConvCase {
            n: 1,
            c: r.range(30, 120),
            h: r.range(3, 12),
            w: r.range(3, 12),
            oc: r.range(1, 20),
            k: (3, 3),
            stride: (r.range(1, 2), r.range(1, 2)),
            pad: [1, 1, 1, 1],
            dil: (1, 1),
            group: 1,
        };
        assert!(check(&mut r, cs, seed, case));
    }
}

/// Depthwise "same" convs with stride 1 (the whole-plane path), including planes narrower
/// than the kernel.
#[test]
fn depthwise_same_conv_matches_reference() {
    let seed = seed() ^ 0x5A;
    let mut r = Rng(seed);
    for case in 0..200 {
        let c = r.range(2, 12);
        let (kh, kw) = (2 * r.range(0, 3) + 1, 2 * r.range(0, 3) + 1);
        let cs = ConvCase {
            n: r.range(1, 2),
            c,
            h: r.range(1, 20),
            w: r.range(1, 20),
            oc: c,
            k: (kh, kw),
            stride: (1, 1),
            pad: [kh / 2, kw / 2, kh / 2, kw / 2],
            dil: (1, 1),
            group: c,
        };
        assert!(check(&mut r, cs, seed, case));
    }
}

/// The count of NEON element-wise ops (`Path::EltNeon`) before a test's cases.
struct NeonCount(#[allow(dead_code)] u64);

impl NeonCount {
    fn now() -> NeonCount {
        NeonCount(cairn_kernels::paths::taken(
            cairn_kernels::paths::Path::EltNeon,
        ))
    }

    /// On aarch64 with NEON: at least `min` ops took the NEON kernels since `now`.
    #[allow(unused_variables)]
    fn check(&self, min: u64, seed: u64) {
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        {
            let ran = cairn_kernels::paths::taken(cairn_kernels::paths::Path::EltNeon) - self.0;
            assert!(
                ran >= min,
                "NEON path ran {ran} times, want >= {min} (CAIRN_SEED={seed})"
            );
        }
    }
}

fn per_tensor(r: &mut Rng) -> QuantSpec {
    QuantSpec::PerTensor {
        scale: r.f(0.005, 0.2),
        zero_point: r.range(0, 255) as i32 - 128,
    }
}

/// A model `y = a (op) b` with one operand the input and the other a constant. With
/// `ties`, every scale is a power of two (0.25, 0.5 or 1), so many results fall exactly
/// halfway between two integers and the rounding rule decides them.
/// Returns the model and its input's element count.
fn binary_model(
    r: &mut Rng,
    kind: OpKind,
    a: &[usize],
    b: &[usize],
    y: &[usize],
    ties: bool,
    extreme: bool,
) -> (Vec<u8>, usize) {
    let mut m = ModelBuilder::default();
    let numel = |d: &[usize]| d.iter().product::<usize>();
    let input_first = r.next().is_multiple_of(2);
    let mut tensor = |dims: &[usize], is_input: bool, is_y: bool, r: &mut Rng| {
        let data = (!is_input).then(|| (0..numel(dims)).map(|_| r.i8() as u8).collect());
        let quant = if ties {
            QuantSpec::PerTensor {
                scale: [0.25, 0.5, 1.0][r.range(0, 2)],
                zero_point: r.range(0, 255) as i32 - 128,
            }
        } else if extreme {
            // Output scale 10^-4; operand scales of 40 for Mul (a factor of 1.6·10^7: the
            // AVX2 Mul's int16 path refuses it, |product · factor| could pass 2^30) and
            // 2000 for Add (2·10^7 a term: past 2^31 for large operands, where the AVX2
            // Add's sixteen-wide step refuses it).
            QuantSpec::PerTensor {
                scale: match (is_y, kind) {
                    (true, _) => 1e-4,
                    (false, OpKind::Add) => 2000.0,
                    (false, _) => 40.0,
                },
                zero_point: r.range(0, 255) as i32 - 128,
            }
        } else {
            per_tensor(r)
        };
        m.add_tensor(TensorSpec {
            dtype: DType::I8,
            shape: Shape::new(dims).unwrap(),
            quant,
            data,
            layout: Default::default(),
        })
    };
    let ta = tensor(a, input_first, false, r);
    let tb = tensor(b, !input_first, false, r);
    let ty = tensor(y, true, true, r);
    let (lo, hi) = if r.next().is_multiple_of(3) {
        (r.range(0, 100) as i32 - 128, r.range(0, 100) as i32 + 27)
    } else {
        (-128, 127)
    };
    m.ops.push(OpSpec {
        kind,
        inputs: vec![Some(ta), Some(tb)],
        outputs: vec![ty],
        params: vec![lo, hi],
    });
    m.inputs = vec![if input_first { ta } else { tb }];
    m.outputs = vec![ty];
    let n = numel(if input_first { a } else { b });
    (m.finish().expect("valid binary model"), n)
}

/// int8 Add and Mul: equal shapes, per-channel operands ([1, C, 1, 1] against
/// [N, C, H, W], either side), scalars, trailing blocks repeated over the leading dims,
/// and general broadcasts (rows of 16 or more take the fast path's row walk, shorter
/// ones the reference); a quarter with power-of-two scales (exact ties: round half to
/// even), a twentieth with extreme ones (results far out of range).
#[test]
fn binary_i8_matches_reference() {
    let seed = seed() ^ 0xE1;
    let mut r = Rng(seed);
    let neon = NeonCount::now();
    #[cfg(target_arch = "x86_64")]
    let (mul16, add16) = (
        cairn_kernels::paths::taken(cairn_kernels::paths::Path::MulInt16),
        cairn_kernels::paths::taken(cairn_kernels::paths::Path::AddInt16),
    );
    for case in 0..600 {
        let kind = if r.next().is_multiple_of(2) {
            OpKind::Add
        } else {
            OpKind::Mul
        };
        let (n, c, h, w) = (r.range(1, 2), r.range(1, 9), r.range(1, 7), r.range(1, 40));
        let full = vec![n, c, h, w];
        let (a, b) = match r.range(0, 12) {
            0 => (full.clone(), full.clone()),
            1 => (full.clone(), vec![1, c, 1, 1]),
            2 => (full.clone(), vec![1]),
            3 => (vec![1], full.clone()),
            // Trailing blocks repeated over the leading dims (attention masks).
            4 => (full.clone(), vec![1, 1, h, w]),
            5 => (full.clone(), vec![w]),
            6 => (full.clone(), vec![c, h, w]),
            7 => (full.clone(), vec![1, 1, h, 1]),
            // General broadcasts: a per-head mask over the rows of scores, either side,
            // both operands broadcast, and one constant along the rows.
            8 => (full.clone(), vec![1, c, 1, w]),
            9 => (vec![1, c, 1, w], full.clone()),
            10 => (vec![n, 1, h, w], vec![1, c, 1, w]),
            11 => (vec![1, c, 1, w], vec![n, 1, h, 1]),
            _ => (vec![1, c, h, 1], full.clone()),
        };
        let (ties, extreme) = (case % 4 == 0, case % 20 == 5);
        let (bytes, m) = binary_model(&mut r, kind, &a, &b, &full, ties, extreme);
        let input: Vec<u8> = (0..m).map(|_| r.i8() as u8).collect();
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {kind:?} {a:?} x {b:?} (ties {ties})"
        );
    }
    // All but the general broadcasts with short rows take the vector path.
    neon.check(400, seed);
    // AVX2 hosts without AVX-512: Mul's runs of 16 or more took the int16 products, and
    // Add's the sixteen-wide saturating step.
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && !std::is_x86_feature_detected!("avx512f") {
        let runs = cairn_kernels::paths::taken(cairn_kernels::paths::Path::MulInt16) - mul16;
        assert!(runs > 100, "{runs} int16 Mul runs (CAIRN_SEED={seed})");
        let runs = cairn_kernels::paths::taken(cairn_kernels::paths::Path::AddInt16) - add16;
        assert!(
            runs > 100,
            "{runs} sixteen-wide Add runs (CAIRN_SEED={seed})"
        );
    }
}

/// Per-tensor QuantizeLinear, with NaN, infinities, ties and values far out of range.
#[test]
fn quantize_matches_reference() {
    let seed = seed() ^ 0x0A;
    let mut r = Rng(seed);
    let neon = NeonCount::now();
    for case in 0..100 {
        let len = r.range(1, 70);
        let scale = r.f(0.001, 0.1);
        let mut m = ModelBuilder::default();
        let x = m.add_tensor(TensorSpec {
            dtype: DType::F32,
            shape: Shape::new(&[1, len]).unwrap(),
            quant: QuantSpec::None,
            data: None,
            layout: Default::default(),
        });
        let y = m.add_tensor(TensorSpec {
            dtype: DType::I8,
            shape: Shape::new(&[1, len]).unwrap(),
            quant: QuantSpec::PerTensor {
                scale,
                zero_point: r.range(0, 255) as i32 - 128,
            },
            data: None,
            layout: Default::default(),
        });
        m.ops.push(OpSpec {
            kind: OpKind::Quantize,
            inputs: vec![Some(x)],
            outputs: vec![y],
            params: vec![],
        });
        m.inputs = vec![x];
        m.outputs = vec![y];
        let bytes = m.finish().expect("valid quantize model");
        let input: Vec<u8> = (0..len)
            .flat_map(|_| {
                let v = match r.range(0, 9) {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    3 => (r.range(0, 400) as f32 - 200.0 + 0.5) * scale, // ties
                    4 => r.f(-1e9, 1e9),
                    _ => r.f(-2.0, 2.0),
                };
                v.to_le_bytes()
            })
            .collect();
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}"
        );
    }
    neon.check(100, seed);
}

/// Per-tensor DequantizeLinear from int8 and uint8: every byte value, odd lengths (vector
/// tails), scales from tiny to huge (subnormal and infinite products included).
#[test]
fn dequantize_matches_reference() {
    let seed = seed() ^ 0xDE;
    let mut r = Rng(seed);
    for case in 0..100 {
        let len = r.range(1, 300);
        let dtype = [DType::I8, DType::U8][r.range(0, 1)];
        let scale = match r.range(0, 3) {
            0 => r.f(1e-40, 1e-38),
            1 => r.f(1e36, 3e38),
            _ => r.f(0.0001, 500.0),
        };
        let zero_point = match dtype {
            DType::I8 => r.range(0, 255) as i32 - 128,
            _ => r.range(0, 255) as i32,
        };
        let mut m = ModelBuilder::default();
        let x = m.add_tensor(TensorSpec {
            dtype,
            shape: Shape::new(&[1, len]).unwrap(),
            quant: QuantSpec::PerTensor { scale, zero_point },
            data: None,
            layout: Default::default(),
        });
        let y = m.add_tensor(TensorSpec {
            dtype: DType::F32,
            shape: Shape::new(&[1, len]).unwrap(),
            quant: QuantSpec::None,
            data: None,
            layout: Default::default(),
        });
        m.ops.push(OpSpec {
            kind: OpKind::Dequantize,
            inputs: vec![Some(x)],
            outputs: vec![y],
            params: vec![],
        });
        m.inputs = vec![x];
        m.outputs = vec![y];
        let bytes = m.finish().expect("valid dequantize model");
        let input: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {dtype:?} scale {scale} zero point {zero_point}"
        );
    }
}

/// Stem-like convs (few input channels, 3×3, stride 1 or 2) on wide images, through the
/// im2col gather's contiguous and stride-2 copies.
#[test]
fn stem_conv_matches_reference() {
    let seed = seed() ^ 0x57;
    let mut r = Rng(seed);
    for case in 0..40 {
        let s = r.range(1, 2);
        let cs = ConvCase {
            n: 1,
            c: r.range(1, 4),
            h: r.range(3, 9),
            w: r.range(17, 70),
            oc: r.range(1, 17),
            k: (3, 3),
            stride: (s, s),
            pad: [r.range(0, 1), r.range(0, 1), r.range(0, 1), r.range(0, 1)],
            dil: (1, 1),
            group: 1,
        };
        assert!(check(&mut r, cs, seed, case));
    }
}

/// Depthwise convs on wide rows (several 32-column register blocks and a partial one)
/// and tall planes (several bands of rows), with the strides and kernel sizes of mobile
/// CNNs.
#[test]
fn wide_depthwise_conv_matches_reference() {
    let seed = seed() ^ 0xDD;
    let mut r = Rng(seed);
    for case in 0..60 {
        let c = r.range(1, 4);
        let k = 2 * r.range(1, 2) + 1;
        let cs = ConvCase {
            n: 1,
            c,
            h: if case % 2 == 0 {
                r.range(1, 9)
            } else {
                r.range(30, 90)
            },
            w: r.range(30, 140),
            oc: c,
            k: (k, k),
            stride: (r.range(1, 2), r.range(1, 2)),
            pad: [k / 2, k / 2, k / 2, k / 2],
            dil: (1, r.range(1, 2)),
            group: c,
        };
        assert!(check(&mut r, cs, seed, case));
    }
}

/// int8 lookup tables (per tensor: the vector path; per channel: the reference), on
/// lengths around the 32-byte block.
#[test]
fn lut_matches_reference() {
    #[cfg(target_arch = "x86_64")]
    use cairn_kernels::paths::{taken, Path};
    let seed = seed() ^ 0x17;
    let mut r = Rng(seed);
    let (neon, mut vector) = (NeonCount::now(), 0);
    for case in 0..100 {
        let (c, len) = (r.range(1, 4), r.range(1, 300));
        let per_channel = r.next().is_multiple_of(4);
        let mut m = ModelBuilder::default();
        let x = m.add_tensor(TensorSpec {
            dtype: DType::I8,
            shape: Shape::new(&[1, c, len]).unwrap(),
            quant: per_tensor(&mut r),
            data: None,
            layout: Default::default(),
        });
        let rows = if per_channel { c } else { 1 };
        let table: Vec<u8> = (0..256 * rows).map(|_| r.i8() as u8).collect();
        let t = m.add_tensor(TensorSpec {
            dtype: DType::I8,
            shape: Shape::new(&[rows, 256]).unwrap(),
            quant: QuantSpec::None,
            data: Some(table),
            layout: Default::default(),
        });
        // Two tables on one input: the first cannot run in place (the second still reads
        // the input), the second may.
        let mut ys = Vec::new();
        for _ in 0..2 {
            let y = m.add_tensor(TensorSpec {
                dtype: DType::I8,
                shape: Shape::new(&[1, c, len]).unwrap(),
                quant: per_tensor(&mut r),
                data: None,
                layout: Default::default(),
            });
            m.ops.push(OpSpec {
                kind: OpKind::Lut,
                inputs: vec![Some(x), Some(t)],
                outputs: vec![y],
                params: vec![if per_channel { 1 } else { -1 }],
            });
            ys.push(y);
        }
        m.inputs = vec![x];
        m.outputs = ys;
        let bytes = m.finish().expect("valid lut model");
        let input: Vec<u8> = (0..c * len).map(|_| r.i8() as u8).collect();
        #[cfg(target_arch = "x86_64")]
        let before = taken(Path::LutVbmi);
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}"
        );
        // Two ops a case; a per-channel table takes the vector path on runs of 32+.
        vector += if per_channel {
            2 * (len >= 32) as u64
        } else {
            2
        };
        // With AVX-512 VBMI a per-tensor table of 64 bytes or more takes it.
        #[cfg(target_arch = "x86_64")]
        if !per_channel && c * len >= 64 && std::is_x86_feature_detected!("avx512vbmi") {
            assert!(
                taken(Path::LutVbmi) > before,
                "CAIRN_SEED={seed} case {case}: VBMI path not taken"
            );
        }
    }
    neon.check(vector, seed);
}

/// One int8 pooling op of `kind` on [1, c, h, w] → [1, c, oh, ow].
fn pool_model(
    kind: OpKind,
    params: &[usize],
    [c, h, w]: [usize; 3],
    [oh, ow]: [usize; 2],
    qx: QuantSpec,
    qy: QuantSpec,
) -> Vec<u8> {
    let mut m = ModelBuilder::default();
    let x = m.add_tensor(TensorSpec {
        dtype: DType::I8,
        shape: Shape::new(&[1, c, h, w]).unwrap(),
        quant: qx,
        data: None,
        layout: Default::default(),
    });
    let y = m.add_tensor(TensorSpec {
        dtype: DType::I8,
        shape: Shape::new(&[1, c, oh, ow]).unwrap(),
        quant: qy,
        data: None,
        layout: Default::default(),
    });
    m.ops.push(OpSpec {
        kind,
        inputs: vec![Some(x)],
        outputs: vec![y],
        params: params.iter().map(|&v| v as i32).collect(),
    });
    m.inputs = vec![x];
    m.outputs = vec![y];
    m.finish().expect("valid pooling model")
}

/// int8 2×2 stride-2 MaxPool (the common CNN downsampling) on planes whose rows span
/// several 32-output steps and odd tails, or at most 8 bytes, floor and ceil output sizes;
/// on AVX2 hosts the row path must run.
#[test]
fn max_pool_2x2_matches_reference() {
    #[cfg(target_arch = "x86_64")]
    use cairn_kernels::paths::{taken, Path};
    let seed = seed() ^ 0x22;
    let mut r = Rng(seed);
    let (neon, mut rows) = (NeonCount::now(), 0);
    for case in 0..80 {
        // A quarter on whole planes of rows 2, 4, 6 and 8 wide in turn (the narrow path
        // on x86_64), the rest on any rows.
        let (c, h, w) = match case % 4 {
            1 => (r.range(1, 5), 2 * r.range(1, 4), 2 + 2 * (case / 4 % 4)),
            _ => (r.range(1, 5), r.range(2, 9), r.range(2, 200)),
        };
        let (oh, ow) = (h / 2, [w / 2, w.div_ceil(2)][r.range(0, 1)]);
        // Ceil mode pads the last column: the window then leaves the plane.
        let pr = 2 * ow - w.min(2 * ow);
        let params = [2, 2, 2, 2, 0, 0, 0, pr, 1, 1];
        let q = per_tensor(&mut r);
        let bytes = pool_model(OpKind::MaxPool, &params, [c, h, w], [oh, ow], q.clone(), q);
        let input = extremes(&mut r, c * h * w);
        #[cfg(target_arch = "x86_64")]
        let before = taken(Path::MaxPoolRows);
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {c}x{h}x{w} -> {oh}x{ow}"
        );
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && pr == 0 {
            assert!(
                taken(Path::MaxPoolRows) > before,
                "CAIRN_SEED={seed} case {case}: row path not taken"
            );
        }
        rows += (pr == 0) as u64;
    }
    neon.check(rows, seed);
}

/// int8 MaxPool with windows three columns wide at stride two (3×3/2 after a stem, and
/// taller, shorter and row-strided ones), left pads 0–2, a right pad as ceil mode gives,
/// rows short (the eight-output steps) and long (sixteen), extreme values; on AVX2 hosts
/// the row path must run.
#[test]
fn max_pool_3x2_matches_reference() {
    #[cfg(target_arch = "x86_64")]
    use cairn_kernels::paths::{taken, Path};
    let seed = seed() ^ 0x32;
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..200 {
        let (c, h, w) = (r.range(1, 4), r.range(2, 24), r.range(3, 120));
        let (kh, sh, dh) = (r.range(1, 4), r.range(1, 2), r.range(1, 2));
        let pads = [r.range(0, 1), r.range(0, 2), r.range(0, 1), r.range(0, 1)];
        let (eh, ph, pw) = (
            (kh - 1) * dh + 1,
            h + pads[0] + pads[2],
            w + pads[1] + pads[3],
        );
        if ph < eh || pw < 3 || pads[0] >= eh {
            continue;
        }
        let (oh, ow) = ((ph - eh) / sh + 1, (pw - 3) / 2 + 1);
        // Every window starts inside the padded input and sees one input row and column.
        if (oh - 1) * sh >= h + pads[0] || (ow - 1) * 2 >= w + pads[1] {
            continue;
        }
        let params = [kh, 3, sh, 2, pads[0], pads[1], pads[2], pads[3], dh, 1];
        let q = per_tensor(&mut r);
        let bytes = pool_model(OpKind::MaxPool, &params, [c, h, w], [oh, ow], q.clone(), q);
        let input = extremes(&mut r, c * h * w);
        #[cfg(target_arch = "x86_64")]
        let before = taken(Path::MaxPoolRows);
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {c}x{h}x{w} k{kh}x3 s{sh}x2 d{dh} p{pads:?}"
        );
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            assert!(
                taken(Path::MaxPoolRows) > before,
                "CAIRN_SEED={seed} case {case}: row path not taken"
            );
        }
        ran += 1;
    }
    assert!(ran > 100, "{ran}");
}

/// int8 MaxPool with a 1×2 window and stride (1, 2) (frequency pooling in audio models):
/// rows exactly twice the output (the whole tensor as one row) and rows with a spare
/// column, widths around the 16- and 32-output steps; on AVX2 hosts and aarch64 the row
/// kernel runs.
#[test]
fn max_pool_1x2_matches_reference() {
    let seed = seed() ^ 0x12;
    let mut r = Rng(seed);
    let neon = NeonCount::now();
    for case in 0..60 {
        let (c, h, ow) = (r.range(1, 6), r.range(1, 12), r.range(1, 40));
        let w = 2 * ow + r.range(0, 1);
        let params = [1, 2, 1, 2, 0, 0, 0, 0, 1, 1];
        let q = per_tensor(&mut r);
        let bytes = pool_model(OpKind::MaxPool, &params, [c, h, w], [h, ow], q.clone(), q);
        let input = extremes(&mut r, c * h * w);
        pool_rows_match(
            &bytes,
            &input,
            &format!("{c}x{h}x{w} -> {h}x{ow}"),
            seed,
            case,
        );
    }
    neon.check(60, seed);
}

/// int8 MaxPool with 4-wide windows at stride 4 over one row or two adjacent rows (a
/// 1×4/4 pool over a spectrum's bins, a 2×4 with row stride 1 or 2): rows exactly four
/// outputs wide (the whole tensor one row) and rows with spare columns, rows past the
/// 512-output stack chunk; on AVX2 hosts and aarch64 the row kernel runs.
#[test]
fn max_pool_4wide_matches_reference() {
    let seed = seed() ^ 0x44;
    let mut r = Rng(seed);
    let neon = NeonCount::now();
    for case in 0..60 {
        let (c, h) = (r.range(1, 4), r.range(2, 9));
        let ow = if case % 10 == 0 {
            r.range(500, 1100)
        } else {
            r.range(1, 40)
        };
        let w = 4 * ow + [0, r.range(1, 3)][r.range(0, 1)];
        let (kh, sh) = [(1, 1), (1, 2), (2, 1), (2, 2)][case % 4];
        let oh = (h - kh) / sh + 1;
        let params = [kh, 4, sh, 4, 0, 0, 0, 0, 1, 1];
        let q = per_tensor(&mut r);
        let bytes = pool_model(OpKind::MaxPool, &params, [c, h, w], [oh, ow], q.clone(), q);
        let input = extremes(&mut r, c * h * w);
        let what = format!("{c}x{h}x{w} k{kh}x4 s{sh}x4 -> {oh}x{ow}");
        pool_rows_match(&bytes, &input, &what, seed, case);
    }
    neon.check(60, seed);
}

/// A MaxPool model's output equals the reference's, and on AVX2 hosts and aarch64 the
/// int8 row kernel ran.
fn pool_rows_match(bytes: &[u8], input: &[u8], what: &str, seed: u64, case: usize) {
    use cairn_kernels::paths::{taken, Path};
    let before = taken(Path::MaxPoolRows);
    assert_eq!(
        run(bytes, CpuBackend, input),
        run(bytes, RefBackend, input),
        "CAIRN_SEED={seed} case {case}: {what}"
    );
    #[cfg(target_arch = "x86_64")]
    let vector = std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let vector = cfg!(all(target_arch = "aarch64", target_feature = "neon"));
    if vector {
        assert!(
            taken(Path::MaxPoolRows) > before,
            "CAIRN_SEED={seed} case {case}: row path not taken"
        );
    }
}

/// `n` int8 inputs as bytes, each −128, 127 or random (a pool's sums at their extremes).
fn extremes(r: &mut Rng, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| [-128, 127, r.i8()][r.range(0, 2)] as u8)
        .collect()
}

/// int8 GlobalAveragePool over planes of 1 to 600 values (the byte-sum path's 32-byte
/// steps and tails), extreme inputs and zero points.
#[test]
fn global_average_pool_matches_reference() {
    let seed = seed() ^ 0x6A;
    let mut r = Rng(seed);
    let neon = NeonCount::now();
    for case in 0..80 {
        let (c, h, w) = (r.range(1, 6), r.range(1, 12), r.range(1, 50));
        let (qx, qy) = (per_tensor(&mut r), per_tensor(&mut r));
        let bytes = pool_model(OpKind::GlobalAveragePool, &[], [c, h, w], [1, 1], qx, qy);
        let input = extremes(&mut r, c * h * w);
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {c}x{h}x{w}"
        );
    }
    neon.check(80, seed);
}

/// A random pooling window over a [c, h, w] input (w up to `w_max`, kernels up to 7×7,
/// strides 1–3, pads 0–3, dilation 1–2 when `dilated`, floor or ceil output sizes), or
/// `None` when the draw makes no valid op.
fn random_window(r: &mut Rng, w_max: usize, dilated: bool) -> Option<Window> {
    let (c, h, w) = (r.range(1, 3), r.range(1, 15), r.range(1, w_max));
    let (kh, kw) = (r.range(1, 7), r.range(1, 7));
    let (sh, sw) = (r.range(1, 3), r.range(1, 3));
    let (dh, dw) = if dilated {
        (r.range(1, 2), r.range(1, 2))
    } else {
        (1, 1)
    };
    let pads = [r.range(0, 3), r.range(0, 3), r.range(0, 3), r.range(0, 3)];
    let (eh, ew) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
    let (ph, pw) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
    if ph < eh || pw < ew || pads[0] >= eh || pads[1] >= ew {
        return None;
    }
    let ceil = r.next().is_multiple_of(2);
    let out = |p: usize, e: usize, s: usize| {
        if ceil {
            (p - e).div_ceil(s) + 1
        } else {
            (p - e) / s + 1
        }
    };
    let (oh, ow) = (out(ph, eh, sh), out(pw, ew, sw));
    if (oh - 1) * sh >= h + pads[0] || (ow - 1) * sw >= w + pads[1] {
        return None;
    }
    Some(Window {
        chw: [c, h, w],
        k: [kh, kw],
        s: [sh, sw],
        d: [dh, dw],
        pads,
        out: [oh, ow],
    })
}

/// A pooling op's geometry (`random_window`).
struct Window {
    chw: [usize; 3],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    pads: [usize; 4],
    out: [usize; 2],
}

impl core::fmt::Display for Window {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ([c, h, w], [kh, kw], [sh, sw], [dh, dw]) = (self.chw, self.k, self.s, self.d);
        write!(
            f,
            "{c}x{h}x{w} k{kh}x{kw} s{sh}x{sw} d{dh}x{dw} p{:?}",
            self.pads
        )
    }
}

/// int8 MaxPool with strides, padding, dilation and ceil-mode output sizes; windows up to
/// 7×7 (9 taps or more take the separable path).
#[test]
fn max_pool_matches_reference() {
    let seed = seed() ^ 0x3A;
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..300 {
        let Some(win) = random_window(&mut r, 70, true) else {
            continue;
        };
        let (Window { k, s, d, pads, .. }, [c, h, w]) = (&win, win.chw);
        let params = [
            k[0], k[1], s[0], s[1], pads[0], pads[1], pads[2], pads[3], d[0], d[1],
        ];
        let q = per_tensor(&mut r);
        let bytes = pool_model(OpKind::MaxPool, &params, win.chw, win.out, q.clone(), q);
        let input: Vec<u8> = (0..c * h * w).map(|_| r.i8() as u8).collect();
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {win}"
        );
        ran += 1;
    }
    assert!(ran > 100, "{ran}");
}

/// int8 AveragePool of 2×2 windows at a stride of 2 (a small classifier's pool): without
/// padding on the top and left it takes the plane-at-a-time path, whatever the bottom and
/// right padding, odd sizes and whether padding counts; extreme inputs and zero points.
#[test]
fn two_by_two_average_pool_matches_reference() {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    use cairn_kernels::paths::{taken, Path};
    let seed = seed() ^ 0x4C;
    let mut r = Rng(seed);
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let before = taken(Path::AvgPoolQuads);
    let mut quads = 0;
    for case in 0..120 {
        let (c, h, w) = (r.range(1, 4), r.range(2, 40), r.range(2, 70));
        let (pb, pr) = (r.range(0, 1), r.range(0, 1));
        let (oh, ow) = ((h + pb - 2) / 2 + 1, (w + pr - 2) / 2 + 1);
        if 2 * oh <= h && 2 * ow <= w {
            quads += 1;
        }
        let include_pad = r.range(0, 1);
        let params = [2, 2, 2, 2, 0, 0, pb, pr, include_pad];
        let (qx, qy) = (per_tensor(&mut r), per_tensor(&mut r));
        let bytes = pool_model(OpKind::AveragePool, &params, [c, h, w], [oh, ow], qx, qy);
        let input = extremes(&mut r, c * h * w);
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {c}x{h}x{w} pads bottom {pb} right {pr} include_pad {include_pad}"
        );
    }
    assert!(quads > 30, "CAIRN_SEED={seed}: {quads}");
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    assert!(
        taken(Path::AvgPoolQuads) - before >= quads,
        "CAIRN_SEED={seed}"
    );
}

/// int8 AveragePool with strides, padding (counted in the divisor or not), ceil-mode
/// output sizes and windows up to 7×7, extreme inputs and zero points; on hosts the
/// column-sum path must run.
#[test]
fn average_pool_matches_reference() {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    use cairn_kernels::paths::{taken, Path};
    let seed = seed() ^ 0x4B;
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..300 {
        let Some(win) = random_window(&mut r, 90, false) else {
            continue;
        };
        let (Window { k, s, pads, .. }, [c, h, w]) = (&win, win.chw);
        let include_pad = r.range(0, 1);
        let params = [
            k[0],
            k[1],
            s[0],
            s[1],
            pads[0],
            pads[1],
            pads[2],
            pads[3],
            include_pad,
        ];
        let (qx, qy) = (per_tensor(&mut r), per_tensor(&mut r));
        let bytes = pool_model(OpKind::AveragePool, &params, win.chw, win.out, qx, qy);
        let input = extremes(&mut r, c * h * w);
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        let before = taken(Path::AvgPoolRows);
        let what = format!("CAIRN_SEED={seed} case {case}: {win} include_pad {include_pad}");
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "{what}"
        );
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        assert!(taken(Path::AvgPoolRows) > before, "{what}: path not taken");
        ran += 1;
    }
    assert!(ran > 100, "{ran}");
}

/// Kernels wider than the im2col and interior paths take (audio front ends' 1×39 and 3×39
/// filters): the row-wise path (`fast_conv_rows.rs`).
#[test]
fn wide_kernel_conv_matches_reference() {
    let seed = seed();
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..120 {
        let group = [1, 1, 2][r.range(0, 2)];
        let cs = ConvCase {
            n: r.range(1, 2),
            c: group * r.range(1, 4),
            h: r.range(1, 6),
            w: r.range(20, 90),
            oc: group * r.range(1, 6),
            k: (r.range(1, 3), r.range(17, 41)),
            stride: (r.range(1, 2), r.range(1, 3)),
            pad: [r.range(0, 1), r.range(0, 20), r.range(0, 1), r.range(0, 20)],
            dil: (1, r.range(1, 2)),
            group,
        };
        ran += check(&mut r, cs, seed, case) as usize;
    }
    assert!(ran > 80, "only {ran} valid cases");
}

/// Rows longer than the row path's buffer (2048): it takes them in column tiles.
#[test]
fn very_wide_row_conv_matches_reference() {
    let seed = seed();
    let mut r = Rng(seed);
    for case in 0..6 {
        let cs = ConvCase {
            n: 1,
            c: r.range(1, 2),
            h: 1,
            w: r.range(2100, 4500),
            oc: r.range(1, 5),
            k: (1, r.range(50, 130)),
            stride: (1, r.range(1, 3)),
            pad: [0, r.range(0, 60), 0, r.range(0, 60)],
            dil: (1, r.range(1, 2)),
            group: 1,
        };
        assert!(check(&mut r, cs, seed, case));
    }
}

/// Strided filter banks (STFT-like front ends: 1×256 filters at stride 128) through the
/// wide im2col GEMM, and past its K bound (ic·kh·kw > 2048) through the fallback.
#[test]
fn strided_filter_bank_conv_matches_reference() {
    let seed = seed();
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..24 {
        let kw = r.range(50, 300);
        let cs = ConvCase {
            n: r.range(1, 3),
            c: r.range(1, 9),
            h: 1,
            w: r.range(kw, 3 * kw),
            oc: r.range(1, 40),
            k: (1, kw),
            stride: (1, r.range(2, 130)),
            pad: [0, r.range(0, 40), 0, r.range(0, 40)],
            dil: (1, 1),
            group: 1,
        };
        ran += check(&mut r, cs, seed, case) as usize;
    }
    assert!(ran > 16, "only {ran} valid cases");
}

/// Batches of small images (windows of a streaming model): im2col folds the batch into
/// the GEMM's columns and scatters the outputs back (up to 512 output channels; more
/// take the per-image tiles).
#[test]
fn batch_folded_conv_matches_reference() {
    let seed = seed();
    let mut r = Rng(seed);
    let (mut ran, mut batched) = (0, 0);
    for case in 0..40 {
        let cs = ConvCase {
            n: r.range(2, 40),
            c: r.range(1, 12),
            h: r.range(1, 4),
            w: r.range(1, 9),
            oc: [r.range(1, 70), r.range(500, 530)][r.range(0, 1)],
            k: (r.range(1, 3), r.range(1, 3)),
            stride: (r.range(1, 2), r.range(1, 2)),
            pad: [r.range(0, 1), r.range(0, 1), r.range(0, 1), r.range(0, 1)],
            dil: (1, 1),
            group: 1,
        };
        // Maps of 48 output pixels or more take the per-image tiles instead.
        let oh = (cs.h + cs.pad[0] + cs.pad[2])
            .checked_sub(cs.k.0)
            .map(|v| v / cs.stride.0 + 1);
        let ow = (cs.w + cs.pad[1] + cs.pad[3])
            .checked_sub(cs.k.1)
            .map(|v| v / cs.stride.1 + 1);
        let small = oh.zip(ow).is_some_and(|(oh, ow)| oh * ow < 48);
        let ok = check(&mut r, cs, seed, case);
        ran += ok as usize;
        batched += (ok && small) as usize;
    }
    assert!(
        ran > 25 && batched > 20,
        "only {ran} valid cases, {batched} on small maps"
    );
    // AVX2 hosts with std: each batch of maps under 48 output pixels ran as one FC over its
    // patches (or, with four outputs or fewer in all, as a GEMV).
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        use cairn_kernels::paths::{taken, Path};
        let (b, v) = (taken(Path::ConvBatch), taken(Path::Gemv));
        assert!(
            (b + v) as usize >= batched,
            "{b} batched + {v} GEMV runs for {batched} small-map cases (CAIRN_SEED={seed})"
        );
    }
}

/// A streaming model's 1-D convs with the windows folded into the batch (H = 1; 32
/// windows of 1–8 outputs; strides, padding and dilation; up to 160 channels, so patches
/// of several hundred taps): one FullyConnected over every window's patches on AVX2 hosts.
#[test]
fn batch_1d_conv_matches_reference() {
    let seed = seed() ^ 0x1D1D;
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..40 {
        let cs = ConvCase {
            n: r.range(2, 33),
            c: r.range(1, 160),
            h: 1,
            w: r.range(1, 9),
            oc: r.range(1, 160),
            k: (1, r.range(1, 5)),
            stride: (1, r.range(1, 3)),
            pad: [0, r.range(0, 2), 0, r.range(0, 2)],
            dil: (1, r.range(1, 2)),
            group: 1,
        };
        ran += check(&mut r, cs, seed, case) as usize;
    }
    assert!(ran > 25, "only {ran} valid cases");
}

/// A batch of convs whose window is each image's whole unpadded input (pointwise convs
/// on 1×1 maps, a 1×k or h×w head over its whole map, trailing pads no window reaches):
/// one FullyConnected over the images read in place on AVX2 hosts, and the test checks
/// that it ran; dilated or padded windows, and several output pixels, do not take it.
#[test]
fn whole_input_conv_batch_matches_reference() {
    #[cfg(target_arch = "x86_64")]
    use cairn_kernels::paths::{taken, Path};
    let seed = seed() ^ 0x3A0E;
    let mut r = Rng(seed);
    #[cfg(target_arch = "x86_64")]
    let before = taken(Path::ConvWholeInput);
    let (mut ran, mut whole) = (0, 0u64);
    for case in 0..80 {
        let (h, w) = match r.range(0, 2) {
            0 => (1, 1),
            1 => (1, r.range(1, 6)),
            _ => (r.range(1, 4), r.range(1, 4)),
        };
        // Mostly the whole map; now and then a window one short (two outputs) or with a
        // leading pad, which must go elsewhere.
        let short = r.range(0, 5) == 0 && w > 1;
        let lead = r.range(0, 5) == 0;
        let cs = ConvCase {
            // Five images or more (four outputs or fewer take the GEMV).
            n: r.range(5, 40),
            c: r.range(1, 90),
            h,
            w,
            oc: r.range(1, 70),
            k: (h, if short { w - 1 } else { w }),
            stride: (r.range(1, 2), r.range(1, 2)),
            pad: [0, lead as usize, r.range(0, 1), r.range(0, 1)],
            // Dilated: a 1×2 window two apart on two columns reads the pad.
            dil: (1, r.range(1, 2)),
            group: 1,
        };
        let dense = cs.dil.1 == 1 || cs.k.1 == 1;
        let Some(span) = (w + cs.pad[1] + cs.pad[3]).checked_sub((cs.k.1 - 1) * cs.dil.1 + 1)
        else {
            continue;
        };
        let out_w = span / cs.stride.1 + 1;
        let out_h = (cs.pad[2] / cs.stride.0) + 1;
        if check(&mut r, cs, seed, case) {
            ran += 1;
            whole += (dense && !short && !lead && out_w == 1 && out_h == 1) as u64;
        }
    }
    // Always one dilated window over the whole map and its pad (the random ones are rare).
    let dilated = ConvCase {
        n: 6,
        c: 5,
        h: 1,
        w: 2,
        oc: 7,
        k: (1, 2),
        stride: (1, 1),
        pad: [0, 0, 0, 1],
        dil: (1, 2),
        group: 1,
    };
    assert!(check(&mut r, dilated, seed, 80));
    assert!(
        ran > 50 && whole > 12,
        "{ran} cases, {whole} whole (CAIRN_SEED={seed})"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // One count per op; the packed-weight run of each case takes the GEMM paths.
        assert_eq!(
            taken(Path::ConvWholeInput) - before,
            whole,
            "CAIRN_SEED={seed}"
        );
    }
}

/// One-group convs of every stride (1–4), dilation, padding and kernel shape up to 7×7,
/// odd channel counts and batches: on AVX2 hosts they take the implicit GEMM over packed
/// phase planes (`fast/direct.rs`), and the test checks that it did.
#[test]
fn implicit_gemm_conv_matches_reference() {
    use cairn_kernels::paths::{taken, Path};
    let seed = seed() ^ 0xD1EC;
    let mut r = Rng(seed);
    let mut ran = 0;
    let before = taken(Path::Direct);
    for case in 0..90 {
        // Small kernels, and the wide ones of audio models (3×39, 1×256).
        let k = match r.range(0, 2) {
            0 => (r.range(1, 3), r.range(20, 60)),
            1 => (1, r.range(100, 256)),
            _ => (r.range(1, 7), r.range(1, 7)),
        };
        let cs = ConvCase {
            n: 1,
            c: r.range(1, 21),
            h: r.range(1, 30),
            w: r.range(1, 40) + k.1,
            oc: r.range(1, 20),
            k,
            stride: (r.range(1, 4), r.range(1, 4)),
            pad: [r.range(0, 3), r.range(0, 3), r.range(0, 3), r.range(0, 3)],
            dil: (r.range(1, 2), r.range(1, 2)),
            group: 1,
        };
        // Four outputs or fewer take the GEMV instead.
        let out = |p: usize, e: usize, s: usize| p.checked_sub(e).map(|v| v / s + 1);
        let eh = cs.dil.0 * (k.0 - 1) + 1;
        let ew = cs.dil.1 * (k.1 - 1) + 1;
        let oh = out(cs.h + cs.pad[0] + cs.pad[2], eh, cs.stride.0);
        let ow = out(cs.w + cs.pad[1] + cs.pad[3], ew, cs.stride.1);
        if oh.zip(ow).is_none_or(|(a, b)| a * b <= 4) {
            continue;
        }
        ran += check(&mut r, cs, seed, case) as usize;
    }
    assert!(ran > 30, "only {ran} valid cases (CAIRN_SEED={seed})");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // Each valid case runs the CPU backend twice (plain and packed weights); batch
        // folding takes a few of them elsewhere.
        let direct = taken(Path::Direct) - before;
        assert!(
            direct as usize >= ran,
            "implicit GEMM ran {direct} times for {ran} cases (CAIRN_SEED={seed})"
        );
    }
    // aarch64 with the dot product: the `sdot` implicit GEMM (`fast/direct_neon.rs`).
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        let direct = taken(Path::Direct) - before;
        assert!(
            direct as usize >= ran,
            "implicit GEMM ran {direct} times for {ran} cases (CAIRN_SEED={seed})"
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = before;
}

/// int8 Softmax over short and long rows (and along a middle axis) through tables.
#[test]
fn softmax_matches_reference() {
    use cairn_kernels::paths::{taken, Path};
    let seed = seed() ^ 0x50F7;
    let mut r = Rng(seed);
    let before = taken(Path::SoftmaxTable);
    #[cfg(target_arch = "x86_64")]
    let columns_before = taken(Path::SoftmaxColumns);

    #[cfg(target_arch = "x86_64")]
    let rows_before = taken(Path::SoftmaxRows);
    let long_before = taken(Path::SoftmaxLongRows);
    // Cases that take the eight-row groups (asserted on x86_64 only), and the long rows.
    let (mut rows_expected, mut long_expected) = (0u64, 0u64);
    for case in 0..60 {
        // Rows over 1024 on the last axis (a recognizer's 6625 classes) take `long_rows`.
        let n = match case {
            50..54 => r.range(1025, 7000),
            _ => [r.range(1, 70), r.range(200, 1100), r.range(1025, 7000)][r.range(0, 2)],
        };
        // Odd cases over an inner axis of 8 to 40 columns (a YOLOv8 head's softmax over 16
        // bins of 4 × 2100 columns): the AVX2 column blocks and a tail. From case 40 on,
        // many rows over the last axis (attention scores): groups of eight rows through
        // the column blocks, the rows left and rows over 1024 one at a time.
        let outer = if case >= 40 {
            r.range(8, 45)
        } else {
            r.range(1, 3)
        };
        let inner = if case % 2 == 1 && case < 40 {
            r.range(8, 40)
        } else if case >= 40 {
            1
        } else {
            r.range(1, 3)
        };
        rows_expected += (case >= 40 && n <= 1024) as u64;
        long_expected += (inner == 1 && n > 1024) as u64;
        let dims = [outer, n, inner];
        let mut m = ModelBuilder::default();
        let x = m.add_tensor(TensorSpec {
            dtype: DType::I8,
            shape: Shape::new(&dims).unwrap(),
            quant: per_tensor(&mut r),
            data: None,
            layout: Default::default(),
        });
        let y = m.add_tensor(TensorSpec {
            dtype: DType::I8,
            shape: Shape::new(&dims).unwrap(),
            // The usual output quantization, and others: a tiny scale (every quotient
            // clamps to 127 but exact zeros), a coarse one (ties to even decide).
            quant: {
                let (scale, zero_point) = [
                    (1.0 / 256.0, -128),
                    (1.0 / 128.0, 0),
                    (1e-6, 5),
                    (0.05, -100),
                ][r.range(0, 3)];
                QuantSpec::PerTensor { scale, zero_point }
            },
            data: None,
            layout: Default::default(),
        });
        m.ops.push(OpSpec {
            kind: OpKind::Softmax,
            inputs: vec![Some(x)],
            outputs: vec![y],
            params: vec![outer as i32, n as i32, inner as i32, 0],
        });
        m.inputs = vec![x];
        m.outputs = vec![y];
        let bytes = m.finish().expect("valid softmax model");
        // A narrow band of values in some rows (a repeated maximum), full range in others.
        let band = r.range(1, 255) as u64;
        let input: Vec<u8> = (0..outer * n * inner)
            .map(|_| (r.next() % band) as u8)
            .collect();
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {dims:?}"
        );
    }
    // Every case takes the table path, on every host; on AVX2 hosts the inner-axis cases
    // take the column blocks too, and the many-row cases the eight-row groups.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = rows_expected;
    assert_eq!(taken(Path::SoftmaxTable) - before, 60, "CAIRN_SEED={seed}");
    let long = taken(Path::SoftmaxLongRows) - long_before;
    assert!(
        long == long_expected && long >= 5,
        "CAIRN_SEED={seed}: long rows {long} of {long_expected}"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        let rows = taken(Path::SoftmaxRows) - rows_before;
        assert_eq!(rows, rows_expected, "CAIRN_SEED={seed}");
        assert!(
            taken(Path::SoftmaxColumns) - columns_before >= 20,
            "CAIRN_SEED={seed}: the column blocks ran {} times",
            taken(Path::SoftmaxColumns) - columns_before
        );
    }
}

/// A `HostModel` packs conv weights once and reuses them on later runs (`prepack`): two
/// convs sharing one weight tensor with different input zero points and biases, run
/// three times on new inputs, equal the reference every time.
#[test]
fn host_model_weight_cache_matches_reference() {
    use cairn_core::emit::AlignedBytes;
    use cairn_kernels::host::HostModel;
    let seed = seed() ^ 0xCAC4E;
    let mut r = Rng(seed);
    for case in 0..12 {
        let c = r.range(1, 24);
        let cs = ConvCase {
            n: 1,
            c,
            h: r.range(3, 20),
            w: r.range(3, 40),
            oc: c,
            k: (3, 3),
            stride: (1, 1),
            pad: [1, 1, 1, 1],
            dil: (1, 1),
            group: 1,
        };
        let mut b = conv_model(&mut r, &cs, ConvOpts::default()).expect("a same-size conv");
        let (y, w, rq) = {
            let op = &b.ops[0];
            (op.outputs[0], op.inputs[1].unwrap(), op.inputs[3].unwrap())
        };
        let bias: Vec<u8> = (0..c)
            .flat_map(|_| ((r.next() % 2001) as i32 - 1000).to_le_bytes())
            .collect();
        let bias = b.add_tensor(TensorSpec {
            dtype: DType::I32,
            shape: Shape::new(&[c]).unwrap(),
            quant: QuantSpec::None,
            data: Some(bias),
            layout: Default::default(),
        });
        let y2 = b.add_tensor(TensorSpec {
            dtype: DType::I8,
            shape: b.tensors[y as usize].shape,
            quant: per_tensor(&mut r),
            data: None,
            layout: Default::default(),
        });
        let mut params = b.ops[0].params.clone();
        params[conv::ACT_LO] = -128;
        params[conv::ACT_HI] = 127;
        b.ops.push(OpSpec {
            kind: OpKind::Conv,
            inputs: vec![Some(y), Some(w), Some(bias), Some(rq)],
            outputs: vec![y2],
            params,
        });
        // HostModel feeds f32: quantize into the conv's int8 input first.
        let xq = b.inputs[0];
        let xf = b.add_tensor(TensorSpec {
            dtype: DType::F32,
            shape: b.tensors[xq as usize].shape,
            quant: QuantSpec::None,
            data: None,
            layout: Default::default(),
        });
        b.ops.insert(
            0,
            OpSpec {
                kind: OpKind::Quantize,
                inputs: vec![Some(xf)],
                outputs: vec![xq],
                params: vec![],
            },
        );
        b.inputs = vec![xf];
        b.outputs = vec![y, y2];
        let bytes = AlignedBytes::from_slice(&b.finish().expect("valid shared-weight model"));
        let mut fast = HostModel::new(bytes.as_slice()).unwrap();
        let mut reference = HostModel::new(bytes.as_slice()).unwrap();
        reference.set_reference(true);
        for run in 0..3 {
            let x: Vec<f32> = (0..c * cs.h * cs.w).map(|_| r.f(-4.0, 4.0)).collect();
            assert_eq!(
                fast.run(&[&x]).unwrap(),
                reference.run(&[&x]).unwrap(),
                "CAIRN_SEED={seed} case {case} run {run}: c{c} {}x{}",
                cs.h,
                cs.w
            );
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            assert!(
                fast.packed_bytes() > 0,
                "CAIRN_SEED={seed}: nothing was cached"
            );
        }
    }
}

/// Convs with at most four output pixels in all (a 1×1 map after global pooling, a
/// filter bank over a few frames) run as matrix × vector (`fast/gemv.rs`) on AVX2 hosts.
#[test]
fn gemv_conv_matches_reference() {
    use cairn_kernels::paths::{taken, Path};
    let seed = seed() ^ 0x6E3F;
    let mut r = Rng(seed);
    let before = taken(Path::Gemv);
    #[cfg(target_arch = "x86_64")]
    let vnni_before = taken(Path::GemvVnni);
    let (mut ran, mut expect) = (0, 0u64);
    for case in 0..300 {
        let k = (
            r.range(1, 3),
            [r.range(1, 5), r.range(50, 300)][r.range(0, 1)],
        );
        let stride = (r.range(1, 2), r.range(1, 130));
        let pad = [r.range(0, 1), r.range(0, 2), r.range(0, 1), r.range(0, 2)];
        let (h, w) = (
            r.range(k.0.max(1), k.0 + 2),
            r.range(k.1, k.1 + 2 * stride.1),
        );
        let (ph, pw) = (h + pad[0] + pad[2], w + pad[1] + pad[3]);
        let (oh, ow) = ((ph - k.0) / stride.0 + 1, (pw - k.1) / stride.1 + 1);
        let n = r.range(1, 2);
        if n * oh * ow > 4 {
            continue;
        }
        let cs = ConvCase {
            n,
            c: r.range(1, 20),
            h,
            w,
            oc: r.range(1, 40),
            k,
            stride,
            pad,
            dil: (1, 1),
            group: 1,
        };
        let short = cs.c * cs.k.0 * cs.k.1 <= 8192;
        if check(&mut r, cs, seed, case) {
            ran += 1;
            expect += short as u64;
        }
    }
    assert!(ran > 30, "only {ran} valid cases (CAIRN_SEED={seed})");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // Patches up to 8192 elements; the packed-weight run of each case takes the
        // GEMM paths.
        assert_eq!(taken(Path::Gemv) - before, expect, "CAIRN_SEED={seed}");
        // With VNNI the rows run on `vpdpbusd` (one count per patch).
        if cairn_kernels::paths::vnni().is_some() {
            assert!(
                taken(Path::GemvVnni) - vnni_before >= expect,
                "CAIRN_SEED={seed}"
            );
        }
    }
    // aarch64: the same convs take the NEON GEMV (`fast/neon_dot.rs`).
    #[cfg(target_arch = "aarch64")]
    assert_eq!(taken(Path::Gemv) - before, expect, "CAIRN_SEED={seed}");
}

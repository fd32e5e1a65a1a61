//! `FrozenFc` reads exactly the backbone layer a `.cairn` model holds (shape, weights, bias,
//! multipliers, input parameters, fused ReLU), computes the model's own integer sums, and
//! refuses every op that is not a constant int8 FullyConnected. Random layers are seeded
//! (`CAIRN_SEED`, printed on failure).

use cairn_core::emit::{AlignedBytes, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::model::Model;
use cairn_core::{DType, OpKind, Shape};
use cairn_learn::{FrozenFc, LearnError};

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f20c)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn i8(&mut self) -> i8 {
        self.next() as i8
    }
    fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next() % 10_000) as f32 / 10_000.0
    }
}

fn spec(dtype: DType, dims: &[usize], quant: QuantSpec, data: Option<Vec<u8>>) -> TensorSpec {
    TensorSpec {
        dtype,
        shape: Shape::new(dims).unwrap(),
        quant,
        data,
        layout: Default::default(),
    }
}

/// One int8 FullyConnected layer's numbers.
struct Layer {
    n: usize,
    k: usize,
    w: Vec<i8>,
    bias: Option<Vec<i32>>,
    mult: Vec<f32>,
    sx: f32,
    zx: i32,
    sy: f32,
    zy: i32,
    lo: i32,
}

fn random_layer(r: &mut Rng, n: usize, k: usize, bias: bool) -> Layer {
    Layer {
        n,
        k,
        w: (0..n * k).map(|_| r.i8()).collect(),
        bias: bias.then(|| {
            (0..n)
                .map(|_| (r.next() % 20_001) as i32 - 10_000)
                .collect()
        }),
        mult: (0..n).map(|_| r.f(0.001, 0.05)).collect(),
        sx: r.f(0.01, 0.1),
        zx: (r.next() % 200) as i32 - 100,
        sy: r.f(0.02, 0.2),
        zy: (r.next() % 100) as i32 - 50,
        lo: -128,
    }
}

/// Which operand the model keeps in the arena instead of as a constant.
#[derive(Clone, Copy, PartialEq)]
enum InArena {
    Nothing,
    Weights,
    Bias,
}

/// A model whose op 0 is `l` as a FullyConnected (x [1, k] → y [1, n]).
fn fc_model(l: &Layer, arena: InArena) -> Vec<u8> {
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(
        DType::I8,
        &[1, l.k],
        QuantSpec::PerTensor {
            scale: l.sx,
            zero_point: l.zx,
        },
        None,
    ));
    let konst = |on: bool, bytes: Vec<u8>| (!on).then_some(bytes);
    let w = b.add_tensor(spec(
        DType::I8,
        &[l.n, l.k],
        // A tensor in the arena takes one scale (the loader's rule).
        match arena {
            InArena::Weights => QuantSpec::PerTensor {
                scale: 0.01,
                zero_point: 0,
            },
            _ => QuantSpec::PerAxis {
                axis: 0,
                scales: vec![0.01; l.n],
                zero_points: vec![0; l.n],
            },
        },
        konst(
            arena == InArena::Weights,
            l.w.iter().map(|&v| v as u8).collect(),
        ),
    ));
    let bias = l.bias.as_ref().map(|bias| {
        b.add_tensor(spec(
            DType::I32,
            &[l.n],
            QuantSpec::None,
            konst(
                arena == InArena::Bias,
                bias.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        ))
    });
    let mult = b.add_tensor(spec(
        DType::F32,
        &[l.n],
        QuantSpec::None,
        Some(l.mult.iter().flat_map(|v| v.to_le_bytes()).collect()),
    ));
    let y = b.add_tensor(spec(
        DType::I8,
        &[1, l.n],
        QuantSpec::PerTensor {
            scale: l.sy,
            zero_point: l.zy,
        },
        None,
    ));
    b.ops.push(OpSpec {
        kind: OpKind::FullyConnected,
        inputs: vec![Some(x), Some(w), bias, Some(mult)],
        outputs: vec![y],
        params: vec![l.lo, 127],
    });
    // An operand in the arena comes in as a second model input.
    b.inputs = match arena {
        InArena::Nothing => vec![x],
        InArena::Weights => vec![x, w],
        InArena::Bias => vec![x, bias.expect("a layer with a bias")],
    };
    b.outputs = vec![y];
    b.finish().expect("a valid FullyConnected model")
}

/// The layer's real-valued pre-activations for `x`, computed here from its numbers: `x`
/// quantized (round half to even, clamped), integer sums from the bias, then scaled.
fn reference(l: &Layer, x: &[f32]) -> Vec<f32> {
    let q: Vec<i32> = x
        .iter()
        .map(|&v| ((v / l.sx).round_ties_even() as i32 + l.zx).clamp(-128, 127))
        .collect();
    (0..l.n)
        .map(|j| {
            let mut acc = l.bias.as_ref().map_or(0, |b| b[j]);
            for (&qi, &wi) in q.iter().zip(&l.w[j * l.k..(j + 1) * l.k]) {
                acc += (qi - l.zx) * wi as i32;
            }
            acc as f32 * (l.mult[j] * l.sy)
        })
        .collect()
}

#[test]
fn the_layer_read_from_the_model_is_the_one_written() {
    let seed = seed();
    let mut r = Rng(seed | 1);
    for case in 0..12 {
        let (n, k) = (1 + (r.next() % 9) as usize, 1 + (r.next() % 17) as usize);
        let mut l = random_layer(&mut r, n, k, case % 3 != 0);
        // The fused ReLU: a lower clamp at the output zero point or above; one below it
        // is not a ReLU.
        let relu = match case % 4 {
            0 => {
                l.lo = l.zy;
                true
            }
            1 => {
                l.lo = l.zy + 1;
                true
            }
            2 => {
                l.lo = l.zy - 1;
                false
            }
            _ => false,
        };
        let bytes = fc_model(&l, InArena::Nothing);
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let fc = FrozenFc::from_model(&m, 0).unwrap();
        let at = format!("CAIRN_SEED={seed} case {case}");
        assert_eq!((fc.n, fc.k), (n, k), "{at}");
        assert_eq!(fc.w, &l.w[..], "{at}");
        assert_eq!((fc.x_scale, fc.x_zp, fc.relu), (l.sx, l.zx, relu), "{at}");
        for j in 0..n {
            let acc_scale = l.mult[j] * l.sy;
            assert_eq!(fc.acc_scale(j), acc_scale, "{at}");
            let b = l.bias.as_ref().map_or(0.0, |b| b[j] as f32 * acc_scale);
            assert_eq!(fc.bias(j), b, "{at}");
            for i in 0..k {
                let w = l.w[j * k + i] as f32 * acc_scale / l.sx;
                assert_eq!(fc.weight(j, i), w, "{at}");
            }
        }
        // Inputs that round both ways, land on halves and clamp at both ends.
        let x: Vec<f32> = (0..k)
            .map(|i| match i % 4 {
                0 => r.f(-2.0, 2.0) * l.sx * 40.0,
                1 => (0.5 + (r.next() % 7) as f32) * l.sx,
                2 => 500.0 * l.sx,
                _ => -500.0 * l.sx,
            })
            .collect();
        let (mut q, mut z) = (vec![0i8; k], vec![f32::NAN; n]);
        fc.forward(&x, &mut q, &mut z);
        assert_eq!(z, reference(&l, &x), "{at}: forward");
        let qx: Vec<i8> = x
            .iter()
            .map(|&v| ((v / l.sx).round_ties_even() as i32 + l.zx).clamp(-128, 127) as i8)
            .collect();
        assert_eq!(q, qx, "{at}: the quantized input");
    }
}

#[test]
fn only_a_constant_int8_fully_connected_is_a_backbone_layer() {
    let mut r = Rng(seed() | 1);
    let l = random_layer(&mut r, 3, 4, true);
    // (Multipliers in the arena make no valid model: the loader refuses them.)
    for (arena, what) in [
        (InArena::Weights, "weights in the arena"),
        (InArena::Bias, "bias in the arena"),
    ] {
        let bytes = fc_model(&l, arena);
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        assert_eq!(
            FrozenFc::from_model(&m, 0).err(),
            Some(LearnError::NotAnInt8Fc),
            "{what}"
        );
    }
    // No op at that index.
    let bytes = fc_model(&l, InArena::Nothing);
    let ab = AlignedBytes::from_slice(&bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    assert!(FrozenFc::from_model(&m, 0).is_ok());
    assert_eq!(
        FrozenFc::from_model(&m, 1).err(),
        Some(LearnError::NotAnInt8Fc)
    );
    // An op of another kind.
    let mut b = ModelBuilder::default();
    let q = QuantSpec::PerTensor {
        scale: 0.1,
        zero_point: 0,
    };
    let x = b.add_tensor(spec(DType::I8, &[1, 4], q.clone(), None));
    let y = b.add_tensor(spec(DType::I8, &[1, 4], q, None));
    b.ops.push(OpSpec {
        kind: OpKind::Reshape,
        inputs: vec![Some(x)],
        outputs: vec![y],
        params: vec![],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    let bytes = b.finish().unwrap();
    let ab = AlignedBytes::from_slice(&bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    assert_eq!(
        FrozenFc::from_model(&m, 0).err(),
        Some(LearnError::NotAnInt8Fc)
    );
}

#[test]
fn a_layer_from_parts_checks_every_part() {
    let w = [1i8; 6];
    let bias: Vec<u8> = [5i32, -5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mult: Vec<u8> = [0.5f32, 0.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let ok = |w: &[i8], b: Option<&[u8]>, m: &[u8], sy: f32, sx: f32, zx: i32| {
        FrozenFc::from_parts(2, 3, w, b, m, sy, sx, zx, false).is_ok()
    };
    assert!(ok(&w, Some(&bias), &mult, 0.1, 0.2, 0));
    assert!(ok(&w, None, &mult, 0.1, 0.2, 0));
    assert!(ok(&w, None, &mult, 0.1, 0.2, -128));
    assert!(ok(&w, None, &mult, 0.1, 0.2, 127));
    // Lengths.
    assert!(!ok(&w[..5], None, &mult, 0.1, 0.2, 0));
    assert!(!ok(&w, None, &mult[..4], 0.1, 0.2, 0));
    assert!(!ok(&w, Some(&bias[..4]), &mult, 0.1, 0.2, 0));
    // Scales: finite and positive.
    for bad in [0.0, -0.1, f32::NAN, f32::INFINITY] {
        assert!(!ok(&w, None, &mult, bad, 0.2, 0), "out scale {bad}");
        assert!(!ok(&w, None, &mult, 0.1, bad, 0), "input scale {bad}");
    }
    // The input zero point of an int8 tensor.
    assert!(!ok(&w, None, &mult, 0.1, 0.2, 128));
    assert!(!ok(&w, None, &mult, 0.1, 0.2, -129));
    // And the layer computes with what it was given.
    let fc = FrozenFc::from_parts(2, 3, &w, Some(&bias), &mult, 0.1, 0.2, 0, true).unwrap();
    assert!(fc.relu);
    assert_eq!(fc.acc_scale(1), 0.25 * 0.1);
    assert_eq!(fc.bias(0), 5.0 * 0.5 * 0.1);
    let (mut q, mut z) = ([0i8; 3], [0f32; 2]);
    fc.forward(&[0.2, 0.4, -0.2], &mut q, &mut z);
    assert_eq!(q, [1, 2, -1]);
    assert_eq!(z, [(5 + 2) as f32 * 0.05, (-5 + 2) as f32 * 0.025]);
}

/// `patch_fc` writes a folded layer over the model's constants and nothing else: the model
/// still loads (its CRC fixed), reads back as the new layer, and every other byte but the
/// CRC is unchanged. Wrong sizes, a bias for a layer without one, and other ops are
/// refused with the model untouched.
#[test]
fn a_folded_layer_is_patched_over_the_model_in_place() {
    use cairn_learn::lineage::patch_fc;
    let seed = seed();
    let mut r = Rng(seed | 1);
    let (n, k) = (4, 6);
    let old = random_layer(&mut r, n, k, true);
    let bytes = fc_model(&old, InArena::Nothing);
    let mut ab = AlignedBytes::from_slice(&bytes);
    let new = random_layer(&mut r, n, k, true);
    let bias = new.bias.clone().unwrap();
    patch_fc(ab.as_mut_slice(), 0, &new.w, &bias, &new.mult).unwrap();
    let m = Model::parse(ab.as_slice()).expect("the patched model loads");
    let fc = FrozenFc::from_model(&m, 0).unwrap();
    assert_eq!(fc.w, &new.w[..], "CAIRN_SEED={seed}");
    // The old layer's input and output parameters with the new constants.
    let mixed = Layer {
        n,
        k,
        w: new.w.clone(),
        bias: Some(bias.clone()),
        mult: new.mult.clone(),
        sx: old.sx,
        zx: old.zx,
        sy: old.sy,
        zy: old.zy,
        lo: old.lo,
    };
    let x: Vec<f32> = (0..k).map(|_| r.f(-3.0, 3.0)).collect();
    let (mut q, mut z) = (vec![0i8; k], vec![0f32; n]);
    fc.forward(&x, &mut q, &mut z);
    assert_eq!(z, reference(&mixed, &x), "CAIRN_SEED={seed}");
    // Only the constants and the CRC changed.
    let crc = cairn_core::format::hdr::CRC;
    let changed: Vec<usize> = (0..bytes.len())
        .filter(|&i| bytes[i] != ab.as_slice()[i] && !(crc..crc + 4).contains(&i))
        .collect();
    let constants = n * k + 4 * n + 4 * n;
    assert!(
        !changed.is_empty() && changed.len() <= constants,
        "{} bytes changed",
        changed.len()
    );
    // Refusals leave the model as it was.
    let before = ab.as_slice().to_vec();
    let mult = &new.mult;
    assert_eq!(
        patch_fc(ab.as_mut_slice(), 0, &new.w[1..], &bias, mult),
        Err(LearnError::ShapeMismatch)
    );
    assert_eq!(
        patch_fc(ab.as_mut_slice(), 0, &new.w, &bias[1..], mult),
        Err(LearnError::ShapeMismatch)
    );
    assert_eq!(
        patch_fc(ab.as_mut_slice(), 0, &new.w, &bias, &mult[1..]),
        Err(LearnError::ShapeMismatch)
    );
    assert_eq!(
        patch_fc(ab.as_mut_slice(), 1, &new.w, &bias, mult),
        Err(LearnError::NotAnInt8Fc)
    );
    assert_eq!(ab.as_slice(), &before[..]);
    // A layer without a bias takes an all-zero one only.
    let plain = random_layer(&mut r, n, k, false);
    let mut ab = AlignedBytes::from_slice(&fc_model(&plain, InArena::Nothing));
    let before = ab.as_slice().to_vec();
    assert_eq!(
        patch_fc(ab.as_mut_slice(), 0, &new.w, &bias, mult),
        Err(LearnError::ShapeMismatch)
    );
    assert_eq!(ab.as_slice(), &before[..], "a refused patch writes nothing");
    patch_fc(ab.as_mut_slice(), 0, &new.w, &[0; 4], mult).unwrap();
    let m = Model::parse(ab.as_slice()).unwrap();
    assert_eq!(FrozenFc::from_model(&m, 0).unwrap().w, &new.w[..]);
}

//! What the exactness tests share: a seeded generator (`CAIRN_SEED`) and running a model
//! on a backend.

use cairn_core::emit::{AlignedBytes, ModelBuilder, QuantSpec, TensorSpec};
use cairn_core::{Backend, DType, Interpreter, Model, Shape};

// Here rather than in the tests crate so it also runs on aarch64 (under qemu-aarch64), where
// the CPU backend takes its portable paths.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    pub fn i8(&mut self) -> i8 {
        self.next() as i8
    }
    pub fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (self.next() >> 40) as f32 / (1u64 << 24) as f32 * (hi - lo)
    }
}

/// The top of one model's requantization multipliers: 2 in a quarter of the models (the
/// fast paths' saturating output stage refuses multipliers over 0.5, so the float-clamped
/// stage must be exact too), else 0.02.
#[allow(dead_code)] // not every test file builds requantized models
pub fn multiplier_top(r: &mut Rng) -> f32 {
    if r.next().is_multiple_of(4) {
        2.0
    } else {
        0.02
    }
}

pub fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C0DE)
}

#[allow(dead_code)] // not every test file runs one-input models
pub fn run<B: Backend>(bytes: &[u8], backend: B, input: &[u8]) -> Vec<u8> {
    let ab = AlignedBytes::from_slice(bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it = Interpreter::new(m, backend, &mut arena).unwrap();
    it.input_bytes_mut(0).unwrap().copy_from_slice(input);
    it.invoke().unwrap();
    // Every output, concatenated.
    (0..m.n_outputs())
        .flat_map(|k| it.output(k).unwrap().data.to_vec())
        .collect()
}

/// `run` on the CPU backend with a weight-pack cache active, as in a `HostModel` run: two
/// runs of one parsed model, the second on the packs the first made; they must agree.
#[allow(dead_code)] // not every test file runs cached
pub fn run_cached(bytes: &[u8], input: &[u8]) -> Vec<u8> {
    let ab = AlignedBytes::from_slice(bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut cache = cairn_kernels::prepack::PackCache::for_model(ab.as_slice());
    let mut once = || {
        cairn_kernels::prepack::with_cache(&mut cache, || {
            let mut it = Interpreter::new(m, cairn_kernels::CpuBackend, &mut arena).unwrap();
            it.input_bytes_mut(0).unwrap().copy_from_slice(input);
            it.invoke().unwrap();
            (0..m.n_outputs())
                .flat_map(|k| it.output(k).unwrap().data.to_vec())
                .collect::<Vec<u8>>()
        })
    };
    let first = once();
    assert_eq!(
        once(),
        first,
        "a run on cached packs differs from the run that made them"
    );
    first
}

/// A tensor of a test model: constant when `data` is given.
#[allow(dead_code)] // not every test file builds tensors this way
pub fn tensor(dt: DType, dims: &[usize], quant: QuantSpec, data: Option<Vec<u8>>) -> TensorSpec {
    TensorSpec {
        dtype: dt,
        shape: Shape::new(dims).unwrap(),
        quant,
        data,
        layout: Default::default(),
    }
}

/// One convolution's geometry: batch, channels, plane, output channels, kernel, stride,
/// pads (top, left, bottom, right), dilation and groups.
#[allow(dead_code)] // not every test file builds convolutions
#[derive(Debug)]
pub struct ConvCase {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oc: usize,
    pub k: (usize, usize),
    pub stride: (usize, usize),
    pub pad: [usize; 4],
    pub dil: (usize, usize),
    pub group: usize,
}

/// A conv op's params for `cs` with `group` groups; activation bounds left at 0 for the
/// caller to set.
#[allow(dead_code)]
pub fn conv_params(cs: &ConvCase, group: usize) -> Vec<i32> {
    use cairn_core::op::conv;
    let mut p = vec![0i32; conv::LEN];
    p[conv::SH] = cs.stride.0 as i32;
    p[conv::SW] = cs.stride.1 as i32;
    p[conv::PT] = cs.pad[0] as i32;
    p[conv::PL] = cs.pad[1] as i32;
    p[conv::PB] = cs.pad[2] as i32;
    p[conv::PR] = cs.pad[3] as i32;
    p[conv::DH] = cs.dil.0 as i32;
    p[conv::DW] = cs.dil.1 as i32;
    p[conv::GROUP] = group as i32;
    p
}

/// What a random int8 conv of [`conv_model`] holds beyond its geometry.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvOpts {
    /// Weights in [−63, 63] (the u8×s8 kernels' range), else [−127, 127].
    pub seven: bool,
    /// A folded PRelu: a second row of multipliers for negative accumulators (the first
    /// times a slope in [−0.5, 1], some exactly 1 or 0).
    pub prelu: bool,
}

/// A random int8 conv of geometry `cs` (zero points, per-channel weights and scales, a
/// bias three times in four, a clamp one time in three), or `None` if the geometry has no
/// output. With `ConvOpts::default()` it draws the same values from `r` as it always has.
#[allow(dead_code)]
pub fn conv_model(r: &mut Rng, cs: &ConvCase, o: ConvOpts) -> Option<ModelBuilder> {
    use cairn_core::emit::OpSpec;
    use cairn_core::op::conv;
    let eh = cs.dil.0 * (cs.k.0 - 1) + 1;
    let ew = cs.dil.1 * (cs.k.1 - 1) + 1;
    let (ph, pw) = (cs.h + cs.pad[0] + cs.pad[2], cs.w + cs.pad[1] + cs.pad[3]);
    if ph < eh || pw < ew {
        return None;
    }
    let oh = (ph - eh) / cs.stride.0 + 1;
    let ow = (pw - ew) / cs.stride.1 + 1;
    let zx = r.range(0, 255) as i32 - 128;
    let zy = r.range(0, 255) as i32 - 128;
    let cg = cs.c / cs.group;
    let wn = cs.oc * cg * cs.k.0 * cs.k.1;
    let wq: Vec<u8> = (0..wn)
        .map(|_| {
            let v = r.i8().max(-127);
            (if o.seven { v / 2 } else { v }) as u8
        })
        .collect();
    let scales: Vec<f32> = (0..cs.oc).map(|_| r.f(0.001, 0.05)).collect();
    let bias: Vec<u8> = (0..cs.oc)
        .flat_map(|_| ((r.next() % 20001) as i32 - 10000).to_le_bytes())
        .collect();
    let top = multiplier_top(r);
    let mut rq: Vec<f32> = (0..cs.oc).map(|_| r.f(0.0005, top)).collect();
    if o.prelu {
        for c in 0..cs.oc {
            let slope = match r.next() % 6 {
                0 => 1.0,
                1 => 0.0,
                _ => r.f(-0.5, 1.0),
            };
            rq.push(rq[c] * slope);
        }
    }
    let xs = r.f(0.01, 0.1);
    let (lo, hi) = if r.next().is_multiple_of(3) {
        (zy.max(-128), (zy + r.range(0, 127) as i32).min(127))
    } else {
        (-128, 127)
    };
    let mut b = ModelBuilder::default();
    let pt = |scale: f32, zero_point: i32| QuantSpec::PerTensor { scale, zero_point };
    let x = b.add_tensor(tensor(
        DType::I8,
        &[cs.n, cs.c, cs.h, cs.w],
        pt(xs, zx),
        None,
    ));
    let w = b.add_tensor(tensor(
        DType::I8,
        &[cs.oc, cg, cs.k.0, cs.k.1],
        QuantSpec::PerAxis {
            axis: 0,
            scales,
            zero_points: vec![0; cs.oc],
        },
        Some(wq),
    ));
    let bb = b.add_tensor(tensor(DType::I32, &[cs.oc], QuantSpec::None, Some(bias)));
    let rq_dims: &[usize] = if o.prelu { &[2, cs.oc] } else { &[cs.oc] };
    let rq_bytes = rq.iter().flat_map(|v| v.to_le_bytes()).collect();
    let rqt = b.add_tensor(tensor(DType::F32, rq_dims, QuantSpec::None, Some(rq_bytes)));
    let y = b.add_tensor(tensor(
        DType::I8,
        &[cs.n, cs.oc, oh, ow],
        pt(0.05, zy),
        None,
    ));
    let mut params = conv_params(cs, cs.group);
    params[conv::ACT_LO] = lo;
    params[conv::ACT_HI] = hi;
    let bias_in = (!r.next().is_multiple_of(4)).then_some(bb);
    b.ops.push(OpSpec {
        kind: cairn_core::OpKind::Conv,
        inputs: vec![Some(x), Some(w), bias_in, Some(rqt)],
        outputs: vec![y],
        params,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    Some(b)
}

/// Random per-tensor int8 params (scale 0.01–0.1, any zero point).
#[allow(dead_code)] // not every test file builds quantized tensors
pub fn per_tensor(r: &mut Rng) -> QuantSpec {
    QuantSpec::PerTensor {
        scale: r.f(0.01, 0.1),
        zero_point: r.range(0, 255) as i32 - 128,
    }
}

/// The constant side of a weighted int8 op (Conv, FullyConnected): per-channel weights
/// (`dims[0]` channels, the given bytes), a bias three times in four, requant scales, the
/// output's params and a clamp (a ReLU-like one a third of the time).
#[allow(dead_code)]
pub struct Weighted {
    pub w: u16,
    pub bias: Option<u16>,
    pub rq: u16,
    pub yq: QuantSpec,
    pub lo: i32,
    pub hi: i32,
}

#[allow(dead_code)]
pub fn weighted(b: &mut ModelBuilder, r: &mut Rng, dims: &[usize], wq: Vec<u8>) -> Weighted {
    let oc = dims[0];
    let w = b.add_tensor(tensor(
        DType::I8,
        dims,
        QuantSpec::PerAxis {
            axis: 0,
            scales: (0..oc).map(|_| r.f(0.001, 0.05)).collect(),
            zero_points: vec![0; oc],
        },
        Some(wq),
    ));
    let bias: Vec<u8> = (0..oc)
        .flat_map(|_| ((r.next() % 20001) as i32 - 10000).to_le_bytes())
        .collect();
    let bias = (!r.next().is_multiple_of(4))
        .then(|| b.add_tensor(tensor(DType::I32, &[oc], QuantSpec::None, Some(bias))));
    let top = multiplier_top(r);
    let rq: Vec<u8> = (0..oc)
        .flat_map(|_| r.f(0.0005, top).to_le_bytes())
        .collect();
    let rq = b.add_tensor(tensor(DType::F32, &[oc], QuantSpec::None, Some(rq)));
    let yq = per_tensor(r);
    let zy = match yq {
        QuantSpec::PerTensor { zero_point, .. } => zero_point,
        _ => 0,
    };
    let (lo, hi) = if r.next().is_multiple_of(3) {
        (zy, (zy + r.range(0, 127) as i32).min(127))
    } else {
        (-128, 127)
    };
    Weighted {
        w,
        bias,
        rq,
        yq,
        lo,
        hi,
    }
}

/// An int8 FullyConnected model: x [rows.., k] · Wᵀ with the weights `wq` (W [n, k],
/// per-channel) and the rest of `weighted`.
#[allow(dead_code)]
pub fn fc_model(r: &mut Rng, rows: &[usize], k: usize, n: usize, wq: Vec<u8>) -> Vec<u8> {
    use cairn_core::emit::OpSpec;
    use cairn_core::OpKind;
    let mut b = ModelBuilder::default();
    let dims = |last: usize| rows.iter().copied().chain([last]).collect::<Vec<_>>();
    let x = b.add_tensor(tensor(DType::I8, &dims(k), per_tensor(r), None));
    let wt = weighted(&mut b, r, &[n, k], wq);
    let y = b.add_tensor(tensor(DType::I8, &dims(n), wt.yq, None));
    b.ops.push(OpSpec {
        kind: OpKind::FullyConnected,
        inputs: vec![Some(x), Some(wt.w), wt.bias, Some(wt.rq)],
        outputs: vec![y],
        params: vec![wt.lo, wt.hi],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b.finish().expect("valid FC model")
}

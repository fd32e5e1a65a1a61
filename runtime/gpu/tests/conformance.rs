//! Cross-backend conformance: the same seeded int8 cases through the CPU backend and
//! through the heterogeneous driver with the GPU accelerator; outputs must be equal bit
//! for bit, and every op the GPU claims must have run there. Skips (passes, with a
//! message) when wgpu finds no adapter; CI installs Mesa's lavapipe so it runs.
//! A failure prints its `CAIRN_SEED`.

use cairn_core::emit::{AlignedBytes, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::op::{conv, OpKind};
use cairn_core::partition::{Placement, Policy};
use cairn_core::{DType, Interpreter, Model, Shape};
use cairn_gpu::GpuFactory;
use cairn_kernels::hetero::Hetero;
use cairn_kernels::CpuBackend;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
    fn i8(&mut self) -> i8 {
        self.next() as i8
    }
    fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (self.next() >> 40) as f32 / (1u64 << 24) as f32 * (hi - lo)
    }
}

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C0DE)
}

fn act(dims: &[usize], r: &mut Rng) -> TensorSpec {
    TensorSpec {
        dtype: DType::I8,
        shape: Shape::new(dims).unwrap(),
        quant: QuantSpec::PerTensor {
            scale: r.f(0.01, 0.1),
            zero_point: r.range(0, 255) as i32 - 128,
        },
        data: None,
        layout: Default::default(),
    }
}

fn konst(dt: DType, dims: &[usize], data: Vec<u8>) -> TensorSpec {
    TensorSpec {
        dtype: dt,
        shape: Shape::new(dims).unwrap(),
        quant: QuantSpec::None,
        data: Some(data),
        layout: Default::default(),
    }
}

/// Weights, bias and requantization scales of `oc` output channels of `per` weights.
/// `wide` makes accumulators large (bias and weights near their ends).
fn wbs(b: &mut ModelBuilder, r: &mut Rng, dims: &[usize], wide: bool) -> (u16, Option<u16>, u16) {
    let oc = dims[0];
    let n: usize = dims.iter().product();
    let wq: Vec<u8> = (0..n)
        .map(|_| {
            if wide {
                (127 - (r.next() % 4) as i8) as u8
            } else {
                r.i8().max(-127) as u8
            }
        })
        .collect();
    let w = b.add_tensor(TensorSpec {
        quant: QuantSpec::PerAxis {
            axis: 0,
            scales: (0..oc).map(|_| r.f(0.001, 0.05)).collect(),
            zero_points: vec![0; oc],
        },
        ..konst(DType::I8, dims, wq)
    });
    let bias = (!r.one_in(4)).then(|| {
        let span = if wide { 1 << 28 } else { 20001 };
        let data: Vec<u8> = (0..oc)
            .flat_map(|_| ((r.next() % span) as i32 - (span / 2) as i32).to_le_bytes())
            .collect();
        b.add_tensor(konst(DType::I32, &[oc], data))
    });
    let lo = if wide { 1e-7 } else { 0.0005 };
    let scales: Vec<u8> = (0..oc).flat_map(|_| r.f(lo, 0.03).to_le_bytes()).collect();
    let s = b.add_tensor(konst(DType::F32, &[oc], scales));
    (w, bias, s)
}

fn conv_case(r: &mut Rng) -> ModelBuilder {
    loop {
        let group_kind = r.next() % 3; // 0 one group, 1 depthwise, 2 grouped
        let c = r.range(1, 6) * if group_kind == 2 { 2 } else { 1 };
        let (group, oc) = match group_kind {
            0 => (1, r.range(1, 9)),
            1 => (c, c * r.range(1, 2)),
            _ => (2, 2 * r.range(1, 4)),
        };
        let k = (r.range(1, 4), r.range(1, 4));
        let (h, w) = (r.range(1, 12), r.range(1, 12));
        let s = (r.range(1, 3), r.range(1, 3));
        let d = (r.range(1, 2), r.range(1, 2));
        let pad = [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)];
        let eh = d.0 * (k.0 - 1) + 1;
        let ew = d.1 * (k.1 - 1) + 1;
        let (ph, pw) = (h + pad[0] + pad[2], w + pad[1] + pad[3]);
        if ph < eh || pw < ew {
            continue;
        }
        let (oh, ow) = ((ph - eh) / s.0 + 1, (pw - ew) / s.1 + 1);
        let n = r.range(1, 2);
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(act(&[n, c, h, w], r));
        let wide = r.one_in(5);
        let (wt, bias, st) = wbs(&mut b, r, &[oc, c / group, k.0, k.1], wide);
        let y = b.add_tensor(act(&[n, oc, oh, ow], r));
        let mut p = vec![0i32; conv::LEN];
        p[conv::SH] = s.0 as i32;
        p[conv::SW] = s.1 as i32;
        p[conv::PT] = pad[0] as i32;
        p[conv::PL] = pad[1] as i32;
        p[conv::PB] = pad[2] as i32;
        p[conv::PR] = pad[3] as i32;
        p[conv::DH] = d.0 as i32;
        p[conv::DW] = d.1 as i32;
        p[conv::GROUP] = group as i32;
        let zy = match &b.tensors[y as usize].quant {
            QuantSpec::PerTensor { zero_point, .. } => *zero_point,
            _ => 0,
        };
        (p[conv::ACT_LO], p[conv::ACT_HI]) = if r.one_in(3) { (zy, 127) } else { (-128, 127) };
        b.ops.push(OpSpec {
            kind: OpKind::Conv,
            inputs: vec![Some(x), Some(wt), bias, Some(st)],
            outputs: vec![y],
            params: p,
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        return b;
    }
}

fn fc_case(r: &mut Rng) -> ModelBuilder {
    let (m, n) = (r.range(1, 4), r.range(1, 40));
    let k = if r.one_in(2) {
        4 * r.range(1, 300)
    } else {
        r.range(1, 300)
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(act(&[m, k], r));
    let wide = r.one_in(5);
    let (wt, bias, st) = wbs(&mut b, r, &[n, k], wide);
    let y = b.add_tensor(act(&[m, n], r));
    b.ops.push(OpSpec {
        kind: OpKind::FullyConnected,
        inputs: vec![Some(x), Some(wt), bias, Some(st)],
        outputs: vec![y],
        params: vec![-128, 127],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b
}

fn lut_pool_case(r: &mut Rng) -> ModelBuilder {
    let (c, h, w) = (r.range(1, 5), r.range(2, 13), r.range(2, 13));
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(act(&[1, c, h, w], r));
    let per_channel = r.one_in(2);
    let entries = if per_channel { 256 * c } else { 256 };
    let table: Vec<u8> = (0..entries).map(|_| r.i8() as u8).collect();
    let t = b.add_tensor(konst(DType::I8, &[entries], table));
    let mid_spec = act(&[1, c, h, w], r);
    let mid = b.add_tensor(mid_spec.clone());
    b.ops.push(OpSpec {
        kind: OpKind::Lut,
        inputs: vec![Some(x), Some(t)],
        outputs: vec![mid],
        params: vec![if per_channel { 1 } else { -1 }],
    });
    let (kh, kw) = (r.range(1, 3.min(h)), r.range(1, 3.min(w)));
    let (sh, sw) = (r.range(1, 2), r.range(1, 2));
    let (oh, ow) = ((h - kh) / sh + 1, (w - kw) / sw + 1);
    let y = b.add_tensor(TensorSpec {
        shape: Shape::new(&[1, c, oh, ow]).unwrap(),
        ..mid_spec
    });
    b.ops.push(OpSpec {
        kind: OpKind::MaxPool,
        inputs: vec![Some(mid)],
        outputs: vec![y],
        params: vec![kh as i32, kw as i32, sh as i32, sw as i32, 0, 0, 0, 0, 1, 1],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b
}

/// Conv → Add/Mul (with the conv's input, or per channel with a pooled copy) → GAP →
/// Reshape: element-wise ops under every broadcast the zoo CNN uses.
fn eltwise_case(r: &mut Rng) -> ModelBuilder {
    // Two channels at least: a one-element operand is folded into Add's constant from its
    // value, which only the CPU does.
    let (c, h, w) = (r.range(2, 6), r.range(1, 9), r.range(1, 9));
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(act(&[1, c, h, w], r));
    let (wt, bias, st) = wbs(&mut b, r, &[c, c, 1, 1], false);
    let y = b.add_tensor(act(&[1, c, h, w], r));
    let mut p = vec![0i32; conv::LEN];
    for i in [conv::SH, conv::SW, conv::DH, conv::DW, conv::GROUP] {
        p[i] = 1;
    }
    (p[conv::ACT_LO], p[conv::ACT_HI]) = (-128, 127);
    b.ops.push(OpSpec {
        kind: OpKind::Conv,
        inputs: vec![Some(x), Some(wt), bias, Some(st)],
        outputs: vec![y],
        params: p,
    });
    let pooled = b.add_tensor(act(&[1, c, 1, 1], r));
    b.ops.push(OpSpec {
        kind: OpKind::GlobalAveragePool,
        inputs: vec![Some(y)],
        outputs: vec![pooled],
        params: vec![],
    });
    let kind = if r.one_in(2) {
        OpKind::Add
    } else {
        OpKind::Mul
    };
    let other = if r.one_in(2) { x } else { pooled };
    let (first, second) = if r.one_in(2) { (y, other) } else { (other, y) };
    let z = b.add_tensor(act(&[1, c, h, w], r));
    let zy = match &b.tensors[z as usize].quant {
        QuantSpec::PerTensor { zero_point, .. } => *zero_point,
        _ => 0,
    };
    let (lo, hi) = if r.one_in(3) { (zy, 127) } else { (-128, 127) };
    b.ops.push(OpSpec {
        kind,
        inputs: vec![Some(first), Some(second)],
        outputs: vec![z],
        params: vec![lo, hi],
    });
    let out = b.add_tensor(TensorSpec {
        shape: Shape::new(&[1, c * h * w]).unwrap(),
        ..b.tensors[z as usize].clone()
    });
    b.ops.push(OpSpec {
        kind: OpKind::Reshape,
        inputs: vec![Some(z)],
        outputs: vec![out],
        params: vec![],
    });
    b.inputs = vec![x];
    b.outputs = vec![out];
    b
}

/// Nearest Resize (requantized, random coordinate modes and scales) → Transpose of the
/// last two axes → strided Slice → Concat of the slice with itself along channels
/// (requantized): the data-movement ops of FPN necks and detection heads.
fn movement_case(r: &mut Rng) -> ModelBuilder {
    let (c, h, w) = (r.range(1, 4), r.range(1, 7), r.range(1, 7));
    let (fy, fx) = (r.range(1, 3), r.range(1, 3));
    let (oh, ow) = (h * fy, w * fx);
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(act(&[1, c, h, w], r));
    let up_spec = act(&[1, c, oh, ow], r);
    let up = b.add_tensor(up_spec.clone());
    b.ops.push(OpSpec {
        kind: OpKind::Resize,
        inputs: vec![Some(x)],
        outputs: vec![up],
        params: vec![
            0,
            r.range(0, 3) as i32,
            r.range(0, 3) as i32,
            (fy as f32).to_bits() as i32,
            (fx as f32).to_bits() as i32,
        ],
    });
    let t = b.add_tensor(TensorSpec {
        shape: Shape::new(&[1, c, ow, oh]).unwrap(),
        ..up_spec.clone()
    });
    b.ops.push(OpSpec {
        kind: OpKind::Transpose,
        inputs: vec![Some(up)],
        outputs: vec![t],
        params: vec![0, 1, 3, 2],
    });
    // Rows from `start` with step `step` along axis 2.
    let (start, step) = (r.range(0, ow - 1), r.range(1, 2));
    let rows = (ow - start).div_ceil(step);
    let sl = b.add_tensor(TensorSpec {
        shape: Shape::new(&[1, c, rows, oh]).unwrap(),
        ..up_spec
    });
    b.ops.push(OpSpec {
        kind: OpKind::Slice,
        inputs: vec![Some(t)],
        outputs: vec![sl],
        params: vec![0, 0, start as i32, 0, 1, 1, step as i32, 1],
    });
    let y = b.add_tensor(act(&[1, 2 * c, rows, oh], r));
    b.ops.push(OpSpec {
        kind: OpKind::Concat,
        inputs: vec![Some(sl), Some(sl)],
        outputs: vec![y],
        params: vec![1],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b
}

/// Tile (Expand's form too) → Gather along a random axis with fixed indices (repeats and
/// negative ones included) → GatherElements-free chain: the indexing ops of detection
/// post-processing and embedding tables.
fn tile_gather_case(r: &mut Rng) -> ModelBuilder {
    let dims = [1, r.range(1, 3), r.range(1, 5), r.range(1, 5)];
    let reps = [1, r.range(1, 2), r.range(1, 3), r.range(1, 2)];
    let tiled: Vec<usize> = dims.iter().zip(reps).map(|(d, k)| d * k).collect();
    let mut b = ModelBuilder::default();
    let x_spec = act(&dims, r);
    let x = b.add_tensor(x_spec.clone());
    let t = b.add_tensor(TensorSpec {
        shape: Shape::new(&tiled).unwrap(),
        ..x_spec.clone()
    });
    b.ops.push(OpSpec {
        kind: OpKind::Tile,
        inputs: vec![Some(x)],
        outputs: vec![t],
        params: vec![],
    });
    let axis = r.range(1, 3);
    let n = tiled[axis];
    let k = r.range(1, 6);
    let idx: Vec<i32> = (0..k)
        .map(|_| r.range(0, 2 * n - 1) as i32 - n as i32)
        .collect();
    let bytes: Vec<u8> = idx.iter().flat_map(|v| v.to_le_bytes()).collect();
    let it = b.add_tensor(konst(DType::I32, &[k], bytes));
    let mut out = tiled.clone();
    out[axis] = k;
    let y = b.add_tensor(TensorSpec {
        shape: Shape::new(&out).unwrap(),
        ..x_spec
    });
    b.ops.push(OpSpec {
        kind: OpKind::Gather,
        inputs: vec![Some(t), Some(it)],
        outputs: vec![y],
        params: vec![axis as i32, 0],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b
}

/// int8 Softmax (flavour 0) over a random axis of a rank-2..4 tensor: classifier heads
/// (one long row), attention (rows of a head's scores) and inner axes (elements of a row
/// K apart). Input scales up to 1 make the smallest exp values subnormal or zero; output
/// scales include the usual 1/256 with zero point −128.
fn softmax_case(r: &mut Rng) -> ModelBuilder {
    let dims: Vec<usize> = match r.next() % 3 {
        0 => vec![1, r.range(1, 1200)],
        1 => {
            let seq = r.range(1, 40);
            vec![1, r.range(1, 4), seq, seq]
        }
        _ => (0..r.range(2, 4)).map(|_| r.range(1, 9)).collect(),
    };
    let axis = if r.one_in(2) {
        dims.len() - 1
    } else {
        r.range(0, dims.len() - 1)
    };
    let mut b = ModelBuilder::default();
    let mut x_spec = act(&dims, r);
    if r.one_in(3) {
        x_spec.quant = QuantSpec::PerTensor {
            scale: r.f(0.1, 1.0),
            zero_point: r.range(0, 255) as i32 - 128,
        };
    }
    let x = b.add_tensor(x_spec);
    let mut y_spec = act(&dims, r);
    if r.one_in(2) {
        y_spec.quant = QuantSpec::PerTensor {
            scale: 1.0 / 256.0,
            zero_point: -128,
        };
    }
    let y = b.add_tensor(y_spec);
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    b.ops.push(OpSpec {
        kind: OpKind::Softmax,
        inputs: vec![Some(x)],
        outputs: vec![y],
        params: vec![outer as i32, dims[axis] as i32, inner as i32, 0],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b
}

/// Bilinear Resize (requantized) with every coordinate transform, integer and
/// fractional scales, up and down: FPN necks and segmentation heads.
fn bilinear_case(r: &mut Rng) -> ModelBuilder {
    let (n, c, h, w) = (r.range(1, 2), r.range(1, 4), r.range(1, 12), r.range(1, 12));
    let scale = |r: &mut Rng, len: usize| -> (f32, usize) {
        let s = match r.next() % 4 {
            0 => r.range(1, 4) as f32,
            1 => 0.5,
            2 => r.f(0.3, 3.0),
            _ => 1.5,
        };
        (s, ((len as f32 * s).floor() as usize).max(1))
    };
    let ((sh, oh), (sw, ow)) = (scale(r, h), scale(r, w));
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(act(&[n, c, h, w], r));
    let y = b.add_tensor(act(&[n, c, oh, ow], r));
    b.ops.push(OpSpec {
        kind: OpKind::Resize,
        inputs: vec![Some(x)],
        outputs: vec![y],
        params: vec![
            1,
            r.range(0, 3) as i32,
            0,
            sh.to_bits() as i32,
            sw.to_bits() as i32,
        ],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b
}

/// Split along a random axis into two to four parts of random sizes, every part a
/// model output; the first part also feeds a Transpose (a Split inside a GPU segment).
fn split_case(r: &mut Rng) -> ModelBuilder {
    let dims: Vec<usize> = (0..r.range(2, 4)).map(|_| r.range(1, 7)).collect();
    let axis = r.range(0, dims.len() - 1);
    let mut dims = dims;
    let parts = r.range(2, 4);
    dims[axis] = dims[axis].max(parts) + r.range(0, 4);
    // Cut points: parts − 1 distinct offsets inside the axis.
    let mut cuts: Vec<usize> = Vec::new();
    while cuts.len() < parts - 1 {
        let cut = r.range(1, dims[axis] - 1);
        if !cuts.contains(&cut) {
            cuts.push(cut);
        }
    }
    cuts.sort_unstable();
    let starts: Vec<usize> = std::iter::once(0).chain(cuts.iter().copied()).collect();
    let ends: Vec<usize> = cuts.iter().copied().chain([dims[axis]]).collect();
    let mut b = ModelBuilder::default();
    let x_spec = act(&dims, r);
    let x = b.add_tensor(x_spec.clone());
    let outs: Vec<u16> = starts
        .iter()
        .zip(&ends)
        .map(|(s, e)| {
            let mut d = dims.clone();
            d[axis] = e - s;
            b.add_tensor(TensorSpec {
                shape: Shape::new(&d).unwrap(),
                ..x_spec.clone()
            })
        })
        .collect();
    let mut params = vec![axis as i32];
    params.extend(starts.iter().map(|&s| s as i32));
    b.ops.push(OpSpec {
        kind: OpKind::Split,
        inputs: vec![Some(x)],
        outputs: outs.clone(),
        params,
    });
    let mut first = dims.clone();
    first[axis] = ends[0];
    let rank = first.len();
    let perm: Vec<usize> = (0..rank).rev().collect();
    let t_dims: Vec<usize> = perm.iter().map(|&a| first[a]).collect();
    let t = b.add_tensor(TensorSpec {
        shape: Shape::new(&t_dims).unwrap(),
        ..x_spec
    });
    b.ops.push(OpSpec {
        kind: OpKind::Transpose,
        inputs: vec![Some(outs[0])],
        outputs: vec![t],
        params: perm.iter().map(|&a| a as i32).collect(),
    });
    b.inputs = vec![x];
    b.outputs = std::iter::once(t)
        .chain(outs[1..].iter().copied())
        .collect();
    b
}

/// int8 BatchMatMul of two activations: attention's QKᵀ ([1, heads, seq, d] ×
/// [1, heads, d, seq]) and AV, batch axes broadcast (either side, ranks 2 to 4), odd
/// sizes up to k = 70, zero points at -128/127 in a third of the cases, and scales large
/// enough in a quarter of them to saturate the output.
fn bmm_case(r: &mut Rng) -> ModelBuilder {
    let heads = r.range(1, 4);
    let (m, k, n) = (r.range(1, 13), r.range(1, 70), r.range(1, 13));
    let (adims, bdims): (Vec<usize>, Vec<usize>) = match r.next() % 5 {
        0 => (vec![1, heads, m, k], vec![1, heads, k, n]),
        1 => (vec![1, heads, m, k], vec![k, n]),
        2 => (vec![m, k], vec![heads, 1, k, n]),
        3 => (vec![heads, 1, m, k], vec![1, 3, k, n]),
        _ => (vec![2, heads, m, k], vec![1, heads, k, n]),
    };
    let batch: Vec<usize> = {
        let (la, lb) = (&adims[..adims.len() - 2], &bdims[..bdims.len() - 2]);
        let r = la.len().max(lb.len());
        (0..r)
            .map(|i| {
                let pick = |l: &[usize]| (i + l.len()).checked_sub(r).map_or(1, |j| l[j]);
                pick(la).max(pick(lb))
            })
            .collect()
    };
    let mut b = ModelBuilder::default();
    let extreme = r.one_in(3);
    let spec = |dims: &[usize], r: &mut Rng| {
        let mut t = act(dims, r);
        if extreme {
            if let QuantSpec::PerTensor { zero_point, .. } = &mut t.quant {
                *zero_point = if r.one_in(2) { -128 } else { 127 };
            }
        }
        t
    };
    let at = b.add_tensor(spec(&adims, r));
    let bt = b.add_tensor(spec(&bdims, r));
    let ydims: Vec<usize> = batch.iter().copied().chain([m, n]).collect();
    let yt = b.add_tensor(spec(&ydims, r));
    // Small scales keep most outputs inside the range; large ones saturate.
    let scale = if r.one_in(4) {
        r.f(0.01, 1.0)
    } else {
        r.f(1e-5, 0.002)
    };
    let st = b.add_tensor(konst(DType::F32, &[1], scale.to_le_bytes().to_vec()));
    b.ops.push(OpSpec {
        kind: OpKind::BatchMatMul,
        inputs: vec![Some(at), Some(bt), Some(st)],
        outputs: vec![yt],
        params: vec![],
    });
    b.inputs = vec![at, bt];
    b.outputs = vec![yt];
    b
}

fn run_cpu(m: Model<'_>, input: &[u8]) -> Vec<u8> {
    run_cpu_all(m, &[input.to_vec()]).swap_remove(0)
}

/// Every output of the model, run on the CPU backend with these inputs.
fn run_cpu_all(m: Model<'_>, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it = Interpreter::new(m, CpuBackend, &mut arena).unwrap();
    for (k, input) in inputs.iter().enumerate() {
        it.input_bytes_mut(k).unwrap().copy_from_slice(input);
    }
    it.invoke().unwrap();
    (0..m.n_outputs())
        .map(|k| it.output(k).unwrap().data.to_vec())
        .collect()
}

fn gpu_or_skip() -> bool {
    match cairn_gpu::probe() {
        Some(info) => {
            eprintln!(
                "gpu: {} ({}, {}), dot4I8Packed: {}",
                info.name, info.backend, info.device_type, info.packed_dot
            );
            true
        }
        None => {
            // tests/run.sh installs lavapipe and sets CAIRN_REQUIRE_GPU: there, no adapter
            // is a failure, not a skip.
            assert!(
                std::env::var_os("CAIRN_REQUIRE_GPU").is_none(),
                "CAIRN_REQUIRE_GPU is set but wgpu found no GPU adapter"
            );
            eprintln!(
                "SKIPPED: wgpu found no GPU adapter (install mesa-vulkan-drivers for lavapipe)"
            );
            false
        }
    }
}

fn check_cases(
    name: &str,
    cases: usize,
    seed_salt: u64,
    packed_dot: bool,
    make: fn(&mut Rng) -> ModelBuilder,
) {
    if !gpu_or_skip() {
        return;
    }
    let seed = seed();
    let mut r = Rng(seed ^ seed_salt);
    for case in 0..cases {
        let bytes = make(&mut r).finish().expect("valid case");
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let inputs: Vec<Vec<u8>> = (0..m.n_inputs())
            .map(|k| {
                let n_in = m.tensor(m.input_tensor(k).unwrap()).info.numel();
                (0..n_in).map(|_| r.i8() as u8).collect()
            })
            .collect();
        let mut arena = vec![0u8; m.arena_bytes() + 16];
        let mut staging = vec![0u8; m.arena_bytes()];
        let factory = GpuFactory {
            packed_dot,
            ..GpuFactory::default()
        };
        let mut h = Hetero::new(
            m,
            CpuBackend,
            &mut arena,
            &mut staging,
            factory,
            Policy::default(),
        )
        .unwrap();
        let what = format!("CAIRN_SEED={seed} {name} case {case}");
        assert_eq!(h.cpu_only_reason(), None, "{what}");
        assert_eq!(h.partition().ops_on(Placement::Cpu), 0, "{what}");
        for (k, input) in inputs.iter().enumerate() {
            h.input_bytes_mut(k).unwrap().copy_from_slice(input);
        }
        h.invoke().unwrap();
        let c = h.counters();
        assert_eq!((c.faults(), c.fallback_segments), (0, 0), "{what}: {c:?}");
        for (k, want) in run_cpu_all(m, &inputs).iter().enumerate() {
            assert_eq!(
                h.output(k).unwrap().data,
                want.as_slice(),
                "{what} output {k}"
            );
        }
    }
}

#[test]
fn conv_equals_cpu() {
    check_cases("conv", 80, 1, true, conv_case);
}

#[test]
fn fully_connected_equals_cpu_packed_and_plain() {
    check_cases("fc packed", 40, 2, true, fc_case);
    check_cases("fc plain", 20, 3, false, fc_case);
}

#[test]
fn lut_and_maxpool_equal_cpu() {
    check_cases("lut+maxpool", 40, 4, true, lut_pool_case);
}

#[test]
fn add_mul_gap_reshape_equal_cpu() {
    check_cases("add/mul+gap+reshape", 40, 5, true, eltwise_case);
}

/// The real accelerator behind the fault injector: every request still equals the CPU's.
#[test]
fn resize_transpose_slice_concat_equal_cpu() {
    check_cases("resize+transpose+slice+concat", 40, 6, true, movement_case);
}

#[test]
fn tile_and_gather_equal_cpu() {
    check_cases("tile+gather", 40, 7, true, tile_gather_case);
}

#[test]
fn softmax_equals_cpu() {
    check_cases("softmax", 60, 9, true, softmax_case);
}

#[test]
fn bilinear_resize_equals_cpu() {
    check_cases("bilinear resize", 60, 10, true, bilinear_case);
}

#[test]
fn split_equals_cpu() {
    check_cases("split+transpose", 40, 11, true, split_case);
}

#[test]
fn batch_matmul_equals_cpu() {
    check_cases("batch matmul", 80, 12, true, bmm_case);
}

/// One f32 operand for the exact-arithmetic probe: zeros, subnormals, normals of any
/// exponent up to 2^100, and (with `near`) the exponent of `near` ± 2 for cancellation
/// and ties.
fn probe_operand(r: &mut Rng, near: Option<u32>) -> u32 {
    let sign = (r.next() as u32) & 0x8000_0000;
    let mantissa = (r.next() as u32) & 0x007F_FFFF;
    let exponent = match (near, r.next() % 8) {
        (Some(n), 0..=3) => ((n >> 23) & 0xFF)
            .saturating_add(r.range(0, 4) as u32)
            .saturating_sub(2),
        (_, 4) => 0,
        (_, 5) => return sign | if r.one_in(2) { 0 } else { mantissa & 0xF },
        _ => r.range(1, 227) as u32,
    };
    sign | exponent.min(227) << 23 | mantissa
}

/// The WGSL helpers that replace f32 division and multiply-add chains (`f32_div`,
/// `f32_add`) equal IEEE 754 (Rust's `/` and `+`) bit for bit, subnormals and ties
/// included, on 2^18 seeded operand pairs.
#[test]
fn exact_f32_helpers_equal_ieee() {
    if !gpu_or_skip() {
        return;
    }
    let seed = seed();
    let mut r = Rng(seed ^ 12);
    let pairs: Vec<(u32, u32)> = (0..1 << 18)
        .map(|_| {
            let a = probe_operand(&mut r, None);
            let mut b = probe_operand(&mut r, Some(a));
            if b & 0x7FFF_FFFF == 0 {
                b |= 1;
            }
            (a, b)
        })
        .collect();
    let got = cairn_gpu::exact_f32_probe(&pairs).expect("probe ran");
    let mut bad = Vec::new();
    for (&(a, b), &(sum, quotient)) in pairs.iter().zip(&got) {
        let (fa, fb) = (f32::from_bits(a), f32::from_bits(b));
        if (fa + fb).to_bits() != sum {
            bad.push(format!(
                "{a:#010x} + {b:#010x}: {sum:#010x}, want {:#010x}",
                (fa + fb).to_bits()
            ));
        }
        let want = (fa.abs() / fb.abs()).to_bits();
        if f32::from_bits(want).is_finite() && want != quotient {
            bad.push(format!(
                "|{a:#010x}| / |{b:#010x}|: {quotient:#010x}, want {want:#010x}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "CAIRN_SEED={seed}: {} of {} differ, first: {:?}",
        bad.len(),
        2 * pairs.len(),
        &bad[..bad.len().min(5)]
    );
}

#[test]
fn gpu_faults_fall_back_to_cpu_results() {
    use cairn_kernels::hetero::fault::{FaultInjector, Schedule};
    if !gpu_or_skip() {
        return;
    }
    let seed = seed();
    let mut r = Rng(seed ^ 6);
    let bytes = eltwise_case(&mut r).finish().expect("valid case");
    let ab = AlignedBytes::from_slice(&bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let n_in = m.tensor(m.input_tensor(0).unwrap()).info.numel();
    let inj = FaultInjector::new(
        GpuFactory::default(),
        Schedule::Seeded {
            seed,
            per_mille: 400,
        },
    );
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        inj.clone(),
        Policy::default(),
    )
    .unwrap();
    for req in 0..12 {
        let input: Vec<u8> = (0..n_in).map(|_| r.i8() as u8).collect();
        h.input_bytes_mut(0).unwrap().copy_from_slice(&input);
        h.invoke().unwrap();
        assert_eq!(
            h.output(0).unwrap().data,
            run_cpu(m, &input).as_slice(),
            "CAIRN_SEED={seed} request {req}"
        );
    }
    let (c, injected) = (h.counters(), inj.injected());
    assert_eq!(
        c.faults(),
        injected.device_lost + injected.timeouts + injected.errors,
        "CAIRN_SEED={seed}"
    );
    assert_eq!(
        c.accel_segments + c.faults(),
        injected.calls,
        "CAIRN_SEED={seed}"
    );
}

/// conv → Sub (CPU only) → conv, then Add of the first conv's output (alive across the
/// CPU segment) and the last: GPU → CPU → GPU with transfers both ways.
fn mixed_case(r: &mut Rng) -> ModelBuilder {
    let (c, h, w) = (r.range(2, 5), r.range(2, 8), r.range(2, 8));
    let dims = [1, c, h, w];
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(act(&dims, r));
    let conv_op = |b: &mut ModelBuilder, r: &mut Rng, src: u16| {
        let (wt, bias, st) = wbs(b, r, &[c, c, 3, 3], false);
        let y = b.add_tensor(act(&dims, r));
        let mut p = vec![0i32; conv::LEN];
        for i in [
            conv::SH,
            conv::SW,
            conv::DH,
            conv::DW,
            conv::GROUP,
            conv::PT,
            conv::PL,
            conv::PB,
            conv::PR,
        ] {
            p[i] = 1;
        }
        (p[conv::ACT_LO], p[conv::ACT_HI]) = (-128, 127);
        b.ops.push(OpSpec {
            kind: OpKind::Conv,
            inputs: vec![Some(src), Some(wt), bias, Some(st)],
            outputs: vec![y],
            params: p,
        });
        y
    };
    let first = conv_op(&mut b, r, x);
    let diff = b.add_tensor(act(&dims, r));
    b.ops.push(OpSpec {
        kind: OpKind::Sub,
        inputs: vec![Some(first), Some(x)],
        outputs: vec![diff],
        params: vec![-128, 127],
    });
    let second = conv_op(&mut b, r, diff);
    let sum = b.add_tensor(act(&dims, r));
    b.ops.push(OpSpec {
        kind: OpKind::Add,
        inputs: vec![Some(first), Some(second)],
        outputs: vec![sum],
        params: vec![-128, 127],
    });
    b.inputs = vec![x];
    b.outputs = vec![sum];
    b
}

#[test]
fn segments_on_both_sides_equal_cpu() {
    if !gpu_or_skip() {
        return;
    }
    let seed = seed();
    let mut r = Rng(seed ^ 7);
    for case in 0..10 {
        let bytes = mixed_case(&mut r).finish().expect("valid case");
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let n_in = m.tensor(m.input_tensor(0).unwrap()).info.numel();
        let mut arena = vec![0u8; m.arena_bytes() + 16];
        let mut staging = vec![0u8; m.arena_bytes()];
        let mut h = Hetero::new(
            m,
            CpuBackend,
            &mut arena,
            &mut staging,
            GpuFactory::default(),
            Policy::default(),
        )
        .unwrap();
        let what = format!("CAIRN_SEED={seed} mixed case {case}");
        let placements: Vec<Placement> = h
            .partition()
            .segments()
            .iter()
            .map(|s| s.placement)
            .collect();
        assert_eq!(
            placements,
            [Placement::Accel(0), Placement::Cpu, Placement::Accel(0)],
            "{what}"
        );
        for req in 0..3 {
            let input: Vec<u8> = (0..n_in).map(|_| r.i8() as u8).collect();
            h.input_bytes_mut(0).unwrap().copy_from_slice(&input);
            h.invoke().unwrap();
            assert_eq!(
                h.output(0).unwrap().data,
                run_cpu(m, &input).as_slice(),
                "{what} request {req}"
            );
        }
        assert_eq!(h.counters().accel_segments, 6, "{what}");
    }
}

/// A segment deadline of zero: the device misses it mid-request; every request still
/// completes with the CPU's result, and the misses are counted.
#[test]
fn a_missed_deadline_never_loses_a_request() {
    if !gpu_or_skip() {
        return;
    }
    let seed = seed();
    let mut r = Rng(seed ^ 8);
    let bytes = mixed_case(&mut r).finish().expect("valid case");
    let ab = AlignedBytes::from_slice(&bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let n_in = m.tensor(m.input_tensor(0).unwrap()).info.numel();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let factory = GpuFactory {
        timeout: std::time::Duration::ZERO,
        ..GpuFactory::default()
    };
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        factory,
        Policy::default(),
    )
    .unwrap();
    for req in 0..4 {
        let input: Vec<u8> = (0..n_in).map(|_| r.i8() as u8).collect();
        h.input_bytes_mut(0).unwrap().copy_from_slice(&input);
        h.invoke().unwrap();
        assert_eq!(
            h.output(0).unwrap().data,
            run_cpu(m, &input).as_slice(),
            "CAIRN_SEED={seed} request {req}"
        );
    }
    let c = h.counters();
    eprintln!("zero deadline: {c:?}");
    assert_eq!(h.cpu_only_reason(), None);
    // Every GPU segment either completed or was rerun on the CPU; every failure counted.
    assert_eq!(c.accel_segments + c.fallback_segments, 8, "{c:?}");
    assert!(c.fallback_segments >= c.faults(), "{c:?}");
    // A fast device may beat even a zero deadline, so misses are not required, only
    // that each one was a timeout.
    assert_eq!(c.faults(), c.timeouts, "{c:?}");
}

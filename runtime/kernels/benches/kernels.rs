//! Per-kernel-family throughput of the CPU backend (int8), in MACs per second:
//! `cargo bench -p cairn-kernels --features std`. Shapes are MobileNet-like layers.

use cairn_core::emit::{AlignedBytes, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::op::conv;
use cairn_core::{DType, Interpreter, Model, OpKind, Shape};
use cairn_kernels::{CpuBackend, RefBackend};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn t(dt: DType, dims: &[usize], quant: QuantSpec, data: Option<Vec<u8>>) -> TensorSpec {
    TensorSpec {
        dtype: dt,
        shape: Shape::new(dims).unwrap(),
        quant,
        data,
        layout: Default::default(),
    }
}

/// A one-op int8 conv model: (c, h, w) -> oc, k×k, stride, group. Returns its bytes, the
/// same model with pre-packed weights (one-group convs) and its MACs.
fn conv_model(
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    k: usize,
    stride: usize,
    group: usize,
) -> (Vec<u8>, Option<Vec<u8>>, u64) {
    let pad = k / 2;
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (w + 2 * pad - k) / stride + 1;
    let cg = c / group;
    let wq: Vec<u8> = (0..oc * cg * k * k).map(|i| (i * 37 % 251) as u8).collect();
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(t(
        DType::I8,
        &[1, c, h, w],
        QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: -3,
        },
        None,
    ));
    let wt = b.add_tensor(t(
        DType::I8,
        &[oc, cg, k, k],
        QuantSpec::PerAxis {
            axis: 0,
            scales: vec![0.01; oc],
            zero_points: vec![0; oc],
        },
        Some(wq),
    ));
    let bias = b.add_tensor(t(DType::I32, &[oc], QuantSpec::None, Some(vec![0; 4 * oc])));
    let rq = b.add_tensor(t(
        DType::F32,
        &[oc],
        QuantSpec::None,
        Some(0.004f32.to_le_bytes().repeat(oc)),
    ));
    let y = b.add_tensor(t(
        DType::I8,
        &[1, oc, oh, ow],
        QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: 0,
        },
        None,
    ));
    let mut p = vec![0i32; conv::LEN];
    p[conv::SH] = stride as i32;
    p[conv::SW] = stride as i32;
    p[conv::PT] = pad as i32;
    p[conv::PL] = pad as i32;
    p[conv::PB] = pad as i32;
    p[conv::PR] = pad as i32;
    p[conv::DH] = 1;
    p[conv::DW] = 1;
    p[conv::GROUP] = group as i32;
    p[conv::ACT_LO] = -128;
    p[conv::ACT_HI] = 127;
    b.ops.push(OpSpec {
        kind: OpKind::Conv,
        inputs: vec![Some(x), Some(wt), Some(bias), Some(rq)],
        outputs: vec![y],
        params: p,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    let plain = b.finish().unwrap();
    let packed = (b.pack_conv_weights(2048) > 0).then(|| b.finish().unwrap());
    (plain, packed, (oc * oh * ow * cg * k * k) as u64)
}

/// A one-op int8 fully connected model: [m, k] x [n, k]ᵀ.
fn fc_model(m: usize, k: usize, n: usize) -> (Vec<u8>, u64) {
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(t(
        DType::I8,
        &[m, k],
        QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: 1,
        },
        None,
    ));
    let wq: Vec<u8> = (0..n * k).map(|i| (i * 31 % 253) as u8).collect();
    let wt = b.add_tensor(t(
        DType::I8,
        &[n, k],
        QuantSpec::PerAxis {
            axis: 0,
            scales: vec![0.01; n],
            zero_points: vec![0; n],
        },
        Some(wq),
    ));
    let rq = b.add_tensor(t(
        DType::F32,
        &[n],
        QuantSpec::None,
        Some(0.004f32.to_le_bytes().repeat(n)),
    ));
    let y = b.add_tensor(t(
        DType::I8,
        &[m, n],
        QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: 0,
        },
        None,
    ));
    b.ops.push(OpSpec {
        kind: OpKind::FullyConnected,
        inputs: vec![Some(x), Some(wt), None, Some(rq)],
        outputs: vec![y],
        params: vec![-128, 127],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    (b.finish().unwrap(), (m * k * n) as u64)
}

fn bench_model(c: &mut Criterion, name: &str, bytes: &[u8], packed: Option<&[u8]>, macs: u64) {
    let ab = AlignedBytes::from_slice(bytes);
    let model = Model::parse(ab.as_slice()).unwrap();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(macs));
    group.sample_size(20);
    let mut arena = vec![0u8; model.arena_bytes() + 16];
    group.bench_function("cpu", |b| {
        let mut it = Interpreter::new(model, CpuBackend, &mut arena).unwrap();
        b.iter(|| it.invoke().unwrap())
    });
    if let Some(p) = packed {
        let ab = AlignedBytes::from_slice(p);
        let model = Model::parse(ab.as_slice()).unwrap();
        let mut arena = vec![0u8; model.arena_bytes() + 16];
        group.bench_function("cpu-packed", |b| {
            let mut it = Interpreter::new(model, CpuBackend, &mut arena).unwrap();
            b.iter(|| it.invoke().unwrap())
        });
    }
    let mut arena = vec![0u8; model.arena_bytes() + 16];
    group.bench_function("reference", |b| {
        let mut it = Interpreter::new(model, RefBackend, &mut arena).unwrap();
        b.iter(|| it.invoke().unwrap())
    });
    group.finish();
}

fn kernels(c: &mut Criterion) {
    let (m, p, n) = conv_model(96, 28, 28, 96, 1, 1, 1);
    bench_model(c, "conv1x1_96x28x28_to_96", &m, p.as_deref(), n);
    let (m, p, n) = conv_model(32, 56, 56, 32, 3, 1, 1);
    bench_model(c, "conv3x3_32x56x56_to_32", &m, p.as_deref(), n);
    let (m, p, n) = conv_model(144, 56, 56, 144, 3, 1, 144);
    bench_model(c, "depthwise3x3_144x56x56", &m, p.as_deref(), n);
    // MobileNetV2's late depthwise layers: many channels, tiny planes.
    let (m, p, n) = conv_model(816, 7, 7, 816, 3, 1, 816);
    bench_model(c, "depthwise3x3_816x7x7", &m, p.as_deref(), n);
    let (m, p, n) = conv_model(144, 112, 112, 144, 3, 2, 144);
    bench_model(c, "depthwise3x3_s2_144x112x112", &m, p.as_deref(), n);
    let (m, n) = fc_model(16, 512, 256);
    bench_model(c, "gemm_16x512_by_256", &m, None, n);
}

criterion_group!(benches, kernels);
criterion_main!(benches);

//! Splitting ops across threads changes no byte: the fast kernels run at 1, 2, 3 and 4
//! threads give the bytes of 1 thread, and (int8) the reference's, on random shapes
//! (seeded: `CAIRN_SEED`, printed on failure) with every op split however small
//! (`Pool::with_min_part_work(1)`), then on layer shapes of the corpus models with the
//! default split threshold; and a bundled model through `HostModel::set_threads`.

use cairn_core::emit::{AlignedBytes, ModelBuilder, OpSpec, QuantSpec};
use cairn_core::op::conv;
use cairn_core::{DType, OpKind};
use cairn_kernels::par::{with_pool, Pool};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{run, run_cached, seed, tensor, ConvCase, Rng};

const THREADS: [usize; 4] = [1, 2, 3, 4];

fn per_tensor(r: &mut Rng) -> QuantSpec {
    QuantSpec::PerTensor {
        scale: r.f(0.01, 0.1),
        zero_point: r.range(0, 255) as i32 - 128,
    }
}

fn bytes(r: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| r.i8() as u8).collect()
}

fn f32_bytes(r: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).flat_map(|_| r.f(-1.0, 1.0).to_le_bytes()).collect()
}

/// The model's outputs on the CPU backend with `threads` threads lent; `every` splits
/// every op the kernels can split (else only those over the default threshold).
fn run_threads(model: &[u8], input: &[u8], threads: usize, every: bool) -> Vec<u8> {
    let mut pool = Pool::new(threads).expect("a thread pool");
    if every {
        pool = pool.with_min_part_work(1);
    }
    with_pool(&pool, || run(model, CpuBackend, input))
}

/// Every thread count gives the bytes of one thread, and `reference` when given.
fn check_threads(model: &[u8], input: &[u8], every: bool, reference: Option<&[u8]>, what: &str) {
    let one = run_threads(model, input, 1, every);
    if let Some(reference) = reference {
        assert_eq!(one, reference, "1 thread vs the reference: {what}");
    }
    for t in THREADS {
        assert_eq!(
            run_threads(model, input, t, every),
            one,
            "{t} threads vs 1: {what}"
        );
    }
}

/// With a weight cache (AVX-512 hosts: weights packed into the block's panels, the output
/// channels split at panel starts): every thread count gives one thread's bytes again.
fn check_cached(model: &[u8], input: &[u8], what: &str) {
    let one = run_threads(model, input, 1, true);
    for t in THREADS {
        let pool = Pool::new(t).expect("a thread pool").with_min_part_work(1);
        let cached = with_pool(&pool, || run_cached(model, input));
        assert_eq!(cached, one, "{t} threads, cached weights vs 1: {what}");
    }
}

/// One int8 conv (per-channel weights, bias, clamp) of geometry `cs`.
fn conv_model(r: &mut Rng, cs: &ConvCase, dtype: DType) -> Option<Vec<u8>> {
    let eh = cs.dil.0 * (cs.k.0 - 1) + 1;
    let ew = cs.dil.1 * (cs.k.1 - 1) + 1;
    let (ph, pw) = (cs.h + cs.pad[0] + cs.pad[2], cs.w + cs.pad[1] + cs.pad[3]);
    if ph < eh || pw < ew {
        return None;
    }
    let (oh, ow) = ((ph - eh) / cs.stride.0 + 1, (pw - ew) / cs.stride.1 + 1);
    let cg = cs.c / cs.group;
    let wn = cs.oc * cg * cs.k.0 * cs.k.1;
    let q = dtype == DType::I8;
    let act = |r: &mut Rng| {
        if q {
            per_tensor(r)
        } else {
            QuantSpec::None
        }
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(tensor(dtype, &[cs.n, cs.c, cs.h, cs.w], act(r), None));
    let (w, bias, rq) = if q {
        let wq: Vec<u8> = (0..wn).map(|_| r.i8().max(-127) as u8).collect();
        let scales = (0..cs.oc).map(|_| r.f(0.001, 0.05)).collect();
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
        let bias: Vec<u8> = (0..cs.oc)
            .flat_map(|_| ((r.next() % 20001) as i32 - 10000).to_le_bytes())
            .collect();
        let bias = b.add_tensor(tensor(DType::I32, &[cs.oc], QuantSpec::None, Some(bias)));
        let rq: Vec<u8> = (0..cs.oc)
            .flat_map(|_| r.f(0.0005, 0.02).to_le_bytes())
            .collect();
        let rq = b.add_tensor(tensor(DType::F32, &[cs.oc], QuantSpec::None, Some(rq)));
        (w, bias, Some(rq))
    } else {
        let wd = f32_bytes(r, wn);
        let w = b.add_tensor(tensor(
            DType::F32,
            &[cs.oc, cg, cs.k.0, cs.k.1],
            QuantSpec::None,
            Some(wd),
        ));
        let bd = f32_bytes(r, cs.oc);
        let bias = b.add_tensor(tensor(DType::F32, &[cs.oc], QuantSpec::None, Some(bd)));
        (w, bias, None)
    };
    let y = b.add_tensor(tensor(dtype, &[cs.n, cs.oc, oh, ow], act(r), None));
    let mut params = common::conv_params(cs, cs.group);
    if q {
        params[conv::ACT_LO] = -128;
        params[conv::ACT_HI] = 127;
    } else {
        params[conv::ACT_LO] = f32::NEG_INFINITY.to_bits() as i32;
        params[conv::ACT_HI] = f32::INFINITY.to_bits() as i32;
    }
    let mut inputs = vec![Some(x), Some(w), Some(bias)];
    if rq.is_some() {
        inputs.push(rq);
    }
    b.ops.push(OpSpec {
        kind: OpKind::Conv,
        inputs,
        outputs: vec![y],
        params,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    Some(b.finish().expect("valid conv model"))
}

/// x [m, k] · Wᵀ (W [n, k]) + bias: int8 (requantized) or f32.
fn fc_model(r: &mut Rng, m: usize, k: usize, n: usize, dtype: DType) -> Vec<u8> {
    let q = dtype == DType::I8;
    let mut b = ModelBuilder::default();
    let xq = if q { per_tensor(r) } else { QuantSpec::None };
    let x = b.add_tensor(tensor(dtype, &[m, k], xq, None));
    let mut inputs = vec![Some(x)];
    if q {
        let wq: Vec<u8> = (0..n * k).map(|_| r.i8().max(-127) as u8).collect();
        let scales = (0..n).map(|_| r.f(0.001, 0.05)).collect();
        inputs.push(Some(b.add_tensor(tensor(
            DType::I8,
            &[n, k],
            QuantSpec::PerAxis {
                axis: 0,
                scales,
                zero_points: vec![0; n],
            },
            Some(wq),
        ))));
        let bias: Vec<u8> = (0..n)
            .flat_map(|_| ((r.next() % 20001) as i32 - 10000).to_le_bytes())
            .collect();
        inputs.push(Some(b.add_tensor(tensor(
            DType::I32,
            &[n],
            QuantSpec::None,
            Some(bias),
        ))));
        let rq: Vec<u8> = (0..n)
            .flat_map(|_| r.f(0.0005, 0.02).to_le_bytes())
            .collect();
        inputs.push(Some(b.add_tensor(tensor(
            DType::F32,
            &[n],
            QuantSpec::None,
            Some(rq),
        ))));
    } else {
        let wd = f32_bytes(r, n * k);
        inputs.push(Some(b.add_tensor(tensor(
            DType::F32,
            &[n, k],
            QuantSpec::None,
            Some(wd),
        ))));
        let bd = f32_bytes(r, n);
        inputs.push(Some(b.add_tensor(tensor(
            DType::F32,
            &[n],
            QuantSpec::None,
            Some(bd),
        ))));
    }
    let yq = if q { per_tensor(r) } else { QuantSpec::None };
    let y = b.add_tensor(tensor(dtype, &[m, n], yq, None));
    let params = if q {
        vec![-128, 127]
    } else {
        vec![
            f32::NEG_INFINITY.to_bits() as i32,
            f32::INFINITY.to_bits() as i32,
        ]
    };
    b.ops.push(OpSpec {
        kind: OpKind::FullyConnected,
        inputs,
        outputs: vec![y],
        params,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b.finish().expect("valid FC model")
}

/// a [batch, m, k] · b [batch, k, n] (b constant), int8 or f32.
fn bmm_model(r: &mut Rng, batch: usize, m: usize, k: usize, n: usize, dtype: DType) -> Vec<u8> {
    let q = dtype == DType::I8;
    let act = |r: &mut Rng| if q { per_tensor(r) } else { QuantSpec::None };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(tensor(dtype, &[batch, m, k], act(r), None));
    let bdata = if q {
        bytes(r, batch * k * n)
    } else {
        f32_bytes(r, batch * k * n)
    };
    let bq = act(r);
    let w = b.add_tensor(tensor(dtype, &[batch, k, n], bq, Some(bdata)));
    let mut inputs = vec![Some(x), Some(w)];
    if q {
        let rq = r.f(0.0005, 0.02).to_le_bytes().to_vec();
        inputs.push(Some(b.add_tensor(tensor(
            DType::F32,
            &[1],
            QuantSpec::None,
            Some(rq),
        ))));
    }
    let yq = act(r);
    let y = b.add_tensor(tensor(dtype, &[batch, m, n], yq, None));
    b.ops.push(OpSpec {
        kind: OpKind::BatchMatMul,
        inputs,
        outputs: vec![y],
        params: vec![],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b.finish().expect("valid MatMul model")
}

fn input_for(r: &mut Rng, elems: usize, dtype: DType) -> Vec<u8> {
    match dtype {
        DType::I8 => bytes(r, elems),
        _ => f32_bytes(r, elems),
    }
}

/// A random conv geometry: pointwise, small and wide kernels, strides 1–4, batches.
fn random_conv(r: &mut Rng) -> ConvCase {
    let k = match r.range(0, 3) {
        0 => (1, 1),
        1 => (r.range(1, 3), r.range(20, 60)),
        _ => (r.range(1, 7), r.range(1, 7)),
    };
    let group = if r.range(0, 5) == 0 { 2 } else { 1 };
    ConvCase {
        n: r.range(1, 3),
        c: r.range(1, 24) * group,
        h: r.range(1, 30),
        w: r.range(1, 40) + k.1,
        oc: r.range(1, 40) * group,
        k,
        stride: (r.range(1, 4), r.range(1, 4)),
        pad: [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)],
        dil: (r.range(1, 2), r.range(1, 2)),
        group,
    }
}

#[test]
fn int8_convs_are_the_same_bytes_at_every_thread_count() {
    let seed = seed() ^ 0x7412EAD;
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..80 {
        let cs = random_conv(&mut r);
        let Some(model) = conv_model(&mut r, &cs, DType::I8) else {
            continue;
        };
        let input = bytes(&mut r, cs.n * cs.c * cs.h * cs.w);
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: {cs:?}");
        check_threads(&model, &input, true, Some(&reference), &what);
        ran += 1;
    }
    assert!(ran > 40, "only {ran} valid cases (CAIRN_SEED={seed})");
}

#[test]
fn int8_matmuls_are_the_same_bytes_at_every_thread_count() {
    let seed = seed() ^ 0x7412FC;
    let mut r = Rng(seed);
    for case in 0..40 {
        // One or two rows take the GEMV; more the block GEMM.
        let m = [r.range(1, 2), r.range(3, 80)][r.range(0, 1)];
        let (k, n) = (r.range(1, 300), r.range(1, 200));
        let model = fc_model(&mut r, m, k, n, DType::I8);
        let input = bytes(&mut r, m * k);
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: fc m{m} k{k} n{n}");
        check_threads(&model, &input, true, Some(&reference), &what);

        let (batch, m) = (r.range(1, 5), r.range(1, 40));
        let model = bmm_model(&mut r, batch, m, k, n, DType::I8);
        let input = bytes(&mut r, batch * m * k);
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: bmm {batch}x m{m} k{k} n{n}");
        check_threads(&model, &input, true, Some(&reference), &what);
    }
}

/// int8 ConvTranspose and wide-filter convs (blocks of output channels split), Add and Mul of equal shapes and
/// lookup tables (pieces split), in one model each.
#[test]
fn int8_deconv_and_elementwise_are_the_same_bytes_at_every_thread_count() {
    let seed = seed() ^ 0x7412E1;
    let mut r = Rng(seed);
    for case in 0..30 {
        let (c, h, w, oc) = (
            r.range(1, 12),
            r.range(1, 20),
            r.range(1, 30),
            r.range(1, 24),
        );
        let (k, s) = (r.range(1, 4), r.range(1, 3));
        let (oh, ow) = (s * (h - 1) + k, s * (w - 1) + k);
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(tensor(DType::I8, &[1, c, h, w], per_tensor(&mut r), None));
        let wq = bytes(&mut r, c * oc * k * k);
        let scales = (0..oc).map(|_| r.f(0.001, 0.05)).collect();
        let wt = b.add_tensor(tensor(
            DType::I8,
            &[c, oc, k, k],
            QuantSpec::PerAxis {
                axis: 1,
                scales,
                zero_points: vec![0; oc],
            },
            Some(wq.iter().map(|&v| (v as i8).max(-127) as u8).collect()),
        ));
        let bias: Vec<u8> = (0..oc)
            .flat_map(|_| ((r.next() % 20001) as i32 - 10000).to_le_bytes())
            .collect();
        let bias = b.add_tensor(tensor(DType::I32, &[oc], QuantSpec::None, Some(bias)));
        let rq: Vec<u8> = (0..oc)
            .flat_map(|_| r.f(0.0005, 0.02).to_le_bytes())
            .collect();
        let rq = b.add_tensor(tensor(DType::F32, &[oc], QuantSpec::None, Some(rq)));
        let y = b.add_tensor(tensor(
            DType::I8,
            &[1, oc, oh, ow],
            per_tensor(&mut r),
            None,
        ));
        let mut params = vec![0i32; conv::T_LEN];
        params[conv::SH] = s as i32;
        params[conv::SW] = s as i32;
        params[conv::DH] = 1;
        params[conv::DW] = 1;
        params[conv::GROUP] = 1;
        params[conv::T_ACT_LO] = -128;
        params[conv::T_ACT_HI] = 127;
        b.ops.push(OpSpec {
            kind: OpKind::ConvTranspose,
            inputs: vec![Some(x), Some(wt), Some(bias), Some(rq)],
            outputs: vec![y],
            params,
        });
        // y + y, y · y, then a table over the sum and over the product.
        let shape = [1, oc, oh, ow];
        let mut last = Vec::new();
        for kind in [OpKind::Add, OpKind::Mul] {
            let z = b.add_tensor(tensor(DType::I8, &shape, per_tensor(&mut r), None));
            b.ops.push(OpSpec {
                kind,
                inputs: vec![Some(y), Some(y)],
                outputs: vec![z],
                params: vec![-128, 127],
            });
            let table = bytes(&mut r, 256);
            let t = b.add_tensor(tensor(DType::I8, &[1, 256], QuantSpec::None, Some(table)));
            let u = b.add_tensor(tensor(DType::I8, &shape, per_tensor(&mut r), None));
            b.ops.push(OpSpec {
                kind: OpKind::Lut,
                inputs: vec![Some(z), Some(t)],
                outputs: vec![u],
                params: vec![-1],
            });
            last.push(u);
        }
        b.inputs = vec![x];
        b.outputs = vec![y, last[0], last[1]];
        let model = b.finish().expect("valid deconv model");
        let input = bytes(&mut r, c * h * w);
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: c{c} {h}x{w} oc{oc} k{k} s{s}");
        check_threads(&model, &input, true, Some(&reference), &what);

        // A filter wider than the implicit GEMM's 256 taps (`fast_conv_rows`: blocks of
        // output channels split like the ConvTranspose's).
        let kw = r.range(257, 400);
        let cs = ConvCase {
            n: r.range(1, 2),
            c: r.range(1, 4),
            h: r.range(1, 4),
            w: kw + r.range(0, 200),
            oc: r.range(1, 14),
            k: (1, kw),
            stride: (1, 1),
            pad: [0, r.range(0, 3), 0, r.range(0, 3)],
            dil: (1, 1),
            group: 1,
        };
        let model = conv_model(&mut r, &cs, DType::I8).expect("a valid wide conv");
        let input = bytes(&mut r, cs.n * cs.c * cs.h * cs.w);
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: wide {cs:?}");
        check_threads(&model, &input, true, Some(&reference), &what);
    }
}

/// int8 depthwise convs (planes split), and in one model MaxPool and AveragePool (planes), Add of a
/// per-channel constant and Mul of a per-pixel one (broadcast runs), a table per channel
/// (runs), then Softmax (row blocks), LayerNorm (eight-row blocks) and Quantize (pieces)
/// in models of their own: every op split however small.
#[test]
fn int8_depthwise_pools_and_rows_are_the_same_bytes_at_every_thread_count() {
    let seed = seed() ^ 0x7412D3;
    let mut r = Rng(seed);
    for case in 0..30 {
        let k = [1, 3, 5, 7][r.range(0, 3)];
        let c = r.range(1, 40);
        let cs = ConvCase {
            n: r.range(1, 3),
            c,
            h: r.range(k, 30),
            w: r.range(k, 40),
            oc: c,
            k: (k, k),
            stride: (r.range(1, 2), r.range(1, 2)),
            pad: [k / 2; 4],
            dil: (1, 1),
            group: c,
        };
        let model = conv_model(&mut r, &cs, DType::I8).expect("a valid depthwise conv");
        let input = bytes(&mut r, cs.n * cs.c * cs.h * cs.w);
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: depthwise {cs:?}");
        check_threads(&model, &input, true, Some(&reference), &what);

        let (model, elems) = planes_model(&mut r);
        let input = bytes(&mut r, elems);
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: pool, broadcasts, tables");
        check_threads(&model, &input, true, Some(&reference), &what);

        let dims = [r.range(1, 40), r.range(1, 300), r.range(1, 3)];
        let model = one_op_model(&mut r, OpKind::Softmax, &dims);
        let input = bytes(&mut r, dims.iter().product());
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: softmax {dims:?}");
        check_threads(&model, &input, true, Some(&reference), &what);

        let dims = [r.range(1, 70), [r.range(1, 600), 384][r.range(0, 1)]];
        let model = one_op_model(&mut r, OpKind::LayerNorm, &dims);
        let input = bytes(&mut r, dims.iter().product());
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: layer norm {dims:?}");
        check_threads(&model, &input, true, Some(&reference), &what);

        let dims = [
            r.range(1, 2),
            r.range(1, 2000),
            r.range(1, 14),
            r.range(1, 14),
        ];
        let model = one_op_model(&mut r, OpKind::GlobalAveragePool, &dims);
        let input = bytes(&mut r, dims.iter().product());
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: global average pool {dims:?}");
        check_threads(&model, &input, true, Some(&reference), &what);

        let dims = [1, r.range(1, 5000)];
        let model = one_op_model(&mut r, OpKind::Quantize, &dims);
        let input = f32_bytes(&mut r, dims[1]);
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: quantize {dims:?}");
        check_threads(&model, &input, true, Some(&reference), &what);
    }
}

/// Maps whose planes are large enough for a conv to split them by pixels
/// (`par::pixel_parts`): the f32 pointwise conv split so, the depthwise one, and a chain
/// of element-wise ops (x (f32) → Quantize → Lut → Add(lut, q) → Dequantize), every thread
/// count the same bytes (the int8 chain also the reference's).
#[test]
fn large_planes_are_the_same_bytes_at_every_thread_count() {
    let seed = seed() ^ 0x7412A9;
    let mut r = Rng(seed);
    for case in 0..6 {
        let (c, h, w) = (r.range(1, 12), r.range(24, 48), r.range(40, 70));
        let dims = [1, c, h, w];
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(tensor(DType::F32, &dims, QuantSpec::None, None));
        let q = b.add_tensor(tensor(DType::I8, &dims, per_tensor(&mut r), None));
        let table: Vec<u8> = (0..256).map(|_| r.i8() as u8).collect();
        let t = b.add_tensor(tensor(DType::I8, &[256], QuantSpec::None, Some(table)));
        let l = b.add_tensor(tensor(DType::I8, &dims, per_tensor(&mut r), None));
        let a = b.add_tensor(tensor(DType::I8, &dims, per_tensor(&mut r), None));
        let y = b.add_tensor(tensor(DType::F32, &dims, QuantSpec::None, None));
        let op = |kind, inputs: Vec<Option<u16>>, out, params| OpSpec {
            kind,
            inputs,
            outputs: vec![out],
            params,
        };
        b.ops.push(op(OpKind::Quantize, vec![Some(x)], q, vec![]));
        b.ops
            .push(op(OpKind::Lut, vec![Some(q), Some(t)], l, vec![-1]));
        b.ops
            .push(op(OpKind::Add, vec![Some(l), Some(q)], a, vec![-128, 127]));
        b.ops.push(op(OpKind::Dequantize, vec![Some(a)], y, vec![]));
        b.inputs = vec![x];
        b.outputs = vec![y];
        let model = b.finish().expect("a valid element-wise chain");
        let input = f32_bytes(&mut r, dims.iter().product());
        let reference = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: element-wise chain over {dims:?}");
        check_threads(&model, &input, true, Some(&reference), &what);
        check_threads(&model, &input, false, Some(&reference), &what);

        for group in [1, 0] {
            let oc = if group == 1 { r.range(1, 40) } else { c };
            let k = if group == 1 { 1 } else { [3, 5][r.range(0, 1)] };
            let cs = ConvCase {
                n: 1,
                c,
                h,
                w,
                oc,
                k: (k, k),
                stride: (1, r.range(1, 2)),
                pad: [k / 2; 4],
                dil: (1, 1),
                group: if group == 1 { 1 } else { c },
            };
            let Some(model) = conv_model(&mut r, &cs, DType::F32) else {
                continue;
            };
            let input = input_for(&mut r, c * h * w, DType::F32);
            let what = format!("CAIRN_SEED={seed} case {case}: f32 {cs:?}");
            check_threads(&model, &input, true, None, &what);
            check_threads(&model, &input, false, None, &what);
            check_cached(&model, &input, &what);
        }
    }
}

/// x [n, c, h, w] → MaxPool, AveragePool, a 1×2 MaxPool, x + b[c], x · b[h, w],
/// per-channel table of x: outputs the six. Returns the model and the input's elements.
fn planes_model(r: &mut Rng) -> (Vec<u8>, usize) {
    let (n, c, h, w) = (
        r.range(1, 2),
        r.range(1, 20),
        r.range(4, 30),
        r.range(8, 40),
    );
    let (k, s) = (r.range(1, 5), r.range(1, 2));
    let p = r.range(0, k - 1).min(k / 2);
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let shape = [n, c, h, w];
    let mut b = ModelBuilder::default();
    let xq = per_tensor(r);
    let x = b.add_tensor(tensor(DType::I8, &shape, xq.clone(), None));
    // MaxPool keeps its input's quantization.
    let pooled = b.add_tensor(tensor(DType::I8, &[n, c, oh, ow], xq.clone(), None));
    b.ops.push(OpSpec {
        kind: OpKind::MaxPool,
        inputs: vec![Some(x)],
        outputs: vec![pooled],
        params: [k, k, s, s, p, p, p, p, 1, 1].map(|v| v as i32).to_vec(),
    });
    // AveragePool of the same window, pads counted or not, to a scale of its own.
    let averaged = b.add_tensor(tensor(DType::I8, &[n, c, oh, ow], per_tensor(r), None));
    b.ops.push(OpSpec {
        kind: OpKind::AveragePool,
        inputs: vec![Some(x)],
        outputs: vec![averaged],
        params: [k, k, s, s, p, p, p, p, r.range(0, 1)]
            .map(|v| v as i32)
            .to_vec(),
    });
    // A 1×2 window with stride (1, 2): the whole tensor as one row when w is even.
    let halved = b.add_tensor(tensor(DType::I8, &[n, c, h, w / 2], xq, None));
    b.ops.push(OpSpec {
        kind: OpKind::MaxPool,
        inputs: vec![Some(x)],
        outputs: vec![halved],
        params: vec![1, 2, 1, 2, 0, 0, 0, 0, 1, 1],
    });
    let mut outs = vec![pooled, averaged, halved];
    for (kind, dims) in [(OpKind::Add, [1, c, 1, 1]), (OpKind::Mul, [1, 1, h, w])] {
        let elems = dims.iter().product();
        let bt = b.add_tensor(tensor(
            DType::I8,
            &dims,
            per_tensor(r),
            Some(bytes(r, elems)),
        ));
        let z = b.add_tensor(tensor(DType::I8, &shape, per_tensor(r), None));
        b.ops.push(OpSpec {
            kind,
            inputs: vec![Some(x), Some(bt)],
            outputs: vec![z],
            params: vec![-128, 127],
        });
        outs.push(z);
    }
    let tables = b.add_tensor(tensor(
        DType::I8,
        &[c, 256],
        QuantSpec::None,
        Some(bytes(r, c * 256)),
    ));
    let t = b.add_tensor(tensor(DType::I8, &shape, per_tensor(r), None));
    b.ops.push(OpSpec {
        kind: OpKind::Lut,
        inputs: vec![Some(x), Some(tables)],
        outputs: vec![t],
        params: vec![1],
    });
    outs.push(t);
    b.inputs = vec![x];
    b.outputs = outs;
    (b.finish().expect("valid planes model"), n * c * h * w)
}

/// One Softmax (over the middle of three dims), LayerNorm (over the last of two) or
/// Quantize (f32 in) of shape `dims`.
fn one_op_model(r: &mut Rng, kind: OpKind, dims: &[usize]) -> Vec<u8> {
    let mut b = ModelBuilder::default();
    let in_dtype = if kind == OpKind::Quantize {
        DType::F32
    } else {
        DType::I8
    };
    let in_quant = if kind == OpKind::Quantize {
        QuantSpec::None
    } else {
        per_tensor(r)
    };
    let x = b.add_tensor(tensor(in_dtype, dims, in_quant, None));
    let y_quant = match kind {
        OpKind::Softmax => QuantSpec::PerTensor {
            scale: 1.0 / 256.0,
            zero_point: -128,
        },
        _ => per_tensor(r),
    };
    // GlobalAveragePool keeps the first two axes, each plane to one value.
    let pooled = [dims[0], dims.get(1).copied().unwrap_or(1), 1, 1];
    let y_dims = if kind == OpKind::GlobalAveragePool {
        &pooled[..]
    } else {
        dims
    };
    let y = b.add_tensor(tensor(DType::I8, y_dims, y_quant, None));
    let (inputs, params) = match kind {
        OpKind::Softmax => (
            vec![Some(x)],
            dims.iter().map(|&d| d as i32).chain([0]).collect(),
        ),
        OpKind::LayerNorm => {
            let inner = dims[dims.len() - 1];
            let gamma = (0..inner)
                .flat_map(|_| r.f(-2.0, 2.0).to_le_bytes())
                .collect();
            let beta = (0..inner)
                .flat_map(|_| r.f(-1.0, 1.0).to_le_bytes())
                .collect();
            let g = b.add_tensor(tensor(DType::F32, &[inner], QuantSpec::None, Some(gamma)));
            let bt = b.add_tensor(tensor(DType::F32, &[inner], QuantSpec::None, Some(beta)));
            let eps = 1e-5f32.to_bits() as i32;
            (
                vec![Some(x), Some(g), Some(bt)],
                vec![dims.len() as i32 - 1, eps],
            )
        }
        _ => (vec![Some(x)], vec![]),
    };
    b.ops.push(OpSpec {
        kind,
        inputs,
        outputs: vec![y],
        params,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b.finish().expect("valid one-op model")
}

/// The pool itself: every part runs once, a part's panic resumes on the caller and leaves
/// the pool usable, and two threads sharing one pool (the second runs its parts alone)
/// get the bytes of one thread.
#[test]
fn pool_runs_every_part_once_and_survives_panics_and_sharing() {
    use cairn_kernels::par;
    use std::sync::atomic::{AtomicUsize, Ordering};
    for threads in THREADS {
        let pool = Pool::new(threads).expect("a thread pool");
        for parts in [1, 2, 3, 7, 64] {
            let counts: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            with_pool(&pool, || {
                par::run(parts, |i| {
                    counts[i].fetch_add(1, Ordering::SeqCst);
                })
            });
            let ran: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
            assert_eq!(ran, vec![1; parts], "{threads} threads, {parts} parts");
        }
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_pool(&pool, || {
                par::run(4, |i| {
                    if i == 3 {
                        panic!("part 3 fails");
                    }
                })
            })
        }));
        assert!(panicked.is_err(), "{threads} threads: the panic resumes");
        let done = AtomicUsize::new(0);
        with_pool(&pool, || {
            par::run(4, |_| {
                done.fetch_add(1, Ordering::SeqCst);
            })
        });
        assert_eq!(
            done.load(Ordering::SeqCst),
            4,
            "{threads} threads after a panic"
        );
    }
    let seed = seed() ^ 0x7412B0;
    let mut r = Rng(seed);
    let cs = ConvCase {
        n: 1,
        c: 16,
        h: 40,
        w: 40,
        oc: 32,
        k: (3, 3),
        stride: (1, 1),
        pad: [1; 4],
        dil: (1, 1),
        group: 1,
    };
    let model = conv_model(&mut r, &cs, DType::I8).expect("a valid conv");
    let input = bytes(&mut r, cs.c * cs.h * cs.w);
    let one = run_threads(&model, &input, 1, true);
    let pool = Pool::new(2).expect("a thread pool").with_min_part_work(1);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    (0..20)
                        .map(|_| with_pool(&pool, || run(&model, CpuBackend, &input)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in runs {
            for out in h.join().expect("a sharing thread") {
                assert_eq!(out, one, "CAIRN_SEED={seed}: a shared pool");
            }
        }
    });
}

/// Parts are dealt to the threads in shares, and a thread done with its own share takes
/// the rest of another's: here the first part any thread starts blocks until every other
/// part has run, which only finishes if the other threads take the blocked thread's
/// remaining parts (without stealing it would wait for ever; a 10 s limit fails it).
#[test]
fn pool_threads_take_parts_of_a_blocked_thread() {
    use cairn_kernels::par;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    for threads in [2, 3, 4] {
        let pool = Pool::new(threads).expect("a thread pool");
        for parts in [2, 4, 7, 16] {
            let first = AtomicBool::new(true);
            let done = AtomicUsize::new(0);
            let stuck = AtomicBool::new(false);
            with_pool(&pool, || {
                par::run(parts, |_| {
                    if first.swap(false, Ordering::SeqCst) {
                        let since = Instant::now();
                        while done.load(Ordering::SeqCst) < parts - 1 {
                            if since.elapsed() > Duration::from_secs(10) {
                                stuck.store(true, Ordering::SeqCst);
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            });
            assert!(
                !stuck.load(Ordering::SeqCst),
                "{threads} threads, {parts} parts: the blocked thread's parts were not taken"
            );
            assert_eq!(done.load(Ordering::SeqCst), parts);
        }
    }
}

/// f32: the fast paths sum in their own order, so the truth here is one thread's bytes.
#[test]
fn f32_ops_are_the_same_bytes_at_every_thread_count() {
    let seed = seed() ^ 0x7412F32;
    let mut r = Rng(seed);
    for case in 0..40 {
        let cs = random_conv(&mut r);
        if let Some(model) = conv_model(&mut r, &cs, DType::F32) {
            let input = input_for(&mut r, cs.n * cs.c * cs.h * cs.w, DType::F32);
            let what = format!("CAIRN_SEED={seed} case {case}: f32 {cs:?}");
            check_threads(&model, &input, true, None, &what);
            check_cached(&model, &input, &what);
        }
        let (m, k, n) = (r.range(1, 80), r.range(1, 300), r.range(1, 200));
        let model = fc_model(&mut r, m, k, n, DType::F32);
        let input = input_for(&mut r, m * k, DType::F32);
        let what = format!("CAIRN_SEED={seed} case {case}: f32 fc m{m} k{k} n{n}");
        check_threads(&model, &input, true, None, &what);
        let batch = r.range(1, 4);
        let model = bmm_model(&mut r, batch, m, k, n, DType::F32);
        let input = input_for(&mut r, batch * m * k, DType::F32);
        let what = format!("CAIRN_SEED={seed} case {case}: f32 bmm {batch}x m{m} k{k} n{n}");
        check_threads(&model, &input, true, None, &what);
    }
}

/// `par::parts_over`: as many parts as `parts_for` allows where the units fill them evenly,
/// fewer where fewer finish sooner (6 channel blocks on 2 threads: 2 parts of 3, not 4
/// parts of 1, 2, 1, 2, whose last part lands on a thread already done with 2).
#[test]
fn parts_over_prefers_even_parts() {
    use cairn_kernels::par::{parts_and_span, parts_for, parts_over};
    let big = 1u64 << 32;
    for (threads, units, want) in [
        (1, 100, 1),
        (2, 100, 4),
        (2, 6, 2),
        (2, 3, 3),
        (2, 1, 1),
        (2, 8, 4),
        (4, 10, 7),
    ] {
        let pool = Pool::new(threads).expect("a thread pool");
        let got = with_pool(&pool, || parts_over(big, units));
        assert_eq!(got, want, "{threads} threads, {units} units");
        // Never more than parts_for gives, nor than the units.
        let most = with_pool(&pool, || parts_for(big));
        assert!(got <= most.min(units).max(1));
    }
    // The span: the busiest thread's units. A 64-row GEMM's 11 row blocks leave one of
    // two threads 6; its 24 column panels leave each 12 (half), which the GEMM takes.
    let pool = Pool::new(2).expect("a thread pool");
    let (rows, cols) = with_pool(&pool, || (parts_and_span(big, 11), parts_and_span(big, 24)));
    assert_eq!(rows.1, 6, "{rows:?}");
    assert_eq!(cols.1, 12, "{cols:?}");
    let one = Pool::new(1).expect("a thread pool");
    assert_eq!(with_pool(&one, || parts_and_span(big, 11)), (1, 11));
}

/// f32 Unary functions split into pieces of the map, and f32 convs that split by units
/// other than output rows: one-row maps of few output channels (1-D heads, FIR filters,
/// split by column tiles), one output channel of patches too large for the im2col tile
/// (split by pixel tiles), and pointwise convs of 64 channels (few channel blocks, whose
/// parts `par::parts_over` balances): the bytes of one thread, and f32 Unary the
/// reference's where the function is exact.
#[test]
fn f32_unary_and_one_row_convs_are_the_same_bytes_at_every_thread_count() {
    use cairn_core::op::UnaryFn;
    let seed = seed() ^ 0x7412F1;
    let mut r = Rng(seed);
    let dims = [1usize, 16, 37, 41];
    let n: usize = dims.iter().product();
    for f in [
        UnaryFn::Relu,
        UnaryFn::HardSwish,
        UnaryFn::Sigmoid,
        UnaryFn::Gelu,
    ] {
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(tensor(DType::F32, &dims, QuantSpec::None, None));
        let y = b.add_tensor(tensor(DType::F32, &dims, QuantSpec::None, None));
        b.ops.push(OpSpec {
            kind: OpKind::Unary,
            inputs: vec![Some(x)],
            outputs: vec![y],
            params: vec![f as i32, 0, 0],
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        let model = b.finish().expect("a valid Unary model");
        let input = f32_bytes(&mut r, n);
        let exact = matches!(f, UnaryFn::Relu | UnaryFn::HardSwish);
        let reference = exact.then(|| run(&model, RefBackend, &input));
        let what = format!("CAIRN_SEED={seed} f32 {f:?} over {dims:?}");
        check_threads(&model, &input, true, reference.as_deref(), &what);
        check_threads(&model, &input, false, reference.as_deref(), &what);
    }
    let conv = |c, w, oc, kw: usize, s: usize, h: usize, kh: usize| ConvCase {
        n: 1,
        c,
        h,
        w,
        oc,
        k: (kh, kw),
        stride: (1, s),
        pad: [0; 4],
        dil: (1, 1),
        group: 1,
    };
    let convs = [
        // One filter of 256 taps over a long row (a constant-Q front end's bin).
        conv(1, 6000, 1, 256, 1, 1, 1),
        // A stride-2 FIR into 4 channels, and 36 channels (the GEMM paths) on one row.
        conv(2, 4000, 4, 64, 2, 1, 1),
        conv(8, 700, 36, 3, 1, 1, 1),
        // Two rows of a narrow head: bands and tiles both.
        conv(3, 1500, 1, 9, 1, 4, 3),
        // Pointwise, 64 → 64 channels.
        conv(64, 60, 64, 1, 1, 40, 1),
        // One output channel of a 3×3 (stride 2 across) over 1024 channels: patches past
        // the im2col tile (`bigk.rs`), its pixels split by tiles.
        conv(1024, 40, 1, 3, 2, 6, 3),
    ];
    for (case, cs) in convs.iter().enumerate() {
        let model = conv_model(&mut r, cs, DType::F32).expect("a valid layer");
        let input = input_for(&mut r, cs.n * cs.c * cs.h * cs.w, DType::F32);
        let what = format!("CAIRN_SEED={seed} f32 layer {case}: {cs:?}");
        check_threads(&model, &input, false, None, &what);
        check_threads(&model, &input, true, None, &what);
    }
}

/// Resize (nearest int8 and f32, bilinear int8), split by planes: the bytes of one thread
/// and (int8) of the reference.
#[test]
fn resize_is_the_same_bytes_at_every_thread_count() {
    let seed = seed() ^ 0x7412E5;
    let mut r = Rng(seed);
    for case in 0..30 {
        let (n, c) = (r.range(1, 3), r.range(1, 9));
        let (h, w) = (r.range(1, 12), r.range(1, 20));
        let (oh, ow) = (r.range(1, 3 * h), r.range(1, 3 * w));
        let mode = r.range(0, 1) as i32;
        let int8 = mode == 1 || r.next().is_multiple_of(2);
        let (dt, q) = if int8 {
            (DType::I8, per_tensor(&mut r))
        } else {
            (DType::F32, QuantSpec::None)
        };
        // Bilinear reads its own output params; nearest copies the input's.
        let qy = if mode == 1 {
            per_tensor(&mut r)
        } else {
            q.clone()
        };
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(tensor(dt, &[n, c, h, w], q, None));
        let y = b.add_tensor(tensor(dt, &[n, c, oh, ow], qy, None));
        let (sh, sw) = (oh as f32 / h as f32, ow as f32 / w as f32);
        b.ops.push(OpSpec {
            kind: OpKind::Resize,
            inputs: vec![Some(x)],
            outputs: vec![y],
            params: vec![
                mode,
                r.range(0, 3) as i32,
                r.range(0, 3) as i32,
                sh.to_bits() as i32,
                sw.to_bits() as i32,
            ],
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        let model = b.finish().expect("valid Resize model");
        let input = input_for(&mut r, n * c * h * w, dt);
        let reference = int8.then(|| run(&model, RefBackend, &input));
        let what = format!(
            "CAIRN_SEED={seed} case {case}: resize {n}x{c}x{h}x{w} -> {oh}x{ow} mode {mode} {dt:?}"
        );
        check_threads(&model, &input, true, reference.as_deref(), &what);
    }
}

/// Layer shapes of the corpus models (text detector stem and body, a layout detector's
/// neck, a transformer's projections, an audio model's wide filters), at the default
/// split threshold, int8 against the reference and f32 against one thread.
#[test]
fn corpus_layer_shapes_are_the_same_bytes_at_every_thread_count() {
    let seed = seed() ^ 0x7412C0;
    let mut r = Rng(seed);
    let conv = |n, c, h, w, oc, k: (usize, usize), s: usize, p: usize| ConvCase {
        n,
        c,
        h,
        w,
        oc,
        k,
        stride: (s, s),
        pad: [p; 4],
        dil: (1, 1),
        group: 1,
    };
    let convs = [
        conv(1, 3, 160, 160, 16, (3, 3), 2, 1),
        conv(1, 32, 40, 40, 32, (3, 3), 1, 1),
        conv(1, 96, 40, 40, 24, (1, 1), 1, 0),
        conv(1, 128, 10, 10, 256, (3, 3), 1, 1),
        conv(1, 256, 5, 5, 512, (1, 1), 1, 0),
        conv(1, 8, 8, 120, 16, (3, 39), 1, 1),
        conv(1, 512, 2, 2, 1024, (1, 1), 1, 0),
    ];
    for (case, cs) in convs.iter().enumerate() {
        for dtype in [DType::I8, DType::F32] {
            let model = conv_model(&mut r, cs, dtype).expect("a valid layer");
            let input = input_for(&mut r, cs.n * cs.c * cs.h * cs.w, dtype);
            let reference = (dtype == DType::I8).then(|| run(&model, RefBackend, &input));
            let what = format!("CAIRN_SEED={seed} layer {case} {dtype:?}: {cs:?}");
            check_threads(&model, &input, false, reference.as_deref(), &what);
        }
    }
    for (m, k, n) in [
        (128, 384, 1536),
        (128, 1536, 384),
        (1, 1024, 1000),
        (50, 256, 256),
    ] {
        for dtype in [DType::I8, DType::F32] {
            let model = fc_model(&mut r, m, k, n, dtype);
            let input = input_for(&mut r, m * k, dtype);
            let reference = (dtype == DType::I8).then(|| run(&model, RefBackend, &input));
            let what = format!("CAIRN_SEED={seed} fc {dtype:?} m{m} k{k} n{n}");
            check_threads(&model, &input, false, reference.as_deref(), &what);
        }
    }
    let model = bmm_model(&mut r, 12, 128, 32, 128, DType::I8);
    let input = bytes(&mut r, 12 * 128 * 32);
    let reference = run(&model, RefBackend, &input);
    let what = format!("CAIRN_SEED={seed} attention bmm 12x128x32x128");
    check_threads(&model, &input, false, Some(&reference), &what);
}

/// The bundled models (`targets/mcu/assets`: the text-line classifier CNN and the digits
/// MLP) run through `HostModel` at 1, 2 and 4 threads, with the default split threshold
/// and with every op split: the same outputs.
#[test]
fn host_model_outputs_are_the_same_at_every_thread_count() {
    use cairn_kernels::host::HostModel;
    let seed = seed() ^ 0x7412A0;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../targets/mcu/assets");
    for name in ["cls.cairn", "digits.cairn"] {
        let path = format!("{root}/{name}");
        let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let bytes = AlignedBytes::from_slice(&file);
        let mut outs = Vec::new();
        for (threads, every) in [(1, false), (2, false), (4, false), (2, true), (4, true)] {
            let mut m = HostModel::new(bytes.as_slice()).expect("a bundled model loads");
            if every {
                m.set_pool(Pool::new(threads).unwrap().with_min_part_work(1));
            } else {
                m.set_threads(threads).expect("a thread pool");
            }
            assert_eq!(m.threads(), threads);
            let mut r = Rng(seed);
            let inputs: Vec<Vec<f32>> = m
                .inputs()
                .iter()
                .map(|io| {
                    let n: usize = io.shape.iter().product();
                    (0..n).map(|_| r.f(-1.0, 1.0)).collect()
                })
                .collect();
            let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
            // Twice: the second run reads the packed-weight cache.
            let first = m.run(&refs).expect("runs");
            let second = m.run(&refs).expect("runs");
            let what =
                format!("CAIRN_SEED={seed} {name} at {threads} threads (all split: {every})");
            assert_eq!(first, second, "{what}");
            outs.push((what, first));
        }
        for (what, out) in &outs[1..] {
            assert_eq!(out, &outs[0].1, "{what} vs 1 thread");
        }
    }
}

/// Not a check: prints the time of a few corpus-sized layers at 1, 2 and 4 threads
/// (`cargo test -p cairn-kernels --features std --release --test threads -- --ignored
/// --nocapture layer_times`).
#[test]
#[ignore]
fn layer_times() {
    use cairn_core::emit::AlignedBytes;
    use cairn_core::{Interpreter, Model};
    let mut r = Rng(seed());
    let conv = |c, h, w, oc, k: (usize, usize), s: usize, p: usize| ConvCase {
        n: 1,
        c,
        h,
        w,
        oc,
        k,
        stride: (s, s),
        pad: [p; 4],
        dil: (1, 1),
        group: 1,
    };
    // int8 layers of the corpus, then PicoDet's f32 pointwise convs.
    for (cs, dtype) in [
        (conv(48, 160, 160, 24, (1, 1), 1, 0), DType::I8),
        (conv(24, 160, 160, 24, (3, 3), 1, 1), DType::I8),
        (conv(96, 40, 40, 96, (3, 3), 1, 1), DType::I8),
        (conv(128, 100, 76, 128, (1, 1), 1, 0), DType::F32),
        (conv(128, 100, 76, 42, (1, 1), 1, 0), DType::F32),
        (conv(32, 200, 152, 64, (1, 1), 1, 0), DType::F32),
        // Basic Pitch's 3×39 conv over 172×264 (8 → 8 channels).
        (
            ConvCase {
                pad: [1, 19, 1, 19],
                ..conv(8, 172, 264, 8, (3, 39), 1, 0)
            },
            DType::I8,
        ),
    ] {
        let model = conv_model(&mut r, &cs, dtype).unwrap();
        let input = input_for(&mut r, cs.c * cs.h * cs.w, dtype);
        let ab = AlignedBytes::from_slice(&model);
        let m = Model::parse(ab.as_slice()).unwrap();
        let mut arena = vec![0u8; m.arena_bytes() + 16];
        let mut it = Interpreter::new(m, CpuBackend, &mut arena).unwrap();
        it.input_bytes_mut(0).unwrap().copy_from_slice(&input);
        for t in [1, 2, 4] {
            let pool = Pool::new(t).unwrap();
            let mut times = with_pool(&pool, || {
                (0..20)
                    .map(|_| {
                        let t0 = std::time::Instant::now();
                        it.invoke().unwrap();
                        t0.elapsed().as_secs_f64() * 1e3
                    })
                    .collect::<Vec<f64>>()
            });
            times.sort_by(f64::total_cmp);
            let (best, med) = (times[0], times[times.len() / 2]);
            println!("{dtype:?} {cs:?} threads {t}: best {best:.3} ms, median {med:.3} ms");
        }
    }
}

//! The f32 fast paths of `fast_f32/` added for models that stay f32 — ConvTranspose (GEMM +
//! col2im), one-group Conv with patches over 1024 elements or with one to eight output
//! channels, FullyConnected with several input rows, BatchMatMul, Unary functions,
//! Add/Sub/Mul/Div/PRelu with broadcast, Softmax, LayerNorm, MaxPool, GlobalAveragePool /
//! ReduceMean —
//! against the reference kernels on random shapes and data (seeded: `CAIRN_SEED`, printed
//! on failure). Each test also checks, through `cairn_kernels::f32_fast_ops`, that the fast
//! path ran (where the host has it: x86_64 with AVX2+FMA for the vector element-wise paths,
//! x86_64 or aarch64 for the others).
//!
//! Tolerances:
//! - GEMM paths (sums in another order, fused multiply-adds):
//!   `|fast − ref| ≤ 1e-5 · Σ|terms| + 1e-6`, `Σ|terms|` from the reference run on `|x|`,
//!   `|w|`, `|bias|` without the clamp (as `tests/exact_f32.rs`).
//! - Binary ops and the exact Unary functions: equal values (NaN where the reference has
//!   NaN); MaxPool and the means: the same bits.
//! - Approximated Unary functions (Exp, Log, Sigmoid, Silu, Tanh, Erf, Gelu, GeluTanh, Mish,
//!   Softplus, Elu, Pow 3):
//!   `|fast − ref| ≤ 4e-6 · |ref| + 3e-7 · max(1, |x|)`.
//! - Softmax: `|fast − ref| ≤ (8e-6 + n · 2.4e-7) · |ref| + 1e-9` over a row of `n` (the
//!   exp bound twice, and the two sums' rounding in different orders).
//! - LayerNorm, over a row of `n` (the mean's and the variance's sums in another order;
//!   mean, inv in f64 here):
//!   `|fast − ref| ≤ (1e-5 + n·2.4e-7)·|γ|·(|x − mean| + mean|x|)·inv + 1e-6·|β| + 1e-7`.

use cairn_core::emit::{AlignedBytes, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::op::{conv, BinaryFn, UnaryFn};
use cairn_core::{Backend, DType, Interpreter, Model, OpKind, Shape};
use cairn_kernels::{f32_fast_ops, CpuBackend, RefBackend};

#[allow(dead_code)]
mod common;
use common::{seed, Rng};

const REL: f32 = 1e-5;
const ABS: f32 = 1e-6;
const FN_REL: f32 = 4e-6;
const FN_ABS: f32 = 3e-7;

/// Whether the GEMM-based paths exist on this host.
fn gemm_host() -> bool {
    cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
}

/// Whether the vector element-wise paths exist on this host.
fn vector_host() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn t(dims: &[usize], data: Option<&[f32]>) -> TensorSpec {
    TensorSpec {
        dtype: DType::F32,
        shape: Shape::new(dims).unwrap(),
        quant: QuantSpec::None,
        data: data.map(|d| d.iter().flat_map(|v| v.to_le_bytes()).collect()),
        layout: Default::default(),
    }
}

/// One op: activation inputs (shapes), then constant inputs (shape, data), its params and
/// output shape; `chain` applies a second op of the same kind and params to the output
/// (Unary: it may run in place).
struct Op {
    kind: OpKind,
    acts: Vec<Vec<usize>>,
    consts: Vec<(Vec<usize>, Vec<f32>)>,
    params: Vec<i32>,
    y: Vec<usize>,
    chain: bool,
}

impl Op {
    fn bytes(&self) -> Vec<u8> {
        let mut b = ModelBuilder::default();
        let acts: Vec<_> = self.acts.iter().map(|d| b.add_tensor(t(d, None))).collect();
        let consts: Vec<_> = self
            .consts
            .iter()
            .map(|(d, v)| b.add_tensor(t(d, Some(v))))
            .collect();
        let y = b.add_tensor(t(&self.y, None));
        let inputs = acts.iter().chain(&consts).map(|&i| Some(i)).collect();
        b.ops.push(OpSpec {
            kind: self.kind,
            inputs,
            outputs: vec![y],
            params: self.params.clone(),
        });
        let mut last = y;
        if self.chain {
            let z = b.add_tensor(t(&self.y, None));
            b.ops.push(OpSpec {
                kind: self.kind,
                inputs: vec![Some(y)],
                outputs: vec![z],
                params: self.params.clone(),
            });
            last = z;
        }
        b.inputs = acts;
        b.outputs = vec![last];
        b.finish().expect("valid model")
    }
}

fn run<B: Backend>(bytes: &[u8], backend: B, inputs: &[Vec<f32>]) -> Vec<f32> {
    let ab = AlignedBytes::from_slice(bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it = Interpreter::new(m, backend, &mut arena).unwrap();
    for (k, v) in inputs.iter().enumerate() {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        it.input_bytes_mut(k).unwrap().copy_from_slice(&bytes);
    }
    it.invoke().unwrap();
    it.output(0)
        .unwrap()
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Run on both backends: (reference, fast); asserts the fast path ran when `expect`.
fn both(
    op: &Op,
    inputs: &[Vec<f32>],
    expect: bool,
    what: &dyn Fn() -> String,
) -> (Vec<f32>, Vec<f32>) {
    let bytes = op.bytes();
    let reference = run(&bytes, RefBackend, inputs);
    let before = f32_fast_ops();
    let fast = run(&bytes, CpuBackend, inputs);
    if expect {
        assert!(f32_fast_ops() > before, "fast path not taken: {}", what());
    }
    assert_eq!(reference.len(), fast.len());
    (reference, fast)
}

/// GEMM-style check: `terms` is the reference on absolute values without the clamp.
fn within_terms(reference: &[f32], fast: &[f32], terms: &[f32], what: &dyn Fn() -> String) {
    for (i, ((a, b), t)) in reference.iter().zip(fast).zip(terms).enumerate() {
        let bound = REL * t + ABS;
        assert!(
            (a - b).abs() <= bound,
            "output {i}: reference {a}, fast {b}, bound {bound}: {}",
            what()
        );
    }
}

/// Run the conv `make(weights, bias, clamp)` on both backends (asserting the fast path
/// ran when `expect`) and hold it to the GEMM tolerance, `Σ|terms|` from the same conv on
/// `|x|`, `|w|`, `|bias|` without the clamp.
fn conv_within_terms(
    make: impl Fn(Vec<f32>, Option<Vec<f32>>, (f32, f32)) -> Op,
    weights: &[f32],
    bias: Option<&[f32]>,
    clamp: (f32, f32),
    x: &[f32],
    expect: bool,
    what: &dyn Fn() -> String,
) {
    let op = make(weights.to_vec(), bias.map(<[f32]>::to_vec), clamp);
    let (reference, fast) = both(&op, &[x.to_vec()], expect, what);
    let inf = (f32::NEG_INFINITY, f32::INFINITY);
    let terms_op = make(abs(weights), bias.map(abs), inf);
    let terms = run(&terms_op.bytes(), RefBackend, &[abs(x)]);
    within_terms(&reference, &fast, &terms, what);
}

fn same(reference: &[f32], fast: &[f32], what: &dyn Fn() -> String) {
    for (i, (a, b)) in reference.iter().zip(fast).enumerate() {
        assert!(
            a == b || (a.is_nan() && b.is_nan()),
            "output {i}: reference {a}, fast {b}: {}",
            what()
        );
    }
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn rand(r: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.f(-1.0, 1.0)).collect()
}

fn clamp(r: &mut Rng) -> (f32, f32) {
    match r.range(0, 3) {
        0 => (f32::NEG_INFINITY, f32::INFINITY),
        1 => (0.0, f32::INFINITY),
        2 => (0.0, 6.0),
        _ => {
            let lo = r.f(-2.0, 0.5);
            (lo, lo + r.f(0.0, 3.0))
        }
    }
}

fn bits(v: f32) -> i32 {
    v.to_bits() as i32
}

#[test]
fn conv_transpose_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xDEC0);
    let mut ran = 0;
    for case in 0..150 {
        let group = if case % 5 == 4 { r.range(2, 3) } else { 1 };
        let (c, oc) = (group * r.range(1, 12), group * r.range(1, 10));
        let (h, w) = if case % 7 == 0 {
            (r.range(20, 40), r.range(20, 40))
        } else {
            (r.range(1, 12), r.range(1, 14))
        };
        let k = (r.range(1, 4), r.range(1, 4));
        let s = (r.range(1, 3), r.range(1, 3));
        let d = (r.range(1, 2), r.range(1, 2));
        let pad = [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)];
        let op_ = (r.range(0, s.0 - 1), r.range(0, s.1 - 1));
        let full =
            |i: usize, s: usize, op: usize, k: usize, d: usize| s * (i - 1) + op + (k - 1) * d + 1;
        let (fh, fw) = (full(h, s.0, op_.0, k.0, d.0), full(w, s.1, op_.1, k.1, d.1));
        let (ph, pw) = (pad[0] + pad[2], pad[1] + pad[3]);
        if fh <= ph || fw <= pw {
            continue;
        }
        let (oh, ow) = (fh - ph, fw - pw);
        let n = r.range(1, 2);
        let ocg = oc / group;
        let weights = rand(&mut r, c * ocg * k.0 * k.1);
        let bias = (!r.next().is_multiple_of(4)).then(|| rand(&mut r, oc));
        let (lo, hi) = clamp(&mut r);
        let mut params = vec![0i32; conv::T_LEN];
        params[conv::SH] = s.0 as i32;
        params[conv::SW] = s.1 as i32;
        params[conv::PT] = pad[0] as i32;
        params[conv::PL] = pad[1] as i32;
        params[conv::PB] = pad[2] as i32;
        params[conv::PR] = pad[3] as i32;
        params[conv::DH] = d.0 as i32;
        params[conv::DW] = d.1 as i32;
        params[conv::GROUP] = group as i32;
        params[conv::OPH] = op_.0 as i32;
        params[conv::OPW] = op_.1 as i32;
        params[conv::T_ACT_LO] = bits(lo);
        params[conv::T_ACT_HI] = bits(hi);
        let mk = |wv: Vec<f32>, bv: Option<Vec<f32>>, params: Vec<i32>| {
            let mut consts = vec![(vec![c, ocg, k.0, k.1], wv)];
            if let Some(bv) = bv {
                consts.push((vec![oc], bv));
            }
            Op {
                kind: OpKind::ConvTranspose,
                acts: vec![vec![n, c, h, w]],
                consts,
                params,
                y: vec![n, oc, oh, ow],
                chain: false,
            }
        };
        let what = || {
            format!(
                "CAIRN_SEED={seed} case {case}: n{n} c{c} {h}x{w} oc{oc} k{k:?} s{s:?} p{pad:?} op{op_:?} d{d:?} g{group}"
            )
        };
        let x = rand(&mut r, n * c * h * w);
        let op = mk(weights.clone(), bias.clone(), params.clone());
        let (reference, fast) = both(&op, std::slice::from_ref(&x), gemm_host(), &what);
        let mut p_abs = params;
        p_abs[conv::T_ACT_LO] = bits(f32::NEG_INFINITY);
        p_abs[conv::T_ACT_HI] = bits(f32::INFINITY);
        let terms_op = mk(abs(&weights), bias.as_deref().map(abs), p_abs);
        let terms = run(&terms_op.bytes(), RefBackend, &[abs(&x)]);
        within_terms(&reference, &fast, &terms, &what);
        ran += 1;
    }
    assert!(ran > 100, "{ran}");
}

/// A one-group conv (Conv params, [oc][c][kh][kw] weights) and its Σ|terms| twin.
#[allow(clippy::too_many_arguments)]
fn conv_op(
    shape: (usize, usize, usize, usize),
    oc: usize,
    k: (usize, usize),
    s: (usize, usize),
    pad: [usize; 4],
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
    clamp: (f32, f32),
    oh_ow: (usize, usize),
) -> Op {
    let (n, c, h, w) = shape;
    let mut params = vec![0i32; conv::LEN];
    params[conv::SH] = s.0 as i32;
    params[conv::SW] = s.1 as i32;
    params[conv::PT] = pad[0] as i32;
    params[conv::PL] = pad[1] as i32;
    params[conv::PB] = pad[2] as i32;
    params[conv::PR] = pad[3] as i32;
    params[conv::DH] = 1;
    params[conv::DW] = 1;
    params[conv::GROUP] = 1;
    params[conv::ACT_LO] = bits(clamp.0);
    params[conv::ACT_HI] = bits(clamp.1);
    let mut consts = vec![(vec![oc, c, k.0, k.1], weights)];
    if let Some(b) = bias {
        consts.push((vec![oc], b));
    }
    Op {
        kind: OpKind::Conv,
        acts: vec![vec![n, c, h, w]],
        consts,
        params,
        y: vec![n, oc, oh_ow.0, oh_ow.1],
        chain: false,
    }
}

#[test]
fn large_patch_conv_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xB16C);
    for case in 0..40 {
        let k = if case % 4 == 3 {
            (1, r.range(5, 9))
        } else {
            (3, 3)
        };
        // Patches of more than 1024 elements (the im2col tiles' limit).
        let c = 1024 / (k.0 * k.1) + r.range(1, 200);
        let (h, w) = (r.range(1, 14), r.range(1, 17));
        let s = (r.range(1, 2), r.range(1, 2));
        let pad = [r.range(0, 1), r.range(0, 1), r.range(0, 1), r.range(0, 1)];
        let (ph, pw) = (h + pad[0] + pad[2], w + pad[1] + pad[3]);
        if ph < k.0 || pw < k.1 {
            continue;
        }
        let (oh, ow) = ((ph - k.0) / s.0 + 1, (pw - k.1) / s.1 + 1);
        let (n, oc) = (r.range(1, 2), r.range(1, 20));
        let weights = rand(&mut r, oc * c * k.0 * k.1);
        let bias = (!r.next().is_multiple_of(4)).then(|| rand(&mut r, oc));
        let cl = clamp(&mut r);
        let what = || {
            format!(
                "CAIRN_SEED={seed} case {case}: n{n} c{c} {h}x{w} oc{oc} k{k:?} s{s:?} p{pad:?}"
            )
        };
        let x = rand(&mut r, n * c * h * w);
        let sh = (n, c, h, w);
        let make = |wts, b, cl| conv_op(sh, oc, k, s, pad, wts, b, cl, (oh, ow));
        conv_within_terms(make, &weights, bias.as_deref(), cl, &x, gemm_host(), &what);
    }
}

/// A FullyConnected of `m` rows of `k` into `n` outputs with these weights, bias and clamp.
fn fc_op(m: usize, k: usize, n: usize, w: Vec<f32>, b: Option<Vec<f32>>, lo: f32, hi: f32) -> Op {
    let mut consts = vec![(vec![n, k], w)];
    if let Some(b) = b {
        consts.push((vec![n], b));
    }
    Op {
        kind: OpKind::FullyConnected,
        acts: vec![vec![m, k]],
        consts,
        params: vec![bits(lo), bits(hi)],
        y: vec![m, n],
        chain: false,
    }
}

/// The GEMM tolerance's terms of that FullyConnected on `x`: the reference on absolute
/// values without the clamp.
fn fc_terms(m: usize, k: usize, n: usize, w: &[f32], b: Option<&[f32]>, x: &[f32]) -> Vec<f32> {
    let op = fc_op(
        m,
        k,
        n,
        abs(w),
        b.map(abs),
        f32::NEG_INFINITY,
        f32::INFINITY,
    );
    run(&op.bytes(), RefBackend, &[abs(x)])
}

#[test]
fn fully_connected_rows_f32_within_tolerance() {
    use cairn_kernels::paths::{taken, Path};
    let seed = seed();
    let mut r = Rng(seed ^ 0xFC4);
    for case in 0..80 {
        // k past the 512-deep weight panel (twice, often) every fourth case.
        let k = if case % 4 == 0 {
            r.range(1000, 2100)
        } else {
            r.range(1, 300)
        };
        let (m, n) = (r.range(4, 70), r.range(1, 40));
        let (lo, hi) = clamp(&mut r);
        let weights = rand(&mut r, n * k);
        let bias = (!r.next().is_multiple_of(4)).then(|| rand(&mut r, n));
        let mk = |w: Vec<f32>, b: Option<Vec<f32>>, lo: f32, hi: f32| fc_op(m, k, n, w, b, lo, hi);
        let what = || format!("CAIRN_SEED={seed} case {case}: fc m{m} k{k} n{n}");
        let x = rand(&mut r, m * k);
        let op = mk(weights.clone(), bias.clone(), lo, hi);
        let (reference, fast) = both(&op, std::slice::from_ref(&x), gemm_host(), &what);
        // Through a HostModel, whose weight cache keeps the transposed panels (built on the
        // first run, read on the second): the same sums, so the same bits as the panels
        // transposed per call above.
        let bytes = AlignedBytes::from_slice(&op.bytes());
        let mut host = cairn_kernels::host::HostModel::new(bytes.as_slice()).unwrap();
        let panels0 = taken(Path::FcF32Panels);
        for run_no in 0..2 {
            let cached = host.run(&[&x]).unwrap().remove(0);
            let same = cached
                .iter()
                .zip(&fast)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same && cached.len() == fast.len(),
                "run {run_no}: cached panels differ: {}",
                what()
            );
        }
        if gemm_host() && n >= 4 {
            assert_eq!(
                taken(Path::FcF32Panels) - panels0,
                2,
                "cached panels not used: {}",
                what()
            );
        }
        let terms = fc_terms(m, k, n, &weights, bias.as_deref(), &x);
        within_terms(&reference, &fast, &terms, &what);
    }
}

/// One to three rows (a recurrent step) through a `HostModel`, whose weight cache keeps
/// the transposed panels: the panel GEMV (x86_64 with AVX2 + FMA), held to the GEMM's
/// tolerance, including panel tails, deep rows and no bias.
#[test]
fn fully_connected_few_rows_on_panels_within_tolerance() {
    use cairn_kernels::paths::{taken, Path};
    let seed = seed();
    let mut r = Rng(seed ^ 0xFC5);
    for case in 0..60 {
        let k = if case % 5 == 0 {
            r.range(600, 1300)
        } else {
            r.range(1, 300)
        };
        let (m, n) = (r.range(1, 3), r.range(4, 140));
        let (lo, hi) = clamp(&mut r);
        let weights = rand(&mut r, n * k);
        let bias = (!r.next().is_multiple_of(3)).then(|| rand(&mut r, n));
        let mk = |w: Vec<f32>, b: Option<Vec<f32>>, lo: f32, hi: f32| fc_op(m, k, n, w, b, lo, hi);
        let what = || format!("CAIRN_SEED={seed} case {case}: fc m{m} k{k} n{n}");
        let x = rand(&mut r, m * k);
        let op = mk(weights.clone(), bias.clone(), lo, hi);
        let reference = run(&op.bytes(), RefBackend, std::slice::from_ref(&x));
        let bytes = AlignedBytes::from_slice(&op.bytes());
        let mut host = cairn_kernels::host::HostModel::new(bytes.as_slice()).unwrap();
        let panels0 = taken(Path::FcF32Panels);
        let fast = host.run(&[&x]).unwrap().remove(0);
        if vector_host() {
            assert_eq!(
                taken(Path::FcF32Panels) - panels0,
                1,
                "panels not used: {}",
                what()
            );
        }
        let terms = fc_terms(m, k, n, &weights, bias.as_deref(), &x);
        within_terms(&reference, &fast, &terms, &what);
    }
}

#[test]
fn batch_matmul_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xB33);
    for case in 0..120 {
        let (m, k, n) = (r.range(1, 40), r.range(1, 70), r.range(1, 90));
        // Batch dims: none, equal, or one side broadcast.
        let (ba, bb, by): (Vec<usize>, Vec<usize>, Vec<usize>) = match case % 4 {
            0 => (vec![], vec![], vec![]),
            1 => {
                let b = r.range(1, 5);
                (vec![b], vec![b], vec![b])
            }
            2 => {
                let (b0, b1) = (r.range(1, 3), r.range(2, 4));
                (vec![b0, b1], vec![1, b1], vec![b0, b1])
            }
            _ => {
                let b = r.range(2, 4);
                (vec![b], vec![], vec![b])
            }
        };
        let dims = |b: &[usize], p: usize, q: usize| [b, &[p, q]].concat();
        let (da, db, dy) = (dims(&ba, m, k), dims(&bb, k, n), dims(&by, m, n));
        let op = Op {
            kind: OpKind::BatchMatMul,
            acts: vec![da.clone(), db.clone()],
            consts: vec![],
            params: vec![],
            y: dy.clone(),
            chain: false,
        };
        let what = || format!("CAIRN_SEED={seed} case {case}: bmm {da:?} x {db:?} -> {dy:?}");
        let a = rand(&mut r, da.iter().product());
        let b = rand(&mut r, db.iter().product());
        let (reference, fast) = both(&op, &[a.clone(), b.clone()], gemm_host(), &what);
        let terms = run(&op.bytes(), RefBackend, &[abs(&a), abs(&b)]);
        within_terms(&reference, &fast, &terms, &what);
    }
}

/// (function, a, b, input range, exact)
type UnaryCase = (UnaryFn, f32, f32, (f32, f32), bool);

fn unary_cases() -> Vec<UnaryCase> {
    use UnaryFn::*;
    vec![
        (Identity, 0.0, 0.0, (-5.0, 5.0), true),
        (Relu, 0.0, 0.0, (-5.0, 5.0), true),
        (Clip, -0.7, 2.5, (-5.0, 5.0), true),
        (LeakyRelu, 0.1, 0.0, (-5.0, 5.0), true),
        (HardSigmoid, 0.2, 0.5, (-5.0, 5.0), true),
        (HardSwish, 0.0, 0.0, (-5.0, 5.0), true),
        // The quotient's correction step near the subnormals and past the clamp.
        (HardSwish, 0.0, 0.0, (-1e-36, 1e-36), true),
        (HardSwish, 0.0, 0.0, (-1e6, 1e6), true),
        (HardSwishAB, 1.0 / 6.0, 0.5, (-5.0, 5.0), true),
        (Neg, 0.0, 0.0, (-5.0, 5.0), true),
        (Abs, 0.0, 0.0, (-5.0, 5.0), true),
        (Sqrt, 0.0, 0.0, (0.0, 100.0), true),
        (Reciprocal, 0.0, 0.0, (-5.0, 5.0), true),
        (Softsign, 0.0, 0.0, (-5.0, 5.0), true),
        (Pow, 2.0, 0.0, (-5.0, 5.0), true),
        (Pow, 1.0, 0.0, (-5.0, 5.0), true),
        (Pow, 3.0, 0.0, (-20.0, 20.0), false),
        (Exp, 0.0, 0.0, (-110.0, 95.0), false),
        (Exp, 0.0, 0.0, (-3.0, 3.0), false),
        (Sigmoid, 0.0, 0.0, (-110.0, 110.0), false),
        (Sigmoid, 0.0, 0.0, (-6.0, 6.0), false),
        (Silu, 0.0, 0.0, (-20.0, 20.0), false),
        (Tanh, 0.0, 0.0, (-12.0, 12.0), false),
        (Tanh, 0.0, 0.0, (-1.0, 1.0), false),
        (Erf, 0.0, 0.0, (-5.0, 5.0), false),
        (Erf, 0.0, 0.0, (-0.5, 0.5), false),
        (Log, 0.0, 0.0, (1e-3, 1e4), false),
        (Log, 0.0, 0.0, (0.5, 2.0), false),
        (Log, 0.0, 0.0, (-1.0, 1e-36), false),
        (Gelu, 0.0, 0.0, (-8.0, 8.0), false),
        (GeluTanh, 0.0, 0.0, (-8.0, 8.0), false),
        (Mish, 0.0, 0.0, (-30.0, 30.0), false),
        (Mish, 0.0, 0.0, (-2.0, 2.0), false),
        (Softplus, 0.0, 0.0, (-100.0, 100.0), false),
        (Softplus, 0.0, 0.0, (-3.0, 3.0), false),
        (Elu, 1.0, 0.0, (-20.0, 5.0), false),
        (Elu, 0.5, 0.0, (-1.0, 1.0), false),
    ]
}

#[test]
fn unary_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x0E1);
    for (case, (f, a, b, (lo, hi), exact)) in unary_cases().into_iter().enumerate() {
        let len = r.range(1, 3000);
        // A few odd lengths (vector tails) and a chained second op (it may run in place).
        let dims = vec![1, len];
        let chain = case % 2 == 1 && exact;
        let op = Op {
            kind: OpKind::Unary,
            acts: vec![dims.clone()],
            consts: vec![],
            params: vec![f as i32, bits(a), bits(b)],
            y: dims,
            chain,
        };
        let mut x: Vec<f32> = (0..len).map(|_| r.f(lo, hi)).collect();
        // Dense sweep of the range, then specials.
        for (i, v) in x.iter_mut().enumerate().take(len / 2) {
            *v = lo + (hi - lo) * i as f32 / (len / 2) as f32;
        }
        let specials = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-30,
            -1e-30,
        ];
        for (v, s) in x.iter_mut().rev().zip(specials) {
            if f != UnaryFn::Sqrt || s >= 0.0 || s.is_nan() {
                *v = s;
            }
        }
        let what = || format!("CAIRN_SEED={seed} case {case}: {f:?} a{a} b{b} len {len}");
        let (reference, fast) = both(&op, std::slice::from_ref(&x), vector_host(), &what);
        if exact {
            same(&reference, &fast, &what);
            continue;
        }
        for (i, (p, q)) in reference.iter().zip(&fast).enumerate() {
            let ok = if p.is_nan() || q.is_nan() {
                p.is_nan() && q.is_nan()
            } else if p.is_infinite() || q.is_infinite() {
                p == q
            } else {
                (p - q).abs() <= FN_REL * p.abs() + FN_ABS * x[i].abs().max(1.0)
            };
            assert!(ok, "x = {}: reference {p}, fast {q}: {}", x[i], what());
        }
    }
}

/// The sixteen-lane Unary functions (HardSwish, Gelu, Erf, GeluTanh, Tanh on AVX-512F)
/// give the eight-lane ones' bits: each is run with the AVX-512 kernels allowed and not.
#[test]
fn unary_f32_sixteen_lanes_equal_eight() {
    use UnaryFn::*;
    let seed = seed();
    let mut r = Rng(seed ^ 0x0E2);
    for (case, (f, a, b, (lo, hi), _)) in unary_cases()
        .into_iter()
        .filter(|c| matches!(c.0, HardSwish | Gelu | Erf | GeluTanh | Tanh))
        .enumerate()
    {
        let len = r.range(1, 3000);
        let dims = vec![1, len];
        let op = Op {
            kind: OpKind::Unary,
            acts: vec![dims.clone()],
            consts: vec![],
            params: vec![f as i32, bits(a), bits(b)],
            y: dims,
            chain: false,
        };
        let mut x: Vec<f32> = (0..len).map(|_| r.f(lo, hi)).collect();
        for (v, s) in x
            .iter_mut()
            .zip([f32::NAN, f32::INFINITY, -0.0, 3.93, -4.0])
        {
            *v = s;
        }
        let what = || format!("CAIRN_SEED={seed} case {case}: {f:?} len {len}");
        let (_, wide) = both(&op, std::slice::from_ref(&x), vector_host(), &what);
        let was = cairn_kernels::paths::allow_avx512(false);
        let (_, narrow) = both(&op, std::slice::from_ref(&x), vector_host(), &what);
        cairn_kernels::paths::allow_avx512(was);
        same(&narrow, &wide, &what);
    }
}

#[test]
fn binary_f32_broadcast_equals_reference() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xB1A);
    let kinds = [
        OpKind::Add,
        OpKind::Sub,
        OpKind::Mul,
        OpKind::Div,
        OpKind::PRelu,
    ];
    let mut taken = 0;
    for case in 0..300 {
        let kind = kinds[case % kinds.len()];
        let rank = r.range(1, 4);
        let y: Vec<usize> = (0..rank).map(|_| r.range(1, 24)).collect();
        // Each operand: every dim kept or broadcast (1); sometimes a lower rank.
        let side = |r: &mut Rng| -> Vec<usize> {
            let drop = r
                .range(0, rank - 1)
                .min(if r.next().is_multiple_of(3) { rank } else { 0 });
            y[drop..]
                .iter()
                .map(|&d| if r.next().is_multiple_of(3) { 1 } else { d })
                .collect::<Vec<_>>()
        };
        let (mut da, db) = (side(&mut r), side(&mut r));
        if da.is_empty() {
            da = vec![1];
        }
        let db = if db.is_empty() { vec![1] } else { db };
        // Output shape = broadcast of the two.
        let ry = da.len().max(db.len());
        let pick = |v: &[usize], i: usize| {
            let off = ry - v.len();
            if i < off {
                1
            } else {
                v[i - off]
            }
        };
        let dy: Vec<usize> = (0..ry).map(|i| pick(&da, i).max(pick(&db, i))).collect();
        let (lo, hi) = clamp(&mut r);
        let op = Op {
            kind,
            acts: vec![da.clone(), db.clone()],
            consts: vec![],
            params: vec![bits(lo), bits(hi)],
            y: dy.clone(),
            chain: false,
        };
        let what = || format!("CAIRN_SEED={seed} case {case}: {kind:?} {da:?} . {db:?} -> {dy:?}");
        let a: Vec<f32> = (0..da.iter().product()).map(|_| r.f(-3.0, 3.0)).collect();
        let b: Vec<f32> = (0..db.iter().product()).map(|_| r.f(-3.0, 3.0)).collect();
        let before = f32_fast_ops();
        let (reference, fast) = both(&op, &[a, b], false, &what);
        taken += (f32_fast_ops() > before) as usize;
        same(&reference, &fast, &what);
    }
    if vector_host() {
        assert!(taken > 100, "fast path taken {taken} times");
    }
}

/// The f32 `Binary` functions (Max, Min, Pow, Mod, Fmod) under broadcast, NaN operands
/// included (Max and Min pass a NaN first operand through): the reference's values.
#[test]
fn binary_math_f32_equals_reference() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xB1B);
    let fns = [
        BinaryFn::Max,
        BinaryFn::Min,
        BinaryFn::Pow,
        BinaryFn::Mod,
        BinaryFn::Fmod,
    ];
    let mut taken = 0;
    for case in 0..300 {
        let f = fns[case % fns.len()];
        let rank = r.range(1, 4);
        let full: Vec<usize> = (0..rank).map(|_| r.range(1, 40)).collect();
        // Each operand: these dims, some broadcast (1); sometimes one value.
        let side = |r: &mut Rng| -> Vec<usize> {
            if r.next().is_multiple_of(4) {
                return vec![1];
            }
            full.iter()
                .map(|&d| if r.next().is_multiple_of(4) { 1 } else { d })
                .collect()
        };
        let (da, db) = (side(&mut r), side(&mut r));
        let ry = da.len().max(db.len());
        let dim = |v: &[usize], i: usize| if v.len() == ry { v[i] } else { 1 };
        let dy: Vec<usize> = (0..ry).map(|i| dim(&da, i).max(dim(&db, i))).collect();
        let op = Op {
            kind: OpKind::Binary,
            acts: vec![da.clone(), db.clone()],
            consts: vec![],
            params: vec![f as i32],
            y: dy.clone(),
            chain: false,
        };
        let what = || format!("CAIRN_SEED={seed} case {case}: {f:?} {da:?} . {db:?} -> {dy:?}");
        let value = |r: &mut Rng| match r.range(0, 15) {
            0 => f32::NAN,
            1 => 0.0,
            2 => -0.0,
            3 => r.range(0, 6) as f32 - 3.0,
            _ => r.f(-3.0, 3.0),
        };
        let a: Vec<f32> = (0..da.iter().product()).map(|_| value(&mut r)).collect();
        let b: Vec<f32> = (0..db.iter().product()).map(|_| value(&mut r)).collect();
        let before = f32_fast_ops();
        let (reference, fast) = both(&op, &[a, b], false, &what);
        taken += (f32_fast_ops() > before) as usize;
        for (i, (x, z)) in reference.iter().zip(&fast).enumerate() {
            assert!(
                x.to_bits() == z.to_bits() || (x.is_nan() && z.is_nan()),
                "output {i}: reference {x}, fast {z}: {}",
                what()
            );
        }
    }
    if gemm_host() {
        assert!(
            taken > 100,
            "CAIRN_SEED={seed}: fast path taken {taken} times"
        );
    }
}

#[test]
fn softmax_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x50F);
    let mut taken = 0;
    for case in 0..60 {
        // Every third case over an inner axis (a YOLOv8 head's 16 bins over 4 × 2100
        // columns, channels-first attention): columns in blocks of eight and a tail.
        let (outer, n, inner) = if case % 3 == 2 {
            (r.range(1, 4), r.range(1, 40), r.range(2, 70))
        } else {
            (r.range(1, 40), r.range(1, 7000), 1)
        };
        let dims = vec![outer, n, inner];
        let op = Op {
            kind: OpKind::Softmax,
            acts: vec![dims.clone()],
            consts: vec![],
            params: vec![outer as i32, n as i32, inner as i32, 0],
            y: dims,
            chain: false,
        };
        let scale = [1.0, 10.0, 60.0][case % 3];
        let mut x: Vec<f32> = (0..outer * n * inner).map(|_| r.f(-scale, scale)).collect();
        // Every fourth case masked as attention scores are (−3.4e38 on padded keys, and
        // −1e4): terms below f32's smallest normal, which the vector exp flushes to 0.
        if case % 4 == 3 {
            for v in x.iter_mut() {
                match r.range(0, 10) {
                    0..=2 => *v = f32::MIN,
                    3 => *v -= 1e4,
                    _ => {}
                }
            }
        }
        let what = || format!("CAIRN_SEED={seed} case {case}: softmax {outer}x{n}x{inner}");
        let before = f32_fast_ops();
        let (reference, fast) = both(&op, &[x], false, &what);
        if vector_host() {
            assert!(f32_fast_ops() > before, "fast path not taken: {}", what());
            taken += 1;
        }
        let rel = 8e-6 + n as f32 * 2.4e-7;
        for (i, (p, q)) in reference.iter().zip(&fast).enumerate() {
            assert!(
                (p - q).abs() <= rel * p.abs() + 1e-9,
                "output {i}: reference {p}, fast {q}: {}",
                what()
            );
        }
    }
    if vector_host() {
        assert!(taken > 20, "{taken}");
    }
}

#[test]
fn layer_norm_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x1A7E);
    let mut taken = 0;
    for case in 0..60 {
        // Rows of a transformer (384, 768) and odd lengths (a tail after the vector body),
        // normalized over the last one or two axes, with and without β.
        // Every fourth case: rows narrower than a vector (an NHWC map over its few
        // channels), eight at a time, with a remainder of rows.
        let narrow = case % 4 == 3;
        let (outer, a, b) = if narrow {
            (r.range(8, 40), r.range(1, 5), r.range(1, 7))
        } else {
            (r.range(1, 12), r.range(1, 5), r.range(1, 400))
        };
        let axis = if case % 2 == 0 || narrow { 2 } else { 1 };
        let dims = vec![outer, a, b];
        let n: usize = dims[axis..].iter().product();
        let with_beta = case % 3 != 0;
        let gamma: Vec<f32> = (0..n).map(|_| r.f(-2.0, 2.0)).collect();
        let beta: Vec<f32> = (0..n).map(|_| r.f(-1.0, 1.0)).collect();
        let mut consts = vec![(dims[axis..].to_vec(), gamma.clone())];
        if with_beta {
            consts.push((dims[axis..].to_vec(), beta.clone()));
        }
        let eps = [1e-5f32, 1e-12, 1e-3][case % 3];
        let op = Op {
            kind: OpKind::LayerNorm,
            acts: vec![dims.clone()],
            consts,
            params: vec![axis as i32, eps.to_bits() as i32],
            y: dims,
            chain: false,
        };
        // An offset row mean (the mean's rounding matters there) and several scales.
        let (offset, scale) = (
            [0.0, 3.0, -50.0][case % 3],
            [1.0, 0.01, 20.0][(case / 3) % 3],
        );
        let x: Vec<f32> = (0..outer * a * b)
            .map(|_| offset + r.f(-scale, scale))
            .collect();
        let what =
            || format!("CAIRN_SEED={seed} case {case}: layer norm {outer}x{a}x{b} axis {axis}");
        let (reference, fast) = both(&op, std::slice::from_ref(&x), vector_host(), &what);
        taken += vector_host() as usize;
        for (row, (xr, (pr, qr))) in x
            .chunks(n)
            .zip(reference.chunks(n).zip(fast.chunks(n)))
            .enumerate()
        {
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + eps as f64).sqrt();
            let mean_abs = xr.iter().map(|&v| (v as f64).abs()).sum::<f64>() / n as f64;
            let rel = 1e-5 + n as f64 * 2.4e-7;
            for k in 0..n {
                let bound =
                    rel * (gamma[k] as f64).abs() * ((xr[k] as f64 - mean).abs() + mean_abs) * inv
                        + if with_beta {
                            1e-6 * (beta[k] as f64).abs()
                        } else {
                            0.0
                        }
                        + 1e-7;
                assert!(
                    ((pr[k] - qr[k]) as f64).abs() <= bound,
                    "row {row} element {k}: reference {}, fast {} (bound {bound}): {}",
                    pr[k],
                    qr[k],
                    what()
                );
            }
        }
    }
    if vector_host() {
        assert_eq!(taken, 60);
    }
}

#[test]
fn max_pool_f32_equals_reference() {
    use cairn_kernels::paths::{taken, Path};
    let seed = seed();
    let mut r = Rng(seed ^ 0x3A7);
    let mut ran = 0;
    let before = taken(Path::MaxPoolPhasesF32);
    let before3 = taken(Path::MaxPool3s2F32);
    let (mut phases, mut flat, mut threes) = (0, 0, 0);
    for case in 0..420 {
        let (n, c) = (r.range(1, 2), r.range(1, 6));
        let (h, w) = (r.range(1, 20), r.range(1, 40));
        let mut k = (r.range(1, 13), r.range(1, 13));
        let mut s = (r.range(1, 3), r.range(1, 3));
        let mut d = (r.range(1, 2), r.range(1, 2));
        let mut pad = [r.range(0, 6), r.range(0, 6), r.range(0, 6), r.range(0, 6)];
        // From case 150 on, windows as wide as their stride, 2 or 4 (2×2/2, 1×4/(1, 4), taller
        // windows, row strides, dilations and top pads; odd sizes leave columns out, a
        // trailing pad makes a window hang over the edge: then not the phase kernel).
        let (mut h, mut w) = (h, w);
        if case >= 150 {
            let sw = if case % 2 == 0 { 2 } else { 4 };
            let kh = if case % 3 == 0 { 2 } else { r.range(1, 5) };
            (k, s, d) = ((kh, sw), (r.range(1, 3), sw), (r.range(1, 2), 1));
            (h, w) = (r.range(2, 30), r.range(2, 70));
            pad = [
                r.range(0, 2),
                0,
                (case % 7 == 0) as usize,
                (case % 5 == 0) as usize,
            ];
            // One-row windows over rows exactly sw times the output: one row for the tensor.
            if case % 4 == 1 {
                (k.0, s.0, d.0, pad[0], pad[2], pad[3]) = (1, 1, 1, 0, 0, 0);
                w = sw * r.range(1, 17);
                flat += 1;
            }
        }
        // From case 300 on, windows three columns wide at stride two (3×3/2 and taller or
        // shorter ones, left pads of 0–2, a right pad as ceil mode gives, row strides and
        // dilations), over rows short and long.
        if case >= 300 {
            (k, s, d) = ((r.range(1, 5), 3), (r.range(1, 3), 2), (r.range(1, 2), 1));
            (h, w) = (r.range(2, 30), r.range(3, 80));
            pad = [r.range(0, 2), r.range(0, 3), r.range(0, 2), r.range(0, 2)];
        }
        let (eh, ew) = ((k.0 - 1) * d.0 + 1, (k.1 - 1) * d.1 + 1);
        let (ph, pw) = (h + pad[0] + pad[2], w + pad[1] + pad[3]);
        if ph < eh || pw < ew || pad[0] >= eh || pad[1] >= ew {
            continue;
        }
        let (oh, ow) = ((ph - eh) / s.0 + 1, (pw - ew) / s.1 + 1);
        // Every window must start inside the padded input and see one input row/column.
        if (oh - 1) * s.0 >= h + pad[0] || (ow - 1) * s.1 >= w + pad[1] {
            continue;
        }
        let params = vec![
            k.0 as i32,
            k.1 as i32,
            s.0 as i32,
            s.1 as i32,
            pad[0] as i32,
            pad[1] as i32,
            pad[2] as i32,
            pad[3] as i32,
            d.0 as i32,
            d.1 as i32,
        ];
        let op = Op {
            kind: OpKind::MaxPool,
            acts: vec![vec![n, c, h, w]],
            consts: vec![],
            params,
            y: vec![n, c, oh, ow],
            chain: false,
        };
        // Few distinct values (ties), signed zeros and a NaN now and then.
        let x: Vec<f32> = (0..n * c * h * w)
            .map(|_| match r.range(0, 40) {
                0 => f32::NAN,
                1 => -0.0,
                2 => 0.0,
                _ => (r.range(0, 12) as f32 - 6.0) * 0.5,
            })
            .collect();
        let what = || {
            format!("CAIRN_SEED={seed} case {case}: maxpool n{n} c{c} {h}x{w} k{k:?} s{s:?} d{d:?} p{pad:?}")
        };
        let (reference, fast) = both(&op, &[x], gemm_host(), &what);
        for (i, (a, b)) in reference.iter().zip(&fast).enumerate() {
            let eq = a.to_bits() == b.to_bits();
            assert!(eq, "output {i}: reference {a}, fast {b}: {}", what());
        }
        ran += 1;
        phases += ((150..300).contains(&case) && ow * s.1 <= w) as u64;
        threes += ((k.1, s.1, d.1) == (3, 2, 1) && k.0 <= 16) as u64;
    }
    assert!(
        ran > 100 && phases > 40 && flat > 10 && threes > 60,
        "{ran} {phases} {flat} {threes}"
    );
    if vector_host() {
        assert_eq!(
            taken(Path::MaxPoolPhasesF32) - before,
            phases,
            "CAIRN_SEED={seed}"
        );
        assert_eq!(
            taken(Path::MaxPool3s2F32) - before3,
            threes,
            "CAIRN_SEED={seed}"
        );
    }
}

#[test]
fn mean_pool_f32_equals_reference() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x6A9);
    for case in 0..60 {
        let (n, c, h, w) = (
            r.range(1, 2),
            r.range(1, 30),
            r.range(1, 40),
            r.range(1, 40),
        );
        let (kind, params, y) = if case % 2 == 0 {
            (OpKind::GlobalAveragePool, vec![], vec![n, c, 1, 1])
        } else {
            // ReduceMean over the last axis, or the last two; keepdims or not.
            let two = r.next().is_multiple_of(2);
            let keep = r.next().is_multiple_of(2);
            let mask = if two { 0b1100 } else { 0b1000 };
            let y = match (two, keep) {
                (true, true) => vec![n, c, 1, 1],
                (true, false) => vec![n, c],
                (false, true) => vec![n, c, h, 1],
                (false, false) => vec![n, c, h],
            };
            (OpKind::ReduceMean, vec![mask, keep as i32], y)
        };
        let op = Op {
            kind,
            acts: vec![vec![n, c, h, w]],
            consts: vec![],
            params,
            y,
            chain: false,
        };
        let x = rand(&mut r, n * c * h * w);
        let what = || format!("CAIRN_SEED={seed} case {case}: {kind:?} {n}x{c}x{h}x{w}");
        let (reference, fast) = both(&op, &[x], gemm_host(), &what);
        for (i, (a, b)) in reference.iter().zip(&fast).enumerate() {
            let eq = a.to_bits() == b.to_bits();
            assert!(eq, "output {i}: reference {a}, fast {b}: {}", what());
        }
    }
}

/// One-group convs with one to eight output channels: on x86_64 with AVX2, padded and
/// phase-split input rows (`fast_f32/narrow_avx2.rs`: strides 1–4, dilations, long 1-D
/// filters, any patch); elsewhere, for one to four channels at row stride 1 and patches of
/// 32 or more, `fast_f32/direct.rs` (the reference's operations, so the same bits, which
/// the GEMM tolerance checked here contains).
#[test]
fn few_channel_conv_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xD1C);
    let mut ran = 0;
    for case in 0..120 {
        let k = match case % 4 {
            0 => (1, r.range(32, 260)),
            1 => (3, r.range(3, 41)),
            2 => (1, r.range(2, 9)),
            _ => (r.range(1, 5), r.range(1, 5)),
        };
        let c = if case % 4 == 0 {
            r.range(1, 2)
        } else {
            r.range(1, 12)
        };
        let s = (r.range(1, 2), if case % 3 == 0 { r.range(1, 4) } else { 1 });
        let d = (r.range(1, 2), if case % 5 == 0 { r.range(1, 3) } else { 1 });
        let (h, w) = (r.range(1, 6), r.range(8, 300));
        let pad = [
            r.range(0, 2),
            r.range(0, k.1),
            r.range(0, 2),
            r.range(0, k.1),
        ];
        let (eh, ew) = (d.0 * (k.0 - 1) + 1, d.1 * (k.1 - 1) + 1);
        let (ph, pw) = (h + pad[0] + pad[2], w + pad[1] + pad[3]);
        if ph < eh || pw < ew {
            continue;
        }
        let (oh, ow) = ((ph - eh) / s.0 + 1, (pw - ew) / s.1 + 1);
        let (n, oc) = (r.range(1, 2), r.range(1, 8));
        let weights = rand(&mut r, oc * c * k.0 * k.1);
        let bias = (!r.next().is_multiple_of(4)).then(|| rand(&mut r, oc));
        let cl = clamp(&mut r);
        let what = || {
            format!(
                "CAIRN_SEED={seed} case {case}: n{n} c{c} {h}x{w} oc{oc} k{k:?} s{s:?} d{d:?} p{pad:?}"
            )
        };
        let x = rand(&mut r, n * c * h * w);
        let sh = (n, c, h, w);
        let dilate = |mut op: Op| {
            op.params[conv::DH] = d.0 as i32;
            op.params[conv::DW] = d.1 as i32;
            op
        };
        let pointwise = k == (1, 1) && s == (1, 1) && pad == [0; 4];
        let narrow = cfg!(target_arch = "x86_64") && vector_host() && ow >= 8 && !pointwise;
        let direct = gemm_host() && oc <= 4 && s.1 == 1 && c * k.0 * k.1 >= 32 && ow >= 16;
        let make = |wts, b, cl| dilate(conv_op(sh, oc, k, s, pad, wts, b, cl, (oh, ow)));
        let expect = narrow || direct;
        conv_within_terms(make, &weights, bias.as_deref(), cl, &x, expect, &what);
        ran += 1;
    }
    assert!(ran > 80, "{ran}");
}

/// GMAC/s of the few-channel convs of a pitch model (Basic Pitch's 256-tap stride-2 FIR,
/// its 3×39 and 7×3 filters into 8 and 1 channels) and of a detector's GEMM-bound 3×3 and
/// 1×1 convs, against the reference:
/// `cargo test -p cairn-kernels --features std --release --test exact_f32_fast -- --ignored --nocapture`.
#[test]
#[ignore]
fn few_channel_conv_f32_speed() {
    use std::time::Instant;
    let mut r = Rng(7);
    // (n, c, h, w), oc, kernel, stride, pads [t, l, b, r]
    type Case = (
        (usize, usize, usize, usize),
        usize,
        (usize, usize),
        (usize, usize),
        [usize; 4],
    );
    let pitch: [Case; 4] = [
        ((1, 1, 1, 44100), 1, (1, 256), (1, 2), [0, 0, 0, 0]),
        ((1, 8, 172, 264), 8, (3, 39), (1, 1), [1, 19, 1, 19]),
        ((1, 32, 172, 88), 1, (7, 3), (1, 1), [3, 1, 3, 1]),
        ((1, 8, 172, 264), 1, (5, 5), (1, 1), [2, 2, 2, 2]),
    ];
    // And the GEMM-bound convs of a detector (YOLOX-tiny at 416, PicoDet at 800 × 608):
    // 3×3 and 1×1 over 52 × 52 to 100 × 76 maps.
    let detector: [Case; 4] = [
        ((1, 96, 52, 52), 96, (3, 3), (1, 1), [1, 1, 1, 1]),
        ((1, 192, 52, 52), 96, (1, 1), (1, 1), [0, 0, 0, 0]),
        ((1, 48, 104, 104), 48, (3, 3), (1, 1), [1, 1, 1, 1]),
        ((1, 128, 100, 76), 128, (1, 1), (1, 1), [0, 0, 0, 0]),
    ];
    let cases: Vec<Case> = pitch.into_iter().chain(detector).collect();
    for (sh, oc, k, s, pad) in cases {
        let (n, c, h, w) = sh;
        let (oh, ow) = (
            (h + pad[0] + pad[2] - k.0) / s.0 + 1,
            (w + pad[1] + pad[3] - k.1) / s.1 + 1,
        );
        let op = conv_op(
            sh,
            oc,
            k,
            s,
            pad,
            rand(&mut r, oc * c * k.0 * k.1),
            None,
            (f32::NEG_INFINITY, f32::INFINITY),
            (oh, ow),
        );
        let bytes = op.bytes();
        let x = rand(&mut r, n * c * h * w);
        let macs = (n * oc * oh * ow * c * k.0 * k.1) as f64;
        let ab = AlignedBytes::from_slice(&bytes);
        let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        fn timed<B: Backend>(ab: &AlignedBytes, b: B, xb: &[u8]) -> f64 {
            let m = Model::parse(ab.as_slice()).unwrap();
            let mut arena = vec![0u8; m.arena_bytes() + 16];
            let mut it = Interpreter::new(m, b, &mut arena).unwrap();
            it.input_bytes_mut(0).unwrap().copy_from_slice(xb);
            it.invoke().unwrap();
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                it.invoke().unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            best
        }
        let time = |fast: bool| {
            if fast {
                timed(&ab, CpuBackend, &xb)
            } else {
                timed(&ab, RefBackend, &xb)
            }
        };
        let (tf, tr) = (time(true), time(false));
        println!(
            "c{c} {h}x{w} oc{oc} k{k:?} s{s:?}: fast {:.2} GMAC/s, reference {:.2} GMAC/s",
            macs / tf / 1e9,
            macs / tr / 1e9
        );
    }
}

/// TopK and TopKIndex (`Reduce`) on the host path (`fast_f32/topk.rs`: a partial selection
/// and a sort per lane) give the reference's values and indices bit for bit: largest and
/// smallest, k from 1 to the whole axis, the axis first, middle or last (strided lanes),
/// values drawn from a few levels so that ties are common (the lower index first). A lane
/// with a NaN goes to the reference: the op still matches. Seeded (`CAIRN_SEED`).
#[test]
fn top_k_matches_reference() {
    use cairn_core::op::ReduceFn;
    let seed = seed();
    let mut r = Rng(seed ^ 0x70C);
    let mut fast_ran = 0;
    for case in 0..60 {
        let rank = r.range(1, 3);
        let dims: Vec<usize> = (0..rank).map(|_| r.range(1, 40)).collect();
        let axis = r.range(0, rank - 1);
        let n = dims[axis];
        let k = r.range(1, n);
        let largest = r.range(0, 1) == 1;
        let index = case % 2 == 1;
        let levels = r.range(2, 50) as f32;
        let numel: usize = dims.iter().product();
        let mut x: Vec<f32> = (0..numel)
            .map(|_| (r.f(-1.0, 1.0) * levels).round() / levels)
            .collect();
        let with_nan = case % 10 == 9;
        if with_nan {
            x[r.range(0, numel - 1)] = f32::NAN;
        }
        let mut ydims = dims.clone();
        ydims[axis] = k;
        let f = if index {
            ReduceFn::TopKIndex
        } else {
            ReduceFn::TopK
        };
        let mut b = ModelBuilder::default();
        let xt = b.add_tensor(t(&dims, None));
        let mut yspec = t(&ydims, None);
        if index {
            yspec.dtype = DType::I32;
        }
        let yt = b.add_tensor(yspec);
        b.ops.push(OpSpec {
            kind: OpKind::Reduce,
            inputs: vec![Some(xt)],
            outputs: vec![yt],
            params: vec![f as i32, 1 << axis, k as i32, largest as i32],
        });
        b.inputs = vec![xt];
        b.outputs = vec![yt];
        let bytes = b.finish().expect("valid model");
        let reference = run(&bytes, RefBackend, std::slice::from_ref(&x));
        let before = f32_fast_ops();
        let fast = run(&bytes, CpuBackend, std::slice::from_ref(&x));
        let ran = f32_fast_ops() > before;
        fast_ran += ran as usize;
        // The f32 fast paths run on x86_64 and aarch64 (i686 and the rest: the reference).
        let host = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));
        assert_eq!(
            ran,
            host && !with_nan,
            "CAIRN_SEED={seed} case {case}: path taken {ran}"
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&reference),
            bits(&fast),
            "CAIRN_SEED={seed} case {case}: {f:?} k {k} of {dims:?} axis {axis} largest {largest}"
        );
    }
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        assert!(fast_ran >= 50, "{fast_ran}");
    }
}

/// One `Recurrent` model: the projections `[T, B, G·H]` and the optional states as inputs,
/// `Rᵀ`, the recurrent bias and the peepholes as constants.
struct RecCase {
    cell: i32,
    flags: i32,
    clip: f32,
    acts: [(UnaryFn, f32, f32); 3],
    t: usize,
    b: usize,
    h: usize,
    rt: Vec<f32>,
    rb: Option<Vec<f32>>,
    h0: bool,
    c0: bool,
    peep: Option<Vec<f32>>,
}

impl RecCase {
    fn g(&self) -> usize {
        cairn_core::op::recurrent::gates(self.cell).unwrap()
    }

    fn rows(&self) -> usize {
        self.t + usize::from(self.flags & cairn_core::op::recurrent::CELL_STATE_ROW != 0)
    }

    fn bytes(&self) -> Vec<u8> {
        use cairn_core::op::recurrent as rc;
        let (g, h, b) = (self.g(), self.h, self.b);
        let mut mb = ModelBuilder::default();
        let xp = mb.add_tensor(t(&[self.t, b, g * h], None));
        let mut acts = vec![xp];
        let rt = mb.add_tensor(t(&[h, g * h], Some(&self.rt)));
        let rb = self
            .rb
            .as_ref()
            .map(|v| mb.add_tensor(t(&[g * h], Some(v))));
        let mut state = |on: bool, acts: &mut Vec<u16>| {
            on.then(|| {
                let s = mb.add_tensor(t(&[b, h], None));
                acts.push(s);
                s
            })
        };
        let h0 = state(self.h0, &mut acts);
        let c0 = state(self.c0, &mut acts);
        let peep = self
            .peep
            .as_ref()
            .map(|v| mb.add_tensor(t(&[3 * h], Some(v))));
        let y = mb.add_tensor(t(&[self.rows(), b, h], None));
        let mut inputs = vec![Some(xp), Some(rt), rb, h0, c0, peep];
        while inputs.last() == Some(&None) {
            inputs.pop();
        }
        let mut params = vec![0i32; rc::LEN];
        params[rc::CELL] = self.cell;
        params[rc::FLAGS] = self.flags;
        params[rc::CLIP] = bits(self.clip);
        for (k, &(f, a, bb)) in self.acts.iter().enumerate() {
            params[rc::ACTS + 3 * k] = f as i32;
            params[rc::ACTS + 3 * k + 1] = bits(a);
            params[rc::ACTS + 3 * k + 2] = bits(bb);
        }
        mb.ops.push(OpSpec {
            kind: OpKind::Recurrent,
            inputs,
            outputs: vec![y],
            params,
        });
        mb.inputs = acts;
        mb.outputs = vec![y];
        mb.finish().expect("valid model")
    }
}

/// `Recurrent` on the AVX2 path (and the AVX-512F gates) against the reference: LSTM (peepholes, the final cell
/// state row), GRU (both reset forms), RNN; forward and reverse; with and without the
/// recurrent bias and the initial states; default and other gate functions, a clip;
/// hidden sizes from 1 to past one chunk of units (several chunks per step). The two run
/// the same steps; the products differ by fused multiply-adds and the gate functions by
/// the vector approximations' bound, and the recurrence carries those over the steps:
/// `|fast − ref| ≤ 2e-5 · (1 + |ref|)` (the states here stay within a few units, and the
/// gates contract the differences from step to step).
#[test]
fn recurrent_f32_within_tolerance() {
    use cairn_core::op::recurrent as rc;
    let seed = seed();
    let mut r = Rng(seed ^ 0x4EC);
    let sizes = [1usize, 3, 8, 25, 33, 64, 300, 400];
    for case in 0..48 {
        let cell = [rc::LSTM, rc::GRU, rc::RNN][case % 3];
        let g = rc::gates(cell).unwrap();
        let h = sizes[(case / 3) % sizes.len()];
        // RNN and GRU past 341 units take several chunks too; keep the big ones few.
        let (t_, b) = if h >= 300 {
            (r.range(1, 3), 1)
        } else {
            (r.range(1, 12), r.range(1, 3))
        };
        let mut flags = if r.next().is_multiple_of(2) {
            rc::REVERSE
        } else {
            0
        };
        if cell == rc::LSTM && r.next().is_multiple_of(2) {
            flags |= rc::CELL_STATE_ROW;
        }
        if cell == rc::GRU && r.next().is_multiple_of(2) {
            flags |= rc::LINEAR_BEFORE_RESET;
        }
        let defaults = (UnaryFn::Sigmoid, 0.0, 0.0);
        let mut acts = [
            defaults,
            (UnaryFn::Tanh, 0.0, 0.0),
            (UnaryFn::Tanh, 0.0, 0.0),
        ];
        if case % 5 == 4 {
            acts[0] = (UnaryFn::HardSigmoid, 0.2, 0.5);
            acts[1] = (UnaryFn::Softsign, 0.0, 0.0);
            acts[2] = (UnaryFn::LeakyRelu, 0.1, 0.0);
        }
        let clip = if case % 4 == 3 { 0.7 } else { f32::INFINITY };
        let scale = 1.0 / (h as f32).sqrt();
        let mut rnd = |n: usize, a: f32| -> Vec<f32> { (0..n).map(|_| r.f(-a, a)).collect() };
        let rt = rnd(h * g * h, 1.5 * scale);
        let rb = (case % 2 == 0).then(|| rnd(g * h, 0.3));
        let peep = (cell == rc::LSTM && case % 4 < 2).then(|| rnd(3 * h, 0.5));
        let xp = rnd(t_ * b * g * h, 2.0);
        let (h0, c0) = (case % 3 != 1, cell == rc::LSTM && case % 2 == 1);
        let mut inputs = vec![xp];
        if h0 {
            inputs.push(rnd(b * h, 1.0));
        }
        if c0 {
            inputs.push(rnd(b * h, 3.0));
        }
        let rc_case = RecCase {
            cell,
            flags,
            clip,
            acts,
            t: t_,
            b,
            h,
            rt,
            rb,
            h0,
            c0,
            peep,
        };
        let bytes = rc_case.bytes();
        let what = || {
            format!(
                "CAIRN_SEED={seed} case {case}: cell {cell} flags {flags} h {h} t {t_} b {b} clip {clip}"
            )
        };
        let reference = run(&bytes, RefBackend, &inputs);
        assert_eq!(reference.len(), rc_case.rows() * b * h);
        // The gates eight units a step (AVX2) and sixteen (AVX-512F, where the host has it).
        for wide in [false, true] {
            let was = cairn_kernels::paths::allow_avx512(wide);
            let before = f32_fast_ops();
            let fast = run(&bytes, CpuBackend, &inputs);
            cairn_kernels::paths::allow_avx512(was);
            if vector_host() {
                assert!(f32_fast_ops() > before, "fast path not taken: {}", what());
            }
            for (i, (p, q)) in reference.iter().zip(&fast).enumerate() {
                assert!(
                    (p - q).abs() <= 2e-5 * (1.0 + p.abs()),
                    "at {i}: reference {p}, fast {q} (wide {wide}): {}",
                    what()
                );
            }
        }
    }
}

//! Lowering of the compute ops: convolutions, matrix products, element-wise ops,
//! normalization, pooling, reductions and resizing.

use anyhow::{anyhow, bail, Result};
use cairn_core::op::{BinaryFn, UnaryFn};
use cairn_core::{DType, OpKind};

use crate::lower::{Lower, Val, INF_BITS};
use crate::onnx::{Attrs, NodeProto};

/// A conv or pool attribute of `n` entries (or `default` for each), each in `0..=2^24`:
/// a negative or absurd stride, pad or kernel from a hostile model is refused, not cast
/// to a huge usize.
fn pair(v: &Option<Vec<i64>>, default: i64, n: usize) -> Result<Vec<usize>> {
    const MAX: i64 = 1 << 24;
    match v {
        Some(v) if v.len() == n => v
            .iter()
            .map(|&x| {
                (0..=MAX)
                    .contains(&x)
                    .then_some(x as usize)
                    .ok_or_else(|| anyhow!("attribute value {x} is out of range (0..=2^24)"))
            })
            .collect(),
        _ => Ok(vec![default as usize; n]),
    }
}

/// [`pair`] for strides, dilations and kernel sizes, which must be at least 1.
fn pair_pos(v: &Option<Vec<i64>>, n: usize) -> Result<Vec<usize>> {
    let p = pair(v, 1, n)?;
    if p.contains(&0) {
        bail!("a stride, dilation or kernel size of 0");
    }
    Ok(p)
}

/// Begin/end pads for each spatial axis, honouring auto_pad.
fn spatial_pads(
    a: &Attrs,
    ins: &[usize],
    k: &[usize],
    s: &[usize],
    d: &[usize],
) -> Result<(Vec<usize>, Vec<usize>)> {
    let n = ins.len();
    match a.string("auto_pad", "NOTSET").as_str() {
        "NOTSET" => {
            let p = pair(&a.ints("pads"), 0, 2 * n)?;
            Ok((p[..n].to_vec(), p[n..].to_vec()))
        }
        "VALID" => Ok((vec![0; n], vec![0; n])),
        m @ ("SAME_UPPER" | "SAME_LOWER") => {
            let (mut b, mut e) = (vec![0; n], vec![0; n]);
            for i in 0..n {
                let out = ins[i].div_ceil(s[i]);
                let total = ((out - 1) * s[i] + (k[i] - 1) * d[i] + 1).saturating_sub(ins[i]);
                let small = total / 2;
                if m == "SAME_UPPER" {
                    b[i] = small;
                    e[i] = total - small;
                } else {
                    b[i] = total - small;
                    e[i] = small;
                }
            }
            Ok((b, e))
        }
        m => bail!("auto_pad '{m}' is not supported"),
    }
}

/// Make a 3-d (N, C, L) tensor 4-d (N, C, 1, L) so 1-d convs and pools use the 2-d kernels.
fn to_2d(l: &mut Lower, x: usize) -> Result<(usize, bool)> {
    let s = l.shape(x);
    match s.len() {
        4 => Ok((x, false)),
        3 => Ok((l.reshape(x, &[s[0], s[1], 1, s[2]])?, true)),
        r => bail!("only 1-d and 2-d spatial ops are supported (input rank {r})"),
    }
}

fn back_1d(l: &mut Lower, y: usize, was_1d: bool) -> Result<usize> {
    if !was_1d {
        return Ok(y);
    }
    let s = l.shape(y);
    l.reshape(y, &[s[0], s[1], s[3]])
}

fn conv(l: &mut Lower, n: &NodeProto, transpose: bool) -> Result<()> {
    let a = Attrs(n);
    let x0 = l.in_t(n, 0)?;
    let (x, d1) = to_2d(l, x0)?;
    let w0 = l.in_t(n, 1)?;
    let (w, _) = to_2d(l, w0)?;
    let b = l.opt_t(n, 2)?;
    // 1-d attributes gain a leading unit axis (strides/dilations 1, pads 0).
    let lift = |v: Option<Vec<i64>>, _n: usize| {
        v.map(|v| if d1 && v.len() == 1 { vec![1, v[0]] } else { v })
    };
    let lift_pads = |v: Option<Vec<i64>>| {
        v.map(|v| {
            if d1 && v.len() == 2 {
                vec![0, v[0], 0, v[1]]
            } else {
                v
            }
        })
    };
    let ws = l.shape(w);
    let xs = l.shape(x);
    let k = vec![ws[2], ws[3]];
    if k.contains(&0) || xs[2..].contains(&0) {
        bail!("{} of an empty kernel or input ({ws:?}, {xs:?})", n.op_type);
    }
    let s = pair_pos(&lift(a.ints("strides"), 2), 2)?;
    let dl = pair_pos(&lift(a.ints("dilations"), 2), 2)?;
    let group = a.int("group", 1);
    let pads_attr = lift_pads(a.ints("pads"));
    let (pb, pe) = if transpose {
        let op = pair(
            &a.ints("output_padding")
                .map(|v| if d1 && v.len() == 1 { vec![0, v[0]] } else { v }),
            0,
            2,
        )?;
        let auto = a.string("auto_pad", "NOTSET");
        let out_shape = a
            .ints("output_shape")
            .map(|v| if d1 && v.len() == 1 { vec![1, v[0]] } else { v })
            .map(|v| {
                // The last two entries are the spatial dims (a full N, C, H, W is allowed).
                let v = &v[v.len().saturating_sub(2)..];
                match v.iter().all(|&x| x > 0 && x <= u32::MAX as i64) && v.len() == 2 {
                    true => Ok(v.iter().map(|&x| x as usize).collect::<Vec<_>>()),
                    false => Err(anyhow!(
                        "ConvTranspose output_shape {v:?} is not two positive dims"
                    )),
                }
            })
            .transpose()?;
        let target = match (out_shape, auto.as_str()) {
            (Some(o), _) => Some(o),
            (None, "SAME_UPPER" | "SAME_LOWER") => Some(vec![xs[2] * s[0], xs[3] * s[1]]),
            _ => None,
        };
        let mut op = op;
        let pads = match target {
            Some(t) => {
                let (mut b, mut e) = (vec![0; 2], vec![0; 2]);
                for i in 0..2 {
                    let full = s[i] * (xs[2 + i] - 1) + op[i] + (k[i] - 1) * dl[i] + 1;
                    // ONNX's split, with floor division: an output larger than the
                    // kernel's reach leaves a negative pad, which at the end is output
                    // padding (the extra rows hold the bias alone).
                    let total = full as i64 - t[i] as i64;
                    let (pb, pe) = if auto == "SAME_UPPER" {
                        (total.div_euclid(2), total - total.div_euclid(2))
                    } else {
                        (total - total.div_euclid(2), total.div_euclid(2))
                    };
                    if pb < 0 {
                        bail!("ConvTranspose output_shape {t:?} needs negative leading padding");
                    }
                    b[i] = pb as usize;
                    if pe < 0 {
                        op[i] += pe.unsigned_abs() as usize;
                    } else {
                        e[i] = pe as usize;
                    }
                }
                (b, e)
            }
            None => {
                let p = pair(&pads_attr, 0, 4)?;
                (p[..2].to_vec(), p[2..].to_vec())
            }
        };
        let params = vec![
            s[0] as i32,
            s[1] as i32,
            pads.0[0] as i32,
            pads.0[1] as i32,
            pads.1[0] as i32,
            pads.1[1] as i32,
            dl[0] as i32,
            dl[1] as i32,
            group as i32,
            op[0] as i32,
            op[1] as i32,
            INF_BITS.0,
            INF_BITS.1,
        ];
        let y = l.op(
            OpKind::ConvTranspose,
            vec![Some(x), Some(w), b],
            params,
            &[],
        )?;
        let y = back_1d(l, y, d1)?;
        l.out(n, 0, Val::T(y));
        return Ok(());
    } else if a.has("pads") {
        let p = pair(&pads_attr, 0, 4)?;
        (p[..2].to_vec(), p[2..].to_vec())
    } else {
        spatial_pads(&a, &xs[2..], &k, &s, &dl)?
    };
    let params = vec![
        s[0] as i32,
        s[1] as i32,
        pb[0] as i32,
        pb[1] as i32,
        pe[0] as i32,
        pe[1] as i32,
        dl[0] as i32,
        dl[1] as i32,
        group as i32,
        INF_BITS.0,
        INF_BITS.1,
    ];
    let y = l.op(OpKind::Conv, vec![Some(x), Some(w), b], params, &[])?;
    let y = back_1d(l, y, d1)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// Fully connected from a constant [K, N] (or, with `w_is_nk`, [N, K]) weight.
pub(crate) fn fc(
    l: &mut Lower,
    x: usize,
    w: usize,
    w_is_nk: bool,
    bias: Option<usize>,
) -> Result<usize> {
    let w = if w_is_nk { w } else { l.transpose(w, &[1, 0])? };
    l.op(
        OpKind::FullyConnected,
        vec![Some(x), Some(w), bias],
        vec![INF_BITS.0, INF_BITS.1],
        &[],
    )
}

pub(crate) fn matmul(l: &mut Lower, a: usize, b: usize) -> Result<usize> {
    let (sa, sb) = (l.shape(a), l.shape(b));
    if sa.is_empty() || sb.is_empty() {
        bail!("MatMul of a scalar");
    }
    if let Some(y) = crate::lower_shape::one_hot_matmul(l, a, b)? {
        return Ok(y);
    }
    let b_const = l.g.tensors[b].is_const();
    if b_const && sb.len() == 2 && sa.len() >= 2 {
        return fc(l, a, b, false, None);
    }
    let a2 = if sa.len() == 1 {
        l.reshape(a, &[1, sa[0]])?
    } else {
        a
    };
    let b2 = if sb.len() == 1 {
        l.reshape(b, &[sb[0], 1])?
    } else {
        b
    };
    let y = l.op(OpKind::BatchMatMul, vec![Some(a2), Some(b2)], vec![], &[])?;
    let mut ys = l.shape(y);
    if sb.len() == 1 {
        ys.pop();
    }
    if sa.len() == 1 {
        let r = ys.len();
        ys.remove(r - if sb.len() == 1 { 1 } else { 2 });
    }
    l.reshape(y, &ys)
}

fn gemm(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let at = Attrs(n);
    let (alpha, beta) = (at.float("alpha", 1.0), at.float("beta", 1.0));
    let (ta, tb) = (at.int("transA", 0) != 0, at.int("transB", 0) != 0);
    let mut a = l.in_t(n, 0)?;
    let b = l.in_t(n, 1)?;
    let c = l.opt_t(n, 2)?;
    let (ra, rb) = (l.shape(a).len(), l.shape(b).len());
    if ra != 2 || rb != 2 {
        bail!("Gemm needs 2-d A and B (ranks {ra} and {rb})");
    }
    if ta {
        a = l.transpose(a, &[1, 0])?;
    }
    let nout = l.shape(b)[if tb { 0 } else { 1 }];
    let b_const = l.g.tensors[b].is_const();
    let y = if b_const {
        let mut w = if tb { b } else { l.transpose(b, &[1, 0])? };
        if alpha != 1.0 {
            let s = l.scalar(alpha);
            w = l.binary(OpKind::Mul, w, s)?;
        }
        let bias = match c {
            Some(c)
                if l.g.tensors[c].is_const()
                    && l.g.tensors[c].numel() == nout
                    && l.shape(c).last() == Some(&nout) =>
            {
                let s = l.scalar(beta);
                let cb = l.binary(OpKind::Mul, c, s)?;
                Some(l.reshape(cb, &[nout])?)
            }
            _ => None,
        };
        let y = fc(l, a, w, true, bias)?;
        match (c, bias) {
            (Some(c), None) => add_scaled(l, y, c, beta)?,
            _ => y,
        }
    } else {
        let b2 = if tb { l.transpose(b, &[1, 0])? } else { b };
        let mut y = l.op(OpKind::BatchMatMul, vec![Some(a), Some(b2)], vec![], &[])?;
        if alpha != 1.0 {
            let s = l.scalar(alpha);
            y = l.binary(OpKind::Mul, y, s)?;
        }
        match c {
            Some(c) => add_scaled(l, y, c, beta)?,
            None => y,
        }
    };
    l.out(n, 0, Val::T(y));
    Ok(())
}

fn add_scaled(l: &mut Lower, y: usize, c: usize, beta: f32) -> Result<usize> {
    let c = if beta != 1.0 {
        let s = l.scalar(beta);
        l.binary(OpKind::Mul, c, s)?
    } else {
        c
    };
    l.binary(OpKind::Add, y, c)
}

fn pool(l: &mut Lower, n: &NodeProto, max: bool) -> Result<()> {
    let a = Attrs(n);
    if n.output.len() > 1 && !n.output[1].is_empty() {
        bail!("MaxPool's Indices output is not supported");
    }
    let x0 = l.in_t(n, 0)?;
    let (x, d1) = to_2d(l, x0)?;
    let xs = l.shape(x);
    let lift = |v: Option<Vec<i64>>, fill: i64| {
        v.map(|v| {
            if d1 && v.len() == 1 {
                vec![fill, v[0]]
            } else if d1 && v.len() == 2 {
                vec![fill, v[0], fill, v[1]]
            } else {
                v
            }
        })
    };
    let k = pair_pos(&lift(a.ints("kernel_shape"), 1), 2)?;
    let s = pair_pos(&lift(a.ints("strides"), 1), 2)?;
    let dl = if max {
        pair_pos(&lift(a.ints("dilations"), 1), 2)?
    } else {
        vec![1, 1]
    };
    let ceil = a.int("ceil_mode", 0) != 0;
    let (pb, pe) = if d1 && a.has("pads") {
        let p = pair(&lift(a.ints("pads"), 0), 0, 4)?;
        (p[..2].to_vec(), p[2..].to_vec())
    } else {
        spatial_pads(&a, &xs[2..], &k, &s, &dl)?
    };
    let mut out = vec![xs[0], xs[1], 0, 0];
    for i in 0..2 {
        let eff = (k[i] - 1) * dl[i] + 1;
        let span = (xs[2 + i] + pb[i] + pe[i])
            .checked_sub(eff)
            .ok_or_else(|| anyhow!("pool window larger than the padded input"))?;
        let mut o = if ceil {
            span.div_ceil(s[i]) + 1
        } else {
            span / s[i] + 1
        };
        if ceil && (o - 1) * s[i] >= xs[2 + i] + pb[i] {
            o -= 1;
        }
        if a.string("auto_pad", "NOTSET").starts_with("SAME") {
            o = xs[2 + i].div_ceil(s[i]);
        }
        out[2 + i] = o;
    }
    let mut params = vec![
        k[0] as i32,
        k[1] as i32,
        s[0] as i32,
        s[1] as i32,
        pb[0] as i32,
        pb[1] as i32,
        pe[0] as i32,
        pe[1] as i32,
    ];
    let kind = if max {
        params.extend([dl[0] as i32, dl[1] as i32]);
        OpKind::MaxPool
    } else {
        params.push(a.int("count_include_pad", 0) as i32);
        OpKind::AveragePool
    };
    let y = l.op(kind, vec![Some(x)], params, &out)?;
    let y = back_1d(l, y, d1)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

pub(crate) fn lower_nn_op(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let op = n.op_type.as_str();
    let unary = |f: UnaryFn| Some((f, 0.0f32, 0.0f32));
    let u = match op {
        "Relu" => unary(UnaryFn::Relu),
        "Sigmoid" => unary(UnaryFn::Sigmoid),
        "Tanh" => unary(UnaryFn::Tanh),
        "HardSwish" => unary(UnaryFn::HardSwish),
        "Erf" => unary(UnaryFn::Erf),
        "Exp" => unary(UnaryFn::Exp),
        "Neg" => unary(UnaryFn::Neg),
        "Abs" => unary(UnaryFn::Abs),
        "Sqrt" => unary(UnaryFn::Sqrt),
        "LeakyRelu" => Some((UnaryFn::LeakyRelu, a.float("alpha", 0.01), 0.0)),
        "HardSigmoid" => Some((
            UnaryFn::HardSigmoid,
            a.float("alpha", 0.2),
            a.float("beta", 0.5),
        )),
        "Gelu" => Some((
            if a.string("approximate", "none") == "tanh" {
                UnaryFn::GeluTanh
            } else {
                UnaryFn::Gelu
            },
            0.0,
            0.0,
        )),
        _ => None,
    };
    if let Some((f, p, q)) = u {
        let x = l.in_t(n, 0)?;
        let y = l.unary(x, f, p, q)?;
        l.out(n, 0, Val::T(y));
        return Ok(());
    }
    match op {
        "Conv" => conv(l, n, false),
        "ConvTranspose" => conv(l, n, true),
        "Gemm" => gemm(l, n),
        "MatMul" => {
            let (x, w) = (l.in_t(n, 0)?, l.in_t(n, 1)?);
            let y = matmul(l, x, w)?;
            l.out(n, 0, Val::T(y));
            Ok(())
        }
        "Add" | "Sub" | "Mul" | "Div" if int_arithmetic(l, n) => {
            let v = int_binary(l, n)?;
            l.out(n, 0, v);
            Ok(())
        }
        "Add" | "Sub" | "Mul" | "Div" | "PRelu" => {
            let (x, mut y) = (l.in_t(n, 0)?, l.in_t(n, 1)?);
            let mut kind = match op {
                "Add" => OpKind::Add,
                "Sub" => OpKind::Sub,
                "Mul" => OpKind::Mul,
                "Div" => OpKind::Div,
                _ => OpKind::PRelu,
            };
            if kind == OpKind::PRelu {
                // The slope broadcasts "unidirectionally": [C] means per channel of NCHW.
                let (xs, ys) = (l.shape(x), l.shape(y));
                if ys.len() == 1 && xs.len() > 2 && ys[0] == xs[1] && ys[0] != xs[xs.len() - 1] {
                    let mut t = vec![ys[0]];
                    t.extend(std::iter::repeat_n(1, xs.len() - 2));
                    y = l.reshape(y, &t)?;
                }
            }
            if kind == OpKind::Div && l.g.tensors[y].numel() > 1 {
                if let Some(c) = l.g.tensors[y].const_f32() {
                    // x / c == x * (1/c) up to one rounding; the int8 path needs the product
                    // form for a tensor c (a scalar c becomes an exact lookup table instead).
                    let inv: Vec<f32> = c.iter().map(|v| 1.0 / v).collect();
                    y =
                        l.g.add_f32(format!("{}:recip", l.node_name), l.shape(y), &inv);
                    kind = OpKind::Mul;
                }
            }
            let r = l.binary(kind, x, y)?;
            l.out(n, 0, Val::T(r));
            Ok(())
        }
        "Clip" => {
            let x = l.in_t(n, 0)?;
            let (lo, hi) = if l.opset < 11 {
                (
                    a.float("min", f32::NEG_INFINITY),
                    a.float("max", f32::INFINITY),
                )
            } else {
                // Bounds computed at run time (a log-mel front end clips to its own max
                // minus 80 dB) become element-wise Max/Min with broadcasting.
                let runtime = |l: &Lower, k: usize| {
                    n.input.get(k).is_some_and(|s| !s.is_empty()) && l.opt_host(n, k).is_err()
                };
                if runtime(l, 1) || runtime(l, 2) {
                    let mut y = x;
                    for (k, f) in [(1, BinaryFn::Max), (2, BinaryFn::Min)] {
                        if let Some(b) = l.opt_t(n, k)? {
                            y = crate::lower_math::op_as(
                                l,
                                OpKind::Binary,
                                vec![Some(y), Some(b)],
                                vec![f as i32],
                                &[],
                                cairn_core::DType::F32,
                            )?;
                        }
                    }
                    l.out(n, 0, Val::T(y));
                    return Ok(());
                }
                let lo = l
                    .opt_host(n, 1)?
                    .map_or(f32::NEG_INFINITY, |h| h.to_f32()[0]);
                let hi = l.opt_host(n, 2)?.map_or(f32::INFINITY, |h| h.to_f32()[0]);
                (lo, hi)
            };
            let y = l.unary(x, UnaryFn::Clip, lo, hi)?;
            l.out(n, 0, Val::T(y));
            Ok(())
        }
        "Softmax" => {
            let x = l.in_t(n, 0)?;
            let s = l.shape(x);
            let r = s.len() as i64;
            let ax = a.int("axis", if l.opset < 13 { 1 } else { -1 });
            let ax = if ax < 0 { ax + r } else { ax } as usize;
            if ax >= s.len() {
                bail!("Softmax axis out of range");
            }
            let outer: usize = s[..ax].iter().product();
            let (nn, inner) = if l.opset < 13 {
                (s[ax..].iter().product(), 1)
            } else {
                (s[ax], s[ax + 1..].iter().product())
            };
            let y = l.op(
                OpKind::Softmax,
                vec![Some(x)],
                vec![outer as i32, nn as i32, inner as i32, 0],
                &[],
            )?;
            l.out(n, 0, Val::T(y));
            Ok(())
        }
        "LayerNormalization" => {
            let x = l.in_t(n, 0)?;
            let r = l.shape(x).len() as i64;
            let ax = a.int("axis", -1);
            let ax = if ax < 0 { ax + r } else { ax };
            let g = l.in_t(n, 1)?;
            let b = l.opt_t(n, 2)?;
            let inner: usize = l.shape(x)[ax as usize..].iter().product();
            let g = l.reshape(g, &[inner])?;
            let b = b.map(|b| l.reshape(b, &[inner])).transpose()?;
            let eps = a.float("epsilon", 1e-5);
            let y = l.op(
                OpKind::LayerNorm,
                vec![Some(x), Some(g), b],
                vec![ax as i32, eps.to_bits() as i32],
                &[],
            )?;
            l.out(n, 0, Val::T(y));
            crate::lower_norm::layer_norm_stats(l, n, x, ax as usize, eps)
        }
        "BatchNormalization" => {
            let x = l.in_t(n, 0)?;
            let get =
                |l: &Lower, k: usize| -> Result<Vec<f32>> { Ok(l.host(&n.input[k])?.to_f32()) };
            let (sc, bi, mean, var) = (get(l, 1)?, get(l, 2)?, get(l, 3)?, get(l, 4)?);
            let eps = a.float("epsilon", 1e-5);
            let mul: Vec<f32> = sc
                .iter()
                .zip(&var)
                .map(|(s, v)| s / (v + eps).sqrt())
                .collect();
            let add: Vec<f32> = bi
                .iter()
                .zip(&mean)
                .zip(&mul)
                .map(|((b, m), k)| b - m * k)
                .collect();
            let r = l.shape(x).len();
            let mut cs = vec![mul.len()];
            cs.extend(std::iter::repeat_n(1, r.saturating_sub(2)));
            let m =
                l.g.add_f32(format!("{}:scale", l.node_name), cs.clone(), &mul);
            let ad = l.g.add_f32(format!("{}:shift", l.node_name), cs, &add);
            let y = l.binary(OpKind::Mul, x, m)?;
            let y = l.binary(OpKind::Add, y, ad)?;
            l.out(n, 0, Val::T(y));
            Ok(())
        }
        "MaxPool" | "AveragePool" if crate::lower_pool::lower_pool_op(l, n)? => Ok(()),
        "MaxPool" => pool(l, n, true),
        "AveragePool" => pool(l, n, false),
        "GlobalAveragePool" => {
            let x = l.in_t(n, 0)?;
            let y = l.op(OpKind::GlobalAveragePool, vec![Some(x)], vec![], &[])?;
            l.out(n, 0, Val::T(y));
            Ok(())
        }
        "ReduceMean" => {
            let x = l.in_t(n, 0)?;
            let r = l.shape(x).len();
            let axes = if l.opset >= 18 {
                l.ints_in(n, 1)?
            } else {
                a.ints("axes")
            };
            let axes: Vec<usize> = match axes.filter(|v| !v.is_empty()) {
                Some(v) => v
                    .iter()
                    .map(|&x| {
                        if x < 0 {
                            (x + r as i64) as usize
                        } else {
                            x as usize
                        }
                    })
                    .collect(),
                None if a.int("noop_with_empty_axes", 0) != 0 => {
                    l.out(n, 0, Val::T(x));
                    return Ok(());
                }
                None => (0..r).collect(),
            };
            let mask = axes.iter().fold(0i32, |m, &ax| m | (1 << ax));
            let y = l.op(
                OpKind::ReduceMean,
                vec![Some(x)],
                vec![mask, a.int("keepdims", 1) as i32],
                &[],
            )?;
            l.out(n, 0, Val::T(y));
            Ok(())
        }
        "Resize" | "Upsample" => crate::lower_resize::resize(l, n),
        _ if crate::lower_pool::lower_pool_op(l, n)? => Ok(()),
        _ if crate::lower_attention::lower_attention_op(l, n)? => Ok(()),
        _ if crate::lower_crop::lower_crop_op(l, n)? => Ok(()),
        _ if crate::lower_col2im::lower_col2im_op(l, n)? => Ok(()),
        _ if crate::lower_grid_sample::lower_grid_sample_op(l, n)? => Ok(()),
        _ if crate::lower_math::lower_math_op(l, n)? => Ok(()),
        _ if crate::lower_index::lower_index_op(l, n)? => Ok(()),
        _ if crate::lower_reduce::lower_reduce_op(l, n)? => Ok(()),
        _ if crate::lower_norm::lower_norm_op(l, n)? => Ok(()),
        _ if crate::lower_rnn::lower_rnn_op(l, n)? => Ok(()),
        _ if crate::lower_signal::lower_signal_op(l, n)? => Ok(()),
        other => bail!(
            "ONNX op '{other}' is not supported by cairn (node '{}')",
            l.node_name
        ),
    }
}

/// Whether an Add/Sub/Mul computes on a run-time integer tensor (ids, lengths, masks as
/// 0/1), its other operand a run-time integer tensor or an integer constant.
pub(crate) fn int_arithmetic(l: &Lower, n: &NodeProto) -> bool {
    let runtime_i32 = |name: &str| matches!(l.val(name), Ok(Val::T(t)) if l.g.tensors[t].dtype == DType::I32 && !l.g.tensors[t].is_const());
    let int = |name: &str| match l.val(name) {
        Ok(Val::Int(h)) => !h.is_float(),
        Ok(Val::T(t)) => l.g.tensors[t].dtype == DType::I32,
        _ => false,
    };
    n.input.len() == 2
        && (runtime_i32(&n.input[0]) || runtime_i32(&n.input[1]))
        && int(&n.input[0])
        && int(&n.input[1])
}

/// Integer Add/Sub/Mul/Div/Mod at run time (a TensorFlow Embedding's
/// `where(i < 0, i + n, i)` as masks times ids; a YOLOv10 head's flat TopK index split into
/// anchor `i / nc` and class `i mod nc`): on the integers as f32, truncated back into i32
/// (Div truncates toward zero, as ONNX's integer Div; Mod is exact in f32, its sign the
/// divisor's, or the dividend's with `fmod`). cairn's arithmetic kernels are f32 and int8; the
/// result is exact while operands and result stay within ±2^24 (ids, positions, lengths;
/// for Div, |a| + |b| < 2^24, so the rounded quotient never reaches the next integer),
/// which the constants are checked against here; a run-time value beyond it is rounded.
/// A constant divisor of zero is refused.
pub(crate) fn int_binary(l: &mut Lower, n: &NodeProto) -> Result<Val> {
    const EXACT: i64 = 1 << 24;
    let kind = match n.op_type.as_str() {
        "Add" => OpKind::Add,
        "Sub" => OpKind::Sub,
        "Div" => OpKind::Div,
        "Mod" => OpKind::Binary,
        _ => OpKind::Mul,
    };
    let mut fs = [0usize; 2];
    for (k, f) in fs.iter_mut().enumerate() {
        let name = &n.input[k];
        *f = match l.val(name)? {
            Val::T(t) if !l.g.tensors[t].is_const() => crate::lower_shape::int_to_float(l, t)?,
            _ => {
                let h = l.host(name)?;
                let v = h.to_i64();
                if v.iter().any(|x| x.abs() > EXACT) {
                    bail!(
                        "integer {} with a constant beyond ±2^24 is not supported",
                        n.op_type
                    );
                }
                if matches!(kind, OpKind::Div | OpKind::Binary) && k == 1 && v.contains(&0) {
                    bail!("integer {} by a constant zero", n.op_type);
                }
                let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                l.g.add_f32(format!("{name}:f32"), h.shape.clone(), &f)
            }
        };
    }
    let r = if kind == OpKind::Binary {
        let f = if Attrs(n).int("fmod", 0) != 0 {
            BinaryFn::Fmod
        } else {
            BinaryFn::Mod
        };
        l.op(kind, vec![Some(fs[0]), Some(fs[1])], vec![f as i32], &[])?
    } else {
        l.binary(kind, fs[0], fs[1])?
    };
    let y = crate::lower_shape::float_to_int(l, r)?;
    Ok(crate::lower_math::as_val(l, y))
}

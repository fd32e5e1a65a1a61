//! The ONNX `Attention` op (opset 23) as the ops its function body expands to: heads split
//! from 3-d inputs, the past key/value concatenated, grouped KV heads repeated,
//! `(Q·√s)(K·√s)ᵀ`, softcap, the mask (bool or float, 2-d to 4-d, padded to the total
//! sequence) and the causal bias added, Softmax, the product with V; the present
//! key/value and the QK output (`qk_matmul_output_mode` 0–3) as the reference computes
//! them, and the keys past `nonpad_kv_seqlen` (opset 24) masked. Shapes must be known at
//! convert time.
//! `RotaryEmbedding` (opset 23) likewise: the cos/sin rows gathered by position, the
//! rotated halves (or even/odd lanes) as Gathers with constant indices, products, sums.

use anyhow::{bail, Result};
use cairn_core::{DType, OpKind};

use crate::lower::{Lower, Val};
use crate::lower_math::{op_as, typed_t};
use crate::onnx::{Attrs, NodeProto};

pub(crate) fn lower_attention_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    match n.op_type.as_str() {
        "Attention" => attention(l, n)?,
        "RotaryEmbedding" => rotary_embedding(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// `[B, S, H·D]` → `[B, H, S, D]`.
fn split_heads(l: &mut Lower, x: usize, heads: i64, what: &str) -> Result<usize> {
    let s = l.shape(x);
    let h = usize::try_from(heads).unwrap_or(0);
    if h == 0 || !s[2].is_multiple_of(h) {
        bail!(
            "Attention: {what} hidden size {} does not split into {heads} heads",
            s[2]
        );
    }
    let r = l.reshape(x, &[s[0], s[1], h, s[2] / h])?;
    l.transpose(r, &[0, 2, 1, 3])
}

fn attention(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let (mut q, mut k, mut v) = (l.in_t(n, 0)?, l.in_t(n, 1)?, l.in_t(n, 2)?);
    let rank = l.shape(q).len();
    if l.shape(k).len() != rank || l.shape(v).len() != rank || !(rank == 3 || rank == 4) {
        bail!("Attention: Q, K and V must all be 3-d or all 4-d");
    }
    if rank == 3 {
        q = split_heads(l, q, a.int("q_num_heads", 0), "Q")?;
        k = split_heads(l, k, a.int("kv_num_heads", 0), "K")?;
        v = split_heads(l, v, a.int("kv_num_heads", 0), "V")?;
    }
    let qs = l.shape(q);
    let head = qs[3];
    let scale = if n.attribute.iter().any(|x| x.name == "scale") {
        a.float("scale", 1.0)
    } else {
        1.0 / (head as f32).sqrt()
    };
    let root = scale.sqrt();
    // Present key/value: the past ones followed by this step's.
    let past_len = match l.opt_t(n, 4)? {
        Some(pk) => {
            let len = l.shape(pk)[2];
            k = l.concat(&[pk, k], 2)?;
            len
        }
        None => 0,
    };
    if let Some(pv) = l.opt_t(n, 5)? {
        v = l.concat(&[pv, v], 2)?;
    }
    l.out(n, 1, Val::T(k));
    l.out(n, 2, Val::T(v));
    // Grouped KV heads: each repeated for the query heads that share it.
    let (qh, kvh) = (qs[1], l.shape(k)[1]);
    if qh != kvh {
        if kvh == 0 || !qh.is_multiple_of(kvh) || l.shape(v)[1] != kvh {
            bail!("Attention: {qh} query heads do not share {kvh} key/value heads");
        }
        k = repeat_heads(l, k, qh / kvh)?;
        v = repeat_heads(l, v, qh / kvh)?;
    }
    let total = l.shape(k)[2];
    let sq = qs[2];
    let root_t = l.scalar(root);
    let qsc = l.binary(OpKind::Mul, q, root_t)?;
    let ksc = l.binary(OpKind::Mul, k, root_t)?;
    let kt = l.transpose(ksc, &[0, 1, 3, 2])?;
    let mut qk = crate::lower_nn::matmul(l, qsc, kt)?;
    let softcap = a.float("softcap", 0.0);
    if softcap > 0.0 {
        let c = l.scalar(softcap);
        let d = l.binary(OpKind::Div, qk, c)?;
        let t = l.unary(d, cairn_core::op::UnaryFn::Tanh, 0.0, 0.0)?;
        qk = l.binary(OpKind::Mul, t, c)?;
    }
    let mode = a.int("qk_matmul_output_mode", 0);
    let mut shown = qk;
    let bias = bias(l, n, sq, total, past_len, a.int("is_causal", 0) != 0)?;
    let with_bias = match bias {
        Some(b) => l.binary(OpKind::Add, qk, b)?,
        None => qk,
    };
    if mode == 2 {
        shown = with_bias;
    }
    let s = l.shape(with_bias);
    let outer: usize = s[..3].iter().product();
    let p = l.op(
        OpKind::Softmax,
        vec![Some(with_bias)],
        vec![outer as i32, total as i32, 1, 0],
        &[],
    )?;
    if mode == 3 {
        shown = p;
    }
    if !(0..=3).contains(&mode) {
        bail!("Attention: qk_matmul_output_mode {mode} is not one of 0..3");
    }
    l.out(n, 3, Val::T(shown));
    let mut y = crate::lower_nn::matmul(l, p, v)?;
    if rank == 3 {
        let ys = l.shape(y);
        let t = l.transpose(y, &[0, 2, 1, 3])?;
        y = l.reshape(t, &[ys[0], ys[2], ys[1] * ys[3]])?;
    }
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// `[B, H, S, D]` → `[B, H·r, S, D]`, each head `r` times in a row.
fn repeat_heads(l: &mut Lower, x: usize, r: usize) -> Result<usize> {
    let s = l.shape(x);
    let x5 = l.reshape(x, &[s[0], s[1], 1, s[2], s[3]])?;
    let target = [s[0], s[1], r, s[2], s[3]];
    let t = op_as(l, OpKind::Tile, vec![Some(x5)], vec![], &target, DType::F32)?;
    l.reshape(t, &[s[0], s[1] * r, s[2], s[3]])
}

/// The additive bias of the scores: the mask (bool → 0 / −∞; padded with −∞ up to the
/// total sequence) plus, when causal, −∞ where key `j` lies after query `i` (past keys are
/// never masked). `None` when there is neither.
fn bias(
    l: &mut Lower,
    n: &NodeProto,
    sq: usize,
    total: usize,
    past_len: usize,
    causal: bool,
) -> Result<Option<usize>> {
    let mask_name = n.input.get(3).filter(|s| !s.is_empty()).cloned();
    let mut mask = match mask_name {
        None => None,
        Some(name) => {
            let is_bool = match l.val(&name)? {
                Val::Int(h) => !h.is_float(),
                Val::T(t) | Val::FakeQ { t, .. } => l.g.tensors[t].dtype == DType::I32,
                Val::Absent => false,
            };
            let m = if is_bool {
                let cond = typed_t(l, &name, DType::I32)?;
                let zero = l.scalar(0.0);
                let ninf = l.scalar(f32::NEG_INFINITY);
                op_as(
                    l,
                    OpKind::Where,
                    vec![Some(cond), Some(zero), Some(ninf)],
                    vec![],
                    &[],
                    DType::F32,
                )?
            } else {
                l.t(&name)?
            };
            let ms = l.shape(m);
            let last = *ms.last().unwrap_or(&0);
            if ms.is_empty() || last > total {
                bail!("Attention: mask shape {ms:?} does not fit {total} keys");
            }
            let m = if last < total {
                let mut ps = ms.clone();
                let r = ps.len();
                ps[r - 1] = total - last;
                let count = crate::lower_shape::numel(&ps)?;
                let pad = l.g.add_f32(
                    format!("{}:mask_pad", l.node_name),
                    ps,
                    &vec![f32::NEG_INFINITY; count],
                );
                l.concat(&[m, pad], r - 1)?
            } else {
                m
            };
            Some(m)
        }
    };
    if causal {
        let tri: Vec<f32> = (0..sq)
            .flat_map(|i| {
                (0..total).map(move |j| {
                    if j >= past_len && j - past_len > i {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let c =
            l.g.add_f32(format!("{}:causal", l.node_name), vec![sq, total], &tri);
        mask = Some(match mask {
            Some(m) => l.binary(OpKind::Add, m, c)?,
            None => c,
        });
    }
    // Keys at or past each batch's `nonpad_kv_seqlen` (opset 24) are masked.
    if let Some(name) = n.input.get(6).filter(|s| !s.is_empty()).cloned() {
        let lens = typed_t(l, &name, DType::I32)?;
        let b = l.shape(lens).iter().product::<usize>();
        let lens = l.reshape(lens, &[b, 1])?;
        let iota: Vec<i32> = (0..total as i32).collect();
        let iota =
            l.g.add_i32(format!("{}:key_index", l.node_name), vec![total], &iota);
        let kept = op_as(
            l,
            OpKind::Binary,
            vec![Some(iota), Some(lens)],
            vec![cairn_core::op::BinaryFn::Less as i32],
            &[],
            DType::I32,
        )?;
        let zero = l.scalar(0.0);
        let ninf = l.scalar(f32::NEG_INFINITY);
        let pad = op_as(
            l,
            OpKind::Where,
            vec![Some(kept), Some(zero), Some(ninf)],
            vec![],
            &[],
            DType::F32,
        )?;
        let pad = l.reshape(pad, &[b, 1, 1, total])?;
        mask = Some(match mask {
            Some(m) => l.binary(OpKind::Add, m, pad)?,
            None => pad,
        });
    }
    Ok(mask)
}

/// Gather `idx` along `axis` of `x` (indices known at convert time).
fn take(l: &mut Lower, x: usize, axis: usize, idx: &[usize], tag: &str) -> Result<usize> {
    let v: Vec<i32> = idx.iter().map(|&i| i as i32).collect();
    let t =
        l.g.add_i32(format!("{}:{tag}", l.node_name), vec![v.len()], &v);
    op_as(
        l,
        OpKind::Gather,
        vec![Some(x), Some(t)],
        vec![axis as i32, 0],
        &[],
        DType::F32,
    )
}

/// RotaryEmbedding: x rotated pairwise by the cached cos/sin of each position.
fn rotary_embedding(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let x = l.in_t(n, 0)?;
    let xs = l.shape(x);
    // To [B, S, H, D].
    let x4 = match xs.len() {
        4 => l.transpose(x, &[0, 2, 1, 3])?,
        3 => {
            let heads = usize::try_from(a.int("num_heads", 0)).unwrap_or(0);
            if heads == 0 || !xs[2].is_multiple_of(heads) {
                bail!(
                    "RotaryEmbedding: a 3-d input needs num_heads dividing its hidden size {}",
                    xs[2]
                );
            }
            l.reshape(x, &[xs[0], xs[1], heads, xs[2] / heads])?
        }
        r => bail!("RotaryEmbedding of a rank-{r} input (3-d or 4-d)"),
    };
    let s4 = l.shape(x4);
    let (b, seq, head) = (s4[0], s4[1], s4[3]);
    let rd = match usize::try_from(a.int("rotary_embedding_dim", 0)).unwrap_or(0) {
        0 => head,
        d if d <= head && d.is_multiple_of(2) => d,
        d => bail!("RotaryEmbedding: rotary_embedding_dim {d} does not fit head size {head}"),
    };
    let half = rd / 2;
    let cache = |l: &mut Lower, k: usize| -> Result<usize> {
        let c = l.in_t(n, k)?;
        let c = match n.input.get(3).filter(|s| !s.is_empty()) {
            Some(pos) => {
                let idx = typed_t(l, &pos.clone(), DType::I32)?;
                op_as(
                    l,
                    OpKind::Gather,
                    vec![Some(c), Some(idx)],
                    vec![0, 0],
                    &[],
                    DType::F32,
                )?
            }
            None => c,
        };
        let cs = l.shape(c);
        if cs.iter().product::<usize>() != b * seq * half
            && cs.iter().product::<usize>() != seq * half
        {
            bail!("RotaryEmbedding: cos/sin rows {cs:?} do not fit [{b}, {seq}, {half}]");
        }
        let lead = if cs.iter().product::<usize>() == seq * half {
            1
        } else {
            b
        };
        l.reshape(c, &[lead, seq, 1, half])
    };
    let (cos, sin) = (cache(l, 1)?, cache(l, 2)?);
    let interleaved = a.int("interleaved", 0) != 0;
    let (i1, i2): (Vec<usize>, Vec<usize>) = if interleaved {
        (
            (0..half).map(|i| 2 * i).collect(),
            (0..half).map(|i| 2 * i + 1).collect(),
        )
    } else {
        ((0..half).collect(), (half..rd).collect())
    };
    let x1 = take(l, x4, 3, &i1, "x1")?;
    let x2 = take(l, x4, 3, &i2, "x2")?;
    let (c1, s2) = (
        l.binary(OpKind::Mul, cos, x1)?,
        l.binary(OpKind::Mul, sin, x2)?,
    );
    let real = l.binary(OpKind::Sub, c1, s2)?;
    let (s1, c2) = (
        l.binary(OpKind::Mul, sin, x1)?,
        l.binary(OpKind::Mul, cos, x2)?,
    );
    let imag = l.binary(OpKind::Add, s1, c2)?;
    let mut rot = l.concat(&[real, imag], 3)?;
    if interleaved {
        let perm: Vec<usize> = (0..half).flat_map(|i| [i, half + i]).collect();
        rot = take(l, rot, 3, &perm, "interleave")?;
    }
    if rd < head {
        let rest: Vec<usize> = (rd..head).collect();
        let pass = take(l, x4, 3, &rest, "pass")?;
        rot = l.concat(&[rot, pass], 3)?;
    }
    let y = if xs.len() == 4 {
        l.transpose(rot, &[0, 2, 1, 3])?
    } else {
        l.reshape(rot, &xs)?
    };
    l.out(n, 0, Val::T(y));
    Ok(())
}

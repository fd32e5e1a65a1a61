//! Float-graph rewrites before quantization: fold per-channel affine ops (BatchNorm) into
//! the producing conv/FC or the FullyConnected that reads them, fuse Relu/Clip into their producer, recognise HardSwish, and
//! make `x · gate(x)` (HardSigmoid, Sigmoid gates) one element-wise function of `x`;
//! decomposed LayerNorms become one op (`fuse_norm.rs`).
//! Each rewrite only fires when the intermediate tensor has exactly one reader and is not
//! a graph output, so the graph's meaning never changes.

use cairn_core::op::{conv, UnaryFn};
use cairn_core::OpKind;

use crate::ir::{f32_bytes, Graph, HOp, HTensor, Hint, Links};
use crate::lower::INF_BITS;

/// The one op reading `t`, if `t` has exactly one reader, is not a graph output and is not
/// a quantization point of a QDQ model (fusing across one would change the arithmetic the
/// model was quantized for).
pub(crate) fn single_reader(g: &Graph, k: &Links, t: usize) -> Option<usize> {
    let qdq_point = matches!(g.tensors[t].hint, Some(crate::ir::Hint::Act { .. }));
    k.sole_reader(t)
        .filter(|_| !g.outputs.contains(&t) && !qdq_point)
}

pub(crate) fn act_slots(kind: OpKind) -> Option<(usize, usize)> {
    match kind {
        OpKind::Conv => Some((conv::ACT_LO, conv::ACT_HI)),
        OpKind::ConvTranspose => Some((conv::T_ACT_LO, conv::T_ACT_HI)),
        OpKind::FullyConnected | OpKind::Add | OpKind::Sub | OpKind::Mul => Some((0, 1)),
        _ => None,
    }
}

/// Narrow the activation clamp in `params` (slots `(a, b)`) to also clamp to `[lo, hi]`:
/// a clamp of a clamp is one clamp to the intersection. Disjoint ranges (or a NaN bound)
/// leave `params` as they are and give false.
pub(crate) fn narrow_act(params: &mut [i32], (a, b): (usize, usize), lo: f32, hi: f32) -> bool {
    let (plo, phi) = (
        f32::from_bits(params[a] as u32),
        f32::from_bits(params[b] as u32),
    );
    let (ilo, ihi) = (lo.max(plo), hi.min(phi));
    if ilo > ihi || ilo.is_nan() || ihi.is_nan() {
        return false;
    }
    params[a] = ilo.to_bits() as i32;
    params[b] = ihi.to_bits() as i32;
    true
}

pub(crate) fn has_act(g: &Graph, op: usize) -> bool {
    let o = &g.ops[op];
    act_slots(o.kind).is_some_and(|(a, b)| o.params[a] != INF_BITS.0 || o.params[b] != INF_BITS.1)
}

/// Scalar value of a constant tensor, if it is one.
pub fn const_scalar(g: &Graph, t: usize) -> Option<f32> {
    let h = &g.tensors[t];
    (h.numel() == 1)
        .then(|| h.const_f32())
        .flatten()
        .map(|v| v[0])
}

/// Op `op`'s bias as `n` values: zeros without one, `None` unless it is a constant of `n`.
fn const_bias(g: &Graph, op: usize, n: usize) -> Option<Vec<f32>> {
    match g.ops[op].inputs.get(2).copied().flatten() {
        Some(b) => g.tensors[b].const_f32().filter(|v| v.len() == n),
        None => Some(vec![0.0; n]),
    }
}

/// Give op `op` new constant weights `wv` (in the shape of its weights `w`) and bias,
/// named after it.
fn set_weights(g: &mut Graph, op: usize, w: usize, wv: &[f32], bias: &[f32]) {
    let name = g.ops[op].name.clone();
    let wshape = g.tensors[w].shape.clone();
    let nw = g.add_const(
        format!("{name}:w"),
        cairn_core::DType::F32,
        wshape,
        f32_bytes(wv),
    );
    let nb = g.add_f32(format!("{name}:b"), vec![bias.len()], bias);
    let o = &mut g.ops[op];
    o.inputs[1] = Some(nw);
    if o.inputs.len() < 3 {
        o.inputs.push(Some(nb));
    } else {
        o.inputs[2] = Some(nb);
    }
}

/// A conv whose kernel spans its input's whole height with no vertical padding (one output
/// row: a filter over all of a montage's channels × rows, or a spectrogram's bins) is a
/// `1 × kw` conv over `c·h` channels of one row: the same weights in the same order, the
/// input reshaped. Row convs have fast paths that such tall kernels missed (an EEG model's
/// int8 96 × 3 conv ran on the reference at 6 GMAC/s).
fn full_height_as_row(g: &mut Graph) -> bool {
    for p in 0..g.ops.len() {
        let op = &g.ops[p];
        if op.kind != OpKind::Conv || op.params[conv::GROUP] != 1 || op.outputs.len() != 1 {
            continue;
        }
        let (Some(x), Some(w)) = (op.inputs[0], op.inputs.get(1).copied().flatten()) else {
            continue;
        };
        let (xs, ws) = (&g.tensors[x].shape, &g.tensors[w].shape);
        if xs.len() != 4 || ws.len() != 4 || !g.tensors[w].is_const() {
            continue;
        }
        let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
        let (oc, kh, kw) = (ws[0], ws[2], ws[3]);
        let pr = &op.params;
        // One output column too (the window is the whole input) is the whole-input
        // path's already.
        let one_column = wd + (pr[conv::PL] + pr[conv::PR]) as usize <= kw;
        if kh != h || kh == 1 || ws[1] != c || pr[conv::PT] != 0 || pr[conv::PB] != 0 || one_column
        {
            continue;
        }
        let name = op.name.clone();
        let mut wt = g.tensors[w].clone();
        wt.name = format!("{name}:row_weights");
        wt.shape = vec![oc, c * kh, 1, kw];
        let xt = HTensor {
            name: format!("{name}:rows"),
            shape: vec![n, c * h, 1, wd],
            data: None,
            ..g.tensors[x].clone()
        };
        g.tensors.push(wt);
        let nw = g.tensors.len() - 1;
        g.tensors.push(xt);
        let xr = g.tensors.len() - 1;
        let op = &mut g.ops[p];
        op.inputs[0] = Some(xr);
        op.inputs[1] = Some(nw);
        op.params[conv::SH] = 1;
        op.params[conv::DH] = 1;
        g.ops.insert(
            p,
            HOp {
                kind: OpKind::Reshape,
                inputs: vec![Some(x)],
                outputs: vec![xr],
                params: vec![],
                name: format!("{name}:rows"),
            },
        );
        return true;
    }
    false
}

/// Fold `Mul(conv, c)` / `Add(conv, c)` with per-output-channel constants into the conv.
fn fold_affine(g: &mut Graph) -> bool {
    let k = Links::of(g);
    for p in 0..g.ops.len() {
        let kind = g.ops[p].kind;
        // A ConvTranspose's weight is [C, O, kh, kw]: per output channel only with one group.
        let deconv = kind == OpKind::ConvTranspose;
        if !(matches!(kind, OpKind::Conv | OpKind::FullyConnected)
            || deconv && g.ops[p].params[conv::GROUP] == 1)
            || has_act(g, p)
        {
            continue;
        }
        let out = g.ops[p].outputs[0];
        let Some(m) = single_reader(g, &k, out) else {
            continue;
        };
        let mo = &g.ops[m];
        // The conv may be either operand of Mul and Add (exporters write `Mul(scale, x)`),
        // only the first of Sub.
        if !matches!(mo.kind, OpKind::Mul | OpKind::Add | OpKind::Sub) || has_act(g, m) {
            continue;
        }
        let commutes = matches!(mo.kind, OpKind::Mul | OpKind::Add);
        let operand = |i: usize| mo.inputs.get(i).copied().flatten();
        let c = match (operand(0) == Some(out), operand(1) == Some(out)) {
            (true, false) => operand(1),
            (false, true) if commutes => operand(0),
            _ => None,
        };
        let Some(c) = c else { continue };
        let Some(cv) = g.tensors[c].const_f32() else {
            continue;
        };
        let w = g.ops[p].inputs[1].unwrap_or(usize::MAX);
        let Some(wv) = g.tensors.get(w).and_then(|t| t.const_f32()) else {
            continue;
        };
        let ys = g.tensors[out].shape.clone();
        let oc = if kind != OpKind::FullyConnected {
            ys[1]
        } else {
            ys[ys.len() - 1]
        };
        let cs = &g.tensors[c].shape;
        let per_channel = cv.len() == oc && {
            let rank_ok = cs.len() <= ys.len();
            let axis = if kind != OpKind::FullyConnected {
                1
            } else {
                ys.len() - 1
            };
            let lead = ys.len() - cs.len();
            rank_ok
                && cs
                    .iter()
                    .enumerate()
                    .all(|(i, &d)| d == 1 || i + lead == axis)
        };
        if !(per_channel || cv.len() == 1) {
            continue;
        }
        let cat = |i: usize| if cv.len() == 1 { cv[0] } else { cv[i] };
        let Some(mut bias) = const_bias(g, p, oc) else {
            continue;
        };
        let mut wv = wv;
        let per = wv.len() / oc;
        match mo.kind {
            OpKind::Mul if deconv => {
                // [C, O, taps]: output channel o's weights recur in every input channel.
                let taps = wv.len() / (oc * g.tensors[w].shape[0]).max(1);
                for (i, v) in wv.iter_mut().enumerate() {
                    *v *= cat(i / taps.max(1) % oc);
                }
                (0..oc).for_each(|o| bias[o] *= cat(o));
            }
            OpKind::Mul => {
                for o in 0..oc {
                    wv[o * per..(o + 1) * per]
                        .iter_mut()
                        .for_each(|v| *v *= cat(o));
                    bias[o] *= cat(o);
                }
            }
            OpKind::Add => (0..oc).for_each(|o| bias[o] += cat(o)),
            _ => (0..oc).for_each(|o| bias[o] -= cat(o)),
        }
        // Weights given as integers keep them: an Add or Sub leaves them as they were, a
        // Mul scales each output channel's scale (and flips its integers' sign where the
        // factor is negative).
        let hint = match (&g.tensors[w].hint, mo.kind) {
            (h @ Some(Hint::Weight { .. }), OpKind::Add | OpKind::Sub) => h.clone(),
            (Some(Hint::Weight { q, scales, axis }), OpKind::Mul) if !deconv => {
                scaled_weight_hint(q, scales, *axis, oc, &cat)
            }
            _ => None,
        };
        set_weights(g, p, w, &wv, &bias);
        if let Some(nw) = g.ops[p].inputs[1] {
            g.tensors[nw].hint = hint;
        }
        g.ops[p].outputs[0] = g.ops[m].outputs[0];
        g.ops.remove(m);
        return true;
    }
    false
}

/// A weight hint (`q`, scales per output channel along axis 0 or one for all) with output
/// channel `o` multiplied by `c(o)`: the same integers (negated where `c(o) < 0`), scales
/// `|s·c(o)|` per channel. `None` where that cannot hold the values: a zero or non-finite
/// factor, or a −128 to negate.
fn scaled_weight_hint(
    q: &[i8],
    scales: &[f32],
    axis: Option<usize>,
    oc: usize,
    c: &dyn Fn(usize) -> f32,
) -> Option<Hint> {
    if oc == 0 || !q.len().is_multiple_of(oc) || !matches!(axis, None | Some(0)) {
        return None;
    }
    let s = |o: usize| {
        if scales.len() == 1 {
            scales[0]
        } else {
            scales[o]
        }
    };
    if scales.len() != 1 && scales.len() != oc {
        return None;
    }
    let per = q.len() / oc;
    let mut nq = q.to_vec();
    let mut ns = Vec::with_capacity(oc);
    for o in 0..oc {
        let f = c(o);
        if !(f.is_finite() && f != 0.0) {
            return None;
        }
        if f < 0.0 {
            for v in &mut nq[o * per..(o + 1) * per] {
                *v = v.checked_neg()?;
            }
        }
        ns.push((s(o) * f).abs());
    }
    Some(Hint::Weight {
        q: nq,
        scales: ns,
        axis: Some(0),
    })
}

/// Fold `Mul/Add/Sub(x, c)` with a constant along `x`'s last axis (or a scalar) into the
/// FullyConnected that is its one reader: `(x·c) Wᵀ = x (W·diag c)ᵀ` and `(x + d) Wᵀ =
/// x Wᵀ + W d`. A Keras `Dense → ReLU → BatchNormalization → Dense` head exports its BN as
/// such a Mul and Add after the ReLU, and a decomposed norm's scale and shift often sit
/// before a projection, where `fold_affine` (into the producer) cannot take them: two
/// element-wise passes (and in int8, a Mul by a per-tensor quantized constant) less.
fn fold_affine_into_fc(g: &mut Graph) -> bool {
    let k = Links::of(g);
    for m in 0..g.ops.len() {
        let mo = &g.ops[m];
        if !matches!(mo.kind, OpKind::Mul | OpKind::Add | OpKind::Sub)
            || has_act(g, m)
            || mo.inputs.len() != 2
        {
            continue;
        }
        let (Some(x), Some(c)) = (mo.inputs[0], mo.inputs[1]) else {
            continue;
        };
        let mid = mo.outputs[0];
        let Some(f) = single_reader(g, &k, mid) else {
            continue;
        };
        let fo = &g.ops[f];
        if fo.kind != OpKind::FullyConnected || fo.inputs[0] != Some(mid) || has_act(g, f) {
            continue;
        }
        if g.tensors[x].is_const() || g.tensors[x].shape != g.tensors[mid].shape {
            continue;
        }
        let Some(cv) = g.tensors[c].const_f32() else {
            continue;
        };
        let Some(w) = fo.inputs.get(1).copied().flatten() else {
            continue;
        };
        let Some(mut wv) = g.tensors[w].const_f32() else {
            continue;
        };
        let k = match g.tensors[x].shape.last() {
            Some(&k) if k > 0 => k,
            _ => continue,
        };
        let cs = &g.tensors[c].shape;
        let along_last =
            cv.len() == k && cs.last() == Some(&k) && cs.iter().rev().skip(1).all(|&d| d == 1);
        if !(along_last || cv.len() == 1) || wv.len() % k != 0 {
            continue;
        }
        let n = wv.len() / k;
        let cat = |i: usize| if cv.len() == 1 { cv[0] } else { cv[i] };
        let Some(mut bias) = const_bias(g, f, n) else {
            continue;
        };
        match mo.kind {
            OpKind::Mul => {
                for row in wv.chunks_exact_mut(k) {
                    row.iter_mut().enumerate().for_each(|(i, v)| *v *= cat(i));
                }
            }
            kind => {
                let sign = if kind == OpKind::Add { 1.0 } else { -1.0 };
                for (b, row) in bias.iter_mut().zip(wv.chunks_exact(k)) {
                    let dot: f64 = row
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| v as f64 * cat(i) as f64)
                        .sum();
                    *b = (*b as f64 + sign * dot) as f32;
                }
            }
        }
        set_weights(g, f, w, &wv, &bias);
        g.ops[f].inputs[0] = Some(x);
        g.ops.remove(m);
        return true;
    }
    false
}

/// `Conv → Reshape → Add/Mul/Sub(per-channel constant)` or `→ Relu/Clip`, where the
/// Reshape keeps the batch and channel axes (a 1-D conv exported as a 2-D one between an
/// `ExpandDims` and a `Squeeze`, with its bias added after: every Keras Conv1D through
/// tf2onnx): the element-wise op moves in front of the Reshape, where `fold_affine` and
/// `fuse_act` take it into the conv. Element-wise ops commute with a reshape that keeps
/// the axis their constant runs along, so the values are the same.
fn hoist_over_reshape(g: &mut Graph) -> bool {
    let k = Links::of(g);
    for r in 0..g.ops.len() {
        if g.ops[r].kind != OpKind::Reshape || g.ops[r].outputs.len() != 1 {
            continue;
        }
        let Some(t) = g.ops[r].inputs.first().copied().flatten() else {
            continue;
        };
        let Some(p) = k.producer(t) else {
            continue;
        };
        if !matches!(g.ops[p].kind, OpKind::Conv | OpKind::ConvTranspose)
            || has_act(g, p)
            || single_reader(g, &k, t) != Some(r)
        {
            continue;
        }
        let u = g.ops[r].outputs[0];
        let Some(m) = single_reader(g, &k, u) else {
            continue;
        };
        let (ts, us) = (g.tensors[t].shape.clone(), g.tensors[u].shape.clone());
        if ts.len() < 2 || us.len() < 2 || ts[..2] != us[..2] {
            continue;
        }
        let mo = &g.ops[m];
        let constant = match mo.kind {
            OpKind::Unary if !has_act(g, m) => {
                let fusable = matches!(
                    UnaryFn::from_code(mo.params[0]),
                    Some(UnaryFn::Relu | UnaryFn::Clip)
                );
                if !fusable || mo.inputs.first().copied().flatten() != Some(u) {
                    continue;
                }
                None
            }
            OpKind::Add | OpKind::Mul | OpKind::Sub if !has_act(g, m) => {
                let operand = |i: usize| mo.inputs.get(i).copied().flatten();
                let at = match (operand(0) == Some(u), operand(1) == Some(u)) {
                    (true, false) => 1,
                    (false, true) if mo.kind != OpKind::Sub => 0,
                    _ => continue,
                };
                let Some(c) = operand(at) else { continue };
                let Some(cv) = g.tensors[c].const_f32() else {
                    continue;
                };
                // Scalar, or one value per channel along axis 1 of the reshaped tensor.
                let cs = &g.tensors[c].shape;
                let lead = us.len().saturating_sub(cs.len());
                let per_channel = cs.len() <= us.len()
                    && cv.len() == us[1]
                    && cs.iter().enumerate().all(|(i, &d)| d == 1 || i + lead == 1);
                if !(cv.len() == 1 || per_channel) {
                    continue;
                }
                Some((at, cv))
            }
            _ => continue,
        };
        let name = g.ops[m].name.clone();
        if let Some((at, cv)) = constant {
            let mut shape = vec![1; ts.len()];
            shape[1] = cv.len();
            let nc = g.add_f32(format!("{name}:per_channel"), shape, &cv);
            g.ops[m].inputs[at] = Some(nc);
        }
        let v = g.add(format!("{name}:before_reshape"), g.tensors[t].dtype, ts);
        let w = g.ops[m].outputs[0];
        let mo = &mut g.ops[m];
        for i in mo.inputs.iter_mut().filter(|i| **i == Some(u)) {
            *i = Some(t);
        }
        mo.outputs[0] = v;
        g.ops[r].inputs[0] = Some(v);
        g.ops[r].outputs[0] = w;
        // The element-wise op now runs before the Reshape (which follows it directly).
        let op = g.ops.remove(m);
        let r_at = if m < r { r - 1 } else { r };
        g.ops.insert(r_at, op);
        return true;
    }
    false
}

/// Fuse Relu / Clip into the producing op's activation clamp.
fn fuse_act(g: &mut Graph) -> bool {
    let k = Links::of(g);
    for p in 0..g.ops.len() {
        let Some((slo, shi)) = act_slots(g.ops[p].kind) else {
            continue;
        };
        if g.ops[p].outputs.len() != 1 {
            continue;
        }
        let out = g.ops[p].outputs[0];
        let Some(u) = single_reader(g, &k, out) else {
            continue;
        };
        let uo = &g.ops[u];
        if uo.kind != OpKind::Unary {
            continue;
        }
        let (lo, hi) = match UnaryFn::from_code(uo.params[0]) {
            Some(UnaryFn::Relu) => (0.0f32, f32::INFINITY),
            Some(UnaryFn::Clip) => (
                f32::from_bits(uo.params[1] as u32),
                f32::from_bits(uo.params[2] as u32),
            ),
            _ => continue,
        };
        let new_out = uo.outputs[0];
        if has_act(g, p) {
            // On top of a clamp (a Relu, then a QDQ pair's range): the intersection, when
            // the two overlap.
            if !narrow_act(&mut g.ops[p].params, (slo, shi), lo, hi) {
                continue;
            }
        } else {
            let op = &mut g.ops[p];
            op.params[slo] = lo.to_bits() as i32;
            op.params[shi] = hi.to_bits() as i32;
        }
        g.ops[p].outputs[0] = new_out;
        g.ops.remove(u);
        return true;
    }
    false
}

/// One axis of a ConvTranspose cut into stride phases: output `q·s + r` is the sum over
/// `t` of `x[q + t] · w[r + p − s·t]` (ONNX: `o = i·s + k − p`), a plain correlation per
/// phase. Offsets `t` span `tmin..=tmax` over all phases (`taps` of them).
struct Phases {
    s: usize,
    p: usize,
    k: usize,
    tmin: i64,
    taps: usize,
    /// Conv padding before and after, and the conv's output length (≥ ceil(out / s)).
    pads: (usize, usize),
    len: usize,
}

impl Phases {
    fn of(s: usize, p: usize, k: usize, input: usize, out: usize) -> Option<Phases> {
        let (si, pi, ki) = (s as i64, p as i64, k as i64);
        let lo = |r: i64| (r + pi - ki).div_euclid(si) + 1;
        let hi = |r: i64| (r + pi).div_euclid(si);
        // Every phase needs a tap (a kernel at least as wide as the stride).
        if s == 0 || k < s || (0..si).any(|r| lo(r) > hi(r)) {
            return None;
        }
        let tmin = (0..si).map(lo).min()?;
        let tmax = (0..si).map(hi).max()?;
        // A phase reading past its own input row (negative padding) is not this form.
        if tmin > 0 {
            return None;
        }
        let taps = (tmax - tmin + 1) as usize;
        let before = (-tmin) as usize;
        let want = out.div_ceil(s);
        let after = (want + taps).saturating_sub(1 + input + before);
        let len = (input + before + after + 1).checked_sub(taps)?;
        Some(Phases {
            s,
            p,
            k,
            tmin,
            taps,
            pads: (before, after),
            len,
        })
    }

    /// The ConvTranspose tap of phase `r` at conv tap `a`, if there is one.
    fn tap(&self, r: usize, a: usize) -> Option<usize> {
        let t = a as i64 + self.tmin;
        let k = r as i64 + self.p as i64 - self.s as i64 * t;
        (0..self.k as i64).contains(&k).then_some(k as usize)
    }
}

/// A ConvTranspose (one group, dilation 1) is a plain conv per stride phase: output pixel
/// `(q·sh + ry, q'·sw + rx)` reads input pixels `(q + ty, q' + tx)` through kernel tap
/// `(ry + ph − sh·ty, rx + pw − sw·tx)`. So it becomes one stride-1 conv to `O·sh·sw`
/// channels (phase `(ry, rx)` of channel `o` at `(o·sh + ry)·sw + rx`; taps a phase
/// lacks hold zero), then a pixel shuffle (Reshape, Transpose, Reshape) and, where the
/// phases overhang the output, a Slice. The conv runs on the GEMM kernels and the shuffle
/// is a move, where a ConvTranspose kernel walks every tap (PP-OCR's DB head, kernel 2
/// stride 2: 10.5 ms at 5.6 GMAC/s before). A kernel equal to its stride adds no work;
/// an overlapping one adds the zero taps (kernel 4 stride 2: 2.25× the MACs), taken only
/// up to [`DECONV_MAX_OVERHEAD`]. The conv keeps the op's bias and fused activation (both
/// commute with the moves); quantized weights from a QDQ model move with their
/// per-channel scales, so the int8 sums are the ConvTranspose's. Runs after the affine
/// and activation folds, so those land in the conv first.
fn deconv_as_conv(g: &mut Graph) -> bool {
    use crate::ir::{HOp, Hint};
    use cairn_core::DType;
    for p in 0..g.ops.len() {
        let op = &g.ops[p];
        if op.kind != OpKind::ConvTranspose || op.params.len() < conv::T_LEN {
            continue;
        }
        let input = |i: usize| op.inputs.get(i).copied().flatten();
        let (Some(x), Some(w), b) = (input(0), input(1), input(2)) else {
            continue;
        };
        let (xs, ws) = (&g.tensors[x].shape, &g.tensors[w].shape);
        let [n, c, h, wd] = xs[..] else { continue };
        let [wc, o, kh, kw] = ws[..] else { continue };
        let y = op.outputs[0];
        let [yn, yo, oh, ow] = g.tensors[y].shape[..] else {
            continue;
        };
        let pr = &op.params;
        let nonneg = |v: i32| usize::try_from(v).ok();
        let (Some(sh), Some(sw), Some(ph), Some(pw)) =
            (nonneg(pr[0]), nonneg(pr[1]), nonneg(pr[2]), nonneg(pr[3]))
        else {
            continue;
        };
        if pr[6] != 1 || pr[7] != 1 || pr[conv::GROUP] != 1 || wc != c || (yn, yo) != (n, o) {
            continue;
        }
        let (Some(ay), Some(ax)) = (
            Phases::of(sh, ph, kh, h, oh),
            Phases::of(sw, pw, kw, wd, ow),
        ) else {
            continue;
        };
        let phases = sh * sw;
        let conv_taps = ay.taps * ax.taps;
        if (conv_taps * phases) as f32 > DECONV_MAX_OVERHEAD * (kh * kw) as f32 {
            continue;
        }
        let Some(wv) = g.tensors[w].const_f32() else {
            continue;
        };
        let bv = match b {
            Some(b) => match g.tensors[b].const_f32() {
                Some(v) if v.len() == o => Some(v),
                _ => continue,
            },
            None => None,
        };
        // Conv weight [(o, ry, rx), c, a, b]  ←  ConvTranspose weight [c, o, ky, kx].
        let from: Vec<Option<usize>> = (0..o * phases * c * conv_taps)
            .map(|i| {
                let (row, rest) = (i / (c * conv_taps), i % (c * conv_taps));
                let (ci, tap) = (rest / conv_taps, rest % conv_taps);
                let (oc, phase) = (row / phases, row % phases);
                let ky = ay.tap(phase / sw, tap / ax.taps)?;
                let kx = ax.tap(phase % sw, tap % ax.taps)?;
                Some(((ci * o + oc) * kh + ky) * kw + kx)
            })
            .collect();
        let repeat = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .flat_map(|&s| std::iter::repeat_n(s, phases))
                .collect()
        };
        // A QDQ weight's int8 values and scales (per output channel, axis 1) move along.
        let w_hint = match &g.tensors[w].hint {
            None => None,
            Some(Hint::Weight { q, scales, axis }) if q.len() == wv.len() => {
                let scales = match axis {
                    None => scales.clone(),
                    Some(1) if scales.len() == o => repeat(scales),
                    _ => continue,
                };
                Some(Hint::Weight {
                    q: from.iter().map(|&i| i.map_or(0, |i| q[i])).collect(),
                    scales,
                    axis: axis.map(|_| 0),
                })
            }
            Some(_) => continue,
        };
        let b_hint = match b.and_then(|b| g.tensors[b].hint.clone()) {
            None => None,
            Some(Hint::Bias { q, scales }) if q.len() == o => Some(Hint::Bias {
                q: q.iter()
                    .flat_map(|&v| std::iter::repeat_n(v, phases))
                    .collect(),
                scales: if scales.len() == o {
                    repeat(&scales)
                } else {
                    scales
                },
            }),
            Some(_) => continue,
        };
        let name = op.name.clone();
        let act = (pr[conv::T_ACT_LO], pr[conv::T_ACT_HI]);
        let ch = o * phases;
        let wnew: Vec<f32> = from.iter().map(|&i| i.map_or(0.0, |i| wv[i])).collect();
        let nw = g.add_f32(
            format!("{name}:wphase"),
            vec![ch, c, ay.taps, ax.taps],
            &wnew,
        );
        g.tensors[nw].hint = w_hint;
        let nb = bv.map(|bv| {
            let t = g.add_f32(format!("{name}:bphase"), vec![ch], &repeat(&bv));
            g.tensors[t].hint = b_hint;
            t
        });
        let (lh, lw) = (ay.len, ax.len);
        let mut params = vec![
            1,
            1,
            ay.pads.0 as i32,
            ax.pads.0 as i32,
            ay.pads.1 as i32,
            ax.pads.1 as i32,
            1,
            1,
            1,
            0,
            0,
        ];
        params[conv::ACT_LO] = act.0;
        params[conv::ACT_HI] = act.1;
        let mut ops = Vec::new();
        let mut step = |g: &mut Graph, kind, input, shape: Vec<usize>, params, last: bool| {
            let out = if last {
                y
            } else {
                g.add(format!("{name}:{}", ops.len()), DType::F32, shape)
            };
            let mut inputs = vec![Some(input)];
            if kind == OpKind::Conv {
                inputs.extend([Some(nw), nb]);
            }
            ops.push(HOp {
                kind,
                inputs,
                outputs: vec![out],
                params,
                name: name.clone(),
            });
            out
        };
        let whole = [n, o, lh * sh, lw * sw];
        let crop = whole != [n, o, oh, ow];
        // Stride 1 (a plain conv with the kernel flipped) needs no shuffle.
        let z = step(
            g,
            OpKind::Conv,
            x,
            vec![n, ch, lh, lw],
            params,
            phases == 1 && !crop,
        );
        let joined = if phases == 1 {
            z
        } else {
            let blocks = step(
                g,
                OpKind::Reshape,
                z,
                vec![n, o, sh, sw, lh, lw],
                vec![],
                false,
            );
            let shuffled = step(
                g,
                OpKind::Transpose,
                blocks,
                vec![n, o, lh, sh, lw, sw],
                vec![0, 1, 4, 2, 5, 3],
                false,
            );
            step(g, OpKind::Reshape, shuffled, whole.to_vec(), vec![], !crop)
        };
        if crop {
            let mut slice = vec![0; 4];
            slice.extend([1; 4]);
            step(g, OpKind::Slice, joined, vec![n, o, oh, ow], slice, true);
        }
        g.ops.splice(p..=p, ops);
        return true;
    }
    false
}

/// The taps of a kernel axis that read the input for some output, `first..=last`:
/// input length `len`, kernel `k`, dilation `d`, stride `s`, leading pad `p0`, `out`
/// outputs. `None` when no tap reads the input at all.
fn live_taps(
    len: usize,
    k: usize,
    d: usize,
    s: usize,
    p0: usize,
    out: usize,
) -> Option<(usize, usize)> {
    if len == 0 || out == 0 || s == 0 {
        return None;
    }
    // Tap t reads input i = o·s + t·d − p0 for some o < out: the first o with o·s at or
    // past p0 − t·d must exist and land before the input's end (O(1) a tap, whatever
    // the output's size).
    let reads = |t: usize| {
        let lo = p0 as i128 - (t as i128) * (d as i128);
        let first = if lo <= 0 {
            0
        } else {
            (lo + s as i128 - 1) / s as i128
        };
        first < out as i128 && first * (s as i128) < lo + len as i128
    };
    let first = (0..k).find(|&t| reads(t))?;
    let last = (0..k).rev().find(|&t| reads(t))?;
    Some((first, last))
}

/// A Conv whose kernel has rows or columns that only ever fall on padding (a 3×3 kernel
/// on a 1×1 map, a 1×3 one on two columns at stride 2: the deep end of a small network,
/// a streaming audio encoder's last layers) loses them: they add nothing (the padding is
/// zero, or the zero point in int8), so the conv computes the same sums over fewer taps
/// and may then take the pointwise or fully connected paths. The pads shrink by the
/// dropped taps, which keeps every output's window where it was, and a trailing pad that
/// no window reaches then is dropped too.
fn crop_dead_taps(g: &mut Graph) -> bool {
    use crate::ir::Hint;
    for p in 0..g.ops.len() {
        let op = &g.ops[p];
        if op.kind != OpKind::Conv || op.params.len() < conv::LEN {
            continue;
        }
        let input = |i: usize| op.inputs.get(i).copied().flatten();
        let (Some(x), Some(w)) = (input(0), input(1)) else {
            continue;
        };
        let [_, _, h, wd] = g.tensors[x].shape[..] else {
            continue;
        };
        let [o, cg, kh, kw] = g.tensors[w].shape[..] else {
            continue;
        };
        let [_, _, oh, ow] = g.tensors[op.outputs[0]].shape[..] else {
            continue;
        };
        let pr = &op.params;
        let u = |i: usize| usize::try_from(pr[i]).ok();
        let (Some(sh), Some(sw), Some(pt), Some(pl), Some(pb), Some(pright), Some(dh), Some(dw)) = (
            u(conv::SH),
            u(conv::SW),
            u(conv::PT),
            u(conv::PL),
            u(conv::PB),
            u(conv::PR),
            u(conv::DH),
            u(conv::DW),
        ) else {
            continue;
        };
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || kh == 0 || kw == 0 {
            continue;
        }
        let (Some((y0, y1)), Some((x0, x1))) = (
            live_taps(h, kh, dh, sh, pt, oh),
            live_taps(wd, kw, dw, sw, pl, ow),
        ) else {
            continue;
        };
        if (y0, y1, x0, x1) == (0, kh - 1, 0, kw - 1) {
            continue;
        }
        // New pads: the dropped leading taps' span comes off the leading pad, the trailing
        // ones' off the trailing pad (a negative pad would crop the input: left alone).
        let (Some(npt), Some(npl), Some(npb), Some(npr)) = (
            pt.checked_sub(y0 * dh),
            pl.checked_sub(x0 * dw),
            pb.checked_sub((kh - 1 - y1) * dh),
            pright.checked_sub((kw - 1 - x1) * dw),
        ) else {
            continue;
        };
        let Some(wv) = g.tensors[w].const_f32() else {
            continue;
        };
        let (nkh, nkw) = (y1 - y0 + 1, x1 - x0 + 1);
        // A trailing pad no window reaches any more goes too (the output count stays).
        let npb = npb.min(((oh - 1) * sh + (nkh - 1) * dh + 1).saturating_sub(h + npt));
        let npr = npr.min(((ow - 1) * sw + (nkw - 1) * dw + 1).saturating_sub(wd + npl));
        let from: Vec<usize> = (0..o * cg * nkh * nkw)
            .map(|i| {
                let (oc_c, tap) = (i / (nkh * nkw), i % (nkh * nkw));
                (oc_c * kh + y0 + tap / nkw) * kw + x0 + tap % nkw
            })
            .collect();
        let hint = match &g.tensors[w].hint {
            None => None,
            Some(Hint::Weight { q, scales, axis }) if q.len() == wv.len() => Some(Hint::Weight {
                q: from.iter().map(|&i| q[i]).collect(),
                scales: scales.clone(),
                axis: *axis,
            }),
            Some(_) => continue,
        };
        let name = format!("{}:live_taps", g.tensors[w].name);
        let wnew: Vec<f32> = from.iter().map(|&i| wv[i]).collect();
        let nw = g.add_f32(name, vec![o, cg, nkh, nkw], &wnew);
        g.tensors[nw].hint = hint;
        let op = &mut g.ops[p];
        op.inputs[1] = Some(nw);
        op.params[conv::PT] = npt as i32;
        op.params[conv::PL] = npl as i32;
        op.params[conv::PB] = npb as i32;
        op.params[conv::PR] = npr as i32;
        return true;
    }
    false
}

/// The most MACs [`deconv_as_conv`] may add, as a multiple of the ConvTranspose's (the
/// zero taps of an overlapping kernel): the GEMM kernels are 10× and more faster than
/// the ConvTranspose kernel, so 2.5× still gains several times.
const DECONV_MAX_OVERHEAD: f32 = 2.5;

/// Op `at` becomes the unary function `params` of `x`, keeping its output and name.
fn become_unary(g: &mut Graph, at: usize, x: usize, params: Vec<i32>) {
    let out = g.ops[at].outputs[0];
    let name = g.ops[at].name.clone();
    g.ops[at] = crate::ir::HOp {
        kind: OpKind::Unary,
        inputs: vec![Some(x)],
        outputs: vec![out],
        params,
        name,
    };
}

/// x * Clip(x + 3, 0, 6) * (1/6)  and  x * HardSigmoid(x; 1/6, 1/2)  →  HardSwish(x).
fn fuse_hardswish(g: &mut Graph) -> bool {
    let k = Links::of(g);
    let near = |a: f32, b: f32| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    let producer = |_: &Graph, t: usize| k.producer(t);
    let is_unary = |g: &Graph, op: usize, f: UnaryFn| {
        g.ops[op].kind == OpKind::Unary && g.ops[op].params[0] == f as i32
    };
    for last in 0..g.ops.len() {
        let lo = &g.ops[last];
        if !matches!(lo.kind, OpKind::Mul | OpKind::Div) || has_act(g, last) {
            continue;
        }
        let is_div = lo.kind == OpKind::Div;
        // Form A: Mul(Mul(x, h), 1/6) or Div(Mul(x, h), 6) with h = Clip(Add(x, 3), 0, 6)
        // Form B: Mul(x, HardSigmoid(x)) with alpha 1/6, beta 1/2
        let (a, b) = (lo.inputs[0].unwrap_or(0), lo.inputs[1].unwrap_or(0));
        let mut found: Option<(usize, Vec<usize>)> = None;
        let pairs = if is_div { vec![] } else { vec![(a, b), (b, a)] };
        for (xs, hs) in pairs {
            if let Some(hp) = producer(g, hs) {
                let ho = &g.ops[hp];
                if is_unary(g, hp, UnaryFn::HardSigmoid)
                    && ho.inputs[0] == Some(xs)
                    && near(f32::from_bits(ho.params[1] as u32), 1.0 / 6.0)
                    && near(f32::from_bits(ho.params[2] as u32), 0.5)
                    && single_reader(g, &k, hs) == Some(last)
                {
                    found = Some((xs, vec![hp]));
                }
            }
        }
        if found.is_none() {
            let pairs = if is_div {
                vec![(a, b)]
            } else {
                vec![(a, b), (b, a)]
            };
            let sixth = if is_div { 6.0 } else { 1.0 / 6.0 };
            for (m, c) in pairs {
                if !const_scalar(g, c).is_some_and(|v| near(v, sixth))
                    || single_reader(g, &k, m) != Some(last)
                {
                    continue;
                }
                let Some(mp) = producer(g, m) else { continue };
                if g.ops[mp].kind != OpKind::Mul || has_act(g, mp) {
                    continue;
                }
                let (p, q) = (
                    g.ops[mp].inputs[0].unwrap_or(0),
                    g.ops[mp].inputs[1].unwrap_or(0),
                );
                for (x, h) in [(p, q), (q, p)] {
                    let Some(cp) = producer(g, h) else { continue };
                    let clip = &g.ops[cp];
                    let relu6 = (clip.kind == OpKind::Unary
                        && clip.params[0] == UnaryFn::Clip as i32
                        && f32::from_bits(clip.params[1] as u32) == 0.0
                        && f32::from_bits(clip.params[2] as u32) == 6.0)
                        || (clip.kind == OpKind::Add
                            && f32::from_bits(clip.params[0] as u32) == 0.0
                            && f32::from_bits(clip.params[1] as u32) == 6.0);
                    if !relu6 || single_reader(g, &k, h) != Some(mp) {
                        continue;
                    }
                    // The Add(x, 3) is either the clip's input or (fused) the clip itself.
                    let (addp, add_out) = if clip.kind == OpKind::Add {
                        (cp, h)
                    } else {
                        let ci = clip.inputs[0].unwrap_or(0);
                        let Some(ap) = producer(g, ci) else { continue };
                        (ap, ci)
                    };
                    let add = &g.ops[addp];
                    let ok_add = add.kind == OpKind::Add
                        && ((add.inputs[0] == Some(x)
                            && add.inputs[1].and_then(|t| const_scalar(g, t)) == Some(3.0))
                            || (add.inputs[1] == Some(x)
                                && add.inputs[0].and_then(|t| const_scalar(g, t)) == Some(3.0)));
                    if ok_add && (addp == cp || single_reader(g, &k, add_out) == Some(cp)) {
                        let mut dead = vec![mp, cp];
                        if addp != cp {
                            dead.push(addp);
                        }
                        found = Some((x, dead));
                    }
                }
            }
        }
        let Some((x, mut dead)) = found else { continue };
        become_unary(g, last, x, vec![UnaryFn::HardSwish as i32, 0, 0]);
        dead.sort_unstable();
        for d in dead.into_iter().rev() {
            g.ops.remove(d);
        }
        return true;
    }
    false
}

/// `Mul(x, HardSigmoid(x))` → `HardSwishAB(x)` and `Mul(x, Sigmoid(x))` → `Silu(x)`: one
/// element-wise function of `x`, so one int8 lookup table instead of a float island (the
/// product of two activations whose ranges differ). Runs after `fuse_hardswish`, which
/// names the a = 1/6, b = 1/2 case HardSwish.
fn fuse_self_gate(g: &mut Graph) -> bool {
    let k = Links::of(g);
    for last in 0..g.ops.len() {
        let lo = &g.ops[last];
        if lo.kind != OpKind::Mul || has_act(g, last) {
            continue;
        }
        let (a, b) = (lo.inputs[0].unwrap_or(0), lo.inputs[1].unwrap_or(0));
        let mut found = None;
        for (x, gate) in [(a, b), (b, a)] {
            let Some(gp) = k.producer(gate) else { continue };
            let go = &g.ops[gp];
            if go.kind != OpKind::Unary
                || go.inputs[0] != Some(x)
                || single_reader(g, &k, gate) != Some(last)
            {
                continue;
            }
            let f = match UnaryFn::from_code(go.params[0]) {
                Some(UnaryFn::HardSigmoid) => UnaryFn::HardSwishAB,
                Some(UnaryFn::Sigmoid) => UnaryFn::Silu,
                _ => continue,
            };
            found = Some((x, gp, vec![f as i32, go.params[1], go.params[2]]));
        }
        let Some((x, gp, params)) = found else {
            continue;
        };
        become_unary(g, last, x, params);
        g.ops.remove(gp);
        return true;
    }
    false
}

/// `Add(c, x)` / `Mul(c, x)` with a constant `c` → `Add(x, c)` / `Mul(x, c)`: the form
/// the other rewrites and the quantizer's lookup tables look for (exporters write both).
fn constants_second(g: &mut Graph) {
    for i in 0..g.ops.len() {
        let op = &g.ops[i];
        if !matches!(op.kind, OpKind::Add | OpKind::Mul) || op.inputs.len() != 2 {
            continue;
        }
        let is_const = |t: Option<usize>| t.is_some_and(|t| g.tensors[t].is_const());
        if is_const(op.inputs[0]) && !is_const(op.inputs[1]) {
            g.ops[i].inputs.swap(0, 1);
        }
    }
}

/// Apply every rewrite until none fires. Returns how many fired.
pub fn fuse(g: &mut Graph) -> usize {
    constants_second(g);
    // Before activation fusion: a clamp fused into the LayerNorm's last op would hide it.
    let mut n = crate::fuse_norm::fuse_layer_norms(g);
    // Hoisting before `fuse_act`: a Relu fused into the Add would pin it after the Reshape.
    loop {
        while fold_affine(g)
            || fold_affine_into_fc(g)
            || hoist_over_reshape(g)
            || fuse_hardswish(g)
            || fuse_self_gate(g)
            || fuse_act(g)
            || deconv_as_conv(g)
            || crop_dead_taps(g)
            || full_height_as_row(g)
        {
            n += 1;
        }
        // Whole element-wise families (a GELU written out) once the rewrites above have
        // settled; what they leave (a clamp to fuse) is taken by another round.
        match crate::elementwise::fuse_known_functions(g)
            + crate::fuse_transpose::sink_transposes(g)
        {
            0 => break,
            k => n += k,
        }
    }
    g.prune();
    n
}

#[cfg(test)]
mod live_tap_tests {
    /// The closed form against the definition (some output's window puts the tap inside
    /// the input), over every small geometry.
    #[test]
    fn live_taps_match_the_definition() {
        for len in 1..7 {
            for k in 1..6 {
                for d in 1..4 {
                    for s in 1..4 {
                        for p0 in 0..8 {
                            for out in 1..6 {
                                let reads = |t: usize| {
                                    (0..out).any(|o| {
                                        let i = (o * s + t * d) as isize - p0 as isize;
                                        i >= 0 && (i as usize) < len
                                    })
                                };
                                let want = (0..k)
                                    .find(|&t| reads(t))
                                    .zip((0..k).rev().find(|&t| reads(t)));
                                assert_eq!(
                                    super::live_taps(len, k, d, s, p0, out),
                                    want,
                                    "len {len} k {k} d {d} s {s} p0 {p0} out {out}"
                                );
                            }
                        }
                    }
                }
            }
        }
        // A huge output is O(1) a tap.
        assert_eq!(
            super::live_taps(3, 3, 1, 1, 1, usize::MAX / 4),
            Some((0, 2))
        );
    }
}

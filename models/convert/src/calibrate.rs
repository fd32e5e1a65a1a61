//! Calibration: run the float graph on sample inputs and choose each activation's range,
//! by min/max, by a percentile of the observed values, or by the clip range that
//! minimizes the int8 error over the observed values (histogram, two passes).

use anyhow::Result;
use cairn_core::DType;

use crate::ir::Graph;
use crate::quantize::Ranges;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    MinMax,
    /// Keep this fraction of values (e.g. 99.99) and clip the tails.
    Percentile(f32),
    /// The range whose int8 form loses least (squared error: rounding inside the range,
    /// clipping outside) over the observed values ([`mse_range`]). Not the default: on
    /// the corpus (`bench.py --convert-args="--method mse"`) it lowered P-Net (mask IoU
    /// 0.940 → 0.805), Silero VAD (0.957 → 0.898) and MiniLM (0.914 → 0.896) and raised
    /// only the mel model (0.950 → 0.958).
    Mse,
}

const BINS: usize = 2048;

/// The ranges of every f32 activation over the samples, the graph run on the host's fast
/// kernels: the values the converted model meets on a host, in a fraction of the
/// reference's time on large activations (a 48-op audio CNN on 900 × 161 maps: 166 → 21 s).
pub fn calibrate(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    method: Method,
    progress: impl FnMut(usize),
) -> Result<Ranges> {
    calibrate_on(g, samples, method, true, progress)
}

/// [`calibrate`] on the host's kernels (`fast`) or on the reference kernels, whose sums
/// keep one order whatever the shape (a test that two graphs give the very same ranges).
pub fn calibrate_on(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    method: Method,
    fast: bool,
    mut progress: impl FnMut(usize),
) -> Result<Ranges> {
    let targets: Vec<usize> = (0..g.tensors.len())
        .filter(|&t| g.tensors[t].dtype == DType::F32 && !g.tensors[t].is_const())
        .collect();
    let mut ranges: Ranges = targets
        .iter()
        .map(|&t| (t, (f32::INFINITY, f32::NEG_INFINITY)))
        .collect();
    for (i, s) in samples.iter().enumerate() {
        let vals = g.run_all_on(s, fast)?;
        for &t in &targets {
            if let Some(v) = vals.get(&t) {
                let r = ranges.get_mut(&t).expect("target");
                for &x in bytemuck::cast_slice::<u8, f32>(v.as_slice()) {
                    if x.is_finite() {
                        r.0 = r.0.min(x);
                        r.1 = r.1.max(x);
                    }
                }
            }
        }
        progress(i + 1);
    }
    if method != Method::MinMax {
        let mut hist: std::collections::HashMap<usize, Vec<u64>> =
            targets.iter().map(|&t| (t, vec![0u64; BINS])).collect();
        for s in samples {
            let vals = g.run_all_on(s, fast)?;
            for &t in &targets {
                let (lo, hi) = ranges[&t];
                let Some(v) = vals.get(&t) else { continue };
                if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                    continue;
                }
                let h = hist.get_mut(&t).expect("hist");
                for &x in bytemuck::cast_slice::<u8, f32>(v.as_slice()) {
                    // Exact zeros (padding, a Relu's cut) stay exact in int8 under any
                    // range: they weigh nothing in the error, and are no tail.
                    if method == Method::Mse && x == 0.0 {
                        continue;
                    }
                    let b = (((x - lo) / (hi - lo)) * (BINS - 1) as f32)
                        .clamp(0.0, (BINS - 1) as f32) as usize;
                    h[b] += 1;
                }
            }
        }
        for &t in &targets {
            let (lo, hi) = ranges[&t];
            let h = &hist[&t];
            if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                continue;
            }
            let r = match method {
                Method::Percentile(p) => percentile_range(h, lo, hi, p),
                _ => mse_range(h, lo, hi),
            };
            if let Some(r) = r {
                ranges.insert(t, r);
            }
        }
    }
    // Run-time integers stay f32 unless they are booleans (a one-hot read by a MatMul,
    // exact in int8): int8 would round an index of hundreds to a multiple of its step and
    // a class id 1 to 0.996.
    let ints = run_time_integers(g);
    ranges.retain(|&t, r| r.0 <= r.1 && (!ints[t] || r.1 - r.0 <= 1.0));
    Ok(ranges)
}

/// The range that keeps all but `100 − p` percent of a histogram over `[lo, hi]`, half
/// of the cut from each tail.
fn percentile_range(h: &[u64], lo: f32, hi: f32, p: f32) -> Option<(f32, f32)> {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return None;
    }
    let tail = ((100.0 - p.clamp(50.0, 100.0)) / 200.0) as f64;
    let cut = (total as f64 * tail) as u64;
    let (mut acc, mut a) = (0u64, 0usize);
    while a < BINS - 1 && acc + h[a] <= cut {
        acc += h[a];
        a += 1;
    }
    let (mut acc2, mut b) = (0u64, BINS - 1);
    while b > a && acc2 + h[b] <= cut {
        acc2 += h[b];
        b -= 1;
    }
    let w = (hi - lo) / (BINS - 1) as f32;
    Some((lo + a as f32 * w, lo + (b as f32 + 1.0) * w))
}

/// Candidate clip factors per side in [`mse_range`]: geometric from 1 down to 1/`MSE_FLOOR`.
const MSE_STEPS: usize = 96;
const MSE_FLOOR: f64 = 256.0;

/// The clip range `[l, h]` (with `lo ≤ l ≤ 0 ≤ h ≤ hi`) whose int8 params give the least
/// squared error over the values a histogram over `[lo, hi]` counts: each value inside
/// costs the rounding's `s²/12` (`s = (h − l)/255`), each value outside its distance to
/// the bound, squared. Each side is searched over factors of `lo` and `hi`; prefix sums
/// make each candidate cost O(1). `None` for an empty histogram.
pub fn mse_range(h: &[u64], lo: f32, hi: f32) -> Option<(f32, f32)> {
    let n = h.len();
    let total: u64 = h.iter().sum();
    if total == 0 || n < 2 {
        return None;
    }
    let (lo, hi) = (lo.min(0.0) as f64, hi.max(0.0) as f64);
    let w = (hi - lo) / (n - 1) as f64;
    let center = |b: usize| lo + (b as f64 + 0.5) * w;
    // Prefix sums of count, Σx and Σx² over the bins (bin centres).
    let (mut c0, mut c1, mut c2) = (vec![0f64; n + 1], vec![0f64; n + 1], vec![0f64; n + 1]);
    for b in 0..n {
        let (c, x) = (h[b] as f64, center(b));
        c0[b + 1] = c0[b] + c;
        c1[b + 1] = c1[b] + c * x;
        c2[b + 1] = c2[b] + c * x * x;
    }
    // Bins [0, k) lie wholly below value v when their centres do: k = bins with centre < v.
    let below = |v: f64| (((v - lo) / w - 0.5).ceil().max(0.0) as usize).min(n);
    let side = |f: f64| MSE_FLOOR.powf(-f);
    let mut best = (f64::INFINITY, lo, hi);
    for i in 0..MSE_STEPS {
        let l = lo * side(i as f64 / (MSE_STEPS - 1) as f64);
        let kl = below(l);
        // Σ over bins below l of (x − l)².
        let under = c2[kl] - 2.0 * l * c1[kl] + l * l * c0[kl];
        for j in 0..MSE_STEPS {
            let u = hi * side(j as f64 / (MSE_STEPS - 1) as f64);
            let ku = below(u).max(kl);
            // Σ over bins above u of (x − u)².
            let (a0, a1, a2) = (c0[n] - c0[ku], c1[n] - c1[ku], c2[n] - c2[ku]);
            let over = a2 - 2.0 * u * a1 + u * u * a0;
            let s = (u - l) / 255.0;
            let inside = (c0[ku] - c0[kl]) * s * s / 12.0;
            let e = under + over + inside;
            if e < best.0 {
                best = (e, l, u);
            }
            if hi <= 0.0 {
                break;
            }
        }
        if lo >= 0.0 {
            break;
        }
    }
    Some((best.1 as f32, best.2 as f32))
}

/// The values of a tensor of `n` elements that error estimates compare: all up to
/// `PROBED`; of a larger one, every `step`-th with an odd step (a stride over channels or
/// planes, powers of two, visits all of them), about `PROBED` in all. A relative error
/// over 64 K values is within a few percent of the whole tensor's, and comparing every
/// value of every full-resolution map took minutes on a 256×256 model.
pub(crate) fn probed(n: usize) -> impl Iterator<Item = usize> {
    let step = if n <= PROBED { 1 } else { (n / PROBED) | 1 };
    (0..n).step_by(step)
}

/// See [`probed`].
const PROBED: usize = 1 << 16;

/// How much each calibrated tensor would lose in int8: the relative L2 error
/// `‖x − deq(q(x))‖ / ‖x‖` over the calibration samples (the `probed` values of each),
/// with the params its range gives.
/// A tensor whose values span a range far wider than most of them (an audio waveform or
/// spectrum, a logit map with rare peaks) loses its small values; such tensors are better
/// left f32 (`Options::int8_error_limit`).
pub fn tensor_errors(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    ranges: &Ranges,
) -> Result<std::collections::HashMap<usize, f32>> {
    use cairn_core::quant::quantize_f32;
    let params: Vec<(usize, (f32, i32))> = ranges
        .iter()
        .map(|(&t, &(lo, hi))| (t, crate::quantize::params_for_range(lo, hi)))
        .collect();
    let mut acc: std::collections::HashMap<usize, (f64, f64)> =
        params.iter().map(|&(t, _)| (t, (0.0, 0.0))).collect();
    // A tensor only a clamp reads is judged on what the clamp keeps.
    let links = crate::ir::Links::of(g);
    let kept: std::collections::HashMap<usize, (f32, f32)> = params
        .iter()
        .filter_map(|&(t, _)| clamp_reader(g, &links, t).map(|(_, c)| (t, c)))
        .collect();
    for s in samples {
        let vals = g.run_all_on(s, true)?;
        for &(t, (scale, zp)) in &params {
            let Some(v) = vals.get(&t) else { continue };
            let a = acc.get_mut(&t).expect("tensor");
            let (lo, hi) = kept
                .get(&t)
                .copied()
                .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
            let all = bytemuck::cast_slice::<u8, f32>(v.as_slice());
            for x in probed(all.len()).map(|i| all[i]) {
                if !x.is_finite() {
                    continue;
                }
                let x = x.clamp(lo, hi);
                let q = quantize_f32(x, scale, zp, -128, 127);
                let d = (q - zp) as f32 * scale;
                a.0 += ((x - d) as f64).powi(2);
                a.1 += (x as f64).powi(2);
            }
        }
    }
    Ok(acc
        .into_iter()
        .map(|(t, (e, n))| (t, if n > 0.0 { (e / n).sqrt() as f32 } else { 0.0 }))
        .collect())
}

/// The bounds of a Relu or Clip op (`None` for any other op, or bounds not in order).
fn clamp_bounds(op: &crate::ir::HOp) -> Option<(f32, f32)> {
    use cairn_core::op::UnaryFn;
    let bits = |k: usize| f32::from_bits(op.params.get(k).copied().unwrap_or(0) as u32);
    let (lo, hi) = match op.unary_fn()? {
        UnaryFn::Relu => (0.0, f32::INFINITY),
        UnaryFn::Clip => (bits(1), bits(2)),
        _ => return None,
    };
    (lo <= hi).then_some((lo, hi))
}

/// f32 tensors that hold run-time integers: cast from an int32 tensor (an unquantized
/// i32 `Dequantize`, as ONNX Cast is lowered), then carried through integer arithmetic
/// (Add/Sub/Mul/Div and the `Binary` functions, as integer Div/Mod on a run-time tensor
/// are lowered) and data movement, every run-time input such a tensor.
pub(crate) fn run_time_integers(g: &Graph) -> Vec<bool> {
    use cairn_core::OpKind::*;
    let mut int = vec![false; g.tensors.len()];
    for op in &g.ops {
        let cast =
            op.kind == Dequantize && op.inputs[0].is_some_and(|x| g.tensors[x].dtype == DType::I32);
        let carries = matches!(
            op.kind,
            Add | Sub
                | Mul
                | Div
                | Binary
                | Concat
                | Reshape
                | Transpose
                | Slice
                | Split
                | Gather
                | Tile
                | Pad
        );
        let mut live = op
            .inputs
            .iter()
            .flatten()
            .filter(|&&x| !g.tensors[x].is_const());
        let derived = carries && live.clone().next().is_some() && live.all(|&x| int[x]);
        if cast || derived {
            for &o in &op.outputs {
                int[o] = g.tensors[o].dtype == DType::F32;
            }
        }
    }
    int
}

/// The Relu or Clip that alone reads `t`, directly or through Reshapes and Transposes,
/// and its bounds (`None` if another op reads it, or it is a graph output): the part of
/// `t` outside them is dropped anyway, so int8 need not keep it.
pub(crate) fn clamp_reader(
    g: &Graph,
    k: &crate::ir::Links,
    t: usize,
) -> Option<(usize, (f32, f32))> {
    use cairn_core::OpKind;
    let mut at = t;
    for _ in 0..8 {
        let readers = k.readers(at);
        if readers.len() != 1 || g.outputs.contains(&at) {
            return None;
        }
        let op = &g.ops[readers[0]];
        match op.kind {
            OpKind::Reshape | OpKind::Transpose => at = *op.outputs.first()?,
            _ => return clamp_bounds(op).map(|b| (readers[0], b)),
        }
    }
    None
}

/// A tensor read only by a clamp (Relu, Clip), directly or through data movement
/// (a Conv1d's Reshape back to 3-D, a Transpose), needs no int8 codes outside the clamp's
/// bounds: int8 saturation does the clamp exactly. Without this, a conv whose Relu could
/// not be fused into it (a Reshape between them) spends most of its 256 codes on the
/// negative values the Relu throws away. Narrows those ranges in place; returns how many.
pub fn narrow_to_clamps(g: &Graph, ranges: &mut Ranges) -> usize {
    use cairn_core::OpKind;
    let mut narrowed = 0;
    let k = crate::ir::Links::of(g);
    for op in &g.ops {
        let Some((lo, hi)) = clamp_bounds(op) else {
            continue;
        };
        let Some(mut t) = op.inputs.first().copied().flatten() else {
            continue;
        };
        // Walk up while the tensor has this one reader chain.
        for _ in 0..8 {
            if g.outputs.contains(&t) || k.readers(t).len() != 1 {
                break;
            }
            let Some(r) = ranges.get_mut(&t) else { break };
            // Keep zero inside, as params_for_range does.
            let (nlo, nhi) = (r.0.max(lo.min(0.0)), r.1.min(hi.max(0.0)));
            if nlo <= nhi && (nlo, nhi) != *r {
                *r = (nlo, nhi);
                narrowed += 1;
            }
            match k.producer(t) {
                Some(p)
                    if matches!(g.ops[p].kind, OpKind::Reshape | OpKind::Transpose)
                        && g.ops[p].outputs.len() == 1 =>
                {
                    match g.ops[p].inputs.first().copied().flatten() {
                        Some(x) => t = x,
                        None => break,
                    }
                }
                _ => break,
            }
        }
    }
    narrowed
}

//! Calibration: run the float graph on sample inputs and choose each activation's range,
//! by min/max or by a percentile of the observed values (histogram, two passes).

use anyhow::Result;
use cairn_core::DType;

use crate::ir::Graph;
use crate::quantize::Ranges;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    MinMax,
    /// Keep this fraction of values (e.g. 99.99) and clip the tails.
    Percentile(f32),
}

const BINS: usize = 2048;

pub fn calibrate(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    method: Method,
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
        let vals = g.run_all(s)?;
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
    if let Method::Percentile(p) = method {
        let mut hist: std::collections::HashMap<usize, Vec<u64>> =
            targets.iter().map(|&t| (t, vec![0u64; BINS])).collect();
        for s in samples {
            let vals = g.run_all(s)?;
            for &t in &targets {
                let (lo, hi) = ranges[&t];
                let Some(v) = vals.get(&t) else { continue };
                if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                    continue;
                }
                let h = hist.get_mut(&t).expect("hist");
                for &x in bytemuck::cast_slice::<u8, f32>(v.as_slice()) {
                    let b = (((x - lo) / (hi - lo)) * (BINS - 1) as f32)
                        .clamp(0.0, (BINS - 1) as f32) as usize;
                    h[b] += 1;
                }
            }
        }
        let tail = ((100.0 - p.clamp(50.0, 100.0)) / 200.0) as f64;
        for &t in &targets {
            let (lo, hi) = ranges[&t];
            let h = &hist[&t];
            let total: u64 = h.iter().sum();
            if total == 0 || hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                continue;
            }
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
            ranges.insert(t, (lo + a as f32 * w, lo + (b as f32 + 1.0) * w));
        }
    }
    ranges.retain(|_, r| r.0 <= r.1);
    Ok(ranges)
}

/// How much each calibrated tensor would lose in int8: the relative L2 error
/// `‖x − deq(q(x))‖ / ‖x‖` over the calibration samples, with the params its range gives.
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
    for s in samples {
        let vals = g.run_all_on(s, true)?;
        for &(t, (scale, zp)) in &params {
            let Some(v) = vals.get(&t) else { continue };
            let a = acc.get_mut(&t).expect("tensor");
            for &x in bytemuck::cast_slice::<u8, f32>(v.as_slice()) {
                if !x.is_finite() {
                    continue;
                }
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

/// A tensor read only by a clamp (Relu, Clip), directly or through data movement
/// (a Conv1d's Reshape back to 3-D, a Transpose), needs no int8 codes outside the clamp's
/// bounds: int8 saturation does the clamp exactly. Without this, a conv whose Relu could
/// not be fused into it (a Reshape between them) spends most of its 256 codes on the
/// negative values the Relu throws away. Narrows those ranges in place; returns how many.
pub fn narrow_to_clamps(g: &Graph, ranges: &mut Ranges) -> usize {
    use cairn_core::op::UnaryFn;
    use cairn_core::OpKind;
    let mut narrowed = 0;
    for op in &g.ops {
        if op.kind != OpKind::Unary {
            continue;
        }
        let bits = |k: usize| f32::from_bits(op.params.get(k).copied().unwrap_or(0) as u32);
        let (lo, hi) = match UnaryFn::from_code(op.params.first().copied().unwrap_or(-1)) {
            Some(UnaryFn::Relu) => (0.0, f32::INFINITY),
            Some(UnaryFn::Clip) => (bits(1), bits(2)),
            _ => continue,
        };
        if lo
            .partial_cmp(&hi)
            .is_none_or(|o| o == std::cmp::Ordering::Greater)
        {
            continue;
        }
        let Some(mut t) = op.inputs.first().copied().flatten() else {
            continue;
        };
        // Walk up while the tensor has this one reader chain.
        for _ in 0..8 {
            if g.outputs.contains(&t) || g.consumers(t).len() != 1 {
                break;
            }
            let Some(r) = ranges.get_mut(&t) else { break };
            // Keep zero inside, as params_for_range does.
            let (nlo, nhi) = (r.0.max(lo.min(0.0)), r.1.min(hi.max(0.0)));
            if nlo <= nhi && (nlo, nhi) != *r {
                *r = (nlo, nhi);
                narrowed += 1;
            }
            match g.producer(t) {
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

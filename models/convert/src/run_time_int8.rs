//! Models whose weights come as integers while their activations have no int8 params
//! (ONNX Runtime's dynamic quantization, weight-only Q/DQ), converted without calibration
//! samples: each FullyConnected whose weights kept their integers (`Hint::Weight`, along
//! the output rows or one scale) reads them as int8 and quantizes its input rows at run
//! time (`FullyConnected.f32-w8`: per row, as ONNX's DynamicQuantizeLinear does for a
//! whole tensor). The file holds a byte per weight instead of four and the products run
//! in integers; the other ops stay f32. With calibration samples the same weights go to
//! cairn's static int8 as they are (`quantize`).
//!
//! Embedding tables that lie on such a grid ([`keep_int8_tables`]) are stored as int8 and
//! gathered as bytes, then scaled: the same f32 values, a byte per entry.

use std::collections::HashMap;

use cairn_core::emit::QuantSpec;
use cairn_core::{DType, OpKind};

use crate::ir::{Graph, HOp, Hint};

/// Longest rows the kernel takes (its i32 sums hold 65,536 products of 255 · 128).
const MAX_K: usize = 1 << 16;

/// Fewest outputs per row worth quantizing the row for: below this, quantizing each input
/// row costs more than the products it saves (an additive attention's score, one output
/// per row: 2.9 ms in int8 against its f32 form's fraction), and the weights are small.
const MIN_N: usize = 16;

/// The int8 form of FullyConnected `op`'s weights, when it can take FullyConnected.f32-w8:
/// the weights' tensor, their quantization and bytes. Decided once per weight tensor
/// (`seen`: a recurrent step's weights are read by every unrolled step, and a grid test
/// that fails on them fails on all).
#[allow(clippy::type_complexity)]
fn int8_form(
    g: &Graph,
    op: usize,
    seen: &mut HashMap<usize, Option<(QuantSpec, Vec<u8>)>>,
    rounded: bool,
) -> Option<usize> {
    let o = &g.ops[op];
    if o.kind != OpKind::FullyConnected {
        return None;
    }
    let (Some(x), Some(w)) = (o.inputs[0], o.inputs.get(1).copied().flatten()) else {
        return None;
    };
    if g.tensors[x].dtype != DType::F32 {
        return None;
    }
    seen.entry(w)
        .or_insert_with(|| weight_form(g, w, rounded))
        .is_some()
        .then_some(w)
}

/// [`int8_form`] of weight tensor `w`, decided. With `rounded`, f32 weights that carry no
/// integers are rounded to symmetric int8 per row ([`int8_rows`]).
fn weight_form(g: &Graph, w: usize, rounded: bool) -> Option<(QuantSpec, Vec<u8>)> {
    let wt = &g.tensors[w];
    if wt.dtype != DType::F32 || !wt.is_const() {
        return None;
    }
    let [n, k] = wt.shape[..] else { return None };
    if k > MAX_K || n < MIN_N {
        return None;
    }
    let found;
    let (q, scales, axis) = match &wt.hint {
        Some(Hint::Weight { q, scales, axis }) => (q, scales, axis),
        None if g.int8_weights => {
            found = int8_grid(&wt.const_f32()?, n, k)?;
            (&found.0, &found.1, &Some(0))
        }
        None if rounded => {
            found = int8_rows(&wt.const_f32()?, n, k)?;
            (&found.0, &found.1, &Some(0))
        }
        _ => return None,
    };
    let scales_ok = scales.iter().all(|s| s.is_finite() && *s > 0.0)
        && match axis {
            None => scales.len() == 1,
            Some(0) => scales.len() == n || scales.len() == 1,
            Some(_) => false,
        };
    if q.len() != n * k || !scales_ok {
        return None;
    }
    let quant = if scales.len() == 1 {
        QuantSpec::PerTensor {
            scale: scales[0],
            zero_point: 0,
        }
    } else {
        QuantSpec::PerAxis {
            axis: 0,
            scales: scales.clone(),
            zero_points: vec![0; n],
        }
    };
    Some((quant, q.iter().map(|&v| v as u8).collect()))
}

/// How many FullyConnected ops [`keep_int8_weights`] would give int8 weights (the graph
/// unchanged).
pub fn int8_weight_ops(g: &Graph) -> usize {
    let mut seen = HashMap::new();
    (0..g.ops.len())
        .filter(|&op| int8_form(g, op, &mut seen, false).is_some())
        .count()
}

/// `w` (`[n, k]`) rounded to symmetric int8, a scale per row (the row's largest magnitude
/// over 127; 1 for a row of zeros): the per-channel weights of dynamic quantization.
/// `None` when a value is not finite.
pub fn int8_rows(w: &[f32], n: usize, k: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    if n == 0 || k == 0 || w.len() != n * k || w.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut q = vec![0i8; n * k];
    let mut scales = Vec::with_capacity(n);
    for (row, qr) in w.chunks_exact(k).zip(q.chunks_exact_mut(k)) {
        let m = row.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let s = if m > 0.0 { m / 127.0 } else { 1.0 };
        for (d, &v) in qr.iter_mut().zip(row) {
            *d = (v / s).round().clamp(-127.0, 127.0) as i8;
        }
        scales.push(s);
    }
    Some((q, scales))
}

/// Give every eligible FullyConnected its int8 weights; returns how many. Weights shared by
/// several ops (a recurrent step's, unrolled) get one int8 copy.
pub fn keep_int8_weights(g: &mut Graph) -> usize {
    keep_int8_weights_by(g, false).0
}

/// [`keep_int8_weights`] for f32 weights too: those that carry no integers are rounded to
/// symmetric int8 per output row (what `rounded_weights_where_f32` tries); returns how
/// many ops took them.
pub fn round_int8_weights(g: &mut Graph) -> usize {
    keep_int8_weights_by(g, true).0
}

/// [`keep_int8_weights`], with `rounded` also for f32 weights that carry no integers
/// (rounded per row, [`int8_rows`]).
fn keep_int8_weights_by(g: &mut Graph, rounded: bool) -> (usize, Vec<usize>) {
    let mut seen = HashMap::new();
    let mut made: HashMap<usize, usize> = HashMap::new();
    let mut done = 0;
    for op in 0..g.ops.len() {
        let Some(w) = int8_form(g, op, &mut seen, rounded) else {
            continue;
        };
        let nw = match made.get(&w) {
            Some(&nw) => nw,
            None => {
                let Some((quant, bytes)) = seen.get(&w).cloned().flatten() else {
                    continue;
                };
                let t = &g.tensors[w];
                let (name, shape) = (format!("{}:w8", t.name), t.shape.clone());
                let nw = g.add_const(
                    name,
                    DType::I8,
                    shape,
                    cairn_core::emit::AlignedBytes::from_slice(&bytes),
                );
                g.tensors[nw].quant = quant;
                made.insert(w, nw);
                nw
            }
        };
        g.ops[op].inputs[1] = Some(nw);
        done += 1;
    }
    // Pruning renumbers the tensors: the map from old ids to new (`usize::MAX` where
    // gone) goes back with the count, so maps into the graph can follow it.
    let remap = if done > 0 {
        g.prune()
    } else {
        (0..g.tensors.len()).collect()
    };
    (done, remap)
}

/// `w` (`[n, k]`) as symmetric int8 values times a scale per row or one scale, when that
/// gives back every value exactly (the f32 product `q · s` equals it): weights a quantized
/// model dequantized into constants (a `Cast` and `Mul`, a weight-only `DequantizeLinear`,
/// a DynamicQuantizeLSTM's weights sliced by direction). The scale is the row's (or the
/// tensor's) largest magnitude over 127, or an f32 neighbour of it.
pub fn int8_grid(w: &[f32], n: usize, k: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    if n == 0 || k == 0 || w.len() != n * k || w.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let on = |vals: &[f32], q: &mut [i8]| -> Option<f32> {
        let m = vals.iter().fold(0f32, |a, &v| a.max(v.abs()));
        if m == 0.0 {
            q.fill(0);
            return Some(1.0);
        }
        let s0 = m / 127.0;
        let near = [0i32, 1, -1, 2, -2].map(|d| f32::from_bits((s0.to_bits() as i32 + d) as u32));
        near.into_iter().find(|&s| {
            vals.iter().zip(q.iter_mut()).all(|(&v, qv)| {
                let r = (v / s).round();
                *qv = r as i8;
                r.abs() <= 127.0 && r * s == v
            })
        })
    };
    let mut q = vec![0i8; n * k];
    let per_row: Option<Vec<f32>> = w
        .chunks_exact(k)
        .zip(q.chunks_exact_mut(k))
        .map(|(row, qr)| on(row, qr))
        .collect();
    if let Some(s) = per_row {
        return Some((q, s));
    }
    on(w, &mut q).map(|s| (q, vec![s]))
}

/// Smallest table worth storing as int8 (smaller ones cost more in ops than they save).
const MIN_TABLE: usize = 4096;

/// In a model that ships int8 weights, every Gather (along axis 0) of a constant f32 table
/// `[R, C]` given as integers (`Hint::Table`: `s · (q − zp)`) or lying exactly on a
/// symmetric int8 grid becomes an int8 Gather, a
/// Dequantize and, with one scale per row, a Mul by the gathered row scales: the values
/// are the table's own (`q · s` gives each back exactly, `int8_grid`), stored in a byte
/// each. Returns how many.
pub fn keep_int8_tables(g: &mut Graph) -> usize {
    if !g.int8_weights {
        return 0;
    }
    let mut done = 0;
    let mut at = 0;
    while at < g.ops.len() {
        let o = &g.ops[at];
        let (Some(t), Some(idx)) = (o.inputs[0], o.inputs.get(1).copied().flatten()) else {
            at += 1;
            continue;
        };
        let y = o.outputs[0];
        let tt = &g.tensors[t];
        let fits = o.kind == OpKind::Gather
            && o.params.first() == Some(&0)
            && o.params.get(1) == Some(&0)
            && tt.dtype == DType::F32
            && tt.is_const()
            && tt.shape.len() == 2
            && tt.shape[0] * tt.shape[1] >= MIN_TABLE;
        // Integers given with the table (a dynamically quantized embedding, any zero
        // point), or a symmetric grid found in its values.
        let grid = match &tt.hint {
            _ if !fits => None,
            Some(Hint::Table {
                q,
                scale,
                zero_point,
            }) if q.len() == tt.shape[0] * tt.shape[1] => {
                Some((q.clone(), vec![*scale], *zero_point))
            }
            _ => tt
                .const_f32()
                .and_then(|v| int8_grid(&v, tt.shape[0], tt.shape[1]))
                .map(|(q, s)| (q, s, 0)),
        };
        let Some((q, scales, zero_point)) = grid else {
            at += 1;
            continue;
        };
        let (rows, name, op_name) = (tt.shape[0], tt.name.clone(), o.name.clone());
        let one = scales.len() == 1;
        let quant = QuantSpec::PerTensor {
            scale: if one { scales[0] } else { 1.0 },
            zero_point,
        };
        let bytes: Vec<u8> = q.iter().map(|&v| v as u8).collect();
        let table = g.add_const(
            format!("{name}:i8"),
            DType::I8,
            g.tensors[t].shape.clone(),
            cairn_core::emit::AlignedBytes::from_slice(&bytes),
        );
        g.tensors[table].quant = quant.clone();
        let yshape = g.tensors[y].shape.clone();
        let picked = g.add(format!("{op_name}:i8"), DType::I8, yshape.clone());
        g.tensors[picked].quant = quant;
        let op = |kind, inputs: Vec<Option<usize>>, out: usize, params: Vec<i32>| HOp {
            kind,
            inputs,
            outputs: vec![out],
            params,
            name: op_name.clone(),
        };
        let mut new = vec![op(
            OpKind::Gather,
            vec![Some(table), Some(idx)],
            picked,
            vec![0, 0],
        )];
        if one {
            new.push(op(OpKind::Dequantize, vec![Some(picked)], y, vec![]));
        } else {
            let values = g.add(format!("{op_name}:q"), DType::F32, yshape.clone());
            let sc = g.add_f32(format!("{name}:row_scales"), vec![rows, 1], &scales);
            let mut sshape = yshape;
            if let Some(last) = sshape.last_mut() {
                *last = 1;
            }
            let sg = g.add(format!("{op_name}:scales"), DType::F32, sshape);
            new.push(op(OpKind::Dequantize, vec![Some(picked)], values, vec![]));
            new.push(op(
                OpKind::Gather,
                vec![Some(sc), Some(idx)],
                sg,
                vec![0, 0],
            ));
            let (lo, hi) = crate::lower::INF_BITS;
            new.push(op(
                OpKind::Mul,
                vec![Some(values), Some(sg)],
                y,
                vec![lo, hi],
            ));
        }
        let n = new.len();
        g.ops.splice(at..at + 1, new);
        at += n;
        done += 1;
    }
    if done > 0 {
        g.prune();
    }
    done
}

/// In a calibrated conversion of a model that ships int8 weights (`g`, quantized as `q`):
/// the FullyConnected ops left f32 (moved by the output guard, the decision layer) run on
/// the model's own int8 weights with their rows quantized at run time, as the model was
/// made, instead of streaming f32 weights (a memory-bound f32 transformer layer reads four
/// times the bytes). Kept only while the worst output stays within `bound` or the f32
/// weights' own error, measured on `samples` (`refine::output_errors`); the graph, and a
/// note when it changed.
pub fn int8_weights_where_f32(
    g: &Graph,
    q: Graph,
    values: &std::collections::HashMap<usize, usize>,
    samples: &[Vec<Vec<f32>>],
    bound: f32,
) -> anyhow::Result<(Graph, Option<String>)> {
    w8_where_f32(
        g,
        q,
        values,
        samples,
        false,
        |before, after| after <= bound.max(before),
        |n, after, before| {
            format!(
        "{n} FullyConnected ops left f32 run on the model's own int8 weights, their input rows quantized at run time (FullyConnected.f32-w8); output error on the calibration samples {:.1}% (f32 weights: {:.1}%)",
        100.0 * after,
        100.0 * before
    )
        },
    )
}

/// The FullyConnected ops of `q` that can take f32-w8 given int8 weights (with `rounded`,
/// f32 weights rounded per row; else the integers the model ships, as
/// [`keep_int8_weights`] finds them), kept when `accept(before, after)` holds for the
/// worst output errors on `samples` without and with them (`refine::output_errors`); the
/// graph, and `note(ops, after, before)` when it changed.
fn w8_where_f32(
    g: &Graph,
    q: Graph,
    values: &std::collections::HashMap<usize, usize>,
    samples: &[Vec<Vec<f32>>],
    rounded: bool,
    accept: impl Fn(f32, f32) -> bool,
    note: impl Fn(usize, f32, f32) -> String,
) -> anyhow::Result<(Graph, Option<String>)> {
    let mut w = q.clone();
    w.int8_weights |= !rounded;
    let (n, remap) = keep_int8_weights_by(&mut w, rounded);
    if n == 0 {
        return Ok((q, None));
    }
    // The float tensors' places in `w`, renumbered as its pruning did (stale ids would
    // judge a part of an output against another tensor, or not at all).
    let w_values = crate::ir::follow_prune(values, &remap);
    let errs = crate::refine::output_errors(g, &[(&q, values), (&w, &w_values)], samples)?;
    let (before, after) = (errs[0], errs[1]);
    if !accept(before, after) {
        return Ok((q, None));
    }
    Ok((w, Some(note(n, after, before))))
}

/// In a calibrated conversion of a model with f32 weights (`g`, quantized as `q`): the
/// FullyConnected ops the output guard left f32 run as dynamic quantization does them
/// (FullyConnected.f32-w8: weights rounded to int8 per output row, each input row
/// quantized at run time on its own range), which is far closer to f32 than the static
/// int8 the guard refused and runs on the int8 GEMMs. Kept only where the worst output
/// error on `samples` (relative, `refine::output_errors`) grows by at most 2 points or a
/// tenth, whichever is more; the graph, and a note when it changed.
pub fn rounded_weights_where_f32(
    g: &Graph,
    q: Graph,
    values: &std::collections::HashMap<usize, usize>,
    samples: &[Vec<Vec<f32>>],
) -> anyhow::Result<(Graph, Option<String>)> {
    let accept = |before: f32, after: f32| after <= (before * 1.1).max(before + 0.02);
    w8_where_f32(g, q, values, samples, true, accept, |n, after, before| {
        format!(
        "{n} FullyConnected ops left f32 run with int8 weights (rounded per output row) and their input rows quantized at run time (FullyConnected.f32-w8); output error on the calibration samples {:.1}% (f32 FCs: {:.1}%)",
        100.0 * after,
        100.0 * before
    )
    })
}

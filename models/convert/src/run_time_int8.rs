//! Models whose weights come as integers while their activations have no int8 params
//! (ONNX Runtime's dynamic quantization, weight-only Q/DQ), converted without calibration
//! samples: each FullyConnected whose weights kept their integers (`Hint::Weight`, along
//! the output rows or one scale) reads them as int8 and quantizes its input rows at run
//! time (`FullyConnected.f32-w8`: per row, as ONNX's DynamicQuantizeLinear does for a
//! whole tensor). The file holds a byte per weight instead of four and the products run
//! in integers; the other ops stay f32. With calibration samples the same weights go to
//! cairn's static int8 as they are (`quantize`).

use cairn_core::emit::QuantSpec;
use cairn_core::{DType, OpKind};

use crate::ir::{Graph, Hint};

/// Longest rows the kernel takes (its i32 sums hold 65,536 products of 255 · 128).
const MAX_K: usize = 1 << 16;

/// Give every eligible FullyConnected its int8 weights; returns how many.
pub fn keep_int8_weights(g: &mut Graph) -> usize {
    let mut done = 0;
    // Weights shared by several ops (a recurrent step's, unrolled) get one int8 copy.
    let mut made: std::collections::HashMap<usize, usize> = Default::default();
    for op in 0..g.ops.len() {
        let o = &g.ops[op];
        if o.kind != OpKind::FullyConnected {
            continue;
        }
        let (Some(x), Some(w)) = (o.inputs[0], o.inputs.get(1).copied().flatten()) else {
            continue;
        };
        if let Some(&nw) = made.get(&w) {
            g.ops[op].inputs[1] = Some(nw);
            done += 1;
            continue;
        }
        let wt = &g.tensors[w];
        if g.tensors[x].dtype != DType::F32 || wt.dtype != DType::F32 || !wt.is_const() {
            continue;
        }
        let [n, k] = wt.shape[..] else { continue };
        let found;
        let (q, scales, axis) = match &wt.hint {
            Some(Hint::Weight { q, scales, axis }) => (q, scales, axis),
            None if g.int8_weights => {
                let Some(v) = wt.const_f32() else { continue };
                let Some(grid) = int8_grid(&v, n, k) else {
                    continue;
                };
                found = grid;
                (&found.0, &found.1, &Some(0))
            }
            _ => continue,
        };
        let scales_ok = scales.iter().all(|s| s.is_finite() && *s > 0.0)
            && match axis {
                None => scales.len() == 1,
                Some(0) => scales.len() == n || scales.len() == 1,
                Some(_) => false,
            };
        if q.len() != n * k || k > MAX_K || !scales_ok {
            continue;
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
        let bytes: Vec<u8> = q.iter().map(|&v| v as u8).collect();
        let name = format!("{}:w8", wt.name);
        let nw = g.add_const(
            name,
            DType::I8,
            vec![n, k],
            cairn_core::emit::AlignedBytes::from_slice(&bytes),
        );
        g.tensors[nw].quant = quant;
        g.ops[op].inputs[1] = Some(nw);
        made.insert(w, nw);
        done += 1;
    }
    if done > 0 {
        g.prune();
    }
    done
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

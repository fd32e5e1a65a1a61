//! Tables that let the WGSL Softmax and bilinear Resize give the reference kernels'
//! bytes. Both references end in `quantize_f32(r, s_y, z_y)`, whose division WGSL does not
//! round correctly; Softmax also divides `e / sum` and takes `expf`. So:
//!
//! - `quantize_f32` is monotone in `r`: the 255 smallest values of `r` (as ordered keys of
//!   their bits) at which the output reaches each level −127..=127 are found here by
//!   bisection, and the GPU counts the thresholds at or below its `r`.
//! - Softmax's `expf` values are a 256-entry table (they depend only on `x_max − x`),
//!   scaled by 2^64 so that none is subnormal (a GPU may flush subnormals; the scale is
//!   exact and cancels in the division). The row sum is WGSL f32 additions (correctly
//!   rounded), the division is done in integer arithmetic (`f32_div` in `int8.wgsl`).
//! - Bilinear's coordinates and weights are per output row and column, computed here as
//!   the reference does; the GPU does the reference's f32 products (correctly rounded;
//!   the op is refused where a product could be subnormal) and adds them in integer
//!   arithmetic (`f32_add`), so no multiply-add can be contracted into an FMA.
//!
//! Each table set is checked once on a seeded input against the reference kernel,
//! through a CPU model of what the GPU computes; a mismatch leaves the op on the CPU.

use cairn_core::model::Storage;
use cairn_core::quant::quantize_f32;
use cairn_core::{DType, Model, OpCall, Quant, TensorInfo, TensorMut, TensorRef};

use crate::kernels::{TABLE, W_OFF};

/// Bits of `f` as a key that orders like the value (−0 just below +0).
pub fn key(f: f32) -> u32 {
    let b = f.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn from_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7FFF_FFFF } else { !k })
}

/// For each level −127..=127, the smallest key whose value `quantize` sends to that level
/// or above (`u32::MAX` when none does). `quantize` must be monotone in its input.
fn thresholds(quantize: impl Fn(f32) -> i32) -> Vec<u32> {
    let (lo, hi) = (key(f32::NEG_INFINITY), key(f32::INFINITY));
    (-127..=127)
        .map(|level| {
            if quantize(f32::INFINITY) < level {
                return u32::MAX;
            }
            if quantize(f32::NEG_INFINITY) >= level {
                return lo;
            }
            // quantize(from_key(below)) < level <= quantize(from_key(at)).
            let (mut below, mut at) = (lo, hi);
            while at - below > 1 {
                let mid = below + (at - below) / 2;
                if quantize(from_key(mid)) >= level {
                    at = mid;
                } else {
                    below = mid;
                }
            }
            at
        })
        .collect()
}

/// What the GPU's `level` returns for a value: −128 plus the thresholds at or below it.
fn level(thresholds: &[u32], r: f32) -> i8 {
    let k = key(r);
    (thresholds.partition_point(|&t| t <= k) as i32 - 128) as i8
}

fn words(values: impl IntoIterator<Item = u32>) -> Vec<u8> {
    values.into_iter().flat_map(u32::to_le_bytes).collect()
}

fn per_tensor(info: &TensorInfo<'_>) -> Option<(f32, i32)> {
    match (&info.quant, info.dtype) {
        (Quant::PerTensor { scale, zero_point }, DType::I8)
            if scale.is_finite() && *scale > 0.0 =>
        {
            Some((*scale, *zero_point))
        }
        _ => None,
    }
}

/// Seeded int8 bytes for the self-checks.
fn noise(n: usize, salt: u64) -> Vec<u8> {
    (0..n as u64)
        .map(|e| {
            let mut z = (salt << 40 ^ e).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z ^= z >> 29;
            (z.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 56) as u8
        })
        .collect()
}

/// The reference kernel's output for a one-input op on `input`.
fn reference(model: &Model<'_>, op_index: usize, input: &[u8]) -> Option<Vec<u8>> {
    let op = model.op(op_index)?;
    let kernel = model.kernel_of(op_index)?;
    let params = op.param_words();
    let mut call = OpCall::new(op.kind, kernel, &params, 0);
    let x = TensorRef {
        info: model.tensor(op.input(0)?).info,
        data: input,
    };
    call.push_input(Some(&x)).ok()?;
    let y = model.tensor(op.output(0)).info;
    let mut out = vec![0u8; y.numel()];
    cairn_kernels::execute_reference(
        &call,
        TensorMut {
            info: y,
            data: &mut out,
        },
    )
    .ok()?;
    Some(out)
}

/// The op's one arena input and its output must not share bytes (the GPU reads whole rows
/// or neighbourhoods while other invocations write).
fn disjoint(model: &Model<'_>, op_index: usize) -> Option<()> {
    let op = model.op(op_index)?;
    let range = |t: u16| match model.tensor(t).storage {
        Storage::Arena { offset, bytes } => Some(offset..offset + bytes),
        Storage::Const(_) => None,
    };
    let (x, y) = (range(op.input(0)?)?, range(op.output(0))?);
    (x.end <= y.start || y.end <= x.start).then_some(())
}

/// Softmax (flavour 0): the scaled exp table at `TABLE` and the thresholds at `W_OFF`.
pub fn softmax_tables(model: &Model<'_>, op_index: usize) -> Option<Vec<(usize, Vec<u8>)>> {
    disjoint(model, op_index)?;
    let op = model.op(op_index)?;
    let x = model.tensor(op.input(0)?).info;
    let y = model.tensor(op.output(0)).info;
    let ((sx, _), (sy, zy)) = (per_tensor(&x)?, per_tensor(&y)?);
    // The reference's e for x − x_max = −d, times 2^64 (exact: e ≤ 1 and finite).
    let exp: Vec<f32> = (0..256)
        .map(|d: i32| libm::expf((-d) as f32 * sx) * 18_446_744_073_709_551_616.0)
        .collect();
    if exp
        .iter()
        .any(|e| !e.is_finite() || (*e != 0.0 && !e.is_normal()))
    {
        return None;
    }
    let limits = thresholds(|r| quantize_f32(r, sy, zy, -128, 127));
    // Self-check: the GPU's arithmetic, modelled on the CPU, against the reference.
    let (n, inner) = (op.param(1) as usize, op.param(2) as usize);
    let input = noise(x.numel(), op_index as u64);
    let want = reference(model, op_index, &input)?;
    for (e, &w) in want.iter().enumerate() {
        let (i, o) = (e % inner, e / (inner * n));
        let at = |k: usize| input[(o * n + k) * inner + i] as i8 as i32;
        let m = (0..n).map(at).max()?;
        let sum: f32 = (0..n).map(|k| exp[(m - at(k)) as usize]).sum();
        let r = exp[(m - input[e] as i8 as i32) as usize] / sum;
        if level(&limits, r) != w as i8 {
            return None;
        }
    }
    Some(vec![
        (TABLE, words(exp.iter().map(|e| e.to_bits()))),
        (W_OFF, words(limits)),
    ])
}

/// One output row's (or column's) neighbours and weights, as the reference finds them.
#[derive(Clone, Copy)]
struct Taps {
    first: usize,
    second: usize,
    w_first: f32,
    w_second: f32,
}

fn taps(coord: i32, scale: f32, len_in: usize, len_out: usize) -> Vec<Taps> {
    (0..len_out)
        .map(|o| {
            let f = cairn_kernels::resize_source(coord, o, scale, len_in, len_out)
                .max(0.0)
                .min((len_in - 1) as f32);
            let first = libm::floorf(f) as usize;
            let l = f - first as f32;
            Taps {
                first,
                second: (first + 1).min(len_in - 1),
                w_first: 1.0 - l,
                w_second: l,
            }
        })
        .collect()
}

/// Bilinear Resize: each output row's then each column's taps (first, second, and the
/// two weights' bits: four words each) at `W_OFF`, the thresholds at `TABLE`.
pub fn bilinear_tables(model: &Model<'_>, op_index: usize) -> Option<Vec<(usize, Vec<u8>)>> {
    disjoint(model, op_index)?;
    let op = model.op(op_index)?;
    let x = model.tensor(op.input(0)?).info;
    let y = model.tensor(op.output(0)).info;
    let ((sx, zx), (sy, zy)) = (per_tensor(&x)?, per_tensor(&y)?);
    let (n, c, h, w) = x.shape.nchw()?;
    let (_, _, oh, ow) = y.shape.nchw()?;
    if h == 0 || w == 0 || 255.0 * sx > f32::MAX / 2.0 {
        return None;
    }
    let coord = op.param(1);
    let (scale_h, scale_w) = (
        f32::from_bits(op.param(3) as u32),
        f32::from_bits(op.param(4) as u32),
    );
    let (rows, cols) = (taps(coord, scale_h, h, oh), taps(coord, scale_w, w, ow));
    // Every product |v · w_y · w_x| that is not zero must be normal (|v| ≥ s_x): the GPU may
    // flush subnormals.
    let least = |t: &[Taps]| {
        t.iter()
            .flat_map(|t| [t.w_first, t.w_second])
            .filter(|w| *w != 0.0)
            .fold(f64::INFINITY, |m, w| m.min(w as f64))
    };
    for t in rows.iter().chain(&cols) {
        let ok = |w: f32| w.is_finite() && (0.0..=1.0).contains(&w);
        if !ok(t.w_first) || !ok(t.w_second) {
            return None;
        }
    }
    if sx as f64 * least(&rows).min(1.0) * least(&cols).min(1.0) < 2f64.powi(-120) {
        return None;
    }
    let limits = thresholds(|r| quantize_f32(r, sy, zy, -128, 127));
    // Self-check against the reference through a CPU model of the GPU's arithmetic.
    let input = noise(x.numel(), op_index as u64);
    let want = reference(model, op_index, &input)?;
    for plane in 0..n * c {
        for (oy, ty) in rows.iter().enumerate() {
            for (ox, tx) in cols.iter().enumerate() {
                let v = |yy: usize, xx: usize| {
                    (input[(plane * h + yy) * w + xx] as i8 as i32 - zx) as f32 * sx
                };
                let r = v(ty.first, tx.first) * ty.w_first * tx.w_first
                    + v(ty.first, tx.second) * ty.w_first * tx.w_second
                    + v(ty.second, tx.first) * ty.w_second * tx.w_first
                    + v(ty.second, tx.second) * ty.w_second * tx.w_second;
                if level(&limits, r) != want[(plane * oh + oy) * ow + ox] as i8 {
                    return None;
                }
            }
        }
    }
    let taps_words = rows.iter().chain(&cols).flat_map(|t| {
        [
            t.first as u32,
            t.second as u32,
            t.w_first.to_bits(),
            t.w_second.to_bits(),
        ]
    });
    Some(vec![(W_OFF, words(taps_words)), (TABLE, words(limits))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_values() {
        let values = [
            f32::NEG_INFINITY,
            -1.0e30,
            -1.0,
            -f32::MIN_POSITIVE,
            -1.0e-45,
            -0.0,
            0.0,
            1.0e-45,
            f32::MIN_POSITIVE,
            0.5,
            1.0,
            f32::INFINITY,
        ];
        for pair in values.windows(2) {
            assert!(key(pair[0]) < key(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(from_key(key(v)).to_bits(), v.to_bits());
        }
    }

    /// The thresholds give quantize_f32's level for every value tried (seeded).
    #[test]
    fn levels_equal_quantize() {
        let seed: u64 = std::env::var("CAIRN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED);
        let mut z = seed;
        let mut next = move || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut v = z;
            v = (v ^ (v >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            v = (v ^ (v >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            v ^ (v >> 31)
        };
        for case in 0..20 {
            let sy = 1.0 / 256.0 * (1 + next() % 100) as f32 / 10.0;
            let zy = (next() % 256) as i32 - 128;
            let limits = thresholds(|r| quantize_f32(r, sy, zy, -128, 127));
            for _ in 0..2000 {
                let r = (next() % 4_000_000) as f32 / 1_000_000.0 - 2.0;
                // And the values at and next to each rounding boundary.
                let t = limits[(next() % 255) as usize];
                let edges = [from_key(t), from_key(t.saturating_sub(1))];
                for v in [r, edges[0], edges[1]].into_iter().filter(|v| !v.is_nan()) {
                    assert_eq!(
                        level(&limits, v) as i32,
                        quantize_f32(v, sy, zy, -128, 127),
                        "CAIRN_SEED={seed} case {case} value {v:e}"
                    );
                }
            }
        }
    }
}

//! Quantization parameters and the requantization arithmetic shared by every int8 path.
//!
//! cairn matches ONNX Runtime's arithmetic: requantization multiplies the int32 accumulator
//! by an f32 scale, clamps, rounds half to even, then adds the zero point (MLAS
//! `MlasRequantizeOutput`). That choice is what holds outputs within 1 LSB of ORT on the
//! same QDQ model; it needs an FPU or soft-float, which every supported target has.

/// Quantization of a tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quant<'a> {
    None,
    /// Per-tensor affine: real = scale * (q - zero_point).
    PerTensor {
        scale: f32,
        zero_point: i32,
    },
    /// Per-axis affine (weights): one scale and zero point per index along `axis`.
    PerAxis {
        axis: usize,
        scales: &'a [f32],
        zero_points: &'a [i32],
    },
}

impl Quant<'_> {
    /// (scale, zero point) of a per-tensor quantization; (1, 0) otherwise.
    pub fn per_tensor(&self) -> (f32, i32) {
        match *self {
            Quant::PerTensor { scale, zero_point } => (scale, zero_point),
            _ => (1.0, 0),
        }
    }
}

/// Round half to even for |x| < 2^22 without libm (the FPU's default rounding mode).
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
}

/// `clamp(round(acc * scale) + zp, lo, hi)` exactly as MLAS does it: clamp in float first
/// (so the rounding trick stays in range), then round half to even.
///
/// The clamp is two comparisons, not `f32::max`/`min`: `v` is never NaN (`acc` is an
/// integer and every scale is checked finite at load), and without NaN both give the same
/// value; on a Cortex-M4 `max`/`min` are calls to `fmaxf`/`fminf` for every output.
#[inline(always)]
pub fn requantize(acc: i32, scale: f32, zero_point: i32, lo: i32, hi: i32) -> i32 {
    let v = acc as f32 * scale;
    let (lo, hi) = ((lo - zero_point) as f32, (hi - zero_point) as f32);
    let v = if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    };
    round_half_even(v) as i32 + zero_point
}

/// [`requantize`] with the multiplier picked by the accumulator's sign: `neg` below zero,
/// `pos` otherwise. An int8 Conv with a PRelu folded in (`op::conv_multipliers`) rounds
/// once, after the PRelu: `neg` is `pos` times the channel's slope.
#[inline(always)]
pub fn requantize_signed(acc: i32, pos: f32, neg: f32, zero_point: i32, lo: i32, hi: i32) -> i32 {
    requantize(acc, if acc < 0 { neg } else { pos }, zero_point, lo, hi)
}

/// Quantize one real value to the given params and range, ORT's QuantizeLinear rounding.
#[inline(always)]
pub fn quantize_f32(x: f32, scale: f32, zero_point: i32, lo: i32, hi: i32) -> i32 {
    let v = x / scale;
    if v.is_nan() {
        return zero_point.clamp(lo, hi);
    }
    let r = if v.abs() < 4_194_304.0 {
        round_half_even(v)
    } else {
        v
    };
    let q = r + zero_point as f32;
    q.max(lo as f32).min(hi as f32) as i32
}

/// Range of a quantized dtype.
pub const fn qrange(dt: crate::DType) -> (i32, i32) {
    match dt {
        crate::DType::U8 => (0, 255),
        _ => (-128, 127),
    }
}

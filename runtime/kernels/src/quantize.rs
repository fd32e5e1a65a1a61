//! QuantizeLinear and DequantizeLinear (per tensor or per axis), ORT's rounding.

use cairn_core::quant::{qrange, quantize_f32};
use cairn_core::{DType, ExecError, OpCall, Quant, Shape, TensorMut};

/// (scale, zero point) of element `i` of a tensor with this shape and quantization.
fn params_at(q: &Quant<'_>, shape: &Shape, i: usize) -> (f32, i32) {
    match *q {
        Quant::PerTensor { scale, zero_point } => (scale, zero_point),
        Quant::PerAxis {
            axis,
            scales,
            zero_points,
        } => {
            let inner = shape.prod(axis + 1, shape.rank()).max(1);
            let c = (i / inner) % shape.dim(axis).max(1);
            (scales[c], zero_points[c])
        }
        Quant::None => (1.0, 0),
    }
}

pub fn quantize(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?.f32s()?;
    if out.info.dtype == DType::I32 {
        // ONNX Cast from float to an integer type: truncation toward zero, saturating at
        // the i32 range, NaN to 0 (Rust's `as`).
        for (&v, d) in x.iter().zip(out.data.chunks_exact_mut(4)) {
            d.copy_from_slice(&(v as i32).to_le_bytes());
        }
        return Ok(());
    }
    let (lo, hi) = qrange(out.info.dtype);
    let (q, shape) = (out.info.quant, out.info.shape);
    for (i, (&v, d)) in x.iter().zip(out.data.iter_mut()).enumerate() {
        let (s, z) = params_at(&q, &shape, i);
        let r = quantize_f32(v, s, z, lo, hi);
        *d = if out.info.dtype == DType::U8 {
            r as u8
        } else {
            r as i8 as u8
        };
    }
    Ok(())
}

pub fn dequantize(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let xt = call.req(0)?;
    let (q, shape) = (xt.info.quant, xt.info.shape);
    let y = out.f32s_mut()?;
    for (i, d) in y.iter_mut().enumerate() {
        let v = match xt.info.dtype {
            DType::I8 => xt.data[i] as i8 as i32,
            DType::U8 => xt.data[i] as i32,
            _ => i32::from_le_bytes([
                xt.data[4 * i],
                xt.data[4 * i + 1],
                xt.data[4 * i + 2],
                xt.data[4 * i + 3],
            ]),
        };
        let (s, z) = params_at(&q, &shape, i);
        *d = (v - z) as f32 * s;
    }
    Ok(())
}

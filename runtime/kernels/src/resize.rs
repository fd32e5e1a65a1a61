//! Resize of H and W (NCHW): nearest and bilinear, the ONNX coordinate transforms.

use cairn_core::quant::quantize_f32;
use cairn_core::{DType, ExecError, OpCall, TensorMut};

use crate::util::qp;

/// Input coordinate for output coordinate `o` (param 1 = coordinate transform).
pub fn source(coord: i32, o: usize, scale: f32, len_in: usize, len_out: usize) -> f32 {
    let o = o as f32;
    match coord {
        0 => (o + 0.5) / scale - 0.5,
        1 => o / scale,
        2 => {
            if len_out > 1 {
                o * (len_in as f32 - 1.0) / (len_out as f32 - 1.0)
            } else {
                0.0
            }
        }
        _ => {
            if len_out > 1 {
                (o + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
    }
}

pub(crate) fn nearest(mode: i32, v: f32, len: usize) -> usize {
    let f = libm::floorf(v);
    let frac = v - f;
    let i = match mode {
        0 => {
            if frac <= 0.5 {
                f
            } else {
                f + 1.0
            }
        }
        1 => {
            if frac < 0.5 {
                f
            } else {
                f + 1.0
            }
        }
        2 => f,
        _ => libm::ceilf(v),
    };
    (i.max(0.0) as usize).min(len - 1)
}

pub fn resize(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let (n, c, h, w) = x.info.shape.nchw().ok_or(ExecError::Shape)?;
    let (_, _, oh, ow) = out.info.shape.nchw().ok_or(ExecError::Shape)?;
    let (mode, coord, nmode) = (call.param(0), call.param(1), call.param(2));
    let (sh, sw) = (call.param_f32(3), call.param_f32(4));
    let es = x.info.dtype.size_bytes();
    let (qx, qy) = (qp(&x.info), qp(&out.info));
    for p in 0..n * c {
        for oy in 0..oh {
            let fy = source(coord, oy, sh, h, oh);
            for ox in 0..ow {
                let fx = source(coord, ox, sw, w, ow);
                let o = (p * oh + oy) * ow + ox;
                if mode == 0 {
                    let (iy, ix) = (nearest(nmode, fy, h), nearest(nmode, fx, w));
                    let i = p * h * w + iy * w + ix;
                    out.data[o * es..(o + 1) * es].copy_from_slice(&x.data[i * es..(i + 1) * es]);
                    continue;
                }
                let fy = fy.max(0.0).min((h - 1) as f32);
                let fx = fx.max(0.0).min((w - 1) as f32);
                let (y0, x0) = (libm::floorf(fy) as usize, libm::floorf(fx) as usize);
                let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                let (ly, lx) = (fy - y0 as f32, fx - x0 as f32);
                let base = p * h * w;
                let v = |yy: usize, xx: usize| -> f32 {
                    let i = base + yy * w + xx;
                    match x.info.dtype {
                        DType::I8 => ((x.data[i] as i8) as i32 - qx.1) as f32 * qx.0,
                        _ => f32::from_le_bytes([
                            x.data[4 * i],
                            x.data[4 * i + 1],
                            x.data[4 * i + 2],
                            x.data[4 * i + 3],
                        ]),
                    }
                };
                let r = v(y0, x0) * (1.0 - ly) * (1.0 - lx)
                    + v(y0, x1) * (1.0 - ly) * lx
                    + v(y1, x0) * ly * (1.0 - lx)
                    + v(y1, x1) * ly * lx;
                match x.info.dtype {
                    DType::I8 => out.i8s_mut()?[o] = quantize_f32(r, qy.0, qy.1, -128, 127) as i8,
                    _ => out.f32s_mut()?[o] = r,
                }
            }
        }
    }
    Ok(())
}

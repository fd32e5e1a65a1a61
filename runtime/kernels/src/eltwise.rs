//! Element-wise ops: broadcasting binaries, f32 unary functions, int8 lookup tables.

use cairn_core::op::UnaryFn;
use cairn_core::quant::round_half_even;
use cairn_core::shape::broadcast_strides;
use cairn_core::{ExecError, OpCall, OpKind, TensorMut};

use crate::util::{f32_clamp, for_each_broadcast, qp};

pub fn binary_f32(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let (at, bt) = (call.req(0)?, call.req(1)?);
    let (a, b) = (at.f32s()?, bt.f32s()?);
    let shape = out.info.shape;
    let (sa, sb) = (
        broadcast_strides(&at.info.shape, &shape),
        broadcast_strides(&bt.info.shape, &shape),
    );
    let (lo, hi) = f32_clamp(call.param(0), call.param(1));
    let y = out.f32s_mut()?;
    macro_rules! go {
        ($f:expr) => {
            for_each_broadcast(&shape, &sa, &sb, |o, ia, ib| {
                let f = $f;
                y[o] = f(a[ia], b[ib]).max(lo).min(hi)
            })
        };
    }
    match call.kind {
        OpKind::Add => go!(|x: f32, z: f32| x + z),
        OpKind::Sub => go!(|x: f32, z: f32| x - z),
        OpKind::Mul => go!(|x: f32, z: f32| x * z),
        OpKind::Div => go!(|x: f32, z: f32| x / z),
        OpKind::PRelu => go!(|x: f32, z: f32| if x < 0.0 { x * z } else { x }),
        _ => return Err(ExecError::Unsupported(call.kernel)),
    }
    Ok(())
}

/// int8 Add/Sub/Mul with ORT's QLinearAdd/QLinearMul arithmetic: f32 ratios of scales,
/// round half to even, then the zero point and the activation clamp.
pub fn binary_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let (at, bt) = (call.req(0)?, call.req(1)?);
    let (a, b) = (at.i8s()?, bt.i8s()?);
    let ((sa_, za), (sb_, zb), (sy, zy)) = (qp(&at.info), qp(&bt.info), qp(&out.info));
    let shape = out.info.shape;
    let (sa, sb) = (
        broadcast_strides(&at.info.shape, &shape),
        broadcast_strides(&bt.info.shape, &shape),
    );
    let (lo, hi) = (call.param(0) as f32, call.param(1) as f32);
    let (lo, hi) = (lo - zy as f32, hi - zy as f32);
    let y = out.i8s_mut()?;
    let fin = |v: f32| (round_half_even(v.max(lo).min(hi)) as i32 + zy) as i8;
    match call.kind {
        OpKind::Add | OpKind::Sub => {
            let ra = sa_ / sy;
            let rb = if call.kind == OpKind::Add {
                sb_ / sy
            } else {
                -(sb_ / sy)
            };
            for_each_broadcast(&shape, &sa, &sb, |o, ia, ib| {
                y[o] = fin(ra * (a[ia] as i32 - za) as f32 + rb * (b[ib] as i32 - zb) as f32)
            });
        }
        OpKind::Mul => {
            let r = sa_ * sb_ / sy;
            for_each_broadcast(&shape, &sa, &sb, |o, ia, ib| {
                y[o] = fin(r * ((a[ia] as i32 - za) * (b[ib] as i32 - zb)) as f32)
            });
        }
        _ => return Err(ExecError::Unsupported(call.kernel)),
    }
    Ok(())
}

/// The f32 value of a unary function (shared with the converter's LUT builder).
/// `max(..).min(..)` rather than `clamp`: a NaN input gives the lower bound, never a panic.
#[allow(clippy::manual_clamp)]
pub fn unary_value(f: UnaryFn, a: f32, b: f32, x: f32) -> f32 {
    use UnaryFn::*;
    match f {
        Identity => x,
        Relu => x.max(0.0),
        Clip => x.max(a).min(b),
        LeakyRelu => {
            if x < 0.0 {
                a * x
            } else {
                x
            }
        }
        Sigmoid => 1.0 / (1.0 + libm::expf(-x)),
        HardSigmoid => (a * x + b).max(0.0).min(1.0),
        HardSwish => x * (x / 6.0 + 0.5).max(0.0).min(1.0),
        Tanh => libm::tanhf(x),
        Gelu => 0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2)),
        GeluTanh => {
            let c = 0.797_884_6_f32; // sqrt(2/pi)
            0.5 * x * (1.0 + libm::tanhf(c * (x + 0.044715 * x * x * x)))
        }
        Erf => libm::erff(x),
        Exp => libm::expf(x),
        Neg => -x,
        Abs => x.abs(),
        Sqrt => libm::sqrtf(x),
    }
}

pub fn unary_f32(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let f = UnaryFn::from_code(call.param(0)).ok_or(ExecError::Unsupported(call.kernel))?;
    let (a, b) = (call.param_f32(1), call.param_f32(2));
    if !call.in_place {
        out.data.copy_from_slice(call.req(0)?.data);
    }
    for v in out.f32s_mut()? {
        *v = unary_value(f, a, b, *v);
    }
    Ok(())
}

/// y = table[channel][x + 128]; per-tensor tables have one channel.
pub fn lut_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let table = call.req(1)?.i8s()?;
    if !call.in_place {
        out.data.copy_from_slice(call.req(0)?.data);
    }
    let shape = out.info.shape;
    let y = out.i8s_mut()?;
    let axis = call.param(0);
    if axis < 0 {
        for v in y.iter_mut() {
            *v = table[(*v as i32 + 128) as usize];
        }
    } else {
        let axis = axis as usize;
        let inner = shape.prod(axis + 1, shape.rank());
        let c = shape.dim(axis);
        for (i, v) in y.iter_mut().enumerate() {
            let ch = (i / inner.max(1)) % c.max(1);
            *v = table[ch * 256 + (*v as i32 + 128) as usize];
        }
    }
    Ok(())
}

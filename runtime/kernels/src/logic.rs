//! The `Binary` op (Pow, Max, Min, comparisons, And/Or/Xor) and `Where`, under
//! broadcasting. Booleans are i32 0/1; any non-zero i32 reads as true.

use cairn_core::op::BinaryFn;
use cairn_core::shape::broadcast_strides;
use cairn_core::{DType, ExecError, OpCall, TensorMut, TensorRef};

use crate::eltwise::pow_value;
use crate::util::for_each_broadcast;

pub fn binary(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let f = BinaryFn::from_code(call.param(0)).ok_or(ExecError::Unsupported(call.kernel))?;
    let (at, bt) = (call.req(0)?, call.req(1)?);
    let shape = out.info.shape;
    let (sa, sb) = (
        broadcast_strides(&at.info.shape, &shape),
        broadcast_strides(&bt.info.shape, &shape),
    );
    if f.is_arithmetic() {
        let (a, b) = (at.f32s()?, bt.f32s()?);
        let y = out.f32s_mut()?;
        for_each_broadcast(&shape, &sa, &sb, |o, ia, ib| {
            y[o] = arithmetic(f, a[ia], b[ib])
        });
        return Ok(());
    }
    let y = out.i32s_mut()?;
    if f.is_logic() {
        let (a, b) = (at.i32s()?, bt.i32s()?);
        for_each_broadcast(&shape, &sa, &sb, |o, ia, ib| {
            y[o] = logic(f, a[ia] != 0, b[ib] != 0) as i32
        });
        return Ok(());
    }
    match at.info.dtype {
        DType::F32 => {
            let (a, b) = (at.f32s()?, bt.f32s()?);
            for_each_broadcast(&shape, &sa, &sb, |o, ia, ib| {
                y[o] = compare(f, a[ia], b[ib]) as i32
            });
        }
        _ => {
            let (a, b) = (at.i32s()?, bt.i32s()?);
            for_each_broadcast(&shape, &sa, &sb, |o, ia, ib| {
                y[o] = compare(f, a[ia], b[ib]) as i32
            });
        }
    }
    Ok(())
}

/// Max and Min pass a NaN operand through, as numpy's `maximum`/`minimum` do; Mod takes
/// the divisor's sign, Fmod the dividend's.
#[inline]
pub(crate) fn arithmetic(f: BinaryFn, a: f32, b: f32) -> f32 {
    match f {
        BinaryFn::Pow => pow_value(a, b),
        BinaryFn::Fmod => libm::fmodf(a, b),
        BinaryFn::Mod => {
            let r = libm::fmodf(a, b);
            if r != 0.0 && (r < 0.0) != (b < 0.0) {
                r + b
            } else {
                r
            }
        }
        BinaryFn::Max if a.is_nan() || a >= b => a,
        BinaryFn::Min if a.is_nan() || a <= b => a,
        _ => b,
    }
}

fn compare<T: PartialOrd>(f: BinaryFn, a: T, b: T) -> bool {
    match f {
        BinaryFn::Equal => a == b,
        BinaryFn::Less => a < b,
        BinaryFn::LessOrEqual => a <= b,
        BinaryFn::Greater => a > b,
        _ => a >= b,
    }
}

fn logic(f: BinaryFn, a: bool, b: bool) -> bool {
    match f {
        BinaryFn::And => a && b,
        BinaryFn::Or => a || b,
        _ => a != b,
    }
}

/// `y = cond ? x : other`, element by element of the broadcast shape (x and other share
/// a dtype of 4-byte elements, checked at load).
pub fn where_select(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let (ct, xt, ot) = (call.req(0)?, call.req(1)?, call.req(2)?);
    let cond = ct.i32s()?;
    let shape = out.info.shape;
    let strides = |t: &TensorRef<'_>| broadcast_strides(&t.info.shape, &shape);
    let (sc, sx, so) = (strides(&ct), strides(&xt), strides(&ot));
    let size = xt.info.dtype.size_bytes();
    let y = out.data;
    // Two passes over the shared output index: x where cond holds, other elsewhere.
    for (src, st, take) in [(xt.data, &sx, true), (ot.data, &so, false)] {
        for_each_broadcast(&shape, &sc, st, |o, ic, is| {
            if (cond[ic] != 0) == take {
                y[o * size..(o + 1) * size].copy_from_slice(&src[is * size..(is + 1) * size]);
            }
        });
    }
    Ok(())
}

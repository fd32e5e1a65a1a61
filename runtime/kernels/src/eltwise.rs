//! Element-wise ops: broadcasting binaries, f32 unary functions, int8 lookup tables.

use cairn_core::op::UnaryFn;
use cairn_core::quant::{quantize_f32, round_half_even};
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

/// int8 Add/Sub/Mul with ONNX Runtime's arithmetic on x86 (MLAS), operation for operation,
/// so results agree with ORT on the same QDQ model:
/// - Add (QLinearAdd): `fma(a, sa/sy, fma(b, sb/sy, zy - (sa/sy·za + sb/sy·zb)))` on the raw
///   int8 values, a scalar operand folded into the constant part, round half to even.
/// - Mul (QLinearMul): `(a−za)(b−zb) · (sa·sb/sy) + zy`, round half to even.
/// - Sub (no fused kernel in ORT): dequantize, subtract in f32, quantize.
///
/// The result saturates to int8, then the fused activation clamp applies.
pub fn binary_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let (at, bt) = (call.req(0)?, call.req(1)?);
    let (a, b) = (at.i8s()?, bt.i8s()?);
    let ((sa_, za), (sb_, zb), (sy, zy)) = (qp(&at.info), qp(&bt.info), qp(&out.info));
    let shape = out.info.shape;
    let (sa, sb) = (
        broadcast_strides(&at.info.shape, &shape),
        broadcast_strides(&bt.info.shape, &shape),
    );
    let (lo, hi) = (call.param(0), call.param(1));
    let y = out.i8s_mut()?;
    let fin = |v: f32| (round_half_even(v.clamp(-129.0, 128.0)) as i32).clamp(lo, hi) as i8;
    match call.kind {
        OpKind::Add | OpKind::Mul => {
            match Arith::of(call.kind, a, b, (sa_, za), (sb_, zb), (sy, zy)) {
                Arith::Add {
                    ra,
                    rb,
                    fixed,
                    a_scalar,
                    b_scalar,
                } => {
                    let f = |av: i8, bv: i8| {
                        fin(if a_scalar {
                            fma(bv as f32, rb, fixed)
                        } else if b_scalar {
                            fma(av as f32, ra, fixed)
                        } else {
                            fma(av as f32, ra, fma(bv as f32, rb, fixed))
                        })
                    };
                    walk(&shape, a, b, &sa, &sb, y, f);
                }
                Arith::Mul { za, zb, r, zf } => {
                    let f =
                        |av: i8, bv: i8| fin(((av as i32 - za) * (bv as i32 - zb)) as f32 * r + zf);
                    walk(&shape, a, b, &sa, &sb, y, f);
                }
            }
        }
        OpKind::Sub => {
            let f = |av: i8, bv: i8| {
                let real = (av as i32 - za) as f32 * sa_ - (bv as i32 - zb) as f32 * sb_;
                quantize_f32(real, sy, zy, -128, 127).clamp(lo, hi) as i8
            };
            walk(&shape, a, b, &sa, &sb, y, f);
        }
        _ => return Err(ExecError::Unsupported(call.kernel)),
    }
    Ok(())
}

/// The constants of int8 Add and Mul (see `binary_i8`), shared by the reference and the
/// SIMD path so both apply the same values.
#[derive(Clone, Copy)]
pub(crate) enum Arith {
    /// `fma(a, ra, fma(b, rb, fixed))`; with `a_scalar`/`b_scalar` the constant operand is
    /// already folded into `fixed` and only the other term is applied.
    Add {
        ra: f32,
        rb: f32,
        fixed: f32,
        a_scalar: bool,
        b_scalar: bool,
    },
    /// `(a − za)(b − zb) · r + zf`.
    Mul { za: i32, zb: i32, r: f32, zf: f32 },
}

impl Arith {
    /// Add's constants for `kind == Add`, Mul's otherwise, from the operands and the
    /// (scale, zero point) of a, b and y.
    pub(crate) fn of(
        kind: OpKind,
        a: &[i8],
        b: &[i8],
        (sa, za): (f32, i32),
        (sb, zb): (f32, i32),
        (sy, zy): (f32, i32),
    ) -> Arith {
        if kind != OpKind::Add {
            return Arith::Mul {
                za,
                zb,
                r: sa * sb / sy,
                zf: zy as f32,
            };
        }
        let (ra, rb) = (sa / sy, sb / sy);
        let mut fixed = zy as f32 - (ra * za as f32 + rb * zb as f32);
        let (a_scalar, b_scalar) = (a.len() == 1, b.len() == 1 && a.len() != 1);
        if a_scalar {
            fixed += a[0] as f32 * ra;
        } else if b_scalar {
            fixed += b[0] as f32 * rb;
        }
        Arith::Add {
            ra,
            rb,
            fixed,
            a_scalar,
            b_scalar,
        }
    }
}

/// Fused multiply-add, one rounding: hardware FMA through std where present, the FPU's
/// `vfma.f32` with the `vfma` feature on hard-float Arm (see `vfma.rs`), else libm's
/// software `fmaf` (it computes in f64: about 2.4 KB of soft-float code on an M4F).
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        a.mul_add(b, c)
    }
    #[cfg(all(
        not(feature = "std"),
        feature = "vfma",
        target_arch = "arm",
        target_abi = "eabihf"
    ))]
    {
        crate::vfma::fma(a, b, c)
    }
    #[cfg(all(
        not(feature = "std"),
        not(all(feature = "vfma", target_arch = "arm", target_abi = "eabihf"))
    ))]
    {
        libm::fmaf(a, b, c)
    }
}

/// Apply `f` element-wise under broadcasting. The two common layouts — equal shapes, and
/// one operand constant over the innermost axes (per-channel scaling) — take contiguous
/// loops; everything else walks the general strided index.
///
/// Only the two run loops are generic over `f`; the walk itself (`walk_runs`) is compiled
/// once for every int8 binary op (about 1 KB less flash on a microcontroller).
fn walk(
    shape: &cairn_core::Shape,
    a: &[i8],
    b: &[i8],
    sa: &[usize; 6],
    sb: &[usize; 6],
    y: &mut [i8],
    f: impl Fn(i8, i8) -> i8,
) {
    let run = |y: &mut [i8], a: &[i8], b: Operand<'_>| {
        crate::fast::vectorized(
            #[inline(always)]
            || match b {
                Operand::Each(b) => {
                    for ((o, &av), &bv) in y.iter_mut().zip(a).zip(b) {
                        *o = f(av, bv);
                    }
                }
                Operand::All(bv) => {
                    for (o, &av) in y.iter_mut().zip(a) {
                        *o = f(av, bv);
                    }
                }
            },
        )
    };
    walk_runs(shape, a, b, sa, sb, y, &run)
}

/// One run of a binary op: outputs, `a`'s elements, `b`'s side.
type Run<'f> = &'f dyn Fn(&mut [i8], &[i8], Operand<'_>);

/// `b`'s side of one run of outputs: an element per output, or one value for all of them.
#[derive(Clone, Copy)]
enum Operand<'a> {
    Each(&'a [i8]),
    All(i8),
}

/// Split a broadcasting binary op into runs of outputs with `a` contiguous: the whole
/// tensor when the shapes are equal, one run per `b` value when `b` is constant over the
/// innermost axes, single elements otherwise.
fn walk_runs(
    shape: &cairn_core::Shape,
    a: &[i8],
    b: &[i8],
    sa: &[usize; 6],
    sb: &[usize; 6],
    y: &mut [i8],
    run: Run<'_>,
) {
    if a.len() == y.len() && b.len() == y.len() {
        run(y, a, Operand::Each(b));
        return;
    }
    if let Some((inner, d)) = constant_b_run(shape, sa, sb, a.len(), y.len()) {
        for (chunk, (o, ac)) in y.chunks_mut(inner).zip(a.chunks(inner)).enumerate() {
            run(o, ac, Operand::All(b[outer_index(shape, sb, d, chunk)]));
        }
        return;
    }
    for_each_broadcast(shape, sa, sb, |o, ia, ib| {
        run(&mut y[o..o + 1], &a[ia..ia + 1], Operand::All(b[ib]))
    });
}

/// `(inner, d)` when `b` is constant over runs of the innermost `inner` > 1 elements (the
/// axes from `d` on) while `a` is whole and contiguous there: a per-channel operand.
pub(crate) fn constant_b_run(
    shape: &cairn_core::Shape,
    sa: &[usize; 6],
    sb: &[usize; 6],
    a_len: usize,
    y_len: usize,
) -> Option<(usize, usize)> {
    let r = shape.rank();
    let mut inner = 1usize;
    let mut d = r;
    while d > 0 && sb[d - 1] == 0 && sa[d - 1] == inner {
        inner *= shape.dim(d - 1);
        d -= 1;
    }
    (inner > 1 && a_len == y_len && d < r).then_some((inner, d))
}

/// Flat index into an operand with strides `st` of the `chunk`-th run of the dims before `d`.
pub(crate) fn outer_index(
    shape: &cairn_core::Shape,
    st: &[usize; 6],
    d: usize,
    chunk: usize,
) -> usize {
    let mut rem = chunk;
    let mut idx = 0;
    for k in (0..d).rev() {
        let n = shape.dim(k).max(1);
        idx += (rem % n) * st[k];
        rem /= n;
    }
    idx
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
        Reciprocal => 1.0 / x,
        Log => libm::logf(x),
        Sin => libm::sinf(x),
        Cos => libm::cosf(x),
        Tan => libm::tanf(x),
        Pow => pow_value(x, a),
        Floor => libm::floorf(x),
        Ceil => libm::ceilf(x),
        Round => libm::rintf(x),
        Sign => sign_value(x),
        Softplus => libm::logf(libm::expf(x) + 1.0),
        Elu if x < 0.0 => (libm::expf(x) - 1.0) * a,
        Elu => x,
        Selu if x <= 0.0 => (libm::expf(x) * a - a) * b,
        Selu => x * b,
        Mish => x * libm::tanhf(libm::log1pf(libm::expf(x))),
        Softsign => x / (1.0 + x.abs()),
        ThresholdedRelu if x > a => x,
        ThresholdedRelu => 0.0,
        Celu => x.max(0.0) + (a * (libm::expf(x / a) - 1.0)).min(0.0),
        Shrink if x < -a => x + b,
        Shrink if x > a => x - b,
        Shrink => 0.0,
        Acos => libm::acosf(x),
        Asin => libm::asinf(x),
        Atan => libm::atanf(x),
        Sinh => libm::sinhf(x),
        Cosh => libm::coshf(x),
        Asinh => libm::asinhf(x),
        Acosh => libm::acoshf(x),
        HardSwishAB => x * (a * x + b).max(0.0).min(1.0),
        // The product the fused pair computed, rounded the same way.
        Silu => x * (1.0 / (1.0 + libm::expf(-x))),
    }
}

/// x^e, exact for the common squares and square roots.
pub(crate) fn pow_value(x: f32, e: f32) -> f32 {
    if e == 2.0 {
        x * x
    } else if e == 1.0 {
        x
    } else {
        libm::powf(x, e)
    }
}

/// −1, 0 or 1 (NaN stays NaN).
fn sign_value(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
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

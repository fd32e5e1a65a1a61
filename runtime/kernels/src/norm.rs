//! Softmax and LayerNormalization. The int8 versions dequantize, compute in f32 and
//! quantize (what ORT does around these ops in a QDQ model).

use cairn_core::quant::quantize_f32;
use cairn_core::{DType, ExecError, OpCall, TensorMut};

use crate::util::qp;

/// Read element i of an f32 or int8 tensor as a real number.
fn real(data: &[u8], dtype: DType, q: (f32, i32), i: usize) -> f32 {
    match dtype {
        DType::I8 => ((data[i] as i8) as i32 - q.1) as f32 * q.0,
        _ => f32::from_le_bytes([
            data[4 * i],
            data[4 * i + 1],
            data[4 * i + 2],
            data[4 * i + 3],
        ]),
    }
}

fn store(data: &mut [u8], dtype: DType, q: (f32, i32), i: usize, v: f32) {
    match dtype {
        DType::I8 => data[i] = quantize_f32(v, q.0, q.1, -128, 127) as i8 as u8,
        _ => data[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes()),
    }
}

/// Whether `len` bytes hold `elems` elements of `dt`.
fn holds(len: usize, dt: DType, elems: usize) -> bool {
    elems.checked_mul(dt.size_bytes()).is_some_and(|b| b <= len)
}

/// A softmax's `(outer, n, inner)` (params 0–2), checked against `len`: the elements its
/// input and output both hold. The f32 reference checks itself: the converter's constant
/// folding runs it on graphs no loader has checked. The int8 kernels rely on
/// `Model::parse`'s check of the same product (they are in every microcontroller image,
/// under a flash budget) and read typed slices, so a wrong dtype is an error there.
fn softmax_rows(call: &OpCall<'_>, len: usize) -> Result<(usize, usize, usize), ExecError> {
    let (outer, n, inner) = (
        call.param(0) as usize,
        call.param(1) as usize,
        call.param(2) as usize,
    );
    match outer.checked_mul(n).and_then(|v| v.checked_mul(inner)) {
        Some(elems) if elems <= len => Ok((outer, n, inner)),
        _ => Err(ExecError::Shape),
    }
}

pub fn softmax(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    match call.req(0)?.info.dtype {
        DType::I8 => softmax_i8(call, out),
        dt @ DType::F32 if out.info.dtype == dt => softmax_real(
            call,
            out,
            |d, i| real(d, dt, (1.0, 0), i),
            |d, i, v| store(d, dt, (1.0, 0), i, v),
        ),
        _ => Err(ExecError::DType),
    }
}

/// int8 Softmax: ONNX Runtime's arithmetic (flavour 1) or dequantize, f32 softmax,
/// quantize (flavour 0). No f32-tensor code, so an int8-only `Select` links none.
pub fn softmax_i8(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    if call.param(3) == 1 {
        return softmax_ort_i8(call, out);
    }
    softmax_int_max(call, out)
}

/// int8 softmax (flavour 0): per row, `e = expf((x − x_max)·s_x)` with the difference
/// taken in integers (so `e` depends only on `x − x_max`, one of 256 values), `sum = Σ e`
/// in element order, `y = quantize(e / sum)`. The zero point cancels in the difference.
fn softmax_int_max(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let ((sx, _), (sy, zy)) = (qp(&x.info), qp(&out.info));
    let xs = x.i8s()?;
    let (outer, n, inner) = (
        call.param(0) as usize,
        call.param(1) as usize,
        call.param(2) as usize,
    );
    let y = out.i8s_mut()?;
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let m = (0..n).map(|k| xs[at(k)]).max().unwrap_or(0) as i32;
            let e = |v: i8| libm::expf((v as i32 - m) as f32 * sx);
            let mut sum = 0.0f32;
            for k in 0..n {
                sum += e(xs[at(k)]);
            }
            for k in 0..n {
                y[at(k)] = quantize_f32(e(xs[at(k)]) / sum, sy, zy, -128, 127) as i8;
            }
        }
    }
    Ok(())
}

/// Softmax over f32 values read by `get` and written by `put` (by element index).
fn softmax_real(
    call: &OpCall<'_>,
    out: TensorMut<'_>,
    get: impl Fn(&[u8], usize) -> f32,
    put: impl Fn(&mut [u8], usize, f32),
) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let (outer, n, inner) = softmax_rows(call, x.data.len().min(out.data.len()) / 4)?;
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let mut m = f32::NEG_INFINITY;
            for k in 0..n {
                m = m.max(get(x.data, at(k)));
            }
            let mut sum = 0.0f32;
            for k in 0..n {
                sum += libm::expf(get(x.data, at(k)) - m);
            }
            for k in 0..n {
                let e = libm::expf(get(x.data, at(k)) - m);
                put(out.data, at(k), e / sum);
            }
        }
    }
    Ok(())
}

/// int8 softmax with ONNX Runtime's QLinearSoftmax arithmetic (flavour 1; the converter no
/// longer writes it, since QDQ models are held to the graph as written, but files that use
/// it still load and run the same): shift inputs so the maximum
/// lands on the table's last entry, sum the f32 exp table, then
/// `round(e · floor(1/s_y) / sum) + z_y`. The table (input 1) is built at convert time.
fn softmax_ort_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let table = call.req(1)?.f32s()?;
    let xs = x.i8s()?;
    let (sy, zy) = qp(&out.info);
    let ys = libm::floorf(1.0 / sy);
    let (outer, n, inner) = (
        call.param(0) as usize,
        call.param(1) as usize,
        call.param(2) as usize,
    );
    let y = out.i8s_mut()?;
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let xmax = (0..n).map(|k| xs[at(k)]).max().unwrap_or(0) as i32;
            let adj = 127 - xmax;
            let e = |k: usize| table[((adj + xs[at(k)] as i32) & 0xFF) as usize];
            let mut sum = 0.0f32;
            for k in 0..n {
                sum += e(k);
            }
            if sum == 0.0 {
                continue;
            }
            for k in 0..n {
                let q = crate::util::round_half_even_wide((e(k) * ys) / sum).saturating_add(zy);
                y[at(k)] = q.clamp(-128, 127) as i8;
            }
        }
    }
    Ok(())
}

/// A LayerNorm's operands as every path reads them: the input, γ, β (optional; both cut
/// to `inner`), ε, and the `outer` rows of `inner` normalized elements (from param 0, the
/// first normalized axis).
pub(crate) struct LnArgs<'a> {
    pub x: cairn_core::TensorRef<'a>,
    pub gamma: &'a [f32],
    pub beta: Option<&'a [f32]>,
    pub eps: f32,
    pub outer: usize,
    pub inner: usize,
}

impl<'a> LnArgs<'a> {
    /// The operands of `call`; an error when one is missing, γ or β is not f32 or holds
    /// fewer than `inner` values, or the axis is past the input's rank.
    pub(crate) fn of(call: &OpCall<'a>) -> Result<Self, ExecError> {
        let x = call.req(0)?;
        let gamma = call.req(1)?.f32s()?;
        let beta = match call.input(2) {
            Some(b) => Some(b.f32s()?),
            None => None,
        };
        let axis = call.param(0) as usize;
        let s = x.info.shape;
        if axis > s.rank() {
            return Err(ExecError::Shape);
        }
        let inner = s.prod(axis, s.rank());
        let cut = |v: &'a [f32]| v.get(..inner).ok_or(ExecError::Shape);
        Ok(LnArgs {
            x,
            gamma: cut(gamma)?,
            beta: beta.map(cut).transpose()?,
            eps: call.param_f32(1),
            outer: s.prod(0, axis),
            inner,
        })
    }
}

pub fn layer_norm(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let LnArgs {
        x,
        gamma,
        beta,
        eps,
        outer,
        inner,
    } = LnArgs::of(call)?;
    let (dt, qx, qy) = (x.info.dtype, qp(&x.info), qp(&out.info));
    // Both int8 or both f32, each holding `outer · inner` elements (γ and β: `LnArgs`).
    if !matches!(dt, DType::I8 | DType::F32) || out.info.dtype != dt {
        return Err(ExecError::DType);
    }
    let elems = outer.checked_mul(inner).ok_or(ExecError::Shape)?;
    if !holds(x.data.len(), dt, elems) || !holds(out.data.len(), dt, elems) {
        return Err(ExecError::Shape);
    }
    for o in 0..outer {
        let base = o * inner;
        let mut mean = 0.0f32;
        for k in 0..inner {
            mean += real(x.data, dt, qx, base + k);
        }
        mean /= inner as f32;
        let mut var = 0.0f32;
        for k in 0..inner {
            let d = real(x.data, dt, qx, base + k) - mean;
            var += d * d;
        }
        var /= inner as f32;
        let inv = 1.0 / libm::sqrtf(var + eps);
        for k in 0..inner {
            let v = (real(x.data, dt, qx, base + k) - mean) * inv * gamma[k]
                + beta.map_or(0.0, |b| b[k]);
            store(out.data, dt, qy, base + k, v);
        }
    }
    Ok(())
}

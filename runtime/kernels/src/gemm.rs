//! Fully connected (x · Wᵀ + b with W as [N, K]) and batched MatMul with broadcast batch.

use cairn_core::quant::{quantize_f32, requantize};
use cairn_core::shape::{broadcast_strides, Shape};
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::util::{f32_clamp, qp};

fn fc_dims(call: &OpCall<'_>) -> Result<(usize, usize, usize), ExecError> {
    let x = call.req(0)?.info.shape;
    let w = call.req(1)?.info.shape;
    let (n, k) = (w.dim(0), w.dim(1));
    let m = x.numel().ok_or(ExecError::Shape)? / k.max(1);
    Ok((m, n, k))
}

pub fn fc_f32(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let (m, n, k) = fc_dims(call)?;
    let x = call.req(0)?.f32s()?;
    let w = call.req(1)?.f32s()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.f32s()?),
        None => None,
    };
    let (lo, hi) = f32_clamp(call.param(0), call.param(1));
    let y = out.f32s_mut()?;
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let mut acc = bias.map_or(0.0, |b| b[j]);
            for t in 0..k {
                acc += xr[t] * wr[t];
            }
            y[i * n + j] = acc.max(lo).min(hi);
        }
    }
    Ok(())
}

/// The run-time quantization of one input row of FullyConnected.f32-w8, as ONNX's
/// DynamicQuantizeLinear does it: the range `[min(0, min x), max(0, max x)]` (NaN values
/// ignored) in 255 steps (`scale`; 1 where the range is 0 or not finite), the zero point
/// `round(−min / scale)` in 0..=255, and `q = clamp(round(x / scale) + zp, 0, 255)` (round
/// half to even; NaN gives zp), written to `q` when it is given (as long as `x`).
pub fn w8_row_q(x: &[f32], q: Option<&mut [u8]>) -> (f32, i32) {
    let (mut lo, mut hi) = (0f32, 0f32);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let (s, zp) = w8_params(lo, hi);
    if let Some(q) = q {
        for (qv, &v) in q.iter_mut().zip(x) {
            *qv = quantize_f32(v, s, zp, 0, 255) as u8;
        }
    }
    (s, zp)
}

/// The scale and zero point of a row whose range (0 in it) is `[lo, hi]` ([`w8_row_q`]).
#[inline(always)]
pub fn w8_params(lo: f32, hi: f32) -> (f32, i32) {
    let mut s = (hi - lo) / 255.0;
    if !(s > 0.0 && s.is_finite()) {
        s = 1.0;
    }
    (s, quantize_f32(-lo, s, 0, 0, 255))
}

/// One output of FullyConnected.f32-w8 from its exact integer sum `acc` = Σ (q − zp)·w:
/// `acc · (s · sw) + b`, clamped to `[lo, hi]` (products and sum rounded as written, no
/// fused multiply-add).
#[inline(always)]
pub fn w8_out(acc: i32, s: f32, sw: f32, b: f32, lo: f32, hi: f32) -> f32 {
    (acc as f32 * (s * sw) + b).max(lo).min(hi)
}

/// The weight scale of each output row of a FullyConnected.f32-w8 (one value for all, or
/// one per row).
pub(crate) fn w8_scales<'a>(w: &'a cairn_core::TensorInfo<'a>) -> &'a [f32] {
    match &w.quant {
        cairn_core::Quant::PerAxis { scales, .. } => scales,
        cairn_core::Quant::PerTensor { scale, .. } => core::slice::from_ref(scale),
        cairn_core::Quant::None => &[1.0],
    }
}

/// FullyConnected.f32-w8: f32 `x` `[M, K]`, symmetric int8 weights `[N, K]` (one scale, or
/// one per row), optional f32 bias, f32 out. Each row of x is quantized at run time
/// ([`w8_row_q`]), the sums are exact in i32 (K ≤ 65,536, a load rule), and each output is
/// [`w8_out`]. Needs no buffer: the row is quantized again for each block of 32 outputs, in
/// pieces of 128.
pub fn fc_w8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    const JB: usize = 32;
    const TB: usize = 128;
    let (m, n, k) = fc_dims(call)?;
    let x = call.req(0)?.f32s()?;
    let wt = call.req(1)?;
    let w = wt.i8s()?;
    let sw = w8_scales(&wt.info);
    let bias = match call.input(2) {
        Some(b) => Some(b.f32s()?),
        None => None,
    };
    let (lo, hi) = f32_clamp(call.param(0), call.param(1));
    let y = out.f32s_mut()?;
    if x.len() < m * k || w.len() < n * k || y.len() < m * n || (sw.len() != 1 && sw.len() < n) {
        return Err(ExecError::Shape);
    }
    let mut q = [0i32; TB];
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let (s, zp) = w8_row_q(xr, None);
        for j0 in (0..n).step_by(JB) {
            let jn = JB.min(n - j0);
            let mut acc = [0i32; JB];
            for t0 in (0..k).step_by(TB) {
                let xs = &xr[t0..k.min(t0 + TB)];
                for (qv, &v) in q.iter_mut().zip(xs) {
                    *qv = quantize_f32(v, s, zp, 0, 255) - zp;
                }
                for (jj, a) in acc[..jn].iter_mut().enumerate() {
                    let wr = &w[(j0 + jj) * k + t0..][..xs.len()];
                    *a += q.iter().zip(wr).map(|(&a, &b)| a * b as i32).sum::<i32>();
                }
            }
            for (jj, &a) in acc[..jn].iter().enumerate() {
                let j = j0 + jj;
                let swj = sw[if sw.len() == 1 { 0 } else { j }];
                y[i * n + j] = w8_out(a, s, swj, bias.map_or(0.0, |b| b[j]), lo, hi);
            }
        }
    }
    Ok(())
}

pub fn fc_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let (m, n, k) = fc_dims(call)?;
    let xt = call.req(0)?;
    let x = xt.i8s()?;
    let w = call.req(1)?.i8s()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.i32s()?),
        None => None,
    };
    let scales = call.req(3)?.f32s()?;
    let (_, zx) = qp(&xt.info);
    let (_, zy) = qp(&out.info);
    let (lo, hi) = (call.param(0), call.param(1));
    let y = out.i8s_mut()?;
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    if k <= crate::dsp::MAX_K {
        let mut xp = [0u32; crate::dsp::MAX_K / 2];
        for (i, yr) in y.chunks_mut(n).enumerate().take(m) {
            let xr = &x[i * k..(i + 1) * k];
            let done = crate::dsp::pair_activations(xr, zx, &mut xp);
            for (j, yv) in yr.iter_mut().enumerate() {
                let wr = &w[j * k..(j + 1) * k];
                let acc = crate::dsp::dot(wr, &xp, done, bias.map_or(0, |b| b[j]));
                let acc = xr[done..]
                    .iter()
                    .zip(&wr[done..])
                    .fold(acc, |a, (&xv, &wv)| {
                        a.wrapping_add((xv as i32 - zx) * wv as i32)
                    });
                *yv = requantize(acc, scales[j], zy, lo, hi) as i8;
            }
        }
        return Ok(());
    }
    // Plain integer dot products; compiled a second time with AVX2 where present.
    crate::fast::vectorized(
        #[inline(always)]
        || {
            for (i, yr) in y.chunks_mut(n).enumerate().take(m) {
                let xr = &x[i * k..(i + 1) * k];
                for (j, yv) in yr.iter_mut().enumerate() {
                    let wr = &w[j * k..(j + 1) * k];
                    let acc = xr
                        .iter()
                        .zip(wr)
                        .fold(bias.map_or(0, |b| b[j]), |a, (&xv, &wv)| {
                            a.wrapping_add((xv as i32 - zx) * wv as i32)
                        });
                    *yv = requantize(acc, scales[j], zy, lo, hi) as i8;
                }
            }
        },
    );
    Ok(())
}

/// `(m, k, n)` of a BatchMatMul `A [.., m, k] · B [.., k, n] → Y`, or `None` when an
/// operand or the output has fewer than two dims (the fast paths' shared check: hosts and
/// phones only).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn bmm_dims(a: &Shape, b: &Shape, y: &Shape) -> Option<(usize, usize, usize)> {
    if a.rank() < 2 || b.rank() < 2 || y.rank() < 2 {
        return None;
    }
    Some((
        a.dim(a.rank() - 2),
        a.dim(a.rank() - 1),
        b.dim(b.rank() - 1),
    ))
}

/// Batch geometry: for each output batch index, the matrix offsets into a and b.
pub(crate) fn bmm_walk(a: &Shape, b: &Shape, y: &Shape, f: impl FnMut(usize, usize, usize)) {
    let r = y.rank();
    let yb = Shape::new(&dims6(y)[..r - 2]).unwrap_or(Shape::SCALAR);
    let ab = Shape::new(&dims6(a)[..a.rank() - 2]).unwrap_or(Shape::SCALAR);
    let bb = Shape::new(&dims6(b)[..b.rank() - 2]).unwrap_or(Shape::SCALAR);
    let sa = broadcast_strides(&ab, &yb);
    let sb = broadcast_strides(&bb, &yb);
    crate::util::for_each_broadcast(&yb, &sa, &sb, f);
}

fn dims6(s: &Shape) -> [usize; 6] {
    let mut d = [0usize; 6];
    for (i, v) in s.dims().iter().enumerate() {
        d[i] = *v as usize;
    }
    d
}

pub fn bmm_f32(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let (at, bt) = (call.req(0)?, call.req(1)?);
    let (a, b) = (at.f32s()?, bt.f32s()?);
    let (sa, sb, sy) = (at.info.shape, bt.info.shape, out.info.shape);
    let (m, k, n) = (
        sa.dim(sa.rank() - 2),
        sa.dim(sa.rank() - 1),
        sb.dim(sb.rank() - 1),
    );
    let y = out.f32s_mut()?;
    bmm_walk(&sa, &sb, &sy, |o, ia, ib| {
        let (ao, bo, yo) = (ia * m * k, ib * k * n, o * m * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for t in 0..k {
                    acc += a[ao + i * k + t] * b[bo + t * n + j];
                }
                y[yo + i * n + j] = acc;
            }
        }
    });
    Ok(())
}

pub fn bmm_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let (at, bt) = (call.req(0)?, call.req(1)?);
    let (a, b) = (at.i8s()?, bt.i8s()?);
    let scale = *call.req(2)?.f32s()?.first().ok_or(ExecError::Shape)?;
    let ((_, za), (_, zb), (_, zy)) = (qp(&at.info), qp(&bt.info), qp(&out.info));
    let (sa, sb, sy) = (at.info.shape, bt.info.shape, out.info.shape);
    let (m, k, n) = (
        sa.dim(sa.rank() - 2),
        sa.dim(sa.rank() - 1),
        sb.dim(sb.rank() - 1),
    );
    let y = out.i8s_mut()?;
    bmm_walk(&sa, &sb, &sy, |o, ia, ib| {
        let (ao, bo, yo) = (ia * m * k, ib * k * n, o * m * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0i32;
                for t in 0..k {
                    acc = acc.wrapping_add(
                        (a[ao + i * k + t] as i32 - za) * (b[bo + t * n + j] as i32 - zb),
                    );
                }
                y[yo + i * n + j] = requantize(acc, scale, zy, -128, 127) as i8;
            }
        }
    });
    Ok(())
}

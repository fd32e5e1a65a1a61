//! Fully connected (x · Wᵀ + b with W as [N, K]) and batched MatMul with broadcast batch.

use cairn_core::quant::requantize;
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

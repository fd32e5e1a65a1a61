//! Resize (H and W of NCHW) on hosts, bit-exact with the reference (`resize::resize`;
//! tested in `tests/exact_resize.rs`).
//!
//! The reference recomputes both source coordinates (float divisions, `floor`) for every
//! output element. Here each output column's source (nearest: an index; linear: two
//! indices and a weight) is computed once per op with the reference's own functions, each
//! row's once per row; nearest then gathers a row and copies it to every output row that
//! reads the same input row, and linear evaluates the reference's expression on a
//! dequantization table. Same functions, same float operations in the same order, so the
//! same bytes.

use cairn_core::quant::quantize_f32;
use cairn_core::{DType, ExecError, OpCall, TensorMut};

use crate::resize::{nearest, source};
use crate::util::qp;

/// Widest output row this path takes (its column tables live on the stack).
const MAX_OW: usize = 2048;

/// Resize, or `None` when the op is not this path's case.
pub fn resize(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return None;
    }
    let x = call.req(0).ok()?;
    let (_, _, h, w) = x.info.shape.nchw()?;
    let (_, _, oh, ow) = out.info.shape.nchw()?;
    if ow > MAX_OW || h == 0 || w == 0 || oh == 0 || ow == 0 {
        return None;
    }
    match (call.param(0), x.info.dtype) {
        (0, _) => Some(nearest_planes(call, out)),
        (1, DType::I8) => Some(linear_i8(call, out)),
        _ => None,
    }
}

fn nearest_planes(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let (n, c, h, w) = x.info.shape.nchw().ok_or(ExecError::Shape)?;
    let (_, _, oh, ow) = out.info.shape.nchw().ok_or(ExecError::Shape)?;
    let (coord, nmode) = (call.param(1), call.param(2));
    let (sh, sw) = (call.param_f32(3), call.param_f32(4));
    let es = x.info.dtype.size_bytes();
    stack_buf!(cols: usize, ow, 256, MAX_OW);
    for (ox, col) in cols[..ow].iter_mut().enumerate() {
        *col = nearest(nmode, source(coord, ox, sw, w, ow), w);
    }
    let row_bytes = ow * es;
    let plane_bytes = oh * row_bytes;
    let cols = &cols[..ow];
    let data = &x.data[..n * c * h * w * es];
    // Planes split across threads: a gathered byte costs about 8 multiply-adds' time.
    let work = (n * c * plane_bytes) as u64 * GATHER_WORK;
    crate::par::par_pieces(
        &mut out.data[..n * c * plane_bytes],
        plane_bytes,
        work,
        |at, planes| {
            for (k, dst) in planes.chunks_exact_mut(plane_bytes).enumerate() {
                let p = at / plane_bytes + k;
                let plane = &data[p * h * w * es..(p + 1) * h * w * es];
                let mut prev: Option<(usize, usize)> = None;
                for oy in 0..oh {
                    let iy = nearest(nmode, source(coord, oy, sh, h, oh), h);
                    let at = oy * row_bytes;
                    match prev {
                        Some((py, from)) if py == iy => dst.copy_within(from..from + row_bytes, at),
                        _ => {
                            let src = &plane[iy * w * es..(iy + 1) * w * es];
                            gather(src, cols, es, &mut dst[at..at + row_bytes]);
                        }
                    }
                    prev = Some((iy, at));
                }
            }
        },
    );
    Ok(())
}

/// The time of one gathered byte of nearest Resize, and of one bilinear int8 output, in
/// multiply-adds (what `par::parts_for` weighs work in).
const GATHER_WORK: u64 = 8;
const LINEAR_WORK: u64 = 16;

/// `dst[i] = src[cols[i]]` for elements of `es` bytes.
fn gather(src: &[u8], cols: &[usize], es: usize, dst: &mut [u8]) {
    if es == 1 {
        for (d, &c) in dst.iter_mut().zip(cols) {
            *d = src[c];
        }
    } else {
        for (d, &c) in dst.chunks_exact_mut(es).zip(cols) {
            d.copy_from_slice(&src[c * es..(c + 1) * es]);
        }
    }
}

/// One axis of linear interpolation: the two source indices and the weight of the second,
/// exactly as the reference derives them.
fn linear_axis(
    coord: i32,
    o: usize,
    scale: f32,
    len_in: usize,
    len_out: usize,
) -> (usize, usize, f32) {
    let f = source(coord, o, scale, len_in, len_out)
        .max(0.0)
        .min((len_in - 1) as f32);
    let i0 = libm::floorf(f) as usize;
    (i0, (i0 + 1).min(len_in - 1), f - i0 as f32)
}

fn linear_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let (n, c, h, w) = x.info.shape.nchw().ok_or(ExecError::Shape)?;
    let (_, _, oh, ow) = out.info.shape.nchw().ok_or(ExecError::Shape)?;
    let coord = call.param(1);
    let (sh, sw) = (call.param_f32(3), call.param_f32(4));
    let ((sx, zx), (sy, zy)) = (qp(&x.info), qp(&out.info));
    let mut deq = [0f32; 256];
    for (q, v) in deq.iter_mut().enumerate() {
        *v = ((q as u8 as i8) as i32 - zx) as f32 * sx;
    }
    let mut cols = [(0usize, 0usize, 0f32); MAX_OW];
    for (ox, col) in cols[..ow].iter_mut().enumerate() {
        *col = linear_axis(coord, ox, sw, w, ow);
    }
    let xs = &x.i8s()?[..n * c * h * w];
    let y = &mut out.i8s_mut()?[..n * c * oh * ow];
    let (cols, deq) = (&cols[..ow], &deq);
    let plane_len = oh * ow;
    let work = (n * c * plane_len) as u64 * LINEAR_WORK;
    crate::par::par_pieces(y, plane_len, work, |at, planes| {
        for (k, dst) in planes.chunks_exact_mut(plane_len).enumerate() {
            let p = at / plane_len + k;
            let plane = &xs[p * h * w..(p + 1) * h * w];
            for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
                let (y0, y1, ly) = linear_axis(coord, oy, sh, h, oh);
                let (r0, r1) = (&plane[y0 * w..(y0 + 1) * w], &plane[y1 * w..(y1 + 1) * w]);
                for (o, &(x0, x1, lx)) in row.iter_mut().zip(cols) {
                    let v = |r: &[i8], i: usize| deq[r[i] as u8 as usize];
                    let r = v(r0, x0) * (1.0 - ly) * (1.0 - lx)
                        + v(r0, x1) * (1.0 - ly) * lx
                        + v(r1, x0) * ly * (1.0 - lx)
                        + v(r1, x1) * ly * lx;
                    *o = quantize_f32(r, sy, zy, -128, 127) as i8;
                }
            }
        }
    });
    Ok(())
}

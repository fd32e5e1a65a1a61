//! Indexed data movement on 4-byte elements: `Gather` (ONNX Gather, mode 0, and
//! GatherElements, mode 1) with i32 indices, and `Tile` (ONNX Tile and Expand).
//! Index values are data, not plan: one outside its axis is an `ExecError`, never a panic.

use cairn_core::shape::MAX_RANK;
use cairn_core::{ExecError, OpCall, Shape, TensorMut};

/// An index along an axis of `n` elements (negative counts from the end).
fn resolve(v: i32, n: usize) -> Result<usize, ExecError> {
    let v = if v < 0 { v as i64 + n as i64 } else { v as i64 };
    usize::try_from(v)
        .ok()
        .filter(|&v| v < n)
        .ok_or(ExecError::Shape)
}

fn copy_elems(
    dst: &mut [u8],
    at: usize,
    src: &[u8],
    from: usize,
    count: usize,
    size: usize,
) -> Result<(), ExecError> {
    let d = dst
        .get_mut(at * size..(at + count) * size)
        .ok_or(ExecError::Shape)?;
    let s = src
        .get(from * size..(from + count) * size)
        .ok_or(ExecError::Shape)?;
    d.copy_from_slice(s);
    Ok(())
}

pub fn gather(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let (x, it) = (call.req(0)?, call.req(1)?);
    let idx = it.i32s()?;
    let axis = call.param(0) as usize;
    let size = x.info.dtype.size_bytes();
    if call.param(1) == 1 {
        let ys = out.info.shape;
        return gather_elements((&x.info.shape, x.data), idx, &ys, axis, out.data, size);
    }
    let xs = x.info.shape;
    let (n, inner) = (xs.dim(axis), xs.prod(axis + 1, xs.rank()));
    let mut at = 0usize;
    for o in 0..xs.prod(0, axis) {
        for &v in idx {
            let k = resolve(v, n)?;
            copy_elems(out.data, at, x.data, (o * n + k) * inner, inner, size)?;
            at += inner;
        }
    }
    Ok(())
}

/// `y[i] = x[i with its axis coordinate replaced by idx[i]]`; `y` has the indices' shape.
fn gather_elements(
    (xs, x): (&Shape, &[u8]),
    idx: &[i32],
    ys: &Shape,
    axis: usize,
    y: &mut [u8],
    size: usize,
) -> Result<(), ExecError> {
    let xst = xs.strides();
    let r = ys.rank();
    let mut pos = [0usize; MAX_RANK];
    for (o, &v) in idx.iter().enumerate() {
        let k = resolve(v, xs.dim(axis))?;
        let from: usize = (0..r)
            .map(|d| if d == axis { k } else { pos[d] } * xst[d])
            .sum();
        copy_elems(y, o, x, from, 1, size)?;
        let mut d = r;
        while d > 0 {
            d -= 1;
            pos[d] += 1;
            if pos[d] < ys.dim(d) {
                break;
            }
            pos[d] = 0;
        }
    }
    Ok(())
}

/// Output coordinate `c` along each axis reads input coordinate `c mod x.dim`: whole rows
/// of the last axis are copied, repeated to fill the output's row.
pub fn tile(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let (xs, ys) = (x.info.shape, out.info.shape);
    let size = x.info.dtype.size_bytes();
    let r = ys.rank();
    if r == 0 || ys.numel() == Some(0) {
        return copy_elems(out.data, 0, x.data, 0, ys.numel().unwrap_or(0), size);
    }
    let (x_row, y_row) = (xs.dim(r - 1), ys.dim(r - 1));
    let xst = xs.strides();
    let mut pos = [0usize; MAX_RANK];
    for row in 0..ys.prod(0, r - 1) {
        let from: usize = (0..r - 1).map(|d| (pos[d] % xs.dim(d)) * xst[d]).sum();
        for rep in 0..y_row / x_row {
            copy_elems(
                out.data,
                row * y_row + rep * x_row,
                x.data,
                from,
                x_row,
                size,
            )?;
        }
        let mut d = r - 1;
        while d > 0 {
            d -= 1;
            pos[d] += 1;
            if pos[d] < ys.dim(d) {
                break;
            }
            pos[d] = 0;
        }
    }
    Ok(())
}

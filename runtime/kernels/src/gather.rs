//! Indexed data movement on 4-byte elements: `Gather` (ONNX Gather, mode 0, and
//! GatherElements, mode 1) with i32 indices, and `Tile` (ONNX Tile and Expand).
//! Index values are data, not plan: one outside its axis is an `ExecError`, never a panic.

use cairn_core::shape::MAX_RANK;
use cairn_core::{ExecError, OpCall, Shape, TensorMut};

/// An index along an axis of `n` elements (negative counts from the end).
pub(crate) fn resolve(v: i32, n: usize) -> Result<usize, ExecError> {
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
    let outer = xs.prod(0, axis);
    // One element per index (a flattened gather, e.g. a ScatterND written as one): a
    // fixed-size copy each, where a general one cost a memcpy call per element.
    if inner == 1 {
        match size {
            4 => return gather_elems::<4>(x.data, idx, n, outer, out.data),
            1 => return gather_elems::<1>(x.data, idx, n, outer, out.data),
            _ => {}
        }
    }
    let mut at = 0usize;
    for o in 0..outer {
        for &v in idx {
            let k = resolve(v, n)?;
            copy_elems(out.data, at, x.data, (o * n + k) * inner, inner, size)?;
            at += inner;
        }
    }
    Ok(())
}

/// `gather` with one `S`-byte element per index: `y[o][j] = x[o][idx[j]]`.
fn gather_elems<const S: usize>(
    x: &[u8],
    idx: &[i32],
    n: usize,
    outer: usize,
    y: &mut [u8],
) -> Result<(), ExecError> {
    let per = idx.len() * S;
    let y = y.get_mut(..outer * per).ok_or(ExecError::Shape)?;
    if per == 0 {
        return Ok(());
    }
    for (o, yo) in y.chunks_exact_mut(per).enumerate() {
        let xo = x.get(o * n * S..(o + 1) * n * S).ok_or(ExecError::Shape)?;
        for (d, &v) in yo.chunks_exact_mut(S).zip(idx) {
            let k = resolve(v, n)? * S;
            d.copy_from_slice(&xo[k..k + S]);
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

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::{vec, vec::Vec};

    /// `gather_elems` against the definition, for 1- and 4-byte elements, negative
    /// indices, and an index past the axis (an error, nothing panics).
    #[test]
    fn one_element_gather_is_the_definition() {
        let mut st = 0x6A7u64;
        let mut next = |m: usize| {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((st >> 33) as usize) % m
        };
        for case in 0..200 {
            let (outer, n, m) = (1 + next(4), 1 + next(40), next(50));
            let idx: Vec<i32> = (0..m).map(|_| next(2 * n) as i32 - n as i32).collect();
            let x: Vec<u8> = (0..outer * n * 4).map(|_| next(256) as u8).collect();
            for s in [1usize, 4] {
                let mut y = vec![0u8; outer * m * s];
                let r = if s == 4 {
                    gather_elems::<4>(&x[..outer * n * 4], &idx, n, outer, &mut y)
                } else {
                    gather_elems::<1>(&x[..outer * n], &idx, n, outer, &mut y)
                };
                r.unwrap_or_else(|e| panic!("case {case}: {e:?}"));
                for o in 0..outer {
                    for (j, &v) in idx.iter().enumerate() {
                        let k = if v < 0 { v + n as i32 } else { v } as usize;
                        let (a, b) = ((o * m + j) * s, (o * n + k) * s);
                        assert_eq!(y[a..a + s], x[b..b + s], "case {case} size {s}");
                    }
                }
            }
            let mut bad = idx.clone();
            bad.push(n as i32);
            let mut y = vec![0u8; outer * bad.len() * 4];
            assert!(gather_elems::<4>(&x, &bad, n, outer, &mut y).is_err());
        }
    }
}

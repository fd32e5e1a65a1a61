//! Shape rules of the kinds `Binary`, `Where`, `Reduce`, `Gather`, `Tile` and `Recurrent`.

use super::{dims_usize, BinaryFn, OpKind, ReduceFn, ShapeError};
use crate::shape::{broadcast, Shape, MAX_RANK};

/// Output shape of one of the kinds above (the caller has matched `kind`).
pub(super) fn infer(
    kind: OpKind,
    p: &[i32],
    ins: &[Option<Shape>],
    declared: &Shape,
) -> Result<Shape, ShapeError> {
    use ShapeError::*;
    let get = |i: usize| ins.get(i).copied().flatten().ok_or(Mismatch);
    let x = get(0)?;
    match kind {
        OpKind::Binary => {
            BinaryFn::from_code(p[0]).ok_or(Param)?;
            broadcast(&x, &get(1)?).ok_or(Mismatch)
        }
        OpKind::Where => {
            let xy = broadcast(&get(1)?, &get(2)?).ok_or(Mismatch)?;
            broadcast(&x, &xy).ok_or(Mismatch)
        }
        OpKind::Reduce => reduce(p, &x),
        OpKind::Gather => gather(p, &x, &get(1)?),
        OpKind::Tile => tile(&x, declared),
        OpKind::Recurrent => recurrent(p, ins),
        _ => Err(Param),
    }
}

/// `Recurrent` (`super::recurrent`): `[T (+ 1), B, H]` from the projections `[T, B, G·H]`
/// and the transposed recurrent weights `[H, G·H]`, every optional input sized to them.
fn recurrent(p: &[i32], ins: &[Option<Shape>]) -> Result<Shape, ShapeError> {
    use super::recurrent as r;
    use ShapeError::*;
    let cell = p[r::CELL];
    let g = r::gates(cell).ok_or(Param)?;
    let flags = p[r::FLAGS];
    let allowed = r::REVERSE
        | match cell {
            r::LSTM => r::CELL_STATE_ROW,
            r::GRU => r::LINEAR_BEFORE_RESET,
            _ => 0,
        };
    if flags & !allowed != 0 {
        return Err(Param);
    }
    // A clip is positive (+∞: none); NaN is refused.
    let clip = f32::from_bits(p[r::CLIP] as u32);
    if clip.is_nan() || clip <= 0.0 {
        return Err(Param);
    }
    for k in 0..r::activations(cell) {
        super::UnaryFn::from_code(p[r::ACTS + 3 * k]).ok_or(Param)?;
    }
    let get = |i: usize| ins.get(i).copied().flatten();
    let (x, w) = (get(0).ok_or(Mismatch)?, get(1).ok_or(Mismatch)?);
    if x.rank() != 3 || w.rank() != 2 {
        return Err(Rank);
    }
    let (t, b, h) = (x.dim(0), x.dim(1), w.dim(0));
    if !(1..=r::MAX_HIDDEN).contains(&h) || t == 0 {
        return Err(Param);
    }
    // h ≤ MAX_HIDDEN: these products cannot overflow.
    let gh = g * h;
    if x.dim(2) != gh || w.dim(1) != gh {
        return Err(Mismatch);
    }
    let lstm = cell == r::LSTM;
    if !lstm && (get(4).is_some() || get(5).is_some()) {
        return Err(Mismatch);
    }
    let state = [b, h];
    let sized = |i: usize, dims: &[usize]| match get(i) {
        None => Ok(()),
        Some(s) if s.rank() == dims.len() && (0..s.rank()).all(|k| s.dim(k) == dims[k]) => Ok(()),
        Some(_) => Err(Mismatch),
    };
    sized(2, &[gh])?;
    sized(3, &state)?;
    sized(4, &state)?;
    sized(5, &[3 * h])?;
    let rows = if flags & r::CELL_STATE_ROW != 0 {
        t.checked_add(1).ok_or(Overflow)?
    } else {
        t
    };
    Shape::new(&[rows, b, h]).ok_or(Overflow)
}

/// The shape after reducing the axes in `mask` (kept as 1 with `keep`).
pub(crate) fn reduced_shape(x: &Shape, mask: u32, keep: bool) -> Result<Shape, ShapeError> {
    if mask == 0 || mask >> x.rank() != 0 {
        return Err(ShapeError::Param);
    }
    let mut d = [0usize; MAX_RANK];
    let mut r = 0;
    for i in 0..x.rank() {
        let reduced = mask & (1 << i) != 0;
        if reduced && !keep {
            continue;
        }
        d[r] = if reduced { 1 } else { x.dim(i) };
        r += 1;
    }
    Shape::new(&d[..r]).ok_or(ShapeError::Overflow)
}

fn reduce(p: &[i32], x: &Shape) -> Result<Shape, ShapeError> {
    use ShapeError::*;
    let f = ReduceFn::from_code(p[0]).ok_or(Param)?;
    let mask = p[1] as u32;
    let axis = mask.trailing_zeros() as usize;
    let one_axis = mask.count_ones() == 1 && axis < x.rank();
    if f.is_top_k() {
        let k = u32::try_from(p[2]).map_err(|_| Param)?;
        if !one_axis || k as usize > x.dim(axis) || !(0..=1).contains(&p[3]) {
            return Err(Param);
        }
        return Ok(x.with_dim(axis, k));
    }
    if !(0..=1).contains(&p[2]) || !(0..=1).contains(&p[3]) {
        return Err(Param);
    }
    // ArgMax/ArgMin: one axis, holding at least one element to have an index.
    if f.is_arg() && !(one_axis && x.dim(axis) > 0) {
        return Err(Param);
    }
    reduced_shape(x, mask, p[2] != 0)
}

/// Mode 0 (Gather): `x[..axis] ++ indices ++ x[axis + 1..]`; mode 1 (GatherElements): the
/// indices' shape, same rank as `x`, no larger than `x` off the axis.
fn gather(p: &[i32], x: &Shape, idx: &Shape) -> Result<Shape, ShapeError> {
    use ShapeError::*;
    let axis = usize::try_from(p[0]).map_err(|_| Param)?;
    if axis >= x.rank() {
        return Err(Param);
    }
    // An index into an empty axis cannot be valid.
    if x.dim(axis) == 0 && idx.numel() != Some(0) {
        return Err(Mismatch);
    }
    match p[1] {
        0 => {
            let rank = x.rank() - 1 + idx.rank();
            if rank > MAX_RANK {
                return Err(Rank);
            }
            let (xd, id) = (dims_usize(x), dims_usize(idx));
            let mut d = [0usize; MAX_RANK];
            d[..axis].copy_from_slice(&xd[..axis]);
            d[axis..axis + idx.rank()].copy_from_slice(&id[..idx.rank()]);
            d[axis + idx.rank()..rank].copy_from_slice(&xd[axis + 1..x.rank()]);
            Shape::new(&d[..rank]).ok_or(Overflow)
        }
        1 => {
            if idx.rank() != x.rank() {
                return Err(Rank);
            }
            if (0..x.rank()).any(|d| d != axis && idx.dim(d) > x.dim(d)) {
                return Err(Mismatch);
            }
            Ok(*idx)
        }
        _ => Err(Param),
    }
}

/// Each declared dim is a whole number of copies of the input's (0 only from 0).
fn tile(x: &Shape, declared: &Shape) -> Result<Shape, ShapeError> {
    if declared.rank() != x.rank() {
        return Err(ShapeError::Rank);
    }
    for d in 0..x.rank() {
        let (n, k) = (x.dim(d), declared.dim(d));
        let fits = if n == 0 { k == 0 } else { k % n == 0 };
        if !fits {
            return Err(ShapeError::Mismatch);
        }
    }
    Ok(*declared)
}

//! The `Reduce` op: Sum, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare over a mask
//! of axes (f32), ArgMax/ArgMin along one axis (i32 indices), and TopK along one axis
//! (its values, or with TopKIndex its i32 indices).

use cairn_core::op::ReduceFn;
use cairn_core::{DType, ExecError, OpCall, Shape, TensorMut};

pub fn reduce(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let f = ReduceFn::from_code(call.param(0)).ok_or(ExecError::Unsupported(call.kernel))?;
    let x = call.req(0)?;
    let mask = call.param(1) as u32;
    if x.info.dtype == DType::I8 {
        let (xs, xi) = (x.info.shape, x.i8s()?);
        if f.is_arg() {
            let last = call.param(3) != 0;
            let axis = mask.trailing_zeros() as usize;
            return arg(f, last, &xs, axis, xi, out.i32s_mut()?);
        }
        return select_i8(f, &xs, mask, xi, out.i8s_mut()?);
    }
    let (xs, xf) = (x.info.shape, x.f32s()?);
    if f.is_top_k() {
        let axis = mask.trailing_zeros() as usize;
        let pick = TopK {
            k: call.param(2) as usize,
            largest: call.param(3) != 0,
        };
        return match f {
            ReduceFn::TopK => pick.run(&xs, axis, xf, Picked::Values(out.f32s_mut()?)),
            _ => pick.run(&xs, axis, xf, Picked::Indices(out.i32s_mut()?)),
        };
    }
    if f.is_arg() {
        let last = call.param(3) != 0;
        return arg(
            f,
            last,
            &xs,
            mask.trailing_zeros() as usize,
            xf,
            out.i32s_mut()?,
        );
    }
    let ost = kept_strides(&xs, mask);
    let y = out.f32s_mut()?;
    y.iter_mut().for_each(|v| *v = identity(f));
    let r = xs.rank();
    let mut idx = [0usize; 6];
    for &v in xf {
        let o: usize = (0..r).map(|d| idx[d] * ost[d]).sum();
        y[o] = step(f, y[o], v);
        let mut d = r;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            if idx[d] < xs.dim(d) {
                break;
            }
            idx[d] = 0;
        }
    }
    y.iter_mut().for_each(|v| *v = finish(f, *v));
    Ok(())
}

/// int8 ReduceMax/ReduceMin: the largest or smallest stored value (dequantizing is
/// monotonic, and the output keeps the input's quantization; reduced axes are non-empty,
/// checked at load).
fn select_i8(f: ReduceFn, xs: &Shape, mask: u32, x: &[i8], y: &mut [i8]) -> Result<(), ExecError> {
    let max = f == ReduceFn::Max;
    y.iter_mut()
        .for_each(|v| *v = if max { i8::MIN } else { i8::MAX });
    let ost = kept_strides(xs, mask);
    let r = xs.rank();
    let mut idx = [0usize; 6];
    for &v in x {
        let o: usize = (0..r).map(|d| idx[d] * ost[d]).sum();
        let slot = y.get_mut(o).ok_or(ExecError::Shape)?;
        *slot = if max { (*slot).max(v) } else { (*slot).min(v) };
        let mut d = r;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            if idx[d] < xs.dim(d) {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

/// Strides of the output in the input's index space: 0 on reduced axes.
fn kept_strides(xs: &Shape, mask: u32) -> [usize; 6] {
    let mut ost = [0usize; 6];
    let mut stride = 1usize;
    for d in (0..xs.rank()).rev() {
        if mask & (1 << d) == 0 {
            ost[d] = stride;
            stride *= xs.dim(d);
        }
    }
    ost
}

fn identity(f: ReduceFn) -> f32 {
    match f {
        ReduceFn::Prod => 1.0,
        ReduceFn::Max => f32::NEG_INFINITY,
        ReduceFn::Min => f32::INFINITY,
        _ => 0.0,
    }
}

fn step(f: ReduceFn, acc: f32, v: f32) -> f32 {
    match f {
        ReduceFn::Max if v > acc || v.is_nan() => v,
        ReduceFn::Min if v < acc || v.is_nan() => v,
        ReduceFn::Max | ReduceFn::Min => acc,
        ReduceFn::Prod => acc * v,
        ReduceFn::L1 => acc + v.abs(),
        ReduceFn::L2 | ReduceFn::SumSquare => acc + v * v,
        ReduceFn::LogSumExp => acc + libm::expf(v),
        _ => acc + v,
    }
}

fn finish(f: ReduceFn, acc: f32) -> f32 {
    match f {
        ReduceFn::L2 => libm::sqrtf(acc),
        ReduceFn::LogSum | ReduceFn::LogSumExp => libm::logf(acc),
        _ => acc,
    }
}

/// Index of the largest (ArgMax) or smallest (ArgMin) value along `axis`: the first one,
/// or the last with `last`. The axis is non-empty (checked at load). On int8 values the
/// stored integers are compared (dequantizing is monotonic; values that quantize alike tie).
fn arg<T: PartialOrd + Copy>(
    f: ReduceFn,
    last: bool,
    xs: &Shape,
    axis: usize,
    x: &[T],
    y: &mut [i32],
) -> Result<(), ExecError> {
    let (n, inner) = (xs.dim(axis), xs.prod(axis + 1, xs.rank()));
    let outer = xs.prod(0, axis);
    let better = |v: T, best: T| match f {
        ReduceFn::ArgMax => v > best || (last && v == best),
        _ => v < best || (last && v == best),
    };
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| x.get((o * n + k) * inner + i).copied();
            let mut best = (at(0).ok_or(ExecError::Shape)?, 0usize);
            for k in 1..n {
                let v = at(k).ok_or(ExecError::Shape)?;
                if better(v, best.0) {
                    best = (v, k);
                }
            }
            *y.get_mut(o * inner + i).ok_or(ExecError::Shape)? = best.1 as i32;
        }
    }
    Ok(())
}

/// Where TopK writes: the selected values or their indices.
enum Picked<'a> {
    Values(&'a mut [f32]),
    Indices(&'a mut [i32]),
}

/// The k first elements of each lane in the order (value descending for `largest`, else
/// ascending; ties by index ascending), found without scratch memory: each pick is the
/// first element ranked after the previous pick (O(k·n) per lane).
struct TopK {
    k: usize,
    largest: bool,
}

impl TopK {
    /// Whether `a` ranks ahead of `b`; NaN ranks nowhere.
    fn ahead(&self, a: (f32, usize), b: (f32, usize)) -> bool {
        let better = if self.largest { a.0 > b.0 } else { a.0 < b.0 };
        better || (a.0 == b.0 && a.1 < b.1)
    }

    fn run(&self, xs: &Shape, axis: usize, x: &[f32], mut y: Picked<'_>) -> Result<(), ExecError> {
        let (n, inner) = (xs.dim(axis), xs.prod(axis + 1, xs.rank()));
        for o in 0..xs.prod(0, axis) {
            for i in 0..inner {
                let at = |j: usize| x.get((o * n + j) * inner + i).copied();
                let mut prev: Option<(f32, usize)> = None;
                for slot in 0..self.k {
                    let mut best: Option<(f32, usize)> = None;
                    for j in 0..n {
                        let c = (at(j).ok_or(ExecError::Shape)?, j);
                        let after_prev = prev.is_none_or(|p| self.ahead(p, c));
                        if after_prev && best.is_none_or(|b| self.ahead(c, b)) {
                            best = Some(c);
                        }
                    }
                    // Only NaNs left: repeat the last pick's index with a NaN value.
                    let pick = best.unwrap_or((f32::NAN, prev.map_or(0, |p| p.1)));
                    let at_out = (o * self.k + slot) * inner + i;
                    match &mut y {
                        Picked::Values(v) => *v.get_mut(at_out).ok_or(ExecError::Shape)? = pick.0,
                        Picked::Indices(v) => {
                            *v.get_mut(at_out).ok_or(ExecError::Shape)? = pick.1 as i32
                        }
                    }
                    prev = Some(pick);
                }
            }
        }
        Ok(())
    }
}

/// `reduce` over one contiguous run of axes (a last axis, a channel axis, a global
/// pooling's spatial axes: every mask real models use) as `[outer, red, inner]`, with no
/// index arithmetic per element: each output takes the same steps in the same order as
/// `reduce`, so the same bits. Max and Min of a row are vectorized (see `row_max`); sums of
/// rows run eight rows' chains at once; reductions over an outer axis step whole inner rows
/// at a time. `None` for other masks, ArgMax/ArgMin/TopK, and int8 other than Max/Min.
pub fn reduce_fast(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let f = ReduceFn::from_code(call.param(0))?;
    if f.is_arg() || f.is_top_k() {
        return None;
    }
    let x = call.req(0).ok()?;
    let xs = x.info.shape;
    let r = xs.rank();
    let mask = call.param(1) as u32;
    let (lo, hi) = (
        mask.trailing_zeros() as usize,
        32 - mask.leading_zeros() as usize,
    );
    if mask == 0 || hi > r || mask != (u32::MAX >> (32 - hi)) & (u32::MAX << lo) {
        return None;
    }
    let (outer, red, inner) = (xs.prod(0, lo), xs.prod(lo, hi), xs.prod(hi, r));
    if red == 0 {
        return None;
    }
    let fits = |xn: usize, yn: usize| xn == outer * red * inner && yn == outer * inner;
    match x.info.dtype {
        DType::I8 if matches!(f, ReduceFn::Max | ReduceFn::Min) => {
            let xi = x.i8s().ok()?;
            let y = out.i8s_mut().ok()?;
            if !fits(xi.len(), y.len()) {
                return None;
            }
            let pick = |a: i8, v: i8| {
                if f == ReduceFn::Max {
                    a.max(v)
                } else {
                    a.min(v)
                }
            };
            if inner == 1 {
                // The last axis (a stack of a few maps, then its max): rows of `red`
                // bytes, a fixed count unrolled where it is small.
                #[inline(always)]
                fn rows<const R: usize>(x: &[i8], y: &mut [i8], pick: impl Fn(i8, i8) -> i8) {
                    for (yo, xo) in y.iter_mut().zip(x.chunks_exact(R)) {
                        let xo: &[i8; R] = xo.try_into().expect("R bytes");
                        *yo = xo[1..].iter().fold(xo[0], |a, &v| pick(a, v));
                    }
                }
                match red {
                    2 => rows::<2>(xi, y, pick),
                    3 => rows::<3>(xi, y, pick),
                    4 => rows::<4>(xi, y, pick),
                    _ => {
                        for (yo, xo) in y.iter_mut().zip(xi.chunks_exact(red)) {
                            *yo = xo[1..].iter().fold(xo[0], |a, &v| pick(a, v));
                        }
                    }
                }
                return Some(Ok(()));
            }
            for (o, yo) in y.chunks_exact_mut(inner).enumerate() {
                let xo = &xi[o * red * inner..(o + 1) * red * inner];
                yo.copy_from_slice(&xo[..inner]);
                for xr in xo.chunks_exact(inner).skip(1) {
                    for (a, &v) in yo.iter_mut().zip(xr) {
                        *a = pick(*a, v);
                    }
                }
            }
            Some(Ok(()))
        }
        DType::F32 => {
            let xf = x.f32s().ok()?;
            let y = out.f32s_mut().ok()?;
            if !fits(xf.len(), y.len()) {
                return None;
            }
            match f {
                ReduceFn::Max => reduce_f32(xf, y, red, inner, f, |a, v| {
                    if v > a || v.is_nan() {
                        v
                    } else {
                        a
                    }
                }),
                ReduceFn::Min => reduce_f32(xf, y, red, inner, f, |a, v| {
                    if v < a || v.is_nan() {
                        v
                    } else {
                        a
                    }
                }),
                ReduceFn::Prod => reduce_f32(xf, y, red, inner, f, |a, v| a * v),
                ReduceFn::L1 => reduce_f32(xf, y, red, inner, f, |a, v| a + v.abs()),
                ReduceFn::L2 | ReduceFn::SumSquare => {
                    reduce_f32(xf, y, red, inner, f, |a, v| a + v * v)
                }
                ReduceFn::LogSumExp => reduce_f32(xf, y, red, inner, f, |a, v| a + libm::expf(v)),
                _ => reduce_f32(xf, y, red, inner, f, |a, v| a + v),
            }
            crate::paths::note(crate::paths::Path::ReduceRuns);
            Some(Ok(()))
        }
        _ => None,
    }
}

/// `[outer, red, inner]` → `[outer, inner]` with `step` (`f`'s, monomorphized), then
/// `finish`.
#[inline(always)]
fn reduce_f32(
    x: &[f32],
    y: &mut [f32],
    red: usize,
    inner: usize,
    f: ReduceFn,
    step: impl Fn(f32, f32) -> f32,
) {
    let id = identity(f);
    if inner == 1 {
        let rows = x.chunks_exact(red);
        if matches!(f, ReduceFn::Max | ReduceFn::Min) {
            for (v, row) in y.iter_mut().zip(rows) {
                *v = row_extreme(row, f == ReduceFn::Max);
            }
            return;
        }
        // Eight rows' chains at once, each in its own order.
        let mut ys = y.chunks_exact_mut(8);
        let mut xs = x.chunks_exact(8 * red);
        for (y8, x8) in (&mut ys).zip(&mut xs) {
            let mut acc = [id; 8];
            for i in 0..red {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = step(*a, x8[k * red + i]);
                }
            }
            for (d, a) in y8.iter_mut().zip(acc) {
                *d = finish(f, a);
            }
        }
        for (d, row) in ys
            .into_remainder()
            .iter_mut()
            .zip(xs.remainder().chunks_exact(red))
        {
            *d = finish(f, row.iter().fold(id, |a, &v| step(a, v)));
        }
        return;
    }
    for (yo, xo) in y.chunks_exact_mut(inner).zip(x.chunks_exact(red * inner)) {
        yo.fill(id);
        for xr in xo.chunks_exact(inner) {
            for (a, &v) in yo.iter_mut().zip(xr) {
                *a = step(*a, v);
            }
        }
        for a in yo.iter_mut() {
            *a = finish(f, *a);
        }
    }
}

/// The result of `reduce`'s chain of `step`s for Max (`max`) or Min over `row`, found
/// with order-free vector compares: the last NaN if there is one (after a NaN no value
/// replaces it); else the extreme value, where all values equal to it have its bits except
/// the two zeros, so a zero extreme is the row's first zero (a later equal value never
/// replaces an earlier one).
fn row_extreme(row: &[f32], max: bool) -> f32 {
    // One pass that vectorizes (a short-circuiting search does not), then the search
    // only where there is a NaN.
    if row.iter().fold(false, |any, v| any | v.is_nan()) {
        if let Some(&v) = row.iter().rev().find(|v| v.is_nan()) {
            return v;
        }
    }
    let m = if max {
        extreme(row, f32::NEG_INFINITY, |a, v| if v > a { v } else { a })
    } else {
        extreme(row, f32::INFINITY, |a, v| if v < a { v } else { a })
    };
    if m == 0.0 {
        return row.iter().copied().find(|&v| v == 0.0).unwrap_or(m);
    }
    m
}

/// `better` folded over `row` in eight lanes, then across them (no NaN in `row`).
#[inline(always)]
fn extreme(row: &[f32], id: f32, better: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [id; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = better(*l, v);
        }
    }
    let m = lanes.iter().fold(id, |a, &v| better(a, v));
    chunks.remainder().iter().fold(m, |a, &v| better(a, v))
}

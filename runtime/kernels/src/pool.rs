//! Pooling and mean reductions (NCHW).

use cairn_core::quant::{quantize_f32, round_half_even};
use cairn_core::{DType, ExecError, OpCall, OpKind, Shape, TensorMut};

use crate::util::qp;

pub(crate) struct Win {
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) pt: isize,
    pub(crate) pl: isize,
    pub(crate) pb: isize,
    pub(crate) pr: isize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
}

#[cfg(target_arch = "x86_64")]
impl Win {
    /// The input rows of output row `oy`'s windows that lie inside a plane of `h` rows of
    /// `w` (`plane`), in window order, into `rows`; how many. At most `rows.len()`.
    pub(crate) fn rows_of<'a, T>(
        &self,
        plane: &'a [T],
        (h, w): (usize, usize),
        oy: usize,
        rows: &mut [&'a [T]],
    ) -> usize {
        let mut n = 0;
        for ky in 0..self.kh {
            let iy = (oy * self.sh) as isize - self.pt + (ky * self.dh) as isize;
            if iy >= 0 && (iy as usize) < h && n < rows.len() {
                rows[n] = &plane[iy as usize * w..][..w];
                n += 1;
            }
        }
        n
    }
}

pub(crate) fn win(call: &OpCall<'_>) -> Win {
    let u = |i: usize| call.param(i) as usize;
    let (dh, dw) = if call.kind == OpKind::MaxPool {
        (u(8), u(9))
    } else {
        (1, 1)
    };
    Win {
        kh: u(0),
        kw: u(1),
        sh: u(2),
        sw: u(3),
        pt: call.param(4) as isize,
        pl: call.param(5) as isize,
        pb: call.param(6) as isize,
        pr: call.param(7) as isize,
        dh,
        dw,
    }
}

pub fn max_pool(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    match call.req(0)?.info.dtype {
        DType::F32 => max_pool_f32(call, out),
        DType::I8 => max_pool_i8(call, out),
        _ => Err(ExecError::DType),
    }
}

/// The int8 entries (`max_pool_i8`, `avg_pool_i8`, `reduce_mean_i8`) hold no f32-tensor
/// code, so an int8-only `Select` links none.
pub fn max_pool_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let (x, shape) = (call.req(0)?, out.info.shape);
    max_window(
        call,
        &x.info.shape,
        &shape,
        x.i8s()?,
        out.i8s_mut()?,
        i8::MIN,
    )
}

fn max_pool_f32(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let (x, shape) = (call.req(0)?, out.info.shape);
    max_window(
        call,
        &x.info.shape,
        &shape,
        x.f32s()?,
        out.f32s_mut()?,
        f32::NEG_INFINITY,
    )
}

fn max_window<T: Copy + PartialOrd>(
    call: &OpCall<'_>,
    xshape: &Shape,
    yshape: &Shape,
    xs: &[T],
    ys: &mut [T],
    min: T,
) -> Result<(), ExecError> {
    let (n, c, h, w) = xshape.nchw().ok_or(ExecError::Shape)?;
    let (_, _, oh, ow) = yshape.nchw().ok_or(ExecError::Shape)?;
    let g = win(call);
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = min;
                for ky in 0..g.kh {
                    let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..g.kw {
                        let ix = (ox * g.sw) as isize - g.pl + (kx * g.dw) as isize;
                        if ix >= 0 && ix < w as isize {
                            let v = xs[p * h * w + iy as usize * w + ix as usize];
                            if v > m {
                                m = v;
                            }
                        }
                    }
                }
                ys[(p * oh + oy) * ow + ox] = m;
            }
        }
    }
    Ok(())
}

pub fn avg_pool(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    match call.req(0)?.info.dtype {
        DType::F32 => avg_pool_f32(call, out),
        DType::I8 => avg_pool_i8(call, out),
        _ => Err(ExecError::DType),
    }
}

pub fn avg_pool_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let ((sx, zx), (sy, zy)) = (qp(&x.info), qp(&out.info));
    let (xi, shape) = (x.i8s()?, out.info.shape);
    let y = out.i8s_mut()?;
    avg_windows(call, &x.info.shape, &shape, |o, rows, count| {
        let mut acc = 0i32;
        for r in rows {
            for &v in &xi[r] {
                acc += v as i32 - zx;
            }
        }
        let v = acc as f32 * sx / count as f32;
        y[o] = quantize_f32(v, sy, zy, -128, 127) as i8;
    })
}

/// Widest input row [`avg_pool_i8_fast`]'s column sums cover (a stack buffer of i32s).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const AVG_MAX_W: usize = 4096;

/// The int8 AveragePool on hosts: per output row, each input column summed over the
/// window's rows once, then each output's columns summed from those; planes split across
/// the lent threads. The sums are integers, so their order changes nothing: the same
/// `acc` (Σ(v − zx) = Σv − zx·valid) and the same float expression as [`avg_pool_i8`]
/// (`tests/exact.rs`). `None` where the shapes do not fit (the reference then runs).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn avg_pool_i8_fast(
    call: &OpCall<'_>,
    out: &mut TensorMut<'_>,
) -> Option<Result<(), ExecError>> {
    let x = call.req(0).ok()?;
    if x.info.dtype != DType::I8 || out.info.dtype != DType::I8 {
        return None;
    }
    let (n, c, h, w) = x.info.shape.nchw()?;
    let (_, _, oh, ow) = out.info.shape.nchw()?;
    let g = win(call);
    let include_pad = call.param(8) != 0;
    let ((sx, zx), (sy, zy)) = (qp(&x.info), qp(&out.info));
    let xi = x.i8s().ok()?;
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if w > AVG_MAX_W || xi.len() != n * c * h * w || y.len() != n * c * oh * ow || oh * ow == 0 {
        return None;
    }
    let plane = oh * ow;
    let work = (y.len() * g.kh * g.kw) as u64;
    crate::par::par_pieces(y, plane, work, |at, y| {
        // Compiled with AVX2 where the CPU has it (the column sums vectorize).
        crate::fast::vectorized(
            #[inline(always)]
            || {
                avg_planes(
                    xi,
                    (h, w, oh, ow),
                    &g,
                    include_pad,
                    (sx, zx, sy, zy),
                    at / plane,
                    y,
                )
            },
        )
    });
    crate::paths::note(crate::paths::Path::AvgPoolRows);
    Some(Ok(()))
}

/// [`avg_pool_i8_fast`]'s planes `p0..` (as many as `y` holds).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn avg_planes(
    xi: &[i8],
    (h, w, oh, ow): (usize, usize, usize, usize),
    g: &Win,
    include_pad: bool,
    (sx, zx, sy, zy): (f32, i32, f32, i32),
    p0: usize,
    y: &mut [i8],
) {
    let plane = oh * ow;
    stack_buf!(col: i32, w, 256, AVG_MAX_W);
    stack_buf!(accs: i32, ow, 256, AVG_MAX_W);
    stack_buf!(counts: f32, ow, 256, AVG_MAX_W);
    // Windows two wide at a stride of two, all inside: the pairs of columns.
    let pairs = g.kw == 2 && g.sw == 2 && g.pl == 0 && 2 * ow <= w;
    // And two tall at a stride of two, all inside (a 2×2 pool without padding, common in
    // small classifiers): each output is four values and a count of 4, so a plane's sums
    // come in one pass and its outputs in one loop (row by row, the loops' setup cost more
    // than their work on such planes).
    let quads = pairs && g.kh == 2 && g.sh == 2 && g.pt == 0 && 2 * oh <= h && plane <= AVG_MAX_W;
    if quads {
        crate::paths::note(crate::paths::Path::AvgPoolQuads);
        stack_buf!(sums: i32, plane, 256, AVG_MAX_W);
        for (k, yp) in y.chunks_exact_mut(plane).enumerate() {
            let p = p0 + k;
            let xp = &xi[p * h * w..(p + 1) * h * w];
            for (oy, sr) in sums.chunks_exact_mut(ow).enumerate() {
                let (r0, r1) = (
                    &xp[2 * oy * w..][..2 * ow],
                    &xp[(2 * oy + 1) * w..][..2 * ow],
                );
                for ((s, a), b) in sr
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    *s = a[0] as i32 + a[1] as i32 + b[0] as i32 + b[1] as i32 - 4 * zx;
                }
            }
            for (yv, &acc) in yp.iter_mut().zip(sums.iter()) {
                *yv = quantize_lanes(acc as f32 * sx / 4.0, sy, zy) as i8;
            }
        }
        return;
    }
    // Each output column's window, the same on every row and plane: its first input
    // column inside the image, its columns inside, and its width with the padding.
    stack_buf!(starts: u32, ow, 256, AVG_MAX_W);
    stack_buf!(widths: u32, ow, 256, AVG_MAX_W);
    stack_buf!(padded: u32, ow, 256, AVG_MAX_W);
    for (ox, ((st, wd), pd)) in starts
        .iter_mut()
        .zip(widths.iter_mut())
        .zip(padded.iter_mut())
        .enumerate()
    {
        let ws = (ox * g.sw) as isize - g.pl;
        let we = (ws + g.kw as isize).min(w as isize + g.pr);
        let (ws_c, we_c) = (ws.max(0) as usize, we.clamp(0, w as isize) as usize);
        *st = ws_c as u32;
        *wd = we_c.saturating_sub(ws_c) as u32;
        *pd = (we - ws).max(0) as u32;
    }
    for (k, yp) in y.chunks_exact_mut(plane).enumerate() {
        let p = p0 + k;
        let xp = &xi[p * h * w..(p + 1) * h * w];
        for oy in 0..oh {
            let hs = (oy * g.sh) as isize - g.pt;
            let he = (hs + g.kh as isize).min(h as isize + g.pb);
            let (hs_c, he_c) = (hs.max(0) as usize, he.clamp(0, h as isize) as usize);
            let rows = he_c.saturating_sub(hs_c);
            let col = &mut col[..w];
            col.fill(0);
            for iy in hs_c..hs_c + rows {
                crate::util::add_row_i8(col, &xp[iy * w..(iy + 1) * w]);
            }
            let tall = (he - hs) as usize;
            let geo = starts.iter().zip(widths.iter()).zip(padded.iter());
            for ((acc, cnt), ((&st, &wd), &pd)) in accs.iter_mut().zip(counts.iter_mut()).zip(geo) {
                let valid = rows * wd as usize;
                let count = if include_pad {
                    tall * pd as usize
                } else {
                    valid
                }
                .max(1);
                *acc = -zx * valid as i32;
                *cnt = count as f32;
                if !pairs {
                    let st = st as usize;
                    *acc += col[st..st + wd as usize].iter().sum::<i32>();
                }
            }
            if pairs {
                for (acc, two) in accs.iter_mut().zip(col.chunks_exact(2)) {
                    *acc += two[0] + two[1];
                }
            }
            // The row's outputs in a loop of selects the compiler vectorizes (two
            // divisions an output were most of this op's time, one at a time).
            let yr = &mut yp[oy * ow..(oy + 1) * ow];
            for ((yv, &acc), &cnt) in yr.iter_mut().zip(accs.iter()).zip(counts.iter()) {
                *yv = quantize_lanes(acc as f32 * sx / cnt, sy, zy) as i8;
            }
        }
    }
}

/// `quantize_f32(x, sy, zy, -128, 127)`, written as selects with no early return so a
/// loop of it vectorizes: the same operations (the division, the rounding below 2^22 by
/// `round_half_even`, the zero point, the clamp; a NaN quotient gives the zero point).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn quantize_lanes(x: f32, sy: f32, zy: i32) -> i32 {
    let v = x / sy;
    let r = if v.abs() < 4_194_304.0 {
        cairn_core::quant::round_half_even(v)
    } else {
        v
    };
    let q = (r + zy as f32).clamp(-128.0, 127.0);
    if v.is_nan() {
        zy.clamp(-128, 127)
    } else {
        q as i32
    }
}

fn avg_pool_f32(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let (xf, shape) = (x.f32s()?, out.info.shape);
    let y = out.f32s_mut()?;
    avg_windows(call, &x.info.shape, &shape, |o, rows, count| {
        let mut acc = 0.0f32;
        for r in rows {
            for &v in &xf[r] {
                acc += v;
            }
        }
        y[o] = acc / count as f32;
    })
}

/// Each AveragePool window: `f(output index, its input rows as flat index ranges, divisor)`,
/// with the divisor per `count_include_pad` (param 8).
fn avg_windows(
    call: &OpCall<'_>,
    xshape: &Shape,
    yshape: &Shape,
    mut f: impl FnMut(usize, &mut dyn Iterator<Item = core::ops::Range<usize>>, usize),
) -> Result<(), ExecError> {
    let (n, c, h, w) = xshape.nchw().ok_or(ExecError::Shape)?;
    let (_, _, oh, ow) = yshape.nchw().ok_or(ExecError::Shape)?;
    let g = win(call);
    let include_pad = call.param(8) != 0;
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let hs = (oy * g.sh) as isize - g.pt;
                let ws = (ox * g.sw) as isize - g.pl;
                let he = (hs + g.kh as isize).min(h as isize + g.pb);
                let we = (ws + g.kw as isize).min(w as isize + g.pr);
                let pool = ((he - hs) * (we - ws)) as usize;
                let (hs, ws, he, we) =
                    (hs.max(0), ws.max(0), he.min(h as isize), we.min(w as isize));
                let valid = ((he - hs).max(0) * (we - ws).max(0)) as usize;
                let count = if include_pad { pool } else { valid }.max(1);
                let (hs, he) = (hs as usize, (he.max(hs)) as usize);
                let (ws, we) = (ws as usize, (we.max(ws)) as usize);
                let base = p * h * w;
                let mut rows = (hs..he).map(|iy| base + iy * w + ws..base + iy * w + we);
                f((p * oh + oy) * ow + ox, &mut rows, count);
            }
        }
    }
    Ok(())
}

/// GlobalAveragePool and ReduceMean: mean over a set of axes (a bit mask; GAP = all but
/// the first two).
pub fn reduce_mean(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    match call.req(0)?.info.dtype {
        DType::F32 => reduce_mean_f32(call, out),
        DType::I8 => reduce_mean_i8(call, out),
        _ => Err(ExecError::DType),
    }
}

/// A reduction's axes: (mask, output strides in the input index space with 0 on reduced
/// axes, elements per output).
fn reduction(call: &OpCall<'_>, xs: &Shape) -> (u32, [usize; 6], usize) {
    let r = xs.rank();
    let mask: u32 = if call.kind == OpKind::GlobalAveragePool {
        !0b11 & ((1 << r) - 1)
    } else {
        call.param(0) as u32
    };
    let mut ost = [0usize; 6];
    let mut acc_stride = 1usize;
    for d in (0..r).rev() {
        if mask & (1 << d) == 0 {
            ost[d] = acc_stride;
            acc_stride *= xs.dim(d);
        }
    }
    let count = (0..r)
        .filter(|d| mask & (1 << d) != 0)
        .map(|d| xs.dim(d))
        .product::<usize>()
        .max(1);
    (mask, ost, count)
}

pub fn reduce_mean_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    reduce_mean_i8_by(call, &mut out, sum_i8)
}

/// [`reduce_mean_i8`] with `sum` adding up each run when the reduced axes are the
/// innermost (GlobalAveragePool): `Σ v` wrapping in i32, as [`sum_i8`] (a faster path
/// passes its own).
/// Work units (`crate::par`) per byte a reduction reads.
const REDUCE_WORK: u64 = 4;

pub(crate) fn reduce_mean_i8_by(
    call: &OpCall<'_>,
    out: &mut TensorMut<'_>,
    sum: impl Fn(&[i8]) -> i32 + Sync,
) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let xs = x.info.shape;
    let (mask, ost, count) = reduction(call, &xs);
    let ((sx, zx), (sy, zy)) = (qp(&x.info), qp(&out.info));
    let xi = x.i8s()?;
    let y = out.i8s_mut()?;
    let scale = sx / (sy * count as f32);
    let fin = |acc: i32| {
        let v = (acc as f32 * scale)
            .max((-128 - zy) as f32)
            .min((127 - zy) as f32);
        (round_half_even(v) as i32 + zy) as i8
    };
    if contiguous_tail(&xs, mask) {
        // Reducing the innermost axes (GlobalAveragePool): each output sums one run, as
        // the raw bytes less the zero point once per element (the same integer). Outputs
        // split across the lent threads (each sums its own runs); a short run costs about
        // four multiply-adds' time a byte (`par`'s unit).
        let work = (xi.len() as u64).saturating_mul(REDUCE_WORK);
        crate::par::par_pieces(y, 1, work, |at, ys| {
            let runs = xi.get(at * count..).unwrap_or(&[]).chunks(count);
            for (yo, run) in ys.iter_mut().zip(runs) {
                let offset = zx.wrapping_mul(run.len() as i32);
                *yo = fin(sum(run).wrapping_sub(offset));
            }
        });
    } else {
        for (o, yo) in y.iter_mut().enumerate() {
            let mut acc = 0i32;
            walk_reduced(&xs, mask, o, &ost, |i| acc += xi[i] as i32 - zx);
            *yo = fin(acc);
        }
    }
    Ok(())
}

fn reduce_mean_f32(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let xs = x.info.shape;
    let r = xs.rank();
    let (_, ost, count) = reduction(call, &xs);
    let xf = x.f32s()?;
    let y = out.f32s_mut()?;
    y.iter_mut().for_each(|v| *v = 0.0);
    let mut idx = [0usize; 6];
    for &v in xf {
        let o: usize = (0..r).map(|d| idx[d] * ost[d]).sum();
        y[o] += v;
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
    y.iter_mut().for_each(|v| *v /= count as f32);
    Ok(())
}

/// `Σ v` over int8 values, wrapping in i32 (exact below 2^24 values); also the scalar
/// tail of the vector sums (`fast_elt`) and a MatMul's row sums (`fast/neon_dot.rs`).
pub(crate) fn sum_i8(v: &[i8]) -> i32 {
    v.iter().fold(0i32, |s, &x| s.wrapping_add(x as i32))
}

/// True when the reduced axes are exactly the innermost ones (each output is one run).
fn contiguous_tail(xs: &cairn_core::Shape, mask: u32) -> bool {
    let r = xs.rank() as u32;
    let k = mask.count_ones();
    k > 0 && mask == ((1u32 << r) - 1) & !((1u32 << (r - k)) - 1)
}

/// Visit the flat input indices that reduce into output `o`.
fn walk_reduced(
    xs: &cairn_core::Shape,
    mask: u32,
    o: usize,
    ost: &[usize; 6],
    mut f: impl FnMut(usize),
) {
    let r = xs.rank();
    let ist = xs.strides();
    // Decompose o into kept-axis coordinates.
    let mut base = 0usize;
    let mut rem = o;
    for d in 0..r {
        if mask & (1 << d) == 0 {
            let c = rem / ost[d].max(1);
            rem %= ost[d].max(1);
            base += c * ist[d];
        }
    }
    let axes: [usize; 6] = core::array::from_fn(|i| i);
    let red: &[usize] = &axes[..r];
    let mut idx = [0usize; 6];
    loop {
        let off: usize = red
            .iter()
            .filter(|&&d| mask & (1 << d) != 0)
            .map(|&d| idx[d] * ist[d])
            .sum();
        f(base + off);
        let mut d = r;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            if mask & (1 << d) == 0 {
                continue;
            }
            idx[d] += 1;
            if idx[d] < xs.dim(d) {
                break;
            }
            idx[d] = 0;
        }
    }
}

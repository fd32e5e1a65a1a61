//! Data movement, element-size generic: Concat (with requantization for int8), Reshape,
//! Transpose, Slice, Split, Pad.

use cairn_core::quant::quantize_f32;
use cairn_core::shape::MAX_RANK;
use cairn_core::{DType, ExecError, OpCall, TensorMut, TensorRef};

use crate::util::qp;

fn esize(out: &TensorMut<'_>) -> usize {
    out.info.dtype.size_bytes()
}

/// Copy `src` into `dst`, requantizing int8 data when the params differ.
fn copy_elems(src: &TensorRef<'_>, s: &[u8], dst: &mut [u8], out_dtype: DType, out_q: (f32, i32)) {
    let in_q = qp(&src.info);
    if out_dtype == DType::I8 && in_q != out_q {
        let (si, zi) = in_q;
        let (so, zo) = out_q;
        let requant = |v: u8| {
            let real = ((v as i8) as i32 - zi) as f32 * si;
            quantize_f32(real, so, zo, -128, 127) as i8 as u8
        };
        // Hosts build a table when the run is long; microcontrollers keep the smaller
        // per-element loop (the table's code would cost their flash budget).
        let hosted = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));
        if !hosted || s.len() <= 256 {
            for (d, &v) in dst.iter_mut().zip(s) {
                *d = requant(v);
            }
        } else {
            // The same function of the byte, computed once per possible byte.
            let mut table = [0u8; 256];
            for (v, t) in table.iter_mut().enumerate() {
                *t = requant(v as u8);
            }
            for (d, &v) in dst.iter_mut().zip(s) {
                *d = table[v as usize];
            }
        }
    } else {
        dst.copy_from_slice(s);
    }
}

pub fn concat(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let es = esize(&out);
    let shape = out.info.shape;
    let axis = call.param(0) as usize;
    let outer = shape.prod(0, axis);
    let inner = shape.prod(axis + 1, shape.rank()) * es;
    let row = shape.dim(axis) * inner;
    let oq = qp(&out.info);
    let dt = out.info.dtype;
    let mut at = 0usize;
    for k in 0..call.n_inputs() {
        let t = call.req(k)?;
        let len = t.info.shape.dim(axis) * inner;
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if qp(&t.info) == oq || dt != DType::I8 {
            // A plain copy: short runs (a channel-last concat of a value or two per
            // position) by size class, not one memcpy call per run.
            runs(&t.data[..outer * len], len, &mut out.data[at..], row);
            at += len;
            continue;
        }
        for o in 0..outer {
            let src = &t.data[o * len..(o + 1) * len];
            copy_elems(
                &t,
                src,
                &mut out.data[o * row + at..o * row + at + len],
                dt,
                oq,
            );
        }
        at += len;
    }
    Ok(())
}

/// `dst[o · row..][..len] = src[o · len..][..len]` for every run `o` of `src` (hosts).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn runs(src: &[u8], len: usize, dst: &mut [u8], row: usize) {
    #[inline(always)]
    fn fixed<const L: usize>(src: &[u8], dst: &mut [u8], row: usize) {
        for (o, s) in src.chunks_exact(L).enumerate() {
            dst[o * row..o * row + L].copy_from_slice(s);
        }
    }
    match len {
        0 => {}
        1 => fixed::<1>(src, dst, row),
        2 => fixed::<2>(src, dst, row),
        4 => fixed::<4>(src, dst, row),
        8 => fixed::<8>(src, dst, row),
        12 => fixed::<12>(src, dst, row),
        16 => fixed::<16>(src, dst, row),
        _ => {
            for (o, s) in src.chunks_exact(len).enumerate() {
                dst[o * row..o * row + len].copy_from_slice(s);
            }
        }
    }
}

pub fn reshape(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    if !call.in_place {
        out.data.copy_from_slice(call.req(0)?.data);
    }
    Ok(())
}

/// Generic strided gather: out[idx] = in[base + sum(idx[d] * st[d])] (in elements),
/// a row of the innermost dimension at a time (a memcpy where that stride is 1).
fn gather(
    src: &[u8],
    dst: &mut [u8],
    es: usize,
    out_dims: &[u32],
    base: isize,
    st: &[isize; MAX_RANK],
) {
    let n: usize = out_dims.iter().map(|&d| d as usize).product();
    if n == 0 {
        return;
    }
    // Hosts drop size-1 dims and merge dims that are contiguous in the source, so the
    // rows copied are as long as the layouts allow (a trailing size-1 dim would make
    // every row one element).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let (out_dims, st) = &compact(out_dims, st);
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let out_dims = &out_dims.0[..out_dims.1];
    let r = out_dims.len();
    let Some(&last) = out_dims.last() else {
        // Rank 0: one element.
        let s = base as usize * es;
        dst[..es].copy_from_slice(&src[s..s + es]);
        return;
    };
    let inner = last as usize;
    let sin = st[r - 1];
    let mut idx = [0usize; MAX_RANK];
    let mut off = base;
    for row in 0..n / inner {
        copy_row(
            src,
            off,
            sin,
            es,
            &mut dst[row * inner * es..(row + 1) * inner * es],
        );
        // Advance the outer dimensions (all but the last) like an odometer.
        let mut d = r - 1;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            off += st[d];
            if idx[d] < out_dims[d] as usize {
                break;
            }
            off -= st[d] * idx[d] as isize;
            idx[d] = 0;
        }
    }
}

/// The dims and strides of a gather with size-1 dims dropped and each dim merged into
/// the one before it where the source is contiguous across them (rank ≥ 1 kept).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn compact(dims: &[u32], st: &[isize; MAX_RANK]) -> (([u32; MAX_RANK], usize), [isize; MAX_RANK]) {
    let mut d2 = [0u32; MAX_RANK];
    let mut s2 = [0isize; MAX_RANK];
    let mut r = 0;
    for (d, &n) in dims.iter().enumerate() {
        if n == 1 {
            continue;
        }
        if r > 0 && s2[r - 1] == st[d] * n as isize {
            d2[r - 1] *= n;
            s2[r - 1] = st[d];
        } else {
            d2[r] = n;
            s2[r] = st[d];
            r += 1;
        }
    }
    if r == 0 {
        d2[0] = 1;
        r = 1;
    }
    ((d2, r), s2)
}

/// `dst` (elements of `es` bytes) = `src` elements `off, off + s, off + 2s, ...`.
#[inline]
fn copy_row(src: &[u8], off: isize, s: isize, es: usize, dst: &mut [u8]) {
    // Hosts take the memcpy and per-size loops; a microcontroller keeps one small loop.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    for (j, d) in dst.chunks_exact_mut(es).enumerate() {
        let a = (off + j as isize * s) as usize * es;
        d.copy_from_slice(&src[a..a + es]);
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if s == 1 {
        let a = off as usize * es;
        dst.copy_from_slice(&src[a..a + dst.len()]);
        return;
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    match es {
        1 => {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = src[(off + j as isize * s) as usize];
            }
        }
        4 => {
            for (j, d) in dst.chunks_exact_mut(4).enumerate() {
                let a = (off + j as isize * s) as usize * 4;
                d.copy_from_slice(&src[a..a + 4]);
            }
        }
        _ => {
            for (j, d) in dst.chunks_exact_mut(es).enumerate() {
                let a = (off + j as isize * s) as usize * es;
                d.copy_from_slice(&src[a..a + es]);
            }
        }
    }
}

pub fn transpose(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let es = esize(&out);
    let ist = x.info.shape.strides();
    let mut st = [0isize; MAX_RANK];
    for (i, s) in st.iter_mut().enumerate().take(x.info.shape.rank()) {
        *s = ist[call.param(i) as usize] as isize;
    }
    let dims = out.info.shape;
    gather(x.data, out.data, es, dims.dims(), 0, &st);
    Ok(())
}

pub fn slice(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let r = x.info.shape.rank();
    let ist = x.info.shape.strides();
    let mut st = [0isize; MAX_RANK];
    let mut base = 0isize;
    for i in 0..r {
        base += call.param(i) as isize * ist[i] as isize;
        st[i] = call.param(r + i) as isize * ist[i] as isize;
    }
    let es = esize(&out);
    let dims = out.info.shape;
    if dims.numel() == Some(0) {
        return Ok(());
    }
    gather(x.data, out.data, es, dims.dims(), base, &st);
    Ok(())
}

pub fn split(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let axis = call.param(0) as usize;
    let off = call.param(1 + call.out_index) as usize;
    let es = esize(&out);
    let xs = x.info.shape;
    let outer = xs.prod(0, axis);
    let inner = xs.prod(axis + 1, xs.rank()) * es;
    let in_row = xs.dim(axis) * inner;
    let len = out.info.shape.dim(axis) * inner;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if len > 0 && len <= 16 {
        // Short runs by size class (`runs` with the roles swapped).
        for (o, d) in out.data[..outer * len].chunks_exact_mut(len).enumerate() {
            let s = o * in_row + off * inner;
            match len {
                4 => d.copy_from_slice(&x.data[s..s + 4]),
                1 => d[0] = x.data[s],
                _ => d.copy_from_slice(&x.data[s..s + len]),
            }
        }
        return Ok(());
    }
    for o in 0..outer {
        let s = o * in_row + off * inner;
        out.data[o * len..(o + 1) * len].copy_from_slice(&x.data[s..s + len]);
    }
    Ok(())
}

/// Pad: mode 0 constant (param 1 = value bits for f32, the integer for int8), 1 reflect,
/// 2 edge; params 2.. = pads at the start of each axis (the end follows from the shapes).
pub fn pad(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let es = esize(&out);
    let xs = x.info.shape;
    let ys = out.info.shape;
    let r = ys.rank();
    let mode = call.param(0);
    let value: [u8; 4] = match out.info.dtype {
        DType::F32 | DType::I32 => call.param(1).to_le_bytes(),
        _ => [call.param(1) as u8, 0, 0, 0],
    };
    // Hosts copy whole rows; a microcontroller keeps the smaller per-element loop below.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if mode == 0 && pad_rows(x.data, out.data, es, &value[..es], call, &xs, &ys) {
        return Ok(());
    }
    let ist = xs.strides();
    let n = ys.numel().ok_or(ExecError::Shape)?;
    let mut idx = [0usize; MAX_RANK];
    for o in 0..n {
        let mut src = Some(0usize);
        for d in 0..r {
            let b = call.param(2 + d) as isize;
            let len = xs.dim(d) as isize;
            let mut i = idx[d] as isize - b;
            if i < 0 || i >= len {
                i = match mode {
                    1 => {
                        let p = 2 * (len - 1).max(1);
                        let m = i.rem_euclid(p);
                        if m >= len {
                            p - m
                        } else {
                            m
                        }
                    }
                    2 => i.clamp(0, len - 1),
                    _ => {
                        src = None;
                        0
                    }
                };
            }
            if let Some(s) = src.as_mut() {
                *s += i as usize * ist[d];
            }
        }
        let dst = &mut out.data[o * es..(o + 1) * es];
        match src {
            Some(s) => dst.copy_from_slice(&x.data[s * es..(s + 1) * es]),
            None => dst.copy_from_slice(&value[..es]),
        }
        let mut d = r;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            if idx[d] < ys.dim(d) {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

/// Constant Pad with no cropping (hosts): fill the output with the value, then copy each
/// input row (innermost dimension) to its place. `false` (nothing written) where a pad is
/// negative or the shapes do not match.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn pad_rows(
    x: &[u8],
    y: &mut [u8],
    es: usize,
    value: &[u8],
    call: &OpCall<'_>,
    xs: &cairn_core::Shape,
    ys: &cairn_core::Shape,
) -> bool {
    let r = ys.rank();
    if r == 0 || xs.rank() != r {
        return false;
    }
    let mut begin = [0usize; MAX_RANK];
    for (d, b) in begin.iter_mut().enumerate().take(r) {
        let p = call.param(2 + d);
        if p < 0 || (ys.dim(d) as u64) < xs.dim(d) as u64 + p as u64 {
            return false;
        }
        *b = p as usize;
    }
    let (Some(nx), Some(ny)) = (xs.numel(), ys.numel()) else {
        return false;
    };
    if x.len() < nx * es || y.len() < ny * es {
        return false;
    }
    if es == 1 {
        y[..ny].fill(value[0]);
    } else {
        for c in y[..ny * es].chunks_exact_mut(es) {
            c.copy_from_slice(value);
        }
    }
    // Merge each trailing dim that is not padded into the one before it, so the rows
    // copied are as long as the layout allows (a trailing dim of 1 would make every row
    // one element).
    let mut xd = [0usize; MAX_RANK];
    let mut yd = [0usize; MAX_RANK];
    for d in 0..r {
        (xd[d], yd[d]) = (xs.dim(d), ys.dim(d));
    }
    let mut r = r;
    while r > 1 && xd[r - 1] == yd[r - 1] {
        let n = xd[r - 1];
        xd[r - 2] *= n;
        yd[r - 2] *= n;
        begin[r - 2] *= n;
        r -= 1;
    }
    let inner = xd[r - 1];
    if nx == 0 || inner == 0 {
        return true;
    }
    let mut ost = [0usize; MAX_RANK];
    let mut acc = 1;
    for d in (0..r).rev() {
        ost[d] = acc;
        acc *= yd[d];
    }
    let mut idx = [0usize; MAX_RANK];
    for row in 0..nx / inner {
        let off: usize = (0..r).map(|d| (idx[d] + begin[d]) * ost[d]).sum();
        y[off * es..(off + inner) * es]
            .copy_from_slice(&x[row * inner * es..(row + 1) * inner * es]);
        // Next row of x: advance the dimensions before the last like an odometer.
        let mut d = r - 1;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            if idx[d] < xd[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    true
}

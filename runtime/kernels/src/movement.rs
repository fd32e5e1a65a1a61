//! Data movement, element-size generic: Concat (with requantization for int8), Reshape,
//! Transpose, Slice, Split, Pad.

use cairn_core::quant::quantize_f32;
use cairn_core::shape::MAX_RANK;
use cairn_core::{DType, ExecError, OpCall, TensorMut};

use crate::util::qp;

fn esize(out: &TensorMut<'_>) -> usize {
    out.info.dtype.size_bytes()
}

/// How one Concat input's bytes reach the output: copied, or requantized to the output's
/// int8 params (element by element, or through a byte table on a host when the input has
/// more elements than the table). Built on the stack once per input, so the table's size
/// beside the other variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Requant {
    Copy,
    Each {
        from: (f32, i32),
        to: (f32, i32),
    },
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    Table([i8; 256]),
}

impl Requant {
    /// For an input with params `from` and `n` elements into an output of `dtype`, `to`.
    fn new(from: (f32, i32), n: usize, dtype: DType, to: (f32, i32)) -> Requant {
        if dtype != DType::I8 || from == to {
            return Requant::Copy;
        }
        let each = Requant::Each { from, to };
        // Hosts build the table once per input (not per run of it: a concat along an
        // inner axis has one run per outer index); microcontrollers keep the smaller
        // per-element loop (the table's code would cost their flash budget).
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if n > 256 {
            // Indexed by `x + 128` as the Lut kernels index their tables.
            return Requant::Table(core::array::from_fn(|i| each.one(i as u8 ^ 0x80) as i8));
        }
        let _ = n;
        each
    }

    #[inline]
    fn one(&self, v: u8) -> u8 {
        match *self {
            Requant::Each {
                from: (si, zi),
                to: (so, zo),
            } => {
                let real = ((v as i8) as i32 - zi) as f32 * si;
                quantize_f32(real, so, zo, -128, 127) as i8 as u8
            }
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Requant::Table(ref t) => t[(v ^ 0x80) as usize] as u8,
            Requant::Copy => v,
        }
    }

    /// `dst = f(s)`, element by element.
    fn apply(&self, s: &[u8], dst: &mut [u8]) {
        match self {
            Requant::Copy => dst.copy_from_slice(s),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Requant::Table(table) => {
                let (s8, d8): (&[i8], &mut [i8]) =
                    (bytemuck::cast_slice(s), bytemuck::cast_slice_mut(dst));
                if !crate::fast_elt::table_bytes(table, s8, d8) {
                    for (d, &v) in dst.iter_mut().zip(s) {
                        *d = self.one(v);
                    }
                }
            }
            Requant::Each { .. } => {
                for (d, &v) in dst.iter_mut().zip(s) {
                    *d = self.one(v);
                }
            }
        }
    }
}

/// Concat runs shorter than this go through a byte table one lookup at a time (in
/// `concat`, not `Requant::apply`): the vector table's setup (sixteen 16-byte loads)
/// costs more than their lookups.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SHORT_RUN: usize = 32;

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
        let how = Requant::new(qp(&t.info), outer * len, dt, oq);
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if let Requant::Copy = how {
            // A plain copy: short runs (a channel-last concat of a value or two per
            // position) by size class, not one memcpy call per run.
            runs(&t.data[..outer * len], len, &mut out.data[at..], row);
            at += len;
            continue;
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if let Requant::Table(table) = &how {
            if len < SHORT_RUN {
                // Short runs (a channel-last concat's value or two a position): lookups
                // straight from row to row, not a vector table set up per run.
                let src = &t.data[..outer * len];
                if len == 1 {
                    for (d, &v) in out.data[at..].iter_mut().step_by(row).zip(src) {
                        *d = table[(v ^ 0x80) as usize] as u8;
                    }
                } else {
                    for (s, d) in src.chunks_exact(len).zip(out.data[at..].chunks_mut(row)) {
                        for (d, &v) in d.iter_mut().zip(s) {
                            *d = table[(v ^ 0x80) as usize] as u8;
                        }
                    }
                }
                at += len;
                continue;
            }
        }
        for o in 0..outer {
            let src = &t.data[o * len..(o + 1) * len];
            how.apply(src, &mut out.data[o * row + at..o * row + at + len]);
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
    // Hosts: where the last two output dims swap the source's (the dim before the last
    // reads the source contiguously), copy each such plane in tiles (`transpose_plane`).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if r >= 2 && st[r - 2] == 1 && sin > 1 {
        let rows = out_dims[r - 2] as usize;
        let plane = rows * inner;
        let mut idx = [0usize; MAX_RANK];
        let mut off = base;
        for p in 0..n / plane {
            let d = &mut dst[p * plane * es..(p + 1) * plane * es];
            let (off0, s) = (off as usize, sin as usize);
            match es {
                1 => transpose_plane(src, off0, s, rows, inner, d),
                4 => {
                    let (src4, d4) = (src.as_chunks::<4>().0, d.as_chunks_mut::<4>().0);
                    #[cfg(target_arch = "x86_64")]
                    if crate::fast_f32::transpose4(src4, off0, s, rows, inner, d4, inner) {
                        crate::paths::note(crate::paths::Path::TransposeBlocks);
                        odometer(&mut idx, &mut off, st, out_dims, r - 2);
                        continue;
                    }
                    transpose_plane(src4, off0, s, rows, inner, d4)
                }
                _ => {
                    for i in 0..rows {
                        copy_row(
                            src,
                            off + i as isize,
                            sin,
                            es,
                            &mut d[i * inner * es..][..inner * es],
                        );
                    }
                }
            }
            // Advance the dims before the plane.
            odometer(&mut idx, &mut off, st, out_dims, r - 2);
        }
        return;
    }
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
        // Advance the outer dimensions (all but the last).
        odometer(&mut idx, &mut off, st, out_dims, r - 1);
    }
}

/// Step the index of the first `dims` dimensions like an odometer (the last of them
/// fastest), keeping `off` the source offset of the index.
#[inline]
fn odometer(
    idx: &mut [usize; MAX_RANK],
    off: &mut isize,
    st: &[isize; MAX_RANK],
    out_dims: &[u32],
    dims: usize,
) {
    let mut d = dims;
    while d > 0 {
        d -= 1;
        idx[d] += 1;
        *off += st[d];
        if idx[d] < out_dims[d] as usize {
            break;
        }
        *off -= st[d] * idx[d] as isize;
        idx[d] = 0;
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

/// `dst[i][j] = src[off + i + j·s]` for i < `rows`, j < `cols`: a transpose, in tiles of
/// `TILE` source rows (`j`) read side by side from column `i` on, so every source row is
/// read in order and every output row written in runs of `TILE`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn transpose_plane<T: Copy>(
    src: &[T],
    off: usize,
    s: usize,
    rows: usize,
    cols: usize,
    dst: &mut [T],
) {
    const TILE: usize = 16;
    let dst = &mut dst[..rows * cols];
    // Two to four source rows interleaved (a pixel shuffle, the tail of a non-overlapping
    // ConvTranspose made a 1×1 conv): whole output rows at a time, a loop the compiler
    // turns into byte shuffles instead of `cols` strided scalar passes.
    match cols {
        2 => return interleave::<T, 2>(src, off, s, rows, dst),
        3 => return interleave::<T, 3>(src, off, s, rows, dst),
        4 => return interleave::<T, 4>(src, off, s, rows, dst),
        _ => {}
    }
    let mut j0 = 0;
    while j0 + TILE <= cols {
        let lines: [&[T]; TILE] = core::array::from_fn(|t| &src[off + (j0 + t) * s..][..rows]);
        for (i, d) in dst.chunks_exact_mut(cols).enumerate() {
            for (d, line) in d[j0..j0 + TILE].iter_mut().zip(&lines) {
                *d = line[i];
            }
        }
        j0 += TILE;
    }
    for j in j0..cols {
        for (i, &v) in src[off + j * s..][..rows].iter().enumerate() {
            dst[i * cols + j] = v;
        }
    }
}

/// [`transpose_plane`] for `C` source rows: `dst[i][j] = src[off + i + j·s]`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline]
fn interleave<T: Copy, const C: usize>(
    src: &[T],
    off: usize,
    s: usize,
    rows: usize,
    dst: &mut [T],
) {
    let lines: [&[T]; C] = core::array::from_fn(|j| &src[off + j * s..][..rows]);
    for (i, d) in dst.as_chunks_mut::<C>().0[..rows].iter_mut().enumerate() {
        for (v, line) in d.iter_mut().zip(&lines) {
            *v = line[i];
        }
    }
}

/// `dst[j] = src[a + 2j]` (`dst` not empty): SSE2 packs on x86_64
/// (`fast_elt::every_2nd_u8`: the compiler gathers this loop a byte at a time), the tail
/// (and other hosts) a byte at a time.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline]
fn every_2nd(src: &[u8], a: usize, dst: &mut [u8]) {
    let body = dst.len() - 1;
    let (head, last) = dst.split_at_mut(body);
    #[cfg(target_arch = "x86_64")]
    let done = crate::fast_elt::every_2nd_u8(&src[a..a + 2 * body], head);
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (d, c) in head[done..]
        .iter_mut()
        .zip(src[a + 2 * done..a + 2 * body].as_chunks::<2>().0)
    {
        *d = c[0];
    }
    last[0] = src[a + 2 * body];
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
        // Every 2nd byte: a space-to-depth's Slices (YOLOX's Focus), a 2× subsample.
        1 if s == 2 => every_2nd(src, off as usize, dst),
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
/// Hosts copy whole rows (`pad_fast`); elsewhere, and for the cases it leaves, the
/// per-element loop of `pad_reference`.
pub fn pad(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    // A microcontroller keeps only the smaller per-element loop.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let out = {
        let mut out = out;
        if let Some(r) = pad_fast(call, &mut out) {
            return r;
        }
        out
    };
    pad_reference(call, out)
}

/// The value a constant Pad writes, as `es` little-endian bytes (the first `es` of these).
fn pad_value(call: &OpCall<'_>, out: &TensorMut<'_>) -> [u8; 4] {
    match out.info.dtype {
        DType::F32 | DType::I32 => call.param(1).to_le_bytes(),
        _ => [call.param(1) as u8, 0, 0, 0],
    }
}

/// The source index along an axis of `len` elements for output index `i` (input
/// coordinates: `i` is the output index minus the pad before), or `None` where a constant
/// Pad writes its value. The rule of the reference loop, shared by the row copies.
#[inline(always)]
fn pad_source(mode: i32, i: isize, len: isize) -> Option<isize> {
    if i >= 0 && i < len {
        return Some(i);
    }
    match mode {
        1 => {
            let p = 2 * (len - 1).max(1);
            let m = i.rem_euclid(p);
            Some(if m >= len { p - m } else { m })
        }
        2 => Some(i.clamp(0, len - 1)),
        _ => None,
    }
}

/// Pad one element at a time (the reference).
pub fn pad_reference(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let x = call.req(0)?;
    let es = esize(&out);
    let xs = x.info.shape;
    let ys = out.info.shape;
    let r = ys.rank();
    let mode = call.param(0);
    let value = pad_value(call, &out);
    let ist = xs.strides();
    let n = ys.numel().ok_or(ExecError::Shape)?;
    let mut idx = [0usize; MAX_RANK];
    for o in 0..n {
        let mut src = Some(0usize);
        for d in 0..r {
            let b = call.param(2 + d) as isize;
            let len = xs.dim(d) as isize;
            match pad_source(mode, idx[d] as isize - b, len) {
                Some(i) => {
                    if let Some(s) = src.as_mut() {
                        *s += i as usize * ist[d];
                    }
                }
                None => src = None,
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

/// Pad (any mode, no cropping) on hosts, a row at a time: the trailing axes that are not
/// padded merge into blocks, each output row (the last padded axis) is the input row it
/// maps to copied whole, with its pads filled block by block from the same row (reflect,
/// edge) or with the value (constant); rows outside a constant Pad's input are the value.
/// `None` (nothing written) where a pad is negative, a reflected or edge-padded axis is
/// too short for the reference's rule (fewer than 2 or 1 elements), or the shapes do not
/// match; the caller runs `pad_reference` then.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn pad_fast(
    call: &OpCall<'_>,
    out: &mut TensorMut<'_>,
) -> Option<Result<(), ExecError>> {
    let x = call.input(0)?;
    let es = esize(out);
    let (xs, ys) = (x.info.shape, out.info.shape);
    let mode = call.param(0);
    let r = ys.rank();
    if r == 0 || xs.rank() != r || !(0..=2).contains(&mode) {
        return None;
    }
    let value = pad_value(call, out);
    let mut xd = [1usize; MAX_RANK];
    let mut yd = [1usize; MAX_RANK];
    let mut begin = [0usize; MAX_RANK];
    let mut last = None;
    for d in 0..r {
        (xd[d], yd[d]) = (xs.dim(d), ys.dim(d));
        let b = usize::try_from(call.param(2 + d)).ok()?;
        if (yd[d] as u64) < xd[d] as u64 + b as u64 {
            return None;
        }
        begin[d] = b;
        if yd[d] != xd[d] {
            // The reference's reflect needs two elements, edge one.
            if (mode == 1 && xd[d] < 2) || (mode == 2 && xd[d] == 0) {
                return None;
            }
            last = Some(d);
        }
    }
    let (nx, ny) = (xs.numel()?, ys.numel()?);
    if x.data.len() < nx.checked_mul(es)? || out.data.len() < ny.checked_mul(es)? {
        return None;
    }
    crate::paths::note(crate::paths::Path::PadRows);
    let y = &mut out.data[..ny * es];
    let Some(last) = last else {
        y.copy_from_slice(&x.data[..ny * es]);
        return Some(Ok(()));
    };
    // Bytes per block (the unpadded trailing axes), per input row and per output row.
    let block = yd[last + 1..r].iter().product::<usize>() * es;
    let (xrow, yrow) = (xd[last] * block, yd[last] * block);
    if ny == 0 {
        return Some(Ok(()));
    }
    // Input row strides of the outer axes (in rows).
    let mut xst = [0usize; MAX_RANK];
    let mut acc = 1;
    for d in (0..last).rev() {
        xst[d] = acc;
        acc *= xd[d];
    }
    let fill = |dst: &mut [u8]| {
        if es == 1 {
            dst.fill(value[0]);
        } else {
            for c in dst.chunks_exact_mut(es) {
                c.copy_from_slice(&value[..es]);
            }
        }
    };
    let len = xd[last] as isize;
    let mut idx = [0usize; MAX_RANK];
    for dst in y.chunks_exact_mut(yrow) {
        let mut src = Some(0usize);
        for d in 0..last {
            match pad_source(mode, idx[d] as isize - begin[d] as isize, xd[d] as isize) {
                Some(i) => src = src.map(|s| s + i as usize * xst[d]),
                None => src = None,
            }
        }
        match src {
            None => fill(dst),
            Some(s) => {
                let row = &x.data[s * xrow..(s + 1) * xrow];
                let (b, e) = (begin[last] * block, begin[last] * block + xrow);
                dst[b..e].copy_from_slice(row);
                let pads = (0..begin[last]).chain(begin[last] + xd[last]..yd[last]);
                // One-element blocks (the common last-axis pad) as fixed-size moves rather
                // than a memcpy call each.
                match (block, mode) {
                    (_, 0) => {
                        fill(&mut dst[..b]);
                        fill(&mut dst[e..]);
                    }
                    (1, _) => pad_blocks::<1>(dst, row, pads, mode, begin[last], len),
                    (4, _) => pad_blocks::<4>(dst, row, pads, mode, begin[last], len),
                    _ => {
                        for j in pads {
                            let i = pad_source(mode, j as isize - begin[last] as isize, len);
                            // Reflect and edge always have a source (checked above).
                            let i = i.unwrap_or(0) as usize;
                            dst[j * block..(j + 1) * block]
                                .copy_from_slice(&row[i * block..(i + 1) * block]);
                        }
                    }
                }
            }
        }
        // Next output row: advance the outer axes like an odometer.
        let mut d = last;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            if idx[d] < yd[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(Ok(()))
}

/// Reflect or edge pads `pads` of one output row `dst` from its input row `row`, in blocks
/// of `B` bytes.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn pad_blocks<const B: usize>(
    dst: &mut [u8],
    row: &[u8],
    pads: impl Iterator<Item = usize>,
    mode: i32,
    begin: usize,
    len: isize,
) {
    for j in pads {
        // Reflect and edge always have a source (the caller checked the axis length).
        let i = pad_source(mode, j as isize - begin as isize, len).unwrap_or(0) as usize;
        let d: &mut [u8; B] = (&mut dst[j * B..(j + 1) * B]).try_into().expect("B bytes");
        *d = row[i * B..(i + 1) * B].try_into().expect("B bytes");
    }
}

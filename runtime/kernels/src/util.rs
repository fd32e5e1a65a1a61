//! Small helpers shared by the kernels.

use cairn_core::shape::{Shape, MAX_RANK};

/// Visit every index of `shape` in row-major order with the matching flat offsets into
/// two inputs whose element strides (0 on broadcast axes) are `sa` and `sb`.
pub fn for_each_broadcast(
    shape: &Shape,
    sa: &[usize; MAX_RANK],
    sb: &[usize; MAX_RANK],
    mut f: impl FnMut(usize, usize, usize),
) {
    let r = shape.rank();
    let n = shape.numel().unwrap_or(0);
    if n == 0 {
        return;
    }
    let mut idx = [0usize; MAX_RANK];
    let (mut ia, mut ib) = (0usize, 0usize);
    for o in 0..n {
        f(o, ia, ib);
        // increment the multi-index
        let mut d = r;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if idx[d] < shape.dim(d) {
                break;
            }
            ia -= sa[d] * idx[d];
            ib -= sb[d] * idx[d];
            idx[d] = 0;
        }
    }
}

/// Activation clamp of f32 kernels: two params holding f32 bits.
pub fn f32_clamp(lo_bits: i32, hi_bits: i32) -> (f32, f32) {
    (
        f32::from_bits(lo_bits as u32),
        f32::from_bits(hi_bits as u32),
    )
}

/// (scale, zero point) of a per-tensor quantized tensor.
pub fn qp(info: &cairn_core::TensorInfo) -> (f32, i32) {
    info.quant.per_tensor()
}

/// Round half to even for any finite f32, saturating to the i32 range.
pub fn round_half_even_wide(v: f32) -> i32 {
    if v.abs() < 4_194_304.0 {
        cairn_core::quant::round_half_even(v) as i32
    } else {
        v as i32
    }
}

/// Store the first `d.len()` (at most 8) little-endian bytes of `v` as int8: one 8-byte
/// store when `d` is exactly 8 long (the SIMD kernels' common case).
#[inline(always)]
pub fn put8(v: u64, d: &mut [i8]) {
    let b = v.to_le_bytes();
    if let Ok(d8) = <&mut [i8; 8]>::try_from(&mut *d) {
        *d8 = b.map(|x| x as i8);
    } else {
        for (o, x) in d.iter_mut().zip(b) {
            *o = x as i8;
        }
    }
}

/// The `i` in `[0, n)` with `0 <= i·s + off < w`, as `(lo, hi)` (`lo == hi` when none):
/// the outputs of a strided window tap that read inside a row of width `w`.
#[inline(always)]
pub fn inside(off: isize, s: usize, w: usize, n: usize) -> (usize, usize) {
    let (s, w) = (s as isize, w as isize);
    let lo = if off >= 0 {
        0
    } else {
        ((-off + s - 1) / s) as usize
    };
    let hi = if w - 1 - off < 0 {
        0
    } else {
        (((w - 1 - off) / s + 1) as usize).min(n)
    };
    (lo.min(hi), hi)
}

/// `col[i] += row[i]` (int8 widened), for the column sums of a pooling window.
#[inline(always)]
pub fn add_row_i8(col: &mut [i32], row: &[i8]) {
    for (c, &v) in col.iter_mut().zip(row) {
        *c += v as i32;
    }
}

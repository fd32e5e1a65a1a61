//! The loader's shape rules on hostile dims and parameters: every sum and product of values
//! from a model file is checked, so a 32-bit device and a 64-bit host refuse the same file
//! with a typed error and neither panics (test builds have overflow checks on). Each case
//! overflowed `usize` on a 32-bit target before (run with `--target i686-unknown-linux-gnu`),
//! where it must be `ShapeError::Overflow`; on 64 bits it is refused by a later check.

use cairn_core::op::{infer_output, ShapeError};
use cairn_core::{OpKind, Shape};

const MAX_DIM: usize = u32::MAX as usize;
const MAX_PARAM: i32 = i32::MAX;

fn shape(d: &[usize]) -> Option<Shape> {
    Some(Shape::new(d).expect("dims fit in u32"))
}

/// Refused; with `Overflow` where usize is 32 bits (a sum or product that wrapped there).
fn refused(kind: OpKind, p: &[i32], ins: &[Option<Shape>], declared: &[usize]) {
    let declared = Shape::new(declared).unwrap();
    let r = infer_output(kind, p, ins, 0, &declared);
    assert!(r.is_err(), "{kind:?} {p:?} loaded as {r:?}");
    if usize::BITS == 32 {
        assert_eq!(r, Err(ShapeError::Overflow), "{kind:?} {p:?}");
    }
}

/// Conv parameters: strides, pads (t, l, b, r), dilations, group, clamp.
fn conv(s: [i32; 2], pads: [i32; 4], d: [i32; 2], g: i32) -> [i32; 11] {
    let [pt, pl, pb, pr] = pads;
    [s[0], s[1], pt, pl, pb, pr, d[0], d[1], g, -128, 127]
}
/// ConvTranspose parameters: as Conv, then the output padding.
fn deconv(s: [i32; 2], d: [i32; 2], g: i32, out_pad: [i32; 2]) -> [i32; 11] {
    [
        s[0], s[1], 0, 0, 0, 0, d[0], d[1], g, out_pad[0], out_pad[1],
    ]
}

#[test]
fn conv_input_channels_times_groups() {
    // wi · g = 65536 · 65536.
    let x = shape(&[1, 4, 8, 8]);
    let w = shape(&[65536, 65536, 1, 1]);
    let p = conv([1, 1], [0; 4], [1, 1], 65536);
    refused(OpKind::Conv, &p, &[x, w], &[1, 1, 1, 1]);
}

#[test]
fn conv_padded_height() {
    // h + pt + pb with h = u32::MAX and both pads at i32::MAX.
    let x = shape(&[1, 1, MAX_DIM, 1]);
    let w = shape(&[1, 1, 1, 1]);
    let p = conv([1, 1], [MAX_PARAM, 0, MAX_PARAM, 0], [1, 1], 1);
    refused(OpKind::Conv, &p, &[x, w], &[1, 1, 1, 1]);
}

#[test]
fn conv_padded_width() {
    let x = shape(&[1, 1, 1, MAX_DIM]);
    let w = shape(&[1, 1, 1, 1]);
    let p = conv([1, 1], [0, MAX_PARAM, 0, MAX_PARAM], [1, 1], 1);
    refused(OpKind::Conv, &p, &[x, w], &[1, 1, 1, 1]);
}

#[test]
fn conv_dilated_kernel_extent() {
    // d · (k − 1) + 1 = 65537 · 65535 + 1 = 2^32.
    let x = shape(&[1, 1, 4, 4]);
    let w = shape(&[1, 1, 65536, 1]);
    let p = conv([1, 1], [0; 4], [65537, 1], 1);
    refused(OpKind::Conv, &p, &[x, w], &[1, 1, 1, 1]);
}

#[test]
fn conv_transpose_output_channels() {
    // oc = wi · g = 65536 · 65536.
    let x = shape(&[1, 65536, 1, 1]);
    let w = shape(&[65536, 65536, 1, 1]);
    let p = deconv([1, 1], [1, 1], 65536, [0, 0]);
    refused(OpKind::ConvTranspose, &p, &[x, w], &[1, 1, 1, 1]);
}

#[test]
fn conv_transpose_stride_times_input() {
    // s · (h − 1) = 65536 · 65536.
    let x = shape(&[1, 1, 65537, 1]);
    let w = shape(&[1, 1, 1, 1]);
    let p = deconv([65536, 1], [1, 1], 1, [0, 0]);
    refused(OpKind::ConvTranspose, &p, &[x, w], &[1, 1, 1, 1]);
}

#[test]
fn conv_transpose_dilation_times_kernel() {
    // d · (k − 1) = 65536 · 65536.
    let x = shape(&[1, 1, 1, 1]);
    let w = shape(&[1, 1, 1, 65537]);
    let p = deconv([1, 1], [1, 65536], 1, [0, 0]);
    refused(OpKind::ConvTranspose, &p, &[x, w], &[1, 1, 1, 1]);
}

#[test]
fn conv_transpose_output_size_sum() {
    // Each term fits; their sum does not: (2^31 − 1) + 2 + (2^31 − 1) + 1 = 2^32 + 1.
    let x = shape(&[1, 1, 2, 1]);
    let w = shape(&[1, 1, 2, 1]);
    let p = deconv([MAX_PARAM, 1], [MAX_PARAM, 1], 1, [2, 0]);
    refused(OpKind::ConvTranspose, &p, &[x, w], &[1, 1, 1, 1]);
}

/// MaxPool parameters: kernel, strides, pads (t, l, b, r), dilations.
fn pool(k: [i32; 2], s: [i32; 2], pads: [i32; 4], d: [i32; 2]) -> [i32; 10] {
    let [pt, pl, pb, pr] = pads;
    [k[0], k[1], s[0], s[1], pt, pl, pb, pr, d[0], d[1]]
}

#[test]
fn pool_dilated_window() {
    // d · (k − 1) = 65536 · 65536.
    let x = shape(&[1, 1, 4, 4]);
    let p = pool([65537, 1], [1, 1], [0; 4], [65536, 1]);
    refused(OpKind::MaxPool, &p, &[x], &[1, 1, 1, 4]);
}

#[test]
fn pool_window_extent_plus_one() {
    // d · (k − 1) + 1 = 65537 · 65535 + 1 = 2^32.
    let x = shape(&[1, 1, 4, 4]);
    let p = pool([1, 65536], [1, 1], [0; 4], [1, 65537]);
    refused(OpKind::MaxPool, &p, &[x], &[1, 1, 4, 1]);
}

#[test]
fn pool_padded_input() {
    // h + pt with h = u32::MAX.
    let x = shape(&[1, 1, MAX_DIM, 1]);
    let p = pool([2, 1], [1, 1], [1, 0, 0, 0], [1, 1]);
    refused(OpKind::MaxPool, &p, &[x], &[1, 1, 1, 1]);
}

#[test]
fn average_pool_padded_input() {
    let x = shape(&[1, 1, 1, MAX_DIM]);
    let p = &pool([1, 2], [1, 1], [0, 0, 0, 1], [1, 1])[..9];
    refused(OpKind::AveragePool, p, &[x], &[1, 1, 1, 1]);
}

#[test]
fn pool_last_window_start() {
    // The output size passes (ceil mode), but (oh − 1) · s = 3 · (2^31 − 2) > u32::MAX.
    let x = shape(&[1, 1, MAX_DIM, 1]);
    let p = pool([1, 1], [MAX_PARAM - 1, 1], [0; 4], [1, 1]);
    refused(OpKind::MaxPool, &p, &[x], &[1, 1, 4, 1]);
}

#[test]
fn pad_input_plus_begin() {
    // x + b with x = u32::MAX.
    let x = shape(&[1, MAX_DIM]);
    let p = [0, 0, 0, 1];
    refused(OpKind::Pad, &p, &[x], &[1, MAX_DIM]);
}

/// Sane shapes still infer (the checks changed no answer).
#[test]
fn ordinary_shapes_still_infer() {
    let x = shape(&[1, 3, 32, 32]);
    let w = shape(&[16, 3, 3, 3]);
    let p = conv([2, 2], [1, 1, 1, 1], [1, 1], 1);
    let any = Shape::new(&[1]).unwrap();
    let got = infer_output(OpKind::Conv, &p, &[x, w], 0, &any).unwrap();
    assert_eq!(got.dims(), &[1, 16, 16, 16]);
    let w = shape(&[3, 8, 4, 4]);
    let p = deconv([2, 2], [1, 1], 1, [0, 0]);
    let got = infer_output(OpKind::ConvTranspose, &p, &[x, w], 0, &any).unwrap();
    assert_eq!(got.dims(), &[1, 8, 66, 66]);
    let p = pool([3, 3], [2, 2], [1, 1, 1, 1], [1, 1]);
    let out = Shape::new(&[1, 3, 16, 16]).unwrap();
    let got = infer_output(OpKind::MaxPool, &p, &[x], 0, &out).unwrap();
    assert_eq!(got, out);
    let out = Shape::new(&[1, 3, 34, 35]).unwrap();
    let got = infer_output(OpKind::Pad, &[0, 0, 0, 0, 1, 2], &[x], 0, &out).unwrap();
    assert_eq!(got, out);
}

/// A Transpose whose output rank (which sizes its parameters) differs from its input's is
/// refused with a typed error, not a slice past the parameters (found by the `onnx_model`
/// fuzz target: a rank-4 input with a two-entry permutation).
#[test]
fn transpose_with_fewer_entries_than_input_dims_is_refused() {
    let declared = Shape::new(&[2, 1]).unwrap();
    let r = infer_output(
        OpKind::Transpose,
        &[1, 0],
        &[shape(&[1, 2, 3, 4])],
        0,
        &declared,
    );
    assert_eq!(r, Err(ShapeError::Rank));
    let declared = Shape::new(&[4, 3, 2, 1]).unwrap();
    let r = infer_output(
        OpKind::Transpose,
        &[1, 0],
        &[shape(&[1, 2, 3, 4])],
        0,
        &declared,
    );
    assert_eq!(r, Err(ShapeError::Param));
    // A whole permutation still loads.
    let r = infer_output(
        OpKind::Transpose,
        &[3, 2, 1, 0],
        &[shape(&[1, 2, 3, 4])],
        0,
        &declared,
    );
    assert_eq!(r, Ok(declared));
}

/// A zero dim does not hide huge ones: `numel` refuses a shape whose extent (the product
/// of max(d, 1)) overflows usize, so `prod` over any range after it succeeded cannot.
#[test]
fn numel_refuses_huge_dims_behind_a_zero() {
    for dims in [
        [0, MAX_DIM, MAX_DIM, MAX_DIM],
        [MAX_DIM, MAX_DIM, MAX_DIM, 0],
        [MAX_DIM, 0, MAX_DIM, MAX_DIM],
    ] {
        let s = Shape::new(&dims).unwrap();
        assert_eq!(s.numel(), None, "{dims:?}");
    }
    // Zero elements under dims whose extent fits (65535² < 2^32 on every target).
    let s = Shape::new(&[65535, 0, 65535]).unwrap();
    assert_eq!(s.numel(), Some(0));
    assert_eq!(s.prod(0, 1), 65535);
    assert_eq!(s.prod(1, 3), 0);
    assert_eq!(Shape::new(&[2, 3, 4]).unwrap().numel(), Some(24));
    assert_eq!(Shape::SCALAR.numel(), Some(1));
}

//! The shape rules every op is checked by at load (`op::infer_output`), case by case at
//! their bounds: what each kind derives, what it refuses and with which error. The
//! converter builds graphs with the same rules, so a rule that drifts changes which files
//! load.

use cairn_core::op::{infer_output, infer_output_in, Kinds, ShapeError, ALL_KINDS};
use cairn_core::op::{BinaryFn, ReduceFn, UnaryFn};
use cairn_core::{OpKind, Shape};
use ShapeError::*;

fn s(d: &[usize]) -> Shape {
    Shape::new(d).unwrap()
}

/// Output 0 of `kind` with inputs `ins` (None: an absent optional input) and the declared
/// output shape `declared`.
fn infer(
    kind: OpKind,
    p: &[i32],
    ins: &[&[usize]],
    declared: &[usize],
) -> Result<Vec<u32>, ShapeError> {
    infer_out(kind, p, ins, 0, declared)
}

fn infer_out(
    kind: OpKind,
    p: &[i32],
    ins: &[&[usize]],
    out: usize,
    declared: &[usize],
) -> Result<Vec<u32>, ShapeError> {
    let ins: Vec<Option<Shape>> = ins.iter().map(|d| Some(s(d))).collect();
    infer_output(kind, p, &ins, out, &s(declared)).map(|r| r.dims().to_vec())
}

fn ok(kind: OpKind, p: &[i32], ins: &[&[usize]], declared: &[usize], want: &[u32]) {
    assert_eq!(
        infer(kind, p, ins, declared),
        Ok(want.to_vec()),
        "{kind:?} {p:?} {ins:?}"
    );
}

fn err(kind: OpKind, p: &[i32], ins: &[&[usize]], declared: &[usize], want: ShapeError) {
    assert_eq!(
        infer(kind, p, ins, declared),
        Err(want),
        "{kind:?} {p:?} {ins:?} -> {declared:?}"
    );
}

/// Conv words: strides, pads (t, l, b, r), dilations, group, clamp.
fn conv(st: [i32; 2], pads: [i32; 4], d: [i32; 2], g: i32) -> Vec<i32> {
    let [pt, pl, pb, pr] = pads;
    vec![st[0], st[1], pt, pl, pb, pr, d[0], d[1], g, -128, 127]
}

/// ConvTranspose words: as Conv, then output padding (h, w), then the clamp.
fn deconv(st: [i32; 2], pads: [i32; 4], d: [i32; 2], g: i32, op: [i32; 2]) -> Vec<i32> {
    let [pt, pl, pb, pr] = pads;
    vec![
        st[0], st[1], pt, pl, pb, pr, d[0], d[1], g, op[0], op[1], -128, 127,
    ]
}

#[test]
fn conv_output_sizes() {
    use OpKind::Conv;
    let x: &[usize] = &[1, 3, 8, 8];
    let w: &[usize] = &[4, 3, 3, 3];
    ok(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 1),
        &[x, w],
        &[1],
        &[1, 4, 6, 6],
    );
    ok(
        Conv,
        &conv([1, 1], [1; 4], [1, 1], 1),
        &[x, w],
        &[1],
        &[1, 4, 8, 8],
    );
    ok(
        Conv,
        &conv([2, 2], [1; 4], [1, 1], 1),
        &[x, w],
        &[1],
        &[1, 4, 4, 4],
    );
    ok(
        Conv,
        &conv([1, 2], [0; 4], [1, 1], 1),
        &[x, w],
        &[1],
        &[1, 4, 6, 3],
    );
    ok(
        Conv,
        &conv([1, 1], [1, 0, 0, 2], [1, 1], 1),
        &[x, w],
        &[1],
        &[1, 4, 7, 8],
    );
    ok(
        Conv,
        &conv([1, 1], [0; 4], [2, 1], 1),
        &[x, w],
        &[1],
        &[1, 4, 4, 6],
    );
    ok(
        Conv,
        &conv([1, 1], [0; 4], [1, 3], 1),
        &[x, w],
        &[1],
        &[1, 4, 6, 2],
    );
    // The window exactly fills the padded input: one output.
    ok(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 1),
        &[&[2, 3, 3, 3], w],
        &[1],
        &[2, 4, 1, 1],
    );
    err(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 1),
        &[&[1, 3, 2, 3], w],
        &[1],
        Mismatch,
    );
    err(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 1),
        &[&[1, 3, 3, 2], w],
        &[1],
        Mismatch,
    );
    err(
        Conv,
        &conv([1, 1], [0; 4], [2, 1], 1),
        &[&[1, 3, 4, 8], w],
        &[1],
        Mismatch,
    );
    // Groups: input channels = weight inputs × groups; outputs divisible by groups.
    ok(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 3),
        &[&[1, 6, 5, 5], &[6, 2, 3, 3]],
        &[1],
        &[1, 6, 3, 3],
    );
    err(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 3),
        &[&[1, 6, 5, 5], &[4, 2, 3, 3]],
        &[1],
        Mismatch,
    );
    err(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 2),
        &[&[1, 6, 5, 5], &[6, 2, 3, 3]],
        &[1],
        Mismatch,
    );
    err(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 1),
        &[&[1, 4, 8, 8], w],
        &[1],
        Mismatch,
    );
    // Zero or negative words.
    for bad in [
        conv([0, 1], [0; 4], [1, 1], 1),
        conv([1, 0], [0; 4], [1, 1], 1),
        conv([1, 1], [0; 4], [0, 1], 1),
        conv([1, 1], [0; 4], [1, 0], 1),
        conv([1, 1], [0; 4], [1, 1], 0),
        conv([1, 1], [-1, 0, 0, 0], [1, 1], 1),
        conv([1, 1], [0, 0, 0, -1], [1, 1], 1),
        conv([-1, 1], [0; 4], [1, 1], 1),
    ] {
        err(Conv, &bad, &[x, w], &[1], Param);
    }
    err(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 1),
        &[x, &[4, 3, 0, 3]],
        &[1],
        Param,
    );
    err(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 1),
        &[x, &[4, 3, 3, 0]],
        &[1],
        Param,
    );
    err(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 1),
        &[&[3, 8, 8], w],
        &[1],
        Rank,
    );
    err(
        Conv,
        &conv([1, 1], [0; 4], [1, 1], 1),
        &[x, &[4, 3, 3]],
        &[1],
        Rank,
    );
    err(Conv, &conv([1, 1], [0; 4], [1, 1], 1), &[x], &[1], Mismatch);
    // Bias and the second extra input hold one value per output channel.
    let p = conv([1, 1], [0; 4], [1, 1], 1);
    ok(Conv, &p, &[x, w, &[4]], &[1], &[1, 4, 6, 6]);
    ok(Conv, &p, &[x, w, &[4], &[1, 4]], &[1], &[1, 4, 6, 6]);
    err(Conv, &p, &[x, w, &[5]], &[1], Mismatch);
    err(Conv, &p, &[x, w, &[4], &[3]], &[1], Mismatch);
    // A Conv's multipliers may hold a second row (a folded PRelu), its bias never.
    ok(Conv, &p, &[x, w, &[4], &[2, 4]], &[1], &[1, 4, 6, 6]);
    err(Conv, &p, &[x, w, &[8], &[4]], &[1], Mismatch);
    err(Conv, &p, &[x, w, &[4], &[3, 4]], &[1], Mismatch);
    err(Conv, &p, &[x, w, &[4], &[7]], &[1], Mismatch);
    let absent = infer_output(
        Conv,
        &p,
        &[Some(s(x)), Some(s(w)), None, Some(s(&[4]))],
        0,
        &s(&[1]),
    );
    assert_eq!(absent.map(|r| r.dims().to_vec()), Ok(vec![1, 4, 6, 6]));
}

#[test]
fn conv_transpose_output_sizes() {
    use OpKind::ConvTranspose as T;
    let x: &[usize] = &[1, 4, 5, 5];
    let w: &[usize] = &[4, 2, 3, 3];
    // One multiplier per output channel; the Conv's second row is not a ConvTranspose's.
    let p0 = deconv([1, 1], [0; 4], [1, 1], 1, [0, 0]);
    ok(T, &p0, &[x, w, &[2], &[2]], &[1], &[1, 2, 7, 7]);
    err(T, &p0, &[x, w, &[2], &[2, 2]], &[1], Mismatch);
    // s·(h − 1) + output padding + d·(k − 1) + 1 − pads.
    ok(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 1, [0, 0]),
        &[x, w],
        &[1],
        &[1, 2, 7, 7],
    );
    ok(
        T,
        &deconv([2, 2], [0; 4], [1, 1], 1, [0, 0]),
        &[x, w],
        &[1],
        &[1, 2, 11, 11],
    );
    ok(
        T,
        &deconv([2, 2], [1; 4], [1, 1], 1, [0, 0]),
        &[x, w],
        &[1],
        &[1, 2, 9, 9],
    );
    ok(
        T,
        &deconv([2, 2], [1, 0, 1, 2], [1, 1], 1, [1, 0]),
        &[x, w],
        &[1],
        &[1, 2, 10, 9],
    );
    ok(
        T,
        &deconv([2, 1], [0; 4], [1, 1], 1, [0, 1]),
        &[x, w],
        &[1],
        &[1, 2, 11, 8],
    );
    ok(
        T,
        &deconv([1, 1], [0; 4], [2, 1], 1, [0, 0]),
        &[x, w],
        &[1],
        &[1, 2, 9, 7],
    );
    ok(
        T,
        &deconv([1, 1], [0; 4], [1, 3], 1, [0, 0]),
        &[x, w],
        &[1],
        &[1, 2, 7, 11],
    );
    // Groups multiply the output channels.
    ok(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 2, [0, 0]),
        &[x, &[4, 3, 3, 3]],
        &[1],
        &[1, 6, 7, 7],
    );
    err(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 3, [0, 0]),
        &[x, &[4, 1, 3, 3]],
        &[1],
        Mismatch,
    );
    err(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 1, [0, 0]),
        &[x, &[3, 2, 3, 3]],
        &[1],
        Mismatch,
    );
    // An empty input plane has no transposed output.
    err(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 1, [0, 0]),
        &[&[1, 4, 0, 5], w],
        &[1],
        Mismatch,
    );
    err(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 1, [0, 0]),
        &[&[1, 4, 5, 0], w],
        &[1],
        Mismatch,
    );
    // Pads that remove everything.
    let one: &[usize] = &[1, 4, 1, 1];
    let k1: &[usize] = &[4, 2, 1, 1];
    ok(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 1, [0, 0]),
        &[one, k1],
        &[1],
        &[1, 2, 1, 1],
    );
    err(
        T,
        &deconv([1, 1], [1, 0, 0, 0], [1, 1], 1, [0, 0]),
        &[one, k1],
        &[1],
        Mismatch,
    );
    err(
        T,
        &deconv([1, 1], [0, 0, 0, 1], [1, 1], 1, [0, 0]),
        &[one, k1],
        &[1],
        Mismatch,
    );
    ok(
        T,
        &deconv([1, 1], [1, 0, 0, 0], [1, 1], 1, [1, 0]),
        &[one, k1],
        &[1],
        &[1, 2, 1, 1],
    );
    err(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 1, [-1, 0]),
        &[x, w],
        &[1],
        Param,
    );
    err(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 1, [0, -1]),
        &[x, w],
        &[1],
        Param,
    );
    err(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 1, [0, 0]),
        &[x, w, &[3]],
        &[1],
        Mismatch,
    );
    ok(
        T,
        &deconv([1, 1], [0; 4], [1, 1], 1, [0, 0]),
        &[x, w, &[2]],
        &[1],
        &[1, 2, 7, 7],
    );
}

#[test]
fn fully_connected_and_batch_matmul() {
    use OpKind::{BatchMatMul as B, FullyConnected as F};
    ok(F, &[0, 0], &[&[2, 8], &[5, 8]], &[1], &[2, 5]);
    ok(F, &[0, 0], &[&[3, 2, 8], &[5, 8]], &[1], &[3, 2, 5]);
    ok(F, &[0, 0], &[&[8], &[5, 8]], &[1], &[5]);
    err(F, &[0, 0], &[&[2, 8], &[5, 7]], &[1], Mismatch);
    err(F, &[0, 0], &[&[2, 8], &[1, 5, 8]], &[1], Mismatch);
    err(F, &[0, 0], &[&[], &[5, 8]], &[1], Mismatch);
    err(F, &[0, 0], &[&[2, 8]], &[1], Mismatch);
    ok(F, &[0, 0], &[&[2, 8], &[5, 8], &[5]], &[1], &[2, 5]);
    ok(F, &[0, 0], &[&[2, 8], &[5, 8], &[5], &[5]], &[1], &[2, 5]);
    err(F, &[0, 0], &[&[2, 8], &[5, 8], &[8]], &[1], Mismatch);
    err(F, &[0, 0], &[&[2, 8], &[5, 8], &[5], &[4]], &[1], Mismatch);
    // Only a Conv takes a second row of multipliers.
    err(
        F,
        &[0, 0],
        &[&[2, 8], &[5, 8], &[5], &[2, 5]],
        &[1],
        Mismatch,
    );

    ok(B, &[], &[&[2, 3, 4], &[4, 5]], &[1], &[2, 3, 5]);
    ok(B, &[], &[&[3, 4], &[2, 4, 5]], &[1], &[2, 3, 5]);
    ok(B, &[], &[&[2, 1, 3, 4], &[5, 4, 6]], &[1], &[2, 5, 3, 6]);
    ok(
        B,
        &[],
        &[&[1, 1, 1, 1, 3, 4], &[4, 2]],
        &[1],
        &[1, 1, 1, 1, 3, 2],
    );
    err(B, &[], &[&[2, 3, 4], &[5, 5]], &[1], Mismatch);
    err(B, &[], &[&[2, 3, 4], &[3, 4, 5]], &[1], Mismatch);
    err(B, &[], &[&[4], &[4, 5]], &[1], Rank);
    err(B, &[], &[&[3, 4], &[4]], &[1], Rank);
}

#[test]
fn element_wise_broadcast() {
    for k in [
        OpKind::Add,
        OpKind::Sub,
        OpKind::Mul,
        OpKind::Div,
        OpKind::PRelu,
    ] {
        ok(k, &[0, 0], &[&[2, 1, 4], &[3, 1]], &[1], &[2, 3, 4]);
        ok(k, &[0, 0], &[&[5], &[]], &[1], &[5]);
        err(k, &[0, 0], &[&[2, 3], &[4]], &[1], Mismatch);
        err(k, &[0, 0], &[&[2, 3]], &[1], Mismatch);
    }
    for f in [BinaryFn::Pow, BinaryFn::Less, BinaryFn::Xor, BinaryFn::Fmod] {
        ok(
            OpKind::Binary,
            &[f as i32],
            &[&[2, 1], &[1, 3]],
            &[1],
            &[2, 3],
        );
        err(
            OpKind::Binary,
            &[f as i32],
            &[&[2, 2], &[3]],
            &[1],
            Mismatch,
        );
    }
    err(OpKind::Binary, &[13], &[&[2], &[2]], &[1], Param);
    err(OpKind::Binary, &[-1], &[&[2], &[2]], &[1], Param);
    ok(
        OpKind::Where,
        &[],
        &[&[2, 1], &[1, 3], &[2, 3]],
        &[1],
        &[2, 3],
    );
    ok(
        OpKind::Where,
        &[],
        &[&[4, 1, 1], &[3], &[2, 1]],
        &[1],
        &[4, 2, 3],
    );
    err(OpKind::Where, &[], &[&[4], &[3], &[3]], &[1], Mismatch);
    err(OpKind::Where, &[], &[&[1], &[2], &[3]], &[1], Mismatch);
    err(OpKind::Where, &[], &[&[1], &[2]], &[1], Mismatch);
}

#[test]
fn concat_reshape_transpose() {
    use OpKind::{Concat as C, Reshape as R, Transpose as T};
    ok(C, &[1], &[&[1, 2, 4], &[1, 3, 4]], &[1], &[1, 5, 4]);
    ok(C, &[0], &[&[1, 4], &[2, 4], &[3, 4]], &[1], &[6, 4]);
    ok(C, &[2], &[&[1, 4, 1]], &[1], &[1, 4, 1]);
    err(C, &[3], &[&[1, 2, 4], &[1, 3, 4]], &[1], Param);
    err(C, &[-1], &[&[1, 2, 4], &[1, 3, 4]], &[1], Param);
    err(C, &[1], &[&[1, 2, 4], &[1, 3, 5]], &[1], Mismatch);
    err(C, &[1], &[&[1, 2, 4], &[2, 3, 4]], &[1], Mismatch);
    err(C, &[1], &[&[1, 2, 4], &[1, 3]], &[1], Mismatch);
    let missing = infer_output(C, &[0], &[Some(s(&[2])), None], 0, &s(&[2]));
    assert_eq!(missing, Err(Mismatch));

    ok(R, &[], &[&[2, 3, 4]], &[6, 4], &[6, 4]);
    ok(R, &[], &[&[2, 0]], &[0, 7], &[0, 7]);
    err(R, &[], &[&[2, 3, 4]], &[6, 5], Mismatch);

    ok(T, &[2, 0, 1], &[&[2, 3, 4]], &[4, 2, 3], &[4, 2, 3]);
    ok(T, &[0, 1], &[&[2, 3]], &[2, 3], &[2, 3]);
    err(T, &[2, 2, 1], &[&[2, 3, 4]], &[4, 4, 3], Param);
    err(T, &[3, 0, 1], &[&[2, 3, 4]], &[4, 2, 3], Param);
    err(T, &[-1, 0, 1], &[&[2, 3, 4]], &[4, 2, 3], Param);
    err(T, &[1, 0], &[&[2, 3, 4]], &[3, 2], Rank);
    err(T, &[1, 0], &[&[2, 3, 4]], &[3, 2, 4], Param);
}

#[test]
fn slice_split_pad() {
    use OpKind::{Pad as P, Slice as Sl, Split as Sp};
    // Slice words: starts, then steps; the declared shape gives the counts.
    ok(Sl, &[2, 3], &[&[10]], &[3], &[3]);
    // Ending exactly at index 0, forwards and backwards.
    ok(Sl, &[0, 1], &[&[10]], &[1], &[1]);
    ok(Sl, &[9, -1], &[&[10]], &[10], &[10]);
    err(Sl, &[2, 3], &[&[10]], &[4], Param);
    ok(Sl, &[9, 1], &[&[10]], &[1], &[1]);
    err(Sl, &[9, 1], &[&[10]], &[2], Param);
    ok(Sl, &[9, -2], &[&[10]], &[5], &[5]);
    err(Sl, &[9, -2], &[&[10]], &[6], Param);
    err(Sl, &[2, 0], &[&[10]], &[1], Param);
    err(Sl, &[-1, 1], &[&[10]], &[1], Param);
    err(Sl, &[10, 1], &[&[10]], &[1], Param);
    ok(Sl, &[10, 1], &[&[10]], &[0], &[0]);
    ok(Sl, &[0, 1], &[&[0]], &[0], &[0]);
    // An empty slice may start anywhere at or past 0.
    ok(Sl, &[1, 1], &[&[0]], &[0], &[0]);
    ok(Sl, &[12, -1], &[&[10]], &[0], &[0]);
    ok(Sl, &[0, 1, 1, 2], &[&[4, 6]], &[4, 3], &[4, 3]);
    err(Sl, &[0, 1, 1, 2], &[&[4, 6]], &[4, 4], Param);
    err(Sl, &[0, 1], &[&[4, 6]], &[4], Rank);

    // Split words: axis, then one offset per output.
    let p = [0, 0, 2];
    ok(Sp, &p, &[&[6, 2]], &[2, 2], &[2, 2]);
    assert_eq!(infer_out(Sp, &p, &[&[6, 2]], 1, &[4, 2]), Ok(vec![4, 2]));
    assert_eq!(infer_out(Sp, &p, &[&[6, 2]], 1, &[5, 2]), Err(Param));
    assert_eq!(infer_out(Sp, &p, &[&[6, 2]], 2, &[1, 2]), Err(Param));
    err(Sp, &p, &[&[6, 2]], &[2, 3], Mismatch);
    err(Sp, &[2, 0], &[&[6, 2]], &[2, 2], Param);
    err(Sp, &[0, -1], &[&[6, 2]], &[2, 2], Param);
    err(Sp, &[0, 0], &[&[6, 2]], &[2], Param);
    ok(Sp, &[1, 1], &[&[6, 2]], &[6, 1], &[6, 1]);
    err(Sp, &[1, 1], &[&[6, 2]], &[6, 2], Param);

    // Pad words: mode (0 constant, 1 reflect, 2 edge), value, one begin per axis.
    ok(P, &[0, 0, 1, 0], &[&[3, 4]], &[5, 6], &[5, 6]);
    err(P, &[0, 0, 1, 0], &[&[3, 4]], &[3, 6], Param);
    err(P, &[0, 0, -1, 0], &[&[3, 4]], &[3, 6], Param);
    err(P, &[3, 0, 0, 0], &[&[3, 4]], &[3, 4], Param);
    err(P, &[-1, 0, 0, 0], &[&[3, 4]], &[3, 4], Param);
    err(P, &[0, 0, 0, 0], &[&[3, 4]], &[3], Param);
    // Reflect: each side under the axis length.
    ok(P, &[1, 0, 2, 0], &[&[3, 4]], &[7, 4], &[7, 4]);
    err(P, &[1, 0, 3, 0], &[&[3, 4]], &[6, 4], Param);
    err(P, &[1, 0, 0, 0], &[&[3, 4]], &[6, 4], Param);
    ok(P, &[1, 0, 0, 0], &[&[1, 4]], &[1, 4], &[1, 4]);
    // An empty axis pads only in constant mode.
    ok(P, &[0, 0, 1, 0], &[&[0, 4]], &[2, 4], &[2, 4]);
    err(P, &[2, 0, 1, 0], &[&[0, 4]], &[1, 4], Param);
    err(P, &[2, 0, 0, 0], &[&[0, 4]], &[1, 4], Param);
    ok(P, &[2, 0, 0, 0], &[&[0, 4]], &[0, 4], &[0, 4]);
    ok(P, &[2, 0, 0, 2], &[&[1, 4]], &[3, 7], &[3, 7]);
}

/// Pool words: kernel, strides, pads (t, l, b, r), dilations (MaxPool only).
fn pool(k: [i32; 2], st: [i32; 2], pads: [i32; 4], d: [i32; 2]) -> Vec<i32> {
    let [pt, pl, pb, pr] = pads;
    vec![k[0], k[1], st[0], st[1], pt, pl, pb, pr, d[0], d[1]]
}

#[test]
fn pooling_floor_and_ceil_sizes() {
    use OpKind::{AveragePool as A, GlobalAveragePool as G, MaxPool as M};
    let x: &[usize] = &[1, 2, 8, 8];
    ok(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x],
        &[1, 2, 4, 4],
        &[1, 2, 4, 4],
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x],
        &[1, 2, 5, 4],
        Mismatch,
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x],
        &[1, 2, 4, 3],
        Mismatch,
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x],
        &[1, 2, 4, 5],
        Mismatch,
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x],
        &[1, 2, 3, 4],
        Mismatch,
    );
    // A window exactly as large as the (padded) input: one output.
    ok(
        M,
        &pool([2, 2], [1, 1], [0; 4], [1, 1]),
        &[&[1, 1, 2, 2]],
        &[1, 1, 1, 1],
        &[1, 1, 1, 1],
    );
    ok(
        A,
        &pool([3, 3], [1, 1], [1, 1, 0, 0], [1, 1])[..9],
        &[&[1, 1, 2, 2]],
        &[1, 1, 1, 1],
        &[1, 1, 1, 1],
    );
    // 7 wide, window 2, stride 2: floor 3, ceil 4.
    let x7: &[usize] = &[1, 2, 7, 7];
    ok(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x7],
        &[1, 2, 3, 4],
        &[1, 2, 3, 4],
    );
    ok(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x7],
        &[1, 2, 4, 3],
        &[1, 2, 4, 3],
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x7],
        &[1, 2, 5, 3],
        Mismatch,
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x7],
        &[1, 2, 2, 3],
        Mismatch,
    );
    // A window as large as the input: one output each way; a second one would start
    // inside the input but run past its end (the ceil bound, not the start rule).
    let x4: &[usize] = &[1, 1, 4, 4];
    for y in [[1, 1, 1, 2], [1, 1, 2, 1]] {
        err(
            M,
            &pool([4, 4], [1, 1], [0; 4], [1, 1]),
            &[x4],
            &y,
            Mismatch,
        );
    }
    // The ceil size is refused when its last window would start in the bottom padding.
    ok(
        M,
        &pool([3, 3], [2, 2], [0, 0, 2, 2], [1, 1]),
        &[x4],
        &[1, 1, 2, 2],
        &[1, 1, 2, 2],
    );
    err(
        M,
        &pool([3, 3], [2, 2], [0, 0, 2, 0], [1, 1]),
        &[x4],
        &[1, 1, 3, 1],
        Mismatch,
    );
    err(
        M,
        &pool([3, 3], [2, 2], [0, 0, 0, 2], [1, 1]),
        &[x4],
        &[1, 1, 1, 3],
        Mismatch,
    );
    // Top/left padding must be under the window.
    ok(
        M,
        &pool([3, 3], [1, 1], [2, 2, 0, 0], [1, 1]),
        &[x],
        &[1, 2, 8, 8],
        &[1, 2, 8, 8],
    );
    err(
        M,
        &pool([2, 2], [1, 1], [2, 0, 0, 0], [1, 1]),
        &[x],
        &[1, 2, 9, 7],
        Mismatch,
    );
    err(
        M,
        &pool([2, 2], [1, 1], [0, 2, 0, 0], [1, 1]),
        &[x],
        &[1, 2, 7, 9],
        Mismatch,
    );
    // Dilation widens the window.
    ok(
        M,
        &pool([3, 3], [1, 1], [0; 4], [2, 1]),
        &[x],
        &[1, 2, 4, 6],
        &[1, 2, 4, 6],
    );
    err(
        M,
        &pool([3, 3], [1, 1], [0; 4], [4, 1]),
        &[x],
        &[1, 2, 1, 6],
        Mismatch,
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[&[1, 2, 1, 8]],
        &[1, 2, 1, 4],
        Mismatch,
    );
    for bad in [
        pool([0, 2], [2, 2], [0; 4], [1, 1]),
        pool([2, 0], [2, 2], [0; 4], [1, 1]),
        pool([2, 2], [0, 2], [0; 4], [1, 1]),
        pool([2, 2], [2, 0], [0; 4], [1, 1]),
        pool([2, 2], [2, 2], [0; 4], [0, 1]),
        pool([2, 2], [2, 2], [0; 4], [1, 0]),
        pool([2, 2], [2, 2], [0, -1, 0, 0], [1, 1]),
    ] {
        err(M, &bad, &[x], &[1, 2, 4, 4], Param);
    }
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x],
        &[2, 2, 4, 4],
        Mismatch,
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x],
        &[1, 3, 4, 4],
        Mismatch,
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[x],
        &[1, 2, 4, 4, 1],
        Mismatch,
    );
    err(
        M,
        &pool([2, 2], [2, 2], [0; 4], [1, 1]),
        &[&[2, 8, 8]],
        &[1, 2, 4, 4],
        Rank,
    );
    // AveragePool has no dilation words: its windows are always dense.
    let ap = &pool([3, 3], [1, 1], [0; 4], [1, 1])[..8];
    ok(A, ap, &[x], &[1, 2, 6, 6], &[1, 2, 6, 6]);
    let mut ap9 = ap.to_vec();
    ap9.push(-7);
    ok(A, &ap9, &[x], &[1, 2, 6, 6], &[1, 2, 6, 6]);
    err(A, ap, &[x], &[1, 2, 4, 6], Mismatch);

    ok(G, &[], &[&[1, 3, 5, 5]], &[1], &[1, 3, 1, 1]);
    ok(G, &[], &[&[2, 3, 5]], &[1], &[2, 3, 1]);
    err(G, &[], &[&[2, 3]], &[1], Rank);
}

#[test]
fn reductions() {
    use OpKind::{Reduce as R, ReduceMean as M};
    ok(M, &[0b010, 1], &[&[2, 3, 4]], &[1], &[2, 1, 4]);
    ok(M, &[0b010, 0], &[&[2, 3, 4]], &[1], &[2, 4]);
    ok(M, &[0b101, 0], &[&[2, 3, 4]], &[1], &[3]);
    ok(M, &[0b111, 1], &[&[2, 3, 4]], &[1], &[1, 1, 1]);
    err(M, &[0, 1], &[&[2, 3, 4]], &[1], Param);
    err(M, &[0b1000, 1], &[&[2, 3, 4]], &[1], Param);

    let sum = ReduceFn::Sum as i32;
    ok(R, &[sum, 0b10, 1, 0], &[&[2, 3]], &[1], &[2, 1]);
    ok(R, &[sum, 0b11, 0, 0], &[&[2, 3]], &[1], &[]);
    ok(R, &[sum, 0b11, 0, 1], &[&[2, 3]], &[1], &[]);
    err(R, &[sum, 0b10, 2, 0], &[&[2, 3]], &[1], Param);
    err(R, &[sum, 0b10, -1, 0], &[&[2, 3]], &[1], Param);
    err(R, &[sum, 0b10, 0, 2], &[&[2, 3]], &[1], Param);
    err(R, &[sum, 0b100, 0, 0], &[&[2, 3]], &[1], Param);
    err(R, &[sum, 0, 0, 0], &[&[2, 3]], &[1], Param);
    err(R, &[13, 0b1, 0, 0], &[&[2, 3]], &[1], Param);
    // ArgMax/ArgMin: one axis with at least one element.
    let am = ReduceFn::ArgMax as i32;
    ok(R, &[am, 0b10, 0, 0], &[&[2, 3]], &[1], &[2]);
    ok(
        R,
        &[ReduceFn::ArgMin as i32, 0b01, 1, 0],
        &[&[2, 3]],
        &[1],
        &[1, 3],
    );
    err(R, &[am, 0b11, 0, 0], &[&[2, 3]], &[1], Param);
    err(R, &[am, 0b10, 0, 0], &[&[2, 0]], &[1], Param);
    err(R, &[am, 0b100, 0, 0], &[&[2, 3]], &[1], Param);
    // TopK: word 2 is k, at most the axis length; word 3 the order.
    for f in [ReduceFn::TopK, ReduceFn::TopKIndex] {
        let f = f as i32;
        ok(R, &[f, 0b10, 2, 1], &[&[4, 5]], &[1], &[4, 2]);
        ok(R, &[f, 0b10, 5, 0], &[&[4, 5]], &[1], &[4, 5]);
        ok(R, &[f, 0b01, 0, 0], &[&[4, 5]], &[1], &[0, 5]);
        err(R, &[f, 0b10, 6, 0], &[&[4, 5]], &[1], Param);
        err(R, &[f, 0b10, -1, 0], &[&[4, 5]], &[1], Param);
        err(R, &[f, 0b11, 1, 0], &[&[4, 5]], &[1], Param);
        err(R, &[f, 0b100, 1, 0], &[&[4, 5]], &[1], Param);
        err(R, &[f, 0b10, 1, 2], &[&[4, 5]], &[1], Param);
        err(R, &[f, 0b10, 1, -1], &[&[4, 5]], &[1], Param);
    }
}

#[test]
fn resize_unary_lut_softmax_layer_norm() {
    use OpKind::{LayerNorm as L, Lut, Resize as Rz, Softmax as Sm, Unary as U};
    let two = 2.0f32.to_bits() as i32;
    let x: &[usize] = &[1, 3, 4, 4];
    ok(Rz, &[1, 3, 3, two, two], &[x], &[1, 3, 8, 8], &[1, 3, 8, 8]);
    ok(Rz, &[0, 0, 0, two, two], &[x], &[1, 3, 8, 8], &[1, 3, 8, 8]);
    for bad in [
        [2, 0, 0],
        [-1, 0, 0],
        [0, 4, 0],
        [0, -1, 0],
        [0, 0, 4],
        [0, 0, -1],
    ] {
        err(
            Rz,
            &[bad[0], bad[1], bad[2], two, two],
            &[x],
            &[1, 3, 8, 8],
            Param,
        );
    }
    for scale in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let b = scale.to_bits() as i32;
        err(Rz, &[0, 0, 0, b, two], &[x], &[1, 3, 8, 8], Param);
        err(Rz, &[0, 0, 0, two, b], &[x], &[1, 3, 8, 8], Param);
    }
    err(Rz, &[0, 0, 0, two, two], &[x], &[2, 3, 8, 8], Mismatch);
    err(Rz, &[0, 0, 0, two, two], &[x], &[1, 4, 8, 8], Mismatch);
    err(Rz, &[0, 0, 0, two, two], &[x], &[1, 3, 8], Mismatch);
    err(Rz, &[0, 0, 0, two, two], &[&[3, 4, 4]], &[1, 3, 8, 8], Rank);

    ok(U, &[UnaryFn::Silu as i32, 0, 0], &[&[2, 5]], &[1], &[2, 5]);
    ok(U, &[0, 0, 0], &[&[2, 5]], &[1], &[2, 5]);
    err(U, &[42, 0, 0], &[&[2, 5]], &[1], Param);
    err(U, &[-1, 0, 0], &[&[2, 5]], &[1], Param);

    ok(Lut, &[-1], &[&[2, 3, 4], &[256]], &[1], &[2, 3, 4]);
    ok(Lut, &[1], &[&[2, 3, 4], &[3, 256]], &[1], &[2, 3, 4]);
    ok(Lut, &[2], &[&[2, 3, 4], &[1024]], &[1], &[2, 3, 4]);
    err(Lut, &[-1], &[&[2, 3, 4], &[512]], &[1], Mismatch);
    err(Lut, &[1], &[&[2, 3, 4], &[256]], &[1], Mismatch);
    err(Lut, &[3], &[&[2, 3, 4], &[256]], &[1], Param);
    err(Lut, &[-2], &[&[2, 3, 4], &[256]], &[1], Param);
    err(Lut, &[-1], &[&[2, 3, 4]], &[1], Mismatch);

    // Softmax words: outer, n, inner (their product is the input's size), table flag.
    ok(Sm, &[2, 3, 4, 0], &[&[2, 3, 4]], &[1], &[2, 3, 4]);
    ok(Sm, &[6, 4, 1, 1], &[&[2, 3, 4], &[256]], &[1], &[2, 3, 4]);
    err(Sm, &[6, 4, 1, 1], &[&[2, 3, 4], &[255]], &[1], Mismatch);
    err(Sm, &[6, 4, 1, 1], &[&[2, 3, 4]], &[1], Mismatch);
    err(Sm, &[2, 3, 3, 0], &[&[2, 3, 4]], &[1], Param);
    err(Sm, &[1, 0, 1, 0], &[&[0]], &[1], Param);
    ok(Sm, &[0, 1, 1, 0], &[&[0]], &[1], &[0]);
    err(Sm, &[2, 3, 4, 2], &[&[2, 3, 4]], &[1], Param);
    err(Sm, &[2, 3, 4, -1], &[&[2, 3, 4]], &[1], Param);
    err(Sm, &[-2, -3, 4, 0], &[&[2, 3, 4]], &[1], Param);

    // LayerNorm: scale and bias hold the normalized extent (axis to the end).
    ok(L, &[2, 0], &[&[2, 3, 4], &[4]], &[1], &[2, 3, 4]);
    ok(L, &[1, 0], &[&[2, 3, 4], &[3, 4], &[12]], &[1], &[2, 3, 4]);
    err(L, &[2, 0], &[&[2, 3, 4], &[3]], &[1], Mismatch);
    err(L, &[2, 0], &[&[2, 3, 4], &[4], &[5]], &[1], Mismatch);
    err(L, &[3, 0], &[&[2, 3, 4], &[4]], &[1], Param);
    err(L, &[-1, 0], &[&[2, 3, 4], &[4]], &[1], Param);

    for k in [OpKind::Quantize, OpKind::Dequantize] {
        ok(k, &[], &[&[2, 7]], &[1], &[2, 7]);
    }
}

#[test]
fn gather_and_tile() {
    use OpKind::{Gather as G, Tile as T};
    ok(G, &[1, 0], &[&[3, 5, 2], &[4, 6]], &[1], &[3, 4, 6, 2]);
    ok(G, &[0, 0], &[&[3, 5], &[]], &[1], &[5]);
    ok(G, &[2, 0], &[&[3, 5, 2], &[7]], &[1], &[3, 5, 7]);
    ok(
        G,
        &[0, 0],
        &[&[3, 1, 1, 1], &[2, 2, 2]],
        &[1],
        &[2, 2, 2, 1, 1, 1],
    );
    err(G, &[0, 0], &[&[3, 1, 1, 1, 1], &[2, 2, 2]], &[1], Rank);
    err(G, &[3, 0], &[&[3, 5, 2], &[4]], &[1], Param);
    err(G, &[-1, 0], &[&[3, 5, 2], &[4]], &[1], Param);
    err(G, &[1, 0], &[&[3, 0, 2], &[4]], &[1], Mismatch);
    ok(G, &[1, 0], &[&[3, 0, 2], &[0]], &[1], &[3, 0, 2]);
    err(G, &[1, 2], &[&[3, 5], &[3, 5]], &[1], Param);
    // GatherElements: the indices' shape, no larger than x off the axis.
    ok(G, &[1, 1], &[&[3, 5], &[2, 7]], &[1], &[2, 7]);
    ok(G, &[1, 1], &[&[3, 5], &[3, 1]], &[1], &[3, 1]);
    err(G, &[1, 1], &[&[3, 5], &[4, 1]], &[1], Mismatch);
    err(G, &[0, 1], &[&[3, 5], &[1, 6]], &[1], Mismatch);
    err(G, &[1, 1], &[&[3, 5], &[3]], &[1], Rank);

    ok(T, &[], &[&[2, 3]], &[4, 3], &[4, 3]);
    ok(T, &[], &[&[2, 3]], &[2, 9], &[2, 9]);
    ok(T, &[], &[&[0, 3]], &[0, 6], &[0, 6]);
    err(T, &[], &[&[2, 3]], &[5, 3], Mismatch);
    err(T, &[], &[&[0, 3]], &[1, 6], Mismatch);
    err(T, &[], &[&[2, 3]], &[2, 3, 1], Rank);
}

#[test]
fn a_kind_outside_the_linked_set_is_refused() {
    const CONV_ONLY: Kinds = 1 << OpKind::Conv as u16;
    const PLAIN_ONLY: Kinds = 1 << OpKind::Gather as u16;
    let x = Some(s(&[1, 3, 8, 8]));
    let w = Some(s(&[4, 3, 3, 3]));
    let p = conv([1, 1], [0; 4], [1, 1], 1);
    let conv_in = |k| infer_output_in::<CONV_ONLY>(k, &p, &[x, w], 0, &s(&[1]));
    assert_eq!(
        conv_in(OpKind::Conv).map(|r| r.dims().to_vec()),
        Ok(vec![1, 4, 6, 6])
    );
    assert_eq!(conv_in(OpKind::ConvTranspose), Err(Param));
    let two = [Some(s(&[2, 3])), Some(s(&[2, 3]))];
    for k in [OpKind::Add, OpKind::FullyConnected, OpKind::Softmax] {
        assert_eq!(
            infer_output_in::<CONV_ONLY>(k, &[0, 0, 0, 0], &two, 0, &s(&[2, 3])),
            Err(Param)
        );
    }
    let gi = [Some(s(&[3, 5])), Some(s(&[2]))];
    assert!(infer_output_in::<PLAIN_ONLY>(OpKind::Gather, &[0, 0], &gi, 0, &s(&[1])).is_ok());
    assert_eq!(
        infer_output_in::<PLAIN_ONLY>(OpKind::Tile, &[], &gi, 0, &s(&[3, 5])),
        Err(Param)
    );
    assert!(infer_output_in::<ALL_KINDS>(OpKind::Tile, &[], &gi, 0, &s(&[3, 5])).is_ok());
    // No first input at all.
    assert_eq!(
        infer_output(OpKind::Unary, &[0, 0, 0], &[], 0, &s(&[1])),
        Err(Mismatch)
    );
    assert_eq!(
        infer_output(OpKind::Unary, &[0, 0, 0], &[None], 0, &s(&[1])),
        Err(Mismatch)
    );
}

/// Every kind's rule answers only where the kind is linked: a valid case of each kind is
/// accepted with all kinds and refused (`Param`, not linked) in a build with only another.
#[test]
fn each_rule_is_linked_only_with_its_kind() {
    const ONLY_TRANSPOSE: Kinds = 1 << OpKind::Transpose as u16;
    const ONLY_WHERE: Kinds = 1 << OpKind::Where as u16;
    let two = 2.0f32.to_bits() as i32;
    let x4: &[usize] = &[1, 2, 8, 8];
    type Case<'a> = (OpKind, Vec<i32>, Vec<&'a [usize]>, &'a [usize]);
    let cases: Vec<Case> = vec![
        (
            OpKind::Conv,
            conv([1, 1], [0; 4], [1, 1], 1),
            vec![&[1, 3, 8, 8], &[4, 3, 3, 3]],
            &[1],
        ),
        (
            OpKind::ConvTranspose,
            deconv([1, 1], [0; 4], [1, 1], 1, [0, 0]),
            vec![&[1, 4, 5, 5], &[4, 2, 3, 3]],
            &[1],
        ),
        (
            OpKind::FullyConnected,
            vec![0, 0],
            vec![&[2, 8], &[5, 8]],
            &[1],
        ),
        (OpKind::BatchMatMul, vec![], vec![&[2, 3, 4], &[4, 5]], &[1]),
        (OpKind::Add, vec![0, 0], vec![&[2, 3], &[3]], &[1]),
        (OpKind::Sub, vec![0, 0], vec![&[2, 3], &[3]], &[1]),
        (OpKind::Mul, vec![0, 0], vec![&[2, 3], &[3]], &[1]),
        (OpKind::Div, vec![0, 0], vec![&[2, 3], &[3]], &[1]),
        (OpKind::PRelu, vec![0, 0], vec![&[2, 3], &[3]], &[1]),
        (OpKind::Concat, vec![0], vec![&[1, 4], &[2, 4]], &[1]),
        (OpKind::Reshape, vec![], vec![&[2, 3]], &[6]),
        (OpKind::Slice, vec![0, 1], vec![&[4]], &[2]),
        (OpKind::Split, vec![0, 0], vec![&[4, 2]], &[2, 2]),
        (OpKind::Pad, vec![0, 0, 1], vec![&[3]], &[4]),
        (
            OpKind::MaxPool,
            pool([2, 2], [2, 2], [0; 4], [1, 1]),
            vec![x4],
            &[1, 2, 4, 4],
        ),
        (
            OpKind::AveragePool,
            pool([2, 2], [2, 2], [0; 4], [1, 1])[..8].to_vec(),
            vec![x4],
            &[1, 2, 4, 4],
        ),
        (OpKind::GlobalAveragePool, vec![], vec![x4], &[1]),
        (OpKind::ReduceMean, vec![0b10, 1], vec![&[2, 3]], &[1]),
        (
            OpKind::Resize,
            vec![0, 0, 0, two, two],
            vec![&[1, 3, 4, 4]],
            &[1, 3, 8, 8],
        ),
        (OpKind::Unary, vec![1, 0, 0], vec![&[2, 3]], &[1]),
        (OpKind::Lut, vec![-1], vec![&[2, 3], &[256]], &[1]),
        (OpKind::Softmax, vec![2, 3, 1, 0], vec![&[2, 3]], &[1]),
        (OpKind::LayerNorm, vec![1, 0], vec![&[2, 3], &[3]], &[1]),
        (OpKind::Quantize, vec![], vec![&[2, 3]], &[1]),
        (OpKind::Dequantize, vec![], vec![&[2, 3]], &[1]),
        (OpKind::Binary, vec![1], vec![&[2, 3], &[3]], &[1]),
        (OpKind::Reduce, vec![0, 0b10, 1, 0], vec![&[2, 3]], &[1]),
        (OpKind::Gather, vec![0, 0], vec![&[3, 5], &[2]], &[1]),
        (OpKind::Tile, vec![], vec![&[2, 3]], &[4, 3]),
    ];
    let mut kinds: Vec<OpKind> = cases.iter().map(|c| c.0).collect();
    kinds.extend([OpKind::Transpose, OpKind::Where]);
    kinds.sort_by_key(|k| *k as u16);
    kinds.dedup();
    assert_eq!(kinds.len(), 31, "every kind has a case");
    for (kind, p, ins, declared) in &cases {
        let ins: Vec<Option<Shape>> = ins.iter().map(|d| Some(s(d))).collect();
        let d = s(declared);
        assert!(
            infer_output(*kind, p, &ins, 0, &d).is_ok(),
            "{kind:?} valid"
        );
        assert_eq!(
            infer_output_in::<ONLY_TRANSPOSE>(*kind, p, &ins, 0, &d),
            Err(Param),
            "{kind:?}"
        );
        assert_eq!(
            infer_output_in::<ONLY_WHERE>(*kind, p, &ins, 0, &d),
            Err(Param),
            "{kind:?}"
        );
    }
}

/// `Recurrent` words: cell, flags, clip, then the three activations (code, alpha, beta).
fn rec(cell: i32, flags: i32, clip: f32) -> Vec<i32> {
    use cairn_core::op::recurrent as rc;
    let mut p = vec![0i32; rc::LEN];
    p[rc::CELL] = cell;
    p[rc::FLAGS] = flags;
    p[rc::CLIP] = clip.to_bits() as i32;
    p[rc::ACTS] = UnaryFn::Sigmoid as i32;
    p[rc::ACTS + 3] = UnaryFn::Tanh as i32;
    p[rc::ACTS + 6] = UnaryFn::Tanh as i32;
    p
}

/// Output 0 of `Recurrent` with optional inputs (None: absent).
fn infer_rec(p: &[i32], ins: &[Option<&[usize]>]) -> Result<Vec<u32>, ShapeError> {
    let ins: Vec<Option<Shape>> = ins.iter().map(|d| d.map(s)).collect();
    infer_output(OpKind::Recurrent, p, &ins, 0, &s(&[1])).map(|r| r.dims().to_vec())
}

#[test]
fn recurrent_sequences() {
    use cairn_core::op::recurrent as rc;
    let inf = f32::INFINITY;
    // LSTM, hidden 5, 7 steps, batch 2: [T, B, H]; one row more with the cell state.
    let (xp, rt): (&[usize], &[usize]) = (&[7, 2, 20], &[5, 20]);
    let lstm = rec(rc::LSTM, 0, inf);
    assert_eq!(infer_rec(&lstm, &[Some(xp), Some(rt)]), Ok(vec![7, 2, 5]));
    let with_c = rec(rc::LSTM, rc::CELL_STATE_ROW | rc::REVERSE, 0.5);
    assert_eq!(infer_rec(&with_c, &[Some(xp), Some(rt)]), Ok(vec![8, 2, 5]));
    // Every optional input at its size, absent ones skipped.
    let full = [
        Some(xp),
        Some(rt),
        Some(&[20usize][..]),
        Some(&[2usize, 5][..]),
        Some(&[2usize, 5][..]),
        Some(&[15usize][..]),
    ];
    assert_eq!(infer_rec(&lstm, &full), Ok(vec![7, 2, 5]));
    let gaps = [Some(xp), Some(rt), None, None, Some(&[2usize, 5][..])];
    assert_eq!(infer_rec(&lstm, &gaps), Ok(vec![7, 2, 5]));
    // Each optional input off by one, and the main shapes.
    for (k, bad) in [(2, &[21usize][..]), (3, &[2, 6]), (4, &[3, 5]), (5, &[14])] {
        let mut ins = full;
        ins[k] = Some(bad);
        assert_eq!(infer_rec(&lstm, &ins), Err(Mismatch), "input {k}");
    }
    assert_eq!(
        infer_rec(&lstm, &[Some(&[7, 2, 21]), Some(rt)]),
        Err(Mismatch)
    );
    assert_eq!(infer_rec(&lstm, &[Some(xp), Some(&[5, 21])]), Err(Mismatch));
    assert_eq!(infer_rec(&lstm, &[Some(&[7, 20]), Some(rt)]), Err(Rank));
    assert_eq!(infer_rec(&lstm, &[Some(xp), Some(&[5, 20, 1])]), Err(Rank));
    assert_eq!(infer_rec(&lstm, &[Some(xp)]), Err(Mismatch));
    // A state of the right size but another rank.
    let mut ins = full;
    ins[3] = Some(&[10]);
    assert_eq!(infer_rec(&lstm, &ins), Err(Mismatch));
    // No steps; a hidden size of 0 or past the stack rows.
    assert_eq!(infer_rec(&lstm, &[Some(&[0, 2, 20]), Some(rt)]), Err(Param));
    assert_eq!(
        infer_rec(&lstm, &[Some(&[7, 2, 0]), Some(&[0, 0])]),
        Err(Param)
    );
    let h = rc::MAX_HIDDEN;
    assert_eq!(
        infer_rec(&rec(rc::RNN, 0, inf), &[Some(&[1, 1, h]), Some(&[h, h])]),
        Ok(vec![1, 1, h as u32])
    );
    assert_eq!(
        infer_rec(
            &rec(rc::RNN, 0, inf),
            &[Some(&[1, 1, h + 1]), Some(&[h + 1, h + 1])]
        ),
        Err(Param)
    );
    // GRU: three gates, linear_before_reset allowed, no cell state or peepholes.
    let gru = rec(rc::GRU, rc::LINEAR_BEFORE_RESET, inf);
    let (gx, gr): (&[usize], &[usize]) = (&[3, 1, 12], &[4, 12]);
    assert_eq!(infer_rec(&gru, &[Some(gx), Some(gr)]), Ok(vec![3, 1, 4]));
    let c0 = [Some(gx), Some(gr), None, None, Some(&[1usize, 4][..])];
    assert_eq!(infer_rec(&gru, &c0), Err(Mismatch));
    let peep = [Some(gx), Some(gr), None, None, None, Some(&[12usize][..])];
    assert_eq!(infer_rec(&gru, &peep), Err(Mismatch));
    // Flags of another cell, unknown flags, cells and functions, and bad clips.
    for p in [
        rec(rc::GRU, rc::CELL_STATE_ROW, inf),
        rec(rc::LSTM, rc::LINEAR_BEFORE_RESET, inf),
        rec(rc::RNN, rc::LINEAR_BEFORE_RESET, inf),
        rec(rc::LSTM, 8, inf),
        rec(3, 0, inf),
        rec(-1, 0, inf),
        rec(rc::LSTM, 0, 0.0),
        rec(rc::LSTM, 0, -1.0),
        rec(rc::LSTM, 0, f32::NAN),
    ] {
        assert_eq!(infer_rec(&p, &[Some(xp), Some(rt)]), Err(Param), "{p:?}");
    }
    let mut bad_fn = lstm.clone();
    bad_fn[rc::ACTS + 6] = 999;
    assert_eq!(infer_rec(&bad_fn, &[Some(xp), Some(rt)]), Err(Param));
    // An RNN reads only its first function's code, a GRU its first two.
    let mut rnn = rec(rc::RNN, 0, inf);
    rnn[rc::ACTS + 3] = 999;
    assert_eq!(
        infer_rec(&rnn, &[Some(&[2, 1, 4]), Some(&[4, 4])]),
        Ok(vec![2, 1, 4])
    );
    let mut gru2 = gru.clone();
    gru2[rc::ACTS + 3] = 999;
    assert_eq!(infer_rec(&gru2, &[Some(gx), Some(gr)]), Err(Param));
}

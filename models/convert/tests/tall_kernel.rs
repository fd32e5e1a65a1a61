//! A conv whose kernel spans its input's whole height, with no vertical padding (an EEG
//! montage's channels × electrode rows, a spectrogram's bins): `fuse` makes it a `1 × kw`
//! conv over `c·h` channels of one row behind a Reshape. The reference sums the same
//! products in the same order, so the float result is the same bits and the int8 result
//! the same bytes; a kernel that does not span the height, or a padded one, is left alone.
//! Seeded; `CAIRN_SEED` replays.

mod common;
use common::{op, seed, splitmix, NO_ACT};

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::fuse::fuse;
use cairn_convert::quantize::quantize;
use cairn_convert::Graph;
use cairn_core::op::conv;
use cairn_core::{DType, OpKind};
fn values(state: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((splitmix(state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// x [n, c, h, w] → Conv (kernel kh × 3, stride (sh, 1), pads [pt, 1, pb, 1], bias).
fn graph(state: &mut u64, dims: [usize; 4], kh: usize, sh: usize, pt: usize) -> Graph {
    let [n, c, h, w] = dims;
    let o = 5;
    let oh = (h + 2 * pt - kh) / sh + 1;
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![n, c, h, w]);
    let wt = g.add_f32("w", vec![o, c, kh, 3], &values(state, o * c * kh * 3, 0.5));
    let b = g.add_f32("b", vec![o], &values(state, o, 0.5));
    let y = g.add("y", DType::F32, vec![n, o, oh, w]);
    let mut params = vec![sh as i32, 1, pt as i32, 1, pt as i32, 1, 1, 1, 1];
    params.extend(NO_ACT);
    g.ops.push(op(OpKind::Conv, &[x, wt, b], y, params));
    g.inputs.push(x);
    g.outputs.push(y);
    g
}

fn run(g: &Graph, x: &[f32]) -> Vec<f32> {
    common::run_graph(g, x)
}

fn int8(g: &Graph, x: &[f32]) -> Vec<f32> {
    let ranges = calibrate(g, &[x.to_vec()].map(|v| vec![v]), Method::MinMax, |_| {}).unwrap();
    let (q, report) = quantize(g, &ranges).unwrap();
    assert!(report.f32_ops.is_empty(), "{:?}", report.f32_ops);
    run(&q, x)
}

#[test]
fn a_kernel_as_tall_as_its_input_becomes_a_row_conv() {
    let seed = seed(41);
    let mut state = seed;
    for (dims, sh) in [([1, 4, 9, 40], 1), ([2, 3, 6, 33], 2), ([1, 20, 16, 64], 1)] {
        let what = format!("{dims:?} stride {sh} (CAIRN_SEED={seed})");
        let mut g = graph(&mut state, dims, dims[2], sh, 0);
        let x = values(&mut state, dims.iter().product(), 2.0);
        let (want, want8) = (g.run_all(std::slice::from_ref(&x)).unwrap(), int8(&g, &x));
        let want = bytemuck::cast_slice::<u8, f32>(want[&g.outputs[0]].as_slice()).to_vec();
        fuse(&mut g);
        let kinds: Vec<OpKind> = g.ops.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, [OpKind::Reshape, OpKind::Conv], "{what}");
        let w = g.ops[1].inputs[1].unwrap();
        assert_eq!(g.tensors[w].shape, [5, dims[1] * dims[2], 1, 3], "{what}");
        assert_eq!(g.ops[1].params[conv::SH], 1, "{what}");
        let got = g.run_all(std::slice::from_ref(&x)).unwrap();
        let got = bytemuck::cast_slice::<u8, f32>(got[&g.outputs[0]].as_slice());
        assert_eq!(got, &want[..], "reference, {what}");
        assert_eq!(int8(&g, &x), want8, "int8, {what}");
        // The host's fast kernels agree too, to the GEMM's tolerance.
        for (a, b) in run(&g, &x).iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "fast {a} vs {b}, {what}"
            );
        }
    }
    // Not the whole height, or padded rows: left alone.
    for (kh, pt) in [(5, 0), (9, 1)] {
        let mut g = graph(&mut state, [1, 4, 9, 40], kh, 1, pt);
        fuse(&mut g);
        assert_eq!(g.ops.len(), 1, "kh {kh} pt {pt} (CAIRN_SEED={seed})");
    }
}

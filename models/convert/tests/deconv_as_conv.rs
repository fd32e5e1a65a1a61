//! A ConvTranspose whose kernel equals its stride becomes a 1×1 conv and a pixel shuffle
//! (`fuse::deconv_as_conv`): the float result is the ConvTranspose's, per-channel affine
//! ops and a Relu after it fold into the conv, overlapping kernels are left alone, and a
//! QDQ model's quantized weights give the very bytes the int8 ConvTranspose gave. Seeded
//! weights and inputs; `CAIRN_SEED` replays.

mod common;
use common::{op, seed, splitmix, NO_ACT};

use cairn_convert::calibrate::{calibrate, Method};
use cairn_convert::fuse::fuse;
use cairn_convert::ir::Hint;
use cairn_convert::quantize::quantize;
use cairn_convert::Graph;
use cairn_core::op::UnaryFn;
use cairn_core::{DType, OpKind};
fn values(state: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((splitmix(state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// ConvTranspose params: strides, pads (begin, end), dilations, group, output padding.
fn deconv_params(case: &Case) -> Vec<i32> {
    let (s, p) = (case.s, case.pad as i32);
    let (d, op) = (case.dil as i32, case.out_pad as i32);
    let mut v = vec![s[0] as i32, s[1] as i32, p, p, p, p, d, d, 1, op, op];
    v.extend(NO_ACT);
    v
}

#[derive(Clone, Copy)]
struct Case {
    c: usize,
    o: usize,
    hw: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
    pad: usize,
    out_pad: usize,
    dil: usize,
}

const fn case(
    c: usize,
    o: usize,
    hw: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
    pad: usize,
) -> Case {
    Case {
        c,
        o,
        hw,
        k,
        s,
        pad,
        out_pad: 0,
        dil: 1,
    }
}

/// x [1, c, h, w] → ConvTranspose(w, b) → Mul(per channel) → Add(per channel) → Relu.
fn deconv_graph(case: &Case, state: &mut u64) -> Graph {
    let Case { c, o, hw, k, s, .. } = *case;
    let (pad, dil, out_pad) = (case.pad, case.dil, case.out_pad);
    let oh = (hw[0] - 1) * s[0] + (k[0] - 1) * dil + 1 + out_pad - 2 * pad;
    let ow = (hw[1] - 1) * s[1] + (k[1] - 1) * dil + 1 + out_pad - 2 * pad;
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![1, c, hw[0], hw[1]]);
    let w = g.add_f32(
        "w",
        vec![c, o, k[0], k[1]],
        &values(state, c * o * k[0] * k[1], 0.5),
    );
    let b = g.add_f32("b", vec![o], &values(state, o, 0.2));
    let shape = vec![1, o, oh, ow];
    let (d, m, a, y) = (
        g.add("d", DType::F32, shape.clone()),
        g.add("m", DType::F32, shape.clone()),
        g.add("a", DType::F32, shape.clone()),
        g.add("y", DType::F32, shape),
    );
    let scale = values(state, o, 1.5);
    let shift = values(state, o, 0.3);
    let ms = g.add_f32("ms", vec![1, o, 1, 1], &scale);
    let sh = g.add_f32("sh", vec![1, o, 1, 1], &shift);
    g.ops.push(op(
        OpKind::ConvTranspose,
        &[x, w, b],
        d,
        deconv_params(case),
    ));
    g.ops.push(op(OpKind::Mul, &[d, ms], m, NO_ACT.to_vec()));
    g.ops.push(op(OpKind::Add, &[m, sh], a, NO_ACT.to_vec()));
    g.ops
        .push(op(OpKind::Unary, &[a], y, vec![UnaryFn::Relu as i32, 0, 0]));
    g.inputs.push(x);
    g.outputs.push(y);
    g
}

fn run(g: &Graph, x: &[f32]) -> Vec<f32> {
    common::run_graph(g, x)
}

fn kinds(g: &Graph) -> Vec<OpKind> {
    g.ops.iter().map(|o| o.kind).collect()
}

#[test]
fn a_kernel_equal_to_its_stride_becomes_a_conv_and_a_shuffle() {
    let seed = seed(7);
    let mut state = seed;
    let cases = [
        // The DB head's form, a wide non-square one, and the 1×1 one: no added taps.
        case(8, 5, [6, 7], [2, 2], [2, 2], 0),
        case(3, 4, [5, 4], [1, 3], [1, 3], 0),
        case(6, 3, [4, 4], [1, 1], [1, 1], 0),
        // Overlapping kernels: U-Net's 4/2/1, 3/2/1 with and without output padding,
        // stride 1 (a flipped conv), and mixed per axis.
        case(5, 4, [5, 6], [4, 4], [2, 2], 1),
        case(4, 3, [6, 5], [3, 3], [2, 2], 1),
        Case {
            out_pad: 1,
            ..case(4, 3, [6, 5], [3, 3], [2, 2], 1)
        },
        case(3, 5, [7, 6], [3, 3], [1, 1], 1),
        case(4, 2, [5, 5], [3, 4], [1, 2], 1),
    ];
    for case in &cases {
        let mut g = deconv_graph(case, &mut state);
        let x = values(&mut state, case.c * case.hw[0] * case.hw[1], 2.0);
        let want = run(&g, &x);
        fuse(&mut g);
        let k = kinds(&g);
        assert!(!k.contains(&OpKind::ConvTranspose), "{k:?}");
        // Bias, affine and Relu all went into the conv; only moves follow it.
        assert_eq!(k[0], OpKind::Conv, "{k:?}");
        assert!(
            k[1..]
                .iter()
                .all(|k| matches!(k, OpKind::Reshape | OpKind::Transpose | OpKind::Slice)),
            "{k:?}"
        );
        let got = run(&g, &x);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "k {:?} at {i}: {a} vs {b} (CAIRN_SEED={seed})",
                case.k
            );
        }
        // And it quantizes whole: the conv and the moves in int8, close to float.
        let ranges = calibrate(&g, &[vec![x.clone()]], Method::MinMax, |_| {}).unwrap();
        let (q, report) = quantize(&g, &ranges).unwrap();
        assert_eq!(report.f32_ops, Vec::<String>::new());
        let q8 = run(&q, &x);
        let err: f32 = q8.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum();
        let norm: f32 = want.iter().map(|b| b * b).sum();
        assert!(
            (err / norm).sqrt() < 0.05,
            "k {:?}: int8 relative error {} (CAIRN_SEED={seed})",
            case.k,
            (err / norm).sqrt()
        );
    }
}

/// A kernel narrower than its stride (phases with no tap), a dilated one, and one whose
/// zero taps would pass the overhead bound (kernel 2 stride 2 with padding 1: each phase
/// reads two rows, 4× the MACs) keep the ConvTranspose kernel.
#[test]
fn kernels_the_phase_form_does_not_fit_stay_conv_transpose() {
    let mut state = seed(9);
    for case in [
        case(4, 4, [5, 5], [2, 2], [3, 3], 0),
        Case {
            dil: 2,
            ..case(4, 4, [5, 5], [3, 3], [2, 2], 1)
        },
        case(4, 4, [5, 5], [2, 2], [2, 2], 1),
    ] {
        let mut g = deconv_graph(&case, &mut state);
        fuse(&mut g);
        assert!(kinds(&g).contains(&OpKind::ConvTranspose), "k {:?}", case.k);
    }
}

/// A QDQ model's ConvTranspose: int8 weights with per-output-channel scales (axis 1), an
/// int32 bias, activation params on its input and output. The conv form multiplies the
/// same integers and requantizes with the same scales, so its bytes are the
/// ConvTranspose's.
#[test]
fn quantized_weights_move_with_their_scales_bit_exactly() {
    let seed = seed(11);
    let mut state = seed;
    let (c, o, h, w) = (6, 4, 5, 3);
    // Kernel = stride, and two overlapping kernels (zero taps added, with a Slice).
    for (k, pad) in [(2, 0), (4, 1), (3, 1)] {
        let taps = k * k;
        let mut g = Graph::default();
        let x = g.add("x", DType::F32, vec![1, c, h, w]);
        let sx = 0.02f32;
        g.tensors[x].hint = Some(Hint::Act {
            scale: sx,
            zero_point: 3,
        });
        let scales: Vec<f32> = (0..o).map(|i| 0.004 + 0.001 * i as f32).collect();
        let q: Vec<i8> = (0..c * o * taps)
            .map(|_| (splitmix(&mut state) % 255) as i8)
            .collect();
        let real: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f32 * scales[i / taps % o])
            .collect();
        let wt = g.add_f32("w", vec![c, o, k, k], &real);
        g.tensors[wt].hint = Some(Hint::Weight {
            q,
            scales: scales.clone(),
            axis: Some(1),
        });
        let bq: Vec<i32> = (0..o as i32).map(|i| 40 * i - 70).collect();
        let bscales: Vec<f32> = scales.iter().map(|s| s * sx).collect();
        let bias: Vec<f32> = bq
            .iter()
            .zip(&bscales)
            .map(|(&v, s)| v as f32 * s)
            .collect();
        let bt = g.add_f32("b", vec![o], &bias);
        g.tensors[bt].hint = Some(Hint::Bias {
            q: bq,
            scales: bscales,
        });
        let out = |n: usize| (n - 1) * 2 + k - 2 * pad;
        let y = g.add("y", DType::F32, vec![1, o, out(h), out(w)]);
        g.tensors[y].hint = Some(Hint::Act {
            scale: 0.03,
            zero_point: -5,
        });
        g.ops.push(op(
            OpKind::ConvTranspose,
            &[x, wt, bt],
            y,
            deconv_params(&case(c, o, [h, w], [k, k], [2, 2], pad)),
        ));
        g.inputs.push(x);
        g.outputs.push(y);

        let xs = values(&mut state, c * h * w, 2.5);
        let ranges = calibrate(&g, &[vec![xs.clone()]], Method::MinMax, |_| {}).unwrap();
        let (before, _) = quantize(&g, &ranges).unwrap();
        assert!(kinds(&before).contains(&OpKind::ConvTranspose));
        let mut fused = g.clone();
        fuse(&mut fused);
        assert!(!kinds(&fused).contains(&OpKind::ConvTranspose), "k {k}");
        let ranges = calibrate(&fused, &[vec![xs.clone()]], Method::MinMax, |_| {}).unwrap();
        let (after, report) = quantize(&fused, &ranges).unwrap();
        assert_eq!(report.f32_ops, Vec::<String>::new());
        assert_eq!(
            run(&after, &xs),
            run(&before, &xs),
            "k {k} (CAIRN_SEED={seed})"
        );
    }
}

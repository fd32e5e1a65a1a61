//! Kernel rows and columns of a Conv that only ever read padding are dropped
//! (`fuse::crop_dead_taps`): a 3×3 kernel on a 1×1 map becomes 1×1, a 1×3 kernel on two
//! columns at stride 2 becomes 1×2 with the pads shrunk to match. The float result is
//! the original conv's, the int8 bytes are the original's (the dropped taps read the zero
//! point, which adds nothing), and convs whose every tap reads the input are left alone.
//! Seeded weights and inputs; `CAIRN_SEED` replays.

mod common;
use common::{op, seed, splitmix, NO_ACT};

use cairn_convert::calibrate::{calibrate_on, Method};
use cairn_convert::fuse::fuse;
use cairn_convert::ir::Hint;
use cairn_convert::quantize::quantize;
use cairn_convert::Graph;
use cairn_core::op::conv;
use cairn_core::{DType, OpKind};
fn values(state: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((splitmix(state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// A conv case: batch, channels, map, output channels, kernel, stride, pads
/// (top, left, bottom, right), dilation.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    hw: [usize; 2],
    o: usize,
    k: [usize; 2],
    s: [usize; 2],
    pads: [usize; 4],
    d: [usize; 2],
}

impl Case {
    fn out(&self) -> [usize; 2] {
        let [pt, pl, pb, pr] = self.pads;
        let o = |i: usize, p0: usize, p1: usize| {
            (self.hw[i] + p0 + p1 - (self.k[i] - 1) * self.d[i] - 1) / self.s[i] + 1
        };
        [o(0, pt, pb), o(1, pl, pr)]
    }
}

/// x [n, c, h, w] → Conv(w, b) → y; with `qdq`, the weights come as a QDQ model's: int8
/// values with per-output-channel scales.
fn conv_graph(case: &Case, state: &mut u64, qdq: bool) -> Graph {
    let Case { n, c, hw, o, k, .. } = *case;
    let [oh, ow] = case.out();
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![n, c, hw[0], hw[1]]);
    let taps = c * k[0] * k[1];
    let (wv, hint) = if qdq {
        let scales: Vec<f32> = (0..o).map(|i| 0.003 + 0.0007 * i as f32).collect();
        let q: Vec<i8> = (0..o * taps)
            .map(|_| (splitmix(state) % 255) as i8)
            .collect();
        let real = q
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f32 * scales[i / taps])
            .collect();
        let axis = Some(0);
        (real, Some(Hint::Weight { q, scales, axis }))
    } else {
        (values(state, o * taps, 0.5), None)
    };
    let w = g.add_f32("w", vec![o, c, k[0], k[1]], &wv);
    g.tensors[w].hint = hint;
    let b = g.add_f32("b", vec![o], &values(state, o, 0.2));
    let y = g.add("y", DType::F32, vec![n, o, oh, ow]);
    let [pt, pl, pb, pr] = case.pads.map(|p| p as i32);
    let mut params = vec![
        case.s[0] as i32,
        case.s[1] as i32,
        pt,
        pl,
        pb,
        pr,
        case.d[0] as i32,
        case.d[1] as i32,
        1,
    ];
    params.extend(NO_ACT);
    g.ops.push(op(OpKind::Conv, &[x, w, b], y, params));
    g.inputs.push(x);
    g.outputs.push(y);
    g
}

fn run(g: &Graph, x: &[f32]) -> Vec<f32> {
    common::run_graph(g, x)
}

/// The conv's kernel and pads after `fuse`.
fn kernel_and_pads(g: &Graph) -> ([usize; 2], [i32; 4]) {
    let convs: Vec<_> = g.ops.iter().filter(|o| o.kind == OpKind::Conv).collect();
    assert_eq!(convs.len(), 1);
    let w = &g.tensors[convs[0].inputs[1].unwrap()].shape;
    let p = &convs[0].params;
    (
        [w[2], w[3]],
        [p[conv::PT], p[conv::PL], p[conv::PB], p[conv::PR]],
    )
}

const fn case(hw: [usize; 2], k: [usize; 2], s: [usize; 2], pads: [usize; 4]) -> Case {
    Case {
        n: 2,
        c: 5,
        hw,
        o: 7,
        k,
        s,
        pads,
        d: [1, 1],
    }
}

#[test]
fn taps_that_only_read_padding_are_dropped() {
    let seed = seed(21);
    let mut state = seed;
    // (case, the kernel and pads it must end with)
    let cases = [
        // 3×3 on a 1×1 map: pointwise.
        (case([1, 1], [3, 3], [1, 1], [1; 4]), [1, 1], [0; 4]),
        // A streaming encoder's last layers: 1×3 on two columns at stride 2 (the first
        // column only ever reads the left pad), and on one column.
        (
            case([1, 2], [1, 3], [1, 2], [0, 1, 0, 1]),
            [1, 2],
            [0, 0, 0, 0],
        ),
        (case([1, 1], [1, 3], [1, 1], [0, 1, 0, 1]), [1, 1], [0; 4]),
        // 3×3 stride 2 on a 2×2 map: one output reads rows and columns 1..=2 only, the
        // whole unpadded map.
        (case([2, 2], [3, 3], [2, 2], [1; 4]), [2, 2], [0; 4]),
        // One row of a 3×3 on a 1×6 map; the columns all read the input.
        (case([1, 6], [3, 3], [1, 1], [1; 4]), [1, 3], [0, 1, 0, 1]),
        // Asymmetric pads: a kernel of 5 with 4 before, 0 after, on 2 columns.
        (
            case([3, 2], [1, 5], [1, 1], [0, 4, 0, 0]),
            [1, 2],
            [0, 1, 0, 0],
        ),
        // Dilated: taps 3 apart over a 2-wide map with pad 3: only the middle one reads.
        (
            Case {
                d: [3, 3],
                ..case([2, 2], [3, 3], [1, 1], [3; 4])
            },
            [1, 1],
            [0; 4],
        ),
    ];
    for (case, want_k, want_pads) in cases {
        let mut g = conv_graph(&case, &mut state, false);
        let x = values(&mut state, case.n * case.c * case.hw[0] * case.hw[1], 2.0);
        let want = run(&g, &x);
        let int8 = |g: &Graph| {
            // On the reference kernels, whose sums keep the in-image taps' order whatever
            // the kernel's size (the host's GEMM may sum a cropped conv in another order).
            let ranges =
                calibrate_on(g, &[vec![x.clone()]], Method::MinMax, false, |_| {}).unwrap();
            let (q, report) = quantize(g, &ranges).unwrap();
            assert_eq!(report.f32_ops, Vec::<String>::new());
            run(&q, &x)
        };
        let int8_before = int8(&g);
        fuse(&mut g);
        let (k, pads) = kernel_and_pads(&g);
        assert_eq!((k, pads), (want_k, want_pads), "{case:?}");
        let got = run(&g, &x);
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{case:?} at {i}: {a} vs {b} (CAIRN_SEED={seed})"
            );
        }
        // int8 from float weights: each channel's weight scale now spans only the taps
        // that count (finer, where a dropped tap held its largest weight), so the bytes
        // may differ from before; both stay close to float.
        let rel = |q: &[f32]| {
            let err: f32 = q.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum();
            (err / want.iter().map(|b| b * b).sum::<f32>()).sqrt()
        };
        let (e0, e1) = (rel(&int8_before), rel(&int8(&g)));
        assert!(
            e0 < 0.05 && e1 < 0.05,
            "{case:?}: {e0} {e1} (CAIRN_SEED={seed})"
        );
        // int8 from a QDQ model's weights (their scales fixed): the same integer sums,
        // the same ranges (the reference sums the same in-image taps in the same order),
        // so the very bytes of the uncropped conv.
        let mut q = conv_graph(&case, &mut state, true);
        let before = int8(&q);
        fuse(&mut q);
        assert_eq!(kernel_and_pads(&q), (want_k, want_pads), "{case:?}");
        assert_eq!(int8(&q), before, "{case:?} (CAIRN_SEED={seed})");
    }
}

#[test]
fn convs_whose_every_tap_reads_the_input_are_left_alone() {
    let mut state = seed(22);
    for case in [
        case([5, 5], [3, 3], [1, 1], [1; 4]),
        case([4, 4], [3, 3], [2, 2], [1; 4]),
        case([1, 8], [1, 3], [1, 1], [0, 1, 0, 1]),
        case([6, 6], [1, 1], [1, 1], [0; 4]),
    ] {
        let mut g = conv_graph(&case, &mut state, false);
        fuse(&mut g);
        let (k, pads) = kernel_and_pads(&g);
        let p = case.pads.map(|p| p as i32);
        assert_eq!((k, pads), (case.k, p), "{case:?}");
    }
}

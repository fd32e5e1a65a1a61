//! int8 ConvTranspose: the CPU backend (the phase-split fast path on hosts) equals the
//! reference bit for bit on random shapes, strides, pads, output pads, dilations, groups
//! and clamps (seeded: `CAIRN_SEED`, printed on failure).

mod common;

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::op::conv;
use cairn_core::{DType, OpKind};
use cairn_kernels::{CpuBackend, RefBackend};
use common::{run, seed, tensor, Rng};

#[derive(Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    k: (usize, usize),
    stride: (usize, usize),
    pad: [usize; 4],
    out_pad: (usize, usize),
    dil: (usize, usize),
    group: usize,
}

fn output_hw(cs: &Case) -> Option<(usize, usize)> {
    let full =
        |i: usize, s: usize, op: usize, k: usize, d: usize| s * (i - 1) + op + (k - 1) * d + 1;
    let fh = full(cs.h, cs.stride.0, cs.out_pad.0, cs.k.0, cs.dil.0);
    let fw = full(cs.w, cs.stride.1, cs.out_pad.1, cs.k.1, cs.dil.1);
    let (ph, pw) = (cs.pad[0] + cs.pad[2], cs.pad[1] + cs.pad[3]);
    (fh > ph && fw > pw).then(|| (fh - ph, fw - pw))
}

fn model(r: &mut Rng, cs: &Case) -> Option<ModelBuilder> {
    let (oh, ow) = output_hw(cs)?;
    let zx = r.range(0, 255) as i32 - 128;
    let zy = r.range(0, 255) as i32 - 128;
    let ocg = cs.oc / cs.group;
    let wn = cs.c * ocg * cs.k.0 * cs.k.1;
    let wq: Vec<u8> = (0..wn).map(|_| r.i8().max(-127) as u8).collect();
    let bias: Vec<u8> = (0..cs.oc)
        .flat_map(|_| ((r.next() % 20001) as i32 - 10000).to_le_bytes())
        .collect();
    let rq: Vec<u8> = (0..cs.oc)
        .flat_map(|_| r.f(0.0005, 0.02).to_le_bytes())
        .collect();
    let (lo, hi) = if r.next().is_multiple_of(3) {
        (zy.max(-128), (zy + r.range(0, 127) as i32).min(127))
    } else {
        (-128, 127)
    };
    let per_tensor = |scale, zero_point| QuantSpec::PerTensor { scale, zero_point };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(tensor(
        DType::I8,
        &[cs.n, cs.c, cs.h, cs.w],
        per_tensor(r.f(0.01, 0.1), zx),
        None,
    ));
    let scales = (0..cs.oc).map(|_| r.f(0.001, 0.05)).collect();
    let w = b.add_tensor(tensor(
        DType::I8,
        &[cs.c, ocg, cs.k.0, cs.k.1],
        QuantSpec::PerAxis {
            axis: 1,
            scales,
            zero_points: vec![0; cs.oc],
        },
        Some(wq),
    ));
    let bb = b.add_tensor(tensor(DType::I32, &[cs.oc], QuantSpec::None, Some(bias)));
    let rqt = b.add_tensor(tensor(DType::F32, &[cs.oc], QuantSpec::None, Some(rq)));
    let y = b.add_tensor(tensor(
        DType::I8,
        &[cs.n, cs.oc, oh, ow],
        per_tensor(0.05, zy),
        None,
    ));
    let mut params = vec![0i32; conv::T_LEN];
    for (slot, v) in [
        (conv::SH, cs.stride.0),
        (conv::SW, cs.stride.1),
        (conv::PT, cs.pad[0]),
        (conv::PL, cs.pad[1]),
        (conv::PB, cs.pad[2]),
        (conv::PR, cs.pad[3]),
        (conv::DH, cs.dil.0),
        (conv::DW, cs.dil.1),
        (conv::GROUP, cs.group),
        (conv::OPH, cs.out_pad.0),
        (conv::OPW, cs.out_pad.1),
    ] {
        params[slot] = v as i32;
    }
    params[conv::T_ACT_LO] = lo;
    params[conv::T_ACT_HI] = hi;
    let bias_in = (!r.next().is_multiple_of(4)).then_some(bb);
    b.ops.push(OpSpec {
        kind: OpKind::ConvTranspose,
        inputs: vec![Some(x), Some(w), bias_in, Some(rqt)],
        outputs: vec![y],
        params,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    Some(b)
}

#[test]
fn conv_transpose_matches_reference() {
    let seed = seed();
    let mut r = Rng(seed);
    let mut ran = 0;
    for case in 0..300 {
        let group = [1, 1, 1, 2, 3][r.range(0, 4)];
        let stride = (r.range(1, 3), r.range(1, 3));
        let cs = Case {
            n: r.range(1, 2),
            c: group * r.range(1, 9),
            h: r.range(1, 11),
            w: r.range(1, 17),
            oc: group * r.range(1, 9),
            k: (r.range(1, 4), r.range(1, 4)),
            stride,
            pad: [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)],
            out_pad: (r.range(0, stride.0 - 1), r.range(0, stride.1 - 1)),
            dil: (r.range(1, 2), r.range(1, 2)),
            group,
        };
        let Some(b) = model(&mut r, &cs) else {
            continue;
        };
        let bytes = b.finish().expect("valid ConvTranspose model");
        let input: Vec<u8> = (0..cs.n * cs.c * cs.h * cs.w)
            .map(|_| r.i8() as u8)
            .collect();
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {cs:?}"
        );
        ran += 1;
    }
    assert!(ran > 200, "only {ran} valid cases");
}

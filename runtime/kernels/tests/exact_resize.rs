//! Resize: the CPU backend (the table-driven fast path on hosts) equals the reference bit
//! for bit on random sizes, modes, coordinate transforms and rounding modes, int8 and f32
//! (seeded: `CAIRN_SEED`, printed on failure).

mod common;

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::{DType, OpKind};
use cairn_kernels::{CpuBackend, RefBackend};
use common::{run, seed, tensor, Rng};

#[test]
fn resize_matches_reference() {
    let seed = seed();
    let mut r = Rng(seed);
    for case in 0..400 {
        let (n, c) = (r.range(1, 2), r.range(1, 5));
        let (h, w) = (r.range(1, 12), r.range(1, 20));
        // Up, down and odd factors; the scale word is either the size ratio or a rounder
        // factor the exporter gave (both are what models carry).
        let (oh, ow) = (r.range(1, 3 * h), r.range(1, 3 * w));
        let ratio = r.next().is_multiple_of(2);
        let scale = |o: usize, i: usize, r: &mut Rng| {
            if ratio {
                o as f32 / i as f32
            } else {
                r.range(1, 4) as f32 * 0.5
            }
        };
        let (sh, sw) = (scale(oh, h, &mut r), scale(ow, w, &mut r));
        let mode = r.range(0, 1) as i32;
        let coord = r.range(0, 3) as i32;
        let nmode = r.range(0, 3) as i32;
        let int8 = mode == 0 || !r.next().is_multiple_of(3);
        let (dt, qx, qy) = if int8 {
            let qx = QuantSpec::PerTensor {
                scale: r.f(0.01, 0.1),
                zero_point: r.range(0, 255) as i32 - 128,
            };
            let qy = if mode == 0 {
                qx.clone()
            } else {
                QuantSpec::PerTensor {
                    scale: r.f(0.01, 0.1),
                    zero_point: r.range(0, 255) as i32 - 128,
                }
            };
            (DType::I8, qx, qy)
        } else {
            (DType::F32, QuantSpec::None, QuantSpec::None)
        };
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(tensor(dt, &[n, c, h, w], qx, None));
        let y = b.add_tensor(tensor(dt, &[n, c, oh, ow], qy, None));
        b.ops.push(OpSpec {
            kind: OpKind::Resize,
            inputs: vec![Some(x)],
            outputs: vec![y],
            params: vec![mode, coord, nmode, sh.to_bits() as i32, sw.to_bits() as i32],
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        let bytes = b.finish().expect("valid Resize model");
        let input: Vec<u8> = if int8 {
            (0..n * c * h * w).map(|_| r.i8() as u8).collect()
        } else {
            (0..n * c * h * w)
                .flat_map(|_| r.f(-4.0, 4.0).to_le_bytes())
                .collect()
        };
        assert_eq!(
            run(&bytes, CpuBackend, &input),
            run(&bytes, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: {n}x{c}x{h}x{w} -> {oh}x{ow} mode {mode} coord \
             {coord} nearest {nmode} scales {sh},{sw} {dt:?}"
        );
    }
}

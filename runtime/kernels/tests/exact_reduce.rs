//! `Reduce` over contiguous runs of axes on the CPU backend (`reduce.rs` `reduce_fast`)
//! equals the reference bit for bit: every f32 function (Sum, Max, Min, Prod, L1, L2,
//! LogSum, LogSumExp, SumSquare) and int8 Max/Min, ranks 1–4, a last axis (rows, eight
//! at a time and a remainder), a middle or first axis, several axes, keepdims or not;
//! values drawn from a few levels (ties), signed zeros, infinities and NaNs (whose last
//! occurrence wins Max and Min; any NaN result matches any other). Masks that are not one run take the reference. Seeded
//! (`CAIRN_SEED`, printed on failure).

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::op::ReduceFn;
use cairn_core::{DType, OpKind};
use cairn_kernels::paths::{taken, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{run, seed, tensor, Rng};

/// A one-op Reduce model of `f` over `mask` of an input of `dims` in `dt`.
fn reduce_model(dt: DType, dims: &[usize], f: ReduceFn, mask: u32, keep: bool) -> Vec<u8> {
    let ydims: Vec<usize> = dims
        .iter()
        .enumerate()
        .filter_map(|(d, &n)| match mask & (1 << d) != 0 {
            true if keep => Some(1),
            true => None,
            false => Some(n),
        })
        .collect();
    let q = match dt {
        DType::I8 => QuantSpec::PerTensor {
            scale: 0.1,
            zero_point: 3,
        },
        _ => QuantSpec::None,
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(tensor(dt, dims, q.clone(), None));
    let y = b.add_tensor(tensor(dt, &ydims, q, None));
    b.ops.push(OpSpec {
        kind: OpKind::Reduce,
        inputs: vec![Some(x)],
        outputs: vec![y],
        params: vec![f as i32, mask as i32, keep as i32, 0],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b.finish().expect("valid reduce model")
}

fn value(r: &mut Rng, levels: f32) -> f32 {
    match r.next() % 40 {
        0 => 0.0,
        1 => -0.0,
        2 => f32::INFINITY,
        3 => f32::NEG_INFINITY,
        4 => f32::from_bits(0x7fc0_0000 | (r.next() as u32 & 0xff)),
        _ => (r.f(-1.0, 1.0) * levels).round() / levels,
    }
}

#[test]
fn reduce_runs_match_reference() {
    use ReduceFn::*;
    let seed = seed() ^ 0x5ED;
    let mut r = Rng(seed);
    let fs = [Sum, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare];
    let (mut runs, mut fast) = (0, 0);
    for case in 0..400 {
        let rank = r.range(1, 4);
        let mut dims: Vec<usize> = (0..rank).map(|_| r.range(1, 9)).collect();
        if case % 3 == 0 {
            dims[rank - 1] = r.range(8, 600);
        }
        // One run of axes lo..hi, or (every fifth case) any mask.
        let mask = if case % 5 == 4 {
            r.range(1, (1 << rank) - 1) as u32
        } else {
            let lo = r.range(0, rank - 1);
            let hi = r.range(lo + 1, rank);
            (u32::MAX >> (32 - hi)) & (u32::MAX << lo)
        };
        let run_of_axes =
            mask == (u32::MAX >> mask.leading_zeros()) & (u32::MAX << mask.trailing_zeros());
        let keep = r.next().is_multiple_of(2);
        let numel: usize = dims.iter().product();
        let int8 = case % 4 == 3;
        let (bytes, input) = if int8 {
            let f = if r.next().is_multiple_of(2) { Max } else { Min };
            let x: Vec<u8> = (0..numel).map(|_| r.i8() as u8).collect();
            (reduce_model(DType::I8, &dims, f, mask, keep), x)
        } else {
            let f = fs[case % fs.len()];
            let levels = r.range(2, 40) as f32;
            // Half the Max and Min cases: zeros of both signs and values on one side of
            // them, so that the result is a zero and which zero comes first decides its sign.
            let zeros = matches!(f, Max | Min) && r.next().is_multiple_of(2);
            let side = if f == Min { 0.5 } else { -0.5 };
            let x: Vec<u8> = (0..numel)
                .flat_map(|_| {
                    let v = match zeros {
                        true => [0.0, -0.0, side][r.range(0, 2)],
                        false => value(&mut r, levels),
                    };
                    v.to_le_bytes()
                })
                .collect();
            (reduce_model(DType::F32, &dims, f, mask, keep), x)
        };
        let reference = run(&bytes, RefBackend, &input);
        let before = taken(Path::ReduceRuns);
        let got = run(&bytes, CpuBackend, &input);
        let took = taken(Path::ReduceRuns) > before;
        // Bits equal, except that any NaN matches any NaN: which operand's payload an
        // f32 add or multiply of two NaNs returns is not specified (the compiler may
        // commute it, in either form).
        let canon = |b: &[u8]| -> Vec<u32> {
            if int8 {
                return b.iter().map(|&v| v as u32).collect();
            }
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .map(|v| {
                    if f32::from_bits(v).is_nan() {
                        u32::MAX
                    } else {
                        v
                    }
                })
                .collect()
        };
        assert_eq!(
            canon(&got),
            canon(&reference),
            "CAIRN_SEED={seed} case {case}: dims {dims:?} mask {mask:#b} keep {keep} int8 {int8}"
        );
        if !int8 {
            runs += run_of_axes as usize;
            fast += took as usize;
            assert!(
                took <= run_of_axes,
                "CAIRN_SEED={seed} case {case}: mask {mask:#b} is not one run"
            );
        }
    }
    // The fast form counts itself with `std` on every host.
    assert_eq!(
        fast, runs,
        "CAIRN_SEED={seed}: runs of axes that missed the fast form"
    );
}

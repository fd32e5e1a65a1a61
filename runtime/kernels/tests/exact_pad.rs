//! Pad's row copies (`CpuBackend` on hosts) against the reference's per-element loop, for
//! each mode (constant, reflect, edge), f32 and int8, on random shapes and pads (seeded:
//! `CAIRN_SEED`, printed on failure).

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::{DType, OpKind};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{run, seed, tensor, Rng};

/// A one-op Pad model: `x` padded by `begin`/`end` in `mode` with `value` (the param word).
fn pad_model(
    dt: DType,
    x: &[usize],
    begin: &[usize],
    end: &[usize],
    mode: i32,
    value: i32,
) -> Vec<u8> {
    let quant = match dt {
        DType::I8 => QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: 3,
        },
        _ => QuantSpec::None,
    };
    let y: Vec<usize> = (0..x.len()).map(|d| x[d] + begin[d] + end[d]).collect();
    let mut b = ModelBuilder::default();
    let xt = b.add_tensor(tensor(dt, x, quant.clone(), None));
    let yt = b.add_tensor(tensor(dt, &y, quant, None));
    let mut params = vec![mode, value];
    params.extend(begin.iter().map(|&v| v as i32));
    b.ops.push(OpSpec {
        kind: OpKind::Pad,
        inputs: vec![Some(xt)],
        outputs: vec![yt],
        params,
    });
    b.inputs = vec![xt];
    b.outputs = vec![yt];
    b.finish().expect("valid model")
}

/// One case: CPU backend equals the reference byte for byte.
fn check(
    r: &mut Rng,
    dt: DType,
    x: &[usize],
    begin: &[usize],
    end: &[usize],
    mode: i32,
    what: &str,
) {
    let value = match dt {
        DType::I8 => r.i8() as i32,
        _ => r.f(-2.0, 2.0).to_bits() as i32,
    };
    let bytes = pad_model(dt, x, begin, end, mode, value);
    let n: usize = x.iter().product::<usize>() * dt.size_bytes();
    let input: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
    let before = cairn_kernels::paths::taken(cairn_kernels::paths::Path::PadRows);
    let reference = run(&bytes, RefBackend, &input);
    let fast = run(&bytes, CpuBackend, &input);
    assert!(reference == fast, "Pad differs from the reference: {what}");
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        let after = cairn_kernels::paths::taken(cairn_kernels::paths::Path::PadRows);
        assert!(after > before, "the row path was not taken: {what}");
    }
}

#[test]
fn pad_every_mode_matches_reference() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x9AD);
    for case in 0..300 {
        let mode = case % 3;
        let dt = if case % 2 == 0 { DType::F32 } else { DType::I8 };
        let rank = r.range(1, 4);
        let x: Vec<usize> = (0..rank).map(|_| r.range(1, 7)).collect();
        let mut begin = vec![0; rank];
        let mut end = vec![0; rank];
        for d in 0..rank {
            // Some axes unpadded (they merge into blocks); reflect pads stay below the
            // axis length (and need two elements), as the shape check demands.
            if r.range(0, 2) == 0 {
                continue;
            }
            let most = match mode {
                1 if x[d] < 2 => 0,
                1 => x[d] - 1,
                _ => 4,
            };
            begin[d] = r.range(0, most);
            end[d] = r.range(0, most);
        }
        let what = format!(
            "CAIRN_SEED={seed} case {case}: {dt:?} mode {mode} x {x:?} begin {begin:?} end {end:?}"
        );
        check(&mut r, dt, &x, &begin, &end, mode, &what);
    }
}

/// The shapes of an STFT front end (a batch of 576-sample windows reflected to 832) and a
/// padded feature map with unpadded trailing axes.
#[test]
fn pad_front_end_shapes_match_reference() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x5F7);
    let cases: [(&[usize], &[usize], &[usize]); 3] = [
        (&[32, 576], &[0, 128], &[0, 128]),
        (&[2, 3, 10, 12], &[0, 0, 1, 2], &[0, 0, 2, 1]),
        (&[4, 6, 5, 7], &[1, 2, 0, 0], &[0, 3, 0, 0]),
    ];
    for (case, (x, begin, end)) in cases.into_iter().enumerate() {
        for mode in 0..3 {
            for dt in [DType::F32, DType::I8] {
                let what = format!("CAIRN_SEED={seed} case {case}: {dt:?} mode {mode} x {x:?}");
                check(&mut r, dt, x, begin, end, mode, &what);
            }
        }
    }
}

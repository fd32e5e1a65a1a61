//! Transpose and Slice on the CPU backend against an element-by-element gather written
//! here (the backend and the reference share `movement.rs`, so the reference is no
//! witness): int8 and f32, ranks 2–5 with size-1 dims, every permutation, planes whose
//! last two dims swap the source's (the tiled path) and those that do not; slices with
//! steps −2…3 on every axis (seeded: `CAIRN_SEED`, printed on failure).

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::{DType, OpKind};
use cairn_kernels::paths::{taken, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{run, seed, tensor, Rng};

/// A one-op Transpose model of an input with dims `x` by `perm`.
fn transpose_model(dt: DType, x: &[usize], perm: &[usize]) -> Vec<u8> {
    let quant = match dt {
        DType::I8 => QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: -3,
        },
        _ => QuantSpec::None,
    };
    let y: Vec<usize> = perm.iter().map(|&p| x[p]).collect();
    let mut b = ModelBuilder::default();
    let xt = b.add_tensor(tensor(dt, x, quant.clone(), None));
    let yt = b.add_tensor(tensor(dt, &y, quant, None));
    b.ops.push(OpSpec {
        kind: OpKind::Transpose,
        inputs: vec![Some(xt)],
        outputs: vec![yt],
        params: perm.iter().map(|&p| p as i32).collect(),
    });
    b.inputs = vec![xt];
    b.outputs = vec![yt];
    b.finish().expect("valid transpose model")
}

/// `x` (dims `dims`, elements of `es` bytes) transposed by `perm`, one element at a time.
fn transposed(x: &[u8], es: usize, dims: &[usize], perm: &[usize]) -> Vec<u8> {
    let rank = dims.len();
    let mut strides = vec![1; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * dims[d + 1];
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let n: usize = dims.iter().product();
    let mut y = Vec::with_capacity(n * es);
    for flat in 0..n {
        let (mut rest, mut at) = (flat, 0);
        for d in (0..rank).rev() {
            at += (rest % out_dims[d]) * strides[perm[d]];
            rest /= out_dims[d];
        }
        y.extend_from_slice(&x[at * es..(at + 1) * es]);
    }
    y
}

/// A random permutation of 0..rank.
fn permutation(r: &mut Rng, rank: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    for i in (1..rank).rev() {
        p.swap(i, r.range(0, i));
    }
    p
}

#[test]
fn transpose_matches_elementwise_gather() {
    let seed = seed() ^ 0x7A05;
    let mut r = Rng(seed);
    for case in 0..300 {
        let rank = r.range(2, 5);
        let dims: Vec<usize> = (0..rank)
            .map(|_| [1, r.range(1, 5), r.range(2, 40)][r.range(0, 2)])
            .collect();
        // Half the cases swap the last two dims (the tiled plane path on hosts).
        let mut perm = permutation(&mut r, rank);
        if case % 2 == 0 {
            perm = (0..rank).collect();
            perm.swap(rank - 2, rank - 1);
            if rank > 2 && r.range(0, 1) == 1 {
                perm[..rank - 2].reverse();
            }
        }
        let dt = [DType::I8, DType::F32][r.range(0, 1)];
        let es = dt.size_bytes();
        let n: usize = dims.iter().product();
        let x: Vec<u8> = (0..n * es).map(|_| r.i8() as u8).collect();
        let model = transpose_model(dt, &dims, &perm);
        let want = transposed(&x, es, &dims, &perm);
        let what = || format!("CAIRN_SEED={seed} case {case}: {dt:?} {dims:?} by {perm:?}");
        assert_eq!(run(&model, CpuBackend, &x), want, "{}", what());
        assert_eq!(run(&model, RefBackend, &x), want, "reference: {}", what());
    }
}

/// Whether this host runs the AVX2 paths (x86_64 with AVX2).
fn avx2_here() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A spectrogram's frames × bins and an NCHW ↔ NHWC image: planes of hundreds of rows and
/// columns, with tails past the 16-row tiles.
#[test]
fn large_planes_match_elementwise_gather() {
    let seed = seed() ^ 0x7A06;
    let mut r = Rng(seed);
    let cases: [(&[usize], &[usize]); 4] = [
        (&[1, 1, 257, 97], &[0, 1, 3, 2]),
        (&[1, 3, 61, 45], &[0, 2, 3, 1]),
        (&[1, 45, 33, 3], &[0, 3, 1, 2]),
        (&[2, 130, 131], &[0, 2, 1]),
    ];
    for (case, (dims, perm)) in cases.into_iter().enumerate() {
        for dt in [DType::I8, DType::F32] {
            let es = dt.size_bytes();
            let n: usize = dims.iter().product();
            let x: Vec<u8> = (0..n * es).map(|_| r.i8() as u8).collect();
            let model = transpose_model(dt, dims, perm);
            let blocks = taken(Path::TransposeBlocks);
            assert_eq!(
                run(&model, CpuBackend, &x),
                transposed(&x, es, dims, perm),
                "CAIRN_SEED={seed} case {case}: {dt:?} {dims:?} by {perm:?}"
            );
            // f32 planes of 8+ rows and columns (the first and last case; the others
            // have 3 columns, or no dim read contiguously) go in 8×8 blocks on AVX2.
            if dt == DType::F32 && avx2_here() && (case == 0 || case == 3) {
                assert!(
                    taken(Path::TransposeBlocks) > blocks,
                    "CAIRN_SEED={seed} case {case}: the block transpose did not run"
                );
            }
        }
    }
}

/// A pixel shuffle (DepthToSpace in CRD order, the tail of a ConvTranspose whose kernel
/// equals its stride): each output row interleaves two to four source rows, the hosts'
/// `interleave` path.
#[test]
fn pixel_shuffles_match_elementwise_gather() {
    let seed = seed() ^ 0x7A07;
    let mut r = Rng(seed);
    let perm = [0, 1, 4, 2, 5, 3];
    for (case, bw) in [2, 3, 4, 2].into_iter().enumerate() {
        let dims = [
            1,
            r.range(1, 5),
            r.range(1, 3),
            bw,
            r.range(1, 9),
            r.range(1, 70),
        ];
        for dt in [DType::I8, DType::F32] {
            let es = dt.size_bytes();
            let n: usize = dims.iter().product();
            let x: Vec<u8> = (0..n * es).map(|_| r.i8() as u8).collect();
            let model = transpose_model(dt, &dims, &perm);
            assert_eq!(
                run(&model, CpuBackend, &x),
                transposed(&x, es, &dims, &perm),
                "CAIRN_SEED={seed} case {case}: {dt:?} {dims:?} by {perm:?}"
            );
        }
    }
}

/// Slice of an input with dims `x`: output dims `y`, `starts` and `steps` per axis.
fn slice_model(dt: DType, x: &[usize], y: &[usize], starts: &[isize], steps: &[isize]) -> Vec<u8> {
    let quant = match dt {
        DType::I8 => QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: -3,
        },
        _ => QuantSpec::None,
    };
    let mut b = ModelBuilder::default();
    let xt = b.add_tensor(tensor(dt, x, quant.clone(), None));
    let yt = b.add_tensor(tensor(dt, y, quant, None));
    b.ops.push(OpSpec {
        kind: OpKind::Slice,
        inputs: vec![Some(xt)],
        outputs: vec![yt],
        params: starts.iter().chain(steps).map(|&v| v as i32).collect(),
    });
    b.inputs = vec![xt];
    b.outputs = vec![yt];
    b.finish().expect("valid slice model")
}

/// Slices with steps of −2, −1, 1, 2 and 3 on every axis (every 2nd byte of a row is the
/// SSE2 path on x86_64, rows of up to 150 outputs cover its 16-byte steps and tails).
#[test]
fn slice_matches_elementwise_gather() {
    let seed = seed() ^ 0x511C;
    let mut r = Rng(seed);
    for case in 0..400 {
        let rank = r.range(1, 4);
        let x: Vec<usize> = (0..rank)
            .map(|d| {
                if d + 1 == rank {
                    r.range(1, 300)
                } else {
                    r.range(1, 6)
                }
            })
            .collect();
        let steps: Vec<isize> = (0..rank)
            .map(|d| {
                let pick = [-2, -1, 1, 2, 3];
                // The last axis takes step 2 in half the cases.
                if d + 1 == rank && r.range(0, 1) == 0 {
                    2
                } else {
                    pick[r.range(0, 4)]
                }
            })
            .collect();
        let starts: Vec<isize> = (0..rank).map(|d| r.range(0, x[d] - 1) as isize).collect();
        // As many outputs as the step allows from the start, at least one.
        let y: Vec<usize> = (0..rank)
            .map(|d| {
                let (s, st) = (starts[d], steps[d]);
                let room = if st > 0 { x[d] as isize - s } else { s + 1 };
                let most = (room + st.abs() - 1) / st.abs();
                r.range(1, most as usize)
            })
            .collect();
        let dt = [DType::I8, DType::F32][r.range(0, 1)];
        let es = dt.size_bytes();
        let n: usize = x.iter().product();
        let input: Vec<u8> = (0..n * es).map(|_| r.i8() as u8).collect();
        let mut strides = vec![1usize; rank];
        for d in (0..rank - 1).rev() {
            strides[d] = strides[d + 1] * x[d + 1];
        }
        let total: usize = y.iter().product();
        let mut want = Vec::with_capacity(total * es);
        for flat in 0..total {
            let (mut rest, mut at) = (flat, 0isize);
            for d in (0..rank).rev() {
                let i = (rest % y[d]) as isize;
                rest /= y[d];
                at += (starts[d] + i * steps[d]) * strides[d] as isize;
            }
            let at = at as usize;
            want.extend_from_slice(&input[at * es..(at + 1) * es]);
        }
        let model = slice_model(dt, &x, &y, &starts, &steps);
        let what = || {
            format!(
                "CAIRN_SEED={seed} case {case}: {dt:?} {x:?} -> {y:?} from {starts:?} by {steps:?}"
            )
        };
        assert_eq!(run(&model, CpuBackend, &input), want, "{}", what());
        assert_eq!(
            run(&model, RefBackend, &input),
            want,
            "reference: {}",
            what()
        );
    }
}

//! The int8 LayerNorm fast path (`fast_layer_norm.rs` on AVX2 hosts) equals the reference
//! kernel bit for bit on random shapes, params and data (seeded: `CAIRN_SEED`, printed on
//! failure), and the path counter says it ran.

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::{DType, OpKind};
use cairn_kernels::paths::{taken, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{run, seed, tensor, Rng};

/// One random LayerNorm: input dims, normalized from `axis`.
struct Case {
    dims: Vec<usize>,
    axis: usize,
    zx: i32,
    zy: i32,
    sx: f32,
    sy: f32,
    eps: f32,
    beta: bool,
}

fn model(r: &mut Rng, cs: &Case) -> Vec<u8> {
    let inner: usize = cs.dims[cs.axis..].iter().product();
    let f32s = |r: &mut Rng, lo: f32, hi: f32| -> Vec<u8> {
        (0..inner).flat_map(|_| r.f(lo, hi).to_le_bytes()).collect()
    };
    let gamma = f32s(r, -2.0, 2.0);
    let beta = f32s(r, -1.0, 1.0);
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(tensor(
        DType::I8,
        &cs.dims,
        QuantSpec::PerTensor {
            scale: cs.sx,
            zero_point: cs.zx,
        },
        None,
    ));
    let g = b.add_tensor(tensor(DType::F32, &[inner], QuantSpec::None, Some(gamma)));
    let bt = b.add_tensor(tensor(DType::F32, &[inner], QuantSpec::None, Some(beta)));
    let y = b.add_tensor(tensor(
        DType::I8,
        &cs.dims,
        QuantSpec::PerTensor {
            scale: cs.sy,
            zero_point: cs.zy,
        },
        None,
    ));
    b.ops.push(OpSpec {
        kind: OpKind::LayerNorm,
        inputs: vec![Some(x), Some(g), cs.beta.then_some(bt)],
        outputs: vec![y],
        params: vec![cs.axis as i32, cs.eps.to_bits() as i32],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b.finish().expect("valid LayerNorm model")
}

/// Rows of 1 to 600 elements (a multiple of 8 or not), 1 to 40 rows, zero points at the
/// extremes, inputs that are constant along a row (variance 0) now and then.
#[test]
fn layer_norm_i8_matches_reference() {
    let seed = seed() ^ 0x1A;
    let mut r = Rng(seed);
    let mut fast = 0;
    for case in 0..300 {
        let rows = r.range(1, 40);
        let inner = match r.next() % 4 {
            0 => 8 * r.range(1, 64),
            1 => 384,
            _ => r.range(1, 600),
        };
        let dims = match r.next() % 3 {
            0 => vec![rows, inner],
            1 => vec![1, rows, inner],
            // Normalized over the last two axes.
            _ => vec![rows, 2, inner.div_ceil(2)],
        };
        let axis = if dims.len() == 3 && dims[0] != 1 {
            1
        } else {
            dims.len() - 1
        };
        let z = |r: &mut Rng| match r.next() % 5 {
            0 => -128,
            1 => 127,
            _ => r.range(0, 255) as i32 - 128,
        };
        let cs = Case {
            dims,
            axis,
            zx: z(&mut r),
            zy: z(&mut r),
            sx: r.f(0.001, 0.2),
            sy: r.f(0.005, 0.1),
            eps: if r.next().is_multiple_of(2) {
                1e-5
            } else {
                1e-12
            },
            beta: !r.next().is_multiple_of(4),
        };
        let bytes = model(&mut r, &cs);
        let n: usize = cs.dims.iter().product();
        let constant = r.next().is_multiple_of(10);
        let fill = r.i8();
        let input: Vec<u8> = (0..n)
            .map(|_| if constant { fill as u8 } else { r.i8() as u8 })
            .collect();
        let reference = run(&bytes, RefBackend, &input);
        let before = taken(Path::LayerNormRows);
        let got = run(&bytes, CpuBackend, &input);
        fast += (taken(Path::LayerNormRows) > before) as usize;
        assert_eq!(
            got, reference,
            "CAIRN_SEED={seed} case {case}: dims {:?} axis {} zx {} zy {} sx {} sy {} eps {} beta {}",
            cs.dims, cs.axis, cs.zx, cs.zy, cs.sx, cs.sy, cs.eps, cs.beta
        );
    }
    if avx2_host() {
        assert_eq!(fast, 300, "every case takes the AVX2 LayerNorm");
    }
}

/// Whether this host runs the AVX2 LayerNorm and counts it (x86_64 with AVX2, `std`).
fn avx2_host() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cfg!(feature = "std") && std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

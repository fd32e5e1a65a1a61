//! The f32 fast paths (Conv, FullyConnected) against the reference kernels on random
//! shapes, params and data (seeded: `CAIRN_SEED`, printed on failure).
//!
//! Tolerance: a fast path may differ from the reference only by summation order (and fused
//! multiply-adds), so every output must satisfy
//! `|fast − reference| ≤ 1e-5 · Σ|terms| + 1e-6`, where `Σ|terms|` is `|bias|` plus the sum
//! of `|x · w|` over the output's taps (computed by running the reference on `|x|`, `|w|`,
//! `|bias|` without the clamp). The convs no fast path covers (grouped) must equal the
//! reference bit for bit; the x86_64 depthwise kernel's AVX-512 and AVX2 forms each other.

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::op::conv;
use cairn_core::{DType, OpKind, Shape};
use cairn_kernels::paths::{taken, Path};
use cairn_kernels::{CpuBackend, RefBackend};

// Shared with the int8 tests, whose helpers (`Rng::i8`) these do not all use.
#[allow(dead_code)]
mod common;
use common::{run, seed, ConvCase, Rng};

/// Held by the tests that turn AVX-512 off for a comparison run (`allow_avx512` is
/// process-wide: one test's AVX2 run must not fall inside another's AVX-512 run).
static AVX512_SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Relative part of the tolerance (times `Σ|terms|`).
const REL: f32 = 1e-5;
/// Absolute part of the tolerance.
const ABS: f32 = 1e-6;

/// One single-op model: its kind, shapes, weights, bias and params (clamp included).
struct OpCase {
    kind: OpKind,
    x: Vec<usize>,
    w: Vec<usize>,
    y: Vec<usize>,
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
    params: Vec<i32>,
    /// Index of the clamp's low bound in `params` (the high bound follows).
    clamp_at: usize,
}

impl OpCase {
    fn bytes(&self, abs: bool) -> Vec<u8> {
        let t = |dims: &[usize], data: Option<&[f32]>| TensorSpec {
            dtype: DType::F32,
            shape: Shape::new(dims).unwrap(),
            quant: QuantSpec::None,
            data: data.map(|d| {
                d.iter()
                    .flat_map(|v| if abs { v.abs() } else { *v }.to_le_bytes())
                    .collect()
            }),
            layout: Default::default(),
        };
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(t(&self.x, None));
        let w = b.add_tensor(t(&self.w, Some(&self.weights)));
        let bias = self
            .bias
            .as_ref()
            .map(|v| b.add_tensor(t(&[v.len()], Some(v))));
        let y = b.add_tensor(t(&self.y, None));
        let mut params = self.params.clone();
        if abs {
            params[self.clamp_at] = f32::NEG_INFINITY.to_bits() as i32;
            params[self.clamp_at + 1] = f32::INFINITY.to_bits() as i32;
        }
        b.ops.push(OpSpec {
            kind: self.kind,
            inputs: vec![Some(x), Some(w), bias],
            outputs: vec![y],
            params,
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        b.finish().expect("valid model")
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// A random clamp: none, ReLU, ReLU6 or a random interval.
fn clamp(r: &mut Rng) -> (f32, f32) {
    match r.range(0, 3) {
        0 => (f32::NEG_INFINITY, f32::INFINITY),
        1 => (0.0, f32::INFINITY),
        2 => (0.0, 6.0),
        _ => {
            let lo = r.f(-2.0, 0.5);
            (lo, lo + r.f(0.0, 3.0))
        }
    }
}

/// Run `case` on both backends and compare (bit for bit when `exact`); `what` names it.
fn check(r: &mut Rng, case: &OpCase, exact: bool, what: &dyn Fn() -> String) {
    let n_in: usize = case.x.iter().product();
    let input: Vec<f32> = (0..n_in).map(|_| r.f(-1.0, 1.0)).collect();
    let bytes = case.bytes(false);
    let in_bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    let reference = floats(&run(&bytes, RefBackend, &in_bytes));
    let fast = floats(&run(&bytes, CpuBackend, &in_bytes));
    if exact {
        let same = reference
            .iter()
            .zip(&fast)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "not bit-exact: {}", what());
        return;
    }
    within_tolerance(case, &input, &reference, &fast, what);
}

/// `fast` within `REL · Σ|terms| + ABS` of `reference` (the f32 fast paths' contract),
/// the terms from the reference on `|weights|` and `|input|`.
fn within_tolerance(
    case: &OpCase,
    input: &[f32],
    reference: &[f32],
    fast: &[f32],
    what: &dyn Fn() -> String,
) {
    let abs_in: Vec<u8> = input.iter().flat_map(|v| v.abs().to_le_bytes()).collect();
    let terms = floats(&run(&case.bytes(true), RefBackend, &abs_in));
    assert_eq!(reference.len(), fast.len());
    for (i, ((a, b), t)) in reference.iter().zip(fast).zip(&terms).enumerate() {
        let bound = REL * t + ABS;
        assert!(
            (a - b).abs() <= bound,
            "output {i}: reference {a}, fast {b}, bound {bound}: {}",
            what()
        );
    }
}

/// The conv of `cs` with random weights, bias and clamp, or `None` if its window does not fit.
fn conv_case(r: &mut Rng, cs: &ConvCase) -> Option<OpCase> {
    let eh = cs.dil.0 * (cs.k.0 - 1) + 1;
    let ew = cs.dil.1 * (cs.k.1 - 1) + 1;
    let (ph, pw) = (cs.h + cs.pad[0] + cs.pad[2], cs.w + cs.pad[1] + cs.pad[3]);
    if ph < eh || pw < ew {
        return None;
    }
    let oh = (ph - eh) / cs.stride.0 + 1;
    let ow = (pw - ew) / cs.stride.1 + 1;
    let cg = cs.c / cs.group;
    let weights = (0..cs.oc * cg * cs.k.0 * cs.k.1)
        .map(|_| r.f(-1.0, 1.0))
        .collect();
    let bias = (!r.next().is_multiple_of(4)).then(|| (0..cs.oc).map(|_| r.f(-1.0, 1.0)).collect());
    let (lo, hi) = clamp(r);
    let mut params = common::conv_params(cs, cs.group);
    params[conv::ACT_LO] = lo.to_bits() as i32;
    params[conv::ACT_HI] = hi.to_bits() as i32;
    Some(OpCase {
        kind: OpKind::Conv,
        x: vec![cs.n, cs.c, cs.h, cs.w],
        w: vec![cs.oc, cg, cs.k.0, cs.k.1],
        y: vec![cs.n, cs.oc, oh, ow],
        weights,
        bias,
        params,
        clamp_at: conv::ACT_LO,
    })
}

/// Check one random conv; `false` when its window does not fit the image.
fn check_conv(r: &mut Rng, cs: ConvCase, exact: bool, seed: u64, case: usize) -> bool {
    let Some(op) = conv_case(r, &cs) else {
        return false;
    };
    let what = || {
        format!(
            "CAIRN_SEED={seed} case {case}: n{} c{} {}x{} oc{} k{:?} s{:?} p{:?} d{:?} g{}",
            cs.n, cs.c, cs.h, cs.w, cs.oc, cs.k, cs.stride, cs.pad, cs.dil, cs.group
        )
    };
    check(r, &op, exact, &what);
    true
}

#[test]
fn pointwise_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed);
    for case in 0..200 {
        // Every tenth a 1×1 image (squeeze-excitation blocks).
        let (h, w) = if case % 10 == 0 {
            (1, 1)
        } else {
            (r.range(1, 20), r.range(1, 24))
        };
        let cs = ConvCase {
            n: r.range(1, 2),
            c: r.range(1, 70),
            h,
            w,
            oc: r.range(1, 40),
            k: (1, 1),
            stride: (1, 1),
            pad: [0; 4],
            dil: (1, 1),
            group: 1,
        };
        assert!(check_conv(&mut r, cs, false, seed, case));
    }
}

#[test]
fn general_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x33);
    let mut ran = 0;
    for case in 0..200 {
        let cs = ConvCase {
            n: r.range(1, 2),
            c: r.range(1, 20),
            h: r.range(1, 20),
            w: r.range(1, 24),
            oc: r.range(1, 24),
            k: (r.range(1, 5), r.range(1, 5)),
            stride: (r.range(1, 3), r.range(1, 3)),
            pad: [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)],
            dil: (r.range(1, 2), r.range(1, 2)),
            group: 1,
        };
        ran += check_conv(&mut r, cs, false, seed, case) as usize;
    }
    assert!(ran > 100, "{ran}");
}

/// The PP-OCR stem's shape (3×3 stride 2 on a 48×192 image): several im2col tiles, and
/// patches too large for any tile (the reference runs them).
#[test]
fn stem_and_large_patch_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x57);
    for (case, (c, h, w, oc)) in [(3, 48, 192, 16), (130, 6, 9, 5), (96, 7, 11, 9)]
        .into_iter()
        .enumerate()
    {
        let cs = ConvCase {
            n: 1,
            c,
            h,
            w,
            oc,
            k: (3, 3),
            stride: (2, 2),
            pad: [1; 4],
            dil: (1, 1),
            group: 1,
        };
        assert!(check_conv(&mut r, cs, false, seed, case));
    }
}

/// Stride-1 convs whose output is as wide as the input ("same" padding, or none across a
/// 3×1 kernel), as a wake-word embedding's small maps, with shallow and deep (large-patch)
/// patches: the im2col tap rows are runs of the flattened plane, zeroed where the window
/// leaves the image at a row's ends (counted where it runs).
#[test]
fn same_width_and_deep_patch_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x5A3E);
    let flat0 = taken(Path::TapRunsFlat);
    for case in 0..40 {
        let (kh, kw) = [(3, 1), (1, 3), (3, 3), (5, 5), (1, 5)][case % 5];
        let dil = (r.range(1, 2), r.range(1, 2));
        let (ph, pw) = ((kh - 1) * dil.0, (kw - 1) * dil.1);
        // "Same" width; the height padded or not; the left/right split uneven at times.
        let left = if case % 3 == 0 { pw } else { pw / 2 };
        let top = if case % 2 == 0 { ph / 2 } else { 0 };
        let bottom = if case % 2 == 0 { ph - ph / 2 } else { 0 };
        let deep = case % 4 == 3;
        let cs = ConvCase {
            n: 1,
            c: if deep {
                r.range(40, 90)
            } else {
                r.range(9, 40)
            },
            h: r.range(ph.max(1) + 1, 40),
            w: r.range(2, 33),
            oc: r.range(9, 80),
            k: (kh, kw),
            stride: (1, 1),
            pad: [top, left, bottom, pw - left],
            dil,
            group: 1,
        };
        assert!(check_conv(&mut r, cs, false, seed, case));
    }
    if avx2_here() {
        assert!(
            taken(Path::TapRunsFlat) > flat0,
            "CAIRN_SEED={seed}: flat tap runs"
        );
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

/// Long 1-D kernels (an STFT front end: one channel, a 1×400 or 1×512 frame, hop 160; and
/// two channels of a complex signal): the patch is larger than the im2col tiles, so the
/// large-patch path takes it with fewer pixels per tile.
#[test]
fn long_1d_kernel_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x1D);
    let mut ran = 0;
    for (case, (c, w, oc, k, s)) in [
        (1, 2000, 20, 400, 160),
        (1, 1700, 34, 512, 160),
        (2, 900, 18, 256, 100),
        (1, 3000, 7, 1024, 257),
        // Taps and pixels off the multiples of 8, padding at both ends (the tiles there
        // gather tap by tap, the ones between in 8×8 blocks).
        (1, 9000, 9, 301, 37),
        (2, 3100, 5, 203, 19),
    ]
    .into_iter()
    .enumerate()
    {
        let pad = if case == 4 { [0, 90, 0, 75] } else { [0; 4] };
        let cs = ConvCase {
            n: 1,
            c,
            h: 1,
            w,
            oc,
            k: (1, k),
            stride: (1, s),
            pad,
            dil: (1, 1),
            group: 1,
        };
        let before = cairn_kernels::f32_fast_ops();
        let blocks = taken(Path::TapBlocks);
        ran += check_conv(&mut r, cs, false, seed, case) as usize;
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert!(
                cairn_kernels::f32_fast_ops() > before,
                "case {case}: the large-patch path was not taken (seed {seed})"
            );
        }
        // Every case but the third (7 output pixels, fewer than a block) has whole
        // blocks of 8 pixels × 8 taps.
        if avx2_here() && case != 2 {
            assert!(
                taken(Path::TapBlocks) > blocks,
                "case {case}: the 8×8 tap gather was not taken (seed {seed})"
            );
        }
    }
    assert_eq!(ran, 6);
}

/// Batches of small maps (an exporter that folds time windows into the batch: 1-D convs
/// with H = 1, strides and padding; heads on 1×1 to 7×7 maps): the batch folds into one
/// GEMM's columns (`fast_f32/fold.rs`; 1-D maps' patches gathered per column and
/// transposed in 8×8 blocks on AVX2), or a FullyConnected for pointwise convs on 1×1 maps.
#[test]
fn batched_small_map_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xBA7C);
    let mut ran = 0;
    let patches = taken(Path::FoldPatches1d);
    for case in 0..120 {
        let one_d = case % 2 == 0;
        let (h, w, k) = if one_d {
            (1, r.range(1, 9), (1, r.range(1, 5)))
        } else {
            let s = r.range(1, 7);
            (s, r.range(1, 7), (r.range(1, 3), r.range(1, 3)))
        };
        let cs = ConvCase {
            n: r.range(2, 40),
            c: r.range(1, 140),
            h,
            w,
            oc: r.range(1, 140),
            k,
            stride: (r.range(1, 2), r.range(1, 3)),
            pad: if one_d {
                [0, r.range(0, 2), 0, r.range(0, 2)]
            } else {
                [r.range(0, 1), r.range(0, 1), r.range(0, 1), r.range(0, 1)]
            },
            dil: (1, r.range(1, 2)),
            group: 1,
        };
        let expect_fast = one_d && cs.oc > 8;
        let before = cairn_kernels::f32_fast_ops();
        if check_conv(&mut r, cs, false, seed, case) {
            ran += 1;
            if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) && expect_fast {
                assert!(
                    cairn_kernels::f32_fast_ops() > before,
                    "case {case}: no batched path was taken (CAIRN_SEED={seed})"
                );
            }
        }
    }
    assert!(ran > 80, "only {ran} valid cases");
    if avx2_here() {
        assert!(
            taken(Path::FoldPatches1d) > patches,
            "the 1-D patch gather never ran (CAIRN_SEED={seed})"
        );
    }
}

#[test]
fn depthwise_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xD0);
    let mut ran = 0;
    #[cfg(target_arch = "x86_64")]
    let before = cairn_kernels::f32_fast_ops();
    for case in 0..300 {
        let c = r.range(2, 24);
        let cs = ConvCase {
            n: r.range(1, 2),
            c,
            h: r.range(1, 17),
            w: r.range(1, 300),
            oc: c,
            k: (r.range(1, 5), r.range(1, 5)),
            stride: (r.range(1, 3), r.range(1, 6)),
            pad: [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)],
            dil: (r.range(1, 2), r.range(1, 2)),
            group: c,
        };
        ran += check_conv(&mut r, cs, false, seed, case) as usize;
    }
    assert!(ran > 100, "{ran}");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // The padded-plane AVX2 kernel took some of them (the row kernel is not counted).
        assert!(
            cairn_kernels::f32_fast_ops() > before,
            "no case took the AVX2 depthwise path (seed {seed})"
        );
    }
}

/// Small maps on the channels-last f32 depthwise kernel (`fast_f32/depthwise_cl.rs`): the
/// plane kernel's bits (each lane the same chain of fused multiply-adds from the bias, a
/// padding tap adding `0 · w` in both), so within the reference's tolerance; channel counts
/// that leave partial blocks of eight, kernels up to 7 × 7, strides 1–3, dilations 1–2,
/// asymmetric padding, clamps, one and two images.
#[test]
fn small_depthwise_f32_equals_plane_kernel_bit_for_bit() {
    use cairn_kernels::paths::allow_small_depthwise;
    let seed = seed();
    let mut r = Rng(seed ^ 0xD0C1);
    let host = cfg!(target_arch = "x86_64") && avx2_here();
    let (mut cases, mut ran) = (0, 0);
    for case in 0..200 {
        let c = match r.next() % 3 {
            0 => r.range(2, 8),
            1 => r.range(8, 40),
            _ => 8 * r.range(1, 4),
        };
        let k = [1, 3, 3, 5, 7][case % 5];
        let dil = if r.next().is_multiple_of(5) { 2 } else { 1 };
        let cs = ConvCase {
            n: r.range(1, 2),
            c,
            h: r.range(1, 16),
            w: r.range(1, 16),
            oc: c,
            k: (r.range(1, k), k),
            stride: (r.range(1, 3), r.range(1, 3)),
            pad: [r.range(0, 3), r.range(0, 3), r.range(0, 3), r.range(0, 3)],
            dil: (dil, r.range(1, dil)),
            group: c,
        };
        let Some(op) = conv_case(&mut r, &cs) else {
            continue;
        };
        let n_in: usize = op.x.iter().product();
        let input: Vec<f32> = (0..n_in).map(|_| r.f(-1.0, 1.0)).collect();
        let in_bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = op.bytes(false);
        let before = taken(Path::DepthwiseF32ChannelsLast);
        let small = run(&bytes, CpuBackend, &in_bytes);
        let took = taken(Path::DepthwiseF32ChannelsLast) > before;
        let was = allow_small_depthwise(false);
        let plane = run(&bytes, CpuBackend, &in_bytes);
        allow_small_depthwise(was);
        let what = || format!("CAIRN_SEED={seed} case {case}: {cs:?} (channels-last ran: {took})");
        assert!(
            small == plane,
            "channels-last and plane kernels differ: {}",
            what()
        );
        let reference = floats(&run(&bytes, RefBackend, &in_bytes));
        within_tolerance(&op, &input, &reference, &floats(&small), &what);
        cases += 1;
        ran += took as usize;
    }
    assert!(cases > 150, "{cases}");
    if host {
        assert_eq!(
            ran, cases,
            "CAIRN_SEED={seed}: every small map takes the kernel"
        );
    }
}

/// Planes larger than the AVX2 depthwise kernel's buffer (PP-OCR's 160×160 maps) go band
/// by band through it, within the tolerance of the reference's sums, bands meeting at
/// every row.
#[test]
fn large_depthwise_f32_planes_go_in_bands() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xDB);
    #[cfg(target_arch = "x86_64")]
    let before = cairn_kernels::f32_fast_ops();
    let mut ran = 0;
    for case in 0..6 {
        let k = [3, 5, 7][case % 3];
        let cs = ConvCase {
            n: 1,
            c: 2,
            h: r.range(130, 190),
            w: r.range(120, 200),
            oc: 2,
            k: (k, k),
            stride: (1 + case % 2, 1 + case % 2),
            pad: [k / 2; 4],
            dil: (1, 1),
            group: 2,
        };
        ran += check_conv(&mut r, cs, false, seed, case) as usize;
    }
    assert_eq!(ran, 6);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert_eq!(
            cairn_kernels::f32_fast_ops() - before,
            6,
            "CAIRN_SEED={seed}: every case should take the banded AVX2 depthwise path"
        );
    }
}

/// The depthwise kernel's AVX-512 form (16-column vectors, blocks of 1–8 rows) gives the
/// AVX2 form's bits: each lane is the same chain of fused multiply-adds from the bias.
/// Widths from one vector a row to eight and more (then four, then one), strides 1–3,
/// 1- to 7-tall kernels, dilated columns, bands, row counts that leave one-row blocks.
#[test]
fn avx512_depthwise_equals_avx2_bit_for_bit() {
    use cairn_kernels::paths::{allow_avx512, avx512_f32};
    if !(cfg!(target_arch = "x86_64") && avx512_f32()) {
        eprintln!("no AVX-512F here (or CAIRN_AVX512=0): nothing to compare");
        return;
    }
    let _switch = AVX512_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    let mut r = Rng(seed ^ 0xD5_12);
    let mut wide_ran = 0;
    for case in 0..60 {
        let c = r.range(1, 6);
        let k = [1, 3, 5, 7][case % 4];
        let s = 1 + case % 3;
        let cs = ConvCase {
            n: 1,
            c,
            h: r.range(1, 40) + if case % 10 == 0 { 150 } else { 0 },
            w: r.range(9 * s, 140 * s),
            oc: c,
            k: (k, r.range(1, k + 1)),
            stride: (r.range(1, 3), s),
            pad: [r.range(0, 3), r.range(0, 3), r.range(0, 3), r.range(0, 3)],
            dil: (1, r.range(1, 3)),
            group: c,
        };
        let Some(op) = conv_case(&mut r, &cs) else {
            continue;
        };
        let n_in: usize = op.x.iter().product();
        let input: Vec<u8> = (0..n_in)
            .flat_map(|_| r.f(-1.0, 1.0).to_le_bytes())
            .collect();
        let bytes = op.bytes(false);
        let before = taken(Path::DepthwiseF32Avx512);
        let wide = run(&bytes, CpuBackend, &input);
        wide_ran += taken(Path::DepthwiseF32Avx512) - before;
        let was = allow_avx512(false);
        let narrow = run(&bytes, CpuBackend, &input);
        allow_avx512(was);
        assert!(
            wide == narrow,
            "CAIRN_SEED={seed} case {case}: AVX-512 and AVX2 depthwise differ ({cs:?})"
        );
    }
    assert!(
        wide_ran > 30,
        "CAIRN_SEED={seed}: the AVX-512 depthwise ran {wide_ran} times"
    );
}

#[test]
fn grouped_f32_falls_back() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x6A);
    let mut ran = 0;
    for case in 0..100 {
        let group = r.range(2, 4);
        let cs = ConvCase {
            n: 1,
            c: group * r.range(2, 5),
            h: r.range(1, 12),
            w: r.range(1, 12),
            oc: group * r.range(1, 4),
            k: (r.range(1, 3), r.range(1, 3)),
            stride: (r.range(1, 2), r.range(1, 2)),
            pad: [r.range(0, 1), r.range(0, 1), r.range(0, 1), r.range(0, 1)],
            dil: (1, 1),
            group,
        };
        ran += check_conv(&mut r, cs, true, seed, case) as usize;
    }
    assert!(ran > 50, "{ran}");
}

#[test]
fn fully_connected_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xFC);
    for case in 0..200 {
        // Few rows (dot products per row), and many rows against few weight rows (input
        // rows four at a time: an attention score's 512 → 1 projection).
        let (m, k, n) = if case % 2 == 0 {
            (r.range(1, 3), r.range(1, 300), r.range(1, 40))
        } else {
            (r.range(1, 11), r.range(1, 300), r.range(1, 3))
        };
        let (lo, hi) = clamp(&mut r);
        let op = OpCase {
            kind: OpKind::FullyConnected,
            x: vec![m, k],
            w: vec![n, k],
            y: vec![m, n],
            weights: (0..n * k).map(|_| r.f(-1.0, 1.0)).collect(),
            bias: (!r.next().is_multiple_of(4)).then(|| (0..n).map(|_| r.f(-1.0, 1.0)).collect()),
            params: vec![lo.to_bits() as i32, hi.to_bits() as i32],
            clamp_at: 0,
        };
        let what = || format!("CAIRN_SEED={seed} case {case}: fc m{m} k{k} n{n}");
        check(&mut r, &op, false, &what);
    }
}

/// The AVX-512F GEMM blocks (12 × 32) give the same bits as the AVX2 ones (6 × 16): every
/// output is one chain of fused multiply-adds from the bias in the same order, whatever
/// the block. Pointwise, im2col, large-patch (the strided GEMM) and batched small-map
/// convs with row and pixel counts off the blocks' multiples, on a host with AVX-512F
/// (elsewhere there is nothing to compare, and the test says so). Through a `HostModel`
/// too, whose weight cache packs the weights into the block's panels: the same bits again,
/// also where wide stride-1 maps read their taps in place from padded bands.
#[test]
fn avx512_gemm_equals_avx2_bit_for_bit() {
    use cairn_core::emit::AlignedBytes;
    use cairn_kernels::host::HostModel;
    use cairn_kernels::paths::{allow_avx512, avx512_f32};
    if !(cfg!(target_arch = "x86_64") && avx512_f32()) {
        eprintln!("no AVX-512F here (or CAIRN_AVX512=0): nothing to compare");
        return;
    }
    let _switch = AVX512_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    let mut r = Rng(seed ^ 0xA5_12);
    let shapes = [
        // (n, c, h, w, oc, k, stride, pad)
        (1, 24, 9, 13, 29, 1, 1, 0),
        (1, 7, 17, 23, 13, 3, 1, 1),
        (1, 40, 12, 11, 37, 3, 2, 1),
        (1, 130, 6, 9, 25, 3, 1, 1),
        (1, 64, 10, 10, 12, 3, 1, 1),
        (6, 5, 4, 4, 11, 3, 1, 1),
        (1, 3, 33, 35, 16, 3, 2, 1),
        // Large patches over chunks of channels, with 12-row panels and their tails.
        (1, 300, 5, 7, 53, 3, 1, 1),
        (1, 72, 9, 9, 100, 1, 2, 0),
        // Wide stride-1 maps: the taps read in place from padded bands (`taps.rs`), with
        // a tail vector, a 5×5 kernel, no padding, and a patch over 1024 in several bands.
        (1, 20, 6, 48, 14, 3, 1, 1),
        (1, 9, 7, 64, 20, 5, 1, 2),
        (1, 11, 5, 66, 13, 3, 1, 0),
        (2, 130, 40, 61, 27, 3, 1, 1),
    ];
    let taps0 = taken(Path::GemmF32Taps);
    for (case, &(n, c, h, w, oc, k, s, p)) in shapes.iter().enumerate() {
        let cs = ConvCase {
            n,
            c,
            h,
            w,
            oc,
            k: (k, k),
            stride: (s, s),
            pad: [p; 4],
            dil: (1, 1),
            group: 1,
        };
        let op = conv_case(&mut r, &cs).expect("window fits");
        let input: Vec<u8> = (0..n * c * h * w)
            .flat_map(|_| r.f(-1.0, 1.0).to_le_bytes())
            .collect();
        let bytes = op.bytes(false);
        let before = taken(Path::GemmF32Avx512);
        let wide = run(&bytes, CpuBackend, &input);
        let ran = taken(Path::GemmF32Avx512) - before;
        let aligned = AlignedBytes::from_slice(&bytes);
        let mut host = HostModel::new(aligned.as_slice()).unwrap();
        let floats_in = floats(&input);
        let panels0 = taken(Path::GemmF32Panels);
        let mut packed = Vec::new();
        for _ in 0..2 {
            // The first run packs, the second reads the cache.
            let y = host.run(&[&floats_in]).unwrap().remove(0);
            packed.push(y.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        }
        let paneled = taken(Path::GemmF32Panels) - panels0;
        // Split across three threads (every op that can), in an arena of its own: the
        // same bits.
        let mut split = HostModel::new(aligned.as_slice()).unwrap();
        split.set_pool(
            cairn_kernels::par::Pool::new(3)
                .unwrap()
                .with_min_part_work(1),
        );
        let y = split.run(&[&floats_in]).unwrap().remove(0);
        packed.push(y.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        let was = allow_avx512(false);
        let narrow = run(&bytes, CpuBackend, &input);
        allow_avx512(was);
        assert!(
            ran > 0 && paneled > 0,
            "CAIRN_SEED={seed} case {case}: the AVX-512 GEMM did not run ({ran}, panels {paneled})"
        );
        assert!(
            wide == narrow,
            "CAIRN_SEED={seed} case {case}: AVX-512 and AVX2 differ ({cs:?})"
        );
        for (i, p) in packed.iter().enumerate() {
            assert!(
                *p == narrow,
                "CAIRN_SEED={seed} case {case}: run {i} on packed panels differs ({cs:?})"
            );
        }
    }
    assert!(
        taken(Path::GemmF32Taps) > taps0,
        "CAIRN_SEED={seed}: no conv took the in-place taps"
    );
}

/// The weights of an STFT written as a conv: `rows` of (bin, sin?, negated?) over `n`
/// taps under window `kind` (0 Hann, 1 Hamming, 2 rectangular, 3 random positive), each
/// computed in f64 and rounded once, as exporters write them; a bin of `n` or more is
/// read as a fraction (`bin / 2` of a cycle: not a DFT basis).
fn stft_weights(r: &mut Rng, n: usize, kind: usize, rows: &[(usize, bool, bool)]) -> Vec<f32> {
    use std::f64::consts::TAU;
    let win: Vec<f64> = (0..n)
        .map(|t| {
            let c = (TAU * t as f64 / n as f64).cos();
            match kind {
                0 => 0.5 - 0.5 * c,
                1 => 0.54 - 0.46 * c,
                2 => 1.0,
                _ => r.f(0.2, 1.0) as f64,
            }
        })
        .collect();
    rows.iter()
        .flat_map(|&(f, sin, neg)| {
            let f = if f >= n {
                (f - n) as f64 + 0.5
            } else {
                f as f64
            };
            let win = &win;
            (0..n).map(move |t| {
                let a = TAU * f * t as f64 / n as f64;
                let b = if sin { a.sin() } else { a.cos() };
                (if neg { -1.0 } else { 1.0 } * win[t] * b) as f32
            })
        })
        .collect()
}

/// `case` through a `HostModel` (its weight cache active, as in `cairn run`) against the
/// reference, within the f32 tolerance of `check`.
fn check_host(r: &mut Rng, case: &OpCase, what: &dyn Fn() -> String) {
    use cairn_core::emit::AlignedBytes;
    use cairn_kernels::host::HostModel;
    let n_in: usize = case.x.iter().product();
    let input: Vec<f32> = (0..n_in).map(|_| r.f(-1.0, 1.0)).collect();
    let bytes = AlignedBytes::from_slice(&case.bytes(false));
    let in_bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    let reference = floats(&run(bytes.as_slice(), RefBackend, &in_bytes));
    let mut host = HostModel::new(bytes.as_slice()).unwrap();
    let fast = host.run(&[&input]).unwrap().remove(0);
    within_tolerance(case, &input, &reference, &fast, what);
}

/// An STFT written as a conv (weights a windowed DFT basis) runs as FFTs
/// (`fast_f32/dft.rs`) within the f32 tolerance: frames of 64–1024 taps; Hann, Hamming,
/// rectangular and random windows; cos and sin rows of shuffled bins, negated rows, bins
/// above N/2, zero rows (sin of bin 0 and N/2); strides, centre padding, batches, bias and
/// clamp. A basis off by one weight, or with a bin between two DFT bins, is not recognized
/// and runs the GEMM, within the same tolerance.
#[test]
fn stft_conv_runs_as_fft_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x5F_F7);
    for case in 0..14 {
        let n = 1 << r.range(6, 10);
        let half = n / 2;
        // Every (bin, sin) pair, shuffled; a random prefix of them, at least enough for
        // the FFT to pay.
        let mut all: Vec<(usize, bool, bool)> = (0..=half)
            .flat_map(|f| [(f, false, false), (f, true, true)])
            .collect();
        for i in (1..all.len()).rev() {
            all.swap(i, r.range(0, i));
        }
        let rows = r.range(4 * n.trailing_zeros() as usize, all.len());
        let mut rows = all[..rows].to_vec();
        for row in rows.iter_mut() {
            match r.range(0, 5) {
                0 => row.2 = !row.2,
                // Bin n − f: the same cos, the sin negated.
                1 if row.0 > 0 => {
                    row.0 = n - row.0;
                    row.2 ^= row.1;
                    row.0 %= n;
                }
                _ => {}
            }
        }
        // The last two cases break the basis: one weight off, or a half bin.
        let broken = case >= 12;
        if case == 13 {
            rows[0] = (n + 6, false, false);
        }
        let window = r.range(0, 3);
        let mut weights = stft_weights(&mut r, n, window, &rows);
        if case == 12 {
            let at = r.range(0, weights.len() - 1);
            weights[at] += 1e-3;
        }
        let batch = r.range(1, 3);
        let width = r.range(n, 6 * n);
        let stride = [n / 4, n / 2, r.range(1, n)][r.range(0, 2)];
        let pad = if r.range(0, 1) == 1 { half } else { 0 };
        let cs = ConvCase {
            n: batch,
            c: 1,
            h: 1,
            w: width,
            oc: rows.len(),
            k: (1, n),
            stride: (1, stride),
            pad: [0, pad, 0, pad],
            dil: (1, 1),
            group: 1,
        };
        let mut op = conv_case(&mut r, &cs).expect("the frame fits");
        op.weights = weights;
        let what =
            || format!("CAIRN_SEED={seed} case {case}: N {n} window {window} rows {rows:?} {cs:?}");
        let before = taken(Path::DftConv);
        check_host(&mut r, &op, &what);
        let ran = taken(Path::DftConv) > before;
        if avx2_here() || cfg!(target_arch = "aarch64") {
            assert_eq!(ran, !broken, "FFT path taken: {ran}; {}", what());
        }
    }
}

/// Convs whose window is the whole unpadded input (a head written as a conv: 1×1 output)
/// run as a FullyConnected over the batch (one image: dot products), within the f32
/// tolerance; one and several images, any channel and output count. (A dilated window as
/// wide as the input reaches into the padding: `batched_small_map` met one.)
#[test]
fn whole_window_conv_f32_within_tolerance() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x3E01E);
    for case in 0..24 {
        let (h, w) = (r.range(1, 6), r.range(1, 9));
        let cs = ConvCase {
            n: [1, 1, 2, 6][r.range(0, 3)],
            c: r.range(1, 100),
            h,
            w,
            oc: r.range(1, 120),
            k: (h, w),
            stride: (r.range(1, 2), r.range(1, 2)),
            pad: [0; 4],
            dil: (1, 1),
            group: 1,
        };
        let what = format!("{cs:?}");
        let before = cairn_kernels::f32_fast_ops();
        assert!(check_conv(&mut r, cs, false, seed, case));
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) && (h, w) != (1, 1) {
            assert!(
                cairn_kernels::f32_fast_ops() > before,
                "case {case}: no fast path (CAIRN_SEED={seed}, {what})"
            );
        }
    }
}

/// GFLOP/s-style figures (MAC/s) of the f32 depthwise kernels on mobile backbone layers:
/// the plane kernel and, where the map is small, the channels-last one, interleaved (min
/// of 15 rounds). Timing only, asserts nothing:
/// `cargo test -p cairn-kernels --features std --release --test exact_f32
/// depthwise_f32_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn depthwise_f32_throughput() {
    use cairn_core::emit::AlignedBytes;
    use cairn_core::{Interpreter, Model};
    use cairn_kernels::paths::allow_small_depthwise;
    let layers = [
        (64, 56, 56, 3, 1),
        (128, 28, 28, 3, 1),
        (128, 28, 28, 3, 2),
        (256, 14, 14, 3, 1),
        (256, 14, 14, 5, 1),
        (256, 14, 14, 5, 2),
        (512, 7, 7, 5, 1),
        (576, 14, 14, 3, 1),
        (1344, 7, 7, 3, 1),
        (128, 20, 20, 3, 1),
        (96, 24, 24, 3, 1),
    ];
    let mut r = Rng(seed());
    for (c, h, w, k, s) in layers {
        let cs = ConvCase {
            n: 1,
            c,
            h,
            w,
            oc: c,
            k: (k, k),
            stride: (s, s),
            pad: [k / 2; 4],
            dil: (1, 1),
            group: c,
        };
        let op = conv_case(&mut r, &cs).unwrap();
        let bytes = op.bytes(false);
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let mut arena = vec![0u8; m.arena_bytes() + 16];
        let mut it = Interpreter::new(m, CpuBackend, &mut arena).unwrap();
        let macs = (op.y.iter().product::<usize>() * k * k) as f64;
        let mut best = [f64::MAX; 2];
        for _ in 0..15 {
            for (m, on) in [false, true].into_iter().enumerate() {
                let was = allow_small_depthwise(on);
                let t = std::time::Instant::now();
                for _ in 0..20 {
                    it.invoke().unwrap();
                }
                best[m] = best[m].min(t.elapsed().as_secs_f64() / 20.0);
                allow_small_depthwise(was);
            }
        }
        println!(
            "dw f32 {c}x{h}x{w} k{k} s{s}: plane {:8.1} us {:6.2} GMAC/s | small-map path on {:8.1} us {:6.2} GMAC/s",
            best[0] * 1e6,
            macs / best[0] / 1e9,
            best[1] * 1e6,
            macs / best[1] / 1e9
        );
    }
}

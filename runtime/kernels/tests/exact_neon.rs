//! The aarch64 int8 GEMM paths (`fast/neon_dot.rs`: the `sdot` block, or `smlal` without
//! the dot product) equal the reference kernels bit for bit: pointwise and im2col convs
//! (plain and pre-packed weights), convs with a few output pixels (GEMV) and
//! FullyConnected of any row count and K. Seeded (`CAIRN_SEED`, printed on failure).
//!
//! On aarch64 each test also asserts which kernel ran: `sdot` where the CPU has the dot
//! product, `smlal` where it does not. Run both under qemu:
//! `cargo test -p cairn-kernels --features std --target aarch64-unknown-linux-gnu
//! --release --test exact_neon` (qemu's default CPU, `max`, has the dot product), and the
//! same with `QEMU_CPU=cortex-a53` (no dot product). Elsewhere the comparisons still run
//! on that host's paths.

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::op::conv;
use cairn_core::{DType, OpKind};
use cairn_kernels::paths::{taken, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{run, seed, tensor, ConvCase, Rng};

/// The two aarch64 kernel counters, read before a test's cases.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
struct Kernels {
    sdot: u64,
    smlal: u64,
}

impl Kernels {
    fn now() -> Kernels {
        Kernels {
            sdot: taken(Path::GemmSdot),
            smlal: taken(Path::GemmSmlal),
        }
    }

    /// On aarch64: the kernel this CPU should run ran (at least `min` times), the other
    /// never did.
    #[allow(unused_variables)]
    fn check(&self, min: u64, seed: u64) {
        #[cfg(target_arch = "aarch64")]
        {
            let (sdot, smlal) = (
                taken(Path::GemmSdot) - self.sdot,
                taken(Path::GemmSmlal) - self.smlal,
            );
            let dot = std::arch::is_aarch64_feature_detected!("dotprod");
            let (ran, other) = if dot { (sdot, smlal) } else { (smlal, sdot) };
            assert!(
                ran >= min && other == 0,
                "dotprod {dot}: sdot ran {sdot}, smlal {smlal} times (want >= {min} of the \
                 {}) CAIRN_SEED={seed}",
                if dot { "sdot" } else { "smlal" }
            );
        }
    }
}

/// A one-group int8 conv with per-channel weights, random zero points and clamps.
fn conv_model(r: &mut Rng, cs: &ConvCase) -> Option<ModelBuilder> {
    let eh = cs.dil.0 * (cs.k.0 - 1) + 1;
    let ew = cs.dil.1 * (cs.k.1 - 1) + 1;
    let (ph, pw) = (cs.h + cs.pad[0] + cs.pad[2], cs.w + cs.pad[1] + cs.pad[3]);
    if ph < eh || pw < ew {
        return None;
    }
    let (oh, ow) = ((ph - eh) / cs.stride.0 + 1, (pw - ew) / cs.stride.1 + 1);
    let zx = r.range(0, 255) as i32 - 128;
    let zy = r.range(0, 255) as i32 - 128;
    let wn = cs.oc * cs.c * cs.k.0 * cs.k.1;
    let wq: Vec<u8> = (0..wn).map(|_| r.i8().max(-127) as u8).collect();
    let scales: Vec<f32> = (0..cs.oc).map(|_| r.f(0.001, 0.05)).collect();
    let bias: Vec<u8> = (0..cs.oc)
        .flat_map(|_| ((r.next() % 20001) as i32 - 10000).to_le_bytes())
        .collect();
    let rq: Vec<u8> = (0..cs.oc)
        .flat_map(|_| r.f(0.0005, 0.02).to_le_bytes())
        .collect();
    let per_tensor = |scale: f32, zero_point: i32| QuantSpec::PerTensor { scale, zero_point };
    let (lo, hi) = if r.next().is_multiple_of(3) {
        (zy.max(-128), (zy + r.range(0, 127) as i32).min(127))
    } else {
        (-128, 127)
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(tensor(
        DType::I8,
        &[cs.n, cs.c, cs.h, cs.w],
        per_tensor(r.f(0.01, 0.1), zx),
        None,
    ));
    let w = b.add_tensor(tensor(
        DType::I8,
        &[cs.oc, cs.c, cs.k.0, cs.k.1],
        QuantSpec::PerAxis {
            axis: 0,
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
    let mut params = common::conv_params(cs, 1);
    params[conv::ACT_LO] = lo;
    params[conv::ACT_HI] = hi;
    let bias_in = (!r.next().is_multiple_of(4)).then_some(bb);
    b.ops.push(OpSpec {
        kind: OpKind::Conv,
        inputs: vec![Some(x), Some(w), bias_in, Some(rqt)],
        outputs: vec![y],
        params,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    Some(b)
}

/// The conv `cs` on the CPU backend equals the reference, with plain weights and (K up to
/// 2048) pre-packed ones. Returns the CPU runs made (0 when `cs` is not a valid conv).
fn check_conv(r: &mut Rng, cs: &ConvCase, seed: u64, case: usize) -> u64 {
    let Some(mut b) = conv_model(r, cs) else {
        return 0;
    };
    let bytes = b.finish().expect("valid conv model");
    let packed = (b.pack_conv_weights(2048) > 0).then(|| b.finish().expect("valid packed conv"));
    let input: Vec<u8> = (0..cs.n * cs.c * cs.h * cs.w)
        .map(|_| r.i8() as u8)
        .collect();
    let reference = run(&bytes, RefBackend, &input);
    let what = || {
        format!(
            "CAIRN_SEED={seed} case {case}: n{} c{} {}x{} oc{} k{:?} s{:?} p{:?} d{:?}",
            cs.n, cs.c, cs.h, cs.w, cs.oc, cs.k, cs.stride, cs.pad, cs.dil
        )
    };
    assert_eq!(run(&bytes, CpuBackend, &input), reference, "{}", what());
    if let Some(p) = &packed {
        assert_eq!(run(p, CpuBackend, &input), reference, "packed: {}", what());
    }
    1 + packed.is_some() as u64
}

/// Pointwise convs: the implicit GEMM where the CPU has the dot product, else the GEMM
/// (`smlal` by lane) reading the input in place.
#[test]
fn pointwise_conv_matches_reference() {
    let seed = seed() ^ 0x9E0D;
    let mut r = Rng(seed);
    let gemm = || taken(Path::PointwiseGemm) + taken(Path::Direct);
    let (kernels, before) = (Kernels::now(), gemm());
    let mut runs = 0;
    for case in 0..40 {
        let cs = ConvCase {
            n: r.range(1, 2),
            c: [r.range(1, 20), r.range(16, 70), r.range(200, 600)][r.range(0, 2)],
            h: r.range(1, 12),
            w: r.range(3, 40),
            oc: [r.range(1, 9), r.range(10, 70)][r.range(0, 1)],
            k: (1, 1),
            stride: (1, 1),
            pad: [0; 4],
            dil: (1, 1),
            group: 1,
        };
        runs += check_conv(&mut r, &cs, seed, case);
    }
    kernels.check(1, seed);
    #[cfg(target_arch = "aarch64")]
    assert!(gemm() > before, "CAIRN_SEED={seed}");
    let _ = (gemm, before, runs);
}

/// General convs (k×k, strided, padded, dilated), a third of them over a batch of small
/// outputs that folds into the columns of the im2col tile (the GEMM: `sdot` rows, with
/// plain and unpacked pre-packed weights, or `smlal` by lane).
#[test]
fn general_conv_matches_reference() {
    let seed = seed() ^ 0x12C0;
    let mut r = Rng(seed);
    let (kernels, im2col) = (Kernels::now(), taken(Path::Im2col));
    let mut runs = 0;
    for case in 0..60 {
        let k = (r.range(1, 5), r.range(1, 7));
        let fold = case % 3 == 0;
        let cs = ConvCase {
            n: if fold { r.range(2, 4) } else { r.range(1, 2) },
            c: [r.range(1, 8), r.range(16, 60)][r.range(0, 1)],
            h: if fold { r.range(1, 5) } else { r.range(3, 20) },
            w: if fold { r.range(1, 5) } else { r.range(3, 30) } + k.1,
            oc: [r.range(1, 9), r.range(10, 40)][r.range(0, 1)],
            k,
            stride: (r.range(1, 3), r.range(1, 3)),
            pad: [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)],
            dil: (r.range(1, 2), r.range(1, 2)),
            group: 1,
        };
        runs += check_conv(&mut r, &cs, seed, case);
    }
    assert!(runs > 40, "only {runs} runs (CAIRN_SEED={seed})");
    kernels.check(1, seed);
    #[cfg(target_arch = "aarch64")]
    assert!(taken(Path::Im2col) > im2col, "CAIRN_SEED={seed}");
    let _ = im2col;
}

/// One-group convs of up to 256 taps, strides up to 4 (small kernels, and audio models'
/// 3×39 and 1×256 filters): the `sdot` implicit GEMM on aarch64 CPUs with the dot
/// product; without it, im2col on `smlal` or the row paths.
#[test]
fn implicit_gemm_conv_matches_reference() {
    let seed = seed() ^ 0xD1E0;
    let mut r = Rng(seed);
    let (kernels, direct) = (Kernels::now(), taken(Path::Direct));
    let mut runs = 0;
    for case in 0..60 {
        let k = match r.range(0, 2) {
            0 => (r.range(1, 3), r.range(20, 60)),
            1 => (1, r.range(100, 256)),
            _ => (r.range(1, 7), r.range(1, 7)),
        };
        let cs = ConvCase {
            n: 1,
            c: [r.range(1, 9), r.range(10, 40)][r.range(0, 1)],
            h: r.range(1, 24),
            w: r.range(5, 40) + k.1,
            oc: [r.range(1, 9), r.range(10, 40)][r.range(0, 1)],
            k,
            stride: (r.range(1, 4), r.range(1, 4)),
            pad: [r.range(0, 3), r.range(0, 3), r.range(0, 3), r.range(0, 3)],
            dil: (r.range(1, 2), r.range(1, 2)),
            group: 1,
        };
        runs += check_conv(&mut r, &cs, seed, case);
    }
    assert!(runs > 40, "only {runs} runs (CAIRN_SEED={seed})");
    // Without the dot product the wide ones take the row paths (no GEMM counter).
    kernels.check(0, seed);
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        // Every run but the few with four outputs or fewer (the GEMV).
        let taken = taken(Path::Direct) - direct;
        assert!(
            taken * 10 >= runs * 8,
            "implicit GEMM ran {taken} of {runs} (CAIRN_SEED={seed})"
        );
    }
    let _ = direct;
}

/// Convs with at most four output pixels in all, patches up to 8192 long: the GEMV on
/// aarch64 (plain weights; their pre-packed runs take the GEMM).
#[test]
fn gemv_conv_matches_reference() {
    let seed = seed() ^ 0x6E3A;
    let mut r = Rng(seed);
    let (kernels, gemv) = (Kernels::now(), taken(Path::Gemv));
    let mut plain = 0u64;
    for case in 0..60 {
        let k = (
            r.range(1, 3),
            [r.range(1, 5), r.range(50, 300)][r.range(0, 1)],
        );
        let cs = ConvCase {
            n: r.range(1, 2),
            c: [r.range(1, 20), r.range(20, 27)][r.range(0, 1)],
            h: k.0,
            w: k.1 + r.range(0, 1),
            oc: [r.range(1, 9), r.range(10, 70)][r.range(0, 1)],
            k,
            stride: (1, 1),
            pad: [0, 0, r.range(0, 1), 0],
            dil: (1, 1),
            group: 1,
        };
        let out = (cs.h + cs.pad[2] - k.0 + 1) * (cs.w - k.1 + 1) * cs.n;
        if out > 4 || cs.c * k.0 * k.1 > 8192 {
            continue;
        }
        plain += (check_conv(&mut r, &cs, seed, case) > 0) as u64;
    }
    assert!(plain > 20, "only {plain} valid cases (CAIRN_SEED={seed})");
    kernels.check(plain, seed);
    #[cfg(target_arch = "aarch64")]
    assert_eq!(taken(Path::Gemv) - gemv, plain, "CAIRN_SEED={seed}");
    let _ = gemv;
}

/// x [lead, m, k] · Wᵀ (W [n, k], per-channel) + bias, requantized and clamped.
fn fc_model(r: &mut Rng, lead: usize, m: usize, k: usize, n: usize) -> Vec<u8> {
    let wq: Vec<u8> = (0..n * k).map(|_| r.i8().max(-127) as u8).collect();
    common::fc_model(r, &[lead, m], k, n, wq)
}

/// FullyConnected of one row to many, K short, with a tail under 16, and long (past the
/// conv GEMM's 2048 and the x86 GEMV's 8192).
#[test]
fn fully_connected_matches_reference() {
    let seed = seed() ^ 0xFCA6;
    let mut r = Rng(seed);
    let (kernels, gemv, block) = (Kernels::now(), taken(Path::Gemv), taken(Path::FcBlock));
    let (mut few, mut many) = (0u64, 0u64);
    for case in 0..50 {
        let (lead, m) = (
            r.range(1, 2),
            [r.range(1, 2), r.range(3, 70)][r.range(0, 1)],
        );
        let k = [
            r.range(1, 40),
            r.range(200, 700),
            r.range(1500, 2100),
            r.range(8000, 10000),
        ][r.range(0, 3)];
        let n = [r.range(1, 9), r.range(10, 300)][r.range(0, 1)];
        let (m, n) = if k > 4000 {
            (m.min(4), n.min(40))
        } else {
            (m, n)
        };
        let model = fc_model(&mut r, lead, m, k, n);
        let input: Vec<u8> = (0..lead * m * k).map(|_| r.i8() as u8).collect();
        assert_eq!(
            run(&model, CpuBackend, &input),
            run(&model, RefBackend, &input),
            "CAIRN_SEED={seed} case {case}: [{lead}, {m}, {k}] x [{n}, {k}]"
        );
        few += (lead * m <= 2) as u64;
        many += (lead * m > 2) as u64;
    }
    kernels.check(few + many, seed);
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(taken(Path::Gemv) - gemv, few, "CAIRN_SEED={seed}");
        assert_eq!(taken(Path::FcBlock) - block, many, "CAIRN_SEED={seed}");
    }
    let _ = (gemv, block);
}

/// FullyConnected of 8 rows or more (K with tails, N not a multiple of 4, rows past one
/// 32-row chunk), one-image convs on the implicit GEMM (channel octets, channels not a
/// multiple of 8) and batches of small convs folded into the im2col GEMM, with `smmla`
/// allowed and then not: both equal the reference. On aarch64 CPUs with i8mm (qemu's
/// `max`) `smmla` ran for every FullyConnected of 8+ rows while allowed, never after.
#[test]
fn smmla_and_sdot_blocks_match_reference() {
    use cairn_kernels::paths::{allow_i8mm, i8mm};
    let seed = seed() ^ 0x8A3A;
    let has = i8mm();
    let mut expect_mm = 0u64;
    for allowed in [true, false] {
        let prev = allow_i8mm(allowed);
        let mut r = Rng(seed);
        let mm0 = taken(Path::GemmSmmla);
        for case in 0..30 {
            let m = [r.range(8, 9), r.range(10, 40), r.range(60, 80)][r.range(0, 2)];
            let k = [r.range(1, 15), r.range(16, 300), r.range(1900, 2048)][r.range(0, 2)];
            let n = [r.range(1, 7), r.range(8, 90)][r.range(0, 1)];
            let model = fc_model(&mut r, 1, m, k, n);
            let input: Vec<u8> = (0..m * k).map(|_| r.i8() as u8).collect();
            assert_eq!(
                run(&model, CpuBackend, &input),
                run(&model, RefBackend, &input),
                "CAIRN_SEED={seed} case {case} (i8mm allowed: {allowed}): [{m}, {k}] x [{n}, {k}]"
            );
            expect_mm += (allowed && has) as u64;
        }
        // The implicit GEMM (one image, up to 256 taps): channels around the octets.
        for case in 0..20 {
            let k = (r.range(1, 5), r.range(1, 5));
            let cs = ConvCase {
                n: 1,
                c: [r.range(1, 9), r.range(9, 40)][r.range(0, 1)],
                h: r.range(1, 14),
                w: r.range(3, 30) + k.1,
                oc: [r.range(1, 7), r.range(8, 40)][r.range(0, 1)],
                k,
                stride: (r.range(1, 3), r.range(1, 3)),
                pad: [r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)],
                dil: (r.range(1, 2), r.range(1, 2)),
                group: 1,
            };
            check_conv(&mut r, &cs, seed, 100 + case);
        }
        for case in 0..20 {
            let k = (r.range(1, 3), r.range(1, 3));
            let cs = ConvCase {
                n: r.range(2, 4),
                c: [r.range(1, 8), r.range(16, 60)][r.range(0, 1)],
                h: r.range(1, 4),
                w: r.range(1, 4) + k.1,
                oc: [r.range(1, 9), r.range(10, 40)][r.range(0, 1)],
                k,
                stride: (1, 1),
                pad: [r.range(0, 1), r.range(0, 1), r.range(0, 1), r.range(0, 1)],
                dil: (1, 1),
                group: 1,
            };
            check_conv(&mut r, &cs, seed, case);
        }
        let mm = taken(Path::GemmSmmla) - mm0;
        allow_i8mm(prev);
        if allowed {
            assert!(
                mm >= expect_mm,
                "smmla ran {mm}, want >= {expect_mm} (CAIRN_SEED={seed})"
            );
        } else {
            assert_eq!(mm, 0, "smmla ran while not allowed (CAIRN_SEED={seed})");
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("i8mm") && std::env::var("CAIRN_I8MM").is_err() {
        assert!(
            has && expect_mm > 0,
            "i8mm present but not chosen (CAIRN_SEED={seed})"
        );
    }
}

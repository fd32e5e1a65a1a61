//! The int8 FullyConnected and two-activation MatMul fast paths equal the reference
//! kernels bit for bit on random shapes, zero points, clamps and data (seeded:
//! `CAIRN_SEED`, printed on failure).

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::{DType, OpKind};
use cairn_kernels::par::{with_pool, Pool};
use cairn_kernels::paths::{allow_amx, allow_vnni, amx, taken, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{per_tensor, run, run_cached, seed, tensor, Rng};

fn bytes(r: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| r.i8() as u8).collect()
}

/// x [lead.., m, k] · Wᵀ (W [n, k], per-channel) + bias, requantized and clamped.
fn fc_model(r: &mut Rng, lead: usize, m: usize, k: usize, n: usize) -> Vec<u8> {
    let wq: Vec<u8> = (0..n * k).map(|_| r.i8().max(-127) as u8).collect();
    common::fc_model(r, &[lead, m], k, n, wq)
}

/// One- and two-row FullyConnected with rows longer than the GEMM tiles take (a recurrent
/// step over a flattened feature map: K up to the GEMV's 8192) run on the GEMV.
#[test]
fn long_rows_take_the_gemv() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x6E7);
    let (before, before512) = (taken(Path::Gemv), taken(Path::GemvAvx512));
    let before_panels = taken(Path::GemvPanels);
    for case in 0..12 {
        let (m, k, n) = (r.range(1, 2), r.range(2049, 8192), r.range(1, 300));
        let model = fc_model(&mut r, 1, m, k, n);
        let input = bytes(&mut r, m * k);
        let expect = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: [1, {m}, {k}] x [{n}, {k}]");
        assert_eq!(run(&model, CpuBackend, &input), expect, "{what}");
        // With a pack cache (a `HostModel` run) the rows run over packed panels: 512-bit
        // VNNI, 256-bit VNNI or vpmaddwd as the host has (`CAIRN_AVX512=0`, `CAIRN_VNNI=0`
        // choose the narrower ones).
        assert_eq!(run_cached(&model, &input), expect, "{what} (cached packs)");
    }
    if avx2_host() {
        assert_eq!(taken(Path::Gemv) - before, 36, "CAIRN_SEED={seed}");
        assert!(
            taken(Path::GemvPanels) - before_panels >= 24,
            "CAIRN_SEED={seed}"
        );
    }
    if gemv512_host() {
        assert!(
            taken(Path::GemvAvx512) - before512 >= 24,
            "CAIRN_SEED={seed}"
        );
    }
}

/// Whether this host runs the GEMV rows on AVX-512 VNNI when a pack cache is active.
fn gemv512_host() -> bool {
    #[cfg(target_arch = "x86_64")]
    return cairn_kernels::paths::vnni() == Some(cairn_kernels::paths::Vnni::Evex)
        && cairn_kernels::paths::avx512_f32()
        && std::is_x86_feature_detected!("avx512bw");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The tests that switch AMX off process-wide (and count the runs on it): one at a time.
static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn fully_connected_i8_matches_reference() {
    let _one = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    let mut r = Rng(seed ^ 0xFC8);
    let (before, before_gemv) = (taken(Path::FcBlock), taken(Path::Gemv));
    let (before512, before_panels) = (taken(Path::GemvAvx512), taken(Path::GemvPanels));
    let before_amx = taken(Path::GemmAmx);
    let (mut multi, mut few) = (0, 0);
    for case in 0..60 {
        let (lead, m) = (
            r.range(1, 3),
            [r.range(1, 2), r.range(1, 130)][r.range(0, 1)],
        );
        let k = [r.range(1, 40), r.range(200, 700), r.range(1500, 2100)][r.range(0, 2)];
        let n = [r.range(1, 70), r.range(500, 1100)][r.range(0, 1)];
        multi += (lead * m >= 3) as u64;
        few += (lead * m <= 2) as u64;
        let model = fc_model(&mut r, lead, m, k, n);
        let input = bytes(&mut r, lead * m * k);
        let expect = run(&model, RefBackend, &input);
        let what = format!("CAIRN_SEED={seed} case {case}: [{lead}, {m}, {k}] x [{n}, {k}]");
        assert_eq!(run(&model, CpuBackend, &input), expect, "{what}");
        assert_eq!(run_cached(&model, &input), expect, "{what} (cached packs)");
        // The VNNI block without AMX tiles (the same run on a host without AMX).
        let was = allow_amx(false);
        let no_amx = run(&model, CpuBackend, &input);
        allow_amx(was);
        assert_eq!(no_amx, expect, "{what} (no AMX)");
    }
    // AVX2 hosts with std: every FC of three rows or more ran on the implicit GEMM's
    // block, every FC of one or two rows on the GEMV (four runs each).
    if avx2_host() {
        assert_eq!(
            taken(Path::FcBlock) - before,
            4 * multi,
            "CAIRN_SEED={seed}"
        );
        assert_eq!(
            taken(Path::Gemv) - before_gemv,
            4 * few,
            "CAIRN_SEED={seed}"
        );
    }
    // AMX hosts: the block's GEMMs of three rows or more on the tiles (the VNNI runs,
    // three a case; 7-bit weights without VNNI never reach them).
    if amx() && cairn_kernels::paths::vnni().is_some() {
        assert!(
            taken(Path::GemmAmx) - before_amx >= 3 * multi,
            "CAIRN_SEED={seed}"
        );
    }
    // The cached runs of those on the panel rows (AVX-512 VNNI hosts: the 512-bit ones).
    if avx2_host() && few > 0 {
        assert!(
            taken(Path::GemvPanels) - before_panels >= 2 * few,
            "CAIRN_SEED={seed}"
        );
    }
    if gemv512_host() && few > 0 {
        assert!(
            taken(Path::GemvAvx512) - before512 >= 2 * few,
            "CAIRN_SEED={seed}"
        );
    }
}

fn avx2_host() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// a [batch.., m, k] · b [batch.., k, n] with both zero points, b broadcast over a's
/// leading batch axis when it has one batch.
fn bmm_model(r: &mut Rng, batch: usize, b_batch: usize, m: usize, k: usize, n: usize) -> Vec<u8> {
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(tensor(DType::I8, &[batch, m, k], per_tensor(r), None));
    let bdata = bytes(r, b_batch * k * n);
    let w = b.add_tensor(tensor(
        DType::I8,
        &[b_batch, k, n],
        per_tensor(r),
        Some(bdata),
    ));
    let rq = r.f(0.0005, 0.02).to_le_bytes().to_vec();
    let rq = b.add_tensor(tensor(DType::F32, &[1], QuantSpec::None, Some(rq)));
    let y = b.add_tensor(tensor(DType::I8, &[batch, m, n], per_tensor(r), None));
    b.ops.push(OpSpec {
        kind: OpKind::BatchMatMul,
        inputs: vec![Some(x), Some(w), Some(rq)],
        outputs: vec![y],
        params: vec![],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b.finish().expect("valid MatMul model")
}

#[test]
fn batch_matmul_i8_matches_reference() {
    let _one = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    let mut r = Rng(seed ^ 0xB33);
    let (before, before_amx) = (taken(Path::MatMulBlock), taken(Path::MatMulAmx));
    let before_vnni = taken(Path::MatMulVnni);
    for case in 0..60 {
        let batch = r.range(1, 12);
        let b_batch = if r.next().is_multiple_of(3) { 1 } else { batch };
        let (m, k, n) = (r.range(1, 70), r.range(1, 130), r.range(1, 140));
        let model = bmm_model(&mut r, batch, b_batch, m, k, n);
        let input = bytes(&mut r, batch * m * k);
        let what =
            format!("CAIRN_SEED={seed} case {case}: [{batch}, {m}, {k}] x [{b_batch}, {k}, {n}]");
        let expect = run(&model, RefBackend, &input);
        assert_eq!(run(&model, CpuBackend, &input), expect, "{what}");
        // Without AMX tiles (VNNI's quads where the host has them), without VNNI either
        // (the int16 block), and split across threads.
        let was = allow_amx(false);
        let no_amx = run(&model, CpuBackend, &input);
        let was_vnni = allow_vnni(false);
        let pairs = run(&model, CpuBackend, &input);
        allow_vnni(was_vnni);
        allow_amx(was);
        assert_eq!(no_amx, expect, "{what} (no AMX)");
        assert_eq!(pairs, expect, "{what} (no VNNI)");
        let pool = Pool::new(2).expect("a pool").with_min_part_work(1);
        assert_eq!(
            with_pool(&pool, || run(&model, CpuBackend, &input)),
            expect,
            "{what} (2 threads)"
        );
    }
    // AVX2 hosts (`fast/mm.rs`) and aarch64 (`fast/neon_dot.rs`) take the block, on AMX
    // tiles where the host has them and they are allowed (two of the four runs).
    if avx2_host() || cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
        assert_eq!(taken(Path::MatMulBlock) - before, 240, "CAIRN_SEED={seed}");
    }
    // VNNI's quads in the run without tiles (and in the first and the two-thread ones on a
    // host without AMX).
    if avx2_host() && cairn_kernels::paths::vnni().is_some() {
        let want = if amx() { 60 } else { 180 };
        assert_eq!(
            taken(Path::MatMulVnni) - before_vnni,
            want,
            "CAIRN_SEED={seed}"
        );
    }
    if amx() && cairn_kernels::paths::vnni().is_some() {
        assert_eq!(
            taken(Path::MatMulAmx) - before_amx,
            120,
            "CAIRN_SEED={seed}"
        );
    }
}

/// An int8 FullyConnected whose weights are a model input (an arena tensor): a pack cache
/// (as a `HostModel` holds) must not keep their packed form across runs. Runs with
/// different weights each equal the reference, for the GEMV (one or two rows) and the
/// block (many rows).
#[test]
fn arena_weights_are_packed_per_run() {
    use cairn_core::emit::{AlignedBytes, QuantSpec};
    use cairn_core::{Interpreter, Model};
    use cairn_kernels::prepack::{with_cache, PackCache};
    let seed = seed();
    let mut r = Rng(seed ^ 0xA7E);
    for (case, m) in [1usize, 2, 9].into_iter().enumerate() {
        let (k, n) = (r.range(40, 300), r.range(9, 70));
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(tensor(DType::I8, &[m, k], per_tensor(&mut r), None));
        let wq = QuantSpec::PerTensor {
            scale: 0.02,
            zero_point: 0,
        };
        let w = b.add_tensor(tensor(DType::I8, &[n, k], wq, None));
        let rq: Vec<u8> = (0..n)
            .flat_map(|_| r.f(0.0005, 0.02).to_le_bytes())
            .collect();
        let rq = b.add_tensor(tensor(DType::F32, &[n], QuantSpec::None, Some(rq)));
        let y = b.add_tensor(tensor(DType::I8, &[m, n], per_tensor(&mut r), None));
        b.ops.push(OpSpec {
            kind: OpKind::FullyConnected,
            inputs: vec![Some(x), Some(w), None, Some(rq)],
            outputs: vec![y],
            params: vec![-128, 127],
        });
        b.inputs = vec![x, w];
        b.outputs = vec![y];
        let ab = AlignedBytes::from_slice(&b.finish().expect("valid FC model"));
        let model = Model::parse(ab.as_slice()).unwrap();
        let xs = bytes(&mut r, m * k);
        let mut arena = vec![0u8; model.arena_bytes() + 16];
        let mut cache = PackCache::for_model(ab.as_slice());
        for run in 0..3 {
            let ws = bytes(&mut r, n * k);
            let mut once = |backend: &mut dyn cairn_core::Backend| {
                let mut it = Interpreter::new(model, backend, &mut arena).unwrap();
                it.input_bytes_mut(0).unwrap().copy_from_slice(&xs);
                it.input_bytes_mut(1).unwrap().copy_from_slice(&ws);
                it.invoke().unwrap();
                it.output(0).unwrap().data.to_vec()
            };
            let want = once(&mut RefBackend);
            let got = with_cache(&mut cache, || once(&mut CpuBackend));
            assert_eq!(
                got, want,
                "CAIRN_SEED={seed} case {case} run {run}: [{m}, {k}] x [{n}, {k}]"
            );
        }
    }
}

//! The u8×s8 GEMM paths equal the reference bit for bit: implicit-GEMM convs
//! (`fast/direct.rs`), batches of small convs and FullyConnected (`fast/mm.rs`), at 1 to 4
//! threads, on random shapes whose weights and inputs sit at the extremes half the time
//! (the largest int16 pair sums). Each test runs twice: with VNNI turned off
//! (`paths::allow_vnni`), int8 weights in [−64, 63] take `vpmaddubsw` and weights with one
//! value outside the range keep the int16 path; with VNNI allowed, on a CPU that has it,
//! every one of these GEMMs takes `vpdpbusd`, 8-bit weights included (elsewhere the second
//! run repeats the first). Seeded: `CAIRN_SEED`, printed on failure. The path counters
//! prove which path ran (AVX2 hosts with `std`).
//!
//! `cargo test -p cairn-kernels --features std --release --test exact_u8s8 -- --ignored
//! --nocapture` also prints the GMAC/s of corpus conv and FC shapes on one thread: int16
//! pairs (weights with one value at 64), u8×s8 `vpmaddubsw` (7-bit weights) and, where the
//! CPU has it, VNNI on the 8-bit weights, timed in turns in the same run (no timed
//! assertion); `U8S8_LAYER=text` times only the layers whose name holds the text.

use cairn_core::emit::{ModelBuilder, OpSpec};
use cairn_core::op::conv;
use cairn_core::{DType, OpKind};
use cairn_kernels::par::{with_pool, Pool};
use cairn_kernels::paths::{allow_vnni, taken, vnni, vnni_hardware, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{per_tensor, run, seed, tensor, weighted, ConvCase, Rng};

/// 7-bit weights, at −64 or 63 half the time; with `wide`, one weight becomes 64 or −65
/// (outside the u8×s8 range: the int16 path must run).
fn weights(r: &mut Rng, n: usize, wide: bool) -> Vec<u8> {
    let mut w: Vec<u8> = (0..n)
        .map(|_| match r.range(0, 3) {
            0 => -64i8,
            1 => 63,
            _ => r.range(0, 127) as i8 - 64,
        } as u8)
        .collect();
    if wide {
        let at = r.range(0, n - 1);
        w[at] = [64i8, -65][r.range(0, 1)] as u8;
    }
    w
}

/// Inputs at −128 or 127 half the time.
fn inputs(r: &mut Rng, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| match r.range(0, 3) {
            0 => -128i8,
            1 => 127,
            _ => r.i8(),
        } as u8)
        .collect()
}

/// One one-group int8 conv of geometry `cs`, or `None` when the window does not fit.
fn conv_model(r: &mut Rng, cs: &ConvCase, wide: bool) -> Option<ModelBuilder> {
    let (eh, ew) = (cs.dil.0 * (cs.k.0 - 1) + 1, cs.dil.1 * (cs.k.1 - 1) + 1);
    let (ph, pw) = (cs.h + cs.pad[0] + cs.pad[2], cs.w + cs.pad[1] + cs.pad[3]);
    if ph < eh || pw < ew {
        return None;
    }
    let (oh, ow) = ((ph - eh) / cs.stride.0 + 1, (pw - ew) / cs.stride.1 + 1);
    let mut b = ModelBuilder::default();
    let xq = per_tensor(r);
    let x = b.add_tensor(tensor(DType::I8, &[cs.n, cs.c, cs.h, cs.w], xq, None));
    let wq = weights(r, cs.oc * cs.c * cs.k.0 * cs.k.1, wide);
    let wt = weighted(&mut b, r, &[cs.oc, cs.c, cs.k.0, cs.k.1], wq);
    let y = b.add_tensor(tensor(DType::I8, &[cs.n, cs.oc, oh, ow], wt.yq, None));
    let mut params = common::conv_params(cs, 1);
    params[conv::ACT_LO] = wt.lo;
    params[conv::ACT_HI] = wt.hi;
    b.ops.push(OpSpec {
        kind: OpKind::Conv,
        inputs: vec![Some(x), Some(wt.w), wt.bias, Some(wt.rq)],
        outputs: vec![y],
        params,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    Some(b)
}

/// x [m, k] · Wᵀ (W [n, k]).
fn fc_model(r: &mut Rng, m: usize, k: usize, n: usize, wide: bool) -> Vec<u8> {
    let wq = weights(r, n * k, wide);
    common::fc_model(r, &[m], k, n, wq)
}

fn avx2_host() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The GEMM paths that count a run (implicit-GEMM conv, on AMX tiles or not, conv batch,
/// FC block), the u8×s8 runs among them and the VNNI runs among those, so far on this
/// thread.
fn counts() -> (u64, u64, u64) {
    let gemm =
        taken(Path::Direct) + taken(Path::ConvAmx) + taken(Path::ConvBatch) + taken(Path::FcBlock);
    (gemm, taken(Path::GemmU8S8), taken(Path::GemmVnni))
}

/// The two tests switch VNNI process-wide: one at a time.
static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `body(vnni allowed)` with VNNI turned off, then allowed (the default, left so).
fn both_ways(body: impl Fn(bool)) {
    let _one = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    for on in [false, true] {
        allow_vnni(on);
        body(on);
    }
    allow_vnni(true);
}

/// The model on the CPU backend equals the reference at 1–4 threads (every op split
/// however small); with AVX2, every GEMM run took the u8×s8 block unless `wide` (8-bit
/// weights) without VNNI, and took VNNI exactly when it is allowed and present.
/// Returns whether a GEMM path ran.
fn check(model: &[u8], input: &[u8], wide: bool, what: &dyn Fn() -> String) -> bool {
    let reference = run(model, RefBackend, input);
    let (g0, u0, v0) = counts();
    assert_eq!(run(model, CpuBackend, input), reference, "{}", what());
    let (g1, u1, v1) = counts();
    for threads in 1..=4 {
        let pool = Pool::new(threads)
            .expect("a thread pool")
            .with_min_part_work(1);
        let got = with_pool(&pool, || run(model, CpuBackend, input));
        assert_eq!(got, reference, "{threads} threads: {}", what());
    }
    if avx2_host() {
        let vnni = vnni().is_some();
        let expect = if wide && !vnni { 0 } else { g1 - g0 };
        assert_eq!(u1 - u0, expect, "u8×s8 runs (vnni {vnni}): {}", what());
        let expect = if vnni { g1 - g0 } else { 0 };
        assert_eq!(v1 - v0, expect, "VNNI runs (vnni {vnni}): {}", what());
    }
    g1 > g0
}

/// The conv of `cs` (random weights and inputs from `r`), plain and with its weights
/// pre-packed (`Layout::Pairs6`), each through [`check`]. `None` where the window does not
/// fit; else whether the plain model ran a GEMM path.
fn check_conv(r: &mut Rng, cs: &ConvCase, wide: bool, what: &dyn Fn() -> String) -> Option<bool> {
    let mut b = conv_model(r, cs, wide)?;
    let plain = b.finish().expect("valid conv model");
    let packed = (b.pack_conv_weights(2048) > 0).then(|| b.finish().expect("packed conv"));
    let input = inputs(r, cs.n * cs.c * cs.h * cs.w);
    let ran = check(&plain, &input, wide, what);
    if let Some(p) = packed {
        check(&p, &input, wide, &|| format!("packed: {}", what()));
    }
    Some(ran)
}

/// Convs on narrow maps with horizontal padding (the `1×3` layers of an audio embedding
/// model, a padded `3×3` on a map a few columns wide): where the transposed planes save
/// enough tiles, the implicit GEMM runs on them (`Path::DirectTransposed`). Every case,
/// transposed or not, 7-bit or 8-bit weights, plain or pre-packed, equals the reference at
/// 1–4 threads.
#[test]
fn transposed_convs_match_reference() {
    both_ways(transposed_convs);
}

fn transposed_convs(vnni_on: bool) {
    let seed = seed() ^ 0x7A5;
    let (transposed, cases) = count_transposed(seed, vnni_on, 60, |r| {
        let k = [(1, 3), (1, 5), (3, 3), (1, 7), (2, 3), (3, 1)][r.range(0, 5)];
        let pw = r.range(1, 3).min(k.1);
        ConvCase {
            n: [1, 1, 2][r.range(0, 2)],
            c: r.range(12, 64),
            h: r.range(4, 40),
            w: r.range(1, 10),
            oc: r.range(6, 48),
            k,
            stride: (r.range(1, 2), r.range(1, 2)),
            pad: [r.range(0, 1) * (k.0 / 2), pw, 0, r.range(0, pw)],
            dil: (1, r.range(1, 2)),
            group: 1,
        }
    });
    assert!(cases >= 40, "CAIRN_SEED={seed}: {cases} convs built");
    if avx2_host() {
        assert!(
            transposed >= cases / 3,
            "CAIRN_SEED={seed}: {transposed} of {cases} convs transposed"
        );
    }
}

/// `n` convs from `gen` checked against the reference (`check_conv`, every third with a
/// wide stage): how many took the transposed form, and how many were built.
fn count_transposed(
    seed: u64,
    vnni_on: bool,
    n: usize,
    mut gen: impl FnMut(&mut Rng) -> ConvCase,
) -> (usize, usize) {
    let mut r = Rng(seed);
    let (mut transposed, mut cases) = (0, 0);
    for case in 0..n {
        let cs = gen(&mut r);
        let wide = case % 3 == 2;
        let what = || format!("CAIRN_SEED={seed} vnni {vnni_on} case {case} wide {wide}: {cs:?}");
        let t0 = taken(Path::DirectTransposed);
        if check_conv(&mut r, &cs, wide, &what).is_none() {
            continue;
        }
        transposed += (taken(Path::DirectTransposed) > t0) as usize;
        cases += 1;
    }
    (transposed, cases)
}

/// Dilated `1×3` convs over one-row maps (a TCN's layers as [c, 1, w]), padded by their
/// dilation: such planes are their own transposes, so the transposed form runs on the
/// input and output in place, and takes every case whose padding costs tiles.
#[test]
fn one_row_convs_run_transposed_in_place() {
    both_ways(one_row_convs);
}

fn one_row_convs(vnni_on: bool) {
    let seed = seed() ^ 0x1D1;
    let (transposed, cases) = count_transposed(seed, vnni_on, 24, |r| {
        let d = [1, 4, 37, 128][r.range(0, 3)];
        ConvCase {
            n: 1,
            c: r.range(8, 48),
            h: 1,
            w: r.range(20, 300),
            oc: r.range(6, 40),
            k: (1, 3),
            stride: (1, 1),
            pad: [0, d, 0, d],
            dil: (1, d),
            group: 1,
        }
    });
    assert!(cases >= 16, "CAIRN_SEED={seed}: {cases} convs built");
    if avx2_host() {
        assert!(
            transposed >= cases / 2,
            "CAIRN_SEED={seed}: {transposed} of {cases} convs transposed"
        );
    }
}

#[test]
fn seven_bit_convs_match_reference() {
    both_ways(convs_match_reference);
}

fn convs_match_reference(vnni_on: bool) {
    let seed = seed() ^ 0x7B;
    let mut r = Rng(seed);
    let (mut gemm, mut cases) = (0, 0);
    for case in 0..80 {
        let k = [(1, 1), (3, 3), (5, 5), (1, 7), (3, 1)][r.range(0, 4)];
        let s = r.range(1, 3);
        let cs = ConvCase {
            n: [1, 1, 1, 2, 4][r.range(0, 4)],
            c: [r.range(1, 9), r.range(10, 70)][r.range(0, 1)],
            h: r.range(1, 24),
            w: r.range(1, 40),
            oc: r.range(1, 40),
            k,
            stride: (s, [s, 1][r.range(0, 1)]),
            pad: [0; 4].map(|_| r.range(0, k.0 / 2 + 1)),
            dil: (r.range(1, 2), r.range(1, 2)),
            group: 1,
        };
        let wide = case % 5 == 4;
        let what = || format!("CAIRN_SEED={seed} vnni {vnni_on} case {case} wide {wide}: {cs:?}");
        let Some(ran) = check_conv(&mut r, &cs, wide, &what) else {
            continue;
        };
        gemm += ran as usize;
        cases += 1;
    }
    assert!(cases >= 60, "CAIRN_SEED={seed}: {cases} convs built");
    if avx2_host() {
        assert!(gemm >= 30, "CAIRN_SEED={seed}: {gemm} convs on a GEMM path");
    }
}

#[test]
fn one_channel_convs_match_reference() {
    both_ways(one_channel_convs);
}

/// One-channel convs (grayscale and spectrogram stems: kernels 2 to 16 columns wide, any
/// height, strides, pads, row dilation, batches): where the quad forms apply (7-bit
/// weights, or VNNI) and the columns are not dilated, the width-window form runs
/// (`Path::WidthWindows`); a column-dilated window, and 8-bit weights without VNNI, keep
/// the channel form. Every case equals the reference at 1–4 threads.
fn one_channel_convs(vnni_on: bool) {
    let seed = seed() ^ 0xC1;
    let mut r = Rng(seed);
    let (mut windows, mut expected, mut cases) = (0, 0, 0);
    for case in 0..90 {
        let k = (r.range(1, 5), r.range(2, 16));
        let cs = ConvCase {
            n: [1, 1, 2][r.range(0, 2)],
            c: 1,
            h: r.range(1, 30),
            w: r.range(1, 70),
            oc: r.range(1, 40),
            k,
            stride: (r.range(1, 3), r.range(1, 3)),
            pad: [r.range(0, 2), r.range(0, 3), r.range(0, 2), r.range(0, 3)],
            dil: (r.range(1, 2), if case % 6 == 5 { 2 } else { 1 }),
            group: 1,
        };
        let wide = case % 4 == 3;
        let Some(b) = conv_model(&mut r, &cs, wide) else {
            continue;
        };
        let model = b.finish().expect("valid conv model");
        let input = inputs(&mut r, cs.n * cs.c * cs.h * cs.w);
        let what = || format!("CAIRN_SEED={seed} vnni {vnni_on} case {case} wide {wide}: {cs:?}");
        let (w0, d0) = (taken(Path::WidthWindows), taken(Path::Direct));
        check(&model, &input, wide, &what);
        // Runs of the implicit GEMM (one per run of the model: once, then at 1–4 threads).
        let direct = taken(Path::Direct) - d0;
        let ran = taken(Path::WidthWindows) - w0;
        if avx2_host() {
            let quads = !wide || vnni().is_some();
            let want = if quads && cs.dil.1 == 1 { direct } else { 0 };
            assert_eq!(ran, want, "width-window runs: {}", what());
            expected += want;
        }
        windows += ran;
        cases += 1;
    }
    assert!(cases >= 60, "CAIRN_SEED={seed}: {cases} convs built");
    if avx2_host() {
        assert!(
            windows >= 20 && windows == expected,
            "CAIRN_SEED={seed}: {windows} of {expected}"
        );
    }
}

#[test]
fn strided_filter_banks_match_reference() {
    both_ways(filter_banks_match_reference);
}

/// Strided filter banks (an STFT's frames: 1–2 channels, 50–1100 taps, strides past the
/// implicit GEMM's 4, or short strides with more than its 256 taps): one FullyConnected
/// over the patches (`fast/mm.rs`, `Path::ConvBatch`) on AVX2 hosts, or the tiles' implicit
/// GEMM (`fast/amx_conv.rs`, `Path::ConvAmx`) on CPUs with AMX, every run of it (at least
/// five outputs, so none takes the GEMV).
fn filter_banks_match_reference(vnni_on: bool) {
    let seed = seed() ^ 0x57F7;
    let mut r = Rng(seed);
    let (batch0, amx0, mut cases) = (taken(Path::ConvBatch), taken(Path::ConvAmx), 0);
    for case in 0..30 {
        let kw = [r.range(50, 300), r.range(257, 1100)][r.range(0, 1)];
        let sw = if kw > 256 {
            r.range(2, 200)
        } else {
            r.range(5, 200)
        };
        let cs = ConvCase {
            n: r.range(1, 2),
            c: r.range(1, 2),
            h: 1,
            w: r.range(kw + 4 * sw, kw + 40 * sw),
            oc: [r.range(1, 40), r.range(250, 300)][r.range(0, 1)],
            k: (1, kw),
            stride: (1, sw),
            pad: [0, r.range(0, kw / 2), 0, r.range(0, kw / 2)],
            dil: (1, 1),
            group: 1,
        };
        let wide = case % 3 == 2;
        let Some(b) = conv_model(&mut r, &cs, wide) else {
            continue;
        };
        let model = b.finish().expect("valid conv model");
        let input = inputs(&mut r, cs.n * cs.c * cs.h * cs.w);
        let what = || format!("CAIRN_SEED={seed} vnni {vnni_on} case {case} wide {wide}: {cs:?}");
        let ran = check(&model, &input, wide, &what);
        assert!(ran || !avx2_host(), "no GEMM path: {}", what());
        cases += 1;
    }
    assert!(cases >= 25, "CAIRN_SEED={seed}: {cases} convs built");
    if avx2_host() {
        // Five runs per case (one thread, then 1–4 threads), each through the FC block,
        // or on CPUs with AMX the implicit GEMM on tiles over the staged input.
        let batch = taken(Path::ConvBatch) - batch0 + taken(Path::ConvAmx) - amx0;
        assert_eq!(
            batch,
            5 * cases,
            "CAIRN_SEED={seed}: filter banks through the FC block"
        );
    }
}

#[test]
fn seven_bit_fully_connected_matches_reference() {
    both_ways(fully_connected_matches_reference);
}

fn fully_connected_matches_reference(vnni_on: bool) {
    let seed = seed() ^ 0xFC7;
    let mut r = Rng(seed);
    for case in 0..40 {
        let m = r.range(3, 70);
        let k = [r.range(1, 40), r.range(200, 700), r.range(1500, 2100)][r.range(0, 2)];
        let n = [r.range(1, 70), r.range(300, 600)][r.range(0, 1)];
        let wide = case % 5 == 4;
        let model = fc_model(&mut r, m, k, n, wide);
        let input = inputs(&mut r, m * k);
        let what = || {
            format!(
                "CAIRN_SEED={seed} vnni {vnni_on} case {case} wide {wide}: [{m}, {k}] x [{n}, {k}]"
            )
        };
        let ran = check(&model, &input, wide, &what);
        assert!(ran || !avx2_host(), "FC block not taken: {}", what());
    }
}

/// Seconds per invoke of each model on `input`, each run with VNNI allowed or not as its
/// flag says (weights packed at the first invoke under it): one thread, weights packed
/// once (as a `HostModel` does), the models timed in turns over 40 rounds of 5 invokes,
/// best round.
fn time_models<const N: usize>(models: [(&[u8], bool); N], input: &[u8]) -> [f64; N] {
    use cairn_core::emit::AlignedBytes;
    use cairn_core::{Interpreter, Model};
    let abs = models.map(|(m, _)| AlignedBytes::from_slice(m));
    let ms = abs
        .each_ref()
        .map(|ab| Model::parse(ab.as_slice()).unwrap());
    let mut arenas = ms.map(|m| vec![0u8; m.arena_bytes() + 16]);
    let mut its: Vec<_> = ms
        .iter()
        .zip(arenas.iter_mut())
        .map(|(m, a)| Interpreter::new(*m, CpuBackend, a).unwrap())
        .collect();
    let mut cache = abs.iter().fold(
        Default::default(),
        |c: cairn_kernels::prepack::PackCache, ab| c.and_model(ab.as_slice()),
    );
    let best = cairn_kernels::prepack::with_cache(&mut cache, || {
        for (it, &(_, on)) in its.iter_mut().zip(&models) {
            allow_vnni(on);
            it.input_bytes_mut(0).unwrap().copy_from_slice(input);
            it.invoke().unwrap();
        }
        let mut best = [f64::MAX; N];
        for _ in 0..40 {
            for ((it, best), &(_, on)) in its.iter_mut().zip(&mut best).zip(&models) {
                allow_vnni(on);
                let t = std::time::Instant::now();
                for _ in 0..5 {
                    it.invoke().unwrap();
                }
                *best = best.min(t.elapsed().as_secs_f64() / 5.0);
            }
        }
        best
    });
    allow_vnni(true);
    best
}

/// One line of the throughput table: GMAC/s of the int16 and u8×s8 paths, and of VNNI on
/// the 8-bit weights where the CPU has it, with the ratios to int16.
fn report(what: &str, macs: f64, m8: &[u8], m7: &[u8], input: &[u8]) {
    // U8S8_LAYER=text times only the layers whose name holds it (for `perf record`).
    if std::env::var("U8S8_LAYER").is_ok_and(|only| !what.contains(&only)) {
        return;
    }
    let [t8, t7, tv] = time_models([(m8, false), (m7, false), (m8, true)], input);
    let vnni = match vnni_hardware() {
        Some(_) => format!(
            ", vnni (8-bit) {:6.1} GMAC/s, x{:.2}",
            macs / tv / 1e9,
            t8 / tv
        ),
        None => String::new(),
    };
    println!(
        "{what}: int16 pairs {:6.1} GMAC/s, u8s8 {:6.1} GMAC/s, x{:.2}{vnni}",
        macs / t8 / 1e9,
        macs / t7 / 1e9,
        t8 / t7
    );
}

#[test]
#[ignore]
fn gemm_u8s8_throughput() {
    // (c, h, w, oc, k, stride): PP-OCR det / YOLOX / PicoDet-like layers.
    let convs = [
        (3, 320, 320, 16, 3, 2),
        (16, 160, 160, 32, 3, 1),
        (32, 80, 80, 64, 3, 1),
        (64, 40, 40, 128, 3, 1),
        (128, 20, 20, 256, 3, 1),
        (96, 40, 40, 96, 3, 2),
        (64, 80, 80, 64, 1, 1),
        (256, 20, 20, 256, 1, 1),
        // MobileNetV2 ×1.4 at 224: pointwise layers.
        (24, 112, 112, 144, 1, 1),
        (144, 56, 56, 32, 1, 1),
        (32, 56, 56, 192, 1, 1),
        (816, 14, 14, 136, 1, 1),
        (448, 7, 7, 1792, 1, 1),
    ];
    let mut r = Rng(seed());
    for (c, h, w, oc, k, s) in convs {
        let cs = ConvCase {
            n: 1,
            c,
            h,
            w,
            oc,
            k: (k, k),
            stride: (s, s),
            pad: [k / 2; 4],
            dil: (1, 1),
            group: 1,
        };
        let input = inputs(&mut r, c * h * w);
        let mut r7 = Rng(r.next());
        let mut r8 = Rng(r7.0);
        let m7 = conv_model(&mut r7, &cs, false).unwrap().finish().unwrap();
        let m8 = conv_model(&mut r8, &cs, true).unwrap().finish().unwrap();
        let (oh, ow) = ((h + 2 * (k / 2) - k) / s + 1, (w + 2 * (k / 2) - k) / s + 1);
        let macs = (oc * oh * ow * c * k * k) as f64;
        let what = format!("conv {c}x{h}x{w} -> {oc} k{k} s{s}");
        report(&what, macs, &m8, &m7, &input);
    }
    for (m, k, n) in [(128, 384, 1536), (128, 1536, 384), (64, 512, 512)] {
        let input = inputs(&mut r, m * k);
        let mut r7 = Rng(r.next());
        let mut r8 = Rng(r7.0);
        let m7 = fc_model(&mut r7, m, k, n, false);
        let m8 = fc_model(&mut r8, m, k, n, true);
        let what = format!("fc [{m}, {k}] x [{n}, {k}]");
        report(&what, (m * k * n) as f64, &m8, &m7, &input);
    }
}

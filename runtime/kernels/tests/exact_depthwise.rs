//! The int8 depthwise fast paths (`fast/depthwise.rs` on AVX2 hosts,
//! `fast/depthwise_neon.rs` on aarch64) equal the reference kernel bit for bit on random
//! shapes, params and data (seeded: `CAIRN_SEED`, printed on failure), and the path counter
//! says they ran.
//!
//! `cargo test -p cairn-kernels --features std --release --test exact_depthwise -- --ignored
//! --nocapture` also prints the GMAC/s of MobileNet / PP-LCNet depthwise layers (no timed
//! assertion).

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::op::conv;
use cairn_core::{DType, OpKind};
use cairn_kernels::paths::{allow_small_depthwise, allow_vnni, taken, vnni_hardware, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{multiplier_top, run, seed, tensor, ConvCase, Rng};

/// Zero points, scales and activation ranges of one random depthwise conv.
struct Quant {
    zx: i32,
    zy: i32,
    per_channel: bool,
    lo: i32,
    hi: i32,
    bias: bool,
    /// A folded PRelu: a second multiplier per channel for accumulators below zero.
    prelu: bool,
}

fn random_quant(r: &mut Rng) -> Quant {
    // The extremes of the zero points are where padding and clamping go wrong.
    let z = |r: &mut Rng| match r.next() % 5 {
        0 => -128,
        1 => 127,
        _ => r.range(0, 255) as i32 - 128,
    };
    let (zx, zy) = (z(r), z(r));
    let (lo, hi) = if r.next().is_multiple_of(3) {
        (zy.max(-128), (zy + r.range(0, 127) as i32).min(127))
    } else {
        (-128, 127)
    };
    Quant {
        zx,
        zy,
        per_channel: !r.next().is_multiple_of(3),
        lo,
        hi,
        bias: !r.next().is_multiple_of(4),
        prelu: false,
    }
}

/// A one-op depthwise conv model (channel multiplier `cs.oc / cs.c`), or `None` when the
/// kernel does not fit the padded input.
fn depthwise_model(r: &mut Rng, cs: &ConvCase, qs: &Quant) -> Option<Vec<u8>> {
    let eh = cs.dil.0 * (cs.k.0 - 1) + 1;
    let ew = cs.dil.1 * (cs.k.1 - 1) + 1;
    let (ph, pw) = (cs.h + cs.pad[0] + cs.pad[2], cs.w + cs.pad[1] + cs.pad[3]);
    if ph < eh || pw < ew {
        return None;
    }
    let oh = (ph - eh) / cs.stride.0 + 1;
    let ow = (pw - ew) / cs.stride.1 + 1;
    let wn = cs.oc * cs.k.0 * cs.k.1;
    // Full int8 range, -128 included: the fast path must not assume symmetric weights.
    let wq: Vec<u8> = (0..wn).map(|_| r.i8() as u8).collect();
    let top = multiplier_top(r);
    let one_scale = r.f(0.0005, top);
    let mut rq: Vec<u8> = (0..cs.oc)
        .flat_map(|_| {
            let s = if qs.per_channel {
                r.f(0.0005, top)
            } else {
                one_scale
            };
            s.to_le_bytes()
        })
        .collect();
    // A folded PRelu: each channel's multiplier below zero is its slope (in [−1, 1])
    // times the one above.
    if qs.prelu {
        let neg: Vec<u8> = rq
            .chunks_exact(4)
            .flat_map(|b| {
                let s = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                (s * r.f(-1.0, 1.0)).to_le_bytes()
            })
            .collect();
        rq.extend(neg);
    }
    let bias: Vec<u8> = (0..cs.oc)
        .flat_map(|_| ((r.next() % 40001) as i32 - 20000).to_le_bytes())
        .collect();
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(tensor(
        DType::I8,
        &[cs.n, cs.c, cs.h, cs.w],
        QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: qs.zx,
        },
        None,
    ));
    let w = b.add_tensor(tensor(
        DType::I8,
        &[cs.oc, 1, cs.k.0, cs.k.1],
        QuantSpec::PerAxis {
            axis: 0,
            scales: vec![0.01; cs.oc],
            zero_points: vec![0; cs.oc],
        },
        Some(wq),
    ));
    let bb = b.add_tensor(tensor(DType::I32, &[cs.oc], QuantSpec::None, Some(bias)));
    let n_mult = rq.len() / 4;
    let rqt = b.add_tensor(tensor(DType::F32, &[n_mult], QuantSpec::None, Some(rq)));
    let y = b.add_tensor(tensor(
        DType::I8,
        &[cs.n, cs.oc, oh, ow],
        QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: qs.zy,
        },
        None,
    ));
    let mut params = common::conv_params(cs, cs.c);
    params[conv::ACT_LO] = qs.lo;
    params[conv::ACT_HI] = qs.hi;
    b.ops.push(OpSpec {
        kind: OpKind::Conv,
        inputs: vec![Some(x), Some(w), qs.bias.then_some(bb), Some(rqt)],
        outputs: vec![y],
        params,
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    Some(b.finish().expect("valid depthwise model"))
}

/// Whether this host runs a SIMD depthwise kernel and counts it (x86_64 with AVX2 and
/// aarch64, with `std`: the path counters exist with `std` only).
fn simd_host() -> bool {
    if !cfg!(feature = "std") {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        cfg!(all(target_arch = "aarch64", target_feature = "neon"))
    }
}

/// Run one case on both backends; `Some(true)` when the fast kernel ran, `None` when the
/// case does not make a conv.
fn check(r: &mut Rng, cs: &ConvCase, seed: u64, case: usize) -> Option<bool> {
    let qs = random_quant(r);
    let bytes = depthwise_model(r, cs, &qs)?;
    let input: Vec<u8> = (0..cs.n * cs.c * cs.h * cs.w)
        .map(|_| r.i8() as u8)
        .collect();
    let reference = run(&bytes, RefBackend, &input);
    let before = taken(Path::DepthwiseSimd);
    let fast = run(&bytes, CpuBackend, &input);
    let ran = taken(Path::DepthwiseSimd) > before;
    assert_eq!(
        fast, reference,
        "CAIRN_SEED={seed} case {case}: {cs:?} zx {} zy {} act {}..={} per-channel {}",
        qs.zx, qs.zy, qs.lo, qs.hi, qs.per_channel
    );
    Some(ran)
}

/// Kernels 3, 5, 7 (and 1, 2, 4), strides 1 and 2, asymmetric pads, odd widths, wide rows.
#[test]
fn depthwise_simd_matches_reference() {
    let seed = seed() ^ 0xD3;
    let mut r = Rng(seed);
    let (mut cases, mut fast) = (0, 0);
    for case in 0..400 {
        let c = r.range(2, 20);
        let k = match r.next() % 8 {
            0 => r.range(1, 4),
            1..=3 => 3,
            4..=6 => 5,
            _ => 7,
        };
        let s = r.range(1, 2);
        let wide = case % 4 == 0;
        let cs = ConvCase {
            n: r.range(1, 2),
            c,
            h: r.range(1, if wide { 40 } else { 24 }),
            w: r.range(1, if wide { 200 } else { 40 }),
            oc: c,
            k: (k, k),
            stride: (s, s),
            pad: [
                r.range(0, k / 2 + 1),
                r.range(0, k / 2 + 1),
                r.range(0, k / 2 + 1),
                r.range(0, k / 2 + 1),
            ],
            dil: (1, 1),
            group: c,
        };
        // Every other case keeps small maps on the plane kernel (the channels-last one
        // has its own test below).
        let before = allow_small_depthwise(case % 2 == 0);
        let result = check(&mut r, &cs, seed, case);
        allow_small_depthwise(before);
        if let Some(ran) = result {
            cases += 1;
            fast += ran as usize;
        }
    }
    assert!(cases > 300, "{cases}");
    if simd_host() {
        assert_eq!(
            fast, cases,
            "every dilation-1 depthwise conv takes the SIMD kernel"
        );
    }
}

/// Whether the CPU has AVX-512 VBMI and BW (the VNNI depthwise kernel's byte permutes).
fn vbmi() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512vbmi") && std::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Where the CPU has AVX-512 VNNI and VBMI, every case runs twice: on the VNNI quad kernel
/// (`fast/depthwise_vnni.rs`) and, with VNNI turned off (`paths::allow_vnni`), on the AVX2
/// pair kernel; both equal the reference, and the path counters say which ran. Narrow
/// rows (two rows a vector), rows of 9–16 outputs (one masked vector) and wide rows (the
/// last vector pulled back to the row's end) all come up.
#[test]
fn depthwise_vnni_and_avx2_match_reference() {
    let seed = seed() ^ 0xD5;
    let mut r = Rng(seed);
    // `CAIRN_VNNI=0` (a run that stands in for a host without VNNI) turns the kernel off.
    let env_off = std::env::var("CAIRN_VNNI").is_ok_and(|v| v == "0");
    let vnni = vnni_hardware().is_some() && vbmi() && !env_off;
    if !vnni {
        eprintln!("no AVX-512 VNNI + VBMI here (or CAIRN_VNNI=0): the VNNI depthwise kernel is not tested");
    }
    // Small maps would take the channels-last kernel first.
    let small = allow_small_depthwise(false);
    let (mut cases, mut on_vnni) = (0, 0);
    for case in 0..240 {
        // One channel would be a one-group conv.
        let c = r.range(2, 12);
        let k = match r.next() % 6 {
            0 => r.range(1, 8),
            1..=3 => 3,
            4 => 5,
            _ => 7,
        };
        // At most 49 taps: larger kernels take the general conv path.
        let kh = if r.next().is_multiple_of(5) || k == 8 {
            r.range(1, 49 / k)
        } else {
            k
        };
        let s = r.range(1, 2);
        let w = match case % 3 {
            0 => r.range(1, 18),
            1 => r.range(9, 40),
            _ => r.range(30, 150),
        };
        let cs = ConvCase {
            n: r.range(1, 2),
            c,
            h: r.range(1, 20),
            w,
            oc: c,
            k: (kh, k),
            stride: (r.range(1, 3), s),
            pad: [
                r.range(0, kh / 2 + 1),
                r.range(0, k / 2 + 1),
                r.range(0, kh / 2 + 1),
                r.range(0, k / 2 + 1),
            ],
            dil: (1, 1),
            group: c,
        };
        let modes: &[bool] = if vnni { &[true, false] } else { &[false] };
        for &on in modes {
            // The same model and input for both modes.
            let mut rr = Rng(r.0 ^ case as u64);
            allow_vnni(on);
            let before = taken(Path::DepthwiseVnni);
            let result = check(&mut rr, &cs, seed, case);
            let ran = taken(Path::DepthwiseVnni) > before;
            allow_vnni(true);
            let Some(simd) = result else { break };
            if on {
                cases += 1;
                on_vnni += ran as usize;
                assert!(
                    simd,
                    "CAIRN_SEED={seed} case {case}: {cs:?} took no SIMD kernel"
                );
            } else {
                assert!(
                    !ran,
                    "CAIRN_SEED={seed} case {case}: VNNI off, yet its kernel ran"
                );
            }
        }
    }
    allow_small_depthwise(small);
    if vnni {
        assert!(cases > 150, "{cases}");
        assert_eq!(
            on_vnni, cases,
            "every case takes the VNNI kernel where the CPU has it"
        );
    }
}

/// Small maps on the channels-last kernel (`fast/depthwise_cl.rs`): channel counts that
/// leave partial blocks of sixteen, one and two images, square and non-square kernels up
/// to 7 × 7 (odd and even widths), strides 1–3, dilations 1–2, asymmetric padding, a
/// folded PRelu, clamps; equal to the reference, and the path counter says the kernel ran
/// wherever the map is small.
#[test]
fn small_depthwise_matches_reference() {
    let seed = seed() ^ 0xD6;
    let mut r = Rng(seed);
    let (mut cases, mut small, mut ran) = (0, 0, 0);
    for case in 0..300 {
        let c = match r.next() % 3 {
            0 => r.range(2, 16),
            1 => r.range(16, 40),
            _ => 16 * r.range(1, 3),
        };
        // Up to 7 × 7: larger kernels leave the conv fast paths.
        let k = match r.next() % 6 {
            0 => r.range(1, 7),
            1..=3 => 3,
            4 => 5,
            _ => 7,
        };
        let kh = if r.next().is_multiple_of(4) {
            r.range(1, 7)
        } else {
            k
        };
        let dil = if r.next().is_multiple_of(5) { 2 } else { 1 };
        let s = r.range(1, 3);
        let cs = ConvCase {
            n: r.range(1, 2),
            c,
            h: r.range(1, 16),
            w: r.range(1, 16),
            oc: c,
            k: (kh, k),
            stride: (r.range(1, 3), s),
            pad: [
                r.range(0, kh / 2 + 1),
                r.range(0, k / 2 + 1),
                r.range(0, kh / 2 + 1),
                r.range(0, k / 2 + 1),
            ],
            dil: (dil, if r.next().is_multiple_of(3) { 1 } else { dil }),
            group: c,
        };
        let mut qs = random_quant(&mut r);
        qs.prelu = r.next().is_multiple_of(3);
        let Some(bytes) = depthwise_model(&mut r, &cs, &qs) else {
            continue;
        };
        let input: Vec<u8> = (0..cs.n * cs.c * cs.h * cs.w)
            .map(|_| r.i8() as u8)
            .collect();
        let reference = run(&bytes, RefBackend, &input);
        let before = taken(Path::DepthwiseChannelsLast);
        let fast = run(&bytes, CpuBackend, &input);
        let took = taken(Path::DepthwiseChannelsLast) > before;
        assert_eq!(
            fast, reference,
            "CAIRN_SEED={seed} case {case}: {cs:?} zx {} zy {} act {}..={} per-channel {} prelu {} (channels-last kernel ran: {took})",
            qs.zx, qs.zy, qs.lo, qs.hi, qs.per_channel, qs.prelu
        );
        cases += 1;
        ran += took as usize;
        // The kernel takes every conv whose staged window (the rows and tap-pair columns
        // its outputs read) is at most 256 pixels.
        let eh = cs.dil.0 * (cs.k.0 - 1) + 1;
        let ew = cs.dil.1 * (cs.k.1 - 1) + 1;
        let oh = (cs.h + cs.pad[0] + cs.pad[2] - eh) / cs.stride.0 + 1;
        let ow = (cs.w + cs.pad[1] + cs.pad[3] - ew) / cs.stride.1 + 1;
        let hs = (oh - 1) * cs.stride.0 + eh;
        let ws = (ow - 1) * cs.stride.1 + 2 * (cs.k.1.div_ceil(2) - 1) * cs.dil.1 + 1;
        if hs * ws <= 256 {
            small += 1;
            if simd_host() && cfg!(target_arch = "x86_64") {
                assert!(
                    took,
                    "CAIRN_SEED={seed} case {case}: {cs:?} ({oh}×{ow}) missed the kernel"
                );
            }
        }
    }
    assert!(cases > 200 && small > 100, "{cases} {small}");
    if simd_host() && cfg!(target_arch = "x86_64") {
        assert_eq!(ran, small, "only small windows take the kernel");
    }
}

/// Mixed strides, non-square kernels and dilations: exact whichever path runs.
#[test]
fn depthwise_general_matches_reference() {
    let seed = seed() ^ 0xD4;
    let mut r = Rng(seed);
    let mut cases = 0;
    for case in 0..200 {
        let c = r.range(1, 9);
        let cs = ConvCase {
            n: 1,
            c,
            h: r.range(1, 30),
            w: r.range(1, 70),
            oc: c,
            k: (r.range(1, 7), r.range(1, 7)),
            stride: (r.range(1, 4), r.range(1, 4)),
            pad: [r.range(0, 3), r.range(0, 3), r.range(0, 3), r.range(0, 3)],
            dil: (r.range(1, 3), r.range(1, 3)),
            group: c,
        };
        cases += check(&mut r, &cs, seed, case).is_some() as usize;
    }
    assert!(cases > 100, "{cases}");
}

/// GMAC/s of the CPU backend on depthwise layers of MobileNet / PP-LCNet (timing only:
/// prints, asserts nothing about speed).
#[test]
#[ignore]
fn depthwise_throughput() {
    use cairn_core::emit::AlignedBytes;
    use cairn_core::{Interpreter, Model};
    let layers = [
        (16, 112, 112, 3, 1),
        (32, 112, 112, 3, 2),
        (64, 56, 56, 3, 1),
        (64, 56, 56, 3, 2),
        (128, 28, 28, 3, 1),
        (128, 28, 28, 3, 2),
        (256, 14, 14, 5, 1),
        (256, 14, 14, 5, 2),
        (512, 7, 7, 5, 1),
        (144, 56, 56, 3, 1),
        (816, 7, 7, 3, 1),
        // MobileNetV2 ×1.4 at 224.
        (144, 112, 112, 3, 2),
        (192, 56, 56, 3, 1),
        (576, 14, 14, 3, 1),
        (1344, 7, 7, 3, 1),
        (192, 56, 56, 3, 2),
        (288, 28, 28, 3, 1),
        (288, 28, 28, 3, 2),
        (528, 14, 14, 3, 1),
        (816, 14, 14, 3, 2),
        (128, 20, 20, 3, 1),
        (256, 16, 16, 3, 1),
        (480, 10, 10, 5, 1),
    ];
    let mut r = Rng(seed());
    // DW_LAYER=i runs layer i alone (for `perf stat`).
    let only: Option<usize> = std::env::var("DW_LAYER").ok().and_then(|v| v.parse().ok());
    for (i, (c, h, w, k, s)) in layers.into_iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
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
        let qs = random_quant(&mut r);
        let bytes = depthwise_model(&mut r, &cs, &qs).unwrap();
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let mut arena = vec![0u8; m.arena_bytes() + 16];
        let mut it = Interpreter::new(m, CpuBackend, &mut arena).unwrap();
        let (oh, ow) = ((h + 2 * (k / 2) - k) / s + 1, (w + 2 * (k / 2) - k) / s + 1);
        let macs = (c * oh * ow * k * k) as f64;
        // The AVX2 plane kernel, the channels-last one where the map is small enough
        // (`cl`), and where the CPU has VNNI the VNNI plane kernel: rounds interleaved so
        // that all see the same load.
        let mut modes = vec![("avx2", false, false)];
        if (oh * ow) <= 1024 {
            modes.push(("cl", false, true));
        }
        if vnni_hardware().is_some() {
            modes.push(("vnni", true, false));
        }
        let mut best = vec![f64::MAX; modes.len()];
        for _ in 0..15 {
            for (m, &(_, vnni, cl)) in modes.iter().enumerate() {
                allow_vnni(vnni);
                allow_small_depthwise(cl);
                let t = std::time::Instant::now();
                for _ in 0..20 {
                    it.invoke().unwrap();
                }
                best[m] = best[m].min(t.elapsed().as_secs_f64() / 20.0);
            }
        }
        allow_vnni(true);
        allow_small_depthwise(true);
        let shown: Vec<String> = modes
            .iter()
            .zip(&best)
            .map(|(&(name, _, _), &b)| {
                format!("{name}: {:8.1} us {:6.2} GMAC/s", b * 1e6, macs / b / 1e9)
            })
            .collect();
        println!("dw {c}x{h}x{w} k{k} s{s}: {}", shown.join(" | "));
    }
}

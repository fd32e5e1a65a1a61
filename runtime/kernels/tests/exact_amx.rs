//! One-group int8 convs on AMX tiles (`fast/amx_conv.rs`: an implicit GEMM over a
//! channels-last staged input) equal the reference bit for bit: random geometries big
//! enough to take the path (strides, pads, vertical dilation, batches, maps narrower than
//! a tile, 7- and 8-bit weights, folded PRelus), inputs at the extremes a third of the
//! time, at 1 to 3 threads, and the same with AMX turned off (`paths::allow_amx`). On a
//! host with AMX and VNNI the path counter proves the tiles ran; elsewhere the test
//! compares the other fast paths with the reference. Seeded: `CAIRN_SEED`, printed on
//! failure.

use cairn_kernels::par::{with_pool, Pool};
use cairn_kernels::paths::{allow_amx, amx, taken, vnni, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{conv_model, run, seed, ConvCase, ConvOpts, Rng};

#[test]
fn amx_convs_match_reference() {
    let seed = seed() ^ 0xA3C;
    let mut r = Rng(seed);
    let before = taken(Path::ConvAmx);
    let (mut built, mut on_tiles) = (0, 0);
    let mut expected = 0u64;
    // Until 50 convs were built and, on an AMX host, 20 of them took the tiles.
    for case in 0..400 {
        if built >= 50 && (on_tiles >= 20 || !(amx() && vnni().is_some())) {
            break;
        }
        let k = [(1, 1), (3, 3), (5, 5), (1, 7), (3, 1), (2, 4)][r.range(0, 5)];
        let s = r.range(1, 2);
        let cs = ConvCase {
            n: [1, 1, 2][r.range(0, 2)],
            c: [r.range(12, 40), r.range(41, 130)][r.range(0, 1)],
            h: r.range(6, 40),
            w: [r.range(2, 12), r.range(13, 60)][r.range(0, 1)],
            oc: [r.range(4, 20), r.range(21, 90)][r.range(0, 1)],
            k,
            stride: (s, [s, 1, 2][r.range(0, 2)]),
            pad: [0; 4].map(|_| r.range(0, k.0 / 2 + 1)),
            // Vertical dilation runs on the tiles; horizontal dilation does not.
            dil: (r.range(1, 2), [1, 1, 1, 2][r.range(0, 3)]),
            group: 1,
        };
        let opts = ConvOpts {
            seven: r.range(0, 1) == 0,
            prelu: case % 3 == 1,
        };
        let Some(b) = conv_model(&mut r, &cs, opts) else {
            continue;
        };
        let bytes = b.finish().expect("valid conv model");
        let input: Vec<u8> = (0..cs.n * cs.c * cs.h * cs.w)
            .map(|_| match r.range(0, 5) {
                0 => 0x80,
                1 => 0x7F,
                _ => r.i8() as u8,
            })
            .collect();
        let what = || format!("CAIRN_SEED={seed} case {case}: {cs:?} {opts:?}");
        let reference = run(&bytes, RefBackend, &input);
        let at = taken(Path::ConvAmx);
        assert_eq!(run(&bytes, CpuBackend, &input), reference, "{}", what());
        let took = taken(Path::ConvAmx) > at;
        expected += took as u64;
        on_tiles += took as usize;
        for threads in 2..=3 {
            let pool = Pool::new(threads)
                .expect("a thread pool")
                .with_min_part_work(1);
            let got = with_pool(&pool, || run(&bytes, CpuBackend, &input));
            assert_eq!(got, reference, "{threads} threads: {}", what());
            expected += took as u64;
        }
        let was = allow_amx(false);
        let off = run(&bytes, CpuBackend, &input);
        allow_amx(was);
        assert_eq!(off, reference, "AMX off: {}", what());
        built += 1;
    }
    assert!(built >= 50, "CAIRN_SEED={seed}: {built} convs built");
    if amx() && vnni().is_some() {
        let ran = taken(Path::ConvAmx) - before;
        assert_eq!(ran, expected, "CAIRN_SEED={seed}");
        println!("{on_tiles} of {built} convs on the tiles");
        assert!(
            on_tiles >= 20,
            "CAIRN_SEED={seed}: {on_tiles} convs on the tiles"
        );
    }
}

/// Per-layer time of one-group convs with AMX on and off, rounds interleaved (run with
/// `--ignored --nocapture` on an AMX host): the shapes where the tiles lose are the ones
/// `amx_conv::fits` must leave to the AVX-512 / AVX2 kernels.
#[test]
#[ignore]
fn amx_conv_throughput() {
    use cairn_core::emit::AlignedBytes;
    use cairn_core::{Interpreter, Model};
    use cairn_kernels::prepack::{with_cache, PackCache};
    // (c, h, w, oc, k, stride): MobileNetV2 ×1.4's pointwise convs, and 3×3 ones.
    let layers = [
        (24, 112, 112, 144, 1, 1),
        (144, 56, 56, 32, 1, 1),
        (192, 56, 56, 32, 1, 1),
        (32, 56, 56, 192, 1, 1),
        (192, 28, 28, 48, 1, 1),
        (288, 28, 28, 48, 1, 1),
        (48, 28, 28, 288, 1, 1),
        (288, 14, 14, 88, 1, 1),
        (528, 14, 14, 88, 1, 1),
        (88, 14, 14, 528, 1, 1),
        (528, 14, 14, 136, 1, 1),
        (816, 14, 14, 136, 1, 1),
        (136, 14, 14, 816, 1, 1),
        (816, 7, 7, 224, 1, 1),
        (1344, 7, 7, 224, 1, 1),
        (224, 7, 7, 1344, 1, 1),
        (1344, 7, 7, 448, 1, 1),
        (448, 7, 7, 1792, 1, 1),
        (32, 56, 56, 64, 3, 1),
        (64, 28, 28, 128, 3, 1),
        (128, 14, 14, 256, 3, 2),
    ];
    let mut r = Rng(seed());
    if !(amx() && vnni().is_some()) {
        println!("no AMX here");
        return;
    }
    // AMX_LAYER=i runs layer i alone (for `perf`).
    let only: Option<usize> = std::env::var("AMX_LAYER").ok().and_then(|v| v.parse().ok());
    let (pool1, pool2) = (Pool::new(1).unwrap(), Pool::new(2).unwrap());
    // AMX_MODE=m times one setting alone: 0 AMX, 1 off, 2 AMX on two threads, 3 off.
    let only_mode: Option<usize> = std::env::var("AMX_MODE").ok().and_then(|v| v.parse().ok());
    println!(
        "layer (c h w oc k s)  1 thread: AMX µs   off µs off/AMX  2 threads: AMX   off off/AMX"
    );
    for (i, (c, h, w, oc, k, s)) in layers.into_iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
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
        let o = ConvOpts {
            seven: true,
            prelu: false,
        };
        let bytes = conv_model(&mut r, &cs, o).unwrap().finish().unwrap();
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let mut arena = vec![0u8; m.arena_bytes() + 16];
        let mut it = Interpreter::new(m, CpuBackend, &mut arena).unwrap();
        // Packed weights live in the cache, as in a `HostModel`: packed once per mode.
        let mut cache = PackCache::for_model(ab.as_slice());
        // AMX on and off, at one thread and at two.
        let mut best = [f64::MAX; 4];
        let rounds = if only.is_some() { 4000 } else { 40 };
        for round in 0..rounds {
            let (on, two) = (round % 2 == 0, round % 4 >= 2);
            if only_mode.is_some_and(|m| m != round % 4) {
                continue;
            }
            let was = allow_amx(on);
            let pool = if two { &pool2 } else { &pool1 };
            let t = with_pool(pool, || {
                with_cache(&mut cache, || {
                    it.invoke().unwrap();
                    let t0 = std::time::Instant::now();
                    for _ in 0..5 {
                        it.invoke().unwrap();
                    }
                    t0.elapsed().as_secs_f64() * 1e6 / 5.0
                })
            });
            allow_amx(was);
            let k = usize::from(!on) + 2 * usize::from(two);
            best[k] = best[k].min(t);
        }
        // A setting AMX_MODE left out prints as "-".
        let t = |v: f64| {
            if v < f64::MAX {
                format!("{v:.1}")
            } else {
                "-".into()
            }
        };
        let r = |a: f64, b: f64| {
            if a < f64::MAX && b < f64::MAX {
                format!("{:.2}", a / b)
            } else {
                "-".into()
            }
        };
        println!(
            "{:<26} {:>8} {:>8} {:>6} {:>8} {:>8} {:>6}",
            format!("{c} {h} {w} {oc} {k} {s}"),
            t(best[0]),
            t(best[1]),
            r(best[1], best[0]),
            t(best[2]),
            t(best[3]),
            r(best[3], best[2])
        );
    }
}

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

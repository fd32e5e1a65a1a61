//! FullyConnected.f32-w8 (f32 rows quantized at run time, symmetric int8 weights, f32 out:
//! what ONNX's dynamic quantization computes): the reference kernel follows its written
//! rule (checked against an independent computation here), stays close to the float
//! product, and the fast path equals it bit for bit on every block mode and thread count
//! (seeded: `CAIRN_SEED`, printed on failure).

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::{DType, OpKind};
use cairn_kernels::par::{with_pool, Pool};
use cairn_kernels::paths::{allow_amx, allow_avx512, allow_vnni, amx, taken, Path};
use cairn_kernels::{CpuBackend, RefBackend};

mod common;
use common::{run, run_cached, seed, tensor, Rng};

/// One case: x `[rows.., k]` f32, weights `[n, k]` int8 (7-bit when `narrow`), scales per
/// row or one, optional bias, clamp `(lo, hi)`.
struct Case {
    rows: Vec<usize>,
    k: usize,
    n: usize,
    w: Vec<i8>,
    sw: Vec<f32>,
    bias: Option<Vec<f32>>,
    lo: f32,
    hi: f32,
}

impl Case {
    fn random(r: &mut Rng, rows: Vec<usize>, k: usize, n: usize, narrow: bool) -> Case {
        let w = (0..n * k)
            .map(|_| {
                let v = r.i8().max(-127);
                if narrow {
                    v >> 1
                } else {
                    v
                }
            })
            .collect();
        let per_row = r.range(0, 3) > 0;
        let sw = (0..if per_row { n } else { 1 })
            .map(|_| r.f(0.001, 0.05))
            .collect();
        let bias = (r.range(0, 2) > 0).then(|| (0..n).map(|_| r.f(-1.0, 1.0)).collect());
        let (lo, hi) = match r.range(0, 2) {
            0 => (f32::NEG_INFINITY, f32::INFINITY),
            1 => (0.0, f32::INFINITY),
            _ => (-0.5, 0.75),
        };
        Case {
            rows,
            k,
            n,
            w,
            sw,
            bias,
            lo,
            hi,
        }
    }

    fn model(&self) -> Vec<u8> {
        let mut b = ModelBuilder::default();
        let dims = |last: usize| self.rows.iter().copied().chain([last]).collect::<Vec<_>>();
        let x = b.add_tensor(tensor(DType::F32, &dims(self.k), QuantSpec::None, None));
        let quant = if self.sw.len() == 1 {
            QuantSpec::PerTensor {
                scale: self.sw[0],
                zero_point: 0,
            }
        } else {
            QuantSpec::PerAxis {
                axis: 0,
                scales: self.sw.clone(),
                zero_points: vec![0; self.n],
            }
        };
        let wbytes = self.w.iter().map(|&v| v as u8).collect();
        let w = b.add_tensor(tensor(DType::I8, &[self.n, self.k], quant, Some(wbytes)));
        let bias = self.bias.as_ref().map(|v| {
            let data = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            b.add_tensor(tensor(DType::F32, &[self.n], QuantSpec::None, Some(data)))
        });
        let y = b.add_tensor(tensor(DType::F32, &dims(self.n), QuantSpec::None, None));
        b.ops.push(OpSpec {
            kind: OpKind::FullyConnected,
            inputs: vec![Some(x), Some(w), bias],
            outputs: vec![y],
            params: vec![self.lo.to_bits() as i32, self.hi.to_bits() as i32],
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        b.finish().expect("a valid FullyConnected.f32-w8 model")
    }

    /// The written rule, computed here independently: per row, the range with 0 in it over
    /// 255 steps, u8 values round-half-even, exact integer sums, then `acc·(s·sw) + b`.
    fn expected(&self, x: &[f32]) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut y = Vec::new();
        for xr in x.chunks_exact(k) {
            let lo = xr
                .iter()
                .filter(|v| !v.is_nan())
                .fold(0f32, |a, &v| a.min(v));
            let hi = xr
                .iter()
                .filter(|v| !v.is_nan())
                .fold(0f32, |a, &v| a.max(v));
            let mut s = (hi - lo) / 255.0;
            if !(s > 0.0 && s.is_finite()) {
                s = 1.0;
            }
            let zp = (-lo / s).round_ties_even().clamp(0.0, 255.0) as i64;
            let q: Vec<i64> = xr
                .iter()
                .map(|&v| {
                    if v.is_nan() {
                        0
                    } else {
                        ((v / s).round_ties_even() + zp as f32).clamp(0.0, 255.0) as i64 - zp
                    }
                })
                .collect();
            for j in 0..n {
                let acc: i64 = (0..k).map(|t| q[t] * self.w[j * k + t] as i64).sum();
                let sw = self.sw[if self.sw.len() == 1 { 0 } else { j }];
                let b = self.bias.as_ref().map_or(0.0, |b| b[j]);
                y.push((acc as i32 as f32 * (s * sw) + b).max(self.lo).min(self.hi));
            }
        }
        y
    }

    /// The float product `x · Wᵀ·sw + b`, clamped.
    fn float(&self, x: &[f32]) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut y = Vec::new();
        for xr in x.chunks_exact(k) {
            for j in 0..n {
                let sw = self.sw[if self.sw.len() == 1 { 0 } else { j }] as f64;
                let acc: f64 = (0..k)
                    .map(|t| xr[t] as f64 * self.w[j * k + t] as f64 * sw)
                    .sum();
                let b = self.bias.as_ref().map_or(0.0, |b| b[j]) as f64;
                y.push(((acc + b) as f32).max(self.lo).min(self.hi));
            }
        }
        y
    }
}

/// Rows of several kinds: centred, one-sided (after a ReLU), all zero, with an outlier.
fn input(r: &mut Rng, m: usize, k: usize, nan: bool) -> Vec<f32> {
    let mut x = Vec::with_capacity(m * k);
    for _ in 0..m {
        let kind = r.range(0, 4);
        for _ in 0..k {
            x.push(match kind {
                0 => r.f(-2.0, 2.0),
                1 => r.f(0.0, 3.0),
                2 => 0.0,
                3 => r.f(-4.0, -0.5),
                _ => {
                    if r.range(0, 50) == 0 {
                        r.f(20.0, 40.0)
                    } else {
                        r.f(-1.0, 1.0)
                    }
                }
            });
        }
    }
    if nan && !x.is_empty() {
        let at = r.range(0, x.len() - 1);
        x[at] = f32::NAN;
        // And an infinity in some cases (its row's scale is then 1).
        if r.range(0, 1) == 0 {
            let at = r.range(0, x.len() - 1);
            x[at] = [f32::INFINITY, f32::NEG_INFINITY][r.range(0, 1)];
        }
    }
    x
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn bytes_of(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Whether the FC block runs its VNNI quads on 512-bit registers here.
fn vnni512_host() -> bool {
    #[cfg(target_arch = "x86_64")]
    return cairn_kernels::paths::vnni() == Some(cairn_kernels::paths::Vnni::Evex)
        && cairn_kernels::paths::avx512_f32()
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn avx2_host() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[test]
fn reference_follows_the_rule_and_the_float_product() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x5A8);
    for case in 0..40 {
        let (m, k, n) = (r.range(1, 9), r.range(1, 300), r.range(1, 80));
        let narrow = r.range(0, 1) == 0;
        let c = Case::random(&mut r, vec![m], k, n, narrow);
        let x = input(&mut r, m, k, case % 7 == 3);
        let got = f32s(&run(&c.model(), RefBackend, &bytes_of(&x)));
        let what = format!("CAIRN_SEED={seed} case {case}: [{m}, {k}] x [{n}, {k}]");
        let want = c.expected(&x);
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), e.to_bits(), "{what}: output {i}: {g} vs {e}");
        }
        // Without NaN: within the rounding of x (half a step per value) of the float
        // product.
        if case % 7 != 3 {
            let f = c.float(&x);
            for (i, xr) in x.chunks_exact(k).enumerate() {
                let lo = xr.iter().fold(0f32, |a, &v| a.min(v));
                let hi = xr.iter().fold(0f32, |a, &v| a.max(v));
                let step = (hi - lo) / 255.0;
                for j in 0..n {
                    let sw = c.sw[if c.sw.len() == 1 { 0 } else { j }];
                    let wabs: f32 = (0..k).map(|t| (c.w[j * k + t] as f32).abs()).sum();
                    let bound = 0.5 * step * wabs * sw * 1.01 + 1e-4;
                    let (g, e) = (got[i * n + j], f[i * n + j]);
                    assert!(
                        (g - e).abs() <= bound,
                        "{what}: row {i} col {j}: {g} vs float {e} (bound {bound})"
                    );
                }
            }
        }
    }
}

#[test]
fn fast_path_equals_the_reference() {
    let seed = seed();
    let mut r = Rng(seed ^ 0xF38);
    let before = taken(Path::FcW8);
    let before512 = taken(Path::FcVnni512);
    let before_amx = taken(Path::GemmAmx);
    let before_panels = taken(Path::GemvPanels);
    let (mut runs, mut one_row_cached) = (0, 0);
    for case in 0..48 {
        let lead = r.range(1, 2);
        let m = [1, 2, r.range(3, 40), r.range(100, 200)][r.range(0, 3)];
        // Rows shorter than a vector, with a partial vector after whole ones, and long.
        let k = [
            r.range(1, 20),
            r.range(17, 60),
            r.range(60, 400),
            r.range(700, 1600),
        ][r.range(0, 3)];
        let n = [r.range(1, 40), r.range(100, 700)][r.range(0, 1)];
        let narrow = r.range(0, 2) == 0;
        let c = Case::random(&mut r, vec![lead, m], k, n, narrow);
        let x = bytes_of(&input(&mut r, lead * m, k, case % 9 == 4));
        let model = c.model();
        let expect = run(&model, RefBackend, &x);
        let what = format!(
            "CAIRN_SEED={seed} case {case}: [{lead}, {m}, {k}] x [{n}, {k}], narrow {narrow}"
        );
        // Packed per call, and from a pack cache (VNNI quads where the CPU has them).
        assert_eq!(run(&model, CpuBackend, &x), expect, "{what}");
        assert_eq!(run_cached(&model, &x), expect, "{what} (cached)");
        if m <= 2 {
            // One or two rows from a pack cache: the int8 GEMV's weight panels, on one
            // thread and split across three.
            one_row_cached += 2;
            let pool = Pool::new(3).expect("a pool").with_min_part_work(1);
            let got = with_pool(&pool, || run_cached(&model, &x));
            assert_eq!(got, expect, "{what} (cached, 3 threads)");
            runs += 2;
        }
        // Without VNNI: int16 pairs, or vpmaddubsw quads for 7-bit weights.
        let was = allow_vnni(false);
        let no_vnni = run(&model, CpuBackend, &x);
        allow_vnni(was);
        assert_eq!(no_vnni, expect, "{what} (no VNNI)");
        // Rows quantized on eight lanes (the same on a host without AVX-512).
        let was = allow_avx512(false);
        let no_512 = run(&model, CpuBackend, &x);
        allow_avx512(was);
        assert_eq!(no_512, expect, "{what} (no AVX-512)");
        // VNNI without AMX tiles (the same on a host without AMX).
        let was = allow_amx(false);
        let no_amx = run(&model, CpuBackend, &x);
        allow_amx(was);
        assert_eq!(no_amx, expect, "{what} (no AMX)");
        runs += 6; // run_cached runs twice
        if case % 4 == 0 {
            for t in [2, 3] {
                let pool = Pool::new(t).expect("a pool").with_min_part_work(1);
                let got = with_pool(&pool, || run(&model, CpuBackend, &x));
                assert_eq!(got, expect, "{what} ({t} threads)");
                runs += 1;
            }
        }
    }
    if avx2_host() {
        assert_eq!(taken(Path::FcW8) - before, runs, "CAIRN_SEED={seed}");
        assert!(
            taken(Path::GemvPanels) - before_panels >= 2 * one_row_cached,
            "CAIRN_SEED={seed}"
        );
    }
    // Rows of three or more on 512-bit vpdpbusd where the host has it.
    if vnni512_host() {
        assert!(taken(Path::FcVnni512) > before512, "CAIRN_SEED={seed}");
    }
    // And on AMX tiles where the host has them.
    if amx() && cairn_kernels::paths::vnni().is_some() {
        assert!(taken(Path::GemmAmx) > before_amx, "CAIRN_SEED={seed}");
    }
}

/// The load rules: asymmetric, unsigned or over-long int8 weights are refused for f32
/// activations, and firmware without the general kinds refuses the kernel.
#[test]
fn load_rules_refuse_what_the_kernel_cannot_run() {
    use cairn_core::emit::AlignedBytes;
    use cairn_core::Model;
    let mut r = Rng(seed() ^ 0x10AD);
    let c = Case::random(&mut r, vec![2], 8, 4, false);
    let ok = c.model();
    let ab = AlignedBytes::from_slice(&ok);
    assert!(Model::parse(ab.as_slice()).is_ok());
    let m = {
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(tensor(DType::F32, &[2, 8], QuantSpec::None, None));
        let w = b.add_tensor(tensor(
            DType::I8,
            &[4, 8],
            QuantSpec::PerTensor {
                scale: 0.01,
                zero_point: 3,
            },
            Some(vec![1; 32]),
        ));
        let y = b.add_tensor(tensor(DType::F32, &[2, 4], QuantSpec::None, None));
        b.ops.push(OpSpec {
            kind: OpKind::FullyConnected,
            inputs: vec![Some(x), Some(w), None],
            outputs: vec![y],
            params: vec![
                f32::NEG_INFINITY.to_bits() as i32,
                f32::INFINITY.to_bits() as i32,
            ],
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        b.finish()
    };
    // Refused when written or when loaded.
    if let Ok(bytes) = m {
        let ab = AlignedBytes::from_slice(&bytes);
        assert!(
            Model::parse(ab.as_slice()).is_err(),
            "a zero point 3 weight loaded"
        );
    }
    // Rows longer than 65,536 could overflow the i32 sums: refused.
    let long = Case {
        rows: vec![1],
        k: (1 << 16) + 1,
        n: 1,
        w: vec![1; (1 << 16) + 1],
        sw: vec![0.01],
        bias: None,
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };
    let at_limit = Case {
        k: 1 << 16,
        w: vec![1; 1 << 16],
        ..long
    };
    let ab = AlignedBytes::from_slice(&at_limit.model());
    assert!(Model::parse(ab.as_slice()).is_ok(), "K = 65,536 refused");
    let long = Case {
        k: (1 << 16) + 1,
        w: vec![1; (1 << 16) + 1],
        ..at_limit
    };
    let m = std::panic::catch_unwind(|| long.model());
    if let Ok(bytes) = m {
        let ab = AlignedBytes::from_slice(&bytes);
        assert!(Model::parse(ab.as_slice()).is_err(), "K = 65,537 loaded");
    }
    // A CNN firmware's backend has no such kernel.
    let ab = AlignedBytes::from_slice(&ok);
    let model = Model::parse(ab.as_slice()).unwrap();
    let mut arena = vec![0u8; model.arena_bytes() + 16];
    let cnn = cairn_kernels::Select::<{ cairn_kernels::family::CNN_I8 }>;
    assert!(cairn_core::Interpreter::new(model, cnn, &mut arena).is_err());
}

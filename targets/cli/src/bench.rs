//! `cairn bench`: cairn against ONNX Runtime (fp32, and int8 QDQ/QOperator models when
//! given) and tract (fp32) on the same model and the same input, single-threaded, in one
//! run. Median and p90 latency after warm-up, ratios, top-1 agreement, GMAC/s against the
//! CPU's int8 peak, flash/arena bytes, and each engine's peak RSS measured in a process of
//! its own ([`memory`]); `--profile` adds a per-kernel profile.
//! Every int8 row also says how far it is from the QDQ graph run as written
//! (`int8_ref.rs`): ONNX Runtime's fused int8 kernels are inexact on CPUs without VNNI.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use cairn_convert::npy;
use cairn_core::emit::AlignedBytes;
use serde_json::json;

mod memory;

use crate::engines;
use crate::int8_ref::{Deviation, Reference};
use crate::tools::{self, argmax};
use crate::ConvertArgs;

pub struct Stats {
    pub median_ms: f64,
    pub p90_ms: f64,
}

pub fn time_runs(warmup: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Stats> {
    for _ in 0..warmup {
        f()?;
    }
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Ok(Stats {
        median_ms: at(0.5),
        p90_ms: at(0.9),
    })
}

pub fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Deterministic input in [-1, 1) when none is given (seeded LCG).
pub fn synthetic(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Row {
    name: String,
    median_ms: f64,
    p90_ms: f64,
    agrees: Option<bool>,
    /// Distance from the QDQ graph run as written (int8 rows, when a QDQ model is known).
    deviation: Option<Deviation>,
}

/// Inputs the int8 rows' deviation is measured on: the timed input and up to 31 more
/// calibration samples.
fn deviation_inputs(x: &[f32], args: &ConvertArgs, n: usize) -> Vec<Vec<f32>> {
    let mut v = vec![x.to_vec()];
    if let Some(dir) = &args.calibrate {
        if let Ok(s) = tools::load_samples(dir, tools::SampleShape::Numel(n)) {
            v.extend(
                s.into_iter()
                    .map(|a| a.data)
                    .filter(|d| d.len() == n)
                    .take(31),
            );
        }
    }
    v
}

/// Engines besides cairn and ORT fp32.
pub struct Others<'a> {
    pub ort_qdq: Option<&'a Path>,
    pub ort_qop: Option<&'a Path>,
    pub no_tract: bool,
    /// Write a bar chart of the latencies (SVG) here.
    pub chart: Option<&'a Path>,
    /// Threads cairn's CPU kernels split big ops across, and ONNX Runtime's intra-op
    /// threads (tract runs on one).
    pub threads: usize,
}

/// The single-thread int8 MAC peak of this CPU for the instruction cairn's GEMMs use on
/// it, measured: a register-only loop of independent multiply-adds run for about 40 ms.
/// Where the GEMMs take VNNI (`paths::vnni`), that is 256-bit `vpdpbusd` (32 u8×s8 MACs
/// each, EVEX or VEX as the GEMMs encode it); otherwise AVX2 `vpmaddwd` + `vpaddd` pairs
/// (16 exact int8·int8 MACs each). `/proc/cpuinfo`'s clock is the base clock, not the
/// boost clock the core runs at, so a peak derived from it would be too low; the loop
/// measures what the core does. Also returns the clock measured with a chain of dependent
/// adds (one per cycle).
pub fn int8_peak_gmacs() -> Option<(f64, String)> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        use cairn_kernels::paths::{vnni, Vnni};
        use std::time::Instant;
        let time = |f: &dyn Fn(u64), n: u64| {
            f(n / 10);
            let t = Instant::now();
            f(n);
            t.elapsed().as_secs_f64()
        };
        let n = 2_000_000u64;
        // Best of three runs of `n` iterations.
        let best =
            |f: &dyn Fn(u64), n: u64| (0..3).map(|_| time(f, n)).fold(f64::INFINITY, f64::min);
        let ghz = 4.0 * 4.0 * n as f64 / best(&add_chain, 4 * n) / 1e9;
        // 12 instructions per iteration: 192 MACs with vpmaddwd, 384 with vpdpbusd.
        let gmacs = |f: &dyn Fn(u64), macs: f64| n as f64 * macs / best(f, n) / 1e9;
        let madd = gmacs(&madd_loop, 192.0);
        let dp = match vnni() {
            Some(Vnni::Evex) => Some(("EVEX", gmacs(&dpbusd_evex_loop, 384.0))),
            Some(Vnni::Vex) => Some(("VEX", gmacs(&dpbusd_vex_loop, 384.0))),
            None => None,
        };
        return Some(match dp {
            Some((enc, g)) => (
                g,
                format!(
                    "measured: independent 256-bit vpdpbusd ({enc}), the instruction cairn's \
                     GEMMs use on this CPU; core clock {ghz:.2} GHz; AVX2 vpmaddwd+vpaddd \
                     pairs reach {madd:.0} GMAC/s"
                ),
            ),
            None => (
                madd,
                format!(
                    "measured: independent AVX2 vpmaddwd+vpaddd pairs; core clock {ghz:.2} GHz, \
                     so {:.0} GMAC/s if two vpmaddwd issued every cycle",
                    32.0 * ghz
                ),
            ),
        });
    }
    None
}

/// Twelve independent 256-bit `vpdpbusd` chains (latency × throughput is under twelve on
/// the cores that have it), in the encoding the prefix `$p` selects (none: EVEX).
#[cfg(target_arch = "x86_64")]
macro_rules! dpbusd_loop {
    ($name:ident, $p:literal) => {
        fn $name(n: u64) {
            // SAFETY: the caller checked that the CPU has this encoding of vpdpbusd
            // (`paths::vnni`); the loop only touches the named registers and the counter.
            unsafe {
                std::arch::asm!(
                    "2:",
                    concat!($p, "vpdpbusd ymm0, ymm12, ymm13"),
                    concat!($p, "vpdpbusd ymm1, ymm12, ymm14"),
                    concat!($p, "vpdpbusd ymm2, ymm12, ymm15"),
                    concat!($p, "vpdpbusd ymm3, ymm13, ymm14"),
                    concat!($p, "vpdpbusd ymm4, ymm13, ymm15"),
                    concat!($p, "vpdpbusd ymm5, ymm14, ymm15"),
                    concat!($p, "vpdpbusd ymm6, ymm12, ymm12"),
                    concat!($p, "vpdpbusd ymm7, ymm13, ymm13"),
                    concat!($p, "vpdpbusd ymm8, ymm14, ymm14"),
                    concat!($p, "vpdpbusd ymm9, ymm15, ymm15"),
                    concat!($p, "vpdpbusd ymm10, ymm12, ymm14"),
                    concat!($p, "vpdpbusd ymm11, ymm13, ymm12"),
                    "dec {n}",
                    "jnz 2b",
                    n = inout(reg) n => _,
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                    out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                    out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    options(nostack, nomem),
                );
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
dpbusd_loop!(dpbusd_evex_loop, "");
#[cfg(target_arch = "x86_64")]
dpbusd_loop!(dpbusd_vex_loop, "{{vex}} ");

#[cfg(target_arch = "x86_64")]
fn madd_loop(n: u64) {
    // SAFETY: AVX2 is present (checked by the caller); the loop only touches the named
    // vector registers and the counter.
    unsafe {
        std::arch::asm!(
            "vpxor ymm0, ymm0, ymm0",
            "2:",
            "vpmaddwd ymm4, ymm12, ymm13", "vpaddd ymm0, ymm0, ymm4",
            "vpmaddwd ymm5, ymm12, ymm14", "vpaddd ymm1, ymm1, ymm5",
            "vpmaddwd ymm6, ymm12, ymm15", "vpaddd ymm2, ymm2, ymm6",
            "vpmaddwd ymm7, ymm13, ymm14", "vpaddd ymm3, ymm3, ymm7",
            "vpmaddwd ymm8, ymm13, ymm15", "vpaddd ymm9, ymm9, ymm8",
            "vpmaddwd ymm10, ymm14, ymm15", "vpaddd ymm11, ymm11, ymm10",
            "vpmaddwd ymm4, ymm12, ymm12", "vpaddd ymm0, ymm0, ymm4",
            "vpmaddwd ymm5, ymm13, ymm13", "vpaddd ymm1, ymm1, ymm5",
            "vpmaddwd ymm6, ymm14, ymm14", "vpaddd ymm2, ymm2, ymm6",
            "vpmaddwd ymm7, ymm15, ymm15", "vpaddd ymm3, ymm3, ymm7",
            "vpmaddwd ymm8, ymm12, ymm14", "vpaddd ymm9, ymm9, ymm8",
            "vpmaddwd ymm10, ymm13, ymm12", "vpaddd ymm11, ymm11, ymm10",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) n => _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            options(nostack, nomem),
        );
    }
}

#[cfg(target_arch = "x86_64")]
fn add_chain(n: u64) {
    let mut x = 0u64;
    // SAFETY: register arithmetic only.
    unsafe {
        std::arch::asm!(
            "2:",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) n => _,
            x = inout(reg) x,
            options(nostack, nomem),
        );
    }
    std::hint::black_box(x);
}

#[allow(clippy::too_many_arguments)]
pub fn bench(
    model: &Path,
    args: &ConvertArgs,
    runs: usize,
    warmup: usize,
    input: Option<&Path>,
    json_out: Option<&Path>,
    profile: bool,
    others: Others<'_>,
) -> Result<()> {
    if let Ok(kind) = std::env::var(memory::CHILD_ENV) {
        return memory::child(&kind, model, input, others.threads);
    }
    let conv = tools::convert_with_progress(model, args)?;
    let bytes = AlignedBytes::from_slice(&conv.bytes);
    let mut m = tools::host_model(&bytes, model)?;
    m.set_threads(others.threads)
        .map_err(|e| anyhow!("--threads {}: {e}", others.threads))?;
    if m.inputs().len() > 1 {
        return Err(anyhow!(
            "cairn bench times models of one input, and {} has {}: time it with \
             `cairn run MODEL.cairn --input NAME=x.npy ... --runs N` (after `cairn convert`), \
             or beside ONNX Runtime with models/corpus/bench.py",
            model.display(),
            m.inputs().len()
        ));
    }
    let info = m
        .inputs()
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("model has no input"))?;
    let n: usize = info.shape.iter().product();
    let (x, source) = match (input, &args.calibrate) {
        (Some(p), _) => (npy::read(p)?.data, p.display().to_string()),
        (None, Some(dir)) => {
            let s = tools::load_samples(dir, tools::SampleShape::Numel(n))?;
            (
                s.into_iter().next().map(|a| a.data).unwrap_or_default(),
                format!("first sample of {}", dir.display()),
            )
        }
        (None, None) => (synthetic(n, 7), "synthetic uniform [-1, 1), seed 7".into()),
    };
    if x.len() != n {
        return Err(anyhow!(
            "bench input has {} values, the model takes {:?}",
            x.len(),
            info.shape
        ));
    }
    println!(
        "model {} ({} mode), input {:?} from {source}",
        model.display(),
        conv.mode,
        info.shape
    );

    let mut cairn_out = Vec::new();
    let cairn = time_runs(warmup, runs, || {
        cairn_out = m.run(&[&x]).map_err(|e| anyhow!("{e:?}"))?;
        Ok(())
    })?;
    let cairn_name = format!(
        "cairn-{}",
        match conv.mode {
            "float" => "f32",
            "dynamic" => "dynamic-int8",
            _ => "int8",
        }
    );
    // The exact int8 reference: the QDQ model (given, or the model itself) as written.
    let main_is_qdq = conv.mode == "qdq";
    let qdq_model = others.ort_qdq.or(main_is_qdq.then_some(model));
    let dev_inputs = deviation_inputs(&x, args, n);
    let reference = match qdq_model {
        Some(p) => match Reference::new(p, &info.shape, &dev_inputs) {
            Ok(r) => Some(r),
            Err(err) => {
                println!("no int8 reference (QDQ as written): {err:#}");
                None
            }
        },
        None => None,
    };
    let cairn_dev = match (&reference, main_is_qdq) {
        (Some(r), true) => Some(r.deviation(&dev_inputs, |v| {
            m.run(&[v])
                .map_err(|e| anyhow!("{e:?}"))
                .map(|mut o| o.swap_remove(0))
        })?),
        _ => None,
    };
    let mut rows = vec![Row {
        name: cairn_name,
        median_ms: cairn.median_ms,
        p90_ms: cairn.p90_ms,
        agrees: None,
        deviation: cairn_dev,
    }];

    // The main model's ONNX Runtime row is int8 when the model given is QDQ, and
    // dynamically quantized int8 when it ships int8 weights with float activations.
    let main_ort = if main_is_qdq {
        "ort-int8-qdq"
    } else if quantized_dynamically(model) {
        "ort-int8-dynamic"
    } else {
        "ort-fp32"
    };
    // Each engine, the int8 model its deviation is measured on, and what its memory child
    // loads.
    type Entry<'p> = (
        anyhow::Result<engines::Engine>,
        Option<&'p Path>,
        memory::Kind,
        &'p Path,
    );
    let mut engines: Vec<Entry<'_>> = vec![(
        engines::ort(main_ort, model, &info.shape, others.threads),
        main_is_qdq.then_some(model),
        memory::Kind::Ort,
        model,
    )];
    if let Some(p) = others.ort_qdq.filter(|_| !main_is_qdq) {
        let e = engines::ort("ort-int8-qdq", p, &info.shape, others.threads);
        engines.push((e, Some(p), memory::Kind::Ort, p));
    }
    if let Some(p) = others.ort_qop {
        let e = engines::ort("ort-int8-qop", p, &info.shape, others.threads);
        engines.push((e, Some(p), memory::Kind::Ort, p));
    }
    if !others.no_tract {
        let e = engines::tract(model, &info.shape);
        engines.push((e, None, memory::Kind::Tract, model));
    }
    let scratch = memory::Scratch::new()?;
    let (cairn_file, input_file) = (scratch.path("model.cairn"), scratch.path("input.npy"));
    std::fs::write(&cairn_file, &conv.bytes)
        .with_context(|| format!("writing {}", cairn_file.display()))?;
    npy::write(&input_file, &info.shape, &x)?;
    let mut specs = vec![memory::Spec {
        name: rows[0].name.clone(),
        kind: memory::Kind::Cairn,
        model: cairn_file,
    }];
    let top1 = cairn_out.first().map(|o| argmax(o));
    for (e, int8_model, kind, path) in engines {
        let deviation = match (&reference, int8_model) {
            (Some(r), Some(p)) => r.ort_default(p, &dev_inputs).ok(),
            _ => None,
        };
        match e {
            Ok(mut e) => {
                specs.push(memory::Spec {
                    name: e.name.clone(),
                    kind,
                    model: path.to_path_buf(),
                });
                let mut out = Vec::new();
                let s = time_runs(warmup, runs, || {
                    out = (e.run)(&x)?;
                    Ok(())
                })?;
                rows.push(Row {
                    name: e.name.clone(),
                    median_ms: s.median_ms,
                    p90_ms: s.p90_ms,
                    agrees: top1.map(|t| t == argmax(&out)),
                    deviation,
                });
            }
            Err(err) => println!("engine unavailable: {err:#}"),
        }
    }

    let macs: u64 = (0..m.model().n_ops()).map(|i| m.model().op_macs(i)).sum();
    println!();
    if others.threads > 1 {
        println!(
            "  threads: cairn {0}, ONNX Runtime {0} (intra-op), tract 1",
            others.threads
        );
    }
    println!(
        "  {:<14} {:>10} {:>10} {:>13} {:>14}  vs QDQ as written",
        "engine", "median ms", "p90 ms", "cairn/engine", "top-1 = cairn"
    );
    for r in &rows {
        let agree = r.agrees.map_or("-".to_string(), |a| a.to_string());
        let dev = r.deviation.as_ref().map_or("-".into(), Deviation::summary);
        println!(
            "  {:<14} {:>10.4} {:>10.4} {:>13.3} {:>14}  {dev}",
            r.name,
            r.median_ms,
            r.p90_ms,
            cairn.median_ms / r.median_ms,
            agree
        );
    }
    let (cpu_flags, fused_exact) = cairn_ort::int8_exactness();
    if reference.is_some() {
        println!(
            "  (QDQ as written = ONNX Runtime with graph optimizations off, over {} inputs; \
             this CPU [{cpu_flags}] {} VNNI, so ONNX Runtime's fused int8 is {}expected to be exact)",
            dev_inputs.len(),
            if fused_exact { "has" } else { "lacks" },
            if fused_exact { "" } else { "not " }
        );
    }
    let gmacs = macs as f64 / (cairn.median_ms * 1e-3) / 1e9;
    let peak = int8_peak_gmacs();
    println!();
    match &peak {
        Some((p, how)) => println!(
            "  MACs {:.2} M, cairn {:.2} GMAC/s = {:.1}% of the int8 peak {:.0} GMAC/s ({how})",
            macs as f64 / 1e6,
            gmacs,
            100.0 * gmacs / p,
            p
        ),
        None => println!(
            "  MACs {:.2} M, cairn {:.2} GMAC/s",
            macs as f64 / 1e6,
            gmacs
        ),
    }
    println!(
        "  cairn: flash {} B (the model), arena {} B",
        conv.bytes.len(),
        m.model().arena_bytes()
    );
    // Not fatal: without /proc (not Linux) the latency table still stands.
    let mem = match memory::measure(&specs, &input_file, others.threads) {
        Ok(mem) => Some(mem),
        Err(err) => {
            println!("  memory per engine: not measured: {err:#}");
            None
        }
    };
    drop(scratch);
    if let Some(mem) = &mem {
        mem.print();
    }

    if profile {
        print_profile(&mut m, &[&x], runs)?;
    }

    if let Some(p) = others.chart {
        let title = format!(
            "{} — single thread, {runs} runs",
            model
                .file_name()
                .map_or("model".into(), |f| f.to_string_lossy())
        );
        chart(p, &title, &rows)?;
        println!("  wrote {}", p.display());
    }

    if let Some(p) = json_out {
        let mut e = serde_json::Map::new();
        for r in &rows {
            let dev = r.deviation.as_ref().map(|d| {
                json!({"worst_lsb": d.worst_lsb, "worst_abs": d.worst_abs,
                       "top1_same": d.top1_same, "samples": d.samples})
            });
            e.insert(r.name.clone(), json!({"median_ms": r.median_ms, "p90_ms": r.p90_ms, "cairn_ratio": cairn.median_ms / r.median_ms, "top1_agrees_with_cairn": r.agrees, "vs_qdq_as_written": dev, "memory": mem.as_ref().and_then(|m| m.json_of(&r.name))}));
        }
        let report = json!({
            "model": model.display().to_string(),
            "mode": conv.mode,
            "input_shape": info.shape,
            "runs": runs,
            "warmup": warmup,
            "threads": others.threads,
            "cairn_threads": others.threads,
            "ort_threads": others.threads,
            "tract_threads": 1,
            "cpu_int8_flags": cpu_flags,
            "ort_fused_int8_expected_exact": fused_exact,
            "engines": e,
            "macs": macs,
            "cairn_gmacs": gmacs,
            "int8_peak_gmacs": peak.as_ref().map(|p| p.0),
            "flash_bytes": conv.bytes.len(),
            "arena_bytes": m.model().arena_bytes(),
            "memory": mem.as_ref().map(memory::Report::json_summary),
            // The bench process itself, every engine loaded: not any one engine's cost.
            "bench_process_peak_rss_kb": peak_rss_kb(),
        });
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("  wrote {}", p.display());
    }
    Ok(())
}

/// Median latency per engine as bars, the p90 as a whisker above each, as SVG.
fn chart(path: &Path, title: &str, rows: &[Row]) -> Result<()> {
    use plotters::prelude::*;
    let e = |err: DrawingAreaErrorKind<_>| anyhow!("chart: {err:?}");
    let top = rows
        .iter()
        .map(|r| r.p90_ms)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let root = SVGBackend::new(path, (160 + 110 * rows.len() as u32, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((0..rows.len()).into_segmented(), 0f64..top)
        .map_err(e)?;
    c.configure_mesh()
        .disable_x_mesh()
        .y_desc("latency, ms (bar: median, line: p90)")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => rows.get(*i).map_or(String::new(), |r| r.name.clone()),
            _ => String::new(),
        })
        .draw()
        .map_err(e)?;
    for (i, r) in rows.iter().enumerate() {
        let color = if i == 0 {
            RGBColor(200, 90, 40)
        } else {
            RGBColor(90, 110, 160)
        };
        c.draw_series(std::iter::once(Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), r.median_ms),
            ],
            color.filled(),
        )))
        .map_err(e)?;
        c.draw_series(std::iter::once(PathElement::new(
            vec![
                (SegmentValue::CenterOf(i), r.median_ms),
                (SegmentValue::CenterOf(i), r.p90_ms),
            ],
            BLACK.stroke_width(2),
        )))
        .map_err(e)?;
        c.draw_series(std::iter::once(Text::new(
            format!("{:.3}", r.median_ms),
            (SegmentValue::CenterOf(i), r.p90_ms + top * 0.02),
            ("sans-serif", 14),
        )))
        .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// Run `runs` times and print the slowest ops and the time per kernel (ms per run, share,
/// GMAC/s).
pub fn print_profile(
    m: &mut cairn_kernels::host::HostModel<'_>,
    inputs: &[&[f32]],
    runs: usize,
) -> Result<()> {
    let nops = m.model().n_ops();
    let mut per_op = vec![0f64; nops];
    let mut start = Instant::now();
    for _ in 0..runs.max(1) {
        m.run_with(inputs, |i, done| {
            if done {
                per_op[i] += start.elapsed().as_secs_f64() * 1e3;
            } else {
                start = Instant::now();
            }
        })
        .map_err(|e| anyhow!("{e:?}"))?;
    }
    let mut slowest: Vec<usize> = (0..nops).collect();
    slowest.sort_by(|&a, &b| per_op[b].total_cmp(&per_op[a]));
    println!();
    println!("  slowest ops (ms/run, GMAC/s, output):");
    for &i in slowest.iter().take(10) {
        let ms = per_op[i] / runs.max(1) as f64;
        let k = m.model().kernel_of(i).map_or("?".into(), |k| k.to_string());
        let out = m
            .model()
            .op(i)
            .map(|op| m.model().tensor(op.output(0)).info.shape);
        let gm = m.model().op_macs(i) as f64 / (ms * 1e-3).max(1e-12) / 1e9;
        println!("    #{i:<4} {k:<20} {ms:>8.3} {gm:>8.2}  {out:?}");
    }
    let mut by_kind: std::collections::BTreeMap<String, (f64, u64, usize)> = Default::default();
    for (i, t) in per_op.iter().enumerate() {
        let k = m.model().kernel_of(i).map_or("?".into(), |k| k.to_string());
        let e = by_kind.entry(k).or_default();
        e.0 += t / runs.max(1) as f64;
        e.1 += m.model().op_macs(i);
        e.2 += 1;
    }
    let mut rows: Vec<_> = by_kind.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!();
    println!(
        "  {:<22} {:>5} {:>10} {:>8} {:>10}",
        "kernel", "ops", "ms/run", "share", "GMAC/s"
    );
    let total: f64 = rows.iter().map(|r| r.1 .0).sum();
    for (k, (ms, mac, count)) in rows {
        println!(
            "  {:<22} {:>5} {:>10.3} {:>7.1}% {:>10.2}",
            k,
            count,
            ms,
            100.0 * ms / total.max(1e-12),
            mac as f64 / (ms * 1e-3).max(1e-12) / 1e9
        );
    }
    Ok(())
}

/// Whether the ONNX model at `path` is dynamically quantized (ONNX Runtime then quantizes
/// its activations at run time: its row is not fp32).
fn quantized_dynamically(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let Ok(m) = cairn_convert::onnx::load_model(&bytes) else {
        return false;
    };
    m.graph.iter().flat_map(|g| &g.node).any(|n| {
        matches!(
            n.op_type.as_str(),
            "DynamicQuantizeLinear" | "MatMulInteger" | "ConvInteger" | "DynamicQuantizeLSTM"
        )
    })
}

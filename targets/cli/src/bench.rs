//! `cairn bench`: cairn against ONNX Runtime (fp32, and int8 QDQ/QOperator models when
//! given) and tract (fp32) on the same model and the same inputs (every graph input, by
//! name, in its declared element type: [`inputs`]), single-threaded, in one run. Median
//! and p90 latency after warm-up, ratios, top-1 agreement, GMAC/s against the CPU's int8
//! peak, flash/arena bytes, and each engine's peak RSS measured in a process of its own
//! ([`memory`]); `--profile` adds a per-kernel profile.
//! Every int8 row of a one-input model also says how far it is from the QDQ graph run as
//! written (`int8_ref.rs`): ONNX Runtime's fused int8 kernels are inexact on CPUs without
//! VNNI. An engine that cannot load or run the model gets a row saying why; only cairn's
//! own failure fails the command.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use cairn_core::emit::AlignedBytes;
use serde_json::json;

mod inputs;
mod memory;

pub use inputs::Input;

use crate::engines;
use crate::int8_ref::{Deviation, Reference};
use crate::samples;
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
    /// Why the engine has no timing: it could not load or run the model.
    error: Option<String>,
}

impl Row {
    fn failed(name: &str, error: String) -> Row {
        Row {
            name: name.into(),
            median_ms: f64::NAN,
            p90_ms: f64::NAN,
            agrees: None,
            deviation: None,
            error: Some(error),
        }
    }
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
/// multiplies (three cycles each).
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
        // Four imuls of three cycles an iteration.
        let ghz = 3.0 * 4.0 * 4.0 * n as f64 / best(&imul_chain, 4 * n) / 1e9;
        // 12 instructions per iteration: 192 MACs with vpmaddwd, 384 with vpdpbusd.
        let gmacs = |f: &dyn Fn(u64), macs: f64| n as f64 * macs / best(f, n) / 1e9;
        let madd = gmacs(&madd_loop, 192.0);
        let dp = match vnni() {
            Some(Vnni::Evex) => Some(("EVEX", gmacs(&dpbusd_evex_loop, 384.0))),
            Some(Vnni::Vex) => Some(("VEX", gmacs(&dpbusd_vex_loop, 384.0))),
            None => None,
        };
        // Where the tiles are in use, the larger convs and FCs run on them instead.
        let tiles = if cairn_kernels::paths::amx() {
            let rounds = |n: u64| {
                cairn_kernels::paths::amx_rounds(n);
            };
            let a = gmacs(&rounds, cairn_kernels::paths::AMX_ROUND_MACS as f64);
            format!("; the AMX tiles (tdpbusd), which take the larger convs and FCs here, {a:.0} GMAC/s")
        } else {
            String::new()
        };
        return Some(match dp {
            Some((enc, g)) => (
                g,
                format!(
                    "measured: independent 256-bit vpdpbusd ({enc}), the instruction cairn's \
                     GEMMs use on this CPU; core clock {ghz:.2} GHz; AVX2 vpmaddwd+vpaddd \
                     pairs reach {madd:.0} GMAC/s{tiles}"
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

/// Four dependent 64-bit `imul`s an iteration: three cycles each on every x86_64 core
/// cairn targets (Intel since Nehalem, AMD since Zen). A chain of `add reg, 1` is not a
/// clock: Golden Cove and later fold immediate adds at rename, and such a chain read
/// 13.9 GHz on a Sapphire Rapids host.
#[cfg(target_arch = "x86_64")]
fn imul_chain(n: u64) {
    let mut x = 3u64;
    // SAFETY: register arithmetic only.
    unsafe {
        std::arch::asm!(
            "2:",
            "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}",
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
    input: &[String],
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
    let all = inputs::gather(model, args, &m.inputs(), input)?;
    let xs: Vec<&[f32]> = inputs::runtime(&all).map(|i| i.data.as_slice()).collect();
    // A model of one graph input keeps the one-line header (and the int8 reference).
    let single = match all.as_slice() {
        [one] if one.runtime => Some(one),
        _ => None,
    };
    match single {
        Some(x) => println!(
            "model {} ({} mode), input {:?}{} from {}",
            model.display(),
            conv.mode,
            x.shape,
            if samples::is_float_type(x.elem_type) {
                String::new()
            } else {
                format!(" {}", x.type_name())
            },
            x.source
        ),
        None => {
            println!(
                "model {} ({} mode), {} inputs:",
                model.display(),
                conv.mode,
                all.len()
            );
            for line in inputs::describe(&all) {
                println!("{line}");
            }
        }
    }

    let mut cairn_out = Vec::new();
    let cairn = time_runs(warmup, runs, || {
        cairn_out = m.run(&xs).map_err(|e| tools::run_error(&m, e))?;
        Ok(())
    })
    .context("cairn failed on the bench inputs")?;
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
    let dev_inputs = match single {
        Some(x) => deviation_inputs(&x.data, args, x.data.len()),
        None => Vec::new(),
    };
    let reference = match (qdq_model, single) {
        (Some(p), Some(x)) => match Reference::new(p, &x.shape, &dev_inputs) {
            Ok(r) => Some(r),
            Err(err) => {
                println!("no int8 reference (QDQ as written): {err:#}");
                None
            }
        },
        (Some(_), None) => {
            println!("no int8 reference (QDQ as written): it is measured on models of one input");
            None
        }
        _ => None,
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
        error: None,
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
    // Each engine: its row name, the ONNX model it runs, the int8 model its deviation is
    // measured on, and what its memory child loads.
    let mut engines: Vec<(&str, &Path, Option<&Path>, memory::Kind)> = vec![(
        main_ort,
        model,
        main_is_qdq.then_some(model),
        memory::Kind::Ort,
    )];
    if let Some(p) = others.ort_qdq.filter(|_| !main_is_qdq) {
        engines.push(("ort-int8-qdq", p, Some(p), memory::Kind::Ort));
    }
    if let Some(p) = others.ort_qop {
        engines.push(("ort-int8-qop", p, Some(p), memory::Kind::Ort));
    }
    if !others.no_tract {
        engines.push(("tract-fp32", model, None, memory::Kind::Tract));
    }
    // Without ONNX Runtime its rows say why; say it where it is seen too.
    if let Err(err) = cairn_ort::init() {
        eprintln!("warning: ONNX Runtime is not loaded, its rows have no timing: {err:#}");
    }
    let scratch = memory::Scratch::new()?;
    let cairn_file = scratch.path("model.cairn");
    std::fs::write(&cairn_file, &conv.bytes)
        .with_context(|| format!("writing {}", cairn_file.display()))?;
    let input_files = memory::InputFiles::write(&scratch, &all)?;
    let mut specs = vec![memory::Spec {
        name: rows[0].name.clone(),
        kind: memory::Kind::Cairn,
        model: cairn_file,
    }];
    let top1 = cairn_out.first().map(|o| argmax(o));
    for (name, path, int8_model, kind) in engines {
        let loaded = match kind {
            memory::Kind::Tract => engines::tract(path, &all),
            _ => engines::ort(path, &all, others.threads),
        };
        let mut e = match loaded {
            Ok(e) => e,
            Err(err) => {
                rows.push(Row::failed(name, format!("unavailable: {err:#}")));
                continue;
            }
        };
        let mut out = Vec::new();
        let timed = time_runs(warmup, runs, || {
            out = (e.run)()?;
            Ok(())
        });
        let s = match timed {
            Ok(s) => s,
            Err(err) => {
                rows.push(Row::failed(name, format!("failed: {err:#}")));
                continue;
            }
        };
        specs.push(memory::Spec {
            name: name.into(),
            kind,
            model: path.to_path_buf(),
        });
        let deviation = match (&reference, int8_model) {
            (Some(r), Some(p)) => r.ort_default(p, &dev_inputs).ok(),
            _ => None,
        };
        rows.push(Row {
            name: name.into(),
            median_ms: s.median_ms,
            p90_ms: s.p90_ms,
            agrees: top1.map(|t| t == argmax(&out)),
            deviation,
            error: None,
        });
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
        if let Some(err) = &r.error {
            println!("  {:<14} {err}", r.name);
            continue;
        }
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
    let mem = match memory::measure(&specs, &input_files, others.threads) {
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
        print_profile(&mut m, &xs, runs)?;
    }
    let (rows, failed): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.error.is_none());

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
            // The converted model's input, when it has one (null for several: see "inputs").
            "input_shape": match xs.len() {
                1 => inputs::runtime(&all).next().map(|x| x.shape.clone()),
                _ => None,
            },
            "inputs": all.iter().map(|i| json!({"name": i.name, "dtype": i.type_name(), "shape": i.shape, "source": i.source, "cairn_input": i.runtime})).collect::<Vec<_>>(),
            "runs": runs,
            "warmup": warmup,
            "threads": others.threads,
            "cairn_threads": others.threads,
            "ort_threads": others.threads,
            "tract_threads": 1,
            "cpu_int8_flags": cpu_flags,
            "ort_fused_int8_expected_exact": fused_exact,
            "engines": e,
            "engine_errors": failed.iter().map(|r| (r.name.clone(), json!(r.error))).collect::<serde_json::Map<_, _>>(),
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

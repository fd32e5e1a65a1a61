//! Memory per engine for `cairn bench`: each engine runs in a process of its own, so one
//! engine's libraries and buffers never count against another.
//!
//! The bench re-runs its own executable once per engine, in a child mode chosen by the
//! [`CHILD_ENV`] variable (not a documented command: `cairn bench MODEL --input NAME=X.npy
//! ...` with the variable set, one `--input` per model input: every graph input by name
//! for ONNX Runtime and tract, their ONNX element types in [`TYPES_ENV`]; the converted
//! model's inputs as `input0=`, `input1=`, ... for cairn). The child loads only that
//! engine and the model, runs the same inputs [`CHILD_RUNS`] times, and prints one JSON
//! line: its peak resident set (`VmHWM` of `/proc/self/status`) and, for cairn, the
//! model's bytes (what flash would hold) and its arena. A `baseline` child loads nothing
//! but the inputs: what the process itself costs. Each row then shows the peak RSS and the
//! peak RSS minus the baseline. Linux only (`/proc`); elsewhere the rows are missing.
//!
//! What the child mode must never do: print anything but its JSON line on stdout, or time
//! anything (the parent times the engines in its own process).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use cairn_convert::npy;
use cairn_core::emit::AlignedBytes;
use serde_json::{json, Value};

use super::Input;
use crate::engines;
use crate::tools;

/// The variable that turns `cairn bench` into one engine's memory child.
pub const CHILD_ENV: &str = "CAIRN_BENCH_MEMORY_CHILD";
/// The ONNX element types of a child's `--input`s, in order, comma-separated.
pub const TYPES_ENV: &str = "CAIRN_BENCH_MEMORY_TYPES";
/// Runs of the input in a child before its peak is read (engines allocate on first run).
pub const CHILD_RUNS: usize = 3;

/// What a child loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Nothing but the input: the process's own cost.
    Baseline,
    /// A `.cairn` file on the CPU backend.
    Cairn,
    /// An ONNX model in ONNX Runtime (one thread).
    Ort,
    /// An ONNX model in tract.
    Tract,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Cairn => "cairn",
            Kind::Ort => "ort",
            Kind::Tract => "tract",
        }
    }
    fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "baseline" => Kind::Baseline,
            "cairn" => Kind::Cairn,
            "ort" => Kind::Ort,
            "tract" => Kind::Tract,
            _ => bail!("{CHILD_ENV}={s}: not baseline, cairn, ort or tract"),
        })
    }
}

/// A folder for the children's files (the converted model, the input), removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("cairn-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One engine row to measure: its table name, what the child loads, from which file.
pub struct Spec {
    pub name: String,
    pub kind: Kind,
    pub model: PathBuf,
}

/// What one child reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub name: String,
    pub peak_rss_kb: u64,
    /// cairn only: the model's bytes and its arena.
    pub model_bytes: Option<u64>,
    pub arena_bytes: Option<u64>,
}

/// The memory rows of one bench: the baseline, and each engine that ran.
pub struct Report {
    pub baseline_kb: u64,
    pub rows: Vec<Measured>,
}

/// The child mode: load `kind` with `model`, run the inputs [`CHILD_RUNS`] times, print
/// the JSON line.
pub fn child(kind: &str, model: &Path, input_args: &[String], threads: usize) -> Result<()> {
    let kind = Kind::parse(kind)?;
    let inputs = child_inputs(input_args)?;
    let mut report = serde_json::Map::new();
    match kind {
        Kind::Baseline => {}
        Kind::Cairn => {
            // Read straight into the aligned buffer: one copy of the model is resident, as
            // on a device (a `Vec` then a copy would double the peak).
            let bytes = read_aligned(model)?;
            let mut m = tools::host_model(&bytes, model)?;
            m.set_threads(threads)
                .map_err(|e| anyhow!("--threads {threads}: {e}"))?;
            let xs: Vec<&[f32]> = inputs.iter().map(|x| x.data.as_slice()).collect();
            for _ in 0..CHILD_RUNS {
                m.run(&xs).map_err(|e| anyhow!("{e:?}"))?;
            }
            report.insert("model_bytes".into(), json!(bytes.as_slice().len()));
            report.insert("arena_bytes".into(), json!(m.model().arena_bytes()));
        }
        Kind::Ort | Kind::Tract => {
            let mut e = match kind {
                Kind::Ort => engines::ort(model, &inputs, threads)?,
                _ => engines::tract(model, &inputs)?,
            };
            for _ in 0..CHILD_RUNS {
                (e.run)()?;
            }
        }
    }
    let peak = super::peak_rss_kb().ok_or_else(|| anyhow!("no VmHWM in /proc/self/status"))?;
    report.insert("peak_rss_kb".into(), json!(peak));
    println!("{}", Value::Object(report));
    Ok(())
}

/// A child's inputs: `NAME=PATH` each (the parent writes paths without `=`, so NAME is
/// what comes before the last one), element types from [`TYPES_ENV`].
fn child_inputs(args: &[String]) -> Result<Vec<Input>> {
    if args.is_empty() {
        bail!("{CHILD_ENV}: the child needs --input NAME=x.npy");
    }
    let types = std::env::var(TYPES_ENV).unwrap_or_default();
    let mut types = types
        .split(',')
        .map(|t| t.trim().parse::<i32>().unwrap_or(1));
    args.iter()
        .map(|a| {
            let (name, path) = a
                .rsplit_once('=')
                .ok_or_else(|| anyhow!("{CHILD_ENV}: --input '{a}' is not NAME=PATH"))?;
            let x = npy::read(Path::new(path))?;
            Ok(Input {
                name: name.to_string(),
                elem_type: types.next().unwrap_or(1),
                shape: x.shape,
                data: x.data,
                runtime: true,
                source: path.to_string(),
            })
        })
        .collect()
}

/// The inputs written for the children, as `--input` arguments.
pub struct InputFiles {
    /// Every graph input by name (ONNX Runtime, tract, the baseline).
    onnx: Vec<String>,
    /// Their ONNX element types, for [`TYPES_ENV`].
    onnx_types: String,
    /// The converted model's inputs in its order, `input0=...` (cairn).
    cairn: Vec<String>,
}

impl InputFiles {
    /// Each input as `inN.npy` in `scratch`.
    pub fn write(scratch: &Scratch, inputs: &[Input]) -> Result<InputFiles> {
        let (mut onnx, mut types, mut cairn) = (Vec::new(), Vec::new(), Vec::new());
        for (i, x) in inputs.iter().enumerate() {
            let path = scratch.path(&format!("in{i}.npy"));
            npy::write(&path, &x.shape, &x.data)?;
            onnx.push(format!("{}={}", x.name, path.display()));
            types.push(x.elem_type.to_string());
            if x.runtime {
                cairn.push(format!("input{}={}", cairn.len(), path.display()));
            }
        }
        Ok(InputFiles {
            onnx,
            onnx_types: types.join(","),
            cairn,
        })
    }
}

fn read_aligned(path: &Path) -> Result<AlignedBytes> {
    use std::io::Read;
    let what = || format!("reading {}", path.display());
    let mut f = std::fs::File::open(path).with_context(what)?;
    let len = usize::try_from(f.metadata().with_context(what)?.len())?;
    let mut bytes = AlignedBytes::zeroed(len);
    f.read_exact(bytes.as_mut_slice()).with_context(what)?;
    Ok(bytes)
}

/// Run one child per spec, and the baseline, on the inputs written to `input`.
/// A child that fails is reported and left out.
pub fn measure(specs: &[Spec], input: &InputFiles, threads: usize) -> Result<Report> {
    let baseline = Spec {
        name: "baseline".into(),
        kind: Kind::Baseline,
        model: PathBuf::from("-"),
    };
    let baseline_kb = run_child(&baseline, input, threads)
        .context("the baseline memory child")?
        .peak_rss_kb;
    let mut rows = Vec::new();
    for s in specs {
        match run_child(s, input, threads) {
            Ok(m) => rows.push(m),
            Err(err) => println!("memory of {}: not measured: {err:#}", s.name),
        }
    }
    Ok(Report { baseline_kb, rows })
}

fn run_child(spec: &Spec, input: &InputFiles, threads: usize) -> Result<Measured> {
    let exe = std::env::current_exe().context("finding the cairn executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench").arg(&spec.model);
    let (args, types) = match spec.kind {
        Kind::Cairn => (&input.cairn, String::new()),
        _ => (&input.onnx, input.onnx_types.clone()),
    };
    for a in args {
        cmd.arg(format!("--input={a}"));
    }
    let out = cmd
        .arg("--threads")
        .arg(threads.to_string())
        .env(CHILD_ENV, spec.kind.as_str())
        .env(TYPES_ENV, types)
        .output()
        .context("starting the memory child")?;
    if !out.status.success() {
        bail!(
            "child exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| anyhow!("child printed no report"))?;
    let v: Value = serde_json::from_str(line).context("the child's report")?;
    let field = |k: &str| v.get(k).and_then(Value::as_u64);
    Ok(Measured {
        name: spec.name.clone(),
        peak_rss_kb: field("peak_rss_kb").ok_or_else(|| anyhow!("no peak_rss_kb"))?,
        model_bytes: field("model_bytes"),
        arena_bytes: field("arena_bytes"),
    })
}

impl Report {
    pub fn print(&self) {
        println!();
        println!(
            "  memory, each engine in a process of its own (peak RSS = VmHWM after loading \
             and {CHILD_RUNS} runs; baseline = the same process loading no engine):"
        );
        println!(
            "  {:<14} {:>12} {:>17}  cairn: model + arena bytes",
            "process", "peak RSS kB", "over baseline kB"
        );
        println!("  {:<14} {:>12} {:>17}", "baseline", self.baseline_kb, "-");
        for r in &self.rows {
            let own = match (r.model_bytes, r.arena_bytes) {
                (Some(m), Some(a)) => format!("{m} + {a}"),
                _ => "-".into(),
            };
            println!(
                "  {:<14} {:>12} {:>17}  {own}",
                r.name,
                r.peak_rss_kb,
                self.over_baseline_kb(r)
            );
        }
    }

    /// Peak RSS less the baseline's (0 if the engine measured under it).
    pub fn over_baseline_kb(&self, r: &Measured) -> u64 {
        r.peak_rss_kb.saturating_sub(self.baseline_kb)
    }

    /// The fields a row adds to its engine in the JSON report.
    pub fn json_of(&self, name: &str) -> Option<Value> {
        let r = self.rows.iter().find(|r| r.name == name)?;
        Some(json!({
            "peak_rss_kb": r.peak_rss_kb,
            "rss_over_baseline_kb": self.over_baseline_kb(r),
            "model_bytes": r.model_bytes,
            "arena_bytes": r.arena_bytes,
        }))
    }

    /// The report's `memory` section: the method and the baseline.
    pub fn json_summary(&self) -> Value {
        json!({
            "method": format!(
                "each engine in a child process of its own (cairn bench re-runs itself): \
                 load the model, run the bench input {CHILD_RUNS} times, read VmHWM from \
                 /proc/self/status; baseline = the same child loading no engine"
            ),
            "runs_per_child": CHILD_RUNS,
            "baseline_peak_rss_kb": self.baseline_kb,
        })
    }
}

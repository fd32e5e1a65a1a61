//! The ONNX Runtime backend in the CLI: `cairn run --backend ort[:EP]`, its column of
//! `cairn inspect --backends`, and `cairn bench MODEL.cairn --backends cpu,gpu,ort[:EP]`
//! (every backend on the same inputs in one process, runs interleaved).
//!
//! The exported segments run through the heterogeneous driver, so a failed ORT run is
//! rerun on the CPU and counted, and a missing execution provider falls back to ORT's CPU
//! provider with one message.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use cairn_core::accel::AccelFactory;
use cairn_core::partition::{Partition, Placement, Policy};
use cairn_core::{Interpreter, Model};
use cairn_kernels::hetero::{Counters, Hetero};
use cairn_kernels::CpuBackend;
use cairn_ort::{Graph, OrtFactory};

use crate::samples;
use crate::tools::{self, read_model, RunOutputs};

/// `ort`, `ort:EP`, `ort:POLICY` (`prefer-npu`, `auto`: ONNX Runtime picks the device), or
/// any with `+fused` (`ort:cpu+fused`: let ONNX Runtime fuse the
/// QDQ graph into its integer kernels even where they are inexact; see
/// [`OrtFactory::new`] for the default) as a factory.
pub fn factory(name: &str) -> Result<OrtFactory> {
    let (base, fused) = match name.strip_suffix("+fused") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let mut f = OrtFactory::from_backend_name(base).ok_or_else(|| {
        anyhow!(
            "unknown backend '{name}': ort, ort:EP with EP one of {} (and +fused), or \
             ort:POLICY (ONNX Runtime's device policy) with POLICY one of {}",
            cairn_ort::Ep::ALL.map(|e| e.name()).join(", "),
            cairn_ort::DevicePolicy::ALL.map(|p| p.name()).join(", ")
        )
    })?;
    if fused {
        f.graph = Graph::Optimized;
    }
    Ok(f)
}

/// The ORT part of `cairn inspect --backends`.
pub fn inspect(m: &Model<'_>) -> Result<()> {
    println!();
    match cairn_ort::init() {
        Ok(path) => println!(
            "  ort library   {} (providers: {})",
            path.display(),
            cairn_ort::backend::library_providers().join(", ")
        ),
        Err(e) => println!("  ort library   none ({e:#}): `--backend ort` runs on the cpu"),
    }
    let f = OrtFactory::new(cairn_ort::Ep::Cpu);
    let (p, _) = Partition::plan_fitting(m, &[&f], Policy::default())
        .map_err(|e| anyhow!("no partition: {e:?}"))?;
    crate::backends::print_partition(m, &p, "ort");
    Ok(())
}

/// Say what the fallback did, when it did anything.
pub fn report(name: &str, c: &Counters) {
    if c.faults() > 0 || c.create_failures > 0 {
        eprintln!(
            "{name}: {} segment failures (device lost {}, timeouts {}, errors {}) rerun on the cpu; \
             {} re-creations, {} failed",
            c.faults(),
            c.device_lost,
            c.timeouts,
            c.errors,
            c.recreations,
            c.create_failures
        );
    }
}

fn read_inputs(
    model: &Path,
    m: &Model<'_>,
    inputs: &[String],
) -> Result<(samples::IoNames, Vec<Vec<f32>>)> {
    let names = samples::read_names(model, m.n_inputs(), m.n_outputs());
    let paths = samples::assign_inputs(inputs, &names)?;
    let arrays = paths
        .iter()
        .map(|p| cairn_convert::npy::read(p).map(|a| a.data))
        .collect::<Result<_>>()?;
    Ok((names, arrays))
}

/// Run one request through a driver: f32 inputs in, f32 outputs out.
fn invoke<F: AccelFactory>(
    h: &mut Hetero<'_, '_, '_, CpuBackend, F>,
    xs: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>> {
    for (i, x) in xs.iter().enumerate() {
        h.set_input_f32(i, x)
            .map_err(|e| anyhow!("input {i}: {e:?}"))?;
    }
    h.invoke().map_err(|e| anyhow!("run failed: {e:?}"))?;
    (0..h.model().n_outputs())
        .map(|i| {
            h.output(i)
                .map(|t| cairn_kernels::host::to_f32(&t))
                .map_err(|e| anyhow!("output {i}: {e:?}"))
        })
        .collect()
}

/// `cairn run --backend ort[:EP]`.
pub fn run(backend: &str, model: &Path, inputs: &[String], to: &RunOutputs<'_>) -> Result<()> {
    if to.reference || to.profile {
        bail!("--reference and --profile run on the cpu backend only");
    }
    let f = factory(backend)?;
    let bytes = read_model(model)?;
    let m = Model::parse(bytes.as_slice())
        .map_err(|e| anyhow!("{} is not a valid .cairn file: {e:?}", model.display()))?;
    let (names, xs) = read_inputs(model, &m, inputs)?;
    let mut arena = vec![0u8; m.arena_bytes() + cairn_core::format::ALIGN];
    let mut staging = vec![0u8; m.arena_bytes()];
    let t = Instant::now();
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        f,
        Policy::default(),
    )
    .map_err(|e| anyhow!("cannot load {}: {e:?}", model.display()))?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    if let Some(note) = h.factory().ep_note() {
        eprintln!("{note}");
    }
    match h.cpu_only_reason() {
        Some(why) => eprintln!("{backend}: running on the cpu: {why}"),
        None => eprintln!(
            "{backend}: {} of {} ops on ONNX Runtime ({} provider, graph {:?}) in {} segments \
             (loaded in {load_ms:.0} ms)",
            h.partition().ops_on(Placement::Accel(0)),
            m.n_ops(),
            h.factory().ep_in_use().map_or("?", |e| e.name()),
            h.factory().graph_in_use().unwrap_or(h.factory().graph),
            h.partition().segments().len()
        ),
    }
    let ms = tools::time_and_show(&m, &names.outputs, to, || invoke(&mut h, &xs))?;
    report(backend, &h.counters());
    if to.runs > 1 {
        println!("median of {} runs after a warm-up:", to.runs);
    }
    println!("{ms:.3} ms");
    Ok(())
}

/// One backend of `cairn bench --backends`, loaded.
trait Runner {
    fn run(&mut self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>>;
    fn note(&self) -> String;
}

struct Cpu<'m, 'a>(Interpreter<'m, 'a, CpuBackend>);

impl Runner for Cpu<'_, '_> {
    fn run(&mut self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        for (i, x) in xs.iter().enumerate() {
            self.0
                .set_input_f32(i, x)
                .map_err(|e| anyhow!("input {i}: {e:?}"))?;
        }
        self.0.invoke().map_err(|e| anyhow!("run failed: {e:?}"))?;
        (0..self.0.model().n_outputs())
            .map(|i| {
                self.0
                    .output(i)
                    .map(|t| cairn_kernels::host::to_f32(&t))
                    .map_err(|e| anyhow!("output {i}: {e:?}"))
            })
            .collect()
    }
    fn note(&self) -> String {
        "cairn CPU kernels, 1 thread".into()
    }
}

impl<F: AccelFactory> Runner for Hetero<'_, '_, '_, CpuBackend, F> {
    fn run(&mut self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        invoke(self, xs)
    }
    fn note(&self) -> String {
        let c = self.counters();
        match self.cpu_only_reason() {
            Some(why) => format!("all on the cpu: {why}"),
            None => format!(
                "{}/{} ops in {} segments; {} segment failures",
                self.partition().ops_on(Placement::Accel(0)),
                self.model().n_ops(),
                self.partition().segments().len(),
                c.faults()
            ),
        }
    }
}

/// `cairn bench MODEL.cairn --backends cpu,gpu,ort[:EP]`: one table, the same inputs, the
/// backends' runs interleaved (round r runs every backend once) so drift in the machine's
/// speed reaches them all alike.
pub fn bench(
    model: &Path,
    list: &str,
    runs: usize,
    warmup: usize,
    input: Option<&Path>,
) -> Result<()> {
    let bytes = read_model(model)?;
    let m = Model::parse(bytes.as_slice()).map_err(|e| {
        anyhow!(
            "{} is not a valid .cairn file (--backends takes a converted model): {e:?}",
            model.display()
        )
    })?;
    let xs: Vec<Vec<f32>> = match input {
        Some(p) => vec![cairn_convert::npy::read(p)?.data],
        None => (0..m.n_inputs())
            .map(|i| {
                let t = m.input_tensor(i).ok_or_else(|| anyhow!("input {i}"))?;
                Ok(crate::bench::synthetic(
                    m.tensor(t).info.numel(),
                    7 + i as u64,
                ))
            })
            .collect::<Result<_>>()?,
    };
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        bail!("--backends: name at least one of cpu, gpu, ort, ort:EP");
    }
    let mut bufs: Vec<(Vec<u8>, Vec<u8>)> = names
        .iter()
        .map(|_| {
            (
                vec![0u8; m.arena_bytes() + cairn_core::format::ALIGN],
                vec![0u8; m.arena_bytes()],
            )
        })
        .collect();
    let mut runners: Vec<(String, String, Box<dyn Runner + '_>)> = Vec::new();
    for (&name, (arena, staging)) in names.iter().zip(bufs.iter_mut()) {
        let load = |e| anyhow!("{name}: cannot load {}: {e:?}", model.display());
        let mut extra = String::new();
        let r: Box<dyn Runner + '_> = match name {
            "cpu" => Box::new(Cpu(Interpreter::new(m, CpuBackend, arena).map_err(load)?)),
            "gpu" => gpu_runner(m, arena, staging)?,
            _ => {
                let f = factory(name)?;
                let h = Hetero::new(m, CpuBackend, arena, staging, f, Policy::default())
                    .map_err(load)?;
                if let Some(note) = h.factory().ep_note() {
                    eprintln!("{note}");
                }
                if let (Some(ep), Some(g)) = (h.factory().ep_in_use(), h.factory().graph_in_use()) {
                    extra = format!("; ORT {} provider, graph {g:?}", ep.name());
                }
                Box::new(h)
            }
        };
        runners.push((name.to_string(), extra, r));
    }
    let mut outs: Vec<Vec<Vec<f32>>> = vec![Vec::new(); runners.len()];
    for _ in 0..warmup {
        for (k, (_, _, r)) in runners.iter_mut().enumerate() {
            outs[k] = r.run(&xs)?;
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); runners.len()];
    for _ in 0..runs.max(1) {
        for (k, (_, _, r)) in runners.iter_mut().enumerate() {
            let t = Instant::now();
            outs[k] = r.run(&xs)?;
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "model {} ({} ops), {} runs per backend after {warmup} warm-up, interleaved",
        model.display(),
        m.n_ops(),
        runs.max(1)
    );
    println!();
    println!(
        "  {:<14} {:>10} {:>10} {:>10} {:>10} {:>12}  notes",
        "backend", "median ms", "min ms", "p90 ms", "vs first", "top-1 = first"
    );
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (at(0.5), v[0], at(0.9))
    };
    let first_med = stats(&mut times[0]).0;
    let first_top = outs[0].first().map(|o| tools::argmax(o));
    for (k, (name, extra, r)) in runners.iter().enumerate() {
        let (med, min, p90) = stats(&mut times[k]);
        let top = outs[k].first().map(|o| tools::argmax(o));
        println!(
            "  {:<14} {:>10.4} {:>10.4} {:>10.4} {:>10.3} {:>12}  {}",
            name,
            med,
            min,
            p90,
            med / first_med,
            (top == first_top).to_string(),
            r.note() + extra
        );
    }
    Ok(())
}

#[cfg(feature = "gpu")]
fn gpu_runner<'m, 'b>(
    m: Model<'m>,
    arena: &'b mut [u8],
    staging: &'b mut [u8],
) -> Result<Box<dyn Runner + 'b>>
where
    'm: 'b,
{
    let f = cairn_gpu::GpuFactory::default();
    let h = Hetero::new(m, CpuBackend, arena, staging, f, Policy::default())
        .map_err(|e| anyhow!("gpu: cannot load: {e:?}"))?;
    Ok(Box::new(h))
}

#[cfg(not(feature = "gpu"))]
fn gpu_runner<'m, 'b>(
    _: Model<'m>,
    _: &'b mut [u8],
    _: &'b mut [u8],
) -> Result<Box<dyn Runner + 'b>> {
    bail!("gpu: this cairn was built without the `gpu` feature")
}

//! `cairn run --backend cpu|gpu|ort[:EP]` and `cairn inspect --backends`: the partition of a model
//! over the accelerators this build has, and runs through the heterogeneous driver
//! (`cairn_kernels::hetero`), which reruns on the CPU whatever an accelerator fails.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use cairn_core::partition::{transfer_bytes, Partition, Placement};
use cairn_core::Model;

use crate::tools::{self, read_model, RunOutputs};
#[cfg(feature = "gpu")]
use gpu::{inspect_gpu, run_gpu};

/// `cairn inspect --backends MODEL`.
pub fn inspect(path: &Path) -> Result<()> {
    let bytes = read_model(path)?;
    let m = Model::parse(bytes.as_slice())
        .map_err(|e| anyhow!("{} is not a valid .cairn file: {e:?}", path.display()))?;
    println!("{}", path.display());
    println!("  preference    gpu, then cpu (every op; the fallback for all of them)");
    inspect_gpu(&m)?;
    crate::ort_backend::inspect(&m)
}

#[cfg(not(feature = "gpu"))]
fn inspect_gpu(_: &Model<'_>) -> Result<()> {
    println!("  gpu           not in this build (cargo feature `gpu`): every op on the cpu");
    Ok(())
}

/// `cairn run --backend NAME ...`.
pub fn run_cmd(backend: &str, model: &Path, inputs: &[String], to: &RunOutputs<'_>) -> Result<()> {
    match backend {
        "cpu" => tools::run_cmd(model, inputs, to),
        "gpu" => run_gpu(model, inputs, to),
        ort if ort == "ort" || ort.starts_with("ort:") => {
            crate::ort_backend::run(ort, model, inputs, to)
        }
        other => bail!("unknown backend '{other}': cpu, gpu, ort or ort:EP"),
    }
}

#[cfg(not(feature = "gpu"))]
fn run_gpu(_: &Path, _: &[String], _: &RunOutputs<'_>) -> Result<()> {
    bail!("this cairn was built without the `gpu` feature")
}

/// The GPU side (cargo feature `gpu`).
/// The partition table of `cairn inspect --backends` for one accelerator.
pub(crate) fn print_partition(m: &Model<'_>, p: &Partition, name: &str) {
    println!(
        "  ops           {} on {name}, {} on cpu, {} segments",
        p.ops_on(Placement::Accel(0)),
        p.ops_on(Placement::Cpu),
        p.segments().len()
    );
    println!(
        "  arena bytes   {} (the plan is the same for every partition)",
        m.arena_bytes()
    );
    println!();
    println!(
        "  {:>4}  {:<8} {:>10} {:>10} {:>10}  kinds",
        "seg", "backend", "ops", "in bytes", "out bytes"
    );
    for (i, s) in p.segments().iter().enumerate() {
        let on = match s.placement {
            Placement::Cpu => "cpu",
            Placement::Accel(_) => name,
        };
        let (tin, tout) = match s.placement {
            Placement::Cpu => ("-".to_string(), "-".to_string()),
            Placement::Accel(_) => {
                let (a, b) = transfer_bytes(m, *s);
                (a.to_string(), b.to_string())
            }
        };
        let mut kinds: Vec<&str> = Vec::new();
        for k in s.ops().filter_map(|o| m.op(o).map(|op| op.kind.name())) {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        println!(
            "  {:>4}  {:<8} {:>10} {:>10} {:>10}  {}",
            i,
            on,
            format!("{}..{}", s.start, s.end),
            tin,
            tout,
            kinds.join(" ")
        );
    }
}

#[cfg(feature = "gpu")]
mod gpu {
    use std::path::Path;
    use std::time::Instant;

    use anyhow::{anyhow, bail, Result};
    use cairn_core::partition::{Partition, Placement, Policy};
    use cairn_core::Model;
    use cairn_kernels::hetero::{Counters, Hetero};
    use cairn_kernels::CpuBackend;

    use crate::samples;
    use crate::tools::{self, read_model, RunOutputs};

    pub fn inspect_gpu(m: &Model<'_>) -> Result<()> {
        let m = *m;
        let factory = cairn_gpu::GpuFactory::default();
        match cairn_gpu::probe() {
            Some(a) => println!(
                "  gpu adapter   {} ({}, {}; dot4I8Packed {})",
                a.name,
                a.backend,
                a.device_type,
                if a.packed_dot { "yes" } else { "no" }
            ),
            None => {
                println!("  gpu adapter   none found: `cairn run --backend gpu` runs on the cpu")
            }
        }
        let (p, policy) = Partition::plan_fitting(&m, &[&factory], Policy::default())
            .map_err(|e| anyhow!("no partition: {e:?}"))?;
        if policy.min_ops > 1 {
            println!(
                "  policy        gpu runs of at least {} ops (shorter ones on the cpu, to stay within {} segments)",
                policy.min_ops,
                cairn_core::partition::MAX_SEGMENTS
            );
        }
        super::print_partition(&m, &p, "gpu");
        Ok(())
    }

    pub fn run_gpu(model: &Path, inputs: &[String], to: &RunOutputs<'_>) -> Result<()> {
        if to.reference || to.profile {
            bail!("--reference and --profile run on the cpu backend only");
        }
        let bytes = read_model(model)?;
        let m = Model::parse(bytes.as_slice())
            .map_err(|e| anyhow!("{} is not a valid .cairn file: {e:?}", model.display()))?;
        let names = samples::read_names(model, m.n_inputs(), m.n_outputs());
        let paths = samples::assign_inputs(inputs, &names)?;
        let arrays: Vec<cairn_convert::npy::Array> = paths
            .iter()
            .map(|p| cairn_convert::npy::read(p))
            .collect::<Result<_>>()?;
        let mut arena = vec![0u8; m.arena_bytes() + cairn_core::format::ALIGN];
        let mut staging = vec![0u8; m.arena_bytes()];
        let factory = cairn_gpu::GpuFactory::default();
        let t = Instant::now();
        let mut h = Hetero::new(
            m,
            CpuBackend,
            &mut arena,
            &mut staging,
            factory,
            Policy::default(),
        )
        .map_err(|e| anyhow!("cannot load {}: {e:?}", model.display()))?;
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        match h.cpu_only_reason() {
            Some(why) => eprintln!("gpu: running on the cpu: {why}"),
            None => eprintln!(
                "gpu: {} of {} ops on the gpu in {} segments (loaded in {load_ms:.0} ms)",
                h.partition().ops_on(Placement::Accel(0)),
                m.n_ops(),
                h.partition().segments().len()
            ),
        }
        let run =
            |h: &mut Hetero<'_, '_, '_, CpuBackend, cairn_gpu::GpuFactory>| -> Result<Vec<Vec<f32>>> {
                for (i, a) in arrays.iter().enumerate() {
                    h.set_input_f32(i, &a.data)
                        .map_err(|e| anyhow!("input {i}: {e:?}"))?;
                }
                h.invoke().map_err(|e| anyhow!("run failed: {e:?}"))?;
                (0..m.n_outputs())
                    .map(|i| {
                        h.output(i)
                            .map(|t| cairn_kernels::host::to_f32(&t))
                            .map_err(|e| anyhow!("output {i}: {e:?}"))
                    })
                    .collect()
            };
        let ms = tools::time_and_show(&m, &names.outputs, to, || run(&mut h))?;
        report(&h.counters());
        if to.runs > 1 {
            println!("median of {} runs after a warm-up:", to.runs);
        }
        println!("{ms:.3} ms");
        Ok(())
    }

    /// Say what the fallback did, when it did anything.
    fn report(c: &Counters) {
        if c.faults() > 0 {
            eprintln!(
                "gpu: {} segment failures (device lost {}, timeouts {}, errors {}) rerun on the cpu; \
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
}

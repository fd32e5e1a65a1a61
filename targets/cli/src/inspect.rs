//! `cairn inspect`: what a `.cairn` file holds and what it will cost on a device.

use std::path::Path;

use anyhow::{anyhow, Result};
use cairn_core::model::Storage;
use cairn_core::{Model, Quant};

use crate::tools::read_model;

fn quant_str(q: &Quant) -> String {
    match q {
        Quant::None => "-".into(),
        Quant::PerTensor { scale, zero_point } => format!("s={scale:.6} zp={zero_point}"),
        Quant::PerAxis { axis, scales, .. } => {
            let lo = scales.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = scales.iter().copied().fold(0.0f32, f32::max);
            format!(
                "per-axis {axis}: {} scales in [{lo:.2e}, {hi:.2e}]",
                scales.len()
            )
        }
    }
}

pub fn inspect(path: &Path, tensors: bool) -> Result<()> {
    let bytes = read_model(path)?;
    let m = Model::parse(bytes.as_slice())
        .map_err(|e| anyhow!("{} is not a valid .cairn file: {e:?}", path.display()))?;
    println!("{}", path.display());
    println!("  format        .cairn v{}", cairn_core::format::VERSION);
    println!(
        "  flash bytes   {} (weights and tables {})",
        m.flash_bytes(),
        m.blob_bytes()
    );
    let ratio = m.arena_bytes() as f64 / m.arena_lower_bound().max(1) as f64;
    println!(
        "  arena bytes   {} (lower bound {}, ratio {:.3})",
        m.arena_bytes(),
        m.arena_lower_bound(),
        ratio
    );
    println!("  tensors       {}    ops {}", m.n_tensors(), m.n_ops());
    for i in 0..m.n_inputs() {
        let t = m.tensor(m.input_tensor(i).unwrap_or(0)).info;
        println!("  input {i}       {} {:?}", t.dtype.name(), t.shape);
    }
    for i in 0..m.n_outputs() {
        let t = m.tensor(m.output_tensor(i).unwrap_or(0)).info;
        println!("  output {i}      {} {:?}", t.dtype.name(), t.shape);
    }
    let kernels: Vec<String> = m.kernels().iter().map(|k| k.to_string()).collect();
    println!("  kernels ({})   {}", kernels.len(), kernels.join(" "));
    println!();
    println!(
        "  {:>4}  {:<18} {:<10} {:<24} {:>12}  quant (output)",
        "#", "op", "kernel", "output", "MACs"
    );
    let mut total = 0u64;
    for i in 0..m.n_ops() {
        let Some(op) = m.op(i) else { continue };
        let k = m.kernel_of(i).map_or("?".into(), |k| k.to_string());
        let k = k.split_once('.').map_or(k.clone(), |(_, v)| v.to_string());
        let out = m.tensor(op.output(0)).info;
        let macs = m.op_macs(i);
        total += macs;
        println!(
            "  {:>4}  {:<18} {:<10} {:<24} {:>12}  {}",
            i,
            op.kind.name(),
            k,
            format!("{} {:?}", out.dtype.name(), out.shape),
            macs,
            quant_str(&out.quant)
        );
    }
    println!();
    println!("  total MACs    {total} ({:.2} M)", total as f64 / 1e6);
    if tensors {
        println!();
        println!(
            "  {:>4}  {:<5} {:<22} {:<22} quant",
            "#", "dtype", "shape", "storage"
        );
        for t in 0..m.n_tensors() as u16 {
            let d = m.tensor(t);
            let st = match d.storage {
                Storage::Arena { offset, bytes } => format!("arena @{offset} +{bytes}"),
                Storage::Const(c) => format!("const {} B", c.len()),
            };
            println!(
                "  {:>4}  {:<5} {:<22} {:<22} {}",
                t,
                d.info.dtype.name(),
                format!("{:?}", d.info.shape),
                st,
                quant_str(&d.info.quant)
            );
        }
    }
    Ok(())
}

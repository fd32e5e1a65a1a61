//! Run a model on N samples through the CPU backend and through the GPU (heterogeneous
//! driver), and report on how many samples every output is equal byte for byte, top-1
//! agreement (of output 0) and timings.
//!
//! `cargo run --release -p cairn-gpu --example agree -- MODEL.cairn SAMPLES.f32 [N]`
//! where SAMPLES.f32 holds N inputs of the model's first input, f32 little-endian, back to
//! back.

use std::time::Instant;

use cairn_core::emit::AlignedBytes;
use cairn_core::partition::{Placement, Policy};
use cairn_core::{Interpreter, Model};
use cairn_gpu::GpuFactory;
use cairn_kernels::hetero::Hetero;
use cairn_kernels::CpuBackend;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: agree MODEL.cairn SAMPLES.f32 [N]".into());
    }
    let bytes = AlignedBytes::from_slice(&std::fs::read(&args[1])?);
    let m = Model::parse(bytes.as_slice()).map_err(|e| format!("{e:?}"))?;
    let raw = std::fs::read(&args[2])?;
    let xs: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let per = m.tensor(m.input_tensor(0).ok_or("no input")?).info.numel();
    let n = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(xs.len() / per)
        .min(xs.len() / per);

    let mut cpu_arena = vec![0u8; m.arena_bytes() + 16];
    let mut cpu = Interpreter::new(m, CpuBackend, &mut cpu_arena).map_err(|e| format!("{e:?}"))?;
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let t = Instant::now();
    let mut gpu = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        GpuFactory::default(),
        Policy::default(),
    )
    .map_err(|e| format!("{e:?}"))?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    if let Some(why) = gpu.cpu_only_reason() {
        println!("gpu: running on the cpu: {why}");
    }
    println!(
        "{}: {} of {} ops on the gpu, {} segments, gpu load {load_ms:.0} ms",
        args[1],
        gpu.partition().ops_on(Placement::Accel(0)),
        m.n_ops(),
        gpu.partition().segments().len()
    );
    let (mut equal, mut top1, mut cpu_s, mut gpu_s) = (0, 0, 0.0, 0.0);
    let out_t = m.tensor(m.output_tensor(0).ok_or("no output")?).info;
    for i in 0..n {
        let x = &xs[i * per..(i + 1) * per];
        cpu.set_input_f32(0, x).map_err(|e| format!("{e:?}"))?;
        let t = Instant::now();
        cpu.invoke().map_err(|e| format!("{e:?}"))?;
        cpu_s += t.elapsed().as_secs_f64();
        gpu.set_input_f32(0, x).map_err(|e| format!("{e:?}"))?;
        let t = Instant::now();
        gpu.invoke().map_err(|e| format!("{e:?}"))?;
        gpu_s += t.elapsed().as_secs_f64();
        let mut all_equal = true;
        for k in 1..m.n_outputs() {
            let (a, b) = (
                cpu.output(k).map_err(|e| format!("{e:?}"))?.data,
                gpu.output(k).map_err(|e| format!("{e:?}"))?.data,
            );
            all_equal &= a == b;
        }
        let (a, b) = (
            cpu.output(0).map_err(|e| format!("{e:?}"))?.data,
            gpu.output(0).map_err(|e| format!("{e:?}"))?.data,
        );
        equal += usize::from(all_equal && a == b);
        let f = |d: &[u8]| -> Vec<f32> {
            cairn_kernels::host::to_f32(&cairn_core::TensorRef {
                info: out_t,
                data: d,
            })
        };
        let (fa, fb) = (f(a), f(b));
        let am = |v: &[f32]| {
            (0..v.len())
                .max_by(|&i, &j| v[i].total_cmp(&v[j]))
                .unwrap_or(0)
        };
        top1 += usize::from(am(&fa) == am(&fb));
    }
    let c = gpu.counters();
    println!(
        "{n} samples: all outputs equal {equal}/{n}, top-1 equal {top1}/{n}; cpu {:.3} ms/sample, gpu {:.3} ms/sample; {} gpu segments, {} failures",
        cpu_s * 1e3 / n.max(1) as f64,
        gpu_s * 1e3 / n.max(1) as f64,
        c.accel_segments,
        c.faults()
    );
    Ok(())
}

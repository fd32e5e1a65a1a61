//! A whole model through the ONNX Runtime backend (`ort:cpu`, via the heterogeneous driver)
//! against the CPU backend alone, on one input: the ops on ORT, and per output the largest
//! difference (in LSB for int8 outputs, absolute for f32) and whether the argmax agrees.
//!
//! `cargo run --release -p cairn-ort --example end_to_end -- MODEL.cairn IN0.f32 [IN1.f32 ...]`
//! where each INk.f32 holds input k as f32 little-endian (rounded for an i32 input).

use cairn_core::emit::AlignedBytes;
use cairn_core::partition::{Placement, Policy};
use cairn_core::{DType, Interpreter, Model, RunError, TensorRef};
use cairn_kernels::hetero::Hetero;
use cairn_kernels::CpuBackend;
use cairn_ort::{Ep, OrtFactory};

type Error = Box<dyn std::error::Error>;

/// Input bytes from f32 values: as they are, or rounded to integers for an i32 input.
fn input_bytes(dtype: DType, x: &[f32]) -> Vec<u8> {
    match dtype {
        DType::I32 => x.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
        _ => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn fill(dst: Result<&mut [u8], RunError>, src: &[u8], i: usize) -> Result<(), Error> {
    let dst = dst.map_err(|e| format!("input {i}: {e:?}"))?;
    if dst.len() != src.len() {
        return Err(format!("input {i}: {} bytes for {}", src.len(), dst.len()).into());
    }
    dst.copy_from_slice(src);
    Ok(())
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

/// (int8 bytes if int8, the values as f32).
fn values(t: &TensorRef<'_>) -> (Option<Vec<i8>>, Vec<f32>) {
    let q = (t.info.dtype == DType::I8).then(|| t.data.iter().map(|&b| b as i8).collect());
    (q, cairn_kernels::host::to_f32(t))
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: end_to_end MODEL.cairn IN0.f32 [IN1.f32 ...]".into());
    }
    let bytes = AlignedBytes::from_slice(&std::fs::read(&args[1])?);
    let m = Model::parse(bytes.as_slice()).map_err(|e| format!("{e:?}"))?;
    let mut ins = Vec::new();
    for (i, p) in args[2..].iter().enumerate() {
        let raw = std::fs::read(p)?;
        let x: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let t = m.input_tensor(i).ok_or("more inputs than the model has")?;
        ins.push(input_bytes(m.tensor(t).info.dtype, &x));
    }
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut cpu = Interpreter::new(m, CpuBackend, &mut arena).map_err(|e| format!("{e:?}"))?;
    for (i, x) in ins.iter().enumerate() {
        fill(cpu.input_bytes_mut(i), x, i)?;
    }
    cpu.invoke().map_err(|e| format!("{e:?}"))?;
    let mut arena2 = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let f = OrtFactory::new(Ep::Cpu);
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena2,
        &mut staging,
        f,
        Policy::default(),
    )
    .map_err(|e| format!("{e:?}"))?;
    if let Some(why) = h.cpu_only_reason() {
        return Err(format!("ORT did not load: {why:?}").into());
    }
    for (i, x) in ins.iter().enumerate() {
        fill(h.input_bytes_mut(i), x, i)?;
    }
    h.invoke().map_err(|e| format!("{e:?}"))?;
    println!(
        "{}: {}/{} ops on ort in {} segments; faults {}",
        args[1],
        h.partition().ops_on(Placement::Accel(0)),
        m.n_ops(),
        h.partition().segments().len(),
        h.counters().faults()
    );
    for k in 0..m.n_outputs() {
        let a = cpu.output(k).map_err(|e| format!("{e:?}"))?;
        let b = h.output(k).map_err(|e| format!("{e:?}"))?;
        let ((qa, fa), (qb, fb)) = (values(&a), values(&b));
        let diff = match (qa, qb) {
            (Some(qa), Some(qb)) => {
                let d = qa
                    .iter()
                    .zip(&qb)
                    .map(|(&u, &v)| (u as i32 - v as i32).abs())
                    .max();
                format!("max {} LSB", d.unwrap_or(0))
            }
            _ => {
                let d = fa
                    .iter()
                    .zip(&fb)
                    .map(|(u, v)| (u - v).abs())
                    .fold(0f32, f32::max);
                let range = fa.iter().fold(0f32, |r, v| r.max(v.abs()));
                let far = fa
                    .iter()
                    .zip(&fb)
                    .filter(|(u, v)| (*u - *v).abs() > 0.05 * range)
                    .count();
                format!("max |diff| {d:.4} (|max| {range:.3}; {far} values off by > 5% of it)")
            }
        };
        println!(
            "  output {k} ({} values): {diff}; argmax {} vs {}",
            fa.len(),
            argmax(&fa),
            argmax(&fb)
        );
    }
    Ok(())
}

//! Per-op agreement of the ONNX Runtime backend with the CPU backend on one model and
//! input: every exportable op runs alone in ORT from the CPU backend's own inputs, and the
//! largest int8 difference is reported per op kind (and the worst ops).
//!
//! `cargo run --release -p cairn-ort --example per_op -- MODEL.cairn IN0.f32 [IN1.f32 ...]`
//! where each INk.f32 holds input k as f32 little-endian (rounded for an i32 input).

use cairn_core::accel::{AccelFactory, Accelerator};
use cairn_core::emit::AlignedBytes;
use cairn_core::partition::{
    arena_range, segment_outputs, OpSupport, Partition, Placement, Policy,
};
use cairn_core::{DType, Interpreter, Model};
use cairn_kernels::CpuBackend;
use cairn_ort::{Ep, OrtFactory};

struct OneOpEach {
    from: usize,
    parity: usize,
}

impl OpSupport for OneOpEach {
    fn supports_op(&self, m: &Model<'_>, op: usize) -> bool {
        (self.from..self.from + 60).contains(&op)
            && op % 2 == self.parity
            && cairn_ort::export::op_exportable(m, op)
    }
}

/// Input `i` from f32 values: as they are, or rounded to integers for an i32 input (token
/// ids, masks).
fn set_input(
    it: &mut Interpreter<'_, '_, CpuBackend>,
    i: usize,
    x: &[f32],
) -> Result<(), Box<dyn std::error::Error>> {
    let t = it.model().input_tensor(i).ok_or("no such input")?;
    if it.model().tensor(t).info.dtype != DType::I32 {
        return it
            .set_input_f32(i, x)
            .map_err(|e| format!("input {i}: {e:?}").into());
    }
    let dst = it
        .input_bytes_mut(i)
        .map_err(|e| format!("input {i}: {e:?}"))?;
    if dst.len() != 4 * x.len() {
        return Err(format!("input {i}: {} values for {} bytes", x.len(), dst.len()).into());
    }
    for (d, &v) in dst.chunks_exact_mut(4).zip(x) {
        d.copy_from_slice(&(v as i32).to_le_bytes());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: per_op MODEL.cairn IN0.f32 [IN1.f32 ...]".into());
    }
    let bytes = AlignedBytes::from_slice(&std::fs::read(&args[1])?);
    let m = Model::parse(bytes.as_slice()).map_err(|e| format!("{e:?}"))?;
    let xs: Vec<Vec<f32>> = args[2..]
        .iter()
        .map(|p| {
            std::fs::read(p).map(|raw| {
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            })
        })
        .collect::<Result<_, _>>()?;
    let mut f = OrtFactory::new(Ep::Cpu);
    let mut worst_op = vec![0u32; m.n_ops()];
    for from in (0..m.n_ops()).step_by(60) {
        for parity in 0..2 {
            let sel = OneOpEach { from, parity };
            let p =
                Partition::plan(&m, &[&sel], Policy::default()).map_err(|e| format!("{e:?}"))?;
            if !p.uses_accelerator() {
                continue;
            }
            let mut accel = f.create(&m, &p).map_err(|e| format!("{e:?}"))?;
            let mut arena = vec![0u8; m.arena_bytes() + 16];
            let mut staging = vec![0u8; m.arena_bytes()];
            let mut it =
                Interpreter::new(m, CpuBackend, &mut arena).map_err(|e| format!("{e:?}"))?;
            for (i, x) in xs.iter().enumerate() {
                set_input(&mut it, i, x)?;
            }
            for &seg in p.segments() {
                let before = it.arena()[..m.arena_bytes()].to_vec();
                for op in seg.ops() {
                    it.invoke_op(op).map_err(|e| format!("op {op}: {e:?}"))?;
                }
                if seg.placement == Placement::Cpu {
                    continue;
                }
                accel
                    .run_segment(&m, seg, &before, &mut staging)
                    .map_err(|e| format!("segment {seg:?}: {e:?}"))?;
                for t in segment_outputs(&m, seg) {
                    let Some(r) = arena_range(&m, t) else {
                        continue;
                    };
                    if m.tensor(t).info.dtype != DType::I8 {
                        continue;
                    }
                    let d = it.arena()[r.clone()]
                        .iter()
                        .zip(&staging[r])
                        .map(|(&u, &v)| (u as i8 as i32 - v as i8 as i32).unsigned_abs())
                        .max()
                        .unwrap_or(0);
                    worst_op[seg.start as usize] = worst_op[seg.start as usize].max(d);
                }
            }
        }
    }
    let mut by_kind: std::collections::BTreeMap<&str, (u32, usize)> = Default::default();
    for (i, &w) in worst_op.iter().enumerate() {
        if cairn_ort::export::op_exportable(&m, i) {
            let k = m.op(i).map_or("?", |o| o.kind.name());
            let e = by_kind.entry(k).or_default();
            e.0 = e.0.max(w);
            e.1 += 1;
        }
    }
    for (k, (w, n)) in &by_kind {
        println!("  {k:<20} {n:>4} ops  max {w} LSB");
    }
    let mut idx: Vec<usize> = (0..m.n_ops()).collect();
    idx.sort_by_key(|&i| std::cmp::Reverse(worst_op[i]));
    for &i in idx.iter().take(5).filter(|&&i| worst_op[i] > 1) {
        println!(
            "  op #{i} {:?}: {} LSB",
            m.op(i).map(|o| o.kind),
            worst_op[i]
        );
    }
    Ok(())
}

//! Which ops of `.cairn` models the ONNX Runtime backend takes: per model, the ops on ORT
//! of the total (the partition `cairn inspect --backends` prints), and the op kinds left on
//! the CPU with their dtypes, counted.
//!
//! `cargo run --release -p cairn-ort --example coverage -- MODEL.cairn [MODEL.cairn ...]`

use std::collections::BTreeMap;

use cairn_core::emit::AlignedBytes;
use cairn_core::partition::{Partition, Placement, Policy};
use cairn_core::Model;
use cairn_ort::{Ep, OrtFactory};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        return Err("usage: coverage MODEL.cairn [MODEL.cairn ...]".into());
    }
    let f = OrtFactory::new(Ep::Cpu);
    for path in &paths {
        let bytes = AlignedBytes::from_slice(&std::fs::read(path)?);
        let m = Model::parse(bytes.as_slice()).map_err(|e| format!("{path}: {e:?}"))?;
        let (p, _) = Partition::plan_fitting(&m, &[&f], Policy::default())
            .map_err(|e| format!("{path}: {e:?}"))?;
        let mut left: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..m.n_ops() {
            if cairn_ort::export::op_exportable(&m, i) {
                continue;
            }
            let Some(op) = m.op(i) else { continue };
            let dt = |t: Option<u16>| {
                t.map_or("-".to_string(), |t| format!("{:?}", m.tensor(t).info.dtype))
            };
            let key = format!(
                "{}({}->{})",
                op.kind.name(),
                dt(op.input(0)),
                dt(Some(op.output(0)))
            );
            *left.entry(key).or_default() += 1;
        }
        println!(
            "{path}: {}/{} ops on ort in {} segments; left on cpu: {}",
            p.ops_on(Placement::Accel(0)),
            m.n_ops(),
            p.segments().len(),
            left.iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

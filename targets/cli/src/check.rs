//! `cairn check MODEL.onnx`: every node cairn cannot convert yet, all at once, with op and
//! reason, before any conversion work (no calibration, no quantization).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::ConvertArgs;

/// Print the problems; an error (exit status 1) when there are any.
pub fn check(model: &Path, args: &ConvertArgs) -> Result<()> {
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let (mut opts, _) = crate::tools::options(args, &bytes)?;
    opts.external_data_dir = Some(crate::tools::model_dir(model));
    let report = cairn_convert::check(&bytes, &opts)?;
    if report.problems.is_empty() {
        println!("{}: all {} nodes convert", model.display(), report.nodes);
        return Ok(());
    }
    let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &report.problems {
        *by_op.entry(p.op.as_str()).or_default() += 1;
        println!("  {} ({}): {}", p.node, p.op, p.reason);
    }
    let ops: Vec<String> = by_op.iter().map(|(op, n)| format!("{op} ×{n}")).collect();
    // Graph inputs without the dims a conversion needs are problems too, not nodes.
    let inputs = report
        .problems
        .iter()
        .filter(|p| p.op == "(graph input)")
        .count();
    let nodes = report.problems.len() - inputs;
    let inputs = match inputs {
        0 => String::new(),
        1 => " and 1 graph input needs its dims".to_string(),
        k => format!(" and {k} graph inputs need their dims"),
    };
    println!(
        "{}: {} of {} nodes cannot convert yet{} ({}); {} more read their results",
        model.display(),
        nodes,
        report.nodes,
        inputs,
        ops.join(", "),
        report.blocked
    );
    bail!("the model does not convert yet")
}

//! Export a `.cairn` model (every op the exporter covers must be in it) to a QDQ ONNX file,
//! to look at or run elsewhere: `cargo run --release -p cairn-ort --example export --
//! MODEL.cairn OUT.onnx`. Ops it cannot export are listed.

use cairn_core::emit::AlignedBytes;
use cairn_core::Model;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err("usage: export MODEL.cairn OUT.onnx".into());
    }
    let bytes = AlignedBytes::from_slice(&std::fs::read(&args[1])?);
    let m = Model::parse(bytes.as_slice()).map_err(|e| format!("{e:?}"))?;
    let missing: Vec<String> = (0..m.n_ops())
        .filter(|&i| !cairn_ort::export::op_exportable(&m, i))
        .map(|i| format!("#{i} {}", m.op(i).map_or("?", |o| o.kind.name())))
        .collect();
    if !missing.is_empty() {
        return Err(format!("not exportable: {}", missing.join(", ")).into());
    }
    let ex = cairn_ort::export::export_model(&m).ok_or("export failed")?;
    std::fs::write(&args[2], &ex.onnx)?;
    println!("wrote {} ({} bytes)", args[2], ex.onnx.len());
    Ok(())
}

//! Shared pieces of the commands: option parsing, conversion with a progress bar,
//! loading and running `.cairn` files.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use cairn_convert::npy;
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ConvertArgs;

pub fn parse_dims(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .with_context(|| format!("bad dimension '{d}' in '{s}'"))
        })
        .collect()
}

/// Calibration samples for a model whose first input has `numel` elements per sample.
pub fn load_samples(path: &Path, numel: Option<usize>) -> Result<Vec<npy::Array>> {
    let arrays = npy::read_dir_or_file(path)?;
    let mut out = Vec::new();
    for a in arrays {
        match numel {
            Some(n) if n > 0 && a.data.len() > n && a.data.len() % n == 0 => {
                let per_shape = a.shape[1..].to_vec();
                for c in a.data.chunks(n) {
                    let mut shape = vec![1];
                    shape.extend(&per_shape);
                    out.push(npy::Array {
                        shape,
                        data: c.to_vec(),
                    });
                }
            }
            _ => out.push(a),
        }
    }
    Ok(out)
}

pub fn options(
    args: &ConvertArgs,
    onnx_bytes: &[u8],
) -> Result<(cairn_convert::Options, Vec<npy::Array>)> {
    let mut o = cairn_convert::Options {
        float: args.float,
        extra_outputs: args.extra_output.clone(),
        ..Default::default()
    };
    for (i, s) in args.input_shape.iter().enumerate() {
        match s.split_once(':') {
            Some((name, dims)) => o.input_shapes.insert(name.to_string(), parse_dims(dims)?),
            None => o.input_shapes.insert(format!("#{i}"), parse_dims(s)?),
        };
    }
    o.method = match args.method.as_str() {
        "minmax" => cairn_convert::Method::MinMax,
        p => cairn_convert::Method::Percentile(
            p.parse::<f32>()
                .map_err(|_| anyhow!("--method is 'minmax' or a percentile like 99.99"))?,
        ),
    };
    let mut samples = Vec::new();
    if let Some(dir) = &args.calibrate {
        // Per-sample element count from the model's fixed input shape, if known.
        let numel = o
            .input_shapes
            .get("#0")
            .map(|d| d.iter().product())
            .or_else(|| first_input_numel(onnx_bytes));
        samples = load_samples(dir, numel)?;
        if o.input_shapes.is_empty() {
            if let Some(s) = samples.first() {
                o.input_shapes.insert("#0".into(), s.shape.clone());
            }
        }
        o.calibration = samples.iter().map(|s| vec![s.data.clone()]).collect();
    }
    Ok((o, samples))
}

fn first_input_numel(onnx_bytes: &[u8]) -> Option<usize> {
    let m = cairn_convert::onnx::load_model(onnx_bytes).ok()?;
    let g = m.graph?;
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let i = g.input.iter().find(|i| !inits.contains(&i.name.as_str()))?;
    let (_, dims) = cairn_convert::onnx::value_info_type(i);
    dims?
        .iter()
        .copied()
        .collect::<Option<Vec<usize>>>()
        .map(|d| d.iter().product())
}

pub fn convert_with_progress(onnx: &Path, args: &ConvertArgs) -> Result<cairn_convert::Converted> {
    let bytes = std::fs::read(onnx).with_context(|| format!("reading {}", onnx.display()))?;
    let (opts, _) = options(args, &bytes)?;
    let bar = if opts.calibration.is_empty() {
        None
    } else {
        let b = ProgressBar::new(opts.calibration.len() as u64);
        b.set_style(
            ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} samples")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(b)
    };
    let r = cairn_convert::convert(&bytes, &opts, |i| {
        if let Some(b) = &bar {
            b.set_position(i as u64);
        }
    })
    .with_context(|| format!("converting {}", onnx.display()));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    r
}

pub fn convert_cmd(model: &Path, output: &Path, args: &ConvertArgs) -> Result<()> {
    let t = Instant::now();
    let c = convert_with_progress(model, args)?;
    std::fs::write(output, &c.bytes).with_context(|| format!("writing {}", output.display()))?;
    let b = AlignedBytes::from_slice(&c.bytes);
    let m = cairn_core::Model::parse(b.as_slice()).map_err(|e| anyhow!("{e:?}"))?;
    println!(
        "wrote {} ({} bytes, arena {} bytes, {} ops, mode {}) in {:.2}s",
        output.display(),
        c.bytes.len(),
        m.arena_bytes(),
        m.n_ops(),
        c.mode,
        t.elapsed().as_secs_f64()
    );
    for n in &c.notes {
        println!("note: {n}");
    }
    if c.mode != "float" {
        println!("{} ops in int8, {} in f32", c.int8_ops, c.f32_ops.len());
        for f in &c.f32_ops {
            println!("  stays f32: {f}");
        }
    }
    Ok(())
}

pub fn read_model(path: &Path) -> Result<AlignedBytes> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(AlignedBytes::from_slice(&raw))
}

pub fn host_model<'a>(bytes: &'a AlignedBytes, what: &Path) -> Result<HostModel<'a>> {
    HostModel::new(bytes.as_slice())
        .map_err(|e| anyhow!("{} is not a usable .cairn model: {e:?}", what.display()))
}

pub fn top_k(v: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<(usize, f32)> = v.iter().copied().enumerate().collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1));
    idx.truncate(k);
    idx
}

pub fn argmax(v: &[f32]) -> usize {
    top_k(v, 1).first().map_or(0, |p| p.0)
}

pub fn run_cmd(
    model: &Path,
    inputs: &[std::path::PathBuf],
    output: Option<&Path>,
    k: usize,
) -> Result<()> {
    let bytes = read_model(model)?;
    let mut m = host_model(&bytes, model)?;
    let infos = m.inputs();
    if inputs.len() != infos.len() {
        bail!(
            "the model takes {} inputs, {} given",
            infos.len(),
            inputs.len()
        );
    }
    let arrays: Vec<npy::Array> = inputs.iter().map(|p| npy::read(p)).collect::<Result<_>>()?;
    for (a, info) in arrays.iter().zip(&infos) {
        let need: usize = info.shape.iter().product();
        if a.data.len() != need {
            bail!(
                "input of shape {:?} given where the model takes {:?}",
                a.shape,
                info.shape
            );
        }
    }
    let refs: Vec<&[f32]> = arrays.iter().map(|a| a.data.as_slice()).collect();
    let t = Instant::now();
    let outs = m.run(&refs).map_err(|e| anyhow!("run failed: {e:?}"))?;
    let dt = t.elapsed();
    let oinfo = m.outputs();
    match output {
        Some(p) => {
            npy::write(p, &oinfo[0].shape, &outs[0])?;
            println!(
                "wrote {} (shape {:?}) in {:.3} ms",
                p.display(),
                oinfo[0].shape,
                dt.as_secs_f64() * 1e3
            );
        }
        None => {
            for (i, o) in outs.iter().enumerate() {
                println!(
                    "output {i} shape {:?}: top-{k} {:?}",
                    oinfo[i].shape,
                    top_k(o, k)
                );
            }
            println!("{:.3} ms", dt.as_secs_f64() * 1e3);
        }
    }
    Ok(())
}

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

/// How one sample of the model's first input is recognised in a calibration array.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SampleShape {
    /// The input's shape is fully known: a sample has this many elements.
    Numel(usize),
    /// The batch dimension is dynamic and the input has this rank: an array of that rank
    /// is a batch along its first axis.
    DynamicBatch(usize),
    /// Nothing known: each array is one sample.
    Unknown,
}

/// Calibration samples for a model whose first input has the given per-sample shape;
/// a batch (an array holding several samples along its first axis) is split into
/// samples of batch 1.
pub fn load_samples(path: &Path, sample: SampleShape) -> Result<Vec<npy::Array>> {
    let arrays = npy::read_dir_or_file(path)?;
    let mut out = Vec::new();
    for a in arrays {
        let n = match sample {
            SampleShape::Numel(n) if n > 0 && a.data.len() > n && a.data.len() % n == 0 => n,
            SampleShape::DynamicBatch(rank)
                if a.shape.len() == rank && rank > 0 && a.shape[0] > 1 =>
            {
                a.data.len() / a.shape[0]
            }
            _ => {
                out.push(a);
                continue;
            }
        };
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
    Ok(out)
}

pub fn options(
    args: &ConvertArgs,
    onnx_bytes: &[u8],
) -> Result<(cairn_convert::Options, Vec<npy::Array>)> {
    let mut o = cairn_convert::Options {
        float: args.float,
        extra_outputs: args.extra_output.clone(),
        pack_weights: args.pack,
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
        let sample = match o.input_shapes.get("#0") {
            Some(d) => SampleShape::Numel(d.iter().product()),
            None => first_input_sample(onnx_bytes),
        };
        samples = load_samples(dir, sample)?;
        if o.input_shapes.is_empty() {
            if let Some(s) = samples.first() {
                o.input_shapes.insert("#0".into(), s.shape.clone());
            }
        }
        o.calibration = samples.iter().map(|s| vec![s.data.clone()]).collect();
    }
    Ok((o, samples))
}

fn first_input_sample(onnx_bytes: &[u8]) -> SampleShape {
    let dims = (|| {
        let m = cairn_convert::onnx::load_model(onnx_bytes).ok()?;
        let g = m.graph?;
        let inits: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        let i = g.input.iter().find(|i| !inits.contains(&i.name.as_str()))?;
        let (_, dims) = cairn_convert::onnx::value_info_type(i);
        dims
    })();
    match dims {
        Some(d) if d.iter().all(Option::is_some) => {
            SampleShape::Numel(d.iter().map(|x| x.unwrap_or(1)).product())
        }
        Some(d) if !d.is_empty() && d[0].is_none() => SampleShape::DynamicBatch(d.len()),
        _ => SampleShape::Unknown,
    }
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

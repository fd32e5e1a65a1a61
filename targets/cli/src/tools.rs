//! Shared pieces of the commands: option parsing, conversion with a progress bar,
//! loading and running `.cairn` files.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use cairn_convert::npy;
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;
use indicatif::{ProgressBar, ProgressStyle};

use crate::samples::{self, IoNames};
use crate::ConvertArgs;

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
///
/// `path` is a `.npy` file, a folder of `.npy` files, or a folder of sample folders
/// (`samples.rs`), of which each folder's only `.npy` file, or the first by name, is taken.
pub fn load_samples(path: &Path, sample: SampleShape) -> Result<Vec<npy::Array>> {
    let folders = samples::sample_folders(path)?;
    let arrays = if folders.is_empty() {
        npy::read_dir_or_file(path)?
    } else {
        folders
            .iter()
            .map(|f| samples::first_npy(f))
            .collect::<Result<_>>()?
    };
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

/// The folder a model file's external data is read from.
pub fn model_dir(model: &Path) -> std::path::PathBuf {
    match model.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// Each `--const-input NAME=x.npy`: the name, the array and the path it came from.
pub fn const_inputs(args: &ConvertArgs) -> Result<Vec<(String, npy::Array, String)>> {
    args.const_input
        .iter()
        .map(|c| {
            let (name, path) = c
                .split_once('=')
                .ok_or_else(|| anyhow!("--const-input takes NAME=x.npy, got '{c}'"))?;
            let a = npy::read(Path::new(path))
                .with_context(|| format!("--const-input {name}: reading {path}"))?;
            Ok((name.to_string(), a, path.to_string()))
        })
        .collect()
}

/// Converter options from the command line. The second value holds the calibration
/// samples of the model's first input (what `cairn bench` times on).
pub fn options(
    args: &ConvertArgs,
    onnx_bytes: &[u8],
) -> Result<(cairn_convert::Options, Vec<npy::Array>)> {
    let mut o = cairn_convert::Options {
        float: args.float,
        extra_outputs: args.extra_output.clone(),
        pack_weights: args.pack,
        weight_bits: args.weight_bits,
        smooth: args.smooth,
        unroll_recurrent: args.unroll_recurrent,
        int8_error_limit: args
            .int8_error_limit
            .filter(|&l| l > 0.0)
            .map(|l| l / 100.0),
        int8_output_guard: match args.int8_error_limit {
            Some(l) if l <= 0.0 => None,
            _ => Some(cairn_convert::DEFAULT_INT8_OUTPUT_GUARD),
        },
        ..Default::default()
    };
    for (i, s) in args.input_shape.iter().enumerate() {
        let (key, dims) = samples::parse_input_shape(s, i)?;
        o.input_shapes.insert(key, dims);
    }
    for (name, a, _) in const_inputs(args)? {
        o.const_inputs
            .insert(name, cairn_convert::HostTensor::f32(a.shape, a.data));
    }
    o.method = match args.method.as_str() {
        "minmax" => cairn_convert::Method::MinMax,
        "mse" => cairn_convert::Method::Mse,
        p => cairn_convert::Method::Percentile(
            p.parse::<f32>()
                .map_err(|_| anyhow!("--method is 'minmax', 'mse' or a percentile like 99.99"))?,
        ),
    };
    let Some(dir) = &args.calibrate else {
        return Ok((o, Vec::new()));
    };
    if !samples::sample_folders(dir)?.is_empty() {
        return sample_folder_options(o, dir, onnx_bytes);
    }
    let mut inputs = samples::graph_inputs(onnx_bytes).unwrap_or_default();
    inputs.retain(|i| !o.const_inputs.contains_key(&i.name));
    // Per-sample element count from the model's fixed input shape, if known.
    let first_name = inputs.first().map(|i| i.name.as_str());
    let sample = match o
        .input_shapes
        .get("#0")
        .or_else(|| first_name.and_then(|n| o.input_shapes.get(n)))
    {
        Some(d) => SampleShape::Numel(d.iter().product()),
        None => sample_shape(inputs.first()),
    };
    let arrays = load_samples(dir, sample)?;
    if o.input_shapes.is_empty() {
        if let Some(s) = arrays.first() {
            o.input_shapes.insert("#0".into(), s.shape.clone());
        }
    }
    o.calibration = arrays.iter().map(|s| vec![s.data.clone()]).collect();
    Ok((o, arrays))
}

/// Calibration from a folder of sample folders: every graph input from its own file.
/// An input without a shape from `--input-shape` takes the first sample's.
fn sample_folder_options(
    mut o: cairn_convert::Options,
    dir: &Path,
    onnx_bytes: &[u8],
) -> Result<(cairn_convert::Options, Vec<npy::Array>)> {
    let inputs = samples::graph_inputs(onnx_bytes)?;
    // Inputs given by --const-input are no longer inputs.
    let names: Vec<String> = inputs
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !o.const_inputs.contains_key(n))
        .collect();
    let sets = samples::read_sample_folders(dir, &names)?;
    if let Some(first) = sets.first() {
        for (pos, (name, a)) in names.iter().zip(first).enumerate() {
            if !o.input_shapes.contains_key(name)
                && !o.input_shapes.contains_key(&format!("#{pos}"))
            {
                o.input_shapes.insert(name.clone(), a.shape.clone());
            }
        }
    }
    o.calibration = sets
        .iter()
        .map(|set| set.iter().map(|a| a.data.clone()).collect())
        .collect();
    let firsts = sets
        .into_iter()
        .filter_map(|set| set.into_iter().next())
        .collect();
    Ok((o, firsts))
}

fn sample_shape(input: Option<&samples::GraphInput>) -> SampleShape {
    match input.and_then(|i| i.dims.as_ref()) {
        Some(d) if d.iter().all(Option::is_some) => {
            SampleShape::Numel(d.iter().map(|x| x.unwrap_or(1)).product())
        }
        Some(d) if !d.is_empty() && d[0].is_none() => SampleShape::DynamicBatch(d.len()),
        _ => SampleShape::Unknown,
    }
}

pub fn convert_with_progress(onnx: &Path, args: &ConvertArgs) -> Result<cairn_convert::Converted> {
    let bytes = std::fs::read(onnx).with_context(|| format!("reading {}", onnx.display()))?;
    let (mut opts, _) = options(args, &bytes)?;
    opts.external_data_dir = Some(model_dir(onnx));
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
    match onnx_io_names(model, args) {
        Ok(names) if names.inputs.len() == m.n_inputs() && names.outputs.len() == m.n_outputs() => {
            samples::write_names(output, &names)?;
        }
        _ => println!(
            "note: no {} (the ONNX names do not map one to one onto the model's inputs and \
             outputs); `cairn run` takes input0.. and writes output0..",
            samples::names_path(output).display()
        ),
    }
    if c.mode == "dynamic" {
        println!(
            "{} FullyConnected ops on int8 weights (input rows quantized at run time), {} ops in f32",
            c.int8_ops,
            m.n_ops().saturating_sub(c.int8_ops)
        );
    } else if c.mode != "float" {
        println!("{} ops in int8, {} in f32", c.int8_ops, c.f32_ops.len());
        for f in &c.f32_ops {
            println!("  stays f32: {f}");
        }
    }
    Ok(())
}

/// The ONNX names of what the converted model takes and gives: graph inputs, then graph
/// outputs and `--extra-output`s.
fn onnx_io_names(onnx: &Path, args: &ConvertArgs) -> Result<IoNames> {
    let bytes = std::fs::read(onnx).with_context(|| format!("reading {}", onnx.display()))?;
    let mut outputs = samples::graph_outputs(&bytes)?;
    outputs.extend(args.extra_output.iter().cloned());
    Ok(IoNames {
        // Inputs given by --const-input are folded away.
        inputs: samples::graph_inputs(&bytes)?
            .into_iter()
            .map(|i| i.name)
            .filter(|n| {
                !args
                    .const_input
                    .iter()
                    .any(|c| c.split_once('=').is_some_and(|(k, _)| k == n))
            })
            .collect(),
        outputs,
    })
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

/// Where `cairn run` writes outputs.
pub struct RunOutputs<'a> {
    /// The first output as `.npy`.
    pub first: Option<&'a Path>,
    /// Every output as `<output name>.npy` in this folder.
    pub dir: Option<&'a Path>,
    /// Without either: print the top-k of each output.
    pub top_k: usize,
    /// Time this many runs after one warm-up and print the median (1: the single run).
    pub runs: usize,
    /// Print a per-op profile over `runs` runs.
    pub profile: bool,
    /// Use the reference kernels only.
    pub reference: bool,
    /// Threads the CPU kernels split big ops across (1: the calling thread alone).
    pub threads: usize,
}

/// A run error as a sentence: which op failed (index, kernel, output shape) and what its
/// kernel found, not the bare `Exec { index, error }`.
pub fn run_error(m: &cairn_kernels::host::HostModel<'_>, e: cairn_core::RunError) -> anyhow::Error {
    use cairn_core::{ExecError, RunError};
    let RunError::Exec { index, error } = e else {
        return anyhow!("run failed: {e:?}");
    };
    let model = m.model();
    let i = index as usize;
    let kernel = model.kernel_of(i).map_or("?".into(), |k| k.to_string());
    let shapes = model.op(i).map(|op| {
        let ins: Vec<String> = (0..op.n_inputs())
            .filter_map(|k| op.input(k))
            .map(|t| format!("{:?}", model.tensor(t).info.shape.dims()))
            .collect();
        let out = format!("{:?}", model.tensor(op.output(0)).info.shape.dims());
        format!("inputs {} -> output {out}", ins.join(", "))
    });
    let what = match error {
        ExecError::Shape => {
            "the input values do not fit the op (an index out of range, or sizes that do not \
             match)"
        }
        ExecError::DType => "an input has a type the kernel does not take",
        ExecError::Misaligned => "a tensor is not aligned for its element type",
        ExecError::MissingInput => "a required input is missing",
        ExecError::Unsupported(_) => "no kernel for this op in this build",
        _ => "the kernel refused its operands",
    };
    anyhow!(
        "run failed at op #{i} ({kernel}, {}): {what} ({error:?})",
        shapes.unwrap_or_default()
    )
}

pub fn run_cmd(model: &Path, inputs: &[String], to: &RunOutputs<'_>) -> Result<()> {
    let bytes = read_model(model)?;
    let mut m = host_model(&bytes, model)?;
    m.set_reference(to.reference);
    m.set_threads(to.threads)
        .map_err(|e| anyhow!("--threads {}: {e}", to.threads))?;
    let infos = m.inputs();
    let oinfo = m.outputs();
    let names = samples::read_names(model, infos.len(), oinfo.len());
    let paths = samples::assign_inputs(inputs, &names)?;
    let arrays: Vec<npy::Array> = paths.iter().map(|p| npy::read(p)).collect::<Result<_>>()?;
    for ((a, info), name) in arrays.iter().zip(&infos).zip(&names.inputs) {
        let need: usize = info.shape.iter().product();
        if a.data.len() != need {
            bail!(
                "input '{name}' of shape {:?} given where the model takes {:?}",
                a.shape,
                info.shape
            );
        }
    }
    let refs: Vec<&[f32]> = arrays.iter().map(|a| a.data.as_slice()).collect();
    let t = Instant::now();
    let outs = m.run(&refs).map_err(|e| run_error(&m, e))?;
    let mut ms = t.elapsed().as_secs_f64() * 1e3;
    if to.runs > 1 {
        let stats = crate::bench::time_runs(0, to.runs, || {
            m.run(&refs).map_err(|e| anyhow!("run failed: {e:?}"))?;
            Ok(())
        })?;
        ms = stats.median_ms;
    }
    if to.profile {
        crate::bench::print_profile(&mut m, &refs, to.runs.max(1))?;
    }
    if let Some(p) = to.first {
        npy::write(p, &oinfo[0].shape, &outs[0])?;
        println!("wrote {} (shape {:?})", p.display(), oinfo[0].shape);
    }
    if let Some(dir) = to.dir {
        let shapes: Vec<Vec<usize>> = oinfo.iter().map(|i| i.shape.clone()).collect();
        write_outputs(dir, &names.outputs, &shapes, &outs)?;
    }
    if to.first.is_none() && to.dir.is_none() {
        for ((o, info), name) in outs.iter().zip(&oinfo).zip(&names.outputs) {
            println!(
                "output {name} shape {:?}: top-{} {:?}",
                info.shape,
                to.top_k,
                top_k(o, to.top_k)
            );
        }
    }
    if to.runs > 1 {
        println!("median of {} runs after a warm-up:", to.runs);
    }
    println!("{ms:.3} ms");
    Ok(())
}

/// Every output as `<dir>/<file_stem(name)>.npy`; two names that map to one file are an
/// error rather than one output silently overwriting the other.
fn write_outputs(
    dir: &Path,
    names: &[String],
    shapes: &[Vec<usize>],
    outs: &[Vec<f32>],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = std::collections::HashSet::new();
    for ((name, shape), data) in names.iter().zip(shapes).zip(outs) {
        let file = dir.join(format!("{}.npy", samples::file_stem(name)));
        if !written.insert(file.clone()) {
            bail!("two outputs map to {}", file.display());
        }
        npy::write(&file, shape, data)?;
        println!("wrote {} (shape {:?})", file.display(), shape);
    }
    Ok(())
}

/// Time `run` as `cairn run --backend` does (the first call, then the median of
/// `to.runs` after it) and write or print its outputs (`--output`, `--output-dir`, else
/// the top-k of each). Returns the time in ms.
pub fn time_and_show(
    m: &cairn_core::Model<'_>,
    output_names: &[String],
    to: &RunOutputs<'_>,
    mut run: impl FnMut() -> Result<Vec<Vec<f32>>>,
) -> Result<f64> {
    let t = std::time::Instant::now();
    let mut outs = run()?;
    let mut ms = t.elapsed().as_secs_f64() * 1e3;
    if to.runs > 1 {
        let stats = crate::bench::time_runs(0, to.runs, || {
            outs = run()?;
            Ok(())
        })?;
        ms = stats.median_ms;
    }
    let shapes: Vec<Vec<usize>> = (0..m.n_outputs())
        .filter_map(|i| m.output_tensor(i))
        .map(|t| {
            m.tensor(t)
                .info
                .shape
                .dims()
                .iter()
                .map(|&d| d as usize)
                .collect()
        })
        .collect();
    if let Some(p) = to.first {
        cairn_convert::npy::write(p, &shapes[0], &outs[0])?;
        println!("wrote {} (shape {:?})", p.display(), shapes[0]);
    }
    if let Some(dir) = to.dir {
        write_outputs(dir, output_names, &shapes, &outs)?;
    }
    if to.first.is_none() && to.dir.is_none() {
        for ((o, shape), name) in outs.iter().zip(&shapes).zip(output_names) {
            println!(
                "output {name} shape {shape:?}: top-{} {:?}",
                to.top_k,
                top_k(o, to.top_k)
            );
        }
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::samples::tests::temp_dir;

    /// An embedding lookup given an id past the table: the error names the op, its
    /// kernel and shapes, and says what went wrong, not `Exec { index: 0, error: Shape }`.
    #[test]
    fn a_run_error_names_the_op_and_the_cause() {
        use cairn_convert::onnx_pb::tensor_shape_proto::{dimension, Dimension};
        use cairn_convert::onnx_pb::{
            type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
            TensorShapeProto, TypeProto, ValueInfoProto,
        };
        use prost::Message;
        let value = |name: &str, elem_type: i32, dims: &[i64]| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let table: Vec<u8> = (0..30).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let onnx = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    input: vec!["table".into(), "ids".into()],
                    output: vec!["y".into()],
                    op_type: "Gather".into(),
                    ..Default::default()
                }],
                initializer: vec![TensorProto {
                    name: "table".into(),
                    dims: vec![10, 3],
                    data_type: 1,
                    raw_data: table,
                    ..Default::default()
                }],
                input: vec![value("ids", 7, &[1, 4])],
                output: vec![value("y", 1, &[1, 4, 3])],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let c = cairn_convert::convert(&onnx, &Default::default(), |_| {}).unwrap();
        let bytes = cairn_core::emit::AlignedBytes::from_slice(&c.bytes);
        let mut m = cairn_kernels::host::HostModel::new(bytes.as_slice()).unwrap();
        assert!(m.run(&[&[1.0, 2.0, 3.0, 9.0]]).is_ok());
        let e = m.run(&[&[1.0, 2.0, 3.0, 12.0]]).unwrap_err();
        let msg = format!("{}", run_error(&m, e));
        assert!(
            msg.contains("op #0 (Gather.f32, inputs [10, 3], [1, 4] -> output [1, 4, 3])")
                && msg.contains("index out of range"),
            "{msg}"
        );
    }

    /// What clap gives a command without flags.
    fn minmax() -> ConvertArgs {
        ConvertArgs {
            method: "minmax".into(),
            ..Default::default()
        }
    }

    fn zoo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/zoo")
            .join(path)
    }

    /// The first `n` rows of the digits calibration set as sample folders (`x.npy` each)
    /// under `dir/folders`, and as single `.npy` files under `dir/flat`.
    fn digits_samples(dir: &Path, n: usize) -> Vec<Vec<f32>> {
        let calib = npy::read(&zoo("digits/calib_x.npy")).unwrap();
        let rows: Vec<Vec<f32>> = calib.data.chunks(64).take(n).map(<[f32]>::to_vec).collect();
        std::fs::create_dir_all(dir.join("flat")).unwrap();
        for (i, row) in rows.iter().enumerate() {
            let folder = dir.join(format!("folders/sample_{i:03}"));
            std::fs::create_dir_all(&folder).unwrap();
            npy::write(&folder.join("x.npy"), &[1, 64], row).unwrap();
            npy::write(&dir.join(format!("flat/s{i:03}.npy")), &[1, 64], row).unwrap();
        }
        rows
    }

    #[test]
    fn sample_folders_calibrate_like_flat_files() {
        let dir = temp_dir("sample_folders_calibrate_like_flat_files");
        let rows = digits_samples(&dir, 8);
        let onnx = std::fs::read(zoo("digits/digits_mlp.onnx")).unwrap();
        let with = |calib: &str| ConvertArgs {
            calibrate: Some(dir.join(calib)),
            ..minmax()
        };
        let (o, firsts) = options(&with("folders"), &onnx).unwrap();
        assert_eq!(o.calibration.len(), 8);
        assert_eq!(o.calibration[3], vec![rows[3].clone()]);
        assert_eq!(o.input_shapes.get("x"), Some(&vec![1, 64]));
        assert_eq!(firsts[7].data, rows[7]);
        // `cairn bench` reads the same samples through load_samples.
        let bench = load_samples(&dir.join("folders"), SampleShape::Numel(64)).unwrap();
        assert_eq!(bench.len(), 8);
        assert_eq!(bench[5].data, rows[5]);
        let by_folders = cairn_convert::convert(&onnx, &o, |_| {}).unwrap();
        let (flat, _) = options(&with("flat"), &onnx).unwrap();
        assert_eq!(flat.calibration, o.calibration);
        let by_files = cairn_convert::convert(&onnx, &flat, |_| {}).unwrap();
        assert_eq!(by_folders.mode, "calibrated");
        assert_eq!(by_folders.bytes, by_files.bytes);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `--const-input NAME=x.npy` folds a graph input into the model: an `If` on it
    /// converts (its taken branch inlined), the input is gone from the model and from the
    /// names file, and without the flag the error names the flag. The model is onnx
    /// 1.22.0's `test_if` node case (`tests/run.sh` installs it into `.venv`).
    #[test]
    fn const_input_folds_an_if_on_an_input() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let node_dir = std::env::var("CAIRN_ONNX_NODE_DIR")
            .map(PathBuf::from)
            .ok()
            .or_else(|| {
                std::fs::read_dir(root.join(".venv/lib"))
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("site-packages/onnx/backend/test/data/node"))
                    .find(|p| p.is_dir())
            })
            .expect("onnx node tests: create .venv with onnx==1.22.0 (tests/run.sh does)");
        let model = node_dir.join("test_if/model.onnx");
        let onnx = std::fs::read(&model).unwrap();
        let Err(err) = cairn_convert::convert(&onnx, &options(&minmax(), &onnx).unwrap().0, |_| {})
        else {
            panic!("an If on a run-time input converted");
        };
        assert!(format!("{err:#}").contains("--const-input"), "{err:#}");
        let dir = temp_dir("const_input_folds_an_if_on_an_input");
        for (cond, want) in [
            (1.0f32, [1.0f32, 2.0, 3.0, 4.0, 5.0]),
            (0.0, [5.0, 4.0, 3.0, 2.0, 1.0]),
        ] {
            let c = dir.join("cond.npy");
            npy::write(&c, &[], &[cond]).unwrap();
            let args = ConvertArgs {
                const_input: vec![format!("cond={}", c.display())],
                ..minmax()
            };
            let out = dir.join("if.cairn");
            convert_cmd(&model, &out, &args).unwrap();
            let bytes = read_model(&out).unwrap();
            let mut m = host_model(&bytes, &out).unwrap();
            let model = cairn_core::Model::parse(bytes.as_slice()).unwrap();
            assert_eq!(model.n_inputs(), 0);
            let text = std::fs::read_to_string(format!("{}.names.json", out.display())).unwrap();
            assert!(text.contains("\"res\"") && !text.contains("cond"), "{text}");
            let y = m.run(&[]).unwrap();
            assert_eq!(y[0], want, "cond {cond}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn input_shape_flags_reach_the_converter_by_name() {
        let onnx = std::fs::read(zoo("digits/digits_mlp.onnx")).unwrap();
        for flag in ["x=1,64", "x:1,64"] {
            let args = ConvertArgs {
                input_shape: vec![flag.into()],
                ..minmax()
            };
            let (o, _) = options(&args, &onnx).unwrap();
            assert_eq!(o.input_shapes.get("x"), Some(&vec![1, 64]), "{flag}");
            cairn_convert::convert(&onnx, &o, |_| {}).unwrap();
        }
        let args = ConvertArgs {
            input_shape: vec!["x=1,65".into()],
            ..minmax()
        };
        let (o, _) = options(&args, &onnx).unwrap();
        assert!(cairn_convert::convert(&onnx, &o, |_| {}).is_err());
    }

    #[test]
    fn convert_writes_names_and_run_takes_them() {
        let dir = temp_dir("convert_writes_names_and_run_takes_them");
        digits_samples(&dir, 4);
        let cairn = dir.join("digits.cairn");
        let args = ConvertArgs {
            calibrate: Some(dir.join("folders")),
            ..minmax()
        };
        convert_cmd(&zoo("digits/digits_mlp.onnx"), &cairn, &args).unwrap();
        let names = samples::read_names(&cairn, 1, 1);
        assert_eq!(names.inputs, vec!["x"]);
        assert_eq!(names.outputs, vec!["probs"]);
        let x = dir.join("folders/sample_002/x.npy").display().to_string();
        let mut results = Vec::new();
        for (i, arg) in [format!("x={x}"), format!("input0={x}"), x.clone()]
            .into_iter()
            .enumerate()
        {
            let out = dir.join(format!("out{i}"));
            let to = RunOutputs {
                first: None,
                dir: Some(&out),
                top_k: 5,
                runs: 1,
                profile: false,
                reference: false,
                threads: 1,
            };
            run_cmd(&cairn, &[arg], &to).unwrap();
            let y = npy::read(&out.join("probs.npy")).unwrap();
            assert_eq!(y.shape, vec![1, 10]);
            results.push(y.data);
        }
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], results[2]);
        let to = RunOutputs {
            first: None,
            dir: None,
            top_k: 5,
            runs: 1,
            profile: false,
            reference: false,
            threads: 1,
        };
        assert!(run_cmd(&cairn, &[format!("y={x}")], &to).is_err());
        // Without the names file the model answers to positional names only.
        std::fs::remove_file(samples::names_path(&cairn)).unwrap();
        let out = dir.join("positional");
        let to = RunOutputs {
            first: None,
            dir: Some(&out),
            top_k: 5,
            runs: 1,
            profile: false,
            reference: false,
            threads: 1,
        };
        assert!(run_cmd(&cairn, &[format!("x={x}")], &to).is_err());
        run_cmd(&cairn, &[format!("input0={x}")], &to).unwrap();
        assert_eq!(
            npy::read(&out.join("output0.npy")).unwrap().data,
            results[0]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

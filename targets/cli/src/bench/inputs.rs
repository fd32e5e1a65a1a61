//! The inputs `cairn bench` times every engine on: each graph input of the ONNX model, by
//! name, in the element type the graph declares (float32, int32 or int64 token ids, bool
//! masks, uint8 bytes, ...), so every engine runs on the same values.
//!
//! Each input the converted model takes comes from `--input NAME=x.npy` (the syntax of
//! `cairn run`; a bare path fills the next input not named), else from the first
//! calibration sample (a folder of sample folders holding `<input name>.npy` per input,
//! `/` in a name as `_`, as `cairn convert` reads them; or, for the first input, a `.npy`
//! file or folder of them), else a synthetic one: uniform in [-1, 1) for a float input
//! (seed 7 for the first input, 8 for the second, ...), zeros for an integer or bool one.
//! An input given by `--const-input` is folded into the cairn model; ONNX Runtime and
//! tract run the ONNX graph as written and get it with the value given.
//!
//! Values are held as f32 (as `.npy` files are read: integers exact up to 2^24); each
//! engine converts them to the input's element type once, before it is timed.

use std::path::Path;

use anyhow::{bail, Context, Result};
use cairn_convert::npy;
use cairn_kernels::host::IoInfo;

use crate::samples::{self, IoNames};
use crate::tools;
use crate::ConvertArgs;

/// One graph input of the ONNX model and the value bench runs it on.
#[derive(Clone, Debug)]
pub struct Input {
    pub name: String,
    /// The ONNX element type the graph declares (1 float32, 6 int32, 7 int64, 9 bool, ...).
    pub elem_type: i32,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// Whether the converted model takes it (false: `--const-input`, folded into the cairn
    /// model; only the ONNX engines get it).
    pub runtime: bool,
    /// Where the value comes from, for the report.
    pub source: String,
}

impl Input {
    /// The element type's name (`float32`, `int64`, ...).
    pub fn type_name(&self) -> &'static str {
        samples::elem_type_name(self.elem_type)
    }
}

/// The inputs the converted model takes, in its order.
pub fn runtime(inputs: &[Input]) -> impl Iterator<Item = &Input> {
    inputs.iter().filter(|i| i.runtime)
}

/// The values of each graph input of `model` (ONNX graph order), for a converted model
/// whose inputs are `cairn`.
pub fn gather(
    model: &Path,
    args: &ConvertArgs,
    cairn: &[IoInfo],
    given: &[String],
) -> Result<Vec<Input>> {
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let graph = samples::graph_inputs(&bytes)?;
    let consts = tools::const_inputs(args)?;
    let names: Vec<String> = graph
        .iter()
        .filter(|g| !consts.iter().any(|(n, _, _)| n == &g.name))
        .map(|g| g.name.clone())
        .collect();
    if names.len() != cairn.len() {
        bail!(
            "the ONNX model has {} inputs besides --const-input ones ({}), the converted \
             model {}: cannot tell which is which",
            names.len(),
            names.join(", "),
            cairn.len()
        );
    }
    let io = IoNames {
        inputs: names.clone(),
        outputs: vec![],
    };
    let paths = samples::assign_some_inputs(given, &io)?;
    let mut values: Vec<Option<(Vec<f32>, String)>> = paths
        .iter()
        .map(|p| {
            p.as_ref()
                .map(|p| Ok((npy::read(p)?.data, p.display().to_string())))
                .transpose()
        })
        .collect::<Result<_>>()?;
    if let (Some(dir), true) = (&args.calibrate, values.iter().any(Option::is_none)) {
        fill_from_calibration(dir, &names, cairn, &mut values)?;
    }
    let mut runtime = names.iter().zip(cairn).zip(values).enumerate();
    let mut out = Vec::with_capacity(graph.len());
    for g in &graph {
        if let Some((_, a, path)) = consts.iter().find(|(n, _, _)| n == &g.name) {
            out.push(Input {
                name: g.name.clone(),
                elem_type: g.elem_type,
                shape: a.shape.clone(),
                data: a.data.clone(),
                runtime: false,
                source: format!("--const-input {path}"),
            });
            continue;
        }
        let Some((pos, ((name, info), value))) = runtime.next() else {
            bail!(
                "input '{}' of the ONNX model is not in the converted model",
                g.name
            );
        };
        let n: usize = info.shape.iter().product();
        let (data, source) = value.unwrap_or_else(|| {
            if samples::is_float_type(g.elem_type) {
                let seed = 7 + pos as u64;
                (
                    crate::bench::synthetic(n, seed),
                    format!("synthetic uniform [-1, 1), seed {seed}"),
                )
            } else {
                (vec![0.0; n], "zeros".into())
            }
        });
        if data.len() != n {
            if cairn.len() == 1 {
                bail!(
                    "bench input has {} values, the model takes {:?}",
                    data.len(),
                    info.shape
                );
            }
            bail!(
                "bench input '{name}' ({source}) has {} values, the model takes {:?}",
                data.len(),
                info.shape
            );
        }
        out.push(Input {
            name: name.clone(),
            elem_type: g.elem_type,
            shape: info.shape.clone(),
            data,
            runtime: true,
            source,
        });
    }
    Ok(out)
}

/// The inputs not given on the command line from the first calibration sample.
fn fill_from_calibration(
    dir: &Path,
    names: &[String],
    cairn: &[IoInfo],
    values: &mut [Option<(Vec<f32>, String)>],
) -> Result<()> {
    let folders = samples::sample_folders(dir)?;
    match (folders.first(), names.len()) {
        // One input: the first sample as `cairn convert` splits them (a batch along the
        // first axis is several samples).
        (_, 1) => {
            let n = cairn[0].shape.iter().product();
            let s = tools::load_samples(dir, tools::SampleShape::Numel(n))?;
            if let Some(a) = s.into_iter().next() {
                values[0] = Some((a.data, format!("first sample of {}", dir.display())));
            }
        }
        (Some(first), _) => {
            let arrays = samples::read_sample(first, names)?;
            for ((v, a), name) in values.iter_mut().zip(arrays).zip(names) {
                if v.is_none() {
                    let file = first.join(format!("{}.npy", samples::file_stem(name)));
                    *v = Some((a.data, file.display().to_string()));
                }
            }
        }
        // A folder of `.npy` files holds samples of the first input only.
        (None, _) => {
            if values[0].is_none() {
                let n = cairn[0].shape.iter().product();
                let s = tools::load_samples(dir, tools::SampleShape::Numel(n))?;
                if let Some(a) = s.into_iter().next() {
                    values[0] = Some((a.data, format!("first sample of {}", dir.display())));
                }
            }
        }
    }
    Ok(())
}

/// The input lines of the report's header.
pub fn describe(inputs: &[Input]) -> Vec<String> {
    inputs
        .iter()
        .map(|i| {
            let what = if i.runtime {
                String::new()
            } else {
                " (folded into cairn's model; the ONNX engines take it)".into()
            };
            format!(
                "  input {} {} {:?} from {}{what}",
                i.name,
                i.type_name(),
                i.shape,
                i.source
            )
        })
        .collect()
}

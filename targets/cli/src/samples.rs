//! Tensor names and sample files for the commands: the ONNX graph's inputs, the names file
//! `cairn convert` writes next to a `.cairn` (the format keeps no names), `NAME=VALUE`
//! arguments whose NAME may hold any character an ONNX name can (`:`, `/`, `.`), and
//! calibration or evaluation samples stored as one folder per sample with
//! `<input name>.npy` per input (what `models/corpus/inputs.py` writes).
//! It only reads and writes files and strings; it never converts or runs a model.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use cairn_convert::npy;
use serde_json::json;

/// A graph input of an ONNX model (initializers excluded), with its declared element type
/// (ONNX `elem_type`: 1 float, 6 int32, 7 int64, 9 bool, ...; 0 when not a tensor) and dims
/// (`None` for a dynamic dim; `None` overall when the type carries no shape).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphInput {
    pub name: String,
    pub elem_type: i32,
    pub dims: Option<Vec<Option<usize>>>,
}

/// An ONNX element type's name, as numpy and ONNX Runtime say it.
pub fn elem_type_name(elem_type: i32) -> &'static str {
    match elem_type {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "unknown type",
    }
}

/// Whether an ONNX element type holds floating-point values.
pub fn is_float_type(elem_type: i32) -> bool {
    matches!(elem_type, 1 | 10 | 11 | 16)
}

/// The graph inputs of an ONNX model in graph order, as the converter sees them.
pub fn graph_inputs(onnx_bytes: &[u8]) -> Result<Vec<GraphInput>> {
    let model = cairn_convert::onnx::load_model(onnx_bytes)?;
    let graph = model
        .graph
        .ok_or_else(|| anyhow!("the ONNX model has no graph"))?;
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(graph
        .input
        .iter()
        .filter(|i| !inits.contains(&i.name.as_str()))
        .map(|i| {
            let (elem_type, dims) = cairn_convert::onnx::value_info_type(i);
            GraphInput {
                name: i.name.clone(),
                elem_type,
                dims,
            }
        })
        .collect())
}

/// The graph output names of an ONNX model in graph order.
pub fn graph_outputs(onnx_bytes: &[u8]) -> Result<Vec<String>> {
    let model = cairn_convert::onnx::load_model(onnx_bytes)?;
    let graph = model
        .graph
        .ok_or_else(|| anyhow!("the ONNX model has no graph"))?;
    Ok(graph.output.iter().map(|o| o.name.clone()).collect())
}

/// A tensor name as a file name: `/` and `\` become `_` (as in `models/corpus/inputs.py`),
/// NUL too, and a name that is empty or only dots becomes `_`. Other characters (`:` in
/// TensorFlow exports) are kept.
pub fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.chars().all(|c| c == '.') {
        "_".into()
    } else {
        s
    }
}

/// `--input-shape` values: `NAME=1,3,224,224` (split on the last `=`, so NAME may hold
/// `:`), `NAME:1,3,224,224` (split on the last `:`), or plain dims for the input at
/// `position`, keyed `#position` as `cairn_convert::Options::input_shapes` expects.
pub fn parse_input_shape(arg: &str, position: usize) -> Result<(String, Vec<usize>)> {
    let (key, dims) = match arg.rsplit_once('=').or_else(|| arg.rsplit_once(':')) {
        Some((name, dims)) if !name.is_empty() => (name.to_string(), dims),
        Some(_) => bail!("--input-shape '{arg}' has an empty input name"),
        None => (format!("#{position}"), arg),
    };
    let dims = parse_dims(dims)
        .with_context(|| format!("--input-shape '{arg}': write NAME=1,3,224,224 or 1,3,224,224"))?;
    Ok((key, dims))
}

pub fn parse_dims(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .with_context(|| format!("bad dimension '{d}' in '{s}'"))
        })
        .collect()
}

/// Input and output names of a `.cairn` model, in the model's order.
#[derive(Clone, Debug, PartialEq)]
pub struct IoNames {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl IoNames {
    /// `input0..` and `output0..`: the names a model without a names file answers to.
    pub fn positional(n_inputs: usize, n_outputs: usize) -> IoNames {
        IoNames {
            inputs: (0..n_inputs).map(|i| format!("input{i}")).collect(),
            outputs: (0..n_outputs).map(|i| format!("output{i}")).collect(),
        }
    }

    /// The position of input `name`: its ONNX name, `inputN` or `#N`.
    pub fn input_index(&self, name: &str) -> Option<usize> {
        if let Some(i) = self.inputs.iter().position(|n| n == name) {
            return Some(i);
        }
        let n = name
            .strip_prefix("input")
            .or_else(|| name.strip_prefix('#'))?;
        n.parse::<usize>().ok().filter(|&i| i < self.inputs.len())
    }
}

/// Where `cairn convert -o M` writes the model's tensor names: `M.names.json`.
pub fn names_path(model: &Path) -> PathBuf {
    let mut s = model.as_os_str().to_owned();
    s.push(".names.json");
    PathBuf::from(s)
}

pub fn write_names(model: &Path, names: &IoNames) -> Result<()> {
    let path = names_path(model);
    let doc = json!({ "inputs": names.inputs, "outputs": names.outputs });
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// The names file of `model` if there is one that fits its input and output counts,
/// else positional names.
pub fn read_names(model: &Path, n_inputs: usize, n_outputs: usize) -> IoNames {
    let from_file = || -> Option<IoNames> {
        let text = std::fs::read_to_string(names_path(model)).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
        let list = |key: &str| -> Option<Vec<String>> {
            doc.get(key)?
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(String::from))
                .collect()
        };
        let names = IoNames {
            inputs: list("inputs")?,
            outputs: list("outputs")?,
        };
        (names.inputs.len() == n_inputs && names.outputs.len() == n_outputs).then_some(names)
    };
    from_file().unwrap_or_else(|| IoNames::positional(n_inputs, n_outputs))
}

/// `cairn run --input` values to one path per model input: `NAME=x.npy` names the input
/// (any `=` whose prefix is a known name; an existing file with `=` in its path is a bare
/// path), bare paths fill the inputs not named, in order.
pub fn assign_inputs(args: &[String], names: &IoNames) -> Result<Vec<PathBuf>> {
    assign_some_inputs(args, names)?
        .into_iter()
        .zip(&names.inputs)
        .map(|(s, name)| s.ok_or_else(|| anyhow!("no --input for the model's input '{name}'")))
        .collect()
}

/// [`assign_inputs`] where inputs may be left out (`cairn bench` fills them from a
/// calibration sample): `None` for each input no value names or reaches.
pub fn assign_some_inputs(args: &[String], names: &IoNames) -> Result<Vec<Option<PathBuf>>> {
    let mut slots: Vec<Option<PathBuf>> = vec![None; names.inputs.len()];
    let mut bare = Vec::new();
    for arg in args {
        match split_named(arg, names) {
            Some((i, path)) => {
                if slots[i].is_some() {
                    bail!("input '{}' is given twice", names.inputs[i]);
                }
                slots[i] = Some(PathBuf::from(path));
            }
            None if arg.contains('=') && !Path::new(arg).exists() => bail!(
                "--input '{arg}': no input of the model has that name; its inputs are {} \
                 (or input0, input1, ...)",
                names.inputs.join(", ")
            ),
            None => bare.push(PathBuf::from(arg)),
        }
    }
    let mut bare = bare.into_iter();
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        *slot = bare.next();
    }
    if bare.next().is_some() {
        bail!(
            "the model takes {} inputs, {} given",
            names.inputs.len(),
            args.len()
        );
    }
    Ok(slots)
}

fn split_named<'a>(arg: &'a str, names: &IoNames) -> Option<(usize, &'a str)> {
    if Path::new(arg).is_file() {
        return None;
    }
    arg.match_indices('=')
        .find_map(|(at, _)| Some((names.input_index(&arg[..at])?, &arg[at + 1..])))
}

/// The sample folders of `dir` (sorted), if it is a folder of sample folders: every
/// subfolder that holds at least one `.npy` file. Empty for a folder of `.npy` files.
pub fn sample_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() && !npy_files(&path)?.is_empty() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn npy_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "npy"))
        .collect();
    files.sort();
    Ok(files)
}

/// One sample: `<file_stem(name)>.npy` for each input name, in that order. A folder
/// holding a single `.npy` file is the sample of a single-input model whatever its name.
pub fn read_sample(folder: &Path, input_names: &[String]) -> Result<Vec<npy::Array>> {
    let files = npy_files(folder)?;
    if let ([name], [only]) = (input_names, files.as_slice()) {
        let want = folder.join(format!("{}.npy", file_stem(name)));
        if !want.exists() {
            return Ok(vec![npy::read(only)?]);
        }
    }
    input_names
        .iter()
        .map(|name| {
            let path = folder.join(format!("{}.npy", file_stem(name)));
            if !path.exists() {
                bail!(
                    "sample folder {} has no {} for input '{name}'",
                    folder.display(),
                    path.file_name().map_or("".into(), |f| f.to_string_lossy())
                );
            }
            npy::read(&path)
        })
        .collect()
}

/// The first `.npy` file of a sample folder, by name: the sample of a model's only input.
pub fn first_npy(folder: &Path) -> Result<npy::Array> {
    let files = npy_files(folder)?;
    let first = files
        .first()
        .ok_or_else(|| anyhow!("no .npy file in {}", folder.display()))?;
    npy::read(first)
}

/// Every sample of a folder of sample folders, each with one array per input name.
pub fn read_sample_folders(dir: &Path, input_names: &[String]) -> Result<Vec<Vec<npy::Array>>> {
    let folders = sample_folders(dir)?;
    if folders.is_empty() {
        bail!("no sample folders with .npy files in {}", dir.display());
    }
    folders
        .iter()
        .map(|f| read_sample(f, input_names))
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A fresh temp folder named with the process id and the test name.
    pub fn temp_dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cairn-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir");
        d
    }

    fn names(inputs: &[&str]) -> IoNames {
        IoNames {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec!["y".into()],
        }
    }

    #[test]
    fn input_shape_forms() {
        let p = |s: &str, i| parse_input_shape(s, i).unwrap();
        assert_eq!(p("1,3,224,224", 2), ("#2".into(), vec![1, 3, 224, 224]));
        assert_eq!(p("x:1,3", 0), ("x".into(), vec![1, 3]));
        assert_eq!(p("x=1,3", 0), ("x".into(), vec![1, 3]));
        assert_eq!(
            p("serving_default_input_2:0=1,43844,1", 0),
            ("serving_default_input_2:0".into(), vec![1, 43844, 1])
        );
        assert_eq!(p("onnx::Flatten_0:1,16,96", 0).0, "onnx::Flatten_0");
        assert_eq!(p("a/b.c=4", 0), ("a/b.c".into(), vec![4]));
        assert!(parse_input_shape("x=1,a", 0).is_err());
        assert!(parse_input_shape("=1,2", 0).is_err());
    }

    #[test]
    fn file_stems() {
        assert_eq!(
            file_stem("save_infer_model/scale_0.tmp_1"),
            "save_infer_model_scale_0.tmp_1"
        );
        assert_eq!(
            file_stem("StatefulPartitionedCall:2"),
            "StatefulPartitionedCall:2"
        );
        assert_eq!(file_stem(".."), "_");
        assert_eq!(file_stem(""), "_");
    }

    #[test]
    fn inputs_by_name_position_and_bare() {
        let n = names(&["serving_default_input_2:0", "h"]);
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got =
            assign_inputs(&args(&["h=h.npy", "serving_default_input_2:0=a=b.npy"]), &n).unwrap();
        assert_eq!(got, vec![PathBuf::from("a=b.npy"), PathBuf::from("h.npy")]);
        let got = assign_inputs(&args(&["input1=h.npy", "x.npy"]), &n).unwrap();
        assert_eq!(got, vec![PathBuf::from("x.npy"), PathBuf::from("h.npy")]);
        let got = assign_inputs(&args(&["x.npy", "y.npy"]), &n).unwrap();
        assert_eq!(got, vec![PathBuf::from("x.npy"), PathBuf::from("y.npy")]);
        assert!(assign_inputs(&args(&["x.npy"]), &n).is_err());
        assert!(assign_inputs(&args(&["h=1.npy", "h=2.npy"]), &n).is_err());
        assert!(assign_inputs(&args(&["nope=1.npy", "x.npy"]), &n).is_err());
        assert!(assign_inputs(&args(&["a.npy", "b.npy", "c.npy"]), &n).is_err());
        // `cairn bench` leaves out what it fills from a sample.
        let got = assign_some_inputs(&args(&["h=h.npy"]), &n).unwrap();
        assert_eq!(got, vec![None, Some(PathBuf::from("h.npy"))]);
        assert_eq!(assign_some_inputs(&[], &n).unwrap(), vec![None, None]);
        assert!(assign_some_inputs(&args(&["a.npy", "b.npy", "c.npy"]), &n).is_err());
    }

    #[test]
    fn names_file_round_trip_and_count_check() {
        let dir = temp_dir("names_file_round_trip_and_count_check");
        let model = dir.join("m.cairn");
        let n = IoNames {
            inputs: vec!["a:0".into(), "b/c".into()],
            outputs: vec!["y".into()],
        };
        write_names(&model, &n).unwrap();
        assert_eq!(read_names(&model, 2, 1), n);
        assert_eq!(read_names(&model, 1, 1), IoNames::positional(1, 1));
        assert_eq!(
            read_names(&dir.join("other.cairn"), 2, 1).inputs[1],
            "input1"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sample_folders_by_input_name() {
        let dir = temp_dir("sample_folders_by_input_name");
        for s in 0..3 {
            let f = dir.join(format!("sample_{s:03}"));
            std::fs::create_dir_all(&f).unwrap();
            npy::write(&f.join("a:0.npy"), &[1, 2], &[s as f32, 1.0]).unwrap();
            npy::write(&f.join("b_c.npy"), &[3], &[2.0, 3.0, s as f32]).unwrap();
            std::fs::write(f.join("preview.png"), b"not an image").unwrap();
        }
        std::fs::write(dir.join("manifest.json"), "{}").unwrap();
        let names = vec!["b/c".to_string(), "a:0".to_string()];
        let got = read_sample_folders(&dir, &names).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2][0].data, vec![2.0, 3.0, 2.0]);
        assert_eq!(got[1][1].shape, vec![1, 2]);
        assert_eq!(got[1][1].data, vec![1.0, 1.0]);
        let err = read_sample_folders(&dir, &["zz".to_string(), "a:0".to_string()])
            .err()
            .expect("a missing input file is an error");
        assert!(format!("{err:#}").contains("zz.npy"));
        // A folder of .npy files is not a folder of sample folders.
        assert!(sample_folders(&dir.join("sample_000")).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

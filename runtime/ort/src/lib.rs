//! cairn-ort: ONNX Runtime, loaded dynamically, as cairn's oracle and comparison engine on
//! the host (tests, `cairn bench`) — and the seed of the NPU path, where the same session
//! is given a device execution provider (NNAPI, CoreML, QNN, XNNPACK).
//!
//! The library is found through `ORT_DYLIB_PATH`, else in the repository's `.venv`
//! (the PyPI `onnxruntime` wheel ships `libonnxruntime.so`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;

static INIT: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// Where libonnxruntime is: `ORT_DYLIB_PATH`, else `.venv/lib/python*/site-packages/onnxruntime/capi/`
/// searched from the current directory upwards.
pub fn find_library() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let lib = dir.join(".venv/lib");
        if let Ok(rd) = std::fs::read_dir(&lib) {
            for e in rd.flatten() {
                let capi = e.path().join("site-packages/onnxruntime/capi");
                if let Ok(files) = std::fs::read_dir(&capi) {
                    for f in files.flatten() {
                        let name = f.file_name().to_string_lossy().into_owned();
                        if name.starts_with("libonnxruntime.so") {
                            return Some(f.path());
                        }
                    }
                }
            }
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// Load ONNX Runtime once per process.
pub fn init() -> Result<PathBuf> {
    env().map(|(p, _)| p.clone())
}

fn env() -> Result<&'static (PathBuf, ort::environment::Environment)> {
    INIT.get_or_init(|| {
        let path = find_library().ok_or("libonnxruntime not found: set ORT_DYLIB_PATH or create .venv with the onnxruntime wheel (see README)")?;
        let env = ort::init_from(&path).map_err(|e| format!("loading {}: {e}", path.display()))?;
        let env = env.with_name("cairn").build().map_err(|e| format!("{e}"))?;
        Ok((path, env))
    })
    .as_ref()
    .map_err(|e| anyhow!(e.clone()))
}

pub fn available() -> bool {
    init().is_ok()
}

/// One ONNX model in an ONNX Runtime session (CPU execution provider).
pub struct OrtModel {
    session: Session,
    pub input_names: Vec<String>,
    pub output_names: Vec<String>,
}

impl OrtModel {
    /// `threads` = intra-op threads (1 for single-thread comparisons).
    pub fn load(path: &Path, threads: usize) -> Result<OrtModel> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(&bytes, threads)
    }

    pub fn from_bytes(bytes: &[u8], threads: usize) -> Result<OrtModel> {
        let (_, env) = env()?;
        let session = Session::builder(env)
            .map_err(|e| anyhow!("{e}"))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| anyhow!("{e}"))?
            .with_intra_threads(threads)
            .map_err(|e| anyhow!("{e}"))?
            .with_inter_threads(1)
            .map_err(|e| anyhow!("{e}"))?
            .commit_from_memory(bytes)
            .map_err(|e| anyhow!("ONNX Runtime refused the model: {e}"))?;
        let input_names = session
            .inputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let output_names = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(OrtModel {
            session,
            input_names,
            output_names,
        })
    }

    /// Run on f32 inputs (shape, data), in input order; returns f32 outputs.
    pub fn run(
        &mut self,
        inputs: &[(Vec<usize>, Vec<f32>)],
    ) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        if inputs.len() != self.input_names.len() {
            bail!(
                "model has {} inputs, {} given",
                self.input_names.len(),
                inputs.len()
            );
        }
        let mut feed: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        for (name, (shape, data)) in self.input_names.iter().zip(inputs) {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let t = Tensor::from_array((shape, data.clone())).map_err(|e| anyhow!("{e}"))?;
            feed.push((name.clone().into(), t.into()));
        }
        let outs = self
            .session
            .run(feed)
            .map_err(|e| anyhow!("ONNX Runtime run failed: {e}"))?;
        let mut res = Vec::new();
        for name in &self.output_names {
            let v = outs
                .get(name.as_str())
                .ok_or_else(|| anyhow!("missing output {name}"))?;
            let (shape, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| anyhow!("output {name}: {e}"))?;
            res.push((shape.iter().map(|&d| d as usize).collect(), data.to_vec()));
        }
        Ok(res)
    }
}

//! cairn-ort: ONNX Runtime, loaded dynamically, as cairn's oracle and comparison engine on
//! the host (tests, `cairn bench`) — and the seed of the NPU path, where the same session
//! is given a device execution provider (NNAPI, CoreML, QNN, XNNPACK).
//!
//! The library is found through `ORT_DYLIB_PATH`, else in the repository's `.venv`
//! (the PyPI `onnxruntime` wheel ships `libonnxruntime.so`).
//!
//! As a backend: [`export`] writes a `.cairn` graph (or a segment of it) back to a QDQ
//! ONNX graph and [`backend::OrtFactory`] runs the segments a partition places on it,
//! through the execution provider the config names, as an accelerator of
//! `cairn_kernels::hetero` (which reruns on the CPU whatever fails).

pub mod backend;
pub mod export;
pub mod proto;

pub use backend::{DevicePolicy, Ep, OrtAccel, OrtFactory};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use ort::session::builder::{AutoDevicePolicy, GraphOptimizationLevel};
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

/// How ONNX Runtime may rewrite the graph before running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Graph {
    /// `ORT_ENABLE_ALL`, ONNX Runtime's default: QDQ patterns are fused into integer
    /// kernels (QLinearConv, MatMulIntegerToFloat, ...). On x86_64 CPUs without VNNI
    /// those kernels multiply u8 × s8 with `vpmaddubsw`, which saturates, so results
    /// depend on the CPU (see [`int8_exactness`]).
    Optimized,
    /// `ORT_DISABLE_ALL`: the graph runs as written (for a QDQ model: DequantizeLinear,
    /// the float op, QuantizeLinear). The model's meaning, the same on every CPU: the
    /// oracle cairn's int8 results are held to.
    AsWritten,
}

/// The CPU features that decide whether ONNX Runtime's fused int8 kernels are exact, and
/// whether they are expected to be. On x86_64, ORT's u8 × s8 path without VNNI
/// (`vpmaddubsw`) adds pairs of products into saturating int16, so it is inexact there;
/// with VNNI (`vpdpbusd`, AVX-VNNI or AVX-512 VNNI) it accumulates in int32. Arm's dot
/// product and widening multiplies accumulate in int32 too.
pub fn int8_exactness() -> (String, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let f = |name: &str, on: bool| format!("{}{name}", if on { "+" } else { "-" });
        let avx2 = std::is_x86_feature_detected!("avx2");
        let vnni512 = std::is_x86_feature_detected!("avx512vnni");
        let avxvnni = std::is_x86_feature_detected!("avxvnni");
        let flags = [
            f("avx2", avx2),
            f("fma", std::is_x86_feature_detected!("fma")),
            f("avx512f", std::is_x86_feature_detected!("avx512f")),
            f("avx512vnni", vnni512),
            f("avxvnni", avxvnni),
        ]
        .join(" ");
        let exact = vnni512 || avxvnni;
        (flags, exact)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (std::env::consts::ARCH.to_string(), true)
    }
}

/// One ONNX model in an ONNX Runtime session (CPU execution provider, whatever devices the
/// library has).
pub struct OrtModel {
    session: Session,
    pub input_names: Vec<String>,
    pub output_names: Vec<String>,
}

impl OrtModel {
    /// `threads` = intra-op threads (1 for single-thread comparisons); the graph as
    /// ONNX Runtime optimizes it by default.
    pub fn load(path: &Path, threads: usize) -> Result<OrtModel> {
        Self::load_with(path, threads, Graph::Optimized)
    }

    /// [`OrtModel::load`] with the graph optimizations chosen.
    pub fn load_with(path: &Path, threads: usize, graph: Graph) -> Result<OrtModel> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes_with(&bytes, threads, graph)
    }

    pub fn from_bytes(bytes: &[u8], threads: usize) -> Result<OrtModel> {
        Self::from_bytes_with(bytes, threads, Graph::Optimized)
    }

    pub fn from_bytes_with(bytes: &[u8], threads: usize, graph: Graph) -> Result<OrtModel> {
        let (_, env) = env()?;
        let level = match graph {
            Graph::Optimized => GraphOptimizationLevel::All,
            Graph::AsWritten => GraphOptimizationLevel::Disable,
        };
        // The oracle runs on ORT's CPU provider: `ort` would otherwise give the session the
        // MAX_EFFICIENCY device policy, which takes an NPU where the library has one.
        let session = Session::builder(env)
            .map_err(|e| anyhow!("{e}"))?
            .with_auto_device(AutoDevicePolicy::PreferCPU)
            .map_err(|e| anyhow!("{e}"))?
            .with_optimization_level(level)
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

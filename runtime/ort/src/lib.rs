//! cairn-ort: ONNX Runtime, loaded dynamically, as cairn's oracle and comparison engine on
//! the host (tests, `cairn bench`) — and the seed of the NPU path, where the same session
//! is given a device execution provider (NNAPI, CoreML, QNN, XNNPACK).
//!
//! The library is found through `ORT_DYLIB_PATH`, else in the repository's `.venv`
//! (the PyPI `onnxruntime` wheel ships `libonnxruntime.so`), looked for above the current
//! directory, the executable and the source tree it was built from.
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
use ort::value::{DynValue, Tensor, TensorElementType};

static INIT: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// Where libonnxruntime is: `ORT_DYLIB_PATH`, else `.venv/lib/python3*/site-packages/onnxruntime/capi/`
/// searched from the current directory upwards, then from the executable's folder upwards
/// (a `cairn` run from another folder still finds the repository's `.venv`), then from the
/// source tree this crate was built from upwards.
pub fn find_library() -> Option<PathBuf> {
    locate_library().ok()
}

/// [`find_library`], or why not: the folders searched.
pub fn locate_library() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.exists() {
            return Err(format!(
                "libonnxruntime not found: ORT_DYLIB_PATH is {}, which does not exist",
                p.display()
            ));
        }
        return Ok(p);
    }
    let starts = search_starts();
    let mut searched: Vec<PathBuf> = Vec::new();
    for start in &starts {
        for dir in start.ancestors() {
            if searched.iter().any(|s| s == dir) {
                continue;
            }
            searched.push(dir.to_path_buf());
            if let Some(lib) = venv_library(dir) {
                return Ok(lib);
            }
        }
    }
    let list: Vec<String> = searched.iter().map(|s| s.display().to_string()).collect();
    Err(format!(
        "libonnxruntime not found: ORT_DYLIB_PATH is not set, and there is no \
         .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* in any of \
         [{}] (the current directory, the executable's folder, the source tree cairn was \
         built from, and the folders above them); \
         set ORT_DYLIB_PATH or create .venv with the onnxruntime wheel (see README)",
        list.join(", ")
    ))
}

/// The folders [`locate_library`] walks up from: the current directory, the executable's
/// folder (as run, and with links resolved), and the source tree this crate was built from
/// (a `cairn` copied out of the repository, run elsewhere on the same machine, still finds
/// the repository's `.venv`; where that tree does not exist, it finds nothing).
fn search_starts() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    let mut add = |d: &Path| {
        if !d.as_os_str().is_empty() && !v.iter().any(|x| x == d) {
            v.push(d.to_path_buf());
        }
    };
    if let Ok(d) = std::env::current_dir() {
        add(&d);
    }
    if let Ok(exe) = std::env::current_exe() {
        let resolved = std::fs::canonicalize(&exe).ok();
        for e in std::iter::once(exe).chain(resolved) {
            if let Some(d) = e.parent() {
                add(d);
            }
        }
    }
    add(Path::new(env!("CARGO_MANIFEST_DIR")));
    v
}

/// `dir/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`, if there.
fn venv_library(dir: &Path) -> Option<PathBuf> {
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(dir.join(".venv/lib"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .collect();
    pythons.sort();
    for py in pythons {
        let capi = py.join("site-packages/onnxruntime/capi");
        let Ok(files) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = files
            .flatten()
            .filter(|f| {
                f.file_name()
                    .to_string_lossy()
                    .starts_with("libonnxruntime.so")
            })
            .map(|f| f.path())
            .collect();
        // `libonnxruntime.so` before `libonnxruntime.so.1.22.0`: either loads.
        libs.sort();
        if let Some(l) = libs.into_iter().next() {
            return Some(l);
        }
    }
    None
}

/// Load ONNX Runtime once per process.
pub fn init() -> Result<PathBuf> {
    env().map(|(p, _)| p.clone())
}

fn env() -> Result<&'static (PathBuf, ort::environment::Environment)> {
    INIT.get_or_init(|| {
        let path = locate_library()?;
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
    /// Each input's element type as the model declares it (`None`: not a tensor).
    pub input_types: Vec<Option<TensorElementType>>,
    pub output_names: Vec<String>,
}

/// A model's inputs converted once into the element types it declares, for
/// [`OrtModel::run_feed`] (a timed loop then times ONNX Runtime, not the conversion).
pub struct Feed {
    values: Vec<(String, DynValue)>,
}

/// `data` (f32 values, as `.npy` files are read) as an ONNX Runtime tensor of element type
/// `ty`: integers by truncation (the values are whole numbers), bool as `x != 0`.
pub fn typed_tensor(ty: TensorElementType, shape: &[usize], data: &[f32]) -> Result<DynValue> {
    use TensorElementType as T;
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    // Each element converted by `f`, as a tensor of `shape`.
    fn conv<U: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static>(
        shape: Vec<i64>,
        data: &[f32],
        f: impl Fn(f32) -> U,
    ) -> Result<DynValue> {
        let v: Vec<U> = data.iter().map(|&x| f(x)).collect();
        Ok(Tensor::from_array((shape, v))
            .map_err(|e| anyhow!("{e}"))?
            .into_dyn())
    }
    match ty {
        T::Float32 => conv(shape, data, |x| x),
        T::Float64 => conv(shape, data, f64::from),
        T::Int64 => conv(shape, data, |x| x as i64),
        T::Int32 => conv(shape, data, |x| x as i32),
        T::Int16 => conv(shape, data, |x| x as i16),
        T::Int8 => conv(shape, data, |x| x as i8),
        T::Uint64 => conv(shape, data, |x| x as u64),
        T::Uint32 => conv(shape, data, |x| x as u32),
        T::Uint16 => conv(shape, data, |x| x as u16),
        T::Uint8 => conv(shape, data, |x| x as u8),
        T::Bool => conv(shape, data, |x| x != 0.0),
        other => bail!("inputs of element type {other} are not supported"),
    }
}

/// An output tensor as f32 values (integers and bool converted), with its shape.
fn output_f32(name: &str, v: &DynValue) -> Result<(Vec<usize>, Vec<f32>)> {
    use TensorElementType as T;
    fn get<U: ort::value::PrimitiveTensorElementType + Copy>(
        v: &DynValue,
        f: impl Fn(U) -> f32,
    ) -> ort::Result<(Vec<usize>, Vec<f32>)> {
        let (shape, data) = v.try_extract_tensor::<U>()?;
        Ok((
            shape.iter().map(|&d| d as usize).collect(),
            data.iter().map(|&x| f(x)).collect(),
        ))
    }
    let ty = v.dtype().tensor_type();
    let r = match ty {
        Some(T::Float64) => get::<f64>(v, |x| x as f32),
        Some(T::Int64) => get::<i64>(v, |x| x as f32),
        Some(T::Int32) => get::<i32>(v, |x| x as f32),
        Some(T::Int16) => get::<i16>(v, f32::from),
        Some(T::Int8) => get::<i8>(v, f32::from),
        Some(T::Uint64) => get::<u64>(v, |x| x as f32),
        Some(T::Uint32) => get::<u32>(v, |x| x as f32),
        Some(T::Uint16) => get::<u16>(v, f32::from),
        Some(T::Uint8) => get::<u8>(v, f32::from),
        Some(T::Bool) => get::<bool>(v, |x| x as u8 as f32),
        _ => get::<f32>(v, |x| x),
    };
    r.map_err(|e| anyhow!("output {name}: {e}"))
}

impl OrtModel {
    /// `threads` = intra-op threads (1 for single-thread comparisons); the graph as
    /// ONNX Runtime optimizes it by default.
    pub fn load(path: &Path, threads: usize) -> Result<OrtModel> {
        Self::load_with(path, threads, Graph::Optimized)
    }

    /// [`OrtModel::load`] with the graph optimizations chosen. ONNX Runtime reads the file
    /// itself, so a model whose weights are external data (`model.onnx.data`) finds them
    /// beside it.
    pub fn load_with(path: &Path, threads: usize, graph: Graph) -> Result<OrtModel> {
        if !path.is_file() {
            bail!("reading {}: no such file", path.display());
        }
        Self::commit(threads, graph, |b| b.commit_from_file(path))
    }

    pub fn from_bytes(bytes: &[u8], threads: usize) -> Result<OrtModel> {
        Self::from_bytes_with(bytes, threads, Graph::Optimized)
    }

    pub fn from_bytes_with(bytes: &[u8], threads: usize, graph: Graph) -> Result<OrtModel> {
        Self::commit(threads, graph, |b| b.commit_from_memory(bytes))
    }

    fn commit(
        threads: usize,
        graph: Graph,
        commit: impl FnOnce(&mut ort::session::builder::SessionBuilder) -> ort::Result<Session>,
    ) -> Result<OrtModel> {
        let (_, env) = env()?;
        let level = match graph {
            Graph::Optimized => GraphOptimizationLevel::All,
            Graph::AsWritten => GraphOptimizationLevel::Disable,
        };
        // The oracle runs on ORT's CPU provider: `ort` would otherwise give the session the
        // MAX_EFFICIENCY device policy, which takes an NPU where the library has one.
        let mut builder = Session::builder(env)
            .map_err(|e| anyhow!("{e}"))?
            .with_auto_device(AutoDevicePolicy::PreferCPU)
            .map_err(|e| anyhow!("{e}"))?
            .with_optimization_level(level)
            .map_err(|e| anyhow!("{e}"))?
            .with_intra_threads(threads)
            .map_err(|e| anyhow!("{e}"))?
            .with_inter_threads(1)
            .map_err(|e| anyhow!("{e}"))?;
        let session =
            commit(&mut builder).map_err(|e| anyhow!("ONNX Runtime refused the model: {e}"))?;
        let input_names = session
            .inputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let input_types = session
            .inputs()
            .iter()
            .map(|o| o.dtype().tensor_type())
            .collect();
        let output_names = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(OrtModel {
            session,
            input_names,
            input_types,
            output_names,
        })
    }

    /// Run on f32 inputs (shape, data), in input order, each converted to the element type
    /// the model declares for it (int32 token ids, int64, bool masks, ...); returns the
    /// outputs as f32.
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
        let named: Vec<(&str, &[usize], &[f32])> = self
            .input_names
            .iter()
            .zip(inputs)
            .map(|(n, (shape, data))| (n.as_str(), shape.as_slice(), data.as_slice()))
            .collect();
        let feed = self.feed(&named)?;
        self.run_feed(&feed)
    }

    /// The model's inputs from f32 arrays by name (every input of the model, none other),
    /// each converted to the element type the model declares for it.
    pub fn feed(&self, inputs: &[(&str, &[usize], &[f32])]) -> Result<Feed> {
        if let Some((n, _, _)) = inputs
            .iter()
            .find(|(n, _, _)| !self.input_names.iter().any(|m| m == n))
        {
            bail!(
                "the model has no input '{n}'; its inputs are {}",
                self.input_names.join(", ")
            );
        }
        let mut values = Vec::with_capacity(self.input_names.len());
        for (name, ty) in self.input_names.iter().zip(&self.input_types) {
            let (_, shape, data) = inputs
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| anyhow!("no value given for the model's input '{name}'"))?;
            let ty = ty.ok_or_else(|| anyhow!("input '{name}' is not a tensor"))?;
            let v = typed_tensor(ty, shape, data).with_context(|| format!("input '{name}'"))?;
            values.push((name.clone(), v));
        }
        Ok(Feed { values })
    }

    /// Run on inputs made by [`OrtModel::feed`]; returns every output as f32.
    pub fn run_feed(&mut self, feed: &Feed) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        let inputs: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> = feed
            .values
            .iter()
            .map(|(n, v)| (n.as_str().into(), v.into()))
            .collect();
        let outs = self
            .session
            .run(inputs)
            .map_err(|e| anyhow!("ONNX Runtime run failed: {e}"))?;
        let mut res = Vec::new();
        for name in &self.output_names {
            let v = outs
                .get(name.as_str())
                .ok_or_else(|| anyhow!("missing output {name}"))?;
            res.push(output_f32(name, v)?);
        }
        Ok(res)
    }
}

//! ONNX Runtime as an accelerator of cairn's heterogeneous driver
//! (`cairn_kernels::hetero`): the NPU path. Each accelerator segment of a partition is
//! exported to a QDQ ONNX graph ([`crate::export`]) and run in its own ONNX Runtime session
//! with the execution provider the config names (NNAPI or QNN on Android, CoreML on iOS,
//! XNNPACK, OpenVINO, or ORT's CPU provider).
//!
//! - Capability: [`OrtFactory`] supports exactly the ops the exporter can express; the rest
//!   stay on the CPU (never an error).
//! - Or ONNX Runtime picks the provider itself by a device policy ([`DevicePolicy`],
//!   `ort:prefer-npu` / `ort:auto`: ORT ≥ 1.22's `SessionOptionsSetEpSelectionPolicy`, through
//!   `ort`'s `SessionBuilder::with_auto_device`); the factory reads the library's devices
//!   (`OrtEpDevice`s) to say which one the policy takes, and a pick other than an NPU is
//!   counted and said like a missing provider.
//! - A requested execution provider the loaded library lacks (the PyPI wheel has only the
//!   CPU one) is not fatal: the sessions use ORT's CPU provider, the factory counts it
//!   ([`OrtFactory::ep_fallbacks`]) and keeps one message ([`OrtFactory::ep_note`]) for the
//!   caller to say once.
//! - No library at all, or a graph ONNX Runtime refuses, fails `create`; the driver then
//!   runs the model on the CPU. A failed run fails the segment; the driver reruns it on the
//!   CPU and re-creates the sessions later.
//!
//! int8 results are within 1 LSB of the CPU backend's (ONNX Runtime requantizes in its own
//! order of float operations), not bit-exact: see `tests/tests/ort_backend.rs`.

use std::borrow::Cow;

use cairn_core::accel::{AccelError, AccelFactory, Accelerator};
use cairn_core::partition::{arena_range, OpSupport, Partition, Placement, Segment};
use cairn_core::{DType, Model};
use ort::ep::{self, ExecutionProvider};
use ort::memory::DeviceType;
use ort::session::builder::{AutoDevicePolicy, GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;

use crate::export::{export_segment, op_exportable, tensor_name};
use crate::Graph;

/// An ONNX Runtime execution provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ep {
    Cpu,
    Xnnpack,
    Nnapi,
    Qnn,
    CoreMl,
    OpenVino,
}

impl Ep {
    pub const ALL: [Ep; 6] = [
        Ep::Cpu,
        Ep::Xnnpack,
        Ep::Nnapi,
        Ep::Qnn,
        Ep::CoreMl,
        Ep::OpenVino,
    ];

    /// `cpu`, `xnnpack`, `nnapi`, `qnn`, `coreml`, `openvino` (any case).
    pub fn parse(s: &str) -> Option<Ep> {
        Ep::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(s))
    }

    pub fn name(self) -> &'static str {
        match self {
            Ep::Cpu => "cpu",
            Ep::Xnnpack => "xnnpack",
            Ep::Nnapi => "nnapi",
            Ep::Qnn => "qnn",
            Ep::CoreMl => "coreml",
            Ep::OpenVino => "openvino",
        }
    }

    /// ONNX Runtime's name for it.
    pub fn ort_name(self) -> &'static str {
        match self {
            Ep::Cpu => ep::CPU::NAME,
            Ep::Xnnpack => ep::XNNPACK::NAME,
            Ep::Nnapi => ep::NNAPI::NAME,
            Ep::Qnn => ep::QNN::NAME,
            Ep::CoreMl => ep::CoreML::NAME,
            Ep::OpenVino => ep::OpenVINO::NAME,
        }
    }

    /// Whether the loaded library was built with this provider (`Err` without a library).
    pub fn in_library(self) -> Result<bool, String> {
        crate::init().map_err(|e| format!("{e:#}"))?;
        let r = match self {
            Ep::Cpu => return Ok(true),
            Ep::Xnnpack => ep::XNNPACK::is_available(),
            Ep::Nnapi => ep::NNAPI::is_available(),
            Ep::Qnn => ep::QNN::is_available(),
            Ep::CoreMl => ep::CoreML::is_available(),
            Ep::OpenVino => ep::OpenVINO::is_available(),
        };
        r.map_err(|e| e.to_string())
    }

    fn dispatch(self) -> ep::ExecutionProviderDispatch {
        match self {
            Ep::Cpu => ep::CPU::default().build(),
            Ep::Xnnpack => ep::XNNPACK::default().build(),
            Ep::Nnapi => ep::NNAPI::default().build(),
            Ep::Qnn => ep::QNN::default().build(),
            Ep::CoreMl => ep::CoreML::default().build(),
            Ep::OpenVino => ep::OpenVINO::default().build(),
        }
        .error_on_failure()
    }
}

/// ONNX Runtime's automatic device selection (its EP selection policy, ONNX Runtime ≥ 1.22;
/// the `ort` crate's `api-22` device API): ORT picks the execution provider from the
/// devices its environment found (`OrtEpDevice`s), among the providers the library has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevicePolicy {
    /// `ort:prefer-npu`: `PREFER_NPU`, an NPU's provider when there is one, else the CPU.
    PreferNpu,
    /// `ort:auto`: `MAX_EFFICIENCY` (performance per watt), the policy the `ort` crate gives
    /// every session it builds; ONNX Runtime resolves it like `PREFER_NPU` today.
    Auto,
}

impl DevicePolicy {
    pub const ALL: [DevicePolicy; 2] = [DevicePolicy::PreferNpu, DevicePolicy::Auto];

    /// `prefer-npu` or `auto` (any case).
    pub fn parse(s: &str) -> Option<DevicePolicy> {
        DevicePolicy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    pub fn name(self) -> &'static str {
        match self {
            DevicePolicy::PreferNpu => "prefer-npu",
            DevicePolicy::Auto => "auto",
        }
    }

    /// ONNX Runtime's name for it.
    pub fn ort_name(self) -> &'static str {
        match self {
            DevicePolicy::PreferNpu => "PREFER_NPU",
            DevicePolicy::Auto => "MAX_EFFICIENCY",
        }
    }

    fn ort(self) -> AutoDevicePolicy {
        match self {
            DevicePolicy::PreferNpu => AutoDevicePolicy::PreferNPU,
            DevicePolicy::Auto => AutoDevicePolicy::MaxEfficiency,
        }
    }

    /// The device this policy takes among `devices`: the first NPU, else the CPU provider's
    /// device (ONNX Runtime's `PREFER_NPU`, which `MAX_EFFICIENCY` follows), if listed.
    pub fn pick(self, devices: &[OrtDevice]) -> Option<&OrtDevice> {
        devices
            .iter()
            .find(|d| d.kind == DeviceKind::Npu)
            .or_else(|| devices.iter().find(|d| d.ep == ep::CPU::NAME))
    }
}

/// The hardware kind of an ONNX Runtime device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Gpu,
    Npu,
    /// Another kind (`ort` also names FPGAs).
    Other,
}

/// One device of ONNX Runtime's environment (an `OrtEpDevice`): an execution provider on a
/// piece of hardware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrtDevice {
    /// The provider's name (`CPUExecutionProvider`, `QNNExecutionProvider`, ...).
    pub ep: String,
    pub kind: DeviceKind,
    pub vendor: String,
}

impl std::fmt::Display for OrtDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
            DeviceKind::Npu => "npu",
            DeviceKind::Other => "other",
        };
        write!(f, "{} on {} {kind}", self.ep, self.vendor)
    }
}

/// The devices the loaded library offers its device policies (`Err` without a library).
pub fn library_devices() -> Result<Vec<OrtDevice>, String> {
    let (_, env) = crate::env().map_err(|e| format!("{e:#}"))?;
    Ok(env
        .devices()
        .map(|d| {
            let hw = d.hardware_device();
            OrtDevice {
                ep: d.ep().unwrap_or("?").to_string(),
                kind: match hw.ty() {
                    DeviceType::CPU => DeviceKind::Cpu,
                    DeviceType::GPU => DeviceKind::Gpu,
                    DeviceType::NPU => DeviceKind::Npu,
                    _ => DeviceKind::Other,
                },
                vendor: hw.vendor().unwrap_or("?").to_string(),
            }
        })
        .collect())
}

/// The providers the loaded library has, by ONNX Runtime's names.
pub fn library_providers() -> Vec<&'static str> {
    Ep::ALL
        .into_iter()
        .filter(|e| e.in_library().unwrap_or(false))
        .map(Ep::ort_name)
        .collect()
}

/// The graph mode that keeps ORT's CPU provider within 1 LSB of cairn per op: as written
/// where its fused int8 kernels are inexact (x86_64 without VNNI), else optimized.
pub fn cpu_graph() -> Graph {
    if crate::int8_exactness().1 {
        Graph::Optimized
    } else {
        Graph::AsWritten
    }
}

/// Makes ONNX Runtime accelerators.
#[derive(Clone, Debug)]
pub struct OrtFactory {
    /// The execution provider asked for (with a device policy: the one used when the
    /// policy cannot be set).
    pub ep: Ep,
    /// ONNX Runtime picks the provider by this policy instead (`ort:prefer-npu`, `ort:auto`).
    pub policy: Option<DevicePolicy>,
    /// Intra-op threads per session.
    pub threads: usize,
    /// Whether ONNX Runtime may fuse the QDQ graph into its integer kernels.
    pub graph: Graph,
    ep_fallbacks: u64,
    note: Option<String>,
    /// The provider (`None`: one no [`Ep`] names, a policy's pick) and graph mode of the
    /// last sessions.
    in_use: Option<(Option<Ep>, Graph)>,
    /// The device a policy took for them.
    device: Option<OrtDevice>,
}

impl OrtFactory {
    /// The factory for `ep`, one thread per session. The graph mode: ONNX Runtime's CPU
    /// provider fuses QDQ graphs into integer kernels that saturate on x86_64 without VNNI
    /// (tens of LSB off, see [`crate::int8_exactness`]), so there the CPU provider runs the
    /// graph as written (float ops between DequantizeLinear and QuantizeLinear: within 1
    /// LSB per op); elsewhere, and for device providers, the graph is optimized.
    pub fn new(ep: Ep) -> OrtFactory {
        let graph = if ep == Ep::Cpu {
            cpu_graph()
        } else {
            Graph::Optimized
        };
        OrtFactory {
            ep,
            policy: None,
            threads: 1,
            graph,
            ep_fallbacks: 0,
            note: None,
            in_use: None,
            device: None,
        }
    }

    /// The factory whose sessions let ONNX Runtime pick the provider by `policy`; the graph
    /// mode follows the device it picks (see [`OrtFactory::new`]).
    pub fn with_policy(policy: DevicePolicy) -> OrtFactory {
        OrtFactory {
            policy: Some(policy),
            graph: Graph::Optimized,
            ..OrtFactory::new(Ep::Cpu)
        }
    }

    /// `ort`, `ort:EP` or `ort:POLICY` (the backend names of `cairn run --backend`, EP one
    /// of [`Ep::ALL`], POLICY one of [`DevicePolicy::ALL`]); `None` otherwise.
    pub fn from_backend_name(s: &str) -> Option<OrtFactory> {
        match s.split_once(':') {
            None if s == "ort" => Some(OrtFactory::new(Ep::Cpu)),
            Some(("ort", e)) => Ep::parse(e)
                .map(OrtFactory::new)
                .or_else(|| DevicePolicy::parse(e).map(OrtFactory::with_policy)),
            _ => None,
        }
    }

    /// Sessions created with ORT's CPU provider because the one asked for was missing or
    /// refused.
    pub fn ep_fallbacks(&self) -> u64 {
        self.ep_fallbacks
    }

    /// Why the sessions run on another provider than the one asked for, when they do.
    pub fn ep_note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The provider the last sessions were created with.
    pub fn ep_in_use(&self) -> Option<Ep> {
        self.in_use.and_then(|u| u.0)
    }

    /// The device ONNX Runtime's policy took for the last sessions (with a policy only).
    pub fn device_in_use(&self) -> Option<&OrtDevice> {
        self.device.as_ref()
    }

    /// The graph mode the last sessions were created with.
    pub fn graph_in_use(&self) -> Option<Graph> {
        self.in_use.map(|u| u.1)
    }

    fn builder(&self, graph: Graph) -> Result<SessionBuilder, AccelError> {
        let (_, env) = crate::env().map_err(|_| AccelError::Unavailable)?;
        let level = match graph {
            Graph::Optimized => GraphOptimizationLevel::All,
            Graph::AsWritten => GraphOptimizationLevel::Disable,
        };
        let bad = |_| AccelError::Device;
        // `ort` gives every builder the MAX_EFFICIENCY device policy; without an explicit
        // provider or a policy of ours, a session here means ORT's CPU provider.
        Session::builder(env)
            .map_err(bad)?
            .with_auto_device(AutoDevicePolicy::PreferCPU)
            .map_err(|_| AccelError::Device)?
            .with_optimization_level(level)
            .map_err(|_| AccelError::Device)?
            .with_intra_threads(self.threads.max(1))
            .map_err(|_| AccelError::Device)?
            .with_inter_threads(1)
            .map_err(|_| AccelError::Device)
    }

    /// A session builder with the provider asked for, else ORT's CPU provider (counted,
    /// and the reason kept; in the CPU provider's exact graph mode, [`cpu_graph`], unless
    /// the graph mode asked for is already that).
    fn builder_with_ep(&mut self) -> Result<SessionBuilder, AccelError> {
        if let Some(policy) = self.policy {
            return self.builder_with_policy(policy);
        }
        let b = self.builder(self.graph)?;
        let why = match self.ep.in_library() {
            Ok(true) => match b.with_execution_providers([self.ep.dispatch()]) {
                Ok(b) => {
                    self.in_use = Some((Some(self.ep), self.graph));
                    return Ok(b);
                }
                Err(e) => format!("registering it failed: {e}"),
            },
            Ok(false) => format!(
                "this ONNX Runtime library lacks it (it has {})",
                library_providers().join(", ")
            ),
            Err(_) => return Err(AccelError::Unavailable),
        };
        self.ep_fallbacks += 1;
        if self.note.is_none() {
            self.note = Some(format!(
                "ort: execution provider {} ({}) unavailable: {why}; using ONNX Runtime's CPU provider",
                self.ep.name(),
                self.ep.ort_name()
            ));
        }
        let graph = match self.graph {
            Graph::AsWritten => Graph::AsWritten,
            Graph::Optimized => cpu_graph(),
        };
        self.in_use = Some((Some(Ep::Cpu), graph));
        self.builder(graph)
    }

    /// A session builder with ONNX Runtime's device policy set. The device it will take is
    /// read from the library's device list ([`DevicePolicy::pick`]): anything but an NPU is
    /// counted as a fallback and said once, and the CPU provider runs in its exact graph
    /// mode. A library that refuses the policy gets the CPU provider, also said.
    fn builder_with_policy(&mut self, policy: DevicePolicy) -> Result<SessionBuilder, AccelError> {
        let devices = library_devices().map_err(|_| AccelError::Unavailable)?;
        let pick = policy.pick(&devices).cloned();
        let on_npu = pick.as_ref().is_some_and(|d| d.kind == DeviceKind::Npu);
        let graph = match self.graph {
            Graph::Optimized if !on_npu => cpu_graph(),
            g => g,
        };
        let listed = devices
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let (why, b) = match self.builder(graph)?.with_auto_device(policy.ort()) {
            Ok(b) => {
                let ep = pick
                    .as_ref()
                    .and_then(|d| Ep::ALL.into_iter().find(|e| e.ort_name() == d.ep));
                self.in_use = Some((ep, graph));
                self.device = pick;
                if on_npu {
                    return Ok(b);
                }
                (format!("no NPU among the library's devices ({listed})"), b)
            }
            Err(e) => {
                self.in_use = Some((Some(Ep::Cpu), graph));
                self.device = None;
                (
                    format!("the library refused the policy ({e})"),
                    self.builder(graph)?,
                )
            }
        };
        self.ep_fallbacks += 1;
        if self.note.is_none() {
            self.note = Some(format!(
                "ort:{}: ONNX Runtime's device policy {}: {why}; using ONNX Runtime's CPU provider",
                policy.name(),
                policy.ort_name()
            ));
        }
        Ok(b)
    }
}

impl OpSupport for OrtFactory {
    fn supports_op(&self, model: &Model<'_>, op: usize) -> bool {
        op_exportable(model, op)
    }
}

/// One accelerator segment in its session.
struct SegSession {
    segment: Segment,
    session: Session,
    inputs: Vec<u16>,
    outputs: Vec<u16>,
}

/// The sessions of one partition's ONNX Runtime segments.
pub struct OrtAccel {
    sessions: Vec<SegSession>,
    ep: Ep,
}

impl OrtAccel {
    /// The provider the sessions run on.
    pub fn ep(&self) -> Ep {
        self.ep
    }
}

impl AccelFactory for OrtFactory {
    type Accel = OrtAccel;
    fn name(&self) -> &'static str {
        "ort"
    }
    fn create(&mut self, model: &Model<'_>, partition: &Partition) -> Result<OrtAccel, AccelError> {
        let mut sessions = Vec::new();
        for &segment in partition.segments() {
            if segment.placement == Placement::Cpu {
                continue;
            }
            let ex = export_segment(model, segment).ok_or(AccelError::Unsupported)?;
            let session = self
                .builder_with_ep()?
                .commit_from_memory(&ex.onnx)
                .map_err(|_| AccelError::Compile)?;
            sessions.push(SegSession {
                segment,
                session,
                inputs: ex.inputs,
                outputs: ex.outputs,
            });
        }
        Ok(OrtAccel {
            sessions,
            ep: self.ep_in_use().unwrap_or(self.ep),
        })
    }
}

fn le4(b: &[u8]) -> impl Iterator<Item = [u8; 4]> + '_ {
    b.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]])
}

/// An arena tensor as an ONNX Runtime input.
fn input_value(
    model: &Model<'_>,
    t: u16,
    arena: &[u8],
) -> Result<SessionInputValue<'static>, AccelError> {
    let info = model.tensor(t).info;
    let r = arena_range(model, t).ok_or(AccelError::Device)?;
    let b = arena.get(r).ok_or(AccelError::Device)?;
    let shape: Vec<i64> = info.shape.dims().iter().map(|&d| i64::from(d)).collect();
    let bad = |_| AccelError::Device;
    Ok(match info.dtype {
        DType::I8 => Tensor::from_array((shape, b.iter().map(|&v| v as i8).collect::<Vec<_>>()))
            .map_err(bad)?
            .into(),
        DType::U8 => Tensor::from_array((shape, b.to_vec())).map_err(bad)?.into(),
        DType::I32 => {
            Tensor::from_array((shape, le4(b).map(i32::from_le_bytes).collect::<Vec<_>>()))
                .map_err(bad)?
                .into()
        }
        DType::F32 => {
            Tensor::from_array((shape, le4(b).map(f32::from_le_bytes).collect::<Vec<_>>()))
                .map_err(bad)?
                .into()
        }
    })
}

impl Accelerator for OrtAccel {
    fn run_segment(
        &mut self,
        model: &Model<'_>,
        segment: Segment,
        arena: &[u8],
        staging: &mut [u8],
    ) -> Result<(), AccelError> {
        let s = self
            .sessions
            .iter_mut()
            .find(|s| s.segment == segment)
            .ok_or(AccelError::Device)?;
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(s.inputs.len());
        for &t in &s.inputs {
            feed.push((tensor_name(t).into(), input_value(model, t, arena)?));
        }
        let outs = s.session.run(feed).map_err(|_| AccelError::Device)?;
        for &t in &s.outputs {
            let info = model.tensor(t).info;
            let r = arena_range(model, t).ok_or(AccelError::Device)?;
            let dst = staging.get_mut(r).ok_or(AccelError::Device)?;
            let v = outs
                .get(tensor_name(t).as_str())
                .ok_or(AccelError::Device)?;
            let bad = |_| AccelError::Device;
            let bytes: Vec<u8> = match info.dtype {
                DType::I8 => v
                    .try_extract_tensor::<i8>()
                    .map_err(bad)?
                    .1
                    .iter()
                    .map(|&x| x as u8)
                    .collect(),
                DType::U8 => v.try_extract_tensor::<u8>().map_err(bad)?.1.to_vec(),
                DType::I32 => v
                    .try_extract_tensor::<i32>()
                    .map_err(bad)?
                    .1
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                DType::F32 => v
                    .try_extract_tensor::<f32>()
                    .map_err(bad)?
                    .1
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            };
            if bytes.len() != dst.len() {
                return Err(AccelError::Device);
            }
            dst.copy_from_slice(&bytes);
        }
        Ok(())
    }
}

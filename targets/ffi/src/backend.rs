//! The backend a model runs on: `cpu` (always); `ort[:EP]` (ONNX Runtime with an
//! execution provider: `ort:nnapi`, `ort:qnn` on Android, `ort:coreml` on iOS,
//! `ort:xnnpack`, …) in a library built with the cargo feature `ort`; `gpu` (cairn-gpu's
//! WGSL int8 kernels through wgpu: Vulkan, Metal, D3D12) in a library built with the cargo
//! feature `gpu`. Device and phone builds without the features link no ONNX Runtime and
//! no wgpu code; asking them for `ort` or `gpu` is `CAIRN_STATUS_BACKEND_UNAVAILABLE`.
//!
//! Both run the model through the heterogeneous driver (`cairn_kernels::hetero`): the ops
//! the accelerator covers run there, the rest on cairn's CPU kernels; an accelerator
//! failure mid-request (an ORT error; a lost GPU device, a timeout, a wgpu error) reruns
//! that segment on the CPU, so the request completes, and the accelerator is created again
//! on a later request. At `cairn_model_set_backend`: with `ort`, a missing execution
//! provider falls back to ORT's CPU provider and no ONNX Runtime library at all leaves
//! every op on the CPU; with `gpu`, no adapter (no Vulkan/Metal/D3D12 driver) or a kernel
//! that fails to build leaves every op on the CPU. In each case the call returns
//! `CAIRN_STATUS_OK` and `cairn_last_error` says why.

use crate::*;

/// The heterogeneous driver of one model with the accelerators of factory `F`, and the
/// two buffers it borrows.
#[cfg(any(feature = "ort", feature = "gpu"))]
pub(crate) struct Driver<F: cairn_core::accel::AccelFactory + 'static> {
    hetero: std::mem::ManuallyDrop<
        cairn_kernels::hetero::Hetero<'static, 'static, 'static, cairn_kernels::CpuBackend, F>,
    >,
    arena: *mut [u8],
    staging: *mut [u8],
}

#[cfg(any(feature = "ort", feature = "gpu"))]
impl<F: cairn_core::accel::AccelFactory + 'static> Drop for Driver<F> {
    fn drop(&mut self) {
        // SAFETY: the driver (the only borrower of the buffers) goes first; both buffers
        // came from `Box::into_raw` in `Driver::new` and are freed once, here.
        unsafe {
            std::mem::ManuallyDrop::drop(&mut self.hetero);
            drop(Box::from_raw(self.arena));
            drop(Box::from_raw(self.staging));
        }
    }
}

#[cfg(any(feature = "ort", feature = "gpu"))]
impl<F: cairn_core::accel::AccelFactory + 'static> Driver<F> {
    /// The driver for `model` (whose bytes outlive it: the caller drops it first) with
    /// `factory`; also why every op runs on the CPU, when they all do.
    fn new(
        model: cairn_core::Model<'static>,
        factory: F,
    ) -> Result<(Driver<F>, Option<cairn_kernels::hetero::CpuOnly>), Fail> {
        let arena = Box::into_raw(
            vec![0u8; model.arena_bytes() + cairn_core::format::ALIGN].into_boxed_slice(),
        );
        let staging = Box::into_raw(vec![0u8; model.arena_bytes()].into_boxed_slice());
        // SAFETY: both buffers live until `Driver` drops them, after the driver.
        let (a, s) = unsafe { (&mut *arena, &mut *staging) };
        let h = match cairn_kernels::hetero::Hetero::new(
            model,
            cairn_kernels::CpuBackend,
            a,
            s,
            factory,
            cairn_core::partition::Policy::default(),
        ) {
            Ok(h) => h,
            Err(e) => {
                // SAFETY: nothing borrows the buffers any more.
                unsafe {
                    drop(Box::from_raw(arena));
                    drop(Box::from_raw(staging));
                }
                return Err((CairnStatus::BadModel, format!("model refused: {e:?}")));
            }
        };
        let why = h.cpu_only_reason();
        Ok((
            Driver {
                hetero: std::mem::ManuallyDrop::new(h),
                arena,
                staging,
            },
            why,
        ))
    }

    /// The driver's counters, in the C ABI's form.
    fn stats(&self) -> CairnBackendStats {
        let c = self.hetero.counters();
        CairnBackendStats {
            requests: c.requests,
            accel_segments: c.accel_segments,
            cpu_segments: c.cpu_segments,
            fallback_segments: c.fallback_segments,
            device_lost: c.device_lost,
            timeouts: c.timeouts,
            errors: c.errors,
            create_failures: c.create_failures,
            recreations: c.recreations,
            accelerating: self.hetero.accelerating(),
        }
    }

    /// One request: `x` to input 0, every output as f32.
    fn run(&mut self, x: &[f32]) -> Result<Vec<Vec<f32>>, Fail> {
        let h = &mut *self.hetero;
        let fail = |e| (CairnStatus::RunFailed, format!("run failed: {e:?}"));
        h.set_input_f32(0, x).map_err(fail)?;
        h.invoke().map_err(fail)?;
        (0..h.model().n_outputs())
            .map(|i| {
                h.output(i)
                    .map(|t| cairn_kernels::host::to_f32(&t))
                    .map_err(fail)
            })
            .collect()
    }
}

/// The accelerated driver `cairn_model_set_backend` chose; without the cargo features
/// `ort` and `gpu` there is none to hold.
pub(crate) enum Accel {
    /// ONNX Runtime (the cargo feature `ort`).
    #[cfg(feature = "ort")]
    Ort(Driver<cairn_ort::OrtFactory>),
    /// cairn-gpu through wgpu (the cargo feature `gpu`).
    #[cfg(feature = "gpu")]
    Gpu(Driver<cairn_gpu::GpuFactory>),
}

impl Accel {
    /// The ORT driver for `model` with the factory named by `name`; also the note for
    /// `cairn_last_error`, if the EP fell back or every op runs on the CPU.
    #[cfg(feature = "ort")]
    fn ort(model: cairn_core::Model<'static>, name: &str) -> Result<(Accel, Option<String>), Fail> {
        let f = cairn_ort::OrtFactory::from_backend_name(name).ok_or((
            CairnStatus::BackendUnavailable,
            format!("unknown backend '{name}': cpu, gpu, ort or ort:EP (cpu, xnnpack, nnapi, qnn, coreml, openvino)"),
        ))?;
        let (d, why) = Driver::new(model, f)?;
        let mut note = d.hetero.factory().ep_note().map(str::to_string);
        if let Some(why) = why {
            note = Some(format!("{name}: every op runs on the cpu: {why}"));
        }
        Ok((Accel::Ort(d), note))
    }

    /// The GPU driver for `model`; also the note for `cairn_last_error`, if every op runs
    /// on the CPU (no adapter, a kernel that failed to build, no op the GPU covers).
    #[cfg(feature = "gpu")]
    fn gpu(model: cairn_core::Model<'static>) -> Result<(Accel, Option<String>), Fail> {
        let (d, why) = Driver::new(model, cairn_gpu::GpuFactory::default())?;
        let note = why.map(|why| {
            let hint = match why {
                cairn_kernels::hetero::CpuOnly::Load(
                    cairn_core::accel::AccelError::Unavailable,
                ) => " (no GPU adapter: is a Vulkan, Metal or D3D12 driver installed?)",
                _ => "",
            };
            format!("gpu: every op runs on the cpu: {why}{hint}")
        });
        Ok((Accel::Gpu(d), note))
    }

    /// One request: `x` to input 0, every output as f32.
    pub(crate) fn run(&mut self, x: &[f32]) -> Result<Vec<Vec<f32>>, Fail> {
        #[cfg(not(any(feature = "ort", feature = "gpu")))]
        let _ = x;
        match *self {
            #[cfg(feature = "ort")]
            Accel::Ort(ref mut d) => d.run(x),
            #[cfg(feature = "gpu")]
            Accel::Gpu(ref mut d) => d.run(x),
        }
    }

    /// What happened on this backend since it was chosen.
    pub(crate) fn stats(&self) -> CairnBackendStats {
        match *self {
            #[cfg(feature = "ort")]
            Accel::Ort(ref d) => d.stats(),
            #[cfg(feature = "gpu")]
            Accel::Gpu(ref d) => d.stats(),
        }
    }
}

/// What a model's backend did since `cairn_model_set_backend` chose it (or since the model
/// was created, on the CPU): requests, the segments each side ran, and every accelerator
/// failure by kind. A failed segment reruns on the CPU (`fallback_segments`), so a request
/// completes whatever these say; they tell an app that its accelerator is not helping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CairnBackendStats {
    /// Requests run.
    pub requests: u64,
    /// Accelerator segments the accelerator completed.
    pub accel_segments: u64,
    /// CPU segments run as planned.
    pub cpu_segments: u64,
    /// Accelerator segments run on the CPU instead (after a failure, or while the
    /// accelerator waits to be created again).
    pub fallback_segments: u64,
    /// Segments that failed because the device was lost.
    pub device_lost: u64,
    /// Segments that failed because the accelerator did not answer in time.
    pub timeouts: u64,
    /// Segments that failed otherwise.
    pub errors: u64,
    /// Failed attempts to create the accelerator (at load, or again after a failure).
    pub create_failures: u64,
    /// Accelerators created again after a failure.
    pub recreations: u64,
    /// Whether an accelerator is in use now (false on the CPU backend, when every op runs
    /// on the CPU, and while a failed accelerator waits to be created again).
    pub accelerating: bool,
}

/// Copy what model `h`'s backend did since it was chosen into `out` (see
/// `CairnBackendStats`; on the CPU backend only `requests` counts).
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_model_backend_stats(
    h: u64,
    out: *mut CairnBackendStats,
) -> CairnStatus {
    guard(|| {
        need(out, "out")?;
        let m = crate::model::model(h)?;
        let stats = lock(&m).backend_stats();
        // SAFETY: the caller promises `out` is writable.
        unsafe { *out = stats };
        Ok(())
    })
}

// SAFETY: the buffers are owned by this object alone; the driver, its ONNX Runtime
// sessions or its wgpu device are used under the model's lock, one thread at a time (ORT
// sessions and wgpu objects may be used from any thread).
#[cfg(any(feature = "ort", feature = "gpu"))]
unsafe impl Send for Accel {}

/// Choose the backend model `h` runs on: `"cpu"` (the default); `"ort"` / `"ort:EP"` (EP:
/// cpu, xnnpack, nnapi, qnn, coreml, openvino) where the library was built with the cargo
/// feature `ort`; `"gpu"` (Vulkan, Metal or D3D12 through wgpu) where it was built with the
/// cargo feature `gpu`. A backend not in this build, or an unknown name, is
/// `CAIRN_STATUS_BACKEND_UNAVAILABLE` (the model keeps its backend). The ops the
/// accelerator covers run there and the rest on the CPU; a failure mid-request reruns that
/// part on the CPU, so the request completes. When the accelerator cannot be used as asked
/// (an execution provider the ONNX Runtime library lacks: its CPU provider instead; no
/// ONNX Runtime library, or no GPU adapter: every op on the CPU) the call returns
/// `CAIRN_STATUS_OK` and `cairn_last_error` holds the message. On the GPU, int8 outputs
/// equal the CPU's bit for bit; through ORT, within 1 LSB.
///
/// # Safety
/// `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn cairn_model_set_backend(
    h: u64,
    name: *const std::ffi::c_char,
) -> CairnStatus {
    guard(|| {
        need(name, "name")?;
        // SAFETY: the caller promises a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| {
                (
                    CairnStatus::BackendUnavailable,
                    "backend name is not UTF-8".to_string(),
                )
            })?;
        let m = crate::model::model(h)?;
        let mut m = lock(&m);
        let note = match name {
            "cpu" => {
                m.set_accel(None);
                None
            }
            #[cfg(feature = "ort")]
            n if n == "ort" || n.starts_with("ort:") => {
                let (a, note) = Accel::ort(m.parsed(), n)?;
                m.set_accel(Some(a));
                note
            }
            #[cfg(not(feature = "ort"))]
            n if n == "ort" || n.starts_with("ort:") => {
                return Err((
                    CairnStatus::BackendUnavailable,
                    "this cairn library was built without ONNX Runtime (cargo feature `ort` of cairn-ffi)".into(),
                ))
            }
            #[cfg(feature = "gpu")]
            "gpu" => {
                let (a, note) = Accel::gpu(m.parsed())?;
                m.set_accel(Some(a));
                note
            }
            #[cfg(not(feature = "gpu"))]
            "gpu" => {
                return Err((
                    CairnStatus::BackendUnavailable,
                    "this cairn library was built without the gpu backend (cargo feature `gpu` of cairn-ffi)".into(),
                ))
            }
            other => {
                return Err((
                    CairnStatus::BackendUnavailable,
                    format!("unknown backend '{other}': cpu, gpu, ort or ort:EP"),
                ))
            }
        };
        if let Some(note) = note {
            LAST_ERROR.with(|e| *e.borrow_mut() = note);
        }
        Ok(())
    })
}

/// The driver `cairn_model_set_backend(m, "gpu")` holds, with a device that is lost in the
/// middle of the second request: every request completes with the CPU's outputs, and the
/// counters say what happened. (The C ABI has no fault hook; this is the same `Driver`.)
#[cfg(all(test, feature = "gpu"))]
mod tests {
    use cairn_core::accel::AccelError;
    use cairn_kernels::hetero::fault::{FaultInjector, Schedule};

    use super::Driver;

    #[test]
    fn gpu_device_lost_mid_request_reruns_on_cpu() {
        if cairn_gpu::probe().is_none() {
            assert!(
                std::env::var_os("CAIRN_REQUIRE_GPU").is_none(),
                "CAIRN_REQUIRE_GPU is set but wgpu found no GPU adapter"
            );
            println!("no gpu adapter: skipped");
            return;
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../mcu/assets/cls.cairn");
        let bytes: &'static cairn_core::emit::AlignedBytes = Box::leak(Box::new(
            cairn_core::emit::AlignedBytes::from_slice(&std::fs::read(path).unwrap()),
        ));
        let mut cpu = cairn_kernels::host::HostModel::new(bytes.as_slice()).unwrap();
        let model = cpu.model();
        let n: usize = cpu.inputs()[0].shape.iter().product();
        let xs: Vec<Vec<f32>> = (0..3)
            .map(|k| {
                (0..n)
                    .map(|i| ((i * 31 + k * 7) % 97) as f32 / 48.5 - 1.0)
                    .collect()
            })
            .collect();
        let want: Vec<Vec<Vec<f32>>> = xs.iter().map(|x| cpu.run(&[x]).unwrap()).collect();
        // Segment call 1 is in the second request (the first has at least one segment).
        let f = FaultInjector::new(
            cairn_gpu::GpuFactory::default(),
            Schedule::OnCall(1, AccelError::DeviceLost),
        );
        let (mut d, why) = Driver::new(model, f).unwrap();
        assert!(why.is_none(), "{why:?}");
        for (k, (x, want)) in xs.iter().zip(&want).enumerate() {
            assert_eq!(&d.run(x).unwrap(), want, "request {k}");
        }
        let c = d.hetero.counters();
        assert_eq!(c.requests, 3, "{c:?}");
        assert_eq!(c.device_lost, 1, "{c:?}");
        // Only the injected failure: the other segments ran on the GPU.
        assert_eq!(c.faults(), 1, "{c:?}");
        assert!(c.accel_segments >= 2, "{c:?}");
        assert!(c.fallback_segments >= 1, "{c:?}");
        assert_eq!(d.hetero.factory().injected().device_lost, 1);
        // The C ABI's view of the same counters.
        let st = d.stats();
        assert_eq!((st.requests, st.device_lost), (3, 1), "{st:?}");
        assert_eq!(st.fallback_segments, c.fallback_segments, "{st:?}");
    }
}

//! The backend a model runs on: `cpu` (always), or `ort[:EP]` (ONNX Runtime with an
//! execution provider: `ort:nnapi`, `ort:qnn` on Android, `ort:coreml` on iOS,
//! `ort:xnnpack`, …) in a library built with the cargo feature `ort`. Device and phone
//! builds without the feature link no ONNX Runtime code; asking them for `ort` is
//! `CAIRN_STATUS_BACKEND_UNAVAILABLE`.
//!
//! With `ort`, the model runs through the heterogeneous driver: the ops the QDQ export
//! covers run in ONNX Runtime, the rest on cairn's CPU kernels; an ORT failure reruns that
//! segment on the CPU (the request completes), a missing execution provider falls back to
//! ORT's CPU provider (`cairn_last_error` says so after `cairn_model_set_backend`), and no
//! ONNX Runtime library at all leaves every op on the CPU.

use crate::*;

/// The ORT driver of one model (the cargo feature `ort`).
#[cfg(feature = "ort")]
pub(crate) struct Accel {
    hetero: std::mem::ManuallyDrop<
        cairn_kernels::hetero::Hetero<
            'static,
            'static,
            'static,
            cairn_kernels::CpuBackend,
            cairn_ort::OrtFactory,
        >,
    >,
    arena: *mut [u8],
    staging: *mut [u8],
}

#[cfg(feature = "ort")]
impl Drop for Accel {
    fn drop(&mut self) {
        // SAFETY: the driver (the only borrower of the buffers) goes first; both buffers
        // came from `Box::into_raw` in `Accel::new` and are freed once, here.
        unsafe {
            std::mem::ManuallyDrop::drop(&mut self.hetero);
            drop(Box::from_raw(self.arena));
            drop(Box::from_raw(self.staging));
        }
    }
}

/// Without the cargo feature `ort` there is no accelerator to hold.
#[cfg(not(feature = "ort"))]
pub(crate) enum Accel {}

#[cfg(feature = "ort")]
impl Accel {
    /// The driver for `model` (whose bytes outlive it: the caller drops it first) with
    /// the factory named by `name`; also the provider note, if the EP fell back.
    pub(crate) fn new(
        model: cairn_core::Model<'static>,
        name: &str,
    ) -> Result<(Accel, Option<String>), Fail> {
        let f = cairn_ort::OrtFactory::from_backend_name(name).ok_or((
            CairnStatus::BackendUnavailable,
            format!("unknown backend '{name}': cpu, ort or ort:EP (cpu, xnnpack, nnapi, qnn, coreml, openvino)"),
        ))?;
        let arena = Box::into_raw(
            vec![0u8; model.arena_bytes() + cairn_core::format::ALIGN].into_boxed_slice(),
        );
        let staging = Box::into_raw(vec![0u8; model.arena_bytes()].into_boxed_slice());
        // SAFETY: both buffers live until `Accel` drops them, after the driver.
        let (a, s) = unsafe { (&mut *arena, &mut *staging) };
        let h = match cairn_kernels::hetero::Hetero::new(
            model,
            cairn_kernels::CpuBackend,
            a,
            s,
            f,
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
        let mut note = h.factory().ep_note().map(str::to_string);
        if let Some(why) = h.cpu_only_reason() {
            note = Some(format!("{name}: every op runs on the cpu: {why}"));
        }
        Ok((
            Accel {
                hetero: std::mem::ManuallyDrop::new(h),
                arena,
                staging,
            },
            note,
        ))
    }

    /// One request: `x` to input 0, every output as f32.
    pub(crate) fn run(&mut self, x: &[f32]) -> Result<Vec<Vec<f32>>, Fail> {
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

#[cfg(not(feature = "ort"))]
impl Accel {
    pub(crate) fn run(&mut self, _: &[f32]) -> Result<Vec<Vec<f32>>, Fail> {
        match *self {}
    }
}

// SAFETY: the buffers are owned by this object alone; the driver and its ONNX Runtime
// sessions are used under the model's lock, one thread at a time (ORT sessions may be
// used from any thread).
#[cfg(feature = "ort")]
unsafe impl Send for Accel {}

/// Choose the backend model `h` runs on: `"cpu"` (the default), or `"ort"` / `"ort:EP"`
/// (EP: cpu, xnnpack, nnapi, qnn, coreml, openvino) where the library was built with the
/// cargo feature `ort`; else `CAIRN_STATUS_BACKEND_UNAVAILABLE`. With ORT, the ops its
/// export covers run there and the rest on the CPU; an execution provider the ONNX Runtime
/// library lacks falls back to its CPU provider: the call then returns `CAIRN_STATUS_OK`
/// and `cairn_last_error` holds the message.
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
        match name {
            "cpu" => {
                m.set_accel(None);
                Ok(())
            }
            #[cfg(feature = "ort")]
            n if n == "ort" || n.starts_with("ort:") => {
                let (a, note) = Accel::new(m.parsed(), n)?;
                m.set_accel(Some(a));
                if let Some(note) = note {
                    LAST_ERROR.with(|e| *e.borrow_mut() = note);
                }
                Ok(())
            }
            n if n == "ort" || n.starts_with("ort:") => Err((
                CairnStatus::BackendUnavailable,
                "this cairn library was built without ONNX Runtime (cargo feature `ort` of cairn-ffi)".into(),
            )),
            "gpu" => Err((
                CairnStatus::BackendUnavailable,
                "the gpu backend is not in the C library yet: use cpu or ort[:EP]".into(),
            )),
            other => Err((
                CairnStatus::BackendUnavailable,
                format!("unknown backend '{other}': cpu, ort or ort:EP"),
            )),
        }
    })
}

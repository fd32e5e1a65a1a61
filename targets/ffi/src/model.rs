//! Models: load, sizes, run, free.

use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex};

use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;

use crate::*;

/// A model and the bytes it borrows (leaked while the model lives, reclaimed on drop).
pub(crate) struct ModelObj {
    model: ManuallyDrop<HostModel<'static>>,
    bytes: *mut AlignedBytes,
    /// The accelerated driver `cairn_model_set_backend` chose (`None`: the CPU).
    accel: Option<crate::backend::Accel>,
    /// Requests run on the CPU backend since it was chosen (the accelerated driver counts
    /// its own).
    cpu_requests: u64,
}

impl ModelObj {
    /// The checked model over the object's bytes (alive until the object drops, after
    /// the accelerated driver that borrows them).
    #[cfg_attr(not(any(feature = "ort", feature = "gpu")), allow(dead_code))]
    pub(crate) fn parsed(&self) -> cairn_core::Model<'static> {
        self.model.model()
    }
    pub(crate) fn set_accel(&mut self, a: Option<crate::backend::Accel>) {
        self.accel = a;
        self.cpu_requests = 0;
    }
    /// What happened on the chosen backend since it was chosen.
    pub(crate) fn backend_stats(&self) -> crate::backend::CairnBackendStats {
        match &self.accel {
            Some(a) => a.stats(),
            None => crate::backend::CairnBackendStats {
                requests: self.cpu_requests,
                ..Default::default()
            },
        }
    }
}

// SAFETY: `bytes` is owned by this object alone (nothing else holds the pointer).
unsafe impl Send for ModelObj {}

impl Drop for ModelObj {
    fn drop(&mut self) {
        // SAFETY: the model (the only borrower of the bytes) goes first; `bytes` came from
        // `Box::into_raw` in `cairn_model_create` and is freed once, here.
        unsafe {
            // The accelerated driver borrows the bytes too: it goes first.
            self.accel = None;
            ManuallyDrop::drop(&mut self.model);
            drop(Box::from_raw(self.bytes));
        }
    }
}

pub(crate) fn model(h: u64) -> Result<Arc<Mutex<ModelObj>>, Fail> {
    get(|r| &r.models, h, "model")
}

/// Load a `.cairn` model (the bytes are copied; every check happens here).
///
/// # Safety
/// `bytes` points to `len` readable bytes; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_model_create(
    bytes: *const u8,
    len: usize,
    out: *mut u64,
) -> CairnStatus {
    guard(|| {
        need(bytes, "bytes")?;
        need(out, "out")?;
        // SAFETY: the caller promises `len` readable bytes.
        let src = unsafe { std::slice::from_raw_parts(bytes, len) };
        let owned = Box::into_raw(Box::new(AlignedBytes::from_slice(src)));
        // SAFETY: `owned` stays alive until the ModelObj drops it, after the model.
        let view: &'static [u8] = unsafe { (*owned).as_slice() };
        let m = match HostModel::new(view) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: nothing borrows the bytes any more.
                drop(unsafe { Box::from_raw(owned) });
                return Err((CairnStatus::BadModel, format!("model refused: {e:?}")));
            }
        };
        let obj = ModelObj {
            model: ManuallyDrop::new(m),
            bytes: owned,
            accel: None,
            cpu_requests: 0,
        };
        let h = add(|r| &mut r.models, obj);
        // SAFETY: checked non-null above.
        unsafe { *out = h };
        Ok(())
    })
}

/// Number of f32 values of input 0, or of output `index` (`is_output` ≠ 0).
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_model_size(
    h: u64,
    is_output: i32,
    index: usize,
    out: *mut usize,
) -> CairnStatus {
    guard(|| {
        need(out, "out")?;
        let m = model(h)?;
        let m = lock(&m);
        let io = if is_output != 0 {
            m.model.outputs()
        } else {
            m.model.inputs()
        };
        let info = io.get(index).ok_or((
            CairnStatus::WrongLength,
            format!(
                "no {} {index}",
                if is_output != 0 { "output" } else { "input" }
            ),
        ))?;
        // SAFETY: checked non-null above.
        unsafe { *out = info.shape.iter().product() };
        Ok(())
    })
}

/// Run on `input` (f32 × `input_len`, the model's single input) and copy output
/// `output_index` (dequantized to f32) into `output` (capacity `output_cap`); its length
/// goes to `output_len`.
///
/// # Safety
/// `input` holds `input_len` floats, `output` has room for `output_cap`; `output_len` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_model_run(
    h: u64,
    input: *const f32,
    input_len: usize,
    output_index: usize,
    output: *mut f32,
    output_cap: usize,
    output_len: *mut usize,
) -> CairnStatus {
    guard(|| {
        need(input, "input")?;
        need(output, "output")?;
        need(output_len, "output_len")?;
        let m = model(h)?;
        let mut m = lock(&m);
        let want: usize = m
            .model
            .inputs()
            .first()
            .map_or(0, |i| i.shape.iter().product());
        if input_len != want || m.model.inputs().len() != 1 {
            return Err((
                CairnStatus::WrongLength,
                format!("the model takes one input of {want} floats, got {input_len}"),
            ));
        }
        // SAFETY: the caller promises `input_len` readable floats.
        let x = unsafe { std::slice::from_raw_parts(input, input_len) };
        let ys = match m.accel.as_mut() {
            Some(a) => a.run(x)?,
            None => {
                m.cpu_requests += 1;
                m.model
                    .run(&[x])
                    .map_err(|e| (CairnStatus::RunFailed, format!("run failed: {e:?}")))?
            }
        };
        let y = ys.get(output_index).ok_or((
            CairnStatus::WrongLength,
            format!("no output {output_index}"),
        ))?;
        if y.len() > output_cap {
            return Err((
                CairnStatus::WrongLength,
                format!(
                    "output {output_index} has {} floats, room for {output_cap}",
                    y.len()
                ),
            ));
        }
        // SAFETY: room for `output_cap` ≥ y.len() floats; `output_len` writable.
        unsafe {
            std::ptr::copy_nonoverlapping(y.as_ptr(), output, y.len());
            *output_len = y.len();
        }
        Ok(())
    })
}

/// Free a model. Its handle is invalid afterwards (`CAIRN_STATUS_BAD_HANDLE`).
#[no_mangle]
pub extern "C" fn cairn_model_free(h: u64) -> CairnStatus {
    free(|r| &mut r.models, h, "model")
}

/// Split the model's big ops across `threads` threads (a pool the model owns; 0 and 1: the
/// calling thread alone, the default). Outputs are the same bytes for every count. More
/// than 256 threads is `CAIRN_STATUS_WRONG_LENGTH`; threads the system refuses to start,
/// `CAIRN_STATUS_RUN_FAILED` (the model keeps its previous setting either way).
#[no_mangle]
pub extern "C" fn cairn_model_set_threads(h: u64, threads: u32) -> CairnStatus {
    guard(|| {
        let m = model(h)?;
        let mut m = lock(&m);
        m.model.set_threads(threads as usize).map_err(|e| {
            let status = match e {
                cairn_kernels::par::PoolError::TooMany { .. } => CairnStatus::WrongLength,
                _ => CairnStatus::RunFailed,
            };
            (status, format!("threads: {e}"))
        })
    })
}

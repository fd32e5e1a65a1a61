//! cairn's C ABI, built as a static library (`libcairn.a`) for Android, iOS and Linux
//! boards. The header is `targets/ffi/include/cairn.h` (cbindgen; a test checks it is
//! current).
//!
//! Conventions:
//! - Objects are opaque handles (`uint64_t`, never 0, never reused): a freed or unknown
//!   handle is `CAIRN_STATUS_BAD_HANDLE`, not undefined behaviour.
//! - Every function returns a `CairnStatus`; `cairn_last_error` copies the calling
//!   thread's message for the last failure.
//! - No panic crosses the boundary: each entry point catches it (`CAIRN_STATUS_PANIC`).
//! - Thread safety: every function may be called from any thread; calls on the same handle
//!   are serialized by a lock held by that handle, calls on different handles run in
//!   parallel. `cairn_last_error` is per thread.
//!
//! Status of the ABI: models (create, sizes, run, free), memory stores in RAM (create, add,
//! query, length, free). Learning steps and sync bundles are not in the C ABI yet.

use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;
use cairn_memory::flash::RamFlash;
use cairn_memory::search::{Filter, Scoring};
use cairn_memory::{Config, Record, Store};

/// What a call did.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CairnStatus {
    Ok = 0,
    /// A pointer argument was null.
    NullPointer = 1,
    /// The handle is unknown: never created, already freed, or of another kind.
    BadHandle = 2,
    /// The model bytes were refused (see `cairn_last_error`).
    BadModel = 3,
    /// A length argument does not match (input size, output capacity, dimension).
    WrongLength = 4,
    /// The model failed while running.
    RunFailed = 5,
    /// The memory store refused the operation.
    StoreFailed = 6,
    /// A bug inside cairn was caught at the boundary.
    Panic = 7,
}

type Fail = (CairnStatus, String);

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Run `f`, turning errors and panics into a status and the thread's last error.
fn guard(f: impl FnOnce() -> Result<(), Fail>) -> CairnStatus {
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err((CairnStatus::Panic, format!("internal error: {msg}")))
    });
    match r {
        Ok(()) => CairnStatus::Ok,
        Err((s, m)) => {
            LAST_ERROR.with(|e| *e.borrow_mut() = m);
            s
        }
    }
}

fn need<T>(p: *const T, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        Err((CairnStatus::NullPointer, format!("{what} is null")))
    } else {
        Ok(())
    }
}

/// A model and the bytes it borrows (leaked while the model lives, reclaimed on drop).
struct ModelObj {
    model: ManuallyDrop<HostModel<'static>>,
    bytes: *mut AlignedBytes,
}

// SAFETY: `bytes` is owned by this object alone (nothing else holds the pointer).
unsafe impl Send for ModelObj {}

impl Drop for ModelObj {
    fn drop(&mut self) {
        // SAFETY: the model (the only borrower of the bytes) goes first; `bytes` came from
        // `Box::into_raw` in `cairn_model_create` and is freed once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.model);
            drop(Box::from_raw(self.bytes));
        }
    }
}

type MemObj = Store<RamFlash<65536>>;

#[derive(Default)]
struct Registry {
    next: u64,
    models: HashMap<u64, Arc<Mutex<ModelObj>>>,
    memories: HashMap<u64, Arc<Mutex<MemObj>>>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while a lock was held leaves the data as it was; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn model(h: u64) -> Result<Arc<Mutex<ModelObj>>, Fail> {
    lock(registry())
        .models
        .get(&h)
        .cloned()
        .ok_or((CairnStatus::BadHandle, format!("no model with handle {h}")))
}

fn memory(h: u64) -> Result<Arc<Mutex<MemObj>>, Fail> {
    lock(registry())
        .memories
        .get(&h)
        .cloned()
        .ok_or((CairnStatus::BadHandle, format!("no memory with handle {h}")))
}

fn new_handle(r: &mut Registry) -> u64 {
    r.next += 1;
    r.next
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
        };
        let mut r = lock(registry());
        let h = new_handle(&mut r);
        r.models.insert(h, Arc::new(Mutex::new(obj)));
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
        let ys = m
            .model
            .run(&[x])
            .map_err(|e| (CairnStatus::RunFailed, format!("run failed: {e:?}")))?;
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
    guard(|| {
        lock(registry())
            .models
            .remove(&h)
            .map(|_| ())
            .ok_or((CairnStatus::BadHandle, format!("no model with handle {h}")))
    })
}

/// A memory store in RAM for `dim`-wide embeddings, at most `max_records` (the least
/// valuable is evicted beyond).
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_memory_create(
    dim: usize,
    max_records: usize,
    out: *mut u64,
) -> CairnStatus {
    guard(|| {
        need(out, "out")?;
        if dim == 0 || dim > 4096 || max_records == 0 {
            return Err((
                CairnStatus::WrongLength,
                format!("dim {dim} / max_records {max_records}"),
            ));
        }
        let sectors = (max_records * (dim + 80)).div_ceil(65536) + 4;
        let (st, _) = Store::open(
            RamFlash::<65536>::new(sectors),
            Config {
                dim,
                max_records,
                max_payload: 0,
            },
        )
        .map_err(|e| (CairnStatus::StoreFailed, format!("{e:?}")))?;
        let mut r = lock(registry());
        let h = new_handle(&mut r);
        r.memories.insert(h, Arc::new(Mutex::new(st)));
        // SAFETY: checked non-null above.
        unsafe { *out = h };
        Ok(())
    })
}

fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let m = v.iter().fold(0f32, |a, &x| a.max(x.abs()));
    let s = if m > 0.0 && m.is_finite() {
        m / 127.0
    } else {
        1.0
    };
    (
        v.iter()
            .map(|&x| (x / s).round().clamp(-127.0, 127.0) as i8)
            .collect(),
        s,
    )
}

/// Store an embedding (f32, quantized to int8 here) with a label; its 16-byte content id
/// goes to `id_out` (may be null).
///
/// # Safety
/// `embedding` holds `dim` floats; `id_out` is null or has room for 16 bytes.
#[no_mangle]
pub unsafe extern "C" fn cairn_memory_add(
    h: u64,
    embedding: *const f32,
    dim: usize,
    label: u16,
    importance: u8,
    timestamp_ms: u64,
    id_out: *mut u8,
) -> CairnStatus {
    guard(|| {
        need(embedding, "embedding")?;
        let st = memory(h)?;
        let mut st = lock(&st);
        if dim != st.config().dim {
            return Err((
                CairnStatus::WrongLength,
                format!("embedding of {dim}, the store holds {}", st.config().dim),
            ));
        }
        // SAFETY: the caller promises `dim` readable floats.
        let v = unsafe { std::slice::from_raw_parts(embedding, dim) };
        if v.iter().any(|x| !x.is_finite()) {
            return Err((
                CairnStatus::WrongLength,
                "the embedding is not finite".into(),
            ));
        }
        let (e, scale) = quantize(v);
        let r = Record {
            origin: 0,
            timestamp_ms,
            label,
            importance,
            meta: [0; 4],
            scale,
            embedding: &e,
            payload: &[],
        };
        let id = st
            .append(&r)
            .map_err(|e| (CairnStatus::StoreFailed, format!("{e:?}")))?;
        if !id_out.is_null() {
            // SAFETY: room for 16 bytes.
            unsafe { std::ptr::copy_nonoverlapping(id.as_ptr(), id_out, 16) };
        }
        Ok(())
    })
}

/// The `k` records most similar to `query` (cosine): ids (16 bytes each) into `ids_out`,
/// labels into `labels_out`, cosines into `scores_out` (each may be null); the number
/// found into `found`.
///
/// # Safety
/// `query` holds `dim` floats; non-null outputs have room for `k` entries; `found` writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_memory_query(
    h: u64,
    query: *const f32,
    dim: usize,
    k: usize,
    ids_out: *mut u8,
    labels_out: *mut u16,
    scores_out: *mut f32,
    found: *mut usize,
) -> CairnStatus {
    guard(|| {
        need(query, "query")?;
        need(found, "found")?;
        let st = memory(h)?;
        let st = lock(&st);
        if dim != st.config().dim {
            return Err((
                CairnStatus::WrongLength,
                format!("query of {dim}, the store holds {}", st.config().dim),
            ));
        }
        // SAFETY: `dim` readable floats.
        let (q, _) = quantize(unsafe { std::slice::from_raw_parts(query, dim) });
        let hits = st.search(&q, k, &Filter::default(), &Scoring::default());
        for (i, hit) in hits.iter().enumerate() {
            let label = st
                .metas()
                .iter()
                .find(|m| m.id == hit.id)
                .map_or(0, |m| m.label);
            // SAFETY: room for k ≥ hits.len() entries in every non-null output.
            unsafe {
                if !ids_out.is_null() {
                    std::ptr::copy_nonoverlapping(hit.id.as_ptr(), ids_out.add(16 * i), 16);
                }
                if !labels_out.is_null() {
                    *labels_out.add(i) = label;
                }
                if !scores_out.is_null() {
                    *scores_out.add(i) = hit.cosine;
                }
            }
        }
        // SAFETY: checked non-null above.
        unsafe { *found = hits.len() };
        Ok(())
    })
}

/// Records in the store.
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_memory_len(h: u64, out: *mut usize) -> CairnStatus {
    guard(|| {
        need(out, "out")?;
        let st = memory(h)?;
        // SAFETY: checked non-null above.
        unsafe { *out = lock(&st).len() };
        Ok(())
    })
}

/// Free a memory store. Its handle is invalid afterwards.
#[no_mangle]
pub extern "C" fn cairn_memory_free(h: u64) -> CairnStatus {
    guard(|| {
        lock(registry())
            .memories
            .remove(&h)
            .map(|_| ())
            .ok_or((CairnStatus::BadHandle, format!("no memory with handle {h}")))
    })
}

/// Copy the calling thread's last error message (NUL-terminated, truncated to `cap`) into
/// `buf`; returns the message's full length in bytes (without the NUL). `buf` may be null
/// to ask for the length.
///
/// # Safety
/// `buf` is null or has room for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn cairn_last_error(buf: *mut std::ffi::c_char, cap: usize) -> usize {
    LAST_ERROR.with(|e| {
        let e = e.borrow();
        let b = e.as_bytes();
        if !buf.is_null() && cap > 0 {
            let n = b.len().min(cap - 1);
            // SAFETY: room for `cap` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(b.as_ptr(), buf as *mut u8, n);
                *buf.add(n) = 0;
            }
        }
        b.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_bytes() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../mcu/assets/digits.cairn"
        ))
        .unwrap()
    }

    fn last() -> String {
        let mut b = vec![0 as std::ffi::c_char; 256];
        // SAFETY: 256 bytes of room.
        let n = unsafe { cairn_last_error(b.as_mut_ptr(), b.len()) };
        let s: Vec<u8> = b[..n.min(255)].iter().map(|&c| c as u8).collect();
        String::from_utf8(s).unwrap()
    }

    /// Every misuse is a status (and a message), never a crash.
    #[test]
    fn misuse_returns_error_codes() {
        let bytes = model_bytes();
        let mut h = 0u64;
        unsafe {
            assert_eq!(
                cairn_model_create(std::ptr::null(), 3, &mut h),
                CairnStatus::NullPointer
            );
            assert_eq!(
                cairn_model_create(bytes.as_ptr(), bytes.len(), std::ptr::null_mut()),
                CairnStatus::NullPointer
            );
            // A corrupt model: one byte flipped.
            let mut bad = bytes.clone();
            bad[200] ^= 0x40;
            assert_eq!(
                cairn_model_create(bad.as_ptr(), bad.len(), &mut h),
                CairnStatus::BadModel
            );
            assert!(last().contains("model refused"), "{}", last());
            assert_eq!(
                cairn_model_create(bytes.as_ptr(), 10, &mut h),
                CairnStatus::BadModel
            );
            assert_eq!(
                cairn_model_create(bytes.as_ptr(), bytes.len(), &mut h),
                CairnStatus::Ok
            );
            let x = [0.5f32; 64];
            let mut y = [0f32; 10];
            let mut n = 0usize;
            // Wrong lengths.
            assert_eq!(
                cairn_model_run(h, x.as_ptr(), 63, 0, y.as_mut_ptr(), 10, &mut n),
                CairnStatus::WrongLength
            );
            assert_eq!(
                cairn_model_run(h, x.as_ptr(), 64, 0, y.as_mut_ptr(), 9, &mut n),
                CairnStatus::WrongLength
            );
            assert_eq!(
                cairn_model_run(h, x.as_ptr(), 64, 7, y.as_mut_ptr(), 10, &mut n),
                CairnStatus::WrongLength
            );
            assert_eq!(
                cairn_model_run(h, std::ptr::null(), 64, 0, y.as_mut_ptr(), 10, &mut n),
                CairnStatus::NullPointer
            );
            assert_eq!(
                cairn_model_run(h, x.as_ptr(), 64, 0, y.as_mut_ptr(), 10, &mut n),
                CairnStatus::Ok
            );
            assert_eq!(n, 10);
            // A memory handle is not a model handle; a freed handle is gone.
            let mut mh = 0u64;
            assert_eq!(cairn_memory_create(32, 100, &mut mh), CairnStatus::Ok);
            assert_eq!(
                cairn_model_run(mh, x.as_ptr(), 64, 0, y.as_mut_ptr(), 10, &mut n),
                CairnStatus::BadHandle
            );
            assert_eq!(cairn_model_free(h), CairnStatus::Ok);
            assert_eq!(cairn_model_free(h), CairnStatus::BadHandle);
            assert_eq!(
                cairn_model_run(h, x.as_ptr(), 64, 0, y.as_mut_ptr(), 10, &mut n),
                CairnStatus::BadHandle
            );
            assert!(last().contains("no model"), "{}", last());
            // Memory misuse.
            let e = [1f32; 31];
            assert_eq!(
                cairn_memory_add(mh, e.as_ptr(), 31, 1, 1, 0, std::ptr::null_mut()),
                CairnStatus::WrongLength
            );
            let nan = [f32::NAN; 32];
            assert_eq!(
                cairn_memory_add(mh, nan.as_ptr(), 32, 1, 1, 0, std::ptr::null_mut()),
                CairnStatus::WrongLength
            );
            assert_eq!(
                cairn_memory_add(mh, std::ptr::null(), 32, 1, 1, 0, std::ptr::null_mut()),
                CairnStatus::NullPointer
            );
            assert_eq!(
                cairn_memory_create(0, 10, &mut mh),
                CairnStatus::WrongLength
            );
            assert_eq!(cairn_memory_free(999_999), CairnStatus::BadHandle);
        }
    }

    /// The C header in the repository is what cbindgen makes from this file today.
    #[test]
    fn header_is_current() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let cfg = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).unwrap();
        let mut out = Vec::new();
        cbindgen::Builder::new()
            .with_crate(dir)
            .with_config(cfg)
            .generate()
            .unwrap()
            .write(&mut out);
        let path = format!("{dir}/include/cairn.h");
        if std::env::var("CAIRN_BLESS").is_ok() {
            std::fs::write(&path, &out).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == out, "targets/ffi/include/cairn.h is stale: CAIRN_BLESS=1 cargo test -p cairn-ffi header_is_current");
    }
}

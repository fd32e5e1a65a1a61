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
//! The ABI: models (create, sizes, run, free); memory stores in RAM (create, add, query,
//! length, free); a learner (a classifier head trained on a memory store's records: create,
//! train steps, predict, free); sync nodes (a signed replica of the node's memories: create,
//! add a memory store, export a bundle, import a bundle, free). Network sessions are not in
//! the C ABI (apps use bundles, or the `cairn sync` transports).

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
    /// Learning refused the operation (see `cairn_last_error`).
    LearnFailed = 8,
    /// A sync bundle or node operation was refused.
    SyncFailed = 9,
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

struct MemObj {
    store: Store<RamFlash<65536>>,
    /// The node id records are stored under (`cairn_memory_set_origin`).
    origin: u64,
}

/// A classifier head trained on memories; owns its arena.
struct LearnObj {
    shape: cairn_learn::AdapterShape,
    cfg: cairn_learn::TrainConfig,
    arena: Vec<u32>,
    params: Vec<f32>,
    steps: u64,
}

struct SyncObj {
    key: ed25519_dalek::SigningKey,
    fleet: Vec<u8>,
    authority: [u8; 32],
    replica: cairn_sync::replica::Replica,
}

#[derive(Default)]
struct Registry {
    next: u64,
    models: HashMap<u64, Arc<Mutex<ModelObj>>>,
    memories: HashMap<u64, Arc<Mutex<MemObj>>>,
    learners: HashMap<u64, Arc<Mutex<LearnObj>>>,
    nodes: HashMap<u64, Arc<Mutex<SyncObj>>>,
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
        let (store, _) = Store::open(
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
        r.memories
            .insert(h, Arc::new(Mutex::new(MemObj { store, origin: 0 })));
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
        let m = memory(h)?;
        let mut m = lock(&m);
        let origin = m.origin;
        let st = &mut m.store;
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
            origin,
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
        let m = memory(h)?;
        let m = lock(&m);
        let st = &m.store;
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
        unsafe { *out = lock(&st).store.len() };
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

/// Store this memory's future records under node id `origin` (e.g. the sync node's id from
/// `cairn_sync_node_create`, so the node can sign them). Default 0.
#[no_mangle]
pub extern "C" fn cairn_memory_set_origin(h: u64, origin: u64) -> CairnStatus {
    guard(|| {
        let m = memory(h)?;
        lock(&m).origin = origin;
        Ok(())
    })
}

fn learner(h: u64) -> Result<Arc<Mutex<LearnObj>>, Fail> {
    lock(registry()).learners.get(&h).cloned().ok_or((
        CairnStatus::BadHandle,
        format!("no learner with handle {h}"),
    ))
}

/// A learner: a `classes`-way classifier head over `dim`-wide features (Adam, batch
/// `batch`), its arena planned and allocated here.
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_learn_create(
    dim: usize,
    classes: usize,
    batch: usize,
    out: *mut u64,
) -> CairnStatus {
    guard(|| {
        need(out, "out")?;
        if dim == 0 || dim > 4096 || !(2..=1024).contains(&classes) || batch == 0 || batch > 1024 {
            return Err((
                CairnStatus::WrongLength,
                format!("dim {dim}, classes {classes}, batch {batch}"),
            ));
        }
        let shape = cairn_learn::AdapterShape {
            fin: dim,
            hidden: 0,
            rank: 0,
            classes,
            batch,
        };
        let cfg = cairn_learn::TrainConfig {
            optimizer: cairn_learn::Optimizer::adam(0.01),
            clip_norm: 5.0,
            weight_decay: 0.0,
            steps: 0,
            replay_per_batch: 0,
            lora_scale: 1.0,
            distill: 0.0,
            seed: 1,
        };
        let words = cairn_learn::learner::arena_bytes(shape, &cfg).div_ceil(4);
        let obj = LearnObj {
            shape,
            cfg,
            arena: vec![0; words],
            params: vec![0.0; shape.params()],
            steps: 0,
        };
        let mut r = lock(registry());
        let h = new_handle(&mut r);
        r.learners.insert(h, Arc::new(Mutex::new(obj)));
        // SAFETY: checked non-null above.
        unsafe { *out = h };
        Ok(())
    })
}

fn with_learner<T>(
    o: &mut LearnObj,
    f: impl FnOnce(&mut cairn_learn::Learner<'_, '_>) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let arena: &mut [u8] = bytemuck_u8(&mut o.arena);
    let mut l = cairn_learn::Learner::new(o.shape, None, o.cfg, arena)
        .map_err(|e| (CairnStatus::LearnFailed, format!("{e:?}")))?;
    l.set_params(cairn_learn::learner::Slot::Active, &o.params)
        .map_err(|e| (CairnStatus::LearnFailed, format!("{e:?}")))?;
    f(&mut l)
}

fn bytemuck_u8(v: &mut [u32]) -> &mut [u8] {
    let len = v.len() * 4;
    // SAFETY: the same memory viewed as bytes; u8 has no alignment or validity rules.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, len) }
}

/// Train `steps` steps on the records of memory store `mem` (their labels are the
/// targets); the mean loss of the last step goes to `loss_out` (may be null). The learner
/// keeps its weights between calls.
///
/// # Safety
/// `loss_out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_learn_train(
    h: u64,
    mem: u64,
    steps: u32,
    loss_out: *mut f32,
) -> CairnStatus {
    guard(|| {
        let l = learner(h)?;
        let m = memory(mem)?;
        let mut l = lock(&l);
        let m = lock(&m);
        let st = &m.store;
        let d = st.config().dim;
        if d != l.shape.fin || st.is_empty() {
            return Err((
                CairnStatus::WrongLength,
                format!(
                    "store of {d}-wide records ({} of them), learner of {}",
                    st.len(),
                    l.shape.fin
                ),
            ));
        }
        if st
            .metas()
            .iter()
            .any(|x| x.label as usize >= l.shape.classes)
        {
            return Err((
                CairnStatus::LearnFailed,
                "a record's label is beyond the learner's classes".into(),
            ));
        }
        let batch = l.shape.batch;
        let samples: Vec<cairn_learn::Sample<'_>> = (0..st.len())
            .map(|i| cairn_learn::replay::sample_of(st, i))
            .collect();
        let start = l.steps;
        let lo = &mut *l;
        let (params, loss) = with_learner(lo, |learner| {
            learner.begin_candidate();
            let mut loss = 0.0;
            for s in 0..steps as u64 {
                let at = ((start + s) as usize * batch) % samples.len();
                let b: Vec<cairn_learn::Sample<'_>> = (0..batch.min(samples.len()))
                    .map(|k| samples[(at + k) % samples.len()])
                    .collect();
                loss = learner
                    .step(&b)
                    .map_err(|e| (CairnStatus::LearnFailed, format!("{e:?}")))?;
            }
            learner.promote();
            Ok((
                learner.params(cairn_learn::learner::Slot::Active).to_vec(),
                loss,
            ))
        })?;
        lo.params = params;
        lo.steps += steps as u64;
        if !loss_out.is_null() {
            // SAFETY: non-null and writable.
            unsafe { *loss_out = loss };
        }
        Ok(())
    })
}

/// The learner's class for `features` (`dim` floats).
///
/// # Safety
/// `features` holds `dim` floats; `class_out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_learn_predict(
    h: u64,
    features: *const f32,
    dim: usize,
    class_out: *mut u16,
) -> CairnStatus {
    guard(|| {
        need(features, "features")?;
        need(class_out, "class_out")?;
        let l = learner(h)?;
        let mut l = lock(&l);
        if dim != l.shape.fin {
            return Err((
                CairnStatus::WrongLength,
                format!("{dim} features, the learner takes {}", l.shape.fin),
            ));
        }
        // SAFETY: `dim` readable floats.
        let v = unsafe { std::slice::from_raw_parts(features, dim) };
        let (e, scale) = quantize(v);
        let c = with_learner(&mut l, |learner| {
            learner
                .predict(
                    cairn_learn::learner::Slot::Active,
                    &cairn_learn::Sample {
                        emb: &e,
                        scale,
                        label: 0,
                    },
                )
                .map_err(|e| (CairnStatus::LearnFailed, format!("{e:?}")))
        })?;
        // SAFETY: checked non-null above.
        unsafe { *class_out = c };
        Ok(())
    })
}

/// Free a learner.
#[no_mangle]
pub extern "C" fn cairn_learn_free(h: u64) -> CairnStatus {
    guard(|| {
        lock(registry()).learners.remove(&h).map(|_| ()).ok_or((
            CairnStatus::BadHandle,
            format!("no learner with handle {h}"),
        ))
    })
}

fn node(h: u64) -> Result<Arc<Mutex<SyncObj>>, Fail> {
    lock(registry()).nodes.get(&h).cloned().ok_or((
        CairnStatus::BadHandle,
        format!("no sync node with handle {h}"),
    ))
}

/// A sync node: its Ed25519 identity (`seed`, 32 bytes), the fleet membership list signed
/// by `authority` (32-byte public key). Its node id (for `cairn_memory_set_origin`) goes to
/// `node_id_out` (may be null).
///
/// # Safety
/// `seed` and `authority` hold 32 bytes, `fleet` holds `fleet_len`; `out` is writable;
/// `node_id_out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_sync_node_create(
    seed: *const u8,
    fleet: *const u8,
    fleet_len: usize,
    authority: *const u8,
    out: *mut u64,
    node_id_out: *mut u64,
) -> CairnStatus {
    guard(|| {
        need(seed, "seed")?;
        need(fleet, "fleet")?;
        need(authority, "authority")?;
        need(out, "out")?;
        // SAFETY: the caller promises the lengths.
        let (seed, fleet, auth) = unsafe {
            (
                std::slice::from_raw_parts(seed, 32),
                std::slice::from_raw_parts(fleet, fleet_len),
                std::slice::from_raw_parts(authority, 32),
            )
        };
        let mut a = [0u8; 32];
        a.copy_from_slice(auth);
        cairn_sync::fleet::Fleet::verify(fleet, &a)
            .map_err(|e| (CairnStatus::SyncFailed, format!("fleet list: {e:?}")))?;
        let mut sd = [0u8; 32];
        sd.copy_from_slice(seed);
        let key = ed25519_dalek::SigningKey::from_bytes(&sd);
        let id = cairn_sync::item::node_id(key.verifying_key().as_bytes());
        let obj = SyncObj {
            key,
            fleet: fleet.to_vec(),
            authority: a,
            replica: Default::default(),
        };
        let mut r = lock(registry());
        let h = new_handle(&mut r);
        r.nodes.insert(h, Arc::new(Mutex::new(obj)));
        // SAFETY: checked non-null above; `node_id_out` null or writable.
        unsafe {
            *out = h;
            if !node_id_out.is_null() {
                *node_id_out = id;
            }
        }
        Ok(())
    })
}

/// Sign this node's records of memory store `mem` (origin = the node id) into its replica;
/// how many were new goes to `added` (may be null).
///
/// # Safety
/// `added` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_sync_add_memory(h: u64, mem: u64, added: *mut usize) -> CairnStatus {
    guard(|| {
        let n = node(h)?;
        let m = memory(mem)?;
        let mut n = lock(&n);
        let mut m = lock(&m);
        let me = cairn_sync::item::node_id(n.key.verifying_key().as_bytes());
        let ids: Vec<_> = m
            .store
            .metas()
            .iter()
            .filter(|x| x.origin == me)
            .map(|x| x.id)
            .collect();
        let mut count = 0;
        let mut buf = vec![0u8; cairn_sync::item::MAX_ITEM];
        for id in ids {
            let Some(body) = m
                .store
                .get(&id)
                .map_err(|e| (CairnStatus::StoreFailed, format!("{e:?}")))?
            else {
                continue;
            };
            let len = cairn_sync::item::sign_into(
                &n.key,
                cairn_sync::item::Kind::Record,
                &body,
                &mut buf,
            )
            .map_err(|e| (CairnStatus::SyncFailed, format!("{e:?}")))?;
            let item = cairn_sync::Item::verify(&buf[..len])
                .map_err(|e| (CairnStatus::SyncFailed, format!("{e:?}")))?;
            if cairn_sync::Store::insert(&mut n.replica, &item)
                .map_err(|e| (CairnStatus::SyncFailed, format!("{e:?}")))?
            {
                count += 1;
            }
        }
        if !added.is_null() {
            // SAFETY: non-null and writable.
            unsafe { *added = count };
        }
        Ok(())
    })
}

/// Write a bundle of everything the replica got since `since` (0: everything) into `buf`
/// (capacity `cap`); its length goes to `len_out`. If `cap` is too small the status is
/// `CAIRN_STATUS_WRONG_LENGTH` and `len_out` holds the length needed (`buf` may be null).
///
/// # Safety
/// `buf` is null or has room for `cap` bytes; `len_out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_sync_export(
    h: u64,
    since: u64,
    buf: *mut u8,
    cap: usize,
    len_out: *mut usize,
) -> CairnStatus {
    guard(|| {
        need(len_out, "len_out")?;
        let n = node(h)?;
        let n = lock(&n);
        let b = cairn_sync::bundle::export(&n.replica, &n.key, since);
        // SAFETY: writable.
        unsafe { *len_out = b.len() };
        if buf.is_null() || b.len() > cap {
            return Err((
                CairnStatus::WrongLength,
                format!("the bundle needs {} bytes, room for {cap}", b.len()),
            ));
        }
        // SAFETY: room for `cap` ≥ b.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), buf, b.len()) };
        Ok(())
    })
}

/// Import a bundle (possibly cut short) from byte `from` (0, or an earlier `resume_out`):
/// new items into `stored` (may be null), whether the bundle was complete and signed into
/// `complete` (may be null), where to resume into `resume_out` (may be null).
///
/// # Safety
/// `bytes` holds `len` bytes; the outputs are null or writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_sync_import(
    h: u64,
    bytes: *const u8,
    len: usize,
    from: usize,
    stored: *mut usize,
    complete: *mut i32,
    resume_out: *mut usize,
) -> CairnStatus {
    guard(|| {
        need(bytes, "bytes")?;
        let n = node(h)?;
        let mut n = lock(&n);
        // SAFETY: `len` readable bytes.
        let b = unsafe { std::slice::from_raw_parts(bytes, len) };
        let SyncObj {
            fleet,
            authority,
            replica,
            ..
        } = &mut *n;
        let fl = cairn_sync::fleet::Fleet::verify(fleet, authority)
            .map_err(|e| (CairnStatus::SyncFailed, format!("{e:?}")))?;
        let rep = cairn_sync::bundle::import(b, from, replica, &fl, &[0; 32])
            .map_err(|e| (CairnStatus::SyncFailed, format!("bundle refused: {e:?}")))?;
        // SAFETY: each output null or writable.
        unsafe {
            if !stored.is_null() {
                *stored = rep.stored as usize;
            }
            if !complete.is_null() {
                *complete = rep.complete as i32;
            }
            if !resume_out.is_null() {
                *resume_out = rep.resume_at;
            }
        }
        Ok(())
    })
}

/// Items in the node's replica.
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_sync_len(h: u64, out: *mut usize) -> CairnStatus {
    guard(|| {
        need(out, "out")?;
        let n = node(h)?;
        // SAFETY: checked non-null above.
        unsafe { *out = lock(&n).replica.len() };
        Ok(())
    })
}

/// Free a sync node.
#[no_mangle]
pub extern "C" fn cairn_sync_node_free(h: u64) -> CairnStatus {
    guard(|| {
        lock(registry()).nodes.remove(&h).map(|_| ()).ok_or((
            CairnStatus::BadHandle,
            format!("no sync node with handle {h}"),
        ))
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

    /// The fleet list the C test uses (authority seed 0xA0…, one member: the C test's node
    /// seed) is what cairn-sync makes today.
    #[test]
    fn c_test_fleet_is_current() {
        let auth = ed25519_dalek::SigningKey::from_bytes(&[0xA0; 32]);
        let node = ed25519_dalek::SigningKey::from_bytes(b"cairn-c-test-node-seed-000000001");
        let other = ed25519_dalek::SigningKey::from_bytes(b"cairn-c-test-node-seed-000000002");
        let f = cairn_sync::testkit::fleet_of(
            &auth,
            &[
                node.verifying_key().to_bytes(),
                other.verifying_key().to_bytes(),
            ],
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/c/fleet.bin");
        let hex: String = auth
            .verifying_key()
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let hex_path = concat!(env!("CARGO_MANIFEST_DIR"), "/c/authority.hex");
        if std::env::var("CAIRN_BLESS").is_ok() {
            std::fs::write(path, &f).unwrap();
            std::fs::write(hex_path, &hex).unwrap();
        }
        assert_eq!(std::fs::read_to_string(hex_path).unwrap_or_default(), hex);
        assert_eq!(
            std::fs::read(path).unwrap_or_default(),
            f,
            "CAIRN_BLESS=1 cargo test -p cairn-ffi"
        );
    }

    /// Learning and sync through the C ABI, and their misuse.
    #[test]
    fn learn_and_sync_through_the_abi() {
        let fleet = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/c/fleet.bin")).unwrap();
        let auth = ed25519_dalek::SigningKey::from_bytes(&[0xA0; 32])
            .verifying_key()
            .to_bytes();
        unsafe {
            let (mut node, mut id, mut mem) = (0u64, 0u64, 0u64);
            assert_eq!(
                cairn_sync_node_create(
                    b"cairn-c-test-node-seed-000000001".as_ptr(),
                    fleet.as_ptr(),
                    fleet.len(),
                    auth.as_ptr(),
                    &mut node,
                    &mut id
                ),
                CairnStatus::Ok
            );
            // A fleet list signed by someone else is refused.
            let wrong = [7u8; 32];
            let mut x = 0u64;
            assert_eq!(
                cairn_sync_node_create(
                    b"cairn-c-test-node-seed-000000001".as_ptr(),
                    fleet.as_ptr(),
                    fleet.len(),
                    wrong.as_ptr(),
                    &mut x,
                    std::ptr::null_mut()
                ),
                CairnStatus::SyncFailed
            );
            assert_eq!(cairn_memory_create(4, 100, &mut mem), CairnStatus::Ok);
            assert_eq!(cairn_memory_set_origin(mem, id), CairnStatus::Ok);
            for c in 0..3u16 {
                for k in 0..4 {
                    let mut e = [0.1f32; 4];
                    e[c as usize] = 1.0 + k as f32 * 0.1;
                    assert_eq!(
                        cairn_memory_add(mem, e.as_ptr(), 4, c, 10, k, std::ptr::null_mut()),
                        CairnStatus::Ok
                    );
                }
            }
            let mut added = 0usize;
            assert_eq!(
                cairn_sync_add_memory(node, mem, &mut added),
                CairnStatus::Ok
            );
            assert_eq!(added, 12);
            let mut need = 0usize;
            assert_eq!(
                cairn_sync_export(node, 0, std::ptr::null_mut(), 0, &mut need),
                CairnStatus::WrongLength
            );
            let mut b = vec![0u8; need];
            assert_eq!(
                cairn_sync_export(node, 0, b.as_mut_ptr(), b.len(), &mut need),
                CairnStatus::Ok
            );
            let mut node2 = 0u64;
            assert_eq!(
                cairn_sync_node_create(
                    b"cairn-c-test-node-seed-000000002".as_ptr(),
                    fleet.as_ptr(),
                    fleet.len(),
                    auth.as_ptr(),
                    &mut node2,
                    std::ptr::null_mut()
                ),
                CairnStatus::Ok
            );
            let (mut stored, mut complete, mut resume) = (0usize, 0i32, 0usize);
            assert_eq!(
                cairn_sync_import(
                    node2,
                    b.as_ptr(),
                    b.len(),
                    0,
                    &mut stored,
                    &mut complete,
                    &mut resume
                ),
                CairnStatus::Ok
            );
            assert_eq!((stored, complete), (12, 1));
            assert_eq!(
                cairn_sync_import(
                    node2,
                    b.as_ptr(),
                    10,
                    0,
                    &mut stored,
                    &mut complete,
                    &mut resume
                ),
                CairnStatus::SyncFailed
            );
            // Learning on the memories.
            let mut l = 0u64;
            assert_eq!(cairn_learn_create(4, 3, 6, &mut l), CairnStatus::Ok);
            let mut loss = 0f32;
            assert_eq!(cairn_learn_train(l, mem, 200, &mut loss), CairnStatus::Ok);
            assert!(loss < 0.5, "loss {loss} (ln 3 = 1.10 at the start)");
            let mut class = 0u16;
            assert_eq!(
                cairn_learn_predict(l, [0.1f32, 0.1, 1.2, 0.1].as_ptr(), 4, &mut class),
                CairnStatus::Ok
            );
            assert_eq!(class, 2);
            assert_eq!(
                cairn_learn_predict(l, [0.1f32; 3].as_ptr(), 3, &mut class),
                CairnStatus::WrongLength
            );
            let mut small = 0u64;
            assert_eq!(cairn_learn_create(4, 2, 6, &mut small), CairnStatus::Ok);
            assert_eq!(
                cairn_learn_train(small, mem, 1, std::ptr::null_mut()),
                CairnStatus::LearnFailed
            );
            assert_eq!(
                cairn_learn_train(l, node, 1, std::ptr::null_mut()),
                CairnStatus::BadHandle
            );
            for h in [l, small] {
                assert_eq!(cairn_learn_free(h), CairnStatus::Ok);
            }
            assert_eq!(cairn_learn_free(l), CairnStatus::BadHandle);
            assert_eq!(cairn_sync_node_free(node), CairnStatus::Ok);
            assert_eq!(
                cairn_sync_add_memory(node, mem, &mut added),
                CairnStatus::BadHandle
            );
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

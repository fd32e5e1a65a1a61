//! Memory stores in RAM: create, origin, add, query, length, free.

use std::sync::{Arc, Mutex};

use cairn_memory::flash::RamFlash;
use cairn_memory::search::{Filter, Scoring};
use cairn_memory::{Config, Record, Store};

use crate::*;

pub(crate) struct MemObj {
    pub(crate) store: Store<RamFlash<65536>>,
    /// The node id records are stored under (`cairn_memory_set_origin`).
    pub(crate) origin: u64,
}

pub(crate) fn memory(h: u64) -> Result<Arc<Mutex<MemObj>>, Fail> {
    get(|r| &r.memories, h, "memory")
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
        let h = add(|r| &mut r.memories, MemObj { store, origin: 0 });
        // SAFETY: checked non-null above.
        unsafe { *out = h };
        Ok(())
    })
}

/// f32 → int8 (the node's one quantization: NaN or infinite values are refused).
fn quantize(v: &[f32]) -> Result<(Vec<i8>, f32), Fail> {
    cairn_node::features::quantize_vec(v).map_err(|e| {
        (
            CairnStatus::WrongLength,
            format!("the embedding is not finite ({e:?})"),
        )
    })
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
        let (e, scale) = quantize(v)?;
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
        let (q, _) = quantize(unsafe { std::slice::from_raw_parts(query, dim) })?;
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
    free(|r| &mut r.memories, h, "memory")
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

//! Sync nodes: a signed replica of the node's memories, bundles in and out.

use std::sync::{Arc, Mutex};

use crate::memory::memory;
use crate::*;

pub(crate) struct SyncObj {
    key: ed25519_dalek::SigningKey,
    fleet: Vec<u8>,
    authority: [u8; 32],
    replica: cairn_sync::replica::Replica,
}

pub(crate) fn node(h: u64) -> Result<Arc<Mutex<SyncObj>>, Fail> {
    get(|r| &r.nodes, h, "sync node")
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
        let h = add(|r| &mut r.nodes, obj);
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
    free(|r| &mut r.nodes, h, "sync node")
}

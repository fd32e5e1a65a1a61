//! Sync nodes: a signed replica of the node's memories, bundles in and out. Signing and
//! applying are the node's (`cairn_node::share`): records that arrive go into the memory
//! store the node is bound to (the one last given to `cairn_sync_add_memory`).

use std::sync::{Arc, Mutex};

use cairn_node::{share, ApplyReport, Identity};

use crate::memory::memory;
use crate::*;

pub(crate) struct SyncObj {
    seed: [u8; 32],
    fleet: Vec<u8>,
    authority: [u8; 32],
    replica: cairn_sync::replica::Replica,
    /// The memory store arriving records are added to.
    memory: Option<u64>,
    report: ApplyReport,
}

impl SyncObj {
    /// The node's identity (the fleet list verified again: the handle keeps bytes).
    fn identity(&self) -> Result<Identity<'_>, Fail> {
        Identity::new(&self.seed, &self.fleet, &self.authority)
            .map_err(|e| (CairnStatus::SyncFailed, format!("fleet list: {e:?}")))
    }
}

fn sync_fail(e: cairn_node::NodeError) -> Fail {
    (CairnStatus::SyncFailed, format!("{e:?}"))
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
        let mut sd = [0u8; 32];
        sd.copy_from_slice(seed);
        let id = Identity::new(&sd, fleet, &a)
            .map_err(|e| (CairnStatus::SyncFailed, format!("fleet list: {e:?}")))?
            .node_id();
        let obj = SyncObj {
            seed: sd,
            fleet: fleet.to_vec(),
            authority: a,
            replica: Default::default(),
            memory: None,
            report: ApplyReport::default(),
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
/// how many were new goes to `added` (may be null). The node is bound to `mem` from then
/// on: records that arrive in bundles are added to it.
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
        let SyncObj {
            seed,
            fleet,
            authority,
            replica,
            memory,
            ..
        } = &mut *n;
        let identity = Identity::new(seed, fleet, authority).map_err(sync_fail)?;
        let p = share::publish(&identity, &mut m.store, replica).map_err(sync_fail)?;
        *memory = Some(mem);
        if !added.is_null() {
            // SAFETY: non-null and writable.
            unsafe { *added = p.added as usize };
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
        let b = cairn_sync::bundle::export(&n.replica, n.identity()?.key(), since);
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
        let bound =
            match n.memory {
                Some(mh) => Some(memory(mh).map_err(|(s, e)| {
                    (s, format!("the memory store this node is bound to: {e}"))
                })?),
                None => None,
            };
        let SyncObj {
            seed,
            fleet,
            authority,
            replica,
            report,
            ..
        } = &mut *n;
        let identity = Identity::new(seed, fleet, authority).map_err(sync_fail)?;
        let refused = |e| (CairnStatus::SyncFailed, format!("bundle refused: {e:?}"));
        let rep = match &bound {
            Some(m) => {
                let mut m = lock(m);
                share::import_bundle(&identity, &[0; 32], &mut m.store, replica, report, b, from)
                    .map_err(|e| match e {
                        cairn_node::NodeError::Sync(r) => refused(r),
                        other => sync_fail(other),
                    })?
            }
            None => cairn_sync::bundle::import(b, from, replica, &identity.fleet(), &[0; 32])
                .map_err(refused)?,
        };
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

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
//! length, free); a learner (a classifier head trained on a memory store's records through
//! the node's forgetting gate and lineage, as `cairn learn train` does: create, set the
//! gate, train, predict, free); sync nodes (a signed replica of the node's memories: create,
//! add a memory store — arriving records are added to it —, export a bundle, import a
//! bundle, free). Quantizing, signing, training and applying are `cairn-node`'s; this crate
//! adds only handles and status codes. Network sessions are not in the C ABI (apps use
//! bundles, or the `cairn sync` transports).

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

mod backend;
mod learn;
mod memory;
mod model;
mod sync;

pub use backend::*;
pub use learn::*;
pub use memory::*;
pub use model::*;
pub use sync::*;

use learn::LearnObj;
use memory::MemObj;
use model::ModelObj;
use sync::SyncObj;

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
    /// The forgetting gate refused a trained candidate: nothing changed but the lineage,
    /// which records why (see `cairn_last_error`).
    Rejected = 10,
    /// The backend asked for is not in this build (`ort` or `gpu` without the cargo
    /// feature of that name) or is unknown (see `cairn_last_error`).
    BackendUnavailable = 11,
}

pub(crate) type Fail = (CairnStatus, String);

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Run `f`, turning errors and panics into a status and the thread's last error.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Fail>) -> CairnStatus {
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

pub(crate) fn need<T>(p: *const T, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        Err((CairnStatus::NullPointer, format!("{what} is null")))
    } else {
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    next: u64,
    models: HashMap<u64, Arc<Mutex<ModelObj>>>,
    memories: HashMap<u64, Arc<Mutex<MemObj>>>,
    learners: HashMap<u64, Arc<Mutex<LearnObj>>>,
    nodes: HashMap<u64, Arc<Mutex<SyncObj>>>,
}

pub(crate) fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while a lock was held leaves the data as it was; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Register an object in the table `pick` selects; its new handle.
pub(crate) fn add<T>(pick: fn(&mut Registry) -> &mut HashMap<u64, Arc<Mutex<T>>>, obj: T) -> u64 {
    let mut r = lock(registry());
    r.next += 1;
    let h = r.next;
    pick(&mut r).insert(h, Arc::new(Mutex::new(obj)));
    h
}

/// The object behind handle `h` in the table `pick` selects (`what` names it in errors).
pub(crate) fn get<T>(
    pick: fn(&Registry) -> &HashMap<u64, Arc<Mutex<T>>>,
    h: u64,
    what: &str,
) -> Result<Arc<Mutex<T>>, Fail> {
    pick(&lock(registry()))
        .get(&h)
        .cloned()
        .ok_or((CairnStatus::BadHandle, format!("no {what} with handle {h}")))
}

/// Drop handle `h` from the table `pick` selects.
pub(crate) fn free<T>(
    pick: fn(&mut Registry) -> &mut HashMap<u64, Arc<Mutex<T>>>,
    h: u64,
    what: &str,
) -> CairnStatus {
    guard(|| {
        pick(&mut lock(registry()))
            .remove(&h)
            .map(|_| ())
            .ok_or((CairnStatus::BadHandle, format!("no {what} with handle {h}")))
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
                for k in 0..10 {
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
            assert_eq!(added, 30);
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
            // Node 2 is bound to a memory store: what arrives is added to it.
            let mut mem2 = 0u64;
            assert_eq!(cairn_memory_create(4, 100, &mut mem2), CairnStatus::Ok);
            assert_eq!(
                cairn_sync_add_memory(node2, mem2, &mut added),
                CairnStatus::Ok
            );
            assert_eq!(added, 0);
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
            assert_eq!((stored, complete), (30, 1));
            let mut len = 0usize;
            assert_eq!(cairn_memory_len(mem2, &mut len), CairnStatus::Ok);
            assert_eq!(len, 30, "records that arrive reach the memory store");
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

    /// The C learner gates like `cairn learn train`: a candidate that forgets the old
    /// classes is rejected with a status, the active head stays, the lineage records it.
    #[test]
    fn the_c_learner_gates_like_the_cli() {
        let add = |mem: u64, c: u16, k: u64, label: u16| {
            let mut e = [0.1f32; 4];
            e[c as usize] = 1.0 + k as f32 * 0.01;
            // SAFETY: 4 readable floats.
            let s =
                unsafe { cairn_memory_add(mem, e.as_ptr(), 4, label, 10, k, std::ptr::null_mut()) };
            assert_eq!(s, CairnStatus::Ok);
        };
        unsafe {
            let (mut mem, mut l) = (0u64, 0u64);
            assert_eq!(cairn_memory_create(4, 1000, &mut mem), CairnStatus::Ok);
            for c in 0..3u16 {
                for k in 0..20 {
                    add(mem, c, k, c);
                }
            }
            assert_eq!(cairn_learn_create(4, 6, 8, &mut l), CairnStatus::Ok);
            let mut loss = 0f32;
            assert_eq!(cairn_learn_train(l, mem, 150, &mut loss), CairnStatus::Ok);
            // The same data again: nothing to gain on held-out records, so refused.
            assert_eq!(
                cairn_learn_train(l, mem, 50, std::ptr::null_mut()),
                CairnStatus::Rejected
            );
            assert!(last().contains("NoGain"), "{}", last());
            // Classes 0-2 are old from now on; new records of classes 3-5 sit on the old
            // classes' features (a poisoned batch): the candidate forgets, the gate refuses.
            assert_eq!(cairn_learn_set_gate(l, 3, 0.05), CairnStatus::Ok);
            for c in 0..3u16 {
                for k in 100..160 {
                    add(mem, c, k, c + 3);
                }
            }
            let mut class = 9u16;
            let probe = [0.1f32, 0.1, 1.1, 0.1];
            assert_eq!(
                cairn_learn_predict(l, probe.as_ptr(), 4, &mut class),
                CairnStatus::Ok
            );
            assert_eq!(class, 2);
            assert_eq!(
                cairn_learn_train(l, mem, 150, std::ptr::null_mut()),
                CairnStatus::Rejected
            );
            assert!(last().contains("Forgetting"), "{}", last());
            assert_eq!(
                cairn_learn_predict(l, probe.as_ptr(), 4, &mut class),
                CairnStatus::Ok
            );
            assert_eq!(class, 2, "the active head is unchanged");
            assert_eq!(cairn_learn_set_gate(l, 3, 2.0), CairnStatus::WrongLength);
            assert_eq!(
                cairn_learn_predict(l, [f32::NAN; 4].as_ptr(), 4, &mut class),
                CairnStatus::WrongLength
            );
            assert_eq!(cairn_learn_free(l), CairnStatus::Ok);
            assert_eq!(cairn_memory_free(mem), CairnStatus::Ok);
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

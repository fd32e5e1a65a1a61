//! Writes the seed corpus of every fuzz target into `tests/fuzz/seeds/<target>/` from the
//! real encoders, so the fuzzers start from valid inputs and reach past the first checks:
//! a model (the digits model the firmware runs), memory-log images in the fuzz target's
//! flash geometry, sync inputs in each of the four forms `sync_input` reads, and orders of
//! arrival for `replica_ops`.
//! Deterministic: rerun after a format change (`cargo run` here) and commit the result.

use std::fs;
use std::path::{Path, PathBuf};

use cairn_memory::flash::RamFlash;
use cairn_memory::{Config, Record, Store};
use cairn_sync::item::{sign_into, statement_body, tombstone_body, Action, Kind, Statement};
use cairn_sync::replica::Replica;
use cairn_sync::testkit::{fleet_of, signed_record};
use cairn_sync::{bundle, Config as SyncConfig, Item, Role, Session, Store as _};
use ed25519_dalek::SigningKey;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

/// Checkpoint-log images in the `lineage_log` target's geometry (4 sectors of 1 KiB): an
/// empty log, and one with two checkpoints, a rejection and the second one active.
fn lineage_log(dir: &Path) {
    use cairn_learn::lineage::{weights_digest, Checkpoint, CheckpointLog};
    use cairn_learn::{Metrics, Reject};
    let (log, _) = CheckpointLog::open(RamFlash::<1024>::new(4)).unwrap();
    write(dir, "empty", &log.into_flash().data);
    let (mut log, _) = CheckpointLog::open(RamFlash::<1024>::new(4)).unwrap();
    let mut parent = [0u8; 32];
    for (i, w) in [[1.0f32, 2.0], [-0.5, 0.25]].iter().enumerate() {
        let c = Checkpoint {
            id: [0; 32],
            parent,
            base: [7; 32],
            records: [i as u8; 32],
            n_records: 2,
            hparams: [0; 52],
            before: Metrics::default(),
            after: Metrics {
                old_acc: 0.9,
                new_acc: 0.8,
                n_old: 10,
                n_new: 5,
            },
            shape: [1, 2, 0, 0],
            weights: weights_digest(w),
            n_params: 2,
        }
        .seal();
        log.commit(&c, w).unwrap();
        log.record_reject(
            &[9; 32],
            &Reject::Forgetting {
                before: 0.9,
                after: 0.5,
            },
            &Metrics::default(),
            &Metrics::default(),
        )
        .unwrap();
        parent = c.id;
    }
    write(dir, "two_checkpoints", &log.into_flash().data);
}

/// `.npy` files as NumPy writes them: versions 1 and 2, f32 and the other dtypes the
/// reader converts (half floats, 16-bit and unsigned integers, big-endian), a
/// Fortran-ordered array, and a dtype string with a multi-byte character (once a panic).
fn npy(dir: &Path) {
    fn file(version: u8, descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        file_order(version, descr, "False", shape, body)
    }
    fn file_order(version: u8, descr: &str, fortran: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut h =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        let lead = if version == 1 { 10 } else { 12 };
        while (lead + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY".to_vec();
        out.extend([version, 0]);
        if version == 1 {
            out.extend((h.len() as u16).to_le_bytes());
        } else {
            out.extend((h.len() as u32).to_le_bytes());
        }
        out.extend(h.as_bytes());
        out.extend(body);
        out
    }
    let f: Vec<u8> = [1.5f32, -2.0, 0.0, 8.25, 1e-3, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write(dir, "f32_2x3", &file(1, "<f4", "(2, 3)", &f));
    write(dir, "f32_v2_scalar", &file(2, "<f4", "()", &f[..4]));
    let d: Vec<u8> = [0.5f64, -1.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write(dir, "f64_2", &file(1, "<f8", "(2,)", &d));
    let i: Vec<u8> = [7i64, -3, 0, 1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write(dir, "i64_1x4", &file(1, "<i8", "(1, 4)", &i));
    write(dir, "u8_4", &file(1, "|u1", "(4,)", &[0, 1, 128, 255]));
    write(
        dir,
        "f32_fortran_2x3",
        &file_order(1, "<f4", "True", "(2, 3)", &f),
    );
    let be: Vec<u8> = [1.5f32, -2.0, 0.25]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    write(dir, "f32_big_endian_3", &file(1, ">f4", "(3,)", &be));
    // 1.0, -2.0, 0.5, 65504 (the largest half) as IEEE half floats.
    let h: Vec<u8> = [0x3C00u16, 0xC000, 0x3800, 0x7BFF]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write(dir, "f16_2x2", &file(1, "<f2", "(2, 2)", &h));
    let i2: Vec<u8> = [-300i16, 7, 32767]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write(dir, "i16_3", &file(1, "<i2", "(3,)", &i2));
    write(
        dir,
        "u32_1",
        &file(1, "<u4", "(1,)", &70_000u32.to_le_bytes()),
    );
    write(
        dir,
        "non_ascii_dtype",
        &file(1, "\u{113}2", "(2, 6)", &[0; 48]),
    );
}

/// Small real ONNX models: the converter's QOperator, QDQ and dynamic-quantization test
/// models and the digits MLP (float and QDQ).
fn onnx(dir: &Path, root: &Path) {
    for (name, path) in [
        ("qop", "models/convert/tests/data/qop/qop.onnx"),
        ("qdq", "models/convert/tests/data/qop/qdq.onnx"),
        ("dyn", "models/convert/tests/data/qop/dyn.onnx"),
        ("digits_mlp_qdq", "models/zoo/digits/digits_mlp_qdq.onnx"),
    ] {
        let bytes = fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        write(dir, name, &bytes);
    }
}

/// Memory-log images: the target copies its input into 4 sectors of 1 KiB.
fn memory_log(dir: &Path) {
    for (name, n, dim) in [("empty", 0usize, 8usize), ("three", 3, 8), ("full", 40, 4)] {
        let cfg = Config {
            dim,
            max_records: 64,
            max_payload: 64,
        };
        let (mut st, _) = Store::open(RamFlash::<1024>::new(4), cfg).unwrap();
        let emb: Vec<i8> = (0..dim as i8).collect();
        for i in 0..n as u64 {
            let r = Record {
                origin: 9,
                timestamp_ms: i,
                label: (i % 3) as u16,
                importance: 7,
                meta: [0; 4],
                scale: 0.5,
                embedding: &emb,
                payload: b"seed",
            };
            if st.append(&r).is_err() {
                break;
            }
        }
        write(dir, name, &st.into_flash().data);
    }
}

fn signed(k: &SigningKey, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 1024];
    let n = sign_into(k, kind, body, &mut out).unwrap();
    out.truncate(n);
    out
}

/// The fuzz target's fleet: members 1 and 2, authority `[0xA0; 32]`.
fn sync_input(dir: &Path) {
    let key = |i: u8| SigningKey::from_bytes(&[i; 32]);
    let authority = SigningKey::from_bytes(&[0xA0; 32]);
    let members: Vec<[u8; 32]> = (1..=2).map(|i| key(i).verifying_key().to_bytes()).collect();
    let fb = fleet_of(&authority, &members);
    let fl = cairn_sync::fleet::Fleet::verify(&fb, &authority.verifying_key().to_bytes()).unwrap();
    let record = signed_record(&key(2), 5, 9, b"seed", 8);
    let rid = Item::verify(&record).unwrap().id;
    let tomb = signed(&key(2), Kind::Tombstone, &tombstone_body(&rid, 7));
    let revoke = Statement {
        action: Action::Revoke,
        subject: key(1).verifying_key().to_bytes(),
        hlc: 1,
    };
    let revocation = signed(&authority, Kind::Authority, &statement_body(&revoke));
    write(dir, "item_record", &record);
    write(dir, "item_tombstone", &tomb);
    write(dir, "item_revocation", &revocation);
    // A bundle of those items from member 2.
    let mut r = Replica::default();
    for b in [&record, &revocation] {
        r.insert(&Item::verify(b).unwrap()).unwrap();
    }
    write(dir, "bundle", &bundle::export(&r, &key(2), 0));
    // The initiator's frames of a session, each u16-length-prefixed: what form (1) reads.
    let cfg = SyncConfig {
        mtu: 256,
        byte_budget: u64::MAX,
        psk: None,
        fleet: fl,
        base_model: [0; 32],
        rto_ms: 10,
    };
    let mut a = Replica::default();
    a.insert(&Item::verify(&record).unwrap()).unwrap();
    let mut s = Session::new(Role::Initiator, cfg, &[2; 32], &[6; 48], a, 0).unwrap();
    let mut peer = Session::new(
        Role::Responder,
        cfg,
        &[1; 32],
        &[5; 48],
        Replica::default(),
        0,
    )
    .unwrap();
    let mut stream = Vec::new();
    let mut buf = vec![0u8; 512];
    for _ in 0..8 {
        while let Some(n) = s.poll_transmit(&mut buf) {
            stream.extend_from_slice(&(n as u16).to_le_bytes());
            stream.extend_from_slice(&buf[..n]);
            let _ = peer.handle_input(&buf[..n], 0);
        }
        while let Some(n) = peer.poll_transmit(&mut buf) {
            let _ = s.handle_input(&buf[..n], 0);
        }
    }
    write(dir, "frames", &stream);
}

fn main() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = here.join("../seeds");
    let model = here.join("../../../targets/mcu/assets/digits.cairn");
    let model = fs::read(&model).expect("targets/mcu/assets/digits.cairn");
    write(&root.join("model_bytes"), "digits.cairn", &model);
    write(&root.join("model_structure"), "digits.cairn", &model);
    memory_log(&root.join("memory_log"));
    lineage_log(&root.join("lineage_log"));
    npy(&root.join("npy_file"));
    onnx(&root.join("onnx_model"), &here.join("../../.."));
    sync_input(&root.join("sync_input"));
    // replica_ops reads an order of its pool of 18 items: as listed, and reversed.
    let order: Vec<u8> = (0..18).collect();
    let reversed: Vec<u8> = order.iter().rev().copied().collect();
    write(&root.join("replica_ops"), "pool_order", &order);
    write(&root.join("replica_ops"), "reverse_order", &reversed);
    println!("corpus written under {}", root.display());
}

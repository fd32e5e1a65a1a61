//! The Cortex-M firmware's node (`src/main.rs`) assembled the firmware's way on the host,
//! the demo fleet it trusts, its inputs, and booting it in QEMU: shared by the tests that
//! check the firmware against it (`tests/tests/mcu_qemu.rs`) and run it as one node of a
//! fleet (`sim/tests/qemu_node.rs`), each of which includes this file as a module.
#![allow(dead_code)] // each includer uses part of it

use std::path::Path;
use std::process::Command;

use cairn_core::emit::AlignedBytes;
use cairn_core::{Model, OpKind};
use cairn_kernels::CpuBackend;
use cairn_learn::gate::Gate;
use cairn_learn::lineage::{model_hash, CheckpointLog};
use cairn_learn::{Optimizer, TrainConfig};
use cairn_memory::flash::RamFlash;
use cairn_memory::ram::FixedRam;
use cairn_memory::{Config as MemConfig, LogStore};
use cairn_node::adapter::{Adapter, LearnSpec};
use cairn_node::{Contributions, Identity, Node, Parts, Revocations, Sensor};
use cairn_sync::bundle::BundleWriter;
use ed25519_dalek::SigningKey;

/// The repository root (both includers live one folder below it).
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Whether `qemu-system-arm` and `defmt-print` are installed (CAIRN_REQUIRE_QEMU=1 makes
/// their absence a failure instead of a skip).
pub fn tools_present() -> bool {
    let ok = |c: &str| Command::new(c).arg("--version").output().is_ok();
    let present = ok("qemu-system-arm") && ok("defmt-print");
    if !present && std::env::var("CAIRN_REQUIRE_QEMU").is_ok_and(|v| v == "1") {
        panic!("qemu-system-arm or defmt-print missing (tests/run.sh installs them)");
    }
    present
}

/// Boot firmware binary `bin` of targets/mcu in QEMU (through its cargo runner) with the
/// command line `args` (`src/host_paths.rs`); its log.
pub fn boot(bin: &str, args: &[&str]) -> String {
    let out = Command::new("cargo")
        .args(["run", "--release", "--quiet", "--bin", bin, "--"])
        .args(args)
        .current_dir(root().join("targets/mcu"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo run in targets/mcu");
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "firmware {bin} failed in QEMU:\n{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    log
}

/// The demo fleet: the authority (seed `[0xA0; 32]`, public key in the firmware's
/// `AUTHORITY`), the firmware's device key, a peer's and a host node's.
pub const AUTHORITY_SEED: [u8; 32] = [0xA0; 32];
pub const DEVICE_SEED: [u8; 32] = *b"cairn-mcu-demo-device-seed-00001";
pub const PEER_SEED: [u8; 32] = *b"cairn-mcu-demo-peer-seed-0000002";
pub const HOST_SEED: [u8; 32] = *b"cairn-mcu-demo-host-seed-0000003";
/// A key outside the fleet.
pub const OUTSIDER_SEED: [u8; 32] = [0x55; 32];
pub const LABELS: [u16; 8] = [7, 8, 1, 7, 8, 5, 6, 9];

pub fn fleet() -> Vec<u8> {
    let auth = SigningKey::from_bytes(&AUTHORITY_SEED);
    let members = [DEVICE_SEED, PEER_SEED, HOST_SEED]
        .map(|s| SigningKey::from_bytes(&s).verifying_key().to_bytes());
    cairn_sync::testkit::fleet_of(&auth, &members)
}

/// The node's parts on the host: the firmware's, with RAM standing in for its flash
/// regions and the CPU backend for its kernel selection.
pub struct HostParts;
impl Parts for HostParts {
    type Backend = CpuBackend;
    type MemoryFlash = RamFlash<1024>;
    type MemoryRam = FixedRam<24, 32, 8, 128>;
    type LineageFlash = RamFlash<1024>;
    type Items = Contributions<RamFlash<1024>, Revocations<RamFlash<256>, 4>, 4, 1536>;
}

/// `learn_spec` of targets/mcu/src/main.rs.
pub fn learn_spec(m: &Model<'_>) -> LearnSpec {
    let head = (0..m.n_ops())
        .rev()
        .find(|&i| m.op(i).is_some_and(|o| o.kind == OpKind::FullyConnected));
    LearnSpec {
        classes: 10,
        rank: 0,
        batch: 8,
        train: TrainConfig {
            optimizer: Optimizer::adam(0.05),
            clip_norm: 5.0,
            weight_decay: 0.0,
            steps: 5,
            replay_per_batch: 8,
            lora_scale: 1.0,
            distill: 0.0,
            seed: 1,
        },
        gate: Gate {
            max_old_drop: 0.05,
            min_new_gain: 0.0,
        },
        new_from: 10,
        lora_op: None,
        head_op: head,
        max_delta_norm: 10.0,
    }
}

pub struct Buffers {
    pub model: AlignedBytes,
    pub arena: AlignedBytes,
    pub learn: Vec<u32>,
    pub fleet: Vec<u8>,
}

pub fn buffers() -> Buffers {
    let model = AlignedBytes::from_slice(
        &std::fs::read(root().join("targets/mcu/assets/digits.cairn")).unwrap(),
    );
    let m = Model::parse(model.as_slice()).unwrap();
    let arena = AlignedBytes::zeroed(m.arena_bytes());
    let need = cairn_node::adapter::arena_bytes(&learn_spec(&m), Some(&m), 32).unwrap();
    Buffers {
        arena,
        learn: vec![0; need.div_ceil(4)],
        fleet: fleet(),
        model,
    }
}

/// The firmware's node, assembled the firmware's way on the host.
pub fn host_node<'a>(b: &'a mut Buffers, seed: &[u8; 32]) -> Node<'a, HostParts> {
    let Buffers {
        model,
        arena,
        learn,
        fleet,
    } = b;
    let m = Model::parse(model.as_slice()).unwrap();
    let base = model_hash(model.as_slice());
    let tag = u32::from_le_bytes([base[0], base[1], base[2], base[3]]);
    let auth = SigningKey::from_bytes(&AUTHORITY_SEED)
        .verifying_key()
        .to_bytes();
    let identity = Identity::new(seed, fleet, &auth).unwrap();
    let spec = learn_spec(&m);
    let sensor = Sensor::new(m, CpuBackend, arena.as_mut_slice(), 1, Some(0), tag).unwrap();
    let cfg = MemConfig {
        dim: 32,
        max_records: 24,
        max_payload: 0,
    };
    let memory = LogStore::open_in(RamFlash::new(4), cfg, FixedRam::new())
        .unwrap()
        .0;
    let mut log = CheckpointLog::open(RamFlash::new(8)).unwrap().0;
    let bytes: &mut [u8] = bytemuck_cast(learn.as_mut_slice());
    let adapter = Adapter::open(spec, Some(&m), base, 32, bytes, &mut log).unwrap();
    let statements = Revocations::open(RamFlash::new(1), &auth).unwrap();
    let (items, _) = Contributions::open(RamFlash::new(7), statements, 16, &mut [0; 1536]).unwrap();
    Node::new(identity, memory, items)
        .with_sensor(sensor)
        .with_learning(adapter, log)
}

pub fn bytemuck_cast(w: &mut [u32]) -> &mut [u8] {
    let len = w.len() * 4;
    // SAFETY: u32 storage viewed as bytes (no alignment or validity requirement for u8).
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, len) }
}

/// The 8 frames of targets/mcu/assets/inputs.bin, as the mock sensor bus scales them
/// (u16 pixels, 4096 = 1.0).
pub fn frames() -> Vec<Vec<f32>> {
    let raw = std::fs::read(root().join("targets/mcu/assets/inputs.bin")).unwrap();
    raw.chunks_exact(256)
        .map(|x| {
            x.chunks_exact(4)
                .map(|c| {
                    let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    ((v.clamp(0.0, 1.0) * 4096.0) as u16) as f32 / 4096.0
                })
                .collect()
        })
        .collect()
}

/// The items of a bundle (no checks: the test's own bundles).
pub fn bundle_items(b: &[u8]) -> Vec<Vec<u8>> {
    let mut pos = 4 + 1 + 32 + 8;
    let mut out = Vec::new();
    while &b[pos..pos + 4] != b"CEND" {
        let len = u32::from_le_bytes(b[pos..pos + 4].try_into().unwrap()) as usize;
        out.push(b[pos + 4..pos + 4 + len].to_vec());
        pos += 4 + len;
    }
    out
}

/// The peer's bundle: its records of the same frames (other times) and the contribution of
/// the adapter it learned on them, one record signed by a key outside the fleet, and one of
/// its records altered after signing; written and signed by the peer (a member), so the
/// bundle is complete and only those two items fail.
pub fn peer_bundle() -> Vec<u8> {
    // The peer's gate judges on two held-out records, chosen by record id (so by the
    // observation times): the first start time from 100 at which its gate promotes, so
    // that it signs a contribution (a node with an allocator does after a promotion).
    let frames = frames();
    let mut b = buffers();
    let mut peer = host_node(&mut b, &PEER_SEED);
    let mut t0 = 100;
    loop {
        for (i, x) in frames.iter().enumerate() {
            peer.observe(x, Some(LABELS[i]), 100, t0 + i as u64)
                .unwrap();
        }
        if peer.learn(&mut |_, _| {}).unwrap().promoted() {
            break;
        }
        assert!(
            t0 < 100 + 8 * 32,
            "no start time promotes the peer's adapter"
        );
        drop(peer);
        b = buffers();
        peer = host_node(&mut b, &PEER_SEED);
        t0 += 8;
    }
    let mut own = Vec::new();
    peer.export_own(&mut |b| {
        own.extend_from_slice(b);
        true
    })
    .unwrap();
    let mut items = bundle_items(&own);
    assert_eq!(items.len(), 9, "8 records and a contribution");
    let outsider = SigningKey::from_bytes(&OUTSIDER_SEED);
    items.push(cairn_sync::testkit::signed_record(
        &outsider,
        500,
        100,
        &[],
        32,
    ));
    let mut altered = items[0].clone();
    let at = altered.len() - 64 - 5; // an embedding byte, under the signature
    altered[at] ^= 0x11;
    items.push(altered);
    carrier_bundle(&PEER_SEED, &items)
}

/// `node` observes the frames `which` (frame `i` at time `t0 + i`); the bundle of its own
/// records.
pub fn observe_and_export(
    node: &mut Node<'_, HostParts>,
    which: std::ops::Range<usize>,
    t0: u64,
) -> Vec<u8> {
    let frames = frames();
    for i in which {
        node.observe(&frames[i], Some(LABELS[i]), 100, t0 + i as u64)
            .unwrap();
    }
    let mut own = Vec::new();
    node.export_own(&mut |b| {
        own.extend_from_slice(b);
        true
    })
    .unwrap();
    own
}

/// A bundle of `items` (each signed by its author, or not) written and signed by `seed`'s
/// key: what a carrier hands on.
pub fn carrier_bundle(seed: &[u8; 32], items: &[Vec<u8>]) -> Vec<u8> {
    let key = SigningKey::from_bytes(seed);
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let mut w = BundleWriter::start(&key, 0, &mut sink);
    for it in items {
        w.item(it, &mut sink);
    }
    w.finish(&key, &mut sink);
    out
}

/// The fleet authority's statement revoking the peer's key.
pub fn revoke_peer() -> Vec<u8> {
    use cairn_sync::item::{sign_into, statement_body, Action, Kind, Statement};
    let s = Statement {
        action: Action::Revoke,
        subject: SigningKey::from_bytes(&PEER_SEED)
            .verifying_key()
            .to_bytes(),
        hlc: 1,
    };
    let mut out = vec![0u8; 512];
    let auth = SigningKey::from_bytes(&AUTHORITY_SEED);
    let n = sign_into(&auth, Kind::Authority, &statement_body(&s), &mut out).unwrap();
    out.truncate(n);
    out
}

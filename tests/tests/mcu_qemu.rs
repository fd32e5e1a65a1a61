//! The Cortex-M4 firmware (`targets/mcu`) booted in QEMU gives the host interpreter's
//! outputs byte for byte, its bundled model and fleet list are what the converter and the
//! fleet authority make today, and its `cairn_node::Node` decides what the same node on the
//! host decides: the gate's verdicts, the bundle it exports (byte for byte), and what it
//! applies from a peer's bundle (forged and non-member items refused), and how it honours
//! the authority's revocation of that peer.
//!
//! Needs `qemu-system-arm` and `defmt-print` (tests/run.sh installs both and sets
//! CAIRN_REQUIRE_QEMU=1, which turns their absence into a failure instead of a skip).

use std::path::Path;
use std::process::Command;

use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_core::{Model, OpKind};
use cairn_kernels::host::HostModel;
use cairn_kernels::CpuBackend;
use cairn_learn::gate::{Gate, Reject as GateReject};
use cairn_learn::lineage::{model_hash, CheckpointLog};
use cairn_learn::{Optimizer, TrainConfig};
use cairn_memory::flash::RamFlash;
use cairn_memory::ram::FixedRam;
use cairn_memory::{Config as MemConfig, LogStore};
use cairn_node::adapter::{Adapter, LearnSpec, Outcome};
use cairn_node::{Identity, Node, NodeError, Parts, Revocations, Sensor};
use cairn_sync::bundle::BundleWriter;
use cairn_sync::Reject;
use ed25519_dalek::SigningKey;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn tools_present() -> bool {
    let ok = |c: &str| Command::new(c).arg("--version").output().is_ok();
    let present = ok("qemu-system-arm") && ok("defmt-print");
    if !present && std::env::var("CAIRN_REQUIRE_QEMU").is_ok_and(|v| v == "1") {
        panic!("qemu-system-arm or defmt-print missing (tests/run.sh installs them)");
    }
    present
}

/// The committed firmware model equals a fresh conversion of the bundled QDQ digits model.
#[test]
fn firmware_model_is_current() {
    let onnx = std::fs::read(root().join("models/zoo/digits/digits_mlp_qdq.onnx")).unwrap();
    let opts = Options {
        extra_outputs: vec!["h1".into()],
        ..Options::default()
    };
    let fresh = convert(&onnx, &opts, |_| {}).unwrap().bytes;
    let committed = std::fs::read(root().join("targets/mcu/assets/digits.cairn")).unwrap();
    assert!(
        fresh == committed,
        "targets/mcu/assets/digits.cairn is stale: cairn convert models/zoo/digits/digits_mlp_qdq.onnx -o targets/mcu/assets/digits.cairn --extra-output h1"
    );
}

/// The CNN firmware's model equals a fresh conversion of the bundled QDQ classifier, and its
/// sample lines are the first two of the evaluation set (width, label, pixels).
#[test]
fn cnn_firmware_assets_are_current() {
    let opts = Options {
        input_shapes: [("#0".to_string(), vec![1, 3, 48, 192])].into(),
        ..Options::default()
    };
    let onnx = std::fs::read(root().join("models/zoo/ppocr_cls/cls_qdq.onnx")).unwrap();
    let fresh = convert(&onnx, &opts, |_| {}).unwrap().bytes;
    let committed = std::fs::read(root().join("targets/mcu/assets/cls.cairn")).unwrap();
    assert!(
        fresh == committed,
        "targets/mcu/assets/cls.cairn is stale: cairn convert models/zoo/ppocr_cls/cls_qdq.onnx --input-shape 1,3,48,192 -o targets/mcu/assets/cls.cairn"
    );
    let z = root().join("models/zoo/ppocr_cls");
    let px = cairn_convert::npy::read(&z.join("eval_u8.npy")).unwrap();
    let w = cairn_convert::npy::read(&z.join("eval_w.npy"))
        .unwrap()
        .data;
    let y = cairn_convert::npy::read(&z.join("eval_y.npy"))
        .unwrap()
        .data;
    let per = 3 * 48 * 192;
    let mut expect = Vec::new();
    for i in 0..2 {
        expect.extend((w[i] as u32).to_le_bytes());
        expect.extend((y[i] as u32).to_le_bytes());
        // npy::read gives u8 pixels as f32 values.
        expect.extend(px.data[i * per..(i + 1) * per].iter().map(|&v| v as u8));
    }
    let committed = std::fs::read(root().join("targets/mcu/assets/cls_inputs.bin")).unwrap();
    assert!(
        committed == expect,
        "targets/mcu/assets/cls_inputs.bin is not lines 0-1 of models/zoo/ppocr_cls/eval_*.npy"
    );
}

/// Parse `outK i [b, b, ...]` lines of the firmware's log.
fn outputs(log: &str, k: usize) -> Vec<Vec<u8>> {
    let tag = format!("out{k} ");
    log.lines()
        .filter_map(|l| l.strip_prefix(&tag))
        .map(|rest| {
            let list = &rest[rest.find('[').unwrap() + 1..rest.rfind(']').unwrap()];
            list.split(',')
                .map(|v| v.trim().parse::<u8>().unwrap())
                .collect()
        })
        .collect()
}

/// Boot firmware binary `bin` of targets/mcu in QEMU (through its cargo runner); its log.
fn boot(bin: &str) -> String {
    let out = Command::new("cargo")
        .args(["run", "--release", "--quiet", "--bin", bin])
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

/// The stack stays within the budget targets/mcu/size.sh counts in the RAM figure.
fn check_stack(log: &str) {
    let stack: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("stack used: "))
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .expect("the firmware reports its stack use");
    assert!(
        stack <= 16_384,
        "stack {stack} bytes exceeds the 16 KiB budget"
    );
}

/// The CNN (convolutions, depthwise, lookup tables, SE `Mul`, pooling, FullyConnected,
/// Softmax; the DSP and FPU-FMA paths) on the Cortex-M4 gives the host's bytes.
#[test]
fn qemu_cortex_m4_runs_the_cnn_bit_for_bit() {
    if !tools_present() {
        eprintln!("skipped: qemu-system-arm or defmt-print not installed");
        return;
    }
    let log = boot("cls");
    let o0 = outputs(&log, 0);
    assert_eq!(o0.len(), 2, "log:\n{log}");
    let mcu = root().join("targets/mcu");
    let bytes = AlignedBytes::from_slice(&std::fs::read(mcu.join("assets/cls.cairn")).unwrap());
    let mut m = HostModel::new(bytes.as_slice()).unwrap();
    let lines = std::fs::read(mcu.join("assets/cls_inputs.bin")).unwrap();
    for (i, line) in lines.chunks_exact(8 + 3 * 48 * 192).enumerate() {
        let width = u32::from_le_bytes(line[..4].try_into().unwrap()) as usize;
        let pixels: Vec<f32> = line[8..].iter().map(|&p| p as f32).collect();
        let input = cairn_tests::cls_preprocess(&pixels, width);
        let y = m.run(&[&input]).unwrap();
        let host: Vec<u8> = y[0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            o0[i], host,
            "line {i}: class probabilities differ from the host"
        );
    }
    assert!(log.contains("accuracy on the samples: 2/2"), "log:\n{log}");
    check_stack(&log);
    println!(
        "{}",
        log.lines()
            .filter(|l| !l.starts_with("out"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The demo fleet: the authority (seed `[0xA0; 32]`, public key in the firmware's
/// `AUTHORITY`), the firmware's device key and a peer's.
const AUTHORITY_SEED: [u8; 32] = [0xA0; 32];
const DEVICE_SEED: [u8; 32] = *b"cairn-mcu-demo-device-seed-00001";
const PEER_SEED: [u8; 32] = *b"cairn-mcu-demo-peer-seed-0000002";
const LABELS: [u16; 8] = [7, 8, 1, 7, 8, 5, 6, 9];

fn fleet() -> Vec<u8> {
    let auth = SigningKey::from_bytes(&AUTHORITY_SEED);
    let members =
        [DEVICE_SEED, PEER_SEED].map(|s| SigningKey::from_bytes(&s).verifying_key().to_bytes());
    cairn_sync::testkit::fleet_of(&auth, &members)
}

/// The fleet list built into the firmware is the authority's list of the device and its
/// peer (CAIRN_BLESS=1 rewrites it).
#[test]
fn firmware_fleet_is_current() {
    let path = root().join("targets/mcu/assets/fleet.cfl");
    let fresh = fleet();
    if std::env::var("CAIRN_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read(&path).unwrap();
    assert!(
        committed == fresh,
        "targets/mcu/assets/fleet.cfl is stale: CAIRN_BLESS=1 cargo test -p cairn-tests --release --test mcu_qemu firmware_fleet_is_current"
    );
    let auth = SigningKey::from_bytes(&AUTHORITY_SEED)
        .verifying_key()
        .to_bytes();
    let src = std::fs::read_to_string(root().join("targets/mcu/src/main.rs")).unwrap();
    let list = auth.map(|b| b.to_string()).join(", ");
    assert!(
        src.replace(char::is_whitespace, "")
            .contains(&list.replace(' ', "")),
        "the firmware's AUTHORITY is not the demo authority's public key: {list}"
    );
}

/// The node's parts on the host: the firmware's, with RAM standing in for its flash
/// regions and the CPU backend for its kernel selection.
struct HostParts;
impl Parts for HostParts {
    type Backend = CpuBackend;
    type MemoryFlash = RamFlash<1024>;
    type MemoryRam = FixedRam<24, 32, 8, 128>;
    type LineageFlash = RamFlash<1024>;
    type Items = Revocations<RamFlash<256>, 4>;
}

/// `learn_spec` of targets/mcu/src/main.rs.
fn learn_spec(m: &Model<'_>) -> LearnSpec {
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

struct Buffers {
    model: AlignedBytes,
    arena: AlignedBytes,
    learn: Vec<u32>,
    fleet: Vec<u8>,
}

fn buffers() -> Buffers {
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
fn host_node<'a>(b: &'a mut Buffers, seed: &[u8; 32]) -> Node<'a, HostParts> {
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
    let mut log = CheckpointLog::open(RamFlash::new(4)).unwrap().0;
    let bytes: &mut [u8] = bytemuck_cast(learn.as_mut_slice());
    let adapter = Adapter::open(spec, Some(&m), base, 32, bytes, &mut log).unwrap();
    let items = Revocations::open(RamFlash::new(1), &auth).unwrap();
    Node::new(identity, memory, items)
        .with_sensor(sensor)
        .with_learning(adapter, log)
}

fn bytemuck_cast(w: &mut [u32]) -> &mut [u8] {
    let len = w.len() * 4;
    // SAFETY: u32 storage viewed as bytes (no alignment or validity requirement for u8).
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, len) }
}

/// The 8 frames of targets/mcu/assets/inputs.bin, as the mock sensor bus scales them
/// (u16 pixels, 4096 = 1.0).
fn frames() -> Vec<Vec<f32>> {
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
fn bundle_items(b: &[u8]) -> Vec<Vec<u8>> {
    let mut pos = 4 + 1 + 32 + 8;
    let mut out = Vec::new();
    while &b[pos..pos + 4] != b"CEND" {
        let len = u32::from_le_bytes(b[pos..pos + 4].try_into().unwrap()) as usize;
        out.push(b[pos + 4..pos + 4 + len].to_vec());
        pos += 4 + len;
    }
    out
}

/// The peer's bundle: its records of the same frames (other times), one record signed by a
/// key outside the fleet, and one of its records altered after signing; written and
/// signed by the peer (a member), so the bundle is complete and only those two items fail.
fn peer_bundle() -> Vec<u8> {
    let mut b = buffers();
    let mut peer = host_node(&mut b, &PEER_SEED);
    for (i, x) in frames().iter().enumerate() {
        peer.observe(x, Some(LABELS[i]), 100, 100 + i as u64)
            .unwrap();
    }
    let mut own = Vec::new();
    peer.export_own(&mut |b| {
        own.extend_from_slice(b);
        true
    })
    .unwrap();
    let mut items = bundle_items(&own);
    let outsider = SigningKey::from_bytes(&[0x55; 32]);
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
    let key = SigningKey::from_bytes(&PEER_SEED);
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let mut w = BundleWriter::start(&key, 0, &mut sink);
    for it in &items {
        w.item(it, &mut sink);
    }
    w.finish(&key, &mut sink);
    out
}

/// The fleet authority's statement revoking the peer's key.
fn revoke_peer() -> Vec<u8> {
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

/// What the firmware must log for a gate outcome (the decision, its reason, how many
/// records were held out).
fn gate_line(what: &str, on: &str, o: &Outcome) -> (String, String) {
    match o {
        Outcome::Promoted { after, .. } => (
            format!("gate {what} on {on}: promoted ("),
            format!(", {} held out)", after.n_old + after.n_new),
        ),
        Outcome::Rejected { reason, after, .. } => (
            format!(
                "gate {what} on {on}: rejected ({};",
                match reason {
                    GateReject::Forgetting { .. } => "forgetting",
                    GateReject::NoGain { .. } => "no gain",
                    GateReject::NoHeldOut => "no held-out record",
                }
            ),
            format!(", {} held out)", after.n_old + after.n_new),
        ),
    }
}

fn assert_logged(log: &str, (start, end): &(String, String)) {
    assert!(
        log.lines()
            .any(|l| l.starts_with(start.as_str()) && l.ends_with(end.as_str())),
        "the firmware does not log `{start}...{end}` as the host node decides:\n{log}"
    );
}

#[test]
fn qemu_cortex_m4_matches_the_host_bit_for_bit() {
    if !tools_present() {
        eprintln!("skipped: qemu-system-arm or defmt-print not installed");
        return;
    }
    let mcu = root().join("targets/mcu");
    // The peer's bundle goes where the firmware reads it through semihosting.
    std::fs::create_dir_all(mcu.join("target")).unwrap();
    let peer = peer_bundle();
    std::fs::write(mcu.join("target/peer.cbdl"), &peer).unwrap();
    let revocation = revoke_peer();
    std::fs::write(mcu.join("target/revoke.item"), &revocation).unwrap();
    let _ = std::fs::remove_file(mcu.join("target/bundle.cbdl"));
    let log = boot("cairn-mcu");
    let (o0, o1) = (outputs(&log, 0), outputs(&log, 1));
    assert_eq!((o0.len(), o1.len()), (8, 8), "log:\n{log}");
    // The host interpreter on the same model bytes and inputs.
    let bytes = AlignedBytes::from_slice(&std::fs::read(mcu.join("assets/digits.cairn")).unwrap());
    let mut m = HostModel::new(bytes.as_slice()).unwrap();
    let raw = std::fs::read(mcu.join("assets/inputs.bin")).unwrap();
    for (i, x) in raw.chunks_exact(256).take(8).enumerate() {
        let input: Vec<f32> = x
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let y = m.run(&[&input]).unwrap();
        let host0: Vec<u8> = y[0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let host1: Vec<u8> = y[1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(o0[i], host0, "input {i}: class scores differ from the host");
        assert_eq!(o1[i], host1, "input {i}: features differ from the host");
    }
    assert!(log.contains("after learning: 8/8"), "log:\n{log}");
    check_stack(&log);

    // The same node on the host, on the same frames and the same peer bundle.
    let mut b = buffers();
    let mut host = host_node(&mut b, &DEVICE_SEED);
    for (i, x) in frames().iter().enumerate() {
        host.observe(x, Some(LABELS[i]), 100, i as u64).unwrap();
    }
    let first = host.learn(&mut |_, _| {}).unwrap();
    assert_logged(&log, &gate_line("learn", "own records", &first));
    // The bundle the firmware wrote through semihosting is the host node's, byte for byte
    // (same records, deterministic signatures), and imports: 8 signed records.
    let fw_bundle = std::fs::read(mcu.join("target/bundle.cbdl")).expect("the firmware's bundle");
    let mut host_bundle = Vec::new();
    let n = host
        .export_own(&mut |b| {
            host_bundle.extend_from_slice(b);
            true
        })
        .unwrap();
    assert_eq!(n, 8);
    assert!(
        fw_bundle == host_bundle,
        "the firmware's bundle differs from the host node's"
    );
    let auth = SigningKey::from_bytes(&AUTHORITY_SEED);
    let fleet_bytes = fleet();
    let fleet =
        cairn_sync::fleet::Fleet::verify(&fleet_bytes, &auth.verifying_key().to_bytes()).unwrap();
    let mut replica = cairn_sync::replica::Replica::default();
    let rep = cairn_sync::bundle::import(&fw_bundle, 0, &mut replica, &fleet, &[0; 32]).unwrap();
    assert!(rep.complete, "{rep:?}");
    assert_eq!(rep.stored, 8, "{rep:?}");

    // Apply: the peer's 8 records stored, the outsider's and the altered one refused, on
    // the host and (the same line) on the firmware; then the second gate verdict.
    let rep = host.import_bundle(&peer, 0).unwrap();
    let r = |k: Reject| rep.rejected[k as usize];
    let (nm, bad, forged) = (
        r(Reject::NotMember),
        r(Reject::BadSignature),
        r(Reject::Forged),
    );
    assert_eq!((rep.stored, nm, bad + forged), (8, 1, 1), "{rep:?}");
    let other: u32 = rep.rejected.iter().sum::<u32>() - nm - bad - forged;
    let line = format!(
        "apply bundle: {} bytes, stored {}, duplicates {}, refused: not-member {nm}, bad-signature {bad}, forged {forged}, other {other}; complete {}, ~",
        peer.len(),
        rep.stored,
        rep.duplicates,
        rep.complete
    );
    assert!(
        log.contains(&line),
        "the firmware does not log `{line}`:\n{log}"
    );
    let a = *host.report();
    // With an allocator the host node also signs its promoted adapter as a contribution
    // (counted in the report though an apply-only set keeps no item); the firmware has none to
    // sign with. Contributions *received* must agree.
    let received = a.contributions - host.stats().contributions_made;
    let line = format!(
        "apply report: records {}, unusable {}, deleted {}, contributions {}, store failures {}; memory {} records",
        a.records,
        a.unusable,
        a.deleted,
        received,
        a.store_failures,
        host.memory().len()
    );
    assert!(
        log.contains(&line),
        "the firmware does not log `{line}`:\n{log}"
    );
    assert_eq!(host.memory().len(), 16);
    let outsider = cairn_sync::item::node_id(
        &SigningKey::from_bytes(&[0x55; 32])
            .verifying_key()
            .to_bytes(),
    );
    assert!(host.memory().metas().iter().all(|m| m.origin != outsider));
    assert_eq!(host.apply_with(&mut [0u8; 4]).unwrap(), None);
    assert!(
        log.contains("gate merge: no contribution kept to judge"),
        "log:\n{log}"
    );
    let second = host.learn(&mut |_, _| {}).unwrap();
    assert_logged(&log, &gate_line("learn", "own and peer records", &second));

    // Revoke: the peer's 8 records leave memory, and its bundle is then refused whole.
    assert_eq!(host.accept(&revocation), Ok(true));
    assert_eq!(host.memory().len(), 8);
    let line = format!(
        "revocation: new true, 1 held, 8 records deleted; memory {} records",
        host.memory().len()
    );
    assert!(
        log.contains(&line),
        "the firmware does not log `{line}`:\n{log}"
    );
    assert_eq!(
        host.import_bundle(&peer, 0).unwrap_err(),
        NodeError::Sync(Reject::Revoked)
    );
    assert!(
        log.contains("peer bundle again: refused (revoked sender)"),
        "log:\n{log}"
    );
    println!(
        "{}",
        log.lines()
            .filter(|l| !l.starts_with("out"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

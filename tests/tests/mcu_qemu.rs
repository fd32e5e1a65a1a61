//! The Cortex-M4 firmware (`targets/mcu`) booted in QEMU gives the host interpreter's
//! outputs byte for byte, its bundled model and fleet list are what the converter and the
//! fleet authority make today, and its `cairn_node::Node` decides what the same node on the
//! host decides: the gate's verdicts, the bundle it exports (byte for byte), and what it
//! applies from a peer's bundle (forged and non-member items refused), and how it honours
//! the authority's revocation of that peer.
//!
//! Needs `qemu-system-arm` and `defmt-print` (tests/run.sh installs both and sets
//! CAIRN_REQUIRE_QEMU=1, which turns their absence into a failure instead of a skip).

#[path = "../../targets/mcu/host_twin.rs"]
mod twin;

use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;
use cairn_learn::gate::Reject as GateReject;
use cairn_node::adapter::Outcome;
use cairn_node::NodeError;
use cairn_sync::Reject;
use cairn_sync::Store as _;
use ed25519_dalek::SigningKey;
use twin::{
    boot, buffers, fleet, frames, host_node, peer_bundle, revoke_peer, root, tools_present,
    AUTHORITY_SEED, DEVICE_SEED, LABELS,
};

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
    let log = boot("cls", &[]);
    let o0 = outputs(&log, 0);
    assert_eq!(o0.len(), 2, "log:\n{log}");
    let mcu = root().join("targets/mcu");
    let bytes = AlignedBytes::from_slice(&std::fs::read(mcu.join("assets/cls.cairn")).unwrap());
    let mut m = HostModel::new(bytes.as_slice()).unwrap();
    let lines = std::fs::read(mcu.join("assets/cls_inputs.bin")).unwrap();
    // Op by op: the firmware's digest of every op's output on the first line equals the
    // host interpreter's (the DSP and FPU kernels give the CPU backend's bytes at every op,
    // not only where they survive to the output).
    let firmware: Vec<(u32, u32)> = log
        .lines()
        .filter_map(|l| l.strip_prefix("digest "))
        .map(|r| {
            let mut it = r.split(' ').map(|v| v.trim().parse::<u32>().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        })
        .collect();
    let line = &lines[..8 + 3 * 48 * 192];
    let width = u32::from_le_bytes(line[..4].try_into().unwrap()) as usize;
    let pixels: Vec<f32> = line[8..].iter().map(|&p| p as f32).collect();
    let host = op_digests(
        bytes.as_slice(),
        &cairn_tests::cls_preprocess(&pixels, width),
    );
    assert_eq!(firmware.len(), host.len(), "ops with a digest; log:\n{log}");
    for ((i, f), h) in firmware.iter().zip(&host) {
        assert_eq!(
            f, h,
            "op {i}: the firmware's output bytes differ from the host's"
        );
    }
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
            .filter(|l| !l.starts_with("out") && !l.starts_with("digest"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// FNV-1a (32-bit) of each op's output bytes, in execution order, running `model` on
/// the host's CPU backend with `input` (what `targets/mcu/src/op_profile.rs` logs).
fn op_digests(model: &[u8], input: &[f32]) -> Vec<u32> {
    use cairn_core::{Backend, ExecError, Interpreter, KernelId, Model, OpCall, TensorMut};
    struct Digests(cairn_kernels::CpuBackend, Vec<u32>);
    impl Backend for Digests {
        fn name(&self) -> &'static str {
            "digests"
        }
        fn supports(&self, k: KernelId) -> bool {
            self.0.supports(k)
        }
        fn execute(&mut self, call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
            let TensorMut { info, data } = out;
            let r = self.0.execute(
                call,
                TensorMut {
                    info,
                    data: &mut *data,
                },
            );
            let h = data.iter().fold(0x811c_9dc5u32, |h, &b| {
                (h ^ b as u32).wrapping_mul(0x0100_0193)
            });
            self.1.push(h);
            r
        }
    }
    let m = Model::parse(model).unwrap();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it =
        Interpreter::new(m, Digests(cairn_kernels::CpuBackend, vec![]), &mut arena).unwrap();
    it.set_input_f32(0, input).unwrap();
    it.invoke().unwrap();
    std::mem::take(&mut it.backend_mut().1)
}

/// The fleet list built into the firmware is the authority's list of the device, its peer
/// and a host node (CAIRN_BLESS=1 rewrites it).
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

/// The contribution `host` kept that is not in `before`: the firmware logs the same id (the same
/// adapter bits, signed by the same key) and as many kept.
fn assert_contribution_logged(
    log: &str,
    host: &cairn_node::Node<'_, twin::HostParts>,
    before: &[[u8; 16]],
) -> [u8; 16] {
    let new: Vec<[u8; 16]> = host
        .items()
        .ids()
        .iter()
        .filter(|id| !before.contains(id))
        .copied()
        .collect();
    assert_eq!(new.len(), 1, "one new contribution");
    let line = format!(
        "contribution {:?}: signed, {} kept",
        new[0],
        host.items().len()
    );
    assert!(
        log.contains(&line),
        "the firmware does not log `{line}`:\n{log}"
    );
    new[0]
}

/// The firmware logs the merged adapter's digest of `n` contributions as `host` computes it.
fn assert_merged_logged(log: &str, host: &cairn_node::Node<'_, twin::HostParts>, n: usize) {
    let digest = host.merged_digest().expect("a merge");
    let line = format!("merged {n} contributions: {digest:?}");
    assert!(
        log.contains(&line),
        "the firmware does not log `{line}`:\n{log}"
    );
}

fn sorted(ids: &[[u8; 16]]) -> Vec<[u8; 16]> {
    let mut v = ids.to_vec();
    v.sort();
    v
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
    let log = boot("cairn-mcu", &[]);
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
    // Promoted: both sign the adapter as a contribution, the same bits (the host and the
    // Cortex-M4 train alike), and keep it.
    assert!(first.promoted());
    let own_first = assert_contribution_logged(&log, &host, &[]);
    // The bundle the firmware wrote through semihosting is the host node's, byte for byte
    // (same records and contribution, deterministic signatures), and imports: 8 signed
    // records and the contribution.
    let fw_bundle = std::fs::read(mcu.join("target/bundle.cbdl")).expect("the firmware's bundle");
    let mut host_bundle = Vec::new();
    let n = host
        .export_own(&mut |b| {
            host_bundle.extend_from_slice(b);
            true
        })
        .unwrap();
    assert_eq!(n, 9);
    assert!(
        fw_bundle == host_bundle,
        "the firmware's bundle differs from the host node's"
    );
    let auth = SigningKey::from_bytes(&AUTHORITY_SEED);
    let fleet_bytes = fleet();
    let fleet =
        cairn_sync::fleet::Fleet::verify(&fleet_bytes, &auth.verifying_key().to_bytes()).unwrap();
    let mut replica = cairn_sync::replica::Replica::default();
    let base = host.base_model();
    let rep = cairn_sync::bundle::import(&fw_bundle, 0, &mut replica, &fleet, &base).unwrap();
    assert!(rep.complete, "{rep:?}");
    assert_eq!(rep.stored, 9, "{rep:?}");

    // Apply: the peer's 8 records and its contribution stored, the outsider's and the
    // altered record refused, on the host and (the same line) on the firmware; then the
    // merge and the second gate verdict.
    let rep = host.import_bundle(&peer, 0).unwrap();
    let r = |k: Reject| rep.rejected[k as usize];
    let (nm, bad, forged) = (
        r(Reject::NotMember),
        r(Reject::BadSignature),
        r(Reject::Forged),
    );
    assert_eq!((rep.stored, nm, bad + forged), (9, 1, 1), "{rep:?}");
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
    // Contributions: its own and the peer's.
    assert_eq!(a.contributions, 2);
    let line = format!(
        "apply report: records {}, unusable {}, deleted {}, contributions {}, store failures {}; memory {} records",
        a.records,
        a.unusable,
        a.deleted,
        a.contributions,
        a.store_failures,
        host.memory().len()
    );
    assert!(
        log.contains(&line),
        "the firmware does not log `{line}`:\n{log}"
    );
    assert_eq!(host.memory().len(), 16);
    let outsider = cairn_sync::item::node_id(
        &SigningKey::from_bytes(&twin::OUTSIDER_SEED)
            .verifying_key()
            .to_bytes(),
    );
    assert!(host.memory().metas().iter().all(|m| m.origin != outsider));
    // The merge of both contributions, judged by the gate: the same verdict and the same
    // merged adapter, bit for bit, as the firmware's.
    let merged = host.apply().unwrap().expect("a new contribution set");
    assert_logged(
        &log,
        &gate_line("merge", "own and peer contributions", &merged),
    );
    assert_merged_logged(&log, &host, 2);
    let held = host.items().ids().to_vec();
    let second = host.learn(&mut |_, _| {}).unwrap();
    assert_logged(&log, &gate_line("learn", "own and peer records", &second));
    let mut kept = vec![own_first];
    if second.promoted() {
        kept.push(assert_contribution_logged(&log, &host, &held));
    }

    // Revoke: the peer's 8 records leave memory, and its bundle is then refused whole.
    assert_eq!(host.accept(&revocation), Ok(true));
    assert_eq!(host.memory().len(), 8);
    // Its contribution leaves the set; the node's own stay.
    assert_eq!(host.items().ids(), sorted(&kept));
    let line = format!(
        "revocation: new true, 1 held, 8 records deleted; memory {} records, {} contributions",
        host.memory().len(),
        kept.len()
    );
    assert!(
        log.contains(&line),
        "the firmware does not log `{line}`:\n{log}"
    );
    let after = host.apply().unwrap().expect("the set changed");
    assert_logged(
        &log,
        &gate_line("merge", "contributions after the revocation", &after),
    );
    assert_merged_logged(&log, &host, kept.len());
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

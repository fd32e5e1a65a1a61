//! The Cortex-M4 firmware (`targets/mcu`) booted in QEMU gives the host interpreter's
//! outputs byte for byte, and its bundled model is what the converter makes today.
//!
//! Needs `qemu-system-arm` and `defmt-print` (tests/run.sh installs both and sets
//! CAIRN_REQUIRE_QEMU=1, which turns their absence into a failure instead of a skip).

use std::path::Path;
use std::process::Command;

use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;

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

#[test]
fn qemu_cortex_m4_matches_the_host_bit_for_bit() {
    if !tools_present() {
        eprintln!("skipped: qemu-system-arm or defmt-print not installed");
        return;
    }
    let mcu = root().join("targets/mcu");
    let out = Command::new("cargo")
        .args(["run", "--release", "--quiet", "--bin", "cairn-mcu"])
        .current_dir(&mcu)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo run in targets/mcu");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "firmware failed in QEMU:\n{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    // The stack stays within the budget targets/mcu/size.sh counts in the RAM figure.
    let stack: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("stack used: "))
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .expect("the firmware reports its stack use");
    assert!(
        stack <= 16_384,
        "stack {stack} bytes exceeds the 16 KiB budget"
    );
    // The bundle the firmware wrote through semihosting imports on the host: 8 signed
    // records from the device, complete and authenticated.
    let bundle = std::fs::read(mcu.join("target/bundle.cbdl")).expect("the firmware's bundle");
    let auth = ed25519_dalek::SigningKey::from_bytes(&[0xA0; 32]);
    let device = ed25519_dalek::SigningKey::from_bytes(b"cairn-mcu-demo-device-seed-00001");
    let fleet_bytes = cairn_sync::testkit::fleet_of(&auth, &[device.verifying_key().to_bytes()]);
    let fleet =
        cairn_sync::fleet::Fleet::verify(&fleet_bytes, &auth.verifying_key().to_bytes()).unwrap();
    let mut replica = cairn_sync::replica::Replica::default();
    let rep = cairn_sync::bundle::import(&bundle, 0, &mut replica, &fleet, &[0; 32]).unwrap();
    assert!(rep.complete, "{rep:?}");
    assert_eq!(rep.stored, 8, "{rep:?}");
    println!(
        "{}",
        log.lines()
            .filter(|l| !l.starts_with("out"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

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

#[test]
fn qemu_cortex_m4_matches_the_host_bit_for_bit() {
    if !tools_present() {
        eprintln!("skipped: qemu-system-arm or defmt-print not installed");
        return;
    }
    let mcu = root().join("targets/mcu");
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

//! ONNX backend node tests (from the onnx==1.22.0 wheel): every case listed as `pass` in
//! tests/node_expectations.txt must pass. `CAIRN_NODE_BLESS=1` rewrites the file from the
//! current results (every case whose ops cairn supports is listed, pass or not, with the
//! reason).

use cairn_tests::{case_ops, onnx_node_dir, repo_root, run_node_case, SUPPORTED_OPS};

#[test]
fn onnx_node_conformance() {
    let dir = onnx_node_dir().expect("onnx node tests not found: create .venv with onnx==1.22.0 (see README) or set CAIRN_ONNX_NODE_DIR");
    let exp_path = repo_root().join("tests/node_expectations.txt");
    let bless = std::env::var("CAIRN_NODE_BLESS").is_ok();
    if bless {
        let mut cases: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        cases.sort();
        let mut lines = vec![
            "# ONNX node tests (onnx 1.22.0) whose ops are all supported by cairn.".to_string(),
            "# `pass`: must pass in CI (f32 within 1e-5 relative + 1e-6 absolute; integer outputs exact).".to_string(),
            "# `unsupported: ...`: a documented gap, with the reason the converter or runtime gave.".to_string(),
        ];
        for c in cases {
            let Ok(ops) = case_ops(&c) else { continue };
            if ops.is_empty() || !ops.iter().all(|o| SUPPORTED_OPS.contains(&o.as_str())) {
                continue;
            }
            let name = c.file_name().unwrap().to_string_lossy().into_owned();
            match run_node_case(&c) {
                Ok(_) => lines.push(format!("{name} pass")),
                Err(e) => lines.push(format!(
                    "{name} unsupported: {}",
                    format!("{e:#}").replace('\n', " ")
                )),
            }
        }
        std::fs::write(&exp_path, lines.join("\n") + "\n").unwrap();
    }
    let text = std::fs::read_to_string(&exp_path).expect("tests/node_expectations.txt");
    let (mut passed, mut failed, mut gaps) = (0, Vec::new(), 0);
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, status) = line.split_once(' ').unwrap_or((line, ""));
        if status != "pass" {
            gaps += 1;
            continue;
        }
        match run_node_case(&dir.join(name)) {
            Ok(_) => passed += 1,
            Err(e) => failed.push(format!("{name}: {e:#}")),
        }
    }
    println!(
        "ONNX node tests: {passed} passed, {} failed, {gaps} listed as unsupported",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "node tests listed as pass failed:\n{}",
        failed.join("\n")
    );
    assert!(passed > 0, "no node test ran");
}

//! `cairn bench` measures each engine's memory in a process of its own: its JSON report has
//! a baseline (the process loading no engine) and, per engine, the peak RSS and the peak
//! over the baseline; cairn's row also has its model and arena bytes. On the bundled int8
//! text-direction classifier, cairn's process peaks below ONNX Runtime's (a structural
//! comparison of two memory figures, not a timing).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[cfg(target_os = "linux")]
#[test]
fn bench_reports_memory_per_engine_and_cairn_peaks_below_onnx_runtime_on_cls() {
    if cairn_ort::find_library().is_none() {
        eprintln!("skipped: libonnxruntime not found (set ORT_DYLIB_PATH)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join("models/zoo/ppocr_cls/cls_qdq.onnx");
    let json = std::env::temp_dir().join(format!("cairn-bench-memory-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("bench")
        .arg(&model)
        .args([
            "--input-shape",
            "1,3,48,192",
            "--runs",
            "1",
            "--warmup",
            "0",
        ])
        .arg("--no-tract")
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cairn bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let baseline = report["memory"]["baseline_peak_rss_kb"]
        .as_u64()
        .expect("a baseline");
    assert!(baseline > 0, "{report:#}");
    let peak = |engine: &str| {
        let m = &report["engines"][engine]["memory"];
        let peak = m["peak_rss_kb"].as_u64().expect("peak_rss_kb");
        let over = m["rss_over_baseline_kb"]
            .as_u64()
            .expect("rss_over_baseline_kb");
        assert_eq!(over, peak.saturating_sub(baseline), "{engine}: {m}");
        peak
    };
    let (cairn, ort) = (peak("cairn-int8"), peak("ort-int8-qdq"));
    let cairn_mem = &report["engines"]["cairn-int8"]["memory"];
    assert_eq!(cairn_mem["model_bytes"], report["flash_bytes"]);
    assert_eq!(cairn_mem["arena_bytes"], report["arena_bytes"]);
    assert!(
        cairn < ort,
        "cairn's process peaks at {cairn} kB, ONNX Runtime's at {ort} kB:\n{stdout}"
    );
    assert!(
        stdout.contains("each engine in a process of its own"),
        "{stdout}"
    );
}

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
    // `CAIRN_NODE_ONLY=lstm,gru`: run just the cases whose names hold one of the words and
    // print each result (a quick look while working on an op; asserts nothing).
    if let Ok(words) = std::env::var("CAIRN_NODE_ONLY") {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| words.split(',').any(|w| n.contains(w)))
            .collect();
        names.sort();
        for name in names {
            match run_node_case(&dir.join(&name)) {
                Ok(e) => println!("{name}: pass (max rel err {e:.2e})"),
                Err(e) => println!("{name}: FAIL {}", format!("{e:#}").replace('\n', " ")),
            }
        }
        return;
    }
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

const LP_POOL_INT8: &str =
    "|x|^p in 8 bits loses the small windows, and the p-th root magnifies the loss near 0";
// The expanded (function-body) forms of attention, softmax and log-sum-exp cases.
const MASKED_SCORES_INT8: &str = "a causal or padding mask adds -inf or a large negative to the scores: their 8-bit range spans the mask and leaves the scores a few steps";
const LARGE_NUMBER_INT8: &str = "inputs span 0..10003 but differ by 1: 8 bits cannot hold both";
const LOG_SUM_EXP_INT8: &str =
    "exp of inputs up to 60 spans 26 decades: 8 bits keep only the largest terms";

/// The same cases through the int8 path (calibrated on their own inputs): the int8 kernels
/// of every op must land within a few quantization steps of the float result.
#[test]
fn onnx_node_cases_in_int8() {
    let dir = onnx_node_dir().expect("onnx node tests");
    let text = std::fs::read_to_string(repo_root().join("tests/node_expectations.txt")).unwrap();
    let (mut ran, mut bad) = (0, Vec::new());
    let mut worst = (0.0f32, String::new());
    // Cases whose data int8 cannot represent, with the reason.
    let beyond_int8 = [
        (
            "test_softmax_large_number",
            "inputs span 0..10003 but differ by 1: 8 bits cannot hold both",
        ),
        (
            "test_logsoftmax_large_number",
            "inputs span 0..10003 but differ by 1: 8 bits cannot hold both",
        ),
        (
            "test_hardmax_axis_0",
            "a one-hot of the largest value: random inputs within one step of it tie in int8",
        ),
        (
            "test_hardmax_axis_1",
            "a one-hot of the largest value: random inputs within one step of it tie in int8",
        ),
        (
            "test_round",
            "inputs sit on x.5 ties: half an input step moves them across a rounding boundary",
        ),
        (
            "test_tan",
            "inputs reach near tan's pole, where one input step spans much of the output range",
        ),
        (
            "test_thresholdedrelu_example",
            "an input sits exactly on the threshold: half an input step moves it across the jump",
        ),
        (
            "test_reduce_min_default_axes_keepdims_example",
            "the one output (1) is 1/60 of the input range: half an input step is 6% of it",
        ),
        (
            "test_onehot_with_axis",
            "float indices compared for equality: an int8 step moves them off the integers",
        ),
        (
            "test_onehot_with_negative_axis",
            "float indices compared for equality: an int8 step moves them off the integers",
        ),
        (
            "test_acosh_example",
            "an input sits at 1, where acosh's slope is infinite",
        ),
        // LpPool is (Σ |x|ᵖ)^(1/p): 8 bits of |x|ᵖ (range up to max|x|ᵖ) round small
        // windows to a few steps, and the p-th root, steep near 0, magnifies that.
        ("test_lppool_1d_default", LP_POOL_INT8),
        ("test_lppool_2d_default", LP_POOL_INT8),
        ("test_lppool_2d_pads", LP_POOL_INT8),
        ("test_lppool_2d_same_lower", LP_POOL_INT8),
        ("test_lppool_2d_same_upper", LP_POOL_INT8),
        ("test_lppool_3d_default", LP_POOL_INT8),
        ("test_attention_3d_causal_expanded", MASKED_SCORES_INT8),
        (
            "test_attention_3d_diff_heads_sizes_causal_expanded",
            MASKED_SCORES_INT8,
        ),
        ("test_attention_3d_gqa_causal_expanded", MASKED_SCORES_INT8),
        (
            "test_attention_4d_attn_mask_3d_causal_expanded",
            MASKED_SCORES_INT8,
        ),
        (
            "test_attention_4d_attn_mask_4d_causal_expanded",
            MASKED_SCORES_INT8,
        ),
        ("test_attention_4d_causal_expanded", MASKED_SCORES_INT8),
        (
            "test_attention_4d_diff_heads_mask4d_padded_kv_expanded",
            MASKED_SCORES_INT8,
        ),
        (
            "test_attention_4d_diff_heads_sizes_causal_expanded",
            MASKED_SCORES_INT8,
        ),
        ("test_attention_4d_gqa_causal_expanded", MASKED_SCORES_INT8),
        (
            "test_attention_4d_softcap_neginf_mask_expanded",
            MASKED_SCORES_INT8,
        ),
        (
            "test_attention_4d_softcap_neginf_mask_poison_expanded",
            MASKED_SCORES_INT8,
        ),
        (
            "test_attention_4d_with_past_and_present_qk_matmul_bias_3d_mask_causal_expanded",
            MASKED_SCORES_INT8,
        ),
        (
            "test_attention_4d_with_past_and_present_qk_matmul_bias_4d_mask_causal_expanded",
            MASKED_SCORES_INT8,
        ),
        (
            "test_flexattention_causal_mask_expanded_ver26",
            MASKED_SCORES_INT8,
        ),
        ("test_logsoftmax_large_number_expanded", LARGE_NUMBER_INT8),
        (
            "test_logsoftmax_large_number_expanded_ver18",
            LARGE_NUMBER_INT8,
        ),
        ("test_softmax_large_number_expanded", LARGE_NUMBER_INT8),
        (
            "test_softmax_large_number_expanded_ver18",
            LARGE_NUMBER_INT8,
        ),
        (
            "test_reduce_log_sum_exp_do_not_keepdims_example_expanded",
            LOG_SUM_EXP_INT8,
        ),
        (
            "test_reduce_log_sum_exp_do_not_keepdims_random_expanded",
            LOG_SUM_EXP_INT8,
        ),
        (
            "test_reduce_log_sum_exp_keepdims_example_expanded",
            LOG_SUM_EXP_INT8,
        ),
        (
            "test_reduce_log_sum_exp_keepdims_random_expanded",
            LOG_SUM_EXP_INT8,
        ),
        (
            "test_reduce_log_sum_exp_negative_axes_keepdims_example_expanded",
            LOG_SUM_EXP_INT8,
        ),
        (
            "test_reduce_log_sum_exp_negative_axes_keepdims_random_expanded",
            LOG_SUM_EXP_INT8,
        ),
        ("test_attention_3d_causal", MASKED_SCORES_INT8),
        (
            "test_attention_3d_diff_heads_sizes_causal",
            MASKED_SCORES_INT8,
        ),
        ("test_attention_3d_gqa_causal", MASKED_SCORES_INT8),
        ("test_attention_4d_attn_mask_3d_causal", MASKED_SCORES_INT8),
        ("test_attention_4d_attn_mask_4d_causal", MASKED_SCORES_INT8),
        ("test_attention_4d_causal", MASKED_SCORES_INT8),
        (
            "test_attention_4d_diff_heads_mask4d_padded_kv",
            MASKED_SCORES_INT8,
        ),
        (
            "test_attention_4d_diff_heads_sizes_causal",
            MASKED_SCORES_INT8,
        ),
        ("test_attention_4d_gqa_causal", MASKED_SCORES_INT8),
        ("test_attention_4d_softcap_neginf_mask", MASKED_SCORES_INT8),
        (
            "test_attention_4d_softcap_neginf_mask_poison",
            MASKED_SCORES_INT8,
        ),
        (
            "test_attention_4d_with_past_and_present_qk_matmul_bias_3d_mask_causal",
            MASKED_SCORES_INT8,
        ),
        (
            "test_attention_4d_with_past_and_present_qk_matmul_bias_4d_mask_causal",
            MASKED_SCORES_INT8,
        ),
    ];
    for line in text.lines().filter(|l| l.ends_with(" pass")) {
        let name = line.split(' ').next().unwrap();
        if beyond_int8.iter().any(|(n, _)| *n == name) {
            continue;
        }
        match cairn_tests::run_node_case_int8(&dir.join(name)) {
            Ok(Some((_, rel))) => {
                ran += 1;
                if rel > worst.0 {
                    worst = (rel, name.to_string());
                }
                // Inputs, weights and outputs each carry up to half a step of 1/255 of
                // their range; allow 3% of the output range.
                if rel > 0.03 {
                    bad.push(format!(
                        "{name}: error {:.1}% of the output range",
                        rel * 100.0
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => bad.push(format!("{name}: {e:#}")),
        }
    }
    println!(
        "int8 node cases: {ran} ran, {} beyond tolerance; worst {:.2}% ({})",
        bad.len(),
        worst.0 * 100.0,
        worst.1
    );
    for b in &bad {
        println!("  {b}");
    }
    assert!(ran > 50, "too few int8 cases ran");
    assert!(bad.is_empty());
}

/// f32 cases in the node-test layout for ops whose upstream cases use other dtypes
/// (tests/data/node_extra, made by its make.py with numpy as the reference): all must pass.
#[test]
fn extra_f32_node_cases() {
    let dir = repo_root().join("tests/data/node_extra");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data/node_extra")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            run_node_case(c)
                .err()
                .map(|e| format!("{}: {e:#}", c.display()))
        })
        .collect();
    println!("extra f32 node cases: {} ran", cases.len());
    assert!(!cases.is_empty(), "no extra node case found");
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

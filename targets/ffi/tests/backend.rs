//! `cairn_model_set_backend`: `cpu` always; `ort[:EP]` only with the cargo feature `ort`,
//! `gpu` only with the cargo feature `gpu` (else `CAIRN_STATUS_BACKEND_UNAVAILABLE`, with
//! a message). With `ort`, the digits model's top-1 on ORT equals the CPU's, and an
//! execution provider the library lacks falls back to ORT's CPU provider with the message
//! in `cairn_last_error`. ONNX Runtime comes from `ORT_DYLIB_PATH` or the repository's
//! `.venv` (tests/run.sh sets it up). With `gpu` and an adapter (Mesa lavapipe in CI), the
//! digits and cls models' outputs on the GPU equal the CPU's bit for bit; without one
//! (forced in a child process by pointing the Vulkan loader at no driver), the call says
//! so in `cairn_last_error` and the model runs on the CPU. `CAIRN_REQUIRE_GPU` (set by
//! tests/run.sh, which installs lavapipe) turns a missing adapter into a failure.

use std::ffi::CString;

use cairn::*;

fn asset(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../mcu/assets/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn model_bytes() -> Vec<u8> {
    asset("digits.cairn")
}

fn last() -> String {
    let mut b = vec![0 as std::ffi::c_char; 512];
    // SAFETY: 512 bytes of room.
    let n = unsafe { cairn_last_error(b.as_mut_ptr(), b.len()) };
    let s: Vec<u8> = b[..n.min(511)].iter().map(|&c| c as u8).collect();
    String::from_utf8(s).unwrap()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn run(h: u64, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; 64];
    let mut len = 0usize;
    // SAFETY: buffers sized as passed.
    let s = unsafe {
        cairn_model_run(
            h,
            x.as_ptr(),
            x.len(),
            0,
            out.as_mut_ptr(),
            out.len(),
            &mut len,
        )
    };
    assert_eq!(s, CairnStatus::Ok, "{}", last());
    out.truncate(len);
    out
}

fn stats(h: u64) -> CairnBackendStats {
    let mut st = CairnBackendStats::default();
    // SAFETY: valid out pointer.
    assert_eq!(
        unsafe { cairn_model_backend_stats(h, &mut st) },
        CairnStatus::Ok,
        "{}",
        last()
    );
    st
}

fn set(h: u64, name: &str) -> CairnStatus {
    let c = CString::new(name).unwrap();
    // SAFETY: NUL-terminated.
    unsafe { cairn_model_set_backend(h, c.as_ptr()) }
}

#[test]
fn backend_choice() {
    let bytes = model_bytes();
    let mut h = 0u64;
    // SAFETY: valid buffers.
    assert_eq!(
        unsafe { cairn_model_create(bytes.as_ptr(), bytes.len(), &mut h) },
        CairnStatus::Ok
    );
    let mut n = 0usize;
    // SAFETY: valid out pointer.
    assert_eq!(
        unsafe { cairn_model_size(h, 0, 0, &mut n) },
        CairnStatus::Ok
    );
    let xs: Vec<Vec<f32>> = (0..20)
        .map(|k| {
            (0..n)
                .map(|i| ((i * 7 + k * 13) % 17) as f32 / 17.0)
                .collect()
        })
        .collect();
    assert_eq!(set(h, "cpu"), CairnStatus::Ok);
    let cpu: Vec<usize> = xs.iter().map(|x| argmax(&run(h, x))).collect();
    let on_cpu = stats(h);
    assert_eq!(
        on_cpu,
        CairnBackendStats {
            requests: xs.len() as u64,
            ..Default::default()
        }
    );
    // SAFETY: a null out pointer is a status, not a crash.
    assert_eq!(
        unsafe { cairn_model_backend_stats(h, std::ptr::null_mut()) },
        CairnStatus::NullPointer
    );
    assert_eq!(set(h, "tpu"), CairnStatus::BackendUnavailable);
    assert_eq!(
        stats(h),
        on_cpu,
        "a refused backend keeps the model's counters"
    );
    assert!(last().contains("unknown backend"), "{}", last());
    // SAFETY: a null name is a status, not a crash.
    assert_eq!(
        unsafe { cairn_model_set_backend(h, std::ptr::null()) },
        CairnStatus::NullPointer
    );
    if cfg!(feature = "ort") {
        assert_eq!(set(h, "ort"), CairnStatus::Ok, "{}", last());
        let ort: Vec<usize> = xs.iter().map(|x| argmax(&run(h, x))).collect();
        assert_eq!(ort, cpu, "top-1 on ort:cpu");
        let st = stats(h);
        assert_eq!(st.requests, xs.len() as u64, "{st:?}");
        assert!(
            st.accelerating && st.accel_segments >= st.requests,
            "{st:?}"
        );
        assert_eq!(
            st.fallback_segments + st.device_lost + st.timeouts + st.errors,
            0,
            "{st:?}"
        );
        // The PyPI wheel has no QNN provider: a fallback to ORT's CPU provider, said once.
        assert_eq!(set(h, "ort:qnn"), CairnStatus::Ok, "{}", last());
        println!("{}", last());
        assert!(
            last().contains("qnn") && last().contains("CPU provider"),
            "{}",
            last()
        );
        let ort: Vec<usize> = xs.iter().map(|x| argmax(&run(h, x))).collect();
        assert_eq!(ort, cpu, "top-1 on ort:qnn (ORT's CPU provider)");
        assert_eq!(set(h, "ort:tpu"), CairnStatus::BackendUnavailable);
    } else {
        assert_eq!(set(h, "ort:nnapi"), CairnStatus::BackendUnavailable);
        assert!(last().contains("feature `ort`"), "{}", last());
    }
    if !cfg!(feature = "gpu") {
        assert_eq!(set(h, "gpu"), CairnStatus::BackendUnavailable);
        assert!(last().contains("feature `gpu`"), "{}", last());
    }
    assert_eq!(set(h, "cpu"), CairnStatus::Ok);
    let back: Vec<usize> = xs.iter().map(|x| argmax(&run(h, x))).collect();
    assert_eq!(back, cpu);
    assert_eq!(cairn_model_free(h), CairnStatus::Ok);
}

#[cfg(feature = "gpu")]
fn create(bytes: &[u8]) -> (u64, usize) {
    let mut h = 0u64;
    // SAFETY: valid buffers.
    let s = unsafe { cairn_model_create(bytes.as_ptr(), bytes.len(), &mut h) };
    assert_eq!(s, CairnStatus::Ok, "{}", last());
    let mut n = 0usize;
    // SAFETY: valid out pointer.
    assert_eq!(
        unsafe { cairn_model_size(h, 0, 0, &mut n) },
        CairnStatus::Ok
    );
    (h, n)
}

/// Inputs for the two bundled models: deterministic patterns, values from a xorshift
/// stream seeded with `seed`, and for cls the two sample lines of `cls_inputs.bin`
/// (preprocessed as PaddleOCR's cls model expects).
#[cfg(feature = "gpu")]
fn gpu_cases(seed: u64) -> Vec<(&'static str, Vec<Vec<f32>>)> {
    let mut state = seed | 1;
    let mut noise = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    };
    let digits_n = 64;
    let mut digits: Vec<Vec<f32>> = (0..6)
        .map(|k| {
            (0..digits_n)
                .map(|i| ((i * 7 + k * 13) % 17) as f32 / 17.0)
                .collect()
        })
        .collect();
    digits.extend((0..6).map(|_| noise(digits_n, 0.0, 1.0)));
    let cls_n = 3 * 48 * 192;
    let lines = asset("cls_inputs.bin");
    let mut cls: Vec<Vec<f32>> = lines
        .chunks_exact(8 + cls_n)
        .map(|line| {
            let width = u32::from_le_bytes(line[..4].try_into().unwrap()) as usize;
            line[8..]
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    if i % 192 < width {
                        (p as f32 / 255.0 - 0.5) / 0.5
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    assert_eq!(cls.len(), 2, "cls_inputs.bin holds two lines");
    cls.extend((0..2).map(|_| noise(cls_n, -1.0, 1.0)));
    vec![("digits.cairn", digits), ("cls.cairn", cls)]
}

/// Every output of model `h` for `x`, as the C ABI returns them (one run per output).
#[cfg(feature = "gpu")]
fn run_all(h: u64, x: &[f32]) -> Vec<Vec<f32>> {
    let mut outs = Vec::new();
    loop {
        let mut n = 0usize;
        // SAFETY: valid out pointer.
        if unsafe { cairn_model_size(h, 1, outs.len(), &mut n) } != CairnStatus::Ok {
            return outs;
        }
        let mut out = vec![0f32; n];
        let mut len = 0usize;
        // SAFETY: buffers sized as passed.
        let s = unsafe {
            cairn_model_run(
                h,
                x.as_ptr(),
                x.len(),
                outs.len(),
                out.as_mut_ptr(),
                out.len(),
                &mut len,
            )
        };
        assert_eq!(s, CairnStatus::Ok, "{}", last());
        assert_eq!(len, n);
        outs.push(out);
    }
}

/// Outputs on `gpu` equal the CPU's exactly (the f32 outputs are the int8 results
/// dequantized: equal floats, equal int8). `expect_note`: whether `cairn_last_error` must
/// say that every op runs on the CPU (no adapter), else it must say nothing new.
#[cfg(feature = "gpu")]
fn gpu_equals_cpu(expect_note: bool) {
    let seed = std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    for (name, xs) in gpu_cases(seed) {
        let (h, n) = create(&asset(name));
        let ctx = format!("{name}, seed {seed} (CAIRN_SEED)");
        assert_eq!(set(h, "cpu"), CairnStatus::Ok);
        let cpu: Vec<Vec<Vec<f32>>> = xs
            .iter()
            .map(|x| {
                assert_eq!(x.len(), n, "{ctx}");
                run_all(h, x)
            })
            .collect();
        // A known message first: a gpu backend that loads adds none.
        assert_eq!(set(h, "tpu"), CairnStatus::BackendUnavailable);
        assert_eq!(set(h, "gpu"), CairnStatus::Ok, "{ctx}: {}", last());
        if expect_note {
            let note = last();
            println!("{name}: {note}");
            assert!(
                note.contains("gpu: every op runs on the cpu") && note.contains("no GPU adapter"),
                "{ctx}: {note}"
            );
        } else {
            assert!(last().contains("unknown backend"), "{ctx}: {}", last());
        }
        let outputs = run_all(h, &xs[0]).len() as u64;
        for (k, (x, want)) in xs.iter().zip(&cpu).enumerate() {
            // Twice: the second run reuses the device's buffers.
            for rep in 0..2 {
                let got = run_all(h, x);
                assert!(
                    got == *want,
                    "{ctx}: input {k} run {rep}: gpu {got:?} != cpu {want:?}"
                );
            }
        }
        // One request per output per run (`cairn_model_run` returns one output), no fault;
        // with no adapter, the accelerator could not be made and its segments ran on the
        // CPU in every request.
        let st = stats(h);
        assert_eq!(
            st.requests,
            outputs * (1 + 2 * xs.len() as u64),
            "{ctx}: {st:?}"
        );
        assert_eq!(st.device_lost + st.timeouts + st.errors, 0, "{ctx}: {st:?}");
        assert_eq!(st.accelerating, !expect_note, "{ctx}: {st:?}");
        if expect_note {
            assert!(
                st.create_failures >= 1 && st.accel_segments == 0,
                "{ctx}: {st:?}"
            );
            assert!(st.fallback_segments >= st.requests, "{ctx}: {st:?}");
        } else {
            assert!(
                st.create_failures == 0 && st.fallback_segments == 0,
                "{ctx}: {st:?}"
            );
            assert!(st.accel_segments >= st.requests, "{ctx}: {st:?}");
        }
        assert_eq!(set(h, "cpu"), CairnStatus::Ok);
        assert_eq!(
            stats(h),
            CairnBackendStats::default(),
            "{ctx}: counters restart"
        );
        assert_eq!(run_all(h, &xs[0]), cpu[0], "{ctx}: back on the cpu");
        assert_eq!(cairn_model_free(h), CairnStatus::Ok);
    }
}

/// With an adapter, the GPU's outputs equal the CPU's exactly; without one, a skip (or a
/// failure under `CAIRN_REQUIRE_GPU`).
#[cfg(feature = "gpu")]
#[test]
fn gpu_backend() {
    match cairn_gpu::probe() {
        Some(a) => {
            println!("gpu adapter: {} ({}, {})", a.name, a.backend, a.device_type);
            gpu_equals_cpu(false);
        }
        None => {
            assert!(
                std::env::var_os("CAIRN_REQUIRE_GPU").is_none(),
                "CAIRN_REQUIRE_GPU is set but wgpu found no GPU adapter"
            );
            println!("no gpu adapter: the exactness check is skipped (see gpu_without_adapter)");
        }
    }
}

/// No adapter: `cairn_model_set_backend(m, "gpu")` is `CAIRN_STATUS_OK`, says why in
/// `cairn_last_error`, and the model runs on the CPU. The test reruns itself in a child
/// process whose Vulkan loader finds no driver (the environment is per process).
#[cfg(feature = "gpu")]
#[test]
fn gpu_without_adapter() {
    const CHILD: &str = "CAIRN_FFI_NO_ADAPTER_CHILD";
    if std::env::var_os(CHILD).is_some() {
        assert!(
            cairn_gpu::probe().is_none(),
            "the child still found an adapter"
        );
        gpu_equals_cpu(true);
        return;
    }
    let none = "/nonexistent/cairn-no-icd.json";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "gpu_without_adapter",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("VK_ICD_FILENAMES", none)
        .env("VK_DRIVER_FILES", none)
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{log}");
    assert!(out.status.success(), "the child failed:\n{log}");
    assert!(log.contains("1 passed"), "the child ran no test:\n{log}");
}

//! `cairn_model_set_backend`: `cpu` always; `ort[:EP]` only with the cargo feature `ort`
//! (else `CAIRN_STATUS_BACKEND_UNAVAILABLE`, with a message). With it, the digits model's
//! top-1 on ORT equals the CPU's, and an execution provider the library lacks falls back
//! to ORT's CPU provider with the message in `cairn_last_error`. ONNX Runtime comes from
//! `ORT_DYLIB_PATH` or the repository's `.venv` (tests/run.sh sets it up).

use std::ffi::CString;

use cairn::*;

fn model_bytes() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mcu/assets/digits.cairn"
    ))
    .unwrap()
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
    assert_eq!(set(h, "tpu"), CairnStatus::BackendUnavailable);
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
    assert_eq!(set(h, "cpu"), CairnStatus::Ok);
    let back: Vec<usize> = xs.iter().map(|x| argmax(&run(h, x))).collect();
    assert_eq!(back, cpu);
    assert_eq!(cairn_model_free(h), CairnStatus::Ok);
}

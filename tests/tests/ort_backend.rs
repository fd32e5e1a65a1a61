//! The ONNX Runtime backend (`cairn_ort::OrtFactory`, the NPU path) against the CPU
//! backend, on the zoo models, through the heterogeneous driver:
//! - every int8 tensor an ORT segment writes is within 1 LSB of the CPU backend's, given
//!   the same segment inputs (ONNX Runtime requantizes in its own float order), and the
//!   models' top-1 is the CPU backend's on every evaluation sample;
//! - asking for an execution provider the library lacks (the PyPI wheel has only the CPU
//!   one) falls back to ORT's CPU provider with one clear message, and is counted;
//! - an EP error mid-request reruns the segment on the CPU: the request completes with the
//!   CPU result and the counters say what happened.
//!
//! ONNX Runtime comes from `ORT_DYLIB_PATH` or the repository's `.venv`, as in
//! `ort_agreement.rs` (tests/run.sh sets it up); without it these tests fail.

use cairn_core::accel::{AccelFactory, Accelerator};
use cairn_core::emit::AlignedBytes;
use cairn_core::partition::{arena_range, segment_outputs, Partition, Placement, Policy};
use cairn_core::{DType, Interpreter, Model};
use cairn_kernels::hetero::fault::{FaultInjector, Schedule};
use cairn_kernels::hetero::Hetero;
use cairn_kernels::CpuBackend;
use cairn_ort::{Ep, Graph, OrtFactory};
use cairn_tests::{argmax, cls_eval, convert_file, rows, seed_or, zoo};

fn cls() -> AlignedBytes {
    let c = convert_file(
        &zoo().join("ppocr_cls/cls_qdq.onnx"),
        None,
        Some(&[1, 3, 48, 192]),
    )
    .expect("convert cls");
    AlignedBytes::from_slice(&c.bytes)
}

fn digits() -> AlignedBytes {
    let c = convert_file(&zoo().join("digits/digits_mlp_qdq.onnx"), None, None)
        .expect("convert digits");
    AlignedBytes::from_slice(&c.bytes)
}

fn cpu_outputs(m: Model<'_>, x: &[f32]) -> Vec<f32> {
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it = Interpreter::new(m, CpuBackend, &mut arena).expect("load");
    it.set_input_f32(0, x).expect("input");
    it.invoke().expect("run");
    cairn_kernels::host::to_f32(&it.output(0).expect("output"))
}

/// Largest difference, in LSB, between the int8 outputs of every ORT segment and the CPU
/// backend's, each segment run from the CPU's own inputs; and the bytes compared.
fn segment_lsb(
    m: Model<'_>,
    factory: &mut OrtFactory,
    p: &Partition,
    xs: &[Vec<f32>],
) -> (u32, usize) {
    let mut accel = factory.create(&m, p).expect("ORT sessions");
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let mut it = Interpreter::new(m, CpuBackend, &mut arena).expect("load");
    let (mut worst, mut compared) = (0u32, 0usize);
    for x in xs {
        it.set_input_f32(0, x).expect("input");
        for &seg in p.segments() {
            let before = it.arena()[..m.arena_bytes()].to_vec();
            for op in seg.ops() {
                it.invoke_op(op).expect("cpu op");
            }
            if seg.placement == Placement::Cpu {
                continue;
            }
            accel
                .run_segment(&m, seg, &before, &mut staging)
                .expect("ORT segment");
            for t in segment_outputs(&m, seg) {
                let r = arena_range(&m, t).expect("arena tensor");
                let (a, b) = (&it.arena()[r.clone()], &staging[r]);
                // f32 outputs are Dequantize results of int8 values compared here (or
                // the model input's copy); they are checked through top-1 below.
                if m.tensor(t).info.dtype == DType::I8 {
                    for (&u, &v) in a.iter().zip(b) {
                        worst = worst.max((u as i8 as i32 - v as i8 as i32).unsigned_abs());
                    }
                    compared += a.len();
                }
            }
        }
    }
    (worst, compared)
}

fn plan(m: &Model<'_>, f: &OrtFactory) -> Partition {
    Partition::plan(m, &[f], Policy::default()).expect("partition")
}

/// Every other op of `from..from + 60` (by `parity`) on ORT, one op per segment: each ORT
/// op then runs from the CPU backend's own inputs, so [`segment_lsb`] measures ops, not
/// the drift of a whole chain.
struct OneOpEach {
    from: usize,
    parity: usize,
}

impl cairn_core::partition::OpSupport for OneOpEach {
    fn supports_op(&self, m: &Model<'_>, op: usize) -> bool {
        (self.from..self.from + 60).contains(&op)
            && op % 2 == self.parity
            && cairn_ort::export::op_exportable(m, op)
    }
}

/// The largest per-op int8 difference from the CPU backend over every exportable op.
fn per_op_lsb(m: Model<'_>, f: &mut OrtFactory, xs: &[Vec<f32>]) -> (u32, usize) {
    let (mut worst, mut compared) = (0, 0);
    for from in (0..m.n_ops()).step_by(60) {
        for parity in 0..2 {
            let sel = OneOpEach { from, parity };
            let p = Partition::plan(&m, &[&sel], Policy::default()).expect("partition");
            if p.uses_accelerator() {
                let (w, c) = segment_lsb(m, f, &p, xs);
                worst = worst.max(w);
                compared += c;
            }
        }
    }
    (worst, compared)
}

/// Max LSB and top-1 agreement on `xs`, for one graph mode.
fn agreement(name: &str, bytes: &AlignedBytes, xs: &[Vec<f32>], graph: Graph) {
    let m = Model::parse(bytes.as_slice()).expect("parse");
    let mut f = OrtFactory::new(Ep::Cpu);
    f.graph = graph;
    let p = plan(&m, &f);
    let on_ort = p.ops_on(Placement::Accel(0));
    assert!(on_ort > 0, "{name}: nothing placed on ort");
    let (worst_chain, _) = segment_lsb(m, &mut f, &p, xs);
    let (worst, compared) = per_op_lsb(m, &mut f, xs);
    // End to end through the driver: top-1 equal to the CPU backend's.
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        f,
        Policy::default(),
    )
    .expect("load");
    assert_eq!(h.cpu_only_reason(), None, "{name}: ORT failed to load");
    let mut same = 0;
    for x in xs {
        h.set_input_f32(0, x).expect("input");
        h.invoke().expect("run");
        let ours = cairn_kernels::host::to_f32(&h.output(0).expect("output"));
        same += (argmax(&ours) == argmax(&cpu_outputs(m, x))) as usize;
    }
    let c = h.counters();
    println!(
        "{name} ({graph:?}): {on_ort}/{} ops on ort:cpu in {} segments; int8 segment outputs \
         max {worst} LSB from the CPU backend (each op from the CPU's inputs) over {compared} \
         values, {worst_chain} LSB at the outputs of whole segments; top-1 same {same}/{}",
        m.n_ops(),
        p.segments().len(),
        xs.len()
    );
    assert_eq!(c.faults(), 0, "{name}: {c:?}");
    let n_accel = p
        .segments()
        .iter()
        .filter(|s| s.placement != Placement::Cpu)
        .count();
    assert_eq!(c.accel_segments as usize, xs.len() * n_accel);
    // ONNX Runtime's fused int8 kernels are inexact on x86_64 without VNNI (see
    // `cairn_ort::int8_exactness`): the bound is held there only for the graph as written.
    let (flags, fused_exact) = cairn_ort::int8_exactness();
    if graph == Graph::AsWritten || fused_exact {
        assert!(worst <= 1, "{name}: {worst} LSB");
        assert_eq!(same, xs.len(), "{name}: top-1");
    } else {
        println!(
            "  (not asserted: this CPU [{flags}] lacks VNNI, so ORT's fused int8 kernels saturate)"
        );
    }
}

#[test]
fn cls_on_ort_within_1_lsb_and_same_top1() {
    let (xs, _) = cls_eval().expect("cls eval data");
    let bytes = cls();
    agreement("cls", &bytes, &xs, Graph::AsWritten);
    agreement("cls", &bytes, &xs[..50.min(xs.len())], Graph::Optimized);
}

#[test]
fn digits_on_ort_within_1_lsb_and_same_top1() {
    let xs = rows(&cairn_convert::npy::read(&zoo().join("digits/test_x.npy")).unwrap());
    let bytes = digits();
    agreement("digits", &bytes, &xs, Graph::AsWritten);
    agreement("digits", &bytes, &xs, Graph::Optimized);
}

#[test]
fn missing_execution_provider_falls_back_with_one_message() {
    let bytes = digits();
    let m = Model::parse(bytes.as_slice()).expect("parse");
    // The wheel has only CPU (and Azure); QNN stands for any provider a library lacks.
    let missing = [Ep::Qnn, Ep::Nnapi, Ep::CoreMl, Ep::OpenVino, Ep::Xnnpack]
        .into_iter()
        .find(|e| !e.in_library().expect("ONNX Runtime loads"));
    let Some(ep) = missing else {
        println!("this ONNX Runtime has every provider: nothing to fall back from");
        return;
    };
    let f = OrtFactory::new(ep);
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        f,
        Policy::default(),
    )
    .expect("load");
    assert_eq!(h.cpu_only_reason(), None, "ort:cpu still runs the segments");
    let note = h.factory().ep_note().expect("a message").to_string();
    println!("{note}");
    assert!(
        note.contains(ep.name()) && note.contains("CPU provider"),
        "{note}"
    );
    assert!(h.factory().ep_fallbacks() >= 1);
    assert_eq!(h.factory().ep_in_use(), Some(Ep::Cpu));
    let xs = rows(&cairn_convert::npy::read(&zoo().join("digits/test_x.npy")).unwrap());
    for x in &xs[..10] {
        h.set_input_f32(0, x).expect("input");
        h.invoke().expect("run");
        let ours = cairn_kernels::host::to_f32(&h.output(0).expect("output"));
        assert_eq!(argmax(&ours), argmax(&cpu_outputs(m, x)));
    }
    assert!(h.counters().accel_segments >= 10);
    // The backend names the CLI takes.
    assert!(OrtFactory::from_backend_name("ort:qnn").is_some());
    assert!(OrtFactory::from_backend_name("ort").is_some());
    assert!(OrtFactory::from_backend_name("ort:tpu").is_none());
}

#[test]
fn ort_errors_mid_request_complete_with_cpu_results() {
    let seed = seed_or(0x0E7_FA17);
    let bytes = cls();
    let m = Model::parse(bytes.as_slice()).expect("parse");
    let (xs, _) = cls_eval().expect("cls eval data");
    let inj = FaultInjector::new(
        OrtFactory::new(Ep::Cpu),
        Schedule::Seeded {
            seed,
            per_mille: 400,
        },
    );
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        inj.clone(),
        Policy::default(),
    )
    .expect("load");
    assert_eq!(h.cpu_only_reason(), None, "CAIRN_SEED={seed}");
    // A fault reruns the segment on the CPU, so those outputs equal the CPU's exactly;
    // ORT's own results are within 1 LSB, so top-1 is what every request is held to.
    for (req, x) in xs.iter().take(16).enumerate() {
        h.set_input_f32(0, x).expect("input");
        h.invoke().expect("every request completes");
        let ours = cairn_kernels::host::to_f32(&h.output(0).expect("output"));
        assert_eq!(
            argmax(&ours),
            argmax(&cpu_outputs(m, x)),
            "CAIRN_SEED={seed} request {req}"
        );
    }
    let (c, injected) = (h.counters(), inj.injected());
    println!("CAIRN_SEED={seed}: {c:?}; injected {injected:?}");
    assert!(c.faults() > 0, "CAIRN_SEED={seed}: no fault injected");
    assert_eq!(
        c.faults(),
        injected.device_lost + injected.timeouts + injected.errors,
        "CAIRN_SEED={seed}"
    );
    assert_eq!(
        c.accel_segments + c.faults(),
        injected.calls,
        "CAIRN_SEED={seed}"
    );
    assert!(c.fallback_segments >= c.faults(), "CAIRN_SEED={seed}");
}

/// The first fault of a fixed schedule: an EP error on the second segment call; the
/// request it hits still gives the CPU backend's output bit for bit when the failing
/// segment is the last ORT segment (everything after it ran on the CPU).
#[test]
fn an_ep_error_is_counted_and_the_sessions_come_back() {
    use cairn_core::accel::AccelError;
    let bytes = digits();
    let m = Model::parse(bytes.as_slice()).expect("parse");
    let inj = FaultInjector::new(
        OrtFactory::new(Ep::Cpu),
        Schedule::OnCall(1, AccelError::Device),
    );
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        inj.clone(),
        Policy::default(),
    )
    .expect("load");
    let xs = rows(&cairn_convert::npy::read(&zoo().join("digits/test_x.npy")).unwrap());
    let n_accel = h
        .partition()
        .segments()
        .iter()
        .filter(|s| s.placement != Placement::Cpu)
        .count() as u64;
    for x in &xs[..8] {
        h.set_input_f32(0, x).expect("input");
        h.invoke().expect("run");
        let ours = cairn_kernels::host::to_f32(&h.output(0).expect("output"));
        assert_eq!(argmax(&ours), argmax(&cpu_outputs(m, x)));
    }
    let c = h.counters();
    assert_eq!(c.errors, 1, "{c:?}");
    assert_eq!(c.recreations, 1, "{c:?}");
    assert!(h.accelerating(), "the ORT sessions are back");
    assert_eq!(c.accel_segments + c.fallback_segments, 8 * n_accel, "{c:?}");
}

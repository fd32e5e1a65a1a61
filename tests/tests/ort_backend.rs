//! The ONNX Runtime backend (`cairn_ort::OrtFactory`, the NPU path) against the CPU
//! backend, on the zoo models, through the heterogeneous driver:
//! - every int8 tensor an ORT segment writes is within 1 LSB of the CPU backend's, given
//!   the same segment inputs (ONNX Runtime requantizes in its own float order), and the
//!   models' top-1 is the CPU backend's on every evaluation sample;
//! - asking for an execution provider the library lacks (the PyPI wheel has only the CPU
//!   one) falls back to ORT's CPU provider with one clear message, and is counted;
//! - an EP error mid-request reruns the segment on the CPU: the request completes with the
//!   CPU result and the counters say what happened;
//! - ONNX Runtime's device policy (`ort:prefer-npu`, `ort:auto`) takes the CPU on a library
//!   without an NPU, and says so;
//! - each op kind the exporter took on last (Slice, Split, Pad, Gather, Resize, Softmax,
//!   LayerNorm, ReduceMean, ConvTranspose, f32 Add/Sub/Mul/Div, int8 Reduce Max/Min),
//!   alone in random one-op models (`CAIRN_SEED`): data movement and f32 arithmetic
//!   bit-exact, int8 arithmetic within 1 LSB of the CPU backend.
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

/// `ort:prefer-npu` and `ort:auto` hand the choice to ONNX Runtime's device policy
/// (`SessionOptionsSetEpSelectionPolicy`). The PyPI library has no NPU device, so the
/// policy takes the CPU: the sessions run, the factory says so once and counts it.
#[test]
fn device_policy_takes_the_cpu_without_an_npu_and_says_so() {
    use cairn_ort::backend::{library_devices, DeviceKind};
    use cairn_ort::DevicePolicy;
    let devices = library_devices().expect("ONNX Runtime loads");
    let listed: Vec<String> = devices.iter().map(ToString::to_string).collect();
    println!("ONNX Runtime's devices: {}", listed.join(", "));
    assert!(
        devices.iter().any(|d| d.ep == "CPUExecutionProvider"),
        "{listed:?}"
    );
    let bytes = digits();
    let m = Model::parse(bytes.as_slice()).expect("parse");
    let xs = rows(&cairn_convert::npy::read(&zoo().join("digits/test_x.npy")).unwrap());
    for (name, policy) in [
        ("ort:prefer-npu", DevicePolicy::PreferNpu),
        ("ort:auto", DevicePolicy::Auto),
    ] {
        let f = OrtFactory::from_backend_name(name).expect(name);
        assert_eq!(f.policy, Some(policy));
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
        assert_eq!(h.cpu_only_reason(), None, "{name}: the sessions load");
        if let Some(npu) = devices.iter().find(|d| d.kind == DeviceKind::Npu) {
            println!("{name}: this library has an NPU device ({npu}): nothing to fall back from");
            assert_eq!(h.factory().ep_note(), None);
            continue;
        }
        let note = h.factory().ep_note().expect("a message").to_string();
        println!("{note}");
        assert!(
            note.contains(policy.ort_name())
                && note.contains("no NPU")
                && note.contains("CPU provider"),
            "{note}"
        );
        assert_eq!(h.factory().ep_in_use(), Some(Ep::Cpu));
        let device = h.factory().device_in_use().expect("the device taken");
        assert_eq!(
            (device.ep.as_str(), device.kind),
            ("CPUExecutionProvider", DeviceKind::Cpu)
        );
        assert!(h.factory().ep_fallbacks() >= 1);
        for x in &xs[..10] {
            h.set_input_f32(0, x).expect("input");
            h.invoke().expect("run");
            let ours = cairn_kernels::host::to_f32(&h.output(0).expect("output"));
            assert_eq!(argmax(&ours), argmax(&cpu_outputs(m, x)), "{name}");
        }
        let c = h.counters();
        assert_eq!(c.faults(), 0, "{name}: {c:?}");
        assert!(c.accel_segments >= 10, "{name}: {c:?}");
    }
    assert!(OrtFactory::from_backend_name("ort:prefer-tpu").is_none());
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

// ---------------------------------------------------------------------------------------
// One op at a time: random single-op models of the kinds the exporter took on last, run
// by the CPU backend and by ORT from the same input. Data movement and f32 arithmetic must
// be bit-exact; the int8 arithmetic within 1 LSB.

use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::op::{conv, ReduceFn};
use cairn_core::{OpKind, Shape};
use cairn_tests::SplitMix;

/// The seeded generator of the one-op cases.
struct Gen(SplitMix);

impl Gen {
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.0.below(hi - lo + 1)
    }
    fn coin(&mut self) -> bool {
        self.0.next_u64() & 1 == 1
    }
    fn i8(&mut self) -> i8 {
        self.0.next_u64() as i8
    }
    fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * (hi - lo)
    }
    fn per_tensor(&mut self, lo: f32, hi: f32) -> QuantSpec {
        QuantSpec::PerTensor {
            scale: self.f(lo, hi),
            zero_point: self.range(0, 255) as i32 - 128,
        }
    }
    fn dims(&mut self, rank: usize, lo: usize, hi: usize) -> Vec<usize> {
        (0..rank).map(|_| self.range(lo, hi)).collect()
    }
    /// Random bytes for `n` elements of `dt` (int8 anywhere, f32 in −4..4).
    fn data(&mut self, dt: DType, n: usize) -> Vec<u8> {
        match dt {
            DType::F32 => (0..n)
                .flat_map(|_| self.f(-4.0, 4.0).to_le_bytes())
                .collect(),
            _ => (0..n).map(|_| self.i8() as u8).collect(),
        }
    }
    /// int8 with one quantization for input and output (what data movement keeps), or f32.
    fn movement_type(&mut self) -> (DType, QuantSpec) {
        if self.coin() {
            (DType::I8, self.per_tensor(0.01, 0.1))
        } else {
            (DType::F32, QuantSpec::None)
        }
    }
}

fn spec(dt: DType, dims: &[usize], quant: QuantSpec, data: Option<Vec<u8>>) -> TensorSpec {
    TensorSpec {
        dtype: dt,
        shape: Shape::new(dims).expect("test dims"),
        quant,
        data,
        layout: Default::default(),
    }
}

/// One case: the model, its input bytes and a description for failures.
struct Case {
    model: Vec<u8>,
    input: Vec<u8>,
    what: String,
}

/// A model of one op `kind` on input `x` with the given outputs, constants already added.
fn one_op(
    mut b: ModelBuilder,
    kind: OpKind,
    inputs: Vec<Option<u16>>,
    outputs: Vec<u16>,
    params: Vec<i32>,
) -> Vec<u8> {
    b.inputs = vec![inputs[0].expect("an input")];
    b.outputs = outputs.clone();
    b.ops.push(OpSpec {
        kind,
        inputs,
        outputs,
        params,
    });
    b.finish().expect("valid one-op model")
}

fn slice_case(r: &mut Gen) -> Case {
    let rank = r.range(1, 4);
    let dims = r.dims(rank, 1, 7);
    let (dt, q) = r.movement_type();
    let (mut starts, mut steps, mut lens) = (vec![], vec![], vec![]);
    for &len in &dims {
        let a = r.range(1, 2);
        let n = r.range(1, len.div_ceil(a));
        let first = (n - 1) * a;
        if r.coin() {
            starts.push(r.range(0, len - 1 - first) as i32);
            steps.push(a as i32);
        } else {
            starts.push(r.range(first, len - 1) as i32);
            steps.push(-(a as i32));
        }
        lens.push(n);
    }
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(dt, &dims, q.clone(), None));
    let y = b.add_tensor(spec(dt, &lens, q, None));
    let what = format!("Slice {dims:?} {dt:?} starts {starts:?} steps {steps:?} -> {lens:?}");
    starts.extend(steps);
    Case {
        model: one_op(b, OpKind::Slice, vec![Some(x)], vec![y], starts),
        input: r.data(dt, dims.iter().product()),
        what,
    }
}

fn split_case(r: &mut Gen) -> Case {
    let rank = r.range(1, 3);
    let mut dims = r.dims(rank, 1, 5);
    let axis = r.range(0, rank - 1);
    dims[axis] = r.range(2, 9);
    let (dt, q) = r.movement_type();
    let parts = r.range(2, 3);
    let tiles = r.coin();
    let (mut offs, mut sizes) = (vec![], vec![]);
    let mut at = 0;
    for k in 0..parts {
        let (off, size) = if tiles {
            let left = dims[axis] - at;
            let size = if k + 1 == parts || left <= 1 {
                left
            } else {
                r.range(1, left - 1)
            };
            (at, size)
        } else {
            let off = r.range(0, dims[axis] - 1);
            (off, r.range(1, dims[axis] - off))
        };
        at += size;
        offs.push(off as i32);
        sizes.push(size);
    }
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(dt, &dims, q.clone(), None));
    let ys: Vec<u16> = sizes
        .iter()
        .filter(|&&s| s > 0)
        .map(|&s| {
            let mut d = dims.clone();
            d[axis] = s;
            b.add_tensor(spec(dt, &d, q.clone(), None))
        })
        .collect();
    offs.truncate(ys.len());
    let what = format!("Split {dims:?} {dt:?} axis {axis} offsets {offs:?} sizes {sizes:?}");
    let mut params = vec![axis as i32];
    params.extend(offs);
    Case {
        model: one_op(b, OpKind::Split, vec![Some(x)], ys, params),
        input: r.data(dt, dims.iter().product()),
        what,
    }
}

fn pad_case(r: &mut Gen) -> Case {
    let rank = r.range(1, 4);
    let dims = r.dims(rank, 1, 6);
    let (dt, q) = r.movement_type();
    let mode = r.range(0, 2) as i32;
    let value = match dt {
        DType::F32 => r.f(-2.0, 2.0).to_bits() as i32,
        _ => i32::from(r.i8()),
    };
    let mut params = vec![mode, value];
    let mut out = dims.clone();
    for (d, o) in dims.iter().zip(out.iter_mut()) {
        // Reflect pads stay below the axis length.
        let most = if mode == 1 { (d - 1).min(3) } else { 3 };
        let (before, after) = (r.range(0, most), r.range(0, most));
        params.push(before as i32);
        *o += before + after;
    }
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(dt, &dims, q.clone(), None));
    let y = b.add_tensor(spec(dt, &out, q, None));
    let what = format!("Pad {dims:?} {dt:?} -> {out:?} params {params:?}");
    Case {
        model: one_op(b, OpKind::Pad, vec![Some(x)], vec![y], params),
        input: r.data(dt, dims.iter().product()),
        what,
    }
}

/// Gather (mode 0: indices `[count]` along the axis) or GatherElements (mode 1: indices of
/// the input's shape with `count` along the axis), negative indices included.
fn gather_case(r: &mut Gen) -> Case {
    let rank = r.range(1, 3);
    let dims = r.dims(rank, 1, 6);
    let axis = r.range(0, rank - 1);
    let (dt, q) = r.movement_type();
    let n = dims[axis] as i32;
    let count = r.range(1, 5);
    let elements = r.coin();
    let (idx_dims, out) = if elements {
        let mut d = dims.clone();
        d[axis] = count;
        (d.clone(), d)
    } else {
        let mut out: Vec<usize> = dims[..axis].to_vec();
        out.push(count);
        out.extend(&dims[axis + 1..]);
        (vec![count], out)
    };
    let idx: Vec<i32> = (0..idx_dims.iter().product::<usize>())
        .map(|_| r.range(0, 2 * n as usize - 1) as i32 - n)
        .collect();
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(dt, &dims, q.clone(), None));
    let raw = idx.iter().flat_map(|v| v.to_le_bytes()).collect();
    let it = b.add_tensor(spec(DType::I32, &idx_dims, QuantSpec::None, Some(raw)));
    let y = b.add_tensor(spec(dt, &out, q, None));
    let mode = i32::from(elements);
    let what = format!("Gather mode {mode} {dims:?} {dt:?} axis {axis} indices {idx:?}");
    Case {
        model: one_op(
            b,
            OpKind::Gather,
            vec![Some(x), Some(it)],
            vec![y],
            vec![axis as i32, mode],
        ),
        input: r.data(dt, dims.iter().product()),
        what,
    }
}

fn resize_case(r: &mut Gen) -> Case {
    let (n, c, h, w) = (1, r.range(1, 3), r.range(1, 9), r.range(1, 9));
    let factors = [0.5f32, 1.0, 1.5, 2.0, 3.0];
    let (mut sh, mut sw) = (factors[r.range(0, 4)], factors[r.range(0, 4)]);
    // ONNX Runtime's output size is floor(len · scale): at least 1 here.
    while (h as f32 * sh).floor() < 1.0 {
        sh *= 2.0;
    }
    while (w as f32 * sw).floor() < 1.0 {
        sw *= 2.0;
    }
    let (oh, ow) = ((h as f32 * sh) as usize, (w as f32 * sw) as usize);
    let mode = r.range(0, 1) as i32;
    let (coord, nmode) = (r.range(0, 3) as i32, r.range(0, 3) as i32);
    let (dt, qx, qy) = if mode == 0 {
        let (dt, q) = r.movement_type();
        (dt, q.clone(), q)
    } else {
        (DType::I8, r.per_tensor(0.01, 0.1), r.per_tensor(0.01, 0.1))
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(dt, &[n, c, h, w], qx, None));
    let y = b.add_tensor(spec(dt, &[n, c, oh, ow], qy, None));
    let params = vec![mode, coord, nmode, sh.to_bits() as i32, sw.to_bits() as i32];
    let what = format!(
        "Resize {n}x{c}x{h}x{w} -> {oh}x{ow} {dt:?} mode {mode} coord {coord} nearest {nmode}"
    );
    Case {
        model: one_op(b, OpKind::Resize, vec![Some(x)], vec![y], params),
        input: r.data(dt, n * c * h * w),
        what,
    }
}

fn softmax_case(r: &mut Gen) -> Case {
    let (outer, n, inner) = (r.range(1, 3), r.range(1, 40), r.range(1, 3));
    let qx = r.per_tensor(0.02, 0.3);
    let qy = if r.coin() {
        QuantSpec::PerTensor {
            scale: 1.0 / 256.0,
            zero_point: -128,
        }
    } else {
        r.per_tensor(0.002, 0.01)
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(DType::I8, &[outer, n, inner], qx, None));
    let y = b.add_tensor(spec(DType::I8, &[outer, n, inner], qy, None));
    let what = format!("Softmax [{outer}, {n}, {inner}] over axis 1");
    let params = vec![outer as i32, n as i32, inner as i32, 0];
    Case {
        model: one_op(b, OpKind::Softmax, vec![Some(x)], vec![y], params),
        input: r.data(DType::I8, outer * n * inner),
        what,
    }
}

fn layer_norm_case(r: &mut Gen) -> Case {
    let rank = r.range(2, 3);
    let dims = r.dims(rank, 1, 24);
    let axis = rank - r.range(1, 2);
    let inner: usize = dims[axis..].iter().product();
    let floats = |r: &mut Gen, lo, hi| -> Vec<u8> {
        (0..inner).flat_map(|_| r.f(lo, hi).to_le_bytes()).collect()
    };
    let (gamma, beta) = (floats(r, -2.0, 2.0), floats(r, -1.0, 1.0));
    let eps = r.f(1e-6, 1e-3);
    let with_beta = r.coin();
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(DType::I8, &dims, r.per_tensor(0.01, 0.1), None));
    let g = b.add_tensor(spec(DType::F32, &[inner], QuantSpec::None, Some(gamma)));
    let bt =
        with_beta.then(|| b.add_tensor(spec(DType::F32, &[inner], QuantSpec::None, Some(beta))));
    let y = b.add_tensor(spec(DType::I8, &dims, r.per_tensor(0.01, 0.05), None));
    let what = format!("LayerNorm {dims:?} from axis {axis} eps {eps} beta {with_beta}");
    let params = vec![axis as i32, eps.to_bits() as i32];
    Case {
        model: one_op(
            b,
            OpKind::LayerNorm,
            vec![Some(x), Some(g), bt],
            vec![y],
            params,
        ),
        input: r.data(DType::I8, dims.iter().product()),
        what,
    }
}

fn reduce_mean_case(r: &mut Gen) -> Case {
    let rank = r.range(1, 4);
    let dims = r.dims(rank, 1, 6);
    let mask = r.range(1, (1 << rank) - 1) as u32;
    let keep = r.coin();
    let out: Vec<usize> = (0..rank)
        .filter(|&d| keep || mask & (1 << d) == 0)
        .map(|d| if mask & (1 << d) != 0 { 1 } else { dims[d] })
        .collect();
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(DType::I8, &dims, r.per_tensor(0.01, 0.1), None));
    let y = b.add_tensor(spec(DType::I8, &out, r.per_tensor(0.005, 0.05), None));
    let what = format!("ReduceMean {dims:?} mask {mask:#b} keep {keep}");
    let params = vec![mask as i32, i32::from(keep)];
    Case {
        model: one_op(b, OpKind::ReduceMean, vec![Some(x)], vec![y], params),
        input: r.data(DType::I8, dims.iter().product()),
        what,
    }
}

fn conv_transpose_case(r: &mut Gen) -> Case {
    let group = r.range(1, 2);
    let (c, ocg) = (group * r.range(1, 3), r.range(1, 3));
    let oc = group * ocg;
    let (h, w) = (r.range(1, 5), r.range(1, 5));
    let (kh, kw) = (r.range(1, 3), r.range(1, 3));
    let (sh, sw) = (r.range(1, 2), r.range(1, 2));
    let (dh, dw) = (r.range(1, 2), r.range(1, 2));
    let (oph, opw) = (r.range(0, sh - 1), r.range(0, sw - 1));
    let full =
        |i: usize, s: usize, op: usize, k: usize, d: usize| s * (i - 1) + op + (k - 1) * d + 1;
    let (fh, fw) = (full(h, sh, oph, kh, dh), full(w, sw, opw, kw, dw));
    let pads = [
        r.range(0, 1).min((fh - 1) / 2),
        r.range(0, 1).min((fw - 1) / 2),
        r.range(0, 1).min((fh - 1) / 2),
        r.range(0, 1).min((fw - 1) / 2),
    ];
    let (oh, ow) = (fh - pads[0] - pads[2], fw - pads[1] - pads[3]);
    // Grouped weights with one requantization scale (what the exporter can express).
    let one = r.f(0.0005, 0.02);
    let rq: Vec<u8> = (0..oc)
        .flat_map(|_| if group > 1 { one } else { r.f(0.0005, 0.02) }.to_le_bytes())
        .collect();
    let wq: Vec<u8> = (0..c * ocg * kh * kw)
        .map(|_| r.i8().max(-127) as u8)
        .collect();
    let bias: Vec<u8> = (0..oc)
        .flat_map(|_| ((r.0.next_u64() % 20001) as i32 - 10000).to_le_bytes())
        .collect();
    let yq = r.per_tensor(0.02, 0.1);
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(
        DType::I8,
        &[1, c, h, w],
        r.per_tensor(0.01, 0.1),
        None,
    ));
    let wspec = QuantSpec::PerAxis {
        axis: 1,
        scales: (0..ocg).map(|_| 0.01).collect(),
        zero_points: vec![0; ocg],
    };
    let wt = b.add_tensor(spec(DType::I8, &[c, ocg, kh, kw], wspec, Some(wq)));
    let bt = r
        .coin()
        .then(|| b.add_tensor(spec(DType::I32, &[oc], QuantSpec::None, Some(bias))));
    let rqt = b.add_tensor(spec(DType::F32, &[oc], QuantSpec::None, Some(rq)));
    let y = b.add_tensor(spec(DType::I8, &[1, oc, oh, ow], yq, None));
    let mut p = vec![0i32; conv::T_LEN];
    for (slot, v) in [
        (conv::SH, sh),
        (conv::SW, sw),
        (conv::PT, pads[0]),
        (conv::PL, pads[1]),
        (conv::PB, pads[2]),
        (conv::PR, pads[3]),
        (conv::DH, dh),
        (conv::DW, dw),
        (conv::GROUP, group),
        (conv::OPH, oph),
        (conv::OPW, opw),
    ] {
        p[slot] = v as i32;
    }
    p[conv::T_ACT_LO] = -128;
    p[conv::T_ACT_HI] = 127;
    let what = format!(
        "ConvTranspose 1x{c}x{h}x{w} -> {oc} k {kh}x{kw} s {sh},{sw} d {dh},{dw} pads {pads:?} \
         out pad {oph},{opw} group {group}"
    );
    Case {
        model: one_op(
            b,
            OpKind::ConvTranspose,
            vec![Some(x), Some(wt), bt, Some(rqt)],
            vec![y],
            p,
        ),
        input: r.data(DType::I8, c * h * w),
        what,
    }
}

fn binary_f32_case(r: &mut Gen) -> Case {
    let rank = r.range(1, 4);
    let dims = r.dims(rank, 1, 6);
    // The second operand: a constant broadcast along some axes (1 there), or a scalar.
    let other: Vec<usize> = dims.iter().map(|&d| if r.coin() { d } else { 1 }).collect();
    let kind = [OpKind::Add, OpKind::Sub, OpKind::Mul, OpKind::Div][r.range(0, 3)];
    let n: usize = other.iter().product();
    // Divisors away from 0.
    let raw = (0..n)
        .flat_map(|_| {
            let v = r.f(0.25, 4.0);
            if r.coin() { v } else { -v }.to_le_bytes()
        })
        .collect();
    let (lo, hi) = if r.coin() {
        (f32::NEG_INFINITY, f32::INFINITY)
    } else {
        (r.f(-3.0, 0.0), r.f(0.0, 3.0))
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(DType::F32, &dims, QuantSpec::None, None));
    let z = b.add_tensor(spec(DType::F32, &other, QuantSpec::None, Some(raw)));
    let y = b.add_tensor(spec(DType::F32, &dims, QuantSpec::None, None));
    let what = format!("f32 {kind:?} {dims:?} by {other:?} clamp {lo}..{hi}");
    let params = vec![lo.to_bits() as i32, hi.to_bits() as i32];
    Case {
        model: one_op(b, kind, vec![Some(x), Some(z)], vec![y], params),
        input: r.data(DType::F32, dims.iter().product()),
        what,
    }
}

fn reduce_select_case(r: &mut Gen) -> Case {
    let rank = r.range(1, 4);
    let dims = r.dims(rank, 1, 6);
    let mask = r.range(1, (1 << rank) - 1) as u32;
    let keep = r.coin();
    let max = r.coin();
    let out: Vec<usize> = (0..rank)
        .filter(|&d| keep || mask & (1 << d) == 0)
        .map(|d| if mask & (1 << d) != 0 { 1 } else { dims[d] })
        .collect();
    let q = r.per_tensor(0.01, 0.1);
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(spec(DType::I8, &dims, q.clone(), None));
    let y = b.add_tensor(spec(DType::I8, &out, q, None));
    let what = format!(
        "Reduce {} {dims:?} mask {mask:#b} keep {keep}",
        if max { "Max" } else { "Min" }
    );
    let f = if max { ReduceFn::Max } else { ReduceFn::Min };
    let params = vec![f as i32, mask as i32, i32::from(keep), 0];
    Case {
        model: one_op(b, OpKind::Reduce, vec![Some(x)], vec![y], params),
        input: r.data(DType::I8, dims.iter().product()),
        what,
    }
}

/// The largest difference between the CPU backend's outputs of a one-op model and ORT's
/// from the same input: in LSB for int8, exact bits (0 or `u32::MAX`) for f32. `None` when
/// the exporter declines the op.
fn one_op_diff(case: &Case) -> Option<u32> {
    let bytes = AlignedBytes::from_slice(&case.model);
    let m = Model::parse(bytes.as_slice()).expect("parse");
    if !cairn_ort::export::op_exportable(&m, 0) {
        return None;
    }
    let mut f = OrtFactory::new(Ep::Cpu);
    let p = plan(&m, &f);
    let seg = p.segments()[0];
    assert_eq!(seg.placement, Placement::Accel(0), "{}", case.what);
    let mut accel = f
        .create(&m, &p)
        .unwrap_or_else(|e| panic!("{}: ORT refused the export: {e:?}", case.what));
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let mut it = Interpreter::new(m, CpuBackend, &mut arena).expect("load");
    it.input_bytes_mut(0)
        .expect("input")
        .copy_from_slice(&case.input);
    let before = it.arena()[..m.arena_bytes()].to_vec();
    it.invoke().expect("cpu run");
    accel
        .run_segment(&m, seg, &before, &mut staging)
        .unwrap_or_else(|e| panic!("{}: ORT run failed: {e:?}", case.what));
    let mut worst = 0u32;
    for k in 0..m.n_outputs() {
        let t = m.output_tensor(k).expect("output");
        let r = arena_range(&m, t).expect("arena output");
        let (a, b) = (&it.arena()[r.clone()], &staging[r]);
        worst = worst.max(match m.tensor(t).info.dtype {
            DType::I8 => a
                .iter()
                .zip(b)
                .map(|(&u, &v)| (u as i8 as i32 - v as i8 as i32).unsigned_abs())
                .max()
                .unwrap_or(0),
            _ if a == b => 0,
            _ => u32::MAX,
        });
    }
    Some(worst)
}

#[test]
fn each_new_op_alone_matches_the_cpu_backend() {
    let seed = seed_or(0x0E7_0B5);
    let mut r = Gen(SplitMix(seed));
    // (name, case generator, largest difference allowed: 0 = bit-exact, else LSB).
    type MakeCase = fn(&mut Gen) -> Case;
    let kinds: [(&str, MakeCase, u32); 11] = [
        ("Slice", slice_case, 0),
        ("Split", split_case, 0),
        ("Pad", pad_case, 0),
        ("Gather", gather_case, 0),
        ("Resize", resize_case, 1),
        ("Softmax", softmax_case, 1),
        ("LayerNorm", layer_norm_case, 1),
        ("ReduceMean", reduce_mean_case, 1),
        ("ConvTranspose", conv_transpose_case, 1),
        ("f32 Add..Div", binary_f32_case, 0),
        ("Reduce Max/Min", reduce_select_case, 0),
    ];
    const CASES: usize = 150;
    for (name, make, bound) in kinds {
        let (mut exported, mut worst) = (0, 0);
        for i in 0..CASES {
            let case = make(&mut r);
            let Some(d) = one_op_diff(&case) else {
                continue;
            };
            exported += 1;
            worst = worst.max(d);
            assert!(
                d <= bound,
                "CAIRN_SEED={seed} {name} case {i}: {} differs by {d} (bound {bound})",
                case.what
            );
        }
        println!(
            "{name:<14} {exported}/{CASES} cases exported, max {worst} LSB from the CPU backend"
        );
        assert_eq!(exported, CASES, "CAIRN_SEED={seed}: {name} cases declined");
    }
}

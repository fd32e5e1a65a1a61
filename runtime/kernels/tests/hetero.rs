//! Partitioning and fallback: seeded random int8 CNN chains (convs of every shape class,
//! lookup tables, branches reaching back across segments, two graph outputs) run through
//! the heterogeneous driver with a software accelerator behind a fault injector. Every
//! request must equal the CPU backend's result bit for bit, and the driver's counters must
//! say exactly what was injected. A failure prints its `CAIRN_SEED`.

use cairn_core::accel::AccelError;
use cairn_core::emit::{AlignedBytes, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::op::{conv, OpKind};
use cairn_core::partition::{
    segment_inputs, segment_outputs, transfer_bytes, Partition, Placement, Policy,
};
use cairn_core::{DType, Interpreter, Model, Shape};
use cairn_kernels::hetero::fault::{FaultInjector, Schedule, SoftFactory};
use cairn_kernels::hetero::{Counters, CpuOnly, Hetero};
use cairn_kernels::CpuBackend;

#[allow(dead_code)]
mod common;
use common::{seed, Rng};

fn act(dims: &[usize], r: &mut Rng) -> TensorSpec {
    TensorSpec {
        dtype: DType::I8,
        shape: Shape::new(dims).unwrap(),
        quant: QuantSpec::PerTensor {
            scale: r.f(0.01, 0.1),
            zero_point: r.range(0, 255) as i32 - 128,
        },
        data: None,
        layout: Default::default(),
    }
}

fn konst(dt: DType, dims: &[usize], data: Vec<u8>) -> TensorSpec {
    TensorSpec {
        dtype: dt,
        shape: Shape::new(dims).unwrap(),
        quant: QuantSpec::None,
        data: Some(data),
        layout: Default::default(),
    }
}

/// A chain of `layers` int8 ops on [1, C, H, W] planes: convs (pointwise, 3×3, depthwise
/// 3×3) and lookup tables; each op reads the previous activation or, sometimes, an older
/// one (so tensors live across segments). Outputs: the last activation and one older.
fn chain(r: &mut Rng, layers: usize) -> Vec<u8> {
    let (c, h, w) = (r.range(1, 6) * 2, r.range(3, 9), r.range(3, 9));
    let dims = [1, c, h, w];
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(act(&dims, r));
    let mut acts = vec![x];
    for _ in 0..layers {
        let src = if acts.len() > 2 && r.next().is_multiple_of(4) {
            acts[r.range(0, acts.len() - 2)]
        } else {
            *acts.last().unwrap()
        };
        let y = b.add_tensor(act(&dims, r));
        let op = match r.next() % 4 {
            0 => {
                let table: Vec<u8> = (0..256).map(|_| r.i8() as u8).collect();
                let t = b.add_tensor(konst(DType::I8, &[256], table));
                OpSpec {
                    kind: OpKind::Lut,
                    inputs: vec![Some(src), Some(t)],
                    outputs: vec![y],
                    params: vec![-1],
                }
            }
            kind => {
                let (k, group) = match kind {
                    1 => (1, 1),
                    2 => (3, 1),
                    _ => (3, c),
                };
                let cg = c / group;
                let wq: Vec<u8> = (0..c * cg * k * k)
                    .map(|_| r.i8().max(-127) as u8)
                    .collect();
                let wt = b.add_tensor(TensorSpec {
                    quant: QuantSpec::PerAxis {
                        axis: 0,
                        scales: (0..c).map(|_| r.f(0.001, 0.05)).collect(),
                        zero_points: vec![0; c],
                    },
                    ..konst(DType::I8, &[c, cg, k, k], wq)
                });
                let bias: Vec<u8> = (0..c)
                    .flat_map(|_| ((r.next() % 2001) as i32 - 1000).to_le_bytes())
                    .collect();
                let bt = b.add_tensor(konst(DType::I32, &[c], bias));
                let rq: Vec<u8> = (0..c)
                    .flat_map(|_| r.f(0.001, 0.03).to_le_bytes())
                    .collect();
                let st = b.add_tensor(konst(DType::F32, &[c], rq));
                let pad = (k / 2) as i32;
                let mut params = vec![0i32; conv::LEN];
                params[conv::SH] = 1;
                params[conv::SW] = 1;
                params[conv::PT] = pad;
                params[conv::PL] = pad;
                params[conv::PB] = pad;
                params[conv::PR] = pad;
                params[conv::DH] = 1;
                params[conv::DW] = 1;
                params[conv::GROUP] = group as i32;
                params[conv::ACT_LO] = -128;
                params[conv::ACT_HI] = 127;
                OpSpec {
                    kind: OpKind::Conv,
                    inputs: vec![Some(src), Some(wt), Some(bt), Some(st)],
                    outputs: vec![y],
                    params,
                }
            }
        };
        b.ops.push(op);
        acts.push(y);
    }
    b.inputs = vec![x];
    let older = acts[r.range(1, acts.len() - 1)];
    let last = *acts.last().unwrap();
    b.outputs = if older == last {
        vec![last]
    } else {
        vec![last, older]
    };
    b.finish().expect("valid chain")
}

const CONV: cairn_core::op::Kinds = 1 << OpKind::Conv as u16;
const LUT: cairn_core::op::Kinds = 1 << OpKind::Lut as u16;

fn outputs_cpu(m: Model<'_>, input: &[u8]) -> Vec<u8> {
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it = Interpreter::new(m, CpuBackend, &mut arena).unwrap();
    it.input_bytes_mut(0).unwrap().copy_from_slice(input);
    it.invoke().unwrap();
    (0..m.n_outputs())
        .flat_map(|k| it.output(k).unwrap().data.to_vec())
        .collect()
}

#[test]
fn partition_covers_every_op_once_and_io_follows_liveness() {
    let seed = seed();
    let mut r = Rng(seed);
    for case in 0..200 {
        let layers = r.range(1, 12);
        let bytes = chain(&mut r, layers);
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let kinds = [CONV, LUT, CONV | LUT, 0][case % 4];
        let min_ops = r.range(1, 3) as u16;
        let soft = SoftFactory { kinds };
        let p = Partition::plan(&m, &[&soft], Policy { min_ops }).unwrap();
        let what = format!("CAIRN_SEED={seed} case {case}: {:?}", p.segments());
        // Segments tile the ops in order, and neighbours differ in placement.
        let mut next = 0;
        for (i, s) in p.segments().iter().enumerate() {
            assert_eq!(s.start as usize, next, "{what}");
            assert!(s.end > s.start, "{what}");
            next = s.end as usize;
            if i > 0 {
                assert_ne!(p.segments()[i - 1].placement, s.placement, "{what}");
            }
            if s.placement != Placement::Cpu {
                assert!(s.len() >= min_ops as usize, "{what}");
                assert!(s
                    .ops()
                    .all(|op| cairn_core::partition::OpSupport::supports_op(&soft, &m, op)));
            }
            // Inputs are read inside and written before; outputs written inside and read
            // after (or graph outputs).
            for t in segment_inputs(&m, *s) {
                let d = m.tensor(t);
                assert!(d.def_time <= s.start && d.last_time > s.start, "{what}");
            }
            for t in segment_outputs(&m, *s) {
                let d = m.tensor(t);
                assert!(d.def_time > s.start && d.def_time <= s.end, "{what}");
                assert!(d.last_time > s.end, "{what}");
            }
            // The first op reads an activation written before the segment (a segment
            // whose results all die unread has no outputs).
            let (tin, _) = transfer_bytes(&m, *s);
            assert!(tin > 0, "{what}");
        }
        assert_eq!(next, m.n_ops(), "{what}");
        assert_eq!(p.uses_accelerator(), p.ops_on(Placement::Accel(0)) > 0);
        if kinds == 0 {
            assert_eq!(p, Partition::cpu_only(&m), "{what}");
        }
    }
}

/// Run `requests` requests (a new input each) through the driver over `factory`; every
/// output must equal the CPU backend's.
fn drive(
    bytes: &[u8],
    factory: FaultInjector<SoftFactory>,
    requests: usize,
    r: &mut Rng,
    what: &str,
) -> (Counters, Option<CpuOnly>) {
    let ab = AlignedBytes::from_slice(bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let n_in = m.tensor(m.input_tensor(0).unwrap()).info.numel();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        factory,
        Policy::default(),
    )
    .unwrap();
    for req in 0..requests {
        let input: Vec<u8> = (0..n_in).map(|_| r.i8() as u8).collect();
        h.input_bytes_mut(0).unwrap().copy_from_slice(&input);
        h.invoke().unwrap();
        let got: Vec<u8> = (0..m.n_outputs())
            .flat_map(|k| h.output(k).unwrap().data.to_vec())
            .collect();
        assert_eq!(got, outputs_cpu(m, &input), "{what} request {req}");
    }
    (h.counters(), h.cpu_only_reason())
}

#[test]
fn without_faults_every_accelerator_segment_runs_there() {
    let seed = seed();
    let mut r = Rng(seed ^ 1);
    for case in 0..40 {
        let layers = r.range(2, 10);
        let bytes = chain(&mut r, layers);
        let inj = FaultInjector::new(SoftFactory { kinds: CONV }, Schedule::Never);
        let what = format!("CAIRN_SEED={seed} case {case}");
        let (c, why) = drive(&bytes, inj.clone(), 5, &mut r, &what);
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let soft = SoftFactory { kinds: CONV };
        let p = Partition::plan(&m, &[&soft], Policy::default()).unwrap();
        let n_accel = p
            .segments()
            .iter()
            .filter(|s| s.placement != Placement::Cpu)
            .count();
        let n_cpu = p.segments().len() - n_accel;
        assert_eq!(why.is_some(), n_accel == 0, "{what}");
        assert_eq!(c.accel_segments, 5 * n_accel as u64, "{what}");
        assert_eq!(c.cpu_segments, 5 * n_cpu as u64, "{what}");
        assert_eq!(
            c.fallback_segments + c.faults() + c.create_failures,
            0,
            "{what}"
        );
    }
}

#[test]
fn a_failure_on_the_kth_call_reruns_that_segment_on_cpu() {
    let seed = seed();
    let mut r = Rng(seed ^ 2);
    let kinds = [
        AccelError::DeviceLost,
        AccelError::Timeout,
        AccelError::Device,
    ];
    let mut tested = 0;
    for case in 0..60 {
        let layers = r.range(3, 10);
        let bytes = chain(&mut r, layers);
        let k = r.range(0, 6) as u64;
        let e = kinds[case % 3];
        let inj = FaultInjector::new(SoftFactory { kinds: CONV }, Schedule::OnCall(k, e));
        let what = format!("CAIRN_SEED={seed} case {case}: fail call {k} with {e:?}");
        let (c, why) = drive(&bytes, inj.clone(), 8, &mut r, &what);
        if why.is_some() {
            continue; // nothing placed on the accelerator
        }
        let injected = inj.injected();
        assert_eq!(c.device_lost, injected.device_lost, "{what}");
        assert_eq!(c.timeouts, injected.timeouts, "{what}");
        assert_eq!(c.errors, injected.errors, "{what}");
        if injected.calls > k {
            tested += 1;
            assert_eq!(c.faults(), 1, "{what}");
            assert!(c.fallback_segments >= 1, "{what}");
            // Created again on the next request.
            assert_eq!(c.recreations, 1, "{what}");
        }
    }
    assert!(
        tested > 10,
        "CAIRN_SEED={seed}: only {tested} cases hit their fault"
    );
}

#[test]
fn seeded_faults_never_lose_a_request_and_are_all_counted() {
    let seed = seed();
    let mut r = Rng(seed ^ 3);
    for case in 0..40 {
        let layers = r.range(3, 12);
        let bytes = chain(&mut r, layers);
        let per_mille = [100, 300, 700, 1000][case % 4];
        let sched = Schedule::Seeded {
            seed: r.next(),
            per_mille,
        };
        let kinds = [CONV, LUT, CONV | LUT][case % 3];
        let inj = FaultInjector::new(SoftFactory { kinds }, sched);
        let what = format!("CAIRN_SEED={seed} case {case}: {per_mille}/1000");
        let (c, why) = drive(&bytes, inj.clone(), 30, &mut r, &what);
        let injected = inj.injected();
        assert_eq!(
            (c.device_lost, c.timeouts, c.errors),
            (injected.device_lost, injected.timeouts, injected.errors),
            "{what}"
        );
        assert_eq!(c.create_failures, injected.create_failures, "{what}");
        assert_eq!(
            c.recreations + 1 + c.create_failures,
            injected.creates.max(1),
            "{what}"
        );
        assert_eq!(c.accel_segments + c.faults(), injected.calls, "{what}");
        if why.is_none() && per_mille == 1000 {
            // Every call fails: the accelerator never completes one, and the retry waits
            // grow, so it is created again only a few times in 30 requests.
            assert_eq!(c.accel_segments, 0, "{what}");
            assert!(c.recreations + c.create_failures <= 6, "{what}: {c:?}");
        }
    }
}

/// A factory that cannot create its accelerator.
struct Absent;
impl cairn_core::partition::OpSupport for Absent {
    fn supports_op(&self, _: &Model<'_>, _: usize) -> bool {
        true
    }
}
impl cairn_core::accel::AccelFactory for Absent {
    type Accel = cairn_kernels::hetero::fault::SoftAccel;
    fn name(&self) -> &'static str {
        "absent"
    }
    fn create(&mut self, _: &Model<'_>, _: &Partition) -> Result<Self::Accel, AccelError> {
        Err(AccelError::Unavailable)
    }
}

#[test]
fn a_load_failure_runs_everything_on_cpu_and_says_why() {
    let mut r = Rng(seed() ^ 4);
    let bytes = chain(&mut r, 6);
    let ab = AlignedBytes::from_slice(&bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        Absent,
        Policy::default(),
    )
    .unwrap();
    assert_eq!(
        h.cpu_only_reason(),
        Some(CpuOnly::Load(AccelError::Unavailable))
    );
    let input = vec![7u8; m.tensor(m.input_tensor(0).unwrap()).info.numel()];
    for _ in 0..3 {
        h.input_bytes_mut(0).unwrap().copy_from_slice(&input);
        h.invoke().unwrap();
    }
    let c = h.counters();
    // Tried once at load, never again; every segment ran on the CPU.
    assert_eq!(c.create_failures, 1);
    assert_eq!(c.recreations, 0);
    assert_eq!(c.accel_segments, 0);
    assert_eq!(c.fallback_segments, 3);
    let got: Vec<u8> = (0..m.n_outputs())
        .flat_map(|k| h.output(k).unwrap().data.to_vec())
        .collect();
    assert_eq!(got, outputs_cpu(m, &input));

    // A staging buffer smaller than the arena: CPU only, said so.
    let mut staging = vec![0u8; m.arena_bytes() - 1];
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let soft = SoftFactory { kinds: CONV | LUT };
    let h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        soft,
        Policy::default(),
    )
    .unwrap();
    assert!(matches!(
        h.cpu_only_reason(),
        Some(CpuOnly::StagingTooSmall { .. })
    ));
}

#[test]
fn too_many_segments_raise_the_minimum_run_until_they_fit() {
    let seed = seed();
    let mut r = Rng(seed ^ 5);
    let bytes = chain(&mut r, 400);
    let ab = AlignedBytes::from_slice(&bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let soft = SoftFactory { kinds: CONV };
    let what = format!("CAIRN_SEED={seed}");
    assert_eq!(
        Partition::plan(&m, &[&soft], Policy::default()),
        Err(cairn_core::partition::PartitionError::TooManySegments),
        "{what}"
    );
    let (p, policy) = Partition::plan_fitting(&m, &[&soft], Policy::default()).unwrap();
    assert!(policy.min_ops > 1, "{what}");
    assert!(
        p.segments().len() <= cairn_core::partition::MAX_SEGMENTS,
        "{what}"
    );
    assert_eq!(
        p.segments().last().map(|s| s.end as usize),
        Some(m.n_ops()),
        "{what}"
    );
    assert!(p
        .segments()
        .iter()
        .all(|s| s.placement == Placement::Cpu || s.len() >= policy.min_ops as usize));
}

/// An int32 input (token ids) is filled from f32 values holding integers through the
/// driver, as the host model does; a wrong count is refused with `WrongInput`.
#[test]
fn integer_inputs_fill_from_f32_values() {
    let table: Vec<f32> = (0..15).map(|v| v as f32 * 0.5 - 3.0).collect();
    let mut b = ModelBuilder::default();
    let t = b.add_tensor(konst(
        DType::F32,
        &[5, 3],
        table.iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    let ids = b.add_tensor(TensorSpec {
        dtype: DType::I32,
        shape: Shape::new(&[4]).unwrap(),
        quant: QuantSpec::None,
        data: None,
        layout: Default::default(),
    });
    let y = b.add_tensor(TensorSpec {
        dtype: DType::F32,
        shape: Shape::new(&[4, 3]).unwrap(),
        quant: QuantSpec::None,
        data: None,
        layout: Default::default(),
    });
    b.ops.push(OpSpec {
        kind: OpKind::Gather,
        inputs: vec![Some(t), Some(ids)],
        outputs: vec![y],
        params: vec![0, 0],
    });
    b.inputs = vec![ids];
    b.outputs = vec![y];
    let ab = AlignedBytes::from_slice(&b.finish().unwrap());
    let m = Model::parse(ab.as_slice()).unwrap();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut staging = vec![0u8; m.arena_bytes()];
    let inj = FaultInjector::new(SoftFactory { kinds: CONV }, Schedule::Never);
    let mut h = Hetero::new(
        m,
        CpuBackend,
        &mut arena,
        &mut staging,
        inj,
        Policy::default(),
    )
    .unwrap();
    assert!(matches!(
        h.set_input_f32(0, &[1.0, 2.0]),
        Err(cairn_core::RunError::WrongInput {
            expected_elems: 4,
            got_elems: 2
        })
    ));
    let picks = [4usize, 0, 2, 2];
    let xs: Vec<f32> = picks.iter().map(|&p| p as f32).collect();
    h.set_input_f32(0, &xs).unwrap();
    h.invoke().unwrap();
    let out = h.output(0).unwrap();
    let got: Vec<f32> = out
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<f32> = picks
        .iter()
        .flat_map(|&p| table[3 * p..3 * p + 3].to_vec())
        .collect();
    assert_eq!(got, want);
}

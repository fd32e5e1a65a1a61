//! The heterogeneous driver: runs a partitioned model, accelerator segments on an
//! accelerator and the rest on a CPU backend, and never loses a request to an accelerator.
//!
//! - At load: if the partition places nothing on the accelerator, or it cannot be
//!   created (no device, a kernel that fails to build), every op runs on the CPU and
//!   [`Hetero::cpu_only_reason`] says why (the caller says it once).
//! - Per request: an accelerator segment reads its inputs from the arena and leaves its
//!   outputs in a staging buffer; they reach the arena only when the segment succeeded.
//!   When it fails (device lost, timeout, any error) the driver drops the accelerator,
//!   reruns that segment on the CPU from the same, untouched inputs, counts the failure
//!   and finishes the request on the CPU. A later request creates the accelerator again,
//!   after 1, 2, 4, … 64 requests while failures follow each other.
//!
//! It owns no memory: the arena and the staging buffer (the arena's size) are the
//! caller's, so it runs without an allocator too. It never blocks: bounding the waits is
//! the accelerator's contract ([`cairn_core::accel::Accelerator`]).

#[cfg(feature = "std")]
pub mod fault;

use cairn_core::accel::{AccelError, AccelFactory, Accelerator};
use cairn_core::partition::{
    arena_range, segment_outputs, OpSupport, Partition, PartitionError, Placement, Policy, Segment,
};
use cairn_core::{Backend, Interpreter, LoadError, Model, RunError, TensorRef};

/// Longest wait, in requests, before the accelerator is created again after failures.
pub const MAX_RETRY_REQUESTS: u64 = 64;

/// Why a model runs on the CPU alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpuOnly {
    /// The accelerator supports none of the model's ops (or only runs shorter than the
    /// policy's minimum).
    NothingSupported,
    /// The partition could not be planned.
    Partition(PartitionError),
    /// The staging buffer is smaller than the model's arena.
    StagingTooSmall { need: usize, have: usize },
    /// The accelerator could not be created.
    Load(AccelError),
}

impl core::fmt::Display for CpuOnly {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CpuOnly::NothingSupported => f.write_str("the accelerator supports none of its ops"),
            CpuOnly::Partition(e) => write!(f, "no partition: {e:?}"),
            CpuOnly::StagingTooSmall { need, have } => {
                write!(f, "staging buffer of {have} bytes, {need} needed")
            }
            CpuOnly::Load(e) => write!(f, "the accelerator failed to load: {e}"),
        }
    }
}

/// What happened, since the driver was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    /// Accelerator segments the accelerator completed.
    pub accel_segments: u64,
    /// CPU segments run as planned.
    pub cpu_segments: u64,
    /// Accelerator segments run on the CPU instead (after a failure, or while the
    /// accelerator waits to be created again).
    pub fallback_segments: u64,
    pub device_lost: u64,
    pub timeouts: u64,
    /// Other failures during a segment.
    pub errors: u64,
    /// Failed attempts to create the accelerator (at load or again after a failure).
    pub create_failures: u64,
    /// Accelerators created again after a failure.
    pub recreations: u64,
}

impl Counters {
    /// Failures during segments, all kinds.
    pub fn faults(&self) -> u64 {
        self.device_lost + self.timeouts + self.errors
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    /// CPU only, for good.
    Off(CpuOnly),
    /// No accelerator now; try to create one at request `at_request`.
    Retry {
        at_request: u64,
        last: AccelError,
    },
}

pub struct Hetero<'m, 'a, 's, B: Backend, F: AccelFactory> {
    interp: Interpreter<'m, 'a, B>,
    factory: F,
    accel: Option<F::Accel>,
    partition: Partition,
    staging: &'s mut [u8],
    state: State,
    /// Failures since the accelerator last completed a segment.
    streak: u32,
    counters: Counters,
}

impl<'m, 'a, 's, B: Backend, F: AccelFactory> Hetero<'m, 'a, 's, B, F> {
    /// Check that `cpu` runs every op of `model` (it is the fallback for all of them) and
    /// that `arena` holds the plan, plan the partition and create the accelerator. A
    /// problem with the accelerator is not an error: the model runs on the CPU and
    /// [`Hetero::cpu_only_reason`] says why.
    pub fn new(
        model: Model<'m>,
        cpu: B,
        arena: &'a mut [u8],
        staging: &'s mut [u8],
        mut factory: F,
        policy: Policy,
    ) -> Result<Self, LoadError> {
        let interp = Interpreter::new(model, cpu, arena)?;
        let mut counters = Counters::default();
        let mut accel = None;
        let planned = Partition::plan_fitting(&model, &[&factory as &dyn OpSupport], policy);
        let (partition, state) = match planned.map(|(p, _)| p) {
            Err(e) => (
                Partition::cpu_only(&model),
                State::Off(CpuOnly::Partition(e)),
            ),
            Ok(p) if !p.uses_accelerator() => (p, State::Off(CpuOnly::NothingSupported)),
            Ok(p) if staging.len() < model.arena_bytes() => {
                let why = CpuOnly::StagingTooSmall {
                    need: model.arena_bytes(),
                    have: staging.len(),
                };
                (p, State::Off(why))
            }
            Ok(p) => match factory.create(&model, &p) {
                Ok(a) => {
                    accel = Some(a);
                    (p, State::Ready)
                }
                Err(e) => {
                    counters.create_failures += 1;
                    (p, State::Off(CpuOnly::Load(e)))
                }
            },
        };
        Ok(Hetero {
            interp,
            factory,
            accel,
            partition,
            staging,
            state,
            streak: 0,
            counters,
        })
    }

    pub fn model(&self) -> &Model<'m> {
        self.interp.model()
    }
    pub fn partition(&self) -> &Partition {
        &self.partition
    }
    pub fn counters(&self) -> Counters {
        self.counters
    }
    pub fn factory(&self) -> &F {
        &self.factory
    }
    /// Why every op runs on the CPU, when it does for good.
    pub fn cpu_only_reason(&self) -> Option<CpuOnly> {
        match self.state {
            State::Off(why) => Some(why),
            _ => None,
        }
    }
    /// The last failure, while the accelerator waits to be created again.
    pub fn pending_failure(&self) -> Option<AccelError> {
        match self.state {
            State::Retry { last, .. } => Some(last),
            _ => None,
        }
    }
    /// Whether an accelerator is ready for the next request.
    pub fn accelerating(&self) -> bool {
        self.accel.is_some()
    }

    pub fn input_bytes_mut(&mut self, i: usize) -> Result<&mut [u8], RunError> {
        self.interp.input_bytes_mut(i)
    }
    /// Fill graph input `i` from f32 values: an f32 input as given, an int32 input (token
    /// ids, masks, byte values) from f32 values holding integers, as `HostModel::run` does
    /// ([`set_input_values`]).
    pub fn set_input_f32(&mut self, i: usize, data: &[f32]) -> Result<(), RunError> {
        set_input_values(&mut self.interp, i, data)
    }
    pub fn output(&self, i: usize) -> Result<TensorRef<'_>, RunError> {
        self.interp.output(i)
    }

    /// Run every segment in order. Accelerator failures never surface here: the segment
    /// reruns on the CPU. An error is the CPU backend's (a bug).
    pub fn invoke(&mut self) -> Result<(), RunError> {
        self.counters.requests += 1;
        self.maybe_recreate();
        let partition = self.partition;
        for &seg in partition.segments() {
            match seg.placement {
                Placement::Cpu => {
                    self.run_cpu(seg)?;
                    self.counters.cpu_segments += 1;
                }
                Placement::Accel(_) => {
                    if !self.run_accel(seg) {
                        self.run_cpu(seg)?;
                        self.counters.fallback_segments += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn run_cpu(&mut self, seg: Segment) -> Result<(), RunError> {
        for op in seg.ops() {
            self.interp.invoke_op(op)?;
        }
        Ok(())
    }

    /// Run `seg` on the accelerator; `false` when there is none or it failed (the arena is
    /// then as it was).
    fn run_accel(&mut self, seg: Segment) -> bool {
        let Some(accel) = self.accel.as_mut() else {
            return false;
        };
        let model = *self.interp.model();
        let arena = self.interp.arena();
        let staging = &mut self.staging[..arena.len()];
        match accel.run_segment(&model, seg, arena, staging) {
            Ok(()) => {
                let arena = self.interp.arena_mut();
                for t in segment_outputs(&model, seg) {
                    if let Some(r) = arena_range(&model, t) {
                        arena[r.clone()].copy_from_slice(&self.staging[r]);
                    }
                }
                self.counters.accel_segments += 1;
                self.streak = 0;
                true
            }
            Err(e) => {
                match e {
                    AccelError::DeviceLost => self.counters.device_lost += 1,
                    AccelError::Timeout => self.counters.timeouts += 1,
                    _ => self.counters.errors += 1,
                }
                self.accel = None;
                self.fail(e);
                false
            }
        }
    }

    /// Schedule the next creation after a failure: 1, 2, 4, … requests from now.
    fn fail(&mut self, e: AccelError) {
        let wait = 1u64 << self.streak.min(MAX_RETRY_REQUESTS.trailing_zeros());
        self.streak = self.streak.saturating_add(1);
        self.state = State::Retry {
            at_request: self.counters.requests + wait,
            last: e,
        };
    }

    fn maybe_recreate(&mut self) {
        let State::Retry { at_request, .. } = self.state else {
            return;
        };
        if self.accel.is_some() || self.counters.requests < at_request {
            return;
        }
        let model = *self.interp.model();
        match self.factory.create(&model, &self.partition) {
            Ok(a) => {
                self.accel = Some(a);
                self.state = State::Ready;
                self.counters.recreations += 1;
            }
            Err(e) => {
                self.counters.create_failures += 1;
                self.fail(e);
            }
        }
    }
}

/// Fill graph input `i` of `it` from f32 values. An f32 input takes them as they are; an
/// int32 input (token ids, masks, byte values: converted models keep integer inputs as
/// int32) takes them as integers, which f32 holds exactly up to 2^24 (every vocabulary and
/// mask fits). Any other dtype, or a count that differs from the input's, is
/// `RunError::WrongInput`. One function, so the host model and the accelerated driver
/// accept the same inputs.
pub fn set_input_values<B: Backend>(
    it: &mut Interpreter<'_, '_, B>,
    i: usize,
    data: &[f32],
) -> Result<(), RunError> {
    let m = *it.model();
    let t = m.input_tensor(i).ok_or(RunError::NoSuchTensor)?;
    let info = m.tensor(t).info;
    if info.dtype != cairn_core::DType::I32 {
        return it.set_input_f32(i, data);
    }
    if info.numel() != data.len() {
        return Err(RunError::WrongInput {
            expected_elems: info.numel() as u32,
            got_elems: data.len() as u32,
        });
    }
    let dst = it.input_bytes_mut(i)?;
    for (d, &v) in dst.chunks_exact_mut(4).zip(data) {
        d.copy_from_slice(&(v as i32).to_le_bytes());
    }
    Ok(())
}

//! A fault-injecting wrapper around any accelerator factory (std): the accelerators it
//! creates fail on chosen or seeded segment calls — device lost, timeout, error — after
//! scribbling over their staging buffer, and creation itself can fail. It counts what it
//! injected, so a test can hold the driver's counters to it.

use std::sync::{Arc, Mutex};

use cairn_core::accel::{AccelError, AccelFactory, Accelerator};
use cairn_core::partition::{OpSupport, Partition, Segment};
use cairn_core::Model;

/// When to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Never (a pass-through).
    Never,
    /// Segment call `k` (0-based, counted across every accelerator created) fails with
    /// this error.
    OnCall(u64, AccelError),
    /// Each segment call fails with probability `per_mille`/1000, with a random kind;
    /// each creation after the first fails with the same probability.
    Seeded { seed: u64, per_mille: u32 },
}

/// What was injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    pub calls: u64,
    pub device_lost: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub creates: u64,
    pub create_failures: u64,
}

#[derive(Debug)]
struct Shared {
    schedule: Schedule,
    rng: u64,
    injected: Injected,
}

impl Shared {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn roll(&mut self, per_mille: u32) -> bool {
        self.next() % 1000 < per_mille as u64
    }

    fn call_fault(&mut self) -> Option<AccelError> {
        let k = self.injected.calls;
        self.injected.calls += 1;
        let fault = match self.schedule {
            Schedule::Never => None,
            Schedule::OnCall(at, e) => (k == at).then_some(e),
            Schedule::Seeded { per_mille, .. } => {
                self.roll(per_mille).then(|| match self.next() % 3 {
                    0 => AccelError::DeviceLost,
                    1 => AccelError::Timeout,
                    _ => AccelError::Device,
                })
            }
        }?;
        match fault {
            AccelError::DeviceLost => self.injected.device_lost += 1,
            AccelError::Timeout => self.injected.timeouts += 1,
            _ => self.injected.errors += 1,
        }
        Some(fault)
    }
}

/// Wraps factory `F`; clones share one schedule and one set of counts.
#[derive(Clone)]
pub struct FaultInjector<F> {
    inner: F,
    shared: Arc<Mutex<Shared>>,
}

impl<F> FaultInjector<F> {
    pub fn new(inner: F, schedule: Schedule) -> FaultInjector<F> {
        let rng = match schedule {
            Schedule::Seeded { seed, .. } => seed,
            _ => 0,
        };
        FaultInjector {
            inner,
            shared: Arc::new(Mutex::new(Shared {
                schedule,
                rng,
                injected: Injected::default(),
            })),
        }
    }

    pub fn injected(&self) -> Injected {
        self.shared.lock().map(|s| s.injected).unwrap_or_default()
    }
}

impl<F: OpSupport> OpSupport for FaultInjector<F> {
    fn supports_op(&self, model: &Model<'_>, op: usize) -> bool {
        self.inner.supports_op(model, op)
    }
}

impl<F: AccelFactory> AccelFactory for FaultInjector<F> {
    type Accel = Faulty<F::Accel>;
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn create(
        &mut self,
        model: &Model<'_>,
        partition: &Partition,
    ) -> Result<Self::Accel, AccelError> {
        {
            let mut s = self.shared.lock().map_err(|_| AccelError::Device)?;
            let first = s.injected.creates == 0;
            s.injected.creates += 1;
            if let Schedule::Seeded { per_mille, .. } = s.schedule {
                if !first && s.roll(per_mille) {
                    s.injected.create_failures += 1;
                    return Err(AccelError::Unavailable);
                }
            }
        }
        Ok(Faulty {
            inner: self.inner.create(model, partition)?,
            shared: self.shared.clone(),
        })
    }
}

/// An accelerator that fails when its injector's schedule says so.
pub struct Faulty<A> {
    inner: A,
    shared: Arc<Mutex<Shared>>,
}

impl<A: Accelerator> Accelerator for Faulty<A> {
    fn run_segment(
        &mut self,
        model: &Model<'_>,
        segment: Segment,
        arena: &[u8],
        staging: &mut [u8],
    ) -> Result<(), AccelError> {
        let (fault, noise) = {
            let mut s = self.shared.lock().map_err(|_| AccelError::Device)?;
            let fault = s.call_fault();
            (fault, s.next())
        };
        let Some(e) = fault else {
            return self.inner.run_segment(model, segment, arena, staging);
        };
        // Fail half-way, as a device does: part of the work done, the staging buffer
        // holding garbage that must never reach the arena.
        if noise & 1 == 0 {
            let _ = self.inner.run_segment(model, segment, arena, staging);
        }
        for (i, b) in staging.iter_mut().enumerate() {
            *b = (noise >> (8 * (i % 8))) as u8 ^ i as u8;
        }
        Err(e)
    }
}

/// A software accelerator for tests: runs its segments with the reference kernels in a
/// private copy of the arena (its "device memory"), on the op kinds it is told to take.
#[derive(Clone, Copy, Debug)]
pub struct SoftFactory {
    /// Bit `kind as u16` for each op kind it takes (a [`cairn_core::op::Kinds`] set).
    pub kinds: cairn_core::op::Kinds,
}

impl OpSupport for SoftFactory {
    fn supports_op(&self, model: &Model<'_>, op: usize) -> bool {
        model
            .op(op)
            .is_some_and(|o| cairn_core::op::has_kind(self.kinds, o.kind))
    }
}

impl AccelFactory for SoftFactory {
    type Accel = SoftAccel;
    fn name(&self) -> &'static str {
        "soft"
    }
    fn create(&mut self, model: &Model<'_>, _: &Partition) -> Result<SoftAccel, AccelError> {
        Ok(SoftAccel {
            memory: vec![0; model.arena_bytes() + cairn_core::format::ALIGN],
            calls: 0,
        })
    }
}

pub struct SoftAccel {
    memory: Vec<u8>,
    calls: u8,
}

impl Accelerator for SoftAccel {
    fn run_segment(
        &mut self,
        model: &Model<'_>,
        segment: Segment,
        arena: &[u8],
        staging: &mut [u8],
    ) -> Result<(), AccelError> {
        // Whatever was in device memory is garbage: a missed input shows.
        self.calls = self.calls.wrapping_add(1);
        for (i, b) in self.memory.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) ^ self.calls;
        }
        let mut it = cairn_core::Interpreter::new(*model, crate::RefBackend, &mut self.memory)
            .map_err(|_| AccelError::Unsupported)?;
        // Only the segment's inputs come in; the rest of the device memory is stale.
        for t in cairn_core::partition::segment_inputs(model, segment) {
            if let Some(r) = cairn_core::partition::arena_range(model, t) {
                it.arena_mut()[r.clone()].copy_from_slice(&arena[r]);
            }
        }
        for op in segment.ops() {
            it.invoke_op(op).map_err(|_| AccelError::Device)?;
        }
        for t in cairn_core::partition::segment_outputs(model, segment) {
            if let Some(r) = cairn_core::partition::arena_range(model, t) {
                staging[r.clone()].copy_from_slice(&it.arena()[r]);
            }
        }
        Ok(())
    }
}

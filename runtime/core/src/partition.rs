//! Partitioning: which backend runs which ops of a checked model.
//!
//! A partition is a list of segments: runs of consecutive ops, in plan order, each placed
//! on the CPU or on one accelerator. The arena plan does not change: a segment's inputs
//! (arena tensors written before it and read inside it) and outputs (arena tensors written
//! inside it and read after it, graph outputs included) stay at their planned offsets, so
//! the arena a device needs is known before load whatever the partition. An accelerator
//! copies a segment's inputs in from the arena and its outputs out to it; the tensors that
//! live and die inside a segment never leave the accelerator.
//!
//! The policy is a fixed preference order: each op goes to the first accelerator in the
//! list that supports it, else to the CPU; an accelerator run shorter than
//! [`Policy::min_ops`] goes to the CPU (its transfers would cost more than it saves).
//!
//! This module owns only the pure logic (no allocation, no device). It must never run
//! anything: executing a partition, with fallback to the CPU, is the driver's job
//! (`cairn_kernels::hetero`).

use crate::model::{Model, Storage};

/// Most segments a partition holds (a bound for devices without an allocator).
pub const MAX_SEGMENTS: usize = 64;

/// Where a segment runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Placement {
    Cpu,
    /// The accelerator at this index of the preference list.
    Accel(u8),
}

/// Ops `start..end` (plan order) on one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Segment {
    pub start: u16,
    pub end: u16,
    pub placement: Placement,
}

impl Segment {
    pub fn ops(&self) -> core::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// What an accelerator can run, asked once per op when a partition is planned.
///
/// Contract:
/// - `supports_op` MUST answer from the op alone (its kind, kernel, shapes, dtypes,
///   quantization and parameters, as checked at load): the same model gives the same
///   answer every time, with or without a device present.
/// - Answering `true` is a promise that the accelerator's results equal the reference
///   kernels' for that op (bit for bit in int8).
pub trait OpSupport {
    fn supports_op(&self, model: &Model<'_>, op: usize) -> bool;
}

/// How ops are assigned to backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Accelerator runs of fewer ops than this go to the CPU.
    pub min_ops: u16,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { min_ops: 1 }
    }
}

/// Why a partition could not be planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PartitionError {
    /// The placements alternate more than [`MAX_SEGMENTS`] times.
    TooManySegments,
    /// More accelerators than a [`Placement`] can name.
    TooManyAccelerators,
}

/// The segments of one model, in plan order, covering every op once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    segments: [Segment; MAX_SEGMENTS],
    len: usize,
}

impl Partition {
    const EMPTY: Segment = Segment {
        start: 0,
        end: 0,
        placement: Placement::Cpu,
    };

    /// Every op on the CPU (one segment; none for a model without ops).
    pub fn cpu_only(model: &Model<'_>) -> Partition {
        let mut p = Partition {
            segments: [Self::EMPTY; MAX_SEGMENTS],
            len: 0,
        };
        if model.n_ops() > 0 {
            p.segments[0] = Segment {
                start: 0,
                end: model.n_ops() as u16,
                placement: Placement::Cpu,
            };
            p.len = 1;
        }
        p
    }

    /// Plan `model` over `preference` (best first) with the CPU behind them all.
    pub fn plan(
        model: &Model<'_>,
        preference: &[&dyn OpSupport],
        policy: Policy,
    ) -> Result<Partition, PartitionError> {
        if preference.len() > u8::MAX as usize {
            return Err(PartitionError::TooManyAccelerators);
        }
        let place = |op: usize| {
            preference
                .iter()
                .position(|a| a.supports_op(model, op))
                .map_or(Placement::Cpu, |i| Placement::Accel(i as u8))
        };
        let mut p = Partition {
            segments: [Self::EMPTY; MAX_SEGMENTS],
            len: 0,
        };
        let n = model.n_ops();
        let mut start = 0;
        while start < n {
            let placement = place(start);
            let mut end = start + 1;
            while end < n && place(end) == placement {
                end += 1;
            }
            let short = end - start < policy.min_ops as usize;
            let placement = if short { Placement::Cpu } else { placement };
            p.push(Segment {
                start: start as u16,
                end: end as u16,
                placement,
            })?;
            start = end;
        }
        Ok(p)
    }

    /// Like [`Partition::plan`], but when the placements alternate too often for
    /// [`MAX_SEGMENTS`], doubles the policy's minimum accelerator run until they fit (at
    /// worst every op lands on the CPU, which always fits).
    pub fn plan_fitting(
        model: &Model<'_>,
        preference: &[&dyn OpSupport],
        policy: Policy,
    ) -> Result<(Partition, Policy), PartitionError> {
        let mut policy = policy;
        loop {
            match Partition::plan(model, preference, policy) {
                Err(PartitionError::TooManySegments)
                    if (policy.min_ops as usize) <= model.n_ops() =>
                {
                    policy.min_ops = policy.min_ops.max(1).saturating_mul(2);
                }
                Err(PartitionError::TooManySegments) => {
                    return Ok((Partition::cpu_only(model), policy));
                }
                other => return other.map(|p| (p, policy)),
            }
        }
    }

    /// Append `seg`, merging it into the last segment when they share a placement.
    fn push(&mut self, seg: Segment) -> Result<(), PartitionError> {
        if let Some(last) = self.segments[..self.len].last_mut() {
            if last.placement == seg.placement && last.end == seg.start {
                last.end = seg.end;
                return Ok(());
            }
        }
        let slot = self
            .segments
            .get_mut(self.len)
            .ok_or(PartitionError::TooManySegments)?;
        *slot = seg;
        self.len += 1;
        Ok(())
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.len]
    }

    /// Whether any segment runs on an accelerator.
    pub fn uses_accelerator(&self) -> bool {
        self.segments()
            .iter()
            .any(|s| s.placement != Placement::Cpu)
    }

    /// Ops placed on `placement`.
    pub fn ops_on(&self, placement: Placement) -> usize {
        self.segments()
            .iter()
            .filter(|s| s.placement == placement)
            .map(|s| s.len())
            .sum()
    }
}

/// Whether op `op` reads tensor `t`.
fn reads(model: &Model<'_>, op: usize, t: u16) -> bool {
    model
        .op(op)
        .is_some_and(|o| (0..o.n_inputs()).any(|k| o.input(k) == Some(t)))
}

/// (offset, bytes) of arena tensor `t`; `None` for a constant.
pub fn arena_range(model: &Model<'_>, t: u16) -> Option<core::ops::Range<usize>> {
    match model.tensor(t).storage {
        Storage::Arena { offset, bytes } => Some(offset..offset + bytes),
        Storage::Const(_) => None,
    }
}

/// The arena tensors `seg` reads that were written before it (graph inputs included):
/// what an accelerator copies in. Each tensor once, in index order.
pub fn segment_inputs<'m>(model: &'m Model<'_>, seg: Segment) -> impl Iterator<Item = u16> + 'm {
    // Op i runs at time i + 1; graph inputs are written at time 0.
    let first = seg.start + 1;
    (0..model.n_tensors() as u16).filter(move |&t| {
        let d = model.tensor(t);
        matches!(d.storage, Storage::Arena { .. })
            && d.def_time < first
            && d.last_time >= first
            && seg.ops().any(|op| reads(model, op, t))
    })
}

/// The arena tensors `seg` writes that are read after it or are graph outputs: what an
/// accelerator copies out. Each tensor once, in index order.
pub fn segment_outputs<'m>(model: &'m Model<'_>, seg: Segment) -> impl Iterator<Item = u16> + 'm {
    let (first, last) = (seg.start + 1, seg.end);
    (0..model.n_tensors() as u16).filter(move |&t| {
        let d = model.tensor(t);
        matches!(d.storage, Storage::Arena { .. })
            && d.def_time >= first
            && d.def_time <= last
            && d.last_time > last
    })
}

/// Bytes copied (in, out) for `seg` when it runs on an accelerator.
pub fn transfer_bytes(model: &Model<'_>, seg: Segment) -> (usize, usize) {
    let bytes = |t: u16| arena_range(model, t).map_or(0, |r| r.len());
    (
        segment_inputs(model, seg).map(bytes).sum(),
        segment_outputs(model, seg).map(bytes).sum(),
    )
}

//! The boundary between the runtime and an accelerator (GPU, NPU) that runs whole
//! segments of a partitioned model (see [`crate::partition`]).
//!
//! An accelerator computes in its own memory. It reads a segment's inputs from the arena
//! and writes the segment's outputs into a staging buffer laid out like the arena; the
//! driver copies them into the arena only when the whole segment succeeded. So a failure
//! at any point leaves the arena as it was, and the CPU can rerun the segment from the
//! same inputs.

use crate::model::Model;
use crate::partition::{OpSupport, Partition, Segment};

/// Why an accelerator could not be created or could not finish a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AccelError {
    /// No device (no adapter, driver or library).
    Unavailable,
    /// The device lacks a feature or limit this model needs.
    Unsupported,
    /// A kernel (shader, pipeline, graph) failed to build.
    Compile,
    /// The device was lost (reset, removed, driver crash).
    DeviceLost,
    /// A wait for the device passed its deadline.
    Timeout,
    /// Any other device error (out of memory, a rejected command).
    Device,
}

impl core::fmt::Display for AccelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AccelError::Unavailable => "no device",
            AccelError::Unsupported => "the device lacks a feature or limit the model needs",
            AccelError::Compile => "a kernel failed to build",
            AccelError::DeviceLost => "the device was lost",
            AccelError::Timeout => "the device did not answer in time",
            AccelError::Device => "device error",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AccelError {}

/// An accelerator ready to run the segments of one model placed on it.
///
/// Contract:
/// - `run_segment` is called only with a segment of the partition the accelerator was
///   created for, placed on it, with the model it was created for.
/// - It MUST read only the segment's input tensors from `arena` (at their planned
///   offsets) and MUST write every output tensor of the segment into `staging` at the same
///   offsets (`staging.len() == arena.len()`). It MAY write other bytes of `staging`.
/// - Its results MUST equal the reference kernels' (bit for bit in int8).
/// - It MUST return within its own timeout (every wait for the device is bounded) and
///   MUST NOT panic; on `Err` the driver drops it, reruns the segment on the CPU and may
///   create a new one for a later request.
pub trait Accelerator {
    fn run_segment(
        &mut self,
        model: &Model<'_>,
        segment: Segment,
        arena: &[u8],
        staging: &mut [u8],
    ) -> Result<(), AccelError>;
}

/// Makes accelerators: says what it supports before any device is touched (so a partition
/// can be planned and shown without one) and creates one for a planned partition.
///
/// Contract: `create` MUST NOT panic and MUST bound its waits; on success the accelerator
/// holds everything the partition's accelerator segments need (weights uploaded, kernels
/// built), so no segment fails for a reason `create` could have found.
pub trait AccelFactory: OpSupport {
    type Accel: Accelerator;
    fn name(&self) -> &'static str;
    fn create(
        &mut self,
        model: &Model<'_>,
        partition: &Partition,
    ) -> Result<Self::Accel, AccelError>;
}

//! Errors: one small enum per operation, no strings, printable on any target.

use crate::kernel::KernelId;
use crate::op::{OpKind, ShapeError};

/// Why a model's bytes were refused. Raised by [`crate::Model::parse`] and
/// [`crate::Interpreter::new`]; nothing has run when you see one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LoadError {
    /// Fewer bytes than a header.
    Truncated,
    /// The file does not start with the `.cairn` magic.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion { found: u8, supported: u8 },
    /// The header's own fields are inconsistent (length, reserved bytes, counts).
    BadHeader,
    /// The header states another length than the bytes given.
    LengthMismatch { stated: u32, actual: u32 },
    /// The CRC-32 over the file does not match: the bytes were damaged.
    Checksum { stated: u32, actual: u32 },
    /// The model bytes do not start on a 16-byte boundary (see `cairn_core::Aligned`).
    Misaligned,
    /// A section lies (partly) outside the file, or is misaligned.
    Section,
    /// Tensor `index` is malformed (dtype, rank, size, location, quantization).
    Tensor { index: u16 },
    /// Op `index` is malformed.
    Op {
        index: u16,
        kind: Option<OpKind>,
        problem: OpProblem,
    },
    /// Two tensors that are alive at the same time share arena bytes.
    PlanOverlap { a: u16, b: u16 },
    /// The kernel set in the header is not the one the ops need.
    KernelSet,
    /// The backend lacks a kernel the model needs.
    MissingKernel(KernelId),
    /// The caller's arena is smaller than the model's plan (after 16-byte alignment).
    ArenaTooSmall { need: u32, have: u32 },
}

/// What is wrong with one op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum OpProblem {
    UnknownKind,
    Arity,
    TensorIndex,
    /// An input is produced by this or a later op (cycle or wrong order).
    Order,
    /// A tensor is written by more than one op, or a const/graph input is written.
    Output,
    ParamLen,
    Shape(ShapeError),
    DType,
    Quant,
    /// The output overlaps an input in the arena in a way the op cannot handle.
    InPlace,
    /// A pre-packed tensor where the op cannot read one (only a one-group int8 Conv's
    /// weights may be packed).
    Layout,
}

/// Errors from a backend's `execute` (a bug or a backend limit, never bad user input:
/// inputs were checked at load).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ExecError {
    Unsupported(KernelId),
    DType,
    Misaligned,
    MissingInput,
    Shape,
}

/// Errors while running a loaded model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RunError {
    /// Op `index` failed in the backend.
    Exec { index: u16, error: ExecError },
    /// Input/output number out of range.
    NoSuchTensor,
    /// The data given has the wrong dtype or element count.
    WrongInput { expected_elems: u32, got_elems: u32 },
}

macro_rules! display_via_debug {
    ($($t:ty),*) => {$(
        impl core::fmt::Display for $t {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(self, f)
            }
        }
        #[cfg(feature = "std")]
        impl std::error::Error for $t {}
    )*};
}
display_via_debug!(LoadError, ExecError, RunError);

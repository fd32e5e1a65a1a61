//! cairn-learn: learning after deployment, on the device, with no allocator.
//!
//! The data path: the frozen int8 backbone (a `.cairn` model run by the interpreter) turns an
//! observation into latent features; `cairn-memory` keeps them (with labels) as records;
//! this crate trains a small **adapter** on those features:
//!
//! ```text
//! x (features from memory, f32)
//!   └─ frozen int8 FullyConnected of the backbone  +  LoRA delta  (scale · B · A · x)
//!        └─ ReLU ─ h ─ linear head (W h + b) ─ softmax
//! ```
//!
//! - [`layout`]: every buffer training needs (active and candidate weights, gradients,
//!   optimizer state, the activations kept for backward) planned into one `f32` arena before
//!   the first step; a too-small arena is refused up front.
//! - [`frozen`]: the backbone layer the LoRA adapter sits on, read from the model in place;
//!   its forward pass is integer (int8 × int8 → i32 accumulators).
//! - [`learner`]: forward, backward, SGD with momentum or Adam, gradient clipping; a candidate
//!   slot that never touches the active one; folding into int8 weights for inference.
//! - [`replay`]: batches that mix new records with replayed old ones from the memory store.
//! - [`ncm`]: the no-gradient baseline, nearest class mean over memory.
//! - [`gate`]: the forgetting gate that decides promotion on held-out records.
//! - [`lineage`]: content-addressed checkpoints persisted through `NorFlash`, rollback.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

pub mod frozen;
pub mod gate;
pub mod layout;
pub mod learner;
pub mod lineage;
pub mod ncm;
pub mod optim;
pub mod replay;

pub use frozen::FrozenFc;
pub use gate::{Decision, Gate, Metrics, Reject};
pub use layout::{AdapterShape, Layout};
pub use learner::{Learner, Sample};
pub use optim::{Optimizer, TrainConfig};

/// Why learning refused to go on. Every error is reported before anything is changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LearnError {
    /// The arena cannot hold the plan: `need` bytes, `have` bytes.
    ArenaTooSmall { need: usize, have: usize },
    /// A sample or buffer has the wrong length.
    WrongShape { expected: usize, got: usize },
    /// A label outside the adapter's classes.
    BadLabel(u16),
    /// The model op chosen for the adapter is not an int8 FullyConnected with the layout
    /// the adapter needs.
    NotAnInt8Fc,
    /// The checkpoint was trained on another base model.
    WrongBaseModel,
    /// No checkpoint with this id.
    UnknownCheckpoint,
    /// The checkpoint's weights do not match its digest (damaged storage).
    Corrupt,
    /// Its shape does not match this learner.
    ShapeMismatch,
    /// The checkpoint log is full.
    LogFull,
    /// The storage failed.
    Storage,
    /// The arena is not 4-byte aligned.
    ArenaMisaligned,
    /// A hyper-parameter is out of range (non-finite, zero batch, ...).
    BadConfig,
}

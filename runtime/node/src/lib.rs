//! cairn-node: a device composed once.
//!
//! A [`Node`] is the model, the memory store, the adapter learner with its lineage, and the
//! sync item set of one device, wired together the one way every target needs:
//!
//! - **observe** ([`Node::observe`], [`Node::remember`]): run the model, quantize its
//!   features to int8 (non-finite values are refused, [`features`]), and keep a record
//!   whose provenance (origin, time, model, predicted class) is in the record itself;
//! - **learn** ([`Node::learn`]): train a candidate adapter on memory, judge it with the
//!   forgetting gate on held-out records, promote or reject it, and write either outcome
//!   to the lineage; a promoted adapter becomes a signed contribution for the fleet;
//! - **sync** ([`Node::session`], [`Node::export_bundle`], [`Node::import_bundle`]): sign
//!   this node's own records, reconcile with a peer, write and read bundles;
//! - **apply** what arrives: records go into the memory store as they are accepted (an item
//!   is acknowledged only once its record is durable, [`apply`]); merged adapter
//!   contributions become a candidate checkpoint that must pass the same gate before it is
//!   promoted ([`Node::apply`]), so a poisoned merge is rejected like a poisoned batch.
//!
//! The node borrows its model bytes, arenas and fleet list (`'a`), so firmware holds one
//! with no allocator; it owns its memory store, lineage log and item set, whose storage
//! types a target picks through [`Parts`]. With `std`, [`owned::HostNode`] owns everything.
//!
//! What a node must never do: open files or sockets, read a clock, or draw randomness. The
//! time and the random bytes of a session come in as arguments; storage comes in through
//! `NorFlash`. Targets add only their edges (files, sockets, semihosting, the C ABI).
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod adapter;
pub mod apply;
pub mod contributions;
pub mod features;
pub mod identity;
#[cfg(feature = "alloc")]
pub mod items;
mod node;
#[cfg(feature = "std")]
pub mod owned;
pub mod revocations;
pub mod sensor;
pub mod share;

pub use adapter::{Adapter, LearnSpec, Outcome};
pub use apply::{Applier, ApplyReport, Items};
pub use contributions::Contributions;
pub use identity::Identity;
pub use node::{Dismantled, Memo, Node, NodeState, NodeStats, Observation, SessionSettings};
pub use revocations::Revocations;
pub use sensor::Sensor;

use cairn_memory::ram::Ram;
use embedded_storage::nor_flash::NorFlash;

/// The types a target picks for each part of a node: how the model runs, where memories
/// and checkpoints are stored, and how the sync item set is held.
pub trait Parts {
    /// Runs the model (the CPU backend, or a `Select` of kernel families on firmware).
    type Backend: cairn_core::Backend;
    /// The memory store's flash (a file, a flash region, RAM in tests and the simulator).
    type MemoryFlash: NorFlash;
    /// The memory store's RAM side (`HeapRam` with alloc, `FixedRam` without).
    type MemoryRam: Ram;
    /// The lineage log's flash.
    type LineageFlash: NorFlash;
    /// The set of signed items this node syncs.
    type Items: Items;
}

/// Largest feature vector a node keeps (the stack buffer `observe` and `remember` use).
pub const MAX_FEATURES: usize = 512;

/// Why a node refused an operation. Nothing is changed when one is returned, except where
/// the variant says storage failed (then reopen the store: see `cairn-memory`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum NodeError {
    /// The fleet list does not verify against the authority's key.
    Fleet(cairn_sync::Reject),
    /// A feature value is NaN or infinite.
    NonFinite,
    /// A vector has the wrong length (or is longer than [`MAX_FEATURES`]).
    Shape { expected: usize, got: usize },
    /// The model was refused when the node was assembled.
    Model(cairn_core::LoadError),
    /// Running the model failed.
    Run(cairn_core::RunError),
    /// The memory store refused (or its storage failed).
    Memory(cairn_memory::StoreError),
    /// The learner or the lineage refused.
    Learn(cairn_learn::LearnError),
    /// The sync layer refused (an item, a bundle, a session setting).
    Sync(cairn_sync::Reject),
    /// The operation needs a part this node was built without.
    Missing(Part),
    /// A model output is not a tensor the node can read (not f32 or per-tensor int8).
    Output,
    /// A learning round found no record to train on (the memory is empty, or holds only
    /// the gate's held-out records): nothing was trained, the adapter is unchanged.
    NothingToLearn,
}

/// The optional parts of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Model,
    Learner,
}

impl From<cairn_memory::StoreError> for NodeError {
    fn from(e: cairn_memory::StoreError) -> Self {
        NodeError::Memory(e)
    }
}
impl From<cairn_learn::LearnError> for NodeError {
    fn from(e: cairn_learn::LearnError) -> Self {
        NodeError::Learn(e)
    }
}
impl From<cairn_core::RunError> for NodeError {
    fn from(e: cairn_core::RunError) -> Self {
        NodeError::Run(e)
    }
}

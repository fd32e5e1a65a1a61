//! The owning convenience form (std): [`HostNode`] keeps the model bytes, arenas, fleet
//! list and storage a [`Node`] borrows, and assembles the node for each use
//! ([`HostNode::with`]) — what a long-lived handle (the C library, an app) holds.
//!
//! Assembling parses the model (its checks run again) and verifies the fleet list again
//! (one Ed25519 verification); the adapter reloads the lineage's active checkpoint. The
//! node's counters and last judged merge are carried between uses.

use std::vec::Vec;

use cairn_core::emit::AlignedBytes;
use cairn_core::Model;
use cairn_kernels::CpuBackend;
use cairn_learn::lineage::{model_hash, CheckpointLog};
use cairn_memory::store::LogStore;

use crate::adapter::{self, Adapter, LearnSpec};
use crate::identity::Identity;
use crate::node::{Node, NodeState};
use crate::sensor::Sensor;
use crate::{NodeError, Part, Parts};

struct OwnedModel {
    bytes: AlignedBytes,
    arena: AlignedBytes,
    features_output: usize,
    class_output: Option<usize>,
}

struct OwnedLearning<L: embedded_storage::nor_flash::NorFlash> {
    spec: LearnSpec,
    fin: usize,
    arena: Vec<u32>,
    lineage: Option<CheckpointLog<L>>,
}

/// A node that owns everything it needs, on the CPU backend.
pub struct HostNode<P: Parts<Backend = CpuBackend>> {
    seed: [u8; 32],
    fleet: Vec<u8>,
    authority: [u8; 32],
    model: Option<OwnedModel>,
    learning: Option<OwnedLearning<P::LineageFlash>>,
    memory: Option<LogStore<P::MemoryFlash, P::MemoryRam>>,
    items: Option<P::Items>,
    state: NodeState,
}

impl<P: Parts<Backend = CpuBackend>> HostNode<P> {
    /// A node with identity `seed` in the fleet `fleet` (verified against `authority` now
    /// and at each assembly), keeping `memory` and syncing `items`.
    pub fn new(
        seed: [u8; 32],
        fleet: Vec<u8>,
        authority: [u8; 32],
        memory: LogStore<P::MemoryFlash, P::MemoryRam>,
        items: P::Items,
    ) -> Result<Self, NodeError> {
        Identity::new(&seed, &fleet, &authority)?;
        Ok(HostNode {
            seed,
            fleet,
            authority,
            model: None,
            learning: None,
            memory: Some(memory),
            items: Some(items),
            state: NodeState::default(),
        })
    }

    /// Run `bytes` (a `.cairn` model) on observations; graph output `features_output` is
    /// what memory keeps, `class_output` the class scores.
    pub fn with_model(
        mut self,
        bytes: &[u8],
        features_output: usize,
        class_output: Option<usize>,
    ) -> Result<Self, NodeError> {
        let bytes = AlignedBytes::from_slice(bytes);
        let model = Model::parse(bytes.as_slice()).map_err(NodeError::Model)?;
        let arena = AlignedBytes::zeroed(model.arena_bytes());
        self.model = Some(OwnedModel {
            bytes,
            arena,
            features_output,
            class_output,
        });
        Ok(self)
    }

    /// Learn with `spec` over `fin`-wide features, checkpoints in `lineage`.
    pub fn with_learning(
        mut self,
        spec: LearnSpec,
        fin: usize,
        lineage: CheckpointLog<P::LineageFlash>,
    ) -> Result<Self, NodeError> {
        let model = match &self.model {
            Some(m) => Some(Model::parse(m.bytes.as_slice()).map_err(NodeError::Model)?),
            None => None,
        };
        let need = adapter::arena_bytes(&spec, model.as_ref(), fin)?;
        self.learning = Some(OwnedLearning {
            spec,
            fin,
            arena: vec![0; need.div_ceil(4)],
            lineage: Some(lineage),
        });
        Ok(self)
    }

    /// The model's hash (zeros without a model): the base contributions must carry.
    pub fn base_model(&self) -> [u8; 32] {
        self.model
            .as_ref()
            .map_or([0; 32], |m| model_hash(m.bytes.as_slice()))
    }

    /// Assemble the node, run `f` on it, and keep its parts for the next use.
    pub fn with<T>(&mut self, f: impl FnOnce(&mut Node<'_, P>) -> T) -> Result<T, NodeError> {
        let identity = Identity::new(&self.seed, &self.fleet, &self.authority)?;
        let base = self.base_model();
        let mut model = None;
        let mut sensor = None;
        if let Some(m) = self.model.as_mut() {
            let parsed = Model::parse(m.bytes.as_slice()).map_err(NodeError::Model)?;
            let tag = u32::from_le_bytes([base[0], base[1], base[2], base[3]]);
            let arena = m.arena.as_mut_slice();
            sensor = Some(Sensor::new(
                parsed,
                CpuBackend,
                arena,
                m.features_output,
                m.class_output,
                tag,
            )?);
            model = Some(parsed);
        }
        let mut learning = None;
        if let Some(l) = self.learning.as_mut() {
            let mut lineage = l.lineage.take().ok_or(NodeError::Missing(Part::Learner))?;
            let arena = bytemuck::cast_slice_mut::<u32, u8>(&mut l.arena);
            match Adapter::open(l.spec, model.as_ref(), base, l.fin, arena, &mut lineage) {
                Ok(a) => learning = Some((a, lineage, &mut l.lineage)),
                Err(e) => {
                    l.lineage = Some(lineage);
                    return Err(e);
                }
            }
        }
        let (Some(memory), Some(items)) = (self.memory.take(), self.items.take()) else {
            unreachable!("a HostNode always holds its memory and items between uses")
        };
        let mut node = Node::<P>::new(identity, memory, items).with_state(self.state);
        if let Some(s) = sensor {
            node = node.with_sensor(s);
        }
        let mut lineage_slot = None;
        if let Some((a, lineage, slot)) = learning {
            node = node.with_learning(a, lineage);
            lineage_slot = Some(slot);
        }
        let out = f(&mut node);
        self.state = node.state();
        let (memory, lineage, items) = node.into_parts();
        self.memory = Some(memory);
        self.items = Some(items);
        if let Some(slot) = lineage_slot {
            *slot = lineage;
        }
        Ok(out)
    }
}

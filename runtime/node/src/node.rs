//! The node: its parts, and the four things every target does with them.
//!
//! Provenance of a record a node keeps (the record's own fields, covered by its content id
//! and by its origin's signature once published): `origin` = this node's id,
//! `timestamp_ms` = the caller's clock, `meta[0]` = the model's tag (see
//! [`crate::Sensor::new`]), `meta[1]` = the model's predicted class + 1 (0: no model ran),
//! `meta[2]` = 1 when the label came from the caller (ground truth), 0 when it is the
//! model's prediction. `meta[3]` stays the memory store's (observations a prototype holds).

use cairn_learn::lineage::CheckpointLog;
use cairn_memory::store::{LogStore, Meta};
use cairn_memory::{Id, Record};
use cairn_sync::bundle::ImportReport;
use cairn_sync::item::{Kind, HEAD, SIG};
use cairn_sync::{Config, Role, Session, Store};

use crate::adapter::{Adapter, Outcome};
use crate::apply::{Applier, ApplyReport};
use crate::identity::Identity;
use crate::sensor::Sensor;
use crate::{features, share, NodeError, Part, Parts, MAX_FEATURES};

/// Link settings of one sync session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSettings {
    /// Largest frame the link carries.
    pub mtu: usize,
    /// Item bytes this node may send in the session (`u64::MAX`: no limit).
    pub byte_budget: u64,
    /// Retransmit unacknowledged frames after this long.
    pub rto_ms: u64,
}

/// What `observe` did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    pub id: Id,
    /// The model's predicted class.
    pub class: Option<u16>,
    /// Width of the features kept.
    pub dim: usize,
}

/// Counters since the node was assembled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub remembered: u32,
    /// Own records signed into the item set.
    pub published: u32,
    /// Own records too large to sign (see [`share::MAX_PUBLISHED_RECORD`]).
    pub unpublishable: u32,
    pub learned_promoted: u32,
    pub learned_rejected: u32,
    pub merges_promoted: u32,
    pub merges_rejected: u32,
    pub contributions_made: u32,
}

/// The label and provenance of a memory (see the module note).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memo<'p> {
    pub label: u16,
    pub importance: u8,
    pub time_ms: u64,
    /// `meta[0..3]` of the record.
    pub meta: [u32; 3],
    pub payload: &'p [u8],
}

/// What a node learned about itself that is not in its storage: counters and the last
/// judged merge. Carry it across reassemblies ([`Node::state`], [`Node::with_state`]); a
/// restart may lose it (the next `apply` judges the merge again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    pub report: ApplyReport,
    pub stats: NodeStats,
    /// Digest of the contribution set last judged, and of the merged adapter.
    pub judged: Option<[u8; 32]>,
    pub merged: Option<[u8; 32]>,
}

/// A node taken apart (see [`Node::dismantle`]).
pub struct Dismantled<'a, P: Parts> {
    pub identity: Identity<'a>,
    pub sensor: Option<Sensor<'a, 'a, P::Backend>>,
    pub adapter: Option<Adapter<'a>>,
    pub lineage: Option<CheckpointLog<P::LineageFlash>>,
    pub memory: LogStore<P::MemoryFlash, P::MemoryRam>,
    pub items: P::Items,
}

pub struct Node<'a, P: Parts> {
    identity: Identity<'a>,
    sensor: Option<Sensor<'a, 'a, P::Backend>>,
    learning: Option<(Adapter<'a>, CheckpointLog<P::LineageFlash>)>,
    memory: LogStore<P::MemoryFlash, P::MemoryRam>,
    items: P::Items,
    /// Contributions for another base model are refused (the adapter's base when learning).
    base_model: [u8; 32],
    report: ApplyReport,
    /// The contribution set last judged, and the merged adapter's digest.
    judged: Option<[u8; 32]>,
    merged: Option<[u8; 32]>,
    stats: NodeStats,
}

impl<'a, P: Parts> Node<'a, P> {
    /// A node that keeps memories and syncs them; add a model with [`Node::with_sensor`]
    /// and learning with [`Node::with_learning`].
    pub fn new(
        identity: Identity<'a>,
        memory: LogStore<P::MemoryFlash, P::MemoryRam>,
        items: P::Items,
    ) -> Self {
        Node {
            identity,
            sensor: None,
            learning: None,
            memory,
            items,
            base_model: [0; 32],
            report: ApplyReport::default(),
            judged: None,
            merged: None,
            stats: NodeStats::default(),
        }
    }

    /// The base model contributions must be for, when this node does not learn (a relay).
    pub fn with_base_model(mut self, base: [u8; 32]) -> Self {
        self.base_model = base;
        self
    }

    pub fn with_sensor(mut self, sensor: Sensor<'a, 'a, P::Backend>) -> Self {
        self.sensor = Some(sensor);
        self
    }

    /// Learning: `adapter` opened on `lineage` (see [`Adapter::open`]).
    pub fn with_learning(
        mut self,
        adapter: Adapter<'a>,
        lineage: CheckpointLog<P::LineageFlash>,
    ) -> Self {
        self.base_model = *adapter.base();
        self.learning = Some((adapter, lineage));
        self
    }

    pub fn with_state(mut self, state: NodeState) -> Self {
        self.report = state.report;
        self.stats = state.stats;
        self.judged = state.judged;
        self.merged = state.merged;
        self
    }
    pub fn state(&self) -> NodeState {
        NodeState {
            report: self.report,
            stats: self.stats,
            judged: self.judged,
            merged: self.merged,
        }
    }

    pub fn identity(&self) -> &Identity<'a> {
        &self.identity
    }
    pub fn memory(&self) -> &LogStore<P::MemoryFlash, P::MemoryRam> {
        &self.memory
    }
    pub fn items(&self) -> &P::Items {
        &self.items
    }
    /// The item set itself: an item put here skips every check (signature, membership,
    /// base model) and the memory store. For tests and the simulator's attackers; a target
    /// adds items through sessions, bundles, `publish` and `contribute_into`.
    pub fn items_mut(&mut self) -> &mut P::Items {
        &mut self.items
    }
    pub fn report(&self) -> &ApplyReport {
        &self.report
    }
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }
    pub fn sensor(&mut self) -> Option<&mut Sensor<'a, 'a, P::Backend>> {
        self.sensor.as_mut()
    }
    pub fn adapter(&mut self) -> Option<&mut Adapter<'a>> {
        self.learning.as_mut().map(|(a, _)| a)
    }
    pub fn lineage(&mut self) -> Option<&mut CheckpointLog<P::LineageFlash>> {
        self.learning.as_mut().map(|(_, l)| l)
    }
    /// Digest of the last merged adapter (see [`Node::apply`]).
    pub fn merged_digest(&self) -> Option<[u8; 32]> {
        self.merged
    }
    /// The base model hash contributions must carry.
    pub fn base_model(&self) -> [u8; 32] {
        self.base_model
    }

    /// Take the node apart, keeping what borrows its buffers (the sensor, the adapter) for
    /// a reassembly after a restart: reopen the storage from its flash, then
    /// [`Adapter::restart`] on the reopened lineage.
    pub fn dismantle(self) -> Dismantled<'a, P> {
        let (adapter, lineage) = match self.learning {
            Some((a, l)) => (Some(a), Some(l)),
            None => (None, None),
        };
        Dismantled {
            identity: self.identity,
            sensor: self.sensor,
            adapter,
            lineage,
            memory: self.memory,
            items: self.items,
        }
    }

    /// Give the parts back (to persist them, or to reassemble after a restart).
    #[allow(clippy::type_complexity)]
    pub fn into_parts(
        self,
    ) -> (
        LogStore<P::MemoryFlash, P::MemoryRam>,
        Option<CheckpointLog<P::LineageFlash>>,
        P::Items,
    ) {
        (self.memory, self.learning.map(|(_, l)| l), self.items)
    }

    // ---- observe -----------------------------------------------------------------------

    /// Keep `features` (quantized to int8; non-finite values refused) as this node's record.
    pub fn remember(&mut self, features: &[f32], memo: &Memo<'_>) -> Result<Id, NodeError> {
        let mut q = [0i8; MAX_FEATURES];
        let q = q.get_mut(..features.len()).ok_or(NodeError::Shape {
            expected: MAX_FEATURES,
            got: features.len(),
        })?;
        let scale = features::quantize(features, q)?;
        let [m0, m1, m2] = memo.meta;
        let r = Record {
            origin: self.identity.node_id(),
            timestamp_ms: memo.time_ms,
            label: memo.label,
            importance: memo.importance,
            meta: [m0, m1, m2, 0],
            scale,
            embedding: q,
            payload: memo.payload,
        };
        let id = self.memory.append(&r)?;
        self.stats.remembered += 1;
        Ok(id)
    }

    /// Run the model on `input` and keep its features; the record's label is `label` when
    /// given (ground truth), else the model's prediction.
    pub fn observe(
        &mut self,
        input: &[f32],
        label: Option<u16>,
        importance: u8,
        now_ms: u64,
    ) -> Result<Observation, NodeError> {
        let sensor = self
            .sensor
            .as_mut()
            .ok_or(NodeError::Missing(Part::Model))?;
        let mut f = [0f32; MAX_FEATURES];
        let sensed = sensor.sense(input, &mut f)?;
        let tag = sensor.model_tag();
        let memo = Memo {
            label: label.or(sensed.class).unwrap_or(0),
            importance,
            time_ms: now_ms,
            meta: [
                tag,
                sensed.class.map_or(0, |c| c as u32 + 1),
                label.is_some() as u32,
            ],
            payload: &[],
        };
        let id = self.remember(&f[..sensed.dim], &memo)?;
        Ok(Observation {
            id,
            class: sensed.class,
            dim: sensed.dim,
        })
    }

    /// The class of `input` as this node sees it now, keeping nothing: the model's
    /// features, quantized as memory keeps them, through the active adapter when the node
    /// learns; else the model's own class output.
    pub fn classify(&mut self, input: &[f32]) -> Result<u16, NodeError> {
        let sensor = self
            .sensor
            .as_mut()
            .ok_or(NodeError::Missing(Part::Model))?;
        let mut f = [0f32; MAX_FEATURES];
        let sensed = sensor.sense(input, &mut f)?;
        let Some((adapter, _)) = self.learning.as_mut() else {
            return sensed.class.ok_or(NodeError::Output);
        };
        let mut q = [0i8; MAX_FEATURES];
        let (f, q) = (&f[..sensed.dim], &mut q[..sensed.dim]);
        let scale = features::quantize(f, q)?;
        adapter.predict(q, scale)
    }

    // ---- sync --------------------------------------------------------------------------

    /// Sign this node's records that the item set lacks into it (see [`share::publish`]).
    /// Returns how many.
    pub fn publish(&mut self) -> Result<u32, NodeError> {
        let p = share::publish(&self.identity, &mut self.memory, &mut self.items)?;
        self.stats.published += p.added;
        self.stats.unpublishable += p.unpublishable;
        Ok(p.added)
    }

    fn applier(&mut self) -> Applier<'_, P::Items, P::MemoryFlash, P::MemoryRam> {
        Applier {
            items: &mut self.items,
            memory: &mut self.memory,
            report: &mut self.report,
        }
    }

    /// A sync session with a peer over this node's items (own records published first).
    /// `random`: 48 fresh random bytes (ephemeral key and nonce). Drive it over a link, drop
    /// it, then call [`Node::apply`] for the adapter contributions it brought.
    #[allow(clippy::type_complexity)]
    pub fn session(
        &mut self,
        role: Role,
        link: SessionSettings,
        random: &[u8; 48],
        now_ms: u64,
    ) -> Result<Session<'a, Applier<'_, P::Items, P::MemoryFlash, P::MemoryRam>>, NodeError> {
        self.publish()?;
        let cfg = Config {
            mtu: link.mtu,
            byte_budget: link.byte_budget,
            psk: None,
            fleet: self.identity.fleet(),
            base_model: self.base_model,
            rto_ms: link.rto_ms,
        };
        let seed = self.identity.key().to_bytes();
        let store = self.applier();
        Session::new(role, cfg, &seed, random, store, now_ms).map_err(NodeError::Sync)
    }

    /// Apply a bundle (possibly cut short) from byte `from` (see [`share::import_bundle`]).
    /// Call [`Node::apply`] after it for contributions.
    pub fn import_bundle(&mut self, bytes: &[u8], from: usize) -> Result<ImportReport, NodeError> {
        share::import_bundle(
            &self.identity,
            &self.base_model,
            &mut self.memory,
            &mut self.items,
            &mut self.report,
            bytes,
            from,
        )
    }

    /// Take one signed item from outside the sync protocols (see [`share::accept`]).
    pub fn accept(&mut self, bytes: &[u8]) -> Result<bool, NodeError> {
        share::accept(
            &self.identity,
            &mut self.memory,
            &mut self.items,
            &mut self.report,
            bytes,
        )
    }

    /// Write a bundle of every item that arrived since `mark` (see
    /// [`share::export_bundle`]); the items written.
    pub fn export_bundle(
        &mut self,
        mark: u64,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u32, NodeError> {
        share::export_bundle(
            &self.identity,
            &mut self.memory,
            &mut self.items,
            mark,
            sink,
        )
    }

    /// Write a bundle of what this node authored: its records and the contributions it
    /// signed that its item set keeps (see [`share::export_own`]).
    pub fn export_own(&mut self, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<u32, NodeError> {
        share::export_own(&self.identity, &mut self.memory, &self.items, sink)
    }

    // ---- learn and apply ---------------------------------------------------------------

    /// One learning round on this node's memory: train, gate, promote or reject (both
    /// written to the lineage). A promoted adapter is offered to the fleet as a signed
    /// contribution when the item set keeps items (with alloc).
    /// The new records are those labelled at or above the spec's `new_from`.
    pub fn learn(&mut self, on_step: &mut dyn FnMut(u32, f32)) -> Result<Outcome, NodeError> {
        let (adapter, _) = self
            .learning
            .as_ref()
            .ok_or(NodeError::Missing(Part::Learner))?;
        let new_from = adapter.spec().new_from;
        self.learn_with(&|m: &Meta| m.label >= new_from, on_step)
    }

    /// [`Node::learn`] where `is_new` picks the new records.
    pub fn learn_with(
        &mut self,
        is_new: &dyn Fn(&Meta) -> bool,
        on_step: &mut dyn FnMut(u32, f32),
    ) -> Result<Outcome, NodeError> {
        let (adapter, lineage) = self
            .learning
            .as_mut()
            .ok_or(NodeError::Missing(Part::Learner))?;
        let outcome = adapter.learn(&self.memory, lineage, is_new, on_step)?;
        if outcome.promoted() {
            self.stats.learned_promoted += 1;
            #[cfg(feature = "alloc")]
            {
                let len = self.contribution_buffer_len()?;
                self.contribute_into(&mut alloc::vec![0u8; len])?;
            }
        } else {
            self.stats.learned_rejected += 1;
        }
        Ok(outcome)
    }

    /// Bytes of buffer [`Node::contribute_into`] needs.
    pub fn contribution_buffer_len(&self) -> Result<usize, NodeError> {
        let (adapter, _) = self
            .learning
            .as_ref()
            .ok_or(NodeError::Missing(Part::Learner))?;
        Ok(2 * adapter.contribution_len() + HEAD + SIG)
    }

    /// Sign the active adapter as a contribution into the item set (`buf`: see
    /// [`Node::contribution_buffer_len`]); its id, or `None` while the adapter is the base.
    pub fn contribute_into(&mut self, buf: &mut [u8]) -> Result<Option<Id>, NodeError> {
        let (adapter, _) = self
            .learning
            .as_mut()
            .ok_or(NodeError::Missing(Part::Learner))?;
        let body_len = adapter.contribution_len();
        let (out, body) = buf.split_at_mut(body_len + HEAD + SIG);
        let Some(len) = adapter.contribution_body(body)? else {
            return Ok(None);
        };
        let item = share::sign(
            &self.identity,
            Kind::Contribution,
            [0; 16],
            &body[..len],
            out,
        )?;
        let id = item.id;
        if self.items.insert(&item).map_err(NodeError::Sync)? {
            self.report.contributions += 1;
            self.stats.contributions_made += 1;
        }
        Ok(Some(id))
    }

    /// Judge the fleet's merged adapter when the set of contributions changed since the
    /// last judgement: the merge becomes a candidate checkpoint that passes the gate on
    /// this node's held-out memory before it is promoted, or is rejected (both recorded in
    /// the lineage). `scratch` holds one contribution item. `None`: nothing new to judge.
    pub fn apply_with(&mut self, scratch: &mut [u8]) -> Result<Option<Outcome>, NodeError> {
        let Some((adapter, lineage)) = self.learning.as_mut() else {
            return Ok(None);
        };
        let judged = self.judged;
        if adapter
            .contribution_set(&self.items, scratch)
            .map(|s| s.ids)
            == judged
        {
            return Ok(None);
        }
        let Some(set) = adapter.merge(&self.items, scratch)? else {
            return Ok(None);
        };
        self.merged = Some(adapter.candidate_digest());
        let outcome = adapter.settle_merge(&self.memory, lineage, &set)?;
        self.judged = Some(set.ids);
        if outcome.promoted() {
            self.stats.merges_promoted += 1;
        } else {
            self.stats.merges_rejected += 1;
        }
        Ok(Some(outcome))
    }

    /// [`Node::apply_with`] with a scratch buffer from the heap.
    #[cfg(feature = "alloc")]
    pub fn apply(&mut self) -> Result<Option<Outcome>, NodeError> {
        let len = match self.learning.as_ref() {
            Some((a, _)) => a.contribution_len() + HEAD + SIG,
            None => return Ok(None),
        };
        self.apply_with(&mut alloc::vec![0u8; len])
    }
}

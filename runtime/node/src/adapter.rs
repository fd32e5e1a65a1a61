//! The node's adapter: a learner set up once from the model (LoRA on one int8
//! FullyConnected and a head initialised from the base classifier, or a head alone over the
//! features), trained on memory, judged by the forgetting gate on held-out records, and
//! settled into the lineage — promoted with a checkpoint, or rejected with the reason.
//!
//! Contributions to the fleet are deltas from the base adapter (the one `init` makes from
//! the model, the same on every node): a promoted adapter trained on n records offers
//! `n · (active − base)`. A merge is `base + Σ clip(n·Δ) / Σ n` over every contribution the
//! node holds for its adapter key, summed in id order (so every node holding the same set
//! computes the same bits), and it goes through the same gate as a trained candidate.
//!
//! Nothing here allocates: the base adapter is rebuilt in the candidate slot when needed.

use cairn_core::Model;
use cairn_learn::gate::{evaluate, Decision, Gate, Metrics, Reject};
use cairn_learn::learner::{Sample, Slot};
use cairn_learn::lineage::{weights_digest, Checkpoint, CheckpointLog, CkptId, RecordDigest};
use cairn_learn::replay::{fill_batch, held_out, is_held_out};
use cairn_learn::{AdapterShape, FrozenFc, LearnError, Learner, TrainConfig};
use cairn_memory::ram::Ram;
use cairn_memory::store::{LogStore, Meta};
use cairn_sync::item::{Kind, CONTRIB_HEAD, HEAD, SIG};
use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

use crate::apply::Items;
use crate::NodeError;

/// Largest batch a node trains with (the batch buffer lives on the stack).
pub const MAX_BATCH: usize = 64;

/// How a node learns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearnSpec {
    pub classes: usize,
    /// LoRA rank on `lora_op` (0: no LoRA delta).
    pub rank: usize,
    /// Samples per step (≤ [`MAX_BATCH`]).
    pub batch: usize,
    pub train: TrainConfig,
    pub gate: Gate,
    /// Labels at or above this are new classes (for replay and the gate).
    pub new_from: u16,
    /// The frozen int8 FullyConnected under the head, which the LoRA adapter sits on
    /// (needed when `rank` > 0); its input must be what memory keeps. None: the head reads
    /// the features directly.
    pub lora_op: Option<usize>,
    /// The base classifier the head starts from (none: zeros).
    pub head_op: Option<usize>,
    /// A contribution whose Δ is longer than this (L2) is scaled down to it in a merge.
    pub max_delta_norm: f32,
}

/// What learning or a merge decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// The candidate passed the gate and is the active adapter, checkpoint `id`.
    Promoted {
        id: CkptId,
        before: Metrics,
        after: Metrics,
    },
    /// The gate refused it; the active adapter is unchanged (the lineage records why).
    Rejected {
        id: CkptId,
        reason: Reject,
        before: Metrics,
        after: Metrics,
    },
}

impl Outcome {
    pub fn promoted(&self) -> bool {
        matches!(self, Outcome::Promoted { .. })
    }
}

/// A training run of the candidate.
#[derive(Clone, Copy, Debug)]
pub struct TrainRun {
    pub steps: u32,
    pub last_loss: f32,
    /// The records the run could draw from (every record not held out).
    pub records: RecordDigest,
}

/// The contributions a merge summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeSet {
    /// Order-independent digest of the contributions' ids.
    pub ids: [u8; 32],
    pub count: u32,
    pub total_n: u64,
}

pub struct Adapter<'a> {
    learner: Learner<'a, 'a>,
    head: Option<FrozenFc<'a>>,
    spec: LearnSpec,
    base: [u8; 32],
    key: [u8; 16],
    /// The active checkpoint (zeros: the base adapter).
    active: CkptId,
    /// Records behind the active adapter (the n of its contribution).
    trained_on: u32,
}

/// The layers the adapter uses, and its shape.
fn layers<'a>(
    spec: &LearnSpec,
    model: Option<&Model<'a>>,
    fin: usize,
) -> Result<(AdapterShape, Option<FrozenFc<'a>>, Option<FrozenFc<'a>>), NodeError> {
    let fc = |op: Option<usize>| -> Result<Option<FrozenFc<'a>>, NodeError> {
        match (op, model) {
            (None, _) => Ok(None),
            (Some(o), Some(m)) => Ok(Some(FrozenFc::from_model(m, o)?)),
            (Some(_), None) => Err(NodeError::Missing(crate::Part::Model)),
        }
    };
    let frozen = fc(spec.lora_op)?;
    if frozen.is_none() && spec.rank > 0 {
        return Err(NodeError::Learn(LearnError::NotAnInt8Fc));
    }
    let head = fc(spec.head_op)?;
    if spec.batch == 0 || spec.batch > MAX_BATCH {
        return Err(NodeError::Learn(LearnError::BadConfig));
    }
    let shape = AdapterShape {
        fin,
        hidden: frozen.map_or(0, |f| f.n),
        rank: spec.rank,
        classes: spec.classes,
        batch: spec.batch,
    };
    Ok((shape, frozen, head))
}

/// Bytes of arena an adapter for `spec` needs.
pub fn arena_bytes(
    spec: &LearnSpec,
    model: Option<&Model<'_>>,
    fin: usize,
) -> Result<usize, NodeError> {
    let (shape, _, _) = layers(spec, model, fin)?;
    Ok(cairn_learn::learner::arena_bytes(shape, &spec.train))
}

/// The adapter key contributions carry: SHA-256 of the adapter's shape (same layer, rank,
/// classes), first 16 bytes.
pub fn adapter_key(shape: &AdapterShape) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"cairn-adapter/1");
    for v in Checkpoint::shape_of(shape) {
        h.update(v.to_le_bytes());
    }
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// The hyper-parameter bytes a merge checkpoint records in place of a training run's.
fn merge_hparams(spec: &LearnSpec, set: &MergeSet) -> [u8; 52] {
    let mut b = [0u8; 52];
    b[..13].copy_from_slice(b"cairn-merge/1");
    b[16..20].copy_from_slice(&spec.max_delta_norm.to_le_bytes());
    b[20..24].copy_from_slice(&set.count.to_le_bytes());
    b[24..32].copy_from_slice(&set.total_n.to_le_bytes());
    b
}

impl<'a> Adapter<'a> {
    /// An adapter over `fin`-wide features in `arena` (see [`arena_bytes`]) for `model`
    /// (whose hash is `base`; zeros without a model), resumed from the lineage's active
    /// checkpoint (checked against the base model and its weights' digest), or the base
    /// adapter when the lineage has none.
    pub fn open<L: NorFlash>(
        spec: LearnSpec,
        model: Option<&Model<'a>>,
        base: [u8; 32],
        fin: usize,
        arena: &'a mut [u8],
        lineage: &mut CheckpointLog<L>,
    ) -> Result<Self, NodeError> {
        let (shape, frozen, head) = layers(&spec, model, fin)?;
        let mut learner = Learner::new(shape, frozen, spec.train, arena)?;
        learner.init(head.as_ref(), spec.train.seed)?;
        let mut a = Adapter {
            learner,
            head,
            spec,
            base,
            key: adapter_key(&shape),
            active: [0; 32],
            trained_on: 0,
        };
        a.resume(lineage)?;
        Ok(a)
    }

    pub fn spec(&self) -> &LearnSpec {
        &self.spec
    }
    pub fn shape(&self) -> AdapterShape {
        self.learner.layout().shape
    }
    pub fn base(&self) -> &[u8; 32] {
        &self.base
    }
    pub fn key(&self) -> &[u8; 16] {
        &self.key
    }
    /// The active checkpoint's id (zeros: still the base adapter).
    pub fn active_id(&self) -> CkptId {
        self.active
    }
    pub fn learner(&mut self) -> &mut Learner<'a, 'a> {
        &mut self.learner
    }
    /// The active adapter's parameters.
    pub fn active_params(&self) -> &[f32] {
        self.learner.params(Slot::Active)
    }
    pub fn arena_bytes(&self) -> usize {
        self.learner.arena_bytes()
    }

    /// Start again as after a reset: the base adapter, then the lineage's active checkpoint
    /// (what a device does when it boots; whatever was in RAM is gone).
    pub fn restart<L: NorFlash>(
        &mut self,
        lineage: &mut CheckpointLog<L>,
    ) -> Result<(), NodeError> {
        let head = self.head;
        self.learner.init(head.as_ref(), self.spec.train.seed)?;
        self.active = [0; 32];
        self.trained_on = 0;
        self.resume(lineage)
    }

    /// Load the lineage's active checkpoint into the active slot.
    fn resume<L: NorFlash>(&mut self, lineage: &mut CheckpointLog<L>) -> Result<(), NodeError> {
        let Some(id) = lineage.active() else {
            return Ok(());
        };
        let c = lineage.load(&id, &self.base, self.learner.params_mut(Slot::Active))?;
        self.active = c.id;
        self.trained_on = c.n_records;
        Ok(())
    }

    /// Predicted class of int8 features with the active adapter.
    pub fn predict(&mut self, emb: &[i8], scale: f32) -> Result<u16, NodeError> {
        let s = Sample {
            emb,
            scale,
            label: 0,
        };
        Ok(self.learner.predict(Slot::Active, &s)?)
    }

    /// Train the candidate (from the active adapter) for `spec.train.steps` steps on
    /// batches from `memory` that mix `is_new` records with replayed others.
    pub fn train<F: NorFlash, R: Ram>(
        &mut self,
        memory: &LogStore<F, R>,
        is_new: &dyn Fn(&Meta) -> bool,
        on_step: &mut dyn FnMut(u32, f32),
    ) -> Result<TrainRun, NodeError> {
        let cfg = self.spec.train;
        let batch = self.spec.batch;
        let empty = Sample {
            emb: &[],
            scale: 1.0,
            label: 0,
        };
        let mut buf = [empty; MAX_BATCH];
        let mut rng = cfg.seed;
        let mut last_loss = 0.0;
        // The batches draw from the records outside the held-out set: none, no round.
        if memory.metas().iter().all(is_held_out) {
            return Err(NodeError::NothingToLearn);
        }
        self.learner.begin_candidate();
        for step in 0..cfg.steps {
            let n = fill_batch(
                memory,
                &mut rng,
                is_new,
                cfg.replay_per_batch,
                &mut buf[..batch],
            );
            if n == 0 {
                // Unreachable after the check above (fill_batch finds any record outside
                // the held-out set); kept as an error, not a panic.
                return Err(NodeError::NothingToLearn);
            }
            // fill_batch puts the replayed samples first.
            let replayed = cfg.replay_per_batch.min(n);
            last_loss = self.learner.step_replay(&buf[..n], replayed)?;
            on_step(step, last_loss);
        }
        let mut records = RecordDigest::default();
        for m in memory.metas().iter().filter(|m| !is_held_out(m)) {
            records.add(&m.id);
        }
        Ok(TrainRun {
            steps: cfg.steps,
            last_loss,
            records,
        })
    }

    /// The gate's view of the candidate against the active adapter on `memory`'s held-out
    /// records.
    pub fn judge<F: NorFlash, R: Ram>(
        &mut self,
        memory: &LogStore<F, R>,
    ) -> Result<(Metrics, Metrics, Decision), NodeError> {
        let new_from = self.spec.new_from;
        let old = |l: u16| l < new_from;
        let before = evaluate(&mut self.learner, Slot::Active, held_out(memory), old)?;
        let after = evaluate(&mut self.learner, Slot::Candidate, held_out(memory), old)?;
        Ok((before, after, self.spec.gate.decide(&before, &after)))
    }

    /// Write the decision into the lineage, then act on it: a promoted candidate is
    /// committed (checkpoint, then ACTIVE) before it becomes the active adapter, so a
    /// failed write leaves the active adapter as it was.
    pub fn settle<L: NorFlash>(
        &mut self,
        lineage: &mut CheckpointLog<L>,
        verdict: (Metrics, Metrics, Decision),
        records: &RecordDigest,
        hparams: [u8; 52],
    ) -> Result<Outcome, NodeError> {
        let (before, after, decision) = verdict;
        let cand = self.learner.params(Slot::Candidate);
        let ck = Checkpoint {
            id: [0; 32],
            parent: self.active,
            base: self.base,
            records: records.finish(),
            n_records: records.count(),
            hparams,
            before,
            after,
            shape: Checkpoint::shape_of(&self.learner.layout().shape),
            weights: weights_digest(cand),
            n_params: cand.len() as u32,
        }
        .seal();
        match decision {
            Decision::Promote => {
                lineage.commit(&ck, cand)?;
                self.learner.promote();
                self.active = ck.id;
                self.trained_on = ck.n_records;
                Ok(Outcome::Promoted {
                    id: ck.id,
                    before,
                    after,
                })
            }
            Decision::Reject(reason) => {
                lineage.record_reject(&ck.id, &reason, &before, &after)?;
                Ok(Outcome::Rejected {
                    id: ck.id,
                    reason,
                    before,
                    after,
                })
            }
        }
    }

    /// Train, judge and settle: one learning round on the node's own memory, where the
    /// records `is_new` picks are the new ones (the rest are replayed).
    pub fn learn<F: NorFlash, R: Ram, L: NorFlash>(
        &mut self,
        memory: &LogStore<F, R>,
        lineage: &mut CheckpointLog<L>,
        is_new: &dyn Fn(&Meta) -> bool,
        on_step: &mut dyn FnMut(u32, f32),
    ) -> Result<Outcome, NodeError> {
        let run = self.train(memory, is_new, on_step)?;
        let verdict = self.judge(memory)?;
        self.settle(lineage, verdict, &run.records, self.spec.train.to_bytes())
    }

    /// Put the base adapter in the candidate slot.
    fn base_into_candidate(&mut self) -> Result<(), NodeError> {
        let head = self.head;
        self.learner
            .init_slot(Slot::Candidate, head.as_ref(), self.spec.train.seed)?;
        Ok(())
    }

    /// Bytes of a contribution body (see [`Adapter::contribution_body`]).
    pub fn contribution_len(&self) -> usize {
        CONTRIB_HEAD + 4 * self.learner.layout().shape.params()
    }

    /// The active adapter as a contribution body, `n · (active − base)` with n the records
    /// it was trained on, into `out`; its length. `None` while the active adapter is the
    /// base one (nothing to offer). Uses the candidate slot as scratch.
    pub fn contribution_body(&mut self, out: &mut [u8]) -> Result<Option<usize>, NodeError> {
        if self.active == [0; 32] {
            return Ok(None);
        }
        let len = self.contribution_len();
        let have = out.len();
        let out = out.get_mut(..len).ok_or(NodeError::Shape {
            expected: len,
            got: have,
        })?;
        self.base_into_candidate()?;
        let n = self.trained_on.max(1);
        out[..32].copy_from_slice(&self.base);
        out[32..48].copy_from_slice(&self.key);
        out[48..52].copy_from_slice(&n.to_le_bytes());
        let np = self.learner.layout().shape.params() as u32;
        out[52..56].copy_from_slice(&np.to_le_bytes());
        let base = self.learner.params(Slot::Candidate);
        let active = self.learner.params(Slot::Active);
        for ((o, &a), &b) in out[CONTRIB_HEAD..]
            .chunks_exact_mut(4)
            .zip(active)
            .zip(base)
        {
            o.copy_from_slice(&(n as f32 * (a - b)).to_le_bytes());
        }
        Ok(Some(len))
    }

    /// The set of contributions in `items` a merge would sum (its digest, count, Σ n);
    /// `None` when there is none. Reads no weights into the learner.
    pub fn contribution_set<S: Items>(&self, items: &S, scratch: &mut [u8]) -> Option<MergeSet> {
        let mut ids = RecordDigest::default();
        let mut total_n = 0u64;
        self.for_each_contribution(items, scratch, |id, n, _| {
            ids.add(id);
            total_n += n as u64;
        });
        (ids.count() > 0).then(|| MergeSet {
            ids: ids.finish(),
            count: ids.count(),
            total_n,
        })
    }

    /// The merged adapter of every contribution in `items` for this adapter's key and base
    /// model, into the candidate slot; `None` when there is none. `scratch` must hold a
    /// contribution item (longer ones are skipped).
    pub fn merge<S: Items>(
        &mut self,
        items: &S,
        scratch: &mut [u8],
    ) -> Result<Option<MergeSet>, NodeError> {
        let Some(set) = self.contribution_set(items, scratch) else {
            return Ok(None);
        };
        self.base_into_candidate()?;
        let max_norm = self.spec.max_delta_norm;
        let total = set.total_n as f32;
        // Second walk: add each contribution, clipped, as it is read (sums in id order).
        let mut adder = Accumulate {
            max_norm,
            total,
            failed: false,
        };
        let key = self.key;
        let base = self.base;
        let np = self.learner.layout().shape.params();
        walk_contributions(items, scratch, &key, &base, np, |_, n, values| {
            adder.add(self.learner.params_mut(Slot::Candidate), n, values)
        });
        if adder.failed {
            return Err(NodeError::Sync(cairn_sync::Reject::Malformed));
        }
        Ok(Some(set))
    }

    fn for_each_contribution<S: Items>(
        &self,
        items: &S,
        scratch: &mut [u8],
        mut f: impl FnMut(&[u8; 16], u32, &[u8]),
    ) {
        let np = self.learner.layout().shape.params();
        walk_contributions(items, scratch, &self.key, &self.base, np, |id, n, v| {
            f(id, n, v)
        });
    }

    /// Judge the candidate a merge left and settle it like a trained one.
    pub fn settle_merge<F: NorFlash, R: Ram, L: NorFlash>(
        &mut self,
        memory: &LogStore<F, R>,
        lineage: &mut CheckpointLog<L>,
        set: &MergeSet,
    ) -> Result<Outcome, NodeError> {
        let verdict = self.judge(memory)?;
        let mut records = RecordDigest::default();
        records.add(&set.ids);
        self.settle(lineage, verdict, &records, merge_hparams(&self.spec, set))
    }

    /// The candidate slot (after [`Adapter::merge`]: the merged adapter).
    pub fn candidate_params(&self) -> &[f32] {
        self.learner.params(Slot::Candidate)
    }

    /// Digest of the candidate slot (after [`Adapter::merge`]: the merged adapter).
    pub fn candidate_digest(&self) -> [u8; 32] {
        weights_digest(self.learner.params(Slot::Candidate))
    }
}

/// Adds one contribution, clipped, into the candidate.
struct Accumulate {
    max_norm: f32,
    total: f32,
    failed: bool,
}

impl Accumulate {
    fn add(&mut self, cand: &mut [f32], n: u32, values: &[u8]) {
        if values.len() != 4 * cand.len() {
            self.failed = true;
            return;
        }
        let nf = n as f32;
        let value = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let sq: f32 = values
            .chunks_exact(4)
            .map(|c| {
                let d = value(c) / nf;
                d * d
            })
            .sum();
        let norm = libm::sqrtf(sq);
        let clip = if norm > self.max_norm && norm > 0.0 {
            self.max_norm / norm
        } else {
            1.0
        };
        for (p, c) in cand.iter_mut().zip(values.chunks_exact(4)) {
            let v = value(c);
            let v = if v.is_finite() { v } else { 0.0 };
            *p += v * clip / self.total;
        }
    }
}

/// Visit every contribution in `items` (in id order) for adapter `key` on base model
/// `base` with `np` values and n > 0: (id, n, the values' bytes). Items in a set were
/// verified when they entered it (sessions, bundles, the durable log's reload), so this
/// reads their fields without checking the signature again.
fn walk_contributions<S: Items>(
    items: &S,
    scratch: &mut [u8],
    key: &[u8; 16],
    base: &[u8; 32],
    np: usize,
    mut f: impl FnMut(&[u8; 16], u32, &[u8]),
) {
    items.for_each_contribution(key, &mut |id| {
        let Some(len) = items.item_len(id) else {
            return;
        };
        let Some(buf) = scratch.get_mut(..len) else {
            return;
        };
        if items.read(id, 0, buf) != len || len < HEAD + CONTRIB_HEAD + SIG {
            return;
        }
        if buf[2] != Kind::Contribution as u8 {
            return;
        }
        let body = &buf[HEAD..len - SIG];
        let word = |o: usize| u32::from_le_bytes([body[o], body[o + 1], body[o + 2], body[o + 3]]);
        let (n, dim) = (word(48), word(52) as usize);
        if &body[32..48] != key || &body[..32] != base || dim != np || n == 0 {
            return;
        }
        if body.len() != CONTRIB_HEAD + 4 * dim {
            return;
        }
        f(id, n, &body[CONTRIB_HEAD..]);
    });
}

//! The learner: a classifier head trained on a memory store's records through the node's
//! adapter (`cairn_node::Adapter`): train a candidate, judge it with the forgetting gate on
//! the store's held-out records, promote it or reject it — both written to the learner's
//! lineage (in RAM) — exactly as `cairn learn train` does.

use std::sync::{Arc, Mutex};

use cairn_learn::gate::Gate;
use cairn_learn::lineage::CheckpointLog;
use cairn_memory::flash::RamFlash;
use cairn_node::adapter::{self, Adapter, LearnSpec, Outcome};

use crate::memory::memory;
use crate::*;

/// A classifier head trained on memories; owns its arena and its lineage.
pub(crate) struct LearnObj {
    spec: LearnSpec,
    dim: usize,
    arena: Vec<u32>,
    lineage: Option<CheckpointLog<RamFlash<4096>>>,
    /// Training steps run so far (each run's batches start from a new seed).
    steps: u64,
}

pub(crate) fn learner(h: u64) -> Result<Arc<Mutex<LearnObj>>, Fail> {
    get(|r| &r.learners, h, "learner")
}

fn learn_fail(e: cairn_node::NodeError) -> Fail {
    (CairnStatus::LearnFailed, format!("{e:?}"))
}

/// Lineage of a C learner: 32 sectors of 4 KiB in RAM (about 60 checkpoints of a 10-way
/// head over 32 features; a full log refuses further promotions with an error).
const LINEAGE_SECTORS: usize = 32;

/// A learner: a `classes`-way classifier head over `dim`-wide features (Adam, batch
/// `batch`), its arena planned and allocated here. Every class counts as new for the gate
/// until `cairn_learn_set_gate` says which are old.
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_learn_create(
    dim: usize,
    classes: usize,
    batch: usize,
    out: *mut u64,
) -> CairnStatus {
    guard(|| {
        need(out, "out")?;
        if dim == 0 || dim > 4096 || !(2..=1024).contains(&classes) || batch == 0 || batch > 64 {
            return Err((
                CairnStatus::WrongLength,
                format!("dim {dim}, classes {classes}, batch {batch} (at most 64)"),
            ));
        }
        let spec = LearnSpec {
            classes,
            rank: 0,
            batch,
            train: cairn_learn::TrainConfig {
                optimizer: cairn_learn::Optimizer::adam(0.01),
                clip_norm: 5.0,
                weight_decay: 0.0,
                steps: 0,
                replay_per_batch: 0,
                lora_scale: 1.0,
                distill: 0.0,
                seed: 1,
            },
            gate: Gate {
                max_old_drop: 0.05,
                min_new_gain: 0.0,
            },
            new_from: 0,
            lora_op: None,
            head_op: None,
            max_delta_norm: 10.0,
        };
        let need = adapter::arena_bytes(&spec, None, dim).map_err(learn_fail)?;
        let (lineage, _) = CheckpointLog::open(RamFlash::new(LINEAGE_SECTORS))
            .map_err(|e| (CairnStatus::LearnFailed, format!("lineage: {e:?}")))?;
        let obj = LearnObj {
            spec,
            dim,
            arena: vec![0; need.div_ceil(4)],
            lineage: Some(lineage),
            steps: 0,
        };
        let h = add(|r| &mut r.learners, obj);
        // SAFETY: checked non-null above.
        unsafe { *out = h };
        Ok(())
    })
}

/// The gate: labels at or above `new_from` are new classes; a candidate is promoted only
/// if held-out accuracy on old classes drops by at most `max_old_drop` (a fraction, e.g.
/// 0.05) and held-out accuracy on new classes improves. Default: `new_from` 0 (every class
/// new), `max_old_drop` 0.05.
#[no_mangle]
pub extern "C" fn cairn_learn_set_gate(h: u64, new_from: u16, max_old_drop: f32) -> CairnStatus {
    guard(|| {
        if !(0.0..=1.0).contains(&max_old_drop) {
            return Err((
                CairnStatus::WrongLength,
                format!("max_old_drop {max_old_drop} is not a fraction"),
            ));
        }
        let l = learner(h)?;
        let mut l = lock(&l);
        l.spec.new_from = new_from;
        l.spec.gate.max_old_drop = max_old_drop;
        Ok(())
    })
}

/// The learner's adapter, resumed from its lineage's active checkpoint, for one call.
fn with_adapter<T>(
    o: &mut LearnObj,
    steps: u32,
    f: impl FnOnce(&mut Adapter<'_>, &mut CheckpointLog<RamFlash<4096>>) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let mut spec = o.spec;
    spec.train.steps = steps;
    spec.train.seed = 1 + o.steps;
    let mut lineage = o
        .lineage
        .take()
        .ok_or((CairnStatus::Panic, "lineage lost".into()))?;
    let arena = bytemuck_u8(&mut o.arena);
    let out = match Adapter::open(spec, None, [0; 32], o.dim, arena, &mut lineage) {
        Ok(mut a) => f(&mut a, &mut lineage),
        Err(e) => Err(learn_fail(e)),
    };
    o.lineage = Some(lineage);
    out
}

pub(crate) fn bytemuck_u8(v: &mut [u32]) -> &mut [u8] {
    let len = v.len() * 4;
    // SAFETY: the same memory viewed as bytes; u8 has no alignment or validity rules.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, len) }
}

/// Train a candidate for `steps` steps on the records of memory store `mem` (their labels
/// are the targets; one record in five, by content id, is held out for the gate), then
/// judge it: `CAIRN_STATUS_OK` when the gate promoted it, `CAIRN_STATUS_REJECTED` when it
/// refused it (the learner keeps its active head; `cairn_last_error` says why). Either way
/// the decision is in the learner's lineage and the last step's mean loss goes to
/// `loss_out` (may be null).
///
/// # Safety
/// `loss_out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_learn_train(
    h: u64,
    mem: u64,
    steps: u32,
    loss_out: *mut f32,
) -> CairnStatus {
    guard(|| {
        let l = learner(h)?;
        let m = memory(mem)?;
        let mut l = lock(&l);
        let m = lock(&m);
        let st = &m.store;
        let d = st.config().dim;
        if d != l.dim || st.is_empty() || steps == 0 {
            return Err((
                CairnStatus::WrongLength,
                format!(
                    "store of {d}-wide records ({} of them), learner of {}, {steps} steps",
                    st.len(),
                    l.dim
                ),
            ));
        }
        if st
            .metas()
            .iter()
            .any(|x| x.label as usize >= l.spec.classes)
        {
            return Err((
                CairnStatus::LearnFailed,
                "a record's label is beyond the learner's classes".into(),
            ));
        }
        let new_from = l.spec.new_from;
        let (loss, outcome) = with_adapter(&mut l, steps, |a, lineage| {
            let is_new = |x: &cairn_memory::store::Meta| x.label >= new_from;
            let run = a.train(st, &is_new, &mut |_, _| {}).map_err(learn_fail)?;
            let verdict = a.judge(st).map_err(learn_fail)?;
            let hp = a.spec().train.to_bytes();
            let outcome = a
                .settle(lineage, verdict, &run.records, hp)
                .map_err(learn_fail)?;
            Ok((run.last_loss, outcome))
        })?;
        l.steps += steps as u64;
        if !loss_out.is_null() {
            // SAFETY: non-null and writable.
            unsafe { *loss_out = loss };
        }
        match outcome {
            Outcome::Promoted { .. } => Ok(()),
            Outcome::Rejected {
                reason,
                before,
                after,
                ..
            } => Err((
                CairnStatus::Rejected,
                format!(
                    "the gate rejected the candidate ({reason:?}; held-out old {:.3} -> {:.3}, new {:.3} -> {:.3}): the active head is unchanged",
                    before.old_acc, after.old_acc, before.new_acc, after.new_acc
                ),
            )),
        }
    })
}

/// The learner's class for `features` (`dim` floats, all finite) with its active head.
///
/// # Safety
/// `features` holds `dim` floats; `class_out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cairn_learn_predict(
    h: u64,
    features: *const f32,
    dim: usize,
    class_out: *mut u16,
) -> CairnStatus {
    guard(|| {
        need(features, "features")?;
        need(class_out, "class_out")?;
        let l = learner(h)?;
        let mut l = lock(&l);
        if dim != l.dim {
            return Err((
                CairnStatus::WrongLength,
                format!("{dim} features, the learner takes {}", l.dim),
            ));
        }
        // SAFETY: `dim` readable floats.
        let v = unsafe { std::slice::from_raw_parts(features, dim) };
        let (e, scale) = cairn_node::features::quantize_vec(v)
            .map_err(|e| (CairnStatus::WrongLength, format!("features: {e:?}")))?;
        let c = with_adapter(&mut l, 0, |a, _| a.predict(&e, scale).map_err(learn_fail))?;
        // SAFETY: checked non-null above.
        unsafe { *class_out = c };
        Ok(())
    })
}

/// Free a learner.
#[no_mangle]
pub extern "C" fn cairn_learn_free(h: u64) -> CairnStatus {
    free(|r| &mut r.learners, h, "learner")
}

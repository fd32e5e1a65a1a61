//! The learner: a classifier head trained on a memory store's records.

use std::sync::{Arc, Mutex};

use crate::memory::{memory, quantize};
use crate::*;

/// A classifier head trained on memories; owns its arena.
pub(crate) struct LearnObj {
    shape: cairn_learn::AdapterShape,
    cfg: cairn_learn::TrainConfig,
    arena: Vec<u32>,
    params: Vec<f32>,
    steps: u64,
}

pub(crate) fn learner(h: u64) -> Result<Arc<Mutex<LearnObj>>, Fail> {
    get(|r| &r.learners, h, "learner")
}

/// A learner: a `classes`-way classifier head over `dim`-wide features (Adam, batch
/// `batch`), its arena planned and allocated here.
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
        if dim == 0 || dim > 4096 || !(2..=1024).contains(&classes) || batch == 0 || batch > 1024 {
            return Err((
                CairnStatus::WrongLength,
                format!("dim {dim}, classes {classes}, batch {batch}"),
            ));
        }
        let shape = cairn_learn::AdapterShape {
            fin: dim,
            hidden: 0,
            rank: 0,
            classes,
            batch,
        };
        let cfg = cairn_learn::TrainConfig {
            optimizer: cairn_learn::Optimizer::adam(0.01),
            clip_norm: 5.0,
            weight_decay: 0.0,
            steps: 0,
            replay_per_batch: 0,
            lora_scale: 1.0,
            distill: 0.0,
            seed: 1,
        };
        let words = cairn_learn::learner::arena_bytes(shape, &cfg).div_ceil(4);
        let obj = LearnObj {
            shape,
            cfg,
            arena: vec![0; words],
            params: vec![0.0; shape.params()],
            steps: 0,
        };
        let h = add(|r| &mut r.learners, obj);
        // SAFETY: checked non-null above.
        unsafe { *out = h };
        Ok(())
    })
}

pub(crate) fn with_learner<T>(
    o: &mut LearnObj,
    f: impl FnOnce(&mut cairn_learn::Learner<'_, '_>) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let arena: &mut [u8] = bytemuck_u8(&mut o.arena);
    let mut l = cairn_learn::Learner::new(o.shape, None, o.cfg, arena)
        .map_err(|e| (CairnStatus::LearnFailed, format!("{e:?}")))?;
    l.set_params(cairn_learn::learner::Slot::Active, &o.params)
        .map_err(|e| (CairnStatus::LearnFailed, format!("{e:?}")))?;
    f(&mut l)
}

pub(crate) fn bytemuck_u8(v: &mut [u32]) -> &mut [u8] {
    let len = v.len() * 4;
    // SAFETY: the same memory viewed as bytes; u8 has no alignment or validity rules.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, len) }
}

/// Train `steps` steps on the records of memory store `mem` (their labels are the
/// targets); the mean loss of the last step goes to `loss_out` (may be null). The learner
/// keeps its weights between calls.
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
        if d != l.shape.fin || st.is_empty() {
            return Err((
                CairnStatus::WrongLength,
                format!(
                    "store of {d}-wide records ({} of them), learner of {}",
                    st.len(),
                    l.shape.fin
                ),
            ));
        }
        if st
            .metas()
            .iter()
            .any(|x| x.label as usize >= l.shape.classes)
        {
            return Err((
                CairnStatus::LearnFailed,
                "a record's label is beyond the learner's classes".into(),
            ));
        }
        let batch = l.shape.batch;
        let samples: Vec<cairn_learn::Sample<'_>> = (0..st.len())
            .map(|i| cairn_learn::replay::sample_of(st, i))
            .collect();
        let start = l.steps;
        let lo = &mut *l;
        let (params, loss) = with_learner(lo, |learner| {
            learner.begin_candidate();
            let mut loss = 0.0;
            for s in 0..steps as u64 {
                let at = ((start + s) as usize * batch) % samples.len();
                let b: Vec<cairn_learn::Sample<'_>> = (0..batch.min(samples.len()))
                    .map(|k| samples[(at + k) % samples.len()])
                    .collect();
                loss = learner
                    .step(&b)
                    .map_err(|e| (CairnStatus::LearnFailed, format!("{e:?}")))?;
            }
            learner.promote();
            Ok((
                learner.params(cairn_learn::learner::Slot::Active).to_vec(),
                loss,
            ))
        })?;
        lo.params = params;
        lo.steps += steps as u64;
        if !loss_out.is_null() {
            // SAFETY: non-null and writable.
            unsafe { *loss_out = loss };
        }
        Ok(())
    })
}

/// The learner's class for `features` (`dim` floats).
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
        if dim != l.shape.fin {
            return Err((
                CairnStatus::WrongLength,
                format!("{dim} features, the learner takes {}", l.shape.fin),
            ));
        }
        // SAFETY: `dim` readable floats.
        let v = unsafe { std::slice::from_raw_parts(features, dim) };
        let (e, scale) = quantize(v);
        let c = with_learner(&mut l, |learner| {
            learner
                .predict(
                    cairn_learn::learner::Slot::Active,
                    &cairn_learn::Sample {
                        emb: &e,
                        scale,
                        label: 0,
                    },
                )
                .map_err(|e| (CairnStatus::LearnFailed, format!("{e:?}")))
        })?;
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

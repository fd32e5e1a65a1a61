//! The forgetting gate: a candidate adapter is promoted only if, on held-out records from
//! memory, old-class accuracy drops by at most a threshold and new-class accuracy improves.

use crate::learner::{Learner, Sample, Slot};
use crate::LearnError;

/// Accuracy on held-out records, split into old and new classes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub old_acc: f32,
    pub new_acc: f32,
    pub n_old: u32,
    pub n_new: u32,
}

impl Metrics {
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.old_acc.to_le_bytes());
        b[4..8].copy_from_slice(&self.new_acc.to_le_bytes());
        b[8..12].copy_from_slice(&self.n_old.to_le_bytes());
        b[12..16].copy_from_slice(&self.n_new.to_le_bytes());
        b
    }
    pub fn from_bytes(b: &[u8; 16]) -> Metrics {
        let w = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Metrics {
            old_acc: f32::from_le_bytes(w(0)),
            new_acc: f32::from_le_bytes(w(4)),
            n_old: u32::from_le_bytes(w(8)),
            n_new: u32::from_le_bytes(w(12)),
        }
    }
}

/// Why a candidate was discarded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reject {
    /// Old-class accuracy fell by more than allowed.
    Forgetting { before: f32, after: f32 },
    /// New-class accuracy did not improve enough.
    NoGain { before: f32, after: f32 },
    /// No held-out record of old or of new classes to judge by.
    NoHeldOut,
}

impl Reject {
    pub fn code(&self) -> u8 {
        match self {
            Reject::Forgetting { .. } => 1,
            Reject::NoGain { .. } => 2,
            Reject::NoHeldOut => 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    Promote,
    Reject(Reject),
}

/// Thresholds, as fractions (0.02 = two points).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gate {
    pub max_old_drop: f32,
    pub min_new_gain: f32,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            max_old_drop: 0.02,
            min_new_gain: 0.0,
        }
    }
}

impl Gate {
    /// Compare the active adapter's metrics with the candidate's.
    pub fn decide(&self, active: &Metrics, cand: &Metrics) -> Decision {
        if cand.n_old == 0 && cand.n_new == 0 {
            return Decision::Reject(Reject::NoHeldOut);
        }
        if cand.n_old > 0 && active.old_acc - cand.old_acc > self.max_old_drop {
            return Decision::Reject(Reject::Forgetting {
                before: active.old_acc,
                after: cand.old_acc,
            });
        }
        if cand.n_new > 0 && cand.new_acc - active.new_acc <= self.min_new_gain {
            return Decision::Reject(Reject::NoGain {
                before: active.new_acc,
                after: cand.new_acc,
            });
        }
        Decision::Promote
    }
}

/// Accuracy of a slot on `held_out`; `is_old(label)` says which classes are old.
pub fn evaluate<'s>(
    learner: &mut Learner<'_, '_>,
    slot: Slot,
    held_out: impl Iterator<Item = Sample<'s>>,
    is_old: impl Fn(u16) -> bool,
) -> Result<Metrics, LearnError> {
    let (mut ok_old, mut ok_new, mut n_old, mut n_new) = (0u32, 0u32, 0u32, 0u32);
    for s in held_out {
        let right = learner.predict(slot, &s)? == s.label;
        if is_old(s.label) {
            n_old += 1;
            ok_old += right as u32;
        } else {
            n_new += 1;
            ok_new += right as u32;
        }
    }
    let frac = |a: u32, n: u32| if n == 0 { 0.0 } else { a as f32 / n as f32 };
    Ok(Metrics {
        old_acc: frac(ok_old, n_old),
        new_acc: frac(ok_new, n_new),
        n_old,
        n_new,
    })
}

//! The no-gradient baseline: nearest class mean (cosine) over the features in memory.

use crate::learner::Sample;
use crate::LearnError;

/// Class means of up to `C` classes of `D`-dimensional features, no allocation.
pub struct Ncm<const C: usize, const D: usize> {
    sum: [[f32; D]; C],
    count: [u32; C],
}

impl<const C: usize, const D: usize> Default for Ncm<C, D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const C: usize, const D: usize> Ncm<C, D> {
    pub const fn new() -> Self {
        Ncm {
            sum: [[0.0; D]; C],
            count: [0; C],
        }
    }

    /// Add one example to its class mean.
    pub fn add(&mut self, s: &Sample<'_>) -> Result<(), LearnError> {
        let c = s.label as usize;
        if c >= C {
            return Err(LearnError::BadLabel(s.label));
        }
        if s.emb.len() != D {
            return Err(LearnError::WrongShape {
                expected: D,
                got: s.emb.len(),
            });
        }
        let n = norm(s);
        for (acc, &e) in self.sum[c].iter_mut().zip(s.emb) {
            *acc += e as f32 / n;
        }
        self.count[c] += 1;
        Ok(())
    }

    /// The class whose mean is nearest in cosine; `None` before any example.
    pub fn predict(&self, s: &Sample<'_>) -> Option<u16> {
        let mut best: Option<(f32, u16)> = None;
        for c in 0..C {
            if self.count[c] == 0 || s.emb.len() != D {
                continue;
            }
            let m = &self.sum[c];
            let mn = libm::sqrtf(m.iter().map(|v| v * v).sum()).max(1e-12);
            let dot: f32 = m.iter().zip(s.emb).map(|(a, &b)| a * b as f32).sum();
            let cos = dot / (mn * norm(s));
            if best.is_none_or(|(b, _)| cos > b) {
                best = Some((cos, c as u16));
            }
        }
        best.map(|b| b.1)
    }
}

fn norm(s: &Sample<'_>) -> f32 {
    libm::sqrtf(s.emb.iter().map(|&v| (v as f32) * (v as f32)).sum()).max(1e-12)
}

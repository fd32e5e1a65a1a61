//! Exact search over the stored int8 embeddings: cosine similarity, metadata filters
//! (label, origin, time window), and a score that blends similarity with recency and
//! importance.

use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;

use crate::record::Id;
use crate::store::Store;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Filter {
    pub label: Option<u16>,
    pub origin: Option<u64>,
    /// Inclusive [from, to] in the records' milliseconds.
    pub time_ms: Option<(u64, u64)>,
}

/// score = cosine · (1 + importance_weight · importance/255) · 0.5^(age / half_life)
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scoring {
    pub now_ms: u64,
    pub half_life_ms: Option<u64>,
    pub importance_weight: f32,
}

impl Default for Scoring {
    fn default() -> Self {
        Scoring {
            now_ms: 0,
            half_life_ms: None,
            importance_weight: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub id: Id,
    pub cosine: f32,
    pub score: f32,
}

use crate::simd::dot;

impl<F: NorFlash> Store<F> {
    /// The `k` best records for `query` (same dimension as the store), best first.
    pub fn search(&self, query: &[i8], k: usize, filter: &Filter, scoring: &Scoring) -> Vec<Hit> {
        self.score_slots(0..self.metas.len(), query, k, filter, scoring)
    }

    /// Score the given record slots exactly and keep the best `k`.
    pub(crate) fn score_slots(
        &self,
        slots: impl Iterator<Item = usize>,
        query: &[i8],
        k: usize,
        filter: &Filter,
        scoring: &Scoring,
    ) -> Vec<Hit> {
        let d = self.config().dim;
        if query.len() != d || k == 0 {
            return Vec::new();
        }
        let qn = libm::sqrtf(dot(query, query) as f32).max(1e-12);
        let mut best: Vec<Hit> = Vec::with_capacity(k + 1);
        for i in slots {
            let m = &self.metas[i];
            if filter.label.is_some_and(|l| l != m.label)
                || filter.origin.is_some_and(|o| o != m.origin)
                || filter
                    .time_ms
                    .is_some_and(|(a, b)| m.timestamp_ms < a || m.timestamp_ms > b)
            {
                continue;
            }
            let cosine =
                dot(query, &self.emb[i * d..(i + 1) * d]) as f32 / (qn * self.norms[i].max(1e-12));
            let mut score =
                cosine * (1.0 + scoring.importance_weight * m.importance as f32 / 255.0);
            if let Some(h) = scoring.half_life_ms {
                let age = scoring.now_ms.saturating_sub(m.timestamp_ms) as f32;
                score *= libm::powf(0.5, age / h.max(1) as f32);
            }
            if best.len() == k && score <= best[k - 1].score {
                continue;
            }
            let at = best.partition_point(|h| h.score >= score);
            best.insert(
                at,
                Hit {
                    id: m.id,
                    cosine,
                    score,
                },
            );
            best.truncate(k);
        }
        best
    }
}

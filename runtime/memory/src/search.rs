//! Exact search over the stored int8 embeddings: cosine similarity, metadata filters
//! (label, origin, time window), and a score that blends similarity with recency and
//! importance.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;

use crate::ram::Ram;
use crate::record::Id;
use crate::store::LogStore;

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

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Hit {
    pub id: Id,
    pub cosine: f32,
    pub score: f32,
}

use crate::simd::dot;

impl<F: NorFlash, R: Ram> LogStore<F, R> {
    /// The `k` best records for `query` (same dimension as the store), best first.
    #[cfg(feature = "alloc")]
    pub fn search(&self, query: &[i8], k: usize, filter: &Filter, scoring: &Scoring) -> Vec<Hit> {
        self.score_slots(0..self.len(), query, k, filter, scoring)
    }

    /// Without allocation: the `out.len()` best records, best first, into `out`; returns how
    /// many were found.
    pub fn search_into(
        &self,
        query: &[i8],
        filter: &Filter,
        scoring: &Scoring,
        out: &mut [Hit],
    ) -> usize {
        self.top_k(0..self.len(), query, filter, scoring, out)
    }

    /// Score the given record slots exactly and keep the best `k`.
    #[cfg(feature = "alloc")]
    pub(crate) fn score_slots(
        &self,
        slots: impl Iterator<Item = usize>,
        query: &[i8],
        k: usize,
        filter: &Filter,
        scoring: &Scoring,
    ) -> Vec<Hit> {
        let mut best = alloc::vec![Hit::default(); k];
        let n = self.top_k(slots, query, filter, scoring, &mut best);
        best.truncate(n);
        best
    }

    fn top_k(
        &self,
        slots: impl Iterator<Item = usize>,
        query: &[i8],
        filter: &Filter,
        scoring: &Scoring,
        best: &mut [Hit],
    ) -> usize {
        let d = self.config().dim;
        let k = best.len();
        if query.len() != d || k == 0 {
            return 0;
        }
        let (metas, emb, norms) = (self.ram.metas(), self.ram.emb(), self.ram.norms());
        let qn = libm::sqrtf(dot(query, query) as f32).max(1e-12);
        let mut n = 0;
        for i in slots {
            let m = &metas[i];
            if filter.label.is_some_and(|l| l != m.label)
                || filter.origin.is_some_and(|o| o != m.origin)
                || filter
                    .time_ms
                    .is_some_and(|(a, b)| m.timestamp_ms < a || m.timestamp_ms > b)
            {
                continue;
            }
            let cosine = dot(query, &emb[i * d..(i + 1) * d]) as f32 / (qn * norms[i].max(1e-12));
            let mut score =
                cosine * (1.0 + scoring.importance_weight * m.importance as f32 / 255.0);
            if let Some(h) = scoring.half_life_ms {
                let age = scoring.now_ms.saturating_sub(m.timestamp_ms) as f32;
                score *= libm::powf(0.5, age / h.max(1) as f32);
            }
            if n == k && score <= best[k - 1].score {
                continue;
            }
            let at = best[..n].partition_point(|h| h.score >= score);
            n = (n + 1).min(k);
            best.copy_within(at..n - 1, at + 1);
            best[at] = Hit {
                id: m.id,
                cosine,
                score,
            };
        }
        n
    }
}

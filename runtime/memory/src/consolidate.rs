//! Consolidation: near-duplicate records (same label, cosine ≥ a threshold) merge into one
//! prototype — the mean embedding (weighted by the observations each stands for), the highest importance, the newest time — that says how
//! many observations it stands for (`meta[3]`, summed over merged prototypes) and lists the
//! ids it replaced in its payload (as many as the payload bound allows). The prototype is
//! written before the originals are deleted, so a power cut can leave duplicates but never
//! lose an observation.

use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;

use crate::ram::Ram;
use crate::record::{Id, Record};
use crate::simd::dot;
use crate::store::{Store, StoreError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Consolidation {
    /// Prototypes written.
    pub prototypes: usize,
    /// Records they replaced.
    pub merged: usize,
}

impl<F: NorFlash> Store<F> {
    /// Merge groups of near-duplicates (O(n²) comparisons: meant for device-sized stores).
    pub fn consolidate(&mut self, min_cosine: f32) -> Result<Consolidation, StoreError> {
        let d = self.config().dim;
        let mut report = Consolidation::default();
        let mut done: Vec<Id> = Vec::new();
        loop {
            // The first record (in slot order) with a near-duplicate not yet handled.
            let n = self.len();
            let mut group: Vec<usize> = Vec::new();
            'outer: for i in 0..n {
                if done.contains(&self.metas()[i].id) {
                    continue;
                }
                let ei = &self.embeddings()[i * d..(i + 1) * d];
                for j in 0..n {
                    if j == i || self.metas()[j].label != self.metas()[i].label {
                        continue;
                    }
                    let ej = &self.embeddings()[j * d..(j + 1) * d];
                    let c =
                        dot(ei, ej) as f32 / (self.ram.norms()[i] * self.ram.norms()[j]).max(1e-12);
                    if c >= min_cosine {
                        group.push(j);
                    }
                }
                if !group.is_empty() {
                    group.insert(0, i);
                    break 'outer;
                }
                done.push(self.metas()[i].id);
            }
            if group.is_empty() {
                return Ok(report);
            }
            // The prototype: the mean of the real-valued embeddings, each weighted by the
            // observations it stands for (a prototype merged again counts as all of its
            // own), requantized.
            let mut mean = vec![0.0f32; d];
            let mut count = 0u32;
            let mut weight = 0.0f32;
            let (mut importance, mut newest, mut origin) = (0u8, 0u64, 0u64);
            let mut ids: Vec<Id> = Vec::new();
            for &s in &group {
                let m = self.metas()[s];
                let w = m.observations.max(1) as f32;
                for (acc, &v) in mean.iter_mut().zip(&self.embeddings()[s * d..(s + 1) * d]) {
                    *acc += w * (v as f32 * m.scale);
                }
                weight += w;
                count = count.saturating_add(m.observations.max(1));
                importance = importance.max(m.importance);
                if m.timestamp_ms >= newest {
                    newest = m.timestamp_ms;
                    origin = m.origin;
                }
                ids.push(m.id);
            }
            mean.iter_mut().for_each(|x| *x /= weight);
            let peak = mean.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
            let scale = if peak > 0.0 { peak / 127.0 } else { 1.0 };
            let emb: Vec<i8> = mean
                .iter()
                .map(|&x| libm::roundf(x / scale).clamp(-127.0, 127.0) as i8)
                .collect();
            let listed = (self.config().max_payload / 16).min(ids.len());
            let payload: Vec<u8> = ids[..listed].iter().flatten().copied().collect();
            let label = self.metas()[group[0]].label;
            let proto = Record {
                origin,
                timestamp_ms: newest,
                label,
                importance,
                meta: [0, 0, 0, count],
                scale,
                embedding: &emb,
                payload: &payload,
            };
            let pid = self.append(&proto)?;
            for id in &ids {
                if *id != pid {
                    self.delete(id)?;
                }
            }
            done.push(pid);
            report.prototypes += 1;
            report.merged += ids.len();
        }
    }
}

//! An in-memory item set with the merge rules (needs `alloc`):
//!
//! - memory records form a grow-only set; a tombstone (from any fleet member) marks its
//!   target deleted for good: the record's bytes are dropped and its id stays known, so it
//!   is never fetched again — a delete wins over its record in any order of arrival;
//! - metadata updates are last-writer-wins registers per record, ordered by (HLC, origin);
//! - adapter contributions are a grow-only set keyed by content id; the merged adapter is
//!   Σ clip(n·Δ) / Σ n, so merging is commutative, associative and idempotent; each origin
//!   may add at most `max_per_origin` contributions per adapter key and each contribution's
//!   Δ is scaled down to `max_norm`.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::item::{Item, Kind};
use crate::recon::Id;
use crate::{Reject, Store};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub max_per_origin: u32,
    pub max_norm: f32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_per_origin: 16,
            max_norm: 10.0,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Replica {
    ids: Vec<Id>,
    items: BTreeMap<Id, Vec<u8>>,
    dead: BTreeSet<Id>,
    /// Arrival order of every item (for "everything since a mark").
    arrival: BTreeMap<Id, u64>,
    next_arrival: u64,
    meta: BTreeMap<Id, (u64, [u8; 32], u8)>,
    contrib: BTreeMap<[u8; 16], Vec<Id>>,
    per_origin: BTreeMap<([u8; 32], [u8; 16]), u32>,
    pub policy: Policy,
}

impl Replica {
    pub fn new(policy: Policy) -> Replica {
        Replica {
            policy,
            ..Replica::default()
        }
    }

    fn add_id(&mut self, id: Id) {
        if let Err(at) = self.ids.binary_search(&id) {
            self.ids.insert(at, id);
        }
    }

    /// Items held (records, tombstones, updates, contributions), not counting deleted ids.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn get(&self, id: &Id) -> Option<&[u8]> {
        self.items.get(id).map(|v| v.as_slice())
    }
    pub fn is_deleted(&self, id: &Id) -> bool {
        self.dead.contains(id)
    }
    /// Live memory records' bytes (signed items), in id order.
    pub fn records(&self) -> impl Iterator<Item = (&Id, &[u8])> {
        self.items
            .iter()
            .filter(|(_, b)| b.get(2) == Some(&(Kind::Record as u8)))
            .map(|(k, v)| (k, v.as_slice()))
    }
    /// Every item with its arrival number, for bundles.
    pub fn items_since(&self, mark: u64) -> impl Iterator<Item = (&Id, &[u8])> {
        self.items
            .iter()
            .filter(move |(id, _)| self.arrival.get(*id).is_some_and(|&a| a >= mark))
            .map(|(k, v)| (k, v.as_slice()))
    }
    /// The arrival number the next item will get (a mark for "since now").
    pub fn mark(&self) -> u64 {
        self.next_arrival
    }
    /// The importance in force for a record: the latest metadata update, else its own.
    pub fn importance(&self, id: &Id) -> Option<u8> {
        if let Some(m) = self.meta.get(id) {
            return Some(m.2);
        }
        let b = self.items.get(id)?;
        let body = b.get(crate::item::HEAD..)?;
        body.get(34).copied()
    }

    /// The merged adapter for `key`: (Σ clip(n·Δ) / Σ n, Σ n).
    pub fn merged(&self, key: &[u8; 16]) -> Option<(Vec<f32>, u32)> {
        let ids = self.contrib.get(key)?;
        let mut acc: Vec<f32> = Vec::new();
        let mut total = 0u32;
        for id in ids {
            let item = Item::verify(self.items.get(id)?).ok()?;
            let h = item.contribution()?;
            let vals: Vec<f32> = item.contribution_values().collect();
            let n = h.n.max(1) as f32;
            let norm = libm_sqrt(vals.iter().map(|v| (v / n) * (v / n)).sum());
            let s = if norm > self.policy.max_norm {
                self.policy.max_norm / norm
            } else {
                1.0
            };
            if acc.is_empty() {
                acc = alloc::vec![0.0; vals.len()];
            }
            if acc.len() != vals.len() {
                continue;
            }
            for (a, v) in acc.iter_mut().zip(&vals) {
                *a += v * s;
            }
            // Each n is a member's claim: their sum must not wrap (or panic).
            total = total.saturating_add(h.n);
        }
        let t = total.max(1) as f32;
        Some((acc.iter().map(|v| v / t).collect(), total))
    }
}

fn libm_sqrt(v: f32) -> f32 {
    // Newton iterations: no libm dependency for one square root per contribution.
    if v <= 0.0 {
        return 0.0;
    }
    let mut x = if v > 1.0 { v } else { 1.0 };
    for _ in 0..40 {
        x = 0.5 * (x + v / x);
    }
    x
}

impl Store for Replica {
    fn ids(&self) -> &[Id] {
        &self.ids
    }
    fn item_len(&self, id: &Id) -> Option<usize> {
        self.items.get(id).map(|v| v.len())
    }
    fn read(&self, id: &Id, offset: usize, out: &mut [u8]) -> usize {
        let Some(b) = self.items.get(id) else {
            return 0;
        };
        let src = b.get(offset..).unwrap_or(&[]);
        let n = src.len().min(out.len());
        out[..n].copy_from_slice(&src[..n]);
        n
    }
    fn value(&self, id: &Id) -> u64 {
        let Some(b) = self.items.get(id) else {
            return 0;
        };
        match b.get(2).copied() {
            // Deletes and updates first: they are small and change what the rest means.
            Some(2) => u64::MAX,
            Some(3) => u64::MAX - 1,
            Some(4) => u64::MAX - 2,
            _ => {
                let imp = self.importance(id).unwrap_or(0) as u64;
                // Stored items were verified on insert: read the record's timestamp in
                // place (this is called for every comparison of a sort).
                let ts = b
                    .get(crate::item::HEAD + 24..crate::item::HEAD + 32)
                    .map_or(0, |t| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(t);
                        u64::from_le_bytes(a)
                    });
                (imp << 48) | (ts & 0xFFFF_FFFF_FFFF)
            }
        }
    }
    fn insert(&mut self, item: &Item<'_>) -> Result<bool, Reject> {
        let id = item.id;
        if self.items.contains_key(&id) || self.dead.contains(&id) {
            return Ok(false);
        }
        match item.kind {
            Kind::Record => {}
            Kind::Tombstone => {
                let (target, _) = item.target().ok_or(Reject::Malformed)?;
                self.items.remove(&target);
                self.dead.insert(target);
                self.add_id(target);
            }
            Kind::Meta => {
                let (target, hlc) = item.target().ok_or(Reject::Malformed)?;
                let imp = item.importance().ok_or(Reject::Malformed)?;
                let newer = self
                    .meta
                    .get(&target)
                    .is_none_or(|m| (hlc, item.origin) > (m.0, m.1));
                if newer {
                    self.meta.insert(target, (hlc, item.origin, imp));
                }
            }
            Kind::Contribution => {
                let h = item.contribution().ok_or(Reject::Malformed)?;
                let c = self.per_origin.entry((item.origin, h.key)).or_insert(0);
                if *c >= self.policy.max_per_origin {
                    return Err(Reject::Capped);
                }
                *c += 1;
                self.contrib.entry(h.key).or_default().push(id);
            }
        }
        self.items.insert(id, item.bytes.to_vec());
        self.arrival.insert(id, self.next_arrival);
        self.next_arrival += 1;
        self.add_id(id);
        Ok(true)
    }
}

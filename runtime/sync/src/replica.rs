//! An in-memory item set with the merge rules (needs `alloc`):
//!
//! - memory records form a grow-only set;
//! - a tombstone deletes its target only if signed by the target's origin or by a key the
//!   fleet authority designated as a deleter (and not revoked). The target's origin is known
//!   only with the target, so a tombstone for an unseen id is held and judged when the
//!   target arrives: it then dies at once (its bytes are never kept) or, if the tombstone
//!   does not apply, the tombstone is dropped. A tombstone that provably does not apply is
//!   refused (`Reject::NotOwner`). Deleted ids are remembered (not listed, see
//!   [`crate::Store::ids`]) so a deleted record arriving again is not stored;
//! - metadata updates are last-writer-wins registers per record, ordered by (HLC, origin,
//!   importance);
//! - adapter contributions are a grow-only set keyed by content id; the merged adapter is
//!   Σ clip(n·Δ) / Σ n, so merging is commutative, associative and idempotent; each origin
//!   may add at most `max_per_origin` contributions per adapter key and each contribution's
//!   Δ is scaled down to `max_norm`;
//! - authority statements (their origin checked against the fleet authority by the caller):
//!   a revocation refuses the key's items from then on and drops every item it signed
//!   that is held (records, tombstones, updates, contributions) — item times are claimed by
//!   the signer, so a stolen key could backdate; no time can separate its genuine items
//!   from forged ones. Deletions that only the revoked key's tombstones made are undone
//!   (the record may arrive again). A deleter designation lets the key's tombstones apply
//!   to any record.
//!
//! The state is a function of the set of items taken, whatever their order, except that
//! a refused item is not held (its sender offers it again at the next contact).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::item::{Action, Item, Kind};
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
    /// Deleted targets and their origin key (their bytes are gone).
    dead: BTreeMap<Id, [u8; 32]>,
    /// Held tombstones by target: (tombstone id, signer).
    tombs: BTreeMap<Id, Vec<(Id, [u8; 32])>>,
    revoked: BTreeSet<[u8; 32]>,
    deleters: BTreeSet<[u8; 32]>,
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

    fn remove_id(&mut self, id: &Id) {
        if let Ok(at) = self.ids.binary_search(id) {
            self.ids.remove(at);
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
    /// Whether `id` was deleted by a tombstone that applies to it.
    pub fn is_deleted(&self, id: &Id) -> bool {
        self.dead.contains_key(id)
    }
    /// Whether a tombstone for `id` is held (applied, or waiting for its target).
    pub fn has_tombstone(&self, id: &Id) -> bool {
        self.tombs.get(id).is_some_and(|t| !t.is_empty())
    }
    /// Whether the authority revoked `key`.
    pub fn is_revoked(&self, key: &[u8; 32]) -> bool {
        self.revoked.contains(key)
    }
    /// Whether the authority designated `key` as a deleter (and did not revoke it).
    pub fn is_deleter(&self, key: &[u8; 32]) -> bool {
        self.deleters.contains(key) && !self.revoked.contains(key)
    }
    /// Whether a tombstone by `signer` deletes a record of `origin`.
    fn applies(&self, signer: &[u8; 32], origin: &[u8; 32]) -> bool {
        !self.revoked.contains(signer) && (signer == origin || self.deleters.contains(signer))
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

    /// Ids of the held contributions for adapter `key`, ascending (an index kept on
    /// insert: no walk over every item).
    pub fn contribution_ids(&self, key: &[u8; 16]) -> Vec<Id> {
        let mut ids = self.contrib.get(key).cloned().unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// The merged adapter for `key`: (Σ clip(n·Δ) / Σ n, Σ n).
    pub fn merged(&self, key: &[u8; 16]) -> Option<(Vec<f32>, u32)> {
        let ids = self.contrib.get(key)?;
        let mut acc: Vec<f32> = Vec::new();
        let mut total = 0u32;
        for id in ids {
            let item = Item::held(self.items.get(id)?)?;
            let h = item.contribution()?;
            let vals: Vec<f32> = item.contribution_values().collect();
            // In f64: the squares of any finite f32 values sum without overflow, so the
            // clip holds for every value a member can send (`Item::verify` refuses
            // non-finite ones).
            let n = h.n.max(1) as f64;
            let norm = sqrt(vals.iter().map(|&v| (v as f64 / n).powi(2)).sum());
            let max = self.policy.max_norm as f64;
            let s = if norm > max { (max / norm) as f32 } else { 1.0 };
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

fn sqrt(v: f64) -> f64 {
    // Newton iterations: no libm dependency for one square root per contribution. The
    // start halves the exponent, within a factor of two of the root for every finite
    // positive normal `v`, so twelve steps converge for any of them.
    if v.is_nan() || v <= 0.0 {
        return 0.0;
    }
    if v == f64::INFINITY {
        return v;
    }
    let mut x = f64::from_bits((v.to_bits() >> 1) + 0x1FF8_0000_0000_0000);
    for _ in 0..12 {
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
            // Authority statements, deletes and updates first: they are small and change
            // what the rest means.
            Some(5) => u64::MAX,
            Some(2) => u64::MAX - 1,
            Some(3) => u64::MAX - 2,
            Some(4) => u64::MAX - 3,
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
        self.insert_reporting(item, &mut |_, _| {})
    }
    fn admits(&self, item: &Item<'_>) -> Result<bool, Reject> {
        Ok(self.verdict(item)? == Verdict::Take)
    }
    fn revoked(&self, key: &[u8; 32]) -> bool {
        self.revoked.contains(key)
    }
}

/// What inserting an item would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Already held or deleted: nothing changes.
    Known,
    /// A record a held tombstone deletes: remembered as deleted, its bytes not kept.
    Dies,
    /// Stored.
    Take,
}

fn is_record(bytes: &[u8]) -> bool {
    bytes.get(2) == Some(&(Kind::Record as u8))
}

fn origin_of(bytes: &[u8]) -> [u8; 32] {
    let mut o = [0u8; 32];
    if let Some(b) = bytes.get(4..36) {
        o.copy_from_slice(b);
    }
    o
}

impl Replica {
    fn verdict(&self, item: &Item<'_>) -> Result<Verdict, Reject> {
        let id = item.id;
        if self.items.contains_key(&id) || self.dead.contains_key(&id) {
            return Ok(Verdict::Known);
        }
        if self.revoked.contains(&item.origin) {
            return Err(Reject::Revoked);
        }
        match item.kind {
            Kind::Tombstone => {
                let (target, _) = item.target().ok_or(Reject::Malformed)?;
                let origin = match (self.items.get(&target), self.dead.get(&target)) {
                    // Only records are deleted (an update, contribution or statement stays).
                    (Some(b), _) if !is_record(b) => return Err(Reject::NotOwner),
                    (Some(b), _) => Some(origin_of(b)),
                    (None, Some(o)) => Some(*o),
                    (None, None) => None,
                };
                if origin.is_some_and(|o| !self.applies(&item.origin, &o)) {
                    return Err(Reject::NotOwner);
                }
            }
            Kind::Contribution => {
                let h = item.contribution().ok_or(Reject::Malformed)?;
                let c = self.per_origin.get(&(item.origin, h.key)).copied();
                if c.unwrap_or(0) >= self.policy.max_per_origin {
                    return Err(Reject::Capped);
                }
            }
            Kind::Authority => {
                let st = item.statement().ok_or(Reject::Malformed)?;
                if st.subject == item.origin {
                    return Err(Reject::Malformed);
                }
            }
            Kind::Record | Kind::Meta => {}
        }
        let dies = item.kind == Kind::Record
            && self
                .tombs
                .get(&id)
                .is_some_and(|ts| ts.iter().any(|(_, s)| self.applies(s, &item.origin)));
        Ok(if dies { Verdict::Dies } else { Verdict::Take })
    }

    /// [`Store::insert`], calling `dropped(id, bytes)` for every held item it drops (a
    /// deleted target, a tombstone that turned out not to apply, a revoked key's items):
    /// a durable set removes them from its log.
    pub fn insert_reporting(
        &mut self,
        item: &Item<'_>,
        dropped: &mut dyn FnMut(&Id, &[u8]),
    ) -> Result<bool, Reject> {
        let id = item.id;
        match self.verdict(item)? {
            Verdict::Known => return Ok(false),
            Verdict::Dies => {
                self.dead.insert(id, item.origin);
                self.drop_inert_tombstones(&id, item, dropped);
                return Ok(false);
            }
            Verdict::Take => {}
        }
        match item.kind {
            Kind::Record => {}
            Kind::Tombstone => {
                let (target, _) = item.target().ok_or(Reject::Malformed)?;
                self.tombs
                    .entry(target)
                    .or_default()
                    .push((id, item.origin));
                // The verdict checked that it applies if the target is held.
                self.kill(&target, dropped);
            }
            Kind::Meta => {
                let (target, hlc) = item.target().ok_or(Reject::Malformed)?;
                let imp = item.importance().ok_or(Reject::Malformed)?;
                self.meta_offer(target, hlc, item.origin, imp);
            }
            Kind::Contribution => {
                let h = item.contribution().ok_or(Reject::Malformed)?;
                *self.per_origin.entry((item.origin, h.key)).or_insert(0) += 1;
                self.contrib.entry(h.key).or_default().push(id);
            }
            Kind::Authority => {}
        }
        self.items.insert(id, item.bytes.to_vec());
        self.arrival.insert(id, self.next_arrival);
        self.next_arrival += 1;
        self.add_id(id);
        self.drop_inert_tombstones(&id, item, dropped);
        if let Some(st) = item.statement() {
            match st.action {
                Action::Revoke => {
                    self.revoked.insert(st.subject);
                    self.purge(&st.subject, dropped);
                }
                Action::Deleter => {
                    self.deleters.insert(st.subject);
                    let targets: Vec<Id> = self
                        .tombs
                        .iter()
                        .filter(|(_, ts)| ts.iter().any(|(_, s)| s == &st.subject))
                        .map(|(t, _)| *t)
                        .collect();
                    for t in targets {
                        self.kill(&t, dropped);
                    }
                }
            }
        }
        Ok(true)
    }

    fn meta_offer(&mut self, target: Id, hlc: u64, origin: [u8; 32], imp: u8) {
        // Ordered by (HLC, origin), then importance: two updates of one origin at one HLC
        // (a clock reset, a buggy or hostile node) settle the same in any order.
        let newer = self
            .meta
            .get(&target)
            .is_none_or(|m| (hlc, origin, imp) > *m);
        if newer {
            self.meta.insert(target, (hlc, origin, imp));
        }
    }

    /// Drop the held item `target` if a held tombstone applies to it.
    fn kill(&mut self, target: &Id, dropped: &mut dyn FnMut(&Id, &[u8])) {
        let Some(bytes) = self.items.get(target).filter(|b| is_record(b)) else {
            return;
        };
        let origin = origin_of(bytes);
        let applies = self
            .tombs
            .get(target)
            .is_some_and(|ts| ts.iter().any(|(_, s)| self.applies(s, &origin)));
        if applies {
            self.dead.insert(*target, origin);
            self.forget(target, dropped);
        }
    }

    /// Remove a held item and what indexes it (not its effects on others).
    fn forget(&mut self, id: &Id, dropped: &mut dyn FnMut(&Id, &[u8])) {
        let Some(bytes) = self.items.remove(id) else {
            return;
        };
        self.arrival.remove(id);
        self.remove_id(id);
        // Held bytes were verified on insert: read the fields in place.
        let head = crate::item::HEAD;
        let field = |from: usize| -> Option<Id> { bytes.get(from..from + 16)?.try_into().ok() };
        match bytes.get(2).copied() {
            Some(k) if k == Kind::Tombstone as u8 => {
                if let Some(target) = field(head) {
                    if let Some(ts) = self.tombs.get_mut(&target) {
                        ts.retain(|(t, _)| t != id);
                        if ts.is_empty() {
                            self.tombs.remove(&target);
                        }
                    }
                }
            }
            Some(k) if k == Kind::Contribution as u8 => {
                if let Some(ids) = field(head + 32).and_then(|key| self.contrib.get_mut(&key)) {
                    ids.retain(|c| c != id);
                }
            }
            _ => {}
        }
        dropped(id, &bytes);
    }

    /// An item arrived: tombstones for it that do not apply (not its origin's, or it is not
    /// a record) are proven forged.
    fn drop_inert_tombstones(
        &mut self,
        id: &Id,
        item: &Item<'_>,
        dropped: &mut dyn FnMut(&Id, &[u8]),
    ) {
        let record = item.kind == Kind::Record;
        let inert: Vec<Id> = self
            .tombs
            .get(id)
            .map(|ts| {
                ts.iter()
                    .filter(|(_, s)| !record || !self.applies(s, &item.origin))
                    .map(|(t, _)| *t)
                    .collect()
            })
            .unwrap_or_default();
        for t in inert {
            self.forget(&t, dropped);
        }
    }

    /// A key was revoked: drop everything it signed, undo deletions only it made, and
    /// recompute the metadata registers it held.
    fn purge(&mut self, key: &[u8; 32], dropped: &mut dyn FnMut(&Id, &[u8])) {
        let signed: Vec<Id> = self
            .items
            .iter()
            .filter(|(_, b)| origin_of(b) == *key)
            .map(|(id, _)| *id)
            .collect();
        for id in &signed {
            self.forget(id, dropped);
        }
        let tombs = &self.tombs;
        let revoked = &self.revoked;
        let deleters = &self.deleters;
        self.dead.retain(|t, o| {
            o != key
                && tombs.get(t).is_some_and(|ts| {
                    ts.iter()
                        .any(|(_, s)| !revoked.contains(s) && (s == o || deleters.contains(s)))
                })
        });
        let stale: Vec<Id> = self
            .meta
            .iter()
            .filter(|(_, m)| &m.1 == key)
            .map(|(t, _)| *t)
            .collect();
        for t in &stale {
            self.meta.remove(t);
        }
        let offers: Vec<(Id, u64, [u8; 32], u8)> = self
            .items
            .values()
            .filter_map(|b| Item::held(b))
            .filter(|i| i.kind == Kind::Meta)
            .filter_map(|i| {
                let (t, hlc) = i.target()?;
                Some((t, hlc, i.origin, i.importance()?))
            })
            .filter(|o| stale.contains(&o.0))
            .collect();
        for (t, hlc, origin, imp) in offers {
            self.meta_offer(t, hlc, origin, imp);
        }
    }
}

//! Applying what arrives. [`Applier`] stands between a sync session (or a bundle import)
//! and the node's item set: a verified record is appended to the memory store *before* the
//! item set takes it, so an item a node holds (and will never fetch again) is one whose
//! record is durable; a tombstone deletes its record if signed by the record's origin or a
//! designated deleter; a revocation deletes the revoked key's records; a contribution marks
//! the merged adapter as changed (the node judges it later, outside the session:
//! [`crate::Node::apply`]). The item set judges first ([`Store::admits`]): what it refuses
//! or would not keep never reaches memory.
//!
//! A record the memory store cannot hold (another embedding width, a payload over its
//! bound) is still kept as an item, so this node relays it to peers that can.

use cairn_memory::ram::Ram;
use cairn_memory::store::LogStore;
use cairn_memory::{Record, StoreError};
use cairn_sync::item::{node_id, Action, Item, Kind};
use cairn_sync::{Id, Reject, Store};
use embedded_storage::nor_flash::NorFlash;

/// The set of signed items a node syncs: a [`Store`] that can also list what arrived since
/// a mark (for bundles).
pub trait Items: Store {
    /// The arrival number the next item will get ("everything since now").
    fn mark(&self) -> u64;
    /// Visit every item that arrived at or after `mark`, most valuable first where the set
    /// can sort (with alloc).
    fn for_each_since(&self, mark: u64, f: &mut dyn FnMut(&Id, &[u8]));
    /// Visit, ascending, the ids of held items that may be adapter contributions for
    /// adapter `key` (a superset is allowed: the caller reads and checks every field). The
    /// default walks every id and reads its kind byte; a set that indexes its
    /// contributions visits only those (a node judges the merge after every contact, so
    /// this runs once per contact).
    fn for_each_contribution(&self, key: &[u8; 16], f: &mut dyn FnMut(&Id)) {
        let _ = key;
        for id in self.ids() {
            let mut head = [0u8; 3];
            if self.read(id, 0, &mut head) == 3 && head[2] == Kind::Contribution as u8 {
                f(id);
            }
        }
    }
    /// Whether the set holds `id`.
    fn knows(&self, id: &Id) -> bool {
        self.ids().binary_search(id).is_ok()
    }
    /// Whether the fleet authority designated `key` as a deleter (sets that keep no
    /// authority statements: never).
    fn is_deleter(&self, _key: &[u8; 32]) -> bool {
        false
    }
}

/// What applying arrivals did (counters since the node was assembled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Records appended to the memory store.
    pub records: u32,
    /// Records kept only as items (the memory store cannot hold them).
    pub unusable: u32,
    /// Records deleted by tombstones.
    pub deleted: u32,
    /// Adapter contributions received (the merge is judged by `Node::apply`).
    pub contributions: u32,
    /// Items refused because the memory store failed (not acknowledged; fetched again at
    /// the next contact).
    pub store_failures: u32,
}

/// A [`Store`] over a node's item set that applies each new item to its memory store.
pub struct Applier<'n, S: Items, F: NorFlash, R: Ram> {
    pub items: &'n mut S,
    pub memory: &'n mut LogStore<F, R>,
    pub report: &'n mut ApplyReport,
}

impl<S: Items, F: NorFlash, R: Ram> Applier<'_, S, F, R> {
    fn apply(&mut self, item: &Item<'_>) -> Result<(), Reject> {
        match item.kind {
            Kind::Record => {
                let (_, rec) = Record::decode(item.body).map_err(|_| Reject::Malformed)?;
                match self.memory.append(&rec) {
                    Ok(_) => self.report.records += 1,
                    Err(StoreError::WrongDim { .. } | StoreError::PayloadTooLarge) => {
                        self.report.unusable += 1
                    }
                    Err(_) => return Err(self.store_failed()),
                }
            }
            Kind::Tombstone => {
                let (target, _) = item.target().ok_or(Reject::Malformed)?;
                // The item set checked the tombstone against the target it holds; memory
                // checks the record's own origin (an item set without the target, or none).
                let owner = self
                    .memory
                    .metas()
                    .iter()
                    .find(|m| m.id == target)
                    .map(|m| m.origin);
                let by_owner = owner == Some(node_id(&item.origin));
                if owner.is_some() && (by_owner || self.items.is_deleter(&item.origin)) {
                    self.delete(&target)?;
                }
            }
            Kind::Authority => {
                let st = item.statement().ok_or(Reject::Malformed)?;
                if st.action == Action::Revoke {
                    // Policy (cairn-sync `replica`): a revoked key's records are dropped.
                    // (No allocator here: find one at a time; a delete that finds nothing
                    // ends the loop.)
                    let revoked = node_id(&st.subject);
                    while let Some(id) = self.first_of(revoked) {
                        if !self.delete(&id)? {
                            break;
                        }
                    }
                }
            }
            Kind::Contribution => self.report.contributions += 1,
            Kind::Meta => {}
        }
        Ok(())
    }

    fn first_of(&self, origin: u64) -> Option<Id> {
        let metas = self.memory.metas();
        metas.iter().find(|m| m.origin == origin).map(|m| m.id)
    }

    fn delete(&mut self, id: &Id) -> Result<bool, Reject> {
        match self.memory.delete(id) {
            Ok(true) => {
                self.report.deleted += 1;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(_) => Err(self.store_failed()),
        }
    }

    fn store_failed(&mut self) -> Reject {
        self.report.store_failures += 1;
        Reject::StoreFull
    }
}

impl<S: Items, F: NorFlash, R: Ram> Store for Applier<'_, S, F, R> {
    fn ids(&self) -> &[Id] {
        self.items.ids()
    }
    fn item_len(&self, id: &Id) -> Option<usize> {
        self.items.item_len(id)
    }
    fn read(&self, id: &Id, offset: usize, out: &mut [u8]) -> usize {
        self.items.read(id, offset, out)
    }
    fn value(&self, id: &Id) -> u64 {
        self.items.value(id)
    }
    fn insert(&mut self, item: &Item<'_>) -> Result<bool, Reject> {
        if !self.items.admits(item)? {
            // Known, or deleted: the set remembers it; memory is not touched.
            return self.items.insert(item);
        }
        self.apply(item)?;
        self.items.insert(item)
    }
    fn admits(&self, item: &Item<'_>) -> Result<bool, Reject> {
        self.items.admits(item)
    }
    fn revoked(&self, key: &[u8; 32]) -> bool {
        self.items.revoked(key)
    }
}

/// An item set that keeps nothing: for a device without an allocator that only applies
/// what arrives (records into memory, from bundles) and exports its own records. It never
/// relays others' items, and keeps no authority statement: a revocation drops the revoked
/// key's records once, but its later items are taken again. A node that must honour
/// revocations uses [`crate::Revocations`] (the same, plus the statements on flash).
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOnly;

impl Store for ApplyOnly {
    fn ids(&self) -> &[Id] {
        &[]
    }
    fn item_len(&self, _: &Id) -> Option<usize> {
        None
    }
    fn read(&self, _: &Id, _: usize, _: &mut [u8]) -> usize {
        0
    }
    fn value(&self, _: &Id) -> u64 {
        0
    }
    fn insert(&mut self, _: &Item<'_>) -> Result<bool, Reject> {
        Ok(true)
    }
}

impl Items for ApplyOnly {
    fn mark(&self) -> u64 {
        0
    }
    fn for_each_since(&self, _: u64, _: &mut dyn FnMut(&Id, &[u8])) {}
}

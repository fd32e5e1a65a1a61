//! Item sets with an allocator: [`Replica`] in RAM, and [`DurableItems`] — a replica whose
//! every item is first written to a log on flash, so a node that loses power keeps what it
//! acknowledged and reloads it at the next start.
//!
//! The log is a `cairn-memory` store (its crash safety, CRC per entry, compaction and
//! recovery, tested at every cut point) whose records carry one signed item each as their
//! payload, with an empty embedding: a record's payload is at most 4 KiB, so a durable set
//! refuses larger items (`Reject::TooLarge`; the session counts it and goes on).

use alloc::vec::Vec;

use cairn_memory::store::Store as LogStore;
use cairn_memory::{Config, Record, StoreError};
use cairn_sync::item::{Item, Kind};
use cairn_sync::replica::Replica;
use cairn_sync::{Id, Reject, Store};
use embedded_storage::nor_flash::NorFlash;

use crate::apply::Items;

impl Items for Replica {
    fn mark(&self) -> u64 {
        Replica::mark(self)
    }
    fn is_deleter(&self, key: &[u8; 32]) -> bool {
        Replica::is_deleter(self, key)
    }
    fn for_each_since(&self, mark: u64, f: &mut dyn FnMut(&Id, &[u8])) {
        let mut all: Vec<(u64, &Id, &[u8])> = self
            .items_since(mark)
            .map(|(id, b)| (self.value(id), id, b))
            .collect();
        all.sort_by_key(|x| core::cmp::Reverse(x.0));
        for (_, id, b) in all {
            f(id, b);
        }
    }
}

/// A replica backed by an item log on flash `F`.
pub struct DurableItems<F: NorFlash> {
    replica: Replica,
    log: LogStore<F>,
}

/// What reopening a durable set found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reload {
    /// Items the set holds after the replay.
    pub items: usize,
    /// Log entries whose item no longer verifies (damaged storage): skipped.
    pub damaged: usize,
    pub log: cairn_memory::Recovery,
}

/// The log record that carries `item`.
fn carrier<'i>(item: &Item<'i>) -> Record<'i> {
    Record {
        origin: cairn_sync::item::node_id(&item.origin),
        timestamp_ms: 0,
        label: item.kind as u16,
        importance: 128,
        meta: [0; 4],
        scale: 1.0,
        embedding: &[],
        payload: item.bytes,
    }
}

/// The id of the log record carrying the (already verified) item `bytes`.
fn carrier_id(bytes: &[u8]) -> Option<Id> {
    let origin: [u8; 32] = bytes.get(4..36)?.try_into().ok()?;
    let r = Record {
        origin: cairn_sync::item::node_id(&origin),
        timestamp_ms: 0,
        label: *bytes.get(2)? as u16,
        importance: 128,
        meta: [0; 4],
        scale: 1.0,
        embedding: &[],
        payload: bytes,
    };
    Some(r.id())
}

impl<F: NorFlash> DurableItems<F> {
    /// Open (recover) the log on `flash` and reload every item it holds into a replica with
    /// `policy` (items are verified again as they load).
    pub fn open(
        flash: F,
        policy: cairn_sync::replica::Policy,
    ) -> Result<(Self, Reload), StoreError> {
        let cfg = Config {
            dim: 0,
            max_records: usize::MAX,
            max_payload: cairn_memory::record::MAX_PAYLOAD,
        };
        let (mut log, recovery) = LogStore::open(flash, cfg)?;
        let mut replica = Replica::new(policy);
        let mut reload = Reload {
            log: recovery,
            ..Reload::default()
        };
        let ids: Vec<_> = log.metas().iter().map(|m| m.id).collect();
        // Authority statements first, tombstones last: what a tombstone may delete depends
        // on deleter designations and its target's origin, whatever the log order.
        let mut passes: [Vec<Vec<u8>>; 3] = Default::default();
        for id in ids {
            let Some(body) = log.get(&id)? else { continue };
            let Ok((_, rec)) = Record::decode(&body) else {
                reload.damaged += 1;
                continue;
            };
            match Item::verify(rec.payload) {
                Ok(item) => {
                    let pass = match item.kind {
                        Kind::Authority => 0,
                        Kind::Tombstone => 2,
                        _ => 1,
                    };
                    passes[pass].push(rec.payload.to_vec());
                }
                Err(_) => reload.damaged += 1,
            }
        }
        // Entries the set refuses or drops now (a revoked key's items, a deleted record) are
        // what a power cut left between an insert's append and its deletes: they go.
        let mut stale = Vec::new();
        for b in passes.iter().flatten() {
            if let Ok(item) = Item::verify(b) {
                let r = replica
                    .insert_reporting(&item, &mut |_, bytes| stale.extend(carrier_id(bytes)));
                if r.is_err() {
                    stale.extend(carrier_id(b));
                }
            }
        }
        for id in stale {
            // A failed delete leaves an entry the next reload refuses again.
            let _ = log.delete(&id);
        }
        reload.items = replica.len();
        Ok((DurableItems { replica, log }, reload))
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }
    /// Bytes of flash the log uses (headers, live and dead entries) and of live entries.
    pub fn usage(&self) -> (usize, usize) {
        self.log.usage()
    }
    pub fn into_flash(self) -> F {
        self.log.into_flash()
    }
}

impl<F: NorFlash> Store for DurableItems<F> {
    fn ids(&self) -> &[Id] {
        self.replica.ids()
    }
    fn item_len(&self, id: &Id) -> Option<usize> {
        self.replica.item_len(id)
    }
    fn read(&self, id: &Id, offset: usize, out: &mut [u8]) -> usize {
        self.replica.read(id, offset, out)
    }
    fn value(&self, id: &Id) -> u64 {
        self.replica.value(id)
    }
    fn insert(&mut self, item: &Item<'_>) -> Result<bool, Reject> {
        if !self.replica.admits(item)? {
            // Known, or a record a held tombstone deletes: remembered, nothing to write.
            return self.replica.insert(item);
        }
        if item.bytes.len() > cairn_memory::record::MAX_PAYLOAD {
            return Err(Reject::TooLarge);
        }
        // Durable first: an item in the set is an item on flash.
        if self.log.append(&carrier(item)).is_err() {
            return Err(Reject::StoreFull);
        }
        // Items the set drops (a deleted target, a revoked key's items) leave the log too.
        let mut dead = Vec::new();
        let new = self
            .replica
            .insert_reporting(item, &mut |_, bytes| dead.extend(carrier_id(bytes)))?;
        for id in dead {
            if self.log.delete(&id).is_err() {
                return Err(Reject::StoreFull);
            }
        }
        Ok(new)
    }
    fn admits(&self, item: &Item<'_>) -> Result<bool, Reject> {
        self.replica.admits(item)
    }
    fn revoked(&self, key: &[u8; 32]) -> bool {
        self.replica.revoked(key)
    }
}

impl<F: NorFlash> Items for DurableItems<F> {
    fn mark(&self) -> u64 {
        self.replica.mark()
    }
    fn is_deleter(&self, key: &[u8; 32]) -> bool {
        self.replica.is_deleter(key)
    }
    fn for_each_since(&self, mark: u64, f: &mut dyn FnMut(&Id, &[u8])) {
        self.replica.for_each_since(mark, f)
    }
}

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
        // Tombstones last, so they find their targets whatever the log order.
        let mut later = Vec::new();
        for id in ids {
            let Some(body) = log.get(&id)? else { continue };
            let Ok((_, rec)) = Record::decode(&body) else {
                reload.damaged += 1;
                continue;
            };
            match Item::verify(rec.payload) {
                Ok(item) if item.kind == Kind::Tombstone => later.push(rec.payload.to_vec()),
                Ok(item) => {
                    let _ = replica.insert(&item);
                    reload.items += 1;
                }
                Err(_) => reload.damaged += 1,
            }
        }
        for b in later {
            if let Ok(item) = Item::verify(&b) {
                let _ = replica.insert(&item);
                reload.items += 1;
            }
        }
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
        if self.replica.knows(&item.id) {
            return Ok(false);
        }
        if item.bytes.len() > cairn_memory::record::MAX_PAYLOAD {
            return Err(Reject::TooLarge);
        }
        // Durable first: an item in the set is an item on flash.
        if self.log.append(&carrier(item)).is_err() {
            return Err(Reject::StoreFull);
        }
        if item.kind == Kind::Tombstone {
            // The deleted item's carrier goes too (its bytes are dead for good).
            let target = item.target().map(|t| t.0);
            let dead = target
                .and_then(|t| self.replica.get(&t))
                .and_then(carrier_id);
            if let Some(dead) = dead {
                if self.log.delete(&dead).is_err() {
                    return Err(Reject::StoreFull);
                }
            }
        }
        self.replica.insert(item)
    }
}

impl<F: NorFlash> Items for DurableItems<F> {
    fn mark(&self) -> u64 {
        self.replica.mark()
    }
    fn for_each_since(&self, mark: u64, f: &mut dyn FnMut(&Id, &[u8])) {
        self.replica.for_each_since(mark, f)
    }
}

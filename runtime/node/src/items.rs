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
    fn for_each_contribution(&self, key: &[u8; 16], f: &mut dyn FnMut(&Id)) {
        for id in &self.contribution_ids(key) {
            f(id);
        }
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
        let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(body) = log.get(&id)? else { continue };
            let Ok((_, rec)) = Record::decode(&body) else {
                reload.damaged += 1;
                continue;
            };
            payloads.push(rec.payload.to_vec());
        }
        // Each entry's signature is checked once, here; the passes below reuse the parse.
        let mut verified: Vec<Item<'_>> = Vec::with_capacity(payloads.len());
        for b in &payloads {
            match Item::verify(b) {
                Ok(item) => verified.push(item),
                Err(_) => reload.damaged += 1,
            }
        }
        // Authority statements first, tombstones last: what a tombstone may delete depends
        // on deleter designations and its target's origin, whatever the log order.
        let pass = |item: &Item<'_>| match item.kind {
            Kind::Authority => 0,
            Kind::Tombstone => 2,
            _ => 1,
        };
        // Entries the set refuses or drops now (a revoked key's items, a deleted record) are
        // what a power cut left between an insert's append and its deletes: they go.
        let mut stale = Vec::new();
        for p in 0..3 {
            for item in verified.iter().filter(|i| pass(i) == p) {
                let r =
                    replica.insert_reporting(item, &mut |_, bytes| stale.extend(carrier_id(bytes)));
                if r.is_err() {
                    stale.extend(carrier_id(item.bytes));
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
    fn for_each_contribution(&self, key: &[u8; 16], f: &mut dyn FnMut(&Id)) {
        Items::for_each_contribution(&self.replica, key, f)
    }
    fn for_each_since(&self, mark: u64, f: &mut dyn FnMut(&Id, &[u8])) {
        self.replica.for_each_since(mark, f)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use cairn_sync::item::{
        contribution_body, sign_into, statement_body, tombstone_body, Action, ContributionHead,
        Statement,
    };
    use cairn_sync::replica::Policy;
    use cairn_sync::testkit::signed_record;
    use ed25519_dalek::SigningKey;

    /// A set that keeps the trait's default contribution walk (every id, kind byte).
    struct Walk<'a>(&'a Replica);
    impl Store for Walk<'_> {
        fn ids(&self) -> &[Id] {
            self.0.ids()
        }
        fn item_len(&self, id: &Id) -> Option<usize> {
            self.0.item_len(id)
        }
        fn read(&self, id: &Id, offset: usize, out: &mut [u8]) -> usize {
            self.0.read(id, offset, out)
        }
        fn value(&self, id: &Id) -> u64 {
            self.0.value(id)
        }
        fn insert(&mut self, _: &Item<'_>) -> Result<bool, Reject> {
            Ok(false)
        }
    }
    impl Items for Walk<'_> {
        fn mark(&self) -> u64 {
            0
        }
        fn for_each_since(&self, _: u64, _: &mut dyn FnMut(&Id, &[u8])) {}
    }

    fn contribution(key: &SigningKey, adapter: [u8; 16], n: u32) -> Vec<u8> {
        let values = [n as f32, 1.0, -2.0];
        let h = ContributionHead {
            base: [7; 32],
            key: adapter,
            n,
            dim: values.len() as u32,
        };
        let mut body = [0u8; 128];
        let len = contribution_body(&h, &values, &mut body).unwrap();
        let mut out = vec![0u8; 512];
        let l = sign_into(key, Kind::Contribution, &body[..len], &mut out).unwrap();
        out.truncate(l);
        out
    }

    fn take(r: &mut Replica, bytes: &[u8]) {
        r.insert(&Item::verify(bytes).unwrap()).unwrap();
    }

    /// The replica's index of contributions visits, in id order, exactly the
    /// contributions for the key that a walk over every item finds — also after a
    /// revocation drops some of them.
    #[test]
    fn the_contribution_index_matches_a_walk_over_every_item() {
        let keys: Vec<SigningKey> = (1..=4u8)
            .map(|s| SigningKey::from_bytes(&[s; 32]))
            .collect();
        let authority = SigningKey::from_bytes(&[0xA0; 32]);
        let (k1, k2) = ([1u8; 16], [2u8; 16]);
        let mut r = Replica::new(Policy::default());
        for (i, k) in keys.iter().enumerate() {
            for t in 0..5 {
                take(&mut r, &signed_record(k, t + 10 * i as u64, 5, &[], 8));
            }
            take(&mut r, &contribution(k, k1, 3 + i as u32));
            take(&mut r, &contribution(k, k1, 30 + i as u32));
            take(&mut r, &contribution(k, k2, 5 + i as u32));
        }
        let own = signed_record(&keys[0], 999, 5, &[], 8);
        take(&mut r, &own);
        let target = Item::verify(&own).unwrap().id;
        let mut out = vec![0u8; 256];
        let l = sign_into(
            &keys[0],
            Kind::Tombstone,
            &tombstone_body(&target, 1),
            &mut out,
        )
        .unwrap();
        take(&mut r, &out[..l]);
        let check = |r: &Replica, expect: usize| {
            for key in [k1, k2, [9; 16]] {
                let mut indexed = Vec::new();
                Items::for_each_contribution(r, &key, &mut |id| indexed.push(*id));
                let mut walked = Vec::new();
                Walk(r).for_each_contribution(&key, &mut |id| {
                    let b = r.get(id).unwrap();
                    if b[HEAD_KEY..HEAD_KEY + 16] == key {
                        walked.push(*id);
                    }
                });
                assert_eq!(indexed, walked);
                assert!(indexed.windows(2).all(|w| w[0] < w[1]));
                let want = if key == k1 {
                    2 * expect
                } else if key == k2 {
                    expect
                } else {
                    0
                };
                assert_eq!(indexed.len(), want);
            }
        };
        check(&r, 4);
        let st = Statement {
            action: Action::Revoke,
            subject: keys[2].verifying_key().to_bytes(),
            hlc: 1,
        };
        let l = sign_into(&authority, Kind::Authority, &statement_body(&st), &mut out).unwrap();
        take(&mut r, &out[..l]);
        check(&r, 3);
    }

    /// Offset of a contribution's adapter key in the item bytes.
    const HEAD_KEY: usize = cairn_sync::item::HEAD + 32;
}

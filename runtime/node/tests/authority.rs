//! Deletions and revocations on a node: the item log replays them after a restart, and
//! memory follows the item set's rules (a tombstone deletes only its origin's record; a
//! revoked key's records leave memory).

use cairn_memory::flash::RamFlash;
use cairn_memory::{Config, Store as Memory};
use cairn_node::apply::ApplyOnly;
use cairn_node::items::DurableItems;
use cairn_node::{Applier, ApplyReport};
use cairn_sync::item::{sign_into, statement_body, tombstone_body, Action, Item, Kind, Statement};
use cairn_sync::replica::{Policy, Replica};
use cairn_sync::{Id, Reject, Store};
use ed25519_dalek::SigningKey;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}
fn authority() -> SigningKey {
    SigningKey::from_bytes(&[0xA0; 32])
}
fn record(who: u8, ts: u64) -> Vec<u8> {
    cairn_sync::testkit::signed_record(&key(who), ts, 5, &[who; 8], 8)
}
fn signed(k: &SigningKey, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 1024];
    let n = sign_into(k, kind, body, &mut out).unwrap();
    out.truncate(n);
    out
}
fn tombstone(by: u8, target: &Id) -> Vec<u8> {
    signed(&key(by), Kind::Tombstone, &tombstone_body(target, 3))
}
fn revoke(who: u8) -> Vec<u8> {
    let s = Statement {
        action: Action::Revoke,
        subject: key(who).verifying_key().to_bytes(),
        hlc: 1,
    };
    signed(&authority(), Kind::Authority, &statement_body(&s))
}
fn id(b: &[u8]) -> Id {
    Item::verify(b).unwrap().id
}
fn put<S: Store>(s: &mut S, b: &[u8]) -> Result<bool, Reject> {
    s.insert(&Item::verify(b).unwrap())
}
fn memory() -> Memory<RamFlash<4096>> {
    let cfg = Config {
        dim: 8,
        max_records: 100,
        max_payload: 64,
    };
    Memory::open(RamFlash::new(32), cfg).unwrap().0
}

#[test]
fn a_restart_replays_revocations_and_deletions_from_the_item_log() {
    let (mut d, _) = DurableItems::open(RamFlash::<4096>::new(16), Policy::default()).unwrap();
    let recs: Vec<Vec<u8>> = (0..3).map(|t| record(1, t)).collect();
    for r in &recs {
        put(&mut d, r).unwrap();
    }
    let of3 = [record(3, 10), record(3, 11)];
    for r in &of3 {
        put(&mut d, r).unwrap();
    }
    put(&mut d, &tombstone(1, &id(&recs[0]))).unwrap();
    assert_eq!(
        put(&mut d, &tombstone(2, &id(&recs[1]))),
        Err(Reject::NotOwner)
    );
    put(&mut d, &revoke(3)).unwrap();
    let before = d.ids().to_vec();
    assert_eq!(before.len(), 4, "two records, a tombstone, the revocation");
    let (mut d, reload) = DurableItems::open(d.into_flash(), Policy::default()).unwrap();
    // The log holds what the set holds: dropped items left it with their carriers.
    assert_eq!((reload.items, reload.damaged), (4, 0));
    assert_eq!(d.ids(), &before[..]);
    assert!(d.revoked(&key(3).verifying_key().to_bytes()));
    assert_eq!(put(&mut d, &record(3, 12)), Err(Reject::Revoked));
    assert_eq!(put(&mut d, &of3[0]), Err(Reject::Revoked));
    // The deleted record, arriving again, is not stored; the forged delete is refused.
    assert_eq!(put(&mut d, &recs[0]), Ok(false));
    assert!(d.replica().get(&id(&recs[0])).is_none());
    assert_eq!(
        put(&mut d, &tombstone(2, &id(&recs[1]))),
        Err(Reject::NotOwner)
    );
    assert!(d.replica().get(&id(&recs[1])).is_some());
}

#[test]
fn memory_follows_the_item_sets_rules() {
    let mut mem = memory();
    let mut items = Replica::new(Policy::default());
    let mut report = ApplyReport::default();
    let mut ap = Applier {
        items: &mut items,
        memory: &mut mem,
        report: &mut report,
    };
    let recs = [record(1, 1), record(2, 2), record(3, 3), record(3, 4)];
    for r in &recs {
        assert_eq!(put(&mut ap, r), Ok(true));
    }
    assert_eq!(ap.memory.len(), 4);
    // Another member's tombstone is refused and deletes nothing.
    assert_eq!(
        put(&mut ap, &tombstone(2, &id(&recs[0]))),
        Err(Reject::NotOwner)
    );
    assert_eq!(ap.memory.len(), 4);
    // The origin's deletes.
    put(&mut ap, &tombstone(1, &id(&recs[0]))).unwrap();
    assert_eq!(ap.memory.len(), 3);
    // A revocation takes the revoked key's records out of memory.
    put(&mut ap, &revoke(3)).unwrap();
    let left: Vec<Id> = ap.memory.metas().iter().map(|m| m.id).collect();
    assert_eq!(left, vec![id(&recs[1])]);
    // The deleted record arriving again does not come back into memory.
    assert_eq!(put(&mut ap, &recs[0]), Ok(false));
    assert_eq!(ap.memory.len(), 1);
    assert_eq!(report.deleted, 3);
}

#[test]
fn a_node_without_an_item_set_checks_the_records_own_origin() {
    let mut mem = memory();
    let mut items = ApplyOnly;
    let mut report = ApplyReport::default();
    let mut ap = Applier {
        items: &mut items,
        memory: &mut mem,
        report: &mut report,
    };
    let rec = record(1, 1);
    put(&mut ap, &rec).unwrap();
    put(&mut ap, &tombstone(2, &id(&rec))).unwrap();
    assert_eq!(ap.memory.len(), 1, "a tombstone by another member");
    put(&mut ap, &tombstone(1, &id(&rec))).unwrap();
    assert_eq!(ap.memory.len(), 0);
}

//! The merge rules under any order of arrival: the bytes pick a sequence of signed items
//! from a fixed pool (records of three members, genuine and forged tombstones, a deleter
//! designation and its tombstones, revocations, metadata updates) and offer them to a
//! replica, then the same items in reverse to another; offered again until nothing
//! changes, both must hold the same items and deletions. Never a panic.
#![no_main]
use std::sync::OnceLock;

use cairn_sync::item::{
    meta_body, sign_into, statement_body, tombstone_body, Action, Kind, Statement,
};
use cairn_sync::replica::Replica;
use cairn_sync::testkit::signed_record;
use cairn_sync::{Item, Store};
use ed25519_dalek::SigningKey;

fn signed(k: &SigningKey, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 1024];
    let n = sign_into(k, kind, body, &mut out).unwrap();
    out.truncate(n);
    out
}

fn pool() -> &'static Vec<Vec<u8>> {
    static POOL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let key = |i: u8| SigningKey::from_bytes(&[i; 32]);
        let authority = SigningKey::from_bytes(&[0xA0; 32]);
        let recs: Vec<Vec<u8>> = (0..6u8)
            .map(|t| signed_record(&key(1 + t % 3), t as u64, 5, &[t], 4))
            .collect();
        let id = |b: &[u8]| Item::verify(b).unwrap().id;
        let statement = |action, who: u8| {
            let s = Statement {
                action,
                subject: key(who).verifying_key().to_bytes(),
                hlc: 1,
            };
            signed(&authority, Kind::Authority, &statement_body(&s))
        };
        let mut p = recs.clone();
        for (by, target) in [
            (1u8, 0usize),
            (2, 0),
            (2, 1),
            (3, 2),
            (4, 3),
            (4, 5),
            (3, 5),
        ] {
            p.push(signed(
                &key(by),
                Kind::Tombstone,
                &tombstone_body(&id(&recs[target]), 9),
            ));
        }
        p.push(statement(Action::Deleter, 4));
        p.push(statement(Action::Revoke, 3));
        p.push(statement(Action::Revoke, 4));
        p.push(signed(&key(1), Kind::Meta, &meta_body(&id(&recs[4]), 1, 5)));
        p.push(signed(
            &key(3),
            Kind::Meta,
            &meta_body(&id(&recs[4]), 200, 6),
        ));
        p
    })
}

/// The pool verified once (a signature check per offer would dominate the run).
fn items() -> &'static Vec<Item<'static>> {
    static ITEMS: OnceLock<Vec<Item<'static>>> = OnceLock::new();
    ITEMS.get_or_init(|| pool().iter().map(|b| Item::verify(b).unwrap()).collect())
}

fn settle(order: &[usize]) -> (Vec<[u8; 16]>, Vec<bool>, Vec<Option<u8>>) {
    let items = items();
    let mut r = Replica::default();
    for _ in 0..items.len() + 1 {
        let mut changed = false;
        for &i in order {
            changed |= r.insert(&items[i]) == Ok(true);
        }
        if !changed {
            break;
        }
    }
    (
        r.ids().to_vec(),
        items.iter().map(|i| r.is_deleted(&i.id)).collect(),
        items.iter().map(|i| r.importance(&i.id)).collect(),
    )
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let n = pool().len();
    // Every item of the pool once, in the order the bytes pick; the rest in pool order.
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for &b in data.iter().take(4 * n) {
        let i = b as usize % n;
        if !order.contains(&i) {
            order.push(i);
        }
    }
    let rest: Vec<usize> = (0..n).filter(|i| !order.contains(i)).collect();
    order.extend(rest);
    let forward = settle(&order);
    order.reverse();
    assert_eq!(forward, settle(&order), "order {order:?}");
});

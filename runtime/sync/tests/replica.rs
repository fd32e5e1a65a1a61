//! The replica's views: emptiness, live records, arrival marks and the contribution index.

mod common;
use common::*;

use cairn_sync::item::{
    contribution_body, meta_body, sign_into, tombstone_body, ContributionHead, Item, Kind,
    CONTRIB_HEAD, HEAD, SIG,
};
use cairn_sync::replica::Replica;
use cairn_sync::testkit::signed_record;
use cairn_sync::Store;
use ed25519_dalek::SigningKey;

fn signed(kind: Kind, body: &[u8]) -> Vec<u8> {
    signed_by(&key(1), kind, body)
}

fn contribution(adapter: u8, tag: f32) -> Vec<u8> {
    let head = ContributionHead {
        base: [0xBA; 32],
        key: [adapter; 16],
        n: 1,
        dim: 2,
    };
    let mut body = vec![0u8; CONTRIB_HEAD + 8];
    contribution_body(&head, &[tag, 0.5], &mut body).unwrap();
    signed(Kind::Contribution, &body)
}

fn put(r: &mut Replica, b: &[u8]) -> [u8; 16] {
    let item = Item::verify(b).unwrap();
    assert_eq!(r.insert(&item), Ok(true));
    item.id
}

#[test]
fn records_lists_only_live_records_and_marks_count_arrivals() {
    let mut r = Replica::default();
    assert!(r.is_empty());
    assert_eq!((r.len(), r.mark()), (0, 0));
    let rec = put(&mut r, &signed_record(&key(1), 10, 3, b"seen", 8));
    assert!(!r.is_empty());
    let mark = r.mark();
    assert_eq!(mark, 1);
    let rec2 = put(&mut r, &signed_record(&key(1), 11, 3, b"also", 8));
    put(&mut r, &signed(Kind::Meta, &meta_body(&rec, 9, 1 << 20)));
    put(&mut r, &contribution(1, 0.25));
    assert_eq!((r.len(), r.mark()), (4, 4));
    let mut want = vec![rec, rec2];
    want.sort();
    let got: Vec<[u8; 16]> = r
        .records()
        .map(|(id, b)| {
            assert_eq!(b[2], Kind::Record as u8);
            *id
        })
        .collect();
    assert_eq!(got, want);
    // Everything since the mark: the three items that came after the first record.
    let since: Vec<[u8; 16]> = r.items_since(mark).map(|(id, _)| *id).collect();
    assert_eq!(since.len(), 3);
    assert!(!since.contains(&rec) && since.contains(&rec2));
    assert_eq!(r.items_since(r.mark()).count(), 0);
    assert_eq!(r.importance(&rec), Some(9));
    assert_eq!(r.importance(&rec2), Some(3));

    // A deleted record leaves the records; its tombstone is an item of its own.
    put(
        &mut r,
        &signed(Kind::Tombstone, &tombstone_body(&rec2, 1 << 21)),
    );
    assert!(r.is_deleted(&rec2));
    assert_eq!(
        r.records().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![rec]
    );
    assert_eq!(r.mark(), 5);
}

#[test]
fn contribution_ids_are_per_adapter_and_ascending() {
    let mut r = Replica::default();
    assert!(r.contribution_ids(&[1; 16]).is_empty());
    let mut a: Vec<[u8; 16]> = (0..5)
        .map(|i| put(&mut r, &contribution(1, i as f32)))
        .collect();
    let b = put(&mut r, &contribution(2, 0.0));
    a.sort();
    assert_eq!(r.contribution_ids(&[1; 16]), a);
    assert_eq!(r.contribution_ids(&[2; 16]), vec![b]);
    assert!(r.contribution_ids(&[3; 16]).is_empty());
    let (merged, n) = r.merged(&[1; 16]).unwrap();
    assert_eq!(n, 5);
    assert_eq!(merged, vec![2.0, 0.5]);
}

/// Send order: authority statements, tombstones, updates, contributions, then records by
/// (importance, timestamp); an unknown id is worth nothing.
#[test]
fn values_order_what_is_sent_first() {
    use cairn_sync::item::{statement_body, Action, Statement};
    let mut r = Replica::default();
    let ts = 0x0000_1234_5678_9ABC_u64;
    let rec = put(&mut r, &signed_record(&key(1), ts, 3, b"x", 4));
    let old = put(&mut r, &signed_record(&key(1), 7, 200, b"y", 4));
    assert_eq!(r.value(&rec), (3 << 48) | ts);
    assert_eq!(r.value(&old), (200 << 48) | 7);
    let meta = put(&mut r, &signed(Kind::Meta, &meta_body(&rec, 250, 1 << 30)));
    assert_eq!(
        r.value(&rec),
        (250 << 48) | ts,
        "the update's importance is in force"
    );
    let contrib = put(&mut r, &contribution(1, 0.5));
    let tomb = put(
        &mut r,
        &signed(Kind::Tombstone, &tombstone_body(&old, 1 << 31)),
    );
    let st = statement_body(&Statement {
        action: Action::Deleter,
        subject: [8; 32],
        hlc: 1,
    });
    let mut out = vec![0u8; st.len() + HEAD + SIG];
    let n = sign_into(&key(0xA0), Kind::Authority, &st, &mut out).unwrap();
    let auth = put(&mut r, &out[..n]);
    assert_eq!(r.value(&auth), u64::MAX);
    assert_eq!(r.value(&tomb), u64::MAX - 1);
    assert_eq!(r.value(&meta), u64::MAX - 2);
    assert_eq!(r.value(&contrib), u64::MAX - 3);
    assert_eq!(r.value(&[0x77; 16]), 0);
}

/// A contribution's Δ (its values over n) is scaled down to the policy's norm, however
/// large: the norm is summed without overflow and its square root converges from any
/// start (a root above 2^40, or squares past f32's range, used to leave it unclipped or
/// over-clipped).
#[test]
fn a_huge_contribution_is_clipped_to_the_norm_bound() {
    for big in [2.0f32, 3e15, 1e18, 1e20, f32::MAX] {
        let mut r = Replica::default();
        put(&mut r, &contribution(4, big));
        let (m, n) = r.merged(&[4; 16]).unwrap();
        assert_eq!(n, 1);
        let norm = ((m[0] as f64).powi(2) + (m[1] as f64).powi(2)).sqrt();
        let want = ((big as f64).powi(2) + 0.25)
            .sqrt()
            .min(r.policy.max_norm as f64);
        assert!(
            (norm - want).abs() <= 1e-5 * want,
            "Δ {big}: norm {norm}, want {want}"
        );
    }
}

/// A contribution holding a NaN or an infinity is malformed: it would poison every merged
/// adapter that took it.
#[test]
fn non_finite_contributions_are_refused() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let b = contribution(4, bad);
        assert_eq!(
            Item::verify(&b).err(),
            Some(cairn_sync::Reject::Malformed),
            "{bad}"
        );
    }
}

fn statement(action: cairn_sync::item::Action, subject: &SigningKey) -> Vec<u8> {
    let st = cairn_sync::item::statement_body(&cairn_sync::item::Statement {
        action,
        subject: subject.verifying_key().to_bytes(),
        hlc: 1,
    });
    signed_by(&key(0xA0), Kind::Authority, &st)
}

/// `Store::admits` answers what `insert` would, and changes nothing.
#[test]
fn admits_answers_like_insert_without_inserting() {
    use cairn_sync::item::Action;
    use cairn_sync::Reject;
    let mut r = Replica::default();
    let rec = signed_record(&key(1), 5, 1, b"r", 4);
    let item = Item::verify(&rec).unwrap();
    assert_eq!(r.admits(&item), Ok(true));
    assert_eq!((r.len(), r.mark()), (0, 0));
    put(&mut r, &rec);
    assert_eq!(r.admits(&item), Ok(false), "already held");
    let by2 = signed_by(&key(2), Kind::Tombstone, &tombstone_body(&item.id, 9));
    assert_eq!(
        r.admits(&Item::verify(&by2).unwrap()),
        Err(Reject::NotOwner)
    );
    put(&mut r, &statement(Action::Revoke, &key(3)));
    let from3 = signed_record(&key(3), 6, 1, b"r", 4);
    assert_eq!(
        r.admits(&Item::verify(&from3).unwrap()),
        Err(Reject::Revoked)
    );
    // A record whose held tombstone applies would die, not be stored: not admitted.
    let later = signed_record(&key(1), 7, 1, b"later", 4);
    let later_id = Item::verify(&later).unwrap().id;
    put(
        &mut r,
        &signed_by(&key(1), Kind::Tombstone, &tombstone_body(&later_id, 9)),
    );
    assert_eq!(r.admits(&Item::verify(&later).unwrap()), Ok(false));
    assert!(r.get(&later_id).is_none() && !r.is_deleted(&later_id));
}

/// Metadata is last-writer-wins by (HLC, origin, importance), whatever the arrival order.
#[test]
fn metadata_updates_settle_the_same_in_any_order() {
    let rec = signed_record(&key(1), 5, 1, b"r", 4);
    let target = Item::verify(&rec).unwrap().id;
    let updates = [
        signed_by(&key(1), Kind::Meta, &meta_body(&target, 10, 100)),
        signed_by(&key(1), Kind::Meta, &meta_body(&target, 20, 200)),
        // The same HLC from another origin: the larger origin key wins.
        signed_by(&key(2), Kind::Meta, &meta_body(&target, 30, 200)),
        // The same origin and HLC twice: the larger importance wins.
        signed_by(&key(1), Kind::Meta, &meta_body(&target, 40, 200)),
        signed_by(&key(1), Kind::Meta, &meta_body(&target, 35, 200)),
    ];
    let k1 = key(1).verifying_key().to_bytes();
    let k2 = key(2).verifying_key().to_bytes();
    let want = if k2 > k1 { 30 } else { 40 };
    let orders: [[usize; 5]; 6] = [
        [0, 1, 2, 3, 4],
        [4, 3, 2, 1, 0],
        [2, 0, 4, 1, 3],
        [3, 4, 0, 2, 1],
        [1, 3, 0, 4, 2],
        [4, 2, 3, 0, 1],
    ];
    for order in orders {
        let mut r = Replica::default();
        put(&mut r, &rec);
        for i in order {
            put(&mut r, &updates[i]);
        }
        assert_eq!(r.importance(&target), Some(want), "order {order:?}");
    }
    // An older HLC never overrides a newer one.
    let mut r = Replica::default();
    put(&mut r, &updates[1]);
    put(&mut r, &updates[0]);
    assert_eq!(r.importance(&target), Some(20));
}

/// Revoking a key drops its contributions from the adapter index and the merge; the
/// others' stay.
#[test]
fn a_revoked_contributor_leaves_the_merge() {
    use cairn_sync::item::Action;
    let contrib = |by: u8, v: f32| {
        let head = ContributionHead {
            base: [0xBA; 32],
            key: [6; 16],
            n: 1,
            dim: 2,
        };
        let mut body = vec![0u8; CONTRIB_HEAD + 8];
        contribution_body(&head, &[v, v], &mut body).unwrap();
        signed_by(&key(by), Kind::Contribution, &body)
    };
    let mut r = Replica::default();
    let keep = put(&mut r, &contrib(1, 1.0));
    put(&mut r, &contrib(2, 3.0));
    put(&mut r, &contrib(2, 5.0));
    assert_eq!(r.contribution_ids(&[6; 16]).len(), 3);
    assert_eq!(r.merged(&[6; 16]), Some((vec![3.0, 3.0], 3)));
    put(&mut r, &statement(Action::Revoke, &key(2)));
    assert_eq!(r.contribution_ids(&[6; 16]), vec![keep]);
    assert_eq!(r.merged(&[6; 16]), Some((vec![1.0, 1.0], 1)));
}

/// A revocation undoes exactly the deletions that only the revoked key made.
#[test]
fn a_revocation_keeps_every_deletion_another_key_made() {
    use cairn_sync::item::Action;
    let mut r = Replica::default();
    put(&mut r, &statement(Action::Deleter, &key(4)));
    put(&mut r, &statement(Action::Deleter, &key(3)));
    let own = put(&mut r, &signed_record(&key(1), 1, 1, b"a", 4));
    let by_deleter = put(&mut r, &signed_record(&key(1), 2, 1, b"b", 4));
    let of3 = put(&mut r, &signed_record(&key(3), 3, 1, b"c", 4));
    let by3 = put(&mut r, &signed_record(&key(2), 4, 1, b"d", 4));
    let tomb = |by: u8, t: &[u8; 16]| signed_by(&key(by), Kind::Tombstone, &tombstone_body(t, 9));
    put(&mut r, &tomb(1, &own));
    put(&mut r, &tomb(4, &by_deleter));
    put(&mut r, &tomb(3, &of3));
    put(&mut r, &tomb(3, &by3));
    for t in [&own, &by_deleter, &of3, &by3] {
        assert!(r.is_deleted(t));
    }
    put(&mut r, &statement(Action::Revoke, &key(3)));
    assert!(r.is_deleted(&own), "deleted by its origin");
    assert!(r.is_deleted(&by_deleter), "deleted by another deleter");
    assert!(
        !r.is_deleted(&of3),
        "the revoked key's own record is forgotten"
    );
    assert!(
        !r.is_deleted(&by3),
        "deleted only by the revoked key: may come back"
    );
    assert!(!r.is_deleter(&key(3).verifying_key().to_bytes()));
    assert!(r.is_deleter(&key(4).verifying_key().to_bytes()));
}

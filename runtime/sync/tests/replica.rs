//! The replica's views: emptiness, live records, arrival marks and the contribution index.

use cairn_sync::item::{
    contribution_body, meta_body, sign_into, tombstone_body, ContributionHead, Item, Kind,
    CONTRIB_HEAD, HEAD, SIG,
};
use cairn_sync::replica::Replica;
use cairn_sync::testkit::signed_record;
use cairn_sync::Store;
use ed25519_dalek::SigningKey;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn signed(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; body.len() + HEAD + SIG];
    let n = sign_into(&key(1), kind, body, &mut out).unwrap();
    out.truncate(n);
    out
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

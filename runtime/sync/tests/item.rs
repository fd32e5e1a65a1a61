//! Item framing at its exact bounds, each kind's body rules, the accessors' values, and the
//! hybrid logical clock.

mod common;
use common::*;

use cairn_sync::hlc::Hlc;
use cairn_sync::item::{
    contribution_body, meta_body, node_id, sign_into, statement_body, tombstone_body, Action,
    ContributionHead, Item, Kind, Statement, CONTRIB_HEAD, HEAD, MAX_ITEM, SIG,
};
use cairn_sync::Reject;
use ed25519_dalek::Signer;
use sha2_10::{Digest, Sha256};

fn signed(kind: Kind, body: &[u8]) -> Vec<u8> {
    signed_by(&key(1), kind, body)
}

/// Sign `bytes[..len - SIG]` into the last 64 bytes as `sign_into` does, whatever the
/// framing says (to make items `sign_into` refuses to write).
fn resign(bytes: &mut [u8]) {
    let end = bytes.len() - SIG;
    let mut h = Sha256::new();
    h.update(b"cairn-item/1");
    h.update(&bytes[..end]);
    let d: [u8; 32] = h.finalize().into();
    let sig = key(1).sign(&d).to_bytes();
    bytes[end..].copy_from_slice(&sig);
}

fn contribution(dim: usize) -> Vec<u8> {
    let head = ContributionHead {
        base: [0xBA; 32],
        key: [7; 16],
        n: 3,
        dim: dim as u32,
    };
    let values: Vec<f32> = (0..dim).map(|i| i as f32 - 1.5).collect();
    let mut body = vec![0u8; CONTRIB_HEAD + 4 * dim];
    contribution_body(&head, &values, &mut body).unwrap();
    signed(Kind::Contribution, &body)
}

#[test]
fn the_largest_item_verifies_and_one_byte_more_is_malformed() {
    // spec.md: the largest item is 8 KiB + 104 (head and signature), which holds a record
    // with a 4 KB payload and a 4096-d int8 embedding.
    assert_eq!(MAX_ITEM, 8192 + 104);
    assert_eq!(HEAD + SIG, 104);
    let dim = (MAX_ITEM - HEAD - SIG - CONTRIB_HEAD) / 4;
    let max = contribution(dim);
    assert_eq!(max.len(), MAX_ITEM);
    assert_eq!(Item::verify(&max).unwrap().kind, Kind::Contribution);
    assert_eq!(
        sign_into(
            &key(1),
            Kind::Contribution,
            &max[HEAD..MAX_ITEM - SIG + 1],
            &mut vec![0; MAX_ITEM + 1]
        ),
        Err(Reject::TooLarge)
    );
    // One more byte, its length field and signature made consistent: refused for its size,
    // before the signature is checked.
    let mut over = max[..MAX_ITEM - SIG].to_vec();
    over.push(0);
    over.extend_from_slice(&[0; SIG]);
    let len = (over.len() - HEAD - SIG) as u32;
    over[36..40].copy_from_slice(&len.to_le_bytes());
    resign(&mut over);
    assert_eq!(Item::verify(&over).err(), Some(Reject::Malformed));
    let mut bad_sig = over.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    assert_eq!(Item::verify(&bad_sig).err(), Some(Reject::Malformed));
}

#[test]
fn framing_shorter_than_head_and_signature_is_malformed() {
    let t = signed(Kind::Tombstone, &tombstone_body(&[1; 16], 9));
    for n in [0usize, 3, 39, 40, HEAD + SIG - 1] {
        assert_eq!(
            Item::verify(&t[..n]).err(),
            Some(Reject::Malformed),
            "{n} bytes"
        );
    }
    // Exactly HEAD + SIG (an empty body) is framed well enough to check its signature.
    let mut empty = t[..HEAD].to_vec();
    empty[36..40].copy_from_slice(&0u32.to_le_bytes());
    empty.extend_from_slice(&[0; SIG]);
    assert_eq!(Item::verify(&empty).err(), Some(Reject::BadSignature));
    resign(&mut empty);
    assert_eq!(
        Item::verify(&empty).err(),
        Some(Reject::Malformed),
        "no kind has an empty body"
    );
}

#[test]
fn each_header_byte_is_checked_before_the_signature() {
    let t = signed(Kind::Tombstone, &tombstone_body(&[1; 16], 9));
    assert!(Item::verify(&t).is_ok());
    for (at, v) in [(0usize, 0xC4u8), (1, 2), (2, 0), (2, 6), (3, 1)] {
        let mut e = t.clone();
        e[at] = v;
        assert_eq!(
            Item::verify(&e).err(),
            Some(Reject::Malformed),
            "byte {at} = {v}"
        );
        resign(&mut e);
        assert_eq!(
            Item::verify(&e).err(),
            Some(Reject::Malformed),
            "byte {at} = {v}, signed"
        );
    }
    // A length field that disagrees with the bytes.
    for len in [23u32, 25, 0, u32::MAX] {
        let mut e = t.clone();
        e[36..40].copy_from_slice(&len.to_le_bytes());
        assert_eq!(Item::verify(&e).err(), Some(Reject::Malformed), "len {len}");
    }
    // A body byte edited: the signature fails.
    let mut e = t.clone();
    e[HEAD + 3] ^= 1;
    assert_eq!(Item::verify(&e).err(), Some(Reject::BadSignature));
}

#[test]
fn each_kind_has_its_body_length() {
    let target = [5u8; 16];
    let ok = |kind, body: &[u8]| Item::verify(&signed(kind, body)).map(|i| i.kind);
    assert_eq!(
        ok(Kind::Tombstone, &tombstone_body(&target, 1)),
        Ok(Kind::Tombstone)
    );
    assert_eq!(
        ok(Kind::Tombstone, &meta_body(&target, 1, 1)),
        Err(Reject::Malformed)
    );
    assert_eq!(ok(Kind::Tombstone, &[0; 23]), Err(Reject::Malformed));
    assert_eq!(ok(Kind::Meta, &meta_body(&target, 1, 1)), Ok(Kind::Meta));
    assert_eq!(
        ok(Kind::Meta, &tombstone_body(&target, 1)),
        Err(Reject::Malformed)
    );
    assert_eq!(ok(Kind::Meta, &[0; 26]), Err(Reject::Malformed));
    let st = statement_body(&Statement {
        action: Action::Deleter,
        subject: [3; 32],
        hlc: 77,
    });
    assert_eq!(ok(Kind::Authority, &st), Ok(Kind::Authority));
    assert_eq!(ok(Kind::Authority, &st[..40]), Err(Reject::Malformed));
    let mut bad_action = st;
    bad_action[0] = 3;
    assert_eq!(ok(Kind::Authority, &bad_action), Err(Reject::Malformed));
    // Contributions: at least the fixed head, then exactly `dim` f32s.
    assert!(Item::verify(&contribution(0)).is_ok());
    assert!(Item::verify(&contribution(5)).is_ok());
    for n in [0usize, 20, 55] {
        assert_eq!(
            ok(Kind::Contribution, &vec![0; n]),
            Err(Reject::Malformed),
            "{n} bytes"
        );
    }
    let mut body = contribution(5)[HEAD..HEAD + CONTRIB_HEAD + 20].to_vec();
    for (dim, extra) in [(4u32, 0usize), (6, 0), (5, 1), (5, 3), (1 << 30, 0)] {
        let mut b = body.clone();
        b[52..56].copy_from_slice(&dim.to_le_bytes());
        b.extend(std::iter::repeat_n(0, extra));
        assert_eq!(
            ok(Kind::Contribution, &b),
            Err(Reject::Malformed),
            "dim {dim} extra {extra}"
        );
    }
    body.truncate(CONTRIB_HEAD);
    body[52..56].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(ok(Kind::Contribution, &body), Ok(Kind::Contribution));
}

#[test]
fn accessors_read_their_fields() {
    let target = [9u8; 16];
    let hlc = 0x0102_0304_0506_0708u64;
    let t = signed(Kind::Tombstone, &tombstone_body(&target, hlc));
    let t = Item::verify(&t).unwrap();
    assert_eq!(t.target(), Some((target, hlc)));
    assert_eq!(
        (t.importance(), t.statement(), t.contribution()),
        (None, None, None)
    );
    assert_eq!(t.origin, key(1).verifying_key().to_bytes());
    assert_eq!(t.body, &tombstone_body(&target, hlc)[..]);

    let m = signed(Kind::Meta, &meta_body(&target, 200, hlc + 1));
    let m = Item::verify(&m).unwrap();
    assert_eq!(
        (m.target(), m.importance()),
        (Some((target, hlc + 1)), Some(200))
    );

    let s = Statement {
        action: Action::Revoke,
        subject: [4; 32],
        hlc: 1 << 40,
    };
    let a = signed(Kind::Authority, &statement_body(&s));
    let a = Item::verify(&a).unwrap();
    assert_eq!(
        (a.statement(), a.target(), a.importance()),
        (Some(s), None, None)
    );

    let c = contribution(3);
    let c = Item::verify(&c).unwrap();
    let head = c.contribution().unwrap();
    assert_eq!(
        (head.base, head.key, head.n, head.dim),
        ([0xBA; 32], [7; 16], 3, 3)
    );
    assert_eq!(
        c.contribution_values().collect::<Vec<_>>(),
        vec![-1.5, -0.5, 0.5]
    );
    assert_eq!(c.statement(), None);

    // Ids: the SHA-256 prefix of the signed bytes, distinct per content.
    let t2 = signed(Kind::Tombstone, &tombstone_body(&target, hlc + 1));
    assert_ne!(Item::verify(&t2).unwrap().id, t.id);
    let t_bytes = signed(Kind::Tombstone, &tombstone_body(&target, hlc));
    let d = Sha256::digest(&t_bytes[..t_bytes.len() - SIG]);
    assert_eq!(t.id[..], d[..16]);
    assert_eq!(node_id(&[0x11; 32]), 0x1111_1111_1111_1111);
    let mut k = [0u8; 32];
    k[0] = 1;
    k[8] = 0xFF;
    assert_eq!(node_id(&k), 1);
}

#[test]
fn hlc_is_monotone_and_follows_the_clock_and_peers() {
    let mut h = Hlc::default();
    assert_eq!(h.last(), 0);
    assert_eq!(h.now(1000), 1000 << 16);
    assert_eq!(h.last(), 1000 << 16);
    // The same millisecond, then a clock that stepped back: the counter moves on.
    assert_eq!(h.now(1000), (1000 << 16) + 1);
    assert_eq!(h.now(999), (1000 << 16) + 2);
    assert_eq!(h.now(1001), 1001 << 16);
    // A peer ahead of us pulls the clock forward; one behind does not.
    h.observe(5000 << 16);
    assert_eq!(h.last(), 5000 << 16);
    h.observe(10);
    assert_eq!(h.last(), 5000 << 16);
    assert_eq!(h.now(2000), (5000 << 16) + 1);
    // Physical time keeps its low 48 bits.
    let mut h = Hlc::default();
    assert_eq!(h.now((1 << 48) + 5), 5 << 16);
    assert_eq!(h.now(u64::MAX), 0xFFFF_FFFF_FFFF << 16);
}

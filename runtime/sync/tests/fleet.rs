//! The signed membership list: what verifies, what is refused and why, and what a
//! verified list answers.

use cairn_sync::fleet::{sign_fleet, Fleet};
use cairn_sync::item::{sign_into, Kind, HEAD, SIG};
use cairn_sync::item::{statement_body, Action, Item, Statement};
use cairn_sync::Reject;
use ed25519_dalek::{Signer, SigningKey};
use sha2_10::{Digest, Sha256};

const AUTHORITY: [u8; 32] = [0xA0; 32];

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn authority() -> SigningKey {
    SigningKey::from_bytes(&AUTHORITY)
}

fn authority_vk() -> [u8; 32] {
    authority().verifying_key().to_bytes()
}

fn list(version: u32, members: &[[u8; 32]]) -> Vec<u8> {
    let mut m = members.to_vec();
    let mut out = vec![0u8; 10 + 32 * m.len() + 64];
    let n = sign_fleet(&authority(), version, &mut m, &mut out).unwrap();
    out.truncate(n);
    out
}

/// A list with the members exactly as given (no sorting), signed by `by`.
fn raw_list(by: &SigningKey, members: &[[u8; 32]]) -> Vec<u8> {
    let mut out = b"CFLT".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    for m in members {
        out.extend_from_slice(m);
    }
    let mut h = Sha256::new();
    h.update(b"cairn-fleet/1");
    h.update(&out);
    let digest: [u8; 32] = h.finalize().into();
    out.extend_from_slice(&by.sign(&digest).to_bytes());
    out
}

fn vk(i: u8) -> [u8; 32] {
    key(i).verifying_key().to_bytes()
}

#[test]
fn a_list_answers_its_members_length_version_and_authority() {
    let members = [vk(3), vk(1), vk(2), vk(1), vk(3)];
    let b = list(7, &members);
    assert_eq!(
        b.len(),
        10 + 3 * 32 + 64,
        "duplicates are dropped when signing"
    );
    let f = Fleet::verify(&b, &authority_vk()).unwrap();
    assert_eq!((f.version, f.len(), f.is_empty()), (7, 3, false));
    assert_eq!(f.authority(), &authority_vk());
    for i in 1..=3 {
        assert!(f.contains(&vk(i)), "member {i}");
    }
    for i in [0u8, 4, 9, 0xA0] {
        assert!(!f.contains(&vk(i)), "not member {i}");
    }
    assert!(!f.contains(&[0; 32]) && !f.contains(&[0xFF; 32]));

    let one = list(1, &[vk(5)]);
    let f = Fleet::verify(&one, &authority_vk()).unwrap();
    assert_eq!((f.len(), f.is_empty()), (1, false));
    assert!(f.contains(&vk(5)) && !f.contains(&vk(1)));

    // Many members: the binary search finds every one and no other.
    let many: Vec<[u8; 32]> = (10..60).map(vk).collect();
    let b = list(2, &many);
    let f = Fleet::verify(&b, &authority_vk()).unwrap();
    assert_eq!(f.len(), 50);
    assert!(many.iter().all(|m| f.contains(m)));
    assert!((0..10).chain(60..70).all(|i| !f.contains(&vk(i))));
}

#[test]
fn an_empty_list_verifies_with_no_members() {
    let b = list(1, &[]);
    assert_eq!(b.len(), 10 + 64);
    let f = Fleet::verify(&b, &authority_vk()).unwrap();
    assert_eq!((f.len(), f.is_empty()), (0, true));
    assert!(!f.contains(&vk(1)));
}

#[test]
fn malformed_lists_are_refused() {
    let a = authority_vk();
    let good = list(1, &[vk(1), vk(2)]);
    assert!(Fleet::verify(&good, &a).is_ok());
    for n in [0usize, 4, 9, 10, 73] {
        assert_eq!(
            Fleet::verify(&good[..n], &a).err(),
            Some(Reject::Malformed),
            "{n} bytes"
        );
    }
    // A header with the right magic, too short for a signature.
    let mut short = b"CFLT".to_vec();
    short.extend_from_slice(&[0; 6]);
    assert_eq!(Fleet::verify(&short, &a).err(), Some(Reject::Malformed));

    let mut magic = good.clone();
    magic[1] = b'G';
    assert_eq!(Fleet::verify(&magic, &a).err(), Some(Reject::Malformed));

    // A count that disagrees with the length, either way.
    for count in [1u16, 3, 0xFFFF] {
        let mut c = good.clone();
        c[8..10].copy_from_slice(&count.to_le_bytes());
        assert_eq!(
            Fleet::verify(&c, &a).err(),
            Some(Reject::Malformed),
            "count {count}"
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(Fleet::verify(&longer, &a).err(), Some(Reject::Malformed));

    // Unsorted or repeated members, even when properly signed.
    let (lo, hi) = if vk(1) < vk(2) {
        (vk(1), vk(2))
    } else {
        (vk(2), vk(1))
    };
    assert!(Fleet::verify(&raw_list(&authority(), &[lo, hi]), &a).is_ok());
    for bad in [[hi, lo], [lo, lo]] {
        assert_eq!(
            Fleet::verify(&raw_list(&authority(), &bad), &a).err(),
            Some(Reject::Malformed)
        );
    }
}

#[test]
fn a_list_signed_by_another_key_or_edited_is_refused() {
    let a = authority_vk();
    let other = raw_list(&key(9), &[vk(1)]);
    assert_eq!(Fleet::verify(&other, &a).err(), Some(Reject::BadSignature));
    let good = list(1, &[vk(1)]);
    for at in [4usize, 10, 41, 42, good.len() - 1] {
        let mut e = good.clone();
        e[at] ^= 0x10;
        assert_eq!(
            Fleet::verify(&e, &a).err(),
            Some(Reject::BadSignature),
            "byte {at}"
        );
    }
    // Checked against a key that is not a point on the curve.
    let mut bad_key = [0xFF; 32];
    bad_key[31] = 0x7F;
    assert!(Fleet::verify(&good, &bad_key).is_err());
}

#[test]
fn authority_statements_only_from_the_authority_other_items_only_from_members() {
    let b = list(1, &[vk(1)]);
    let f = Fleet::verify(&b, &authority_vk()).unwrap();
    let body = statement_body(&Statement {
        action: Action::Revoke,
        subject: vk(2),
        hlc: 5,
    });
    let signed = |by: &SigningKey, kind: Kind, body: &[u8]| {
        let mut out = vec![0u8; body.len() + HEAD + SIG];
        let n = sign_into(by, kind, body, &mut out).unwrap();
        out.truncate(n);
        out
    };
    let from_authority = signed(&authority(), Kind::Authority, &body);
    let from_member = signed(&key(1), Kind::Authority, &body);
    assert_eq!(f.admits(&Item::verify(&from_authority).unwrap()), Ok(()));
    assert_eq!(
        f.admits(&Item::verify(&from_member).unwrap()),
        Err(Reject::NotAuthority)
    );
    let tomb = [0u8; 24];
    assert_eq!(
        f.admits(&Item::verify(&signed(&key(1), Kind::Tombstone, &tomb)).unwrap()),
        Ok(())
    );
    assert_eq!(
        f.admits(&Item::verify(&signed(&key(2), Kind::Tombstone, &tomb)).unwrap()),
        Err(Reject::NotMember)
    );
    // The authority is not a member by being the authority.
    assert_eq!(
        f.admits(&Item::verify(&signed(&authority(), Kind::Tombstone, &tomb)).unwrap()),
        Err(Reject::NotMember)
    );
}

#[test]
fn signing_needs_room_for_the_whole_list() {
    let mut m = [vk(1), vk(2)];
    let mut out = vec![0u8; 10 + 64 + 63];
    assert_eq!(sign_fleet(&authority(), 1, &mut m, &mut out), None);
    let mut out = vec![0u8; 10 + 64 + 64 + 5];
    assert_eq!(sign_fleet(&authority(), 1, &mut m, &mut out), Some(138));
    assert!(Fleet::verify(&out[..138], &authority_vk()).is_ok());
}

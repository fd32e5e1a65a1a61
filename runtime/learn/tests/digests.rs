//! The lineage log's digests against SHA-256 computed here: the order-free digest of a
//! record set (a 256-bit wrapping sum of the ids' hashes, carries included), the weights
//! and model hashes, and a checkpoint's shape words.

use cairn_learn::lineage::{model_hash, weights_digest, Checkpoint, RecordDigest};
use cairn_learn::AdapterShape;
use sha2::{Digest, Sha256};

/// The digest of `ids` by its definition: SHA-256 of the count, then of the four limbs of
/// the wrapping 256-bit sum of every id's SHA-256 (little-endian limbs).
fn reference(ids: &[&[u8]]) -> [u8; 32] {
    let mut sum = [0u64; 4];
    for id in ids {
        let h = Sha256::digest(id);
        let mut carry = 0u128;
        for (i, limb) in sum.iter_mut().enumerate() {
            let v = *limb as u128
                + u64::from_le_bytes(h[8 * i..8 * i + 8].try_into().unwrap()) as u128
                + carry;
            *limb = v as u64;
            carry = v >> 64;
        }
    }
    let mut h = Sha256::new();
    h.update((ids.len() as u32).to_le_bytes());
    for l in sum {
        h.update(l.to_le_bytes());
    }
    h.finalize().into()
}

#[test]
fn a_record_set_digest_is_its_wrapping_hash_sum() {
    let ids: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i, i.wrapping_mul(7), 3]).collect();
    let refs: Vec<&[u8]> = ids.iter().map(|v| v.as_slice()).collect();
    let mut d = RecordDigest::default();
    for (n, id) in refs.iter().enumerate() {
        d.add(id);
        assert_eq!(d.count(), n as u32 + 1);
        // Forty sums of random 64-bit limbs carry many times on the way.
        assert_eq!(d.finish(), reference(&refs[..=n]), "after {} ids", n + 1);
    }
    // Any order gives the same digest; another set does not.
    let mut back = RecordDigest::default();
    for id in refs.iter().rev() {
        back.add(id);
    }
    assert_eq!(back.finish(), d.finish());
    let mut fewer = RecordDigest::default();
    for id in &refs[1..] {
        fewer.add(id);
    }
    assert_ne!(fewer.finish(), d.finish());
}

#[test]
fn weights_and_model_hashes_are_sha256() {
    let w = [1.5f32, -0.25, 3.0e-7];
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let want: [u8; 32] = Sha256::digest(&bytes).into();
    assert_eq!(weights_digest(&w), want);
    assert_eq!(model_hash(&bytes), want);
    assert_ne!(weights_digest(&w[..2]), want);
    let shape = AdapterShape {
        fin: 11,
        hidden: 7,
        rank: 3,
        classes: 5,
        batch: 2,
    };
    assert_eq!(Checkpoint::shape_of(&shape), [11, 7, 3, 5]);
}

//! Fleet membership: a list of member keys signed by the fleet authority. Only members may
//! open sessions, and only items whose origin is a member are stored — except the
//! authority's own statements (revocations, deleter designations), whose origin must be
//! the authority (see [`Fleet::admits`]).
//!
//! Layout: magic `"CFLT"`, version `u32`, count `u16`, member keys (32 each, sorted,
//! distinct), signature (64) by the authority over SHA-256(`"cairn-fleet/1"` ‖ preceding).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2_10::{Digest, Sha256};

use crate::item::{Item, Kind};
use crate::Reject;

const MAGIC: &[u8; 4] = b"CFLT";
const HEAD: usize = 10;

/// A verified membership list, borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Fleet<'a> {
    pub version: u32,
    members: &'a [u8],
    authority: [u8; 32],
}

fn digest(b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cairn-fleet/1");
    h.update(b);
    h.finalize().into()
}

impl<'a> Fleet<'a> {
    /// Parse and verify against the authority's key.
    pub fn verify(bytes: &'a [u8], authority: &[u8; 32]) -> Result<Fleet<'a>, Reject> {
        if bytes.len() < HEAD + 64 || &bytes[..4] != MAGIC {
            return Err(Reject::Malformed);
        }
        let count = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        if bytes.len() != HEAD + 32 * count + 64 {
            return Err(Reject::Malformed);
        }
        let body = &bytes[..HEAD + 32 * count];
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[HEAD + 32 * count..]);
        let vk = VerifyingKey::from_bytes(authority).map_err(|_| Reject::BadSignature)?;
        vk.verify_strict(&digest(body), &Signature::from_bytes(&sig))
            .map_err(|_| Reject::BadSignature)?;
        let members = &bytes[HEAD..HEAD + 32 * count];
        if members
            .chunks(32)
            .zip(members.chunks(32).skip(1))
            .any(|(a, b)| a >= b)
        {
            return Err(Reject::Malformed);
        }
        Ok(Fleet {
            version: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            members,
            authority: *authority,
        })
    }

    /// The key of the authority that signed this list.
    pub fn authority(&self) -> &[u8; 32] {
        &self.authority
    }

    /// Whether an item's origin may sign an item of its kind: authority statements only
    /// from the authority (`Reject::NotAuthority`), every other kind only from a member.
    pub fn admits(&self, item: &Item<'_>) -> Result<(), Reject> {
        match item.kind {
            Kind::Authority if item.origin == self.authority => Ok(()),
            Kind::Authority => Err(Reject::NotAuthority),
            _ if self.contains(&item.origin) => Ok(()),
            _ => Err(Reject::NotMember),
        }
    }

    pub fn contains(&self, key: &[u8; 32]) -> bool {
        let n = self.members.len() / 32;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.members[32 * mid..32 * mid + 32].cmp(&key[..]) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    pub fn len(&self) -> usize {
        self.members.len() / 32
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Write a signed membership list (members sorted and deduplicated here) into `out`.
pub fn sign_fleet(
    authority: &SigningKey,
    version: u32,
    members: &mut [[u8; 32]],
    out: &mut [u8],
) -> Option<usize> {
    members.sort_unstable();
    let mut n = 0;
    for i in 0..members.len() {
        if i == 0 || members[i] != members[n - 1] {
            members[n] = members[i];
            n += 1;
        }
    }
    let total = HEAD + 32 * n + 64;
    let o = out.get_mut(..total)?;
    o[..4].copy_from_slice(MAGIC);
    o[4..8].copy_from_slice(&version.to_le_bytes());
    o[8..10].copy_from_slice(&(n as u16).to_le_bytes());
    for (i, m) in members[..n].iter().enumerate() {
        o[HEAD + 32 * i..HEAD + 32 * i + 32].copy_from_slice(m);
    }
    let sig = authority.sign(&digest(&o[..HEAD + 32 * n]));
    o[HEAD + 32 * n..].copy_from_slice(&sig.to_bytes());
    Some(total)
}

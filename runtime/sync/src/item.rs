//! Signed items: what sync moves. Every item names its origin (an Ed25519 public key) and
//! carries the origin's signature; peers verify both (and fleet membership) before storing.
//!
//! Layout (little-endian): magic `0xC5`, version `1`, kind, `0`, origin key (32), body
//! length `u32`, body, signature (64) over `"cairn-item/1"` ‖ all preceding bytes.
//! Kinds: 1 memory record (body = the cairn-memory record encoding; its `origin` field must
//! be the first 8 bytes of the origin key, its content id is the item id); 2 tombstone
//! (target id, HLC); 3 metadata update (target id, importance, HLC); 4 adapter contribution
//! (base model hash, adapter key, n, dim, then dim finite f32 of Σ n·Δ); 5 authority statement
//! (action, subject key, HLC), signed by the fleet authority: revoke a key, or designate a
//! key that may delete any record.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2_10::{Digest, Sha256};

use crate::recon::Id;
use crate::Reject;

pub const MAGIC: u8 = 0xC5;
pub const VERSION: u8 = 1;
pub const HEAD: usize = 40;
pub const SIG: usize = 64;
/// Largest item accepted (a record with a 4 KB payload and a 4096-d embedding fits).
pub const MAX_ITEM: usize = 8 * 1024 + HEAD + SIG;
const DOMAIN: &[u8] = b"cairn-item/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Record = 1,
    Tombstone = 2,
    Meta = 3,
    Contribution = 4,
    /// A statement of the fleet authority (its origin must be the authority's key).
    Authority = 5,
}

/// What an authority statement says about its subject key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Action {
    /// The key is compromised: its items and sessions are refused, its held items dropped.
    Revoke = 1,
    /// The key may delete any record (not only its own).
    Deleter = 2,
}

impl Action {
    fn from_u8(v: u8) -> Option<Action> {
        Some(match v {
            1 => Action::Revoke,
            2 => Action::Deleter,
            _ => return None,
        })
    }
}

/// A parsed authority statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statement {
    pub action: Action,
    pub subject: [u8; 32],
    pub hlc: u64,
}

/// Body length of an authority statement: action, subject key, HLC.
pub const STATEMENT: usize = 1 + 32 + 8;

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Record,
            2 => Kind::Tombstone,
            3 => Kind::Meta,
            4 => Kind::Contribution,
            5 => Kind::Authority,
            _ => return None,
        })
    }
}

/// A parsed, signature-checked view of an item's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub id: Id,
    pub kind: Kind,
    pub origin: [u8; 32],
    pub body: &'a [u8],
    pub bytes: &'a [u8],
}

/// A contribution's fixed fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContributionHead {
    pub base: [u8; 32],
    pub key: [u8; 16],
    pub n: u32,
    pub dim: u32,
}

pub const CONTRIB_HEAD: usize = 32 + 16 + 4 + 4;

fn le_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le_u64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl<'a> Item<'a> {
    /// Parse and verify the signature (membership is checked by the caller, who knows the
    /// fleet). Checks the record's content id and origin field for record items.
    pub fn verify(bytes: &'a [u8]) -> Result<Item<'a>, Reject> {
        Self::parse(bytes, true)
    }

    /// Parse bytes that [`Item::verify`] accepted before (a replica's own store): every
    /// check but the signature, which costs a curve point decompression and a scalar
    /// multiplication (milliseconds on a microcontroller) and cannot have changed. Never
    /// for bytes from outside.
    #[cfg(feature = "alloc")]
    pub(crate) fn held(bytes: &'a [u8]) -> Option<Item<'a>> {
        Self::parse(bytes, false).ok()
    }

    fn parse(bytes: &'a [u8], check_signature: bool) -> Result<Item<'a>, Reject> {
        if bytes.len() < HEAD + SIG || bytes.len() > MAX_ITEM {
            return Err(Reject::Malformed);
        }
        if bytes[0] != MAGIC || bytes[1] != VERSION || bytes[3] != 0 {
            return Err(Reject::Malformed);
        }
        let kind = Kind::from_u8(bytes[2]).ok_or(Reject::Malformed)?;
        // Untrusted lengths are compared with what the bytes hold, never added to (32-bit).
        let len = le_u32(bytes, 36) as usize;
        if len != bytes.len() - HEAD - SIG {
            return Err(Reject::Malformed);
        }
        let mut origin = [0u8; 32];
        origin.copy_from_slice(&bytes[4..36]);
        let body = &bytes[HEAD..HEAD + len];
        let signed = &bytes[..HEAD + len];
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[HEAD + len..]);
        if check_signature {
            let vk = VerifyingKey::from_bytes(&origin).map_err(|_| Reject::BadSignature)?;
            // The signature is over SHA-256(DOMAIN ‖ signed bytes): no buffer to concatenate.
            vk.verify_strict(&signing_digest(signed), &Signature::from_bytes(&sig))
                .map_err(|_| Reject::BadSignature)?;
        }
        let id = match kind {
            Kind::Record => {
                let (stored, rec) =
                    cairn_memory::Record::decode(body).map_err(|_| Reject::Malformed)?;
                if rec.id() != stored || rec.origin != u64::from_le_bytes(take8(&origin)) {
                    return Err(Reject::Forged);
                }
                stored
            }
            Kind::Tombstone if len == 16 + 8 => content_id(signed),
            Kind::Meta if len == 16 + 1 + 8 => content_id(signed),
            Kind::Authority if len == STATEMENT && Action::from_u8(body[0]).is_some() => {
                content_id(signed)
            }
            Kind::Contribution if len >= CONTRIB_HEAD => {
                let dim = le_u32(body, 52) as usize;
                let values = len - CONTRIB_HEAD;
                if values / 4 != dim || !values.is_multiple_of(4) {
                    return Err(Reject::Malformed);
                }
                // A NaN or infinity would poison every merged adapter that takes it.
                if body[CONTRIB_HEAD..]
                    .chunks_exact(4)
                    .any(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
                {
                    return Err(Reject::Malformed);
                }
                content_id(signed)
            }
            _ => return Err(Reject::Malformed),
        };
        Ok(Item {
            id,
            kind,
            origin,
            body,
            bytes,
        })
    }

    /// Target id and HLC of a tombstone or metadata update.
    pub fn target(&self) -> Option<(Id, u64)> {
        match self.kind {
            Kind::Tombstone => Some((take16(self.body), le_u64(self.body, 16))),
            Kind::Meta => Some((take16(self.body), le_u64(self.body, 17))),
            _ => None,
        }
    }

    /// The new importance of a metadata update.
    pub fn importance(&self) -> Option<u8> {
        (self.kind == Kind::Meta).then(|| self.body[16])
    }

    /// The statement of an authority item (whose origin the caller compares with the
    /// fleet authority's key).
    pub fn statement(&self) -> Option<Statement> {
        if self.kind != Kind::Authority {
            return None;
        }
        let mut subject = [0u8; 32];
        subject.copy_from_slice(self.body.get(1..33)?);
        Some(Statement {
            action: Action::from_u8(*self.body.first()?)?,
            subject,
            hlc: le_u64(self.body.get(..STATEMENT)?, 33),
        })
    }

    pub fn contribution(&self) -> Option<ContributionHead> {
        (self.kind == Kind::Contribution).then(|| {
            let mut base = [0u8; 32];
            base.copy_from_slice(&self.body[..32]);
            ContributionHead {
                base,
                key: take16(&self.body[32..48]),
                n: le_u32(self.body, 48),
                dim: le_u32(self.body, 52),
            }
        })
    }

    /// The f32 values of a contribution (Σ n·Δ).
    pub fn contribution_values(&self) -> impl Iterator<Item = f32> + '_ {
        self.body[CONTRIB_HEAD.min(self.body.len())..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
}

fn take16(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    a
}
fn take8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

fn signing_digest(signed: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(signed);
    h.finalize().into()
}

fn content_id(signed: &[u8]) -> Id {
    let d = Sha256::digest(signed);
    take16(&d)
}

/// The 8-byte node id used in memory records for an origin key.
pub fn node_id(origin: &[u8; 32]) -> u64 {
    u64::from_le_bytes(take8(origin))
}

/// Write a signed item of `kind` with `body` into `out`; returns its length.
pub fn sign_into(
    key: &SigningKey,
    kind: Kind,
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, Reject> {
    let n = HEAD + body.len() + SIG;
    if n > MAX_ITEM || out.len() < n {
        return Err(Reject::TooLarge);
    }
    out[0] = MAGIC;
    out[1] = VERSION;
    out[2] = kind as u8;
    out[3] = 0;
    out[4..36].copy_from_slice(key.verifying_key().as_bytes());
    out[36..40].copy_from_slice(&(body.len() as u32).to_le_bytes());
    out[HEAD..HEAD + body.len()].copy_from_slice(body);
    let sig = key.sign(&signing_digest(&out[..HEAD + body.len()]));
    out[HEAD + body.len()..n].copy_from_slice(&sig.to_bytes());
    Ok(n)
}

/// Bodies of the small item kinds.
pub fn tombstone_body(target: &Id, hlc: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(target);
    b[16..].copy_from_slice(&hlc.to_le_bytes());
    b
}
pub fn meta_body(target: &Id, importance: u8, hlc: u64) -> [u8; 25] {
    let mut b = [0u8; 25];
    b[..16].copy_from_slice(target);
    b[16] = importance;
    b[17..].copy_from_slice(&hlc.to_le_bytes());
    b
}
/// An authority statement's body.
pub fn statement_body(s: &Statement) -> [u8; STATEMENT] {
    let mut b = [0u8; STATEMENT];
    b[0] = s.action as u8;
    b[1..33].copy_from_slice(&s.subject);
    b[33..].copy_from_slice(&s.hlc.to_le_bytes());
    b
}
/// Contribution body into `out`: head then the values.
pub fn contribution_body(h: &ContributionHead, values: &[f32], out: &mut [u8]) -> Option<usize> {
    let n = CONTRIB_HEAD + 4 * values.len();
    let o = out.get_mut(..n)?;
    o[..32].copy_from_slice(&h.base);
    o[32..48].copy_from_slice(&h.key);
    o[48..52].copy_from_slice(&h.n.to_le_bytes());
    o[52..56].copy_from_slice(&(values.len() as u32).to_le_bytes());
    for (c, v) in o[CONTRIB_HEAD..].chunks_exact_mut(4).zip(values) {
        c.copy_from_slice(&v.to_le_bytes());
    }
    Some(n)
}

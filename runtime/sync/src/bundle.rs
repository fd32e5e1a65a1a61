//! Sneakernet bundles: the items a peer probably lacks (everything since a mark) in one
//! file, imported with no round trip. Every item carries its origin's signature, so a
//! truncated bundle still imports every whole item it holds; the trailer signs the whole
//! bundle (sender, count, SHA-256 of the bytes) so a complete one is also authenticated as
//! a unit. Import is idempotent and resumable from the byte offset it reports.
//!
//! Layout: `"CBDL"`, version `1`, sender key (32), mark `u64`, then entries (`u32` length,
//! item bytes), then `"CEND"`, count `u32`, SHA-256 of everything before `"CEND"` (32),
//! sender's signature over that hash (64).

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2_10::{Digest, Sha256};

use crate::fleet::Fleet;
use crate::item::{Item, Kind, MAX_ITEM};
#[cfg(feature = "alloc")]
use crate::replica::Replica;
use crate::{Reject, Store};

const HEAD: usize = 4 + 1 + 32 + 8;
const TRAILER: usize = 4 + 4 + 32 + 64;

/// Writes a bundle to any byte sink without allocating (a file, a flash region, a
/// semihosting stream): `start`, one `item` per signed item, then `finish`.
pub struct BundleWriter {
    hash: Sha256,
    count: u32,
}

impl BundleWriter {
    /// Write the header.
    pub fn start(sender: &SigningKey, mark: u64, out: &mut impl FnMut(&[u8])) -> BundleWriter {
        let mut w = BundleWriter {
            hash: Sha256::new(),
            count: 0,
        };
        w.put(b"CBDL", out);
        w.put(&[1], out);
        w.put(sender.verifying_key().as_bytes(), out);
        w.put(&mark.to_le_bytes(), out);
        w
    }

    fn put(&mut self, b: &[u8], out: &mut impl FnMut(&[u8])) {
        self.hash.update(b);
        out(b);
    }

    /// Append one signed item's bytes.
    pub fn item(&mut self, bytes: &[u8], out: &mut impl FnMut(&[u8])) {
        self.put(&(bytes.len() as u32).to_le_bytes(), out);
        self.put(bytes, out);
        self.count += 1;
    }

    /// Append one signed item of `len` bytes read piece by piece: `read(offset, buf)` fills
    /// `buf` with the item's bytes from `offset` and returns how many it copied (no buffer
    /// of an item's size is needed: an item set on flash streams it). `false` if a read came
    /// short: the bytes written so far do not make a valid bundle, and the caller must fail
    /// the export.
    pub fn item_streamed(
        &mut self,
        len: usize,
        read: &mut dyn FnMut(usize, &mut [u8]) -> usize,
        out: &mut impl FnMut(&[u8]),
    ) -> bool {
        let Ok(len32) = u32::try_from(len) else {
            return false;
        };
        self.put(&len32.to_le_bytes(), out);
        let mut buf = [0u8; 128];
        let mut done = 0;
        while done < len {
            let n = buf.len().min(len - done);
            if read(done, &mut buf[..n]) != n {
                return false;
            }
            self.put(&buf[..n], out);
            done += n;
        }
        self.count += 1;
        true
    }

    /// Write the trailer: count, hash, the sender's signature.
    pub fn finish(self, sender: &SigningKey, out: &mut impl FnMut(&[u8])) {
        let digest: [u8; 32] = self.hash.finalize().into();
        out(b"CEND");
        out(&self.count.to_le_bytes());
        out(&digest);
        out(&sender.sign(&digest).to_bytes());
    }
}

/// Write every item of `r` that arrived at or after `mark`, most valuable first.
#[cfg(feature = "alloc")]
pub fn export(r: &Replica, sender: &SigningKey, mark: u64) -> Vec<u8> {
    let mut items: Vec<(u64, &[u8])> = r
        .items_since(mark)
        .map(|(id, b)| (r.value(id), b))
        .collect();
    items.sort_by_key(|x| core::cmp::Reverse(x.0));
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let mut w = BundleWriter::start(sender, mark, &mut sink);
    for (_, b) in &items {
        w.item(b, &mut sink);
    }
    w.finish(sender, &mut sink);
    out
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub stored: u32,
    pub duplicates: u32,
    /// Refusals by reason (`Reject as usize`).
    pub rejected: [u32; Reject::COUNT],
    /// The trailer was present and its signature by a fleet member verified.
    pub complete: bool,
    /// Byte offset to resume from (the end of the last whole entry).
    pub resume_at: usize,
}

/// Import `bytes` (possibly truncated) from `from` (0, or a previous `resume_at`).
pub fn import<S: Store>(
    bytes: &[u8],
    from: usize,
    store: &mut S,
    fleet: &Fleet<'_>,
    base_model: &[u8; 32],
) -> Result<ImportReport, Reject> {
    if bytes.len() < HEAD || &bytes[..4] != b"CBDL" || bytes[4] != 1 {
        return Err(Reject::Malformed);
    }
    let mut sender = [0u8; 32];
    sender.copy_from_slice(&bytes[5..37]);
    if !fleet.contains(&sender) {
        return Err(Reject::NotMember);
    }
    if store.revoked(&sender) {
        return Err(Reject::Revoked);
    }
    let mut rep = ImportReport::default();
    let mut pos = from.max(HEAD);
    let mut count = 0u32;
    // Entries before `from` were applied earlier; count them for the trailer check. Their
    // lengths are untrusted: an import stops before an entry over `MAX_ITEM`, so one before
    // `from` is not a bundle this import wrote (and `p + 4 + len` could wrap on 32 bits).
    let mut p = HEAD;
    while p < pos {
        let Some(field) = bytes.get(p..).and_then(|rest| rest.get(..4)) else {
            break;
        };
        if field == b"CEND" {
            break;
        }
        let len = u32::from_le_bytes([field[0], field[1], field[2], field[3]]) as usize;
        if len > MAX_ITEM {
            return Err(Reject::Malformed);
        }
        p = p.checked_add(4 + len).ok_or(Reject::Malformed)?;
        count += 1;
    }
    if p != pos {
        return Err(Reject::Malformed);
    }
    // From here `pos` is at most `bytes.len() + 4 + MAX_ITEM`: no sum below can wrap.
    loop {
        if pos + 4 > bytes.len() {
            break;
        }
        if &bytes[pos..pos + 4] == b"CEND" {
            if bytes.len() == pos + TRAILER {
                let t = &bytes[pos + 4..];
                let n = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                let digest: [u8; 32] = Sha256::digest(&bytes[..pos]).into();
                let mut sig = [0u8; 64];
                sig.copy_from_slice(&t[36..100]);
                let ok = n == count
                    && t[4..36] == digest
                    && VerifyingKey::from_bytes(&sender).is_ok_and(|vk| {
                        vk.verify_strict(&digest, &Signature::from_bytes(&sig))
                            .is_ok()
                    });
                if ok {
                    rep.complete = true;
                } else {
                    rep.rejected[Reject::BadSignature as usize] += 1;
                }
            }
            rep.resume_at = pos;
            return Ok(rep);
        }
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        if len > MAX_ITEM {
            rep.rejected[Reject::TooLarge as usize] += 1;
            break;
        }
        let Some(b) = bytes.get(pos + 4..pos + 4 + len) else {
            break; // truncated: resume here next time
        };
        count += 1;
        match Item::verify(b).and_then(|item| admit(&item, fleet, base_model).map(|_| item)) {
            Ok(item) => match store.insert(&item) {
                Ok(true) => rep.stored += 1,
                Ok(false) => rep.duplicates += 1,
                Err(e) => rep.rejected[e as usize] += 1,
            },
            Err(e) => rep.rejected[e as usize] += 1,
        }
        pos += 4 + len;
    }
    rep.resume_at = pos;
    Ok(rep)
}

/// The fleet's and the base model's checks on a verified item (the store applies its own).
fn admit(item: &Item<'_>, fleet: &Fleet<'_>, base_model: &[u8; 32]) -> Result<(), Reject> {
    fleet.admits(item)?;
    if item.kind == Kind::Contribution && item.contribution().map(|c| c.base) != Some(*base_model) {
        return Err(Reject::WrongBaseModel);
    }
    Ok(())
}

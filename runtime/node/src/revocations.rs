//! The fleet authority's statements on a node that keeps no items (firmware without an
//! allocator): [`Revocations`] is an [`Items`] set that, like [`crate::apply::ApplyOnly`],
//! keeps and relays no item, but holds the subjects of the authority's statements (revoked
//! keys, designated deleters) in a fixed array and on a small flash region of their own.
//!
//! - **What it refuses.** Every item, session and bundle whose origin or sender is a revoked
//!   key (`Reject::Revoked`, through [`Store::admits`] and [`Store::revoked`]: the
//!   [`crate::Applier`] asks before memory is touched, `bundle::import` and the session ask
//!   before the first item). A statement not signed by the authority is refused
//!   (`Reject::NotAuthority`; the fleet checks this first, the set again for items put in
//!   by hand).
//! - **Order within one bundle or session.** A revoked key's record that arrives *before*
//!   the revocation is stored, then deleted from memory when the revocation is applied
//!   ([`crate::Applier`] drops every record of the subject); one that arrives *after* is
//!   refused. Either order leaves no record of the key in memory. The revocation is written
//!   to flash only after those deletes: a power cut between them leaves the statement
//!   unacknowledged, and the sender offers it again at the next contact.
//! - **Why a flash region of its own.** The memory store's log holds records of one
//!   embedding width and the lineage log checkpoints, neither of which can carry a key
//!   without a format change; and statements cannot be re-learned from what arrives, since
//!   a bundle or session carries only items the sender thinks new (never the old
//!   statements), and a revoked key's own bundle would not carry its revocation. So the set
//!   persists each statement when it takes it, in a region of `(N + 1)` slots of 40 bytes
//!   (action, subject key, CRC-32) after an 8-byte header: 208 bytes for `N = 4`. A slot is
//!   written once and never erased; a torn or damaged slot fails its CRC and is skipped at
//!   [`Revocations::open`] (it still counts as used).
//! - **Full: fails closed.** The slot after the last the array can hold is where the first
//!   statement that does not fit is written; with no free slot left the set is *closed*:
//!   every key counts as revoked, every item but the authority's statements is refused
//!   with `Reject::StoreFull`, and a statement not already held is refused with
//!   `Reject::StoreFull` (after its deletes are applied). Closed survives a restart (no
//!   free slot is found again). A bigger `N`, or a region reformatted by the operator,
//!   reopens the node.
//!
//! Its RAM: `N` subjects of 33 bytes and a few counters; no allocation.

use cairn_memory::StoreError;
use cairn_sync::item::{Action, Item, Kind};
use cairn_sync::{Id, Reject, Store};
use embedded_storage::nor_flash::NorFlash;

use crate::apply::Items;

const MAGIC: &[u8; 4] = b"CRVK";
const VERSION: u8 = 1;
const HEADER: usize = 8;
/// A slot: action (1), zero (3), subject key (32), CRC-32 of those 36 bytes (4).
const SLOT: usize = 40;
/// Largest flash write unit supported (slots and header are padded to it).
const MAX_UNIT: usize = 64;

/// The authority's statements on a node that keeps no items, on flash `F`, at most `N`
/// subjects held (see the module note).
pub struct Revocations<F: NorFlash, const N: usize> {
    flash: F,
    authority: [u8; 32],
    subjects: [[u8; 32]; N],
    actions: [Action; N],
    held: usize,
    /// Slots written or damaged (the next write goes here); `N + 1` means closed.
    used_slots: usize,
}

/// `n` rounded up to the flash's write and read units.
/// `n` rounded up to `F`'s write and read units (the flash sets' slot and header sizes).
pub(crate) fn padded<F: NorFlash>(n: usize) -> usize {
    let unit = F::WRITE_SIZE.max(F::READ_SIZE).max(1);
    n.div_ceil(unit) * unit
}

fn header_bytes() -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h
}

fn encode_slot(action: Action, subject: &[u8; 32]) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[0] = action as u8;
    s[4..36].copy_from_slice(subject);
    let crc = cairn_core::crc32::crc32(&s[..36]);
    s[36..].copy_from_slice(&crc.to_le_bytes());
    s
}

/// A slot's statement, or `None` when its bytes are torn or damaged.
fn decode_slot(s: &[u8]) -> Option<(Action, [u8; 32])> {
    let crc = u32::from_le_bytes(s.get(36..40)?.try_into().ok()?);
    if crc != cairn_core::crc32::crc32(s.get(..36)?) || s[1..4] != [0; 3] {
        return None;
    }
    let action = match s[0] {
        1 => Action::Revoke,
        2 => Action::Deleter,
        _ => return None,
    };
    Some((action, s[4..36].try_into().ok()?))
}

impl<F: NorFlash, const N: usize> Revocations<F, N> {
    /// Bytes of flash the set needs: the header and `N + 1` slots, each padded to `F`'s
    /// write unit.
    pub fn flash_bytes() -> usize {
        padded::<F>(HEADER) + (N + 1) * padded::<F>(SLOT)
    }

    /// Open the set on `flash` for the fleet whose authority key is `authority`, reloading
    /// every statement its slots hold. A region without this set's header (new, or its
    /// header damaged) is erased and formatted: its statements are then lost, and learned
    /// again as the authority's statements arrive. `StoreError::Geometry`: the region is
    /// smaller than [`Revocations::flash_bytes`] or its write unit is over 64 bytes;
    /// `StoreError::Flash`: the storage failed.
    pub fn open(flash: F, authority: &[u8; 32]) -> Result<Self, StoreError> {
        if N == 0 || padded::<F>(SLOT) > MAX_UNIT || flash.capacity() < Self::flash_bytes() {
            return Err(StoreError::Geometry);
        }
        let mut set = Revocations {
            flash,
            authority: *authority,
            subjects: [[0; 32]; N],
            actions: [Action::Revoke; N],
            held: 0,
            used_slots: 0,
        };
        let mut unit = [0u8; MAX_UNIT];
        let head = padded::<F>(HEADER);
        set.flash
            .read(0, &mut unit[..head])
            .map_err(|_| StoreError::Flash)?;
        if unit[..HEADER] != header_bytes() {
            set.format()?;
            return Ok(set);
        }
        for slot in 0..=N {
            let offset = set.slot_offset(slot);
            let bytes = &mut unit[..padded::<F>(SLOT)];
            set.flash
                .read(offset, bytes)
                .map_err(|_| StoreError::Flash)?;
            if bytes.iter().all(|&b| b == 0xFF) {
                continue;
            }
            // Slots are written in order: anything after a free one is damage (still used).
            set.used_slots = slot + 1;
            if let Some((action, subject)) = decode_slot(bytes) {
                if !set.holds(action, &subject) && set.held < N {
                    set.actions[set.held] = action;
                    set.subjects[set.held] = subject;
                    set.held += 1;
                }
            }
        }
        Ok(set)
    }

    fn format(&mut self) -> Result<(), StoreError> {
        let erase = F::ERASE_SIZE.max(1);
        let end = Self::flash_bytes().div_ceil(erase) * erase;
        let end =
            u32::try_from(end.min(self.flash.capacity())).map_err(|_| StoreError::Geometry)?;
        self.flash.erase(0, end).map_err(|_| StoreError::Flash)?;
        let mut unit = [0xFFu8; MAX_UNIT];
        unit[..HEADER].copy_from_slice(&header_bytes());
        self.flash
            .write(0, &unit[..padded::<F>(HEADER)])
            .map_err(|_| StoreError::Flash)
    }

    fn slot_offset(&self, slot: usize) -> u32 {
        // Bounded by `flash_bytes`, which `open` compared with the capacity.
        (padded::<F>(HEADER) + slot * padded::<F>(SLOT)) as u32
    }

    fn holds(&self, action: Action, subject: &[u8; 32]) -> bool {
        let n = self.held;
        self.actions[..n]
            .iter()
            .zip(&self.subjects[..n])
            .any(|(a, s)| *a == action && s == subject)
    }

    /// No slot is free: every key counts as revoked (see the module note).
    pub fn is_closed(&self) -> bool {
        self.used_slots > N
    }

    /// Statements held (at most `N`).
    pub fn len(&self) -> usize {
        self.held
    }
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// The fleet authority whose statements the set takes.
    pub fn authority(&self) -> &[u8; 32] {
        &self.authority
    }

    pub fn into_flash(self) -> F {
        self.flash
    }

    /// The statement of an authority item, checked: signed by the authority, not about
    /// its own key.
    fn statement_of(&self, item: &Item<'_>) -> Result<(Action, [u8; 32]), Reject> {
        if item.origin != self.authority {
            return Err(Reject::NotAuthority);
        }
        let st = item.statement().ok_or(Reject::Malformed)?;
        if st.subject == item.origin {
            return Err(Reject::Malformed);
        }
        Ok((st.action, st.subject))
    }

    /// Write a statement into the next slot; `Ok(true)` if the array holds it, `Ok(false)`
    /// if it went into the last slot (the set is now closed).
    fn persist(&mut self, action: Action, subject: &[u8; 32]) -> Result<bool, Reject> {
        if self.is_closed() {
            return Err(Reject::StoreFull);
        }
        let slot = self.used_slots;
        // Used from now on, whether the write completes or not (a torn slot is skipped).
        self.used_slots += 1;
        let mut unit = [0xFFu8; MAX_UNIT];
        unit[..SLOT].copy_from_slice(&encode_slot(action, subject));
        let offset = self.slot_offset(slot);
        self.flash
            .write(offset, &unit[..padded::<F>(SLOT)])
            .map_err(|_| Reject::StoreFull)?;
        if self.held == N {
            return Ok(false);
        }
        self.actions[self.held] = action;
        self.subjects[self.held] = *subject;
        self.held += 1;
        Ok(true)
    }
}

impl<F: NorFlash, const N: usize> Store for Revocations<F, N> {
    fn ids(&self) -> &[Id] {
        &[]
    }
    fn item_len(&self, _: &Id) -> Option<usize> {
        None
    }
    fn read(&self, _: &Id, _: usize, _: &mut [u8]) -> usize {
        0
    }
    fn value(&self, _: &Id) -> u64 {
        0
    }
    fn insert(&mut self, item: &Item<'_>) -> Result<bool, Reject> {
        if !self.admits(item)? {
            return Ok(false);
        }
        if item.kind != Kind::Authority {
            return Ok(true);
        }
        let (action, subject) = self.statement_of(item)?;
        if self.persist(action, &subject)? {
            Ok(true)
        } else {
            Err(Reject::StoreFull)
        }
    }
    fn admits(&self, item: &Item<'_>) -> Result<bool, Reject> {
        if item.kind == Kind::Authority {
            // New statements are admitted even when closed, so the applier still drops
            // the subject's records before `insert` refuses to keep the statement.
            let (action, subject) = self.statement_of(item)?;
            return Ok(!self.holds(action, &subject));
        }
        if self.is_closed() {
            return Err(Reject::StoreFull);
        }
        if self.holds(Action::Revoke, &item.origin) {
            return Err(Reject::Revoked);
        }
        Ok(true)
    }
    fn revoked(&self, key: &[u8; 32]) -> bool {
        self.is_closed() || self.holds(Action::Revoke, key)
    }
}

impl<F: NorFlash, const N: usize> Items for Revocations<F, N> {
    fn mark(&self) -> u64 {
        0
    }
    fn for_each_since(&self, _: u64, _: &mut dyn FnMut(&Id, &[u8])) {}
    fn is_deleter(&self, key: &[u8; 32]) -> bool {
        !self.is_closed() && self.holds(Action::Deleter, key) && !self.holds(Action::Revoke, key)
    }
}

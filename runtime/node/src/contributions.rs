//! Adapter contributions on a node without an allocator: [`Contributions`] is an
//! [`Items`] set that keeps up to `N` signed contribution items (each at most `MAX` bytes)
//! in slots on a flash region of their own, and hands every other item to an inner set (a
//! [`crate::Revocations`] on the firmware). With it a device merges the fleet's adapters
//! like a host node: [`crate::Node::apply_with`] sums the held contributions (the same
//! arithmetic, the same id order, so the same bits as any node holding the same set) and
//! the gate judges the merge before it is promoted.
//!
//! - **What it keeps.** Contributions only; records go to memory (the applier) and are not
//!   kept here, authority statements go to the inner set. It lists and relays what it
//!   keeps: [`Store::ids`] and [`Items::for_each_since`] are its contributions, so a
//!   session or a bundle carries them on to the next peer.
//! - **The host's rules.** The same as the in-memory replica's: a grow-only set keyed by
//!   content id; at most `max_per_origin` contributions per origin and adapter key
//!   (`Reject::Capped`, like the replica's policy: give the fleet's value); a revoked
//!   origin's contributions are refused (the inner set's verdict) and those held are dropped
//!   when the revocation is taken.
//! - **Full: refused, not lost.** A contribution that finds no free slot is refused with
//!   `Reject::StoreFull` and one over `MAX` bytes with `Reject::TooLarge`: neither is
//!   acknowledged, so the sender offers it again. Slots are written once and never erased;
//!   a dropped contribution's slot stays used. A bigger `N`, or a region reformatted by the
//!   operator, makes room.
//! - **Power cuts.** A slot is its length and the CRC-32 of the item, then the item,
//!   written in that order: a torn slot fails its CRC at [`Contributions::open`] and is
//!   skipped (it still counts as used), and its item was never acknowledged. Every kept
//!   item is verified again at open (signature, kind) and kept only if the reopened inner
//!   set does not hold its origin revoked: a revocation persisted before a power cut drops
//!   the contributions it covers at the next start, with nothing to rewrite.
//!
//! Its RAM: an index of 24 bytes per slot (origin and adapter keys are read from flash when
//! a cap or a revocation is checked). The reload at open verifies each item in a buffer the
//! caller lends; [`Items::for_each_since`] (a bundle of everything since a mark) reads each
//! into a `MAX`-byte buffer on the stack, while [`crate::Node::export_own`] streams them.

use core::cell::RefCell;

use cairn_memory::StoreError;
use cairn_sync::item::{Item, Kind, HEAD};
use cairn_sync::{Id, Reject, Store};
use embedded_storage::nor_flash::NorFlash;

use crate::apply::Items;
use crate::revocations::padded;

const MAGIC: &[u8; 4] = b"CCTB";
const VERSION: u8 = 1;
/// Magic (4), version (1), zero (3), slot payload size `MAX` (4).
const HEADER: usize = 12;
/// A slot's head: the item's length (4), CRC-32 of the item (4).
const SLOT_HEAD: usize = 8;
/// Largest flash write or read unit supported.
const MAX_UNIT: usize = 64;

/// Where a held contribution is (its origin key and adapter key are read from flash when
/// needed: the index stays small, and a device's node is moved by value as it is built).
#[derive(Clone, Copy)]
struct Entry {
    slot: u16,
    len: u16,
    arrival: u32,
}

const EMPTY: Entry = Entry {
    slot: 0,
    len: 0,
    arrival: 0,
};

/// Offsets in a contribution item: its origin key, and its adapter key (in the body,
/// after the base model hash).
const ORIGIN: core::ops::Range<usize> = 4..36;
const ADAPTER_KEY: core::ops::Range<usize> = HEAD + 32..HEAD + 48;

/// Up to `N` contributions of at most `MAX` bytes on flash `F`, other items to `S` (see
/// the module note).
pub struct Contributions<F: NorFlash, S: Items, const N: usize, const MAX: usize> {
    /// In a cell: [`Store::read`] takes `&self`, a flash read `&mut` (nothing else
    /// borrows it while a read runs).
    flash: RefCell<F>,
    inner: S,
    /// Held ids, ascending.
    ids: [Id; N],
    /// Where each id's item is (same order).
    entries: [Entry; N],
    held: usize,
    /// Slots written or damaged (the next write goes into this one).
    used_slots: usize,
    max_per_origin: u32,
    next_arrival: u32,
}

/// What [`Contributions::open`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reopened {
    /// Contributions held after the reload.
    pub held: usize,
    /// Slots whose bytes fail their CRC or signature (a torn write, damaged storage).
    pub damaged: usize,
    /// Verified contributions dropped because their origin is revoked.
    pub revoked: usize,
}

/// Read `out.len()` bytes at `offset` (any alignment) through an aligned bounce buffer.
fn read_at<F: NorFlash>(flash: &mut F, offset: usize, out: &mut [u8]) -> Result<(), StoreError> {
    let unit = F::READ_SIZE.max(1);
    if unit == 1 {
        let at = u32::try_from(offset).map_err(|_| StoreError::Geometry)?;
        return flash.read(at, out).map_err(|_| StoreError::Flash);
    }
    let mut bounce = [0u8; MAX_UNIT];
    let mut done = 0;
    while done < out.len() {
        let pos = offset + done;
        let start = pos - pos % unit;
        let at = u32::try_from(start).map_err(|_| StoreError::Geometry)?;
        flash
            .read(at, &mut bounce[..unit])
            .map_err(|_| StoreError::Flash)?;
        let skip = pos - start;
        let n = (unit - skip).min(out.len() - done);
        out[done..done + n].copy_from_slice(&bounce[skip..skip + n]);
        done += n;
    }
    Ok(())
}

impl<F: NorFlash, S: Items, const N: usize, const MAX: usize> Contributions<F, S, N, MAX> {
    /// Bytes of flash the set needs: the header and `N` slots of `MAX` bytes and their
    /// heads, each padded to `F`'s write unit.
    pub fn flash_bytes() -> usize {
        padded::<F>(HEADER) + N * Self::slot_stride()
    }

    fn slot_stride() -> usize {
        padded::<F>(SLOT_HEAD) + padded::<F>(MAX)
    }

    fn slot_offset(slot: usize) -> usize {
        padded::<F>(HEADER) + slot * Self::slot_stride()
    }

    fn header() -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[8..].copy_from_slice(&(MAX as u32).to_le_bytes());
        h
    }

    /// Open the set on `flash` over the inner set `inner` (opened first: its revocations
    /// decide which kept contributions still count), reloading and verifying every kept
    /// contribution in `scratch` (at least `MAX` bytes, lent by the caller: a device's
    /// stack has no room for it). A region without this set's header (new, damaged, or
    /// formatted for another `MAX`) is erased and formatted. `max_per_origin`: the fleet's
    /// cap per origin and adapter key. `StoreError::Geometry`: the region is smaller than
    /// [`Contributions::flash_bytes`], `scratch` shorter than `MAX`, `N` or `MAX` too large
    /// for the index, or the flash's units over 64 bytes; `StoreError::Flash`: the storage
    /// failed.
    pub fn open(
        mut flash: F,
        inner: S,
        max_per_origin: u32,
        scratch: &mut [u8],
    ) -> Result<(Self, Reopened), StoreError> {
        let unit = F::WRITE_SIZE.max(F::READ_SIZE).max(1);
        if N == 0
            || scratch.len() < MAX
            || N > u16::MAX as usize
            || MAX > u16::MAX as usize
            || unit > MAX_UNIT
            || flash.capacity() < Self::flash_bytes()
        {
            return Err(StoreError::Geometry);
        }
        let mut head = [0u8; HEADER];
        read_at(&mut flash, 0, &mut head)?;
        let mut set = Contributions {
            flash: RefCell::new(flash),
            inner,
            entries: [EMPTY; N],
            ids: [[0; 16]; N],
            held: 0,
            used_slots: 0,
            max_per_origin,
            next_arrival: 0,
        };
        let mut found = Reopened::default();
        if head != Self::header() {
            set.format()?;
            return Ok((set, found));
        }
        let buf = &mut scratch[..MAX];
        for slot in 0..N {
            let mut sh = [0u8; SLOT_HEAD];
            read_at(set.flash.get_mut(), Self::slot_offset(slot), &mut sh)?;
            if sh.iter().all(|&b| b == 0xFF) {
                continue;
            }
            // Slots are written in order: anything after a free one is damage (still used).
            set.used_slots = slot + 1;
            let len = u32::from_le_bytes([sh[0], sh[1], sh[2], sh[3]]) as usize;
            let crc = u32::from_le_bytes([sh[4], sh[5], sh[6], sh[7]]);
            let Some(bytes) = buf.get_mut(..len) else {
                found.damaged += 1;
                continue;
            };
            let at = Self::slot_offset(slot) + padded::<F>(SLOT_HEAD);
            read_at(set.flash.get_mut(), at, bytes)?;
            if cairn_core::crc32::crc32(bytes) != crc {
                found.damaged += 1;
                continue;
            }
            let Ok(item) = Item::verify(bytes) else {
                found.damaged += 1;
                continue;
            };
            let Some(h) = item.contribution() else {
                found.damaged += 1;
                continue;
            };
            if set.inner.revoked(&item.origin) {
                found.revoked += 1;
                continue;
            }
            if set.position(&item.id).is_ok()
                || set.count_of(&item.origin, &h.key) >= max_per_origin
            {
                continue;
            }
            set.index(item.id, slot, len);
        }
        found.held = set.held;
        Ok((set, found))
    }

    fn format(&mut self) -> Result<(), StoreError> {
        let erase = F::ERASE_SIZE.max(1);
        let end = Self::flash_bytes().div_ceil(erase) * erase;
        let flash = self.flash.get_mut();
        let end = u32::try_from(end.min(flash.capacity())).map_err(|_| StoreError::Geometry)?;
        flash.erase(0, end).map_err(|_| StoreError::Flash)?;
        let mut unit = [0xFFu8; MAX_UNIT];
        unit[..HEADER].copy_from_slice(&Self::header());
        flash
            .write(0, &unit[..padded::<F>(HEADER)])
            .map_err(|_| StoreError::Flash)
    }

    fn position(&self, id: &Id) -> Result<usize, usize> {
        self.ids[..self.held].binary_search(id)
    }

    /// `range` of held item `at` (an origin or adapter key), read from flash; `None` if the
    /// read fails.
    fn field<const K: usize>(&self, at: usize, range: core::ops::Range<usize>) -> Option<[u8; K]> {
        let mut out = [0u8; K];
        (self.read(&self.ids[at], range.start, &mut out) == K).then_some(out)
    }

    fn count_of(&self, origin: &[u8; 32], key: &[u8; 16]) -> u32 {
        (0..self.held)
            .filter(|&at| {
                self.field::<32>(at, ORIGIN).as_ref() == Some(origin)
                    && self.field::<16>(at, ADAPTER_KEY).as_ref() == Some(key)
            })
            .count() as u32
    }

    fn index(&mut self, id: Id, slot: usize, len: usize) {
        let Err(at) = self.position(&id) else {
            return;
        };
        let n = self.held;
        self.entries.copy_within(at..n, at + 1);
        self.ids.copy_within(at..n, at + 1);
        self.entries[at] = Entry {
            // Bounded by `open`'s checks of N and MAX.
            slot: slot as u16,
            len: len as u16,
            arrival: self.next_arrival,
        };
        self.ids[at] = id;
        self.next_arrival += 1;
        self.held += 1;
    }

    /// Drop every held contribution whose origin the inner set now holds revoked.
    fn drop_revoked(&mut self) {
        let mut keep = 0;
        for i in 0..self.held {
            // An origin that cannot be read is dropped too (fails closed).
            let origin = self.field::<32>(i, ORIGIN);
            if origin.is_some_and(|o| !self.inner.revoked(&o)) {
                self.entries[keep] = self.entries[i];
                self.ids[keep] = self.ids[i];
                keep += 1;
            }
        }
        self.held = keep;
    }

    /// Write `item` into the next slot: its head, then the item, each padded to the
    /// write unit.
    fn persist(&mut self, bytes: &[u8]) -> Result<usize, Reject> {
        let slot = self.used_slots;
        // Used from now on, whether the write completes or not (a torn slot is skipped).
        self.used_slots += 1;
        let base = Self::slot_offset(slot);
        let unit = F::WRITE_SIZE.max(1);
        let mut chunk = [0xFFu8; MAX_UNIT];
        let head_len = padded::<F>(SLOT_HEAD);
        // The head is written on its own first, so a torn item fails its CRC.
        chunk[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        chunk[4..8].copy_from_slice(&cairn_core::crc32::crc32(bytes).to_le_bytes());
        let write = |flash: &mut F, at: usize, b: &[u8]| {
            let at = u32::try_from(at).map_err(|_| Reject::StoreFull)?;
            flash.write(at, b).map_err(|_| Reject::StoreFull)
        };
        let flash = self.flash.get_mut();
        write(flash, base, &chunk[..head_len])?;
        // The item in chunks of whole write units; the last one padded with 0xFF.
        let step = (MAX_UNIT / unit) * unit;
        let mut done = 0;
        while done < bytes.len() {
            let n = step.min(bytes.len() - done);
            chunk[..n].copy_from_slice(&bytes[done..done + n]);
            let w = n.div_ceil(unit) * unit;
            chunk[n..w].fill(0xFF);
            write(flash, base + head_len + done, &chunk[..w])?;
            done += n;
        }
        Ok(slot)
    }

    /// Contributions held.
    pub fn len(&self) -> usize {
        self.held
    }
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }
    /// Slots free for new contributions.
    pub fn free_slots(&self) -> usize {
        N - self.used_slots
    }

    /// The set other items go to.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn into_parts(self) -> (F, S) {
        (self.flash.into_inner(), self.inner)
    }

    /// What a new contribution `item` would get: `Ok(())` when it can be kept.
    fn check_new(&self, item: &Item<'_>) -> Result<(), Reject> {
        let h = item.contribution().ok_or(Reject::Malformed)?;
        if self.count_of(&item.origin, &h.key) >= self.max_per_origin {
            return Err(Reject::Capped);
        }
        if item.bytes.len() > MAX {
            return Err(Reject::TooLarge);
        }
        if self.used_slots >= N {
            return Err(Reject::StoreFull);
        }
        Ok(())
    }
}

impl<F: NorFlash, S: Items, const N: usize, const MAX: usize> Store
    for Contributions<F, S, N, MAX>
{
    fn ids(&self) -> &[Id] {
        &self.ids[..self.held]
    }
    fn item_len(&self, id: &Id) -> Option<usize> {
        let at = self.position(id).ok()?;
        Some(self.entries[at].len as usize)
    }
    fn read(&self, id: &Id, offset: usize, out: &mut [u8]) -> usize {
        let Ok(at) = self.position(id) else {
            return 0;
        };
        let e = &self.entries[at];
        let len = e.len as usize;
        if offset >= len {
            return 0;
        }
        let n = out.len().min(len - offset);
        let from = Self::slot_offset(e.slot as usize) + padded::<F>(SLOT_HEAD) + offset;
        let Ok(mut flash) = self.flash.try_borrow_mut() else {
            return 0;
        };
        match read_at(&mut *flash, from, &mut out[..n]) {
            Ok(()) => n,
            Err(_) => 0,
        }
    }
    fn value(&self, id: &Id) -> u64 {
        // Newer first when a sender must choose.
        self.position(id)
            .map_or(0, |at| self.entries[at].arrival as u64)
    }
    fn insert(&mut self, item: &Item<'_>) -> Result<bool, Reject> {
        if item.kind != Kind::Contribution {
            let taken = self.inner.insert(item);
            if item.kind == Kind::Authority {
                // A revocation taken (or a set now closed) drops what it covers, even when
                // the inner set refuses to keep the statement.
                self.drop_revoked();
            }
            return taken;
        }
        if !self.admits(item)? {
            return Ok(false);
        }
        let slot = self.persist(item.bytes)?;
        self.index(item.id, slot, item.bytes.len());
        Ok(true)
    }
    fn admits(&self, item: &Item<'_>) -> Result<bool, Reject> {
        if item.kind != Kind::Contribution {
            return self.inner.admits(item);
        }
        if !self.inner.admits(item)? {
            return Ok(false);
        }
        if self.position(&item.id).is_ok() {
            return Ok(false);
        }
        self.check_new(item)?;
        Ok(true)
    }
    fn revoked(&self, key: &[u8; 32]) -> bool {
        self.inner.revoked(key)
    }
}

impl<F: NorFlash, S: Items, const N: usize, const MAX: usize> Items
    for Contributions<F, S, N, MAX>
{
    fn mark(&self) -> u64 {
        self.next_arrival as u64
    }
    fn for_each_since(&self, mark: u64, f: &mut dyn FnMut(&Id, &[u8])) {
        let mut buf = [0u8; MAX];
        for (id, e) in self.ids[..self.held].iter().zip(&self.entries) {
            if (e.arrival as u64) < mark {
                continue;
            }
            let len = e.len as usize;
            if self.read(id, 0, &mut buf[..len]) == len {
                f(id, &buf[..len]);
            }
        }
    }
    fn for_each_contribution(&self, key: &[u8; 16], f: &mut dyn FnMut(&Id)) {
        for at in 0..self.held {
            if self.field::<16>(at, ADAPTER_KEY).as_ref() == Some(key) {
                f(&self.ids[at]);
            }
        }
    }
    fn knows(&self, id: &Id) -> bool {
        self.position(id).is_ok()
    }
    fn is_deleter(&self, key: &[u8; 32]) -> bool {
        self.inner.is_deleter(key)
    }
}

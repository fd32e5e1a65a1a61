//! The store: a log of PUT and DELETE entries in segments (one erase sector each), a RAM
//! side ([`Ram`]: heap-backed, or fixed-capacity without alloc) rebuilt from the log at
//! `open`, compaction of the oldest segment into the newest (round-robin, so erases spread
//! evenly), eviction of the lowest-value record when the record bound is reached.
//!
//! Durability: an entry is written in one program operation; `append`/`delete` return only
//! after it. Recovery replays segments in sequence order and entries in offset order,
//! skipping (and counting) anything whose magic, length or CRC is wrong, then resumes
//! writing after the last byte that is not erased — never over a valid entry.
//!
//! Flash is read an entry at a time through one scratch buffer, so the same code runs with
//! no allocator.

#[cfg(feature = "alloc")]
use alloc::vec;
#[cfg(feature = "alloc")]
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;

use crate::format::*;
pub use crate::ram::{FixedRam, Meta, Ram, Seg};
use crate::record::{Id, Record, RecordError, FIXED, MAX_PAYLOAD};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Embedding dimension of every record; 0 = take it from the first record (or from a
    /// fixed-capacity RAM's dimension). A log holding a record of another dimension does
    /// not open (`WrongDim`).
    pub dim: usize,
    /// At most this many live records; appending beyond evicts the lowest-value one.
    /// Capped at the RAM's capacity.
    pub max_records: usize,
    /// Largest payload accepted (≤ 4096; with a fixed RAM also ≤ what its entry buffer holds).
    pub max_payload: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage failed (power cut, I/O); the store must be reopened.
    Flash,
    /// An earlier storage failure left this handle unusable: reopen.
    Poisoned,
    Record(RecordError),
    /// A record (appended, or found in the log at `open`) of another embedding dimension
    /// than the store's.
    WrongDim {
        expected: usize,
        got: usize,
    },
    PayloadTooLarge,
    /// Live records fill every segment but the one compaction needs.
    Full,
    /// The storage has fewer than 3 sectors, sectors too small for one entry, or more
    /// sectors than a fixed RAM can track.
    Geometry,
    /// The log holds more live records than a fixed RAM can index.
    Capacity,
    /// The output buffer is too small for the record.
    BufferTooSmall,
}

/// What `open` found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments_in_use: usize,
    pub records: usize,
    /// Entries skipped because their bytes were torn or damaged, and the bytes skipped.
    pub dropped_entries: usize,
    pub dropped_bytes: usize,
    /// Sectors found neither valid nor erased (an interrupted erase); erased before reuse.
    pub dirty_segments: usize,
}

/// A store on flash `F` with its RAM side `R`.
pub struct LogStore<F: NorFlash, R: Ram> {
    flash: F,
    cfg: Config,
    seg_size: usize,
    active: usize,
    wp: usize,
    next_seq: u32,
    poisoned: bool,
    pub(crate) ram: R,
    buf: R::Buf,
    /// Bumped whenever the set of records or their slots change (indexes check it).
    pub(crate) generation: u64,
}

/// The store for phones, boards and the host: RAM grows with the records.
#[cfg(feature = "alloc")]
pub type Store<F> = LogStore<F, crate::ram::HeapRam>;

/// The store for microcontrollers: at most `N` records of dimension `D` on at most `S`
/// sectors, entries of at most `B` bytes; no allocation.
pub type FixedStore<F, const N: usize, const D: usize, const S: usize, const B: usize> =
    LogStore<F, FixedRam<N, D, S, B>>;

enum Entry<'a> {
    Put(Id, Record<'a>),
    Delete(Id),
}

fn parse_entry(b: &[u8]) -> Option<(u8, &[u8])> {
    if b.len() < ENTRY_HEADER || u16_at(b, 0) != ENTRY_MAGIC {
        return None;
    }
    let len = u32_at(b, 4) as usize;
    let body = b.get(ENTRY_HEADER..ENTRY_HEADER.checked_add(len)?)?;
    (entry_crc(&b[..8], body) == u32_at(b, 8)).then_some((b[2], body))
}

fn decode_entry(kind: u8, body: &[u8]) -> Option<Entry<'_>> {
    match kind {
        KIND_PUT => {
            let (id, rec) = Record::decode(body).ok()?;
            (rec.id() == id).then_some(Entry::Put(id, rec))
        }
        KIND_DELETE if body.len() == 16 => {
            let mut id = [0u8; 16];
            id.copy_from_slice(body);
            Some(Entry::Delete(id))
        }
        _ => None,
    }
}

/// Frame the body already at `e[ENTRY_HEADER..ENTRY_HEADER + body_len]`: header, CRC,
/// zero padding. Returns the entry's length.
fn frame(kind: u8, e: &mut [u8], body_len: usize) -> usize {
    let total = align_up(ENTRY_HEADER + body_len);
    e[0..2].copy_from_slice(&ENTRY_MAGIC.to_le_bytes());
    e[2] = kind;
    e[3] = 0;
    e[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
    e[ENTRY_HEADER + body_len..total].fill(0);
    let crc = entry_crc(&e[..8], &e[ENTRY_HEADER..ENTRY_HEADER + body_len]);
    e[8..12].copy_from_slice(&crc.to_le_bytes());
    total
}

fn norm_of(e: &[i8]) -> f32 {
    libm::sqrtf(e.iter().map(|&v| (v as i32 * v as i32) as f32).sum())
}

#[cfg(feature = "alloc")]
impl<F: NorFlash> Store<F> {
    /// Open (and recover) a store on `flash`, or create one on erased flash.
    pub fn open(flash: F, cfg: Config) -> Result<(Store<F>, Recovery), StoreError> {
        LogStore::open_in(flash, cfg, crate::ram::HeapRam::default())
    }
}

impl<F: NorFlash, R: Ram> LogStore<F, R> {
    /// Open (and recover) a store on `flash` with the RAM side `ram`, or create one on
    /// erased flash.
    pub fn open_in(flash: F, cfg: Config, mut ram: R) -> Result<(Self, Recovery), StoreError> {
        let seg_size = F::ERASE_SIZE;
        let n = flash.capacity() / seg_size.max(1);
        if n < 3
            || seg_size < SEG_HEADER + 256
            || F::WRITE_SIZE > ALIGN
            || !ALIGN.is_multiple_of(F::WRITE_SIZE)
        {
            return Err(StoreError::Geometry);
        }
        ram.reset(n)?;
        let mut cfg = Config {
            max_payload: cfg.max_payload.min(MAX_PAYLOAD),
            max_records: cfg.max_records.min(ram.capacity()),
            ..cfg
        };
        if let Some(d) = R::FIXED_DIM {
            if cfg.dim != 0 && cfg.dim != d {
                return Err(StoreError::WrongDim {
                    expected: d,
                    got: cfg.dim,
                });
            }
            cfg.dim = d;
            // The largest payload whose entry fits the scratch buffer.
            let room = (0..=cfg.max_payload)
                .rev()
                .find(|&p| R::grow_buf(&mut R::new_buf(), align_up(ENTRY_HEADER + FIXED + d + p)))
                .ok_or(StoreError::Geometry)?;
            cfg.max_payload = room;
        }
        let mut st = LogStore {
            flash,
            cfg,
            seg_size,
            active: 0,
            wp: SEG_HEADER,
            next_seq: 1,
            poisoned: false,
            ram,
            buf: R::new_buf(),
            generation: 0,
        };
        let mut rec = Recovery::default();
        for s in 0..n {
            let mut h = [0u8; SEG_HEADER];
            st.read(s, 0, &mut h)?;
            st.ram.segs_mut()[s] = match parse_segment_header(&h) {
                Some((seq, erases)) => Seg {
                    seq: Some(seq),
                    erases,
                    dirty: false,
                },
                None => {
                    let dirty = st.last_used(s)? > 0;
                    rec.dirty_segments += dirty as usize;
                    Seg {
                        seq: None,
                        erases: 0,
                        dirty,
                    }
                }
            };
        }
        // Replay in sequence order (a selection pass per segment: no allocation).
        let mut after: Option<u32> = None;
        loop {
            let next = (0..n)
                .filter_map(|s| st.ram.segs()[s].seq.map(|q| (q, s)))
                .filter(|&(q, _)| after.is_none_or(|a| q > a))
                .min();
            let Some((q, s)) = next else { break };
            after = Some(q);
            rec.segments_in_use += 1;
            let wp = st.replay(s, &mut rec)?;
            st.active = s;
            st.wp = wp;
        }
        st.next_seq = after.map_or(1, |q| q.wrapping_add(1));
        if after.is_none() {
            let s = st.free_segment().ok_or(StoreError::Geometry)?;
            st.open_segment(s)?;
        }
        rec.records = st.ram.metas().len();
        Ok((st, rec))
    }

    /// One past the last byte of segment `s` that is not erased (0 if all erased).
    fn last_used(&mut self, s: usize) -> Result<usize, StoreError> {
        let mut chunk = [0u8; 256];
        let mut end = self.seg_size;
        while end > 0 {
            let start = end.saturating_sub(chunk.len());
            let c = &mut chunk[..end - start];
            self.read(s, start, c)?;
            if let Some(i) = c.iter().rposition(|&b| b != 0xFF) {
                return Ok(start + i + 1);
            }
            end = start;
        }
        Ok(0)
    }

    /// Apply every valid entry of segment `s`; return its write pointer.
    fn replay(&mut self, s: usize, rec: &mut Recovery) -> Result<usize, StoreError> {
        let last_used = self.last_used(s)?;
        let mut pos = SEG_HEADER;
        let mut last_valid_end = SEG_HEADER;
        while pos + ENTRY_HEADER <= self.seg_size && pos < last_used {
            let mut h = [0u8; ENTRY_HEADER];
            self.read(s, pos, &mut h)?;
            let magic = u16_at(&h, 0) == ENTRY_MAGIC;
            let body_len = (u32_at(&h, 4) as usize).min(self.seg_size);
            let total = align_up(ENTRY_HEADER + body_len);
            if magic && pos + total <= self.seg_size && R::grow_buf(&mut self.buf, total) {
                let at = (s * self.seg_size + pos) as u32;
                let e = &mut self.buf.as_mut()[..total];
                if self.flash.read(at, e).is_err() {
                    return Err(self.fail());
                }
                if let Some((kind, body)) = parse_entry(e) {
                    match decode_entry(kind, body) {
                        Some(Entry::Put(id, r)) => {
                            // A valid entry of another dimension is not damage: the log is
                            // not one this store can hold (or was crafted). Refuse it whole.
                            let empty = self.ram.metas().is_empty();
                            fix_dim(&mut self.cfg, empty, r.embedding.len())?;
                            self.generation += 1;
                            put_slot(&mut self.ram, id, &r, s, pos, total)?;
                        }
                        Some(Entry::Delete(id)) => {
                            self.index_remove(&id);
                        }
                        _ => rec.dropped_entries += 1,
                    }
                    pos += total;
                    last_valid_end = pos;
                    continue;
                }
            }
            rec.dropped_bytes += ALIGN;
            rec.dropped_entries += magic as usize;
            pos += ALIGN;
        }
        Ok(align_up(last_used).max(last_valid_end).min(self.seg_size))
    }

    fn read(&mut self, s: usize, off: usize, buf: &mut [u8]) -> Result<(), StoreError> {
        let at = (s * self.seg_size + off) as u32;
        self.flash.read(at, buf).map_err(|_| self.fail())
    }

    fn fail(&mut self) -> StoreError {
        self.poisoned = true;
        StoreError::Flash
    }

    fn free_segment(&self) -> Option<usize> {
        // Prefer an erased one; among equals, the least worn.
        let segs = self.ram.segs();
        (0..segs.len())
            .filter(|&s| segs[s].seq.is_none())
            .min_by_key(|&s| (segs[s].dirty, segs[s].erases))
    }

    /// Erase (if needed) and stamp segment `s` as the new active one.
    fn open_segment(&mut self, s: usize) -> Result<(), StoreError> {
        let base = (s * self.seg_size) as u32;
        let mut erases = self.ram.segs()[s].erases;
        if self.last_used(s)? > 0 {
            self.flash
                .erase(base, base + self.seg_size as u32)
                .map_err(|_| self.fail())?;
            // Read from flash (untrusted): it stays at its ceiling.
            erases = erases.saturating_add(1);
        }
        let seq = self.next_seq;
        self.flash
            .write(base, &segment_header(seq, erases))
            .map_err(|_| self.fail())?;
        self.ram.segs_mut()[s] = Seg {
            seq: Some(seq),
            erases,
            dirty: false,
        };
        self.next_seq = seq.wrapping_add(1);
        self.active = s;
        self.wp = SEG_HEADER;
        Ok(())
    }

    /// Make room for an entry of `len` bytes in the active segment.
    fn ensure_space(&mut self, len: usize) -> Result<(), StoreError> {
        if len > self.seg_size - SEG_HEADER {
            return Err(StoreError::PayloadTooLarge);
        }
        for _ in 0..self.ram.segs().len() + 1 {
            if self.wp + len <= self.seg_size {
                return Ok(());
            }
            let free = self.ram.segs().iter().filter(|s| s.seq.is_none()).count();
            let s = self.free_segment().ok_or(StoreError::Full)?;
            self.open_segment(s)?;
            if free <= 1 {
                // Keep one segment in reserve: fold the oldest into the new active one.
                self.compact()?;
            }
        }
        Err(StoreError::Full)
    }

    /// Rewrite the live records of the oldest segment into the active one and erase it.
    /// Tombstones in the oldest segment are dropped: nothing older exists for them to hide.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let segs = self.ram.segs();
        let victim = (0..segs.len())
            .filter(|&s| s != self.active && segs[s].seq.is_some())
            .min_by_key(|&s| segs[s].seq);
        let Some(v) = victim else { return Ok(()) };
        let live = |m: &Meta| m.seg as usize == v;
        let need: usize = self
            .ram
            .metas()
            .iter()
            .filter(|m| live(m))
            .map(|m| m.len as usize)
            .sum();
        if self.wp + need > self.seg_size {
            // Copy into a fresh segment instead; the victim frees one again.
            let s = self.free_segment().ok_or(StoreError::Full)?;
            self.open_segment(s)?;
            if self.wp + need > self.seg_size {
                return Err(StoreError::Full);
            }
        }
        for slot in 0..self.ram.metas().len() {
            let m = self.ram.metas()[slot];
            if !live(&m) {
                continue;
            }
            let len = m.len as usize;
            if !R::grow_buf(&mut self.buf, len) {
                return Err(StoreError::Capacity);
            }
            let from = (v * self.seg_size + m.off as usize) as u32;
            let to = (self.active * self.seg_size + self.wp) as u32;
            let e = &mut self.buf.as_mut()[..len];
            if self.flash.read(from, e).is_err() || self.flash.write(to, e).is_err() {
                return Err(self.fail());
            }
            let mm = &mut self.ram.metas_mut()[slot];
            mm.seg = self.active as u16;
            mm.off = self.wp as u32;
            self.wp += len;
        }
        // Retire first (clear the magic), then erase: a cut mid-erase leaves no valid header.
        let base = (v * self.seg_size) as u32;
        self.flash
            .write(base, &[0u8; ALIGN])
            .map_err(|_| self.fail())?;
        self.flash
            .erase(base, base + self.seg_size as u32)
            .map_err(|_| self.fail())?;
        let erases = self.ram.segs()[v].erases.saturating_add(1);
        self.ram.segs_mut()[v] = Seg {
            seq: None,
            erases,
            dirty: false,
        };
        Ok(())
    }

    fn index_remove(&mut self, id: &Id) -> bool {
        let Some(slot) = self.ram.find(id) else {
            return false;
        };
        self.generation += 1;
        self.ram.swap_remove(slot);
        true
    }

    /// Check a record against the store's dimension and payload bound; fixes the dimension
    /// of an empty store with none yet.
    fn admit(&mut self, r: &Record<'_>) -> Result<usize, StoreError> {
        let empty = self.ram.metas().is_empty();
        fix_dim(&mut self.cfg, empty, r.embedding.len())?;
        if r.payload.len() > self.cfg.max_payload {
            return Err(StoreError::PayloadTooLarge);
        }
        if !(r.scale.is_finite() && r.scale > 0.0) {
            return Err(StoreError::Record(RecordError::BadScale));
        }
        Ok(align_up(ENTRY_HEADER + r.encoded_len()))
    }

    /// Write the entry framed in `self.buf[..len]` at the write pointer (space ensured).
    fn write_buf(&mut self, len: usize) -> Result<(usize, usize), StoreError> {
        let at = (self.active * self.seg_size + self.wp) as u32;
        if self.flash.write(at, &self.buf.as_ref()[..len]).is_err() {
            return Err(self.fail());
        }
        let off = self.wp;
        self.wp += len;
        Ok((self.active, off))
    }

    /// Store a record durably. Returns its content id (appending the same content again
    /// is harmless). At the record bound, the lowest-value record is evicted first.
    pub fn append(&mut self, r: &Record<'_>) -> Result<Id, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        // Validate before evicting anything.
        let len = self.admit(r)?;
        if !R::grow_buf(&mut self.buf, len) {
            return Err(StoreError::PayloadTooLarge);
        }
        let id = r.id();
        if self.ram.find(&id).is_none() && self.ram.metas().len() >= self.cfg.max_records {
            if let Some(victim) = self.lowest_value() {
                self.delete(&victim)?;
            }
        }
        self.ensure_space(len)?;
        let b = self.buf.as_mut();
        let n = r
            .encode(&mut b[ENTRY_HEADER..])
            .map_err(StoreError::Record)?;
        frame(KIND_PUT, b, n);
        let (seg, off) = self.write_buf(len)?;
        self.generation += 1;
        put_slot(&mut self.ram, id, r, seg, off, len)?;
        Ok(id)
    }

    /// Delete a record durably (a tombstone, reclaimed at compaction). `Ok(false)` if absent.
    pub fn delete(&mut self, id: &Id) -> Result<bool, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if self.ram.find(id).is_none() {
            return Ok(false);
        }
        let len = align_up(ENTRY_HEADER + 16);
        self.ensure_space(len)?;
        if !R::grow_buf(&mut self.buf, len) {
            return Err(StoreError::Capacity);
        }
        let b = self.buf.as_mut();
        b[ENTRY_HEADER..ENTRY_HEADER + 16].copy_from_slice(id);
        frame(KIND_DELETE, b, 16);
        self.write_buf(len)?;
        Ok(self.index_remove(id))
    }

    /// The record with the lowest value: least important, then oldest.
    fn lowest_value(&self) -> Option<Id> {
        self.ram
            .metas()
            .iter()
            .min_by_key(|m| (m.importance, m.timestamp_ms))
            .map(|m| m.id)
    }

    /// Copy a record's encoding (decode with `Record::decode`) into `out`; its length, or
    /// `None` if absent.
    pub fn read_record(&mut self, id: &Id, out: &mut [u8]) -> Result<Option<usize>, StoreError> {
        let Some(slot) = self.ram.find(id) else {
            return Ok(None);
        };
        let m = self.ram.metas()[slot];
        let len = m.len as usize;
        if !R::grow_buf(&mut self.buf, len) {
            return Err(StoreError::Capacity);
        }
        let at = (m.seg as usize * self.seg_size + m.off as usize) as u32;
        let e = &mut self.buf.as_mut()[..len];
        if self.flash.read(at, e).is_err() {
            return Err(self.fail());
        }
        match parse_entry(e) {
            Some((KIND_PUT, body)) => {
                let o = out
                    .get_mut(..body.len())
                    .ok_or(StoreError::BufferTooSmall)?;
                o.copy_from_slice(body);
                Ok(Some(body.len()))
            }
            _ => Err(StoreError::Flash),
        }
    }

    pub fn len(&self) -> usize {
        self.ram.metas().len()
    }
    pub fn is_empty(&self) -> bool {
        self.ram.metas().is_empty()
    }
    pub fn contains(&self, id: &Id) -> bool {
        self.ram.find(id).is_some()
    }
    pub fn config(&self) -> Config {
        self.cfg
    }
    pub fn metas(&self) -> &[Meta] {
        self.ram.metas()
    }
    /// The int8 embeddings of all records, `dim` each, in the order of `metas()`.
    pub fn embeddings(&self) -> &[i8] {
        self.ram.emb()
    }
    /// The segments (erase counts, which are in use), one per erase sector.
    pub fn segments(&self) -> &[Seg] {
        self.ram.segs()
    }
    /// Bytes used in the log (headers, live and dead entries) and bytes of live entries.
    pub fn usage(&self) -> (usize, usize) {
        let in_use = self.ram.segs().iter().filter(|s| s.seq.is_some()).count();
        let live = self.ram.metas().iter().map(|m| m.len as usize).sum();
        (in_use.saturating_sub(1) * self.seg_size + self.wp, live)
    }
    pub fn into_flash(self) -> F {
        self.flash
    }
    pub fn flash(&self) -> &F {
        &self.flash
    }
}

/// The one rule for a record's dimension, at append and at replay: a store with no
/// dimension yet and no records takes `dim`; otherwise `dim` must be the store's.
fn fix_dim(cfg: &mut Config, empty: bool, dim: usize) -> Result<(), StoreError> {
    if cfg.dim == 0 && empty {
        cfg.dim = dim;
    }
    if dim != cfg.dim {
        return Err(StoreError::WrongDim {
            expected: cfg.dim,
            got: dim,
        });
    }
    Ok(())
}

/// Insert or replace the RAM slot of record `r` stored at (`seg`, `off`, `len`).
fn put_slot<R: Ram>(
    ram: &mut R,
    id: Id,
    r: &Record<'_>,
    seg: usize,
    off: usize,
    len: usize,
) -> Result<(), StoreError> {
    let meta = Meta {
        id,
        origin: r.origin,
        timestamp_ms: r.timestamp_ms,
        label: r.label,
        importance: r.importance,
        scale: r.scale,
        observations: r.meta[3],
        seg: seg as u16,
        off: off as u32,
        len: len as u32,
    };
    let norm = norm_of(r.embedding);
    match ram.find(&id) {
        Some(slot) => ram.replace(slot, meta, r.embedding, norm),
        None => ram.push(meta, r.embedding, norm)?,
    }
    Ok(())
}

#[cfg(feature = "alloc")]
impl<F: NorFlash> Store<F> {
    /// Store many records with as few program operations (and, on a file, syncs) as the
    /// segments allow: entries that fit in the active segment go out in one write. Each entry
    /// keeps its own CRC, so a cut keeps a prefix of the batch, never a torn record. Returns
    /// the ids once every record is durable. Falls back to `append` one by one when the
    /// record bound would evict.
    pub fn append_batch(&mut self, records: &[Record<'_>]) -> Result<Vec<Id>, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if self.len() + records.len() > self.cfg.max_records {
            return records.iter().map(|r| self.append(r)).collect();
        }
        let mut ids = Vec::with_capacity(records.len());
        let mut i = 0;
        while i < records.len() {
            // Encode as many as fit after the write pointer of one segment.
            let mut buf: Vec<u8> = Vec::new();
            let mut spans = Vec::new();
            let first = self.admit(&records[i])?;
            self.ensure_space(first)?;
            let start = self.wp;
            while i < records.len() {
                let r = &records[i];
                let len = self.admit(r)?;
                if start + buf.len() + len > self.seg_size {
                    break;
                }
                let at = buf.len();
                buf.resize(at + len, 0);
                let n = r
                    .encode(&mut buf[at + ENTRY_HEADER..])
                    .map_err(StoreError::Record)?;
                frame(KIND_PUT, &mut buf[at..], n);
                spans.push((i, at, len));
                i += 1;
            }
            let at = (self.active * self.seg_size + start) as u32;
            self.flash.write(at, &buf).map_err(|_| self.fail())?;
            self.wp = start + buf.len();
            for (k, off, len) in spans {
                let r = &records[k];
                let id = r.id();
                self.generation += 1;
                put_slot(&mut self.ram, id, r, self.active, start + off, len)?;
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Read a record's bytes back from storage (its encoding; decode with `Record::decode`).
    pub fn get(&mut self, id: &Id) -> Result<Option<Vec<u8>>, StoreError> {
        let mut out = vec![0u8; FIXED + crate::record::MAX_DIM + MAX_PAYLOAD];
        Ok(self.read_record(id, &mut out)?.map(|n| {
            out.truncate(n);
            out
        }))
    }

    /// Erase count of every sector, as recorded in the segment headers.
    pub fn erase_counts(&self) -> Vec<u32> {
        self.segments().iter().map(|s| s.erases).collect()
    }
}

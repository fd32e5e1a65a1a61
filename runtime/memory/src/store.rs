//! The store: a log of PUT and DELETE entries in segments (one erase sector each), an
//! in-RAM index rebuilt from the log at `open`, compaction of the oldest segment into the
//! newest (round-robin, so erases spread evenly), eviction of the lowest-value record when
//! the record bound is reached.
//!
//! Durability: an entry is written in one program operation; `append`/`delete` return only
//! after it. Recovery replays segments in sequence order and entries in offset order,
//! skipping (and counting) anything whose magic, length or CRC is wrong, then resumes
//! writing after the last byte that is not erased — never over a valid entry.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;

use crate::format::*;
use crate::record::{Id, Record, RecordError, MAX_PAYLOAD};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Embedding dimension of every record; 0 = take it from the first record.
    pub dim: usize,
    /// At most this many live records; appending beyond evicts the lowest-value one.
    pub max_records: usize,
    /// Largest payload accepted (≤ 4096).
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
    WrongDim {
        expected: usize,
        got: usize,
    },
    PayloadTooLarge,
    /// Live records fill every segment but the one compaction needs.
    Full,
    /// The storage has fewer than 3 sectors, or sectors too small for one entry.
    Geometry,
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

#[derive(Clone, Copy, Debug)]
struct Seg {
    /// Sequence number of a segment in use; `None` when free (erased or dirty).
    seq: Option<u32>,
    erases: u32,
    dirty: bool,
}

/// Per-record facts kept in RAM for filtering and scoring.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Meta {
    pub id: Id,
    pub origin: u64,
    pub timestamp_ms: u64,
    pub label: u16,
    pub importance: u8,
    pub scale: f32,
    /// Observations this record stands for (`meta[3]` of a consolidated prototype; 0 = 1).
    pub observations: u32,
    seg: u16,
    off: u32,
    len: u32,
}

pub struct Store<F: NorFlash> {
    flash: F,
    cfg: Config,
    seg_size: usize,
    segs: Vec<Seg>,
    active: usize,
    wp: usize,
    next_seq: u32,
    poisoned: bool,
    pub(crate) index: BTreeMap<Id, usize>,
    pub(crate) metas: Vec<Meta>,
    pub(crate) emb: Vec<i8>,
    pub(crate) norms: Vec<f32>,
    /// Bumped whenever the set of records or their slots change (indexes check it).
    pub(crate) generation: u64,
}

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

fn make_entry(kind: u8, body: &[u8]) -> Vec<u8> {
    let total = align_up(ENTRY_HEADER + body.len());
    let mut e = vec![0u8; total];
    e[0..2].copy_from_slice(&ENTRY_MAGIC.to_le_bytes());
    e[2] = kind;
    e[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = entry_crc(&e[..8], body);
    e[8..12].copy_from_slice(&crc.to_le_bytes());
    e[ENTRY_HEADER..ENTRY_HEADER + body.len()].copy_from_slice(body);
    e
}

impl<F: NorFlash> Store<F> {
    /// Open (and recover) a store on `flash`, or create one on erased flash.
    pub fn open(flash: F, cfg: Config) -> Result<(Store<F>, Recovery), StoreError> {
        let seg_size = F::ERASE_SIZE;
        let n = flash.capacity() / seg_size.max(1);
        if n < 3
            || seg_size < SEG_HEADER + 256
            || F::WRITE_SIZE > ALIGN
            || !ALIGN.is_multiple_of(F::WRITE_SIZE)
        {
            return Err(StoreError::Geometry);
        }
        let cfg = Config {
            max_payload: cfg.max_payload.min(MAX_PAYLOAD),
            ..cfg
        };
        let mut st = Store {
            flash,
            cfg,
            seg_size,
            segs: vec![
                Seg {
                    seq: None,
                    erases: 0,
                    dirty: false
                };
                n
            ],
            active: 0,
            wp: SEG_HEADER,
            next_seq: 1,
            poisoned: false,
            index: BTreeMap::new(),
            metas: Vec::new(),
            emb: Vec::new(),
            norms: Vec::new(),
            generation: 0,
        };
        let mut rec = Recovery::default();
        let mut buf = vec![0u8; seg_size];
        for s in 0..n {
            st.read(s, 0, &mut buf)?;
            match parse_segment_header(&buf) {
                Some((seq, erases)) => {
                    st.segs[s] = Seg {
                        seq: Some(seq),
                        erases,
                        dirty: false,
                    }
                }
                None => {
                    let dirty = buf.iter().any(|&b| b != 0xFF);
                    rec.dirty_segments += dirty as usize;
                    st.segs[s] = Seg {
                        seq: None,
                        erases: 0,
                        dirty,
                    };
                }
            }
        }
        let mut order: Vec<usize> = (0..n).filter(|&s| st.segs[s].seq.is_some()).collect();
        order.sort_by_key(|&s| st.segs[s].seq);
        rec.segments_in_use = order.len();
        for &s in &order {
            st.read(s, 0, &mut buf)?;
            let wp = st.replay(s, &buf, &mut rec);
            st.active = s;
            st.wp = wp;
        }
        st.next_seq = order
            .last()
            .and_then(|&s| st.segs[s].seq)
            .map_or(1, |q| q.wrapping_add(1));
        if order.is_empty() {
            let s = st.free_segment().ok_or(StoreError::Geometry)?;
            st.open_segment(s)?;
        }
        rec.records = st.metas.len();
        Ok((st, rec))
    }

    /// Apply every valid entry of segment `s`; return its write pointer.
    fn replay(&mut self, s: usize, buf: &[u8], rec: &mut Recovery) -> usize {
        let mut pos = SEG_HEADER;
        let mut last_valid_end = SEG_HEADER;
        while pos + ENTRY_HEADER <= buf.len() {
            if buf[pos..].iter().all(|&b| b == 0xFF) {
                break;
            }
            match parse_entry(&buf[pos..]) {
                Some((kind, body)) => {
                    let len = align_up(ENTRY_HEADER + body.len());
                    match decode_entry(kind, body) {
                        Some(Entry::Put(id, r))
                            if self.cfg.dim == 0 || r.embedding.len() == self.cfg.dim =>
                        {
                            self.cfg.dim = r.embedding.len();
                            self.index_put(id, &r, s, pos, len);
                        }
                        Some(Entry::Delete(id)) => {
                            self.index_remove(&id);
                        }
                        _ => rec.dropped_entries += 1,
                    }
                    pos += len;
                    last_valid_end = pos;
                }
                None => {
                    rec.dropped_bytes += ALIGN;
                    if u16_at(buf, pos) == ENTRY_MAGIC {
                        rec.dropped_entries += 1;
                    }
                    pos += ALIGN;
                }
            }
        }
        let last_used = buf.iter().rposition(|&b| b != 0xFF).map_or(0, |i| i + 1);
        align_up(last_used).max(last_valid_end).min(buf.len())
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
        let free: Vec<usize> = (0..self.segs.len())
            .filter(|&s| self.segs[s].seq.is_none())
            .collect();
        // Prefer an erased one; among equals, the least worn.
        free.iter()
            .copied()
            .min_by_key(|&s| (self.segs[s].dirty, self.segs[s].erases))
    }

    /// Erase (if needed) and stamp segment `s` as the new active one.
    fn open_segment(&mut self, s: usize) -> Result<(), StoreError> {
        let base = (s * self.seg_size) as u32;
        let mut erases = self.segs[s].erases;
        let mut probe = vec![0u8; self.seg_size];
        self.read(s, 0, &mut probe)?;
        if probe.iter().any(|&b| b != 0xFF) {
            self.flash
                .erase(base, base + self.seg_size as u32)
                .map_err(|_| self.fail())?;
            erases += 1;
        }
        let seq = self.next_seq;
        self.flash
            .write(base, &segment_header(seq, erases))
            .map_err(|_| self.fail())?;
        self.segs[s] = Seg {
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
        for _ in 0..self.segs.len() + 1 {
            if self.wp + len <= self.seg_size {
                return Ok(());
            }
            let free = self.segs.iter().filter(|s| s.seq.is_none()).count();
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
        let victim = (0..self.segs.len())
            .filter(|&s| s != self.active && self.segs[s].seq.is_some())
            .min_by_key(|&s| self.segs[s].seq);
        let Some(v) = victim else { return Ok(()) };
        let mut buf = vec![0u8; self.seg_size];
        self.read(v, 0, &mut buf)?;
        let live: Vec<(usize, usize)> = self
            .metas
            .iter()
            .filter(|m| m.seg as usize == v)
            .map(|m| (m.off as usize, m.len as usize))
            .collect();
        let need: usize = live.iter().map(|l| l.1).sum();
        if self.wp + need > self.seg_size {
            // Copy into a fresh segment instead; the victim frees one again.
            let s = self.free_segment().ok_or(StoreError::Full)?;
            self.open_segment(s)?;
            if self.wp + need > self.seg_size {
                return Err(StoreError::Full);
            }
        }
        for (off, len) in live {
            let entry = buf[off..off + len].to_vec();
            let at = (self.active * self.seg_size + self.wp) as u32;
            self.flash.write(at, &entry).map_err(|_| self.fail())?;
            if let Some((_, body)) = parse_entry(&entry) {
                if let Some(Entry::Put(id, _)) = decode_entry(KIND_PUT, body) {
                    if let Some(&slot) = self.index.get(&id) {
                        self.metas[slot].seg = self.active as u16;
                        self.metas[slot].off = self.wp as u32;
                    }
                }
            }
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
        self.segs[v] = Seg {
            seq: None,
            erases: self.segs[v].erases + 1,
            dirty: false,
        };
        Ok(())
    }

    fn index_put(&mut self, id: Id, r: &Record<'_>, seg: usize, off: usize, len: usize) {
        self.generation += 1;
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
        let sq: f32 = r
            .embedding
            .iter()
            .map(|&v| (v as i32 * v as i32) as f32)
            .sum();
        let norm = libm::sqrtf(sq);
        match self.index.get(&id) {
            Some(&slot) => {
                self.metas[slot] = meta;
                let d = self.cfg.dim;
                self.emb[slot * d..(slot + 1) * d].copy_from_slice(r.embedding);
                self.norms[slot] = norm;
            }
            None => {
                self.index.insert(id, self.metas.len());
                self.metas.push(meta);
                self.emb.extend_from_slice(r.embedding);
                self.norms.push(norm);
            }
        }
    }

    fn index_remove(&mut self, id: &Id) -> bool {
        let Some(slot) = self.index.remove(id) else {
            return false;
        };
        self.generation += 1;
        let last = self.metas.len() - 1;
        let d = self.cfg.dim;
        if slot != last {
            self.metas.swap(slot, last);
            self.norms.swap(slot, last);
            let (a, b) = self.emb.split_at_mut(last * d);
            a[slot * d..(slot + 1) * d].copy_from_slice(&b[..d]);
            self.index.insert(self.metas[slot].id, slot);
        }
        self.metas.pop();
        self.norms.pop();
        self.emb.truncate(last * d);
        true
    }

    fn write_entry(&mut self, kind: u8, body: &[u8]) -> Result<(usize, usize, usize), StoreError> {
        let entry = make_entry(kind, body);
        self.ensure_space(entry.len())?;
        let at = (self.active * self.seg_size + self.wp) as u32;
        self.flash.write(at, &entry).map_err(|_| self.fail())?;
        let off = self.wp;
        self.wp += entry.len();
        Ok((self.active, off, entry.len()))
    }

    /// Store a record durably. Returns its content id (appending the same content again
    /// is harmless). At the record bound, the lowest-value record is evicted first.
    pub fn append(&mut self, r: &Record<'_>) -> Result<Id, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        // Validate and encode before evicting anything.
        let body = self.body_of(r)?;
        let id = r.id();
        if !self.index.contains_key(&id) && self.metas.len() >= self.cfg.max_records {
            if let Some(victim) = self.lowest_value() {
                self.delete(&victim)?;
            }
        }
        let (seg, off, len) = self.write_entry(KIND_PUT, &body)?;
        self.index_put(id, r, seg, off, len);
        Ok(id)
    }

    /// Store many records with as few program operations (and, on a file, syncs) as the
    /// segments allow: entries that fit in the active segment go out in one write. Each entry
    /// keeps its own CRC, so a cut keeps a prefix of the batch, never a torn record. Returns
    /// the ids once every record is durable. Falls back to `append` one by one when the
    /// record bound would evict.
    pub fn append_batch(&mut self, records: &[Record<'_>]) -> Result<Vec<Id>, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if self.metas.len() + records.len() > self.cfg.max_records {
            return records.iter().map(|r| self.append(r)).collect();
        }
        let mut ids = Vec::with_capacity(records.len());
        let mut i = 0;
        while i < records.len() {
            // Encode as many as fit after the write pointer of one segment.
            let mut buf: Vec<u8> = Vec::new();
            let mut spans = Vec::new();
            let first = make_entry(KIND_PUT, &self.body_of(&records[i])?);
            self.ensure_space(first.len())?;
            let start = self.wp;
            spans.push((i, buf.len(), first.len()));
            buf.extend_from_slice(&first);
            i += 1;
            while i < records.len() {
                let e = make_entry(KIND_PUT, &self.body_of(&records[i])?);
                if start + buf.len() + e.len() > self.seg_size {
                    break;
                }
                spans.push((i, buf.len(), e.len()));
                buf.extend_from_slice(&e);
                i += 1;
            }
            let at = (self.active * self.seg_size + start) as u32;
            self.flash.write(at, &buf).map_err(|_| self.fail())?;
            self.wp = start + buf.len();
            for (k, off, len) in spans {
                let r = &records[k];
                let id = r.id();
                self.index_put(id, r, self.active, start + off, len);
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn body_of(&mut self, r: &Record<'_>) -> Result<Vec<u8>, StoreError> {
        if self.cfg.dim == 0 && self.metas.is_empty() {
            self.cfg.dim = r.embedding.len();
        }
        if r.embedding.len() != self.cfg.dim {
            return Err(StoreError::WrongDim {
                expected: self.cfg.dim,
                got: r.embedding.len(),
            });
        }
        if r.payload.len() > self.cfg.max_payload {
            return Err(StoreError::PayloadTooLarge);
        }
        let mut body = vec![0u8; r.encoded_len()];
        r.encode(&mut body).map_err(StoreError::Record)?;
        Ok(body)
    }

    /// Delete a record durably (a tombstone, reclaimed at compaction). `Ok(false)` if absent.
    pub fn delete(&mut self, id: &Id) -> Result<bool, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if !self.index.contains_key(id) {
            return Ok(false);
        }
        self.write_entry(KIND_DELETE, id)?;
        Ok(self.index_remove(id))
    }

    /// The record with the lowest value: least important, then oldest.
    fn lowest_value(&self) -> Option<Id> {
        self.metas
            .iter()
            .min_by_key(|m| (m.importance, m.timestamp_ms))
            .map(|m| m.id)
    }

    /// Read a record's bytes back from storage (its encoding; decode with `Record::decode`).
    pub fn get(&mut self, id: &Id) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(&slot) = self.index.get(id) else {
            return Ok(None);
        };
        let m = self.metas[slot];
        let mut e = vec![0u8; m.len as usize];
        self.read(m.seg as usize, m.off as usize, &mut e)?;
        match parse_entry(&e) {
            Some((KIND_PUT, body)) => Ok(Some(body.to_vec())),
            _ => Err(StoreError::Flash),
        }
    }

    pub fn len(&self) -> usize {
        self.metas.len()
    }
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }
    pub fn contains(&self, id: &Id) -> bool {
        self.index.contains_key(id)
    }
    pub fn config(&self) -> Config {
        self.cfg
    }
    pub fn metas(&self) -> &[Meta] {
        &self.metas
    }
    /// Erase count of every sector, as recorded in the segment headers.
    pub fn erase_counts(&self) -> Vec<u32> {
        self.segs.iter().map(|s| s.erases).collect()
    }
    /// Bytes used in the log (headers, live and dead entries) and bytes of live entries.
    pub fn usage(&self) -> (usize, usize) {
        let in_use = self.segs.iter().filter(|s| s.seq.is_some()).count();
        let live = self.metas.iter().map(|m| m.len as usize).sum();
        (in_use.saturating_sub(1) * self.seg_size + self.wp, live)
    }
    pub fn into_flash(self) -> F {
        self.flash
    }
    pub fn flash(&self) -> &F {
        &self.flash
    }
}

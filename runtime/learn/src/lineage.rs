//! Lineage: content-addressed checkpoints of the adapter, kept in an append-only log over
//! `NorFlash`, and rollback.
//!
//! A checkpoint id is SHA-256 over: the parent checkpoint id, the base model's hash, the
//! digest of the training records' ids, the hyper-parameters, the gate's metrics (active
//! and candidate) and the digest of the weights. The same training on the same data from
//! the same parent gives the same id on any device.
//!
//! Log entries (little-endian, 4-byte aligned): magic `u32`, kind `u32`, body length `u32`,
//! CRC-32 of the body `u32`, body. Kinds: CHECKPOINT (header + weights), ACTIVE (the id now
//! in use: written at promotion and rollback), REJECTED (a discarded candidate: its would-be
//! id, the reason and the metrics). A cut mid-write leaves an entry whose CRC fails; it is
//! skipped and counted at `open`, and writing resumes after it.

use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

use crate::gate::{Metrics, Reject};
use crate::layout::AdapterShape;
use crate::LearnError;

// Weights are written and read as native bytes: every supported target is little-endian.
#[cfg(target_endian = "big")]
compile_error!("the checkpoint log stores f32 weights as little-endian bytes");

pub type CkptId = [u8; 32];

/// Buffered writer of one entry.
struct Streamer {
    buf: [u8; 256],
    fill: usize,
    at: usize,
}

impl Streamer {
    fn put<F: NorFlash>(&mut self, flash: &mut F, bytes: &[u8]) -> Result<(), LearnError> {
        for &b in bytes {
            self.buf[self.fill] = b;
            self.fill += 1;
            if self.fill == self.buf.len() {
                flash
                    .write(self.at as u32, &self.buf)
                    .map_err(|_| LearnError::Storage)?;
                self.at += self.buf.len();
                self.fill = 0;
            }
        }
        Ok(())
    }
    fn finish<F: NorFlash>(mut self, flash: &mut F) -> Result<(), LearnError> {
        if self.fill > 0 {
            let padded = align4(self.fill);
            self.buf[self.fill..padded].fill(0);
            flash
                .write(self.at as u32, &self.buf[..padded])
                .map_err(|_| LearnError::Storage)?;
        }
        Ok(())
    }
}

const MAGIC: u32 = 0x4B43_4E4C; // "LNCK"
const HDR: usize = 16;
pub const KIND_CHECKPOINT: u32 = 1;
pub const KIND_ACTIVE: u32 = 2;
pub const KIND_REJECTED: u32 = 3;
/// Bytes of a checkpoint body before the weights.
pub const CKPT_FIXED: usize = 268;

/// Order-independent digest of a set of record ids: the wrapping sum of SHA-256(id) as
/// 256-bit integers, then hashed with the count.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordDigest {
    sum: [u64; 4],
    count: u32,
}

impl RecordDigest {
    pub fn add(&mut self, id: &[u8]) {
        let h = Sha256::digest(id);
        let mut carry = 0u128;
        for (i, limb) in self.sum.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&h[8 * i..8 * i + 8]);
            let v = *limb as u128 + u64::from_le_bytes(w) as u128 + carry;
            *limb = v as u64;
            carry = v >> 64;
        }
        self.count += 1;
    }
    pub fn count(&self) -> u32 {
        self.count
    }
    pub fn finish(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.count.to_le_bytes());
        for l in self.sum {
            h.update(l.to_le_bytes());
        }
        h.finalize().into()
    }
}

/// SHA-256 of f32 weights (their little-endian bytes).
pub fn weights_digest(w: &[f32]) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in w {
        h.update(v.to_le_bytes());
    }
    h.finalize().into()
}

/// SHA-256 of a base model's bytes.
pub fn model_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Everything a checkpoint says about itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Checkpoint {
    pub id: CkptId,
    pub parent: CkptId,
    pub base: [u8; 32],
    pub records: [u8; 32],
    pub n_records: u32,
    pub hparams: [u8; 52],
    /// The gate's view: the active adapter's metrics, then this one's.
    pub before: Metrics,
    pub after: Metrics,
    pub shape: [u32; 4],
    pub weights: [u8; 32],
    pub n_params: u32,
}

impl Checkpoint {
    /// Fill in the id from the other fields.
    pub fn seal(mut self) -> Checkpoint {
        self.id = self.compute_id();
        self
    }
    pub fn compute_id(&self) -> CkptId {
        let mut h = Sha256::new();
        h.update(self.parent);
        h.update(self.base);
        h.update(self.records);
        h.update(self.n_records.to_le_bytes());
        h.update(self.hparams);
        h.update(self.before.to_bytes());
        h.update(self.after.to_bytes());
        for s in self.shape {
            h.update(s.to_le_bytes());
        }
        h.update(self.weights);
        h.finalize().into()
    }
    pub fn shape_of(s: &AdapterShape) -> [u32; 4] {
        [
            s.fin as u32,
            s.hidden as u32,
            s.rank as u32,
            s.classes as u32,
        ]
    }
    fn encode(&self) -> [u8; CKPT_FIXED] {
        let mut b = [0u8; CKPT_FIXED];
        b[0..32].copy_from_slice(&self.id);
        b[32..64].copy_from_slice(&self.parent);
        b[64..96].copy_from_slice(&self.base);
        b[96..128].copy_from_slice(&self.records);
        b[128..132].copy_from_slice(&self.n_records.to_le_bytes());
        b[132..184].copy_from_slice(&self.hparams);
        b[184..200].copy_from_slice(&self.before.to_bytes());
        b[200..216].copy_from_slice(&self.after.to_bytes());
        for (i, s) in self.shape.iter().enumerate() {
            b[216 + 4 * i..220 + 4 * i].copy_from_slice(&s.to_le_bytes());
        }
        b[232..264].copy_from_slice(&self.weights);
        b[264..268].copy_from_slice(&self.n_params.to_le_bytes());
        b
    }
    fn decode(b: &[u8; CKPT_FIXED]) -> Checkpoint {
        let a32 = |o: usize| -> [u8; 32] { b[o..o + 32].try_into().unwrap_or([0; 32]) };
        let u = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let m = |o: usize| Metrics::from_bytes(&b[o..o + 16].try_into().unwrap_or([0; 16]));
        Checkpoint {
            id: a32(0),
            parent: a32(32),
            base: a32(64),
            records: a32(96),
            n_records: u(128),
            hparams: b[132..184].try_into().unwrap_or([0; 52]),
            before: m(184),
            after: m(200),
            shape: [u(216), u(220), u(224), u(228)],
            weights: a32(232),
            n_params: u(264),
        }
    }
}

/// One entry of the log, as listed by [`CheckpointLog::for_each`].
// No allocator to box the large variant; entries are handed to a callback one at a time.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LogEntry {
    Checkpoint(Checkpoint),
    Active(CkptId),
    Rejected {
        id: CkptId,
        reason: u8,
        before: Metrics,
        after: Metrics,
    },
}

/// What `open` found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRecovery {
    pub entries: usize,
    pub dropped_bytes: usize,
}

/// The append-only checkpoint log on a flash region. It never erases; when full,
/// `LearnError::LogFull` (export the lineage, then erase the region).
pub struct CheckpointLog<F: NorFlash> {
    flash: F,
    wp: usize,
    active: Option<CkptId>,
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

impl<F: NorFlash> CheckpointLog<F> {
    /// Scan the log; the active checkpoint is the last ACTIVE entry.
    pub fn open(flash: F) -> Result<(Self, LogRecovery), LearnError> {
        let mut log = CheckpointLog {
            flash,
            wp: 0,
            active: None,
        };
        let mut rec = LogRecovery::default();
        let mut active = None;
        let end = log.scan(&mut rec, |e| {
            if let LogEntry::Active(id) = e {
                active = Some(id);
            }
        })?;
        log.wp = end;
        log.active = active;
        Ok((log, rec))
    }

    /// Visit every valid entry; returns the write position.
    fn scan(
        &mut self,
        rec: &mut LogRecovery,
        mut f: impl FnMut(LogEntry),
    ) -> Result<usize, LearnError> {
        let cap = self.flash.capacity();
        let last = self.last_used()?;
        let mut pos = 0;
        let mut valid_end = 0;
        while pos + HDR <= cap && pos < last {
            match self.entry_at(pos)? {
                Some((len, e)) => {
                    if let Some(e) = e {
                        f(e);
                        rec.entries += 1;
                    }
                    pos += align4(HDR + len);
                    valid_end = pos;
                }
                None => {
                    rec.dropped_bytes += 4;
                    pos += 4;
                }
            }
        }
        Ok(align4(last).max(valid_end).min(cap))
    }

    fn last_used(&mut self) -> Result<usize, LearnError> {
        let mut chunk = [0u8; 256];
        let mut end = self.flash.capacity();
        while end > 0 {
            let start = end.saturating_sub(chunk.len());
            let c = &mut chunk[..end - start];
            self.flash
                .read(start as u32, c)
                .map_err(|_| LearnError::Storage)?;
            if let Some(i) = c.iter().rposition(|&b| b != 0xFF) {
                return Ok(start + i + 1);
            }
            end = start;
        }
        Ok(0)
    }

    /// The entry at `pos` if its header and CRC check: (body length, decoded entry or None
    /// for an unknown kind).
    fn entry_at(&mut self, pos: usize) -> Result<Option<(usize, Option<LogEntry>)>, LearnError> {
        let cap = self.flash.capacity();
        let mut h = [0u8; HDR];
        self.flash
            .read(pos as u32, &mut h)
            .map_err(|_| LearnError::Storage)?;
        let u = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let (kind, len, crc) = (u(4), u(8) as usize, u(12));
        // `len` is untrusted: compare it with the room left, never add to it (32-bit).
        let room = cap.saturating_sub(pos).saturating_sub(HDR);
        if u(0) != MAGIC || len > room {
            return Ok(None);
        }
        // CRC over the body, read in chunks.
        let mut hasher = cairn_core::crc32::Crc32::new();
        let mut first = [0u8; CKPT_FIXED];
        let mut chunk = [0u8; 256];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(chunk.len());
            self.flash
                .read((pos + HDR + off) as u32, &mut chunk[..n])
                .map_err(|_| LearnError::Storage)?;
            hasher.update(&chunk[..n]);
            if off < CKPT_FIXED {
                let m = n.min(CKPT_FIXED - off);
                first[off..off + m].copy_from_slice(&chunk[..m]);
            }
            off += n;
        }
        if hasher.finalize() != crc {
            return Ok(None);
        }
        let id = |b: &[u8]| -> CkptId { b[..32].try_into().unwrap_or([0; 32]) };
        let e = match kind {
            KIND_CHECKPOINT if len >= CKPT_FIXED => {
                let c = Checkpoint::decode(&first);
                let weights = len - CKPT_FIXED;
                (weights.is_multiple_of(4) && weights / 4 == c.n_params as usize)
                    .then_some(LogEntry::Checkpoint(c))
            }
            KIND_ACTIVE if len == 32 => Some(LogEntry::Active(id(&first))),
            KIND_REJECTED if len == 32 + 1 + 32 => Some(LogEntry::Rejected {
                id: id(&first),
                reason: first[32],
                before: Metrics::from_bytes(&first[33..49].try_into().unwrap_or([0; 16])),
                after: Metrics::from_bytes(&first[49..65].try_into().unwrap_or([0; 16])),
            }),
            _ => None,
        };
        Ok(Some((len, e)))
    }

    /// Append one entry whose body is `parts` concatenated.
    fn append(&mut self, kind: u32, parts: &[&[u8]]) -> Result<(), LearnError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let total = align4(HDR + len);
        if self.wp + total > self.flash.capacity() {
            return Err(LearnError::LogFull);
        }
        let mut crc = cairn_core::crc32::Crc32::new();
        parts.iter().for_each(|p| crc.update(p));
        let mut h = [0u8; HDR];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        h[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
        // Stream header + body through a small buffer (flash writes are 4-aligned).
        let mut out = Streamer {
            buf: [0; 256],
            fill: 0,
            at: self.wp,
        };
        out.put(&mut self.flash, &h)?;
        for p in parts {
            out.put(&mut self.flash, p)?;
        }
        out.finish(&mut self.flash)?;
        self.wp += total;
        Ok(())
    }

    /// Persist a promoted checkpoint with its weights, then mark it active.
    pub fn commit(&mut self, c: &Checkpoint, weights: &[f32]) -> Result<(), LearnError> {
        if c.n_params as usize != weights.len() || weights_digest(weights) != c.weights {
            return Err(LearnError::Corrupt);
        }
        let head = c.encode();
        let total = align4(HDR + CKPT_FIXED + 4 * weights.len());
        if self.wp + total + align4(HDR + 32) > self.flash.capacity() {
            return Err(LearnError::LogFull);
        }
        // Body = head ‖ weights (native = little-endian bytes, see the module note).
        let wbytes: &[u8] = bytemuck::cast_slice(weights);
        self.append(KIND_CHECKPOINT, &[&head, wbytes])?;
        self.set_active(&c.id)
    }

    /// Record a discarded candidate and why.
    pub fn record_reject(
        &mut self,
        id: &CkptId,
        reason: &Reject,
        before: &Metrics,
        after: &Metrics,
    ) -> Result<(), LearnError> {
        self.append(
            KIND_REJECTED,
            &[id, &[reason.code()], &before.to_bytes(), &after.to_bytes()],
        )
    }

    /// Mark a checkpoint (already in the log) as the one in use.
    pub fn set_active(&mut self, id: &CkptId) -> Result<(), LearnError> {
        self.append(KIND_ACTIVE, &[id])?;
        self.active = Some(*id);
        Ok(())
    }

    pub fn active(&self) -> Option<CkptId> {
        self.active
    }

    /// Every valid entry, oldest first.
    pub fn for_each(&mut self, f: impl FnMut(LogEntry)) -> Result<(), LearnError> {
        let mut rec = LogRecovery::default();
        self.scan(&mut rec, f).map(|_| ())
    }

    /// Find a checkpoint by id (or by a prefix of at least 4 bytes).
    pub fn find(&mut self, prefix: &[u8]) -> Result<Option<(Checkpoint, usize)>, LearnError> {
        if prefix.len() < 4 || prefix.len() > 32 {
            return Ok(None);
        }
        let cap = self.flash.capacity();
        let last = self.last_used()?;
        let mut pos = 0;
        let mut found = None;
        while pos + HDR <= cap && pos < last {
            match self.entry_at(pos)? {
                Some((len, e)) => {
                    if let Some(LogEntry::Checkpoint(c)) = e {
                        if c.id.starts_with(prefix) {
                            found = Some((c, pos + HDR + CKPT_FIXED));
                        }
                    }
                    pos += align4(HDR + len);
                }
                None => pos += 4,
            }
        }
        Ok(found)
    }

    /// Load a checkpoint's weights into `out` after checking the base model and the weights'
    /// digest: bit for bit what was committed.
    pub fn load(
        &mut self,
        prefix: &[u8],
        base: &[u8; 32],
        out: &mut [f32],
    ) -> Result<Checkpoint, LearnError> {
        let (c, at) = self.find(prefix)?.ok_or(LearnError::UnknownCheckpoint)?;
        if &c.base != base {
            return Err(LearnError::WrongBaseModel);
        }
        if c.n_params as usize != out.len() {
            return Err(LearnError::ShapeMismatch);
        }
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        self.flash
            .read(at as u32, bytes)
            .map_err(|_| LearnError::Storage)?;
        if weights_digest(out) != c.weights || c.compute_id() != c.id {
            return Err(LearnError::Corrupt);
        }
        Ok(c)
    }

    pub fn into_flash(self) -> F {
        self.flash
    }
    pub fn flash(&self) -> &F {
        &self.flash
    }
}

/// Write folded int8 weights, int32 bias and multipliers over the constants of the
/// FullyConnected at op `op` of a model held in RAM (same sizes), and fix the file's CRC:
/// the adapter then runs inside the model at full int8 speed.
pub fn patch_fc(
    model_bytes: &mut [u8],
    op: usize,
    w: &[i8],
    bias: &[i32],
    mult: &[f32],
) -> Result<(), LearnError> {
    use cairn_core::model::{Model, Storage};
    let base = model_bytes.as_ptr() as usize;
    let spans = {
        let m = Model::parse(model_bytes).map_err(|_| LearnError::NotAnInt8Fc)?;
        let v = m.op(op).ok_or(LearnError::NotAnInt8Fc)?;
        let span = |k: usize| -> Option<(usize, usize)> {
            match m.tensor(v.input(k)?).storage {
                Storage::Const(b) => Some((b.as_ptr() as usize - base, b.len())),
                Storage::Arena { .. } => None,
            }
        };
        [span(1), span(2), span(3)]
    };
    let [Some(ws), bs, Some(ms)] = spans else {
        return Err(LearnError::NotAnInt8Fc);
    };
    // Every check before the first write: a refused patch leaves the model as it was.
    let bias_fits = match bs {
        Some(b) => b.1 == 4 * bias.len(),
        None => bias.iter().all(|&b| b == 0),
    };
    if ws.1 != w.len() || ms.1 != 4 * mult.len() || !bias_fits {
        return Err(LearnError::ShapeMismatch);
    }
    model_bytes[ws.0..ws.0 + ws.1].copy_from_slice(bytemuck::cast_slice(w));
    for (i, v) in mult.iter().enumerate() {
        model_bytes[ms.0 + 4 * i..ms.0 + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    if let Some(b) = bs {
        for (i, v) in bias.iter().enumerate() {
            model_bytes[b.0 + 4 * i..b.0 + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    let crc_at = cairn_core::format::hdr::CRC;
    let crc = cairn_core::format::file_crc(model_bytes);
    model_bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    Model::parse(model_bytes).map_err(|_| LearnError::Corrupt)?;
    Ok(())
}

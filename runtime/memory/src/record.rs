//! A memory record and its byte encoding (the body of a PUT entry).
//!
//! Fixed little-endian fields, then the embedding and the payload: readable in place
//! without allocation on any target.

use crate::format::{u16_at, u32_at, u64_at};
use sha2::{Digest, Sha256};

/// Content id: the first 16 bytes of SHA-256 over the record's content (everything but
/// the importance, which may change).
pub type Id = [u8; 16];

pub const MAX_DIM: usize = 4096;
pub const MAX_PAYLOAD: usize = 4096;
/// Fixed part of an encoded record.
pub const FIXED: usize = 16 + 8 + 8 + 2 + 1 + 1 + 16 + 4 + 2 + 2;

/// A record, borrowing its embedding and payload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record<'a> {
    /// The node that first stored it.
    pub origin: u64,
    /// Milliseconds on the origin's clock.
    pub timestamp_ms: u64,
    pub label: u16,
    /// 0 (forget first) ..= 255 (keep).
    pub importance: u8,
    /// Small application-defined numbers (sensor id, class score, ...) in `meta[0..3]`;
    /// `meta[3]` counts the observations a consolidated prototype stands for (0 = one).
    pub meta: [u32; 4],
    /// real value = scale · embedding[i]
    pub scale: f32,
    pub embedding: &'a [i8],
    pub payload: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    Truncated,
    TooLarge,
    BadScale,
}

impl<'a> Record<'a> {
    pub fn encoded_len(&self) -> usize {
        FIXED + self.embedding.len() + self.payload.len()
    }

    /// The content id (independent of `importance`).
    pub fn id(&self) -> Id {
        let mut h = Sha256::new();
        h.update(self.origin.to_le_bytes());
        h.update(self.timestamp_ms.to_le_bytes());
        h.update(self.label.to_le_bytes());
        for m in self.meta {
            h.update(m.to_le_bytes());
        }
        h.update(self.scale.to_bits().to_le_bytes());
        h.update((self.embedding.len() as u32).to_le_bytes());
        h.update(bytemuck::cast_slice::<i8, u8>(self.embedding));
        h.update(self.payload);
        let d = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        id
    }

    /// Write the encoding into `out` (which must hold `encoded_len()` bytes).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, RecordError> {
        if self.embedding.len() > MAX_DIM || self.payload.len() > MAX_PAYLOAD {
            return Err(RecordError::TooLarge);
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(RecordError::BadScale);
        }
        let n = self.encoded_len();
        let out = out.get_mut(..n).ok_or(RecordError::Truncated)?;
        out[0..16].copy_from_slice(&self.id());
        out[16..24].copy_from_slice(&self.origin.to_le_bytes());
        out[24..32].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        out[32..34].copy_from_slice(&self.label.to_le_bytes());
        out[34] = self.importance;
        out[35] = 0;
        for (i, m) in self.meta.iter().enumerate() {
            out[36 + 4 * i..40 + 4 * i].copy_from_slice(&m.to_le_bytes());
        }
        out[52..56].copy_from_slice(&self.scale.to_bits().to_le_bytes());
        out[56..58].copy_from_slice(&(self.embedding.len() as u16).to_le_bytes());
        out[58..60].copy_from_slice(&(self.payload.len() as u16).to_le_bytes());
        out[FIXED..FIXED + self.embedding.len()]
            .copy_from_slice(bytemuck::cast_slice(self.embedding));
        out[FIXED + self.embedding.len()..n].copy_from_slice(self.payload);
        Ok(n)
    }

    /// Read a record in place. Returns it with the id stored in the bytes, which the
    /// caller compares with `id()` to detect tampering.
    pub fn decode(b: &'a [u8]) -> Result<(Id, Record<'a>), RecordError> {
        if b.len() < FIXED {
            return Err(RecordError::Truncated);
        }
        let dim = u16_at(b, 56) as usize;
        let plen = u16_at(b, 58) as usize;
        if dim > MAX_DIM || plen > MAX_PAYLOAD {
            return Err(RecordError::TooLarge);
        }
        if b.len() != FIXED + dim + plen {
            return Err(RecordError::Truncated);
        }
        let scale = f32::from_bits(u32_at(b, 52));
        if !(scale.is_finite() && scale > 0.0) {
            return Err(RecordError::BadScale);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[0..16]);
        let emb: &[u8] = &b[FIXED..FIXED + dim];
        let rec = Record {
            origin: u64_at(b, 16),
            timestamp_ms: u64_at(b, 24),
            label: u16_at(b, 32),
            importance: b[34],
            meta: [u32_at(b, 36), u32_at(b, 40), u32_at(b, 44), u32_at(b, 48)],
            scale,
            embedding: bytemuck::cast_slice(emb),
            payload: &b[FIXED + dim..],
        };
        Ok((id, rec))
    }
}

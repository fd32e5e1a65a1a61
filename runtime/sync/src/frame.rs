//! Frames on the wire. Every frame (≤ the link's MTU):
//!
//! | off | size | field |
//! |---:|---:|---|
//! | 0 | 1 | version (`1`) |
//! | 1 | 1 | flags: 1 handshake (plaintext), 4 ack only |
//! | 2 | 4 | sequence number (ack-only frames: their own counter) |
//! | 6 | 4 | ack: the next sequence number expected from the peer |
//! | 10 | 2 | payload length |
//! | 12 | n | payload: the next bytes of the message stream (ChaCha20-Poly1305 ciphertext after the handshake) |
//! | 12+n | 16 | Poly1305 tag (not on handshake frames) |
//!
//! The header is the AEAD's associated data; the nonce is the direction, the frame class
//! (data or ack-only) and the sequence number, never reused under one key. Stream links
//! (TCP, files) prefix each frame with its length as `u16`.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};

use crate::Reject;

pub const VERSION: u8 = 1;
pub const HEADER: usize = 12;
pub const TAG: usize = 16;
pub const F_HANDSHAKE: u8 = 1;
pub const F_ACK: u8 = 4;
/// Smallest MTU a session accepts (LoRa-class links).
pub const MIN_MTU: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub len: u16,
}

impl Header {
    pub fn write(&self, out: &mut [u8]) {
        out[0] = VERSION;
        out[1] = self.flags;
        out[2..6].copy_from_slice(&self.seq.to_le_bytes());
        out[6..10].copy_from_slice(&self.ack.to_le_bytes());
        out[10..12].copy_from_slice(&self.len.to_le_bytes());
    }
    pub fn parse(b: &[u8]) -> Result<Header, Reject> {
        if b.len() < HEADER {
            return Err(Reject::Malformed);
        }
        if b[0] != VERSION {
            return Err(Reject::Version);
        }
        let h = Header {
            flags: b[1],
            seq: u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
            ack: u32::from_le_bytes([b[6], b[7], b[8], b[9]]),
            len: u16::from_le_bytes([b[10], b[11]]),
        };
        if h.flags & !(F_HANDSHAKE | F_ACK) != 0 {
            return Err(Reject::Malformed);
        }
        let tag = if h.flags & F_HANDSHAKE != 0 { 0 } else { TAG };
        if b.len() != HEADER + h.len as usize + tag {
            return Err(Reject::Malformed);
        }
        Ok(h)
    }
}

/// One direction's cipher.
pub struct Cipher {
    aead: ChaCha20Poly1305,
    dir: u8,
}

impl Cipher {
    pub fn new(key: &[u8; 32], dir: u8) -> Cipher {
        Cipher {
            aead: ChaCha20Poly1305::new(Key::from_slice(key)),
            dir,
        }
    }

    fn nonce(&self, h: &Header) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[0] = self.dir;
        n[1] = (h.flags & F_ACK != 0) as u8;
        n[4..8].copy_from_slice(&h.seq.to_le_bytes());
        n
    }

    /// Encrypt `frame[HEADER..HEADER + len]` in place and append the tag.
    pub fn seal(&self, frame: &mut [u8]) -> Result<(), Reject> {
        let h = Header::parse_unchecked(frame);
        let end = HEADER + h.len as usize;
        let (head, rest) = frame.split_at_mut(HEADER);
        let n = self.nonce(&h);
        let tag = self
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&n), head, &mut rest[..end - HEADER])
            .map_err(|_| Reject::TooLarge)?;
        rest[end - HEADER..end - HEADER + TAG].copy_from_slice(&tag);
        Ok(())
    }

    /// Check and decrypt a sealed frame in place; returns the header.
    pub fn open(&self, frame: &mut [u8]) -> Result<Header, Reject> {
        let h = Header::parse(frame)?;
        if h.flags & F_HANDSHAKE != 0 {
            return Err(Reject::Protocol);
        }
        let n = self.nonce(&h);
        let end = HEADER + h.len as usize;
        let (head, rest) = frame.split_at_mut(HEADER);
        let (body, tag) = rest.split_at_mut(end - HEADER);
        self.aead
            .decrypt_in_place_detached(
                Nonce::from_slice(&n),
                head,
                body,
                Tag::from_slice(&tag[..TAG]),
            )
            .map_err(|_| Reject::AuthFailed)?;
        Ok(h)
    }
}

impl Header {
    fn parse_unchecked(b: &[u8]) -> Header {
        Header {
            flags: b[1],
            seq: u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
            ack: u32::from_le_bytes([b[6], b[7], b[8], b[9]]),
            len: u16::from_le_bytes([b[10], b[11]]),
        }
    }
}

//! Messages: a tag byte, then postcard-encoded fields. On the wire each message is
//! preceded by its length (`u16`); the length-prefixed messages form one ordered stream
//! that the session cuts into frames (small messages share a frame, large ones span
//! several).

use serde::{Deserialize, Serialize};

use crate::recon::{Bound, Id, Prefix, FP, LIST_MAX};

pub const T_HELLO: u8 = 1;
pub const T_RECON: u8 = 2;
pub const T_WANT: u8 = 3;
pub const T_ITEM: u8 = 4;
pub const T_DONE: u8 = 5;
pub const T_CLOSE: u8 = 6;

/// A reconciliation message: `count` ranges follow, covering `[from, last upper)`;
/// `last` ends the sender's turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconHead {
    pub from: Bound,
    pub last: bool,
    pub count: u8,
}

// Ranges are decoded one at a time onto the stack, never stored in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Skip,
    Fingerprint([u8; FP]),
    /// The sender's ids in the range, as prefixes, ascending.
    Ids(heapless::Vec<Prefix, LIST_MAX>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub upper: Bound,
    pub mode: Mode,
}

/// "Send me the item whose id starts with this, from this byte on."
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    pub id: Prefix,
    pub offset: u32,
}

pub const MAX_WANTS: usize = 32;

/// An item chunk's header; the chunk's bytes follow to the end of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemHead {
    pub id: Id,
    pub offset: u32,
    pub total: u32,
}

/// Hello: role, mode, node key, ephemeral X25519 key, nonce, signature — fixed layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub role: u8,
    /// 0: Ed25519 identities + X25519; 1: pre-shared fleet key.
    pub mode: u8,
    pub node: [u8; 32],
    pub eph: [u8; 32],
    pub nonce: [u8; 16],
    pub sig: [u8; 64],
}

pub const HELLO_LEN: usize = 1 + 1 + 32 + 32 + 16 + 64;

impl Hello {
    pub fn encode(&self, out: &mut [u8]) {
        out[0] = self.role;
        out[1] = self.mode;
        out[2..34].copy_from_slice(&self.node);
        out[34..66].copy_from_slice(&self.eph);
        out[66..82].copy_from_slice(&self.nonce);
        out[82..146].copy_from_slice(&self.sig);
    }
    pub fn decode(b: &[u8]) -> Option<Hello> {
        if b.len() != HELLO_LEN {
            return None;
        }
        let mut h = Hello {
            role: b[0],
            mode: b[1],
            node: [0; 32],
            eph: [0; 32],
            nonce: [0; 16],
            sig: [0; 64],
        };
        h.node.copy_from_slice(&b[2..34]);
        h.eph.copy_from_slice(&b[34..66]);
        h.nonce.copy_from_slice(&b[66..82]);
        h.sig.copy_from_slice(&b[82..146]);
        Some(h)
    }
    /// The bytes a Hello's signature covers (the peer's nonce binds a reply to the request).
    pub fn signed_digest(&self, peer_nonce: &[u8; 16]) -> [u8; 32] {
        use sha2_10::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"cairn-sync hello/1");
        h.update([self.role, self.mode]);
        h.update(self.node);
        h.update(self.eph);
        h.update(self.nonce);
        h.update(peer_nonce);
        h.finalize().into()
    }
}

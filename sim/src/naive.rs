//! The baseline a contact is compared with: naive full-state gossip. Each side sends every
//! id it holds (16 bytes each), then every item the other lacks (capped by the same byte
//! budget), in frames of the same MTU with the same header and tag. Two comparisons:
//! protocol bytes (every frame counted once, for cairn its first transmissions), and bytes
//! on the wire, where naive gossip gets an ideal retransmission scheme and no handshake —
//! a lower bound for it — while cairn's go-back-N retransmissions and acknowledgements
//! count in full.

use cairn_sync::frame::{HEADER, TAG};
use cairn_sync::Store;

use crate::fleet::SimNodeInner;

/// Bytes of items in `a` that `b` lacks (ids sorted ascending on both sides).
fn missing_bytes(a: &SimNodeInner<'_>, b: &SimNodeInner<'_>) -> u64 {
    let (ia, ib) = (a.items(), b.items());
    let (x, y) = (ia.ids(), ib.ids());
    let (mut i, mut j, mut bytes) = (0, 0, 0u64);
    while i < x.len() {
        if j < y.len() && y[j] < x[i] {
            j += 1;
        } else if j < y.len() && y[j] == x[i] {
            i += 1;
            j += 1;
        } else {
            bytes += ia.item_len(&x[i]).unwrap_or(0) as u64;
            i += 1;
        }
    }
    bytes
}

/// Framed bytes of `payload` sent in frames of `mtu`.
fn framed(payload: u64, mtu: usize) -> u64 {
    let per_frame = (mtu - HEADER - TAG) as u64;
    payload + payload.div_ceil(per_frame) * (HEADER + TAG) as u64
}

/// What naive gossip would send for a contact between `a` and `b` before any loss: ids
/// both ways, then the items each lacks (capped by the byte budget), in frames of `mtu`.
pub fn framed_cost(
    a: &SimNodeInner<'_>,
    b: &SimNodeInner<'_>,
    mtu: usize,
    byte_budget: u64,
) -> u64 {
    let ids_a = 16 * a.items().ids().len() as u64;
    let ids_b = 16 * b.items().ids().len() as u64;
    let to_b = ids_a + missing_bytes(a, b).min(byte_budget);
    let to_a = ids_b + missing_bytes(b, a).min(byte_budget);
    framed(to_b, mtu) + framed(to_a, mtu)
}

/// Its bytes on the wire with an ideal retransmission scheme (each lost frame sent once
/// more, nothing else): `framed / (1 − loss)`, and no more than the link carries in the
/// window. A lower bound for naive gossip on the contact.
pub fn on_wire(framed: u64, loss: f64, capacity: u64) -> u64 {
    ((framed as f64 / (1.0 - loss).max(0.05)) as u64).min(capacity)
}

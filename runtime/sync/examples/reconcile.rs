//! Reconciliation cost against the naive exchange (not a test):
//!
//!     cargo run --release -p cairn-sync --features std --example reconcile
//!
//! Two nodes hold N records; D of them (384-d int8 embeddings, as the memory store keeps
//! them) are only on one side. Prints the bytes on the wire (both ways, handshake
//! included), the flights of data frames, the items' own bytes, and the naive exchange:
//! one side sends all its ids (16 bytes each), the other answers with the 8-byte prefixes it
//! wants, then the items come (same framing overhead as cairn's item transfer).

use cairn_sync::fleet::Fleet;
use cairn_sync::testkit::{fleet_of, reconcile_cost};
use ed25519_dalek::SigningKey;

fn main() {
    let auth = SigningKey::from_bytes(&[0xA0; 32]);
    let seeds = [[1u8; 32], [2u8; 32]];
    let members: Vec<[u8; 32]> = seeds
        .iter()
        .map(|s| SigningKey::from_bytes(s).verifying_key().to_bytes())
        .collect();
    let fb = fleet_of(&auth, &members);
    let fleet = Fleet::verify(&fb, &auth.verifying_key().to_bytes()).unwrap();
    println!(
        "{:>7} {:>6} {:>10} {:>7} {:>10} {:>11} {:>9} {:>9}",
        "N", "D", "bytes", "flights", "payload", "naive", "/payload", "/naive"
    );
    for &(n, d) in &[
        (10_000usize, 1usize),
        (100_000, 1),
        (100_000, 10),
        (100_000, 100),
        (100_000, 1000),
        (10_000, 100),
    ] {
        let c = reconcile_cost(fleet, seeds, n, d, 384, 0x5EED);
        // Naive: all ids one way, wanted prefixes back, items; frames of 1400 with 28 bytes
        // of header and tag, plus the same handshake (2 × 161 bytes).
        let raw = (n * 16 + d * 9 + (c.payload as usize + d * 23)) as u64;
        let naive = raw + raw.div_ceil(1400 - 28) * 28 + 2 * 161;
        println!(
            "{n:>7} {d:>6} {:>10} {:>7} {:>10} {naive:>11} {:>9.3} {:>9.4}",
            c.bytes,
            c.flights,
            c.payload,
            c.bytes as f64 / c.payload as f64,
            c.bytes as f64 / naive as f64
        );
    }
}

//! Reconciliation cost against the naive exchange (not a test):
//!
//!     cargo run --release -p cairn-sync --features std --example bench
//!
//! Two nodes hold N records; D of them (384-d int8 embeddings, as the memory store keeps
//! them) are only on one side. Prints the bytes on the wire (both ways, handshake
//! included), the flights of data frames, the items' own bytes, and the naive exchange:
//! one side sends all its ids (16 bytes each), the other answers with the 8-byte prefixes it
//! wants, then the items come (same framing overhead as cairn's item transfer).

use cairn_sync::replica::{Policy, Replica};
use cairn_sync::testkit::{fleet_of, run, signed_record, Link, Sparse};
use cairn_sync::{fleet::Fleet, Config, Item, Role, Session, Store};
use ed25519_dalek::SigningKey;

fn main() {
    let auth = SigningKey::from_bytes(&[0xA0; 32]);
    let keys = [
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    ];
    let members: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
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
        let mut s = 0x5EEDu64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s
        };
        let mut common: Vec<[u8; 16]> = (0..n - d)
            .map(|_| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&rnd().to_le_bytes());
                id[8..].copy_from_slice(&rnd().to_le_bytes());
                id
            })
            .collect();
        common.sort_unstable();
        let mut a = Sparse {
            ids: common.clone(),
            real: Replica::new(Policy::default()),
        };
        let b = Sparse {
            ids: common,
            real: Replica::new(Policy::default()),
        };
        let mut payload = 0u64;
        for i in 0..d {
            let item = signed_record(&keys[0], i as u64, 9, &[], 384);
            payload += item.len() as u64;
            a.insert(&Item::verify(&item).unwrap()).unwrap();
        }
        let cfg = Config {
            mtu: 1400,
            byte_budget: u64::MAX,
            psk: None,
            fleet,
            base_model: [0; 32],
            rto_ms: 100,
        };
        let mut sa = Session::new(Role::Responder, cfg, &[1; 32], &[7; 48], a, 0).unwrap();
        let mut sb = Session::new(Role::Initiator, cfg, &[2; 32], &[8; 48], b, 0).unwrap();
        let (mut flights, mut last) = (0u64, 2usize);
        let mut link = Link {
            loss: 0,
            seed: 1,
            limit: usize::MAX,
        };
        let (ok, _) = run(&mut sa, &mut sb, &mut link, |_, dir, f| {
            if f[1] & 4 == 0 && f.len() != 31 && dir != last {
                flights += 1;
                last = dir;
            }
            true
        });
        assert!(ok);
        let bytes = sa.stats().bytes_sent + sb.stats().bytes_sent;
        // Naive: all ids one way, wanted prefixes back, items; frames of 1400 with 28 bytes
        // of header and tag, plus the same handshake (2 × 161 bytes).
        let raw = (n * 16 + d * 9 + (payload as usize + d * 23)) as u64;
        let naive = raw + raw.div_ceil(1400 - 28) * 28 + 2 * 161;
        println!(
            "{n:>7} {d:>6} {bytes:>10} {flights:>7} {payload:>10} {naive:>11} {:>9.3} {:>9.4}",
            bytes as f64 / payload as f64,
            bytes as f64 / naive as f64
        );
    }
}

//! Hostile input to sync: the bytes as (1) frames to a fresh session (handshake parsing),
//! (2) the decrypted message stream of an established session (every message parser, the
//! reconciliation and item paths), (3) a bundle to import, (4) an item to verify. Typed
//! refusals only; never a panic, never a hang.
#![no_main]
use std::sync::OnceLock;

use cairn_sync::fleet::{sign_fleet, Fleet};
use cairn_sync::replica::Replica;
use cairn_sync::{bundle, Config, Item, Role, Session};
use ed25519_dalek::SigningKey;

/// The signed fleet file and the fleet it verifies to, made once (signing and verifying
/// it per input took a seventh of the run; the bytes under test never reach them).
fn fleet() -> Fleet<'static> {
    static BYTES: OnceLock<(Vec<u8>, [u8; 32])> = OnceLock::new();
    static FLEET: OnceLock<Fleet<'static>> = OnceLock::new();
    let (fb, auth) = BYTES.get_or_init(|| {
        let mut m: Vec<[u8; 32]> =
            (1..=2u8).map(|i| SigningKey::from_bytes(&[i; 32]).verifying_key().to_bytes()).collect();
        let mut out = vec![0u8; 10 + 64 + 64];
        let n = sign_fleet(&SigningKey::from_bytes(&[0xA0; 32]), 1, &mut m, &mut out).unwrap();
        out.truncate(n);
        (out, SigningKey::from_bytes(&[0xA0; 32]).verifying_key().to_bytes())
    });
    *FLEET.get_or_init(|| Fleet::verify(fb, auth).unwrap())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let fl = fleet();
    let cfg = Config { mtu: 256, byte_budget: u64::MAX, psk: None, fleet: fl, base_model: [0; 32], rto_ms: 10 };
    // (1) Frames, u16-length-prefixed, to a fresh responder.
    let mut s = Session::new(Role::Responder, cfg, &[1; 32], &[5; 48], Replica::default(), 0).unwrap();
    let mut rest = data;
    let mut out = vec![0u8; 512];
    while rest.len() >= 2 {
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let _ = s.handle_input(&rest[2..2 + n], 0);
        rest = &rest[2 + n..];
        while s.poll_transmit(&mut out).is_some() {}
    }
    // (2) An established session, then the bytes as its decrypted stream.
    let mut a = Session::new(Role::Initiator, cfg, &[2; 32], &[6; 48], Replica::default(), 0).unwrap();
    let mut b = Session::new(Role::Responder, cfg, &[1; 32], &[7; 48], Replica::default(), 0).unwrap();
    // Only the initiator's Hello: the responder is open (keys derived) and mid-protocol.
    while let Some(n) = a.poll_transmit(&mut out) {
        let _ = b.handle_input(&out[..n].to_vec(), 0);
    }
    b.inject_stream(data);
    for _ in 0..64 {
        if b.poll_transmit(&mut out).is_none() {
            break;
        }
    }
    // (3) A bundle, (4) an item.
    let _ = bundle::import(data, 0, &mut Replica::default(), &fl, &[0; 32]);
    let _ = Item::verify(data);
});

//! Helpers the sync test files share: node keys, a signed fleet list, session settings and
//! signed items.
#![allow(dead_code)]

use cairn_sync::fleet::Fleet;
use cairn_sync::item::{sign_into, Kind, HEAD, SIG};
use cairn_sync::Config;
use ed25519_dalek::SigningKey;

pub const AUTHORITY: [u8; 32] = [0xA0; 32];
pub const BASE: [u8; 32] = [0xBA; 32];

/// Node `i`'s signing key.
pub fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

/// A membership list of nodes `1..=n`, signed by the authority.
pub fn fleet_bytes(n: u8) -> Vec<u8> {
    let mut members: Vec<[u8; 32]> = (1..=n).map(|i| key(i).verifying_key().to_bytes()).collect();
    let mut out = vec![0u8; 10 + 32 * members.len() + 64];
    let len = cairn_sync::fleet::sign_fleet(
        &SigningKey::from_bytes(&AUTHORITY),
        1,
        &mut members,
        &mut out,
    )
    .unwrap();
    out.truncate(len);
    out
}

pub fn fleet(b: &[u8]) -> Fleet<'_> {
    let authority = SigningKey::from_bytes(&AUTHORITY).verifying_key();
    Fleet::verify(b, &authority.to_bytes()).unwrap()
}

/// Session settings: no budget, Ed25519 identities, a 50 ms RTO.
pub fn config(fleet: Fleet<'_>, mtu: usize) -> Config<'_> {
    Config {
        mtu,
        byte_budget: u64::MAX,
        psk: None,
        fleet,
        base_model: BASE,
        rto_ms: 50,
    }
}

/// An item of `kind` with `body`, signed by `by`.
pub fn signed_by(by: &SigningKey, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; body.len() + HEAD + SIG];
    let n = sign_into(by, kind, body, &mut out).unwrap();
    out.truncate(n);
    out
}

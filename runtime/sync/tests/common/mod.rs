//! Helpers the sync test files share: node keys, a signed fleet list, session settings and
//! signed items.
#![allow(dead_code)]

use cairn_sync::fleet::Fleet;
use cairn_sync::item::{sign_into, Kind, HEAD, SIG};
use cairn_sync::Config;
#[cfg(feature = "alloc")]
use cairn_sync::{replica::Replica, Session};
use ed25519_dalek::SigningKey;

pub const AUTHORITY: [u8; 32] = [0xA0; 32];
pub const BASE: [u8; 32] = [0xBA; 32];
/// The retransmission timeout of [`config`].
pub const RTO_MS: u64 = 50;

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

/// Session settings: no budget, Ed25519 identities, an RTO of [`RTO_MS`].
pub fn config(fleet: Fleet<'_>, mtu: usize) -> Config<'_> {
    Config {
        mtu,
        byte_budget: u64::MAX,
        psk: None,
        fleet,
        base_model: BASE,
        rto_ms: RTO_MS,
    }
}

/// An item of `kind` with `body`, signed by `by`.
pub fn signed_by(by: &SigningKey, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; body.len() + HEAD + SIG];
    let n = sign_into(by, kind, body, &mut out).unwrap();
    out.truncate(n);
    out
}

/// What the driver saw: frames and bytes sent by each side.
#[cfg(feature = "alloc")]
#[derive(Default, Debug)]
pub struct Tally {
    pub frames: [u64; 2],
    pub bytes: [u64; 2],
    /// Frames delivered to each side (index = receiver).
    pub delivered: [u64; 2],
    pub delivered_bytes: [u64; 2],
}

/// Move frames until both close, through send buffers of exactly `mtu` bytes: every frame
/// must fit, and a buffer one byte short must get none. `fate(dir, k, frame)` says how
/// often frame `k` of direction `dir` is delivered (0 drops it, 2 duplicates it). Time
/// advances by the RTO whenever both sides are idle.
#[cfg(feature = "alloc")]
pub fn drive<'f>(
    a: &mut Session<'f, Replica>,
    b: &mut Session<'f, Replica>,
    mtu: usize,
    mut fate: impl FnMut(usize, u64, &[u8]) -> u32,
) -> (bool, Tally) {
    let mut t = Tally::default();
    let mut now = 0;
    let mut buf = vec![0u8; mtu];
    let mut short = vec![0u8; mtu - 1];
    for _ in 0..50_000 {
        let mut idle = true;
        for dir in 0..2 {
            let (from, to) = if dir == 0 {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            if let Some(n) = from.poll_transmit(&mut short) {
                panic!("a {n}-byte frame into a buffer under the MTU {mtu}");
            }
            while let Some(n) = from.poll_transmit(&mut buf) {
                assert!(n <= mtu, "a frame of {n} bytes over the MTU {mtu}");
                idle = false;
                let k = t.frames[dir];
                t.frames[dir] += 1;
                t.bytes[dir] += n as u64;
                for _ in 0..fate(dir, k, &buf[..n]) {
                    t.delivered[1 - dir] += 1;
                    t.delivered_bytes[1 - dir] += n as u64;
                    let _ = to.handle_input(&buf[..n], now);
                }
            }
        }
        if a.is_closed() && b.is_closed() {
            return (true, t);
        }
        if idle {
            now += RTO_MS;
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
    }
    (false, t)
}

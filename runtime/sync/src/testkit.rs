//! Test and benchmark helpers (with `std`): an in-memory link between two sessions with
//! loss and a tamper hook, and a store whose bulk is bare ids (both sides hold them, so
//! they never travel) around a real replica for the difference.

use std::vec;
use std::vec::Vec;

use crate::item::Item;
use crate::recon::Id;
use crate::replica::Replica;
use crate::session::Session;
use crate::{Reject, Store};

/// A link between two sessions: loss, an optional tamper hook, and a frame limit (to cut
/// the session short). Returns (completed, frames moved).
pub struct Link {
    /// Frames dropped per 1000.
    pub loss: u64,
    pub seed: u64,
    /// Stop after this many frames (to cut a session short).
    pub limit: usize,
}

/// Move frames between `a` and `b` (dropping `link.loss`‰, passing each through
/// `tamper(frame number, direction 0 = a→b, bytes)`, which may edit it or return false to
/// drop it) and advance time when both are idle, until both close; (completed, frames).
pub fn run<S: Store, T: Store>(
    a: &mut Session<'_, S>,
    b: &mut Session<'_, T>,
    link: &mut Link,
    mut tamper: impl FnMut(usize, usize, &mut Vec<u8>) -> bool,
) -> (bool, usize) {
    let mut now = 0u64;
    let mut moved = 0usize;
    let mut buf = vec![0u8; 70_000];
    for _round in 0..200_000 {
        let mut idle = true;
        for dir in 0..2 {
            loop {
                let n = if dir == 0 {
                    a.poll_transmit(&mut buf)
                } else {
                    b.poll_transmit(&mut buf)
                };
                let Some(n) = n else { break };
                idle = false;
                moved += 1;
                if moved > link.limit {
                    return (false, moved);
                }
                link.seed = next(link.seed);
                if (link.seed >> 11) % 1000 < link.loss {
                    continue;
                }
                let mut f = buf[..n].to_vec();
                if !tamper(moved, dir, &mut f) {
                    continue;
                }
                let _ = if dir == 0 {
                    b.handle_input(&f, now)
                } else {
                    a.handle_input(&f, now)
                };
            }
        }
        if a.is_closed() && b.is_closed() {
            return (true, moved);
        }
        if idle {
            now += 60;
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
    }
    (false, moved)
}

fn next(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// Ids without bodies for the bulk of a big set (never transferred: both sides hold them),
/// real items for the difference.
pub struct Sparse {
    pub ids: Vec<Id>,
    pub real: Replica,
}

impl Store for Sparse {
    fn ids(&self) -> &[Id] {
        &self.ids
    }
    fn item_len(&self, id: &Id) -> Option<usize> {
        self.real.item_len(id)
    }
    fn read(&self, id: &Id, o: usize, out: &mut [u8]) -> usize {
        self.real.read(id, o, out)
    }
    fn value(&self, id: &Id) -> u64 {
        self.real.value(id)
    }
    fn insert(&mut self, item: &Item<'_>) -> Result<bool, Reject> {
        let new = self.real.insert(item)?;
        if new {
            if let Err(at) = self.ids.binary_search(&item.id) {
                self.ids.insert(at, item.id);
            }
        }
        Ok(new)
    }
    fn admits(&self, item: &Item<'_>) -> Result<bool, Reject> {
        self.real.admits(item)
    }
    fn revoked(&self, key: &[u8; 32]) -> bool {
        self.real.revoked(key)
    }
}

/// A fleet list of `members` signed by `authority`.
pub fn fleet_of(authority: &ed25519_dalek::SigningKey, members: &[[u8; 32]]) -> Vec<u8> {
    let mut m = members.to_vec();
    let mut out = vec![0u8; 10 + 32 * m.len() + 64];
    let n = crate::fleet::sign_fleet(authority, 1, &mut m, &mut out).expect("buffer sized");
    out.truncate(n);
    out
}

/// A signed memory record from `key` with a `dim`-wide embedding and `payload`.
pub fn signed_record(
    key: &ed25519_dalek::SigningKey,
    ts: u64,
    importance: u8,
    payload: &[u8],
    dim: usize,
) -> Vec<u8> {
    let emb: Vec<i8> = (0..dim as i64).map(|i| (ts as i64 * 7 + i) as i8).collect();
    let r = cairn_memory::Record {
        origin: crate::item::node_id(&key.verifying_key().to_bytes()),
        timestamp_ms: ts,
        label: (ts % 10) as u16,
        importance,
        meta: [0; 4],
        scale: 0.1,
        embedding: &emb,
        payload,
    };
    let mut body = vec![0u8; r.encoded_len()];
    r.encode(&mut body).expect("sized");
    let mut out = vec![0u8; body.len() + 200];
    let n = crate::item::sign_into(key, crate::item::Kind::Record, &body, &mut out).expect("fits");
    out.truncate(n);
    out
}

/// What reconciling a difference cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Bytes on the wire both ways, handshake included.
    pub bytes: u64,
    /// Runs of data frames in one direction (ack-only frames and a frame holding only the
    /// closing Done do not count); two make a round trip.
    pub flights: u64,
    /// The missing items' own bytes.
    pub payload: u64,
}

/// Two members (`seeds`: responder, initiator) share `n - d` random ids; `d` signed records
/// of the responder with `dim`-wide embeddings are missing on the initiator. Syncs them over
/// an MTU of 1400 and reports the cost.
pub fn reconcile_cost(
    fleet: crate::fleet::Fleet<'_>,
    seeds: [[u8; 32]; 2],
    n: usize,
    d: usize,
    dim: usize,
    seed: u64,
) -> Cost {
    let mut s = seed | 1;
    let mut rnd = || {
        s = next(s);
        s
    };
    let mut common: Vec<Id> = (0..n - d)
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
        real: Replica::default(),
    };
    let b = Sparse {
        ids: common,
        real: Replica::default(),
    };
    let signer = ed25519_dalek::SigningKey::from_bytes(&seeds[0]);
    let mut payload = 0u64;
    for i in 0..d {
        let item = signed_record(&signer, i as u64, 9, &[], dim);
        payload += item.len() as u64;
        a.insert(&Item::verify(&item).expect("signed"))
            .expect("fresh");
    }
    let cfg = crate::Config {
        mtu: 1400,
        byte_budget: u64::MAX,
        psk: None,
        fleet,
        base_model: [0; 32],
        rto_ms: 100,
    };
    let mut r1 = [0u8; 48];
    let mut r2 = [0u8; 48];
    for (x, y) in r1.iter_mut().zip(r2.iter_mut()) {
        *x = rnd() as u8;
        *y = rnd() as u8;
    }
    let mut sa = Session::new(crate::Role::Responder, cfg, &seeds[0], &r1, a, 0).expect("config");
    let mut sb = Session::new(crate::Role::Initiator, cfg, &seeds[1], &r2, b, 0).expect("config");
    let (mut flights, mut last) = (0u64, 2usize);
    let mut link = Link {
        loss: 0,
        seed: 1,
        limit: usize::MAX,
    };
    let (ok, _) = run(&mut sa, &mut sb, &mut link, |_, dir, f| {
        let done_only = f.len() == crate::frame::HEADER + 3 + crate::frame::TAG;
        if f[1] & crate::frame::F_ACK == 0 && !done_only && dir != last {
            flights += 1;
            last = dir;
        }
        true
    });
    assert!(
        ok && sa.store().ids() == sb.store().ids(),
        "did not converge"
    );
    Cost {
        bytes: sa.stats().bytes_sent + sb.stats().bytes_sent,
        flights,
        payload,
    }
}

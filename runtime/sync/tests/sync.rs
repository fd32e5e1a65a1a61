//! The sync contract: two replicas converge to the union (minus deletions) over any MTU,
//! loss and interruption; hostile input is refused with a typed reason; bundles carry the
//! same items with no round trip. Randomised parts take `CAIRN_SEED` and print it on failure.

use cairn_sync::bundle;
use cairn_sync::fleet::Fleet;
use cairn_sync::item::{
    contribution_body, meta_body, node_id, sign_into, tombstone_body, ContributionHead, Item, Kind,
};
use cairn_sync::replica::{Policy, Replica};
use cairn_sync::testkit::{run, Link};
use cairn_sync::{Config, Event, Id, Reject, Role, Session, Store};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5E1C)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        b
    }
}

const BASE: [u8; 32] = [0xBA; 32];
const AUTHORITY: [u8; 32] = [0xA0; 32];

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

/// A fleet of nodes 1..=n signed by the authority.
fn fleet_bytes(n: u8) -> Vec<u8> {
    let members: Vec<[u8; 32]> = (1..=n).map(|i| key(i).verifying_key().to_bytes()).collect();
    cairn_sync::testkit::fleet_of(&SigningKey::from_bytes(&AUTHORITY), &members)
}

fn fleet(b: &[u8]) -> Fleet<'_> {
    Fleet::verify(
        b,
        &SigningKey::from_bytes(&AUTHORITY)
            .verifying_key()
            .to_bytes(),
    )
    .unwrap()
}

/// A signed memory record item from node `who`.
fn record(who: u8, ts: u64, importance: u8, payload: &[u8]) -> Vec<u8> {
    record_dim(who, ts, importance, payload, 16)
}

fn record_dim(who: u8, ts: u64, importance: u8, payload: &[u8], dim: usize) -> Vec<u8> {
    cairn_sync::testkit::signed_record(&key(who), ts, importance, payload, dim)
}

fn signed(k: &SigningKey, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; body.len() + 200];
    let n = sign_into(k, kind, body, &mut out).unwrap();
    out.truncate(n);
    out
}

fn put(r: &mut Replica, bytes: &[u8]) -> Id {
    let item = Item::verify(bytes).unwrap();
    r.insert(&item).unwrap();
    item.id
}

fn config<'f>(fleet: Fleet<'f>, mtu: usize) -> Config<'f> {
    Config {
        mtu,
        byte_budget: u64::MAX,
        psk: None,
        fleet,
        base_model: BASE,
        rto_ms: 50,
    }
}

fn sorted_ids(r: &Replica) -> Vec<Id> {
    r.ids().to_vec()
}

fn session<'f>(
    role: Role,
    cfg: Config<'f>,
    who: u8,
    rnd: &mut Rng,
    store: Replica,
) -> Session<'f, Replica> {
    Session::new(role, cfg, &[who; 32], &rnd.bytes::<48>(), store, 0).unwrap()
}

/// Random replicas, random MTU and loss, cut short at random points and resumed (roles
/// swapped, partial items carried over): in the end both hold the union minus deletions.
fn converge_case(seed: u64) {
    let mut r = Rng(seed);
    let fb = fleet_bytes(3);
    let fl = fleet(&fb);
    let (mut a, mut b) = (
        Replica::new(Policy::default()),
        Replica::new(Policy::default()),
    );
    let n = 20 + r.below(120);
    let mut all = Vec::new();
    for i in 0..n {
        let payload = vec![(i % 251) as u8; r.below(600) as usize];
        let item = record(1 + (i % 3) as u8, 1000 + i, r.below(256) as u8, &payload);
        all.push(item.clone());
        match r.below(3) {
            0 => {
                put(&mut a, &item);
            }
            1 => {
                put(&mut b, &item);
            }
            _ => {
                put(&mut a, &item);
                put(&mut b, &item);
            }
        }
    }
    // Some deletions on one side.
    let mut deleted = Vec::new();
    for item in all.iter().take(5) {
        let it = Item::verify(item).unwrap();
        let id = it.id;
        if r.below(2) == 0 {
            // By the record's origin: only it (or a designated deleter) may delete.
            let origin = (1..=3)
                .map(key)
                .find(|k| k.verifying_key().to_bytes() == it.origin)
                .expect("a member's record");
            let t = signed(&origin, Kind::Tombstone, &tombstone_body(&id, 7));
            put(if r.below(2) == 0 { &mut a } else { &mut b }, &t);
            deleted.push(id);
        }
    }
    let mtu = [64usize, 100, 256, 512, 1400, 9000][r.below(6) as usize];
    let loss = [0, 0, 20, 100][r.below(4) as usize];
    let mut partial: Option<(Id, u32, Vec<u8>)> = None;
    let mut done = false;
    for attempt in 0..40 {
        let limit = if attempt < 3 {
            1 + r.below(60) as usize
        } else {
            usize::MAX
        };
        let mut link = Link {
            loss,
            seed: r.next(),
            limit,
        };
        let (ra, rb) = if attempt % 2 == 0 {
            (Role::Initiator, Role::Responder)
        } else {
            (Role::Responder, Role::Initiator)
        };
        let mut sa = session(ra, config(fl, mtu), 1, &mut r, core::mem::take(&mut a));
        let mut sb = session(rb, config(fl, mtu), 2, &mut r, core::mem::take(&mut b));
        if let Some((id, total, bytes)) = partial.take() {
            sb.resume(id, total, &bytes);
        }
        let (ok, _) = run(&mut sa, &mut sb, &mut link, |_, _, _| true);
        partial = sb.partial().map(|(i, t, b)| (i, t, b.to_vec()));
        a = sa.into_store();
        b = sb.into_store();
        if ok {
            done = true;
            break;
        }
    }
    assert!(
        done,
        "CAIRN_SEED={seed}: never completed (mtu {mtu}, loss {loss})"
    );
    assert_eq!(
        sorted_ids(&a),
        sorted_ids(&b),
        "CAIRN_SEED={seed}: sets differ"
    );
    for item in &all {
        let id = Item::verify(item).unwrap().id;
        if deleted.contains(&id) {
            assert!(
                a.get(&id).is_none() && b.get(&id).is_none(),
                "CAIRN_SEED={seed}"
            );
            assert!(
                a.has_tombstone(&id) && b.has_tombstone(&id),
                "CAIRN_SEED={seed}"
            );
        } else {
            assert_eq!(a.get(&id), Some(item.as_slice()), "CAIRN_SEED={seed}");
            assert_eq!(b.get(&id), Some(item.as_slice()), "CAIRN_SEED={seed}");
        }
    }
}

#[test]
fn two_replicas_converge() {
    converge_case(seed());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn any_sets_mtus_losses_and_interruptions_converge(s in any::<u64>()) {
        converge_case(s);
    }
}

fn big_case(n: usize, diff: usize, dim: usize, seed: u64) -> (u64, u64, u64) {
    let fb = fleet_bytes(2);
    let c = cairn_sync::testkit::reconcile_cost(fleet(&fb), [[1; 32], [2; 32]], n, diff, dim, seed);
    (c.bytes, c.flights, c.payload)
}

#[test]
fn one_difference_in_100k_is_cheap() {
    let (bytes, flights, payload) = big_case(100_000, 1, 384, seed());
    println!(
        "1 of 100k differs: {bytes} bytes on the wire, {flights} flights ({} round trips, handshake included), payload {payload}",
        flights.div_ceil(2)
    );
    assert!(bytes <= 4096, "{bytes} bytes");
    assert!(flights <= 6, "{flights} flights");
}

/// 1% of the records differ (384-d int8 embeddings, as the memory store keeps them): the
/// bytes on the wire stay within 1.5x the items' own bytes.
#[test]
fn one_percent_difference_costs_near_the_payload() {
    let (bytes, _, payload) = big_case(100_000, 1000, 384, seed());
    let ratio = bytes as f64 / payload as f64;
    println!("1% of 100k differs (384-d records): {bytes} bytes for {payload} bytes of items ({ratio:.3}x)");
    assert!(ratio <= 1.5, "{ratio}");
}

/// Run a clean sync between a (node 1) and b (node 2) with a tamper hook; returns both
/// sessions' stats, whether it completed, and the stores.
fn tampered(
    a: Replica,
    b: Replica,
    fb: &[u8],
    tamper: impl FnMut(usize, usize, &mut Vec<u8>) -> bool,
    who_b: u8,
) -> (bool, cairn_sync::Stats, cairn_sync::Stats, Replica, Replica) {
    let fl = fleet(fb);
    let mut r = Rng(3);
    let mut sa = session(Role::Initiator, config(fl, 256), 1, &mut r, a);
    let mut sb = session(Role::Responder, config(fl, 256), who_b, &mut r, b);
    let mut link = Link {
        loss: 0,
        seed: 1,
        limit: 100_000,
    };
    let (ok, _) = run(&mut sa, &mut sb, &mut link, tamper);
    let (x, y) = (*sa.stats(), *sb.stats());
    (ok, x, y, sa.into_store(), sb.into_store())
}

#[test]
fn flipped_bit_and_replayed_frames_are_refused_and_the_session_goes_on() {
    let fb = fleet_bytes(3);
    let mut a = Replica::new(Policy::default());
    for i in 0..10 {
        put(&mut a, &record(1, i, 1, &[1; 300]));
    }
    // Flip one bit in the 6th frame; replay the 3rd (A's first encrypted frame) much later.
    let mut saved: Option<Vec<u8>> = None;
    let mut replayed = false;
    let (ok, sa, sb, a, b) = tampered(
        a,
        Replica::new(Policy::default()),
        &fb,
        |k, dir, f| {
            if k == 6 {
                let at = f.len() / 2;
                f[at] ^= 0x04;
            }
            // A's first encrypted frame to B, replayed later in the same direction.
            if dir == 0 && saved.is_none() && f[1] == 0 {
                saved = Some(f.clone());
            }
            if dir == 0 && k >= 30 && !replayed {
                if let Some(s) = &saved {
                    *f = s.clone();
                    replayed = true;
                }
            }
            true
        },
        2,
    );
    assert!(ok, "the session did not recover");
    assert_eq!(a.ids(), b.ids());
    let rej = |s: &cairn_sync::Stats, r: Reject| s.rejected[r as usize];
    assert!(rej(&sa, Reject::AuthFailed) + rej(&sb, Reject::AuthFailed) >= 1);
    assert!(rej(&sa, Reject::Replay) + rej(&sb, Reject::Replay) >= 1);
}

#[test]
fn garbled_and_oversized_frames_are_refused() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut r = Rng(9);
    let mut s = session(
        Role::Responder,
        config(fl, 256),
        1,
        &mut r,
        Replica::default(),
    );
    assert_eq!(s.handle_input(&[], 0), Err(Reject::Malformed));
    assert_eq!(s.handle_input(&[9; 40], 0), Err(Reject::Version));
    assert_eq!(s.handle_input(&vec![1u8; 70_000], 0), Err(Reject::TooLarge));
    let mut f = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0];
    f.extend([0u8; 10]);
    assert_eq!(s.handle_input(&f, 0), Err(Reject::Malformed));
    // An encrypted-looking frame before any handshake.
    let mut g = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0];
    g.extend([0u8; 20]);
    assert_eq!(s.handle_input(&g, 0), Err(Reject::Protocol));
    assert!(!s.is_closed());
}

#[test]
fn a_non_member_cannot_connect() {
    let fb = fleet_bytes(2);
    // Node 7 is not in the fleet: the responder closes with NotMember.
    let (ok, _, sb, _, _) = tampered(
        Replica::default(),
        Replica::default(),
        &fb,
        |_, _, _| true,
        2,
    );
    assert!(ok);
    let fl = fleet(&fb);
    let mut r = Rng(4);
    let mut outsider = Session::new(
        Role::Initiator,
        config(fl, 256),
        &[7; 32],
        &r.bytes(),
        Replica::default(),
        0,
    )
    .unwrap();
    let mut member = session(
        Role::Responder,
        config(fl, 256),
        1,
        &mut r,
        Replica::default(),
    );
    let mut link = Link {
        loss: 0,
        seed: 1,
        limit: 1000,
    };
    run(&mut outsider, &mut member, &mut link, |_, _, _| true);
    assert!(member.is_closed());
    assert_eq!(member.stats().rejected[Reject::NotMember as usize], 1);
    let mut saw = false;
    while let Some(e) = member.poll_event() {
        saw |= e == Event::Closed(Reject::NotMember);
    }
    assert!(saw);
    let _ = sb;
}

#[test]
fn items_from_non_members_forged_or_for_another_base_model_are_rejected() {
    let fb = fleet_bytes(2);
    let mut a = Replica::new(Policy::default());
    // Node 5 is not a member; its record is in a's store (as if relayed by a bad peer).
    let outsider = record(5, 1, 1, b"x");
    let it = Item::verify(&outsider).unwrap();
    a.insert(&it).unwrap();
    // A contribution for another base model.
    let mut body = vec![0u8; 56 + 16];
    let h = ContributionHead {
        base: [0xEE; 32],
        key: [1; 16],
        n: 3,
        dim: 4,
    };
    let n = contribution_body(&h, &[1.0, 2.0, 3.0, 4.0], &mut body).unwrap();
    let wrong = signed(&key(1), Kind::Contribution, &body[..n]);
    put(&mut a, &wrong);
    let good = record(1, 2, 1, b"ok");
    let good_id = put(&mut a, &good);
    let (ok, _, sb, _, b) = tampered(a, Replica::default(), &fb, |_, _, _| true, 2);
    assert!(ok);
    assert_eq!(sb.rejected[Reject::NotMember as usize], 1);
    assert_eq!(sb.rejected[Reject::WrongBaseModel as usize], 1);
    assert!(b.get(&good_id).is_some());
    assert_eq!(b.len(), 1);
    // A forged record: node 2 signs a record that claims node 1 as its origin.
    let k1 = key(1).verifying_key().to_bytes();
    let emb = [1i8; 4];
    let rec = cairn_memory::Record {
        origin: node_id(&k1),
        timestamp_ms: 5,
        label: 1,
        importance: 1,
        meta: [0; 4],
        scale: 0.5,
        embedding: &emb,
        payload: &[],
    };
    let mut body = vec![0u8; rec.encoded_len()];
    rec.encode(&mut body).unwrap();
    let forged = signed(&key(2), Kind::Record, &body);
    assert_eq!(Item::verify(&forged).err(), Some(Reject::Forged));
    // A flipped bit anywhere in an item breaks its signature or its id.
    let mut bad = good.clone();
    bad[60] ^= 1;
    assert!(Item::verify(&bad).is_err());
}

#[test]
fn merge_rules() {
    let mut r = Replica::new(Policy {
        max_per_origin: 2,
        max_norm: 1.0,
    });
    // A tombstone by the record's origin before its record: the record never appears
    // (deleted ids are remembered, not listed).
    let rec = record(1, 3, 5, b"p");
    let id = Item::verify(&rec).unwrap().id;
    put(
        &mut r,
        &signed(&key(1), Kind::Tombstone, &tombstone_body(&id, 1)),
    );
    assert_eq!(r.insert(&Item::verify(&rec).unwrap()), Ok(false));
    assert!(r.get(&id).is_none() && r.is_deleted(&id) && !r.ids().contains(&id));
    // Metadata: last writer by HLC wins in any arrival order.
    let rec2 = record(1, 4, 5, b"q");
    let id2 = put(&mut r, &rec2);
    put(
        &mut r,
        &signed(&key(1), Kind::Meta, &meta_body(&id2, 200, 20)),
    );
    put(
        &mut r,
        &signed(&key(2), Kind::Meta, &meta_body(&id2, 10, 10)),
    );
    assert_eq!(r.importance(&id2), Some(200));
    // Contributions: the merged adapter does not depend on order or duplicates; per-origin
    // caps hold; a large Δ is clipped to the norm bound.
    let contrib = |who: u8, n: u32, v: [f32; 2]| {
        let h = ContributionHead {
            base: BASE,
            key: [9; 16],
            n,
            dim: 2,
        };
        let mut body = vec![0u8; 64];
        let len = contribution_body(&h, &v, &mut body).unwrap();
        signed(&key(who), Kind::Contribution, &body[..len])
    };
    let c = [
        contrib(1, 2, [0.2, 0.4]),
        contrib(2, 1, [0.3, -0.1]),
        contrib(3, 4, [40.0, 0.0]),
    ];
    let mut x = Replica::new(r.policy);
    let mut y = Replica::new(r.policy);
    for i in [0, 1, 2] {
        put(&mut x, &c[i]);
    }
    for i in [2, 1, 0, 1] {
        let _ = y.insert(&Item::verify(&c[i]).unwrap());
    }
    let (mx, nx) = x.merged(&[9; 16]).unwrap();
    let (my, ny) = y.merged(&[9; 16]).unwrap();
    assert_eq!((nx, ny), (7, 7));
    assert_eq!(mx, my);
    // Node 3's Δ = (10, 0) is clipped to norm 1: contributes 4·(1, 0).
    assert!((mx[0] - (0.2 + 0.3 + 4.0) / 7.0).abs() < 1e-5, "{mx:?}");
    put(&mut x, &contrib(1, 1, [0.0, 0.1]));
    assert_eq!(
        x.insert(&Item::verify(&contrib(1, 5, [0.0, 0.2])).unwrap()),
        Err(Reject::Capped)
    );
}

#[test]
fn bundles_carry_items_with_no_round_trip() {
    let fb = fleet_bytes(3);
    let fl = fleet(&fb);
    let mut a = Replica::new(Policy::default());
    let mark = a.mark();
    let mut items = Vec::new();
    for i in 0..30 {
        let it = record(1 + (i % 2) as u8, i, (i * 8) as u8, &[i as u8; 100]);
        put(&mut a, &it);
        items.push(it);
    }
    let b = bundle::export(&a, &key(1), mark);
    // Whole: everything imported, authenticated as a unit.
    let mut r = Replica::default();
    let rep = bundle::import(&b, 0, &mut r, &fl, &BASE).unwrap();
    assert!(rep.complete);
    assert_eq!(rep.stored, 30);
    assert_eq!(r.ids(), a.ids());
    // Again: idempotent.
    let rep = bundle::import(&b, 0, &mut r, &fl, &BASE).unwrap();
    assert_eq!((rep.stored, rep.duplicates), (0, 30));
    // Truncated: whole items before the cut, then resumed from the reported offset.
    let cut = b.len() * 3 / 5;
    let mut t = Replica::default();
    let first = bundle::import(&b[..cut], 0, &mut t, &fl, &BASE).unwrap();
    assert!(!first.complete && first.stored > 0 && first.stored < 30);
    let rest = bundle::import(&b, first.resume_at, &mut t, &fl, &BASE).unwrap();
    assert!(rest.complete);
    assert_eq!(first.stored + rest.stored, 30);
    assert_eq!(t.ids(), a.ids());
    // A tampered trailer: items still verify one by one, the bundle is not "complete".
    let mut bad = b.clone();
    let l = bad.len();
    bad[l - 1] ^= 1;
    let rep = bundle::import(&bad, 0, &mut Replica::default(), &fl, &BASE).unwrap();
    assert!(!rep.complete);
    assert_eq!(rep.rejected[Reject::BadSignature as usize], 1);
    // An item flipped inside: that one is refused, the rest stored.
    let mut bad = b.clone();
    bad[200] ^= 0x10;
    let rep = bundle::import(&bad, 0, &mut Replica::default(), &fl, &BASE).unwrap();
    assert_eq!(rep.stored, 29);
    // From a non-member sender: refused outright.
    let other = bundle::export(&a, &key(9), mark);
    assert_eq!(
        bundle::import(&other, 0, &mut Replica::default(), &fl, &BASE).err(),
        Some(Reject::NotMember)
    );
}

#[test]
fn pre_shared_key_mode_and_byte_budget() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut a = Replica::new(Policy::default());
    for i in 0..20 {
        put(&mut a, &record(1, i, (i * 10) as u8, &[0; 500]));
    }
    let mut r = Rng(5);
    let psk = Config {
        psk: Some([0x42; 32]),
        byte_budget: 3000,
        ..config(fl, 128)
    };
    let mut sa = session(Role::Responder, psk, 1, &mut r, a);
    let mut sb = session(
        Role::Initiator,
        Config {
            byte_budget: u64::MAX,
            ..psk
        },
        2,
        &mut r,
        Replica::default(),
    );
    let mut link = Link {
        loss: 0,
        seed: 1,
        limit: 100_000,
    };
    let (ok, _) = run(&mut sa, &mut sb, &mut link, |_, _, _| true);
    assert!(ok);
    let got = sb.store().len();
    assert!((4..20).contains(&got), "budget let {got} items through");
    // The most important went first.
    let imps: Vec<u8> = sb
        .store()
        .records()
        .map(|(id, _)| sb.store().importance(id).unwrap())
        .collect();
    assert!(imps.iter().all(|&i| i >= 190 - 10 * got as u8), "{imps:?}");
    // A peer with another key cannot talk in PSK mode.
    let mut x = session(Role::Initiator, psk, 1, &mut r, Replica::default());
    let mut y = session(
        Role::Responder,
        Config {
            psk: Some([0x43; 32]),
            ..psk
        },
        2,
        &mut r,
        Replica::default(),
    );
    let mut link = Link {
        loss: 0,
        seed: 1,
        limit: 200,
    };
    let (ok, _) = run(&mut x, &mut y, &mut link, |_, _, _| true);
    assert!(!ok);
    assert!(
        y.stats().rejected[Reject::AuthFailed as usize]
            + x.stats().rejected[Reject::AuthFailed as usize]
            > 0
    );
}

/// Golden bytes: a signed item, a fleet list and the first frames of a session with fixed
/// keys and randomness. A change to any wire format shows up here (update the files only
/// with a version bump and a spec change).
#[test]
fn golden_byte_vectors() {
    let hex = |b: &[u8]| b.iter().map(|v| format!("{v:02x}")).collect::<String>();
    let mut lines = Vec::new();
    lines.push(format!("item {}", hex(&record(1, 42, 7, b"golden"))));
    lines.push(format!("fleet {}", hex(&fleet_bytes(2))));
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut a = Replica::default();
    put(&mut a, &record(1, 1, 1, b"a"));
    let mut sa = Session::new(Role::Initiator, config(fl, 128), &[1; 32], &[3; 48], a, 0).unwrap();
    let mut sb = Session::new(
        Role::Responder,
        config(fl, 128),
        &[2; 32],
        &[4; 48],
        Replica::default(),
        0,
    )
    .unwrap();
    let mut buf = vec![0u8; 256];
    for k in 0..3 {
        let n = sa.poll_transmit(&mut buf).unwrap();
        lines.push(format!("initiator frame {k} {}", hex(&buf[..n])));
        sb.handle_input(&buf[..n], 0).unwrap();
        let Some(n) = sb.poll_transmit(&mut buf) else {
            break;
        };
        lines.push(format!("responder frame {k} {}", hex(&buf[..n])));
        sa.handle_input(&buf[..n], 0).unwrap();
    }
    // An authority statement (kind 5): the fleet authority revokes node 2's key.
    let revoke = cairn_sync::item::Statement {
        action: cairn_sync::item::Action::Revoke,
        subject: key(2).verifying_key().to_bytes(),
        hlc: 42 << 16,
    };
    let body = cairn_sync::item::statement_body(&revoke);
    let authority = SigningKey::from_bytes(&AUTHORITY);
    lines.push(format!(
        "revocation {}",
        hex(&signed(&authority, Kind::Authority, &body))
    ));
    let got = lines.join("\n") + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wire.hex");
    if std::env::var("CAIRN_BLESS").is_ok() {
        std::fs::write(&path, &got).unwrap();
    }
    let want =
        std::fs::read_to_string(&path).expect("tests/golden/wire.hex (CAIRN_BLESS=1 writes it)");
    assert_eq!(got, want, "wire bytes changed");
}

/// A store that keeps no rules of its own: only the required methods, so `admits` and
/// `revoked` are the trait's defaults.
struct NoRules(Replica);

impl Store for NoRules {
    fn ids(&self) -> &[Id] {
        self.0.ids()
    }
    fn item_len(&self, id: &Id) -> Option<usize> {
        self.0.item_len(id)
    }
    fn read(&self, id: &Id, offset: usize, out: &mut [u8]) -> usize {
        self.0.read(id, offset, out)
    }
    fn value(&self, id: &Id) -> u64 {
        self.0.value(id)
    }
    fn insert(&mut self, item: &Item<'_>) -> Result<bool, Reject> {
        self.0.insert(item)
    }
}

/// The trait's defaults: a store without rules admits every item and holds no revocation,
/// so a session with it syncs both ways.
#[test]
fn a_store_without_rules_admits_everything_and_syncs() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mine = record(1, 1000, 7, b"mine");
    let theirs = record(2, 2000, 9, b"theirs");
    let mut plain = NoRules(Replica::new(Policy::default()));
    assert_eq!(plain.admits(&Item::verify(&theirs).unwrap()), Ok(true));
    for k in 1..=2u8 {
        assert!(!plain.revoked(&key(k).verifying_key().to_bytes()));
    }
    put(&mut plain.0, &mine);
    let mut other = Replica::new(Policy::default());
    put(&mut other, &theirs);
    let mut rnd = Rng(seed());
    let mut sa = Session::new(
        Role::Initiator,
        config(fl, 512),
        &[1; 32],
        &rnd.bytes::<48>(),
        plain,
        0,
    )
    .unwrap();
    let mut sb = session(Role::Responder, config(fl, 512), 2, &mut rnd, other);
    let mut link = Link {
        loss: 0,
        seed: seed(),
        limit: usize::MAX,
    };
    let (ok, _) = run(&mut sa, &mut sb, &mut link, |_, _, _| true);
    assert!(ok, "seed {} (CAIRN_SEED)", seed());
    let (a, b) = (sa.into_store(), sb.into_store());
    assert_eq!(a.ids(), b.ids());
    assert_eq!(a.ids().len(), 2);
}

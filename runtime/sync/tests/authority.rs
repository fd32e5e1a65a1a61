//! Who may delete, and revocation: a tombstone deletes only its target's origin's record
//! (or any record, from a key the fleet authority designated); an authority-signed
//! revocation travels like any item and makes every node refuse the revoked key's items
//! and sessions and drop what it signed. Randomised parts take `CAIRN_SEED` and print it on
//! failure.

use cairn_sync::bundle;
use cairn_sync::fleet::Fleet;
use cairn_sync::item::{
    sign_into, statement_body, tombstone_body, Action, Item, Kind, Statement, MAX_ITEM,
};
use cairn_sync::replica::{Policy, Replica};
use cairn_sync::testkit::{fleet_of, run, signed_record, Link};
use cairn_sync::{Config, Event, Id, Reject, Role, Session, Store};
use ed25519_dalek::SigningKey;

const AUTHORITY: [u8; 32] = [0xA0; 32];
const BASE: [u8; 32] = [0xBA; 32];

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xA17)
}

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}
fn public(i: u8) -> [u8; 32] {
    key(i).verifying_key().to_bytes()
}
fn authority() -> SigningKey {
    SigningKey::from_bytes(&AUTHORITY)
}

/// Members 1..=4.
fn fleet_bytes() -> Vec<u8> {
    let members: Vec<[u8; 32]> = (1..=4).map(public).collect();
    fleet_of(&authority(), &members)
}
fn fleet(b: &[u8]) -> Fleet<'_> {
    Fleet::verify(b, &authority().verifying_key().to_bytes()).unwrap()
}

fn signed(k: &SigningKey, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; MAX_ITEM];
    let n = sign_into(k, kind, body, &mut out).unwrap();
    out.truncate(n);
    out
}
fn record(who: u8, ts: u64) -> Vec<u8> {
    signed_record(&key(who), ts, 9, &[who; 40], 8)
}
fn tombstone(by: &SigningKey, target: &Id) -> Vec<u8> {
    signed(by, Kind::Tombstone, &tombstone_body(target, 77))
}
fn statement(by: &SigningKey, action: Action, subject: [u8; 32]) -> Vec<u8> {
    let s = Statement {
        action,
        subject,
        hlc: 1 << 16,
    };
    signed(by, Kind::Authority, &statement_body(&s))
}
fn id(bytes: &[u8]) -> Id {
    Item::verify(bytes).unwrap().id
}
fn insert(r: &mut Replica, bytes: &[u8]) -> Result<bool, Reject> {
    r.insert(&Item::verify(bytes).unwrap())
}

fn config(fleet: Fleet<'_>) -> Config<'_> {
    Config {
        mtu: 256,
        byte_budget: u64::MAX,
        psk: None,
        fleet,
        base_model: BASE,
        rto_ms: 50,
    }
}

/// One session between node `who_a` holding `a` and node `who_b` holding `b`:
/// (completed, a's stats, b's stats, a, b, events seen by b).
fn sync(
    fb: &[u8],
    who_a: u8,
    a: Replica,
    who_b: u8,
    b: Replica,
) -> (
    bool,
    cairn_sync::Stats,
    cairn_sync::Stats,
    Replica,
    Replica,
    Vec<Event>,
) {
    let fl = fleet(fb);
    let mut sa = Session::new(Role::Initiator, config(fl), &[who_a; 32], &[5; 48], a, 0).unwrap();
    let mut sb = Session::new(Role::Responder, config(fl), &[who_b; 32], &[6; 48], b, 0).unwrap();
    let mut link = Link {
        loss: 0,
        seed: 9,
        limit: 100_000,
    };
    let (ok, _) = run(&mut sa, &mut sb, &mut link, |_, _, _| true);
    let mut events = Vec::new();
    while let Some(e) = sb.poll_event() {
        events.push(e);
    }
    let (x, y) = (*sa.stats(), *sb.stats());
    (ok, x, y, sa.into_store(), sb.into_store(), events)
}

#[test]
fn a_tombstone_from_another_member_is_refused_and_deletes_nothing() {
    let rec = record(1, 10);
    let target = id(&rec);
    let forged = tombstone(&key(2), &target);
    // Record first: the forged tombstone is refused with a typed reason.
    let mut r = Replica::default();
    insert(&mut r, &rec).unwrap();
    assert_eq!(insert(&mut r, &forged), Err(Reject::NotOwner));
    assert!(r.get(&target).is_some() && !r.is_deleted(&target));
    // Tombstone first: held until its target arrives, then proven forged and dropped.
    let mut r = Replica::default();
    assert_eq!(insert(&mut r, &forged), Ok(true));
    assert_eq!(insert(&mut r, &rec), Ok(true));
    assert!(r.get(&target).is_some() && !r.is_deleted(&target));
    assert!(!r.has_tombstone(&target) && r.get(&id(&forged)).is_none());
    assert_eq!(r.ids(), &[target][..]);
    // The origin's own tombstone deletes, in either order.
    let genuine = tombstone(&key(1), &target);
    insert(&mut r, &genuine).unwrap();
    assert!(r.get(&target).is_none() && r.is_deleted(&target));
    let mut r2 = Replica::default();
    insert(&mut r2, &genuine).unwrap();
    assert_eq!(insert(&mut r2, &rec), Ok(false));
    assert!(r2.get(&target).is_none() && r2.is_deleted(&target));
    assert_eq!(r.ids(), r2.ids());
    // A forged tombstone for an already deleted record is refused too.
    assert_eq!(insert(&mut r, &forged), Err(Reject::NotOwner));
}

#[test]
fn a_forged_tombstone_sent_over_a_session_is_refused() {
    let fb = fleet_bytes();
    let rec = record(1, 10);
    let target = id(&rec);
    let mut a = Replica::default();
    insert(&mut a, &rec).unwrap();
    // Node 2 holds a tombstone it signed for node 1's record (it never held the record).
    let mut b = Replica::default();
    insert(&mut b, &tombstone(&key(2), &target)).unwrap();
    // Node 1 sends nothing (a zero byte budget), so the tombstone reaches it before the
    // record reaches node 2 (which would prove the tombstone forged and drop it).
    let fl = fleet(&fb);
    let quiet = Config {
        byte_budget: 0,
        ..config(fl)
    };
    let mut sa = Session::new(Role::Initiator, quiet, &[1; 32], &[5; 48], a, 0).unwrap();
    let mut sb = Session::new(Role::Responder, config(fl), &[2; 32], &[6; 48], b, 0).unwrap();
    let mut link = Link {
        loss: 0,
        seed: 9,
        limit: 100_000,
    };
    let (ok, _) = run(&mut sa, &mut sb, &mut link, |_, _, _| true);
    assert!(ok);
    assert_eq!(sa.stats().rejected[Reject::NotOwner as usize], 1);
    let a = sa.into_store();
    assert!(a.get(&target).is_some() && !a.is_deleted(&target) && !a.has_tombstone(&target));
    // Both ways: node 2 gets the record and drops the tombstone, proven forged.
    let (ok, _, _, a, b, _) = sync(&fb, 1, a, 2, sb.into_store());
    assert!(ok);
    assert!(a.get(&target).is_some() && b.get(&target).is_some());
    assert!(!b.has_tombstone(&target) && !b.is_deleted(&target));
    assert_eq!(a.ids(), b.ids());
}

#[test]
fn a_designated_deleter_may_delete_any_record() {
    let rec = record(1, 10);
    let target = id(&rec);
    let by3 = tombstone(&key(3), &target);
    let grant = statement(&authority(), Action::Deleter, public(3));
    let mut r = Replica::default();
    insert(&mut r, &rec).unwrap();
    assert_eq!(insert(&mut r, &by3), Err(Reject::NotOwner));
    insert(&mut r, &grant).unwrap();
    assert!(r.is_deleter(&public(3)));
    assert_eq!(insert(&mut r, &by3), Ok(true));
    assert!(r.is_deleted(&target) && r.get(&target).is_none());
    // A deleter deletes records only: not an authority statement (nor an update or a
    // contribution), held or arriving later.
    let revoke2 = statement(&authority(), Action::Revoke, public(2));
    let early = tombstone(&key(3), &id(&revoke2));
    assert_eq!(insert(&mut r, &early), Ok(true));
    insert(&mut r, &revoke2).unwrap();
    assert!(r.is_revoked(&public(2)) && r.get(&id(&revoke2)).is_some());
    assert!(r.get(&id(&early)).is_none(), "dropped as forged");
    assert_eq!(insert(&mut r, &early), Err(Reject::NotOwner));
    // Revoking the deleter undoes the deletions only it made: the record may come back.
    insert(&mut r, &statement(&authority(), Action::Revoke, public(3))).unwrap();
    assert!(!r.is_deleted(&target) && !r.is_deleter(&public(3)));
    assert_eq!(insert(&mut r, &rec), Ok(true));
}

#[test]
fn a_revoked_keys_items_and_sessions_are_refused_once_the_revocation_arrives_by_sync() {
    let fb = fleet_bytes();
    let fl = fleet(&fb);
    let revocation = statement(&authority(), Action::Revoke, public(3));
    // Node 1 learnt the revocation (from the authority's tool); node 2 holds node 3's
    // records, a tombstone and a record of its own.
    let mut a = Replica::default();
    insert(&mut a, &revocation).unwrap();
    let mut b = Replica::default();
    let old: Vec<Vec<u8>> = (0..5).map(|t| record(3, t)).collect();
    for o in &old {
        insert(&mut b, o).unwrap();
    }
    let own = record(2, 50);
    insert(&mut b, &own).unwrap();
    insert(&mut b, &tombstone(&key(3), &id(&old[0]))).unwrap();
    assert!(b.get(&id(&old[0])).is_none());
    let (ok, _, _, a, mut b, _) = sync(&fb, 1, a, 2, b);
    assert!(ok);
    // The revocation arrived by sync: node 3's items are dropped (policy), not relayed.
    assert!(b.is_revoked(&public(3)));
    for o in &old {
        assert!(a.get(&id(o)).is_none() && b.get(&id(o)).is_none());
    }
    assert_eq!(a.ids(), b.ids());
    assert_eq!(a.ids().len(), 2, "the revocation and node 2's record");
    // New items by node 3 are refused, by the store, a bundle and a session.
    assert_eq!(insert(&mut b, &record(3, 99)), Err(Reject::Revoked));
    let mut bundle = Vec::new();
    let mut sink = |x: &[u8]| bundle.extend_from_slice(x);
    let mut w = bundle::BundleWriter::start(&key(4), 0, &mut sink);
    w.item(&record(3, 100), &mut sink);
    w.finish(&key(4), &mut sink);
    let rep = bundle::import(&bundle, 0, &mut b, &fl, &BASE).unwrap();
    assert_eq!((rep.stored, rep.rejected[Reject::Revoked as usize]), (0, 1));
    let mut from3 = Vec::new();
    let mut sink = |x: &[u8]| from3.extend_from_slice(x);
    bundle::BundleWriter::start(&key(3), 0, &mut sink).finish(&key(3), &mut sink);
    assert_eq!(
        bundle::import(&from3, 0, &mut b, &fl, &BASE).err(),
        Some(Reject::Revoked)
    );
    // Node 3 cannot open a session with a node that holds the revocation.
    let mut n3 = Replica::default();
    insert(&mut n3, &record(3, 101)).unwrap();
    let (_, _, sb, _, b, events) = sync(&fb, 3, n3, 2, b);
    assert_eq!(sb.rejected[Reject::Revoked as usize], 1);
    assert!(events.contains(&Event::Closed(Reject::Revoked)));
    assert_eq!(b.ids().len(), 2);
}

#[test]
fn a_session_closes_when_the_revocation_of_its_peer_arrives() {
    let fb = fleet_bytes();
    // Node 3 relays its own revocation (it cannot refuse what members relay to it): node 2
    // takes it (statements go first), drops nothing of its own and ends the session.
    let mut n3 = Replica::default();
    insert(&mut n3, &record(3, 1)).unwrap();
    insert(&mut n3, &statement(&authority(), Action::Revoke, public(3))).unwrap();
    assert!(n3.ids().len() == 1 && n3.is_revoked(&public(3)));
    let mut b = Replica::default();
    insert(&mut b, &record(2, 1)).unwrap();
    let (_, _, sb, _, b, events) = sync(&fb, 3, n3, 2, b);
    assert!(b.is_revoked(&public(3)));
    assert!(events.contains(&Event::Closed(Reject::Revoked)));
    assert_eq!(sb.rejected[Reject::Revoked as usize], 1);
    assert_eq!(b.ids().len(), 2);
}

#[test]
fn a_statement_not_signed_by_the_authority_is_refused() {
    let fb = fleet_bytes();
    let fl = fleet(&fb);
    // A member signs a "revocation" of another member.
    let fake = statement(&key(1), Action::Revoke, public(4));
    let item = Item::verify(&fake).unwrap();
    assert_eq!(fl.admits(&item), Err(Reject::NotAuthority));
    let genuine = statement(&authority(), Action::Revoke, public(4));
    assert_eq!(fl.admits(&Item::verify(&genuine).unwrap()), Ok(()));
    // Over a session (node 1 relays it; its replica, which trusts its caller, took it):
    // refused, node 2 keeps working.
    let mut a = Replica::default();
    insert(&mut a, &fake).unwrap();
    let (ok, sa, sb, _, b, ev) = sync(&fb, 1, a, 2, Replica::default());
    assert!(ok, "{sa:?} {sb:?} {ev:?}");
    assert_eq!(sb.rejected[Reject::NotAuthority as usize], 1);
    assert!(!b.is_revoked(&public(4)) && b.is_empty());
    // In a bundle: refused.
    let mut bundle = Vec::new();
    let mut sink = |x: &[u8]| bundle.extend_from_slice(x);
    let mut w = bundle::BundleWriter::start(&key(1), 0, &mut sink);
    w.item(&fake, &mut sink);
    w.finish(&key(1), &mut sink);
    let mut r = Replica::default();
    let rep = bundle::import(&bundle, 0, &mut r, &fl, &BASE).unwrap();
    assert_eq!(
        (rep.stored, rep.rejected[Reject::NotAuthority as usize]),
        (0, 1)
    );
    assert!(!r.is_revoked(&public(4)));
    // A statement whose bytes were changed after signing fails its signature.
    let mut bad = genuine.clone();
    bad[45] ^= 1;
    assert_eq!(Item::verify(&bad).err(), Some(Reject::BadSignature));
    // An unknown action or a wrong body length is malformed, whoever signed it.
    let mut body = statement_body(&Statement {
        action: Action::Revoke,
        subject: public(2),
        hlc: 0,
    });
    body[0] = 9;
    let unknown = signed(&authority(), Kind::Authority, &body);
    assert_eq!(Item::verify(&unknown).err(), Some(Reject::Malformed));
    let short = signed(&authority(), Kind::Authority, &body[..40]);
    assert_eq!(Item::verify(&short).err(), Some(Reject::Malformed));
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
}

/// Offer every item in `order`, again and again (as later contacts re-offer what was
/// refused), until nothing changes: the settled state.
fn settle(items: &[Vec<u8>], order: &[usize]) -> (Vec<Id>, Vec<Id>, Vec<Option<u8>>) {
    let mut r = Replica::new(Policy::default());
    for _ in 0..10 {
        let mut changed = false;
        for &i in order {
            changed |= insert(&mut r, &items[i]) == Ok(true);
        }
        if !changed {
            break;
        }
    }
    let dead = items
        .iter()
        .map(|b| id(b))
        .filter(|i| r.is_deleted(i))
        .collect();
    let importance = items.iter().map(|b| r.importance(&id(b))).collect();
    (r.ids().to_vec(), dead, importance)
}

/// Records of three members, genuine and forged tombstones, a deleter designation and its
/// tombstones, a revocation: whatever the order of arrival, every node settles on the same
/// items held and the same deletions.
#[test]
fn deletions_and_revocations_settle_the_same_in_any_order() {
    let seed = seed();
    let mut items = Vec::new();
    let recs: Vec<Vec<u8>> = (0..9)
        .map(|t| record(1 + (t % 3) as u8, t as u64))
        .collect();
    items.extend(recs.iter().cloned());
    items.push(tombstone(&key(1), &id(&recs[0]))); // genuine
    items.push(tombstone(&key(2), &id(&recs[3]))); // forged: recs[3] is node 1's
    items.push(tombstone(&key(2), &id(&recs[0]))); // forged, beside a genuine one
    items.push(tombstone(&key(2), &id(&recs[1]))); // genuine
    items.push(tombstone(&key(4), &id(&recs[4]))); // by a designated deleter
    items.push(tombstone(&key(3), &id(&recs[5]))); // genuine, then revoked
    items.push(statement(&authority(), Action::Deleter, public(4)));
    items.push(statement(&authority(), Action::Revoke, public(3)));
    items.push(signed(
        &key(1),
        Kind::Meta,
        &cairn_sync::item::meta_body(&id(&recs[6]), 3, 9),
    ));
    items.push(signed(
        &key(3),
        Kind::Meta,
        &cairn_sync::item::meta_body(&id(&recs[6]), 250, 10),
    ));
    let mut rng = Rng(seed);
    let mut first = None;
    for round in 0..16 {
        let mut order: Vec<usize> = (0..items.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let got = settle(&items, &order);
        let want = first.get_or_insert_with(|| got.clone());
        assert_eq!(
            &got, want,
            "CAIRN_SEED={seed}: round {round}, order {order:?}"
        );
    }
    let (held, dead, importance) = first.unwrap();
    let deleted: Vec<Id> = [0, 1, 4].iter().map(|&i| id(&recs[i])).collect();
    assert_eq!(dead, deleted, "CAIRN_SEED={seed}");
    assert!(
        held.contains(&id(&recs[3])),
        "CAIRN_SEED={seed}: forged delete"
    );
    for r in [2usize, 5, 8] {
        // Node 3's records are gone with its key.
        assert!(!held.contains(&id(&recs[r])), "CAIRN_SEED={seed}");
    }
    // Node 3's metadata update (the newer) went with its key: node 1's is in force.
    assert_eq!(importance[6], Some(3), "CAIRN_SEED={seed}");
}

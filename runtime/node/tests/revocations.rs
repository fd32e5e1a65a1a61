//! Revocation on a node that keeps no items (the firmware's kind): `Revocations` holds the
//! authority's statements on a flash region of its own, so the node refuses a revoked key's
//! records, bundles and sessions before and after a restart, in either order of statement
//! and record within one bundle, and fails closed with a typed error when full.

use cairn_kernels::CpuBackend;
use cairn_memory::flash::RamFlash;
use cairn_memory::ram::HeapRam;
use cairn_memory::{Config, Store as Memory};
use cairn_node::{
    Identity, Items as _, Memo, Node, NodeError, Parts, Revocations, SessionSettings,
};
use cairn_sync::bundle::BundleWriter;
use cairn_sync::item::{sign_into, statement_body, tombstone_body, Action, Item, Kind, Statement};
use cairn_sync::testkit::Link;
use cairn_sync::testkit::{fleet_of, signed_record};
use cairn_sync::{Reject, Role, Store as _};
use ed25519_dalek::SigningKey;

/// Statements a test set holds before it closes.
const HELD: usize = 3;
type Set = Revocations<RamFlash<256>, HELD>;

struct Mcu;
impl Parts for Mcu {
    type Backend = CpuBackend;
    type MemoryFlash = RamFlash<4096>;
    type MemoryRam = HeapRam;
    type LineageFlash = RamFlash<4096>;
    type Items = Set;
}

const DIM: usize = 8;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}
fn public(i: u8) -> [u8; 32] {
    key(i).verifying_key().to_bytes()
}
fn authority() -> SigningKey {
    key(0xA0)
}
fn record(who: u8, ts: u64) -> Vec<u8> {
    signed_record(&key(who), ts, 5, &[], DIM)
}
fn statement(by: &SigningKey, action: Action, subject: &[u8; 32]) -> Vec<u8> {
    let s = Statement {
        action,
        subject: *subject,
        hlc: 9,
    };
    let mut out = vec![0u8; 1024];
    let n = sign_into(by, Kind::Authority, &statement_body(&s), &mut out).unwrap();
    out.truncate(n);
    out
}
fn revoke(who: u8) -> Vec<u8> {
    statement(&authority(), Action::Revoke, &public(who))
}
fn bundle(sender: u8, items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let mut w = BundleWriter::start(&key(sender), 0, &mut sink);
    for i in items {
        w.item(i, &mut sink);
    }
    w.finish(&key(sender), &mut sink);
    out
}

/// Member keys 1, 2, 3; the node under test is member 2.
fn fleet() -> Vec<u8> {
    fleet_of(&authority(), &[public(1), public(2), public(3)])
}

fn memory_config() -> Config {
    Config {
        dim: DIM,
        max_records: 100,
        max_payload: 0,
    }
}

/// The node, its memory and statement flash carried over from `parts` (a restart) or new.
fn node<'a>(
    fleet: &'a [u8],
    parts: Option<(Memory<RamFlash<4096>>, RamFlash<256>)>,
) -> Node<'a, Mcu> {
    let auth = authority().verifying_key().to_bytes();
    let identity = Identity::new(&[2; 32], fleet, &auth).unwrap();
    let (memory_flash, set_flash) = match parts {
        Some((m, f)) => (m.into_flash(), f),
        None => (RamFlash::new(8), RamFlash::new(1)),
    };
    let memory = Memory::open(memory_flash, memory_config()).unwrap().0;
    let set = Set::open(set_flash, &auth).unwrap();
    Node::new(identity, memory, set)
}

/// A member's node that keeps its items (with an allocator): it offers its records in
/// sessions, where an apply-only node has no item to offer.
struct Host;
impl Parts for Host {
    type Backend = CpuBackend;
    type MemoryFlash = RamFlash<4096>;
    type MemoryRam = HeapRam;
    type LineageFlash = RamFlash<4096>;
    type Items = cairn_sync::replica::Replica;
}

fn replica_node(fleet: &[u8], seed: u8) -> Node<'_, Host> {
    let auth = authority().verifying_key().to_bytes();
    let identity = Identity::new(&[seed; 32], fleet, &auth).unwrap();
    let memory = Memory::open(RamFlash::new(8), memory_config()).unwrap().0;
    Node::new(identity, memory, cairn_sync::replica::Replica::default())
}

/// Sync `a` (initiator) with `b` over a clean link; whether the session completed, and the
/// reasons each side's session refused with.
fn sync<P: Parts>(a: &mut Node<'_, P>, b: &mut Node<'_, Mcu>) -> (bool, u32, u32) {
    let link = SessionSettings {
        mtu: 256,
        byte_budget: u64::MAX,
        rto_ms: 100,
    };
    let mut sa = a.session(Role::Initiator, link, &[1; 48], 0).unwrap();
    let mut sb = b.session(Role::Responder, link, &[2; 48], 0).unwrap();
    let mut l = Link {
        loss: 0,
        seed: 1,
        limit: 10_000,
    };
    let (done, _) = cairn_sync::testkit::run(&mut sa, &mut sb, &mut l, |_, _, _| true);
    let revoked = Reject::Revoked as usize;
    (
        done,
        sa.stats().rejected[revoked],
        sb.stats().rejected[revoked],
    )
}

/// Power off and on: memory and statements reopened from their flash.
fn restart<'a>(n: Node<'_, Mcu>, fleet: &'a [u8]) -> Node<'a, Mcu> {
    let (memory, _, set) = n.into_parts();
    node(fleet, Some((memory, set.into_flash())))
}

fn origins(n: &Node<'_, Mcu>) -> Vec<u64> {
    n.memory().metas().iter().map(|m| m.origin).collect()
}
fn node_id(who: u8) -> u64 {
    cairn_sync::item::node_id(&public(who))
}

/// Member 1's bundle, its record alone, and its record in member 3's bundle: all refused.
fn refuses_member_1(n: &mut Node<'_, Mcu>) {
    assert_eq!(
        n.import_bundle(&bundle(1, &[&record(1, 4)]), 0)
            .unwrap_err(),
        NodeError::Sync(Reject::Revoked)
    );
    assert_eq!(
        n.accept(&record(1, 5)),
        Err(NodeError::Sync(Reject::Revoked))
    );
    let rep = n.import_bundle(&bundle(3, &[&record(1, 6)]), 0).unwrap();
    assert_eq!(rep.rejected[Reject::Revoked as usize], 1);
}

#[test]
fn a_revoked_members_records_are_refused_before_and_after_a_restart() {
    let fleet = fleet();
    let mut n = node(&fleet, None);
    assert_eq!(n.accept(&record(1, 1)), Ok(true));
    assert_eq!(n.accept(&record(3, 1)), Ok(true));
    // In one bundle from member 3: member 1's record before its revocation and one after.
    let b = bundle(
        3,
        &[&record(1, 2), &revoke(1), &record(1, 3), &record(3, 2)],
    );
    let rep = n.import_bundle(&b, 0).unwrap();
    assert!(rep.complete);
    assert_eq!(
        rep.rejected[Reject::Revoked as usize],
        1,
        "the record after"
    );
    assert_eq!(origins(&n), vec![node_id(3), node_id(3)], "both orders");
    assert!(n.items().revoked(&public(1)));

    refuses_member_1(&mut n);
    let mut n = restart(n, &fleet);
    assert_eq!(n.items().len(), 1);
    assert!(n.items().revoked(&public(1)));
    refuses_member_1(&mut n);
    assert_eq!(origins(&n), vec![node_id(3), node_id(3)]);
    // Others are still taken, and the statement again is no news.
    assert_eq!(n.accept(&record(3, 7)), Ok(true));
    assert_eq!(n.accept(&revoke(1)), Ok(false));
}

/// No statement held: member 1's record (time `ts`) is taken.
fn holds_nothing(n: &mut Node<'_, Mcu>, ts: u64) {
    assert!(n.items().is_empty());
    assert!(!n.items().revoked(&public(1)));
    assert_eq!(n.accept(&record(1, ts)), Ok(true));
}

#[test]
fn a_statement_signed_by_a_member_or_garbled_changes_nothing() {
    let fleet = fleet();
    let mut n = node(&fleet, None);
    assert_eq!(n.accept(&record(1, 1)), Ok(true));
    let by_member = statement(&key(3), Action::Revoke, &public(1));
    assert_eq!(
        n.accept(&by_member),
        Err(NodeError::Sync(Reject::NotAuthority))
    );
    let mut garbled = revoke(1);
    garbled[50] ^= 1;
    assert_eq!(
        n.accept(&garbled),
        Err(NodeError::Sync(Reject::BadSignature))
    );
    let rep = n
        .import_bundle(&bundle(3, &[&by_member, &garbled]), 0)
        .unwrap();
    assert_eq!(rep.rejected[Reject::NotAuthority as usize], 1);
    assert_eq!(rep.rejected[Reject::BadSignature as usize], 1);
    // Put in by hand (skipping the fleet's check), the set refuses it itself.
    let item = Item::verify(&by_member).unwrap();
    assert_eq!(n.items_mut().insert(&item), Err(Reject::NotAuthority));
    holds_nothing(&mut n, 2);
    let mut n = restart(n, &fleet);
    holds_nothing(&mut n, 3);
    assert_eq!(origins(&n), vec![node_id(1); 3]);
}

#[test]
fn a_full_set_fails_closed_with_a_typed_error() {
    let fleet = fleet();
    let mut n = node(&fleet, None);
    assert_eq!(n.accept(&record(1, 1)), Ok(true));
    // Non-members 10.. revoked: the set holds HELD statements.
    for k in 0..HELD as u8 {
        assert_eq!(n.accept(&revoke(10 + k)), Ok(true));
    }
    assert!(!n.items().is_closed());
    assert_eq!(n.accept(&record(1, 2)), Ok(true));
    // One more does not fit: refused with a typed error, and its deletes still happen.
    assert_eq!(
        n.accept(&revoke(1)),
        Err(NodeError::Sync(Reject::StoreFull))
    );
    assert!(origins(&n).is_empty(), "member 1's records dropped");
    refuses_everything(&mut n);
    let mut n = restart(n, &fleet);
    refuses_everything(&mut n);
}

/// A closed set: no item, statement or bundle is taken.
fn refuses_everything(n: &mut Node<'_, Mcu>) {
    assert!(n.items().is_closed());
    assert_eq!(
        n.accept(&record(3, 3)),
        Err(NodeError::Sync(Reject::StoreFull))
    );
    assert_eq!(
        n.accept(&revoke(20)),
        Err(NodeError::Sync(Reject::StoreFull))
    );
    assert_eq!(
        n.import_bundle(&bundle(3, &[&record(3, 4)]), 0)
            .unwrap_err(),
        NodeError::Sync(Reject::Revoked),
        "every sender counts as revoked"
    );
    assert!(n.memory().is_empty());
}

#[test]
fn a_designated_deleter_survives_a_restart_and_a_revocation_ends_it() {
    let fleet = fleet();
    let mut n = node(&fleet, None);
    let r1 = record(1, 1);
    let r3 = record(3, 1);
    assert_eq!(n.accept(&r1), Ok(true));
    assert_eq!(n.accept(&r3), Ok(true));
    let target = |r: &[u8]| Item::verify(r).unwrap().id;
    let tomb = |by: u8, r: &[u8], hlc| {
        let mut out = vec![0u8; 512];
        let body = tombstone_body(&target(r), hlc);
        let len = sign_into(&key(by), Kind::Tombstone, &body, &mut out).unwrap();
        out.truncate(len);
        out
    };
    // Member 3 is not member 1's record's origin: nothing happens until designated.
    n.accept(&tomb(3, &r1, 1)).unwrap();
    assert_eq!(n.memory().len(), 2);
    let designate = statement(&authority(), Action::Deleter, &public(3));
    assert_eq!(n.accept(&designate), Ok(true));
    let mut n = restart(n, &fleet);
    assert!(n.items().is_deleter(&public(3)));
    n.accept(&tomb(3, &r1, 2)).unwrap();
    assert_eq!(origins(&n), vec![node_id(3)]);
    // Revoked, the deleter's power ends with it.
    assert_eq!(n.accept(&revoke(3)), Ok(true));
    assert!(!n.items().is_deleter(&public(3)));
    assert!(n.memory().is_empty());
}

#[test]
fn a_torn_slot_is_skipped_and_a_damaged_header_reformats() {
    let auth = authority().verifying_key().to_bytes();
    let mut set = Set::open(RamFlash::new(1), &auth).unwrap();
    set.insert(&Item::verify(&revoke(1)).unwrap()).unwrap();
    set.insert(&Item::verify(&revoke(3)).unwrap()).unwrap();
    let mut flash = set.into_flash();
    // The first slot (after the 8-byte header) torn: its subject flips a bit.
    flash.data[8 + 10] ^= 0x04;
    let mut set = Set::open(flash, &auth).unwrap();
    assert_eq!(set.len(), 1);
    assert!(!set.revoked(&public(1)) && set.revoked(&public(3)));
    // The torn slot stays used: the set closes one statement early (fails closed).
    assert_eq!(set.insert(&Item::verify(&revoke(1)).unwrap()), Ok(true));
    assert_eq!(set.insert(&Item::verify(&revoke(4)).unwrap()), Ok(true));
    assert!(set.is_closed() && set.revoked(&public(9)));
    assert_eq!(
        set.insert(&Item::verify(&revoke(5)).unwrap()),
        Err(Reject::StoreFull)
    );
    assert_eq!(set.mark(), 0);
    let mut flash = set.into_flash();
    flash.data[0] ^= 0xFF;
    let set = Set::open(flash, &auth).unwrap();
    assert!(set.is_empty() && !set.is_closed());
    // A region too small for HELD + 1 slots (8 + 4 × 40 bytes) is refused.
    assert!(Revocations::<RamFlash<64>, HELD>::open(RamFlash::new(2), &auth).is_err());
}

/// A power cut at every byte of a statement's write: the statements taken before stay, the
/// cut one is held or not (never half), and sent again it is taken.
#[test]
fn a_power_cut_while_a_statement_is_written_loses_nothing_acknowledged() {
    use cairn_memory::flash::FaultyFlash;
    let auth = authority().verifying_key().to_bytes();
    let mut set = Set::open(RamFlash::new(1), &auth).unwrap();
    set.insert(&Item::verify(&revoke(1)).unwrap()).unwrap();
    let base = set.into_flash();
    for cut in 0..=48 {
        let flash = FaultyFlash::new(base.clone()).cut_after(cut);
        let mut set = Revocations::<_, HELD>::open(flash, &auth).unwrap();
        let acknowledged = set.insert(&Item::verify(&revoke(3)).unwrap()).is_ok();
        let mut set = Set::open(set.into_flash().inner, &auth).unwrap();
        assert!(set.revoked(&public(1)), "cut {cut}");
        if acknowledged {
            assert!(set.revoked(&public(3)), "cut {cut}");
        }
        set.insert(&Item::verify(&revoke(3)).unwrap()).unwrap();
        assert!(set.revoked(&public(3)), "cut {cut}");
    }
}

/// A session with a revoked peer is refused at its hello, before and after a restart; the
/// same peer synced before its revocation.
#[test]
fn a_session_with_a_revoked_peer_is_refused() {
    let fleet = fleet();
    let mut peer = replica_node(&fleet, 1);
    let mut n = node(&fleet, None);
    let memo = |t| Memo {
        label: 1,
        importance: 5,
        time_ms: t,
        meta: [0; 3],
        payload: &[],
    };
    peer.remember(&[0.5; DIM], &memo(1)).unwrap();
    let (done, _, _) = sync(&mut peer, &mut n);
    assert!(done);
    assert_eq!(origins(&n), vec![node_id(1)], "before the revocation");
    assert_eq!(n.accept(&revoke(1)), Ok(true));
    assert!(n.memory().is_empty());
    peer.remember(&[0.25; DIM], &memo(2)).unwrap();
    let (done, _, refused) = sync(&mut peer, &mut n);
    assert!(!done && refused == 1, "refused by the node");
    assert!(n.memory().is_empty());
    let mut n = restart(n, &fleet);
    let (done, _, refused) = sync(&mut peer, &mut n);
    assert!(!done && refused == 1, "after a restart");
    assert!(n.memory().is_empty());
}

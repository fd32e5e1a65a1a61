//! Session edges: resuming a half-received item sends only its rest; bad resume data is
//! refused; the MTU bounds; the statistics count what moved.

mod common;
use common::*;

use cairn_sync::item::{Item, MAX_ITEM};
use cairn_sync::replica::Replica;
use cairn_sync::testkit::{run, signed_record, Link};
use cairn_sync::{Config, Id, Reject, Role, Session, Store};

fn session<'f>(
    role: Role,
    cfg: Config<'f>,
    who: u8,
    salt: u8,
    store: Replica,
) -> Session<'f, Replica> {
    Session::new(role, cfg, &[who; 32], &[salt; 48], store, 0).unwrap()
}

/// Run two sessions over a lossless link until both close; whether they completed.
fn complete<'f>(a: &mut Session<'f, Replica>, b: &mut Session<'f, Replica>, seed: u64) -> bool {
    let mut link = Link {
        loss: 0,
        seed,
        limit: usize::MAX,
    };
    run(a, b, &mut link, |_, _, _| true).0
}

#[test]
fn resume_refuses_impossible_partials() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut s = session(Role::Responder, config(fl, 512), 2, 1, Replica::default());
    assert!(s.partial().is_none());
    assert!(!s.resume([1; 16], MAX_ITEM as u32 + 1, &[0; 10]));
    assert!(!s.resume([1; 16], 9, &[0; 10]));
    assert!(s.partial().is_none());
    assert!(s.resume([1; 16], 10, &[7; 10]));
    assert!(s.resume([1; 16], MAX_ITEM as u32, &[7; 10]));
    let (id, total, bytes) = s.partial().unwrap();
    assert_eq!(
        (id, total, bytes),
        ([1; 16], MAX_ITEM as u32, &[7u8; 10][..])
    );
}

#[test]
fn the_mtu_must_lie_between_the_smallest_and_largest_frame() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let new = |mtu| {
        Session::new(
            Role::Initiator,
            config(fl, mtu),
            &[1; 32],
            &[3; 48],
            Replica::default(),
            0,
        )
        .err()
    };
    assert_eq!(new(63), Some(Reject::TooLarge));
    assert_eq!(new(64), None);
    assert_eq!(new(65535), None);
    assert_eq!(new(65536), Some(Reject::TooLarge));
}

/// A session cut in the middle of a large item leaves the bytes received so far; the next
/// session, resumed with them, asks for the rest only.
#[test]
fn a_resumed_item_sends_only_its_rest() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let big = signed_record(&key(1), 5, 1, &[0x5A; 4000], 4000);
    let big_id: Id = Item::verify(&big).unwrap().id;
    let mut a = Replica::default();
    a.insert(&Item::verify(&big).unwrap()).unwrap();

    // Cut after a growing number of frames until the cut falls inside the item.
    let mut found = None;
    for limit in 8..200 {
        let mut sa = session(Role::Initiator, config(fl, 256), 1, 3, a.clone());
        let mut sb = session(Role::Responder, config(fl, 256), 2, 4, Replica::default());
        let (ok, _) = run(
            &mut sa,
            &mut sb,
            &mut Link {
                loss: 0,
                seed: 1,
                limit,
            },
            |_, _, _| true,
        );
        assert!(!ok || sb.store().get(&big_id).is_some());
        if let Some((id, total, bytes)) = sb.partial() {
            if !bytes.is_empty() {
                found = Some((id, total, bytes.to_vec()));
                break;
            }
        }
    }
    let (id, total, bytes) = found.expect("a cut inside the item");
    assert_eq!((id, total as usize), (big_id, big.len()));
    assert_eq!(bytes[..], big[..bytes.len()]);

    // Small items beside it are wanted from their start.
    let mut with_small = a.clone();
    for t in 0..3 {
        let r = signed_record(&key(1), 100 + t, 1, b"small", 8);
        with_small.insert(&Item::verify(&r).unwrap()).unwrap();
    }
    let mut sa = session(Role::Initiator, config(fl, 256), 1, 21, with_small.clone());
    let mut sb = session(Role::Responder, config(fl, 256), 2, 22, Replica::default());
    assert!(sb.resume(id, total, &bytes));
    let ok = complete(&mut sa, &mut sb, 9);
    assert!(ok);
    assert_eq!(sb.store().ids(), with_small.ids());
    assert_eq!(sb.stats().rejected.iter().sum::<u32>(), 0);

    let mut sa = session(Role::Initiator, config(fl, 256), 1, 5, a.clone());
    let mut sb = session(Role::Responder, config(fl, 256), 2, 6, Replica::default());
    assert!(sb.resume(id, total, &bytes));
    let ok = complete(&mut sa, &mut sb, 2);
    assert!(ok);
    assert_eq!(sb.store().get(&big_id), Some(&big[..]));
    let sent = sa.stats().item_bytes_sent as usize;
    assert_eq!(sent, big.len() - bytes.len(), "only the rest was sent");
    assert_eq!(sb.stats().items_received, 1);
    assert!(sb.partial().is_none());

    // Without the resume, the whole item travels.
    let mut sa = session(Role::Initiator, config(fl, 256), 1, 7, a);
    let mut sb = session(Role::Responder, config(fl, 256), 2, 8, Replica::default());
    let ok = complete(&mut sa, &mut sb, 3);
    assert!(ok);
    assert_eq!(sa.stats().item_bytes_sent as usize, big.len());
}

/// `peer` is the authenticated key, known only once the handshake is done.
#[test]
fn peer_is_known_after_the_handshake() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut sa = session(Role::Initiator, config(fl, 512), 1, 9, Replica::default());
    let mut sb = session(Role::Responder, config(fl, 512), 2, 10, Replica::default());
    assert_eq!((sa.peer(), sb.peer()), (None, None));
    let ok = complete(&mut sa, &mut sb, 4);
    assert!(ok);
    assert_eq!(sa.peer(), Some(key(2).verifying_key().to_bytes()));
    assert_eq!(sb.peer(), Some(key(1).verifying_key().to_bytes()));
}

#[test]
fn frames_fill_but_never_pass_the_mtu() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    for mtu in [64usize, 65, 100, 257, 1400] {
        let mut a = Replica::default();
        for t in 0..6 {
            let r = signed_record(&key(1), t, 1, &vec![t as u8; 300 * t as usize], 32);
            a.insert(&Item::verify(&r).unwrap()).unwrap();
        }
        let want = a.ids().to_vec();
        let mut sa = session(Role::Initiator, config(fl, mtu), 1, 11, a);
        let mut sb = session(Role::Responder, config(fl, mtu), 2, 12, Replica::default());
        assert!(drive(&mut sa, &mut sb, mtu, |_, _, _| 1).0, "mtu {mtu}");
        assert_eq!(sb.store().ids(), &want[..], "mtu {mtu}");
    }
}

/// A peer in the other key mode (pre-shared key or not) is refused at its Hello.
#[test]
fn sessions_in_different_key_modes_do_not_connect() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let psk = Config {
        psk: Some([0x33; 32]),
        ..config(fl, 512)
    };
    for (ca, cb) in [(psk, config(fl, 512)), (config(fl, 512), psk)] {
        let mut sa = session(Role::Initiator, ca, 1, 13, Replica::default());
        let mut sb = session(Role::Responder, cb, 2, 14, Replica::default());
        let _ = run(
            &mut sa,
            &mut sb,
            &mut Link {
                loss: 0,
                seed: 5,
                limit: 50,
            },
            |_, _, _| true,
        );
        assert!(sa.peer().is_none() && sb.peer().is_none());
        // The responder reads the initiator's Hello first and closes on the mode.
        let mut events = Vec::new();
        while let Some(e) = sb.poll_event() {
            events.push(e);
        }
        assert_eq!(events, vec![cairn_sync::Event::Closed(Reject::Protocol)]);
    }
    // Both with the key: they connect.
    let mut sa = session(Role::Initiator, psk, 1, 15, Replica::default());
    let mut sb = session(Role::Responder, psk, 2, 16, Replica::default());
    let ok = complete(&mut sa, &mut sb, 6);
    assert!(ok && sa.peer().is_some());
}

/// The byte budget admits items while their total stays within it, most valuable first,
/// and says when it stopped.
#[test]
fn the_byte_budget_admits_items_up_to_its_exact_total() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut a = Replica::default();
    let mut by_importance = Vec::new();
    for imp in [10u8, 30, 20] {
        let r = signed_record(&key(1), imp as u64, imp, &[imp; 100], 16);
        by_importance.push((imp, Item::verify(&r).unwrap().id, r.len()));
        a.insert(&Item::verify(&r).unwrap()).unwrap();
    }
    let len = by_importance[0].2;
    assert!(by_importance.iter().all(|x| x.2 == len));
    for (budget, want) in [
        (2 * len as u64, 2usize),
        (2 * len as u64 - 1, 1),
        (3 * len as u64, 3),
    ] {
        let cfg = Config {
            byte_budget: budget,
            ..config(fl, 512)
        };
        let mut sa = session(Role::Initiator, cfg, 1, 17, a.clone());
        let mut sb = session(Role::Responder, config(fl, 512), 2, 18, Replica::default());
        let ok = complete(&mut sa, &mut sb, 7);
        assert!(ok, "budget {budget}");
        assert_eq!(sa.stats().items_sent as usize, want, "budget {budget}");
        assert_eq!(sa.stats().item_bytes_sent as usize, want * len);
        let mut got: Vec<u8> = by_importance
            .iter()
            .filter(|x| sb.store().get(&x.1).is_some())
            .map(|x| x.0)
            .collect();
        got.sort_unstable_by(|x, y| y.cmp(x));
        assert_eq!(
            got,
            [30u8, 20, 10][..want].to_vec(),
            "budget {budget}: the most important"
        );
        let mut hit = false;
        while let Some(e) = sa.poll_event() {
            hit |= e == cairn_sync::Event::BudgetExhausted;
        }
        assert_eq!(hit, want < 3, "budget {budget}");
    }
}

/// An item of exactly the largest size crosses a session in several chunks.
#[test]
fn an_item_of_the_largest_size_syncs() {
    use cairn_sync::item::{
        contribution_body, sign_into, ContributionHead, Kind, CONTRIB_HEAD, HEAD, SIG,
    };
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let dim = (MAX_ITEM - HEAD - SIG - CONTRIB_HEAD) / 4;
    let head = ContributionHead {
        base: [0xBA; 32],
        key: [1; 16],
        n: 1,
        dim: dim as u32,
    };
    let values: Vec<f32> = (0..dim).map(|i| (i % 7) as f32 * 1e-3).collect();
    let mut body = vec![0u8; CONTRIB_HEAD + 4 * dim];
    contribution_body(&head, &values, &mut body).unwrap();
    let mut item = vec![0u8; MAX_ITEM];
    assert_eq!(
        sign_into(&key(1), Kind::Contribution, &body, &mut item),
        Ok(MAX_ITEM)
    );
    let id = Item::verify(&item).unwrap().id;
    let mut a = Replica::default();
    a.insert(&Item::verify(&item).unwrap()).unwrap();
    for mtu in [64usize, 1400, 9000] {
        let mut sa = session(Role::Initiator, config(fl, mtu), 1, 19, a.clone());
        let mut sb = session(Role::Responder, config(fl, mtu), 2, 20, Replica::default());
        let ok = complete(&mut sa, &mut sb, 8);
        assert!(ok, "mtu {mtu}");
        assert_eq!(sb.store().get(&id), Some(&item[..]), "mtu {mtu}");
        assert_eq!(sb.stats().rejected.iter().sum::<u32>(), 0, "mtu {mtu}");
    }
}

/// Each side sends exactly the items the other lacks, whether the difference is found in
/// id lists (small sets) or by splitting fingerprinted ranges (large ones).
#[test]
fn only_the_missing_items_are_sent() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    for (shared, only_a, only_b) in [
        (0u64, 2u64, 3u64),
        (10, 2, 3),
        (14, 1, 0),
        (300, 4, 7),
        (2000, 1, 1),
    ] {
        let (mut a, mut b) = (Replica::default(), Replica::default());
        for t in 0..shared + only_a + only_b {
            let r = signed_record(&key(1 + (t % 2) as u8), t, 1, &[], 4);
            let item = Item::verify(&r).unwrap();
            if t < shared + only_a {
                a.insert(&item).unwrap();
            }
            if t < shared || t >= shared + only_a {
                b.insert(&item).unwrap();
            }
        }
        let mut sa = session(Role::Initiator, config(fl, 1400), 1, 23, a);
        let mut sb = session(Role::Responder, config(fl, 1400), 2, 24, b);
        let ok = complete(&mut sa, &mut sb, 10);
        let case = format!("shared {shared}, {only_a} only on a, {only_b} only on b");
        assert!(ok, "{case}");
        assert_eq!(sa.store().ids(), sb.store().ids(), "{case}");
        assert_eq!(
            sa.store().ids().len() as u64,
            shared + only_a + only_b,
            "{case}"
        );
        assert_eq!(
            (sa.stats().items_sent, sb.stats().items_sent),
            (only_a, only_b),
            "{case}"
        );
        assert_eq!(
            (sa.stats().items_received, sb.stats().items_received),
            (only_b, only_a),
            "{case}"
        );
        for s in [&sa, &sb] {
            let st = s.stats();
            assert!(
                st.recon_turns >= 1 && st.recon_messages >= st.recon_turns,
                "{case}: {st:?}"
            );
        }
    }
}

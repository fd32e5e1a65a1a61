//! The reliable channel under a hand-driven link: statistics count exactly what moved,
//! the retransmission timer fires at the RTO_MS and not before, replays and gaps are told
//! apart, and a finished session still acknowledges a peer that missed its last ack.

mod common;
use common::*;

use cairn_sync::frame::{F_ACK, F_HANDSHAKE, HEADER, TAG};
use cairn_sync::item::Item;
use cairn_sync::replica::Replica;
use cairn_sync::testkit::signed_record;
use cairn_sync::{Reject, Role, Session, Store};

const MTU: usize = 300;

fn store_with(n: u64) -> Replica {
    let mut r = Replica::default();
    for t in 0..n {
        let b = signed_record(&key(1), t, 1, &[t as u8; 200], 16);
        r.insert(&Item::verify(&b).unwrap()).unwrap();
    }
    r
}

fn is_ack_only(f: &[u8]) -> bool {
    f[1] & F_ACK != 0 && f[1] & F_HANDSHAKE == 0
}

#[test]
fn statistics_count_exactly_what_moved() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut sa = Session::new(
        Role::Initiator,
        config(fl, MTU),
        &[1; 32],
        &[1; 48],
        store_with(8),
        0,
    )
    .unwrap();
    let mut sb = Session::new(
        Role::Responder,
        config(fl, MTU),
        &[2; 32],
        &[2; 48],
        Replica::default(),
        0,
    )
    .unwrap();
    // Drop every 7th of a's first 40 frames: retransmissions happen.
    let (ok, t) = drive(&mut sa, &mut sb, MTU, |dir, k, _| {
        u32::from(!(dir == 0 && k < 40 && k % 7 == 3))
    });
    assert!(ok);
    assert_eq!(sb.store().ids().len(), 8);
    for (i, s) in [&sa, &sb].into_iter().enumerate() {
        let st = s.stats();
        assert_eq!(
            (st.frames_sent, st.bytes_sent),
            (t.frames[i], t.bytes[i]),
            "side {i}"
        );
        assert_eq!(
            (st.frames_received, st.bytes_received),
            (t.delivered[i], t.delivered_bytes[i]),
            "side {i}"
        );
    }
    assert!(sa.stats().retransmits >= 1);
    assert_eq!(sa.stats().items_sent, 8);
    assert_eq!(sb.stats().items_received, 8);
}

#[test]
fn the_retransmission_timer_fires_at_the_rto() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut s = Session::new(
        Role::Initiator,
        config(fl, MTU),
        &[1; 32],
        &[1; 48],
        Replica::default(),
        1000,
    )
    .unwrap();
    assert_eq!(s.poll_timeout(), None, "nothing in flight yet");
    let mut buf = vec![0u8; MTU];
    let n = s.poll_transmit(&mut buf).expect("the Hello");
    let hello = buf[..n].to_vec();
    assert_eq!(s.poll_transmit(&mut buf), None);
    assert_eq!(s.poll_timeout(), Some(1000 + RTO_MS));
    s.handle_timeout(1000 + RTO_MS - 1);
    assert_eq!(s.poll_transmit(&mut buf), None, "not before the RTO_MS");
    assert_eq!(s.stats().retransmits, 0);
    s.handle_timeout(1000 + RTO_MS);
    let n = s
        .poll_transmit(&mut buf)
        .expect("retransmitted at the RTO_MS");
    assert_eq!(&buf[..n], &hello[..]);
    assert_eq!(s.stats().retransmits, 1);
    assert_eq!(s.stats().frames_sent, 2);
    assert_eq!(
        s.poll_timeout(),
        Some(1000 + RTO_MS + RTO_MS),
        "the timer restarts at the resend"
    );
}

#[test]
fn replays_and_gaps_are_told_apart() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut sa = Session::new(
        Role::Initiator,
        config(fl, MTU),
        &[1; 32],
        &[3; 48],
        store_with(40),
        0,
    )
    .unwrap();
    let mut sb = Session::new(
        Role::Responder,
        config(fl, MTU),
        &[2; 32],
        &[4; 48],
        Replica::default(),
        0,
    )
    .unwrap();
    let mut dup_acks = 0;
    let mut dup_data = 0;
    let (ok, _) = drive(&mut sa, &mut sb, MTU, |dir, k, f| {
        if dir == 1 && is_ack_only(f) {
            dup_acks += 1;
            return 2;
        }
        if dir == 0 && f[1] == 0 && k == 6 {
            dup_data += 1;
            return 2;
        }
        u32::from(!(dir == 0 && k == 8))
    });
    assert!(ok);
    assert_eq!(sb.store().ids().len(), 40);
    assert!(dup_acks >= 3, "{dup_acks} ack-only frames");
    assert_eq!(dup_data, 1);
    // Each duplicated ack is a replay once (the last may reach a closed session, which
    // does not check).
    let replays = sa.stats().rejected[Reject::Replay as usize];
    assert!(
        (dup_acks - 1..=dup_acks).contains(&replays),
        "{replays} of {dup_acks}"
    );
    assert!(
        sb.stats().rejected[Reject::Replay as usize] >= 1,
        "the duplicated data frame"
    );
    assert!(
        sb.stats().rejected[Reject::OutOfOrder as usize] >= 1,
        "frames after the gap"
    );
}

#[test]
fn a_finished_session_acknowledges_a_retransmission_but_not_an_ack() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut sa = Session::new(
        Role::Initiator,
        config(fl, MTU),
        &[1; 32],
        &[5; 48],
        store_with(2),
        0,
    )
    .unwrap();
    let mut sb = Session::new(
        Role::Responder,
        config(fl, MTU),
        &[2; 32],
        &[6; 48],
        Replica::default(),
        0,
    )
    .unwrap();
    let mut last_data = Vec::new();
    let mut last_ack = Vec::new();
    let (ok, _) = drive(&mut sa, &mut sb, MTU, |dir, _, f| {
        if dir == 0 && f[1] == 0 {
            last_data = f.to_vec();
        }
        if dir == 0 && is_ack_only(f) {
            last_ack = f.to_vec();
        }
        1
    });
    assert!(ok && !last_data.is_empty() && !last_ack.is_empty());
    let mut buf = vec![0u8; MTU];
    while sb.poll_transmit(&mut buf).is_some() {}
    assert_eq!(sb.handle_input(&last_ack, 10_000), Ok(()));
    assert_eq!(
        sb.poll_transmit(&mut buf),
        None,
        "an ack is not acknowledged"
    );
    assert_eq!(sb.handle_input(&last_data, 10_000), Ok(()));
    let n = sb
        .poll_transmit(&mut buf)
        .expect("the data frame is acknowledged again");
    assert_eq!(n, HEADER + TAG);
    assert!(is_ack_only(&buf[..n]));
}

#[test]
fn frame_size_and_handshake_flags_are_checked_first() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mut s = Session::new(
        Role::Responder,
        config(fl, MTU),
        &[2; 32],
        &[6; 48],
        Replica::default(),
        0,
    )
    .unwrap();
    // The largest frame a session takes: framed right, but no keys yet for data.
    let mut big = vec![0u8; 65535];
    big[0] = 1;
    big[10..12].copy_from_slice(&((65535 - HEADER - TAG) as u16).to_le_bytes());
    assert_eq!(s.handle_input(&big, 0), Err(Reject::Protocol));
    big.push(0);
    assert_eq!(s.handle_input(&big, 0), Err(Reject::TooLarge));
    // A handshake frame may not carry the ack flag.
    let mut hs = vec![0u8; HEADER];
    hs[0] = 1;
    hs[1] = F_HANDSHAKE | F_ACK;
    assert_eq!(s.handle_input(&hs, 0), Err(Reject::Protocol));
    let st = s.stats();
    assert_eq!(st.rejected[Reject::Protocol as usize], 2);
    assert_eq!(st.rejected[Reject::TooLarge as usize], 1);
    assert_eq!(
        st.frames_received, 2,
        "the oversized frame is refused before it counts"
    );
    assert_eq!(st.bytes_received, 65535 + HEADER as u64);
}

/// A duplicated data frame is a replay and nothing else; a gap makes the frames after it
/// out of order and none a replay.
#[test]
fn a_duplicate_is_a_replay_and_a_gap_is_out_of_order() {
    let fb = fleet_bytes(2);
    let fl = fleet(&fb);
    let mk = |salt: u8| {
        (
            Session::new(
                Role::Initiator,
                config(fl, MTU),
                &[1; 32],
                &[salt; 48],
                store_with(20),
                0,
            )
            .unwrap(),
            Session::new(
                Role::Responder,
                config(fl, MTU),
                &[2; 32],
                &[salt + 1; 48],
                Replica::default(),
                0,
            )
            .unwrap(),
        )
    };
    let (mut sa, mut sb) = mk(31);
    let (ok, _) = drive(&mut sa, &mut sb, MTU, |dir, k, f| {
        if dir == 0 && f[1] == 0 && k == 6 {
            2
        } else {
            1
        }
    });
    assert!(ok);
    let r = sb.stats().rejected;
    assert_eq!(
        (r[Reject::Replay as usize], r[Reject::OutOfOrder as usize]),
        (1, 0)
    );
    let (mut sa, mut sb) = mk(41);
    let (ok, _) = drive(&mut sa, &mut sb, MTU, |dir, k, _| {
        u32::from(!(dir == 0 && k == 6))
    });
    assert!(ok);
    let r = sb.stats().rejected;
    assert_eq!(r[Reject::Replay as usize], 0);
    assert!(r[Reject::OutOfOrder as usize] >= 1);
    // After completion a refused frame is still counted.
    let before = sb.stats().rejected[Reject::Malformed as usize];
    assert!(sb.is_closed());
    assert_eq!(sb.handle_input(&[1, 0, 0], 99_999), Err(Reject::Malformed));
    assert_eq!(sb.stats().rejected[Reject::Malformed as usize], before + 1);
}

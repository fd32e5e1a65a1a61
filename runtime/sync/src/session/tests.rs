//! Session internals fed messages directly (what an authenticated peer could send).

use super::*;
use crate::replica::Replica;

const AUTHORITY: [u8; 32] = [0xA0; 32];

fn open_session(fleet: Fleet<'_>) -> Session<'_, Replica> {
    let cfg = Config {
        mtu: 512,
        byte_budget: u64::MAX,
        psk: None,
        fleet,
        base_model: [0; 32],
        rto_ms: 50,
    };
    let mut s = Session::new(
        Role::Responder,
        cfg,
        &[1; 32],
        &[2; 48],
        Replica::default(),
        0,
    )
    .unwrap();
    s.state = State::Open;
    s
}

/// An Item message whose `offset + len` wraps on 32 bits (offset `u32::MAX`, 16 bytes) is
/// refused as too large, not taken as a chunk inside the item.
#[test]
fn item_chunk_offset_near_u32_max_is_refused() {
    let authority = SigningKey::from_bytes(&AUTHORITY);
    let members = [SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes()];
    let fb = crate::testkit::fleet_of(&authority, &members);
    let fleet = Fleet::verify(&fb, &authority.verifying_key().to_bytes()).unwrap();
    for (offset, total) in [(u32::MAX, 100u32), (u32::MAX - 8, 100), (90, 100), (0, 8)] {
        let mut s = open_session(fleet);
        let head = ItemHead {
            id: [9; 16],
            offset,
            total,
        };
        let mut b = [0u8; 48];
        let n = postcard::to_slice(&head, &mut b).unwrap().len();
        s.msg.extend(&[T_ITEM]);
        s.msg.extend(&b[..n]);
        s.msg.extend(&[0u8; 16]);
        s.on_item_chunk();
        assert_eq!(
            s.stats.rejected[Reject::TooLarge as usize],
            1,
            "offset {offset}"
        );
        assert!(s.partial().is_none());
    }
}

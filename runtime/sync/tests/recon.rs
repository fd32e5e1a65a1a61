//! Range bounds of the set reconciliation: exclusive, at every prefix length.

use cairn_sync::recon::{lower_index, Bound, Id};

fn id(b: u8, last: u8) -> Id {
    let mut x = [b; 16];
    x[15] = last;
    x
}

#[test]
fn a_bound_is_exclusive_at_every_prefix_length() {
    let x = id(0x40, 0x10);
    for len in 0..=16u8 {
        let mut prefix = [0u8; 16];
        prefix[..len as usize].copy_from_slice(&x[..len as usize]);
        let b = Bound { len, prefix };
        let mut padded = [0u8; 16];
        padded[..len as usize].copy_from_slice(&x[..len as usize]);
        // The padded prefix itself is not below the bound; one less is (when there is one).
        assert!(!b.above(&padded), "len {len}");
        if padded != [0; 16] {
            let below = (u128::from_be_bytes(padded) - 1).to_be_bytes();
            assert!(b.above(&below), "len {len}");
        }
        assert!(!b.above(&[0xFF; 16]), "len {len}");
    }
    // A 16-byte bound separates two ids that differ only in their last byte.
    let b = Bound::between(&id(0x40, 0x10), &id(0x40, 0x11));
    assert_eq!(b.len, 16);
    assert!(b.above(&id(0x40, 0x10)) && !b.above(&id(0x40, 0x11)));
    assert!(Bound::INF.above(&[0xFF; 16]) && !Bound::ZERO.above(&[0; 16]));
    let ids = [id(1, 0), id(0x40, 0x10), id(0x40, 0x11), id(0x90, 0)];
    assert_eq!(lower_index(&ids, &b), 2);
    assert_eq!(lower_index(&ids, &Bound::ZERO), 0);
    assert_eq!(lower_index(&ids, &Bound::INF), 4);
}

/// On the wire a bound is its prefix as a byte string, infinity 17 bytes of 0xFF; every
/// length round-trips and nothing else decodes.
#[test]
fn bounds_round_trip_on_the_wire() {
    let x = id(0x40, 0x10);
    let mut buf = [0u8; 32];
    for len in 0..=16u8 {
        let mut prefix = [0u8; 16];
        prefix[..len as usize].copy_from_slice(&x[..len as usize]);
        let b = Bound { len, prefix };
        let enc = postcard::to_slice(&b, &mut buf).unwrap().to_vec();
        assert_eq!(
            enc.len(),
            1 + len as usize,
            "len {len}: a varint length then the prefix"
        );
        assert_eq!(postcard::from_bytes::<Bound>(&enc), Ok(b), "len {len}");
    }
    let enc = postcard::to_slice(&Bound::INF, &mut buf).unwrap().to_vec();
    assert_eq!(enc, [&[17u8][..], &[0xFF; 17]].concat());
    assert_eq!(postcard::from_bytes::<Bound>(&enc), Ok(Bound::INF));
    // 17 bytes that are not all 0xFF, and 18 bytes: refused.
    let mut not_inf = enc.clone();
    not_inf[5] = 0;
    assert!(postcard::from_bytes::<Bound>(&not_inf).is_err());
    let mut long = vec![18u8];
    long.extend_from_slice(&[0xFF; 18]);
    assert!(postcard::from_bytes::<Bound>(&long).is_err());
    assert!(Bound::INF.valid() && Bound::ZERO.valid());
    assert!(!Bound {
        len: 18,
        prefix: [0; 16]
    }
    .valid());
}

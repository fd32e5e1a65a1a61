//! Frame headers and the per-direction AEAD: the nonce is the documented layout
//! (direction, frame class, sequence number), so no two frames under one key share it.

use cairn_sync::frame::{Cipher, Header, F_ACK, F_HANDSHAKE, HEADER, TAG, VERSION};
use cairn_sync::Reject;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const KEY: [u8; 32] = [0x42; 32];

fn frame(flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let h = Header {
        flags,
        seq,
        ack,
        len: payload.len() as u16,
    };
    let tag = if flags & F_HANDSHAKE != 0 { 0 } else { TAG };
    let mut f = vec![0u8; HEADER + payload.len() + tag];
    h.write(&mut f);
    f[HEADER..HEADER + payload.len()].copy_from_slice(payload);
    f
}

/// What `seal` must produce, computed with the AEAD directly from the documented nonce.
fn expected(dir: u8, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = frame(flags, seq, ack, payload);
    let mut nonce = [0u8; 12];
    nonce[0] = dir;
    nonce[1] = (flags & F_ACK != 0) as u8;
    nonce[4..8].copy_from_slice(&seq.to_le_bytes());
    let aead = ChaCha20Poly1305::new(Key::from_slice(&KEY));
    let (head, rest) = f.split_at_mut(HEADER);
    let tag = aead
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), head, &mut rest[..payload.len()])
        .unwrap();
    rest[payload.len()..].copy_from_slice(&tag);
    f
}

#[test]
fn seal_uses_the_documented_nonce_and_open_reverses_it() {
    let payload = b"the next bytes of the message stream";
    for (dir, flags, seq, ack) in [
        (0u8, 0u8, 0u32, 0u32),
        (1, 0, 7, 3),
        (0, F_ACK, 7, 9),
        (1, F_ACK, 0xDEAD_BEEF, 1),
    ] {
        let c = Cipher::new(&KEY, dir);
        let mut f = frame(flags, seq, ack, payload);
        c.seal(&mut f).unwrap();
        assert_eq!(
            f,
            expected(dir, flags, seq, ack, payload),
            "dir {dir} flags {flags} seq {seq}"
        );
        let h = c.open(&mut f).unwrap();
        assert_eq!((h.flags, h.seq, h.ack), (flags, seq, ack));
        assert_eq!(&f[HEADER..HEADER + payload.len()], payload);
    }
}

#[test]
fn a_frame_opens_only_in_its_direction_class_and_sequence() {
    let payload = [9u8; 20];
    let mut sealed = frame(0, 5, 0, &payload);
    Cipher::new(&KEY, 0).seal(&mut sealed).unwrap();
    // The other direction's cipher under the same key refuses it.
    assert_eq!(
        Cipher::new(&KEY, 1).open(&mut sealed.clone()),
        Err(Reject::AuthFailed)
    );
    // Its header edited to another sequence number, or to the ack class: refused.
    let mut other_seq = sealed.clone();
    other_seq[2] = 6;
    assert_eq!(
        Cipher::new(&KEY, 0).open(&mut other_seq),
        Err(Reject::AuthFailed)
    );
    let mut other_class = sealed.clone();
    other_class[1] = F_ACK;
    assert_eq!(
        Cipher::new(&KEY, 0).open(&mut other_class),
        Err(Reject::AuthFailed)
    );
    // A handshake frame is never opened as a sealed one.
    let mut hs = frame(F_HANDSHAKE, 0, 0, &payload);
    assert_eq!(Cipher::new(&KEY, 0).open(&mut hs), Err(Reject::Protocol));
    // The same payload at two sequence numbers seals to different bytes.
    let mut again = frame(0, 6, 0, &payload);
    Cipher::new(&KEY, 0).seal(&mut again).unwrap();
    assert_ne!(sealed[HEADER..], again[HEADER..]);
}

#[test]
fn header_parse_bounds() {
    // The smallest frame: a handshake header with no payload.
    let hs = frame(F_HANDSHAKE, 1, 2, &[]);
    assert_eq!(hs.len(), HEADER);
    assert_eq!(
        Header::parse(&hs),
        Ok(Header {
            flags: F_HANDSHAKE,
            seq: 1,
            ack: 2,
            len: 0
        })
    );
    assert_eq!(Header::parse(&hs[..HEADER - 1]), Err(Reject::Malformed));
    assert_eq!(Header::parse(&[]), Err(Reject::Malformed));
    let mut v = hs.clone();
    v[0] = VERSION + 1;
    assert_eq!(Header::parse(&v), Err(Reject::Version));
    for flags in [2u8, 8, 0x80, F_HANDSHAKE | 2] {
        let mut f = hs.clone();
        f[1] = flags;
        assert_eq!(
            Header::parse(&f),
            Err(Reject::Malformed),
            "flags {flags:#x}"
        );
    }
    // Both known flags together parse (a handshake frame carrying an ack).
    let mut both = hs.clone();
    both[1] = F_HANDSHAKE | F_ACK;
    assert!(Header::parse(&both).is_ok());
    // The length must match the payload plus the tag exactly.
    let data = frame(0, 1, 0, &[1, 2, 3]);
    assert!(Header::parse(&data).is_ok());
    assert_eq!(
        Header::parse(&data[..data.len() - 1]),
        Err(Reject::Malformed)
    );
    let mut longer = data.clone();
    longer.push(0);
    assert_eq!(Header::parse(&longer), Err(Reject::Malformed));
}

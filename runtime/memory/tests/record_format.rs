//! A record's bytes are the ones `spec.md` lays out, field by field (the on-flash format
//! must not move), and its id is the SHA-256 the spec names.

use cairn_memory::record::{Record, RecordError, FIXED, MAX_DIM, MAX_PAYLOAD};
use sha2::{Digest, Sha256};

fn sample<'a>(embedding: &'a [i8], payload: &'a [u8]) -> Record<'a> {
    Record {
        origin: 0x0102_0304_0506_0708,
        timestamp_ms: 0x1112_1314_1516_1718,
        label: 0x2122,
        importance: 0x33,
        meta: [0x4142_4344, 0x5152_5354, 0x6162_6364, 7],
        scale: 0.375,
        embedding,
        payload,
    }
}

/// The spec's table, written out by hand.
fn spec_bytes(r: &Record<'_>) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(r.origin.to_le_bytes());
    h.update(r.timestamp_ms.to_le_bytes());
    h.update(r.label.to_le_bytes());
    for m in r.meta {
        h.update(m.to_le_bytes());
    }
    h.update(r.scale.to_bits().to_le_bytes());
    h.update((r.embedding.len() as u32).to_le_bytes());
    h.update(r.embedding.iter().map(|&v| v as u8).collect::<Vec<u8>>());
    h.update(r.payload);
    let mut b = h.finalize()[..16].to_vec();
    b.extend_from_slice(&r.origin.to_le_bytes());
    b.extend_from_slice(&r.timestamp_ms.to_le_bytes());
    b.extend_from_slice(&r.label.to_le_bytes());
    b.push(r.importance);
    b.push(0);
    for m in r.meta {
        b.extend_from_slice(&m.to_le_bytes());
    }
    b.extend_from_slice(&r.scale.to_bits().to_le_bytes());
    b.extend_from_slice(&(r.embedding.len() as u16).to_le_bytes());
    b.extend_from_slice(&(r.payload.len() as u16).to_le_bytes());
    assert_eq!(b.len(), 60);
    b.extend(r.embedding.iter().map(|&v| v as u8));
    b.extend_from_slice(r.payload);
    b
}

#[test]
fn a_record_is_encoded_as_the_spec_lays_it_out() {
    assert_eq!(FIXED, 60);
    let emb = [1i8, -2, 3, -128, 127];
    let payload = [9u8, 8, 7];
    let r = sample(&emb, &payload);
    let want = spec_bytes(&r);
    assert_eq!(r.encoded_len(), want.len());
    assert_eq!(&r.id()[..], &want[..16]);
    let mut out = vec![0xEEu8; want.len() + 4];
    assert_eq!(r.encode(&mut out), Ok(want.len()));
    assert_eq!(&out[..want.len()], &want[..]);
    assert_eq!(
        &out[want.len()..],
        &[0xEE; 4],
        "nothing written past the record"
    );
    let (id, back) = Record::decode(&want).unwrap();
    assert_eq!(id, r.id());
    assert_eq!(back, r);
    // The importance is not part of the id.
    let r2 = Record { importance: 1, ..r };
    assert_eq!(r2.id(), r.id());
    // Empty embedding and payload.
    let r = sample(&[], &[]);
    let want = spec_bytes(&r);
    let mut out = vec![0u8; 60];
    assert_eq!(r.encode(&mut out), Ok(60));
    assert_eq!(out, want);
}

#[test]
fn encode_and_decode_refuse_at_the_bounds() {
    let emb = vec![1i8; MAX_DIM];
    let payload = vec![2u8; MAX_PAYLOAD];
    let r = sample(&emb, &payload);
    let mut out = vec![0u8; r.encoded_len()];
    assert_eq!(r.encode(&mut out), Ok(60 + MAX_DIM + MAX_PAYLOAD));
    assert!(Record::decode(&out).is_ok());
    let big = vec![1i8; MAX_DIM + 1];
    let mut out = vec![0u8; 60 + MAX_DIM + 1];
    assert_eq!(
        sample(&big, &[]).encode(&mut out),
        Err(RecordError::TooLarge)
    );
    let bigp = vec![0u8; MAX_PAYLOAD + 1];
    let mut out = vec![0u8; 60 + MAX_PAYLOAD + 1];
    assert_eq!(
        sample(&[], &bigp).encode(&mut out),
        Err(RecordError::TooLarge)
    );
    // An output one byte short.
    let r = sample(&[1, 2], &[3]);
    let mut out = vec![0u8; r.encoded_len() - 1];
    assert_eq!(r.encode(&mut out), Err(RecordError::Truncated));
    // Scales: finite and positive.
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let r = Record { scale: bad, ..r };
        let mut out = vec![0u8; r.encoded_len()];
        assert_eq!(r.encode(&mut out), Err(RecordError::BadScale), "{bad}");
    }
    // Decoding: short of the fixed part, lengths that disagree, a stored bad scale, a
    // dimension past the limit.
    let good = spec_bytes(&r);
    assert_eq!(Record::decode(&good[..59]), Err(RecordError::Truncated));
    assert_eq!(
        Record::decode(&good[..good.len() - 1]),
        Err(RecordError::Truncated)
    );
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(Record::decode(&longer), Err(RecordError::Truncated));
    for scale in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let mut bad = good.clone();
        bad[52..56].copy_from_slice(&scale.to_bits().to_le_bytes());
        assert_eq!(Record::decode(&bad), Err(RecordError::BadScale), "{scale}");
    }
    let mut huge = good.clone();
    huge[56..58].copy_from_slice(&((MAX_DIM + 1) as u16).to_le_bytes());
    assert_eq!(Record::decode(&huge), Err(RecordError::TooLarge));
    let mut hugep = good;
    hugep[58..60].copy_from_slice(&((MAX_PAYLOAD + 1) as u16).to_le_bytes());
    assert_eq!(Record::decode(&hugep), Err(RecordError::TooLarge));
}

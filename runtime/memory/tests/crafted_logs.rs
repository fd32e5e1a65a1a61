//! Logs written by hand, not by the store: valid entries (magic, length, CRC, content id
//! all correct) that a store never writes. Opening one is a typed error, never a store whose
//! RAM side disagrees with itself.

use cairn_memory::flash::RamFlash;
use cairn_memory::format::{
    align_up, entry_crc, segment_header, ENTRY_HEADER, ENTRY_MAGIC, KIND_PUT, SEG_HEADER,
};
use cairn_memory::search::{Filter, Scoring};
use cairn_memory::{Config, Record, Store, StoreError};

type Flash = RamFlash<1024>;

/// A record of origin 1 with this embedding and time stamp.
fn rec(embedding: &[i8], ts: u64) -> Record<'_> {
    Record {
        origin: 1,
        timestamp_ms: ts,
        label: 0,
        importance: 1,
        meta: [0; 4],
        scale: 0.1,
        embedding,
        payload: &[],
    }
}

/// `rec`'s encoded bytes.
fn record(embedding: &[i8], ts: u64) -> Vec<u8> {
    let r = rec(embedding, ts);
    let mut body = vec![0u8; r.encoded_len()];
    r.encode(&mut body).unwrap();
    body
}

/// A flash whose first sector is a segment holding one PUT entry per body, in order.
fn log_of(bodies: &[Vec<u8>]) -> Flash {
    let entries: Vec<(u8, Vec<u8>)> = bodies.iter().map(|b| (KIND_PUT, b.clone())).collect();
    log_of_kinds(&entries)
}

/// The same with each entry's kind given.
fn log_of_kinds(entries: &[(u8, Vec<u8>)]) -> Flash {
    let mut f = Flash::new(4);
    f.data[..SEG_HEADER].copy_from_slice(&segment_header(1, 0));
    let mut at = SEG_HEADER;
    for (kind, body) in entries {
        let mut head = [0u8; 8];
        head[..2].copy_from_slice(&ENTRY_MAGIC.to_le_bytes());
        head[2] = *kind;
        head[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
        let e = &mut f.data[at..at + align_up(ENTRY_HEADER + body.len())];
        e.fill(0);
        e[..8].copy_from_slice(&head);
        e[8..12].copy_from_slice(&entry_crc(&head, body).to_le_bytes());
        e[ENTRY_HEADER..ENTRY_HEADER + body.len()].copy_from_slice(body);
        at += e.len();
    }
    f
}

fn cfg(dim: usize) -> Config {
    Config {
        dim,
        max_records: 100,
        max_payload: 64,
    }
}

/// The CLI opens every store with `dim: 0` (take it from the log). A first record with an
/// empty embedding used to leave the dimension open, so 32-wide records loaded after it and
/// search sliced past the end of the embeddings.
#[test]
fn a_log_with_mixed_dimensions_is_refused() {
    let wide = [5i8; 32];
    let log = log_of(&[record(&[], 1), record(&wide, 2), record(&wide, 3)]);
    let opened = Store::open(log.clone(), cfg(0)).map(|(s, _)| s.len());
    assert_eq!(
        opened,
        Err(StoreError::WrongDim {
            expected: 0,
            got: 32
        })
    );
    // Whatever dimension the caller states, the log is not one store's.
    for dim in [32, 7] {
        assert!(matches!(
            Store::open(log.clone(), cfg(dim)).map(|(s, _)| s.len()),
            Err(StoreError::WrongDim { .. })
        ));
    }
    // Wide first, then narrow: refused too.
    let log = log_of(&[record(&wide, 1), record(&wide[..8], 2)]);
    assert_eq!(
        Store::open(log, cfg(0)).map(|(s, _)| s.len()),
        Err(StoreError::WrongDim {
            expected: 32,
            got: 8
        })
    );
}

/// One dimension throughout (even 0) loads, and search over it stays in bounds.
#[test]
fn a_log_of_one_dimension_loads_and_searches() {
    let wide = [5i8; 32];
    let (st, rec) = Store::open(log_of(&[record(&wide, 1), record(&wide, 2)]), cfg(0)).unwrap();
    assert_eq!((st.len(), rec.dropped_entries, st.config().dim), (2, 0, 32));
    let hits = st.search(&wide, 5, &Filter::default(), &Scoring::default());
    assert_eq!(hits.len(), 2);
    let (st, _) = Store::open(log_of(&[record(&[], 1), record(&[], 2)]), cfg(0)).unwrap();
    assert_eq!((st.len(), st.config().dim), (2, 0));
    assert!(st
        .search(&[], 5, &Filter::default(), &Scoring::default())
        .iter()
        .all(|h| h.cosine == 0.0));
}

/// One flipped bit inside a record's body (flash wear, a stray write) fails the entry's
/// CRC: that record is dropped and counted, the records around it load.
#[test]
fn a_record_with_a_flipped_bit_is_dropped_and_its_neighbours_load() {
    let bodies = [
        record(&[1i8; 8], 1),
        record(&[2i8; 8], 2),
        record(&[3i8; 8], 3),
    ];
    let clean = log_of(&bodies);
    let (s, rec) = Store::open(clean.clone(), cfg(8)).unwrap();
    assert_eq!((s.len(), rec.dropped_entries, rec.dropped_bytes), (3, 0, 0));
    // The second entry's body starts after the first entry and its own header.
    let second = SEG_HEADER + align_up(ENTRY_HEADER + bodies[0].len()) + ENTRY_HEADER;
    for bit in [0u32, 7, 8 * bodies[1].len() as u32 - 1] {
        let mut f = clean.clone();
        f.data[second + (bit / 8) as usize] ^= 1 << (bit % 8);
        let (s, rec) = Store::open(f, cfg(8)).unwrap();
        assert_eq!(s.len(), 2, "bit {bit}");
        // The scan steps over the damaged entry 4 bytes at a time to the next one.
        let damaged = align_up(ENTRY_HEADER + bodies[1].len());
        assert_eq!(
            (rec.dropped_entries, rec.dropped_bytes),
            (1, damaged),
            "bit {bit}: {rec:?}"
        );
        let mut want = vec![1i8; 8];
        want.extend([3i8; 8]);
        assert_eq!(s.embeddings(), &want[..], "bit {bit}");
    }
    // The body is also covered by the record's content id; the header's pad byte only by
    // the CRC, which covers the header too.
    let mut f = clean.clone();
    f.data[second - ENTRY_HEADER + 3] ^= 1;
    let (s, rec) = Store::open(f, cfg(8)).unwrap();
    assert_eq!((s.len(), rec.dropped_entries), (2, 1), "header pad byte");
}

/// A caller may ask for any payload bound; the store takes at most the format's
/// (`record::MAX_PAYLOAD`), says so in its config, and refuses a larger payload with its
/// own error before the record encoder sees it.
#[test]
fn the_payload_bound_is_at_most_the_formats() {
    use cairn_memory::record::MAX_PAYLOAD;
    let flash = RamFlash::<16384>::new(4);
    let asked = Config {
        dim: 8,
        max_records: 10,
        max_payload: 1 << 20,
    };
    let (mut s, _) = Store::open(flash, asked).unwrap();
    assert_eq!(s.config().max_payload, MAX_PAYLOAD);
    let big = vec![7u8; MAX_PAYLOAD + 1];
    let r = Record {
        origin: 1,
        timestamp_ms: 1,
        label: 0,
        importance: 1,
        meta: [0; 4],
        scale: 0.1,
        embedding: &[1; 8],
        payload: &big,
    };
    assert_eq!(s.append(&r), Err(StoreError::PayloadTooLarge));
    let fits = Record {
        payload: &big[..MAX_PAYLOAD],
        ..r
    };
    assert!(s.append(&fits).is_ok());
}

/// A whole, checksummed entry of a kind this version does not know (a newer writer's) is
/// skipped as one entry, and the records around it load.
#[test]
fn an_entry_of_an_unknown_kind_is_skipped_whole() {
    let f = log_of_kinds(&[
        (KIND_PUT, record(&[1i8; 8], 1)),
        (0x7E, vec![9u8; 20]),
        (KIND_PUT, record(&[3i8; 8], 3)),
    ]);
    let (s, rec) = Store::open(f, cfg(8)).unwrap();
    assert_eq!((s.len(), rec.dropped_entries, rec.dropped_bytes), (2, 1, 0));
}

/// A DELETE's body is one 16-byte id; any other length is not a delete. An entry with an
/// empty body still frames whole. A header that checks but lacks the magic is not an
/// entry at all.
#[test]
fn malformed_deletes_empty_bodies_and_missing_magic() {
    use cairn_memory::format::KIND_DELETE;
    let f = log_of_kinds(&[
        (KIND_PUT, record(&[1i8; 8], 1)),
        (KIND_DELETE, vec![0u8; 17]),
        (0x7E, Vec::new()),
        (KIND_PUT, record(&[3i8; 8], 3)),
    ]);
    let (s, rec) = Store::open(f, cfg(8)).unwrap();
    assert_eq!((s.len(), rec.dropped_entries, rec.dropped_bytes), (2, 2, 0));
    // The same log with the second record's magic cleared (its checksum recomputed over
    // the cleared header): skipped as bytes, not loaded.
    let bodies = [record(&[1i8; 8], 1), record(&[3i8; 8], 3)];
    let mut f = log_of(&bodies);
    let second = SEG_HEADER + align_up(ENTRY_HEADER + bodies[0].len());
    f.data[second..second + 2].fill(0);
    let mut head = [0u8; 8];
    head.copy_from_slice(&f.data[second..second + 8]);
    let crc = entry_crc(&head, &bodies[1]);
    f.data[second + 8..second + 12].copy_from_slice(&crc.to_le_bytes());
    let (s, rec) = Store::open(f, cfg(8)).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(rec.dropped_entries, 0, "no magic: not counted as an entry");
    assert_eq!(rec.dropped_bytes, align_up(ENTRY_HEADER + bodies[1].len()));
}

/// A segment header's erase count is read from flash: one at `u32::MAX` (a worn-out or
/// crafted sector) must not overflow when compaction retires the segment or rotation
/// erases it again; the count stays at its ceiling and the store keeps working.
#[test]
fn an_erase_count_at_its_ceiling_saturates() {
    let emb = [3i8; 8];
    let mut f = log_of(&[record(&emb, 1), record(&emb, 2)]);
    for s in 1..4 {
        f.data[s * 1024..s * 1024 + SEG_HEADER].copy_from_slice(&segment_header(0, u32::MAX));
    }
    f.data[..SEG_HEADER].copy_from_slice(&segment_header(1, u32::MAX));
    let (mut st, _) = Store::open(f, cfg(8)).unwrap();
    for ts in 3..200 {
        if st.append(&rec(&emb, ts)).is_err() {
            st.compact().unwrap();
        }
    }
    st.compact().unwrap();
    assert!(!st
        .search(&emb, 3, &Filter::default(), &Scoring::default())
        .is_empty());
}

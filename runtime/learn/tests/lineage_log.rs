//! The checkpoint log at its edges: entries that fill the flash to its last byte, a torn
//! write after the last entry, headers of known kinds with the wrong body length, the
//! checks `commit` and `load` make, and lookups deep into the log.

use cairn_core::crc32::Crc32;
use cairn_learn::gate::Metrics;
use cairn_learn::lineage::{
    weights_digest, Checkpoint, CheckpointLog, LogEntry, RecordDigest, CKPT_FIXED, KIND_ACTIVE,
    KIND_CHECKPOINT, KIND_REJECTED,
};
use cairn_learn::LearnError;
use cairn_memory::flash::RamFlash;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

const BASE: [u8; 32] = [7; 32];
/// Header bytes of an entry: magic, kind, body length, CRC.
const HDR: usize = 16;

fn checkpoint(w: &[f32], tag: u8) -> Checkpoint {
    let mut d = RecordDigest::default();
    d.add(&[tag; 16]);
    Checkpoint {
        id: [0; 32],
        parent: [0; 32],
        base: BASE,
        records: d.finish(),
        n_records: d.count(),
        hparams: [tag; 52],
        before: Metrics::default(),
        after: Metrics::default(),
        shape: [1, 2, 3, 4],
        weights: weights_digest(w),
        n_params: w.len() as u32,
    }
    .seal()
}

fn weights(n: usize, tag: u8) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.5 + tag as f32).collect()
}

/// Program one raw entry at `at` (its header says `len`, its body is `body`).
fn raw_entry(flash: &mut RamFlash<4096>, at: usize, kind: u32, len: u32, body: &[u8]) -> usize {
    let mut crc = Crc32::new();
    crc.update(body);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0x4B43_4E4Cu32.to_le_bytes());
    bytes.extend_from_slice(&kind.to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&crc.finalize().to_le_bytes());
    bytes.extend_from_slice(body);
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    flash.write(at as u32, &bytes).unwrap();
    at + bytes.len()
}

fn listed(flash: RamFlash<4096>) -> (Vec<LogEntry>, Option<[u8; 32]>, RamFlash<4096>) {
    let (mut log, _) = CheckpointLog::open(flash).unwrap();
    let mut all = Vec::new();
    log.for_each(|e| all.push(e)).unwrap();
    let active = log.active();
    (all, active, log.into_flash())
}

#[test]
fn a_commit_may_fill_the_flash_to_its_last_byte() {
    // One sector: checkpoint (16 + 268 + 4n) and its ACTIVE mark (16 + 32) fill 4096
    // bytes exactly when n = 941.
    let n = (4096 - HDR - CKPT_FIXED - HDR - 32) / 4;
    assert_eq!(HDR + CKPT_FIXED + 4 * n + HDR + 32, 4096);
    let w = weights(n, 1);
    let c = checkpoint(&w, 1);
    let (mut log, _) = CheckpointLog::open(RamFlash::<4096>::new(1)).unwrap();
    log.commit(&c, &w).unwrap();
    let (all, active, flash) = listed(log.into_flash());
    assert_eq!(all, [LogEntry::Checkpoint(c), LogEntry::Active(c.id)]);
    assert_eq!(
        active,
        Some(c.id),
        "the ACTIVE mark that ends at the last byte counts"
    );
    let (mut log, _) = CheckpointLog::open(flash).unwrap();
    let mut out = vec![0f32; n];
    assert_eq!(log.load(&c.id[..8], &BASE, &mut out).unwrap(), c);
    assert_eq!(out, w);
    // Nothing more fits, not even a reject record.
    assert_eq!(log.set_active(&c.id), Err(LearnError::LogFull));
    // One weight more: the checkpoint alone would fit, its ACTIVE mark not; commit
    // refuses before it writes anything.
    let w = weights(n + 1, 2);
    let (mut log, _) = CheckpointLog::open(RamFlash::<4096>::new(1)).unwrap();
    assert_eq!(log.commit(&checkpoint(&w, 2), &w), Err(LearnError::LogFull));
    let (all, active, _) = listed(log.into_flash());
    assert!(all.is_empty() && active.is_none());
    // The same after a first entry: the room left is what counts.
    let small = weights(3, 3);
    let c3 = checkpoint(&small, 3);
    let (mut log, _) = CheckpointLog::open(RamFlash::<4096>::new(1)).unwrap();
    log.commit(&c3, &small).unwrap();
    let used = HDR + CKPT_FIXED + 12 + HDR + 32;
    let m = (4096 - used - HDR - CKPT_FIXED - HDR - 32) / 4;
    let w = weights(m + 1, 4);
    assert_eq!(log.commit(&checkpoint(&w, 4), &w), Err(LearnError::LogFull));
    let w = weights(m, 5);
    let c5 = checkpoint(&w, 5);
    log.commit(&c5, &w).unwrap();
    let (all, active, _) = listed(log.into_flash());
    assert_eq!(all.len(), 4);
    assert_eq!(active, Some(c5.id));
}

#[test]
fn a_torn_write_after_the_last_entry_is_stepped_over() {
    let w = weights(10, 1);
    let c = checkpoint(&w, 1);
    let (mut log, _) = CheckpointLog::open(RamFlash::<4096>::new(1)).unwrap();
    log.commit(&c, &w).unwrap();
    let mut flash = log.into_flash();
    // The end of the log, then five programmed bytes of an append the power cut stopped.
    let end = HDR + CKPT_FIXED + 40 + HDR + 32;
    let mut torn = [0xFFu8; 8];
    torn[..5].copy_from_slice(&[0x4C, 0x4E, 0x43, 0x4B, 0x02]);
    flash.write(end as u32, &torn).unwrap();
    let (mut log, rec) = CheckpointLog::open(flash).unwrap();
    assert_eq!(rec.entries, 2);
    // The next entry goes after the torn bytes, and reads back.
    let other = [9u8; 32];
    log.set_active(&other).unwrap();
    let (all, active, _) = listed(log.into_flash());
    assert_eq!(active, Some(other));
    assert_eq!(all.len(), 3);
}

#[test]
fn entries_of_a_known_kind_with_the_wrong_length_are_not_believed() {
    let w = weights(4, 1);
    let c = checkpoint(&w, 1);
    let (mut log, _) = CheckpointLog::open(RamFlash::<4096>::new(1)).unwrap();
    log.commit(&c, &w).unwrap();
    let mut flash = log.into_flash();
    let mut at = HDR + CKPT_FIXED + 16 + HDR + 32;
    // An ACTIVE mark whose body is not one id.
    at = raw_entry(&mut flash, at, KIND_ACTIVE, 40, &[5u8; 40]);
    // A reject record one byte short.
    at = raw_entry(&mut flash, at, KIND_REJECTED, 64, &[3u8; 64]);
    // A checkpoint shorter than its fixed part.
    at = raw_entry(&mut flash, at, KIND_CHECKPOINT, 40, &[1u8; 40]);
    // A checkpoint whose weights do not match its parameter count.
    let mut body = [0u8; CKPT_FIXED + 8];
    body[..CKPT_FIXED].copy_from_slice(&[0u8; CKPT_FIXED]);
    raw_entry(&mut flash, at, KIND_CHECKPOINT, body.len() as u32, &body);
    let (all, active, _) = listed(flash);
    assert_eq!(all, [LogEntry::Checkpoint(c), LogEntry::Active(c.id)]);
    assert_eq!(active, Some(c.id));
}

#[test]
fn commit_and_load_check_what_they_are_given() {
    let w = weights(6, 1);
    let c = checkpoint(&w, 1);
    let (mut log, _) = CheckpointLog::open(RamFlash::<4096>::new(2)).unwrap();
    // The count and the digest are each checked.
    assert_eq!(log.commit(&c, &w[..5]), Err(LearnError::Corrupt));
    let mut other = w.clone();
    other[3] += 1.0;
    assert_eq!(log.commit(&c, &other), Err(LearnError::Corrupt));
    // A checkpoint whose id is not its content's: committed as given, refused on load.
    let forged = Checkpoint {
        id: [0xAB; 32],
        ..c
    };
    log.commit(&forged, &w).unwrap();
    let mut out = vec![0f32; 6];
    assert_eq!(
        log.load(&[0xAB; 4], &BASE, &mut out),
        Err(LearnError::Corrupt)
    );
    // Prefixes shorter than 4 bytes or longer than an id find nothing.
    log.commit(&c, &w).unwrap();
    assert!(log.find(&c.id[..4]).unwrap().is_some());
    assert!(log.find(&c.id[..3]).unwrap().is_none());
    let mut long = c.id.to_vec();
    long.push(0);
    assert!(log.find(&long).unwrap().is_none());
    // Weights damaged in flash after the commit.
    let (_, at) = log.find(&c.id).unwrap().unwrap();
    let mut flash = log.into_flash();
    let mut b = [0u8; 4];
    flash.read(at as u32, &mut b).unwrap();
    // Clear one programmed bit of the first weight (NOR can only clear bits).
    let j = b.iter().position(|&v| v != 0).expect("a nonzero byte");
    let mut patch = [0xFFu8; 4];
    patch[j] = b[j] & (b[j] - 1);
    flash.write(at as u32, &patch).unwrap();
    // The entry's CRC covers the weights: the damaged checkpoint is no longer in the log.
    let (mut log, rec) = CheckpointLog::open(flash).unwrap();
    assert!(rec.dropped_bytes > 0);
    assert_eq!(
        log.load(&c.id, &BASE, &mut out),
        Err(LearnError::UnknownCheckpoint)
    );
}

#[test]
fn checkpoints_deep_in_the_log_are_found() {
    let (mut log, _) = CheckpointLog::open(RamFlash::<4096>::new(4)).unwrap();
    let mut ids = Vec::new();
    for tag in 0..12u8 {
        let w = weights(50, tag);
        let c = checkpoint(&w, tag);
        log.commit(&c, &w).unwrap();
        ids.push((c, w));
    }
    for (c, w) in &ids {
        let (found, _) = log.find(&c.id).unwrap().expect("found");
        assert_eq!(found, *c);
        let mut out = vec![0f32; 50];
        log.load(&c.id, &BASE, &mut out).unwrap();
        assert_eq!(&out, w);
    }
}

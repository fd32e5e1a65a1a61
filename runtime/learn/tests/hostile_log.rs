//! Checkpoint logs written by hand: entries whose header and CRC are valid but whose
//! lengths or counts are hostile. Opening and searching never panic, on 64 or 32 bits
//! (tests/run.sh runs this crate on i686), and such an entry is never taken as a checkpoint.

use cairn_learn::lineage::{CheckpointLog, CKPT_FIXED, KIND_CHECKPOINT};
use cairn_memory::flash::RamFlash;

const MAGIC: u32 = 0x4B43_4E4C;

/// A flash of `sectors` 4 KiB sectors holding one entry (header with `len` as given, the
/// CRC of `body`, then `body`) at offset 0.
fn log_with(kind: u32, len: u32, body: &[u8], sectors: usize) -> RamFlash<4096> {
    let mut f = RamFlash::<4096>::new(sectors);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&kind.to_le_bytes());
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h[12..16].copy_from_slice(&cairn_core::crc32::crc32(body).to_le_bytes());
    f.data[..16].copy_from_slice(&h);
    f.data[16..16 + body.len()].copy_from_slice(body);
    f
}

/// A checkpoint header claiming `n_params = 2^30 + 1` with one weight: `4 * n_params`
/// wrapped to 4 on 32 bits (a panic with overflow checks), so the entry passed as a
/// checkpoint whose weights lie 4 GiB past the log.
#[test]
fn checkpoint_whose_weight_count_wraps_on_32_bits_is_not_a_checkpoint() {
    for n_params in [0x4000_0001u32, 0x8000_0001, u32::MAX, 0, 2] {
        let mut body = vec![0u8; CKPT_FIXED + 4];
        body[0..4].copy_from_slice(&[0xC0, 0xFF, 0xEE, 0x00]);
        body[264..268].copy_from_slice(&n_params.to_le_bytes());
        let flash = log_with(KIND_CHECKPOINT, body.len() as u32, &body, 2);
        let (mut log, rec) = CheckpointLog::open(flash).unwrap();
        assert_eq!(rec.entries, 0, "n_params {n_params:#x}");
        assert_eq!(log.find(&[0xC0, 0xFF, 0xEE, 0x00]).unwrap(), None);
        let mut seen = 0;
        log.for_each(|_| seen += 1).unwrap();
        assert_eq!(seen, 0);
    }
    // The same entry with the count it holds is a checkpoint.
    let mut body = vec![0u8; CKPT_FIXED + 4];
    body[0..4].copy_from_slice(&[0xC0, 0xFF, 0xEE, 0x00]);
    body[264..268].copy_from_slice(&1u32.to_le_bytes());
    let flash = log_with(KIND_CHECKPOINT, body.len() as u32, &body, 2);
    let (mut log, rec) = CheckpointLog::open(flash).unwrap();
    assert_eq!(rec.entries, 1);
    assert!(log.find(&[0xC0, 0xFF, 0xEE, 0x00]).unwrap().is_some());
}

/// Body lengths up to `u32::MAX` in an otherwise valid header: skipped as damage, and the
/// log still takes appends after them.
#[test]
fn entry_lengths_past_the_log_are_skipped() {
    for len in [u32::MAX, u32::MAX - 15, 8192, 8192 - 16 + 1] {
        let flash = log_with(KIND_CHECKPOINT, len, &[1, 2, 3, 4], 2);
        let (mut log, rec) = CheckpointLog::open(flash).unwrap();
        assert_eq!(rec.entries, 0, "len {len}");
        assert!(rec.dropped_bytes > 0);
        log.set_active(&[5; 32]).unwrap();
        let (log, rec) = CheckpointLog::open(log.into_flash()).unwrap();
        assert_eq!((rec.entries, log.active()), (1, Some([5; 32])), "len {len}");
    }
}

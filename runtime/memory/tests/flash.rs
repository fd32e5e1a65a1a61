//! The flash backends the power-cut and damage tests stand on: RamFlash's per-sector erase
//! counts, and FaultyFlash's power cuts (torn writes, half-done erases) and seeded bit
//! flips, checked against their documented behaviour.

use cairn_memory::flash::{FaultyFlash, RamFlash};
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

type Flash = RamFlash<256>;

#[test]
fn erases_are_counted_per_sector() {
    let mut f = Flash::new(4);
    f.write(0, &[0; 1024]).unwrap();
    f.erase(256, 768).unwrap();
    f.erase(512, 768).unwrap();
    assert_eq!(f.erases, [0, 1, 2, 0]);
    assert!(f.data[..256].iter().all(|&b| b == 0));
    assert!(f.data[256..768].iter().all(|&b| b == 0xFF));
    assert!(f.data[768..].iter().all(|&b| b == 0));
}

#[test]
fn a_power_cut_tears_a_write_and_half_an_erase() {
    // 10 units: an 8-byte write lands, the next 8-byte one lands its first 2 → 0 words.
    let mut f = FaultyFlash::new(Flash::new(4)).cut_after(10);
    assert!(!f.is_dead());
    f.write(0, &[0x11; 8]).unwrap();
    assert!(f.write(8, &[0x22; 8]).is_err());
    assert!(f.is_dead());
    assert_eq!(f.used, 10);
    let mut b = [0u8; 4];
    assert!(f.read(0, &mut b).is_err(), "no reads after the cut");
    let inner = f.inner;
    assert_eq!(&inner.data[..8], &[0x11; 8]);
    assert!(inner.data[8..16].iter().all(|&b| b == 0xFF));
    // A write of exactly the units left lands whole; the next operation is cut.
    let mut f = FaultyFlash::new(Flash::new(4)).cut_after(8);
    f.write(0, &[0x44; 8]).unwrap();
    assert!(!f.is_dead());
    assert!(f.write(8, &[0x55; 4]).is_err());
    assert_eq!(
        &f.inner.data[..12],
        &[0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0xFF, 0xFF, 0xFF, 0xFF]
    );
    // 6 units: the torn write keeps its first program unit (4 bytes).
    let mut f = FaultyFlash::new(Flash::new(4)).cut_after(6);
    assert!(f.write(0, &[0x33; 8]).is_err());
    assert_eq!(
        &f.inner.data[..8],
        &[0x33, 0x33, 0x33, 0x33, 0xFF, 0xFF, 0xFF, 0xFF]
    );
    // A cut during a four-sector erase erases the first two.
    let mut ram = Flash::new(4);
    ram.write(0, &[0; 1024]).unwrap();
    let mut f = FaultyFlash::new(ram).cut_after(0);
    assert!(f.erase(0, 1024).is_err());
    assert!(f.is_dead());
    assert!(f.inner.data[..512].iter().all(|&b| b == 0xFF));
    assert!(f.inner.data[512..].iter().all(|&b| b == 0));
    // During a one-sector erase: the sector is left with its first word cleared.
    let mut f = FaultyFlash::new(Flash::new(2)).cut_after(0);
    assert!(f.erase(256, 512).is_err());
    assert_eq!(&f.inner.data[256..260], &[0; 4]);
    assert!(f.inner.data[260..512].iter().all(|&b| b == 0xFF));
    // Erases count one unit each.
    let mut f = FaultyFlash::new(Flash::new(4)).cut_after(2);
    f.erase(0, 256).unwrap();
    f.erase(256, 512).unwrap();
    assert_eq!(f.used, 2);
    assert!(f.erase(512, 768).is_err());
}

#[test]
fn bit_flips_are_single_bits_at_the_asked_rate_and_seeded() {
    let mut ram = Flash::new(16);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 37 % 251) as u8).collect();
    ram.write(0, &pattern).unwrap();
    let read = |n: u64, seed: u64| {
        let mut f = FaultyFlash::new(ram.clone()).flip_bits(n, seed);
        let mut out = vec![0u8; 4096];
        f.read(0, &mut out).unwrap();
        out
    };
    // Every byte read, one bit each.
    let all = read(1, 5);
    assert!(all
        .iter()
        .zip(&pattern)
        .all(|(a, b)| (a ^ b).count_ones() == 1));
    // About one byte in four; each changed byte differs in one bit; bits of every
    // position come up.
    let some = read(4, 5);
    let changed: Vec<u8> = some.iter().zip(&pattern).map(|(a, b)| a ^ b).collect();
    let n = changed.iter().filter(|&&x| x != 0).count();
    assert!((700..=1350).contains(&n), "{n} of 4096 bytes flipped");
    assert!(changed.iter().all(|x| x.count_ones() <= 1));
    let positions = changed.iter().fold(0u8, |a, &x| a | x);
    assert_eq!(positions, 0xFF, "flips reach every bit position");
    // The same seed flips the same bits; another seed others.
    assert_eq!(read(4, 5), some);
    assert_ne!(read(4, 6), some);
}

/// A file holds flash: created erased at the asked size, grown erased when shorter, never
/// shrunk (sectors that hold data stay visible), NOR rules on write and erase.
#[cfg(feature = "std")]
#[test]
fn a_file_is_flash_that_keeps_its_data() {
    use cairn_memory::flash::FileFlash;
    let dir = std::env::temp_dir().join(format!("cairn-fileflash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.bin");
    let _ = std::fs::remove_file(&path);
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    {
        let mut f = FileFlash::<256>::open(&path, 3).unwrap();
        assert_eq!(f.capacity(), 768);
        assert_eq!(size(&path), 768);
        let mut b = [0u8; 768];
        f.read(0, &mut b).unwrap();
        assert!(b.iter().all(|&v| v == 0xFF));
        f.write(4, &[0xF0, 0x0F, 0x00, 0xAA]).unwrap();
        // Programming only clears bits.
        f.write(4, &[0xFF, 0xFF, 0xFF, 0x0F]).unwrap();
        assert!(f.write(5, &[0; 4]).is_err(), "misaligned");
        assert!(f.write(768, &[0; 4]).is_err(), "past the end");
    }
    let read4 = |f: &mut FileFlash<256>, at: u32| {
        let mut b = [0u8; 4];
        f.read(at, &mut b).unwrap();
        b
    };
    {
        // Asked for fewer sectors: the file keeps all three.
        let mut f = FileFlash::<256>::open(&path, 2).unwrap();
        assert_eq!(f.capacity(), 768);
        assert_eq!(read4(&mut f, 4), [0xF0, 0x0F, 0x00, 0x0A]);
    }
    {
        // More: grown erased, the data kept.
        let mut f = FileFlash::<256>::open(&path, 5).unwrap();
        assert_eq!((f.capacity(), size(&path)), (1280, 1280));
        assert_eq!(read4(&mut f, 4), [0xF0, 0x0F, 0x00, 0x0A]);
        assert_eq!(read4(&mut f, 1276), [0xFF; 4]);
        f.erase(0, 256).unwrap();
        assert_eq!(read4(&mut f, 4), [0xFF; 4]);
        assert!(f.erase(0, 100).is_err(), "not a whole sector");
    }
    // A file whose length is not whole sectors: the whole sectors count, nothing is cut.
    std::fs::write(&path, vec![0u8; 700]).unwrap();
    let f = FileFlash::<256>::open(&path, 1).unwrap();
    assert_eq!((f.capacity(), size(&path)), (512, 700));
    drop(f);
    // An empty file that exists is grown like a missing one.
    std::fs::write(&path, []).unwrap();
    let f = FileFlash::<256>::open(&path, 2).unwrap();
    assert_eq!((f.capacity(), size(&path)), (512, 512));
    drop(f);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SliceFlash: NOR rules over a caller's bytes (no allocator), whole sectors only, and a
/// store that lives in them across a "reboot" (a new SliceFlash over the same bytes).
#[test]
fn slice_flash_is_nor_over_a_byte_slice() {
    use cairn_memory::slice_flash::{FlashError, SliceFlash};
    use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};
    let mut bytes = vec![0xFFu8; 3 * 1024 + 100];
    let mut f = SliceFlash::<1024>::new(&mut bytes);
    assert_eq!(
        (f.capacity(), f.data().len()),
        (3072, 3072),
        "whole sectors only"
    );
    f.write(8, &[0x0F, 0xF0, 0xAA, 0x55]).unwrap();
    f.write(8, &[0xFF, 0x0F, 0xFF, 0xF0]).unwrap();
    let mut got = [0u8; 4];
    f.read(8, &mut got).unwrap();
    assert_eq!(
        got,
        [0x0F, 0x00, 0xAA, 0x50],
        "programming only clears bits"
    );
    assert_eq!(&f.data()[8..12], &got);
    assert_eq!(f.write(6, &[0; 4]), Err(FlashError::NotAligned));
    assert_eq!(f.write(8, &[0; 3]), Err(FlashError::NotAligned));
    assert_eq!(f.write(3072, &[0; 4]), Err(FlashError::OutOfBounds));
    assert_eq!(f.read(3070, &mut got), Err(FlashError::OutOfBounds));
    assert_eq!(f.erase(0, 512), Err(FlashError::NotAligned));
    assert_eq!(f.erase(2048, 4096), Err(FlashError::OutOfBounds));
    f.erase(0, 1024).unwrap();
    assert!(f.data()[..1024].iter().all(|&b| b == 0xFF));
    assert_eq!(
        FlashError::OutOfBounds.kind(),
        NorFlashErrorKind::OutOfBounds
    );
    assert_eq!(FlashError::NotAligned.kind(), NorFlashErrorKind::NotAligned);
    assert_eq!(FlashError::PowerCut.kind(), NorFlashErrorKind::Other);

    use cairn_memory::{Config, Record, Store};
    let cfg = Config {
        dim: 4,
        max_records: 10,
        max_payload: 8,
    };
    let rec = Record {
        origin: 1,
        timestamp_ms: 5,
        label: 2,
        importance: 3,
        meta: [0; 4],
        scale: 1.0,
        embedding: &[1, 2, 3, 4],
        payload: b"slice",
    };
    let id = {
        let (mut st, _) = Store::open(SliceFlash::<1024>::new(&mut bytes), cfg).unwrap();
        st.append(&rec).unwrap()
    };
    let (mut st, r) = Store::open(SliceFlash::<1024>::new(&mut bytes), cfg).unwrap();
    assert_eq!((r.records, st.len()), (1, 1));
    assert!(st.get(&id).unwrap().unwrap().ends_with(b"slice"));
}

//! Bundle writing and import edges: a streamed item writes the same bytes as a whole one,
//! a short read fails the export, and import's header and resume checks hold at their
//! exact bounds.

mod common;
use common::*;

use cairn_sync::bundle::{self, BundleWriter};
use cairn_sync::item::{
    contribution_body, sign_into, ContributionHead, Kind, CONTRIB_HEAD, HEAD, MAX_ITEM, SIG,
};
use cairn_sync::replica::Replica;
use cairn_sync::Reject;

/// Bytes before the first entry of a bundle: magic, version, sender key, mark.
const BUNDLE_HEAD: usize = 4 + 1 + 32 + 8;

/// A signed contribution item with `n` values (distinct per `tag`): `HEAD + CONTRIB_HEAD
/// + 4n + SIG` bytes.
fn item(tag: u8, n: usize) -> Vec<u8> {
    let head = ContributionHead {
        base: BASE,
        key: [tag; 16],
        n: 1,
        dim: n as u32,
    };
    let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.01) - 0.3).collect();
    let mut body = vec![0u8; CONTRIB_HEAD + 4 * n];
    contribution_body(&head, &values, &mut body).unwrap();
    let mut out = vec![0u8; body.len() + HEAD + SIG];
    let len = sign_into(&key(1), Kind::Contribution, &body, &mut out).unwrap();
    out.truncate(len);
    out
}

/// Items both smaller than the writer's 128-byte chunk, a whole multiple of it and not.
fn items() -> Vec<Vec<u8>> {
    let fixed = HEAD + CONTRIB_HEAD + SIG;
    let multiple = (1..64)
        .find(|n| (fixed + 4 * n).is_multiple_of(128))
        .unwrap();
    [0usize, multiple, 100, 170, 250]
        .iter()
        .enumerate()
        .map(|(i, &n)| item(i as u8, n))
        .collect()
}

fn whole(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let mut w = BundleWriter::start(&key(1), 5, &mut sink);
    for it in items {
        w.item(it, &mut sink);
    }
    w.finish(&key(1), &mut sink);
    out
}

#[test]
fn a_streamed_item_writes_the_bytes_of_a_whole_one() {
    let items = items();
    assert!(items.iter().any(|i| i.len() % 128 == 0 && i.len() > 128));
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let mut w = BundleWriter::start(&key(1), 5, &mut sink);
    for it in &items {
        let mut offsets = Vec::new();
        let ok = w.item_streamed(
            it.len(),
            &mut |off, buf: &mut [u8]| {
                offsets.push(off);
                buf.copy_from_slice(&it[off..off + buf.len()]);
                buf.len()
            },
            &mut sink,
        );
        assert!(ok, "item of {} bytes", it.len());
        let want: Vec<usize> = (0..it.len()).step_by(128).collect();
        assert_eq!(offsets, want, "reads of an item of {} bytes", it.len());
    }
    w.finish(&key(1), &mut sink);
    assert_eq!(out, whole(&items));

    let fb = fleet_bytes(1);
    let fl = fleet(&fb);
    let rep = bundle::import(&out, 0, &mut Replica::default(), &fl, &BASE).unwrap();
    assert!(rep.complete);
    assert_eq!(
        (rep.stored, rep.resume_at),
        (items.len() as u32, out.len() - 104)
    );
}

#[test]
fn a_short_read_fails_the_streamed_item() {
    let it = item(1, 170);
    for short_at in [0usize, 128, 640] {
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| out.extend_from_slice(b);
        let mut w = BundleWriter::start(&key(1), 0, &mut sink);
        let ok = w.item_streamed(
            it.len(),
            &mut |off, buf: &mut [u8]| {
                let n = if off == short_at {
                    buf.len() - 1
                } else {
                    buf.len()
                };
                buf[..n].copy_from_slice(&it[off..off + n]);
                n
            },
            &mut sink,
        );
        assert!(!ok, "short read at {short_at}");
        // No more than the length field and the whole chunks before the short one.
        assert_eq!(out.len(), BUNDLE_HEAD + 4 + short_at);
    }
}

#[cfg(target_pointer_width = "64")]
#[test]
fn a_streamed_item_over_u32_is_refused_before_any_read() {
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let mut w = BundleWriter::start(&key(1), 0, &mut sink);
    let ok = w.item_streamed(
        u32::MAX as usize + 1,
        &mut |_, _: &mut [u8]| panic!("read"),
        &mut sink,
    );
    assert!(!ok);
    assert_eq!(out.len(), BUNDLE_HEAD);
}

#[test]
fn import_checks_the_header() {
    let fb = fleet_bytes(1);
    let fl = fleet(&fb);
    let b = whole(&items());
    let imp = |b: &[u8]| bundle::import(b, 0, &mut Replica::default(), &fl, &BASE);

    // A header alone is a bundle cut before its first entry: nothing, resume after it.
    let rep = imp(&b[..BUNDLE_HEAD]).unwrap();
    assert_eq!(
        (rep.stored, rep.resume_at, rep.complete),
        (0, BUNDLE_HEAD, false)
    );
    assert_eq!(imp(&b[..BUNDLE_HEAD - 1]), Err(Reject::Malformed));
    assert_eq!(imp(&[]), Err(Reject::Malformed));

    let mut bad_magic = b.clone();
    bad_magic[0] ^= 1;
    assert_eq!(imp(&bad_magic), Err(Reject::Malformed));
    let mut bad_version = b.clone();
    bad_version[4] = 2;
    assert_eq!(imp(&bad_version), Err(Reject::Malformed));
    let mut both = b.clone();
    both[3] ^= 1;
    both[4] = 0;
    assert_eq!(imp(&both), Err(Reject::Malformed));
    assert!(imp(&b).unwrap().complete);
}

/// The resume pre-scan takes an entry of exactly `MAX_ITEM` bytes and refuses one byte
/// more, even when that longer entry would end exactly at the resume offset.
#[test]
fn the_resume_prescan_bounds_entries_at_max_item() {
    let fb = fleet_bytes(1);
    let fl = fleet(&fb);
    for (len, ok) in [(MAX_ITEM, true), (MAX_ITEM + 1, false)] {
        let mut b = Vec::new();
        BundleWriter::start(&key(1), 0, &mut |x: &[u8]| b.extend_from_slice(x));
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(&vec![0x5A; len]);
        let next = item(9, 10);
        b.extend_from_slice(&(next.len() as u32).to_le_bytes());
        b.extend_from_slice(&next);
        let from = BUNDLE_HEAD + 4 + len;
        let r = bundle::import(&b, from, &mut Replica::default(), &fl, &BASE);
        if ok {
            let rep = r.unwrap();
            assert_eq!((rep.stored, rep.resume_at), (1, b.len()), "len {len}");
        } else {
            assert_eq!(r, Err(Reject::Malformed), "len {len}");
        }
        // From the start the first entry is garbage (refused, and skipped) or too large
        // (refused, and the import stops before it).
        let rep = bundle::import(&b, 0, &mut Replica::default(), &fl, &BASE).unwrap();
        if ok {
            assert_eq!((rep.stored, rep.resume_at), (1, b.len()));
            assert_eq!(rep.rejected.iter().sum::<u32>(), 1);
        } else {
            assert_eq!((rep.stored, rep.resume_at), (0, BUNDLE_HEAD));
            assert_eq!(rep.rejected[Reject::TooLarge as usize], 1);
        }
    }
}

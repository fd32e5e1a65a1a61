//! Untrusted lengths, offsets and counts (bundle entries, item and contribution lengths,
//! contribution counts) are compared, never summed in a way that can wrap: a 32-bit device
//! and a 64-bit host refuse the same bytes, and neither panics or hangs. The cases that
//! used to wrap only on 32 bits fail there (tests/run.sh runs this crate on i686).

use cairn_sync::bundle::{self, BundleWriter};
use cairn_sync::fleet::Fleet;
use cairn_sync::item::{
    contribution_body, sign_into, ContributionHead, Item, Kind, CONTRIB_HEAD, HEAD, SIG,
};
use cairn_sync::replica::{Policy, Replica};
use cairn_sync::{Reject, Store};
use ed25519_dalek::SigningKey;

const BASE: [u8; 32] = [0xBA; 32];
const AUTHORITY: [u8; 32] = [0xA0; 32];
/// Bytes before the first entry of a bundle: magic, version, sender key, mark.
const BUNDLE_HEAD: usize = 4 + 1 + 32 + 8;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn fleet_bytes() -> Vec<u8> {
    let members = [key(1).verifying_key().to_bytes()];
    cairn_sync::testkit::fleet_of(&SigningKey::from_bytes(&AUTHORITY), &members)
}

fn fleet(b: &[u8]) -> Fleet<'_> {
    let authority = SigningKey::from_bytes(&AUTHORITY).verifying_key();
    Fleet::verify(b, &authority.to_bytes()).unwrap()
}

fn signed(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; body.len() + HEAD + SIG];
    let n = sign_into(&key(1), kind, body, &mut out).unwrap();
    out.truncate(n);
    out
}

/// A contribution body whose `dim` field says `dim` and which holds `values`.
fn contribution(n: u32, dim: u32, values: &[f32]) -> Vec<u8> {
    let head = ContributionHead {
        base: BASE,
        key: [7; 16],
        n,
        dim: values.len() as u32,
    };
    let mut body = vec![0u8; CONTRIB_HEAD + 4 * values.len()];
    contribution_body(&head, values, &mut body).unwrap();
    body[52..56].copy_from_slice(&dim.to_le_bytes());
    body
}

/// The bundle header from sender node 1, then `entries` as they are.
fn bundle_with(entries: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    BundleWriter::start(&key(1), 0, &mut |b: &[u8]| out.extend_from_slice(b));
    out.extend_from_slice(entries);
    out
}

/// On 32 bits, `p += 4 + len` with `len = 0xFFFF_FFFC` stepped by 0: the resume pre-scan
/// never ended (in release) before any signature was checked.
#[test]
fn bundle_resume_over_a_wrapping_length_is_malformed() {
    let fb = fleet_bytes();
    let fl = fleet(&fb);
    for len in [0xFFFF_FFFCu32, 0xFFFF_FFFF, 0x8000_0000, 0x10_0000] {
        let mut entries = len.to_le_bytes().to_vec();
        entries.extend_from_slice(&[0u8; 64]);
        let b = bundle_with(&entries);
        for from in [BUNDLE_HEAD + 4, BUNDLE_HEAD + 8, b.len(), usize::MAX] {
            let r = bundle::import(&b, from, &mut Replica::default(), &fl, &BASE);
            assert_eq!(r, Err(Reject::Malformed), "len {len:#x} from {from}");
        }
        // From the start, the entry is refused as too large and the import stops before it.
        let rep = bundle::import(&b, 0, &mut Replica::default(), &fl, &BASE).unwrap();
        assert_eq!(rep.resume_at, BUNDLE_HEAD);
        assert_eq!(rep.rejected[Reject::TooLarge as usize], 1);
    }
}

/// A resume offset inside the entries that is not an entry boundary is malformed; a real
/// boundary resumes.
#[test]
fn bundle_resume_only_at_entry_boundaries() {
    let fb = fleet_bytes();
    let fl = fleet(&fb);
    let item = signed(Kind::Tombstone, &[3u8; 24]);
    let mut entries = Vec::new();
    for _ in 0..2 {
        entries.extend_from_slice(&(item.len() as u32).to_le_bytes());
        entries.extend_from_slice(&item);
    }
    let b = bundle_with(&entries);
    let second = BUNDLE_HEAD + 4 + item.len();
    let rep = bundle::import(&b, second, &mut Replica::default(), &fl, &BASE).unwrap();
    assert_eq!((rep.duplicates + rep.stored, rep.resume_at), (1, b.len()));
    let r = bundle::import(&b, second - 1, &mut Replica::default(), &fl, &BASE);
    assert_eq!(r, Err(Reject::Malformed));
}

/// An item whose body length field is near `u32::MAX`: `HEAD + len + SIG` wrapped or
/// panicked on 32 bits.
#[test]
fn item_length_near_u32_max_is_malformed() {
    let mut b = signed(Kind::Tombstone, &[3u8; 24]);
    assert!(Item::verify(&b).is_ok());
    for len in [u32::MAX, u32::MAX - 63, u32::MAX - 103, 25, 23] {
        b[36..40].copy_from_slice(&len.to_le_bytes());
        assert_eq!(Item::verify(&b).err(), Some(Reject::Malformed), "len {len}");
    }
}

/// A contribution claiming `dim = 2^30 + 1` with one value: `4 * dim` wrapped to 4 on 32
/// bits, so the item verified with a dimension 2^30 larger than its values.
#[test]
fn contribution_dim_that_wraps_on_32_bits_is_malformed() {
    let ok = signed(Kind::Contribution, &contribution(1, 1, &[0.5]));
    assert_eq!(Item::verify(&ok).unwrap().contribution().unwrap().dim, 1);
    for dim in [0x4000_0001u32, 0x8000_0001, u32::MAX, 2, 0] {
        let bad = signed(Kind::Contribution, &contribution(1, dim, &[0.5]));
        assert_eq!(
            Item::verify(&bad).err(),
            Some(Reject::Malformed),
            "dim {dim:#x}"
        );
    }
}

/// The merged adapter's Σ n over members' claims saturates instead of overflowing.
#[test]
fn merged_contribution_counts_saturate() {
    let mut r = Replica::new(Policy::default());
    for v in [0.0f32, 1.0] {
        let item = signed(Kind::Contribution, &contribution(u32::MAX, 1, &[v]));
        assert_eq!(r.insert(&Item::verify(&item).unwrap()), Ok(true));
    }
    let (values, total) = r.merged(&[7; 16]).unwrap();
    assert_eq!(total, u32::MAX);
    assert_eq!(values.len(), 1);
    assert!(values[0].is_finite());
}

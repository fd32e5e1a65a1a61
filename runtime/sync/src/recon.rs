//! Range-based set reconciliation over sorted 16-byte content ids (in the style of the
//! Negentropy protocol). A message is a run of consecutive ranges covering the whole id
//! space; each range is skipped, summarized by a fingerprint, or listed in full. The side
//! that receives a fingerprint it does not share splits the range into `BUCKETS` parts (or
//! lists it when at most `LIST_MAX` ids remain); the side that receives a list knows exactly
//! what each side lacks. Work and bytes grow with the difference, not with the set.

use serde::{Deserialize, Serialize};
use sha2_10::{Digest, Sha256};

/// A content id.
pub type Id = [u8; 16];

/// Ids in lists and wants travel as their first `PREFIX` bytes (the full id is in the
/// item itself); a prefix collision, 2^-64 per pair, only hides one difference for a session.
pub const PREFIX: usize = 8;
pub type Prefix = [u8; PREFIX];

pub fn prefix(id: &Id) -> Prefix {
    let mut p = [0u8; PREFIX];
    p.copy_from_slice(&id[..PREFIX]);
    p
}

/// Fingerprint ranges are split into this many parts.
pub const BUCKETS: usize = 16;
/// The opening message splits the whole set finer (saves a round trip on large sets).
pub const FIRST_BUCKETS: usize = 64;
/// Ranges with at most this many ids are listed instead of split.
pub const LIST_MAX: usize = 16;

/// An exclusive upper bound: ids whose 16 bytes compare below `prefix` padded with zeros.
/// `len == 17` is infinity (above every id). On the wire: the prefix as a byte string
/// (infinity: 17 bytes of 0xFF), so a bound between ids of a 100k set costs about 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub len: u8,
    pub prefix: [u8; 16],
}

impl Bound {
    pub const INF: Bound = Bound {
        len: 17,
        prefix: [0xFF; 16],
    };
    pub const ZERO: Bound = Bound {
        len: 0,
        prefix: [0; 16],
    };

    /// True when `id` lies below this bound.
    pub fn above(&self, id: &Id) -> bool {
        if self.len > 16 {
            return true;
        }
        let mut padded = [0u8; 16];
        padded[..self.len as usize].copy_from_slice(&self.prefix[..self.len as usize]);
        *id < padded
    }

    /// The shortest bound with `lo < bound <= hi` (`lo < hi`).
    pub fn between(lo: &Id, hi: &Id) -> Bound {
        let common = lo.iter().zip(hi).take_while(|(a, b)| a == b).count();
        let len = (common + 1).min(16);
        let mut prefix = [0u8; 16];
        prefix[..len].copy_from_slice(&hi[..len]);
        Bound {
            len: len as u8,
            prefix,
        }
    }

    pub fn valid(&self) -> bool {
        self.len <= 17
    }
}

impl Serialize for Bound {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The byte string's length is the prefix length; infinity is 17 bytes of 0xFF.
        if self.len > 16 {
            s.serialize_bytes(&[0xFF; 17])
        } else {
            s.serialize_bytes(&self.prefix[..self.len as usize])
        }
    }
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bound, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bound;
            fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                f.write_str("a bound")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bound, E> {
                match v.len() {
                    17 if v.iter().all(|&b| b == 0xFF) => Ok(Bound::INF),
                    n if n <= 16 => {
                        let mut prefix = [0u8; 16];
                        prefix[..n].copy_from_slice(v);
                        Ok(Bound {
                            len: n as u8,
                            prefix,
                        })
                    }
                    _ => Err(E::custom("bad bound")),
                }
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Bound, E> {
                self.visit_bytes(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Index of the first id at or above `b` in sorted `ids`.
pub fn lower_index(ids: &[Id], b: &Bound) -> usize {
    ids.partition_point(|id| b.above(id))
}

/// Bytes of a range fingerprint. A collision only makes one session miss a difference (the
/// next one finds it); 2^-64 per range.
pub const FP: usize = 8;

/// Order-independent fingerprint of a set of ids: SHA-256 over the wrapping 128-bit sum
/// and the count, truncated to `FP` bytes.
pub fn fingerprint(ids: &[Id]) -> [u8; FP] {
    let mut sum = 0u128;
    for id in ids {
        sum = sum.wrapping_add(u128::from_le_bytes(*id));
    }
    let mut h = Sha256::new();
    h.update(sum.to_le_bytes());
    h.update((ids.len() as u64).to_le_bytes());
    let d = h.finalize();
    let mut f = [0u8; FP];
    f.copy_from_slice(&d[..FP]);
    f
}

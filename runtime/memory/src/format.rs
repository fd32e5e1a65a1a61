//! Byte layout of the log (see `runtime/memory/spec.md`). Little-endian.

/// CRC-32/IEEE: crc32fast's SIMD version on hosts (`std`), cairn-core's 1 KiB-table one on
/// devices (crc32fast's table is 16 KiB). Same values.
#[cfg(feature = "std")]
type Crc32 = crc32fast::Hasher;
#[cfg(not(feature = "std"))]
type Crc32 = cairn_core::crc32::Crc32;

fn crc32(b: &[u8]) -> u32 {
    let mut h = Crc32::new();
    h.update(b);
    h.finalize()
}

/// Segment header: magic, version, pad, sequence number, erase count, reserved, CRC.
pub const SEG_MAGIC: u32 = 0x4753_4D43; // "CMSG"
pub const SEG_VERSION: u8 = 1;
pub const SEG_HEADER: usize = 24;

/// Entry header: magic u16, kind u8, pad u8, body length u32, CRC-32 u32.
pub const ENTRY_MAGIC: u16 = 0xCA1E;
pub const ENTRY_HEADER: usize = 12;
/// Entries start and end on 4-byte boundaries.
pub const ALIGN: usize = 4;

pub const KIND_PUT: u8 = 1;
pub const KIND_DELETE: u8 = 2;

pub fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

pub fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// CRC-32 of an entry: its first 8 header bytes, then the body.
pub fn entry_crc(header8: &[u8], body: &[u8]) -> u32 {
    let mut h = Crc32::new();
    h.update(header8);
    h.update(body);
    h.finalize()
}

/// Segment header bytes for a sequence number and erase count.
pub fn segment_header(seq: u32, erases: u32) -> [u8; SEG_HEADER] {
    let mut h = [0u8; SEG_HEADER];
    h[0..4].copy_from_slice(&SEG_MAGIC.to_le_bytes());
    h[4] = SEG_VERSION;
    h[8..12].copy_from_slice(&seq.to_le_bytes());
    h[12..16].copy_from_slice(&erases.to_le_bytes());
    let crc = crc32(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// (sequence number, erase count) of a valid segment header.
pub fn parse_segment_header(h: &[u8]) -> Option<(u32, u32)> {
    if h.len() < SEG_HEADER
        || u32_at(h, 0) != SEG_MAGIC
        || h[4] != SEG_VERSION
        || crc32(&h[..20]) != u32_at(h, 20)
    {
        return None;
    }
    Some((u32_at(h, 8), u32_at(h, 12)))
}

#[cfg(all(test, feature = "std"))]
mod tests {
    /// A log written on a device (cairn-core's CRC) reads on a host (crc32fast) and back.
    #[test]
    fn both_crc_implementations_agree() {
        let mut x = 0x1234_5678u32;
        let data: std::vec::Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for n in [0, 1, 7, 64, 1000, 5000] {
            assert_eq!(
                crc32fast::hash(&data[..n]),
                cairn_core::crc32::crc32(&data[..n]),
                "n {n}"
            );
        }
    }
}

/// With or without `std` (each build has its own CRC implementation).
#[cfg(test)]
mod header_tests {
    /// The log's checksum is CRC-32/IEEE (the spec's), by its standard check value.
    #[test]
    fn the_checksum_is_crc32_ieee() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32(b""), 0);
    }

    /// A segment header is taken only whole: too short, or any one field wrong (even with
    /// a CRC recomputed over the wrong field), and the sector is not a segment.
    #[test]
    fn a_segment_header_with_any_field_wrong_is_refused() {
        use super::{crc32, parse_segment_header, segment_header, SEG_HEADER};
        let h = segment_header(7, 3);
        assert_eq!(parse_segment_header(&h), Some((7, 3)));
        assert_eq!(parse_segment_header(&h[..SEG_HEADER - 1]), None);
        // Magic, version, pad, sequence, erase count, reserved, CRC.
        for at in [0, 3, 4, 6, 8, 12, 16, 20, 23] {
            let mut b = h;
            b[at] ^= 1;
            assert_eq!(parse_segment_header(&b), None, "byte {at}");
        }
        for at in [0, 4] {
            let mut b = h;
            b[at] ^= 1;
            let crc = crc32(&b[..20]);
            b[20..24].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                parse_segment_header(&b),
                None,
                "byte {at} under a matching CRC"
            );
        }
    }
}

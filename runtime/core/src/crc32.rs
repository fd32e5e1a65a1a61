//! CRC-32 (IEEE 802.3, the zlib/PNG one), the same values as any other CRC-32/IEEE, from a
//! table built at compile time:
//! - 64-bit targets (hosts, phones, edge boards): 256 entries (1 KiB), one lookup per byte,
//!   a few hundred MB/s;
//! - 32-bit targets (microcontrollers): 16 entries (64 bytes), two lookups per byte — about
//!   twice the time for 960 bytes less flash (the model is checked once, at boot).

/// The CRC register after shifting out each value below `N` (a 4- or 8-bit step).
const fn table<const N: usize>() -> [u32; N] {
    let mut t = [0u32; N];
    let mut i = 0;
    while i < N {
        let mut c = i as u32;
        let mut k = 0;
        while 1 << k < N {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

#[cfg(not(target_pointer_width = "32"))]
static BYTES: [u32; 256] = table::<256>();
// On 64-bit targets only the test that checks it against `BYTES` reads it.
#[cfg_attr(not(target_pointer_width = "32"), allow(dead_code))]
static NIBBLES: [u32; 16] = table::<16>();

#[cfg(not(target_pointer_width = "32"))]
fn update_bytes(mut c: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        c = BYTES[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

#[cfg_attr(not(target_pointer_width = "32"), allow(dead_code))]
fn update_nibbles(mut c: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        c ^= b as u32;
        c = NIBBLES[(c & 0xF) as usize] ^ (c >> 4);
        c = NIBBLES[(c & 0xF) as usize] ^ (c >> 4);
    }
    c
}

/// Incremental CRC-32.
#[derive(Clone, Copy, Debug)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    pub const fn new() -> Crc32 {
        Crc32(0xFFFF_FFFF)
    }
    pub fn update(&mut self, bytes: &[u8]) {
        #[cfg(not(target_pointer_width = "32"))]
        {
            self.0 = update_bytes(self.0, bytes);
        }
        #[cfg(target_pointer_width = "32")]
        {
            self.0 = update_nibbles(self.0, bytes);
        }
    }
    pub fn finalize(self) -> u32 {
        !self.0
    }
}

/// CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut h = Crc32::new();
    h.update(bytes);
    h.finalize()
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        assert_eq!(super::crc32(b""), 0);
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        let mut h = super::Crc32::new();
        h.update(b"1234");
        h.update(b"56789");
        assert_eq!(h.finalize(), 0xCBF4_3926);
    }

    /// The microcontrollers' nibble table gives the hosts' byte-table values.
    #[cfg(not(target_pointer_width = "32"))]
    #[test]
    fn nibble_table_agrees() {
        let seed = 0x5EED_C3C3u64;
        let mut x = seed;
        let data: [u8; 4099] = core::array::from_fn(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        });
        for n in [0, 1, 2, 7, 64, 4099] {
            let (a, b) = (
                super::update_bytes(!0, &data[..n]),
                super::update_nibbles(!0, &data[..n]),
            );
            assert_eq!(a, b, "length {n}, data seed {seed:#x}");
        }
    }
}

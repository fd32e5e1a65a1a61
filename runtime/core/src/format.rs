//! Byte layout of `.cairn` v1 (see `runtime/core/spec.md`). Little-endian throughout.
//! This module only names offsets and reads fixed-size fields; `model.rs` does the checks.

pub const MAGIC: [u8; 8] = *b"CAIRNMDL";
pub const VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 128;
pub const TENSOR_BYTES: usize = 52;
pub const OP_BYTES: usize = 16;
/// Alignment of the blob, of every const tensor in it, and of every arena offset.
pub const ALIGN: usize = 16;
/// Tensor index meaning "absent optional input".
pub const NONE: u16 = 0xFFFF;

pub mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const FLAGS: usize = 9;
    pub const HEADER_LEN: usize = 10;
    pub const FILE_BYTES: usize = 12;
    pub const ARENA_BYTES: usize = 16;
    pub const ARENA_LOWER_BOUND: usize = 20;
    pub const KERNELS: usize = 24;
    pub const N_TENSORS: usize = 56;
    pub const N_OPS: usize = 58;
    pub const N_INPUTS: usize = 60;
    pub const N_OUTPUTS: usize = 62;
    pub const TENSORS_OFF: usize = 64;
    pub const OPS_OFF: usize = 68;
    pub const INDEX_OFF: usize = 72;
    pub const INDEX_LEN: usize = 76;
    pub const PARAMS_OFF: usize = 80;
    pub const PARAMS_LEN: usize = 84;
    pub const BLOB_OFF: usize = 88;
    pub const BLOB_LEN: usize = 92;
    pub const CRC: usize = 96;
    pub const RESERVED: usize = 100;
}

pub mod tns {
    pub const DTYPE: usize = 0;
    pub const RANK: usize = 1;
    pub const STORAGE: usize = 2;
    pub const QUANT: usize = 3;
    pub const DIMS: usize = 4;
    pub const OFFSET: usize = 28;
    pub const BYTES: usize = 32;
    /// Per-tensor: scale (f32). Per-axis: blob offset of the f32 scales.
    pub const SCALE: usize = 36;
    /// Per-tensor: zero point (i32). Per-axis: blob offset of the i32 zero points.
    pub const ZERO: usize = 40;
    pub const AXIS: usize = 44;
    /// `Layout` code; bytes 46 and 47 are reserved (zero).
    pub const LAYOUT: usize = 45;
    /// Time the tensor is written: 0 = graph input, i + 1 = by op i.
    pub const DEF_TIME: usize = 48;
    /// Last time it is read: up to n_ops + 1 (= graph output, read after the last op).
    pub const LAST_TIME: usize = 50;
}

pub mod opr {
    pub const KIND: usize = 0;
    pub const N_IN: usize = 2;
    pub const N_OUT: usize = 3;
    pub const IO_START: usize = 4;
    pub const PARAMS_START: usize = 8;
    pub const PARAMS_LEN: usize = 12;
    /// The kernel the op needs (`KernelId::index`), checked against the op at load.
    pub const KERNEL: usize = 14;
}

/// Where a tensor's bytes live.
pub const STORAGE_ARENA: u8 = 0;
pub const STORAGE_CONST: u8 = 1;

pub const QUANT_NONE: u8 = 0;
pub const QUANT_TENSOR: u8 = 1;
pub const QUANT_AXIS: u8 = 2;

/// The little-endian `u16` at `off`. Every caller reads inside a record or section whose
/// length it checked: an offset past the end is a bug, a panic in debug builds (in
/// release, where the check would cost every device flash, it reads as 0).
#[inline]
pub fn u16_at(b: &[u8], off: usize) -> u16 {
    debug_assert!(
        off < b.len() && b.len() - off >= 2,
        "u16 at {off} of {}",
        b.len()
    );
    let mut a = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

/// The little-endian `u32` at `off` (an offset past the end is a bug, as for [`u16_at`]).
#[inline]
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    debug_assert!(
        off < b.len() && b.len() - off >= 4,
        "u32 at {off} of {}",
        b.len()
    );
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

#[inline]
pub fn i32_at(b: &[u8], off: usize) -> i32 {
    u32_at(b, off) as i32
}

/// CRC-32 (IEEE) of the file with the CRC field taken as zero.
pub fn file_crc(bytes: &[u8]) -> u32 {
    let mut h = crate::crc32::Crc32::new();
    let crc_end = hdr::CRC + 4;
    h.update(&bytes[..hdr::CRC.min(bytes.len())]);
    if bytes.len() >= crc_end {
        h.update(&[0u8; 4]);
        h.update(&bytes[crc_end..]);
    }
    h.finalize()
}

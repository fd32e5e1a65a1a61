//! Kernel identities: which concrete routine an op needs. A model states the set it needs
//! in its header; a backend states which it has; the interpreter compares the two at load.

use crate::op::{OpKind, OP_KIND_COUNT};

/// Element flavour of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Variant {
    /// f32 arithmetic (or 4-byte elements for pure data movement).
    F32 = 0,
    /// int8/uint8 arithmetic (or 1-byte elements for pure data movement).
    I8 = 1,
    /// Depthwise convolution, f32.
    DwF32 = 2,
    /// Depthwise convolution, int8.
    DwI8 = 3,
    /// int8 Conv (one group) whose weights are pre-packed (`Layout::Pairs6`).
    PackedI8 = 4,
    /// FullyConnected with f32 activations and int8 weights: each input row is quantized
    /// at run time (ONNX's dynamic quantization, `gemm::fc_w8` in cairn-kernels).
    W8F32 = 5,
}

/// Kernel indices of the four base variants are `slot · 4 + variant` (below 128);
/// `PackedI8` kernels take `128 + slot`, `W8F32` kernels `160 + slot`, where a kind's slot
/// is its code mod 32: code 0 is no kind, so code 32 takes its place (as in a
/// `crate::op::Kinds` set, `op::kind_bit`).
const PACKED_BASE: usize = 128;
/// Slots per packed block.
const SLOTS: usize = 32;

/// The kind of `slot` (code 32 in slot 0).
fn kind_of_slot(slot: usize) -> Option<OpKind> {
    let code = if slot == 0 { SLOTS } else { slot };
    OpKind::from_code(u16::try_from(code).ok()?)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KernelId {
    pub kind: OpKind,
    pub variant: Variant,
}

impl KernelId {
    pub const fn index(self) -> usize {
        let slot = self.kind as usize % SLOTS;
        match self.variant {
            // PackedI8 (4) from 128, W8F32 (5) from 160.
            v @ (Variant::PackedI8 | Variant::W8F32) => {
                PACKED_BASE + (v as usize - 4) * SLOTS + slot
            }
            v => slot * 4 + v as usize,
        }
    }

    pub fn from_index(i: usize) -> Option<KernelId> {
        if i >= PACKED_BASE {
            let j = i - PACKED_BASE;
            let variant = match j / SLOTS {
                0 => Variant::PackedI8,
                1 => Variant::W8F32,
                _ => return None,
            };
            let kind = kind_of_slot(j % SLOTS)?;
            return Some(KernelId { kind, variant });
        }
        let kind = kind_of_slot(i / 4)?;
        let variant = match i % 4 {
            0 => Variant::F32,
            1 => Variant::I8,
            2 => Variant::DwF32,
            _ => Variant::DwI8,
        };
        Some(KernelId { kind, variant })
    }
}

impl core::fmt::Display for KernelId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let v = match self.variant {
            Variant::F32 => "f32",
            Variant::I8 => "i8",
            Variant::DwF32 => "dw-f32",
            Variant::DwI8 => "dw-i8",
            Variant::PackedI8 => "i8-packed",
            Variant::W8F32 => "f32-w8",
        };
        write!(f, "{}.{}", self.kind.name(), v)
    }
}

const _: () = assert!(OP_KIND_COUNT <= SLOTS + 1 && PACKED_BASE == SLOTS * 4);

/// A set of kernels, 256 bits, stored as 32 little-endian bytes in the header (bit `i`
/// of the set is bit `i % 8` of byte `i / 8`). Held as u32 words: a 32-bit device zeroes
/// and compares them without pulling in a second memory-clearing routine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KernelSet(pub [u32; 8]);

impl KernelSet {
    pub fn insert(&mut self, k: KernelId) {
        let i = k.index();
        self.0[i / 32] |= 1 << (i % 32);
    }

    pub fn contains(&self, k: KernelId) -> bool {
        let i = k.index();
        self.0[i / 32] & (1 << (i % 32)) != 0
    }

    pub fn iter(&self) -> impl Iterator<Item = KernelId> + '_ {
        (0..256)
            .filter(|i| self.0[i / 32] & (1 << (i % 32)) != 0)
            .filter_map(KernelId::from_index)
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

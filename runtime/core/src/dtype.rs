//! Element types a tensor can hold at run time.

/// Element type of a tensor. The discriminant is the on-disk code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum DType {
    I8 = 1,
    U8 = 2,
    I32 = 3,
    F32 = 4,
}

impl DType {
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::I8 | DType::U8 => 1,
            DType::I32 | DType::F32 => 4,
        }
    }

    pub const fn from_code(code: u8) -> Option<DType> {
        match code {
            1 => Some(DType::I8),
            2 => Some(DType::U8),
            3 => Some(DType::I32),
            4 => Some(DType::F32),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::F32 => "f32",
        }
    }

    /// True for the 8-bit quantized types.
    pub const fn is_quantized(self) -> bool {
        matches!(self, DType::I8 | DType::U8)
    }
}

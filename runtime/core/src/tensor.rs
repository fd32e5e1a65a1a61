//! Borrowed tensor views: metadata plus bytes in the arena or the weight blob.

use crate::error::ExecError;
use crate::layout::Pairs6;
use crate::{DType, Layout, Quant, Shape};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorInfo<'a> {
    pub dtype: DType,
    pub shape: Shape,
    pub quant: Quant<'a>,
    /// Byte order of a constant (`Plain` for every arena tensor).
    pub layout: Layout,
}

impl TensorInfo<'_> {
    /// Elements in the tensor (checked at load, so no overflow here).
    pub fn numel(&self) -> usize {
        self.shape.numel().unwrap_or(0)
    }
}

/// A read-only tensor.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub info: TensorInfo<'a>,
    pub data: &'a [u8],
}

/// The tensor an op writes.
#[derive(Debug)]
pub struct TensorMut<'a> {
    pub info: TensorInfo<'a>,
    pub data: &'a mut [u8],
}

fn want(have: DType, expect: DType) -> Result<(), ExecError> {
    if have == expect {
        Ok(())
    } else {
        Err(ExecError::DType)
    }
}

macro_rules! typed {
    ($($name:ident, $name_mut:ident, $t:ty, $dt:expr;)*) => {
        impl<'a> TensorRef<'a> {
            /// The elements of a `Plain` tensor (a packed one is refused: its bytes are
            /// not in element order).
            $(pub fn $name(&self) -> Result<&'a [$t], ExecError> {
                want(self.info.dtype, $dt)?;
                if self.info.layout != Layout::Plain {
                    return Err(ExecError::DType);
                }
                bytemuck::try_cast_slice(self.data).map_err(|_| ExecError::Misaligned)
            })*
        }
        impl<'a> TensorMut<'a> {
            $(pub fn $name_mut(&mut self) -> Result<&mut [$t], ExecError> {
                want(self.info.dtype, $dt)?;
                bytemuck::try_cast_slice_mut(self.data).map_err(|_| ExecError::Misaligned)
            })*
        }
    };
}

impl<'a> TensorRef<'a> {
    /// The int16 values of a [`Layout::Pairs6`] tensor (pre-packed int8 Conv weights) and
    /// their geometry; the length matches it.
    pub fn pairs6(&self) -> Result<(&'a [i16], Pairs6), ExecError> {
        if self.info.layout != Layout::Pairs6 {
            return Err(ExecError::DType);
        }
        let g = Pairs6::of(&self.info.shape).ok_or(ExecError::Shape)?;
        let v: &[i16] = bytemuck::try_cast_slice(self.data).map_err(|_| ExecError::Misaligned)?;
        if g.elements() != Some(v.len()) {
            return Err(ExecError::Shape);
        }
        Ok((v, g))
    }
}

typed! {
    f32s, f32s_mut, f32, DType::F32;
    i32s, i32s_mut, i32, DType::I32;
    i8s, i8s_mut, i8, DType::I8;
    u8s, u8s_mut, u8, DType::U8;
}

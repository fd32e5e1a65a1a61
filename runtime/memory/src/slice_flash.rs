//! NOR flash over a caller's byte slice, with no allocator: a memory-mapped flash region
//! on a board, or a RAM buffer standing in for one (QEMU). Programming only clears bits,
//! erasing sets a whole `ERASE`-byte sector to 0xFF.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashError {
    OutOfBounds,
    NotAligned,
    /// The fault injector cut the power; nothing more happens until the device restarts.
    PowerCut,
    /// The host file could not be read or written.
    Io,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            _ => NorFlashErrorKind::Other,
        }
    }
}

pub(crate) fn check(
    offset: u32,
    len: usize,
    cap: usize,
    align: usize,
) -> Result<(usize, usize), FlashError> {
    let o = offset as usize;
    let end = o.checked_add(len).ok_or(FlashError::OutOfBounds)?;
    if end > cap {
        return Err(FlashError::OutOfBounds);
    }
    if !o.is_multiple_of(align) || !len.is_multiple_of(align) {
        return Err(FlashError::NotAligned);
    }
    Ok((o, end))
}

/// NOR semantics over `&mut [u8]` (its length a multiple of `ERASE`).
pub struct SliceFlash<'a, const ERASE: usize> {
    data: &'a mut [u8],
}

impl<'a, const ERASE: usize> SliceFlash<'a, ERASE> {
    /// Use `data` as flash as it is (erase it first for a new store).
    pub fn new(data: &'a mut [u8]) -> Self {
        let n = data.len() / ERASE * ERASE;
        SliceFlash {
            data: &mut data[..n],
        }
    }
    pub fn data(&self) -> &[u8] {
        self.data
    }
}

impl<const ERASE: usize> ErrorType for SliceFlash<'_, ERASE> {
    type Error = FlashError;
}

impl<const ERASE: usize> ReadNorFlash for SliceFlash<'_, ERASE> {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let (o, e) = check(offset, bytes.len(), self.data.len(), 1)?;
        bytes.copy_from_slice(&self.data[o..e]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const ERASE: usize> NorFlash for SliceFlash<'_, ERASE> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = ERASE;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let len = to.saturating_sub(from) as usize;
        let (o, e) = check(from, len, self.data.len(), ERASE)?;
        self.data[o..e].fill(0xFF);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let (o, e) = check(offset, bytes.len(), self.data.len(), 4)?;
        for (d, &b) in self.data[o..e].iter_mut().zip(bytes) {
            *d &= b;
        }
        Ok(())
    }
}

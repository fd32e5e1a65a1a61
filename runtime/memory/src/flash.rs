//! Storage backends with NOR flash semantics (`embedded_storage::nor_flash`): programming
//! only clears bits, erasing sets a whole sector to 0xFF.
//! - [`RamFlash`]: in memory (tests, QEMU, host simulation), counts erases per sector;
//! - [`FaultyFlash`]: wraps any flash; cuts power after a budget of programmed bytes and
//!   erases (leaving a torn write or a half-erased sector), and can flip bits on read;
//! - [`FileFlash`] (std): a file on a host or phone, same semantics.

use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};

#[cfg(feature = "std")]
use crate::slice_flash::check;
pub use crate::slice_flash::FlashError;
use crate::slice_flash::SliceFlash;

/// NOR flash in RAM with `ERASE`-byte sectors and 4-byte program granularity.
#[derive(Clone, Debug)]
pub struct RamFlash<const ERASE: usize> {
    pub data: Vec<u8>,
    pub erases: Vec<u32>,
}

impl<const ERASE: usize> RamFlash<ERASE> {
    /// `sectors` erased sectors.
    pub fn new(sectors: usize) -> Self {
        RamFlash {
            data: vec![0xFF; sectors * ERASE],
            erases: vec![0; sectors],
        }
    }
}

impl<const ERASE: usize> ErrorType for RamFlash<ERASE> {
    type Error = FlashError;
}

impl<const ERASE: usize> RamFlash<ERASE> {
    /// The NOR rules are `SliceFlash`'s; this adds the erase counts.
    fn nor(&mut self) -> SliceFlash<'_, ERASE> {
        SliceFlash::new(&mut self.data)
    }
}

impl<const ERASE: usize> ReadNorFlash for RamFlash<ERASE> {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        self.nor().read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const ERASE: usize> NorFlash for RamFlash<ERASE> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = ERASE;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        self.nor().erase(from, to)?;
        for s in from as usize / ERASE..to as usize / ERASE {
            self.erases[s] += 1;
        }
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        self.nor().write(offset, bytes)
    }
}

/// Fault injection around a flash: a power cut after `budget` units (one per programmed
/// byte, one per erase), and optional bit flips on read (deterministic from a seed).
#[derive(Clone, Debug)]
pub struct FaultyFlash<F> {
    pub inner: F,
    budget: Option<u64>,
    dead: bool,
    flip_every: Option<u64>,
    rng: u64,
    /// Units consumed so far (to enumerate cut points).
    pub used: u64,
}

impl<F: NorFlash> FaultyFlash<F> {
    pub fn new(inner: F) -> Self {
        FaultyFlash {
            inner,
            budget: None,
            dead: false,
            flip_every: None,
            rng: 0,
            used: 0,
        }
    }
    /// Cut the power once `units` more bytes have been programmed or sectors erased.
    pub fn cut_after(mut self, units: u64) -> Self {
        self.budget = Some(units);
        self
    }
    /// Flip one bit in roughly one of every `n` bytes read (seeded).
    pub fn flip_bits(mut self, n: u64, seed: u64) -> Self {
        self.flip_every = Some(n.max(1));
        self.rng = seed;
        self
    }
    pub fn is_dead(&self) -> bool {
        self.dead
    }
    fn next(&mut self) -> u64 {
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.rng >> 33
    }
}

impl<F: NorFlash> ErrorType for FaultyFlash<F> {
    type Error = FlashError;
}

impl<F: NorFlash> ReadNorFlash for FaultyFlash<F> {
    const READ_SIZE: usize = F::READ_SIZE;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        if self.dead {
            return Err(FlashError::PowerCut);
        }
        self.inner
            .read(offset, bytes)
            .map_err(|_| FlashError::OutOfBounds)?;
        if let Some(n) = self.flip_every {
            for b in bytes.iter_mut() {
                if self.next().is_multiple_of(n) {
                    *b ^= 1 << (self.next() % 8);
                }
            }
        }
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl<F: NorFlash> NorFlash for FaultyFlash<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        if self.dead {
            return Err(FlashError::PowerCut);
        }
        if self.budget == Some(0) {
            // Power fails mid-erase: the first half of the range is erased, the rest not.
            self.dead = true;
            let half = ((to - from) as usize / 2 / F::ERASE_SIZE.max(1)) * F::ERASE_SIZE;
            if half > 0 {
                let _ = self.inner.erase(from, from + half as u32);
            } else {
                // A single sector: corrupt it partially by clearing its first word.
                let _ = self
                    .inner
                    .write(from, &[0u8; 4][..F::WRITE_SIZE.clamp(1, 4)]);
            }
            return Err(FlashError::PowerCut);
        }
        if let Some(b) = self.budget.as_mut() {
            *b -= 1;
        }
        self.used += 1;
        self.inner
            .erase(from, to)
            .map_err(|_| FlashError::OutOfBounds)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        if self.dead {
            return Err(FlashError::PowerCut);
        }
        if let Some(b) = self.budget {
            if (bytes.len() as u64) > b {
                // Torn write: the first `b` bytes (rounded down to the program unit) land.
                self.dead = true;
                let keep = (b as usize / F::WRITE_SIZE) * F::WRITE_SIZE;
                if keep > 0 {
                    let _ = self.inner.write(offset, &bytes[..keep]);
                }
                self.used += b;
                return Err(FlashError::PowerCut);
            }
            self.budget = Some(b - bytes.len() as u64);
        }
        self.used += bytes.len() as u64;
        self.inner
            .write(offset, bytes)
            .map_err(|_| FlashError::OutOfBounds)
    }
}

/// NOR semantics over a host file (created erased if missing).
#[cfg(feature = "std")]
pub struct FileFlash<const ERASE: usize> {
    file: std::fs::File,
    capacity: usize,
}

#[cfg(feature = "std")]
impl<const ERASE: usize> FileFlash<ERASE> {
    /// Open `path`, creating it erased with `sectors` sectors if missing or shorter. An
    /// existing larger file keeps its size (never hide sectors that hold data).
    pub fn open(path: &std::path::Path, sectors: usize) -> std::io::Result<Self> {
        use std::io::{Seek, SeekFrom, Write};
        let exists = path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len() as usize;
        let capacity = (sectors * ERASE).max(len / ERASE * ERASE);
        if !exists || len < capacity {
            file.seek(SeekFrom::Start(len as u64))?;
            file.write_all(&vec![0xFF; capacity - len])?;
            file.sync_all()?;
        }
        Ok(FileFlash { file, capacity })
    }
}

#[cfg(feature = "std")]
impl<const ERASE: usize> ErrorType for FileFlash<ERASE> {
    type Error = FlashError;
}

#[cfg(feature = "std")]
impl<const ERASE: usize> ReadNorFlash for FileFlash<ERASE> {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        use std::os::unix::fs::FileExt;
        check(offset, bytes.len(), self.capacity, 1)?;
        self.file
            .read_exact_at(bytes, offset as u64)
            .map_err(|_| FlashError::Io)
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(feature = "std")]
impl<const ERASE: usize> NorFlash for FileFlash<ERASE> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = ERASE;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        use std::os::unix::fs::FileExt;
        let (o, e) = check(
            from,
            (to.saturating_sub(from)) as usize,
            self.capacity,
            ERASE,
        )?;
        self.file
            .write_all_at(&vec![0xFF; e - o], o as u64)
            .map_err(|_| FlashError::Io)?;
        self.file.sync_data().map_err(|_| FlashError::Io)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        use std::os::unix::fs::FileExt;
        let (o, e) = check(offset, bytes.len(), self.capacity, 4)?;
        let mut cur = vec![0u8; e - o];
        self.file
            .read_exact_at(&mut cur, o as u64)
            .map_err(|_| FlashError::Io)?;
        for (c, &b) in cur.iter_mut().zip(bytes) {
            *c &= b;
        }
        self.file
            .write_all_at(&cur, o as u64)
            .map_err(|_| FlashError::Io)?;
        self.file.sync_data().map_err(|_| FlashError::Io)
    }
}

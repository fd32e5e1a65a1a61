//! A device's flash in the simulator: NOR semantics in RAM (`RamFlash`), behind a power
//! rail shared by all of one device's regions. A power cut is armed with a budget of
//! programming units (bytes programmed, sectors erased): the operation that crosses it is
//! torn (the first bytes of a write land, a sector is half erased), and every region of
//! the device fails from then until the device restarts. What was programmed stays.

use std::cell::Cell;
use std::rc::Rc;

use cairn_memory::flash::{FlashError, RamFlash};
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};

pub const SECTOR: usize = 4096;

/// One device's power supply.
#[derive(Clone, Debug, Default)]
pub struct Power(Rc<PowerState>);

#[derive(Debug, Default)]
struct PowerState {
    /// Units left before the cut (None: no cut armed).
    budget: Cell<Option<u64>>,
    dead: Cell<bool>,
    /// Units programmed over the device's life (bytes written + sectors erased).
    used: Cell<u64>,
}

impl Power {
    /// Cut the power once `units` more are programmed.
    pub fn arm(&self, units: u64) {
        self.0.budget.set(Some(units));
    }
    /// Cut the power now (between operations).
    pub fn cut(&self) {
        self.0.dead.set(true);
        self.0.budget.set(None);
    }
    pub fn is_dead(&self) -> bool {
        self.0.dead.get()
    }
    /// Power back on (the device restarts).
    pub fn restore(&self) {
        self.0.dead.set(false);
        self.0.budget.set(None);
    }
    pub fn used(&self) -> u64 {
        self.0.used.get()
    }
    /// Take `units` from the budget; how many may land before the cut (all when no cut).
    fn spend(&self, units: u64) -> u64 {
        self.0.used.set(self.0.used.get() + units);
        match self.0.budget.get() {
            Some(b) if units > b => {
                self.0.dead.set(true);
                self.0.budget.set(None);
                b
            }
            Some(b) => {
                self.0.budget.set(Some(b - units));
                units
            }
            None => units,
        }
    }
}

/// A flash region of a device.
pub struct SimFlash {
    pub inner: RamFlash<SECTOR>,
    power: Power,
}

impl SimFlash {
    pub fn new(sectors: usize, power: Power) -> SimFlash {
        SimFlash {
            inner: RamFlash::new(sectors),
            power,
        }
    }
    /// The same bytes, on a (restored) power rail.
    pub fn reattach(inner: RamFlash<SECTOR>, power: Power) -> SimFlash {
        SimFlash { inner, power }
    }
}

impl ErrorType for SimFlash {
    type Error = FlashError;
}

impl ReadNorFlash for SimFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        if self.power.is_dead() {
            return Err(FlashError::PowerCut);
        }
        self.inner.read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl NorFlash for SimFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        if self.power.is_dead() {
            return Err(FlashError::PowerCut);
        }
        let sectors = (to.saturating_sub(from) as usize / SECTOR) as u64;
        let done = self.power.spend(sectors.max(1));
        if done < sectors.max(1) {
            // Cut mid-erase: the sectors before the cut are erased; the next one keeps
            // its bytes but loses its first word (neither valid nor erased).
            let end = from + (done as usize * SECTOR) as u32;
            if done > 0 {
                let _ = self.inner.erase(from, end);
            }
            let _ = self.inner.write(end, &[0u8; 4]);
            return Err(FlashError::PowerCut);
        }
        self.inner.erase(from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        if self.power.is_dead() {
            return Err(FlashError::PowerCut);
        }
        let done = self.power.spend(bytes.len() as u64) as usize;
        if done < bytes.len() {
            let keep = done / 4 * 4;
            if keep > 0 {
                let _ = self.inner.write(offset, &bytes[..keep]);
            }
            return Err(FlashError::PowerCut);
        }
        self.inner.write(offset, bytes)
    }
}

//! The input path: an 8×8 intensity sensor on I2C, driven through embedded-hal 1.0's
//! `I2c` trait so the same driver runs on any HAL's bus. In QEMU there is no sensor: a
//! mock bus answers the driver's register reads with the bundled sample frames.
//!
//! Register map (the driver's contract): reading 128 bytes from register `0x80` returns
//! the frame as 64 little-endian `u16` pixels, 0..=4096 for 0.0..=1.0.

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, Operation, SevenBitAddress};

pub const ADDR: SevenBitAddress = 0x68;
const FRAME_REG: u8 = 0x80;

/// The sensor driver, generic over the bus.
pub struct Grid8x8<B> {
    bus: B,
}

impl<B: I2c> Grid8x8<B> {
    pub fn new(bus: B) -> Self {
        Grid8x8 { bus }
    }

    /// One frame, scaled to 0.0..=1.0.
    pub fn read_frame(&mut self, out: &mut [f32; 64]) -> Result<(), B::Error> {
        let mut raw = [0u8; 128];
        self.bus.write_read(ADDR, &[FRAME_REG], &mut raw)?;
        for (o, p) in out.iter_mut().zip(raw.chunks_exact(2)) {
            *o = u16::from_le_bytes([p[0], p[1]]) as f32 / 4096.0;
        }
        Ok(())
    }
}

/// A bus with one simulated sensor that serves `frames` (f32 pixels, little-endian) in turn.
#[cfg_attr(any(feature = "stm32f4", feature = "nrf52840"), allow(dead_code))]
pub struct MockBus {
    frames: &'static [u8],
    next: usize,
    reg: u8,
}

#[cfg_attr(any(feature = "stm32f4", feature = "nrf52840"), allow(dead_code))]
impl MockBus {
    pub fn new(frames: &'static [u8]) -> Self {
        MockBus {
            frames,
            next: 0,
            reg: 0,
        }
    }
}

impl ErrorType for MockBus {
    type Error = ErrorKind;
}

impl I2c for MockBus {
    fn transaction(
        &mut self,
        address: SevenBitAddress,
        operations: &mut [Operation<'_>],
    ) -> Result<(), ErrorKind> {
        if address != ADDR {
            return Err(ErrorKind::NoAcknowledge(
                embedded_hal::i2c::NoAcknowledgeSource::Address,
            ));
        }
        for op in operations {
            match op {
                Operation::Write(w) => self.reg = *w.first().ok_or(ErrorKind::Other)?,
                Operation::Read(r) => {
                    if self.reg != FRAME_REG || r.len() != 128 {
                        return Err(ErrorKind::Other);
                    }
                    let n = self.frames.len() / 256;
                    let f = &self.frames[(self.next % n.max(1)) * 256..][..256];
                    for (o, px) in r.chunks_exact_mut(2).zip(f.chunks_exact(4)) {
                        let v = f32::from_le_bytes([px[0], px[1], px[2], px[3]]);
                        let raw = (v.clamp(0.0, 1.0) * 4096.0) as u16;
                        o.copy_from_slice(&raw.to_le_bytes());
                    }
                    self.next += 1;
                }
            }
        }
        Ok(())
    }
}

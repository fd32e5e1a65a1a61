//! Board bring-up: clocks and pins for the sensor's I2C bus. Build-checked in CI
//! (`cargo build --release --features stm32f4` / `--features nrf52840`); not run here (no
//! boards), and the log still goes out by semihosting, so a debugger must be attached.

/// STM32F411: I2C1 on PB8 (SCL) / PB9 (SDA) at 400 kHz.
#[cfg(feature = "stm32f4")]
pub fn sensor_bus() -> impl embedded_hal::i2c::I2c {
    use stm32f4xx_hal::{pac, prelude::*};
    let dp = pac::Peripherals::take().unwrap();
    let rcc = dp.RCC.constrain();
    let clocks = rcc.cfgr.sysclk(84.MHz()).freeze();
    let gpiob = dp.GPIOB.split();
    dp.I2C1.i2c((gpiob.pb8, gpiob.pb9), 400.kHz(), &clocks)
}

/// nRF52840: TWIM0 on P0.27 (SCL) / P0.26 (SDA) at 400 kHz.
#[cfg(feature = "nrf52840")]
pub fn sensor_bus() -> impl embedded_hal::i2c::I2c {
    use nrf52840_hal::gpio::p0;
    use nrf52840_hal::pac;
    use nrf52840_hal::twim::{Frequency, Pins, Twim};
    let p = pac::Peripherals::take().unwrap();
    let port0 = p0::Parts::new(p.P0);
    let pins = Pins {
        scl: port0.p0_27.into_floating_input().degrade(),
        sda: port0.p0_26.into_floating_input().degrade(),
    };
    Twim::new(p.TWIM0, pins, Frequency::K400)
}

// The chip `run.sh` hands to `probe-rs run --chip` (it reads the name from this symbol in
// the ELF), so `cargo run --release --features <board>` flashes the board.
#[cfg(feature = "stm32f4")]
#[allow(non_upper_case_globals)]
#[no_mangle]
#[used]
static CAIRN_PROBE_CHIP_STM32F411CEUx: u8 = 0;

#[cfg(feature = "nrf52840")]
#[allow(non_upper_case_globals)]
#[no_mangle]
#[used]
static CAIRN_PROBE_CHIP_nRF52840_xxAA: u8 = 0;

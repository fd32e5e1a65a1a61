//! Size baseline: the probe's runtime without cairn — cortex-m-rt's vector table and
//! reset, the defmt-over-semihosting logger, the semihosting exit and the panic handler.
//! `size.sh` subtracts it from the probe to report what cairn-core and the CNN kernels
//! themselves take.
#![no_std]
#![no_main]

use cortex_m as _;
use defmt_semihosting as _;
// On a board build the device crate supplies the interrupt vectors.
#[cfg(feature = "nrf52840")]
use nrf52840_hal as _;
#[cfg(feature = "stm32f4")]
use stm32f4xx_hal as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;

#[entry]
fn main() -> ! {
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

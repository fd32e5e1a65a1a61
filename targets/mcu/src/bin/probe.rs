//! Size probe: cairn-core + the int8 CNN kernel families (`Select<CNN_I8>`: convolutions
//! incl. depthwise, elementwise, pooling, reshapes, FullyConnected, Softmax, Quantize) —
//! parse a model and run it, no logging, no memory, no learner. What `size.sh` reports as
//! "core + CNN kernels". `--features reference` links every kernel (the reference backend).
#![no_std]
#![no_main]

use cortex_m as _;
use defmt_semihosting as _;
// On a board build the device crate supplies the interrupt vectors.
#[cfg(feature = "nrf52840")]
use nrf52840_hal as _;
#[cfg(feature = "stm32f4")]
use stm32f4xx_hal as _;

use cairn_core::{Interpreter, Model};
use cairn_kernels::family;
use cortex_m_rt::entry;
use cortex_m_semihosting::debug;

static MODEL: &[u8] = cairn_core::include_model!("../../assets/digits.cairn");
static mut ARENA: cairn_core::Aligned<[u8; 1024]> = cairn_core::Aligned([0; 1024]);

#[entry]
fn main() -> ! {
    // SAFETY: main runs once; nothing else touches the arena.
    #[allow(static_mut_refs)]
    let arena = unsafe { &mut ARENA.0 };
    let ok = Model::parse_kinds::<{ family::kinds(family::CNN_I8) }>(MODEL)
        .ok()
        .and_then(|m| {
            let mut it = Interpreter::new(m, backend(), arena).ok()?;
            it.set_input_f32(0, &[0.5; 64]).ok()?;
            it.invoke().ok()
        });
    debug::exit(if ok.is_some() {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

#[cfg(not(feature = "reference"))]
fn backend() -> cairn_kernels::Select<{ cairn_kernels::family::CNN_I8 }> {
    cairn_kernels::Select
}
#[cfg(feature = "reference")]
fn backend() -> cairn_kernels::RefBackend {
    cairn_kernels::RefBackend
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

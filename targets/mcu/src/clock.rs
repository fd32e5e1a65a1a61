//! What both firmware images share: instruction counts from SysTick, the stack-depth
//! measurement and the exit through semihosting.

use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_semihosting::debug;

/// Instructions per SysTick tick: QEMU runs with `-icount shift=0` (1 ns per instruction)
/// and the MPS2 SysTick counts at 25 MHz.
const INSN_PER_TICK: u32 = 40;

/// Take SysTick, run it free from its core clock, and log a calibration: a loop of known
/// length measured the way every figure after it is. Call once.
pub fn start() -> Option<SYST> {
    let mut syst = cortex_m::Peripherals::take()?.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_counter();
    // 3 instructions per iteration: nop, subs, bne.
    let t0 = ticks(&syst);
    // SAFETY: a counted loop on one register; no memory, no stack.
    unsafe {
        core::arch::asm!(
            "2:",
            "nop",
            "subs {0}, {0}, #1",
            "bne 2b",
            inout(reg) 100_000u32 => _,
            options(nomem, nostack)
        )
    };
    let t1 = ticks(&syst);
    defmt::println!(
        "calibration: 300000-instruction loop measured as ~{=u32} instructions",
        insns(t0, t1)
    );
    Some(syst)
}

/// SysTick's current value (it counts down from 0xFF_FFFF).
pub fn ticks(_: &SYST) -> u32 {
    SYST::get_current()
}

/// Instructions between two `ticks` readings (at most one wrap: 671 M instructions).
pub fn insns(t0: u32, t1: u32) -> u32 {
    (t0.wrapping_sub(t1) & 0x00FF_FFFF) * INSN_PER_TICK
}

/// Fill the free RAM below the stack with a pattern; `stack_used` later finds how deep the
/// stack went (the RAM figure of size.sh assumes a stack budget; this measures it).
pub fn paint_stack() {
    extern "C" {
        static mut __ebss: u32;
    }
    let sp = cortex_m::register::msp::read() as usize - 64;
    // SAFETY: from the end of .bss to just below the live stack: memory nothing uses yet.
    unsafe {
        let mut p = core::ptr::addr_of_mut!(__ebss) as usize;
        while p < sp {
            core::ptr::write_volatile(p as *mut u32, 0xCA1E_CA1E);
            p += 4;
        }
    }
}

/// Bytes of stack used so far (from the top of RAM to the deepest overwritten word).
pub fn stack_used() -> usize {
    extern "C" {
        static mut __ebss: u32;
        static _stack_start: u32;
    }
    // SAFETY: reads of RAM between .bss and the stack top.
    unsafe {
        let top = core::ptr::addr_of!(_stack_start) as usize;
        let mut p = core::ptr::addr_of_mut!(__ebss) as usize;
        while p < top && core::ptr::read_volatile(p as *const u32) == 0xCA1E_CA1E {
            p += 4;
        }
        top - p
    }
}

/// The verdict, as QEMU's exit status.
pub fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

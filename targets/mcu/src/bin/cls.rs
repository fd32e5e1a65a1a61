//! The CNN on the Cortex-M4F: PaddleOCR's text-direction classifier (PP-OCR mobile v2.0
//! cls, converted from `models/zoo/ppocr_cls/cls_qdq.onnx`: 112 int8 ops — convolutions,
//! depthwise convolutions, hard-swish lookup tables, squeeze-excitation `Mul`s, pooling,
//! FullyConnected, Softmax) from flash, with its 138,240-byte arena in RAM, through
//! `Select<CNN_I8 | FAST>`: with the `dsp` feature, the DSP-extension kernels
//! (`cairn-kernels` `dsp_conv.rs`: im2col + SMLAD convs, narrow pointwise, depthwise;
//! `dsp.rs`: GlobalAveragePool sums, 2×2 MaxPool; `dsp_elt.rs`: `Mul`, `Add`, `Lut`,
//! `QuantizeLinear`; the SMLAD FullyConnected).
//!
//! For each bundled text line (two from the evaluation set, stored as bytes with their
//! width and label) it preprocesses as PaddleOCR does, runs the model, logs the class, the
//! instructions per inference and the output's bytes, which the host test compares with
//! the host interpreter's byte for byte. The first inference also logs instructions per
//! op (`op_profile.rs`: each Conv / FullyConnected with its shapes and instructions per
//! MAC, each other op of 100,000 instructions or more, and a total per op kind). The exit
//! status is the verdict.
#![no_std]
#![no_main]

use cortex_m as _;
use defmt_semihosting as _;
// On a board build the device crate supplies the interrupt vectors.
#[cfg(feature = "nrf52840")]
use nrf52840_hal as _;
#[cfg(feature = "stm32f4")]
use stm32f4xx_hal as _;

#[path = "../clock.rs"]
mod clock;
#[path = "../op_profile.rs"]
mod op_profile;

use cairn_core::{Interpreter, Model};
use cairn_kernels::{family, Select};
use clock::{exit, insns, paint_stack, stack_used, ticks};
use cortex_m_rt::entry;

static MODEL: &[u8] = cairn_core::include_model!("../../assets/cls.cairn");
/// Per line: width (u32 LE), label (u32 LE), then 3 × 48 × 192 pixel bytes (CHW).
static LINES: &[u8] = include_bytes!("../../assets/cls_inputs.bin");
const C: usize = 3;
const H: usize = 48;
const W: usize = 192;
const LINE_BYTES: usize = 8 + C * H * W;
const LABELS: [&str; 2] = ["0 degrees", "180 degrees"];

/// The plan's arena (138,240 bytes for this model) and the 16-byte alignment slack. An
/// STM32F411 has 128 KiB of RAM in all: there the image links with what fits and the
/// interpreter refuses the model (`ArenaTooSmall`) instead of overrunning memory.
#[cfg(not(feature = "stm32f4"))]
const ARENA_BYTES: usize = 139_264;
#[cfg(feature = "stm32f4")]
const ARENA_BYTES: usize = 96 * 1024;
static mut ARENA: cairn_core::Aligned<[u8; ARENA_BYTES]> = cairn_core::Aligned([0; ARENA_BYTES]);

#[entry]
fn main() -> ! {
    exit(run())
}

fn run() -> bool {
    paint_stack();
    let Some(syst) = clock::start() else {
        return false;
    };
    let t0 = ticks(&syst);
    let model = match Model::parse_kinds::<{ family::kinds(family::CNN_I8) }>(MODEL) {
        Ok(m) => m,
        Err(e) => {
            defmt::error!("model refused: {}", defmt::Debug2Format(&e));
            return false;
        }
    };
    let t1 = ticks(&syst);
    defmt::println!(
        "model: {=usize} bytes of flash, arena {=usize} bytes, {=usize} ops; checked in ~{=u32} instructions",
        model.flash_bytes(),
        model.arena_bytes(),
        model.n_ops(),
        insns(t0, t1)
    );
    // SAFETY: main runs once; nothing else touches these statics.
    #[allow(static_mut_refs)]
    let arena = unsafe { &mut ARENA.0 };
    // The first inference also logs instructions per op (`op_profile.rs`).
    let mut backend = op_profile::Profiled::new(Select::<{ family::CNN_I8 | family::FAST }>);
    backend.logging = true;
    let mut it = match Interpreter::new(model, backend, arena) {
        Ok(it) => it,
        Err(e) => {
            defmt::error!("interpreter: {}", defmt::Debug2Format(&e));
            return false;
        }
    };
    let mut correct = 0;
    let lines = LINES.chunks_exact(LINE_BYTES);
    let n = lines.len();
    for (i, line) in lines.enumerate() {
        let width = u32::from_le_bytes([line[0], line[1], line[2], line[3]]) as usize;
        let label = u32::from_le_bytes([line[4], line[5], line[6], line[7]]) as usize;
        // PaddleOCR's preprocessing: scale to [-1, 1]; columns past the text are zero.
        // Written straight into the input tensor's arena bytes (f32, little-endian).
        let Ok(x) = it.input_bytes_mut(0) else {
            return false;
        };
        if x.len() != 4 * C * H * W {
            defmt::error!("the model's input is not 3 x 48 x 192 f32");
            return false;
        }
        for (k, (x, &p)) in x.chunks_exact_mut(4).zip(&line[8..]).enumerate() {
            let v = if k % W < width {
                (p as f32 / 255.0 - 0.5) / 0.5
            } else {
                0.0
            };
            x.copy_from_slice(&v.to_le_bytes());
        }
        let t0 = ticks(&syst);
        if let Err(e) = it.invoke() {
            defmt::error!("invoke: {}", defmt::Debug2Format(&e));
            return false;
        }
        let t1 = ticks(&syst);
        if it.backend_mut().logging {
            it.backend_mut().summary();
            it.backend_mut().logging = false;
        }
        let Ok(out) = it.output(0) else {
            return false;
        };
        let p = |k: usize| {
            let b = &out.data[4 * k..4 * k + 4];
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        let class = (p(1) > p(0)) as usize;
        correct += (class == label) as usize;
        defmt::println!(
            "infer {=usize}: {=str} (p {=f32}; label {=str}), ~{=u32} instructions",
            i,
            LABELS[class],
            p(class),
            LABELS[label.min(1)],
            insns(t0, t1)
        );
        defmt::println!("out0 {=usize} {=[u8]}", i, out.data);
    }
    defmt::println!("accuracy on the samples: {=usize}/{=usize}", correct, n);
    defmt::println!(
        "stack used: {=usize} bytes (size.sh budgets 16384)",
        stack_used()
    );
    n > 0
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    exit(false)
}

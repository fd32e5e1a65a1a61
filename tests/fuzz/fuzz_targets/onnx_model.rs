//! Arbitrary bytes as an ONNX model given to `cairn convert` (float conversion, no
//! calibration): a typed error, or a `.cairn` file that the runtime's checked loader
//! accepts and runs. Never a panic, in the converter or in what it emits.
#![no_main]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let opts = cairn_convert::Options::default();
    let _ = cairn_convert::check(data, &opts);
    let Ok(c) = cairn_convert::convert(data, &opts, |_| {}) else { return };
    let bytes = cairn_core::emit::AlignedBytes::from_slice(&c.bytes);
    if let Err(e) = cairn_core::Model::parse(bytes.as_slice()) {
        panic!("the converter emitted a model the runtime refuses: {e:?}");
    }
    common::load_and_run(&c.bytes);
});

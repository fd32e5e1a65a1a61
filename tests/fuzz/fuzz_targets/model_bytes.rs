//! Raw bytes into the one checked door: `Model::parse`, then the interpreter.
#![no_main]
mod common;
libfuzzer_sys::fuzz_target!(|data: &[u8]| common::load_and_run(data));

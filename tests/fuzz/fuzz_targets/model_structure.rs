//! Like `model_bytes`, but the length and CRC fields are re-stamped first, so the fuzzer
//! reaches the structural checks behind the checksum (start it from real models:
//! `cairn convert ... -o tests/fuzz/corpus/model_structure/x.cairn`).
#![no_main]
mod common;
use cairn_core::format::{file_crc, hdr, HEADER_BYTES};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    if b.len() >= HEADER_BYTES {
        let len = b.len() as u32;
        b[hdr::FILE_BYTES..hdr::FILE_BYTES + 4].copy_from_slice(&len.to_le_bytes());
        let crc = file_crc(&b);
        b[hdr::CRC..hdr::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
    common::load_and_run(&b);
});

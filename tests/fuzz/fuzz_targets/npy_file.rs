//! Arbitrary bytes as a `.npy` file (every CLI input goes through this reader): a typed
//! error or an array whose element count matches its shape, which writes back and reads
//! again to the same array. Never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(a) = cairn_convert::npy::parse(data) else { return };
    let count = a.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    assert_eq!(count, Some(a.data.len()), "shape {:?}", a.shape);
    let back = cairn_convert::npy::parse(&cairn_convert::npy::to_bytes(&a.shape, &a.data))
        .expect("an array cairn wrote reads back");
    assert_eq!(back.shape, a.shape);
    assert!(back.data.iter().zip(&a.data).all(|(x, y)| x.to_bits() == y.to_bits()));
});

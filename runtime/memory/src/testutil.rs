//! Test support: a store in RAM flash filled with given rows, and pseudo-random rows.

use alloc::vec::Vec;

use crate::flash::RamFlash;
use crate::{Config, Record, Store};

/// A store of `dim`-wide records, one per row, in order: record i has timestamp i, the
/// row's label, origin 1, importance 0, scale 1 and no payload.
pub(crate) fn store_of<V: AsRef<[i8]>>(
    dim: usize,
    rows: impl IntoIterator<Item = (u16, V)>,
) -> Store<RamFlash<4096>> {
    let (mut st, _) = Store::open(
        RamFlash::<4096>::new(64),
        Config {
            dim,
            max_records: 100_000,
            max_payload: 0,
        },
    )
    .unwrap();
    for (i, (label, v)) in rows.into_iter().enumerate() {
        st.append(&Record {
            origin: 1,
            timestamp_ms: i as u64,
            label,
            importance: 0,
            meta: [0; 4],
            scale: 1.0,
            embedding: v.as_ref(),
            payload: &[],
        })
        .unwrap();
    }
    st
}

/// `n` pseudo-random `dim`-wide rows, all labelled 0: the top byte of each step of an
/// xorshift64 generator started from `seed` (made odd, so 0 is not a stuck state).
pub(crate) fn random_rows(seed: u64, n: usize, dim: usize) -> Vec<(u16, Vec<i8>)> {
    let mut r = seed | 1;
    (0..n)
        .map(|_| {
            let v = (0..dim)
                .map(|_| {
                    r ^= r << 13;
                    r ^= r >> 7;
                    r ^= r << 17;
                    (r >> 56) as i8
                })
                .collect();
            (0, v)
        })
        .collect()
}

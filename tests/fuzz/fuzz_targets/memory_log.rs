//! Arbitrary bytes as the flash image of a memory store: `Store::open` recovers what is
//! valid and the store keeps working (search, append, compaction); never a panic. The same
//! image also goes through the fixed-capacity (no-alloc) RAM side and an HNSW build.
#![no_main]
use cairn_memory::flash::RamFlash;
use cairn_memory::search::{Filter, Scoring};
use cairn_memory::ram::FixedRam;
use cairn_memory::{Config, LogStore, Record, Store};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut f = RamFlash::<1024>::new(4);
    let n = data.len().min(f.data.len());
    f.data[..n].copy_from_slice(&data[..n]);
    if let Ok((mut fx, _)) = LogStore::open_in(f.clone(), Config { dim: 0, max_records: 64, max_payload: 64 }, FixedRam::<16, 8, 4, 256>::new()) {
        let mut hits = [Default::default(); 3];
        let _ = fx.search_into(&[1i8; 8], &Filter::default(), &Scoring::default(), &mut hits);
        let r = Record { origin: 9, timestamp_ms: 1, label: 1, importance: 7, meta: [0; 4], scale: 0.5, embedding: &[3i8; 8], payload: b"x" };
        let _ = fx.append(&r);
        let _ = fx.compact();
    }
    let Ok((mut st, _)) = Store::open(f, Config { dim: 0, max_records: 64, max_payload: 64 }) else { return };
    let h = cairn_memory::hnsw::Hnsw::build(&st, Default::default());
    let mut scratch = h.scratch();
    let dim = st.config().dim.max(1);
    let q = vec![1i8; dim];
    let _ = st.search(&q, 5, &Filter::default(), &Scoring::default());
    let _ = h.search(&st, &q, 5, 10, &Filter::default(), &Scoring::default(), &mut scratch);
    let emb = vec![3i8; dim];
    for i in 0..20 {
        let r = Record { origin: 9, timestamp_ms: i, label: 1, importance: 7, meta: [0; 4], scale: 0.5, embedding: &emb, payload: b"x" };
        if st.append(&r).is_err() {
            break;
        }
    }
    let _ = st.compact();
});

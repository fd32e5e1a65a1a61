//! The store's contract: durability, recovery after a power cut at every byte, compaction,
//! eviction, search. Randomised parts take `CAIRN_SEED` and print it on failure.

use std::collections::BTreeMap;

use cairn_memory::flash::{FaultyFlash, RamFlash};
use cairn_memory::ram::{FixedRam, HeapRam, Ram};
use cairn_memory::search::{Filter, Scoring};
use cairn_memory::{Config, Id, LogStore, Record, Store};

const DIM: usize = 8;
type Flash = RamFlash<1024>;

struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0CA1_F3E3)
}

fn cfg(max_records: usize) -> Config {
    Config {
        dim: DIM,
        max_records,
        max_payload: 64,
    }
}

#[derive(Clone, Debug)]
struct Owned {
    ts: u64,
    label: u16,
    importance: u8,
    emb: Vec<i8>,
    payload: Vec<u8>,
}

impl Owned {
    fn rec(&self) -> Record<'_> {
        Record {
            origin: 7,
            timestamp_ms: self.ts,
            label: self.label,
            importance: self.importance,
            meta: [1, 2, 3, 4],
            scale: 0.05,
            embedding: &self.emb,
            payload: &self.payload,
        }
    }
    fn random(r: &mut Rng, ts: u64) -> Owned {
        let mut payload: Vec<u8> = (0..r.below(24)).map(|_| r.next_u64() as u8).collect();
        // Payloads ending in 0xFF look like erased flash: recovery must not write over them.
        if r.below(4) == 0 {
            payload.extend([0xFF; 5]);
        }
        Owned {
            ts,
            label: r.below(4) as u16,
            importance: r.below(256) as u8,
            emb: (0..DIM).map(|_| r.next_u64() as i8).collect(),
            payload,
        }
    }
    fn body(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.rec().encoded_len()];
        self.rec().encode(&mut b).unwrap();
        b
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(Owned),
    Delete(usize),
    Compact,
}

fn workload(seed: u64, n: usize) -> Vec<Op> {
    let mut r = Rng(seed);
    (0..n)
        .map(|i| match r.below(10) {
            0..=6 => Op::Put(Owned::random(&mut r, 1000 + i as u64)),
            7 | 8 => Op::Delete(r.below(1 << 20)),
            _ => Op::Compact,
        })
        .collect()
}

/// The expected state: id -> encoded record, with the same eviction rule as the store.
#[derive(Clone, Debug, Default)]
struct Model {
    live: BTreeMap<Id, (u8, u64, Vec<u8>)>,
}

impl Model {
    /// Apply an op; returns (the id it adds, the id it removes) for in-flight checks.
    fn apply(&mut self, op: &Op, max: usize) -> (Option<Id>, Option<Id>) {
        match op {
            Op::Put(o) => {
                let id = o.rec().id();
                let mut evicted = None;
                if !self.live.contains_key(&id) && self.live.len() >= max {
                    evicted = self
                        .live
                        .iter()
                        .min_by_key(|(_, v)| (v.0, v.1))
                        .map(|(k, _)| *k);
                    if let Some(e) = evicted {
                        self.live.remove(&e);
                    }
                }
                self.live.insert(id, (o.importance, o.ts, o.body()));
                (Some(id), evicted)
            }
            Op::Delete(k) => {
                let victim = (!self.live.is_empty())
                    .then(|| *self.live.keys().nth(k % self.live.len()).unwrap());
                if let Some(v) = victim {
                    self.live.remove(&v);
                }
                (None, victim)
            }
            Op::Compact => (None, None),
        }
    }
}

fn run_op<F: embedded_storage::nor_flash::NorFlash, R: Ram>(
    st: &mut LogStore<F, R>,
    op: &Op,
    model: &Model,
) -> Result<(), cairn_memory::StoreError> {
    match op {
        Op::Put(o) => st.append(&o.rec()).map(|_| ()),
        Op::Delete(k) => {
            if model.live.is_empty() {
                return Ok(());
            }
            let id = *model.live.keys().nth(k % model.live.len()).unwrap();
            st.delete(&id).map(|_| ())
        }
        Op::Compact => st.compact(),
    }
}

/// A record's encoding through the no-alloc reader (works for every RAM side).
fn get<F: embedded_storage::nor_flash::NorFlash, R: Ram>(
    st: &mut LogStore<F, R>,
    id: &Id,
) -> Result<Option<Vec<u8>>, cairn_memory::StoreError> {
    let mut out = vec![0u8; 8192];
    Ok(st.read_record(id, &mut out)?.map(|n| out[..n].to_vec()))
}

fn check_state<R: Ram>(
    st: &mut LogStore<Flash, R>,
    model: &Model,
    maybe_add: Option<Id>,
    maybe_del: Option<Id>,
    add_body: Option<&[u8]>,
    ctx: &str,
) {
    for (id, (_, _, body)) in &model.live {
        if Some(*id) == maybe_del {
            continue;
        }
        let got = get(st, id).unwrap_or_else(|e| panic!("{ctx}: get failed {e:?}"));
        assert_eq!(
            got.as_deref(),
            Some(body.as_slice()),
            "{ctx}: acknowledged record lost or changed"
        );
    }
    for m in st.metas().to_vec() {
        let known =
            model.live.contains_key(&m.id) || Some(m.id) == maybe_add || Some(m.id) == maybe_del;
        assert!(
            known,
            "{ctx}: a record that was never acknowledged (or was deleted) is present"
        );
    }
    if let (Some(a), Some(body)) = (maybe_add, add_body) {
        if let Some(got) = get(st, &a).unwrap() {
            assert_eq!(
                got, body,
                "{ctx}: the in-flight record is present but not intact"
            );
        }
    }
}

#[test]
fn append_get_delete_reopen() {
    let mut r = Rng(seed());
    let (mut st, rec) = Store::open(Flash::new(8), cfg(1000)).unwrap();
    assert_eq!(rec.records, 0);
    let recs: Vec<Owned> = (0..30).map(|i| Owned::random(&mut r, i)).collect();
    let ids: Vec<Id> = recs.iter().map(|o| st.append(&o.rec()).unwrap()).collect();
    assert!(st.delete(&ids[3]).unwrap());
    assert!(!st.delete(&ids[3]).unwrap());
    let (mut st, rec) = Store::open(st.into_flash(), cfg(1000)).unwrap();
    assert_eq!(rec.records, 29);
    assert_eq!(rec.dropped_entries, 0);
    for (i, (o, id)) in recs.iter().zip(&ids).enumerate() {
        let got = st.get(id).unwrap();
        if i == 3 {
            assert!(got.is_none());
        } else {
            assert_eq!(got.unwrap(), o.body());
        }
    }
}

#[test]
fn search_finds_nearest_with_filters() {
    let mut r = Rng(seed() ^ 1);
    let (mut st, _) = Store::open(Flash::new(16), cfg(1000)).unwrap();
    let recs: Vec<Owned> = (0..60).map(|i| Owned::random(&mut r, i)).collect();
    for o in &recs {
        st.append(&o.rec()).unwrap();
    }
    let q = &recs[17];
    let hits = st.search(&q.emb, 3, &Filter::default(), &Scoring::default());
    assert_eq!(hits[0].id, q.rec().id());
    assert!((hits[0].cosine - 1.0).abs() < 1e-5);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let f = Filter {
        label: Some((q.label + 1) % 4),
        ..Filter::default()
    };
    let hits = st.search(&q.emb, 5, &f, &Scoring::default());
    assert!(hits
        .iter()
        .all(|h| recs.iter().find(|o| o.rec().id() == h.id).unwrap().label == f.label.unwrap()));
    // Brute force agrees.
    let dot = |a: &[i8], b: &[i8]| {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| x as f32 * y as f32)
            .sum::<f32>()
    };
    let mut all: Vec<(f32, Id)> = recs
        .iter()
        .map(|o| {
            (
                dot(&q.emb, &o.emb) / dot(&o.emb, &o.emb).sqrt(),
                o.rec().id(),
            )
        })
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let hits = st.search(&q.emb, 10, &Filter::default(), &Scoring::default());
    let got: Vec<Id> = hits.iter().map(|h| h.id).collect();
    let want: Vec<Id> = all.iter().take(10).map(|a| a.1).collect();
    assert_eq!(got, want);
}

#[test]
fn eviction_keeps_the_bound_and_compaction_spreads_erases() {
    let seed = seed() ^ 2;
    let ops = workload(seed, 3000);
    let (mut st, _) = Store::open(Flash::new(6), cfg(20)).unwrap();
    let mut model = Model::default();
    for op in &ops {
        run_op(&mut st, op, &model).unwrap_or_else(|e| panic!("CAIRN_SEED={seed}: {e:?}"));
        model.apply(op, 20);
        assert!(st.len() <= 20);
    }
    check_state(
        &mut st,
        &model,
        None,
        None,
        None,
        &format!("CAIRN_SEED={seed} final"),
    );
    let erases = st.erase_counts();
    let (lo, hi) = (*erases.iter().min().unwrap(), *erases.iter().max().unwrap());
    println!("erase counts after 3000 ops on 6 sectors: {erases:?}");
    assert!(hi > 0 && hi - lo <= 2 + hi / 4, "erases uneven: {erases:?}");
    // The wear count is kept in each sector's header: a reopened store reads the same
    // counts for the sectors in use. (An erased free sector has no header, so its count
    // reads 0 after a reopen: a known limit of the format, spec.md.) The store keeps a
    // free sector for compaction beside those in use.
    let table: Vec<u32> = st.segments().iter().map(|s| s.erases()).collect();
    assert_eq!(table, erases, "CAIRN_SEED={seed}");
    let (again, _) = Store::open(st.flash().clone(), cfg(20)).unwrap();
    for (i, s) in st.segments().iter().enumerate() {
        let want = if s.in_use() { s.erases() } else { 0 };
        assert_eq!(
            again.segments()[i].erases(),
            want,
            "CAIRN_SEED={seed}: sector {i}"
        );
        assert_eq!(
            again.segments()[i].in_use(),
            s.in_use(),
            "CAIRN_SEED={seed}: sector {i}"
        );
    }
    let used = st.segments().iter().filter(|s| s.in_use()).count();
    assert!(
        (1..6).contains(&used),
        "CAIRN_SEED={seed}: {used} sectors in use"
    );
}

/// Cut the power at every unit (programmed byte or erase) of a 1000-op workload of appends,
/// deletes, explicit and implicit compactions and evictions; after each cut, reopen and
/// check that every acknowledged record is present and intact, nothing unacknowledged or
/// deleted is present, and the record in flight is absent or whole.
#[test]
fn power_cut_at_every_byte_loses_nothing_acknowledged() {
    let cuts = power_cut_everywhere(seed() ^ 3, 1000, HeapRam::default);
    assert!(cuts > 10_000);
}

/// The same contract for the no-alloc RAM side (a shorter workload: same code paths).
#[test]
fn power_cut_everywhere_fixed_capacity() {
    let cuts = power_cut_everywhere(seed() ^ 5, 300, FixedRam::<20, DIM, 6, 128>::new);
    assert!(cuts > 3_000);
}

/// Cut power at every programmed unit of a workload of `n` ops; returns the cut points.
fn power_cut_everywhere<R: Ram>(seed: u64, n: usize, ram: impl Fn() -> R) -> u64 {
    let max = 20;
    let ops = workload(seed, n);
    // Run once, keeping the flash and the model before every op.
    let (mut st, _) = LogStore::open_in(FaultyFlash::new(Flash::new(6)), cfg(max), ram()).unwrap();
    let mut model = Model::default();
    let mut checkpoints = Vec::new();
    let mut used_before = Vec::new();
    for op in &ops {
        checkpoints.push((st_flash_snapshot(&st), model.clone()));
        used_before.push(st_used(&st));
        run_op(&mut st, op, &model).unwrap();
        model.apply(op, max);
    }
    let total = st_used(&st);
    let mut cuts = 0u64;
    for (i, op) in ops.iter().enumerate() {
        let end = if i + 1 < ops.len() {
            used_before[i + 1]
        } else {
            total
        };
        for cut in used_before[i]..end {
            let (flash, model_before) = &checkpoints[i];
            let ctx = format!("CAIRN_SEED={seed} op {i} ({op:?}) cut at unit {cut}");
            let (mut st, _) = LogStore::open_in(
                FaultyFlash::new(flash.clone()).cut_after(cut - used_before[i]),
                cfg(max),
                ram(),
            )
            .unwrap_or_else(|e| panic!("{ctx}: reopen before op {e:?}"));
            let r = run_op(&mut st, op, model_before);
            assert!(r.is_err(), "{ctx}: the cut did not happen inside this op");
            let flash_after = st.into_flash().inner;
            let (mut re, _) = LogStore::open_in(flash_after, cfg(max), ram())
                .unwrap_or_else(|e| panic!("{ctx}: recovery failed {e:?}"));
            let mut after = model_before.clone();
            let (add, del) = after.apply(op, max);
            let add_body = match op {
                Op::Put(o) => Some(o.body()),
                _ => None,
            };
            // Acknowledged = the state before the op; the op itself may or may not have landed.
            check_state(&mut re, model_before, add, del, add_body.as_deref(), &ctx);
            cuts += 1;
        }
    }
    println!(
        "power cut at {cuts} points of a {}-op workload ({}); 0 losses, 0 corruptions",
        ops.len(),
        std::any::type_name::<R>()
    );
    cuts
}

fn st_flash_snapshot<R: Ram>(st: &LogStore<FaultyFlash<Flash>, R>) -> Flash {
    st.flash().inner.clone()
}

fn st_used<R: Ram>(st: &LogStore<FaultyFlash<Flash>, R>) -> u64 {
    st.flash().used
}

/// Garbled storage (random bytes, flipped bits on read) recovers what is valid, reports
/// what it dropped, and never panics.
#[test]
fn hostile_or_damaged_logs_never_panic() {
    let seed = seed() ^ 4;
    let mut r = Rng(seed);
    // A real log, then damage.
    let (mut st, _) = Store::open(Flash::new(6), cfg(20)).unwrap();
    let mut model = Model::default();
    let mut ever = std::collections::BTreeSet::new();
    for op in &workload(seed, 300) {
        run_op(&mut st, op, &model).unwrap();
        if let (Some(id), _) = model.apply(op, 20) {
            ever.insert(id);
        }
    }
    let clean = st.into_flash();
    let mut dropped_total = 0;
    for case in 0..300 {
        let mut f = clean.clone();
        for _ in 0..1 + r.below(8) {
            let at = r.below(f.data.len());
            f.data[at] = r.next_u64() as u8;
        }
        let res = std::panic::catch_unwind(|| {
            Store::open(f, cfg(20))
                .map(|(s, rec)| (s.metas().iter().map(|m| m.id).collect::<Vec<_>>(), rec))
        });
        match res {
            Ok(Ok((ids, rec))) => {
                // Damage can drop entries (a dropped tombstone lets its record back in), but
                // it never fabricates one: every id was really written.
                assert!(
                    ids.iter().all(|id| ever.contains(id)),
                    "CAIRN_SEED={seed} case {case}: a fabricated record"
                );
                dropped_total += rec.dropped_entries;
            }
            Ok(Err(_)) => {}
            Err(_) => panic!("CAIRN_SEED={seed} case {case}: open panicked on a damaged log"),
        }
    }
    // Pure noise and flipped bits on read.
    for case in 0..100 {
        let mut f = Flash::new(6);
        f.data.iter_mut().for_each(|b| *b = r.next_u64() as u8);
        let res = std::panic::catch_unwind(|| Store::open(f, cfg(20)).is_ok());
        assert!(res.is_ok(), "CAIRN_SEED={seed} noise case {case} panicked");
        let flipping = FaultyFlash::new(clean.clone()).flip_bits(500, seed + case);
        let res = std::panic::catch_unwind(|| Store::open(flipping, cfg(20)).map(|(s, _)| s.len()));
        assert!(res.is_ok(), "CAIRN_SEED={seed} flip case {case} panicked");
    }
    println!("damaged logs: {dropped_total} damaged entries dropped and reported over 300 cases");
}

/// A batch cut at any unit keeps a prefix of the batch (whole records), never a torn one,
/// and everything acknowledged before it.
#[test]
fn power_cut_inside_a_batch_keeps_a_prefix() {
    let seed = seed() ^ 5;
    let mut r = Rng(seed);
    let (mut st, _) = Store::open(FaultyFlash::new(Flash::new(8)), cfg(1000)).unwrap();
    let before: Vec<Owned> = (0..15).map(|i| Owned::random(&mut r, i)).collect();
    for o in &before {
        st.append(&o.rec()).unwrap();
    }
    let batch: Vec<Owned> = (0..40).map(|i| Owned::random(&mut r, 100 + i)).collect();
    let recs: Vec<Record> = batch.iter().map(|o| o.rec()).collect();
    let snapshot = st.flash().inner.clone();
    let used0 = st.flash().used;
    st.append_batch(&recs).unwrap();
    let total = st.flash().used - used0;
    for cut in 0..total {
        let ctx = format!("CAIRN_SEED={seed} cut at unit {cut} of {total}");
        let (mut s, _) =
            Store::open(FaultyFlash::new(snapshot.clone()).cut_after(cut), cfg(1000)).unwrap();
        assert!(s.append_batch(&recs).is_err(), "{ctx}: no cut");
        let (mut re, _) = Store::open(s.into_flash().inner, cfg(1000)).unwrap();
        for o in &before {
            assert_eq!(
                re.get(&o.rec().id()).unwrap(),
                Some(o.body()),
                "{ctx}: acknowledged record lost"
            );
        }
        let present: Vec<bool> = batch.iter().map(|o| re.contains(&o.rec().id())).collect();
        let k = present.iter().take_while(|&&p| p).count();
        assert!(
            present[k..].iter().all(|&p| !p),
            "{ctx}: not a prefix: {present:?}"
        );
        for o in &batch[..k] {
            assert_eq!(
                re.get(&o.rec().id()).unwrap(),
                Some(o.body()),
                "{ctx}: torn record"
            );
        }
    }
}

/// The IVF index finds what exact search finds on clustered data, and refuses to answer
/// once the store changed under it.
#[test]
fn ann_recall_filters_and_staleness() {
    let seed = seed() ^ 6;
    let mut r = Rng(seed);
    let (mut st, _) = Store::open(
        RamFlash::<4096>::new(64),
        Config {
            dim: 32,
            max_records: 10_000,
            max_payload: 0,
        },
    )
    .unwrap();
    let centers: Vec<Vec<i32>> = (0..20)
        .map(|_| (0..32).map(|_| (r.next_u64() % 101) as i32 - 50).collect())
        .collect();
    let mut vecs = Vec::new();
    for i in 0..2000 {
        let c = &centers[i % 20];
        let v: Vec<i8> = c
            .iter()
            .map(|&x| (x + (r.next_u64() % 21) as i32 - 10) as i8)
            .collect();
        vecs.push(v);
    }
    for (i, v) in vecs.iter().enumerate() {
        st.append(&Record {
            origin: 1,
            timestamp_ms: i as u64,
            label: (i % 3) as u16,
            importance: 0,
            meta: [0; 4],
            scale: 1.0,
            embedding: v,
            payload: &[],
        })
        .unwrap();
    }
    // recall@10 of an approximate search against the exact one, over every 40th vector.
    let recall = |approx: &mut dyn FnMut(&[i8]) -> Vec<cairn_memory::search::Hit>| {
        let mut found = 0;
        for q in vecs.iter().step_by(40) {
            let exact: Vec<Id> = st
                .search(q, 10, &Filter::default(), &Scoring::default())
                .iter()
                .map(|h| h.id)
                .collect();
            found += approx(q).iter().filter(|h| exact.contains(&h.id)).count();
        }
        found as f64 / (10 * 50) as f64
    };
    let ivf = cairn_memory::ivf::Ivf::build(&st, 45, 8, 2000, seed);
    let r = recall(&mut |q| {
        ivf.search(&st, q, 10, 4, &Filter::default(), &Scoring::default())
            .unwrap()
    });
    assert!(r >= 0.95, "CAIRN_SEED={seed}: IVF recall@10 {r}");
    // HNSW: the same queries, and a label filter that only admits matching records.
    let hnsw = cairn_memory::hnsw::Hnsw::build(&st, cairn_memory::hnsw::HnswParams::default());
    let mut scratch = hnsw.scratch();
    let r = recall(&mut |q| {
        let f = Filter::default();
        hnsw.search(&st, q, 10, 40, &f, &Scoring::default(), &mut scratch)
            .unwrap()
    });
    assert!(r >= 0.95, "CAIRN_SEED={seed}: HNSW recall@10 {r}");
    let only = Filter {
        label: Some(2),
        ..Filter::default()
    };
    let hits = hnsw
        .search(
            &st,
            &vecs[5],
            5,
            80,
            &only,
            &Scoring::default(),
            &mut scratch,
        )
        .unwrap();
    assert!(!hits.is_empty());
    for h in &hits {
        let m = st.metas().iter().find(|m| m.id == h.id).unwrap();
        assert_eq!(
            m.label, 2,
            "CAIRN_SEED={seed}: the filter let another label through"
        );
    }
    assert!(hnsw
        .search(
            &st,
            &vecs[0][..5],
            5,
            10,
            &Filter::default(),
            &Scoring::default(),
            &mut scratch
        )
        .is_none());
    st.append(&Record {
        origin: 2,
        timestamp_ms: 9,
        label: 0,
        importance: 0,
        meta: [0; 4],
        scale: 1.0,
        embedding: &vecs[0],
        payload: &[],
    })
    .unwrap();
    assert!(ivf.is_stale(&st));
    assert!(hnsw.is_stale(&st));
    assert!(hnsw
        .search(
            &st,
            &vecs[0],
            10,
            40,
            &Filter::default(),
            &Scoring::default(),
            &mut scratch
        )
        .is_none());
    assert!(ivf
        .search(
            &st,
            &vecs[0],
            10,
            4,
            &Filter::default(),
            &Scoring::default()
        )
        .is_none());
}

#[test]
fn consolidation_merges_near_duplicates_only() {
    let seed = seed() ^ 7;
    let mut r = Rng(seed);
    let (mut st, _) = Store::open(
        Flash::new(16),
        Config {
            dim: DIM,
            max_records: 1000,
            max_payload: 64,
        },
    )
    .unwrap();
    let base: Vec<i8> = (0..DIM)
        .map(|_| (r.below(200) as i32 - 100) as i8)
        .collect();
    let mut dup_ids = Vec::new();
    for i in 0..10 {
        let e: Vec<i8> = base
            .iter()
            .map(|&v| v.saturating_add((r.below(3) as i8) - 1))
            .collect();
        let rec = Record {
            origin: 1,
            timestamp_ms: i,
            label: 3,
            importance: i as u8,
            meta: [0; 4],
            scale: 0.1,
            embedding: &e,
            payload: &[],
        };
        dup_ids.push(st.append(&rec).unwrap());
    }
    // The same vector under another label, and unrelated vectors: never merged.
    let other = Record {
        origin: 1,
        timestamp_ms: 50,
        label: 4,
        importance: 0,
        meta: [0; 4],
        scale: 0.1,
        embedding: &base,
        payload: &[],
    };
    let other_id = st.append(&other).unwrap();
    let mut keep = vec![other_id];
    for i in 0..10 {
        let o = Owned::random(&mut r, 100 + i);
        keep.push(st.append(&o.rec()).unwrap());
    }
    let rep = st.consolidate(0.98).unwrap();
    assert_eq!((rep.prototypes, rep.merged), (1, 10), "CAIRN_SEED={seed}");
    let (mut st, _) = Store::open(
        st.into_flash(),
        Config {
            dim: DIM,
            max_records: 1000,
            max_payload: 64,
        },
    )
    .unwrap();
    assert!(dup_ids.iter().all(|id| !st.contains(id)));
    assert!(keep.iter().all(|id| st.contains(id)));
    let proto = st
        .metas()
        .iter()
        .find(|m| m.observations == 10)
        .copied()
        .expect("prototype");
    assert_eq!(
        (proto.label, proto.importance, proto.timestamp_ms),
        (3, 9, 9)
    );
    let body = st.get(&proto.id).unwrap().unwrap();
    let (_, rec) = Record::decode(&body).unwrap();
    assert_eq!(
        rec.payload.len(),
        64,
        "4 of the 10 replaced ids fit in 64 bytes"
    );
    assert!(rec
        .payload
        .chunks(16)
        .all(|c| dup_ids.iter().any(|d| d[..] == *c)));
}

/// One log format for both RAM sides: a log written with the growable RAM opens with the
/// fixed one (and back), search agrees, and a fixed RAM too small for the log says so.
#[test]
fn fixed_capacity_mode_shares_the_log() {
    let seed = seed() ^ 11;
    let mut r = Rng(seed);
    let recs: Vec<Owned> = (0..30).map(|i| Owned::random(&mut r, i)).collect();
    let (mut heap, _) = Store::open(Flash::new(6), cfg(1000)).unwrap();
    for o in &recs[..25] {
        heap.append(&o.rec()).unwrap();
    }
    heap.delete(&recs[3].rec().id()).unwrap();
    let flash = heap.flash().clone();
    type Small = FixedRam<16, DIM, 6, 128>;
    type Big = FixedRam<32, DIM, 6, 128>;
    let err = LogStore::open_in(flash.clone(), cfg(1000), Small::new()).err();
    assert_eq!(err, Some(cairn_memory::StoreError::Capacity), "seed {seed}");
    let (mut fixed, rec) = LogStore::open_in(flash, cfg(1000), Big::new()).unwrap();
    assert_eq!(rec.records, 24, "seed {seed}");
    assert_eq!(fixed.config().max_records, 32);
    for o in &recs[25..] {
        fixed.append(&o.rec()).unwrap();
    }
    let q = &recs[7].emb;
    let mut hits = [Default::default(); 5];
    let n = fixed.search_into(q, &Filter::default(), &Scoring::default(), &mut hits);
    assert_eq!(n, 5);
    assert_eq!(hits[0].id, recs[7].rec().id(), "seed {seed}");
    // Back to the growable RAM: the same 29 records, the same answer.
    let (mut heap, _) = Store::open(fixed.into_flash(), cfg(1000)).unwrap();
    assert_eq!(heap.len(), 29, "seed {seed}");
    assert_eq!(
        heap.search(q, 5, &Filter::default(), &Scoring::default()),
        hits.to_vec(),
        "seed {seed}"
    );
    for o in recs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|x| x.1)
    {
        assert_eq!(
            heap.get(&o.rec().id()).unwrap(),
            Some(o.body()),
            "seed {seed}"
        );
    }
    // A dimension the fixed RAM cannot hold is refused at open.
    let bad = Config {
        dim: DIM + 1,
        ..cfg(10)
    };
    assert!(LogStore::open_in(Flash::new(6), bad, Big::new()).is_err());
    println!(
        "FixedRam<1000 records, 384-d, 64 segments, 1 KB entries>: {} bytes of RAM",
        std::mem::size_of::<FixedRam<1000, 384, 64, 1024>>()
    );
}

mod mutations {
    use super::*;
    use proptest::prelude::*;

    /// A log written by a seeded workload, and every id it ever acknowledged.
    fn written() -> &'static (Flash, std::collections::BTreeSet<Id>) {
        static LOG: std::sync::OnceLock<(Flash, std::collections::BTreeSet<Id>)> =
            std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let (mut st, _) = Store::open(Flash::new(6), cfg(20)).unwrap();
            let mut model = Model::default();
            let mut ever = std::collections::BTreeSet::new();
            for op in &workload(0xD0C, 200) {
                run_op(&mut st, op, &model).unwrap();
                if let (Some(id), _) = model.apply(op, 20) {
                    ever.insert(id);
                }
            }
            (st.into_flash(), ever)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]
        /// Any set of byte edits, truncation to erased flash, or a copied span: open never
        /// panics, never fabricates a record, and the store keeps working after it.
        #[test]
        fn mutated_logs_recover_what_is_valid(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
            erase_from in proptest::option::of(any::<usize>()),
            copy in proptest::option::of((any::<usize>(), any::<usize>(), 1usize..64)),
        ) {
            let (clean, ever) = written();
            let mut f = clean.clone();
            let n = f.data.len();
            for (at, v) in &edits {
                f.data[at % n] = *v;
            }
            if let Some(at) = erase_from {
                f.data[at % n..].fill(0xFF);
            }
            if let Some((from, to, len)) = copy {
                let (from, to) = (from % (n - len), to % (n - len));
                f.data.copy_within(from..from + len, to);
            }
            if let Ok((mut st, _rec)) = Store::open(f, cfg(20)) {
                prop_assert!(st.metas().iter().all(|m| ever.contains(&m.id)), "fabricated record");
                let emb = [5i8; DIM];
                let r = Record { origin: 1, timestamp_ms: 1, label: 0, importance: 1, meta: [0; 4], scale: 0.5, embedding: &emb, payload: &[] };
                if st.append(&r).is_ok() {
                    prop_assert!(st.contains(&r.id()));
                }
            }
        }
    }
}

/// Near-duplicates found past the first slot are merged too: each record is compared on
/// its own embedding, wherever it sits.
#[test]
fn consolidation_finds_duplicates_after_unique_records() {
    let (mut st, _) = Store::open(Flash::new(16), cfg(100)).unwrap();
    let rec = |ts: u64, e: &'static [i8; DIM]| Record {
        origin: 1,
        timestamp_ms: ts,
        label: 2,
        importance: 0,
        meta: [0; 4],
        scale: 0.1,
        embedding: e,
        payload: &[],
    };
    let unique = [
        st.append(&rec(0, &[90, 0, 0, 0, 0, 0, 0, 0])).unwrap(),
        st.append(&rec(1, &[0, 0, 0, 0, 0, 0, 0, 90])).unwrap(),
    ];
    let dups = [
        st.append(&rec(2, &[10, 20, 30, 40, 50, 60, 70, 80]))
            .unwrap(),
        st.append(&rec(3, &[11, 20, 30, 40, 50, 60, 70, 80]))
            .unwrap(),
        st.append(&rec(4, &[10, 21, 30, 40, 50, 60, 70, 79]))
            .unwrap(),
    ];
    let rep = st.consolidate(0.99).unwrap();
    assert_eq!((rep.prototypes, rep.merged), (1, 3));
    assert!(unique.iter().all(|id| st.contains(id)));
    assert!(dups.iter().all(|id| !st.contains(id)));
    assert_eq!(st.len(), 3);
}

/// A prototype's real-valued embedding is the mean of its members' (not their sum), each
/// member weighted by the observations it stands for; requantized to a peak of ±127.
#[test]
fn a_prototype_is_the_weighted_mean_of_its_members() {
    let (mut st, _) = Store::open(Flash::new(16), cfg(100)).unwrap();
    let rec = |ts: u64, scale: f32, obs: u32, e: &'static [i8; DIM]| Record {
        origin: ts,
        timestamp_ms: ts,
        label: 1,
        importance: ts as u8,
        meta: [0, 0, 0, obs],
        scale,
        embedding: e,
        payload: &[],
    };
    let members = [
        (0.5f32, 1u32, [100i8, 50, 20, 10, 0, -10, -20, -40]),
        (0.25, 0, [102, 51, 20, 10, 0, -10, -20, -41]),
        (1.0, 4, [49, 25, 10, 5, 0, -5, -10, -20]),
    ];
    for (ts, (scale, obs, e)) in members.iter().enumerate() {
        let e: &'static [i8; DIM] = Box::leak(Box::new(*e));
        st.append(&rec(ts as u64, *scale, *obs, e)).unwrap();
    }
    let rep = st.consolidate(0.99).unwrap();
    assert_eq!((rep.prototypes, rep.merged), (1, 3));
    let m = st.metas()[0];
    assert_eq!(m.observations, 1 + 1 + 4);
    assert_eq!((m.importance, m.timestamp_ms, m.origin), (2, 2, 2));
    let weight: f32 = members.iter().map(|(_, o, _)| (*o).max(1) as f32).sum();
    let mean: Vec<f32> = (0..DIM)
        .map(|k| {
            members
                .iter()
                .map(|(s, o, e)| (*o).max(1) as f32 * (e[k] as f32 * s))
                .sum::<f32>()
                / weight
        })
        .collect();
    let peak = mean.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    assert!((m.scale - peak / 127.0).abs() <= 1e-6 * peak);
    let emb = &st.embeddings()[..DIM];
    for k in 0..DIM {
        assert_eq!(emb[k], (mean[k] / m.scale).round() as i8, "value {k}");
        assert!((emb[k] as f32 * m.scale - mean[k]).abs() <= m.scale * 0.5 + 1e-5);
    }
}

/// Members whose mean is all zeros make a prototype of scale 1 (a record's scale must be
/// positive), not a refused append.
#[test]
fn a_zero_mean_prototype_keeps_a_valid_scale() {
    let (mut st, _) = Store::open(Flash::new(16), cfg(100)).unwrap();
    for ts in 0..2 {
        st.append(&Record {
            origin: 1,
            timestamp_ms: ts,
            label: 0,
            importance: 0,
            meta: [0; 4],
            scale: 0.5,
            embedding: &[0; DIM],
            payload: &[],
        })
        .unwrap();
    }
    // Zero vectors have cosine 0 with everything: a threshold of 0 groups them.
    let rep = st.consolidate(0.0).unwrap();
    assert_eq!((rep.prototypes, rep.merged), (1, 2));
    assert_eq!(st.len(), 1);
    assert_eq!(st.metas()[0].scale, 1.0);
    assert!(st.embeddings().iter().all(|&v| v == 0));
}

/// The geometry `open` accepts, and what its `Recovery` counts.
#[test]
fn geometry_and_recovery_counts() {
    use cairn_memory::StoreError::{Geometry, PayloadTooLarge};
    use embedded_storage::nor_flash::NorFlash;
    let seed = seed() ^ 13;
    let mut r = Rng(seed);
    // At least three sectors, each able to hold a header and a 256-byte entry.
    assert_eq!(
        Store::open(RamFlash::<1024>::new(2), cfg(10)).err(),
        Some(Geometry)
    );
    assert!(Store::open(RamFlash::<1024>::new(3), cfg(10)).is_ok());
    assert_eq!(
        Store::open(RamFlash::<256>::new(8), cfg(10)).err(),
        Some(Geometry)
    );
    assert!(Store::open(RamFlash::<512>::new(8), cfg(10)).is_ok());

    // A fresh store replays nothing; then fill a few segments and reopen.
    let (mut st, rec) = Store::open(Flash::new(6), cfg(100)).unwrap();
    assert_eq!(rec, cairn_memory::Recovery::default());
    let recs: Vec<Owned> = (0..30).map(|i| Owned::random(&mut r, i)).collect();
    for o in &recs {
        st.append(&o.rec()).unwrap();
    }
    let in_use = st.segments().iter().filter(|s| s.in_use()).count();
    assert!(
        in_use >= 2,
        "CAIRN_SEED={seed}: 30 records in {in_use} segments"
    );
    // Fresh flash: segments opened without an erase, so no wear yet.
    assert!(
        st.erase_counts().iter().all(|&e| e == 0),
        "CAIRN_SEED={seed}"
    );
    let mut flash = st.into_flash();
    let (st, rec) = Store::open(flash.clone(), cfg(100)).unwrap();
    assert_eq!(rec.segments_in_use, in_use, "CAIRN_SEED={seed}");
    assert_eq!(
        (rec.records, rec.dirty_segments),
        (30, 0),
        "CAIRN_SEED={seed}"
    );
    // Bytes in a sector without a header: an interrupted erase, counted and erased
    // before reuse.
    let free = st.segments().iter().position(|s| !s.in_use()).unwrap();
    // One programmed byte, the sector's first: the least a torn erase can leave.
    let at = (free * 1024) as u32;
    flash.write(at, &[0, 0xFF, 0xFF, 0xFF]).unwrap();
    let (mut st, rec) = Store::open(flash, cfg(100)).unwrap();
    assert_eq!(
        (rec.records, rec.dirty_segments),
        (30, 1),
        "CAIRN_SEED={seed}"
    );
    assert!(!st.segments()[free].in_use());
    // The store goes on taking records, and erases the torn sector (one erase of wear)
    // before it writes there.
    // (Each new record replaces one, so the log never fills.)
    let mut last: Vec<(cairn_memory::Id, Owned)> = Vec::new();
    for i in 0..400 {
        let gone = match i {
            0..30 => recs[i as usize].rec().id(),
            _ => last[i as usize - 30].0,
        };
        assert!(st.delete(&gone).unwrap(), "CAIRN_SEED={seed}");
        let o = Owned::random(&mut r, 100 + i);
        last.push((st.append(&o.rec()).unwrap(), o));
        if st.segments()[free].in_use() {
            break;
        }
    }
    assert!(
        st.segments()[free].in_use(),
        "CAIRN_SEED={seed}: never reused"
    );
    assert_eq!(st.segments()[free].erases(), 1, "CAIRN_SEED={seed}");
    let (id, o) = last.last().unwrap();
    let got = st.get(id).unwrap().expect("the newest record");
    assert!(got.ends_with(&o.payload), "CAIRN_SEED={seed}");

    // A fixed RAM's entry buffer bounds the payload: 12 + 60 + DIM + payload, rounded up
    // to 4, within 128 bytes.
    let fixed_cfg = Config {
        max_payload: 1000,
        ..cfg(10)
    };
    let (mut fx, _) =
        LogStore::open_in(Flash::new(6), fixed_cfg, FixedRam::<10, DIM, 6, 128>::new()).unwrap();
    assert_eq!(fx.config().max_payload, 128 - 72 - DIM);
    let mut o = Owned::random(&mut r, 1);
    o.payload = vec![7; 128 - 72 - DIM];
    let id = fx.append(&o.rec()).unwrap();
    let mut out = [0u8; 256];
    assert!(fx.read_record(&id, &mut out).unwrap().is_some());
    o.payload.push(7);
    assert_eq!(fx.append(&o.rec()).err(), Some(PayloadTooLarge));
}

/// Search filters: by origin, and by a time window whose bounds are inclusive.
#[test]
fn origin_and_time_filters() {
    let (mut st, _) = Store::open(Flash::new(6), cfg(100)).unwrap();
    let emb = [10i8; DIM];
    for ts in 0..20u64 {
        st.append(&Record {
            origin: 1 + ts % 2,
            timestamp_ms: ts,
            label: 0,
            importance: 0,
            meta: [0; 4],
            scale: 1.0,
            embedding: &emb,
            payload: &[],
        })
        .unwrap();
    }
    let find = |f: Filter| -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = st
            .search(&emb, 20, &f, &Scoring::default())
            .iter()
            .map(|h| {
                let m = st.metas().iter().find(|m| m.id == h.id).unwrap();
                (m.origin, m.timestamp_ms)
            })
            .collect();
        v.sort();
        v
    };
    let odd: Vec<(u64, u64)> = (0..20).filter(|t| t % 2 == 1).map(|t| (2, t)).collect();
    assert_eq!(
        find(Filter {
            origin: Some(2),
            ..Filter::default()
        }),
        odd
    );
    let mut window: Vec<(u64, u64)> = (5..=9).map(|t| (1 + t % 2, t)).collect();
    window.sort();
    assert_eq!(
        find(Filter {
            time_ms: Some((5, 9)),
            ..Filter::default()
        }),
        window
    );
    assert_eq!(
        find(Filter {
            origin: Some(1),
            time_ms: Some((5, 9)),
            ..Filter::default()
        }),
        [(1, 6), (1, 8)]
    );
    assert_eq!(find(Filter::default()).len(), 20);
    // A query of another width, or k = 0: nothing.
    let (f, sc) = (Filter::default(), Scoring::default());
    assert!(st.search(&emb[..DIM - 1], 5, &f, &sc).is_empty());
    assert!(st.search(&emb, 0, &f, &sc).is_empty());
    assert_eq!(st.search(&emb, 3, &f, &sc).len(), 3);
}

/// The id covers everything but the importance: appending a record again with another
/// importance updates it in place (in RAM and, replayed, after a reopen), on both RAM
/// sides.
#[test]
fn appending_again_updates_the_importance() {
    fn check<R: Ram>(ram: impl Fn() -> R) {
        let seed = seed() ^ 17;
        let mut r = Rng(seed);
        let cfg = cfg(10);
        let (mut st, _) = LogStore::open_in(Flash::new(6), cfg, ram()).unwrap();
        let mut a = Owned::random(&mut r, 1);
        let b = Owned::random(&mut r, 2);
        a.importance = 10;
        let id = st.append(&a.rec()).unwrap();
        st.append(&b.rec()).unwrap();
        a.importance = 200;
        assert_eq!(st.append(&a.rec()).unwrap(), id);
        let imp =
            |st: &LogStore<Flash, R>| st.metas().iter().find(|m| m.id == id).unwrap().importance;
        assert_eq!((st.len(), imp(&st)), (2, 200), "CAIRN_SEED={seed}");
        let slot = st.metas().iter().position(|m| m.id == id).unwrap();
        assert_eq!(&st.embeddings()[slot * DIM..(slot + 1) * DIM], &a.emb[..]);
        let (st, _) = LogStore::open_in(st.into_flash(), cfg, ram()).unwrap();
        assert_eq!(
            (st.len(), imp(&st)),
            (2, 200),
            "CAIRN_SEED={seed}: reopened"
        );
    }
    check(HeapRam::default);
    check(FixedRam::<10, DIM, 6, 256>::new);
}

/// score = cosine · (1 + w · importance/255) · 0.5^(age / half-life), as documented.
#[test]
fn scores_weigh_importance_and_age() {
    let (mut st, _) = Store::open(Flash::new(6), cfg(10)).unwrap();
    let emb = [10i8; DIM];
    let put = |st: &mut Store<Flash>, ts: u64, importance: u8| {
        st.append(&Record {
            origin: 1,
            timestamp_ms: ts,
            label: 0,
            importance,
            meta: [0; 4],
            scale: 1.0,
            embedding: &emb,
            payload: &[],
        })
        .unwrap()
    };
    let fresh = put(&mut st, 1000, 255);
    let old = put(&mut st, 800, 0);
    let half = put(&mut st, 900, 51);
    let scoring = Scoring {
        now_ms: 1000,
        half_life_ms: Some(100),
        importance_weight: 2.0,
    };
    let hits = st.search(&emb, 3, &Filter::default(), &scoring);
    let score = |id| hits.iter().find(|h| h.id == id).unwrap().score;
    let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
    assert!(hits.iter().all(|h| close(h.cosine, 1.0)));
    // 1 · (1 + 2) · 1; 1 · 1 · 0.25; 1 · (1 + 2 · 0.2) · 0.5.
    assert!(close(score(fresh), 3.0), "{}", score(fresh));
    assert!(close(score(old), 0.25), "{}", score(old));
    assert!(close(score(half), 0.7), "{}", score(half));
    assert_eq!(
        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        [fresh, half, old]
    );
    // A record from the future is not boosted: its age counts as 0.
    let future = put(&mut st, 1200, 0);
    let hits = st.search(&emb, 4, &Filter::default(), &scoring);
    let s = hits.iter().find(|h| h.id == future).unwrap().score;
    assert!(close(s, 1.0), "{s}");
}

/// append_batch: the ids in order, every record durable across a reopen, segments filled
/// one write at a time; usage() and is_empty() report the log; compact() keeps every
/// live record; a delete makes an index built before it stale.
#[test]
fn batches_usage_compaction_and_staleness() {
    use cairn_memory::format::{align_up, ENTRY_HEADER, SEG_HEADER};
    let seed = seed() ^ 19;
    let mut r = Rng(seed);
    let (mut st, _) = Store::open(Flash::new(8), cfg(100)).unwrap();
    assert!(st.is_empty());
    assert_eq!(st.usage(), (SEG_HEADER, 0));
    let recs: Vec<Owned> = (0..24).map(|i| Owned::random(&mut r, i)).collect();
    let batch: Vec<Record<'_>> = recs.iter().map(|o| o.rec()).collect();
    let ids = st.append_batch(&batch).unwrap();
    assert_eq!(ids, batch.iter().map(|b| b.id()).collect::<Vec<_>>());
    assert!(!st.is_empty() && st.len() == 24);
    let live: usize = batch
        .iter()
        .map(|b| align_up(ENTRY_HEADER + b.encoded_len()))
        .sum();
    let in_use = st.segments().iter().filter(|s| s.in_use()).count();
    let (used, l) = st.usage();
    assert_eq!(l, live, "CAIRN_SEED={seed}");
    assert!(in_use >= 3, "CAIRN_SEED={seed}: the batch spans segments");
    assert!(
        used >= live + SEG_HEADER * in_use && used <= in_use * 1024,
        "{used}"
    );
    // Every record reads back, also after a reopen.
    let (mut st, rec) = Store::open(st.into_flash(), cfg(100)).unwrap();
    assert_eq!(
        (rec.records, rec.dropped_entries),
        (24, 0),
        "CAIRN_SEED={seed}"
    );
    for (id, o) in ids.iter().zip(&recs) {
        let got = st.get(id).unwrap().expect("durable");
        assert!(got.ends_with(&o.payload), "CAIRN_SEED={seed}");
    }
    // Delete half, build an index, compact: the rest stay; the index goes stale at the
    // first delete after it was built.
    for id in ids.iter().step_by(2) {
        assert!(st.delete(id).unwrap());
    }
    let ivf = cairn_memory::ivf::Ivf::build(&st, 2, 2, 100, 1);
    assert!(!ivf.is_stale(&st));
    st.compact().unwrap();
    assert_eq!(st.len(), 12);
    assert!(st.delete(&ids[1]).unwrap());
    assert!(ivf.is_stale(&st), "a delete changes the generation");
    let (_, l) = st.usage();
    let want: usize = batch
        .iter()
        .skip(3)
        .step_by(2)
        .map(|b| align_up(ENTRY_HEADER + b.encoded_len()))
        .sum();
    assert_eq!(l, want, "CAIRN_SEED={seed}");
    for id in ids.iter().skip(3).step_by(2) {
        assert!(st.get(id).unwrap().is_some(), "CAIRN_SEED={seed}");
    }
}

/// What `append` admits: payloads up to the bound, finite positive scales.
#[test]
fn append_admits_bounded_payloads_and_positive_scales() {
    use cairn_memory::record::RecordError::BadScale;
    use cairn_memory::StoreError::{PayloadTooLarge, Record as Rec};
    let seed = seed() ^ 23;
    let mut r = Rng(seed);
    let (mut st, _) = Store::open(Flash::new(6), cfg(10)).unwrap();
    let mut o = Owned::random(&mut r, 1);
    o.payload = vec![1; 64];
    st.append(&o.rec()).unwrap();
    o.payload.push(1);
    assert_eq!(st.append(&o.rec()).err(), Some(PayloadTooLarge));
    o.payload.pop();
    for scale in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let mut rec = o.rec();
        rec.scale = scale;
        assert_eq!(st.append(&rec).err(), Some(Rec(BadScale)), "scale {scale}");
    }
    // An entry larger than a segment's room is refused before any compaction.
    let big = Config {
        max_payload: 2000,
        ..cfg(10)
    };
    let (mut st, _) = Store::open(Flash::new(6), big).unwrap();
    o.payload = vec![1; 1000];
    assert_eq!(st.append(&o.rec()).err(), Some(PayloadTooLarge));
    // Exactly a segment less its header: 1024 − 24 = 12 + the record's fixed part + payload.
    let fixed = o.rec().encoded_len() - 1000;
    o.payload = vec![1; 1024 - 24 - 12 - fixed];
    st.append(&o.rec()).unwrap();
    o.payload.extend([1; 4]);
    assert_eq!(st.append(&o.rec()).err(), Some(PayloadTooLarge));
}

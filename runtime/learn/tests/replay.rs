//! Replay from episodic memory: which records are held out (a fifth, by id), samples that
//! are the stored records, and batches of the asked mix of old and new classes that never
//! contain a held-out record (seeded: `CAIRN_SEED`, printed on failure).

use cairn_learn::replay::{fill_batch, held_out, is_held_out, sample_of};
use cairn_learn::Sample;
use cairn_memory::flash::RamFlash;
use cairn_memory::record::Record;
use cairn_memory::store::{Config, Store};

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x002e_91a7)
}

const DIM: usize = 6;

/// A store of `n` records: record i has label i % 4, embedding (i, −i, …), scale (i+1)/64.
fn store(n: usize) -> Store<RamFlash<4096>> {
    let cfg = Config {
        dim: DIM,
        max_records: 1000,
        max_payload: 16,
    };
    let (mut st, _) = Store::open(RamFlash::<4096>::new(16), cfg).unwrap();
    for i in 0..n {
        let emb: Vec<i8> = (0..DIM)
            .map(|k| if k % 2 == 0 { i as i8 } else { -(i as i8) })
            .collect();
        st.append(&Record {
            origin: 1,
            timestamp_ms: i as u64,
            label: (i % 4) as u16,
            importance: 1,
            meta: [0; 4],
            scale: (i + 1) as f32 / 64.0,
            embedding: &emb,
            payload: &[],
        })
        .unwrap();
    }
    st
}

fn same(a: &Sample<'_>, b: &Sample<'_>) -> bool {
    a.emb == b.emb && a.scale == b.scale && a.label == b.label
}

#[test]
fn samples_are_the_stored_records_and_a_fifth_is_held_out() {
    let st = store(60);
    for i in 0..st.len() {
        let s = sample_of(&st, i);
        let m = &st.metas()[i];
        assert_eq!(s.label, m.label);
        assert_eq!(s.scale, m.scale);
        assert_eq!(s.emb, &st.embeddings()[i * DIM..(i + 1) * DIM]);
        // The embedding of record i is (t, −t, …) for its own t = scale·64 − 1.
        let t = (m.scale * 64.0) as i32 - 1;
        assert_eq!(s.emb[0] as i32, t as i8 as i32);
        assert_eq!(is_held_out(m), m.id[15].is_multiple_of(5));
    }
    let held: Vec<usize> = (0..st.len())
        .filter(|&i| is_held_out(&st.metas()[i]))
        .collect();
    // About a fifth of random ids (12 expected of 60).
    assert!((4..=24).contains(&held.len()), "{} held out", held.len());
    let listed: Vec<Sample<'_>> = held_out(&st).collect();
    assert_eq!(listed.len(), held.len());
    for (s, &i) in listed.iter().zip(&held) {
        assert!(same(s, &sample_of(&st, i)));
    }
}

#[test]
fn batches_mix_old_and_new_and_never_hold_a_held_out_record() {
    let seed = seed();
    let st = store(80);
    let is_new = |m: &cairn_memory::ram::Meta| m.label >= 2;
    let held: Vec<Sample<'_>> = held_out(&st).collect();
    let mut rng = seed;
    let mut seen = std::collections::HashSet::new();
    for round in 0..50 {
        let blank = Sample {
            emb: &[],
            scale: 0.0,
            label: 0,
        };
        let mut out = [blank; 8];
        let n = fill_batch(&st, &mut rng, is_new, 3, &mut out);
        assert_eq!(n, 8, "CAIRN_SEED={seed} round {round}");
        for (k, s) in out.iter().enumerate() {
            assert_eq!(
                s.label >= 2,
                k >= 3,
                "CAIRN_SEED={seed} round {round}: slot {k} label {}",
                s.label
            );
            assert!(
                !held.iter().any(|h| same(h, s)),
                "a held-out record replayed"
            );
            seen.insert((s.emb.to_vec(), s.label));
        }
    }
    // Random picks reach most of the trainable records.
    let trainable = st.len() - held.len();
    assert!(
        seen.len() * 10 >= trainable * 8,
        "{} of {trainable}",
        seen.len()
    );
    // With only old classes stored, new slots take old records rather than stay empty.
    let only_old = |_: &cairn_memory::ram::Meta| false;
    let blank = Sample {
        emb: &[],
        scale: 0.0,
        label: 0,
    };
    let mut out = [blank; 5];
    assert_eq!(fill_batch(&st, &mut rng, only_old, 2, &mut out), 5);
    // One trainable record of a new class among 80: random picks often miss it and the
    // scan that follows must find it.
    let one = (0..st.len())
        .find(|&i| !is_held_out(&st.metas()[i]))
        .unwrap();
    let t = st.metas()[one].timestamp_ms;
    let just_one = |m: &cairn_memory::ram::Meta| m.timestamp_ms == t;
    for round in 0..20 {
        let mut out = [blank; 4];
        assert_eq!(fill_batch(&st, &mut rng, just_one, 1, &mut out), 4);
        assert!(
            out[1..].iter().all(|s| same(s, &sample_of(&st, one))),
            "CAIRN_SEED={seed} round {round}"
        );
        assert!(!same(&out[0], &sample_of(&st, one)));
    }
    // An empty store fills nothing.
    let empty = store(0);
    assert_eq!(fill_batch(&empty, &mut rng, is_new, 2, &mut out), 0);
}

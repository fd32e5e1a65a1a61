//! Batches from episodic memory: new records mixed with replayed old ones, and a fixed
//! held-out split for the gate. No allocation: samples borrow the store's RAM copy of the
//! embeddings.

use cairn_memory::ram::Ram;
use cairn_memory::store::{LogStore, Meta};
use embedded_storage::nor_flash::NorFlash;

use crate::learner::{splitmix, Sample};

/// One record in five (by content id) is held out for the gate and never trained on.
pub fn is_held_out(m: &Meta) -> bool {
    m.id[15].is_multiple_of(5)
}

/// The sample of slot `i` of a store.
pub fn sample_of<F: NorFlash, R: Ram>(st: &LogStore<F, R>, i: usize) -> Sample<'_> {
    let d = st.config().dim;
    let m = &st.metas()[i];
    Sample {
        emb: &st.embeddings()[i * d..(i + 1) * d],
        scale: m.scale,
        label: m.label,
    }
}

/// Held-out samples of a store.
pub fn held_out<F: NorFlash, R: Ram>(st: &LogStore<F, R>) -> impl Iterator<Item = Sample<'_>> + '_ {
    (0..st.len())
        .filter(move |&i| is_held_out(&st.metas()[i]))
        .map(move |i| sample_of(st, i))
}

/// Fill `out` with training samples (never held-out ones): `n_old` drawn at random from
/// records that are not `is_new`, the rest from records that are; when one side is empty
/// the other fills its places. Returns how many were written (0 if nothing to train on).
pub fn fill_batch<'s, F: NorFlash, R: Ram>(
    st: &'s LogStore<F, R>,
    rng: &mut u64,
    is_new: impl Fn(&Meta) -> bool,
    n_old: usize,
    out: &mut [Sample<'s>],
) -> usize {
    let n = st.len();
    if n == 0 {
        return 0;
    }
    let mut pick = |want_new: bool| -> Option<usize> {
        for _ in 0..64 {
            *rng = splitmix(*rng);
            let i = (*rng % n as u64) as usize;
            let m = &st.metas()[i];
            if !is_held_out(m) && is_new(m) == want_new {
                return Some(i);
            }
        }
        // Rare side: a scan from a random start.
        *rng = splitmix(*rng);
        let start = (*rng % n as u64) as usize;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| !is_held_out(&st.metas()[i]) && is_new(&st.metas()[i]) == want_new)
    };
    let mut w = 0;
    for k in 0..out.len() {
        let want_new = k >= n_old;
        let i = match pick(want_new).or_else(|| pick(!want_new)) {
            Some(i) => i,
            None => break,
        };
        out[w] = sample_of(st, i);
        w += 1;
    }
    w
}

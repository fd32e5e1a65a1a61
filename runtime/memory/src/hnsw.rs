//! Approximate search for large stores, second kind: an HNSW graph (hierarchical navigable
//! small world) over the store's int8 vectors. Similarity is cosine, computed as the int8
//! dot product times the stored records' inverse norms (the query's norm is the same for all
//! candidates). Neighbours are chosen with HNSW's diversity heuristic (as hnswlib does, so recall at a given `ef` matches it). Like the IVF index it
//! lives in RAM, is built from the store's RAM copy (so it is rebuilt after a restart) and
//! refuses to answer when the store changed since it was built.
//!
//! When to pick which (measured by `examples/bench.rs`): IVF builds in about a second and is
//! tiny (centroids + one u32 per record); HNSW costs `M0` u32 per record and a longer build
//! but answers in far fewer distance computations when the data has no clean cluster
//! structure (real embeddings).

use alloc::collections::BinaryHeap;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;

use embedded_storage::nor_flash::NorFlash;

use crate::ram::Ram;
use crate::search::{Filter, Hit, Scoring};
use crate::simd::{with_kernel, Kernel, KernelFn};
use crate::store::LogStore;

/// Build parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    /// Neighbours per node on upper layers (layer 0 keeps 2·M).
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 100,
            seed: 7,
        }
    }
}

/// (similarity, slot), ordered by similarity.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sim(f32, u32);
impl Eq for Sim {}
impl PartialOrd for Sim {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sim {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

pub struct Hnsw {
    dim: usize,
    m: usize,
    m0: usize,
    /// Layer 0: `m0` slots per node (`u32::MAX` = empty).
    base: Vec<u32>,
    /// Layers above 0: for each node with level ≥ 1, its lists (`m` each) per level.
    upper: Vec<Vec<u32>>,
    /// Index into `upper` for nodes with level ≥ 1 (`u32::MAX` otherwise), and levels.
    upper_of: Vec<u32>,
    level: Vec<u8>,
    entry: u32,
    top: u8,
    inv: Vec<f32>,
    generation: u64,
}

const NONE: u32 = u32::MAX;

/// Visited marks reused across searches (epoch-tagged, no clearing): one per searching
/// thread, from [`Hnsw::scratch`].
pub struct Visited {
    mark: Vec<u32>,
    epoch: u32,
    cand: BinaryHeap<Sim>,
    found: BinaryHeap<core::cmp::Reverse<Sim>>,
}

impl Visited {
    fn new(n: usize) -> Self {
        Visited {
            mark: vec![0; n],
            epoch: 0,
            cand: BinaryHeap::new(),
            found: BinaryHeap::new(),
        }
    }
    fn next(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.mark.fill(0);
            self.epoch = 1;
        }
    }
    fn insert(&mut self, i: u32) -> bool {
        let m = &mut self.mark[i as usize];
        let new = *m != self.epoch;
        *m = self.epoch;
        new
    }
}

impl Hnsw {
    /// Build over every record of the store, in slot order.
    pub fn build<F: NorFlash, R: Ram>(st: &LogStore<F, R>, p: HnswParams) -> Hnsw {
        let dim = st.config().dim;
        let n = st.len();
        let m = p.m.clamp(2, 64);
        let inv: Vec<f32> = st.ram.norms().iter().map(|&v| 1.0 / v.max(1e-6)).collect();
        let mut h = Hnsw {
            dim,
            m,
            m0: 2 * m,
            base: vec![NONE; n * 2 * m],
            upper: Vec::new(),
            upper_of: vec![NONE; n],
            level: vec![0; n],
            entry: NONE,
            top: 0,
            inv,
            generation: st.generation,
        };
        struct Build<'a> {
            h: &'a mut Hnsw,
            emb: &'a [i8],
            ef: usize,
            seed: u64,
        }
        impl KernelFn<()> for Build<'_> {
            #[inline(always)]
            fn call<K: Kernel>(self, k: K) {
                let n = self.h.level.len();
                let ml = 1.0 / libm::logf(self.h.m as f32);
                // Mixed first: a small seed fed straight to xorshift gives a first node
                // of level 16 and seeds 2k and 2k+1 the same levels.
                let mut rng = crate::splitmix64(self.seed) | 1;
                let mut vis = Visited::new(n);
                for i in 0..n {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let u = ((rng >> 11) as f64 / (1u64 << 53) as f64).max(1e-12) as f32;
                    let lvl = ((-libm::logf(u) * ml) as usize).min(16) as u8;
                    self.h.insert(k, self.emb, i as u32, lvl, self.ef, &mut vis);
                }
            }
        }
        with_kernel(Build {
            h: &mut h,
            emb: st.ram.emb(),
            ef: p.ef_construction.max(m),
            seed: p.seed,
        });
        h
    }

    fn vec<'e>(&self, emb: &'e [i8], i: u32) -> &'e [i8] {
        &emb[i as usize * self.dim..(i as usize + 1) * self.dim]
    }

    #[inline(always)]
    fn sim<K: Kernel>(&self, k: K, emb: &[i8], q: &[i8], i: u32) -> f32 {
        k.dot(q, self.vec(emb, i)) as f32 * self.inv[i as usize]
    }

    fn links(&self, i: u32, l: u8) -> &[u32] {
        if l == 0 {
            &self.base[i as usize * self.m0..(i as usize + 1) * self.m0]
        } else {
            let u = &self.upper[self.upper_of[i as usize] as usize];
            &u[(l as usize - 1) * self.m..l as usize * self.m]
        }
    }

    fn links_mut(&mut self, i: u32, l: u8) -> &mut [u32] {
        if l == 0 {
            &mut self.base[i as usize * self.m0..(i as usize + 1) * self.m0]
        } else {
            let m = self.m;
            let u = &mut self.upper[self.upper_of[i as usize] as usize];
            &mut u[(l as usize - 1) * m..l as usize * m]
        }
    }

    /// Greedy search on one layer from `eps`; the best `ef` found, best first.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn search_layer<K: Kernel>(
        &self,
        k: K,
        emb: &[i8],
        q: &[i8],
        eps: &[Sim],
        ef: usize,
        l: u8,
        vis: &mut Visited,
    ) -> Vec<Sim> {
        vis.next();
        // Best first, and worst first; reused across calls.
        let mut cand = core::mem::take(&mut vis.cand);
        let mut found = core::mem::take(&mut vis.found);
        cand.clear();
        found.clear();
        for &e in eps {
            vis.insert(e.1);
            cand.push(e);
            found.push(core::cmp::Reverse(e));
        }
        while let Some(c) = cand.pop() {
            let worst = found.peek().map_or(f32::NEG_INFINITY, |w| w.0 .0);
            if c.0 < worst && found.len() >= ef {
                break;
            }
            for &nb in self.links(c.1, l) {
                if nb == NONE {
                    break;
                }
                if !vis.insert(nb) {
                    continue;
                }
                let s = Sim(self.sim(k, emb, q, nb), nb);
                let worst = found.peek().map_or(f32::NEG_INFINITY, |w| w.0 .0);
                if found.len() < ef || s.0 > worst {
                    cand.push(s);
                    found.push(core::cmp::Reverse(s));
                    if found.len() > ef {
                        found.pop();
                    }
                }
            }
        }
        let mut out: Vec<Sim> = found.drain().map(|r| r.0).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        vis.cand = cand;
        vis.found = found;
        out
    }

    /// Upper layers: walk to the most similar neighbour until none is better.
    #[inline(always)]
    fn greedy<K: Kernel>(&self, k: K, emb: &[i8], q: &[i8], mut best: Sim, l: u8) -> Sim {
        loop {
            let mut moved = false;
            for &nb in self.links(best.1, l) {
                if nb == NONE {
                    break;
                }
                let s = self.sim(k, emb, q, nb);
                if s > best.0 {
                    best = Sim(s, nb);
                    moved = true;
                }
            }
            if !moved {
                return best;
            }
        }
    }

    /// HNSW's heuristic: keep a candidate only if it is closer to the base than to every
    /// neighbour kept so far (spreads links across directions). `cands` best first.
    #[inline(always)]
    /// `cands` carry dot(base, c)·inv(c); `base_inv` is 1/|base|, so cosines compare.
    fn select<K: Kernel>(
        &self,
        k: K,
        emb: &[i8],
        cands: &[Sim],
        max: usize,
        base_inv: f32,
    ) -> Vec<u32> {
        let mut keep: Vec<u32> = Vec::with_capacity(max);
        for c in cands {
            if keep.len() == max {
                break;
            }
            let cv = self.vec(emb, c.1);
            let to_base = c.0 * base_inv;
            let ci = self.inv[c.1 as usize];
            let diverse = keep.iter().all(|&j| {
                (k.dot(cv, self.vec(emb, j)) as f32) * ci * self.inv[j as usize] < to_base
            });
            if diverse {
                keep.push(c.1);
            }
        }
        keep
    }

    #[inline(always)]
    fn insert<K: Kernel>(
        &mut self,
        k: K,
        emb: &[i8],
        i: u32,
        lvl: u8,
        ef: usize,
        vis: &mut Visited,
    ) {
        self.level[i as usize] = lvl;
        if lvl > 0 {
            self.upper_of[i as usize] = self.upper.len() as u32;
            self.upper.push(vec![NONE; lvl as usize * self.m]);
        }
        if self.entry == NONE {
            self.entry = i;
            self.top = lvl;
            return;
        }
        let q = self.vec(emb, i);
        let mut best = Sim(self.sim(k, emb, q, self.entry), self.entry);
        let mut l = self.top;
        while l > lvl {
            best = self.greedy(k, emb, q, best, l);
            l -= 1;
        }
        let mut ep = vec![best];
        let mut l = lvl.min(self.top) as i32;
        while l >= 0 {
            let lu = l as u8;
            let found = self.search_layer(k, emb, q, &ep, ef, lu, vis);
            let max = if lu == 0 { self.m0 } else { self.m };
            let nbrs = self.select(k, emb, &found, self.m, self.inv[i as usize]);
            let mine = self.links_mut(i, lu);
            mine.fill(NONE);
            mine[..nbrs.len()].copy_from_slice(&nbrs);
            for &nb in &nbrs {
                self.link_back(k, emb, nb, i, lu, max);
            }
            ep = found;
            l -= 1;
        }
        if lvl > self.top {
            self.top = lvl;
            self.entry = i;
        }
    }

    /// Add `i` to `nb`'s list on layer `l`, shrinking it with the heuristic when full.
    #[inline(always)]
    fn link_back<K: Kernel>(&mut self, k: K, emb: &[i8], nb: u32, i: u32, l: u8, max: usize) {
        let list = self.links_mut(nb, l);
        if let Some(free) = list.iter().position(|&x| x == NONE) {
            list[free] = i;
            return;
        }
        let base = self.vec(emb, nb);
        let mut cands: Vec<Sim> = self
            .links(nb, l)
            .iter()
            .chain(core::iter::once(&i))
            .map(|&x| {
                Sim(
                    k.dot(base, self.vec(emb, x)) as f32 * self.inv[x as usize],
                    x,
                )
            })
            .collect();
        cands.sort_unstable_by(|a, b| b.cmp(a));
        let keep = self.select(k, emb, &cands, max, self.inv[nb as usize]);
        let list = self.links_mut(nb, l);
        list.fill(NONE);
        list[..keep.len()].copy_from_slice(&keep);
    }

    /// True when the store changed since the index was built (rebuild it).
    pub fn is_stale<F: NorFlash, R: Ram>(&self, st: &LogStore<F, R>) -> bool {
        self.generation != st.generation || self.dim != st.config().dim
    }

    /// Bytes of RAM the graph holds.
    pub fn bytes(&self) -> usize {
        self.base.len() * 4
            + self.upper.iter().map(|u| u.len() * 4).sum::<usize>()
            + self.upper_of.len() * 4
            + self.level.len()
            + self.inv.len() * 4
    }

    /// Scratch for [`Hnsw::search`] (one per searching thread; reuse it across queries).
    pub fn scratch(&self) -> Visited {
        Visited::new(self.level.len())
    }

    /// Approximate top-k: the `ef` (≥ k) best candidates of a graph search, scored exactly
    /// with filters and scoring. `None` when the index is stale.
    #[allow(clippy::too_many_arguments)]
    pub fn search<F: NorFlash, R: Ram>(
        &self,
        st: &LogStore<F, R>,
        query: &[i8],
        k: usize,
        ef: usize,
        filter: &Filter,
        scoring: &Scoring,
        vis: &mut Visited,
    ) -> Option<Vec<Hit>> {
        if vis.mark.len() != self.level.len() {
            *vis = self.scratch();
        }
        if self.is_stale(st) || query.len() != self.dim {
            return None;
        }
        if self.entry == NONE {
            return Some(Vec::new());
        }
        struct Search<'a> {
            h: &'a Hnsw,
            emb: &'a [i8],
            q: &'a [i8],
            ef: usize,
            vis: &'a mut Visited,
        }
        impl KernelFn<Vec<Sim>> for Search<'_> {
            #[inline(always)]
            fn call<K: Kernel>(self, k: K) -> Vec<Sim> {
                let h = self.h;
                let mut best = Sim(h.sim(k, self.emb, self.q, h.entry), h.entry);
                let mut l = h.top;
                while l > 0 {
                    best = h.greedy(k, self.emb, self.q, best, l);
                    l -= 1;
                }
                h.search_layer(k, self.emb, self.q, &[best], self.ef, 0, self.vis)
            }
        }
        let found = with_kernel(Search {
            h: self,
            emb: st.ram.emb(),
            q: query,
            ef: ef.max(k),
            vis,
        });
        let slots = found.iter().map(|s| s.1 as usize);
        Some(st.score_slots(slots, query, k, filter, scoring))
    }
}

/// The graph's own invariants, which recall tests cannot see: a sparser or mislinked graph
/// can still find the neighbours of clustered data.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::RamFlash;
    use crate::Store;

    const N: usize = 2000;

    fn store(seed: u64) -> Store<RamFlash<4096>> {
        store_n(seed, N)
    }

    fn store_n(seed: u64, n: usize) -> Store<RamFlash<4096>> {
        crate::testutil::store_of(16, crate::testutil::random_rows(seed, n, 16))
    }

    fn build(st: &Store<RamFlash<4096>>, m: usize, seed: u64) -> Hnsw {
        Hnsw::build(
            st,
            HnswParams {
                m,
                ef_construction: 32,
                seed,
            },
        )
    }

    /// Levels follow the geometric law of the HNSW paper: P(level ≥ l) = m^-l.
    #[test]
    fn levels_are_geometric_in_m_and_vary_with_the_seed() {
        let st = store(7);
        let mut seen = Vec::new();
        for seed in [0, 1, 2, 3, HnswParams::default().seed] {
            let h = build(&st, 4, seed);
            let at_least = |l: u8| h.level.iter().filter(|&&v| v >= l).count() as f64 / N as f64;
            // Expected 1/4 and 1/16; the bands are more than 4 standard deviations wide.
            let (p1, p2) = (at_least(1), at_least(2));
            assert!(
                (0.20..0.30).contains(&p1),
                "seed {seed}: P(level ≥ 1) = {p1}"
            );
            assert!(
                (0.040..0.085).contains(&p2),
                "seed {seed}: P(level ≥ 2) = {p2}"
            );
            assert_eq!(h.top, *h.level.iter().max().unwrap(), "seed {seed}");
            assert_eq!(h.level[h.entry as usize], h.top, "seed {seed}");
            assert_eq!(
                h.level,
                build(&st, 4, seed).level,
                "seed {seed}: deterministic"
            );
            // No tower from a badly mixed start.
            assert!(h.top <= 8, "seed {seed}: top level {}", h.top);
            seen.push(h.level);
        }
        for i in 0..seen.len() {
            for j in i + 1..seen.len() {
                assert_ne!(seen[i], seen[j], "seeds {i} and {j} draw the same levels");
            }
        }
    }

    /// Every link on layer l names another node present on layer l, once; every node
    /// links to someone on each of its layers that another node shares.
    #[test]
    fn links_stay_on_their_layer() {
        let st = store(11);
        for m in [4, 8] {
            let h = build(&st, m, 5);
            assert_eq!((h.m, h.m0), (m, 2 * m));
            let on = |l: u8| h.level.iter().filter(|&&v| v >= l).count();
            for i in 0..N as u32 {
                for l in 0..=h.level[i as usize] {
                    let links = h.links(i, l);
                    assert_eq!(links.len(), if l == 0 { 2 * m } else { m });
                    let real: Vec<u32> = links.iter().copied().filter(|&j| j != NONE).collect();
                    for (k, &j) in real.iter().enumerate() {
                        assert!(j != i, "m {m}: node {i} links to itself on layer {l}");
                        assert!(h.level[j as usize] >= l, "m {m}: {i}→{j} on layer {l}");
                        assert!(!real[..k].contains(&j), "m {m}: {i}→{j} twice on layer {l}");
                    }
                    // Filled slots come first.
                    assert!(links[real.len()..].iter().all(|&j| j == NONE));
                    if on(l) > 1 {
                        assert!(!real.is_empty(), "m {m}: node {i} alone on layer {l}");
                    }
                }
            }
        }
    }

    /// With ef at least the store's size, the search walks the whole (connected) graph:
    /// its answer is the exact one, for every query.
    #[test]
    fn a_search_as_wide_as_the_store_is_exact() {
        use crate::search::{Filter, Scoring};
        let small = store_n(3, 300);
        let h = build(&small, 8, 9);
        let mut scratch = h.scratch();
        let (f, sc) = (Filter::default(), Scoring::default());
        for i in (0..300).step_by(7) {
            let q = small.ram.emb()[i * 16..(i + 1) * 16].to_vec();
            let exact: Vec<_> = small.search(&q, 10, &f, &sc).iter().map(|h| h.id).collect();
            let got: Vec<_> = h
                .search(&small, &q, 10, 300, &f, &sc, &mut scratch)
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect();
            assert_eq!(got, exact, "query {i}");
        }
    }

    /// The upper-layer walk stops at a local best: no neighbour on its layer is more
    /// similar to the query, and it never ends worse than it started.
    #[test]
    fn the_greedy_walk_ends_at_a_local_best() {
        use crate::simd::Portable;
        let st = store(13);
        let h = build(&st, 4, 21);
        let emb = st.ram.emb();
        assert!(h.top >= 2);
        let mut moved = 0;
        for i in (0..N).step_by(37) {
            let q = &emb[i * 16..(i + 1) * 16];
            for l in 1..=h.top {
                let start = Sim(h.sim(Portable, emb, q, h.entry), h.entry);
                let end = h.greedy(Portable, emb, q, start, l);
                assert!(end.0 >= start.0, "query {i} layer {l}");
                assert_eq!(end.0, h.sim(Portable, emb, q, end.1));
                for &nb in h.links(end.1, l).iter().filter(|&&j| j != NONE) {
                    assert!(h.sim(Portable, emb, q, nb) <= end.0, "query {i} layer {l}");
                }
                moved += usize::from(end.1 != start.1);
            }
        }
        assert!(moved > 0, "the walk never left the entry point");
    }

    /// Every vector stored twice: equal similarities everywhere, and searches still end.
    #[test]
    fn duplicate_vectors_do_not_trap_a_search() {
        use crate::search::{Filter, Scoring};
        let src = store_n(17, 500);
        let emb = src.ram.emb();
        let st = crate::testutil::store_of(
            16,
            (0..1000).map(|i| (0, emb[(i / 2) * 16..(i / 2 + 1) * 16].to_vec())),
        );
        let h = build(&st, 4, 1);
        let mut scratch = h.scratch();
        let (f, sc) = (Filter::default(), Scoring::default());
        for i in (0..500).step_by(11) {
            let q = &emb[i * 16..(i + 1) * 16];
            let hits = h.search(&st, q, 2, 20, &f, &sc, &mut scratch).unwrap();
            assert_eq!(hits.len(), 2, "query {i}");
        }
    }

    /// `bytes` counts every array the graph holds, and a scratch made for another graph
    /// is resized rather than indexed out of bounds.
    #[test]
    fn ram_figure_and_scratch_reuse() {
        use crate::search::{Filter, Scoring};
        let st = store(19);
        let h = build(&st, 4, 2);
        let upper: usize = h.level.iter().map(|&l| l as usize * 4).sum();
        // Base links 2m per node, upper links m per layer above 0, the upper index, the
        // levels (one byte) and the inverse norms, 4 bytes each otherwise.
        assert_eq!(h.bytes(), N * 8 * 4 + upper * 4 + N * 4 + N + N * 4);
        let small = store_n(19, 50);
        let hs = build(&small, 4, 2);
        let mut scratch = hs.scratch();
        let (f, sc) = (Filter::default(), Scoring::default());
        let q = &st.ram.emb()[..16];
        assert!(hs.search(&small, q, 3, 10, &f, &sc, &mut scratch).is_some());
        let hits = h.search(&st, q, 3, 10, &f, &sc, &mut scratch).unwrap();
        assert_eq!(hits.len(), 3);
        // A query of the wrong width, or a store the graph was not built on: no answer.
        assert!(h
            .search(&st, &q[..8], 3, 10, &f, &sc, &mut scratch)
            .is_none());
        assert!(h.search(&small, q, 3, 10, &f, &sc, &mut scratch).is_none());
    }

    /// The neighbour heuristic keeps a candidate only if it is closer to the base than to
    /// every neighbour already kept: of two near-twins, one; a candidate in another
    /// direction, kept.
    #[test]
    fn selection_spreads_links_across_directions() {
        use crate::simd::Portable;
        // 0: the base; 1 and 2 near-twins close to it; 3 at 45 degrees the other way.
        let rows: [[i8; 4]; 4] = [
            [100, 0, 0, 0],
            [90, 10, 0, 0],
            [89, 11, 0, 0],
            [60, -60, 0, 0],
        ];
        let st = crate::testutil::store_of(4, rows.iter().map(|v| (0, v.to_vec())));
        let h = build(&st, 2, 1);
        let emb = st.ram.emb();
        let base = &emb[..4];
        let mut cands: Vec<Sim> = (1..4)
            .map(|i| Sim(h.sim(Portable, emb, base, i), i))
            .collect();
        cands.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(cands.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 2, 3]);
        let kept = h.select(Portable, emb, &cands, 3, h.inv[0]);
        assert_eq!(kept, [1, 3]);
        assert_eq!(h.select(Portable, emb, &cands, 1, h.inv[0]), [1]);
    }
}

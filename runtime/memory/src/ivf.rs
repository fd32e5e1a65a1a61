//! Approximate search for large stores: an inverted-file index (IVF). Spherical k-means
//! (on the int8 vectors themselves, with int8 centroids) splits the records into lists;
//! a query scans the `nprobe` lists whose centroids are closest, exactly. Chosen over HNSW
//! for a device: the index is a few KB of centroids plus one u32 per record, it is rebuilt
//! from the store's RAM copy after a restart in seconds, and it needs no random access to
//! a graph. Recall is traded for speed with `nprobe`.

use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;

use crate::ram::Ram;
use crate::search::{Filter, Hit, Scoring};
use crate::simd::dot;
use crate::store::Store;

pub struct Ivf {
    dim: usize,
    centroids: Vec<i8>,
    /// 1 / L2 norm of each int8 centroid: assignment is by cosine, not by raw dot (the int8
    /// centroids are scaled by their largest entry, so their norms differ).
    cinv: Vec<f32>,
    lists: Vec<Vec<u32>>,
    generation: u64,
}

fn normalize_i8(v: &[f32]) -> Vec<i8> {
    let m = v.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    let s = if m > 0.0 { 127.0 / m } else { 0.0 };
    v.iter().map(|&x| libm::roundf(x * s) as i8).collect()
}

fn inv_norms(centroids: &[i8], dim: usize) -> Vec<f32> {
    centroids
        .chunks(dim)
        .map(|c| 1.0 / libm::sqrtf(dot(c, c) as f32).max(1e-6))
        .collect()
}

fn nearest(centroids: &[i8], cinv: &[f32], dim: usize, v: &[i8]) -> usize {
    let mut best = (f32::NEG_INFINITY, 0);
    for (c, cv) in centroids.chunks(dim).enumerate() {
        let d = dot(cv, v) as f32 * cinv[c];
        if d > best.0 {
            best = (d, c);
        }
    }
    best.1
}

impl Ivf {
    /// Build over the store's current records: `nlist` lists, `iters` rounds of k-means on
    /// at most `sample` records (seeded), then every record assigned to its closest centroid.
    pub fn build<F: NorFlash>(
        st: &Store<F>,
        nlist: usize,
        iters: usize,
        sample: usize,
        seed: u64,
    ) -> Ivf {
        let dim = st.config().dim;
        let n = st.len();
        let nlist = nlist.clamp(1, n.max(1));
        // Mixed first: seeds 2k and 2k+1 would otherwise sample the same records.
        let mut rng = crate::splitmix64(seed) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // Rows scaled by their norm so k-means works on directions.
        let unit = |i: usize| -> Vec<f32> {
            let v = &st.ram.emb()[i * dim..(i + 1) * dim];
            let n = st.ram.norms()[i].max(1e-6);
            v.iter().map(|&x| x as f32 / n).collect()
        };
        let picks: Vec<usize> = if n <= sample {
            (0..n).collect()
        } else {
            (0..sample).map(|_| (next() % n as u64) as usize).collect()
        };
        let mut centroids: Vec<i8> = Vec::with_capacity(nlist * dim);
        for c in 0..nlist {
            centroids.extend(normalize_i8(&unit(picks[(c * 7919) % picks.len().max(1)])));
        }
        for _ in 0..iters {
            let cinv = inv_norms(&centroids, dim);
            let mut sums = vec![0.0f32; nlist * dim];
            let mut counts = vec![0usize; nlist];
            for &i in &picks {
                let c = nearest(
                    &centroids,
                    &cinv,
                    dim,
                    &st.ram.emb()[i * dim..(i + 1) * dim],
                );
                counts[c] += 1;
                for (s, x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(unit(i)) {
                    *s += x;
                }
            }
            for c in 0..nlist {
                if counts[c] == 0 {
                    // An empty list takes a random record as its new centre.
                    let i = picks[(next() % picks.len() as u64) as usize];
                    centroids[c * dim..(c + 1) * dim].copy_from_slice(&normalize_i8(&unit(i)));
                } else {
                    centroids[c * dim..(c + 1) * dim]
                        .copy_from_slice(&normalize_i8(&sums[c * dim..(c + 1) * dim]));
                }
            }
        }
        let cinv = inv_norms(&centroids, dim);
        let mut lists = vec![Vec::new(); nlist];
        for i in 0..n {
            lists[nearest(
                &centroids,
                &cinv,
                dim,
                &st.ram.emb()[i * dim..(i + 1) * dim],
            )]
            .push(i as u32);
        }
        Ivf {
            dim,
            centroids,
            cinv,
            lists,
            generation: st.generation,
        }
    }

    /// True when the store changed since the index was built (rebuild it).
    pub fn is_stale<F: NorFlash>(&self, st: &Store<F>) -> bool {
        self.generation != st.generation || self.dim != st.config().dim
    }

    pub fn lists(&self) -> usize {
        self.lists.len()
    }

    /// Approximate top-k: exact scores within the `nprobe` closest lists. `None` when the
    /// index is stale.
    pub fn search<F: NorFlash>(
        &self,
        st: &Store<F>,
        query: &[i8],
        k: usize,
        nprobe: usize,
        filter: &Filter,
        scoring: &Scoring,
    ) -> Option<Vec<Hit>> {
        if self.is_stale(st) || query.len() != self.dim {
            return None;
        }
        let mut order: Vec<(f32, usize)> = self
            .centroids
            .chunks(self.dim)
            .enumerate()
            .map(|(c, cv)| (dot(cv, query) as f32 * self.cinv[c], c))
            .collect();
        let np = nprobe.clamp(1, order.len());
        order.select_nth_unstable_by(np - 1, |a, b| b.0.total_cmp(&a.0));
        let slots = order[..np]
            .iter()
            .flat_map(|&(_, c)| self.lists[c].iter().map(|&s| s as usize));
        Some(st.score_slots(slots, query, k, filter, scoring))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centroids_scale_to_the_int8_range() {
        assert_eq!(normalize_i8(&[0.5, -1.0, 0.25]), [64, -127, 32]);
        assert_eq!(normalize_i8(&[2.0, 4.0]), [64, 127]);
        assert_eq!(normalize_i8(&[0.0, 0.0]), [0, 0]);
    }

    #[test]
    fn assignment_is_by_cosine_not_raw_dot() {
        let c: [i8; 4] = [100, 0, 10, 10];
        let inv = inv_norms(&c, 2);
        assert_eq!(inv.len(), 2);
        assert!((inv[0] - 0.01).abs() < 1e-7);
        assert!((inv[1] - 1.0 / 200f32.sqrt()).abs() < 1e-7);
        // [1, 1] has a larger raw dot with [100, 0] (100 against 20) but points along
        // [10, 10].
        assert_eq!(nearest(&c, &inv, 2, &[1, 1]), 1);
        assert_eq!(nearest(&c, &inv, 2, &[5, 1]), 0);
        assert_eq!(inv_norms(&[0, 0], 2), [1e6]);
    }

    /// With more records than the sample, the seed picks the sample: each seed its own,
    /// the same seed the same.
    #[test]
    fn the_sample_follows_the_seed() {
        let st = crate::testutil::store_of(
            8,
            crate::testutil::random_rows(0x1234_5678_9abc_def1, 600, 8),
        );
        let built: Vec<Vec<i8>> = [0, 1, 2, 3]
            .iter()
            .map(|&seed| Ivf::build(&st, 8, 0, 100, seed).centroids)
            .collect();
        for i in 0..built.len() {
            assert_eq!(built[i], Ivf::build(&st, 8, 0, 100, i as u64).centroids);
            for j in i + 1..built.len() {
                assert_ne!(built[i], built[j], "seeds {i} and {j}");
            }
            // Not one record copied into every centre (a generator stuck at 0).
            let mut c: Vec<&[i8]> = built[i].chunks(8).collect();
            c.sort();
            c.dedup();
            assert!(c.len() >= 6, "seed {i}: {} distinct centres", c.len());
        }
    }

    /// k-means on separated clusters: every record sits in exactly one list, the list of
    /// its nearest centroid by cosine, and each centroid is the int8-scaled mean of its
    /// members' directions (the fixed point the iterations reach).
    #[test]
    fn lists_partition_the_records_around_their_means() {
        let dim = 8;
        let mut rows = Vec::new();
        let mut r = 0x0dd_ba11_5eed_u64;
        let mut next = move || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        // Six centres on distinct axes (± a little), members within ±4 of theirs, then
        // shortened to 1/4, 1/2 or kept: the mean is of directions, not of raw vectors.
        let centres: Vec<Vec<i32>> = (0..6)
            .map(|c| {
                (0..dim)
                    .map(|d| {
                        if d == c {
                            100
                        } else {
                            (next() % 11) as i32 - 5
                        }
                    })
                    .collect()
            })
            .collect();
        for i in 0..300u64 {
            let c = &centres[(i % 6) as usize];
            let v: Vec<i8> = c
                .iter()
                .map(|&x| ((x + (next() % 9) as i32 - 4) / [4, 2, 1][(i % 18 / 6) as usize]) as i8)
                .collect();
            rows.push((0, v));
        }
        let st = crate::testutil::store_of(dim, rows);
        let ivf = Ivf::build(&st, 6, 10, 1000, 4);
        let emb = st.ram.emb();
        let row = |i: usize| &emb[i * dim..(i + 1) * dim];
        let mut seen = vec![0; 300];
        for (c, list) in ivf.lists.iter().enumerate() {
            for &i in list {
                seen[i as usize] += 1;
                let want = nearest(&ivf.centroids, &ivf.cinv, dim, row(i as usize));
                assert_eq!(want, c, "record {i}");
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "each record in one list");
        // Separated clusters end one per list.
        for list in &ivf.lists {
            assert_eq!(list.len(), 50);
            assert!(list.iter().all(|&i| i % 6 == list[0] % 6));
        }
        assert_eq!(ivf.cinv, inv_norms(&ivf.centroids, dim));
        for (c, list) in ivf.lists.iter().enumerate() {
            let mut sum = vec![0f32; dim];
            for &i in list {
                let n = st.ram.norms()[i as usize].max(1e-6);
                for (s, &x) in sum.iter_mut().zip(row(i as usize)) {
                    *s += x as f32 / n;
                }
            }
            assert_eq!(
                &ivf.centroids[c * dim..(c + 1) * dim],
                &normalize_i8(&sum)[..]
            );
        }
    }

    /// Lists are probed by cosine: a centroid of twice the norm (a diagonal direction,
    /// after int8 scaling) does not outrank the query's own. With every list probed, the
    /// search is exact.
    #[test]
    fn probing_ranks_lists_by_cosine() {
        use crate::search::{Filter, Scoring};
        let dim = 8;
        let mut rows = Vec::new();
        let mut r = 0xfeed_f00d_u64;
        let mut noise = move || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            (r % 7) as i32 - 3
        };
        for i in 0..200u64 {
            let c = (i % 2) as u16;
            let v: Vec<i8> = (0..dim)
                .map(|d| {
                    let base = match (c, d) {
                        (0, 0) => 100,
                        (1, 0..=3) => 60,
                        _ => 0,
                    };
                    (base + noise()) as i8
                })
                .collect();
            rows.push((c, v.to_vec()));
        }
        let st = crate::testutil::store_of(dim, rows);
        let ivf = Ivf::build(&st, 2, 10, 1000, 1);
        assert_eq!(ivf.lists(), 2);
        let label =
            |h: &crate::search::Hit| st.metas().iter().find(|m| m.id == h.id).unwrap().label;
        let (f, sc) = (Filter::default(), Scoring::default());
        let emb = st.ram.emb();
        for i in (0..200).step_by(2) {
            let q = &emb[i * dim..(i + 1) * dim];
            let hits = ivf.search(&st, q, 5, 1, &f, &sc).unwrap();
            assert_eq!(hits.len(), 5);
            assert!(hits.iter().all(|h| label(h) == 0), "query {i}");
            let all = ivf.search(&st, q, 5, ivf.lists(), &f, &sc).unwrap();
            let exact = st.search(q, 5, &f, &sc);
            let ids = |v: &[crate::search::Hit]| v.iter().map(|h| h.id).collect::<Vec<_>>();
            assert_eq!(ids(&all), ids(&exact), "query {i}");
        }
    }

    /// Two starting centres on the same direction leave a list empty; it is reseeded from
    /// a random record until both directions have their own list.
    #[test]
    fn an_empty_list_is_reseeded() {
        let mut rows = Vec::new();
        // Records 0..50 all [100, 0, 0, 0], 50..100 along y: the starting centres (records
        // 0 and 19) are the same, so every record goes to the first and the second list
        // starts empty.
        for i in 0..100u64 {
            let v: [i8; 4] = if i < 50 {
                [100, 0, 0, 0]
            } else {
                [(i % 3) as i8, 100, 0, 0]
            };
            rows.push((0, v));
        }
        let st = crate::testutil::store_of(4, rows);
        let ivf = Ivf::build(&st, 2, 10, 1000, 3);
        let mut lists: Vec<Vec<u32>> = ivf.lists.clone();
        lists.sort();
        assert_eq!(lists[0], (0..50).collect::<Vec<u32>>());
        assert_eq!(lists[1], (50..100).collect::<Vec<u32>>());
    }
}

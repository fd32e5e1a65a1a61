//! The arena planner (convert time). Greedy by size over tensor lifetimes, as TFLite
//! Micro's `GreedyMemoryPlanner`: the largest buffers are placed first, each at the lowest
//! offset that does not collide with a placed buffer alive at an overlapping time.
//! Tensors joined by an in-place op share one buffer.

use alloc::vec::Vec;

use crate::format::ALIGN;

/// One tensor to place: its size and the times it is written and last read
/// (time 0 = graph input, op i runs at time i + 1).
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub bytes: usize,
    pub def_time: u16,
    pub last_time: u16,
    /// Share the buffer of this earlier request (in-place op; same size).
    pub share_with: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub offsets: Vec<usize>,
    pub arena_bytes: usize,
    /// Largest sum of (aligned) buffer sizes alive at one time: no plan can be smaller.
    pub lower_bound: usize,
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

pub fn plan(reqs: &[Request]) -> Plan {
    // Union in-place chains into buffers.
    let mut buf_of: Vec<usize> = (0..reqs.len()).collect();
    for (i, r) in reqs.iter().enumerate() {
        if let Some(j) = r.share_with {
            buf_of[i] = buf_of[j];
        }
    }
    struct Buf {
        bytes: usize,
        start: u16,
        end: u16,
        offset: usize,
    }
    let mut bufs: Vec<Buf> = Vec::new();
    let mut buf_index = alloc::vec![usize::MAX; reqs.len()];
    for (i, r) in reqs.iter().enumerate() {
        let root = buf_of[i];
        if buf_index[root] == usize::MAX {
            buf_index[root] = bufs.len();
            bufs.push(Buf {
                bytes: 0,
                start: u16::MAX,
                end: 0,
                offset: 0,
            });
        }
        let b = &mut bufs[buf_index[root]];
        b.bytes = b.bytes.max(align(r.bytes));
        b.start = b.start.min(r.def_time);
        b.end = b.end.max(r.last_time);
    }

    let mut order: Vec<usize> = (0..bufs.len()).collect();
    order.sort_by(|&a, &b| {
        bufs[b]
            .bytes
            .cmp(&bufs[a].bytes)
            .then(bufs[a].start.cmp(&bufs[b].start))
    });
    let mut placed: Vec<usize> = Vec::new();
    let mut arena = 0usize;
    for &i in &order {
        let (s, e, n) = (bufs[i].start, bufs[i].end, bufs[i].bytes);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| bufs[j].start <= e && s <= bufs[j].end)
            .map(|&j| (bufs[j].offset, bufs[j].offset + bufs[j].bytes))
            .collect();
        busy.sort_unstable();
        let mut at = 0usize;
        for (lo, hi) in busy {
            if lo >= at + n {
                break;
            }
            at = at.max(hi);
        }
        bufs[i].offset = at;
        arena = arena.max(at + n);
        placed.push(i);
    }

    let horizon = bufs.iter().map(|b| b.end as usize).max().unwrap_or(0);
    let lower_bound = (0..=horizon)
        .map(|t| {
            bufs.iter()
                .filter(|b| b.start as usize <= t && t <= b.end as usize)
                .map(|b| b.bytes)
                .sum()
        })
        .max()
        .unwrap_or(0);
    let offsets = (0..reqs.len())
        .map(|i| bufs[buf_index[buf_of[i]]].offset)
        .collect();
    Plan {
        offsets,
        arena_bytes: arena,
        lower_bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(bytes: usize, d: u16, l: u16) -> Request {
        Request {
            bytes,
            def_time: d,
            last_time: l,
            share_with: None,
        }
    }

    #[test]
    fn chain_reuses_memory() {
        // a -> b -> c -> d: only two alive at once.
        let p = plan(&[r(64, 0, 1), r(64, 1, 2), r(64, 2, 3), r(64, 3, 4)]);
        assert_eq!(p.arena_bytes, 128);
        assert_eq!(p.lower_bound, 128);
    }

    #[test]
    fn in_place_shares() {
        let mut reqs = [r(32, 0, 1), r(32, 1, 2)];
        reqs[1].share_with = Some(0);
        let p = plan(&reqs);
        assert_eq!(p.offsets[0], p.offsets[1]);
        assert_eq!(p.arena_bytes, 32);
    }

    #[test]
    fn never_overlaps_live_buffers() {
        let reqs = [r(100, 0, 3), r(40, 1, 2), r(60, 2, 4), r(10, 0, 4)];
        let p = plan(&reqs);
        for i in 0..reqs.len() {
            for j in i + 1..reqs.len() {
                let time =
                    reqs[i].def_time <= reqs[j].last_time && reqs[j].def_time <= reqs[i].last_time;
                let (a, b) = (p.offsets[i], p.offsets[j]);
                let mem = a < b + align(reqs[j].bytes) && b < a + align(reqs[i].bytes);
                assert!(!(time && mem), "{i} and {j} overlap");
            }
        }
    }
}

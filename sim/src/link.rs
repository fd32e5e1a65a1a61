//! The radio between every pair of nodes: each direction its own loss, duplication,
//! reordering, corruption, latency and bandwidth (links are asymmetric); whether a pair is
//! in range in a round (contact windows drawn per round, partitions that heal, links that
//! flap).

use crate::rng::Rng;
use crate::scenario::Scenario;

/// One direction of a link.
#[derive(Clone, Debug)]
pub struct Direction {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    pub latency_ms: u64,
    pub bandwidth_bps: u64,
}

impl Direction {
    /// A clean direction (the heal phase).
    pub fn clean(latency_ms: u64, bandwidth_bps: u64) -> Direction {
        Direction {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            latency_ms,
            bandwidth_bps,
        }
    }

    /// What happens to one frame sent at `now` when the sender's radio is free from
    /// `busy`: the copies that arrive, with their arrival times; the radio's new `busy`.
    pub fn carry(
        &self,
        frame: &[u8],
        now: u64,
        busy: &mut u64,
        rng: &mut Rng,
    ) -> Vec<(u64, Vec<u8>)> {
        let start = now.max(*busy);
        let airtime = (frame.len() as u64 * 8 * 1000).div_ceil(self.bandwidth_bps.max(1));
        *busy = start + airtime;
        let mut out = Vec::new();
        if rng.chance(self.loss) {
            return out;
        }
        let copies = 1 + rng.chance(self.duplicate) as usize;
        for _ in 0..copies {
            let mut b = frame.to_vec();
            if rng.chance(self.corrupt) && !b.is_empty() {
                let at = rng.range(0, b.len() as u64 - 1) as usize;
                b[at] ^= 1 << rng.range(0, 7);
            }
            let mut at = *busy + self.latency_ms;
            if rng.chance(self.reorder) {
                at += rng.range(1, 3 * self.latency_ms + 20);
            }
            out.push((at, b));
        }
        out
    }
}

/// The link between nodes `a < b`.
#[derive(Clone, Debug)]
pub struct PairLink {
    pub ab: Direction,
    pub ba: Direction,
    pub mtu: usize,
    /// Up and down every `period` rounds, starting at `phase`.
    pub flaps: Option<(u32, u32)>,
}

pub struct Links {
    n: usize,
    pairs: Vec<PairLink>,
    partitions: Vec<crate::scenario::Partition>,
}

impl Links {
    pub fn new(sc: &Scenario, rng: &mut Rng) -> Links {
        let l = &sc.link;
        let mut pairs = Vec::with_capacity(sc.nodes * sc.nodes / 2);
        for _ in 0..sc.nodes * (sc.nodes - 1) / 2 {
            let dir = |rng: &mut Rng| Direction {
                loss: (l.loss * rng.between(1.0 - l.asymmetry, 1.0 + l.asymmetry)).clamp(0.0, 0.95),
                duplicate: l.duplicate,
                reorder: l.reorder,
                corrupt: l.corrupt,
                latency_ms: rng.range(l.latency_ms[0], l.latency_ms[1]),
                bandwidth_bps: rng.range(l.bandwidth_bps[0], l.bandwidth_bps[1]),
            };
            let ab = dir(rng);
            let ba = dir(rng);
            let mtu = rng.range(l.mtu[0] as u64, l.mtu[1] as u64) as usize;
            let flaps = sc.flapping.as_ref().and_then(|f| {
                rng.chance(f.fraction).then(|| {
                    (
                        f.period.max(1),
                        rng.range(0, 2 * f.period.max(1) as u64) as u32,
                    )
                })
            });
            pairs.push(PairLink { ab, ba, mtu, flaps });
        }
        Links {
            n: sc.nodes,
            pairs,
            partitions: sc.partitions.clone(),
        }
    }

    fn index(&self, a: usize, b: usize) -> usize {
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        // Pairs (a, b), a < b, in row order.
        a * (2 * self.n - a - 1) / 2 + (b - a - 1)
    }

    pub fn pair(&self, a: usize, b: usize) -> &PairLink {
        &self.pairs[self.index(a, b)]
    }

    /// Whether `a` and `b` can hear each other in `round` (partitions, flapping).
    pub fn in_range(&self, a: usize, b: usize, round: u32) -> bool {
        for p in &self.partitions {
            if (p.from..p.to).contains(&round) && a % p.groups.max(1) != b % p.groups.max(1) {
                return false;
            }
        }
        match self.pair(a, b).flaps {
            Some((period, phase)) => ((round + phase) / period).is_multiple_of(2),
            None => true,
        }
    }
}

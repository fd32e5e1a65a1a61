//! One run of a scenario from a seed: the faulty phase round by round, then the heal
//! phase, then the invariants ([`crate::check`]).

use std::collections::{BTreeMap, BTreeSet};

use cairn_core::Model;
use cairn_node::Outcome;
use cairn_sync::item::{contribution_body, sign_into, ContributionHead, Item, Kind, MAX_ITEM};
use cairn_sync::{Reject, Store};
use ed25519_dalek::SigningKey;

use crate::contact::{self, Contact, ContactReport, Replayer};
use crate::data::Assets;
use crate::fleet::{learn_spec, Buffers, Shared, SimNode, SimNodeInner};
use crate::link::{Direction, Links};
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::{naive, RoundPoint, RunReport, RunStats};

pub type Id = [u8; 16];

/// The fleet's keys: node i's seed, the outsiders', the authority's.
fn seed_of(run: u64, i: usize) -> [u8; 32] {
    let mut r = Rng::new(run ^ 0x5EED_0000 ^ (i as u64).wrapping_mul(0x9E37_79B9));
    r.bytes()
}

pub(crate) fn shared(sc: &Scenario, assets: &Assets, seed: u64) -> Shared {
    let seeds: Vec<[u8; 32]> = (0..sc.nodes).map(|i| seed_of(seed, i)).collect();
    let auth = SigningKey::from_bytes(&seed_of(seed, usize::MAX));
    let members: Vec<[u8; 32]> = seeds
        .iter()
        .map(|s| SigningKey::from_bytes(s).verifying_key().to_bytes())
        .collect();
    let m = Model::parse(assets.model.as_slice()).expect("the bundled model parses");
    let steps = sc.learning.as_ref().map_or(1, |l| l.steps);
    Shared {
        model: cairn_core::emit::AlignedBytes::from_slice(assets.model.as_slice()),
        fleet: cairn_sync::testkit::fleet_of(&auth, &members),
        authority: auth.verifying_key().to_bytes(),
        seeds,
        spec: learn_spec(&m, steps),
    }
}

struct Carrier {
    hop: usize,
    bundle: Option<Vec<u8>>,
}

pub(crate) struct World<'a> {
    pub sc: &'a Scenario,
    pub assets: &'a Assets,
    pub nodes: Vec<SimNode<'a>>,
    links: Links,
    pub rng: Rng,
    /// Every record a member created (observed), and the round it was created.
    pub genuine: BTreeSet<Id>,
    pub members: BTreeSet<[u8; 32]>,
    pub byzantine_keys: BTreeSet<[u8; 32]>,
    /// The attacker on the air (present when the scenario has byzantine members or
    /// outsiders).
    replayer: Option<Replayer>,
    carriers: Vec<Carrier>,
    /// Per node: the rounds and samples it observes.
    plan: Vec<Vec<(u32, usize)>>,
    armed: Vec<bool>,
    pub buffers_bytes: usize,
    pub stats: RunStats,
    pub violations: Vec<String>,
    pub series: Vec<RoundPoint>,
    pub link_bytes: BTreeMap<(usize, usize), u64>,
    outsider_keys: Vec<SigningKey>,
}

impl<'a> World<'a> {
    pub fn new(
        sc: &'a Scenario,
        assets: &'a Assets,
        shared: &'a Shared,
        buffers: &'a mut [Buffers],
        seed: u64,
    ) -> Result<World<'a>, String> {
        let mut rng = Rng::new(seed);
        let links = Links::new(sc, &mut rng.fork(1));
        let buffers_bytes = buffers
            .first()
            .map_or(0, |b| b.arena.as_slice().len() + 4 * b.learn.len());
        let mut nodes = Vec::with_capacity(sc.nodes);
        for (i, b) in buffers.iter_mut().enumerate() {
            nodes.push(SimNode::new(i, sc, shared, b)?);
        }
        let members = shared
            .seeds
            .iter()
            .map(|s| SigningKey::from_bytes(s).verifying_key().to_bytes())
            .collect();
        let byzantine_keys = (sc.honest()..sc.nodes)
            .map(|i| {
                SigningKey::from_bytes(&shared.seeds[i])
                    .verifying_key()
                    .to_bytes()
            })
            .collect();
        let o = &sc.observations;
        let mut plan_rng = rng.fork(2);
        let plan = (0..sc.nodes)
            .map(|i| {
                (0..o.per_node)
                    .map(|k| {
                        let sample = (i * o.per_node + k) % assets.inputs.len();
                        (
                            plan_rng.range(o.from as u64, o.to as u64 - 1) as u32,
                            sample,
                        )
                    })
                    .collect()
            })
            .collect();
        let outsider_keys = (0..sc.outsiders)
            .map(|k| SigningKey::from_bytes(&seed_of(seed ^ 0x0u64.wrapping_sub(1), k)))
            .collect();
        Ok(World {
            sc,
            assets,
            nodes,
            links,
            rng,
            genuine: BTreeSet::new(),
            members,
            byzantine_keys,
            replayer: (sc.byzantine + sc.outsiders > 0).then(Replayer::default),
            carriers: sc
                .carriers
                .iter()
                .map(|_| Carrier {
                    hop: 0,
                    bundle: None,
                })
                .collect(),
            plan,
            armed: vec![false; sc.nodes],
            buffers_bytes,
            stats: RunStats::default(),
            violations: Vec::new(),
            series: Vec::new(),
            link_bytes: BTreeMap::new(),
            outsider_keys,
        })
    }

    fn violation(&mut self, round: u32, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(format!("round {round}: {what}"));
        }
    }

    /// Take node `i` down if its power failed.
    fn settle_power(&mut self, i: usize, round: u32) {
        if self.nodes[i].power.is_dead() && self.nodes[i].is_up() {
            let d = self.sc.power.as_ref().map_or([1, 1], |p| p.down_rounds);
            let until = round + self.rng.range(d[0] as u64, d[1] as u64) as u32;
            self.nodes[i].go_down(until.max(round + 1));
            self.stats.power_cuts += 1;
        }
    }

    fn restart(&mut self, i: usize, round: u32) {
        if let Err(e) = self.nodes[i].restart() {
            return self.violation(round, e);
        }
        self.nodes[i].last_restart = Some(round);
        self.stats.restarts += 1;
        // Local durability: every record this node acknowledged is still there.
        let n = &mut self.nodes[i];
        let acked = n.acked.clone();
        let Some(node) = n.up() else { return };
        let lost = acked
            .iter()
            .filter(|id| !node.memory().contains(id))
            .count();
        if lost > 0 {
            self.violation(
                round,
                format!("node {i} lost {lost} acknowledged records in a power cut"),
            );
        }
    }

    fn remember_acked(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let (restarts, last) = (n.restarts, n.acked_mark);
        let (ids, mark): (Vec<Id>, _) = match n.up() {
            Some(node) => {
                let mark = Some((restarts, node.report().records));
                if last == mark {
                    return;
                }
                (node.memory().metas().iter().map(|m| m.id).collect(), mark)
            }
            None => return,
        };
        n.acked.extend(ids);
        n.acked_mark = mark;
    }

    fn now(&self, round: u32) -> u64 {
        round as u64 * self.sc.round_ms
    }

    // ---- the faulty phase ------------------------------------------------------------

    pub fn faulty_round(&mut self, round: u32) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].down_until().is_some_and(|u| u <= round) {
                self.restart(i, round);
            }
            // A byzantine member (re)arms its attack whenever it (re)starts: a reload drops
            // the forged items, which no longer verify.
            if round == 0 || self.nodes[i].restarted_in(round) {
                self.arm_attack(i);
            }
        }
        self.arm_power_cuts();
        self.observe(round);
        if let Some(l) = self.sc.learning.clone() {
            if l.at == round {
                self.learn(round, l.learners);
            }
        }
        self.contacts(round);
        self.carry(round);
        self.outsiders(round);
        for i in 0..self.nodes.len() {
            if self.armed[i] {
                self.armed[i] = false;
                if self.nodes[i].is_up() {
                    self.nodes[i].power.cut();
                }
            }
            self.settle_power(i, round);
        }
        self.check_budgets(round);
        self.record_point(round);
    }

    fn arm_power_cuts(&mut self) {
        let Some(p) = self.sc.power.clone() else {
            return;
        };
        let rate = p.cuts_per_node / self.sc.rounds.max(1) as f64;
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_up() && self.rng.chance(rate) {
                let units = self.rng.range(0, p.max_units);
                self.nodes[i].power.arm(units);
                self.armed[i] = true;
            }
        }
    }

    fn observe(&mut self, round: u32) {
        let now = self.now(round);
        for i in 0..self.nodes.len() {
            let due: Vec<usize> = self.plan[i]
                .iter()
                .filter(|(r, _)| *r == round)
                .map(|(_, s)| *s)
                .collect();
            for s in due {
                let (x, y) = (&self.assets.inputs[s], self.assets.labels[s]);
                let Some(node) = self.nodes[i].up() else {
                    break;
                };
                match node.observe(x, Some(y), 100, now + s as u64) {
                    Ok(o) => {
                        self.genuine.insert(o.id);
                        self.nodes[i].acked.insert(o.id);
                        self.stats.records_created += 1;
                    }
                    Err(_) if self.nodes[i].power.is_dead() => {}
                    Err(e) => self.violation(round, format!("node {i} observe: {e:?}")),
                }
                self.settle_power(i, round);
            }
        }
    }

    fn arm_attack(&mut self, i: usize) {
        if !self.nodes[i].byzantine {
            return;
        }
        let keys = self.outsider_keys.clone();
        if let Some(node) = self.nodes[i].up() {
            attack(node, &keys, &self.members);
        }
    }

    fn learn(&mut self, round: u32, learners: usize) {
        for i in 0..self.nodes.len() {
            let byz = self.nodes[i].byzantine;
            if !byz && i >= learners {
                continue;
            }
            if byz {
                continue;
            }
            let Some(node) = self.nodes[i].up() else {
                continue;
            };
            match node.learn(&mut |_, _| {}) {
                Ok(o) if o.promoted() => self.stats.learned_promoted += 1,
                Ok(_) => self.stats.learned_rejected += 1,
                // A learner that holds no record yet (two observations per node, lost to
                // a power cut or not yet made) has nothing to train on: not a fault.
                Err(cairn_node::NodeError::NothingToLearn) => self.stats.learned_skipped += 1,
                Err(_) if self.nodes[i].power.is_dead() => {}
                Err(e) => self.violation(round, format!("node {i} learn: {e:?}")),
            }
            self.settle_power(i, round);
        }
    }

    fn contacts(&mut self, round: u32) {
        let n = self.nodes.len();
        let per_node = self.sc.link.contact_rate * (n - 1) as f64;
        let mut pairs = Vec::new();
        for i in 0..n {
            let draws = per_node.floor() as usize + self.rng.chance(per_node.fract()) as usize;
            for _ in 0..draws {
                let j = self.rng.range(0, n as u64 - 2) as usize;
                let j = if j >= i { j + 1 } else { j };
                pairs.push((i, j));
            }
        }
        self.rng.shuffle(&mut pairs);
        for (i, j) in pairs {
            if !self.links.in_range(i, j, round) {
                continue;
            }
            let start = self.now(round) + self.rng.range(0, self.sc.round_ms / 2);
            let window = self.rng.range(self.sc.round_ms / 5, self.sc.round_ms);
            let budget = self.sc.link.byte_budget.unwrap_or(u64::MAX);
            let pair = self.links.pair(i, j).clone();
            let (ab, ba) = if i < j {
                (pair.ab, pair.ba)
            } else {
                (pair.ba, pair.ab)
            };
            self.contact(i, j, &ab, &ba, pair.mtu, start, window, budget, round);
        }
    }

    /// One contact, `i` initiating, then both apply what arrived.
    #[allow(clippy::too_many_arguments)]
    pub fn contact(
        &mut self,
        i: usize,
        j: usize,
        ab: &Direction,
        ba: &Direction,
        mtu: usize,
        start_ms: u64,
        window_ms: u64,
        byte_budget: u64,
        round: u32,
    ) -> Option<ContactReport> {
        let (lo, hi) = (i.min(j), i.max(j));
        let (left, right) = self.nodes.split_at_mut(hi);
        let (a, b) = (&mut left[lo], &mut right[0]);
        let (a, b) = if i < j { (a, b) } else { (b, a) };
        let (pa, pb) = (a.power.clone(), b.power.clone());
        let (na, nb) = (a.up()?, b.up()?);
        let naive_framed = naive::framed_cost(na, nb, mtu, byte_budget);
        let c = Contact {
            ab,
            ba,
            mtu,
            start_ms,
            window_ms,
            byte_budget,
        };
        let mut rng = self.rng.fork(round as u64);
        let rep = match contact::run(na, nb, (&pa, &pb), &c, &mut rng, self.replayer.as_mut()) {
            Ok(r) => r,
            Err(e) => {
                // A device whose power failed while the session was set up (publishing
                // its own records) simply goes down; anything else is a bug.
                if !(pa.is_dead() || pb.is_dead()) {
                    self.violation(round, format!("contact {i}-{j}: {e}"));
                }
                self.settle_power(i, round);
                self.settle_power(j, round);
                return None;
            }
        };
        self.stats.sessions += 1;
        self.stats.complete_sessions += rep.complete as u64;
        self.stats.wire_bytes += rep.bytes;
        let capacity = window_ms.saturating_mul(ab.bandwidth_bps + ba.bandwidth_bps) / 8000;
        let loss = (ab.loss + ba.loss) / 2.0;
        self.stats.naive_bytes += naive::on_wire(naive_framed, loss, capacity);
        self.stats.naive_protocol_bytes += naive_framed;
        self.stats.protocol_bytes += rep.first_sends;
        for (s, v) in self.stats.rejected.iter_mut().zip(rep.rejected) {
            *s += v as u64;
        }
        *self.link_bytes.entry((lo, hi)).or_insert(0) += rep.bytes;
        for k in [i, j] {
            self.apply(k, round);
            self.remember_acked(k);
            self.settle_power(k, round);
        }
        Some(rep)
    }

    /// Judge the merge on node `k` if its contributions changed.
    fn apply(&mut self, k: usize, round: u32) {
        let byz = self.nodes[k].byzantine;
        let Some(node) = self.nodes[k].up() else {
            return;
        };
        match node.apply() {
            Ok(Some(Outcome::Promoted { .. })) => {
                self.stats.merges_promoted += 1;
                if !byz {
                    let from_byz = contributions(node)
                        .into_iter()
                        .filter(|o| self.byzantine_keys.contains(o))
                        .count();
                    if from_byz > 0 {
                        self.violation(
                            round,
                            format!("node {k} promoted a merge holding {from_byz} byzantine contributions"),
                        );
                    }
                }
            }
            Ok(Some(_)) => self.stats.merges_rejected += 1,
            Ok(None) => {}
            Err(_) if self.nodes[k].power.is_dead() => {}
            Err(e) => self.violation(round, format!("node {k} apply: {e:?}")),
        }
    }

    fn carry(&mut self, round: u32) {
        for c in 0..self.carriers.len() {
            let spec = self.sc.carriers[c].clone();
            if !round.is_multiple_of(spec.every) {
                continue;
            }
            let at = spec.route[self.carriers[c].hop % spec.route.len()];
            self.carriers[c].hop += 1;
            if !self.nodes[at].is_up() {
                continue;
            }
            self.stats.carrier_visits += 1;
            if let Some(mut b) = self.carriers[c].bundle.take() {
                if self.rng.chance(spec.truncate) && b.len() > 4 {
                    let cut = self.rng.range(1, b.len() as u64 - 1) as usize;
                    b.truncate(cut);
                    self.stats.bundles_truncated += 1;
                }
                let Some(node) = self.nodes[at].up() else {
                    continue;
                };
                match node.import_bundle(&b, 0) {
                    Ok(rep) => {
                        for (s, v) in self.stats.bundle_rejected.iter_mut().zip(rep.rejected) {
                            *s += v as u64;
                        }
                    }
                    Err(cairn_node::NodeError::Sync(Reject::Malformed)) => {}
                    Err(_) if self.nodes[at].power.is_dead() => {}
                    Err(e) => self.violation(round, format!("carrier {c} at node {at}: {e:?}")),
                }
                self.apply(at, round);
                self.remember_acked(at);
            }
            let mut out = Vec::new();
            if let Some(node) = self.nodes[at].up() {
                let r = node.export_bundle(0, &mut |x| {
                    out.extend_from_slice(x);
                    true
                });
                if r.is_ok() {
                    self.carriers[c].bundle = Some(out);
                }
            }
            self.settle_power(at, round);
        }
    }

    /// Outsiders hand a node a bundle they signed: it must be refused whole.
    fn outsiders(&mut self, round: u32) {
        for k in 0..self.outsider_keys.len() {
            if !self.rng.chance(0.3) {
                continue;
            }
            let to = self.rng.range(0, self.nodes.len() as u64 - 1) as usize;
            let key = self.outsider_keys[k].clone();
            let b = outsider_bundle(&key, round as u64);
            let Some(node) = self.nodes[to].up() else {
                continue;
            };
            match node.import_bundle(&b, 0) {
                Err(cairn_node::NodeError::Sync(Reject::NotMember)) => {
                    self.stats.bundle_rejected[Reject::NotMember as usize] += 1
                }
                other => self.violation(
                    round,
                    format!("node {to} took an outsider's bundle: {other:?}"),
                ),
            }
        }
    }

    fn check_budgets(&mut self, round: u32) {
        let b = &self.sc.budget;
        let flash = (b.memory_sectors + b.items_sectors + b.lineage_sectors) * crate::flash::SECTOR;
        for i in 0..self.nodes.len() {
            let base = self.buffers_bytes;
            let ram = self.nodes[i].ram_bytes(base);
            self.stats.max_ram_bytes = self.stats.max_ram_bytes.max(ram);
            let used = match self.nodes[i].up() {
                Some(n) => n.memory().usage().0 + n.items().usage().0,
                None => 0,
            };
            self.stats.max_flash_bytes = self.stats.max_flash_bytes.max(used);
            if ram > b.ram_bytes {
                self.violation(
                    round,
                    format!("node {i} uses {ram} bytes of RAM (budget {})", b.ram_bytes),
                );
            }
            if used > flash {
                self.violation(
                    round,
                    format!("node {i} uses {used} bytes of flash (budget {flash})"),
                );
            }
        }
    }

    /// Convergence over time: the mean share, over honest nodes, of the records honest
    /// nodes acknowledged so far that each holds (a node that is down holds none).
    pub fn record_point(&mut self, round: u32) {
        // A sorted, distinct vector (not a set): this runs every round over every node.
        let mut target: Vec<Id> = self
            .nodes
            .iter()
            .filter(|n| !n.byzantine)
            .flat_map(|n| n.acked.iter().copied())
            .collect();
        target.sort_unstable();
        target.dedup();
        let total = target.len().max(1);
        let mut sum = 0.0;
        let mut n = 0;
        let mut all = true;
        for node in self.nodes.iter_mut().filter(|x| !x.byzantine) {
            match node.up() {
                Some(x) => {
                    // |target ∩ memory| (memory ids are distinct).
                    let metas = x.memory().metas();
                    let have = metas
                        .iter()
                        .filter(|m| target.binary_search(&m.id).is_ok())
                        .count();
                    sum += have as f64 / total as f64;
                    all &= have == target.len();
                }
                None => all = false,
            }
            n += 1;
        }
        let share = sum / n.max(1) as f64;
        if all && self.stats.converged_round.is_none() && round >= self.sc.observations.to {
            self.stats.converged_round = Some(round);
        }
        self.series.push(RoundPoint {
            round,
            time_ms: self.now(round),
            share,
            wire_bytes: self.stats.wire_bytes,
        });
    }

    // ---- the heal phase ----------------------------------------------------------------

    pub fn heal(&mut self) {
        let first = self.sc.rounds;
        for i in 0..self.nodes.len() {
            self.armed[i] = false;
            if !self.nodes[i].is_up() {
                self.restart(i, first);
            }
        }
        let n = self.nodes.len();
        let steps = usize::BITS - (n - 1).leading_zeros();
        let mut round = first;
        for _ in 0..self.sc.heal_passes {
            for k in 0..steps {
                for i in 0..n {
                    let j = (i + (1 << k)) % n;
                    if i == j {
                        continue;
                    }
                    let p = self.links.pair(i, j);
                    let (ab, ba) = if i < j {
                        (&p.ab, &p.ba)
                    } else {
                        (&p.ba, &p.ab)
                    };
                    let ab = Direction::clean(ab.latency_ms, ab.bandwidth_bps);
                    let ba = Direction::clean(ba.latency_ms, ba.bandwidth_bps);
                    let mtu = p.mtu;
                    let start = self.now(round);
                    let before = (self.stats.wire_bytes, self.stats.naive_bytes);
                    let rep = self.contact(i, j, &ab, &ba, mtu, start, 600_000, u64::MAX, round);
                    self.stats.heal_wire_bytes += self.stats.wire_bytes - before.0;
                    self.stats.heal_naive_bytes += self.stats.naive_bytes - before.1;
                    if std::env::var("SIM_DEBUG").is_ok() {
                        eprintln!(
                            "heal {i}-{j}: {:?}",
                            rep.map(|r| (r.bytes, r.frames, r.complete, r.items, r.first_sends))
                        );
                    }
                    if rep.is_some_and(|r| !r.complete) {
                        self.stats.heal_incomplete += 1;
                    }
                }
                self.record_point(round);
                round += 1;
            }
        }
        self.stats.rounds = round;
        for k in 0..n {
            self.apply(k, round);
        }
    }

    pub fn into_report(mut self, seed: u64) -> RunReport {
        for n in self.nodes.iter_mut().filter(|n| !n.byzantine) {
            if let Some(node) = n.up() {
                let me = node.identity().node_id();
                let others = node
                    .memory()
                    .metas()
                    .iter()
                    .filter(|m| m.origin != me)
                    .count();
                self.stats.useful_deliveries += others as u64;
            }
        }
        RunReport {
            seed,
            scenario: self.sc.name.clone(),
            violations: self.violations,
            stats: self.stats,
            series: self.series,
            link_bytes: self.link_bytes.into_iter().collect(),
        }
    }
}

/// The origins of the contributions a node holds.
pub(crate) fn contributions(node: &SimNodeInner<'_>) -> Vec<[u8; 32]> {
    let items = node.items();
    let mut out = Vec::new();
    let mut head = [0u8; 36];
    for id in items.ids() {
        if items.read(id, 0, &mut head) == 36 && head[2] == Kind::Contribution as u8 {
            let mut o = [0u8; 32];
            o.copy_from_slice(&head[4..36]);
            out.push(o);
        }
    }
    out
}

/// A byzantine member's attack, put straight into its own item set (no check runs there):
/// a record claiming an honest member's origin, a record signed by an outsider, and a
/// contribution that negates the adapter with an enormous n.
fn attack(node: &mut SimNodeInner<'_>, outsiders: &[SigningKey], members: &BTreeSet<[u8; 32]>) {
    let key = SigningKey::from_bytes(&node.identity().key().to_bytes());
    let victim = members
        .iter()
        .find(|m| **m != *node.identity().public())
        .copied();
    let mut forged = Vec::new();
    if let Some(v) = victim {
        forged.push(record_item(&key, cairn_sync::item::node_id(&v), 1));
    }
    if let Some(o) = outsiders.first() {
        forged.push(record_item(
            o,
            cairn_sync::item::node_id(&o.verifying_key().to_bytes()),
            2,
        ));
    }
    let Some(a) = node.adapter() else { return };
    let (base, adapter_key) = (*a.base(), *a.key());
    let n = 1_000_000u32;
    let values: Vec<f32> = a
        .active_params()
        .iter()
        .map(|w| -3.0 * w * n as f32)
        .collect();
    let head = ContributionHead {
        base,
        key: adapter_key,
        n,
        dim: values.len() as u32,
    };
    let mut body = vec![0u8; cairn_sync::item::CONTRIB_HEAD + 4 * values.len()];
    if let Some(len) = contribution_body(&head, &values, &mut body) {
        let mut out = vec![0u8; MAX_ITEM];
        if let Ok(l) = sign_into(&key, Kind::Contribution, &body[..len], &mut out) {
            out.truncate(l);
            forged.push(out);
        }
    }
    for bytes in &forged {
        // The id the item claims: for records the record's content id, else its hash.
        let id = match Item::verify(bytes) {
            Ok(it) => it.id,
            Err(_) => match cairn_memory::Record::decode(&bytes[40..bytes.len() - 64]) {
                Ok((id, _)) => id,
                Err(_) => continue,
            },
        };
        let mut origin = [0u8; 32];
        origin.copy_from_slice(&bytes[4..36]);
        let kind = if bytes[2] == Kind::Contribution as u8 {
            Kind::Contribution
        } else {
            Kind::Record
        };
        let item = Item {
            id,
            kind,
            origin,
            body: &bytes[40..bytes.len() - 64],
            bytes,
        };
        let _ = node.items_mut().insert(&item);
    }
}

/// A signed record item with a 32-wide embedding claiming `origin`.
fn record_item(key: &SigningKey, origin: u64, ts: u64) -> Vec<u8> {
    let emb = [7i8; crate::fleet::DIM];
    let r = cairn_memory::Record {
        origin,
        timestamp_ms: ts,
        label: 3,
        importance: 255,
        meta: [0; 4],
        scale: 0.05,
        embedding: &emb,
        payload: &[],
    };
    let mut body = vec![0u8; r.encoded_len()];
    let _ = r.encode(&mut body);
    let mut out = vec![0u8; MAX_ITEM];
    let n = sign_into(key, Kind::Record, &body, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

/// A bundle an outsider signed, holding one record of its own.
fn outsider_bundle(key: &SigningKey, ts: u64) -> Vec<u8> {
    let item = record_item(
        key,
        cairn_sync::item::node_id(&key.verifying_key().to_bytes()),
        ts,
    );
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let mut w = cairn_sync::bundle::BundleWriter::start(key, 0, &mut sink);
    w.item(&item, &mut sink);
    w.finish(key, &mut sink);
    out
}

//! Scenarios: small declarative TOML files (`sim/scenarios/*.toml`). A run has a faulty
//! phase (`rounds` rounds of `round_ms`: lossy and partitioned links, flapping, power cuts,
//! carriers, byzantine and outside attackers) and then a heal phase (faults stop, every
//! node restarts, links are clean) after which the invariants must hold.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Fleet members, byzantine ones included.
    pub nodes: usize,
    /// The last `byzantine` members forge records, replay frames and offer a poisoned
    /// adapter contribution.
    #[serde(default)]
    pub byzantine: usize,
    /// Devices outside the fleet that deliver bundles they signed themselves.
    #[serde(default)]
    pub outsiders: usize,
    /// Rounds of the faulty phase.
    pub rounds: u32,
    #[serde(default = "default_round_ms")]
    pub round_ms: u64,
    /// Passes of the heal schedule (each: every node meets node + 2^k for every k).
    #[serde(default = "default_heal_passes")]
    pub heal_passes: u32,
    pub observations: Observations,
    #[serde(default)]
    pub learning: Option<Learning>,
    pub link: LinkSpec,
    #[serde(default)]
    pub partitions: Vec<Partition>,
    #[serde(default)]
    pub flapping: Option<Flapping>,
    #[serde(default)]
    pub power: Option<PowerSpec>,
    #[serde(default)]
    pub carriers: Vec<CarrierSpec>,
    pub budget: Budget,
}

fn default_round_ms() -> u64 {
    1000
}
fn default_heal_passes() -> u32 {
    2
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observations {
    /// Inputs each node observes (distinct images, with their labels).
    pub per_node: usize,
    /// Observations happen in rounds `from..to` of the faulty phase.
    pub from: u32,
    pub to: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Learning {
    /// The first `learners` nodes train an adapter at round `at`.
    pub learners: usize,
    pub at: u32,
    #[serde(default = "default_steps")]
    pub steps: u32,
}

fn default_steps() -> u32 {
    40
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Frames lost per direction (each direction draws its own rate around this: see
    /// `asymmetry`).
    pub loss: f64,
    /// A direction's loss is `loss · U[1 − asymmetry, 1 + asymmetry]` (capped at 0.95).
    #[serde(default)]
    pub asymmetry: f64,
    #[serde(default)]
    pub duplicate: f64,
    /// Chance a frame is held back by an extra delay (so it arrives after later ones).
    #[serde(default)]
    pub reorder: f64,
    /// Chance one byte of a frame is flipped.
    #[serde(default)]
    pub corrupt: f64,
    pub latency_ms: [u64; 2],
    pub bandwidth_bps: [u64; 2],
    pub mtu: [usize; 2],
    /// Chance that a pair in range meets in a round.
    pub contact_rate: f64,
    /// Item bytes a node may send per contact in the faulty phase.
    #[serde(default)]
    pub byte_budget: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Node i is in group i mod `groups`; groups do not meet in rounds `from..to`.
    pub groups: usize,
    pub from: u32,
    pub to: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flapping {
    /// Fraction of pairs whose link goes up and down.
    pub fraction: f64,
    /// Rounds up, then as many down.
    pub period: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerSpec {
    /// Expected power cuts per node over the faulty phase.
    pub cuts_per_node: f64,
    /// A cut node stays down this many rounds (inclusive range).
    pub down_rounds: [u32; 2],
    /// The cut lands after a random number of flash units (bytes programmed, sectors
    /// erased) below this, or at the end of the round if fewer are programmed.
    #[serde(default = "default_units")]
    pub max_units: u64,
}

fn default_units() -> u64 {
    4096
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierSpec {
    /// Nodes visited in turn (a USB stick carried by hand).
    pub route: Vec<usize>,
    /// Rounds between visits.
    pub every: u32,
    /// Chance a bundle is pulled out half written (the next node imports what it holds).
    #[serde(default)]
    pub truncate: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Flash of each device, in 4 KiB sectors: memory store, item log, lineage log.
    pub memory_sectors: usize,
    pub items_sectors: usize,
    pub lineage_sectors: usize,
    /// RAM a device may use: the model's and the learner's arenas, the memory store's RAM
    /// side, the item set.
    pub ram_bytes: usize,
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    pub fn load(path: &std::path::Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Scenario::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn check(&self) -> Result<(), String> {
        let honest = self.nodes.saturating_sub(self.byzantine);
        if self.nodes < 2 || honest < 2 {
            return Err("a scenario needs at least two honest nodes".into());
        }
        let p = |v: f64| (0.0..=1.0).contains(&v);
        let l = &self.link;
        if !(p(l.loss) && p(l.duplicate) && p(l.reorder) && p(l.corrupt) && p(l.contact_rate)) {
            return Err("link rates are probabilities in [0, 1]".into());
        }
        if l.mtu[0] < 64 || l.mtu[0] > l.mtu[1] || l.bandwidth_bps[0] == 0 {
            return Err("mtu is [min ≥ 64, max]; bandwidth > 0".into());
        }
        if self.observations.from >= self.observations.to || self.observations.to > self.rounds {
            return Err("observations happen in rounds from..to within the faulty phase".into());
        }
        if let Some(learn) = &self.learning {
            if learn.learners > honest || learn.at >= self.rounds {
                return Err("learners are honest nodes and learn within the faulty phase".into());
            }
        }
        if self
            .carriers
            .iter()
            .any(|c| c.route.iter().any(|&n| n >= self.nodes) || c.every == 0)
        {
            return Err("a carrier visits fleet nodes, every ≥ 1 rounds".into());
        }
        Ok(())
    }

    pub fn honest(&self) -> usize {
        self.nodes - self.byzantine
    }
    pub fn is_byzantine(&self, i: usize) -> bool {
        i >= self.honest()
    }
}

//! cairn-sim: the fleet simulator, cairn's main test of the system.
//!
//! N real nodes (`cairn_node::Node`: the digits model on the CPU backend, a memory store,
//! an adapter with its lineage and gate, a durable item set, real Ed25519/X25519 sync
//! sessions and bundles — no doubles of cairn itself) in one process, driven by a virtual
//! clock and one seeded RNG:
//!
//! - links per pair and per direction ([`link`]): loss, duplication, reordering,
//!   corruption, latency, bandwidth, asymmetric; contact windows; partitions that heal;
//!   links that flap;
//! - sneakernet carriers that move bundles between nodes that never meet (and are
//!   sometimes pulled out half written);
//! - storage faults ([`flash`]): a device's power is cut after a random number of flash
//!   units (a torn write, a half-erased sector); it restarts later and recovers;
//! - attackers: byzantine members (forged records, replayed frames, a poisoned adapter
//!   contribution) and outsiders (bundles they signed).
//!
//! Scenarios are TOML files under `sim/scenarios/` ([`scenario`]). Every run ends with the
//! invariants of [`check`]; a failing run names its seed and the command that replays it
//! ([`replay_command`]). A run is a pure function of (scenario, seed).

pub mod check;
pub mod contact;
pub mod data;
pub mod flash;
pub mod fleet;
pub mod link;
pub mod naive;
pub mod rng;
pub mod scenario;
mod world;

pub use data::Assets;
pub use scenario::Scenario;

use cairn_sync::Reject;

/// The state of the fleet after a round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoundPoint {
    pub round: u32,
    pub time_ms: u64,
    /// Mean share of the fleet's records an honest node holds (down nodes count 0).
    pub share: f64,
    /// Bytes on the wire so far.
    pub wire_bytes: u64,
}

/// Counters of one run.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub rounds: u32,
    pub sessions: u64,
    pub complete_sessions: u64,
    pub wire_bytes: u64,
    /// What naive full-state gossip would have sent on the same contacts, on the wire (a
    /// lower bound: ideal retransmission, no handshake; [`naive`]).
    pub naive_bytes: u64,
    /// Every frame counted once (cairn: first transmissions of data frames), both protocols.
    pub protocol_bytes: u64,
    pub naive_protocol_bytes: u64,
    pub heal_wire_bytes: u64,
    pub heal_naive_bytes: u64,
    pub heal_incomplete: u64,
    pub records_created: u64,
    /// Records that reached an honest node other than their origin (at the end).
    pub useful_deliveries: u64,
    pub power_cuts: u64,
    pub restarts: u64,
    pub carrier_visits: u64,
    pub bundles_truncated: u64,
    pub learned_promoted: u64,
    pub learned_rejected: u64,
    /// Learning rounds with no record to train on (`NodeError::NothingToLearn`).
    pub learned_skipped: u64,
    pub merges_promoted: u64,
    pub merges_rejected: u64,
    /// Refusals inside sessions and of bundles, by reason (`Reject as usize`).
    pub rejected: [u64; Reject::COUNT],
    pub bundle_rejected: [u64; Reject::COUNT],
    /// First round after the observations end in which every honest node held every
    /// record.
    pub converged_round: Option<u32>,
    pub max_ram_bytes: usize,
    pub max_flash_bytes: usize,
}

/// What one run did and found.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    pub scenario: String,
    /// Broken invariants (empty: the run passed).
    pub violations: Vec<String>,
    pub stats: RunStats,
    pub series: Vec<RoundPoint>,
    /// Bytes on the wire per pair of nodes.
    pub link_bytes: Vec<((usize, usize), u64)>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The command that replays `seed` of the scenario file `path`.
pub fn replay_command(path: &str, seed: u64) -> String {
    format!("cargo run --release -p cairn-cli -- sim {path} --seed {seed} --seeds 1")
}

/// Run `sc` from `seed`.
pub fn run(sc: &Scenario, assets: &Assets, seed: u64) -> RunReport {
    let shared = world::shared(sc, assets, seed);
    let mut buffers: Vec<fleet::Buffers> = (0..sc.nodes)
        .map(|_| fleet::Buffers::new(&shared))
        .collect();
    let mut w = match world::World::new(sc, assets, &shared, &mut buffers, seed) {
        Ok(w) => w,
        Err(e) => {
            return RunReport {
                seed,
                scenario: sc.name.clone(),
                violations: vec![format!("setup: {e}")],
                stats: RunStats::default(),
                series: Vec::new(),
                link_bytes: Vec::new(),
            }
        }
    };
    for round in 0..sc.rounds {
        w.faulty_round(round);
    }
    w.heal();
    check::final_checks(&mut w);
    w.into_report(seed)
}

//! `cairn demo`'s field story, on bundled data with the real pieces: three devices
//! (`cairn_node::Node`: the digits base model that knows 0–4, a memory store, an adapter
//! with its gate and lineage, a durable item set) classify digits; A meets a digit the base
//! model never learned, is shown a few labelled examples, learns an adapter and its gate
//! promotes it; A and B meet over a lossy radio (cairn-sim's link model driving real sync
//! sessions); C never meets either and gets B's bundle file by sneakernet, after a tampered
//! copy and an outsider's bundle are refused; every device judges the merged adapter with
//! its own gate, and at the end all three recognize the new digit.
//!
//! [`run`] computes the story ([`FieldReport`]); [`print`] tells it. Every figure but the
//! times is a function of the [`Settings`]: the keys, the observations, the link's faults
//! and the training are all drawn from the seed.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use cairn_node::Outcome;
use cairn_sim::flash::Power;
use cairn_sim::fleet::SimNodeInner;
use cairn_sim::rng::Rng;
use cairn_sync::bundle::ImportReport;
use cairn_sync::item::{HEAD, SIG};
use cairn_sync::Reject;

mod devices;
mod links;
mod print;
#[cfg(test)]
mod tests;

use devices::{accuracy, device, kit, observe, Buffers, Digits};
use links::{carry, radio};
pub use print::print;

/// The story's knobs; [`Settings::default`] is what `cairn demo` tells.
#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    /// The digit the base model never learned (5–9).
    pub new_class: u16,
    /// Labelled examples of it that A is shown.
    pub shots: usize,
    /// Digits 0–4 each device observes, per class.
    pub old_per_class: usize,
    /// The radio between A and B, both directions.
    pub loss: f64,
    pub corrupt: f64,
    pub duplicate: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seed: 1,
            new_class: 7,
            shots: 20,
            old_per_class: 40,
            loss: 0.3,
            corrupt: 0.02,
            duplicate: 0.02,
        }
    }
}

/// Digits below this are the ones the base model learned; the new digit is above.
const OLD_CLASSES: u16 = 5;
/// The radio: small (LoRa-sized) frames; a contact lasts `WINDOW_MS` of radio time, and A
/// and B meet again until a session completes (at most `MAX_CONTACTS` times).
const MTU: usize = 240;
const BANDWIDTH_BPS: u64 = 250_000;
const LATENCY_MS: u64 = 20;
const WINDOW_MS: u64 = 30_000;
const MAX_CONTACTS: u32 = 8;
/// Flash regions of a device, in 4 KiB sectors.
const MEMORY_SECTORS: usize = 32;
const ITEM_SECTORS: usize = 64;
const LINEAGE_SECTORS: usize = 32;

/// Accuracy of a device on the bundled test split.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accuracy {
    /// On digits 0–4 (what the base model learned).
    pub old: f32,
    /// On the new digit.
    pub new: f32,
}

#[derive(Clone, Debug)]
pub struct NodeFigures {
    pub name: &'static str,
    pub before: Accuracy,
    pub after: Accuracy,
    /// Records in its memory at the end.
    pub records: usize,
}

/// What the radio between A and B did, over all contacts.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkFigures {
    pub contacts: u32,
    /// The last contact's sessions both finished the protocol.
    pub complete: bool,
    pub bytes: u64,
    /// Bytes of data frames the first time each was sent (the rest is resends and acks).
    pub first_sends: u64,
    pub frames: u64,
    pub lost: u64,
    pub corrupted: u64,
    /// Retransmission timeouts (each resends the unacknowledged window: go-back-N).
    pub retransmits: u64,
    /// Items that arrived, both directions.
    pub items: u64,
    /// Frames the sessions refused, by reason (`Reject as usize`).
    pub rejected: [u64; Reject::COUNT],
    /// Radio time from the first contact's start to the last one's end.
    pub radio_ms: u64,
}

/// The sneakernet hop from B to C.
#[derive(Clone, Copy, Debug)]
pub struct CarryFigures {
    pub bundle_bytes: usize,
    pub items: u32,
    /// A copy with one bit flipped in A's contribution and a forged record spliced in.
    pub tampered: ImportReport,
    /// Whether C's adapter changed after the tampered copy (it must not).
    pub tampered_changed_adapter: bool,
    /// An outsider's own bundle: refused whole, with this reason.
    pub outsider: Option<Reject>,
    pub genuine: ImportReport,
}

/// Everything the story measured.
#[derive(Clone, Debug)]
pub struct FieldReport {
    pub settings: Settings,
    /// Width of the features memory keeps, and the adapter's arena.
    pub features: usize,
    pub arena_bytes: usize,
    /// A's training run: the gate's verdict, the contribution it signed, and how long.
    pub learned: Outcome,
    pub contribution_bytes: usize,
    pub train_ms: f64,
    pub link: LinkFigures,
    /// B's and C's judgement of the merged adapter.
    pub merge_b: Option<Outcome>,
    pub merge_c: Option<Outcome>,
    pub carry: CarryFigures,
    pub nodes: Vec<NodeFigures>,
    /// Test images of digits 0-4 and of the new digit.
    pub test_old: usize,
    pub test_new: usize,
    /// B's and C's active adapters (the merge of the same contributions) are the same,
    /// bit for bit.
    pub same_merge: bool,
    pub wall_s: f64,
}

/// An import's refusals of items, by reason. `bundle::import` also counts a trailer that
/// is present but fails under `BadSignature`; every bundle of the story ends with its
/// trailer, so an incomplete import is one whose trailer failed, and that count is taken
/// off here.
pub fn item_refusals(r: &ImportReport) -> [u32; Reject::COUNT] {
    let mut out = r.rejected;
    if !r.complete {
        let bad = &mut out[Reject::BadSignature as usize];
        *bad = bad.saturating_sub(1);
    }
    out
}

impl FieldReport {
    /// Forgeries refused: items whose signature fails, whose origin is forged or whose
    /// signer is not a member, and whole bundles from outside the fleet.
    pub fn forgeries_refused(&self) -> u32 {
        let items = |r: &ImportReport| {
            let r = item_refusals(r);
            r[Reject::BadSignature as usize]
                + r[Reject::NotMember as usize]
                + r[Reject::Forged as usize]
        };
        items(&self.carry.tampered)
            + items(&self.carry.genuine)
            + self.carry.outsider.is_some() as u32
    }
}

fn e<E: std::fmt::Debug>(x: E) -> anyhow::Error {
    anyhow!("{x:?}")
}

fn active_params(node: &mut SimNodeInner<'_>) -> Result<Vec<f32>> {
    let a = node.adapter().context("the device has no learner")?;
    Ok(a.active_params().to_vec())
}

/// Run the story.
pub fn run(zoo: &Path, s: &Settings) -> Result<FieldReport> {
    let t = Instant::now();
    if !(OLD_CLASSES..10).contains(&s.new_class) {
        bail!("the new class must be one of 5-9 (the base model knows 0-4)");
    }
    let mut rng = Rng::new(s.seed);
    let kit = kit(zoo, s, &mut rng.fork(1))?;
    let train = Digits::load(zoo, "train")?;
    let test = Digits::load(zoo, "test")?;
    let mut buffers = [
        Buffers::new(&kit)?,
        Buffers::new(&kit)?,
        Buffers::new(&kit)?,
    ];
    let powers = [Power::default(), Power::default(), Power::default()];
    let mut nodes = Vec::with_capacity(3);
    for (i, b) in buffers.iter_mut().enumerate() {
        nodes.push(device(&kit, i, b, &powers[i])?);
    }
    let arena_bytes = nodes[0].adapter().map_or(0, |a| a.arena_bytes());
    observe(&mut nodes, &train, s, &mut rng.fork(2))?;
    let mut before = Vec::new();
    for n in nodes.iter_mut() {
        before.push(accuracy(n, &test, s.new_class)?);
    }

    let t_train = Instant::now();
    let learned = nodes[0].learn(&mut |_, _| {}).map_err(e)?;
    let train_ms = t_train.elapsed().as_secs_f64() * 1e3;
    let contribution_bytes = nodes[0]
        .adapter()
        .map_or(0, |a| a.contribution_len() + HEAD + SIG);

    let [a, b, c] = &mut nodes[..] else {
        bail!("three devices");
    };
    let (link, merge_b) = radio(a, b, (&powers[0], &powers[1]), s, &mut rng.fork(3))?;
    let (carry, merge_c) = carry(&kit, b, c)?;

    let same_merge = active_params(b)? == active_params(c)?;
    let names = ["A", "B", "C"];
    let mut figures = Vec::new();
    for (k, n) in nodes.iter_mut().enumerate() {
        figures.push(NodeFigures {
            name: names[k],
            before: before[k],
            after: accuracy(n, &test, s.new_class)?,
            records: n.memory().len(),
        });
    }
    Ok(FieldReport {
        settings: s.clone(),
        features: kit.fin,
        arena_bytes,
        learned,
        contribution_bytes,
        train_ms,
        link,
        merge_b,
        merge_c,
        carry,
        nodes: figures,
        test_old: test.ys.iter().filter(|&&y| y < OLD_CLASSES).count(),
        test_new: test.ys.iter().filter(|&&y| y == s.new_class).count(),
        same_merge,
        wall_s: t.elapsed().as_secs_f64(),
    })
}

/// `cairn demo`'s field section.
pub fn demo(zoo: &Path) -> Result<()> {
    let r = run(zoo, &Settings::default())?;
    print(&r);
    Ok(())
}

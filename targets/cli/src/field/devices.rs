//! The three devices: what they share (the model, the fleet list, the learning spec),
//! each one's node over simulated flash, what they observe, and how well they classify.

use std::path::Path;

use anyhow::{bail, Context, Result};
use cairn_convert::npy;
use cairn_core::emit::AlignedBytes;
use cairn_core::Model;
use cairn_kernels::CpuBackend;
use cairn_learn::lineage::{model_hash, CheckpointLog};
use cairn_memory::{Config, Store};
use cairn_node::adapter::{self, Adapter, LearnSpec};
use cairn_node::items::DurableItems;
use cairn_node::{Identity, Node, Sensor};
use cairn_sim::flash::{Power, SimFlash};
use cairn_sim::fleet::SimNodeInner;
use cairn_sim::rng::Rng;
use cairn_sync::fleet::sign_fleet;
use cairn_sync::replica::Policy;
use ed25519_dalek::SigningKey;

use super::{e, Accuracy, Settings, ITEM_SECTORS, LINEAGE_SECTORS, MEMORY_SECTORS, OLD_CLASSES};
use crate::learn::{backbone, HyperArgs};

/// What every device shares: the model, the fleet list, the learning spec.
pub(super) struct Kit {
    pub(super) model: AlignedBytes,
    pub(super) features_output: usize,
    pub(super) fin: usize,
    pub(super) spec: LearnSpec,
    pub(super) fleet: Vec<u8>,
    pub(super) authority: [u8; 32],
    pub(super) seeds: [[u8; 32]; 3],
    /// A key outside the fleet.
    pub(super) outsider: SigningKey,
}

/// RAM a device lends its node.
pub(super) struct Buffers {
    pub(super) arena: AlignedBytes,
    pub(super) learn: Vec<u32>,
}

/// The digits split the story uses: inputs and labels.
pub(super) struct Digits {
    pub(super) xs: Vec<Vec<f32>>,
    pub(super) ys: Vec<u16>,
}

impl Digits {
    pub(super) fn load(zoo: &Path, split: &str) -> Result<Digits> {
        let d = zoo.join("digits");
        let x = npy::read(&d.join(format!("{split}_x.npy")))
            .context("bundled digits data (run from the repository root, or pass --zoo)")?;
        let per = x.shape[1..].iter().product::<usize>().max(1);
        let xs: Vec<Vec<f32>> = x.data.chunks(per).map(|c| c.to_vec()).collect();
        let ys: Vec<u16> = npy::read(&d.join(format!("{split}_y.npy")))?
            .data
            .iter()
            .map(|&v| v as u16)
            .collect();
        if xs.len() != ys.len() {
            bail!("digits {split}: {} inputs, {} labels", xs.len(), ys.len());
        }
        Ok(Digits { xs, ys })
    }
}

pub(super) fn kit(zoo: &Path, s: &Settings, rng: &mut Rng) -> Result<Kit> {
    let bb = backbone(zoo)?;
    let m = Model::parse(bb.bytes.as_slice()).map_err(e)?;
    let hp = HyperArgs::default();
    let (mut spec, fin) =
        crate::learn::learn_spec(&m, Some(bb.lora_op), Some(bb.head_op), 10, OLD_CLASSES, &hp)?;
    spec.train.seed = s.seed;
    let seeds = [rng.bytes(), rng.bytes(), rng.bytes()];
    let authority = SigningKey::from_bytes(&rng.bytes());
    let mut members: Vec<[u8; 32]> = seeds
        .iter()
        .map(|k| SigningKey::from_bytes(k).verifying_key().to_bytes())
        .collect();
    let mut fleet = vec![0u8; 10 + 32 * members.len() + 64];
    let n = sign_fleet(&authority, 1, &mut members, &mut fleet).context("fleet list")?;
    fleet.truncate(n);
    Ok(Kit {
        model: bb.bytes,
        features_output: 1,
        fin,
        spec,
        fleet,
        authority: authority.verifying_key().to_bytes(),
        seeds,
        outsider: SigningKey::from_bytes(&rng.bytes()),
    })
}

impl Buffers {
    pub(super) fn new(kit: &Kit) -> Result<Buffers> {
        let m = Model::parse(kit.model.as_slice()).map_err(e)?;
        let need = adapter::arena_bytes(&kit.spec, Some(&m), kit.fin).map_err(e)?;
        Ok(Buffers {
            arena: AlignedBytes::zeroed(m.arena_bytes()),
            learn: vec![0; need.div_ceil(4)],
        })
    }
}

/// A device with erased flash: node `i` of the fleet.
pub(super) fn device<'a>(
    kit: &'a Kit,
    i: usize,
    b: &'a mut Buffers,
    power: &Power,
) -> Result<SimNodeInner<'a>> {
    let identity = Identity::new(&kit.seeds[i], &kit.fleet, &kit.authority).map_err(e)?;
    let m = Model::parse(kit.model.as_slice()).map_err(e)?;
    let base = model_hash(kit.model.as_slice());
    let tag = u32::from_le_bytes([base[0], base[1], base[2], base[3]]);
    let arena = b.arena.as_mut_slice();
    let sensor = Sensor::new(m, CpuBackend, arena, kit.features_output, Some(0), tag).map_err(e)?;
    let flash = |n: usize| SimFlash::new(n, power.clone());
    let config = Config {
        dim: kit.fin,
        max_records: 10_000,
        max_payload: 0,
    };
    let memory = Store::open(flash(MEMORY_SECTORS), config).map_err(e)?.0;
    let items = DurableItems::open(flash(ITEM_SECTORS), Policy::default())
        .map_err(e)?
        .0;
    let mut lineage = CheckpointLog::open(flash(LINEAGE_SECTORS)).map_err(e)?.0;
    let learn: &mut [u8] = bytemuck::cast_slice_mut(b.learn.as_mut_slice());
    let a = Adapter::open(kit.spec, Some(&m), base, kit.fin, learn, &mut lineage).map_err(e)?;
    Ok(Node::new(identity, memory, items)
        .with_sensor(sensor)
        .with_learning(a, lineage))
}

/// Accuracy of `node` (its model and active adapter) on the test digits 0–4 and `new`.
pub(super) fn accuracy(node: &mut SimNodeInner<'_>, test: &Digits, new: u16) -> Result<Accuracy> {
    let (mut old_right, mut old_n, mut new_right, mut new_n) = (0u32, 0u32, 0u32, 0u32);
    for (x, &y) in test.xs.iter().zip(&test.ys) {
        if y >= OLD_CLASSES && y != new {
            continue;
        }
        let right = (node.classify(x).map_err(e)? == y) as u32;
        if y == new {
            (new_right, new_n) = (new_right + right, new_n + 1);
        } else {
            (old_right, old_n) = (old_right + right, old_n + 1);
        }
    }
    let f = |a: u32, n: u32| a as f32 / n.max(1) as f32;
    Ok(Accuracy {
        old: f(old_right, old_n),
        new: f(new_right, new_n),
    })
}

/// Indices of the training split in a seeded order.
fn shuffled(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    order
}

/// Each device observes `old_per_class` digits of each of 0–4 (its own, disjoint from the
/// others'); A is also shown `shots` labelled examples of the new digit.
pub(super) fn observe(
    nodes: &mut [SimNodeInner<'_>],
    train: &Digits,
    s: &Settings,
    rng: &mut Rng,
) -> Result<()> {
    let order = shuffled(train.ys.len(), rng);
    // How many of each digit the devices took so far (each takes its own).
    let mut taken = [0usize; 10];
    let mut next = |class: u16| -> Result<usize> {
        let count = taken.get_mut(class as usize).context("digits are 0-9")?;
        let i = *order
            .iter()
            .filter(|&&i| train.ys[i] == class)
            .nth(*count)
            .with_context(|| format!("the training split has too few {class}s"))?;
        *count += 1;
        Ok(i)
    };
    let mut t = 0u64;
    for (k, node) in nodes.iter_mut().enumerate() {
        let mut plan = Vec::new();
        for _ in 0..s.old_per_class {
            for c in 0..OLD_CLASSES {
                plan.push(next(c)?);
            }
        }
        if k == 0 {
            for _ in 0..s.shots {
                plan.push(next(s.new_class)?);
            }
        }
        for i in plan {
            t += 1000;
            node.observe(&train.xs[i], Some(train.ys[i]), 100, t)
                .map_err(e)?;
        }
    }
    Ok(())
}

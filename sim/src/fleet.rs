//! The simulated devices: each a real `cairn_node::Node` (the digits model on the CPU
//! backend, a memory store, an adapter with its lineage, a durable item set) over three
//! flash regions on one power rail. A power cut takes the node down: everything in RAM is
//! dropped, the flash stays; a restart reopens (recovers) every store from it.

use std::collections::BTreeSet;

use cairn_core::emit::AlignedBytes;
use cairn_core::{Model, OpKind};
use cairn_kernels::CpuBackend;
use cairn_learn::gate::Gate;
use cairn_learn::lineage::{model_hash, CheckpointLog};
use cairn_learn::{Optimizer, TrainConfig};
use cairn_memory::flash::RamFlash;
use cairn_memory::ram::HeapRam;
use cairn_memory::{Config, Store};
use cairn_node::adapter::{self, Adapter, LearnSpec};
use cairn_node::items::DurableItems;
use cairn_node::{Identity, Node, Parts, Sensor};
use cairn_sync::replica::Policy;
use cairn_sync::Store as _;

use crate::flash::{Power, SimFlash, SECTOR};
use crate::scenario::Scenario;

pub struct SimParts;
impl Parts for SimParts {
    type Backend = CpuBackend;
    type MemoryFlash = SimFlash;
    type MemoryRam = HeapRam;
    type LineageFlash = SimFlash;
    type Items = DurableItems<SimFlash>;
}

pub type SimNodeInner<'a> = Node<'a, SimParts>;

/// The features every device keeps (the digits model's output 1).
pub const DIM: usize = 32;

/// What every device shares: the model and the fleet list.
pub struct Shared {
    pub model: AlignedBytes,
    pub fleet: Vec<u8>,
    pub authority: [u8; 32],
    pub seeds: Vec<[u8; 32]>,
    pub spec: LearnSpec,
}

/// RAM a device lends its node (the model's arena, the learner's).
pub struct Buffers {
    pub arena: AlignedBytes,
    pub learn: Vec<u32>,
}

/// How a device learns: a head over the features started from the model's classifier;
/// every class is old, so the gate checks forgetting (and held-out records must exist).
pub fn learn_spec(model: &Model<'_>, steps: u32) -> LearnSpec {
    let head = (0..model.n_ops()).rev().find(|&i| {
        model
            .op(i)
            .is_some_and(|o| o.kind == OpKind::FullyConnected)
    });
    LearnSpec {
        classes: 10,
        rank: 0,
        batch: 16,
        train: TrainConfig {
            optimizer: Optimizer::adam(0.01),
            clip_norm: 5.0,
            weight_decay: 0.0,
            steps,
            replay_per_batch: 8,
            lora_scale: 1.0,
            distill: 1.0,
            seed: 7,
        },
        gate: Gate {
            max_old_drop: 0.05,
            min_new_gain: 0.0,
        },
        new_from: 10,
        lora_op: None,
        head_op: head,
        max_delta_norm: 10.0,
    }
}

impl Buffers {
    pub fn new(shared: &Shared) -> Buffers {
        let m = Model::parse(shared.model.as_slice()).expect("the bundled model parses");
        let need = adapter::arena_bytes(&shared.spec, Some(&m), DIM).expect("spec fits");
        Buffers {
            arena: AlignedBytes::zeroed(m.arena_bytes()),
            learn: vec![0; need.div_ceil(4)],
        }
    }
}

/// What a node that is down keeps: its flash, and what its RAM lent out.
pub struct Parked<'a> {
    identity: Identity<'a>,
    sensor: Option<Sensor<'a, 'a, CpuBackend>>,
    adapter: Option<Adapter<'a>>,
    memory: RamFlash<SECTOR>,
    items: RamFlash<SECTOR>,
    lineage: RamFlash<SECTOR>,
}

pub enum State<'a> {
    Up(Box<SimNodeInner<'a>>),
    Down {
        until: u32,
        parked: Box<Parked<'a>>,
    },
    /// Only while going down or coming up.
    Switching,
}

pub struct SimNode<'a> {
    pub index: usize,
    pub byzantine: bool,
    pub power: Power,
    pub state: State<'a>,
    /// Records this node acknowledged (its memory store returned from the append).
    pub acked: BTreeSet<[u8; 16]>,
    /// (restarts, records the node had applied) when `acked` last took the memory's ids:
    /// while both are unchanged, memory holds no id `acked` lacks (observations add theirs
    /// to `acked` directly), so the sweep after a contact is skipped.
    pub acked_mark: Option<(u32, u32)>,
    pub cuts: u32,
    pub restarts: u32,
    pub last_restart: Option<u32>,
}

fn memory_config() -> Config {
    Config {
        dim: DIM,
        max_records: 100_000,
        max_payload: 0,
    }
}

impl<'a> SimNode<'a> {
    /// A new device with erased flash.
    pub fn new(
        index: usize,
        sc: &Scenario,
        shared: &'a Shared,
        buffers: &'a mut Buffers,
    ) -> Result<SimNode<'a>, String> {
        let e = |x: &dyn std::fmt::Debug| format!("node {index}: {x:?}");
        let power = Power::default();
        let identity = Identity::new(&shared.seeds[index], &shared.fleet, &shared.authority)
            .map_err(|x| e(&x))?;
        let m = Model::parse(shared.model.as_slice()).map_err(|x| e(&x))?;
        let base = model_hash(shared.model.as_slice());
        let tag = u32::from_le_bytes([base[0], base[1], base[2], base[3]]);
        let sensor = Sensor::new(m, CpuBackend, buffers.arena.as_mut_slice(), 1, Some(0), tag)
            .map_err(|x| e(&x))?;
        let b = &sc.budget;
        let flash = |n: usize| SimFlash::new(n, power.clone());
        let memory = Store::open(flash(b.memory_sectors), memory_config())
            .map_err(|x| e(&x))?
            .0;
        let items = DurableItems::open(flash(b.items_sectors), Policy::default())
            .map_err(|x| e(&x))?
            .0;
        let mut lineage = CheckpointLog::open(flash(b.lineage_sectors))
            .map_err(|x| e(&x))?
            .0;
        let learn: &mut [u8] = bytemuck::cast_slice_mut(buffers.learn.as_mut_slice());
        let adapter = Adapter::open(shared.spec, Some(&m), base, DIM, learn, &mut lineage)
            .map_err(|x| e(&x))?;
        let node = Node::new(identity, memory, items)
            .with_sensor(sensor)
            .with_learning(adapter, lineage);
        Ok(SimNode {
            index,
            byzantine: sc.is_byzantine(index),
            power,
            state: State::Up(Box::new(node)),
            acked: BTreeSet::new(),
            acked_mark: None,
            cuts: 0,
            restarts: 0,
            last_restart: None,
        })
    }

    pub fn up(&mut self) -> Option<&mut SimNodeInner<'a>> {
        match &mut self.state {
            State::Up(n) => Some(n),
            _ => None,
        }
    }
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    /// The power failed (or is cut now): drop everything in RAM, keep the flash, stay
    /// down until round `until`.
    pub fn go_down(&mut self, until: u32) {
        self.power.cut();
        let node = match std::mem::replace(&mut self.state, State::Switching) {
            State::Up(node) => node,
            other => {
                self.state = other;
                return;
            }
        };
        self.cuts += 1;
        let d = node.dismantle();
        let parked = Parked {
            identity: d.identity,
            sensor: d.sensor,
            adapter: d.adapter,
            memory: d.memory.into_flash().inner,
            items: d.items.into_flash().inner,
            lineage: d
                .lineage
                .map_or_else(|| RamFlash::new(0), |l| l.into_flash().inner),
        };
        self.state = State::Down {
            until,
            parked: Box::new(parked),
        };
    }

    pub fn restarted_in(&self, round: u32) -> bool {
        self.last_restart == Some(round)
    }

    /// Round the node comes back in, while it is down.
    pub fn down_until(&self) -> Option<u32> {
        match self.state {
            State::Down { until, .. } => Some(until),
            _ => None,
        }
    }

    /// Power back on: recover every store from flash and reassemble the node.
    pub fn restart(&mut self) -> Result<(), String> {
        let p = match std::mem::replace(&mut self.state, State::Switching) {
            State::Down { parked, .. } => *parked,
            other => {
                self.state = other;
                return Ok(());
            }
        };
        let i = self.index;
        let e = |x: &dyn std::fmt::Debug| format!("node {i} after a power cut: {x:?}");
        self.power.restore();
        let on = |f: RamFlash<SECTOR>| SimFlash::reattach(f, self.power.clone());
        let memory = Store::open(on(p.memory), memory_config())
            .map_err(|x| e(&x))?
            .0;
        let items = DurableItems::open(on(p.items), Policy::default())
            .map_err(|x| e(&x))?
            .0;
        let mut lineage = CheckpointLog::open(on(p.lineage)).map_err(|x| e(&x))?.0;
        let mut node = Node::new(p.identity, memory, items);
        if let Some(s) = p.sensor {
            node = node.with_sensor(s);
        }
        if let Some(mut a) = p.adapter {
            a.restart(&mut lineage).map_err(|x| e(&x))?;
            node = node.with_learning(a, lineage);
        }
        self.restarts += 1;
        self.state = State::Up(Box::new(node));
        Ok(())
    }

    /// Bytes of RAM the node uses now (arenas, the memory store's RAM side, the item set).
    pub fn ram_bytes(&mut self, buffers_bytes: usize) -> usize {
        let Some(n) = self.up() else { return 0 };
        let per_record = DIM + std::mem::size_of::<cairn_memory::store::Meta>() + 4 + 24;
        let items: usize = n
            .items()
            .ids()
            .iter()
            .filter_map(|id| n.items().item_len(id))
            .map(|l| l + 16 + 48)
            .sum();
        buffers_bytes + n.memory().len() * per_record + items
    }
}

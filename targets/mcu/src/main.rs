//! cairn on a Cortex-M4F (thumbv7em-none-eabihf), booted in QEMU by `cargo run`: one
//! [`cairn_node::Node`] (no allocator: every buffer is a static it borrows) that
//!
//! 1. **observes** eight frames from an 8×8 sensor read through embedded-hal's I2C trait (a
//!    mock bus in QEMU serves the bundled samples): the digits model (int8, from flash, the
//!    MLP kernel families only) runs on each, its outputs' bytes are logged (the host test
//!    compares them with the host interpreter, byte for byte), and its features are kept as
//!    a record with provenance in a memory store over a flash-shaped region;
//! 2. **learns**: the node's adapter (a head over the features, started from the model's
//!    classifier) trains a candidate on memory, the gate promotes or rejects it, and the
//!    lineage log (a second flash region) records the outcome; a promoted adapter is
//!    signed as a contribution to the fleet and kept on a flash region of its own
//!    (`Contributions`);
//! 3. **exports** what it authored (its records and its contributions) as a signed sync
//!    bundle, streamed with no allocator to the host through semihosting (`bundle=PATH` on
//!    the command line, `target/bundle.cbdl` by default: [`host_paths`]); a sink that fails
//!    fails the run;
//! 4. **applies** a bundle from another fleet member (`peer=PATH`, `target/peer.cbdl` by
//!    default, written by the host test; boards have none and say so): verified records go
//!    into memory, contributions into their flash region, forged and non-member items are
//!    refused; the fleet's merged adapter (every contribution held, summed as every node
//!    sums them) is judged by the gate like a trained one; then it learns again on what it
//!    now knows, through the same gate;
//! 5. **honours a revocation**: the fleet authority's statement revoking that peer
//!    (`revoke=PATH`, `target/revoke.item` by default) is taken through `Node::accept`: the
//!    peer's records leave memory and its contributions the merge, the statement is kept in
//!    a flash region of its own (`Revocations`), and the peer's bundle is then refused
//!    whole.
//!
//! The fleet list it trusts (`assets/fleet.cfl`, built in) verifies against the fleet
//! authority's public key ([`AUTHORITY`]). Logs go out with defmt over semihosting (decoded
//! by `defmt-print`); the exit status is the verdict.
#![no_std]
#![no_main]

use cortex_m as _;
use defmt_semihosting as _;

#[cfg(any(feature = "stm32f4", feature = "nrf52840"))]
mod boards;
mod clock;
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
mod host_paths;
mod sensor;

use cairn_core::{Model, OpKind};
use cairn_kernels::{family, Select};
use cairn_learn::gate::{Gate, Reject as GateReject};
use cairn_learn::lineage::{model_hash, CheckpointLog};
use cairn_learn::{Optimizer, TrainConfig};
use cairn_memory::ram::{FixedRam, Ram, Seg};
use cairn_memory::search::{Filter, Hit, Scoring};
use cairn_memory::slice_flash::SliceFlash;
use cairn_memory::store::Meta;
use cairn_memory::{Config, Id, LogStore, StoreError};
use cairn_node::adapter::{Adapter, LearnSpec, Outcome};
use cairn_node::{Contributions, Identity, Node, NodeError, Parts, Revocations, Sensor};
use cairn_sync::bundle::ImportReport;
use cairn_sync::Reject;
use clock::{exit, insns, paint_stack, stack_used, ticks};
use cortex_m_rt::entry;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

static MODEL: &[u8] = cairn_core::include_model!("../assets/digits.cairn");
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
static INPUTS: &[u8] = cairn_core::include_model!("../assets/inputs.bin");
/// The fleet list (members: this device, its demo peer and a host node), signed by the
/// authority; the host test checks it is what the authority's key makes today.
static FLEET: &[u8] = include_bytes!("../assets/fleet.cfl");
/// The fleet authority's public key (the demo authority: seed `[0xA0; 32]`).
pub const AUTHORITY: [u8; 32] = [
    181, 51, 216, 173, 159, 207, 189, 222, 11, 72, 28, 27, 51, 77, 220, 60, 83, 65, 47, 214, 20,
    86, 78, 126, 90, 253, 2, 3, 104, 211, 130, 195,
];
const LABELS: [u16; 8] = [7, 8, 1, 7, 8, 5, 6, 9];
const N: usize = 8;
/// This demo device's identity seed. A product keeps it in protected storage; the host
/// test derives the same public key to build the fleet list that admits it.
pub const DEVICE_SEED: [u8; 32] = *b"cairn-mcu-demo-device-seed-00001";
const DIM: usize = 32;
/// Records the memory store holds: its own eight and a peer's.
const RECORDS: usize = 24;

/// The node's parts on this chip: the MLP kernels, memory and lineage in flash regions,
/// the store's RAM side fixed, and an item set with no allocator: records go to memory,
/// the fleet's adapter contributions (up to [`CONTRIBUTIONS`]) to a flash region of their
/// own, and the fleet authority's statements (up to [`STATEMENTS`] revoked keys or
/// deleters) to another, so a revoked key stays refused after a restart.
struct Mcu;
impl Parts for Mcu {
    type Backend = Select<{ family::MLP_I8 | family::FAST }>;
    type MemoryFlash = SliceFlash<'static, 1024>;
    type MemoryRam = StaticRam;
    type LineageFlash = SliceFlash<'static, 1024>;
    type Items = Contributions<
        SliceFlash<'static, 1024>,
        Revocations<SliceFlash<'static, 256>, STATEMENTS>,
        CONTRIBUTIONS,
        CONTRIBUTION_BYTES,
    >;
}

/// Authority statements the node holds; one more closes it (every key refused).
const STATEMENTS: usize = 4;
/// Contributions the node keeps (its own two learning rounds, a peer's and a host node's
/// in the demo); more are refused until the region is reformatted.
const CONTRIBUTIONS: usize = 4;
/// Largest contribution item kept: this head's is 1,480 bytes (330 values).
const CONTRIBUTION_BYTES: usize = 1536;
/// The fleet's cap on contributions per origin and adapter key (the replica's default).
const MAX_PER_ORIGIN: u32 = 16;

static mut ARENA: cairn_core::Aligned<[u8; 1024]> = cairn_core::Aligned([0; 1024]);
// Zeroed RAM standing in for flash regions: the memory store erases the sectors it uses;
// the lineage log is erased at boot (RAM does not survive a reset; real flash would).
static mut FLASH: [u8; 4 * 1024] = [0; 4 * 1024];
static mut LINEAGE: [u8; 8 * 1024] = [0; 8 * 1024];
// The authority's statements: 208 of its 256 bytes (`Revocations::flash_bytes`).
static mut AUTHORITY_FLASH: [u8; 256] = [0; 256];
// The contributions: 6,188 of its 7,168 bytes (`Contributions::flash_bytes`).
static mut CONTRIBUTION_FLASH: [u8; 7 * 1024] = [0; 7 * 1024];
/// Where a contribution is signed (its body twice and the item: 2,856 bytes) and where a
/// merge reads each contribution (1,480).
static mut SCRATCH: [u8; 3072] = [0; 3072];
static mut STORE_RAM: StoreRam = FixedRam::new();
// What `cairn_node::adapter::arena_bytes` asks for this spec: 8,424 bytes.
static mut LEARN_ARENA: [u32; 2106] = [0; 2106];
/// The peer's bundle and the revocation, read whole (a bundle trailer's signature covers
/// every byte before it).
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
static mut PEER: [u8; 6144] = [0; 6144];

/// QEMU: the mock sensor bus; the bundles are host files through semihosting, at the paths
/// the host gives on the command line ([`host_paths`]).
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
#[entry]
fn main() -> ! {
    let Some([mut file, peer_file, revoke_file]) = open_host_files() else {
        exit(false)
    };
    let mut sink = |b: &[u8]| file.as_mut().is_some_and(|f| f.write_all(b).is_ok());
    // SAFETY: main runs once; nothing else touches PEER.
    #[allow(static_mut_refs)]
    let buf = unsafe { &mut PEER };
    let (peer, rest) = read_host_file(peer_file, "no peer bundle on the host", buf);
    let (revocation, _) = read_host_file(revoke_file, "no revocation on the host", rest);
    let ok = run(sensor::MockBus::new(INPUTS), &mut sink, peer, revocation);
    drop(file);
    exit(ok)
}

/// The bundle to write (created or truncated), the peer bundle and the revocation to read,
/// opened at the paths the command line gives; `None` (logged) if the command line is
/// unreadable or malformed. Out of line: the command line's buffer is gone before `run`.
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
#[inline(never)]
fn open_host_files() -> Option<[Option<HostFile>; 3]> {
    let mut line = [0u8; host_paths::LINE_BYTES];
    let paths = match host_paths::parse(HostFile::command_line(&mut line)) {
        Ok(p) => p,
        Err(e) => {
            defmt::error!("command line: {}", e);
            return None;
        }
    };
    Some([
        HostFile::open(paths.bundle, true),
        HostFile::open(paths.peer, false),
        HostFile::open(paths.revoke, false),
    ])
}

/// A board: the sensor on the HAL's I2C bus; the bundle goes into a RAM buffer standing in
/// for the removable storage a product would write it to. No peer bundle comes in.
#[cfg(any(feature = "stm32f4", feature = "nrf52840"))]
#[entry]
fn main() -> ! {
    // cortex-m-rt hands `main`'s `static mut` over as a `&'static mut`.
    static mut STICK: [u8; 4096] = [0; 4096];
    let stick: &'static mut [u8; 4096] = STICK;
    let mut at = 0;
    // A bundle that does not fit is a failure (the node's export fails), never a cut
    // bundle reported as written.
    let mut sink = |b: &[u8]| match stick.get_mut(at..at + b.len()) {
        Some(dst) => {
            dst.copy_from_slice(b);
            at += b.len();
            true
        }
        None => false,
    };
    let peer = Peer::Missing("this board reads no peer bundle (removable storage not wired)");
    let revocation = Peer::Missing("this board reads no statement (removable storage not wired)");
    exit(run(boards::sensor_bus(), &mut sink, peer, revocation))
}

/// The host file `file` (if it was there: `missing` says why not) read into the front of
/// `buf`; the rest of `buf`.
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
fn read_host_file<'b>(
    file: Option<HostFile>,
    missing: &'static str,
    buf: &'b mut [u8],
) -> (Peer<'b>, &'b mut [u8]) {
    let Some(mut f) = file else {
        return (Peer::Missing(missing), buf);
    };
    match f.read_all(buf) {
        Some(n) => {
            let (got, rest) = buf.split_at_mut(n);
            (Peer::Bundle(got), rest)
        }
        None => (Peer::Unreadable, buf),
    }
}

/// What came in from a peer or the authority (boards: always `Missing`).
#[cfg_attr(any(feature = "stm32f4", feature = "nrf52840"), allow(dead_code))]
enum Peer<'b> {
    Bundle(&'b [u8]),
    Missing(&'static str),
    /// There, but unreadable or larger than the buffer.
    Unreadable,
}

macro_rules! ensure {
    ($what:literal, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                defmt::error!("{=str}: {}", $what, defmt::Debug2Format(&e));
                return false;
            }
        }
    };
}

fn run<B: embedded_hal::i2c::I2c>(
    bus: B,
    sink: &mut dyn FnMut(&[u8]) -> bool,
    peer: Peer<'_>,
    revocation: Peer<'_>,
) -> bool {
    paint_stack();
    let Some(syst) = clock::start() else {
        return false;
    };
    let syst = &syst;

    let model = ensure!(
        "model refused",
        Model::parse_kinds::<{ family::kinds(family::MLP_I8) }>(MODEL)
    );
    defmt::println!(
        "model: {=usize} bytes of flash, arena {=usize} bytes, {=usize} ops",
        model.flash_bytes(),
        model.arena_bytes(),
        model.n_ops()
    );
    // SAFETY: main runs once; nothing else touches these statics.
    #[allow(static_mut_refs)]
    let (arena, flash, lineage, store_ram, learn_arena) = unsafe {
        (
            &mut ARENA.0,
            &mut FLASH,
            &mut LINEAGE,
            &mut STORE_RAM,
            &mut LEARN_ARENA,
        )
    };
    // SAFETY: as above.
    #[allow(static_mut_refs)]
    let sets = unsafe { (&mut AUTHORITY_FLASH[..], &mut CONTRIBUTION_FLASH[..]) };
    let mut node = ensure!(
        "node",
        assemble(model, arena, flash, lineage, sets, store_ram, learn_arena)
    );
    let tag = ensure!("no sensor", node.sensor().ok_or(())).model_tag();
    defmt::println!(
        "node {=u64}: fleet of {=usize} verified, model tag {=u32:#x}",
        node.identity().node_id(),
        node.identity().fleet().len(),
        tag
    );

    // Observe: the model runs on each frame, its features become a record.
    if !observe(&mut node, bus, syst) {
        return false;
    }

    // Learn: a candidate trained on memory, judged by the gate, settled in the lineage.
    if !learn(&mut node, syst, "own records") {
        return false;
    }
    let right = ensure!("predict", own_right(&mut node));
    defmt::println!(
        "after learning: {=usize}/8 memories classified by the active head",
        right
    );

    // Export: this node's records, signed as they are read, to the sink.
    if !export(&mut node, sink, syst) {
        return false;
    }

    // Apply: a peer's bundle into memory, then what the node now knows through the gate.
    let ok = match peer {
        Peer::Bundle(bytes) => {
            apply(&mut node, bytes, syst)
                && match revocation {
                    Peer::Bundle(statement) => revoke(&mut node, statement, bytes),
                    Peer::Missing(why) => {
                        defmt::println!("revoke: skipped: {=str}", why);
                        true
                    }
                    Peer::Unreadable => {
                        defmt::error!("revoke: the statement does not fit after the bundle");
                        false
                    }
                }
        }
        Peer::Missing(why) => {
            defmt::println!("apply: skipped: {=str}", why);
            true
        }
        Peer::Unreadable => {
            defmt::error!("apply: the peer bundle is unreadable or over 6144 bytes");
            false
        }
    };
    defmt::println!(
        "stack used: {=usize} bytes (size.sh budgets 16384)",
        stack_used()
    );
    ok
}

/// Each frame through the node: the model runs, its outputs are logged, its features kept.
/// (Phases are kept out of line so their buffers never share one stack frame.)
#[inline(never)]
fn observe<B: embedded_hal::i2c::I2c>(
    node: &mut Node<'static, Mcu>,
    bus: B,
    syst: &cortex_m::peripheral::SYST,
) -> bool {
    let mut correct = 0;
    let mut camera = sensor::Grid8x8::new(bus);
    for (i, &label) in LABELS.iter().enumerate() {
        let mut input = [0f32; 64];
        ensure!("sensor read", camera.read_frame(&mut input));
        let t0 = ticks(syst);
        let o = ensure!("observe", node.observe(&input, Some(label), 100, i as u64));
        let t1 = ticks(syst);
        let class = o.class.unwrap_or(u16::MAX);
        correct += (class == label) as u32;
        defmt::println!(
            "infer {=usize}: class {=u16} (label {=u16}), ~{=u32} instructions (model, quantize, append)",
            i,
            class,
            label,
            insns(t0, t1)
        );
        let Some(s) = node.sensor() else {
            return false;
        };
        let (p, f) = (
            ensure!("output", s.output(0)),
            ensure!("output", s.output(1)),
        );
        defmt::println!("out0 {=usize} {=[u8]}", i, p.data);
        defmt::println!("out1 {=usize} {=[u8]}", i, f.data);
    }
    defmt::println!("accuracy on the samples: {=u32}/8", correct);
    // The nearest other memory of the last input.
    let mem = node.memory();
    let last = &mem.embeddings()[(N - 1) * DIM..N * DIM];
    let mut hits = [Hit::default(); 2];
    let n = mem.search_into(last, &Filter::default(), &Scoring::default(), &mut hits);
    let (used, live) = mem.usage();
    defmt::println!(
        "memory: {=usize} records, {=usize} bytes of log ({=usize} live); nearest to the last input: cosine {=f32}, then {=f32}",
        mem.len(),
        used,
        live,
        if n > 0 { hits[0].cosine } else { 0.0 },
        if n > 1 { hits[1].cosine } else { 0.0 }
    );
    true
}

/// What this node authored into `sink`: its records, signed as they are read, and its
/// contributions, streamed from their region (a failing sink fails it).
#[inline(never)]
fn export(
    node: &mut Node<'static, Mcu>,
    sink: &mut dyn FnMut(&[u8]) -> bool,
    syst: &cortex_m::peripheral::SYST,
) -> bool {
    let t0 = ticks(syst);
    let written = ensure!("bundle export", node.export_own(sink));
    defmt::println!(
        "sync bundle: {=u32} signed items written (records, contributions), ~{=u32} instructions",
        written,
        insns(t0, ticks(syst))
    );
    true
}

/// The node over the statics: identity and fleet, the sensor, the memory store, the
/// authority's statements, and the adapter opened on its lineage.
#[inline(never)]
fn assemble(
    model: Model<'static>,
    arena: &'static mut [u8],
    flash: &'static mut [u8],
    lineage: &'static mut [u8],
    (statements, contributions): (&'static mut [u8], &'static mut [u8]),
    store_ram: &'static mut StoreRam,
    learn_arena: &'static mut [u32],
) -> Result<Node<'static, Mcu>, NodeError> {
    let identity = Identity::new(&DEVICE_SEED, FLEET, &AUTHORITY)?;
    let base = model_hash(MODEL);
    let tag = u32::from_le_bytes([base[0], base[1], base[2], base[3]]);
    let spec = learn_spec(&model);
    let sensor = Sensor::new(
        model,
        Select::<{ family::MLP_I8 | family::FAST }>,
        arena,
        1,
        Some(0),
        tag,
    )?;
    let cfg = Config {
        dim: DIM,
        max_records: RECORDS,
        max_payload: 0,
    };
    let (memory, _) = LogStore::open_in(SliceFlash::new(flash), cfg, StaticRam(store_ram))?;
    let mut lf = SliceFlash::<1024>::new(lineage);
    let cap = lf.capacity() as u32;
    lf.erase(0, cap)
        .map_err(|_| NodeError::Learn(cairn_learn::LearnError::Storage))?;
    let (mut log, _) = CheckpointLog::open(lf)?;
    let bytes = words_as_bytes(learn_arena);
    let adapter = Adapter::open(spec, Some(&model), base, DIM, bytes, &mut log)?;
    // A region without its set's header (RAM at boot in QEMU) is formatted on open.
    let statements = Revocations::open(SliceFlash::new(statements), &AUTHORITY)?;
    // SAFETY: assembly runs once, before any phase that uses SCRATCH.
    #[allow(static_mut_refs)]
    let scratch = unsafe { &mut SCRATCH };
    let (items, _) = Contributions::open(
        SliceFlash::new(contributions),
        statements,
        MAX_PER_ORIGIN,
        scratch,
    )?;
    Ok(Node::new(identity, memory, items)
        .with_sensor(sensor)
        .with_learning(adapter, log))
}

/// How this node learns: a head over the 32 features started from the model's own
/// classifier; every class is old, so the gate checks forgetting on held-out records.
/// The host test uses the same spec.
fn learn_spec(m: &Model<'_>) -> LearnSpec {
    let head = (0..m.n_ops())
        .rev()
        .find(|&i| m.op(i).is_some_and(|o| o.kind == OpKind::FullyConnected));
    LearnSpec {
        classes: 10,
        rank: 0,
        batch: N,
        train: TrainConfig {
            optimizer: Optimizer::adam(0.05),
            clip_norm: 5.0,
            weight_decay: 0.0,
            steps: 5,
            replay_per_batch: N,
            lora_scale: 1.0,
            distill: 0.0,
            seed: 1,
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

/// One learning round through the node, its steps and the gate's decision logged.
#[inline(never)]
fn learn(node: &mut Node<'static, Mcu>, syst: &cortex_m::peripheral::SYST, on: &str) -> bool {
    let mut t = ticks(syst);
    let arena = node.adapter().map_or(0, |a| a.arena_bytes());
    let outcome = node.learn(&mut |step, loss| {
        let now = ticks(syst);
        defmt::println!(
            "learn step {=u32}: loss {=f32}, ~{=u32} instructions (arena {=usize} bytes)",
            step,
            loss,
            insns(t, now),
            arena
        );
        t = now;
    });
    let outcome = ensure!("learn", outcome);
    log_outcome("learn", on, &outcome);
    if outcome.promoted() {
        // Offered to the fleet, as a host node does after every promotion.
        // SAFETY: the phases run one at a time; nothing else holds SCRATCH now.
        #[allow(static_mut_refs)]
        let scratch = unsafe { &mut SCRATCH };
        let id = ensure!("contribute", node.contribute_into(scratch));
        if let Some(id) = id {
            defmt::println!(
                "contribution {=[u8]}: signed, {=usize} kept",
                id,
                node.items().len()
            );
        }
    }
    true
}

fn log_outcome(what: &str, on: &str, o: &Outcome) {
    match o {
        Outcome::Promoted { before, after, .. } => defmt::println!(
            "gate {=str} on {=str}: promoted (held-out accuracy {=f32} -> {=f32}, {=u32} held out)",
            what,
            on,
            before.old_acc,
            after.old_acc,
            after.n_old + after.n_new
        ),
        Outcome::Rejected {
            reason,
            before,
            after,
            ..
        } => defmt::println!(
            "gate {=str} on {=str}: rejected ({=str}; held-out accuracy {=f32} -> {=f32}, {=u32} held out)",
            what,
            on,
            // By name: `Debug` of its f32 fields would link core's float formatting.
            match reason {
                GateReject::Forgetting { .. } => "forgetting",
                GateReject::NoGain { .. } => "no gain",
                GateReject::NoHeldOut => "no held-out record",
            },
            before.old_acc,
            after.old_acc,
            after.n_old + after.n_new
        ),
    }
}

/// Own records the active head classifies right.
fn own_right(node: &mut Node<'static, Mcu>) -> Result<usize, NodeError> {
    let me = node.identity().node_id();
    let mut right = 0;
    for i in 0..node.memory().len() {
        let m = node.memory().metas()[i];
        if m.origin != me {
            continue;
        }
        let mut emb = [0i8; DIM];
        emb.copy_from_slice(&node.memory().embeddings()[i * DIM..(i + 1) * DIM]);
        let a = node
            .adapter()
            .ok_or(NodeError::Missing(cairn_node::Part::Learner))?;
        right += (a.predict(&emb, m.scale)? == m.label) as usize;
    }
    Ok(right)
}

/// Import a peer's bundle and apply it: records into memory, contributions kept,
/// refusals counted by reason; the fleet's merged adapter judged by the gate; then a
/// learning round on everything memory now holds.
#[inline(never)]
fn apply(node: &mut Node<'static, Mcu>, bytes: &[u8], syst: &cortex_m::peripheral::SYST) -> bool {
    let t0 = ticks(syst);
    let rep: ImportReport = ensure!("peer bundle refused", node.import_bundle(bytes, 0));
    let t1 = ticks(syst);
    let r = |k: Reject| rep.rejected[k as usize];
    defmt::println!(
        "apply bundle: {=usize} bytes, stored {=u32}, duplicates {=u32}, refused: not-member {=u32}, bad-signature {=u32}, forged {=u32}, other {=u32}; complete {=bool}, ~{=u32} instructions",
        bytes.len(),
        rep.stored,
        rep.duplicates,
        r(Reject::NotMember),
        r(Reject::BadSignature),
        r(Reject::Forged),
        rep.rejected.iter().sum::<u32>()
            - r(Reject::NotMember)
            - r(Reject::BadSignature)
            - r(Reject::Forged),
        rep.complete,
        insns(t0, t1)
    );
    let a = *node.report();
    defmt::println!(
        "apply report: records {=u32}, unusable {=u32}, deleted {=u32}, contributions {=u32}, store failures {=u32}; memory {=usize} records",
        a.records,
        a.unusable,
        a.deleted,
        a.contributions,
        a.store_failures,
        node.memory().len()
    );
    // What memory holds, record by record (the host checks the fleet converged on it).
    for m in node.memory().metas() {
        defmt::println!("holds {=u64} {=[u8]}", m.origin, m.id);
    }
    if !merge(node, "own and peer contributions") {
        return false;
    }
    learn(node, syst, "own and peer records")
}

/// Judge the merge of every contribution the node keeps (when that set changed), and log
/// the merged adapter's digest (the host test checks every node of the fleet computes it).
fn merge(node: &mut Node<'static, Mcu>, on: &str) -> bool {
    // SAFETY: the phases run one at a time; nothing else holds SCRATCH now.
    #[allow(static_mut_refs)]
    let scratch = unsafe { &mut SCRATCH };
    match ensure!("merge", node.apply_with(scratch)) {
        Some(o) => log_outcome("merge", on, &o),
        None => defmt::println!("gate merge: no new contribution set to judge"),
    }
    if let Some(d) = node.merged_digest() {
        defmt::println!(
            "merged {=usize} contributions: {=[u8]}",
            node.items().len(),
            d
        );
    }
    true
}

/// The authority's revocation of the peer, taken through `accept`: the peer's records leave
/// memory, the statement is kept on its flash region, and the peer's bundle is now refused
/// whole (its sender is revoked).
#[inline(never)]
fn revoke(node: &mut Node<'static, Mcu>, statement: &[u8], peer_bundle: &[u8]) -> bool {
    let deleted = node.report().deleted;
    let new = ensure!("revocation refused", node.accept(statement));
    defmt::println!(
        "revocation: new {=bool}, {=usize} held, {=u32} records deleted; memory {=usize} records, {=usize} contributions",
        new,
        node.items().inner().len(),
        node.report().deleted - deleted,
        node.memory().len(),
        node.items().len()
    );
    // The revoked peer's contribution has left the set: the merge is judged again.
    if !merge(node, "contributions after the revocation") {
        return false;
    }
    match node.import_bundle(peer_bundle, 0) {
        Err(NodeError::Sync(Reject::Revoked)) => {
            defmt::println!("peer bundle again: refused (revoked sender)");
            true
        }
        other => {
            defmt::error!(
                "peer bundle again: not refused as revoked: {}",
                defmt::Debug2Format(&other)
            );
            false
        }
    }
}

type StoreRam = FixedRam<RECORDS, DIM, 8, 128>;

/// The memory store's RAM side, left in its static: a `FixedRam` moved into the store
/// would be copied onto the stack with the node (2.3 KiB each move).
struct StaticRam(&'static mut StoreRam);

impl Ram for StaticRam {
    type Buf = <StoreRam as Ram>::Buf;
    const FIXED_DIM: Option<usize> = StoreRam::FIXED_DIM;
    fn new_buf() -> Self::Buf {
        StoreRam::new_buf()
    }
    fn grow_buf(buf: &mut Self::Buf, len: usize) -> bool {
        StoreRam::grow_buf(buf, len)
    }
    fn reset(&mut self, segments: usize) -> Result<(), StoreError> {
        self.0.reset(segments)
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    fn segs(&self) -> &[Seg] {
        self.0.segs()
    }
    fn segs_mut(&mut self) -> &mut [Seg] {
        self.0.segs_mut()
    }
    fn metas(&self) -> &[Meta] {
        self.0.metas()
    }
    fn metas_mut(&mut self) -> &mut [Meta] {
        self.0.metas_mut()
    }
    fn emb(&self) -> &[i8] {
        self.0.emb()
    }
    fn norms(&self) -> &[f32] {
        self.0.norms()
    }
    fn find(&self, id: &Id) -> Option<usize> {
        self.0.find(id)
    }
    fn push(&mut self, m: Meta, emb: &[i8], norm: f32) -> Result<(), StoreError> {
        self.0.push(m, emb, norm)
    }
    fn replace(&mut self, slot: usize, m: Meta, emb: &[i8], norm: f32) {
        self.0.replace(slot, m, emb, norm)
    }
    fn swap_remove(&mut self, slot: usize) {
        self.0.swap_remove(slot)
    }
}

/// A file on the host, through semihosting (QEMU: relative to its working directory).
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
struct HostFile(usize);

#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
impl HostFile {
    /// The host's command line for this program (QEMU: `-semihosting-config arg=...`, or
    /// the kernel's path when no `arg` is given) and a NUL read into `buf`; `None` if the
    /// host has none or it does not fit.
    fn command_line(buf: &mut [u8]) -> Option<&mut [u8]> {
        use cortex_m_semihosting::{nr, syscall1};
        // The host reads the buffer and its size from the block and writes the length back.
        let mut block = [buf.as_mut_ptr() as usize, buf.len()];
        // SAFETY: GET_CMDLINE writes at most `block[1]` bytes into the buffer (its length)
        // and the command line's length into `block[1]`.
        let status = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
        let len = block[1];
        // The line and a NUL after it (the host writes one; set here so it is certain).
        let line = buf.get_mut(..=len).filter(|_| status == 0)?;
        line[len] = 0;
        Some(line)
    }
    /// `name` ends with a NUL byte; `write`: created or truncated, else read.
    fn open(name: &[u8], write: bool) -> Option<HostFile> {
        use cortex_m_semihosting::{nr, syscall};
        let mode = if write {
            nr::open::W_TRUNC_BINARY
        } else {
            nr::open::R_BINARY
        };
        if name.last() != Some(&0) {
            return None;
        }
        // SAFETY: OPEN reads `len` bytes of a NUL-terminated name.
        let fd = unsafe { syscall!(OPEN, name.as_ptr(), mode, name.len() - 1) };
        (fd as isize >= 0).then_some(HostFile(fd))
    }
    fn write_all(&mut self, b: &[u8]) -> Result<(), ()> {
        // SAFETY: WRITE reads `len` bytes from the buffer; it returns how many were not written.
        let left = unsafe { cortex_m_semihosting::syscall!(WRITE, self.0, b.as_ptr(), b.len()) };
        if left == 0 {
            Ok(())
        } else {
            Err(())
        }
    }
    /// The whole file into `buf`; its length, or `None` if it does not fit or a read fails.
    fn read_all(&mut self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: FLEN takes the descriptor OPEN gave.
        let len = unsafe { cortex_m_semihosting::syscall!(FLEN, self.0) } as isize;
        let len = usize::try_from(len).ok()?;
        let dst = buf.get_mut(..len)?;
        // SAFETY: READ writes at most `len` bytes into the buffer; it returns how many it
        // did not read.
        let left =
            unsafe { cortex_m_semihosting::syscall!(READ, self.0, dst.as_mut_ptr(), dst.len()) };
        (left == 0).then_some(len)
    }
}

#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
impl Drop for HostFile {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor OPEN gave.
        unsafe { cortex_m_semihosting::syscall!(CLOSE, self.0) };
    }
}

fn words_as_bytes(a: &'static mut [u32]) -> &'static mut [u8] {
    // A u32 array viewed as bytes: 4-byte aligned, as the learner wants.
    let len = a.len() * 4;
    let ptr = a.as_mut_ptr() as *mut u8;
    // SAFETY: the same memory, u8 has no alignment or validity requirements.
    unsafe { core::slice::from_raw_parts_mut(ptr, len) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Not through semihosting stdout (it would corrupt the defmt stream).
    exit(false)
}

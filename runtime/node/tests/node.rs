//! A node end to end on the digits model (`targets/mcu/assets/digits.cairn`: 10 classes, its
//! 32-wide penultimate features as output 1) and the bundled digits data: observe with
//! provenance, learn through the gate, sync and apply, merge contributions through the gate.

use cairn_core::emit::AlignedBytes;
use cairn_core::{Model, OpKind};
use cairn_kernels::CpuBackend;
use cairn_learn::gate::Gate;
use cairn_learn::lineage::{model_hash, CheckpointLog, LogEntry};
use cairn_learn::{Optimizer, TrainConfig};
use cairn_memory::flash::{FaultyFlash, RamFlash};
use cairn_memory::ram::HeapRam;
use cairn_memory::{Config, Record, Store};
use cairn_node::adapter::{self, Adapter, LearnSpec, Outcome};
use cairn_node::items::DurableItems;
use cairn_node::{
    Contributions, Identity, Items, Memo, Node, NodeError, Parts, Revocations, Sensor,
    SessionSettings,
};
use cairn_sync::item::{contribution_body, sign_into, ContributionHead, Kind, MAX_ITEM};
use cairn_sync::replica::{Policy, Replica};
use cairn_sync::testkit::{fleet_of, Link};
use cairn_sync::{Reject, Role, Store as _};
use ed25519_dalek::SigningKey;

struct Host;
impl Parts for Host {
    type Backend = CpuBackend;
    type MemoryFlash = RamFlash<4096>;
    type MemoryRam = HeapRam;
    type LineageFlash = RamFlash<4096>;
    type Items = Replica;
}

fn asset(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The data of a version 1 `.npy` file (little-endian f4 or i8).
fn npy(rel: &str) -> Vec<u8> {
    let b = asset(rel);
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + hlen..].to_vec()
}

/// The digits test split: 360 inputs of 64 floats and their labels.
fn digits() -> (Vec<Vec<f32>>, Vec<u16>) {
    let x = npy("models/zoo/digits/test_x.npy");
    let y = npy("models/zoo/digits/test_y.npy");
    let xs = x
        .chunks_exact(256)
        .map(|r| {
            r.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect();
    let ys = y.chunks_exact(8).map(|c| c[0] as u16).collect();
    (xs, ys)
}

struct Buffers {
    model: AlignedBytes,
    arena: AlignedBytes,
    learn: Vec<u32>,
    fleet: Vec<u8>,
    authority: [u8; 32],
}

const SEEDS: [[u8; 32]; 3] = [[1; 32], [2; 32], [3; 32]];

fn buffers() -> Buffers {
    let model = AlignedBytes::from_slice(&asset("targets/mcu/assets/digits.cairn"));
    let m = Model::parse(model.as_slice()).unwrap();
    let arena = AlignedBytes::zeroed(m.arena_bytes());
    let auth = SigningKey::from_bytes(&[0xA0; 32]);
    let members: Vec<[u8; 32]> = SEEDS
        .iter()
        .map(|s| SigningKey::from_bytes(s).verifying_key().to_bytes())
        .collect();
    let need = adapter::arena_bytes(&spec(&m), Some(&m), 32).unwrap();
    Buffers {
        arena,
        learn: vec![0; need.div_ceil(4)],
        fleet: fleet_of(&auth, &members),
        authority: auth.verifying_key().to_bytes(),
        model,
    }
}

/// A head over the 32 features, started from the model's own classifier; every class is
/// old (the gate checks forgetting only).
fn spec(m: &Model<'_>) -> LearnSpec {
    let head = (0..m.n_ops())
        .rev()
        .find(|&i| m.op(i).is_some_and(|o| o.kind == OpKind::FullyConnected));
    LearnSpec {
        classes: 10,
        rank: 0,
        batch: 16,
        train: TrainConfig {
            optimizer: Optimizer::adam(0.01),
            clip_norm: 5.0,
            weight_decay: 0.0,
            steps: 60,
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

fn memory() -> Store<RamFlash<4096>> {
    Store::open(
        RamFlash::new(64),
        Config {
            dim: 32,
            max_records: 10_000,
            max_payload: 64,
        },
    )
    .unwrap()
    .0
}

fn node<'a>(b: &'a mut Buffers, seed: &[u8; 32]) -> Node<'a, Host> {
    node_with(b, seed, Replica::new(Policy::default()))
}

/// A device's item set (no allocator): contributions on a flash region, statements on
/// another.
type DeviceItems = Contributions<RamFlash<1024>, Revocations<RamFlash<256>, 4>, 4, 1536>;

struct Device;
impl Parts for Device {
    type Backend = CpuBackend;
    type MemoryFlash = RamFlash<4096>;
    type MemoryRam = HeapRam;
    type LineageFlash = RamFlash<4096>;
    type Items = DeviceItems;
}

fn device_items(authority: &[u8; 32], flash: RamFlash<1024>) -> DeviceItems {
    let statements = Revocations::open(RamFlash::new(1), authority).unwrap();
    let cap = Policy::default().max_per_origin;
    Contributions::open(flash, statements, cap, &mut [0; 1536])
        .unwrap()
        .0
}

fn node_with<'a, P>(b: &'a mut Buffers, seed: &[u8; 32], items: P::Items) -> Node<'a, P>
where
    P: Parts<
        Backend = CpuBackend,
        MemoryFlash = RamFlash<4096>,
        MemoryRam = HeapRam,
        LineageFlash = RamFlash<4096>,
    >,
{
    let Buffers {
        model,
        arena,
        learn,
        fleet,
        authority,
    } = b;
    let m = Model::parse(model.as_slice()).unwrap();
    let base = model_hash(model.as_slice());
    let id = Identity::new(seed, fleet, authority).unwrap();
    let sensor = Sensor::new(m, CpuBackend, arena.as_mut_slice(), 1, Some(0), 0xD161).unwrap();
    let mut lineage = CheckpointLog::open(RamFlash::new(32)).unwrap().0;
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(learn.as_mut_slice());
    let a = Adapter::open(spec(&m), Some(&m), base, 32, bytes, &mut lineage).unwrap();
    Node::new(id, memory(), items)
        .with_sensor(sensor)
        .with_learning(a, lineage)
}

fn ids(n: &Node<'_, Host>) -> Vec<[u8; 16]> {
    let mut v: Vec<_> = n.memory().metas().iter().map(|m| m.id).collect();
    v.sort();
    v
}

#[test]
fn observe_keeps_a_record_with_provenance_and_refuses_non_finite_features() {
    let (xs, ys) = digits();
    let mut b = buffers();
    let mut n = node(&mut b, &SEEDS[0]);
    let mut right = 0;
    for (i, (x, &y)) in xs.iter().zip(&ys).take(20).enumerate() {
        let o = n.observe(x, Some(y), 100, 1000 + i as u64).unwrap();
        right += (o.class == Some(y)) as usize;
        assert_eq!(o.dim, 32);
    }
    assert!(right >= 18, "{right}/20");
    let me = n.identity().node_id();
    let first = n.memory().metas()[0].id;
    let (mut memory, _, _) = n.into_parts();
    let bytes = memory.get(&first).unwrap().unwrap();
    let (_, r) = Record::decode(&bytes).unwrap();
    assert_eq!((r.origin, r.timestamp_ms, r.label), (me, 1000, ys[0]));
    assert_eq!(r.meta[0], 0xD161);
    assert_eq!(r.meta[2], 1, "the label is ground truth");
    assert!(r.meta[1] >= 1, "the model's class + 1");
    // Non-finite features are refused before anything is stored.
    let mut n = node(&mut b, &SEEDS[0]);
    let mut f = [0.5f32; 32];
    f[3] = f32::NAN;
    let memo = Memo {
        label: 1,
        importance: 1,
        time_ms: 0,
        meta: [0; 3],
        payload: &[],
    };
    assert_eq!(n.remember(&f, &memo), Err(NodeError::NonFinite));
    f[3] = f32::INFINITY;
    assert_eq!(n.remember(&f, &memo), Err(NodeError::NonFinite));
    assert_eq!(n.memory().len(), 0);
}

/// Fill a node's memory with the first `n` test inputs (true labels), timestamps from `t0`.
fn observe_all<P: Parts>(n: &mut Node<'_, P>, xs: &[Vec<f32>], ys: &[u16], t0: u64) {
    for (i, (x, &y)) in xs.iter().zip(ys).enumerate() {
        n.observe(x, Some(y), 100, t0 + i as u64).unwrap();
    }
}

#[test]
fn learning_promotes_through_the_gate_and_a_poisoned_batch_is_rejected() {
    let (xs, ys) = digits();
    let mut b = buffers();
    let mut n = node(&mut b, &SEEDS[0]);
    observe_all(&mut n, &xs[..300], &ys[..300], 0);
    let o = n.learn(&mut |_, _| {}).unwrap();
    let Outcome::Promoted { id, before, after } = o else {
        panic!("{o:?}")
    };
    assert!(
        before.old_acc - after.old_acc <= 0.05,
        "{before:?} {after:?}"
    );
    assert_eq!(n.lineage().unwrap().active(), Some(id));
    assert_eq!(
        n.stats().contributions_made,
        1,
        "a promoted adapter is offered"
    );
    // Poison: 60 more records with shifted labels, trained on as the new ones.
    let shifted: Vec<u16> = ys[300..360].iter().map(|y| (y + 3) % 10).collect();
    observe_all(&mut n, &xs[300..360], &shifted, 10_000);
    let active = n.adapter().unwrap().active_params().to_vec();
    let o = n
        .learn_with(&|m| m.timestamp_ms >= 10_000, &mut |_, _| {})
        .unwrap();
    assert!(
        matches!(
            o,
            Outcome::Rejected {
                reason: cairn_learn::Reject::Forgetting { .. },
                ..
            }
        ),
        "{o:?}"
    );
    assert_eq!(n.adapter().unwrap().active_params(), active.as_slice());
    assert_eq!(n.lineage().unwrap().active(), Some(id));
    let mut rejected = 0;
    n.lineage()
        .unwrap()
        .for_each(|e| rejected += matches!(e, LogEntry::Rejected { .. }) as usize)
        .unwrap();
    assert_eq!(rejected, 1);
}

#[test]
fn two_nodes_sync_over_a_lossy_link_and_apply_records_to_memory() {
    let (xs, ys) = digits();
    let (mut ba, mut bb) = (buffers(), buffers());
    let mut a = node(&mut ba, &SEEDS[0]);
    let mut c = node(&mut bb, &SEEDS[1]);
    observe_all(&mut a, &xs[..20], &ys[..20], 0);
    observe_all(&mut c, &xs[20..30], &ys[20..30], 0);
    let link = SessionSettings {
        mtu: 256,
        byte_budget: u64::MAX,
        rto_ms: 100,
    };
    {
        let mut sa = a.session(Role::Initiator, link, &[1; 48], 0).unwrap();
        let mut sc = c.session(Role::Responder, link, &[2; 48], 0).unwrap();
        let mut l = Link {
            loss: 200,
            seed: 9,
            limit: usize::MAX,
        };
        let (done, _) = cairn_sync::testkit::run(&mut sa, &mut sc, &mut l, |_, _, _| true);
        assert!(done);
    }
    assert_eq!(a.memory().len(), 30);
    assert_eq!(ids(&a), ids(&c));
    assert_eq!(c.report().records, 20);
    assert_eq!(a.report().records, 10);
}

#[test]
fn forged_and_non_member_items_are_never_stored() {
    let (xs, ys) = digits();
    let mut b = buffers();
    let mut n = node(&mut b, &SEEDS[0]);
    observe_all(&mut n, &xs[..5], &ys[..5], 0);
    let before = ids(&n);
    let outsider = SigningKey::from_bytes(&[9; 32]);
    let member = SigningKey::from_bytes(&SEEDS[1]);
    let record = |origin: u64, ts: u64| {
        let emb = [3i8; 32];
        let r = Record {
            origin,
            timestamp_ms: ts,
            label: 1,
            importance: 1,
            meta: [0; 4],
            scale: 0.1,
            embedding: &emb,
            payload: &[],
        };
        let mut body = vec![0u8; r.encoded_len()];
        r.encode(&mut body).unwrap();
        body
    };
    let signed = |k: &SigningKey, body: &[u8]| {
        let mut out = vec![0u8; MAX_ITEM];
        let len = sign_into(k, Kind::Record, body, &mut out).unwrap();
        out.truncate(len);
        out
    };
    let member_id = cairn_sync::item::node_id(&member.verifying_key().to_bytes());
    let outsider_id = cairn_sync::item::node_id(&outsider.verifying_key().to_bytes());
    // A bundle by a member carrying: an outsider's record, a record claiming the member's
    // origin signed by the outsider, and one whose bytes were changed after signing.
    let mut tampered = signed(&member, &record(member_id, 3));
    tampered[60] ^= 1;
    let items = [
        signed(&outsider, &record(outsider_id, 1)),
        signed(&outsider, &record(member_id, 2)),
        tampered,
    ];
    let mut bundle = Vec::new();
    let mut sink = |x: &[u8]| bundle.extend_from_slice(x);
    let mut w = cairn_sync::bundle::BundleWriter::start(&member, 0, &mut sink);
    for it in &items {
        w.item(it, &mut sink);
    }
    w.finish(&member, &mut sink);
    let rep = n.import_bundle(&bundle, 0).unwrap();
    assert_eq!(rep.stored, 0);
    assert_eq!(rep.rejected[Reject::NotMember as usize], 1);
    assert_eq!(rep.rejected[Reject::Forged as usize], 1);
    assert_eq!(rep.rejected[Reject::BadSignature as usize], 1);
    // A bundle from an outsider is refused whole.
    let mut outside = Vec::new();
    let mut sink = |x: &[u8]| outside.extend_from_slice(x);
    let w = cairn_sync::bundle::BundleWriter::start(&outsider, 0, &mut sink);
    w.finish(&outsider, &mut sink);
    assert_eq!(
        n.import_bundle(&outside, 0).unwrap_err(),
        NodeError::Sync(Reject::NotMember)
    );
    assert_eq!(ids(&n), before);
}

/// An authority statement made on a device (`cairn sync revoke`): only the authority's
/// is taken; a revocation drops the revoked member's records from memory and its later
/// items are refused; a forged or garbled one changes nothing.
#[test]
fn accept_takes_the_authoritys_revocation_and_nothing_forged() {
    use cairn_sync::item::{statement_body, Action, Statement};
    let (xs, ys) = digits();
    let mut ba = buffers();
    let mut a = node(&mut ba, &SEEDS[0]);
    observe_all(&mut a, &xs[..4], &ys[..4], 0);
    let mut bundle = Vec::new();
    a.export_own(&mut |x| {
        bundle.extend_from_slice(x);
        true
    })
    .unwrap();
    let mut bb = buffers();
    let mut b = node(&mut bb, &SEEDS[1]);
    observe_all(&mut b, &xs[4..6], &ys[4..6], 100);
    assert_eq!(b.import_bundle(&bundle, 0).unwrap().stored, 4);
    assert_eq!(b.memory().len(), 6);
    let statement = |k: &SigningKey, subject: &[u8; 32]| {
        let s = Statement {
            action: Action::Revoke,
            subject: *subject,
            hlc: 7,
        };
        let mut out = vec![0u8; MAX_ITEM];
        let n = sign_into(k, Kind::Authority, &statement_body(&s), &mut out).unwrap();
        out.truncate(n);
        out
    };
    let a_key = SigningKey::from_bytes(&SEEDS[0]).verifying_key().to_bytes();
    let before = ids(&b);
    // A member is not the authority; a garbled statement does not verify.
    let by_member = statement(&SigningKey::from_bytes(&SEEDS[2]), &a_key);
    assert_eq!(
        b.accept(&by_member),
        Err(NodeError::Sync(Reject::NotAuthority))
    );
    let mut garbled = statement(&SigningKey::from_bytes(&[0xA0; 32]), &a_key);
    garbled[40] ^= 1;
    assert!(matches!(b.accept(&garbled), Err(NodeError::Sync(_))));
    assert_eq!(ids(&b), before);
    // The authority's revocation: A's four records leave B's memory, B's own stay.
    let revoke = statement(&SigningKey::from_bytes(&[0xA0; 32]), &a_key);
    assert_eq!(b.accept(&revoke), Ok(true));
    assert_eq!(b.accept(&revoke), Ok(false), "idempotent");
    let me = b.identity().node_id();
    assert_eq!(b.memory().len(), 2);
    assert!(b.memory().metas().iter().all(|m| m.origin == me));
    assert!(b.items().revoked(&a_key));
    // A's later bundles are refused whole.
    assert_eq!(
        b.import_bundle(&bundle, 0).unwrap_err(),
        NodeError::Sync(Reject::Revoked)
    );
}

/// A contribution whose Δ negates the head, signed by a fleet member.
fn poisoned_contribution(victim: &mut Node<'_, Host>, by: &SigningKey) -> Vec<u8> {
    let a = victim.adapter().unwrap();
    let (base, key) = (*a.base(), *a.key());
    let active = a.active_params().to_vec();
    let n = 1_000_000u32;
    let values: Vec<f32> = active.iter().map(|w| -3.0 * w * n as f32).collect();
    let head = ContributionHead {
        base,
        key,
        n,
        dim: values.len() as u32,
    };
    let mut body = vec![0u8; cairn_sync::item::CONTRIB_HEAD + 4 * values.len()];
    let len = contribution_body(&head, &values, &mut body).unwrap();
    let mut out = vec![0u8; MAX_ITEM];
    let il = sign_into(by, Kind::Contribution, &body[..len], &mut out).unwrap();
    let mut bundle = Vec::new();
    let mut sink = |x: &[u8]| bundle.extend_from_slice(x);
    let mut w = cairn_sync::bundle::BundleWriter::start(by, 0, &mut sink);
    w.item(&out[..il], &mut sink);
    w.finish(by, &mut sink);
    bundle
}

/// `a` learns (the gate must promote), then the bundle of everything it holds: its records
/// and the contribution it signed.
fn promoted_bundle(a: &mut Node<'_, Host>) -> Vec<u8> {
    assert!(a.learn(&mut |_, _| {}).unwrap().promoted());
    let mut bundle = Vec::new();
    a.export_bundle(0, &mut |x| {
        bundle.extend_from_slice(x);
        true
    })
    .unwrap();
    bundle
}

#[test]
fn a_merged_contribution_passes_the_gate_and_a_poisoned_merge_is_rejected() {
    let (xs, ys) = digits();
    let (mut ba, mut bb) = (buffers(), buffers());
    let mut a = node(&mut ba, &SEEDS[0]);
    let mut c = node(&mut bb, &SEEDS[1]);
    observe_all(&mut a, &xs[..300], &ys[..300], 0);
    observe_all(&mut c, &xs[100..200], &ys[100..200], 0);
    let bundle = promoted_bundle(&mut a);
    let rep = c.import_bundle(&bundle, 0).unwrap();
    assert!(rep.complete && rep.stored >= 1, "{rep:?}");
    assert_eq!(c.report().contributions, 1);
    let o = c.apply().unwrap().expect("a new contribution set to judge");
    assert!(o.promoted(), "{o:?}");
    assert!(c.apply().unwrap().is_none(), "the same set is judged once");
    let merged = c.adapter().unwrap().active_params().to_vec();
    // A fleet member offers a contribution that negates the head: the merge is refused
    // and the active adapter stays bit for bit.
    let byzantine = SigningKey::from_bytes(&SEEDS[2]);
    let poison = poisoned_contribution(&mut c, &byzantine);
    c.import_bundle(&poison, 0).unwrap();
    let o = c.apply().unwrap().expect("the set changed");
    assert!(!o.promoted(), "{o:?}");
    assert_eq!(c.adapter().unwrap().active_params(), merged.as_slice());
    // Node a, with the same contributions, merges to the same bits.
    let mut back = Vec::new();
    c.export_bundle(0, &mut |x| {
        back.extend_from_slice(x);
        true
    })
    .unwrap();
    a.import_bundle(&back, 0).unwrap();
    a.apply().unwrap();
    assert_eq!(a.merged_digest(), c.merged_digest());
}

#[test]
fn a_device_keeping_contributions_on_flash_merges_to_the_hosts_bits() {
    let (xs, ys) = digits();
    let (mut ba, mut bd) = (buffers(), buffers());
    let auth = ba.authority;
    let mut a = node(&mut ba, &SEEDS[0]);
    let mut d: Node<'_, Device> =
        node_with(&mut bd, &SEEDS[1], device_items(&auth, RamFlash::new(7)));
    observe_all(&mut a, &xs[..300], &ys[..300], 0);
    observe_all(&mut d, &xs[100..200], &ys[100..200], 0);
    let bundle = promoted_bundle(&mut a);
    d.import_bundle(&bundle, 0).unwrap();
    assert_eq!(d.items().len(), 1, "the host's contribution kept on flash");
    let mut scratch = vec![0u8; d.contribution_buffer_len().unwrap()];
    let o = d.apply_with(&mut scratch).unwrap().expect("a set to judge");
    assert!(o.promoted(), "{o:?}");
    assert!(d.apply_with(&mut scratch).unwrap().is_none(), "judged once");
    a.apply().unwrap();
    assert_eq!(d.merged_digest(), a.merged_digest());
    // A poisoned contribution: both refuse the merge, both compute the same merged bits.
    let byzantine = SigningKey::from_bytes(&SEEDS[2]);
    let poison = poisoned_contribution(&mut a, &byzantine);
    let active = d.adapter().unwrap().active_params().to_vec();
    d.import_bundle(&poison, 0).unwrap();
    a.import_bundle(&poison, 0).unwrap();
    assert!(!d.apply_with(&mut scratch).unwrap().unwrap().promoted());
    assert!(!a.apply().unwrap().unwrap().promoted());
    assert_eq!(d.adapter().unwrap().active_params(), active.as_slice());
    assert_eq!(d.merged_digest(), a.merged_digest());
    // The device's own export carries what it authored: its records, and the contribution
    // it signed when its own learning was promoted (`learn` signs it with an allocator;
    // firmware calls `contribute_into`).
    let own_records = d.memory().len() as u32 - 300;
    let own = d.learn(&mut |_, _| {}).unwrap().promoted() as u32;
    assert_eq!(d.items().len() as u32, 2 + own);
    let mut out = Vec::new();
    let n = d
        .export_own(&mut |x| {
            out.extend_from_slice(x);
            true
        })
        .unwrap();
    assert_eq!(n, own_records + own);
    let rep = a.import_bundle(&out, 0).unwrap();
    assert_eq!(rep.stored, own_records + own, "{rep:?}");
    assert_eq!(a.items().ids().len(), 300 + 100 + 2 + own as usize);
    // After a restart the device reloads the same contributions from flash.
    let held = d.items().ids().to_vec();
    let (flash, _) = d.dismantle().items.into_parts();
    let items = device_items(&auth, flash);
    assert_eq!(items.ids(), held.as_slice());
}

#[test]
fn an_export_into_a_full_sink_fails_instead_of_passing_for_whole() {
    let (xs, ys) = digits();
    let mut b = buffers();
    let mut n = node(&mut b, &SEEDS[0]);
    observe_all(&mut n, &xs[..40], &ys[..40], 0);
    let mut room = 4096usize;
    let r = n.export_own(&mut |x| {
        let ok = x.len() <= room;
        room = room.saturating_sub(x.len());
        ok
    });
    assert_eq!(r, Err(NodeError::Sync(Reject::TooLarge)));
    let mut all = Vec::new();
    assert_eq!(
        n.export_own(&mut |x| {
            all.extend_from_slice(x);
            true
        }),
        Ok(40)
    );
    assert!(all.len() > 4096);
}

#[test]
fn durable_items_keep_every_acknowledged_item_across_power_cuts() {
    let member = SigningKey::from_bytes(&SEEDS[0]);
    let items: Vec<Vec<u8>> = (0..30)
        .map(|t| cairn_sync::testkit::signed_record(&member, t, 5, &[], 32))
        .collect();
    // Cut the power at many points of the workload; after each restart every item whose
    // insert returned Ok is there, and the set keeps working.
    for cut in (0..40_000u64).step_by(997) {
        let mut flash = FaultyFlash::new(RamFlash::<4096>::new(16)).cut_after(cut);
        let mut acked = Vec::new();
        // The cut may come while the log is being created: then nothing was acknowledged.
        if let Ok((mut d, _)) = DurableItems::open(flash.clone(), Policy::default()) {
            for b in &items {
                let it = cairn_sync::Item::verify(b).unwrap();
                if d.insert(&it) == Ok(true) {
                    acked.push(it.id);
                } else {
                    break;
                }
            }
            flash = d.into_flash();
        }
        let ram = flash.inner;
        let (d, _) = DurableItems::open(FaultyFlash::new(ram), Policy::default()).unwrap();
        for id in &acked {
            assert!(d.knows(id), "cut {cut}: lost an acknowledged item");
        }
    }
}

/// The owning form keeps its parts between uses: memories and the promoted adapter are
/// there the next time the node is assembled.
#[test]
fn a_host_node_keeps_its_parts_between_uses() {
    use cairn_node::owned::HostNode;
    let (xs, ys) = digits();
    let b = buffers();
    let m = Model::parse(b.model.as_slice()).unwrap();
    let lineage = CheckpointLog::open(RamFlash::new(32)).unwrap().0;
    let mut h = HostNode::<Host>::new(
        SEEDS[0],
        b.fleet.clone(),
        b.authority,
        memory(),
        Replica::new(Policy::default()),
    )
    .unwrap()
    .with_model(b.model.as_slice(), 1, Some(0))
    .unwrap()
    .with_learning(spec(&m), 32, lineage)
    .unwrap();
    h.with(|n| observe_all(n, &xs[..300], &ys[..300], 0))
        .unwrap();
    let id = h
        .with(|n| match n.learn(&mut |_, _| {}).unwrap() {
            Outcome::Promoted { id, .. } => id,
            o => panic!("{o:?}"),
        })
        .unwrap();
    let (len, active, contributions) = h
        .with(|n| {
            let a = n.adapter().unwrap().active_id();
            (n.memory().len(), a, n.stats().contributions_made)
        })
        .unwrap();
    assert_eq!((len, active), (300, id));
    assert_eq!(contributions, 1, "the counters are carried too");
}

/// `classify` is the active adapter's view of the model's features (quantized as memory
/// keeps them), or the model's own class without a learner; it keeps nothing.
#[test]
fn classify_reads_the_active_adapter_and_keeps_nothing() {
    let (xs, ys) = digits();
    let mut b = buffers();
    let mut n = node(&mut b, &SEEDS[0]);
    observe_all(&mut n, &xs[..300], &ys[..300], 0);
    assert!(n.learn(&mut |_, _| {}).unwrap().promoted());
    let kept = n.memory().len();
    let mut right = 0;
    for (x, &y) in xs[300..].iter().zip(&ys[300..]) {
        let class = n.classify(x).unwrap();
        let mut f = [0f32; 32];
        n.sensor().unwrap().sense(x, &mut f).unwrap();
        let (q, scale) = cairn_node::features::quantize_vec(&f).unwrap();
        assert_eq!(class, n.adapter().unwrap().predict(&q, scale).unwrap());
        right += (class == y) as usize;
    }
    assert!(right >= 54, "{right}/60");
    assert_eq!(n.memory().len(), kept);
    // Without a learner: the model's class output, as `observe` reports it.
    let Buffers {
        model,
        arena,
        fleet,
        authority,
        ..
    } = &mut b;
    let m = Model::parse(model.as_slice()).unwrap();
    let sensor = Sensor::new(m, CpuBackend, arena.as_mut_slice(), 1, Some(0), 1).unwrap();
    let id = Identity::new(&SEEDS[1], fleet, authority).unwrap();
    let mut plain: Node<'_, Host> =
        Node::new(id, memory(), Replica::new(Policy::default())).with_sensor(sensor);
    for x in &xs[..20] {
        let class = plain.classify(x).unwrap();
        assert_eq!(Some(class), plain.observe(x, None, 1, 0).unwrap().class);
    }
}

/// A learning round with no record to train on (an empty memory) is `NothingToLearn` and
/// changes nothing; once records arrive the same node learns.
#[test]
fn a_round_with_nothing_to_train_on_is_refused_and_changes_nothing() {
    let (xs, ys) = digits();
    let mut b = buffers();
    let mut n = node(&mut b, &SEEDS[0]);
    let active = n.adapter().unwrap().active_id();
    let params = n.adapter().unwrap().active_params().to_vec();
    assert_eq!(
        n.learn(&mut |_, _| {}).unwrap_err(),
        NodeError::NothingToLearn
    );
    assert_eq!(n.adapter().unwrap().active_id(), active);
    assert_eq!(n.adapter().unwrap().active_params(), &params[..]);
    assert_eq!(n.memory().len(), 0);
    observe_all(&mut n, &xs[..300], &ys[..300], 0);
    assert!(n.learn(&mut |_, _| {}).unwrap().promoted());
}

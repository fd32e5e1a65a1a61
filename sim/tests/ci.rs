//! The simulator in CI: many seeds of the 20-node scenario (30% loss, partitions, flapping,
//! power cuts, a carrier, a byzantine member, an outsider); every invariant must hold on
//! every seed. `CAIRN_SIM_SEEDS` sets how many (default 200), `CAIRN_SEED` the first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use cairn_sim::{replay_command, run, Assets, RunReport, Scenario};

fn scenario(name: &str) -> (String, Scenario) {
    let rel = format!("sim/scenarios/{name}.toml");
    let path = cairn_sim::data::repo_root().join(&rel);
    (rel, Scenario::load(&path).unwrap())
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run seeds `first..first + count` on every core; the reports in seed order.
fn run_seeds(sc: &Scenario, assets: &Assets, first: u64, count: u64) -> Vec<RunReport> {
    let next = AtomicU64::new(first);
    let out = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + count {
                    break;
                }
                let r = run(sc, assets, seed);
                out.lock().unwrap().push(r);
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|r| r.seed);
    v
}

#[test]
fn fleet20_holds_every_invariant_on_every_seed() {
    let (rel, sc) = scenario("fleet20");
    let assets = Assets::load(&cairn_sim::data::repo_root()).unwrap();
    let first = env("CAIRN_SEED", 1);
    let count = env("CAIRN_SIM_SEEDS", 200);
    let t = Instant::now();
    let reports = run_seeds(&sc, &assets, first, count);
    let secs = t.elapsed().as_secs_f64();
    let failed: Vec<&RunReport> = reports.iter().filter(|r| !r.passed()).collect();
    let sum = |f: &dyn Fn(&RunReport) -> u64| reports.iter().map(f).sum::<u64>();
    let wire = sum(&|r| r.stats.wire_bytes);
    let naive = sum(&|r| r.stats.naive_bytes);
    let proto = sum(&|r| r.stats.protocol_bytes);
    let naive_proto = sum(&|r| r.stats.naive_protocol_bytes);
    println!(
        "protocol bytes: cairn {proto}, naive gossip {naive_proto} ({:.2}x); heal phase on clean links: cairn {}, naive {}",
        naive_proto as f64 / proto.max(1) as f64,
        sum(&|r| r.stats.heal_wire_bytes),
        sum(&|r| r.stats.heal_naive_bytes),
    );
    println!(
        "{count} seeds of {} in {secs:.1} s: {} sessions ({} complete), {} power cuts, {} merges promoted / {} rejected; wire {} bytes, naive gossip at least {} bytes ({:.2}x)",
        sc.name,
        sum(&|r| r.stats.sessions),
        sum(&|r| r.stats.complete_sessions),
        sum(&|r| r.stats.power_cuts),
        sum(&|r| r.stats.merges_promoted),
        sum(&|r| r.stats.merges_rejected),
        wire,
        naive,
        naive as f64 / wire.max(1) as f64
    );
    for r in failed.iter().take(5) {
        eprintln!("seed {} failed: {}", r.seed, r.violations.join("; "));
        eprintln!("  replay: {}", replay_command(&rel, r.seed));
    }
    assert!(
        failed.is_empty(),
        "{} of {count} seeds broke an invariant",
        failed.len()
    );
}

/// A run is a function of (scenario, seed): the same seed gives the same run, bit for bit.
#[test]
fn a_seed_replays_bit_for_bit() {
    let (_, sc) = scenario("small");
    let assets = Assets::load(&cairn_sim::data::repo_root()).unwrap();
    let a = run(&sc, &assets, 3);
    let b = run(&sc, &assets, 3);
    assert!(a.passed(), "{:?}", a.violations);
    assert!(a.stats.sessions > 0 && a.stats.records_created > 0);
    assert_eq!(format!("{:?}", a.stats), format!("{:?}", b.stats));
    assert_eq!(a.series, b.series);
    assert_eq!(a.link_bytes, b.link_bytes);
    let c = run(&sc, &assets, 4);
    assert_ne!(
        format!("{:?}", a.stats),
        format!("{:?}", c.stats),
        "another seed, another run"
    );
}

//! `cairn sim SCENARIO --seeds N`: run the fleet simulator (`cairn-sim`) over many seeds
//! on every core, with a progress bar; print a summary table and write SVG plots
//! (convergence over time, bytes per link) and the summary as JSON.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use cairn_sim::{replay_command, Assets, RunReport, Scenario};
use cairn_sync::Reject;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args, Clone, Debug)]
pub struct SimArgs {
    /// A scenario file (see sim/scenarios/).
    pub scenario: PathBuf,
    /// How many seeds to run.
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    /// The first seed (with `--seeds 1`: the one to replay).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the plots and the summary go.
    #[arg(long, default_value = "target/sim")]
    pub out: PathBuf,
    /// The repository root (the model and the digits data).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

fn e<E: std::fmt::Debug>(x: E) -> anyhow::Error {
    anyhow!("{x:?}")
}

pub fn sim(a: &SimArgs) -> Result<()> {
    let sc = Scenario::load(&a.scenario).map_err(|x| anyhow!(x))?;
    let root = a.root.clone().unwrap_or_else(cairn_sim::data::repo_root);
    let assets = Assets::load(&root).map_err(|x| anyhow!(x))?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let bar = ProgressBar::new(a.seeds).with_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} seeds [{elapsed}]").map_err(e)?,
    );
    bar.set_message(format!("{} ({} nodes)", sc.name, sc.nodes));
    let t = Instant::now();
    let next = AtomicU64::new(a.seed);
    let reports = Mutex::new(Vec::new());
    let end = a.seed + a.seeds;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let t0 = Instant::now();
                let r = cairn_sim::run(&sc, &assets, seed);
                let secs = t0.elapsed().as_secs_f64();
                if !r.passed() {
                    bar.println(format!("seed {seed} FAILED: {}", r.violations.join("; ")));
                }
                reports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((r, secs));
                bar.inc(1);
            });
        }
    });
    bar.finish();
    let wall = t.elapsed().as_secs_f64();
    let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    reports.sort_by_key(|r| r.0.seed);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let summary = summarize(&sc, &reports, wall, threads);
    print!("{summary}");
    std::fs::write(a.out.join(format!("{}.txt", sc.name)), &summary)?;
    let conv = a.out.join(format!("{}-convergence.svg", sc.name));
    plot_convergence(&conv, &sc, &reports)?;
    let links = a.out.join(format!("{}-links.svg", sc.name));
    plot_links(&links, &reports)?;
    println!("plots: {}, {}", conv.display(), links.display());
    let failed: Vec<&cairn_sim::RunReport> = reports
        .iter()
        .map(|r| &r.0)
        .filter(|r| !r.passed())
        .collect();
    if !failed.is_empty() {
        // Said again here: the progress bar's lines are not drawn when stderr is not a
        // terminal (a log file, CI).
        let path = a.scenario.display().to_string();
        for r in failed.iter().take(5) {
            eprintln!("seed {} FAILED: {}", r.seed, r.violations.join("; "));
            eprintln!("replay seed {}: {}", r.seed, replay_command(&path, r.seed));
        }
        bail!(
            "{} of {} seeds broke an invariant",
            failed.len(),
            reports.len()
        );
    }
    Ok(())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The summary table.
fn summarize(sc: &Scenario, reports: &[(RunReport, f64)], wall: f64, threads: usize) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let n = reports.len().max(1) as f64;
    let sum = |f: &dyn Fn(&RunReport) -> u64| reports.iter().map(|r| f(&r.0)).sum::<u64>();
    let passed = reports.iter().filter(|r| r.0.passed()).count();
    let secs: Vec<f64> = reports.iter().map(|r| r.1).collect();
    let conv: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.0.stats.converged_round)
        .map(|c| c as f64 * sc.round_ms as f64 / 1000.0)
        .collect();
    let wire = sum(&|r| r.stats.wire_bytes);
    let naive = sum(&|r| r.stats.naive_bytes);
    let proto = sum(&|r| r.stats.protocol_bytes);
    let naive_proto = sum(&|r| r.stats.naive_protocol_bytes);
    let useful = sum(&|r| r.stats.useful_deliveries);
    let rej =
        |k: Reject| sum(&|r| r.stats.rejected[k as usize] + r.stats.bundle_rejected[k as usize]);
    let row = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "  {k:<38} {v}");
    };
    let _ = writeln!(
        o,
        "\n{} — {} nodes ({} byzantine, {} outsiders), {} faulty rounds of {} ms",
        sc.name, sc.nodes, sc.byzantine, sc.outsiders, sc.rounds, sc.round_ms
    );
    row(
        &mut o,
        "seeds passed",
        format!("{passed} / {}", reports.len()),
    );
    row(
        &mut o,
        "wall time",
        format!(
            "{wall:.1} s on {threads} threads ({:.2} s per seed per thread)",
            mean(&secs)
        ),
    );
    row(
        &mut o,
        "sessions (complete)",
        format!(
            "{:.0} ({:.0}) per seed",
            sum(&|r| r.stats.sessions) as f64 / n,
            sum(&|r| r.stats.complete_sessions) as f64 / n
        ),
    );
    row(
        &mut o,
        "records created",
        format!(
            "{:.0} per seed",
            sum(&|r| r.stats.records_created) as f64 / n
        ),
    );
    row(
        &mut o,
        "bytes on the wire",
        format!("{:.0} per seed", wire as f64 / n),
    );
    row(
        &mut o,
        "bytes per useful record",
        format!(
            "{:.0} (wire / records that reached another honest node)",
            wire as f64 / useful.max(1) as f64
        ),
    );
    row(
        &mut o,
        "naive gossip, wire (lower bound)",
        format!("{:.2}x cairn's", naive as f64 / wire.max(1) as f64),
    );
    row(
        &mut o,
        "naive gossip, protocol bytes",
        format!("{:.2}x cairn's", naive_proto as f64 / proto.max(1) as f64),
    );
    row(
        &mut o,
        "heal phase (clean links): cairn / naive",
        format!(
            "{} / {} bytes",
            sum(&|r| r.stats.heal_wire_bytes),
            sum(&|r| r.stats.heal_naive_bytes)
        ),
    );
    if conv.is_empty() {
        row(
            &mut o,
            "time to convergence",
            "not reached before the heal phase".into(),
        );
    } else {
        let max = conv.iter().copied().fold(0.0, f64::max);
        row(&mut o, "time to convergence", format!("mean {:.1} s, max {max:.1} s of virtual time ({} of {} seeds converged during the faulty phase or heal)", mean(&conv), conv.len(), reports.len()));
    }
    row(
        &mut o,
        "power cuts / restarts",
        format!(
            "{} / {}",
            sum(&|r| r.stats.power_cuts),
            sum(&|r| r.stats.restarts)
        ),
    );
    row(
        &mut o,
        "carrier visits (bundles cut short)",
        format!(
            "{} ({})",
            sum(&|r| r.stats.carrier_visits),
            sum(&|r| r.stats.bundles_truncated)
        ),
    );
    row(
        &mut o,
        "adapters learned: promoted / rejected / nothing to learn",
        format!(
            "{} / {} / {}",
            sum(&|r| r.stats.learned_promoted),
            sum(&|r| r.stats.learned_rejected),
            sum(&|r| r.stats.learned_skipped)
        ),
    );
    row(
        &mut o,
        "merges: promoted / rejected",
        format!(
            "{} / {}",
            sum(&|r| r.stats.merges_promoted),
            sum(&|r| r.stats.merges_rejected)
        ),
    );
    row(
        &mut o,
        "refused: forged / not member / bad sig",
        format!(
            "{} / {} / {}",
            rej(Reject::Forged),
            rej(Reject::NotMember),
            rej(Reject::BadSignature)
        ),
    );
    row(
        &mut o,
        "refused: auth failed / replay / malformed",
        format!(
            "{} / {} / {}",
            rej(Reject::AuthFailed),
            rej(Reject::Replay),
            rej(Reject::Malformed)
        ),
    );
    row(
        &mut o,
        "largest RAM / flash in use",
        format!(
            "{} / {} bytes",
            reports
                .iter()
                .map(|r| r.0.stats.max_ram_bytes)
                .max()
                .unwrap_or(0),
            reports
                .iter()
                .map(|r| r.0.stats.max_flash_bytes)
                .max()
                .unwrap_or(0)
        ),
    );
    o
}

/// Convergence over virtual time: each seed's share of records held (mean over honest
/// nodes).
fn plot_convergence(path: &Path, sc: &Scenario, reports: &[(RunReport, f64)]) -> Result<()> {
    use plotters::prelude::*;
    let max_t = reports
        .iter()
        .flat_map(|r| r.0.series.iter().map(|p| p.time_ms))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1000.0;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("cairn sim {}: convergence", sc.name),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max_t, 0f64..1.02)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("virtual time (s); heal phase after the faulty rounds")
        .y_desc("records held (share)")
        .draw()
        .map_err(e)?;
    for (i, (r, _)) in reports.iter().take(50).enumerate() {
        let color = Palette99::pick(i).to_rgba().mix(0.6);
        chart
            .draw_series(LineSeries::new(
                r.series
                    .iter()
                    .map(|p| (p.time_ms as f64 / 1000.0, p.share)),
                color.stroke_width(1),
            ))
            .map_err(e)?;
    }
    let heal = sc.rounds as f64 * sc.round_ms as f64 / 1000.0;
    chart
        .draw_series(LineSeries::new(
            [(heal, 0.0), (heal, 1.02)],
            BLACK.stroke_width(1),
        ))
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Bytes per link (pair of nodes), largest first, over all seeds.
fn plot_links(path: &Path, reports: &[(RunReport, f64)]) -> Result<()> {
    use plotters::prelude::*;
    let mut per: std::collections::BTreeMap<(usize, usize), u64> = Default::default();
    for (r, _) in reports {
        for (k, v) in &r.link_bytes {
            *per.entry(*k).or_insert(0) += v;
        }
    }
    let mut v: Vec<((usize, usize), u64)> = per.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    let seeds = reports.len().max(1) as f64;
    let top = v.len().min(60);
    let max = v
        .first()
        .map_or(1.0, |x| x.1 as f64 / seeds / 1024.0)
        .max(1e-3);
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("bytes per link: the {top} busiest pairs (mean per seed)"),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0usize..top.max(1), 0f64..max * 1.05)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("link rank")
        .y_desc("KiB on the wire")
        .draw()
        .map_err(e)?;
    chart
        .draw_series(v.iter().take(top).enumerate().map(|(i, (_, b))| {
            Rectangle::new(
                [(i, 0.0), (i + 1, *b as f64 / seeds / 1024.0)],
                BLUE.mix(0.6).filled(),
            )
        }))
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few seeds of a small scenario through the command: the table and both plots.
    #[test]
    fn sim_writes_the_summary_and_plots() {
        let dir = std::env::temp_dir().join(format!("cairn-sim-cli-{}", std::process::id()));
        let root = cairn_sim::data::repo_root();
        let a = SimArgs {
            scenario: root.join("sim/scenarios/small.toml"),
            seeds: 2,
            seed: 1,
            threads: Some(2),
            out: dir.clone(),
            root: Some(root),
        };
        sim(&a).unwrap();
        for f in ["small.txt", "small-convergence.svg", "small-links.svg"] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            assert!(
                text.contains(if f.ends_with(".svg") {
                    "<svg"
                } else {
                    "seeds passed"
                }),
                "{f}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

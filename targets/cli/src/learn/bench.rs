//! The class-incremental benchmark on scikit-learn's digits (`cairn learn bench`), and the
//! pieces it shares with the tests and the demo: the digits backbone and its features.

use super::*;

/// The digits base model (trained on 0–4) converted to int8, with its first hidden layer
/// exposed as the features memory keeps.
pub struct Backbone {
    pub bytes: AlignedBytes,
    pub lora_op: usize,
    pub head_op: usize,
}

pub fn backbone(zoo: &Path) -> Result<Backbone> {
    let d = zoo.join("digits");
    let c = convert_with_progress(
        &d.join("digits04_mlp_qdq.onnx"),
        &ConvertArgs {
            extra_output: vec!["h0".into()],
            pack: false,
            method: "minmax".into(),
            ..Default::default()
        },
    )?;
    let bytes = AlignedBytes::from_slice(&c.bytes);
    let m = Model::parse(bytes.as_slice()).map_err(e)?;
    let out = m.output_tensor(1).context("no h0 output")?;
    // The f32 output is a Dequantize of the int8 tensor the next layer reads.
    let h0 = (0..m.n_ops())
        .filter_map(|i| m.op(i))
        .find(|o| o.kind == OpKind::Dequantize && o.output(0) == out)
        .and_then(|o| o.input(0))
        .unwrap_or(out);
    let lora_op = fc_ops(&m)
        .into_iter()
        .find(|&i| m.op(i).and_then(|o| o.input(0)) == Some(h0))
        .context("no FullyConnected reads h0")?;
    let head_op = *fc_ops(&m).last().context("no FullyConnected")?;
    Ok(Backbone {
        bytes,
        lora_op,
        head_op,
    })
}

/// int8 features (symmetric, per record) of each input: what the device stores.
pub fn features(bb: &Backbone, xs: &[Vec<f32>]) -> Result<Vec<(Vec<i8>, f32)>> {
    let mut m = HostModel::new(bb.bytes.as_slice()).map_err(e)?;
    xs.iter()
        .map(|x| {
            let out = m.run(&[x]).map_err(e)?;
            cairn_node::features::quantize_vec(&out[1]).map_err(e)
        })
        .collect()
}

pub(super) struct Data {
    tr: Vec<(Vec<i8>, f32)>,
    ytr: Vec<u16>,
    te: Vec<(Vec<i8>, f32)>,
    yte: Vec<u16>,
}

pub(super) fn labels(p: &Path) -> Result<Vec<u16>> {
    Ok(npy::read(p)?.data.iter().map(|&v| v as u16).collect())
}

pub(super) fn rows(p: &Path) -> Result<Vec<Vec<f32>>> {
    let a = npy::read(p)?;
    let per = a.shape[1..].iter().product::<usize>().max(1);
    Ok(a.data.chunks(per).map(|c| c.to_vec()).collect())
}

/// Accuracy (all, old, new) of a predictor on the test features.
pub(super) fn accuracy(d: &Data, mut pred: impl FnMut(&Sample<'_>) -> u16) -> (f32, f32, f32) {
    let (mut ok, mut oo, mut on, mut no, mut nn) = (0, 0, 0, 0, 0);
    for ((emb, scale), &y) in d.te.iter().zip(&d.yte) {
        let s = Sample {
            emb,
            scale: *scale,
            label: y,
        };
        let r = pred(&s) == y;
        ok += r as u32;
        if y < 5 {
            no += 1;
            oo += r as u32;
        } else {
            nn += 1;
            on += r as u32;
        }
    }
    let f = |a: u32, n: u32| a as f32 / n.max(1) as f32;
    (f(ok, d.yte.len() as u32), f(oo, no), f(on, nn))
}

pub(super) fn record(i: usize, emb: &[i8], scale: f32, label: u16) -> Record<'_> {
    Record {
        origin: 1,
        timestamp_ms: i as u64,
        label,
        importance: 128,
        meta: [0; 4],
        scale,
        embedding: emb,
        payload: &[],
    }
}

pub(super) type RamStore = Store<RamFlash<65536>>;

pub(super) fn new_store() -> Result<RamStore> {
    Ok(Store::open(
        RamFlash::<65536>::new(16),
        Config {
            dim: 64,
            max_records: 100_000,
            max_payload: 0,
        },
    )
    .map_err(e)?
    .0)
}

/// One row of the benchmark table.
#[derive(Clone, Debug)]
pub struct Row {
    pub method: String,
    pub shots: usize,
    pub all: f32,
    pub old: f32,
    pub new: f32,
    pub forgetting: f32,
}

/// What the benchmark measured.
pub struct BenchReport {
    pub rows: Vec<Row>,
    pub arena_bytes: usize,
    pub ms_per_step: f64,
    pub poison: String,
}

/// The class-incremental benchmark: base model on 0–4, then K shots of 5–9 on the device.
pub fn bench(
    zoo: &Path,
    shots: &[usize],
    mem_per_class: usize,
    seed: u64,
    hp: &HyperArgs,
    plot: Option<&Path>,
    verbose: bool,
) -> Result<BenchReport> {
    let dd = zoo.join("digits");
    let bb = backbone(zoo)?;
    let data = Data {
        tr: features(&bb, &rows(&dd.join("train_x.npy"))?)?,
        ytr: labels(&dd.join("train_y.npy"))?,
        te: features(&bb, &rows(&dd.join("test_x.npy"))?)?,
        yte: labels(&dd.join("test_y.npy"))?,
    };
    let m = Model::parse(bb.bytes.as_slice()).map_err(e)?;
    let frozen = FrozenFc::from_model(&m, bb.lora_op).map_err(e)?;
    let head = FrozenFc::from_model(&m, bb.head_op).map_err(e)?;
    let shape = AdapterShape {
        fin: frozen.k,
        hidden: frozen.n,
        rank: hp.rank,
        classes: 10,
        batch: hp.batch,
    };
    let cfg = hp.config(seed)?;
    let mut arena = vec![0u32; arena_bytes(shape, &cfg).div_ceil(4)];
    let mut learner = Learner::new(
        shape,
        Some(frozen),
        cfg,
        bytemuck::cast_slice_mut(&mut arena),
    )
    .map_err(e)?;
    let arena_total = learner.arena_bytes();
    learner.init(Some(&head), seed).map_err(e)?;
    let base_params = learner.params(Slot::Active).to_vec();
    let (_, base_old, _) = accuracy(&data, |s| learner.predict(Slot::Active, s).unwrap_or(0));
    if verbose {
        println!(
            "base model (digits 0-4, int8): old-class test accuracy {:.1}%; adapter arena {} bytes (LoRA rank {} on {}x{}, head 10x{}, batch {}, {})",
            100.0 * base_old,
            arena_total,
            shape.rank,
            frozen.n,
            frozen.k,
            shape.head_in(),
            shape.batch,
            hp.optimizer
        );
    }
    // Seeded order of the training split.
    let mut order: Vec<usize> = (0..data.ytr.len()).collect();
    let mut r = seed;
    for i in (1..order.len()).rev() {
        r = r
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (r >> 33) as usize % (i + 1));
    }
    let pick = |cls: std::ops::Range<u16>, per: usize| -> Vec<usize> {
        let mut count = [0usize; 10];
        order
            .iter()
            .copied()
            .filter(|&i| {
                let y = data.ytr[i];
                cls.contains(&y) && {
                    count[y as usize] += 1;
                    count[y as usize] <= per
                }
            })
            .collect()
    };
    let old_mem = pick(0..5, mem_per_class);
    let mut rows_out = Vec::new();
    let mut curves: Vec<(String, Vec<f32>)> = Vec::new();
    let mut step_ms = 0.0;
    let mut poison = String::new();
    let gate = Gate {
        max_old_drop: hp.max_forgetting,
        min_new_gain: 0.0,
    };
    let old = |l: u16| l < 5;
    let is_new = |m: &Meta| m.label >= 5;
    let mut push = |method: &str, k: usize, (all, o, n): (f32, f32, f32)| {
        rows_out.push(Row {
            method: method.into(),
            shots: k,
            all,
            old: o,
            new: n,
            forgetting: base_old - o,
        })
    };
    for &k in shots {
        // The device's memory: old-class records from before, then K shots of each new class.
        let mut store = new_store()?;
        for (t, &i) in old_mem.iter().chain(&pick(5..10, k)).enumerate() {
            let (emb, s) = &data.tr[i];
            store.append(&record(t, emb, *s, data.ytr[i])).map_err(e)?;
        }
        // (1) adapter + replay, through the gate.
        learner.set_params(Slot::Active, &base_params).map_err(e)?;
        let t = Instant::now();
        let curve = train_candidate(&mut learner, &store, &is_new, &cfg, None)?;
        step_ms = t.elapsed().as_secs_f64() * 1e3 / cfg.steps.max(1) as f64;
        curves.push((format!("replay, {k} shots"), curve));
        let before = evaluate(&mut learner, Slot::Active, held_out(&store), old).map_err(e)?;
        let after = evaluate(&mut learner, Slot::Candidate, held_out(&store), old).map_err(e)?;
        let decision = gate.decide(&before, &after);
        let cand = accuracy(&data, |s| learner.predict(Slot::Candidate, s).unwrap_or(0));
        if decision == Decision::Promote {
            learner.promote();
        }
        let label = match decision {
            Decision::Promote => "adapter + replay (promoted)".to_string(),
            Decision::Reject(r) => format!("adapter + replay (gate rejected: {r:?})"),
        };
        push(&label, k, cand);
        // Poisoned batch on top of the promoted adapter: the gate must keep the old one.
        if decision == Decision::Promote && k == *shots.iter().max().unwrap_or(&k) {
            let mut ps = new_store()?;
            for m in store.metas() {
                let i = store.metas().iter().position(|x| x.id == m.id).unwrap_or(0);
                let d = store.config().dim;
                let emb = &store.embeddings()[i * d..(i + 1) * d];
                ps.append(&record(m.timestamp_ms as usize, emb, m.scale, m.label))
                    .map_err(e)?;
            }
            let mark = store.len() as u64 + 1000;
            // Ten records per new class the device has not seen before.
            let seen = pick(5..10, k);
            let fresh: Vec<usize> = pick(5..10, k + 10)
                .into_iter()
                .filter(|i| !seen.contains(i))
                .collect();
            let mut rr = seed ^ 0xBAD;
            for (j, &i) in fresh.iter().enumerate() {
                rr = rr
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let wrong = ((rr >> 33) % 10) as u16;
                let (emb, s) = &data.tr[i];
                ps.append(&record(mark as usize + j, emb, *s, wrong))
                    .map_err(e)?;
            }
            let active_before = learner.params(Slot::Active).to_vec();
            let poisoned = |m: &Meta| m.timestamp_ms >= mark;
            train_candidate(&mut learner, &ps, &poisoned, &cfg, None)?;
            let b = evaluate(&mut learner, Slot::Active, held_out(&ps), old).map_err(e)?;
            let a = evaluate(&mut learner, Slot::Candidate, held_out(&ps), old).map_err(e)?;
            let d = gate.decide(&b, &a);
            if d == Decision::Promote {
                learner.promote();
            }
            let kept = learner.params(Slot::Active) == active_before.as_slice();
            poison = format!(
                "poisoned batch ({} records of 5-9 with shuffled labels, on the {k}-shot adapter): gate {:?}; held-out old {:.1}% -> {:.1}%, new {:.1}% -> {:.1}%; active adapter {}",
                fresh.len(),
                d,
                100.0 * b.old_acc,
                100.0 * a.old_acc,
                100.0 * b.new_acc,
                100.0 * a.new_acc,
                if kept { "unchanged (bit for bit)" } else { "REPLACED" }
            );
        }
        // (2) fine-tune without replay (no gate: to show what it costs).
        learner.set_params(Slot::Active, &base_params).map_err(e)?;
        let no_replay = TrainConfig {
            replay_per_batch: 0,
            ..cfg
        };
        let curve = train_candidate(&mut learner, &store, &is_new, &no_replay, None)?;
        curves.push((format!("no replay, {k} shots"), curve));
        push(
            "fine-tune, no replay",
            k,
            accuracy(&data, |s| learner.predict(Slot::Candidate, s).unwrap_or(0)),
        );
        // (3) prototypes: nearest class mean over memory, no training.
        let mut ncm = Ncm::<10, 64>::new();
        for i in 0..store.len() {
            ncm.add(&cairn_learn::replay::sample_of(&store, i))
                .map_err(e)?;
        }
        push(
            "prototypes (NCM over memory)",
            k,
            accuracy(&data, |s| ncm.predict(s).unwrap_or(0)),
        );
    }
    // (4) joint training on the whole training split of 0–9 (upper bound, same adapter).
    let mut store = new_store()?;
    for (t, &i) in order.iter().enumerate() {
        let (emb, s) = &data.tr[i];
        store.append(&record(t, emb, *s, data.ytr[i])).map_err(e)?;
    }
    learner.set_params(Slot::Active, &base_params).map_err(e)?;
    let joint = TrainConfig {
        distill: 0.0,
        ..cfg
    };
    train_candidate(&mut learner, &store, &is_new, &joint, None)?;
    push(
        "joint training, all data (upper bound)",
        0,
        accuracy(&data, |s| learner.predict(Slot::Candidate, s).unwrap_or(0)),
    );
    if verbose {
        println!(
            "{:<46} {:>5} {:>8} {:>8} {:>8} {:>11}",
            "method", "shots", "avg 0-9", "old 0-4", "new 5-9", "forgetting"
        );
        for r in &rows_out {
            println!(
                "{:<46} {:>5} {:>7.1}% {:>7.1}% {:>7.1}% {:>+10.1}",
                r.method,
                if r.shots == 0 {
                    "all".into()
                } else {
                    r.shots.to_string()
                },
                100.0 * r.all,
                100.0 * r.old,
                100.0 * r.new,
                100.0 * r.forgetting
            );
        }
        println!("{poison}");
        println!(
            "training: {:.3} ms per step (batch {}, host, one thread); arena {} bytes in total",
            step_ms, shape.batch, arena_total
        );
    }
    if let Some(p) = plot {
        let refs: Vec<(&str, &[f32])> = curves
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_slice()))
            .collect();
        plot_curves(p, &refs)?;
        if verbose {
            println!("learning curves: {}", p.display());
        }
    }
    Ok(BenchReport {
        rows: rows_out,
        arena_bytes: arena_total,
        ms_per_step: step_ms,
        poison,
    })
}

/// Means (and ranges) over seeds of each method and shot count.
pub(super) fn print_means(runs: &[BenchReport]) {
    let base = |m: &str| m.split(" (").next().unwrap_or(m).to_string();
    let mut keys: Vec<(String, usize)> = Vec::new();
    for r in &runs[0].rows {
        let k = (base(&r.method), r.shots);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    println!(
        "{} seeds; mean [min, max] in percent; forgetting = base old-class accuracy - old-class accuracy",
        runs.len()
    );
    println!(
        "{:<40} {:>5} {:>20} {:>20} {:>20} {:>20} {:>9}",
        "method", "shots", "avg 0-9", "old 0-4", "new 5-9", "forgetting", "promoted"
    );
    for (m, k) in keys {
        let rows: Vec<&Row> = runs
            .iter()
            .flat_map(|r| r.rows.iter())
            .filter(|r| base(&r.method) == m && r.shots == k)
            .collect();
        let stat = |f: &dyn Fn(&Row) -> f32| {
            let v: Vec<f32> = rows.iter().map(|r| 100.0 * f(r)).collect();
            let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
            let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            format!("{mean:.1} [{lo:.1}, {hi:.1}]")
        };
        let promoted = rows
            .iter()
            .filter(|r| r.method.contains("promoted"))
            .count();
        println!(
            "{:<40} {:>5} {:>20} {:>20} {:>20} {:>20} {:>9}",
            m,
            if k == 0 { "all".into() } else { k.to_string() },
            stat(&|r| r.all),
            stat(&|r| r.old),
            stat(&|r| r.new),
            stat(&|r| r.forgetting),
            if m.starts_with("adapter") {
                format!("{promoted}/{}", rows.len())
            } else {
                "-".into()
            }
        );
    }
    for r in runs {
        println!("{}", r.poison);
    }
    println!(
        "training: {:.3} ms per step (host, one thread); arena {} bytes",
        runs.iter().map(|r| r.ms_per_step).sum::<f64>() / runs.len() as f64,
        runs[0].arena_bytes
    );
}

/// Loss per step, one line per run, as SVG.
pub fn plot_curves(path: &Path, curves: &[(&str, &[f32])]) -> Result<()> {
    use plotters::prelude::*;
    let max_len = curves.iter().map(|c| c.1.len()).max().unwrap_or(1).max(2);
    let max_loss = curves
        .iter()
        .flat_map(|c| c.1.iter().copied())
        .fold(0.1f32, f32::max);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("cairn learn: training loss", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0..max_len, 0f32..max_loss * 1.05)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("cross-entropy")
        .draw()
        .map_err(e)?;
    for (i, (name, c)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                c.iter().enumerate().map(|(x, &y)| (x, y)),
                color.stroke_width(1),
            ))
            .map_err(e)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// The benchmark's own training loop: the candidate for `cfg.steps` steps on batches from
/// `store` under any `cfg` (the ablations vary replay and distillation on one learner);
/// the loss per step. Devices train through `cairn_node::Adapter`.
fn train_candidate<F: NorFlash>(
    learner: &mut Learner<'_, '_>,
    store: &cairn_memory::store::LogStore<F, cairn_memory::ram::HeapRam>,
    is_new: &dyn Fn(&Meta) -> bool,
    cfg: &TrainConfig,
    bar: Option<&ProgressBar>,
) -> Result<Vec<f32>> {
    learner.begin_candidate();
    let batch = learner.layout().shape.batch;
    let mut rng = cfg.seed;
    let mut buf = vec![
        Sample {
            emb: &[],
            scale: 1.0,
            label: 0
        };
        batch
    ];
    let mut curve = Vec::with_capacity(cfg.steps as usize);
    for _ in 0..cfg.steps {
        let n = fill_batch(store, &mut rng, is_new, cfg.replay_per_batch, &mut buf);
        if n == 0 {
            bail!("nothing to train on: the store holds no training records");
        }
        // fill_batch puts the replayed samples first.
        let replayed = cfg.replay_per_batch.min(n);
        curve.push(learner.step_replay(&buf[..n], replayed).map_err(e)?);
        if let Some(b) = bar {
            b.inc(1);
        }
    }
    Ok(curve)
}

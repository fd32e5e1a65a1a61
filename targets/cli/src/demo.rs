//! `cairn demo`: convert the bundled models, run them on bundled data, and report
//! accuracy, int8-vs-f32 agreement, timing, flash and arena bytes. Needs no Python and
//! no network: the data sets are committed under models/zoo (see make_zoo.py).

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use cairn_convert::npy;
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;

use crate::tools::{argmax, convert_with_progress};
use crate::ConvertArgs;

struct Eval {
    correct: usize,
    agree: usize,
    n: usize,
    ms_per: f64,
}

fn evaluate(
    f32m: &mut HostModel,
    q: &mut HostModel,
    xs: &[Vec<f32>],
    ys: &[i64],
) -> Result<(Eval, usize)> {
    let (mut correct, mut agree, mut correct_f) = (0, 0, 0);
    let mut t = 0.0;
    for (x, &y) in xs.iter().zip(ys) {
        let a = f32m.run(&[x]).map_err(|e| anyhow!("{e:?}"))?;
        let s = Instant::now();
        let b = q.run(&[x]).map_err(|e| anyhow!("{e:?}"))?;
        t += s.elapsed().as_secs_f64();
        let (pa, pb) = (argmax(&a[0]), argmax(&b[0]));
        correct_f += (pa as i64 == y) as usize;
        correct += (pb as i64 == y) as usize;
        agree += (pa == pb) as usize;
    }
    Ok((
        Eval {
            correct,
            agree,
            n: xs.len(),
            ms_per: t * 1e3 / xs.len().max(1) as f64,
        },
        correct_f,
    ))
}

fn section(name: &str, onnx: &Path, args: &ConvertArgs, xs: &[Vec<f32>], ys: &[i64]) -> Result<()> {
    println!("== {name} ({})", onnx.display());
    let q = convert_with_progress(onnx, args)?;
    let f = convert_with_progress(
        onnx,
        &ConvertArgs {
            float: true,
            ..args.clone()
        },
    )?;
    let (qb, fb) = (
        AlignedBytes::from_slice(&q.bytes),
        AlignedBytes::from_slice(&f.bytes),
    );
    let mut qm = HostModel::new(qb.as_slice()).map_err(|e| anyhow!("{e:?}"))?;
    let mut fm = HostModel::new(fb.as_slice()).map_err(|e| anyhow!("{e:?}"))?;
    let m = qm.model();
    println!(
        "   int8 model: {} ops ({} int8, {} f32), flash {} B (f32 model {} B), arena {} B (lower bound {} B)",
        m.n_ops(),
        q.int8_ops,
        q.f32_ops.len(),
        q.bytes.len(),
        f.bytes.len(),
        m.arena_bytes(),
        m.arena_lower_bound()
    );
    let (e, correct_f) = evaluate(&mut fm, &mut qm, xs, ys)?;
    let pct = |a: usize| 100.0 * a as f64 / e.n.max(1) as f64;
    println!(
        "   accuracy    f32 {:.2}%   int8 {:.2}%   (n = {})",
        pct(correct_f),
        pct(e.correct),
        e.n
    );
    println!("   int8 top-1 agreement with f32: {:.2}%", pct(e.agree));
    println!(
        "   int8 latency {:.3} ms per input (CPU backend, 1 thread)",
        e.ms_per
    );
    Ok(())
}

/// Keep what the digits model saw: its penultimate features (the `h1` layer, exposed with
/// `--extra-output`) as int8 embeddings in a memory store labelled with the prediction,
/// then ask the store for the nearest earlier observation of each input.
fn memory_demo(d: &Path, xs: &[Vec<f32>]) -> Result<()> {
    use cairn_memory::flash::RamFlash;
    use cairn_memory::search::{Filter, Scoring};
    use cairn_memory::{Config, Record, Store};

    println!("== episodic memory: digits embeddings (penultimate layer) in a flash-shaped store");
    let args = ConvertArgs {
        calibrate: Some(d.join("calib_x.npy")),
        method: "minmax".into(),
        extra_output: vec!["h1".into()],
        pack: false,
        ..Default::default()
    };
    let q = convert_with_progress(&d.join("digits_mlp.onnx"), &args)?;
    let qb = AlignedBytes::from_slice(&q.bytes);
    let mut m = HostModel::new(qb.as_slice()).map_err(|e| anyhow!("{e:?}"))?;
    let (mut st, _) = Store::open(
        RamFlash::<4096>::new(64),
        Config {
            dim: 0,
            max_records: 10_000,
            max_payload: 64,
        },
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let t = Instant::now();
    let mut preds = Vec::new();
    let mut embs = Vec::new();
    for (i, x) in xs.iter().enumerate() {
        let out = m.run(&[x]).map_err(|e| anyhow!("{e:?}"))?;
        let pred = argmax(&out[0]);
        let (e, scale) =
            cairn_node::features::quantize_vec(&out[1]).map_err(|e| anyhow!("{e:?}"))?;
        let r = Record {
            origin: 1,
            timestamp_ms: i as u64,
            label: pred as u16,
            importance: 128,
            meta: [0; 4],
            scale,
            embedding: &e,
            payload: &[],
        };
        st.append(&r).map_err(|e| anyhow!("{e:?}"))?;
        preds.push(pred);
        embs.push(e);
    }
    let add_ms = t.elapsed().as_secs_f64() * 1e3;
    let (used, live) = st.usage();
    println!(
        "   stored {} embeddings of {} dims (classify + append {:.3} ms each); {:.0} bytes per record on flash, log {} bytes",
        st.len(),
        st.config().dim,
        add_ms / xs.len().max(1) as f64,
        live as f64 / st.len().max(1) as f64,
        used
    );
    // Nearest *other* stored observation for each input: does it carry the same prediction?
    let (mut same, mut total) = (0, 0);
    let t = Instant::now();
    for (i, e) in embs.iter().enumerate() {
        let hits = st.search(e, 2, &Filter::default(), &Scoring::default());
        let own = st
            .metas()
            .iter()
            .find(|m| m.timestamp_ms == i as u64)
            .map(|m| m.id);
        if let Some(h) = hits.iter().find(|h| Some(h.id) != own) {
            let m = st
                .metas()
                .iter()
                .find(|m| m.id == h.id)
                .map(|m| m.label as usize);
            same += (m == Some(preds[i])) as usize;
            total += 1;
        }
    }
    println!(
        "   nearest other memory has the same class for {:.1}% of inputs ({} queries, {:.3} ms each)",
        100.0 * same as f64 / total.max(1) as f64,
        total,
        t.elapsed().as_secs_f64() * 1e3 / total.max(1) as f64
    );
    Ok(())
}

/// A device that knows digits 0-4 meets 5-9 after deployment: ten examples of each go into
/// its memory, it trains an adapter with replay, the gate checks it, and it is promoted.
fn learn_demo(zoo: &Path) -> Result<()> {
    println!(
        "== on-device learning: digits 5-9 arrive after deployment (the base model knows 0-4)"
    );
    let hp = crate::learn::HyperArgs::default();
    let r = crate::learn::bench(zoo, &[10], 50, 7, &hp, None, false)?;
    let row = |p: &str| r.rows.iter().find(|x| x.method.starts_with(p)).cloned();
    let (Some(ours), Some(ncm)) = (row("adapter + replay"), row("prototypes")) else {
        anyhow::bail!("the learning benchmark returned no rows");
    };
    println!(
        "   before: old classes {:.1}%, new classes 0.0% (the base model has no outputs for them)",
        100.0 * (ours.old + ours.forgetting)
    );
    println!(
        "   after 10 shots per new class ({} steps of {:.3} ms, arena {} bytes): old {:.1}%, new {:.1}%, all {:.1}% — {}",
        hp.steps,
        r.ms_per_step,
        r.arena_bytes,
        100.0 * ours.old,
        100.0 * ours.new,
        100.0 * ours.all,
        ours.method
    );
    println!(
        "   (no-training baseline, nearest class mean over memory: all {:.1}%); {}",
        100.0 * ncm.all,
        r.poison
    );
    Ok(())
}

fn rows(a: &npy::Array) -> Vec<Vec<f32>> {
    let per = a.shape[1..].iter().product::<usize>().max(1);
    a.data.chunks(per).map(|c| c.to_vec()).collect()
}

pub fn demo(zoo: &Path) -> Result<()> {
    let t = Instant::now();
    let d = zoo.join("digits");
    let xs = rows(
        &npy::read(&d.join("test_x.npy"))
            .context("bundled digits data (run from the repository root, or pass --zoo)")?,
    );
    let ys: Vec<i64> = npy::read(&d.join("test_y.npy"))?
        .data
        .iter()
        .map(|&v| v as i64)
        .collect();
    let args = ConvertArgs {
        calibrate: Some(d.join("calib_x.npy")),
        method: "minmax".into(),
        ..Default::default()
    };
    section(
        "digits MLP (scikit-learn digits, 8x8)",
        &d.join("digits_mlp.onnx"),
        &args,
        &xs,
        &ys,
    )?;

    memory_demo(&d, &xs)?;
    learn_demo(zoo)?;

    let c = zoo.join("ppocr_cls");
    let u8s = npy::read(&c.join("eval_u8.npy"))?;
    let widths = npy::read(&c.join("eval_w.npy"))?.data;
    let ys: Vec<i64> = npy::read(&c.join("eval_y.npy"))?
        .data
        .iter()
        .map(|&v| v as i64)
        .collect();
    // PaddleOCR preprocessing: (u8 / 255 - 0.5) / 0.5, zero right of the text line.
    let xs: Vec<Vec<f32>> = rows(&u8s)
        .into_iter()
        .zip(&widths)
        .map(|(r, &w)| {
            r.iter()
                .enumerate()
                .map(|(i, &v)| {
                    if (i % 192) < w as usize {
                        (v / 255.0 - 0.5) / 0.5
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let args = ConvertArgs {
        calibrate: Some(c.join("calib_x.npy")),
        input_shape: vec!["1,3,48,192".into()],
        method: "minmax".into(),
        ..Default::default()
    };
    section(
        "PP-OCR text direction classifier (rendered text lines, upright vs 180°)",
        &c.join("ch_ppocr_mobile_v2.0_cls_infer.onnx"),
        &args,
        &xs,
        &ys,
    )?;
    crate::field::demo(zoo)?;
    println!("demo done in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

//! `cairn memory`: the episodic store in a file (NOR semantics over a host file).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use cairn_convert::npy;
use cairn_memory::flash::FileFlash;
use cairn_memory::search::{Filter, Scoring};
use cairn_memory::{Config, Record, Store};
use clap::Subcommand;

/// Store files are made of 64 KiB sectors.
pub type StoreFlash = FileFlash<65536>;

#[derive(Subcommand)]
pub enum MemoryCmd {
    /// Add embeddings (one record per row of a .npy) with a label and importance.
    Add {
        #[arg(long)]
        embedding: PathBuf,
        /// One label for all rows, or see --labels.
        #[arg(long, default_value_t = 0)]
        label: u16,
        /// A .npy with one label per row.
        #[arg(long)]
        labels: Option<PathBuf>,
        #[arg(long, default_value_t = 128)]
        importance: u8,
        /// Small payload stored with each record (UTF-8 text).
        #[arg(long, default_value = "")]
        payload: String,
        #[arg(long, default_value_t = 0)]
        origin: u64,
    },
    /// The nearest records to an embedding (first row of a .npy).
    Query {
        #[arg(long)]
        embedding: PathBuf,
        #[arg(short, default_value_t = 5)]
        k: usize,
        #[arg(long)]
        label: Option<u16>,
    },
    /// Records, bytes, erase counts.
    Stats,
    /// Reclaim the oldest segment now.
    Compact,
    /// Every record as JSON lines (id, origin, time, label, importance, dequantized embedding).
    Export {
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// f32 → int8 with a per-record scale (max |v| maps to 127); NaN or infinite values are
/// refused (the node's one quantization, `cairn_node::features`).
fn quantize(v: &[f32]) -> Result<(Vec<i8>, f32)> {
    cairn_node::features::quantize_vec(v)
        .map_err(|e| anyhow!("the embedding cannot be stored: {e:?}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn open(path: &Path, sectors: usize) -> Result<(Store<StoreFlash>, cairn_memory::Recovery)> {
    refuse_foreign_file(path)?;
    let flash =
        StoreFlash::open(path, sectors).with_context(|| format!("opening {}", path.display()))?;
    Store::open(
        flash,
        Config {
            dim: 0,
            max_records: 1_000_000,
            max_payload: 4096,
        },
    )
    .map_err(|e| anyhow!("{}: {e:?}", path.display()))
}

/// Opening erases free sectors: refuse a file whose sectors do not all start like a store
/// sector (a segment header, erased, or retired), so a mistyped path cannot destroy data.
pub(crate) fn refuse_foreign_file(path: &Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    const SECTOR: usize = 65536;
    if bytes.len() % SECTOR != 0 {
        bail!(
            "{} is not a cairn memory store (its size is not a whole number of 64 KiB sectors)",
            path.display()
        );
    }
    for (i, s) in bytes.chunks(SECTOR).enumerate() {
        let head = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        if !matches!(head, 0x4753_4D43 | 0xFFFF_FFFF | 0) {
            bail!(
                "{} is not a cairn memory store (sector {i} starts with {head:#010x})",
                path.display()
            );
        }
    }
    Ok(())
}

pub fn run(store: &Path, sectors: usize, cmd: MemoryCmd) -> Result<()> {
    let (mut st, rec) = open(store, sectors)?;
    if rec.dropped_entries > 0 || rec.dirty_segments > 0 {
        println!(
            "recovered: {} damaged entries skipped, {} interrupted erases",
            rec.dropped_entries, rec.dirty_segments
        );
    }
    match cmd {
        MemoryCmd::Add {
            embedding,
            label,
            labels,
            importance,
            payload,
            origin,
        } => {
            let a = npy::read(&embedding)?;
            let dim = *a
                .shape
                .last()
                .ok_or_else(|| anyhow!("empty embedding array"))?;
            let labels = labels.map(|p| npy::read(&p)).transpose()?;
            let t0 = now_ms();
            let mut n = 0;
            for (i, row) in a.data.chunks(dim.max(1)).enumerate() {
                let (q, scale) = quantize(row).with_context(|| format!("row {i}"))?;
                let label = labels
                    .as_ref()
                    .and_then(|l| l.data.get(i))
                    .map_or(label, |&v| v as u16);
                let r = Record {
                    origin,
                    timestamp_ms: t0 + i as u64,
                    label,
                    importance,
                    meta: [0; 4],
                    scale,
                    embedding: &q,
                    payload: payload.as_bytes(),
                };
                st.append(&r).map_err(|e| anyhow!("append: {e:?}"))?;
                n += 1;
            }
            println!(
                "added {n} records of dimension {dim}; the store holds {}",
                st.len()
            );
        }
        MemoryCmd::Query {
            embedding,
            k,
            label,
        } => {
            let a = npy::read(&embedding)?;
            let dim = st.config().dim;
            if a.data.len() < dim || dim == 0 {
                bail!(
                    "the store holds {dim}-dimensional embeddings; the query has {} values",
                    a.data.len()
                );
            }
            let (q, _) = quantize(&a.data[..dim])?;
            let hits = st.search(
                &q,
                k,
                &Filter {
                    label,
                    ..Filter::default()
                },
                &Scoring::default(),
            );
            for h in hits {
                let m = st
                    .metas()
                    .iter()
                    .find(|m| m.id == h.id)
                    .copied()
                    .ok_or_else(|| anyhow!("index"))?;
                println!(
                    "{}  cosine {:.4}  label {}  importance {}  t {}",
                    hex(&h.id),
                    h.cosine,
                    m.label,
                    m.importance,
                    m.timestamp_ms
                );
            }
        }
        MemoryCmd::Stats => {
            let (used, live) = st.usage();
            let dim = st.config().dim;
            println!("records         {}", st.len());
            println!("dimension       {dim}");
            println!("log bytes       {used} (live entries {live})");
            if !st.is_empty() {
                println!(
                    "bytes/record    {:.1} (raw int8 vector {dim})",
                    live as f64 / st.len() as f64
                );
            }
            println!("erase counts    {:?}", st.erase_counts());
        }
        MemoryCmd::Compact => {
            st.compact().map_err(|e| anyhow!("compact: {e:?}"))?;
            println!("compacted; {} records", st.len());
        }
        MemoryCmd::Export { output } => {
            let mut out = String::new();
            let ids: Vec<_> = st.metas().iter().map(|m| m.id).collect();
            for id in ids {
                let body = st
                    .get(&id)
                    .map_err(|e| anyhow!("{e:?}"))?
                    .ok_or_else(|| anyhow!("missing"))?;
                let (_, r) = Record::decode(&body).map_err(|e| anyhow!("{e:?}"))?;
                let emb: Vec<f32> = r.embedding.iter().map(|&v| v as f32 * r.scale).collect();
                out.push_str(&serde_json::json!({
                    "id": hex(&id), "origin": r.origin, "timestamp_ms": r.timestamp_ms, "label": r.label,
                    "importance": r.importance, "meta": r.meta, "embedding": emb,
                    "payload": String::from_utf8_lossy(r.payload),
                }).to_string());
                out.push('\n');
            }
            match output {
                Some(p) => {
                    std::fs::write(&p, out).with_context(|| format!("writing {}", p.display()))?
                }
                None => print!("{out}"),
            }
        }
    }
    Ok(())
}

pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

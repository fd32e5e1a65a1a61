//! Store speed on this machine (not a test): appends to RAM and to a file, exact top-10
//! over N clustered 384-d int8 vectors, bytes per record, the IVF index's recall and speed.
//!
//!     cargo run --release -p cairn-memory --features std --example bench -- [N] [NOISE]
//!
//! CAIRN_COMPARE=1 also runs hnswlib and usearch on the same vectors in the same run
//! (`examples/ann_compare.py`, from the repository's `.venv`). CAIRN_DATA=DIR uses
//! DIR/base.npy and DIR/queries.npy (int8 matrices, e.g. real embeddings made by
//! `ann_compare.py embed DIR`) instead of synthetic clusters.

use std::time::Instant;

use cairn_memory::flash::{FileFlash, RamFlash};
use cairn_memory::search::{Filter, Scoring};
use cairn_memory::{Config, Record, Store};

fn main() {
    let data = std::env::var("CAIRN_DATA").ok().map(|d| {
        let dir = std::path::Path::new(&d);
        (
            read_i8_npy(&dir.join("base.npy")),
            read_i8_npy(&dir.join("queries.npy")),
        )
    });
    let dim = data.as_ref().map_or(384, |d| d.0[0].len());
    let n: usize = data.as_ref().map_or_else(
        || {
            std::env::args()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(100_000)
        },
        |d| d.0.len(),
    );
    // Per-coordinate noise around the cluster centres (std ≈ noise; centres have std 0.58):
    // 1.0 makes clusters overlap, so neighbours cross cluster boundaries.
    let noise: f32 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let mut s = 0x5EEDu64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    };
    // 200 Gaussian-ish clusters (sum of uniforms), unit-normalized, quantized per record.
    let centers: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    let mut vecs: Vec<Vec<i8>> = Vec::with_capacity(n);
    for i in 0..if data.is_some() { 0 } else { n } {
        let c = &centers[i % 200];
        let v: Vec<f32> = c
            .iter()
            .map(|&x| x + noise * (next() + next() + next()))
            .collect();
        let m = v.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
        vecs.push(v.iter().map(|&x| (x / m * 127.0).round() as i8).collect());
    }
    let (vecs, given_queries) = match data {
        Some((b, q)) => (b, Some(q)),
        None => (vecs, None),
    };
    let cfg = Config {
        dim,
        max_records: n + 1,
        max_payload: 64,
    };
    let sectors = (n * (dim + 80)).div_ceil(65536) + 8;
    let (mut st, _) = Store::open(RamFlash::<65536>::new(sectors), cfg).unwrap();
    let t = Instant::now();
    for (i, v) in vecs.iter().enumerate() {
        st.append(&record(i, (i % 200) as u16, v)).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    let (_, live) = st.usage();
    println!("RAM store: {n} appends in {:.2} s = {:.0} records/s; {:.1} bytes per record ({} vector + {:.1} overhead)", dt, n as f64 / dt, live as f64 / n as f64, dim, live as f64 / n as f64 - dim as f64);
    let queries: Vec<&Vec<i8>> = vecs.iter().step_by(n / 50).collect();
    let t = Instant::now();
    for q in &queries {
        let h = st.search(q, 10, &Filter::default(), &Scoring::default());
        assert_eq!(h.len(), 10);
    }
    println!(
        "exact top-10 over {n} x {dim} int8: {:.3} ms per query",
        t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64
    );

    // IVF: recall@10 against exact, and latency, for a few nprobe values.
    let t = Instant::now();
    let nlist = ((n as f64).sqrt() as usize).max(1);
    let ivf = cairn_memory::ivf::Ivf::build(&st, nlist, 8, 20_000, 7);
    println!(
        "IVF build ({nlist} lists, 8 k-means rounds on 20k samples, then {n} assignments): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let queries: Vec<Vec<i8>> = given_queries.unwrap_or_else(|| {
        (0..200)
            .map(|i| {
                let c = &centers[(i * 37) % 200];
                let v: Vec<f32> = c
                    .iter()
                    .map(|&x| x + noise * (next() + next() + next()))
                    .collect();
                let m = v.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
                v.iter().map(|&x| (x / m * 127.0).round() as i8).collect()
            })
            .collect()
    });
    let exact: Vec<Vec<cairn_memory::Id>> = queries
        .iter()
        .map(|q| {
            st.search(q, 10, &Filter::default(), &Scoring::default())
                .iter()
                .map(|h| h.id)
                .collect()
        })
        .collect();
    for nprobe in [2, 4, 8, 16, 32] {
        let t = Instant::now();
        let mut found = 0;
        for (q, ex) in queries.iter().zip(&exact) {
            let hits = ivf
                .search(&st, q, 10, nprobe, &Filter::default(), &Scoring::default())
                .unwrap();
            found += hits.iter().filter(|h| ex.contains(&h.id)).count();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
        println!(
            "IVF nprobe {nprobe:>2}: recall@10 {:.3}, {:.3} ms per query",
            found as f64 / (10 * queries.len()) as f64,
            ms
        );
    }

    // HNSW over the same int8 vectors: recall and latency for a few ef values.
    let t = Instant::now();
    let params = cairn_memory::hnsw::HnswParams {
        m: 16,
        ef_construction: 200,
        seed: 7,
    };
    let hnsw = cairn_memory::hnsw::Hnsw::build(&st, params);
    println!(
        "HNSW build (M=16, ef_construction=200, int8, one thread): {:.2} s, {:.1} MB of graph",
        t.elapsed().as_secs_f64(),
        hnsw.bytes() as f64 / 1e6
    );
    let mut scratch = hnsw.scratch();
    for ef in [10, 20, 40, 80, 160] {
        let t = Instant::now();
        let mut found = 0;
        for (q, ex) in queries.iter().zip(&exact) {
            let hits = hnsw
                .search(
                    &st,
                    q,
                    10,
                    ef,
                    &Filter::default(),
                    &Scoring::default(),
                    &mut scratch,
                )
                .unwrap();
            found += hits.iter().filter(|h| ex.contains(&h.id)).count();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
        println!(
            "HNSW ef {ef:>3}: recall@10 {:.3}, {:.3} ms per query",
            found as f64 / (10 * queries.len()) as f64,
            ms
        );
    }

    if std::env::var("CAIRN_COMPARE").is_ok_and(|v| v == "1") {
        // The same vectors and queries, in the same run, for hnswlib and usearch.
        let dir = std::env::temp_dir().join("cairn-ann-compare");
        std::fs::create_dir_all(&dir).expect("temp dir");
        write_i8_npy(&dir.join("base.npy"), &vecs, dim);
        write_i8_npy(&dir.join("queries.npy"), &queries, dim);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = std::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("runtime/memory/examples/ann_compare.py"))
            .arg("compare")
            .arg(&dir)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            println!("comparison did not run (needs .venv with hnswlib and usearch)");
        }
    }

    let path = std::env::temp_dir().join("cairn-memory-bench.store");
    let _ = std::fs::remove_file(&path);
    let m = 2000.min(n);
    let (mut fs, _) = Store::open(
        FileFlash::<65536>::open(&path, (m * (dim + 80)).div_ceil(65536) + 8).unwrap(),
        cfg,
    )
    .unwrap();
    let t = Instant::now();
    for (i, v) in vecs.iter().take(m).enumerate() {
        fs.append(&record(i, 0, v)).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "file store (fsync per append): {m} appends in {:.2} s = {:.0} records/s",
        dt,
        m as f64 / dt
    );
    let _ = std::fs::remove_file(&path);
    let m = 50_000.min(n);
    let (mut fs, _) = Store::open(
        FileFlash::<65536>::open(&path, (m * (dim + 80)).div_ceil(65536) + 8).unwrap(),
        cfg,
    )
    .unwrap();
    let recs: Vec<Record> = vecs
        .iter()
        .take(m)
        .enumerate()
        .map(|(i, v)| record(i, 0, v))
        .collect();
    let t = Instant::now();
    for chunk in recs.chunks(256) {
        fs.append_batch(chunk).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!("file store (append_batch of 256, one sync per segment write): {m} appends in {:.2} s = {:.0} records/s", dt, m as f64 / dt);
    let _ = std::fs::remove_file(&path);
}

/// An int8 matrix as .npy.
fn write_i8_npy(path: &std::path::Path, rows: &[Vec<i8>], dim: usize) {
    let mut h = format!(
        "{{'descr': '|i1', 'fortran_order': False, 'shape': ({}, {}), }}",
        rows.len(),
        dim
    );
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    for r in rows {
        out.extend(r.iter().map(|&v| v as u8));
    }
    std::fs::write(path, out).expect("write npy");
}

/// An int8 matrix from .npy (version 1, C order).
fn read_i8_npy(path: &std::path::Path) -> Vec<Vec<i8>> {
    let b = std::fs::read(path).expect("read npy");
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let h = std::str::from_utf8(&b[10..10 + hl]).expect("npy header");
    assert!(
        h.contains("'|i1'"),
        "{}: not an int8 matrix",
        path.display()
    );
    let shape = &h[h.find("'shape': (").expect("shape") + 10..];
    let dims: Vec<usize> = shape[..shape.find(')').unwrap()]
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let data = &b[10 + hl..];
    data.chunks(dims[1])
        .take(dims[0])
        .map(|r| r.iter().map(|&v| v as i8).collect())
        .collect()
}

/// The benchmark's record: index as time, fixed importance and scale.
fn record(i: usize, label: u16, v: &[i8]) -> Record<'_> {
    Record {
        origin: 1,
        timestamp_ms: i as u64,
        label,
        importance: 128,
        meta: [0; 4],
        scale: 0.01,
        embedding: v,
        payload: &[],
    }
}

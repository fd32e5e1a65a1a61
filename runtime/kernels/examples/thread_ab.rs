//! One converted model timed at several thread settings in one process, interleaved (blocks
//! of runs per setting, 5 ms apart so the other pools' workers are asleep), so that a
//! noisy machine's drift falls on every setting alike. A setting is `THREADS` or
//! `THREADS:MIN_PART_WORK` (`Pool::with_min_part_work`, the split threshold), with an `n`
//! after it to run that setting with AMX off (`paths::allow_amx`, e.g. `1 1n 2 2n`); the
//! first is the baseline of the speed column. Inputs are fixed pseudo-random values in [0, 1).
//!
//!     cargo run --release -p cairn-kernels --features std --example thread_ab -- \
//!         M.cairn RUNS 1 2 2:16384
//!
//! `BLOCK=N` sets the runs per block (20); `PEROP=1` also prints each op's median time per
//! setting (µs) and the first setting's time over the last's.
use cairn_kernels::host::HostModel;
use cairn_kernels::par::Pool;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(&args[1]).unwrap();
    let runs: usize = args[2].parse().unwrap();
    let cfgs: Vec<(usize, Option<u64>)> = args[3..]
        .iter()
        .map(|a| {
            let mut it = a.trim_end_matches('n').split(':');
            let t = it.next().unwrap().parse().unwrap();
            (t, it.next().map(|m| m.parse().unwrap()))
        })
        .collect();
    let no_amx: Vec<bool> = args[3..].iter().map(|a| a.ends_with('n')).collect();
    let mut models: Vec<HostModel> = cfgs
        .iter()
        .map(|&(t, m)| {
            let mut h = HostModel::new(&bytes).unwrap();
            let mut p = Pool::new(t).unwrap();
            if let Some(m) = m {
                p = p.with_min_part_work(m);
            }
            h.set_pool(p);
            h
        })
        .collect();
    let ins: Vec<Vec<f32>> = models[0]
        .inputs()
        .iter()
        .map(|i| {
            let n: usize = i.shape.iter().map(|&d| d.max(1)).product();
            let mut s = 12345u32;
            (0..n)
                .map(|_| {
                    s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                    (s >> 8) as f32 / (1 << 24) as f32
                })
                .collect()
        })
        .collect();
    let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
    let mut times = vec![Vec::new(); cfgs.len()];
    for _ in 0..3 {
        for m in models.iter_mut() {
            m.run(&refs).unwrap();
        }
    }
    // Blocks of 5 runs per setting, 5 ms apart, so the other pools' workers are asleep.
    let block: usize = std::env::var("BLOCK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for _ in 0..runs.div_ceil(block) {
        for (k, m) in models.iter_mut().enumerate() {
            cairn_kernels::paths::allow_amx(!no_amx[k]);
            std::thread::sleep(std::time::Duration::from_millis(5));
            for _ in 0..3 {
                m.run(&refs).unwrap();
            }
            for _ in 0..block {
                let t0 = Instant::now();
                m.run(&refs).unwrap();
                times[k].push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    if std::env::var("PEROP").is_ok() {
        let nops = models[0].model().n_ops();
        let mut per = vec![vec![Vec::new(); nops]; cfgs.len()];
        for _ in 0..runs.div_ceil(5) {
            for (k, m) in models.iter_mut().enumerate() {
                cairn_kernels::paths::allow_amx(!no_amx[k]);
                std::thread::sleep(std::time::Duration::from_millis(5));
                for _ in 0..5 {
                    let mut start = Instant::now();
                    let pk = &mut per[k];
                    m.run_with(&refs, |i, done| {
                        if done {
                            pk[i].push(start.elapsed().as_secs_f64() * 1e6);
                        } else {
                            start = Instant::now();
                        }
                    })
                    .unwrap();
                }
            }
        }
        let mut tot = vec![0f64; cfgs.len()];
        for i in 0..nops {
            let meds: Vec<f64> = per
                .iter_mut()
                .map(|p| {
                    let t = &mut p[i];
                    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
                    t[t.len() / 2]
                })
                .collect();
            for (k, m) in meds.iter().enumerate() {
                tot[k] += m;
            }
            let kern = models[0]
                .model()
                .kernel_of(i)
                .map_or("?".into(), |k| k.to_string());
            let out = models[0]
                .model()
                .op(i)
                .map(|op| models[0].model().tensor(op.output(0)).info.shape);
            let macs = models[0].model().op_macs(i);
            print!("#{i:<4} {kern:<18} {macs:>9} ");
            for m in &meds {
                print!("{m:>8.1}");
            }
            println!("  x{:.2} {out:?}", meds[0] / meds[meds.len() - 1]);
        }
        println!("sum of medians (us): {tot:?}");
    }
    // On a host whose cores are shared with a noisy neighbour the median mixes quiet and
    // contended runs; the p10 column and its speed ratio are closer to the quiet machine.
    let quantile = |t: &[f64], q: usize| {
        let mut t = t.to_vec();
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        t[t.len() * q / 100]
    };
    let (base, base10) = (quantile(&times[0], 50), quantile(&times[0], 10));
    for (k, t) in times.iter().enumerate() {
        let (med, p10) = (quantile(t, 50), quantile(t, 10));
        println!(
            "{:?}: median {med:.3} ms  p10 {p10:.3}  p90 {:.3}  speed vs first {:.2}x (at p10 {:.2}x)",
            cfgs[k],
            quantile(t, 90),
            base / med,
            base10 / p10
        );
    }
}

//! Arbitrary bytes as the flash image of a learner's checkpoint log: `CheckpointLog::open`
//! recovers what is valid, and the log keeps working: every entry is visited, lookups and
//! loads answer with a typed error or a verified checkpoint, and a checkpoint committed
//! after recovery is found again, weights bit for bit, when the log is reopened. Never a
//! panic.
#![no_main]
use cairn_learn::gate::Metrics;
use cairn_learn::lineage::{weights_digest, Checkpoint, CheckpointLog};
use cairn_memory::flash::RamFlash;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut f = RamFlash::<1024>::new(4);
    let n = data.len().min(f.data.len());
    f.data[..n].copy_from_slice(&data[..n]);
    let Ok((mut log, _)) = CheckpointLog::open(f) else { return };
    let mut ids = Vec::new();
    let _ = log.for_each(|e| {
        if let cairn_learn::lineage::LogEntry::Checkpoint(c) = e {
            ids.push((c.id, c.base, c.n_params));
        }
    });
    for (id, base, n) in ids.into_iter().take(4) {
        let mut w = vec![0f32; (n as usize).min(256)];
        let _ = log.load(&id[..4], &base, &mut w);
    }
    let _ = log.find(data.get(..2).unwrap_or(&[]));

    // What is committed after recovery survives a reopen.
    let weights = [0.5f32, -1.25, 3.0];
    let c = Checkpoint {
        id: [0; 32],
        parent: log.active().unwrap_or([0; 32]),
        base: [7; 32],
        records: [1; 32],
        n_records: 3,
        hparams: [0; 52],
        before: Metrics::default(),
        after: Metrics::default(),
        shape: [1, 3, 0, 0],
        weights: weights_digest(&weights),
        n_params: 3,
    }
    .seal();
    if log.commit(&c, &weights).is_err() {
        return;
    }
    let (mut again, _) = CheckpointLog::open(log.into_flash()).expect("reopen after commit");
    assert_eq!(again.active(), Some(c.id), "the committed checkpoint is not active");
    let mut back = [0f32; 3];
    let got = again.load(&c.id, &c.base, &mut back).expect("committed checkpoint loads");
    assert_eq!((got.id, back), (c.id, weights));
});

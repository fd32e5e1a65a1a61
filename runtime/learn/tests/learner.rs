//! The learner's forward pass, initialisation, slots and input checks against values
//! computed here from the same parameters (seeded: `CAIRN_SEED`, printed on failure).

use cairn_learn::learner::{arena_bytes, Slot};
use cairn_learn::{AdapterShape, FrozenFc, LearnError, Learner, Optimizer, Sample, TrainConfig};

fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1ea2_0e25)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 20_001) as f32 / 10_000.0 - 1.0
    }
    fn i8(&mut self) -> i8 {
        self.next() as i8
    }
}

fn cfg(lora_scale: f32) -> TrainConfig {
    TrainConfig {
        optimizer: Optimizer::adam(0.01),
        clip_norm: 0.0,
        weight_decay: 0.0,
        steps: 0,
        replay_per_batch: 0,
        lora_scale,
        distill: 0.0,
        seed: 1,
    }
}

/// A frozen int8 layer's bytes: weights, bias, multipliers.
struct Parts {
    w: Vec<i8>,
    bias: Vec<u8>,
    mult: Vec<u8>,
}

fn parts(r: &mut Rng, n: usize, k: usize) -> Parts {
    Parts {
        w: (0..n * k).map(|_| r.i8()).collect(),
        bias: (0..n)
            .flat_map(|_| ((r.next() % 2001) as i32 - 1000).to_le_bytes())
            .collect(),
        mult: (0..n)
            .flat_map(|_| (0.001f32 + 0.002 * r.unit().abs()).to_le_bytes())
            .collect(),
    }
}

fn frozen(p: &Parts, n: usize, k: usize, relu: bool) -> FrozenFc<'_> {
    FrozenFc::from_parts(n, k, &p.w, Some(&p.bias), &p.mult, 0.05, 0.02, -3, relu).unwrap()
}

/// The library's seed mixer (splitmix64), for LoRA A's initial values.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Mean cross-entropy of `params` (`[W | b | A | B]`) on `batch`, computed here.
fn reference_loss(
    params: &[f32],
    shape: AdapterShape,
    fz: Option<&FrozenFc<'_>>,
    lora_scale: f32,
    batch: &[Sample<'_>],
) -> f32 {
    let (fin, hid, r, c) = (shape.fin, shape.hidden, shape.rank, shape.classes);
    let hin = shape.head_in();
    let (w0, b0) = (0, c * hin);
    let a0 = b0 + c;
    let bb0 = a0 + if hid == 0 { 0 } else { r * fin };
    let mut loss = 0.0;
    for s in batch {
        let x: Vec<f32> = s.emb.iter().map(|&e| e as f32 * s.scale).collect();
        let h = match fz {
            Some(fz) => {
                let (mut q, mut z) = (vec![0i8; fin], vec![0f32; hid]);
                fz.forward(&x, &mut q, &mut z);
                let u: Vec<f32> = (0..r)
                    .map(|k| dot(&params[a0 + k * fin..a0 + (k + 1) * fin], &x))
                    .collect();
                for (j, zj) in z.iter_mut().enumerate() {
                    *zj += lora_scale * dot(&params[bb0 + j * r..bb0 + (j + 1) * r], &u);
                }
                z.iter()
                    .map(|&v| if fz.relu { v.max(0.0) } else { v })
                    .collect()
            }
            None => x,
        };
        let logits: Vec<f32> = (0..c)
            .map(|j| params[b0 + j] + dot(&params[w0 + j * hin..w0 + (j + 1) * hin], &h))
            .collect();
        let m = logits.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let sum: f32 = logits.iter().map(|&v| (v - m).exp()).sum();
        loss -= ((logits[s.label as usize] - m).exp() / sum).max(1e-30).ln();
    }
    loss / batch.len() as f32
}

#[test]
fn loss_and_prediction_are_the_adapter_s_forward_pass() {
    let seed = seed();
    let mut r = Rng(seed | 1);
    let (fin, hid, rank, classes) = (6, 5, 2, 4);
    let p = parts(&mut r, hid, fin);
    for (relu, lora_scale) in [(true, 0.5), (false, 2.0)] {
        let fz = frozen(&p, hid, fin, relu);
        let shape = AdapterShape {
            fin,
            hidden: hid,
            rank,
            classes,
            batch: 3,
        };
        let c = cfg(lora_scale);
        let mut arena = vec![0u32; arena_bytes(shape, &c).div_ceil(4)];
        let mut l = Learner::new(shape, Some(fz), c, bytemuck::cast_slice_mut(&mut arena)).unwrap();
        let params: Vec<f32> = (0..shape.params()).map(|_| r.unit()).collect();
        l.set_params(Slot::Candidate, &params).unwrap();
        let embs: Vec<Vec<i8>> = (0..3).map(|_| (0..fin).map(|_| r.i8()).collect()).collect();
        let batch: Vec<Sample<'_>> = embs
            .iter()
            .enumerate()
            .map(|(i, e)| Sample {
                emb: e,
                scale: 0.01 + 0.01 * i as f32,
                label: (i % classes) as u16,
            })
            .collect();
        let got = l.loss(Slot::Candidate, &batch).unwrap();
        let want = reference_loss(&params, shape, Some(&fz), lora_scale, &batch);
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "CAIRN_SEED={seed} relu {relu}: loss {got} vs {want}"
        );
        // The prediction is the class of the largest probability: the one whose loss is
        // least. The sample's label plays no part (a label past the classes is fine).
        for s in &batch {
            let losses: Vec<f32> = (0..classes as u16)
                .map(|y| {
                    reference_loss(
                        &params,
                        shape,
                        Some(&fz),
                        lora_scale,
                        &[Sample { label: y, ..*s }],
                    )
                })
                .collect();
            let best = (0..classes).fold(0, |b, y| if losses[y] < losses[b] { y } else { b });
            let odd = Sample { label: 999, ..*s };
            assert_eq!(
                l.predict(Slot::Candidate, &odd).unwrap() as usize,
                best,
                "CAIRN_SEED={seed}"
            );
        }
    }
}

/// Logits far from zero (a confident head) give a finite loss: the softmax subtracts the
/// largest logit before `exp`.
#[test]
fn large_logits_keep_the_loss_finite() {
    let shape = AdapterShape {
        fin: 2,
        hidden: 0,
        rank: 0,
        classes: 3,
        batch: 1,
    };
    let c = cfg(0.5);
    let mut arena = vec![0u32; arena_bytes(shape, &c).div_ceil(4)];
    let mut l = Learner::new(shape, None, c, bytemuck::cast_slice_mut(&mut arena)).unwrap();
    // Biases 200, 190, 150: exp(200) overflows f32.
    let params = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 200.0, 190.0, 150.0];
    l.set_params(Slot::Active, &params).unwrap();
    let s = Sample {
        emb: &[1, 1],
        scale: 0.1,
        label: 1,
    };
    let got = l.loss(Slot::Active, &[s]).unwrap();
    let want = reference_loss(&params, shape, None, 0.5, &[s]);
    assert!(
        got.is_finite() && (got - want).abs() < 1e-4,
        "{got} vs {want}"
    );
    assert!((got - 10.0).abs() < 1e-3, "{got}");
}

#[test]
fn ties_predict_the_first_class() {
    let shape = AdapterShape {
        fin: 3,
        hidden: 0,
        rank: 0,
        classes: 5,
        batch: 1,
    };
    let c = cfg(0.5);
    let mut arena = vec![0u32; arena_bytes(shape, &c).div_ceil(4)];
    let mut l = Learner::new(shape, None, c, bytemuck::cast_slice_mut(&mut arena)).unwrap();
    // All-zero parameters: every class equally likely.
    let s = Sample {
        emb: &[1, 2, 3],
        scale: 0.1,
        label: 0,
    };
    assert_eq!(l.predict(Slot::Active, &s).unwrap(), 0);
    // Classes 2 and 4 tie at the top: the first wins.
    let p = l.params_mut(Slot::Active);
    p[15 + 2] = 1.0;
    p[15 + 4] = 1.0;
    assert_eq!(l.predict(Slot::Active, &s).unwrap(), 2);
}

#[test]
fn init_copies_the_base_head_and_seeds_lora_a() {
    let seed = seed();
    let mut r = Rng(seed | 1);
    let (fin, hid, rank, classes) = (6, 5, 2, 4);
    let p = parts(&mut r, hid, fin);
    let fz = frozen(&p, hid, fin, true);
    let shape = AdapterShape {
        fin,
        hidden: hid,
        rank,
        classes,
        batch: 2,
    };
    let c = cfg(0.5);
    let mut arena = vec![0u32; arena_bytes(shape, &c).div_ceil(4)];
    let mut l = Learner::new(shape, Some(fz), c, bytemuck::cast_slice_mut(&mut arena)).unwrap();
    // The base model's classifier: 3 of the 4 classes, over the frozen layer's outputs.
    let hp = parts(&mut r, 3, hid);
    let head = frozen(&hp, 3, hid, false);
    l.init(Some(&head), seed).unwrap();
    let got = l.params(Slot::Active).to_vec();
    let (w0, b0, a0) = (0, classes * hid, classes * hid + classes);
    let bb0 = a0 + rank * fin;
    for j in 0..classes {
        for i in 0..hid {
            let want = if j < 3 { head.weight(j, i) } else { 0.0 };
            assert_eq!(got[w0 + j * hid + i], want, "W[{j}][{i}]");
        }
        let want = if j < 3 { head.bias(j) } else { 0.0 };
        assert_eq!(got[b0 + j], want, "b[{j}]");
    }
    let bound = 1.0 / (fin as f32).sqrt();
    let mut z = seed;
    for (i, &a) in got[a0..bb0].iter().enumerate() {
        z = splitmix(z);
        let want = ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound;
        assert_eq!(a, want, "CAIRN_SEED={seed}: A[{i}]");
    }
    assert!(
        got[bb0..].iter().all(|&v| v == 0.0),
        "LoRA B starts at zero"
    );
    // The candidate slot is initialised apart from the active one.
    let active = got;
    l.init_slot(Slot::Candidate, None, seed ^ 1).unwrap();
    assert_eq!(l.params(Slot::Active), &active[..]);
    assert!(l.params(Slot::Candidate)[..a0].iter().all(|&v| v == 0.0));
    assert_ne!(l.params(Slot::Candidate)[a0..bb0], active[a0..bb0]);
    // A head that does not read the frozen layer's outputs, or has more classes than the
    // adapter, is refused; one with exactly as many classes is taken.
    let wide = parts(&mut r, 4, hid + 1);
    let bad_k = frozen(&wide, 4, hid + 1, false);
    assert_eq!(l.init(Some(&bad_k), 1), Err(LearnError::ShapeMismatch));
    let many = parts(&mut r, 5, hid);
    let bad_n = frozen(&many, 5, hid, false);
    assert_eq!(l.init(Some(&bad_n), 1), Err(LearnError::ShapeMismatch));
    let all = parts(&mut r, 4, hid);
    assert!(l.init(Some(&frozen(&all, 4, hid, false)), 1).is_ok());
}

#[test]
fn slots_are_apart_and_a_candidate_starts_as_the_active_adapter() {
    let mut r = Rng(seed() | 1);
    let shape = AdapterShape {
        fin: 4,
        hidden: 0,
        rank: 0,
        classes: 3,
        batch: 2,
    };
    let c = cfg(0.5);
    let mut arena = vec![0u32; arena_bytes(shape, &c).div_ceil(4)];
    let mut l = Learner::new(shape, None, c, bytemuck::cast_slice_mut(&mut arena)).unwrap();
    let active: Vec<f32> = (0..shape.params()).map(|_| r.unit()).collect();
    l.params_mut(Slot::Active).copy_from_slice(&active);
    for v in l.params_mut(Slot::Candidate) {
        *v = 7.0;
    }
    assert_eq!(l.params(Slot::Active), &active[..]);
    assert!(l.params(Slot::Candidate).iter().all(|&v| v == 7.0));
    l.begin_candidate();
    assert_eq!(l.params(Slot::Candidate), &active[..]);
}

#[test]
fn batches_are_checked_at_their_bounds() {
    let shape = AdapterShape {
        fin: 2,
        hidden: 0,
        rank: 0,
        classes: 3,
        batch: 2,
    };
    let c = cfg(0.5);
    let mut arena = vec![0u32; arena_bytes(shape, &c).div_ceil(4)];
    let mut l = Learner::new(shape, None, c, bytemuck::cast_slice_mut(&mut arena)).unwrap();
    let s = |label, scale| Sample {
        emb: &[1, -1],
        scale,
        label,
    };
    // A full batch is fine; one more is not.
    assert!(l.loss(Slot::Active, &[s(0, 0.1), s(2, 0.1)]).is_ok());
    assert!(matches!(
        l.loss(Slot::Active, &[s(0, 0.1), s(1, 0.1), s(2, 0.1)]),
        Err(LearnError::WrongShape { .. })
    ));
    assert_eq!(
        l.loss(Slot::Active, &[s(3, 0.1)]),
        Err(LearnError::BadLabel(3))
    );
    for bad in [0.0, -0.1, f32::INFINITY, f32::NAN] {
        assert_eq!(
            l.loss(Slot::Active, &[s(0, bad)]),
            Err(LearnError::BadConfig),
            "scale {bad}"
        );
    }
}

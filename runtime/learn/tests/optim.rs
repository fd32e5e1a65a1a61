//! The optimizers' update rules, the hyper-parameter checks at their bounds, the stable
//! encoding of a training config, and gradient clipping.

use cairn_learn::optim::clip;
use cairn_learn::{Optimizer, TrainConfig};

#[test]
fn sgd_with_momentum_and_weight_decay() {
    let (lr, mu, wd) = (0.1f32, 0.9f32, 0.01f32);
    let opt = Optimizer::Sgd { lr, momentum: mu };
    assert_eq!(opt.state_per_param(), 1);
    let mut p = [1.0f32, -2.0, 0.5];
    let mut state = [0.0f32; 3];
    let (mut rp, mut rv) = (p, [0.0f32; 3]);
    for (t, grad) in [[0.5f32, 0.25, -1.0], [-0.125, 2.0, 0.75]]
        .iter()
        .enumerate()
    {
        opt.update(&mut p, grad, &mut state, t as u32 + 1, wd);
        for i in 0..3 {
            let g = grad[i] + wd * rp[i];
            rv[i] = mu * rv[i] + g;
            rp[i] -= lr * rv[i];
        }
        assert_eq!(p, rp, "step {t}");
        assert_eq!(state, rv, "step {t}");
    }
}

#[test]
fn adam_with_bias_correction() {
    let (lr, b1, b2, eps, wd) = (0.05f32, 0.8f32, 0.95f32, 1e-3f32, 0.1f32);
    let opt = Optimizer::Adam {
        lr,
        beta1: b1,
        beta2: b2,
        eps,
    };
    assert_eq!(opt.state_per_param(), 2);
    let mut p = [1.0f32, -2.0];
    let mut state = [0.0f32; 4];
    let (mut rp, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
    for t in 1..=3u32 {
        let grad = [0.5f32 * t as f32, -0.25];
        opt.update(&mut p, &grad, &mut state, t, wd);
        let (b1, b2) = (b1 as f64, b2 as f64);
        for i in 0..2 {
            let g = grad[i] as f64 + wd as f64 * rp[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let mh = m[i] / (1.0 - b1.powi(t as i32));
            let vh = v[i] / (1.0 - b2.powi(t as i32));
            rp[i] -= lr as f64 * mh / (vh.sqrt() + eps as f64);
            assert!(
                (p[i] as f64 - rp[i]).abs() < 1e-5,
                "t {t} p[{i}] {} vs {}",
                p[i],
                rp[i]
            );
            assert!((state[i] as f64 - m[i]).abs() < 1e-5, "t {t} m[{i}]");
            assert!((state[2 + i] as f64 - v[i]).abs() < 1e-5, "t {t} v[{i}]");
        }
    }
}

fn config(optimizer: Optimizer) -> TrainConfig {
    TrainConfig {
        optimizer,
        clip_norm: 1.0,
        weight_decay: 0.0,
        steps: 10,
        replay_per_batch: 2,
        lora_scale: 0.5,
        distill: 0.0,
        seed: 7,
    }
}

#[test]
fn hyper_parameters_are_checked_at_their_bounds() {
    let sgd = |lr, momentum| config(Optimizer::Sgd { lr, momentum }).check();
    assert!(sgd(0.0, 0.0) && sgd(1e3, 0.9999));
    assert!(!sgd(-1e-3, 0.5) && !sgd(1001.0, 0.5) && !sgd(f32::NAN, 0.5));
    assert!(!sgd(0.1, -0.1) && !sgd(0.1, 1.0) && !sgd(0.1, f32::INFINITY));
    let adam = |lr, beta1, beta2, eps| {
        config(Optimizer::Adam {
            lr,
            beta1,
            beta2,
            eps,
        })
        .check()
    };
    assert!(adam(0.0, 0.0, 0.0, 1e-12) && adam(1e3, 0.9999, 0.999999, 1.0));
    assert!(!adam(1001.0, 0.9, 0.999, 1e-8) && !adam(-1.0, 0.9, 0.999, 1e-8));
    assert!(!adam(0.1, 1.0, 0.999, 1e-8) && !adam(0.1, -0.1, 0.999, 1e-8));
    assert!(!adam(0.1, 0.9, 1.0, 1e-8) && !adam(0.1, 0.9, -0.1, 1e-8));
    assert!(!adam(0.1, 0.9, 0.999, 1e-13) && !adam(0.1, 0.9, 0.999, 1.5));
    assert!(!adam(0.1, 0.9, 0.999, f32::NAN));
    let base = config(Optimizer::adam(0.01));
    assert!(base.check());
    let with = |f: fn(&mut TrainConfig)| {
        let mut c = base;
        f(&mut c);
        c.check()
    };
    assert!(with(|c| c.clip_norm = 0.0));
    assert!(!with(|c| c.clip_norm = -1.0));
    assert!(!with(|c| c.clip_norm = f32::INFINITY));
    assert!(with(|c| c.weight_decay = 0.0));
    assert!(!with(|c| c.weight_decay = -0.5));
    assert!(!with(|c| c.weight_decay = f32::NAN));
    assert!(with(|c| c.lora_scale = -2.0));
    assert!(!with(|c| c.lora_scale = f32::INFINITY));
    assert!(with(|c| c.distill = 0.0));
    assert!(!with(|c| c.distill = -0.1));
    assert!(!with(|c| c.distill = f32::NAN));
}

#[test]
fn a_config_encodes_every_field_in_place() {
    let word = |b: &[u8; 52], i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    let c = TrainConfig {
        optimizer: Optimizer::Adam {
            lr: 0.5,
            beta1: 0.25,
            beta2: 0.75,
            eps: 2.0,
        },
        clip_norm: 3.0,
        weight_decay: 4.0,
        steps: 11,
        replay_per_batch: 12,
        lora_scale: 5.0,
        distill: 6.0,
        seed: 0x0102_0304_0506_0708,
    };
    let b = c.to_bytes();
    let want = [
        2,
        0.5f32.to_bits(),
        0.25f32.to_bits(),
        0.75f32.to_bits(),
        2.0f32.to_bits(),
        3.0f32.to_bits(),
        4.0f32.to_bits(),
        11,
        12,
        5.0f32.to_bits(),
    ];
    for (i, &w) in want.iter().enumerate() {
        assert_eq!(word(&b, i), w, "word {i}");
    }
    assert_eq!(&b[40..48], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(word(&b, 12), 6.0f32.to_bits());
    let s = TrainConfig {
        optimizer: Optimizer::Sgd {
            lr: 0.5,
            momentum: 0.25,
        },
        ..c
    }
    .to_bytes();
    assert_eq!(
        (
            word(&s, 0),
            word(&s, 1),
            word(&s, 2),
            word(&s, 3),
            word(&s, 4)
        ),
        (1, 0.5f32.to_bits(), 0.25f32.to_bits(), 0, 0)
    );
}

#[test]
fn clipping_scales_down_to_the_norm_only_when_over_it() {
    let mut g = [3.0f32, 4.0];
    assert_eq!(clip(&mut g, 5.0), 5.0);
    assert_eq!(g, [3.0, 4.0], "at the bound: unchanged");
    assert_eq!(clip(&mut g, 0.0), 5.0);
    assert_eq!(g, [3.0, 4.0], "0: clipping off");
    assert_eq!(clip(&mut g, 2.5), 5.0);
    assert_eq!(g, [1.5, 2.0]);
    assert_eq!(clip(&mut g, 10.0), 2.5);
    assert_eq!(g, [1.5, 2.0]);
}

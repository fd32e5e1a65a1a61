//! Optimizers over flat parameter slices, and the training hyper-parameters.

/// The update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// v ← μ v + g; p ← p − lr (v + wd p)
    Sgd { lr: f32, momentum: f32 },
    /// Adam with bias correction.
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
}

impl Optimizer {
    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
    pub fn state_per_param(&self) -> usize {
        match self {
            Optimizer::Sgd { .. } => 1,
            Optimizer::Adam { .. } => 2,
        }
    }
    fn valid(&self) -> bool {
        let ok = |v: f32, lo: f32, hi: f32| v.is_finite() && v >= lo && v <= hi;
        match *self {
            Optimizer::Sgd { lr, momentum } => ok(lr, 0.0, 1e3) && ok(momentum, 0.0, 0.9999),
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                ok(lr, 0.0, 1e3)
                    && ok(beta1, 0.0, 0.9999)
                    && ok(beta2, 0.0, 0.999999)
                    && ok(eps, 1e-12, 1.0)
            }
        }
    }

    /// One update of `params` from `grad`; `state` holds `state_per_param()` × len values;
    /// `t` counts steps from 1.
    pub fn update(&self, params: &mut [f32], grad: &[f32], state: &mut [f32], t: u32, wd: f32) {
        let n = params.len();
        match *self {
            Optimizer::Sgd { lr, momentum } => {
                for i in 0..n {
                    let g = grad[i] + wd * params[i];
                    state[i] = momentum * state[i] + g;
                    params[i] -= lr * state[i];
                }
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let (m, v) = state.split_at_mut(n);
                let c1 = 1.0 - libm::powf(beta1, t as f32);
                let c2 = 1.0 - libm::powf(beta2, t as f32);
                for i in 0..n {
                    let g = grad[i] + wd * params[i];
                    m[i] = beta1 * m[i] + (1.0 - beta1) * g;
                    v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
                    let mh = m[i] / c1;
                    let vh = v[i] / c2;
                    params[i] -= lr * mh / (libm::sqrtf(vh) + eps);
                }
            }
        }
    }
}

/// Hyper-parameters of a training run (they enter the checkpoint id).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    /// Gradients are scaled down to this global L2 norm when larger (0 = off).
    pub clip_norm: f32,
    pub weight_decay: f32,
    pub steps: u32,
    /// Replayed (old) samples per batch; the rest are new.
    pub replay_per_batch: usize,
    /// LoRA output scale (alpha / rank).
    pub lora_scale: f32,
    /// Weight of the distillation loss on replayed samples (0 = off).
    pub distill: f32,
    pub seed: u64,
}

impl TrainConfig {
    pub fn check(&self) -> bool {
        self.optimizer.valid()
            && self.clip_norm.is_finite()
            && self.clip_norm >= 0.0
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0
            && self.lora_scale.is_finite()
            && self.distill.is_finite()
            && self.distill >= 0.0
    }

    /// A stable byte encoding (for the checkpoint id and the log).
    pub fn to_bytes(&self) -> [u8; 52] {
        let mut b = [0u8; 52];
        let (kind, a, c, d, e) = match self.optimizer {
            Optimizer::Sgd { lr, momentum } => (1u32, lr, momentum, 0.0, 0.0),
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => (2, lr, beta1, beta2, eps),
        };
        let words: [u32; 10] = [
            kind,
            a.to_bits(),
            c.to_bits(),
            d.to_bits(),
            e.to_bits(),
            self.clip_norm.to_bits(),
            self.weight_decay.to_bits(),
            self.steps,
            self.replay_per_batch as u32,
            self.lora_scale.to_bits(),
        ];
        for (i, w) in words.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        b[40..48].copy_from_slice(&self.seed.to_le_bytes());
        b[48..52].copy_from_slice(&self.distill.to_bits().to_le_bytes());
        b
    }
}

/// Scale `g` down to global norm `max` if it is larger; returns the norm before.
pub fn clip(g: &mut [f32], max: f32) -> f32 {
    let norm = libm::sqrtf(g.iter().map(|v| v * v).sum());
    if max > 0.0 && norm > max {
        let s = max / norm;
        g.iter_mut().for_each(|v| *v *= s);
    }
    norm
}

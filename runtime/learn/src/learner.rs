//! The learner: forward, backward and update of the adapter, in the planned arena.
//!
//! Two parameter slots: **active** (what inference uses) and **candidate** (what training
//! writes). Training never touches the active slot; [`Learner::promote`] copies the candidate
//! over it, only when the gate says so.

use crate::frozen::FrozenFc;
use crate::layout::{AdapterShape, Layout};
use crate::optim::{clip, TrainConfig};
use crate::LearnError;

/// One training or evaluation example: stored features (int8 with scale, as in the memory
/// store) and a label.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    pub emb: &'a [i8],
    pub scale: f32,
    pub label: u16,
}

/// Which parameter slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Active,
    Candidate,
}

/// The arena cut into its named parts.
struct Parts<'s> {
    active: &'s mut [f32],
    cand: &'s mut [f32],
    grad: &'s mut [f32],
    opt: &'s mut [f32],
    x: &'s mut [f32],
    z: &'s mut [f32],
    u: &'s mut [f32],
    h: &'s mut [f32],
    p: &'s mut [f32],
    q: &'s mut [f32],
    dh: &'s mut [f32],
    du: &'s mut [f32],
}

pub struct Learner<'a, 'm> {
    layout: Layout,
    f: &'a mut [f32],
    q: &'a mut [i8],
    frozen: Option<FrozenFc<'m>>,
    cfg: TrainConfig,
    t: u32,
}

/// Bytes of arena a learner needs (f32 plan + the int8 input scratch of the frozen layer).
pub fn arena_bytes(shape: AdapterShape, cfg: &TrainConfig) -> usize {
    Layout::new(shape, &cfg.optimizer).bytes() + shape.fin
}

impl<'a, 'm> Learner<'a, 'm> {
    /// Plan the arena for `shape` and `cfg` and check it fits `arena` (4-byte aligned).
    /// With `frozen`, the adapter is LoRA on that layer (its k and n must match `fin` and
    /// `hidden`) under the head; without, a head over the features.
    pub fn new(
        shape: AdapterShape,
        frozen: Option<FrozenFc<'m>>,
        cfg: TrainConfig,
        arena: &'a mut [u8],
    ) -> Result<Self, LearnError> {
        if shape.batch == 0 || shape.classes < 2 || shape.fin == 0 || !cfg.check() {
            return Err(LearnError::BadConfig);
        }
        match (&frozen, shape.hidden) {
            (None, 0) => {}
            (Some(fz), h) if fz.k == shape.fin && fz.n == h => {}
            _ => return Err(LearnError::ShapeMismatch),
        }
        let layout = Layout::new(shape, &cfg.optimizer);
        let need = layout.bytes() + shape.fin;
        if arena.len() < need {
            return Err(LearnError::ArenaTooSmall {
                need,
                have: arena.len(),
            });
        }
        let (fb, rest) = arena.split_at_mut(layout.bytes());
        let f: &mut [f32] =
            bytemuck::try_cast_slice_mut(fb).map_err(|_| LearnError::ArenaMisaligned)?;
        let q: &mut [i8] = bytemuck::cast_slice_mut(&mut rest[..shape.fin]);
        f.fill(0.0);
        Ok(Learner {
            layout,
            f,
            q,
            frozen,
            cfg,
            t: 0,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    /// Bytes of arena in use (the training peak: nothing else is allocated).
    pub fn arena_bytes(&self) -> usize {
        self.layout.bytes() + self.layout.shape.fin
    }

    fn parts(&mut self) -> Parts<'_> {
        let l = &self.layout;
        let s = &l.shape;
        let np = s.params();
        let sizes = [
            np,
            np,
            np,
            l.opt_len,
            s.batch * s.fin,
            s.batch * s.hidden,
            l.h - l.u,
            s.batch * s.hidden,
            s.batch * s.classes,
            s.batch * s.classes,
            s.head_in(),
            s.rank,
        ];
        let mut rest: &mut [f32] = self.f;
        let mut out: [&mut [f32]; 12] = Default::default();
        for (o, n) in out.iter_mut().zip(sizes) {
            let (a, b) = rest.split_at_mut(n);
            *o = a;
            rest = b;
        }
        let [active, cand, grad, opt, x, z, u, h, p, q, dh, du] = out;
        Parts {
            active,
            cand,
            grad,
            opt,
            x,
            z,
            u,
            h,
            p,
            q,
            dh,
            du,
        }
    }

    /// The parameters of a slot: `[head W (classes × head_in) | head b | LoRA A | LoRA B]`.
    pub fn params(&self, slot: Slot) -> &[f32] {
        let np = self.layout.shape.params();
        let off = match slot {
            Slot::Active => self.layout.active,
            Slot::Candidate => self.layout.candidate,
        };
        &self.f[off..off + np]
    }

    /// Overwrite a slot's parameters bit for bit (rollback, loading a checkpoint).
    pub fn set_params(&mut self, slot: Slot, p: &[f32]) -> Result<(), LearnError> {
        let np = self.layout.shape.params();
        if p.len() != np {
            return Err(LearnError::WrongShape {
                expected: np,
                got: p.len(),
            });
        }
        let off = match slot {
            Slot::Active => self.layout.active,
            Slot::Candidate => self.layout.candidate,
        };
        self.f[off..off + np].copy_from_slice(p);
        Ok(())
    }

    /// A slot's parameters, to edit in place (merging contributions into the candidate).
    pub fn params_mut(&mut self, slot: Slot) -> &mut [f32] {
        let np = self.layout.shape.params();
        let off = match slot {
            Slot::Active => self.layout.active,
            Slot::Candidate => self.layout.candidate,
        };
        &mut self.f[off..off + np]
    }

    /// Fresh active parameters: the head's first rows from `head` (the base model's own
    /// classifier, dequantized), the others zero; LoRA A small and seeded, B zero (so the
    /// adapter starts as the base model).
    pub fn init(&mut self, head: Option<&FrozenFc<'_>>, seed: u64) -> Result<(), LearnError> {
        self.init_slot(Slot::Active, head, seed)
    }

    /// [`Learner::init`] into either slot (the candidate: the base adapter that deltas are
    /// measured from, without touching the active one).
    pub fn init_slot(
        &mut self,
        slot: Slot,
        head: Option<&FrozenFc<'_>>,
        seed: u64,
    ) -> Result<(), LearnError> {
        let [(w0, _), (b0, _), (a0, al), _] = self.layout.param_parts();
        let hin = self.layout.shape.head_in();
        let classes = self.layout.shape.classes;
        if let Some(hd) = head {
            if hd.k != hin || hd.n > classes {
                return Err(LearnError::ShapeMismatch);
            }
        }
        let fin = self.layout.shape.fin as f32;
        let p = self.parts();
        let dst = match slot {
            Slot::Active => p.active,
            Slot::Candidate => p.cand,
        };
        dst.fill(0.0);
        if let Some(hd) = head {
            for j in 0..hd.n {
                for i in 0..hin {
                    dst[w0 + j * hin + i] = hd.weight(j, i);
                }
                dst[b0 + j] = hd.bias(j);
            }
        }
        let mut rng = seed;
        let bound = 1.0 / libm::sqrtf(fin);
        for v in &mut dst[a0..a0 + al] {
            rng = splitmix(rng);
            *v = ((rng >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound;
        }
        Ok(())
    }

    /// Start a candidate: a copy of the active slot, optimizer state cleared.
    pub fn begin_candidate(&mut self) {
        let p = self.parts();
        p.cand.copy_from_slice(p.active);
        p.opt.fill(0.0);
        self.t = 0;
    }

    /// Make the candidate the active adapter.
    pub fn promote(&mut self) {
        let p = self.parts();
        p.active.copy_from_slice(p.cand);
    }

    /// One optimizer step of the candidate on `batch` (at most `shape.batch` samples).
    /// Returns the mean cross-entropy before the update.
    pub fn step(&mut self, batch: &[Sample<'_>]) -> Result<f32, LearnError> {
        self.step_replay(batch, 0)
    }

    /// Like [`Learner::step`], where the first `replayed` samples are replayed old ones:
    /// with `TrainConfig::distill` > 0 their loss also pulls the candidate's outputs toward
    /// the active adapter's (knowledge distillation, so old decisions move less).
    pub fn step_replay(
        &mut self,
        batch: &[Sample<'_>],
        replayed: usize,
    ) -> Result<f32, LearnError> {
        self.check(batch)?;
        let distilled = self.prepare_distill(batch, replayed);
        let loss = self.forward(Slot::Candidate, batch);
        self.backward(batch, distilled);
        let (clip_norm, wd, opt) = (
            self.cfg.clip_norm,
            self.cfg.weight_decay,
            self.cfg.optimizer,
        );
        self.t += 1;
        let t = self.t;
        let p = self.parts();
        clip(p.grad, clip_norm);
        opt.update(p.cand, p.grad, p.opt, t, wd);
        Ok(loss)
    }

    /// Mean cross-entropy of a slot on `batch` (no update).
    pub fn loss(&mut self, slot: Slot, batch: &[Sample<'_>]) -> Result<f32, LearnError> {
        self.check(batch)?;
        Ok(self.forward(slot, batch))
    }

    /// The gradient of the candidate's loss on `batch` (as `step_replay` would use it,
    /// before clipping), without updating anything.
    pub fn gradient(
        &mut self,
        batch: &[Sample<'_>],
        replayed: usize,
    ) -> Result<&[f32], LearnError> {
        self.check(batch)?;
        let distilled = self.prepare_distill(batch, replayed);
        self.forward(Slot::Candidate, batch);
        self.backward(batch, distilled);
        Ok(self.parts().grad)
    }

    fn check(&self, batch: &[Sample<'_>]) -> Result<(), LearnError> {
        let s = self.layout.shape;
        if batch.is_empty() || batch.len() > s.batch {
            return Err(LearnError::WrongShape {
                expected: s.batch,
                got: batch.len(),
            });
        }
        for b in batch {
            if b.emb.len() != s.fin {
                return Err(LearnError::WrongShape {
                    expected: s.fin,
                    got: b.emb.len(),
                });
            }
            if b.label as usize >= s.classes {
                return Err(LearnError::BadLabel(b.label));
            }
            if !(b.scale.is_finite() && b.scale > 0.0) {
                return Err(LearnError::BadConfig);
            }
        }
        Ok(())
    }

    /// Targets of distillation for the first `replayed` samples; how many are distilled.
    fn prepare_distill(&mut self, batch: &[Sample<'_>], replayed: usize) -> usize {
        let distilled = if self.cfg.distill > 0.0 {
            replayed.min(batch.len())
        } else {
            0
        };
        if distilled > 0 {
            self.forward(Slot::Active, &batch[..distilled]);
            let c = self.layout.shape.classes;
            let p = self.parts();
            p.q[..distilled * c].copy_from_slice(&p.p[..distilled * c]);
        }
        distilled
    }

    /// The predicted class of one sample with a slot's parameters.
    pub fn predict(&mut self, slot: Slot, s: &Sample<'_>) -> Result<u16, LearnError> {
        let shape = self.layout.shape;
        if s.emb.len() != shape.fin {
            return Err(LearnError::WrongShape {
                expected: shape.fin,
                got: s.emb.len(),
            });
        }
        let one = Sample { label: 0, ..*s };
        self.forward(slot, core::slice::from_ref(&one));
        let p = &self.parts().p[..shape.classes];
        let mut best = 0;
        for (c, &v) in p.iter().enumerate() {
            if v > p[best] {
                best = c;
            }
        }
        Ok(best as u16)
    }

    /// Forward rows `0..batch.len()`; activations stay in the arena for backward.
    fn forward(&mut self, slot: Slot, batch: &[Sample<'_>]) -> f32 {
        let s = self.layout.shape;
        let [(w0, _), (b0, _), (a0, _), (bb0, _)] = self.layout.param_parts();
        let (fin, hid, r, c, hin) = (s.fin, s.hidden, s.rank, s.classes, s.head_in());
        let lora_scale = self.cfg.lora_scale;
        let frozen = self.frozen;
        let qbuf = core::mem::take(&mut self.q);
        let p = self.parts();
        let params: &[f32] = match slot {
            Slot::Active => p.active,
            Slot::Candidate => p.cand,
        };
        let mut loss = 0.0;
        for (row, smp) in batch.iter().enumerate() {
            let x = &mut p.x[row * fin..(row + 1) * fin];
            for (xi, &e) in x.iter_mut().zip(smp.emb) {
                *xi = e as f32 * smp.scale;
            }
            let hin_v: &[f32] = if let Some(fz) = &frozen {
                let z = &mut p.z[row * hid..(row + 1) * hid];
                fz.forward(x, &mut *qbuf, z);
                if r > 0 {
                    let u = &mut p.u[row * r..(row + 1) * r];
                    for (k, uk) in u.iter_mut().enumerate() {
                        *uk = dotf(&params[a0 + k * fin..a0 + (k + 1) * fin], x);
                    }
                    for (j, zj) in z.iter_mut().enumerate() {
                        *zj += lora_scale * dotf(&params[bb0 + j * r..bb0 + (j + 1) * r], u);
                    }
                }
                let h = &mut p.h[row * hid..(row + 1) * hid];
                for (hj, &zj) in h.iter_mut().zip(z.iter()) {
                    *hj = if fz.relu { zj.max(0.0) } else { zj };
                }
                h
            } else {
                x
            };
            let pr = &mut p.p[row * c..(row + 1) * c];
            for (j, pj) in pr.iter_mut().enumerate() {
                *pj = params[b0 + j] + dotf(&params[w0 + j * hin..w0 + (j + 1) * hin], hin_v);
            }
            let m = pr.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            let mut sum = 0.0;
            for v in pr.iter_mut() {
                *v = libm::expf(*v - m);
                sum += *v;
            }
            for v in pr.iter_mut() {
                *v /= sum;
            }
            loss -= libm::logf(pr[smp.label as usize].max(1e-30));
        }
        self.q = qbuf;
        loss / batch.len() as f32
    }

    /// Gradients of the mean loss of the last forward (candidate slot) into `grad`.
    fn backward(&mut self, batch: &[Sample<'_>], distilled: usize) {
        let s = self.layout.shape;
        let [(w0, _), (b0, _), (a0, _), (bb0, _)] = self.layout.param_parts();
        let (fin, hid, r, c, hin) = (s.fin, s.hidden, s.rank, s.classes, s.head_in());
        let lora_scale = self.cfg.lora_scale;
        let relu = self.frozen.map(|f| f.relu);
        let lambda = self.cfg.distill;
        let p = self.parts();
        p.grad.fill(0.0);
        let inv = 1.0 / batch.len() as f32;
        for (row, smp) in batch.iter().enumerate() {
            let g = &mut p.p[row * c..(row + 1) * c];
            if row < distilled {
                // d/dlogits of CE + λ·KL(q ‖ p) = (p − y) + λ (p − q).
                for (gj, &qj) in g.iter_mut().zip(&p.q[row * c..(row + 1) * c]) {
                    *gj += lambda * (*gj - qj);
                }
            }
            g[smp.label as usize] -= 1.0;
            g.iter_mut().for_each(|v| *v *= inv);
            let x = &p.x[row * fin..(row + 1) * fin];
            let hin_v: &[f32] = if relu.is_some() {
                &p.h[row * hid..(row + 1) * hid]
            } else {
                x
            };
            for (j, &gj) in g.iter().enumerate() {
                p.grad[b0 + j] += gj;
                axpy(&mut p.grad[w0 + j * hin..w0 + (j + 1) * hin], gj, hin_v);
            }
            let Some(relu) = relu else { continue };
            if r == 0 {
                continue;
            }
            // dh = Wᵀ g, then through the ReLU: dz.
            p.dh.fill(0.0);
            for (j, &gj) in g.iter().enumerate() {
                axpy(p.dh, gj, &p.cand[w0 + j * hin..w0 + (j + 1) * hin]);
            }
            let z = &p.z[row * hid..(row + 1) * hid];
            for (d, &zj) in p.dh.iter_mut().zip(z) {
                if relu && zj <= 0.0 {
                    *d = 0.0;
                }
            }
            let u = &p.u[row * r..(row + 1) * r];
            p.du.fill(0.0);
            for (j, &dz) in p.dh.iter().enumerate() {
                if dz == 0.0 {
                    continue;
                }
                let brow = &p.cand[bb0 + j * r..bb0 + (j + 1) * r];
                axpy(p.du, lora_scale * dz, brow);
                axpy(
                    &mut p.grad[bb0 + j * r..bb0 + (j + 1) * r],
                    lora_scale * dz,
                    u,
                );
            }
            for (k, &duk) in p.du.iter().enumerate() {
                axpy(&mut p.grad[a0 + k * fin..a0 + (k + 1) * fin], duk, x);
            }
        }
    }

    /// Fold a slot's LoRA delta into the frozen layer as int8 weights in the model's own
    /// layout — per output channel: weights `w` (n × k), int32 `bias`, requantization
    /// multipliers `mult` for an output of scale `out_scale` — ready to be written over the
    /// layer's constants (see [`crate::lineage::patch_fc`]).
    pub fn fold(
        &self,
        slot: Slot,
        out_scale: f32,
        w: &mut [i8],
        bias: &mut [i32],
        mult: &mut [f32],
    ) -> Result<(), LearnError> {
        let fz = self.frozen.ok_or(LearnError::ShapeMismatch)?;
        let s = self.layout.shape;
        let (n, k, r) = (fz.n, fz.k, s.rank);
        if w.len() != n * k || bias.len() != n || mult.len() != n {
            return Err(LearnError::WrongShape {
                expected: n * k,
                got: w.len(),
            });
        }
        let [_, _, (a0, _), (bb0, _)] = self.layout.param_parts();
        let params = self.params(slot);
        for j in 0..n {
            let eff = |i: usize| {
                let mut v = fz.weight(j, i);
                for kk in 0..r {
                    v += self.cfg.lora_scale * params[bb0 + j * r + kk] * params[a0 + kk * k + i];
                }
                v
            };
            let peak = (0..k).fold(0.0f32, |a, i| a.max(eff(i).abs()));
            let ws = if peak > 0.0 { peak / 127.0 } else { 1.0 };
            for i in 0..k {
                w[j * k + i] = libm::rintf(eff(i) / ws).clamp(-127.0, 127.0) as i8;
            }
            let acc = fz.x_scale * ws;
            bias[j] = libm::rintf(fz.bias(j) / acc) as i32;
            mult[j] = acc / out_scale;
        }
        Ok(())
    }
}

fn dotf(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

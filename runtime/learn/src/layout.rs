//! The training plan: one `f32` arena holds everything, at offsets fixed before the first
//! step. Parameters are one contiguous block per slot (`[head W | head b | LoRA A | LoRA B]`)
//! so optimizers and clipping run over flat slices.

use crate::optim::Optimizer;

/// What the adapter looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterShape {
    /// Length of the feature vectors stored in memory (the frozen layer's input).
    pub fin: usize,
    /// Outputs of the frozen int8 layer (the head's input); 0 = no frozen layer, the head
    /// reads the features directly.
    pub hidden: usize,
    /// LoRA rank on the frozen layer; 0 = head only.
    pub rank: usize,
    pub classes: usize,
    /// Samples per step.
    pub batch: usize,
}

impl AdapterShape {
    /// The head's input width.
    pub fn head_in(&self) -> usize {
        if self.hidden == 0 {
            self.fin
        } else {
            self.hidden
        }
    }
    /// Parameters of one slot.
    pub fn params(&self) -> usize {
        let lora = if self.hidden == 0 {
            0
        } else {
            self.rank * (self.fin + self.hidden)
        };
        self.classes * self.head_in() + self.classes + lora
    }
}

/// Offsets (in `f32`s) of every buffer in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub shape: AdapterShape,
    pub active: usize,
    pub candidate: usize,
    pub grad: usize,
    /// Optimizer state: momentum, or Adam's first and second moments.
    pub opt: usize,
    pub opt_len: usize,
    /// Activations kept for backward, per batch: x, z (pre-ReLU), u (LoRA middle), h, p.
    pub x: usize,
    pub z: usize,
    pub u: usize,
    pub h: usize,
    pub p: usize,
    /// The active slot's probabilities, the distillation targets of replayed samples.
    pub q: usize,
    /// Scratch for backward: dh, du for one sample.
    pub dh: usize,
    pub du: usize,
    /// Total `f32`s.
    pub len: usize,
}

impl Layout {
    pub fn new(shape: AdapterShape, opt: &Optimizer) -> Layout {
        let np = shape.params();
        let b = shape.batch;
        let hid = shape.hidden;
        let mut at = 0;
        let mut take = |n: usize| {
            let o = at;
            at += n;
            o
        };
        let active = take(np);
        let candidate = take(np);
        let grad = take(np);
        let opt_len = np * opt.state_per_param();
        let opt_off = take(opt_len);
        let x = take(b * shape.fin);
        let z = take(b * hid);
        let u = take(b * if hid == 0 { 0 } else { shape.rank });
        let h = take(b * hid);
        let p = take(b * shape.classes);
        let q = take(b * shape.classes);
        let dh = take(shape.head_in());
        let du = take(shape.rank);
        Layout {
            shape,
            active,
            candidate,
            grad,
            opt: opt_off,
            opt_len,
            x,
            z,
            u,
            h,
            p,
            q,
            dh,
            du,
            len: at,
        }
    }
    /// Bytes of arena the plan needs: the training peak, stated before training starts.
    pub fn bytes(&self) -> usize {
        self.len * 4
    }
    /// Offsets of head W, head b, LoRA A, LoRA B inside a parameter slot.
    pub fn param_parts(&self) -> [(usize, usize); 4] {
        let s = &self.shape;
        let w = s.classes * s.head_in();
        let a = if s.hidden == 0 { 0 } else { s.rank * s.fin };
        let bb = if s.hidden == 0 { 0 } else { s.hidden * s.rank };
        [
            (0, w),
            (w, s.classes),
            (w + s.classes, a),
            (w + s.classes + a, bb),
        ]
    }
}

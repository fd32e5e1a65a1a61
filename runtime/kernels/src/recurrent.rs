//! `Recurrent`: one direction of an LSTM, GRU or RNN over its whole sequence, f32
//! (`cairn_core::op::recurrent` states the inputs and the output).
//!
//! Each batch row runs its steps in order. A step starts from the step's input projection
//! (input 0, its biases folded in by the converter), adds the recurrent product `h·Rᵀ` of
//! the previous hidden state (input 1 holds `Rᵀ`, `[H, G·H]`, so the product is a sum of
//! weight rows scaled by `h`'s entries: contiguous columns, no horizontal sums), applies
//! the gates and writes the new hidden state into the output row of its time index. The
//! hidden units are taken in chunks whose gate pre-activations fit a stack tile
//! (`ACC` floats: every unit at once up to H = 256 for an LSTM); the cell state and the
//! previous hidden state are stack rows of at most `MAX_HIDDEN`. No allocation, no
//! threads: the op is one op of the model instead of a dozen per step, and its time is
//! the products and the gate functions.
//!
//! The arithmetic is generic over [`Step`]: the reference here (products in input order,
//! the gate functions of `unary_value`), the AVX2 + FMA one in `fast_f32/recurrent.rs`
//! (the same order with fused multiply-adds, the vector gate functions), within the f32
//! tolerances of `tests/exact_f32_fast.rs`.

use cairn_core::op::{recurrent as r, UnaryFn};
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::eltwise::unary_value;

/// Gate pre-activations a chunk holds (G × its units).
pub(crate) const ACC: usize = 1024;

/// An activation with its parameters.
#[derive(Clone, Copy)]
pub(crate) struct Act {
    pub f: UnaryFn,
    pub a: f32,
    pub b: f32,
}

/// The arithmetic a step needs.
pub(crate) trait Step {
    /// `acc[j] += Σ_k h[k] · w[k·ld + j]` for every `j < acc.len()`, the terms added in
    /// `k` order.
    fn product(&self, h: &[f32], w: &[f32], ld: usize, acc: &mut [f32]);
    /// `y[i] = act(y[i])`.
    fn apply(&self, act: Act, y: &mut [f32]);
    /// A chunk of an LSTM step with the default functions (sigmoid, tanh, tanh) in one
    /// pass over its units; `false` where this arithmetic has none (the step applies
    /// the functions gate by gate).
    fn lstm_cell(&self, _c: LstmChunk<'_>) -> bool {
        false
    }
    /// A chunk of a GRU step under `linear_before_reset` with the default functions
    /// (sigmoid, tanh) in one pass; `false` where this arithmetic has none.
    fn gru_cell(&self, _c: GruChunk<'_>) -> bool {
        false
    }
}

/// One chunk of `n` units of an LSTM step: the gates' pre-activations (products and
/// projections summed, peepholes not yet added), the cell state (previous in, new out),
/// the peepholes of these units (i, o, f), the clip (+∞: none) and the hidden state out.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct LstmChunk<'a> {
    pub i: &'a [f32],
    pub o: &'a [f32],
    pub f: &'a [f32],
    pub g: &'a [f32],
    pub c: &'a mut [f32],
    pub peep: Option<[&'a [f32]; 3]>,
    pub clip: f32,
    pub y: &'a mut [f32],
}

/// One chunk of `n` units of a GRU step under `linear_before_reset`: z and r
/// pre-activations, the h gate's recurrent part `h·R_hᵀ + Rb_h` and its projection, the
/// previous hidden state, the clip and the new hidden state out.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct GruChunk<'a> {
    pub z: &'a [f32],
    pub r: &'a [f32],
    pub hh: &'a [f32],
    pub xh: &'a [f32],
    pub hp: &'a [f32],
    pub clip: f32,
    pub y: &'a mut [f32],
}

/// The reference arithmetic.
pub(crate) struct Plain;

impl Step for Plain {
    fn product(&self, h: &[f32], w: &[f32], ld: usize, acc: &mut [f32]) {
        let n = acc.len();
        for (k, &hk) in h.iter().enumerate() {
            let row = &w[k * ld..k * ld + n];
            for (a, &wv) in acc.iter_mut().zip(row) {
                *a += hk * wv;
            }
        }
    }

    fn apply(&self, act: Act, y: &mut [f32]) {
        for v in y {
            *v = unary_value(act.f, act.a, act.b, *v);
        }
    }
}

/// What a step reads: its projections (G·H), the previous hidden state, whether there is
/// one (no initial state: the first step's product is left out) and the units a chunk
/// takes.
struct StepIn<'a> {
    xrow: &'a [f32],
    hp: &'a [f32],
    have_h: bool,
    unit: usize,
}

/// The op's inputs and parameters, checked against each other.
pub(crate) struct Seq<'a> {
    cell: i32,
    flags: i32,
    clip: f32,
    acts: [Act; 3],
    t: usize,
    b: usize,
    h: usize,
    g: usize,
    xp: &'a [f32],
    rt: &'a [f32],
    rb: Option<&'a [f32]>,
    h0: Option<&'a [f32]>,
    c0: Option<&'a [f32]>,
    peep: Option<&'a [f32]>,
}

impl<'a> Seq<'a> {
    pub(crate) fn of(call: &OpCall<'a>) -> Result<Seq<'a>, ExecError> {
        let f32s = |k: usize| -> Result<Option<&'a [f32]>, ExecError> {
            call.input(k).map(|t| t.f32s()).transpose()
        };
        let x = call.req(0)?;
        let w = call.req(1)?;
        let cell = call.param(r::CELL);
        let g = r::gates(cell).ok_or(ExecError::Shape)?;
        let xs = x.info.shape;
        if xs.rank() != 3 || w.info.shape.rank() != 2 {
            return Err(ExecError::Shape);
        }
        let (t, b, h) = (xs.dim(0), xs.dim(1), w.info.shape.dim(0));
        let act = |k: usize| -> Result<Act, ExecError> {
            Ok(Act {
                f: UnaryFn::from_code(call.param(r::ACTS + 3 * k)).ok_or(ExecError::Shape)?,
                a: call.param_f32(r::ACTS + 3 * k + 1),
                b: call.param_f32(r::ACTS + 3 * k + 2),
            })
        };
        let mut acts = [Act {
            f: UnaryFn::Identity,
            a: 0.0,
            b: 0.0,
        }; 3];
        for (k, a) in acts.iter_mut().enumerate().take(r::activations(cell)) {
            *a = act(k)?;
        }
        let s = Seq {
            cell,
            flags: call.param(r::FLAGS),
            clip: call.param_f32(r::CLIP),
            acts,
            t,
            b,
            h,
            g,
            xp: x.f32s()?,
            rt: w.f32s()?,
            rb: f32s(2)?,
            h0: f32s(3)?,
            c0: f32s(4)?,
            peep: f32s(5)?,
        };
        // The loader checked these (`op::rules`); a direct caller gets an error, not a
        // panic.
        if h == 0 || h > r::MAX_HIDDEN {
            return Err(ExecError::Shape);
        }
        // h ≤ MAX_HIDDEN: g·h, h·g·h and 3·h cannot overflow; t·b·g·h and b·h are
        // checked (a 32-bit device's usize).
        let gh = g * h;
        let rows = t.checked_mul(b).ok_or(ExecError::Shape)?;
        let fits = |v: Option<&[f32]>, n: Option<usize>| v.is_none_or(|v| Some(v.len()) == n);
        if Some(s.xp.len()) != rows.checked_mul(gh)
            || s.rt.len() != h * gh
            || !fits(s.rb, Some(gh))
            || !fits(s.h0, b.checked_mul(h))
            || !fits(s.c0, b.checked_mul(h))
            || !fits(s.peep, Some(3 * h))
        {
            return Err(ExecError::Shape);
        }
        Ok(s)
    }

    /// Rows of the output: T, or T + 1 with the final cell state.
    /// (`None` past `usize`: no output can hold it).
    pub(crate) fn out_len(&self) -> Option<usize> {
        let rows = self
            .t
            .checked_add(usize::from(self.flags & r::CELL_STATE_ROW != 0))?;
        rows.checked_mul(self.b)?.checked_mul(self.h)
    }

    /// Whether the cell's functions are ONNX's defaults (sigmoid, then tanh).
    fn default_acts(&self) -> bool {
        let is = |k: usize, f: UnaryFn| self.acts[k].f == f;
        is(0, UnaryFn::Sigmoid)
            && is(1, UnaryFn::Tanh)
            && (self.cell != r::LSTM || is(2, UnaryFn::Tanh))
    }

    /// The gate activation `k` (f or g) after the clip.
    fn gate<S: Step>(&self, s: &S, k: usize, y: &mut [f32]) {
        if self.clip.is_finite() {
            for v in y.iter_mut() {
                *v = v.max(-self.clip).min(self.clip);
            }
        }
        s.apply(self.acts[k], y);
    }

    /// Columns `col..col + n` of gates `q0..q0 + nq` (each `h` wide) into `acc` (`nq` runs
    /// of `n`): every gate at once when the chunk is the whole hidden state.
    fn product<S: Step>(
        &self,
        s: &S,
        hp: &[f32],
        q0: usize,
        nq: usize,
        col: usize,
        acc: &mut [f32],
    ) {
        let (h, gh) = (self.h, self.g * self.h);
        let n = acc.len() / nq;
        if n == h {
            s.product(hp, &self.rt[q0 * h..], gh, acc);
        } else {
            for (q, a) in acc.chunks_exact_mut(n).enumerate() {
                s.product(hp, &self.rt[(q0 + q) * h + col..], gh, a);
            }
        }
    }

    /// Run every step, writing the output.
    pub(crate) fn run<S: Step>(&self, s: &S, out: &mut [f32]) -> Result<(), ExecError> {
        if Some(out.len()) != self.out_len() {
            return Err(ExecError::Shape);
        }
        let (t, b, h, g) = (self.t, self.b, self.h, self.g);
        let gh = g * h;
        let mut hbuf = [0f32; r::MAX_HIDDEN];
        let mut cbuf = [0f32; r::MAX_HIDDEN];
        let mut rhbuf = [0f32; r::MAX_HIDDEN];
        let mut acc = [0f32; ACC];
        // Units per chunk: G of their pre-activations in `acc`.
        let unit = h.min(ACC / g);
        let reverse = self.flags & r::REVERSE != 0;
        for bi in 0..b {
            let (hp, cp) = (&mut hbuf[..h], &mut cbuf[..h]);
            let mut have_h = self.h0.is_some();
            match self.h0 {
                Some(h0) => hp.copy_from_slice(&h0[bi * h..(bi + 1) * h]),
                None => hp.fill(0.0),
            }
            match self.c0 {
                Some(c0) => cp.copy_from_slice(&c0[bi * h..(bi + 1) * h]),
                None => cp.fill(0.0),
            }
            for step in 0..t {
                let ti = if reverse { t - 1 - step } else { step };
                let st = StepIn {
                    xrow: &self.xp[(ti * b + bi) * gh..][..gh],
                    hp,
                    have_h,
                    unit,
                };
                let yrow = &mut out[(ti * b + bi) * h..][..h];
                match self.cell {
                    r::LSTM => self.lstm_step(s, &st, cp, yrow, &mut acc),
                    r::GRU if self.flags & r::LINEAR_BEFORE_RESET != 0 => {
                        self.gru_lbr_step(s, &st, yrow, &mut acc)
                    }
                    r::GRU => self.gru_step(s, &st, &mut rhbuf[..h], yrow, &mut acc),
                    _ => self.rnn_step(s, &st, yrow, &mut acc),
                }
                hp.copy_from_slice(yrow);
                have_h = true;
            }
            if self.flags & r::CELL_STATE_ROW != 0 {
                out[(t * b + bi) * h..][..h].copy_from_slice(cp);
            }
        }
        Ok(())
    }

    /// `acc` (nq runs of n) from the projections of gates `q0..` for units `u0..u0 + n`,
    /// plus the recurrent bias.
    fn start(&self, xrow: &[f32], q0: usize, nq: usize, u0: usize, n: usize, acc: &mut [f32]) {
        let h = self.h;
        for q in 0..nq {
            let c = (q0 + q) * h + u0;
            let a = &mut acc[q * n..(q + 1) * n];
            a.copy_from_slice(&xrow[c..c + n]);
            if let Some(rb) = self.rb {
                for (v, &bv) in a.iter_mut().zip(&rb[c..c + n]) {
                    *v += bv;
                }
            }
        }
    }

    fn lstm_step<S: Step>(
        &self,
        s: &S,
        st: &StepIn<'_>,
        cp: &mut [f32],
        y: &mut [f32],
        acc: &mut [f32; ACC],
    ) {
        let (h, xrow, hp, have_h, unit) = (self.h, st.xrow, st.hp, st.have_h, st.unit);
        for u0 in (0..h).step_by(unit) {
            let n = unit.min(h - u0);
            let acc = &mut acc[..4 * n];
            self.start(xrow, 0, 4, u0, n, acc);
            if have_h {
                self.product(s, hp, 0, 4, u0, acc);
            }
            let (iof, cc) = acc.split_at_mut(3 * n);
            let c = &mut cp[u0..u0 + n];
            if self.default_acts() {
                let peep = self.peep.map(|p| {
                    [
                        &p[u0..u0 + n],
                        &p[h + u0..h + u0 + n],
                        &p[2 * h + u0..2 * h + u0 + n],
                    ]
                });
                let chunk = LstmChunk {
                    i: &iof[..n],
                    o: &iof[n..2 * n],
                    f: &iof[2 * n..],
                    g: cc,
                    c: &mut *c,
                    peep,
                    clip: self.clip,
                    y: &mut y[u0..u0 + n],
                };
                if s.lstm_cell(chunk) {
                    continue;
                }
            }
            match self.peep {
                None => self.gate(s, 0, iof),
                Some(p) => {
                    // i and f see the previous state; o the new one (below).
                    let (i, rest) = iof.split_at_mut(n);
                    let f = &mut rest[n..];
                    for j in 0..n {
                        i[j] += p[u0 + j] * c[j];
                        f[j] += p[2 * h + u0 + j] * c[j];
                    }
                    self.gate(s, 0, i);
                    self.gate(s, 0, f);
                }
            }
            self.gate(s, 1, cc);
            let (i, rest) = iof.split_at_mut(n);
            let (o, f) = rest.split_at_mut(n);
            for j in 0..n {
                c[j] = f[j] * c[j] + i[j] * cc[j];
            }
            if let Some(p) = self.peep {
                for j in 0..n {
                    o[j] += p[h + u0 + j] * c[j];
                }
                self.gate(s, 0, o);
            }
            // h = o · h(c), h(c) in the candidate's place.
            cc.copy_from_slice(c);
            s.apply(self.acts[2], cc);
            for j in 0..n {
                y[u0 + j] = o[j] * cc[j];
            }
        }
    }

    /// GRU with the reset gate on `h·R_hᵀ + Rb_h`: one pass.
    fn gru_lbr_step<S: Step>(&self, s: &S, st: &StepIn<'_>, y: &mut [f32], acc: &mut [f32; ACC]) {
        let (h, xrow, hp, have_h, unit) = (self.h, st.xrow, st.hp, st.have_h, st.unit);
        for u0 in (0..h).step_by(unit) {
            let n = unit.min(h - u0);
            let acc = &mut acc[..3 * n];
            self.start(xrow, 0, 2, u0, n, &mut acc[..2 * n]);
            // The h gate's recurrent part alone: its bias, then the product.
            let hh = &mut acc[2 * n..];
            match self.rb {
                Some(rb) => hh.copy_from_slice(&rb[2 * h + u0..2 * h + u0 + n]),
                None => hh.fill(0.0),
            }
            if have_h {
                self.product(s, hp, 0, 3, u0, acc);
            }
            let (zr, hh) = acc.split_at_mut(2 * n);
            if self.default_acts() {
                let chunk = GruChunk {
                    z: &zr[..n],
                    r: &zr[n..],
                    hh,
                    xh: &xrow[2 * h + u0..2 * h + u0 + n],
                    hp: &hp[u0..u0 + n],
                    clip: self.clip,
                    y: &mut y[u0..u0 + n],
                };
                if s.gru_cell(chunk) {
                    continue;
                }
            }
            self.gate(s, 0, zr);
            let (z, rg) = zr.split_at_mut(n);
            for j in 0..n {
                hh[j] = xrow[2 * h + u0 + j] + rg[j] * hh[j];
            }
            self.gate(s, 1, hh);
            for j in 0..n {
                y[u0 + j] = hh[j] + z[j] * (hp[u0 + j] - hh[j]);
            }
        }
    }

    /// GRU with the reset gate on `h` (ONNX's default): z and r first, then the h gate's
    /// product of `r·h`; z waits in the output row.
    fn gru_step<S: Step>(
        &self,
        s: &S,
        st: &StepIn<'_>,
        rh: &mut [f32],
        y: &mut [f32],
        acc: &mut [f32; ACC],
    ) {
        let (h, xrow, hp, have_h, unit) = (self.h, st.xrow, st.hp, st.have_h, st.unit);
        for u0 in (0..h).step_by(unit) {
            let n = unit.min(h - u0);
            let acc = &mut acc[..2 * n];
            self.start(xrow, 0, 2, u0, n, acc);
            if have_h {
                self.product(s, hp, 0, 2, u0, acc);
            }
            self.gate(s, 0, acc);
            let (z, rg) = acc.split_at_mut(n);
            for j in 0..n {
                y[u0 + j] = z[j];
                rh[u0 + j] = rg[j] * hp[u0 + j];
            }
        }
        for u0 in (0..h).step_by(unit) {
            let n = unit.min(h - u0);
            let acc = &mut acc[..n];
            self.start(xrow, 2, 1, u0, n, acc);
            if have_h {
                s.product(rh, &self.rt[2 * h + u0..], self.g * h, acc);
            }
            self.gate(s, 1, acc);
            for j in 0..n {
                let z = y[u0 + j];
                y[u0 + j] = acc[j] + z * (hp[u0 + j] - acc[j]);
            }
        }
    }

    fn rnn_step<S: Step>(&self, s: &S, st: &StepIn<'_>, y: &mut [f32], acc: &mut [f32; ACC]) {
        let (h, xrow, hp, have_h, unit) = (self.h, st.xrow, st.hp, st.have_h, st.unit);
        for u0 in (0..h).step_by(unit) {
            let n = unit.min(h - u0);
            let acc = &mut acc[..n];
            self.start(xrow, 0, 1, u0, n, acc);
            if have_h {
                self.product(s, hp, 0, 1, u0, acc);
            }
            self.gate(s, 0, acc);
            y[u0..u0 + n].copy_from_slice(acc);
        }
    }
}

/// The reference kernel.
pub fn recurrent(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let seq = Seq::of(call)?;
    seq.run(&Plain, out.f32s_mut()?)
}

//! LSTM, GRU and RNN: each direction one `Recurrent` op where the lowering options allow
//! its hidden size (`LowerOptions::recurrent_max_hidden`), otherwise unrolled over the
//! (static) sequence length into cairn ops.
//!
//! Either way the input projection of every step is one FullyConnected over the whole
//! sequence, with the biases that fold into it. The fused op then runs the recurrence
//! itself (the recurrent weights transposed to `[H, G·H]` at convert time); it is f32, so
//! a calibrated model keeps its recurrences f32, as it keeps an unrolled cell's state and
//! gates (`cell_state`).
//!
//! Unrolled, per direction, the input projection of every step is one FullyConnected over the whole
//! sequence (`[T·B, I] × [G·H, I]ᵀ`, both biases folded in where the equations allow);
//! each step then adds the recurrent projection of the previous hidden state (one
//! FullyConnected), splits the gates, applies the activations and combines them with
//! element-wise ops. Every op has an int8 form, so a calibrated model runs its recurrence
//! in int8, each step's tensors with their own scales; absent initial states are zeros and
//! the terms they would feed are left out, not computed.

use anyhow::{anyhow, bail, Result};
use cairn_core::op::UnaryFn;
use cairn_core::OpKind;

use crate::lower::{Lower, Val};
use crate::onnx::{Attrs, NodeProto};

#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Lstm,
    Gru,
    Rnn,
}

impl Cell {
    /// Gates per step and the default activations (f, g, h as ONNX names them).
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::Rnn => 1,
        }
    }
    fn default_acts(self) -> &'static [&'static str] {
        match self {
            Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            Cell::Gru => &["Sigmoid", "Tanh"],
            Cell::Rnn => &["Tanh"],
        }
    }
}

/// An activation of a recurrent op: a unary function with its (alpha, beta).
#[derive(Clone, Copy)]
struct Act(UnaryFn, f32, f32);

/// The activations of every direction, `per_dir` each, with ONNX's rule that
/// `activation_alpha`/`activation_beta` are consumed in order by the functions that take
/// them.
fn activations(n: &NodeProto, cell: Cell, dirs: usize) -> Result<Vec<Act>> {
    let a = Attrs(n);
    let per_dir = cell.default_acts().len();
    let names: Vec<String> = match a.strings("activations") {
        Some(v) if !v.is_empty() => v,
        _ => (0..dirs)
            .flat_map(|_| cell.default_acts().iter().map(|s| s.to_string()))
            .collect(),
    };
    if names.len() != per_dir * dirs {
        bail!(
            "{} activations given, {} expected ({per_dir} per direction)",
            names.len(),
            per_dir * dirs
        );
    }
    let alphas = a.floats("activation_alpha").unwrap_or_default();
    let betas = a.floats("activation_beta").unwrap_or_default();
    let (mut ai, mut bi) = (alphas.iter(), betas.iter());
    let mut out = Vec::new();
    for name in &names {
        let mut alpha = |d: f32| *ai.next().unwrap_or(&d);
        let act = match name.to_ascii_lowercase().as_str() {
            "sigmoid" => Act(UnaryFn::Sigmoid, 0.0, 0.0),
            "tanh" => Act(UnaryFn::Tanh, 0.0, 0.0),
            "relu" => Act(UnaryFn::Relu, 0.0, 0.0),
            "softsign" => Act(UnaryFn::Softsign, 0.0, 0.0),
            "softplus" => Act(UnaryFn::Softplus, 0.0, 0.0),
            "leakyrelu" => Act(UnaryFn::LeakyRelu, alpha(0.01), 0.0),
            "thresholdedrelu" => Act(UnaryFn::ThresholdedRelu, alpha(1.0), 0.0),
            "elu" => Act(UnaryFn::Elu, alpha(1.0), 0.0),
            "hardsigmoid" => {
                let al = alpha(0.2);
                Act(UnaryFn::HardSigmoid, al, *bi.next().unwrap_or(&0.5))
            }
            other => bail!("recurrent activation '{other}' is not supported"),
        };
        out.push(act);
    }
    Ok(out)
}

pub(crate) fn lower_rnn_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    let cell = match n.op_type.as_str() {
        "LSTM" => Cell::Lstm,
        "GRU" => Cell::Gru,
        "RNN" => Cell::Rnn,
        _ => return Ok(false),
    };
    Rnn::new(l, n, cell)?.lower(l, n)?;
    Ok(true)
}

/// [`lower_rnn_op`] with every direction unrolled (an LSTM whose weights were given as
/// integers runs its unrolled steps' products on them).
pub(crate) fn lower_rnn_unrolled(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    let keep = std::mem::replace(&mut l.recurrent_max_hidden, 0);
    let r = lower_rnn_op(l, n);
    l.recurrent_max_hidden = keep;
    r
}

struct Rnn {
    cell: Cell,
    /// Sequence length, batch, hidden size, directions.
    t: usize,
    b: usize,
    h: usize,
    dirs: usize,
    reverse_only: bool,
    layout: i64,
    clip: Option<f32>,
    linear_before_reset: bool,
    acts: Vec<Act>,
    /// Each direction one `Recurrent` op.
    fused: bool,
}

impl Rnn {
    fn new(l: &mut Lower, n: &NodeProto, cell: Cell) -> Result<Rnn> {
        let a = Attrs(n);
        let layout = a.int("layout", 0);
        let x = l.in_t(n, 0)?;
        let xs = l.shape(x);
        if xs.len() != 3 {
            bail!(
                "{} input X must have rank 3, it has shape {xs:?}",
                n.op_type
            );
        }
        let (t, b) = if layout == 0 {
            (xs[0], xs[1])
        } else {
            (xs[1], xs[0])
        };
        let r = l.in_t(n, 2)?;
        let rs = l.shape(r);
        let g = cell.gates();
        let h = match a.int("hidden_size", 0) {
            0 => rs
                .get(2)
                .copied()
                .ok_or_else(|| anyhow!("R must have rank 3"))?,
            v => v as usize,
        };
        let direction = a.string("direction", "forward");
        let (dirs, reverse_only) = match direction.as_str() {
            "forward" => (1, false),
            "reverse" => (1, true),
            "bidirectional" => (2, false),
            d => bail!("unknown direction '{d}'"),
        };
        if rs != [dirs, g * h, h] {
            bail!(
                "R has shape {rs:?}; {} with hidden size {h} and {dirs} direction(s) needs {:?}",
                n.op_type,
                [dirs, g * h, h]
            );
        }
        if cell == Cell::Lstm && a.int("input_forget", 0) != 0 {
            bail!("LSTM with input_forget=1 is not supported");
        }
        if t == 0 {
            bail!("{} over an empty sequence", n.op_type);
        }
        // sequence_lens: only lengths equal to the whole sequence (the common export).
        if let Some(lens) = l.ints_in(n, 4).ok().flatten() {
            if lens.iter().any(|&v| v != t as i64) {
                bail!(
                    "sequence_lens {lens:?} shorter than the sequence ({t}) are not supported; cairn unrolls a static sequence"
                );
            }
        } else if n.input.get(4).is_some_and(|s| !s.is_empty()) {
            bail!("sequence_lens must be known at convert time");
        }
        Ok(Rnn {
            cell,
            t,
            b,
            h,
            dirs,
            reverse_only,
            layout,
            clip: a.has("clip").then(|| a.float("clip", 0.0)),
            linear_before_reset: a.int("linear_before_reset", 0) != 0,
            acts: activations(n, cell, dirs)?,
            fused: h
                <= l.recurrent_max_hidden
                    .min(cairn_core::op::recurrent::MAX_HIDDEN)
                && l.g.tensors[r].dtype == cairn_core::DType::F32,
        })
    }

    fn lower(&self, l: &mut Lower, n: &NodeProto) -> Result<()> {
        let (t, b, h, g) = (self.t, self.b, self.h, self.cell.gates());
        let mut x = l.in_t(n, 0)?;
        if self.layout != 0 {
            x = l.transpose(x, &[1, 0, 2])?;
        }
        let input = l.shape(x)[2];
        let w = l.in_t(n, 1)?;
        if l.shape(w) != [self.dirs, g * h, input] {
            bail!(
                "W has shape {:?}, expected {:?}",
                l.shape(w),
                [self.dirs, g * h, input]
            );
        }
        let r = l.in_t(n, 2)?;
        let bias = l.opt_t(n, 3)?;
        if let Some(bb) = bias {
            if l.shape(bb) != [self.dirs, 2 * g * h] {
                bail!(
                    "B has shape {:?}, expected {:?}",
                    l.shape(bb),
                    [self.dirs, 2 * g * h]
                );
            }
        }
        // Initial states arrive as [dirs, B, H] (layout 0) or [B, dirs, H].
        let state = |l: &mut Lower, k: usize| -> Result<Option<usize>> {
            let Some(s) = l.opt_t(n, k)? else {
                return Ok(None);
            };
            let s = if self.layout != 0 {
                l.transpose(s, &[1, 0, 2])?
            } else {
                s
            };
            if l.shape(s) != [self.dirs, b, h] {
                bail!(
                    "initial state has shape {:?}, expected {:?}",
                    l.shape(s),
                    [self.dirs, b, h]
                );
            }
            Ok(Some(s))
        };
        let h0 = state(l, 5)?;
        let c0 = if self.cell == Cell::Lstm {
            state(l, 6)?
        } else {
            None
        };
        let peep = if self.cell == Cell::Lstm {
            l.opt_t(n, 7)?
        } else {
            None
        };
        let x2 = l.reshape(x, &[t * b, input])?;
        let want_c = self.cell == Cell::Lstm && n.output.get(2).is_some_and(|s| !s.is_empty());
        let mut ys = Vec::new();
        let (mut hs, mut cs) = (Vec::new(), Vec::new());
        for d in 0..self.dirs {
            // Weights lose the direction axis; states keep it ([1, B, H], like each step's).
            let weight = |l: &mut Lower, v: Option<usize>| -> Result<Option<usize>> {
                v.map(|v| dir_of(l, v, d)).transpose()
            };
            let state = |l: &mut Lower, v: Option<usize>| -> Result<Option<usize>> {
                v.map(|v| take(l, v, 0, d, 1)).transpose()
            };
            let dir = Dir {
                w: dir_of(l, w, d)?,
                r: dir_of(l, r, d)?,
                bias: weight(l, bias)?,
                h0: state(l, h0)?,
                c0: state(l, c0)?,
                peep: weight(l, peep)?,
                backward: self.reverse_only || d == 1,
                acts: self.acts[d * self.acts.len() / self.dirs..][..self.acts.len() / self.dirs]
                    .to_vec(),
            };
            let (y, hl, cl) = if self.fused {
                self.fused_direction(l, x2, &dir, want_c)?
            } else {
                self.direction(l, x2, &dir)?
            };
            ys.push(y);
            hs.push(hl);
            cs.push(cl);
        }
        // Y: [T, dirs, B, H] (layout 0) or [B, T, dirs, H].
        let per_dir: Vec<usize> = ys
            .iter()
            .map(|&y| l.reshape(y, &[t, 1, b, h]))
            .collect::<Result<_>>()?;
        let mut y = l.concat(&per_dir, 1)?;
        if self.layout != 0 {
            y = l.transpose(y, &[2, 0, 1, 3])?;
        }
        l.out(n, 0, Val::T(y));
        let hs: Vec<Option<usize>> = hs.into_iter().map(Some).collect();
        for (k, states) in [(1, hs), (2, cs)] {
            if n.output.get(k).is_none_or(|s| s.is_empty()) {
                continue;
            }
            let parts: Vec<usize> = states
                .into_iter()
                .map(|s| s.ok_or_else(|| anyhow!("{} has no cell state output", n.op_type)))
                .collect::<Result<_>>()?;
            let mut s = l.concat(&parts, 0)?;
            if self.layout != 0 {
                s = l.transpose(s, &[1, 0, 2])?;
            }
            l.out(n, k, Val::T(s));
        }
        Ok(())
    }

    /// One direction as one `Recurrent` op: (Y as [T, B, H], last H [1, B, H], last C
    /// when `want_c`).
    fn fused_direction(
        &self,
        l: &mut Lower,
        x2: usize,
        d: &Dir,
        want_c: bool,
    ) -> Result<(usize, usize, Option<usize>)> {
        use cairn_core::op::recurrent as rc;
        let (t, b, h, g) = (self.t, self.b, self.h, self.cell.gates());
        let gh = g * h;
        let lbr = self.cell == Cell::Gru && self.linear_before_reset;
        // Wb + Rb into the projections, except under linear_before_reset, where the op
        // adds Rb itself (its h part sits inside the reset product).
        let (in_bias, rb) = match d.bias {
            None => (None, None),
            Some(bias) => {
                let wb = take(l, bias, 0, 0, gh)?;
                let rb = take(l, bias, 0, gh, gh)?;
                if lbr {
                    (Some(wb), Some(rb))
                } else {
                    (Some(l.binary(OpKind::Add, wb, rb)?), None)
                }
            }
        };
        let xp = proj(l, x2, d.w, in_bias)?;
        let xp = l.reshape(xp, &[t, b, gh])?;
        let rt = l.transpose(d.r, &[1, 0])?;
        let state = |l: &mut Lower, s: Option<usize>| -> Result<Option<usize>> {
            s.map(|s| l.reshape(s, &[b, h])).transpose()
        };
        let h0 = state(l, d.h0)?;
        let c0 = state(l, d.c0)?;
        let (cell, mut flags) = match self.cell {
            Cell::Lstm => (rc::LSTM, 0),
            Cell::Gru => (rc::GRU, if lbr { rc::LINEAR_BEFORE_RESET } else { 0 }),
            Cell::Rnn => (rc::RNN, 0),
        };
        if d.backward {
            flags |= rc::REVERSE;
        }
        if want_c {
            flags |= rc::CELL_STATE_ROW;
        }
        let mut params = vec![0i32; rc::LEN];
        params[rc::CELL] = cell;
        params[rc::FLAGS] = flags;
        params[rc::CLIP] = self.clip.unwrap_or(f32::INFINITY).to_bits() as i32;
        for (k, a) in d.acts.iter().enumerate().take(rc::activations(cell)) {
            params[rc::ACTS + 3 * k] = a.0 as i32;
            params[rc::ACTS + 3 * k + 1] = a.1.to_bits() as i32;
            params[rc::ACTS + 3 * k + 2] = a.2.to_bits() as i32;
        }
        let mut inputs = vec![Some(xp), Some(rt), rb, h0, c0, d.peep];
        while inputs.last() == Some(&None) {
            inputs.pop();
        }
        let rows = t + usize::from(want_c);
        let out = l.op(OpKind::Recurrent, inputs, params, &[rows, b, h])?;
        let y = take(l, out, 0, 0, t)?;
        let last = take(l, y, 0, if d.backward { 0 } else { t - 1 }, 1)?;
        let c = if want_c {
            Some(take(l, out, 0, t, 1)?)
        } else {
            None
        };
        Ok((y, last, c))
    }

    /// One direction over the whole sequence: (Y as [T, B, H], last H [1, B, H], last C).
    fn direction(
        &self,
        l: &mut Lower,
        x2: usize,
        d: &Dir,
    ) -> Result<(usize, usize, Option<usize>)> {
        let (t, b, h, g) = (self.t, self.b, self.h, self.cell.gates());
        // Biases: Wb + Rb, except GRU's recurrent h-gate bias under linear_before_reset,
        // which sits inside the reset product.
        let (in_bias, rbh) = match d.bias {
            None => (None, None),
            Some(bias) => {
                let wb = take(l, bias, 0, 0, g * h)?;
                let rb = take(l, bias, 0, g * h, g * h)?;
                if self.cell == Cell::Gru && self.linear_before_reset {
                    let wb_zr = take(l, wb, 0, 0, 2 * h)?;
                    let rb_zr = take(l, rb, 0, 0, 2 * h)?;
                    let zr = l.binary(OpKind::Add, wb_zr, rb_zr)?;
                    let wbh = take(l, wb, 0, 2 * h, h)?;
                    let rbh = take(l, rb, 0, 2 * h, h)?;
                    (Some(l.concat(&[zr, wbh], 0)?), Some(rbh))
                } else {
                    (Some(l.binary(OpKind::Add, wb, rb)?), None)
                }
            }
        };
        let xp = proj(l, x2, d.w, in_bias)?;
        let xp = l.reshape(xp, &[t, b, g * h])?;
        // GRU needs the h-gate's recurrent weight apart from z and r.
        let (r_main, r_h) = if self.cell == Cell::Gru {
            (take(l, d.r, 0, 0, 2 * h)?, Some(take(l, d.r, 0, 2 * h, h)?))
        } else {
            (d.r, None)
        };
        let peeps = match d.peep {
            Some(p) => Some([
                take(l, p, 0, 0, h)?,
                take(l, p, 0, h, h)?,
                take(l, p, 0, 2 * h, h)?,
            ]),
            None => None,
        };
        let mut hprev = d.h0;
        let mut cprev = d.c0;
        let mut outs = vec![0; t];
        for step in 0..t {
            let ti = if d.backward { t - 1 - step } else { step };
            let (hn, cn) = match self.cell {
                Cell::Lstm => {
                    let xt = take(l, xp, 0, ti, 1)?; // [1, B, G·H]
                    let pre = add_recurrent(l, xt, hprev, r_main)?;
                    if peeps.is_none() {
                        // i, o and f together: one activation over the three, then apart
                        // (an op a step fewer than four activations).
                        let gs = split_at(l, pre, 2, &[3 * h, h])?;
                        let iof = self.act(l, gs[0], d.acts[0])?;
                        let iof = split(l, iof, 2, h, 3)?;
                        let (i, o, f) = (iof[0], iof[1], iof[2]);
                        let cc = self.act(l, gs[1], d.acts[1])?;
                        let c = cell_state(l, i, cc, f, cprev)?;
                        let hc = act_plain(l, c, d.acts[2])?;
                        (l.binary(OpKind::Mul, o, hc)?, Some(c))
                    } else {
                        let gs = split(l, pre, 2, h, 4)?; // i, o, f, c
                        let peep = |l: &mut Lower, k: usize, c: Option<usize>, x: usize| match (
                            peeps, c,
                        ) {
                            (Some(p), Some(c)) => {
                                let pc = l.binary(OpKind::Mul, c, p[k])?;
                                l.binary(OpKind::Add, x, pc)
                            }
                            _ => Ok(x),
                        };
                        let i = peep(l, 0, cprev, gs[0])?;
                        let i = self.act(l, i, d.acts[0])?;
                        let f = peep(l, 2, cprev, gs[2])?;
                        let f = self.act(l, f, d.acts[0])?;
                        let cc = self.act(l, gs[3], d.acts[1])?;
                        let c = cell_state(l, i, cc, f, cprev)?;
                        let o = peep(l, 1, Some(c), gs[1])?;
                        let o = self.act(l, o, d.acts[0])?;
                        let hc = act_plain(l, c, d.acts[2])?;
                        (l.binary(OpKind::Mul, o, hc)?, Some(c))
                    }
                }
                Cell::Rnn => {
                    let xt = take(l, xp, 0, ti, 1)?;
                    let pre = add_recurrent(l, xt, hprev, r_main)?;
                    (self.act(l, pre, d.acts[0])?, None)
                }
                Cell::Gru => {
                    // z and r together: one slice of the step's projection, one
                    // recurrent add, one activation, then apart (13 ops a step, not 15).
                    let zr_x = take2(l, xp, ti, 0, 2 * h)?;
                    let h_x = take2(l, xp, ti, 2 * h, h)?;
                    let zr = add_recurrent(l, zr_x, hprev, r_main)?;
                    let zr = self.act(l, zr, d.acts[0])?;
                    let zr = split(l, zr, 2, h, 2)?;
                    let (z, rg) = (zr[0], zr[1]);
                    let rh = r_h.ok_or_else(|| anyhow!("GRU without its h-gate weight"))?;
                    let hx = match (hprev, self.linear_before_reset) {
                        (None, false) => h_x,
                        (None, true) => match rbh {
                            Some(rbh) => {
                                let p = l.binary(OpKind::Mul, rg, rbh)?;
                                l.binary(OpKind::Add, h_x, p)?
                            }
                            None => h_x,
                        },
                        (Some(hp), false) => {
                            let rhp = l.binary(OpKind::Mul, rg, hp)?;
                            let p = proj(l, rhp, rh, None)?;
                            l.binary(OpKind::Add, h_x, p)?
                        }
                        (Some(hp), true) => {
                            let p = proj(l, hp, rh, rbh)?;
                            let p = l.binary(OpKind::Mul, rg, p)?;
                            l.binary(OpKind::Add, h_x, p)?
                        }
                    };
                    let hh = self.act(l, hx, d.acts[1])?;
                    // H = (1 − z)·ĥ + z·H₋₁ = ĥ + z·(H₋₁ − ĥ).
                    let diff = match hprev {
                        Some(hp) => l.binary(OpKind::Sub, hp, hh)?,
                        None => l.unary(hh, UnaryFn::Neg, 0.0, 0.0)?,
                    };
                    let zd = l.binary(OpKind::Mul, z, diff)?;
                    (l.binary(OpKind::Add, hh, zd)?, None)
                }
            };
            outs[ti] = hn;
            hprev = Some(hn);
            cprev = cn;
        }
        let y = l.concat(&outs, 0)?;
        let last = hprev.ok_or_else(|| anyhow!("empty sequence"))?;
        Ok((y, last, cprev))
    }

    /// A gate activation, after the op's `clip` when it has one.
    fn act(&self, l: &mut Lower, x: usize, a: Act) -> Result<usize> {
        let x = match self.clip {
            Some(c) => l.unary(x, UnaryFn::Clip, -c, c)?,
            None => x,
        };
        act_plain(l, x, a)
    }
}

/// One direction's weights, biases, states and activations.
struct Dir {
    w: usize,
    r: usize,
    bias: Option<usize>,
    h0: Option<usize>,
    c0: Option<usize>,
    peep: Option<usize>,
    backward: bool,
    acts: Vec<Act>,
}

fn act_plain(l: &mut Lower, x: usize, a: Act) -> Result<usize> {
    l.unary(x, a.0, a.1, a.2)
}

/// An LSTM cell state `f·c_prev + i·c̃`, or `i·c̃` when the previous state is zero.
fn cell_state(l: &mut Lower, i: usize, cc: usize, f: usize, cprev: Option<usize>) -> Result<usize> {
    let ic = l.binary(OpKind::Mul, i, cc)?;
    match cprev {
        Some(cp) => {
            let fc = l.binary(OpKind::Mul, f, cp)?;
            l.binary(OpKind::Add, fc, ic)
        }
        None => Ok(ic),
    }
}

/// `x + h·Rᵀ`, or `x` when the previous state is zero.
fn add_recurrent(l: &mut Lower, x: usize, h: Option<usize>, r: usize) -> Result<usize> {
    match h {
        None => Ok(x),
        Some(h) => {
            let p = proj(l, h, r, None)?;
            l.binary(OpKind::Add, x, p)
        }
    }
}

/// `x · wᵀ (+ bias)` for a weight laid out [N, K]: FullyConnected when the weight is a
/// constant, a batched MatMul otherwise.
fn proj(l: &mut Lower, x: usize, w: usize, bias: Option<usize>) -> Result<usize> {
    let consts = l.g.tensors[w].is_const() && bias.is_none_or(|b| l.g.tensors[b].is_const());
    if consts {
        return l.op(
            OpKind::FullyConnected,
            vec![Some(x), Some(w), bias],
            vec![crate::lower::INF_BITS.0, crate::lower::INF_BITS.1],
            &[],
        );
    }
    let wt = l.transpose(w, &[1, 0])?;
    let y = crate::lower_nn::matmul(l, x, wt)?;
    match bias {
        Some(b) => l.binary(OpKind::Add, y, b),
        None => Ok(y),
    }
}

/// `len` entries from `start` along `axis`, rank kept.
pub(crate) fn take(
    l: &mut Lower,
    x: usize,
    axis: usize,
    start: usize,
    len: usize,
) -> Result<usize> {
    let s = l.shape(x);
    if start == 0 && len == s[axis] {
        return Ok(x);
    }
    let mut params: Vec<i32> = (0..s.len())
        .map(|a| if a == axis { start as i32 } else { 0 })
        .collect();
    params.extend(std::iter::repeat_n(1, s.len()));
    let mut out = s;
    out[axis] = len;
    l.op(OpKind::Slice, vec![Some(x)], params, &out)
}

/// Step `ti` of a [T, B, F] sequence and `len` of its features from `start`: [1, B, len],
/// one Slice over both axes.
fn take2(l: &mut Lower, x: usize, ti: usize, start: usize, len: usize) -> Result<usize> {
    let s = l.shape(x);
    let out = vec![1, s[1], len];
    l.op(
        OpKind::Slice,
        vec![Some(x)],
        vec![ti as i32, 0, start as i32, 1, 1, 1],
        &out,
    )
}

/// Direction `d` of a per-direction weight, its leading axis dropped.
fn dir_of(l: &mut Lower, x: usize, d: usize) -> Result<usize> {
    let y = take(l, x, 0, d, 1)?;
    let s = l.shape(y);
    l.reshape(y, &s[1..])
}

fn split(l: &mut Lower, x: usize, axis: usize, each: usize, parts: usize) -> Result<Vec<usize>> {
    split_at(l, x, axis, &vec![each; parts])
}

/// `x` split along `axis` into parts of the given sizes.
fn split_at(l: &mut Lower, x: usize, axis: usize, sizes: &[usize]) -> Result<Vec<usize>> {
    let s = l.shape(x);
    let mut params = vec![axis as i32];
    let mut declared = Vec::new();
    let mut at = 0;
    for &n in sizes {
        params.push(at as i32);
        let mut d = s.clone();
        d[axis] = n;
        declared.push(d);
        at += n;
    }
    l.op_n(OpKind::Split, vec![Some(x)], params, &declared, None)
}

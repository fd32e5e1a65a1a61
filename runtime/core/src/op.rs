//! The op set: kinds, their parameter words, and their shape rules.
//!
//! Each op stores its parameters as a short list of `i32` words (floats as their bits).
//! [`infer_output`] is the single source of truth for output shapes; the converter uses it
//! to build the graph and `Model::parse` uses it to check every op once at load.

use crate::shape::{broadcast, Shape, MAX_RANK};

mod funcs;
mod rules;
pub use funcs::{BinaryFn, ReduceFn, UnaryFn};

/// Op kinds. The discriminant is the on-disk code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u16)]
pub enum OpKind {
    Conv = 1,
    ConvTranspose = 2,
    FullyConnected = 3,
    BatchMatMul = 4,
    Add = 5,
    Sub = 6,
    Mul = 7,
    Div = 8,
    PRelu = 9,
    Concat = 10,
    Reshape = 11,
    Transpose = 12,
    Slice = 13,
    Split = 14,
    Pad = 15,
    MaxPool = 16,
    AveragePool = 17,
    GlobalAveragePool = 18,
    ReduceMean = 19,
    Resize = 20,
    Unary = 21,
    Lut = 22,
    Softmax = 23,
    LayerNorm = 24,
    Quantize = 25,
    Dequantize = 26,
    /// Element-wise binary functions beyond Add..PRelu ([`BinaryFn`], param word 0):
    /// Pow, Max, Min (f32), comparisons (f32 or i32 in, i32 0/1 out), And/Or/Xor (i32).
    Binary = 27,
    /// `cond ? x : y` under broadcasting; cond is i32 (0 = false).
    Where = 28,
    /// Reductions over a mask of axes ([`ReduceFn`]): Sum, Max, ..., ArgMax/ArgMin (i32 out).
    Reduce = 29,
    /// Gather along an axis with i32 indices (mode 0), or GatherElements (mode 1).
    Gather = 30,
    /// Repeat the input along each axis to the declared shape (ONNX Tile and Expand).
    Tile = 31,
    /// A whole LSTM, GRU or RNN direction over a sequence, f32 ([`recurrent`]): the
    /// recurrence of a small cell in one op instead of a dozen per step.
    Recurrent = 32,
}

/// Kind codes run from 1 to `OP_KIND_COUNT - 1`; the kernel id layout
/// (`crate::KernelId::index`) and a [`Kinds`] set hold codes up to 32 (code 32 in the place
/// of code 0, which is no kind).
pub const OP_KIND_COUNT: usize = 33;

/// A set of op kinds: bit [`kind_bit`] for each. Firmware that links only some kernels
/// loads models through `Model::parse_kinds::<K>`, which links only these kinds' load
/// checks (shape and type rules) and refuses any other kind. 32 bits, not 64: a 32-bit
/// device tests a 64-bit set in twice the instructions, in every load check.
pub type Kinds = u32;

/// The bit of `kind` in a [`Kinds`] set: `code mod 32`. Code 0 is no kind, so bit 0 holds
/// code 32 (`Recurrent`).
pub const fn kind_bit(kind: OpKind) -> Kinds {
    1 << (kind as u16 % 32)
}

/// Every op kind (codes 1 to 32: every bit).
pub const ALL_KINDS: Kinds = Kinds::MAX;

/// The unquantized kinds for general models: `Binary`, `Where`, `Reduce`, `Gather`, `Tile`,
/// `Recurrent`.
pub const PLAIN_KINDS: Kinds = 0b11111 << OpKind::Binary as u16 | kind_bit(OpKind::Recurrent);

/// Whether `set` holds `kind` (a constant test in code generic over the set).
pub const fn has_kind(set: Kinds, kind: OpKind) -> bool {
    set & kind_bit(kind) != 0
}

impl OpKind {
    pub const fn from_code(c: u16) -> Option<OpKind> {
        use OpKind::*;
        Some(match c {
            1 => Conv,
            2 => ConvTranspose,
            3 => FullyConnected,
            4 => BatchMatMul,
            5 => Add,
            6 => Sub,
            7 => Mul,
            8 => Div,
            9 => PRelu,
            10 => Concat,
            11 => Reshape,
            12 => Transpose,
            13 => Slice,
            14 => Split,
            15 => Pad,
            16 => MaxPool,
            17 => AveragePool,
            18 => GlobalAveragePool,
            19 => ReduceMean,
            20 => Resize,
            21 => Unary,
            22 => Lut,
            23 => Softmax,
            24 => LayerNorm,
            25 => Quantize,
            26 => Dequantize,
            27 => Binary,
            28 => Where,
            29 => Reduce,
            30 => Gather,
            31 => Tile,
            32 => Recurrent,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        use OpKind::*;
        match self {
            Conv => "Conv",
            ConvTranspose => "ConvTranspose",
            FullyConnected => "FullyConnected",
            BatchMatMul => "BatchMatMul",
            Add => "Add",
            Sub => "Sub",
            Mul => "Mul",
            Div => "Div",
            PRelu => "PRelu",
            Concat => "Concat",
            Reshape => "Reshape",
            Transpose => "Transpose",
            Slice => "Slice",
            Split => "Split",
            Pad => "Pad",
            MaxPool => "MaxPool",
            AveragePool => "AveragePool",
            GlobalAveragePool => "GlobalAveragePool",
            ReduceMean => "ReduceMean",
            Resize => "Resize",
            Unary => "Unary",
            Lut => "Lut",
            Softmax => "Softmax",
            LayerNorm => "LayerNorm",
            Quantize => "Quantize",
            Dequantize => "Dequantize",
            Binary => "Binary",
            Where => "Where",
            Reduce => "Reduce",
            Gather => "Gather",
            Tile => "Tile",
            Recurrent => "Recurrent",
        }
    }

    /// (min inputs, max inputs, outputs or 0 for "one or more").
    pub const fn arity(self) -> (usize, usize, usize) {
        use OpKind::*;
        match self {
            Conv | ConvTranspose | FullyConnected => (2, 4, 1),
            BatchMatMul => (2, 3, 1),
            Add | Sub | Mul | Div | PRelu | Binary | Gather => (2, 2, 1),
            Where => (3, 3, 1),
            Concat => (1, MAX_OP_INPUTS, 1),
            Split => (1, 1, 0),
            Lut => (2, 2, 1),
            Softmax => (1, 2, 1),
            LayerNorm => (2, 3, 1),
            Recurrent => (2, 6, 1),
            _ => (1, 1, 1),
        }
    }

    /// Ops whose output may share the input's bytes (unary, element for element) or is a
    /// plain view of it (Reshape).
    pub const fn can_run_in_place(self) -> bool {
        matches!(self, OpKind::Unary | OpKind::Lut | OpKind::Reshape)
    }

    /// Number of parameter words, given the output rank (for rank-dependent layouts) and
    /// the number of outputs.
    pub fn param_len(self, rank: usize, n_out: usize) -> usize {
        use OpKind::*;
        match self {
            Conv => conv::LEN,
            ConvTranspose => conv::T_LEN,
            FullyConnected | Add | Sub | Mul | Div | PRelu => 2,
            BatchMatMul | Reshape | GlobalAveragePool | Quantize | Dequantize => 0,
            Concat => 1,
            Transpose => rank,
            Slice => 2 * rank,
            Split => 1 + n_out,
            Pad => 2 + rank,
            MaxPool => 10,
            AveragePool => 9,
            ReduceMean => 2,
            Resize => 5,
            Unary => 3,
            Lut => 1,
            Softmax => 4,
            LayerNorm => 2,
            Binary => 1,
            Where | Tile => 0,
            Reduce => 4,
            Gather => 2,
            Recurrent => recurrent::LEN,
        }
    }
}

/// Upper bound on the inputs of one op (Concat is the only wide one).
pub const MAX_OP_INPUTS: usize = 16;
/// Upper bound on the outputs of one op (Split).
pub const MAX_OP_OUTPUTS: usize = 16;

/// Parameter word indices for Conv / ConvTranspose.
pub mod conv {
    pub const SH: usize = 0;
    pub const SW: usize = 1;
    pub const PT: usize = 2;
    pub const PL: usize = 3;
    pub const PB: usize = 4;
    pub const PR: usize = 5;
    pub const DH: usize = 6;
    pub const DW: usize = 7;
    pub const GROUP: usize = 8;
    /// Conv: activation clamp low/high; ConvTranspose: output padding h/w first.
    pub const ACT_LO: usize = 9;
    pub const ACT_HI: usize = 10;
    pub const LEN: usize = 11;
    pub const OPH: usize = 9;
    pub const OPW: usize = 10;
    pub const T_ACT_LO: usize = 11;
    pub const T_ACT_HI: usize = 12;
    pub const T_LEN: usize = 13;
}

/// Parameter words, inputs and output of `Recurrent`: one direction of an ONNX LSTM, GRU
/// or RNN over a whole sequence, in f32, with ONNX's equations and gate orders (LSTM i, o,
/// f, c; GRU z, r, h).
///
/// Inputs: 0 the input projections `X·Wᵀ` of every step with the biases that fold into
/// them, `[T, B, G·H]` (G gates); 1 the recurrent weights transposed, `[H, G·H]`; then,
/// each optional: 2 the recurrent bias added to `h·Rᵀ` (`[G·H]`: a GRU's `Rb_h` under
/// `linear_before_reset`, which cannot fold into input 0), 3 the initial hidden state
/// `[B, H]`, 4 the initial cell state `[B, H]` and 5 the peepholes `[3·H]` (i, o, f; LSTM
/// only). Absent states are zeros.
///
/// Output: the hidden state of every step in time order, `[T, B, H]` (a reverse
/// direction runs from the last step to the first, its output rows still in time order),
/// with one row more, `[T + 1, B, H]`, holding the final cell state under
/// [`CELL_STATE_ROW`](recurrent::CELL_STATE_ROW).
pub mod recurrent {
    /// Word 0: the cell, [`LSTM`], [`GRU`] or [`RNN`].
    pub const CELL: usize = 0;
    /// Word 1: [`REVERSE`] | [`LINEAR_BEFORE_RESET`] | [`CELL_STATE_ROW`].
    pub const FLAGS: usize = 1;
    /// Word 2: the clip of the gate activations' inputs (f32 bits; +∞: none).
    pub const CLIP: usize = 2;
    /// Words 3 to 11: the activations f, g, h (three words each: `UnaryFn` code, alpha
    /// bits, beta bits); a GRU uses f and g, an RNN f; the unused words are 0.
    pub const ACTS: usize = 3;
    pub const LEN: usize = 12;
    pub const LSTM: i32 = 0;
    pub const GRU: i32 = 1;
    pub const RNN: i32 = 2;
    pub const REVERSE: i32 = 1;
    /// GRU: the reset gate multiplies `h·R_hᵀ + Rb_h` instead of `h` (ONNX
    /// `linear_before_reset`).
    pub const LINEAR_BEFORE_RESET: i32 = 2;
    /// LSTM: the output has a last row with the final cell state.
    pub const CELL_STATE_ROW: i32 = 4;
    /// The widest hidden state (the kernels keep a state row on the stack).
    pub const MAX_HIDDEN: usize = 512;

    /// Gates of a cell code: 4, 3 or 1 (`None`: no such cell).
    pub const fn gates(cell: i32) -> Option<usize> {
        match cell {
            LSTM => Some(4),
            GRU => Some(3),
            RNN => Some(1),
            _ => None,
        }
    }

    /// Activations a cell applies (f, g, h for LSTM; f, g for GRU; f for RNN).
    pub const fn activations(cell: i32) -> usize {
        match cell {
            LSTM => 3,
            GRU => 2,
            _ => 1,
        }
    }
}

/// The requantization multipliers of an int8 Conv (input 3) for its `oc` output channels:
/// `(for accumulators at or above zero, for those below)`. `oc` values, one set for both;
/// `2·oc` (shape `[2, oc]`), a PRelu folded into the requantization: the second row is the
/// first times the channel's slope, so the output is rounded once, after the PRelu.
/// `None` for any other count (the loader refuses it).
#[inline(always)]
pub fn conv_multipliers(m: &[f32], oc: usize) -> Option<(&[f32], &[f32])> {
    if m.len() == oc {
        Some((m, m))
    } else if m.len() == 2 * oc {
        Some(m.split_at(oc))
    } else {
        None
    }
}

/// Why an op's shapes or parameters do not fit together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ShapeError {
    Rank,
    Mismatch,
    Param,
    Overflow,
}

/// Output shape number `out` of an op, from its parameters and input shapes.
/// `declared` is the output shape the graph states; ops whose output is not derivable from
/// inputs alone (Reshape, Slice, Pad, pooling with ceil mode, Resize) check it instead.
pub fn infer_output(
    kind: OpKind,
    p: &[i32],
    ins: &[Option<Shape>],
    out: usize,
    declared: &Shape,
) -> Result<Shape, ShapeError> {
    infer_output_in::<ALL_KINDS>(kind, p, ins, out, declared)
}

/// [`infer_output`] with the rules of the kinds in `K` only (`Err(Param)` for another):
/// the others are not linked.
pub fn infer_output_in<const K: Kinds>(
    kind: OpKind,
    p: &[i32],
    ins: &[Option<Shape>],
    out: usize,
    declared: &Shape,
) -> Result<Shape, ShapeError> {
    use OpKind::*;
    let has = |k: OpKind| has_kind(K, k);
    use ShapeError::*;
    let x = ins.first().copied().flatten().ok_or(Mismatch)?;
    let get = |i: usize| ins.get(i).copied().flatten();
    let pos = |v: i32| -> Result<usize, ShapeError> { usize::try_from(v).map_err(|_| Param) };
    // Dims (u32) and parameters (i32) come from the model file: every sum and product of
    // them is checked, since a 32-bit device's usize holds neither a sum of two dims nor a
    // product of a dim and a parameter.
    let add = |a: usize, b: usize| a.checked_add(b).ok_or(Overflow);
    let mul = |a: usize, b: usize| a.checked_mul(b).ok_or(Overflow);
    // The extent of a window of `k` taps `d` apart: d·(k − 1) + 1 (k ≥ 1).
    let extent = |d: usize, k: usize| add(mul(d, k - 1)?, 1);
    match kind {
        Conv | ConvTranspose if has(Conv) || has(ConvTranspose) => {
            let w = get(1).ok_or(Mismatch)?;
            let (n, c, h, wd) = x.nchw().ok_or(Rank)?;
            let (wo, wi, kh, kw) = w.nchw().ok_or(Rank)?;
            let mut v = [0usize; 9];
            for (slot, &w) in v.iter_mut().zip(p) {
                *slot = pos(w)?;
            }
            let [sh, sw, pt, pl, pb, pr, dh, dw, g] = v;
            if sh == 0 || sw == 0 || dh == 0 || dw == 0 || g == 0 || kh == 0 || kw == 0 {
                return Err(Param);
            }
            let (oc, oh, ow);
            if kind == Conv && has(Conv) {
                if c != mul(wi, g)? || wo % g != 0 {
                    return Err(Mismatch);
                }
                let (eh, ew) = (extent(dh, kh)?, extent(dw, kw)?);
                let ph = add(add(h, pt)?, pb)?;
                let pw = add(add(wd, pl)?, pr)?;
                if ph < eh || pw < ew {
                    return Err(Mismatch);
                }
                oc = wo;
                oh = (ph - eh) / sh + 1;
                ow = (pw - ew) / sw + 1;
            } else if has(ConvTranspose) {
                let (oph, opw) = (pos(p[conv::OPH])?, pos(p[conv::OPW])?);
                if wo != c || c % g != 0 || h == 0 || wd == 0 {
                    return Err(Mismatch);
                }
                oc = mul(wi, g)?;
                // s·(h − 1) + output padding + d·(k − 1) + 1, before the padding comes off.
                let full_h = add(add(mul(sh, h - 1)?, oph)?, extent(dh, kh)?)?;
                let full_w = add(add(mul(sw, wd - 1)?, opw)?, extent(dw, kw)?)?;
                let (pad_h, pad_w) = (add(pt, pb)?, add(pl, pr)?);
                if full_h <= pad_h || full_w <= pad_w {
                    return Err(Mismatch);
                }
                oh = full_h - pad_h;
                ow = full_w - pad_w;
            } else {
                return Err(Param);
            }
            for i in [2usize, 3] {
                if let Some(t) = get(i) {
                    // A Conv's multipliers may hold a second row (a folded PRelu:
                    // `conv_multipliers`).
                    let n = t.numel();
                    if n != Some(oc) && (i == 2 || kind != Conv || n != oc.checked_mul(2)) {
                        return Err(Mismatch);
                    }
                }
            }
            Shape::new(&[n, oc, oh, ow]).ok_or(Overflow)
        }
        FullyConnected if has(FullyConnected) => {
            let w = get(1).ok_or(Mismatch)?;
            if x.rank() < 1 || w.rank() != 2 || x.dim(x.rank() - 1) != w.dim(1) {
                return Err(Mismatch);
            }
            for i in [2usize, 3] {
                if let Some(t) = get(i) {
                    if t.numel() != Some(w.dim(0)) {
                        return Err(Mismatch);
                    }
                }
            }
            Ok(x.with_dim(x.rank() - 1, w.dims()[0]))
        }
        BatchMatMul if has(BatchMatMul) => {
            let b = get(1).ok_or(Mismatch)?;
            if x.rank() < 2 || b.rank() < 2 {
                return Err(Rank);
            }
            let (m, k) = (x.dim(x.rank() - 2), x.dim(x.rank() - 1));
            let (k2, n) = (b.dim(b.rank() - 2), b.dim(b.rank() - 1));
            if k != k2 {
                return Err(Mismatch);
            }
            let xa = Shape::new(&dims_usize(&x)[..x.rank() - 2]).ok_or(Rank)?;
            let ba = Shape::new(&dims_usize(&b)[..b.rank() - 2]).ok_or(Rank)?;
            let batch = broadcast(&xa, &ba).ok_or(Mismatch)?;
            let mut d = dims_usize(&batch);
            let r = batch.rank();
            if r + 2 > MAX_RANK {
                return Err(Rank);
            }
            d[r] = m;
            d[r + 1] = n;
            Shape::new(&d[..r + 2]).ok_or(Overflow)
        }
        Add | Sub | Mul | Div | PRelu if has(kind) => {
            broadcast(&x, &get(1).ok_or(Mismatch)?).ok_or(Mismatch)
        }
        Concat if has(Concat) => {
            let axis = pos(p[0])?;
            if axis >= x.rank() {
                return Err(Param);
            }
            let mut total = 0usize;
            for s in ins {
                let s = s.ok_or(Mismatch)?;
                if s.rank() != x.rank() {
                    return Err(Mismatch);
                }
                for i in 0..x.rank() {
                    if i != axis && s.dim(i) != x.dim(i) {
                        return Err(Mismatch);
                    }
                }
                total = total.checked_add(s.dim(axis)).ok_or(Overflow)?;
            }
            Ok(x.with_dim(axis, u32::try_from(total).map_err(|_| Overflow)?))
        }
        Reshape if has(Reshape) => {
            if declared.numel() != x.numel() {
                return Err(Mismatch);
            }
            Ok(*declared)
        }
        Transpose if has(Transpose) => {
            let r = x.rank();
            // One permutation entry per input dim: the loader sized the params by the
            // output's rank, which a hostile file may make differ from the input's.
            if declared.rank() != r {
                return Err(Rank);
            }
            let perm = p.get(..r).ok_or(Param)?;
            let mut seen = [false; MAX_RANK];
            let mut d = [0usize; MAX_RANK];
            for (i, &pi) in perm.iter().enumerate() {
                let pi = pos(pi)?;
                if pi >= r || seen[pi] {
                    return Err(Param);
                }
                seen[pi] = true;
                d[i] = x.dim(pi);
            }
            Shape::new(&d[..r]).ok_or(Overflow)
        }
        Slice if has(Slice) => {
            let r = x.rank();
            if declared.rank() != r {
                return Err(Rank);
            }
            for i in 0..r {
                let (start, step, n) = (p[i] as i64, p[r + i] as i64, declared.dim(i) as i64);
                let len = x.dim(i) as i64;
                if step == 0 || start < 0 || start >= len.max(1) && n > 0 {
                    return Err(Param);
                }
                if n > 0 {
                    let last = start + (n - 1) * step;
                    if last < 0 || last >= len {
                        return Err(Param);
                    }
                }
            }
            Ok(*declared)
        }
        Split if has(Split) => {
            let axis = pos(p[0])?;
            if axis >= x.rank() || declared.rank() != x.rank() {
                return Err(Param);
            }
            let off = pos(*p.get(1 + out).ok_or(Param)?)?;
            for i in 0..x.rank() {
                if i != axis && declared.dim(i) != x.dim(i) {
                    return Err(Mismatch);
                }
            }
            if off.checked_add(declared.dim(axis)).ok_or(Overflow)? > x.dim(axis) {
                return Err(Param);
            }
            Ok(*declared)
        }
        Pad if has(Pad) => {
            let r = x.rank();
            if declared.rank() != r || !(0..=2).contains(&p[0]) {
                return Err(Param);
            }
            for i in 0..r {
                let b = pos(p[2 + i])?;
                let e = declared
                    .dim(i)
                    .checked_sub(add(x.dim(i), b)?)
                    .ok_or(Param)?;
                if p[0] == 1 && (b >= x.dim(i).max(1) || e >= x.dim(i).max(1)) {
                    return Err(Param);
                }
                if p[0] != 0 && x.dim(i) == 0 && (b > 0 || e > 0) {
                    return Err(Param);
                }
            }
            Ok(*declared)
        }
        MaxPool | AveragePool if has(MaxPool) || has(AveragePool) => {
            let (n, c, h, w) = x.nchw().ok_or(Rank)?;
            let mut v = [0usize; 10];
            for (i, slot) in v
                .iter_mut()
                .enumerate()
                .take(if kind == MaxPool { 10 } else { 8 })
            {
                *slot = pos(p[i])?;
            }
            if kind == AveragePool {
                v[8] = 1;
                v[9] = 1;
            }
            let [kh, kw, sh, sw, pt, pl, pb, pr, dh, dw] = v;
            if kh == 0 || kw == 0 || sh == 0 || sw == 0 || dh == 0 || dw == 0 {
                return Err(Param);
            }
            let (oh, ow) = (declared.dim(2), declared.dim(3));
            let (eh, ew) = (extent(dh, kh)?, extent(dw, kw)?);
            let (top_h, left_w) = (add(h, pt)?, add(w, pl)?);
            let (ph, pw) = (add(top_h, pb)?, add(left_w, pr)?);
            if ph < eh || pw < ew || pt >= eh || pl >= ew {
                return Err(Mismatch);
            }
            // Floor and ceil output sizes; `+ 1` cannot wrap: each quotient is below ph.
            let fh = (ph - eh) / sh + 1;
            let fw = (pw - ew) / sw + 1;
            let ch = (ph - eh).div_ceil(sh) + 1;
            let cw = (pw - ew).div_ceil(sw) + 1;
            if declared.rank() != 4
                || declared.dim(0) != n
                || declared.dim(1) != c
                || oh < fh
                || oh > ch
                || ow < fw
                || ow > cw
            {
                return Err(Mismatch);
            }
            // Every window must start inside the padded input.
            if mul(oh - 1, sh)? >= top_h || mul(ow - 1, sw)? >= left_w {
                return Err(Mismatch);
            }
            Ok(*declared)
        }
        GlobalAveragePool if has(GlobalAveragePool) => {
            if x.rank() < 3 {
                return Err(Rank);
            }
            let mut d = dims_usize(&x);
            for v in d.iter_mut().take(x.rank()).skip(2) {
                *v = 1;
            }
            Shape::new(&d[..x.rank()]).ok_or(Overflow)
        }
        ReduceMean if has(ReduceMean) => {
            let mask = p[0] as u32;
            let keep = p[1] != 0;
            if mask >> x.rank() != 0 || mask == 0 {
                return Err(Param);
            }
            let mut d = [0usize; MAX_RANK];
            let mut r = 0;
            for i in 0..x.rank() {
                if mask & (1 << i) != 0 {
                    if keep {
                        d[r] = 1;
                        r += 1;
                    }
                } else {
                    d[r] = x.dim(i);
                    r += 1;
                }
            }
            Shape::new(&d[..r]).ok_or(Overflow)
        }
        Resize if has(Resize) => {
            let (n, c, _, _) = x.nchw().ok_or(Rank)?;
            if declared.rank() != 4 || declared.dim(0) != n || declared.dim(1) != c {
                return Err(Mismatch);
            }
            if !(0..=1).contains(&p[0]) || !(0..=3).contains(&p[1]) || !(0..=3).contains(&p[2]) {
                return Err(Param);
            }
            let (shs, sws) = (f32::from_bits(p[3] as u32), f32::from_bits(p[4] as u32));
            if !(shs.is_finite() && shs > 0.0 && sws.is_finite() && sws > 0.0) {
                return Err(Param);
            }
            Ok(*declared)
        }
        Unary if has(Unary) => {
            UnaryFn::from_code(p[0]).ok_or(Param)?;
            Ok(x)
        }
        Lut if has(Lut) => {
            let t = get(1).ok_or(Mismatch)?;
            let chans = match p[0] {
                -1 => 1,
                a => x.dims().get(pos(a)?).copied().ok_or(Param)? as usize,
            };
            if t.numel() != chans.checked_mul(256) {
                return Err(Mismatch);
            }
            Ok(x)
        }
        Softmax if has(Softmax) => {
            let (o, n, i) = (pos(p[0])?, pos(p[1])?, pos(p[2])?);
            let prod = o
                .checked_mul(n)
                .and_then(|v| v.checked_mul(i))
                .ok_or(Overflow)?;
            if Some(prod) != x.numel() || n == 0 || !(0..=1).contains(&p[3]) {
                return Err(Param);
            }
            if p[3] == 1 && get(1).and_then(|t| t.numel()) != Some(256) {
                return Err(Mismatch);
            }
            Ok(x)
        }
        LayerNorm if has(LayerNorm) => {
            let axis = pos(p[0])?;
            if axis >= x.rank() {
                return Err(Param);
            }
            let inner = x.prod(axis, x.rank());
            for i in [1usize, 2] {
                if let Some(t) = get(i) {
                    if t.numel() != Some(inner) {
                        return Err(Mismatch);
                    }
                }
            }
            Ok(x)
        }
        Quantize | Dequantize if has(kind) => Ok(x),
        // A constant test first: without any of these kinds in `K` the rules are not linked.
        Binary | Where | Reduce | Gather | Tile | Recurrent
            if K & PLAIN_KINDS != 0 && has(kind) =>
        {
            rules::infer(kind, p, ins, declared)
        }
        _ => Err(Param),
    }
}

pub(crate) fn dims_usize(s: &Shape) -> [usize; MAX_RANK] {
    let mut d = [0usize; MAX_RANK];
    for (i, v) in s.dims().iter().enumerate() {
        d[i] = *v as usize;
    }
    d
}

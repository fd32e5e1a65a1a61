//! Float graph → int8 graph. An op runs in int8 when every activation it touches has
//! quantization params (from the model's QDQ nodes or from calibration) and the op has an
//! int8 kernel; otherwise it stays f32, with explicit Quantize/Dequantize at the boundary.
//!
//! Weights: int8 symmetric per output channel. Bias: int32 at scale s_x·s_w. Requant
//! scales: f32 (s_x·s_w)/s_y, as ORT computes them. Element-wise functions and binary ops
//! with a scalar constant become 256-entry lookup tables.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, Result};
use cairn_core::emit::{AlignedBytes, QuantSpec};
use cairn_core::op::{conv, UnaryFn};
use cairn_core::quant::{quantize_f32, round_half_even};
use cairn_core::{DType, OpKind};
use cairn_kernels::unary_value;

use crate::fuse::const_scalar;
use crate::ir::{Graph, HOp, Hint};
use crate::lower::INF_BITS;

/// (min, max) observed for each float tensor during calibration.
pub type Ranges = HashMap<usize, (f32, f32)>;

/// Asymmetric int8 params covering [lo, hi] ∪ {0}.
///
/// Where the ends of the range fall halfway between the int8 grid's points (the zero
/// point rounds from a half), the step is widened by one level in 255. Otherwise a
/// tensor whose values are a lattice of the range's 255th part, offset by half a step
/// from zero (8-bit pixels normalized as (p − 127.5)/127.5 or /128, the input of most
/// OCR and face models), has every value on a tie, and rounding half to even merges them
/// in pairs: 7 bits of the 8. With the wider step they round to 255 distinct levels.
pub fn params_for_range(lo: f32, hi: f32) -> (f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let mut s = (hi - lo) / 255.0;
    if !(s.is_finite() && s > 1e-12) {
        s = 1.0;
    }
    let z = -128.0 - lo / s;
    if lo < 0.0 && hi > 0.0 && (z - z.floor() - 0.5).abs() < 1e-3 {
        s = (hi - lo) / 254.0;
    }
    let zp = round_half_even(-128.0 - lo / s).clamp(-128.0, 127.0) as i32;
    (s, zp)
}

pub struct Report {
    pub int8_ops: usize,
    pub f32_ops: Vec<String>,
    /// For each tensor of the float graph, the tensor of the quantized graph that holds
    /// its value (int8 where it was quantized).
    pub values: HashMap<usize, usize>,
}

struct Q<'g> {
    g: &'g Graph,
    /// Who writes and reads each tensor of `g`.
    links: crate::ir::Links,
    ranges: &'g Ranges,
    out: Graph,
    map_f: HashMap<usize, usize>,
    map_q: HashMap<usize, usize>,
    forced: HashMap<usize, (f32, i32)>,
    report: Report,
    /// Quantized weights already emitted, by float weight and scales: a weight shared by
    /// many ops (an unrolled recurrence's matrices) is stored once.
    weights: HashMap<(usize, Vec<u32>), usize>,
    /// Element-wise chains on one source tensor, by their result (`elementwise`).
    families: HashMap<usize, crate::elementwise::Family>,
    /// Bits of the weights this pass quantizes itself in GEMM-shaped ops (7 or 8).
    weight_bits: u8,
    /// One-group Convs (by their output tensor in the float graph) that keep 8 bits when
    /// `weight_bits` is 7 (`--weight-bits auto`'s sensitive layers).
    keep8: HashSet<usize>,
    /// Tensors kept f32 because a Concat before them joins parts of very different ranges
    /// that are wanted apart again (`squashes_output_part`): the data-movement ops between
    /// it and the graph output, Split or Slice stay f32 too, so no later Quantize squashes
    /// the narrow part.
    f32_parts: std::collections::HashSet<usize>,
    /// int8 tensors of `out` whose saturation stands for an op: the model's own QDQ
    /// params, or an op left out because the int8 clamp already does it (a Relu after a
    /// range narrowed to 0). A round trip through them is not dropped (`round_trips`).
    clamps: HashSet<usize>,
}

fn i8_bytes(v: &[i8]) -> AlignedBytes {
    AlignedBytes::from_slice(bytemuck::cast_slice(v))
}
fn i32_bytes(v: &[i32]) -> AlignedBytes {
    AlignedBytes::from_slice(bytemuck::cast_slice(v))
}

/// A tensor with no params of its own that only feeds data-movement ops takes their
/// output's params: quantization is monotonic, so max/reshape/transpose/slice commute with
/// it and the int8 result equals quantizing after the move (what ORT does for a QDQ model
/// whose MaxPool input is left in float). In a calibrated graph (`ranges` not empty) a
/// tensor without a range was kept f32 on purpose and borrows nothing.
fn borrow_params_from_movement(g: &Graph, ranges: &Ranges) -> HashMap<usize, (f32, i32)> {
    use OpKind::*;
    let links = crate::ir::Links::of(g);
    let mut forced = HashMap::new();
    for op in g.ops.iter().rev() {
        if !matches!(op.kind, MaxPool | Reshape | Transpose | Slice | Split) {
            continue;
        }
        let Some(x) = op.inputs[0] else { continue };
        let h = &g.tensors[x];
        if h.hint.is_some() || h.is_const() || h.dtype != DType::F32 {
            continue;
        }
        if !ranges.is_empty() && !ranges.contains_key(&x) {
            continue;
        }
        let hinted = |t: usize| match g.tensors[t].hint {
            Some(Hint::Act { scale, zero_point }) => Some((scale, zero_point)),
            _ => forced.get(&t).copied(),
        };
        let cons = links.readers(x);
        let params: Vec<Option<(f32, i32)>> = cons
            .iter()
            .flat_map(|&c| {
                let o = &g.ops[c];
                let mv = matches!(o.kind, MaxPool | Reshape | Transpose | Slice | Split);
                o.outputs
                    .iter()
                    .map(move |&t| if mv { Some(t) } else { None })
                    .collect::<Vec<_>>()
            })
            .map(|t| t.and_then(hinted))
            .collect();
        if let Some(Some(p)) = params.first() {
            if params.iter().all(|q| *q == Some(*p)) && !g.outputs.contains(&x) {
                forced.insert(x, *p);
            }
        }
    }
    forced
}

/// [`quantize_bits`] with 8-bit weights.
pub fn quantize(g: &Graph, ranges: &Ranges) -> Result<(Graph, Report)> {
    quantize_bits(g, ranges, 8)
}

/// ONNX nodes lowered to at least this many ops are unrolled recurrences or loops.
pub const UNROLLED_OPS: usize = 256;

/// [`quantize_bits`] with every op of an unrolled node (`UNROLLED_OPS` or more ops from one
/// ONNX node: a long LSTM, GRU, Loop or Scan) left f32, so such a node needs conversions
/// only where it starts and ends instead of around each island inside it; with the names
/// of those nodes, sorted. `None` when the graph has no such node.
pub fn unrolled_in_f32(
    g: &Graph,
    ranges: &Ranges,
    weight_bits: u8,
    keep8: &HashSet<usize>,
) -> Result<Option<(Graph, Report, Vec<String>)>> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for op in &g.ops {
        *per_node.entry(op.name.as_str()).or_default() += 1;
    }
    let mut names: Vec<&str> = per_node
        .iter()
        .filter(|&(_, &n)| n >= UNROLLED_OPS)
        .map(|(&name, _)| name)
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    names.sort_unstable();
    let mut kept = ranges.clone();
    for op in g
        .ops
        .iter()
        .filter(|op| names.binary_search(&op.name.as_str()).is_ok())
    {
        for t in &op.outputs {
            kept.remove(t);
        }
    }
    let (q, rep) = quantize_bits_keeping(g, &kept, weight_bits, keep8)?;
    Ok(Some((
        q,
        rep,
        names.into_iter().map(String::from).collect(),
    )))
}

/// Quantize the float graph with the calibrated `ranges`. Weights the pass quantizes
/// itself (not those a QDQ model gives) in one-group Convs take `weight_bits` (7:
/// per-channel scale max|w|/63, values in [−63, 63], which the hosts' u8×s8 GEMM kernels
/// multiply exactly; 8: max|w|/127); depthwise and transposed convs and FullyConnected
/// keep 8 bits (no kernel gains from 7 there).
pub fn quantize_bits(g: &Graph, ranges: &Ranges, weight_bits: u8) -> Result<(Graph, Report)> {
    quantize_bits_keeping(g, ranges, weight_bits, &HashSet::new())
}

/// [`quantize_bits`], with the one-group Convs whose float output tensor is in `keep8`
/// at 8 bits when `weight_bits` is 7.
pub fn quantize_bits_keeping(
    g: &Graph,
    ranges: &Ranges,
    weight_bits: u8,
    keep8: &HashSet<usize>,
) -> Result<(Graph, Report)> {
    anyhow::ensure!(
        weight_bits == 7 || weight_bits == 8,
        "weight bits are 7 or 8, not {weight_bits}"
    );
    let forced = borrow_params_from_movement(g, ranges);
    let mut q = Q {
        weight_bits,
        keep8: keep8.clone(),
        g,
        links: crate::ir::Links::of(g),
        ranges,
        out: Graph::default(),
        map_f: HashMap::new(),
        map_q: HashMap::new(),
        weights: HashMap::new(),
        families: crate::elementwise::families(g),
        forced,
        f32_parts: Default::default(),
        clamps: HashSet::new(),
        report: Report {
            int8_ops: 0,
            f32_ops: vec![],
            values: HashMap::new(),
        },
    };
    for &t in &g.inputs {
        let h = &g.tensors[t];
        let id = q.out.add(&h.name, h.dtype, h.shape.clone());
        q.out.inputs.push(id);
        if h.dtype == DType::F32 {
            q.map_f.insert(t, id);
        } else {
            // Integer inputs (ids, masks) stay integers.
            q.map_q.insert(t, id);
        }
    }
    let absorbed = q.absorbed();
    let folds = q.prelu_folds(&absorbed);
    let folded: std::collections::HashSet<usize> = folds.values().map(|f| f.prelu).collect();
    for (i, op) in g.ops.iter().enumerate() {
        if absorbed.contains(&i) || folded.contains(&i) {
            continue;
        }
        if let Some(fold) = folds.get(&i) {
            // Conv and PRelu as one int8 op: both count as int8.
            // The input's and the PRelu's params as they are now: an op quantized since
            // `prelu_folds` may have fixed them (a MaxPool's output takes its input's).
            let (Some(px), Some(py)) = (q.act(fold.x), q.act(fold.y)) else {
                return Err(anyhow!(
                    "op {i}: the folded conv lost the int8 params of its input or output"
                ));
            };
            q.weighted(op, fold.x, fold.w, px, py, Some(fold))?;
            q.report.int8_ops += 2;
            continue;
        }
        if !q.try_int8(op)? {
            q.float_op(op)?;
            q.report
                .f32_ops
                .push(format!("{} ({})", op.name, op.kind.name()));
        } else {
            q.report.int8_ops += 1;
        }
    }
    for &t in &g.outputs {
        // i32 outputs (booleans, indices) are not quantized: they leave as they are.
        let f = match q.map_q.get(&t) {
            Some(&id) if g.tensors[t].dtype == DType::I32 => id,
            _ => q.get_f(t)?,
        };
        q.out.outputs.push(f);
    }
    let (renamed, moved) = crate::round_trips::drop_round_trips(&mut q.out, &q.clamps);
    q.report.int8_ops -= moved.min(q.report.int8_ops);
    // Pruning renumbers the tensors: the map from float tensors follows it (stale ids made
    // the accuracy refinement compare an output with another tensor, or with nothing).
    let remap = q.out.prune();
    let mut values = q.map_f.clone();
    values.extend(q.map_q.iter().map(|(&k, &v)| (k, v)));
    for v in values.values_mut() {
        if let Some(&to) = renamed.get(v) {
            *v = to;
        }
    }
    q.report.values = crate::ir::follow_prune(&values, &remap);
    Ok((q.out, q.report))
}

impl Q<'_> {
    fn act(&self, t: usize) -> Option<(f32, i32)> {
        if let Some(p) = self.forced.get(&t) {
            return Some(*p);
        }
        let h = &self.g.tensors[t];
        if h.dtype != DType::F32 {
            return None;
        }
        if let Some(Hint::Act { scale, zero_point }) = h.hint {
            return Some((scale, zero_point));
        }
        if let Some(v) = h.const_f32() {
            let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            return Some(params_for_range(lo, hi));
        }
        self.ranges
            .get(&t)
            .map(|&(lo, hi)| params_for_range(lo, hi))
    }

    fn get_f(&mut self, t: usize) -> Result<usize> {
        if let Some(&f) = self.map_f.get(&t) {
            return Ok(f);
        }
        let h = &self.g.tensors[t];
        let id = if h.is_const() {
            let id = self.out.add_const(
                &h.name,
                h.dtype,
                h.shape.clone(),
                h.data.clone().unwrap_or_default(),
            );
            self.out.tensors[id].quant = h.quant.clone();
            id
        } else {
            let qi = *self
                .map_q
                .get(&t)
                .ok_or_else(|| anyhow!("tensor '{}' has no value", h.name))?;
            let id = self
                .out
                .add(format!("{}:f32", h.name), DType::F32, h.shape.clone());
            self.out.ops.push(HOp {
                kind: OpKind::Dequantize,
                inputs: vec![Some(qi)],
                outputs: vec![id],
                params: vec![],
                name: format!("{}:dq", h.name),
            });
            id
        };
        self.map_f.insert(t, id);
        Ok(id)
    }

    fn get_q(&mut self, t: usize) -> Result<usize> {
        if let Some(&q) = self.map_q.get(&t) {
            return Ok(q);
        }
        let (s, z) = self
            .act(t)
            .ok_or_else(|| anyhow!("no quantization params"))?;
        let h = &self.g.tensors[t];
        let quant = QuantSpec::PerTensor {
            scale: s,
            zero_point: z,
        };
        let id = if let Some(v) = h.const_f32() {
            let qv: Vec<i8> = v
                .iter()
                .map(|&x| quantize_f32(x, s, z, -128, 127) as i8)
                .collect();
            let id = self.out.add_const(
                format!("{}:q", h.name),
                DType::I8,
                h.shape.clone(),
                i8_bytes(&qv),
            );
            self.out.tensors[id].quant = quant;
            id
        } else {
            let f = self.get_f(t)?;
            let id = self
                .out
                .add(format!("{}:q", h.name), DType::I8, h.shape.clone());
            self.out.tensors[id].quant = quant;
            self.out.ops.push(HOp {
                kind: OpKind::Quantize,
                inputs: vec![Some(f)],
                outputs: vec![id],
                params: vec![],
                name: format!("{}:q", h.name),
            });
            id
        };
        if matches!(h.hint, Some(Hint::Act { .. })) {
            self.clamps.insert(id);
        }
        self.map_q.insert(t, id);
        Ok(id)
    }

    /// A fresh int8 output tensor for float tensor `t` with params `p`.
    fn new_q(&mut self, t: usize, p: (f32, i32)) -> usize {
        let h = &self.g.tensors[t];
        let id = self
            .out
            .add(format!("{}:q", h.name), DType::I8, h.shape.clone());
        self.out.tensors[id].quant = QuantSpec::PerTensor {
            scale: p.0,
            zero_point: p.1,
        };
        if matches!(self.g.tensors[t].hint, Some(Hint::Act { .. })) {
            self.clamps.insert(id);
        }
        self.map_q.insert(t, id);
        self.forced.insert(t, p);
        id
    }

    fn float_op(&mut self, op: &HOp) -> Result<()> {
        let mut inputs = Vec::new();
        for t in &op.inputs {
            inputs.push(match t {
                Some(t)
                    if self.g.tensors[*t].dtype == DType::F32 || self.g.tensors[*t].is_const() =>
                {
                    Some(self.get_f(*t)?)
                }
                Some(t) => Some(
                    *self
                        .map_q
                        .get(t)
                        .ok_or_else(|| anyhow!("int tensor without value"))?,
                ),
                None => None,
            });
        }
        let mut outputs = Vec::new();
        let mut params = op.params.clone();
        // A QDQ model's pair after an op that stays f32 still saturates (ONNX Runtime's
        // quantizer drops the Relu it stands for): the clamp in the op's own activation
        // slots, or a Clip after it.
        let mut clamps = Vec::new();
        for &o in &op.outputs {
            let h = &self.g.tensors[o];
            let id = self.out.add(&h.name, h.dtype, h.shape.clone());
            self.out.tensors[id].quant = h.quant.clone();
            if h.dtype == DType::F32 {
                self.map_f.insert(o, id);
            } else {
                self.map_q.insert(o, id);
            }
            let mut w = id;
            if let (DType::F32, Some(Hint::Act { scale, zero_point })) = (h.dtype, &h.hint) {
                let (lo, hi) = crate::ir::act_range(*scale, *zero_point);
                let slots = crate::fuse::act_slots(op.kind).filter(|_| op.outputs.len() == 1);
                match slots {
                    Some(slots) => {
                        crate::fuse::narrow_act(&mut params, slots, lo, hi);
                    }
                    None => {
                        w = self.out.add(
                            format!("{}:unclamped", h.name),
                            DType::F32,
                            h.shape.clone(),
                        );
                        clamps.push((w, id, lo, hi));
                    }
                }
            }
            outputs.push(w);
        }
        self.out.ops.push(HOp {
            kind: op.kind,
            inputs,
            outputs,
            params,
            name: op.name.clone(),
        });
        for (x, y, lo, hi) in clamps {
            self.out.ops.push(HOp {
                kind: OpKind::Unary,
                inputs: vec![Some(x)],
                outputs: vec![y],
                params: vec![
                    cairn_core::op::UnaryFn::Clip as i32,
                    lo.to_bits() as i32,
                    hi.to_bits() as i32,
                ],
                name: format!("{}:qdq-clamp", op.name),
            });
        }
        Ok(())
    }

    fn runtime(&self, t: usize) -> bool {
        !self.g.tensors[t].is_const()
    }

    fn try_int8(&mut self, op: &HOp) -> Result<bool> {
        use OpKind::*;
        if op.kind == Quantize || op.kind == Dequantize {
            return Ok(false);
        }
        if let Some(done) = self.try_family(op)? {
            return Ok(done);
        }
        let x = match op.inputs[0] {
            Some(x) if self.runtime(x) && self.g.tensors[x].dtype == DType::F32 => x,
            _ => return Ok(false),
        };
        let y = op.outputs[0];
        let (Some(px), py) = (self.act(x), self.act(y)) else {
            return Ok(false);
        };
        match op.kind {
            Conv | ConvTranspose | FullyConnected => {
                let Some(py) = py else { return Ok(false) };
                let w = op.inputs[1].unwrap_or(usize::MAX);
                if self.g.tensors.get(w).and_then(|t| t.const_f32()).is_none() {
                    return Ok(false);
                }
                self.weighted(op, x, w, px, py, None)?;
            }
            Add | Sub | Mul | Div => {
                let Some(py) = py else { return Ok(false) };
                let b = op.inputs[1].unwrap_or(usize::MAX);
                if let Some(c) = const_scalar(self.g, b) {
                    let (lo, hi) = (
                        f32::from_bits(op.params[0] as u32),
                        f32::from_bits(op.params[1] as u32),
                    );
                    let f = move |v: f32| {
                        (match op.kind {
                            Add => v + c,
                            Sub => v - c,
                            Div => v / c,
                            _ => v * c,
                        })
                        .max(lo)
                        .min(hi)
                    };
                    self.lut(op, x, px, py, -1, &|_, v| f(v))?;
                } else if op.kind == Div {
                    // No int8 kernel for a tensor divisor (a constant one became a Mul).
                    return Ok(false);
                } else {
                    if self.act(b).is_none() {
                        return Ok(false);
                    }
                    let (qa, qb) = (self.get_q(x)?, self.get_q(b)?);
                    let yq = self.new_q(y, py);
                    let (lo, hi) = act_clamp(op.params[0], op.params[1], py);
                    self.out.ops.push(HOp {
                        kind: op.kind,
                        inputs: vec![Some(qa), Some(qb)],
                        outputs: vec![yq],
                        params: vec![lo, hi],
                        name: op.name.clone(),
                    });
                }
            }
            Unary => {
                let Some(py) = py else { return Ok(false) };
                let Some(f) = UnaryFn::from_code(op.params[0]) else {
                    return Ok(false);
                };
                let (a, b) = (
                    f32::from_bits(op.params[1] as u32),
                    f32::from_bits(op.params[2] as u32),
                );
                self.lut(op, x, px, py, -1, &|_, v| unary_value(f, a, b, v))?;
            }
            PRelu => {
                let Some(py) = py else { return Ok(false) };
                let s = op.inputs[1].unwrap_or(usize::MAX);
                let Some(sv) = self.g.tensors.get(s).and_then(|t| t.const_f32()) else {
                    return Ok(false);
                };
                let xs = &self.g.tensors[x].shape;
                let axis = if sv.len() == 1 {
                    -1
                } else if xs.len() > 1
                    && sv.len() == xs[1]
                    && self.g.tensors[s].shape.iter().filter(|&&d| d != 1).count() <= 1
                {
                    1
                } else {
                    return Ok(false);
                };
                self.lut(op, x, px, py, axis, &|c, v| {
                    if v < 0.0 {
                        v * sv[c.min(sv.len() - 1)]
                    } else {
                        v
                    }
                })?;
            }
            Concat | Resize | AveragePool | GlobalAveragePool | ReduceMean | Softmax
            | LayerNorm | BatchMatMul => {
                let py = match (py, op.kind) {
                    (Some(p), _) => p,
                    (None, Resize) => px,
                    _ => return Ok(false),
                };
                let py = if op.kind == Resize && op.params[0] == 0 {
                    px
                } else {
                    py
                };
                if op.kind == Concat && self.squashes_output_part(op, py) {
                    self.f32_parts.insert(y);
                    return Ok(false);
                }
                let mut inputs = Vec::new();
                let act_inputs = match op.kind {
                    Concat => op.inputs.len(),
                    BatchMatMul => 2,
                    _ => 1,
                };
                for (k, t) in op.inputs.iter().enumerate() {
                    inputs.push(match t {
                        Some(t) if k < act_inputs => {
                            if self.act(*t).is_none() {
                                return Ok(false);
                            }
                            Some(self.get_q(*t)?)
                        }
                        Some(t) => Some(self.get_f(*t)?),
                        None => None,
                    });
                }
                // A QDQ Softmax runs as written (dequantize, the exact f32 softmax,
                // quantize), not as ONNX Runtime's fused QLinearSoftmax table: the graph's
                // meaning is the oracle (tests/tests/ort_agreement.rs).
                let params = op.params.clone();
                if op.kind == BatchMatMul {
                    let pb = self.act(op.inputs[1].unwrap_or(0)).unwrap_or((1.0, 0));
                    let rq =
                        self.out
                            .add_f32(format!("{}:rq", op.name), vec![1], &[px.0 * pb.0 / py.0]);
                    inputs.push(Some(rq));
                }
                let yq = self.new_q(y, py);
                self.out.ops.push(HOp {
                    kind: op.kind,
                    inputs,
                    outputs: vec![yq],
                    params,
                    name: op.name.clone(),
                });
            }
            Reshape | Transpose | Slice | Split | Pad | MaxPool if self.f32_parts.contains(&x) => {
                self.f32_parts.extend(op.outputs.iter().copied());
                return Ok(false);
            }
            Reshape | Transpose | Slice | Split | Gather if self.moves_in_f32(op, x, px) => {
                return Ok(false);
            }
            Reshape | Transpose | Slice | Split | Pad | MaxPool => {
                let xq = self.get_q(x)?;
                let mut params = op.params.clone();
                if op.kind == Pad && params[0] == 0 {
                    params[1] =
                        quantize_f32(f32::from_bits(params[1] as u32), px.0, px.1, -128, 127);
                }
                let outs: Vec<usize> = op.outputs.iter().map(|&o| self.new_q(o, px)).collect();
                self.out.ops.push(HOp {
                    kind: op.kind,
                    inputs: vec![Some(xq)],
                    outputs: outs,
                    params,
                    name: op.name.clone(),
                });
            }
            Gather | Tile => self.int8_gather(op, x, px)?,
            Reduce if selects(op, &self.g.tensors[x].shape) => self.int8_gather(op, x, px)?,
            Reduce if is_arg(op) => {
                let xq = self.get_q(x)?;
                let h = &self.g.tensors[y];
                let id = self.out.add(&h.name, DType::I32, h.shape.clone());
                self.map_q.insert(y, id);
                self.out.ops.push(HOp {
                    kind: Reduce,
                    inputs: vec![Some(xq)],
                    outputs: vec![id],
                    params: op.params.clone(),
                    name: op.name.clone(),
                });
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Data movement that stays f32 in a calibrated graph: an output the calibration
    /// passes left without a range (kept f32 on purpose, such as an LSTM's initial cell
    /// state), or a part of a graph input whose own range is far narrower than the whole's
    /// (a recurrent model's state input holding the hidden state within ±1 beside a cell
    /// state in the tens): taken apart in f32, each part is quantized with its own range
    /// where an int8 op reads it, instead of keeping a few steps of the whole's.
    fn moves_in_f32(&self, op: &HOp, x: usize, px: (f32, i32)) -> bool {
        const MIN_SHARE: f32 = 1.0 / 8.0;
        if !self.ranges.contains_key(&x) {
            return false;
        }
        op.outputs.iter().any(|&o| match self.act(o) {
            None => true,
            Some((s, _)) => self.g.inputs.contains(&x) && s < px.0 * MIN_SHARE,
        })
    }

    /// A calibrated Concat whose parts are wanted apart again, as a graph output or by a
    /// Split or Slice, through data-movement ops only (YOLOX's per-level concats, reshaped,
    /// concatenated and transposed to the output; a YOLOv10 head's boxes and scores,
    /// transposed, then split for its TopK), that joins parts of very different ranges (a
    /// detector's boxes beside its 0–1 scores), or takes a part kept f32 for that reason:
    /// one int8 scale for the whole would leave the narrow part a few steps, or none. It
    /// stays f32, each part keeping its own scale until the concat, and so do the
    /// data-movement ops after it until the parts are apart (`f32_parts`).
    fn squashes_output_part(&self, op: &HOp, py: (f32, i32)) -> bool {
        const MIN_SHARE: f32 = 1.0 / 8.0;
        let y = op.outputs[0];
        let calibrated = !matches!(self.g.tensors[y].hint, Some(Hint::Act { .. }));
        calibrated
            && self.parted_later(y, 0)
            && op.inputs.iter().flatten().any(|&t| {
                self.f32_parts.contains(&t)
                    || (self.runtime(t) && self.act(t).is_some_and(|(s, _)| s < py.0 * MIN_SHARE))
            })
    }

    /// Whether `t` is a graph output or read by a Split or Slice, itself or through at
    /// most eight Reshapes, Transposes and Concats.
    fn parted_later(&self, t: usize, depth: usize) -> bool {
        use OpKind::*;
        let g = self.g;
        g.outputs.contains(&t)
            || (depth < 8
                && self.links.readers(t).iter().any(|&c| match g.ops[c].kind {
                    Split | Slice => true,
                    Reshape | Transpose | Concat => g.ops[c]
                        .outputs
                        .iter()
                        .any(|&o| self.parted_later(o, depth + 1)),
                    _ => false,
                }))
    }

    /// Ops of element-wise chains that become one lookup table whose results nothing
    /// else reads: they are not emitted.
    fn absorbed(&self) -> std::collections::HashSet<usize> {
        let g = self.g;
        let usable: HashMap<usize, &crate::elementwise::Family> = self
            .families
            .iter()
            .filter(|(&y, f)| {
                self.runtime(f.source) && self.act(f.source).is_some() && self.act(y).is_some()
            })
            .map(|(&y, f)| (y, f))
            .collect();
        let sinks: std::collections::HashSet<usize> = usable
            .keys()
            .filter_map(|&y| self.links.producer(y))
            .collect();
        let members: std::collections::HashSet<usize> = usable
            .values()
            .flat_map(|f| f.ops.iter().copied())
            .collect();
        let mut absorbed = std::collections::HashSet::new();
        for i in (0..g.ops.len()).rev() {
            if !members.contains(&i) || sinks.contains(&i) {
                continue;
            }
            let ok = g.ops[i].outputs.iter().all(|&t| {
                !g.outputs.contains(&t)
                    && self
                        .links
                        .readers(t)
                        .iter()
                        .all(|c| sinks.contains(c) || absorbed.contains(c))
            });
            if ok {
                absorbed.insert(i);
            }
        }
        absorbed
    }

    /// The result of an element-wise chain on one source tensor (`elementwise::families`)
    /// as one lookup table on the source, when both have int8 params. `None`: not such a
    /// result; the op goes the usual way.
    fn try_family(&mut self, op: &HOp) -> Result<Option<bool>> {
        let Some(&y) = op.outputs.first() else {
            return Ok(None);
        };
        let Some(fam) = self.families.get(&y) else {
            return Ok(None);
        };
        let (x, g) = (fam.source, self.g);
        let (Some(px), Some(py)) = (self.act(x), self.act(y)) else {
            return Ok(None);
        };
        if !self.runtime(x) {
            return Ok(None);
        }
        let fam = self.families.remove(&y).expect("family");
        self.lut(op, x, px, py, -1, &|_, v| {
            crate::elementwise::eval(g, &fam, v)
        })?;
        self.families.insert(y, fam);
        Ok(Some(true))
    }

    /// Gather/Tile (values move) and ReduceMax/Min (values are selected) on int8 data: the
    /// quantization stays; i32 indices pass through as they are.
    fn int8_gather(&mut self, op: &HOp, x: usize, px: (f32, i32)) -> Result<()> {
        let mut inputs = vec![Some(self.get_q(x)?)];
        for &t in op.inputs.iter().skip(1).flatten() {
            let id = if self.g.tensors[t].is_const() {
                self.get_f(t)?
            } else {
                *self
                    .map_q
                    .get(&t)
                    .ok_or_else(|| anyhow!("index tensor without value"))?
            };
            inputs.push(Some(id));
        }
        let y = self.new_q(op.outputs[0], px);
        self.out.ops.push(HOp {
            kind: op.kind,
            inputs,
            outputs: vec![y],
            params: op.params.clone(),
            name: op.name.clone(),
        });
        Ok(())
    }

    /// A lookup-table op computing y = f(channel, x) in real numbers.
    fn lut(
        &mut self,
        op: &HOp,
        x: usize,
        px: (f32, i32),
        py: (f32, i32),
        axis: i32,
        f: &dyn Fn(usize, f32) -> f32,
    ) -> Result<()> {
        let chans = if axis < 0 {
            1
        } else {
            self.g.tensors[x].shape[axis as usize]
        };
        let mut table = Vec::with_capacity(256 * chans);
        for c in 0..chans {
            for i in 0..256i32 {
                let real = ((i - 128) - px.1) as f32 * px.0;
                table.push(quantize_f32(f(c, real), py.0, py.1, -128, 127) as i8);
            }
        }
        // A table that maps every value to itself between equal params (a `Max` with a
        // bound below the range the calibration gave its input: the clamp a folded
        // activation already applied) is no op at all: its output is its input.
        let identity = px == py
            && table
                .iter()
                .enumerate()
                .all(|(i, &v)| v as i32 == (i % 256) as i32 - 128);
        if identity {
            let xq = self.get_q(x)?;
            self.clamps.insert(xq);
            self.map_q.insert(op.outputs[0], xq);
            self.forced.insert(op.outputs[0], py);
            return Ok(());
        }
        let shape = if axis < 0 {
            vec![256]
        } else {
            vec![chans, 256]
        };
        let t = self.out.add_const(
            format!("{}:lut", op.name),
            DType::I8,
            shape,
            i8_bytes(&table),
        );
        let xq = self.get_q(x)?;
        let yq = self.new_q(op.outputs[0], py);
        self.out.ops.push(HOp {
            kind: OpKind::Lut,
            inputs: vec![Some(xq), Some(t)],
            outputs: vec![yq],
            params: vec![axis],
            name: op.name.clone(),
        });
        Ok(())
    }

    /// int8 Convs whose output only a PRelu with a constant per-channel (or single) slope,
    /// or a LeakyRelu, reads, both with int8 params, by conv: the activation goes into the
    /// conv's requantization (negative accumulators take the slope times the usual
    /// multiplier, a second row of the conv's multipliers: `cairn_core::op::conv_multipliers`),
    /// so the output is rounded once, at the activation's range. Rounded at the conv's own
    /// range first, which the negative side widens by 1/slope, every output gets that
    /// coarser step: MTCNN's P-Net lost most of its mask IoU there. `absorbed`: ops that a
    /// lookup table of their chain replaces (not folded).
    fn prelu_folds(
        &self,
        absorbed: &std::collections::HashSet<usize>,
    ) -> HashMap<usize, PreluFold> {
        let g = self.g;
        let mut folds = HashMap::new();
        for (u, op) in g.ops.iter().enumerate() {
            let Some(&y) = op.outputs.first() else {
                continue;
            };
            if absorbed.contains(&u) || self.families.contains_key(&y) {
                continue;
            }
            let Some(t) = op.inputs.first().copied().flatten() else {
                continue;
            };
            // The slopes, one or one per channel, and the activation's own clamp.
            let (sv, clamp) = match op.kind {
                OpKind::PRelu => {
                    let Some(s) = op.inputs.get(1).copied().flatten() else {
                        continue;
                    };
                    let Some(sv) = g.tensors[s].const_f32() else {
                        continue;
                    };
                    // One value, or one per channel along axis 1 of the conv's output
                    // [N, C, …] (right-aligned shape with only that axis above 1).
                    let (rank, ss) = (g.tensors[t].shape.len(), &g.tensors[s].shape);
                    let oc = g.tensors[t].shape.get(1).copied().unwrap_or(0);
                    let per_channel = ss.len() <= rank
                        && sv.len() == oc
                        && ss.iter().enumerate().all(|(i, &d)| {
                            let axis = rank - ss.len() + i;
                            d == 1 || (axis == 1 && d == oc)
                        });
                    if !(sv.len() == 1 || per_channel) {
                        continue;
                    }
                    let clamp = match op.params[..] {
                        [lo, hi, ..] => (lo, hi),
                        _ => INF_BITS,
                    };
                    (sv, clamp)
                }
                OpKind::Unary if UnaryFn::from_code(op.params[0]) == Some(UnaryFn::LeakyRelu) => {
                    (vec![f32::from_bits(op.params[1] as u32)], INF_BITS)
                }
                _ => continue,
            };
            let Some(p) = self.links.producer(t) else {
                continue;
            };
            let conv = &g.ops[p];
            // A QDQ model that rounds the conv's output says so (`Hint::Act`): the fold
            // would cross its quantization point.
            if conv.kind != OpKind::Conv {
                continue;
            }
            let (Some(x), Some(w)) = (conv.inputs[0], conv.inputs.get(1).copied().flatten()) else {
                continue;
            };
            if self.act(x).is_none() || self.act(y).is_none() {
                continue;
            }
            let ok = conv.outputs.len() == 1
                && !matches!(g.tensors[t].hint, Some(Hint::Act { .. }))
                && !crate::fuse::has_act(g, p)
                && !g.outputs.contains(&t)
                && self.links.readers(t) == [u]
                && self.runtime(x)
                && g.tensors[x].dtype == DType::F32
                && g.tensors[w].const_f32().is_some()
                && self.act(t).is_some()
                && sv.iter().all(|v| v.is_finite());
            let Some(oc) = g.tensors[t].shape.get(1).copied().filter(|_| ok) else {
                continue;
            };
            let slopes = (0..oc).map(|c| sv[c.min(sv.len() - 1)]).collect();
            folds.insert(
                p,
                PreluFold {
                    prelu: u,
                    y,
                    slopes,
                    clamp,
                    x,
                    w,
                },
            );
        }
        folds
    }

    fn weighted(
        &mut self,
        op: &HOp,
        x: usize,
        w: usize,
        px: (f32, i32),
        py: (f32, i32),
        fold: Option<&PreluFold>,
    ) -> Result<()> {
        let wt = &self.g.tensors[w];
        let axis = if op.kind == OpKind::ConvTranspose {
            1
        } else {
            0
        };
        let wv = wt.const_f32().unwrap_or_default();
        let shape = wt.shape.clone();
        let oc_w = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let (qw, ws) = match &wt.hint {
            Some(Hint::Weight { q, scales, axis: a })
                if q.len() == wv.len() && (a.is_none() || *a == Some(axis)) =>
            {
                let s = if scales.len() == 1 {
                    vec![scales[0]; oc_w]
                } else {
                    scales.clone()
                };
                (q.clone(), s)
            }
            _ => {
                // A bias must stay well inside int32 at scale s_x·s_w: raise the weight
                // scale of near-dead channels whose bias would not fit.
                let bias = op
                    .inputs
                    .get(2)
                    .copied()
                    .flatten()
                    .and_then(|b| self.g.tensors[b].const_f32());
                let floor: Vec<f32> = (0..oc_w)
                    .map(|c| {
                        bias.as_ref().map_or(0.0, |b| {
                            b.get(c).map_or(0.0, |v| v.abs()) / (px.0 * (1u32 << 24) as f32)
                        })
                    })
                    .collect();
                // 7 bits where the u8×s8 kernel pays: one-group convs (1.2–1.4× on AVX2).
                // The FullyConnected block measured no faster with it (0.93–1.0×,
                // `exact_u8s8 -- --ignored`), so FC weights keep 8 bits.
                let qmax = if one_group_conv(op)
                    && self.weight_bits == 7
                    && !op.outputs.first().is_some_and(|t| self.keep8.contains(t))
                {
                    63
                } else {
                    127
                };
                per_channel_symmetric_bits(&wv, oc_w, inner, &floor, qmax)
            }
        };
        let ycs = &self.g.tensors[op.outputs[0]].shape;
        let oc = if op.kind == OpKind::FullyConnected {
            ycs[ycs.len() - 1]
        } else {
            ycs[1]
        };
        // ConvTranspose: output channel = group * (O/g) + channel along axis 1.
        let groups = oc / oc_w;
        let wsc = |c: usize| ws[c % oc_w];
        let key = (w, ws.iter().map(|v| v.to_bits()).collect::<Vec<u32>>());
        let wq = match self.weights.get(&key) {
            Some(&id) => id,
            None => {
                let id =
                    self.out
                        .add_const(format!("{}:wq", wt.name), DType::I8, shape, i8_bytes(&qw));
                self.out.tensors[id].quant = QuantSpec::PerAxis {
                    axis,
                    scales: ws.clone(),
                    zero_points: vec![0; oc_w],
                };
                self.weights.insert(key, id);
                id
            }
        };
        let bias = match op.inputs.get(2).copied().flatten() {
            Some(b) => {
                let bt = &self.g.tensors[b];
                let bv = bt.const_f32().ok_or_else(|| anyhow!("run-time bias"))?;
                let q: Vec<i32> = match &bt.hint {
                    Some(Hint::Bias { q, .. }) if q.len() == oc => q.clone(),
                    _ => (0..oc)
                        .map(|c| round_half_even_f64(bv[c] as f64 / (px.0 as f64 * wsc(c) as f64)))
                        .collect(),
                };
                Some(self.out.add_const(
                    format!("{}:bq", bt.name),
                    DType::I32,
                    vec![oc],
                    i32_bytes(&q),
                ))
            }
            None => None,
        };
        let _ = groups;
        let rq: Vec<f32> = (0..oc).map(|c| px.0 * wsc(c) / py.0).collect();
        // A folded PRelu: a second row, the multipliers of negative accumulators
        // (`cairn_core::op::conv_multipliers`).
        let rq = match fold {
            Some(f) => {
                let neg = (0..oc).map(|c| rq[c] * f.slopes[c]);
                let both: Vec<f32> = rq.iter().copied().chain(neg).collect();
                self.out
                    .add_f32(format!("{}:rq", op.name), vec![2, oc], &both)
            }
            None => self.out.add_f32(format!("{}:rq", op.name), vec![oc], &rq),
        };
        let xq = self.get_q(x)?;
        let yq = self.new_q(fold.map_or(op.outputs[0], |f| f.y), py);
        let mut params = op.params.clone();
        let (slo, shi) = match op.kind {
            OpKind::Conv => (conv::ACT_LO, conv::ACT_HI),
            OpKind::ConvTranspose => (conv::T_ACT_LO, conv::T_ACT_HI),
            _ => (0, 1),
        };
        // A folded PRelu's clamp applies to the output (the conv has none: checked).
        let (lo, hi) = match fold {
            Some(f) => act_clamp(f.clamp.0, f.clamp.1, py),
            None => act_clamp(params[slo], params[shi], py),
        };
        params[slo] = lo;
        params[shi] = hi;
        self.out.ops.push(HOp {
            kind: op.kind,
            inputs: vec![Some(xq), Some(wq), bias, Some(rq)],
            outputs: vec![yq],
            params,
            name: op.name.clone(),
        });
        Ok(())
    }
}

/// A PRelu or LeakyRelu folded into the int8 Conv that writes its input
/// (`Q::prelu_folds`).
struct PreluFold {
    /// The PRelu (or LeakyRelu) op.
    prelu: usize,
    /// Its output: the conv's output in the int8 graph.
    y: usize,
    /// Its slope for each output channel.
    slopes: Vec<f32>,
    /// Its output clamp (f32 bits of the bounds).
    clamp: (i32, i32),
    /// The conv's input and weight tensors. (Their int8 params are read when the conv is
    /// quantized: ops quantized before it may fix them.)
    x: usize,
    w: usize,
}

fn round_half_even_f64(v: f64) -> i32 {
    let r = v.round();
    let r = if (v - v.trunc()).abs() == 0.5 {
        2.0 * (v / 2.0).round()
    } else {
        r
    };
    r.clamp(i32::MIN as f64, i32::MAX as f64) as i32
}

/// int8 symmetric per-channel weights: scale = max|w| / 127.
pub fn per_channel_symmetric(
    w: &[f32],
    channels: usize,
    inner: usize,
    min_scale: &[f32],
) -> (Vec<i8>, Vec<f32>) {
    per_channel_symmetric_bits(w, channels, inner, min_scale, 127)
}

/// Symmetric per-channel weights in [−qmax, qmax]: scale = max|w| / qmax.
pub fn per_channel_symmetric_bits(
    w: &[f32],
    channels: usize,
    inner: usize,
    min_scale: &[f32],
    qmax: i32,
) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; w.len()];
    let mut scales = vec![1.0f32; channels];
    let outer = w.len() / (channels * inner).max(1);
    for c in 0..channels {
        let mut m = 0.0f32;
        for o in 0..outer {
            for v in &w[(o * channels + c) * inner..(o * channels + c + 1) * inner] {
                m = m.max(v.abs());
            }
        }
        let s = if m > 0.0 { m / qmax as f32 } else { 1.0 };
        let s = s.max(min_scale.get(c).copied().unwrap_or(0.0));
        scales[c] = s;
        for o in 0..outer {
            let base = (o * channels + c) * inner;
            for i in 0..inner {
                q[base + i] = quantize_f32(w[base + i], s, 0, -qmax, qmax) as i8;
            }
        }
    }
    (q, scales)
}

/// An f32 activation clamp as int8 bounds under the output's params.
fn act_clamp(lo_bits: i32, hi_bits: i32, p: (f32, i32)) -> (i32, i32) {
    let (lo, hi) = (
        f32::from_bits(lo_bits as u32),
        f32::from_bits(hi_bits as u32),
    );
    let lo = if lo_bits == INF_BITS.0 {
        -128
    } else {
        quantize_f32(lo, p.0, p.1, -128, 127)
    };
    let hi = if hi_bits == INF_BITS.1 {
        127
    } else {
        quantize_f32(hi, p.0, p.1, -128, 127)
    };
    (lo, hi)
}

/// A Reduce that selects (Max or Min) over non-empty axes: exact in int8.
fn selects(op: &HOp, shape: &[usize]) -> bool {
    use cairn_core::op::ReduceFn;
    let f = ReduceFn::from_code(op.params[0]);
    let mask = op.params[1] as u32;
    matches!(f, Some(ReduceFn::Max | ReduceFn::Min))
        && (0..shape.len()).all(|d| mask & (1 << d) == 0 || shape[d] > 0)
}

/// ArgMax/ArgMin: on int8 values they compare the stored integers.
fn is_arg(op: &HOp) -> bool {
    cairn_core::op::ReduceFn::from_code(op.params[0]).is_some_and(|f| f.is_arg())
}

/// Whether `op` is a one-group Conv: the ops whose weights `weight_bits` 7 narrows (the
/// u8×s8 kernels pay there).
fn one_group_conv(op: &HOp) -> bool {
    op.kind == OpKind::Conv && op.params.get(conv::GROUP).is_none_or(|&g| g <= 1)
}

/// The one-group Convs whose weights a calibrated conversion quantizes itself (f32
/// weights, no QDQ scales given): for each, its float output tensor and the relative L2
/// error of its weights at 7 bits (per-channel scale max|w|/63). A layer whose weights
/// are mostly small beside a few large ones loses most from the eighth bit: that error
/// is what `--weight-bits auto` ranks layers by.
pub fn seven_bit_weight_errors(g: &Graph) -> Vec<(usize, f32)> {
    let mut out = vec![];
    for op in g.ops.iter().filter(|op| one_group_conv(op)) {
        let (Some(&y), Some(Some(w))) = (op.outputs.first(), op.inputs.get(1)) else {
            continue;
        };
        let wt = &g.tensors[*w];
        if matches!(wt.hint, Some(Hint::Weight { .. })) {
            continue;
        }
        let (Some(wv), Some(&oc)) = (wt.const_f32(), wt.shape.first()) else {
            continue;
        };
        if oc == 0 || wv.is_empty() || wv.len() % oc != 0 {
            continue;
        }
        let inner = wv.len() / oc;
        let (q, s) = per_channel_symmetric_bits(&wv, oc, inner, &[], 63);
        let (mut e, mut n) = (0f64, 0f64);
        for (i, (&v, &qv)) in wv.iter().zip(&q).enumerate() {
            if v.is_finite() {
                e += ((v - qv as f32 * s[i / inner]) as f64).powi(2);
                n += (v as f64).powi(2);
            }
        }
        out.push((y, if n > 0.0 { (e / n).sqrt() as f32 } else { 0.0 }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 8-bit pixels normalized as (p − 127.5)/d (d = 127.5 or 128, calibrated over the
    /// whole pixel range) keep 255 distinct int8 levels, each within half a step; with
    /// the plain 255th-part step every one was a tie and pairs merged (128 levels).
    #[test]
    fn a_half_offset_pixel_lattice_keeps_its_levels() {
        for d in [127.5f32, 128.0] {
            let x: Vec<f32> = (0..256).map(|p| (p as f32 - 127.5) / d).collect();
            let (s, z) = params_for_range(x[0], x[255]);
            let q: Vec<i32> = x
                .iter()
                .map(|&v| quantize_f32(v, s, z, -128, 127))
                .collect();
            let mut distinct = q.clone();
            distinct.dedup();
            assert!(distinct.len() >= 255, "d {d}: {} levels", distinct.len());
            for (&v, &k) in x.iter().zip(&q) {
                assert!(
                    (v - (k - z) as f32 * s).abs() <= 0.5 * s * 1.0001,
                    "d {d}: {v}"
                );
            }
        }
        // Ranges whose ends sit on the grid keep the 255th-part step.
        assert_eq!(params_for_range(0.0, 2.55), (0.01, -128));
        let (s, z) = params_for_range(-1.0, 3.0);
        assert_eq!(
            (s, z),
            (4.0 / 255.0, round_half_even(-128.0 + 1.0 / s) as i32)
        );
    }

    /// 7 bits: every channel's largest magnitude maps to ±63 and nothing leaves [−63, 63];
    /// 8 bits keeps ±127.
    #[test]
    fn per_channel_bits_bound_the_weights() {
        let w: Vec<f32> = (0..48)
            .map(|i| ((i * 37 % 29) as f32 - 14.0) * 0.013)
            .collect();
        for (qmax, lim) in [(63, 63i8), (127, 127)] {
            let (q, s) = per_channel_symmetric_bits(&w, 4, 12, &[0.0; 4], qmax);
            for c in 0..4 {
                let row = &q[c * 12..(c + 1) * 12];
                assert!(row.iter().all(|v| (-lim..=lim).contains(v)));
                assert_eq!(row.iter().map(|v| v.unsigned_abs()).max(), Some(lim as u8));
                let m = w[c * 12..(c + 1) * 12]
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()));
                assert_eq!(s[c], m / qmax as f32);
            }
        }
    }
}

//! The converter's graph: cairn ops over host tensors, plus a host executor that runs it
//! with the reference kernels (constant folding, calibration, the float reference).

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use cairn_core::emit::{AlignedBytes, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::kernel::KernelId;
use cairn_core::model::{kernel_id, weights_variant};
use cairn_core::{DType, OpCall, OpKind, Quant, Shape, TensorInfo, TensorMut, TensorRef};

/// Quantization facts read from a QDQ model.
#[derive(Clone, Debug, PartialEq)]
pub enum Hint {
    /// An activation's (scale, zero point) in the int8 domain.
    Act { scale: f32, zero_point: i32 },
    /// A weight given already quantized: int8 values and symmetric scales (one per
    /// channel along `axis`, or one for the tensor).
    Weight {
        q: Vec<i8>,
        scales: Vec<f32>,
        axis: Option<usize>,
    },
    /// A bias given already quantized to int32.
    Bias { q: Vec<i32>, scales: Vec<f32> },
    /// A table given quantized per tensor (a dynamically quantized embedding): its values
    /// are exactly `scale · (q − zero_point)`, int8 (uint8 shifted by 128).
    Table {
        q: Vec<i8>,
        scale: f32,
        zero_point: i32,
    },
}

/// The real range an activation Q/DQ pair of `Hint::Act { scale, zero_point }` saturates
/// to: `[scale·(−128 − zero_point), scale·(127 − zero_point)]` (the int8 domain; a u8
/// pair's zero point is already shifted).
pub fn act_range(scale: f32, zero_point: i32) -> (f32, f32) {
    (
        scale * (-128 - zero_point) as f32,
        scale * (127 - zero_point) as f32,
    )
}

#[derive(Clone, Debug)]
pub struct HTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Option<AlignedBytes>,
    pub quant: QuantSpec,
    pub hint: Option<Hint>,
}

impl HTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_const(&self) -> bool {
        self.data.is_some()
    }
    pub fn const_f32(&self) -> Option<Vec<f32>> {
        let d = self.data.as_ref()?;
        (self.dtype == DType::F32).then(|| bytemuck::cast_slice::<u8, f32>(d.as_slice()).to_vec())
    }
}

#[derive(Clone, Debug)]
pub struct HOp {
    pub kind: OpKind,
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<usize>,
    pub params: Vec<i32>,
    /// The ONNX node it came from (for messages and profiles).
    pub name: String,
}

impl HOp {
    /// The function of a Unary op (`None` for any other op, or a code it does not know).
    pub fn unary_fn(&self) -> Option<cairn_core::op::UnaryFn> {
        if self.kind != OpKind::Unary {
            return None;
        }
        cairn_core::op::UnaryFn::from_code(self.params.first().copied().unwrap_or(-1))
    }
}

/// `map`'s values (tensor ids of a graph) where [`Graph::prune`]'s `remap` moved them,
/// entries whose tensor was dropped left out.
pub fn follow_prune(
    map: &std::collections::HashMap<usize, usize>,
    remap: &[usize],
) -> std::collections::HashMap<usize, usize> {
    map.iter()
        .filter_map(|(&k, &v)| Some((k, *remap.get(v).filter(|&&r| r != usize::MAX)?)))
        .collect()
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub tensors: Vec<HTensor>,
    pub ops: Vec<HOp>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// The ONNX model ships int8/uint8 weight tensors (256 values or more): a quantized
    /// model, whose f32 FullyConnected weights that lie exactly on an int8 grid are read
    /// back as int8 (`run_time_int8`).
    pub int8_weights: bool,
}

/// Who writes and who reads each tensor of a graph, found in one pass. The fusion passes
/// ask it of every op; a scan of all ops per question made a long unrolled recurrence
/// (30,000 ops) take seconds to convert. Valid until the graph's inputs or outputs of ops
/// change.
pub struct Links {
    producer: Vec<usize>,
    /// Readers of tensor `t`: `list[start[t]..start[t + 1]]`, in op order.
    start: Vec<usize>,
    list: Vec<usize>,
}

impl Links {
    pub fn of(g: &Graph) -> Links {
        let n = g.tensors.len();
        let mut producer = vec![usize::MAX; n];
        // An op reading a tensor twice is one reader, as in `Graph::consumers`.
        let mut last = vec![usize::MAX; n];
        let mut count = vec![0usize; n + 1];
        for (i, op) in g.ops.iter().enumerate() {
            for &t in &op.outputs {
                if producer[t] == usize::MAX {
                    producer[t] = i;
                }
            }
            for t in op.inputs.iter().flatten().copied() {
                if last[t] != i {
                    last[t] = i;
                    count[t + 1] += 1;
                }
            }
        }
        for t in 0..n {
            count[t + 1] += count[t];
        }
        let mut fill = count.clone();
        let mut list = vec![0; count[n]];
        last.fill(usize::MAX);
        for (i, op) in g.ops.iter().enumerate() {
            for t in op.inputs.iter().flatten().copied() {
                if last[t] != i {
                    last[t] = i;
                    list[fill[t]] = i;
                    fill[t] += 1;
                }
            }
        }
        Links {
            producer,
            start: count,
            list,
        }
    }

    /// The first op writing `t` (`Graph::producer`).
    pub fn producer(&self, t: usize) -> Option<usize> {
        self.producer.get(t).copied().filter(|&p| p != usize::MAX)
    }

    /// The ops reading `t` (`Graph::consumers`).
    pub fn readers(&self, t: usize) -> &[usize] {
        match (self.start.get(t), self.start.get(t + 1)) {
            (Some(&a), Some(&b)) => &self.list[a..b],
            _ => &[],
        }
    }

    /// The op reading `t` when exactly one does.
    pub fn sole_reader(&self, t: usize) -> Option<usize> {
        match self.readers(t) {
            [r] => Some(*r),
            _ => None,
        }
    }
}

pub fn shape_of(dims: &[usize]) -> Result<Shape> {
    Shape::new(dims).ok_or_else(|| anyhow!("shape {dims:?} has rank > 6 or a dim over u32"))
}

pub fn f32_bytes(v: &[f32]) -> AlignedBytes {
    AlignedBytes::from_slice(bytemuck::cast_slice(v))
}

fn quant_ref(q: &QuantSpec) -> Quant<'_> {
    match q {
        QuantSpec::None => Quant::None,
        QuantSpec::PerTensor { scale, zero_point } => Quant::PerTensor {
            scale: *scale,
            zero_point: *zero_point,
        },
        QuantSpec::PerAxis {
            axis,
            scales,
            zero_points,
        } => Quant::PerAxis {
            axis: *axis,
            scales,
            zero_points,
        },
    }
}

impl Graph {
    pub fn add(&mut self, name: impl Into<String>, dtype: DType, shape: Vec<usize>) -> usize {
        self.tensors.push(HTensor {
            name: name.into(),
            dtype,
            shape,
            data: None,
            quant: QuantSpec::None,
            hint: None,
        });
        self.tensors.len() - 1
    }

    pub fn add_const(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        data: AlignedBytes,
    ) -> usize {
        let id = self.add(name, dtype, shape);
        self.tensors[id].data = Some(data);
        id
    }

    pub fn add_f32(&mut self, name: impl Into<String>, shape: Vec<usize>, v: &[f32]) -> usize {
        self.add_const(name, DType::F32, shape, f32_bytes(v))
    }

    /// An i32 constant (index maps, masks, positions).
    pub fn add_i32(&mut self, name: impl Into<String>, shape: Vec<usize>, v: &[i32]) -> usize {
        let bytes = AlignedBytes::from_slice(bytemuck::cast_slice(v));
        self.add_const(name, DType::I32, shape, bytes)
    }

    pub fn info(&self, t: usize) -> Result<TensorInfo<'_>> {
        let h = &self.tensors[t];
        Ok(TensorInfo {
            dtype: h.dtype,
            shape: shape_of(&h.shape)?,
            quant: quant_ref(&h.quant),
            layout: cairn_core::Layout::Plain,
        })
    }

    pub fn kernel_of(&self, op: &HOp) -> Result<KernelId> {
        let x = self.info(
            op.inputs
                .first()
                .copied()
                .flatten()
                .ok_or_else(|| anyhow!("op without input 0"))?,
        )?;
        let y = self.info(op.outputs[0])?;
        let g = if op.kind == OpKind::Conv {
            op.params[cairn_core::op::conv::GROUP]
        } else {
            0
        };
        let k = kernel_id(op.kind, &x, &y, g, cairn_core::Layout::Plain);
        if op.kind != OpKind::FullyConnected {
            return Ok(k);
        }
        let w = op
            .inputs
            .get(1)
            .copied()
            .flatten()
            .map(|t| self.info(t))
            .transpose()?;
        Ok(weights_variant(k, w.as_ref()))
    }

    /// Ops reading tensor `t`.
    pub fn consumers(&self, t: usize) -> Vec<usize> {
        (0..self.ops.len())
            .filter(|&i| self.ops[i].inputs.contains(&Some(t)))
            .collect()
    }

    pub fn producer(&self, t: usize) -> Option<usize> {
        self.ops.iter().position(|o| o.outputs.contains(&t))
    }

    /// Output shape of an op via cairn-core's shape rules (`declared` for ops whose
    /// output is not derivable from inputs).
    pub fn infer(
        &self,
        kind: OpKind,
        params: &[i32],
        inputs: &[Option<usize>],
        out: usize,
        declared: &[usize],
    ) -> Result<Vec<usize>> {
        let shapes: Vec<Option<Shape>> = inputs
            .iter()
            .map(|t| t.map(|t| shape_of(&self.tensors[t].shape)).transpose())
            .collect::<Result<_>>()?;
        let s = cairn_core::op::infer_output(kind, params, &shapes, out, &shape_of(declared)?)
            .map_err(|e| {
                anyhow!(
                    "{} shapes do not fit: {:?} (inputs {:?})",
                    kind.name(),
                    e,
                    shapes
                )
            })?;
        let dims: Vec<usize> = s.dims().iter().map(|&d| d as usize).collect();
        crate::lower_shape::numel(&dims).map_err(|e| anyhow!("{} output: {e}", kind.name()))?;
        Ok(dims)
    }

    /// Run one op on given input bytes with the reference kernels; returns each output.
    pub fn run_op(
        &self,
        op: &HOp,
        value: &dyn Fn(usize) -> Option<AlignedBytes>,
    ) -> Result<Vec<AlignedBytes>> {
        self.run_op_on(op, value, false)
    }

    /// [`Graph::run_op`] on the reference kernels, or with `fast` on the CPU backend's
    /// fast paths (int8 bit-exact with the reference; f32 within rounding): for estimates
    /// that need speed, not the reference's exact f32 bits (constant folding and
    /// calibration ranges keep the reference, so a conversion gives the same file on
    /// every host).
    pub fn run_op_on(
        &self,
        op: &HOp,
        value: &dyn Fn(usize) -> Option<AlignedBytes>,
        fast: bool,
    ) -> Result<Vec<AlignedBytes>> {
        // Run-time values are the ones `value` hands over (constants are read in place).
        let held: Vec<Option<AlignedBytes>> = op
            .inputs
            .iter()
            .map(|t| {
                t.filter(|&t| self.tensors[t].data.is_none())
                    .and_then(value)
            })
            .collect();
        let slices = self.input_slices(op, |t| {
            let at = op.inputs.iter().position(|&i| i == Some(t))?;
            held[at].as_ref().map(|h| h.as_slice())
        })?;
        self.run_op_slices(op, &slices, fast)
    }

    /// `op`'s input bytes: a constant's from the graph, a run-time value's from `value`
    /// (an error names a tensor with neither); `None` for an absent input.
    fn input_slices<'a>(
        &'a self,
        op: &HOp,
        value: impl Fn(usize) -> Option<&'a [u8]>,
    ) -> Result<Vec<Option<&'a [u8]>>> {
        op.inputs
            .iter()
            .map(|t| {
                t.map(|t| match &self.tensors[t].data {
                    Some(d) => Ok(d.as_slice()),
                    None => value(t)
                        .ok_or_else(|| anyhow!("no value for tensor '{}'", self.tensors[t].name)),
                })
                .transpose()
            })
            .collect()
    }

    /// [`Graph::run_op_on`] on its inputs' bytes (`None` for an absent input).
    fn run_op_slices(
        &self,
        op: &HOp,
        inputs: &[Option<&[u8]>],
        fast: bool,
    ) -> Result<Vec<AlignedBytes>> {
        let kernel = self.kernel_of(op)?;
        let mut refs = Vec::new();
        for (t, bytes) in op.inputs.iter().zip(inputs) {
            refs.push(match (t, bytes) {
                (Some(t), Some(bytes)) => Some(TensorRef {
                    info: self.info(*t)?,
                    data: bytes,
                }),
                _ => None,
            });
        }
        let mut outs = Vec::new();
        let params = cairn_core::Params::new(&op.params);
        for (k, &o) in op.outputs.iter().enumerate() {
            let mut call = OpCall::new(op.kind, kernel, &params, k);
            for r in &refs {
                call.push_input(r.as_ref()).map_err(|e| anyhow!("{e:?}"))?;
            }
            let info = self.info(o)?;
            let mut buf =
                AlignedBytes::zeroed(self.tensors[o].numel() * self.tensors[o].dtype.size_bytes());
            let out = TensorMut {
                info,
                data: buf.as_mut_slice(),
            };
            if fast {
                use cairn_core::Backend;
                cairn_kernels::CpuBackend.execute(&call, out)
            } else {
                cairn_kernels::execute_reference(&call, out)
            }
            .map_err(|e| anyhow!("{} ({}) failed: {e:?}", op.kind.name(), op.name))?;
            outs.push(buf);
        }
        Ok(outs)
    }

    /// Run the whole graph on f32 inputs; returns the value of every tensor.
    pub fn run_all(&self, inputs: &[Vec<f32>]) -> Result<HashMap<usize, AlignedBytes>> {
        self.run_all_on(inputs, false)
    }

    /// [`Graph::run_all`], on the fast paths with `fast` (see [`Graph::run_op_on`]).
    pub fn run_all_on(
        &self,
        inputs: &[Vec<f32>],
        fast: bool,
    ) -> Result<HashMap<usize, AlignedBytes>> {
        let mut vals: HashMap<usize, AlignedBytes> = HashMap::new();
        if inputs.len() != self.inputs.len() {
            bail!(
                "model has {} inputs, {} given",
                self.inputs.len(),
                inputs.len()
            );
        }
        for (&t, v) in self.inputs.iter().zip(inputs) {
            if v.len() != self.tensors[t].numel() {
                bail!(
                    "input '{}' needs {} values, got {}",
                    self.tensors[t].name,
                    self.tensors[t].numel(),
                    v.len()
                );
            }
            let bytes = if self.tensors[t].dtype == DType::I32 {
                // Integer inputs arrive as f32 values holding integers (as at run time).
                let iv: Vec<i32> = v.iter().map(|&x| x as i32).collect();
                AlignedBytes::from_slice(bytemuck::cast_slice(&iv))
            } else {
                f32_bytes(v)
            };
            vals.insert(t, bytes);
        }
        for op in &self.ops {
            // Every input read in place (a copy of each per op was a third of a
            // calibration's time on a model of large maps).
            let slices = self.input_slices(op, |t| vals.get(&t).map(|v| v.as_slice()))?;
            let outs = self.run_op_slices(op, &slices, fast)?;
            for (&o, b) in op.outputs.iter().zip(outs) {
                vals.insert(o, b);
            }
        }
        Ok(vals)
    }

    /// Drop ops whose outputs nobody reads, and tensors nobody references. Returns where
    /// each old tensor went (`usize::MAX`: dropped), for maps kept beside the graph.
    pub fn prune(&mut self) -> Vec<usize> {
        loop {
            let before = self.ops.len();
            let mut used = vec![false; self.tensors.len()];
            for &t in &self.outputs {
                used[t] = true;
            }
            for op in &self.ops {
                for t in op.inputs.iter().flatten() {
                    used[*t] = true;
                }
            }
            self.ops.retain(|op| op.outputs.iter().any(|&o| used[o]));
            if self.ops.len() == before {
                break;
            }
        }
        let mut keep = vec![false; self.tensors.len()];
        for &t in self.inputs.iter().chain(&self.outputs) {
            keep[t] = true;
        }
        for op in &self.ops {
            for t in op.inputs.iter().flatten().chain(&op.outputs) {
                keep[*t] = true;
            }
        }
        let mut remap = vec![usize::MAX; self.tensors.len()];
        let mut tensors = Vec::new();
        for (i, t) in self.tensors.drain(..).enumerate() {
            if keep[i] {
                remap[i] = tensors.len();
                tensors.push(t);
            }
        }
        self.tensors = tensors;
        for op in &mut self.ops {
            op.inputs.iter_mut().flatten().for_each(|t| *t = remap[*t]);
            op.outputs.iter_mut().for_each(|t| *t = remap[*t]);
        }
        self.inputs.iter_mut().for_each(|t| *t = remap[*t]);
        self.outputs.iter_mut().for_each(|t| *t = remap[*t]);
        remap
    }

    /// Store each constant once: constants with the same dtype, shape, quantization and
    /// bytes (an unrolled `Loop`'s per-step copies of its weights, a weight read by two
    /// branches) are merged into the first, which every op then reads, and the copies are
    /// dropped. Graph inputs and outputs are left alone. Returns how many were dropped.
    /// (Ops reading one weight tensor is what an unrolled LSTM does already; the kernels'
    /// packed-weight cache, keyed by the weights' address, then packs them once.)
    pub fn share_constants(&mut self) -> usize {
        let io: std::collections::HashSet<usize> =
            self.inputs.iter().chain(&self.outputs).copied().collect();
        // (dtype, shape, quantization and hint, bytes) → the first tensor holding them.
        type Key<'g> = (u8, &'g [usize], String, &'g [u8]);
        let mut first: HashMap<Key<'_>, usize> = HashMap::new();
        let mut canon: Vec<usize> = (0..self.tensors.len()).collect();
        let mut merged = 0;
        for (i, t) in self.tensors.iter().enumerate() {
            let Some(d) = &t.data else { continue };
            if io.contains(&i) {
                continue;
            }
            let key = (
                t.dtype as u8,
                t.shape.as_slice(),
                format!("{:?} {:?}", t.quant, t.hint),
                d.as_slice(),
            );
            match first.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    canon[i] = *e.get();
                    merged += 1;
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                }
            }
        }
        if merged == 0 {
            return 0;
        }
        for op in &mut self.ops {
            op.inputs.iter_mut().flatten().for_each(|t| *t = canon[*t]);
        }
        self.prune();
        merged
    }

    /// Hand the graph to cairn-core's builder.
    pub fn to_builder(&self) -> Result<ModelBuilder> {
        let mut b = ModelBuilder::default();
        for t in &self.tensors {
            b.add_tensor(TensorSpec {
                dtype: t.dtype,
                shape: shape_of(&t.shape)?,
                quant: t.quant.clone(),
                data: t.data.as_ref().map(|d| d.as_slice().to_vec()),
                layout: cairn_core::Layout::Plain,
            });
        }
        let id = |t: usize| -> Result<u16> {
            u16::try_from(t).map_err(|_| anyhow!("more than 65535 tensors"))
        };
        for op in &self.ops {
            b.ops.push(OpSpec {
                kind: op.kind,
                inputs: op
                    .inputs
                    .iter()
                    .map(|t| t.map(id).transpose())
                    .collect::<Result<_>>()?,
                outputs: op.outputs.iter().map(|&t| id(t)).collect::<Result<_>>()?,
                params: op.params.clone(),
            });
        }
        b.inputs = self.inputs.iter().map(|&t| id(t)).collect::<Result<_>>()?;
        b.outputs = self.outputs.iter().map(|&t| id(t)).collect::<Result<_>>()?;
        Ok(b)
    }
}

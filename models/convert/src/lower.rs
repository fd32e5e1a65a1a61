//! ONNX → cairn graph (float, with QDQ hints). Shapes are made static here, shape
//! subgraphs (Shape/Gather/Concat/... on int64) are evaluated, and any op whose inputs
//! are all constant is folded by running the reference kernels at convert time.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, Context, Result};
use cairn_core::emit::QuantSpec;
use cairn_core::{DType, OpKind};

use crate::ir::{Graph, HOp, Hint};
use crate::onnx::{self, tensor_from_proto, Attrs, HData, HostTensor, ModelProto, NodeProto};

/// What an ONNX value name stands for during lowering.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// A tensor of the cairn graph (runtime or const float/int8).
    T(usize),
    /// An integer tensor known at convert time (shapes, axes, quantized initializers).
    Int(HostTensor),
    /// The output of a QuantizeLinear that only feeds matching DequantizeLinear nodes.
    FakeQ {
        t: usize,
        scale: f32,
        zero_point: i32,
    },
    /// An absent optional value.
    Absent,
}

#[derive(Clone, Debug, Default)]
pub struct LowerOptions {
    /// Shapes for graph inputs with dynamic dims, by input name or by position ("#0").
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Graph inputs whose values are known at convert time (become constants).
    pub const_inputs: HashMap<String, HostTensor>,
    /// Intermediate ONNX values to expose as extra outputs, after the model's own (for
    /// embeddings: the penultimate features a memory store or a learner needs).
    pub extra_outputs: Vec<String>,
    /// Keep each activation Q/DQ pair's saturation as a Clip to `[s·(qmin − z), s·(qmax −
    /// z)]` (a float conversion of a QDQ model). ONNX Runtime's quantizer drops a Relu or
    /// Clip whose range the pair enforces (zero point −128 for a Relu), so without the
    /// clamp the float model computes something else. An int8 conversion clamps there by
    /// quantizing, so it leaves this off.
    pub clamp_fake_quant: bool,
    /// LSTM, GRU and RNN directions whose hidden size is at most this become one
    /// `Recurrent` op each (0: every one is unrolled into per-step ops; at most
    /// `cairn_core::op::recurrent::MAX_HIDDEN`). [`LowerOptions::fused_recurrent`]: the
    /// limit a conversion uses.
    pub recurrent_max_hidden: usize,
}

impl LowerOptions {
    /// The hidden sizes whose recurrences run as one `Recurrent` op: every one the op
    /// holds in a float conversion; up to 128 in an int8 one, where the unrolled cell
    /// reads its recurrent weights as int8 (`FullyConnected.f32-w8`): a wide cell's step
    /// is bound by those weights' bytes, a narrow one's by its dozen ops.
    pub fn fused_recurrent(int8: bool) -> usize {
        if int8 {
            128
        } else {
            cairn_core::op::recurrent::MAX_HIDDEN
        }
    }
}

pub(crate) struct Lower<'m> {
    pub g: Graph,
    pub vals: HashMap<String, Val>,
    pub opset: i64,
    pub notes: Vec<String>,
    /// ONNX consumers of each value name (to recognise QDQ pairs).
    pub(crate) consumers: HashMap<String, Vec<&'m NodeProto>>,
    pub node_name: String,
    /// What the lowering of quantized ops (QOperator, dynamic) keeps between nodes.
    pub(crate) qop: crate::lower_qop::QopState,
    /// One-hot encodings (`Cast(Equal(indices, iota))`) by their f32 tensor: the i32
    /// indices (last dim 1) and the depth, so a MatMul on them becomes a row lookup.
    pub(crate) one_hot: HashMap<usize, (usize, usize)>,
    /// `LowerOptions::clamp_fake_quant`, and the Clip made for each fake-quantized tensor
    /// and pair params (one however many DequantizeLinear nodes read its QuantizeLinear).
    clamp_fake_quant: bool,
    fake_clamps: HashMap<(usize, u32, i32), usize>,
    /// `LowerOptions::recurrent_max_hidden`.
    pub(crate) recurrent_max_hidden: usize,
}

pub fn lower(model: &ModelProto, opts: &LowerOptions) -> Result<(Graph, Vec<String>)> {
    let (mut l, graph) = Lower::start(model)?;
    l.clamp_fake_quant = opts.clamp_fake_quant;
    l.recurrent_max_hidden = opts.recurrent_max_hidden;
    // TensorProto data types 2 (uint8) and 3 (int8).
    l.g.int8_weights = graph
        .initializer
        .iter()
        .any(|t| matches!(t.data_type, 2 | 3) && t.dims.iter().product::<i64>() >= 256);
    for (pos, inp) in graph_inputs(graph).enumerate() {
        l.input(pos, inp, opts)?;
    }
    for node in topo_sort(&graph.node)? {
        l.named_node(node)
            .with_context(|| format!("node '{}' ({})", l.node_name, node.op_type))?;
    }
    for out in &graph.output {
        let t = l
            .t(&out.name)
            .with_context(|| format!("graph output '{}'", out.name))?;
        l.g.outputs.push(t);
    }
    for name in &opts.extra_outputs {
        let t = l
            .t(name)
            .with_context(|| format!("--extra-output '{name}' is not a value of the model"))?;
        l.g.outputs.push(t);
    }
    l.g.prune();
    Ok((l.g, l.notes))
}

/// Something in a model cairn cannot run yet: where, which op, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The node's name (or `op:first output`), or `input 'NAME'`.
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// What [`check`] found: every independent problem, and how many nodes could not be
/// tried because they read a value a problem left unknown.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub nodes: usize,
    pub problems: Vec<Problem>,
    pub blocked: usize,
}

/// Lower the whole graph, collecting every problem instead of stopping at the first:
/// a node that fails is recorded and its outputs are marked unknown; nodes reading an
/// unknown value are counted as blocked, not reported again.
pub fn check(model: &ModelProto, opts: &LowerOptions) -> Result<CheckReport> {
    let (mut l, graph) = Lower::start(model)?;
    let mut report = CheckReport {
        nodes: graph.node.len(),
        ..CheckReport::default()
    };
    let mut unknown: HashSet<&str> = HashSet::new();
    // Values computed from an input whose unknown dims were taken as 1, with the hint
    // that names that input: a shape error behind it may be that guess, not the model.
    let mut guessed: HashMap<&str, std::rc::Rc<String>> = HashMap::new();
    for (pos, inp) in graph_inputs(graph).enumerate() {
        if let Err(e) = l.input(pos, inp, opts) {
            report.problems.push(Problem {
                node: format!("input '{}'", inp.name),
                op: "(graph input)".into(),
                reason: format!("{e:#}"),
            });
            // Go on as if it were an f32 input of its declared shape (unknown dims as 1),
            // so the nodes behind it are checked too; if even that fails, they are blocked.
            if l.input(pos, &as_f32_fixed(inp), opts).is_err() {
                unknown.insert(inp.name.as_str());
            } else {
                let (_, dims) = onnx::value_info_type(inp);
                if dims.as_ref().is_none_or(|d| d.iter().any(Option::is_none)) {
                    let hint = format!(
                        "this check took the unknown dims of input '{}' ({}) as 1, which may be what does not fit: {}",
                        inp.name,
                        dims_text(dims.as_deref()),
                        input_shape_hint(&inp.name, dims.as_deref())
                    );
                    guessed.insert(inp.name.as_str(), std::rc::Rc::new(hint));
                }
            }
        }
    }
    for node in topo_sort(&graph.node)? {
        let blocked = node.input.iter().any(|i| unknown.contains(i.as_str()));
        let guess = node
            .input
            .iter()
            .find_map(|i| guessed.get(i.as_str()).cloned());
        let result = if blocked {
            report.blocked += 1;
            Ok(())
        } else {
            l.named_node(node)
        };
        if let Err(e) = &result {
            let reason = match &guess {
                Some(hint) => format!("{e:#} ({hint})"),
                None => format!("{e:#}"),
            };
            report.problems.push(Problem {
                node: l.node_name.clone(),
                op: node.op_type.clone(),
                reason,
            });
        }
        if blocked || result.is_err() {
            unknown.extend(node.output.iter().map(String::as_str));
        }
        if let Some(hint) = guess {
            for o in &node.output {
                guessed.insert(o.as_str(), hint.clone());
            }
        }
    }
    Ok(report)
}

/// Declared dims as text: `[?, 3, ?, ?]` (`?` where the model fixes none), or "no shape".
fn dims_text(dims: Option<&[Option<usize>]>) -> String {
    match dims {
        None => "no shape".into(),
        Some(d) => {
            let parts: Vec<String> = d
                .iter()
                .map(|x| x.map_or("?".to_string(), |v| v.to_string()))
                .collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// How to fix input `name`'s dims on the command line: `--input-shape NAME=1,3,H2,H3`
/// with the model's fixed dims filled in and `D<i>` where dim `i` must be chosen.
fn input_shape_hint(name: &str, dims: Option<&[Option<usize>]>) -> String {
    match dims {
        Some(d) => {
            let parts: Vec<String> = d
                .iter()
                .enumerate()
                .map(|(i, x)| x.map_or(format!("D{i}"), |v| v.to_string()))
                .collect();
            let free: Vec<String> = d
                .iter()
                .enumerate()
                .filter(|(_, x)| x.is_none())
                .map(|(i, _)| i.to_string())
                .collect();
            format!(
                "give {} {} with --input-shape {name}={} (or calibration samples)",
                if free.len() == 1 { "dim" } else { "dims" },
                free.join(", "),
                parts.join(",")
            )
        }
        None => {
            format!("give every dim with --input-shape {name}=D0,D1,... (or calibration samples)")
        }
    }
}

/// `v` as an f32 tensor with every unknown dim 1 (what `check` assumes of an input it
/// refused).
fn as_f32_fixed(v: &crate::onnx_pb::ValueInfoProto) -> crate::onnx_pb::ValueInfoProto {
    use crate::onnx_pb::tensor_shape_proto::dimension::Value as Dim;
    use crate::onnx_pb::type_proto::Value;
    let mut v = v.clone();
    if let Some(Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.elem_type = 1;
        for d in t.shape.iter_mut().flat_map(|s| s.dim.iter_mut()) {
            if !matches!(d.value, Some(Dim::DimValue(n)) if n > 0) {
                d.value = Some(Dim::DimValue(1));
            }
        }
    }
    v
}

/// The graph inputs that are not initializers, in order.
fn graph_inputs(
    graph: &crate::onnx_pb::GraphProto,
) -> impl Iterator<Item = &crate::onnx_pb::ValueInfoProto> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(move |i| !inits.contains(i.name.as_str()))
}

impl<'m> Lower<'m> {
    /// A lowering of `model` with its initializers known.
    fn start(model: &'m ModelProto) -> Result<(Lower<'m>, &'m crate::onnx_pb::GraphProto)> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| anyhow!("the ONNX model has no graph"))?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(13, |o| o.version);
        let mut consumers: HashMap<String, Vec<&NodeProto>> = HashMap::new();
        for n in &graph.node {
            for i in &n.input {
                consumers.entry(i.clone()).or_default().push(n);
            }
        }
        let mut l = Lower {
            g: Graph::default(),
            vals: HashMap::new(),
            opset,
            notes: Vec::new(),
            consumers,
            node_name: String::new(),
            qop: Default::default(),
            one_hot: HashMap::new(),
            clamp_fake_quant: false,
            fake_clamps: HashMap::new(),
            recurrent_max_hidden: 0,
        };
        for init in &graph.initializer {
            let t = tensor_from_proto(init)?;
            l.set_host(&init.name, t);
        }
        Ok((l, graph))
    }

    /// Graph input number `pos`: a constant if given, else a runtime input of fixed shape.
    fn input(
        &mut self,
        pos: usize,
        inp: &crate::onnx_pb::ValueInfoProto,
        opts: &LowerOptions,
    ) -> Result<()> {
        let (elem, dims) = onnx::value_info_type(inp);
        if let Some(t) = opts.const_inputs.get(&inp.name) {
            // An integer input given as floats (a .npy of any type is read as f32) becomes
            // an integer constant again, as the graph declares it.
            let int = matches!(elem, 2..=7 | 9 | 12 | 13);
            let t = match &t.data {
                onnx::HData::F32(v) if int && v.iter().all(|x| x.fract() == 0.0) => {
                    HostTensor::i64(t.shape.clone(), v.iter().map(|&x| x as i64).collect())
                }
                _ => t.clone(),
            };
            crate::lower_shape::numel(&t.shape)
                .with_context(|| format!("the value given for input '{}'", inp.name))?;
            self.set_host(&inp.name, t);
            return Ok(());
        }
        // Float inputs run as f32; integer and bool inputs (token ids, masks, byte
        // sequences) as i32, fed as f32 values holding integers (exact up to 2^24).
        let dtype = match elem {
            1 | 10 | 11 | 16 => DType::F32,
            2 | 3 | 4 | 5 | 6 | 7 | 9 | 12 | 13 => DType::I32,
            _ => bail!(
                "input '{}' has ONNX element type {elem} (string or complex); cairn models take numeric inputs",
                inp.name
            ),
        };
        let given = opts
            .input_shapes
            .get(&inp.name)
            .or_else(|| opts.input_shapes.get(&format!("#{pos}")));
        let shape = match (given, dims) {
            (Some(s), Some(d)) if s.len() != d.len() => bail!(
                "--input-shape for '{}' has rank {}, the model says {}",
                inp.name,
                s.len(),
                d.len()
            ),
            (Some(s), Some(d)) => {
                for (a, b) in s.iter().zip(&d) {
                    if let Some(b) = b {
                        if a != b {
                            bail!(
                                "--input-shape {:?} for '{}' contradicts the model's fixed dims {}",
                                s,
                                inp.name,
                                dims_text(Some(&d))
                            );
                        }
                    }
                }
                s.clone()
            }
            (Some(s), None) => s.clone(),
            (None, Some(d)) if d.iter().all(|x| x.is_some()) => {
                d.iter().map(|x| x.unwrap_or(1)).collect()
            }
            (None, d) => bail!(
                "input '{}' has dims that are not fixed ({}); {}",
                inp.name,
                dims_text(d.as_deref()),
                input_shape_hint(&inp.name, d.as_deref())
            ),
        };
        crate::lower_shape::numel(&shape).with_context(|| format!("input '{}'", inp.name))?;
        let id = self.g.add(&inp.name, dtype, shape);
        self.g.inputs.push(id);
        self.vals.insert(inp.name.clone(), Val::T(id));
        Ok(())
    }

    /// Lower one node, with `node_name` set for the ops and errors it makes.
    fn named_node(&mut self, node: &'m NodeProto) -> Result<()> {
        self.node_name = if node.name.is_empty() {
            format!(
                "{}:{}",
                node.op_type,
                node.output.first().cloned().unwrap_or_default()
            )
        } else {
            node.name.clone()
        };
        let first = self.g.tensors.len();
        self.node(node)?;
        self.check_extents(node, first)
    }

    /// Every shape the node made, graph tensors (from `first` on) and convert-time values,
    /// is within [`crate::lower_shape::MAX_EXTENT`], so later products of its dims cannot
    /// overflow. Shapes from outside are checked where they enter (inputs, initializers,
    /// op outputs in `Graph::infer`); this catches the ones a lowering folded on the host.
    fn check_extents(&self, node: &NodeProto, first: usize) -> Result<()> {
        let outputs = node.output.iter().filter_map(|o| match self.vals.get(o) {
            Some(Val::Int(h)) => Some(&h.shape),
            _ => None,
        });
        for shape in self.g.tensors[first..]
            .iter()
            .map(|t| &t.shape)
            .chain(outputs)
        {
            crate::lower_shape::numel(shape)?;
        }
        Ok(())
    }
}

fn topo_sort(nodes: &[NodeProto]) -> Result<Vec<&NodeProto>> {
    let produced: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut state = vec![0u8; nodes.len()];
    let mut order = Vec::new();
    fn visit<'a>(
        i: usize,
        nodes: &'a [NodeProto],
        produced: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<&'a NodeProto>,
    ) -> Result<()> {
        match state[i] {
            2 => return Ok(()),
            1 => bail!(
                "the ONNX graph has a cycle through node '{}'",
                nodes[i].name
            ),
            _ => {}
        }
        state[i] = 1;
        for inp in &nodes[i].input {
            if let Some(&j) = produced.get(inp.as_str()) {
                if j != i {
                    visit(j, nodes, produced, state, order)?;
                }
            }
        }
        state[i] = 2;
        order.push(&nodes[i]);
        Ok(())
    }
    for i in 0..nodes.len() {
        visit(i, nodes, &produced, &mut state, &mut order)?;
    }
    Ok(order)
}

pub(crate) const INF_BITS: (i32, i32) = (
    f32::NEG_INFINITY.to_bits() as i32,
    f32::INFINITY.to_bits() as i32,
);

impl<'m> Lower<'m> {
    pub fn set_host(&mut self, name: &str, t: HostTensor) {
        let v = match t.data {
            HData::F32(ref v) => Val::T(self.g.add_f32(name, t.shape.clone(), v)),
            _ => Val::Int(t),
        };
        self.vals.insert(name.to_string(), v);
    }

    pub fn val(&self, name: &str) -> Result<Val> {
        if name.is_empty() {
            return Ok(Val::Absent);
        }
        self.vals
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("value '{name}' is not defined"))
    }

    /// The cairn tensor behind a value (int constants become f32 constants).
    pub fn t(&mut self, name: &str) -> Result<usize> {
        match self.val(name)? {
            Val::T(t) => Ok(t),
            Val::FakeQ { t, .. } => Ok(t),
            Val::Int(h) => {
                let id = self.g.add_f32(name, h.shape.clone(), &h.to_f32());
                self.vals.insert(name.to_string(), Val::T(id));
                Ok(id)
            }
            Val::Absent => bail!("required input '{name}' is absent"),
        }
    }

    pub fn in_t(&mut self, n: &NodeProto, k: usize) -> Result<usize> {
        let name = n
            .input
            .get(k)
            .ok_or_else(|| anyhow!("missing input {k}"))?
            .clone();
        self.t(&name)
    }

    pub fn opt_t(&mut self, n: &NodeProto, k: usize) -> Result<Option<usize>> {
        match n.input.get(k) {
            Some(s) if !s.is_empty() => Ok(Some(self.t(&s.clone())?)),
            _ => Ok(None),
        }
    }

    /// A value that must be known at convert time, as a host tensor.
    pub fn host(&self, name: &str) -> Result<HostTensor> {
        match self.val(name)? {
            Val::Int(h) => Ok(h),
            Val::T(t) if self.g.tensors[t].dtype == DType::I32 => {
                match crate::lower_math::as_val(self, t) {
                    Val::Int(h) => Ok(h),
                    _ => bail!("'{name}' must be known at convert time (a constant or an initializer), but it is computed at run time"),
                }
            }
            Val::T(t) => {
                let ht = &self.g.tensors[t];
                let v = ht.const_f32().ok_or_else(|| anyhow!("'{name}' must be known at convert time (a constant or an initializer), but it is computed at run time"))?;
                Ok(HostTensor::f32(ht.shape.clone(), v))
            }
            _ => bail!("'{name}' must be a constant"),
        }
    }

    pub fn opt_host(&self, n: &NodeProto, k: usize) -> Result<Option<HostTensor>> {
        match n.input.get(k) {
            Some(s) if !s.is_empty() => Ok(Some(self.host(s)?)),
            _ => Ok(None),
        }
    }

    pub fn ints_in(&self, n: &NodeProto, k: usize) -> Result<Option<Vec<i64>>> {
        Ok(self.opt_host(n, k)?.map(|h| h.to_i64()))
    }

    pub fn shape(&self, t: usize) -> Vec<usize> {
        self.g.tensors[t].shape.clone()
    }

    pub fn is_int(&self, name: &str) -> bool {
        matches!(self.vals.get(name), Some(Val::Int(_)))
    }

    pub fn out(&mut self, n: &NodeProto, k: usize, v: Val) {
        if let Some(name) = n.output.get(k) {
            if !name.is_empty() {
                self.vals.insert(name.clone(), v);
            }
        }
    }

    /// Add an op with one output; folds it when every input is constant.
    pub fn op(
        &mut self,
        kind: OpKind,
        inputs: Vec<Option<usize>>,
        params: Vec<i32>,
        declared: &[usize],
    ) -> Result<usize> {
        Ok(self.op_n(kind, inputs, params, &[declared.to_vec()], None)?[0])
    }

    pub fn op_n(
        &mut self,
        kind: OpKind,
        inputs: Vec<Option<usize>>,
        params: Vec<i32>,
        declared: &[Vec<usize>],
        out_type: Option<(DType, QuantSpec)>,
    ) -> Result<Vec<usize>> {
        let x = inputs[0].ok_or_else(|| anyhow!("op without input"))?;
        // Output dtype and quantization: given (Quantize/Dequantize), else the input's dtype.
        // Set before folding, since kernels read their output's params from it.
        let (dtype, quant) = out_type.unwrap_or((self.g.tensors[x].dtype, QuantSpec::None));
        let mut outs = Vec::new();
        for (k, d) in declared.iter().enumerate() {
            let shape = self.g.infer(kind, &params, &inputs, k, d)?;
            let id = self
                .g
                .add(format!("{}:{}", self.node_name, k), dtype, shape);
            self.g.tensors[id].quant = quant.clone();
            outs.push(id);
        }
        let op = HOp {
            kind,
            inputs,
            outputs: outs.clone(),
            params,
            name: self.node_name.clone(),
        };
        if op
            .inputs
            .iter()
            .flatten()
            .all(|&t| self.g.tensors[t].is_const())
        {
            for &o in &outs {
                crate::lower_shape::fold_numel(&self.g.tensors[o].shape)?;
            }
            let vals = self.g.run_op(&op, &|_| None)?;
            for (&o, v) in outs.iter().zip(vals) {
                self.g.tensors[o].data = Some(v);
            }
        } else {
            self.g.ops.push(op);
        }
        Ok(outs)
    }

    pub fn reshape(&mut self, x: usize, shape: &[usize]) -> Result<usize> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.op(OpKind::Reshape, vec![Some(x)], vec![], shape)
    }

    pub fn transpose(&mut self, x: usize, perm: &[usize]) -> Result<usize> {
        let s = self.shape(x);
        let out: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
        self.op(
            OpKind::Transpose,
            vec![Some(x)],
            perm.iter().map(|&p| p as i32).collect(),
            &out,
        )
    }

    /// Concat along `axis`, as a tree of ops when there are more parts than one op takes.
    pub fn concat(&mut self, parts: &[usize], axis: usize) -> Result<usize> {
        match parts.len() {
            0 => bail!("Concat of nothing"),
            1 => Ok(parts[0]),
            k if k <= cairn_core::op::MAX_OP_INPUTS => self.op(
                OpKind::Concat,
                parts.iter().map(|&t| Some(t)).collect(),
                vec![axis as i32],
                &[],
            ),
            _ => {
                let groups: Vec<usize> = parts
                    .chunks(cairn_core::op::MAX_OP_INPUTS)
                    .map(|c| self.concat(c, axis))
                    .collect::<Result<_>>()?;
                self.concat(&groups, axis)
            }
        }
    }

    /// Refuse float arithmetic on a run-time integer tensor (an id or mask input): cairn's
    /// arithmetic kernels are f32 and int8; such models cast to float first.
    fn float_only(&self, ts: &[usize]) -> Result<()> {
        for &t in ts {
            let h = &self.g.tensors[t];
            if h.dtype == DType::I32 && !h.is_const() {
                bail!(
                    "arithmetic on the run-time integer tensor '{}' is not supported (cairn computes on f32 and int8; cast it to float first)",
                    h.name
                );
            }
        }
        Ok(())
    }

    pub fn unary(&mut self, x: usize, f: cairn_core::op::UnaryFn, a: f32, b: f32) -> Result<usize> {
        self.float_only(&[x])?;
        let s = self.shape(x);
        self.op(
            OpKind::Unary,
            vec![Some(x)],
            vec![f as i32, a.to_bits() as i32, b.to_bits() as i32],
            &s,
        )
    }

    pub fn binary(&mut self, kind: OpKind, a: usize, b: usize) -> Result<usize> {
        self.float_only(&[a, b])?;
        self.op(
            kind,
            vec![Some(a), Some(b)],
            vec![INF_BITS.0, INF_BITS.1],
            &[],
        )
    }

    pub fn scalar(&mut self, v: f32) -> usize {
        self.g
            .add_f32(format!("{}:scalar", self.node_name), vec![], &[v])
    }

    fn node(&mut self, n: &'m NodeProto) -> Result<()> {
        // Arity first: the lowerings read the inputs a valid node has by position.
        if n.output.is_empty() {
            bail!("node '{}' ({}) has no outputs", n.name, n.op_type);
        }
        let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
        if default_domain && n.input.len() < min_inputs(&n.op_type) {
            bail!(
                "node '{}' ({}) has {} inputs; the op takes at least {}",
                n.name,
                n.op_type,
                n.input.len(),
                min_inputs(&n.op_type)
            );
        }
        if crate::lower_qop::lower_qop_op(self, n)? || crate::lower_ml::lower_ml_op(self, n)? {
            return Ok(());
        }
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            bail!(
                "op '{}' from domain '{}' is not supported by cairn",
                n.op_type,
                n.domain
            );
        }
        let op = n.op_type.as_str();
        if crate::lower_shape::lower_shape_op(self, n)? {
            return Ok(());
        }
        match op {
            "QuantizeLinear" => self.quantize_linear(n),
            "DequantizeLinear" => self.dequantize_linear(n),
            "If" => self.if_op(n),
            "Loop" => self.loop_op(n),
            "Scan" => self.scan_op(n),
            _ => crate::lower_nn::lower_nn_op(self, n),
        }
    }

    /// `If` whose condition is known at convert time (shape guards of traced exports, a
    /// sample-rate switch given as a constant input): the taken branch is inlined, its
    /// outputs become the node's. A data-dependent condition is refused.
    fn if_op(&mut self, n: &'m NodeProto) -> Result<()> {
        let cond = self.host(&n.input[0]).map_err(|_| {
            anyhow!("If: the condition is computed at run time; cairn folds If only when its condition is known at convert time (give such an input with --const-input)")
        })?;
        let take_then = *cond
            .to_f32()
            .first()
            .ok_or_else(|| anyhow!("If: empty condition"))?
            != 0.0;
        let which = if take_then {
            "then_branch"
        } else {
            "else_branch"
        };
        let branch = Attrs(n)
            .graph(which)
            .ok_or_else(|| anyhow!("If without its {which}"))?;
        if branch.output.len() != n.output.len() {
            bail!(
                "If: {which} has {} outputs, the node {}",
                branch.output.len(),
                n.output.len()
            );
        }
        let outer = self.node_name.clone();
        self.inline(branch)
            .with_context(|| format!("in the {which} of '{outer}'"))?;
        self.node_name = outer;
        for (k, o) in branch.output.iter().enumerate() {
            let v = self.val(&o.name)?;
            self.out(n, k, v);
        }
        self.notes.push(format!(
            "If '{}': condition known at convert time, {which} inlined",
            self.node_name
        ));
        Ok(())
    }

    /// Lower the nodes of a subgraph in the current scope (it reads outer values by name).
    pub(crate) fn inline(&mut self, g: &'m crate::onnx_pb::GraphProto) -> Result<()> {
        for init in &g.initializer {
            let t = tensor_from_proto(init)?;
            self.set_host(&init.name, t);
        }
        for nd in &g.node {
            for i in &nd.input {
                self.consumers.entry(i.clone()).or_default().push(nd);
            }
        }
        self.inline_nodes(g)
    }

    /// Lower a subgraph's nodes again (a loop body's next iteration: its initializers and
    /// consumers are known from the first).
    pub(crate) fn inline_nodes(&mut self, g: &'m crate::onnx_pb::GraphProto) -> Result<()> {
        for node in topo_sort(&g.node)? {
            self.named_node(node)
                .with_context(|| format!("node '{}' ({})", self.node_name, node.op_type))?;
        }
        Ok(())
    }

    /// (scales, zero points, zero-point dtype, axis) of a Quantize/DequantizeLinear node.
    #[allow(clippy::type_complexity)]
    /// Scales, zero points, zero-point dtype and the resolved axis (per-axis only) of a
    /// QuantizeLinear/DequantizeLinear whose data input has `shape`.
    fn qparams(
        &self,
        n: &NodeProto,
        shape: &[usize],
    ) -> Result<(Vec<f32>, Vec<i64>, DType, Option<usize>)> {
        let s = self
            .host(&n.input[1])
            .context("QDQ scale must be constant")?
            .to_f32();
        let (zp, dt) = match self.opt_host(n, 2)? {
            Some(h) => {
                let dt = match h.data {
                    HData::U8(_) => DType::U8,
                    HData::I32(_) => DType::I32,
                    HData::I8(_) => DType::I8,
                    _ => bail!("QDQ zero point of an unsupported type"),
                };
                (h.to_i64(), dt)
            }
            None => (vec![0; s.len()], DType::U8),
        };
        if s.is_empty() || s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            bail!("QDQ scales must be finite and positive");
        }
        if zp.len() != s.len() {
            bail!("QDQ: {} scales but {} zero points", s.len(), zp.len());
        }
        let axis = match s.len() {
            1 => None,
            k => {
                let a = Attrs(n).int("axis", 1);
                let r = shape.len() as i64;
                let a = if a < 0 { a + r } else { a };
                if !(0..r).contains(&a) || shape[a as usize] != k {
                    bail!("QDQ: {k} per-axis scales do not match axis {a} of shape {shape:?}");
                }
                Some(a as usize)
            }
        };
        Ok((s, zp, dt, axis))
    }

    fn quantize_linear(&mut self, n: &'m NodeProto) -> Result<()> {
        let x = self.in_t(n, 0)?;
        let (s, zp, mut dt, axis) = self.qparams(n, &self.shape(x))?;
        if n.input.get(2).is_none_or(|z| z.is_empty()) {
            dt = match Attrs(n).int("output_dtype", 0) {
                3 => DType::I8,
                _ => DType::U8,
            };
        }
        let out_name = &n.output[0];
        let cons = self.consumers.get(out_name).cloned().unwrap_or_default();
        // Fake when every reader takes the real value: DequantizeLinear with the same
        // params, or a QLinear op (QOperator models), possibly through movement ops.
        let fake = axis.is_none()
            && dt != DType::I32
            && !cons.is_empty()
            && crate::lower_qop::read_as_real(self, out_name, n.input.get(1), n.input.get(2));
        let shift = if dt == DType::U8 { 128 } else { 0 };
        if fake && self.g.tensors[x].dtype == DType::F32 {
            let zero_point = zp[0] as i32 - shift;
            self.out(
                n,
                0,
                Val::FakeQ {
                    t: x,
                    scale: s[0],
                    zero_point,
                },
            );
            return Ok(());
        }
        let quant = match axis {
            None => QuantSpec::PerTensor {
                scale: s[0],
                zero_point: zp[0] as i32,
            },
            Some(a) => QuantSpec::PerAxis {
                axis: a,
                scales: s,
                zero_points: zp.iter().map(|&z| z as i32).collect(),
            },
        };
        let shape = self.shape(x);
        let y = self.op_n(
            OpKind::Quantize,
            vec![Some(x)],
            vec![],
            std::slice::from_ref(&shape),
            Some((dt, quant)),
        )?;
        self.out(n, 0, Val::T(y[0]));
        Ok(())
    }

    fn dequantize_linear(&mut self, n: &'m NodeProto) -> Result<()> {
        match self.val(&n.input[0])? {
            Val::FakeQ {
                t,
                scale,
                zero_point,
            } => {
                // With the clamp the hint goes on the Clip's output (a hinted tensor is a
                // point fusions keep, and the clamp is to fuse into its producer).
                let y = if self.clamp_fake_quant {
                    match self.fake_clamps.get(&(t, scale.to_bits(), zero_point)) {
                        Some(&c) => c,
                        None => {
                            let (lo, hi) = crate::ir::act_range(scale, zero_point);
                            let c = self.unary(t, cairn_core::op::UnaryFn::Clip, lo, hi)?;
                            self.fake_clamps.insert((t, scale.to_bits(), zero_point), c);
                            c
                        }
                    }
                } else {
                    t
                };
                let h = &mut self.g.tensors[y];
                if h.hint.is_none() {
                    h.hint = Some(Hint::Act { scale, zero_point });
                }
                self.out(n, 0, Val::T(y));
                Ok(())
            }
            Val::Int(q) => {
                let (s, zp, _, axis) = self.qparams(n, &q.shape)?;
                let qv = q.to_i64();
                let inner: usize = match axis {
                    Some(a) => q.shape.get(a + 1..).map_or(1, |r| r.iter().product()),
                    None => qv.len().max(1),
                };
                let ch = |i: usize| {
                    if axis.is_some() {
                        (i / inner) % s.len()
                    } else {
                        0
                    }
                };
                let real: Vec<f32> = qv
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v - zp[ch(i)]) as f32 * s[ch(i)])
                    .collect();
                let id = self.g.add_f32(&n.output[0], q.shape.clone(), &real);
                let hint = match &q.data {
                    HData::I8(v) if zp.iter().all(|&z| z == 0) => Some(Hint::Weight {
                        q: v.clone(),
                        scales: s.clone(),
                        axis,
                    }),
                    HData::U8(v) if zp.iter().all(|&z| z == 128) => Some(Hint::Weight {
                        q: v.iter().map(|&x| (x as i32 - 128) as i8).collect(),
                        scales: s.clone(),
                        axis,
                    }),
                    HData::I32(v) if zp.iter().all(|&z| z == 0) => Some(Hint::Bias {
                        q: v.clone(),
                        scales: s.clone(),
                    }),
                    _ => None,
                };
                self.g.tensors[id].hint = hint;
                self.out(n, 0, Val::T(id));
                Ok(())
            }
            Val::T(t) if self.g.tensors[t].dtype != DType::F32 => {
                let shape = self.shape(t);
                let y = self.op_n(
                    OpKind::Dequantize,
                    vec![Some(t)],
                    vec![],
                    &[shape],
                    Some((DType::F32, QuantSpec::None)),
                )?;
                self.out(n, 0, Val::T(y[0]));
                Ok(())
            }
            // A quantized value carried in real units (QOperator models: a movement op's
            // output on one; a quantized table's rows gathered by indices known now, which
            // folded to a constant).
            Val::T(t)
                if !self.g.tensors[t].is_const()
                    || crate::lower_qop::is_real_rows(self, &n.input[0]) =>
            {
                crate::lower_qop::dequantize_real(self, n, t)
            }
            _ => bail!("DequantizeLinear of a float tensor"),
        }
    }
}

/// The fewest inputs an ONNX op (default domain) takes in any opset, from the ONNX op
/// schemas (`onnx.defs`, version 1.22): a node with fewer is malformed. Ops not listed
/// take at least one.
fn min_inputs(op: &str) -> usize {
    match op {
        "Constant" | "Optional" | "OptionalHasElement" | "RandomNormal" | "RandomUniform"
        | "SequenceEmpty" => 0,
        "Add"
        | "AffineGrid"
        | "And"
        | "BitShift"
        | "BitwiseAnd"
        | "BitwiseOr"
        | "BitwiseXor"
        | "CastLike"
        | "CausalConvWithState"
        | "CenterCropPad"
        | "Compress"
        | "Conv"
        | "ConvInteger"
        | "ConvTranspose"
        | "CumProd"
        | "CumSum"
        | "DequantizeLinear"
        | "Div"
        | "Equal"
        | "Expand"
        | "Gather"
        | "GatherElements"
        | "GatherND"
        | "Gemm"
        | "Greater"
        | "GreaterOrEqual"
        | "GridSample"
        | "LayerNormalization"
        | "Less"
        | "LessOrEqual"
        | "Loop"
        | "MatMul"
        | "MatMulInteger"
        | "MaxRoiPool"
        | "MaxUnpool"
        | "Mod"
        | "Mul"
        | "NegativeLogLikelihoodLoss"
        | "NonMaxSuppression"
        | "Or"
        | "PRelu"
        | "Pow"
        | "QuantizeLinear"
        | "RMSNormalization"
        | "ReverseSequence"
        | "STFT"
        | "SequenceAt"
        | "SequenceInsert"
        | "SoftmaxCrossEntropyLoss"
        | "StringConcat"
        | "Sub"
        | "TensorScatter"
        | "Tile"
        | "Xor" => 2,
        "Attention"
        | "Col2Im"
        | "DeformConv"
        | "GRU"
        | "GroupNormalization"
        | "InstanceNormalization"
        | "LSTM"
        | "LinearAttention"
        | "OneHot"
        | "RNN"
        | "Range"
        | "RoiAlign"
        | "RotaryEmbedding"
        | "Scatter"
        | "ScatterElements"
        | "ScatterND"
        | "Where" => 3,
        "BatchNormalization" | "MelWeightMatrix" => 5,
        "QLinearConv" | "QLinearMatMul" => 8,
        _ => 1,
    }
}

//! What ONNX Runtime's int8 costs in exactness: its default run of a QDQ or QOperator
//! model (graph optimizations on, QDQ fused into integer kernels) against the QDQ graph
//! run as written (optimizations off: DequantizeLinear, the float op, QuantizeLinear), the
//! model's meaning on every CPU. `cairn bench` prints this beside the int8 rows, so the
//! speed of an inexact path is never compared silently with an exact one.

use std::path::Path;

use anyhow::{anyhow, Result};
use cairn_ort::{Graph, OrtModel};

use crate::tools::argmax;

/// Distance of one engine's outputs from the reference over a set of inputs.
#[derive(Clone, Debug, Default)]
pub struct Deviation {
    /// Largest difference in output quantization steps, when the reference's output is
    /// dequantized from int8 (else only `worst_abs` is known).
    pub worst_lsb: Option<f32>,
    pub worst_abs: f32,
    pub top1_same: usize,
    pub samples: usize,
}

impl Deviation {
    pub fn summary(&self) -> String {
        let lsb = self.worst_lsb.map_or_else(
            || format!("worst |diff| {:.4}", self.worst_abs),
            |l| format!("worst {l:.1} LSB"),
        );
        format!("{lsb}, top-1 same {}/{}", self.top1_same, self.samples)
    }
}

/// The QDQ model run as written, on one input shape.
pub struct Reference {
    shape: Vec<usize>,
    /// Scale of the DequantizeLinear that makes the first output, if one does.
    step: Option<f32>,
    outputs: Vec<Vec<f32>>,
}

impl Reference {
    /// Runs `qdq` as written on every input once and keeps the outputs.
    pub fn new(qdq: &Path, shape: &[usize], inputs: &[Vec<f32>]) -> Result<Reference> {
        let mut model = OrtModel::load_with(qdq, 1, Graph::AsWritten)?;
        let mut outputs = Vec::with_capacity(inputs.len());
        for x in inputs {
            outputs.push(first_output(&mut model, shape, x)?);
        }
        Ok(Reference {
            shape: shape.to_vec(),
            step: output_step(&std::fs::read(qdq)?),
            outputs,
        })
    }

    /// How far `run` is from the reference on the same inputs.
    pub fn deviation(
        &self,
        inputs: &[Vec<f32>],
        mut run: impl FnMut(&[f32]) -> Result<Vec<f32>>,
    ) -> Result<Deviation> {
        let mut d = Deviation::default();
        for (x, want) in inputs.iter().zip(&self.outputs) {
            let got = run(x)?;
            if got.len() != want.len() {
                return Err(anyhow!(
                    "output has {} values, the reference {}",
                    got.len(),
                    want.len()
                ));
            }
            for (a, b) in got.iter().zip(want) {
                d.worst_abs = d.worst_abs.max((a - b).abs());
            }
            d.top1_same += (argmax(&got) == argmax(want)) as usize;
            d.samples += 1;
        }
        d.worst_lsb = self.step.map(|s| d.worst_abs / s);
        Ok(d)
    }

    /// The deviation of ONNX Runtime's default (optimized) run of `model` (QDQ or
    /// QOperator, quantized with the same parameters as the reference).
    pub fn ort_default(&self, model: &Path, inputs: &[Vec<f32>]) -> Result<Deviation> {
        let mut m = OrtModel::load_with(model, 1, Graph::Optimized)?;
        let shape = self.shape.clone();
        self.deviation(inputs, |x| first_output(&mut m, &shape, x))
    }
}

fn first_output(m: &mut OrtModel, shape: &[usize], x: &[f32]) -> Result<Vec<f32>> {
    let mut out = m.run(&[(shape.to_vec(), x.to_vec())])?;
    if out.is_empty() {
        return Err(anyhow!("ONNX Runtime returned no output"));
    }
    Ok(out.swap_remove(0).1)
}

/// The scale of the DequantizeLinear node that produces the graph's first output, if the
/// output is made that way and its scale is a constant scalar.
pub fn output_step(onnx: &[u8]) -> Option<f32> {
    let model = cairn_convert::onnx::load_model(onnx).ok()?;
    let graph = model.graph.as_ref()?;
    let out = &graph.output.first()?.name;
    let node = graph
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| o == out))?;
    if node.op_type != "DequantizeLinear" {
        return None;
    }
    let scale = node.input.get(1)?;
    let t = graph.initializer.iter().find(|t| &t.name == scale)?;
    let v = cairn_convert::onnx::tensor_from_proto(t).ok()?.to_f32();
    match v.as_slice() {
        [s] if s.is_finite() && *s > 0.0 => Some(*s),
        _ => None,
    }
}

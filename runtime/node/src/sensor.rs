//! The model as a node's sense: one input in, the features a memory keeps (a graph output,
//! usually the penultimate layer exposed at convert time) and the predicted class out.
//! Runs in the caller's arena through any backend; allocates nothing.

use cairn_core::{Backend, DType, Interpreter, Model, TensorRef};

use crate::NodeError;

pub struct Sensor<'m, 'a, B: Backend> {
    it: Interpreter<'m, 'a, B>,
    model_tag: u32,
    features_output: usize,
    class_output: Option<usize>,
}

/// What one run of the model gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sensed {
    /// Length of the features written.
    pub dim: usize,
    /// Argmax of the class output, when the sensor has one.
    pub class: Option<u16>,
}

impl<'m, 'a, B: Backend> Sensor<'m, 'a, B> {
    /// `model` run by `backend` in `arena`; graph output `features_output` is what memory
    /// keeps and `class_output` (if any) holds the class scores. `model_tag` is stamped into
    /// each record's provenance (`meta[0]`; e.g. the first bytes of the model's hash).
    pub fn new(
        model: Model<'m>,
        backend: B,
        arena: &'a mut [u8],
        features_output: usize,
        class_output: Option<usize>,
        model_tag: u32,
    ) -> Result<Self, NodeError> {
        let known = |o: usize| o < model.n_outputs();
        if !known(features_output) || class_output.is_some_and(|c| !known(c)) {
            return Err(NodeError::Output);
        }
        let it = Interpreter::new(model, backend, arena).map_err(NodeError::Model)?;
        Ok(Sensor {
            it,
            model_tag,
            features_output,
            class_output,
        })
    }

    pub fn model(&self) -> &Model<'m> {
        self.it.model()
    }
    pub fn model_tag(&self) -> u32 {
        self.model_tag
    }

    /// Graph output `k` of the last run, as the model left it (what firmware logs to
    /// check against the host byte for byte).
    pub fn output(&self, k: usize) -> Result<TensorRef<'_>, NodeError> {
        Ok(self.it.output(k)?)
    }

    /// Run on `input` (graph input 0, f32); the features go to `features[..dim]`.
    pub fn sense(&mut self, input: &[f32], features: &mut [f32]) -> Result<Sensed, NodeError> {
        self.it.set_input_f32(0, input)?;
        self.it.invoke()?;
        let f = self.it.output(self.features_output)?;
        let dim = f.info.numel();
        let have = features.len();
        let out = features.get_mut(..dim).ok_or(NodeError::Shape {
            expected: dim,
            got: have,
        })?;
        for (k, o) in out.iter_mut().enumerate() {
            *o = value(&f, k)?;
        }
        let class = match self.class_output {
            Some(c) => Some(argmax(&self.it.output(c)?)?),
            None => None,
        };
        Ok(Sensed { dim, class })
    }
}

/// Element `k` of an output in real units.
fn value(t: &TensorRef<'_>, k: usize) -> Result<f32, NodeError> {
    let (scale, zero) = t.info.quant.per_tensor();
    match t.info.dtype {
        DType::F32 => {
            let b = t.data.get(4 * k..4 * k + 4).ok_or(NodeError::Output)?;
            Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        DType::I8 => {
            let v = *t.data.get(k).ok_or(NodeError::Output)? as i8;
            Ok((v as i32 - zero) as f32 * scale)
        }
        _ => Err(NodeError::Output),
    }
}

fn argmax(t: &TensorRef<'_>) -> Result<u16, NodeError> {
    let n = t.info.numel();
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for k in 0..n {
        let v = value(t, k)?;
        if v > best_v {
            best = k;
            best_v = v;
        }
    }
    Ok(best as u16)
}

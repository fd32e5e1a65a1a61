//! Host convenience (std): a checked model with its own arena, run on f32 data.
//! Devices use `Model` + `Interpreter` directly.
//!
//! ```ignore
//! let bytes = AlignedBytes::from_slice(&std::fs::read("m.cairn")?);
//! let mut m = HostModel::new(bytes.as_slice())?;
//! let y = m.run(&[&x])?;
//! ```

extern crate std;
use std::vec::Vec;

use cairn_core::emit::AlignedBytes;
use cairn_core::model::{OpEntry, TensorDesc};
use cairn_core::{DType, Interpreter, LoadError, Model, RunError};

use crate::CpuBackend;

pub struct HostModel<'m> {
    model: Model<'m>,
    arena: AlignedBytes,
    reference: bool,
    /// Weights packed for the fast kernels on their first run, reused after.
    packs: crate::prepack::PackCache,
    /// The threads the fast kernels split an op across (none of its own by default).
    pool: crate::par::Pool,
    /// Every tensor's description, decoded once (`Interpreter::with_tensors`).
    descs: Vec<TensorDesc<'m>>,
    /// Every op, decoded once (`Interpreter::with_ops`).
    ops: Vec<OpEntry>,
}

/// Shape and dtype of a graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct IoInfo {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl<'m> HostModel<'m> {
    /// Parse and check `bytes` (16-byte aligned: see `AlignedBytes`).
    pub fn new(bytes: &'m [u8]) -> Result<HostModel<'m>, LoadError> {
        let model = Model::parse(bytes)?;
        let mut arena = AlignedBytes::zeroed(model.arena_bytes());
        // Check kernels and arena now, so `run` cannot fail on them.
        Interpreter::new(model, CpuBackend, arena.as_mut_slice())?;
        let descs = (0..model.n_tensors())
            .map(|t| model.tensor(t as u16))
            .collect();
        // Every op was checked at parse; were one not to decode, the table would be short
        // and the interpreter would decode ops as it runs them.
        let ops = (0..model.n_ops())
            .filter_map(|i| model.op_entry(i))
            .collect();
        Ok(HostModel {
            model,
            arena,
            reference: false,
            packs: crate::prepack::PackCache::for_model(bytes),
            pool: Default::default(),
            descs,
            ops,
        })
    }

    /// Run with the reference kernels only (the truth every fast path is tested
    /// against): to tell a kernel problem from a quantization one.
    pub fn set_reference(&mut self, on: bool) {
        self.reference = on;
    }

    /// Split the work of big ops across `threads` threads (a pool this model owns; 0 and
    /// 1: the calling thread alone, the default). Small ops stay on one thread. Outputs
    /// are the same bytes for every thread count.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), crate::par::PoolError> {
        self.pool = crate::par::Pool::new(threads)?;
        Ok(())
    }

    /// Split ops across `pool`'s threads (shared with whoever else holds a clone of it),
    /// e.g. one with its own split threshold (`Pool::with_min_part_work`).
    pub fn set_pool(&mut self, pool: crate::par::Pool) {
        self.pool = pool;
    }

    /// Threads a run splits its big ops across (1 by default).
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub fn model(&self) -> Model<'m> {
        self.model
    }

    fn io(&self, t: u16) -> IoInfo {
        let m = self.model();
        let info = m.tensor(t).info;
        IoInfo {
            shape: info.shape.dims().iter().map(|&d| d as usize).collect(),
            dtype: info.dtype,
        }
    }

    pub fn inputs(&self) -> Vec<IoInfo> {
        let m = self.model();
        (0..m.n_inputs())
            .filter_map(|i| m.input_tensor(i))
            .map(|t| self.io(t))
            .collect()
    }

    pub fn outputs(&self) -> Vec<IoInfo> {
        let m = self.model();
        (0..m.n_outputs())
            .filter_map(|i| m.output_tensor(i))
            .map(|t| self.io(t))
            .collect()
    }

    /// Run on f32 inputs; outputs as f32 (int8 outputs are dequantized).
    pub fn run(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, RunError> {
        self.run_with(inputs, |_, _| {})
    }

    /// Like `run`, calling `hook(op_index, done)` before (false) and after (true) each op.
    pub fn run_with(
        &mut self,
        inputs: &[&[f32]],
        hook: impl FnMut(usize, bool),
    ) -> Result<Vec<Vec<f32>>, RunError> {
        if self.reference {
            self.run_on(crate::RefBackend, inputs, hook)
        } else {
            // The model bytes stay borrowed while `packs` lives: its address keys hold.
            let mut packs = core::mem::take(&mut self.packs);
            let pool = self.pool.clone();
            let r = crate::par::with_pool(&pool, || {
                crate::prepack::with_cache(&mut packs, || self.run_on(CpuBackend, inputs, hook))
            });
            self.packs = packs;
            r
        }
    }

    /// Bytes of weights the fast kernels packed for this model (host memory beside the
    /// arena; 0 before the first run).
    pub fn packed_bytes(&self) -> usize {
        self.packs.bytes()
    }

    fn run_on<B: cairn_core::Backend>(
        &mut self,
        backend: B,
        inputs: &[&[f32]],
        mut hook: impl FnMut(usize, bool),
    ) -> Result<Vec<Vec<f32>>, RunError> {
        let m = self.model;
        let mut it = Interpreter::new(m, backend, self.arena.as_mut_slice())
            .map_err(|_| RunError::NoSuchTensor)?
            .with_tensors(&self.descs)
            .with_ops(&self.ops);
        if inputs.len() != m.n_inputs() {
            return Err(RunError::NoSuchTensor);
        }
        for (i, x) in inputs.iter().enumerate() {
            crate::hetero::set_input_values(&mut it, i, x)?;
        }
        for i in 0..m.n_ops() {
            hook(i, false);
            it.invoke_op(i)?;
            hook(i, true);
        }
        let mut outs = Vec::new();
        for i in 0..m.n_outputs() {
            let t = it.output(i)?;
            outs.push(to_f32(&t));
        }
        Ok(outs)
    }
}

/// A tensor's values as f32 (dequantized when quantized).
pub fn to_f32(t: &cairn_core::TensorRef<'_>) -> Vec<f32> {
    let (s, z) = t.info.quant.per_tensor();
    match t.info.dtype {
        DType::F32 => t
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::I8 => t
            .data
            .iter()
            .map(|&v| ((v as i8) as i32 - z) as f32 * s)
            .collect(),
        DType::U8 => t.data.iter().map(|&v| (v as i32 - z) as f32 * s).collect(),
        DType::I32 => t
            .data
            .chunks_exact(4)
            .map(|c| (i32::from_le_bytes([c[0], c[1], c[2], c[3]]) - z) as f32 * s)
            .collect(),
    }
}

//! The boundary between the interpreter and whatever computes: CPU kernels, a GPU, an NPU.

use crate::error::ExecError;
use crate::kernel::KernelId;
use crate::op::{OpKind, MAX_OP_INPUTS};
use crate::shape::MAX_RANK;
use crate::{TensorMut, TensorRef};

/// Everything one kernel call sees: the op's kind and parameters, and its inputs, all
/// checked when the model was loaded.
#[derive(Clone, Copy, Debug)]
pub struct OpCall<'a> {
    pub kind: OpKind,
    pub kernel: KernelId,
    params: [i32; 2 * MAX_RANK + 2],
    n_params: usize,
    inputs: [Option<TensorRef<'a>>; MAX_OP_INPUTS],
    n_inputs: usize,
    /// Which output of the op this call writes (Split writes one output per call).
    pub out_index: usize,
    /// Input 0 lives in the output's bytes: read it from the output buffer. `input(0)` still
    /// gives its metadata, with empty data.
    pub in_place: bool,
}

impl<'a> OpCall<'a> {
    pub fn new(kind: OpKind, kernel: KernelId, params: &[i32], out_index: usize) -> OpCall<'a> {
        let mut p = [0i32; 2 * MAX_RANK + 2];
        let n = params.len().min(p.len());
        p[..n].copy_from_slice(&params[..n]);
        OpCall {
            kind,
            kernel,
            params: p,
            n_params: n,
            inputs: [None; MAX_OP_INPUTS],
            n_inputs: 0,
            out_index,
            in_place: false,
        }
    }

    /// Append the next input (`None` for an absent optional one).
    pub fn push_input(&mut self, t: Option<TensorRef<'a>>) -> Result<(), ExecError> {
        let slot = self.inputs.get_mut(self.n_inputs).ok_or(ExecError::Shape)?;
        *slot = t;
        self.n_inputs += 1;
        Ok(())
    }

    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }
    pub fn input(&self, k: usize) -> Option<TensorRef<'a>> {
        self.inputs.get(k).copied().flatten()
    }
    pub fn req(&self, k: usize) -> Result<TensorRef<'a>, ExecError> {
        self.input(k).ok_or(ExecError::MissingInput)
    }
    pub fn params(&self) -> &[i32] {
        &self.params[..self.n_params]
    }
    pub fn param(&self, i: usize) -> i32 {
        self.params.get(i).copied().unwrap_or(0)
    }
    pub fn param_f32(&self, i: usize) -> f32 {
        f32::from_bits(self.param(i) as u32)
    }
}

/// A compute backend.
///
/// Contract:
/// - `supports` MUST answer from a fixed table: the interpreter asks once per kernel at
///   load, and a model loads only if every kernel it needs is supported.
/// - `execute` MUST write every byte of `out` and nothing else, MUST NOT panic on any call
///   the interpreter makes (shapes were checked at load), and MUST give results equal to
///   the reference kernels for int8 (bit for bit) and within the documented ULPs for f32.
/// - When `call.in_place` is set, input 0's bytes are `out`'s bytes on entry.
pub trait Backend {
    fn name(&self) -> &'static str;
    fn supports(&self, kernel: KernelId) -> bool;
    fn execute(&mut self, call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError>;
}

impl<B: Backend + ?Sized> Backend for &mut B {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn supports(&self, kernel: KernelId) -> bool {
        (**self).supports(kernel)
    }
    fn execute(&mut self, call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
        (**self).execute(call, out)
    }
}

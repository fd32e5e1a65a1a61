//! The boundary between the interpreter and whatever computes: CPU kernels, a GPU, an NPU.

use crate::error::ExecError;
use crate::kernel::KernelId;
use crate::op::{OpKind, MAX_OP_INPUTS};
use crate::shape::MAX_RANK;
use crate::{TensorInfo, TensorMut, TensorRef};

/// Words in an op's parameter list: the longest op layout (a Slice's or a Pad's per-axis
/// starts and ends, with two more) fits.
pub const PARAM_WORDS: usize = 2 * MAX_RANK + 2;

/// An op's parameter words in a fixed array, zero past the op's own: a kernel reading
/// word `i` (a constant) costs no length check, which a device's flash feels in every
/// kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    words: [i32; PARAM_WORDS],
    n: usize,
}

impl Params {
    /// The first `PARAM_WORDS` of `p` (an op layout never has more).
    pub fn new(p: &[i32]) -> Params {
        let mut words = [0; PARAM_WORDS];
        let n = p.len().min(PARAM_WORDS);
        words[..n].copy_from_slice(&p[..n]);
        Params { words, n }
    }
    /// `words`, of which the first `n` are the op's (the rest zero).
    pub(crate) fn from_words(words: [i32; PARAM_WORDS], n: usize) -> Params {
        Params { words, n }
    }
    /// The op's own words.
    pub fn as_slice(&self) -> &[i32] {
        &self.words[..self.n.min(PARAM_WORDS)]
    }
    /// Word `i`, 0 past the op's own.
    #[inline]
    pub fn get(&self, i: usize) -> i32 {
        self.words.get(i).copied().unwrap_or(0)
    }
}

/// Everything one kernel call sees: the op's kind and parameters, and its inputs, all
/// checked when the model was loaded. It borrows what it describes (parameter words,
/// tensor records, bytes), so building one per op copies pointers, not records: a call
/// holding sixteen 96-byte tensor views, zeroed and filled for every op, was a fifth of
/// a run of thousands of small ops.
#[derive(Clone, Copy, Debug)]
pub struct OpCall<'a> {
    pub kind: OpKind,
    pub kernel: KernelId,
    params: &'a Params,
    inputs: [Option<(&'a TensorInfo<'a>, &'a [u8])>; MAX_OP_INPUTS],
    n_inputs: usize,
    /// Which output of the op this call writes (Split writes one output per call).
    pub out_index: usize,
    /// Input 0 lives in the output's bytes: read it from the output buffer. `input(0)` still
    /// gives its metadata, with empty data.
    pub in_place: bool,
}

impl<'a> OpCall<'a> {
    pub fn new(kind: OpKind, kernel: KernelId, params: &'a Params, out_index: usize) -> OpCall<'a> {
        OpCall {
            kind,
            kernel,
            params,
            inputs: [None; MAX_OP_INPUTS],
            n_inputs: 0,
            out_index,
            in_place: false,
        }
    }

    /// Append the next input (`None` for an absent optional one).
    pub fn push_input(&mut self, t: Option<&'a TensorRef<'a>>) -> Result<(), ExecError> {
        match t {
            Some(t) => self.push_parts(Some(&t.info), t.data),
            None => self.push_parts(None, &[]),
        }
    }

    /// Append the next input from its record and bytes (`None`: an absent optional one).
    #[inline]
    pub fn push_parts(
        &mut self,
        info: Option<&'a TensorInfo<'a>>,
        data: &'a [u8],
    ) -> Result<(), ExecError> {
        let slot = self.inputs.get_mut(self.n_inputs).ok_or(ExecError::Shape)?;
        *slot = info.map(|i| (i, data));
        self.n_inputs += 1;
        Ok(())
    }

    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }
    #[inline]
    pub fn input(&self, k: usize) -> Option<TensorRef<'a>> {
        let (info, data) = self.inputs.get(k).copied().flatten()?;
        Some(TensorRef { info: *info, data })
    }
    pub fn req(&self, k: usize) -> Result<TensorRef<'a>, ExecError> {
        self.input(k).ok_or(ExecError::MissingInput)
    }
    pub fn params(&self) -> &[i32] {
        self.params.as_slice()
    }
    #[inline]
    pub fn param(&self, i: usize) -> i32 {
        self.params.get(i)
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

//! The interpreter: runs a checked model in the caller's arena, op by op, through a backend.
//! It owns no memory; it only splits the arena into the views each op may touch.

use crate::backend::{Backend, OpCall};
use crate::error::{ExecError, LoadError, RunError};
use crate::format::ALIGN;
#[cfg(feature = "alloc")]
use crate::model::OpEntry;
use crate::model::{Model, OpIo, Storage, TensorDesc, NO_TENSOR};
use crate::op::MAX_OP_INPUTS;
use crate::{DType, TensorMut, TensorRef};
use crate::{KernelId, OpKind, Params};

pub struct Interpreter<'m, 'a, B: Backend> {
    model: Model<'m>,
    backend: B,
    arena: &'a mut [u8],
    /// Every tensor's description, decoded once by the caller ([`Interpreter::with_tensors`]),
    /// or empty: each op then decodes its tensors' records from the model bytes.
    descs: &'a [TensorDesc<'m>],
    /// Every op decoded once ([`Interpreter::with_ops`]), or empty: each op is then decoded
    /// from the model bytes when it runs.
    #[cfg(feature = "alloc")]
    ops: &'a [OpEntry],
}

impl<'m, 'a, B: Backend> Interpreter<'m, 'a, B> {
    /// Check that `backend` has every kernel `model` needs and that `arena` holds the plan
    /// (the first bytes up to a 16-byte boundary are skipped). Nothing runs before this.
    pub fn new(model: Model<'m>, backend: B, arena: &'a mut [u8]) -> Result<Self, LoadError> {
        if let Some(k) = model.kernels().iter().find(|k| !backend.supports(*k)) {
            return Err(LoadError::MissingKernel(k));
        }
        let pad = arena.as_ptr().align_offset(ALIGN).min(arena.len());
        let arena = &mut arena[pad..];
        if arena.len() < model.arena_bytes() {
            return Err(LoadError::ArenaTooSmall {
                need: (model.arena_bytes() + ALIGN - 1) as u32,
                have: (arena.len() + pad) as u32,
            });
        }
        Ok(Interpreter {
            model,
            backend,
            arena,
            descs: &[],
            #[cfg(feature = "alloc")]
            ops: &[],
        })
    }

    /// Read tensor descriptions from `descs` (every tensor's [`Model::tensor`], in index
    /// order; `HostModel` keeps one) instead of decoding each op's records on every run: a model of hundreds of small ops (an unrolled LSTM) spent about a tenth of its
    /// time decoding them. A table of the wrong length is not used.
    pub fn with_tensors(mut self, descs: &'a [TensorDesc<'m>]) -> Self {
        if descs.len() == self.model.n_tensors() {
            self.descs = descs;
        }
        self
    }

    /// Read ops from `ops` (every op's [`Model::op_entry`], in order; `HostModel` keeps
    /// one) instead of decoding each record on every run, where a tensor table is given
    /// too ([`Interpreter::with_tensors`]). A table of the wrong length is not used.
    /// (With `alloc`: a device's build keeps only the decoding loop.)
    #[cfg(feature = "alloc")]
    pub fn with_ops(mut self, ops: &'a [OpEntry]) -> Self {
        if ops.len() == self.model.n_ops() {
            self.ops = ops;
        }
        self
    }

    /// Tensor `t`'s description: from the table when there is one.
    #[inline]
    fn desc(&self, t: u16) -> TensorDesc<'m> {
        desc_of(self.descs, &self.model, t)
    }

    pub fn model(&self) -> &Model<'m> {
        &self.model
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The planned arena (aligned; tensors at their planned offsets), for a driver that
    /// hands segments to an accelerator (`cairn_kernels::hetero`).
    pub fn arena(&self) -> &[u8] {
        &self.arena[..self.model.arena_bytes()]
    }

    /// The planned arena, writable: a driver copies an accelerator's outputs into it.
    pub fn arena_mut(&mut self) -> &mut [u8] {
        &mut self.arena[..self.model.arena_bytes()]
    }

    fn arena_range(&self, t: u16) -> Option<(usize, usize)> {
        match self.desc(t).storage {
            Storage::Arena { offset, bytes } => Some((offset, bytes)),
            Storage::Const(_) => None,
        }
    }

    /// Raw bytes of graph input `i`, to fill before `invoke`.
    pub fn input_bytes_mut(&mut self, i: usize) -> Result<&mut [u8], RunError> {
        let t = self.model.input_tensor(i).ok_or(RunError::NoSuchTensor)?;
        let (o, n) = self.arena_range(t).ok_or(RunError::NoSuchTensor)?;
        Ok(&mut self.arena[o..o + n])
    }

    /// Copy f32 data into graph input `i` (which must be an f32 tensor of that size).
    pub fn set_input_f32(&mut self, i: usize, data: &[f32]) -> Result<(), RunError> {
        let t = self.model.input_tensor(i).ok_or(RunError::NoSuchTensor)?;
        let info = self.model.tensor(t).info;
        if info.dtype != DType::F32 || info.numel() != data.len() {
            return Err(RunError::WrongInput {
                expected_elems: info.numel() as u32,
                got_elems: data.len() as u32,
            });
        }
        let dst = self.input_bytes_mut(i)?;
        for (d, s) in dst.chunks_exact_mut(4).zip(data) {
            d.copy_from_slice(&s.to_le_bytes());
        }
        Ok(())
    }

    /// Graph output `i`, valid after `invoke`.
    pub fn output(&self, i: usize) -> Result<TensorRef<'_>, RunError> {
        let t = self.model.output_tensor(i).ok_or(RunError::NoSuchTensor)?;
        let (o, n) = self.arena_range(t).ok_or(RunError::NoSuchTensor)?;
        Ok(TensorRef {
            info: self.model.tensor(t).info,
            data: &self.arena[o..o + n],
        })
    }

    /// Run every op in order.
    pub fn invoke(&mut self) -> Result<(), RunError> {
        for i in 0..self.model.n_ops() {
            self.invoke_op(i)?;
        }
        Ok(())
    }

    /// Run op `i` alone (for per-op profiling; ops must run in order).
    pub fn invoke_op(&mut self, i: usize) -> Result<(), RunError> {
        let err = |error| RunError::Exec {
            index: i as u16,
            error,
        };
        let descs = self.descs;
        #[cfg(feature = "alloc")]
        if let (Some(e), false) = (self.ops.get(i), descs.is_empty()) {
            return self
                .run_op(e, e.kind, e.kernel, e.params(), descs, false)
                .map_err(err);
        }
        // A device: the op decoded from its record, each time it runs (no second copy of
        // the loop in its flash).
        let op = self.model.op(i).ok_or(RunError::NoSuchTensor)?;
        let kernel = self.model.kernel_of(i).ok_or(err(ExecError::Shape))?;
        let params = op.param_words();
        if !descs.is_empty() {
            return self
                .run_op(&op, op.kind, kernel, &params, descs, false)
                .map_err(err);
        }
        // No tensor table: this op's input records, decoded onto the stack.
        let model = &self.model;
        let local: [TensorDesc<'m>; MAX_OP_INPUTS] =
            core::array::from_fn(|j| op.input(j).map_or(NO_TENSOR, |t| model.tensor(t)));
        self.run_op(&op, op.kind, kernel, &params, &local, true)
            .map_err(err)
    }

    /// Run op `e` (`kind` by `kernel` with `params`), reading input `j` (tensor `t`)'s
    /// record from `descs[j]` (`by_slot`: the op's own records) or `descs[t]` (every
    /// tensor's): one function for both keeps a device's flash at one copy.
    fn run_op(
        &mut self,
        e: &impl OpIo,
        kind: OpKind,
        kernel: KernelId,
        params: &Params,
        descs: &[TensorDesc<'m>],
        by_slot: bool,
    ) -> Result<(), ExecError> {
        #[cfg(feature = "alloc")]
        let table = self.descs;
        for k in 0..e.n_outputs() {
            // With a tensor table (hosts), the output's record by reference: a copy
            // assembled on the stack and read back at once stalled the loads that forward
            // it. A device decodes it (one path, for its flash).
            #[cfg(feature = "alloc")]
            let decoded;
            #[cfg(feature = "alloc")]
            let out_d = match table.get(e.output(k) as usize) {
                Some(d) => d,
                None => {
                    decoded = self.model.tensor(e.output(k));
                    &decoded
                }
            };
            #[cfg(not(feature = "alloc"))]
            let out_d = &self.desc(e.output(k));
            let Storage::Arena {
                offset: oo,
                bytes: ob,
            } = out_d.storage
            else {
                return Err(ExecError::Shape);
            };
            let (lo, rest) = self.arena.split_at_mut(oo);
            let (out_buf, hi) = rest.split_at_mut(ob);
            let (lo, hi): (&[u8], &[u8]) = (lo, hi);
            let mut call = OpCall::new(kind, kernel, params, k);
            for j in 0..e.n_inputs() {
                let Some(t) = e.input(j) else {
                    call.push_parts(None, &[])?;
                    continue;
                };
                let d = descs
                    .get(if by_slot { j } else { t as usize })
                    .unwrap_or(&NO_TENSOR);
                let data = match d.storage {
                    Storage::Const(c) => c,
                    Storage::Arena { offset, bytes } if offset + bytes <= oo => {
                        &lo[offset..offset + bytes]
                    }
                    Storage::Arena { offset, bytes } if offset >= oo + ob => {
                        &hi[offset - oo - ob..offset - oo - ob + bytes]
                    }
                    Storage::Arena { offset, bytes } if j == 0 && offset == oo && bytes == ob => {
                        call.in_place = true;
                        &[]
                    }
                    Storage::Arena { .. } => return Err(ExecError::Shape),
                };
                call.push_parts(Some(&d.info), data)?;
            }
            let out = TensorMut {
                info: out_d.info,
                data: out_buf,
            };
            self.backend.execute(&call, out)?;
        }
        Ok(())
    }
}

/// Tensor `t`'s description: `descs[t]` when the table has it, else decoded from `model`.
#[inline]
fn desc_of<'m>(descs: &[TensorDesc<'m>], model: &Model<'m>, t: u16) -> TensorDesc<'m> {
    match descs.get(t as usize) {
        Some(d) => *d,
        None => model.tensor(t),
    }
}

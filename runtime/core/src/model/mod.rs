//! `Model`: a parsed, fully checked view over `.cairn` bytes. Zero-copy: weights, params
//! and tables are read in place. Every check that the hot loop relies on happens here,
//! once: sizes, offsets, alignment, dtypes, quantization, shapes of every op, op order,
//! and that no two tensors alive at the same time share arena bytes.

use crate::backend::{Params, PARAM_WORDS};
use crate::error::{LoadError, OpProblem};
use crate::format::{self, hdr, opr, tns, u16_at, u32_at, ALIGN, NONE};
use crate::kernel::{KernelId, KernelSet};
use crate::layout::{Layout, Pairs6};
use crate::op::{
    has_kind, infer_output_in, Kinds, OpKind, ALL_KINDS, MAX_OP_INPUTS, MAX_OP_OUTPUTS,
};

#[cfg(test)]
mod tests;
mod types;
use crate::shape::{Shape, MAX_RANK};
use crate::{DType, Quant, TensorInfo};
pub use types::{kernel_id, w8_weights, weights_variant};

/// Hard limits that bound the work of checking a hostile file. Tensors may be twice the
/// ops: an int8 recurrent layer unrolled over its sequence adds per-step constants (each
/// step's lookup tables and scales) beside its ops; 32,767 ops hold two bidirectional
/// GRU layers over 500 steps. Indices and times are u16 (0xFFFF
/// means none). The plan check is a sweep (O(n log n)) with an allocator; devices without
/// one check every pair, quadratic in the arena tensors, which their small models keep
/// cheap.
pub const MAX_TENSORS: usize = 65534;
pub const MAX_OPS: usize = 32767;

/// Where a tensor's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage<'a> {
    Arena { offset: usize, bytes: usize },
    Const(&'a [u8]),
}

/// One tensor's record.
#[derive(Clone, Copy, Debug)]
pub struct TensorDesc<'a> {
    pub info: TensorInfo<'a>,
    pub storage: Storage<'a>,
    pub def_time: u16,
    pub last_time: u16,
}

/// A zero-sized f32 scalar: what [`Model::tensor`] gives for an index no model has, and
/// what fills the interpreter's unused record slots.
pub(crate) const NO_TENSOR: TensorDesc<'static> = TensorDesc {
    info: TensorInfo {
        dtype: DType::F32,
        shape: Shape::SCALAR,
        quant: Quant::None,
        layout: Layout::Plain,
    },
    storage: Storage::Const(&[]),
    def_time: 0,
    last_time: 0,
};

/// One op's record.
#[derive(Clone, Copy, Debug)]
pub struct OpView<'a> {
    pub kind: OpKind,
    io: &'a [u8],
    n_in: usize,
    n_out: usize,
    pub params: &'a [u8],
}

impl<'a> OpView<'a> {
    pub fn n_inputs(&self) -> usize {
        self.n_in
    }
    pub fn n_outputs(&self) -> usize {
        self.n_out
    }
    /// Tensor index of input `k`, `None` for an absent optional input (or `k` past the
    /// inputs).
    pub fn input(&self, k: usize) -> Option<u16> {
        // Read before the test (smaller code on Cortex-M); a `k` past the inputs reads an
        // output or nothing, and is masked.
        let v = self
            .io
            .get(2 * k..2 * k + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        (k < self.n_in && v != NONE).then_some(v)
    }
    /// Tensor index of output `k` (`k < n_outputs()`: a bug otherwise).
    pub fn output(&self, k: usize) -> u16 {
        debug_assert!(k < self.n_out, "output {k} of an op with {}", self.n_out);
        u16_at(self.io, 2 * (self.n_in + k))
    }
    pub fn param(&self, i: usize) -> i32 {
        format::i32_at(self.params, 4 * i)
    }
    pub fn n_params(&self) -> usize {
        self.params.len() / 4
    }
    /// Parameters copied into a fixed buffer (the longest op layout fits).
    pub fn param_words(&self) -> Params {
        let mut w = [0i32; PARAM_WORDS];
        let n = self.n_params().min(w.len());
        for (i, slot) in w.iter_mut().enumerate().take(n) {
            *slot = self.param(i);
        }
        Params::from_words(w, n)
    }
}

/// One op decoded for the interpreter's loop: kind, kernel, tensor indices and parameter
/// words, read from the model bytes once ([`Model::op_entry`]). A host keeps a table of
/// them beside its tensor table ([`crate::Interpreter::with_ops`]): decoding the record,
/// its index list and its parameters on every run was a quarter of a run of thousands of
/// small ops (an unrolled recurrent model).
#[derive(Clone, Copy, Debug)]
pub struct OpEntry {
    pub kind: OpKind,
    pub kernel: KernelId,
    n_in: u8,
    n_out: u8,
    /// Inputs (`NONE` for an absent optional one), then outputs.
    io: [u16; MAX_OP_INPUTS + MAX_OP_OUTPUTS],
    params: Params,
}

impl OpEntry {
    /// `op` (a record of a checked model) run by `kernel`.
    pub fn new(op: &OpView<'_>, kernel: KernelId) -> OpEntry {
        // Arity was checked at parse: at most MAX_OP_INPUTS inputs and MAX_OP_OUTPUTS
        // outputs, the outputs right after the inputs in the record's index list.
        let (n_in, n_out) = (op.n_inputs(), op.n_outputs());
        let io = core::array::from_fn(|k| {
            let at = if k < MAX_OP_INPUTS {
                k
            } else {
                n_in + k - MAX_OP_INPUTS
            };
            let live = if k < MAX_OP_INPUTS {
                k < n_in
            } else {
                at < n_in + n_out
            };
            match op.io.get(2 * at..2 * at + 2) {
                Some(b) if live => u16::from_le_bytes([b[0], b[1]]),
                _ => NONE,
            }
        });
        OpEntry {
            kind: op.kind,
            kernel,
            n_in: n_in as u8,
            n_out: n_out as u8,
            io,
            params: op.param_words(),
        }
    }
    pub fn n_inputs(&self) -> usize {
        self.n_in as usize
    }
    pub fn n_outputs(&self) -> usize {
        self.n_out as usize
    }
    /// Tensor index of input `k`, `None` for an absent optional input or `k` past them.
    #[inline]
    pub fn input(&self, k: usize) -> Option<u16> {
        let v = self.io.get(k).copied().unwrap_or(NONE);
        (k < self.n_inputs() && v != NONE).then_some(v)
    }
    /// Tensor index of output `k` (`k < n_outputs()`).
    #[inline]
    pub fn output(&self, k: usize) -> u16 {
        self.io.get(MAX_OP_INPUTS + k).copied().unwrap_or(NONE)
    }
    /// The parameter words (as [`OpView::param_words`]).
    #[inline]
    pub fn params(&self) -> &Params {
        &self.params
    }
}

/// An op's tensor indices, from its record ([`OpView`]) or decoded once ([`OpEntry`]).
pub trait OpIo {
    fn n_inputs(&self) -> usize;
    fn n_outputs(&self) -> usize;
    /// Tensor index of input `k`, `None` for an absent optional input or `k` past them.
    fn input(&self, k: usize) -> Option<u16>;
    /// Tensor index of output `k` (`k < n_outputs()`).
    fn output(&self, k: usize) -> u16;
}

impl OpIo for OpView<'_> {
    fn n_inputs(&self) -> usize {
        OpView::n_inputs(self)
    }
    fn n_outputs(&self) -> usize {
        OpView::n_outputs(self)
    }
    #[inline]
    fn input(&self, k: usize) -> Option<u16> {
        OpView::input(self, k)
    }
    #[inline]
    fn output(&self, k: usize) -> u16 {
        OpView::output(self, k)
    }
}

impl OpIo for OpEntry {
    fn n_inputs(&self) -> usize {
        OpEntry::n_inputs(self)
    }
    fn n_outputs(&self) -> usize {
        OpEntry::n_outputs(self)
    }
    #[inline]
    fn input(&self, k: usize) -> Option<u16> {
        OpEntry::input(self, k)
    }
    #[inline]
    fn output(&self, k: usize) -> u16 {
        OpEntry::output(self, k)
    }
}

/// A checked model.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    bytes: &'a [u8],
    n_tensors: usize,
    n_ops: usize,
    n_inputs: usize,
    n_outputs: usize,
    tensors: &'a [u8],
    ops: &'a [u8],
    index: &'a [u8],
    params: &'a [u8],
    blob: &'a [u8],
    arena_bytes: usize,
    arena_lower_bound: usize,
    kernels: KernelSet,
}

/// Items `start..start + count` of `unit` bytes each in `table`; `None` past the end.
/// `start` may be any value read from the file: nothing here can wrap on 32 bits.
fn items(table: &[u8], start: usize, unit: usize, count: usize) -> Option<&[u8]> {
    table.get(start.checked_mul(unit)?..)?.get(..count * unit)
}

fn section(b: &[u8], off: u32, len: usize, align: usize) -> Result<&[u8], LoadError> {
    let off = off as usize;
    if !off.is_multiple_of(align) || off < format::HEADER_BYTES {
        return Err(LoadError::Section);
    }
    let end = off.checked_add(len).ok_or(LoadError::Section)?;
    b.get(off..end).ok_or(LoadError::Section)
}

impl<'a> Model<'a> {
    /// Parse and check `.cairn` bytes. The bytes must start on a 16-byte boundary.
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>, LoadError> {
        Self::parse_kinds::<ALL_KINDS>(bytes)
    }

    /// [`Model::parse`] for a build that runs only the op kinds in `K` (see
    /// [`crate::op::Kinds`]): only their shape and type rules are linked, and a model with
    /// another kind is refused with `MissingKernel`, as `Interpreter::new` would refuse it.
    /// Firmware passes the kinds of its kernel families (cairn-kernels' `family::kinds`).
    #[inline(always)]
    pub fn parse_kinds<const K: Kinds>(bytes: &'a [u8]) -> Result<Model<'a>, LoadError> {
        let m = Self::parse_header(bytes)?;
        for i in 0..m.n_tensors {
            m.check_tensor(i)?;
        }
        m.check_io()?;
        let mut kernels = KernelSet::default();
        for i in 0..m.n_ops {
            let k = m.check_op::<K>(i)?;
            kernels.insert(k);
        }
        if kernels != m.kernels {
            return Err(LoadError::KernelSet);
        }
        m.check_lifetimes()?;
        m.check_plan()?;
        Ok(m)
    }

    fn parse_header(b: &'a [u8]) -> Result<Model<'a>, LoadError> {
        if b.len() < format::HEADER_BYTES {
            return Err(LoadError::Truncated);
        }
        if b[..8] != format::MAGIC {
            return Err(LoadError::BadMagic);
        }
        if b[hdr::VERSION] != format::VERSION {
            return Err(LoadError::UnsupportedVersion {
                found: b[hdr::VERSION],
                supported: format::VERSION,
            });
        }
        let stated = u32_at(b, hdr::FILE_BYTES);
        if stated as usize != b.len() {
            return Err(LoadError::LengthMismatch {
                stated,
                actual: b.len() as u32,
            });
        }
        let crc = u32_at(b, hdr::CRC);
        let actual = format::file_crc(b);
        if crc != actual {
            return Err(LoadError::Checksum {
                stated: crc,
                actual,
            });
        }
        if !(b.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(LoadError::Misaligned);
        }
        if u16_at(b, hdr::HEADER_LEN) as usize != format::HEADER_BYTES
            || b[hdr::FLAGS] != 0
            || b[hdr::RESERVED..format::HEADER_BYTES]
                .iter()
                .any(|&x| x != 0)
        {
            return Err(LoadError::BadHeader);
        }
        let n_tensors = u16_at(b, hdr::N_TENSORS) as usize;
        let n_ops = u16_at(b, hdr::N_OPS) as usize;
        let n_inputs = u16_at(b, hdr::N_INPUTS) as usize;
        let n_outputs = u16_at(b, hdr::N_OUTPUTS) as usize;
        if n_tensors > MAX_TENSORS || n_ops > MAX_OPS || n_outputs == 0 {
            return Err(LoadError::BadHeader);
        }
        let index_len = u32_at(b, hdr::INDEX_LEN) as usize;
        let params_len = u32_at(b, hdr::PARAMS_LEN) as usize;
        let mut kernels = KernelSet::default();
        for (i, w) in kernels.0.iter_mut().enumerate() {
            *w = u32_at(b, hdr::KERNELS + 4 * i);
        }
        let arena_bytes = u32_at(b, hdr::ARENA_BYTES) as usize;
        let arena_lower_bound = u32_at(b, hdr::ARENA_LOWER_BOUND) as usize;
        if !arena_bytes.is_multiple_of(ALIGN) || arena_lower_bound > arena_bytes {
            return Err(LoadError::BadHeader);
        }
        Ok(Model {
            bytes: b,
            n_tensors,
            n_ops,
            n_inputs,
            n_outputs,
            tensors: section(
                b,
                u32_at(b, hdr::TENSORS_OFF),
                n_tensors * format::TENSOR_BYTES,
                4,
            )?,
            ops: section(b, u32_at(b, hdr::OPS_OFF), n_ops * format::OP_BYTES, 4)?,
            index: section(
                b,
                u32_at(b, hdr::INDEX_OFF),
                index_len.checked_mul(2).ok_or(LoadError::Section)?,
                2,
            )?,
            params: section(
                b,
                u32_at(b, hdr::PARAMS_OFF),
                params_len.checked_mul(4).ok_or(LoadError::Section)?,
                4,
            )?,
            blob: section(
                b,
                u32_at(b, hdr::BLOB_OFF),
                u32_at(b, hdr::BLOB_LEN) as usize,
                ALIGN,
            )?,
            arena_bytes,
            arena_lower_bound,
            kernels,
        })
    }

    // ----- accessors -----

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn flash_bytes(&self) -> usize {
        self.bytes.len()
    }
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }
    /// The planner's lower bound: the largest total of tensors alive at one time.
    pub fn arena_lower_bound(&self) -> usize {
        self.arena_lower_bound
    }
    pub fn kernels(&self) -> KernelSet {
        self.kernels
    }
    pub fn n_tensors(&self) -> usize {
        self.n_tensors
    }
    pub fn n_ops(&self) -> usize {
        self.n_ops
    }
    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }
    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }
    pub fn blob_bytes(&self) -> usize {
        self.blob.len()
    }
    pub fn input_tensor(&self, i: usize) -> Option<u16> {
        (i < self.n_inputs).then(|| u16_at(self.index, 2 * i))
    }
    pub fn output_tensor(&self, i: usize) -> Option<u16> {
        (i < self.n_outputs).then(|| u16_at(self.index, 2 * (self.n_inputs + i)))
    }

    /// Tensor `i`, an index this model gave (an op's input or output, `input_tensor`,
    /// `output_tensor`, or below `n_tensors()`): every one was checked at parse time. Any
    /// other index is the caller's bug: a panic in debug builds (a zero-sized f32 scalar in
    /// release, where the check would cost every device flash). [`Model::get_tensor`] takes
    /// an index from elsewhere.
    pub fn tensor(&self, i: u16) -> TensorDesc<'a> {
        let t = self.decode_tensor(i as usize);
        debug_assert!(t.is_some(), "tensor {i} of {}", self.n_tensors);
        t.unwrap_or(TensorDesc {
            info: TensorInfo {
                dtype: DType::F32,
                shape: Shape::SCALAR,
                quant: Quant::None,
                layout: Layout::Plain,
            },
            storage: Storage::Const(&[]),
            def_time: 0,
            last_time: 0,
        })
    }

    /// Tensor `i`, or `None` past the last one.
    pub fn get_tensor(&self, i: u16) -> Option<TensorDesc<'a>> {
        self.decode_tensor(i as usize)
    }

    pub fn op(&self, i: usize) -> Option<OpView<'a>> {
        self.decode_op(i).ok()
    }

    /// Op `i` decoded for the interpreter (its record and kernel; `None` past the last).
    pub fn op_entry(&self, i: usize) -> Option<OpEntry> {
        Some(OpEntry::new(&self.op(i)?, self.kernel_of(i)?))
    }

    /// The kernel op `i` needs, as stored in the op record (checked at parse time).
    pub fn kernel_of(&self, i: usize) -> Option<KernelId> {
        let r = self
            .ops
            .get(i * format::OP_BYTES..(i + 1) * format::OP_BYTES)?;
        KernelId::from_index(u16_at(r, opr::KERNEL) as usize)
    }

    // ----- decoding -----

    fn blob_slice(&self, off: u32, len: usize, align: usize) -> Option<&'a [u8]> {
        let off = off as usize;
        if !off.is_multiple_of(align) {
            return None;
        }
        self.blob.get(off..off.checked_add(len)?)
    }

    fn decode_tensor(&self, i: usize) -> Option<TensorDesc<'a>> {
        let r = self
            .tensors
            .get(i * format::TENSOR_BYTES..(i + 1) * format::TENSOR_BYTES)?;
        let dtype = DType::from_code(r[tns::DTYPE])?;
        let mut dims = [0u32; MAX_RANK];
        for (k, d) in dims.iter_mut().enumerate() {
            *d = u32_at(r, tns::DIMS + 4 * k);
        }
        let rank = r[tns::RANK];
        let shape = Shape::from_raw(rank, dims)?;
        if dims[rank as usize..].iter().any(|&d| d != 0) {
            return None;
        }
        let numel = shape.numel()?;
        let layout = Layout::from_code(r[tns::LAYOUT])?;
        if r[tns::LAYOUT + 1] != 0 || r[tns::LAYOUT + 2] != 0 {
            return None;
        }
        let bytes = match layout {
            Layout::Plain => numel.checked_mul(dtype.size_bytes())?,
            // Pre-packed Conv weights: a constant int8 [oc, ic, kh, kw] stored as int16.
            Layout::Pairs6 => {
                if dtype != DType::I8 || r[tns::STORAGE] != format::STORAGE_CONST {
                    return None;
                }
                Pairs6::of(&shape)?.elements()?.checked_mul(2)?
            }
        };
        if u32_at(r, tns::BYTES) as usize != bytes {
            return None;
        }
        let offset = u32_at(r, tns::OFFSET);
        let storage = match r[tns::STORAGE] {
            format::STORAGE_ARENA => {
                let off = offset as usize;
                if !off.is_multiple_of(ALIGN) || off.checked_add(bytes)? > self.arena_bytes {
                    return None;
                }
                Storage::Arena { offset: off, bytes }
            }
            format::STORAGE_CONST => Storage::Const(self.blob_slice(offset, bytes, ALIGN)?),
            _ => return None,
        };
        let zero_point_ok = zero_point_check(dtype);
        let quant = match r[tns::QUANT] {
            format::QUANT_NONE => Quant::None,
            format::QUANT_TENSOR => {
                let scale = f32::from_bits(u32_at(r, tns::SCALE));
                let zero_point = format::i32_at(r, tns::ZERO);
                if !(scale_ok(scale) && zero_point_ok(zero_point)) {
                    return None;
                }
                Quant::PerTensor { scale, zero_point }
            }
            format::QUANT_AXIS => {
                let axis = r[tns::AXIS] as usize;
                let n = *shape.dims().get(axis)? as usize;
                // 4·n bytes of scales must fit in the blob (and 4·n must not wrap).
                if n > self.blob.len() / 4 {
                    return None;
                }
                let len = 4 * n;
                let s = self.blob_slice(u32_at(r, tns::SCALE), len, 4)?;
                let z = self.blob_slice(u32_at(r, tns::ZERO), len, 4)?;
                let scales: &[f32] = bytemuck::try_cast_slice(s).ok()?;
                let zero_points: &[i32] = bytemuck::try_cast_slice(z).ok()?;
                if !(scales.iter().all(|&s| scale_ok(s))
                    && zero_points.iter().all(|&z| zero_point_ok(z)))
                {
                    return None;
                }
                Quant::PerAxis {
                    axis,
                    scales,
                    zero_points,
                }
            }
            _ => return None,
        };
        if quant != Quant::None && dtype == DType::F32 {
            return None;
        }
        Some(TensorDesc {
            info: TensorInfo {
                dtype,
                shape,
                quant,
                layout,
            },
            storage,
            def_time: u16_at(r, tns::DEF_TIME),
            last_time: u16_at(r, tns::LAST_TIME),
        })
    }

    fn decode_op(&self, i: usize) -> Result<OpView<'a>, OpProblem> {
        let r = self
            .ops
            .get(i * format::OP_BYTES..(i + 1) * format::OP_BYTES)
            .ok_or(OpProblem::TensorIndex)?;
        let kind = OpKind::from_code(u16_at(r, opr::KIND)).ok_or(OpProblem::UnknownKind)?;
        let (n_in, n_out) = (r[opr::N_IN] as usize, r[opr::N_OUT] as usize);
        let (lo, hi, outs) = kind.arity();
        if n_in < lo
            || n_in > hi
            || n_out == 0
            || n_out > MAX_OP_OUTPUTS
            || (outs != 0 && n_out != outs)
        {
            return Err(OpProblem::Arity);
        }
        // Starts are untrusted u32s: `2 * start` and `4 * ps` could wrap on 32 bits.
        let start = u32_at(r, opr::IO_START) as usize;
        let io = items(self.index, start, 2, n_in + n_out).ok_or(OpProblem::TensorIndex)?;
        let ps = u32_at(r, opr::PARAMS_START) as usize;
        let pl = u16_at(r, opr::PARAMS_LEN) as usize;
        let params = items(self.params, ps, 4, pl).ok_or(OpProblem::ParamLen)?;
        Ok(OpView {
            kind,
            io,
            n_in,
            n_out,
            params,
        })
    }

    // ----- checks -----

    fn check_tensor(&self, i: usize) -> Result<(), LoadError> {
        let t = self
            .decode_tensor(i)
            .ok_or(LoadError::Tensor { index: i as u16 })?;
        let n = self.n_ops as u16;
        let ok = match t.storage {
            Storage::Arena { .. } => {
                t.def_time <= n && t.last_time >= t.def_time && t.last_time <= n + 1
            }
            Storage::Const(data) => match t.info.layout {
                Layout::Plain => true,
                Layout::Pairs6 => pairs6_values_ok(&t.info, data),
            },
        };
        if !ok {
            return Err(LoadError::Tensor { index: i as u16 });
        }
        Ok(())
    }

    fn check_io(&self) -> Result<(), LoadError> {
        if self.index.len() < 2 * (self.n_inputs + self.n_outputs) {
            return Err(LoadError::Section);
        }
        for k in 0..self.n_inputs + self.n_outputs {
            let t = u16_at(self.index, 2 * k) as usize;
            if t >= self.n_tensors {
                return Err(LoadError::BadHeader);
            }
            let d = self.tensor(t as u16);
            let is_input = k < self.n_inputs;
            let ok = matches!(d.storage, Storage::Arena { .. })
                && (!is_input || d.def_time == 0)
                && (is_input || d.last_time == self.n_ops as u16 + 1);
            if !ok {
                return Err(LoadError::Tensor { index: t as u16 });
            }
        }
        // Every arena tensor that claims to be a graph input is one.
        for t in 0..self.n_tensors {
            let d = self.tensor(t as u16);
            if matches!(d.storage, Storage::Arena { .. })
                && d.def_time == 0
                && !(0..self.n_inputs).any(|k| self.input_tensor(k) == Some(t as u16))
            {
                return Err(LoadError::Tensor { index: t as u16 });
            }
        }
        Ok(())
    }

    /// Check op `i` and return the kernel it needs.
    fn check_op<const K: Kinds>(&self, i: usize) -> Result<KernelId, LoadError> {
        let err = |kind: Option<OpKind>, problem| LoadError::Op {
            index: i as u16,
            kind,
            problem,
        };
        let op = self.decode_op(i).map_err(|p| err(None, p))?;
        let kind = op.kind;
        if !has_kind(K, kind) {
            return Err(self
                .kernel_of(i)
                .map_or(LoadError::KernelSet, LoadError::MissingKernel));
        }
        let e = |p| err(Some(kind), p);
        let time = (i + 1) as u16;
        let mut shapes: [Option<Shape>; MAX_OP_INPUTS] = [None; MAX_OP_INPUTS];
        for (k, slot) in shapes.iter_mut().enumerate().take(op.n_in) {
            let Some(t) = op.input(k) else { continue };
            if t as usize >= self.n_tensors {
                return Err(e(OpProblem::TensorIndex));
            }
            let d = self.tensor(t);
            if let Storage::Arena { .. } = d.storage {
                if d.def_time >= time || d.last_time < time {
                    return Err(e(OpProblem::Order));
                }
            }
            *slot = Some(d.info.shape);
        }
        if op.input(0).is_none() {
            return Err(e(OpProblem::Arity));
        }
        let out0 = op.output(0);
        if out0 as usize >= self.n_tensors {
            return Err(e(OpProblem::TensorIndex));
        }
        let out_rank = self.tensor(out0).info.shape.rank();
        if op.n_params() != kind.param_len(out_rank, op.n_out) {
            return Err(e(OpProblem::ParamLen));
        }
        let words = op.param_words();
        let p = words.as_slice();
        for k in 0..op.n_out {
            let t = op.output(k);
            if t as usize >= self.n_tensors || (0..k).any(|j| op.output(j) == t) {
                return Err(e(OpProblem::TensorIndex));
            }
            let d = self.tensor(t);
            if !matches!(d.storage, Storage::Arena { .. }) || d.def_time != time {
                return Err(e(OpProblem::Output));
            }
            let s = infer_output_in::<K>(kind, p, &shapes[..op.n_in], k, &d.info.shape)
                .map_err(|s| e(OpProblem::Shape(s)))?;
            if s != d.info.shape {
                return Err(e(OpProblem::Shape(crate::op::ShapeError::Mismatch)));
            }
            self.check_overlap(&op, t).map_err(e)?;
        }
        let k = self.check_types::<K>(&op).map_err(e)?;
        if self.kernel_of(i) != Some(k) {
            return Err(LoadError::KernelSet);
        }
        Ok(k)
    }

    /// An output may share bytes with an input only as the exact in-place case.
    fn check_overlap(&self, op: &OpView<'a>, out: u16) -> Result<(), OpProblem> {
        let Storage::Arena {
            offset: oo,
            bytes: ob,
        } = self.tensor(out).storage
        else {
            return Err(OpProblem::Output);
        };
        for k in 0..op.n_in {
            let Some(t) = op.input(k) else { continue };
            if let Storage::Arena { offset, bytes } = self.tensor(t).storage {
                let overlap = offset < oo + ob && oo < offset + bytes && ob > 0 && bytes > 0;
                if overlap && !(k == 0 && op.kind.can_run_in_place() && offset == oo && bytes == ob)
                {
                    return Err(OpProblem::InPlace);
                }
            }
        }
        Ok(())
    }

    fn is_const(&self, t: Option<u16>) -> bool {
        t.is_some_and(|t| matches!(self.tensor(t).storage, Storage::Const(_)))
    }

    /// Each arena tensor that is not a graph input is written by the op its `def_time`
    /// names, and read no later than its `last_time`.
    fn check_lifetimes(&self) -> Result<(), LoadError> {
        for t in 0..self.n_tensors as u16 {
            let d = self.tensor(t);
            if !matches!(d.storage, Storage::Arena { .. }) || d.def_time == 0 {
                continue;
            }
            let op = self
                .op(d.def_time as usize - 1)
                .ok_or(LoadError::Tensor { index: t })?;
            if !(0..op.n_outputs()).any(|k| op.output(k) == t) {
                return Err(LoadError::Tensor { index: t });
            }
        }
        Ok(())
    }

    /// No two arena tensors alive at the same time share bytes, except an in-place op's
    /// input and output at the op where the input dies. With an allocator, a sweep over
    /// time (O(n log n)); without one, every pair (devices hold small models).
    fn check_plan(&self) -> Result<(), LoadError> {
        #[cfg(feature = "alloc")]
        {
            self.check_plan_sweep()
        }
        #[cfg(not(feature = "alloc"))]
        {
            self.check_plan_pairs()
        }
    }

    /// The plan check over every pair of arena tensors.
    #[cfg_attr(feature = "alloc", allow(dead_code))]
    pub(crate) fn check_plan_pairs(&self) -> Result<(), LoadError> {
        for a in 0..self.n_tensors as u16 {
            let Some((oa, ba, da, la)) = self.arena_span(a) else {
                continue;
            };
            if ba == 0 {
                continue;
            }
            for b in a + 1..self.n_tensors as u16 {
                let Some((ob, bb, db, lb)) = self.arena_span(b) else {
                    continue;
                };
                let mem = oa < ob + bb && ob < oa + ba && bb > 0;
                let time = da <= lb && db <= la;
                if mem && time && !self.is_in_place_pair(a, b) && !self.is_in_place_pair(b, a) {
                    return Err(LoadError::PlanOverlap { a, b });
                }
            }
        }
        Ok(())
    }

    /// The plan check as a sweep over time: tensors enter in order of the time they are
    /// written, leave after their last read; the live ones are kept by offset, and since
    /// they never overlap (the first overlap is an error), a new tensor need only be
    /// compared with the live ones just below its end, back to the first that ends before
    /// it starts. The same verdict as `check_plan_pairs` (tested), with the pair it names
    /// possibly another of the overlapping pairs.
    #[cfg(feature = "alloc")]
    pub(crate) fn check_plan_sweep(&self) -> Result<(), LoadError> {
        use alloc::collections::{BTreeMap, BinaryHeap};
        use core::cmp::Reverse;
        let mut spans: alloc::vec::Vec<(u16, u16)> = (0..self.n_tensors as u16)
            .filter_map(|t| {
                let (_, bytes, def, _) = self.arena_span(t)?;
                (bytes > 0).then_some((def, t))
            })
            .collect();
        spans.sort_unstable();
        // Live tensors by (offset, index) → end; and by last read, to retire them.
        let mut live: BTreeMap<(usize, u16), usize> = BTreeMap::new();
        let mut retire: BinaryHeap<Reverse<(u16, usize, u16)>> = BinaryHeap::new();
        for (def, b) in spans {
            let Some((ob, bb, _, lb)) = self.arena_span(b) else {
                continue;
            };
            while let Some(&Reverse((last, off, t))) = retire.peek() {
                if last >= def {
                    break;
                }
                retire.pop();
                live.remove(&(off, t));
            }
            let end = ob + bb;
            for (&(_, a), &a_end) in live.range(..(end, 0)).rev() {
                if a_end <= ob {
                    break;
                }
                if !self.is_in_place_pair(a, b) && !self.is_in_place_pair(b, a) {
                    return Err(LoadError::PlanOverlap {
                        a: a.min(b),
                        b: a.max(b),
                    });
                }
            }
            live.insert((ob, b), end);
            retire.push(Reverse((lb, ob, b)));
        }
        Ok(())
    }

    /// (offset, bytes, def_time, last_time) of an arena tensor, read straight from its
    /// record (already checked by `check_tensor`): the O(n²) plan check stays cheap.
    fn arena_span(&self, t: u16) -> Option<(usize, usize, u16, u16)> {
        let r = self
            .tensors
            .get(t as usize * format::TENSOR_BYTES..(t as usize + 1) * format::TENSOR_BYTES)?;
        (r[tns::STORAGE] == format::STORAGE_ARENA).then(|| {
            (
                u32_at(r, tns::OFFSET) as usize,
                u32_at(r, tns::BYTES) as usize,
                u16_at(r, tns::DEF_TIME),
                u16_at(r, tns::LAST_TIME),
            )
        })
    }

    fn is_in_place_pair(&self, src: u16, dst: u16) -> bool {
        let (s, d) = (self.tensor(src), self.tensor(dst));
        if d.def_time == 0 || d.def_time != s.last_time || s.storage != d.storage {
            return false;
        }
        self.op(d.def_time as usize - 1).is_some_and(|op| {
            op.kind.can_run_in_place() && op.input(0) == Some(src) && op.output(0) == dst
        })
    }
}

/// The zero points of `dtype` the kernels' arithmetic holds exactly: the dtype's own range
/// (they compute `x - zero_point` in i32 and pad with `zero_point as i8`), and only 0 for
/// int32, which has none in ONNX (`x - zero_point` would overflow).
fn zero_point_check(dtype: DType) -> impl Fn(i32) -> bool {
    let (lo, span) = match dtype {
        DType::I8 => (-128, 255),
        DType::U8 => (0, 255),
        _ => (0, 0),
    };
    move |z: i32| z.wrapping_sub(lo) as u32 <= span
}

/// A finite scale above zero, tested on its bits (smaller code on devices than float tests).
fn scale_ok(s: f32) -> bool {
    s.to_bits().wrapping_sub(1) < 0x7F7F_FFFF
}

/// Every value of a pre-packed weight tensor is an int8 value widened to int16, and the
/// padding is zero: what the kernels' exact arithmetic assumes.
fn pairs6_values_ok(info: &TensorInfo<'_>, data: &[u8]) -> bool {
    let Some(g) = Pairs6::of(&info.shape) else {
        return false;
    };
    data.chunks_exact(2).enumerate().all(|(i, b)| {
        let v = i16::from_le_bytes([b[0], b[1]]);
        match g.position(i) {
            Some(_) => (-128..=127).contains(&v),
            None => v == 0,
        }
    })
}

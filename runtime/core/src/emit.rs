//! The writer side of `.cairn` (convert time, `alloc`): describe tensors and ops, and
//! [`ModelBuilder::finish`] plans the arena, lays out the sections, stamps the checksum
//! and — before returning — parses its own output with `Model::parse`, so a builder can
//! never hand out a file that a device would refuse.

use alloc::vec::Vec;

use crate::error::LoadError;
use crate::format::{self, hdr, opr, tns, ALIGN, NONE};
use crate::layout::{pack_pairs6, Layout};
use crate::model::{kernel_id, weights_variant, Model};
use crate::op::{conv, OpKind};
use crate::plan::{self, Request};
use crate::{DType, KernelSet, Quant, Shape, TensorInfo};

#[derive(Clone, Debug, PartialEq)]
pub enum QuantSpec {
    None,
    PerTensor {
        scale: f32,
        zero_point: i32,
    },
    PerAxis {
        axis: usize,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
    },
}

#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub dtype: DType,
    pub shape: Shape,
    pub quant: QuantSpec,
    /// Little-endian bytes of a constant; `None` for a tensor in the arena.
    pub data: Option<Vec<u8>>,
    /// Byte order of `data` (see [`Layout`]); `Plain` unless packed by
    /// [`ModelBuilder::pack_conv_weights`].
    pub layout: Layout,
}

#[derive(Clone, Debug)]
pub struct OpSpec {
    pub kind: OpKind,
    pub inputs: Vec<Option<u16>>,
    pub outputs: Vec<u16>,
    pub params: Vec<i32>,
}

#[derive(Clone, Debug, Default)]
pub struct ModelBuilder {
    pub tensors: Vec<TensorSpec>,
    pub ops: Vec<OpSpec>,
    pub inputs: Vec<u16>,
    pub outputs: Vec<u16>,
}

/// Why a builder could not produce a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    TooLarge,
    /// The result failed its own load check (a converter bug, named precisely).
    Invalid(LoadError),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BuildError {}

fn pad_to(v: &mut Vec<u8>, align: usize) {
    while !v.len().is_multiple_of(align) {
        v.push(0);
    }
}

fn put_u16(v: &mut [u8], off: usize, x: u16) {
    v[off..off + 2].copy_from_slice(&x.to_le_bytes());
}
fn put_u32(v: &mut [u8], off: usize, x: u32) {
    v[off..off + 4].copy_from_slice(&x.to_le_bytes());
}

impl ModelBuilder {
    pub fn add_tensor(&mut self, t: TensorSpec) -> u16 {
        self.tensors.push(t);
        (self.tensors.len() - 1) as u16
    }

    /// Pre-pack the weights of every one-group int8 Conv whose patch (`ic·kh·kw`) is at
    /// most `max_k` into [`Layout::Pairs6`], the order the x86_64 (AVX2) and aarch64
    /// (NEON) GEMM micro-kernels read. Those weights then take two bytes each in flash
    /// instead of one, and the ops need the `Conv.i8-packed` kernel, which the CPU
    /// backends have and a small firmware build may leave out. Weights shared with
    /// another op are left alone. Returns how many tensors were packed.
    pub fn pack_conv_weights(&mut self, max_k: usize) -> usize {
        let mut uses = alloc::vec![0usize; self.tensors.len()];
        for op in &self.ops {
            for t in op.inputs.iter().flatten() {
                uses[*t as usize] += 1;
            }
        }
        let mut packed = 0;
        for op in &self.ops {
            let (Some(Some(x)), Some(Some(w))) = (op.inputs.first(), op.inputs.get(1)) else {
                continue;
            };
            let group = op.params.get(conv::GROUP).copied().unwrap_or(0);
            let (x, w) = (*x as usize, *w as usize);
            let wt = &self.tensors[w];
            let ok = op.kind == OpKind::Conv
                && group == 1
                && self.tensors[x].dtype == DType::I8
                && wt.dtype == DType::I8
                && wt.layout == Layout::Plain
                && wt.shape.rank() == 4
                && uses[w] == 1;
            if !ok {
                continue;
            }
            let (oc, k) = (wt.shape.dim(0), wt.shape.prod(1, 4));
            if k == 0 || k > max_k {
                continue;
            }
            let Some(data) = &wt.data else { continue };
            let rows: Vec<i8> = data.iter().map(|&b| b as i8).collect();
            let Some(p) = pack_pairs6(&rows, oc, k) else {
                continue;
            };
            let t = &mut self.tensors[w];
            t.data = Some(p.iter().flat_map(|v| v.to_le_bytes()).collect());
            t.layout = Layout::Pairs6;
            packed += 1;
        }
        packed
    }

    /// Def/last times of every tensor (time 0 = graph input, op i at time i + 1).
    fn lifetimes(&self) -> (Vec<u16>, Vec<u16>) {
        let n_ops = self.ops.len() as u16;
        let mut def = alloc::vec![0u16; self.tensors.len()];
        let mut last = alloc::vec![0u16; self.tensors.len()];
        for (i, op) in self.ops.iter().enumerate() {
            let time = i as u16 + 1;
            for &t in &op.outputs {
                def[t as usize] = time;
                last[t as usize] = last[t as usize].max(time);
            }
            for t in op.inputs.iter().flatten() {
                last[*t as usize] = last[*t as usize].max(time);
            }
        }
        for &t in &self.outputs {
            last[t as usize] = n_ops + 1;
        }
        (def, last)
    }

    /// Plan, lay out and check. Returns the file bytes.
    pub fn finish(&self) -> Result<Vec<u8>, BuildError> {
        // The loader's bounds (a file past them would be refused as `BadHeader`).
        if self.tensors.len() > crate::model::MAX_TENSORS || self.ops.len() > crate::model::MAX_OPS
        {
            return Err(BuildError::TooLarge);
        }
        let (def, last) = self.lifetimes();
        let bytes_of = |t: &TensorSpec| match (&t.data, t.layout) {
            (Some(d), Layout::Pairs6) => d.len(),
            _ => t.shape.numel().unwrap_or(0) * t.dtype.size_bytes(),
        };

        // Arena plan over non-const tensors; in-place ops share their input's buffer when
        // the input dies at that op.
        let arena_ids: Vec<usize> = (0..self.tensors.len())
            .filter(|&i| self.tensors[i].data.is_none())
            .collect();
        let mut slot = alloc::vec![usize::MAX; self.tensors.len()];
        for (k, &i) in arena_ids.iter().enumerate() {
            slot[i] = k;
        }
        let mut reqs: Vec<Request> = arena_ids
            .iter()
            .map(|&i| Request {
                bytes: bytes_of(&self.tensors[i]),
                def_time: def[i],
                last_time: last[i],
                share_with: None,
            })
            .collect();
        for (oi, op) in self.ops.iter().enumerate() {
            let time = oi as u16 + 1;
            if !op.kind.can_run_in_place() {
                continue;
            }
            let (Some(Some(x)), Some(&y)) = (op.inputs.first(), op.outputs.first()) else {
                continue;
            };
            let (x, y) = (*x as usize, y as usize);
            if slot[x] != usize::MAX
                && last[x] == time
                && bytes_of(&self.tensors[x]) == bytes_of(&self.tensors[y])
            {
                reqs[slot[y]].share_with = Some(slot[x]);
            }
        }
        let plan = plan::plan(&reqs);

        // Blob: consts and per-axis tables.
        let mut blob: Vec<u8> = Vec::new();
        let mut const_off = alloc::vec![0u32; self.tensors.len()];
        let mut axis_off = alloc::vec![(0u32, 0u32); self.tensors.len()];
        for (i, t) in self.tensors.iter().enumerate() {
            if let Some(d) = &t.data {
                pad_to(&mut blob, ALIGN);
                const_off[i] = blob.len() as u32;
                blob.extend_from_slice(d);
            }
            if let QuantSpec::PerAxis {
                scales,
                zero_points,
                ..
            } = &t.quant
            {
                pad_to(&mut blob, ALIGN);
                let s = blob.len() as u32;
                scales
                    .iter()
                    .for_each(|x| blob.extend_from_slice(&x.to_le_bytes()));
                pad_to(&mut blob, ALIGN);
                let z = blob.len() as u32;
                zero_points
                    .iter()
                    .for_each(|x| blob.extend_from_slice(&x.to_le_bytes()));
                axis_off[i] = (s, z);
            }
        }
        pad_to(&mut blob, ALIGN);

        // Tensor table.
        let mut tensors = alloc::vec![0u8; self.tensors.len() * format::TENSOR_BYTES];
        for (i, t) in self.tensors.iter().enumerate() {
            let r = &mut tensors[i * format::TENSOR_BYTES..(i + 1) * format::TENSOR_BYTES];
            r[tns::DTYPE] = t.dtype as u8;
            r[tns::RANK] = t.shape.rank() as u8;
            for (k, &d) in t.shape.dims().iter().enumerate() {
                put_u32(r, tns::DIMS + 4 * k, d);
            }
            let (storage, offset) = match t.data {
                Some(_) => (format::STORAGE_CONST, const_off[i]),
                None => (format::STORAGE_ARENA, plan.offsets[slot[i]] as u32),
            };
            r[tns::STORAGE] = storage;
            r[tns::LAYOUT] = t.layout as u8;
            put_u32(r, tns::OFFSET, offset);
            put_u32(r, tns::BYTES, bytes_of(t) as u32);
            match &t.quant {
                QuantSpec::None => r[tns::QUANT] = format::QUANT_NONE,
                QuantSpec::PerTensor { scale, zero_point } => {
                    r[tns::QUANT] = format::QUANT_TENSOR;
                    put_u32(r, tns::SCALE, scale.to_bits());
                    put_u32(r, tns::ZERO, *zero_point as u32);
                }
                QuantSpec::PerAxis { axis, .. } => {
                    r[tns::QUANT] = format::QUANT_AXIS;
                    put_u32(r, tns::SCALE, axis_off[i].0);
                    put_u32(r, tns::ZERO, axis_off[i].1);
                    r[tns::AXIS] = *axis as u8;
                }
            }
            if t.data.is_none() {
                put_u16(r, tns::DEF_TIME, def[i]);
                put_u16(r, tns::LAST_TIME, last[i].max(def[i]));
            }
        }

        // Index, params, ops, kernel set.
        let mut index: Vec<u16> = Vec::new();
        index.extend_from_slice(&self.inputs);
        index.extend_from_slice(&self.outputs);
        let mut params: Vec<i32> = Vec::new();
        let mut ops = alloc::vec![0u8; self.ops.len() * format::OP_BYTES];
        let mut kernels = KernelSet::default();
        for (i, op) in self.ops.iter().enumerate() {
            let r = &mut ops[i * format::OP_BYTES..(i + 1) * format::OP_BYTES];
            put_u16(r, opr::KIND, op.kind as u16);
            r[opr::N_IN] = op.inputs.len() as u8;
            r[opr::N_OUT] = op.outputs.len() as u8;
            put_u32(r, opr::IO_START, index.len() as u32);
            index.extend(op.inputs.iter().map(|t| t.unwrap_or(NONE)));
            index.extend_from_slice(&op.outputs);
            put_u32(r, opr::PARAMS_START, params.len() as u32);
            put_u16(r, opr::PARAMS_LEN, op.params.len() as u16);
            params.extend_from_slice(&op.params);
            let x = op.inputs.first().copied().flatten().map(|t| self.info(t));
            let y = op.outputs.first().map(|&t| self.info(t));
            if let (Some(x), Some(y)) = (x, y) {
                let group = if op.kind == OpKind::Conv {
                    op.params.get(conv::GROUP).copied().unwrap_or(1)
                } else {
                    0
                };
                let w_layout = match op.inputs.get(1) {
                    Some(Some(w)) if op.kind == OpKind::Conv => self.tensors[*w as usize].layout,
                    _ => Layout::Plain,
                };
                let mut k = kernel_id(op.kind, &x, &y, group, w_layout);
                if op.kind == OpKind::FullyConnected {
                    let w = op.inputs.get(1).copied().flatten().map(|t| self.info(t));
                    k = weights_variant(k, w.as_ref());
                }
                kernels.insert(k);
                put_u16(r, opr::KERNEL, k.index() as u16);
            }
        }

        // Layout: header | tensors | ops | index | params | blob.
        let mut out = alloc::vec![0u8; format::HEADER_BYTES];
        let tensors_off = out.len();
        out.extend_from_slice(&tensors);
        let ops_off = out.len();
        out.extend_from_slice(&ops);
        let index_off = out.len();
        index
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        pad_to(&mut out, 4);
        let params_off = out.len();
        params
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        pad_to(&mut out, ALIGN);
        let blob_off = out.len();
        out.extend_from_slice(&blob);
        if out.len() > u32::MAX as usize || index.len() > u32::MAX as usize {
            return Err(BuildError::TooLarge);
        }

        out[..8].copy_from_slice(&format::MAGIC);
        out[hdr::VERSION] = format::VERSION;
        let total = out.len() as u32;
        let h = &mut out[..format::HEADER_BYTES];
        put_u16(h, hdr::HEADER_LEN, format::HEADER_BYTES as u16);
        put_u32(h, hdr::FILE_BYTES, total);
        put_u32(h, hdr::ARENA_BYTES, plan.arena_bytes as u32);
        put_u32(h, hdr::ARENA_LOWER_BOUND, plan.lower_bound as u32);
        for (k, w) in kernels.0.iter().enumerate() {
            h[hdr::KERNELS + 4 * k..hdr::KERNELS + 4 * k + 4].copy_from_slice(&w.to_le_bytes());
        }
        put_u16(h, hdr::N_TENSORS, self.tensors.len() as u16);
        put_u16(h, hdr::N_OPS, self.ops.len() as u16);
        put_u16(h, hdr::N_INPUTS, self.inputs.len() as u16);
        put_u16(h, hdr::N_OUTPUTS, self.outputs.len() as u16);
        put_u32(h, hdr::TENSORS_OFF, tensors_off as u32);
        put_u32(h, hdr::OPS_OFF, ops_off as u32);
        put_u32(h, hdr::INDEX_OFF, index_off as u32);
        put_u32(h, hdr::INDEX_LEN, index.len() as u32);
        put_u32(h, hdr::PARAMS_OFF, params_off as u32);
        put_u32(h, hdr::PARAMS_LEN, params.len() as u32);
        put_u32(h, hdr::BLOB_OFF, blob_off as u32);
        put_u32(h, hdr::BLOB_LEN, blob.len() as u32);
        let crc = format::file_crc(&out);
        put_u32(&mut out, hdr::CRC, crc);

        let aligned = AlignedBytes::from_slice(&out);
        Model::parse(aligned.as_slice()).map_err(BuildError::Invalid)?;
        Ok(out)
    }

    fn info(&self, t: u16) -> TensorInfo<'static> {
        let s = &self.tensors[t as usize];
        let quant = match s.quant {
            QuantSpec::PerTensor { scale, zero_point } => Quant::PerTensor { scale, zero_point },
            QuantSpec::None => Quant::None,
            // The kernel id only needs "quantized or not".
            QuantSpec::PerAxis { axis, .. } => Quant::PerAxis {
                axis,
                scales: &[],
                zero_points: &[],
            },
        };
        TensorInfo {
            dtype: s.dtype,
            shape: s.shape,
            quant,
            layout: s.layout,
        }
    }
}

/// Owned bytes that start on a 16-byte boundary (for `Model::parse` on the host).
#[derive(Clone, Debug, Default)]
pub struct AlignedBytes {
    words: Vec<u128>,
    len: usize,
}

impl AlignedBytes {
    pub fn from_slice(b: &[u8]) -> AlignedBytes {
        let mut words = alloc::vec![0u128; b.len().div_ceil(16)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..b.len()].copy_from_slice(b);
        AlignedBytes {
            words,
            len: b.len(),
        }
    }
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            words: alloc::vec![0u128; len.div_ceil(16)],
            len,
        }
    }
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice::<u128, u8>(&self.words)[..self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.words)[..self.len]
    }
}

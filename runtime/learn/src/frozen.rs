//! The backbone layer a LoRA adapter sits on: an int8 `FullyConnected` of a `.cairn` model,
//! read in place from the model bytes (flash). Its forward pass is the model's own integer
//! arithmetic — (q_x − zp_x) · w accumulated in i32 with the int32 bias — stopped before the
//! requantization of the output so the adapter's delta can be added in real units:
//! `z_j = acc_scale_j · acc_j` with `acc_scale_j = s_x · s_w,j` (the stored requantization
//! multiplier times the output scale).

use cairn_core::model::{Model, Storage};
use cairn_core::op::OpKind;
use cairn_core::{DType, Quant};

use crate::LearnError;

/// A frozen int8 fully connected layer, borrowed from the model.
#[derive(Clone, Copy, Debug)]
pub struct FrozenFc<'a> {
    /// Outputs, inputs.
    pub n: usize,
    pub k: usize,
    /// int8 weights, row j = output j (`n × k`).
    pub w: &'a [i8],
    bias: Option<&'a [u8]>,
    mult: &'a [u8],
    out_scale: f32,
    pub x_scale: f32,
    pub x_zp: i32,
    /// The model fused a ReLU into this layer.
    pub relu: bool,
}

fn le_f32(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}
fn le_i32(b: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

impl<'a> FrozenFc<'a> {
    /// The int8 FullyConnected at op index `op` of `model`, with constant weights, bias and
    /// multipliers and a per-tensor quantized input.
    pub fn from_model(model: &Model<'a>, op: usize) -> Result<FrozenFc<'a>, LearnError> {
        let v = model.op(op).ok_or(LearnError::NotAnInt8Fc)?;
        if v.kind != OpKind::FullyConnected {
            return Err(LearnError::NotAnInt8Fc);
        }
        let t = |k: usize| v.input(k).map(|i| model.tensor(i));
        let (x, w, mult) = match (t(0), t(1), t(3)) {
            (Some(x), Some(w), Some(m)) => (x, w, m),
            _ => return Err(LearnError::NotAnInt8Fc),
        };
        let y = model.tensor(v.output(0));
        let konst = |s: Storage<'a>| match s {
            Storage::Const(b) => Some(b),
            Storage::Arena { .. } => None,
        };
        let (
            Quant::PerTensor {
                scale: sx,
                zero_point: zx,
            },
            Quant::PerTensor {
                scale: sy,
                zero_point: zy,
            },
        ) = (x.info.quant, y.info.quant)
        else {
            return Err(LearnError::NotAnInt8Fc);
        };
        if x.info.dtype != DType::I8 || w.info.dtype != DType::I8 || w.info.shape.rank() != 2 {
            return Err(LearnError::NotAnInt8Fc);
        }
        let (n, k) = (w.info.shape.dim(0), w.info.shape.dim(1));
        let wb = konst(w.storage).ok_or(LearnError::NotAnInt8Fc)?;
        let mb = konst(mult.storage).ok_or(LearnError::NotAnInt8Fc)?;
        let bias = match t(2) {
            Some(b) => Some(konst(b.storage).ok_or(LearnError::NotAnInt8Fc)?),
            None => None,
        };
        if wb.len() != n * k || mb.len() != 4 * n || bias.is_some_and(|b| b.len() != 4 * n) {
            return Err(LearnError::NotAnInt8Fc);
        }
        Ok(FrozenFc {
            n,
            k,
            w: bytemuck::cast_slice(wb),
            bias,
            mult: mb,
            out_scale: sy,
            x_scale: sx,
            x_zp: zx,
            relu: v.param(0) >= zy,
        })
    }

    /// A layer from its parts (little-endian `bias` i32 and `mult` f32 bytes, `n` each),
    /// e.g. one folded by [`crate::Learner::fold`].
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        n: usize,
        k: usize,
        w: &'a [i8],
        bias: Option<&'a [u8]>,
        mult: &'a [u8],
        out_scale: f32,
        x_scale: f32,
        x_zp: i32,
        relu: bool,
    ) -> Result<FrozenFc<'a>, LearnError> {
        let ok = w.len() == n * k
            && mult.len() == 4 * n
            && bias.is_none_or(|b| b.len() == 4 * n)
            && out_scale.is_finite()
            && out_scale > 0.0
            && x_scale.is_finite()
            && x_scale > 0.0
            && (-128..=127).contains(&x_zp);
        if !ok {
            return Err(LearnError::NotAnInt8Fc);
        }
        Ok(FrozenFc {
            n,
            k,
            w,
            bias,
            mult,
            out_scale,
            x_scale,
            x_zp,
            relu,
        })
    }

    /// Real value of one accumulator unit for output `j` (s_x · s_w,j).
    pub fn acc_scale(&self, j: usize) -> f32 {
        le_f32(self.mult, j) * self.out_scale
    }

    /// Pre-activation outputs `z` (real units) for real-valued input `x`, computed in
    /// integers after quantizing `x` to the layer's input parameters. `q` is scratch (k).
    pub fn forward(&self, x: &[f32], q: &mut [i8], z: &mut [f32]) {
        for (qi, &xi) in q.iter_mut().zip(x) {
            let v = libm::rintf(xi / self.x_scale) as i32 + self.x_zp;
            *qi = v.clamp(-128, 127) as i8;
        }
        for (j, zj) in z.iter_mut().enumerate().take(self.n) {
            let row = &self.w[j * self.k..(j + 1) * self.k];
            let mut acc = self.bias.map_or(0, |b| le_i32(b, j));
            for (&qi, &wi) in q.iter().zip(row) {
                acc = acc.wrapping_add((qi as i32 - self.x_zp) * wi as i32);
            }
            *zj = acc as f32 * self.acc_scale(j);
        }
    }

    /// Real-valued weight (for folding an adapter back into int8).
    pub fn weight(&self, j: usize, i: usize) -> f32 {
        self.w[j * self.k + i] as f32 * self.acc_scale(j) / self.x_scale
    }
    /// Real-valued bias.
    pub fn bias(&self, j: usize) -> f32 {
        self.bias
            .map_or(0.0, |b| le_i32(b, j) as f32 * self.acc_scale(j))
    }
}

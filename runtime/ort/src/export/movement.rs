//! Data-movement ops of the exporter: Slice, Split, Pad, Gather and nearest Resize move
//! values without arithmetic, so ONNX Runtime's results equal cairn's bit for bit; they
//! are exported on their stored dtype (int8, f32 or i32) when the output keeps the input's
//! quantization. Bilinear Resize of int8 runs in float between DequantizeLinear and
//! QuantizeLinear (within 1 LSB); f32 bilinear Resize stays on the CPU.

use cairn_core::model::Storage;
use cairn_core::{DType, Quant};

use super::{elem, i64s, Attrs, Builder};
use crate::proto::{Attr, ElemType};

/// ONNX Slice `ends` for a slice of `n` elements from `start`, `step` apart: one step past
/// the last element, or (stepping backwards past index 0) `i64::MIN`, which ONNX clamps to
/// "before the first" (a plain −1 would mean the last element).
fn slice_end(start: i64, step: i64, n: i64) -> i64 {
    let end = start + n * step;
    if step < 0 && end < 0 {
        i64::MIN
    } else {
        end
    }
}

impl Builder<'_, '_> {
    /// An int64 1-D initializer.
    fn ints(&mut self, what: &str, v: &[i64]) -> String {
        self.init(what, ElemType::Int64, vec![v.len() as i64], i64s(v))
    }

    /// Slice: params `start[r]`, `step[r]`, the lengths from the declared output shape.
    pub(super) fn slice(&mut self, i: usize, out: String) -> Option<()> {
        let (op, x_t, x, y) = self.first_io(i)?;
        let r = x.shape.rank();
        if y.quant != x.quant || y.shape.rank() != r {
            return None;
        }
        let (mut starts, mut ends, mut steps) = (vec![], vec![], vec![]);
        for d in 0..r {
            let (start, step) = (i64::from(op.param(d)), i64::from(op.param(r + d)));
            starts.push(start);
            ends.push(slice_end(start, step, y.shape.dim(d) as i64));
            steps.push(step);
        }
        let axes: Vec<i64> = (0..r as i64).collect();
        let xv = self.value(x_t)?;
        let ins = vec![
            xv,
            self.ints("starts", &starts),
            self.ints("ends", &ends),
            self.ints("axes", &axes),
            self.ints("steps", &steps),
        ];
        self.node_to("Slice", ins, out, vec![]);
        Some(())
    }

    /// Split: param 0 the axis, params 1.. each output's offset along it. Outputs that tile
    /// the axis in order are one ONNX Split; any other layout is one Slice per output.
    pub(super) fn split(&mut self, i: usize) -> Option<()> {
        let m = self.model;
        let op = m.op(i)?;
        let x_t = op.input(0)?;
        let x = m.tensor(x_t).info;
        let axis = usize::try_from(op.param(0)).ok()?;
        let mut sizes = Vec::new();
        let mut offsets = Vec::new();
        for k in 0..op.n_outputs() {
            let t = op.output(k);
            let d = m.tensor(t);
            if !matches!(d.storage, Storage::Arena { .. }) || d.info.quant != x.quant {
                return None;
            }
            sizes.push(d.info.shape.dim(axis) as i64);
            offsets.push(i64::from(op.param(1 + k)));
        }
        let xv = self.value(x_t)?;
        let mut at = 0;
        let tiles = offsets.iter().zip(&sizes).all(|(&o, &s)| {
            let ok = o == at;
            at += s;
            ok
        }) && at == x.shape.dim(axis) as i64;
        if tiles {
            let split = self.ints("split", &sizes);
            let outs = (0..op.n_outputs())
                .map(|k| super::tensor_name(op.output(k)))
                .collect();
            self.g.nodes.push(crate::proto::Node {
                op_type: "Split",
                inputs: vec![xv, split],
                outputs: outs,
                attrs: vec![("axis", Attr::Int(axis as i64))],
            });
            return Some(());
        }
        for (k, (&o, &s)) in offsets.iter().zip(&sizes).enumerate() {
            let ins = vec![
                xv.clone(),
                self.ints("starts", &[o]),
                self.ints("ends", &[o + s]),
                self.ints("axes", &[axis as i64]),
            ];
            self.node_to("Slice", ins, super::tensor_name(op.output(k)), vec![]);
        }
        Some(())
    }

    /// Pad: param 0 the mode (constant, reflect, edge), param 1 the constant (f32 bits, the
    /// int8 value or the i32), params 2.. the pads before each axis; the pads after follow
    /// from the shapes.
    pub(super) fn pad(&mut self, i: usize, out: String) -> Option<()> {
        let (op, x_t, x, y) = self.first_io(i)?;
        let r = x.shape.rank();
        if y.quant != x.quant || y.shape.rank() != r || y.dtype != x.dtype {
            return None;
        }
        let mode = match op.param(0) {
            0 => "constant",
            1 => "reflect",
            2 => "edge",
            _ => return None,
        };
        let mut pads = vec![0i64; 2 * r];
        for d in 0..r {
            let before = i64::from(op.param(2 + d));
            pads[d] = before;
            pads[r + d] = y.shape.dim(d) as i64 - x.shape.dim(d) as i64 - before;
        }
        let xv = self.value(x_t)?;
        let mut ins = vec![xv, self.ints("pads", &pads)];
        if mode == "constant" {
            let v = op.param(1);
            let raw = match y.dtype {
                DType::F32 | DType::I32 => v.to_le_bytes().to_vec(),
                DType::I8 | DType::U8 => vec![v as u8],
            };
            ins.push(self.init("pad_value", elem(y.dtype), vec![], raw));
        }
        self.node_to("Pad", ins, out, vec![("mode", Attr::Str(mode))]);
        Some(())
    }

    /// Gather (mode 0, ONNX Gather) or GatherElements (mode 1) along param 0 with i32
    /// indices; an index out of range fails the ONNX Runtime run (and the segment reruns on
    /// the CPU, which reports it).
    pub(super) fn gather(&mut self, i: usize, out: String) -> Option<()> {
        let m = self.model;
        let op = m.op(i)?;
        let (x_t, idx_t) = (op.input(0)?, op.input(1)?);
        let (x, y) = (m.tensor(x_t).info, m.tensor(op.output(0)).info);
        if y.quant != x.quant || m.tensor(idx_t).info.dtype != DType::I32 {
            return None;
        }
        let kind = match op.param(1) {
            0 => "Gather",
            1 => "GatherElements",
            _ => return None,
        };
        let xv = self.value(x_t)?;
        let iv = self.value(idx_t)?;
        let axis = i64::from(op.param(0));
        self.node_to(kind, vec![xv, iv], out, vec![("axis", Attr::Int(axis))]);
        Some(())
    }

    /// Resize of H and W with the stored scales: nearest on the stored values, int8
    /// bilinear through float. Exported only when ONNX Runtime's output size from those scales,
    /// `floor(len · scale)`, is the declared one.
    pub(super) fn resize(&mut self, i: usize, out: String) -> Option<()> {
        let (op, x_t, x, y) = self.first_io(i)?;
        let (_, _, h, w) = x.shape.nchw()?;
        let (_, _, oh, ow) = y.shape.nchw()?;
        let (sh, sw) = (
            f32::from_bits(op.param(3) as u32),
            f32::from_bits(op.param(4) as u32),
        );
        let size = |len: usize, s: f32| (len as f32 * s).floor();
        if size(h, sh) != oh as f32 || size(w, sw) != ow as f32 {
            return None;
        }
        let coord = match op.param(1) {
            0 => "half_pixel",
            1 => "asymmetric",
            2 => "align_corners",
            3 => "pytorch_half_pixel",
            _ => return None,
        };
        let nearest = match op.param(2) {
            0 => "round_prefer_floor",
            1 => "round_prefer_ceil",
            2 => "floor",
            3 => "ceil",
            _ => return None,
        };
        let mut attrs: Attrs = vec![("coordinate_transformation_mode", Attr::Str(coord))];
        let scales = self.init(
            "scales",
            ElemType::Float,
            vec![4],
            super::f32s(&[1.0, 1.0, sh, sw]),
        );
        let xv = self.value(x_t)?;
        match op.param(0) {
            0 if y.quant == x.quant => {
                attrs.push(("mode", Attr::Str("nearest")));
                attrs.push(("nearest_mode", Attr::Str(nearest)));
                self.node_to("Resize", vec![xv, String::new(), scales], out, attrs);
            }
            1 if x.dtype == DType::I8 && matches!(x.quant, Quant::PerTensor { .. }) => {
                attrs.push(("mode", Attr::Str("linear")));
                let xf = self.dq(xv, &x)?;
                let r = self.node("Resize", vec![xf, String::new(), scales], attrs);
                self.q_out(r, &y, out, -128, 127)?;
            }
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::slice_end;

    #[test]
    fn slice_ends_never_wrap_to_the_last_element() {
        assert_eq!(slice_end(2, 1, 3), 5);
        assert_eq!(slice_end(4, -1, 5), i64::MIN);
        assert_eq!(slice_end(4, -2, 2), 0);
    }
}

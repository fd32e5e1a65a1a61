//! CenterCropPad: a centred crop (Slice) and a centred zero pad (Pad) to a constant
//! shape, the odd unit going to the end as in the ONNX reference.

use anyhow::{anyhow, bail, Result};
use cairn_core::OpKind;

use crate::lower::{Lower, Val};
use crate::onnx::{Attrs, NodeProto};

pub(crate) fn lower_crop_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    if n.op_type != "CenterCropPad" {
        return Ok(false);
    }
    let x = l.in_t(n, 0)?;
    let shape = l.shape(x);
    let rank = shape.len();
    let target = l
        .ints_in(n, 1)?
        .ok_or_else(|| anyhow!("CenterCropPad without a shape"))?;
    let axes: Vec<usize> = match Attrs(n).ints("axes") {
        Some(ax) => ax
            .iter()
            .map(|&a| {
                let a = if a < 0 { a + rank as i64 } else { a };
                if (0..rank as i64).contains(&a) {
                    Ok(a as usize)
                } else {
                    bail!("CenterCropPad axis {a} out of range for rank {rank}")
                }
            })
            .collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    if target.len() != axes.len() {
        bail!(
            "CenterCropPad: {} sizes for {} axes",
            target.len(),
            axes.len()
        );
    }
    let mut crop_start = vec![0usize; rank];
    let mut cropped = shape.clone();
    let mut pad_begin = vec![0usize; rank];
    let mut out = shape.clone();
    for (&axis, &want) in axes.iter().zip(&target) {
        let want = usize::try_from(want)
            .ok()
            .filter(|&w| w > 0)
            .ok_or_else(|| anyhow!("CenterCropPad size {want} is not positive"))?;
        let dim = shape[axis];
        if want < dim {
            crop_start[axis] = (dim - want) / 2;
            cropped[axis] = want;
        } else if want > dim {
            pad_begin[axis] = (want - dim) / 2;
        }
        out[axis] = want;
    }
    let mut y = x;
    if cropped != shape {
        let mut params: Vec<i32> = crop_start.iter().map(|&s| s as i32).collect();
        params.extend(std::iter::repeat_n(1, rank));
        y = l.op(OpKind::Slice, vec![Some(y)], params, &cropped)?;
    }
    if out != cropped {
        let mut params = vec![0, 0f32.to_bits() as i32];
        params.extend(pad_begin.iter().map(|&b| b as i32));
        y = l.op(OpKind::Pad, vec![Some(y)], params, &out)?;
    }
    l.out(n, 0, Val::T(y));
    Ok(true)
}

//! Col2Im (2-d): the adjoint of im2col, a scatter-add of each column entry to its image
//! position. That is a grouped ConvTranspose with a constant one-hot kernel: input channel
//! (c, i, j) of group c puts its value at tap (i, j), with Col2Im's strides, dilations and
//! pads.

use anyhow::{anyhow, bail, Result};
use cairn_core::OpKind;

use crate::lower::{Lower, Val, INF_BITS};
use crate::onnx::{Attrs, NodeProto};

pub(crate) fn lower_col2im_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    if n.op_type != "Col2Im" {
        return Ok(false);
    }
    let a = Attrs(n);
    let x = l.in_t(n, 0)?;
    let xs = l.shape(x);
    let dims = |k: usize, what: &str| -> Result<Vec<usize>> {
        let v = l
            .ints_in(n, k)?
            .ok_or_else(|| anyhow!("Col2Im without {what}"))?;
        if v.len() != 2 || v.iter().any(|&d| d <= 0) {
            bail!("Col2Im {what} {v:?}: only 2-d images are supported");
        }
        Ok(v.iter().map(|&d| d as usize).collect())
    };
    let image = dims(1, "image_shape")?;
    let block = dims(2, "block_shape")?;
    let attr = |name: &str, fill: usize, len: usize| -> Result<Vec<usize>> {
        match a.ints(name) {
            None => Ok(vec![fill; len]),
            Some(v) if v.len() == len && v.iter().all(|&d| d >= 0) => {
                Ok(v.iter().map(|&d| d as usize).collect())
            }
            Some(v) => bail!("Col2Im {name} {v:?}: expected {len} values"),
        }
    };
    let strides = attr("strides", 1, 2)?;
    let dilations = attr("dilations", 1, 2)?;
    let pads = attr("pads", 0, 4)?;
    if strides.contains(&0) || dilations.contains(&0) {
        bail!("Col2Im: zero stride or dilation");
    }
    let taps = block[0] * block[1];
    if xs.len() != 3 || !xs[1].is_multiple_of(taps) {
        bail!("Col2Im input {xs:?}: expected [N, C·{taps}, L]");
    }
    let channels = xs[1] / taps;
    // Blocks along each axis, and the output padding ConvTranspose needs to reach the image.
    let mut blocks = [0usize; 2];
    let mut out_pad = [0usize; 2];
    for i in 0..2 {
        let extent = (block[i] - 1) * dilations[i] + 1;
        let span = (image[i] + pads[i] + pads[i + 2])
            .checked_sub(extent)
            .ok_or_else(|| anyhow!("Col2Im block larger than the padded image"))?;
        blocks[i] = span / strides[i] + 1;
        out_pad[i] = span % strides[i];
    }
    if blocks[0] * blocks[1] != xs[2] {
        bail!(
            "Col2Im: {} columns, the image holds {}×{} blocks",
            xs[2],
            blocks[0],
            blocks[1]
        );
    }
    let x4 = l.reshape(x, &[xs[0], xs[1], blocks[0], blocks[1]])?;
    let mut kernel = vec![0f32; xs[1] * taps];
    for ch in 0..xs[1] {
        kernel[ch * taps + ch % taps] = 1.0;
    }
    let w = l.g.add_f32(
        format!("{}:col2im_kernel", l.node_name),
        vec![xs[1], 1, block[0], block[1]],
        &kernel,
    );
    let params = vec![
        strides[0] as i32,
        strides[1] as i32,
        pads[0] as i32,
        pads[1] as i32,
        pads[2] as i32,
        pads[3] as i32,
        dilations[0] as i32,
        dilations[1] as i32,
        channels as i32,
        out_pad[0] as i32,
        out_pad[1] as i32,
        INF_BITS.0,
        INF_BITS.1,
    ];
    let y = l.op(
        OpKind::ConvTranspose,
        vec![Some(x4), Some(w), None],
        params,
        &[],
    )?;
    l.out(n, 0, Val::T(y));
    Ok(true)
}

//! Pools the `AveragePool`/`MaxPool` kernels do not cover, as a window sum (a depthwise
//! Conv with a constant all-ones kernel) times a constant per-position factor:
//! `AveragePool` with dilations, and `LpPool` (`(Σ |x|ᵖ)^(1/p)` over the window); and
//! 3-d pools (Average, Lp, Max), which are separable: a 2-d pool over (H, W) for every
//! depth, then a pool of kernel (kD, 1) over (D, H·W).
//!
//! The output size, the extra end padding of `ceil_mode` and the number of taps each
//! window counts follow the ONNX reference (`onnx/reference/ops/op_pool_common.py`); the
//! factor map holds 1/count (AveragePool) or kernel size/count (LpPool), computed here.

use anyhow::{anyhow, bail, Result};
use cairn_core::op::UnaryFn;
use cairn_core::OpKind;

use crate::lower::{Lower, Val, INF_BITS};
use crate::onnx::{Attrs, NodeProto};

pub(crate) fn lower_pool_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    match n.op_type.as_str() {
        "LpPool" => lp_pool(l, n)?,
        "AveragePool" if dilated(n) || rank_of(l, n)? == 5 => average_pool(l, n)?,
        "MaxPool" if rank_of(l, n)? == 5 => max_pool_3d(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn rank_of(l: &mut Lower, n: &NodeProto) -> Result<usize> {
    let x = l.in_t(n, 0)?;
    Ok(l.shape(x).len())
}

/// Whether an AveragePool has a dilation other than 1 (the kernel has none).
fn dilated(n: &NodeProto) -> bool {
    Attrs(n)
        .ints("dilations")
        .is_some_and(|d| d.iter().any(|&v| v != 1))
}

/// Where the windows of a pool lie along one spatial axis.
#[derive(Clone, Copy, Debug)]
struct AxisWindows {
    kernel: usize,
    stride: usize,
    dilation: usize,
    /// The padding the pool runs with (the given pads plus ceil_mode's extra).
    pad_begin: usize,
    pad_end: usize,
    /// Taps at or past this padded coordinate are left out (input + the given pads).
    limit: usize,
    input: usize,
    out: usize,
}

impl AxisWindows {
    /// An axis the pool leaves alone (kernel 1, no padding).
    fn neutral(len: usize) -> AxisWindows {
        AxisWindows {
            kernel: 1,
            stride: 1,
            dilation: 1,
            pad_begin: 0,
            pad_end: 0,
            limit: len,
            input: len,
            out: len,
        }
    }

    /// (taps inside the limit, taps on the input) of window `o`.
    fn taps(&self, o: usize) -> (usize, usize) {
        let (mut inside, mut real) = (0, 0);
        for j in 0..self.kernel {
            let pixel = o * self.stride + j * self.dilation;
            if pixel >= self.limit {
                continue;
            }
            inside += 1;
            if pixel >= self.pad_begin && pixel - self.pad_begin < self.input {
                real += 1;
            }
        }
        (inside, real)
    }
}

/// The window geometry of pool node `n` over the spatial axes of an input of spatial
/// size `input`, as the ONNX reference computes it.
fn windows_of(n: &NodeProto, input: &[usize]) -> Result<Vec<AxisWindows>> {
    let a = Attrs(n);
    let dims = input.len();
    let attr = |name: &str, per_axis: usize| -> Result<Option<Vec<usize>>> {
        let Some(v) = a.ints(name) else {
            return Ok(None);
        };
        if v.len() != dims * per_axis || v.iter().any(|&x| x < 0) {
            bail!(
                "{} {name} {v:?}: {} values expected",
                n.op_type,
                dims * per_axis
            );
        }
        Ok(Some(v.iter().map(|&x| x as usize).collect()))
    };
    let kernel =
        attr("kernel_shape", 1)?.ok_or_else(|| anyhow!("{} without kernel_shape", n.op_type))?;
    let stride = attr("strides", 1)?.unwrap_or_else(|| vec![1; dims]);
    let dilation = attr("dilations", 1)?.unwrap_or_else(|| vec![1; dims]);
    let pads = attr("pads", 2)?.unwrap_or_else(|| vec![0; 2 * dims]);
    if kernel.contains(&0) || stride.contains(&0) || dilation.contains(&0) {
        bail!("{}: zero kernel, stride or dilation", n.op_type);
    }
    let ceil = a.int("ceil_mode", 0) != 0;
    let auto = a.string("auto_pad", "NOTSET");
    let mut axes = Vec::with_capacity(dims);
    for i in 0..dims {
        let (k, s, d, len) = (kernel[i], stride[i], dilation[i], input[i]);
        let extent = (k - 1) * d + 1;
        let (pb, pe, auto_out) = match auto.as_str() {
            // The reference's auto_pad: output and padding from the undilated kernel.
            "SAME_UPPER" | "SAME_LOWER" | "VALID" => {
                if ceil {
                    bail!("{}: ceil_mode with auto_pad", n.op_type);
                }
                let out = if auto == "VALID" {
                    len.checked_sub(k)
                        .ok_or_else(|| anyhow!("pool window larger than the input"))?
                        / s
                        + 1
                } else {
                    (len - 1) / s + 1
                };
                let total = ((out - 1) * s + k).saturating_sub(len);
                let small = total / 2;
                match auto.as_str() {
                    "SAME_UPPER" => (small, total - small, Some(out)),
                    "SAME_LOWER" => (total - small, small, Some(out)),
                    _ => (0, 0, Some(out)),
                }
            }
            "NOTSET" => (pads[i], pads[i + dims], None),
            m => bail!("auto_pad '{m}' is not supported"),
        };
        let limit = len + pb + pe;
        let span = limit
            .checked_sub(extent)
            .ok_or_else(|| anyhow!("pool window larger than the padded input"))?;
        let out = match auto_out {
            Some(o) => o,
            None if ceil => {
                let mut o = span.div_ceil(s) + 1;
                // The last window must start inside the input or its begin padding.
                if (o - 1) * s >= len + pb {
                    o -= 1;
                }
                o
            }
            None => span / s + 1,
        };
        // What the windows need beyond the given pads (ceil_mode), split as the
        // reference splits it: half (rounded down) before.
        let extra = ((out - 1) * s + extent).saturating_sub(limit);
        // A tap the reference leaves out must not read the input (it reads padding here).
        if extra / 2 > pe {
            bail!(
                "{}: ceil_mode padding that shifts windows onto the input is not supported",
                n.op_type
            );
        }
        axes.push(AxisWindows {
            kernel: k,
            stride: s,
            dilation: d,
            pad_begin: pb + extra / 2,
            pad_end: pe + extra - extra / 2,
            limit,
            input: len,
            out,
        });
    }
    Ok(axes)
}

/// The count each output position divides by, row-major over the output's spatial
/// axes: the taps inside the padded input (`with_pads`) or only those on the input.
fn counts(axes: &[AxisWindows], with_pads: bool) -> Vec<usize> {
    let mut c = vec![1usize];
    for ax in axes {
        let per: Vec<usize> = (0..ax.out)
            .map(|o| {
                let (inside, real) = ax.taps(o);
                if with_pads {
                    inside
                } else {
                    real
                }
            })
            .collect();
        c = c
            .iter()
            .flat_map(|&a| per.iter().map(move |&b| a * b))
            .collect();
    }
    c
}

/// The kind of 2-d pass a pool makes.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    /// Σ over the window, zero padding (a depthwise Conv of ones).
    Sum,
    /// Max over the window (the MaxPool kernel; padding never wins).
    Max,
}

/// One 2-d pass over the last two axes of NCHW `x` with windows `h` and `w`.
fn pass_2d(l: &mut Lower, x: usize, h: &AxisWindows, w: &AxisWindows, pass: Pass) -> Result<usize> {
    let xs = l.shape(x);
    let out = vec![xs[0], xs[1], h.out, w.out];
    // Strides, pads (begin, then end) and dilations: the layout Conv and MaxPool share
    // after their first params.
    let geometry = [
        h.stride,
        w.stride,
        h.pad_begin,
        w.pad_begin,
        h.pad_end,
        w.pad_end,
        h.dilation,
        w.dilation,
    ]
    .map(|v| v as i32);
    let y = match pass {
        Pass::Sum => {
            let c = xs[1];
            let ones = vec![1.0f32; c * h.kernel * w.kernel];
            let kernel = l.g.add_f32(
                format!("{}:window", l.node_name),
                vec![c, 1, h.kernel, w.kernel],
                &ones,
            );
            let mut params = geometry.to_vec();
            params.extend([c as i32, INF_BITS.0, INF_BITS.1]);
            l.op(OpKind::Conv, vec![Some(x), Some(kernel), None], params, &[])?
        }
        Pass::Max => {
            let mut params = vec![h.kernel as i32, w.kernel as i32];
            params.extend(geometry);
            l.op(OpKind::MaxPool, vec![Some(x)], params, &out)?
        }
    };
    let ys = l.shape(y);
    if ys != out {
        bail!(
            "{}: pool pass of shape {ys:?}, expected {out:?}",
            l.node_name
        );
    }
    Ok(y)
}

/// The pass over every spatial axis of `x` (rank 3, 4 or 5): 1-d and 2-d pools are one
/// 2-d pass, 3-d pools one over (H, W) per depth and one of kernel (kD, 1) over D.
fn pool_pass(l: &mut Lower, x: usize, axes: &[AxisWindows], pass: Pass) -> Result<usize> {
    let xs = l.shape(x);
    match axes {
        [w] => {
            let x4 = l.reshape(x, &[xs[0], xs[1], 1, xs[2]])?;
            let y = pass_2d(l, x4, &AxisWindows::neutral(1), w, pass)?;
            l.reshape(y, &[xs[0], xs[1], w.out])
        }
        [h, w] => pass_2d(l, x, h, w, pass),
        [d, h, w] => {
            let (batch, c) = (xs[0], xs[1]);
            let planes = l.reshape(x, &[batch, c * xs[2], xs[3], xs[4]])?;
            let y = pass_2d(l, planes, h, w, pass)?;
            let plane_out = h.out * w.out;
            let y = l.reshape(y, &[batch, c, xs[2], plane_out])?;
            let y = pass_2d(l, y, d, &AxisWindows::neutral(plane_out), pass)?;
            l.reshape(y, &[batch, c, d.out, h.out, w.out])
        }
        _ => bail!("pools of {} spatial axes are not supported", axes.len()),
    }
}

/// `sum` times a constant map (spatial shape of `sum`, leading ones) of
/// `numerator / count`.
fn scale_by_counts(l: &mut Lower, sum: usize, counts: &[usize], numerator: f32) -> Result<usize> {
    if counts.contains(&0) {
        bail!("{}: a pool window holds no element", l.node_name);
    }
    let s = l.shape(sum);
    let factor: Vec<f32> = counts.iter().map(|&c| numerator / c as f32).collect();
    if factor.iter().all(|&f| f == 1.0) {
        return Ok(sum);
    }
    let mut shape = vec![1, 1];
    shape.extend(&s[2..]);
    let map =
        l.g.add_f32(format!("{}:window_factor", l.node_name), shape, &factor);
    l.binary(OpKind::Mul, sum, map)
}

/// The spatial axes' windows of pool node `n` on `x`.
fn windows(l: &Lower, n: &NodeProto, x: usize) -> Result<Vec<AxisWindows>> {
    let xs = l.shape(x);
    if !(3..=5).contains(&xs.len()) {
        bail!(
            "{} of a rank-{} input (1-d to 3-d pools only)",
            n.op_type,
            xs.len()
        );
    }
    windows_of(n, &xs[2..])
}

fn average_pool(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let axes = windows(l, n, x)?;
    let sum = pool_pass(l, x, &axes, Pass::Sum)?;
    let with_pads = Attrs(n).int("count_include_pad", 0) != 0;
    let y = scale_by_counts(l, sum, &counts(&axes, with_pads), 1.0)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

fn max_pool_3d(l: &mut Lower, n: &NodeProto) -> Result<()> {
    if n.output.get(1).is_some_and(|o| !o.is_empty()) {
        bail!("MaxPool's Indices output is not supported");
    }
    let x = l.in_t(n, 0)?;
    let axes = windows(l, n, x)?;
    let y = pool_pass(l, x, &axes, Pass::Max)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// LpPool as the reference computes it: (K · average of |x|ᵖ over the window's taps,
/// padding included)^(1/p), K the kernel size.
fn lp_pool(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let p = Attrs(n).int("p", 2);
    if p < 1 {
        bail!("LpPool with p = {p} is not supported (p ≥ 1)");
    }
    let x = l.in_t(n, 0)?;
    let axes = windows(l, n, x)?;
    // Unary ops (one lookup table each in int8), not x·x: an int8 Mul of a tensor by
    // itself rounds both factors.
    let powered = match p {
        1 => l.unary(x, UnaryFn::Abs, 0.0, 0.0)?,
        2 => l.unary(x, UnaryFn::Pow, 2.0, 0.0)?,
        p => {
            let abs = l.unary(x, UnaryFn::Abs, 0.0, 0.0)?;
            l.unary(abs, UnaryFn::Pow, p as f32, 0.0)?
        }
    };
    let sum = pool_pass(l, powered, &axes, Pass::Sum)?;
    let k = axes.iter().map(|a| a.kernel).product::<usize>() as f32;
    let y = scale_by_counts(l, sum, &counts(&axes, true), k)?;
    let y = match p {
        1 => y,
        2 => l.unary(y, UnaryFn::Sqrt, 0.0, 0.0)?,
        p => l.unary(y, UnaryFn::Pow, 1.0 / p as f32, 0.0)?,
    };
    l.out(n, 0, Val::T(y));
    Ok(())
}

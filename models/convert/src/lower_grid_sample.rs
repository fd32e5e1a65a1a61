//! AffineGrid (2-d and 3-d, θ at run time or not), and GridSample (2-d) on a grid known
//! at convert time: each output pixel is a fixed
//! weighted sum of input pixels, so the op is one constant [H·W, Ho·Wo] matrix per batch
//! item, applied as a MatMul. The weights follow the ONNX reference
//! (`onnx/reference/ops/op_grid_sample.py`): nearest (round half to even), bilinear and
//! bicubic (a = −0.75), with zeros, border or reflection padding and either
//! `align_corners`. A grid computed at run time (a spatial transformer, optical flow) is
//! refused: that needs a gather kernel, which cairn does not have yet.

use anyhow::{anyhow, bail, Context, Result};

use crate::lower::{Lower, Val};
use crate::onnx::{Attrs, NodeProto};

/// The most matrix entries a GridSample may take (64 MiB of f32).
const MAX_MATRIX_ENTRIES: usize = 16 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, PartialEq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

/// One spatial axis: its length and the sampling rules.
#[derive(Clone, Copy)]
struct Axis {
    len: usize,
    align_corners: bool,
    padding: Padding,
}

impl Axis {
    /// Grid value in [−1, 1] → pixel coordinate, in f32 arithmetic as the reference
    /// computes it.
    fn denormalize(&self, g: f32) -> f32 {
        let len = self.len as f32;
        if self.align_corners {
            (g + 1.0) / 2.0 * (len - 1.0)
        } else {
            ((g + 1.0) * len - 1.0) / 2.0
        }
    }

    fn borders(&self) -> (f64, f64) {
        if self.align_corners {
            (0.0, self.len as f64 - 1.0)
        } else {
            (-0.5, self.len as f64 - 0.5)
        }
    }

    /// Reflect `x` by the nearer border until it lies within [lo, hi].
    fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
        let range = hi - lo;
        if x < lo {
            let d = lo - x;
            let k = (d / range) as i64;
            let r = d - k as f64 * range;
            if k % 2 == 0 {
                lo + r
            } else {
                hi - r
            }
        } else if x > hi {
            let d = x - hi;
            let k = (d / range) as i64;
            let r = d - k as f64 * range;
            if k % 2 == 0 {
                hi - r
            } else {
                lo + r
            }
        } else {
            x
        }
    }

    /// The coordinate after the padding rule for points outside the borders.
    fn fold(&self, x: f32) -> f32 {
        let (lo, hi) = self.borders();
        let v = f64::from(x);
        if v >= lo && v <= hi {
            return x;
        }
        match self.padding {
            Padding::Border => x.clamp(0.0, self.len as f32 - 1.0),
            Padding::Reflection => Self::reflect(v, lo, hi) as f32,
            Padding::Zeros => x,
        }
    }

    /// The input index a tap at integer `i` reads, or None for a zero.
    fn pixel(&self, i: i64) -> Option<usize> {
        let last = self.len as i64 - 1;
        match self.padding {
            Padding::Zeros => (0..=last).contains(&i).then_some(i as usize),
            Padding::Border => Some(i.clamp(0, last) as usize),
            Padding::Reflection => {
                let (lo, hi) = self.borders();
                Some((Self::reflect(i as f64, lo, hi) as i64).clamp(0, last) as usize)
            }
        }
    }

    /// (input index, weight) of the taps at coordinate `x` (already folded).
    fn taps(&self, mode: Mode, x: f32) -> Vec<(usize, f32)> {
        let x0 = x.floor();
        let t = x - x0;
        let base = x0 as i64;
        let (first, w): (i64, Vec<f32>) = match mode {
            // Already rounded before folding; the reference truncates after it.
            Mode::Nearest => (x.trunc() as i64, vec![1.0]),
            Mode::Linear => (base, vec![1.0 - t, t]),
            Mode::Cubic => {
                let a = -0.75f32;
                let c0 = ((a * (t + 1.0) - 5.0 * a) * (t + 1.0) + 8.0 * a) * (t + 1.0) - 4.0 * a;
                let c1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
                let c2 = ((a + 2.0) * (1.0 - t) - (a + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
                let c3 = ((a * (2.0 - t) - 5.0 * a) * (2.0 - t) + 8.0 * a) * (2.0 - t) - 4.0 * a;
                (base - 1, vec![c0, c1, c2, c3])
            }
        };
        w.into_iter()
            .enumerate()
            .filter_map(|(k, wk)| self.pixel(first + k as i64).map(|i| (i, wk)))
            .collect()
    }
}

pub(crate) fn lower_grid_sample_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    match n.op_type.as_str() {
        "GridSample" => grid_sample(l, n)?,
        "AffineGrid" => affine_grid(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// AffineGrid: the sampling grid of an affine map θ (N × k × (k+1), k = 2 or 3), i.e. the
/// constant homogeneous base grid [x, y, (z,) 1] of every output pixel times θᵀ — one
/// MatMul, so θ may be computed at run time (a spatial transformer).
fn affine_grid(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let theta = l.in_t(n, 0)?;
    let ts = l.shape(theta);
    let size = l
        .ints_in(n, 1)?
        .ok_or_else(|| anyhow!("AffineGrid without a size"))?;
    let k = size.len().saturating_sub(2);
    if !(2..=3).contains(&k) || ts != [size[0] as usize, k, k + 1] || size.iter().any(|&d| d <= 0) {
        bail!("AffineGrid: theta {ts:?} and size {size:?} do not fit (2-d or 3-d)");
    }
    let spatial: Vec<usize> = size[2..].iter().map(|&d| d as usize).collect();
    let pixels = crate::lower_shape::numel(&spatial)?;
    if pixels
        .checked_mul(k + 1)
        .is_none_or(|v| v > MAX_MATRIX_ENTRIES)
    {
        bail!("AffineGrid of size {size:?} is too large");
    }
    let align_corners = Attrs(n).int("align_corners", 0) != 0;
    // Normalized coordinates along one axis of `len` pixels, as the reference's arange.
    let coords = |len: usize| -> Vec<f64> {
        let (start, step) = if align_corners {
            (-1.0, 2.0 / (len as f64 - 1.0))
        } else {
            let step = 2.0 / len as f64;
            (-1.0 + step / 2.0, step)
        };
        (0..len).map(|i| start + i as f64 * step).collect()
    };
    let axes: Vec<Vec<f64>> = spatial.iter().map(|&d| coords(d)).collect();
    let mut base = Vec::with_capacity(pixels * (k + 1));
    for p in 0..pixels {
        // Pixel p's index along each spatial axis (the last axis fastest).
        let mut rest = p;
        let mut idx = vec![0; k];
        for a in (0..k).rev() {
            idx[a] = rest % spatial[a];
            rest /= spatial[a];
        }
        // [x, y, (z,) 1]: x is the last spatial axis.
        for a in (0..k).rev() {
            base.push(axes[a][idx[a]] as f32);
        }
        base.push(1.0);
    }
    let base = l.g.add_f32(
        format!("{}:base_grid", l.node_name),
        vec![1, pixels, k + 1],
        &base,
    );
    let theta_t = l.transpose(theta, &[0, 2, 1])?;
    let grid = crate::lower_nn::matmul(l, base, theta_t)?;
    let mut out = vec![ts[0]];
    out.extend(&spatial);
    out.push(k);
    let grid = l.reshape(grid, &out)?;
    l.out(n, 0, Val::T(grid));
    Ok(())
}

fn grid_sample(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let mode = match a.string("mode", "linear").as_str() {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" | "bicubic" => Mode::Cubic,
        m => bail!("GridSample mode '{m}' is not supported"),
    };
    let padding = match a.string("padding_mode", "zeros").as_str() {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        m => bail!("GridSample padding_mode '{m}' is not supported"),
    };
    let align_corners = a.int("align_corners", 0) != 0;
    let x = l.in_t(n, 0)?;
    let xs = l.shape(x);
    if xs.len() != 4 {
        bail!(
            "GridSample supports 4-d NCHW inputs only (rank {})",
            xs.len()
        );
    }
    let grid = l
        .host(&n.input[1])
        .context("GridSample: the grid must be known at convert time")?;
    let gs = grid.shape.clone();
    if gs.len() != 4 || gs[0] != xs[0] || gs[3] != 2 {
        bail!("GridSample grid of shape {gs:?} for input {xs:?}");
    }
    let grid = grid.to_f32();
    let (batch, channels, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (ho, wo) = (gs[1], gs[2]);
    let (pixels_in, pixels_out) = (h * w, ho * wo);
    let entries = batch
        .checked_mul(pixels_in)
        .and_then(|v| v.checked_mul(pixels_out))
        .filter(|&v| v <= MAX_MATRIX_ENTRIES)
        .ok_or_else(|| {
            anyhow!("GridSample of {xs:?} to {ho}×{wo}: the constant sampling matrix would be too large")
        })?;
    let axis = |len| Axis {
        len,
        align_corners,
        padding,
    };
    let (ay, ax) = (axis(h), axis(w));
    // Per batch item, [H·W, Ho·Wo]: column p holds the weights of output pixel p.
    let mut m = vec![0f64; entries];
    for b in 0..batch {
        for p in 0..pixels_out {
            let g = (b * pixels_out + p) * 2;
            let mut cy = ay.denormalize(grid[g + 1]);
            let mut cx = ax.denormalize(grid[g]);
            if mode == Mode::Nearest {
                cy = cy.round_ties_even();
                cx = cx.round_ties_even();
            }
            let (cy, cx) = (ay.fold(cy), ax.fold(cx));
            for (iy, wy) in ay.taps(mode, cy) {
                for &(ix, wx) in &ax.taps(mode, cx) {
                    let q = iy * w + ix;
                    m[(b * pixels_in + q) * pixels_out + p] += f64::from(wy) * f64::from(wx);
                }
            }
        }
    }
    let m: Vec<f32> = m.iter().map(|&v| v as f32).collect();
    let mshape = if batch == 1 {
        vec![pixels_in, pixels_out]
    } else {
        vec![batch, pixels_in, pixels_out]
    };
    let matrix =
        l.g.add_f32(format!("{}:sampling_matrix", l.node_name), mshape, &m);
    let flat = l.reshape(x, &[batch, channels, pixels_in])?;
    let y = crate::lower_nn::matmul(l, flat, matrix)?;
    let y = l.reshape(y, &[batch, channels, ho, wo])?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

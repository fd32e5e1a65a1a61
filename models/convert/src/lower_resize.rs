//! Resize (and the legacy Upsample) on constant scales or sizes.
//!
//! Nearest and bilinear resizes of the H and W axes of NCHW tensors run on the fast
//! `Resize` kernel. Every other case (cubic, antialias, `exclude_outside`,
//! `tf_crop_and_resize` with its extrapolation value, `half_pixel_symmetric`, other axes
//! or ranks) is lowered in the matrix form: a resize along one axis is a linear map with
//! a constant [out, in] matrix (plus a constant bias for extrapolated rows), so an N-d
//! resize is one FullyConnected per resized axis, with a transpose around it when the axis
//! is not the last. The matrices are built here, in f64, by the same rules as the ONNX
//! reference (`onnx/reference/ops/op_resize.py`), so the result is exact up to f32
//! rounding.

use anyhow::{bail, Result};
use cairn_core::OpKind;

use crate::lower::{Lower, Val};
use crate::onnx::{Attrs, NodeProto};

/// How output coordinates map to input coordinates along one axis.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Coord {
    HalfPixel,
    Asymmetric,
    AlignCorners,
    PytorchHalfPixel,
    HalfPixelSymmetric,
    /// Region of interest (start, end) in normalized input coordinates.
    TfCropAndResize {
        start: f64,
        end: f64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// `nearest_mode`: 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil.
    Nearest(i32),
    Linear,
    Cubic(f64),
}

/// Everything about one axis' resize that the interpolation matrix depends on.
#[derive(Clone, Copy, Debug)]
struct AxisResize {
    input: usize,
    output: usize,
    scale: f64,
    mode: Mode,
    coord: Coord,
    antialias: bool,
    exclude_outside: bool,
    extrapolation: f32,
}

pub(crate) fn resize(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let x = l.in_t(n, 0)?;
    let xs = l.shape(x);
    let rank = xs.len();
    if rank == 0 {
        bail!("Resize of a scalar");
    }
    let legacy = n.op_type == "Upsample" || l.opset < 11;
    let (scales, sizes) = if legacy {
        let s = match a.floats("scales") {
            Some(s) => Some(s),
            None => l.opt_host(n, 1)?.map(|h| h.to_f32()),
        };
        (s, None)
    } else {
        let s = l
            .opt_host(n, 2)?
            .map(|h| h.to_f32())
            .filter(|v| !v.is_empty());
        let z = l
            .opt_host(n, 3)?
            .map(|h| h.to_i64())
            .filter(|v| !v.is_empty());
        (s, z)
    };
    let axes: Vec<usize> = match a.ints("axes") {
        Some(ax) => ax
            .iter()
            .map(|&v| {
                let v = if v < 0 { v + rank as i64 } else { v };
                if (0..rank as i64).contains(&v) {
                    Ok(v as usize)
                } else {
                    bail!("Resize axis {v} out of range for rank {rank}")
                }
            })
            .collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    let (out, scale) = geometry(&a, &xs, &axes, scales, sizes)?;
    if out.contains(&0) {
        bail!("Resize to an empty shape {out:?}");
    }
    let mode = match a.string("mode", "nearest").as_str() {
        "nearest" => Mode::Nearest(if legacy {
            2
        } else {
            match a.string("nearest_mode", "round_prefer_floor").as_str() {
                "round_prefer_floor" => 0,
                "round_prefer_ceil" => 1,
                "floor" => 2,
                "ceil" => 3,
                m => bail!("Resize nearest_mode '{m}' is not supported"),
            }
        }),
        "linear" | "bilinear" | "trilinear" => Mode::Linear,
        "cubic" => Mode::Cubic(f64::from(a.float("cubic_coeff_a", -0.75))),
        m => bail!("Resize mode '{m}' is not supported"),
    };
    let coord_name = if legacy {
        "asymmetric".to_string()
    } else {
        a.string("coordinate_transformation_mode", "half_pixel")
    };
    let roi = if coord_name == "tf_crop_and_resize" {
        let roi = l
            .opt_host(n, 1)?
            .map(|h| h.to_f32())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow::anyhow!("Resize tf_crop_and_resize needs a roi"))?;
        if roi.len() != 2 * axes.len() {
            bail!(
                "Resize roi has {} values for {} axes",
                roi.len(),
                axes.len()
            );
        }
        Some(roi)
    } else {
        None
    };
    let antialias = a.int("antialias", 0) != 0;
    if antialias && matches!(mode, Mode::Nearest(_)) {
        bail!("Resize antialias applies to linear and cubic modes, not nearest");
    }
    let exclude_outside = a.int("exclude_outside", 0) != 0;
    let axis_resize = |k: usize| -> Result<AxisResize> {
        let d = axes[k];
        let coord = match coord_name.as_str() {
            "half_pixel" => Coord::HalfPixel,
            "asymmetric" => Coord::Asymmetric,
            "align_corners" => Coord::AlignCorners,
            "pytorch_half_pixel" => Coord::PytorchHalfPixel,
            "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
            "tf_crop_and_resize" => {
                let roi = roi.as_deref().unwrap_or_default();
                Coord::TfCropAndResize {
                    start: f64::from(roi[k]),
                    end: f64::from(roi[k + axes.len()]),
                }
            }
            m => bail!("Resize coordinate_transformation_mode '{m}' is not supported"),
        };
        Ok(AxisResize {
            input: xs[d],
            output: out[d],
            scale: scale[d],
            mode,
            coord,
            antialias,
            exclude_outside,
            extrapolation: a.float("extrapolation_value", 0.0),
        })
    };
    let plan: Vec<(usize, AxisResize)> = (0..axes.len())
        .map(|k| Ok((axes[k], axis_resize(k)?)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|(_, r)| !r.is_identity())
        .collect();
    let y = if let Some(params) = fast_kernel_params(&xs, &plan) {
        l.op(OpKind::Resize, vec![Some(x)], params, &out)?
    } else {
        let mut t = x;
        for (d, r) in &plan {
            t = along_axis(l, t, *d, r)?;
        }
        t
    };
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// Output shape and per-axis scale factor (f64, as the reference computes them), from
/// `scales` or `sizes` given for `axes`, honouring `keep_aspect_ratio_policy`.
fn geometry(
    a: &Attrs,
    xs: &[usize],
    axes: &[usize],
    scales: Option<Vec<f32>>,
    sizes: Option<Vec<i64>>,
) -> Result<(Vec<usize>, Vec<f64>)> {
    let mut out = xs.to_vec();
    let mut scale = vec![1.0f64; xs.len()];
    match (scales, sizes) {
        (Some(s), _) if s.len() == axes.len() => {
            for (&d, &v) in axes.iter().zip(&s) {
                if !(v.is_finite() && v > 0.0) {
                    bail!("Resize scale {v} is not a positive number");
                }
                scale[d] = f64::from(v);
                out[d] = (f64::from(v) * xs[d] as f64).floor() as usize;
            }
        }
        (_, Some(z)) if z.len() == axes.len() => {
            for (&d, &v) in axes.iter().zip(&z) {
                if v <= 0 {
                    bail!("Resize size {v} is not positive");
                }
                out[d] = v as usize;
                scale[d] = v as f64 / xs[d] as f64;
            }
            let pick = match a.string("keep_aspect_ratio_policy", "stretch").as_str() {
                "stretch" => None,
                "not_larger" => Some(f64::min as fn(f64, f64) -> f64),
                "not_smaller" => Some(f64::max as fn(f64, f64) -> f64),
                p => bail!("Resize keep_aspect_ratio_policy '{p}' is not supported"),
            };
            if let Some(pick) = pick {
                let s = axes.iter().map(|&d| scale[d]).reduce(pick).unwrap_or(1.0);
                for &d in axes {
                    scale[d] = s;
                    out[d] = (s * xs[d] as f64 + 0.5) as usize;
                }
            }
        }
        _ => bail!(
            "Resize needs {} scales or sizes (one per resized axis)",
            axes.len()
        ),
    }
    // A hostile scale (1e30) must be a refusal, not an overflow or a giant allocation.
    let total = out.iter().try_fold(1usize, |n, &d| {
        (d <= MAX_AXIS).then(|| n.checked_mul(d)).flatten()
    });
    if total.is_none_or(|n| n > MAX_OUTPUT) {
        bail!("Resize output {out:?} is too large (at most {MAX_AXIS} per axis, {MAX_OUTPUT} elements)");
    }
    Ok((out, scale))
}

/// The largest resized axis and output this lowering takes (far beyond any edge model).
const MAX_AXIS: usize = 1 << 20;
const MAX_OUTPUT: usize = 1 << 28;
/// Entries of one axis's interpolation matrix (64 MB of f32), as GridSample's bound.
const MAX_MATRIX: usize = 16 << 20;

impl AxisResize {
    /// The reference skips an axis whose scale is 1 with the same size and a full roi.
    fn is_identity(&self) -> bool {
        let roi_full = match self.coord {
            Coord::TfCropAndResize { start, end } => {
                (start - 0.0).abs() <= 1e-9 && (end - 1.0).abs() <= 1e-9 * end.abs().max(1.0)
            }
            _ => true,
        };
        (self.scale - 1.0).abs() <= 1e-9 * self.scale.abs().max(1.0)
            && self.output == self.input
            && roi_full
    }

    /// The input coordinate of output index `y`, and whether it lies outside the input
    /// (tf_crop_and_resize only: such outputs take the extrapolation value).
    fn source(&self, y: f64) -> (f64, bool) {
        let (input, scale) = (self.input as f64, self.scale);
        let width = scale * input;
        match self.coord {
            Coord::AlignCorners if width == 1.0 => (0.0, false),
            Coord::AlignCorners => (y * (input - 1.0) / (width - 1.0), false),
            Coord::Asymmetric => (y / scale, false),
            Coord::TfCropAndResize { start, end } => {
                let x = if width == 1.0 {
                    (end - start) * (input - 1.0) / 2.0
                } else {
                    y * (end - start) * (input - 1.0) / (width - 1.0)
                } + start * (input - 1.0);
                (x, x < 0.0 || x > input - 1.0)
            }
            Coord::PytorchHalfPixel if width == 1.0 => (-0.5, false),
            Coord::PytorchHalfPixel | Coord::HalfPixel => ((y + 0.5) / scale - 0.5, false),
            Coord::HalfPixelSymmetric => {
                let adjustment = self.output as f64 / width;
                let offset = input / 2.0 * (1.0 - adjustment);
                (offset + (y + 0.5) / scale - 0.5, false)
            }
        }
    }

    /// Interpolation weights of the taps around a source coordinate whose fractional
    /// part is `ratio` (in (0, 1]).
    fn coeffs(&self, ratio: f64) -> Vec<f64> {
        match self.mode {
            Mode::Nearest(m) => {
                let up = if ratio == 1.0 {
                    true
                } else {
                    match m {
                        0 => ratio > 0.5,
                        1 => ratio >= 0.5,
                        2 => false,
                        _ => true,
                    }
                };
                vec![f64::from(u8::from(!up)), f64::from(u8::from(up))]
            }
            Mode::Linear if self.antialias => {
                let scale = self.scale.min(1.0);
                let start = (-1.0 / scale).floor() as i64 + 1;
                let taps = 2 - 2 * start;
                let c: Vec<f64> = (start..start + taps)
                    .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                    .collect();
                normalized(c)
            }
            Mode::Linear => vec![1.0 - ratio, ratio],
            Mode::Cubic(a) if self.antialias => {
                let scale = self.scale.min(1.0);
                let start = (-2.0 / scale).floor() as i64 + 1;
                let c: Vec<f64> = (start..2 - start)
                    .map(|i| cubic_kernel(a, scale * (i as f64 - ratio)))
                    .collect();
                normalized(c)
            }
            Mode::Cubic(a) => {
                let r = ratio;
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
                    ((a * (2.0 - r) - 5.0 * a) * (2.0 - r) + 8.0 * a) * (2.0 - r) - 4.0 * a,
                ]
            }
        }
    }

    /// The [output, input] interpolation matrix (row-major) and, where some output lies
    /// outside a crop, the bias holding the extrapolation value there.
    fn matrix(&self) -> (Vec<f32>, Option<Vec<f32>>) {
        let (input, output) = (self.input, self.output);
        let mut w = vec![0f64; output * input];
        let mut bias = vec![0f32; output];
        let mut extrapolated = false;
        for y in 0..output {
            let (x, outside) = self.source(y as f64);
            if outside {
                bias[y] = self.extrapolation;
                extrapolated = true;
                continue;
            }
            let ratio = if x == x.floor() { 1.0 } else { x - x.floor() };
            let mut c = self.coeffs(ratio);
            let taps = c.len() as i64;
            // The `taps` indices nearest to x in the edge-padded input, ties to the
            // smaller index (the reference's `_get_neighbor`).
            let pad = (taps + 1) / 2;
            let padded = x + pad as f64;
            let p = padded.floor();
            let frac = padded - p;
            let offset = if taps % 2 == 0 {
                if frac == 0.0 {
                    -(taps / 2)
                } else {
                    -(taps / 2) + 1
                }
            } else if frac <= 0.5 {
                -((taps - 1) / 2)
            } else {
                -((taps - 1) / 2) + 1
            };
            let start = p as i64 + offset - pad;
            if self.exclude_outside {
                for (k, ck) in c.iter_mut().enumerate() {
                    let i = start + k as i64;
                    if i < 0 || i >= input as i64 {
                        *ck = 0.0;
                    }
                }
                let sum: f64 = c.iter().sum();
                if sum != 0.0 {
                    c.iter_mut().for_each(|v| *v /= sum);
                }
            }
            for (k, &ck) in c.iter().enumerate() {
                let i = (start + k as i64).clamp(0, input as i64 - 1) as usize;
                w[y * input + i] += ck;
            }
        }
        let w = w.iter().map(|&v| v as f32).collect();
        (w, extrapolated.then_some(bias))
    }
}

fn normalized(c: Vec<f64>) -> Vec<f64> {
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|v| v / sum).collect()
}

/// Keys' cubic convolution kernel with parameter `a`.
fn cubic_kernel(a: f64, x: f64) -> f64 {
    let x = x.abs();
    let (x2, x3) = (x * x, x * x * x);
    if x <= 1.0 {
        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// The parameters of the fast `Resize` kernel when it computes exactly this resize:
/// nearest or bilinear on the H and W axes of an NCHW tensor, with a coordinate mode the
/// kernel knows and, for the modes that read the float output width, an integral one.
fn fast_kernel_params(xs: &[usize], plan: &[(usize, AxisResize)]) -> Option<Vec<i32>> {
    if xs.len() != 4 || plan.is_empty() || plan.iter().any(|(d, _)| *d < 2) {
        return None;
    }
    let first = plan[0].1;
    let mut sc = [1.0f32; 2];
    for (d, r) in plan {
        let same = r.mode == first.mode && r.coord == first.coord;
        if !same || r.antialias || r.exclude_outside {
            return None;
        }
        let width = r.scale * r.input as f64;
        if matches!(r.coord, Coord::AlignCorners | Coord::PytorchHalfPixel)
            && width != r.output as f64
        {
            return None;
        }
        sc[d - 2] = r.scale as f32;
    }
    let (mode, nearest) = match first.mode {
        Mode::Nearest(m) => (0, m),
        Mode::Linear => (1, 0),
        Mode::Cubic(_) => return None,
    };
    let coord = match first.coord {
        Coord::HalfPixel => 0,
        Coord::Asymmetric => 1,
        Coord::AlignCorners => 2,
        Coord::PytorchHalfPixel => 3,
        _ => return None,
    };
    Some(vec![
        mode,
        coord,
        nearest,
        sc[0].to_bits() as i32,
        sc[1].to_bits() as i32,
    ])
}

/// Resize axis `d` of `x` with the matrix of `r`: a FullyConnected over the last axis,
/// with the axis swapped there and back when it is not the last.
fn along_axis(l: &mut Lower, x: usize, d: usize, r: &AxisResize) -> Result<usize> {
    let rank = l.shape(x).len();
    let last = rank - 1;
    let perm: Vec<usize> = (0..rank)
        .map(|i| match i {
            i if i == d => last,
            i if i == last => d,
            i => i,
        })
        .collect();
    if r.output.checked_mul(r.input).is_none_or(|n| n > MAX_MATRIX) {
        bail!(
            "Resize of axis {d} ({} -> {}) needs an interpolation matrix of over {MAX_MATRIX} entries",
            r.input,
            r.output
        );
    }
    let t = if d == last { x } else { l.transpose(x, &perm)? };
    let (w, bias) = r.matrix();
    let w = l.g.add_f32(
        format!("{}:resize_matrix{d}", l.node_name),
        vec![r.output, r.input],
        &w,
    );
    let bias = bias.map(|b| {
        l.g.add_f32(
            format!("{}:resize_extrapolation{d}", l.node_name),
            vec![r.output],
            &b,
        )
    });
    let y = crate::lower_nn::fc(l, t, w, true, bias)?;
    if d == last {
        Ok(y)
    } else {
        l.transpose(y, &perm)
    }
}

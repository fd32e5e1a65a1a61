//! Convolution and transposed convolution, NCHW, groups (incl. depthwise), stride,
//! padding, dilation, fused activation clamp.

use cairn_core::op::conv as p;
use cairn_core::op::conv_multipliers;
use cairn_core::quant::{requantize, requantize_signed};
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::util::{f32_clamp, qp};

pub(crate) struct Geo {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) oc: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) pt: isize,
    pub(crate) pl: isize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
    pub(crate) g: usize,
}

pub(crate) fn geo(call: &OpCall<'_>, out: &TensorMut<'_>) -> Result<Geo, ExecError> {
    let x = call.req(0)?.info.shape;
    let w = call.req(1)?.info.shape;
    let (n, c, h, wd) = x.nchw().ok_or(ExecError::Shape)?;
    let (_, oc, oh, ow) = out.info.shape.nchw().ok_or(ExecError::Shape)?;
    let (_, _, kh, kw) = w.nchw().ok_or(ExecError::Shape)?;
    let u = |i: usize| call.param(i) as usize;
    Ok(Geo {
        n,
        c,
        h,
        w: wd,
        oc,
        oh,
        ow,
        kh,
        kw,
        sh: u(p::SH),
        sw: u(p::SW),
        pt: call.param(p::PT) as isize,
        pl: call.param(p::PL) as isize,
        dh: u(p::DH),
        dw: u(p::DW),
        g: u(p::GROUP),
    })
}

/// Visit, for output pixel (oy, ox), every kernel tap (ky, kx) with its in-bounds input pixel.
#[inline(always)]
fn taps(g: &Geo, oy: usize, ox: usize, mut f: impl FnMut(usize, usize)) {
    for ky in 0..g.kh {
        let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
        if iy < 0 || iy >= g.h as isize {
            continue;
        }
        for kx in 0..g.kw {
            let ix = (ox * g.sw) as isize - g.pl + (kx * g.dw) as isize;
            if ix < 0 || ix >= g.w as isize {
                continue;
            }
            f(ky * g.kw + kx, iy as usize * g.w + ix as usize);
        }
    }
}

pub fn conv_f32(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let g = geo(call, &out)?;
    let x = call.req(0)?.f32s()?;
    let w = call.req(1)?.f32s()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.f32s()?),
        None => None,
    };
    let (lo, hi) = f32_clamp(call.param(p::ACT_LO), call.param(p::ACT_HI));
    let y = out.f32s_mut()?;
    let (cg, ocg) = (g.c / g.g, g.oc / g.g);
    let ksz = g.kh * g.kw;
    for n in 0..g.n {
        for oc in 0..g.oc {
            let grp = oc / ocg;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias.map_or(0.0, |b| b[oc]);
                    for ic in 0..cg {
                        let xb = ((n * g.c) + grp * cg + ic) * g.h * g.w;
                        let wb = (oc * cg + ic) * ksz;
                        taps(&g, oy, ox, |k, xi| acc += x[xb + xi] * w[wb + k]);
                    }
                    y[((n * g.oc + oc) * g.oh + oy) * g.ow + ox] = acc.max(lo).min(hi);
                }
            }
        }
    }
    Ok(())
}

pub fn conv_i8(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let wt = call.req(1)?;
    let w = wt.i8s()?;
    // Row-major [oc][ic/g][kh][kw]: element k of row o at o · (ic/g)·kh·kw + k.
    let kdim = wt.info.shape.prod(1, 4);
    conv_i8_with(call, out, |o, k| w[o * kdim + k] as i32)
}

/// int8 Conv whose weights are pre-packed ([`cairn_core::Layout::Pairs6`], one group).
pub fn conv_i8_packed(call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
    let (w, g) = call.req(1)?.pairs6()?;
    if call.param(p::GROUP) != 1 {
        return Err(ExecError::Shape);
    }
    conv_i8_with(call, out, |o, k| w[g.index(o, k)] as i32)
}

/// The reference int8 Conv; `wf(o, k)` is weight `k` (= (ic·kh + ky)·kw + kx within the
/// group) of output channel `o`.
#[inline(always)]
fn conv_i8_with(
    call: &OpCall<'_>,
    mut out: TensorMut<'_>,
    wf: impl Fn(usize, usize) -> i32,
) -> Result<(), ExecError> {
    let g = geo(call, &out)?;
    let xt = call.req(0)?;
    let x = xt.i8s()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.i32s()?),
        None => None,
    };
    // With a folded PRelu, negative accumulators take the second row of multipliers.
    let (scales, neg) = conv_multipliers(call.req(3)?.f32s()?, g.oc).ok_or(ExecError::Shape)?;
    let (_, zx) = qp(&xt.info);
    let (_, zy) = qp(&out.info);
    let (lo, hi) = (call.param(p::ACT_LO), call.param(p::ACT_HI));
    let y = out.i8s_mut()?;
    let (cg, ocg) = (g.c / g.g, g.oc / g.g);
    let ksz = g.kh * g.kw;
    for n in 0..g.n {
        for oc in 0..g.oc {
            let grp = oc / ocg;
            let (b, s, sn) = (bias.map_or(0, |b| b[oc]), scales[oc], neg[oc]);
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = b;
                    for ic in 0..cg {
                        let xb = ((n * g.c) + grp * cg + ic) * g.h * g.w;
                        let wb = ic * ksz;
                        taps(&g, oy, ox, |k, xi| {
                            acc = acc.wrapping_add((x[xb + xi] as i32 - zx) * wf(oc, wb + k))
                        });
                    }
                    y[((n * g.oc + oc) * g.oh + oy) * g.ow + ox] =
                        requantize_signed(acc, s, sn, zy, lo, hi) as i8;
                }
            }
        }
    }
    Ok(())
}

/// Transposed conv as a gather: output pixel (oy, ox) takes input pixel (iy, ix) through
/// tap (ky, kx) when oy + pt - ky*dh = iy*sh.
#[inline(always)]
fn taps_t(g: &Geo, oy: usize, ox: usize, mut f: impl FnMut(usize, usize)) {
    for ky in 0..g.kh {
        let ny = oy as isize + g.pt - (ky * g.dh) as isize;
        if ny < 0 || ny % g.sh as isize != 0 || ny / g.sh as isize >= g.h as isize {
            continue;
        }
        let iy = (ny / g.sh as isize) as usize;
        for kx in 0..g.kw {
            let nx = ox as isize + g.pl - (kx * g.dw) as isize;
            if nx < 0 || nx % g.sw as isize != 0 || nx / g.sw as isize >= g.w as isize {
                continue;
            }
            f(ky * g.kw + kx, iy * g.w + (nx / g.sw as isize) as usize);
        }
    }
}

pub fn conv_transpose_f32(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let g = geo(call, &out)?;
    let x = call.req(0)?.f32s()?;
    let w = call.req(1)?.f32s()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.f32s()?),
        None => None,
    };
    let (lo, hi) = f32_clamp(call.param(p::T_ACT_LO), call.param(p::T_ACT_HI));
    let y = out.f32s_mut()?;
    let (cg, ocg) = (g.c / g.g, g.oc / g.g);
    let ksz = g.kh * g.kw;
    for n in 0..g.n {
        for oc in 0..g.oc {
            let (grp, ocl) = (oc / ocg, oc % ocg);
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias.map_or(0.0, |b| b[oc]);
                    for icl in 0..cg {
                        let ic = grp * cg + icl;
                        let xb = (n * g.c + ic) * g.h * g.w;
                        let wb = (ic * ocg + ocl) * ksz;
                        taps_t(&g, oy, ox, |k, xi| acc += x[xb + xi] * w[wb + k]);
                    }
                    y[((n * g.oc + oc) * g.oh + oy) * g.ow + ox] = acc.max(lo).min(hi);
                }
            }
        }
    }
    Ok(())
}

pub fn conv_transpose_i8(call: &OpCall<'_>, mut out: TensorMut<'_>) -> Result<(), ExecError> {
    let g = geo(call, &out)?;
    let xt = call.req(0)?;
    let x = xt.i8s()?;
    let w = call.req(1)?.i8s()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.i32s()?),
        None => None,
    };
    let scales = call.req(3)?.f32s()?;
    let (_, zx) = qp(&xt.info);
    let (_, zy) = qp(&out.info);
    let (lo, hi) = (call.param(p::T_ACT_LO), call.param(p::T_ACT_HI));
    let y = out.i8s_mut()?;
    let (cg, ocg) = (g.c / g.g, g.oc / g.g);
    let ksz = g.kh * g.kw;
    for n in 0..g.n {
        for oc in 0..g.oc {
            let (grp, ocl) = (oc / ocg, oc % ocg);
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias.map_or(0, |b| b[oc]);
                    for icl in 0..cg {
                        let ic = grp * cg + icl;
                        let xb = (n * g.c + ic) * g.h * g.w;
                        let wb = (ic * ocg + ocl) * ksz;
                        taps_t(&g, oy, ox, |k, xi| {
                            acc = acc.wrapping_add((x[xb + xi] as i32 - zx) * w[wb + k] as i32)
                        });
                    }
                    y[((n * g.oc + oc) * g.oh + oy) * g.ow + ox] =
                        requantize(acc, scales[oc], zy, lo, hi) as i8;
                }
            }
        }
    }
    Ok(())
}

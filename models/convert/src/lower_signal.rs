//! Lowering of signal, scatter and small constant-generating ops onto cairn's existing
//! ops, so no new kernel is needed and each keeps the fast (and int8) path of the op it
//! becomes:
//! - DFT and STFT with a length known at convert time: a FullyConnected (DFT) or a strided
//!   Conv (STFT) against a constant cos/sin matrix, window folded in (the way audio front
//!   ends are written by hand);
//! - HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix, EyeLike: constants;
//! - ScatterND, ScatterElements (and the old Scatter) with indices known at convert time:
//!   a Gather from `[data, updates]` with a constant index map;
//! - CumSum along an axis: a FullyConnected with a constant triangular matrix;
//! - OneHot: comparisons with a constant range and a Where;
//! - LRN: a 1×1 Conv with a constant channel band, then `(bias + ·)^β` and a Div;
//! - RMSNormalization: `x / sqrt(mean(x²) + ε) · scale`;
//! - Compress with a condition known at convert time: a Gather.
//!
//! What stays refused, with the reason: run-time indices or lengths (cairn plans every
//! shape and index map before load), scatter reductions other than `none`, and CumSum of a
//! run-time integer tensor.

use anyhow::{anyhow, bail, Result};
use cairn_core::op::{BinaryFn, UnaryFn};
use cairn_core::{DType, OpKind};

use crate::lower::{Lower, Val, INF_BITS};
use crate::lower_math::{as_val, dtype_of, op_as, typed_t};
use crate::onnx::{Attrs, HostTensor, NodeProto};

pub(crate) fn lower_signal_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    match n.op_type.as_str() {
        "DFT" => dft(l, n)?,
        "STFT" => stft(l, n)?,
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => window(l, n)?,
        "MelWeightMatrix" => mel_weight_matrix(l, n)?,
        "EyeLike" => eye_like(l, n)?,
        "ScatterND" => scatter(l, n, true)?,
        "ScatterElements" | "Scatter" => scatter(l, n, false)?,
        "CumSum" => cum_sum(l, n)?,
        "OneHot" => one_hot(l, n)?,
        "LRN" => lrn(l, n)?,
        "RMSNormalization" => rms_norm(l, n)?,
        "Compress" => compress(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn scalar_int(l: &Lower, n: &NodeProto, k: usize, what: &str) -> Result<i64> {
    let v = l
        .ints_in(n, k)
        .map_err(|e| anyhow!("{}: {what} {e}", n.op_type))?
        .ok_or_else(|| anyhow!("{}: {what} is missing", n.op_type))?;
    match v.as_slice() {
        [x] => Ok(*x),
        _ => bail!(
            "{}: {what} must be a scalar, it has {} values",
            n.op_type,
            v.len()
        ),
    }
}

fn scalar_f32(l: &Lower, n: &NodeProto, k: usize, what: &str) -> Result<f64> {
    let h = l
        .opt_host(n, k)?
        .ok_or_else(|| anyhow!("{}: {what} is missing", n.op_type))?;
    match h.to_f32().as_slice() {
        [x] => Ok(f64::from(*x)),
        v => bail!(
            "{}: {what} must be a scalar, it has {} values",
            n.op_type,
            v.len()
        ),
    }
}

fn positive(v: i64, what: &str, op: &str) -> Result<usize> {
    if v <= 0 || v > (1 << 24) {
        bail!("{op}: {what} = {v} is out of range (1 ..= 2^24)");
    }
    Ok(v as usize)
}

fn axis(a: i64, rank: usize, op: &str) -> Result<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    if !(0..r).contains(&a) {
        bail!("{op}: axis out of range for rank {rank}");
    }
    Ok(a as usize)
}

/// A constant output of an ONNX float type (f32) or integer type (a host value).
fn out_const(l: &mut Lower, n: &NodeProto, shape: Vec<usize>, v: Vec<f64>, float: bool) {
    let val = if float {
        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        let name = format!("{}:const", l.node_name);
        Val::T(l.g.add_f32(name, shape, &f))
    } else {
        Val::Int(HostTensor::i64(
            shape,
            v.iter().map(|&x| x as i64).collect(),
        ))
    };
    l.out(n, 0, val);
}

/// Whether an ONNX element type is a float type (`output_datatype`, `dtype` attributes).
fn is_float_type(t: i64) -> bool {
    matches!(t, 1 | 10 | 11 | 16)
}

/// `cos` and `sin` of `2π·k·n / len`, with `k·n` reduced modulo `len` first so large
/// products keep full precision.
fn twiddle(k: usize, n: usize, len: usize) -> (f64, f64) {
    let m = (k as u64 * n as u64 % len as u64) as f64;
    let th = 2.0 * core::f64::consts::PI * m / len as f64;
    (th.cos(), th.sin())
}

/// Move `ax` of `x` to position `to` (a Transpose; none when it is there already).
fn move_axis(l: &mut Lower, x: usize, ax: usize, to: usize) -> Result<(usize, Vec<usize>)> {
    let r = l.shape(x).len();
    let mut perm: Vec<usize> = (0..r).filter(|&i| i != ax).collect();
    perm.insert(to, ax);
    let y = if perm.iter().enumerate().all(|(i, &p)| i == p) {
        x
    } else {
        l.transpose(x, &perm)?
    };
    let mut inv = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    Ok((y, inv))
}

fn undo_move(l: &mut Lower, y: usize, inv: &[usize]) -> Result<usize> {
    if inv.iter().enumerate().all(|(i, &p)| i == p) {
        Ok(y)
    } else {
        l.transpose(y, inv)
    }
}

/// `x [.., rows, cols]` (cols the last axis) times a constant `[cols, out]` matrix, as one
/// FullyConnected over the flattened leading axes.
fn times_const(l: &mut Lower, x: usize, w: Vec<f32>, cols: usize, out: usize) -> Result<usize> {
    let s = l.shape(x);
    let lead: usize = s[..s.len() - 1].iter().product();
    let x2 = l.reshape(x, &[lead, cols])?;
    let name = format!("{}:matrix", l.node_name);
    let wt = l.g.add_f32(name, vec![cols, out], &w);
    let y = crate::lower_nn::matmul(l, x2, wt)?;
    let mut ys = s.clone();
    *ys.last_mut().unwrap() = out;
    l.reshape(y, &ys)
}

/// DFT (opsets 17–20): forward or inverse, full or one-sided, along one axis of a real
/// (`[.., 1]`) or complex (`[.., 2]`) signal, with the length known at convert time.
fn dft(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let x = l.in_t(n, 0)?;
    let s = l.shape(x);
    let r = s.len();
    if r < 2 || !(s[r - 1] == 1 || s[r - 1] == 2) {
        bail!("DFT: the input's last axis must hold 1 (real) or 2 (complex) values, shape {s:?}");
    }
    let c = s[r - 1];
    let ax_raw = if l.opset >= 20 {
        match n.input.get(2).filter(|i| !i.is_empty()) {
            Some(_) => scalar_int(l, n, 2, "axis")?,
            None => -2,
        }
    } else {
        a.int("axis", 1)
    };
    let ax = axis(ax_raw, r, "DFT")?;
    if ax == r - 1 {
        bail!("DFT: the axis cannot be the last (complex) axis");
    }
    let n_in = s[ax];
    let inverse = a.int("inverse", 0) != 0;
    let onesided = a.int("onesided", 0) != 0;
    let len = match n.input.get(1).filter(|i| !i.is_empty()) {
        Some(_) => positive(scalar_int(l, n, 1, "dft_length")?, "dft_length", "DFT")?,
        // A one-sided inverse (irfft) of n bins makes 2·(n − 1) samples.
        None if inverse && onesided => 2 * n_in.saturating_sub(1).max(1),
        None => n_in,
    };
    // (output length along the axis, output components, input entries used)
    let (k_out, co) = match (inverse, onesided) {
        (false, true) => (len / 2 + 1, 2),
        (true, true) => (len, 1),
        _ => (len, 2),
    };
    let used = if inverse && onesided {
        n_in.min(len / 2 + 1)
    } else {
        n_in.min(len)
    };
    let (rows, cols) = (n_in * c, k_out * co);
    if rows.saturating_mul(cols) > 1 << 26 {
        bail!("DFT: a {len}-point transform is too large for cairn's matrix form");
    }
    let mut w = vec![0f32; rows * cols];
    let scale = if inverse { 1.0 / len as f64 } else { 1.0 };
    for i in 0..used {
        for k in 0..k_out {
            let (cs, sn) = twiddle(i, k, len);
            // re/im of the input entry i, mapped to re/im of output entry k.
            let (rr, ir, ri, ii) = match (inverse, onesided) {
                (false, _) => (cs, sn, -sn, cs),
                (true, false) => (cs, -sn, sn, cs),
                (true, true) => {
                    let twice = if i == 0 || 2 * i == len { 1.0 } else { 2.0 };
                    (twice * cs, -twice * sn, 0.0, 0.0)
                }
            };
            let at = |ci: usize, o: usize| (i * c + ci) * cols + k * co + o;
            w[at(0, 0)] = (rr * scale) as f32;
            if co == 2 {
                w[at(0, 1)] = (ri * scale) as f32;
            }
            if c == 2 {
                w[at(1, 0)] = (ir * scale) as f32;
                if co == 2 {
                    w[at(1, 1)] = (ii * scale) as f32;
                }
            }
        }
    }
    // [.., n, c] with the axis next to the complex axis, flattened to rows of n·c.
    let (xm, inv) = move_axis(l, x, ax, r - 2)?;
    let ms = l.shape(xm);
    let flat: Vec<usize> = ms[..r - 2].iter().copied().chain([rows]).collect();
    let xf = l.reshape(xm, &flat)?;
    let y = times_const(l, xf, w, rows, cols)?;
    let ys: Vec<usize> = ms[..r - 2].iter().copied().chain([k_out, co]).collect();
    let y = l.reshape(y, &ys)?;
    let y = undo_move(l, y, &inv)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// STFT (opset 17): frames of `frame_length` every `frame_step`, times the window, then a
/// DFT, as one strided Conv whose 2·bins output channels are the window's cos/sin rows.
fn stft(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let x = l.in_t(n, 0)?;
    let s = l.shape(x);
    if s.len() != 3 || !(s[2] == 1 || s[2] == 2) {
        bail!("STFT: the signal must be [batch, length, 1 or 2], got {s:?}");
    }
    let (batch, sig_len, c) = (s[0], s[1], s[2]);
    let step = positive(scalar_int(l, n, 1, "frame_step")?, "frame_step", "STFT")?;
    let window = l.opt_host(n, 2)?.map(|h| h.to_f32());
    let fl = match (n.input.get(3).filter(|i| !i.is_empty()), &window) {
        (Some(_), _) => positive(scalar_int(l, n, 3, "frame_length")?, "frame_length", "STFT")?,
        (None, Some(w)) => w.len(),
        (None, None) => bail!("STFT needs a window or a frame_length"),
    };
    let window = window.unwrap_or_else(|| vec![1.0; fl]);
    if window.len() != fl {
        bail!(
            "STFT: window of {} values for frame_length {fl}",
            window.len()
        );
    }
    if fl > sig_len {
        bail!("STFT: frame_length {fl} is longer than the signal ({sig_len})");
    }
    let onesided = Attrs(n).int("onesided", 1) != 0;
    let bins = if onesided { fl / 2 + 1 } else { fl };
    if (2 * bins).saturating_mul(c * fl) > 1 << 26 {
        bail!("STFT: a {fl}-point frame is too large for cairn's matrix form");
    }
    // OIHW weights [2·bins, c, 1, fl]: channel 2k is the real part of bin k, 2k+1 the
    // imaginary part.
    let mut w = vec![0f32; 2 * bins * c * fl];
    for k in 0..bins {
        for (t, &win) in window.iter().enumerate() {
            let (cs, sn) = twiddle(k, t, fl);
            let win = f64::from(win);
            let at = |o: usize, ci: usize| ((o * c) + ci) * fl + t;
            w[at(2 * k, 0)] = (win * cs) as f32;
            w[at(2 * k + 1, 0)] = (-win * sn) as f32;
            if c == 2 {
                w[at(2 * k, 1)] = (win * sn) as f32;
                w[at(2 * k + 1, 1)] = (win * cs) as f32;
            }
        }
    }
    let xt = l.transpose(x, &[0, 2, 1])?;
    let x4 = l.reshape(xt, &[batch, c, 1, sig_len])?;
    let wname = format!("{}:basis", l.node_name);
    let wt = l.g.add_f32(wname, vec![2 * bins, c, 1, fl], &w);
    let params = vec![1, step as i32, 0, 0, 0, 0, 1, 1, 1, INF_BITS.0, INF_BITS.1];
    let y = l.op(OpKind::Conv, vec![Some(x4), Some(wt), None], params, &[])?;
    let frames = l.shape(y)[3];
    let y = l.reshape(y, &[batch, bins, 2, frames])?;
    let y = l.transpose(y, &[0, 3, 1, 2])?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

fn window(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let size = scalar_int(l, n, 0, "size")?;
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s <= 1 << 24)
        .ok_or_else(|| anyhow!("{}: size {size} out of range", n.op_type))?;
    let d = if a.int("periodic", 1) != 0 {
        size as f64
    } else {
        size as f64 - 1.0
    };
    let pi = core::f64::consts::PI;
    let v: Vec<f64> = (0..size)
        .map(|i| {
            let i = i as f64;
            match n.op_type.as_str() {
                "HannWindow" => (i * pi / d).sin().powi(2),
                "HammingWindow" => 25.0 / 46.0 - (1.0 - 25.0 / 46.0) * (i * pi * 2.0 / d).cos(),
                _ => 0.42 - 0.5 * (i * pi * 2.0 / d).cos() + 0.08 * (i * pi * 4.0 / d).cos(),
            }
        })
        .collect();
    let float = is_float_type(a.int("output_datatype", 1));
    out_const(l, n, vec![size], v, float);
    Ok(())
}

/// MelWeightMatrix as the ONNX reference computes it: triangles over mel-spaced bins,
/// edges rounded down to spectrogram bins.
fn mel_weight_matrix(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let mels = positive(
        scalar_int(l, n, 0, "num_mel_bins")?,
        "num_mel_bins",
        "MelWeightMatrix",
    )?;
    let dft_len = positive(
        scalar_int(l, n, 1, "dft_length")?,
        "dft_length",
        "MelWeightMatrix",
    )?;
    let rate = scalar_int(l, n, 2, "sample_rate")?;
    if rate <= 0 {
        bail!("MelWeightMatrix: sample_rate {rate} must be positive");
    }
    let lo = scalar_f32(l, n, 3, "lower_edge_hertz")?;
    let hi = scalar_f32(l, n, 4, "upper_edge_hertz")?;
    let spec_bins = dft_len / 2 + 1;
    if mels.saturating_mul(spec_bins) > 1 << 26 {
        bail!("MelWeightMatrix: {mels}×{spec_bins} is too large");
    }
    let mel = |hz: f64| 2595.0 * (1.0 + hz / 700.0).log10();
    let (lm, hm) = (mel(lo), mel(hi));
    let step = (hm - lm) / (mels + 2) as f64;
    let edges: Vec<i64> = (0..mels + 2)
        .map(|i| {
            let f = 700.0 * (10f64.powf((i as f64 * step + lm) / 2595.0) - 1.0);
            ((dft_len as f64 + 1.0) * f / rate as f64).floor() as i64
        })
        .collect();
    let mut out = vec![0f64; spec_bins * mels];
    let mut set = |j: i64, i: usize, v: f64| -> Result<()> {
        let j = usize::try_from(j)
            .ok()
            .filter(|&j| j < spec_bins)
            .ok_or_else(|| anyhow!("MelWeightMatrix: an edge falls outside the {spec_bins} spectrogram bins (upper_edge_hertz above the Nyquist frequency?)"))?;
        out[j * mels + i] = v;
        Ok(())
    };
    for i in 0..mels {
        let (left, center, right) = (edges[i], edges[i + 1], edges[i + 2]);
        let up = center - left;
        if up == 0 {
            set(center, i, 1.0)?;
        } else {
            for j in left..=center {
                set(j, i, (j - left) as f64 / up as f64)?;
            }
        }
        let down = right - center;
        for j in center..right {
            set(j, i, (right - j) as f64 / down as f64)?;
        }
    }
    let float = is_float_type(Attrs(n).int("output_datatype", 1));
    out_const(l, n, vec![spec_bins, mels], out, float);
    Ok(())
}

fn eye_like(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let (shape, in_float) = match l.val(&n.input[0])? {
        Val::Int(h) => (h.shape.clone(), false),
        Val::T(t) | Val::FakeQ { t, .. } => (l.shape(t), l.g.tensors[t].dtype != DType::I32),
        Val::Absent => bail!("EyeLike: the input is absent"),
    };
    if shape.len() != 2 {
        bail!("EyeLike: the input must have rank 2, shape {shape:?}");
    }
    let a = Attrs(n);
    let k = a.int("k", 0);
    let float = if a.has("dtype") {
        is_float_type(a.int("dtype", 1))
    } else {
        in_float
    };
    let (rows, cols) = (shape[0], shape[1]);
    let v: Vec<f64> = (0..rows * cols)
        .map(|p| f64::from(((p % cols) as i64 - (p / cols) as i64) == k))
        .collect();
    out_const(l, n, shape, v, float);
    Ok(())
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * shape[i + 1];
    }
    st
}

/// ScatterND (`nd`) or ScatterElements with constant indices. The map from each update to
/// its output element is built here. Without a reduction the op is one Gather from the data
/// and updates laid end to end (later indices win on duplicates, as in the ONNX reference).
/// With `add`, `mul`, `max` or `min`, layer `d` gathers the `d`-th update of every element
/// (the reduction's identity where there is none) and combines it with the running result,
/// so an element updated k times costs k layers, in index order.
fn scatter(l: &mut Lower, n: &NodeProto, nd: bool) -> Result<()> {
    let a = Attrs(n);
    let red = a.string("reduction", "none");
    let combine = match red.as_str() {
        "none" => None,
        "add" => Some((OpKind::Add, None, 0.0f32)),
        "mul" => Some((OpKind::Mul, None, 1.0)),
        "max" => Some((OpKind::Binary, Some(BinaryFn::Max), f32::NEG_INFINITY)),
        "min" => Some((OpKind::Binary, Some(BinaryFn::Min), f32::INFINITY)),
        other => bail!("{}: reduction '{other}' is not supported", n.op_type),
    };
    let dtype = dtype_of(l, &n.input[0])?;
    let data = typed_t(l, &n.input[0], dtype)?;
    let upd = typed_t(l, &n.input[2], dtype)?;
    let idx = l.host(&n.input[1]).map_err(|_| {
        anyhow!(
            "{}: the indices are computed at run time; cairn needs them at convert time",
            n.op_type
        )
    })?;
    let (ds, us) = (l.shape(data), l.shape(upd));
    let iv = idx.to_i64();
    let total: usize = ds.iter().product();
    let n_upd: usize = us.iter().product();
    let dst = strides(&ds);
    // (output element, update index) in index order.
    let mut hits: Vec<(usize, usize)> = Vec::with_capacity(n_upd);
    if total == 0 || n_upd == 0 || total + n_upd > i32::MAX as usize {
        bail!(
            "{}: data of {total} and updates of {n_upd} values are out of range",
            n.op_type
        );
    }
    let bad = || anyhow!("{}: an index is out of range", n.op_type);
    if nd {
        let is = &idx.shape;
        let q = *is
            .last()
            .ok_or_else(|| anyhow!("ScatterND: scalar indices"))?;
        if q == 0 || q > ds.len() {
            bail!(
                "ScatterND: index tuples of {q} for data of rank {}",
                ds.len()
            );
        }
        let slice: usize = ds[q..].iter().product();
        let tuples = iv.len() / q;
        if tuples * slice != n_upd {
            bail!("ScatterND: updates of shape {us:?} do not match indices {is:?} and data {ds:?}");
        }
        for t in 0..tuples {
            let mut base = 0usize;
            for j in 0..q {
                let d = ds[j] as i64;
                let v = iv[t * q + j];
                let v = if v < 0 { v + d } else { v };
                if !(0..d).contains(&v) {
                    return Err(bad());
                }
                base += v as usize * dst[j];
            }
            for e in 0..slice {
                hits.push((base + e, t * slice + e));
            }
        }
    } else {
        let r = ds.len();
        let ax = axis(a.int("axis", 0), r, &n.op_type)?;
        if idx.shape != us || us.len() != r {
            bail!(
                "{}: indices {:?} and updates {us:?} must have the same shape, of the data's rank",
                n.op_type,
                idx.shape
            );
        }
        let ist = strides(&us);
        for (p, &v) in iv.iter().enumerate() {
            let d = ds[ax] as i64;
            let v = if v < 0 { v + d } else { v };
            if !(0..d).contains(&v) {
                return Err(bad());
            }
            let mut at = 0usize;
            for j in 0..r {
                let c = (p / ist[j]) % us[j];
                if c >= ds[j] && j != ax {
                    return Err(bad());
                }
                at += if j == ax { v as usize } else { c } * dst[j];
            }
            hits.push((at, p));
        }
    }
    let df = l.reshape(data, &[total])?;
    let uf = l.reshape(upd, &[n_upd])?;
    let gather = |l: &mut Lower, src: usize, map: &[i32], tag: usize| -> Result<usize> {
        let mname = format!("{}:map{tag}", l.node_name);
        let m = l.g.add_i32(mname, vec![map.len()], map);
        op_as(
            l,
            OpKind::Gather,
            vec![Some(src), Some(m)],
            vec![0, 0],
            &[],
            dtype,
        )
    };
    let y = match combine {
        None => {
            let mut map: Vec<i32> = (0..total as i32).collect();
            for &(o, u) in &hits {
                map[o] = (total + u) as i32;
            }
            let both = op_as(
                l,
                OpKind::Concat,
                vec![Some(df), Some(uf)],
                vec![0],
                &[],
                dtype,
            )?;
            gather(l, both, &map, 0)?
        }
        Some((kind, f, ident)) => {
            if dtype == DType::I32 {
                bail!("{}: reduction '{red}' of integers is not supported (cairn computes on f32 and int8)", n.op_type);
            }
            // The updates, then the identity at index n_upd.
            let id =
                l.g.add_f32(format!("{}:identity", l.node_name), vec![1], &[ident]);
            let src = op_as(
                l,
                OpKind::Concat,
                vec![Some(uf), Some(id)],
                vec![0],
                &[],
                dtype,
            )?;
            let mut seen = vec![0usize; total];
            let mut layers: Vec<Vec<i32>> = Vec::new();
            for &(o, u) in &hits {
                let d = seen[o];
                seen[o] += 1;
                if layers.len() <= d {
                    layers.push(vec![n_upd as i32; total]);
                }
                layers[d][o] = u as i32;
            }
            let mut acc = df;
            for (d, map) in layers.iter().enumerate() {
                let g = gather(l, src, map, d)?;
                acc = match f {
                    Some(f) => {
                        let p = vec![f as i32];
                        op_as(l, kind, vec![Some(acc), Some(g)], p, &[], dtype)?
                    }
                    None => l.binary(kind, acc, g)?,
                };
            }
            acc
        }
    };
    let y = op_as(l, OpKind::Reshape, vec![Some(y)], vec![], &ds, dtype)?;
    let v = as_val(l, y);
    l.out(n, 0, v);
    Ok(())
}

/// CumSum along a constant axis (`exclusive`, `reverse`): on the host for constants, else
/// a FullyConnected with a constant 0/1 triangular matrix over the axis moved last.
fn cum_sum(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let (excl, rev) = (a.int("exclusive", 0) != 0, a.int("reverse", 0) != 0);
    let ax_raw = scalar_int(l, n, 1, "axis")?;
    let contributes = |i: usize, j: usize| match (rev, excl) {
        (false, false) => i <= j,
        (false, true) => i < j,
        (true, false) => i >= j,
        (true, true) => i > j,
    };
    if let Ok(h) = l.host(&n.input[0]) {
        let s = h.shape.clone();
        let ax = axis(ax_raw, s.len(), "CumSum")?;
        let st = strides(&s);
        let float = h.is_float();
        let src: Vec<f64> = if float {
            h.to_f32().iter().map(|&v| f64::from(v)).collect()
        } else {
            h.to_i64().iter().map(|&v| v as f64).collect()
        };
        let mut out = vec![0f64; src.len()];
        for (p, o) in out.iter_mut().enumerate() {
            let j = (p / st[ax]) % s[ax];
            let base = p - j * st[ax];
            *o = (0..s[ax])
                .filter(|&i| contributes(i, j))
                .map(|i| src[base + i * st[ax]])
                .sum();
        }
        out_const(l, n, s, out, float);
        return Ok(());
    }
    let x = l.in_t(n, 0)?;
    if l.g.tensors[x].dtype == DType::I32 {
        bail!("CumSum of a run-time integer tensor is not supported (cairn computes on f32 and int8; cast it to float first)");
    }
    let s = l.shape(x);
    let r = s.len();
    let ax = axis(ax_raw, r, "CumSum")?;
    let len = s[ax];
    if len.saturating_mul(len) > 1 << 26 {
        bail!("CumSum over {len} values is too long for cairn's matrix form");
    }
    let mut w = vec![0f32; len * len];
    for i in 0..len {
        for j in 0..len {
            if contributes(i, j) {
                w[i * len + j] = 1.0;
            }
        }
    }
    let (xm, inv) = move_axis(l, x, ax, r - 1)?;
    let y = times_const(l, xm, w, len, len)?;
    let y = undo_move(l, y, &inv)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// OneHot: `values[1]` where the index (negative ones counted from `depth`) equals the
/// position along the new axis, `values[0]` elsewhere.
fn one_hot(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let depth = l
        .host(&n.input[1])
        .map_err(|_| {
            anyhow!("OneHot: depth is computed at run time; cairn needs it at convert time")
        })?
        .to_f32();
    let depth = match depth.as_slice() {
        [d] if *d >= 1.0 && *d <= (1 << 24) as f32 => *d as usize,
        _ => bail!("OneHot: depth must be one positive value"),
    };
    let values = l.host(&n.input[2])?;
    if values.len() != 2 {
        bail!("OneHot: values must hold [off, on]");
    }
    let float = values.is_float();
    let vf = values.to_f32();
    let (off, on) = (vf[0], vf[1]);
    let idx_dtype = dtype_of(l, &n.input[0])?;
    let idx = typed_t(l, &n.input[0], idx_dtype)?;
    let is = l.shape(idx);
    let r = is.len() + 1;
    let ax = axis(Attrs(n).int("axis", -1), r, "OneHot")?;
    let mut os = is.clone();
    os.insert(ax, depth);
    // The index with a unit axis where the one-hot axis goes, and the positions along it.
    let mut us = is.clone();
    us.insert(ax, 1);
    let iu = op_as(l, OpKind::Reshape, vec![Some(idx)], vec![], &us, idx_dtype)?;
    let mut rs = vec![1; r];
    rs[ax] = depth;
    let range = |l: &mut Lower, shift: i64| -> usize {
        let v: Vec<i64> = (0..depth as i64).map(|i| i + shift).collect();
        let name = format!("{}:range{shift}", l.node_name);
        if idx_dtype == DType::I32 {
            let v: Vec<i32> = v.iter().map(|&x| x as i32).collect();
            l.g.add_i32(name, rs.clone(), &v)
        } else {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            l.g.add_f32(name, rs.clone(), &v)
        }
    };
    let eq = |l: &mut Lower, b: usize| {
        op_as(
            l,
            OpKind::Binary,
            vec![Some(iu), Some(b)],
            vec![BinaryFn::Equal as i32],
            &[],
            DType::I32,
        )
    };
    let pos = range(l, 0);
    let neg = range(l, -(depth as i64));
    let (m1, m2) = (eq(l, pos)?, eq(l, neg)?);
    let mask = op_as(
        l,
        OpKind::Binary,
        vec![Some(m1), Some(m2)],
        vec![BinaryFn::Or as i32],
        &[],
        DType::I32,
    )?;
    let (dt, a, b) = if float {
        let a = l.scalar(on);
        let b = l.scalar(off);
        (DType::F32, a, b)
    } else {
        let mk = |l: &mut Lower, v: f32, tag: &str| {
            l.g.add_i32(format!("{}:{tag}", l.node_name), vec![], &[v as i32])
        };
        let a = mk(l, on, "on");
        let b = mk(l, off, "off");
        (DType::I32, a, b)
    };
    let y = op_as(
        l,
        OpKind::Where,
        vec![Some(mask), Some(a), Some(b)],
        vec![],
        &os,
        dt,
    )?;
    if l.shape(y) != os {
        bail!("OneHot: output shape {:?}, expected {os:?}", l.shape(y));
    }
    let v = as_val(l, y);
    l.out(n, 0, v);
    Ok(())
}

/// LRN across channels: `x / (bias + α/size · Σ x²)^β`, the sum over a window of `size`
/// channels (a 1×1 Conv with a constant band matrix).
fn lrn(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let size = positive(a.int("size", 0), "size", "LRN")?;
    let (alpha, beta, bias) = (
        a.float("alpha", 1e-4),
        a.float("beta", 0.75),
        a.float("bias", 1.0),
    );
    let x = l.in_t(n, 0)?;
    let s = l.shape(x);
    if s.len() < 3 {
        bail!("LRN: the input must have rank 3 or more, shape {s:?}");
    }
    let c = s[1];
    if c == 0 || c.saturating_mul(c) > 1 << 24 {
        bail!("LRN: {c} channels is too many");
    }
    let rest: usize = s[2..].iter().product();
    let x4 = l.reshape(x, &[s[0], c, 1, rest])?;
    let (below, above) = ((size - 1) / 2, (size - 1).div_ceil(2));
    let mut w = vec![0f32; c * c];
    for o in 0..c {
        for i in o.saturating_sub(below)..=(o + above).min(c - 1) {
            w[o * c + i] = alpha / size as f32;
        }
    }
    let wname = format!("{}:band", l.node_name);
    let wt = l.g.add_f32(wname, vec![c, c, 1, 1], &w);
    let sq = l.binary(OpKind::Mul, x4, x4)?;
    let params = vec![1, 1, 0, 0, 0, 0, 1, 1, 1, INF_BITS.0, INF_BITS.1];
    let sum = l.op(OpKind::Conv, vec![Some(sq), Some(wt), None], params, &[])?;
    let b = l.scalar(bias);
    let d = l.binary(OpKind::Add, sum, b)?;
    let d = l.unary(d, UnaryFn::Pow, beta, 0.0)?;
    let y = l.binary(OpKind::Div, x4, d)?;
    let y = l.reshape(y, &s)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// RMSNormalization (opset 23): `x / sqrt(mean(x²) + ε) · scale` over the axes from `axis`.
fn rms_norm(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let x = l.in_t(n, 0)?;
    let scale = l.in_t(n, 1)?;
    let r = l.shape(x).len();
    let ax = axis(a.int("axis", -1), r, "RMSNormalization")?;
    if r > 30 {
        bail!("RMSNormalization: rank {r} is too high");
    }
    let mask = ((1i32 << r) - 1) & !((1i32 << ax) - 1);
    let sq = l.binary(OpKind::Mul, x, x)?;
    let ms = l.op(OpKind::ReduceMean, vec![Some(sq)], vec![mask, 1], &[])?;
    let eps = l.scalar(a.float("epsilon", 1e-5));
    let ms = l.binary(OpKind::Add, ms, eps)?;
    let rms = l.unary(ms, UnaryFn::Sqrt, 0.0, 0.0)?;
    let y = l.binary(OpKind::Div, x, rms)?;
    let y = l.binary(OpKind::Mul, y, scale)?;
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// Compress with a condition known at convert time: a Gather of the kept positions (of the
/// flattened input when there is no axis).
fn compress(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let cond = l
        .host(&n.input[1])
        .map_err(|_| {
            anyhow!(
                "Compress: the condition is computed at run time; cairn needs it at convert time"
            )
        })?
        .to_i64();
    let dtype = dtype_of(l, &n.input[0])?;
    let x = typed_t(l, &n.input[0], dtype)?;
    let s = l.shape(x);
    let a = Attrs(n);
    let (x, ax) = if a.has("axis") {
        (x, axis(a.int("axis", 0), s.len(), "Compress")?)
    } else {
        let total: usize = s.iter().product();
        (
            op_as(l, OpKind::Reshape, vec![Some(x)], vec![], &[total], dtype)?,
            0,
        )
    };
    let dim = l.shape(x)[ax];
    if cond.len() > dim {
        bail!(
            "Compress: a condition of {} values for an axis of {dim}",
            cond.len()
        );
    }
    let keep: Vec<i32> = (0..cond.len())
        .filter(|&i| cond[i] != 0)
        .map(|i| i as i32)
        .collect();
    if keep.is_empty() {
        bail!("Compress keeps nothing: cairn tensors cannot be empty");
    }
    let iname = format!("{}:keep", l.node_name);
    let idx = l.g.add_i32(iname, vec![keep.len()], &keep);
    let y = op_as(
        l,
        OpKind::Gather,
        vec![Some(x), Some(idx)],
        vec![ax as i32, 0],
        &[],
        dtype,
    )?;
    let v = as_val(l, y);
    l.out(n, 0, v);
    Ok(())
}

//! STFT front ends as FFTs: a one-channel 1-D f32 conv whose weights are a windowed DFT
//! basis (each output channel `o` is `s_o · win[t] · cos(2π f_o t / N)` or
//! `s_o · win[t] · sin(2π f_o t / N)` over the `N` taps, or all zero) is an STFT written as a
//! conv, as exporters of audio models write it (silero VAD, openWakeWord's mel front end).
//! Its `oc · N` multiply-adds per frame are an `N`-point FFT of the windowed frame:
//! `O(N log N)` instead of `O(oc · N)`, 15–30× fewer operations for 257 bins of 512 taps.
//!
//! Recognition (once per weight tensor, kept in the `prepack` cache, so only on hosts with
//! a cache active: a `HostModel` run): each row's real DFT (in f64) names its candidate bins
//! and kinds (the largest cos and sin projections); the window is read off the rows whose
//! largest projection stands clear of the others, at each tap from the row whose basis is
//! largest there; then every row must equal its best candidate times that window to within
//! `2^-20` of the largest weight (`TOL`), else the conv is not an STFT and runs as before.
//! The same bins in any order, negated rows, bins above N/2 (`cos(2π(N−f)t/N)` is bin f's),
//! zero rows, any window (Hann, Hamming, rectangular, ...) and any stride and padding are
//! covered.
//!
//! Compute: frames are gathered (times the window, zero outside the input) two to a complex
//! lane (one as the real part, one as the imaginary), `L` lanes a step, in bit-reversed
//! order; a radix-2 decimation-in-time FFT over all lanes at once (loops the compiler
//! vectorizes: compiled with AVX2 and FMA where the CPU has both, the butterflies then
//! fused multiply-adds; NEON's `fmla` on aarch64); then each output channel takes its
//! bin's real or imaginary part of the two frames' spectra, plus the bias, clamped, and
//! the frames of one image go out as runs.
//!
//! Accuracy contract: the weights used are the recognized basis, within `TOL · max|W|` of
//! the model's; the FFT's rounding is `O(ε log N)` of the frame's norm. Together within the
//! f32 tolerance of `runtime/kernels/tests/exact_f32.rs` (`REL · Σ|w·x| + ABS`), which
//! checks it on random STFT convs. Powers of two from 64 to 4096 taps; one thread.

extern crate std;
use std::vec::Vec;

use crate::conv::Geo;

use super::Gemm;

/// Frames per FFT step: `L` complex lanes, each two real frames.
const L: usize = 8;
/// Taps per gather block (a divisor of every frame length taken).
const TB: usize = 64;
/// Largest basis error accepted, relative to the largest weight.
const TOL: f64 = 1.0 / (1u32 << 20) as f64;
/// Smallest and largest frame.
const N_MIN: usize = 64;
const N_MAX: usize = 4096;

/// Row kinds in a plan.
const ZERO: i32 = 0;
const COS: i32 = 1;
const SIN: i32 = 2;

/// Whether the conv of `g` has the STFT shape this path takes (weights not yet looked at):
/// one input channel, a 1-D kernel of a power of two taps, enough output channels for the
/// FFT to pay, on a host whose active weight cache keeps the weights `w`.
pub(super) fn fits(g: &Geo, w: &[f32]) -> bool {
    g.g == 1
        && g.c == 1
        && g.h == 1
        && g.kh == 1
        && g.oh == 1
        && g.dw == 1
        && g.kw.is_power_of_two()
        && (N_MIN..=N_MAX).contains(&g.kw)
        && g.oc >= 4 * g.kw.trailing_zeros() as usize
        && crate::prepack::keeps(w.as_ptr() as usize)
}

/// The conv of `g` as FFTs when its weights are a DFT basis (true), else nothing done
/// (false). The caller checked `fits` and the slice lengths.
pub(super) fn conv(g: &Geo, gm: &Gemm<'_>, x: &[f32], y: &mut [f32]) -> bool {
    let n = g.kw;
    let key = (
        gm.w.as_ptr() as usize,
        gm.oc * n,
        0x6000_0000 | n.trailing_zeros(),
    );
    let mut scratch = Vec::new();
    crate::prepack::with_packed(
        key,
        &mut scratch,
        |v| plan(&gm.w[..gm.oc * n], gm.oc, n, v),
        |p| {
            if p[0] == 0 {
                return false;
            }
            let (codes, rest) = p[1..].split_at(gm.oc);
            let (win, rest) = rest.split_at(n);
            let (tw, rev) = rest.split_at(n);
            let plan = Plan {
                n,
                codes,
                win,
                tw,
                rev,
            };
            run(g, gm, &plan, x, y);
            crate::paths::note(crate::paths::Path::DftConv);
            true
        },
    )
}

/// A recognized basis, as the `prepack` cache holds it (f32 values as their bits): per row
/// `f | kind << 16 | sign << 31`, the window, the FFT's twiddles (`cos(2πk/N)` then
/// `sin(2πk/N)`, k < N/2) and the bit-reversal permutation of `0..N`.
struct Plan<'a> {
    n: usize,
    codes: &'a [i32],
    win: &'a [i32],
    tw: &'a [i32],
    rev: &'a [i32],
}

/// The f32 whose bits a plan holds.
#[inline(always)]
fn f32_of(bits: i32) -> f32 {
    f32::from_bits(bits as u32)
}

/// Recognize `w` (`oc` rows of `n` taps) into `v`: `[1, codes.., window bits.., twiddle
/// bits.., bit reversal..]`, or `[0]` when it is not a windowed DFT basis.
fn plan(w: &[f32], oc: usize, n: usize, v: &mut Vec<i32>) {
    v.clear();
    v.push(0);
    let bits = n.trailing_zeros();
    let rev: Vec<usize> = (0..n)
        .map(|t| t.reverse_bits() >> (usize::BITS - bits))
        .collect();
    let Some((codes, win)) = recognize(w, oc, n, &rev) else {
        return;
    };
    v[0] = 1;
    v.extend(codes);
    v.extend(win.iter().map(|&a| (a as f32).to_bits() as i32));
    let step = core::f64::consts::TAU / n as f64;
    v.extend((0..n / 2).map(|k| ((k as f64 * step).cos() as f32).to_bits() as i32));
    v.extend((0..n / 2).map(|k| ((k as f64 * step).sin() as f32).to_bits() as i32));
    v.extend(rev.iter().map(|&r| r as i32));
}

/// The row codes and window of `w` if it is a windowed DFT basis (see the module doc);
/// `rev` is the bit-reversal permutation of `0..n`.
fn recognize(w: &[f32], oc: usize, n: usize, rev: &[usize]) -> Option<(Vec<i32>, Vec<f64>)> {
    let max = w.iter().fold(0f64, |m, &a| m.max((a as f64).abs()));
    if !(max > 0.0 && max.is_finite()) {
        return None;
    }
    let tol = max * TOL;
    let bins = n / 2 + 1;
    let step = core::f64::consts::TAU / n as f64;
    let cos: Vec<f64> = (0..n).map(|m| (m as f64 * step).cos()).collect();
    // Basis j (< bins: cos of bin j; else sin of bin j − bins) at tap t.
    let trig = |j: usize, t: usize| {
        let (f, s) = if j < bins {
            (j, 0)
        } else {
            (j - bins, n / 4 * 3)
        };
        // sin(θ) = cos(θ − π/2) = cos(θ + 3π/2): a quarter turn is n/4 taps of phase.
        cos[(f * t + s) % n]
    };
    // Per row: the three largest projections (index, value), or none for a zero row.
    let mut cands: Vec<Option<[(usize, f64); 3]>> = Vec::with_capacity(oc);
    let (mut re, mut im) = (std::vec![0f64; n], std::vec![0f64; n]);
    for row in w.chunks_exact(n).take(oc) {
        if row.iter().all(|&a| (a as f64).abs() <= tol) {
            cands.push(None);
            continue;
        }
        for (t, &a) in row.iter().enumerate() {
            re[t] = a as f64;
            im[t] = 0.0;
        }
        fft64(&mut re, &mut im, &cos, rev);
        // Projections on cos (Re X) and sin (−Im X) of every bin.
        let mut top = [(0usize, 0f64); 3];
        for j in 0..2 * bins {
            let p = if j < bins { re[j] } else { -im[j - bins] };
            if p.abs() > top[2].1.abs() {
                top[2] = (j, p);
                top.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
            }
        }
        cands.push(Some(top));
    }
    // The window, from rows whose largest projection stands clear (1.5× the next).
    let (mut best, mut win) = (std::vec![0f64; n], std::vec![0f64; n]);
    for (row, c) in w.chunks_exact(n).zip(&cands) {
        let Some(top) = c else { continue };
        if top[0].1.abs() < 1.5 * top[1].1.abs() {
            continue;
        }
        let (j, p) = top[0];
        for t in 0..n {
            let b = trig(j, t) * p.signum();
            if b.abs() * p.abs() > best[t] {
                best[t] = b.abs() * p.abs();
                win[t] = row[t] as f64 / b;
            }
        }
    }
    // Every row: its best candidate times the window, within the tolerance.
    let mut codes = Vec::with_capacity(oc);
    for (row, c) in w.chunks_exact(n).zip(&cands) {
        let Some(top) = c else {
            codes.push(ZERO);
            continue;
        };
        let err = |&(j, p): &(usize, f64)| {
            (0..n).fold(0f64, |e, t| {
                e.max((row[t] as f64 - p.signum() * trig(j, t) * win[t]).abs())
            })
        };
        let (e, &(j, p)) = top
            .iter()
            .map(|c| (err(c), c))
            .min_by(|a, b| a.0.total_cmp(&b.0))?;
        if e > tol || p == 0.0 {
            return None;
        }
        let (f, kind) = if j < bins { (j, COS) } else { (j - bins, SIN) };
        codes.push(f as i32 | kind << 16 | ((p < 0.0) as i32) << 31);
    }
    Some((codes, win))
}

/// In-place forward DFT of `n` (a power of two) complex values, f64 (recognition only);
/// `cos` holds `cos(2πm/n)` for m < n, `rev` the bit-reversal permutation.
fn fft64(re: &mut [f64], im: &mut [f64], cos: &[f64], rev: &[usize]) {
    let n = re.len();
    for (i, &j) in rev.iter().enumerate() {
        if j > i {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let stride = n / len;
        for s in (0..n).step_by(len) {
            for k in 0..len / 2 {
                // e^{−2πik/len}: cos(2πm/n) − i·sin(2πm/n), m = k·stride (sin as a
                // quarter turn back: cos(2π(m + 3n/4)/n)).
                let m = k * stride;
                let (c, si) = (cos[m], -cos[(m + 3 * n / 4) % n]);
                let (a, b) = (s + k, s + k + len / 2);
                let tr = c * re[b] - si * im[b];
                let ti = c * im[b] + si * re[b];
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len *= 2;
    }
}

std::thread_local! {
    /// The lanes of one FFT step: real parts then imaginary parts, `n` each.
    static LANES: core::cell::RefCell<Vec<[f32; L]>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// Every frame of `g` through `plan`: output channel `o` of frame (image `b`, pixel `p`) at
/// `y[(b·oc + o)·ow + p]`.
fn run(g: &Geo, gm: &Gemm<'_>, plan: &Plan<'_>, x: &[f32], y: &mut [f32]) {
    let n = plan.n;
    let mut z = LANES.with(|z| core::mem::take(&mut *z.borrow_mut()));
    z.clear();
    z.resize(2 * n, [0.0; L]);
    #[cfg(target_arch = "x86_64")]
    if crate::paths::avx2_fma() {
        // SAFETY: AVX2 and FMA are present (checked above).
        unsafe { with_fma(|| frames::<true>(g, gm, plan, x, y, &mut z)) };
        LANES.with(|c| *c.borrow_mut() = z);
        return;
    }
    // NEON has fused multiply-adds; an x86_64 CPU without FMA would call a library fma.
    crate::fast::vectorized(
        #[inline(always)]
        || frames::<{ cfg!(target_arch = "aarch64") }>(g, gm, plan, x, y, &mut z),
    );
    LANES.with(|c| *c.borrow_mut() = z);
}

/// Run `f` in a function compiled with AVX2 and FMA, so the loops it inlines vectorize
/// 8 lanes wide with fused multiply-adds.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `run`'s work, in batches of `2L` frames, with the lanes `z` (`2n` rows); the FFT's
/// butterflies with fused multiply-adds when `FMA`.
#[inline(always)]
fn frames<const FMA: bool>(
    g: &Geo,
    gm: &Gemm<'_>,
    plan: &Plan<'_>,
    x: &[f32],
    y: &mut [f32],
    z: &mut [[f32; L]],
) {
    let n = plan.n;
    let frames = g.n * g.ow;
    let (zr, zi) = z.split_at_mut(n);
    for q0 in (0..frames).step_by(2 * L) {
        // Frame q0 + i (i < L in lane i's real part, else lane i − L's imaginary part):
        // tap t at x[base + t] when lo ≤ base + t < hi (its image's row), else zero;
        // `runs` are the frames' outputs as runs of one image's consecutive pixels: (first
        // frame, its first output, frames). Frames past the last read nothing (an empty
        // row: every tap zero) and write nothing.
        let mut base = [0isize; 2 * L];
        let mut lo = [0isize; 2 * L];
        let mut hi = [0isize; 2 * L];
        let mut runs = [(0usize, 0usize, 0usize); 2 * L];
        let mut nruns = 0;
        let mut inside = true;
        for i in 0..2 * L {
            let q = q0 + i;
            if q >= frames {
                inside = false;
                continue;
            }
            let (img, p) = (q / g.ow, q % g.ow);
            if p == 0 || i == 0 {
                runs[nruns] = (i, img * gm.oc * g.ow + p, 0);
                nruns += 1;
            }
            runs[nruns - 1].2 += 1;
            let row = (img * g.w) as isize;
            base[i] = row + (p * g.sw) as isize - g.pl;
            (lo[i], hi[i]) = (row, row + g.w as isize);
            inside &= base[i] >= lo[i] && base[i] + n as isize <= hi[i];
        }
        let runs = &runs[..nruns];
        // Taps in blocks of `TB`: each frame's taps (windowed) down a column of `blk`,
        // then the block's rows into the lanes in bit-reversed order.
        let mut blk = [[0f32; 2 * L]; TB];
        for t0 in (0..n).step_by(TB) {
            for (i, &b) in base.iter().enumerate() {
                let win = &plan.win[t0..t0 + TB];
                let a = b + t0 as isize;
                if inside || (a >= lo[i] && a + TB as isize <= hi[i]) {
                    let src = &x[a as usize..a as usize + TB];
                    for ((row, &v), &w) in blk.iter_mut().zip(src).zip(win) {
                        row[i] = f32_of(w) * v;
                    }
                } else {
                    for (t, (row, &w)) in blk.iter_mut().zip(win).enumerate() {
                        let at = a + t as isize;
                        let v = if (lo[i]..hi[i]).contains(&at) {
                            x[at as usize]
                        } else {
                            0.0
                        };
                        row[i] = f32_of(w) * v;
                    }
                }
            }
            for (row, &r) in blk.iter().zip(&plan.rev[t0..t0 + TB]) {
                zr[r as usize].copy_from_slice(&row[..L]);
                zi[r as usize].copy_from_slice(&row[L..]);
            }
        }
        fft::<FMA>(zr, zi, plan.tw);
        for (o, &code) in plan.codes.iter().enumerate() {
            let f = (code & 0xFFFF) as usize;
            let g_ = (n - f) % n;
            let sign = if code < 0 { -0.5f32 } else { 0.5 };
            let bias = gm.bias.map_or(0.0, |b| b[o]);
            let (a, b): ([f32; L], [f32; L]) = match (code >> 16) & 3 {
                COS => (
                    core::array::from_fn(|j| zr[f][j] + zr[g_][j]),
                    core::array::from_fn(|j| zi[f][j] + zi[g_][j]),
                ),
                SIN => (
                    core::array::from_fn(|j| zi[g_][j] - zi[f][j]),
                    core::array::from_fn(|j| zr[f][j] - zr[g_][j]),
                ),
                _ => ([0.0; L], [0.0; L]),
            };
            let v = |s: f32| (bias + sign * s).max(gm.lo).min(gm.hi);
            let mut vals = [0f32; 2 * L];
            vals[..L].copy_from_slice(&a.map(v));
            vals[L..].copy_from_slice(&b.map(v));
            for &(i, at, len) in runs {
                let at = at + o * g.ow;
                y[at..at + len].copy_from_slice(&vals[i..i + len]);
            }
        }
    }
}

/// In-place forward FFT of `L` lanes of `zr.len()` complex values (bit-reversed input).
#[inline(always)]
fn fft<const FMA: bool>(zr: &mut [[f32; L]], zi: &mut [[f32; L]], tw: &[i32]) {
    let n = zr.len();
    let (tc, ts) = tw.split_at(n / 2);
    let mut len = 2;
    while len <= n {
        let (half, stride) = (len / 2, n / len);
        for s in (0..n).step_by(len) {
            let (ra, rb) = zr[s..s + len].split_at_mut(half);
            let (ia, ib) = zi[s..s + len].split_at_mut(half);
            let rows = ra.iter_mut().zip(rb).zip(ia.iter_mut().zip(ib));
            for (k, ((ar, br), (ai, bi))) in rows.enumerate() {
                // w = e^{−2πik/len} = cos − i·sin of 2π(k·stride)/n.
                let (c, si) = (f32_of(tc[k * stride]), f32_of(ts[k * stride]));
                for j in 0..L {
                    let (tr, ti) = if FMA {
                        (
                            c.mul_add(br[j], si * bi[j]),
                            c.mul_add(bi[j], -(si * br[j])),
                        )
                    } else {
                        (c * br[j] + si * bi[j], c * bi[j] - si * br[j])
                    };
                    br[j] = ar[j] - tr;
                    bi[j] = ai[j] - ti;
                    ar[j] += tr;
                    ai[j] += ti;
                }
            }
        }
        len *= 2;
    }
}

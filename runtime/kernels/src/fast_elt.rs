//! Faster int8 element-wise paths, bit-exact with the reference kernels in `eltwise.rs` and
//! `quantize.rs` (tested in `runtime/kernels/tests/exact.rs`): Add and Mul over equal shapes
//! or with one operand constant along the innermost axes (a per-channel scale),
//! per-tensor QuantizeLinear, eight lanes at a time with AVX2 + FMA on x86_64, per-tensor
//! lookup tables 32 bytes at a time (`pshufb`), and per-tensor DequantizeLinear; on
//! aarch64 the same entries on NEON (`fast_elt/neon.rs`, sixteen bytes a step; counted
//! as `Path::EltNeon`).
//!
//! The vector code performs the reference's float operations one for one (the same fused
//! multiply-adds, the same separately rounded multiplies and adds, round half to even
//! through the default rounding mode), so the bytes are identical. Each entry returns
//! `None` when the op is not its case or the CPU lacks the instructions, and the caller
//! falls back to the reference.

use cairn_core::shape::broadcast_strides;
use cairn_core::{DType, ExecError, OpCall, OpKind, Quant, TensorMut};

use crate::eltwise::{constant_b_run, Arith};
use crate::util::qp;

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon;

/// The vector bodies of this CPU: AVX2 (checked at run time) on x86_64, NEON on aarch64,
/// and elsewhere a stub whose `available` is false.
#[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
use avx2 as simd;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
use neon as simd;

/// Count a NEON element-wise op (aarch64; nothing elsewhere: the x86 paths have counters
/// of their own where tests need them).
#[inline(always)]
fn note_simd() {
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    crate::paths::note(crate::paths::Path::EltNeon);
}

/// int8 Add/Mul through the vector path, or `None`.
pub fn binary_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    #[cfg(all(feature = "dsp", target_arch = "arm", target_abi = "eabihf"))]
    if let Some(r) = crate::dsp_elt::binary_i8(call, out) {
        return Some(r);
    }
    if !matches!(call.kind, OpKind::Add | OpKind::Mul) || !simd::available() {
        return None;
    }
    let (at, bt) = (call.req(0).ok()?, call.req(1).ok()?);
    let (a, b) = (at.i8s().ok()?, bt.i8s().ok()?);
    let ((sa_, za), (sb_, zb), (sy, zy)) = (qp(&at.info), qp(&bt.info), qp(&out.info));
    let shape = out.info.shape;
    let (lo, hi) = (call.param(0), call.param(1));
    let arith = Arith::of(call.kind, a, b, (sa_, za), (sb_, zb), (sy, zy));
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if a.len() == y.len() && b.len() == y.len() {
        // Each element's bytes depend on its inputs alone: split across the lent threads.
        crate::par::par_pieces(y, 32, y.len() as u64 * ELEMENT_WORK, |at, y| {
            let (a, b) = (&a[at..at + y.len()], &b[at..at + y.len()]);
            // SAFETY: the vector ISA is present (checked above); the three runs have one
            // length.
            unsafe { simd::binary_run(arith, a, Operand::Run(b), y, lo, hi) };
        });
        note_simd();
        return Some(Ok(()));
    }
    // b is a block of y's trailing dimensions repeated over the leading ones (an
    // attention mask [1, 1, 1, n] added to scores [1, h, n, n]).
    let bd = bt.info.shape.dims();
    let bd = &bd[bd.iter().take_while(|&&v| v == 1).count()..];
    let yd = shape.dims();
    if a.len() == y.len()
        && b.len() >= 16
        && bd.len() <= yd.len()
        && yd[yd.len() - bd.len()..] == *bd
        && y.len() % b.len() == 0
    {
        let work = y.len() as u64 * ELEMENT_WORK;
        pieces(y, b.len(), work, |at, y| {
            let a = &a[at..at + y.len()];
            for (o, ac) in y.chunks_mut(b.len()).zip(a.chunks(b.len())) {
                // SAFETY: the vector ISA is present (checked above); o, ac and b have one
                // length.
                unsafe { simd::binary_run(arith, ac, Operand::Run(b), o, lo, hi) };
            }
        });
        note_simd();
        return Some(Ok(()));
    }
    // One operand constant over the innermost `inner` elements, the other contiguous (the
    // same case analysis as the reference's `walk`).
    let (sa, sb) = (
        broadcast_strides(&at.info.shape, &shape),
        broadcast_strides(&bt.info.shape, &shape),
    );
    let work = y.len() as u64 * ELEMENT_WORK;
    if let Some((inner, d)) = constant_b_run(&shape, &sa, &sb, a.len(), y.len()) {
        pieces(y, inner, work, |at, y| {
            let a = &a[at..at + y.len()];
            for (k, (o, ac)) in y.chunks_mut(inner).zip(a.chunks(inner)).enumerate() {
                let bv = b[crate::eltwise::outer_index(&shape, &sb, d, at / inner + k)];
                // SAFETY: as above; `o` and `ac` have the same length.
                unsafe { simd::binary_run(arith, ac, Operand::Splat(bv), o, lo, hi) };
            }
        });
        note_simd();
        return Some(Ok(()));
    }
    // Any other broadcast (a mask [1, h, 1, n] added to scores [1, h, n, n], either
    // operand the smaller, or both) with rows of y's last dim long enough to pay for
    // locating them: each row's operands through their strides, a run where the operand
    // varies along the row, else its one value (b as a splat, a as a row filled with it).
    let r = shape.rank();
    let row = if r > 0 { shape.dim(r - 1) } else { 0 };
    if row < BROADCAST_MIN_ROW {
        return None;
    }
    let (ra, rb) = (sa[r - 1] == 1, sb[r - 1] == 1);
    pieces(y, row, work, |at, y| {
        let mut fill = [0i8; FILL];
        for (k, o) in y.chunks_mut(row).enumerate() {
            let at_row = at / row + k;
            let oa = crate::eltwise::outer_index(&shape, &sa, r - 1, at_row);
            let ob = crate::eltwise::outer_index(&shape, &sb, r - 1, at_row);
            if !ra {
                fill.fill(a[oa]);
            }
            for (j, oc) in o.chunks_mut(FILL).enumerate() {
                let (from, len) = (j * FILL, oc.len());
                let av = if ra {
                    &a[oa + from..oa + from + len]
                } else {
                    &fill[..len]
                };
                let bv = if rb {
                    Operand::Run(&b[ob + from..ob + from + len])
                } else {
                    Operand::Splat(b[ob])
                };
                // SAFETY: as above; `av`, `oc` and a run `bv` have one length.
                unsafe { simd::binary_run(arith, av, bv, oc, lo, hi) };
            }
        }
    });
    note_simd();
    Some(Ok(()))
}

/// Shortest row of y's last dim the general broadcast path of [`binary_i8`] takes (each
/// row costs a walk over the leading dims to find its operands).
const BROADCAST_MIN_ROW: usize = 16;

/// Elements of a broadcast row run at once (the filled copy of an `a` constant along it).
const FILL: usize = 256;

/// The scalar end of a 2×2 stride-2 max-pool row from output `from` (the vector bodies'
/// tail).
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
fn max_pool_2x2_tail(r0: &[i8], r1: &[i8], yr: &mut [i8], from: usize) {
    for (k, v) in yr.iter_mut().enumerate().skip(from) {
        *v = r0[2 * k]
            .max(r0[2 * k + 1])
            .max(r1[2 * k])
            .max(r1[2 * k + 1]);
    }
}

/// `crate::par::par_pieces` where the vector bodies exist (x86_64, aarch64); elsewhere the callers
/// return before this, and a plain call keeps their bytes out of microcontroller images.
#[inline(always)]
fn pieces(y: &mut [i8], align: usize, work: u64, f: impl Fn(usize, &mut [i8]) + Sync) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    crate::par::par_pieces(y, align, work, f);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (align, work);
        f(0, y)
    }
}

/// Multiply-adds an element of Add/Mul/Quantize costs about as much time as (the unit of
/// `crate::par`): ~0.3 ns an element, 25 int8 multiply-adds a nanosecond.
const ELEMENT_WORK: u64 = 8;

/// Multiply-adds a byte through a lookup table costs about as much time as.
const LUT_WORK: u64 = 2;

/// The second operand of a run: contiguous, or one value for the whole run.
#[derive(Clone, Copy)]
enum Operand<'a> {
    Run(&'a [i8]),
    Splat(i8),
}

/// Per-tensor QuantizeLinear to int8 through the vector path, or `None`.
pub fn quantize(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    #[cfg(all(feature = "dsp", target_arch = "arm", target_abi = "eabihf"))]
    if let Some(r) = crate::dsp_elt::quantize(call, out) {
        return Some(r);
    }
    if out.info.dtype != DType::I8 || !simd::available() {
        return None;
    }
    let Quant::PerTensor { scale, zero_point } = out.info.quant else {
        return None;
    };
    let x = call.req(0).ok()?.f32s().ok()?;
    if x.len() != out.data.len() {
        return None;
    }
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    pieces(y, 32, y.len() as u64 * ELEMENT_WORK, |at, y| {
        // SAFETY: the vector ISA is present (checked above); `x` and `y` have one length.
        unsafe { simd::quantize(&x[at..at + y.len()], scale, zero_point, y) };
    });
    note_simd();
    Some(Ok(()))
}

/// Per-tensor DequantizeLinear from int8 or uint8, or `None`: the reference's
/// `(x − z) as f32 · s` for each element in a loop the compiler vectorizes (with AVX2
/// where the CPU has it); the int-to-float conversion is exact and the one multiply is
/// rounded alike, so the values are the reference's bit for bit.
pub fn dequantize(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let xt = call.req(0).ok()?;
    let Quant::PerTensor { scale, zero_point } = xt.info.quant else {
        return None;
    };
    let signed = match xt.info.dtype {
        DType::I8 => true,
        DType::U8 => false,
        _ => return None,
    };
    let x = xt.data;
    let y = match out.f32s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if x.len() != y.len() {
        return None;
    }
    let work = y.len() as u64 * ELEMENT_WORK;
    crate::par::par_pieces(y, 16, work, |at, y| {
        let x = &x[at..at + y.len()];
        crate::fast::vectorized(|| {
            if signed {
                dequantize_run(x, |v| v as i8 as i32, scale, zero_point, y)
            } else {
                dequantize_run(x, |v| v as i32, scale, zero_point, y)
            }
        })
    });
    Some(Ok(()))
}

#[inline(always)]
fn dequantize_run(x: &[u8], value: impl Fn(u8) -> i32, scale: f32, zero_point: i32, y: &mut [f32]) {
    for (d, &v) in y.iter_mut().zip(x) {
        *d = (value(v) - zero_point) as f32 * scale;
    }
}

/// int8 MaxPool one output row at a time: for each tap, the run of output columns whose
/// input column is inside the image takes a branch-free `max` (vectorized by the compiler
/// in an AVX2 copy). Same values as the reference: the maximum over the taps inside the
/// image, `i8::MIN` if none.
pub fn max_pool_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let xt = call.req(0).ok()?;
    if xt.info.dtype != DType::I8 {
        return None;
    }
    let x = xt.i8s().ok()?;
    let (n, c, h, w) = xt.info.shape.nchw()?;
    let (_, _, oh, ow) = out.info.shape.nchw()?;
    let g = crate::pool::win(call);
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if x.len() != n * c * h * w || y.len() != n * c * oh * ow || g.sw == 0 || g.kw > MAX_POOL_KW {
        return None;
    }
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    if (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl) == (2, 2, 2, 2, 1, 1, 0, 0)
        && crate::dsp::max_pool_2x2(x, y, n * c, (h, w), (oh, ow))
    {
        return Some(Ok(()));
    }
    // 2×2 windows with stride 2 over whole planes of rows at most 8 wide (`w = 2·ow`,
    // `h = 2·oh`): one 16-byte load an output row (x86_64).
    #[cfg(target_arch = "x86_64")]
    if (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl) == (2, 2, 2, 2, 1, 1, 0, 0)
        && h == 2 * oh
        && w == 2 * ow
        && (1..=4).contains(&ow)
    {
        let work = (y.len() * 4) as u64;
        pieces(y, ow, work, |at, y| {
            let x = &x[4 * at..4 * (at + y.len())];
            match ow {
                1 => max_pool_2x2_narrow::<2>(x, y),
                2 => max_pool_2x2_narrow::<4>(x, y),
                3 => max_pool_2x2_narrow::<6>(x, y),
                _ => max_pool_2x2_narrow::<8>(x, y),
            }
        });
        crate::paths::note(crate::paths::Path::MaxPoolRows);
        note_simd();
        return Some(Ok(()));
    }
    // 2×2 windows with stride 2 inside the plane: 32 outputs a step (AVX2), 16 (NEON).
    if (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl) == (2, 2, 2, 2, 1, 1, 0, 0)
        && 2 * oh <= h
        && 2 * ow <= w
        && simd::available()
    {
        let work = (y.len() * 4) as u64;
        pieces(y, ow.max(1), work, |at, y| {
            for (k, yr) in y.chunks_mut(ow.max(1)).enumerate() {
                let row = at / ow.max(1) + k;
                let (p, oy) = (row / oh.max(1), row % oh.max(1));
                let r0 = &x[p * h * w + 2 * oy * w..][..w];
                let r1 = &x[p * h * w + (2 * oy + 1) * w..][..w];
                // SAFETY: the vector ISA is present (checked above); each row holds
                // w >= 2·ow bytes.
                unsafe { simd::max_pool_2x2_row(r0, r1, yr) };
            }
        });
        crate::paths::note(crate::paths::Path::MaxPoolRows);
        note_simd();
        return Some(Ok(()));
    }
    // 1×2 windows with stride (1, 2) (a TF model's frequency pooling): the 2×2 row kernel
    // with one input row as both rows; when every input row is exactly two outputs' wide,
    // the whole tensor is one such row (pairs never straddle rows).
    if (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl) == (1, 2, 1, 2, 1, 1, 0, 0)
        && oh <= h
        && 2 * ow <= w
        && simd::available()
    {
        let work = (y.len() * 2) as u64;
        if w == 2 * ow && oh == h {
            pieces(y, 16, work, |at, y| {
                let r = &x[2 * at..2 * (at + y.len())];
                // SAFETY: the vector ISA is present (checked above); `r` holds 2·len bytes.
                unsafe { simd::max_pool_2x2_row(r, r, y) };
            });
        } else {
            pieces(y, ow.max(1), work, |at, y| {
                for (k, yr) in y.chunks_mut(ow.max(1)).enumerate() {
                    let row = at / ow.max(1) + k;
                    let (p, oy) = (row / oh.max(1), row % oh.max(1));
                    let r = &x[p * h * w + oy * w..][..w];
                    // SAFETY: as above; the row holds w >= 2·ow bytes.
                    unsafe { simd::max_pool_2x2_row(r, r, yr) };
                }
            });
        }
        crate::paths::note(crate::paths::Path::MaxPoolRows);
        note_simd();
        return Some(Ok(()));
    }
    // 4-wide windows at stride 4 over one or two adjacent rows (a 1×4/4 pool over a
    // spectrum's bins): two rounds of the pair kernel through a stack row, since int8
    // maxima are exact in any order; rows exactly four outputs wide make the whole tensor
    // one row, as above.
    if (g.kw, g.sw, g.dw, g.pt, g.pl) == (4, 4, 1, 0, 0)
        && (g.kh == 1 || (g.kh, g.dh) == (2, 1))
        && 4 * ow <= w
        && oh > 0
        && (oh - 1) * g.sh + g.kh <= h
        && simd::available()
    {
        let work = (y.len() * 4 * g.kh) as u64;
        let two = g.kh == 2;
        if !two && g.sh == 1 && w == 4 * ow && oh == h {
            pieces(y, 16, work, |at, y| {
                let r = &x[4 * at..4 * (at + y.len())];
                max_pool_4_row(r, r, y);
            });
        } else {
            pieces(y, ow.max(1), work, |at, y| {
                for (k, yr) in y.chunks_mut(ow.max(1)).enumerate() {
                    let row = at / ow.max(1) + k;
                    let (p, oy) = (row / oh.max(1), row % oh.max(1));
                    let r0 = &x[p * h * w + oy * g.sh * w..][..w];
                    let r1 = if two {
                        &x[p * h * w + (oy * g.sh + 1) * w..][..w]
                    } else {
                        r0
                    };
                    max_pool_4_row(r0, r1, yr);
                }
            });
        }
        crate::paths::note(crate::paths::Path::MaxPoolRows);
        note_simd();
        return Some(Ok(()));
    }
    // Windows three columns wide at stride two (3×3/2 after a stem, MTCNN's pools): each
    // output row from its window's rows, sixteen or eight outputs a step (AVX2).
    #[cfg(target_arch = "x86_64")]
    if (g.kw, g.sw, g.dw) == (3, 2, 1) && g.kh <= MAX_3S2_ROWS && g.pl >= 0 && crate::paths::avx2()
    {
        let (pl, row_len) = (g.pl as usize, ow.max(1));
        let work = (y.len() * g.kh * 3) as u64;
        pieces(y, row_len, work, |at, y| {
            for (k, yr) in y.chunks_mut(row_len).enumerate() {
                let row = at / row_len + k;
                let (p, oy) = (row / oh.max(1), row % oh.max(1));
                let mut rows: [&[i8]; MAX_3S2_ROWS] = [&[]; MAX_3S2_ROWS];
                let nr = g.rows_of(&x[p * h * w..][..h * w], (h, w), oy, &mut rows);
                // SAFETY: AVX2 is present (checked above); every row holds w bytes.
                unsafe { max_pool_3s2_row(&rows[..nr], pl, yr) };
            }
        });
        crate::paths::note(crate::paths::Path::MaxPoolRows);
        note_simd();
        return Some(Ok(()));
    }
    // Planes are independent: hosts split them across the lent threads (parts of whole
    // output planes, each computed as on one thread).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let plane = (oh * ow).max(1);
        let work = (y.len() * g.kh * g.kw) as u64;
        crate::par::par_pieces(y, plane, work, |at, y| {
            max_pool_planes(x, (h, w, oh, ow), &g, at / plane, y.len() / plane, y)
        });
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    max_pool_planes(x, (h, w, oh, ow), &g, 0, n * c, y);
    Some(Ok(()))
}

/// The most window rows [`max_pool_3s2_row`] takes.
#[cfg(target_arch = "x86_64")]
const MAX_3S2_ROWS: usize = 16;

/// One output row of an int8 MaxPool whose windows are three columns wide at stride two,
/// from the window's in-bounds input rows (whole rows of one length): output `ox` is the
/// maximum of columns `2·ox − pl + {0, 1, 2}` of every row, columns outside the row
/// skipped as the reference skips them (int8 maxima are exact in any order). Sixteen
/// outputs a step from 16-byte loads at `2·ox − pl`, 16 on, 2 on and 18 on, each split
/// into even and odd bytes (`vpshufb`) and paired by quadwords; eight a step from 8-byte
/// loads where the row is too short for sixteen; the last step of each kind may overlap
/// the one before (the same values again); outputs whose taps or loads would leave the
/// row go one at a time.
///
/// # Safety
/// AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_pool_3s2_row(rows: &[&[i8]], pl: usize, y: &mut [i8]) {
    use core::arch::x86_64::*;
    let w = rows.iter().map(|r| r.len()).min().unwrap_or(0);
    let ow = y.len();
    let one = |ox: usize| {
        let mut m = i8::MIN;
        for r in rows {
            for kx in 0..3 {
                let c = (2 * ox + kx) as isize - pl as isize;
                if c >= 0 && (c as usize) < w {
                    m = m.max(r[c as usize]);
                }
            }
        }
        m
    };
    // Steps of `n` outputs from `o` on while their loads (`reach` bytes from 2·ox − pl)
    // stay inside the row; the outputs done end at the returned index.
    let steps = |o: usize, n: usize, reach: usize, step: &mut dyn FnMut(usize, usize)| -> usize {
        if w + pl < reach {
            return o;
        }
        let last = (w + pl - reach) / 2;
        if last < o || ow < o + n {
            return o;
        }
        let end = last.min(ow - n);
        let mut s = o;
        loop {
            step(s, 2 * s - pl);
            if s == end {
                return end + n;
            }
            s = (s + n).min(end);
        }
    };
    let split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    let split8 = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, -1, -1, -1, -1, -1, -1, -1, -1);
    let first = pl.div_ceil(2).min(ow);
    let mut o = steps(first, 16, 34, &mut |s, base| {
        let mut m = _mm_set1_epi8(i8::MIN);
        for r in rows {
            let p = r[base..base + 34].as_ptr();
            // SAFETY: the slice above holds 34 bytes from p.
            let ld = |k: usize| unsafe {
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(k) as *const __m128i), split)
            };
            let (a, b, a2, b2) = (ld(0), ld(16), ld(2), ld(18));
            // Even columns of 32 (outputs' first taps), odd ones, even ones two on.
            let e = _mm_unpacklo_epi64(a, b);
            let od = _mm_unpackhi_epi64(a, b);
            let e2 = _mm_unpacklo_epi64(a2, b2);
            m = _mm_max_epi8(m, _mm_max_epi8(e, _mm_max_epi8(od, e2)));
        }
        // SAFETY: s + 16 <= ow = y.len().
        unsafe { _mm_storeu_si128(y[s..s + 16].as_mut_ptr() as *mut __m128i, m) };
    });
    o = steps(o, 8, 18, &mut |s, base| {
        let mut m = _mm_set1_epi8(i8::MIN);
        for r in rows {
            let p = r[base..base + 18].as_ptr();
            // SAFETY: the slice above holds 18 bytes from p.
            let ld = |k: usize| unsafe {
                _mm_shuffle_epi8(_mm_loadl_epi64(p.add(k) as *const __m128i), split8)
            };
            // Evens of 16 columns in the low quadword, odds in the high one.
            let v = _mm_unpacklo_epi32(ld(0), ld(8));
            let v2 = _mm_unpacklo_epi32(ld(2), ld(10));
            m = _mm_max_epi8(
                m,
                _mm_max_epi8(v, _mm_max_epi8(_mm_unpackhi_epi64(v, v), v2)),
            );
        }
        // SAFETY: s + 8 <= ow = y.len().
        unsafe { _mm_storel_epi64(y[s..s + 8].as_mut_ptr() as *mut __m128i, m) };
    });
    for (ox, v) in y.iter_mut().enumerate() {
        if ox < first || ox >= o {
            *v = one(ox);
        }
    }
}

/// 2×2 max pooling with stride 2 of whole planes whose rows are `W` ≤ 8 bytes (`W` is
/// twice the output width): output row `r`'s two input rows are the `2W` bytes of `x`
/// from `2W·r`, so one 16-byte load holds them. The rows are maxed by shifting the load
/// down `W` bytes, then neighbouring bytes, and the even bytes packed (SSE2, every
/// x86_64 CPU). The row-pair kernel took about 20 ns a row there, in its scalar tail.
#[cfg(target_arch = "x86_64")]
fn max_pool_2x2_narrow<const W: usize>(x: &[i8], y: &mut [i8]) {
    use core::arch::x86_64::*;
    let ow = W / 2;
    let rows = y.len() / ow;
    debug_assert!(x.len() >= 2 * W * rows);
    let mut r = 0;
    // SAFETY: SSE2 is part of x86_64; each load reads x[2W·r..2W·r + 16], inside x
    // (checked); register-only instructions otherwise.
    unsafe {
        let low = _mm_set1_epi16(0x00ff);
        while r < rows && 2 * W * r + 16 <= x.len() {
            let v = _mm_loadu_si128(x.as_ptr().add(2 * W * r) as *const __m128i);
            let down = match W {
                2 => _mm_bsrli_si128::<2>(v),
                4 => _mm_bsrli_si128::<4>(v),
                6 => _mm_bsrli_si128::<6>(v),
                _ => _mm_bsrli_si128::<8>(v),
            };
            let m = _mm_max_epi8(v, down);
            let m = _mm_and_si128(_mm_max_epi8(m, _mm_srli_epi16(m, 8)), low);
            let bytes = (_mm_cvtsi128_si64(_mm_packus_epi16(m, m)) as u64).to_le_bytes();
            for (o, b) in y[r * ow..(r + 1) * ow].iter_mut().zip(bytes) {
                *o = b as i8;
            }
            r += 1;
        }
    }
    // The last rows, where 16 bytes would read past x.
    for r in r..rows {
        let (r0, r1) = (&x[2 * W * r..], &x[2 * W * r + W..]);
        max_pool_2x2_tail(r0, r1, &mut y[r * ow..(r + 1) * ow], 0);
    }
}

/// `y[o] = max(r0[4o..4o + 4], r1[4o..4o + 4])`: the pair kernel over both rows into a
/// stack row of pairs, then over that row with itself. The caller checked the vector ISA;
/// `r0` and `r1` hold at least `4·y.len()` bytes.
fn max_pool_4_row(r0: &[i8], r1: &[i8], y: &mut [i8]) {
    const CHUNK: usize = 512;
    let mut pairs = [0i8; 2 * CHUNK];
    for (c, yc) in y.chunks_mut(CHUNK).enumerate() {
        let (a, n) = (4 * c * CHUNK, yc.len());
        let t = &mut pairs[..2 * n];
        // SAFETY: the vector ISA is present (the caller checked `simd::available`); each
        // row holds 4·n bytes from a, and `t` holds 2·n bytes for the second round.
        unsafe {
            simd::max_pool_2x2_row(&r0[a..a + 4 * n], &r1[a..a + 4 * n], t);
            simd::max_pool_2x2_row(t, t, yc);
        }
    }
}

/// MaxPool of input planes `p0..p0 + planes` of `x` (each `h × w`) into `y`, which holds
/// those planes' outputs (each `oh × ow`).
#[inline(always)]
fn max_pool_planes(
    x: &[i8],
    (h, w, oh, ow): (usize, usize, usize, usize),
    g: &crate::pool::Win,
    p0: usize,
    planes: usize,
    y: &mut [i8],
) {
    let sp = spans(g, w, ow);
    // Windows of 9 taps or more (3×3 stride-2 pools after a stem; the 5×5…13×13 pools of
    // an SPP block) go separable, rows first: each output row's window rows are maxed
    // element by element into one row placed after `pl` columns of i8::MIN, then that
    // padded row takes a sliding max over the kernel's columns (contiguous runs, every
    // column), and every `sw`-th column is the output. Same values: max is associative,
    // and a window with no tap inside stays i8::MIN either way. (Along x first, a strided
    // read per tap, took every input row through the taps: a third of MTCNN O-Net's time.)
    // Hosts only: the staging rows are 12 KB of stack.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if g.kh * g.kw >= 9 && g.pl >= 0 && ow > 0 {
        let pl = g.pl as usize;
        // Outputs read padded columns ox·sw + kx·dw: the sliding max covers `span`
        // columns, and reads `need` padded columns.
        let span = (ow - 1) * g.sw + 1;
        let need = (span + (g.kw - 1) * g.dw).max(pl + w);
        if need <= SEP_ROW {
            crate::fast::vectorized(
                #[inline(always)]
                || {
                    let mut padded = [i8::MIN; SEP_ROW];
                    let mut slide = [i8::MIN; SEP_ROW];
                    let (pr, m) = (&mut padded[..need], &mut slide[..span]);
                    for p in 0..planes {
                        let xp = &x[(p0 + p) * h * w..(p0 + p + 1) * h * w];
                        for oy in 0..oh {
                            let v = &mut pr[pl..pl + w];
                            v.fill(i8::MIN);
                            for iy in window_rows(g, oy, h) {
                                let r = &xp[iy * w..(iy + 1) * w];
                                for (d, &s) in v.iter_mut().zip(r) {
                                    *d = (*d).max(s);
                                }
                            }
                            m.copy_from_slice(&pr[..span]);
                            for kx in 1..g.kw {
                                let src = &pr[kx * g.dw..kx * g.dw + span];
                                for (d, &s) in m.iter_mut().zip(src) {
                                    *d = (*d).max(s);
                                }
                            }
                            let yr = &mut y[(p * oh + oy) * ow..(p * oh + oy + 1) * ow];
                            pick(m, g.sw, yr);
                        }
                    }
                },
            );
            return;
        }
    }
    crate::fast::vectorized(
        #[inline(always)]
        || {
            for p in 0..planes {
                let xp = &x[(p0 + p) * h * w..(p0 + p + 1) * h * w];
                for oy in 0..oh {
                    let yr = &mut y[(p * oh + oy) * ow..(p * oh + oy + 1) * ow];
                    yr.fill(i8::MIN);
                    for iy in window_rows(g, oy, h) {
                        max_into(&xp[iy * w..(iy + 1) * w], g, &sp, yr);
                    }
                }
            }
        },
    );
}

/// The input rows of output row `oy`'s window that lie inside the `h` rows, in order.
#[inline(always)]
fn window_rows(g: &crate::pool::Win, oy: usize, h: usize) -> impl Iterator<Item = usize> + '_ {
    (0..g.kh).filter_map(move |ky| {
        let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
        (iy >= 0 && iy < h as isize).then_some(iy as usize)
    })
}

/// Widest padded row the separable MaxPool stages (6 KB).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SEP_ROW: usize = 6144;

/// `y[j] = m[j·s]` for every `j < y.len()` (the caller sized `m` to reach the last).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn pick(m: &[i8], s: usize, y: &mut [i8]) {
    if s == 1 {
        y.copy_from_slice(&m[..y.len()]);
        return;
    }
    // Stride 2 on x86_64: SSE2 packs for the first sixteens (the rest below).
    #[cfg(target_arch = "x86_64")]
    let from = match s {
        2 => every_2nd_u8(bytemuck::cast_slice(m), bytemuck::cast_slice_mut(y)),
        _ => 0,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let from = 0;
    for (j, d) in y.iter_mut().enumerate().skip(from) {
        *d = m[j * s];
    }
}

/// Widest half row (even or odd columns) a stride-2 MaxPool row splits on the stack.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const HALF_MAX: usize = 256;

/// Each tap column's run of outputs whose input column is inside the row: `(lo, hi, a)`,
/// outputs `lo..hi` reading input columns `a, a + sw, …` (`hi = lo` when none). The same
/// for every row of the op, so computed once.
type Spans = [(usize, usize, usize); MAX_POOL_KW];

/// Widest window the row kernel takes (wider ones keep the reference).
const MAX_POOL_KW: usize = 32;

fn spans(g: &crate::pool::Win, w: usize, ow: usize) -> Spans {
    let mut sp = [(0, 0, 0); MAX_POOL_KW];
    for (kx, s) in sp.iter_mut().enumerate().take(g.kw) {
        // ix = ox·sw + off; the ox with ix in [0, w).
        let off = (kx * g.dw) as isize - g.pl;
        let (lo, hi) = crate::util::inside(off, g.sw, w, ow);
        if lo < hi {
            *s = (lo, hi, (lo as isize * g.sw as isize + off) as usize);
        }
    }
    sp
}

/// `yr[ox] = max(yr[ox], max over kx of xr[ox·sw + kx·dw − pl])` over the taps inside the
/// row (`sp`, from [`spans`]): for each tap, its run of output columns takes a
/// branch-free `max` (vectorized by the compiler in an AVX2 copy).
#[inline(always)]
fn max_into(xr: &[i8], g: &crate::pool::Win, sp: &Spans, yr: &mut [i8]) {
    // Stride 2 on hosts: the row split once into its even and odd columns, so that every
    // tap reads one contiguous run (a stride-2 read per tap stays scalar: it was 40% of
    // MTCNN O-Net's time, `perf record`).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if g.sw == 2 && xr.len() <= 2 * HALF_MAX {
        let w = xr.len();
        let (mut even, mut odd) = ([i8::MIN; HALF_MAX], [i8::MIN; HALF_MAX]);
        let n2 = w / 2;
        let pairs = even[..n2].iter_mut().zip(&mut odd[..n2]);
        for ((e, o), p) in pairs.zip(xr[..2 * n2].chunks_exact(2)) {
            (*e, *o) = (p[0], p[1]);
        }
        if w % 2 == 1 {
            even[n2] = xr[w - 1];
        }
        for &(lo, hi, a) in &sp[..g.kw] {
            let half = if a % 2 == 0 { &even } else { &odd };
            let src = &half[a / 2..a / 2 + (hi - lo)];
            for (d, &v) in yr[lo..hi].iter_mut().zip(src) {
                *d = (*d).max(v);
            }
        }
        return;
    }
    for &(lo, hi, a) in &sp[..g.kw] {
        if lo >= hi {
            continue;
        }
        let src = &xr[a..a + (hi - lo - 1) * g.sw + 1];
        let dst = &mut yr[lo..hi];
        if g.sw == 1 {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = (*d).max(v);
            }
        } else {
            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(g.sw)) {
                *d = (*d).max(v);
            }
        }
    }
}

/// Per-tensor int8 lookup table (`y = table[x + 128]`) through the vector path, or `None`.
///
/// A table per channel (PReLU with a slope per channel) runs each run of `inner`
/// elements of one channel through that channel's table.
pub fn lut_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    #[cfg(all(feature = "dsp", target_arch = "arm", target_abi = "eabihf"))]
    if let Some(r) = crate::dsp_elt::lut_i8(call, out) {
        return Some(r);
    }
    if !simd::available() {
        return None;
    }
    let tables = call.req(1).ok()?.i8s().ok()?;
    let src = if call.in_place {
        None
    } else {
        Some(call.req(0).ok()?.i8s().ok()?)
    };
    let shape = out.info.shape;
    let axis = call.param(0);
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if src.is_some_and(|x| x.len() != y.len()) {
        return None;
    }
    if axis < 0 {
        let table: &[i8; 256] = tables.get(..256)?.try_into().ok()?;
        // Each byte is its input's table entry: split across the lent threads.
        crate::par::par_pieces(y, 64, y.len() as u64 * LUT_WORK, |at, y| {
            let src = src.map(|x| &x[at..at + y.len()]);
            // SAFETY: the vector ISA is present (checked above).
            unsafe { simd::lut(table, src, y) };
        });
        note_simd();
        return Some(Ok(()));
    }
    let axis = axis as usize;
    if axis >= shape.rank() {
        return None;
    }
    let (c, inner) = (shape.dim(axis), shape.prod(axis + 1, shape.rank()));
    // Short runs gain nothing from the vector table; the reference takes them.
    if inner < 32 || tables.len() < c * 256 {
        return None;
    }
    let tables = &tables[..c * 256];
    crate::par::par_pieces(y, inner, y.len() as u64 * LUT_WORK, |at, y| {
        for (k, run) in y.chunks_mut(inner).enumerate() {
            let i = at / inner + k;
            let ch = i % c;
            let table: &[i8; 256] = tables[ch * 256..(ch + 1) * 256]
                .try_into()
                .expect("256 entries a channel");
            let s = src.map(|x| &x[i * inner..i * inner + run.len()]);
            // SAFETY: the vector ISA is present (checked above).
            unsafe { simd::lut(table, s, run) };
        }
    });
    note_simd();
    Some(Ok(()))
}

/// `dst[i] = table[src[i]]` on the vector table kernel (`pshufb`, or VBMI's `vpermt2b`)
/// where the CPU has it: a Concat or Split part whose scale differs from the output's
/// requantizes through such a table. `false`, with nothing written, where it has not.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn table_bytes(table: &[i8; 256], src: &[i8], dst: &mut [i8]) -> bool {
    if !simd::available() || src.len() != dst.len() {
        return false;
    }
    // SAFETY: the vector ISA is present (checked just above).
    unsafe { simd::lut(table, Some(src), dst) };
    true
}

/// `dst[j] = src[2j]` for the first `16·k` of `dst` (SSE2, every x86_64 CPU): two 16-byte
/// loads masked to their even bytes and packed into one store. Returns how many bytes of
/// `dst` it wrote; the caller copies the rest. (The compiler gathers such a loop a byte at
/// a time.)
#[cfg(target_arch = "x86_64")]
pub(crate) fn every_2nd_u8(src: &[u8], dst: &mut [u8]) -> usize {
    use core::arch::x86_64::*;
    let n = (dst.len() / 16).min(src.len() / 32) * 16;
    // SAFETY: SSE2 is part of x86_64; every load reads src[2j..2j + 32] with 2j + 32 ≤
    // src.len() and every store writes dst[j..j + 16] with j + 16 ≤ dst.len() (n bounds
    // both).
    unsafe {
        let even = _mm_set1_epi16(0x00FF);
        for j in (0..n).step_by(16) {
            let a = _mm_loadu_si128(src.as_ptr().add(2 * j) as *const __m128i);
            let b = _mm_loadu_si128(src.as_ptr().add(2 * j + 16) as *const __m128i);
            let v = _mm_packus_epi16(_mm_and_si128(a, even), _mm_and_si128(b, even));
            _mm_storeu_si128(dst.as_mut_ptr().add(j) as *mut __m128i, v);
        }
    }
    n
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    /// The reference's Add/Mul float operations on int32 lanes `av`, `bv` with the
    /// intrinsics of one width (`_mm256` or `_mm512`), the result through `fin`.
    macro_rules! arith_lanes {
        ($arith:expr, $av:expr, $bv:expr, $fin:expr, $w:ident) => {
            paste_width!($w, {
                match $arith {
                    Arith::Add {
                        ra,
                        rb,
                        fixed,
                        a_scalar,
                        b_scalar,
                    } => {
                        let (fa, fb) = (cvtepi32_ps($av), cvtepi32_ps($bv));
                        let (vra, vrb, vf) = (set1_ps(ra), set1_ps(rb), set1_ps(fixed));
                        $fin(if a_scalar {
                            fmadd_ps(fb, vrb, vf)
                        } else if b_scalar {
                            fmadd_ps(fa, vra, vf)
                        } else {
                            fmadd_ps(fa, vra, fmadd_ps(fb, vrb, vf))
                        })
                    }
                    Arith::Mul { za, zb, r, zf } => {
                        let p = mullo_epi32(
                            sub_epi32($av, set1_epi32(za)),
                            sub_epi32($bv, set1_epi32(zb)),
                        );
                        $fin(add_ps(mul_ps(cvtepi32_ps(p), set1_ps(r)), set1_ps(zf)))
                    }
                }
            })
        };
    }

    /// `body` with the short names of `arith_lanes` bound to the `_mm256` or `_mm512`
    /// intrinsics.
    macro_rules! paste_width {
        (_mm256, $body:block) => {{
            use core::arch::x86_64::{
                _mm256_add_ps as add_ps, _mm256_cvtepi32_ps as cvtepi32_ps,
                _mm256_fmadd_ps as fmadd_ps, _mm256_mul_ps as mul_ps,
                _mm256_mullo_epi32 as mullo_epi32, _mm256_set1_epi32 as set1_epi32,
                _mm256_set1_ps as set1_ps, _mm256_sub_epi32 as sub_epi32,
            };
            $body
        }};
        (_mm512, $body:block) => {{
            use core::arch::x86_64::{
                _mm512_add_ps as add_ps, _mm512_cvtepi32_ps as cvtepi32_ps,
                _mm512_fmadd_ps as fmadd_ps, _mm512_mul_ps as mul_ps,
                _mm512_mullo_epi32 as mullo_epi32, _mm512_set1_epi32 as set1_epi32,
                _mm512_set1_ps as set1_ps, _mm512_sub_epi32 as sub_epi32,
            };
            $body
        }};
    }

    use super::{Arith, Operand};
    use crate::fast::store8;
    use cairn_core::quant::quantize_f32;

    pub(crate) use crate::paths::avx2_fma as available;

    /// Eight int8 at `p` sign-extended to int32 lanes.
    #[inline(always)]
    unsafe fn load8(s: &[i8]) -> __m256i {
        debug_assert!(s.len() >= 8);
        // SAFETY: the caller passes at least 8 bytes; the read is unaligned-safe.
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(s.as_ptr() as *const __m128i))
    }

    /// `binary_i8` over one run: `a` and `y` (and `b` when a run) have one length.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn binary_run(
        arith: Arith,
        a: &[i8],
        b: Operand<'_>,
        y: &mut [i8],
        lo: i32,
        hi: i32,
    ) {
        // With AVX-512, sixteen lanes a step for the whole multiples of 16; the rest below.
        #[cfg(feature = "std")]
        let (a, b, y) = if avx512() && y.len() >= 16 {
            let n = y.len() / 16 * 16;
            let (head, rest) = y.split_at_mut(n);
            let (bh, br) = match b {
                Operand::Run(b) => (Operand::Run(&b[..n]), Operand::Run(&b[n..])),
                Operand::Splat(v) => (Operand::Splat(v), Operand::Splat(v)),
            };
            // SAFETY: the CPU has AVX-512 F (checked just above), AVX2 and FMA (the
            // contract); the runs have one length.
            unsafe { binary_run16(arith, &a[..n], bh, head, lo, hi) };
            (&a[n..], br, rest)
        } else {
            (a, b, y)
        };
        // AVX2 without AVX-512: sixteen elements a step where `mul16` (Mul, on int16
        // products) or `add16` (Add) takes them, clamped by saturation; the rest below.
        #[cfg(feature = "std")]
        let (a, b, y) = {
            let done = match arith {
                // SAFETY (both arms): AVX2 and FMA (the contract); the runs have one
                // length.
                Arith::Mul { za, zb, r, zf } if !avx512() => unsafe {
                    mul16(za, zb, r, zf, a, b, y, lo, hi)
                },
                Arith::Add { .. } if !avx512() => unsafe { add16(arith, a, b, y, lo, hi) },
                _ => 0,
            };
            let b = match b {
                Operand::Run(b) => Operand::Run(&b[done..]),
                splat => splat,
            };
            (&a[done..], b, &mut y[done..])
        };
        let n = y.len();
        let (vlo, vhi) = (_mm256_set1_epi32(lo), _mm256_set1_epi32(hi));
        let (fmin, fmax) = (_mm256_set1_ps(-129.0), _mm256_set1_ps(128.0));
        // `fin` of the reference: clamp to [-129, 128], round half to even, clamp to the
        // activation range.
        let fin = |v: __m256| {
            let v = _mm256_min_ps(_mm256_max_ps(v, fmin), fmax);
            _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(v), vlo), vhi)
        };
        let mut i = 0;
        let mut pad_a = [0i8; 8];
        let mut pad_b = [0i8; 8];
        let mut pad_y = [0i8; 8];
        while i < n {
            let len = 8.min(n - i);
            // A short tail runs through the same vector body on padded copies.
            let (av, bv) = if len == 8 {
                let av = unsafe { load8(&a[i..i + 8]) };
                let bv = match b {
                    Operand::Run(b) => unsafe { load8(&b[i..i + 8]) },
                    Operand::Splat(v) => _mm256_set1_epi32(v as i32),
                };
                (av, bv)
            } else {
                pad_a[..len].copy_from_slice(&a[i..n]);
                let bv = match b {
                    Operand::Run(b) => {
                        pad_b[..len].copy_from_slice(&b[i..n]);
                        unsafe { load8(&pad_b) }
                    }
                    Operand::Splat(v) => _mm256_set1_epi32(v as i32),
                };
                (unsafe { load8(&pad_a) }, bv)
            };
            let r = arith_lanes!(arith, av, bv, fin, _mm256);
            if len == 8 {
                unsafe { store8(r, &mut y[i..i + 8]) };
            } else {
                unsafe { store8(r, &mut pad_y) };
                y[i..n].copy_from_slice(&pad_y[..len]);
            }
            i += len;
        }
    }

    /// int8 Mul over the leading multiple of 16 of `y`, sixteen elements a step; returns
    /// how many were done (0 where the bounds below do not hold). The reference's
    /// `fin(((a − za)(b − zb)) as f32 · r + zf)` with the product exact in int16 halves
    /// (`vpmullw` + `vpmulhw`: |a − za|, |b − zb| ≤ 255) and the same float multiply and
    /// add; `fin`'s clamp to [−129, 128] is left to the saturating packs and the byte clamp
    /// to [lo, hi]: its bounds are integers, so clamping before or after the rounding gives
    /// one value, and |product · r + zf| < 2^30 (checked) keeps the rounding conversion
    /// exact.
    ///
    /// # Safety
    /// AVX2 and FMA; `a`, `y` (and `b` when a run) have one length.
    #[cfg(feature = "std")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn mul16(
        za: i32,
        zb: i32,
        r: f32,
        zf: f32,
        a: &[i8],
        b: Operand<'_>,
        y: &mut [i8],
        lo: i32,
        hi: i32,
    ) -> usize {
        let i8s = -128..=127;
        let bounded = 65025.0 * r.abs() + zf.abs() < (1u32 << 30) as f32;
        if !bounded
            || !i8s.contains(&za)
            || !i8s.contains(&zb)
            || !i8s.contains(&lo)
            || !i8s.contains(&hi)
            || lo > hi
        {
            return 0;
        }
        match b {
            // SAFETY: the contract, passed on.
            Operand::Run(b) => unsafe { mul16_body::<true>(za, zb, r, zf, a, b, 0, y, lo, hi) },
            Operand::Splat(v) => unsafe {
                mul16_body::<false>(za, zb, r, zf, a, &[], v, y, lo, hi)
            },
        }
    }

    /// [`mul16`]'s loop: `b` a run (`RUN`) or the splat `bv`.
    ///
    /// # Safety
    /// As [`mul16`], with its bounds checked.
    #[cfg(feature = "std")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn mul16_body<const RUN: bool>(
        za: i32,
        zb: i32,
        r: f32,
        zf: f32,
        a: &[i8],
        b: &[i8],
        bv: i8,
        y: &mut [i8],
        lo: i32,
        hi: i32,
    ) -> usize {
        let n = y.len() / 16 * 16;
        let (za16, zb16) = (_mm256_set1_epi16(za as i16), _mm256_set1_epi16(zb as i16));
        let splat = _mm256_set1_epi16(bv as i16 - zb as i16);
        let (vr, vzf) = (_mm256_set1_ps(r), _mm256_set1_ps(zf));
        let (vlo, vhi) = (_mm_set1_epi8(lo as i8), _mm_set1_epi8(hi as i8));
        // SAFETY: 16 bytes at `s`, unaligned-safe.
        let load = |s: &[i8]| unsafe {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(s[..16].as_ptr() as *const __m128i))
        };
        let real = |p: __m256i| {
            _mm256_cvtps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(p), vr), vzf))
        };
        for i in (0..n).step_by(16) {
            let av = _mm256_sub_epi16(load(&a[i..]), za16);
            let bv = if RUN {
                _mm256_sub_epi16(load(&b[i..]), zb16)
            } else {
                splat
            };
            let (pl, ph) = (_mm256_mullo_epi16(av, bv), _mm256_mulhi_epi16(av, bv));
            // Elements (0–3, 8–11) and (4–7, 12–15) as int32; the pack restores the order.
            let (p0, p1) = (_mm256_unpacklo_epi16(pl, ph), _mm256_unpackhi_epi16(pl, ph));
            let w = _mm256_packs_epi32(real(p0), real(p1));
            let v = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            let v = _mm_min_epi8(_mm_max_epi8(v, vlo), vhi);
            // SAFETY: 16 bytes of y from i (i + 16 <= n <= y.len()).
            unsafe { _mm_storeu_si128(y[i..i + 16].as_mut_ptr() as *mut __m128i, v) };
        }
        if n > 0 {
            crate::paths::note(crate::paths::Path::MulInt16);
        }
        n
    }

    /// int8 Add over the leading multiple of 16 of `y`, sixteen elements a step; returns
    /// how many were done (0 where the bounds below do not hold). The reference's
    /// `fin(fma(a, ra, fma(b, rb, fixed)))` (one term where an operand is a scalar folded
    /// into `fixed`) with the same FMAs; `fin`'s clamp to [−129, 128] is left to the
    /// saturating packs and the byte clamp to [lo, hi], exact as in [`mul16`]: the clamp's
    /// bounds are integers, and |a·ra + b·rb + fixed| < 2^30 (checked, |a|, |b| ≤ 128)
    /// keeps the rounding conversion in range. Eight elements a step with the float clamps
    /// took 1.3× as long.
    ///
    /// # Safety
    /// AVX2 and FMA; `a`, `y` (and `b` when a run) have one length.
    #[cfg(feature = "std")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add16(
        arith: Arith,
        a: &[i8],
        b: Operand<'_>,
        y: &mut [i8],
        lo: i32,
        hi: i32,
    ) -> usize {
        let Arith::Add { ra, rb, fixed, .. } = arith else {
            return 0;
        };
        let i8s = -128..=127;
        let bounded = 128.0 * (ra.abs() + rb.abs()) + fixed.abs() < (1u32 << 30) as f32;
        if !bounded || !i8s.contains(&lo) || !i8s.contains(&hi) || lo > hi {
            return 0;
        }
        let n = y.len() / 16 * 16;
        let (vlo, vhi) = (_mm_set1_epi8(lo as i8), _mm_set1_epi8(hi as i8));
        let splat = match b {
            Operand::Splat(v) => _mm256_set1_epi32(v as i32),
            Operand::Run(_) => _mm256_setzero_si256(),
        };
        // The reference's fused multiply-adds (`arith_lanes!`), then only the rounding
        // conversion: the clamps are the packs and the byte clamp below.
        let value =
            |av: __m256i, bv: __m256i| arith_lanes!(arith, av, bv, _mm256_cvtps_epi32, _mm256);
        for i in (0..n).step_by(16) {
            // SAFETY: 8 bytes at each of i and i + 8 (i + 16 <= n <= the runs' length).
            let (a0, a1) = unsafe { (load8(&a[i..]), load8(&a[i + 8..])) };
            let (b0, b1) = match b {
                // SAFETY: as above.
                Operand::Run(b) => unsafe { (load8(&b[i..]), load8(&b[i + 8..])) },
                Operand::Splat(_) => (splat, splat),
            };
            let (v0, v1) = (value(a0, b0), value(a1, b1));
            // Quads (0–3, 8–11, 4–7, 12–15) → (0–3, 4–7, 8–11, 12–15).
            let w = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xD8);
            let v = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            let v = _mm_min_epi8(_mm_max_epi8(v, vlo), vhi);
            // SAFETY: 16 bytes of y from i (i + 16 <= n <= y.len()).
            unsafe { _mm_storeu_si128(y[i..i + 16].as_mut_ptr() as *mut __m128i, v) };
        }
        if n > 0 {
            crate::paths::note(crate::paths::Path::AddInt16);
        }
        n
    }

    /// `y[i] = table[x[i] + 128]` (`x` is `src`, or `y` itself in place), 32 bytes at a
    /// time: `pshufb` looks up the index's low nibble in each of the 16 rows of 16 entries,
    /// and a tree of 15 `pblendvb` picks the row by the high nibble, one bit a level (each
    /// bit shifted to its byte's top, where `pblendvb` reads it). The index is `x + 128`,
    /// so its bit 7 is x's bit 7 flipped: the last level takes rows 0–7 where x < 0.
    /// (The tree measured 1.26× the earlier 16-step loop of add, shuffle, or and subtract
    /// on a Zen 3: 7.8 against 6.2 bytes/ns.)
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn lut(table: &[i8; 256], src: Option<&[i8]>, y: &mut [i8]) {
        // With AVX-512 VBMI, 64 bytes a step through two 128-entry `vpermt2b` lookups;
        // the rest (under 64 bytes) below.
        #[cfg(feature = "std")]
        let (src, y) = if vbmi() && y.len() >= 64 {
            let n = y.len() / 64 * 64;
            let (head, rest) = y.split_at_mut(n);
            // SAFETY: the CPU has AVX-512 F, BW and VBMI (checked just above); `src`, when
            // given, has y's length (the caller's contract).
            unsafe { lut_vbmi(table, src.map(|x| &x[..n]), head) };
            crate::paths::note(crate::paths::Path::LutVbmi);
            (src.map(|x| &x[n..]), rest)
        } else {
            (src, y)
        };
        let rows: [__m256i; 16] = core::array::from_fn(|t| {
            // SAFETY: 16 bytes at 16t are inside the 256-byte table.
            let r = unsafe { _mm_loadu_si128(table.as_ptr().add(16 * t) as *const __m128i) };
            _mm256_broadcastsi128_si256(r)
        });
        let nibble = _mm256_set1_epi8(0x0F);
        let n = y.len() / 32 * 32;
        for (i, chunk) in y[..n].chunks_exact_mut(32).enumerate() {
            let from = src.map_or(chunk.as_ptr(), |x| x[32 * i..32 * i + 32].as_ptr());
            // SAFETY: `from` and chunk are 32 bytes each; unaligned-safe load and store.
            let v = unsafe { _mm256_loadu_si256(from as *const __m256i) };
            // The low nibble (bit 7 clear: `pshufb` reads an entry).
            let lo = _mm256_and_si256(v, nibble);
            // Bits 4, 5 and 6 at the top of their bytes (a 16-bit shift moves no bit across
            // a byte's top: bit 12 lands on bit 15).
            let (b4, b5, b6) = (
                _mm256_slli_epi16(v, 3),
                _mm256_slli_epi16(v, 2),
                _mm256_slli_epi16(v, 1),
            );
            let e: [__m256i; 16] = core::array::from_fn(|t| _mm256_shuffle_epi8(rows[t], lo));
            let e: [__m256i; 8] =
                core::array::from_fn(|t| _mm256_blendv_epi8(e[2 * t], e[2 * t + 1], b4));
            let e: [__m256i; 4] =
                core::array::from_fn(|t| _mm256_blendv_epi8(e[2 * t], e[2 * t + 1], b5));
            let (low, high) = (
                _mm256_blendv_epi8(e[0], e[1], b6),
                _mm256_blendv_epi8(e[2], e[3], b6),
            );
            // x < 0 (bit 7 set): index below 128, rows 0–7.
            let r = _mm256_blendv_epi8(high, low, v);
            unsafe { _mm256_storeu_si256(chunk.as_mut_ptr() as *mut __m256i, r) };
        }
        for (i, v) in y.iter_mut().enumerate().skip(n) {
            let x = src.map_or(*v, |x| x[i]);
            *v = table[(x as i32 + 128) as usize];
        }
    }

    /// Whether the CPU has AVX-512 F (sixteen f32 or int32 lanes).
    #[cfg(feature = "std")]
    fn avx512() -> bool {
        std::is_x86_feature_detected!("avx512f")
    }

    /// [`binary_run`] sixteen lanes a step, `y.len()` a multiple of 16: the same float
    /// operations one for one (fused multiply-adds, a separately rounded multiply and add,
    /// round half to even), and the clamped int32 narrowed to bytes (`vpmovdb`, exact in
    /// [−128, 127]).
    ///
    /// # Safety
    /// AVX-512 F, AVX2 and FMA; `a`, `y` (and `b` when a run) have one length, a multiple
    /// of 16.
    #[cfg(feature = "std")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn binary_run16(arith: Arith, a: &[i8], b: Operand<'_>, y: &mut [i8], lo: i32, hi: i32) {
        debug_assert!(y.len().is_multiple_of(16) && a.len() == y.len());
        let (vlo, vhi) = (_mm512_set1_epi32(lo), _mm512_set1_epi32(hi));
        let (fmin, fmax) = (_mm512_set1_ps(-129.0), _mm512_set1_ps(128.0));
        let fin = |v: __m512| {
            let v = _mm512_min_ps(_mm512_max_ps(v, fmin), fmax);
            _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(v), vlo), vhi)
        };
        // SAFETY (both loads): 16 readable bytes at `s`.
        let load16 = |s: &[i8]| unsafe {
            _mm512_cvtepi8_epi32(_mm_loadu_si128(s.as_ptr() as *const __m128i))
        };
        for i in (0..y.len()).step_by(16) {
            let av = load16(&a[i..i + 16]);
            let bv = match b {
                Operand::Run(b) => load16(&b[i..i + 16]),
                Operand::Splat(v) => _mm512_set1_epi32(v as i32),
            };
            let r = arith_lanes!(arith, av, bv, fin, _mm512);
            // SAFETY: 16 writable bytes at y[i].
            unsafe {
                _mm_storeu_si128(
                    y[i..i + 16].as_mut_ptr() as *mut __m128i,
                    _mm512_cvtepi32_epi8(r),
                )
            };
        }
    }

    /// Whether the CPU has AVX-512 F, BW and VBMI (byte permutes across 64 bytes).
    #[cfg(feature = "std")]
    fn vbmi() -> bool {
        std::is_x86_feature_detected!("avx512vbmi")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512f")
    }

    /// `y = table[x + 128]` 64 bytes a step (`y.len()` a multiple of 64): the index is the
    /// byte with its sign bit flipped; `vpermt2b` looks up entries 0–127 and 128–255 by its
    /// low seven bits, and its top bit picks which.
    ///
    /// # Safety
    /// AVX-512 F, BW and VBMI; `src`, when given, holds `y.len()` bytes.
    #[cfg(feature = "std")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    unsafe fn lut_vbmi(table: &[i8; 256], src: Option<&[i8]>, y: &mut [i8]) {
        debug_assert!(y.len().is_multiple_of(64) && src.is_none_or(|x| x.len() == y.len()));
        // SAFETY: 64 bytes at 64k (k < 4) are inside the 256-byte table.
        let t = |k: usize| unsafe { _mm512_loadu_si512(table.as_ptr().add(64 * k) as *const _) };
        let (t0, t1, t2, t3) = (t(0), t(1), t(2), t(3));
        let flip = _mm512_set1_epi8(-128);
        for (i, chunk) in y.chunks_exact_mut(64).enumerate() {
            let from = src.map_or(chunk.as_ptr(), |x| x[64 * i..64 * i + 64].as_ptr());
            // SAFETY: `from` and `chunk` are 64 bytes each; unaligned loads and stores.
            unsafe {
                let idx = _mm512_xor_si512(_mm512_loadu_si512(from as *const _), flip);
                let lo = _mm512_permutex2var_epi8(t0, idx, t1);
                let hi = _mm512_permutex2var_epi8(t2, idx, t3);
                let r = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi);
                _mm512_storeu_si512(chunk.as_mut_ptr() as *mut _, r);
            }
        }
    }

    /// Per-tensor QuantizeLinear of `x` into `y` (same length): divide, round half to even,
    /// add the zero point, clamp; NaN gives the zero point, as in `quantize_f32`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize(x: &[f32], scale: f32, zp: i32, y: &mut [i8]) {
        let n = x.len().min(y.len()) / 8 * 8;
        let (vs, vz) = (_mm256_set1_ps(scale), _mm256_set1_ps(zp as f32));
        let (vlo, vhi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
        let vnan = _mm256_set1_epi32(zp.clamp(-128, 127));
        for (x8, y8) in x[..n].chunks_exact(8).zip(y[..n].chunks_exact_mut(8)) {
            // SAFETY: x8 is exactly 8 f32; the load is unaligned-safe.
            let v = _mm256_div_ps(unsafe { _mm256_loadu_ps(x8.as_ptr()) }, vs);
            let nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            let r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            let q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vz), vlo), vhi);
            let q = _mm256_blendv_epi8(_mm256_cvttps_epi32(q), vnan, nan);
            unsafe { store8(q, y8) };
        }
        for (v, o) in x[n..].iter().zip(&mut y[n..]) {
            *o = quantize_f32(*v, scale, zp, -128, 127) as i8;
        }
    }

    /// 2×2 max pooling with stride 2 of one output row: `yr[o] = max(r0[2o], r0[2o + 1],
    /// r1[2o], r1[2o + 1])`, 32 outputs per step, then one step of 16 (rows maxed, then
    /// neighbouring bytes, then the even bytes packed).
    ///
    /// # Safety
    /// AVX2; `r0` and `r1` hold at least `2·yr.len()` bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_pool_2x2_row(r0: &[i8], r1: &[i8], yr: &mut [i8]) {
        let n = yr.len();
        debug_assert!(r0.len() >= 2 * n && r1.len() >= 2 * n);
        let low = _mm256_set1_epi16(0x00ff);
        let mut o = 0;
        while o + 32 <= n {
            // SAFETY: 64 bytes from 2·o of each row lie below 2·n (the contract).
            let half = |k: usize| unsafe {
                let p =
                    |r: &[i8]| _mm256_loadu_si256(r.as_ptr().add(2 * o + 32 * k) as *const __m256i);
                let v = _mm256_max_epi8(p(r0), p(r1));
                // Each 16-bit lane: the max of its two bytes in its low byte.
                _mm256_and_si256(_mm256_max_epi8(v, _mm256_srli_epi16(v, 8)), low)
            };
            let packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(half(0), half(1)), 0xd8);
            // SAFETY: outputs o..o + 32 are inside yr.
            unsafe { _mm256_storeu_si256(yr.as_mut_ptr().add(o) as *mut __m256i, packed) };
            o += 32;
        }
        // Sixteen outputs from `at` on 128-bit vectors.
        let step16 = |at: usize, yr: &mut [i8]| {
            let low = _mm_set1_epi16(0x00ff);
            // SAFETY: 32 bytes from 2·at of each row lie below 2·n (at + 16 <= n and the
            // contract).
            let half = |k: usize| unsafe {
                let p =
                    |r: &[i8]| _mm_loadu_si128(r.as_ptr().add(2 * at + 16 * k) as *const __m128i);
                let v = _mm_max_epi8(p(r0), p(r1));
                _mm_and_si128(_mm_max_epi8(v, _mm_srli_epi16(v, 8)), low)
            };
            let packed = _mm_packus_epi16(half(0), half(1));
            // SAFETY: outputs at..at + 16 are inside yr.
            unsafe { _mm_storeu_si128(yr.as_mut_ptr().add(at) as *mut __m128i, packed) };
        };
        // Sixteen more (the 16-wide rows of small maps).
        if o + 16 <= n {
            step16(o, yr);
            o += 16;
        }
        // The last few: the sixteen (or eight) outputs ending the row once more,
        // overlapping ones already written (a maximum comes out the same every time).
        if o < n && n >= 16 {
            step16(n - 16, yr);
            o = n;
        }
        // Eight outputs from `at` (rows of 8 to 15 outputs).
        let step8 = |at: usize, yr: &mut [i8]| {
            // SAFETY: 16 bytes from 2·at of each row lie below 2·n (at + 8 <= n and the
            // contract).
            let p = |r: &[i8]| unsafe { _mm_loadu_si128(r.as_ptr().add(2 * at) as *const __m128i) };
            let v = _mm_max_epi8(p(r0), p(r1));
            let m = _mm_and_si128(
                _mm_max_epi8(v, _mm_srli_epi16(v, 8)),
                _mm_set1_epi16(0x00ff),
            );
            let packed = _mm_packus_epi16(m, m);
            // SAFETY: outputs at..at + 8 are inside yr.
            unsafe { _mm_storel_epi64(yr.as_mut_ptr().add(at) as *mut __m128i, packed) };
        };
        if o + 8 <= n {
            step8(o, yr);
            o += 8;
        }
        if o < n && n >= 8 {
            step8(n - 8, yr);
            o = n;
        }
        super::max_pool_2x2_tail(r0, r1, yr, o);
    }

    /// `Σ v` over int8 values, wrapping in i32: `vpsadbw` against zero on the bytes with
    /// their sign bits flipped (`v + 128`), 32 a step, less 128 per byte.
    ///
    /// # Safety
    /// AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sum_i8(v: &[i8]) -> i32 {
        let flip = _mm256_set1_epi8(-128);
        let zero = _mm256_setzero_si256();
        let mut acc = zero;
        let mut chunks = v.chunks_exact(32);
        for c in &mut chunks {
            // SAFETY: 32 readable bytes.
            let x = unsafe { _mm256_loadu_si256(c.as_ptr() as *const __m256i) };
            acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_xor_si256(x, flip), zero));
        }
        let mut lanes = [0u64; 4];
        // SAFETY: 32 writable bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
        let n = (v.len() / 32 * 32) as u64;
        let biased = lanes.iter().sum::<u64>().wrapping_sub(128 * n);
        (biased as i32).wrapping_add(crate::pool::sum_i8(chunks.remainder()))
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
)))]
mod avx2 {
    use super::{Arith, Operand};

    pub fn available() -> bool {
        false
    }

    pub unsafe fn binary_run(_: Arith, _: &[i8], _: Operand<'_>, _: &mut [i8], _: i32, _: i32) {}

    pub unsafe fn quantize(_: &[f32], _: f32, _: i32, _: &mut [i8]) {}

    pub unsafe fn lut(_: &[i8; 256], _: Option<&[i8]>, _: &mut [i8]) {}

    pub unsafe fn max_pool_2x2_row(_: &[i8], _: &[i8], _: &mut [i8]) {}

    #[allow(dead_code)]
    pub unsafe fn sum_i8(_: &[i8]) -> i32 {
        0
    }
}

/// int8 GlobalAveragePool (ReduceMean over the innermost axes) with the byte sums on
/// `vpsadbw` (x86_64 with AVX2) or pairwise widening adds (aarch64 NEON), or `None`.
pub fn reduce_mean_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if simd::available() {
        // SAFETY: the vector ISA is present (checked just above).
        let sum = |v: &[i8]| unsafe { simd::sum_i8(v) };
        note_simd();
        return Some(crate::pool::reduce_mean_i8_by(call, out, sum));
    }
    let _ = (call, out);
    None
}

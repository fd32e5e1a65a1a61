//! The AVX2 micro-kernels (x86_64; detected at run time with `std`).

use core::arch::x86_64::*;

use super::{row_offset, Q};

pub(crate) use crate::paths::avx2 as available;

/// Pixels per tile of the GEMM micro-kernel (two vectors of eight).
const PT: usize = 16;
/// Vectors of eight pixels per tile.
const NV: usize = PT / 8;
/// Output channels per register block (the block of the packed weight layout).
const MR: usize = 6;
const _: () = assert!(MR == cairn_core::layout::PAIRS6_ROWS);
/// Largest K (input channels, or patch elements for im2col) the packed tile holds.
pub const MAX_K: usize = 2048;
const MAX_PAIRS: usize = MAX_K / 2;

/// The int8 GEMM `Y[o, p] = requant(Σ_c W[o, c] · (X[c, p] − zx) + bias[o])` over
/// strided rows (input row `c` at `x[c * xs]`, output row `o` at `y[o * ys + y0]`,
/// `pix` columns), for `ic <= MAX_K`.
///
/// Each tile of 16 pixels is packed once as int16 pairs of consecutive channels
/// (`[x[c][p], x[c+1][p]]`, 64 bytes per pair of channels); then a register block of
/// 6 output channels × 16 pixels (12 accumulators, so that with the two pixel vectors,
/// the weight and a product nothing spills from the 16 registers) runs down K with
/// `vpmaddwd` (16 MACs, exact: int8 widened to int16, no saturation). Each weight pair is
/// either one `vpbroadcastd` from pre-packed weights (`Layout::Pairs6`) or read from its
/// int8 row and sign-extended (`vpbroadcastw` + `vpmovsxbw`). The sum runs on raw int8
/// values and `zx·Σw` is subtracted once (`row_offset`). Requantization in vector form is
/// the same arithmetic as `cairn_core::quant::requantize`: convert, multiply, clamp,
/// convert with the default rounding (nearest even).
///
/// # Safety
/// The CPU must support AVX2; the slices hold every row the strides address; the weight
/// matrix is `oc × ic` (int8 rows, or packed with that shape).
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    x: &[i8],
    xs: usize,
    q: &Q<'_>,
    ic: usize,
    oc: usize,
    pix: usize,
    y: &mut [i8],
    ys: usize,
    y0: usize,
) {
    match q.wp {
        // SAFETY: the caller's guarantees, passed on; the packed tensor has this oc × ic
        // (its length matches its shape: `TensorRef::pairs6`).
        Some((_, g)) if g.oc == oc && g.k == ic => unsafe {
            gemm_impl::<true>(x, xs, q, ic, oc, pix, y, ys, y0)
        },
        // Unreachable for a checked model; never read past the packed tensor.
        Some(_) => debug_assert!(false, "packed weights of another shape"),
        None => unsafe { gemm_impl::<false>(x, xs, q, ic, oc, pix, y, ys, y0) },
    }
}

/// `gemm` for row-major (`PACKED = false`) or pre-packed `Layout::Pairs6` weights. The
/// packed order is exactly this kernel's: block `o / 6`, pair `cp`, row `k` is one
/// int32 (two int16 weights) that `vpbroadcastd` loads straight into a register.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_impl<const PACKED: bool>(
    x: &[i8],
    xs: usize,
    q: &Q<'_>,
    ic: usize,
    oc: usize,
    pix: usize,
    y: &mut [i8],
    ys: usize,
    y0: usize,
) {
    debug_assert!(ic <= MAX_K && (PACKED || q.w.len() >= oc * ic));
    let pairs = ic.div_ceil(2);
    let full = ic / 2;
    // Not zeroed (96 KB per call would cost more than a small conv): every element
    // read below was written by the packing loop of the same tile.
    let mut xp_buf = core::mem::MaybeUninit::<[i32; MAX_PAIRS * PT]>::uninit();
    let xpw = xp_buf.as_mut_ptr() as *mut i32;
    let rq = Requant::of(q);
    let mut p0 = 0;
    while p0 < pix {
        let pt = PT.min(pix - p0);
        // Pack the tile: pair row cp holds channels 2cp and 2cp+1 (zero past ic or pix).
        for cp in 0..pairs {
            for j in 0..NV {
                let n = pt.saturating_sub(8 * j).min(8);
                let (a, b) = if n == 0 {
                    (_mm_setzero_si128(), _mm_setzero_si128())
                } else {
                    let a = load8(x, 2 * cp * xs + p0 + 8 * j, n);
                    let b = if 2 * cp + 1 < ic {
                        load8(x, (2 * cp + 1) * xs + p0 + 8 * j, n)
                    } else {
                        _mm_setzero_si128()
                    };
                    (a, b)
                };
                let (a16, b16) = (_mm_cvtepi8_epi16(a), _mm_cvtepi8_epi16(b));
                let v =
                    _mm256_set_m128i(_mm_unpackhi_epi16(a16, b16), _mm_unpacklo_epi16(a16, b16));
                // SAFETY: cp < pairs <= MAX_PAIRS and 8j + 8 <= PT: inside the buffer.
                unsafe { _mm256_storeu_si256(xpw.add(cp * PT + 8 * j) as *mut __m256i, v) };
            }
        }
        let mut o = 0;
        while o < oc {
            let ob = MR.min(oc - o);
            let mut acc = [[_mm256_setzero_si256(); NV]; MR];
            let xpp = xpw as *const i32;
            if PACKED {
                // Rows past oc are zero in the packed block (computed, never stored).
                let wp = q.wp.map_or(&[][..], |(wp, _)| wp);
                let blk = (o / MR) * pairs * MR;
                debug_assert!(wp.len() >= 2 * (blk + pairs * MR));
                let wp32 = wp.as_ptr() as *const i32;
                for cp in 0..pairs {
                    // SAFETY: cp < pairs, so the 16 i32 at cp * PT are inside xp.
                    let xv: [__m256i; NV] = core::array::from_fn(|j| unsafe {
                        _mm256_loadu_si256((xpp.add(cp * PT) as *const __m256i).add(j))
                    });
                    for (k, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: block o/6 < ⌈oc/6⌉, cp < pairs, k < 6: inside the
                        // packed tensor (its length was checked against oc and ic).
                        let wv = _mm256_set1_epi32(unsafe {
                            wp32.add(blk + cp * MR + k).read_unaligned()
                        });
                        for j in 0..NV {
                            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(xv[j], wv));
                        }
                    }
                }
            }
            // Rows past oc repeat the last row (computed, never stored).
            let rows: [&[i8]; MR] = core::array::from_fn(|k| {
                let r = (o + k).min(oc - 1);
                if PACKED {
                    &[]
                } else {
                    &q.w[r * ic..(r + 1) * ic]
                }
            });
            for cp in 0..if PACKED { 0 } else { full } {
                // SAFETY: cp < pairs, so the 24 i32 at cp * PT are inside xp.
                let xv: [__m256i; NV] = core::array::from_fn(|j| unsafe {
                    _mm256_loadu_si256((xpp.add(cp * PT) as *const __m256i).add(j))
                });
                for k in 0..MR {
                    // SAFETY: 2cp + 1 < ic: both bytes are inside row k.
                    let raw =
                        unsafe { (rows[k].as_ptr().add(2 * cp) as *const i16).read_unaligned() };
                    let wv = _mm256_cvtepi8_epi16(_mm_set1_epi16(raw));
                    for j in 0..NV {
                        acc[k][j] = _mm256_add_epi32(acc[k][j], _mm256_madd_epi16(xv[j], wv));
                    }
                }
            }
            if !PACKED && pairs > full {
                // Odd ic: the last channel alone (its partner row in the tile is zero).
                let cp = full;
                let xv: [__m256i; NV] = core::array::from_fn(|j| {
                    // SAFETY: row cp < pairs of this tile was written above.
                    unsafe { _mm256_loadu_si256(xpp.add(cp * PT + 8 * j) as *const __m256i) }
                });
                for k in 0..MR {
                    let wv = _mm256_set1_epi32(rows[k][2 * cp] as i32 & 0xffff);
                    for j in 0..NV {
                        acc[k][j] = _mm256_add_epi32(acc[k][j], _mm256_madd_epi16(xv[j], wv));
                    }
                }
            }
            for (k, acc) in acc.iter().enumerate().take(ob) {
                let oo = o + k;
                let off = row_offset(q, oo, ic);
                let (voff, vs) = (_mm256_set1_epi32(off), Scale::of(q, oo));
                for (j, a) in acc.iter().enumerate() {
                    let n = pt.saturating_sub(8 * j).min(8);
                    if n == 0 {
                        break;
                    }
                    let at = oo * ys + y0 + p0 + 8 * j;
                    rq.store_q(_mm256_add_epi32(*a, voff), vs, &mut y[at..at + n]);
                }
            }
            o += ob;
        }
        p0 += pt;
    }
}

/// Output channel `c`'s multipliers in vector form: `pos` for accumulators at or above
/// zero, `neg` below (the same unless a PRelu is folded in: `Q::neg`).
#[derive(Clone, Copy)]
pub(super) struct Scale {
    pos: __m256,
    neg: __m256,
}

impl Scale {
    /// Channels `c..c + 8`'s multipliers, one a lane (the GEMV's eight rows).
    ///
    /// # Safety
    /// AVX; `q` has multipliers for channels up to `c + 8`.
    #[inline(always)]
    pub(super) unsafe fn lanes(q: &Q<'_>, c: usize) -> Scale {
        let pos = &q.scales[c..c + 8];
        let neg = match q.neg {
            Some(n) => &n[c..c + 8],
            None => pos,
        };
        // SAFETY: each slice holds exactly 8 f32 (checked by the slicing above).
        unsafe {
            Scale {
                pos: _mm256_loadu_ps(pos.as_ptr()),
                neg: _mm256_loadu_ps(neg.as_ptr()),
            }
        }
    }

    /// Each lane's own multipliers (`pos` at or above zero, `neg` below), in whatever
    /// channel order the caller's accumulators hold.
    #[cfg(feature = "std")]
    #[inline(always)]
    pub(super) fn from_lanes(pos: &[f32; 8], neg: &[f32; 8]) -> Scale {
        // SAFETY: 32 bytes of each 8-lane array (AVX, present wherever this module runs).
        unsafe {
            Scale {
                pos: _mm256_loadu_ps(pos.as_ptr()),
                neg: _mm256_loadu_ps(neg.as_ptr()),
            }
        }
    }

    #[inline(always)]
    pub(super) fn of(q: &Q<'_>, c: usize) -> Scale {
        // SAFETY: plain register broadcasts (SSE/AVX, present wherever this module runs).
        unsafe {
            Scale {
                pos: _mm256_set1_ps(q.scales[c]),
                neg: _mm256_set1_ps(q.neg_scale(c)),
            }
        }
    }
}

/// Requantize the leading multiple of 8 of `acc` into `out` (output channel `c`); returns
/// how many were done.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn requant8(acc: &[i32], c: usize, q: &Q<'_>, out: &mut [i8]) -> usize {
    let n = acc.len().min(out.len()) / 8 * 8;
    let (rq, vs) = (Requant::of(q), Scale::of(q, c));
    for (a8, o8) in acc[..n].chunks_exact(8).zip(out[..n].chunks_exact_mut(8)) {
        // SAFETY: a8 is exactly 8 i32 (32 bytes); the load is unaligned-safe.
        let v = unsafe { _mm256_loadu_si256(a8.as_ptr() as *const __m256i) };
        rq.store_q(v, vs, o8);
    }
    n
}

/// The output stage of `cairn_core::quant::requantize` in vector form: convert, multiply
/// by the channel's scale, clamp to the activation range less the zero point, convert
/// with the default rounding (nearest even), add the zero point — the same operations.
#[derive(Clone, Copy)]
pub(super) struct Requant {
    lo: __m256,
    hi: __m256,
    zy: __m256i,
}

impl Requant {
    #[inline(always)]
    /// The output stage of an op with activation range `lo..=hi` and zero point `zy`
    /// (the FC/MatMul block of `mm.rs`, a `std` path).
    #[cfg(feature = "std")]
    pub(super) fn new(lo: i32, hi: i32, zy: i32) -> Requant {
        // SAFETY: plain register broadcasts (SSE/AVX, present wherever this module runs).
        unsafe {
            Requant {
                lo: _mm256_set1_ps(lo as f32 - zy as f32),
                hi: _mm256_set1_ps(hi as f32 - zy as f32),
                zy: _mm256_set1_epi32(zy),
            }
        }
    }

    pub(super) fn of(q: &Q<'_>) -> Requant {
        // SAFETY: plain register broadcasts (SSE/AVX, present wherever this module runs).
        unsafe {
            Requant {
                lo: _mm256_set1_ps(q.lo as f32 - q.zy as f32),
                hi: _mm256_set1_ps(q.hi as f32 - q.zy as f32),
                zy: _mm256_set1_epi32(q.zy),
            }
        }
    }

    /// Requantize eight accumulators with scale `vs` into `d` (up to 8 bytes).
    #[inline(always)]
    pub(super) unsafe fn store(self, acc: __m256i, vs: __m256, d: &mut [i8]) {
        unsafe { store8(self.lanes(acc, vs), d) };
    }

    /// `store` with each lane's multiplier picked by its accumulator's sign.
    #[inline(always)]
    pub(super) unsafe fn store_q(self, acc: __m256i, vs: Scale, d: &mut [i8]) {
        unsafe { store8(self.lanes_q(acc, vs), d) };
    }

    /// `lanes` with each lane's multiplier picked by its accumulator's sign (the sign bit
    /// selects `neg`): `cairn_core::quant::requantize_signed`, eight lanes.
    #[inline(always)]
    pub(super) unsafe fn lanes_q(self, acc: __m256i, vs: Scale) -> __m256i {
        unsafe {
            let s = _mm256_blendv_ps(vs.pos, vs.neg, _mm256_castsi256_ps(acc));
            self.lanes(acc, s)
        }
    }

    /// Requantize eight accumulators with scale `vs`: int32 lanes in [-128, 127].
    #[inline(always)]
    pub(super) unsafe fn lanes(self, acc: __m256i, vs: __m256) -> __m256i {
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), vs);
        let f = _mm256_min_ps(_mm256_max_ps(f, self.lo), self.hi);
        _mm256_add_epi32(_mm256_cvtps_epi32(f), self.zy)
    }
}

/// [`Requant`] for sixteen accumulators at once, with the clamps done by saturation: the
/// scaled lanes are rounded with no clamp, packed to int16 with saturation, the zero point
/// added with int16 saturation, packed to int8 with saturation, then clamped to the
/// activation range as bytes. Four float clamps and two int32 adds per sixteen outputs
/// become one int16 add and two byte clamps, and the sign blend is skipped when no PRelu is
/// folded in. (The `std` paths use it: the implicit GEMM and the depthwise kernel.)
///
/// Exact (the same bytes as `requantize_signed`) where every multiplier is at most 0.5 in
/// magnitude (`of` checks): then |acc·s| ≤ 2^30 for any int32 `acc`, so the rounding
/// conversion `r` is exact, and the reference's float clamp commutes with rounding (its
/// bounds are integers), giving `clamp(r + zy, lo, hi)`. The saturating packs keep that:
/// `r + zy` is exact for |r| ≤ 32639, and beyond it both sides give the range's end.
#[cfg(feature = "std")]
#[derive(Clone, Copy)]
pub(super) struct Narrow {
    zy: __m256i,
    lo: __m128i,
    hi: __m128i,
    signed: bool,
}

#[cfg(feature = "std")]
impl Narrow {
    /// The stage for `q`'s output, or `None` where a multiplier exceeds 0.5 in magnitude
    /// or the activation range is not within int8's (the caller keeps [`Requant`]).
    pub(super) fn of(q: &Q<'_>) -> Option<Narrow> {
        let small = |s: &[f32]| s.iter().all(|v| v.abs() <= 0.5);
        let signed = q.neg.is_some() && !cfg!(target_arch = "arm");
        if !small(q.scales)
            || (signed && !q.neg.is_some_and(small))
            || q.lo < -128
            || q.hi > 127
            || q.lo > q.hi
            || !(-128..=127).contains(&q.zy)
        {
            return None;
        }
        // SAFETY: plain register broadcasts (SSE/AVX, present wherever this module runs).
        unsafe {
            Some(Narrow {
                zy: _mm256_set1_epi16(q.zy as i16),
                lo: _mm_set1_epi8(q.lo as i8),
                hi: _mm_set1_epi8(q.hi as i8),
                signed,
            })
        }
    }

    /// `round(acc · s)` per lane (the sign's multiplier when a PRelu is folded in), with
    /// no clamp and no zero point.
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(super) unsafe fn scaled(self, acc: __m256i, vs: Scale) -> __m256i {
        // SAFETY: AVX2 (the caller's contract); register-only instructions.
        unsafe {
            let s = if self.signed {
                _mm256_blendv_ps(vs.pos, vs.neg, _mm256_castsi256_ps(acc))
            } else {
                vs.pos
            };
            _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), s))
        }
    }

    /// Two vectors of [`scaled`](Self::scaled) lanes as sixteen int16 in
    /// `_mm256_packs_epi32` order, plus the zero point (both saturating).
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(super) unsafe fn words(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 (the caller's contract); register-only instructions.
        unsafe { _mm256_adds_epi16(_mm256_packs_epi32(a, b), self.zy) }
    }

    /// Sixteen int16 (`lo` then `hi`) as bytes, saturated, then clamped to the range.
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(super) unsafe fn bytes(self, lo: __m128i, hi: __m128i) -> __m128i {
        // SAFETY: AVX2 (the caller's contract); register-only instructions.
        unsafe { _mm_min_epi8(_mm_max_epi8(_mm_packs_epi16(lo, hi), self.lo), self.hi) }
    }

    /// Two vectors of eight accumulators as sixteen bytes in lane order (`a` then `b`).
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(super) unsafe fn pack16(self, a: __m256i, b: __m256i, vs: Scale) -> __m128i {
        // SAFETY: AVX2 (the caller's contract); register-only instructions.
        unsafe {
            let w = self.words(self.scaled(a, vs), self.scaled(b, vs));
            // Quads (a0–3, b0–3, a4–7, b4–7) → (a0–3, a4–7, b0–3, b4–7).
            let w = _mm256_permute4x64_epi64(w, 0xD8);
            self.bytes(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1))
        }
    }

    /// [`pack16_plain`](Self::pack16_plain) of two output channels at once: `a` and `b`
    /// are each channel's sixteen accumulators (lanes 0–7, 8–15), `sa` and `sb` their
    /// multipliers; the 32 bytes are `a`'s sixteen, then `b`'s. The same saturating steps
    /// lane for lane, so the same bytes; one byte pack and one `vpermd` for both channels
    /// instead of a pack, a permute and an extract for each.
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(super) unsafe fn pack32_plain(
        self,
        a: [__m256i; 2],
        b: [__m256i; 2],
        sa: __m256,
        sb: __m256,
    ) -> __m256i {
        // SAFETY: AVX2 (the caller's contract); register-only instructions.
        unsafe {
            let r =
                |v: __m256i, s: __m256| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(v), s));
            // int16 per 128-bit lane: (0–3, 8–11 | 4–7, 12–15) of the channel's pixels.
            let wa = self.words(r(a[0], sa), r(a[1], sa));
            let wb = self.words(r(b[0], sb), r(b[1], sb));
            // Dwords of four bytes: a0–3 a8–11 b0–3 b8–11 | a4–7 a12–15 b4–7 b12–15.
            let bytes = _mm256_packs_epi16(wa, wb);
            _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
        }
    }

    /// Whether no PRelu is folded in and the activation range is all of int8: then
    /// [`pack16_plain`](Self::pack16_plain) is [`pack16`](Self::pack16).
    pub(super) fn plain(&self) -> bool {
        // SAFETY: SSE2 register moves.
        let (lo, hi) = unsafe {
            (
                _mm_cvtsi128_si32(self.lo) as i8,
                _mm_cvtsi128_si32(self.hi) as i8,
            )
        };
        !self.signed && lo == i8::MIN && hi == i8::MAX
    }

    /// [`pack16`](Self::pack16) where [`plain`](Self::plain) holds: one multiplier `s`
    /// for every sign, and no byte clamp (the saturating pack is the range's clamp).
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(super) unsafe fn pack16_plain(self, a: __m256i, b: __m256i, s: __m256) -> __m128i {
        // SAFETY: AVX2 (the caller's contract); register-only instructions.
        unsafe {
            let r = |v: __m256i| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(v), s));
            let w = _mm256_permute4x64_epi64(self.words(r(a), r(b)), 0xD8);
            _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1))
        }
    }
}

/// Eight int32 lanes already in [-128, 127] to eight int8 (saturating packs are exact),
/// the first `d.len()` (at most 8) stored.
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
pub(crate) unsafe fn store8(r: __m256i, d: &mut [i8]) {
    let r16 = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    crate::util::put8(_mm_cvtsi128_si64(_mm_packs_epi16(r16, r16)) as u64, d);
}

/// int16 pairs in the padded, phase-split plane of the depthwise kernel.
const DW_BUF: usize = 16384;
/// Pairs a band of the depthwise kernel aims to stay within (16 KB).
const DW_L1: usize = 4096;
/// Output columns per register block of the depthwise kernel (four vectors of eight).
const DW_OX: usize = 32;
/// Columns of slack after each phase row of the byte staging row.
const DW_SLACK: usize = 16;

/// (rows, columns per phase) of the depthwise kernel's padded plane, if it fits.
/// (output rows per band, columns per phase) of the depthwise kernel's padded plane,
/// if one output row's input rows fit the buffer. Bands keep the staged rows within
/// 16 KB (L1) where they can: a whole 112×112 plane of pairs would be 60 KB.
fn dw_dims(g: &super::Geo) -> Option<(usize, usize)> {
    if g.sw > 4 || g.kh * g.kw > 49 || g.oh == 0 || g.ow == 0 {
        return None;
    }
    let rows_for = |b: usize| (b - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    // Columns a block reads: up to DW_OX past its start, plus the widest tap offset.
    let jw = g.ow.div_ceil(DW_OX) * DW_OX + (g.kw - 1) * g.dw / g.sw + 1;
    if rows_for(1) * g.sw * jw > DW_BUF {
        return None;
    }
    let mut band = 1;
    while band < g.oh && rows_for(band + 1) * g.sw * jw <= DW_L1 {
        band += 1;
    }
    Some((band, jw))
}

pub fn depthwise_fits(g: &super::Geo) -> bool {
    dw_dims(g).is_some()
}

/// Depthwise conv with the accumulators in registers and two taps per `vpmaddwd`.
///
/// Each channel's plane is laid out once, padded with the zero point (so every output
/// reads every tap, with no bounds) and, for horizontal stride `sw` > 1, split into `sw`
/// column phases (column `ox·sw + kx·dw` is phase `kx·dw mod sw`, index
/// `ox + kx·dw / sw`, contiguous in `ox`). It is stored as int16 pairs of neighbours
/// `(x[j], x[j+1])`, so two taps of one row and phase whose indices differ by one are
/// one `vpmaddwd` against the weight pair `(w_a, w_b)`; a tap without a partner is paired
/// with weight 0. Each block of 32 output columns of a row sums its taps in four int32
/// vectors: `Σ w·x` on raw values, `bias − zx·Σw` added once (the reference's sums
/// modulo 2^32, where its wrapping arithmetic lives).
///
/// # Safety
/// The CPU must support AVX2; `depthwise_fits(g)`.
#[target_feature(enable = "avx2")]
pub unsafe fn depthwise(g: &super::Geo, q: &Q<'_>, y: &mut [i8]) {
    let Some((band, jw)) = dw_dims(g) else {
        return;
    };
    let (h, w, oh, ow, sw) = (g.h, g.w, g.oh, g.ow, g.sw);
    let ksz = g.kh * g.kw;
    let plane = h * w;
    // Pairs plane: row r, phase ph at (r·sw + ph)·jw, all jw entries of every row and
    // phase written for each channel before any is read. Not zeroed (64 KB per call
    // would cost more than a small conv); only raw-pointer accesses touch it.
    let mut pairs_buf = core::mem::MaybeUninit::<[i32; DW_BUF]>::uninit();
    let pw = pairs_buf.as_mut_ptr() as *mut i32;
    let sj = jw + DW_SLACK;
    // sw·(jw + slack) <= DW_BUF + 4·DW_SLACK since rows·sw·jw <= DW_BUF.
    let zx = q.zx as i8;
    // Every staging row starts as the zero point: for an input row inside the image only
    // the columns inside it are copied (the same columns for every row of a phase), so the
    // padding columns stay the zero point without a fill per row.
    let mut stage = [zx; DW_BUF + 4 * DW_SLACK];
    let rq = Requant::of(q);
    // Pair-taps (ky, phase, index offset, packed weight pair), from the tap layout
    // alone; weights filled per channel. Taps of a phase have increasing offsets.
    let mut taps = [(0usize, 0usize, 0usize, 0usize, usize::MAX); 49];
    let mut nt = 0;
    for ky in 0..g.kh {
        for ph in 0..sw {
            let mut kx = 0;
            while kx < g.kw {
                let t = kx * g.dw;
                if t % sw != ph {
                    kx += 1;
                    continue;
                }
                // Partner: the next tap of this phase, if its index is one further.
                let mut kb = usize::MAX;
                let mut k2 = kx + 1;
                while k2 < g.kw {
                    let t2 = k2 * g.dw;
                    if t2 % sw == ph {
                        if t2 / sw == t / sw + 1 {
                            kb = k2;
                        }
                        break;
                    }
                    k2 += 1;
                }
                taps[nt] = (ky, ph, t / sw, kx, kb);
                nt += 1;
                kx = if kb == usize::MAX { kx + 1 } else { kb + 1 };
            }
        }
    }
    let mut wpair = [0i32; 49];
    for n in 0..g.n {
        for c in 0..g.c {
            let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
            let wc = &q.w[c * ksz..(c + 1) * ksz];
            for (wp, &(ky, _, _, ka, kb)) in wpair.iter_mut().zip(&taps[..nt]) {
                let wa = wc[ky * g.kw + ka] as i16 as u16 as u32;
                let wb = if kb == usize::MAX {
                    0
                } else {
                    wc[ky * g.kw + kb] as i16 as u16 as u32
                };
                *wp = (wa | (wb << 16)) as i32;
            }
            let wsum: i32 = wc.iter().map(|&v| v as i32).sum();
            let base = q
                .bias
                .map_or(0, |b| b[c])
                .wrapping_sub(q.zx.wrapping_mul(wsum));
            let vs = Scale::of(q, c);
            let yc = &mut y[(n * g.c + c) * oh * ow..(n * g.c + c + 1) * oh * ow];
            let pp = pw as *const i32;
            let mut oy0 = 0;
            while oy0 < oh {
                let ob = band.min(oh - oy0);
                let rows = (ob - 1) * g.sh + (g.kh - 1) * g.dh + 1;
                // Padded row r of the band is input row oy0·sh + r − pt, column col is
                // input column col − pl (zero point outside), at phase col % sw, index col / sw.
                for r in 0..rows {
                    let iy = (oy0 * g.sh + r) as isize - g.pt;
                    for ph in 0..sw {
                        let dst = &mut stage[ph * sj..(ph + 1) * sj];
                        // Index j is column j·sw + ph, input column j·sw + ph − pl.
                        let off = ph as isize - g.pl;
                        let (lo, hi) = crate::util::inside(off, sw, w, dst.len());
                        if iy < 0 || iy >= h as isize {
                            dst[lo..hi.max(lo)].fill(zx);
                        } else if hi > lo {
                            let xr = &xc[iy as usize * w..(iy as usize + 1) * w];
                            let a = (lo as isize * sw as isize + off) as usize;
                            super::copy_strided(
                                &xr[a..a + (hi - lo - 1) * sw + 1],
                                sw,
                                &mut dst[lo..hi],
                            );
                        }
                        // Widen to pairs (x[j], x[j+1]), 16 at a time.
                        let base = (r * sw + ph) * jw;
                        let sp = dst.as_ptr();
                        let mut j = 0;
                        while j < jw {
                            // SAFETY: j + 17 <= jw + 16 = sj: inside this phase's staging row.
                            let (a, b) = unsafe {
                                (
                                    _mm_loadu_si128(sp.add(j) as *const __m128i),
                                    _mm_loadu_si128(sp.add(j + 1) as *const __m128i),
                                )
                            };
                            let lo = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b));
                            let hi = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b));
                            let n = (jw - j).min(16);
                            if n == 16 && base + j + 16 <= DW_BUF {
                                // SAFETY: 16 i32 at base + j are inside the buffer (checked).
                                unsafe {
                                    let p = pw.add(base + j) as *mut __m256i;
                                    _mm256_storeu_si256(p, lo);
                                    _mm256_storeu_si256(p.add(1), hi);
                                }
                            } else {
                                let mut tmp = [0i32; 16];
                                // SAFETY: tmp is 16 i32; base + j + n <= (r·sw + ph + 1)·jw
                                // <= rows·sw·jw <= DW_BUF.
                                unsafe {
                                    let p = tmp.as_mut_ptr() as *mut __m256i;
                                    _mm256_storeu_si256(p, lo);
                                    _mm256_storeu_si256(p.add(1), hi);
                                    core::ptr::copy_nonoverlapping(
                                        tmp.as_ptr(),
                                        pw.add(base + j),
                                        n,
                                    );
                                }
                            }
                            j += 16;
                        }
                    }
                }
                for oy in oy0..oy0 + ob {
                    let mut ox0 = 0;
                    while ox0 < ow {
                        let mut acc = [_mm256_set1_epi32(base); 4];
                        for (&(ky, ph, off, _, _), &wp) in taps[..nt].iter().zip(&wpair) {
                            let r = (oy - oy0) * g.sh + ky * g.dh;
                            let at = (r * sw + ph) * jw + ox0 + off;
                            let wv = _mm256_set1_epi32(wp);
                            for (v, a) in acc.iter_mut().enumerate() {
                                // SAFETY: r < rows and ox0 + off + 32 <= jw (dw_dims), so
                                // the 8 pairs are inside this phase row of `pairs`.
                                let xv = unsafe {
                                    _mm256_loadu_si256(pp.add(at + 8 * v) as *const __m256i)
                                };
                                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wv));
                            }
                        }
                        for (v, a) in acc.iter().enumerate() {
                            let o = ox0 + 8 * v;
                            if o >= ow {
                                break;
                            }
                            let cnt = 8.min(ow - o);
                            rq.store_q(*a, vs, &mut yc[oy * ow + o..oy * ow + o + cnt]);
                        }
                        ox0 += DW_OX;
                    }
                }
                oy0 += ob;
            }
        }
    }
}

/// `dst[i] = src[2i]` (src holds at least 2·len − 1 bytes): 8 at a time with `pshufb`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn copy_stride2(src: &[i8], dst: &mut [i8]) {
    let evens = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    let mut i = 0;
    while i + 8 <= dst.len() && 2 * i + 16 <= src.len() {
        // SAFETY: 16 bytes from 2i are inside src (checked above); unaligned-safe.
        let v = unsafe { _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i) };
        crate::util::put8(
            _mm_cvtsi128_si64(_mm_shuffle_epi8(v, evens)) as u64,
            &mut dst[i..i + 8],
        );
        i += 8;
    }
    for (d, s) in dst[i..].iter_mut().zip(src[2 * i..].iter().step_by(2)) {
        *d = *s;
    }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn call<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `fast_conv_rows::row_and_store` compiled with AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn conv_row(
    rows: &crate::fast_conv_rows::Rows<'_>,
    acc: &mut [[i32; crate::fast_conv_rows::MAX_ROW]; crate::fast_conv_rows::OC_BLOCK],
    xr: &mut [i32; crate::fast_conv_rows::MAX_ROW],
    y: &mut [i8],
) {
    crate::fast_conv_rows::row_and_store(rows, acc, xr, y)
}

/// `fast_deconv::row_and_store` compiled with AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn deconv_row(
    rows: &crate::fast_deconv::Rows<'_>,
    acc: &mut [[i32; crate::fast_deconv::MAX_OW]; crate::fast_conv_rows::OC_BLOCK],
    xr: &mut [i32; crate::fast_deconv::MAX_OW],
    y: &mut [i8],
) {
    crate::fast_deconv::row_and_store(rows, acc, xr, y)
}

/// `depthwise_rows_body` compiled with AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn depthwise_rows(g: &super::Geo, q: &Q<'_>, y: &mut [i8]) {
    super::depthwise_rows_body(g, q, y)
}

/// Up to 8 int8 values starting at `at` (missing lanes zero).
#[inline(always)]
unsafe fn load8(x: &[i8], at: usize, n: usize) -> __m128i {
    if n == 8 {
        let s = &x[at..at + 8];
        // SAFETY: `s` is exactly 8 bytes long; the read is unaligned-safe.
        let v = unsafe { core::ptr::read_unaligned(s.as_ptr() as *const i64) };
        _mm_cvtsi64_si128(v)
    } else {
        let mut b = [0u8; 8];
        for (d, s) in b.iter_mut().zip(&x[at..at + n]) {
            *d = *s as u8;
        }
        _mm_cvtsi64_si128(i64::from_le_bytes(b))
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    extern crate std;
    use super::*;
    use cairn_core::quant::requantize_signed;
    use std::vec;

    fn q<'a>(scales: &'a [f32], neg: Option<&'a [f32]>, zy: i32, lo: i32, hi: i32) -> Q<'a> {
        Q {
            x: &[],
            w: &[],
            wp: None,
            offs: &[],
            bias: None,
            scales,
            neg,
            zx: 0,
            zy,
            lo,
            hi,
        }
    }

    /// The saturating output stage gives `requantize_signed`'s bytes for every int32
    /// accumulator class (the extremes, the int16 and int8 edges around the zero point)
    /// with multipliers up to 0.5, and is refused above it.
    #[test]
    fn narrow_matches_the_reference_where_it_is_taken() {
        if !available() {
            return;
        }
        let mut accs = vec![i32::MIN, i32::MIN + 1, i32::MAX, i32::MAX - 1, 0, 1, -1];
        for e in [7, 8, 15, 16, 20, 24, 30] {
            for d in [-1i64, 0, 1] {
                for s in [1i64, -1] {
                    let v = s * ((1i64 << e) + d);
                    accs.push(v.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
                }
            }
        }
        for t in -300..300 {
            accs.push(t * 37);
        }
        while !accs.len().is_multiple_of(16) {
            accs.push(12345);
        }
        let mults = [0.5f32, 0.4999, 0.25, 0.0123, 1e-6, 0.5 - f32::EPSILON / 4.0];
        let ranges = [(-128, 127), (0, 127), (-128, 0), (-20, 60), (5, 5)];
        for &pos in &mults {
            for neg in [None, Some(-0.5f32), Some(0.001)] {
                for &(lo, hi) in &ranges {
                    for zy in [-128, -1, 0, 3, 127] {
                        let (ps, ns) = ([pos], neg.map(|n| [n]));
                        let qq = q(&ps, ns.as_ref().map(|n| &n[..]), zy, lo, hi);
                        let nr = Narrow::of(&qq).expect("multipliers within 0.5");
                        let vs = Scale::of(&qq, 0);
                        for a16 in accs.chunks_exact(16) {
                            // SAFETY: AVX2 checked above; 8 int32 from each half.
                            let got: [i8; 16] = unsafe {
                                let a = _mm256_loadu_si256(a16.as_ptr() as *const __m256i);
                                let b = _mm256_loadu_si256(a16[8..].as_ptr() as *const __m256i);
                                core::mem::transmute(nr.pack16(a, b, vs))
                            };
                            for (k, &acc) in a16.iter().enumerate() {
                                let n = neg.unwrap_or(pos);
                                let want = requantize_signed(acc, pos, n, zy, lo, hi);
                                assert_eq!(
                                    got[k] as i32, want,
                                    "acc {acc} pos {pos} neg {n} zy {zy} range {lo}..={hi}"
                                );
                            }
                        }
                    }
                }
            }
        }
        for big in [0.5001f32, 1.0, 7.5] {
            assert!(Narrow::of(&q(&[0.1, big], None, 0, -128, 127)).is_none());
            assert!(Narrow::of(&q(&[0.1, 0.1], Some(&[0.1, -big]), 0, -128, 127)).is_none());
        }
    }
}

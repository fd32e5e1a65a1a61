//! f32 `Unary` functions, eight lanes at a time with AVX2 + FMA (HardSwish, Gelu, Erf,
//! GeluTanh and Tanh sixteen with AVX-512F; x86_64, detected at run time with `std`; elsewhere, and for the functions not
//! listed, the reference runs).
//!
//! Two kinds of function:
//! - exact: Identity, Relu, Clip, LeakyRelu, HardSigmoid, HardSwish, HardSwishAB, Neg, Abs,
//!   Sqrt, Reciprocal, Softsign, Pow with exponent 1 or 2 perform the reference's IEEE operations one for one
//!   (separate multiply and add, `max` then `min`), so they give its values;
//! - approximated: Exp (Cephes' polynomial on `x − n·ln 2`, scaled by `2^n` in two halves so
//!   overflow and underflow come out as the reference's ∞ and 0), Sigmoid and Silu (from
//!   that exp and an exact division), Tanh (Cephes' odd polynomial below 0.625, else
//!   `1 − 2/(e^{2|x|} + 1)`), Log (Cephes' `logf`: `x = m·2^e`, m in [√½, √2), a
//!   degree-9 polynomial in m − 1, subnormals scaled first), Erf (a rational odd/even approximation on [−4, 4], ±1
//!   outside), Gelu and GeluTanh (the reference's formulas on those), Softplus (`ln` of
//!   `eˣ + 1`, as the reference), Mish (`x · n / (n + 2)` with `n = eˣ·(eˣ + 2)`, which is
//!   `x · tanh(ln(1 + eˣ))`; `x` past 20), Pow with exponent 3 (`x · x · x`). Held to `|fast − ref| ≤ 4e-6·|ref| + 3e-7·max(1, |x|)` (`ERR_REL`,
//!   `ERR_ABS`; the `|x|` term covers Gelu's `0.5·x·(1 + erf)` where `1 + erf` cancels, as
//!   it does in the reference; `tests/exact_f32_fast.rs` checks it on dense sweeps of each
//!   function's range and on specials); a NaN input gives NaN, ±∞ the reference's limits.

use cairn_core::op::UnaryFn;
use cairn_core::{ExecError, OpCall, TensorMut};

/// The approximated functions' relative error bound (of the reference's value).
#[allow(dead_code)]
pub const ERR_REL: f32 = 4e-6;
/// The approximated functions' absolute error bound (times `max(1, |x|)`).
#[allow(dead_code)]
pub const ERR_ABS: f32 = 3e-7;

/// erf's numerator (odd, in x²; leading coefficient first) and denominator (even) on
/// [−4, 4], shared by the eight- and sixteen-lane forms.
#[cfg(target_arch = "x86_64")]
const ERF_P: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
#[cfg(target_arch = "x86_64")]
const ERF_Q: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_5e-4,
    -1.682_827e-3,
    -7.373_329_3e-3,
    -1.426_473_9e-2,
];
/// Cephes' e^r polynomial (leading coefficient first) and tanh's odd polynomial below
/// 0.625 (in x²).
#[cfg(target_arch = "x86_64")]
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];
#[cfg(target_arch = "x86_64")]
const TANH_P: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];

/// Whether this path computes `f` (with parameter `a`: Pow's exponent).
pub(super) fn covers(f: UnaryFn, a: f32) -> bool {
    use UnaryFn::*;
    (f == Pow && (a == 1.0 || a == 2.0 || a == 3.0))
        || matches!(
            f,
            Identity
                | Relu
                | Clip
                | LeakyRelu
                | HardSigmoid
                | HardSwish
                | HardSwishAB
                | Neg
                | Abs
                | Sqrt
                | Reciprocal
                | Softsign
                | Exp
                | Log
                | Sigmoid
                | Silu
                | Tanh
                | Erf
                | Gelu
                | GeluTanh
                | Mish
                | Softplus
                | Elu
        )
}

/// An element's cost in `crate::par`'s unit (multiply-adds of the same time): a compare,
/// a clamp or a few products, or a polynomial and a division.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn work(f: UnaryFn) -> u64 {
    use UnaryFn::*;
    match f {
        Exp | Log | Sigmoid | Silu | Tanh | Erf | Gelu | GeluTanh | Mish | Softplus | Elu => 32,
        _ => 8,
    }
}

/// f32 Unary through the vector path, or `None`.
pub fn unary_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    #[cfg(target_arch = "x86_64")]
    {
        if !super::avx2::available() {
            return None;
        }
        let f = UnaryFn::from_code(call.param(0))?;
        let (a, b) = (call.param_f32(1), call.param_f32(2));
        if !covers(f, a) {
            return None;
        }
        let src = if call.in_place {
            None
        } else {
            let s = call.req(0).ok()?.f32s().ok()?;
            if s.len() * 4 != out.data.len() {
                return None;
            }
            Some(s)
        };
        let y = match out.f32s_mut() {
            Ok(y) => y,
            Err(e) => return Some(Err(e)),
        };
        let wide = super::avx512::available();
        // Each element on its own: pieces of the map on the lent threads give the same
        // bits as one pass (the vector body's tail goes through the same operations).
        crate::par::par_pieces(y, 16, y.len() as u64 * work(f), |at, y| {
            let src = src.map(|s| &s[at..at + y.len()]);
            if f == UnaryFn::HardSwish && wide {
                // SAFETY: AVX-512F is present (checked above); `src`, when given, has
                // `y`'s length (the same piece of a map as long as `y`'s, checked above).
                unsafe { avx512::hardswish(src, y) };
            } else if matches!(
                f,
                UnaryFn::Gelu | UnaryFn::Erf | UnaryFn::GeluTanh | UnaryFn::Tanh
            ) && wide
            {
                // SAFETY: as above.
                unsafe { avx512::gelu_family(f, src, y) };
            } else {
                // SAFETY: AVX2 and FMA are present (checked above); `src`, when given,
                // has `y`'s length (as above).
                unsafe { avx2::apply(f, a, b, src, y) };
            }
        });
        super::dispatch::taken();
        Some(Ok(()))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (call, out, covers as fn(UnaryFn, f32) -> bool);
        None
    }
}

/// HardSwish sixteen lanes at a time: a CNN's activation pass over its whole map, bound by
/// these arithmetic operations (MobileNetV3-style models apply it after most convs). The
/// same operations as `avx2::apply`'s, lane for lane, so the same bits.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use cairn_core::op::UnaryFn;
    use core::arch::x86_64::*;

    /// `y[i] = hardswish(src[i])` (`src` = `y` itself when `None`).
    ///
    /// # Safety
    /// AVX-512F must be present; `src`, when given, must be as long as `y`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn hardswish(src: Option<&[f32]>, y: &mut [f32]) {
        assert!(src.is_none_or(|s| s.len() == y.len()));
        let n = y.len();
        let yp = y.as_mut_ptr();
        let sp = src.map_or(yp as *const f32, |s| s.as_ptr());
        let (six, c) = (_mm512_set1_ps(6.0), _mm512_set1_ps(1.0 / 6.0));
        let (lo, hi) = (_mm512_set1_ps(-8.0), _mm512_set1_ps(8.0));
        let (half, zero, one) = (
            _mm512_set1_ps(0.5),
            _mm512_setzero_ps(),
            _mm512_set1_ps(1.0),
        );
        let mut i = 0;
        while i < n {
            let mask = super::super::avx512::tail_masks(n - i).0;
            // SAFETY: the mask selects the lanes from i below n, inside `src` and `y`;
            // masked-off lanes are neither read nor written.
            let x = unsafe { _mm512_maskz_loadu_ps(mask, sp.add(i)) };
            // As `avx2::apply`: x / 6 by a correctly rounded product and one correction,
            // after clamping x to ±8; then the gate clamped to [0, 1] and the product.
            let xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
            let q0 = _mm512_mul_ps(xc, c);
            let q = _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, six, xc), c, q0);
            let g = _mm512_add_ps(q, half);
            let r = _mm512_mul_ps(x, _mm512_min_ps(_mm512_max_ps(g, zero), one));
            // SAFETY: as above.
            unsafe { _mm512_mask_storeu_ps(yp.add(i), mask, r) };
            i += 16;
        }
    }

    /// `y[i] = f(src[i])` for Gelu, Erf, GeluTanh and Tanh (`src` = `y` itself when
    /// `None`), sixteen lanes at a time: `avx2::apply`'s formulas, the same operations lane
    /// for lane, so the same bits (a transformer's feed-forward activation, run over its
    /// whole `[tokens, 4·d]` map).
    ///
    /// # Safety
    /// AVX-512F must be present; `src`, when given, must be as long as `y`; `f` is one of
    /// the four.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_family(f: UnaryFn, src: Option<&[f32]>, y: &mut [f32]) {
        assert!(src.is_none_or(|s| s.len() == y.len()));
        let n = y.len();
        let yp = y.as_mut_ptr();
        let sp = src.map_or(yp as *const f32, |s| s.as_ptr());
        let (half, one) = (_mm512_set1_ps(0.5), _mm512_set1_ps(1.0));
        let k = _mm512_set1_ps(core::f32::consts::FRAC_1_SQRT_2);
        let mut i = 0;
        while i < n {
            let mask = super::super::avx512::tail_masks(n - i).0;
            // SAFETY: the mask selects the lanes from i below n, inside `src` and `y`;
            // masked-off lanes are neither read nor written.
            let x = unsafe { _mm512_maskz_loadu_ps(mask, sp.add(i)) };
            let r = match f {
                UnaryFn::Gelu => {
                    let e = erf(_mm512_mul_ps(x, k));
                    _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, e))
                }
                UnaryFn::GeluTanh => {
                    let cube = _mm512_mul_ps(
                        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715), x), x),
                        x,
                    );
                    let inner = _mm512_mul_ps(_mm512_set1_ps(0.797_884_6), _mm512_add_ps(x, cube));
                    _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, tanh(inner)))
                }
                UnaryFn::Tanh => tanh(x),
                _ => erf(x),
            };
            // SAFETY: as above.
            unsafe { _mm512_mask_storeu_ps(yp.add(i), mask, r) };
            i += 16;
        }
    }

    /// NaN lanes of `x` carried into `r`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn keep_nan(x: __m512, r: __m512) -> __m512 {
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), r, x)
    }

    /// `r` with the sign bit of `x` or-ed in.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn or_sign(r: __m512, x: __m512) -> __m512 {
        let xs = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), xs))
    }

    /// `avx2::exp` on sixteen lanes: the same reduction, polynomial and two-half scaling.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::fast_f32) fn exp(x: __m512) -> __m512 {
        let xc = _mm512_min_ps(
            _mm512_set1_ps(89.0),
            _mm512_max_ps(_mm512_set1_ps(-104.0), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(xc, _mm512_set1_ps(core::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(super::EXP_P[0]);
        for c in super::EXP_P[1..].iter().copied() {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let e = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
        let ni = _mm512_cvtps_epi32(n);
        let h1 = _mm512_srai_epi32::<1>(ni);
        let h2 = _mm512_sub_epi32(ni, h1);
        let pow2 = |h: __m512i| {
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
                h,
                _mm512_set1_epi32(127),
            )))
        };
        let r = _mm512_mul_ps(_mm512_mul_ps(e, pow2(h1)), pow2(h2));
        keep_nan(x, r)
    }

    /// `avx2::tanh` on sixteen lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::fast_f32) fn tanh(x: __m512) -> __m512 {
        let ax = _mm512_abs_ps(x);
        let z = _mm512_mul_ps(x, x);
        let mut p = _mm512_set1_ps(super::TANH_P[0]);
        for c in super::TANH_P[1..].iter().copied() {
            p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(c));
        }
        let small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
        let e = exp(_mm512_add_ps(ax, ax));
        let one = _mm512_set1_ps(1.0);
        let big = _mm512_sub_ps(
            one,
            _mm512_div_ps(_mm512_set1_ps(2.0), _mm512_add_ps(e, one)),
        );
        let big = or_sign(big, x);
        let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(ax, _mm512_set1_ps(0.625));
        keep_nan(x, _mm512_mask_blend_ps(is_small, big, small))
    }

    /// `avx2`'s erf on sixteen lanes: the same rational function, clamp, tail and NaN
    /// rule.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn erf(x: __m512) -> __m512 {
        let xc = _mm512_min_ps(_mm512_set1_ps(4.0), _mm512_max_ps(_mm512_set1_ps(-4.0), x));
        let x2 = _mm512_mul_ps(xc, xc);
        let mut p = _mm512_set1_ps(super::ERF_P[0]);
        for c in super::ERF_P[1..].iter().copied() {
            p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(c));
        }
        p = _mm512_mul_ps(p, xc);
        let mut q = _mm512_set1_ps(super::ERF_Q[0]);
        for c in super::ERF_Q[1..].iter().copied() {
            q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(c));
        }
        // ±1 past 3.93 with x's sign; NaN lanes keep x.
        let one = or_sign(_mm512_set1_ps(1.0), x);
        let tail = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(x), _mm512_set1_ps(3.93));
        keep_nan(x, _mm512_mask_blend_ps(tail, _mm512_div_ps(p, q), one))
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use cairn_core::op::UnaryFn;
    use core::arch::x86_64::*;

    /// `y[i] = f(src[i])` (`src` = `y` itself when `None`).
    ///
    /// # Safety
    /// AVX2 and FMA must be present; `src`, when given, must be as long as `y`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn apply(f: UnaryFn, a: f32, b: f32, src: Option<&[f32]>, y: &mut [f32]) {
        assert!(src.is_none_or(|s| s.len() == y.len()));
        let n = y.len();
        let yp = y.as_mut_ptr();
        let sp = src.map_or(yp as *const f32, |s| s.as_ptr());
        let (va, vb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        let zero = _mm256_setzero_ps();
        let one = _mm256_set1_ps(1.0);
        macro_rules! each {
            (|$v:ident| $body:expr) => {{
                let mut i = 0;
                while i + 8 <= n {
                    // SAFETY: i + 8 ≤ n: inside `src` (as long as `y`) and `y`.
                    let $v = unsafe { _mm256_loadu_ps(sp.add(i)) };
                    let r = $body;
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_ps(yp.add(i), r) };
                    i += 8;
                }
                if i < n {
                    // The n − i < 8 last lanes through a mask (the others read as 0 and
                    // are not written), not copied through a stack vector: a short row's
                    // two copies cost more than its arithmetic.
                    let m = _mm256_cmpgt_epi32(
                        _mm256_set1_epi32((n - i) as i32),
                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                    );
                    // SAFETY: the mask selects the n − i floats from i, inside `src` and
                    // `y`; masked-off lanes are neither read nor written.
                    let $v = unsafe { _mm256_maskload_ps(sp.add(i), m) };
                    let r = $body;
                    // SAFETY: as above.
                    unsafe { _mm256_maskstore_ps(yp.add(i), m, r) };
                }
            }};
        }
        use UnaryFn::*;
        match f {
            Identity => each!(|x| x),
            Relu => each!(|x| _mm256_max_ps(x, zero)),
            Clip => each!(|x| _mm256_min_ps(_mm256_max_ps(x, va), vb)),
            LeakyRelu => each!(|x| {
                let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, zero);
                _mm256_blendv_ps(x, _mm256_mul_ps(va, x), neg)
            }),
            HardSigmoid => each!(|x| hard(_mm256_add_ps(_mm256_mul_ps(va, x), vb))),
            HardSwish => each!(|x| {
                // x / 6 without the divider (its throughput bounded MobileNetV3's
                // activations): q0 = x · RN(1/6), then one correction from the exact
                // residual x − 6·q0. That is the correctly rounded x / 6 for every float
                // of magnitude 2^-125 or more (checked over all 2^32 floats); below it
                // both quotients vanish beside the 0.5 added next, so g is the reference's
                // bits. x is clamped to ±8 first: beyond ±3 the gate saturates alike, and
                // ±inf then gives the reference's 1 or 0 instead of a NaN residual (a NaN
                // x is NaN · gate either way).
                let (six, c) = (_mm256_set1_ps(6.0), _mm256_set1_ps(1.0 / 6.0));
                let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-8.0)), _mm256_set1_ps(8.0));
                let q0 = _mm256_mul_ps(xc, c);
                let q = _mm256_fmadd_ps(_mm256_fnmadd_ps(q0, six, xc), c, q0);
                let g = _mm256_add_ps(q, _mm256_set1_ps(0.5));
                _mm256_mul_ps(x, hard(g))
            }),
            HardSwishAB => {
                each!(|x| { _mm256_mul_ps(x, hard(_mm256_add_ps(_mm256_mul_ps(va, x), vb))) })
            }
            Neg => each!(|x| _mm256_xor_ps(x, _mm256_set1_ps(-0.0))),
            Abs => each!(|x| _mm256_andnot_ps(_mm256_set1_ps(-0.0), x)),
            Sqrt => each!(|x| _mm256_sqrt_ps(x)),
            Reciprocal => each!(|x| _mm256_div_ps(one, x)),
            Softsign => each!(|x| {
                let ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
                _mm256_div_ps(x, _mm256_add_ps(one, ax))
            }),
            // The reference's x · x for 2 and x for 1; x · x · x for 3 (libm's powf rounds
            // once, this twice: within 2 ulp).
            Pow if a == 1.0 => each!(|x| x),
            Pow if a == 2.0 => each!(|x| _mm256_mul_ps(x, x)),
            Pow => each!(|x| _mm256_mul_ps(_mm256_mul_ps(x, x), x)),
            Exp => each!(|x| exp(x)),
            // The reference's (eˣ − 1)·α below zero, x elsewhere (a NaN compares false
            // and stays itself).
            Elu => each!(|x| {
                let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, zero);
                _mm256_blendv_ps(x, _mm256_mul_ps(_mm256_sub_ps(exp(x), one), va), neg)
            }),
            Log => each!(|x| log(x)),
            Sigmoid => each!(|x| sigmoid(x)),
            Silu => each!(|x| _mm256_mul_ps(x, sigmoid(x))),
            Tanh => each!(|x| tanh(x)),
            Erf => each!(|x| erf(x)),
            Gelu => each!(|x| {
                let e = erf(_mm256_mul_ps(
                    x,
                    _mm256_set1_ps(core::f32::consts::FRAC_1_SQRT_2),
                ));
                _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), x), _mm256_add_ps(one, e))
            }),
            GeluTanh => each!(|x| {
                // The reference's 0.5 · x · (1 + tanh(c · (x + 0.044715 · x · x · x))).
                let cube = _mm256_mul_ps(
                    _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715), x), x),
                    x,
                );
                let inner = _mm256_mul_ps(_mm256_set1_ps(0.797_884_6), _mm256_add_ps(x, cube));
                _mm256_mul_ps(
                    _mm256_mul_ps(_mm256_set1_ps(0.5), x),
                    _mm256_add_ps(one, tanh(inner)),
                )
            }),
            Softplus => each!(|x| log(_mm256_add_ps(exp(x), one))),
            Mish => each!(|x| {
                // tanh(ln(1 + e)) = n / (n + 2) with n = e·(e + 2), e = exp(x): no log
                // or tanh. Past 20 the reference's tanh is 1 (and n would overflow), so
                // the value is x.
                let e = exp(x);
                let n = _mm256_mul_ps(e, _mm256_add_ps(e, _mm256_set1_ps(2.0)));
                let r = _mm256_div_ps(_mm256_mul_ps(x, n), _mm256_add_ps(n, _mm256_set1_ps(2.0)));
                let big = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(20.0));
                _mm256_blendv_ps(r, x, big)
            }),
            // `covers` admits only the functions above.
            _ => unreachable!(),
        }
    }

    /// `v.max(0).min(1)`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hard(v: __m256) -> __m256 {
        _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(1.0))
    }

    /// NaN lanes of `x` carried into `r`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn keep_nan(x: __m256, r: __m256) -> __m256 {
        _mm256_blendv_ps(r, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
    }

    /// e^x: `x = n·ln 2 + r` (|r| ≤ ln 2 / 2, Cody–Waite split), Cephes' degree-5 polynomial
    /// for e^r, times 2^(n/2) · 2^(n − n/2) (each half a normal power of two for every
    /// clamped n, so overflow gives ∞ and underflow 0 or a subnormal).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub fn exp(x: __m256) -> __m256 {
        // max/min with the bound first: a NaN x passes through (fixed up at the end).
        let xc = _mm256_min_ps(
            _mm256_set1_ps(89.0),
            _mm256_max_ps(_mm256_set1_ps(-104.0), x),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(xc, _mm256_set1_ps(core::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(super::EXP_P[0]);
        for c in super::EXP_P[1..].iter().copied() {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        let ni = _mm256_cvtps_epi32(n);
        let h1 = _mm256_srai_epi32::<1>(ni);
        let h2 = _mm256_sub_epi32(ni, h1);
        let r = _mm256_mul_ps(_mm256_mul_ps(e, pow2(h1)), pow2(h2));
        keep_nan(x, r)
    }

    /// e^x, but 0 where e^x is below f32's smallest normal (x < −87.33): those lanes are
    /// computed from −87 instead, so no multiply has a subnormal result. Intel cores take a
    /// microcode assist (on the order of 100 cycles) for each, and a softmax over masked
    /// attention scores (−3.4e38 for every padded key) had one per masked element. For
    /// sums and quotients of such terms the difference is below 1.2e-38 absolute.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub fn exp_flush(x: __m256) -> __m256 {
        let bound = _mm256_set1_ps(-87.33);
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, bound);
        // `max` takes its second operand when one is NaN: a NaN x passes on to `exp`.
        let e = exp(_mm256_max_ps(_mm256_set1_ps(-87.0), x));
        _mm256_andnot_ps(tiny, e)
    }

    /// The natural log: Cephes' `logf`. `x = m·2^e` with m in [√½, √2) (a subnormal x
    /// scaled by 2^23 first), `log x = e·ln 2 + (m − 1) − (m − 1)²/2 + (m − 1)³·P(m − 1)`,
    /// ln 2 in two parts. 0 gives −∞, a negative x NaN, +∞ itself (libm's `logf`).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn log(x: __m256) -> __m256 {
        let zero = _mm256_setzero_ps();
        let one = _mm256_set1_ps(1.0);
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(f32::MIN_POSITIVE));
        let xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(8_388_608.0)), tiny);
        let bits = _mm256_castps_si256(xs);
        // x = m·2^e with m in [0.5, 1): the exponent field less 126, and the mantissa
        // under the exponent field of 0.5.
        let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(126));
        let e = _mm256_sub_epi32(
            e,
            _mm256_and_si256(_mm256_castps_si256(tiny), _mm256_set1_epi32(23)),
        );
        let m = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x3f00_0000),
        ));
        // Below √½: m + m − 1 and e − 1 (m in [√½, √2) then), else m − 1.
        let low = _mm256_cmp_ps::<_CMP_LT_OQ>(m, _mm256_set1_ps(0.707_106_77));
        let ef = _mm256_sub_ps(_mm256_cvtepi32_ps(e), _mm256_and_ps(low, one));
        let m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(low, m)), one);
        let z = _mm256_mul_ps(m, m);
        let mut p = _mm256_set1_ps(7.037_683_6e-2);
        for c in [
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ] {
            p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(c));
        }
        let y = _mm256_mul_ps(_mm256_mul_ps(p, m), z);
        let y = _mm256_fmadd_ps(ef, _mm256_set1_ps(-2.121_944_4e-4), y);
        let y = _mm256_fnmadd_ps(_mm256_set1_ps(0.5), z, y);
        let r = _mm256_fmadd_ps(ef, _mm256_set1_ps(0.693_359_4), _mm256_add_ps(m, y));
        let r = _mm256_blendv_ps(
            r,
            _mm256_set1_ps(f32::NEG_INFINITY),
            _mm256_cmp_ps::<_CMP_EQ_OQ>(x, zero),
        );
        let r = _mm256_blendv_ps(
            r,
            _mm256_set1_ps(f32::NAN),
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, zero),
        );
        let r = _mm256_blendv_ps(
            r,
            x,
            _mm256_cmp_ps::<_CMP_EQ_OQ>(x, _mm256_set1_ps(f32::INFINITY)),
        );
        keep_nan(x, r)
    }

    /// 2^h for a normal exponent h (−126 ≤ h ≤ 127).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn pow2(h: __m256i) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            h,
            _mm256_set1_epi32(127),
        )))
    }

    /// 1 / (1 + e^(−x)), as the reference. `exp_flush`: for x > 87.33 the reference's
    /// subnormal e^(−x) vanishes in 1 + e^(−x) anyway, so the bits are the same without
    /// an assist per saturated lane.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(in crate::fast_f32) fn sigmoid(x: __m256) -> __m256 {
        let e = exp_flush(_mm256_xor_ps(x, _mm256_set1_ps(-0.0)));
        _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }

    /// tanh: Cephes' `x + x³·P(x²)` for |x| < 0.625, else `sign(x)·(1 − 2/(e^{2|x|} + 1))`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(in crate::fast_f32) fn tanh(x: __m256) -> __m256 {
        let sign = _mm256_set1_ps(-0.0);
        let ax = _mm256_andnot_ps(sign, x);
        let z = _mm256_mul_ps(x, x);
        let mut p = _mm256_set1_ps(super::TANH_P[0]);
        for c in super::TANH_P[1..].iter().copied() {
            p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(c));
        }
        let small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
        let e = exp(_mm256_add_ps(ax, ax));
        let one = _mm256_set1_ps(1.0);
        let big = _mm256_sub_ps(
            one,
            _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)),
        );
        let big = _mm256_or_ps(big, _mm256_and_ps(sign, x));
        let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(ax, _mm256_set1_ps(0.625));
        keep_nan(x, _mm256_blendv_ps(big, small, is_small))
    }

    /// erf: an odd degree-13 over even degree-8 rational function of x clamped to [−4, 4]
    /// (|error| < 1e-7 on the clamped range; beyond it erf is ±1 in f32).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn erf(x: __m256) -> __m256 {
        let xc = _mm256_min_ps(_mm256_set1_ps(4.0), _mm256_max_ps(_mm256_set1_ps(-4.0), x));
        let x2 = _mm256_mul_ps(xc, xc);
        let mut p = _mm256_set1_ps(super::ERF_P[0]);
        for c in super::ERF_P[1..].iter().copied() {
            p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(c));
        }
        p = _mm256_mul_ps(p, xc);
        let mut q = _mm256_set1_ps(super::ERF_Q[0]);
        for c in super::ERF_Q[1..].iter().copied() {
            q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(c));
        }
        // Beyond 3.93 erf rounds to ±1 in f32: give exactly that.
        let sign = _mm256_set1_ps(-0.0);
        let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(sign, x));
        let tail = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_andnot_ps(sign, x), _mm256_set1_ps(3.93));
        keep_nan(x, _mm256_blendv_ps(_mm256_div_ps(p, q), one, tail))
    }
}

//! `Recurrent` with AVX2 + FMA: the recurrent products up to eight vectors of columns at a
//! time (their sums in registers across the hidden state) and the vector gate functions of
//! `unary.rs`. The step logic is `crate::recurrent`'s.

use cairn_core::{ExecError, OpCall, TensorMut};

#[cfg(target_arch = "x86_64")]
use crate::recurrent::{Act, GruChunk, LstmChunk, Seq, Step};

/// The AVX2 + FMA arithmetic (constructed only where the CPU has both); with `wide`, the
/// gates sixteen units at a time on AVX-512F.
#[cfg(target_arch = "x86_64")]
struct Avx2 {
    wide: bool,
}

#[cfg(target_arch = "x86_64")]
impl Step for Avx2 {
    fn product(&self, h: &[f32], w: &[f32], ld: usize, acc: &mut [f32]) {
        let n = acc.len();
        // Every row read lies in `w` (the indexing below stays inside these bounds).
        if h.is_empty() || n == 0 {
            return;
        }
        assert!((h.len() - 1) * ld + n <= w.len());
        if self.wide {
            // SAFETY: AVX-512F is present (`wide`); the assert above bounds every row.
            unsafe { wide::product(h, w, ld, acc) }
        } else {
            // SAFETY: AVX2 and FMA are present (`Avx2` is made only then); the assert
            // above bounds every row `k < h.len()` of `n` columns inside `w`.
            unsafe { product(h, w, ld, acc) }
        }
    }

    fn lstm_cell(&self, c: LstmChunk<'_>) -> bool {
        let n = c.y.len();
        let fits = |v: &[f32]| v.len() == n;
        if !(fits(c.i) && fits(c.o) && fits(c.f) && fits(c.g) && fits(c.c))
            || c.peep.is_some_and(|p| !p.iter().all(|v| fits(v)))
        {
            return false;
        }
        if self.wide {
            // SAFETY: AVX-512F is present (`wide`); every slice holds `n` floats.
            unsafe { wide::lstm_cell(c) };
        } else {
            // SAFETY: AVX2 and FMA are present (as above); every slice holds `n` floats
            // (checked above).
            unsafe { lstm_cell(c) };
        }
        true
    }

    fn gru_cell(&self, c: GruChunk<'_>) -> bool {
        let n = c.y.len();
        let fits = |v: &[f32]| v.len() == n;
        if !(fits(c.z) && fits(c.r) && fits(c.hh) && fits(c.xh) && fits(c.hp)) {
            return false;
        }
        if self.wide {
            // SAFETY: AVX-512F is present (`wide`); every slice holds `n` floats.
            unsafe { wide::gru_cell(c) };
        } else {
            // SAFETY: as above.
            unsafe { gru_cell(c) };
        }
        true
    }

    fn apply(&self, act: Act, y: &mut [f32]) {
        if self.wide && act.f == cairn_core::op::UnaryFn::Tanh {
            // An RNN's gate (or a gate of a cell without the default functions): sixteen
            // lanes, the tail masked instead of copied through a stack vector.
            // SAFETY: AVX-512F is present (`wide`); no source: `y` in place.
            unsafe { super::unary::avx512::gelu_family(act.f, None, y) }
        } else if super::unary::covers(act.f, act.a) {
            // SAFETY: AVX2 and FMA are present (as above); no source: `y` in place.
            unsafe { super::unary::avx2::apply(act.f, act.a, act.b, None, y) }
        } else {
            crate::recurrent::Plain.apply(act, y)
        }
    }
}

/// `acc[j] += Σ_k h[k] · w[k·ld + j]`: 64 columns at a time in eight registers (eight
/// independent sums hide the multiply-add latency), then the rest in one pass of up to
/// eight, the last vector masked (no scalar tail: a gate's width is rarely a multiple of
/// eight, and a column summed alone waits on each of its H multiply-adds).
///
/// # Safety
/// AVX2 and FMA must be present; `(h.len() − 1)·ld + acc.len() ≤ w.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product(h: &[f32], w: &[f32], ld: usize, acc: &mut [f32]) {
    let n = acc.len();
    let mut j = 0;
    // SAFETY (each block): columns j..j + 8·V (the last vector masked to `n`) of rows
    // k < h.len(), inside `w` by the caller's bound, and of `acc`.
    unsafe {
        while j + 64 <= n {
            block::<8>(h, w, ld, acc, j, 8);
            j += 64;
        }
        let rest = n - j;
        let last = rest % 8;
        match rest.div_ceil(8) {
            0 => {}
            1 => block::<1>(h, w, ld, acc, j, last),
            2 => block::<2>(h, w, ld, acc, j, last),
            3 => block::<3>(h, w, ld, acc, j, last),
            4 => block::<4>(h, w, ld, acc, j, last),
            5 => block::<5>(h, w, ld, acc, j, last),
            6 => block::<6>(h, w, ld, acc, j, last),
            7 => block::<7>(h, w, ld, acc, j, last),
            _ => block::<8>(h, w, ld, acc, j, last),
        }
    }
}

/// `V` vectors of columns from `j`, the last holding `last` columns (0: eight).
///
/// # Safety
/// As [`product`], with `j + 8·(V − 1) + (last or 8) ≤ acc.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block<const V: usize>(
    h: &[f32],
    w: &[f32],
    ld: usize,
    acc: &mut [f32],
    j: usize,
    last: usize,
) {
    use core::arch::x86_64::*;
    let lanes = if last == 0 { 8 } else { last };
    debug_assert!(j + 8 * (V - 1) + lanes <= acc.len());
    let ap = acc.as_mut_ptr();
    let wp = w.as_ptr();
    // Lane i of the last vector is on where i < lanes.
    let mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(lanes as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    // SAFETY: every full vector lies in `acc` / row k of `w`, and the masked one reads
    // and writes only its first `lanes` (the caller's bound).
    unsafe {
        let mut a = [_mm256_setzero_ps(); V];
        for (v, a) in a.iter_mut().enumerate() {
            *a = if v + 1 < V {
                _mm256_loadu_ps(ap.add(j + 8 * v))
            } else {
                _mm256_maskload_ps(ap.add(j + 8 * v), mask)
            };
        }
        for (k, &hk) in h.iter().enumerate() {
            let b = _mm256_set1_ps(hk);
            let r = wp.add(k * ld + j);
            for (v, a) in a.iter_mut().enumerate() {
                let x = if v + 1 < V {
                    _mm256_loadu_ps(r.add(8 * v))
                } else {
                    _mm256_maskload_ps(r.add(8 * v), mask)
                };
                *a = _mm256_fmadd_ps(b, x, *a);
            }
        }
        for (v, a) in a.iter().enumerate() {
            if v + 1 < V {
                _mm256_storeu_ps(ap.add(j + 8 * v), *a);
            } else {
                _mm256_maskstore_ps(ap.add(j + 8 * v), mask, *a);
            }
        }
    }
}

/// Eight units at a time (the last eight masked): loads of `n` floats from `p + u`.
#[cfg(target_arch = "x86_64")]
struct Lanes {
    n: usize,
}

#[cfg(target_arch = "x86_64")]
impl Lanes {
    /// The mask of lanes `u..min(u + 8, n)`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn mask(&self, u: usize) -> core::arch::x86_64::__m256i {
        use core::arch::x86_64::*;
        let k = (self.n - u).min(8) as i32;
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(k),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

/// The clip of a pre-activation (+∞: none, and no work).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn clip(x: core::arch::x86_64::__m256, c: f32) -> core::arch::x86_64::__m256 {
    use core::arch::x86_64::*;
    if c.is_finite() {
        _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-c)), _mm256_set1_ps(c))
    } else {
        x
    }
}

/// An LSTM chunk with sigmoid, tanh, tanh: the reference's operations lane by lane (the
/// peephole terms, the clip, the gate functions of `unary.rs`, `c = f·c + i·g`,
/// `y = o·tanh(c)`), five functions of eight units evaluated side by side.
///
/// # Safety
/// AVX2 and FMA must be present; every slice of `c` holds `c.y.len()` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn lstm_cell(c: LstmChunk<'_>) {
    use super::unary::avx2::{sigmoid, tanh};
    use core::arch::x86_64::*;
    let n = c.y.len();
    let lanes = Lanes { n };
    let mut u = 0;
    while u < n {
        let m = lanes.mask(u);
        // SAFETY: lanes u..min(u + 8, n) of slices of n floats (masked beyond).
        unsafe {
            let ld = |v: &[f32]| _mm256_maskload_ps(v.as_ptr().add(u), m);
            let cp = ld(c.c);
            let (mut i, mut o, mut f) = (ld(c.i), ld(c.o), ld(c.f));
            if let Some([pi, _, pf]) = c.peep {
                i = _mm256_add_ps(i, _mm256_mul_ps(ld(pi), cp));
                f = _mm256_add_ps(f, _mm256_mul_ps(ld(pf), cp));
            }
            let i = sigmoid(clip(i, c.clip));
            let f = sigmoid(clip(f, c.clip));
            let g = tanh(clip(ld(c.g), c.clip));
            let cn = _mm256_add_ps(_mm256_mul_ps(f, cp), _mm256_mul_ps(i, g));
            if let Some([_, po, _]) = c.peep {
                o = _mm256_add_ps(o, _mm256_mul_ps(ld(po), cn));
            }
            let o = sigmoid(clip(o, c.clip));
            let y = _mm256_mul_ps(o, tanh(cn));
            _mm256_maskstore_ps(c.c.as_mut_ptr().add(u), m, cn);
            _mm256_maskstore_ps(c.y.as_mut_ptr().add(u), m, y);
        }
        u += 8;
    }
}

/// A GRU chunk under `linear_before_reset` with sigmoid and tanh: `z`, `r`,
/// `ĥ = tanh(xh + r·hh)`, `y = ĥ + z·(h₋₁ − ĥ)`, lane by lane as the reference.
///
/// # Safety
/// AVX2 and FMA must be present; every slice of `c` holds `c.y.len()` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gru_cell(c: GruChunk<'_>) {
    use super::unary::avx2::{sigmoid, tanh};
    use core::arch::x86_64::*;
    let n = c.y.len();
    let lanes = Lanes { n };
    let mut u = 0;
    while u < n {
        let m = lanes.mask(u);
        // SAFETY: as in `lstm_cell`.
        unsafe {
            let ld = |v: &[f32]| _mm256_maskload_ps(v.as_ptr().add(u), m);
            let z = sigmoid(clip(ld(c.z), c.clip));
            let r = sigmoid(clip(ld(c.r), c.clip));
            let pre = _mm256_add_ps(ld(c.xh), _mm256_mul_ps(r, ld(c.hh)));
            let hn = tanh(clip(pre, c.clip));
            let hp = ld(c.hp);
            let y = _mm256_add_ps(hn, _mm256_mul_ps(z, _mm256_sub_ps(hp, hn)));
            _mm256_maskstore_ps(c.y.as_mut_ptr().add(u), m, y);
        }
        u += 8;
    }
}

/// The gate passes sixteen units at a time: the same operations as `lstm_cell` and
/// `gru_cell` (sigmoid as `1 / (1 + e^(−x))` on the sixteen-lane exp, tanh the
/// sixteen-lane form of `unary.rs`), on AVX-512F.
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::super::unary::avx512::{exp, tanh};
    use crate::recurrent::{GruChunk, LstmChunk};
    use core::arch::x86_64::*;

    /// `super::product` with sixteen columns a vector: 128 at a time in eight registers,
    /// then the rest in one pass, the last vector masked.
    ///
    /// # Safety
    /// AVX-512F must be present; `(h.len() − 1)·ld + acc.len() ≤ w.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(h: &[f32], w: &[f32], ld: usize, acc: &mut [f32]) {
        let n = acc.len();
        let mut j = 0;
        // SAFETY (each block): as in `super::product`, sixteen columns a vector.
        unsafe {
            while j + 128 <= n {
                block::<8>(h, w, ld, acc, j, 0);
                j += 128;
            }
            let rest = n - j;
            let last = rest % 16;
            match rest.div_ceil(16) {
                0 => {}
                1 => block::<1>(h, w, ld, acc, j, last),
                2 => block::<2>(h, w, ld, acc, j, last),
                3 => block::<3>(h, w, ld, acc, j, last),
                4 => block::<4>(h, w, ld, acc, j, last),
                5 => block::<5>(h, w, ld, acc, j, last),
                6 => block::<6>(h, w, ld, acc, j, last),
                7 => block::<7>(h, w, ld, acc, j, last),
                _ => block::<8>(h, w, ld, acc, j, last),
            }
        }
    }

    /// `V` vectors of sixteen columns from `j`, the last holding `last` (0: sixteen).
    ///
    /// # Safety
    /// As [`product`], with `j + 16·(V − 1) + (last or 16) ≤ acc.len()`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const V: usize>(
        h: &[f32],
        w: &[f32],
        ld: usize,
        acc: &mut [f32],
        j: usize,
        last: usize,
    ) {
        let m = super::super::avx512::tail_masks(if last == 0 { 16 } else { last }).0;
        let ap = acc.as_mut_ptr();
        let wp = w.as_ptr();
        let mask = |v: usize| if v + 1 < V { 0xFFFF } else { m };
        // SAFETY: full vectors lie in `acc` / row k of `w`; the masked one touches only
        // its first lanes (the caller's bound).
        unsafe {
            let mut a = [_mm512_setzero_ps(); V];
            for (v, a) in a.iter_mut().enumerate() {
                *a = _mm512_maskz_loadu_ps(mask(v), ap.add(j + 16 * v));
            }
            for (k, &hk) in h.iter().enumerate() {
                let b = _mm512_set1_ps(hk);
                let r = wp.add(k * ld + j);
                for (v, a) in a.iter_mut().enumerate() {
                    let x = _mm512_maskz_loadu_ps(mask(v), r.add(16 * v));
                    *a = _mm512_fmadd_ps(b, x, *a);
                }
            }
            for (v, a) in a.iter().enumerate() {
                _mm512_mask_storeu_ps(ap.add(j + 16 * v), mask(v), *a);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sigmoid(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let e = exp(_mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(x),
            _mm512_set1_epi32(i32::MIN),
        )));
        _mm512_div_ps(one, _mm512_add_ps(one, e))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn clip(x: __m512, c: f32) -> __m512 {
        if c.is_finite() {
            _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-c)), _mm512_set1_ps(c))
        } else {
            x
        }
    }

    /// `super::lstm_cell` sixteen units at a time.
    ///
    /// # Safety
    /// AVX-512F must be present; every slice of `c` holds `c.y.len()` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn lstm_cell(c: LstmChunk<'_>) {
        let n = c.y.len();
        let mut u = 0;
        while u < n {
            let m = super::super::avx512::tail_masks(n - u).0;
            // SAFETY: the mask selects lanes u..min(u + 16, n) of slices of n floats;
            // masked-off lanes are neither read nor written.
            unsafe {
                let ld = |v: &[f32]| _mm512_maskz_loadu_ps(m, v.as_ptr().add(u));
                let cp = ld(c.c);
                let (mut i, mut o, mut f) = (ld(c.i), ld(c.o), ld(c.f));
                if let Some([pi, _, pf]) = c.peep {
                    i = _mm512_add_ps(i, _mm512_mul_ps(ld(pi), cp));
                    f = _mm512_add_ps(f, _mm512_mul_ps(ld(pf), cp));
                }
                let i = sigmoid(clip(i, c.clip));
                let f = sigmoid(clip(f, c.clip));
                let g = tanh(clip(ld(c.g), c.clip));
                let cn = _mm512_add_ps(_mm512_mul_ps(f, cp), _mm512_mul_ps(i, g));
                if let Some([_, po, _]) = c.peep {
                    o = _mm512_add_ps(o, _mm512_mul_ps(ld(po), cn));
                }
                let o = sigmoid(clip(o, c.clip));
                let y = _mm512_mul_ps(o, tanh(cn));
                _mm512_mask_storeu_ps(c.c.as_mut_ptr().add(u), m, cn);
                _mm512_mask_storeu_ps(c.y.as_mut_ptr().add(u), m, y);
            }
            u += 16;
        }
    }

    /// `super::gru_cell` sixteen units at a time.
    ///
    /// # Safety
    /// AVX-512F must be present; every slice of `c` holds `c.y.len()` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gru_cell(c: GruChunk<'_>) {
        let n = c.y.len();
        let mut u = 0;
        while u < n {
            let m = super::super::avx512::tail_masks(n - u).0;
            // SAFETY: as in `lstm_cell`.
            unsafe {
                let ld = |v: &[f32]| _mm512_maskz_loadu_ps(m, v.as_ptr().add(u));
                let z = sigmoid(clip(ld(c.z), c.clip));
                let r = sigmoid(clip(ld(c.r), c.clip));
                let pre = _mm512_add_ps(ld(c.xh), _mm512_mul_ps(r, ld(c.hh)));
                let hn = tanh(clip(pre, c.clip));
                let hp = ld(c.hp);
                let y = _mm512_add_ps(hn, _mm512_mul_ps(z, _mm512_sub_ps(hp, hn)));
                _mm512_mask_storeu_ps(c.y.as_mut_ptr().add(u), m, y);
            }
            u += 16;
        }
    }
}

/// `Recurrent` through the AVX2 arithmetic, or `None` (no AVX2 + FMA: the reference).
pub fn recurrent_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    #[cfg(target_arch = "x86_64")]
    {
        if !super::avx2::available() {
            return None;
        }
        let arith = Avx2 {
            wide: super::avx512::available(),
        };
        let r = Seq::of(call).and_then(|seq| seq.run(&arith, out.f32s_mut()?));
        super::dispatch::taken();
        Some(r)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (call, out);
        None
    }
}

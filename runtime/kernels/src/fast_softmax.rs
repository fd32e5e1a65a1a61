//! int8 Softmax through tables, byte-identical to `norm::softmax_i8` (flavour 0).
//!
//! The reference computes, per row, `e = expf((x − x_max)·s_x)` (the difference in
//! integers), `sum = Σ e` in element order and `quantize(e / sum)`. Every `e` is one of
//! 256 values (`x − x_max` spans −255..0), so this path computes each at most once per
//! call, sums the same f32 values in the same order, and for rows of 256 or more also
//! tabulates the 256 outputs once per row: the bytes are the reference's
//! (`softmax_matches_reference` in `tests/exact.rs`).

use cairn_core::quant::quantize_f32;
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::util::qp;

pub fn softmax_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    // Flavour 1 (ONNX Runtime's QLinearSoftmax table) keeps its own kernel.
    if call.param(3) == 1 {
        return None;
    }
    let x = call.req(0).ok()?;
    let (outer, n, inner) = (
        call.param(0) as usize,
        call.param(1) as usize,
        call.param(2) as usize,
    );
    let ((sx, _), (sy, zy)) = (qp(&x.info), qp(&out.info));
    let xs = x.i8s().ok()?;
    let total = outer.checked_mul(n)?.checked_mul(inner)?;
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if xs.len() != total || y.len() != total || n == 0 || inner == 0 {
        return None;
    }
    crate::paths::note(crate::paths::Path::SoftmaxTable);
    // The `outer` blocks of `n·inner` are independent: parts of whole blocks, each with its
    // own tables (the same values, computed again), so the bytes do not depend on the split.
    let block = n * inner;
    let work = total as u64 * ELEMENT_WORK;
    crate::par::par_pieces(y, block, work, |at, y| {
        blocks(&xs[at..at + y.len()], y, n, inner, sx, (sy, zy));
    });
    Some(Ok(()))
}

/// Longest row the eight-row blocks take (two 8 KB stack blocks).
#[cfg(target_arch = "x86_64")]
const ROWS_N_MAX: usize = 1024;

/// Multiply-adds one element costs about as much time as (the unit of `crate::par`):
/// a few nanoseconds an element, 25 int8 multiply-adds a nanosecond.
const ELEMENT_WORK: u64 = 64;

/// The softmax of the whole blocks of `n·inner` elements in `xs` into `y` (input scale
/// `sx`, output quantization `qy`).
fn blocks(xs: &[i8], y: &mut [i8], n: usize, inner: usize, sx: f32, qy: (f32, i32)) {
    let (sy, zy) = qy;
    let outer = xs.len() / (n * inner);
    // e[d + 255] = expf(d·sx) for d = x − x_max, filled on first use.
    let mut e = [0f32; 256];
    let mut filled = [false; 256];
    let mut qt = [0i8; 256];
    // The whole table at once (the vector paths read any entry), unless already filled.
    let fill_all = |e: &mut [f32; 256], filled: &mut [bool; 256]| {
        if !filled.iter().all(|&f| f) {
            for (j, v) in e.iter_mut().enumerate() {
                *v = libm::expf((j as i32 - 255) as f32 * sx);
            }
            *filled = [true; 256];
        }
    };
    // Over an inner axis on AVX2, eight neighbouring columns at a time (`avx2::columns`,
    // the same bytes); the columns left, one at a time below.
    #[cfg(target_arch = "x86_64")]
    let first = if inner >= 8 && avx2::available() {
        fill_all(&mut e, &mut filled);
        for (xb, yb) in xs
            .chunks_exact(n * inner)
            .zip(y.chunks_exact_mut(n * inner))
        {
            for i in (0..inner / 8 * 8).step_by(8) {
                // SAFETY: AVX2 is present (checked above); element (k, lane j) at
                // k·inner + i + j, inside the block (i + 8 ≤ inner).
                unsafe { avx2::columns(xb, yb, (n, i, inner, 1), &e, (sy, zy)) };
            }
        }
        inner / 8 * 8
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let first = 0;
    // Over the last axis (an attention's rows), eight rows at a time on AVX2: the column
    // block with a lane per row (element k of row j at j·n + k), each lane summing its own
    // row in its order; the rows left, one at a time.
    #[cfg(target_arch = "x86_64")]
    let outer_first = if inner == 1 && outer >= 8 && n <= ROWS_N_MAX && avx2::available() {
        fill_all(&mut e, &mut filled);
        crate::paths::note(crate::paths::Path::SoftmaxRows);
        for (xg, yg) in xs.chunks_exact(8 * n).zip(y.chunks_exact_mut(8 * n)) {
            // SAFETY: AVX2 is present (checked above); (k, j) at k + j·n, in the group.
            unsafe { avx2::columns(xg, yg, (n, 0, 1, n), &e, (sy, zy)) };
        }
        outer / 8 * 8
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let outer_first = 0;
    // Long rows over the last axis (a recognizer's classes, thousands a row): eight rows
    // at a time, each summed in its own register, so the eight chains of dependent
    // additions overlap (`long_rows`).
    let outer_first = if outer_first == 0 && inner == 1 && n >= LONG_ROW && outer > 0 {
        fill_all(&mut e, &mut filled);
        crate::paths::note(crate::paths::Path::SoftmaxLongRows);
        long_rows(xs, y, n, &e, (sy, zy));
        outer
    } else {
        outer_first
    };
    for o in outer_first..outer {
        for i in first..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let m = (0..n).map(|k| xs[at(k)]).max().unwrap_or(0) as i32;
            // Index of x in `e`: x − m + 255 (m >= x, so in 0..=255).
            let idx = |v: i8| (v as i32 - m + 255) as usize;
            let mut sum = 0.0f32;
            for k in 0..n {
                let j = idx(xs[at(k)]);
                if !filled[j] {
                    e[j] = libm::expf((j as i32 - 255) as f32 * sx);
                    filled[j] = true;
                }
                sum += e[j];
            }
            if n >= 256 {
                // One output per distinct value: the x in m−255..=m.
                for (j, q) in qt.iter_mut().enumerate() {
                    if filled[j] {
                        *q = quantize_f32(e[j] / sum, sy, zy, -128, 127) as i8;
                    }
                }
                for k in 0..n {
                    let a = at(k);
                    y[a] = qt[idx(xs[a])];
                }
            } else {
                for k in 0..n {
                    let a = at(k);
                    y[a] = quantize_f32(e[idx(xs[a])] / sum, sy, zy, -128, 127) as i8;
                }
            }
        }
    }
}

/// Shortest row `long_rows` takes (shorter ones go eight rows at a time through the
/// column blocks on AVX2, or one at a time).
const LONG_ROW: usize = 1025;

/// Rows of `n` elements (`n` ≥ 256) over the last axis, eight at a time. Each row's sum
/// runs in its own lane of `s`, element by element from the first (the reference's f32
/// additions in its order) over `e[x − max + 255]`; then one table of 256 outputs per row
/// (as the one-row path builds it), applied by the vector table kernel where the CPU has
/// one. The last group repeats its last row in the unused lanes. (Under 2 KB of stack:
/// the microcontroller paths take it too.)
fn long_rows(xs: &[i8], y: &mut [i8], n: usize, e: &[f32; 256], (sy, zy): (f32, i32)) {
    for (xg, yg) in xs.chunks(8 * n).zip(y.chunks_mut(8 * n)) {
        let rows = xg.len() / n;
        let r: [&[i8]; 8] = core::array::from_fn(|j| &xg[j.min(rows - 1) * n..][..n]);
        let m = r.map(|row| row.iter().copied().max().unwrap_or(0) as i32);
        let s = long_sums(&r, &m, e);
        for (j, yr) in yg.chunks_exact_mut(n).enumerate() {
            // Indexed by x + 128, as the table kernel reads it.
            let table: [i8; 256] = core::array::from_fn(|i| {
                let d = i as i32 - 128 - m[j];
                if d <= 0 {
                    quantize_f32(e[(d + 255) as usize] / s[j], sy, zy, -128, 127) as i8
                } else {
                    0
                }
            });
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            if crate::fast_elt::table_bytes(&table, r[j], yr) {
                continue;
            }
            for (d, &v) in yr.iter_mut().zip(r[j]) {
                *d = table[(v as i32 + 128) as usize];
            }
        }
    }
}

/// `Σ_k e[r[j][k] − m[j] + 255]` for each of the eight rows `r[j]` (all as long, every
/// element at most its row's `m[j]`), added from the first element to the last.
fn long_sums(r: &[&[i8]; 8], m: &[i32; 8], e: &[f32; 256]) -> [f32; 8] {
    let n = r[0].len();
    assert!(r.iter().all(|row| row.len() == n));
    // The index as a byte: x − m + 255 is in 0..=255 for x ≤ m.
    let base = m.map(|m| (255 - m) as u8);
    let mut s = [0f32; 8];
    for k in 0..n {
        for j in 0..8 {
            s[j] += e[(r[j][k] as u8).wrapping_add(base[j]) as usize];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    /// Each lane's sum is its row's in element order, bit for bit: a row whose first
    /// element is its maximum (e = 1.0) and whose thousands of others each add under half
    /// a last place sums to exactly 1.0 in that order (any other order gathers the small
    /// ones first).
    #[test]
    fn long_sums_add_in_element_order() {
        let n = 3000;
        let mut e = [0f32; 256];
        for (d, v) in e.iter_mut().enumerate() {
            *v = if d == 255 {
                1.0
            } else {
                2e-8 * (1 + d % 2) as f32
            };
        }
        let m: [i32; 8] = core::array::from_fn(|j| 120 - 10 * j as i32);
        let mut rows = [[0i8; 3000]; 8];
        for (j, row) in rows.iter_mut().enumerate() {
            for (k, x) in row.iter_mut().enumerate() {
                let below = if k == 0 { 0 } else { 1 + (k * 7 + j) % 170 };
                *x = (m[j] - below as i32) as i8;
            }
        }
        let r: [&[i8]; 8] = core::array::from_fn(|j| &rows[j][..n]);
        let s = super::long_sums(&r, &m, &e);
        for j in 0..8 {
            let mut want = 0f32;
            for &x in r[j] {
                want += e[(x as i32 - m[j] + 255) as usize];
            }
            assert_eq!(s[j].to_bits(), want.to_bits(), "row {j}");
            assert_eq!(want, 1.0, "row {j}: the small terms vanish in this order");
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    pub(crate) use crate::paths::avx2 as available;

    /// Eight softmaxes side by side, a lane each, of `n` elements: element `k` of lane `j`
    /// at `at + k·ks + j·js` of `xs` (and of `y`), for `(n, at, ks, js)`. Per lane the
    /// maximum, `sum = Σ e[x − max + 255]` from the first element to the last (the
    /// reference's f32 additions in its order), then `quantize((e / sum))` with
    /// `quantize_f32`'s arithmetic: the division by the scale, ties to even (the quotient
    /// is in [0, 1/sy], and past 2^22 the clamp decides alone), the zero point, the clamp
    /// to −128..127. `e` is the full table of `expf(d · sx)`. The terms the sum read are
    /// kept for the outputs when `n` ≤ `ROWS_N_MAX`.
    ///
    /// # Safety
    /// AVX2 must be present. (Slice bounds are checked here.)
    #[target_feature(enable = "avx2")]
    // `k` picks an element's lanes (`row`, `term`) and its kept term alike.
    #[allow(clippy::needless_range_loop)]
    pub unsafe fn columns(
        xs: &[i8],
        y: &mut [i8],
        (n, at, ks, js): (usize, usize, usize, usize),
        e: &[f32; 256],
        (sy, zy): (f32, i32),
    ) {
        assert!(n > 0 && ks > 0 && js > 0);
        let last = at + (n - 1) * ks + 7 * js;
        assert!(last < xs.len() && last < y.len());
        crate::paths::note(crate::paths::Path::SoftmaxColumns);
        let (vsy, vzy) = (_mm256_set1_ps(sy), _mm256_set1_ps(zy as f32));
        let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
        let base = _mm256_set1_epi32(255);
        // Element k's eight lanes as int32.
        let row = |k: usize| -> __m256i {
            let a = at + k * ks;
            if js == 1 {
                // SAFETY: bytes a..a + 8 lie in xs (a + 7 ≤ last); AVX2 (the caller's
                // guarantee).
                unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(xs.as_ptr().add(a).cast())) }
            } else {
                let b: [u8; 8] = core::array::from_fn(|j| xs[a + j * js] as u8);
                // SAFETY: AVX2 is present (the caller's guarantee).
                unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().cast())) }
            }
        };
        let m = if ks == 1 {
            // Lanes of contiguous rows: each row's maximum in vectors along the row.
            let mx: [i32; 8] = core::array::from_fn(|j| {
                let r = &xs[at + j * js..at + j * js + n];
                r.iter().copied().max().unwrap_or(-128) as i32
            });
            // SAFETY: `mx` holds eight i32.
            unsafe { _mm256_loadu_si256(mx.as_ptr().cast()) }
        } else {
            let mut m = _mm256_set1_epi32(-128);
            for k in 0..n {
                m = _mm256_max_epi32(m, row(k));
            }
            m
        };
        // The table index of element k's lanes: x − m + 255, in 0..=255.
        let idx = |k: usize| _mm256_add_epi32(_mm256_sub_epi32(row(k), m), base);
        // SAFETY: every index is in 0..=255, inside `e`.
        let term = |k: usize| unsafe { _mm256_i32gather_ps::<4>(e.as_ptr(), idx(k)) };
        // Left uninitialized: zeroing all 32 KB cost more than an attention row of a few
        // dozen keys takes; the sum writes the first n before the outputs read them.
        let mut kept = [const { core::mem::MaybeUninit::<__m256>::uninit() }; super::ROWS_N_MAX];
        let keep = n <= super::ROWS_N_MAX;
        let mut sum = _mm256_setzero_ps();
        for k in 0..n {
            let t = term(k);
            if keep {
                kept[k].write(t);
            }
            sum = _mm256_add_ps(sum, t);
        }
        for k in 0..n {
            // SAFETY: with `keep`, the loop above wrote kept[0..n].
            let ev = if keep {
                unsafe { kept[k].assume_init() }
            } else {
                term(k)
            };
            let v = _mm256_div_ps(_mm256_div_ps(ev, sum), vsy);
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vzy), lo), hi);
            let q = _mm256_cvtps_epi32(q);
            // Eight values in −128..=127 to bytes.
            let p = _mm256_packs_epi32(q, q);
            let p = _mm256_packs_epi16(p, p);
            let b = (_mm_cvtsi128_si32(_mm256_castsi256_si128(p)) as u32 as u64)
                | ((_mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(p)) as u32 as u64) << 32);
            let a = at + k * ks;
            if js == 1 {
                // SAFETY: bytes a..a + 8 lie in y (a + 7 ≤ last < y.len()).
                unsafe { core::ptr::write_unaligned(y.as_mut_ptr().add(a).cast::<u64>(), b) };
            } else {
                for (j, v) in b.to_le_bytes().into_iter().enumerate() {
                    y[a + j * js] = v as i8;
                }
            }
        }
    }
}

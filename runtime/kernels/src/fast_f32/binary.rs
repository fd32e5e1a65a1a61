//! f32 Add, Sub, Mul, Div and PRelu with broadcast, eight lanes at a time with AVX2
//! (x86_64, detected at run time with `std`; elsewhere the reference runs).
//!
//! The output's dims are merged where both operands walk them alike (both contiguous or
//! both broadcast), leaving an inner run in which each operand is either contiguous or one
//! value; the outer dims are walked with the reference's index arithmetic, each inner run
//! is one vector loop. Each element gets the reference's operation and clamp (`max` then
//! `min`): the same IEEE operations, so the same values.

use cairn_core::shape::{broadcast_strides, MAX_RANK};
use cairn_core::{ExecError, OpCall, OpKind, TensorMut};

use crate::util::f32_clamp;

/// Shortest inner run worth the vector loop (shorter ones: the reference).
const MIN_RUN: usize = 8;

/// f32 element-wise binary op through the vector path, or `None`.
pub fn binary_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    #[cfg(target_arch = "x86_64")]
    {
        if !super::avx2::available() {
            return None;
        }
        let op = match call.kind {
            OpKind::Add => Op::Add,
            OpKind::Sub => Op::Sub,
            OpKind::Mul => Op::Mul,
            OpKind::Div => Op::Div,
            OpKind::PRelu => Op::PRelu,
            _ => return None,
        };
        let (at, bt) = (call.req(0).ok()?, call.req(1).ok()?);
        let (a, b) = (at.f32s().ok()?, bt.f32s().ok()?);
        let shape = out.info.shape;
        let r = shape.rank();
        if at.info.shape.rank() > r || bt.info.shape.rank() > r {
            return None;
        }
        let (sa, sb) = (
            broadcast_strides(&at.info.shape, &shape),
            broadcast_strides(&bt.info.shape, &shape),
        );
        // Merged dims, outermost first: (size, stride in a, stride in b).
        let mut dims = [(0usize, 0usize, 0usize); MAX_RANK];
        let mut nd = 0;
        for i in 0..r {
            let d = shape.dim(i);
            if d == 1 {
                continue;
            }
            if nd > 0 {
                let (pd, pa, pb) = dims[nd - 1];
                if pa == sa[i] * d && pb == sb[i] * d {
                    dims[nd - 1] = (pd * d, sa[i], sb[i]);
                    continue;
                }
            }
            dims[nd] = (d, sa[i], sb[i]);
            nd += 1;
        }
        let total = shape.numel()?;
        let (inner, ia, ib) = if nd == 0 { (1, 0, 0) } else { dims[nd - 1] };
        if inner < MIN_RUN || ia > 1 || ib > 1 || out.data.len() < 4 * total {
            return None;
        }
        // Every index the walk forms is inside the operands.
        let last = |s: &[usize; MAX_RANK]| -> usize {
            (0..r)
                .map(|i| s[i] * (shape.dim(i).max(1) - 1))
                .sum::<usize>()
                + 1
        };
        if (total > 0) && (last(&sa) > a.len() || last(&sb) > b.len()) {
            return None;
        }
        let (lo, hi) = f32_clamp(call.param(0), call.param(1));
        let y = match out.f32s_mut() {
            Ok(y) => y,
            Err(e) => return Some(Err(e)),
        };
        let outer = &dims[..nd.saturating_sub(1)];
        let mut idx = [0usize; MAX_RANK];
        let (mut oa, mut ob) = (0usize, 0usize);
        let mut o = 0;
        while o < total {
            let run = Run {
                a: &a[oa..],
                b: &b[ob..],
                a_vec: ia == 1,
                b_vec: ib == 1,
            };
            // SAFETY: AVX2 is present (checked above); `run`'s operands hold `inner` values
            // where they are vectors, one where they are broadcast (the bound check above),
            // and `y[o..o + inner]` is inside the output.
            unsafe { avx2::row(op, &run, &mut y[o..o + inner], lo, hi) };
            o += inner;
            // Next outer index, as `util::for_each_broadcast`.
            let mut d = outer.len();
            while d > 0 {
                d -= 1;
                idx[d] += 1;
                oa += outer[d].1;
                ob += outer[d].2;
                if idx[d] < outer[d].0 {
                    break;
                }
                oa -= outer[d].1 * idx[d];
                ob -= outer[d].2 * idx[d];
                idx[d] = 0;
            }
        }
        super::dispatch::taken();
        Some(Ok(()))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (
            call,
            out,
            MIN_RUN,
            f32_clamp,
            broadcast_strides,
            MAX_RANK,
            OpKind::Add,
        );
        None
    }
}

#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    PRelu,
}

/// One inner run's operands: a contiguous vector, or the first value broadcast.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Run<'a> {
    a: &'a [f32],
    b: &'a [f32],
    a_vec: bool,
    b_vec: bool,
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Op, Run};
    use core::arch::x86_64::*;

    /// `y[i] = clamp(op(a[i], b[i]))` over the run (a broadcast operand: its first value).
    ///
    /// # Safety
    /// AVX2 must be present. (Slice bounds are checked here.)
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn row(op: Op, run: &Run<'_>, y: &mut [f32], lo: f32, hi: f32) {
        let n = y.len();
        assert!(!run.a_vec || run.a.len() >= n);
        assert!(!run.b_vec || run.b.len() >= n);
        assert!(!run.a.is_empty() && !run.b.is_empty());
        match (op, run.a_vec, run.b_vec) {
            (Op::Add, true, true) => go::<0, true, true>(run, y, lo, hi),
            (Op::Add, true, false) => go::<0, true, false>(run, y, lo, hi),
            (Op::Add, false, _) => go::<0, false, true>(run, y, lo, hi),
            (Op::Sub, true, true) => go::<1, true, true>(run, y, lo, hi),
            (Op::Sub, true, false) => go::<1, true, false>(run, y, lo, hi),
            (Op::Sub, false, _) => go::<1, false, true>(run, y, lo, hi),
            (Op::Mul, true, true) => go::<2, true, true>(run, y, lo, hi),
            (Op::Mul, true, false) => go::<2, true, false>(run, y, lo, hi),
            (Op::Mul, false, _) => go::<2, false, true>(run, y, lo, hi),
            (Op::Div, true, true) => go::<3, true, true>(run, y, lo, hi),
            (Op::Div, true, false) => go::<3, true, false>(run, y, lo, hi),
            (Op::Div, false, _) => go::<3, false, true>(run, y, lo, hi),
            (Op::PRelu, true, true) => go::<4, true, true>(run, y, lo, hi),
            (Op::PRelu, true, false) => go::<4, true, false>(run, y, lo, hi),
            (Op::PRelu, false, _) => go::<4, false, true>(run, y, lo, hi),
        }
    }

    /// The loop for op `OP` (0 Add … 4 PRelu) with `A` / `B` telling which operands are
    /// vectors. (Both broadcast never reaches here: the caller's inner run has a vector.)
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn go<const OP: u8, const A: bool, const B: bool>(
        run: &Run<'_>,
        y: &mut [f32],
        lo: f32,
        hi: f32,
    ) {
        // A run with both operands broadcast (not produced by the merge, whose inner dim is
        // never 1 for both) still computes the right thing: B's flag is forced true above
        // only when A is broadcast, so check B really is a vector here.
        if !A && !run.b_vec {
            let v = f(OP, run.a[0], run.b[0]).max(lo).min(hi);
            y.fill(v);
            return;
        }
        let n = y.len();
        let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let (sa, sb) = (_mm256_set1_ps(run.a[0]), _mm256_set1_ps(run.b[0]));
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n ≤ the length of each vector operand (asserted in `row`).
            let (va, vb) = unsafe {
                (
                    if A {
                        _mm256_loadu_ps(run.a.as_ptr().add(i))
                    } else {
                        sa
                    },
                    if B {
                        _mm256_loadu_ps(run.b.as_ptr().add(i))
                    } else {
                        sb
                    },
                )
            };
            let r = match OP {
                0 => _mm256_add_ps(va, vb),
                1 => _mm256_sub_ps(va, vb),
                2 => _mm256_mul_ps(va, vb),
                3 => _mm256_div_ps(va, vb),
                _ => {
                    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(va, _mm256_setzero_ps());
                    _mm256_blendv_ps(va, _mm256_mul_ps(va, vb), neg)
                }
            };
            let r = _mm256_min_ps(_mm256_max_ps(r, vlo), vhi);
            // SAFETY: i + 8 ≤ n = y.len().
            unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(i), r) };
            i += 8;
        }
        while i < n {
            let av = if A { run.a[i] } else { run.a[0] };
            let bv = if B { run.b[i] } else { run.b[0] };
            y[i] = f(OP, av, bv).max(lo).min(hi);
            i += 1;
        }
    }

    /// The reference's scalar operation.
    #[inline(always)]
    fn f(op: u8, x: f32, z: f32) -> f32 {
        match op {
            0 => x + z,
            1 => x - z,
            2 => x * z,
            3 => x / z,
            _ => {
                if x < 0.0 {
                    x * z
                } else {
                    x
                }
            }
        }
    }
}

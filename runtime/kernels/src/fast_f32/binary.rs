//! f32 Add, Sub, Mul, Div and PRelu with broadcast, eight lanes at a time with AVX2
//! (x86_64, detected at run time with `std`; elsewhere the reference runs), and the f32
//! `Binary` functions (Max, Min, Pow, Mod, Fmod) over the same runs on every host.
//!
//! The output's dims are merged where both operands walk them alike (both contiguous or
//! both broadcast), leaving an inner run in which each operand is either contiguous or one
//! value; the outer dims are walked with the reference's index arithmetic, each inner run
//! is one vector loop. Each element gets the reference's operation and clamp (`max` then
//! `min`): the same IEEE operations, so the same values.

use cairn_core::op::BinaryFn;
use cairn_core::shape::{broadcast_strides, MAX_RANK};
use cairn_core::{DType, ExecError, OpCall, OpKind, TensorMut};

use crate::logic::arithmetic;
use crate::util::f32_clamp;

/// Shortest inner run worth the vector loop (shorter ones: the reference).
const MIN_RUN: usize = 8;

/// The output's dims with size-1 dims dropped and neighbours merged where both operands
/// walk them alike (both contiguous or both broadcast), outermost first: (size, stride in
/// a, stride in b). The last is the inner run.
struct Walk {
    dims: [(usize, usize, usize); MAX_RANK],
    nd: usize,
    total: usize,
}

impl Walk {
    /// The walk of `call`'s two inputs (`a_len`, `b_len` elements) into `out`, or `None`
    /// where its inner run is shorter than `MIN_RUN` or strided in an operand, or an index
    /// it forms would leave an operand.
    fn of(call: &OpCall<'_>, out: &TensorMut<'_>, a_len: usize, b_len: usize) -> Option<Walk> {
        let (at, bt) = (call.req(0).ok()?, call.req(1).ok()?);
        let shape = out.info.shape;
        let r = shape.rank();
        if at.info.shape.rank() > r || bt.info.shape.rank() > r {
            return None;
        }
        let (sa, sb) = (
            broadcast_strides(&at.info.shape, &shape),
            broadcast_strides(&bt.info.shape, &shape),
        );
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
        let walk = Walk { dims, nd, total };
        let (inner, ia, ib) = walk.inner();
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
        if (total > 0) && (last(&sa) > a_len || last(&sb) > b_len) {
            return None;
        }
        Some(walk)
    }

    /// (length, a's stride, b's stride) of the inner run: each stride 0 (broadcast) or 1.
    fn inner(&self) -> (usize, usize, usize) {
        if self.nd == 0 {
            (1, 0, 0)
        } else {
            self.dims[self.nd - 1]
        }
    }

    /// `run(o, oa, ob)` for every inner run, starting at output `o`, a's `oa`, b's `ob`.
    fn runs(&self, mut run: impl FnMut(usize, usize, usize)) {
        let (inner, _, _) = self.inner();
        let outer = &self.dims[..self.nd.saturating_sub(1)];
        let mut idx = [0usize; MAX_RANK];
        let (mut oa, mut ob) = (0usize, 0usize);
        let mut o = 0;
        while o < self.total {
            run(o, oa, ob);
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
    }
}

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
        let (a, b) = (
            call.req(0).ok()?.f32s().ok()?,
            call.req(1).ok()?.f32s().ok()?,
        );
        let walk = Walk::of(call, out, a.len(), b.len())?;
        let (inner, ia, ib) = walk.inner();
        let (lo, hi) = f32_clamp(call.param(0), call.param(1));
        let y = match out.f32s_mut() {
            Ok(y) => y,
            Err(e) => return Some(Err(e)),
        };
        walk.runs(|o, oa, ob| {
            let run = Run {
                a: &a[oa..],
                b: &b[ob..],
                a_vec: ia == 1,
                b_vec: ib == 1,
            };
            // SAFETY: AVX2 is present (checked above); `run`'s operands hold `inner` values
            // where they are vectors, one where they are broadcast (`Walk::of` checked),
            // and `y[o..o + inner]` is inside the output.
            unsafe { avx2::row(op, &run, &mut y[o..o + inner], lo, hi) };
        });
        super::dispatch::taken();
        Some(Ok(()))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (call, out, f32_clamp, OpKind::Add);
        None
    }
}

/// The f32 `Binary` functions (Max, Min, Pow, Mod, Fmod) over runs of the merged walk, or
/// `None`: each element through the reference's own `logic::arithmetic`, in a loop per
/// function and operand form that the compiler vectorizes where it can (Max, Min: a
/// compare and a blend; AVX2 on x86_64 hosts that have it), so the values are the
/// reference's.
pub fn math_f32(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let f = BinaryFn::from_code(call.param(0))?;
    if !f.is_arithmetic() || out.info.dtype != DType::F32 {
        return None;
    }
    let (a, b) = (
        call.req(0).ok()?.f32s().ok()?,
        call.req(1).ok()?.f32s().ok()?,
    );
    let walk = Walk::of(call, out, a.len(), b.len())?;
    let (_, ia, ib) = walk.inner();
    let y = match out.f32s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    crate::fast::vectorized(|| match f {
        BinaryFn::Max => math_runs(&walk, a, b, (ia, ib), y, |x, z| {
            arithmetic(BinaryFn::Max, x, z)
        }),
        BinaryFn::Min => math_runs(&walk, a, b, (ia, ib), y, |x, z| {
            arithmetic(BinaryFn::Min, x, z)
        }),
        _ => math_runs(&walk, a, b, (ia, ib), y, |x, z| arithmetic(f, x, z)),
    });
    super::dispatch::taken();
    Some(Ok(()))
}

/// `y = op(a, b)` over `walk`'s runs, one loop per operand form (`(ia, ib)`: each operand
/// contiguous (1) or one value (0) along a run).
#[inline(always)]
fn math_runs(
    walk: &Walk,
    a: &[f32],
    b: &[f32],
    (ia, ib): (usize, usize),
    y: &mut [f32],
    op: impl Fn(f32, f32) -> f32,
) {
    let (inner, _, _) = walk.inner();
    walk.runs(|o, oa, ob| {
        let y = &mut y[o..o + inner];
        match (ia, ib) {
            (1, 1) => {
                for ((y, &x), &z) in y.iter_mut().zip(&a[oa..oa + inner]).zip(&b[ob..ob + inner]) {
                    *y = op(x, z);
                }
            }
            (1, _) => {
                let z = b[ob];
                for (y, &x) in y.iter_mut().zip(&a[oa..oa + inner]) {
                    *y = op(x, z);
                }
            }
            _ => {
                let x = a[oa];
                for (y, &z) in y.iter_mut().zip(&b[ob..ob + inner]) {
                    *y = op(x, z);
                }
            }
        }
    });
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

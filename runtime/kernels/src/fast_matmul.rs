//! int8 batched MatMul of two activations on hosts, bit-exact with `gemm::bmm_i8`.
//!
//! Per matrix pair, B's rows are widened once to i16 with its zero point subtracted
//! (`b − zb` spans −255..255); each output row then accumulates `(a − za)·(b − zb)` over
//! B's contiguous rows, a loop the compiler vectorizes (compiled with AVX2 where present).
//! Integer sums do not depend on their order, so requantizing with the reference's
//! `requantize` gives the same bytes.

use cairn_core::quant::requantize;
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::gemm::bmm_walk;
use crate::util::qp;

/// Largest B matrix (k·n) and row (n) widened on the stack.
const MAX_B: usize = 16 * 1024;
const MAX_N: usize = 4096;

pub fn bmm_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    // AVX2 hosts with std: the implicit GEMM's register block (`fast/mm.rs`).
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if let Some(r) = crate::fast::bmm_i8(call, out) {
        return Some(r);
    }
    // aarch64 hosts with std: the dot-product block over B's transpose (`neon_dot.rs`).
    #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
    if let Some(r) = crate::fast::bmm_i8_neon(call, out) {
        return Some(r);
    }
    let (at, bt) = (call.req(0).ok()?, call.req(1).ok()?);
    let (sa, sb, sy) = (at.info.shape, bt.info.shape, out.info.shape);
    let (m, k, n) = crate::gemm::bmm_dims(&sa, &sb, &sy)?;
    if k.checked_mul(n)? > MAX_B || n > MAX_N || m == 0 {
        return None;
    }
    Some(run(call, out, (m, k, n), (sa, sb, sy)))
}

fn run(
    call: &OpCall<'_>,
    out: &mut TensorMut<'_>,
    (m, k, n): (usize, usize, usize),
    (sa, sb, sy): (cairn_core::Shape, cairn_core::Shape, cairn_core::Shape),
) -> Result<(), ExecError> {
    let (at, bt) = (call.req(0)?, call.req(1)?);
    let (a, b) = (at.i8s()?, bt.i8s()?);
    let scale = *call.req(2)?.f32s()?.first().ok_or(ExecError::Shape)?;
    let ((_, za), (_, zb), (_, zy)) = (qp(&at.info), qp(&bt.info), qp(&out.info));
    let y = out.i8s_mut()?;
    stack_buf!(bz: i16, k * n, 1024, MAX_B);
    stack_buf!(acc: i32, n, 256, MAX_N);
    crate::fast::vectorized(
        #[inline(always)]
        || {
            bmm_walk(&sa, &sb, &sy, |o, ia, ib| {
                let (ao, bo, yo) = (ia * m * k, ib * k * n, o * m * n);
                for (d, &v) in bz[..k * n].iter_mut().zip(&b[bo..bo + k * n]) {
                    *d = (v as i32 - zb) as i16;
                }
                for i in 0..m {
                    let acc = &mut acc[..n];
                    acc.fill(0);
                    for t in 0..k {
                        let av = a[ao + i * k + t] as i32 - za;
                        let row = &bz[t * n..(t + 1) * n];
                        for (s, &bv) in acc.iter_mut().zip(row) {
                            *s = s.wrapping_add(av * bv as i32);
                        }
                    }
                    for (d, &s) in y[yo + i * n..yo + (i + 1) * n].iter_mut().zip(acc.iter()) {
                        *d = requantize(s, scale, zy, -128, 127) as i8;
                    }
                }
            })
        },
    );
    Ok(())
}

//! int8 Softmax over long rows (a recognizer's 6,625-class output) through per-row tables.
//!
//! The reference computes, for each row, `m = max g(x)`, `sum = Σ expf(g(x) − m)` in
//! element order and `quantize(expf(g(x) − m) / sum)` with `g(v) = (v − zx)·sx`. Every
//! term depends only on the int8 value and the row's `m`, so this path builds the 256
//! values of `expf(g(v) − m)` once per distinct `m` and the 256 outputs once per row, and
//! sums the same f32 values in the same order: the bytes are the reference's (the
//! `softmax_matches_reference` test in `tests/exact.rs`).

use cairn_core::quant::quantize_f32;
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::util::qp;

/// Rows shorter than this take the reference (a table costs 256 `expf`).
const MIN_ROW: usize = 128;

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
    if n < MIN_ROW {
        return None;
    }
    let ((sx, zx), (sy, zy)) = (qp(&x.info), qp(&out.info));
    let xs = x.i8s().ok()?;
    let total = outer.checked_mul(n)?.checked_mul(inner)?;
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if xs.len() != total || y.len() != total {
        return None;
    }
    crate::paths::note(crate::paths::Path::SoftmaxTable);
    let g = |v: i8| (v as i32 - zx) as f32 * sx;
    let mut e = [0f32; 256];
    let mut table_m: Option<u32> = None;
    let mut qt = [0i8; 256];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let mut m = f32::NEG_INFINITY;
            for k in 0..n {
                m = m.max(g(xs[at(k)]));
            }
            if table_m != Some(m.to_bits()) {
                for (v, t) in e.iter_mut().enumerate() {
                    *t = libm::expf(g((v as i32 - 128) as i8) - m);
                }
                table_m = Some(m.to_bits());
            }
            let mut sum = 0.0f32;
            for k in 0..n {
                sum += e[(xs[at(k)] as i32 + 128) as usize];
            }
            for (q, &t) in qt.iter_mut().zip(&e) {
                *q = quantize_f32(t / sum, sy, zy, -128, 127) as i8;
            }
            for k in 0..n {
                let a = at(k);
                y[a] = qt[(xs[a] as i32 + 128) as usize];
            }
        }
    }
    Some(Ok(()))
}

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
    for o in 0..outer {
        for i in 0..inner {
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

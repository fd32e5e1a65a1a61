//! Gather by constant indices as runs of copies (hosts with a `prepack` cache, i.e. a
//! `HostModel`). Exporters and the converter write unfolds, frame splits and flattened
//! ScatterNDs as Gathers over long constant index lists that are mostly runs of
//! consecutive indices (GTCRN: 50 such Gathers, 8–17 K indices each, read from memory
//! every frame). The first run of such a Gather resolves and checks its indices once and
//! keeps them as (output, input, length) runs; every run after copies whole runs, reading
//! neither the index list nor one element at a time. Index lists with short runs (under
//! four indices a run on average), or with an index outside its axis, are left to the
//! reference (which returns the typed error for the latter).

use cairn_core::{ExecError, OpCall, TensorMut};

/// Fewest indices for which the runs are worth keeping.
const MIN_INDICES: usize = 64;

/// The Gather of `call` (mode 0) by the runs of its constant indices, or `None`.
pub fn gather(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    if call.param(1) != 0 {
        return None;
    }
    let (x, it) = (call.req(0).ok()?, call.req(1).ok()?);
    let idx = it.i32s().ok()?;
    // Runs hold output positions as i32.
    let fits_i32 = i32::try_from(idx.len()).is_ok();
    if idx.len() < MIN_INDICES || !fits_i32 || !crate::prepack::keeps(idx.as_ptr() as usize) {
        return None;
    }
    let xs = x.info.shape;
    let axis = usize::try_from(call.param(0)).ok()?;
    if axis >= xs.rank() {
        return None;
    }
    let (n, inner, outer) = (xs.dim(axis), xs.prod(axis + 1, xs.rank()), xs.prod(0, axis));
    // Bytes per index, per input block and per output block.
    let elem = inner.checked_mul(x.info.dtype.size_bytes())?;
    let (xb, yb) = (n.checked_mul(elem)?, idx.len().checked_mul(elem)?);
    let n32 = u32::try_from(n).ok().filter(|&n| n < 1 << 27)?;
    if x.data.len() < outer.checked_mul(xb)? || out.data.len() < outer.checked_mul(yb)? {
        return None;
    }
    // Keyed by the index list and the axis length (negatives resolve against it).
    let key = (idx.as_ptr() as usize, idx.len(), 0x2800_0000 | n32);
    let mut scratch = std::vec::Vec::new();
    crate::prepack::with_packed(
        key,
        &mut scratch,
        |v| runs_of(idx, n, v),
        |runs| {
            if runs.first() != Some(&1) {
                return None;
            }
            crate::paths::note(crate::paths::Path::GatherRuns);
            for o in 0..outer {
                let (xo, yo) = (&x.data[o * xb..(o + 1) * xb], &mut out.data[o * yb..]);
                for r in runs[1..].chunks_exact(3) {
                    let (d, s, len) = (r[0] as usize * elem, r[1] as usize * elem, r[2] as usize);
                    yo[d..d + len * elem].copy_from_slice(&xo[s..s + len * elem]);
                }
            }
            Some(Ok(()))
        },
    )
}

/// `idx` (against an axis of `n`) as `[1, (output, input, length)…]`: maximal runs of
/// consecutive resolved indices; `[0]` when an index is outside [−n, n) or the runs
/// average fewer than four indices.
fn runs_of(idx: &[i32], n: usize, v: &mut std::vec::Vec<i32>) {
    v.clear();
    v.push(1);
    let mut prev: Option<usize> = None;
    for (j, &i) in idx.iter().enumerate() {
        let Ok(k) = crate::gather::resolve(i, n) else {
            *v = std::vec![0];
            return;
        };
        match v.last_mut() {
            // The open run (after the flag) goes on.
            Some(len) if prev.is_some_and(|p| k == p + 1) => *len += 1,
            _ => v.extend([j as i32, k as i32, 1]),
        }
        prev = Some(k);
    }
    if (v.len() - 1) / 3 * 4 > idx.len() {
        *v = std::vec![0];
    }
}

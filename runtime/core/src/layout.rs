//! How a constant tensor's bytes are ordered in the blob.
//!
//! Every tensor is `Plain` (row-major in its dtype) except, optionally, the weights of a
//! one-group int8 Conv, which a converter may pre-pack into [`Layout::Pairs6`]: the order
//! in which the x86_64/aarch64 GEMM micro-kernels read them, so the kernel loads each
//! weight pair with one broadcast instead of widening it from the int8 rows on every use.

/// Output channels per block of [`Layout::Pairs6`].
pub const PAIRS6_ROWS: usize = 6;
/// The largest patch (`ic·kh·kw`) the CPU GEMM micro-kernels take: packing a larger one
/// would cost flash and gain nothing (it runs the reference kernel).
pub const PAIRS6_MAX_K: usize = 2048;

/// A tensor's byte order (tensor record byte 45; see `runtime/core/spec.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Layout {
    /// Row-major elements of the tensor's dtype.
    #[default]
    Plain = 0,
    /// int8 Conv weights `W[oc][K]` (`K = ic·kh·kw`, one group) stored as little-endian
    /// int16 values in blocks of 6 output channels: block `b`, channel pair `p`
    /// (`K` rounded up to even), row `r < 6`, half `h < 2` holds `W[6b + r][2p + h]` at
    /// int16 index `((b·P + p)·6 + r)·2 + h` (`P = ⌈K/2⌉`), zero past `oc` or `K`.
    /// Every value is within int8 range (checked at load).
    Pairs6 = 1,
}

impl Layout {
    pub fn from_code(c: u8) -> Option<Layout> {
        match c {
            0 => Some(Layout::Plain),
            1 => Some(Layout::Pairs6),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Plain => "plain",
            Layout::Pairs6 => "pairs6",
        }
    }
}

/// Geometry of a [`Layout::Pairs6`] tensor with `oc` rows of `k` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pairs6 {
    pub oc: usize,
    pub k: usize,
}

impl Pairs6 {
    /// The geometry of rank-4 Conv weights `[oc, ic, kh, kw]` (`None` for another rank).
    pub fn of(shape: &crate::Shape) -> Option<Pairs6> {
        (shape.rank() == 4).then(|| Pairs6 {
            oc: shape.dim(0),
            k: shape.prod(1, 4),
        })
    }

    /// Channel pairs per row (`⌈k/2⌉`).
    pub const fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    pub const fn blocks(&self) -> usize {
        self.oc.div_ceil(PAIRS6_ROWS)
    }

    /// int16 elements stored (padding included), `None` on overflow.
    pub fn elements(&self) -> Option<usize> {
        self.blocks()
            .checked_mul(PAIRS6_ROWS)?
            .checked_mul(self.pairs())?
            .checked_mul(2)
    }

    /// int16 index of `W[o][k]` (`o < oc`, `k < k`).
    #[inline(always)]
    pub const fn index(&self, o: usize, k: usize) -> usize {
        (((o / PAIRS6_ROWS) * self.pairs() + k / 2) * PAIRS6_ROWS + o % PAIRS6_ROWS) * 2 + k % 2
    }

    /// The `(o, k)` an int16 index holds, `None` for padding.
    pub const fn position(&self, i: usize) -> Option<(usize, usize)> {
        if self.pairs() == 0 {
            return None;
        }
        let h = i % 2;
        let r = (i / 2) % PAIRS6_ROWS;
        let bp = i / (2 * PAIRS6_ROWS);
        let (b, p) = (bp / self.pairs(), bp % self.pairs());
        let (o, k) = (b * PAIRS6_ROWS + r, 2 * p + h);
        if o < self.oc && k < self.k {
            Some((o, k))
        } else {
            None
        }
    }
}

/// Pack row-major int8 `w` (`oc` rows of `k`) into [`Layout::Pairs6`] int16 values.
#[cfg(feature = "alloc")]
pub fn pack_pairs6(w: &[i8], oc: usize, k: usize) -> Option<alloc::vec::Vec<i16>> {
    let g = Pairs6 { oc, k };
    if w.len() != oc.checked_mul(k)? || k == 0 {
        return None;
    }
    let mut out = alloc::vec![0i16; g.elements()?];
    for o in 0..oc {
        for j in 0..k {
            out[g.index(o, j)] = w[o * k + j] as i16;
        }
    }
    Some(out)
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    #[test]
    fn index_and_position_agree() {
        for (oc, k) in [(1, 1), (6, 2), (7, 3), (13, 27), (32, 288)] {
            let g = Pairs6 { oc, k };
            let n = g.elements().unwrap();
            let mut seen = alloc::vec![false; oc * k];
            for i in 0..n {
                if let Some((o, j)) = g.position(i) {
                    assert_eq!(g.index(o, j), i, "oc {oc} k {k}");
                    assert!(!seen[o * k + j]);
                    seen[o * k + j] = true;
                }
            }
            assert!(
                seen.iter().all(|&s| s),
                "oc {oc} k {k}: every weight has a slot"
            );
        }
    }

    #[test]
    fn pack_places_each_weight() {
        let w: alloc::vec::Vec<i8> = (0..7 * 5).map(|i| (i as i8).wrapping_mul(37)).collect();
        let p = pack_pairs6(&w, 7, 5).unwrap();
        let g = Pairs6 { oc: 7, k: 5 };
        assert_eq!(p.len(), 2 * 6 * 3 * 2);
        for o in 0..7 {
            for j in 0..5 {
                assert_eq!(p[g.index(o, j)], w[o * 5 + j] as i16);
            }
        }
        let nonzero_pad = (0..p.len()).filter(|&i| g.position(i).is_none() && p[i] != 0);
        assert_eq!(nonzero_pad.count(), 0);
        assert!(pack_pairs6(&w, 7, 4).is_none());
    }
}

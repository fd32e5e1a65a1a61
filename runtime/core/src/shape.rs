//! Fixed-capacity tensor shapes (rank <= 6), copyable, no allocation.

pub const MAX_RANK: usize = 6;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    rank: u8,
    dims: [u32; MAX_RANK],
}

impl Shape {
    pub const SCALAR: Shape = Shape {
        rank: 0,
        dims: [0; MAX_RANK],
    };

    /// `None` when the rank exceeds [`MAX_RANK`] or a dimension does not fit in u32.
    pub fn new(dims: &[usize]) -> Option<Shape> {
        if dims.len() > MAX_RANK {
            return None;
        }
        let mut s = Shape {
            rank: dims.len() as u8,
            dims: [0; MAX_RANK],
        };
        for (i, &d) in dims.iter().enumerate() {
            s.dims[i] = u32::try_from(d).ok()?;
        }
        Some(s)
    }

    pub(crate) fn from_raw(rank: u8, dims: [u32; MAX_RANK]) -> Option<Shape> {
        if rank as usize > MAX_RANK {
            return None;
        }
        let mut s = Shape {
            rank,
            dims: [0; MAX_RANK],
        };
        s.dims[..rank as usize].copy_from_slice(&dims[..rank as usize]);
        Some(s)
    }

    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    pub fn dims(&self) -> &[u32] {
        &self.dims[..self.rank as usize]
    }

    pub fn dim(&self, i: usize) -> usize {
        self.dims[i] as usize
    }

    /// Number of elements; `None` when the shape's extent, the product of max(d, 1) over
    /// its dims, overflows usize. A zero dim does not hide huge ones: [0, 2^32 - 1,
    /// 2^32 - 1, 2^32 - 1] has no elements but is refused, since a product over part of
    /// its dims would overflow. So every `prod` after a successful `numel` fits.
    pub fn numel(&self) -> Option<usize> {
        let mut extent = 1usize;
        let mut empty = false;
        for &d in self.dims() {
            empty |= d == 0;
            extent = extent.checked_mul((d as usize).max(1))?;
        }
        Some(if empty { 0 } else { extent })
    }

    /// Product of dims in `from..to` (no overflow check: call after `numel` succeeded,
    /// which bounds the product of any of the dims).
    pub fn prod(&self, from: usize, to: usize) -> usize {
        self.dims()[from..to].iter().map(|&d| d as usize).product()
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> [usize; MAX_RANK] {
        let mut st = [0usize; MAX_RANK];
        let mut acc = 1usize;
        for i in (0..self.rank()).rev() {
            st[i] = acc;
            acc = acc.saturating_mul(self.dims[i] as usize);
        }
        st
    }

    /// Same dims, as a 4-d NCHW view when rank is 4.
    pub fn nchw(&self) -> Option<(usize, usize, usize, usize)> {
        (self.rank == 4).then(|| (self.dim(0), self.dim(1), self.dim(2), self.dim(3)))
    }

    pub fn with_dim(mut self, i: usize, v: u32) -> Shape {
        self.dims[i] = v;
        self
    }
}

impl core::fmt::Debug for Shape {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.dims()).finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Shape {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=[u32]}", self.dims())
    }
}

/// Numpy-style broadcast of two shapes; `None` when incompatible.
pub fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
    let r = a.rank().max(b.rank());
    let mut out = [0u32; MAX_RANK];
    for (i, slot) in out.iter_mut().enumerate().take(r) {
        let da = if i + a.rank() >= r {
            a.dims()[i + a.rank() - r]
        } else {
            1
        };
        let db = if i + b.rank() >= r {
            b.dims()[i + b.rank() - r]
        } else {
            1
        };
        *slot = if da == db {
            da
        } else if da == 1 {
            db
        } else if db == 1 {
            da
        } else {
            return None;
        };
    }
    Shape::from_raw(r as u8, out)
}

/// Element strides of `input` when broadcast to `out` (0 along broadcast axes),
/// right-aligned to `out`'s rank.
pub fn broadcast_strides(input: &Shape, out: &Shape) -> [usize; MAX_RANK] {
    let st = input.strides();
    let mut res = [0usize; MAX_RANK];
    let off = out.rank() - input.rank();
    for i in 0..input.rank() {
        res[off + i] = if input.dim(i) == 1 { 0 } else { st[i] };
    }
    res
}

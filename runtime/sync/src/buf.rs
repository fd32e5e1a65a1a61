//! Bounded buffers: a `Vec` with a cap under `alloc`, a `heapless::Vec` without. The
//! session is written once against these.

#[cfg(feature = "alloc")]
pub struct Buf<const N: usize>(alloc::vec::Vec<u8>);
#[cfg(not(feature = "alloc"))]
pub struct Buf<const N: usize>(heapless::Vec<u8, N>);

impl<const N: usize> Default for Buf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Buf<N> {
    pub fn new() -> Self {
        #[cfg(feature = "alloc")]
        {
            Buf(alloc::vec::Vec::new())
        }
        #[cfg(not(feature = "alloc"))]
        {
            Buf(heapless::Vec::new())
        }
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn clear(&mut self) {
        self.0.clear()
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
    /// Append; `false` (and nothing appended) past the cap.
    pub fn extend(&mut self, b: &[u8]) -> bool {
        if self.0.len() + b.len() > N {
            return false;
        }
        #[cfg(feature = "alloc")]
        self.0.extend_from_slice(b);
        #[cfg(not(feature = "alloc"))]
        let _ = self.0.extend_from_slice(b);
        true
    }
    /// Resize to `n` (zero-filled); `false` past the cap.
    pub fn resize(&mut self, n: usize) -> bool {
        if n > N {
            return false;
        }
        #[cfg(feature = "alloc")]
        self.0.resize(n, 0);
        #[cfg(not(feature = "alloc"))]
        let _ = self.0.resize(n, 0);
        true
    }
    pub fn free(&self) -> usize {
        N - self.0.len()
    }
    /// Drop the first `n` bytes.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.0.len());
        self.0.copy_within(n.., 0);
        let keep = self.0.len() - n;
        self.0.truncate(keep);
    }
}

/// A bounded list.
#[cfg(feature = "alloc")]
pub struct List<T, const N: usize>(alloc::vec::Vec<T>);
#[cfg(not(feature = "alloc"))]
pub struct List<T, const N: usize>(heapless::Vec<T, N>);

impl<T, const N: usize> Default for List<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> List<T, N> {
    pub fn new() -> Self {
        #[cfg(feature = "alloc")]
        {
            List(alloc::vec::Vec::new())
        }
        #[cfg(not(feature = "alloc"))]
        {
            List(heapless::Vec::new())
        }
    }
    /// Add; `false` when full.
    pub fn push(&mut self, v: T) -> bool {
        if self.0.len() >= N {
            return false;
        }
        #[cfg(feature = "alloc")]
        self.0.push(v);
        #[cfg(not(feature = "alloc"))]
        let _ = self.0.push(v);
        true
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn clear(&mut self) {
        self.0.clear()
    }
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.0
    }
    pub fn remove(&mut self, i: usize) -> T {
        self.0.remove(i)
    }
}

/// The session trusts these bounds: a frame or message exactly at the cap fits, one byte
/// more is refused with nothing written (both with and without `alloc`).
#[cfg(test)]
mod tests {
    use super::Buf;

    #[test]
    fn a_buffer_takes_exactly_its_cap() {
        let mut b = Buf::<8>::new();
        assert!(b.is_empty() && b.free() == 8);
        assert!(b.extend(&[1, 2, 3]));
        assert!(!b.is_empty());
        assert_eq!((b.len(), b.free()), (3, 5));
        assert!(!b.extend(&[0; 6]), "past the cap");
        assert_eq!(b.as_slice(), &[1, 2, 3], "a refused extend writes nothing");
        assert!(b.extend(&[4, 5, 6, 7, 8]), "exactly to the cap");
        assert_eq!((b.len(), b.free()), (8, 0));
        assert!(!b.extend(&[9]));
        b.consume(2);
        assert_eq!(b.as_slice(), &[3, 4, 5, 6, 7, 8]);
        b.consume(100);
        assert!(b.is_empty());
        assert!(b.resize(8), "resize to the cap");
        assert_eq!(b.as_slice(), &[0; 8]);
        assert!(!b.resize(9), "resize past the cap");
        assert_eq!(b.len(), 8);
        assert!(b.resize(0) && b.is_empty());
    }
}

//! Where the store keeps its RAM side: the segment table, one [`Meta`] per live record, the
//! records' int8 embeddings and norms (search never touches flash), an id lookup, and a
//! scratch buffer for one log entry.
//!
//! Two implementations share the store and the log format:
//! - [`HeapRam`] (`alloc`): grows as needed — phones, boards, the host;
//! - [`FixedRam`] (no alloc): capacities fixed by const generics — microcontrollers. Its size
//!   is known at link time (`core::mem::size_of::<FixedRam<..>>()`); put it in a `static`.

use crate::record::Id;
use crate::store::StoreError;

/// State of one erase sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    /// Sequence number of a segment in use; `None` when free (erased or dirty).
    pub(crate) seq: Option<u32>,
    pub(crate) erases: u32,
    pub(crate) dirty: bool,
}

impl Seg {
    pub(crate) const FREE: Seg = Seg {
        seq: None,
        erases: 0,
        dirty: false,
    };
    pub fn erases(&self) -> u32 {
        self.erases
    }
    pub fn in_use(&self) -> bool {
        self.seq.is_some()
    }
}

/// Per-record facts kept in RAM for filtering and scoring.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Meta {
    pub id: Id,
    pub origin: u64,
    pub timestamp_ms: u64,
    pub label: u16,
    pub importance: u8,
    pub scale: f32,
    /// Observations this record stands for (`meta[3]` of a consolidated prototype; 0 = 1).
    pub observations: u32,
    pub(crate) seg: u16,
    pub(crate) off: u32,
    pub(crate) len: u32,
}

/// The RAM side of a store. Slots are dense (`0..metas().len()`); removing a record moves
/// the last one into its slot.
pub trait Ram {
    /// Scratch for one log entry.
    type Buf: AsRef<[u8]> + AsMut<[u8]>;
    /// The only embedding dimension this RAM can hold, if fixed.
    const FIXED_DIM: Option<usize>;
    fn new_buf() -> Self::Buf;
    /// Make `buf` hold at least `len` bytes; `false` if it cannot.
    fn grow_buf(buf: &mut Self::Buf, len: usize) -> bool;
    /// Forget everything and hold `segments` free segments.
    fn reset(&mut self, segments: usize) -> Result<(), StoreError>;
    /// Most records this RAM can index.
    fn capacity(&self) -> usize;
    fn segs(&self) -> &[Seg];
    fn segs_mut(&mut self) -> &mut [Seg];
    fn metas(&self) -> &[Meta];
    fn metas_mut(&mut self) -> &mut [Meta];
    /// Embeddings of all slots, `dim` each, in slot order.
    fn emb(&self) -> &[i8];
    fn norms(&self) -> &[f32];
    fn find(&self, id: &Id) -> Option<usize>;
    /// Add a slot; `StoreError::Capacity` when full.
    fn push(&mut self, m: Meta, emb: &[i8], norm: f32) -> Result<(), StoreError>;
    fn replace(&mut self, slot: usize, m: Meta, emb: &[i8], norm: f32);
    fn swap_remove(&mut self, slot: usize);
}

#[cfg(feature = "alloc")]
pub use heap::HeapRam;

#[cfg(feature = "alloc")]
mod heap {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Growable RAM side (needs `alloc`).
    #[derive(Default)]
    pub struct HeapRam {
        segs: Vec<Seg>,
        index: BTreeMap<Id, usize>,
        metas: Vec<Meta>,
        emb: Vec<i8>,
        norms: Vec<f32>,
    }

    impl Ram for HeapRam {
        type Buf = Vec<u8>;
        const FIXED_DIM: Option<usize> = None;
        fn new_buf() -> Vec<u8> {
            Vec::new()
        }
        fn grow_buf(buf: &mut Vec<u8>, len: usize) -> bool {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            true
        }
        fn reset(&mut self, segments: usize) -> Result<(), StoreError> {
            *self = HeapRam {
                segs: vec![Seg::FREE; segments],
                ..HeapRam::default()
            };
            Ok(())
        }
        fn capacity(&self) -> usize {
            usize::MAX
        }
        fn segs(&self) -> &[Seg] {
            &self.segs
        }
        fn segs_mut(&mut self) -> &mut [Seg] {
            &mut self.segs
        }
        fn metas(&self) -> &[Meta] {
            &self.metas
        }
        fn metas_mut(&mut self) -> &mut [Meta] {
            &mut self.metas
        }
        fn emb(&self) -> &[i8] {
            &self.emb
        }
        fn norms(&self) -> &[f32] {
            &self.norms
        }
        fn find(&self, id: &Id) -> Option<usize> {
            self.index.get(id).copied()
        }
        fn push(&mut self, m: Meta, emb: &[i8], norm: f32) -> Result<(), StoreError> {
            self.index.insert(m.id, self.metas.len());
            self.metas.push(m);
            self.emb.extend_from_slice(emb);
            self.norms.push(norm);
            Ok(())
        }
        fn replace(&mut self, slot: usize, m: Meta, emb: &[i8], norm: f32) {
            let d = emb.len();
            self.metas[slot] = m;
            self.emb[slot * d..(slot + 1) * d].copy_from_slice(emb);
            self.norms[slot] = norm;
        }
        fn swap_remove(&mut self, slot: usize) {
            let n = self.metas.len();
            let d = self.emb.len() / n.max(1);
            self.index.remove(&self.metas[slot].id);
            let last = n - 1;
            if slot != last {
                let (a, b) = self.emb.split_at_mut(last * d);
                a[slot * d..(slot + 1) * d].copy_from_slice(&b[..d]);
                self.index.insert(self.metas[last].id, slot);
            }
            self.metas.swap_remove(slot);
            self.norms.swap_remove(slot);
            self.emb.truncate(last * d);
        }
    }
}

/// Fixed-capacity RAM side, no allocation: at most `N` records of dimension `D`, at most `S`
/// segments, log entries of at most `B` bytes (entry header 12 + record 60 + `D` + payload,
/// rounded up to 4; entries larger than `B` found at recovery are skipped and counted as
/// dropped). Id lookup is a linear scan (`N` is device-sized).
pub struct FixedRam<const N: usize, const D: usize, const S: usize, const B: usize> {
    segs: heapless::Vec<Seg, S>,
    metas: heapless::Vec<Meta, N>,
    emb: [[i8; D]; N],
    norms: [f32; N],
}

impl<const N: usize, const D: usize, const S: usize, const B: usize> Default
    for FixedRam<N, D, S, B>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const D: usize, const S: usize, const B: usize> FixedRam<N, D, S, B> {
    pub const fn new() -> Self {
        FixedRam {
            segs: heapless::Vec::new(),
            metas: heapless::Vec::new(),
            emb: [[0; D]; N],
            norms: [0.0; N],
        }
    }
}

impl<const N: usize, const D: usize, const S: usize, const B: usize> Ram for FixedRam<N, D, S, B> {
    type Buf = [u8; B];
    const FIXED_DIM: Option<usize> = Some(D);
    fn new_buf() -> [u8; B] {
        [0; B]
    }
    fn grow_buf(_: &mut [u8; B], len: usize) -> bool {
        len <= B
    }
    fn reset(&mut self, segments: usize) -> Result<(), StoreError> {
        self.metas.clear();
        self.segs.clear();
        for _ in 0..segments {
            self.segs
                .push(Seg::FREE)
                .map_err(|_| StoreError::Geometry)?;
        }
        Ok(())
    }
    fn capacity(&self) -> usize {
        N
    }
    fn segs(&self) -> &[Seg] {
        &self.segs
    }
    fn segs_mut(&mut self) -> &mut [Seg] {
        &mut self.segs
    }
    fn metas(&self) -> &[Meta] {
        &self.metas
    }
    fn metas_mut(&mut self) -> &mut [Meta] {
        &mut self.metas
    }
    fn emb(&self) -> &[i8] {
        &self.emb.as_flattened()[..self.metas.len() * D]
    }
    fn norms(&self) -> &[f32] {
        &self.norms[..self.metas.len()]
    }
    fn find(&self, id: &Id) -> Option<usize> {
        self.metas.iter().position(|m| m.id == *id)
    }
    fn push(&mut self, m: Meta, emb: &[i8], norm: f32) -> Result<(), StoreError> {
        let slot = self.metas.len();
        if emb.len() != D {
            return Err(StoreError::WrongDim {
                expected: D,
                got: emb.len(),
            });
        }
        self.metas.push(m).map_err(|_| StoreError::Capacity)?;
        self.emb[slot].copy_from_slice(emb);
        self.norms[slot] = norm;
        Ok(())
    }
    fn replace(&mut self, slot: usize, m: Meta, emb: &[i8], norm: f32) {
        self.metas[slot] = m;
        self.emb[slot].copy_from_slice(emb);
        self.norms[slot] = norm;
    }
    fn swap_remove(&mut self, slot: usize) {
        let last = self.metas.len() - 1;
        self.emb[slot] = self.emb[last];
        self.norms[slot] = self.norms[last];
        self.metas.swap_remove(slot);
    }
}

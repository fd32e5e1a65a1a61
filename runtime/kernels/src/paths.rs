//! Which fast path ran, counted per thread (with `std`; nothing without): lets the
//! exactness tests assert that the path they mean to test is the one that ran, instead
//! of comparing the reference with itself on a host where the path is not taken.

/// A fast path (int8 convolutions, and others whose tests check it ran).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Path {
    /// 1×1 convs on the SIMD GEMM micro-kernel, input read in place.
    PointwiseGemm,
    /// 1×1 convs on the portable blocked loop.
    PointwisePortable,
    /// One-group convs through an im2col tile and the SIMD GEMM micro-kernel.
    Im2col,
    /// One-group convs as an implicit GEMM over packed phase planes (`fast/direct.rs`).
    Direct,
    /// Depthwise convs on the AVX2 plane kernel.
    DepthwiseAvx2,
    /// Depthwise convs row by row (portable).
    DepthwiseRows,
    /// Other convs: interior without bounds checks, borders through the tap loop.
    Interior,
    /// int8 Softmax through per-row tables (`fast_softmax.rs`).
    SoftmaxTable,
    /// int8 FullyConnected on the implicit GEMM's block (`fast/mm.rs`).
    FcBlock,
    /// int8 BatchMatMul on the implicit GEMM's block (`fast/mm.rs`).
    MatMulBlock,
    /// int8 convs with a few output pixels and FullyConnected on one or two rows, as
    /// matrix × vector (`fast/gemv.rs`).
    Gemv,
    /// A batch of small-output convs as one FullyConnected over their patches
    /// (`fast/mm.rs`).
    ConvBatch,
    /// Depthwise convs with dilation 1 on the AVX2 tap-pair kernel (`fast/depthwise.rs`)
    /// or the NEON one (`fast/depthwise_neon.rs`).
    DepthwiseSimd,
    /// int8 LayerNorm, eight rows per AVX2 block (`fast_layer_norm.rs`).
    LayerNormRows,
    /// int8 GEMMs with 7-bit weights on the u8×s8 (`vpmaddubsw`) block: the implicit-GEMM
    /// conv (`fast/direct.rs`, counted with `Direct`) and FullyConnected (`fast/mm.rs`).
    GemmU8S8,
    /// aarch64 int8 GEMM, FullyConnected and GEMV on the `sdot` block
    /// (`fast/neon_dot.rs`, CPUs with the Armv8.2 dot product).
    GemmSdot,
    /// aarch64 int8 GEMM, FullyConnected and GEMV on plain-NEON `smlal` (`fast/neon.rs`,
    /// `fast/neon_dot.rs`: CPUs without the dot product, such as the Cortex-A53).
    GemmSmlal,
    /// Pad a row at a time (`movement::pad_fast`, hosts).
    PadRows,
}

#[cfg(feature = "std")]
const N: usize = Path::PadRows as usize + 1;

#[cfg(feature = "std")]
std::thread_local! {
    static TAKEN: core::cell::Cell<[u64; N]> = const { core::cell::Cell::new([0; N]) };
}

/// Count one run of `p` on this thread.
#[inline]
#[allow(unused_variables)]
pub(crate) fn note(p: Path) {
    #[cfg(feature = "std")]
    TAKEN.with(|t| {
        let mut v = t.get();
        v[p as usize] += 1;
        t.set(v);
    });
}

/// How many times `p` ran on this thread (always 0 without `std`).
pub fn taken(p: Path) -> u64 {
    #[cfg(feature = "std")]
    {
        TAKEN.with(|t| t.get()[p as usize])
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = p;
        0
    }
}

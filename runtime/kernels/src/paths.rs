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
    /// One-channel int8 convs through the implicit GEMM as `4·⌈kw/4⌉` shifted-column
    /// channels with a `kh × 1` kernel (`fast/direct.rs` `width_windows`), one count per op.
    WidthWindows,
    /// One-group convs through the implicit GEMM on transposed planes, where horizontal
    /// padding on a narrow map would waste its tiles (`fast/direct.rs` `transposed`), one
    /// count per op; counted with `Direct` too.
    DirectTransposed,
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
    /// int8 BatchMatMul on the implicit GEMM's block (`fast/mm.rs`), or on aarch64 the
    /// dot-product panel over B's transpose (`fast/neon_dot.rs`).
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
    /// int8 GEMMs on VNNI's `vpdpbusd` (u8 × s8 summed four at a time into int32, no
    /// saturation, so any int8 weights): the same two paths as `GemmU8S8` (counted there
    /// too) on x86_64 CPUs with AVX-512 VNNI (and VL) or AVX-VNNI.
    GemmVnni,
    /// int8 GEMV rows (`fast/gemv.rs`) on VNNI's `vpdpbusd`: one count per input vector
    /// (the op also counts `Gemv`).
    GemvVnni,
    /// int8 GEMV rows on 512-bit `vpdpbusd`, eight rows a pass, row sums of the weights
    /// cached (`fast/gemv.rs` `rows_vnni512`): one count per input vector (the op also
    /// counts `Gemv` and `GemvVnni`).
    GemvAvx512,
    /// int8 GEMV rows over packed eight-row panels (`fast/gemv.rs` `pack_panels`; a pack
    /// cache is active): one count per input vector, whichever instruction runs them.
    GemvPanels,
    /// aarch64 int8 GEMM, FullyConnected and GEMV on the `sdot` block
    /// (`fast/neon_dot.rs`, CPUs with the Armv8.2 dot product).
    GemmSdot,
    /// aarch64 int8 GEMM, FullyConnected and GEMV on plain-NEON `smlal` (`fast/neon.rs`,
    /// `fast/neon_dot.rs`: CPUs without the dot product, such as the Cortex-A53).
    GemmSmlal,
    /// int8 2×2 stride-2 MaxPool, 32 outputs a step (`fast_elt.rs`, AVX2; 16 on NEON).
    MaxPoolRows,
    /// int8 per-tensor lookup tables 64 bytes a step on AVX-512 VBMI (`fast_elt.rs`).
    LutVbmi,
    /// Pad a row at a time (`movement::pad_fast`, hosts).
    PadRows,
    /// Depthwise convs on the AVX-512 VNNI quad kernel (`fast/depthwise_vnni.rs`; counted
    /// with `DepthwiseSimd` too).
    DepthwiseVnni,
    /// f32 GEMMs (1×1 and im2col convs, batched small maps) on the AVX-512F block
    /// (`fast_f32/avx512.rs`, 12 × 32), one count per GEMM call.
    GemmF32Avx512,
    /// f32 large-patch convs with long 1-D kernels: im2col rows gathered as 8×8 transposed
    /// blocks of the input (`fast_f32/bigk.rs`, AVX2), one count per kernel row gathered.
    TapBlocks,
    /// 4-byte Transposes of the last two dims in 8×8 AVX2 blocks (`fast_f32::transpose4`),
    /// one count per plane.
    TransposeBlocks,
    /// int8 Softmax over an inner axis, eight columns a step on AVX2 (`fast_softmax.rs`;
    /// counted with `SoftmaxTable` too), one count per block of rows.
    SoftmaxColumns,
    /// f32 im2col tap rows of a stride-1 conv whose output is as wide as its input, one
    /// run of the flattened plane per tile (`fast_f32::gather_tap`, im2col and large
    /// patches), one count per row.
    TapRunsFlat,
    /// int8 AveragePool from per-row column sums (`pool::avg_pool_i8_fast`, hosts), one
    /// count per op.
    AvgPoolRows,
    /// int8 AveragePool of 2×2 windows at a stride of 2 without padding, a plane at a time
    /// (`pool::avg_planes`, hosts); counted with `AvgPoolRows` too.
    AvgPoolQuads,
    /// aarch64 int8 GEMM and FullyConnected of 8 or more rows on the Armv8.6 int8 matrix
    /// multiply (`smmla`, `fast/neon_dot.rs`, CPUs with i8mm); counted with `GemmSdot` too.
    GemmSmmla,
    /// aarch64 NEON int8 element-wise ops (`fast_elt/neon.rs`: Add/Mul, QuantizeLinear,
    /// lookup tables, 2×2 MaxPool rows, GlobalAveragePool sums), one count per op.
    EltNeon,
    /// f32 convs whose weights are a windowed DFT basis (an STFT front end) as FFTs
    /// (`fast_f32/dft.rs`, hosts with a weight cache), one count per op.
    DftConv,
    /// f32 convs over a batch of 1-D maps: each column's patch gathered down the channels,
    /// then transposed into the tile in 8×8 blocks (`fast_f32/fold.rs`), one count per tile.
    FoldPatches1d,
    /// int8 convs whose window is each image's whole unpadded input (a 1×1 map's pointwise
    /// conv, a head written as a conv) as one FullyConnected over the images, read in
    /// place (`fast/mm.rs`), one count per op; counted with `ConvBatch` too.
    ConvWholeInput,
    /// f32 MaxPool whose windows are as wide as their stride (2 or 4) with every column
    /// inside the plane, eight outputs per AVX2 step from column-phase vectors
    /// (`fast_f32/pool.rs`), one count per op.
    MaxPoolPhasesF32,
    /// f32 MaxPool with windows three columns wide at stride two, eight outputs per AVX2
    /// step from even and odd column phases (`fast_f32/pool.rs`), one count per op.
    MaxPool3s2F32,
    /// int8 Softmax over the last axis, eight rows at a time through the column blocks
    /// (`fast_softmax.rs`, AVX2), one count per op part.
    SoftmaxRows,
    /// int8 Softmax over rows of more than 1024 elements on the last axis, eight rows'
    /// sums at a time (`fast_softmax.rs` `long_rows`, every host), one count per op part.
    SoftmaxLongRows,
    /// f32 conv GEMMs on the AVX-512F block with the weights packed once per model into
    /// the block's panels (`fast_f32/avx512.rs`, hosts with a weight cache); counted with
    /// `GemmF32Avx512` too, one count per GEMM call.
    GemmF32Panels,
    /// Gather by constant indices as runs of copies, the runs found once per model
    /// (`fast_gather.rs`, hosts with a weight cache), one count per op.
    GatherRuns,
    /// f32 depthwise convs on the padded-plane kernel's AVX-512F form (16 columns a
    /// vector; `fast_f32/depthwise_avx2.rs`), one count per op.
    DepthwiseF32Avx512,
    /// f32 stride-1 convs as an implicit GEMM on the AVX-512F block: each band of output
    /// rows' input rows copied once, zero-padded, and every tap read in place from it
    /// (`fast_f32/taps.rs`) instead of gathered into an im2col tile; one count per band.
    GemmF32Taps,
    /// FullyConnected.f32-w8 (f32 rows quantized at run time, int8 weights) on the FC block
    /// (`fast/mm.rs`), one count per op.
    FcW8,
    /// The FC block's VNNI quads on 512-bit `vpdpbusd` (`fast/mm.rs` `gemm512`: int8 and
    /// f32-w8 FullyConnected of three or more rows), one count per GEMM.
    FcVnni512,
    /// f32 FullyConnected of several rows on its weight panels transposed once per model
    /// (`fast_f32/matmul.rs`, hosts with a weight cache), one count per op.
    FcF32Panels,
    /// int8 GEMMs on AMX tiles (`fast/amx.rs`: `tdpbusd`, 16 × 16 × 64 products an
    /// instruction) where the CPU has AMX-INT8 and the OS lets the process use it: the FC
    /// block's VNNI quads (int8 and f32-w8 FullyConnected of three or more rows, conv
    /// batches); counted with `GemmU8S8` and `GemmVnni` too, one count per GEMM.
    GemmAmx,
    /// One-group int8 convs as an implicit GEMM on AMX tiles over a channels-last staged
    /// input (`fast/amx_conv.rs`), one count per op; counted with `GemmU8S8` and
    /// `GemmVnni` too.
    ConvAmx,
    /// int8 BatchMatMul of two activations on AMX tiles (`fast/mm.rs` `pair_amx`: A as
    /// `a + 128` bytes, B's raw int8 values, the zero points' terms in the output stage),
    /// one count per op; counted with `MatMulBlock` and `GemmAmx` too.
    MatMulAmx,
    /// int8 BatchMatMul of two activations on VNNI's u8×s8 quads (`fast/mm.rs`
    /// `pair_quads`, hosts with VNNI but no AMX tiles), one count per op; counted with
    /// `MatMulBlock` too.
    MatMulVnni,
    /// int8 Mul sixteen elements a step on int16 products (`fast_elt.rs` `mul16`, AVX2
    /// hosts without AVX-512), one count per run of 16 or more.
    MulInt16,
    /// int8 Add sixteen elements a step, clamped by saturation (`fast_elt.rs` `add16`,
    /// AVX2 hosts without AVX-512), one count per run of 16 or more.
    AddInt16,
    /// int8 depthwise convs on small maps, sixteen channels a block in channels-last order
    /// (`fast/depthwise_cl.rs`); counted with `DepthwiseSimd` too.
    DepthwiseChannelsLast,
    /// f32 depthwise convs on small maps, eight channels a block in channels-last order
    /// (`fast_f32/depthwise_cl.rs`), one count per op.
    DepthwiseF32ChannelsLast,
    /// f32 Reduce over one contiguous run of axes without per-element index arithmetic
    /// (`reduce.rs` `reduce_fast`), one count per op.
    ReduceRuns,
}

#[cfg(feature = "std")]
const N: usize = Path::ReduceRuns as usize + 1;

#[cfg(feature = "std")]
std::thread_local! {
    // One cell a path: a count touches its own 8 bytes (a cell of the whole array was
    // copied out and back, two `memmove`s a count, 4% of a small model's run).
    static TAKEN: [core::cell::Cell<u64>; N] = const { [const { core::cell::Cell::new(0) }; N] };
}

/// Count one run of `p` on this thread.
#[inline]
#[allow(unused_variables)]
pub(crate) fn note(p: Path) {
    #[cfg(feature = "std")]
    TAKEN.with(|t| {
        let c = &t[p as usize];
        c.set(c.get() + 1);
    });
}

/// How many times `p` ran on this thread (always 0 without `std`).
pub fn taken(p: Path) -> u64 {
    #[cfg(feature = "std")]
    {
        TAKEN.with(|t| t[p as usize].get())
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = p;
        0
    }
}

/// Whether this CPU has AVX2 (detected at run time with `std`; without it, whether the
/// build targets it). The one test every AVX2 kernel module asks.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "avx2")
    }
}

/// Whether this CPU has AVX2 and FMA (the f32 kernels need both), as [`avx2`] decides.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_fma() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(target_feature = "avx2", target_feature = "fma"))
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
static VNNI_OFF: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The `vpdpbusd` encoding the CPU has: EVEX (AVX-512 VNNI with VL) or VEX (AVX-VNNI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vnni {
    Evex,
    Vex,
}

/// Whether this CPU has `vpdpbusd` on 256-bit registers, detected at run time (`std`,
/// x86_64; `None` elsewhere), whatever [`allow_vnni`] says.
pub fn vnni_hardware() -> Option<Vnni> {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl")
        {
            return Some(Vnni::Evex);
        }
        if std::is_x86_feature_detected!("avxvnni") {
            return Some(Vnni::Vex);
        }
    }
    None
}

/// The `vpdpbusd` encoding the GEMMs use: the hardware's, unless [`allow_vnni`] or the
/// environment (`CAIRN_VNNI=0`, read once) turned it off.
pub fn vnni() -> Option<Vnni> {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        static ENV_OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let env_off = *ENV_OFF.get_or_init(|| std::env::var("CAIRN_VNNI").is_ok_and(|v| v == "0"));
        if env_off || VNNI_OFF.load(core::sync::atomic::Ordering::Relaxed) {
            return None;
        }
    }
    vnni_hardware()
}

/// Let GEMMs packed from now on use VNNI where the CPU has it (the default), or not (7-bit
/// weights then take `vpmaddubsw`, others int16 pairs): for tests and comparisons of the
/// paths on one host. Process-wide; returns the previous setting. Weights packed with
/// 8-bit values for VNNI keep using it.
pub fn allow_vnni(on: bool) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        !VNNI_OFF.swap(!on, core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        let _ = on;
        false
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    static SMALL_DW_OFF: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Whether depthwise convs on small maps may take the channels-last kernels
/// (`fast/depthwise_cl.rs` for int8, `fast_f32/depthwise_cl.rs` for f32; AVX2 hosts with
/// `std`) on this thread: yes unless [`allow_small_depthwise`] turned it off.
pub fn small_depthwise() -> bool {
    #[cfg(feature = "std")]
    {
        !SMALL_DW_OFF.with(|c| c.get())
    }
    #[cfg(not(feature = "std"))]
    {
        true
    }
}

/// Let depthwise convs run on this thread take the channels-last small-map kernel (the
/// default) or not (they keep the plane kernels): for tests and comparisons of the two
/// on one host. Per thread (the choice is made on the thread that runs the op); returns
/// the previous setting.
pub fn allow_small_depthwise(on: bool) -> bool {
    #[cfg(feature = "std")]
    {
        !SMALL_DW_OFF.with(|c| c.replace(!on))
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = on;
        true
    }
}

#[cfg(all(feature = "std", target_arch = "aarch64"))]
static I8MM_OFF: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the aarch64 GEMMs use `smmla`: the CPU has i8mm (detected at run time with
/// `std`; without it, whether the build targets it), unless [`allow_i8mm`] or the
/// environment (`CAIRN_I8MM=0`, read once) turned it off. Its sums are the `sdot` block's
/// (exact integers), so this only chooses speed.
pub fn i8mm() -> bool {
    #[cfg(all(feature = "std", target_arch = "aarch64"))]
    {
        static HW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let on = *HW.get_or_init(|| {
            std::arch::is_aarch64_feature_detected!("i8mm")
                && std::arch::is_aarch64_feature_detected!("dotprod")
                && !std::env::var("CAIRN_I8MM").is_ok_and(|v| v == "0")
        });
        on && !I8MM_OFF.load(core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(all(feature = "std", target_arch = "aarch64")))]
    {
        cfg!(all(
            target_arch = "aarch64",
            target_feature = "i8mm",
            target_feature = "dotprod"
        ))
    }
}

/// Let the aarch64 GEMMs use `smmla` where the CPU has it (the default), or not (they
/// take `sdot`): for tests and comparisons on one host. Process-wide; returns the
/// previous setting (always `false` off aarch64 or without `std`).
pub fn allow_i8mm(on: bool) -> bool {
    #[cfg(all(feature = "std", target_arch = "aarch64"))]
    {
        !I8MM_OFF.swap(!on, core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(all(feature = "std", target_arch = "aarch64")))]
    {
        let _ = on;
        false
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
static AMX_OFF: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the int8 GEMMs that run on VNNI use AMX tiles instead: the CPU has AMX-TILE and
/// AMX-INT8 and Linux granted this process the tile state (`arch_prctl`
/// `ARCH_REQ_XCOMP_PERM`, asked once), unless [`allow_amx`] or the environment
/// (`CAIRN_AMX=0`, read once) turned it off. The tiles' sums are the exact int32 sums of
/// `vpdpbusd`, so this only chooses speed. Always `false` without `std` or off x86_64
/// Linux.
pub fn amx() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64", target_os = "linux"))]
    {
        static HW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let on = *HW.get_or_init(|| {
            !std::env::var("CAIRN_AMX").is_ok_and(|v| v == "0") && crate::fast::amx_granted()
        });
        on && !AMX_OFF.load(core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// Multiply-adds of one round of [`amx_rounds`].
pub const AMX_ROUND_MACS: u64 = 4 * 16 * 16 * 64;

/// `n` rounds of four independent `tdpbusd` on tiles of zeros, for timing the tile unit's
/// peak (`cairn bench`); `false`, nothing run, where [`amx`] is off.
pub fn amx_rounds(n: u64) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64", target_os = "linux"))]
    if amx() {
        // SAFETY: `amx()` is on; no tile configuration is live here (kernels release
        // theirs before they return).
        #[allow(unsafe_code)]
        unsafe {
            crate::fast::amx_dpbusd_rounds(n)
        };
        return true;
    }
    let _ = n;
    false
}

/// Let the VNNI GEMMs use AMX where the CPU has it (the default), or not (they keep
/// `vpdpbusd`): for tests and comparisons on one host. Process-wide; returns the previous
/// setting.
pub fn allow_amx(on: bool) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        !AMX_OFF.swap(!on, core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        let _ = on;
        false
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
static AVX512_OFF: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the f32 GEMMs use the AVX-512F block: the CPU has AVX-512F (detected at run
/// time with `std`; without it, whether the build targets it), unless [`allow_avx512`] or
/// the environment (`CAIRN_AVX512=0`, read once) turned it off. Its results are the same
/// bits as the AVX2 block's, so this only chooses speed.
pub fn avx512_f32() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        static HW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let on = *HW.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f")
                && !std::env::var("CAIRN_AVX512").is_ok_and(|v| v == "0")
        });
        on && !AVX512_OFF.load(core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        cfg!(all(target_arch = "x86_64", target_feature = "avx512f"))
    }
}

/// Let the f32 GEMMs use AVX-512F where the CPU has it (the default), or not (they take the
/// AVX2 block): for tests and comparisons on one host. Process-wide; returns the previous
/// setting.
pub fn allow_avx512(on: bool) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        !AVX512_OFF.swap(!on, core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        let _ = on;
        false
    }
}

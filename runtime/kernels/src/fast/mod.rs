//! Faster int8 convolution paths, bit-exact with the reference kernels (tested in
//! `runtime/kernels/tests/exact.rs`):
//! - pointwise (1×1, stride 1, no padding, one group) as a GEMM: AVX2 `vpmaddwd` micro-kernel
//!   of 8 output channels × 8 pixels on x86_64 (detected at run time with `std`, at compile
//!   time without); on aarch64 the `sdot` block of `neon_dot.rs` where the CPU has the dot
//!   product (run-time detection with `std`), `smlal` by lane (`neon.rs`) otherwise;
//!   portable blocked loop elsewhere;
//! - depthwise with dilation 1 and horizontal stride 1 or 2: tap-quad phase planes +
//!   `vpdpbusd` kernel on AVX-512 VNNI + VBMI hosts with `std` (`depthwise_vnni.rs`),
//!   tap-pair `vpmaddwd` kernel on other AVX2 hosts with `std` (`depthwise.rs`), `smlal`
//!   kernel on aarch64 (`depthwise_neon.rs`);
//!   other depthwise shapes take the older AVX2 plane kernel or the row loop;
//! - one-group convs as an implicit GEMM on AMX tiles over a channels-last staged input
//!   where the CPU has AMX-INT8 (`amx_conv.rs`, with `std`);
//! - one-group convs of up to 256 taps as an implicit GEMM: `direct.rs` on AVX2 hosts,
//!   `direct_neon.rs` (`sdot`) on aarch64 CPUs with the dot product (both with `std`);
//!   im2col tiles on the GEMM micro-kernel otherwise;
//! - strided one-group convs of more than 49 taps that the implicit GEMM does not take (an
//!   STFT's or filter bank's frames) on AVX2 hosts with `std`: one FullyConnected over
//!   their patches (`mm::conv_batch`, VNNI where the CPU has it);
//! - every other conv with a kernel of at most 49 taps: the interior of the image without
//!   bounds checks, borders through the reference tap loop.
//!
//! Each returns `None` when the op is not its case, and the caller falls back.

use cairn_core::layout::{Layout, Pairs6};
use cairn_core::op::{conv as p, conv_multipliers};
use cairn_core::quant::requantize_signed;
use cairn_core::{ExecError, OpCall, TensorMut};

use crate::conv::{geo, Geo};
use crate::util::qp;

/// `acc + ` the 2 × 2 products of the two 8-byte rows of `a` by the two of `b` (`smmla`):
/// lanes `a0·b0, a0·b1, a1·b0, a1·b1` (i8mm; for `neon_dot.rs` and `direct_neon.rs`,
/// inside functions compiled with `i8mm`).
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
macro_rules! smmla {
    ($acc:expr, $a:expr, $b:expr) => {{
        let mut r: int32x4_t = $acc;
        core::arch::asm!(
            "smmla {r:v}.4s, {a:v}.16b, {b:v}.16b",
            r = inout(vreg) r,
            a = in(vreg) $a,
            b = in(vreg) $b,
            options(pure, nomem, nostack, preserves_flags),
        );
        r
    }};
}

#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
mod fc;
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
pub use fc::fc_i8;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub use fc::fc_w8;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod amx;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod amx_conv;
#[cfg(all(feature = "std", target_arch = "x86_64", target_os = "linux"))]
pub(crate) use amx::dpbusd_rounds as amx_dpbusd_rounds;
#[cfg(all(feature = "std", target_arch = "x86_64", target_os = "linux"))]
pub(crate) use amx::granted as amx_granted;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod depthwise;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod depthwise_cl;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod depthwise_neon;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod depthwise_vnni;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod direct;
#[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
mod direct_neon;
#[cfg(target_arch = "x86_64")]
mod gemv;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod gemv_w8;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod mm;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon_dot;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(crate) use mm::bmm_i8;
#[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
pub(crate) use neon_dot::bmm_i8 as bmm_i8_neon;

struct Q<'a> {
    x: &'a [i8],
    /// Row-major int8 weights (empty when they are pre-packed: see `wp`).
    w: &'a [i8],
    /// Pre-packed weights (`Layout::Pairs6`), read only by the GEMM micro-kernels.
    wp: Option<(&'a [i16], Pairs6)>,
    /// `row_offset` of every output channel when computed once per conv (else empty).
    offs: &'a [i32],
    bias: Option<&'a [i32]>,
    scales: &'a [f32],
    /// Multipliers of the accumulators below zero where a PRelu is folded into the
    /// requantization (`conv_multipliers`); `None`: `scales` for every sign.
    neg: Option<&'a [f32]>,
    zx: i32,
    zy: i32,
    lo: i32,
    hi: i32,
}

impl Q<'_> {
    /// Output channel `o`'s multiplier for accumulators below zero. (32-bit Arm: the
    /// conv paths leave a folded PRelu to the reference, so this is `scales[o]`.)
    #[inline(always)]
    fn neg_scale(&self, o: usize) -> f32 {
        match self.neg {
            Some(n) if !cfg!(target_arch = "arm") => n[o],
            _ => self.scales[o],
        }
    }

    /// The reference's requantization of output channel `o`'s accumulator.
    #[inline(always)]
    fn requant(&self, o: usize, acc: i32) -> i32 {
        requantize_signed(
            acc,
            self.scales[o],
            self.neg_scale(o),
            self.zy,
            self.lo,
            self.hi,
        )
    }
}

fn operands<'a>(call: &OpCall<'a>, out: &TensorMut<'_>, oc: usize) -> Result<Q<'a>, ExecError> {
    let xt = call.req(0)?;
    let bias = match call.input(2) {
        Some(b) => Some(b.i32s()?),
        None => None,
    };
    let m = call.req(3)?.f32s()?;
    let (scales, neg) = conv_multipliers(m, oc).ok_or(ExecError::Shape)?;
    let wt = call.req(1)?;
    let (w, wp) = match wt.info.layout {
        Layout::Plain => (wt.i8s()?, None),
        Layout::Pairs6 => (&[][..], Some(wt.pairs6()?)),
    };
    Ok(Q {
        x: xt.i8s()?,
        w,
        wp,
        offs: &[],
        bias,
        scales,
        neg: (m.len() > oc).then_some(neg),
        zx: qp(&xt.info).1,
        zy: qp(&out.info).1,
        lo: call.param(p::ACT_LO),
        hi: call.param(p::ACT_HI),
    })
}

/// int8 Conv through a fast path, or `None` if no fast path covers this op.
pub fn conv_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    let g = geo(call, out).ok()?;
    let pointwise = g.kh == 1
        && g.kw == 1
        && g.sh == 1
        && g.sw == 1
        && g.pt == 0
        && g.pl == 0
        && g.g == 1
        && g.oh == g.h
        && g.ow == g.w;
    let small = g.kh * g.kw <= 49;
    // Wider kernels (strided filter banks: STFT-like front ends) still make a GEMM when
    // one im2col column fits; other wide ones go to `fast_conv_rows` or the reference.
    let wide_gemm = !small
        && g.g == 1
        && g.c * g.kh * g.kw <= IM2COL_MAX_K
        && g.sw > 1
        && simd_gemm_available();
    // Strided wide kernels on AVX2 hosts with std: one FullyConnected over the patches
    // (`mm::conv_batch`), any K whose patches stay within `WIDE_FC_MAX_PATCH`.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    let wide_fc = wide_fc_fits(&g);
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    let wide_fc = false;
    // A few output pixels in all take the GEMV (`gemv.rs`) whatever the kernel size.
    #[cfg(target_arch = "x86_64")]
    let tiny = g.g == 1 && g.n * g.oh * g.ow <= gemv::MAX_PIX && g.c * g.kh * g.kw <= gemv::MAX_K;
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    let tiny =
        g.g == 1 && g.n * g.oh * g.ow <= neon_dot::MAX_PIX && g.c * g.kh * g.kw <= neon_dot::MAX_K;
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    let tiny = false;
    // The implicit GEMM takes one-group kernels of up to 256 taps.
    let wide_direct = direct_fits(&g, false);
    if !(pointwise || small || wide_gemm || tiny || wide_direct || wide_fc) {
        return None;
    }
    let q = match operands(call, out, g.oc) {
        Ok(q) => q,
        Err(e) => return Some(Err(e)),
    };
    // Microcontrollers run a folded PRelu (`conv_multipliers`) in the reference kernel: a
    // second multiplier in every fast path's output stage would not fit the core's flash
    // budget.
    if cfg!(target_arch = "arm") && q.neg.is_some() {
        return None;
    }
    if q.wp.is_some() {
        // Packed weights are read by the GEMM micro-kernels only; anything else runs the
        // reference (which reads the packed order too).
        let k = g.c * g.kh * g.kw;
        let gemm_k = if pointwise { GEMM_MAX_K } else { IM2COL_MAX_K };
        if g.g != 1 || !simd_gemm_available() || k > gemm_k || !(pointwise || small || wide_gemm) {
            return None;
        }
    }
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    // Cortex-M with the DSP extension: im2col + SMLAD and the depthwise row kernel (not
    // with a folded PRelu: its output stage has one multiplier per channel).
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    if q.wp.is_none() && q.neg.is_none() {
        let (x, w, bias, scales) = (q.x, q.w, q.bias, q.scales);
        let (zx, zy, lo, hi) = (q.zx, q.zy, q.lo, q.hi);
        let ops = crate::dsp_conv::Operands {
            x,
            w,
            bias,
            scales,
            zx,
            zy,
            lo,
            hi,
        };
        if crate::dsp_conv::conv(&g, &ops, y) {
            return Some(Ok(()));
        }
    }
    // A few output pixels in all (a 1×1 map after pooling, a filter bank on a few frames):
    // stream each weight row once.
    #[cfg(target_arch = "x86_64")]
    if gemv::conv_fits(&g, &q) {
        crate::paths::note(crate::paths::Path::Gemv);
        gemv::conv(&g, &q, y);
        return Some(Ok(()));
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if neon_dot::conv_fits(&g, &q) {
        crate::paths::note(crate::paths::Path::Gemv);
        neon_dot::conv_gemv(&g, &q, y);
        return Some(Ok(()));
    }
    // Pointwise convs over a batch of tiny images fold the batch into the im2col GEMM.
    let fold = g.n > 1 && g.oh * g.ow < IM2COL_TILE && g.oc <= FOLD_MAX_OC;
    // On AVX2 hosts with std the fold is one FullyConnected over every patch instead.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if g.n > 1 && g.oh * g.ow < IM2COL_TILE && q.neg.is_none() && mm::conv_batch(&g, &q, y) {
        return Some(Ok(()));
    }
    // CPUs with AMX: the implicit GEMM on tiles over a channels-last staged input.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if amx_conv::fits(&g, q.wp.is_some()) && amx_conv::conv(&g, &q, y) {
        return Some(Ok(()));
    }
    if direct_fits(&g, fold) {
        crate::paths::note(crate::paths::Path::Direct);
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        direct::conv(&g, &q, y);
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        {
            crate::paths::note(crate::paths::Path::GemmSdot);
            direct_neon::conv(&g, &q, y);
        }
        return Some(Ok(()));
    }
    // A strided filter bank (an STFT's frames: hundreds of taps, strides past the implicit
    // GEMM's 4) is a FullyConnected over its frames: each weight row is packed once per
    // model and the block takes VNNI where the CPU has it.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if wide_fc && q.neg.is_none() && mm::conv_batch(&g, &q, y) {
        return Some(Ok(()));
    }
    // The GEMM paths subtract zx·Σw per output channel: sum each row once per conv, not
    // once per im2col tile.
    let mut offs = [0i32; OFFS_MAX];
    let q = if g.g == 1 && g.oc <= OFFS_MAX {
        let k = g.c * g.kh * g.kw;
        for (o, v) in offs.iter_mut().enumerate().take(g.oc) {
            *v = row_offset(&q, o, k);
        }
        Q {
            offs: &offs[..g.oc],
            ..q
        }
    } else {
        q
    };
    if pointwise && !(fold && g.c <= IM2COL_MAX_K && simd_gemm_available()) {
        pointwise_i8(&g, &q, y);
    } else if g.g == 1 && g.c * g.kh * g.kw <= IM2COL_MAX_K && simd_gemm_available() {
        crate::paths::note(crate::paths::Path::Im2col);
        #[cfg(any(
            target_arch = "x86_64",
            all(target_arch = "aarch64", target_feature = "neon")
        ))]
        if g.c * g.kh * g.kw <= 64 {
            im2col_i8::<64>(&g, &q, y);
        } else {
            im2col_i8::<IM2COL_MAX_K>(&g, &q, y);
        }
    } else if g.g == g.c && g.oc == g.c {
        // Small maps: sixteen channels at a time, channels last (the plane kernels below
        // spend most of a small plane on the channel's setup).
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if avx2::available()
            && q.wp.is_none()
            && crate::paths::small_depthwise()
            && depthwise_cl::fits(&g)
        {
            crate::paths::note(crate::paths::Path::DepthwiseSimd);
            crate::paths::note(crate::paths::Path::DepthwiseChannelsLast);
            by_planes(&g, y, |piece, p0, p1| {
                // SAFETY: AVX2 is present and the conv fits the kernel (checked); the
                // operands' own slices; `piece` is planes p0..p1 of the output.
                unsafe { depthwise_cl::depthwise(&g, &q, piece, p0, p1) }
            });
            return Some(Ok(()));
        }
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if q.wp.is_none() && depthwise_vnni::fits(&g) && depthwise_vnni::available() {
            crate::paths::note(crate::paths::Path::DepthwiseSimd);
            crate::paths::note(crate::paths::Path::DepthwiseVnni);
            by_planes(&g, y, |piece, p0, p1| {
                // SAFETY: the CPU has the kernel's features and the conv fits it
                // (checked); the operands' own slices; `piece` is planes p0..p1 of the
                // output.
                unsafe { depthwise_vnni::depthwise(&g, &q, piece, p0, p1) }
            });
            return Some(Ok(()));
        }
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if avx2::available() && q.wp.is_none() && depthwise::fits(&g) {
            crate::paths::note(crate::paths::Path::DepthwiseSimd);
            by_planes(&g, y, |piece, p0, p1| {
                // SAFETY: AVX2 is present and the conv fits the kernel (checked); the
                // operands' own slices; `piece` is planes p0..p1 of the output.
                unsafe { depthwise::depthwise(&g, &q, piece, p0, p1) }
            });
            return Some(Ok(()));
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        if q.wp.is_none() && depthwise_neon::fits(&g) {
            crate::paths::note(crate::paths::Path::DepthwiseSimd);
            by_planes(&g, y, |piece, p0, p1| {
                depthwise_neon::depthwise(&g, &q, piece, p0, p1)
            });
            return Some(Ok(()));
        }
        #[cfg(target_arch = "x86_64")]
        if avx2::available() && avx2::depthwise_fits(&g) {
            crate::paths::note(crate::paths::Path::DepthwiseAvx2);
            // SAFETY: AVX2 is present; the geometry fits the padded buffer (checked).
            unsafe { avx2::depthwise(&g, &q, y) };
            return Some(Ok(()));
        }
        crate::paths::note(crate::paths::Path::DepthwiseRows);
        depthwise_rows_i8(&g, &q, y);
    } else {
        crate::paths::note(crate::paths::Path::Interior);
        direct_i8(&g, &q, y);
    }
    Some(Ok(()))
}

/// Patch elements (output pixels × taps) up to which a strided wide-kernel conv runs as
/// one FullyConnected over its patches: 4 MB of int16 patches at most.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
const WIDE_FC_MAX_PATCH: usize = 1 << 21;

/// A depthwise kernel over the output `y` split across the lent threads in parts of whole
/// planes (image, channel), each written by one part: `f(piece, p0, p1)` computes planes
/// `p0..p1` into `piece`.
#[cfg(any(
    all(feature = "std", target_arch = "x86_64"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
fn by_planes(g: &Geo, y: &mut [i8], f: impl Fn(&mut [i8], usize, usize) + Sync) {
    let plane = (g.oh * g.ow).max(1);
    let work = (y.len() * g.kh * g.kw) as u64;
    crate::par::par_pieces(y, plane, work, |at, piece| {
        let p0 = at / plane;
        f(piece, p0, p0 + piece.len() / plane)
    });
}

/// Whether a one-group conv with more than 49 taps and a stride the implicit GEMM does not
/// take runs as one FullyConnected over its patches (`mm::conv_batch`, AVX2 with `std`).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
fn wide_fc_fits(g: &Geo) -> bool {
    let k = g.c * g.kh * g.kw;
    avx2::available()
        && g.g == 1
        && g.kh * g.kw > 49
        && (g.sh > 1 || g.sw > 1)
        && !direct_fits(g, false)
        && (g.n * g.oh * g.ow)
            .checked_mul(k)
            .is_some_and(|v| v > 0 && v <= WIDE_FC_MAX_PATCH)
        && k.checked_mul(g.oc).is_some_and(|v| v <= mm::MAX_KN)
}

/// Whether the implicit-GEMM path (`direct.rs`: AVX2 hosts with `std`; `direct_neon.rs`:
/// aarch64 with `std` and the dot product) takes this conv: one group, up to 256 taps,
/// strides up to 4, unless the batch folds into im2col columns.
#[allow(unused_variables)]
fn direct_fits(g: &Geo, fold: bool) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if !fold && avx2::available() && direct::fits(g) {
        return true;
    }
    #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
    if !fold && direct_neon::fits(g) {
        return true;
    }
    false
}

/// Y[n, oc, p] = requant(bias[oc] + Σ_ic W[oc, ic] · (X[n, ic, p] − zx)).
/// Computed as Σ W·X − zx·Σ W so the inner loop works on raw int8 values.
fn pointwise_i8(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let (ic, oc, pix) = (g.c, g.oc, g.h * g.w);
    for n in 0..g.n {
        let x = &q.x[n * ic * pix..(n + 1) * ic * pix];
        let y = &mut y[n * oc * pix..(n + 1) * oc * pix];
        if gemm_simd(x, pix, q, ic, oc, pix, y, pix, 0) {
            crate::paths::note(crate::paths::Path::PointwiseGemm);
            continue;
        }
        crate::paths::note(crate::paths::Path::PointwisePortable);
        pointwise_portable(x, q, ic, oc, pix, y);
    }
}

/// Run `f` in a function compiled with AVX2 when the CPU has it, so the loops the
/// compiler inlines into it vectorize 8 lanes wide. The arithmetic is unchanged (Rust never
/// contracts float operations), so results are identical either way.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::call(f) };
    }
    f()
}

/// One output row of an int8 ConvTranspose block (`fast_deconv::row_and_store`), compiled
/// with AVX2 when the CPU has it.
pub(crate) fn deconv_row(
    rows: &crate::fast_deconv::Rows<'_>,
    acc: &mut [[i32; crate::fast_deconv::MAX_OW]; crate::fast_conv_rows::OC_BLOCK],
    xr: &mut [i32; crate::fast_deconv::MAX_OW],
    y: &mut [i8],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::deconv_row(rows, acc, xr, y) };
    }
    crate::fast_deconv::row_and_store(rows, acc, xr, y)
}

/// One output row of a wide-kernel int8 Conv block (`fast_conv_rows::row_and_store`),
/// compiled with AVX2 when the CPU has it.
pub(crate) fn conv_row(
    rows: &crate::fast_conv_rows::Rows<'_>,
    acc: &mut [[i32; crate::fast_conv_rows::MAX_ROW]; crate::fast_conv_rows::OC_BLOCK],
    xr: &mut [i32; crate::fast_conv_rows::MAX_ROW],
    y: &mut [i8],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { avx2::conv_row(rows, acc, xr, y) };
    }
    crate::fast_conv_rows::row_and_store(rows, acc, xr, y)
}

const IM2COL_MAX_K: usize = 2048;
/// Largest K the SIMD GEMM micro-kernels take (both hold 2048); what the converter packs.
const GEMM_MAX_K: usize = cairn_core::layout::PAIRS6_MAX_K;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(avx2::MAX_K == GEMM_MAX_K);
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
const _: () = assert!(neon::MAX_K == GEMM_MAX_K);
const IM2COL_TILE: usize = 48;

/// Whether a SIMD GEMM micro-kernel runs here: AVX2 on x86_64 (detected at run time with
/// `std`), NEON on aarch64 (part of the base ISA: selected at compile time).
fn simd_gemm_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::available()
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        true
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    {
        false
    }
}

/// The int8 GEMM of `avx2::gemm` (same arguments and result) through this CPU's SIMD
/// micro-kernel; `false` (nothing written) where there is none or `ic` is too large.
#[allow(clippy::too_many_arguments, unused_variables)]
fn gemm_simd(
    x: &[i8],
    xs: usize,
    q: &Q<'_>,
    ic: usize,
    oc: usize,
    pix: usize,
    y: &mut [i8],
    ys: usize,
    y0: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() && ic <= avx2::MAX_K {
        // SAFETY: AVX2 is present (checked above); the caller sizes the slices.
        unsafe { avx2::gemm(x, xs, q, ic, oc, pix, y, ys, y0) };
        return true;
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if ic <= neon::MAX_K {
        // The dot-product block where the CPU has it, `smlal` by lane otherwise.
        if neon_dot::gemm(x, xs, q, ic, oc, pix, y, ys, y0) {
            crate::paths::note(crate::paths::Path::GemmSdot);
        } else {
            crate::paths::note(crate::paths::Path::GemmSmlal);
            neon::gemm(x, xs, q, ic, oc, pix, y, ys, y0);
        }
        return true;
    }
    false
}

/// Convs with one group and up to 2048 patch elements: gather the patches of 48
/// output pixels into a stack tile (zero point where the window leaves the image, which
/// contributes nothing once `zx·Σw` is subtracted) and run the GEMM micro-kernel on it.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[inline(never)]
fn im2col_i8<const KMAX: usize>(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    // Small outputs of a batch (the windows of a streaming audio model) fold the batch
    // into the GEMM's columns: a tile spans several images and its outputs are scattered
    // from a staging block, instead of one starved GEMM per image.
    if g.n > 1 && g.oh * g.ow < IM2COL_TILE && g.oc <= FOLD_MAX_OC {
        let mut stage = [0i8; FOLD_MAX_OC * IM2COL_TILE];
        im2col_tiles::<KMAX>(g, q, y, Some(&mut stage));
    } else {
        im2col_tiles::<KMAX>(g, q, y, None);
    }
}

/// Output channels a folded im2col tile stages (24 KB of stack).
const FOLD_MAX_OC: usize = 512;

#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[inline(always)]
fn im2col_tiles<const KMAX: usize>(g: &Geo, q: &Q<'_>, y: &mut [i8], stage: Option<&mut [i8]>) {
    let k = g.c * g.kh * g.kw;
    let ow = g.ow;
    let pix = g.oh * ow;
    let plane = g.h * g.w;
    let total = g.n * pix;
    // Sized by the caller's bound on K: a stem conv (K = 27) zeroes 3 KB, not 96 KB.
    let mut tile = [[0i8; IM2COL_TILE]; KMAX];
    let tile = tile.as_flattened_mut();
    let mut stage = stage;
    // Columns are output pixels numbered across the batch; unfolded tiles stay in one image.
    let mut t0 = 0;
    while t0 < total {
        let len = match stage {
            Some(_) => IM2COL_TILE.min(total - t0),
            None => IM2COL_TILE.min(pix - t0 % pix),
        };
        for c in 0..g.c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let row = (c * g.kh + ky) * g.kw + kx;
                    let dst = &mut tile[row * IM2COL_TILE..row * IM2COL_TILE + len];
                    // Walk the tile one output row segment at a time.
                    let mut j = 0;
                    while j < len {
                        let col = t0 + j;
                        let (n, p) = (col / pix, col % pix);
                        let (oy, ox) = (p / ow, p % ow);
                        let seg = (ow - ox).min(len - j);
                        let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                        let d = &mut dst[j..j + seg];
                        if iy < 0 || iy >= g.h as isize {
                            d.fill(q.zx as i8);
                        } else {
                            let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
                            let xrow = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                            // ix = (ox + s)·sw + kx·dw − pl for the s-th pixel.
                            let ix0 = (ox * g.sw + kx * g.dw) as isize - g.pl;
                            gather_row(xrow, ix0, g.sw, q.zx as i8, d);
                        }
                        j += seg;
                    }
                }
            }
        }
        // The caller checked simd_gemm_available() and k <= IM2COL_MAX_K.
        match stage.as_deref_mut() {
            None => {
                let (n, p0) = (t0 / pix, t0 % pix);
                let yn = &mut y[n * g.oc * pix..(n + 1) * g.oc * pix];
                gemm_simd(tile, IM2COL_TILE, q, k, g.oc, len, yn, pix, p0);
            }
            Some(st) => {
                gemm_simd(tile, IM2COL_TILE, q, k, g.oc, len, st, IM2COL_TILE, 0);
                for o in 0..g.oc {
                    let row = &st[o * IM2COL_TILE..o * IM2COL_TILE + len];
                    for (j, &v) in row.iter().enumerate() {
                        let col = t0 + j;
                        y[((col / pix) * g.oc + o) * pix + col % pix] = v;
                    }
                }
            }
        }
        t0 += len;
    }
}

/// `dst[i] = xr[i·sw + off]` where that index is inside `xr`, `zx` elsewhere: the padded
/// row gather of im2col and of the depthwise staging.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[inline(always)]
pub(crate) fn gather_row(xr: &[i8], off: isize, sw: usize, zx: i8, dst: &mut [i8]) {
    let (lo, hi) = crate::util::inside(off, sw, xr.len(), dst.len());
    dst[..lo].fill(zx);
    dst[hi..].fill(zx);
    if hi > lo {
        let a = (lo as isize * sw as isize + off) as usize;
        copy_strided(&xr[a..a + (hi - lo - 1) * sw + 1], sw, &mut dst[lo..hi]);
    }
}

/// `dst[i] = src[i·sw]` (src holds `(len − 1)·sw + 1` bytes): a memcpy for sw = 1,
/// `pshufb` for sw = 2 with AVX2, a strided loop otherwise.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[inline(always)]
fn copy_strided(src: &[i8], sw: usize, dst: &mut [i8]) {
    match sw {
        1 => dst.copy_from_slice(src),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 is present (checked in the guard).
        2 if avx2::available() => unsafe { avx2::copy_stride2(src, dst) },
        _ => {
            for (d, v) in dst.iter_mut().zip(src.iter().step_by(sw)) {
                *d = *v;
            }
        }
    }
}

/// Output channels whose `row_offset` a conv computes once (a 4 KB stack table).
const OFFS_MAX: usize = 1024;

/// `bias[o] − zx·Σ_k W[o][k]`: what the raw-int8 sums of the micro-kernels lack.
fn row_offset(q: &Q<'_>, o: usize, ic: usize) -> i32 {
    if let Some(&v) = q.offs.get(o) {
        return v;
    }
    let wsum: i32 = match q.wp {
        // Row o's pairs are 12 int16 apart within its block.
        Some((wp, g)) => {
            let r = g.index(o, 0);
            (0..g.pairs())
                .map(|cp| wp[r + 12 * cp] as i32 + wp[r + 12 * cp + 1] as i32)
                .sum()
        }
        None => q.w[o * ic..(o + 1) * ic].iter().map(|&v| v as i32).sum(),
    };
    q.bias
        .map_or(0, |b| b[o])
        .wrapping_sub(q.zx.wrapping_mul(wsum))
}

fn pointwise_portable(x: &[i8], q: &Q<'_>, ic: usize, oc: usize, pix: usize, y: &mut [i8]) {
    const PB: usize = 64;
    let mut acc = [0i32; PB];
    for o in 0..oc {
        let base = row_offset(q, o, ic);
        let wr = &q.w[o * ic..(o + 1) * ic];
        let mut p0 = 0;
        while p0 < pix {
            let len = PB.min(pix - p0);
            acc[..len].iter_mut().for_each(|a| *a = base);
            for (c, &w) in wr.iter().enumerate() {
                let w = w as i32;
                let xr = &x[c * pix + p0..c * pix + p0 + len];
                for (a, &v) in acc[..len].iter_mut().zip(xr) {
                    *a = a.wrapping_add(w * v as i32);
                }
            }
            for (k, a) in acc[..len].iter().enumerate() {
                y[o * pix + p0 + k] = q.requant(o, *a) as i8;
            }
            p0 += len;
        }
    }
}

/// Depthwise, one output row at a time: for each tap, the run of output columns whose input
/// column is inside the image gets `w · (x − zx)` added; the inner loop is a contiguous
/// (stride 1) or strided multiply-add the compiler vectorizes. Same sums as the reference.
/// Not inlined: its stack buffers are only live while a depthwise conv runs.
#[inline(never)]
fn depthwise_rows_i8(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let same = g.sh == 1
        && g.sw == 1
        && g.dh == 1
        && g.dw == 1
        && g.kh % 2 == 1
        && g.kw % 2 == 1
        && g.pt == (g.kh / 2) as isize
        && g.pl == (g.kw / 2) as isize
        && g.oh == g.h
        && g.ow == g.w
        && g.h * g.w <= PLANE_MAX;
    if same {
        vectorized(
            #[inline(always)]
            || depthwise_plane_body(g, q, y),
        );
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present (checked above).
        unsafe { avx2::depthwise_rows(g, q, y) };
        return;
    }
    depthwise_rows_body(g, q, y);
}

/// Largest plane the whole-plane depthwise path takes (its accumulator lives on the stack:
/// 64 KB on hosts and phones, 4 KB on microcontrollers; larger planes take the row path).
#[cfg(not(target_os = "none"))]
const PLANE_MAX: usize = 16384;
#[cfg(target_os = "none")]
const PLANE_MAX: usize = 1024;

/// Depthwise "same" convs with stride 1: each tap is one contiguous multiply-add over the
/// whole flattened plane (`x[p + (ky−pt)·W + kx−pl]`), nine long runs instead of nine per
/// row. Taps that wrap across a row end only touch the border columns, which are then
/// recomputed exactly with the bounds-checked loop.
#[inline(always)]
fn depthwise_plane_body(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let (h, w) = (g.h, g.w);
    let plane = h * w;
    let ksz = g.kh * g.kw;
    let (left, right) = (g.pl as usize, g.kw - 1 - g.pl as usize);
    let mut acc = [0i32; PLANE_MAX];
    for n in 0..g.n {
        for c in 0..g.c {
            let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
            let wc = &q.w[c * ksz..(c + 1) * ksz];
            let base = q.bias.map_or(0, |b| b[c]);
            let acc = &mut acc[..plane];
            acc.iter_mut().for_each(|a| *a = base);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let wv = wc[ky * g.kw + kx] as i32;
                    let off = (ky as isize - g.pt) * w as isize + kx as isize - g.pl;
                    let lo = (-off).max(0) as usize;
                    let hi = (plane as isize - off).min(plane as isize).max(0) as usize;
                    if lo >= hi {
                        continue;
                    }
                    let src = &xc[(lo as isize + off) as usize..(hi as isize + off) as usize];
                    for (a, &v) in acc[lo..hi].iter_mut().zip(src) {
                        *a = a.wrapping_add(wv * (v as i32 - q.zx));
                    }
                }
            }
            // Border columns: redo exactly (their sums above include wrapped taps).
            for oy in 0..h {
                for ox in (0..left.min(w)).chain(w.saturating_sub(right).max(left.min(w))..w) {
                    let (iy0, ix0) = (oy as isize - g.pt, ox as isize - g.pl);
                    acc[oy * w + ox] = base.wrapping_add(checked_taps(g, xc, wc, iy0, ix0, q.zx));
                }
            }
            let yc = &mut y[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
            requant_row(acc, c, q, yc);
        }
    }
}

/// The body of `depthwise_rows_i8`, inlined into an AVX2-enabled copy on x86_64 so the
/// multiply-add loops vectorize 8 lanes wide (same integer arithmetic either way).
#[inline(always)]
fn depthwise_rows_body(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    const CHUNK: usize = 256;
    const PHASE_MAX: usize = 1024;
    // Up to 4 phases of a strided input row (stride > 4 takes the strided loop).
    let mut phases = [0i8; 4 * PHASE_MAX];
    let (h, w, oh, ow) = (g.h as isize, g.w as isize, g.oh, g.ow);
    let ksz = g.kh * g.kw;
    let plane = g.h * g.w;
    let mut acc = [0i32; CHUNK];
    for n in 0..g.n {
        for c in 0..g.c {
            let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
            let wc = &q.w[c * ksz..(c + 1) * ksz];
            let base = q.bias.map_or(0, |b| b[c]);
            let yc = &mut y[(n * g.c + c) * oh * ow..(n * g.c + c + 1) * oh * ow];
            for oy in 0..oh {
                let mut x0 = 0;
                while x0 < ow {
                    let len = CHUNK.min(ow - x0);
                    let acc = &mut acc[..len];
                    acc.iter_mut().for_each(|a| *a = base);
                    for ky in 0..g.kh {
                        let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                        if iy < 0 || iy >= h {
                            continue;
                        }
                        let xrow = &xc[(iy * w) as usize..((iy + 1) * w) as usize];
                        // Strided rows are split into `sw` contiguous phases once per row,
                        // so every tap below reads contiguously: x[ix] = phase[ix % sw][ix / sw].
                        let split = g.sw > 1 && g.sw <= 4 && g.w <= PHASE_MAX;
                        if split {
                            for (i, &v) in xrow.iter().enumerate() {
                                phases[(i % g.sw) * PHASE_MAX + i / g.sw] = v;
                            }
                        }
                        for kx in 0..g.kw {
                            let wv = wc[ky * g.kw + kx] as i32;
                            // ix = ox * sw + off for output column ox.
                            let off = (kx * g.dw) as isize - g.pl;
                            let sw = g.sw as isize;
                            // Output columns (within this chunk) whose ix is in [0, w).
                            let (lo, hi) = crate::util::inside(off, g.sw, g.w, x0 + len);
                            let lo = lo.max(x0);
                            if lo >= hi {
                                continue;
                            }
                            let ix0 = (lo as isize * sw + off) as usize;
                            let dst = &mut acc[lo - x0..hi - x0];
                            if g.sw == 1 {
                                let src = &xrow[ix0..ix0 + dst.len()];
                                for (a, &v) in dst.iter_mut().zip(src) {
                                    *a = a.wrapping_add(wv * (v as i32 - q.zx));
                                }
                            } else if split {
                                let (ph, at) = (ix0 % g.sw, ix0 / g.sw);
                                let src =
                                    &phases[ph * PHASE_MAX + at..ph * PHASE_MAX + at + dst.len()];
                                for (a, &v) in dst.iter_mut().zip(src) {
                                    *a = a.wrapping_add(wv * (v as i32 - q.zx));
                                }
                            } else {
                                let n = dst.len();
                                let src = &xrow[ix0..ix0 + (n - 1) * g.sw + 1];
                                for (a, &v) in dst.iter_mut().zip(src.iter().step_by(g.sw)) {
                                    *a = a.wrapping_add(wv * (v as i32 - q.zx));
                                }
                            }
                        }
                    }
                    let row = &mut yc[oy * ow + x0..oy * ow + x0 + len];
                    requant_row(acc, c, q, row);
                    x0 += len;
                }
            }
        }
    }
}

/// `requantize` over a run of accumulators (8 at a time with AVX2: the same conversions,
/// multiply, clamp and round-half-even, so the bytes are identical).
#[inline(always)]
fn requant_row(acc: &[i32], c: usize, q: &Q<'_>, out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    let done = if avx2::available() {
        // SAFETY: AVX2 is present (checked above); the call reads acc and writes out only
        // within their common length.
        unsafe { avx2::requant8(acc, c, q, out) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (o, a) in out[done..].iter_mut().zip(&acc[done..]) {
        *o = q.requant(c, *a) as i8;
    }
}

/// Σ w·(x − zx) over the taps of one filter whose window starts at input (iy0, ix0) in
/// one channel plane, skipping taps outside the image (the border case of every path).
#[inline(always)]
fn checked_taps(g: &Geo, xc: &[i8], wc: &[i8], iy0: isize, ix0: isize, zx: i32) -> i32 {
    let (h, w) = (g.h as isize, g.w as isize);
    let mut a = 0i32;
    for ky in 0..g.kh {
        let iy = iy0 + (ky * g.dh) as isize;
        if iy < 0 || iy >= h {
            continue;
        }
        for kx in 0..g.kw {
            let ix = ix0 + (kx * g.dw) as isize;
            if ix >= 0 && ix < w {
                let v = xc[(iy * w + ix) as usize] as i32 - zx;
                a = a.wrapping_add(v * wc[ky * g.kw + kx] as i32);
            }
        }
    }
    a
}

/// Any grouped conv (depthwise included): output pixels whose whole window lies inside the
/// input run without bounds checks (the zero point folded into a per-channel constant);
/// border pixels go through the bounds-checked tap loop.
fn direct_i8(g: &Geo, q: &Q<'_>, y: &mut [i8]) {
    let (h, w, oh, ow) = (g.h as isize, g.w as isize, g.oh, g.ow);
    let ksz = g.kh * g.kw;
    let (cg, ocg) = (g.c / g.g, g.oc / g.g);
    let plane = g.h * g.w;
    // Output rows/cols whose whole window is inside the input.
    let inside = |o: usize, s: usize, pad: isize, k: usize, d: usize, len: isize| {
        let start = (o * s) as isize - pad;
        start >= 0 && start + (((k - 1) * d) as isize) < len
    };
    for n in 0..g.n {
        for oc in 0..g.oc {
            let grp = oc / ocg;
            let xg = &q.x[(n * g.c + grp * cg) * plane..(n * g.c + (grp + 1) * cg) * plane];
            let wo = &q.w[oc * cg * ksz..(oc + 1) * cg * ksz];
            let base = q.bias.map_or(0, |b| b[oc]);
            let wsum: i32 = wo.iter().map(|&v| v as i32).sum();
            let inner_base = base.wrapping_sub(q.zx.wrapping_mul(wsum));
            let yc = &mut y[(n * g.oc + oc) * oh * ow..(n * g.oc + oc + 1) * oh * ow];
            for oy in 0..oh {
                let row_in = inside(oy, g.sh, g.pt, g.kh, g.dh, h);
                let iy0 = (oy * g.sh) as isize - g.pt;
                for ox in 0..ow {
                    let ix0 = (ox * g.sw) as isize - g.pl;
                    let acc = if row_in && inside(ox, g.sw, g.pl, g.kw, g.dw, w) {
                        let mut a = inner_base;
                        for ic in 0..cg {
                            let xc = &xg[ic * plane..(ic + 1) * plane];
                            let wc = &wo[ic * ksz..(ic + 1) * ksz];
                            for ky in 0..g.kh {
                                let row = ((iy0 + (ky * g.dh) as isize) * w + ix0) as usize;
                                let xr = &xc[row..row + (g.kw - 1) * g.dw + 1];
                                let wr = &wc[ky * g.kw..(ky + 1) * g.kw];
                                for (kx, &wv) in wr.iter().enumerate() {
                                    a = a.wrapping_add(xr[kx * g.dw] as i32 * wv as i32);
                                }
                            }
                        }
                        a
                    } else {
                        (0..cg).fold(base, |a, ic| {
                            let xc = &xg[ic * plane..(ic + 1) * plane];
                            let wc = &wo[ic * ksz..(ic + 1) * ksz];
                            a.wrapping_add(checked_taps(g, xc, wc, iy0, ix0, q.zx))
                        })
                    };
                    yc[oy * ow + ox] = q.requant(oc, acc) as i8;
                }
            }
        }
    }
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon;

#[cfg(target_arch = "x86_64")]
mod avx2;
/// The AVX2 int8 store of eight lanes, shared with the element-wise kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::store8;

//! The FPU's fused multiply-add on 32-bit Arm (`vfma.f32`: FPv4-SP and FPv5, i.e.
//! Cortex-M4F, M7, M33 with FPU), enabled by the `vfma` feature.
//!
//! Without it a no_std build calls libm's `fmaf`, which computes in f64 and so pulls the
//! double-precision soft-float routines into a single-precision-FPU image (about 2.4 KB of
//! flash, and slow). The instruction is reached through a three-instruction function in
//! `global_asm!` under the hard-float ABI (arguments in s0–s2, result in s0): Rust 1.95
//! does not yet accept the `sreg` register class in `asm!` on thumbv7em (it asks for the
//! double-precision `vfp2` feature), so the operands cannot be named in inline asm.

core::arch::global_asm!(
    ".section .text.cairn_vfma,\"ax\",%progbits",
    // Module-level asm is assembled without the target's FPU features: name the FPU
    // (FPv4-SP's instructions are a subset of FPv5's).
    ".fpu fpv4-sp-d16",
    ".thumb",
    ".global cairn_vfma",
    ".type cairn_vfma,%function",
    ".thumb_func",
    "cairn_vfma:",
    "vfma.f32 s2, s0, s1",
    "vmov.f32 s0, s2",
    "bx lr",
    ".size cairn_vfma, . - cairn_vfma",
);

extern "C" {
    /// `a * b + c` with one rounding.
    fn cairn_vfma(a: f32, b: f32, c: f32) -> f32;
}

/// `a * b + c` with one rounding (IEEE 754 fusedMultiplyAdd, round to nearest even).
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    // SAFETY: `cairn_vfma` above follows the AAPCS-VFP calling convention of
    // `extern "C"` on eabihf targets, touches only s0–s2 (caller-saved) and no memory.
    unsafe { cairn_vfma(a, b, c) }
}

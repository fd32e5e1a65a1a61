//! int8 GEMM blocks on AMX tiles (x86_64 CPUs with AMX-INT8, Linux, `std`), for the FC
//! block's VNNI quads (`mm.rs`). `tdpbusd` sums u8 × s8 products four at a time into
//! int32, exactly as `vpdpbusd`, 16 × 16 × 64 products an instruction: the same sums as
//! the `vpdpbusd` block, so the output stage makes the same bytes.
//!
//! Tiles: eight of 16 rows × 64 bytes (palette 1). A block is 32 rows × 32 columns: C in
//! tiles 0–3 (int32, rows × 16 columns each), A's two row tiles in 4–5 (16 rows × 64
//! bytes of K), B's two column tiles in 6–7 (16 quads of K × 16 columns × 4 bytes). A is
//! packed here tile by tile ([`pack`]); B is the FC block's packing as it is: a 16-column
//! panel's rows are 16 columns × 4 bytes of one K quad, so 16 consecutive rows of a panel
//! are one B tile with a 64-byte stride.
//!
//! The tile instructions are written in `asm!`: the register allocator never touches the
//! tile registers, so they keep their values between the blocks below, which run only
//! between a [`Tiles::new`] (`ldtilecfg`) and its drop (`tilerelease`) on one thread.

use core::arch::asm;

/// CPUID says AMX-TILE and AMX-INT8 (leaf 7: EDX bits 24 and 25), and the kernel grants
/// the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` returns 0;
/// without the grant the first tile instruction faults).
#[cfg(target_os = "linux")]
pub(crate) fn granted() -> bool {
    // Leaf 7 exists on every CPU with AVX-512 (AMX CPUs all have it).
    let edx = if std::is_x86_feature_detected!("avx512f") {
        core::arch::x86_64::__cpuid_count(7, 0).edx
    } else {
        0
    };
    if edx & (3 << 24) != 3 << 24 {
        return false;
    }
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with an integer request and argument; it reads
    // and writes no user memory. The kernel clobbers rcx and r11.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Rows of a tile.
pub(super) const TM: usize = 16;
/// Bytes of K in one tile step (16 quads).
pub(super) const TK: usize = 64;
/// Bytes of one tile (16 rows of 64 bytes).
const TILE: usize = TM * TK;

/// The 64-byte tile configuration `ldtilecfg` reads.
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// The tile state configured on this thread for the blocks below; released on drop.
pub(super) struct Tiles(());

impl Tiles {
    /// Configures eight tiles of 16 rows × 64 bytes.
    ///
    /// # Safety
    /// `crate::paths::amx()` is true (the CPU has AMX-INT8 and the process holds the
    /// grant); no other tile configuration is live on this thread.
    pub(super) unsafe fn new() -> Tiles {
        let mut c = Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            c.colsb[t] = TK as u16;
            c.rows[t] = TM as u8;
        }
        // SAFETY: the contract above; `c` is a valid palette-1 configuration, 64-byte
        // aligned.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &c as *const Config, options(nostack, readonly)) };
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: a configuration is live (made by `new`); this returns the tiles to
        // their initial state, so the OS saves nothing for them.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// `n` rounds of four independent `tdpbusd` (16 × 16 × 64 multiply-adds each) on
/// tiles loaded from zeros: the tile unit's rate with nothing else in the way, for the
/// peak `cairn bench` states.
///
/// # Safety
/// `crate::paths::amx()` is true and no tile configuration is live on this thread.
pub(crate) unsafe fn dpbusd_rounds(n: u64) {
    let zeros = [0u8; TILE];
    // SAFETY: the contract above; the loads read 16 rows of 64 bytes from `zeros`.
    unsafe {
        let _tiles = Tiles::new();
        asm!(
            "tileloadd tmm4, [{z} + {s}*1]",
            "tileloadd tmm5, [{z} + {s}*1]",
            "tileloadd tmm6, [{z} + {s}*1]",
            "tileloadd tmm7, [{z} + {s}*1]",
            "2:",
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            z = in(reg) zeros.as_ptr(),
            s = in(reg) TK,
            n = inout(reg) n => _,
            options(nostack, readonly),
        );
    }
}

// `paths::AMX_ROUND_MACS` counts one round of `dpbusd_rounds`.
const _: () = assert!(crate::paths::AMX_ROUND_MACS == 4 * (TM * TM * TK) as u64);

/// Tile steps for `k` bytes of K.
pub(super) fn steps(k: usize) -> usize {
    k.div_ceil(TK)
}

/// Bytes [`pack`] writes for `m` rows of `k`.
pub(super) fn packed_len(m: usize, k: usize) -> usize {
    m.div_ceil(2 * TM) * 2 * steps(k) * TILE
}

/// A's rows (`src`, `[m][k]`) as bytes `u(v)`, tile by tile: row tile `rt` (rows
/// `16·rt..`), step `s` is the 1 KiB at `(rt·steps + s)·1024`, its row `r` the 64 bytes
/// of K from `64·s`. Bytes past `k`, and the rows past `m` up to a multiple of 32, are 0
/// (their products with anything are 0). `dst` holds at least [`packed_len`] bytes.
pub(super) fn pack<T: Copy>(dst: &mut [u8], m: usize, k: usize, src: &[T], u: impl Fn(T) -> u8) {
    let ks = steps(k);
    debug_assert!(dst.len() >= packed_len(m, k) && src.len() >= m * k);
    for (i, row) in src[..m * k].chunks_exact(k).enumerate() {
        let (rt, r) = (i / TM, i % TM);
        for (s, part) in row.chunks(TK).enumerate() {
            let d = &mut dst[(rt * ks + s) * TILE + r * TK..][..TK];
            for (d, &v) in d.iter_mut().zip(part) {
                *d = u(v);
            }
            d[part.len()..].fill(0);
        }
    }
    // Rows past m, to the end of the last 32-row block.
    for i in m..m.div_ceil(2 * TM) * 2 * TM {
        let (rt, r) = (i / TM, i % TM);
        for s in 0..ks {
            dst[(rt * ks + s) * TILE + r * TK..][..TK].fill(0);
        }
    }
}

/// One block: `c` (32 × 32 int32, row stride 32) = Σ over `steps` `(ao, bo)` of A's row
/// tiles at `a0 + ao`, `a1 + ao` (16 rows `sa` bytes apart, 64 bytes each) × B's column
/// tiles at `b0 + bo`, `b1 + bo` (16 rows of 64 bytes, 64 apart: 16 quads of K × 16
/// columns). With `ROWS2` false only `a0` is read and C's rows 16..32 are left as they
/// were; with `COLS2` false only `b0` and C's columns 0..16. The FC block's steps are
/// `(1024·s, 1024·s)` over [`pack`]'s tiles (`sa` 64); a conv's walk its kernel rows in
/// its staged input.
///
/// # Safety
/// A [`Tiles`] is live on this thread; every tile each step names (16 rows of 64 bytes
/// from its address, `sa` or 64 apart) is readable; `c` holds 32 × 32 int32.
#[inline]
pub(super) unsafe fn block<const ROWS2: bool, const COLS2: bool>(
    a0: *const u8,
    a1: *const u8,
    sa: usize,
    b0: *const u8,
    b1: *const u8,
    steps: impl Iterator<Item = (usize, usize)>,
    c: *mut i32,
) {
    let sb = TK;
    // SAFETY (every asm block): the contract above; each load reads one tile of 16 rows
    // × 64 bytes, each store writes 16 rows of 64 bytes within c.
    unsafe {
        asm!("tilezero tmm0", options(nostack, nomem));
        if COLS2 {
            asm!("tilezero tmm1", options(nostack, nomem));
        }
        if ROWS2 {
            asm!("tilezero tmm2", options(nostack, nomem));
            if COLS2 {
                asm!("tilezero tmm3", options(nostack, nomem));
            }
        }
        for (ao, bo) in steps {
            let (pa0, pa1) = (a0.add(ao), a1.add(ao));
            let (pb0, pb1) = (b0.add(bo), b1.add(bo));
            asm!(
                "tileloadd tmm4, [{a} + {sa}*1]",
                "tileloadd tmm6, [{b} + {sb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                a = in(reg) pa0, b = in(reg) pb0, sa = in(reg) sa, sb = in(reg) sb,
                options(nostack, readonly)
            );
            if COLS2 {
                asm!(
                    "tileloadd tmm7, [{b} + {sb}*1]",
                    "tdpbusd tmm1, tmm4, tmm7",
                    b = in(reg) pb1, sb = in(reg) sb,
                    options(nostack, readonly)
                );
            }
            if ROWS2 {
                asm!(
                    "tileloadd tmm5, [{a} + {sa}*1]",
                    "tdpbusd tmm2, tmm5, tmm6",
                    a = in(reg) pa1, sa = in(reg) sa,
                    options(nostack, readonly)
                );
                if COLS2 {
                    asm!("tdpbusd tmm3, tmm5, tmm7", options(nostack, nomem));
                }
            }
        }
        let cs: usize = 32 * 4;
        asm!("tilestored [{c} + {s}*1], tmm0", c = in(reg) c, s = in(reg) cs, options(nostack));
        if COLS2 {
            asm!("tilestored [{c} + {s}*1], tmm1", c = in(reg) c.add(16), s = in(reg) cs, options(nostack));
        }
        if ROWS2 {
            asm!("tilestored [{c} + {s}*1], tmm2", c = in(reg) c.add(16 * 32), s = in(reg) cs, options(nostack));
            if COLS2 {
                asm!(
                    "tilestored [{c} + {s}*1], tmm3",
                    c = in(reg) c.add(16 * 32 + 16), s = in(reg) cs, options(nostack)
                );
            }
        }
    }
}

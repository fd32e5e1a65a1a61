//! The int8 depthwise conv on AVX-512 with VNNI and VBMI (x86_64 hosts with `std`: Ice
//! Lake and later Intel cores, AMD Zen 4 and later), for the shapes of `depthwise.rs`:
//! kernels up to 8 columns wide and 64 taps, horizontal stride 1 or 2, any vertical stride,
//! dilation 1, channel multiplier 1. Bit-exact with the reference (`conv::conv_i8`): the same integer
//! sums and the same float output stage as `avx2::Requant`, sixteen lanes wide.
//!
//! Inputs are unsigned bytes `u = x + 128` (the sign bit flipped); padding columns and rows
//! outside the image hold `zx + 128`, the byte of a real zero. A kernel row is cut into
//! quads of four taps (a short last quad holds weight 0), and one `vpdpbusd` adds, for
//! sixteen outputs, the four products of one quad into each output's int32 sum. Over every
//! tap the sum is `Σ w·(x − zx) + (zx + 128)·Σ w` (padding adds exactly `(zx + 128)·w`), so
//! each channel's sums start from `bias − (zx + 128)·Σ w`: the reference's sums, padding
//! skipped. No saturation anywhere: the products are summed in int32.
//!
//! The four bytes each output reads for a quad are laid out once, not once per kernel row:
//! a band of output rows is cut into *phase planes*, one per vertical phase `ky mod sh` and
//! quad `k`. Row `i` of plane (phase, k) holds, for each output column `ox`, the four
//! staged bytes `u[iy][sw·ox + 4k − pl + j]` (`j < 4`) of input row `iy = (oy0 + i)·sh +
//! phase − pt`, packed with no gap between rows (one `vpermb` per sixteen columns, from a
//! load of the input row whose bytes outside the row are replaced by `zx`; a small plane's
//! sixteen lanes at a time across rows, [`Flat`]). Then the sixteen outputs at flat position `p` of the
//! band (any row, any column: a vector may cross rows) read tap row `ky` at flat position
//! `p + (ky div sh)·ow` of plane (ky mod sh, k): one load and one `vpdpbusd` per quad, no
//! shuffle. Planes are built one unit (channel, band) ahead of the one being summed, in two
//! buffers, so no load waits on a store just made.
//!
//! The kernel runs over a range `[c0, c1)` of the planes `n·C + c`, as `depthwise.rs`, so a
//! caller may split the planes across threads.

use core::arch::x86_64::*;

use super::avx2::Narrow;
use super::{Geo, Q};

/// Bytes of one buffer of phase planes (two on the stack: 48 KB).
const BUF_LEN: usize = 24576;
/// Bytes a band's planes aim to stay within (both buffers and the output in L1).
const BUF_TARGET: usize = 8192;
/// Outputs per vector.
const LANES: usize = 16;
/// Quads per kernel row: kernels up to 8 columns wide.
const MAX_ROW_QUADS: usize = 2;
/// Kernel rows × quads the weight table holds (7×7: 14).
const MAX_QUADS: usize = 32;
/// Slack after each plane: the last step of a band reads up to 63 lanes past its end (four
/// vectors a step), and a built row's last sixteen columns write up to 15.
const SLACK: usize = 4 * 4 * LANES;
/// Groups of sixteen output columns in a row (a phase-plane row of `4·ow` bytes fits a
/// buffer).
const MAX_GROUPS: usize = BUF_LEN / (4 * LANES);

/// Whether this CPU runs the kernel: AVX-512 F, BW, VL, VBMI and VNNI, and VNNI is allowed
/// (`paths::vnni`: `CAIRN_VNNI=0` or `paths::allow_vnni(false)` leave depthwise convs to
/// the AVX2 kernel, so one host tests both).
pub(super) fn available() -> bool {
    crate::paths::vnni() == Some(crate::paths::Vnni::Evex)
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vbmi")
}

/// How one depthwise conv is cut.
struct Plan {
    /// Output rows per band.
    band: usize,
    /// Vertical phases with planes: `min(sh, kh)`.
    phases: usize,
    /// Bytes from one plane to the next (a full band's phase-0 rows, then `SLACK`).
    plane_len: usize,
}

fn plan(g: &Geo) -> Option<Plan> {
    let shape_ok = g.g == g.c
        && g.oc == g.c
        && g.dh == 1
        && g.dw == 1
        && (1..=2).contains(&g.sw)
        && g.sh >= 1
        && g.pt >= 0
        && g.pl >= 0
        && g.kh >= 1
        && (1..=4 * MAX_ROW_QUADS).contains(&g.kw)
        && g.kh * g.kw.div_ceil(4) <= MAX_QUADS
        && g.kh * g.kw <= 64
        && g.oh > 0
        && g.ow > 0;
    if !shape_ok {
        return None;
    }
    let quads = g.kw.div_ceil(4);
    let phases = g.sh.min(g.kh);
    // Phase 0 has the most rows: the band's, and (kh − 1) div sh more below.
    let plane_len = |band: usize| -> Option<usize> {
        band.checked_add((g.kh - 1) / g.sh)?
            .checked_mul(g.ow)?
            .checked_mul(4)?
            .checked_add(SLACK)?
            .checked_next_multiple_of(64)
    };
    let bytes = |band: usize| -> Option<usize> { plane_len(band)?.checked_mul(phases * quads) };
    if bytes(1)? > BUF_LEN {
        return None;
    }
    let mut band = 1;
    while band < g.oh && bytes(band + 1)? <= BUF_TARGET {
        band += 1;
    }
    Some(Plan {
        band,
        phases,
        plane_len: plane_len(band)?,
    })
}

/// Whether `depthwise` takes this conv (given [`available`]).
pub(super) fn fits(g: &Geo) -> bool {
    plan(g).is_some()
}

/// The depthwise conv of output planes `[c0, c1)` (plane `n·C + c`: image `n`, channel
/// `c`) into `y`, which holds those planes only.
///
/// # Safety
/// [`available`]; `fits(g)`; the slices of `q` hold the conv's operands. (`c0 <= c1 <=
/// N·C` and the length of `y` are asserted.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
pub(super) unsafe fn depthwise(g: &Geo, q: &Q<'_>, y: &mut [i8], c0: usize, c1: usize) {
    let plan = plan(g).expect("depthwise_vnni: the caller checked `fits`");
    assert!(c0 <= c1 && c1 <= g.n * g.c && y.len() == (c1 - c0) * g.oh * g.ow);
    assert!(q.x.len() >= g.n * g.c * g.h * g.w && q.w.len() >= g.c * g.kh * g.kw);
    if c0 == c1 {
        return;
    }
    // SAFETY (all arms): the CPU features and the fit are the caller's contract.
    unsafe {
        match (g.sw, g.kh, g.kw.div_ceil(4)) {
            (1, 3, 1) => channels::<1, 1, 3>(g, q, y, c0, c1, &plan),
            (2, 3, 1) => channels::<2, 1, 3>(g, q, y, c0, c1, &plan),
            (1, 5, 2) => channels::<1, 2, 5>(g, q, y, c0, c1, &plan),
            (2, 5, 2) => channels::<2, 2, 5>(g, q, y, c0, c1, &plan),
            (1, 7, 2) => channels::<1, 2, 7>(g, q, y, c0, c1, &plan),
            (2, 7, 2) => channels::<2, 2, 7>(g, q, y, c0, c1, &plan),
            (1, _, 1) => channels::<1, 1, 0>(g, q, y, c0, c1, &plan),
            (1, _, _) => channels::<1, 2, 0>(g, q, y, c0, c1, &plan),
            (_, _, 1) => channels::<2, 1, 0>(g, q, y, c0, c1, &plan),
            (_, _, _) => channels::<2, 2, 0>(g, q, y, c0, c1, &plan),
        }
    }
}

/// Vectors a [`Flat`] table holds (4 KB of indices): a plane whose phase planes take more
/// is built row by row.
const MAX_FLAT: usize = 64;

/// How to build a whole plane's phase planes (one band: small planes) sixteen flat lanes
/// at a time, whatever rows they span: entry `e` writes bytes `64·dst[e]..` of the set of
/// planes, from the 64 input bytes at `start[e]` of the channel's plane, `vpermt2b` by
/// `idx[e]` with the padding vector as second source (indices 64.. for taps outside the
/// image). The same for every channel, so it is made once per call. A plane of 7×7 takes
/// four such vectors where the row-wise build takes nine rows.
struct Flat {
    n: usize,
    dst: [usize; MAX_FLAT],
    start: [usize; MAX_FLAT],
    idx: [[u8; 64]; MAX_FLAT],
}

impl Flat {
    /// The table for `g` (stride `s`, `quads` per kernel row, one band), or `None` where
    /// it would exceed `MAX_FLAT` vectors, a vector's taps span more than 64 input bytes,
    /// or the row-wise build costs less: a row's group of sixteen columns is about
    /// `3 + 2·quads` instructions (a load, a `vpermb` and a store per quad, the loop), a
    /// flat vector four (two loads, a `vpermt2b`, a store). (`exact_depthwise`'s
    /// throughput test, both builds: 7×7 planes 1.4–1.8× faster flat, 14×14 1.0–1.3×, 28×28
    /// level, 14×14 with a 5×5 kernel 5% slower, so left to the rows.)
    fn new(g: &Geo, plan: &Plan, s: usize, quads: usize) -> Option<Flat> {
        if plan.band != g.oh {
            return None;
        }
        let rows = |ph: usize| g.oh + (g.kh - 1 - ph) / g.sh;
        let n: usize = (0..plan.phases)
            .map(|ph| quads * (rows(ph) * g.ow).div_ceil(LANES))
            .sum();
        let row_cost: usize =
            (0..plan.phases).map(rows).sum::<usize>() * g.ow.div_ceil(LANES) * (3 + 2 * quads);
        if n > MAX_FLAT || 4 * n > row_cost {
            return None;
        }
        let mut t = Flat {
            n: 0,
            dst: [0; MAX_FLAT],
            start: [0; MAX_FLAT],
            idx: [[64; 64]; MAX_FLAT],
        };
        for ph in 0..plan.phases {
            for k in 0..quads {
                let lanes = rows(ph) * g.ow;
                // The plane (ph, k) starts at a multiple of 64 bytes: vector `v` of it is
                // vector `(ph·G + k)·plane_len/64 + v` of the buffer.
                let first = (ph * quads + k) * plan.plane_len / 64;
                // Flat lane f = i·ow + ox, walked in order.
                let (mut i, mut ox) = (0, 0);
                for v in 0..lanes.div_ceil(LANES) {
                    // Input byte of each lane's taps (usize::MAX: padding, past the end, or
                    // a zero weight), and the least of them.
                    let mut src = [usize::MAX; 64];
                    for l in 0..LANES.min(lanes - LANES * v) {
                        let iy = (i * g.sh + ph) as isize - g.pt;
                        if (0..g.h as isize).contains(&iy) {
                            for (j, at) in src[4 * l..4 * l + 4].iter_mut().enumerate() {
                                let ix = (s * ox + 4 * k + j) as isize - g.pl;
                                if 4 * k + j < g.kw && (0..g.w as isize).contains(&ix) {
                                    *at = iy as usize * g.w + ix as usize;
                                }
                            }
                        }
                        ox += 1;
                        if ox == g.ow {
                            (i, ox) = (i + 1, 0);
                        }
                    }
                    let start = src.iter().copied().min().filter(|&m| m != usize::MAX);
                    let start = start.unwrap_or(0);
                    let e = t.n;
                    for (b, &at) in t.idx[e].iter_mut().zip(&src) {
                        if at != usize::MAX {
                            *b = u8::try_from(at - start).ok().filter(|&d| d < 64)?;
                        }
                    }
                    (t.dst[e], t.start[e]) = (first + v, start);
                    t.n += 1;
                }
            }
        }
        debug_assert_eq!(t.n, n);
        Some(t)
    }
}

/// The two buffers of phase planes, cache-line aligned (as are planes: `plan`), so the
/// loads of vectors that start a row's sixteen-column group do not split a line.
#[repr(align(64))]
struct Buffers(core::mem::MaybeUninit<[u8; 2 * BUF_LEN]>);

/// A unit of work: output rows `[oy0, oy1)` of plane `ch`.
#[derive(Clone, Copy)]
struct Unit {
    ch: usize,
    oy0: usize,
    oy1: usize,
}

/// What building a unit's phase planes needs besides the unit.
struct Builder<'a> {
    g: &'a Geo,
    x: &'a [i8],
    plan: &'a Plan,
    kh: usize,
    /// Per quad `k`: byte `4i + j` is `sw·i + 4k + j`, the window byte of lane `i`'s tap.
    idx: [__m512i; MAX_ROW_QUADS],
    /// Loaded bytes outside the image: `zx`, which the sign flip makes the padding byte.
    fill: __m512i,
    /// The padding byte `zx + 128` everywhere (rows outside the image).
    pad: __m512i,
    /// Per group of sixteen output columns: the bytes of its input window inside the row.
    masks: [u64; MAX_GROUPS],
}

/// `depthwise` for horizontal stride `S`, `G` quads per kernel row and `KH` kernel rows
/// (0: `g.kh`, read at run time).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
unsafe fn channels<const S: usize, const G: usize, const KH: usize>(
    g: &Geo,
    q: &Q<'_>,
    y: &mut [i8],
    c0: usize,
    c1: usize,
    plan: &Plan,
) {
    let (oh, ow, kw) = (g.oh, g.ow, g.kw);
    let kh = if KH == 0 { g.kh } else { KH };
    debug_assert!(kh == g.kh && G == kw.div_ceil(4) && c0 < c1);
    let out_plane = oh * ow;
    // Tap `ky·G + k` reads plane `(ky mod sh)·G + k`, `(ky div sh)·ow` lanes on.
    let mut off = [0usize; MAX_QUADS];
    for ky in 0..kh {
        for k in 0..G {
            off[ky * G + k] = ((ky % g.sh) * G + k) * plan.plane_len + (ky / g.sh) * ow * 4;
        }
    }
    let mut idx = [_mm512_setzero_si512(); MAX_ROW_QUADS];
    for (k, v) in idx.iter_mut().enumerate() {
        let mut bytes = [0u8; 64];
        for (i, quad) in bytes.chunks_exact_mut(4).enumerate() {
            for (j, b) in quad.iter_mut().enumerate() {
                *b = (S * i + 4 * k + j) as u8;
            }
        }
        // Opaque to the optimizer: with the indices known, it would replace each `vpermb`
        // by a dozen 128-bit shuffles.
        let bytes = core::hint::black_box(bytes);
        // SAFETY: 64 bytes from a 64-byte array; unaligned load.
        *v = unsafe { _mm512_loadu_si512(bytes.as_ptr() as *const _) };
    }
    let mut masks = [0u64; MAX_GROUPS];
    for (grp, m) in masks.iter_mut().take(ow.div_ceil(LANES)).enumerate() {
        // Input columns c0.. of the group's window (S·15 + 4·G − 1 < 64 bytes); those in
        // [0, w) are loaded, the others take `fill`.
        let c0 = (S * LANES * grp) as isize - g.pl;
        let lo = (-c0).max(0) as usize;
        let hi = (g.w as isize - c0).clamp(0, 64) as usize;
        *m = bits(lo, hi);
    }
    let b = Builder {
        g,
        x: q.x,
        plan,
        kh,
        idx,
        masks,
        fill: _mm512_set1_epi8(q.zx as i8),
        pad: _mm512_set1_epi8((q.zx + 128) as u8 as i8),
    };
    let flat = Flat::new(g, plan, S, G);
    let lo = _mm512_set1_ps(q.lo as f32 - q.zy as f32);
    let hi = _mm512_set1_ps(q.hi as f32 - q.zy as f32);
    let zy = _mm512_set1_epi32(q.zy);
    // Where `Narrow` is exact (multipliers within 0.5, the range within int8) the output
    // stage rounds with no float clamp and lets the saturating packs clamp, as the AVX2
    // kernels' narrow stage does: the same bytes for fewer instructions.
    let narrow = Narrow::of(q).map(|_| NarrowZmm {
        zy: _mm512_set1_epi16(q.zy as i16),
        lo: _mm512_set1_epi8(q.lo as i8),
        hi: _mm512_set1_epi8(q.hi as i8),
        clamp: q.lo > -128 || q.hi < 127,
        signed: q.neg.is_some(),
    });
    // Two buffers of phase planes: the unit being summed and the next one. Zeroed once:
    // lanes past a band's end read whatever is there, and their sums are never stored.
    // Each holds one unit's planes (`used` bytes), the second right after the first; only
    // those bytes are zeroed (a 7×7 plane's 1 KB, not the 48 KB).
    let used = plan.phases * G * plan.plane_len;
    let mut bufs = Buffers(core::mem::MaybeUninit::uninit());
    let bp = bufs.0.as_mut_ptr() as *mut u8;
    // SAFETY: `2·used <= 2·BUF_LEN` bytes of the buffer (`plan`).
    unsafe { core::ptr::write_bytes(bp, 0, 2 * used) };
    let next = |u: Unit| -> Option<Unit> {
        if u.oy1 < oh {
            Some(Unit {
                ch: u.ch,
                oy0: u.oy1,
                oy1: (u.oy1 + plan.band).min(oh),
            })
        } else if u.ch + 1 < c1 {
            Some(Unit {
                ch: u.ch + 1,
                oy0: 0,
                oy1: plan.band.min(oh),
            })
        } else {
            None
        }
    };
    let mut cur = Unit {
        ch: c0,
        oy0: 0,
        oy1: plan.band.min(oh),
    };
    let mut slot = 0;
    // SAFETY: the buffer holds a unit's planes (`plan`).
    unsafe { build_any::<S, G>(&b, flat.as_ref(), cur, bp) };
    // A channel's weights (kh·kw <= 64 bytes, one load) to quads: byte 4t + j of the
    // table, t = 16v + (its index in vector v), is tap j of quad t = ky·G + k, weight
    // ky·kw + 4k + j, or 0 (index 64: the second source, zero) past the row's end.
    let mut widx = [_mm512_setzero_si512(); 2];
    for (v, wi) in widx.iter_mut().enumerate() {
        let mut bytes = [64u8; 64];
        for (i, quad) in bytes.chunks_exact_mut(4).enumerate() {
            let t = 16 * v + i;
            let (ky, k) = (t / G, t % G);
            for (j, b) in quad.iter_mut().enumerate() {
                if ky < kh && 4 * k + j < kw {
                    *b = (ky * kw + 4 * k + j) as u8;
                }
            }
        }
        let bytes = core::hint::black_box(bytes);
        // SAFETY: 64 bytes from a 64-byte array; unaligned load.
        *wi = unsafe { _mm512_loadu_si512(bytes.as_ptr() as *const _) };
    }
    let mut weights = [_mm512_setzero_si512(); MAX_QUADS];
    let (mut base, mut scale) = (_mm512_setzero_si512(), (lo, lo));
    let mut loaded = usize::MAX;
    loop {
        let nx = next(cur);
        if let Some(nx) = nx {
            // SAFETY: the other buffer, which no sum reads until the next unit.
            unsafe { build_any::<S, G>(&b, flat.as_ref(), nx, bp.add((slot ^ 1) * used)) };
        }
        let c = cur.ch % g.c;
        if c != loaded {
            let wc = &q.w[c * kh * kw..(c + 1) * kh * kw];
            let zero = _mm512_setzero_si512();
            // SAFETY: the mask limits the load to the kh·kw bytes of `wc`.
            let wl = unsafe { _mm512_maskz_loadu_epi8(bits(0, kh * kw), wc.as_ptr()) };
            let wv = [
                _mm512_permutex2var_epi8(wl, widx[0], zero),
                _mm512_permutex2var_epi8(wl, widx[1], zero),
            ];
            // Every lane of `sum_w`: Σ w, one quad at a time.
            let (ones, mut sum_w) = (_mm512_set1_epi8(1), zero);
            for (t, wt) in weights.iter_mut().enumerate().take(kh * G) {
                *wt = _mm512_permutexvar_epi32(_mm512_set1_epi32((t % 16) as i32), wv[t / 16]);
                sum_w = _mm512_dpbusd_epi32(sum_w, ones, *wt);
            }
            let bias = q.bias.map_or(0, |b| b[c]);
            let sw = _mm512_reduce_add_epi32(sum_w) / 16;
            base = _mm512_set1_epi32(bias.wrapping_sub((q.zx + 128) * sw));
            scale = (_mm512_set1_ps(q.scales[c]), _mm512_set1_ps(q.neg_scale(c)));
            loaded = c;
        }
        let at = (cur.ch - c0) * out_plane + cur.oy0 * ow;
        let out = &mut y[at..at + (cur.oy1 - cur.oy0) * ow];
        let taps = &off[..kh * G];
        // SAFETY: this slot's planes were built for `cur` (above, or one unit ago).
        unsafe {
            sum_unit::<G, KH>(
                bp.add(slot * used),
                taps,
                &weights,
                base,
                scale,
                (lo, hi, zy, narrow),
                out,
            )
        };
        match nx {
            Some(nx) => (cur, slot) = (nx, slot ^ 1),
            None => break,
        }
    }
}

/// Bits `[lo, hi)` of a 64-bit mask (`0 <= lo`, `hi <= 64`).
#[inline(always)]
fn bits(lo: usize, hi: usize) -> u64 {
    if hi <= lo {
        return 0;
    }
    let upto = if hi >= 64 { u64::MAX } else { (1u64 << hi) - 1 };
    upto & !((1u64 << lo) - 1)
}

/// Builds the phase planes of unit `u` at `buf`: from the [`Flat`] table where there is
/// one, else row by row.
///
/// # Safety
/// As [`build`].
#[inline(always)]
unsafe fn build_any<const S: usize, const G: usize>(
    b: &Builder<'_>,
    flat: Option<&Flat>,
    u: Unit,
    buf: *mut u8,
) {
    let Some(t) = flat else {
        // SAFETY: the caller's contract.
        return unsafe { build::<S, G>(b, u, buf) };
    };
    let plane = b.g.h * b.g.w;
    let flip = _mm512_set1_epi8(-128);
    let x = b.x.as_ptr();
    for e in 0..t.n {
        let at = u.ch * plane + t.start[e];
        // SAFETY: as in `build`: a window inside the input is loaded whole, one at its end
        // under a mask to the input's bytes (a vector's taps all lie inside the channel's
        // plane, `Flat::new`); vector v of the planes is inside the buffer (`Flat::new`
        // counts the planes' vectors, each plane holds its lanes and the slack).
        unsafe {
            let w = if at + 64 <= b.x.len() {
                _mm512_loadu_si512(x.add(at) as *const _)
            } else {
                _mm512_maskz_loadu_epi8(bits(0, b.x.len() - at), x.add(at))
            };
            let idx = _mm512_loadu_si512(t.idx[e].as_ptr() as *const _);
            let lanes = _mm512_permutex2var_epi8(_mm512_xor_si512(w, flip), idx, b.pad);
            _mm512_storeu_si512(buf.add(64 * t.dst[e]) as *mut _, lanes);
        }
    }
}

/// Builds the phase planes of unit `u` at `buf`.
///
/// # Safety
/// AVX-512 F, BW and VBMI; `buf` holds `plan.phases · G · plan.plane_len` writable bytes.
#[inline(always)]
unsafe fn build<const S: usize, const G: usize>(b: &Builder<'_>, u: Unit, buf: *mut u8) {
    let g = b.g;
    let (h, w, ow) = (g.h, g.w, g.ow);
    let flip = _mm512_set1_epi8(-128);
    for ph in 0..b.plan.phases {
        let rows = (u.oy1 - u.oy0) + (b.kh - 1 - ph) / g.sh;
        for i in 0..rows {
            let iy = ((u.oy0 + i) * g.sh + ph) as isize - g.pt;
            // Row i of plane (ph, k) at `buf + (ph·G + k)·plane_len + 4·i·ow`; each group
            // of sixteen columns writes 64 bytes, the last one past the row's end into the
            // next row (built after it) or the plane's slack.
            let row = |k: usize| (ph * G + k) * b.plan.plane_len + 4 * i * ow;
            if iy < 0 || iy >= h as isize {
                for ox0 in (0..ow).step_by(LANES) {
                    for k in 0..G {
                        // SAFETY: inside the plane (see above).
                        unsafe { _mm512_storeu_si512(buf.add(row(k) + 4 * ox0) as *mut _, b.pad) };
                    }
                }
                continue;
            }
            // Row iy's first byte, as an offset into the whole input.
            let row_at = u.ch * h * w + iy as usize * w;
            let x = b.x.as_ptr();
            for (grp, &m) in b.masks[..ow.div_ceil(LANES)].iter().enumerate() {
                let ox0 = LANES * grp;
                let at = row_at as isize + (S * ox0) as isize - g.pl;
                // SAFETY: a window inside the input is loaded whole (bytes of the rows
                // around it among them) and the columns outside row iy replaced by `fill`;
                // one at the input's ends is loaded under the mask, which limits the load
                // to columns [0, w) of row iy. (A masked load is exact anywhere, but slow
                // where its masked-off bytes cross a page.) The stores stay in the plane.
                unsafe {
                    let v = if at >= 0 && at as usize + 64 <= b.x.len() {
                        _mm512_mask_blend_epi8(
                            m,
                            b.fill,
                            _mm512_loadu_si512(x.add(at as usize) as *const _),
                        )
                    } else {
                        _mm512_mask_loadu_epi8(b.fill, m, x.wrapping_offset(at))
                    };
                    let v = _mm512_xor_si512(v, flip);
                    for k in 0..G {
                        _mm512_storeu_si512(
                            buf.add(row(k) + 4 * ox0) as *mut _,
                            _mm512_permutexvar_epi8(b.idx[k], v),
                        );
                    }
                }
            }
        }
    }
}

/// Sums and stores one unit: the output bytes `out` (flat positions 0.. of the band),
/// sixteen at a time, four vectors a step (independent sums for the out-of-order core).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI; `buf` holds the unit's phase planes and `taps` their
/// offsets (`channels`), so every load stays inside the buffer.
#[inline(always)]
unsafe fn sum_unit<const G: usize, const KH: usize>(
    buf: *const u8,
    taps: &[usize],
    weights: &[__m512i; MAX_QUADS],
    base: __m512i,
    scale: (__m512, __m512),
    (lo, hi, zy, narrow): (__m512, __m512, __m512i, Option<NarrowZmm>),
    out: &mut [i8],
) {
    let n = if KH == 0 { taps.len() } else { KH * G };
    debug_assert_eq!(n, taps.len());
    // SAFETY (closure and loops): loads at a tap's offset plus 4·p, p < out.len(), stay in
    // its plane with the slack (`channels`); stores are inside `out`.
    let sum = |p: usize| unsafe {
        let mut acc = base;
        for t in 0..n {
            let x = _mm512_loadu_si512(buf.add(taps[t] + 4 * p) as *const _);
            acc = _mm512_dpbusd_epi32(acc, x, weights[t]);
        }
        acc
    };
    let len = out.len();
    let op = out.as_mut_ptr();
    let mut p = 0;
    while p < len {
        let a = [sum(p), sum(p + 16), sum(p + 32), sum(p + 48)];
        let bytes = match narrow {
            Some(nr) => nr.pack4(a, scale),
            None => {
                let r = |a| requant32(a, scale, lo, hi, zy);
                pack4([r(a[0]), r(a[1]), r(a[2]), r(a[3])])
            }
        };
        // SAFETY: bytes p .. p + 64 of `out`, masked to those inside it.
        unsafe {
            if p + 4 * LANES <= len {
                _mm512_storeu_si512(op.add(p) as *mut _, bytes);
            } else {
                _mm512_mask_storeu_epi8(op.add(p), bits(0, len - p), bytes);
            }
        }
        p += 4 * LANES;
    }
}

/// The narrow output stage in 512-bit registers (`avx2::Narrow`'s steps): `round(acc·s)`
/// with no clamp, packed to int16 with saturation, the zero point added with int16
/// saturation, packed to int8 with saturation, then clamped as bytes where the range is
/// narrower than int8. Exact where `Narrow::of` allows it (multipliers within 0.5, so
/// the rounding conversion is exact and the float clamp commutes with it).
#[derive(Clone, Copy)]
struct NarrowZmm {
    zy: __m512i,
    lo: __m512i,
    hi: __m512i,
    clamp: bool,
    signed: bool,
}

impl NarrowZmm {
    /// Four vectors of sixteen accumulators as 64 bytes in order.
    ///
    /// # Safety
    /// AVX-512 F and BW.
    #[inline(always)]
    unsafe fn pack4(self, acc: [__m512i; 4], scale: (__m512, __m512)) -> __m512i {
        // SAFETY: AVX-512 F and BW (the caller's contract); register-only instructions.
        unsafe {
            let r = |a: __m512i| {
                let s = if self.signed {
                    let below = _mm512_cmplt_epi32_mask(a, _mm512_setzero_si512());
                    _mm512_mask_blend_ps(below, scale.0, scale.1)
                } else {
                    scale.0
                };
                _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(a), s))
            };
            let ab = _mm512_adds_epi16(_mm512_packs_epi32(r(acc[0]), r(acc[1])), self.zy);
            let cd = _mm512_adds_epi16(_mm512_packs_epi32(r(acc[2]), r(acc[3])), self.zy);
            let mut abcd = _mm512_packs_epi16(ab, cd);
            if self.clamp {
                abcd = _mm512_min_epi8(_mm512_max_epi8(abcd, self.lo), self.hi);
            }
            // Dword 4l + s of `abcd` holds bytes 4l..4l + 4 of source s (as in `pack4`).
            let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            _mm512_permutexvar_epi32(order, abcd)
        }
    }
}

/// `requant` before the narrowing: sixteen int32 lanes, each in [−128, 127].
#[inline(always)]
unsafe fn requant32(
    acc: __m512i,
    scale: (__m512, __m512),
    lo: __m512,
    hi: __m512,
    zy: __m512i,
) -> __m512i {
    // SAFETY: AVX-512 F (the callers' contract); register-only instructions.
    unsafe {
        let below = _mm512_cmplt_epi32_mask(acc, _mm512_setzero_si512());
        let s = _mm512_mask_blend_ps(below, scale.0, scale.1);
        let f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s);
        let f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
        _mm512_add_epi32(_mm512_cvtps_epi32(f), zy)
    }
}

/// Four vectors of int32 lanes in [−128, 127] as 64 bytes, in order. The saturating packs
/// work per 128-bit lane (`[a0 b0 c0 d0 | a1 b1 c1 d1 | ...]`, four bytes from each); one
/// `vpermd` puts each source's sixteen bytes back together. (One store instead of four
/// `vpmovdb`s to memory, which are slow.)
#[inline(always)]
unsafe fn pack4(v: [__m512i; 4]) -> __m512i {
    // SAFETY: AVX-512 F and BW (the callers' contract); register-only instructions.
    unsafe {
        let ab = _mm512_packs_epi32(v[0], v[1]);
        let cd = _mm512_packs_epi32(v[2], v[3]);
        let abcd = _mm512_packs_epi16(ab, cd);
        // Dword 4l + s of `abcd` holds bytes 4l..4l + 4 of source s (128-bit lane l).
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_epi32(order, abcd)
    }
}

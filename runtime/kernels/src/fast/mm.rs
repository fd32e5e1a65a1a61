//! int8 FullyConnected and BatchMatMul on the implicit GEMM's register block (x86_64 AVX2
//! hosts, `std`), bit-exact with `gemm::fc_i8` and `gemm::bmm_i8`
//! (`tests/exact_matmul.rs`).
//!
//! Both compute `Y[i][j] = requant(Σ_t A[i][t]·B[t][j] + off[j])` with the zero points
//! subtracted before the products (`a − za` and `b − zb` span −255..255, exact in int16):
//! A's rows are packed in blocks of six as int16 pairs of consecutive `t` (the broadcast
//! operand of `direct::block`), B as int16 pairs `[B[2s][j], B[2s+1][j]]` across the
//! columns (the loaded operand), 16 columns per register block. FullyConnected is
//! `A = x − zx`, `B = Wᵀ`, `off = bias`, per-column scales; BatchMatMul is one such GEMM
//! per matrix pair with a single scale. Rows of Y come out contiguous, so nothing is
//! transposed back.

extern crate std;
use std::cell::RefCell;
use std::vec::Vec;

use core::ops::Range;

use core::arch::x86_64::*;

use cairn_core::layout::Layout;
use cairn_core::{ExecError, OpCall, TensorMut};

use super::avx2::Requant;
use super::direct::{
    block, block_u8s8, note_quads, quad_kind, quad_mode, MADD, MR, PAIRS, VNNI_EVEX, VNNI_VEX,
};
use crate::util::qp;

/// Columns per register block.
pub(super) const NR: usize = 16;

std::thread_local! {
    static SCRATCH: RefCell<(Vec<i32>, Vec<i32>, Vec<usize>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
    static W8_SCRATCH: RefCell<W8Rows> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// FullyConnected.f32-w8's quantized rows: bytes, int16 `q − zp`, (scale, zero point).
type W8Rows = (Vec<u8>, Vec<i16>, Vec<(f32, i32)>);

/// Largest K and N this path packs (a 64 MB scratch bound against hostile shapes).
pub(super) const MAX_KN: usize = 1 << 24;

/// int8 FullyConnected (`x · Wᵀ`, W as [N, K], plain layout) with at least 3 rows.
pub fn fc_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    if !super::avx2::available() {
        return None;
    }
    let xt = call.req(0).ok()?;
    let wt = call.req(1).ok()?;
    let (n, k) = (wt.info.shape.dim(0), wt.info.shape.dim(1));
    if wt.info.layout != Layout::Plain || k == 0 || n == 0 || k.checked_mul(n)? > MAX_KN {
        return None;
    }
    let m = xt.info.numel() / k;
    // One or two rows take the GEMV (`gemv.rs`).
    if m < 3 {
        return None;
    }
    let x = xt.i8s().ok()?;
    let w = wt.i8s().ok()?;
    let bias = match call.input(2) {
        Some(b) => Some(b.i32s().ok()?),
        None => None,
    };
    let scales = call.req(3).ok()?.f32s().ok()?;
    let (zx, zy) = (qp(&xt.info).1, qp(&out.info).1);
    let (lo, hi) = (call.param(0), call.param(1));
    if x.len() < m * k || w.len() < n * k || scales.len() < n || bias.is_some_and(|b| b.len() < n) {
        return None;
    }
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    if y.len() < m * n {
        return None;
    }
    crate::paths::note(crate::paths::Path::FcBlock);
    let fc = Fc {
        w,
        n,
        k,
        bias,
        scales,
        zy,
        lo,
        hi,
    };
    let x = &x[..m * k];
    // u = a + zx + 128 = x + 128.
    let pack_a = |ap: &mut Vec<i32>, form: Form| match form {
        Form::Quads => pack_rows_u8(ap, m, k, x, |v| v as i32 + 128),
        Form::Pairs => pack_rows(ap, m, k, x, |v| v as i32 - zx),
        Form::Tiles => pack_tiles(ap, m, k, x, |v| (v as i32 + 128) as u8),
    };
    fc_rows(&fc, m, zx, pack_a, y);
    Some(Ok(()))
}

/// A FullyConnected's constant side: weights `[n, k]` (plain rows), bias, scales, and the
/// output's zero point and clamp.
pub(super) struct Fc<'a> {
    pub(super) w: &'a [i8],
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) bias: Option<&'a [i32]>,
    pub(super) scales: &'a [f32],
    pub(super) zy: i32,
    pub(super) lo: i32,
    pub(super) hi: i32,
}

/// The form `fc_rows` and `fc_w8_rows` pack A in for the block that runs.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Form {
    /// `pack_rows` of `a` (int16 pairs).
    Pairs,
    /// `pack_rows_u8` of the bytes `u` (quads in blocks of six rows).
    Quads,
    /// `pack_tiles` of the bytes `u` (AMX tiles).
    Tiles,
}

/// `y[i][j] = requant(bias[j] + Σ_t a(i, t)·W[j][t])` for `m` rows, `a(i, t)` the input
/// with its zero point `zx` subtracted (`a + zx` an int8 value, or `a` 0 for a padded
/// input). `pack_a(ap, form)` writes A into `ap` in the form the block reads: `pack_rows`
/// of `a`, or `pack_rows_u8` / `pack_tiles` of `u = a + zx + 128`. The caller checked AVX2
/// and the lengths.
///
/// When every weight lies in [−64, 63] (checked once, when packing), or the CPU has VNNI,
/// the GEMM runs on the u8×s8 block (`direct::block_u8s8`): A holds `u` as bytes and the
/// offset is `bias − (zx + 128)·Σw`, since Σ a·w = Σ u·w − (zx + 128)·Σw. Where VNNI runs
/// and the CPU has AMX, the same sums come from AMX tiles ([`gemm_split_amx`]).
pub(super) fn fc_rows(
    fc: &Fc<'_>,
    m: usize,
    zx: i32,
    pack_a: impl FnOnce(&mut Vec<i32>, Form),
    y: &mut [i8],
) {
    let Fc { w, n, k, .. } = *fc;
    let n16 = n.div_ceil(NR) * NR;
    // [kind (1: u8×s8), Σw of each of the n16 columns, B]. B = Wᵀ: pair s, column j holds
    // (W[j][2s], W[j][2s+1]) as int16, or quad s the bytes W[j][4s..4s+4]; packed once per
    // model with an active `prepack` cache.
    let key = (w.as_ptr() as usize, n * k, FC_PACK);
    let build = |v: &mut Vec<i32>| pack_fc(v, w, n, k);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (ap, bscratch, steps) = &mut *s;
        crate::prepack::with_packed(key, bscratch, build, |packed| {
            let mode = quad_mode(packed[0]);
            let (wsum, bp) = packed[1..].split_at(n16);
            let tiles = use_tiles(mode, bp, n, k);
            let (kp, zsum) = if mode != PAIRS {
                note_quads(mode);
                pack_a(ap, if tiles { Form::Tiles } else { Form::Quads });
                (k.div_ceil(4), zx + 128)
            } else {
                pack_a(ap, Form::Pairs);
                (k.div_ceil(2), 0)
            };
            steps.clear();
            steps.extend((0..kp).map(|sp| sp * NR));
            let offs: Vec<i32> = (0..n16)
                .map(|j| {
                    if j < n {
                        fc.bias
                            .map_or(0, |b| b[j])
                            .wrapping_sub(zsum.wrapping_mul(wsum[j]))
                    } else {
                        0
                    }
                })
                .collect();
            let sc: Vec<f32> = (0..n16)
                .map(|j| if j < n { fc.scales[j] } else { 1.0 })
                .collect();
            let rq = Requant::new(fc.lo, fc.hi, fc.zy);
            let stage = I8Out {
                cols: Cols::PerColumn(&offs, &sc, None),
                rows: None,
                rq,
            };
            if tiles {
                // SAFETY: AVX2 and AMX (use_tiles); ap holds m rows of k bytes as tiles,
                // bp the panels and the tail use_tiles checked, offs/sc n16, y m·n.
                unsafe { gemm_split_amx(tile_bytes(ap), bp, kp, m, n, &stage, y) };
                return;
            }
            // SAFETY: AVX2 is present (the caller checked); ap holds ⌈m/6⌉ blocks of
            // kp·6, bp ⌈n/16⌉ panels of kp·16, offs/sc n16, y m·n.
            unsafe { gemm_split(ap, bp, steps, m, n, &stage, mode, y) };
        });
    });
}

/// One FullyConnected.f32-w8: `m` rows of `x` (`[m, k]`), int8 weights `w` (`[n, k]`)
/// with their scales `sw` (one, or one per row of `w`), bias, clamp.
#[derive(Clone, Copy)]
pub(super) struct W8Fc<'a> {
    pub(super) x: &'a [f32],
    pub(super) m: usize,
    pub(super) w: &'a [i8],
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) sw: &'a [f32],
    pub(super) bias: Option<&'a [f32]>,
    pub(super) clamp: (f32, f32),
}

/// The packing kind word of FullyConnected weights in the `prepack` cache.
const FC_PACK: u32 = 0x4000_0000;

/// FullyConnected weights `w` (`[n, k]`) packed for the block: `[kind (1: u8×s8), Σw of
/// each of the n16 columns, B]`. B = Wᵀ: pair s, column j holds (W[j][2s], W[j][2s+1]) as
/// int16, or quad s the bytes W[j][4s..4s+4].
pub(super) fn pack_fc(v: &mut Vec<i32>, w: &[i8], n: usize, k: usize) {
    let n16 = n.div_ceil(NR) * NR;
    let kind = quad_kind(w[..n * k].iter().all(|v| (-64..=63).contains(v)));
    let u8s8 = kind != 0;
    let per = if u8s8 { 4 } else { 2 };
    let kp = k.div_ceil(per);
    v.clear();
    // AMX_SLACK zero words past the last panel: the AMX block reads a panel's rows in
    // steps of 16 (`use_tiles`).
    v.resize(1 + n16 + kp * n16 + AMX_SLACK, 0);
    v[0] = kind;
    let (wsum, bp) = v[1..].split_at_mut(n16);
    for (j, wr) in w.chunks_exact(k).take(n).enumerate() {
        wsum[j] = wr.iter().map(|&v| v as i32).sum();
        for sp in 0..kp {
            let at = |t: usize| wr.get(per * sp + t).copied().unwrap_or(0);
            bp[bidx(kp, sp, j)] = if u8s8 {
                i32::from_le_bytes([0, 1, 2, 3].map(|t| at(t) as u8))
            } else {
                pair16(at(0) as i32, at(1) as i32)
            };
        }
    }
}

/// FullyConnected.f32-w8 (`gemm::fc_w8`) on the block, bit-exact with it: each row of `x`
/// (`[m, k]`) is quantized by `gemm::w8_row_q` (u8 bytes, or int16 `q − zp` for the pairs
/// block), the sums come from the weights' packed panels, and [`F32Out`] makes the f32
/// outputs. `sw`: the weight scale of each row of `w` (one for all when a single value).
/// The caller checked AVX2 and the lengths.
pub(super) fn fc_w8_rows(op: &W8Fc<'_>, y: &mut [f32]) {
    let W8Fc {
        x,
        m,
        w,
        n,
        k,
        sw,
        bias,
        clamp: (lo, hi),
    } = *op;
    let n16 = n.div_ceil(NR) * NR;
    let key = (w.as_ptr() as usize, n * k, FC_PACK);
    let build = |v: &mut Vec<i32>| pack_fc(v, w, n, k);
    W8_SCRATCH.with(|q| {
        let mut q = q.borrow_mut();
        let (bytes, centred, rows) = &mut *q;
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (ap, bscratch, steps) = &mut *s;
            crate::prepack::with_packed(key, bscratch, build, |packed| {
                let mode = quad_mode(packed[0]);
                let (wsum, bp) = packed[1..].split_at(n16);
                bytes.resize(m * k, 0);
                rows.clear();
                rows.resize(m, (0.0, 0));
                // Each row quantized on its own (its range, then its bytes): rows split
                // across the lent threads.
                let slots = crate::par::SharedMut::new(&mut rows[..]);
                let work = (m * k) as u64 * W8_ROW_WORK;
                crate::par::par_pieces(&mut bytes[..m * k], k, work, |at, piece| {
                    let r0 = at / k;
                    // SAFETY: rows r0.. of this piece, whose bytes are this part's own.
                    let slots = unsafe { slots.piece(r0, piece.len() / k) };
                    let xs = x[at..at + piece.len()].chunks_exact(k);
                    for ((xr, br), slot) in xs.zip(piece.chunks_exact_mut(k)).zip(slots) {
                        *slot = super::gemv_w8::w8_row_avx2(xr, br);
                    }
                });
                let tiles = use_tiles(mode, bp, n, k);
                let kp = if mode != PAIRS {
                    note_quads(mode);
                    if tiles {
                        pack_tiles(ap, m, k, bytes, |b| b);
                    } else {
                        pack_bytes(ap, m, k, bytes);
                    }
                    k.div_ceil(4)
                } else {
                    centred.resize(m * k, 0);
                    for (i, (cr, br)) in centred
                        .chunks_exact_mut(k)
                        .zip(bytes.chunks_exact(k))
                        .enumerate()
                    {
                        let zp = rows[i].1;
                        for (c, &b) in cr.iter_mut().zip(br) {
                            *c = b as i16 - zp as i16;
                        }
                        rows[i].1 = 0;
                    }
                    pack_rows(ap, m, k, centred, |v| v as i32);
                    k.div_ceil(2)
                };
                steps.clear();
                steps.extend((0..kp).map(|sp| sp * NR));
                let col = |f: &dyn Fn(usize) -> f32| -> Vec<f32> {
                    (0..n16).map(|j| if j < n { f(j) } else { 0.0 }).collect()
                };
                let swv = col(&|j| sw[if sw.len() == 1 { 0 } else { j }]);
                let bv = col(&|j| bias.map_or(0.0, |b| b[j]));
                let stage = F32Out {
                    wsum,
                    sw: &swv,
                    bias: &bv,
                    rows,
                    lo,
                    hi,
                };
                let y = &mut y[..m * n];
                if tiles {
                    // SAFETY: AVX2 and AMX (use_tiles); ap holds m rows of k bytes as
                    // tiles, bp the panels and the tail use_tiles checked, the stage n16
                    // columns and m rows, y m·n.
                    unsafe { gemm_split_amx(tile_bytes(ap), bp, kp, m, n, &stage, y) };
                    return;
                }
                // SAFETY: AVX2 is present (the caller checked); ap holds ⌈m/6⌉ blocks of
                // kp·6, bp ⌈n/16⌉ panels of kp·16, the stage n16 columns and m rows, y m·n.
                unsafe { gemm_split(ap, bp, steps, m, n, &stage, mode, y) };
            });
        });
    });
}

/// int8 BatchMatMul of two activations (batch dims broadcast as `gemm::bmm_walk`).
pub fn bmm_i8(call: &OpCall<'_>, out: &mut TensorMut<'_>) -> Option<Result<(), ExecError>> {
    if !super::avx2::available() {
        return None;
    }
    let (at, bt) = (call.req(0).ok()?, call.req(1).ok()?);
    let (sa, sb, sy) = (at.info.shape, bt.info.shape, out.info.shape);
    let (m, k, n) = crate::gemm::bmm_dims(&sa, &sb, &sy)?;
    if m == 0 || k == 0 || n == 0 || k.checked_mul(n)? > MAX_KN || m.checked_mul(k)? > MAX_KN {
        return None;
    }
    let (a, b) = (at.i8s().ok()?, bt.i8s().ok()?);
    let scale = *call.req(2).ok()?.f32s().ok()?.first()?;
    let ((_, za), (_, zb), (_, zy)) = (qp(&at.info), qp(&bt.info), qp(&out.info));
    let y = match out.i8s_mut() {
        Ok(y) => y,
        Err(e) => return Some(Err(e)),
    };
    let rq = Requant::new(-128, 127, zy);
    crate::paths::note(crate::paths::Path::MatMulBlock);
    let tiles = crate::paths::amx() && crate::paths::vnni().is_some();
    // Without tiles, VNNI's u8×s8 quads where the CPU has them (32 products an instruction
    // against the int16 pairs' 16).
    let quads = match crate::paths::vnni() {
        _ if tiles => None,
        Some(crate::paths::Vnni::Evex) => Some(VNNI_EVEX),
        Some(crate::paths::Vnni::Vex) => Some(VNNI_VEX),
        None => None,
    };
    if tiles {
        crate::paths::note(crate::paths::Path::MatMulAmx);
    }
    if quads.is_some() {
        crate::paths::note(crate::paths::Path::MatMulVnni);
    }
    let mut pairs = Vec::new();
    crate::gemm::bmm_walk(&sa, &sb, &sy, |o, ia, ib| pairs.push((o, ia, ib)));
    let mm = Bmm {
        a,
        b,
        m,
        k,
        n,
        za,
        zb,
        scale,
        rq,
        tiles,
        quads,
    };
    // Several matrix pairs (attention heads) split across the lent threads a range of
    // pairs each; one big pair splits inside its GEMM instead.
    let work = (pairs.len() * m * n) as u64 * k as u64;
    let parts = crate::par::parts_over(work, pairs.len());
    if parts > 1 {
        let out = crate::par::SharedMut::new(y);
        crate::par::par_ranges(pairs.len(), 1, work, |r| {
            for &(o, ia, ib) in &pairs[r] {
                // SAFETY: each output matrix o is one part's (bmm_walk numbers them once).
                mm.pair(ia, ib, unsafe { out.piece(o * m * n, m * n) });
            }
        });
    } else {
        for &(o, ia, ib) in &pairs {
            mm.pair(ia, ib, &mut y[o * m * n..(o + 1) * m * n]);
        }
    }
    Some(Ok(()))
}

/// One int8 BatchMatMul's operands: every matrix pair `A[ia] · B[ib]` is `pair`.
struct Bmm<'a> {
    a: &'a [i8],
    b: &'a [i8],
    m: usize,
    k: usize,
    n: usize,
    za: i32,
    zb: i32,
    scale: f32,
    rq: Requant,
    /// On AMX tiles ([`Bmm::pair_quads`]).
    tiles: bool,
    /// Else on this VNNI block mode's quads ([`Bmm::pair_quads`]), or int16 pairs.
    quads: Option<u8>,
}

impl Bmm<'_> {
    /// `y = A[ia] · B[ib]`, requantized, packed in this thread's scratch.
    fn pair(&self, ia: usize, ib: usize, y: &mut [i8]) {
        if self.tiles || self.quads.is_some() {
            self.pair_quads(ia, ib, y);
            return;
        }
        let Bmm { m, k, n, .. } = *self;
        let kp = k.div_ceil(2);
        let n16 = n.div_ceil(NR) * NR;
        let (ao, bo) = (ia * m * k, ib * k * n);
        let (a, b) = (&self.a[ao..ao + m * k], &self.b[bo..bo + k * n]);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (ap, bp, steps) = &mut *s;
            grow(bp, kp * n16);
            steps.clear();
            steps.extend((0..kp).map(|sp| sp * NR));
            for sp in 0..kp {
                let r0 = &b[2 * sp * n..(2 * sp + 1) * n];
                let r1 = (2 * sp + 1 < k).then(|| &b[(2 * sp + 1) * n..(2 * sp + 2) * n]);
                for j in 0..n16 {
                    bp[bidx(kp, sp, j)] = if j < n {
                        pair16(
                            r0[j] as i32 - self.zb,
                            r1.map_or(0, |r| r[j] as i32 - self.zb),
                        )
                    } else {
                        0
                    };
                }
            }
            pack_rows(ap, m, k, a, |v| v as i32 - self.za);
            // SAFETY: AVX2 is present (bmm_i8 checked); the buffers are sized as in fc_i8.
            unsafe {
                let stage = I8Out {
                    cols: Cols::Uniform(self.scale),
                    rows: None,
                    rq: self.rq,
                };
                gemm_split(ap, bp, steps, m, n, &stage, PAIRS, y)
            };
        });
    }
}

impl Bmm<'_> {
    /// [`Bmm::pair`] on u8×s8 quads, on AMX tiles or the VNNI block: A as bytes
    /// `u = a + 128`, B's raw int8 values in the FC block's quad panels. `Σ (a − za)(b − zb)
    /// = Σ u·b − zb·Σu − (za + 128)·Σb + k·(za + 128)·zb`: the tiles or `vpdpbusd` give
    /// `Σ u·b`, the row term `−zb·Σu` and the column terms go in the output stage
    /// (wrapping i32, exact since the sum fits).
    fn pair_quads(&self, ia: usize, ib: usize, y: &mut [i8]) {
        let Bmm {
            m, k, n, za, zb, ..
        } = *self;
        let kq = k.div_ceil(4);
        let n16 = n.div_ceil(NR) * NR;
        let (ao, bo) = (ia * m * k, ib * k * n);
        let (a, b) = (&self.a[ao..ao + m * k], &self.b[bo..bo + k * n]);
        let zu = za + 128;
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (ap, bp, steps) = &mut *s;
            if self.tiles {
                pack_tiles(ap, m, k, a, |v| (v as i32 + 128) as u8);
                let need =
                    (n16 / NR - 1) * kq * NR + super::amx::steps(4 * kq) * super::amx::TM * NR;
                grow(bp, need.max(n16 * kq + AMX_SLACK));
            } else {
                // The bytes through the f32-w8 rows' scratch, kept between calls.
                W8_SCRATCH.with(|q| {
                    let u = &mut q.borrow_mut().0;
                    u.clear();
                    u.extend(a.iter().map(|&v| (v as i32 + 128) as u8));
                    pack_bytes(ap, m, k, u);
                });
                grow(bp, n16 * kq);
                // The columns past n meet zero weights.
                bp[(n / NR) * kq * NR..n16 * kq].fill(0);
            }
            // Panel j / 16, quad row s: the bytes b[4s..4s + 4][j] (0 past k).
            let mut colsum = std::vec![0i32; n16];
            for sq in 0..kq {
                let row = |t: usize| (4 * sq + t < k).then(|| &b[(4 * sq + t) * n..][..n]);
                let rs = [row(0), row(1), row(2), row(3)];
                for (j, cs) in colsum.iter_mut().enumerate().take(n) {
                    let q = rs.map(|r| r.map_or(0, |r| r[j]));
                    *cs += q.iter().map(|&v| v as i32).sum::<i32>();
                    bp[(j / NR) * kq * NR + sq * NR + j % NR] =
                        i32::from_le_bytes(q.map(|v| v as u8));
                }
            }
            let kzz = (k as i32).wrapping_mul(zu).wrapping_mul(zb);
            let offs: Vec<i32> = colsum
                .iter()
                .map(|&c| kzz.wrapping_sub(zu.wrapping_mul(c)))
                .collect();
            let rows: Vec<i32> = a
                .chunks_exact(k)
                .map(|r| {
                    let su: i32 = r.iter().map(|&v| v as i32 + 128).sum();
                    zb.wrapping_neg().wrapping_mul(su)
                })
                .collect();
            let sc = std::vec![self.scale; n16];
            let stage = I8Out {
                cols: Cols::PerColumn(&offs, &sc, None),
                rows: Some(&rows),
                rq: self.rq,
            };
            if let (false, Some(mode)) = (self.tiles, self.quads) {
                note_quads(mode);
                steps.clear();
                steps.extend((0..kq).map(|sq| sq * NR));
                // SAFETY: AVX2 (bmm_i8) and the VNNI encoding `mode` names (`quads`); ap
                // holds ⌈m/6⌉ blocks of kq·6 quads, bp ⌈n/16⌉ panels of kq·16, the stage
                // n16 columns and m rows, y m·n.
                unsafe { gemm_split(ap, bp, steps, m, n, &stage, mode, y) };
                return;
            }
            // SAFETY: AVX2 (bmm_i8) and AMX (`tiles`); ap holds m rows of k bytes as
            // tiles, bp the panels and the reach of the last step (`need`), the stage n16
            // columns and m rows, y m·n.
            unsafe {
                gemm_amx(tile_bytes(ap), bp, kq, 0..m, 0..n, n, &stage, |at, v| {
                    put_run(&mut y[at..at + v.len()], v)
                })
            };
        });
    }
}

/// Index of B's pair `sp`, column `j` in the packed layout: panels of 16 columns, each
/// `kp` rows of 16 contiguous int32, so a register block reads one contiguous panel.
#[inline(always)]
fn bidx(kp: usize, sp: usize, j: usize) -> usize {
    (j / NR) * kp * NR + sp * NR + j % NR
}

fn grow(v: &mut Vec<i32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0);
    }
}

/// Zero words after the FC block's panels (`pack_fc`): the AMX block reads each panel in
/// steps of 16 rows, so the last panel's last step may reach 15 rows (240 words) past it.
/// The rows past a panel's end meet A's zero bytes past `k`, so what they hold does not
/// change a sum; they only have to be readable.
const AMX_SLACK: usize = 256;

/// Whether the FC block's GEMM runs on AMX tiles: the packed mode is VNNI's (the tiles
/// compute the same sums), the CPU has AMX (`paths::amx`), and B (`bp`, the panels of
/// `n` columns of `k` quads' bytes) has the slack the block's last step reads.
pub(super) fn use_tiles(mode: u8, bp: &[i32], n: usize, k: usize) -> bool {
    if !(mode == VNNI_EVEX || mode == VNNI_VEX) || !crate::paths::amx() {
        return false;
    }
    let kp = k.div_ceil(4);
    // No columns (an empty output): nothing for the tiles to do.
    let Some(last) = n.div_ceil(NR).checked_sub(1) else {
        return false;
    };
    let need = last * kp * NR + super::amx::steps(4 * kp) * super::amx::TM * NR;
    bp.len() >= need
}

/// Work units (`crate::par`) per element of an f32-w8 row's quantization (a pass for its
/// range, one for its bytes).
const W8_ROW_WORK: u64 = 4;

/// Work units per byte [`pack_tiles`] writes.
const PACK_WORK: u64 = 2;

/// A's `m` rows of `k` (`src`) as bytes `u(v)` in AMX tiles (`amx::pack`), in `ap`'s
/// words; blocks of 32 rows split across the lent threads (each block's bytes are its
/// own, so any split packs the same bytes).
fn pack_tiles<T: Copy + Sync>(
    ap: &mut Vec<i32>,
    m: usize,
    k: usize,
    src: &[T],
    u: impl Fn(T) -> u8 + Sync,
) {
    let len = super::amx::packed_len(m, k);
    grow(ap, len.div_ceil(4));
    let block = super::amx::packed_len(1, k);
    let rows = 2 * super::amx::TM;
    crate::par::par_pieces(
        &mut tile_bytes_mut(ap)[..len],
        block,
        len as u64 * PACK_WORK,
        |at, dst| {
            let r0 = at / block * rows;
            let n = (m.min(r0 + dst.len() / block * rows)).saturating_sub(r0);
            super::amx::pack(dst, n, k, &src[(r0 * k).min(src.len())..], &u);
        },
    );
}

/// `ap`'s words as bytes (what `pack_tiles` wrote).
fn tile_bytes(ap: &[i32]) -> &[u8] {
    // SAFETY: any i32 is four initialized bytes; u8 has alignment 1; the length is the
    // same memory's.
    unsafe { core::slice::from_raw_parts(ap.as_ptr() as *const u8, ap.len() * 4) }
}

fn tile_bytes_mut(ap: &mut [i32]) -> &mut [u8] {
    // SAFETY: as `tile_bytes`; every byte pattern is a valid i32, so writes through the
    // byte view keep the words valid.
    unsafe { core::slice::from_raw_parts_mut(ap.as_mut_ptr() as *mut u8, ap.len() * 4) }
}

#[inline(always)]
fn pair16(lo: i32, hi: i32) -> i32 {
    (lo as i16 as u16 as u32 | ((hi as i16 as u16 as u32) << 16)) as i32
}

/// A's rows (`src`, `[m][k]`) in blocks of six, `G` consecutive columns per 32-bit word:
/// block b, group s, row r is `word` of the lanes `f(src[6b + r][G·s..G·s + G])`, lanes
/// past k zero (and the rows past m that fill the last block zero words). Each row is
/// mapped `CHUNK` values at a time into a lane buffer first, a loop the compiler
/// vectorizes.
#[inline(always)]
fn pack_rows_by<const G: usize, T: Copy, L: Copy + Default>(
    ap: &mut Vec<i32>,
    m: usize,
    k: usize,
    src: &[T],
    f: impl Fn(T) -> L,
    word: impl Fn([L; G]) -> i32,
) {
    const CHUNK: usize = 64;
    const { assert!(CHUNK.is_multiple_of(G)) };
    let kg = k.div_ceil(G);
    let blocks = m.div_ceil(MR);
    grow(ap, blocks * kg * MR);
    for b in 0..blocks {
        let dst = &mut ap[b * kg * MR..(b + 1) * kg * MR];
        for r in 0..MR {
            let i = b * MR + r;
            if i >= m {
                for s in 0..kg {
                    dst[s * MR + r] = 0;
                }
                continue;
            }
            for (c, vals) in src[i * k..(i + 1) * k].chunks(CHUNK).enumerate() {
                let mut lanes = [L::default(); CHUNK];
                for (l, &v) in lanes.iter_mut().zip(vals) {
                    *l = f(v);
                }
                let s0 = c * (CHUNK / G);
                for (w, group) in lanes[..vals.len().div_ceil(G) * G]
                    .chunks_exact(G)
                    .enumerate()
                {
                    dst[(s0 + w) * MR + r] = word(group.try_into().expect("G lanes"));
                }
            }
        }
    }
}

/// A's rows in blocks of six: block b, pair s, row r is (A[6b+r][2s], A[6b+r][2s+1]),
/// `A = f(src)` (int16 values).
fn pack_rows<T: Copy>(ap: &mut Vec<i32>, m: usize, k: usize, src: &[T], f: impl Fn(T) -> i32) {
    pack_rows_by::<2, T, i16>(
        ap,
        m,
        k,
        src,
        |v| f(v) as i16,
        |[lo, hi]| pair16(lo as i32, hi as i32),
    );
}

/// A's rows in blocks of six as u8 quads: block b, quad s, row r holds the bytes
/// `u(src[6b+r][4s..4s+4])` (each in 0..=255; 0 past k, where B is zero).
fn pack_rows_u8<T: Copy>(ap: &mut Vec<i32>, m: usize, k: usize, src: &[T], u: impl Fn(T) -> i32) {
    pack_rows_by::<4, T, u8>(ap, m, k, src, |v| u(v) as u8, i32::from_le_bytes);
}

/// `pack_rows_u8` of rows that already hold the bytes `u`: each quad one 4-byte load, a
/// block's six rows side by side so that the stores run contiguously.
fn pack_bytes(ap: &mut Vec<i32>, m: usize, k: usize, src: &[u8]) {
    let kq = k.div_ceil(4);
    let whole = k / 4;
    let blocks = m.div_ceil(MR);
    grow(ap, blocks * kq * MR);
    for b in 0..blocks {
        let dst = &mut ap[b * kq * MR..(b + 1) * kq * MR];
        // Row r of the block; empty past m (its words are zero).
        let rows: [&[u8]; MR] = core::array::from_fn(|r| {
            let i = b * MR + r;
            if i < m {
                &src[i * k..(i + 1) * k]
            } else {
                &[]
            }
        });
        let from = if (b + 1) * MR <= m {
            let lines = rows.map(|r| &r[..4 * whole]);
            for (s, d) in dst.chunks_exact_mut(MR).take(whole).enumerate() {
                for (d, line) in d.iter_mut().zip(&lines) {
                    *d = i32::from_le_bytes(line[4 * s..4 * s + 4].try_into().expect("4 bytes"));
                }
            }
            whole
        } else {
            0
        };
        // The rest: quads from `from` on, zero bytes past each row's end.
        for (r, row) in rows.iter().enumerate() {
            for s in from..kq {
                let mut quad = [0u8; 4];
                let v = row.get(4 * s..).unwrap_or(&[]);
                let n = v.len().min(4);
                quad[..n].copy_from_slice(&v[..n]);
                dst[s * MR + r] = i32::from_le_bytes(quad);
            }
        }
    }
}

/// What the output stage adds and multiplies per column.
#[derive(Clone, Copy)]
pub(super) enum Cols<'a> {
    /// One scale, no offset (BatchMatMul).
    Uniform(f32),
    /// An offset (bias) and a scale per column (FullyConnected), n16 long, and the scales
    /// of negative sums where a PRelu is folded in (`requantize_signed`).
    PerColumn(&'a [i32], &'a [f32], Option<&'a [f32]>),
}

/// What a GEMM block's sums become: row `i`'s 16 sums from column `j0` (a multiple of
/// 16) written as 16 outputs.
pub(super) trait Stage: Sync {
    type Out: Copy + Default + Send;
    /// # Safety
    /// AVX2; `j0 + 16` lies within the stage's per-column values.
    unsafe fn store(&self, i: usize, j0: usize, acc: &[__m256i; 2], out: &mut [Self::Out; NR]);
}

/// Requantized int8 outputs (FullyConnected, BatchMatMul).
pub(super) struct I8Out<'a> {
    pub(super) cols: Cols<'a>,
    /// An offset per row added to the sums (a MatMul's `−zb·Σu` on the tiles), m long.
    pub(super) rows: Option<&'a [i32]>,
    pub(super) rq: Requant,
}

impl Stage for I8Out<'_> {
    type Out = i8;
    #[inline(always)]
    unsafe fn store(&self, i: usize, j0: usize, acc: &[__m256i; 2], out: &mut [i8; NR]) {
        // SAFETY: AVX2 (the caller's contract); j0 + 16 <= n16 = the stage's length.
        unsafe {
            let row = _mm256_set1_epi32(self.rows.map_or(0, |r| r[i]));
            let (voff, vs, neg) = match self.cols {
                Cols::Uniform(s) => {
                    let v = (_mm256_setzero_si256(), _mm256_set1_ps(s));
                    ([v.0, v.0], [v.1, v.1], None)
                }
                Cols::PerColumn(offs, sc, neg) => {
                    debug_assert!(offs.len() >= j0 + NR && sc.len() >= j0 + NR);
                    let o = offs.as_ptr().add(j0) as *const __m256i;
                    let s = sc.as_ptr().add(j0);
                    let neg = neg.map(|g| {
                        debug_assert!(g.len() >= j0 + NR);
                        let g = g.as_ptr().add(j0);
                        [_mm256_loadu_ps(g), _mm256_loadu_ps(g.add(8))]
                    });
                    (
                        [_mm256_loadu_si256(o), _mm256_loadu_si256(o.add(1))],
                        [_mm256_loadu_ps(s), _mm256_loadu_ps(s.add(8))],
                        neg,
                    )
                }
            };
            for h in 0..2 {
                let v = _mm256_add_epi32(_mm256_add_epi32(acc[h], voff[h]), row);
                // A folded PRelu: the sign of the whole sum picks the multiplier.
                let s = match neg {
                    Some(g) => _mm256_blendv_ps(vs[h], g[h], _mm256_castsi256_ps(v)),
                    None => vs[h],
                };
                self.rq.store(v, s, &mut out[8 * h..8 * h + 8]);
            }
        }
    }
}

/// f32 outputs of FullyConnected.f32-w8: `(acc − zsum_i·Σw_j) as f32 · (s_i · sw_j) + b_j`,
/// clamped, as `gemm::w8_out`. Per column (n16 long): Σw, the weight scale, the bias (0
/// where none); per row: the run-time scale and the zero point to take off.
struct F32Out<'a> {
    wsum: &'a [i32],
    sw: &'a [f32],
    bias: &'a [f32],
    rows: &'a [(f32, i32)],
    lo: f32,
    hi: f32,
}

impl Stage for F32Out<'_> {
    type Out = f32;
    #[inline(always)]
    unsafe fn store(&self, i: usize, j0: usize, acc: &[__m256i; 2], out: &mut [f32; NR]) {
        let (s, zsum) = self.rows[i];
        // SAFETY: AVX2 (the caller's contract); j0 + 16 <= n16 = each column slice's length.
        unsafe {
            let (vs, vz) = (_mm256_set1_ps(s), _mm256_set1_epi32(zsum));
            let (lo, hi) = (_mm256_set1_ps(self.lo), _mm256_set1_ps(self.hi));
            for (h, &acc) in acc.iter().enumerate() {
                let at = j0 + 8 * h;
                let ws = _mm256_loadu_si256(self.wsum.as_ptr().add(at) as *const __m256i);
                let a = _mm256_sub_epi32(acc, _mm256_mullo_epi32(vz, ws));
                let sc = _mm256_mul_ps(vs, _mm256_loadu_ps(self.sw.as_ptr().add(at)));
                let b = _mm256_loadu_ps(self.bias.as_ptr().add(at));
                let v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a), sc), b);
                let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * h), v);
            }
        }
    }
}

/// The whole GEMM (`y = m × n`), split across the lent threads when it is big enough: by
/// blocks of six rows when there are enough of them (each part writes whole rows), else
/// by panels of 16 columns. Every output is one part's, computed as on one thread.
///
/// # Safety
/// AVX2; `ap` holds ⌈m/6⌉ blocks of `steps.len()·6`; `bp` holds ⌈n/16⌉ panels of
/// `steps.len()·16` (`bidx`); the stage's per-column values hold n16 and its per-row
/// values m; `y` holds m·n; `mode`: `PAIRS`, or A and B hold u8 / s8 quads
/// (`direct::block_u8s8`; with `MADD`, B in [−64, 63]; a VNNI mode only where the CPU has
/// it).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_split<S: Stage>(
    ap: &[i32],
    bp: &[i32],
    steps: &[usize],
    m: usize,
    n: usize,
    stage: &S,
    mode: u8,
    y: &mut [S::Out],
) {
    // SAFETY: the contract above, passed on.
    unsafe {
        match mode {
            PAIRS => gemm_split_m::<PAIRS, S>(ap, bp, steps, m, n, stage, y),
            MADD => gemm_split_m::<MADD, S>(ap, bp, steps, m, n, stage, y),
            VNNI_EVEX => gemm_split_m::<VNNI_EVEX, S>(ap, bp, steps, m, n, stage, y),
            _ => gemm_split_m::<VNNI_VEX, S>(ap, bp, steps, m, n, stage, y),
        }
    }
}

/// [`gemm_split`] for one block mode `M`.
///
/// # Safety
/// As [`gemm_split`].
unsafe fn gemm_split_m<const M: u8, S: Stage>(
    ap: &[i32],
    bp: &[i32],
    steps: &[usize],
    m: usize,
    n: usize,
    stage: &S,
    y: &mut [S::Out],
) {
    let work = (m * n) as u64 * 2 * steps.len() as u64;
    if crate::par::parts_for(work) <= 1 {
        // SAFETY: the contract above.
        unsafe {
            gemm::<M, S>(ap, bp, steps, 0..m, 0..n, n, stage, |at, v| {
                put_run(&mut y[at..at + v.len()], v)
            })
        };
        return;
    }
    // By blocks of rows or panels of columns, whichever leaves the busiest thread the
    // smaller share (rows on a tie): 64 rows are 11 blocks, 6 and 5 on two threads,
    // where 384 columns are 24 panels, 12 and 12.
    let (rb, cb) = (m.div_ceil(MR), n.div_ceil(NR));
    let ((pr, sr), (pc, sc)) = (
        crate::par::parts_and_span(work, rb),
        crate::par::parts_and_span(work, cb),
    );
    let by_rows = sr * cb <= sc * rb;
    let parts = if by_rows { pr } else { pc };
    let out = crate::par::SharedMut::new(y);
    crate::par::run(parts, |i| {
        let (rows, cs) = if by_rows {
            (crate::par::split(m, parts, MR, i), 0..n)
        } else {
            (0..m, crate::par::split(n, parts, NR, i))
        };
        if rows.is_empty() || cs.is_empty() {
            return;
        }
        // SAFETY: the contract above (the ranges lie within m and n); parts write
        // disjoint rows or disjoint columns, so no two pieces alive at once overlap.
        unsafe {
            gemm::<M, S>(ap, bp, steps, rows, cs, n, stage, |at, v| {
                put_run(out.piece(at, v.len()), v)
            })
        };
    });
}

/// [`gemm_split`] on AMX tiles: A is `pack_tiles`'s bytes, B the FC block's quad panels
/// (`kp` quads deep). Split across the lent threads as [`gemm_split_m`], by 32-row
/// blocks or 16-column panels; each part configures the tiles on its own thread.
///
/// # Safety
/// AVX2 and `paths::amx()`; `ap` holds `amx::packed_len(m, 4·kp)` bytes; `bp` the
/// ⌈n/16⌉ panels and the tail `use_tiles` checks; the stage's per-column values hold n16
/// and its per-row values m; `y` holds m·n.
unsafe fn gemm_split_amx<S: Stage>(
    ap: &[u8],
    bp: &[i32],
    kp: usize,
    m: usize,
    n: usize,
    stage: &S,
    y: &mut [S::Out],
) {
    let work = (m * n) as u64 * 2 * kp as u64;
    let parts = crate::par::parts_for(work);
    if parts <= 1 {
        // SAFETY: the contract above.
        unsafe {
            gemm_amx(ap, bp, kp, 0..m, 0..n, n, stage, |at, v| {
                put_run(&mut y[at..at + v.len()], v)
            })
        };
        return;
    }
    let by_rows = m.div_ceil(2 * super::amx::TM) >= 2 * parts;
    let out = crate::par::SharedMut::new(y);
    crate::par::run(parts, |i| {
        let (rows, cs) = if by_rows {
            (crate::par::split(m, parts, 2 * super::amx::TM, i), 0..n)
        } else {
            (0..m, crate::par::split(n, parts, NR, i))
        };
        if rows.is_empty() || cs.is_empty() {
            return;
        }
        // SAFETY: the contract above (the ranges lie within m and n); parts write
        // disjoint rows or disjoint columns.
        unsafe {
            gemm_amx(ap, bp, kp, rows, cs, n, stage, |at, v| {
                put_run(out.piece(at, v.len()), v)
            })
        };
    });
}

/// Rows `rows` (from a multiple of 32) × columns `cs` (from a multiple of 16) on AMX
/// tiles, 32 × 32 a block (`amx::block`), each block's sums through the stage as
/// [`gemm512`] does.
///
/// # Safety
/// As [`gemm_split_amx`], for the ranges given.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_amx<S: Stage>(
    ap: &[u8],
    bp: &[i32],
    kp: usize,
    rows: Range<usize>,
    cs: Range<usize>,
    n: usize,
    stage: &S,
    mut put: impl FnMut(usize, &[S::Out]),
) {
    use super::amx::{block, steps, Tiles, TM};
    crate::paths::note(crate::paths::Path::GemmAmx);
    let ks = steps(4 * kp);
    let a_tile = ks * TM * super::amx::TK;
    let tiles_end = rows.end.div_ceil(TM);
    debug_assert!(rows.start.is_multiple_of(2 * TM) && cs.start.is_multiple_of(NR));
    debug_assert!(ap.len() >= tiles_end.div_ceil(2) * 2 * a_tile);
    debug_assert!(bp.len() >= (n.div_ceil(NR) - 1) * kp * NR + ks * TM * NR);
    let mut c = [0i32; 32 * 32];
    let mut tmp = [S::Out::default(); NR];
    // SAFETY: the contract above: AMX is usable on this thread.
    let _tiles = unsafe { Tiles::new() };
    let b = bp.as_ptr() as *const u8;
    for j0 in cs.clone().step_by(2 * NR) {
        let two = j0 + NR < cs.end;
        for t in (rows.start / TM..tiles_end).step_by(2) {
            let rows2 = t + 1 < tiles_end;
            // SAFETY: panel j0/16 (and the next with `two`) starts at word j0·kp, its
            // ks·16 rows within bp (checked by use_tiles); row tiles t, t + 1 lie in ap
            // (packed to a multiple of 32 rows); c is 32 × 32.
            unsafe {
                let b0 = b.add(j0 * kp * 4);
                let b1 = if two { b0.add(NR * kp * 4) } else { b0 };
                let a0 = ap.as_ptr().add(t * a_tile);
                let a1 = if rows2 { a0.add(a_tile) } else { a0 };
                let cp = c.as_mut_ptr();
                let (sa, tile) = (super::amx::TK, TM * super::amx::TK);
                let steps = (0..ks).map(|s| (s * tile, s * tile));
                match (rows2, two) {
                    (true, true) => block::<true, true>(a0, a1, sa, b0, b1, steps, cp),
                    (true, false) => block::<true, false>(a0, a1, sa, b0, b1, steps, cp),
                    (false, true) => block::<false, true>(a0, a1, sa, b0, b1, steps, cp),
                    (false, false) => block::<false, false>(a0, a1, sa, b0, b1, steps, cp),
                }
            }
            for r in 0..TM * (1 + rows2 as usize) {
                let i = t * TM + r;
                if i >= rows.end {
                    break;
                }
                for h in 0..1 + two as usize {
                    let j = j0 + h * NR;
                    // SAFETY: row r's 16 sums of column tile h lie in c; AVX2 (the
                    // contract); j + 16 within the stage's columns.
                    unsafe {
                        let p = c.as_ptr().add(r * 32 + h * NR) as *const __m256i;
                        let halves = [_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1))];
                        stage.store(i, j, &halves, &mut tmp);
                    }
                    put(i * n + j, &tmp[..NR.min(cs.end - j)]);
                }
            }
        }
    }
}

/// `dst = v` (equal lengths): a block row's whole run (`NR` values, the common case) as a
/// fixed-size copy the compiler inlines, since `copy_from_slice` of a run was a C library
/// `memmove` call per 16 outputs (9% of a transformer's FullyConnected time).
#[inline(always)]
fn put_run<T: Copy>(dst: &mut [T], v: &[T]) {
    match (<&mut [T; NR]>::try_from(&mut *dst), <&[T; NR]>::try_from(v)) {
        (Ok(d), Ok(v)) => *d = *v,
        _ => dst.copy_from_slice(v),
    }
}

/// Rows `rows` (from a multiple of 6) × columns `cs` (from a multiple of 16) of the
/// GEMM, each run of a row's outputs handed to `put(i·n + j, values)`.
///
/// # Safety
/// AVX2; `ap` holds the blocks of `rows` (`steps.len()·6` each); `bp` holds the panels of
/// `cs` (`steps.len()·16` each, `bidx`); the stage holds ⌈cs.end/16⌉·16 column values and
/// `rows.end` row values.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<const M: u8, S: Stage>(
    ap: &[i32],
    bp: &[i32],
    steps: &[usize],
    rows: Range<usize>,
    cs: Range<usize>,
    n: usize,
    stage: &S,
    mut put: impl FnMut(usize, &[S::Out]),
) {
    let kp = steps.len();
    let blk = kp * MR;
    debug_assert!(rows.start.is_multiple_of(MR) && cs.start.is_multiple_of(NR) && cs.end <= n);
    debug_assert!(ap.len() >= rows.end.div_ceil(MR) * blk);
    let mut tmp = [S::Out::default(); NR];
    if M == VNNI_EVEX && vnni512() {
        // SAFETY: the contract above; the CPU has AVX-512 F, BW and VNNI (vnni512).
        unsafe { gemm512(ap, bp, steps, rows, cs, n, stage, &mut put) };
        return;
    }
    for j0 in cs.clone().step_by(NR) {
        let cols_here = NR.min(cs.end - j0);
        for b in rows.start / MR..rows.end.div_ceil(MR) {
            // SAFETY: the contract above: panel j0/16 (at j0·kp) + every step + 16 is
            // inside bp, and block b of ap is inside ap.
            let acc = unsafe {
                let (x, w) = (bp.as_ptr().add(j0 * kp), ap.as_ptr().add(b * blk));
                if M != PAIRS {
                    block_u8s8::<false, M>(x, steps, w)
                } else {
                    block(x, steps, w)
                }
            };
            for (r, acc) in acc.iter().enumerate() {
                let i = b * MR + r;
                if i >= rows.end {
                    break;
                }
                // SAFETY: AVX2; j0 + 16 within the stage's columns (the contract above).
                unsafe { stage.store(i, j0, acc, &mut tmp) };
                put(i * n + j0, &tmp[..cols_here]);
            }
        }
    }
}

/// Whether the FC block's VNNI quads run on 512-bit `vpdpbusd` ([`gemm512`]): the CPU
/// has AVX-512 F, BW and VNNI, and the AVX-512 kernels are allowed (`paths::avx512_f32`;
/// `CAIRN_AVX512=0` turns it off, so one host tests both widths).
fn vnni512() -> bool {
    static HW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::paths::avx512_f32()
        && *HW.get_or_init(|| {
            std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vnni")
        })
}

/// [`gemm`] in VNNI mode on 512-bit registers: a 16-column panel's quad step (16 words) is
/// one `zmm`, and a block is 6 rows × two panels (32 columns, twelve accumulators), 64
/// products per `vpdpbusd`; a last lone panel runs alone. The same integer sums, so the
/// stage makes the same outputs.
///
/// # Safety
/// As [`gemm`]; AVX-512 F, BW and VNNI; B holds 8-bit quads (a VNNI packing).
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm512<S: Stage>(
    ap: &[i32],
    bp: &[i32],
    steps: &[usize],
    rows: Range<usize>,
    cs: Range<usize>,
    n: usize,
    stage: &S,
    put: &mut impl FnMut(usize, &[S::Out]),
) {
    crate::paths::note(crate::paths::Path::FcVnni512);
    let kp = steps.len();
    let blk = kp * MR;
    let mut tmp = [S::Out::default(); NR];
    for j0 in cs.clone().step_by(2 * NR) {
        let two = j0 + NR < cs.end;
        for b in rows.start / MR..rows.end.div_ceil(MR) {
            // SAFETY: panels j0/16 and, with `two`, j0/16 + 1 lie in bp (the contract);
            // block b of ap lies in ap.
            let acc = unsafe {
                let p0 = bp.as_ptr().add(j0 * kp);
                let p1 = if two { p0.add(NR * kp) } else { p0 };
                block512(p0, p1, steps, ap.as_ptr().add(b * blk))
            };
            for (r, acc) in acc.iter().enumerate() {
                let i = b * MR + r;
                if i >= rows.end {
                    break;
                }
                for (h, &z) in acc.iter().enumerate().take(1 + two as usize) {
                    let j = j0 + h * NR;
                    let halves = [_mm512_castsi512_si256(z), _mm512_extracti64x4_epi64::<1>(z)];
                    // SAFETY: AVX2 (the contract); j + 16 within the stage's columns.
                    unsafe { stage.store(i, j, &halves, &mut tmp) };
                    put(i * n + j, &tmp[..NR.min(cs.end - j)]);
                }
            }
        }
    }
}

/// Six rows of A (u8 quads, broadcast) times two 16-column panels of B (s8 quads, one
/// `zmm` a step each), summed over `steps`.
///
/// # Safety
/// AVX-512 F and VNNI; `b0`, `b1` + every step + 16 words lie in B; `a` holds
/// `steps.len()·6` words.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn block512(
    b0: *const i32,
    b1: *const i32,
    steps: &[usize],
    a: *const i32,
) -> [[__m512i; 2]; MR] {
    let mut acc = [[_mm512_setzero_si512(); 2]; MR];
    let mut ap = a;
    for &t in steps {
        // SAFETY: the contract above, for every step.
        unsafe {
            let x0 = _mm512_loadu_si512(b0.add(t) as *const __m512i);
            let x1 = _mm512_loadu_si512(b1.add(t) as *const __m512i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let u = _mm512_set1_epi32(ap.add(r).read());
                acc[0] = _mm512_dpbusd_epi32(acc[0], u, x0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], u, x1);
            }
            ap = ap.add(MR);
        }
    }
    acc
}

/// A conv batch's scratch: patches and widened rows in either lane form, and the
/// [pixel][channel] outputs.
#[derive(Default)]
struct ConvScratch {
    patches16: Vec<i16>,
    xw16: Vec<i16>,
    patches8: Vec<u8>,
    xw8: Vec<u8>,
    stage: Vec<i8>,
}

std::thread_local! {
    static CONV_SCRATCH: RefCell<ConvScratch> = RefCell::new(ConvScratch::default());
}

/// The form a conv's patches are gathered in for the FC block's A: the int16 `x − zx`
/// (0 for padding) of the int16 block, or the byte `u = x + 128` (`zx + 128` for
/// padding) of the u8×s8 block.
trait Lane: Copy + Default {
    fn of(x: i8, zx: i32) -> Self;
    fn pad(zx: i32) -> Self;
    /// The lane of a value with its zero point subtracted (`gemv::patch`'s form).
    fn of_centered(a: i16, zx: i32) -> Self;
}

impl Lane for i16 {
    fn of(x: i8, zx: i32) -> i16 {
        (x as i32 - zx) as i16
    }
    fn pad(_: i32) -> i16 {
        0
    }
    fn of_centered(a: i16, _: i32) -> i16 {
        a
    }
}

impl Lane for u8 {
    fn of(x: i8, _: i32) -> u8 {
        (x as i32 + 128) as u8
    }
    fn pad(zx: i32) -> u8 {
        (zx + 128) as u8
    }
    fn of_centered(a: i16, zx: i32) -> u8 {
        (a as i32 + zx + 128) as u8
    }
}

/// A batch of convs with small outputs (a streaming model's windows: 32 images of 1×5
/// outputs), or a strided filter bank (an STFT's frames of hundreds of taps), as one
/// FullyConnected over every output's patch: the weights `[oc][c·kh·kw]` are the FC's
/// rows, packed once per model, and the `n·oh·ow` patches its input rows, gathered in the
/// form the packed weights' block reads (bytes for u8×s8 and VNNI, int16 otherwise); each
/// image's `[pixel][channel]` result is transposed into place. `false` (nothing written)
/// where the path does not apply.
pub(super) fn conv_batch(g: &super::Geo, q: &super::Q<'_>, y: &mut [i8]) -> bool {
    let k = g.c * g.kh * g.kw;
    let pix = g.oh * g.ow;
    let rows = g.n * pix;
    if !super::avx2::available()
        || q.wp.is_some()
        || g.g != 1
        || k == 0
        || rows == 0
        || rows.checked_mul(k).is_none_or(|v| v > MAX_KN)
        || k.checked_mul(g.oc).is_none_or(|v| v > MAX_KN)
    {
        return false;
    }
    crate::paths::note(crate::paths::Path::ConvBatch);
    // Each image's whole unpadded input is its one window: its NCHW bytes are the patch
    // in (c, ky, kx) order, and the `[n][oc]` result is the output; no gather, no
    // transpose.
    let dense = (g.dh == 1 || g.kh == 1) && (g.dw == 1 || g.kw == 1);
    if dense && g.oh == 1 && g.ow == 1 && (g.kh, g.kw) == (g.h, g.w) && g.pt == 0 && g.pl == 0 {
        crate::paths::note(crate::paths::Path::ConvWholeInput);
        let x = &q.x[..rows * k];
        let zx = q.zx;
        let pack_a = |ap: &mut Vec<i32>, form: Form| match form {
            Form::Quads => pack_rows_u8(ap, rows, k, x, |v| v as i32 + 128),
            Form::Pairs => pack_rows(ap, rows, k, x, |v| v as i32 - zx),
            Form::Tiles => pack_tiles(ap, rows, k, x, |v| (v as i32 + 128) as u8),
        };
        let fc = Fc {
            w: q.w,
            n: g.oc,
            k,
            bias: q.bias,
            scales: q.scales,
            zy: q.zy,
            lo: q.lo,
            hi: q.hi,
        };
        fc_rows(&fc, rows, zx, pack_a, &mut y[..rows * g.oc]);
        return true;
    }
    CONV_SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let ConvScratch {
            patches16,
            xw16,
            patches8,
            xw8,
            stage,
        } = &mut *s;
        stage.clear();
        stage.resize(rows * g.oc, 0);
        // The patches in the lane form of the block the packed weights chose.
        let pack_a = |ap: &mut Vec<i32>, form: Form| match form {
            Form::Quads => {
                let p = gather_patches(g, q, k, patches8, xw8);
                pack_bytes(ap, rows, k, p)
            }
            Form::Tiles => {
                let p = gather_patches(g, q, k, patches8, xw8);
                pack_tiles(ap, rows, k, p, |b| b)
            }
            Form::Pairs => {
                let p = gather_patches(g, q, k, patches16, xw16);
                pack_rows(ap, rows, k, p, |v| v as i32)
            }
        };
        let fc = Fc {
            w: q.w,
            n: g.oc,
            k,
            bias: q.bias,
            scales: q.scales,
            zy: q.zy,
            lo: q.lo,
            hi: q.hi,
        };
        fc_rows(&fc, rows, q.zx, pack_a, stage);
        // Each image's [pixel][channel] block is its output transposed.
        for (n, y) in y.chunks_exact_mut(g.oc * pix).take(g.n).enumerate() {
            crate::movement::transpose_plane(stage, n * pix * g.oc, g.oc, g.oc, pix, y);
        }
    });
    true
}

/// Every output pixel's patch as one row of `patches` (`[n·oh·ow][k]`, (c, ky, kx) order,
/// as lanes `L`: `L::pad` where the window leaves the image), as `gemv::patch` per pixel
/// but input row by input row: each (image, channel, ky, oy) input row is widened once
/// into `xw` as lanes between padding, so each window is a copy from it without bounds
/// tests (of a fixed width for kernels up to 1×8). Every element of the returned m·k is
/// written.
fn gather_patches<'p, L: Lane>(
    g: &super::Geo,
    q: &super::Q<'_>,
    k: usize,
    patches: &'p mut Vec<L>,
    xw: &mut Vec<L>,
) -> &'p [L] {
    let plane = g.h * g.w;
    let pix = g.oh * g.ow;
    let span = (g.kw - 1) * g.dw;
    let len = g.n * pix * k;
    if patches.len() < len {
        patches.resize(len, L::default());
    }
    let patches = &mut patches[..len];
    let pad = L::pad(q.zx);
    // Negative pads are not ONNX's; keep to the pixel-by-pixel patch there.
    let Ok(pl) = usize::try_from(g.pl) else {
        let mut centered = std::vec![0i16; k];
        for (row, patch) in patches.chunks_exact_mut(k).enumerate() {
            super::gemv::patch(g, q, row / pix, row % pix, &mut centered);
            for (d, &a) in patch.iter_mut().zip(&centered) {
                *d = L::of_centered(a, q.zx);
            }
        }
        return patches;
    };
    let wp = (pl + g.w).max((g.ow - 1) * g.sw + span + 1);
    xw.clear();
    xw.resize(wp, pad);
    for n in 0..g.n {
        for c in 0..g.c {
            let xc = &q.x[(n * g.c + c) * plane..(n * g.c + c + 1) * plane];
            for ky in 0..g.kh {
                let t0 = (c * g.kh + ky) * g.kw;
                for oy in 0..g.oh {
                    let rows =
                        &mut patches[(n * pix + oy * g.ow) * k..][..(g.ow - 1) * k + t0 + g.kw];
                    let iy = (oy * g.sh) as isize - g.pt + (ky * g.dh) as isize;
                    if iy < 0 || iy >= g.h as isize {
                        for ox in 0..g.ow {
                            rows[ox * k + t0..][..g.kw].fill(pad);
                        }
                        continue;
                    }
                    let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    for (d, &v) in xw[pl..pl + g.w].iter_mut().zip(xr) {
                        *d = L::of(v, q.zx);
                    }
                    let xw = &xw[..];
                    match (g.kw, g.dw) {
                        (1, _) => windows::<1, L>(xw, g.sw, g.ow, k, t0, rows),
                        (2, 1) => windows::<2, L>(xw, g.sw, g.ow, k, t0, rows),
                        (3, 1) => windows::<3, L>(xw, g.sw, g.ow, k, t0, rows),
                        (4, 1) => windows::<4, L>(xw, g.sw, g.ow, k, t0, rows),
                        (5, 1) => windows::<5, L>(xw, g.sw, g.ow, k, t0, rows),
                        (7, 1) => windows::<7, L>(xw, g.sw, g.ow, k, t0, rows),
                        _ => {
                            for ox in 0..g.ow {
                                let d = &mut rows[ox * k + t0..][..g.kw];
                                let src = &xw[ox * g.sw..=ox * g.sw + span];
                                if g.dw == 1 {
                                    d.copy_from_slice(src);
                                } else {
                                    for (d, &v) in d.iter_mut().zip(src.iter().step_by(g.dw)) {
                                        *d = v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    patches
}

/// The `ow` windows of `KW` consecutive values of the widened row `xw` (window `ox` from
/// `ox·sw`) into `rows[ox·k + t0..]`.
#[inline(always)]
fn windows<const KW: usize, L: Copy>(
    xw: &[L],
    sw: usize,
    ow: usize,
    k: usize,
    t0: usize,
    rows: &mut [L],
) {
    for ox in 0..ow {
        let src: &[L; KW] = xw[ox * sw..ox * sw + KW].try_into().expect("KW values");
        let dst: &mut [L; KW] = (&mut rows[ox * k + t0..ox * k + t0 + KW])
            .try_into()
            .expect("KW values");
        *dst = *src;
    }
}

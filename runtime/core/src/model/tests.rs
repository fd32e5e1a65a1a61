//! `Model::parse` on hand-edited copies of a real int8 model (the firmware's digits MLP,
//! checked current by the firmware test): each edit keeps the checksum valid, so only the
//! check under test can refuse it. The 32-bit cases used to wrap (or panic with overflow
//! checks) on a 32-bit device while a 64-bit host refused the same bytes.

use super::*;
use crate::format::{file_crc, hdr, opr, tns, OP_BYTES, QUANT_AXIS, QUANT_TENSOR, TENSOR_BYTES};
use crate::Aligned;

const DIGITS: &[u8] = include_bytes!("../../../../targets/mcu/assets/digits.cairn");

/// An aligned, editable copy of the digits model.
struct File(Aligned<[u8; DIGITS.len()]>);

impl File {
    fn new() -> File {
        let mut a = [0u8; DIGITS.len()];
        a.copy_from_slice(DIGITS);
        File(Aligned(a))
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.0 .0
    }
    fn u32(&self, at: usize) -> u32 {
        u32_at(&self.0 .0, at)
    }
    fn put_u32(&mut self, at: usize, v: u32) {
        self.bytes()[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// Byte offset of tensor `t`'s record.
    fn tensor(&self, t: usize) -> usize {
        self.u32(hdr::TENSORS_OFF) as usize + t * TENSOR_BYTES
    }
    fn op(&self, i: usize) -> usize {
        self.u32(hdr::OPS_OFF) as usize + i * OP_BYTES
    }
    /// The first tensor whose dtype and quantization kind are these and whose last
    /// dimension is a multiple of 4.
    fn find(&self, dtype: DType, quant: u8) -> usize {
        let n = u16_at(&self.0 .0, hdr::N_TENSORS) as usize;
        (0..n)
            .find(|&t| {
                let r = self.tensor(t);
                let last = self.last_dim(t);
                self.0 .0[r + tns::DTYPE] == dtype as u8
                    && self.0 .0[r + tns::QUANT] == quant
                    && self.u32(last).is_multiple_of(4)
            })
            .expect("the digits model has such a tensor")
    }
    /// Byte offset of tensor `t`'s last dimension.
    fn last_dim(&self, t: usize) -> usize {
        let r = self.tensor(t);
        r + tns::DIMS + 4 * (self.0 .0[r + tns::RANK] as usize).saturating_sub(1)
    }
    /// Parse after fixing the checksum.
    fn parse(&mut self) -> Result<(), LoadError> {
        let crc = file_crc(self.bytes());
        self.put_u32(hdr::CRC, crc);
        Model::parse(&self.0 .0).map(|_| ())
    }
}

#[test]
fn the_unedited_model_loads() {
    assert_eq!(File::new().parse(), Ok(()));
}

/// Zero points up to ±2²⁴ used to load; `(x − zx)·w` then overflowed i32 in the kernels and
/// the fast paths padded with `zx as i8`, which no longer matched the reference.
#[test]
fn zero_points_outside_the_dtype_range_are_refused() {
    let t = File::new().find(DType::I8, QUANT_TENSOR);
    let at = File::new().tensor(t) + tns::ZERO;
    let tensor = Err(LoadError::Tensor { index: t as u16 });
    for z in [128, 200, -129, 255, 1 << 20, -(1 << 23)] {
        let mut f = File::new();
        f.put_u32(at, z as u32);
        assert_eq!(f.parse(), tensor, "int8 zero point {z}");
    }
    for z in [-128, 127, 0] {
        let mut f = File::new();
        f.put_u32(at, z as u32);
        assert_eq!(f.parse(), Ok(()), "int8 zero point {z}");
    }
    // The same record as uint8 (0..=255) and int32 (only 0). Another dtype breaks the ops
    // around the tensor, so in range means "not refused as a tensor".
    for (dtype, z, ok) in [
        (DType::U8, -1, false),
        (DType::U8, 256, false),
        (DType::U8, 255, true),
        (DType::U8, 0, true),
        (DType::I32, 1, false),
        (DType::I32, -1, false),
        (DType::I32, 0, true),
    ] {
        let mut f = File::new();
        let r = f.tensor(t);
        f.bytes()[r + tns::DTYPE] = dtype as u8;
        // The same bytes as fewer, wider elements: `bytes = numel × size` stays true.
        let last = f.last_dim(t);
        f.put_u32(last, f.u32(last) / dtype.size_bytes() as u32);
        f.put_u32(at, z as u32);
        assert_eq!(f.parse() == tensor, !ok, "{dtype:?} zero point {z}");
    }
}

/// Per-axis zero points are bounded the same way (a weight's must also be 0, an op check).
#[test]
fn per_axis_zero_points_outside_the_range_are_refused_as_tensors() {
    let mut f = File::new();
    let t = f.find(DType::I8, QUANT_AXIS);
    let r = f.tensor(t);
    let zeros = (f.u32(hdr::BLOB_OFF) + f.u32(r + tns::ZERO)) as usize;
    f.put_u32(zeros, 300);
    assert_eq!(f.parse(), Err(LoadError::Tensor { index: t as u16 }));
}

/// A per-axis tensor with 2³⁰ + 1 channels: `4 · n` bytes of scales wrapped to 4 on 32 bits
/// (and panicked with overflow checks).
#[test]
fn per_axis_channel_count_that_wraps_on_32_bits_is_refused() {
    let mut f = File::new();
    let t = f.find(DType::I8, QUANT_AXIS);
    let r = f.tensor(t);
    let n = 0x4000_0001u32;
    f.bytes()[r + tns::RANK] = 1;
    f.bytes()[r + tns::AXIS] = 0;
    f.bytes()[r + tns::STORAGE] = format::STORAGE_ARENA;
    f.put_u32(r + tns::DIMS, n);
    for k in 1..MAX_RANK {
        f.put_u32(r + tns::DIMS + 4 * k, 0);
    }
    f.put_u32(r + tns::BYTES, n);
    f.put_u32(r + tns::OFFSET, 0);
    f.put_u32(hdr::ARENA_BYTES, 0x4000_0010);
    assert_eq!(f.parse(), Err(LoadError::Tensor { index: t as u16 }));
}

/// Op records' starts are u32s: `2 · start` and `4 · params_start` wrapped on 32 bits, so a
/// start 2³¹ (or 2³⁰) past the real one read the real operands there and loaded, while a
/// 64-bit host refused the file.
#[test]
fn op_starts_that_wrap_on_32_bits_are_refused() {
    let at = File::new().op(0);
    let io = File::new().u32(at + opr::IO_START);
    let ps = File::new().u32(at + opr::PARAMS_START);
    for (field, v, problem) in [
        (opr::IO_START, io + 0x8000_0000, OpProblem::TensorIndex),
        (opr::IO_START, u32::MAX, OpProblem::TensorIndex),
        (opr::PARAMS_START, ps + 0x4000_0000, OpProblem::ParamLen),
        (opr::PARAMS_START, ps + 0xC000_0000, OpProblem::ParamLen),
    ] {
        let mut f = File::new();
        f.put_u32(at + field, v);
        assert_eq!(
            f.parse(),
            Err(LoadError::Op {
                index: 0,
                kind: None,
                problem
            }),
            "field {field} = {v:#x}"
        );
    }
}

/// A bad tensor index is a bug that fails loudly (in debug builds), not a zero-size scalar.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "tensor")]
fn a_tensor_index_the_model_never_gave_panics() {
    let m = Model::parse(crate::include_model!(
        "../../../../targets/mcu/assets/digits.cairn"
    ))
    .unwrap();
    assert!(m.get_tensor(m.n_tensors() as u16).is_none());
    let _ = m.tensor(m.n_tensors() as u16);
}

/// Field readers past the end of their record: a bug, loud in debug builds.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "u32 at")]
fn a_field_read_past_its_record_panics() {
    let _ = u32_at(&[0u8; 6], 3);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "u16 at")]
fn a_u16_read_past_its_record_panics() {
    let _ = u16_at(&[0u8; 6], usize::MAX);
}

/// The accessors read the header's fields and the index.
#[test]
fn accessors_read_the_header_and_index() {
    let f = File::new();
    let b = &f.0 .0;
    let m = Model::parse(b).unwrap();
    assert_eq!(m.bytes().len(), b.len());
    assert_eq!(m.flash_bytes(), b.len());
    assert_eq!(m.n_tensors(), u16_at(b, hdr::N_TENSORS) as usize);
    assert_eq!(m.n_ops(), u16_at(b, hdr::N_OPS) as usize);
    assert_eq!(m.n_inputs(), u16_at(b, hdr::N_INPUTS) as usize);
    assert_eq!(m.n_outputs(), u16_at(b, hdr::N_OUTPUTS) as usize);
    assert_eq!(m.arena_bytes(), u32_at(b, hdr::ARENA_BYTES) as usize);
    assert_eq!(
        m.arena_lower_bound(),
        u32_at(b, hdr::ARENA_LOWER_BOUND) as usize
    );
    assert_eq!(m.blob_bytes(), u32_at(b, hdr::BLOB_LEN) as usize);
    assert!(m.n_ops() > 1 && m.n_tensors() > m.n_ops() && m.blob_bytes() > 0);
    assert!(m.arena_lower_bound() > 0 && m.arena_lower_bound() <= m.arena_bytes());
    let index = u32_at(b, hdr::INDEX_OFF) as usize;
    let (ni, no) = (m.n_inputs(), m.n_outputs());
    for i in 0..ni {
        assert_eq!(m.input_tensor(i), Some(u16_at(b, index + 2 * i)));
    }
    for i in 0..no {
        assert_eq!(m.output_tensor(i), Some(u16_at(b, index + 2 * (ni + i))));
    }
    assert_eq!((m.input_tensor(ni), m.output_tensor(no)), (None, None));
    assert_ne!(m.input_tensor(0), m.output_tensor(0));
    // Every op's kernel is in the set, and the set is the header's.
    let mut set = KernelSet::default();
    for i in 0..m.n_ops() {
        let k = m.kernel_of(i).unwrap();
        assert!(m.kernels().contains(k));
        set.insert(k);
    }
    assert_eq!(set, m.kernels());
    assert!(m.kernel_of(m.n_ops()).is_none() && m.op(m.n_ops()).is_none());
    assert!(m.get_tensor(m.n_tensors() as u16 - 1).is_some());
}

/// One header field at a time, each refused with its own error (the checksum kept valid).
#[test]
fn each_header_field_is_checked() {
    let edit = |at: usize, v: u32| {
        let mut f = File::new();
        f.put_u32(at, v);
        f.parse()
    };
    let edit_u8 = |at: usize, v: u8| {
        let mut f = File::new();
        f.bytes()[at] = v;
        f.parse()
    };
    let edit_u16 = |at: usize, v: u16| {
        let mut f = File::new();
        f.bytes()[at..at + 2].copy_from_slice(&v.to_le_bytes());
        f.parse()
    };
    let f = File::new();
    let len = DIGITS.len() as u32;
    assert_eq!(edit_u8(0, b'X'), Err(LoadError::BadMagic));
    assert_eq!(edit_u8(7, b'X'), Err(LoadError::BadMagic));
    assert_eq!(
        edit_u8(hdr::VERSION, format::VERSION + 1),
        Err(LoadError::UnsupportedVersion {
            found: format::VERSION + 1,
            supported: format::VERSION
        })
    );
    assert_eq!(
        edit(hdr::FILE_BYTES, len + 16),
        Err(LoadError::LengthMismatch {
            stated: len + 16,
            actual: len
        })
    );
    assert_eq!(edit(hdr::FILE_BYTES, len - 1).err().map(|_| ()), Some(()));
    assert_eq!(edit_u8(hdr::FLAGS, 1), Err(LoadError::BadHeader));
    assert_eq!(edit_u16(hdr::HEADER_LEN, 129), Err(LoadError::BadHeader));
    for at in [hdr::RESERVED, format::HEADER_BYTES - 1] {
        assert_eq!(
            edit_u8(at, 1),
            Err(LoadError::BadHeader),
            "reserved byte {at}"
        );
    }
    assert_eq!(
        edit_u16(hdr::N_TENSORS, MAX_TENSORS as u16 + 1),
        Err(LoadError::BadHeader)
    );
    assert_eq!(
        edit_u16(hdr::N_OPS, MAX_OPS as u16 + 1),
        Err(LoadError::BadHeader)
    );
    assert_eq!(edit_u16(hdr::N_OUTPUTS, 0), Err(LoadError::BadHeader));
    let arena = f.u32(hdr::ARENA_BYTES);
    assert_eq!(edit(hdr::ARENA_BYTES, arena + 8), Err(LoadError::BadHeader));
    assert_eq!(
        edit(hdr::ARENA_LOWER_BOUND, arena + 1),
        Err(LoadError::BadHeader)
    );
    // Sections: aligned, after the header, inside the file.
    for (off, align) in [
        (hdr::TENSORS_OFF, 4u32),
        (hdr::OPS_OFF, 4),
        (hdr::INDEX_OFF, 2),
        (hdr::PARAMS_OFF, 4),
        (hdr::BLOB_OFF, 16),
    ] {
        let v = f.u32(off);
        assert_eq!(
            edit(off, v + align / 2),
            Err(LoadError::Section),
            "field {off} misaligned"
        );
        assert_eq!(
            edit(off, 0),
            Err(LoadError::Section),
            "field {off} inside the header"
        );
        assert_eq!(
            edit(off, len),
            Err(LoadError::Section),
            "field {off} at the end"
        );
        assert_eq!(
            edit(off, u32::MAX - 15),
            Err(LoadError::Section),
            "field {off} wraps"
        );
    }
    for at in [hdr::INDEX_LEN, hdr::PARAMS_LEN, hdr::BLOB_LEN] {
        assert_eq!(edit(at, len), Err(LoadError::Section), "length {at}");
    }
    assert_eq!(edit(hdr::INDEX_LEN, u32::MAX), Err(LoadError::Section));
    // An index too short for the graph's inputs and outputs (one entry each) alone.
    let io = (u16_at(DIGITS, hdr::N_INPUTS) + u16_at(DIGITS, hdr::N_OUTPUTS)) as u32;
    assert_eq!(edit(hdr::INDEX_LEN, io - 1), Err(LoadError::Section));
    // A kernel bit the ops do not use.
    let w = f.u32(hdr::KERNELS + 4 * 7);
    assert_eq!(
        edit(hdr::KERNELS + 4 * 7, w ^ 0x8000_0000),
        Err(LoadError::KernelSet)
    );
}

/// Too short for a header, a stale checksum, a start off the 16-byte boundary.
#[test]
fn truncation_checksum_and_alignment() {
    let f = File::new();
    assert_eq!(
        Model::parse(&f.0 .0[..format::HEADER_BYTES - 1]).err(),
        Some(LoadError::Truncated)
    );
    assert_eq!(Model::parse(&[]).err(), Some(LoadError::Truncated));
    // A whole header is long enough to be read: what is wrong then is its file length.
    assert!(matches!(
        Model::parse(&f.0 .0[..format::HEADER_BYTES]).err(),
        Some(LoadError::LengthMismatch { actual, .. }) if actual as usize == format::HEADER_BYTES
    ));
    let mut g = File::new();
    let crc = g.u32(hdr::CRC);
    let last = DIGITS.len() - 1;
    g.bytes()[last] ^= 1;
    let actual = file_crc(g.bytes());
    assert_ne!(crc, actual);
    assert_eq!(
        Model::parse(&g.0 .0).err(),
        Some(LoadError::Checksum {
            stated: crc,
            actual
        })
    );
    let mut shifted: Aligned<[u8; DIGITS.len() + 16]> = Aligned([0; DIGITS.len() + 16]);
    shifted.0[4..4 + DIGITS.len()].copy_from_slice(DIGITS);
    assert_eq!(
        Model::parse(&shifted.0[4..4 + DIGITS.len()]).err(),
        Some(LoadError::Misaligned)
    );
    shifted.0[16..].copy_from_slice(DIGITS);
    assert!(Model::parse(&shifted.0[16..]).is_ok());
}

/// Scales must be finite and above zero (tested on their bits).
#[test]
fn scales_are_finite_and_positive() {
    let t = File::new().find(DType::I8, QUANT_TENSOR);
    let at = File::new().tensor(t) + tns::SCALE;
    for (s, ok) in [
        (1.0f32, true),
        (f32::MIN_POSITIVE, true),
        (f32::from_bits(1), true),
        (f32::MAX, true),
        (0.0, false),
        (-0.0, false),
        (-1.0, false),
        (f32::INFINITY, false),
        (f32::NAN, false),
        (-f32::from_bits(1), false),
    ] {
        let mut f = File::new();
        f.put_u32(at, s.to_bits());
        let want = if ok {
            Ok(())
        } else {
            Err(LoadError::Tensor { index: t as u16 })
        };
        assert_eq!(f.parse(), want, "scale {s:e}");
    }
}

/// The sweep that checks a plan on hosts against the pairwise check devices run: the same
/// verdict on random graphs (negations that may run in place, additions of earlier
/// tensors, so lifetimes cross) whose arena tensors are moved to random offsets and
/// whose lives are stretched, and a
/// named pair that truly overlaps. `CAIRN_SEED` repeats a run; the seed is printed on
/// failure.
#[cfg(feature = "alloc")]
#[test]
fn plan_sweep_agrees_with_every_pair() {
    use crate::emit::{ModelBuilder, OpSpec, QuantSpec, TensorSpec};
    use alloc::vec;
    extern crate std;
    let seed: u64 = std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0047);
    let mut state = seed | 1;
    let mut rnd = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let act = |n: usize| TensorSpec {
        dtype: DType::F32,
        shape: Shape::new(&[n]).unwrap(),
        quant: QuantSpec::None,
        data: None,
        layout: crate::Layout::Plain,
    };
    let (mut agree_ok, mut agree_err) = (0, 0);
    for case in 0..400 {
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(act(4));
        b.inputs = vec![x];
        let mut made = vec![x];
        for _ in 0..2 + rnd(14) {
            let y = b.add_tensor(act(4));
            let a = made[rnd(made.len())];
            let (kind, inputs, params) = if rnd(2) == 0 {
                (OpKind::Unary, vec![Some(a)], vec![12, 0, 0])
            } else {
                let c = made[rnd(made.len())];
                (OpKind::Add, vec![Some(a), Some(c)], vec![0, 0])
            };
            b.ops.push(OpSpec {
                kind,
                inputs,
                outputs: vec![y],
                params,
            });
            made.push(y);
        }
        b.outputs = vec![*made.last().unwrap()];
        let mut f = b.finish().expect("builds");
        let table = u32_at(&f, hdr::TENSORS_OFF) as usize;
        let n = made.len();
        for _ in 0..1 + rnd(3) {
            let r = table + made[rnd(n)] as usize * TENSOR_BYTES + tns::OFFSET;
            let at = (rnd(4) * ALIGN) as u32;
            f[r..r + 4].copy_from_slice(&at.to_le_bytes());
        }
        // A stretched life: a tensor kept past its last read, as a hostile file may say.
        if rnd(2) == 0 {
            let r = table + made[rnd(n)] as usize * TENSOR_BYTES + tns::LAST_TIME;
            let last = u16_at(&f, r) as usize;
            let to = (last + rnd(4)).min(b.ops.len() + 1) as u16;
            f[r..r + 2].copy_from_slice(&to.to_le_bytes());
        }
        let arena = (0..n)
            .map(|t| {
                let r = table + t * TENSOR_BYTES;
                u32_at(&f, r + tns::OFFSET) + u32_at(&f, r + tns::BYTES)
            })
            .fold(u32_at(&f, hdr::ARENA_BYTES), u32::max);
        f[hdr::ARENA_BYTES..hdr::ARENA_BYTES + 4].copy_from_slice(&arena.to_le_bytes());
        let crc = file_crc(&f);
        f[hdr::CRC..hdr::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        let owned = crate::emit::AlignedBytes::from_slice(&f);
        let m =
            Model::parse_header(owned.as_slice()).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        let fine = (0..m.n_tensors).all(|i| m.check_tensor(i).is_ok())
            && m.check_io().is_ok()
            && (0..m.n_ops).all(|i| m.check_op::<{ crate::op::ALL_KINDS }>(i).is_ok())
            && m.check_lifetimes().is_ok();
        if !fine {
            continue;
        }
        let (sweep, pairs) = (m.check_plan_sweep(), m.check_plan_pairs());
        assert_eq!(
            sweep.is_ok(),
            pairs.is_ok(),
            "seed {seed} case {case}: sweep {sweep:?}, pairs {pairs:?}"
        );
        if let Err(LoadError::PlanOverlap { a, b }) = sweep {
            let (sa, sb) = (m.arena_span(a).unwrap(), m.arena_span(b).unwrap());
            let mem = sa.0 < sb.0 + sb.1 && sb.0 < sa.0 + sa.1;
            let time = sa.2 <= sb.3 && sb.2 <= sa.3;
            assert!(
                mem && time,
                "seed {seed} case {case}: {a} and {b} do not overlap"
            );
            agree_err += 1;
        } else {
            agree_ok += 1;
        }
    }
    // Both verdicts occur, or the test would compare nothing.
    assert!(
        agree_ok > 20 && agree_err > 20,
        "seed {seed}: {agree_ok} fine, {agree_err} overlapping"
    );
}

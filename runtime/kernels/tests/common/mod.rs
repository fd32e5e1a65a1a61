//! What the exactness tests share: a seeded generator (`CAIRN_SEED`) and running a model
//! on a backend.

use cairn_core::emit::{AlignedBytes, QuantSpec, TensorSpec};
use cairn_core::{Backend, DType, Interpreter, Model, Shape};

// Here rather than in the tests crate so it also runs on aarch64 (under qemu-aarch64), where
// the CPU backend takes its portable paths.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    pub fn i8(&mut self) -> i8 {
        self.next() as i8
    }
    pub fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (self.next() >> 40) as f32 / (1u64 << 24) as f32 * (hi - lo)
    }
}

pub fn seed() -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C0DE)
}

pub fn run<B: Backend>(bytes: &[u8], backend: B, input: &[u8]) -> Vec<u8> {
    let ab = AlignedBytes::from_slice(bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it = Interpreter::new(m, backend, &mut arena).unwrap();
    it.input_bytes_mut(0).unwrap().copy_from_slice(input);
    it.invoke().unwrap();
    // Every output, concatenated.
    (0..m.n_outputs())
        .flat_map(|k| it.output(k).unwrap().data.to_vec())
        .collect()
}

/// A tensor of a test model: constant when `data` is given.
#[allow(dead_code)] // not every test file builds tensors this way
pub fn tensor(dt: DType, dims: &[usize], quant: QuantSpec, data: Option<Vec<u8>>) -> TensorSpec {
    TensorSpec {
        dtype: dt,
        shape: Shape::new(dims).unwrap(),
        quant,
        data,
        layout: Default::default(),
    }
}

/// One convolution's geometry: batch, channels, plane, output channels, kernel, stride,
/// pads (top, left, bottom, right), dilation and groups.
#[allow(dead_code)] // not every test file builds convolutions
#[derive(Debug)]
pub struct ConvCase {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oc: usize,
    pub k: (usize, usize),
    pub stride: (usize, usize),
    pub pad: [usize; 4],
    pub dil: (usize, usize),
    pub group: usize,
}

/// A conv op's params for `cs` with `group` groups; activation bounds left at 0 for the
/// caller to set.
#[allow(dead_code)]
pub fn conv_params(cs: &ConvCase, group: usize) -> Vec<i32> {
    use cairn_core::op::conv;
    let mut p = vec![0i32; conv::LEN];
    p[conv::SH] = cs.stride.0 as i32;
    p[conv::SW] = cs.stride.1 as i32;
    p[conv::PT] = cs.pad[0] as i32;
    p[conv::PL] = cs.pad[1] as i32;
    p[conv::PB] = cs.pad[2] as i32;
    p[conv::PR] = cs.pad[3] as i32;
    p[conv::DH] = cs.dil.0 as i32;
    p[conv::DW] = cs.dil.1 as i32;
    p[conv::GROUP] = group as i32;
    p
}

//! int8 Concat whose parts' scales differ from the output's: each byte is requantized as
//! the reference's formula says (dequantize with the part's params, quantize with the
//! output's), checked against that formula element by element, with runs short (per
//! element), long (a 256-entry table, on AVX2 hosts the vector table kernel) and short in
//! parts of over 256 bytes (the table a byte at a time), on random shapes and axes
//! (seeded: `CAIRN_SEED`, printed on failure).

mod common;

use cairn_core::emit::AlignedBytes;
use cairn_core::emit::{ModelBuilder, OpSpec, QuantSpec};
use cairn_core::quant::quantize_f32;
use cairn_core::{Backend, Interpreter, Model};
use cairn_core::{DType, OpKind};
use cairn_kernels::{CpuBackend, RefBackend};
use common::{seed, tensor, Rng};

/// The model's output with input `k` set to `inputs[k]`.
fn run<B: Backend>(bytes: &[u8], backend: B, inputs: &[Vec<u8>]) -> Vec<u8> {
    let ab = AlignedBytes::from_slice(bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it = Interpreter::new(m, backend, &mut arena).unwrap();
    for (k, x) in inputs.iter().enumerate() {
        it.input_bytes_mut(k).unwrap().copy_from_slice(x);
    }
    it.invoke().unwrap();
    it.output(0).unwrap().data.to_vec()
}

#[test]
fn int8_concat_requantizes_each_part_exactly() {
    let seed = seed() ^ 0xC0CA7;
    let mut r = Rng(seed);
    for case in 0..60 {
        let rank = r.range(1, 4);
        let mut dims: Vec<usize> = (0..rank).map(|_| r.range(1, 6)).collect();
        // Half the cases have a long last dim, so runs pass the 256 bytes of the table path.
        if case % 2 == 0 {
            dims[rank - 1] = r.range(257, 1500);
        }
        let mut axis = r.range(0, rank - 1);
        // Every fourth case: many short runs (a channel-last concat: parts of a few values
        // a position, hundreds of positions), past the table's 256 bytes a part.
        if case % 4 == 1 && rank >= 2 {
            dims[0] = r.range(100, 300);
            axis = rank - 1;
        }
        let parts = r.range(2, 4);
        let lens: Vec<usize> = (0..parts).map(|_| r.range(1, 4)).collect();
        let params: Vec<(f32, i32)> = (0..=parts)
            .map(|_| (r.f(0.005, 0.2), r.range(0, 255) as i32 - 128))
            .collect();
        let (oq, pq) = (params[parts], &params[..parts]);
        let mut b = ModelBuilder::default();
        let mut ins = Vec::new();
        let mut shapes = Vec::new();
        for (k, &len) in lens.iter().enumerate() {
            let mut d = dims.clone();
            d[axis] = len;
            let q = QuantSpec::PerTensor {
                scale: pq[k].0,
                zero_point: pq[k].1,
            };
            ins.push(b.add_tensor(tensor(DType::I8, &d, q, None)));
            shapes.push(d);
        }
        let mut od = dims.clone();
        od[axis] = lens.iter().sum();
        let q = QuantSpec::PerTensor {
            scale: oq.0,
            zero_point: oq.1,
        };
        let y = b.add_tensor(tensor(DType::I8, &od, q, None));
        b.ops.push(OpSpec {
            kind: OpKind::Concat,
            inputs: ins.iter().map(|&t| Some(t)).collect(),
            outputs: vec![y],
            params: vec![axis as i32],
        });
        b.inputs = ins.clone();
        b.outputs = vec![y];
        let model = b.finish().expect("a valid Concat");
        let data: Vec<Vec<u8>> = shapes
            .iter()
            .map(|s| {
                (0..s.iter().product::<usize>())
                    .map(|_| r.i8() as u8)
                    .collect()
            })
            .collect();
        // The expected bytes, from the formula.
        let inner: usize = dims[axis + 1..].iter().product();
        let outer: usize = dims[..axis].iter().product();
        let mut want = Vec::new();
        for o in 0..outer {
            for (k, d) in data.iter().enumerate() {
                let run_len = lens[k] * inner;
                for &v in &d[o * run_len..(o + 1) * run_len] {
                    let real = ((v as i8) as i32 - pq[k].1) as f32 * pq[k].0;
                    want.push(quantize_f32(real, oq.0, oq.1, -128, 127) as i8 as u8);
                }
            }
        }
        let what = format!("CAIRN_SEED={seed} case {case}: {dims:?} axis {axis} parts {lens:?}");
        for (name, got) in [
            ("cpu", run(&model, CpuBackend, &data)),
            ("reference", run(&model, RefBackend, &data)),
        ] {
            assert_eq!(got.len(), want.len(), "{name}: {what}");
            if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
                panic!("{name}: byte {i} is {} not {}: {what}", got[i], want[i]);
            }
        }
    }
}

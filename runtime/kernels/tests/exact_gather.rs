//! Gather of one element per index (the axis is the innermost non-unit dim) against an
//! independent gather written here: 1-byte (int8) and 4-byte (f32, i32) elements, index
//! lists of many lengths, negative indices, indices at the last elements, outer blocks, and an index outside its axis (the same typed error, nothing else).

mod common;

use cairn_core::emit::{AlignedBytes, ModelBuilder, OpSpec, QuantSpec};
use cairn_core::{Backend, DType, Interpreter, Model, OpKind, RunError};
use cairn_kernels::paths::{taken, Path};
use cairn_kernels::{CpuBackend, RefBackend};
use common::{seed, tensor, Rng};

/// A Gather of `x` (`dims`, `dt`) along `axis` by run-time indices `[len]`.
fn model(dt: DType, dims: &[usize], axis: usize, len: usize) -> Vec<u8> {
    let q = match dt {
        DType::I8 => QuantSpec::PerTensor {
            scale: 0.05,
            zero_point: -3,
        },
        _ => QuantSpec::None,
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(tensor(dt, dims, q.clone(), None));
    let ids = b.add_tensor(tensor(DType::I32, &[len], QuantSpec::None, None));
    let mut ydims = dims[..axis].to_vec();
    ydims.push(len);
    ydims.extend_from_slice(&dims[axis + 1..]);
    let y = b.add_tensor(tensor(dt, &ydims, q, None));
    b.ops.push(OpSpec {
        kind: OpKind::Gather,
        inputs: vec![Some(x), Some(ids)],
        outputs: vec![y],
        params: vec![axis as i32, 0],
    });
    b.inputs = vec![x, ids];
    b.outputs = vec![y];
    b.finish().unwrap()
}

fn run<B: Backend>(bytes: &[u8], backend: B, x: &[u8], ids: &[i32]) -> Result<Vec<u8>, RunError> {
    let ab = AlignedBytes::from_slice(bytes);
    let m = Model::parse(ab.as_slice()).unwrap();
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    let mut it = Interpreter::new(m, backend, &mut arena).unwrap();
    it.input_bytes_mut(0).unwrap().copy_from_slice(x);
    let idb: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    it.input_bytes_mut(1).unwrap().copy_from_slice(&idb);
    it.invoke()?;
    Ok(it.output(0).unwrap().data.to_vec())
}

#[test]
fn element_gather_matches_reference() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x6A7);
    for case in 0..300 {
        let dt = [DType::I8, DType::F32, DType::I32][case % 3];
        let size = if dt == DType::I8 { 1 } else { 4 };
        // [outer, n] or [outer, n, 1] (the axis innermost but for a unit dim).
        let (outer, n) = (r.range(1, 3), r.range(1, 70));
        let dims: Vec<usize> = if r.range(0, 1) == 0 {
            vec![outer, n]
        } else {
            vec![outer, n, 1]
        };
        let len = r.range(0, 40);
        let mut ids: Vec<i32> = (0..len)
            .map(|_| match r.range(0, 4) {
                // The last elements (the bytes the four-byte loads must not pass).
                0 => (n - 1 - r.range(0, 3.min(n - 1))) as i32,
                1 => -(r.range(1, n) as i32),
                _ => r.range(0, n - 1) as i32,
            })
            .collect();
        let bad = case % 10 == 9 && len > 0;
        if bad {
            let at = r.range(0, len - 1);
            ids[at] = if r.range(0, 1) == 0 {
                n as i32
            } else {
                -(n as i32) - 1
            };
        }
        let x: Vec<u8> = (0..outer * n * size).map(|_| r.next() as u8).collect();
        let bytes = model(dt, &dims, 1, len);
        let want = run(&bytes, RefBackend, &x, &ids);
        let got = run(&bytes, CpuBackend, &x, &ids);
        let what = format!("CAIRN_SEED={seed} case {case}: {dt:?} {dims:?} ids {ids:?}");
        match (&want, &got) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
            (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{what}"),
            _ => panic!("{what}: reference {want:?}, cpu {got:?}"),
        }
        assert_eq!(bad, want.is_err(), "{what}");
        if let Ok(y) = want {
            // y[o][j] = x[o][idx[j] (mod n)], element by element.
            let expect: Vec<u8> = (0..outer)
                .flat_map(|o| {
                    let x = &x;
                    ids.iter().flat_map(move |&v| {
                        let k = (v + if v < 0 { n as i32 } else { 0 }) as usize;
                        x[(o * n + k) * size..(o * n + k + 1) * size].to_vec()
                    })
                })
                .collect();
            assert_eq!(y, expect, "{what}");
        }
    }
}

/// Gathers by constant indices with a weight cache active (a `HostModel` run): the index
/// lists whose runs average four or more take the run copies (asserted), shorter runs and
/// an index outside its axis the reference; every result equals the reference's, twice (the second run on the
/// cached runs). Runs up and down, negative indices, several elements per index (an axis
/// that is not innermost), outer blocks.
#[test]
fn constant_index_runs_match_reference() {
    let seed = seed();
    let mut r = Rng(seed ^ 0x6A8);
    let before = taken(Path::GatherRuns);
    let mut fast = 0;
    for case in 0..120 {
        let dt = [DType::I8, DType::F32][case % 2];
        let size = if dt == DType::I8 { 1 } else { 4 };
        let (outer, n, inner) = (r.range(1, 3), r.range(2, 300), r.range(1, 3));
        let dims = [outer, n, inner];
        // Runs of consecutive indices from random starts (some written negative), or
        // (every fifth case) single random indices.
        let short = case % 5 == 4;
        let mut ids = Vec::new();
        while ids.len() < 64 + r.range(0, 200) {
            let start = r.range(0, n - 1);
            let len = if short {
                1
            } else {
                r.range(1, 40).min(n - start)
            };
            for k in start..start + len {
                let neg = r.range(0, 5) == 0;
                ids.push(if neg { k as i32 - n as i32 } else { k as i32 });
            }
        }
        let bad = case % 7 == 6;
        if bad {
            let at = r.range(0, ids.len() - 1);
            ids[at] = if r.range(0, 1) == 0 {
                n as i32
            } else {
                -(n as i32) - 1
            };
        }
        // The run copies are kept where the runs average four indices or more.
        let resolved: Vec<i64> = ids
            .iter()
            .map(|&v| v as i64 + if v < 0 { n as i64 } else { 0 })
            .collect();
        let runs = 1 + resolved.windows(2).filter(|w| w[1] != w[0] + 1).count();
        let long = runs * 4 <= ids.len();
        let q = match dt {
            DType::I8 => QuantSpec::PerTensor {
                scale: 0.05,
                zero_point: 4,
            },
            _ => QuantSpec::None,
        };
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(tensor(dt, &dims, q.clone(), None));
        let idb: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        let it = b.add_tensor(tensor(DType::I32, &[ids.len()], QuantSpec::None, Some(idb)));
        let y = b.add_tensor(tensor(dt, &[outer, ids.len(), inner], q, None));
        b.ops.push(OpSpec {
            kind: OpKind::Gather,
            inputs: vec![Some(x), Some(it)],
            outputs: vec![y],
            params: vec![1, 0],
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        let bytes = b.finish().unwrap();
        let xin: Vec<u8> = (0..outer * n * inner * size)
            .map(|_| r.next() as u8)
            .collect();
        let what = format!(
            "CAIRN_SEED={seed} case {case}: {dt:?} {dims:?} {} ids",
            ids.len()
        );
        let ab = AlignedBytes::from_slice(&bytes);
        let m = Model::parse(ab.as_slice()).unwrap();
        let mut cache = cairn_kernels::prepack::PackCache::for_model(ab.as_slice());
        let want = {
            let mut arena = vec![0u8; m.arena_bytes() + 16];
            let mut it = Interpreter::new(m, RefBackend, &mut arena).unwrap();
            it.input_bytes_mut(0).unwrap().copy_from_slice(&xin);
            it.invoke().map(|()| it.output(0).unwrap().data.to_vec())
        };
        assert_eq!(bad, want.is_err(), "{what}");
        for pass in 0..2 {
            let runs0 = taken(Path::GatherRuns);
            let got = cairn_kernels::prepack::with_cache(&mut cache, || {
                let mut arena = vec![0u8; m.arena_bytes() + 16];
                let mut it = Interpreter::new(m, CpuBackend, &mut arena).unwrap();
                it.input_bytes_mut(0).unwrap().copy_from_slice(&xin);
                it.invoke().map(|()| it.output(0).unwrap().data.to_vec())
            });
            let ran = taken(Path::GatherRuns) > runs0;
            match (&want, &got) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}, pass {pass}"),
                (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{what}"),
                _ => panic!("{what}: reference {want:?}, cpu {got:?}"),
            }
            assert_eq!(ran, !bad && long, "{what}, pass {pass}: runs taken {ran}");
            fast += ran as usize;
        }
    }
    assert!(fast > 0 && taken(Path::GatherRuns) > before);
}

//! The writer's plan (lifetimes, in-place sharing, packing, limits), the interpreter's
//! split of the arena into each op's views, and the partitioner's segments, on small f32
//! graphs run by a recording backend (so core's own logic is tested without the kernels
//! crate: the backend adds, negates and copies in plain Rust).
#![cfg(feature = "std")]

use cairn_core::emit::{AlignedBytes, BuildError, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::model::{OpEntry, Storage, TensorDesc, MAX_OPS, MAX_TENSORS};
use cairn_core::partition::{
    segment_inputs, segment_outputs, transfer_bytes, OpSupport, Partition, PartitionError,
    Placement, Policy, Segment, MAX_SEGMENTS,
};
use cairn_core::{
    Backend, DType, ExecError, Interpreter, KernelId, Layout, LoadError, Model, OpCall, OpKind,
    Params, RunError, Shape, TensorMut,
};

const NEG: i32 = 12;

fn f32_act(dims: &[usize]) -> TensorSpec {
    TensorSpec {
        dtype: DType::F32,
        shape: Shape::new(dims).unwrap(),
        quant: QuantSpec::None,
        data: None,
        layout: Layout::Plain,
    }
}

fn f32_const(vals: &[f32]) -> TensorSpec {
    TensorSpec {
        data: Some(vals.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..f32_act(&[vals.len()])
    }
}

fn unary(b: &mut ModelBuilder, x: u16, dims: &[usize]) -> u16 {
    let y = b.add_tensor(f32_act(dims));
    b.ops.push(OpSpec {
        kind: OpKind::Unary,
        inputs: vec![Some(x)],
        outputs: vec![y],
        params: vec![NEG, 0, 0],
    });
    y
}

fn add(b: &mut ModelBuilder, x: u16, c: u16, dims: &[usize]) -> u16 {
    let y = b.add_tensor(f32_act(dims));
    b.ops.push(OpSpec {
        kind: OpKind::Add,
        inputs: vec![Some(x), Some(c)],
        outputs: vec![y],
        params: vec![0, 0],
    });
    y
}

/// `n` negations of a 4-float input, one after another: tensor i is op i's input.
fn chain(n: usize) -> ModelBuilder {
    let mut b = ModelBuilder::default();
    let mut t = b.add_tensor(f32_act(&[4]));
    b.inputs = vec![t];
    for _ in 0..n {
        t = unary(&mut b, t, &[4]);
    }
    b.outputs = vec![t];
    b
}

fn load(b: &ModelBuilder) -> AlignedBytes {
    AlignedBytes::from_slice(&b.finish().expect("builds"))
}

fn offset(m: &Model<'_>, t: u16) -> usize {
    match m.tensor(t).storage {
        Storage::Arena { offset, .. } => offset,
        Storage::Const(_) => panic!("tensor {t} is a constant"),
    }
}

// ---- the writer --------------------------------------------------------------------

#[test]
fn lifetimes_run_from_the_writing_op_to_the_last_reader() {
    // x → neg → a; (a, c) → add → y; y is the output. a is read by op 1 only, x by op 0.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    let c = b.add_tensor(f32_const(&[1.0, 2.0, 3.0, 4.0]));
    let a = unary(&mut b, x, &[4]);
    let y = add(&mut b, a, c, &[4]);
    let z = unary(&mut b, a, &[4]);
    b.inputs = vec![x];
    b.outputs = vec![y, z];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    let times = |t: u16| (m.tensor(t).def_time, m.tensor(t).last_time);
    assert_eq!(times(x), (0, 1));
    assert_eq!(times(a), (1, 3));
    // Graph outputs live past the last op (time n_ops + 1).
    assert_eq!(times(y), (2, 4));
    assert_eq!(times(z), (3, 4));
    assert!(matches!(m.tensor(c).storage, Storage::Const(_)));
    // x dies where the negation writes a: one buffer.
    assert_eq!(offset(&m, x), offset(&m, a));
    // a is alive while y is written: distinct bytes; it dies where z is negated from it.
    assert_ne!(offset(&m, a), offset(&m, y));
    assert_eq!(offset(&m, a), offset(&m, z));
}

#[test]
fn an_in_place_op_shares_its_dying_input_only() {
    // neg(x) where x dies: one buffer.
    let b = chain(1);
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_eq!(offset(&m, 0), offset(&m, 1));
    assert_eq!(m.arena_bytes(), 16);
    // x is also read later: it must survive, so two buffers.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    let a = unary(&mut b, x, &[4]);
    let y = add(&mut b, a, x, &[4]);
    b.inputs = vec![x];
    b.outputs = vec![y];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_ne!(offset(&m, x), offset(&m, a));
    // A graph output that an in-place op reads must survive too.
    let mut b = chain(1);
    b.outputs = vec![0, 1];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_ne!(offset(&m, 0), offset(&m, 1));
    // Add cannot run in place: its dying input keeps its own bytes.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    let c = b.add_tensor(f32_const(&[0.0; 4]));
    let y = add(&mut b, x, c, &[4]);
    b.inputs = vec![x];
    b.outputs = vec![y];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_ne!(offset(&m, x), offset(&m, y));
    // A Reshape to the same bytes shares; a longer chain shares one buffer all along.
    let bytes = load(&chain(5));
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert!((1..=5).all(|t| offset(&m, t) == offset(&m, 0)));
    assert_eq!(m.arena_bytes(), 16);
}

#[test]
fn the_writer_refuses_what_no_device_could_index() {
    // A chain of n ops has n + 1 tensors: the op bound.
    let b = chain(MAX_OPS);
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_eq!((m.n_tensors(), m.n_ops()), (MAX_OPS + 1, MAX_OPS));
    assert_eq!(chain(MAX_OPS + 1).finish(), Err(BuildError::TooLarge));
    let mut b = chain(1);
    b.ops.resize(MAX_OPS + 1, b.ops[0].clone());
    assert_eq!(b.finish(), Err(BuildError::TooLarge));
    // The tensor bound, twice the ops: each op of a chain adds a constant of its own (an
    // unrolled int8 recurrence's per-step tables), all of them at the bound.
    let adds = |n: usize| {
        let mut b = ModelBuilder::default();
        let mut t = b.add_tensor(f32_act(&[4]));
        b.inputs = vec![t];
        for i in 0..n {
            let c = b.add_tensor(f32_const(&[i as f32; 4]));
            t = add(&mut b, t, c, &[4]);
        }
        b.outputs = vec![t];
        b
    };
    let n = (MAX_TENSORS - 1) / 2;
    let mut b = adds(n);
    b.add_tensor(f32_const(&[0.5; 4]));
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_eq!((m.n_tensors(), m.n_ops()), (MAX_TENSORS, n));
    b.add_tensor(f32_const(&[0.0; 4]));
    assert_eq!(b.finish(), Err(BuildError::TooLarge));
    // A graph the loader refuses is named, not written.
    let mut b = chain(2);
    b.ops.swap(0, 1);
    assert!(matches!(
        b.finish(),
        Err(BuildError::Invalid(LoadError::Op { .. }))
    ));
}

/// A one-group int8 conv with patch `ic·3·3`; tensors x 0, w 1, table 2, y 3.
fn conv_i8(ic: usize) -> ModelBuilder {
    let q = |s: f32| QuantSpec::PerTensor {
        scale: s,
        zero_point: 0,
    };
    let t = |d: DType, dims: &[usize], quant, data| TensorSpec {
        dtype: d,
        shape: Shape::new(dims).unwrap(),
        quant,
        data,
        layout: Layout::Plain,
    };
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(t(DType::I8, &[1, ic, 3, 3], q(0.1), None));
    let w: Vec<u8> = (0..2 * ic * 9).map(|i| (i as i8 - 20) as u8).collect();
    let w = b.add_tensor(t(DType::I8, &[2, ic, 3, 3], q(0.05), Some(w)));
    let rq = b.add_tensor(t(DType::F32, &[2], QuantSpec::None, Some(vec![0; 8])));
    let y = b.add_tensor(t(DType::I8, &[1, 2, 1, 1], q(0.2), None));
    b.ops.push(OpSpec {
        kind: OpKind::Conv,
        inputs: vec![Some(x), Some(w), None, Some(rq)],
        outputs: vec![y],
        params: vec![1, 1, 0, 0, 0, 0, 1, 1, 1, -128, 127],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    b
}

#[test]
fn packing_takes_one_group_int8_convs_up_to_the_patch_bound() {
    // Patch 2·9 = 18.
    let mut b = conv_i8(2);
    assert_eq!(b.pack_conv_weights(17), 0);
    assert_eq!(b.tensors[1].layout, Layout::Plain);
    assert_eq!(b.pack_conv_weights(18), 1);
    assert_eq!(b.tensors[1].layout, Layout::Pairs6);
    // Already packed: left alone.
    assert_eq!(b.pack_conv_weights(18), 0);
    let packed = b.tensors[1].data.clone().unwrap();
    assert_eq!(
        packed.len(),
        cairn_core::layout::Pairs6::of(&b.tensors[1].shape)
            .unwrap()
            .elements()
            .unwrap()
            * 2
    );
    // Every weight survives packing, widened to i16, and the model loads with it.
    let vals: Vec<i16> = packed
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let mut sorted: Vec<i16> = vals.iter().copied().filter(|&v| v != 0).collect();
    sorted.sort();
    let mut want: Vec<i16> = (0..36)
        .map(|i| (i as i8 - 20) as i16)
        .filter(|&v| v != 0)
        .collect();
    want.sort();
    assert_eq!(sorted, want);
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_eq!(m.tensor(1).info.layout, Layout::Pairs6);
    assert_eq!(m.flash_bytes(), bytes.as_slice().len());
    // Weights another op also reads stay plain.
    let mut b = conv_i8(2);
    let mut second = b.ops[0].clone();
    let y2 = b.add_tensor(b.tensors[3].clone());
    second.outputs = vec![y2];
    b.ops.push(second);
    b.outputs.push(y2);
    assert_eq!(b.pack_conv_weights(1 << 20), 0);
    assert!(b.finish().is_ok());
    // f32 convs are never packed.
    let mut b = conv_i8(2);
    b.tensors[0].dtype = DType::F32;
    assert_eq!(b.pack_conv_weights(1 << 20), 0);
}

// ---- the interpreter ---------------------------------------------------------------

/// What the recording backend saw of one call.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    kind: OpKind,
    n_inputs: usize,
    in_place: bool,
    params: Vec<i32>,
}

#[derive(Default)]
struct Recorder {
    calls: Vec<Seen>,
    refuse: Option<OpKind>,
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

impl Backend for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn supports(&self, k: KernelId) -> bool {
        Some(k.kind) != self.refuse
    }
    fn execute(&mut self, call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
        self.calls.push(Seen {
            kind: call.kind,
            n_inputs: call.n_inputs(),
            in_place: call.in_place,
            params: call.params().to_vec(),
        });
        let x = if call.in_place {
            f32s(out.data)
        } else {
            f32s(call.req(0)?.data)
        };
        let y: Vec<f32> = match call.kind {
            OpKind::Unary => x.iter().map(|v| -v).collect(),
            OpKind::Add => {
                let c = f32s(call.req(1)?.data);
                x.iter().zip(&c).map(|(a, b)| a + b).collect()
            }
            _ => return Err(ExecError::Unsupported(call.kernel)),
        };
        for (d, v) in out.data.chunks_exact_mut(4).zip(y) {
            d.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }
}

/// y = -x + c, with -x written in place over x; z = -(-x + c) + (-x).
fn diamond() -> ModelBuilder {
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    let c = b.add_tensor(f32_const(&[10.0, 20.0, 30.0, 40.0]));
    let a = unary(&mut b, x, &[4]);
    let y = add(&mut b, a, c, &[4]);
    let n = unary(&mut b, y, &[4]);
    let z = add(&mut b, n, a, &[4]);
    b.inputs = vec![x];
    b.outputs = vec![y, z];
    b
}

#[test]
fn the_interpreter_hands_each_op_its_views() {
    let bytes = load(&diamond());
    let m = Model::parse(bytes.as_slice()).unwrap();
    let mut arena = AlignedBytes::zeroed(m.arena_bytes() + 16);
    let mut rec = Recorder::default();
    let mut it = Interpreter::new(m, &mut rec, arena.as_mut_slice()).unwrap();
    assert_eq!(it.backend_mut().name(), "recorder");
    assert_eq!(it.arena().len(), m.arena_bytes());
    assert_eq!(it.arena_mut().len(), m.arena_bytes());
    assert_eq!(it.input_bytes_mut(0).unwrap().len(), 16);
    assert_eq!(it.input_bytes_mut(1), Err(RunError::NoSuchTensor));
    assert_eq!(
        it.set_input_f32(0, &[1.0; 3]),
        Err(RunError::WrongInput {
            expected_elems: 4,
            got_elems: 3
        })
    );
    it.set_input_f32(0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    it.invoke().unwrap();
    let out = |i: usize| f32s(it.output(i).unwrap().data);
    assert_eq!(out(0), [9.0, 18.0, 27.0, 36.0]);
    assert_eq!(out(1), [-10.0, -20.0, -30.0, -40.0]);
    assert_eq!(it.output(0).unwrap().info.shape.dims(), &[4]);
    assert!(matches!(it.output(2), Err(RunError::NoSuchTensor)));
    assert_eq!(it.model().n_ops(), 4);
    let seen: Vec<(OpKind, usize, bool)> = rec
        .calls
        .iter()
        .map(|s| (s.kind, s.n_inputs, s.in_place))
        .collect();
    // Op 0 negates x where it lies (x dies there); op 2's input y is an output: a copy.
    assert_eq!(
        seen,
        [
            (OpKind::Unary, 1, true),
            (OpKind::Add, 2, false),
            (OpKind::Unary, 1, false),
            (OpKind::Add, 2, false),
        ]
    );
    assert_eq!(rec.calls[0].params, [NEG, 0, 0]);
    assert_eq!(rec.calls[1].params, [0, 0]);
}

/// `diamond` on x = 1..4 with the tensor table `descs`: both outputs and what each op saw.
fn run_diamond(m: Model<'_>, descs: &[TensorDesc<'_>]) -> (Vec<f32>, Vec<f32>, usize) {
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    let mut rec = Recorder::default();
    let mut it = Interpreter::new(m, &mut rec, arena.as_mut_slice())
        .unwrap()
        .with_tensors(descs);
    it.set_input_f32(0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    it.invoke().unwrap();
    let out = |i: usize| f32s(it.output(i).unwrap().data);
    let (y, z) = (out(0), out(1));
    (y, z, rec.calls.len())
}

#[test]
fn a_tensor_table_stands_in_for_the_records() {
    let bytes = load(&diamond());
    let m = Model::parse(bytes.as_slice()).unwrap();
    let table: Vec<TensorDesc<'_>> = (0..m.n_tensors()).map(|t| m.tensor(t as u16)).collect();
    let plain = run_diamond(m, &[]);
    assert_eq!(plain.0, [9.0, 18.0, 27.0, 36.0]);
    assert_eq!(run_diamond(m, &table), plain);
    // The ops read the table: the constant c changed there changes y = -x + c.
    let ones: Vec<u8> = [1.0f32; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    let c = (0..table.len())
        .find(|&t| matches!(table[t].storage, Storage::Const(_)))
        .expect("a constant");
    let mut changed = table.clone();
    changed[c].storage = Storage::Const(&ones);
    assert_eq!(run_diamond(m, &changed).0, [0.0, -1.0, -2.0, -3.0]);
    // A table of the wrong length is not used.
    assert_eq!(run_diamond(m, &changed[..table.len() - 1]), plain);
}

/// One call as the recorder saw it: kind, inputs, in place, params.
type Call = (OpKind, usize, bool, Vec<i32>);

/// What each op of `diamond` saw (kind, inputs, in place, params) and both outputs, run
/// with the op table `ops` and the tensor table `descs` (either may be empty).
fn diamond_calls(
    m: Model<'_>,
    descs: &[TensorDesc<'_>],
    ops: &[OpEntry],
) -> (Vec<Call>, Vec<f32>, Vec<f32>) {
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    let mut rec = Recorder::default();
    let mut it = Interpreter::new(m, &mut rec, arena.as_mut_slice())
        .unwrap()
        .with_tensors(descs)
        .with_ops(ops);
    it.set_input_f32(0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    it.invoke().unwrap();
    let (y, z) = (
        f32s(it.output(0).unwrap().data),
        f32s(it.output(1).unwrap().data),
    );
    let seen = rec
        .calls
        .iter()
        .map(|s| (s.kind, s.n_inputs, s.in_place, s.params.clone()))
        .collect();
    (seen, y, z)
}

#[test]
fn an_op_table_stands_in_for_the_records() {
    let bytes = load(&diamond());
    let m = Model::parse(bytes.as_slice()).unwrap();
    let descs: Vec<TensorDesc<'_>> = (0..m.n_tensors()).map(|t| m.tensor(t as u16)).collect();
    let ops: Vec<OpEntry> = (0..m.n_ops()).map(|i| m.op_entry(i).unwrap()).collect();
    assert!(m.op_entry(m.n_ops()).is_none());
    let plain = diamond_calls(m, &[], &[]);
    assert_eq!(plain.1, [9.0, 18.0, 27.0, 36.0]);
    // Every combination of the two tables makes the same calls with the same results.
    assert_eq!(diamond_calls(m, &[], &ops), plain);
    assert_eq!(diamond_calls(m, &descs, &[]), plain);
    assert_eq!(diamond_calls(m, &descs, &ops), plain);
    for (i, e) in ops.iter().enumerate() {
        let op = m.op(i).unwrap();
        assert_eq!(
            (e.kind, e.n_inputs(), e.n_outputs()),
            (op.kind, op.n_inputs(), op.n_outputs())
        );
        assert_eq!(e.params(), &op.param_words());
        assert_eq!(e.output(0), op.output(0));
        assert_eq!(e.input(e.n_inputs()), None);
    }
    // The ops read the table: op 3 (z = n + a) told it is a negation makes one call of
    // that kind, and z = -n = y.
    let mut changed = ops.clone();
    changed[3].kind = OpKind::Unary;
    let (seen, y, z) = diamond_calls(m, &descs, &changed);
    assert_eq!((seen[3].0, &z), (OpKind::Unary, &y));
    // A table of the wrong length is not used.
    assert_eq!(diamond_calls(m, &descs, &changed[..3]), plain);
}

#[test]
fn ops_run_one_at_a_time_in_order() {
    let bytes = load(&diamond());
    let m = Model::parse(bytes.as_slice()).unwrap();
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    let mut rec = Recorder::default();
    let mut it = Interpreter::new(m, &mut rec, arena.as_mut_slice()).unwrap();
    it.input_bytes_mut(0)
        .unwrap()
        .copy_from_slice(&[1f32, 1.0, 1.0, 1.0].map(f32::to_le_bytes).concat());
    for i in 0..4 {
        it.invoke_op(i).unwrap();
    }
    assert_eq!(
        f32s(it.output(1).unwrap().data),
        [-10.0, -20.0, -30.0, -40.0]
    );
    assert!(matches!(it.invoke_op(4), Err(RunError::NoSuchTensor)));
}

#[test]
fn a_backend_error_names_the_op() {
    let mut b = diamond();
    b.ops[2].params = vec![1, 0, 0]; // Relu: the recorder still negates, fine.
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    struct Failing;
    impl Backend for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }
        fn supports(&self, _: KernelId) -> bool {
            true
        }
        fn execute(&mut self, call: &OpCall<'_>, _: TensorMut<'_>) -> Result<(), ExecError> {
            match call.kind {
                OpKind::Add => Err(ExecError::DType),
                _ => Ok(()),
            }
        }
    }
    let mut it = Interpreter::new(m, Failing, arena.as_mut_slice()).unwrap();
    assert_eq!(
        it.invoke(),
        Err(RunError::Exec {
            index: 1,
            error: ExecError::DType
        })
    );
}

#[test]
fn loading_checks_kernels_and_arena() {
    let bytes = load(&diamond());
    let m = Model::parse(bytes.as_slice()).unwrap();
    let mut arena = AlignedBytes::zeroed(m.arena_bytes() + 32);
    let mut rec = Recorder {
        refuse: Some(OpKind::Add),
        ..Recorder::default()
    };
    let r = Interpreter::new(m, &mut rec, arena.as_mut_slice()).err();
    assert!(matches!(r, Some(LoadError::MissingKernel(k)) if k.kind == OpKind::Add));
    let mut rec = Recorder::default();
    // One byte short, from an aligned start: refused with the need stated.
    let short = m.arena_bytes() - 1;
    let r = Interpreter::new(m, &mut rec, &mut arena.as_mut_slice()[..short]).err();
    assert_eq!(
        r,
        Some(LoadError::ArenaTooSmall {
            need: (m.arena_bytes() + 15) as u32,
            have: short as u32
        })
    );
    // From an odd start the interpreter skips to the next boundary.
    let buf = &mut arena.as_mut_slice()[1..];
    let len = buf.len();
    let it = Interpreter::new(m, &mut rec, buf).unwrap();
    assert_eq!(it.arena().len(), m.arena_bytes());
    assert!(len >= m.arena_bytes() + 15);
    let exact = &mut arena.as_mut_slice()[1..m.arena_bytes() + 15];
    assert!(Interpreter::new(m, &mut rec, exact).is_err());
}

// ---- the partitioner ---------------------------------------------------------------

/// An accelerator that runs the ops whose bit is set.
struct Mask(u128);

impl OpSupport for Mask {
    fn supports_op(&self, _: &Model<'_>, op: usize) -> bool {
        op < 128 && self.0 >> op & 1 == 1
    }
}

fn segs(p: &Partition) -> Vec<(u16, u16, Placement)> {
    p.segments()
        .iter()
        .map(|s| (s.start, s.end, s.placement))
        .collect()
}

#[test]
fn segments_follow_the_preference_and_merge() {
    let bytes = load(&chain(8));
    let m = Model::parse(bytes.as_slice()).unwrap();
    let cpu = Partition::cpu_only(&m);
    assert_eq!(segs(&cpu), [(0, 8, Placement::Cpu)]);
    assert_eq!(cpu.segments()[0].len(), 8);
    assert_eq!(cpu.segments()[0].ops(), 0..8);
    assert!(!cpu.segments()[0].is_empty());
    assert!(!cpu.uses_accelerator());
    // Ops 0, 1, 4, 5, 6 on the accelerator.
    let a = Mask(0b0111_0011);
    let p = Partition::plan(&m, &[&a], Policy::default()).unwrap();
    use Placement::*;
    assert_eq!(
        segs(&p),
        [(0, 2, Accel(0)), (2, 4, Cpu), (4, 7, Accel(0)), (7, 8, Cpu)]
    );
    assert!(p.uses_accelerator());
    assert_eq!(p.ops_on(Accel(0)), 5);
    assert_eq!(p.ops_on(Cpu), 3);
    assert_eq!(p.ops_on(Accel(1)), 0);
    // Runs shorter than 3 go to the CPU and merge with their neighbours.
    let p = Partition::plan(&m, &[&a], Policy { min_ops: 3 }).unwrap();
    assert_eq!(segs(&p), [(0, 4, Cpu), (4, 7, Accel(0)), (7, 8, Cpu)]);
    let p = Partition::plan(&m, &[&a], Policy { min_ops: 4 }).unwrap();
    assert_eq!(segs(&p), [(0, 8, Cpu)]);
    // The first accelerator that supports an op takes it.
    let b = Mask(0b1111_0000);
    let p = Partition::plan(&m, &[&a, &b], Policy::default()).unwrap();
    assert_eq!(
        segs(&p),
        [
            (0, 2, Accel(0)),
            (2, 4, Cpu),
            (4, 7, Accel(0)),
            (7, 8, Accel(1))
        ]
    );
    let p = Partition::plan(&m, &[&b, &a], Policy::default()).unwrap();
    assert_eq!(segs(&p), [(0, 2, Accel(1)), (2, 4, Cpu), (4, 8, Accel(0))]);
}

#[test]
fn partition_limits() {
    let a = Mask(0);
    let many: Vec<&dyn OpSupport> = vec![&a; 256];
    let bytes = load(&chain(3));
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_eq!(
        Partition::plan(&m, &many, Policy::default()),
        Err(PartitionError::TooManyAccelerators)
    );
    assert!(Partition::plan(&m, &many[..255], Policy::default()).is_ok());
    // 128 ops alternating: 128 segments do not fit in 64.
    let bytes = load(&chain(128));
    let m = Model::parse(bytes.as_slice()).unwrap();
    let alt = Mask(0x5555_5555_5555_5555_5555_5555_5555_5555);
    assert_eq!(
        Partition::plan(&m, &[&alt], Policy::default()),
        Err(PartitionError::TooManySegments)
    );
    // Fitting doubles the minimum run until the plan fits: here every run is one op, so
    // they all land on the CPU.
    let (p, policy) = Partition::plan_fitting(&m, &[&alt], Policy::default()).unwrap();
    assert_eq!(policy.min_ops, 2);
    assert_eq!(segs(&p), [(0, 128, Placement::Cpu)]);
    // Pairs alternating fit at min_ops 1 only if there are at most 64 runs: 128 ops in
    // runs of two make 64 segments.
    let pairs = Mask(0x3333_3333_3333_3333_3333_3333_3333_3333);
    let p = Partition::plan(&m, &[&pairs], Policy::default()).unwrap();
    assert_eq!(p.segments().len(), MAX_SEGMENTS);
    assert_eq!(p.ops_on(Placement::Accel(0)), 64);
    let (p, policy) = Partition::plan_fitting(&m, &[&pairs], Policy::default()).unwrap();
    assert_eq!((policy.min_ops, p.segments().len()), (1, MAX_SEGMENTS));
    // A model without ops has no segments.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    b.inputs = vec![x];
    b.outputs = vec![x];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert!(Partition::cpu_only(&m).segments().is_empty());
    assert!(Partition::plan(&m, &[&alt], Policy::default())
        .unwrap()
        .segments()
        .is_empty());
}

#[test]
fn segment_transfers_are_what_crosses_its_edges() {
    let bytes = load(&diamond());
    let m = Model::parse(bytes.as_slice()).unwrap();
    let seg = |start, end| Segment {
        start,
        end,
        placement: Placement::Accel(0),
    };
    let ins = |s: Segment| segment_inputs(&m, s).collect::<Vec<u16>>();
    let outs = |s: Segment| segment_outputs(&m, s).collect::<Vec<u16>>();
    // Tensors: x 0, c 1 (const), a 2, y 3, n 4, z 5.
    assert_eq!(ins(seg(0, 1)), [0]);
    assert_eq!(outs(seg(0, 1)), [2]);
    // Ops 1..3 read a (and the const c, which never moves); they write y (a graph
    // output) and n (read by op 3).
    assert_eq!(ins(seg(1, 3)), [2]);
    assert_eq!(outs(seg(1, 3)), [3, 4]);
    // Op 1 alone: y is read later by op 2.
    assert_eq!(outs(seg(1, 2)), [3]);
    assert_eq!(ins(seg(3, 4)), [2, 4]);
    assert_eq!(outs(seg(3, 4)), [5]);
    assert_eq!(ins(seg(0, 4)), [0]);
    assert_eq!(outs(seg(0, 4)), [3, 5]);
    assert_eq!(transfer_bytes(&m, seg(3, 4)), (32, 16));
    assert_eq!(transfer_bytes(&m, seg(0, 4)), (16, 32));
    // A segment's size: ops 1..3 are two; ops 2..2 none.
    assert_eq!((seg(1, 3).len(), seg(1, 3).is_empty()), (2, false));
    assert_eq!((seg(2, 2).len(), seg(2, 2).is_empty()), (0, true));
}

// ---- the loader's graph checks, on hand-edited files --------------------------------

/// The bytes of `b` after `edit` (given the file and the offset of each tensor's record),
/// with the arena grown to hold every tensor and the checksum fixed, so only the plan
/// checks can refuse them.
fn patched(
    b: &ModelBuilder,
    edit: impl FnOnce(&mut [u8], &dyn Fn(usize) -> usize),
) -> AlignedBytes {
    use cairn_core::format::{file_crc, hdr, tns, TENSOR_BYTES};
    let mut f = b.finish().unwrap();
    let u32_at = |f: &[u8], at: usize| u32::from_le_bytes(f[at..at + 4].try_into().unwrap());
    let table = u32_at(&f, hdr::TENSORS_OFF) as usize;
    let rec = move |t: usize| table + t * TENSOR_BYTES;
    edit(&mut f, &rec);
    let mut arena = u32_at(&f, hdr::ARENA_BYTES);
    for t in 0..b.tensors.len() {
        if b.tensors[t].data.is_none() {
            arena = arena.max(u32_at(&f, rec(t) + tns::OFFSET) + u32_at(&f, rec(t) + tns::BYTES));
        }
    }
    f[hdr::ARENA_BYTES..hdr::ARENA_BYTES + 4].copy_from_slice(&arena.to_le_bytes());
    let crc = file_crc(&f);
    f[hdr::CRC..hdr::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    AlignedBytes::from_slice(&f)
}

/// `b` with arena tensor `t` moved to `offset`.
fn moved_bytes(b: &ModelBuilder, t: usize, offset: u32) -> AlignedBytes {
    use cairn_core::format::tns;
    patched(b, |f, rec| {
        f[rec(t) + tns::OFFSET..rec(t) + tns::OFFSET + 4].copy_from_slice(&offset.to_le_bytes())
    })
}

fn moved(b: &ModelBuilder, t: usize, offset: u32) -> Result<(), LoadError> {
    Model::parse(moved_bytes(b, t, offset).as_slice()).map(|_| ())
}

/// x + c for x = 1, 2, 3, 4 and c = 10, 20, 30, 40, with x moved to `x_at` (None: where
/// the writer put it).
fn add_with_x_at(x_at: Option<u32>) -> (Vec<f32>, usize, usize) {
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    let c = b.add_tensor(f32_const(&[10.0, 20.0, 30.0, 40.0]));
    let y = add(&mut b, x, c, &[4]);
    b.inputs = vec![x];
    b.outputs = vec![y];
    let bytes = match x_at {
        Some(at) => moved_bytes(&b, x as usize, at),
        None => load(&b),
    };
    let m = Model::parse(bytes.as_slice()).unwrap();
    let (xo, yo) = (offset(&m, x), offset(&m, y));
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    let mut it = Interpreter::new(m, Recorder::default(), arena.as_mut_slice()).unwrap();
    it.set_input_f32(0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    it.invoke().unwrap();
    (f32s(it.output(0).unwrap().data), xo, yo)
}

#[test]
fn inputs_are_read_before_or_after_the_output() {
    let (y, xo, yo) = add_with_x_at(None);
    assert_eq!(y, [11.0, 22.0, 33.0, 44.0]);
    assert!(xo < yo, "the writer puts x first ({xo}, {yo})");
    let (y, xo, yo) = add_with_x_at(Some(48));
    assert_eq!(y, [11.0, 22.0, 33.0, 44.0]);
    assert!(xo > yo + 16, "x after y, with a gap ({xo}, {yo})");
}

fn op_problem(r: Result<(), LoadError>) -> Option<cairn_core::error::OpProblem> {
    match r {
        Err(LoadError::Op { problem, .. }) => Some(problem),
        _ => None,
    }
}

#[test]
fn outputs_overlap_inputs_only_as_the_exact_in_place_case() {
    use cairn_core::error::OpProblem::InPlace;
    // One negation of 8 floats (32 bytes), x at 0, y sharing it.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[8]));
    let y = unary(&mut b, x, &[8]);
    b.inputs = vec![x];
    b.outputs = vec![y];
    assert_eq!(moved(&b, 1, 0), Ok(()));
    assert_eq!(moved(&b, 1, 32), Ok(()), "apart");
    assert_eq!(op_problem(moved(&b, 1, 16)), Some(InPlace), "half over x");
    // An Add may not write over its input at all.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[8]));
    let c = b.add_tensor(f32_const(&[1.0; 8]));
    let y = add(&mut b, x, c, &[8]);
    b.inputs = vec![x];
    b.outputs = vec![y];
    let y_at = moved(&b, y as usize, 64);
    assert_eq!(y_at, Ok(()));
    assert_eq!(op_problem(moved(&b, y as usize, 0)), Some(InPlace));
    assert_eq!(op_problem(moved(&b, y as usize, 16)), Some(InPlace));
}

#[test]
fn two_live_tensors_never_share_bytes() {
    // In the diamond, y (written by op 1, a graph output) is alive while op 2 writes n:
    // n placed over y passes op 2's in-place test (input 0, same bytes) but not the plan
    // check, since y lives on after op 2.
    let b = diamond();
    let bytes = b.finish().unwrap();
    let a = AlignedBytes::from_slice(&bytes);
    let m = Model::parse(a.as_slice()).unwrap();
    let y_at = offset(&m, 3) as u32;
    assert_eq!(
        moved(&b, 4, y_at),
        Err(LoadError::PlanOverlap { a: 3, b: 4 })
    );
    // z over n: n dies at op 3, which writes z, but Add is not an in-place op.
    let n_at = offset(&m, 4) as u32;
    assert_eq!(
        op_problem(moved(&b, 5, n_at)),
        Some(cairn_core::error::OpProblem::InPlace)
    );
}

#[test]
fn only_an_in_place_op_may_reuse_the_bytes_of_its_own_input() {
    use cairn_core::format::tns;
    // x → neg → a, and an input u no op reads. Put a over u and stretch u's life to
    // the negation: a then shares bytes with a tensor alive at its writing op, which is
    // an in-place op, but not with that op's input.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    let u = b.add_tensor(f32_act(&[4]));
    let a = unary(&mut b, x, &[4]);
    b.inputs = vec![x, u];
    b.outputs = vec![a];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    let u_at = offset(&m, u) as u32;
    assert_ne!(u_at, offset(&m, x) as u32);
    let f = patched(&b, |f, rec| {
        let (ra, ru) = (rec(a as usize), rec(u as usize));
        f[ra + tns::OFFSET..ra + tns::OFFSET + 4].copy_from_slice(&u_at.to_le_bytes());
        f[ru + tns::LAST_TIME..ru + tns::LAST_TIME + 2].copy_from_slice(&1u16.to_le_bytes());
    });
    assert_eq!(
        Model::parse(f.as_slice()).map(|_| ()),
        Err(LoadError::PlanOverlap { a: u, b: a })
    );
}

fn split(n_out: usize, dup: bool) -> ModelBuilder {
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[n_out.max(1)]));
    let outs: Vec<u16> = (0..n_out).map(|_| b.add_tensor(f32_act(&[1]))).collect();
    let mut outputs = outs.clone();
    if dup {
        // The last output written twice; its own tensor dropped.
        outputs[n_out - 1] = outputs[n_out - 2];
        b.tensors.pop();
    }
    // Axis 0, then each output's offset along it.
    let mut params = vec![0];
    params.extend((0..n_out as i32).map(|i| i.min(n_out.max(1) as i32 - 1)));
    b.ops.push(OpSpec {
        kind: OpKind::Split,
        inputs: vec![Some(x)],
        outputs: outputs.clone(),
        params,
    });
    b.inputs = vec![x];
    b.outputs = outputs;
    b.outputs.dedup();
    b
}

#[test]
fn an_op_entry_has_no_input_past_the_last() {
    use cairn_core::op::MAX_OP_INPUTS;
    // A Concat of the most inputs an op may have: nothing past them, in the entry or the
    // record (the slot after the last input is the first output's).
    let mut b = ModelBuilder::default();
    let xs: Vec<u16> = (0..MAX_OP_INPUTS)
        .map(|_| b.add_tensor(f32_act(&[1])))
        .collect();
    let y = b.add_tensor(f32_act(&[MAX_OP_INPUTS]));
    b.ops.push(OpSpec {
        kind: OpKind::Concat,
        inputs: xs.iter().map(|&x| Some(x)).collect(),
        outputs: vec![y],
        params: vec![0],
    });
    b.inputs = xs.clone();
    b.outputs = vec![y];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    let (e, op) = (m.op_entry(0).unwrap(), m.op(0).unwrap());
    assert_eq!(e.input(MAX_OP_INPUTS - 1), Some(xs[MAX_OP_INPUTS - 1]));
    assert_eq!(
        (e.input(MAX_OP_INPUTS), op.input(MAX_OP_INPUTS)),
        (None, None)
    );
}

#[test]
fn a_pad_takes_two_words_and_one_per_axis() {
    use cairn_core::error::OpProblem::ParamLen;
    // Pad words: mode, value, one begin per axis (the end is the output's extent).
    let pad = |params: Vec<i32>| {
        let mut b = ModelBuilder::default();
        let x = b.add_tensor(f32_act(&[2, 3]));
        let y = b.add_tensor(f32_act(&[3, 5]));
        b.ops.push(OpSpec {
            kind: OpKind::Pad,
            inputs: vec![Some(x)],
            outputs: vec![y],
            params,
        });
        b.inputs = vec![x];
        b.outputs = vec![y];
        match b.finish() {
            Ok(_) => None,
            Err(BuildError::Invalid(e)) => op_problem(Err(e)),
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(pad(vec![0, 0, 1, 1]), None);
    assert_eq!(pad(vec![0, 0, 1]), Some(ParamLen));
    assert_eq!(pad(vec![0, 0, 1, 1, 0]), Some(ParamLen));
}

#[test]
fn an_op_entry_names_every_output() {
    // A Split into three: the table entry's outputs are the record's, in order.
    let b = split(3, false);
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    let (e, op) = (m.op_entry(0).unwrap(), m.op(0).unwrap());
    assert_eq!(e.n_outputs(), 3);
    for k in 0..3 {
        assert_eq!(e.output(k), op.output(k), "output {k}");
        assert_eq!(e.output(k), b.ops[0].outputs[k], "output {k}");
    }
}

#[test]
fn an_op_writes_at_most_sixteen_distinct_outputs() {
    use cairn_core::error::OpProblem::{Arity, Shape, TensorIndex};
    use cairn_core::op::ShapeError;
    let verdict = |b: &ModelBuilder| match b.finish() {
        Ok(_) => None,
        Err(BuildError::Invalid(e)) => Some(op_problem(Err(e)).unwrap_or_else(|| panic!("{e:?}"))),
        Err(e) => panic!("{e:?}"),
    };
    // (Split's offsets share the op's 14 parameter words with its axis: 13 outputs.)
    assert_eq!(verdict(&split(13, false)), None);
    assert_eq!(verdict(&split(2, false)), None);
    assert_eq!(verdict(&split(17, false)), Some(Arity));
    // Sixteen outputs are within the record's bound: refused by Split's parameter words,
    // not by the arity check.
    assert_eq!(verdict(&split(16, false)), Some(Shape(ShapeError::Param)));
    assert_eq!(verdict(&split(2, true)), Some(TensorIndex));
}

#[test]
fn an_op_call_holds_params_and_inputs_within_bounds() {
    use cairn_core::kernel::Variant;
    use cairn_core::op::MAX_OP_INPUTS;
    let k = KernelId {
        kind: OpKind::Add,
        variant: Variant::F32,
    };
    let words = Params::new(&[7, 1.5f32.to_bits() as i32, -3]);
    let mut call = OpCall::new(OpKind::Add, k, &words, 2);
    assert_eq!(call.params(), [7, 1.5f32.to_bits() as i32, -3]);
    assert_eq!((call.param(0), call.param(2), call.param(3)), (7, -3, 0));
    assert_eq!(call.param_f32(1), 1.5);
    assert_eq!((call.out_index, call.in_place), (2, false));
    assert_eq!(call.n_inputs(), 0);
    assert_eq!(call.req(0).err(), Some(ExecError::MissingInput));
    let data = [0u8; 16];
    let t = cairn_core::TensorRef {
        info: cairn_core::TensorInfo {
            dtype: DType::F32,
            shape: Shape::new(&[4]).unwrap(),
            quant: cairn_core::Quant::None,
            layout: Layout::Plain,
        },
        data: &data,
    };
    call.push_input(Some(&t)).unwrap();
    call.push_input(None).unwrap();
    assert_eq!(call.n_inputs(), 2);
    assert!(call.input(0).is_some() && call.input(1).is_none());
    assert_eq!(call.input(0).unwrap().data.as_ptr(), data.as_ptr());
    assert_eq!(call.req(1).err(), Some(ExecError::MissingInput));
    assert!(call.input(MAX_OP_INPUTS).is_none());
    for _ in 2..MAX_OP_INPUTS {
        call.push_input(Some(&t)).unwrap();
    }
    assert_eq!(call.push_input(Some(&t)), Err(ExecError::Shape));
    assert_eq!(call.n_inputs(), MAX_OP_INPUTS);
    // Parameters past the longest layout are cut, never read out of bounds.
    let long: Vec<i32> = (0..100).collect();
    let words = Params::new(&long);
    let call = OpCall::new(OpKind::Add, k, &words, 0);
    assert_eq!(call.params(), &long[..cairn_core::backend::PARAM_WORDS]);
    assert_eq!(call.param(99), 0);
}

#[test]
fn an_op_writes_only_tensors_stamped_with_its_time() {
    use cairn_core::error::OpProblem::Output;
    use cairn_core::format::tns;
    // x → neg → t1 → neg → t2: stamp t2 as written at time 1 (op 0's).
    let b = chain(2);
    let f = patched(&b, |f, rec| {
        let r = rec(2) + tns::DEF_TIME;
        f[r..r + 2].copy_from_slice(&1u16.to_le_bytes());
    });
    assert_eq!(
        Model::parse(f.as_slice()).map(|_| ()),
        Err(LoadError::Op {
            index: 1,
            kind: Some(OpKind::Unary),
            problem: Output
        })
    );
}

/// a = -x (op 0), y = a + u (op 1), with x and u the graph inputs: the builder (outputs
/// left to the caller) and [x, u, a, y].
fn neg_then_add() -> (ModelBuilder, [u16; 4]) {
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    let u = b.add_tensor(f32_act(&[4]));
    let a = unary(&mut b, x, &[4]);
    let y = add(&mut b, a, u, &[4]);
    b.inputs = vec![x, u];
    (b, [x, u, a, y])
}

/// Where a file's index (graph inputs, then outputs, then the ops' own) starts.
fn index_at(f: &[u8]) -> usize {
    use cairn_core::format::hdr;
    u32::from_le_bytes(f[hdr::INDEX_OFF..hdr::INDEX_OFF + 4].try_into().unwrap()) as usize
}

#[test]
fn an_arena_tensor_is_written_by_the_op_its_time_names() {
    use cairn_core::format::tns;
    // a = -x (op 0); y = a + u (op 1), x and u the graph inputs. Patched: the index's
    // second graph input becomes x, and u is stamped as written at time 1 (op 0's), which
    // writes only a. No op writes u and no op's own check sees it (op 1 reads it after
    // time 1, before its last); only the lifetime check does.
    let (mut b, [x, u, _, y]) = neg_then_add();
    b.outputs = vec![y];
    assert!(b.finish().is_ok());
    let f = patched(&b, |f, rec| {
        let at = index_at(f) + 2;
        f[at..at + 2].copy_from_slice(&x.to_le_bytes());
        let r = rec(u as usize) + tns::DEF_TIME;
        f[r..r + 2].copy_from_slice(&1u16.to_le_bytes());
    });
    assert_eq!(
        Model::parse(f.as_slice()).map(|_| ()),
        Err(LoadError::Tensor { index: u })
    );
}

/// `Model::parse` of `b` with tensor `t`'s record byte `field` set to `v`.
fn with_tensor_byte(b: &ModelBuilder, t: usize, field: usize, v: u8) -> Result<(), LoadError> {
    let f = patched(b, |f, rec| f[rec(t) + field] = v);
    Model::parse(f.as_slice()).map(|_| ())
}

/// `Model::parse` of `b` with tensor `t`'s `(def_time, last_time)` set.
fn with_times(b: &ModelBuilder, t: usize, def: u16, last: u16) -> Result<(), LoadError> {
    use cairn_core::format::tns;
    let f = patched(b, |f, rec| {
        let r = rec(t);
        f[r + tns::DEF_TIME..r + tns::DEF_TIME + 2].copy_from_slice(&def.to_le_bytes());
        f[r + tns::LAST_TIME..r + tns::LAST_TIME + 2].copy_from_slice(&last.to_le_bytes());
    });
    Model::parse(f.as_slice()).map(|_| ())
}

#[test]
fn a_tensor_record_keeps_its_reserved_bytes_zero() {
    use cairn_core::format::tns;
    // x → neg → t1 → neg → t2: each of the two bytes after t1's layout code alone.
    let b = chain(2);
    assert_eq!(with_tensor_byte(&b, 1, tns::LAYOUT + 1, 0), Ok(()));
    for at in [tns::LAYOUT + 1, tns::LAYOUT + 2] {
        assert_eq!(
            with_tensor_byte(&b, 1, at, 1),
            Err(LoadError::Tensor { index: 1 }),
            "byte {at}"
        );
    }
}

#[test]
fn a_tensor_lives_from_its_writer_to_at_most_past_the_last_op() {
    // x → neg → t1 → neg → t2 (two ops): t1 is written at time 1 and read at 2.
    let b = chain(2);
    assert_eq!(with_times(&b, 1, 1, 2), Ok(()));
    // Dying before it is written; living past the end (n + 1 is the graph outputs' mark);
    // written after the last op.
    for (def, last) in [(1, 0), (2, 1), (1, 4), (3, 3)] {
        assert_eq!(
            with_times(&b, 1, def, last),
            Err(LoadError::Tensor { index: 1 }),
            "def {def}, last {last}"
        );
    }
}

#[test]
fn a_graph_input_or_output_is_an_arena_tensor() {
    // y = x + c: the index's graph input entry made the constant c.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    let c = b.add_tensor(f32_const(&[1.0; 4]));
    let y = add(&mut b, x, c, &[4]);
    b.inputs = vec![x];
    b.outputs = vec![y];
    for k in 0..2 {
        let f = patched(&b, |f, _| {
            let at = index_at(f) + 2 * k;
            f[at..at + 2].copy_from_slice(&c.to_le_bytes());
        });
        assert_eq!(
            Model::parse(f.as_slice()).map(|_| ()),
            Err(LoadError::Tensor { index: c }),
            "index entry {k}"
        );
    }
}

#[test]
fn a_rank_past_the_bound_is_refused() {
    use cairn_core::format::tns;
    use cairn_core::shape::MAX_RANK;
    // A negation of a rank-6 tensor (the bound) loads; rank 7 in its record does not.
    let dims = [1usize, 2, 1, 2, 1, 1];
    assert_eq!(dims.len(), MAX_RANK);
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&dims));
    let y = unary(&mut b, x, &dims);
    b.inputs = vec![x];
    b.outputs = vec![y];
    assert!(Model::parse(load(&b).as_slice()).is_ok());
    assert_eq!(
        with_tensor_byte(&b, 1, tns::RANK, MAX_RANK as u8 + 1),
        Err(LoadError::Tensor { index: 1 })
    );
}

#[test]
fn the_index_holds_every_graph_input_and_output() {
    use cairn_core::format::hdr;
    // Two inputs and two outputs: four entries before the ops' own.
    let (mut b, [_, _, a, y]) = neg_then_add();
    b.outputs = vec![a, y];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_eq!((m.n_inputs(), m.n_outputs()), (2, 2));
    let f = patched(&b, |f, _| {
        f[hdr::INDEX_LEN..hdr::INDEX_LEN + 4].copy_from_slice(&3u32.to_le_bytes())
    });
    assert_eq!(
        Model::parse(f.as_slice()).map(|_| ()),
        Err(LoadError::Section)
    );
    // One input and two outputs need three entries (two would do for a product). The
    // length counts entries of two bytes.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[4]));
    let a = unary(&mut b, x, &[4]);
    let y = unary(&mut b, a, &[4]);
    b.inputs = vec![x];
    b.outputs = vec![a, y];
    assert!(b.finish().is_ok());
    let f = patched(&b, |f, _| {
        f[hdr::INDEX_LEN..hdr::INDEX_LEN + 4].copy_from_slice(&2u32.to_le_bytes())
    });
    assert_eq!(
        Model::parse(f.as_slice()).map(|_| ()),
        Err(LoadError::Section)
    );
}

#[test]
fn an_empty_input_overlaps_nothing() {
    // Concat of x (8 floats) and an empty e: e's zero bytes may lie anywhere, even inside
    // the output's.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[8]));
    let e = b.add_tensor(f32_act(&[0]));
    let y = b.add_tensor(f32_act(&[8]));
    b.ops.push(OpSpec {
        kind: OpKind::Concat,
        inputs: vec![Some(x), Some(e)],
        outputs: vec![y],
        params: vec![0],
    });
    b.inputs = vec![x, e];
    b.outputs = vec![y];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    let inside = offset(&m, y) as u32 + 16;
    assert_eq!(moved(&b, e as usize, inside), Ok(()));
    // Nor does an empty output: a Slice of nothing from x, placed inside x.
    let mut b = ModelBuilder::default();
    let x = b.add_tensor(f32_act(&[8]));
    let y = b.add_tensor(f32_act(&[0]));
    b.ops.push(OpSpec {
        kind: OpKind::Slice,
        inputs: vec![Some(x)],
        outputs: vec![y],
        params: vec![3, 3],
    });
    b.inputs = vec![x];
    b.outputs = vec![y];
    let bytes = load(&b);
    let m = Model::parse(bytes.as_slice()).unwrap();
    let inside = offset(&m, x) as u32 + 16;
    assert_eq!(moved(&b, y as usize, inside), Ok(()));
}

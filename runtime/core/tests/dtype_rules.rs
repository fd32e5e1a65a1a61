//! The per-op dtype and quantization rules `Model::parse` checks at load (`model/types.rs`),
//! one condition at a time: each case starts from a one-op model that loads and breaks a
//! single condition, so a rule that stops checking it lets the case load and fails here.
//! The kernels read these guarantees without checking again (an int8 Conv trusts its
//! requantization table to be f32, a Gather its indices to be i32).
#![cfg(feature = "alloc")]

use cairn_core::emit::{AlignedBytes, BuildError, ModelBuilder, OpSpec, QuantSpec, TensorSpec};
use cairn_core::error::OpProblem;
use cairn_core::kernel::{KernelId, Variant};
use cairn_core::layout::pack_pairs6;
use cairn_core::model::kernel_id;
use cairn_core::op::conv;
use cairn_core::{DType, Layout, LoadError, Model, OpKind, Quant, Shape, TensorInfo};
use DType::{F32, I32, I8, U8};
use OpKind::*;

fn s(d: &[usize]) -> Shape {
    Shape::new(d).unwrap()
}

fn pt(scale: f32, zero_point: i32) -> QuantSpec {
    QuantSpec::PerTensor { scale, zero_point }
}

fn per_axis(axis: usize, zero_points: &[i32]) -> QuantSpec {
    QuantSpec::PerAxis {
        axis,
        scales: vec![0.05; zero_points.len()],
        zero_points: zero_points.to_vec(),
    }
}

const NQ: QuantSpec = QuantSpec::None;

/// A tensor in the arena.
fn act(dtype: DType, dims: &[usize], quant: QuantSpec) -> TensorSpec {
    TensorSpec {
        dtype,
        shape: s(dims),
        quant,
        data: None,
        layout: Layout::Plain,
    }
}

/// A constant (f32 ones, other dtypes zeros).
fn cst(dtype: DType, dims: &[usize], quant: QuantSpec) -> TensorSpec {
    let n = s(dims).numel().unwrap();
    let data = match dtype {
        F32 => (0..n).flat_map(|_| 1f32.to_le_bytes()).collect(),
        _ => vec![0u8; n * dtype.size_bytes()],
    };
    TensorSpec {
        data: Some(data),
        ..act(dtype, dims, quant)
    }
}

/// One op over `ins` (None: an absent optional input); its arena inputs are the graph's
/// inputs and `outs` its outputs. Tensor indices follow the order given: inputs, then
/// outputs.
fn one_op(
    kind: OpKind,
    ins: Vec<Option<TensorSpec>>,
    outs: Vec<TensorSpec>,
    p: &[i32],
) -> ModelBuilder {
    let mut b = ModelBuilder::default();
    let mut inputs = Vec::new();
    for t in ins {
        inputs.push(t.map(|t| {
            let arena = t.data.is_none();
            let i = b.add_tensor(t);
            if arena {
                b.inputs.push(i);
            }
            i
        }));
    }
    let outputs: Vec<u16> = outs.into_iter().map(|t| b.add_tensor(t)).collect();
    b.outputs = outputs.clone();
    b.ops.push(OpSpec {
        kind,
        inputs,
        outputs,
        params: p.to_vec(),
    });
    b
}

/// `Ok` if the model loads, else the problem of its one op (any other refusal fails).
fn verdict(b: &ModelBuilder) -> Result<(), OpProblem> {
    match b.finish() {
        Ok(_) => Ok(()),
        Err(BuildError::Invalid(LoadError::Op {
            index: 0, problem, ..
        })) => Err(problem),
        Err(e) => panic!("refused for another reason: {e:?}"),
    }
}

/// Make tensor `t` (a constant) an arena graph input.
fn unconst(b: &mut ModelBuilder, t: usize) {
    b.tensors[t].data = None;
    b.inputs.push(t as u16);
}

type Edit = (&'static str, fn(&mut ModelBuilder));

/// `base()` loads; each edit alone makes it refused with `want`.
fn each_refused(base: fn() -> ModelBuilder, edits: &[Edit], want: OpProblem) {
    assert_eq!(verdict(&base()), Ok(()), "the base case loads");
    for (name, edit) in edits {
        let mut b = base();
        edit(&mut b);
        assert_eq!(verdict(&b), Err(want), "{name}");
    }
}

/// `base()` loads, and so does each edit.
fn each_loads(base: fn() -> ModelBuilder, edits: &[Edit]) {
    for (name, edit) in edits {
        let mut b = base();
        edit(&mut b);
        assert_eq!(verdict(&b), Ok(()), "{name}");
    }
}

/// Conv words: stride 1, no padding, dilation 1, `group`, full int8 clamp.
fn conv_p(group: i32) -> Vec<i32> {
    vec![1, 1, 0, 0, 0, 0, 1, 1, group, -128, 127]
}

// Tensors of the int8 Conv base: x 0, w 1, bias 2, requant 3, y 4.
fn conv_i8() -> ModelBuilder {
    one_op(
        Conv,
        vec![
            Some(act(I8, &[1, 2, 4, 4], pt(0.1, 3))),
            Some(cst(I8, &[3, 2, 3, 3], pt(0.05, 0))),
            Some(cst(I32, &[3], NQ)),
            Some(cst(F32, &[3], NQ)),
        ],
        vec![act(I8, &[1, 3, 2, 2], pt(0.2, -1))],
        &conv_p(1),
    )
}

#[test]
fn int8_conv_needs_symmetric_int8_weights_int32_bias_and_a_constant_f32_table() {
    each_loads(
        conv_i8,
        &[
            ("per-channel weights on axis 0", |b| {
                b.tensors[1].quant = per_axis(0, &[0; 3])
            }),
            ("no bias", |b| b.ops[0].inputs[2] = None),
        ],
    );
    each_refused(
        conv_i8,
        &[
            ("weight zero point 1", |b| b.tensors[1].quant = pt(0.05, 1)),
            ("a nonzero channel zero point", |b| {
                b.tensors[1].quant = per_axis(0, &[0, 1, 0])
            }),
            ("per-channel on axis 1", |b| {
                b.tensors[1].quant = per_axis(1, &[0; 2])
            }),
            ("unquantized weights", |b| b.tensors[1].quant = NQ),
            ("u8 weights", |b| b.tensors[1].dtype = U8),
            ("per-channel input", |b| {
                b.tensors[0].quant = per_axis(1, &[3; 2])
            }),
            ("u8 output", |b| {
                b.tensors[4].dtype = U8;
                b.tensors[4].quant = pt(0.2, 0);
            }),
            ("per-channel output", |b| {
                b.tensors[4].quant = per_axis(1, &[0; 3])
            }),
            ("f32 bias", |b| b.tensors[2].dtype = F32),
            ("i32 table", |b| b.tensors[3].dtype = I32),
            ("table in the arena", |b| unconst(b, 3)),
        ],
        OpProblem::DType,
    );
    // The table is required in int8 (input 3).
    let mut b = conv_i8();
    b.ops[0].inputs.truncate(3);
    assert_eq!(verdict(&b), Err(OpProblem::Arity));
}

#[test]
fn an_op_entry_has_no_absent_input() {
    // The int8 Conv with no bias: its entry, like its record, has nothing at input 2.
    let mut b = conv_i8();
    b.ops[0].inputs[2] = None;
    let bytes = AlignedBytes::from_slice(&b.finish().unwrap());
    let m = Model::parse(bytes.as_slice()).unwrap();
    let (e, op) = (m.op_entry(0).unwrap(), m.op(0).unwrap());
    assert_eq!(e.n_inputs(), 4);
    for k in 0..5 {
        assert_eq!(e.input(k), op.input(k), "input {k}");
    }
    assert_eq!(
        (0..4).map(|k| e.input(k)).collect::<Vec<_>>(),
        [Some(0), Some(1), None, Some(3)]
    );
}

#[test]
fn int8_conv_transpose_takes_channel_scales_on_axis_1() {
    fn base() -> ModelBuilder {
        one_op(
            ConvTranspose,
            vec![
                Some(act(I8, &[1, 2, 2, 2], pt(0.1, 0))),
                Some(cst(I8, &[2, 3, 2, 2], per_axis(1, &[0; 3]))),
                None,
                Some(cst(F32, &[3], NQ)),
            ],
            vec![act(I8, &[1, 3, 3, 3], pt(0.2, 0))],
            &[1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, -128, 127],
        )
    }
    each_refused(
        base,
        &[
            ("channel scales on axis 0", |b| {
                b.tensors[1].quant = per_axis(0, &[0; 2])
            }),
            ("per-tensor zero point 1", |b| {
                b.tensors[1].quant = pt(0.05, 1)
            }),
        ],
        OpProblem::DType,
    );
    let mut b = base();
    b.ops[0].params[conv::T_ACT_LO] = 5;
    b.ops[0].params[conv::T_ACT_HI] = 4;
    assert_eq!(verdict(&b), Err(OpProblem::Quant));
}

#[test]
fn int8_clamps_lie_in_the_int8_range_and_in_order() {
    let clamp = |lo: i32, hi: i32| {
        let mut b = conv_i8();
        b.ops[0].params[conv::ACT_LO] = lo;
        b.ops[0].params[conv::ACT_HI] = hi;
        verdict(&b)
    };
    assert_eq!(clamp(-128, 127), Ok(()));
    assert_eq!(clamp(0, 0), Ok(()));
    assert_eq!(clamp(-129, 127), Err(OpProblem::Quant));
    assert_eq!(clamp(-128, 128), Err(OpProblem::Quant));
    assert_eq!(clamp(1, 0), Err(OpProblem::Quant));
    let add = |lo: i32, hi: i32| {
        let mut b = add_i8();
        b.ops[0].params = vec![lo, hi];
        verdict(&b)
    };
    assert_eq!(add(-128, 127), Ok(()));
    assert_eq!(add(3, 2), Err(OpProblem::Quant));
    assert_eq!(add(-200, 0), Err(OpProblem::Quant));
}

fn conv_f32() -> ModelBuilder {
    one_op(
        Conv,
        vec![
            Some(act(F32, &[1, 2, 4, 4], NQ)),
            Some(cst(F32, &[3, 2, 3, 3], NQ)),
            Some(cst(F32, &[3], NQ)),
        ],
        vec![act(F32, &[1, 3, 2, 2], NQ)],
        &conv_p(1),
    )
}

#[test]
fn f32_conv_is_f32_throughout_with_at_most_a_bias() {
    each_refused(
        conv_f32,
        &[
            ("i8 weights", |b| {
                b.tensors[1].dtype = I8;
                b.tensors[1].data = Some(vec![0; 54]);
            }),
            ("i32 bias", |b| b.tensors[2].dtype = I32),
            ("i32 output", |b| b.tensors[3].dtype = I32),
            ("a fourth input", |b| {
                let t = b.add_tensor(cst(F32, &[3], NQ));
                b.ops[0].inputs.push(Some(t));
            }),
        ],
        OpProblem::DType,
    );
}

fn fc_i8() -> ModelBuilder {
    one_op(
        FullyConnected,
        vec![
            Some(act(I8, &[2, 4], pt(0.1, 0))),
            Some(cst(I8, &[3, 4], pt(0.05, 0))),
            Some(cst(I32, &[3], NQ)),
            Some(cst(F32, &[3], NQ)),
        ],
        vec![act(I8, &[2, 3], pt(0.2, 0))],
        &[-128, 127],
    )
}

#[test]
fn int8_fully_connected_follows_the_conv_rules() {
    each_refused(
        fc_i8,
        &[
            ("weight zero point", |b| b.tensors[1].quant = pt(0.05, 2)),
            ("f32 table", |b| b.tensors[3].dtype = I32),
            ("table in the arena", |b| unconst(b, 3)),
            ("f32 bias", |b| b.tensors[2].dtype = F32),
        ],
        OpProblem::DType,
    );
}

/// FullyConnected's two words (the activation clamp).
const FC_CLAMP: [i32; 2] = [-128, 127];

// Tensors of the f32-w8 FullyConnected base: x 0 (f32), w 1 (symmetric int8), bias 2, y 3.
fn fc_w8() -> ModelBuilder {
    one_op(
        FullyConnected,
        vec![
            Some(act(F32, &[2, 4], NQ)),
            Some(cst(I8, &[3, 4], pt(0.05, 0))),
            Some(cst(F32, &[3], NQ)),
        ],
        vec![act(F32, &[2, 3], NQ)],
        &FC_CLAMP,
    )
}

/// The kernel the loader gives op 0 of `b`.
fn kernel_of_op0(b: &ModelBuilder) -> KernelId {
    let bytes = AlignedBytes::from_slice(&b.finish().unwrap());
    Model::parse(bytes.as_slice())
        .unwrap()
        .kernel_of(0)
        .unwrap()
}

#[test]
fn f32_rows_with_symmetric_int8_weights_take_the_w8_kernel() {
    let w8 = KernelId {
        kind: FullyConnected,
        variant: Variant::W8F32,
    };
    assert_eq!(kernel_of_op0(&fc_w8()), w8);
    // Per-row scales on axis 0, and K at its bound (65,536), load as f32-w8 too.
    let mut b = fc_w8();
    b.tensors[1].quant = per_axis(0, &[0; 3]);
    assert_eq!(kernel_of_op0(&b), w8);
    let mut b = one_op(
        FullyConnected,
        vec![
            Some(act(F32, &[1, 1 << 16], NQ)),
            Some(cst(I8, &[1, 1 << 16], pt(0.05, 0))),
        ],
        vec![act(F32, &[1, 1], NQ)],
        &FC_CLAMP,
    );
    assert_eq!(kernel_of_op0(&b), w8);
    // One more column and the i32 sums could overflow: refused.
    b = one_op(
        FullyConnected,
        vec![
            Some(act(F32, &[1, (1 << 16) + 1], NQ)),
            Some(cst(I8, &[1, (1 << 16) + 1], pt(0.05, 0))),
        ],
        vec![act(F32, &[1, 1], NQ)],
        &FC_CLAMP,
    );
    assert_eq!(verdict(&b), Err(OpProblem::DType));
    // f32 weights keep the f32 kernel.
    let mut b = fc_w8();
    b.tensors[1] = cst(F32, &[3, 4], NQ);
    assert_eq!(kernel_of_op0(&b).variant, Variant::F32);
    each_refused(
        fc_w8,
        &[
            ("weight zero point 1", |b| b.tensors[1].quant = pt(0.05, 1)),
            ("a nonzero row zero point", |b| {
                b.tensors[1].quant = per_axis(0, &[0, 1, 0])
            }),
            ("per-column scales", |b| {
                b.tensors[1].quant = per_axis(1, &[0; 4])
            }),
            ("unquantized int8 weights", |b| b.tensors[1].quant = NQ),
            ("u8 weights", |b| b.tensors[1].dtype = U8),
            ("an int8 bias", |b| b.tensors[2] = cst(I8, &[3], NQ)),
            ("an int8 output", |b| {
                b.tensors[3].dtype = I8;
                b.tensors[3].quant = pt(0.2, 0);
            }),
            ("a fourth input", |b| {
                let t = b.add_tensor(cst(F32, &[3], NQ));
                b.ops[0].inputs.push(Some(t));
            }),
        ],
        OpProblem::DType,
    );
}

#[test]
fn f32_convs_take_no_int8_weights() {
    // The f32-w8 rule is FullyConnected's alone: an f32 Conv with int8 weights is refused.
    let b = one_op(
        Conv,
        vec![
            Some(act(F32, &[1, 2, 4, 4], NQ)),
            Some(cst(I8, &[3, 2, 3, 3], pt(0.05, 0))),
        ],
        vec![act(F32, &[1, 3, 2, 2], NQ)],
        &conv_p(1),
    );
    assert_eq!(verdict(&b), Err(OpProblem::DType));
}

fn bmm_i8() -> ModelBuilder {
    one_op(
        BatchMatMul,
        vec![
            Some(act(I8, &[2, 3, 4], pt(0.1, 1))),
            Some(act(I8, &[2, 4, 5], pt(0.1, -2))),
            Some(cst(F32, &[1], NQ)),
        ],
        vec![act(I8, &[2, 3, 5], pt(0.3, 0))],
        &[],
    )
}

fn bmm_f32() -> ModelBuilder {
    one_op(
        BatchMatMul,
        vec![Some(act(F32, &[3, 4], NQ)), Some(act(F32, &[4, 5], NQ))],
        vec![act(F32, &[3, 5], NQ)],
        &[],
    )
}

#[test]
fn batch_matmul_rules() {
    each_refused(
        bmm_i8,
        &[
            ("u8 right side", |b| {
                b.tensors[1].dtype = U8;
                b.tensors[1].quant = pt(0.1, 2);
            }),
            ("per-channel left", |b| {
                b.tensors[0].quant = per_axis(2, &[1; 4])
            }),
            ("per-channel right", |b| {
                b.tensors[1].quant = per_axis(2, &[0; 5])
            }),
            ("u8 output", |b| {
                b.tensors[3].dtype = U8;
            }),
            ("per-channel output", |b| {
                b.tensors[3].quant = per_axis(2, &[0; 5])
            }),
            ("i32 table", |b| b.tensors[2].dtype = I32),
            ("table of two", |b| {
                b.tensors[2] = cst(F32, &[2], NQ);
            }),
            ("table in the arena", |b| unconst(b, 2)),
        ],
        OpProblem::DType,
    );
    let mut b = bmm_i8();
    b.ops[0].inputs.truncate(2);
    assert_eq!(verdict(&b), Err(OpProblem::Arity));
    each_refused(
        bmm_f32,
        &[
            ("a third input", |b| {
                let t = b.add_tensor(cst(F32, &[1], NQ));
                b.ops[0].inputs.push(Some(t));
            }),
            ("i32 output", |b| b.tensors[2].dtype = I32),
            ("i32 right side", |b| b.tensors[1].dtype = I32),
        ],
        OpProblem::DType,
    );
}

fn add_i8() -> ModelBuilder {
    one_op(
        Add,
        vec![
            Some(act(I8, &[2, 3], pt(0.1, 1))),
            Some(act(I8, &[2, 3], pt(0.2, -1))),
        ],
        vec![act(I8, &[2, 3], pt(0.3, 0))],
        &[-128, 127],
    )
}

fn add_f32() -> ModelBuilder {
    one_op(
        Mul,
        vec![Some(act(F32, &[2, 3], NQ)), Some(act(F32, &[3], NQ))],
        vec![act(F32, &[2, 3], NQ)],
        &[-128, 127],
    )
}

#[test]
fn add_sub_mul_take_per_tensor_int8_or_f32() {
    each_loads(
        add_i8,
        &[
            ("sub", |b| b.ops[0].kind = Sub),
            ("mul", |b| b.ops[0].kind = Mul),
        ],
    );
    assert_eq!(verdict(&add_f32()), Ok(()));
    each_refused(
        add_i8,
        &[
            ("per-channel a", |b| {
                b.tensors[0].quant = per_axis(1, &[1; 3])
            }),
            ("per-channel b", |b| {
                b.tensors[1].quant = per_axis(1, &[1; 3])
            }),
            ("per-channel y", |b| {
                b.tensors[2].quant = per_axis(1, &[0; 3])
            }),
            ("mixed dtypes", |b| {
                b.tensors[1].dtype = F32;
                b.tensors[1].quant = NQ;
            }),
        ],
        OpProblem::DType,
    );
    each_refused(
        add_f32,
        &[
            ("i32 values", |b| {
                b.tensors.iter_mut().for_each(|t| t.dtype = I32)
            }),
            ("i32 output", |b| b.tensors[2].dtype = I32),
        ],
        OpProblem::DType,
    );
}

#[test]
fn div_prelu_and_unary_are_f32_only() {
    fn div() -> ModelBuilder {
        one_op(
            Div,
            vec![Some(act(F32, &[4], NQ)), Some(act(F32, &[4], NQ))],
            vec![act(F32, &[4], NQ)],
            &[0, 0],
        )
    }
    each_refused(
        div,
        &[
            ("i32 divisor", |b| b.tensors[1].dtype = I32),
            ("int8 throughout", |b| {
                b.tensors.iter_mut().for_each(|t| {
                    t.dtype = I8;
                    t.quant = pt(0.1, 0);
                })
            }),
        ],
        OpProblem::DType,
    );
}

fn concat_i8() -> ModelBuilder {
    one_op(
        Concat,
        vec![
            Some(act(I8, &[2, 3], pt(0.1, 1))),
            Some(act(I8, &[2, 1], pt(0.2, 0))),
        ],
        vec![act(I8, &[2, 4], pt(0.3, 2))],
        &[1],
    )
}

fn transpose_i8() -> ModelBuilder {
    one_op(
        Transpose,
        vec![Some(act(I8, &[2, 3], pt(0.1, 1)))],
        vec![act(I8, &[3, 2], pt(0.1, 1))],
        &[1, 0],
    )
}

#[test]
fn data_movement_keeps_the_quantization_except_concat_and_resize() {
    // Concat requantizes: inputs and output may differ.
    assert_eq!(verdict(&concat_i8()), Ok(()));
    assert_eq!(verdict(&transpose_i8()), Ok(()));
    each_refused(
        transpose_i8,
        &[
            ("another zero point", |b| b.tensors[1].quant = pt(0.1, 2)),
            ("another scale", |b| b.tensors[1].quant = pt(0.2, 1)),
            ("f32 output", |b| {
                b.tensors[1].dtype = F32;
                b.tensors[1].quant = NQ;
            }),
        ],
        OpProblem::DType,
    );
    // Equal per-channel quantization in and out is still not per-tensor.
    let reshape = one_op(
        Reshape,
        vec![Some(act(I8, &[2, 3], per_axis(1, &[0; 3])))],
        vec![act(I8, &[2, 3], per_axis(1, &[0; 3]))],
        &[],
    );
    assert_eq!(verdict(&reshape), Err(OpProblem::DType));
    each_refused(
        concat_i8,
        &[("per-channel input", |b| {
            b.tensors[1].quant = per_axis(0, &[0; 2])
        })],
        OpProblem::DType,
    );
}

fn gap_i8() -> ModelBuilder {
    one_op(
        GlobalAveragePool,
        vec![Some(act(I8, &[1, 2, 3, 3], pt(0.1, 1)))],
        vec![act(I8, &[1, 2, 1, 1], pt(0.05, 0))],
        &[],
    )
}

#[test]
fn pooling_and_mean_take_per_tensor_int8_or_f32() {
    assert_eq!(verdict(&gap_i8()), Ok(()));
    each_refused(
        gap_i8,
        &[
            ("per-channel in", |b| {
                b.tensors[0].quant = per_axis(1, &[1; 2])
            }),
            ("per-channel out", |b| {
                b.tensors[1].quant = per_axis(1, &[1; 2])
            }),
            ("f32 out", |b| {
                b.tensors[1].dtype = F32;
                b.tensors[1].quant = NQ;
            }),
            ("i32 throughout", |b| {
                b.tensors.iter_mut().for_each(|t| {
                    t.dtype = I32;
                    t.quant = NQ
                })
            }),
        ],
        OpProblem::DType,
    );
}

fn softmax_i8() -> ModelBuilder {
    one_op(
        Softmax,
        vec![Some(act(I8, &[2, 5], pt(0.1, 1)))],
        vec![act(I8, &[2, 5], pt(1.0 / 256.0, -128))],
        &[2, 5, 1, 0],
    )
}

fn softmax_ort() -> ModelBuilder {
    one_op(
        Softmax,
        vec![
            Some(act(I8, &[2, 5], pt(0.1, 1))),
            Some(cst(F32, &[256], NQ)),
        ],
        vec![act(I8, &[2, 5], pt(1.0 / 256.0, -128))],
        &[2, 5, 1, 1],
    )
}

#[test]
fn softmax_flavours() {
    assert_eq!(verdict(&softmax_ort()), Ok(()));
    each_refused(
        softmax_i8,
        &[
            ("a table in flavour 0", |b| {
                let t = b.add_tensor(cst(F32, &[256], NQ));
                b.ops[0].inputs.push(Some(t));
            }),
            ("per-channel in", |b| {
                b.tensors[0].quant = per_axis(1, &[1; 5])
            }),
            ("per-channel out", |b| {
                b.tensors[1].quant = per_axis(1, &[0; 5])
            }),
            ("f32 out", |b| {
                b.tensors[1].dtype = F32;
                b.tensors[1].quant = NQ;
            }),
        ],
        OpProblem::DType,
    );
    each_refused(
        softmax_ort,
        &[
            ("table in the arena", |b| unconst(b, 1)),
            ("i8 table", |b| {
                b.tensors[1] = cst(I8, &[256], pt(0.1, 0));
            }),
            ("f32 values", |b| {
                for t in [0, 2] {
                    b.tensors[t].dtype = F32;
                    b.tensors[t].quant = NQ;
                }
            }),
        ],
        OpProblem::DType,
    );
}

fn layer_norm_i8() -> ModelBuilder {
    one_op(
        LayerNorm,
        vec![
            Some(act(I8, &[2, 4], pt(0.1, 1))),
            Some(cst(F32, &[4], NQ)),
            Some(cst(F32, &[4], NQ)),
        ],
        vec![act(I8, &[2, 4], pt(0.05, 0))],
        &[1, 1e-5f32.to_bits() as i32],
    )
}

#[test]
fn layer_norm_rules() {
    each_refused(
        layer_norm_i8,
        &[
            ("per-channel in", |b| {
                b.tensors[0].quant = per_axis(1, &[1; 4])
            }),
            ("per-channel out", |b| {
                b.tensors[3].quant = per_axis(1, &[0; 4])
            }),
            ("f32 out", |b| {
                b.tensors[3].dtype = F32;
                b.tensors[3].quant = NQ;
            }),
            ("i32 gamma", |b| b.tensors[1].dtype = I32),
            ("i32 beta", |b| b.tensors[2].dtype = I32),
        ],
        OpProblem::DType,
    );
}

fn lut_i8() -> ModelBuilder {
    one_op(
        Lut,
        vec![
            Some(act(I8, &[2, 4], pt(0.1, 1))),
            Some(cst(I8, &[256], NQ)),
        ],
        vec![act(I8, &[2, 4], pt(0.05, 0))],
        &[-1],
    )
}

#[test]
fn lut_maps_int8_through_a_constant_int8_table() {
    each_refused(
        lut_i8,
        &[
            ("table in the arena", |b| unconst(b, 1)),
            ("u8 table", |b| b.tensors[1].dtype = U8),
            ("u8 output", |b| b.tensors[2].dtype = U8),
            ("f32 input", |b| {
                b.tensors[0].dtype = F32;
                b.tensors[0].quant = NQ;
            }),
        ],
        OpProblem::DType,
    );
}

fn quantize() -> ModelBuilder {
    one_op(
        Quantize,
        vec![Some(act(F32, &[2, 3], NQ))],
        vec![act(I8, &[2, 3], pt(0.1, 0))],
        &[],
    )
}

fn dequantize() -> ModelBuilder {
    one_op(
        Dequantize,
        vec![Some(act(I8, &[2, 3], pt(0.1, 0)))],
        vec![act(F32, &[2, 3], NQ)],
        &[],
    )
}

#[test]
fn quantize_and_dequantize_rules() {
    each_loads(
        quantize,
        &[
            ("u8", |b| b.tensors[1].dtype = U8),
            ("per-channel", |b| b.tensors[1].quant = per_axis(1, &[0; 3])),
            ("a float-to-int cast", |b| {
                b.tensors[1].dtype = I32;
                b.tensors[1].quant = NQ;
            }),
        ],
    );
    each_refused(
        quantize,
        &[
            ("unquantized", |b| b.tensors[1].quant = NQ),
            ("quantized i32 output", |b| b.tensors[1].dtype = I32),
            ("i8 input", |b| {
                b.tensors[0].dtype = I8;
                b.tensors[0].quant = pt(0.1, 0);
            }),
        ],
        OpProblem::DType,
    );
    each_loads(
        dequantize,
        &[
            ("u8", |b| b.tensors[0].dtype = U8),
            ("an int-to-float cast", |b| {
                b.tensors[0].dtype = I32;
                b.tensors[0].quant = NQ;
            }),
            ("per-channel", |b| b.tensors[0].quant = per_axis(0, &[0; 2])),
        ],
    );
    each_refused(
        dequantize,
        &[
            ("unquantized int8", |b| b.tensors[0].quant = NQ),
            ("f32 input", |b| {
                b.tensors[0].dtype = F32;
                b.tensors[0].quant = NQ;
            }),
            ("i32 output", |b| b.tensors[1].dtype = I32),
        ],
        OpProblem::DType,
    );
}

fn gather_i8() -> ModelBuilder {
    one_op(
        Gather,
        vec![Some(act(I8, &[4, 3], pt(0.1, 1))), Some(cst(I32, &[2], NQ))],
        vec![act(I8, &[2, 3], pt(0.1, 1))],
        &[0, 0],
    )
}

// Tensors of the f32 Gather base: x 0, indices 1 (i32), y 2.
fn gather_f32() -> ModelBuilder {
    one_op(
        Gather,
        vec![Some(act(F32, &[4, 3], NQ)), Some(cst(I32, &[2], NQ))],
        vec![act(F32, &[2, 3], NQ)],
        &[0, 0],
    )
}

#[test]
fn an_unquantized_gather_takes_i32_indices_and_gather_and_tile_keep_the_dtype() {
    each_loads(
        gather_f32,
        &[("i32 values", |b| {
            b.tensors[0].dtype = I32;
            b.tensors[2].dtype = I32;
        })],
    );
    each_refused(
        gather_f32,
        &[
            ("f32 indices", |b| b.tensors[1] = cst(F32, &[2], NQ)),
            ("an i32 output of f32 values", |b| b.tensors[2].dtype = I32),
        ],
        OpProblem::DType,
    );
    // Tile keeps its dtype too.
    let tile = |y: DType| {
        one_op(
            Tile,
            vec![Some(act(F32, &[2, 3], NQ))],
            vec![act(y, &[4, 3], NQ)],
            &[],
        )
    };
    assert_eq!(verdict(&tile(F32)), Ok(()));
    assert_eq!(verdict(&tile(I32)), Err(OpProblem::DType));
}

fn reduce_max_i8() -> ModelBuilder {
    one_op(
        Reduce,
        vec![Some(act(I8, &[2, 3], pt(0.1, 1)))],
        vec![act(I8, &[2], pt(0.1, 1))],
        &[1, 0b10, 0, 0],
    )
}

fn argmax_i8() -> ModelBuilder {
    one_op(
        Reduce,
        vec![Some(act(I8, &[2, 3], pt(0.1, 1)))],
        vec![act(I32, &[2], NQ)],
        &[9, 0b10, 0, 0],
    )
}

#[test]
fn int8_gather_tile_and_selecting_reductions_keep_the_quantization() {
    assert_eq!(verdict(&argmax_i8()), Ok(()));
    each_refused(
        gather_i8,
        &[
            ("i8 indices", |b| {
                b.tensors[1].dtype = I8;
                b.tensors[1].quant = pt(1.0, 0);
            }),
            ("another output zero point", |b| {
                b.tensors[2].quant = pt(0.1, 0)
            }),
            ("per-channel in and out", |b| {
                b.tensors[0].quant = per_axis(1, &[1; 3]);
                b.tensors[2].quant = per_axis(1, &[1; 3]);
            }),
        ],
        OpProblem::DType,
    );
    each_refused(
        reduce_max_i8,
        &[
            ("a sum of int8", |b| b.ops[0].params[0] = 0),
            ("i32 output", |b| {
                b.tensors[1].dtype = I32;
                b.tensors[1].quant = NQ;
            }),
        ],
        OpProblem::DType,
    );
    each_refused(
        argmax_i8,
        &[
            ("int8 indices out", |b| {
                b.tensors[1].dtype = I8;
                b.tensors[1].quant = pt(0.1, 1);
            }),
            ("quantized indices", |b| b.tensors[1].quant = pt(1.0, 0)),
        ],
        OpProblem::DType,
    );
    // Max over an empty axis has no int8 identity; an empty axis that is kept is fine.
    let max = |dims: [usize; 2], mask: i32, out: &[usize]| {
        verdict(&one_op(
            Reduce,
            vec![Some(act(I8, &dims, pt(0.1, 1)))],
            vec![act(I8, out, pt(0.1, 1))],
            &[1, mask, 0, 0],
        ))
    };
    assert_eq!(max([0, 3], 0b01, &[3]), Err(OpProblem::DType));
    assert_eq!(max([0, 3], 0b10, &[0]), Ok(()));
    assert_eq!(max([2, 0], 0b01, &[0]), Ok(()));
    assert_eq!(max([2, 3], 0b11, &[]), Ok(()));
    let tile = |dt: DType, q: QuantSpec| {
        verdict(&one_op(
            Tile,
            vec![Some(act(dt, &[2, 3], q.clone()))],
            vec![act(dt, &[4, 3], q)],
            &[],
        ))
    };
    assert_eq!(tile(I8, pt(0.1, 1)), Ok(()));
    assert_eq!(tile(F32, NQ), Ok(()));
    assert_eq!(tile(I32, NQ), Ok(()));
    assert_eq!(tile(U8, pt(0.1, 1)), Err(OpProblem::DType));
}

fn binary(code: i32, a: DType, b: DType, y: DType) -> Result<(), OpProblem> {
    verdict(&one_op(
        Binary,
        vec![Some(act(a, &[2, 3], NQ)), Some(act(b, &[3], NQ))],
        vec![act(y, &[2, 3], NQ)],
        &[code],
    ))
}

#[test]
fn plain_binary_dtypes_by_function() {
    // Pow (0): arithmetic, f32 only.
    assert_eq!(binary(0, F32, F32, F32), Ok(()));
    for (a, b, y) in [(I32, F32, F32), (F32, I32, F32), (F32, F32, I32)] {
        assert_eq!(
            binary(0, a, b, y),
            Err(OpProblem::DType),
            "pow {a:?} {b:?} {y:?}"
        );
    }
    // And (8): i32 booleans.
    assert_eq!(binary(8, I32, I32, I32), Ok(()));
    for (a, b, y) in [(F32, I32, I32), (I32, F32, I32), (I32, I32, F32)] {
        assert_eq!(
            binary(8, a, b, y),
            Err(OpProblem::DType),
            "and {a:?} {b:?} {y:?}"
        );
    }
    // Less (4): compares two values of one dtype into i32.
    assert_eq!(binary(4, F32, F32, I32), Ok(()));
    assert_eq!(binary(4, I32, I32, I32), Ok(()));
    for (a, b, y) in [(F32, I32, I32), (I32, F32, I32), (F32, F32, F32)] {
        assert_eq!(
            binary(4, a, b, y),
            Err(OpProblem::DType),
            "less {a:?} {b:?} {y:?}"
        );
    }
    // A quantized input makes any plain op refused.
    let q = one_op(
        Binary,
        vec![Some(act(F32, &[3], NQ)), Some(act(I8, &[3], pt(0.1, 0)))],
        vec![act(I32, &[3], NQ)],
        &[4],
    );
    assert_eq!(verdict(&q), Err(OpProblem::DType));
}

fn where_(c: DType, a: DType, b: DType, y: DType) -> Result<(), OpProblem> {
    verdict(&one_op(
        Where,
        vec![
            Some(act(c, &[3], NQ)),
            Some(act(a, &[3], NQ)),
            Some(act(b, &[3], NQ)),
        ],
        vec![act(y, &[3], NQ)],
        &[],
    ))
}

#[test]
fn plain_where_gather_reduce_dtypes() {
    assert_eq!(where_(I32, F32, F32, F32), Ok(()));
    assert_eq!(where_(I32, I32, I32, I32), Ok(()));
    assert_eq!(where_(F32, F32, F32, F32), Err(OpProblem::DType));
    assert_eq!(where_(I32, F32, I32, F32), Err(OpProblem::DType));
    assert_eq!(where_(I32, F32, F32, I32), Err(OpProblem::DType));
    let gather = |x: DType, i: DType, y: DType| {
        verdict(&one_op(
            Gather,
            vec![Some(act(x, &[4, 3], NQ)), Some(act(i, &[2], NQ))],
            vec![act(y, &[2, 3], NQ)],
            &[0, 0],
        ))
    };
    assert_eq!(gather(F32, I32, F32), Ok(()));
    assert_eq!(gather(I32, I32, I32), Ok(()));
    assert_eq!(gather(F32, F32, F32), Err(OpProblem::DType));
    assert_eq!(gather(F32, I32, I32), Err(OpProblem::DType));
    let reduce = |f: i32, y: DType| {
        verdict(&one_op(
            Reduce,
            vec![Some(act(F32, &[2, 3], NQ))],
            vec![act(y, &[2], NQ)],
            &[f, 0b10, 0, 0],
        ))
    };
    assert_eq!(reduce(0, F32), Ok(()));
    assert_eq!(reduce(0, I32), Err(OpProblem::DType));
    assert_eq!(reduce(9, I32), Ok(()));
    assert_eq!(reduce(9, F32), Err(OpProblem::DType));
}

#[test]
fn only_a_one_group_int8_conv_may_read_packed_weights() {
    let mut b = conv_i8();
    assert_eq!(b.pack_conv_weights(1 << 20), 1);
    assert_eq!(b.tensors[1].layout, Layout::Pairs6);
    let bytes = b.finish().unwrap();
    let m = Model::parse(aligned(&bytes).as_slice()).map(|m| m.kernel_of(0));
    assert_eq!(
        m,
        Ok(Some(KernelId {
            kind: Conv,
            variant: Variant::PackedI8
        }))
    );
    // Packed weights are int8 constants: in the arena (a graph input) or stored as
    // another dtype, the record itself is refused.
    let packed = b.clone();
    let mut arena = packed.clone();
    unconst(&mut arena, 1);
    let mut wide = packed.clone();
    wide.tensors[1].dtype = U8;
    for (what, f) in [("in the arena", arena), ("u8", wide)] {
        assert_eq!(
            f.finish().err(),
            Some(BuildError::Invalid(LoadError::Tensor { index: 1 })),
            "{what}"
        );
    }
    // The same packed weights fed to an op that cannot read them.
    let mut f = fc_i8();
    f.tensors[1].layout = Layout::Pairs6;
    assert!(f.finish().is_err());
    // A two-group Conv's weights, packed by hand.
    let mut g2 = one_op(
        Conv,
        vec![
            Some(act(I8, &[1, 4, 4, 4], pt(0.1, 3))),
            Some(cst(I8, &[4, 2, 3, 3], pt(0.05, 0))),
            None,
            Some(cst(F32, &[4], NQ)),
        ],
        vec![act(I8, &[1, 4, 2, 2], pt(0.2, -1))],
        &conv_p(2),
    );
    assert_eq!(verdict(&g2), Ok(()));
    assert_eq!(
        g2.pack_conv_weights(1 << 20),
        0,
        "only one-group convs are packed"
    );
    let packed = pack_pairs6(&[1i8; 4 * 18], 4, 18).unwrap();
    g2.tensors[1].data = Some(packed.iter().flat_map(|v| v.to_le_bytes()).collect());
    g2.tensors[1].layout = Layout::Pairs6;
    assert_eq!(verdict(&g2), Err(OpProblem::Layout));
}

/// A 16-byte aligned copy, as `Model::parse` wants.
fn aligned(b: &[u8]) -> AlignedBytes {
    let a = AlignedBytes::from_slice(b);
    assert_eq!(a.as_slice(), b);
    assert_eq!(a.as_slice().as_ptr() as usize % 16, 0);
    a
}

fn info(dtype: DType, dims: &[usize]) -> TensorInfo<'static> {
    TensorInfo {
        dtype,
        shape: s(dims),
        quant: Quant::None,
        layout: Layout::Plain,
    }
}

#[test]
fn kernel_ids_by_group_rank_and_layout() {
    let x = info(I8, &[1, 4, 5, 5]);
    let y = info(I8, &[1, 4, 3, 3]);
    let k = |g: i32, x: &TensorInfo<'_>, l: Layout| kernel_id(Conv, x, &y, g, l).variant;
    assert_eq!(k(4, &x, Layout::Plain), Variant::DwI8);
    assert_eq!(k(2, &x, Layout::Plain), Variant::I8);
    assert_eq!(k(1, &x, Layout::Plain), Variant::I8);
    // One channel, one group: a plain conv, not a depthwise one.
    assert_eq!(k(1, &info(I8, &[1, 1, 5, 5]), Layout::Plain), Variant::I8);
    assert_eq!(k(1, &x, Layout::Pairs6), Variant::PackedI8);
    // Rank 3 (no channel axis at 1 in NCHW terms) is never depthwise.
    assert_eq!(k(4, &info(I8, &[4, 4, 5]), Layout::Plain), Variant::I8);
    let xf = info(F32, &[1, 4, 5, 5]);
    let yf = info(F32, &[1, 4, 3, 3]);
    assert_eq!(
        kernel_id(Conv, &xf, &yf, 4, Layout::Plain).variant,
        Variant::DwF32
    );
    assert_eq!(
        kernel_id(Conv, &xf, &yf, 1, Layout::Plain).variant,
        Variant::F32
    );
    // A Quantize reads f32 and writes int8: the int8 variant.
    assert_eq!(
        kernel_id(Quantize, &xf, &y, 0, Layout::Plain).variant,
        Variant::I8
    );
    assert_eq!(
        kernel_id(Dequantize, &y, &yf, 0, Layout::Plain).variant,
        Variant::I8
    );
}

#[test]
fn macs_per_op() {
    let macs = |b: &ModelBuilder| {
        let bytes = aligned(&b.finish().unwrap());
        Model::parse(bytes.as_slice()).unwrap().op_macs(0)
    };
    // Conv: output elements × ic·kh·kw = 12 · 18.
    assert_eq!(macs(&conv_i8()), 12 * 18);
    assert_eq!(macs(&conv_f32()), 12 * 18);
    // FC: output elements × in features = 6 · 4.
    assert_eq!(macs(&fc_i8()), 6 * 4);
    // BatchMatMul: output elements × K = 30 · 4.
    assert_eq!(macs(&bmm_i8()), 30 * 4);
    assert_eq!(macs(&add_i8()), 0);
    // ConvTranspose: input elements × out-channels-per-group·kh·kw = 8 · 12.
    let t = one_op(
        ConvTranspose,
        vec![
            Some(act(F32, &[1, 2, 2, 2], NQ)),
            Some(cst(F32, &[2, 3, 2, 2], NQ)),
        ],
        vec![act(F32, &[1, 3, 3, 3], NQ)],
        &[1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, -128, 127],
    );
    assert_eq!(macs(&t), 8 * 12);
}

#[test]
fn a_depthwise_conv_is_written_with_its_own_kernel() {
    let b = one_op(
        Conv,
        vec![
            Some(act(I8, &[1, 4, 4, 4], pt(0.1, 3))),
            Some(cst(I8, &[4, 1, 3, 3], pt(0.05, 0))),
            None,
            Some(cst(F32, &[4], NQ)),
        ],
        vec![act(I8, &[1, 4, 2, 2], pt(0.2, -1))],
        &conv_p(4),
    );
    let bytes = AlignedBytes::from_slice(&b.finish().unwrap());
    let m = Model::parse(bytes.as_slice()).unwrap();
    assert_eq!(m.kernel_of(0).map(|k| k.variant), Some(Variant::DwI8));
    assert!(m.kernels().iter().any(|k| k.variant == Variant::DwI8));
}

#[test]
fn build_errors_print_their_cause() {
    assert_eq!(BuildError::TooLarge.to_string(), "TooLarge");
    let e = BuildError::Invalid(LoadError::KernelSet);
    assert_eq!(e.to_string(), "Invalid(KernelSet)");
}

#[test]
fn input_counts_outside_the_kind_s_arity_are_refused() {
    let one = one_op(
        Add,
        vec![Some(act(F32, &[4], NQ))],
        vec![act(F32, &[4], NQ)],
        &[0, 0],
    );
    assert_eq!(verdict(&one), Err(OpProblem::Arity));
    let five = one_op(
        Conv,
        vec![
            Some(act(F32, &[1, 2, 4, 4], NQ)),
            Some(cst(F32, &[3, 2, 3, 3], NQ)),
            None,
            None,
            None,
        ],
        vec![act(F32, &[1, 3, 2, 2], NQ)],
        &conv_p(1),
    );
    assert_eq!(verdict(&five), Err(OpProblem::Arity));
    let concat = |n: usize| {
        one_op(
            Concat,
            (0..n).map(|_| Some(act(F32, &[1], NQ))).collect(),
            vec![act(F32, &[n], NQ)],
            &[0],
        )
    };
    assert_eq!(verdict(&concat(16)), Ok(()));
    assert_eq!(verdict(&concat(17)), Err(OpProblem::Arity));
}

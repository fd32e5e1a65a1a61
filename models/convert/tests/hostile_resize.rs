//! A Resize whose scales or sizes ask for an absurd output, an initializer or a Reshape
//! target of more elements than memory can address: a typed refusal at convert time,
//! never an overflow, a panic or a giant allocation.

use cairn_convert::onnx_pb::{AttributeProto, GraphProto, NodeProto, TensorProto};

mod common;

fn value(name: &str, dims: &[i64]) -> cairn_convert::onnx_pb::ValueInfoProto {
    common::value(name, 1, dims)
}

/// `x` of `dims` through one Resize with the given scales (f32) or sizes (i64) and mode.
fn resize_model(
    dims: &[i64],
    scales: Option<Vec<f32>>,
    sizes: Option<Vec<i64>>,
    mode: &str,
) -> Vec<u8> {
    let mut init = vec![];
    let mut inputs = vec!["x".to_string(), String::new()];
    if let Some(s) = scales {
        init.push(TensorProto {
            name: "scales".into(),
            dims: vec![s.len() as i64],
            data_type: 1,
            float_data: s,
            ..Default::default()
        });
        inputs.push("scales".into());
    } else {
        inputs.push(String::new());
    }
    if let Some(z) = sizes {
        init.push(TensorProto {
            name: "sizes".into(),
            dims: vec![z.len() as i64],
            data_type: 7,
            int64_data: z,
            ..Default::default()
        });
        inputs.push("sizes".into());
    }
    let node = NodeProto {
        input: inputs,
        output: vec!["y".into()],
        name: "resize".into(),
        op_type: "Resize".into(),
        attribute: vec![AttributeProto {
            name: "mode".into(),
            r#type: 3,
            s: mode.as_bytes().to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let graph = GraphProto {
        node: vec![node],
        initializer: init,
        input: vec![value("x", dims)],
        output: vec![value("y", &[])],
        ..Default::default()
    };
    common::model_bytes(graph, 19)
}

fn refusal(bytes: &[u8]) -> String {
    let opts = cairn_convert::Options {
        float: true,
        ..Default::default()
    };
    match cairn_convert::convert(bytes, &opts, |_| {}) {
        Ok(_) => panic!("an absurd Resize converted"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn an_absurd_scale_is_refused() {
    for mode in ["nearest", "linear", "cubic"] {
        for s in [1e30f32, 3e9, 1e7] {
            let e = refusal(&resize_model(
                &[1, 1, 4, 4],
                Some(vec![1.0, 1.0, s, 1.0]),
                None,
                mode,
            ));
            assert!(e.contains("too large"), "{mode} x{s}: {e}");
        }
    }
}

#[test]
fn an_absurd_size_or_interpolation_matrix_is_refused() {
    let e = refusal(&resize_model(
        &[1, 1, 4, 4],
        None,
        Some(vec![1, 1, 4, i64::MAX]),
        "nearest",
    ));
    assert!(e.contains("too large"), "{e}");
    // 8192 -> 4096 columns in cubic mode: a 4096 × 8192 matrix, over the bound.
    let e = refusal(&resize_model(
        &[1, 1, 1, 8192],
        None,
        Some(vec![1, 1, 1, 4096]),
        "cubic",
    ));
    assert!(e.contains("interpolation matrix"), "{e}");
}

/// An initializer whose dims multiply past the address space is a typed refusal (the
/// onnx_model fuzz target found the element count overflowing before any data check).
#[test]
fn an_initializer_of_overflowing_size_is_refused() {
    let init = TensorProto {
        name: "w".into(),
        dims: vec![1 << 40, 1 << 40, 4],
        data_type: 1,
        float_data: vec![1.0; 4],
        ..Default::default()
    };
    let node = NodeProto {
        input: vec!["x".into(), "w".into()],
        output: vec!["y".into()],
        name: "add".into(),
        op_type: "Add".into(),
        ..Default::default()
    };
    let graph = GraphProto {
        node: vec![node],
        initializer: vec![init],
        input: vec![value("x", &[1, 4])],
        output: vec![value("y", &[])],
        ..Default::default()
    };
    let bytes = common::model_bytes(graph, 19);
    let opts = cairn_convert::Options::default();
    // `check` reports what it can; it must not panic either.
    let _ = cairn_convert::check(&bytes, &opts);
    let e = match cairn_convert::convert(&bytes, &opts, |_| {}) {
        Ok(_) => panic!("an initializer of 2^82 elements converted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("more elements than memory can address"), "{e}");
}

/// A Reshape whose constant target multiplies past the address space is refused (found by
/// the onnx_model fuzz target: the inferred dim's product overflowed).
#[test]
fn a_reshape_target_of_overflowing_size_is_refused() {
    for target in [vec![1i64 << 40, 1 << 40, -1], vec![1 << 40, 1 << 40, 16]] {
        let shape = TensorProto {
            name: "s".into(),
            dims: vec![target.len() as i64],
            data_type: 7,
            int64_data: target.clone(),
            ..Default::default()
        };
        let graph = GraphProto {
            node: vec![NodeProto {
                input: vec!["x".into(), "s".into()],
                output: vec!["y".into()],
                name: "reshape".into(),
                op_type: "Reshape".into(),
                ..Default::default()
            }],
            initializer: vec![shape],
            input: vec![value("x", &[1, 16])],
            output: vec![value("y", &[])],
            ..Default::default()
        };
        let bytes = common::model_bytes(graph, 19);
        let e = match cairn_convert::convert(&bytes, &cairn_convert::Options::default(), |_| {}) {
            Ok(_) => panic!("a Reshape to {target:?} converted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            e.contains("more elements than memory can address"),
            "{target:?}: {e}"
        );
    }
}

/// The largest dim a cairn shape holds (dims are u32 in the runtime's `Shape`).
const M: i64 = u32::MAX as i64;

/// `nodes` over the graph input `x` of `dims` (float; given as `--input-shape`, since a
/// declared 0 reads as an unknown dim) and `init`, with output `y`: refused with a typed
/// error by `check` (no panic) and by `convert`.
fn refused_graph(dims: &[i64], nodes: Vec<NodeProto>, init: Vec<TensorProto>) -> String {
    let graph = GraphProto {
        node: nodes,
        initializer: init,
        input: vec![value("x", dims)],
        output: vec![value("y", &[])],
        ..Default::default()
    };
    let bytes = common::model_bytes(graph, 19);
    let mut opts = cairn_convert::Options::default();
    let given = dims.iter().map(|&d| d as usize).collect();
    opts.input_shapes.insert("x".into(), given);
    let _ = cairn_convert::check(&bytes, &opts);
    match cairn_convert::convert(&bytes, &opts, |_| {}) {
        Ok(_) => panic!("a tensor of extent past the address space converted"),
        Err(e) => format!("{e:#}"),
    }
}

fn ints(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: 7,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn softmax(input: &str, axis: i64) -> NodeProto {
    common::node(
        "Softmax",
        &[input],
        &["y"],
        vec![common::int_attr("axis", axis)],
    )
}

/// A zero dim does not hide huge ones: a graph input of [0, M, M, M] has no elements, but
/// the product of its last three dims overflows, and Softmax over axis 0 takes it.
#[test]
fn regress_an_input_with_a_zero_dim_and_huge_dims_is_refused() {
    let e = refused_graph(&[0, M, M, M], vec![softmax("x", 0)], vec![]);
    assert!(e.contains("more elements than memory can address"), "{e}");
}

/// The same through an initializer: zero elements (no data) under huge dims, fed to
/// Softmax, ReduceSum and Concat, each of which takes products of its dims.
#[test]
fn regress_an_initializer_with_a_zero_dim_and_huge_dims_is_refused() {
    let w = TensorProto {
        name: "w".into(),
        dims: vec![0, M, M, M],
        data_type: 1,
        ..Default::default()
    };
    let reduce = NodeProto {
        attribute: vec![common::int_attr("keepdims", 1)],
        ..common::node("ReduceSum", &["w", "axes"], &["y"], vec![])
    };
    let concat = common::node(
        "Concat",
        &["w", "w"],
        &["y"],
        vec![common::int_attr("axis", 3)],
    );
    for node in [softmax("w", 0), reduce, concat] {
        let op = node.op_type.clone();
        let e = refused_graph(&[1], vec![node], vec![w.clone(), ints("axes", &[2])]);
        assert!(
            e.contains("more elements than memory can address"),
            "{op}: {e}"
        );
    }
}

/// ConstantOfShape, Expand and Tile fold to a shape of zero elements and huge dims; what
/// reads it (a Softmax over axis 0) is refused, not overflowed.
#[test]
fn regress_a_folded_shape_with_a_zero_dim_and_huge_dims_is_refused() {
    let of_shape = common::node("ConstantOfShape", &["s"], &["c"], vec![]);
    let expand = common::node("Expand", &["x", "s"], &["c"], vec![]);
    let tile = common::node("Tile", &["x", "reps"], &["c"], vec![]);
    for node in [of_shape, expand, tile] {
        let op = node.op_type.clone();
        let init = vec![ints("s", &[0, M, M, M]), ints("reps", &[1, M, M, M])];
        let e = refused_graph(&[0, 1, 1, 1], vec![node, softmax("c", 0)], init);
        assert!(
            e.contains("more elements than memory can address"),
            "{op}: {e}"
        );
    }
}

/// A Range of 2^63 integers, and an AffineGrid whose size multiplies past usize: refused
/// before any product or allocation overflows.
#[test]
fn regress_a_range_or_grid_of_overflowing_size_is_refused() {
    let range = common::node("Range", &["a", "b", "d"], &["y"], vec![]);
    let init = vec![
        TensorProto {
            dims: vec![],
            ..ints("a", &[0])
        },
        TensorProto {
            dims: vec![],
            ..ints("b", &[i64::MAX])
        },
        TensorProto {
            dims: vec![],
            ..ints("d", &[1])
        },
    ];
    let e = refused_graph(&[1], vec![range], init);
    assert!(
        e.contains("more elements than memory can address"),
        "Range: {e}"
    );
    let grid = common::node("AffineGrid", &["x", "size"], &["y"], vec![]);
    let init = vec![ints("size", &[1, 2, 1 << 40, 1 << 40])];
    let e = refused_graph(&[1, 2, 3], vec![grid], init);
    assert!(
        e.contains("more elements than memory can address"),
        "AffineGrid: {e}"
    );
}

/// A Concat whose inputs all have no elements is a typed refusal, not an index past the
/// empty list left once zero-sized inputs are dropped; so is a convert-time integer Concat
/// of inputs whose ranks differ, not an index past the shorter shape.
#[test]
fn regress_a_concat_of_empty_tensors_only_is_refused() {
    let a = TensorProto {
        dims: vec![1, 2],
        ..ints("a", &[1, 2])
    };
    let concat = common::node(
        "Concat",
        &["a", "b"],
        &["y"],
        vec![common::int_attr("axis", 1)],
    );
    let e = refused_graph(&[1], vec![concat], vec![a, ints("b", &[3])]);
    assert!(e.contains("Concat of shapes that differ"), "{e}");

    let w = TensorProto {
        name: "w".into(),
        dims: vec![0, 2],
        data_type: 1,
        ..Default::default()
    };
    let concat = common::node(
        "Concat",
        &["w", "w"],
        &["y"],
        vec![common::int_attr("axis", 0)],
    );
    let e = refused_graph(&[1], vec![concat], vec![w]);
    assert!(e.contains("Concat of empty tensors only"), "{e}");
}

/// Values the converter computes itself are bounded in size, not only in address range: a
/// ConstantOfShape, a Range and a folded Expand of 2^36 elements (256 GB of f32, well
/// inside the address space) are refused before the allocation, which aborted the
/// process.
#[test]
fn regress_a_convert_time_value_too_large_to_fold_is_refused() {
    let big = [1 << 12, 1 << 12, 1 << 12];
    let of_shape = common::node("ConstantOfShape", &["s"], &["y"], vec![]);
    let e = refused_graph(&[1], vec![of_shape], vec![ints("s", &big)]);
    assert!(
        e.contains("larger than cairn folds"),
        "ConstantOfShape: {e}"
    );
    let expand = common::node("Expand", &["one", "s"], &["y"], vec![]);
    let one = TensorProto {
        name: "one".into(),
        dims: vec![1],
        data_type: 1,
        float_data: vec![1.0],
        ..Default::default()
    };
    let e = refused_graph(&[1], vec![expand], vec![one, ints("s", &big)]);
    assert!(e.contains("larger than cairn folds"), "Expand: {e}");
    let range = common::node("Range", &["a", "b", "d"], &["y"], vec![]);
    let scalar = |name: &str, v: i64| TensorProto {
        dims: vec![],
        ..ints(name, &[v])
    };
    let init = vec![scalar("a", 0), scalar("b", 1 << 36), scalar("d", 1)];
    let e = refused_graph(&[1], vec![range], init);
    assert!(e.contains("larger than cairn folds"), "Range: {e}");
}

/// Pool and conv attributes from outside: a stride of 0 divided by zero when the pool's
/// output size was computed (found by the onnx_model fuzz target; seed
/// `regress-pool-stride-zero`), and a negative one was cast to a huge usize.
#[test]
fn regress_a_zero_or_negative_stride_is_refused() {
    let ints_attr = common::ints_attr;
    for (op, strides) in [
        ("MaxPool", [0, 0]),
        ("AveragePool", [0, 1]),
        ("MaxPool", [-2, 1]),
    ] {
        let pool = common::node(
            op,
            &["x"],
            &["y"],
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                ints_attr("strides", &strides),
            ],
        );
        let e = refused_graph(&[1, 1, 4, 4], vec![pool], vec![]);
        assert!(
            e.contains("stride, dilation or kernel size of 0") || e.contains("out of range"),
            "{op} {strides:?}: {e}"
        );
    }
}

/// A Gemm whose B (or A) is not 2-d indexed B's second dim before any check (found by the
/// onnx_model fuzz target in CI; seed `regress-gemm-rank`): refused, with the ranks.
#[test]
fn regress_a_gemm_of_other_than_2d_operands_is_refused() {
    let b = |dims: Vec<i64>| TensorProto {
        name: "b".into(),
        dims: dims.clone(),
        data_type: 1,
        float_data: vec![1.0; dims.iter().product::<i64>() as usize],
        ..Default::default()
    };
    for (x, bd) in [
        (vec![1, 4], vec![4]),
        (vec![1, 4], vec![1, 4, 2]),
        (vec![4], vec![4, 2]),
    ] {
        let gemm = common::node("Gemm", &["x", "b"], &["y"], vec![]);
        let e = refused_graph(&x, vec![gemm], vec![b(bd.clone())]);
        assert!(e.contains("Gemm needs 2-d A and B"), "{x:?} x {bd:?}: {e}");
    }
}

/// A Softmax reading a uint8 QuantizeLinear output (found by a long run of the onnx_model
/// fuzz target; seed `regress-softmax-uint8`): constant folding ran the f32 reference
/// softmax on the bytes as if they were floats and read past them. Now a typed error or a
/// model, never a panic.
#[test]
fn regress_a_softmax_of_uint8_does_not_panic() {
    let bytes = include_bytes!("../../../tests/fuzz/seeds/onnx_model/regress-softmax-uint8");
    let opts = cairn_convert::Options::default();
    let _ = cairn_convert::check(bytes, &opts);
    if let Ok(c) = cairn_convert::convert(bytes, &opts, |_| {}) {
        let b = cairn_core::emit::AlignedBytes::from_slice(&c.bytes);
        assert!(cairn_core::Model::parse(b.as_slice()).is_ok());
    }
}

/// An integer op whose zero point is an empty tensor (found by a long run of the onnx_model
/// fuzz target; seed `regress-integer-empty-zero-point`): the weight was dequantized with
/// no params at all and indexed the empty list. Now a typed error, never a panic.
#[test]
fn regress_an_empty_zero_point_does_not_panic() {
    let bytes =
        include_bytes!("../../../tests/fuzz/seeds/onnx_model/regress-integer-empty-zero-point");
    let opts = cairn_convert::Options::default();
    let _ = cairn_convert::check(bytes, &opts);
    if let Ok(c) = cairn_convert::convert(bytes, &opts, |_| {}) {
        let b = cairn_core::emit::AlignedBytes::from_slice(&c.bytes);
        assert!(cairn_core::Model::parse(b.as_slice()).is_ok());
    }
}

"""f32 node cases at sizes the upstream ones do not reach, for ops lowered as constant
matrices or window sums (Resize cubic/antialias/crop, GridSample, LpPool, dilated
AveragePool, Col2Im, Pad wrap, Einsum diagonals): the ONNX reference evaluator is the
reference. Constant inputs are initializers, so only X is fed at run time.
Run: .venv/bin/python tests/data/node_extra/make_lowerings.py"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(1414)


def i64(*v):
    return np.array(v, dtype=np.int64)


def f32(*v):
    return np.array(v, dtype=np.float32)


# name: (op, X shape, constant inputs in order ("" = absent), attributes, opset)
CASES = {
    "resize_cubic_antialias_sizes": (
        "Resize", (1, 3, 17, 23), [("roi", None), ("scales", None), ("sizes", i64(1, 3, 7, 9))],
        dict(mode="cubic", antialias=1), 19),
    "resize_linear_antialias_scales": (
        "Resize", (1, 2, 20, 16), [("roi", None), ("scales", f32(1, 1, 0.4, 0.45))],
        dict(mode="linear", antialias=1), 19),
    "resize_cubic_exclude_outside_up": (
        "Resize", (1, 2, 5, 7), [("roi", None), ("scales", f32(1, 1, 2.5, 1.75))],
        dict(mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5), 19),
    "resize_tf_crop_and_resize": (
        "Resize", (1, 2, 9, 8), [("roi", f32(0, 0, -0.1, 0.2, 1, 1, 0.7, 1.3)), ("scales", None),
                                 ("sizes", i64(1, 2, 6, 11))],
        dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
             extrapolation_value=-3.0), 19),
    "resize_linear_rank3_axes": (
        "Resize", (2, 5, 13), [("roi", None), ("scales", f32(1.6))],
        dict(mode="linear", axes=[2]), 19),
    "resize_nearest_channels": (
        "Resize", (1, 3, 4, 4), [("roi", None), ("scales", None), ("sizes", i64(6, 4))],
        dict(mode="nearest", axes=[1, 2]), 19),
    "gridsample_bilinear_zeros_batch2": (
        "GridSample", (2, 3, 9, 11), [("grid", rng.uniform(-1.2, 1.2, (2, 7, 5, 2)).astype(np.float32))],
        dict(mode="linear"), 20),
    "gridsample_cubic_reflection": (
        "GridSample", (1, 2, 6, 7), [("grid", rng.uniform(-1.5, 1.5, (1, 4, 9, 2)).astype(np.float32))],
        dict(mode="cubic", padding_mode="reflection", align_corners=1), 20),
    "lppool_p2_pads_strides": (
        "LpPool", (1, 3, 11, 9), [], dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1], p=2), 18),
    "averagepool_dilated_pads": (
        "AveragePool", (1, 2, 10, 12), [],
        dict(kernel_shape=[3, 2], dilations=[2, 3], pads=[1, 2, 1, 0], strides=[1, 2]), 19),
    "averagepool_dilated_count_include_pad": (
        "AveragePool", (1, 2, 10, 12), [],
        dict(kernel_shape=[2, 3], dilations=[3, 2], pads=[2, 1, 0, 1], count_include_pad=1), 19),
    "col2im_strided_dilated": (
        "Col2Im", (1, 2 * 6, 16), [("image_shape", i64(9, 10)), ("block_shape", i64(2, 3))],
        dict(strides=[2, 2], dilations=[1, 2], pads=[0, 1, 0, 1]), 18),
    "pad_wrap_beyond_dim": (
        "Pad", (1, 2, 3, 4), [("pads", i64(0, 0, 5, 1, 0, 0, 2, 6))], dict(mode="wrap"), 19),
    "einsum_trace": ("Einsum", (3, 4, 4), [], dict(equation="bii->b"), 13),
    "einsum_ellipsis_matmul": ("Einsum", (2, 4, 4), [], dict(equation="...ij,...ji->...i"), 13),
}

for name, (op, shape, consts, attrs, opset) in CASES.items():
    x = rng.standard_normal(shape).astype(np.float32)
    inputs = ["X"]
    inits = []
    for cname, value in consts:
        if value is None:
            inputs.append("")
        else:
            inputs.append(cname)
            inits.append(numpy_helper.from_array(value, cname))
    if op == "Einsum" and "," in attrs["equation"]:
        inputs = ["X", "X"]
    node = helper.make_node(op, inputs, ["Y"], **attrs)
    y = ReferenceEvaluator(
        helper.make_model(
            helper.make_graph(
                [node], name,
                [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                initializer=inits),
            opset_imports=[helper.make_opsetid("", opset)])
    ).run(None, {"X": x})[0].astype(np.float32)
    graph = helper.make_graph(
        [node], name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y.shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    case = os.path.join(HERE, f"test_{name}_f32")
    os.makedirs(os.path.join(case, "test_data_set_0"), exist_ok=True)
    onnx.save(model, os.path.join(case, "model.onnx"))
    with open(os.path.join(case, "test_data_set_0", "input_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(x, "X").SerializeToString())
    with open(os.path.join(case, "test_data_set_0", "output_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(y, "Y").SerializeToString())
    print(name, shape, "->", y.shape)

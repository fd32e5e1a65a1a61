"""f32 node cases in the ONNX backend-test layout for ops whose upstream cases use other
dtypes (Einsum's are float64): model.onnx + test_data_set_0/{input,output}_k.pb.
Run: .venv/bin/python tests/data/node_extra/make.py (numpy's einsum is the reference)."""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(14)

CASES = {
    "einsum_batch_matmul": ("bij,bjk->bik", [(5, 2, 3), (5, 3, 4)]),
    "einsum_matmul": ("ij,jk->ik", [(3, 4), (4, 5)]),
    "einsum_attention_scores": ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    "einsum_attention_values": ("bhqk,bhkd->bqhd", [(1, 2, 3, 5), (1, 2, 5, 4)]),
    "einsum_transpose": ("ij->ji", [(3, 4)]),
    "einsum_sum": ("ij->i", [(3, 4)]),
    "einsum_inner_prod": ("i,i", [(5,), (5,)]),
    "einsum_outer_prod": ("i,j->ij", [(3,), (4,)]),
    "einsum_implicit": ("ij,jk", [(2, 3), (3, 4)]),
}

for name, (eq, shapes) in CASES.items():
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    y = np.einsum(eq, *xs).astype(np.float32)
    names = [f"x{k}" for k in range(len(xs))]
    node = helper.make_node("Einsum", names, ["y"], equation=eq)
    graph = helper.make_graph(
        [node],
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, x.shape) for n, x in zip(names, xs)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y.shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    case = os.path.join(HERE, f"test_{name}_f32")
    os.makedirs(os.path.join(case, "test_data_set_0"), exist_ok=True)
    onnx.save(model, os.path.join(case, "model.onnx"))
    for k, x in enumerate(xs):
        with open(os.path.join(case, "test_data_set_0", f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(x, names[k]).SerializeToString())
    with open(os.path.join(case, "test_data_set_0", "output_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(y, "y").SerializeToString())

"""Fixtures of models/convert/tests/qoperator.rs: a small CNN with weights drawn here from
a seeded generator (no outside weights; MIT OR Apache-2.0 like the repository), quantized
by ONNX Runtime's own quantizer in both of its formats, and the outputs that the tests
hold cairn to.

    .venv/bin/python models/convert/tests/data/qop/make.py

Writes, beside this script:
- qop.onnx: `quantize_static(..., quant_format=QOperator)` (QLinearConv, QLinearAdd,
  QLinearMul, QLinearLeakyRelu, QLinearSigmoid, QLinearConcat, QLinearAveragePool,
  QLinearGlobalAveragePool, QLinearMatMul, QGemm, QLinearSoftmax, and MaxPool/Reshape on
  uint8 tensors);
- qdq.onnx: qop.onnx with every QLinear node written out as DequantizeLinear → float op →
  QuantizeLinear with the node's own scales and zero points (what a QLinear node means;
  ONNX Runtime's QDQ format picks some params differently, so it is not this twin);
- x.npy: four inputs [4, 3, 12, 12]; qdq_logits.npy, qdq_probs.npy: ONNX Runtime on
  qdq.onnx with graph optimizations off (the graph as written), the oracle cairn's int8
  path is held to; qop_logits.npy: ONNX Runtime on qop.onnx (its integer kernels), for
  the record;
- dyn.onnx: `quantize_dynamic` of a small MLP (DynamicQuantizeLinear → MatMulInteger →
  Cast → Mul → Add); dyn_x.npy, dyn_ref.npy: the MLP run in numpy on its exactly
  dequantized weights (what cairn computes for dynamic quantization).
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

SEED = 14
HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(SEED)


def init(name, shape, scale):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def cnn():
    inits = [
        init("w1", [8, 3, 3, 3], 0.3), init("b1", [8], 0.1),
        init("w2", [8, 1, 3, 3], 0.4), init("b2", [8], 0.1),
        init("w3", [8, 8, 1, 1], 0.3), init("b3", [8], 0.1),
        init("w4", [8, 16, 1, 1], 0.3), init("b4", [8], 0.1),
        init("k", [1, 8, 1, 1], 0.5),
        init("wm", [8, 8], 0.4),
        init("wg", [8, 5], 0.5), init("bg", [5], 0.1),
        numpy_helper.from_array(np.array([-1, 8], dtype=np.int64), "shape"),
    ]
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        N("LeakyRelu", ["c1"], ["a1"], alpha=0.1),
        N("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        N("Sigmoid", ["c2"], ["s2"]),
        N("Mul", ["c2", "s2"], ["m2"]),
        N("Add", ["m2", "a1"], ["r2"]),
        N("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        N("Conv", ["p2", "w3", "b3"], ["c3"]),
        N("Mul", ["c3", "k"], ["c3k"]),
        N("Concat", ["c3k", "p2"], ["cat"], axis=1),
        N("Conv", ["cat", "w4", "b4"], ["c4"]),
        N("AveragePool", ["c4"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        N("GlobalAveragePool", ["ap"], ["gp"]),
        N("Reshape", ["gp", "shape"], ["flat"]),
        N("MatMul", ["flat", "wm"], ["mm"]),
        N("Gemm", ["mm", "wg", "bg"], ["logits"]),
        N("Softmax", ["logits"], ["probs"], axis=1),
    ]
    g = helper.make_graph(
        nodes, "qop_fixture",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 5]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, [4, 5])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def mlp():
    inits = [init("w1", [16, 24], 0.3), init("b1", [24], 0.1),
             init("w2", [24, 6], 0.3), init("b2", [6], 0.1)]
    N = helper.make_node
    nodes = [
        N("MatMul", ["x", "w1"], ["h"]), N("Add", ["h", "b1"], ["hb"]),
        N("Tanh", ["hb"], ["t"]),
        N("MatMul", ["t", "w2"], ["o"]), N("Add", ["o", "b2"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "dyn_fixture",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


# QLinear op → (float op, positions of quantized inputs, output scale/zp positions).
QLINEAR = {
    "QLinearConv": ("Conv", [0, 3], (6, 7)),
    "QLinearMatMul": ("MatMul", [0, 3], (6, 7)),
    "QLinearAdd": ("Add", [0, 3], (6, 7)),
    "QLinearMul": ("Mul", [0, 3], (6, 7)),
    "QLinearLeakyRelu": ("LeakyRelu", [0], (3, 4)),
    "QLinearSigmoid": ("Sigmoid", [0], (3, 4)),
    "QLinearAveragePool": ("AveragePool", [0], (3, 4)),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", [0], (3, 4)),
    "QLinearSoftmax": ("Softmax", [0], (3, 4)),
    "QGemm": ("Gemm", [0, 3], (7, 8)),
}


def qdq_twin(m):
    """Each QLinear node of `m` as DequantizeLinear → float op → QuantizeLinear."""
    vals = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes, inits = [], list(m.graph.initializer)
    N = helper.make_node

    def dq(v, s, z, tag, axis=None):
        out = f"{v}_dq_{tag}"
        kw = {"axis": axis} if axis is not None and vals[s].size > 1 else {}
        nodes.append(N("DequantizeLinear", [v, s, z], [out], **kw))
        return out

    for k, n in enumerate(m.graph.node):
        op = n.op_type
        if op == "QLinearConcat":
            ins = [dq(n.input[i], n.input[i + 1], n.input[i + 2], k)
                   for i in range(2, len(n.input), 3)]
            nodes.append(N("Concat", ins, [f"{n.output[0]}_f"], axis=helper.get_attribute_value(
                next(a for a in n.attribute if a.name == "axis"))))
            nodes.append(N("QuantizeLinear", [f"{n.output[0]}_f", n.input[0], n.input[1]], [n.output[0]]))
            continue
        if op not in QLINEAR:
            nodes.append(n)
            continue
        fop, qin, (ys, yz) = QLINEAR[op]
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute
                 if a.name not in ("channels_last", "opset")}
        ins = []
        for j, i in enumerate(qin):
            axis = None
            if j == 1:
                axis = {"Conv": 0, "MatMul": 1, "Gemm": 0 if attrs.get("transB", 0) else 1}.get(fop)
            ins.append(dq(n.input[i], n.input[i + 1], n.input[i + 2], f"{k}_{j}", axis))
        bias = {"Conv": 8, "Gemm": 6}.get(fop)
        if bias is not None and len(n.input) > bias and n.input[bias]:
            alpha = attrs.get("alpha", 1.0) if fop == "Gemm" else 1.0
            bs = (vals[n.input[1]] * vals[n.input[4]] * alpha).astype(np.float32).reshape(-1)
            nb = vals[n.input[bias]].size
            if bs.size == 1:
                bs = np.repeat(bs, nb)
            inits.append(numpy_helper.from_array(bs, f"{n.input[bias]}_bscale"))
            inits.append(numpy_helper.from_array(np.zeros(nb, np.int32), f"{n.input[bias]}_bzp"))
            vals[f"{n.input[bias]}_bscale"] = bs
            ins.append(dq(n.input[bias], f"{n.input[bias]}_bscale", f"{n.input[bias]}_bzp", f"{k}_b", 0))
        nodes.append(N(fop, ins, [f"{n.output[0]}_f"], **attrs))
        nodes.append(N("QuantizeLinear", [f"{n.output[0]}_f", n.input[ys], n.input[yz]], [n.output[0]]))
    g = helper.make_graph(nodes, "qdq_twin", m.graph.input, m.graph.output, inits)
    t = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    t.ir_version = 8
    onnx.checker.check_model(t)
    return t


class Reader(CalibrationDataReader):
    def __init__(self, xs):
        self.it = iter([{"x": x} for x in xs])

    def get_next(self):
        return next(self.it, None)


def run(path, feeds, optimize):
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def main():
    p = lambda f: os.path.join(HERE, f)
    onnx.save(cnn(), p("float.onnx"))
    calib = [rng.standard_normal([4, 3, 12, 12]).astype(np.float32) for _ in range(4)]
    quantize_static(p("float.onnx"), p("qop.onnx"), Reader(calib),
                    quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    os.remove(p("float.onnx"))
    onnx.save(qdq_twin(onnx.load(p("qop.onnx"))), p("qdq.onnx"))
    x = rng.standard_normal([4, 3, 12, 12]).astype(np.float32)
    np.save(p("x.npy"), x)
    logits, probs = run(p("qdq.onnx"), {"x": x}, optimize=False)
    np.save(p("qdq_logits.npy"), logits)
    np.save(p("qdq_probs.npy"), probs)
    np.save(p("qop_logits.npy"), run(p("qop.onnx"), {"x": x}, optimize=True)[0])

    m = mlp()
    onnx.save(m, p("dyn_float.onnx"))
    quantize_dynamic(p("dyn_float.onnx"), p("dyn.onnx"), weight_type=QuantType.QInt8)
    os.remove(p("dyn_float.onnx"))
    # The dynamic model's weights, dequantized exactly, run in numpy (float64).
    d = onnx.load(p("dyn.onnx"))
    vals = {t.name: numpy_helper.to_array(t) for t in d.graph.initializer}
    deq = {}
    for name, v in vals.items():
        if name.endswith("_quantized"):
            base = name[: -len("_quantized")]
            s, z = vals[base + "_scale"], vals[base + "_zero_point"]
            deq[base] = (v.astype(np.float64) - z.astype(np.float64)) * s.astype(np.float64)
    xd = rng.standard_normal([3, 16]).astype(np.float32)
    f = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    h = np.tanh(xd.astype(np.float64) @ deq["w1"] + f["b1"])
    y = h @ deq["w2"] + f["b2"]
    np.save(p("dyn_x.npy"), xd)
    np.save(p("dyn_ref.npy"), y.astype(np.float32))
    ops = lambda f: sorted({(n.domain or "ai.onnx") + ":" + n.op_type for n in onnx.load(p(f)).graph.node})
    print("qop.onnx:", ops("qop.onnx"))
    print("dyn.onnx:", ops("dyn.onnx"))


if __name__ == "__main__":
    main()

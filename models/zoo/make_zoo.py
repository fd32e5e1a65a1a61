#!/usr/bin/env python3
"""Build the bundled demo/test data of models/zoo. Run from the repository root:

    .venv/bin/python models/zoo/make_zoo.py

Outputs (committed, so the demo and the tests need no Python):
  digits/digits_mlp.onnx         MLP trained on scikit-learn's digits (8x8, 64 -> 10)
  digits/digits_mlp_qdq.onnx     the same, quantized by onnxruntime's quantize_static (QDQ)
  digits/{calib,test}_x.npy      inputs scaled to [0, 1], f32; test_y.npy labels (int64)
  ppocr_cls/cls_qdq.onnx         the PP-OCR text-direction classifier, quantize_static (QDQ)
  ppocr_cls/cls_qop.onnx         the same in QOperator form (QLinearConv...), for `cairn bench`
  ppocr_cls/calib_x.npy          32 rendered text lines, preprocessed, f32 [32, 3, 48, 192]
  ppocr_cls/eval_u8.npy          200 rendered text lines, uint8 [200, 3, 48, 192]
                                 (f32 input = (u8 / 255 - 0.5) / 0.5, as PaddleOCR does)
  ppocr_cls/eval_y.npy           labels: 0 = upright, 1 = rotated 180 degrees

Everything is seeded; rerunning gives the same files (up to library versions).
"""
import os
import random

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.abspath(__file__))
SEED = 20261127


def digits_split():
    """scikit-learn's digits scaled to [0, 1], split 80/20 (seeded, stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=SEED % 1000, stratify=y)


def mlp_onnx(clf, name, classes):
    """A scikit-learn MLP as ONNX: Gemm + Relu per hidden layer, Gemm, Softmax."""
    nodes, inits = [], []
    prev = "x"
    n_layers = len(clf.coefs_)
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"b{i}"))
        out = f"h{i}" if i < n_layers - 1 else "logits"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out + ("_lin" if i < n_layers - 1 else "")], name=f"fc{i}"))
        if i < n_layers - 1:
            nodes.append(helper.make_node("Relu", [out + "_lin"], [out], name=f"relu{i}"))
        prev = out
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
    g = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="cairn-zoo")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def digits_incremental():
    """The class-incremental benchmark of cairn-learn: a base model trained on digits 0-4
    only (5 outputs), and the training split of all ten classes for the device to learn from.

      digits/digits04_mlp.onnx, digits04_mlp_qdq.onnx   base model, float and QDQ
      digits/train_x.npy, train_y.npy                   the training split (1437 images)
    The test split is the existing test_x.npy / test_y.npy (same split, same seed).
    """
    from sklearn.neural_network import MLPClassifier

    xtr, xte, ytr, yte = digits_split()
    old = ytr < 5
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=600, random_state=0)
    clf.fit(xtr[old], ytr[old])
    print(f"digits 0-4 base MLP accuracy on test 0-4 (sklearn): {clf.score(xte[yte < 5], yte[yte < 5]):.4f}")
    out = os.path.join(ROOT, "digits")
    onnx.save(mlp_onnx(clf, "digits04_mlp", 5), os.path.join(out, "digits04_mlp.onnx"))
    np.save(os.path.join(out, "train_x.npy"), xtr.astype(np.float32))
    np.save(os.path.join(out, "train_y.npy"), ytr)
    rng = np.random.default_rng(SEED)
    calib = xtr[old][rng.choice(int(old.sum()), 100, replace=False)]
    qdq(os.path.join(out, "digits04_mlp.onnx"), os.path.join(out, "digits04_mlp_qdq.onnx"), "x", [c[None, :] for c in calib])


def digits():
    from sklearn.neural_network import MLPClassifier

    xtr, xte, ytr, yte = digits_split()
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=600, random_state=0)
    clf.fit(xtr, ytr)
    print(f"digits MLP test accuracy (sklearn): {clf.score(xte, yte):.4f}")
    m = mlp_onnx(clf, "digits_mlp", 10)
    out = os.path.join(ROOT, "digits")
    onnx.save(m, os.path.join(out, "digits_mlp.onnx"))
    rng = np.random.default_rng(SEED)
    calib = xtr[rng.choice(len(xtr), 100, replace=False)]
    np.save(os.path.join(out, "calib_x.npy"), calib.astype(np.float32))
    np.save(os.path.join(out, "test_x.npy"), xte.astype(np.float32))
    np.save(os.path.join(out, "test_y.npy"), yte)
    qdq(os.path.join(out, "digits_mlp.onnx"), os.path.join(out, "digits_mlp_qdq.onnx"), "x", [c[None, :] for c in calib])


def render_line(rng: random.Random):
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,-:/"
    words = ["".join(rng.choice(alphabet[:62]) for _ in range(rng.randint(2, 8))) for _ in range(rng.randint(1, 4))]
    text = " ".join(words)
    size = rng.randint(18, 34)
    fonts = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ]
    fonts = [f for f in fonts if os.path.exists(f)]
    font = ImageFont.truetype(rng.choice(fonts), size) if fonts else ImageFont.load_default(size=size)
    bbox = font.getbbox(text)
    w, h = bbox[2] - bbox[0] + rng.randint(4, 20), bbox[3] - bbox[1] + rng.randint(4, 14)
    bg = rng.randint(170, 255)
    fg = rng.randint(0, 80)
    img = Image.new("RGB", (w, h), (bg, bg - rng.randint(0, 20), bg - rng.randint(0, 20)))
    ImageDraw.Draw(img).text((rng.randint(1, 8) - bbox[0], rng.randint(1, 6) - bbox[1]), text, fill=(fg, fg, fg), font=font)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 0.9)))
    return img


def preprocess(img):
    """PaddleOCR's classifier input: height 48, keep ratio, width <= 192, pad right."""
    from PIL import Image

    w, h = img.size
    nw = min(192, max(1, int(round(48 * w / h))))
    img = img.resize((nw, 48), Image.BILINEAR)
    a = np.zeros((48, 192, 3), dtype=np.uint8)
    a[:, :nw] = np.asarray(img)
    # Padding is 0 after normalization: store 128 (→ 0.0039) ≈ 0; use exact 127.5 in f32.
    u8 = a.transpose(2, 0, 1)
    f = (u8.astype(np.float32) / 255.0 - 0.5) / 0.5
    f[:, :, nw:] = 0.0
    u8 = u8.copy()
    return u8, f, nw


def cls():
    rng = random.Random(SEED)
    out = os.path.join(ROOT, "ppocr_cls")
    samples_u8, samples_f, labels = [], [], []
    for i in range(232):
        img = render_line(rng)
        label = i % 2
        if label == 1:
            img = img.rotate(180)
        u8, f, _ = preprocess(img)
        samples_u8.append(u8)
        samples_f.append(f)
        labels.append(label)
    calib = np.stack(samples_f[:32]).astype(np.float32)
    np.save(os.path.join(out, "calib_x.npy"), calib)
    # Padding columns were zero in f32; in u8 store them as a marker-free 0 and let readers
    # use the f32 formula: the demo zeroes pixels right of each line's width via eval_w.
    ev_u8 = np.stack(samples_u8[32:])
    np.save(os.path.join(out, "eval_u8.npy"), ev_u8)
    widths = np.array([int((np.abs(f).sum(axis=(0, 1)) > 0).nonzero()[0].max()) + 1 for f in samples_f[32:]], dtype=np.int64)
    np.save(os.path.join(out, "eval_w.npy"), widths)
    np.save(os.path.join(out, "eval_y.npy"), np.array(labels[32:], dtype=np.int64))
    src = os.path.join(out, "ch_ppocr_mobile_v2.0_cls_infer.onnx")
    fixed = os.path.join(out, "_fixed.onnx")
    m = onnx.load(src)
    # Per-channel DequantizeLinear (axis) needs opset 13.
    m = onnx.version_converter.convert_version(m, 13)
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, [1, 3, 48, 192]):
        d.Clear()
        d.dim_value = v
    onnx.save(m, fixed)
    qdq(fixed, os.path.join(out, "cls_qdq.onnx"), "x", [c[None] for c in calib])
    # QOperator form (QLinearConv, ...): only for benchmarking ORT's int8 kernels.
    qdq(fixed, os.path.join(out, "cls_qop.onnx"), "x", [c[None] for c in calib], fmt="QOperator")
    os.remove(fixed)
    import onnxruntime as ort

    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    ev_f = np.stack(samples_f[32:])
    p = np.concatenate([s.run(None, {"x": ev_f[i:i + 1]})[0] for i in range(len(ev_f))])
    acc = (p.argmax(1) == np.array(labels[32:])).mean()
    print(f"cls fp32 accuracy on rendered lines (ORT): {acc:.4f}")


def qdq(src, dst, input_name, samples, fmt="QDQ"):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    pre = dst + ".pre.onnx"
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    quant_format = QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator
    quantize_static(pre, dst, Reader(), quant_format=quant_format, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    os.remove(pre)
    print(f"wrote {dst}")


def mobilenet_v2(width=1.4, res=224):
    """A MobileNetV2-shaped network (inverted residuals, ReLU6, BatchNorm) with random but
    seeded weights, for `cairn bench` at a realistic size (~580 MMAC at width 1.4, 224x224).
    Not trained: only latency and agreement between engines mean anything on it."""
    rng = np.random.default_rng(SEED)
    nodes, inits = [], []
    counter = [0]

    def name(p):
        counter[0] += 1
        return f"{p}{counter[0]}"

    def const(a, p):
        n = name(p)
        inits.append(numpy_helper.from_array(a.astype(np.float32), n))
        return n

    def conv_bn(x, cin, cout, k, stride, group=1, relu6=True):
        w = rng.normal(0, np.sqrt(2.0 / (k * k * cin / group)), (cout, cin // group, k, k))
        y = name("conv")
        nodes.append(helper.make_node("Conv", [x, const(w, "w")], [y], kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4, group=group))
        bn = name("bn")
        nodes.append(helper.make_node("BatchNormalization", [y, const(rng.uniform(0.5, 1.5, cout), "g"), const(rng.normal(0, 0.1, cout), "b"),
                                      const(rng.normal(0, 0.1, cout), "m"), const(rng.uniform(0.5, 1.5, cout), "v")], [bn]))
        if not relu6:
            return bn
        out = name("relu6")
        nodes.append(helper.make_node("Clip", [bn, const(np.array(0.0), "lo"), const(np.array(6.0), "hi")], [out]))
        return out

    def ch(c):
        return max(8, int(c * width + 4) // 8 * 8)

    x = conv_bn("x", 3, ch(32), 3, 2)
    cin = ch(32)
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    for t, c, n, s in cfg:
        cout = ch(c)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = conv_bn(x, cin, hidden, 1, 1) if t != 1 else x
            y = conv_bn(y, hidden, hidden, 3, stride, group=hidden)
            y = conv_bn(y, hidden, cout, 1, 1, relu6=False)
            if stride == 1 and cin == cout:
                z = name("add")
                nodes.append(helper.make_node("Add", [x, y], [z]))
                y = z
            x, cin = y, cout
    x = conv_bn(x, cin, 1280 if width <= 1.0 else int(1280 * width), 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    feat = 1280 if width <= 1.0 else int(1280 * width)
    nodes.append(helper.make_node("Gemm", ["flat", const(rng.normal(0, 0.01, (feat, 1000)), "fc"), const(np.zeros(1000), "fcb")], ["logits"]))
    g = helper.make_graph(nodes, "mobilenet_v2_random",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, res, res])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="cairn-zoo")
    m.ir_version = 8
    onnx.checker.check_model(m)
    out = os.path.join(ROOT, "mobilenet")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "mobilenet_v2_x1.4_random.onnx")
    onnx.save(m, path)
    calib = rng.normal(0, 1, (8, 3, res, res)).astype(np.float32)
    np.save(os.path.join(out, "calib_x.npy"), calib)
    qdq(path, os.path.join(out, "mobilenet_v2_x1.4_random_qdq.onnx"), "x", [c[None] for c in calib])


if __name__ == "__main__":
    import sys

    if "--mobilenet" in sys.argv:
        # Not committed (about 25 MB): made on demand for `cairn bench`.
        mobilenet_v2()
    elif "--incremental" in sys.argv:
        digits_incremental()
    else:
        digits()
        digits_incremental()
        cls()

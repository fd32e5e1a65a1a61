"""Real-model check of ONNX Runtime's quantized formats (not run by the tests: it needs the
corpus cache, see models/corpus/README.md, and a release build of the CLI).

    cargo build --release -p cairn-cli
    .venv/bin/python models/convert/tests/data/qop/real_models.py [--per-channel] [OUT_DIR]

- PP-OCR cls (ppocr_cls_mobile_v2): `quant_pre_process` + `quantize_static(...,
  quant_format=QOperator)` on its 16 calib samples; `cairn convert` (no calibration: the
  model's own params), `cairn run` on the 8 inputs + 16 calib lines; top-1 against ONNX
  Runtime fp32 (original model), ONNX Runtime on the QOperator model, and ONNX Runtime with
  graph optimizations off on the QDQ twin (make.py's `qdq_twin`), and the output distance
  from the twin in output steps.
- MiniLM (minilm_l3_maskseq): `quantize_dynamic`; `cairn convert` to f32 and with
  `--calibrate` to int8; cosine of the masked-mean embedding against ONNX Runtime fp32 on
  the original model and against ONNX Runtime on the dynamic model.
"""

import glob
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make import qdq_twin  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../../../.."))
CAIRN = os.path.join(ROOT, "target/release/cairn")
C = os.environ.get("CAIRN_CORPUS", os.path.expanduser("~/.cache/cairn/corpus"))
args = [a for a in sys.argv[1:] if not a.startswith("--")]
PC = "--per-channel" in sys.argv
W = args[0] if args else "/tmp/cairn_qop_check"
os.makedirs(W, exist_ok=True)


def sh(*a):
    r = subprocess.run(a, capture_output=True, text=True)
    if r.returncode:
        sys.exit(" ".join(a) + "\n" + r.stdout[-3000:] + r.stderr[-3000:])
    return r.stdout


def sess(p, optimize=True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])


class Reader(CalibrationDataReader):
    def __init__(self):
        files = sorted(glob.glob(C + "/ppocr_cls_mobile_v2/calib/sample_*/x.npy"))
        self.it = iter([{"x": np.load(f)} for f in files])

    def get_next(self):
        return next(self.it, None)


def cls():
    pre, qop, twin = f"{W}/cls_pre.onnx", f"{W}/cls_qop.onnx", f"{W}/cls_qop_twin.onnx"
    quant_pre_process(C + "/ppocr_cls_mobile_v2.onnx", pre, skip_symbolic_shape=True)
    quantize_static(pre, qop, Reader(), quant_format=QuantFormat.QOperator, per_channel=PC)
    onnx.save(qdq_twin(onnx.load(qop)), twin)
    print(sh(CAIRN, "convert", qop, "-o", f"{W}/cls_qop.cairn", "--input-shape", "1,3,48,192"))
    m = onnx.load(qop)
    sc = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    out = m.graph.output[0].name
    step = [float(sc[n.input[1]]) for n in m.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == out][0]
    xs = sorted(glob.glob(C + "/ppocr_cls_mobile_v2/inputs/sample_*/x.npy"))
    xs += sorted(glob.glob(C + "/ppocr_cls_mobile_v2/calib/sample_*/x.npy"))
    engines = {"ORT fp32": sess(C + "/ppocr_cls_mobile_v2.onnx"), "ORT QOperator": sess(qop),
               "ORT QDQ twin": sess(twin, optimize=False)}
    agree = dict.fromkeys(engines, 0)
    steps, ort_steps = [], []
    for x in xs:
        sh(CAIRN, "run", f"{W}/cls_qop.cairn", "--input", x, "--output", f"{W}/y.npy")
        y = np.load(f"{W}/y.npy").reshape(-1)
        r = {k: s.run(None, {"x": np.load(x)})[0].reshape(-1) for k, s in engines.items()}
        for k in engines:
            agree[k] += int(np.argmax(r[k]) == np.argmax(y))
        steps.append(np.abs(y - r["ORT QDQ twin"]).max() / step)
        ort_steps.append(np.abs(r["ORT QOperator"] - r["ORT QDQ twin"]).max() / step)
    print(f"PP-OCR cls QOperator (per_channel={PC}), {len(xs)} lines: cairn top-1 equal to "
          + ", ".join(f"{k} {v}/{len(xs)}" for k, v in agree.items())
          + f"; output {max(steps):.0f} steps from the twin at most (mean {np.mean(steps):.2f});"
          + f" ORT's QOperator kernels: {max(ort_steps):.0f}")


def minilm():
    src, dyn = C + "/minilm_l3_maskseq.onnx", f"{W}/minilm_dyn.onnx"
    quantize_dynamic(src, dyn)
    shp = ["--input-shape", "input_ids=1,64", "--input-shape", "attention_mask=1,1,1,64"]
    print(sh(CAIRN, "convert", dyn, "-o", f"{W}/minilm_f32.cairn", *shp))
    print(sh(CAIRN, "convert", dyn, "-o", f"{W}/minilm_i8.cairn", "--calibrate",
             C + "/minilm_l3_maskseq/calib", *shp))
    fp32, ortdyn = sess(src), sess(dyn)

    def emb(h, mask):
        v = h.reshape(64, 384)[mask.reshape(-1) == 0].mean(0)
        return v / np.linalg.norm(v)

    cos = {}
    for d in sorted(glob.glob(C + "/minilm_l3_maskseq/inputs/sample_*")):
        ids, mask = np.load(d + "/input_ids.npy"), np.load(d + "/attention_mask.npy")
        feeds = {"input_ids": ids, "attention_mask": mask}
        ref = {"ORT fp32": emb(fp32.run(None, feeds)[0], mask),
               "ORT dynamic": emb(ortdyn.run(None, feeds)[0], mask)}
        for m in ("f32", "i8"):
            od = f"{W}/out_{m}"
            os.makedirs(od, exist_ok=True)
            sh(CAIRN, "run", f"{W}/minilm_{m}.cairn", "--input", "input_ids=" + d + "/input_ids.npy",
               "--input", "attention_mask=" + d + "/attention_mask.npy", "--output-dir", od)
            e = emb(np.load(glob.glob(od + "/*.npy")[0]), mask)
            for k, r in ref.items():
                cos.setdefault(f"cairn {m} vs {k}", []).append(float(e @ r))
        cos.setdefault("ORT dynamic vs ORT fp32", []).append(float(ref["ORT dynamic"] @ ref["ORT fp32"]))
    for k, v in cos.items():
        print(f"MiniLM dynamic: {k}: cosine mean {np.mean(v):.4f}, min {np.min(v):.4f} ({len(v)} sentences)")


cls()
minilm()

#!/usr/bin/env python3
"""Corpus benchmark: cairn int8 and f32 against ONNX Runtime fp32 and int8 on every model.

For each model of corpus.json (or --only id,..) with its inputs in the cache:
  - `cairn convert --calibrate <id>/calib` (int8) and `cairn convert --float` (f32), both
    with `--input-shape NAME=dims` from corpus.json;
  - `cairn run --input NAME=x.npy .. --output-dir` on every sample of `<id>/inputs/`;
  - ONNX Runtime fp32 (1 thread) on the same samples, and an ORT int8 QDQ model made with
    `onnxruntime.quantization.quantize_static` from the calib samples;
  - the model's task metric of each engine against ORT fp32 (see `metric()`);
  - latency: `cairn bench --json --no-tract` (int8 with `--ort-qdq`, then `--float`) when
    the model has one input; otherwise the `cairn run` time of one run per sample and ORT
    timed here, said in the `timing` column.
A model that fails anywhere is a row with the first line of the error, never a crash.

    cargo build --release -p cairn-cli
    .venv/bin/python models/corpus/bench.py [--only ID,..] [--out target/corpus]
        [--samples 8] [--calib-samples 16] [--runs 20]

Writes <out>/bench.json (one record per model), <out>/latency.svg and, per model,
<out>/<id>/ (the .cairn files, the QDQ model, outputs, bench reports).
"""

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
try:
    import numpy as np
    import onnxruntime as ort
except ImportError:  # re-run with the repo venv if there is one
    _venv = os.path.join(REPO, ".venv", "bin", "python")
    if os.path.isfile(_venv) and not os.environ.get("CAIRN_CORPUS_REEXEC"):
        os.environ["CAIRN_CORPUS_REEXEC"] = "1"
        os.execv(_venv, [_venv] + sys.argv)
    raise

sys.dont_write_bytecode = True  # no __pycache__ inside the repository
sys.path.insert(0, HERE)
from fetch import cache_dir, load_corpus  # noqa: E402
from inputs import fname  # noqa: E402

ENGINES = ["cairn-int8", "cairn-f32", "ort-fp32", "ort-int8"]


# ---------------------------------------------------------------- processes and files


def sh(cmd, timeout):
    """(returncode, stdout, stderr); a timeout is returncode None."""
    try:
        env = dict(os.environ, RUST_BACKTRACE="0")
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", "timed out after %d s" % timeout


def error_line(out, err):
    """One line from an anyhow error: its context chain joined with ': '."""
    lines = [line.strip() for line in (err or out).splitlines() if line.strip()]
    if not lines:
        return "failed without a message"
    parts, seen_error = [], False
    for line in lines:
        if line.startswith("Error:"):
            seen_error = True
            parts.append(line[len("Error:"):].strip())
        elif not seen_error or line == "Caused by:":
            continue
        elif line.startswith("Stack backtrace:"):
            break
        else:  # "N: cause" when there are several causes, else the one cause as is
            parts.append(re.sub(r"^\d+: ", "", line))
    # "converting /path/model.onnx" adds nothing to a row that names the model.
    parts = [p for p in parts if not p.startswith("converting ")]
    text = ": ".join(parts) if parts else lines[-1]
    return text if len(text) <= 240 else text[:237] + "..."


def sample_dirs(path, limit):
    dirs = sorted(d for d in os.listdir(path) if d.startswith("sample_"))
    return [os.path.join(path, d) for d in dirs[:limit]]


def load_feeds(m, folder):
    return {i["name"]: np.load(os.path.join(folder, fname(i["name"]))) for i in m["inputs"]}


def stem(name):
    """What `cairn run --output-dir` names a file (samples::file_stem)."""
    s = name.replace("/", "_").replace("\\", "_").replace("\0", "_")
    return "_" if set(s) <= {"."} else s


# ---------------------------------------------------------------- engines


ERROR_LIMIT = None
# More `cairn convert` arguments for the calibrated conversion (--convert-args).
CONVERT_ARGS = []


def cairn_convert(cairn, m, onnx_path, out, calib, log):
    cmd = [cairn, "convert", onnx_path, "-o", out]
    for i in m["inputs"]:
        cmd += ["--input-shape", "%s=%s" % (i["name"], ",".join(str(d) for d in i["shape"]))]
    cmd += ["--calibrate", calib] if calib else ["--float"]
    if calib and ERROR_LIMIT is not None:
        cmd += ["--int8-error-limit", str(ERROR_LIMIT)]
    if calib:
        cmd += CONVERT_ARGS
    t = time.time()
    rc, so, se = sh(cmd, 1200)
    log.append({"cmd": cmd, "rc": rc, "s": round(time.time() - t, 1)})
    if rc != 0:
        return {"ok": False, "error": error_line(so, se)}
    found = re.search(r"(\d+) ops in int8, (\d+) in f32", so)
    return {
        "ok": True,
        "int8_ops": int(found.group(1)) if found else None,
        "f32_ops": int(found.group(2)) if found else None,
        "stays_f32": [line.split("stays f32:", 1)[1].strip() for line in so.splitlines() if "stays f32:" in line],
        "seconds": round(time.time() - t, 1),
    }


def cairn_run(cairn, m, model, folder, outdir, runs=1):
    """Outputs (corpus order) and the run's milliseconds (the median of `runs` runs after a
    warm-up when runs > 1), or raises with the error line."""
    cmd = [cairn, "run", model, "--output-dir", outdir, "--runs", str(runs)]
    for i in m["inputs"]:
        cmd += ["--input", "%s=%s" % (i["name"], os.path.join(folder, fname(i["name"])))]
    rc, so, se = sh(cmd, 600)
    if rc != 0:
        raise RuntimeError(error_line(so, se))
    ms = float(re.findall(r"([\d.]+) ms", so)[-1])
    return read_outputs(m, outdir), ms


def read_outputs(m, outdir):
    """The outputs `cairn run --output-dir` wrote, in corpus order and shapes."""
    outs = []
    for k, o in enumerate(m["outputs"]):
        path = os.path.join(outdir, stem(o["name"]) + ".npy")
        if not os.path.isfile(path):
            path = os.path.join(outdir, "output%d.npy" % k)
        outs.append(np.load(path).reshape(o["shape"]))
    return outs


def ort_session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_outputs(sess, m, feeds):
    names = [o["name"] for o in m["outputs"]]
    return [np.asarray(x, dtype=np.float32).reshape(o["shape"])
            for x, o in zip(sess.run(names, feeds), m["outputs"])]


def ort_time_ms(sess, feeds_list, runs):
    sess.run(None, feeds_list[0])
    times = []
    for k in range(max(runs, len(feeds_list))):
        t = time.perf_counter()
        sess.run(None, feeds_list[k % len(feeds_list)])
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def ort_qdq(onnx_path, out, calib_feeds):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib_feeds)

        def get_next(self):
            return next(self.it, None)

    def make(per_channel):
        quantize_static(onnx_path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        return ort_session(out)

    try:
        return make(True), "per-channel"
    except Exception:  # noqa: BLE001 - per-axis DequantizeLinear needs opset >= 13
        return make(False), "per-tensor (per-channel failed)"


def cairn_bench(cairn, m, onnx_path, calib, runs, json_out, float_mode, qdq):
    cmd = [cairn, "bench", onnx_path, "--calibrate", calib, "--runs", str(runs), "--warmup", "2",
           "--json", json_out, "--no-tract"] + ([] if float_mode else CONVERT_ARGS)
    if ERROR_LIMIT is not None:
        cmd += ["--int8-error-limit", str(ERROR_LIMIT)]
    for i in m["inputs"]:
        cmd += ["--input-shape", "%s=%s" % (i["name"], ",".join(str(d) for d in i["shape"]))]
    if float_mode:
        cmd.append("--float")
    if qdq:
        cmd += ["--ort-qdq", qdq]
    rc, so, se = sh(cmd, 1800)
    if rc != 0:
        return None, error_line(so, se)
    with open(json_out, encoding="utf-8") as f:
        return {k: v["median_ms"] for k, v in json.load(f)["engines"].items()}, None


# ---------------------------------------------------------------- task metrics


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes, thr):
    """boxes: (class, score, x0, y0, x1, y1); class-wise greedy NMS."""
    kept = []
    for b in sorted(boxes, key=lambda b: -b[1]):
        if all(k[0] != b[0] or iou(k[2:], b[2:]) < thr for k in kept):
            kept.append(b)
    return kept


def match_counts(ref, test):
    """(matched, n_ref, n_test): greedy one-to-one matches of the same class at IoU >= 0.5."""
    used, tp = set(), 0
    for r in ref:
        best = None
        for j, t in enumerate(test):
            if j not in used and t[0] == r[0] and iou(r[2:], t[2:]) >= 0.5:
                if best is None or iou(r[2:], t[2:]) > iou(r[2:], test[best][2:]):
                    best = j
        if best is not None:
            used.add(best)
            tp += 1
    return tp, len(ref), len(test)


def picodet_boxes(outs, height=800, width=608):
    """PicoDet: per level sigmoid class scores and 4x8 DFL bins, centers (i+0.5)*stride."""
    boxes = []
    for level, stride in enumerate([8, 16, 32, 64]):
        scores, reg = outs[level][0], outs[4 + level][0]
        grid_w = -(-width // stride)
        for k in np.nonzero(scores.max(1) >= 0.5)[0]:
            cy, cx = (k // grid_w + 0.5) * stride, (k % grid_w + 0.5) * stride
            r = reg[k].reshape(4, 8).astype(np.float64)
            p = np.exp(r - r.max(1, keepdims=True))
            d = (p / p.sum(1, keepdims=True) * np.arange(8)).sum(1) * stride
            boxes.append((int(scores[k].argmax()), float(scores[k].max()),
                          cx - d[0], cy - d[1], cx + d[2], cy + d[3]))
    return nms(boxes, 0.5)


def yolox_boxes(outs, size=416):
    p = outs[0][0].astype(np.float64)
    grids = []
    for stride in (8, 16, 32):
        n = size // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel(), np.full(n * n, stride)], 1))
    g = np.concatenate(grids)
    xy = (p[:, :2] + g[:, :2]) * g[:, 2:]
    wh = np.exp(np.minimum(p[:, 2:4], 20)) * g[:, 2:]
    score = p[:, 4] * p[:, 5]
    boxes = [(0, float(score[k]), xy[k, 0] - wh[k, 0] / 2, xy[k, 1] - wh[k, 1] / 2,
              xy[k, 0] + wh[k, 0] / 2, xy[k, 1] + wh[k, 1] / 2) for k in np.nonzero(score >= 0.1)[0]]
    return nms(boxes, 0.45)


def mask_iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def ctc_indices(prob):
    idx, out, prev = prob.argmax(-1), [], 0
    for k in idx:
        if k != prev and k != 0:
            out.append(int(k))
        prev = k
    return out


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float(np.array_equal(a, b))


def f1(tp, n_ref, n_test):
    return 1.0 if n_ref + n_test == 0 else 2.0 * tp / (n_ref + n_test)


def metric(m, refs, tests, feeds):
    """The model's task metric of `tests` against `refs` (ORT fp32), over all samples:
    lists of per-sample output lists in corpus order."""
    mid, name = m["id"], m["metric"]["name"]
    pairs = list(zip(refs, tests))
    if mid == "mtcnn_onet":  # face decision at the MTCNN O-Net threshold
        return float(np.mean([(r[2][0, 1] >= 0.7) == (t[2][0, 1] >= 0.7) for r, t in pairs]))
    if name == "top1_agreement":
        return float(np.mean([r[0].argmax() == t[0].argmax() for r, t in pairs]))
    if mid == "ppocr_det_v4":
        return float(np.mean([mask_iou(r[0] >= 0.3, t[0] >= 0.3) for r, t in pairs]))
    if mid == "mtcnn_pnet":
        return float(np.mean([mask_iou(r[1][..., 1] >= 0.6, t[1][..., 1] >= 0.6) for r, t in pairs]))
    if name == "decoded_string_equal":  # equal label sequences <=> equal decoded strings
        return float(np.mean([ctc_indices(r[0][0]) == ctc_indices(t[0][0]) for r, t in pairs]))
    if name == "box_match_iou50":
        decode = picodet_boxes if mid == "picodet_layout_cdla" else yolox_boxes
        counts = np.array([match_counts(decode(r), decode(t)) for r, t in pairs]).sum(0)
        return f1(*counts)
    if mid == "basic_pitch_nmp":  # note posteriorgram (StatefulPartitionedCall:1) cells >= 0.5
        names = [o["name"] for o in m["outputs"]]
        k = names.index("StatefulPartitionedCall:1")
        r = np.concatenate([r[k].ravel() >= 0.5 for r, _ in pairs])
        t = np.concatenate([t[k].ravel() >= 0.5 for _, t in pairs])
        return f1(int((r & t).sum()), int(r.sum()), int(t.sum()))
    if name == "frame_decision_equal":
        r = np.concatenate([r[0].ravel() >= 0.5 for r, _ in pairs])
        t = np.concatenate([t[0].ravel() >= 0.5 for _, t in pairs])
        return float((r == t).mean())
    if mid == "minilm_l3_maskseq":  # masked mean over real tokens (additive mask 0)
        out = []
        for (r, t), f in zip(pairs, feeds):
            real = f["attention_mask"].ravel() >= -0.5
            out.append(cosine(r[0][0][real].mean(0), t[0][0][real].mean(0)))
        return float(np.mean(out))
    if name == "embedding_cosine":
        return float(np.mean([cosine(r[0], t[0]) for r, t in pairs]))
    raise ValueError("no metric for %s (%s)" % (mid, name))


# ---------------------------------------------------------------- one model


def limited_calib(src, dst, limit):
    """`src` itself, or a folder of links to its first `limit` sample folders."""
    dirs = sample_dirs(src, 10 ** 6)
    if limit >= len(dirs):
        return src
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for d in dirs[:limit]:
        os.symlink(d, os.path.join(dst, os.path.basename(d)))
    return dst


def bench_model(m, args, cache):
    mid = m["id"]
    onnx_path = os.path.join(cache, mid + ".onnx")
    work = os.path.join(args.out, mid)
    os.makedirs(work, exist_ok=True)
    rec = {"id": mid, "family": m["family"], "metric": m["metric"]["name"], "errors": {},
           "metric_vs_ort_fp32": {}, "ms": {}, "log": []}
    if not os.path.isfile(onnx_path) or not os.path.isdir(os.path.join(cache, mid, "inputs")):
        rec["errors"]["cache"] = "not in the cache (run fetch.py and inputs.py)"
        return rec
    calib = limited_calib(os.path.join(cache, mid, "calib"), os.path.join(work, "calib"), args.calib_samples)
    folders = sample_dirs(os.path.join(cache, mid, "inputs"), args.samples)
    feeds = [load_feeds(m, f) for f in folders]
    rec["samples"] = len(folders)

    models = {"cairn-int8": os.path.join(work, "int8.cairn"), "cairn-f32": os.path.join(work, "f32.cairn")}
    rec["int8"] = cairn_convert(args.cairn, m, onnx_path, models["cairn-int8"], calib, rec["log"])
    rec["f32"] = cairn_convert(args.cairn, m, onnx_path, models["cairn-f32"], None, rec["log"])

    outs, run_ms = {}, {}
    try:
        fp32 = ort_session(onnx_path)
        outs["ort-fp32"] = [ort_outputs(fp32, m, f) for f in feeds]
    except Exception as e:  # noqa: BLE001 - a row, not a crash
        rec["errors"]["ort-fp32"] = str(e).splitlines()[0]
        return rec
    qdq = os.path.join(work, "qdq.onnx")
    try:
        calib_feeds = [load_feeds(m, d) for d in sample_dirs(calib, 10 ** 6)]
        int8, rec["ort_int8_weights"] = ort_qdq(onnx_path, qdq, calib_feeds)
        outs["ort-int8"] = [ort_outputs(int8, m, f) for f in feeds]
    except Exception as e:  # noqa: BLE001
        rec["errors"]["ort-int8"] = (str(e).splitlines() or [type(e).__name__])[0]
        qdq, int8 = None, None
    for engine in ("cairn-int8", "cairn-f32"):
        kind = engine.split("-")[1]
        if not rec[kind]["ok"]:
            rec["errors"][engine] = "convert: " + rec[kind]["error"]
            continue
        try:
            got = [cairn_run(args.cairn, m, models[engine], f, os.path.join(work, engine, os.path.basename(f)))
                   for f in folders]
            outs[engine] = [o for o, _ in got]
            # Timed warm, like the other engines: the first sample again, `--runs` times.
            _, run_ms[engine] = cairn_run(args.cairn, m, models[engine], folders[0],
                                          os.path.join(work, engine, "timed"), args.runs)
        except Exception as e:  # noqa: BLE001
            rec["errors"][engine] = "run: " + str(e)
    for engine in ("cairn-int8", "cairn-f32", "ort-int8"):
        if engine in outs:
            try:
                rec["metric_vs_ort_fp32"][engine] = metric(m, outs["ort-fp32"], outs[engine], feeds)
            except Exception as e:  # noqa: BLE001
                rec["errors"][engine + " metric"] = str(e).splitlines()[0]
    time_model(m, args, rec, onnx_path, calib, qdq, feeds, fp32, int8, run_ms, work)
    return rec


def time_model(m, args, rec, onnx_path, calib, qdq, feeds, fp32, int8, run_ms, work):
    """Latency by `cairn bench` for one-input models; else `cairn run` and ORT timed here."""
    if len(m["inputs"]) == 1:
        rec["timing"] = "cairn bench"
        if rec["int8"]["ok"]:
            got, err = cairn_bench(args.cairn, m, onnx_path, calib, args.runs,
                                   os.path.join(work, "bench_int8.json"), False, qdq)
            if got:
                rec["ms"].update({k: v for k, v in got.items() if k in ENGINES})
                if "ort-int8-qdq" in got:
                    rec["ms"]["ort-int8"] = got["ort-int8-qdq"]
            else:
                rec["errors"]["bench int8"] = err
        if rec["f32"]["ok"]:
            got, err = cairn_bench(args.cairn, m, onnx_path, calib, args.runs,
                                   os.path.join(work, "bench_f32.json"), True, None)
            if got:
                rec["ms"].setdefault("cairn-f32", got.get("cairn-f32"))
                rec["ms"].setdefault("ort-fp32", got.get("ort-fp32"))
            else:
                rec["errors"]["bench f32"] = err
    else:
        rec["timing"] = "cairn run --runs N + ORT in Python"
        rec["ms"].update(run_ms)
    # Whatever `cairn bench` did not time, ORT is timed here.
    if "ort-fp32" not in rec["ms"]:
        rec["ms"]["ort-fp32"] = ort_time_ms(fp32, feeds, args.runs)
    if "ort-int8" not in rec["ms"] and int8 is not None:
        rec["ms"]["ort-int8"] = ort_time_ms(int8, feeds, args.runs)
    for engine in ("cairn-int8", "cairn-f32"):
        if engine not in rec["ms"] and engine in run_ms:
            rec["ms"][engine] = run_ms[engine]
            rec["timing"] += "; %s from cairn run" % engine


# ---------------------------------------------------------------- report


def fmt(v, digits=3):
    return "-" if v is None else ("%.*f" % (digits, v))


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def table(records):
    head = ["model", "family", "int8?", "f32?", "f32 ops", "m int8", "m f32", "m ort8",
            "ms c-int8", "ms c-f32", "ms ort32", "ms ort8", "c8/ort32", "c8/ort8", "timing"]
    rows = []
    for r in records:
        ms, mv = r.get("ms", {}), r.get("metric_vs_ort_fp32", {})
        i8, f32 = r.get("int8", {}), r.get("f32", {})
        rows.append([
            r["id"], r["family"], "yes" if i8.get("ok") else "no", "yes" if f32.get("ok") else "no",
            str(i8.get("f32_ops")) if i8.get("ok") else "-",
            fmt(mv.get("cairn-int8")), fmt(mv.get("cairn-f32")), fmt(mv.get("ort-int8")),
            fmt(ms.get("cairn-int8"), 2), fmt(ms.get("cairn-f32"), 2), fmt(ms.get("ort-fp32"), 2),
            fmt(ms.get("ort-int8"), 2),
            fmt(ratio(ms.get("cairn-int8"), ms.get("ort-fp32")), 2),
            fmt(ratio(ms.get("cairn-int8"), ms.get("ort-int8")), 2),
            "bench" if r.get("timing") == "cairn bench" else ("run+py" if r.get("timing") else "-"),
        ])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out.append("")
    out.append("metric: the model's task metric against ONNX Runtime fp32 on the same samples "
               "(corpus.json); ms: median latency, 1 thread; c8 = cairn int8.")
    for r in records:
        if r.get("ort_int8_weights", "per-channel") != "per-channel":
            out.append("%s ort-int8: %s" % (r["id"], r["ort_int8_weights"]))
        for what, err in r.get("errors", {}).items():
            out.append("%s %s: %s" % (r["id"], what, err))
    return "\n".join(out)


def svg_chart(records, path):
    """Grouped bars of median latency per engine, log scale, written by hand (no matplotlib)."""
    colors = {"cairn-int8": "#1f77b4", "cairn-f32": "#aec7e8", "ort-fp32": "#ff7f0e", "ort-int8": "#ffbb78"}
    recs = [r for r in records if r.get("ms")]
    values = [v for r in recs for v in r["ms"].values() if v]
    lo = 10 ** np.floor(np.log10(min(values))) if values else 0.01
    hi = 10 ** np.ceil(np.log10(max(values))) if values else 1000.0
    bar, gap, left, top, plot_h = 12, 18, 70, 40, 300
    width = left + len(recs) * (4 * bar + gap) + 160
    height = top + plot_h + 140
    y = lambda v: top + plot_h * (1 - (np.log10(v) - np.log10(lo)) / (np.log10(hi) - np.log10(lo)))  # noqa: E731
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
             'font-size="11">' % (width, height),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="%d" y="20" font-size="14">cairn and ONNX Runtime on the corpus: median ms per '
             'inference, 1 thread (log scale)</text>' % left]
    decade = lo
    while decade <= hi * 1.001:
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, width - 150, y(decade), y(decade)))
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (left - 4, y(decade) + 4, decade))
        decade *= 10
    for k, r in enumerate(recs):
        x0 = left + k * (4 * bar + gap) + gap / 2
        for j, engine in enumerate(ENGINES):
            v = r["ms"].get(engine)
            if v:
                parts.append('<rect x="%.1f" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s %s: %.3f ms'
                             '</title></rect>' % (x0 + j * bar, y(v), bar - 1, top + plot_h - y(v),
                                                  colors[engine], r["id"], engine, v))
        cx = x0 + 2 * bar
        parts.append('<text transform="translate(%.1f,%d) rotate(45)">%s</text>' % (cx, top + plot_h + 12, r["id"]))
    for j, engine in enumerate(ENGINES):
        ly = top + 10 + j * 18
        parts.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (width - 140, ly, colors[engine]))
        parts.append('<text x="%d" y="%d">%s</text>' % (width - 122, ly + 10, engine))
    parts.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated model ids")
    ap.add_argument("--out", default=os.path.join(REPO, "target", "corpus"))
    ap.add_argument("--cairn", default=os.path.join(REPO, "target", "release", "cairn"))
    ap.add_argument("--samples", type=int, default=8, help="evaluation samples per model")
    ap.add_argument("--calib-samples", type=int, default=16, help="calibration samples per model")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per engine")
    ap.add_argument("--int8-error-limit", type=float, default=None,
                    help="passed to cairn convert/bench: keep ops whose int8 form adds more than "
                         "this percent of error in f32 (0: off, also the output guard; "
                         "absent: cairn's default, the output guard)")
    ap.add_argument("--convert-args", default="",
                    help="more arguments for the calibrated conversion, e.g. '--method 99.99'")
    args = ap.parse_args()
    global ERROR_LIMIT, CONVERT_ARGS
    ERROR_LIMIT = args.int8_error_limit
    CONVERT_ARGS = shlex.split(args.convert_args)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice on every model
    if not os.path.isfile(args.cairn):
        sys.exit("%s not found: cargo build --release -p cairn-cli" % args.cairn)
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    corpus, cache = load_corpus(), cache_dir()
    ids = set(args.only.split(",")) if args.only else None
    records = []
    for m in corpus["models"]:
        if ids and m["id"] not in ids:
            continue
        t = time.time()
        print("%s ..." % m["id"], flush=True)
        try:
            rec = bench_model(m, args, cache)
        except Exception as e:  # noqa: BLE001 - the script reports, it does not crash
            rec = {"id": m["id"], "family": m["family"], "errors": {"script": "%s: %s" % (type(e).__name__, e)}}
        rec["seconds"] = round(time.time() - t, 1)
        print("  %.0f s; metric %s; ms %s; errors %s" % (rec["seconds"], rec.get("metric_vs_ort_fp32"),
                                                         rec.get("ms"), rec.get("errors")), flush=True)
        records.append(rec)
        with open(os.path.join(args.out, "bench.json"), "w", encoding="utf-8") as f:
            json.dump({"samples": args.samples, "calib_samples": args.calib_samples, "runs": args.runs,
                       "onnxruntime": ort.__version__, "models": records}, f, indent=1)
    svg_chart(records, os.path.join(args.out, "latency.svg"))
    report = table(records)
    print()
    print(report)
    with open(os.path.join(args.out, "table.txt"), "w", encoding="utf-8") as f:
        f.write(report + "\n")
    print("\nwrote %s/bench.json, table.txt, latency.svg" % args.out)


if __name__ == "__main__":
    main()

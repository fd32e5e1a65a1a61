#!/usr/bin/env python3
"""Models quantized by ONNX Runtime's `quantize_dynamic`, as users bring them.

For each corpus model (or --only id,..) that has MatMul, Gemm, LSTM, GRU or Conv nodes:
  - `onnxruntime.quantization.quantize_dynamic` (its defaults: int8 weights, activations
    quantized at run time) writes <out>/<id>/dynamic.onnx;
  - `cairn convert` of that model without calibration samples (mode `dynamic`: the int8
    weights kept, rows quantized at run time) and `cairn run` on every sample;
  - ONNX Runtime fp32 on the original model and ONNX Runtime on the dynamic one;
  - the task metric of both dynamic engines against ORT fp32 (bench.py's `metric`), the
    latency of each (median of --runs, 1 thread; cairn from `cairn run --runs`) and the
    file sizes.

    cargo build --release -p cairn-cli
    .venv/bin/python models/corpus/dynamic.py [--only ID,..] [--out target/corpus-dynamic]

Writes <out>/dynamic.json and prints one table.
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import bench  # noqa: E402  (re-executes under the repo venv when needed)
from bench import cairn_run, load_feeds, metric, ort_outputs, ort_session, ort_time_ms, sample_dirs, sh  # noqa: E402
from fetch import cache_dir, load_corpus  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

QUANTIZABLE = {"MatMul", "Gemm", "LSTM", "GRU", "Conv"}


def one(m, args, cache):
    mid = m["id"]
    src = os.path.join(cache, mid + ".onnx")
    work = os.path.join(args.out, mid)
    os.makedirs(work, exist_ok=True)
    rec = {"id": mid, "family": m["family"], "errors": {}, "metric": {}, "ms": {}}
    ops = {n.op_type for n in onnx.load(src, load_external_data=False).graph.node}
    if not ops & QUANTIZABLE:
        rec["errors"]["skip"] = "no MatMul, Gemm, LSTM, GRU or Conv"
        return rec
    dyn = os.path.join(work, "dynamic.onnx")
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        quantize_dynamic(src, dyn, weight_type=QuantType.QInt8)
    except Exception as e:  # noqa: BLE001 - a row, not a crash
        rec["errors"]["quantize_dynamic"] = str(e).splitlines()[0][:200]
        return rec
    rec["bytes"] = {"onnx-fp32": os.path.getsize(src), "onnx-dynamic": os.path.getsize(dyn)}
    folders = sample_dirs(os.path.join(cache, mid, "inputs"), args.samples)
    feeds = [load_feeds(m, f) for f in folders]
    fp32 = ort_session(src)
    ref = [ort_outputs(fp32, m, f) for f in feeds]
    rec["ms"]["ort-fp32"] = ort_time_ms(fp32, feeds, args.runs)
    try:
        d = ort_session(dyn)
        got = [ort_outputs(d, m, f) for f in feeds]
        rec["metric"]["ort-dynamic"] = metric(m, ref, got, feeds)
        rec["ms"]["ort-dynamic"] = ort_time_ms(d, feeds, args.runs)
    except Exception as e:  # noqa: BLE001
        rec["errors"]["ort-dynamic"] = str(e).splitlines()[0][:200]
    model = os.path.join(work, "dynamic.cairn")
    cmd = [args.cairn, "convert", dyn, "-o", model]
    for i in m["inputs"]:
        cmd += ["--input-shape", "%s=%s" % (i["name"], ",".join(str(x) for x in i["shape"]))]
    rc, so, se = sh(cmd, 1200)
    if rc != 0:
        rec["errors"]["cairn convert"] = bench.error_line(so, se)
        return rec
    mode = re.search(r"mode (\w+)", so)
    w8 = re.search(r"(\d+) FullyConnected ops on int8 weights", so)
    rec["mode"] = mode.group(1) if mode else None
    rec["w8_ops"] = int(w8.group(1)) if w8 else 0
    rec["bytes"]["cairn"] = os.path.getsize(model)
    try:
        runs = [cairn_run(args.cairn, m, model, f, os.path.join(work, "out", os.path.basename(f))) for f in folders]
        rec["metric"]["cairn-dynamic"] = metric(m, ref, [o for o, _ in runs], feeds)
        _, rec["ms"]["cairn-dynamic"] = cairn_run(args.cairn, m, model, folders[0],
                                                  os.path.join(work, "timed"), args.runs)
    except Exception as e:  # noqa: BLE001
        rec["errors"]["cairn run"] = str(e)
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=os.path.join(bench.REPO, "target", "corpus-dynamic"))
    ap.add_argument("--cairn", default=os.path.join(bench.REPO, "target", "release", "cairn"))
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    corpus = load_corpus()
    only = [s for s in args.only.split(",") if s]
    models = [m for m in corpus["models"] if not only or m["id"] in only]
    cache = cache_dir()
    recs = []
    for m in models:
        print(m["id"], "...", flush=True)
        r = one(m, args, cache)
        print("  ", {k: r[k] for k in ("metric", "ms", "errors") if r.get(k)}, flush=True)
        recs.append(r)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "dynamic.json"), "w", encoding="utf-8") as f:
        json.dump(recs, f, indent=1)
    head = ("model", "mode", "w8", "m ort-dyn", "m cairn", "ms ort32", "ms ort-dyn", "ms cairn",
            "c/ort-dyn", "c/ort32", "MB onnx-dyn", "MB cairn")
    rows = []
    for r in recs:
        if "skip" in r["errors"]:
            continue
        ms, mt, b = r["ms"], r["metric"], r.get("bytes", {})
        fm = lambda v: "-" if v is None else "%.3f" % v  # noqa: E731
        ra = lambda a, c: "-" if a is None or c is None else "%.2f" % (a / c)  # noqa: E731
        mb = lambda v: "-" if v is None else "%.1f" % (v / 1e6)  # noqa: E731
        rows.append((r["id"], r.get("mode") or "-", str(r.get("w8_ops", "-")), fm(mt.get("ort-dynamic")),
                     fm(mt.get("cairn-dynamic")), fm(ms.get("ort-fp32")), fm(ms.get("ort-dynamic")),
                     fm(ms.get("cairn-dynamic")), ra(ms.get("cairn-dynamic"), ms.get("ort-dynamic")),
                     ra(ms.get("cairn-dynamic"), ms.get("ort-fp32")), mb(b.get("onnx-dynamic")), mb(b.get("cairn"))))
    widths = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    print()
    for row in [head, tuple("-" * w for w in widths)] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    for r in recs:
        errs = {k: v for k, v in r["errors"].items() if k != "skip"}
        if errs:
            print("%s: %s" % (r["id"], errs))
    print("\nmetric: the model's task metric against ONNX Runtime fp32 on the same samples; ms: median, 1 thread.")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Recurrent-model benchmark: a cairn binary against ONNX Runtime, f32 and int8, 1 thread.

For each model fetched by fetch.py (or --only name,..), with its inputs made by inputs.py:
  - `cairn convert` to f32 and `cairn convert --calibrate <inputs>/calib` to int8, both
    with the `--input-shape` arguments of <inputs>/shapes.txt;
  - latency: the median that `cairn run --runs N --threads 1` prints, best of --repeats
    separate invocations, for each of the two .cairn files; ONNX Runtime (intra_op 1,
    inter_op 1, sequential, CPU provider): median of N `session.run` after 5 warm-up
    runs, best of --repeats rounds in one session;
  - accuracy: the max abs difference of every cairn output (`--output-dir`) against
    ONNX Runtime on the same input;
  - a `cairn run --profile` of the f32 model.
A model that fails anywhere is a row that says so, never a crash.

    cargo build --release -p cairn-cli
    .venv/bin/python models/recurrent/bench.py [--cairn PATH] [--out DIR] [--only NAME,..]
        [--runs 40] [--repeats 3]

Writes <out>/results.json (every median), <out>/results.md (the table it prints) and,
per model, <out>/<name>/: f32.cairn, int8.cairn, log.txt (convert and run output),
f32_out/ and int8_out/ (cairn outputs), f32_profile.txt.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:
    sys.exit("%s: run this with the repo venv, .venv/bin/python models/recurrent/bench.py" % e)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True  # no __pycache__ inside the repository
sys.path.insert(0, HERE)
from fetch import MODELS, PACKAGES, cache_dir, model_path  # noqa: E402

ORT_WARMUP = 5


# ---------------------------------------------------------------- processes


def sh(cmd, log=None):
    """(returncode, stdout + stderr); the command and its output are appended to log."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    out = p.stdout + p.stderr
    if log:
        with open(log, "a") as fh:
            fh.write("$ " + " ".join(cmd) + "\n" + out + "\n")
    return p.returncode, out


def error_line(out, rc=None):
    """The line that says what went wrong: cairn's 'Error: ...' line (a backtrace follows it)."""
    lines = out.strip().splitlines()
    if not lines:
        return "exit status %s, no output" % rc
    return next((l for l in lines if l.startswith("Error")), lines[-1])[:200]


# ---------------------------------------------------------------- measurements


def rnn_kinds(path):
    """'6 LSTM', '4 GRU', ...: the recurrent nodes of the ONNX graph."""
    kinds = {}
    for n in onnx.load(path).graph.node:
        if n.op_type in ("LSTM", "GRU", "RNN"):
            kinds[n.op_type] = kinds.get(n.op_type, 0) + 1
    return ", ".join("%d %s" % (v, k) for k, v in kinds.items())


def ort_bench(path, feeds, runs, repeats):
    """({output name: array}, [median ms of each round])."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    outs = s.run(None, feeds)
    meds = []
    for _ in range(repeats):
        for _ in range(ORT_WARMUP):
            s.run(None, feeds)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            s.run(None, feeds)
            ts.append(time.perf_counter() - t0)
        meds.append(float(np.median(ts)) * 1e3)
    return dict(zip(names, outs)), meds


def cairn_time(cairn, model, in_args, runs, repeats):
    """([median ms of each invocation], None) or (None, error line).

    `cairn run --runs N` does one warm-up run, then prints 'median of N runs ...' and
    the median on the next line as '<x> ms'."""
    meds = []
    for _ in range(repeats):
        rc, out = sh([cairn, "run", model] + in_args + ["--runs", str(runs), "--threads", "1"])
        m = re.findall(r"([0-9.]+) ms", out.split("median of")[-1]) if "median of" in out else []
        if rc != 0 or not m:
            return None, error_line(out, rc)
        meds.append(float(m[0]))
    return meds, None


def output_file(outdir, names, i, k):
    """cairn's --output-dir file for ONNX output number i, named k."""
    for f in [k.replace("/", "_")] + names[i:i + 1] + ["output%d" % i]:
        p = os.path.join(outdir, f.replace("/", "_") + ".npy")
        if os.path.exists(p):
            return p
    raise FileNotFoundError("no cairn output for %s in %s" % (k, outdir))


def cairn_mode(args, mode, onnx_path, inp, od, in_args, shapes, ref, log):
    """Convert, time and check one mode ('f32' or 'int8'); a dict for results.json."""
    cm = os.path.join(od, mode + ".cairn")
    cmd = [args.cairn, "convert", onnx_path, "-o", cm] + shapes
    if mode == "int8":
        cmd += ["--calibrate", os.path.join(inp, "calib")]
    rc, out = sh(cmd, log)
    if rc != 0:
        return {"error": error_line(out, rc)}
    r = {}
    # 'wrote X.cairn (N bytes, arena M bytes, K ops, mode float) ...'
    m = re.search(r"wrote .*\((\d+) bytes, arena (\d+) bytes, (\d+) ops, mode (\w+)", out)
    if not m:
        return {"error": "no 'wrote ...' line in the convert output"}
    r["flash"], r["arena"], r["ops"], r["mode"] = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
    # int8 conversions also say 'N ops in int8, M in f32'
    m = re.search(r"(\d+) ops in int8, (\d+) in f32", out)
    r["ops_int8"] = int(m.group(1)) if m else (0 if mode == "f32" else None)
    r["ms_all"], err = cairn_time(args.cairn, cm, in_args, args.runs, args.repeats)
    if err:
        r["error"] = err
        return r
    r["ms"] = min(r["ms_all"])

    outdir = os.path.join(od, mode + "_out")
    rc, out = sh([args.cairn, "run", cm] + in_args + ["--output-dir", outdir], log)
    if rc != 0:
        r["error"] = error_line(out, rc)
        return r
    with open(cm + ".names.json") as fh:
        names = json.load(fh).get("outputs") or []
    diffs = {}
    for i, (k, v) in enumerate(ref.items()):
        got = np.load(output_file(outdir, names, i, k))
        diffs[k] = float(np.max(np.abs(got.astype(np.float64).reshape(-1) - v.astype(np.float64).reshape(-1))))
    out0 = next(iter(ref.values()))
    r["max_abs_diff_all"] = max(diffs.values())
    r["max_abs_diff_out0"] = diffs[next(iter(ref))]
    r["out0_range"] = [float(out0.min()), float(out0.max())]
    if mode == "f32":
        rc, prof = sh([args.cairn, "run", cm] + in_args +
                      ["--runs", str(args.runs), "--threads", "1", "--profile"])
        with open(os.path.join(od, "f32_profile.txt"), "w") as fh:
            fh.write(prof)
    return r


def bench_model(args, cache, name, pkg, inner):
    onnx_path = model_path(cache, name)
    inp = os.path.join(cache, "inputs", name)
    row = {"model": name + ".onnx", "package": "%s %s" % (pkg, PACKAGES[pkg]["version"]), "source": inner}
    if not os.path.isfile(os.path.join(inp, "shapes.txt")):
        row["error"] = "no inputs in %s: run models/recurrent/inputs.py" % inp
        return row
    od = os.path.join(args.out, name)
    os.makedirs(od, exist_ok=True)
    log = os.path.join(od, "log.txt")
    open(log, "w").close()
    with open(os.path.join(inp, "shapes.txt")) as fh:
        shapes = fh.read().split()
    xdir = os.path.join(inp, "x")
    feeds = {f[:-4]: np.load(os.path.join(xdir, f)) for f in sorted(os.listdir(xdir)) if f.endswith(".npy")}
    in_args = []
    for k in sorted(feeds):
        in_args += ["--input", "%s=%s" % (k, os.path.join(xdir, k + ".npy"))]
    row["recurrent"] = rnn_kinds(onnx_path)
    # the signal inputs; the zero recurrent states are left out
    row["input"] = {k: list(v.shape) for k, v in feeds.items() if v.size > 1 and v.any()}

    ref, row["ort_ms_all"] = ort_bench(onnx_path, feeds, args.runs, args.repeats)
    row["ort_ms"] = min(row["ort_ms_all"])
    for mode in ("f32", "int8"):
        row[mode] = cairn_mode(args, mode, onnx_path, inp, od, in_args, shapes, ref, log)
    return row


# ---------------------------------------------------------------- report


def table(rows, meta):
    """The markdown table of results.md."""
    L = ["cairn: `%s`; %s; %s; onnxruntime %s; %d runs a median, best of %d, 1 thread" %
         (meta["cairn"], meta["date"], meta["cpu"], meta["onnxruntime"], meta["runs"], meta["repeats"]), "",
         "| model file | package | recurrent nodes | ops (f32 / int8; int8 ops in int8) | cairn f32 ms "
         "| cairn int8 ms | ORT ms | f32/ORT | max abs diff f32 vs ORT (out0 / all outputs) "
         "| int8 out0 max abs diff |",
         "|---|---|---|---|---|---|---|---|---|---|"]

    def f(r, k, fmt="%.3f"):
        return (fmt % r[k]) if isinstance(r, dict) and r.get(k) is not None else "err"

    for row in rows:
        a, b = row.get("f32", {}), row.get("int8", {})
        ratio = ("%.2f×" % (a["ms"] / row["ort_ms"])) if a.get("ms") and row.get("ort_ms") else "-"
        L.append("| %s | %s | %s | %s / %s; %s | %s | %s | %s | %s | %s / %s | %s |" % (
            row["model"], row["package"], row.get("recurrent", "?"),
            f(a, "ops", "%d"), f(b, "ops", "%d"), f(b, "ops_int8", "%d"),
            f(a, "ms"), f(b, "ms"), f(row, "ort_ms"), ratio,
            f(a, "max_abs_diff_out0", "%.2e"), f(a, "max_abs_diff_all", "%.2e"),
            f(b, "max_abs_diff_out0", "%.2e")))
    errors = ["- %s%s: %s" % (row["model"], where, r["error"])
              for row in rows for where, r in (("", row), (" f32", row.get("f32", {})),
                                               (" int8", row.get("int8", {})))
              if isinstance(r, dict) and r.get("error")]
    if errors:
        L += ["", "errors:"] + errors
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cairn", default=os.path.join(REPO, "target", "release", "cairn"))
    ap.add_argument("--out", default=os.path.join(REPO, "target", "recurrent"))
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--runs", type=int, default=40, help="timed runs a median")
    ap.add_argument("--repeats", type=int, default=3, help="medians per engine; the best is reported")
    args = ap.parse_args()
    args.cairn = os.path.abspath(args.cairn)
    args.out = os.path.abspath(args.out)
    if not os.path.isfile(args.cairn):
        sys.exit("%s not found: cargo build --release -p cairn-cli" % args.cairn)
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - {m[0] for m in MODELS}
    if unknown:
        sys.exit("unknown model names: %s" % ", ".join(sorted(unknown)))
    cache = cache_dir()
    os.makedirs(args.out, exist_ok=True)

    meta = {"cairn": args.cairn, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(),
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                         if l.startswith("model name")), "?") if os.path.isfile("/proc/cpuinfo") else "?",
            "onnxruntime": ort.__version__, "runs": args.runs, "repeats": args.repeats, "cache": cache}
    rows = []
    for name, pkg, inner, _, _ in MODELS:
        if only and name not in only:
            continue
        print("==", name, flush=True)
        if not os.path.isfile(model_path(cache, name)):
            row = {"model": name + ".onnx", "package": "%s %s" % (pkg, PACKAGES[pkg]["version"]),
                   "source": inner, "error": "not in %s: run models/recurrent/fetch.py" % cache}
        else:
            try:
                row = bench_model(args, cache, name, pkg, inner)
            except Exception as e:  # noqa: BLE001 - the script reports, it does not crash
                row = {"model": name + ".onnx", "package": "%s %s" % (pkg, PACKAGES[pkg]["version"]),
                       "source": inner, "error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(row), flush=True)
        rows.append(row)
        with open(os.path.join(args.out, "results.json"), "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)

    report = table(rows, meta)
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(report + "\n")
    print(report)


if __name__ == "__main__":
    main()

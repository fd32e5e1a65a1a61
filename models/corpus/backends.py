#!/usr/bin/env python3
"""Every corpus model on every backend: do the accelerators give the CPU's answer?

For each model of corpus.json (or --only id,..) whose int8 model `bench.py` converted
(`<out>/<id>/int8.cairn`), run `cairn run --backend B` for each backend of --backends on
the first --samples samples, and report per backend:
  - how many ops the backend took (the `gpu: N of M ops` / `ort: ...` line cairn prints);
  - whether every output equals the CPU backend's, byte for byte, on every sample, and
    the largest absolute difference where it does not;
  - the model's task metric against ONNX Runtime fp32 (bench.py's `metric`), for the CPU
    backend and for this one.
The binary must be built with the backends asked for:

    cargo build --release -p cairn-cli --features gpu
    .venv/bin/python models/corpus/bench.py            # converts into target/corpus
    .venv/bin/python models/corpus/backends.py [--backends gpu,ort] [--samples 4]
        [--only ID,..] [--out target/corpus] [--cairn target/release/cairn]

Writes <out>/backends.json and prints a table. A model that fails anywhere is a row with
the error, never a crash. On a machine whose only Vulkan device is Mesa's lavapipe the
GPU backend runs on the CPU, slowly: this checks answers, not speed.
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import bench  # noqa: E402  (re-executes under the repo venv when numpy is missing)
from bench import np, sh, error_line, sample_dirs, load_feeds, read_outputs, ort_session, ort_outputs, metric  # noqa: E402
from fetch import cache_dir, load_corpus  # noqa: E402
from inputs import fname  # noqa: E402


def run(cairn, m, model, folder, outdir, backend):
    """Outputs (corpus order) and the placement line cairn printed, or raises."""
    cmd = [cairn, "run", model, "--output-dir", outdir, "--backend", backend]
    for i in m["inputs"]:
        cmd += ["--input", "%s=%s" % (i["name"], os.path.join(folder, fname(i["name"])))]
    rc, so, se = sh(cmd, 1800)
    if rc != 0:
        raise RuntimeError(error_line(so, se))
    placed = re.search(r"^(gpu|ort): (\d+) of (\d+) ops.*$", so + "\n" + se, re.M)
    return read_outputs(m, outdir), (placed.group(0) if placed else None)


def check_model(m, args, cache):
    mid = m["id"]
    model = os.path.join(args.out, mid, "int8.cairn")
    rec = {"id": mid, "errors": {}, "backends": {}}
    if not os.path.isfile(model):
        rec["errors"]["model"] = "no %s (run bench.py first)" % model
        return rec
    folders = sample_dirs(os.path.join(cache, mid, "inputs"), args.samples)
    feeds = [load_feeds(m, f) for f in folders]
    rec["samples"] = len(folders)
    try:
        ref = [ort_outputs(ort_session(os.path.join(cache, mid + ".onnx")), m, f) for f in feeds]
    except Exception as e:  # noqa: BLE001 - a row, not a crash
        rec["errors"]["ort-fp32"] = str(e).splitlines()[0]
        ref = None
    outs = {}
    for b in ["cpu"] + args.backends:
        work = os.path.join(args.out, mid, "backend-" + b.replace(":", "_"))
        try:
            got = [run(args.cairn, m, model, f, os.path.join(work, os.path.basename(f)), b) for f in folders]
        except Exception as e:  # noqa: BLE001
            rec["errors"][b] = str(e)
            continue
        outs[b] = [o for o, _ in got]
        r = {"placement": got[0][1]}
        if ref is not None:
            try:
                r["metric_vs_ort_fp32"] = metric(m, ref, outs[b], feeds)
            except Exception as e:  # noqa: BLE001
                rec["errors"][b + " metric"] = str(e).splitlines()[0]
        if b != "cpu" and "cpu" in outs:
            pairs = [(c, t) for cs, ts in zip(outs["cpu"], outs[b]) for c, t in zip(cs, ts)]
            r["equal_to_cpu"] = all(c.tobytes() == t.tobytes() for c, t in pairs)
            r["max_abs_diff"] = float(max(np.abs(c.astype(np.float64) - t).max() for c, t in pairs))
        rec["backends"][b] = r
    return rec


def table(records, backends):
    head = ["model", "cpu metric"]
    for b in backends:
        head += [b + " ops", b + " = cpu", b + " max diff", b + " metric"]
    rows = [head]
    for r in records:
        row = [r["id"], bench.fmt(r["backends"].get("cpu", {}).get("metric_vs_ort_fp32"))]
        for b in backends:
            x = r["backends"].get(b)
            if x is None:
                row += ["error", "-", "-", "-"]
                continue
            placed = re.search(r"(\d+) of (\d+)", x.get("placement") or "")
            row += [
                "%s/%s" % placed.groups() if placed else "?",
                "yes" if x.get("equal_to_cpu") else "NO",
                "%.3g" % x.get("max_abs_diff", float("nan")),
                bench.fmt(x.get("metric_vs_ort_fp32")),
            ]
        rows.append(row)
    widths = [max(len(str(row[k])) for row in rows) for k in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    errs = ["%s %s: %s" % (r["id"], k, v) for r in records for k, v in r["errors"].items()]
    return "\n".join(lines + ([""] + errs if errs else []))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="gpu", help="comma list of cpu's rivals: gpu, ort, ort:EP")
    p.add_argument("--only", default="", help="comma list of model ids")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--out", default=os.path.join(bench.REPO, "target", "corpus"))
    p.add_argument("--cairn", default=os.path.join(bench.REPO, "target", "release", "cairn"))
    args = p.parse_args()
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip() and b.strip() != "cpu"]
    only = {s for s in args.only.split(",") if s}
    cache = cache_dir()
    records = []
    for m in load_corpus()["models"]:
        if only and m["id"] not in only:
            continue
        print("%s ..." % m["id"], file=sys.stderr, flush=True)
        records.append(check_model(m, args, cache))
    with open(os.path.join(args.out, "backends.json"), "w") as f:
        json.dump(records, f, indent=1)
    print(table(records, args.backends))


if __name__ == "__main__":
    main()

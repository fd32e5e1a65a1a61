#!/usr/bin/env python3
"""The ANN libraries a user would pick instead, on exactly the vectors of `examples/bench.rs`.

`examples/bench.rs` calls this itself when CAIRN_COMPARE=1 (same run, same vectors):

    CAIRN_COMPARE=1 cargo run --release -p cairn-memory --features std --example bench -- 100000 1

It writes base.npy / queries.npy (int8) to a temporary folder and runs
`ann_compare.py compare DIR`: hnswlib (f32, M=16, ef_construction=200) and usearch (M=16,
f32 and i8), one thread each, recall@10 against exact cosine and ms per query.

`ann_compare.py embed DIR` makes real embeddings instead of synthetic clusters: the first
hidden layer (64-d, after ReLU) of the bundled digits model over scikit-learn's digits,
each image shifted by up to 2 pixels and with pixel noise (100,000 base vectors from the
1,437 training images; 200 queries from the 360 held-out ones), quantized per row to int8.
Pass CAIRN_DATA=DIR to the bench to use them.
"""
import sys
import time

import numpy as np


def load(d):
    base = np.load(f"{d}/base.npy").astype(np.float32)
    queries = np.load(f"{d}/queries.npy").astype(np.float32)
    return base, queries


def recall(found, exact):
    return sum(len(set(f) & set(e)) for f, e in zip(found, exact)) / exact.size


def compare(d):
    base, queries = load(d)
    bn = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
    qn = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    exact = np.argsort(-(qn @ bn.T), axis=1)[:, :10]
    n, dim = base.shape

    import hnswlib

    index = hnswlib.Index(space="cosine", dim=dim)
    index.set_num_threads(1)
    t = time.perf_counter()
    index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=7)
    index.add_items(base, np.arange(n), num_threads=1)
    print(f"hnswlib f32 build ({n} x {dim}, M=16, ef_construction=200): {time.perf_counter() - t:.2f} s")
    for ef in [10, 20, 40, 80, 160]:
        index.set_ef(ef)
        t = time.perf_counter()
        found = [index.knn_query(q[None], k=10)[0][0] for q in queries]
        ms = (time.perf_counter() - t) * 1e3 / len(queries)
        print(f"hnswlib f32 ef {ef:>3}: recall@10 {recall(found, exact):.3f}, {ms:.3f} ms per query")

    try:
        from usearch.index import Index
    except ImportError:
        print("usearch not installed (.venv/bin/pip install usearch): skipped")
        return
    for dtype, data in [("f32", bn), ("i8", np.load(f"{d}/base.npy"))]:
        idx = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=16, expansion_add=200)
        t = time.perf_counter()
        idx.add(np.arange(n), data, threads=1)
        print(f"usearch {dtype} build (M=16, expansion_add=200): {time.perf_counter() - t:.2f} s")
        qs = qn if dtype == "f32" else np.load(f"{d}/queries.npy")
        for ef in [20, 40, 80, 160]:
            idx.expansion_search = ef
            t = time.perf_counter()
            found = [idx.search(q, 10, threads=1).keys for q in qs]
            ms = (time.perf_counter() - t) * 1e3 / len(qs)
            print(f"usearch {dtype} ef {ef:>3}: recall@10 {recall(found, exact):.3f}, {ms:.3f} ms per query")


def embed(d):
    import onnx
    from onnx import numpy_helper
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    m = onnx.load("models/zoo/digits/digits_mlp.onnx")
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    dg = load_digits()
    x = (dg.data / 16.0).astype(np.float32).reshape(-1, 8, 8)
    xtr, xte = train_test_split(x, test_size=0.2, random_state=127, stratify=dg.target)
    rng = np.random.default_rng(20261127)

    def augment(imgs, count):
        out = np.empty((count, 64), np.float32)
        for i in range(count):
            img = imgs[rng.integers(len(imgs))]
            dy, dx = rng.integers(-2, 3, size=2)
            img = np.roll(np.roll(img, dy, axis=0), dx, axis=1)
            img = np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1)
            out[i] = img.reshape(64)
        return out

    def features(xs):
        return np.maximum(xs @ w["w0"] + w["b0"], 0)

    def q8(f):
        peak = np.maximum(np.abs(f).max(axis=1, keepdims=True), 1e-12)
        return np.round(f / peak * 127).astype(np.int8)

    np.save(f"{d}/base.npy", q8(features(augment(xtr, 100_000))))
    np.save(f"{d}/queries.npy", q8(features(augment(xte, 200))))
    print(f"wrote {d}/base.npy (100000 x 64) and {d}/queries.npy (200 x 64)")


if __name__ == "__main__":
    {"compare": compare, "embed": embed}[sys.argv[1]](sys.argv[2])

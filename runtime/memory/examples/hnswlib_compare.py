#!/usr/bin/env python3
"""hnswlib (f32, M=16) on exactly the vectors and queries of `examples/bench.rs`:

    CAIRN_DUMP=/tmp cargo run --release -p cairn-memory --features std --example bench -- 100000 2
    .venv/bin/pip install hnswlib && .venv/bin/python runtime/memory/examples/hnswlib_compare.py /tmp

Prints build time, then recall@10 against exact cosine and ms per query (one thread) for
several ef values.
"""
import sys
import time

import hnswlib
import numpy as np

d = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
base = np.load(f"{d}/base.npy").astype(np.float32)
queries = np.load(f"{d}/queries.npy").astype(np.float32)
bn = base / np.linalg.norm(base, axis=1, keepdims=True)
qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
exact = np.argsort(-(qn @ bn.T), axis=1)[:, :10]
index = hnswlib.Index(space="cosine", dim=base.shape[1])
index.set_num_threads(1)
t = time.perf_counter()
index.init_index(max_elements=len(base), M=16, ef_construction=200, random_seed=7)
index.add_items(base, np.arange(len(base)))
print(f"hnswlib build ({len(base)} x {base.shape[1]}, M=16, ef_construction=200): {time.perf_counter() - t:.2f} s")
for ef in [10, 20, 40, 80, 160]:
    index.set_ef(ef)
    t = time.perf_counter()
    found = 0
    for q, ex in zip(queries, exact):
        labels, _ = index.knn_query(q[None], k=10)
        found += len(set(labels[0]) & set(ex))
    ms = (time.perf_counter() - t) * 1e3 / len(queries)
    print(f"hnswlib ef {ef:>3}: recall@10 {found / (10 * len(queries)):.3f}, {ms:.3f} ms per query")

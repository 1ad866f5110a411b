"""Choose semantic memory's embedded vector index by measurement.

Compares usearch (HNSW, f32 and i8), hnswlib (HNSW), sqlite-vec (brute force inside
SQLite) and exact numpy on N unit vectors of 384 dimensions (all-MiniLM-L6-v2's size):
build time, recall@10 against exact search, and p50/p99 latency of one query on one
thread.

The vectors are SYNTHETIC: clustered unit vectors (a few thousand centroids, Gaussian
noise around each), because embedding 100k real texts takes ~4 minutes on this
machine; clustering makes the neighbour structure closer to real embeddings than
uniform noise (on which HNSW recall is pessimistic). The W14 benchmark measures the
chosen index on real, cached embeddings.

    PYTHONPATH=$PWD python benchmarks/semantic_index_candidates.py [--n 100000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
DIM = 384
K = 10


def clustered(n: int, seed: int, topics: int = 500, subtopics: int = 20) -> Array:
    """Two levels of clusters (topics, then subtopics in each), like texts on themes."""
    rng = np.random.default_rng(0)  # the same centres for data and queries
    centres = rng.standard_normal((topics, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    subs = centres[:, None, :] + rng.standard_normal((topics, subtopics, DIM)) * (0.8 / DIM**0.5)
    subs = subs.reshape(-1, DIM)
    subs /= np.linalg.norm(subs, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(subs), n)
    out = subs[which] + rng.standard_normal((n, DIM)) * (0.6 / DIM**0.5)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    result: Array = out.astype(np.float32)
    return result


def exact_top(data: Array, queries: Array) -> npt.NDArray[np.int64]:
    scores = queries @ data.T
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return top.astype(np.int64)


Searcher = Callable[[Array], list[int]]


def build_numpy(data: Array) -> Searcher:
    def search(q: Array) -> list[int]:
        scores = data @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])].tolist()  # type: ignore[no-any-return]

    return search


def build_usearch(dtype: str, ef: int = 64) -> Callable[[Array], Searcher]:
    def build(data: Array) -> Searcher:
        from usearch.index import Index

        index = Index(
            ndim=DIM,
            metric="ip",
            dtype=dtype,
            connectivity=16,
            expansion_add=128,
            expansion_search=ef,
        )
        index.add(np.arange(len(data)), data, threads=1)

        def search(q: Array) -> list[int]:
            return index.search(q, K, threads=1).keys.tolist()  # type: ignore[no-any-return]

        return search

    return build


def build_hnswlib(ef: int) -> Callable[[Array], Searcher]:
    return lambda data: _hnswlib(data, ef)


def _hnswlib(data: Array, ef: int) -> Searcher:
    import hnswlib  # type: ignore[import-untyped]

    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=len(data), ef_construction=128, M=16)
    index.set_num_threads(1)
    index.add_items(data, np.arange(len(data)))
    index.set_ef(ef)

    def search(q: Array) -> list[int]:
        labels, _ = index.knn_query(q, k=K)
        return labels[0].tolist()  # type: ignore[no-any-return]

    return search


def build_sqlite_vec(data: Array) -> Searcher:
    # This machine's Python sqlite3 is built without extension loading (as many are):
    # sqlite-vec needs apsw (or a rebuilt sqlite3) to load at all.
    import apsw
    import sqlite_vec  # type: ignore[import-untyped]

    db = apsw.Connection(":memory:")
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}] distance_metric=cosine)")
    with db:
        db.executemany(
            "INSERT INTO v(rowid, embedding) VALUES (?, ?)",
            ((i, data[i].tobytes()) for i in range(len(data))),
        )

    def search(q: Array) -> list[int]:
        rows = db.execute(
            "SELECT rowid FROM v WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (q.tobytes(), K),
        ).fetchall()
        return [int(r[0]) for r in rows]  # type: ignore[arg-type]

    return search


CANDIDATES: dict[str, Callable[[Array], Searcher]] = {
    "numpy exact": build_numpy,
    "usearch f32 (M=16, ef=64)": build_usearch("f32", 64),
    "usearch f32 (M=16, ef=128)": build_usearch("f32", 128),
    "usearch f16 (M=16, ef=128)": build_usearch("f16", 128),
    "usearch i8 (M=16, ef=128)": build_usearch("i8", 128),
    "hnswlib (M=16, ef=64)": build_hnswlib(64),
    "hnswlib (M=16, ef=128)": build_hnswlib(128),
    "sqlite-vec 0.1.9 (brute force)": build_sqlite_vec,
}


def measure(
    name: str,
    build: Callable[[Array], Searcher],
    data: Array,
    queries: Array,
    truth: npt.NDArray[np.int64],
) -> dict[str, Any]:
    t0 = time.perf_counter()
    search = build(data)
    built = time.perf_counter() - t0
    for q in queries[:20]:
        search(q)
    latencies = []
    hits = 0
    for q, want in zip(queries, truth, strict=True):
        t = time.perf_counter()
        got = search(q)
        latencies.append(time.perf_counter() - t)
        hits += len(set(got) & set(want.tolist()))
    lat = np.array(latencies) * 1000
    return {
        "name": name,
        "build_s": built,
        "recall": hits / (K * len(queries)),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    data = clustered(args.n, seed=1)
    queries = clustered(args.queries, seed=2)
    truth = exact_top(data, queries)
    print(
        f"{args.n} x {DIM} float32 clustered synthetic unit vectors, {args.queries} queries, "
        f"recall@{K} vs exact, one thread"
    )
    print(f"{'candidate':34} {'build s':>8} {'recall@10':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, build in CANDIDATES.items():
        if args.only and args.only not in name:
            continue
        r = measure(name, build, data, queries, truth)
        print(
            f"{r['name']:34} {r['build_s']:8.1f} {r['recall']:10.4f} "
            f"{r['p50_ms']:8.3f} {r['p99_ms']:8.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

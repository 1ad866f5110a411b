"""Where a filtered vector search should get its candidates: measured, not guessed.

Semantic memory answers a vector search with metadata filters (or a user/agent scope)
one of two ways: (a) ask the store for the ids the filter admits and score exactly
among them, or (b) over-fetch from the ANN index and filter, fetching 4x more while
short; "chosen" is what it does: (b), and from the second round on (a) once the share
admitted so far projects more than 1,000 neighbours (if the store admits <= 2,000 ids). This runs both at several selectivities on N items in a SQLite store and
prints p50/p99 latency of each (the store and index path only: query vectors are
given, not embedded) plus recall@10 of (b) against exact filtered search.

    PYTHONPATH=$PWD python benchmarks/semantic_filter_paths.py [--n 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from mainspring.memory.scope import Scope
from mainspring.memory.semantic import SemanticMemory, SQLiteItemStore
from mainspring.memory.semantic import memory as memory_module
from mainspring.memory.semantic._checks import selection as selection_of
from mainspring.memory.semantic.items import MemoryItem
from semantic_index_candidates import clustered

DIM = 384
SELECTIVITIES = [0.001, 0.01, 0.05, 0.2, 0.5]


class TableEmbeddings:
    """Texts "v<n>" to row n of a table: the benchmark times search, not the model."""

    table: np.ndarray

    name, dimensions = "table", DIM

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.table[[int(t.split()[0][1:]) for t in texts]].tolist()  # type: ignore[no-any-return]


class NeverJudge:
    floor = 2.0  # above any cosine: no de-duplication work while loading

    async def judge(self, new: Any, old: Any, similarity: float) -> Any:
        return "distinct"


async def main(n: int, queries: int) -> None:
    data = clustered(n, seed=1)
    qs = clustered(queries, seed=2)
    table = np.vstack([data, qs])
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteItemStore(Path(tmp) / "bench.db")
        now = time.time()
        rng = np.random.default_rng(3)
        bucket = rng.random(n)
        items = [
            MemoryItem(
                f"{i:08d}",
                f"v{i} item",
                Scope("t"),
                {"b": float(bucket[i])},
                recorded_at=now,
                updated_at=now,
            )
            for i in range(n)
        ]
        for start in range(0, n, 5000):
            chunk = items[start : start + 5000]
            await store.put(chunk, [data[int(x.id)] for x in chunk])
        memory = SemanticMemory(store, embeddings=TableEmbeddings(table), resolver=NeverJudge())
        async with memory:
            print(f"{n} items, {queries} queries; latency of the store+index path, ms")
            print(
                f"{'admits':>7} {'ids+exact p50':>14} {'p99':>7} {'ANN+filter p50':>15} "
                f"{'p99':>7} {'ANN recall@10':>14} {'chosen p50':>11} {'p99':>7}"
            )
            paths = {"exact": (0, -1, 10**9), "ann": (10**9, 0, 2000), "chosen": (2, 1000, 2000)}
            for sel in SELECTIVITIES:
                lat: dict[str, list[float]] = {p: [] for p in paths}
                got: dict[str, list[list[str]]] = {p: [] for p in paths}
                selection = selection_of(Scope("t"), {"b": {"$lt": sel}}, None, False)
                for q in range(queries):
                    # The paths take turns on each query: the machine's load hits all alike.
                    for path, (rounds, limit, cap) in paths.items():
                        memory_module.ANN_ROUNDS, memory_module.ANN_FETCH_LIMIT = rounds, limit
                        memory_module.SELECTIVE_UP_TO = cap
                        t = time.perf_counter()
                        hits = await memory._vector_search(f"v{n + q}", selection, 10, {})
                        lat[path].append((time.perf_counter() - t) * 1000)
                        got[path].append([h for h, _ in hits])
                recall = np.mean(
                    [
                        len(set(a) & set(e)) / max(len(e), 1)
                        for a, e in zip(got["ann"], got["exact"], strict=True)
                    ]
                )
                cells = [np.percentile(lat[p], x) for p in ("exact", "ann") for x in (50, 99)]
                chosen = [np.percentile(lat["chosen"], x) for x in (50, 99)]
                print(
                    f"{sel:7.3f} {cells[0]:14.2f} {cells[1]:7.2f} {cells[2]:15.2f} {cells[3]:7.2f} "
                    f"{recall:14.3f} {chosen[0]:11.2f} {chosen[1]:7.2f}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    anyio.run(main, args.n, args.queries)

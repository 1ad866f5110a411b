"""The in-process vector index of semantic memory: exact while small, HNSW (usearch) above.

Chosen by measurement (``benchmarks/semantic_index_candidates.py``, numbers in
docs/memory-semantic.md): exact search over a float32 matrix is perfect and needs no
build; up to 10k vectors it answers in about a millisecond (p50 0.19 ms at 5k, 1.2 ms
at 10k, 3.4 ms at 20k on the loaded test machine); above that an HNSW graph (usearch,
f32, M=16, ef=64: 0.5 ms at 20k, 0.64 ms at 100k, recall@10 >= 0.999) is faster.
sqlite-vec only searches by brute force (like the exact index, but ~10x slower than
numpy through SQLite) and does not load on a Python whose sqlite3 cannot load
extensions; hnswlib is as fast as usearch but unmaintained since 2023.

An index is kept per tenant (tenants never see each other's vectors, and a small
tenant is searched exactly however large the others are). Not thread-safe: the
memory calls one index from one thread at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from .protocols import Vector, VectorIndex

log = logging.getLogger(__name__)
EXACT_UP_TO = 10_000  # vectors; above this an exact index becomes an HNSW graph


class ExactIndex:
    """Brute-force cosine search over a growable float32 matrix."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._matrix = np.zeros((64, dimensions), dtype=np.float32)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Sequence[str], vectors: Vector) -> None:
        for id_, vector in zip(ids, _checked(vectors, len(ids), self.dimensions), strict=True):
            row = self._rows.get(id_)
            if row is None:
                row = len(self._ids)
                if row == len(self._matrix):
                    grown = np.zeros((2 * row, self.dimensions), dtype=np.float32)
                    grown[:row] = self._matrix
                    self._matrix = grown
                self._ids.append(id_)
                self._rows[id_] = row
            self._matrix[row] = vector

    def remove(self, ids: Sequence[str]) -> None:
        for id_ in ids:
            row = self._rows.pop(id_, None)
            if row is None:
                continue
            last = len(self._ids) - 1
            if row != last:  # move the last row into the hole
                moved = self._ids[last]
                self._matrix[row] = self._matrix[last]
                self._ids[row] = moved
                self._rows[moved] = row
            self._ids.pop()

    def search(
        self, vector: Vector, k: int, *, among: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        if among is not None:
            rows = [r for r in (self._rows.get(i) for i in among) if r is not None]
            return _top(self._matrix[rows] @ vector, [self._ids[r] for r in rows], k)
        return _top(self._matrix[: len(self._ids)] @ vector, self._ids, k)

    def items(self) -> tuple[list[str], Vector]:
        return list(self._ids), self._matrix[: len(self._ids)].copy()

    def save(self, prefix: Path) -> dict[str, Any]:
        ids, matrix = self.items()
        np.save(prefix.with_suffix(".npy"), matrix)
        return {"kind": "exact", "ids": ids}

    @classmethod
    def load(cls, prefix: Path, entry: dict[str, Any], dimensions: int) -> ExactIndex:
        index = cls(dimensions)
        if entry["ids"]:
            index.add(entry["ids"], np.load(prefix.with_suffix(".npy")))
        return index


class HnswIndex:
    """An HNSW graph (usearch, inner product on unit vectors = cosine)."""

    def __init__(self, dimensions: int, *, threads: int = 1) -> None:
        from usearch.index import Index

        self.dimensions = dimensions
        self.threads = threads
        self._index = Index(
            ndim=dimensions,
            metric="ip",
            dtype="f32",
            connectivity=16,
            expansion_add=128,
            expansion_search=64,
        )
        self._keys: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, ids: Sequence[str], vectors: Vector) -> None:
        vectors = _checked(vectors, len(ids), self.dimensions)
        self.remove([i for i in ids if i in self._keys])
        keys = np.arange(self._next, self._next + len(ids), dtype=np.uint64)
        self._next += len(ids)
        for id_, key in zip(ids, keys.tolist(), strict=True):
            self._keys[id_] = key
            self._ids[key] = id_
        if len(ids):
            self._index.add(keys, vectors, threads=self.threads)

    def remove(self, ids: Sequence[str]) -> None:
        keys = [k for k in (self._keys.pop(i, None) for i in ids) if k is not None]
        for key in keys:
            del self._ids[key]
        if keys:
            self._index.remove(np.array(keys, dtype=np.uint64))

    def save(self, prefix: Path) -> dict[str, Any]:
        self._index.save(str(prefix.with_suffix(".usearch")))
        return {"kind": "hnsw", "keys": list(self._keys.items()), "next": self._next}

    @classmethod
    def load(cls, prefix: Path, entry: dict[str, Any], dimensions: int) -> HnswIndex:
        index = cls(dimensions, threads=2)
        index._index.load(str(prefix.with_suffix(".usearch")))
        index._keys = {id_: key for id_, key in entry["keys"]}
        index._ids = {key: id_ for id_, key in entry["keys"]}
        index._next = entry["next"]
        if len(index._index) != len(index._keys):
            raise ValueError("the saved graph and its ids disagree")
        return index

    def search(
        self, vector: Vector, k: int, *, among: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        if among is not None:
            known = [i for i in among if i in self._keys]
            if not known:
                return []
            keys = np.array([self._keys[i] for i in known], dtype=np.uint64)
            vectors = np.asarray(self._index.get(keys), dtype=np.float32)
            return _top(vectors @ vector, known, k)
        if not self._keys or k <= 0:
            return []
        found = self._index.search(vector, min(k, len(self._keys)), threads=1)
        return [
            (self._ids[int(key)], 1.0 - float(distance))
            for key, distance in zip(found.keys, found.distances, strict=True)
            if int(key) in self._ids
        ]


class AutoIndex:
    """Exact up to ``exact_up_to`` vectors, then (once, for good) an HNSW graph.

    The graph is built in a thread of its own from a copy of the vectors (seconds for
    10k of them), while the exact index keeps answering; changes made meanwhile are
    replayed onto the graph when it is swapped in, on the next call after it is done.
    """

    def __init__(self, dimensions: int, *, exact_up_to: int = EXACT_UP_TO) -> None:
        self.dimensions = dimensions
        self.exact_up_to = exact_up_to
        self._index: ExactIndex | HnswIndex = ExactIndex(dimensions)
        self._building: Future[HnswIndex] | None = None
        self._since: list[tuple[Sequence[str], Vector | None]] = []  # (ids, vectors or remove)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def graph(self) -> bool:
        """Whether the HNSW graph answers (not the exact index)."""
        self._swap_if_built()
        return isinstance(self._index, HnswIndex)

    def settle(self) -> None:
        """Wait for a graph being built, and swap it in."""
        if self._building is not None:
            wait([self._building])
        self._swap_if_built()

    def add(self, ids: Sequence[str], vectors: Vector) -> None:
        self._swap_if_built()
        self._index.add(ids, vectors)
        if self._building is not None:
            self._since.append((list(ids), np.array(vectors, dtype=np.float32)))
        elif isinstance(self._index, ExactIndex) and len(self._index) > self.exact_up_to:
            ids_now, matrix = self._index.items()
            self._building = _BUILDER.submit(_build_graph, self.dimensions, ids_now, matrix)

    def remove(self, ids: Sequence[str]) -> None:
        self._swap_if_built()
        self._index.remove(ids)
        if self._building is not None:
            self._since.append((list(ids), None))

    def save(self, prefix: Path) -> dict[str, Any]:
        """Write the index to files starting with ``prefix``; what :meth:`load` needs."""
        self.settle()
        return self._index.save(prefix)

    @classmethod
    def load(cls, prefix: Path, entry: dict[str, Any], dimensions: int) -> AutoIndex:
        index = cls(dimensions)
        kind = HnswIndex if entry["kind"] == "hnsw" else ExactIndex
        index._index = kind.load(prefix, entry, dimensions)
        return index

    def search(
        self, vector: Vector, k: int, *, among: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        self._swap_if_built()
        return self._index.search(vector, k, among=among)

    def _swap_if_built(self) -> None:
        building = self._building
        if building is None or not building.done():
            return
        self._building, since, self._since = None, self._since, []
        try:
            graph = building.result()
        except Exception:  # keep answering exactly; try again on the next add
            log.exception("semantic memory: building the HNSW graph failed")
            return
        for ids, vectors in since:
            if vectors is None:
                graph.remove(ids)
            else:
                graph.add(ids, vectors)
        self._index = graph


# One builder thread for every graph: a build is CPU-bound and uses two cores itself.
_BUILDER = ThreadPoolExecutor(1, thread_name_prefix="mainspring-hnsw")


def _build_graph(dimensions: int, ids: list[str], vectors: Vector) -> HnswIndex:
    graph = HnswIndex(dimensions, threads=2)
    graph.add(ids, vectors)
    return graph


def default_index(dimensions: int) -> VectorIndex:
    return AutoIndex(dimensions)


def _checked(vectors: Vector, count: int, dimensions: int) -> Vector:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.shape != (count, dimensions):
        raise ValueError(
            f"expected {count} vectors of {dimensions} dimensions, got shape {array.shape}"
        )
    return array


def _top(scores: Vector, ids: Sequence[str], k: int) -> list[tuple[str, float]]:
    if k <= 0 or not len(ids):
        return []
    best = np.argpartition(-scores, k)[:k] if k < len(ids) else np.arange(len(ids))
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(ids[i], float(scores[i])) for i in best]

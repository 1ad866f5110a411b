"""The in-process vector index of semantic memory: exact while small, HNSW (usearch) above.

Chosen by measurement (``benchmarks/semantic_index_candidates.py``, numbers in
docs/memory-semantic.md): exact search over a float32 matrix is perfect and needs no
build, and below ~20k vectors it answers in about a millisecond; above that an HNSW
graph (usearch, f32, M=16, ef=64) keeps p99 in milliseconds at recall@10 >= 0.99.
sqlite-vec only searches by brute force (like the exact index, but ~10x slower than
numpy through SQLite) and does not load on a Python whose sqlite3 cannot load
extensions; hnswlib is as fast as usearch but unmaintained since 2023.

An index is kept per tenant (tenants never see each other's vectors, and a small
tenant is searched exactly however large the others are). Not thread-safe: the
memory calls one index from one thread at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .protocols import Vector, VectorIndex

EXACT_UP_TO = 20_000  # vectors; above this an exact index becomes an HNSW graph


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
    """Exact up to ``exact_up_to`` vectors, then (once, for good) an HNSW graph."""

    def __init__(self, dimensions: int, *, exact_up_to: int = EXACT_UP_TO) -> None:
        self.dimensions = dimensions
        self.exact_up_to = exact_up_to
        self._index: ExactIndex | HnswIndex = ExactIndex(dimensions)

    def __len__(self) -> int:
        return len(self._index)

    def add(self, ids: Sequence[str], vectors: Vector) -> None:
        self._index.add(ids, vectors)
        index = self._index
        if isinstance(index, ExactIndex) and len(index) > self.exact_up_to:
            graph = HnswIndex(self.dimensions, threads=2)
            graph.add(*index.items())
            self._index = graph

    def remove(self, ids: Sequence[str]) -> None:
        self._index.remove(ids)

    def search(
        self, vector: Vector, k: int, *, among: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        return self._index.search(vector, k, among=among)


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

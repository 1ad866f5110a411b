"""The two backend seams of semantic memory: where items live, and the vector index.

:class:`~.memory.SemanticMemory` is the one implementation of the logic (background
embedding, de-duplication, contradiction, hybrid ranking); it is built on an
:class:`ItemStore` (SQLite embedded, PostgreSQL shared by many workers) and a
:class:`VectorIndex` (an in-process ANN index each process keeps, fed from the item
store's change feed). One conformance suite (``tests/test_semantic_memory.py``) runs
against every item store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..scope import Scope
from .items import MemoryItem

Vector = npt.NDArray[np.float32]


class ItemStore(Protocol):
    """Durable items with keyword search and a change feed (for the vector index)."""

    async def put(self, items: Sequence[MemoryItem], vectors: Sequence[Vector | None]) -> None:
        """Insert or replace items (by id), with their vectors where known."""
        ...

    async def get(self, ids: Sequence[str], *, tenant: str) -> list[MemoryItem]: ...

    async def list(
        self,
        scope: Scope,
        *,
        filters: Mapping[str, Any] | None = None,
        include_superseded: bool = False,
        limit: int = 100,
        after: str | None = None,
    ) -> list[MemoryItem]: ...

    async def keyword(
        self, query: str, scope: Scope, *, filters: Mapping[str, Any] | None, limit: int
    ) -> list[tuple[str, float]]:
        """(id, BM25 score; higher is better) of the best keyword matches."""
        ...

    async def delete(self, ids: Sequence[str], *, tenant: str) -> int: ...

    async def changes(self, since: int, limit: int) -> tuple[int, list[tuple[str, Vector | None]]]:
        """Vectors written or deleted (None) after change number ``since``, and the new
        high-water mark: how every process keeps its vector index current."""
        ...

    async def aclose(self) -> None: ...


class VectorIndex(Protocol):
    """An approximate nearest-neighbour index of unit vectors, keyed by item id."""

    def add(self, ids: Sequence[str], vectors: Vector) -> None: ...
    def remove(self, ids: Iterable[str]) -> None: ...
    def search(self, vector: Vector, k: int) -> list[tuple[str, float]]:
        """(id, cosine similarity) of the ``k`` nearest, best first."""
        ...

    def __len__(self) -> int: ...

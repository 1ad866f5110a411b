"""The two backend seams of semantic memory: where items live, and the vector index.

:class:`~.memory.SemanticMemory` is the one implementation of the logic (background
embedding, de-duplication, contradiction, hybrid ranking); it is built on an
:class:`ItemStore` (SQLite embedded, PostgreSQL shared by many workers) and a
:class:`VectorIndex` (an in-process ANN index each process keeps per tenant, fed from
the item store's change feed). One conformance suite (``tests/test_semantic_memory.py``)
runs against every item store.

What a store must get exactly right (the suite checks each):

* Scope in queries (:class:`Selection`): ``tenant`` always equal; ``user``/``agent``
  equal when the selection gives them, any when None. In :meth:`ItemStore.same` the
  scope is matched *exactly* (None there means the column IS NULL).
* Filters: :func:`.filters.holds` is the reference. Numbers compare as numbers, a JSON
  bool is neither a number nor equal to 1, text compares by code point (PostgreSQL:
  ``COLLATE "C"``), a missing key fails every operator except ``ne``.
* Validity: ``live_only`` keeps items whose ``superseded_by`` is NULL; ``valid_at=t``
  keeps items with ``coalesce(valid_from, recorded_at) <= t`` and
  (``valid_to`` NULL or ``valid_to > t``). The two are independent.
* Vectors: :meth:`ItemStore.put` with a vector of None keeps the stored vector when
  the stored text equals the new text, and clears it otherwise (a changed text must be
  embedded again). ``MemoryItem.indexed`` read back is "a vector is stored".
* Change feed: every time an item's vector is set or cleared, or the item is deleted,
  the item gets a new change number (strictly increasing, per store); ``changes``
  returns each changed item once, in its current state.
* The normalised-text digest of an item is :func:`.items.text_digest` of its text.

Optional: a store with an ``identity: str`` attribute (a name of its data, fixed when
it was created) lets the memory keep a snapshot of its vector indexes beside it
(``index_dir=``), loaded on open instead of rebuilding them from the feed.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from ..scope import Scope
from .filters import Filters, all_hold
from .items import MemoryItem

Vector = npt.NDArray[np.float32]


class Selection(msgspec.Struct, frozen=True):
    """Which items a query may see: scope, metadata filters, validity."""

    scope: Scope
    filters: Filters = ()
    live_only: bool = True  # superseded_by IS NULL
    valid_at: float | None = None  # valid at this time (see module doc); None: any time

    def admits(self, item: MemoryItem) -> bool:
        """Whether ``item`` belongs to the selection: the reference every store matches."""
        if not self.scope.matches(item.scope):
            return False
        if self.live_only and item.superseded_by is not None:
            return False
        at = self.valid_at
        if at is not None:
            start = item.recorded_at if item.valid_from is None else item.valid_from
            if start > at or (item.valid_to is not None and item.valid_to <= at):
                return False
        return all_hold(self.filters, item.metadata)


class Change(msgspec.Struct, frozen=True):
    """One entry of the change feed: an item whose vector changed, in its current state.

    ``vector`` None: the item was deleted, or has no vector (yet)."""

    seq: int
    id: str
    tenant: str
    vector: bytes | None  # float32, little-endian, the model's dimensions


@runtime_checkable
class ItemStore(Protocol):
    """Durable items with keyword search and a change feed (for the vector index)."""

    async def bind_model(self, model: str, dimensions: int) -> None:
        """Record the embedding model on first use; raise
        :class:`~mainspring.errors.StoreError` if the store holds another model's vectors."""
        ...

    async def put(self, items: Sequence[MemoryItem], vectors: Sequence[Vector | None]) -> None:
        """Insert or replace items (by id, within their tenant) with their vectors.

        A vector of None keeps the stored one if the text is unchanged (see module doc).
        ``indexed`` on the given items is ignored."""
        ...

    async def set_vectors(self, entries: Sequence[tuple[str, str, Vector]]) -> builtins.list[str]:
        """Store ``(id, text, vector)`` where the item still has that text; the ids set.

        The background embedder's write: an item whose text changed while it was being
        embedded (or that was deleted) is left alone."""
        ...

    async def get(self, ids: Sequence[str], *, tenant: str) -> builtins.list[MemoryItem]:
        """The items of ``tenant`` with these ids (any order; unknown ids are left out)."""
        ...

    async def list(
        self, selection: Selection, *, limit: int = 100, after: str | None = None
    ) -> builtins.list[MemoryItem]:
        """Items of the selection ordered by id, those with an id greater than ``after``."""
        ...

    async def ids(self, selection: Selection, *, limit: int) -> builtins.list[str]:
        """Ids of (up to ``limit``) items of the selection, in any order: the candidate
        set of a selective vector search."""
        ...

    async def keyword(
        self, query: str, selection: Selection, *, limit: int
    ) -> builtins.list[tuple[str, float]]:
        """(id, score; higher is better) of the best full-text matches of ``query``.

        ``query`` is plain user text, never a query language: the store quotes it. Any
        word may match (OR), ranked by BM25 or the backend's equivalent."""
        ...

    async def same(
        self, scope: Scope, *, key: str | None = None, digest: str | None = None
    ) -> builtins.list[MemoryItem]:
        """Live items (``superseded_by`` NULL) of exactly ``scope`` with this ``key``
        and/or normalised-text ``digest`` (each given one must match)."""
        ...

    async def delete(self, ids: Sequence[str], *, tenant: str) -> int:
        """Delete items of ``tenant``; how many there were."""
        ...

    async def touch(self, ids: Sequence[str], *, tenant: str, at: float) -> None:
        """Set ``accessed_at`` (the tiering policy reads it); cheap, batched by the caller."""
        ...

    async def unembedded(self, limit: int) -> builtins.list[MemoryItem]:
        """Items (of any tenant) that have no vector: work a restarted process resumes."""
        ...

    async def changes(self, since: int, limit: int) -> tuple[int, builtins.list[Change]]:
        """Items changed after change number ``since`` (oldest first, at most ``limit``)
        and the highest change number returned (``since`` if none): how every process
        keeps its vector index current. ``changes(0, ...)`` replays every vector."""
        ...

    async def aclose(self) -> None: ...


class VectorIndex(Protocol):
    """An approximate nearest-neighbour index of unit vectors, keyed by item id.

    Called from worker threads, one call at a time per index (the memory serialises)."""

    def add(self, ids: Sequence[str], vectors: Vector) -> None:
        """Add or replace (an id already there gets the new vector)."""
        ...

    def remove(self, ids: Sequence[str]) -> None: ...

    def search(
        self, vector: Vector, k: int, *, among: Sequence[str] | None = None
    ) -> builtins.list[tuple[str, float]]:
        """(id, cosine similarity) of the ``k`` nearest, best first; with ``among``,
        exactly, over only those ids (the ones in the index)."""
        ...

    def __len__(self) -> int: ...

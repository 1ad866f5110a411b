"""A semantic response cache: reuse an answer for a request that means the same thing.

``await cache.lookup(text, scope)`` returns ``(value, similarity)`` when a stored
request in the same scope is close enough, else None; ``await cache.store(text,
value, scope)`` remembers an answer. The scope separates whatever must never share
an answer: the model, its parameters, the tenant (:func:`cache_scope` builds one).

A hit needs, in order: the same normalised text (the fast path, no embedding), or a
cosine >= ``threshold`` with a stored request *and* the same polarity, numbers,
quoted strings and names (:mod:`.cache_guard`), so that "cancel my order" never
answers "do not cancel my order" and "refund order 123" never answers "refund order
456". The default threshold, 0.85, comes from ``tests/data/semantic_cache_pairs.json``
(80 labelled lookups, ``benchmarks/semantic_cache_eval.py``): precision 1.0 and recall
0.88 there. 0.80 also had precision 1.0 (recall 0.94), but the best wrong candidate
that passed the guards scored 0.76 ("can I pay with PayPal" / "can I get a refund to
PayPal"): 0.85 keeps a margin, as a wrong hit costs more than a miss.

Entries expire after ``ttl`` seconds and the least recently used go beyond
``max_items``. In memory, for one process; not safe across threads (one event loop).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from .cache_guard import Signature, normalise, signature
from .protocol import EmbeddingProvider

V = TypeVar("V")
Vector = npt.NDArray[np.float32]

DEFAULT_THRESHOLD = 0.85
_RECENT_VECTORS = 256  # a store right after a missed lookup reuses that lookup's vector


def cache_scope(
    model: str, params: Mapping[str, object] | None = None, tenant: str | None = None
) -> str:
    """A scope key for ``model`` called with ``params`` on behalf of ``tenant``."""
    digest = hashlib.sha256(
        json.dumps(params or {}, sort_keys=True, default=repr).encode()
    ).hexdigest()[:16]
    return f"{tenant or ''}|{model}|{digest}"


@dataclass(slots=True)
class _Entry(Generic[V]):
    key: str
    scope: str
    row: int
    sig: Signature
    value: V
    expires: float


@dataclass(slots=True)
class _Scope:
    """One scope's vectors, one row per entry; freed rows are zeroed and reused."""

    dimensions: int
    matrix: Vector = field(init=False)
    keys: list[str | None] = field(default_factory=list)
    free: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((16, self.dimensions), dtype=np.float32)

    def add(self, key: str, vector: Vector) -> int:
        if self.free:
            row = self.free.pop()
            self.keys[row] = key
        else:
            row = len(self.keys)
            self.keys.append(key)
            if row == len(self.matrix):
                self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
        self.matrix[row] = vector
        return row

    def remove(self, row: int) -> None:
        self.matrix[row] = 0.0
        self.keys[row] = None
        self.free.append(row)

    def nearest(self, vector: Vector, threshold: float) -> list[tuple[float, str]]:
        """Keys of the rows whose cosine with ``vector`` is >= threshold, best first."""
        sims = self.matrix[: len(self.keys)] @ vector
        rows = np.flatnonzero(sims >= threshold)
        ranked = sorted(((float(sims[r]), int(r)) for r in rows), reverse=True)
        return [(sim, key) for sim, row in ranked if (key := self.keys[row]) is not None]


class SemanticCache(Generic[V]):
    def __init__(
        self,
        embedder: EmbeddingProvider,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        ttl: float | None = 3600.0,
        max_items: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold is a cosine in (0, 1], got {threshold}")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds or None (no expiry), got {ttl}")
        self.embedder = embedder
        self.threshold = threshold
        self.ttl = ttl
        self.max_items = max_items
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry[V]] = OrderedDict()  # LRU first
        self._scopes: dict[str, _Scope] = {}
        self._recent: OrderedDict[str, Vector] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def lookup(self, text: str, scope: str = "") -> tuple[V, float] | None:
        """The stored answer for ``text`` in ``scope`` and its similarity, or None."""
        key = normalise(text)
        entry = self._live((scope, key))
        if entry is not None:
            self._entries.move_to_end((scope, key))
            return entry.value, 1.0
        if scope not in self._scopes:
            return None
        vector = await self._vector(key)
        index = self._scopes.get(scope)  # again: the await let others store and evict
        if index is None:
            return None
        wanted = signature(text)
        for similarity, candidate in index.nearest(vector, self.threshold):
            entry = self._live((scope, candidate))
            if entry is not None and entry.sig.agrees_with(wanted):
                self._entries.move_to_end((scope, candidate))
                return entry.value, min(similarity, 1.0)
        return None

    async def store(self, text: str, value: V, scope: str = "") -> None:
        """Remember ``value`` as the answer to ``text`` in ``scope`` (replacing any)."""
        key = normalise(text)
        vector = await self._vector(key)
        expires = self._clock() + self.ttl if self.ttl is not None else float("inf")
        old = self._entries.pop((scope, key), None)
        if old is not None:
            self._scopes[scope].remove(old.row)
        index = self._scopes.get(scope) or self._scopes.setdefault(scope, _Scope(len(vector)))
        row = index.add(key, vector)
        self._entries[(scope, key)] = _Entry(key, scope, row, signature(text), value, expires)
        while len(self._entries) > self.max_items:
            (old_scope, _), evicted = self._entries.popitem(last=False)
            self._drop_row(old_scope, evicted.row)

    def clear(self) -> None:
        self._entries.clear()
        self._scopes.clear()

    def _live(self, where: tuple[str, str]) -> _Entry[V] | None:
        entry = self._entries.get(where)
        if entry is not None and entry.expires <= self._clock():
            del self._entries[where]
            self._drop_row(where[0], entry.row)
            return None
        return entry

    def _drop_row(self, scope: str, row: int) -> None:
        index = self._scopes[scope]
        index.remove(row)
        if len(index.free) == len(index.keys):
            del self._scopes[scope]  # an emptied scope (e.g. a tenant gone) costs nothing

    async def _vector(self, key: str) -> Vector:
        vector = self._recent.get(key)
        if vector is None:
            [embedded] = await self.embedder.embed([key])
            vector = np.asarray(embedded, dtype=np.float32)
            norm = float(np.linalg.norm(vector))
            if norm > 0:
                vector /= norm  # providers that do not normalise still give cosines
            self._recent[key] = vector
            if len(self._recent) > _RECENT_VECTORS:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(key)
        return vector

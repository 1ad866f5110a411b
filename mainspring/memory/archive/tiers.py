"""What tiering needs of the hot and warm tiers: the few methods it calls, as Protocols.

Session memory (:mod:`mainspring.memory.session`) and semantic memory
(:mod:`mainspring.memory.semantic`) satisfy them structurally; tiering never imports a
backend. A snapshot travels through the archive as JSON data and comes back as the
session tier's own snapshot type (``snapshot_type``), so the archive does not depend on
it either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from ..scope import Scope
from ..semantic.items import MemoryItem, Source


class ThreadActivityLike(Protocol):
    """A thread of session memory and when it was last active (epoch seconds)."""

    @property
    def thread(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def last_active(self) -> float: ...


class SnapshotLike(ThreadActivityLike, Protocol):
    """Everything session memory holds of a thread (values, messages, shared state):
    a msgspec Struct or a dataclass, so that it converts to JSON data and back."""


class SessionData(msgspec.Struct, frozen=True):
    """The shape of a session snapshot, where the session tier does not name its own type."""

    thread: str
    tenant: str
    values: dict[str, Any] = {}
    messages: list[Any] = []
    shared: dict[str, Any] = {}
    last_active: float = 0.0


class SessionTier(Protocol):
    """Hot session memory, as tiering uses it."""

    async def threads(
        self, *, tenant: str = ..., idle_for: float = ...
    ) -> Sequence[ThreadActivityLike]:
        """The tenant's threads not written for at least ``idle_for`` seconds."""
        ...

    async def snapshot(self, thread: str, *, tenant: str = "") -> SnapshotLike: ...
    async def restore(self, snapshot: Any) -> None: ...
    async def clear(self, thread: str, *, tenant: str = "") -> None: ...


class SemanticTier(Protocol):
    """Warm semantic memory, as tiering uses it."""

    async def list(
        self,
        scope: Scope,
        *,
        include_superseded: bool = ...,
        limit: int = ...,
        after: str | None = ...,
    ) -> Sequence[MemoryItem]: ...

    async def get(self, ids: Sequence[str], *, tenant: str) -> Sequence[MemoryItem]: ...

    async def forget(self, ids: Sequence[str], *, tenant: str) -> object: ...

    async def add(
        self,
        text: str,
        *,
        scope: Scope,
        metadata: dict[str, Any] | None = ...,
        key: str | None = ...,
        valid_from: float | None = ...,
        source: Source | None = ...,
        id: str | None = ...,
    ) -> object: ...


def last_activity(item: MemoryItem) -> float:
    """When an item was last written or returned by a search."""
    return max(item.recorded_at, item.updated_at, item.accessed_at or 0.0)

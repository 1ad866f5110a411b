"""What tiering needs of the hot and warm tiers: the few methods it calls, as Protocols.

Session memory (:mod:`mainspring.memory.session`) and semantic memory
(:mod:`mainspring.memory.semantic`) satisfy them structurally; tiering never imports a
backend, only the tiers' data types (a session snapshot, a memory item), which travel
through the archive as JSON data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..scope import Scope
from ..semantic.items import MemoryItem, Source
from ..session.protocol import SessionSnapshot, ThreadActivity


class SessionTier(Protocol):
    """Hot session memory, as tiering uses it."""

    async def threads(
        self, *, tenant: str = ..., idle_for: float = ...
    ) -> Sequence[ThreadActivity]:
        """The tenant's threads not written for at least ``idle_for`` seconds."""
        ...

    async def snapshot(self, thread: str, *, tenant: str = "") -> SessionSnapshot: ...
    async def restore(self, snapshot: SessionSnapshot) -> None: ...
    async def clear_if_unchanged(
        self, thread: str, last_active: float, *, tenant: str = ""
    ) -> bool:
        """Clear the thread only if its last write is still ``last_active``."""
        ...


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

    async def get(self, id: str, *, tenant: str = ...) -> MemoryItem | None: ...

    async def forget_unchanged(self, items: Sequence[MemoryItem], *, tenant: str) -> Sequence[str]:
        """Delete the items still as given (same ``updated_at``), atomically with respect
        to the memory's writes; the ids deleted."""
        ...

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


@runtime_checkable
class RestoresItems(Protocol):
    """A semantic memory that can put items back as they were (ids, ``recorded_at``,
    validity, ``superseded_by``; vectors recomputed off the caller's path), without
    de-duplication or contradiction handling: what promotion prefers to ``add``. The
    restore counts as a write: ``updated_at``/``accessed_at`` become now."""

    async def restore(self, items: Sequence[MemoryItem]) -> None: ...


def last_activity(item: MemoryItem) -> float:
    """When an item was last written or returned by a search."""
    return max(item.recorded_at, item.updated_at, item.accessed_at or 0.0)

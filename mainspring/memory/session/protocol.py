"""Hot session memory: per-thread key-value state, message history and shared state.

One protocol, two backends (in process: :mod:`.local`; Redis: :mod:`.redis`), one
conformance suite (``tests/test_session_memory.py``). Every key lives under
``(tenant, thread)``. Values are JSON data.

TTLs: every key, the message list and every shared value expire after ``ttl``
seconds without a write (the backend's default, or ``ttl=`` on the write; None:
never); with ``refresh_on_read`` (the default) a read extends the TTL of what it read.

Shared state is versioned: ``compare_and_set(..., expected=v)`` writes only when the
stored version is still ``v`` (0: absent) and raises :class:`VersionConflict` with the
current value otherwise, so concurrent writers never lose an update silently;
``update`` wraps it in a read-modify-write loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import msgspec


class Versioned(msgspec.Struct, frozen=True):
    """A shared value and its version (1 on the first write, +1 on each later one)."""

    value: Any
    version: int


@runtime_checkable
class SessionMemory(Protocol):
    """Per-thread hot memory, scoped by tenant."""

    async def get(self, thread: str, key: str, *, tenant: str = "") -> Any | None: ...
    async def set(
        self, thread: str, key: str, value: Any, *, ttl: float | None = ..., tenant: str = ""
    ) -> None: ...
    async def delete(self, thread: str, key: str, *, tenant: str = "") -> bool: ...
    async def keys(self, thread: str, *, tenant: str = "") -> list[str]: ...

    async def append(self, thread: str, *messages: Any, tenant: str = "") -> int:
        """Append to the thread's message history; returns its length."""
        ...

    async def messages(
        self, thread: str, *, last: int | None = None, tenant: str = ""
    ) -> list[Any]: ...

    async def read_shared(self, thread: str, key: str, *, tenant: str = "") -> Versioned | None: ...
    async def compare_and_set(
        self, thread: str, key: str, value: Any, *, expected: int, tenant: str = ""
    ) -> Versioned: ...
    async def update(
        self,
        thread: str,
        key: str,
        fn: Callable[[Any | None], Any],
        *,
        tenant: str = "",
        attempts: int = 100,
    ) -> Versioned: ...

    async def clear(self, thread: str, *, tenant: str = "") -> None:
        """Forget everything of the thread (keys, messages, shared state)."""
        ...

    async def aclose(self) -> None: ...

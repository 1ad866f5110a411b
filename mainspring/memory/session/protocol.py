"""Hot session memory: per-thread key-value state, message history and shared state.

One protocol, two backends (in process: :mod:`.local`; Redis: :mod:`.redis`), one
conformance suite (``tests/test_session_memory.py``). Every key lives under
``(tenant, thread)``. Values are JSON data (str, int, float, bool, None, lists, dicts
with str keys); anything else is refused with a TypeError naming the key, on every
backend, so that what a process reads is what it wrote.

TTLs: every key, the message list and every shared value expire after ``ttl``
seconds without a write (the backend's default, or ``ttl=`` on the write; None:
never); with ``refresh_on_read`` (the default) a read extends the TTL of what it read
by the TTL it was written with. ``keys``, ``threads`` and ``snapshot`` do not refresh.

Shared state is versioned: ``compare_and_set(..., expected=v)`` writes only when the
stored version is still ``v`` (0: absent) and raises :class:`VersionConflict` with the
current value otherwise, so concurrent writers never lose an update silently;
``update`` wraps it in a read-modify-write loop.

Backends subclass :class:`SessionMemory` to inherit ``update`` (written once, here)
and ``async with``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Any, Final, Protocol, Self, runtime_checkable

import anyio
import msgspec

from ..errors import VersionConflict
from .versioned import Versioned as Versioned

_BACKOFF_BASE = 0.0005  # seconds: the first conflict waits up to this
_BACKOFF_CAP = 0.05  # seconds: no wait is longer


class _Default(enum.Enum):
    TTL = "the backend's default ttl"


#: ``ttl=DEFAULT_TTL`` (the default of every write): the TTL the backend was built with.
DEFAULT_TTL: Final = _Default.TTL

#: A write's ``ttl``: seconds, None (never expires) or DEFAULT_TTL.
TTLArg = float | None | _Default


class ThreadActivity(msgspec.Struct, frozen=True):
    """A thread that holds something, and when it was last written (epoch seconds)."""

    thread: str
    tenant: str
    last_active: float


class SessionSnapshot(msgspec.Struct, frozen=True):
    """Everything a thread holds, as data (what the archive tier stores and restores)."""

    thread: str
    tenant: str = ""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    messages: list[Any] = msgspec.field(default_factory=list)
    shared: dict[str, Versioned] = msgspec.field(default_factory=dict)
    #: When the thread was last written, epoch seconds (0.0: it holds nothing).
    last_active: float = 0.0


@runtime_checkable
class SessionMemory(Protocol):
    """Per-thread hot memory, scoped by tenant."""

    async def get(self, thread: str, key: str, *, tenant: str = "") -> Any | None: ...
    async def set(
        self, thread: str, key: str, value: Any, *, ttl: TTLArg = DEFAULT_TTL, tenant: str = ""
    ) -> None: ...
    async def delete(self, thread: str, key: str, *, tenant: str = "") -> bool:
        """Remove a key; whether it was there."""
        ...

    async def keys(self, thread: str, *, tenant: str = "") -> list[str]:
        """The thread's live keys (of ``set``, not shared values), sorted."""
        ...

    async def append(
        self, thread: str, *messages: Any, ttl: TTLArg = DEFAULT_TTL, tenant: str = ""
    ) -> int:
        """Append to the thread's message history; returns its length."""
        ...

    async def messages(
        self, thread: str, *, last: int | None = None, tenant: str = ""
    ) -> list[Any]:
        """The message history, oldest first; ``last=N``: only the N most recent."""
        ...

    async def read_shared(self, thread: str, key: str, *, tenant: str = "") -> Versioned | None: ...
    async def compare_and_set(
        self,
        thread: str,
        key: str,
        value: Any,
        *,
        expected: int,
        ttl: TTLArg = DEFAULT_TTL,
        tenant: str = "",
    ) -> Versioned:
        """Write ``value`` as version ``expected + 1`` if the stored version is
        ``expected`` (0: absent); else raise :class:`VersionConflict`."""
        ...

    async def clear(self, thread: str, *, tenant: str = "") -> None:
        """Forget everything of the thread (keys, messages, shared state)."""
        ...

    async def clear_if_unchanged(
        self, thread: str, last_active: float, *, tenant: str = ""
    ) -> bool:
        """Clear the thread only if its last write is still ``last_active`` (as
        ``snapshot`` or ``threads`` reported it), checked and cleared atomically: a write
        acknowledged before this call keeps the thread. Whether it was cleared."""
        ...

    async def threads(self, *, tenant: str = "", idle_for: float = 0) -> list[ThreadActivity]:
        """The tenant's threads that hold something, least recently written first;
        ``idle_for``: only those not written for that many seconds."""
        ...

    async def snapshot(self, thread: str, *, tenant: str = "") -> SessionSnapshot:
        """Everything the thread holds (empty if nothing); does not refresh TTLs."""
        ...

    async def restore(self, snapshot: SessionSnapshot) -> None:
        """Put ``snapshot`` back into the thread, merged with what it holds now (a thread
        archived and then reused loses nothing): the archived messages go before the
        current ones; a key or shared value the thread holds now wins over the archived
        one (and keeps its version); the others come back with their versions. What
        comes back gets the backend's default TTL; the thread counts as written now."""
        ...

    async def aclose(self) -> None: ...

    async def update(
        self,
        thread: str,
        key: str,
        fn: Callable[[Any], Any],
        *,
        ttl: TTLArg = DEFAULT_TTL,
        tenant: str = "",
        attempts: int = 100,
    ) -> Versioned:
        """Set a shared value to ``fn(current value or None)``, retrying on conflicts.

        ``fn`` may run several times (once per attempt), so it should not have side
        effects. After ``attempts`` conflicts the last :class:`VersionConflict` is raised.
        """
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be a positive int, not {attempts!r}")
        current = await self.read_shared(thread, key, tenant=tenant)
        for attempt in range(attempts):
            expected = 0 if current is None else current.version
            new = fn(None if current is None else current.value)
            try:
                return await self.compare_and_set(
                    thread, key, new, expected=expected, ttl=ttl, tenant=tenant
                )
            except VersionConflict as conflict:
                if attempt == attempts - 1:
                    raise
                current = conflict.current  # what won: no need to read it again
                # Exponential backoff with full jitter from the first conflict: colliding
                # writers spread out instead of retrying in lockstep (a fixed small cap
                # let 50 writers on Redis starve some of them past 100 attempts).
                cap = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** min(attempt, 16))
                await anyio.sleep(random.uniform(0, cap))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

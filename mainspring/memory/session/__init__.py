"""Hot session memory: per-thread values, messages and versioned shared state, with TTLs.

``open_session_memory(None)`` (or ``"memory"``) keeps it in this process;
``open_session_memory("redis://host:6379/0")`` shares it through Redis. See
:mod:`.protocol` for the semantics and ``docs/memory-session.md`` for a tour.
"""

from __future__ import annotations

from typing import Any

from ..errors import VersionConflict
from .local import LocalSessionMemory
from .protocol import (
    DEFAULT_TTL,
    SessionMemory,
    SessionSnapshot,
    ThreadActivity,
    TTLArg,
    Versioned,
)

__all__ = [
    "DEFAULT_TTL",
    "LocalSessionMemory",
    "SessionMemory",
    "SessionSnapshot",
    "TTLArg",
    "ThreadActivity",
    "VersionConflict",
    "Versioned",
    "open_session_memory",
]

_LOCAL = ("memory", "memory://", "local", "local://")
_REDIS = ("redis://", "rediss://", "unix://")


def open_session_memory(url: str | None = None, **options: Any) -> SessionMemory:
    """Session memory at ``url``: None or ``"memory"`` in this process, ``redis://``,
    ``rediss://`` or ``unix://`` (a socket) on Redis. ``options`` go to the backend
    (``ttl``, ``refresh_on_read``; for Redis also ``prefix``)."""
    if url is None or url in _LOCAL:
        return LocalSessionMemory(**options)
    if not isinstance(url, str):
        raise TypeError(f"the session memory URL must be a str or None, not {url!r}")
    if url.startswith(_REDIS):
        try:
            from .redis import RedisSessionMemory
        except ImportError as exc:
            raise ImportError(
                f"session memory on {url.split('://')[0]}:// needs redis-py: "
                f"pip install 'mainspring[redis]' ({exc})"
            ) from exc
        return RedisSessionMemory(url, **options)
    scheme = url.partition("://")[0] if "://" in url else url
    raise ValueError(
        f"no session memory for {scheme!r} ({url!r}): use None or 'memory' (in this "
        "process), or a redis://, rediss:// or unix:// URL"
    )

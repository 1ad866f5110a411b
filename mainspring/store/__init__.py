"""Stores: small protocols combined in ``Store``, several backends, opened by URL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from .protocols import (
    AcceptsOffNow,
    AppendsNow,
    Cursors,
    Journal,
    Leases,
    ObservesCommits,
    RunIndex,
    Store,
    StoreCapabilities,
    accepts_off_now,
    appends_now,
)
from .records import (
    DEFAULT_TENANT,
    CreateResult,
    Durability,
    QueuePlacement,
    RunQuery,
    RunRecord,
    RunStatus,
    Snapshot,
    ThreadInfo,
    tenant_of,
)

if TYPE_CHECKING:
    from .memory import MemoryStore


if not TYPE_CHECKING:  # type checkers see the import above, and catch misspelt names

    def __getattr__(name: str) -> Any:
        # The backends load when first named: a process on SQLite never imports the
        # memory store (nor asyncpg), which keeps ``import mainspring`` short.
        if name == "MemoryStore":
            from .memory import MemoryStore

            return MemoryStore
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DEFAULT_TENANT",
    "AcceptsOffNow",
    "AppendsNow",
    "CreateResult",
    "Cursors",
    "Durability",
    "Journal",
    "Leases",
    "MemoryStore",
    "ObservesCommits",
    "QueuePlacement",
    "RunIndex",
    "RunQuery",
    "RunRecord",
    "RunStatus",
    "Snapshot",
    "Store",
    "StoreCapabilities",
    "ThreadInfo",
    "accepts_off_now",
    "appends_now",
    "store_from_url",
    "tenant_of",
]


def store_from_url(url: str) -> Store:
    """Build (not open) the store a URL names: ``memory://``, ``sqlite:///path``, ``postgresql://...``."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        if url.endswith((".db", ".sqlite", ".sqlite3")):
            scheme, url = "sqlite", f"sqlite:///{url}"
        else:
            raise StoreError(
                f"store URL {url!r} has no scheme; use memory://, sqlite:///path/to/file.db "
                "or postgresql://user@host/db"
            )
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:  # asyncpg is an optional extra
            raise StoreError(
                f"the PostgreSQL store needs asyncpg ({exc}); install it with "
                "pip install 'mainspring[postgres]'"
            ) from None
        return PostgresStore(url)
    raise StoreError(
        f"unknown store scheme {scheme!r} in {url!r}; use memory://, sqlite:///path or postgresql://..."
    )

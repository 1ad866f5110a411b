"""Pending starts: runs enqueued behind a thread's open run (``multitask: enqueue``), kept
in the store so they outlive the server that accepted them (docs/server.md).

A row per queued run, in the server's own table beside the journal (as the API keys:
``pending_starts`` in the SQLite file, or in the PostgreSQL schema), made on open with
``CREATE TABLE IF NOT EXISTS``. The row holds the start's request as accepted (its run id
reserved), so any server on the store can make the start when its turn comes; the row is
removed once the run started (a start made twice finds its run id taken: one run). The
memory store keeps them in memory, as it keeps everything.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

from ._record import PendingStart


class PendingStarts(Protocol):
    """Where pending starts are kept; ``all`` gives them oldest first."""

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def add(self, start: PendingStart) -> None: ...

    async def remove(self, run_id: str) -> bool: ...

    async def remove_thread(self, tenant: str, thread: str) -> list[str]:
        """Remove the thread's pending starts; their run ids, oldest first."""
        ...

    async def holds(self, run_id: str) -> bool: ...

    async def all(self) -> list[PendingStart]: ...


class MemoryPendingStarts:
    """Pending starts in a dict: the memory store's (gone with the process, as its runs)."""

    def __init__(self) -> None:
        self._rows: dict[str, PendingStart] = {}

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def add(self, start: PendingStart) -> None:
        self._rows.setdefault(start.run_id, start)

    async def remove(self, run_id: str) -> bool:
        return self._rows.pop(run_id, None) is not None

    async def remove_thread(self, tenant: str, thread: str) -> list[str]:
        gone = [r.run_id for r in self._rows.values() if (r.tenant, r.thread) == (tenant, thread)]
        for run_id in gone:
            del self._rows[run_id]
        return gone

    async def holds(self, run_id: str) -> bool:
        return run_id in self._rows

    async def all(self) -> list[PendingStart]:
        return list(self._rows.values())


def pending_starts_for(store: Any) -> PendingStarts:
    """The pending starts beside the runtime's store: a table in its SQLite file or its
    PostgreSQL schema; in memory otherwise."""
    postgres = sys.modules.get("mainspring.store.postgres")  # not imported: not PostgreSQL
    if postgres is not None and isinstance(store, postgres.PostgresStore):
        from .postgres import PostgresPendingStarts

        return PostgresPendingStarts(store.url)
    sqlite = sys.modules.get("mainspring.store.sqlite")
    if sqlite is not None and isinstance(store, sqlite.SQLiteStore):
        from .sqlite import SQLitePendingStarts

        return SQLitePendingStarts(store.url, path=store.path)
    return MemoryPendingStarts()


__all__ = ["MemoryPendingStarts", "PendingStart", "PendingStarts", "pending_starts_for"]

"""Pending starts in the SQLite store's own file: a table ``pending_starts`` beside the
journal's, made through the store's open path as the API keys' table is (``keys/sqlite.py``:
the file is refused unless it is a healthy Mainspring store; the table is the server's,
not one of the store's versioned migrations)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from ..side_tables import SQLiteSideTable
from ._record import PendingStart, pending_of

T = TypeVar("T")

_TABLE = """CREATE TABLE IF NOT EXISTS pending_starts (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    thread TEXT NOT NULL,
    graph TEXT NOT NULL,
    after TEXT NOT NULL,
    queued_at REAL NOT NULL,
    request TEXT NOT NULL
)"""
_COLUMNS = "run_id, tenant, thread, graph, after, queued_at, request"


class SQLitePendingStarts(SQLiteSideTable):
    """``sqlite:///path.db``: the pending starts of the server whose journal is ``path.db``."""

    def __init__(self, url: str, *, path: Path | None = None, busy_timeout: float = 5.0) -> None:
        super().__init__(url, _TABLE, "pending starts", path=path, busy_timeout=busy_timeout)

    async def add(self, start: PendingStart) -> None:
        s = start
        args = (s.run_id, s.tenant, s.thread, s.graph, s.after, s.queued_at, json.dumps(s.request))

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO pending_starts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO NOTHING",
                args,
            )

        await self._run("saving a pending start", insert)

    async def remove(self, run_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM pending_starts WHERE run_id = ?", (run_id,))
            return cursor.rowcount == 1

        return await self._run("removing a pending start", delete)

    async def remove_thread(self, tenant: str, thread: str) -> list[str]:
        def delete(db: sqlite3.Connection) -> list[str]:
            db.execute("BEGIN IMMEDIATE")  # one transaction: the ids read are the rows deleted
            try:
                rows = db.execute(
                    "SELECT run_id FROM pending_starts WHERE tenant = ? AND thread = ?"
                    " ORDER BY position",
                    (tenant, thread),
                ).fetchall()
                db.execute(
                    "DELETE FROM pending_starts WHERE tenant = ? AND thread = ?", (tenant, thread)
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return [str(r[0]) for r in rows]

        return await self._run("removing a thread's pending starts", delete)

    async def holds(self, run_id: str) -> bool:
        def select(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT 1 FROM pending_starts WHERE run_id = ?", (run_id,))
            return row.fetchone() is not None

        return await self._run("reading a pending start", select)

    async def all(self) -> list[PendingStart]:
        def select(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(f"SELECT {_COLUMNS} FROM pending_starts ORDER BY position").fetchall()

        rows = await self._run("reading pending starts", select)
        return [pending_of(row, row[6]) for row in rows]

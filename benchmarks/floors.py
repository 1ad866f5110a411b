"""Physical floors: the cheapest way to make one write durable, measured in the same run.

* :class:`RawCommits`: Python's sqlite3 in WAL mode, one ``INSERT`` +
  ``COMMIT`` per call (an fsync of the WAL with ``synchronous=FULL``).
* :class:`ThreadedCommits`: the same commit behind Mainspring's SQLite
  architecture (one writer thread, a queue, a ``call_soon_threadsafe``
  wake-up). A diagnostic: its gap to the raw floor is what the hand-off between
  threads costs on this machine, before any Mainspring code runs.
* :class:`RawInserts`: asyncpg, one autocommit ``INSERT`` round trip per call.
* :class:`JournalCommits` and :class:`JournalStatements`: diagnostics, the least
  any journal must write per durable step, in raw SQL with no Mainspring code:
  the run row's sequence number moved on conditionally and two event rows
  (the step that finished, the step that starts) keyed by ``(run_id, seq)``. Their
  gap to the raw floors is what the journal's rows cost before any Python runs.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

import asyncpg

ROW = b"x" * 120  # about the size of one small journal event


class RawCommits:
    """One ``INSERT`` + ``COMMIT`` per call, WAL, ``synchronous`` as given."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")

    def commit_one(self) -> None:
        self.conn.execute("BEGIN")
        self.conn.execute("INSERT INTO t (v) VALUES (?)", (ROW,))
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _journal_tables(prefix: str = "", blob: str = "BLOB", real: str = "REAL") -> list[str]:
    """The journal floors' tables (``prefix``: a schema and a dot, on PostgreSQL)."""
    return [
        f"CREATE TABLE {prefix}runs (run_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL,"
        f" updated_at {real})",
        f"CREATE TABLE {prefix}events (run_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        f" kind TEXT NOT NULL, ts {real} NOT NULL, data {blob} NOT NULL,"
        " PRIMARY KEY (run_id, seq))",
        f"INSERT INTO {prefix}runs VALUES ('r', 0, 0)",
    ]


class JournalCommits:
    """One step's journal rows per call (raw sqlite3, WAL, ``synchronous=FULL``)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        for statement in _journal_tables():
            self.conn.execute(statement)
        self.seq = 0

    def commit_one(self) -> None:
        seq, conn = self.seq, self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE runs SET last_seq = ?, updated_at = 0 WHERE run_id = 'r' AND last_seq = ?",
            (seq + 2, seq),
        )
        conn.executemany(
            "INSERT INTO events VALUES ('r', ?, 'step', 0, ?)", [(seq + 1, ROW), (seq + 2, ROW)]
        )
        conn.execute("COMMIT")
        self.seq = seq + 2

    def close(self) -> None:
        self.conn.close()


class ThreadedCommits:
    """:class:`RawCommits` (FULL) on a writer thread, awaited from the event loop."""

    def __init__(self, path: Path) -> None:
        self.raw = RawCommits(path, "FULL")
        self.requests: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="floor-writer", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (future := self.requests.get()) is not None:
            self.raw.commit_one()
            future.get_loop().call_soon_threadsafe(future.set_result, None)

    async def commit_one(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self.requests.put(future)
        await future

    def close(self) -> None:
        self.requests.put(None)
        self.thread.join()
        self.raw.close()


class RawInserts:
    """One autocommit ``INSERT`` round trip per call, into ``schema.t`` (created here)."""

    def __init__(self, conn: asyncpg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.sql = f"INSERT INTO {schema}.t (v) VALUES ($1)"

    @classmethod
    async def open(cls, pg_url: str, schema: str) -> RawInserts:
        conn: asyncpg.Connection[Any] = await asyncpg.connect(pg_url)
        await conn.execute(f"CREATE TABLE {schema}.t (id bigserial PRIMARY KEY, v bytea)")
        return cls(conn, schema)

    async def insert_one(self) -> None:
        await self.conn.execute(self.sql, ROW)

    async def close(self) -> None:
        await self.conn.close()


class JournalStatements:
    """One step's journal rows per call in one autocommit statement (asyncpg)."""

    def __init__(self, conn: asyncpg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.seq = 0
        self.sql = f"""
WITH bump AS (
  UPDATE {schema}.runs SET last_seq = $2 + 2, updated_at = 0
  WHERE run_id = 'r' AND last_seq = $2 RETURNING 1
)
INSERT INTO {schema}.events (run_id, seq, kind, ts, data)
SELECT 'r', $2 + v.i, 'step', 0, $1 FROM bump, (VALUES (1), (2)) AS v(i)"""

    @classmethod
    async def open(cls, pg_url: str, schema: str) -> JournalStatements:
        conn: asyncpg.Connection[Any] = await asyncpg.connect(pg_url)
        for statement in _journal_tables(f"{schema}.", blob="bytea", real="float8"):
            await conn.execute(statement)
        return cls(conn, schema)

    async def commit_one(self) -> None:
        await self.conn.execute(self.sql, ROW, self.seq)
        self.seq += 2

    async def close(self) -> None:
        await self.conn.close()

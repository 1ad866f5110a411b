"""Tables the server keeps beside the journal, in the store's own file or schema.

The API keys (``keys/``) and the pending starts (``pending/``) each have one table; both
backends of both open it the same way, here:

* SQLite: through the store's own open path (:func:`connect_writer`: the file is refused
  unless it is a healthy Mainspring store, a missing one created whole first), then
  ``CREATE TABLE IF NOT EXISTS``; a plain ``sqlite3`` connection used from worker threads
  under a lock, so the event loop never waits on disk.
* PostgreSQL: the store's schema checked and made by its own migration first (a schema that
  is not a Mainspring store is refused untouched), then ``CREATE TABLE IF NOT EXISTS``
  under an advisory lock of the table's own (processes opening at once make it once);
  connections from the store's small watched pool, transient failures retried for the URL's
  ``retry_for`` (5 s by default: a request waits on it, not a batch job).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from ..errors import StoreError
from ..store._pg_pool import Connection, ConnectionPool, close_watched, connect, open_watched
from ..store._pg_retry import Retrier
from ..store._pg_schema import migrate, quote_ident
from ..store._pg_url import option, parse_url
from ..store._sqlite_errors import translate
from ..store._sqlite_file import connect_writer
from ..store._sqlite_file import parse_url as parse_sqlite_url

T = TypeVar("T")


class SQLiteSideTable:
    """One server table in a SQLite store's file: ``ddl`` makes it; ``label`` names it in
    errors ("the key store", "pending starts")."""

    def __init__(
        self, url: str, ddl: str, label: str, *, path: Path | None = None, busy_timeout: float = 5.0
    ) -> None:
        parsed = parse_sqlite_url(url)
        self.path, self._create = path or parsed.path, parsed.create
        self._ddl, self._label = ddl, label
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self._db is None:
            self._db = await anyio.to_thread.run_sync(self._connect)

    def _connect(self) -> sqlite3.Connection:
        db, _ = connect_writer(self.path, create=self._create, busy_timeout=self._busy_timeout)
        try:
            db.execute(self._ddl)
        except sqlite3.Error as exc:
            db.close()
            raise translate(exc, self.path, f"making the table of {self._label}") from None
        return db

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await anyio.to_thread.run_sync(self._close, db)

    def _close(self, db: sqlite3.Connection) -> None:
        with self._lock:
            db.close()

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._db is None:
                    raise StoreError(
                        f"{self._label} in {self.path} are not open; call open() first"
                    )
                try:
                    return fn(self._db)
                except sqlite3.Error as exc:
                    raise translate(exc, self.path, what) from None

        return await anyio.to_thread.run_sync(locked)


class PostgresSideTable:
    """One server table in a PostgreSQL store's schema: ``table`` its name, ``columns`` its
    DDL body, ``lock`` the advisory lock it is made under, ``label`` its name in errors."""

    def __init__(
        self, url: str, table: str, columns: str, lock: tuple[int, int], label: str
    ) -> None:
        parsed = parse_url(url, None)
        self._dsn, self.target = parsed.dsn, parsed.target
        self.retry_for = option(parsed.options, "retry_for", None, float, 5.0)
        self.call_timeout = option(
            parsed.options, "call_timeout", None, float, max(self.retry_for / 3, 1.0), positive=True
        )
        self._table = f"{quote_ident(self.target.schema)}.{table}"
        self._columns, self._lock, self._label = columns, lock, label
        self._retrier = Retrier(self.target, self.retry_for)
        self._pool: ConnectionPool | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = ConnectionPool(self._connect, 2, self.call_timeout)
        self._watchdog = await open_watched(
            pool, f"mainspring {self._label}", self._retrier, 1,
            f"making the table of {self._label}", self._make,
        )  # fmt: skip
        self._pool = pool

    async def _connect(self) -> Connection:
        return await connect(self._dsn, self.call_timeout, {"application_name": "mainspring"})

    async def _make(self, conn: Connection) -> None:
        await migrate(conn, self.target)  # the store's schema, refused or made whole first
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *self._lock)
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {self._table} ({self._columns})")

    async def aclose(self) -> None:
        pool, watchdog = self._pool, self._watchdog
        self._pool = self._watchdog = None
        if pool is not None and watchdog is not None:
            await close_watched(pool, watchdog)

    def _live(self) -> ConnectionPool:
        if self._pool is None:
            raise StoreError(f"{self._label} on {self.target} are not open; call open() first")
        return self._pool

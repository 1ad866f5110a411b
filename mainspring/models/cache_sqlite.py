"""A response cache in a SQLite file: shared by every process that opens the same path.

The file is in WAL mode, so reads never wait for a writer. A read runs inline on the
event loop (an indexed lookup takes microseconds; a thread hop would cost more than
the read), on a connection used only there. Writes may wait for another process's
write lock (``busy_timeout``), so they run in a worker thread on a second connection,
one at a time. Expired rows are never returned, and are purged at most every
``purge_interval`` seconds by the next ``set`` (or at once with :meth:`purge`).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from .cache import check_ttl, decode_entry, encode_entry
from .messages import ModelResponse

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class SQLiteCache:
    """Responses in table ``table`` of the SQLite file at ``path`` (made if missing)."""

    def __init__(
        self,
        path: str | Path,
        *,
        table: str = "mainspring_model_cache",
        default_ttl: float | None = None,
        busy_timeout: float = 10.0,
        purge_interval: float = 60.0,
    ) -> None:
        if not _NAME.fullmatch(table):
            raise ValueError(f"table must be a plain SQL name (letters, digits, _), not {table!r}")
        self.path = Path(path)
        self.table = table
        self.default_ttl = check_ttl(default_ttl)
        self.purge_interval = purge_interval
        self._busy_ms = int(busy_timeout * 1000)
        self._writer = self._connect(check_same_thread=False)
        self._ensure_table()
        self._reader = self._connect(check_same_thread=True)
        self._write_lock = threading.Lock()  # one write at a time on the writer connection
        self._last_purge = time.time()
        self._closed = False
        t = table
        self._sql_get = f"SELECT value, expires_at FROM {t} WHERE key = ?"
        self._sql_set = f"INSERT OR REPLACE INTO {t} (key, value, expires_at) VALUES (?, ?, ?)"
        self._sql_delete = f"DELETE FROM {t} WHERE key = ?"
        self._sql_purge = f"DELETE FROM {t} WHERE expires_at IS NOT NULL AND expires_at <= ?"

    def _connect(self, *, check_same_thread: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=check_same_thread)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        return conn

    def _ensure_table(self) -> None:
        conn = self._writer
        # WAL is a property of the file: set once, kept by every later connection.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # a cache may lose its last writes
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
            " expires_at REAL) WITHOUT ROWID"
        )
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS {self.table}_expires ON {self.table} (expires_at)"
            " WHERE expires_at IS NOT NULL"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the SQLite cache at {self.path} is closed; make a new one")

    async def get(self, key: str) -> ModelResponse | None:
        self._check_open()
        row = self._reader.execute(self._sql_get, (key,)).fetchone()
        if row is None:
            return None
        value, expires_at = row
        if expires_at is not None and expires_at <= time.time():
            return None  # purged by a later set
        return decode_entry(value)  # corrupt: a miss, overwritten by the next set

    async def set(self, key: str, response: ModelResponse, ttl: float | None = None) -> None:
        self._check_open()
        ttl = self.default_ttl if check_ttl(ttl) is None else ttl
        if ttl is not None and ttl <= 0:
            await self.delete(key)
            return
        now = time.time()
        expires_at = None if ttl is None else now + ttl
        data = encode_entry(response)
        purge = now - self._last_purge >= self.purge_interval
        if purge:
            self._last_purge = now

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(self._sql_set, (key, data, expires_at))
            if purge:
                conn.execute(self._sql_purge, (now,))

        await self._write(write)

    async def delete(self, key: str) -> None:
        self._check_open()
        await self._write(lambda conn: conn.execute(self._sql_delete, (key,)))

    async def clear(self) -> None:
        self._check_open()
        await self._write(lambda conn: conn.execute(f"DELETE FROM {self.table}"))

    async def purge(self) -> int:
        """Remove expired rows now; returns how many."""
        self._check_open()
        now = time.time()
        self._last_purge = now
        cursor = await self._write(lambda conn: conn.execute(self._sql_purge, (now,)))
        return cursor.rowcount

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._write_lock:
                return fn(self._writer)

        return await anyio.to_thread.run_sync(locked)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._reader.close()
        with self._write_lock:
            self._writer.close()

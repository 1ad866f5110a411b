"""The SQLite store's reads: read-only connections pooled across worker threads.

WAL lets reads proceed alongside the writer, and they see every write whose call has
returned. sqlite3 connections may cross threads as long as one thread uses each at a
time: an idle one is lent to the next read, whatever its thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import anyio
import anyio.to_thread

from ._sqlite_errors import translate
from ._sqlite_file import connect_reader
from ._sqlite_writer import closed_error

T = TypeVar("T")

_THREADS: Final = 8


class Readers:
    """Read connections to one store file, usable between ``open`` and ``close``."""

    def __init__(
        self, path: Path, *, busy_timeout: float, prepare: Callable[[sqlite3.Connection], None]
    ) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._prepare = prepare  # registers the functions the read statements call
        self._opened: tuple[int, int] | None = None  # (device, inode) of the writer's file
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = True
        # Reads take threads of their own, so a user's blocking code (which shares anyio's
        # default limiter) can never starve the store. Made in open(): it needs the loop.
        self._limiter: anyio.CapacityLimiter | None = None

    def open(self, opened: tuple[int, int]) -> None:
        self._opened = opened
        self._limiter = anyio.CapacityLimiter(_THREADS)
        with self._lock:
            self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def run(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query(connection)`` in a worker thread; driver errors translated."""
        return await anyio.to_thread.run_sync(self._run, query, limiter=self._limiter)

    def _run(self, query: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._acquire()
        try:
            return query(conn)
        except sqlite3.Error as exc:
            raise translate(exc, self._path, "reading", busy_timeout=self._busy_timeout) from None
        finally:
            self._release(conn)

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise closed_error()
            if self._idle:
                return self._idle.pop()
        conn = connect_reader(self._path, self._opened, busy_timeout=self._busy_timeout)
        self._prepare(conn)
        return conn

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

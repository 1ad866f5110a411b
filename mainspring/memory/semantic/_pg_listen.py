"""Change notifications of the PostgreSQL item store: LISTEN on a connection of its own.

A write that changes vectors sends ``NOTIFY mainspring_semantic, '<schema>.<prefix>'``
in its transaction (delivered at commit). :class:`ChangeSignal` listens, and wakes a
reader of the change feed waiting in :meth:`ChangeSignal.wait`. Notifications are not
durable (a connection lost loses them), so the signal is a wake-up, never the only
path: readers poll as well, and a lost listening connection wakes them at once and is
reopened on a later wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import anyio
import asyncpg

from ...store._pg_pool import Connection

CHANNEL = "mainspring_semantic"
_RELISTEN_EVERY = 5.0  # seconds between attempts to reopen a lost LISTEN connection


class ChangeSignal:
    """Set when the store named ``payload`` may have new changes; cleared by the reader."""

    def __init__(self, connect: Callable[[], Awaitable[Connection]], payload: str) -> None:
        self._connect = connect
        self.payload = payload
        self._conn: Connection | None = None
        self._tried = -_RELISTEN_EVERY
        self._changed = asyncio.Event()
        self._closed = False

    async def listen(self) -> None:
        """Open the LISTEN connection, if it is not open; failing that, readers poll."""
        if self._conn is not None or self._closed:
            return
        self._tried = time.monotonic()
        try:
            conn = await self._connect()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn.terminate()
            return
        conn.add_termination_listener(self._on_lost)
        self._conn = conn

    def clear(self) -> None:
        """Called as a read of the feed begins: what is notified from now on wakes."""
        self._changed.clear()

    async def wait(self, timeout: float) -> bool:
        """True when woken by a notification (or a lost connection), False on timeout."""
        if self._conn is None and time.monotonic() - self._tried >= _RELISTEN_EVERY:
            await self.listen()
        with anyio.move_on_after(timeout):
            await self._changed.wait()
            return True
        return False

    def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if payload == self.payload:
            self._changed.set()

    def _on_lost(self, conn: object) -> None:
        if self._conn is conn:
            self._conn = None
        self._changed.set()  # a notification may have been lost with it: read the feed

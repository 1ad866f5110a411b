"""LISTEN on a PostgreSQL connection of its own: the shared part of every wake-up channel.

A connection that LISTENs cannot serve the pool (its notifications would be lost on the
next release, and a pooled call would wait behind them), so each listener holds one.
Notifications are not durable: one sent while the connection is down is lost, so every
user of a :class:`PgListener` also reads its source of truth after a loss (``on_lost``)
and on a slow timer. A connection the network lost silently says nothing: :meth:`until_lost`
pings it now and then, and closes it when the ping goes unanswered.

Users: semantic memory's change signal (``memory/semantic/_pg_listen``), the event
fan-out's PostgreSQL transport (``fanout/postgres``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import anyio
import asyncpg

from ._pg_pool import Connect, Connection

# What opening or using a listening connection may raise: it is then simply not listening.
LISTEN_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PgListener:
    """``LISTEN`` on ``channels``: ``on_notify(channel, payload)`` for each notification,
    ``on_lost()`` when the connection goes (notifications may have been lost with it).
    Both are called in the event loop and must not raise or await."""

    def __init__(
        self,
        connect: Connect,
        channels: Iterable[str],
        on_notify: Callable[[str, str], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._connect = connect
        self.channels = tuple(channels)
        self._on_notify = on_notify
        self._on_lost = on_lost
        self._conn: Connection | None = None
        self._lost = asyncio.Event()
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._conn is not None

    @property
    def server_pid(self) -> int | None:
        """The backend's pid while listening (diagnostics; tests end it to lose it)."""
        return self._conn.get_server_pid() if self._conn is not None else None

    async def open(self) -> None:
        """Open the connection and LISTEN, unless it is open; raises what opening raised."""
        if self._conn is not None or self._closed:
            return
        conn = await self._connect()
        try:
            for channel in self.channels:
                await conn.add_listener(channel, self._notified)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._lost.clear()
        self._conn = conn

    async def listen(self) -> bool:
        """:meth:`open`, an error taken as "not listening now": whether it listens."""
        try:
            await self.open()
        except LISTEN_ERRORS:
            return False
        return self._conn is not None

    async def until_lost(self, ping_every: float, ping_timeout: float) -> None:
        """Return once the connection is lost (at once if it is not open). Every
        ``ping_every`` idle seconds it is pinged; unanswered within ``ping_timeout``, it is
        closed (a network that dropped it silently would otherwise leave it deaf)."""
        while (conn := self._conn) is not None:
            with anyio.move_on_after(ping_every):
                await self._lost.wait()
                return
            try:
                await conn.execute("SELECT 1", timeout=ping_timeout)
            except (*LISTEN_ERRORS, TimeoutError):
                self._drop(conn)

    def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._on_notify(channel, str(payload))

    def _terminated(self, conn: object) -> None:
        if self._conn is conn:
            self._drop(conn)

    def _drop(self, conn: object) -> None:
        if self._conn is conn:
            self._conn = None
            self._lost.set()
            if isinstance(conn, asyncpg.Connection):
                conn.terminate()
            self._on_lost()

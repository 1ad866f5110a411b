"""LISTEN on a connection of its own, reopened when lost, for wake-ups across processes.

Notifications are not durable: a connection lost loses what was sent meanwhile. So a
listener is a wake-up, never the only path: ``on_lost`` tells the owner to look for
itself (a worker claims, a reader reads the journal), and the connection is reopened
on the next :meth:`PgListener.ensure`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import asyncpg

from ._pg_pool import Connection

log = logging.getLogger("mainspring.store.postgres")

Handler = Callable[[str], None]  # called with the payload, on the event loop
_RELISTEN_EVERY = 1.0  # seconds between attempts to reopen a lost connection


class PgListener:
    """``handlers``: channel -> handler of its payloads; ``on_lost``: the connection dropped
    (notifications may have been lost with it) or could not be opened."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Connection]],
        handlers: Mapping[str, Handler],
        on_lost: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._handlers = dict(handlers)
        self._on_lost = on_lost
        self._conn: Connection | None = None
        self._tried = -_RELISTEN_EVERY
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def ensure(self) -> bool:
        """Listen if not listening (at most one attempt per second); True if listening."""
        if self.listening:
            return True
        if self._closed or time.monotonic() - self._tried < _RELISTEN_EVERY:
            return False
        self._tried = time.monotonic()
        try:
            conn = await self._connect()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("could not open a LISTEN connection: %s", exc)
            return False
        try:
            for channel in self._handlers:
                await conn.add_listener(channel, self._dispatch)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("could not LISTEN: %s", exc)
            conn.terminate()
            return False
        conn.add_termination_listener(self._lost)
        self._conn = conn
        return True

    def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def _dispatch(self, conn: object, pid: int, channel: str, payload: object) -> None:
        handler = self._handlers.get(channel)
        if handler is not None and isinstance(payload, str):
            handler(payload)

    def _lost(self, conn: object) -> None:
        if self._conn is conn:
            self._conn = None
            if not self._closed:
                self._on_lost()

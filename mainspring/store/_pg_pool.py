"""A small connection pool for the PostgreSQL store: an idle list and a semaphore.

asyncpg's own pool costs about 45 us per operation here (a task per release,
timers for idle connections, and by default a ``RESET ALL`` round trip on every
release): 10-15% of a durable append. This one takes an idle connection and
puts it back without awaiting anything when one is free.

A connection is reused only after a call that ended cleanly or with an ordinary
server error; after anything else (a dropped connection, a cancellation in the
middle of a statement, a client error) it is closed, so the next caller never
inherits a connection in an unknown state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import anyio
import asyncpg

from ._pg_retry import is_transient

T = TypeVar("T")
if TYPE_CHECKING:  # asyncpg's classes are generic only in its stubs
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record]
else:
    Connection = asyncpg.Connection
Connect: TypeAlias = Callable[[], Awaitable[Connection]]


class ConnectionPool:
    def __init__(self, connect: Connect, max_size: int) -> None:
        self._connect = connect
        self._idle: list[Connection] = []
        self._slots = anyio.Semaphore(max_size)
        self._closed = False

    async def fill(self, size: int) -> None:
        """Open ``size`` connections now, so that a bad URL fails at open()."""
        for _ in range(size - len(self._idle)):
            self._idle.append(await self._connect())

    async def run(self, call: Callable[[Connection], Awaitable[T]]) -> T:
        """``call`` with a connection of the pool."""
        conn = await self._acquire()
        try:
            result = await call(conn)
        except asyncpg.PostgresError as exc:  # the server answered; the connection may be fine
            self._release(conn, broken=is_transient(exc))
            raise
        except BaseException:
            self._release(conn, broken=True)
            raise
        self._release(conn, broken=False)
        return result

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.run(lambda c: c.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.run(lambda c: c.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.run(lambda c: c.fetchval(sql, *args))

    async def _acquire(self) -> Connection:
        try:
            self._slots.acquire_nowait()  # no checkpoint when a slot is free
        except anyio.WouldBlock:
            await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()  # LIFO: the warmest statement cache
                if not conn.is_closed():
                    return conn
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def _release(self, conn: Connection, *, broken: bool) -> None:
        if broken or self._closed or conn.is_closed():
            conn.terminate()
        else:
            self._idle.append(conn)
        self._slots.release()

    async def close(self, timeout: float = 5.0) -> None:
        """Close idle connections gracefully; busy ones close when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            with anyio.move_on_after(timeout, shield=True):
                try:
                    await conn.close(timeout=timeout)
                except Exception:
                    conn.terminate()
            if not conn.is_closed():
                conn.terminate()

    def terminate(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.terminate()
        self._idle = []

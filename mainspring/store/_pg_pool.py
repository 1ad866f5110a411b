"""A small connection pool for the PostgreSQL store: an idle list and a semaphore.

asyncpg's own pool costs about 45 us per operation here (a task per release,
timers for idle connections, and by default a ``RESET ALL`` round trip on every
release): 10-15% of a durable append. This one takes an idle connection and
puts it back without awaiting anything when one is free.

A connection is reused only after a call that ended cleanly or with an ordinary
server error; after anything else (a dropped connection, a cancellation in the
middle of a statement, a client error) it is closed, so the next caller never
inherits a connection in an unknown state.

A call unanswered for ``call_timeout`` seconds (a silently dead connection, a
stalled server) has its connection terminated by a watchdog (:meth:`watch`), and
fails with :class:`CallTimeoutError`, which the store retries if ``retry_for``
leaves time. asyncpg's ``command_timeout`` would do the same with a timer per
statement, which costs ~20k instructions (~7% of a durable step's client CPU
here); the watchdog costs a clock read per call.

One dead connection is taken as news about its siblings: a network stall or a
server restart kills them all, silently in the case of a stall, and handing them
out in turn would cost a ``call_timeout`` each. So when a connection is found
dead (a call timed out or failed with a connection error), the idle connections
are dropped and reopened on demand: a reconnect costs ~2.4 ms here, and the first
append on the new connection ~4 ms instead of ~0.4 ms (its statements are
prepared again), while checking them would cost a round trip each and a timeout
to tell a dead one, which is the stall again. A timed-out call also takes with it
the calls that have waited over a quarter of ``call_timeout``: our statements
answer in milliseconds, so those are stuck on the same path, and each would
otherwise wait out its own deadline. Younger calls may be on fresh connections
and keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import anyio
import asyncpg

from ._pg_retry import Retrier, is_connection_lost, is_transient

log = logging.getLogger("mainspring.store.postgres")

T = TypeVar("T")
if TYPE_CHECKING:  # asyncpg's classes are generic only in its stubs
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record]
else:
    Connection = asyncpg.Connection
Connect: TypeAlias = Callable[[], Awaitable[Connection]]


class CallTimeoutError(TimeoutError):
    """The server did not answer within ``call_timeout``; the connection was closed.

    A :class:`TimeoutError`, so an ``OSError``: transient, like any lost connection.
    """

    def __init__(self, call_timeout: float) -> None:
        super().__init__(f"no answer within call_timeout={call_timeout:g} s")
        self.call_timeout = call_timeout


async def connect(dsn: str, timeout: float, server_settings: dict[str, str]) -> Connection:
    """One connection, its connect bounded like a call (a dead path would hang like one)."""
    try:
        return await asyncpg.connect(dsn, timeout=timeout, server_settings=server_settings)
    except TimeoutError as exc:
        raise CallTimeoutError(timeout) from exc


class ConnectionPool:
    def __init__(self, connect: Connect, max_size: int, call_timeout: float) -> None:
        self._connect = connect
        self.call_timeout = call_timeout
        self._idle: list[Connection] = []
        self._slots = anyio.Semaphore(max_size)
        self._closed = False
        # Connections in a call, and since when. Entered when a call starts, so in the
        # order of their deadlines: the first one is always the next to expire.
        self._busy: dict[Connection, float] = {}

    async def watch(self) -> None:
        """Terminate the connections of calls unanswered for ``call_timeout`` seconds.

        Wakes at the oldest call's deadline, not on a coarser tick, so that a stalled
        call ends at ``call_timeout`` and not up to a tick later, past ``retry_for``.
        Runs until cancelled; the store runs it as a task of its own.
        """
        timeout = self.call_timeout
        while True:
            now = time.monotonic()
            oldest = next(iter(self._busy.values()), now)
            if now < oldest + timeout:
                await asyncio.sleep(oldest + timeout - now)
                continue
            stuck = 0
            for conn, since in list(self._busy.items()):
                if since > now - timeout / 4:
                    break
                del self._busy[conn]  # how run() tells that the watchdog closed it
                conn.terminate()
                stuck += 1
            idle = self._drop_idle()
            log.warning(
                "a PostgreSQL call got no answer within call_timeout=%g s; closed the "
                "connections stuck in calls (%d) and the idle ones (%d), reopened on demand",
                timeout,
                stuck,
                idle,
            )

    async def fill(self, size: int) -> None:
        """Open ``size`` connections now, so that a bad URL fails at open()."""
        for _ in range(size - len(self._idle)):
            self._idle.append(await self._connect())

    async def run(self, call: Callable[[Connection], Awaitable[T]]) -> T:
        """``call`` with a connection of the pool."""
        conn = await self._acquire()
        self._busy[conn] = time.monotonic()
        try:
            result = await call(conn)
        except Exception as exc:
            timed_out = conn not in self._busy  # the watchdog took it out and closed it
            # A server error leaves the connection usable, unless it says it is going away.
            broken = not isinstance(exc, asyncpg.PostgresError) or is_transient(exc)
            self._release(conn, broken=broken)
            if timed_out:
                raise CallTimeoutError(self.call_timeout) from exc
            if is_connection_lost(exc):
                self._drop_idle()  # likely dead too, if silently
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

    async def execute(self, sql: str, *args: Any) -> str:
        """Run ``sql``; its command tag (``"INSERT 0 2"``)."""
        return await self.run(lambda c: c.execute(sql, *args))

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
        self._busy.pop(conn, None)
        if broken or self._closed or conn.is_closed():
            conn.terminate()
        else:
            self._idle.append(conn)
        self._slots.release()

    async def close(self) -> None:
        """Close idle connections gracefully; busy ones close when they come back.

        All at once, and for at most ``call_timeout``: on a dead path each close would
        wait for an answer that never comes.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        with anyio.move_on_after(self.call_timeout, shield=True):
            async with anyio.create_task_group() as tg:
                for conn in idle:
                    tg.start_soon(_close, conn)
        for conn in idle:
            if not conn.is_closed():
                conn.terminate()

    def terminate(self) -> None:
        self._closed = True
        self._drop_idle()

    def _drop_idle(self) -> int:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.terminate()
        return len(idle)


async def _close(conn: Connection) -> None:
    try:
        await conn.close()  # aborts the connection if cancelled
    except Exception:
        conn.terminate()


async def open_watched(
    pool: ConnectionPool,
    name: str,
    retrier: Retrier,
    fill: int,
    what: str,
    prepare: Callable[[Connection], Awaitable[object]],
) -> asyncio.Task[None]:
    """Start ``pool``'s watchdog, fill ``fill`` connections (a server never reached fails
    at once) and run ``prepare`` on one (the schema; ``what`` names it in errors), retried.

    The watchdog is a task of the caller's object, ended by :func:`close_watched`: a task
    group entered here would tie the object to the opening task's cancel-scope stack (and
    ``with CancelScope(shield=True): await obj.aclose()`` would fail on leaving the scopes
    out of order). It starts first: a stall while the schema is checked must end too. If
    anything fails, the pool and its watchdog end before the error is raised."""
    watchdog = asyncio.get_running_loop().create_task(pool.watch(), name=name)
    try:
        await retrier.run("connecting", lambda _: pool.fill(fill), opening=True)
        await retrier.run(what, lambda _: pool.run(prepare))
    except BaseException:
        pool.terminate()
        watchdog.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({watchdog})
        raise
    return watchdog


async def close_watched(pool: ConnectionPool, watchdog: asyncio.Task[None]) -> None:
    """End what :func:`open_watched` started: the watchdog, then the pool (shielded)."""
    watchdog.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.wait({watchdog})
        await pool.close()

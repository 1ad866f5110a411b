"""One critical section per (tenant, thread): the look at a thread and the start of a run on
it are one step, so two messages at once cannot both find the thread free.

Every path that starts a run on a thread takes it: ``POST /v1/runs`` with a thread,
``POST /v1/threads/{t}/runs``, the OpenAI and AG-UI endpoints, a fork onto a thread, and
a queued run when its turn comes.

* :class:`LocalThreadLocks`: an ``anyio.Lock`` per thread in use; enough when one server
  process uses the store (``memory://``; SQLite, whose file is one server's: the
  embedded case, docs/server.md).
* :class:`PostgresThreadLocks`: several servers share a PostgreSQL store, so the section
  is also a PostgreSQL advisory lock (``pg_advisory_xact_lock``) on the thread's key,
  held in a transaction of a connection of its own (not the store's pool: the start made
  under the lock needs those) until the section ends. The local lock is taken first, so
  one server holds at most one connection per thread at a time.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import anyio

from ..errors import StoreUnavailableError
from .errors import ApiError

log = logging.getLogger("mainspring.server")

#: At most this many lock connections per server (threads being started at once beyond
#: it wait for one): each holds its lock only over a look and a start.
MAX_LOCK_CONNECTIONS = 4


class ThreadLocks(Protocol):
    """The per-(tenant, thread) critical section of starts; see the module docstring."""

    def locked(self, tenant: str, thread: str) -> AbstractAsyncContextManager[None]: ...

    async def aclose(self) -> None: ...


class LocalThreadLocks:
    """A lock per (tenant, thread) in use, in this process."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def locked(self, tenant: str, thread: str) -> AsyncIterator[None]:
        key = (tenant, thread)
        lock, users = self._locks.get(key) or (anyio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def aclose(self) -> None:
        return None


class PostgresThreadLocks:
    """The local lock, then a PostgreSQL advisory lock shared by every server on the store.

    The lock is a transaction's (``pg_advisory_xact_lock``): whatever happens to the
    connection (a crash, a cut), PostgreSQL ends the transaction and so the lock. A wait
    longer than ``call_timeout`` (``lock_timeout``: another server stuck in its section)
    is a 503; an idle connection found dead is replaced once.
    """

    def __init__(self, url: str, schema: str, call_timeout: float = 10.0) -> None:
        from ..store._pg_url import parse_url

        self._dsn = parse_url(url, schema).dsn
        self._schema = schema  # stores in other schemas of the database are not this one
        self._timeout = call_timeout
        self._local = LocalThreadLocks()
        self._slots = anyio.Semaphore(MAX_LOCK_CONNECTIONS)
        self._idle: list[Any] = []  # asyncpg connections

    @asynccontextmanager
    async def locked(self, tenant: str, thread: str) -> AsyncIterator[None]:
        async with self._local.locked(tenant, thread), self._slots:
            conn = await self._lock(lock_key(self._schema, tenant, thread), thread)
            ended = False
            try:
                try:
                    yield
                except Exception:  # a 409 and the like: the start did not happen
                    await self._end(conn, "ROLLBACK")
                    ended = True
                    raise
                await self._end(conn, "COMMIT")
                ended = True
            finally:
                if not ended:  # cancelled: closing the connection ends its transaction
                    conn.terminate()

    async def _lock(self, key: int, thread: str) -> Any:
        """A connection in a transaction that holds the thread's lock."""
        import asyncpg

        from ..store._pg_retry import is_transient

        for attempt in (1, 2):
            reused = bool(self._idle)
            try:
                conn = self._idle.pop() if reused else await self._connect()
            except Exception as exc:
                raise _unavailable(exc) from exc
            try:
                # One round trip: the key is an integer, written into the statement.
                await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({int(key)})")
                return conn
            except BaseException as exc:
                conn.terminate()
                if isinstance(exc, asyncpg.LockNotAvailableError):
                    raise ApiError(
                        503,
                        "unavailable",
                        f"thread {thread!r} is held by another server's start for over "
                        f"{self._timeout:g} s; try again",
                    ) from None
                if not isinstance(exc, Exception) or not is_transient(exc):
                    raise
                if attempt == 2 or not reused:
                    raise _unavailable(exc) from exc
        raise AssertionError("unreachable")

    async def _end(self, conn: Any, statement: str) -> None:
        """End the transaction (and the lock); the connection is kept if that went well."""
        try:
            await conn.execute(statement)
        except Exception as exc:  # the lock ended with the connection: the start stands
            log.warning("ending a thread lock's transaction failed (%r); reconnecting", exc)
            conn.terminate()
            return
        self._idle.append(conn)

    async def _connect(self) -> Any:
        from ..store._pg_pool import connect

        settings = {
            "application_name": "mainspring thread locks",
            "lock_timeout": str(int(self._timeout * 1000)),
        }
        return await connect(self._dsn, self._timeout, settings)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with anyio.CancelScope(shield=True):
                await conn.close()


def lock_key(schema: str, tenant: str, thread: str) -> int:
    """The advisory lock's key: a signed 64-bit hash of the three (the separator cannot be
    in an id), the same in every server."""
    digest = hashlib.blake2b(f"{schema}\x1f{tenant}\x1f{thread}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"could not take a thread's lock in PostgreSQL ({exc!r}); the store may be down"
    )


def thread_locks_for(store: Any) -> ThreadLocks:
    """The locks that fit the runtime's store: PostgreSQL's when servers may share it."""
    postgres = sys.modules.get("mainspring.store.postgres")  # not imported: not PostgreSQL
    if postgres is not None and isinstance(store, postgres.PostgresStore):
        return PostgresThreadLocks(store.url, store.target.schema, store.call_timeout)
    return LocalThreadLocks()

"""Pending starts in the PostgreSQL store's schema: a table ``pending_starts`` beside the
journal's, made as the API keys' table is (``keys/postgres.py``: the store's migration
first, then ``CREATE TABLE IF NOT EXISTS`` under an advisory lock of its own). Every
server on the schema sees every pending start."""

from __future__ import annotations

import asyncio
import json

from ...errors import StoreError
from ...store._pg_pool import Connection, ConnectionPool, close_watched, connect, open_watched
from ...store._pg_retry import Retrier
from ...store._pg_schema import migrate, quote_ident
from ...store._pg_url import option, parse_url
from ._record import PendingStart, pending_of

_LOCK = (0x4D53, 0x70656E64)  # "MS", "pend": the advisory lock the table is made under
_COLUMNS = "run_id, tenant, thread, graph, after, queued_at, request"


class PostgresPendingStarts:
    """``postgresql://...``: the pending starts of the servers on that schema."""

    def __init__(self, url: str) -> None:
        parsed = parse_url(url, None)
        self._dsn, self.target = parsed.dsn, parsed.target
        self.retry_for = option(parsed.options, "retry_for", None, float, 5.0)
        self.call_timeout = option(
            parsed.options, "call_timeout", None, float, max(self.retry_for / 3, 1.0), positive=True
        )
        self._table = f"{quote_ident(self.target.schema)}.pending_starts"
        self._retrier = Retrier(self.target, self.retry_for)
        self._pool: ConnectionPool | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = ConnectionPool(self._connect, 2, self.call_timeout)
        self._watchdog = await open_watched(
            pool, "mainspring pending starts", self._retrier, 1, "making pending_starts",
            self._make,
        )  # fmt: skip
        self._pool = pool

    async def _connect(self) -> Connection:
        return await connect(self._dsn, self.call_timeout, {"application_name": "mainspring"})

    async def _make(self, conn: Connection) -> None:
        await migrate(conn, self.target)  # the store's schema, refused or made whole first
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *_LOCK)
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {self._table} (
                    position bigserial PRIMARY KEY,
                    run_id text COLLATE "C" NOT NULL UNIQUE,
                    tenant text NOT NULL,
                    thread text NOT NULL,
                    graph text NOT NULL,
                    after text NOT NULL,
                    queued_at double precision NOT NULL,
                    request jsonb NOT NULL
                )"""
            )

    async def aclose(self) -> None:
        pool, watchdog = self._pool, self._watchdog
        self._pool = self._watchdog = None
        if pool is not None and watchdog is not None:
            await close_watched(pool, watchdog)

    def _live(self) -> ConnectionPool:
        if self._pool is None:
            raise StoreError(f"pending starts on {self.target} are not open")
        return self._pool

    async def add(self, start: PendingStart) -> None:
        pool, s = self._live(), start
        sql = (
            f"INSERT INTO {self._table} ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)"
            " ON CONFLICT (run_id) DO NOTHING"
        )
        args = (s.run_id, s.tenant, s.thread, s.graph, s.after, s.queued_at, json.dumps(s.request))
        # Safe to retry: a second insert after a lost reply finds the first (DO NOTHING).
        await self._retrier.run("saving a pending start", lambda _: pool.execute(sql, *args))

    async def remove(self, run_id: str) -> bool:
        pool = self._live()
        sql = f"DELETE FROM {self._table} WHERE run_id = $1 RETURNING 1"
        gone = await self._retrier.run(
            "removing a pending start", lambda _: pool.fetchval(sql, run_id)
        )
        return gone is not None

    async def remove_thread(self, tenant: str, thread: str) -> list[str]:
        pool = self._live()
        sql = (
            f"DELETE FROM {self._table} WHERE tenant = $1 AND thread = $2"
            " RETURNING run_id, position"
        )
        rows = await self._retrier.run(
            "removing a thread's pending starts", lambda _: pool.fetch(sql, tenant, thread)
        )
        return [str(r[0]) for r in sorted(rows, key=lambda r: r[1])]

    async def holds(self, run_id: str) -> bool:
        pool = self._live()
        sql = f"SELECT 1 FROM {self._table} WHERE run_id = $1"
        found = await self._retrier.run(
            "reading a pending start", lambda _: pool.fetchval(sql, run_id)
        )
        return found is not None

    async def all(self) -> list[PendingStart]:
        pool = self._live()
        sql = f"SELECT {_COLUMNS}, request::text FROM {self._table} ORDER BY position"
        rows = await self._retrier.run("reading pending starts", lambda _: pool.fetch(sql))
        return [pending_of(tuple(r), r[7]) for r in rows]

"""Pending starts in the PostgreSQL store's schema: a table ``pending_starts`` beside the
journal's, made as the API keys' table is (``keys/postgres.py``: the store's migration
first, then ``CREATE TABLE IF NOT EXISTS`` under an advisory lock of its own). Every
server on the schema sees every pending start."""

from __future__ import annotations

import json

from ..side_tables import PostgresSideTable
from ._record import PendingStart, pending_of

_LOCK = (0x4D53, 0x70656E64)  # "MS", "pend": the advisory lock the table is made under
_COLUMNS = "run_id, tenant, thread, graph, after, queued_at, request"
_DDL = """position bigserial PRIMARY KEY,
    run_id text COLLATE "C" NOT NULL UNIQUE,
    tenant text NOT NULL,
    thread text NOT NULL,
    graph text NOT NULL,
    after text NOT NULL,
    queued_at double precision NOT NULL,
    request jsonb NOT NULL"""


class PostgresPendingStarts(PostgresSideTable):
    """``postgresql://...``: the pending starts of the servers on that schema."""

    def __init__(self, url: str) -> None:
        super().__init__(url, "pending_starts", _DDL, _LOCK, "pending starts")

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

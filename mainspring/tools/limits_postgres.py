"""Tool limits in PostgreSQL: token buckets, slots and breakers shared by every process.

One row per key in ``<schema>.tool_limits`` (``key``, ``state`` as JSON text,
``expires`` in epoch seconds; a row past it counts as absent). An update is one
transaction: ``tool_limits_read`` takes a transaction-scoped advisory lock on the key
and returns its state and the server's clock, the pure update runs here, and the new
state is written (or the row deleted) before the commit releases the lock. The table
and function live in the schema of the URL (``?schema=``, ``mainspring`` by default).
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import anyio
import asyncpg

from ..store._pg_url import parse_url
from .limits import Update

if TYPE_CHECKING:  # asyncpg's classes are generic only in its stubs
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:
    Pool = asyncpg.Pool

T = TypeVar("T")

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.tool_limits (
    key text PRIMARY KEY, state text NOT NULL, expires float8 NOT NULL
);
CREATE OR REPLACE FUNCTION {s}.tool_limits_read(k text)
RETURNS TABLE (state text, now float8) LANGUAGE plpgsql AS $$
DECLARE
    t float8;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('mainspring_tool_limits:' || k, 0));
    t := extract(epoch FROM clock_timestamp());
    RETURN QUERY SELECT (SELECT l.state FROM {s}.tool_limits l
                         WHERE l.key = k AND l.expires > t), t;
END $$;
"""


class PostgresLimits:
    """Limits in PostgreSQL at ``url`` (``postgresql://...?schema=name``); opened on first
    use; ``aclose()`` closes its connections. ``poll``: how often a waiting call looks
    for a free slot."""

    shared = True

    def __init__(
        self, url: str, *, schema: str | None = None, max_size: int = 10, poll: float = 0.02
    ) -> None:
        parsed = parse_url(url, schema)
        self._dsn = parsed.dsn
        self.schema = parsed.target.schema
        self.url = str(parsed.target)
        self.max_size = max_size
        self.poll = poll
        self._pool: Pool | None = None
        self._opening = anyio.Lock()
        s = f'"{self.schema}"'
        self._read_sql = f"SELECT state, now FROM {s}.tool_limits_read($1)"
        self._write_sql = (
            f"INSERT INTO {s}.tool_limits VALUES ($1, $2, $3) ON CONFLICT (key) "
            "DO UPDATE SET state = excluded.state, expires = excluded.expires"
        )
        self._delete_sql = f"DELETE FROM {s}.tool_limits WHERE key = $1"
        self._all_sql = (
            f"SELECT key, state, extract(epoch FROM clock_timestamp()) AS now "
            f"FROM {s}.tool_limits WHERE starts_with(key, $1) "
            "AND expires > extract(epoch FROM clock_timestamp())"
        )
        self._purge_sql = (
            f"DELETE FROM {s}.tool_limits WHERE expires < extract(epoch FROM clock_timestamp())"
        )
        self._clock_sql = "SELECT extract(epoch FROM clock_timestamp())::float8"

    async def open(self) -> Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self.max_size)
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        lock = "SELECT pg_advisory_xact_lock(hashtext('mainspring_tool_limits'))"
                        await conn.execute(lock)
                        await conn.execute(_SCHEMA.format(s=f'"{self.schema}"'))
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
            return self._pool

    async def update(self, key: str, fn: Update[T], ttl: float) -> T:
        pool = await self.open()
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(self._read_sql, key)
            assert row is not None
            raw, now = row["state"], float(row["now"])
            state, answer = fn(None if raw is None else json.loads(raw), now)
            if state is None:
                await conn.execute(self._delete_sql, key)
            else:
                await conn.execute(self._write_sql, key, json.dumps(state), now + ttl)
            if random.random() < 0.01:  # now and then, forget what expired
                await conn.execute(self._purge_sql)
        return answer

    async def snapshot(self, prefix: str = "") -> dict[str, Any]:
        pool = await self.open()
        async with pool.acquire() as conn:
            rows = await conn.fetch(self._all_sql, prefix)
            now = float(rows[0]["now"]) if rows else float(await conn.fetchval(self._clock_sql))
        return {"now": now, **{r["key"]: json.loads(r["state"]) for r in rows}}

    async def released(self, key: str, timeout: float) -> None:
        await anyio.sleep(min(timeout, self.poll * (0.5 + random.random())))

    async def clear(self) -> None:
        """Delete every row (tests, resets)."""
        pool = await self.open()
        await pool.execute(f'DELETE FROM "{self.schema}".tool_limits')

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

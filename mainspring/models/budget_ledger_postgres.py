"""The PostgreSQL budget ledger: counters that every process on one PostgreSQL shares.

One round trip per operation: a reservation is one call of a function,
``budget_reserve``, which makes the counters' rows exist, locks them in one global
order (no deadlocks between reservations that share counters), checks every limit
and adds every amount, or nothing, in the one statement's transaction. Settling
and releasing are one call of ``budget_add``. The tables and functions live in the
schema of the URL (``?schema=``, ``mainspring`` by default, as for the store).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import asyncpg

from ..store._pg_retry import is_transient
from ..store._pg_url import parse_url
from .budget_ledger import Entry, Refusal, Reservation, ordered, settled

log = logging.getLogger("mainspring.models.budgets")

if TYPE_CHECKING:  # asyncpg's classes are generic only in its stubs
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:
    Pool = asyncpg.Pool

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.budget_counters (
    scope text NOT NULL, metric text NOT NULL, bucket bigint NOT NULL,
    amount float8 NOT NULL, PRIMARY KEY (scope, metric, bucket)
);
CREATE TABLE IF NOT EXISTS {s}.budget_starts (scope text PRIMARY KEY, started float8 NOT NULL);

-- Lock the counters (made when missing) in key order: (scope, metric, bucket).
CREATE OR REPLACE FUNCTION {s}.budget_lock(scopes text[], metrics text[], buckets bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.budget_counters (scope, metric, bucket, amount)
        SELECT u.s, u.m, u.b, 0 FROM unnest(scopes, metrics, buckets) AS u(s, m, b)
        ORDER BY 1, 2, 3
        ON CONFLICT DO NOTHING;
    PERFORM 1 FROM {s}.budget_counters c
        JOIN unnest(scopes, metrics, buckets) AS u(s, m, b)
          ON c.scope = u.s AND c.metric = u.m AND c.bucket = u.b
        ORDER BY c.scope, c.metric, c.bucket
        FOR UPDATE OF c;
END $$;

-- Add every amount, or none if a limited counter would pass its limit; returns the
-- refused entry's index (from 0) and its counter, or -1 and the counters after.
CREATE OR REPLACE FUNCTION {s}.budget_reserve(
    scopes text[], metrics text[], buckets bigint[], amounts float8[], limits float8[]
) RETURNS TABLE (refused int, spent float8, totals float8[]) LANGUAGE plpgsql AS $$
DECLARE
    now_spent float8[];
BEGIN
    PERFORM {s}.budget_lock(scopes, metrics, buckets);
    SELECT array_agg(c.amount ORDER BY u.o) INTO now_spent
        FROM unnest(scopes, metrics, buckets) WITH ORDINALITY AS u(s, m, b, o)
        JOIN {s}.budget_counters c ON c.scope = u.s AND c.metric = u.m AND c.bucket = u.b;
    FOR i IN 1 .. cardinality(scopes) LOOP
        IF limits[i] IS NOT NULL
           AND (now_spent[i] + amounts[i] > limits[i] OR now_spent[i] >= limits[i]) THEN
            RETURN QUERY SELECT i - 1, now_spent[i], NULL::float8[];
            RETURN;
        END IF;
    END LOOP;
    RETURN QUERY WITH added AS (
        UPDATE {s}.budget_counters c SET amount = c.amount + u.a
        FROM unnest(scopes, metrics, buckets, amounts) WITH ORDINALITY AS u(s, m, b, a, o)
        WHERE c.scope = u.s AND c.metric = u.m AND c.bucket = u.b
        RETURNING u.o, c.amount
    ) SELECT -1, 0::float8, array_agg(added.amount ORDER BY added.o) FROM added;
END $$;

CREATE OR REPLACE FUNCTION {s}.budget_add(
    scopes text[], metrics text[], buckets bigint[], amounts float8[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {s}.budget_lock(scopes, metrics, buckets);
    UPDATE {s}.budget_counters c SET amount = c.amount + u.a
        FROM unnest(scopes, metrics, buckets, amounts) AS u(s, m, b, a)
        WHERE c.scope = u.s AND c.metric = u.m AND c.bucket = u.b;
END $$;
"""


class PostgresLedger:
    """Counters in PostgreSQL at ``url`` (``postgresql://...?schema=name``); opened on
    first use, or with ``await ledger.open()``; ``aclose()`` closes its connections.
    ``durable=False`` lets commits go without waiting for the disk (see ``__init__``)."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        max_size: int = 10,
        retry_for: float = 10.0,
        durable: bool = True,
    ) -> None:
        parsed = parse_url(url, schema)
        self._dsn = parsed.dsn
        self.schema = parsed.target.schema
        self.max_size = max_size
        self.retry_for = retry_for
        # durable=False: commits do not wait for the WAL's flush (synchronous_commit=off):
        # ~10x faster here, and a server crash forgets the last fraction of a second of counts.
        self._settings = {} if durable else {"synchronous_commit": "off"}
        self._pool: Pool | None = None
        s = f'"{self.schema}"'
        self._reserve_sql = f"SELECT * FROM {s}.budget_reserve($1, $2, $3, $4, $5)"
        self._add_sql = f"SELECT {s}.budget_add($1, $2, $3, $4)"
        self._spent_sql = (
            f"SELECT amount FROM {s}.budget_counters WHERE scope=$1 AND metric=$2 AND bucket=$3"
        )
        self._started_sql = (
            f"INSERT INTO {s}.budget_starts VALUES ($1, $2) ON CONFLICT (scope) "
            f"DO UPDATE SET started = {s}.budget_starts.started RETURNING started"
        )

    async def open(self) -> None:
        if self._pool is not None:
            return
        # reset=: asyncpg's default resets a connection on every release, a second round
        # trip per call; ours leave no session state behind (transaction-scoped locks only).
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=self.max_size,
            reset=_keep_session,
            server_settings=self._settings,
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                # One process at a time replaces the functions ("tuple concurrently updated").
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('mainspring_budgets'))")
                await conn.execute(_SCHEMA.format(s=f'"{self.schema}"'))
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def reserve(self, entries: Sequence[Entry]) -> Reservation | Refusal:
        limits = [e.limit for e in entries]
        amounts = [e.amount for e in entries]
        row = await self._fetchrow(self._reserve_sql, *_keys(entries), amounts, limits)
        assert row is not None
        if row["refused"] >= 0:
            return Refusal(row["refused"], entries[row["refused"]], float(row["spent"]))
        return Reservation(tuple(entries), tuple(row["totals"]))

    async def settle(self, reservation: Reservation, actual: Mapping[str, float]) -> None:
        corrections = settled(reservation, actual)
        if corrections:
            await self._add(corrections)

    async def release(self, reservation: Reservation) -> None:
        await self._add([(e, -e.amount) for e in reservation.entries])

    async def spent(self, scope: str, metric: str, bucket: int = 0) -> float:
        row = await self._fetchrow(self._spent_sql, scope, metric, bucket)
        return float(row["amount"]) if row else 0.0

    async def started(self, scope: str, now: float) -> float:
        row = await self._fetchrow(self._started_sql, scope, now)
        assert row is not None
        return float(row["started"])

    async def _add(self, amounts: list[tuple[Entry, float]]) -> None:
        entries = ordered([e for e, _ in amounts])
        by_entry = {id(e): a for e, a in amounts}
        await self._fetchrow(self._add_sql, *_keys(entries), [by_entry[id(e)] for e in entries])

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """One statement, tried again for ``retry_for`` seconds while PostgreSQL is out of
        reach or of connections. A reservation whose answer was lost may be counted twice:
        the ledger errs on the side of spending less."""
        deadline = time.monotonic() + self.retry_for
        delay = 0.01
        while True:
            try:
                if self._pool is None:
                    await self.open()
                assert self._pool is not None
                async with self._pool.acquire() as conn:
                    return await conn.fetchrow(sql, *args)
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("budget ledger: PostgreSQL unavailable (%s); trying again", exc)
            await anyio.sleep(delay * random.random())
            delay = min(delay * 2, 1.0)


async def _keep_session(conn: Any) -> None:
    """Release a connection as it is: the ledger's statements change no session state."""


def _keys(entries: Sequence[Entry]) -> tuple[list[str], list[str], list[int]]:
    """The entries' counters as the SQL functions take them (arrays, one element each)."""
    return [e.scope for e in entries], [e.metric for e in entries], [e.bucket for e in entries]

"""Semantic memory's items on PostgreSQL, shared by many worker processes.

``await PostgresItemStore.open("postgresql://user@host/db?schema=mainspring")``: the
URL and its options are the journal store's (``store/_pg_url``: ``schema``,
``retry_for``, ``call_timeout``, ``min_size``, ``max_size``), and so are the connection
pool and the retries through lost connections (``store/_pg_pool``, ``_pg_retry``).
The tables (``_pg_schema``) are created on open, idempotently: many workers opening a
new database at once take turns on an advisory lock.

Search by meaning runs in each process's own vector index, not in the database
(pgvector is not packaged here); the database holds the vectors (float32 bytes) and a
change feed, :meth:`changes`, from which each process keeps its index current: it
polls, and :meth:`wait_for_changes` wakes it as soon as another process writes
(``LISTEN``/``NOTIFY``, delivered at the writer's commit; the poll covers a lost
notification). Keyword search is PostgreSQL's full-text search (a generated
``tsvector`` with a GIN index, ranked by ``ts_rank_cd``), metadata filters are jsonb
expressions (``_pg_sql``).

A write's vector (the protocol's rule): given, it replaces the stored one; None keeps
the stored one if the text is unchanged (a change of metadata or of the superseded
mark) and clears it otherwise, so that vector search stops returning an item whose text
changed until :meth:`set_vectors` brings its new embedding.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ...errors import StoreError
from ...store._pg_pool import Connection, ConnectionPool, close_watched, connect, open_watched
from ...store._pg_retry import Retrier
from ...store._pg_url import option, parse_url
from ..scope import Scope
from ._pg_listen import CHANNEL, ChangeSignal
from ._pg_schema import LOCK_CLASS, migrate
from ._pg_sql import (
    COMMON_LEXEMES,
    ITEM_COLUMNS,
    Query,
    any_word_query,
    item_columns,
    item_from_row,
    statements,
    vector_bytes,
)
from .items import MemoryItem
from .protocols import Change, Selection, Vector

T = TypeVar("T")
_CALL_TIMEOUT = 10.0
_COMMON_EVERY = 300.0  # seconds between reads of the common words of the items
_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class PostgresItemStore:
    """An :class:`~.protocols.ItemStore` on PostgreSQL (asyncpg; asyncio only).

    ``table_prefix`` names the tables (``{prefix}items``, ``{prefix}changes``), so that
    several memories can share one schema, and the journal's tables can sit beside them.
    """

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = "memory_",
        schema: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        retry_for: float | None = None,
        call_timeout: float | None = None,
    ) -> None:
        if not table_prefix or not set(table_prefix) <= _PREFIX_CHARS or len(table_prefix) > 40:
            raise ValueError(
                f"table_prefix {table_prefix!r} must be 1-40 lowercase letters, digits or "
                "underscores (it starts table names)"
            )
        if table_prefix[0].isdigit():
            raise ValueError(f"table_prefix {table_prefix!r} must not start with a digit")
        parsed = parse_url(url, schema)
        self._dsn, self.target, params = parsed.dsn, parsed.target, parsed.options
        self.table_prefix = table_prefix
        self.max_size = option(params, "max_size", max_size, int, 10, positive=True)
        self.min_size = min(option(params, "min_size", min_size, int, 1), self.max_size)
        self.retry_for = option(params, "retry_for", retry_for, float, 30.0)
        timeout = min(_CALL_TIMEOUT, self.retry_for / 3) if self.retry_for else _CALL_TIMEOUT
        self.call_timeout = option(
            params, "call_timeout", call_timeout, float, timeout, positive=True
        )
        self._server_settings = {"jit": "off", "application_name": "mainspring-memory"}
        self._sql = statements(self.target.schema, table_prefix)
        self._retrier = Retrier(self.target, self.retry_for)
        self._pool: ConnectionPool | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._signal = ChangeSignal(self._connect, self._sql.notify_payload)
        self._common: builtins.list[str] = []
        self._common_at = -_COMMON_EVERY

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        table_prefix: str = "memory_",
        schema: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        retry_for: float | None = None,
        call_timeout: float | None = None,
    ) -> PostgresItemStore:
        """Connect, create the tables if they are missing, and listen for changes."""
        store = cls(
            url,
            table_prefix=table_prefix,
            schema=schema,
            min_size=min_size,
            max_size=max_size,
            retry_for=retry_for,
            call_timeout=call_timeout,
        )
        await store._open()
        return store

    async def _open(self) -> None:
        pool = ConnectionPool(self._connect, self.max_size, self.call_timeout)
        prefix = self.table_prefix
        self._watchdog = await open_watched(
            pool,
            f"mainspring memory watchdog ({self.target.schema})",
            self._retrier,
            self.min_size or 1,
            "creating semantic memory's tables",
            lambda conn: migrate(conn, self.target, prefix),
        )
        self._pool = pool
        await self._signal.listen()

    async def aclose(self) -> None:
        pool, watchdog = self._pool, self._watchdog
        self._pool = self._watchdog = None
        self._signal.close()
        if pool is not None and watchdog is not None:
            await close_watched(pool, watchdog)

    async def __aenter__(self) -> PostgresItemStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _connect(self) -> Connection:
        return await connect(self._dsn, self.call_timeout, self._server_settings)

    def _live_pool(self) -> ConnectionPool:
        if self._pool is None:
            raise StoreError(
                "the PostgreSQL item store is not open; use 'await PostgresItemStore.open(url)'"
            )
        return self._pool

    async def wait_for_changes(self, timeout: float) -> bool:
        """Wait until a process may have written changes since the last :meth:`changes`
        call began (True), or ``timeout`` seconds passed (False): a worker's cue to read
        the feed now rather than at its next poll."""
        return await self._signal.wait(timeout)

    # -- the ItemStore protocol ----------------------------------------------------------

    async def bind_model(self, model: str, dimensions: int) -> None:
        if not model or dimensions < 1:
            raise ValueError(f"bind_model needs a model name and dimensions >= 1, got {model!r}")
        wanted = f"{model}:{dimensions}"
        key = f"{self.table_prefix}model"
        sql = (
            f"WITH ins AS (INSERT INTO {self._sql.meta} (key, value) VALUES ($1, $2)"
            " ON CONFLICT (key) DO NOTHING RETURNING value)"
            f" SELECT value FROM ins UNION ALL SELECT value FROM {self._sql.meta} WHERE key = $1"
        )
        bound = None
        for _ in range(2):  # None once: a concurrent first bind committed after our snapshot
            bound = await self._run(
                "binding the model", lambda conn: conn.fetchval(sql, key, wanted)
            )
            if bound is not None:
                break
        if bound != wanted:
            raise StoreError(
                f"semantic memory {self.target.schema}.{self.table_prefix}items holds vectors of "
                f"{bound!r}, not {wanted!r}; use that model, or another table_prefix or schema"
            )

    async def put(self, items: Sequence[MemoryItem], vectors: Sequence[Vector | None]) -> None:
        if len(items) != len(vectors):
            raise ValueError(f"put got {len(items)} items but {len(vectors)} vectors")
        Key = tuple[str, str]  # (tenant, id): ids are unique within a tenant
        latest: dict[Key, tuple[MemoryItem, Vector | None]] = {}
        for item, vector in zip(items, vectors, strict=True):
            latest[item.scope.tenant, item.id] = (item, vector)  # the last of repeats wins
        if not latest:
            return
        keys = sorted(latest)  # one lock order: no deadlocks between writers
        columns = item_columns([latest[k][0] for k in keys], [latest[k][1] for k in keys])
        tenants, ids = [k[0] for k in keys], [k[1] for k in keys]
        sql = self._sql

        async def write(conn: Connection) -> None:
            async with conn.transaction():
                existing = await conn.fetch(sql.lock_existing, tenants, ids)
                await conn.execute(sql.put, *columns)
                # A vector set, or one cleared because the text changed (_pg_sql.put).
                cleared = {
                    (r[0], r[1]) for r in existing if r[3] and r[2] != latest[r[0], r[1]][0].text
                }
                changed = [k for k in keys if latest[k][1] is not None or k in cleared]
                await self._record_changes(conn, [k[0] for k in changed], [k[1] for k in changed])

        await self._run("writing items", write)

    async def set_vectors(self, entries: Sequence[tuple[str, str, Vector]]) -> builtins.list[str]:
        latest = {id: (text, vector_bytes(v)) for id, text, v in entries}
        if not latest:
            return []
        ids = sorted(latest)
        texts = [latest[i][0] for i in ids]
        blobs = [latest[i][1] for i in ids]

        async def write(conn: Connection) -> builtins.list[str]:
            async with conn.transaction():
                rows = await conn.fetch(self._sql.set_vectors, ids, texts, blobs)
                await self._record_changes(conn, [r[0] for r in rows], [r[1] for r in rows])
            return list(dict.fromkeys(r[1] for r in rows))

        return await self._run("storing vectors", write)

    async def _record_changes(
        self, conn: Connection, tenants: builtins.list[str], ids: builtins.list[str]
    ) -> None:
        if not ids:
            return
        # Under the lock, change numbers are drawn in commit order (see _pg_schema).
        await conn.execute(
            f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, hashtext($1)), pg_notify($2, $3)",
            self._sql.lock_key,
            CHANNEL,
            self._sql.notify_payload,
        )
        await conn.execute(self._sql.changed, tenants, ids)

    async def get(self, ids: Sequence[str], *, tenant: str) -> builtins.list[MemoryItem]:
        _check_ids(ids)
        if not ids:
            return []
        rows = await self._run(
            "reading items", lambda conn: conn.fetch(self._sql.get, list(set(ids)), tenant)
        )
        return [item_from_row(row) for row in rows]

    async def list(
        self, selection: Selection, *, limit: int = 100, after: str | None = None
    ) -> builtins.list[MemoryItem]:
        _check_limit(limit)
        q = Query()
        q.selection(selection)
        if after is not None:
            q.where.append(f"id > {q.arg(after, 'text')}")
        sql = (
            f"SELECT {ITEM_COLUMNS} FROM {self._sql.items} WHERE {q.clause}"
            f" ORDER BY id LIMIT {q.arg(limit, 'int')}"
        )
        rows = await self._run("listing items", lambda conn: conn.fetch(sql, *q.args))
        return [item_from_row(row) for row in rows]

    async def ids(self, selection: Selection, *, limit: int) -> builtins.list[str]:
        _check_limit(limit)
        q = Query()
        q.selection(selection)
        sql = f"SELECT id FROM {self._sql.items} WHERE {q.clause} LIMIT {q.arg(limit, 'int')}"
        rows = await self._run("selecting items", lambda conn: conn.fetch(sql, *q.args))
        return [row[0] for row in rows]

    async def keyword(
        self, query: str, selection: Selection, *, limit: int
    ) -> builtins.list[tuple[str, float]]:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        _check_limit(limit)
        if not query.strip():
            return []
        common = await self._common_lexemes()
        q = Query()
        words = any_word_query(q.arg(query, "text"), q.arg(common, "text[]"))
        q.selection(selection)
        # Normalisation 1 divides by 1 + log(length): a long passage that mentions a word
        # once does not outrank a short fact about it.
        sql = (
            f"SELECT id, ts_rank_cd(tsv, tq.q, 1) AS score"
            f" FROM {self._sql.items}, (SELECT {words} AS q) AS tq"
            f" WHERE tsv @@ tq.q AND {q.clause}"
            f" ORDER BY score DESC, id LIMIT {q.arg(limit, 'int')}"
        )
        rows = await self._run("searching items", lambda conn: conn.fetch(sql, *q.args))
        return [(row[0], float(row[1])) for row in rows]

    async def _common_lexemes(self) -> builtins.list[str]:
        """The items' common words (``_pg_sql.any_word_query``), read again every few
        minutes: the statistics change only when the table is analysed."""
        now = time.monotonic()
        if now - self._common_at > _COMMON_EVERY:
            table = f"{self.table_prefix}items"
            self._common = await self._run(
                "reading word statistics",
                lambda conn: conn.fetchval(COMMON_LEXEMES, self.target.schema, table),
            )
            self._common_at = now
        return self._common

    async def same(
        self,
        scope: Scope,
        *,
        key: str | None = None,
        digest: str | None = None,
        open_at: float | None = None,
    ) -> builtins.list[MemoryItem]:
        if key is None and digest is None:
            raise ValueError("same needs a key or a digest (or both)")
        q = Query()
        q.exact_scope(scope)
        if open_at is None:
            q.where.append("superseded_by IS NULL")
        else:  # and the superseded versions still valid after open_at
            q.where.append(f"(superseded_by IS NULL OR valid_to > {q.arg(open_at, 'float8')})")
        if key is not None:
            q.where.append(f"key = {q.arg(key, 'text')}")
        if digest is not None:
            q.where.append(f"digest = {q.arg(digest, 'text')}")
        sql = f"SELECT {ITEM_COLUMNS} FROM {self._sql.items} WHERE {q.clause} ORDER BY id"
        rows = await self._run("finding items", lambda conn: conn.fetch(sql, *q.args))
        return [item_from_row(row) for row in rows]

    async def delete(self, ids: Sequence[str], *, tenant: str) -> int:
        _check_ids(ids)
        unique = sorted(set(ids))
        if not unique:
            return 0

        async def remove(conn: Connection) -> int:
            async with conn.transaction():
                rows = await conn.fetch(self._sql.delete, unique, tenant)
                await self._record_changes(conn, [r[0] for r in rows], [r[1] for r in rows])
            return len(rows)

        return await self._run("deleting items", remove)

    async def touch(self, ids: Sequence[str], *, tenant: str, at: float) -> None:
        _check_ids(ids)
        if ids:
            unique = sorted(set(ids))
            await self._run(
                "touching items", lambda conn: conn.execute(self._sql.touch, unique, tenant, at)
            )

    async def unembedded(self, limit: int) -> builtins.list[MemoryItem]:
        _check_limit(limit)
        rows = await self._run(
            "finding unembedded items", lambda conn: conn.fetch(self._sql.unembedded, limit)
        )
        return [item_from_row(row) for row in rows]

    async def changes(self, since: int, limit: int) -> tuple[int, builtins.list[Change]]:
        _check_limit(limit)
        self._signal.clear()  # a notification from now on wakes wait_for_changes
        rows = await self._run(
            "reading the change feed", lambda conn: conn.fetch(self._sql.changes, since, limit)
        )
        if not rows:
            return since, []
        return rows[-1][0], [Change(r[0], r[1], r[2], r[3]) for r in rows]

    async def _run(self, what: str, call: Callable[[Connection], Awaitable[T]]) -> T:
        pool = self._live_pool()
        return await self._retrier.run(what, lambda _: pool.run(call))


def _check_ids(ids: Sequence[str]) -> None:
    if isinstance(ids, str):
        raise TypeError("pass a sequence of ids; wrap a single id in a list")


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")

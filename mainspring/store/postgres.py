"""PostgreSQL store: journals on a server, shared by many worker processes.

``postgresql://user@host:port/db?schema=mainspring&retry_for=30&min_size=2&max_size=10``
(``_pg_url``). Every table lives in ``schema``, so stores, and tests, are
isolated by schema. On asyncpg, which beat psycopg 3 at the conditional append
on the same machine (one prepared statement, binary arrays), with a small pool
of our own (``_pg_pool``) that adds no round trip and no task per operation.

Tables (``_pg_schema``): ``meta`` (marker and schema version); ``runs`` (one
row per run, written in the same statement as its events); ``events``
(``PRIMARY KEY (run_id, seq)``, data as orjson text); ``snapshots`` (latest per
run).

Writes, by durability:

* ``sync``: one statement, one round trip (``_pg_sql``, run by ``_pg_writes``): a conditional
  ``UPDATE runs ... WHERE last_seq = expected`` and an ``INSERT`` of the events,
  in one implicit transaction. If the update matched nothing it is a conflict
  and nothing was written. A step of a running run (no status change) takes a
  leaner statement that returns nothing but its command tag; the run's
  ``last_seq`` is read again only when it did not match, to name the conflict.
* ``batch``: queued for the group-commit writer (``_pg_batch``), one statement
  for all runs waiting at that moment, with per-run conflict isolation.
* ``off``: queued like ``batch`` but not awaited; a failure surfaces on the
  run's next append or on :meth:`flush`.

Within one store, reads wait for that run's queued writes (read your writes).

Failures (``_pg_retry``): a dropped connection or a restarting server is
retried with backoff and jitter for ``retry_for`` seconds, then
:class:`StoreUnavailableError`; a call unanswered for ``call_timeout`` seconds
has its connection closed by the pool's watchdog (``_pg_pool``) and is retried
the same way. Retries are for a server that worked before: :meth:`open` fails at
once if nothing listens at the URL's host and port (after ``call_timeout`` if
nothing answers there). Each append is atomic, so a step is never half
written. If the reply to a commit was lost, the retry meets a conflict; if the
stored events at ``expected_seq + 1 ..`` are ours (same kind, ts and data) the
write was ours, and it succeeds.

Leases use the server's clock (``clock_timestamp()``): one clock for every
worker host, whatever their drift. ``claim`` also takes over at once a lease
held by a dead process on this host. ``fence`` grows by one whenever the owner
changes.

The run queue (``_pg_queue``; ``docs/workers.md``): a queued run is a running run of a
queue with no owner; workers claim free or expired ones with ``FOR UPDATE SKIP LOCKED``
(bumping ``fence``), wake on ``LISTEN`` (``_pg_listener``): run creation and hand-backs
send ``NOTIFY mainspring_queue``, every status change ``NOTIFY mainspring_runs`` from
inside the write statement (delivered at commit). ``queues``, ``workers`` and
``schedules`` hold the limits, the live workers and the cron schedules.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import anyio
import asyncpg
import orjson

from ..errors import RunNotFoundError, StoreError
from ..events import Event, EventKind, decode_data, encode
from ._blobs import any_split, check_blobs, is_split, join_checked, refs, refs_of
from ._chain import AuditSettings
from ._lease_owners import owner_is_dead
from ._pg_audit import Heads, PostgresAudited
from ._pg_batch import GroupCommit, Write
from ._pg_pool import Connection, ConnectionPool, connect, open_watched
from ._pg_queue import PgQueues
from ._pg_retry import Retrier, log
from ._pg_schedules import PgSchedules
from ._pg_schema import migrate
from ._pg_sql import event_columns, statements
from ._pg_url import option, parse_url
from ._pg_writes import Writes
from ._sql_core import list_runs_sql, page_orphans, thread_from_row
from .protocols import StoreCapabilities
from .records import (
    CommitObserver,
    CreateResult,
    Durability,
    RunQuery,
    RunRecord,
    RunStatus,
    Snapshot,
    ThreadInfo,
)

Record = asyncpg.Record

_BIGINT_MAX = 2**63 - 1
_KINDS = {kind.value: kind for kind in EventKind}
_ALL_RUNS = RunQuery()
_CALL_TIMEOUT = 10.0  # the default; a third of retry_for if that is shorter
_HOST_PREFIX = (
    socket.gethostname().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"
)


class PostgresStore(PostgresAudited):
    """A :class:`~mainspring.store.Store` on PostgreSQL (asyncpg, asyncio backend).

    Options come from the arguments, else from the URL's query, else the
    defaults: ``schema='mainspring'``, ``min_size=2``, ``max_size=10``,
    ``batch_window=0.002`` seconds, and two that work together:

    * ``retry_for=30.0`` seconds: how long an operation keeps retrying through lost
      connections and server restarts before :class:`StoreUnavailableError` (the
      attempt then in flight may add up to two ``call_timeout``, connect and call);
      ``0`` never retries.
    * ``call_timeout``: how long a call may go unanswered (a silently dead connection,
      a stalled server) before its connection is closed and the call retried; also the
      limit on opening a connection. It must be below ``retry_for``, or a stalled call
      would use up the whole retry time and never be retried: the store refuses
      such a pair. Default 10 s, or a third of ``retry_for`` if that is shorter. The
      server also ends a session of the store that sits that long inside a transaction
      (``idle_in_transaction_session_timeout``; a URL parameter of that name overrides
      it): a host that died mid-transaction holds no lock for longer.
    """

    capabilities = StoreCapabilities(
        keeps_objects=False,
        appends_without_waiting=False,
        durable=True,
        shared_between_processes=True,
        defers_off_writes=True,
    )

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        retry_for: float | None = None,
        batch_window: float | None = None,
        call_timeout: float | None = None,
        audit: bool = True,
    ) -> None:
        self.url = url
        parsed = parse_url(url, schema)
        self._dsn, self.target, params = parsed.dsn, parsed.target, parsed.options
        self.max_size = option(params, "max_size", max_size, int, 10, positive=True)
        self.min_size = min(option(params, "min_size", min_size, int, 2), self.max_size)
        self.retry_for = option(params, "retry_for", retry_for, float, 30.0)
        self.batch_window = option(params, "batch_window", batch_window, float, 0.002)
        # A stalled call is retried only if it is cut off while retry_for still runs.
        timeout = min(_CALL_TIMEOUT, self.retry_for / 3) if self.retry_for else _CALL_TIMEOUT
        self.call_timeout = option(
            params, "call_timeout", call_timeout, float, timeout, positive=True
        )
        if 0 < self.retry_for <= self.call_timeout:
            raise StoreError(
                f"call_timeout={self.call_timeout:g} must be below retry_for={self.retry_for:g}, "
                "or a stalled call could never be retried; lower call_timeout or raise retry_for"
            )
        # jit off: these are all short statements, which JIT compilation only slows down.
        self._server_settings = {"jit": "off"}
        if "application_name" not in parsed.driver_params:
            self._server_settings["application_name"] = "mainspring"
        if "idle_in_transaction_session_timeout" not in parsed.driver_params:
            # A host that dies or is cut off inside one of our transactions leaves its
            # backend idle in it, holding its locks (a queue's row: every worker's claim
            # waits) until TCP gives up, many minutes later. None of our transactions waits
            # on its client that long: past call_timeout the client has given up anyway.
            idle_ms = max(1, round(self.call_timeout * 1000))
            self._server_settings["idle_in_transaction_session_timeout"] = str(idle_ms)
        self._sql = statements(self.target.schema)
        self.commit_observer: CommitObserver | None = None
        #: The audit chain (``store/_chain.py``, ``_pg_audit``): on unless ``audit=False``.
        self.audit = AuditSettings(enabled=audit)
        self._heads = Heads(self.audit)
        self._retrier = Retrier(self.target, self.retry_for)
        self._pool: ConnectionPool | None = None
        self._writer: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._writes = Writes(self._sql, self._retrier, self._live_pool, self, self.audit)
        #: The run queue (``_pg_queue``): claims, limits, workers.
        self.queues = PgQueues(self.target.schema, self._live_pool, self._retrier, self._connect)
        self.schedules = PgSchedules(self.queues)  # cron schedules, started by workers
        self._batch = GroupCommit(self._writes.write_groups, self.batch_window)

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check or migrate the schema, start the group-commit writer."""
        if self._pool is not None:
            return
        _require_asyncio()
        pool = ConnectionPool(self._connect, self.max_size, self.call_timeout)
        # The writer, like the watchdog (open_watched says why), is a task of the store's
        # own: started here, cancelled and awaited in aclose().
        self._watchdog = await open_watched(
            pool,
            f"mainspring postgres watchdog ({self.target.schema})",
            self._retrier,
            self.min_size or 1,
            "checking the schema",
            partial(migrate, target=self.target),
        )
        self._pool = pool
        self._batch = GroupCommit(self._writes.write_groups, self.batch_window)
        name = f"mainspring postgres writer ({self.target.schema})"
        self._writer = asyncio.get_running_loop().create_task(self._batch.run(), name=name)

    async def aclose(self) -> None:
        pool, writer, watchdog = self._pool, self._writer, self._watchdog
        if pool is None or writer is None or watchdog is None:
            return
        try:
            await self._batch.drain()
        finally:
            self._pool = self._writer = self._watchdog = None
            writer.cancel()
            watchdog.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait({writer, watchdog})
                await pool.close()
            if lost := self._batch.unreported_failures():
                log.warning("%d runs had 'off' appends that failed and were never reported", lost)
        if not writer.cancelled() and (crash := writer.exception()) is not None:
            raise StoreError(f"the PostgreSQL store's writer failed: {crash!r}") from crash

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _connect(self) -> Connection:
        return await connect(self._dsn, self.call_timeout, self._server_settings)

    async def connection(self) -> Connection:
        """A new connection of its own, outside the pool, for what must not hold a pooled
        one (LISTEN, the event fan-out's NOTIFY); the caller closes it."""
        return await self._connect()

    def _live_pool(self) -> ConnectionPool:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open; call 'await store.open()' first")
        return self._pool

    # -- writes ------------------------------------------------------------------------------

    async def create_run(
        self, record: RunRecord, events: Sequence[Event], durability: Durability
    ) -> CreateResult:
        """Always committed before it returns, whatever ``durability``: the caller must
        learn whether the run is new."""
        pool = self._live_pool()
        columns = event_columns(record.run_id, 0, events)
        hashes, head = await self._heads.chain(
            pool, self._sql, record.run_id, 0, *columns[:3], str(record.status)
        )
        try:
            stored = await self._writes.create(record, events, columns, hashes, head)
        except BaseException:
            self._heads.forget(record.run_id)
            raise
        if stored is None:
            self._heads.forget(record.run_id)  # not ours: its head is not the one computed
        if stored is not None:
            return CreateResult(stored, created=True)
        existing = await self.get_run(record.run_id)
        if existing is None:  # only if someone deleted it in between
            raise StoreError(
                f"run {record.run_id!r} vanished while it was being created; try again"
            )
        return CreateResult(existing, created=False)

    async def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[Event],
        *,
        status: RunStatus | None = None,
        error: str | None = None,
        durability: Durability = Durability.SYNC,
        fence: int | None = None,
    ) -> None:
        pool = self._live_pool()
        self._raise_failure(run_id)
        kinds, ts, data, blobs = event_columns(run_id, expected_seq, events)
        status_text = str(status) if status is not None else None
        if durability == Durability.SYNC:
            await self._batch.settle(run_id)  # queued writes of this run go first
            self._raise_failure(run_id)
        hashes, head = await self._heads.chain(
            pool, self._sql, run_id, expected_seq, kinds, ts, data, status_text
        )
        if durability == Durability.SYNC:
            try:
                await self._writes.append(
                    run_id, expected_seq, kinds, ts, data, status_text, error, fence, hashes,
                    head, blobs,
                )  # fmt: skip
            except BaseException:
                self._heads.forget(run_id)
                raise
            return
        confirm = durability != Durability.OFF
        write = Write(
            run_id, expected_seq, kinds, ts, data, hashes, head, status_text, error, fence, confirm,
            blobs,
        )  # fmt: skip
        self._batch.submit(write)
        if confirm:
            await write.done.wait()
            if write.exc is not None:
                self._heads.forget(run_id)
                raise write.exc

    def _raise_failure(self, run_id: str) -> None:
        exc = self._batch.pop_failure(run_id)
        if exc is not None:
            self._heads.forget(run_id)
            raise exc

    async def flush(self) -> None:
        self._live_pool()
        await self._batch.drain()
        exc = self._batch.pop_any_failure()
        if exc is not None:
            raise exc

    # -- reads -------------------------------------------------------------------------------

    async def read(self, run_id: str, *, after: int = 0, until: int | None = None) -> list[Event]:
        pool = self._live_pool()
        await self._batch.settle(run_id)
        hi = _BIGINT_MAX if until is None else until
        what = f"reading run {run_id!r}"
        rows = await self._fetch(what, pool, self._sql.read, run_id, after, hi)
        blobs: dict[str, bytes] = {}
        if any_split(rows):
            rows, blobs = await self._retrier.run(
                what, lambda _: pool.run(partial(self._read_joined, run_id, after, hi))
            )
        kinds = _KINDS
        return [
            Event(run_id, r[0], k, r[2], decode_data(k, _joined(run_id, r[0], r[3], blobs)))
            for r in rows
            if (k := kinds.get(r[1]) or EventKind(r[1]))
        ]

    async def _read_joined(
        self, run_id: str, after: int, hi: int, conn: Connection
    ) -> tuple[list[Record], dict[str, bytes]]:
        """Events and the blobs they reference from one snapshot: a run deleted meanwhile
        (with its blobs) reads as gone, not as a store that lost a blob."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(self._sql.read, run_id, after, hi)
            wanted = refs_of(r[3] for r in rows)
            found = await conn.fetch(self._sql.read_blobs, wanted) if wanted else []
        return rows, {r[0]: bytes(r[1]) for r in found}

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord | None:
        pool = self._live_pool()
        await self._batch.settle(run_id)
        what = f"reading run {run_id!r}"
        if tenant is None:
            rows = await self._fetch(what, pool, self._sql.get_run, run_id)
        else:
            rows = await self._fetch(what, pool, self._sql.get_tenant_run, run_id, tenant)
        return self._sql.dialect.record(rows[0]) if rows else None

    async def list_runs(self, query: RunQuery = _ALL_RUNS) -> list[RunRecord]:
        pool = self._live_pool()
        await self._batch.drain()
        dialect = self._sql.dialect
        sql, args = list_runs_sql(dialect, query)
        return [dialect.record(r) for r in await self._fetch("listing runs", pool, sql, *args)]

    async def list_threads(
        self, *, limit: int = 100, tenant: str | None = None
    ) -> list[ThreadInfo]:
        pool = self._live_pool()
        await self._batch.drain()
        if tenant is None:
            rows = await self._fetch("listing threads", pool, self._sql.list_threads, limit)
        else:
            sql = self._sql.list_tenant_threads
            rows = await self._fetch("listing threads", pool, sql, tenant, limit)
        return [thread_from_row(r) for r in rows]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        pool = self._live_pool()
        data = encode(snapshot.data, what=f"snapshot of run {snapshot.run_id!r}").decode()
        sql = self._sql.save_snapshot
        await self._fetch("saving a snapshot", pool, sql, snapshot.run_id, snapshot.seq, data)

    async def load_snapshot(self, run_id: str, *, at_most: int | None = None) -> Snapshot | None:
        pool = self._live_pool()
        hi = _BIGINT_MAX if at_most is None else at_most
        rows = await self._fetch("loading a snapshot", pool, self._sql.load_snapshot, run_id, hi)
        return Snapshot(run_id, rows[0][0], orjson.loads(rows[0][1])) if rows else None

    async def _fetch(self, what: str, pool: ConnectionPool, sql: str, *args: Any) -> list[Record]:
        """Run an idempotent statement with retries."""
        return await self._retrier.run(what, lambda _: pool.fetch(sql, *args))

    # -- leases ------------------------------------------------------------------------------

    async def claim(
        self, run_id: str, owner: str, ttl: float, *, fence: int | None = None
    ) -> int | None:
        pool = self._live_pool()
        what = f"claiming run {run_id!r}"
        dead_owner: str | None = None
        while True:  # at most twice: again only to take over a dead local owner
            args = (run_id, owner, float(ttl), dead_owner, fence)
            fence, exists, holder = (await self._fetch(what, pool, self._sql.claim, *args))[0]
            if fence is not None:
                return int(fence)
            if not exists:
                raise RunNotFoundError(run_id)
            if dead_owner is not None or holder is None or not owner_is_dead(holder):
                return None
            dead_owner = holder

    async def renew(self, owner: str, ttl: float) -> set[str]:
        pool = self._live_pool()
        rows = await self._fetch("renewing leases", pool, self._sql.renew, owner, float(ttl))
        return {r[0] for r in rows}

    async def release(self, run_id: str, owner: str) -> None:
        pool = self._live_pool()
        await self._fetch(f"releasing run {run_id!r}", pool, self._sql.release, run_id, owner)

    async def orphaned_runs(
        self, owner: str, *, limit: int = 1000, after: tuple[float, str] | None = None
    ) -> list[RunRecord]:
        pool = self._live_pool()
        sql = self._sql.orphaned

        async def page(low: tuple[float, str]) -> list[Record]:
            args = (owner, _HOST_PREFIX, *low, limit)
            return await self._fetch("finding orphaned runs", pool, sql, *args)

        def orphaned(r: Record) -> bool:
            # Runs of live processes on this host come back too: only a dead one's count.
            return bool(r["expired"] or r["owner"] is None or owner_is_dead(r["owner"]))

        return await page_orphans(self._sql.dialect, page, orphaned, limit, after)

    async def save_cursors(self, name: str, cursors: Mapping[str, int]) -> None:
        if not cursors:
            return
        pool = self._live_pool()
        runs, seqs = list(cursors), list(cursors.values())
        await self._fetch("saving cursors", pool, self._sql.save_cursors, name, runs, seqs)

    async def load_cursors(self, name: str, run_ids: Sequence[str]) -> dict[str, int]:
        pool = self._live_pool()
        sql = self._sql.load_cursors
        rows = await self._fetch("loading cursors", pool, sql, name, list(run_ids))
        return {r[0]: int(r[1]) for r in rows}

    # -- helpers -------------------------------------------------------------------------------------


def _joined(run_id: str, seq: int, data: str, blobs: Mapping[str, bytes]) -> str | bytes:
    """A stored event's data with the blobs it references put back (checked)."""
    if not is_split(data):
        return data
    where = f"event {seq} of run {run_id!r}"
    check_blobs(blobs, refs(data), where)
    return join_checked(data, blobs, where)


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise StoreError(
            "the PostgreSQL store runs on asyncio (asyncpg); use anyio's asyncio backend"
        ) from None

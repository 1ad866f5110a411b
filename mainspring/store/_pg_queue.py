"""The run queue of the PostgreSQL store: claims, limits, workers and schedules.

A queued run is a running run of a queue (``runs.queue``) that nobody owns. A worker
claims a batch of its queue's runs in one transaction: ``FOR UPDATE SKIP LOCKED`` over
the runs that are free or whose lease expired (a worker that died or froze), best
priority first, then oldest; the same statement takes the lease and bumps the fencing
token, so a frozen worker that wakes up is refused at its next append. First start and
takeover are one path. A takeover (the previous owner's lease had expired) counts a
death; a run that has killed ``max_attempts`` workers is handed back to be failed as
poisoned, not retried forever.

Limits (``queues``, every worker obeys them): concurrency (runs held at once) in all,
per tenant and per concurrency key, and a start rate (a token bucket in the queue's row).
A queue with limits claims under its row's lock, so two workers cannot both take the
last slot; a queue without limits claims with no lock beyond the rows' own.

Times are the server's (``clock_timestamp()``), one clock for every worker host.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import StoreError
from ._pg_listener import Handler, PgListener
from ._pg_pool import Connection, ConnectionPool
from ._pg_retry import Retrier
from ._pg_schema import quote_ident
from ._pg_sql import QUEUE_CHANNEL

NOW: Final = "extract(epoch FROM clock_timestamp())::float8"
CANCEL_CHANNEL: Final = "mainspring_cancel"  # payload '<schema>:<run_id>': stop it where it runs
DEFAULT_MAX_ATTEMPTS: Final = 3
_SCAN: Final = 4  # candidates looked at per run wanted, for the per-tenant and per-key limits
# ... and at least this many: a tenant or key at its limit with a long backlog must not hide
# the runs of others behind it (those past this many waiting wait for the window to move).
_SCAN_LIMITED: Final = 2000


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Limits every worker of queue ``name`` obeys (``None``: no limit).

    ``concurrency``: runs driven at once across all workers; ``per_tenant``: at once per
    tenant; ``per_key``: at once per concurrency key (``start(..., concurrency_key=...)``);
    ``rate``: starts per period, as ``"50/s"``, ``"600/m"`` or ``"1000/h"``;
    ``max_attempts``: workers that may die driving a run before it is failed as poisoned.
    """

    name: str
    concurrency: int | None = None
    per_tenant: int | None = None
    per_key: int | None = None
    rate: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        check_queue_name(self.name)
        for field, value in (
            ("concurrency", self.concurrency),
            ("per_tenant", self.per_tenant),
            ("per_key", self.per_key),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise StoreError(
                    f"QueueConfig({field}={value!r}): give a whole number >= 1 or None"
                )
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise StoreError(f"QueueConfig(max_attempts={self.max_attempts!r}): give a number >= 1")
        if self.rate is not None:
            parse_rate(self.rate)

    @property
    def limited(self) -> bool:
        return any(
            v is not None for v in (self.concurrency, self.per_tenant, self.per_key, self.rate)
        )


_PERIODS: Final = {
    **dict.fromkeys(("s", "sec", "second"), 1.0),
    **dict.fromkeys(("m", "min", "minute"), 60.0),
    **dict.fromkeys(("h", "hour"), 3600.0),
}


def parse_rate(rate: str) -> tuple[float, float]:
    """``"50/s"`` -> (50.0, 1.0): starts, and the period in seconds they are spread over."""
    count, _, unit = rate.strip().partition("/")
    try:
        n = float(count)
    except ValueError:
        n = -1.0
    unit = unit.strip().lower()
    period = _PERIODS.get(unit[:-1] if unit.endswith("s") and len(unit) > 2 else unit)
    if n <= 0 or not math.isfinite(n) or period is None:
        raise StoreError(
            f"rate {rate!r}: write starts per period, e.g. '50/s', '600/m' or '1000/h'"
        )
    return n, period


def check_queue_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 200 or ":" in name:
        raise StoreError(
            f"queue name {name!r}: give a non-empty string of at most 200 characters, without ':'"
        )
    return name


@dataclass(frozen=True, slots=True)
class Claimed:
    """A run a worker has just taken: drive it under ``fence`` (or fail it if poisoned)."""

    run_id: str
    fence: int
    queue: str
    deaths: int  # workers that lost it with their lease expired
    max_attempts: int
    took_over: bool  # from a worker whose lease had expired
    cancel_requested: str | None  # who asked (an actor, or "") to cancel it, if anyone did
    graph: str = ""
    durability: str = "sync"
    status: str = "running"

    @property
    def poisoned(self) -> bool:
        return self.deaths >= self.max_attempts


@dataclass(frozen=True, slots=True)
class QueueStats:
    name: str
    waiting: int  # ready to start now
    delayed: int  # waiting for their available_at
    running: int  # held by a live lease
    oldest_waiting: float | None  # seconds the oldest ready run has waited
    poisoned: int  # failed as poisoned in the last 24 hours
    config: QueueConfig | None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    owner: str
    host: str
    queues: list[str]
    slots: int
    busy: int
    state: str  # "running" or "draining"
    started_at: float
    seen_at: float
    runs: int  # runs whose lease it holds now
    lease_until: float | None  # the latest of its leases


class PgQueues:
    """The queue operations of one PostgreSQL store (``PostgresStore.queues``)."""

    def __init__(
        self,
        schema: str,
        pool: Callable[[], ConnectionPool],
        retrier: Retrier,
        connect: Callable[[], Awaitable[Connection]],
    ) -> None:
        self.schema = schema
        self._connect = connect
        self._s = s = quote_ident(schema)
        self._pool_of = pool  # () -> ConnectionPool: the store's live pool
        self._retrier = retrier
        self._claim_sql = _claim_sql(s)
        self._fast_sql = _fast_claim_sql(s)
        # Queues found to have a limits row: claimed under its lock. A queue configured
        # while this process claims it lock-free is noticed at its next claim.
        self._limited: set[str] = set()
        self._refill: dict[str, float] = {}  # queue -> when its bucket has a start again
        self._host = socket.gethostname()

    def _pool(self) -> ConnectionPool:
        return self._pool_of()

    def listener(self, handlers: Mapping[str, Handler], on_lost: Callable[[], None]) -> PgListener:
        """A LISTEN connection of its own for ``handlers`` (channel -> handler of payloads);
        the caller opens it with ``await listener.ensure()`` and closes it."""
        return PgListener(self._connect, handlers, on_lost)

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[Any]:
        pool = self._pool()
        return await self._retrier.run(what, lambda _: pool.fetch(sql, *args))

    # -- claiming ------------------------------------------------------------------------

    async def claim(self, queue: str, owner: str, ttl: float, limit: int) -> list[Claimed]:
        """Up to ``limit`` runs of ``queue`` for ``owner``, their leases taken for ``ttl`` s.

        Retried like any statement: the runs a claim whose reply was lost took are driven
        by nothing here, and the runtime's heartbeat hands them back (``engine/leases.py``).
        """
        if limit <= 0:
            return []
        pool = self._pool()
        what = f"claiming runs of queue {queue!r}"
        if queue not in self._limited:
            # One statement, no transaction: it claims nothing (and says so) if the queue
            # has limits, which then go through the locked path from now on.
            args = (queue, owner, float(ttl), limit)
            rows = await self._retrier.run(what, lambda _: pool.fetch(self._fast_sql, *args))
            if not rows or rows[0][0] is not None:
                return _claimed(rows, queue, DEFAULT_MAX_ATTEMPTS)
            self._limited.add(queue)
        return await self._retrier.run(
            what,
            lambda _: pool.run(lambda conn: self._claim(conn, queue, owner, float(ttl), limit)),
        )

    async def _claim(
        self, conn: Connection, queue: str, owner: str, ttl: float, limit: int
    ) -> list[Claimed]:
        s = self._s
        async with conn.transaction():
            row = await conn.fetchrow(
                f"SELECT concurrency, per_tenant, per_key, rate, rate_period, max_attempts,"
                f" tokens, refilled_at, {NOW} AS now FROM {s}.queues WHERE name = $1 FOR UPDATE",
                queue,
            )
            concurrency = per_tenant = per_key = None
            max_attempts = DEFAULT_MAX_ATTEMPTS
            tokens: float | None = None
            if row is not None:
                concurrency, per_tenant, per_key = row[0], row[1], row[2]
                max_attempts = row[5]
                if row[3] is not None:  # the start rate: a token bucket, refilled by time
                    rate, period, now = float(row[3]), float(row[4]), float(row[8])
                    last = row[7] if row[7] is not None else now
                    have = row[6] if row[6] is not None else rate
                    tokens = min(rate, have + (now - last) * rate / period)
                    limit = min(limit, int(tokens))
            rows = []
            if limit > 0:
                rows = await conn.fetch(
                    self._claim_sql, queue, owner, ttl, limit, per_tenant, per_key,
                    concurrency, max(limit * _SCAN, _SCAN_LIMITED),
                )  # fmt: skip
            if tokens is not None:
                left = tokens - len(rows)
                await conn.execute(
                    f"UPDATE {s}.queues SET tokens = $2, refilled_at = {NOW} WHERE name = $1",
                    queue,
                    left,
                )
                # Nothing announces a refill: the worker wakes by itself when the next
                # token is due (see refill_wait).
                self._refill[queue] = (
                    time.monotonic() + (1 - left) * float(row[4]) / float(row[3])
                    if row is not None and left < 1
                    else 0.0
                )
        return _claimed(rows, queue, max_attempts)

    def limited(self, queues: Sequence[str]) -> bool:
        """Whether one of ``queues`` was found to have limits (claimed under its lock)."""
        return any(q in self._limited for q in queues)

    def refill_wait(self, queues: Sequence[str]) -> float | None:
        """Seconds until a rate-limited queue of ``queues`` that ran out of starts has
        one again (None: none ran out)."""
        now = time.monotonic()
        due = [self._refill[q] for q in queues if self._refill.get(q, 0.0) > now]
        return min(due) - now if due else None

    async def next_wake(self, queues: Sequence[str], owner: str) -> float | None:
        """Seconds until a run of ``queues`` may become claimable without a notification:
        a delayed run's time comes, or another worker's lease runs out (None: neither).
        0 for one already due (a lease that ran out as the last claim looked, or a run a
        limit holds back): the worker backs off on those rather than spinning."""
        rows = await self._fetch(
            "looking at the queue",
            f"""SELECT min(t) - {NOW} FROM (
  SELECT CASE WHEN owner IS NULL THEN available_at ELSE lease_until END AS t
  FROM {self._s}.runs WHERE status = 'running' AND queue = ANY($1::text[])
    AND owner IS DISTINCT FROM $2 AND (owner IS NOT NULL OR available_at IS NOT NULL)
) AS times""",
            list(queues),
            owner,
        )
        value = rows[0][0] if rows else None
        return None if value is None else max(0.0, float(value))

    async def request_cancel(self, run_id: str, actor: str | None) -> str | None:
        """Ask whoever drives the run to cancel it; the owner it had (None: nobody)."""
        rows = await self._fetch(
            f"asking to cancel run {run_id!r}",
            f"""UPDATE {self._s}.runs SET cancel_requested = $2
WHERE run_id = $1 AND status = 'running'
RETURNING owner, pg_notify('{CANCEL_CHANNEL}', '{self.schema}:' || run_id)""",
            run_id,
            actor or "",
        )
        return rows[0][0] if rows else None

    async def cancel_requested(self, run_id: str) -> str | None:
        rows = await self._fetch(
            "reading a cancel request",
            f"SELECT cancel_requested FROM {self._s}.runs WHERE run_id = $1",
            run_id,
        )
        return rows[0][0] if rows else None

    async def defer(self, run_id: str, owner: str, seconds: float) -> None:
        """Give a run back for later (this worker cannot drive it: an unknown graph, a
        store error): no worker takes it for ``seconds``, then any may."""
        await self._fetch(
            f"deferring run {run_id!r}",
            f"""UPDATE {self._s}.runs SET owner = NULL, lease_until = NULL,
  available_at = {NOW} + $3::float8 WHERE run_id = $1 AND owner = $2""",
            run_id,
            owner,
            float(seconds),
        )

    async def notify(self, queue: str) -> None:
        await self._fetch(
            "waking the workers",
            "SELECT pg_notify($1, $2)",
            QUEUE_CHANNEL,
            f"{self.schema}:{queue}",
        )

    # -- configuration -----------------------------------------------------------------

    async def configure(self, config: QueueConfig) -> None:
        """Set queue ``config.name``'s limits (every worker obeys them at its next claim)."""
        rate = parse_rate(config.rate) if config.rate is not None else (None, None)
        await self._fetch(
            f"configuring queue {config.name!r}",
            f"""INSERT INTO {self._s}.queues
  (name, concurrency, per_tenant, per_key, rate, rate_period, max_attempts, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, {NOW})
ON CONFLICT (name) DO UPDATE SET concurrency = $2, per_tenant = $3, per_key = $4,
  rate = $5, rate_period = $6, max_attempts = $7, updated_at = {NOW},
  tokens = CASE WHEN {self._s}.queues.rate IS DISTINCT FROM $5 THEN NULL
                ELSE {self._s}.queues.tokens END""",
            config.name, config.concurrency, config.per_tenant, config.per_key, *rate,
            config.max_attempts,
        )  # fmt: skip

    async def configs(self) -> dict[str, QueueConfig]:
        rows = await self._fetch(
            "reading queue limits",
            f"SELECT name, concurrency, per_tenant, per_key, rate, rate_period, max_attempts"
            f" FROM {self._s}.queues ORDER BY name",
        )
        return {r[0]: _config_of(r) for r in rows}

    # -- observing ---------------------------------------------------------------------

    async def stats(self) -> list[QueueStats]:
        """Every queue with runs or limits: depth, oldest waiting, running, poisoned."""
        rows = await self._fetch(
            "reading the queues",
            f"""SELECT queue,
  count(*) FILTER (WHERE status = 'running' AND owner IS NULL
                   AND coalesce(available_at, 0) <= {NOW}) AS waiting,
  count(*) FILTER (WHERE status = 'running' AND owner IS NULL
                   AND available_at > {NOW}) AS delayed,
  count(*) FILTER (WHERE status = 'running' AND owner IS NOT NULL AND lease_until > {NOW}),
  {NOW} - min(created_at) FILTER (WHERE status = 'running' AND owner IS NULL
                   AND coalesce(available_at, 0) <= {NOW}),
  count(*) FILTER (WHERE status = 'failed' AND error LIKE 'poisoned:%')
FROM {self._s}.runs WHERE queue IS NOT NULL
  AND (status = 'running' OR (status = 'failed' AND updated_at > {NOW} - 86400))
GROUP BY queue""",
        )
        configs = await self.configs()
        found = {r[0]: r for r in rows}
        return [
            QueueStats(
                name,
                int(r[1]) if r else 0,
                int(r[2]) if r else 0,
                int(r[3]) if r else 0,
                float(r[4]) if r and r[4] is not None else None,
                int(r[5]) if r else 0,
                configs.get(name),
            )
            for name in sorted(set(found) | set(configs))
            for r in (found.get(name),)
        ]

    async def workers(self) -> list[WorkerInfo]:
        """Live workers (seen in the last minute), with the leases they hold."""
        rows = await self._fetch(
            "reading the workers",
            f"""SELECT w.owner, w.host, w.queues, w.slots, w.busy, w.state, w.started_at, w.seen_at,
  (SELECT count(*) FROM {self._s}.runs r WHERE r.owner = w.owner AND r.status = 'running'),
  (SELECT max(lease_until) FROM {self._s}.runs r WHERE r.owner = w.owner AND r.status = 'running')
FROM {self._s}.workers w WHERE w.seen_at > {NOW} - 60 ORDER BY w.started_at""",
        )
        return [
            WorkerInfo(
                owner=r[0],
                host=r[1],
                queues=list(r[2]),
                slots=r[3],
                busy=r[4],
                state=r[5],
                started_at=r[6],
                seen_at=r[7],
                runs=int(r[8]),
                lease_until=r[9],
            )
            for r in rows
        ]

    async def worker_beat(
        self, owner: str, queues: Sequence[str], slots: int, busy: int, state: str
    ) -> None:
        await self._fetch(
            "recording the worker",
            f"""INSERT INTO {self._s}.workers (owner, host, queues, slots, busy, state, started_at,
  seen_at) VALUES ($1, $2, $3, $4, $5, $6, {NOW}, {NOW})
ON CONFLICT (owner) DO UPDATE SET busy = $5, state = $6, seen_at = {NOW}, slots = $4""",
            owner, self._host, list(queues), slots, busy, state,
        )  # fmt: skip

    async def worker_gone(self, owner: str) -> None:
        await self._fetch(
            "removing the worker", f"DELETE FROM {self._s}.workers WHERE owner = $1", owner
        )


def _config_of(r: Any) -> QueueConfig:
    rate = None
    if r[4] is not None:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}.get(float(r[5]), "s")
        rate = f"{r[4]:g}/{unit}"
    return QueueConfig(r[0], r[1], r[2], r[3], rate, r[6])


def _claimed(rows: Sequence[Any], queue: str, max_attempts: int) -> list[Claimed]:
    return [
        Claimed(
            r[0],
            int(r[1]),
            queue,
            int(r[2]),
            max_attempts,
            r[3] is not None,
            r[4],
            graph=r[5],
            durability=r[6],
            status=r[7],
        )
        for r in rows
    ]


_SET_LEASE = """owner = $2, lease_until = {now} + $3::float8, fence = r.fence + 1,
  deaths = r.deaths + (f.was IS NOT NULL)::int"""
_CLAIMED = """r.run_id, r.fence, r.deaths, f.was, r.cancel_requested, r.graph, r.durability,
  r.status"""


def _fast_claim_sql(s: str) -> str:
    """The claim of a queue without a limits row: $1 queue, $2 owner, $3 ttl, $4 runs
    wanted. A queue with one gets a single row of NULLs: claim it under its lock."""
    return f"""
WITH limited AS (
  SELECT 1 FROM {s}.queues WHERE name = $1
), f AS (
  SELECT run_id, owner AS was FROM {s}.runs
  WHERE status = 'running' AND queue = $1 AND (owner IS NULL OR lease_until <= {NOW})
    AND (available_at IS NULL OR available_at <= {NOW}) AND NOT EXISTS (SELECT 1 FROM limited)
  ORDER BY priority DESC, created_at
  LIMIT $4
  FOR UPDATE SKIP LOCKED
), up AS (
  UPDATE {s}.runs r SET {_SET_LEASE.format(now=NOW)}
  FROM f WHERE r.run_id = f.run_id
  RETURNING {_CLAIMED}
)
SELECT * FROM up
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE EXISTS (SELECT 1 FROM limited)"""


def _claim_sql(s: str) -> str:
    """The claim of a queue with limits, run under its limits row's lock (so claims of the
    queue are serial, and only the runs taken are locked). $1 queue, $2 owner, $3 ttl,
    $4 runs wanted, $5 per tenant, $6 per key, $7 in all (NULL: no limit), $8 candidates
    to look at. A run fits if its key has room (counting the runs before it), then its
    tenant has room among the runs that fit by key."""
    live = f"status = 'running' AND queue = $1 AND owner IS NOT NULL AND lease_until > {NOW}"
    order = "ORDER BY c.priority DESC, c.created_at"
    return f"""
WITH held AS (
  SELECT tenant, concurrency_key FROM {s}.runs WHERE {live}
), cand AS (
  SELECT run_id, tenant, concurrency_key, priority, created_at, owner AS was FROM {s}.runs
  WHERE status = 'running' AND queue = $1 AND (owner IS NULL OR lease_until <= {NOW})
    AND (available_at IS NULL OR available_at <= {NOW})
  ORDER BY priority DESC, created_at
  LIMIT $8
), by_key AS (
  SELECT c.*, row_number() OVER (PARTITION BY c.concurrency_key {order}) AS kn FROM cand c
), key_fits AS (
  SELECT c.* FROM by_key c
  WHERE $6::int IS NULL OR c.concurrency_key IS NULL
     OR c.kn + (SELECT count(*) FROM held h WHERE h.concurrency_key = c.concurrency_key) <= $6
), by_tenant AS (
  SELECT c.*, row_number() OVER (PARTITION BY c.tenant {order}) AS tn FROM key_fits c
), fits AS (
  SELECT c.run_id, c.was FROM by_tenant c
  WHERE $5::int IS NULL OR c.tn + (SELECT count(*) FROM held h WHERE h.tenant = c.tenant) <= $5
  {order}
  LIMIT greatest(0, least($4::int, coalesce($7::int - (SELECT count(*) FROM held), $4::int)))
), locked AS (
  SELECT run_id FROM {s}.runs WHERE run_id IN (SELECT run_id FROM fits) FOR UPDATE SKIP LOCKED
)
UPDATE {s}.runs r SET {_SET_LEASE.format(now=NOW)}
FROM fits f
WHERE r.run_id = f.run_id AND r.run_id IN (SELECT run_id FROM locked)
  AND r.status = 'running' AND (r.owner IS NULL OR r.lease_until <= {NOW})
RETURNING {_CLAIMED}"""

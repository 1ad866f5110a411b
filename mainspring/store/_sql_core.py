"""What the SQLite and PostgreSQL stores share: the runs table's columns, row to record, and
the run queries (``list_runs``, ``list_threads``, the pages of ``orphaned_runs``).

Written once and parametrised by a :class:`Dialect` (placeholder style, how a list binds,
where the table lives). The statements are the ones each backend ran before (PostgreSQL's
``list_threads`` now takes SQLite's window form), so plans and indexes are unchanged; the
append paths, which differ in everything but intent, stay in each backend's SQL module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

import msgspec

from ..errors import (
    ConflictError,
    LeaseLostError,
    MainspringError,
    RunNotFoundError,
    StoreError,
)
from ..events import Event
from .records import Durability, QueuePlacement, RunQuery, RunRecord, RunStatus, ThreadInfo


class Row(Protocol):
    """A result row of either driver (a tuple, an asyncpg Record): read by position."""

    def __getitem__(self, index: int, /) -> Any: ...


R = TypeVar("R", bound=Row)

#: The columns of a run record, in RunRecord's order: ``Dialect.record`` reads them so.
RUN_FIELDS: Final = (
    "run_id", "graph", "thread", "status", "created_at", "updated_at", "last_seq",
    "parent_run_id", "durability", "owner", "lease_until", "fence", "error", "metadata",
)  # fmt: skip
#: A queued run's placement, after the run's columns where the backend has queues.
QUEUE_FIELDS: Final = "queue, priority, available_at, concurrency_key"
#: Where a page of orphaned runs starts when no previous page is given.
FIRST_PAGE: Final = (float("-inf"), "")


class Dialect(msgspec.Struct, frozen=True):
    """How one backend spells the shared statements."""

    runs: str  # the runs table, qualified by its schema where the backend has one
    numbered: bool  # placeholders $1, $2, ... (PostgreSQL) rather than ? (SQLite)
    arrays: bool  # a list binds as one array parameter rather than one per item
    metadata: str  # the metadata column as selected: text for the driver to hand back
    load_json: Callable[[Any], Any]  # metadata text to its dict
    queues: bool = False  # runs carry a queue placement (four columns after the metadata)

    @property
    def run_columns(self) -> str:
        columns = ", ".join(RUN_FIELDS[:-1]) + f", {self.metadata}"
        return columns + (f", {QUEUE_FIELDS}" if self.queues else "")

    def placeholder(self, n: int) -> str:
        """The ``n``-th parameter (from 1)."""
        return f"${n}" if self.numbered else "?"

    def record(self, row: Row) -> RunRecord:
        """A RunRecord from a row of ``run_columns`` (columns after them are ignored)."""
        return RunRecord(
            run_id=row[0],
            graph=row[1],
            thread=row[2],
            status=RunStatus(row[3]),
            created_at=row[4],
            updated_at=row[5],
            last_seq=row[6],
            parent_run_id=row[7],
            durability=Durability(row[8]),
            owner=row[9],
            lease_until=row[10],
            fence=row[11],
            error=row[12],
            metadata=self.load_json(row[13]),
            queue=(
                QueuePlacement(row[14], row[15], row[16], row[17])
                if self.queues and row[14] is not None
                else None
            ),
        )


def list_runs_sql(d: Dialect, query: RunQuery) -> tuple[str, list[Any]]:
    """``list_runs``: a statement with only the filters in use (each shape gets its own plan,
    and the index that ends in the sort order), and its parameters."""
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return d.placeholder(len(args))

    if query.status is not None:
        statuses = [str(s) for s in query.status]
        if d.arrays:
            where.append(f"status = ANY({arg(statuses)}::text[])")
        else:
            where.append(f"status IN ({', '.join(arg(s) for s in statuses)})")
    for column, value in (
        ("tenant", query.tenant),
        ("graph", query.graph),
        ("thread", query.thread),
        ("parent_run_id", query.parent_run_id),
    ):
        if value is not None:
            where.append(f"{column} = {arg(value)}")
    if query.created_after is not None:
        where.append(f"created_at > {arg(query.created_after)}")
    if query.created_before is not None:
        where.append(f"created_at < {arg(query.created_before)}")
    sql = f"SELECT {d.run_columns} FROM {d.runs}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at DESC, run_id DESC LIMIT {arg(query.limit)} OFFSET {arg(query.offset)}"
    return sql, args


def list_threads_sql(d: Dialect, *, scoped: bool) -> str:
    """``list_threads``; its parameters are (``scoped``) the tenant, then the limit. A thread
    is (tenant, thread id). The window form, not DISTINCT ON: SQLite has no DISTINCT ON, and
    PostgreSQL runs this as fast (100k runs, 5k threads)."""
    tenant = f" AND tenant = {d.placeholder(1)}" if scoped else ""
    return f"""
SELECT thread, runs, run_id, status, updated_at, tenant FROM (
  SELECT thread, run_id, status, updated_at, tenant,
         count(*) OVER (PARTITION BY tenant, thread) AS runs,
         row_number() OVER (PARTITION BY tenant, thread
                            ORDER BY created_at DESC, run_id DESC) AS newest
  FROM {d.runs} WHERE thread IS NOT NULL{tenant}
) AS latest
WHERE newest = 1
ORDER BY updated_at DESC, thread DESC, tenant DESC
LIMIT {d.placeholder(2 if scoped else 1)}"""


def thread_from_row(row: Row) -> ThreadInfo:
    return ThreadInfo(row[0], row[1], row[2], RunStatus(row[3]), row[4], row[5])


def orphan_page_sql(d: Dialect, lease_filter: str, params: int, extra: str = "") -> str:
    """One page of running runs that pass ``lease_filter`` (whose own parameters are the
    first ``params``), created after the page key that follows them, oldest first, at most
    the limit that comes last. ``extra`` adds columns after the run's.

    ``status = 'running'`` is a literal so that SQLite's partial index ``runs_orphans``
    applies; the row value comparison pages by (created_at, run_id), that index's order.
    """
    at, run_id, limit = (d.placeholder(params + i) for i in (1, 2, 3))
    return f"""
SELECT {d.run_columns}{extra} FROM {d.runs}
WHERE status = 'running' AND {lease_filter}
  AND (created_at, run_id) > ({at}, {run_id})
ORDER BY created_at, run_id
LIMIT {limit}"""


async def page_orphans(
    d: Dialect,
    fetch: Callable[[tuple[float, str]], Awaitable[Sequence[R]]],
    orphaned: Callable[[R], bool],
    limit: int,
    after: tuple[float, str] | None,
) -> list[RunRecord]:
    """Up to ``limit`` runs of the pages ``fetch`` returns (each at most ``limit`` rows,
    from a page key on) that are ``orphaned``: pages on while a page comes back full, for
    a backend that can only tell some orphans apart after the query (PostgreSQL: a dead
    local owner). One page, where the query itself keeps only orphans."""
    found: list[RunRecord] = []
    low = after or FIRST_PAGE
    while len(found) < limit:
        rows = await fetch(low)
        found += [d.record(r) for r in rows if orphaned(r)]
        if len(rows) < limit:
            break
        low = (rows[-1][4], rows[-1][0])  # (created_at, run_id) of the page's last run
    return found[:limit]


def misnumbered(run_id: str, expected_seq: int, event: Event, position: int) -> StoreError:
    """Events are stored by position: one whose own ``seq`` or ``run_id`` says otherwise
    would read back as a different event, so it is refused with this."""
    return StoreError(
        f"events appended to run {run_id!r} after sequence {expected_seq} must be numbered "
        f"{expected_seq + 1}, {expected_seq + 2}, ... and belong to that run; got "
        f"({event.run_id!r}, seq {event.seq}) in position {position}"
    )


def append_refusal(
    run_id: str,
    expected: int,
    actual: int | None,
    fence: int | None,
    actual_fence: int | None,
    owner: str | None,
) -> MainspringError | None:
    """Why an append matched no run row (``actual`` None: no such run); None if the run
    was at ``expected`` with the writer's fence (on PostgreSQL, a concurrent writer
    passed the statement's snapshot: try again)."""
    if actual is None:
        return RunNotFoundError(run_id)
    if fence is not None and actual_fence != fence:
        return LeaseLostError(run_id, fence, actual_fence, owner)
    if actual != expected:
        return ConflictError(run_id, expected, actual)
    return None

"""The SQL of the SQLite store: what each write does inside its transaction, and the reads.

Write functions run on the writer thread inside an open transaction (and a
savepoint when they share a group); read functions run on a read-only
connection in a worker thread. None of them commits.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..errors import ConflictError, LeaseLostError, RunNotFoundError, StoreError
from ..events import Event, EventKind, decode, decode_data, encode
from ._lease_owners import owner_is_dead
from ._lease_watch import LeaseWatch
from .records import Durability, RunQuery, RunRecord, RunStatus, Snapshot, ThreadInfo

Row = tuple[Any, ...]

RUN_COLUMNS: Final = (
    "run_id, graph, thread, status, created_at, updated_at, last_seq, parent_run_id, "
    "durability, owner, lease_until, fence, error, metadata"
)
INSERT_RUN: Final = (
    f"INSERT INTO runs ({RUN_COLUMNS}, lease_ttl) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING"
)
# Without a ttl of its own (a run written by release 0.1), a lease is judged by this one.
DEFAULT_LEASE_TTL: Final = 30.0
SELECT_RUN: Final = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"
INSERT_EVENT: Final = "INSERT INTO events (run_id, seq, kind, ts, data) VALUES (?, ?, ?, ?, ?)"
# The conditional append is one UPDATE guarded by last_seq and the writer's lease token
# (fence; NULL: unfenced); a separate statement with status/error keeps the hot path
# from rewriting the status indexes.
ADVANCE: Final = (
    "UPDATE runs SET last_seq = ?, updated_at = coalesce(?, updated_at) "
    "WHERE run_id = ? AND last_seq = ? AND fence = coalesce(?, fence)"
)
# A run that parks or ends is driven by nobody: its lease is freed in the same statement.
ADVANCE_STATUS: Final = (
    "UPDATE runs SET last_seq = ?, updated_at = coalesce(?, updated_at), "
    "status = coalesce(?, status), error = coalesce(?, error), "
    "owner = CASE WHEN ? THEN NULL ELSE owner END, "
    "lease_until = CASE WHEN ? THEN NULL ELSE lease_until END "
    "WHERE run_id = ? AND last_seq = ? AND fence = coalesce(?, fence)"
)

_KINDS: Final = {kind.value: kind for kind in EventKind}

# --- writes (writer thread, inside a transaction) ---


def apply_append(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> None:
    run_id, expected_seq, rows, status, error, last_ts, fence = args
    new_seq = expected_seq + len(rows)
    if status is None and error is None:
        cur.execute(ADVANCE, (new_seq, last_ts, run_id, expected_seq, fence))
    else:
        parked = status is not None and status != "running"
        cur.execute(
            ADVANCE_STATUS,
            (new_seq, last_ts, status, error, parked, parked, run_id, expected_seq, fence),
        )
    if cur.rowcount != 1:
        found = cur.execute(
            "SELECT last_seq, fence, owner FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if found is None:
            raise RunNotFoundError(run_id)
        if fence is not None and found[1] != fence:
            raise LeaseLostError(run_id, fence, found[1], found[2])
        raise ConflictError(run_id, expected_seq, found[0])
    if rows:
        cur.executemany(INSERT_EVENT, rows)


def apply_create(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> RunRecord | None:
    params, rows = args
    cur.execute(INSERT_RUN, params)
    if cur.rowcount != 1:
        return record_from_row(cur.execute(SELECT_RUN, (params[0],)).fetchone())
    if rows:
        cur.executemany(INSERT_EVENT, rows)
    return None


def apply_snapshot(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> None:
    cur.execute(
        "INSERT INTO snapshots (run_id, seq, data) VALUES (?, ?, ?) "
        "ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq, data = excluded.data",
        args,
    )


def apply_claim(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> int | None:
    run_id, owner, ttl, watch, known_fence = args
    found = cur.execute(
        "SELECT owner, lease_until, fence, lease_ttl FROM runs WHERE run_id = ?", (run_id,)
    ).fetchone()
    if found is None:
        raise RunNotFoundError(run_id)
    holder, lease_until, fence, lease_ttl = found
    # lease_until is the holder's own clock: written, compared only with itself (LeaseWatch).
    until = time.time() + ttl
    if holder == owner or (holder is None and fence == known_fence):
        cur.execute(
            "UPDATE runs SET owner = ?, lease_until = ?, lease_ttl = ? WHERE run_id = ?",
            (owner, until, ttl, run_id),
        )
        return int(fence)
    if holder is not None and not lease_expired(
        watch, run_id, holder, fence, lease_until, lease_ttl
    ):
        return None
    watch.forget(run_id)
    cur.execute(
        "UPDATE runs SET owner = ?, lease_until = ?, lease_ttl = ?, fence = ? WHERE run_id = ?",
        (owner, until, ttl, fence + 1, run_id),
    )
    return int(fence) + 1


def lease_expired(
    watch: LeaseWatch,
    run_id: str,
    holder: str,
    fence: int,
    lease_until: float | None,
    lease_ttl: float | None,
) -> bool:
    """Whether another owner's lease may be taken: its process is dead here, or it was not
    renewed for its ttl (by this process's monotonic clock)."""
    if lease_until is None or owner_is_dead(holder):
        return True
    return watch.expired(run_id, (holder, fence, lease_until), lease_ttl or DEFAULT_LEASE_TTL)


def apply_renew(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> None:
    owner, ttl = args
    cur.execute(
        "UPDATE runs SET lease_until = ?, lease_ttl = ? WHERE owner = ?",
        (time.time() + ttl, ttl, owner),
    )


def apply_release(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> None:
    cur.execute(
        "UPDATE runs SET owner = NULL, lease_until = NULL WHERE run_id = ? AND owner = ?", args
    )


def apply_cursors(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> None:
    name, cursors = args
    cur.executemany(
        "INSERT INTO cursors (name, run_id, seq) VALUES (?, ?, ?) "
        "ON CONFLICT (name, run_id) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > cursors.seq",
        [(name, run_id, seq) for run_id, seq in cursors],
    )


# Indexed by the request kinds of the writer: APPEND, CREATE, ...
APPEND, CREATE, SNAPSHOT, CLAIM, RENEW, RELEASE = range(6)
APPLY: Final[tuple[Callable[[sqlite3.Cursor, tuple[Any, ...]], Any], ...]] = (
    apply_append,
    apply_create,
    apply_snapshot,
    apply_claim,
    apply_renew,
    apply_release,
    apply_cursors,
)
CURSORS: Final = APPLY.index(apply_cursors)


# --- encoding (event loop, before a write is queued) ---


def run_params(record: RunRecord) -> Row:
    """The values of INSERT_RUN for ``record``."""
    return (
        record.run_id,
        record.graph,
        record.thread,
        str(record.status),
        record.created_at,
        record.updated_at,
        record.last_seq,
        record.parent_run_id,
        str(record.durability),
        record.owner,
        record.lease_until,
        record.fence,
        record.error,
        encode(record.metadata, what="run metadata").decode(),
        None if record.lease_until is None else record.lease_until - record.created_at,
    )


def event_rows(run_id: str, expected_seq: int, events: Sequence[Event]) -> list[Row]:
    """Encode events for insertion, checking they continue the run's numbering."""
    rows: list[Row] = []
    seq = expected_seq
    for event in events:
        seq += 1
        if event.seq != seq or event.run_id != run_id:
            raise StoreError(
                f"events appended to run {run_id!r} after sequence {expected_seq} must be numbered "
                f"{expected_seq + 1}, {expected_seq + 2}, ... and belong to that run; got "
                f"({event.run_id!r}, seq {event.seq}) in position {seq - expected_seq}"
            )
        rows.append((run_id, seq, str(event.kind), event.ts, encode(event.data, what="event data")))
    return rows


def record_from_row(row: Row) -> RunRecord:
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
        metadata=decode(row[13]),
    )


# --- reads (worker thread, read-only connection) ---


def select_events(
    run_id: str, after: int, until: int | None, conn: sqlite3.Connection
) -> list[Event]:
    sql = "SELECT seq, kind, ts, data FROM events WHERE run_id = ? AND seq > ?"
    params: tuple[Any, ...] = (run_id, after)
    if until is not None:
        sql += " AND seq <= ?"
        params = (run_id, after, until)
    kinds = _KINDS
    return [
        Event(run_id, seq, k, ts, decode_data(k, data))
        for seq, kind, ts, data in conn.execute(sql + " ORDER BY seq", params)
        if (k := kinds.get(kind) or EventKind(kind))
    ]


def select_run(run_id: str, conn: sqlite3.Connection) -> RunRecord | None:
    row = conn.execute(SELECT_RUN, (run_id,)).fetchone()
    return None if row is None else record_from_row(row)


def select_runs(query: RunQuery, conn: sqlite3.Connection) -> list[RunRecord]:
    where: list[str] = []
    params: list[Any] = []
    if query.status is not None:
        where.append(f"status IN ({', '.join('?' * len(query.status))})")
        params.extend(str(s) for s in query.status)
    for column, value in (
        ("graph", query.graph),
        ("thread", query.thread),
        ("parent_run_id", query.parent_run_id),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.created_after is not None:
        where.append("created_at > ?")
        params.append(query.created_after)
    if query.created_before is not None:
        where.append("created_at < ?")
        params.append(query.created_before)
    sql = f"SELECT {RUN_COLUMNS} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?"
    params += [query.limit, query.offset]
    return [record_from_row(row) for row in conn.execute(sql, params)]


def select_threads(limit: int, conn: sqlite3.Connection) -> list[ThreadInfo]:
    rows = conn.execute(
        """
        SELECT thread, runs, run_id, status, updated_at FROM (
            SELECT thread, run_id, status, updated_at,
                   count(*) OVER (PARTITION BY thread) AS runs,
                   row_number() OVER (
                       PARTITION BY thread ORDER BY created_at DESC, run_id DESC
                   ) AS newest
            FROM runs WHERE thread IS NOT NULL
        )
        WHERE newest = 1
        ORDER BY updated_at DESC, thread DESC
        LIMIT ?
        """,
        (limit,),
    )
    return [ThreadInfo(t, n, r, RunStatus(s), u) for t, n, r, s, u in rows]


def select_snapshot(run_id: str, at_most: int | None, conn: sqlite3.Connection) -> Snapshot | None:
    row = conn.execute("SELECT seq, data FROM snapshots WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or (at_most is not None and row[0] > at_most):
        return None
    return Snapshot(run_id, row[0], decode(row[1]))


def select_orphans(
    owner: str, after: tuple[float, str] | None, limit: int, conn: sqlite3.Connection
) -> list[RunRecord]:
    # `status = 'running'` is spelled as a literal so the partial index runs_orphans applies;
    # the row value comparison pages by (created_at, run_id), the order of that index.
    low = after or (float("-inf"), "")
    rows = conn.execute(
        f"""
        SELECT {RUN_COLUMNS} FROM runs
        WHERE status = 'running' AND (owner IS NULL OR owner != ?)
          AND (created_at, run_id) > (?, ?)
          AND (owner IS NULL
               OR mainspring_lease_expired(run_id, owner, fence, lease_until, lease_ttl))
        ORDER BY created_at, run_id
        LIMIT ?
        """,
        (owner, low[0], low[1], limit),
    )
    return [record_from_row(row) for row in rows]


def select_cursors(name: str, run_ids: Sequence[str], conn: sqlite3.Connection) -> dict[str, int]:
    found: dict[str, int] = {}
    # In chunks: SQLite caps the number of parameters of one statement.
    for i in range(0, len(run_ids), 500):
        chunk = run_ids[i : i + 500]
        rows = conn.execute(
            "SELECT run_id, seq FROM cursors WHERE name = ? "
            f"AND run_id IN ({', '.join('?' * len(chunk))})",
            (name, *chunk),
        )
        found.update(rows)
    return found

"""The SQL of the SQLite store: what each write does inside its transaction, and the reads.

Write functions run on the writer thread inside an open transaction (and a
savepoint when they share a group); read functions run on a read-only
connection in a worker thread. None of them commits.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final

from ..errors import ConflictError, RunNotFoundError
from ..events import Event, EventKind, decode, decode_data, encode
from ._blobs import SPLIT_MIN, Blobs, any_split, split_large
from ._chain import CREATED
from ._lease_owners import owner_is_dead
from ._lease_watch import LeaseWatch
from ._sql_core import (
    Dialect,
    append_refusal,
    list_runs_sql,
    list_threads_sql,
    misnumbered,
    orphan_page_sql,
    thread_from_row,
)
from ._sqlite_audit import add_anchor, anchor_rest, apply_delete_runs, insert_events
from ._sqlite_blobs import NO_BLOBS, joined_rows, put_blobs, vacuum_blobs
from .records import RunQuery, RunRecord, Snapshot, ThreadInfo

Row = tuple[Any, ...]

DIALECT: Final = Dialect(
    runs="runs", numbered=False, arrays=False, metadata="metadata", load_json=decode
)
RUN_COLUMNS: Final = DIALECT.run_columns
INSERT_RUN: Final = (
    f"INSERT INTO runs ({RUN_COLUMNS}, lease_ttl, tenant) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING"
)
# Without a ttl of its own (a run written by release 0.1), a lease is judged by this one.
DEFAULT_LEASE_TTL: Final = 30.0
SELECT_RUN: Final = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"
SELECT_TENANT_RUN: Final = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ? AND tenant = ?"
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
# The run queries shared with PostgreSQL (_sql_core); orphans carry the lease check here.
SELECT_THREADS: Final = list_threads_sql(DIALECT, scoped=False)
SELECT_TENANT_THREADS: Final = list_threads_sql(DIALECT, scoped=True)
SELECT_ORPHANS: Final = orphan_page_sql(
    DIALECT,
    "(owner IS NULL OR owner != ?) AND (owner IS NULL"
    " OR mainspring_lease_expired(run_id, owner, fence, lease_until, lease_ttl))",
    params=1,
)

_KINDS: Final = {kind.value: kind for kind in EventKind}

# --- writes (writer thread, inside a transaction) ---


def apply_append(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> None:
    run_id, expected_seq, rows, status, error, last_ts, fence, audit, blobs = args
    new_seq = expected_seq + len(rows)
    before = None  # a resume's anchor needs the status it leaves (read only then: rare)
    if audit is not None and status == "running":
        found = cur.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        before = None if found is None else found[0]
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
        # One writer (this thread): a row at the expected seq and fence would have matched.
        refusal = append_refusal(run_id, expected_seq, found[0], fence, found[1], found[2])
        raise refusal or ConflictError(run_id, expected_seq, found[0])
    head = insert_events(cur, audit, expected_seq, rows) if rows else None
    if blobs:
        put_blobs(cur, run_id, blobs)
    anchor_rest(cur, audit, run_id, new_seq, head, status, before)


def apply_create(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> RunRecord | None:
    params, rows, audit, blobs = args
    cur.execute(INSERT_RUN, params)
    if cur.rowcount != 1:
        return DIALECT.record(cur.execute(SELECT_RUN, (params[0],)).fetchone())
    head = insert_events(cur, audit, 0, rows) if rows else None
    if blobs:
        put_blobs(cur, params[0], blobs)
    if audit is not None:  # the run exists: deleting it whole is noticed from now on
        add_anchor(cur, audit, params[0], len(rows), head, CREATED)
        anchor_rest(cur, audit, params[0], len(rows), head, params[3])
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


def apply_renew(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> set[str]:
    owner, ttl = args
    rows = cur.execute(
        "UPDATE runs SET lease_until = ?, lease_ttl = ? WHERE owner = ? RETURNING run_id",
        (time.time() + ttl, ttl, owner),
    ).fetchall()
    return {r[0] for r in rows}


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


def apply_vacuum_blobs(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> int:
    return vacuum_blobs(cur)


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
    apply_delete_runs,
    apply_vacuum_blobs,
)
CURSORS: Final = APPLY.index(apply_cursors)
DELETE_RUNS: Final = APPLY.index(apply_delete_runs)
VACUUM_BLOBS: Final = APPLY.index(apply_vacuum_blobs)


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
        record.tenant,
    )


def event_rows(run_id: str, expected_seq: int, events: Sequence[Event]) -> tuple[list[Row], Blobs]:
    """Encode events for insertion, checking they continue the run's numbering; large
    strings split off as blobs (``_blobs.py``), returned beside the rows."""
    rows: list[Row] = []
    blobs = NO_BLOBS
    seq = expected_seq
    for event in events:
        seq += 1
        if event.seq != seq or event.run_id != run_id:
            raise misnumbered(run_id, expected_seq, event, seq - expected_seq)
        data = encode(event.data, what="event data")
        if len(data) >= SPLIT_MIN:  # the hot path's only cost: most events are short
            data, found = split_large(data)
            blobs = {**blobs, **found} if found else blobs
        rows.append((run_id, seq, str(event.kind), event.ts, data))
    return rows, blobs


# --- reads (worker thread, read-only connection) ---


def prepare_reader(watch: LeaseWatch, conn: sqlite3.Connection) -> None:
    """Give a read connection the functions the read statements call."""
    conn.create_function("mainspring_owner_is_dead", 1, owner_is_dead)
    conn.create_function("mainspring_lease_expired", 5, partial(lease_expired, watch))


def select_events(
    run_id: str, after: int, until: int | None, conn: sqlite3.Connection
) -> list[Event]:
    sql = "SELECT seq, kind, ts, data FROM events WHERE run_id = ? AND seq > ?"
    params: tuple[Any, ...] = (run_id, after)
    if until is not None:
        sql += " AND seq <= ?"
        params = (run_id, after, until)
    sql += " ORDER BY seq"
    rows = conn.execute(sql, params).fetchall()
    if any_split(rows):
        # Events and their blobs from one snapshot: a run deleted meanwhile (with its
        # blobs) reads as gone, not as a store that lost a blob.
        conn.execute("BEGIN")
        try:
            rows = joined_rows(conn, run_id, conn.execute(sql, params).fetchall())
        finally:
            conn.execute("COMMIT")
    kinds = _KINDS
    return [
        Event(run_id, seq, k, ts, decode_data(k, data))
        for seq, kind, ts, data in rows
        if (k := kinds.get(kind) or EventKind(kind))
    ]


def select_run(run_id: str, tenant: str | None, conn: sqlite3.Connection) -> RunRecord | None:
    if tenant is None:
        row = conn.execute(SELECT_RUN, (run_id,)).fetchone()
    else:
        row = conn.execute(SELECT_TENANT_RUN, (run_id, tenant)).fetchone()
    return None if row is None else DIALECT.record(row)


def select_runs(query: RunQuery, conn: sqlite3.Connection) -> list[RunRecord]:
    sql, params = list_runs_sql(DIALECT, query)
    return [DIALECT.record(row) for row in conn.execute(sql, params)]


def select_threads(limit: int, tenant: str | None, conn: sqlite3.Connection) -> list[ThreadInfo]:
    if tenant is None:
        rows = conn.execute(SELECT_THREADS, (limit,))
    else:
        rows = conn.execute(SELECT_TENANT_THREADS, (tenant, limit))
    return [thread_from_row(row) for row in rows]


def select_snapshot(run_id: str, at_most: int | None, conn: sqlite3.Connection) -> Snapshot | None:
    row = conn.execute("SELECT seq, data FROM snapshots WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or (at_most is not None and row[0] > at_most):
        return None
    return Snapshot(run_id, row[0], decode(row[1]))


def select_orphan_page(
    owner: str, low: tuple[float, str], limit: int, conn: sqlite3.Connection
) -> list[Row]:
    """One page of orphans: the lease check (``lease_expired``, a function of this
    connection) is in the query, so every row of the page is one."""
    return conn.execute(SELECT_ORPHANS, (owner, *low, limit)).fetchall()


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

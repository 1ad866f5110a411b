"""The statements of the PostgreSQL store, bound to one schema, and their rows and arrays.

Each write is one statement, so one round trip and one implicit transaction:
data-modifying CTEs update the run row conditionally and insert the events
from arrays (``unnest``) only if that update matched. A statement that matched
nothing wrote nothing; its last column reports the run's ``last_seq`` as of the
statement's snapshot, which names the conflict without a second round trip.

Status changes send ``NOTIFY mainspring_runs`` from inside the same statement
(delivered at commit), so wake-ups cost no extra round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from ..events import Event, encode
from ._blobs import SPLIT_MIN, Blobs, split_large
from ._pg_batch import Group
from ._pg_schema import quote_ident
from ._sql_core import Dialect, list_threads_sql, misnumbered, orphan_page_sql

CHANNEL = "mainspring_runs"
QUEUE_CHANNEL = "mainspring_queue"  # payload '<schema>:<queue>': work waits in that queue

_NOW = "extract(epoch FROM clock_timestamp())::float8"  # leases use the server's clock


@dataclass(frozen=True, slots=True)
class Statements:
    create_run: str
    append: str  # events as arrays: any number
    append_few: tuple[str, ...]  # [n]: n events as scalar parameters ([0]: as append)
    advance: tuple[str, ...]  # [n]: n events of a running run, status unchanged ([0]: unused)
    append_many: str
    stored_events: str
    last_seq: str
    read: str
    get_run: str
    get_tenant_run: str
    list_threads: str
    list_tenant_threads: str
    save_snapshot: str
    load_snapshot: str
    claim: str
    renew: str
    release: str
    orphaned: str
    dialect: Dialect  # for statements built per call (list_runs)
    save_cursors: str
    load_cursors: str
    anchor: str  # one anchor: $1 run_id, $2 seq, $3 head, $4 reason, $5 at, $6 actor, $7 detail
    sign: str  # $1 pos, $2 signature
    head: str  # the hash of $1's event $2
    parked: str  # which of the runs $1 (text[]) are not running (a group commit's resumes)
    put_blobs: str  # $1 digests, $2 their bytes; $3, $4 the (run, digest) references
    read_blobs: str  # the blobs of the digests $1 (text[])


# Appends of up to this many events bind each event's fields as scalars: cheaper for
# the server than decoding arrays and unnest (~25 us of a ~300 us append here).
MAX_SCALAR_EVENTS = 4


def _anchor(
    s: str, run: str, seq: str, head: str, reason: str, at: str, actor: str, detail: str, cond: str
) -> str:
    """CTEs ``h`` and ``a`` that append one anchor when ``cond`` holds: the one row of
    ``anchor_head`` is updated (its row lock, held to commit, serialises anchor writers
    across processes; a waiter re-reads the row it waited for), its new hash computed
    from the current one by ``_chain.anchor_hash``'s formula, and the anchor inserted.
    ``a`` returns its (pos, hash)."""

    def field(x: str) -> str:  # length-prefixed UTF-8, as _chain packs it
        return f"int4send(octet_length(convert_to({x}, 'UTF8'))) || convert_to({x}, 'UTF8')"

    return f"""h AS (
  UPDATE {s}.anchor_head SET pos = pos + 1,
    hash = sha256(hash || int8send(pos + 1) || float8send({at}::float8) || int8send(({seq})::int8)
                  || {head}::bytea || {field(run + "::text")} || {field(reason + "::text")}
                  || {field(actor + "::text")} || {field(detail + "::text")})
  WHERE id = 1 AND {cond}
  RETURNING pos, hash
), a AS (
  INSERT INTO {s}.anchors (pos, run_id, seq, head, reason, at, actor, detail, hash)
  SELECT h.pos, {run}::text, ({seq})::int8, {head}::bytea, {reason}::text, {at}::float8,
         {actor}::text, {detail}::text, h.hash
  FROM h
  RETURNING pos, hash
)"""


def _append(s: str, notify: Callable[[str, str], str], n: int | None) -> str:
    """The single-run append: $1 run_id, $2 expected_seq, $3 status, $4 error, then the
    events: four arrays ($5-$7, $9: kinds, ts, data, hashes) if ``n`` is None, else ``n``
    (kind, ts, data, hash) quadruples; then the writer's fence (NULL: unfenced); then the
    run's head after the append, the time and the actor for its anchor (head NULL: the
    audit chain is off).

    Returns (matched, last_seq and fence before this statement, owner, NOTIFY, and the
    anchor's pos and hash); NOTIFY only if the status changes (callers may pass the
    current status on every append); an anchor only if it parks or ends the run, or resumes a parked one.
    """
    if n is None:
        count, last_ts = "cardinality($5::text[])", "($6::float8[])[cardinality($6::float8[])]"
        rows = (
            "unnest($5::text[], $6::float8[], $7::text[], $9::bytea[])"
            " WITH ORDINALITY AS v(k, t, d, h, i)"
        )
        fence, head, at, actor = "$8::int8", "$10", "$11", "$12"
    else:
        count, last_ts = str(n), f"${4 * n + 2}::float8"
        fence = f"${4 * n + 5}::int8"
        head, at, actor = (f"${4 * n + k}" for k in (6, 7, 8))
        values = ", ".join(
            f"({i + 1}::bigint, ${4 * i + 5}::text, ${4 * i + 6}::float8, ${4 * i + 7}::text,"
            f" ${4 * i + 8}::bytea)"
            for i in range(n)
        )
        rows = f"(VALUES {values}) AS v(i, k, t, d, h)"
    # Parks or ends the run, or sets a parked one running (the sub-select sees the row as
    # it was before this statement: every part of a WITH shares one snapshot).
    rest = (
        f"EXISTS (SELECT 1 FROM bump) AND $3::text IS NOT NULL AND {head}::bytea IS NOT NULL"
        f" AND ($3::text <> 'running' OR EXISTS (SELECT 1 FROM {s}.runs p WHERE p.run_id = $1"
        " AND p.status <> 'running'))"
    )
    reason = "CASE WHEN $3::text = 'running' THEN 'resumed' ELSE 'rest' END"
    anchor = _anchor(s, "$1", f"$2 + {count}", head, reason, at, actor, "''", rest)
    return f"""
WITH bump AS (
  UPDATE {s}.runs SET
    last_seq = $2 + {count},
    updated_at = coalesce({last_ts}, updated_at),
    status = coalesce($3::text, status),
    error = coalesce($4::text, error),
    -- a run that parks or ends is driven by nobody: free its lease in the same write
    owner = CASE WHEN $3::text IS NOT NULL AND $3::text <> 'running' THEN NULL ELSE owner END,
    lease_until = CASE WHEN $3::text IS NOT NULL AND $3::text <> 'running' THEN NULL ELSE lease_until END
  WHERE run_id = $1 AND last_seq = $2 AND fence = coalesce({fence}, fence)
  RETURNING 1
), ins AS (
  INSERT INTO {s}.events (run_id, seq, kind, ts, data, hash)
  SELECT $1, $2 + v.i, v.k, v.t, v.d, v.h FROM bump, {rows}
), {anchor}
SELECT b.ok, old.last_seq, old.fence, old.owner,
       CASE WHEN b.ok AND $3::text IS NOT NULL AND $3::text IS DISTINCT FROM old.status
            THEN {notify("$1", "$3::text")} END,
       (SELECT pos FROM a), (SELECT hash FROM a)
FROM (SELECT EXISTS (SELECT 1 FROM bump) AS ok) AS b
LEFT JOIN {s}.runs old ON old.run_id = $1"""


def _advance(s: str, n: int) -> str:
    """The step of a running run, the hot path: $1 run_id, $2 expected_seq, then ``n``
    (kind, ts, data, hash) quadruples, then the writer's fence (NULL: unfenced). No status, no
    NOTIFY and nothing returned: the command tag says how many events went in, ``n`` if
    the run was at ``expected_seq`` with that fence, else 0.

    A quarter cheaper for the server than :func:`_append`'s statement here (no second
    look at the run row, no NOTIFY expression, fewer columns rewritten).
    """
    values = ", ".join(
        f"({i + 1}::bigint, ${4 * i + 3}::text, ${4 * i + 4}::float8, ${4 * i + 5}::text,"
        f" ${4 * i + 6}::bytea)"
        for i in range(n)
    )
    return f"""
WITH bump AS (
  UPDATE {s}.runs SET last_seq = $2 + {n}, updated_at = ${4 * n}::float8
  WHERE run_id = $1 AND last_seq = $2 AND fence = coalesce(${4 * n + 3}::int8, fence)
  RETURNING 1
)
INSERT INTO {s}.events (run_id, seq, kind, ts, data, hash)
SELECT $1, $2 + v.i, v.k, v.t, v.d, v.h FROM bump, (VALUES {values}) AS v(i, k, t, d, h)"""


def statements(schema: str) -> Statements:
    s = quote_ident(schema)
    notify = partial(_notify, schema)
    dialect = Dialect(
        runs=f"{s}.runs",
        numbered=True,
        arrays=True,
        metadata="metadata::text",
        load_json=orjson.loads,
        queues=True,
    )
    return Statements(
        create_run=_create_run(s, notify, schema),
        append=_append(s, notify, None),
        append_few=tuple(_append(s, notify, n or None) for n in range(MAX_SCALAR_EVENTS + 1)),
        advance=("", *(_advance(s, n) for n in range(1, MAX_SCALAR_EVENTS + 1))),
        append_many=_append_many(s, notify),
        stored_events=_stored_events(s),
        read=f"""
SELECT seq, kind, ts, data FROM {s}.events
WHERE run_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq""",
        get_run=f"SELECT {dialect.run_columns} FROM {s}.runs WHERE run_id = $1",
        get_tenant_run=f"SELECT {dialect.run_columns} FROM {s}.runs WHERE run_id = $1 AND tenant = $2",
        last_seq=f"SELECT last_seq, fence, owner FROM {s}.runs WHERE run_id = $1",
        list_threads=list_threads_sql(dialect, scoped=False),
        list_tenant_threads=list_threads_sql(dialect, scoped=True),
        save_snapshot=f"""
INSERT INTO {s}.snapshots (run_id, seq, data) VALUES ($1, $2, $3)
ON CONFLICT (run_id) DO UPDATE SET seq = EXCLUDED.seq, data = EXCLUDED.data""",
        load_snapshot=f"SELECT seq, data FROM {s}.snapshots WHERE run_id = $1 AND seq <= $2",
        claim=_claim(s),
        renew=f"UPDATE {s}.runs SET lease_until = {_NOW} + $2 WHERE owner = $1 RETURNING run_id",
        release=f"""
UPDATE {s}.runs SET owner = NULL, lease_until = NULL WHERE run_id = $1 AND owner = $2
RETURNING {queue_notify(schema, "queue")}""",
        orphaned=_orphaned(dialect),
        dialect=dialect,
        # A cursor only moves forward: a late or repeated save never lowers it.
        save_cursors=f"""
INSERT INTO {s}.cursors (name, run_id, seq)
SELECT $1, c.run_id, c.seq FROM unnest($2::text[], $3::int8[]) AS c(run_id, seq)
ON CONFLICT (name, run_id) DO UPDATE SET seq = EXCLUDED.seq WHERE {s}.cursors.seq < EXCLUDED.seq""",
        load_cursors=f"SELECT run_id, seq FROM {s}.cursors WHERE name = $1 AND run_id = ANY($2::text[])",
        anchor="WITH "
        + _anchor(s, "$1", "$2", "$3", "$4", "$5", "$6", "$7", "true")
        + " SELECT pos, hash FROM a",
        sign=f"UPDATE {s}.anchors SET sig = $2 WHERE pos = $1",
        head=f"SELECT hash FROM {s}.events WHERE run_id = $1 AND seq = $2",
        parked=f"SELECT run_id FROM {s}.runs WHERE run_id = ANY($1::text[]) AND status <> 'running'",
        # The same digest is the same data: a blob already stored is left as it is.
        put_blobs=f"""
WITH b AS (
  INSERT INTO {s}.blobs (digest, data)
  SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT (digest) DO NOTHING
)
INSERT INTO {s}.blob_refs (run_id, digest)
SELECT * FROM unnest($3::text[], $4::text[]) ON CONFLICT (run_id, digest) DO NOTHING""",
        read_blobs=f"SELECT digest, data FROM {s}.blobs WHERE digest = ANY($1::text[])",
    )


def _notify(schema: str, run_id: str, status: str) -> str:
    """The NOTIFY of a status change, sent at commit: ``{"schema", "run_id", "status"}``."""
    payload = f"json_build_object('schema', '{schema}', 'run_id', {run_id}, 'status', {status})"
    return f"pg_notify('{CHANNEL}', {payload}::text)"


def queue_notify(schema: str, queue: str) -> str:
    """Wake the workers of ``queue`` (an expression; NULL: not a queued run) at commit."""
    return f"CASE WHEN {queue} IS NOT NULL THEN pg_notify('{QUEUE_CHANNEL}', '{schema}:' || {queue}) END"


def _create_run(s: str, notify: Callable[[str, str], str], schema: str) -> str:
    """$13-$15, $17: the first events' arrays (kinds, ts, data, hashes); $18-$20: the run's
    head, the time and the actor of its ``created`` anchor (head NULL: the chain is off);
    $21: the run's tenant; $22-$25: its queue, priority, delay (s) and concurrency key."""
    cond = "EXISTS (SELECT 1 FROM new) AND $18::bytea IS NOT NULL"
    seq = "cardinality($13::text[])"
    anchor = _anchor(s, "$1", seq, "$18", "'created'", "$19", "$20", "''", cond)
    return f"""
WITH new AS (
  INSERT INTO {s}.runs (run_id, graph, thread, status, created_at, updated_at, last_seq,
                        parent_run_id, durability, owner, lease_until, fence, error, metadata,
                        tenant, queue, priority, available_at, concurrency_key)
  VALUES ($1, $2, $3, $4, $5, coalesce(($14::float8[])[cardinality($14::float8[])], $6),
          cardinality($13::text[]), $7, $8, $9,
          -- the lease runs on the server's clock: the caller's says only how long it lasts
          {_NOW} + ($10::float8 - $5::float8), $11, $12, $16::jsonb, $21,
          $22::text, $23::int4, {_NOW} + $24::float8, $25::text)
  ON CONFLICT (run_id) DO NOTHING
  RETURNING {notify("$1", "$4")}, {queue_notify(schema, "$22::text")}
), ins AS (
  INSERT INTO {s}.events (run_id, seq, kind, ts, data, hash)
  SELECT $1, u.i, u.k, u.t, u.d, u.h
  FROM unnest($13::text[], $14::float8[], $15::text[], $17::bytea[])
    WITH ORDINALITY AS u(k, t, d, h, i)
  WHERE EXISTS (SELECT 1 FROM new)
), {anchor}
SELECT EXISTS (SELECT 1 FROM new), (SELECT pos FROM a), (SELECT hash FROM a)"""


def _append_many(s: str, notify: Callable[[str, str], str]) -> str:
    """The group commit: one row per run ($1-$6, $12) and one per event ($7-$11). Returns
    the runs that did not match (conflict, lost lease, or missing when last_seq is NULL)
    and those notified."""
    return f"""
WITH req AS (
  SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::float8[],
                       $12::int8[])
    AS q(run_id, expected, n, status, error, last_ts, fence)
), bump AS (
  UPDATE {s}.runs r SET
    last_seq = q.expected + q.n,
    updated_at = coalesce(q.last_ts, r.updated_at),
    status = coalesce(q.status, r.status),
    error = coalesce(q.error, r.error),
    owner = CASE WHEN q.status IS NOT NULL AND q.status <> 'running' THEN NULL ELSE r.owner END,
    lease_until = CASE WHEN q.status IS NOT NULL AND q.status <> 'running'
                       THEN NULL ELSE r.lease_until END
  FROM req q
  WHERE r.run_id = q.run_id AND r.last_seq = q.expected AND r.fence = coalesce(q.fence, r.fence)
  RETURNING r.run_id
), ins AS (
  INSERT INTO {s}.events (run_id, seq, kind, ts, data, hash)
  SELECT e.run_id, e.seq, e.kind, e.ts, e.data, e.hash
  FROM unnest($7::text[], $8::int8[], $9::text[], $10::float8[], $11::text[], $13::bytea[])
    AS e(run_id, seq, kind, ts, data, hash)
  WHERE e.run_id IN (SELECT run_id FROM bump)
)
SELECT q.run_id, old.last_seq, b.run_id IS NOT NULL AS ok,
       CASE WHEN b.run_id IS NOT NULL THEN {notify("q.run_id", "q.status")} END,
       old.fence, old.owner
FROM req q
LEFT JOIN {s}.runs old ON old.run_id = q.run_id
LEFT JOIN bump b ON b.run_id = q.run_id
WHERE b.run_id IS NULL OR (q.status IS NOT NULL AND q.status IS DISTINCT FROM old.status)"""


def _stored_events(s: str) -> str:
    """Events already stored in (lo, hi] per run: did a write whose reply was lost commit?"""
    return f"""
SELECT e.run_id, e.seq, e.kind, e.ts, e.data
FROM {s}.events e
JOIN unnest($1::text[], $2::int8[], $3::int8[]) AS q(run_id, lo, hi)
  ON e.run_id = q.run_id AND e.seq > q.lo AND e.seq <= q.hi
ORDER BY e.run_id, e.seq"""


def _claim(s: str) -> str:
    """$4 is an owner this process found dead: taken over like an expired lease. $5 is the
    token the claimant last held: a free run still at it is taken back keeping it."""
    return f"""
WITH up AS (
  UPDATE {s}.runs SET
    owner = $2,
    lease_until = {_NOW} + $3,
    fence = fence + (owner IS DISTINCT FROM $2
                     AND (owner IS NOT NULL OR fence IS DISTINCT FROM $5::int8))::int
  WHERE run_id = $1
    AND (owner IS NULL OR owner = $2 OR lease_until IS NULL OR lease_until <= {_NOW} OR owner = $4)
  RETURNING fence
)
SELECT (SELECT fence FROM up), r.run_id IS NOT NULL, r.owner
FROM (SELECT 1) AS one LEFT JOIN {s}.runs r ON r.run_id = $1"""


def _orphaned(d: Dialect) -> str:
    """A page of running runs another owner could take: no owner, an expired lease, or an
    owner on this host ($2: its prefix), whose process may be dead: the caller checks it."""
    return orphan_page_sql(
        d,
        # Queued runs are their queue's workers' to take over (store/_pg_queue.py).
        f"queue IS NULL AND owner IS DISTINCT FROM $1 AND (owner IS NULL OR lease_until IS NULL "
        f"OR lease_until <= {_NOW} OR owner LIKE $2)",
        params=2,
        extra=f", (lease_until IS NULL OR lease_until <= {_NOW}) AS expired",
    )


# -- rows and arrays ------------------------------------------------------------------------


NO_BLOBS: Blobs = {}  # shared: never written to


def event_columns(
    run_id: str, expected_seq: int, events: Sequence[Event]
) -> tuple[list[str], list[float], list[str], Blobs]:
    """The events as the three arrays the append statements take, and the blobs their
    large strings were split into (``_blobs.py``; written before the events).

    Events are stored by position, so one whose own ``seq`` or ``run_id`` says
    otherwise would read back as a different event: refused.
    """
    for position, event in enumerate(events, start=1):
        if event.seq != expected_seq + position or event.run_id != run_id:
            raise misnumbered(run_id, expected_seq, event, position)
    kinds = [str(e.kind) for e in events]
    ts = [float(e.ts) for e in events]
    blobs = NO_BLOBS
    data = []
    for e in events:
        raw = encode(e.data, what=f"data of event {e.seq} of run {run_id!r}")
        if len(raw) >= SPLIT_MIN:  # the hot path's only cost: most events are short
            raw, found = split_large(raw)
            blobs = {**blobs, **found} if found else blobs
        data.append(raw.decode())
    return kinds, ts, data, blobs


def blob_args(
    refs: Sequence[tuple[str, Mapping[str, bytes]]],
) -> tuple[list[str], list[bytes], list[str], list[str]]:
    """``put_blobs``'s arrays for the blobs of (run, blobs) pairs: each blob once."""
    unique: dict[str, bytes] = {}
    runs: list[str] = []
    digests: list[str] = []
    for run_id, blobs in refs:
        unique.update(blobs)
        runs += [run_id] * len(blobs)
        digests += blobs
    return list(unique), list(unique.values()), runs, digests


def batch_args(groups: list[Group]) -> tuple[list[Any], ...]:
    run_ids: list[str] = []
    seqs: list[int] = []
    kinds: list[str] = []
    ts: list[float] = []
    data: list[str] = []
    hashes: list[bytes | None] = []
    for g in groups:
        run_ids += [g.run_id] * len(g.kinds)
        seqs += range(g.expected + 1, g.last_seq + 1)
        kinds += g.kinds
        ts += g.ts
        data += g.data
        hashes += g.hashes
    return (
        [g.run_id for g in groups],
        [g.expected for g in groups],
        [len(g.kinds) for g in groups],
        [g.status for g in groups],
        [g.error for g in groups],
        [g.ts[-1] if g.ts else None for g in groups],
        run_ids, seqs, kinds, ts, data,
        [g.fence for g in groups],
        hashes,
    )  # fmt: skip

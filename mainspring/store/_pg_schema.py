"""The PostgreSQL store's tables, and the versioned migrations that create them.

Every table lives in one schema (``?schema=`` in the URL, default ``mainspring``).
``meta`` marks the schema as ours and records its version. Opening a store runs
the pending migrations in one transaction that holds a transaction-scoped
advisory lock keyed by the schema name, so many processes opening the same new
database at once are safe: one migrates, the others wait and find it done.

Refusals happen before any change and leave the schema untouched: a schema
with tables but no Mainspring marker (:class:`NotAStoreError`), and one whose
version is newer than this code (:class:`SchemaVersionError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import asyncpg

from ..errors import NotAStoreError, SchemaVersionError
from ._pg_url import Target

if TYPE_CHECKING:
    from ._pg_pool import Connection

APPLICATION: Final = "mainspring"
SCHEMA_VERSION: Final = 6
_LOCK_CLASS: Final = 0x4D53  # "MS": the first key of the two-key advisory lock


# One tuple of statements per version; version n is _MIGRATIONS[n - 1]. Never edit
# a released version: append a new one.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE SCHEMA IF NOT EXISTS {s}",
        "CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
        # Times are epoch seconds in float8 so that they round-trip exactly. Ids sort
        # by code point (COLLATE "C"), as in the other backends, whatever the
        # database's locale; "C" also compares faster and lets LIKE 'prefix%' use
        # an index.
        # fillfactor leaves room on each page so the per-step UPDATE of last_seq
        # and updated_at (neither indexed) stays a HOT update: no index writes.
        """CREATE TABLE {s}.runs (
            run_id        text COLLATE "C" PRIMARY KEY,
            graph         text COLLATE "C" NOT NULL,
            thread        text COLLATE "C",
            status        text COLLATE "C" NOT NULL,
            created_at    float8 NOT NULL,
            updated_at    float8 NOT NULL,
            last_seq      bigint NOT NULL DEFAULT 0,
            parent_run_id text COLLATE "C",
            durability    text COLLATE "C" NOT NULL DEFAULT 'sync',
            owner         text COLLATE "C",
            lease_until   float8,
            fence         bigint NOT NULL DEFAULT 0,
            error         text,
            metadata      jsonb NOT NULL DEFAULT '{{}}',
            available_at  float8,
            priority      integer NOT NULL DEFAULT 0
        ) WITH (fillfactor = 70)""",
        # data is orjson text: as fast to append as bytea and faster than jsonb
        # (no server-side parse), smaller than jsonb, readable in psql, and
        # castable (data::jsonb) for ad hoc queries. No foreign key to runs: the
        # append statement only inserts after it has updated the run row.
        """CREATE TABLE {s}.events (
            run_id text COLLATE "C" NOT NULL,
            seq    bigint NOT NULL,
            kind   text COLLATE "C" NOT NULL,
            ts     float8 NOT NULL,
            data   text NOT NULL,
            PRIMARY KEY (run_id, seq)
        )""",
        """CREATE TABLE {s}.snapshots (
            run_id text COLLATE "C" PRIMARY KEY,
            seq    bigint NOT NULL,
            data   text NOT NULL
        )""",
        "CREATE INDEX runs_created ON {s}.runs (created_at DESC, run_id DESC)",
        "CREATE INDEX runs_status ON {s}.runs (status, created_at)",
        "CREATE INDEX runs_thread ON {s}.runs (thread, created_at DESC) WHERE thread IS NOT NULL",
        "CREATE INDEX runs_graph ON {s}.runs (graph, created_at DESC)",
        "CREATE INDEX runs_parent ON {s}.runs (parent_run_id) WHERE parent_run_id IS NOT NULL",
        "CREATE INDEX runs_owner ON {s}.runs (owner) WHERE owner IS NOT NULL",
    ),
    (
        # How far a reader of the journal (e.g. a trace exporter) got in each run, so a
        # recovering process resumes its work where a killed one stopped.
        """CREATE TABLE {s}.cursors (
            name   text COLLATE "C" NOT NULL,
            run_id text COLLATE "C" NOT NULL,
            seq    bigint NOT NULL,
            PRIMARY KEY (name, run_id)
        )""",
    ),
    (
        # Every run belongs to a tenant (its metadata's "tenant"; '' is the default tenant),
        # a column so that every run query can be scoped by it through an index. Not
        # updated by appends, so their updates stay HOT.
        """ALTER TABLE {s}.runs ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT ''""",
        "UPDATE {s}.runs SET tenant = metadata->>'tenant'"
        " WHERE jsonb_typeof(metadata->'tenant') = 'string'",
        "CREATE INDEX runs_tenant ON {s}.runs (tenant, created_at DESC, run_id DESC)",
        "CREATE INDEX runs_tenant_thread ON {s}.runs (tenant, thread, created_at DESC)"
        " WHERE thread IS NOT NULL",
    ),
    (
        # The audit chain (store/_chain.py): each event's hash, linked to the one before it
        # in its run (NULL for events written before this version or with the chain off),
        # and the store's anchor chain over the runs' heads. anchor_head is the chain's
        # serialisation point: the statement that writes an anchor updates its one row
        # (a row lock held to commit), computing the new hash from the row's current one.
        "ALTER TABLE {s}.events ADD COLUMN hash bytea",
        """CREATE TABLE {s}.anchors (
            pos    bigint PRIMARY KEY,
            run_id text COLLATE "C" NOT NULL,
            seq    bigint NOT NULL,
            head   bytea NOT NULL,
            reason text COLLATE "C" NOT NULL,
            at     float8 NOT NULL,
            actor  text NOT NULL DEFAULT '',
            detail text NOT NULL DEFAULT '',
            hash   bytea NOT NULL,
            sig    bytea
        )""",
        """CREATE TABLE {s}.anchor_head (
            id   integer PRIMARY KEY CHECK (id = 1),
            pos  bigint NOT NULL,
            hash bytea NOT NULL
        )""",
        "INSERT INTO {s}.anchor_head VALUES (1, 0, decode(repeat('00', 32), 'hex'))",
    ),
    (
        # Large strings of event data, stored once by content hash (store/_blobs.py): the
        # events hold {"$blob": digest} in their place. blob_refs says which runs reference
        # which blobs, so deleting runs deletes the blobs no run references any more,
        # without scanning the journal. Written in the transaction of the append.
        """CREATE TABLE {s}.blobs (
            digest text COLLATE "C" PRIMARY KEY,
            data   bytea NOT NULL
        )""",
        """CREATE TABLE {s}.blob_refs (
            run_id text COLLATE "C" NOT NULL,
            digest text COLLATE "C" NOT NULL,
            PRIMARY KEY (run_id, digest)
        )""",
        "CREATE INDEX blob_refs_digest ON {s}.blob_refs (digest)",
    ),
    (
        # The run queue (store/_pg_queue.py): a queued run is a running run of a queue with
        # no owner; workers claim free or expired ones. deaths counts the workers that lost
        # it with its lease expired (a poisoned run is failed after max_attempts).
        'ALTER TABLE {s}.runs ADD COLUMN queue text COLLATE "C"',
        'ALTER TABLE {s}.runs ADD COLUMN concurrency_key text COLLATE "C"',
        "ALTER TABLE {s}.runs ADD COLUMN deaths integer NOT NULL DEFAULT 0",
        "ALTER TABLE {s}.runs ADD COLUMN cancel_requested text",
        "CREATE INDEX runs_queue ON {s}.runs (queue, priority DESC, created_at)"
        " WHERE status = 'running' AND queue IS NOT NULL",
        # Limits every worker of a queue obeys; the token bucket of its start rate.
        """CREATE TABLE {s}.queues (
            name         text COLLATE "C" PRIMARY KEY,
            concurrency  integer,
            per_tenant   integer,
            per_key      integer,
            rate         float8,
            rate_period  float8,
            max_attempts integer NOT NULL DEFAULT 3,
            tokens       float8,
            refilled_at  float8,
            updated_at   float8 NOT NULL
        )""",
        # Live workers, for `mainspring queue` and the operators: each beats with its leases.
        """CREATE TABLE {s}.workers (
            owner      text COLLATE "C" PRIMARY KEY,
            host       text NOT NULL,
            queues     text[] NOT NULL,
            slots      integer NOT NULL,
            busy       integer NOT NULL DEFAULT 0,
            state      text NOT NULL,
            started_at float8 NOT NULL,
            seen_at    float8 NOT NULL
        )""",
        # Cron schedules: a tick is started by the one worker whose conditional update of
        # next_at succeeds, under a run id made of the schedule and the tick.
        """CREATE TABLE {s}.schedules (
            name       text COLLATE "C" PRIMARY KEY,
            cron       text NOT NULL,
            graph      text COLLATE "C" NOT NULL,
            input      text NOT NULL,
            queue      text COLLATE "C" NOT NULL,
            metadata   jsonb NOT NULL DEFAULT '{{}}',
            next_at    float8 NOT NULL,
            last_run   text,
            created_at float8 NOT NULL
        )""",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_INSPECT = """
SELECT n.oid IS NOT NULL AS exists,
       (SELECT count(*) FROM pg_class c
         WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')) AS relations,
       EXISTS (SELECT 1 FROM pg_class c
                WHERE c.relnamespace = n.oid AND c.relname = 'meta' AND c.relkind = 'r') AS has_meta
FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = $1
"""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def migrate(conn: Connection, target: Target) -> None:
    """Bring the schema to SCHEMA_VERSION, or refuse it untouched."""
    schema = target.schema
    if await _version(conn, target) == SCHEMA_VERSION:
        return  # the common case: no lock, no write
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, schema)
        version = await _version(conn, target)  # again: another process may have migrated
        s = quote_ident(schema)
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                await conn.execute(statement.format(s=s))
        await conn.executemany(
            f"INSERT INTO {s}.meta (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
        )


async def _version(conn: Connection, target: Target) -> int:
    """The schema's version: 0 if absent or empty; refuses foreign and newer schemas."""
    schema = target.schema
    row = await conn.fetchrow(_INSPECT, schema)
    assert row is not None
    if not row["exists"] or (row["relations"] == 0):
        return 0
    if not row["has_meta"]:
        raise _not_ours(target, "it holds tables but no meta table")
    try:
        rows = await conn.fetch(f"SELECT key, value FROM {quote_ident(schema)}.meta")
        meta = {str(r[0]): str(r[1]) for r in rows}
    except asyncpg.PostgresError:
        raise _not_ours(target, "its meta table is not Mainspring's") from None
    if meta.get("application") != APPLICATION:
        raise _not_ours(target, "its meta table has no Mainspring marker")
    version_text = meta.get("schema_version", "")
    if not version_text.isdigit():
        raise _not_ours(target, f"its schema version {version_text!r} is not a number")
    version = int(version_text)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"PostgreSQL schema {schema!r} in {target} was written by a newer Mainspring "
            f"(schema version {version}; this one knows up to {SCHEMA_VERSION}); it was left "
            "untouched; upgrade Mainspring to open it"
        )
    return version


def _not_ours(target: Target, why: str) -> NotAStoreError:
    return NotAStoreError(
        f"PostgreSQL schema {target.schema!r} in {target} is not a Mainspring store ({why}); "
        "it was left untouched; choose another schema with ?schema=name in the store URL"
    )

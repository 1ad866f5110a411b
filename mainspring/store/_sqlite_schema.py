"""The SQLite store's schema: its tables, the versioned migrations that make them, and the
marks (``application_id``, ``user_version``) that say a file is a Mainspring store and which
version it is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from ..errors import NotAStoreError, SchemaVersionError

#: ``PRAGMA application_id`` of every Mainspring store: ASCII "MSPR".
APPLICATION_ID: Final = 0x4D535052

# One tuple of statements per schema version: MIGRATIONS[v] takes a file from
# user_version v to v + 1 in one transaction. Append new versions; never edit old ones.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            graph TEXT NOT NULL,
            thread TEXT,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_seq INTEGER NOT NULL DEFAULT 0,
            parent_run_id TEXT,
            durability TEXT NOT NULL,
            owner TEXT,
            lease_until REAL,
            fence INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            metadata TEXT NOT NULL DEFAULT '{}'
        )""",
        # list_runs filters, each ending in the (created_at, run_id) sort order
        # so that "newest first" needs no sort step.
        "CREATE INDEX runs_created ON runs (created_at, run_id)",
        "CREATE INDEX runs_status ON runs (status, created_at, run_id)",
        "CREATE INDEX runs_graph ON runs (graph, created_at, run_id)",
        "CREATE INDEX runs_thread ON runs (thread, created_at, run_id) WHERE thread IS NOT NULL",
        "CREATE INDEX runs_parent ON runs (parent_run_id, created_at, run_id)"
        " WHERE parent_run_id IS NOT NULL",
        # renew() touches every lease of one owner; orphaned_runs() scans running runs only.
        "CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL",
        "CREATE INDEX runs_orphans ON runs (created_at, run_id) WHERE status = 'running'",
        # A rowid table, not WITHOUT ROWID: an index b-tree keeps at most ~1 KB of a
        # row on a 4 KB page, so 1 KB events would spill into overflow pages and
        # take ~5x their payload; a rowid table keeps them inline (~1.4-1.7x).
        """CREATE TABLE events (
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            ts REAL NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (run_id, seq)
        )""",
        """CREATE TABLE snapshots (
            run_id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            data BLOB NOT NULL
        )""",
    ),
    (
        # Leases expire by what a claimant observes, not by comparing its wall clock with
        # the holder's: a lease is taken over once its holder has not renewed it (moved
        # lease_until or fence) for lease_ttl seconds of the claimant's monotonic clock.
        "ALTER TABLE runs ADD COLUMN lease_ttl REAL",
        # How far a reader of the journal (e.g. a trace exporter) got in each run, so a
        # recovering process resumes its work where a killed one stopped.
        """CREATE TABLE cursors (
            name TEXT NOT NULL,
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (name, run_id)
        ) WITHOUT ROWID""",
    ),
    (
        # Every run belongs to a tenant (its metadata's "tenant"; '' is the default tenant),
        # a column so that every run query can be scoped by it through an index.
        "ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
        "UPDATE runs SET tenant = json_extract(metadata, '$.tenant')"
        " WHERE json_valid(metadata) AND json_type(metadata, '$.tenant') = 'text'",
        "CREATE INDEX runs_tenant ON runs (tenant, created_at, run_id)",
        "CREATE INDEX runs_tenant_thread ON runs (tenant, thread, created_at, run_id)"
        " WHERE thread IS NOT NULL",
    ),
    (
        # The audit chain (store/_chain.py): each event's hash, linked to the one before
        # it in its run (NULL for events written before this version or with the chain
        # off), and the store's anchor chain over the runs' heads, so that a run deleted
        # whole is noticed. Written in the same transaction as the events they cover.
        "ALTER TABLE events ADD COLUMN hash BLOB",
        """CREATE TABLE anchors (
            pos INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            head BLOB NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL,
            actor TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '',
            hash BLOB NOT NULL,
            sig BLOB
        )""",
    ),
    (
        # Large strings of event data, stored once by content hash (store/_blobs.py): the
        # events hold {"$blob": digest} in their place. blob_refs says which runs reference
        # which blobs, so deleting runs (retention, erasure) deletes the blobs no run
        # references any more, without scanning the journal. Written in the transaction of
        # the events that reference them.
        """CREATE TABLE blobs (
            digest TEXT PRIMARY KEY,
            data BLOB NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE blob_refs (
            run_id TEXT NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY (run_id, digest)
        ) WITHOUT ROWID""",
        "CREATE INDEX blob_refs_digest ON blob_refs (digest)",
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


def check_identity(conn: sqlite3.Connection, path: Path) -> int:
    """Return the file's schema version, or raise if it is not ours or too new."""
    app_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path} was written by a newer Mainspring (schema version {version}; this "
                f"version knows up to {SCHEMA_VERSION}); upgrade mainspring to open it. "
                "The file was left untouched."
            )
        return version
    if app_id != 0:
        raise NotAStoreError(
            f"{path} is a SQLite database of another application (application_id "
            f"{app_id:#010x}), not a Mainspring store; it was left untouched: choose another path"
        )
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
    ]
    if tables or version != 0:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        what = f"other tables ({shown})" if tables else f"user_version {version}"
        raise NotAStoreError(
            f"{path} is a SQLite database with {what}, not a Mainspring store; "
            "it was left untouched: choose another path"
        )
    return 0


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION, one transaction per version.

    Identity is checked again inside each write transaction, so two processes
    opening a new file at once migrate it exactly once.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = check_identity(conn, path)
            if version >= SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                return
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            # PRAGMA takes no parameters; both values are integers we control.
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

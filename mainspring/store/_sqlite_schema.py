"""The SQLite store's file format: URL parsing, refusal checks, migrations, error translation.

Opening a file follows one rule: refuse, never modify. A file is inspected
through a read-only connection first; only a new file, an empty database or one
of ours at a schema version this code knows is ever opened for writing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from ..errors import NotAStoreError, SchemaVersionError, StoreError, TransientStoreError

#: ``PRAGMA application_id`` of every Mainspring store: ASCII "MSPR".
APPLICATION_ID: Final = 0x4D535052

_SQLITE_HEADER: Final = b"SQLite format 3\x00"

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
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


def parse_url(url: str) -> Path:
    """``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db`` -> the file's path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(
            f"bad SQLite store URL {url!r}; use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    rest = url[len(prefix) :]
    if "?" in rest or "#" in rest:
        raise StoreError(
            f"SQLite store URL {url!r} takes no options; remove the part after '?' or '#'"
        )
    if rest == ":memory:":
        raise StoreError("for a store in memory use memory://, not sqlite:///:memory:")
    return Path(rest)


def readonly_uri(path: Path, *, immutable: bool = False) -> str:
    return path.absolute().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


def inspect_file(path: Path) -> None:
    """Refuse ``path`` unless it is missing, empty, or a Mainspring store this code can open.

    Reads only: the file is opened as bytes and through a read-only connection.
    """
    parent = path.absolute().parent
    if not parent.is_dir():
        raise StoreError(
            f"cannot open SQLite store {path}: directory {parent} does not exist; "
            "create it first or choose another path"
        )
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot open SQLite store {path}: {exc.strerror}") from None
    if not path.is_file():
        raise NotAStoreError(f"{path} is not a regular file, so it is not a Mainspring store")
    if size == 0:
        return
    try:
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(
            f"cannot read {path} ({exc.strerror}); give this process read and write permission on it"
        ) from None
    if header != _SQLITE_HEADER:
        raise NotAStoreError(
            f"{path} is not a SQLite file, so it is not a Mainspring store; "
            "it was left untouched: choose another path"
        )
    # Without a -wal file everything is in the main file: reading it as immutable
    # keeps SQLite from creating -wal and -shm files beside a file we may refuse.
    immutable = not Path(f"{path}-wal").exists()
    try:
        conn = sqlite3.connect(
            readonly_uri(path, immutable=immutable), uri=True, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise translate(exc, path, "inspecting the file") from None
    try:
        check_identity(conn, path)
    except sqlite3.Error as exc:
        raise translate(exc, path, "inspecting the file") from None
    finally:
        conn.close()


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


# Primary result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_CONSTRAINT, _SQLITE_AUTH, _SQLITE_NOTADB = 19, 23, 26


def translate(
    exc: sqlite3.Error, path: Path, doing: str, *, busy_timeout: float = 0.0
) -> StoreError:
    """A StoreError for a driver error, saying what to fix.

    A full disk, an I/O error and a file locked by another process may pass: those are
    :class:`TransientStoreError`, which the runtime retries.
    """
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    where = f"{path} while {doing}"
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return TransientStoreError(
            f"{path} stayed locked by another connection for longer than the busy timeout "
            f"({busy_timeout:g} s) while {doing}; another process holds a long transaction on it. "
            "Retry, pass a larger busy_timeout, or stop the other process"
        )
    if code == _SQLITE_READONLY:
        return StoreError(
            f"cannot write {where}: the file is read-only ({exc}); give this process write "
            "permission on the file and its directory (SQLite creates -wal and -shm files beside it)"
        )
    if code in (_SQLITE_PERM, _SQLITE_AUTH):
        return StoreError(f"permission denied on {where} ({exc}); check the file's permissions")
    if code == _SQLITE_FULL:
        return TransientStoreError(
            f"the disk holding {path} is full while {doing}; free some space and retry"
        )
    if code == _SQLITE_IOERR:
        return TransientStoreError(
            f"I/O error on {where} ({exc}); check the disk and the filesystem"
        )
    if code == _SQLITE_CORRUPT:
        return StoreError(f"{path} is corrupt ({exc}); restore it from a backup")
    if code == _SQLITE_NOTADB:
        return NotAStoreError(f"{path} is not a SQLite database ({exc}); it was left untouched")
    if code == _SQLITE_CANTOPEN:
        return StoreError(
            f"cannot open {path} ({exc}); check that its directory exists and is writable"
        )
    if code == _SQLITE_CONSTRAINT:
        return StoreError(
            f"constraint violated in {where} ({exc}); this is a bug, please report it"
        )
    return StoreError(f"SQLite error on {where}: {exc}")

"""The SQLite store's file format: URL parsing, refusal checks, migrations, error translation.

Opening a file follows one rule: refuse, never modify. A file is inspected
through a read-only connection first; only a missing path, a healthy store of
ours at a schema version this code knows, or (when the user asks for creation)
an empty file is ever opened for writing. A missing store is built under a
temporary name and linked into place, so no process ever sees it half made.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Final, NamedTuple
from urllib.parse import parse_qsl

from ..errors import (
    CorruptStoreError,
    NotAStoreError,
    SchemaVersionError,
    StoreError,
    TransientStoreError,
)

#: ``PRAGMA application_id`` of every Mainspring store: ASCII "MSPR".
APPLICATION_ID: Final = 0x4D535052

_SQLITE_HEADER: Final = b"SQLite format 3\x00"

#: Up to this size (file and -wal together) the open-time check is a full ``PRAGMA
#: quick_check``: ~0.1 ms for a new user's store, 0.3-0.7 ms at the bound (warm cache,
#: here). Above it, quick_check grows by ~0.7 ms per MB (0.2-1.4 s at 200 MB), so open
#: checks what is cheap instead (see check_integrity).
FULL_CHECK_BYTES: Final = 1 << 20
#: The most the open-time check of a larger file may take; what it leaves unchecked is
#: checked when read (cell_size_check) and by ``mainspring doctor``.
CHECK_SECONDS: Final = 0.02

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


class SQLiteUrl(NamedTuple):
    path: Path
    create: bool  # make a new store even in an empty file (a missing one is always made)


def parse_url(url: str) -> SQLiteUrl:
    """``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``, optionally ``?create=true``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(
            f"bad SQLite store URL {url!r}; use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    rest, _, query = url[len(prefix) :].partition("?")
    if "#" in rest or "#" in query:
        raise StoreError(f"SQLite store URL {url!r} takes no fragment; remove the part after '#'")
    if rest == ":memory:":
        raise StoreError("for a store in memory use memory://, not sqlite:///:memory:")
    if not rest:
        raise StoreError(f"SQLite store URL {url!r} names no file; use sqlite:///path/to/file.db")
    create = False
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "create":
            raise StoreError(
                f"unknown option {key!r} in SQLite store URL {url!r}; the only option is "
                "create=true (make a new store in an empty file)"
            )
        if value not in ("true", "false"):
            raise StoreError(
                f"invalid create={value!r} in SQLite store URL {url!r}; use create=true or create=false"
            )
        create = value == "true"
    return SQLiteUrl(Path(rest), create)


def readonly_uri(path: Path, *, immutable: bool = False) -> str:
    return path.absolute().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


def _wal(path: Path) -> Path:
    return Path(f"{path}-wal")


def open_readonly(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection | None:
    """A read-only connection to the SQLite file at ``path``; None if it is missing or empty.

    Refuses first what needs no SQLite to refuse: a missing directory, something
    other than a regular file, a file that is not SQLite, and a -wal file beside a
    missing or empty one. Writes nothing, and creates no file beside ``path``.
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
        size = 0
    except OSError as exc:
        raise StoreError(f"cannot open SQLite store {path}: {exc.strerror}") from None
    if size == 0:
        wal = _wal(path)
        if wal.is_file() and wal.stat().st_size > 0:
            # SQLite would delete it, or replay it into whatever file is made here next.
            raise NotAStoreError(
                f"{wal} holds the write-ahead log of a SQLite file, but {path} is "
                f"{'empty' if path.exists() else 'missing'}; it was left untouched. Move it back "
                f"beside the store file it belongs to, or delete {wal.name} and "
                f"{path.name}-shm to start a new store here"
            )
        if path.exists() and not path.is_file():
            raise NotAStoreError(f"{path} is not a regular file, so it is not a Mainspring store")
        return None
    if not path.is_file():
        raise NotAStoreError(f"{path} is not a regular file, so it is not a Mainspring store")
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
    immutable = not _wal(path).exists()
    try:
        return sqlite3.connect(
            readonly_uri(path, immutable=immutable),
            uri=True,
            isolation_level=None,
            check_same_thread=check_same_thread,
        )
    except sqlite3.Error as exc:
        raise translate(exc, path, "inspecting the file") from None


def inspect_file(path: Path, *, create: bool = False) -> bool:
    """Refuse ``path`` unless it is missing, a healthy Mainspring store this code can open
    and write, or (with ``create``) empty; True if it is missing, so a store must be made.

    Reads only: the file is opened as bytes and through a read-only connection.
    """
    conn = open_readonly(path)
    if conn is None:
        if not path.exists():
            return True
        if not create:
            raise NotAStoreError(
                f"{path} is an empty file (0 bytes), not a Mainspring store; it was left "
                f"untouched. To make a new store in it, open sqlite:///{path}?create=true "
                "(or pass create=True); otherwise choose another path"
            )
    else:
        try:
            if check_identity(conn, path) == 0:
                if not create:
                    raise NotAStoreError(
                        f"{path} is a SQLite database with no tables, not a Mainspring store; "
                        f"it was left untouched. To make a new store in it, open "
                        f"sqlite:///{path}?create=true (or pass create=True)"
                    )
            else:
                check_integrity(conn, path, wal=_wal(path).exists())
        except sqlite3.Error as exc:
            if _code(exc) == _SQLITE_CORRUPT:
                raise corrupt_error(path, _file_problem(path) or str(exc)) from None
            raise translate(exc, path, "inspecting the file") from None
        except OSError as exc:  # the file changed under the check (moved, deleted)
            raise StoreError(f"cannot inspect {path}: {exc.strerror or exc}; retry") from None
        finally:
            conn.close()
    _check_writable(path)
    return False


def _check_writable(path: Path) -> None:
    """Refuse a file this process may only read: SQLite would open it read-only without a
    word, fail at the first write, and leave -wal and -shm files beside it."""
    if not os.access(path, os.W_OK):
        raise StoreError(
            f"{path} is read-only for this process; it was left untouched. Give this process "
            "write permission on it, or copy it somewhere writable to read it"
        )
    parent = path.absolute().parent
    if not _wal(path).exists() and not os.access(parent, os.W_OK):
        raise StoreError(
            f"directory {parent} is read-only for this process, and SQLite writes {path.name}-wal "
            f"and {path.name}-shm beside the store; {path} was left untouched. Give this process "
            "write permission on the directory"
        )


def create_file(path: Path) -> bool:
    """Make a new store at the missing ``path``; False if another process put a file there first.

    The store is built under a temporary name beside ``path`` and linked into place:
    no process ever sees it half made (it would refuse it as empty), and a crash
    leaves no empty file behind. Where hard links are not supported, ``path`` is
    left missing and the caller's connection makes the store in place.
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.creating")
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # Nobody sees the file before it is linked: one fsync then, not one a commit.
            conn.execute("PRAGMA synchronous = OFF")
            migrate(conn, temp)
        finally:
            conn.close()  # the only connection: folds the -wal into the file and deletes it
        with temp.open("rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        except OSError:
            return True
        _sync_directory(path.absolute().parent)  # the new name survives a power cut
        return True
    except sqlite3.Error as exc:
        raise translate(exc, path, "creating the store") from None
    finally:
        for leftover in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform opens directories
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def check_same_file(path: Path, opened: tuple[int, int] | None) -> None:
    """Refuse to read, through a new connection, a file other than the one being written.

    The writer keeps the file it opened; a new connection opens whatever the path
    names now, and would pair it with the writer's -wal, which garbles it.
    """
    try:
        now = file_id(path)
    except FileNotFoundError:
        raise StoreError(
            f"{path} was deleted or moved while the store was open; the store still writes to "
            "the file it opened. Close the store, put the file back, and reopen it"
        ) from None
    if now != opened:
        raise StoreError(
            f"{path} was replaced by another file while the store was open; the store still "
            "writes to the file it opened. Close the store and reopen it to use the new file"
        )


def corrupt_error(path: Path, problem: str) -> CorruptStoreError:
    problem = " ".join(problem.replace("*** in database main ***", "").split())
    return CorruptStoreError(
        f"{path} is corrupt ({problem}); it was left untouched. See every problem with "
        f"`mainspring doctor --store sqlite:///{path}`, then restore the store from a backup"
    )


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


def check_integrity(conn: sqlite3.Connection, path: Path, *, wal: bool) -> None:
    """Refuse a damaged store before anything writes to it, at a cost that stays small.

    Up to FULL_CHECK_BYTES, ``PRAGMA quick_check``: every page. Above, without a
    -wal, a walk of the header, the freelist and the interior pages of every b-tree
    (~0.3% of the pages: 0.5-0.8 ms at 10 MB, 8-10 ms at 200 MB here, against 6-9 ms
    and 0.2-1.4 s for quick_check): the pages every write goes through, and the freelist
    that hands out the next pages to write. With a -wal (another process has the
    store open, or crashed), the main file alone is not the database: quick_check
    runs, interrupted after CHECK_SECONDS.
    """
    size = path.stat().st_size + (_size(_wal(path)) if wal else 0)
    before = _stamp(path)
    if size <= FULL_CHECK_BYTES:
        problem = _quick_check(conn, None)
    elif wal:
        problem = _quick_check(conn, CHECK_SECONDS)
    else:
        roots = [("sqlite_schema", 1)]
        roots += conn.execute(
            "SELECT name, rootpage FROM sqlite_schema WHERE rootpage > 0 ORDER BY rootpage"
        ).fetchall()
        problem = _walk(path, roots, time.monotonic() + CHECK_SECONDS)
    # Read without locks (immutable): a file that changed meanwhile (another process
    # opened it and checkpointed) may have been read torn, so what was seen proves nothing.
    if problem is not None and (wal or _stamp(path) == before):
        raise corrupt_error(path, problem)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _stamp(path: Path) -> tuple[int, int, bool]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, _wal(path).exists()


def _quick_check(conn: sqlite3.Connection, seconds: float | None) -> str | None:
    # A timer, not a progress handler: before SQLite 3.43 the check of all b-trees is
    # one VM instruction, which a progress handler cannot stop.
    timer = None if seconds is None else threading.Timer(seconds, _interrupt, (conn,))
    if timer is not None:
        timer.start()
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.OperationalError as exc:
        if timer is not None and _code(exc) == _SQLITE_INTERRUPT:
            return None  # out of time: nothing found in what was checked
        raise
    finally:
        if timer is not None:
            timer.cancel()
    return None if rows == [("ok",)] else str(rows[0][0])


def _interrupt(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.ProgrammingError):  # closed as the timer fired
        conn.interrupt()


_U32: Final = struct.Struct(">I").unpack_from
_INTERIOR: Final = {5: "table", 2: "index"}  # b-tree page types
_LEAF: Final = {13: "table", 10: "index"}
_MAX_DEPTH: Final = 20  # SQLite's own limit (BTCURSOR_MAX_DEPTH)


def _layout(head: bytes, size: int) -> tuple[int, int, int] | str:
    """(page size, usable bytes a page, pages) from the file's header, or what is wrong with it."""
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    usable = page_size - head[20]
    if page_size < 512 or page_size & (page_size - 1) or usable < 480:
        return f"the header gives an invalid page size ({page_size}, {head[20]} bytes reserved)"
    pages = size // page_size
    declared = int.from_bytes(head[28:32], "big")
    if head[92:96] == head[24:28] and declared > pages:  # the header's page count is valid
        return (
            f"the file is cut short: its header counts {declared} pages of {page_size} bytes, "
            f"it holds {pages}"
        )
    return page_size, usable, pages


def _cells(page: bytes, pgno: int, usable: int) -> tuple[int, ...] | str:
    """The cell offsets of a b-tree page, or what is wrong with its header."""
    off = 100 if pgno == 1 else 0
    cells = int.from_bytes(page[off + 3 : off + 5], "big")
    content = int.from_bytes(page[off + 5 : off + 7], "big") or 65536
    first = off + (12 if page[off] in _INTERIOR else 8)
    if first + 2 * cells > content or content > usable:
        return f"page {pgno} has a malformed header"
    pointers = struct.unpack_from(f">{cells}H", page, first)
    if pointers and (min(pointers) < content or max(pointers) > usable - 4):
        return f"page {pgno} has a cell outside its content area"
    return pointers


def _walk(path: Path, roots: list[tuple[str, int]], deadline: float) -> str | None:
    """The first problem in the structure of the file (see check_integrity), or None.

    Stops at ``deadline`` with what it found so far. Of the leaves, most of the
    file, only each b-tree's right-most one is read: its depth is found down its
    right edge (where appends go), then its levels above the leaves are read top
    down, checking every child pointer.
    """
    with path.open("rb", buffering=0) as f:
        head = f.read(100)
        layout = _layout(head, os.fstat(f.fileno()).st_size)
        if isinstance(layout, str):
            return layout
        page_size, usable, pages = layout
        seen: set[int] = set()

        def read(pgno: int) -> bytes:
            f.seek((pgno - 1) * page_size)
            return f.read(page_size)

        def claim(numbers: Sequence[int], where: str) -> str | None:
            if numbers and (min(numbers) < 2 or max(numbers) > pages):
                return f"{where} points outside the file's {pages} pages"
            count = len(seen)
            seen.update(numbers)
            if len(seen) != count + len(numbers):
                return f"{where} points to a page that is used elsewhere"
            return None

        # The freelist: the pages the next writes will take.
        trunk, expected, found = _U32(head, 32)[0], _U32(head, 36)[0], 0
        while trunk and found <= expected:
            where = f"the freelist (trunk page {trunk})"
            if problem := claim((trunk,), where):
                return problem
            page = read(trunk)
            count = _U32(page, 4)[0]
            if count > usable // 4 - 2:
                return f"{where} lists {count} free pages, more than a page holds"
            if problem := claim(struct.unpack_from(f">{count}I", page, 8), where):
                return problem
            found += 1 + count
            trunk = _U32(page, 0)[0]
        if found != expected:
            return f"the freelist holds {found} pages, its header says {expected}"

        for name, root in roots:
            if root != 1 and (problem := claim((root,), f"the root of {name}")):
                return problem
            pgno, page, depth = root, read(root), 0
            kind = _INTERIOR.get(page[100 if root == 1 else 0])
            while (at := page[100 if pgno == 1 else 0]) in _INTERIOR:
                if depth == _MAX_DEPTH:  # a damaged pointer leads back up the tree
                    return f"the right edge of {name} loops or is deeper than SQLite allows"
                pgno = _U32(page, (100 if pgno == 1 else 0) + 8)[0]  # the right-most child
                if not 2 <= pgno <= pages:
                    return f"page {pgno} of {name} points outside the file's {pages} pages"
                page, depth = read(pgno), depth + 1
            if at not in _LEAF or (kind is not None and _LEAF[at] != kind):
                return f"page {pgno} of {name} is not a b-tree page of its kind (type {at})"
            if isinstance(cells := _cells(page, pgno, usable), str):
                return f"{cells} ({name})"
            level = [root]
            for height in range(depth, 0, -1):  # the levels above the leaves, top down
                below: list[int] = []
                for pgno in level:
                    if time.monotonic() > deadline:
                        return None
                    page = read(pgno)
                    off = 100 if pgno == 1 else 0
                    if _INTERIOR.get(page[off]) != kind:
                        return f"page {pgno} of {name} is not an interior {kind} page (type {page[off]})"
                    if isinstance(cells := _cells(page, pgno, usable), str):
                        return f"{cells} ({name})"
                    children = [_U32(page, p)[0] for p in cells]
                    children.append(_U32(page, off + 8)[0])
                    if problem := claim(children, f"page {pgno} of {name}"):
                        return problem
                    if height > 1:
                        below += children
                level = below
    return None


def _file_problem(path: Path) -> str | None:
    """What the header says is wrong with a file SQLite calls malformed, if anything."""
    try:
        with path.open("rb") as f:
            layout = _layout(f.read(100), os.fstat(f.fileno()).st_size)
    except OSError:
        return None
    return layout if isinstance(layout, str) else None


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
_SQLITE_CONSTRAINT, _SQLITE_AUTH, _SQLITE_NOTADB, _SQLITE_INTERRUPT = 19, 23, 26, 9


def _code(exc: sqlite3.Error) -> int:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def translate(
    exc: sqlite3.Error, path: Path, doing: str, *, busy_timeout: float = 0.0
) -> StoreError:
    """A StoreError for a driver error, saying what to fix.

    A full disk, an I/O error and a file locked by another process may pass: those are
    :class:`TransientStoreError`, which the runtime retries.
    """
    code = _code(exc)
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
        return CorruptStoreError(
            f"{path} is corrupt ({exc}; met while {doing}); stop using it, see every problem "
            f"with `mainspring doctor --store sqlite:///{path}` and restore it from a backup"
        )
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

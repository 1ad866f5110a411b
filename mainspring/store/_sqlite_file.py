"""The SQLite store's file: its URL, and opening it by one rule: refuse, never modify.

A file is inspected through a read-only connection first; only a missing path, a
healthy store of ours at a schema version this code knows, or (when the user asks for
creation) an empty file is ever opened for writing. A missing store is built under a
temporary name and linked into place, so no process ever sees it half made.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Final, NamedTuple
from urllib.parse import parse_qsl

from ..errors import NotAStoreError, StoreError
from ._sqlite_errors import SQLITE_CORRUPT, result_code, translate
from ._sqlite_integrity import check_integrity, corrupt_error, file_problem, wal_path
from ._sqlite_schema import check_identity, migrate

_SQLITE_HEADER: Final = b"SQLite format 3\x00"


class SQLiteUrl(NamedTuple):
    path: Path
    create: bool  # make a new store even in an empty file (a missing one is always made)
    audit: bool = True  # hash-chain and anchor the journals (?audit=off: not)


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
    create, audit = False, True
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "audit" and value in ("on", "off"):
            audit = value == "on"
            continue
        if key == "audit":
            raise StoreError(
                f"invalid audit={value!r} in SQLite store URL {url!r}; use audit=on or audit=off"
            )
        if key != "create":
            raise StoreError(
                f"unknown option {key!r} in SQLite store URL {url!r}; the options are "
                "create=true (make a new store in an empty file) and audit=on|off (the "
                "audit chain)"
            )
        if value not in ("true", "false"):
            raise StoreError(
                f"invalid create={value!r} in SQLite store URL {url!r}; use create=true or create=false"
            )
        create = value == "true"
    return SQLiteUrl(Path(rest), create, audit)


def readonly_uri(path: Path, *, immutable: bool = False) -> str:
    return path.absolute().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


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
        wal = wal_path(path)
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
    immutable = not wal_path(path).exists()
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
                check_integrity(conn, path, wal=wal_path(path).exists())
        except sqlite3.Error as exc:
            if result_code(exc) == SQLITE_CORRUPT:
                raise corrupt_error(path, file_problem(path) or str(exc)) from None
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
    if not wal_path(path).exists() and not os.access(parent, os.W_OK):
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


def connect_writer(
    path: Path, *, create: bool, busy_timeout: float
) -> tuple[sqlite3.Connection, tuple[int, int]]:
    """The store's one write connection, and the (device, inode) of the file it opened.

    The file is refused unless it is a healthy store of ours (a missing one is made
    whole first); then WAL with every commit fsync'd, and the schema migrated.
    """
    # Refuses foreign, newer, damaged, read-only and (unless asked to create) empty
    # files before anything can write to them; a missing store is made whole.
    if inspect_file(path, create=create) and not create_file(path):
        inspect_file(path, create=create)  # another process put a file there first
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise translate(exc, path, "opening the store") from None
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"{path} cannot use write-ahead logging (journal mode stayed {mode!r}); "
                "put the store on a local filesystem"
            )
        conn.execute("PRAGMA synchronous = FULL")  # every commit is fsync'd
        # Damage met later is reported when its page is read, before it is written over.
        conn.execute("PRAGMA cell_size_check = ON")
        migrate(conn, path)
        opened = file_id(path)
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc, path, "opening the store", busy_timeout=busy_timeout) from None
    except BaseException:
        conn.close()
        raise
    return conn, opened


def connect_reader(
    path: Path, opened: tuple[int, int] | None, *, busy_timeout: float
) -> sqlite3.Connection:
    """A read-only connection to the file the writer opened (refused if the path names
    another file now), which may move between threads."""
    check_same_file(path, opened)
    try:
        conn = sqlite3.connect(
            readonly_uri(path),
            uri=True,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise translate(exc, path, "opening a read connection") from None
    conn.execute("PRAGMA cell_size_check = ON")
    return conn

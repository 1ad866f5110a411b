"""SQLite's errors in the store's words: what happened, to which file, and what to fix.

A driver error is translated once, at the boundary, into the store's error tree: a
full disk, an I/O error and a lock held too long are :class:`TransientStoreError`
(the runtime retries them); damage is :class:`CorruptStoreError`; the rest say what to fix.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import CorruptStoreError, NotAStoreError, StoreError, TransientStoreError

# Primary result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 13, 14
_SQLITE_CONSTRAINT, _SQLITE_AUTH, _SQLITE_NOTADB = 19, 23, 26
SQLITE_CORRUPT, SQLITE_INTERRUPT = 11, 9  # told apart by the integrity check too


def result_code(exc: sqlite3.Error) -> int:
    """The primary result code of a driver error (0 if it has none)."""
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def translate(
    exc: sqlite3.Error, path: Path, doing: str, *, busy_timeout: float = 0.0
) -> StoreError:
    """A StoreError for a driver error, saying what to fix.

    A full disk, an I/O error and a file locked by another process may pass: those are
    :class:`TransientStoreError`, which the runtime retries.
    """
    code = result_code(exc)
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
    if code == SQLITE_CORRUPT:
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

"""The open-time integrity check of a SQLite store: damage refused before anything writes.

Small files get SQLite's ``PRAGMA quick_check``; larger ones a bounded walk of the
pages every write goes through (the header, the freelist, the interior pages of
every b-tree), so opening stays fast whatever the size. What the check leaves out
is found when read (``cell_size_check``) and by ``mainspring doctor``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

from ..errors import CorruptStoreError
from ._sqlite_errors import SQLITE_INTERRUPT, result_code

#: Up to this size (file and -wal together) the open-time check is a full ``PRAGMA
#: quick_check``: ~0.1 ms for a new user's store, 0.3-0.7 ms at the bound (warm cache,
#: here). Above it, quick_check grows by ~0.7 ms per MB (0.2-1.4 s at 200 MB), so open
#: checks what is cheap instead (see check_integrity).
FULL_CHECK_BYTES: Final = 1 << 20
#: The most the open-time check of a larger file may take; what it leaves unchecked is
#: checked when read (cell_size_check) and by ``mainspring doctor``.
CHECK_SECONDS: Final = 0.02


def wal_path(path: Path) -> Path:
    """The write-ahead log beside the store: with it, the file alone is not the database."""
    return Path(f"{path}-wal")


def corrupt_error(path: Path, problem: str) -> CorruptStoreError:
    problem = " ".join(problem.replace("*** in database main ***", "").split())
    return CorruptStoreError(
        f"{path} is corrupt ({problem}); it was left untouched. See every problem with "
        f"`mainspring doctor --store sqlite:///{path}`, then restore the store from a backup"
    )


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
    size = path.stat().st_size + (_size(wal_path(path)) if wal else 0)
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
    return st.st_size, st.st_mtime_ns, wal_path(path).exists()


def _quick_check(conn: sqlite3.Connection, seconds: float | None) -> str | None:
    # A timer, not a progress handler: before SQLite 3.43 the check of all b-trees is
    # one VM instruction, which a progress handler cannot stop.
    timer = None if seconds is None else threading.Timer(seconds, _interrupt, (conn,))
    if timer is not None:
        timer.start()
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.OperationalError as exc:
        if timer is not None and result_code(exc) == SQLITE_INTERRUPT:
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


class _OutOfTime(Exception):
    """The walk's deadline passed: what it checked so far was sound."""


class _Pages:
    """The file's pages as the walk reads them, and which ones it has met (each once)."""

    def __init__(self, f: BinaryIO, size: int, usable: int, count: int) -> None:
        self._f = f
        self.size = size
        self.usable = usable
        self.count = count
        self._seen: set[int] = set()

    def read(self, pgno: int) -> bytes:
        self._f.seek((pgno - 1) * self.size)
        return self._f.read(self.size)

    def claim(self, numbers: Sequence[int], where: str) -> str | None:
        """Note ``numbers`` as used by ``where``; what is wrong if one is out of the file
        or was met before (two b-trees, or a b-tree and the freelist, sharing a page)."""
        if numbers and (min(numbers) < 2 or max(numbers) > self.count):
            return f"{where} points outside the file's {self.count} pages"
        count = len(self._seen)
        self._seen.update(numbers)
        if len(self._seen) != count + len(numbers):
            return f"{where} points to a page that is used elsewhere"
        return None


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
        pages = _Pages(f, *layout)
        if problem := _walk_freelist(pages, head):
            return problem
        try:
            for name, root in roots:
                if problem := _walk_btree(pages, name, root, deadline):
                    return problem
        except _OutOfTime:
            return None
    return None


def _walk_freelist(pages: _Pages, head: bytes) -> str | None:
    """The freelist: the pages the next writes will take."""
    trunk, expected, found = _U32(head, 32)[0], _U32(head, 36)[0], 0
    while trunk and found <= expected:
        where = f"the freelist (trunk page {trunk})"
        if problem := pages.claim((trunk,), where):
            return problem
        page = pages.read(trunk)
        count = _U32(page, 4)[0]
        if count > pages.usable // 4 - 2:
            return f"{where} lists {count} free pages, more than a page holds"
        if problem := pages.claim(struct.unpack_from(f">{count}I", page, 8), where):
            return problem
        found += 1 + count
        trunk = _U32(page, 0)[0]
    if found != expected:
        return f"the freelist holds {found} pages, its header says {expected}"
    return None


def _walk_btree(pages: _Pages, name: str, root: int, deadline: float) -> str | None:
    """One b-tree: down its right edge to a leaf, then every level above the leaves."""
    if root != 1 and (problem := pages.claim((root,), f"the root of {name}")):
        return problem
    pgno, page, depth = root, pages.read(root), 0
    kind = _INTERIOR.get(page[100 if root == 1 else 0])
    while (at := page[100 if pgno == 1 else 0]) in _INTERIOR:
        if depth == _MAX_DEPTH:  # a damaged pointer leads back up the tree
            return f"the right edge of {name} loops or is deeper than SQLite allows"
        pgno = _U32(page, (100 if pgno == 1 else 0) + 8)[0]  # the right-most child
        if not 2 <= pgno <= pages.count:
            return f"page {pgno} of {name} points outside the file's {pages.count} pages"
        page, depth = pages.read(pgno), depth + 1
    if at not in _LEAF or (kind is not None and _LEAF[at] != kind):
        return f"page {pgno} of {name} is not a b-tree page of its kind (type {at})"
    if isinstance(cells := _cells(page, pgno, pages.usable), str):
        return f"{cells} ({name})"
    return _walk_levels(pages, name, root, depth, kind, deadline)


def _walk_levels(
    pages: _Pages, name: str, root: int, depth: int, kind: str | None, deadline: float
) -> str | None:
    """The levels of a b-tree above its leaves, top down, claiming every child pointer."""
    level = [root]
    for height in range(depth, 0, -1):
        below: list[int] = []
        for pgno in level:
            if time.monotonic() > deadline:
                raise _OutOfTime
            page = pages.read(pgno)
            off = 100 if pgno == 1 else 0
            if _INTERIOR.get(page[off]) != kind:
                return f"page {pgno} of {name} is not an interior {kind} page (type {page[off]})"
            if isinstance(cells := _cells(page, pgno, pages.usable), str):
                return f"{cells} ({name})"
            children = [_U32(page, p)[0] for p in cells]
            children.append(_U32(page, off + 8)[0])
            if problem := pages.claim(children, f"page {pgno} of {name}"):
                return problem
            if height > 1:
                below += children
        level = below
    return None


def file_problem(path: Path) -> str | None:
    """What the header says is wrong with a file SQLite calls malformed, if anything."""
    try:
        with path.open("rb") as f:
            layout = _layout(f.read(100), os.fstat(f.fileno()).st_size)
    except OSError:
        return None
    return layout if isinstance(layout, str) else None

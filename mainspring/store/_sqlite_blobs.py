"""The SQLite store's blobs (``store/_blobs.py``): written with the events that reference
them, read back when their events are, and deleted with the last run that references them.

Write functions run on the writer thread inside the write transaction; reads on a read
connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Final

from ._blobs import Blobs, check_blobs, is_split, join_checked, refs_of

NO_BLOBS: Final[Blobs] = {}  # shared: never written to

# The same data under the same digest: a blob already stored is left as it is.
_PUT_BLOB: Final = "INSERT OR IGNORE INTO blobs (digest, data) VALUES (?, ?)"
_PUT_REF: Final = "INSERT OR IGNORE INTO blob_refs (run_id, digest) VALUES (?, ?)"
_CHUNK: Final = 500  # SQLite caps the parameters of one statement


def put_blobs(cur: sqlite3.Cursor, run_id: str, blobs: Mapping[str, bytes]) -> None:
    """Store ``blobs`` and note that ``run_id`` references them (inside its append)."""
    cur.executemany(_PUT_BLOB, blobs.items())
    cur.executemany(_PUT_REF, [(run_id, digest) for digest in blobs])


def merged(first: Blobs, second: Blobs) -> Blobs:
    """Two appends' blobs as one (neither is changed: NO_BLOBS is shared)."""
    if not second:
        return first
    return {**first, **second} if first else second


def delete_run_blobs(cur: sqlite3.Cursor, run_id: str) -> int:
    """Forget ``run_id``'s references and delete the blobs no other run references; how
    many blobs went (inside the transaction that deletes the run)."""
    digests = [
        d for (d,) in cur.execute("SELECT digest FROM blob_refs WHERE run_id = ?", (run_id,))
    ]
    if not digests:
        return 0
    cur.execute("DELETE FROM blob_refs WHERE run_id = ?", (run_id,))
    gone = 0
    for digest in digests:
        cur.execute(
            "DELETE FROM blobs WHERE digest = ?"
            " AND NOT EXISTS (SELECT 1 FROM blob_refs WHERE digest = ?)",
            (digest, digest),
        )
        gone += cur.rowcount
    return gone


def vacuum_blobs(cur: sqlite3.Cursor) -> int:
    """Delete references of runs that are gone and blobs nobody references; how many blobs
    went. Deleting runs already does this for theirs: this sweeps what a store edited by
    hand, or an older version, left behind."""
    cur.execute("DELETE FROM blob_refs WHERE run_id NOT IN (SELECT run_id FROM runs)")
    cur.execute("DELETE FROM blobs WHERE digest NOT IN (SELECT digest FROM blob_refs)")
    return cur.rowcount


def select_blobs(conn: sqlite3.Connection, digests: Sequence[str]) -> dict[str, bytes]:
    """The stored bytes of ``digests`` (those the table holds)."""
    found: dict[str, bytes] = {}
    for i in range(0, len(digests), _CHUNK):
        chunk = digests[i : i + _CHUNK]
        rows = conn.execute(
            f"SELECT digest, data FROM blobs WHERE digest IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        found.update((d, bytes(data)) for d, data in rows)
    return found


def joined_rows(
    conn: sqlite3.Connection, run_id: str, rows: list[tuple[int, str, float, bytes]]
) -> list[tuple[int, str, float, bytes]]:
    """Rows of (seq, kind, ts, data) with each split payload's blobs put back, checked."""
    wanted = refs_of(row[3] for row in rows)
    if not wanted:
        return rows
    found = select_blobs(conn, wanted)
    out = []
    for seq, kind, ts, data in rows:
        if is_split(data):
            where = f"event {seq} of run {run_id!r}"
            check_blobs(found, refs_of((data,)), where)
            data = join_checked(data, found, where)
        out.append((seq, kind, ts, data))
    return out

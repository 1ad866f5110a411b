"""The SQLite store's audit chain: hashing appended events, writing anchors, reading both
back for the verifier, and deleting runs (retention, erasure) with an anchor first.

The write functions run on the writer thread inside the write transaction, so the hash of
the event before an append (read here, by primary key) and the last anchor are what the
file holds: another process that appended meanwhile, or took the run over, is seen.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Final

from ._chain import (
    GENESIS,
    REST,
    RESUMED,
    Anchor,
    AuditSettings,
    chain_rows,
    is_rest,
    is_resume,
    make_anchor,
    still_deletable,
)
from ._sqlite_blobs import delete_run_blobs
from .audit import AuditRun, ChainRow


class Chain:
    """The store's audit settings, and each run's head as the last commit of this writer
    left it: an append then hashes from there instead of reading the event before it.

    Heads are staged by the write functions and kept only once their transaction commits
    (:meth:`committed`); a rollback forgets them (:meth:`rolled_back`). A run that parks or
    ends leaves the cache: whoever resumes it may be another process, so it is read again.
    """

    __slots__ = ("_heads", "_staged", "settings")

    def __init__(self, settings: AuditSettings) -> None:
        self.settings = settings
        self._heads: dict[str, tuple[int, bytes]] = {}
        self._staged: dict[str, tuple[int, bytes] | None] = {}

    @property
    def actor(self) -> str:
        return self.settings.actor

    @property
    def signer(self) -> Any:
        return self.settings.signer

    def prev(self, cur: sqlite3.Cursor, run_id: str, seq: int) -> bytes:
        """The hash at ``seq``: staged or committed by this writer, else read."""
        staged = self._staged
        known = staged[run_id] if run_id in staged else self._heads.get(run_id)
        if known is not None and known[0] == seq:
            return known[1]
        return head_at(cur, run_id, seq)

    def stage(self, run_id: str, seq: int, head: bytes | None) -> None:
        self._staged[run_id] = None if head is None else (seq, head)

    def committed(self) -> None:
        if self._staged:
            for run_id, head in self._staged.items():
                if head is None:
                    self._heads.pop(run_id, None)
                else:
                    self._heads[run_id] = head
            self._staged.clear()

    def rolled_back(self) -> None:
        self._staged.clear()


INSERT_EVENT: Final = (
    "INSERT INTO events (run_id, seq, kind, ts, data, hash) VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_ANCHOR: Final = (
    "INSERT INTO anchors (pos, run_id, seq, head, reason, at, actor, detail, hash, sig) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ANCHOR_COLUMNS: Final = "pos, run_id, seq, head, reason, at, actor, detail, hash, sig"


def head_at(cur: sqlite3.Cursor, run_id: str, seq: int) -> bytes:
    """The chain's hash at ``seq`` (GENESIS before the first event, or where the event
    there carries none: written before the chain, or with it off)."""
    if seq == 0:
        return GENESIS
    row = cur.execute(
        "SELECT hash FROM events WHERE run_id = ? AND seq = ?", (run_id, seq)
    ).fetchone()
    return GENESIS if row is None or row[0] is None else bytes(row[0])


def insert_events(
    cur: sqlite3.Cursor,
    chain: Chain | None,
    expected_seq: int,
    rows: Sequence[tuple[Any, ...]],
) -> bytes | None:
    """Insert the event rows, hashed when the chain is on; the new head (None: off)."""
    if chain is None or not rows:
        cur.executemany(INSERT_EVENT, [(*row, None) for row in rows])
        return None
    hashed = chain_rows(chain.prev(cur, rows[0][0], expected_seq), rows)
    cur.executemany(INSERT_EVENT, hashed)
    return bytes(hashed[-1][5])


def add_anchor(
    cur: sqlite3.Cursor,
    audit: Chain,
    run_id: str,
    seq: int,
    head: bytes | None,
    reason: str,
    *,
    actor: str | None = None,
    detail: str = "",
) -> Anchor:
    """Append an anchor to the store's chain (serialised by the write transaction)."""
    last = cur.execute("SELECT pos, hash FROM anchors ORDER BY pos DESC LIMIT 1").fetchone()
    pos, prev = (1, GENESIS) if last is None else (last[0] + 1, bytes(last[1]))
    anchor = make_anchor(
        prev,
        pos,
        run_id,
        seq,
        head,
        reason,
        time.time(),
        audit.actor if actor is None else actor,
        detail,
        audit.signer,
    )
    cur.execute(INSERT_ANCHOR, anchor)
    return anchor


def anchor_rest(
    cur: sqlite3.Cursor,
    chain: Chain | None,
    run_id: str,
    new_seq: int,
    head: bytes | None,
    status: str | None,
    before: str | None = None,
) -> None:
    """The anchor of an append that parks or ends its run, or resumes a parked one (its
    stored status was ``before``); the run's head staged."""
    if chain is None:
        return
    if is_rest(status):
        add_anchor(cur, chain, run_id, new_seq, head or chain.prev(cur, run_id, new_seq), REST)
        chain.stage(run_id, new_seq, None)  # parked: whoever resumes it reads it again
        return
    if is_resume(status, before):
        head = head or chain.prev(cur, run_id, new_seq)
        add_anchor(cur, chain, run_id, new_seq, head, RESUMED)
    if head is not None:
        chain.stage(run_id, new_seq, head)


def apply_delete_runs(cur: sqlite3.Cursor, args: tuple[Any, ...]) -> list[Anchor]:
    """Delete whole runs (retention, erasure): for each still at rest (judged here, inside
    the write transaction), an anchor with its last seq and head first, then its events,
    snapshot, cursors, row and the blobs no other run references, in one transaction."""
    run_ids, reason, actor, details, cutoffs, audit = args
    anchors = []
    for run_id, detail, cutoff in zip(run_ids, details, cutoffs, strict=True):
        found = cur.execute(
            "SELECT last_seq, status, updated_at FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if found is None or not still_deletable(found[1], found[2], cutoff):
            continue
        audit.stage(run_id, 0, None)
        last_seq = int(found[0])
        anchors.append(
            add_anchor(
                cur, audit, run_id, last_seq, head_at(cur, run_id, last_seq), reason,
                actor=actor, detail=detail,
            )
        )  # fmt: skip
        for table in ("events", "snapshots", "cursors", "runs"):
            cur.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        delete_run_blobs(cur, run_id)
    return anchors


# --- reads (worker thread, read-only connection) ---


def select_chain(run_id: str, conn: sqlite3.Connection) -> list[ChainRow]:
    return [
        ChainRow(seq, kind, ts, _bytes(data), None if h is None else _bytes(h))
        for seq, kind, ts, data, h in conn.execute(
            "SELECT seq, kind, ts, data, hash FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        )
    ]


def _bytes(value: bytes | str) -> bytes:
    """A BLOB as bytes (an edit in the sqlite3 shell may have left text)."""
    return value.encode() if isinstance(value, str) else bytes(value)


def select_audit_runs(conn: sqlite3.Connection) -> list[AuditRun]:
    from ..events import decode

    return [
        AuditRun(run_id, last_seq, status, updated_at, decode(metadata), tenant)
        for run_id, last_seq, status, updated_at, metadata, tenant in conn.execute(
            "SELECT run_id, last_seq, status, updated_at, metadata, tenant FROM runs"
            " ORDER BY run_id"
        )
    ]


def select_event_run_ids(conn: sqlite3.Connection) -> list[str]:
    """Runs that have events (a run row deleted with its events left behind shows here)."""
    return [r for (r,) in conn.execute("SELECT DISTINCT run_id FROM events ORDER BY run_id")]


def select_anchors(conn: sqlite3.Connection) -> list[Anchor]:
    return [
        Anchor(
            pos,
            run_id,
            seq,
            bytes(head),
            reason,
            at,
            actor,
            detail,
            bytes(h),
            None if sig is None else bytes(sig),
        )
        for pos, run_id, seq, head, reason, at, actor, detail, h, sig in conn.execute(
            f"SELECT {_ANCHOR_COLUMNS} FROM anchors ORDER BY pos"
        )
    ]

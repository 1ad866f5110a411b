"""The archive's index: a SQLite file mapping (tenant, id) and (tenant, thread, time) to
where a record's frame is (segment, position, length).

The segments are the truth; the index is derived from them and can always be rebuilt.
It remembers, per segment, up to which byte it has applied the frames (``indexed``), so
opening the archive after a crash applies only what was written after the last index
commit, and how many bytes of the segment are dead (``garbage``), so ``compact`` knows
whether there is anything to reclaim.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final, NamedTuple

from ._segments import Put, Scanned

FORMAT: Final = "1"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    tenant TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, thread TEXT,
    time REAL NOT NULL, segment INTEGER NOT NULL, position INTEGER NOT NULL,
    length INTEGER NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_time ON records (tenant, time, id);
CREATE INDEX IF NOT EXISTS records_by_thread ON records (tenant, thread, time, id);
CREATE TABLE IF NOT EXISTS segments (
    segment INTEGER PRIMARY KEY, indexed INTEGER NOT NULL, garbage INTEGER NOT NULL);
"""


class Location(NamedTuple):
    segment: int
    offset: int
    length: int


class SegmentState(NamedTuple):
    indexed: int  # frames up to this byte are applied
    garbage: int  # bytes of dead frames (replaced or removed records, tombstones)


class LiveRow(NamedTuple):
    tenant: str
    id: str
    segment: int
    offset: int
    length: int


class IndexBroken(Exception):
    """The index file is not usable (corrupt, foreign, another format): rebuild it."""


def index_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


class ArchiveIndex:
    """The index's SQLite connection; used by one thread at a time (the archive's lock)."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise IndexBroken(str(exc)) from exc
        try:
            self._check_and_create()
        except (sqlite3.Error, IndexBroken) as exc:
            self._db.close()
            raise IndexBroken(str(exc)) from exc

    def _check_and_create(self) -> None:
        db = self._db
        # The index can be rebuilt from the segments: it does not need FULL durability.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise IndexBroken("quick_check failed")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
        elif row[0] != FORMAT:
            raise IndexBroken(f"index format {row[0]}, expected {FORMAT}")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    # -- what the segments hold --------------------------------------------------------

    def segments(self) -> dict[int, SegmentState]:
        rows = self._db.execute("SELECT segment, indexed, garbage FROM segments")
        return {n: SegmentState(indexed, garbage) for n, indexed, garbage in rows}

    def compacted_below(self) -> int:
        """Segments numbered below this were replaced by a compaction (leftovers: delete)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'compacted_below'").fetchone()
        return int(row[0]) if row else 0

    def apply(self, segment: int, frames: Sequence[Scanned], end: int) -> None:
        """Apply a segment's frames in order, and mark it indexed up to ``end``; one commit."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR IGNORE INTO segments (segment, indexed, garbage) VALUES (?, 0, 0)",
                (segment,),
            )
            garbage = 0
            puts: list[Scanned] = []
            for scanned in frames:
                if isinstance(scanned.frame, Put):
                    puts.append(scanned)
                    continue
                garbage += self._put_all(segment, puts)
                puts = []
                self._drop(scanned.frame.tenant, scanned.frame.ids)
                garbage += scanned.length  # a tombstone is dead once applied
            garbage += self._put_all(segment, puts)
            db.execute(
                "UPDATE segments SET indexed = ?, garbage = garbage + ? WHERE segment = ?",
                (end, garbage, segment),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _put_all(self, segment: int, puts: Sequence[Scanned]) -> int:
        """Index a run of puts (the last of one id wins); returns the bytes of this
        segment's frames they made dead (ids repeated within the run)."""
        latest: dict[tuple[str, str], Scanned] = {}
        repeated = 0
        for scanned in puts:
            record = scanned.frame.record  # type: ignore[union-attr]
            earlier = latest.pop((record.tenant, record.id), None)
            repeated += earlier.length if earlier is not None else 0
            latest[(record.tenant, record.id)] = scanned
        by_tenant: dict[str, list[str]] = {}
        for tenant, id_ in latest:
            by_tenant.setdefault(tenant, []).append(id_)
        for tenant, ids in by_tenant.items():
            self._drop(tenant, ids)
        self._db.executemany(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.tenant, r.id, r.kind, r.thread, r.time, segment, s.offset, s.length)
             for s in latest.values() for r in (s.frame.record,)],  # type: ignore[union-attr]
        )  # fmt: skip
        return repeated

    def _drop(self, tenant: str, ids: Sequence[str]) -> None:
        """Delete index rows, counting their frames as garbage of their segments."""
        dead: dict[int, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._db.execute(
                f"DELETE FROM records WHERE tenant = ? AND id IN ({','.join('?' * len(chunk))}) "
                "RETURNING segment, length",
                (tenant, *chunk),
            )
            for segment, length in rows.fetchall():
                dead[segment] = dead.get(segment, 0) + length
        self._db.executemany(
            "UPDATE segments SET garbage = garbage + ? WHERE segment = ?",
            [(length, segment) for segment, length in dead.items()],
        )

    # -- reads ---------------------------------------------------------------------------

    def locate(self, tenant: str, id_: str) -> Location | None:
        row = self._db.execute(
            "SELECT segment, position, length FROM records WHERE tenant = ? AND id = ?",
            (tenant, id_),
        ).fetchone()
        return Location(*row) if row else None

    def present(self, tenant: str, ids: Sequence[str]) -> list[str]:
        return [id_ for id_ in dict.fromkeys(ids) if self.locate(tenant, id_) is not None]

    def time_of(self, tenant: str, id_: str) -> float | None:
        row = self._db.execute(
            "SELECT time FROM records WHERE tenant = ? AND id = ?", (tenant, id_)
        ).fetchone()
        return float(row[0]) if row else None

    def find(
        self,
        *,
        tenant: str,
        thread: str | None,
        kind: str | None,
        since: float | None,
        until: float | None,
        limit: int,
        after: tuple[float, str] | None,
    ) -> list[Location]:
        where: list[str] = ["tenant = ?"]
        args: list[str | float] = [tenant]
        for clause, value in (
            ("thread = ?", thread),
            ("kind = ?", kind),
            ("time >= ?", since),
            ("time < ?", until),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if after is not None:
            where.append("(time > ? OR (time = ? AND id > ?))")
            args.extend((after[0], after[0], after[1]))
        sql = (
            f"SELECT segment, position, length FROM records WHERE {' AND '.join(where)} "
            "ORDER BY time, id LIMIT ?"
        )
        return [Location(*row) for row in self._db.execute(sql, (*args, limit))]

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])

    def live(self) -> list[LiveRow]:
        """Every live record, in segment order: what a compaction copies."""
        rows = self._db.execute(
            "SELECT tenant, id, segment, position, length FROM records ORDER BY segment, position"
        )
        return [LiveRow(*row) for row in rows]

    # -- compaction ------------------------------------------------------------------------

    def switch(
        self, moved: Sequence[tuple[LiveRow, Location]], new: dict[int, int], first_new: int
    ) -> None:
        """Point every live record at its copy, forget the old segments and register the
        new ones (``new``: number -> size); one commit."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "UPDATE records SET segment = ?, position = ?, length = ? WHERE tenant = ? AND id = ?",
                [(to.segment, to.offset, to.length, row.tenant, row.id) for row, to in moved],
            )
            db.execute("DELETE FROM segments WHERE segment < ?", (first_new,))
            db.executemany(
                "INSERT INTO segments (segment, indexed, garbage) VALUES (?, ?, 0)", new.items()
            )
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('compacted_below', ?)", (str(first_new),)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

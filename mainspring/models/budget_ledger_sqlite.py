"""The SQLite budget ledger: counters in a file that the processes of one machine share.

Each reservation is one ``BEGIN IMMEDIATE`` transaction (the file's write lock is
taken before the counters are read, so two processes can never both see room for
the last call). The calls run in one worker thread of the ledger's own: sqlite3
blocks, and one thread keeps one connection. Its own file by default; any file
that holds no table of these names will do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from .budget_ledger import Entry, Refusal, Reservation, ordered, passes, settled

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mainspring_budget_counters (
    scope TEXT NOT NULL, metric TEXT NOT NULL, bucket INTEGER NOT NULL,
    amount REAL NOT NULL, PRIMARY KEY (scope, metric, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mainspring_budget_starts (
    scope TEXT PRIMARY KEY, started REAL NOT NULL
) WITHOUT ROWID;
"""
_READ = "SELECT amount FROM mainspring_budget_counters WHERE scope=? AND metric=? AND bucket=?"
_ADD = (
    "INSERT INTO mainspring_budget_counters (scope, metric, bucket, amount) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (scope, metric, bucket) DO UPDATE SET amount = amount + excluded.amount "
    "RETURNING amount"
)


class SQLiteLedger:
    """Counters in the SQLite file at ``path`` (made when missing). ``durable=False``:
    ``synchronous=NORMAL``, no flush per commit; a crash of the process loses nothing,
    one of the machine may forget the last counts."""

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 10.0, durable: bool = True
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.durable = durable
        self._conn: sqlite3.Connection | None = None
        self._thread = anyio.CapacityLimiter(1)

    async def reserve(self, entries: Sequence[Entry]) -> Reservation | Refusal:
        return await self._run(lambda conn: _reserve(conn, entries))

    async def settle(self, reservation: Reservation, actual: Mapping[str, float]) -> None:
        corrections = settled(reservation, actual)
        if corrections:
            await self._run(lambda conn: _add_all(conn, corrections))

    async def release(self, reservation: Reservation) -> None:
        back = [(e, -e.amount) for e in reservation.entries]
        await self._run(lambda conn: _add_all(conn, back))

    async def spent(self, scope: str, metric: str, bucket: int = 0) -> float:
        def read(conn: sqlite3.Connection) -> float:
            row = conn.execute(_READ, (scope, metric, bucket)).fetchone()
            return float(row[0]) if row else 0.0

        return await self._run(read)

    async def started(self, scope: str, now: float) -> float:
        def first_seen(conn: sqlite3.Connection) -> float:
            conn.execute(
                "INSERT INTO mainspring_budget_starts VALUES (?, ?) ON CONFLICT DO NOTHING",
                (scope, now),
            )
            sql = "SELECT started FROM mainspring_budget_starts WHERE scope=?"
            return float(conn.execute(sql, (scope,)).fetchone()[0])

        return await self._run(first_seen)

    async def aclose(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await anyio.to_thread.run_sync(conn.close, limiter=self._thread)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._call, fn, limiter=self._thread)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn or self._open()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        conn.executescript(_SCHEMA)
        self._conn = conn
        return conn


def _reserve(conn: sqlite3.Connection, entries: Sequence[Entry]) -> Reservation | Refusal:
    for i, entry in enumerate(entries):
        if entry.limit is not None:
            row = conn.execute(_READ, (entry.scope, entry.metric, entry.bucket)).fetchone()
            spent = float(row[0]) if row else 0.0
            if passes(spent, entry):
                return Refusal(i, entry, spent)
    totals = {}
    for entry in ordered(entries):
        row = conn.execute(_ADD, (entry.scope, entry.metric, entry.bucket, entry.amount))
        totals[id(entry)] = float(row.fetchone()[0])
    return Reservation(tuple(entries), tuple(totals[id(e)] for e in entries))


def _add_all(conn: sqlite3.Connection, amounts: Sequence[tuple[Entry, float]]) -> None:
    for entry, amount in amounts:
        conn.execute(_ADD, (entry.scope, entry.metric, entry.bucket, amount)).fetchone()

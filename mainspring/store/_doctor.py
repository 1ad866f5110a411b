"""Read-only health checks of a store, for ``mainspring doctor``.

Two kinds of check: the file's integrity (SQLite's full ``PRAGMA
integrity_check``), and the consistency of every journal, on any backend: each
run's events numbered 1 to ``runs.last_seq`` without gaps, starting with
``run_started``, nothing after a terminal event, a status that agrees with the
last event, no events of unknown runs, no unknown kinds or statuses.

Nothing here writes. SQLite is read through a read-only connection (immutable
while no other process has the file open), so a store that ``open`` refuses as
corrupt can still be examined; PostgreSQL in a session whose transactions are
read-only, in one snapshot.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import anyio.to_thread

from ..errors import StoreError
from ..events import TERMINAL_KINDS, TRANSIENT_KINDS, EventKind
from ._sqlite_file import open_readonly, parse_url
from ._sqlite_schema import check_identity
from .records import RunStatus

__all__ = ["Diagnosis", "diagnose"]

#: Problems of one kind listed at most; the rest are counted in one line.
LIMIT: Final = 100

Row = tuple[Any, ...]
Fetch = Callable[[str], Awaitable[list[Row]]]


@dataclass(slots=True)
class Diagnosis:
    """What :func:`diagnose` found; a healthy store has no ``problems``."""

    store: str  # what was examined: a file, or a PostgreSQL database and schema
    checks: list[str] = field(default_factory=list)  # what ran, for the summary
    runs: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


async def diagnose(url: str) -> Diagnosis:
    """Check the store at ``url`` (``sqlite:///...``, a ``.db`` path, ``postgresql://...``).

    Raises :class:`StoreError` (or a subclass) when it cannot be examined at all:
    missing, not a Mainspring store, written by a newer Mainspring, unreachable.
    """
    scheme, sep, _ = url.partition("://")
    if not sep and url.endswith((".db", ".sqlite", ".sqlite3")):
        scheme, url = "sqlite", f"sqlite:///{url}"
    if scheme == "sqlite":
        return await _diagnose_sqlite(parse_url(url).path.absolute())
    if scheme in ("postgresql", "postgres"):
        return await _diagnose_postgres(url)
    if scheme == "memory":
        raise StoreError(
            "a memory:// store lives and dies with its process; there is nothing to check"
        )
    raise StoreError(
        f"cannot check store URL {url!r}; use sqlite:///path/to/file.db or postgresql://user@host/db"
    )


# --- journal consistency: one set of queries for every backend --------------------------------


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))  # our own enum values: no quotes inside


_TERMINAL: Final = f"({_quoted(TERMINAL_KINDS)})"


class _Check(NamedTuple):
    what: str
    sql: str  # {runs} and {events} stand for the tables; {limit} for LIMIT + 1
    describe: Callable[..., str]  # one row -> one line


class Unreadable(Exception):
    """A query the backend could not finish (a damaged file): the other checks go on."""


def _numbering(run: str, last: int, count: int, low: int | None, high: int | None) -> str:
    if not count:
        return f"run {run}: runs.last_seq is {last} but the run has no events"
    missing = (high or 0) - (low or 0) + 1 - count
    gaps = f", {missing} missing between them" if missing else ""
    return (
        f"run {run}: events numbered {low} to {high}{gaps}, but runs.last_seq is {last}; "
        "a journal runs from 1 to last_seq without gaps"
    )


def _first(run: str, kind: str | None) -> str:
    if kind is None:
        return f"run {run}: no events; a journal starts with run_started"
    return f"run {run}: the journal starts with {kind}, not run_started"


def _after_end(run: str, end: int, last: int) -> str:
    if last == end + 1:
        return f"run {run}: event {last} comes after its end at seq {end}"
    return f"run {run}: events {end + 1} to {last} come after its end at seq {end}"


def _status(run: str, status: str, kind: str, last: int) -> str:
    if status in TERMINAL_KINDS:
        return f"run {run}: status {status}, but its last event (seq {last}) is {kind}"
    return f"run {run}: status {status}, but its last event (seq {last}) ended it ({kind})"


_CHECKS: Final = (
    _Check(
        "numbering",
        "SELECT r.run_id, r.last_seq, count(e.seq), min(e.seq), max(e.seq)"
        " FROM {runs} r LEFT JOIN {events} e ON e.run_id = r.run_id"
        " GROUP BY r.run_id, r.last_seq"
        " HAVING count(e.seq) != r.last_seq OR min(e.seq) != 1 OR max(e.seq) != r.last_seq"
        " ORDER BY r.run_id LIMIT {limit}",
        _numbering,
    ),
    _Check(
        "first events",
        "SELECT r.run_id, e.kind FROM {runs} r"
        " LEFT JOIN {events} e ON e.run_id = r.run_id AND e.seq = 1"
        " WHERE (r.last_seq = 0 AND e.kind IS NULL) OR e.kind != 'run_started'"
        " ORDER BY r.run_id LIMIT {limit}",
        _first,
    ),
    _Check(
        "ends",
        "SELECT e.run_id, min(e.seq), r.last_seq FROM {events} e"
        " JOIN {runs} r ON r.run_id = e.run_id"
        f" WHERE e.kind IN {_TERMINAL} AND e.seq < r.last_seq"
        " GROUP BY e.run_id, r.last_seq ORDER BY e.run_id LIMIT {limit}",
        _after_end,
    ),
    _Check(
        "statuses",
        "SELECT r.run_id, r.status, e.kind, r.last_seq FROM {runs} r"
        " JOIN {events} e ON e.run_id = r.run_id AND e.seq = r.last_seq"
        f" WHERE (r.status IN {_TERMINAL} OR e.kind IN {_TERMINAL}) AND r.status != e.kind"
        " ORDER BY r.run_id LIMIT {limit}",
        _status,
    ),
    _Check(
        "events of unknown runs",
        "SELECT e.run_id, count(*) FROM {events} e"
        " WHERE NOT EXISTS (SELECT 1 FROM {runs} r WHERE r.run_id = e.run_id)"
        " GROUP BY e.run_id ORDER BY e.run_id LIMIT {limit}",
        lambda run, n: f"run {run}: {n} event{'s' if n != 1 else ''} but no row in runs",
    ),
    _Check(
        "known statuses",
        "SELECT run_id, status FROM {runs}"
        f" WHERE status NOT IN ({_quoted(RunStatus)}) ORDER BY run_id LIMIT {{limit}}",
        lambda run, status: f"run {run}: unknown status {status!r}",
    ),
    _Check(
        "known kinds",
        "SELECT run_id, seq, kind FROM {events}"
        f" WHERE kind NOT IN ({_quoted(set(EventKind) - TRANSIENT_KINDS)})"
        " ORDER BY run_id, seq LIMIT {limit}",
        lambda run, seq, kind: f"run {run}: event {seq} has unknown kind {kind!r}",
    ),
)


async def _check_journals(fetch: Fetch, runs: str, events: str, report: Diagnosis) -> None:
    report.checks.append("journal consistency")
    try:
        report.runs = (await fetch(f"SELECT count(*) FROM {runs}"))[0][0]
        report.events = (await fetch(f"SELECT count(*) FROM {events}"))[0][0]
    except Unreadable as exc:
        report.problems.append(f"journals: the tables cannot be counted ({exc})")
    for check in _CHECKS:
        try:
            rows = await fetch(check.sql.format(runs=runs, events=events, limit=LIMIT + 1))
        except Unreadable as exc:
            report.problems.append(f"journals: {check.what} could not be checked ({exc})")
            continue
        report.problems += [check.describe(*row) for row in rows[:LIMIT]]
        if len(rows) > LIMIT:
            report.problems.append(f"... and more problems of {check.what} (first {LIMIT} listed)")


# --- SQLite ----------------------------------------------------------------------------------


async def _diagnose_sqlite(path: Path) -> Diagnosis:
    report = Diagnosis(str(path))
    conn = await anyio.to_thread.run_sync(_open_sqlite, path)

    async def fetch(sql: str) -> list[Row]:
        def run() -> list[Row]:
            try:
                return conn.execute(sql).fetchall()
            except sqlite3.DatabaseError as exc:
                raise Unreadable(str(exc)) from None

        return await anyio.to_thread.run_sync(run)

    try:
        report.checks.append("integrity_check")
        try:
            rows = await fetch(f"PRAGMA integrity_check({10 * LIMIT})")
        except Unreadable:
            # It gives up when an index cannot be compared with its damaged table;
            # quick_check may still list what is wrong with the b-trees themselves.
            try:
                rows = await fetch("PRAGMA quick_check")
            except Unreadable as exc:
                rows = [(f"the integrity check could not finish ({exc})",)]
        if rows != [("ok",)]:
            report.problems += _file_problems(rows)
        await _check_journals(fetch, "runs", "events", report)
    finally:
        conn.close()
    return report


_UNUSED: Final = re.compile(r"Page (\d+) is never used")


def _file_problems(rows: list[Row]) -> list[str]:
    """integrity_check's lines, with the pages a damaged b-tree lost as one line."""
    lines = [line for (text,) in rows for line in str(text).splitlines()]
    unused = [int(m[1]) for line in lines if (m := _UNUSED.fullmatch(line))]
    problems = [f"file: {line}" for line in lines if not line.startswith("***")]
    problems = [line for line in problems if not _UNUSED.search(line)][:LIMIT]
    if len(unused) == 1:
        problems.append(f"file: page {unused[0]} is never used")
    elif unused:
        problems.append(
            f"file: {len(unused)} pages ({min(unused)} to {max(unused)}) are in no b-tree: "
            "the page that pointed to them is damaged"
        )
    return problems


def _open_sqlite(path: Path) -> sqlite3.Connection:
    # Shared across worker threads: the queries run in them one at a time.
    conn = open_readonly(path, check_same_thread=False)  # refuses what is not SQLite
    if conn is None:
        state = "an empty file" if path.exists() else "missing"
        raise StoreError(f"no Mainspring store at {path}: it is {state}; check --store")
    try:
        if check_identity(conn, path) == 0:  # refuses other applications and newer schemas
            raise StoreError(f"no Mainspring store at {path}: a SQLite database with no tables")
    except sqlite3.DatabaseError:
        pass  # a damaged schema: integrity_check says what it can
    except BaseException:
        conn.close()
        raise
    return conn


# --- PostgreSQL ------------------------------------------------------------------------------


async def _diagnose_postgres(url: str) -> Diagnosis:
    import asyncpg  # an optional extra: imported only for PostgreSQL

    from ._pg_schema import _version, quote_ident
    from ._pg_url import parse_url as parse_pg_url
    from ._pg_url import redact

    parsed = parse_pg_url(url, None)
    target = parsed.target
    report = Diagnosis(f"PostgreSQL {target}, schema {target.schema}")
    try:
        conn = await asyncpg.connect(
            parsed.dsn,
            timeout=10,
            server_settings={
                "application_name": "mainspring doctor",
                "default_transaction_read_only": "on",
            },
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(
            f"cannot connect to PostgreSQL at {redact(url)} ({type(exc).__name__}: {exc}); "
            "check that the server is running and the URL is right"
        ) from None
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            if await _version(conn, target) == 0:
                raise StoreError(
                    f"no Mainspring store in PostgreSQL schema {target.schema!r} of {target}; "
                    "check --store (?schema=name)"
                )
            s = quote_ident(target.schema)

            async def fetch(sql: str) -> list[Row]:
                return [tuple(row) for row in await conn.fetch(sql)]

            await _check_journals(fetch, f"{s}.runs", f"{s}.events", report)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"PostgreSQL error while checking {target}: {exc}") from None
    finally:
        await conn.close()
    return report

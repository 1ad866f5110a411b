"""``mainspring doctor``: the file's integrity and every journal's consistency, read only.

Journals written by the real engine must come out healthy (no false alarms);
each kind of damage, done behind the store's back, must be named.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner, Result

from mainspring import Runtime
from mainspring.cli import app
from mainspring.errors import CorruptStoreError
from mainspring.store._pg_url import parse_url as parse_pg_url
from mainspring.store.sqlite import SQLiteStore
from tests.cli_graphs import broken, support
from tests.conftest import drop_postgres_schema, require_postgres
from tests.test_sqlite_integrity import damage, events_pages, fill
from tests.test_sqlite_store import digest, side_files


def doctor(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["doctor", "--store", url, *args])


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'doctor.db'}"
        return
    base = require_postgres()
    schema = f"ms_t_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        anyio.run(drop_postgres_schema, base, schema)


async def real_runs(url: str) -> None:
    """Runs as the engine writes them: finished, parked, resumed, cancelled, failed, forked."""
    async with Runtime.open(url, recover="off") as rt:
        await rt.run(support, {"text": "hello"}, run_id="done")
        parked = await rt.start(support, {"text": "refund please", "amount": 5}, run_id="parked")
        await parked.wait()
        resumed = await rt.start(support, {"text": "refund", "amount": 9}, run_id="resumed")
        await resumed.wait()
        await (await rt.resume("resumed", True)).result()
        await (await rt.start(support, {"text": "refund it"}, run_id="cancelled")).wait()
        await rt.cancel("cancelled")
        await (await rt.start(broken, {"n": 1}, run_id="failed")).wait()
        await (await rt.fork("done", at=3, new_run_id="forked", effects="reuse")).wait()
        await (await rt.fork("done", new_run_id="forked-parked", start=False)).wait()


async def tamper(url: str, *statements: str) -> None:
    """Run SQL on the store's tables behind its back; {s} is the tables' schema prefix."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        try:
            for statement in statements:
                conn.execute(statement.format(s=""))
        finally:
            conn.close()
        return
    import asyncpg

    parsed = parse_pg_url(url, None)
    pg = await asyncpg.connect(parsed.dsn)
    try:
        for statement in statements:
            await pg.execute(statement.format(s=f'"{parsed.target.schema}".'))
    finally:
        await pg.close()


def test_journals_written_by_the_engine_are_healthy(url: str) -> None:
    anyio.run(real_runs, url)
    before = digest(Path(url[len("sqlite:///") :])) if url.startswith("sqlite") else None
    result = doctor(url)
    assert result.exit_code == 0, result.output
    assert "is healthy" in result.stdout and "of 7 runs" in result.stdout
    if before is not None:
        path = Path(url[len("sqlite:///") :])
        assert digest(path) == before and side_files(path) == []
        assert "integrity_check" in result.stdout
    report = json.loads(doctor(url, "--json").stdout)
    assert report["healthy"] is True and report["problems"] == [] and report["runs"] == 7


def test_each_journal_problem_is_named(url: str) -> None:
    anyio.run(real_runs, url)
    anyio.run(
        tamper,
        url,
        "DELETE FROM {s}events WHERE run_id = 'done' AND seq = 4",  # a gap
        "UPDATE {s}events SET kind = 'emitted' WHERE run_id = 'forked' AND seq = 1",
        "UPDATE {s}runs SET status = 'running' WHERE run_id = 'failed'",  # status vs last event
        "UPDATE {s}runs SET status = 'finished' WHERE run_id = 'parked'",
        "INSERT INTO {s}events (run_id, seq, kind, ts, data)"  # after the end
        " VALUES ('resumed', 99, 'emitted', 0, '{{}}')",
        "UPDATE {s}runs SET last_seq = 99 WHERE run_id = 'resumed'",
        "INSERT INTO {s}events (run_id, seq, kind, ts, data)"  # of no run
        " VALUES ('ghost', 1, 'run_started', 0, '{{}}')",
        "UPDATE {s}events SET kind = 'teleported' WHERE run_id = 'cancelled' AND seq = 2",
    )
    result = doctor(url)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    for fragment in (
        "run done: events numbered 1 to ",
        "run forked: the journal starts with emitted, not run_started",
        "run failed: status running, but its last event",
        "run parked: status finished, but its last event",
        "run resumed: events numbered",  # 99 after a gap
        "run resumed: status finished, but its last event (seq 99) is emitted",
        "come after its end at seq",  # resumed's finished event is no longer its last
        "run ghost: 1 event but no row in runs",
        "run cancelled: event 2 has unknown kind 'teleported'",
    ):
        assert any(fragment in line for line in lines), (fragment, result.stdout)
    assert lines[-1].startswith("✗ 9 problems in")
    assert len(json.loads(doctor(url, "--json").stdout)["problems"]) == 9


def test_events_after_the_end_are_named(url: str) -> None:
    anyio.run(real_runs, url)
    anyio.run(
        tamper,
        url,
        "INSERT INTO {s}events (run_id, seq, kind, ts, data) "
        "SELECT run_id, last_seq + 1, 'emitted', 0, '{{}}' FROM {s}runs WHERE run_id = 'done'",
        "UPDATE {s}runs SET last_seq = last_seq + 1 WHERE run_id = 'done'",
    )
    result = doctor(url)
    assert result.exit_code == 1
    assert "run done: event 10 comes after its end at seq 9" in result.stdout, result.stdout


def test_a_damaged_file_open_refuses_is_examined_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    anyio.run(fill, path, 60, 90)
    _, interior = events_pages(path)
    damage(path, interior[len(interior) // 2], 0, bytes(range(7, 71)))
    before = digest(path)

    async def open_it() -> None:
        await SQLiteStore(f"sqlite:///{path}").open()

    with pytest.raises(CorruptStoreError, match="mainspring doctor"):
        anyio.run(open_it)
    result = doctor(str(path))  # a .db path is a SQLite URL, as for every command
    assert result.exit_code == 1, result.output
    assert "✗ file: Page " in result.stdout
    assert "are in no b-tree: the page that pointed to them is damaged" in result.stdout
    assert digest(path) == before and side_files(path) == []


def test_a_store_being_written_is_read_through_its_log(tmp_path: Path) -> None:
    """With the store open elsewhere, the newest runs are in the -wal: doctor sees them."""
    path = tmp_path / "live.db"

    async def check_while_open() -> None:
        store = await fill(path, 3, 5, close=False)
        try:
            assert Path(f"{path}-wal").stat().st_size > 0
            result = await anyio.to_thread.run_sync(doctor, f"sqlite:///{path}")
            assert result.exit_code == 0, result.output
            assert "of 3 runs and 15 events" in result.stdout
        finally:
            await store.aclose()

    anyio.run(check_while_open)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: None, "no Mainspring store at"),
        (Path.touch, "it is an empty file"),
        (lambda p: p.write_text("notes\n" * 100), "not a SQLite file"),
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)"), "other tables (t)"),
    ],
)
def test_what_is_not_a_store_exits_3(
    tmp_path: Path, make: Callable[[Path], object], fragment: str
) -> None:
    path = tmp_path / "x.db"
    make(path)
    result = doctor(f"sqlite:///{path}")
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_an_empty_postgres_schema_or_a_memory_store_exits_3() -> None:
    base = require_postgres()
    result = doctor(f"{base}{'&' if '?' in base else '?'}schema=ms_t_{uuid.uuid4().hex[:12]}")
    assert result.exit_code == 3 and "no Mainspring store in PostgreSQL schema" in result.stderr
    assert doctor("memory://").exit_code == 3

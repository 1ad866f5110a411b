"""What only the SQLite store does: file refusal, migration, group commit, processes sharing a file.

The shared contract is in test_store_conformance.py; these tests cover the file
format and the writer thread.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from mainspring.errors import ConflictError, NotAStoreError, SchemaVersionError, StoreError
from mainspring.events import Emitted, Event, EventKind
from mainspring.store import Durability, RunRecord, RunStatus, store_from_url
from mainspring.store._sqlite_errors import translate
from mainspring.store._sqlite_schema import APPLICATION_ID, SCHEMA_VERSION
from mainspring.store.sqlite import SQLiteStore
from tests.journal_data import event
from tests.journal_data import event as journal_event

pytestmark = pytest.mark.anyio


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def side_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))


def evs(run_id: str, after: int, count: int, **data: Any) -> list[Event]:
    return [
        event(run_id, after + i, EventKind.EMITTED, time.time(), {"n": after + i, **data})
        for i in range(1, count + 1)
    ]


async def new_run(store: SQLiteStore, n_events: int = 0) -> str:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    now = time.time()
    await store.create_run(
        RunRecord(run_id, "g", None, RunStatus.RUNNING, now, now),
        evs(run_id, 0, n_events),
        Durability.SYNC,
    )
    return run_id


@pytest.fixture
async def sqlite_store(tmp_path: Path, anyio_backend: str) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(url_of(tmp_path / "store.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


# --- refusal, never modification ----------------------------------------------------------------


async def _assert_refused(path: Path, error: type[StoreError], *words: str) -> None:
    before, files_before = digest(path), side_files(path)
    store = SQLiteStore(url_of(path))
    with pytest.raises(error) as caught:
        await store.open()
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert digest(path) == before, "a refused file must be left byte for byte as it was"
    assert side_files(path) == files_before
    await store.aclose()  # closing a store that never opened is harmless


async def test_a_text_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 50)
    await _assert_refused(path, NotAStoreError, "not a SQLite file")


async def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ann')")
    conn.close()
    await _assert_refused(path, NotAStoreError, "other tables (users)")


async def test_a_database_of_another_application_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    await _assert_refused(path, NotAStoreError, "another application")


async def test_a_store_with_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    async with SQLiteStore(url_of(path)) as store:
        await new_run(store, 3)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    await _assert_refused(path, SchemaVersionError, "upgrade mainspring", f"{SCHEMA_VERSION + 1}")


async def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(NotAStoreError, match="not a regular file"):
        await SQLiteStore(url_of(tmp_path / "dir.db")).open()


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(StoreError, match=f"directory {missing} does not exist"):
        await SQLiteStore(url_of(missing / "store.db")).open()
    assert not missing.exists()


@pytest.mark.parametrize(
    "url", ["sqlite://store.db", "sqlite:///", "sqlite:///x.db?mode=ro", "sqlite:///:memory:"]
)
def test_bad_urls_are_explained(url: str) -> None:
    with pytest.raises(StoreError, match=r"sqlite|memory"):
        SQLiteStore(url)


# --- initialisation and migration ---------------------------------------------------------------


def _identity(path: Path) -> tuple[int, int, list[str]]:
    conn = sqlite3.connect(path)
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    finally:
        conn.close()
    return app_id, version, sorted(tables)


@pytest.mark.parametrize("existing", ["missing", "empty"])
async def test_a_new_or_empty_file_is_initialised(tmp_path: Path, existing: str) -> None:
    path = tmp_path / "fresh.db"
    if existing == "empty":
        path.touch()
    # An empty file is made a store only when asked (test_sqlite_integrity.py).
    async with SQLiteStore(url_of(path), create=existing == "empty") as store:
        run_id = await new_run(store, 2)
    assert _identity(path) == (
        APPLICATION_ID,
        SCHEMA_VERSION,
        ["anchors", "blob_refs", "blobs", "cursors", "events", "runs", "snapshots"],
    )
    async with SQLiteStore(url_of(path)) as again:  # reopening migrates nothing and keeps data
        assert len(await again.read(run_id)) == 2
    assert _identity(path)[:2] == (APPLICATION_ID, SCHEMA_VERSION)


async def test_a_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = store_from_url("sqlite:///sub.db")
    assert isinstance(store, SQLiteStore)
    async with store:
        await new_run(store)
    assert (tmp_path / "sub.db").exists()


async def test_wal_and_full_synchronous_are_in_force(sqlite_store: SQLiteStore) -> None:
    await new_run(sqlite_store)
    conn = sqlite3.connect(sqlite_store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    writer = sqlite_store._writer
    assert writer is not None
    await sqlite_store.flush()  # the writer thread is idle: its connection may be inspected
    assert writer._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


async def test_open_and_close_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    store = SQLiteStore(url_of(path))
    await store.open()
    await store.open()
    run_id = await new_run(store, 1)
    await store.aclose()
    await store.aclose()
    assert side_files(path) == [], "a closed store is one self-contained file"
    with pytest.raises(StoreError, match="not open"):
        await store.read(run_id)
    with pytest.raises(StoreError, match="not open"):
        await store.append(run_id, 1, evs(run_id, 1, 1))
    await store.open()  # and it opens again
    assert len(await store.read(run_id)) == 1
    await store.aclose()


# --- writes -------------------------------------------------------------------------------------


async def test_events_must_continue_the_numbering(sqlite_store: SQLiteStore) -> None:
    run_id = await new_run(sqlite_store, 1)
    with pytest.raises(StoreError, match="must be numbered 2, 3"):
        await sqlite_store.append(run_id, 1, evs(run_id, 2, 1))
    with pytest.raises(StoreError, match="belong to that run"):
        await sqlite_store.append(run_id, 1, evs("other", 1, 1))
    assert len(await sqlite_store.read(run_id)) == 1


async def test_a_failing_request_rolls_back_alone_in_its_group(tmp_path: Path) -> None:
    """A long batch window puts every append in one group: one fails, the rest commit."""
    path = tmp_path / "group.db"
    async with SQLiteStore(url_of(path), batch_window=0.2) as store:
        broken, stale = await new_run(store, 1), await new_run(store, 1)
        healthy = [await new_run(store, 1) for _ in range(6)]
        # Plant a row where `broken`'s next event must go, behind the store's back:
        # its append passes the sequence check, then hits the primary key.
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(
            "INSERT INTO events (run_id, seq, kind, ts, data) VALUES (?, 2, 'emitted', 0, x'7b7d')",
            (broken,),
        )
        conn.close()
        outcomes: dict[str, str] = {}
        writer = store._writer
        assert writer is not None
        statements: list[str] = []
        writer._conn.set_trace_callback(statements.append)

        async def append(run_id: str, expected: int) -> None:
            try:
                await store.append(
                    run_id, expected, evs(run_id, expected, 2), durability=Durability.BATCH
                )
                outcomes[run_id] = "ok"
            except ConflictError:
                outcomes[run_id] = "conflict"
            except StoreError as exc:
                outcomes[run_id] = f"error: {exc}"

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(append, broken, 1)
            tg.start_soon(append, stale, 0)
            for run_id in healthy:
                tg.start_soon(append, run_id, 1)
        assert time.monotonic() - started < 2
        writer._conn.set_trace_callback(None)
        # One group, one savepoint per request, two of them rolled back.
        assert statements.count("COMMIT") == 1
        assert statements.count("SAVEPOINT request") == 8
        assert statements.count("ROLLBACK TO request") == 2
        assert outcomes[stale] == "conflict"
        assert outcomes[broken].startswith("error: constraint violated")
        assert all(outcomes[run_id] == "ok" for run_id in healthy)
        got = await store.get_run(broken)
        assert got is not None and got.last_seq == 1, "the failed request's UPDATE was rolled back"
        for run_id in healthy:
            assert [e.seq for e in await store.read(run_id)] == [1, 2, 3]


@pytest.mark.parametrize("mode", [Durability.SYNC, Durability.BATCH, Durability.OFF])
async def test_concurrent_appends_share_commits(tmp_path: Path, mode: Durability) -> None:
    """Group commit: 200 concurrent appends take a few fsync'd commits, not 200."""
    async with SQLiteStore(url_of(tmp_path / "group.db")) as store:
        runs = [await new_run(store) for _ in range(200)]
        writer = store._writer
        assert writer is not None
        commits: list[str] = []  # the writer thread's statements, as SQLite traces them
        writer._conn.set_trace_callback(
            lambda sql: commits.append(sql) if sql == "COMMIT" else None
        )
        async with anyio.create_task_group() as tg:
            for run_id in runs:
                tg.start_soon(partial(store.append, run_id, 0, evs(run_id, 0, 2), durability=mode))
        await store.flush()
        writer._conn.set_trace_callback(None)
        assert 1 <= len(commits) <= 20
        for run_id in runs[::20]:
            assert len(await store.read(run_id)) == 2


async def test_a_cancelled_append_is_still_committed(sqlite_store: SQLiteStore) -> None:
    """Once queued, a write is not withdrawn: the caller's next append sees it landed."""
    run_id = await new_run(sqlite_store)
    with anyio.move_on_after(0) as scope:  # batch: queued to the writer (sync may commit inline)
        await sqlite_store.append(run_id, 0, evs(run_id, 0, 2), durability=Durability.BATCH)
    assert scope.cancelled_caught
    await sqlite_store.flush()
    with pytest.raises(ConflictError):
        await sqlite_store.append(run_id, 0, evs(run_id, 0, 2))
    assert [e.seq for e in await sqlite_store.read(run_id)] == [1, 2]


# --- durability "off": errors are kept, not lost --------------------------------------------------


async def test_off_writes_are_visible_to_reads_at_once(sqlite_store: SQLiteStore) -> None:
    run_id = await new_run(sqlite_store)
    for seq in range(10):
        await sqlite_store.append(run_id, seq, evs(run_id, seq, 1), durability=Durability.OFF)
    assert len(await sqlite_store.read(run_id)) == 10
    got = await sqlite_store.get_run(run_id)
    assert got is not None and got.last_seq == 10


async def test_an_off_write_error_surfaces_at_the_next_append_of_its_run(
    sqlite_store: SQLiteStore,
) -> None:
    run_id, other = await new_run(sqlite_store, 1), await new_run(sqlite_store)
    # A stale append in "off" mode is accepted: nobody waits for its conflict.
    await sqlite_store.append(run_id, 0, evs(run_id, 0, 1), durability=Durability.OFF)
    await sqlite_store.read(run_id)  # settles the run's queued writes, without raising
    await sqlite_store.append(other, 0, evs(other, 0, 1))  # another run is not affected
    with pytest.raises(ConflictError) as caught:
        await sqlite_store.append(run_id, 1, evs(run_id, 1, 1), durability=Durability.OFF)
    assert (caught.value.expected_seq, caught.value.actual_seq) == (0, 1)
    await sqlite_store.append(run_id, 1, evs(run_id, 1, 1))  # reported once, then the run goes on
    await sqlite_store.flush()
    assert len(await sqlite_store.read(run_id)) == 2


async def test_an_off_write_error_surfaces_at_flush_and_at_close(tmp_path: Path) -> None:
    store = SQLiteStore(url_of(tmp_path / "off.db"))
    await store.open()
    run_id = await new_run(store, 1)
    await store.append(run_id, 0, evs(run_id, 0, 1), durability=Durability.OFF)
    with pytest.raises(ConflictError):
        await store.flush()
    await store.flush()  # reported once
    await store.append(run_id, 5, evs(run_id, 5, 1), durability=Durability.OFF)
    with pytest.raises(ConflictError):
        await store.aclose()  # never lost, even if nobody flushed
    await store.aclose()


# --- errors say what to fix ---------------------------------------------------------------------


async def test_a_lock_held_past_the_busy_timeout_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with SQLiteStore(url_of(path), busy_timeout=0.1) as store:
        run_id = await new_run(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked by another connection") as caught:
                await store.append(run_id, 0, evs(run_id, 0, 1))
            assert "busy timeout (0.1 s)" in str(caught.value)
            assert len(await store.read(run_id)) == 0  # readers are not blocked by a writer
        finally:
            other.execute("ROLLBACK")
            other.close()
        await store.append(run_id, 0, evs(run_id, 0, 1))


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (13, "is full"),
        (8, "read-only"),
        (5, "locked"),
        (10, "I/O error"),
        (11, "corrupt"),
        (26, "not a SQLite"),
    ],
)
def test_driver_errors_are_translated(code: int, words: str) -> None:
    exc = sqlite3.OperationalError("driver message")
    exc.sqlite_errorcode = code
    translated = translate(exc, Path("/data/x.db"), "committing")
    assert isinstance(translated, StoreError)
    assert words in str(translated) and "/data/x.db" in str(translated)


# --- several stores on one file -----------------------------------------------------------------


async def test_two_stores_in_one_process_share_a_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SQLiteStore(url_of(path)) as one, SQLiteStore(url_of(path)) as two:
        run_id = await new_run(one)
        await two.append(run_id, 0, evs(run_id, 0, 1))
        with pytest.raises(ConflictError):
            await one.append(run_id, 0, evs(run_id, 0, 1))
        await one.append(run_id, 1, evs(run_id, 1, 1))
        assert [e.seq for e in await two.read(run_id)] == [1, 2]


ROUNDS = 15


def _race(url: str, run_id: str, name: str, barrier: Any, results: Any) -> None:
    """One process of the race: each round, read the run, then append at the seq it saw."""

    async def main() -> None:
        async with SQLiteStore(url) as store:
            for number in range(ROUNDS):
                barrier.wait()  # the previous round is over for both
                found = await store.get_run(run_id)
                assert found is not None
                barrier.wait()  # both have seen the same sequence number
                seq = found.last_seq
                event = emitted(run_id, seq + 1, {"by": name, "round": number})
                try:
                    await store.append(run_id, seq, [event])
                    results.put((number, name, "won"))
                except ConflictError:
                    results.put((number, name, "lost"))

    anyio.run(main)


async def test_two_processes_racing_on_one_run_never_fork(tmp_path: Path) -> None:
    url = url_of(tmp_path / "race.db")
    async with SQLiteStore(url) as store:
        run_id = await new_run(store)
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_race, args=(url, run_id, n, barrier, results)) for n in ("p1", "p2")
        ]
        for proc in procs:
            proc.start()
        outcomes = [
            await anyio.to_thread.run_sync(results.get, True, 60) for _ in range(2 * ROUNDS)
        ]
        for proc in procs:
            await anyio.to_thread.run_sync(proc.join, 30)
            assert proc.exitcode == 0
        winners = {}
        for number in range(ROUNDS):
            this_round = [o[1:] for o in outcomes if o[0] == number]
            assert sorted(result for _, result in this_round) == ["lost", "won"]
            winners[number] = next(name for name, result in this_round if result == "won")
        journal = await store.read(run_id)
        assert [e.seq for e in journal] == list(range(1, ROUNDS + 1))
        data = [e.data.data for e in journal if isinstance(e.data, Emitted)]
        assert [(d["round"], d["by"]) for d in data] == sorted(winners.items())


# --- size ---------------------------------------------------------------------------------------


async def test_a_long_run_takes_at_most_twice_its_payload(tmp_path: Path) -> None:
    """W5: 200 events of 1 KB payload each; the file after close, against the encoded payload."""
    path = tmp_path / "w5.db"
    payload = 0
    async with SQLiteStore(url_of(path)) as store:
        run_id = await new_run(store)
        for seq in range(200):
            data = {"message": os.urandom(500).hex()}  # 1 KB of text
            payload += len(orjson.dumps(data))
            step = journal_event(run_id, seq + 1, EventKind.STEP_FINISHED, time.time(), data)
            await store.append(run_id, seq, [step], durability=Durability.OFF)
    assert path.stat().st_size <= 2 * payload


def emitted(run_id: str, seq: int, value: Any) -> Event:
    return event(run_id, seq, EventKind.EMITTED, time.time(), value)

"""Durability "off" on SQLite: appends held per event-loop turn, merged per run, not fsync'd.

Real files, no mocks: what the writer did is read from SQLite's own trace of the
statements its connection ran, and what landed from the file.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import anyio
import pytest

from mainspring import END, START, EventKind, Graph, RunStatus, Runtime, append
from mainspring.errors import ConflictError, StoreError
from mainspring.events import Event
from mainspring.store import Durability, RunRecord
from mainspring.store.sqlite import SQLiteStore
from tests.journal_data import event

pytestmark = pytest.mark.anyio

OFF = Durability.OFF


def evs(run_id: str, after: int, count: int) -> list[Event]:
    return [
        event(run_id, after + i, EventKind.EMITTED, time.time(), {"n": after + i})
        for i in range(1, count + 1)
    ]


async def new_run(store: SQLiteStore, durability: Durability = Durability.SYNC) -> str:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    now = time.time()
    record = RunRecord(run_id, "g", None, RunStatus.RUNNING, now, now)
    await store.create_run(record, [], durability)
    return run_id


@pytest.fixture
async def store(tmp_path: Path, anyio_backend: str) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(f"sqlite:///{tmp_path / 'off.db'}") as opened:
        yield opened


class Trace:
    """The statements the store's write connection runs, as SQLite reports them."""

    def __init__(self, store: SQLiteStore) -> None:
        writer = store._writer
        assert writer is not None
        self.conn = writer._conn
        self.statements: list[str] = []

    def __enter__(self) -> list[str]:
        self.conn.set_trace_callback(self.statements.append)
        return self.statements

    def __exit__(self, *exc: object) -> None:
        self.conn.set_trace_callback(None)


def advances(statements: list[str]) -> int:
    """How many appends the writer made (one UPDATE of the run's row each)."""
    return sum(1 for sql in statements if sql.startswith("UPDATE runs SET last_seq"))


async def test_off_appends_of_a_turn_are_merged_per_run_and_keep_each_runs_order(
    store: SQLiteStore,
) -> None:
    runs = [await new_run(store) for _ in range(3)]
    with Trace(store) as statements:
        # One event-loop turn (nothing awaited), the runs' appends interleaved.
        for step in range(5):
            for run_id in runs:
                store.append_off(run_id, step * 2, evs(run_id, step * 2, 2))
        await store.flush()
    assert advances(statements) == 3, "one request per run, not one per append"
    assert statements.count("COMMIT") == 1
    for run_id in runs:
        assert [e.seq for e in await store.read(run_id)] == list(range(1, 11))
        got = await store.get_run(run_id)
        assert got is not None and got.last_seq == 10


async def test_off_appends_of_separate_turns_are_separate_requests(store: SQLiteStore) -> None:
    run_id = await new_run(store)
    with Trace(store) as statements:
        for step in range(3):
            await store.append(run_id, step, evs(run_id, step, 1), durability=OFF)
            await anyio.sleep(0)  # the turn ends: what it held is queued
        await store.flush()
    assert advances(statements) == 3
    assert [e.seq for e in await store.read(run_id)] == [1, 2, 3]


async def test_a_merged_append_keeps_the_last_status_and_error(store: SQLiteStore) -> None:
    run_id = await new_run(store)
    store.append_off(run_id, 0, evs(run_id, 0, 1), status=RunStatus.RUNNING)
    store.append_off(run_id, 1, evs(run_id, 1, 1))
    store.append_off(run_id, 2, evs(run_id, 2, 1), status=RunStatus.FAILED, error="boom")
    got = await store.get_run(run_id)  # waits for the run's queued writes
    assert got is not None
    assert (got.last_seq, got.status, got.error, got.owner) == (3, RunStatus.FAILED, "boom", None)


async def test_an_append_after_a_park_is_not_merged_into_it(store: SQLiteStore) -> None:
    run_id = await new_run(store)
    with Trace(store) as statements:
        store.append_off(run_id, 0, evs(run_id, 0, 1), status=RunStatus.INTERRUPTED)
        store.append_off(run_id, 1, evs(run_id, 1, 1), status=RunStatus.RUNNING)
        await store.flush()
    assert advances(statements) == 2, "a park frees the lease: what follows is written after it"
    got = await store.get_run(run_id)
    assert got is not None and (got.last_seq, got.status) == (2, RunStatus.RUNNING)


async def test_an_append_that_does_not_continue_the_held_one_fails_alone(
    store: SQLiteStore,
) -> None:
    run_id, other = await new_run(store), await new_run(store)
    store.append_off(run_id, 0, evs(run_id, 0, 2))
    store.append_off(other, 0, evs(other, 0, 1))
    store.append_off(run_id, 0, evs(run_id, 0, 1))  # stale: queued on its own, after the first
    store.append_off(other, 1, evs(other, 1, 1))
    with pytest.raises(ConflictError) as caught:
        await store.flush()
    assert (caught.value.run_id, caught.value.expected_seq, caught.value.actual_seq) == (
        run_id,
        0,
        2,
    )
    assert [e.seq for e in await store.read(run_id)] == [1, 2], "the first append landed"
    assert [e.seq for e in await store.read(other)] == [1, 2], "the other run is not affected"


async def test_a_failure_in_a_merged_append_is_reported_to_its_run_only(
    store: SQLiteStore,
) -> None:
    broken, healthy = await new_run(store), await new_run(store)
    # Plant a row where `broken`'s third event must go, behind the store's back.
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute(
        "INSERT INTO events (run_id, seq, kind, ts, data) VALUES (?, 3, 'emitted', 0, x'7b7d')",
        (broken,),
    )
    conn.close()
    for step in range(4):  # one turn: each run's four appends make one request
        store.append_off(broken, step, evs(broken, step, 1))
        store.append_off(healthy, step, evs(healthy, step, 1))
    await store.read(healthy)  # settles the writes, raises nothing
    await store.append(healthy, 4, evs(healthy, 4, 1))  # the other run goes on
    with pytest.raises(StoreError, match="constraint"):
        await store.append(broken, 4, evs(broken, 4, 1), durability=OFF)
    await store.flush()  # reported once, to its own run
    got = await store.get_run(broken)
    assert got is not None and got.last_seq == 0, "the whole merged append was rolled back"
    assert [e.seq for e in await store.read(healthy)] == [1, 2, 3, 4, 5]


async def test_any_other_write_goes_after_the_held_off_appends(store: SQLiteStore) -> None:
    run_id = await new_run(store)
    store.append_off(run_id, 0, evs(run_id, 0, 1))
    # In the same turn: a batch append (queued) and a sync one (inline) come after it.
    await store.append(run_id, 1, evs(run_id, 1, 1), durability=Durability.BATCH)
    store.append_off(run_id, 2, evs(run_id, 2, 1))
    await store.append(run_id, 3, evs(run_id, 3, 1), durability=Durability.SYNC)
    token = await store.claim(run_id, "me", 30)
    assert token is not None
    assert [e.seq for e in await store.read(run_id)] == [1, 2, 3, 4]


async def test_an_inline_commit_never_writes_a_held_append_before_an_older_one(
    tmp_path: Path,
) -> None:
    # A wide group-commit window: the writer thread holds run A's first append (taken
    # off the queue, not yet committed) while A's next one is held and another run's
    # sync append commits inline. The inline commit must not take A's second append
    # before its first.
    async with SQLiteStore(f"sqlite:///{tmp_path / 'w.db'}", batch_window=0.05) as wide:
        a, b = await new_run(wide), await new_run(wide)
        wide.append_off(a, 0, evs(a, 0, 1))
        await anyio.sleep(0)  # the turn ends: A1 is queued, the writer thread takes it
        wide.append_off(a, 1, evs(a, 1, 1))  # A2, held in this turn
        time.sleep(0.01)  # the writer thread gathers A1's group meanwhile
        await wide.append(b, 0, evs(b, 0, 1), durability=Durability.SYNC)
        await wide.flush()
        assert [e.seq for e in await wide.read(a)] == [1, 2]
        assert [e.seq for e in await wide.read(b)] == [1]


async def test_only_groups_of_off_writes_skip_the_fsync(store: SQLiteStore) -> None:
    def modes(statements: list[str]) -> list[str]:
        return [sql for sql in statements if sql.startswith("PRAGMA synchronous")]

    run_id = await new_run(store)
    with Trace(store) as statements:
        store.append_off(run_id, 0, evs(run_id, 0, 1))
        await store.flush()
    assert modes(statements) == ["PRAGMA synchronous = NORMAL"]
    assert statements.index("PRAGMA synchronous = NORMAL") < statements.index("COMMIT")
    with Trace(store) as statements:
        store.append_off(run_id, 1, evs(run_id, 1, 1))
        # Held, then written in the sync append's commit: fsync'd with it.
        await store.append(run_id, 2, evs(run_id, 2, 1), durability=Durability.SYNC)
        off_run = await new_run(store, OFF)  # an off run's creation is not fsync'd
        await store.append(run_id, 3, evs(run_id, 3, 1), durability=Durability.BATCH)
    assert modes(statements) == [
        "PRAGMA synchronous = FULL",
        "PRAGMA synchronous = NORMAL",
        "PRAGMA synchronous = FULL",
    ]
    assert await store.get_run(off_run) is not None
    assert len(await store.read(run_id)) == 4


class Count(TypedDict, total=False):
    n: int
    log: Annotated[list[int], append]


def counting(steps: int, pause: bool = False) -> Any:
    async def tick(state: Count) -> Count:
        if pause:
            await anyio.sleep(0)  # other runs' steps interleave with this one's
        return {"n": state.get("n", 0) + 1, "log": [state.get("n", 0)]}

    g = Graph(Count, name=f"count{steps}{'p' if pause else ''}")
    g.node("tick", tick)
    g.edge(START, "tick")
    g.branch("tick", lambda s: "tick" if s["n"] < steps else END, ["tick", END])
    return g.compile()


@pytest.mark.parametrize("pause", [False, True])
async def test_concurrent_off_runs_leave_whole_journals_in_order(
    tmp_path: Path, pause: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    app = counting(12, pause)
    async with Runtime.open(url) as rt:
        handles = [await rt.start(app, {}, durability="off") for _ in range(30)]
        results = [await h.result() for h in handles]
        assert all(r["log"] == list(range(12)) for r in results)
    async with Runtime.open(url) as rt:  # what the file holds, after a clean close
        for handle in handles:
            record = await rt.get_run(handle.run_id)
            assert record.status is RunStatus.FINISHED
            events = await rt.events(handle.run_id)
            assert [e.seq for e in events] == list(range(1, record.last_seq + 1))
            assert events[-1].kind is EventKind.FINISHED


async def test_an_off_run_parks_and_resumes(tmp_path: Path) -> None:
    async def ask(state: Count, ctx: Any) -> Count:
        return {"n": int(await ctx.interrupt("more?"))}

    g = Graph(Count, name="ask")
    g.node("ask", ask)
    g.edge(START, "ask")
    g.edge("ask", END)
    app = g.compile()
    async with Runtime.open(f"sqlite:///{tmp_path / 'park.db'}") as rt:
        handle = await rt.start(app, {}, durability="off")
        assert (await handle.wait()).status is RunStatus.INTERRUPTED
        record = await rt.get_run(handle.run_id)
        assert (record.status, record.owner) == (RunStatus.INTERRUPTED, None)
        resumed = await rt.resume(handle.run_id, 7)
        assert (await resumed.result())["n"] == 7
        events = await rt.events(handle.run_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))

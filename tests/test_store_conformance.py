"""The Store contract, checked on every backend (memory, SQLite, PostgreSQL).

Written against the protocols in ``mainspring/store/protocols.py`` only: a backend
passes if and only if it honours that contract. ``conftest.store`` gives each
test a fresh, open store of each backend; each test says what it needs with
``needs(...)``: the protocols it uses (Journal, RunIndex and Leases are required
of every store; cursors are checked in test_store_cursors.py) and, for the last
section, the capabilities a store declares (``StoreCapabilities``): a test of
one runs where the backend declares it and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from datetime import datetime
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainspring.errors import ConflictError, LeaseLostError, RunNotFoundError, SerializationError
from mainspring.events import Emitted, Event, EventKind
from mainspring.store import (
    AcceptsOffNow,
    AppendsNow,
    Durability,
    Journal,
    Leases,
    ObservesCommits,
    RunIndex,
    RunQuery,
    RunRecord,
    RunStatus,
    Snapshot,
    Store,
    StoreCapabilities,
    ThreadInfo,
    appends_now,
    store_from_url,
)
from tests.conftest import needs
from tests.journal_data import event

pytestmark = pytest.mark.anyio

BASE = 1_700_000_000.0
HOST = socket.gethostname()


def new_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def record(
    run_id: str,
    *,
    graph: str = "g",
    thread: str | None = None,
    status: RunStatus = RunStatus.RUNNING,
    created_at: float = BASE,
    parent_run_id: str | None = None,
    durability: Durability = Durability.SYNC,
    metadata: dict[str, Any] | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        graph=graph,
        thread=thread,
        status=status,
        created_at=created_at,
        updated_at=created_at,
        parent_run_id=parent_run_id,
        durability=durability,
        metadata=metadata or {},
    )


def events(
    run_id: str,
    after: int,
    count: int,
    *,
    kind: EventKind = EventKind.EMITTED,
    ts: float | None = None,
    data: dict[str, Any] | None = None,
) -> list[Event]:
    """``count`` events numbered ``after + 1`` onward."""
    return [
        event(
            run_id,
            after + i,
            kind,
            BASE + after + i if ts is None else ts,
            {"n": after + i} if data is None else data,
        )
        for i in range(1, count + 1)
    ]


def owner(token: str, pid: int | None = None) -> str:
    """An owner id on this host; a live process (ours) unless ``pid`` says otherwise."""
    return f"{HOST}:{os.getpid() if pid is None else pid}:{token}"


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # exited and reaped: no process has this pid now
    return proc.pid


async def make_run(store: Store, n_events: int = 0, **fields: Any) -> str:
    run_id = fields.pop("run_id", None) or new_id()
    result = await store.create_run(
        record(run_id, **fields), events(run_id, 0, n_events), Durability.SYNC
    )
    assert result.created
    return run_id


# --- create_run ---------------------------------------------------------------------------------


@needs(Journal, RunIndex)
async def test_create_run_stores_record_and_first_events(store: Store) -> None:
    run_id = new_id()
    first = events(run_id, 0, 2, kind=EventKind.RUN_STARTED)
    result = await store.create_run(
        record(run_id, thread="t", metadata={"user": "ann", "tags": ["a", "b"]}),
        first,
        Durability.SYNC,
    )
    assert result.created
    assert result.record.last_seq == 2
    assert result.record.updated_at == first[-1].ts
    assert await store.get_run(run_id) == result.record
    assert await store.read(run_id) == first


@needs(Journal, RunIndex)
async def test_create_run_is_idempotent(store: Store) -> None:
    run_id = new_id()
    original = await store.create_run(
        record(run_id, graph="first"), events(run_id, 0, 2), Durability.SYNC
    )
    again = await store.create_run(
        record(run_id, graph="second", thread="other"),
        events(run_id, 0, 3, data={"x": "new"}),
        Durability.SYNC,
    )
    assert not again.created
    assert again.record == original.record
    assert await store.read(run_id) == events(run_id, 0, 2)
    assert await store.get_run(run_id) == original.record


@needs(Journal, RunIndex)
async def test_run_record_fields_round_trip(store: Store) -> None:
    parent = await make_run(store)
    run_id = new_id()
    metadata = {"nested": {"list": [1, 2.5, None, True], "text": "héllo ✓"}, "n": 3}
    await store.create_run(
        record(
            run_id,
            graph="support",
            thread="customer-42",
            status=RunStatus.INTERRUPTED,
            created_at=BASE + 5.25,
            parent_run_id=parent,
            durability=Durability.BATCH,
            metadata=metadata,
        ),
        [],
        Durability.SYNC,
    )
    got = await store.get_run(run_id)
    assert got is not None
    assert (got.graph, got.thread, got.status, got.parent_run_id) == (
        "support",
        "customer-42",
        RunStatus.INTERRUPTED,
        parent,
    )
    assert (got.created_at, got.updated_at, got.last_seq) == (BASE + 5.25, BASE + 5.25, 0)
    assert got.durability is Durability.BATCH
    assert (got.owner, got.lease_until, got.fence, got.error) == (None, None, 0, None)
    assert got.metadata == metadata


@needs(Journal, RunIndex, Leases)
async def test_unknown_run_reads_as_missing(store: Store) -> None:
    assert await store.get_run("no-such-run") is None
    assert await store.read("no-such-run") == []
    assert await store.load_snapshot("no-such-run") is None
    with pytest.raises(RunNotFoundError):
        await store.append("no-such-run", 0, events("no-such-run", 0, 1))
    with pytest.raises(RunNotFoundError):
        await store.claim("no-such-run", owner("a"), 10)


# --- append and read ----------------------------------------------------------------------------


@needs(Journal, RunIndex)
async def test_append_and_read_round_trip(store: Store) -> None:
    run_id = await make_run(store, 1)
    await store.append(run_id, 1, events(run_id, 1, 3, kind=EventKind.STEP_FINISHED))
    await store.append(run_id, 4, events(run_id, 4, 2))
    everything = (
        events(run_id, 0, 1)
        + events(run_id, 1, 3, kind=EventKind.STEP_FINISHED)
        + events(run_id, 4, 2)
    )
    got = await store.read(run_id)
    assert got == everything
    assert [e.seq for e in got] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(e.kind, EventKind) for e in got)
    assert await store.read(run_id, after=2) == everything[2:]
    assert await store.read(run_id, until=3) == everything[:3]
    assert await store.read(run_id, after=2, until=4) == everything[2:4]
    assert await store.read(run_id, after=6) == []
    assert await store.read(run_id, after=4, until=2) == []
    found = await store.get_run(run_id)
    assert found is not None and found.last_seq == 6 and found.updated_at == everything[-1].ts


@needs(Journal)
async def test_event_data_round_trips_as_json(store: Store) -> None:
    run_id = await make_run(store)
    data: dict[str, Any] = {
        "nested": {"a": {"b": {"c": [1, [2, [3, {}]]]}}, "empty": [], "none": None},
        "unicode": 'ünïcødé ✓ 中文 🚀 "quoted" back\\slash\nnewline\ttab',
        "floats": [0.1, 2.5, -1e-7, 1e300, 3.141592653589793],
        "ints": [0, -17, 2**53],
        "bools": [True, False],
        "none": None,
        "": "empty key",
    }
    await store.append(run_id, 0, [event(run_id, 1, EventKind.EMITTED, BASE, data)])
    (got,) = await store.read(run_id)
    assert isinstance(got.data, Emitted) and got.data.data == data
    assert got == event(run_id, 1, EventKind.EMITTED, BASE, data)


@needs(Journal, RunIndex)
async def test_conflicting_append_raises_and_writes_nothing(store: Store) -> None:
    run_id = await make_run(store, 2)
    before = await store.get_run(run_id)
    before_events = await store.read(run_id)
    for stale in (0, 1, 3, 10):
        with pytest.raises(ConflictError) as caught:
            await store.append(
                run_id, stale, events(run_id, stale, 2), status=RunStatus.FAILED, error="forked"
            )
        assert (caught.value.run_id, caught.value.expected_seq, caught.value.actual_seq) == (
            run_id,
            stale,
            2,
        )
    assert await store.get_run(run_id) == before
    assert await store.read(run_id) == before_events


@needs(Journal, RunIndex)
async def test_append_updates_status_and_error(store: Store) -> None:
    run_id = await make_run(store, 1)
    await store.append(run_id, 1, events(run_id, 1, 1), status=RunStatus.INTERRUPTED)
    got = await store.get_run(run_id)
    assert got is not None and (got.status, got.error, got.last_seq) == (
        RunStatus.INTERRUPTED,
        None,
        2,
    )
    # No status: the status stays; an append without events may still change it.
    await store.append(run_id, 2, events(run_id, 2, 1))
    got = await store.get_run(run_id)
    assert got is not None and got.status is RunStatus.INTERRUPTED and got.last_seq == 3
    await store.append(run_id, 3, [], status=RunStatus.FAILED, error="boom")
    got = await store.get_run(run_id)
    assert got is not None and (got.status, got.error, got.last_seq) == (
        RunStatus.FAILED,
        "boom",
        3,
    )
    assert len(await store.read(run_id)) == 3


@needs(Journal, RunIndex)
async def test_concurrent_appends_to_different_runs_all_land(store: Store) -> None:
    modes = list(Durability)
    runs = [await make_run(store) for _ in range(24)]

    async def writer(i: int, run_id: str) -> None:
        for seq in range(5):
            await store.append(
                run_id, seq, events(run_id, seq, 1), durability=modes[i % len(modes)]
            )

    async with anyio.create_task_group() as tg:
        for i, run_id in enumerate(runs):
            tg.start_soon(writer, i, run_id)
    await store.flush()
    for run_id in runs:
        assert await store.read(run_id) == events(run_id, 0, 5)
        got = await store.get_run(run_id)
        assert got is not None and got.last_seq == 5


@needs(Journal)
async def test_concurrent_appends_with_the_same_expected_seq_have_one_winner(store: Store) -> None:
    run_id = await make_run(store, 1)
    outcomes: list[str] = []

    async def contender(i: int) -> None:
        try:
            await store.append(run_id, 1, events(run_id, 1, 2, data={"writer": i}))
            outcomes.append(f"won:{i}")
        except ConflictError:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        for i in range(16):
            tg.start_soon(contender, i)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("conflict") == 15
    winner = int(winners[0].split(":")[1])
    assert await store.read(run_id) == events(run_id, 0, 1) + events(
        run_id, 1, 2, data={"writer": winner}
    )


@needs(Journal, RunIndex)
@pytest.mark.parametrize("mode", list(Durability))
async def test_every_durability_mode_lands(store: Store, mode: Durability) -> None:
    run_id = new_id()
    await store.create_run(record(run_id, durability=mode), events(run_id, 0, 1), mode)
    last = 1
    for count in (2, 0, 1, 3):
        await store.append(run_id, last, events(run_id, last, count), durability=mode)
        last += count
    await store.append(run_id, last, [], status=RunStatus.FINISHED, durability=mode)
    await store.flush()
    got = await store.get_run(run_id)
    assert got is not None
    assert (got.durability, got.last_seq, got.status) == (mode, 7, RunStatus.FINISHED)
    assert await store.read(run_id) == events(run_id, 0, 7)


@needs(Journal)
async def test_flush_with_nothing_pending_returns(store: Store) -> None:
    await store.flush()
    run_id = await make_run(store)
    await store.append(run_id, 0, events(run_id, 0, 3), durability=Durability.OFF)
    await store.flush()
    assert len(await store.read(run_id)) == 3
    await store.flush()


# --- queries ------------------------------------------------------------------------------------


async def _five_runs(store: Store) -> list[str]:
    ids = [f"r{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    specs: list[dict[str, Any]] = [
        {"graph": "a", "thread": "t1", "status": RunStatus.RUNNING},
        {"graph": "b", "thread": "t1", "status": RunStatus.FINISHED},
        {"graph": "a", "thread": "t2", "status": RunStatus.FAILED, "parent_run_id": ids[0]},
        {"graph": "a", "thread": None, "status": RunStatus.INTERRUPTED, "parent_run_id": ids[0]},
        {"graph": "b", "thread": "t2", "status": RunStatus.RUNNING},
    ]
    for i, (run_id, spec) in enumerate(zip(ids, specs, strict=True)):
        await store.create_run(record(run_id, created_at=BASE + i, **spec), [], Durability.SYNC)
    return ids


@needs(Journal, RunIndex)
async def test_list_runs_filters_and_orders_newest_first(store: Store) -> None:
    r = await _five_runs(store)

    async def ids(**query: Any) -> list[str]:
        return [rec.run_id for rec in await store.list_runs(RunQuery(**query))]

    assert [rec.run_id for rec in await store.list_runs()] == [r[4], r[3], r[2], r[1], r[0]]
    assert await ids(status=[RunStatus.RUNNING]) == [r[4], r[0]]
    assert await ids(status=[RunStatus.FINISHED, RunStatus.FAILED]) == [r[2], r[1]]
    assert await ids(status=[]) == []
    assert await ids(graph="a") == [r[3], r[2], r[0]]
    assert await ids(thread="t1") == [r[1], r[0]]
    assert await ids(parent_run_id=r[0]) == [r[3], r[2]]
    assert await ids(created_after=BASE + 1) == [r[4], r[3], r[2]]
    assert await ids(created_before=BASE + 3) == [r[2], r[1], r[0]]
    assert await ids(created_after=BASE, created_before=BASE + 4) == [r[3], r[2], r[1]]
    assert await ids(graph="a", status=[RunStatus.RUNNING]) == [r[0]]
    assert await ids(graph="nope") == []
    assert await ids(limit=2) == [r[4], r[3]]
    assert await ids(limit=2, offset=2) == [r[2], r[1]]
    assert await ids(offset=4) == [r[0]]
    full = await store.list_runs(RunQuery(thread="t2"))
    assert full == [await store.get_run(r[4]), await store.get_run(r[2])]


@needs(Journal, RunIndex)
async def test_list_threads_reports_latest_run_per_thread(store: Store) -> None:
    r = await _five_runs(store)
    assert await store.list_threads() == [
        ThreadInfo("t2", 2, r[4], RunStatus.RUNNING, BASE + 4),
        ThreadInfo("t1", 2, r[1], RunStatus.FINISHED, BASE + 1),
    ]
    # Activity on a thread's latest run moves the thread to the front.
    await store.append(r[1], 0, events(r[1], 0, 1, ts=BASE + 10))
    threads = await store.list_threads()
    assert [(t.thread, t.updated_at) for t in threads] == [("t1", BASE + 10), ("t2", BASE + 4)]
    assert [t.thread for t in await store.list_threads(limit=1)] == ["t1"]


# --- snapshots ----------------------------------------------------------------------------------


@needs(Journal)
async def test_snapshots_keep_the_latest(store: Store) -> None:
    run_id = await make_run(store, 8)
    assert await store.load_snapshot(run_id) is None
    first = Snapshot(run_id, 3, {"state": {"a": 1}, "list": [1, 2]})
    await store.save_snapshot(first)
    assert await store.load_snapshot(run_id) == first
    assert await store.load_snapshot(run_id, at_most=3) == first
    assert await store.load_snapshot(run_id, at_most=2) is None
    latest = Snapshot(run_id, 7, {"state": {"a": 2}})
    await store.save_snapshot(latest)
    assert await store.load_snapshot(run_id) == latest
    assert await store.load_snapshot(run_id, at_most=7) == latest
    older = await store.load_snapshot(run_id, at_most=5)
    assert older is None or older == first  # older snapshots may be dropped
    other = await make_run(store)
    assert await store.load_snapshot(other) is None


# --- leases -------------------------------------------------------------------------------------


@needs(Journal, RunIndex, Leases)
async def test_claim_renew_release_and_fencing(store: Store) -> None:
    run_id = await make_run(store)
    a, b = owner("a"), owner("b")
    first = await store.claim(run_id, a, 30)
    assert first is not None and first >= 1
    got = await store.get_run(run_id)
    assert got is not None and (got.owner, got.fence) == (a, first)
    assert got.lease_until is not None and got.lease_until > time.time() + 20
    assert await store.claim(run_id, b, 30) is None  # a live owner holds it
    assert await store.claim(run_id, a, 30) == first  # re-claim by the holder renews, same token
    await store.release(run_id, b)  # not b's to release
    got = await store.get_run(run_id)
    assert got is not None and got.owner == a
    await store.release(run_id, a)
    got = await store.get_run(run_id)
    assert got is not None and (got.owner, got.lease_until) == (None, None)
    second = await store.claim(run_id, b, 30)
    assert second is not None and second > first
    await store.release(run_id, b)
    third = await store.claim(run_id, a, 30)
    assert third is not None and third > second


@needs(Journal, RunIndex, Leases)
@pytest.mark.parametrize("status", [RunStatus.INTERRUPTED, RunStatus.FINISHED, RunStatus.FAILED])
async def test_parking_or_ending_a_run_frees_its_lease(store: Store, status: RunStatus) -> None:
    run_id = await make_run(store, 1)
    a = owner("a")
    token = await store.claim(run_id, a, 3600)
    assert token is not None
    await store.append(run_id, 1, events(run_id, 1, 1), status=RunStatus.RUNNING)
    got = await store.get_run(run_id)
    assert got is not None and got.owner == a, "a running append keeps the lease"
    await store.append(run_id, 2, events(run_id, 2, 1), status=status)
    got = await store.get_run(run_id)
    assert got is not None and (got.owner, got.lease_until) == (None, None)
    assert got.status is status
    await store.renew(a, 3600)
    assert await store.claim(run_id, owner("b"), 30) is not None, "anyone may take it over now"


async def _claim_once_expired(store: Store, run_id: str, claimant: str, ttl: float) -> int | None:
    """Claim until it succeeds, for up to three ttls: a store may judge expiry by watching
    the lease go unrenewed for its ttl (SQLite), so the first look may not take it."""
    deadline = time.monotonic() + 3 * ttl + 0.5
    while True:
        token = await store.claim(run_id, claimant, 30)
        if token is not None or time.monotonic() > deadline:
            return token
        await anyio.sleep(ttl / 4)


@needs(Journal, RunIndex, Leases)
async def test_expired_lease_is_taken_over_and_renew_extends_all_leases(store: Store) -> None:
    short, renewed_1, renewed_2 = [await make_run(store) for _ in range(3)]
    a, b = owner("a"), owner("b")
    token = await store.claim(short, a, 0.2)
    assert token is not None
    assert await store.claim(renewed_1, a, 0.2) is not None
    assert await store.claim(renewed_2, a, 0.2) is not None
    await store.renew(a, 30)
    # Renew is one heartbeat for every lease of a, including `short`: give that one back
    # to a short lease by claiming it again with a tiny ttl.
    assert await store.claim(short, a, 0.2) == token
    await anyio.sleep(0.25)
    taken = await _claim_once_expired(store, short, b, 0.2)
    assert taken is not None and taken > token
    assert await store.claim(renewed_1, b, 30) is None
    assert await store.claim(renewed_2, b, 30) is None
    got = await store.get_run(renewed_1)
    assert got is not None and got.owner == a and (got.lease_until or 0) > time.time() + 20


@needs(Journal, Leases)
async def test_a_lease_kept_renewed_is_never_taken_whatever_the_clocks(store: Store) -> None:
    """Expiry must not depend on the claimant's wall clock: one running 100 s ahead must
    not take a lease its holder keeps renewing (item 7 of issue 9)."""
    run_id = await make_run(store)
    a, b = owner("a"), owner("b")
    assert await store.claim(run_id, a, 0.3) is not None
    real = time.time
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        await store.renew(a, 0.3)  # a healthy holder's heartbeat, every ttl / 3
        with pytest.MonkeyPatch.context() as ahead:  # the claimant's clock: 100 s ahead
            ahead.setattr(time, "time", lambda: real() + 100)
            assert await store.claim(run_id, b, 30) is None, "taken from a live holder"
            assert run_id not in [r.run_id for r in await store.orphaned_runs(b)]
        await anyio.sleep(0.1)


@needs(Journal, Leases)
async def test_reclaim_with_the_token_still_held_keeps_it(store: Store) -> None:
    run_id = await make_run(store, 1)
    a, b = owner("a"), owner("b")
    token = await store.claim(run_id, a, 30)
    assert token is not None
    await store.append(run_id, 1, events(run_id, 1, 1), status=RunStatus.INTERRUPTED)
    # Parked: the lease is free, nobody took it: a's token still holds, appends with it too.
    assert await store.claim(run_id, a, 30, fence=token) == token
    await store.append(run_id, 2, events(run_id, 2, 1), status=RunStatus.RUNNING, fence=token)
    await store.release(run_id, a)
    other = await store.claim(run_id, b, 30)
    assert other is not None and other > token
    await store.release(run_id, b)
    # Someone held it since: taking it back gives a new token, never the old one.
    again = await store.claim(run_id, a, 30, fence=token)
    assert again is not None and again > other


@needs(Journal, RunIndex, Leases)
async def test_an_append_with_a_stale_token_is_refused(store: Store) -> None:
    run_id = await make_run(store, 1)
    a, b = owner("a"), owner("b")
    old = await store.claim(run_id, a, 30)
    assert old is not None
    await store.append(run_id, 1, events(run_id, 1, 1), fence=old)
    await store.release(run_id, a)
    new = await store.claim(run_id, b, 30)
    assert new is not None and new > old
    for durability in Durability:
        with pytest.raises(LeaseLostError, match="was taken over") as caught:
            await store.append(run_id, 2, events(run_id, 2, 1), fence=old, durability=durability)
            await store.flush()
        assert (caught.value.fence, caught.value.current) == (old, new)
    got = await store.get_run(run_id)
    assert got is not None and got.last_seq == 2, "nothing of the stale writer landed"
    await store.append(run_id, 2, events(run_id, 2, 1), fence=new)
    assert [e.seq for e in await store.read(run_id)] == [1, 2, 3]


@needs(Journal, RunIndex, Leases)
async def test_lease_of_a_dead_local_process_is_taken_over_at_once(store: Store) -> None:
    run_id = await make_run(store)
    dead = owner("crashed", pid=dead_pid())
    token = await store.claim(run_id, dead, 3600)
    assert token is not None
    taken = await store.claim(run_id, owner("alive"), 30)
    assert taken is not None and taken > token
    got = await store.get_run(run_id)
    assert got is not None and got.owner == owner("alive") and got.fence == taken


@needs(Journal, RunIndex, Leases)
async def test_orphaned_runs(store: Store) -> None:
    me, other = owner("me"), owner("other")
    gone = owner("gone", pid=dead_pid())
    no_owner = await make_run(store, created_at=BASE + 1)
    held = await make_run(store, created_at=BASE + 2)
    expired = await make_run(store, created_at=BASE + 3)
    dead_owned = await make_run(store, created_at=BASE + 4)
    mine_expired = await make_run(store, created_at=BASE + 5)
    # Only running runs are orphans: finished and parked ones wait for nobody.
    await make_run(store, created_at=BASE + 6, status=RunStatus.FINISHED)
    await make_run(store, created_at=BASE + 7, status=RunStatus.INTERRUPTED)
    assert await store.claim(held, other, 60) is not None
    assert await store.claim(expired, other, 0.1) is not None
    assert await store.claim(dead_owned, gone, 3600) is not None
    assert await store.claim(mine_expired, me, 0.1) is not None
    await anyio.sleep(0.25)
    await store.orphaned_runs(me)  # a store that watches leases expire has now looked once
    await store.orphaned_runs(other)
    await anyio.sleep(0.15)
    orphans = await store.orphaned_runs(me)
    assert [r.run_id for r in orphans] == [no_owner, expired, dead_owned]
    assert orphans[1] == await store.get_run(expired)
    assert [r.run_id for r in await store.orphaned_runs(me, limit=2)] == [no_owner, expired]
    assert no_owner in [r.run_id for r in await store.orphaned_runs(other)]
    assert mine_expired in [r.run_id for r in await store.orphaned_runs(other)]
    # Pages by (created_at, run_id): the next page starts after the last run of this one.
    first = await store.orphaned_runs(me, limit=2)
    rest = await store.orphaned_runs(me, after=(first[-1].created_at, first[-1].run_id))
    assert [r.run_id for r in first + rest] == [no_owner, expired, dead_owned]


# --- properties of the journal ------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8
)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != 0 or str(f) == "0.0")
    | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=6,
)
_fixture_settings = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@needs(Journal, RunIndex)
@_fixture_settings
@given(
    batches=st.lists(st.lists(_json, max_size=4), max_size=8),
    mode=st.sampled_from(list(Durability)),
    cut=st.integers(min_value=0, max_value=40),
)
async def test_journal_is_the_concatenation_of_appends(
    store: Store, batches: list[list[Any]], mode: Durability, cut: int
) -> None:
    run_id = await make_run(store)
    expected: list[Event] = []
    for batch in batches:
        seq = len(expected)
        new = [
            event(run_id, seq + i, EventKind.EMITTED, BASE + seq + i, {"value": value})
            for i, value in enumerate(batch, start=1)
        ]
        await store.append(run_id, seq, new, durability=mode)
        expected += new
    await store.flush()
    got = await store.read(run_id)
    assert [e.seq for e in got] == list(range(1, len(expected) + 1))
    assert got == expected
    assert await store.read(run_id, after=cut) == expected[cut:]
    assert await store.read(run_id, until=cut) == expected[:cut]
    found = await store.get_run(run_id)
    assert found is not None and found.last_seq == len(expected)


@needs(Journal, RunIndex)
@_fixture_settings
@given(
    rounds=st.lists(
        st.dictionaries(st.integers(0, 3), st.integers(1, 3), min_size=1, max_size=4),
        min_size=1,
        max_size=6,
    )
)
async def test_conflicting_appends_never_fork_or_leave_gaps(
    store: Store, rounds: list[dict[int, int]]
) -> None:
    """Writers with possibly stale views race; each round's contenders append concurrently.

    Exactly one contender holding the current sequence number wins each round,
    stale ones always conflict, and the journal is exactly the winners' events.
    """
    run_id = await make_run(store)
    known = dict.fromkeys(range(4), 0)  # each writer's view of last_seq
    model: list[Event] = []
    for number, contenders in enumerate(rounds):
        fresh = [w for w in contenders if known[w] == len(model)]
        won: list[tuple[int, list[Event]]] = []

        async def contend(
            writer: int,
            count: int,
            round_no: int = number,
            won: list[tuple[int, list[Event]]] = won,
        ) -> None:
            seq = known[writer]
            batch = events(run_id, seq, count, data={"writer": writer, "round": round_no})
            try:
                await store.append(run_id, seq, batch)
            except ConflictError:
                got = await store.get_run(run_id)
                assert got is not None
                known[writer] = got.last_seq  # refresh the stale view, as a real writer would
            else:
                won.append((writer, batch))
                known[writer] = seq + count

        async with anyio.create_task_group() as tg:
            for writer, count in contenders.items():
                tg.start_soon(contend, writer, count)
        assert len(won) == (1 if fresh else 0)
        assert all(writer in fresh for writer, _ in won)
        for _, batch in won:
            model += batch
        got = await store.get_run(run_id)
        assert got is not None and got.last_seq == len(model)
    journal = await store.read(run_id)
    assert [e.seq for e in journal] == list(range(1, len(model) + 1))
    assert journal == model


# --- declared capabilities ----------------------------------------------------------------------


@needs(Journal, RunIndex, Leases)
async def test_every_store_declares_its_capabilities(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(store.capabilities, StoreCapabilities)
    # append_now is offered exactly when it is declared.
    assert appends_now(store) == isinstance(store, AppendsNow)


@needs(Journal, RunIndex, Leases, durable=True)
async def test_everything_survives_close_and_reopen(store: Store) -> None:
    run_id = await make_run(store, 2, thread="t", metadata={"k": ["v"]})
    await store.append(run_id, 2, events(run_id, 2, 3), status=RunStatus.INTERRUPTED, error="why")
    await store.append(run_id, 5, events(run_id, 5, 1), durability=Durability.OFF)
    await store.save_snapshot(Snapshot(run_id, 4, {"folded": True}))
    token = await store.claim(run_id, owner("a"), 60)
    before = await store.get_run(run_id)
    journal = await store.read(run_id)
    assert len(journal) == 6
    await store.aclose()

    reopened = store_from_url(store.url)
    await reopened.open()
    try:
        assert await reopened.get_run(run_id) == before
        assert await reopened.read(run_id) == journal
        assert await reopened.load_snapshot(run_id) == Snapshot(run_id, 4, {"folded": True})
        assert await reopened.list_runs() == [before]
        assert await reopened.list_threads() == [
            ThreadInfo("t", 1, run_id, RunStatus.INTERRUPTED, journal[-1].ts)
        ]
        assert await reopened.claim(run_id, owner("a"), 60) == token
        with pytest.raises(ConflictError):
            await reopened.append(run_id, 5, events(run_id, 5, 1))
        await reopened.append(run_id, 6, events(run_id, 6, 1))
        assert len(await reopened.read(run_id)) == 7
    finally:
        await reopened.aclose()


@needs(Journal, RunIndex, Leases, shared_between_processes=True)
async def test_stores_opened_on_one_url_share_journals_and_leases(store: Store) -> None:
    other = store_from_url(store.url)
    await other.open()
    try:
        run_id = await make_run(store)
        await other.append(run_id, 0, events(run_id, 0, 1))
        with pytest.raises(ConflictError):
            await store.append(run_id, 0, events(run_id, 0, 1))
        await store.append(run_id, 1, events(run_id, 1, 1))
        assert await other.read(run_id) == events(run_id, 0, 2)
        token = await store.claim(run_id, owner("a"), 30)
        assert token is not None
        assert await other.claim(run_id, owner("b"), 30) is None, "a live owner holds it"
        await store.release(run_id, owner("a"))
        taken = await other.claim(run_id, owner("b"), 30)
        assert taken is not None and taken > token
        with pytest.raises(LeaseLostError):
            await store.append(run_id, 2, events(run_id, 2, 1), fence=token)
    finally:
        await other.aclose()


@needs(Journal, RunIndex, shared_between_processes=False)
async def test_a_store_not_shared_keeps_its_journals_to_itself(store: Store) -> None:
    other = store_from_url(store.url)
    await other.open()
    try:
        run_id = await make_run(store, 1)
        assert await other.get_run(run_id) is None
        assert await other.read(run_id) == []
    finally:
        await other.aclose()


@needs(Journal, defers_off_writes=True)
async def test_a_failed_off_append_is_raised_later_and_once(store: Store) -> None:
    run_id, other = await make_run(store, 1), await make_run(store)
    # A stale append in "off" mode is accepted: nobody waits for its conflict.
    await store.append(run_id, 0, events(run_id, 0, 1), durability=Durability.OFF)
    await store.read(run_id)  # waits for the run's queued writes, without raising
    await store.append(other, 0, events(other, 0, 1))  # another run is not affected
    with pytest.raises(ConflictError) as caught:  # the run's next append raises it
        await store.append(run_id, 1, events(run_id, 1, 1))
    assert (caught.value.expected_seq, caught.value.actual_seq) == (0, 1)
    await store.append(run_id, 1, events(run_id, 1, 1))  # reported once, then the run goes on
    await store.append(run_id, 0, events(run_id, 0, 1), durability=Durability.OFF)
    with pytest.raises(ConflictError):  # or flush does
        await store.flush()
    await store.flush()  # reported once
    assert await store.read(run_id) == events(run_id, 0, 2)


@needs(Journal, defers_off_writes=False)
async def test_an_off_append_fails_at_the_call(store: Store) -> None:
    run_id = await make_run(store, 1)
    with pytest.raises(ConflictError):
        await store.append(run_id, 0, events(run_id, 0, 1), durability=Durability.OFF)
    await store.flush()
    assert await store.read(run_id) == events(run_id, 0, 1)


@needs(Journal, keeps_objects=True)
async def test_a_store_that_keeps_objects_gives_back_what_it_was_given(store: Store) -> None:
    run_id = await make_run(store)
    value = {"tags": {"a", "b"}, "when": datetime(2026, 1, 2, 3, 4), "pair": (1, 2)}
    await store.append(run_id, 0, [event(run_id, 1, EventKind.EMITTED, BASE, value)])
    (got,) = await store.read(run_id)
    assert isinstance(got.data, Emitted) and got.data.data == value, "no JSON on the way"


@needs(Journal, RunIndex, keeps_objects=False)
async def test_a_store_that_encodes_gives_back_json_and_refuses_what_is_not(store: Store) -> None:
    run_id = await make_run(store, 1)
    with pytest.raises(SerializationError):
        await store.append(run_id, 1, [event(run_id, 2, EventKind.EMITTED, BASE, {"x": object()})])
    found = await store.get_run(run_id)
    assert found is not None and found.last_seq == 1, "nothing of a refused append is written"
    value: dict[str, Any] = {"pair": (1, 2), "list": [1]}
    await store.append(run_id, 1, [event(run_id, 2, EventKind.EMITTED, BASE, value)])
    value["list"].append(2)  # what the journal keeps was taken at the append
    (_, got) = await store.read(run_id)
    assert isinstance(got.data, Emitted) and got.data.data == {"pair": [1, 2], "list": [1]}


@needs(Journal, RunIndex, accepts_off_now=True)
async def test_append_off_keeps_the_contract_of_an_off_append(store: Store) -> None:
    assert isinstance(store, AcceptsOffNow)
    run_id, other = await make_run(store, 1), await make_run(store)
    store.append_off(run_id, 1, events(run_id, 1, 2))
    store.append_off(other, 0, events(other, 0, 1))
    store.append_off(run_id, 3, events(run_id, 3, 1), status=RunStatus.FINISHED)
    got = await store.get_run(run_id)  # a read sees what was accepted before it
    assert got is not None and (got.last_seq, got.status) == (4, RunStatus.FINISHED)
    assert await store.read(run_id) == events(run_id, 0, 4)
    store.append_off(other, 0, events(other, 0, 1))  # stale: accepted, fails when written
    await store.read(other)  # waits for it to be written, raises nothing
    with pytest.raises(ConflictError):  # the run's next append raises it
        store.append_off(other, 1, events(other, 1, 1))
    await store.flush()  # reported once
    assert await store.read(other) == events(other, 0, 1)


@needs(Journal, RunIndex, Leases, appends_without_waiting=True)
async def test_append_now_keeps_the_contract_of_append(store: Store) -> None:
    assert isinstance(store, AppendsNow)
    run_id = await make_run(store, 1)
    store.append_now(run_id, 1, events(run_id, 1, 2))
    with pytest.raises(ConflictError):
        store.append_now(run_id, 1, events(run_id, 1, 1))
    token = await store.claim(run_id, owner("a"), 30)
    assert token is not None
    store.append_now(run_id, 3, events(run_id, 3, 1), status=RunStatus.INTERRUPTED, fence=token)
    got = await store.get_run(run_id)
    assert got is not None and (got.status, got.owner, got.last_seq) == (
        RunStatus.INTERRUPTED,
        None,
        4,
    )
    assert await store.claim(run_id, owner("b"), 30) is not None
    with pytest.raises(LeaseLostError):
        store.append_now(run_id, 4, events(run_id, 4, 1), fence=token)
    assert await store.read(run_id) == events(run_id, 0, 4)


@needs(Journal, ObservesCommits)
async def test_commit_observer_sees_commits_and_cannot_fail_them(store: Store) -> None:
    seen: list[int] = []

    def broken(stats: Any) -> None:
        seen.append(stats.writes)
        raise RuntimeError("a metrics bug")

    assert isinstance(store, ObservesCommits)
    store.commit_observer = broken
    run_id = await make_run(store, 1)
    await store.append(run_id, 1, events(run_id, 1, 2))
    await store.flush()
    assert [e.seq for e in await store.read(run_id)] == [1, 2, 3], "the write landed"
    assert seen and all(n >= 1 for n in seen)

"""Faults a run must survive in one process: storage errors, hung calls, lost leases.

Each test reproduces a fault from issue 9 through the public API on a real store
(SQLite unless said otherwise); where a store must fail on cue, its ``append`` is
wrapped to raise what the real store raises (TransientStoreError for a full disk,
StoreError for anything else). ``test_disk_full_*`` fills a real, small tmpfs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest

from mainspring import (
    END,
    START,
    Context,
    EventKind,
    Graph,
    NodeTimeoutError,
    Retry,
    RunFailedError,
    RunNotFoundError,
    RunStateError,
    RunStatus,
    Runtime,
    SerializationError,
    StateError,
    StoreError,
    TransientStoreError,
)
from mainspring.store import Store, store_from_url

pytestmark = pytest.mark.anyio


class S(TypedDict, total=False):
    n: int
    keys: list[str]


def _one_node(name: str, fn: Any, **options: Any) -> Any:
    g = Graph(S, name=name)
    g.node("work", fn, **options)
    g.edge(START, "work")
    g.edge("work", END)
    return g.compile()


def _fail_appends(
    store: Store, error: Callable[[], BaseException], when: Callable[[Any], bool], times: int
) -> list[int]:
    """Make ``store.append`` raise ``error()`` for the next ``times`` appends of an event
    for which ``when(event)`` holds; returns the list the failures are counted in."""
    failed: list[int] = []
    original = store.append

    async def failing(run_id: str, expected: int, events: Any, **kw: Any) -> None:
        if len(failed) < times and any(when(e) for e in events):
            failed.append(expected)
            raise error()
        await original(run_id, expected, events, **kw)

    store.append = failing  # type: ignore[method-assign,assignment]
    return failed


def _result_of_effect(e: Any) -> bool:
    return bool(e.kind is EventKind.EFFECT_FINISHED)


# -- 1, 2: a storage error never fails a run; every waiter returns ---------------------------


async def test_a_failed_write_of_an_effect_result_is_retried_and_the_run_finishes(
    tmp_path: Path,
) -> None:
    calls: list[str] = []

    async def work(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("pay", lambda idempotency_key: calls.append(idempotency_key))
        return {"n": 1}

    store = store_from_url(f"sqlite:///{tmp_path / 'r.db'}")
    failed = _fail_appends(store, lambda: TransientStoreError("disk full"), _result_of_effect, 2)
    async with Runtime(store) as rt:
        handle = await rt.start(_one_node("pays", work), {})
        assert await handle.result() == {"n": 1}
        kinds = [e.kind for e in await rt.events(handle.run_id)]
    assert len(failed) == 2, "the write failed twice, then went in"
    assert len(calls) == 1
    assert EventKind.STEP_FAILED not in kinds and kinds[-1] is EventKind.FINISHED


@pytest.mark.parametrize("transient", [True, False])
async def test_a_store_failing_for_good_leaves_the_run_resumable_and_tells_the_waiter(
    tmp_path: Path, transient: bool
) -> None:
    keys: list[str] = []

    async def work(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("pay", lambda idempotency_key: keys.append(idempotency_key))
        return {"n": 1}

    app = _one_node("pays", work)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = store_from_url(url)
    error = TransientStoreError if transient else StoreError
    failed = _fail_appends(store, lambda: error("the disk went away"), _result_of_effect, 10**6)
    started = time.monotonic()
    async with Runtime(store, retry_for=0.3, recover="off") as rt:
        handle = await rt.start(app, {}, run_id="job")
        with anyio.fail_after(5), pytest.raises(error, match="the disk went away"):
            await handle.result()
        with pytest.raises(error):  # a second waiter learns it too, at once
            await rt.handle("job").result()
        record = await rt.get_run("job")
        events = await rt.events("job")
    waited = time.monotonic() - started
    assert failed
    assert (record.status, record.owner) == (RunStatus.RUNNING, None), "resumable, lease back"
    assert [e.kind for e in events if e.kind in (EventKind.FAILED, EventKind.STEP_FAILED)] == []
    assert waited < (3.0 if transient else 1.5)
    # The store works again: the next process finishes the run; the effect whose result
    # was never recorded runs again with the same key, as any unfinished effect does.
    async with Runtime.open(url, graphs=[app]) as again:
        assert await again.handle("job").result() == {"n": 1}
    assert keys[0] == keys[-1] == "job:0.0.0"


async def test_a_waiter_on_a_run_nobody_drives_is_told_how_to_resume_it(tmp_path: Path) -> None:
    gate = anyio.Event()

    async def work(s: S) -> dict[str, Any]:
        await gate.wait()
        return {"n": 1}

    app = _one_node("waits", work)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    async with Runtime.open(url, drain_timeout=0) as rt:
        await rt.start(app, {}, run_id="left")
    async with Runtime.open(url, recover="off") as rt:
        with anyio.fail_after(5), pytest.raises(RunStateError, match=r"runtime.resume\('left'\)"):
            await rt.handle("left").result()


async def test_disk_full_on_a_real_small_filesystem_fails_no_run_and_loses_none(
    tmp_path: Path,
) -> None:
    """The independent testers' case: 300 runs on a tiny tmpfs; the disk fills; every
    waiter returns; after the disk is grown, a new process finishes every run once."""
    mount = tmp_path / "small"
    mount.mkdir()
    if not _mount_tmpfs(mount, "600k"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        applied: dict[str, int] = {}

        async def work(s: S, ctx: Context) -> dict[str, Any]:
            def apply(idempotency_key: str) -> str:
                applied[idempotency_key] = applied.get(idempotency_key, 0) + 1
                return "x" * 2000  # fills the journal

            await ctx.step("apply", apply)
            return {"n": 1}

        app = _one_node("filler", work)
        url = f"sqlite:///{mount / 'runs.db'}"
        outcomes: dict[str, str] = {}
        async with Runtime.open(url, retry_for=0.5, recover="off", lease_ttl=1.0) as rt:

            async def one(n: int) -> None:
                try:
                    handle = await rt.start(app, {}, run_id=f"r{n:03d}")
                    await handle.result()
                    outcomes[f"r{n:03d}"] = "finished"
                except StoreError:
                    outcomes[f"r{n:03d}"] = "store error"

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for n in range(300):
                        tg.start_soon(one, n)
        assert len(outcomes) == 300, "every waiter returned"
        assert "store error" in outcomes.values(), "the disk did fill up"
        _remount_tmpfs(mount, "64m")
        async with Runtime.open(url, graphs=[app], lease_ttl=1.0) as rt:
            for n in range(300):
                run_id = f"r{n:03d}"
                try:
                    with anyio.fail_after(30):
                        assert await rt.handle(run_id).result() == {"n": 1}
                except RunNotFoundError:  # never created: its start failed, nothing was lost
                    assert outcomes[run_id] == "store error"
            failed = await rt.list_runs(status=RunStatus.FAILED, limit=1000)
        assert failed == []
        # Each effect's far side saw one key per run: a retry re-sent the same key.
        assert all(key.endswith(":0.0.0") for key in applied)
    finally:
        _umount(mount)


def _mount_tmpfs(path: Path, size: str) -> bool:
    import subprocess

    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def _remount_tmpfs(path: Path, size: str) -> None:
    import subprocess

    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _umount(path: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


# -- 4: a timeout holds for every kind of node and effect ------------------------------------


@pytest.mark.parametrize("kind", ["blocking node", "timed sync node", "sync effect"])
async def test_a_timeout_holds_for_threads_and_their_late_result_is_recorded(
    tmp_path: Path, kind: str
) -> None:
    def slow(s: Any = None) -> dict[str, Any]:
        time.sleep(0.8)
        return {"n": 1}

    async def effect_node(s: S, ctx: Context) -> dict[str, Any]:
        if ctx.attempt == 1:
            await ctx.step("slow", slow)
        return {"n": 2}

    attempts: list[int] = []

    def node_fn(s: S) -> dict[str, Any]:
        attempts.append(1)
        return slow() if len(attempts) == 1 else {"n": 2}

    g = Graph(S, name="timed")
    options: dict[str, Any] = {"timeout": 0.2, "retry": Retry(attempts=2, backoff=0)}
    if kind == "sync effect":
        g.node("work", effect_node, **options)
    else:
        g.node("work", node_fn, blocking=kind == "blocking node", **options)

    async def keep_alive(s: S) -> dict[str, Any]:
        await anyio.sleep(1.2)  # the run is still going when the thread comes back
        return {}

    g.node("after", keep_alive)
    g.edge(START, "work")
    g.edge("work", "after")
    g.edge("after", END)
    async with Runtime.open(f"sqlite:///{tmp_path / 't.db'}") as rt:
        handle = await rt.start(g.compile(), {})
        assert await handle.result() == {"n": 2}
        events = await rt.events(handle.run_id)
    failed = [e for e in events if e.kind is EventKind.STEP_FAILED]
    assert [f.data["error"]["type"] for f in failed] == ["NodeTimeoutError"]
    started = next(e for e in events if e.kind is EventKind.STEP_STARTED)
    assert failed[0].ts - started.ts < 0.6, (
        "the attempt failed at its timeout, not the thread's end"
    )
    late = [e for e in events if e.kind is EventKind.DISCARDED]
    assert len(late) == 1 and late[0].data["attempt"] == 1 and late[0].data["seconds"] >= 0.75
    if kind == "sync effect":
        assert late[0].data["name"] == "slow" and late[0].data["key"].endswith(":0.0.0")


async def test_a_node_that_times_out_for_good_fails_at_its_timeout(tmp_path: Path) -> None:
    app = _one_node("sleepy", lambda s: time.sleep(2), blocking=True, timeout=0.2)
    async with Runtime.open(f"sqlite:///{tmp_path / 't.db'}") as rt:
        started = time.monotonic()
        with pytest.raises(RunFailedError, match="NodeTimeoutError"):
            await rt.run(app, {})
        assert time.monotonic() - started < 1.0
    assert issubclass(NodeTimeoutError, TimeoutError)


# -- 8: retries keep their effects' keys ------------------------------------------------------


@pytest.mark.parametrize("fresh", [False, True])
async def test_a_retried_effect_keeps_its_key_unless_fresh_keys_are_asked_for(
    tmp_path: Path, fresh: bool
) -> None:
    keys: list[str] = []

    def charge(idempotency_key: str) -> str:
        keys.append(idempotency_key)
        if len(keys) == 1:
            raise TimeoutError("the reply was lost (the far side may have charged)")
        return "ok"

    async def work(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("charge", charge)
        return {"n": 1}

    retry = Retry(attempts=3, backoff=0, fresh_keys=fresh)
    async with Runtime.open(f"sqlite:///{tmp_path / 'k.db'}") as rt:
        await rt.run(_one_node("charges", work, retry=retry), {}, run_id="k")
    assert keys[0] == "k:0.0.0"
    assert keys[1] == ("k:0.0.0#a2" if fresh else "k:0.0.0")


# -- 9: what the live run sees is what every resumed run sees ---------------------------------


class Typed(TypedDict, total=False):
    tags: set[str]
    pair: tuple[int, int]
    when: datetime
    x: int
    ratio: float
    loose: Any


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"ratio": math.nan}, "nan, which JSON cannot hold"),
        ({"ratio": math.inf}, "inf, which JSON cannot hold"),
        ({"loose": {1, 2}}, "is a set, which would come back as a list"),
        ({"loose": (1, 2)}, "is a tuple, which would come back as a list"),
        ({"loose": [datetime(2026, 1, 1, tzinfo=UTC)]}, "is a datetime, which would come back"),
    ],
)
async def test_values_the_journal_would_change_are_refused_at_the_node(
    tmp_path: Path, update: dict[str, Any], message: str
) -> None:
    g = Graph(Typed, name="refused")
    g.node("bad", lambda s: update)
    g.edge(START, "bad")
    g.edge("bad", END)
    async with Runtime.open(f"sqlite:///{tmp_path / 'v.db'}") as rt:
        with pytest.raises(RunFailedError, match="SerializationError") as caught:
            await rt.run(g.compile(), {})
    assert "node 'bad' set" in str(caught.value.error["message"])
    assert message in str(caught.value.error["message"])


async def test_declared_types_round_trip_through_a_resume(tmp_path: Path) -> None:
    when = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    seen: list[Any] = []
    g = Graph(Typed, name="typed")
    g.node("set_them", lambda s: {"tags": {"a", "b"}, "pair": (1, 2), "when": when})

    async def check(s: Any, ctx: Context) -> dict[str, Any]:
        await ctx.interrupt("look")
        seen.append((s["tags"], s["pair"], s["when"]))
        return {"x": 1}

    g.node("check", check)
    g.edge(START, "set_them")
    g.edge("set_them", "check")
    g.edge("check", END)
    app = g.compile()
    url = f"sqlite:///{tmp_path / 'v.db'}"
    async with Runtime.open(url) as rt:
        handle = await rt.start(app, {}, run_id="t")
        await handle.wait()
    async with Runtime.open(url, graphs=[app]) as rt:  # resumed from the journal alone
        await rt.resume("t", True)
        final = await rt.handle("t").result()
    assert seen == [({"a", "b"}, (1, 2), when)]
    assert (final["tags"], final["pair"], final["when"]) == ({"a", "b"}, (1, 2), when)


async def test_updates_are_checked_against_the_declared_field_types(tmp_path: Path) -> None:
    app = _one_node("typed", lambda s: {"n": "notint"})
    for url in ("memory://", f"sqlite:///{tmp_path / 't.db'}"):
        async with Runtime.open(url) as rt:
            with pytest.raises(RunFailedError) as caught:
                await rt.run(app, {})
            assert caught.value.error["type"] == "StateError"
            message = str(caught.value.error["message"])
            assert "node 'work' set 'n' to a value of type str" in message
            assert "S.n is declared as int" in message
            with pytest.raises(StateError, match="the input set 'keys'"):
                await rt.start(app, {"keys": "not a list"})


async def test_an_effect_result_the_journal_would_change_is_recorded_as_failed(
    tmp_path: Path,
) -> None:
    calls: list[int] = []

    def typed() -> set[str]:
        return {"x"}

    def untyped():  # type: ignore[no-untyped-def]  # no return annotation: plain JSON only
        calls.append(1)
        return {"x"}

    async def work(s: S, ctx: Context) -> dict[str, Any]:
        assert await ctx.step("typed", typed) == {"x"}
        await ctx.step("untyped", untyped)
        return {"n": 1}

    async with Runtime.open(f"sqlite:///{tmp_path / 'e.db'}") as rt:
        with pytest.raises(RunFailedError, match="SerializationError"):
            await rt.run(_one_node("results", work, retry=Retry(attempts=3, backoff=0)), {})
    assert calls == [1], "recorded as failed: not called again by a retry"


async def test_a_resume_value_the_journal_would_change_is_refused(tmp_path: Path) -> None:
    async def asks(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.interrupt("?")
        return {"n": 1}

    async with Runtime.open(f"sqlite:///{tmp_path / 'r.db'}") as rt:
        handle = await rt.start(_one_node("asks", asks), {})
        await handle.wait()
        with pytest.raises(SerializationError, match="resume values"):
            await rt.resume(handle.run_id, {1, 2})
        await rt.resume(handle.run_id, [1, 2])
        assert await handle.result() == {"n": 1}


# -- 5, 14: a process that lost its lease stands down; its waiters follow the journal --------


async def test_a_process_that_stopped_renewing_stands_down_and_its_waiter_follows(
    tmp_path: Path,
) -> None:
    """Runtime A stops renewing (as if frozen); B takes the run over after its lease and
    finishes it; A wakes, must not call the effect B already made, stops driving, and
    A's waiter returns B's result from the journal (not a ConflictError)."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    calls: list[tuple[str, str]] = []
    a_may_go = anyio.Event()

    def effect(run_id: str, name: str, value: int) -> int:
        calls.append((run_id, name))
        return value

    async def work(s: S, ctx: Context) -> dict[str, Any]:
        first = await ctx.step("first", effect, ctx.run_id, "first", 1)
        if not a_may_go.is_set() and not _in_b:
            await a_may_go.wait()  # A "freezes" here, past its lease
        second = await ctx.step("second", effect, ctx.run_id, "second", 2)
        return {"n": first + second}

    _in_b: list[bool] = []
    app = _one_node("leased", work)
    async with Runtime.open(url, lease_ttl=0.4, graphs=[app]) as a:

        async def no_renewals() -> None:
            return None

        a._leases.renew = no_renewals  # type: ignore[method-assign]
        handle = await a.start(app, {}, run_id="r")
        while not calls:
            await anyio.sleep(0.01)
        async with Runtime.open(url, lease_ttl=0.4, graphs=[app]) as b:
            _in_b.append(True)
            with anyio.fail_after(10):
                assert await b.handle("r").result() == {"n": 3}
        a_may_go.set()
        with anyio.fail_after(10):
            assert await handle.result() == {"n": 3}
        events = await a.events("r")
    assert calls == [("r", "first"), ("r", "second")], "no effect was called twice"
    finished = [e for e in events if e.kind is EventKind.FINISHED]
    assert len(finished) == 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


# -- 6: recovery finds every orphaned run ------------------------------------------------------


async def test_recovery_finds_every_orphan_in_pages(tmp_path: Path) -> None:
    gate = anyio.Event()

    async def work(s: S) -> dict[str, Any]:
        await gate.wait()
        return {"n": 1}

    app = _one_node("many", work)
    url = f"sqlite:///{tmp_path / 'm.db'}"
    async with Runtime.open(url, durability="batch", drain_timeout=0) as rt:
        run_ids = [(await rt.start(app, {})).run_id for _ in range(1200)]
        while len(await rt.list_runs(limit=2000)) < 1200:  # created by their drivers
            await anyio.sleep(0.05)
    gate.set()
    async with Runtime.open(url, graphs=[app], durability="batch") as rt:
        assert len(rt.recoverable) == 0
        with anyio.fail_after(60):
            for run_id in run_ids:
                assert await rt.handle(run_id).result() == {"n": 1}

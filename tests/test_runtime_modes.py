"""Durability modes, snapshots and the sync facade."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypedDict

import anyio
import pytest

from mainspring import END, START, EventKind, Graph, RunStatus, Runtime, SyncRuntime, append
from mainspring.store import Store

from . import engine_graphs as eg


class Loop(TypedDict, total=False):
    n: int
    log: Annotated[list[int], append]


def looping(limit: int) -> Any:
    g = Graph(Loop, name=f"loop{limit}")
    g.node("tick", lambda s: {"n": s.get("n", 0) + 1, "log": [s.get("n", 0)]})
    g.edge(START, "tick")
    g.branch("tick", lambda s: "tick" if s["n"] < limit else END, ["tick", END])
    return g.compile()


@pytest.mark.anyio
@pytest.mark.parametrize("durability", ["sync", "batch", "off"])
async def test_every_durability_mode_runs_and_persists(tmp_path: Path, durability: str) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    app = looping(5)
    async with Runtime.open(url, durability=durability) as rt:
        handles = [await rt.start(app, {}) for _ in range(20)]
        results = [await h.result() for h in handles]
    assert all(r["log"] == [0, 1, 2, 3, 4] for r in results)
    async with Runtime.open(url) as rt:
        for h in handles:
            record = await rt.get_run(h.run_id)
            assert record.status is RunStatus.FINISHED
            assert record.durability.value == durability
            events = await rt.events(h.run_id)
            assert events[-1].kind is EventKind.FINISHED and len(events) == record.last_seq


@pytest.mark.anyio
async def test_durability_can_be_chosen_per_run(tmp_path: Path) -> None:
    async with Runtime.open(f"sqlite:///{tmp_path / 'p.db'}", durability="sync") as rt:
        handle = await rt.start(looping(2), {}, durability="off")
        await handle.result()
        assert (await rt.get_run(handle.run_id)).durability.value == "off"


@pytest.mark.anyio
async def test_long_runs_are_snapshotted_and_load_the_same(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = looping(25)
    async with Runtime.open(url, snapshot_every=10) as rt:
        handle = await rt.start(app, {})
        out = await handle.result()
        snapshot = await rt.store.load_snapshot(handle.run_id)
        assert snapshot is not None and snapshot.data["step"] == 20
        view = await rt.state(handle.run_id)
        assert view.values == out
        early = await rt.state(handle.run_id, at=snapshot.seq - 3)
        assert len(early.values["log"]) < len(out["log"]), "earlier points fold from the start"


def test_sync_facade_wraps_the_same_runtime(tmp_path: Path) -> None:
    with SyncRuntime.open(f"sqlite:///{tmp_path / 'sync.db'}") as rt:
        assert rt.run(eg.support, {"text": "hello"})["replies"] == ["noted"]
        handle = rt.start(eg.support, {"text": "big refund"})
        kinds = [e.kind for e in handle.events()]
        assert kinds[-1] is EventKind.INTERRUPTED, "the stream ends when the run parks"
        rt.resume(handle.run_id, True)
        assert handle.result()["replies"] == ["refund issued"]
        assert {r.status for r in rt.list_runs()} == {RunStatus.FINISHED}
        assert rt.replay(handle.run_id).ok
        # Before the router's effect finished: all of it again (asked for explicitly).
        fork = rt.fork(handle.run_id, 3, effects="rerun")
        assert fork.wait().status is RunStatus.INTERRUPTED
        rt.resume(fork.run_id, False)
        assert fork.result()["replies"] == ["refund denied"]
        assert rt.state(handle.run_id).status is RunStatus.FINISHED


def test_sync_facade_needs_open() -> None:
    rt = SyncRuntime.open("memory://")
    with pytest.raises(RuntimeError, match="not open"):
        rt.run(eg.support, {"text": "x"})
    anyio.run(anyio.sleep, 0)


def _first_step(fn: Any) -> Any:
    g = Graph(Loop, name=f"first_{fn.__name__}")
    g.node("first", fn)
    g.node("second", lambda s: {"log": [2]})
    g.edge(START, "first")
    g.edge("first", "second")
    g.edge("second", END)
    return g.compile()


@pytest.mark.anyio
@pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)
async def test_run_without_an_id_is_created_by_its_first_commit(store: Store) -> None:
    commits: list[int] = []
    async with Runtime(store) as rt:
        assert hasattr(store, "commit_observer")
        store.commit_observer = lambda stats: commits.append(stats.events)
        assert await rt.run(looping(5), {}) == {"n": 5, "log": [0, 1, 2, 3, 4]}
        # One commit per step: the run's start rides with its first step's end.
        assert len(commits) == 5, commits
        run = (await rt.list_runs())[0]
        kinds = [e.kind for e in await rt.events(run.run_id)]
        assert kinds[:3] == [EventKind.RUN_STARTED, EventKind.STEP_STARTED, EventKind.STEP_FINISHED]
        assert kinds[-1] is EventKind.FINISHED and run.status is RunStatus.FINISHED

        commits.clear()
        await rt.run(looping(5), {}, run_id="chosen")  # a chosen id: created first, as start()
        assert len(commits) == 6, commits


@pytest.mark.anyio
async def test_deferred_creation_of_a_run_that_fails_or_parks_in_its_first_step(
    tmp_path: Path,
) -> None:
    def broken(s: Loop) -> None:
        raise ValueError("bad input")

    async def asks(s: Loop, ctx: Any) -> dict[str, Any]:
        return {"log": [await ctx.step("look", lambda: 1), await ctx.interrupt("ok?")]}

    url = f"sqlite:///{tmp_path / 'd.db'}"
    parked = _first_step(asks)
    async with Runtime.open(url) as rt:
        with pytest.raises(Exception, match="bad input"):
            await rt.run(_first_step(broken), {})
        failed = (await rt.list_runs(status=RunStatus.FAILED))[0]
        assert [e.kind for e in await rt.events(failed.run_id)][-2:] == [
            EventKind.STEP_FAILED,
            EventKind.FAILED,
        ]
        with anyio.move_on_after(0.5):  # parks: run() waits for a resume
            await rt.run(parked, {})
        waiting = (await rt.list_runs(status=RunStatus.INTERRUPTED))[0]
    async with Runtime.open(url, graphs=[parked]) as rt:  # a new process resumes it
        handle = await rt.resume(waiting.run_id, 7)
        assert await handle.result() == {"log": [1, 7, 2]}

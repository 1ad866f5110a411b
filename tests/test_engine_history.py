"""Time travel: state at a sequence number, fork, deterministic replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

import pytest

from mainspring import END, START, Context, EventKind, Graph, RunStateError, RunStatus, Runtime

from . import engine_graphs as eg

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
async def rt(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'hist.db'}"
    async with Runtime.open(url) as runtime:
        yield runtime


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    eg.CALLS.clear()


class P(TypedDict, total=False):
    n: int
    price: int
    label: str


def pricing(multiplier: int) -> Any:
    g = Graph(P, name="pricing")

    @g.node
    async def quote(s: P, ctx: Context) -> dict[str, Any]:
        base = await ctx.step("market.price", eg.count, "price")
        return {"price": base * 100}

    @g.node
    def label(s: P) -> dict[str, Any]:
        return {"label": f"{s['price'] * multiplier}"}

    g.edge(START, "quote")
    g.edge("quote", "label")
    g.edge("label", END)
    return g.compile()


async def test_state_at_any_sequence_number(rt: Runtime) -> None:
    handle = await rt.start(pricing(1), {"n": 1})
    await handle.result()
    events = await rt.events(handle.run_id)
    quote_done = next(e.seq for e in events if e.kind is EventKind.STEP_FINISHED)
    before = await rt.state(handle.run_id, at=quote_done - 1)
    assert before.values == {"n": 1} and before.next == ["quote"]
    # A step's update is applied when the step closes, i.e. once the next step starts.
    after = await rt.state(handle.run_id, at=quote_done + 1)
    assert after.values == {"n": 1, "price": 100} and after.next == ["label"]
    final = await rt.state(handle.run_id)
    assert final.status is RunStatus.FINISHED and final.values["label"] == "100"
    with pytest.raises(RunStateError, match="outside"):
        await rt.state(handle.run_id, at=999)


async def test_fork_from_a_point_reruns_only_what_came_after(rt: Runtime) -> None:
    app = pricing(1)
    handle = await rt.start(app, {"n": 1})
    await handle.result()
    events = await rt.events(handle.run_id)
    effect_done = next(e.seq for e in events if e.kind is EventKind.EFFECT_FINISHED)
    fork = await rt.fork(handle.run_id, effect_done)
    out = await fork.result()
    assert out == {"n": 1, "price": 100, "label": "100"}
    assert eg.CALLS == {"price": 1}, "the recorded effect before the fork point was not repeated"
    record = await rt.get_run(fork.run_id)
    assert record.metadata["forked_from"] == {"run_id": handle.run_id, "seq": effect_done}
    forked_events = await rt.events(fork.run_id)
    assert forked_events[0].data["forked_from"]["run_id"] == handle.run_id
    # Forking before the effect would run it again: that must be asked for.
    with pytest.raises(
        RunStateError, match=r"made 1 side effects after sequence 2 \('market.price'\)"
    ):
        await rt.fork(handle.run_id, 2)
    reused = await rt.fork(handle.run_id, 2, effects="reuse")
    assert (await reused.result())["price"] == 100
    assert eg.CALLS == {"price": 1}, "the fork took the recorded result"
    finished = [e for e in await rt.events(reused.run_id) if e.kind is EventKind.EFFECT_FINISHED]
    assert finished[0].data["reused"]["run_id"] == handle.run_id
    early = await rt.fork(handle.run_id, 2, effects="rerun")
    await early.result()
    assert eg.CALLS == {"price": 2}, "called again, with a new key (it is a new run)"
    keys = [e.data["key"] for e in await rt.events(early.run_id) if e.data.get("key")]
    assert keys == [f"{early.run_id}:0.0.0"]


async def test_a_fork_that_reuses_effects_keeps_doing_so_after_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    app = eg.support
    async with Runtime.open(url, graphs=[app]) as rt:
        handle = await rt.start(app, {"text": "big refund"})
        await handle.wait()
        await rt.resume(handle.run_id, True)
        await handle.result()
        calls = dict(eg.CALLS)
        fork = await rt.fork(handle.run_id, 2, effects="reuse", start=False)
    async with Runtime.open(url, graphs=[app]) as rt:  # another process continues the fork
        await rt.resume(fork.run_id)
        await rt.handle(fork.run_id).wait()
        await rt.resume(fork.run_id, False)
        assert (await rt.handle(fork.run_id).result())["replies"] == ["refund denied"]
    assert calls == eg.CALLS, "every effect of the fork came from the original's journal"


async def test_fork_at_an_interrupt_lets_you_answer_differently(rt: Runtime) -> None:
    handle = await rt.start(eg.support, {"text": "big refund"})
    await handle.wait()
    parked_at = (await rt.get_run(handle.run_id)).last_seq
    await rt.resume(handle.run_id, True)
    assert (await handle.result())["replies"] == ["refund issued"]
    fork = await rt.fork(handle.run_id, parked_at)
    assert (await fork.wait()).status is RunStatus.INTERRUPTED
    await rt.resume(fork.run_id, False)
    assert (await fork.result())["replies"] == ["refund denied"]
    assert list(eg.CALLS.values()) == [1]


async def test_replay_matches_and_runs_nothing_external(rt: Runtime) -> None:
    handle = await rt.start(eg.support, {"text": "big refund"})
    await handle.wait()
    await rt.resume(handle.run_id, True)
    await handle.result()
    calls = dict(eg.CALLS)
    report = await rt.replay(handle.run_id)
    assert report.ok, str(report)
    assert report.compared >= 4
    assert calls == eg.CALLS, "replay returned recorded effects instead of calling them"
    assert "matches" in str(report)


async def test_replay_reports_the_first_divergence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'div.db'}"
    async with Runtime.open(url) as rt:
        handle = await rt.start(pricing(1), {"n": 1})
        await handle.result()
    async with Runtime.open(url) as rt:
        report = await rt.replay(handle.run_id, graph=pricing(2))
    assert not report.ok
    assert report.divergence is not None
    assert "node 'label'" in report.divergence.expected and "'100'" in report.divergence.expected
    assert "'200'" in report.divergence.actual
    events_seq = report.divergence.seq
    assert events_seq > 1
    assert "diverges at sequence" in str(report)

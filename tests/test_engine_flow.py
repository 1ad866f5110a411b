"""Orchestration semantics: branches, fan-out and joins, subgraphs, state kinds, start."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import anyio
import pytest
from pydantic import BaseModel

from mainspring import (
    END,
    START,
    Context,
    EventKind,
    Graph,
    RunExistsError,
    RunFailedError,
    RunStatus,
    Runtime,
    StateError,
    append,
)

from . import engine_graphs as eg

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
async def rt(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'flow.db'}"
    async with Runtime.open(url) as runtime:
        yield runtime


class Doc(TypedDict, total=False):
    text: str
    words: int
    tags: Annotated[list[str], append]
    path: Annotated[list[str], append]


async def test_branch_routes_by_state(rt: Runtime) -> None:
    out = await rt.run(eg.support, {"text": "hello"})
    assert out == {"text": "hello", "intent": "other", "replies": ["noted"]}
    out = await rt.run(eg.support, {"text": "small refund"})
    assert out["replies"] == ["refund issued"] and out["amount"] == 40


async def test_journal_records_each_step_with_its_delta(rt: Runtime) -> None:
    handle = await rt.start(eg.support, {"text": "hello"})
    await handle.result()
    events = await rt.events(handle.run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    kinds = [e.kind for e in events]
    assert kinds[0] is EventKind.RUN_STARTED and kinds[-1] is EventKind.FINISHED
    finished = [e.data for e in events if e.kind is EventKind.STEP_FINISHED]
    assert [(d["node"], d["update"]) for d in finished] == [
        ("classify", {"intent": "other"}),
        ("other", {"replies": ["noted"]}),
    ]
    record = await rt.get_run(handle.run_id)
    assert record.status is RunStatus.FINISHED and record.last_seq == len(events)
    assert record.owner is None, "a finished run holds no lease"


async def test_send_fan_out_joins_in_send_order(rt: Runtime) -> None:
    out = await rt.run(eg.fanout, {"n": 5})
    assert out["results"] == [0, 10, 20, 30, 40], "updates apply in task order, not finish order"
    assert out["total"] == 100


async def test_router_may_return_several_nodes_and_end(rt: Runtime) -> None:
    g = Graph(Doc)
    g.node("split", lambda s: {"path": ["split"]})
    g.node("left", lambda s: {"path": ["left"]})
    g.node("right", lambda s: {"path": ["right"]})
    g.edge(START, "split")
    g.branch("split", lambda s: ["right", "left", END], ["left", "right", END])
    g.edge("left", END)
    g.edge("right", END)
    out = await rt.run(g.compile(name="multi"), {})
    assert out["path"] == ["split", "right", "left"]


async def test_join_edge_waits_for_all_sources(rt: Runtime) -> None:
    g = Graph(Doc)
    g.node("fast", lambda s: {"path": ["fast"]})
    g.node("slow1", lambda s: {"path": ["slow1"]})
    g.node("slow2", lambda s: {"path": ["slow2"]})
    g.node("join", lambda s: {"path": ["join"], "words": len(s["path"])})
    g.edge(START, "fast")
    g.edge(START, "slow1")
    g.edge("slow1", "slow2")
    g.edge(["fast", "slow2"], "join")
    g.edge("join", END)
    out = await rt.run(g.compile(name="join"), {})
    assert out["path"] == ["fast", "slow1", "slow2", "join"]
    assert out["words"] == 3, "join ran once, after both branches"


async def test_parallel_writes_to_a_plain_key_fail_the_run_clearly(rt: Runtime) -> None:
    g = Graph(Doc)
    g.node("a", lambda s: {"text": "a"})
    g.node("b", lambda s: {"text": "b"})
    g.edge(START, "a")
    g.edge(START, "b")
    g.edge("a", END)
    g.edge("b", END)
    with pytest.raises(RunFailedError, match="nodes 'a' and 'b' both set 'text' in the same step"):
        await rt.run(g.compile(name="clash"), {})


async def test_router_errors_fail_the_run_naming_the_source(rt: Runtime) -> None:
    g = Graph(Doc)
    g.node("a", lambda s: None)
    g.node("b", lambda s: None)
    g.edge(START, "a")
    g.branch("a", lambda s: "nowhere", ["b", END])
    g.edge("b", END)
    with pytest.raises(RunFailedError, match="the router after 'a' returned 'nowhere'"):
        await rt.run(g.compile(name="badrouter"), {})


async def test_node_errors_fail_the_run_with_the_node_named(rt: Runtime) -> None:
    g = Graph(Doc)

    @g.node
    def boom(s: Doc) -> None:
        raise ValueError("bad input text")

    g.edge(START, "boom")
    g.edge("boom", END)
    handle = await rt.start(g.compile(name="boom"), {})
    with pytest.raises(RunFailedError, match=r"failed in node 'boom': ValueError: bad input text"):
        await handle.result()
    outcome = await handle.wait()
    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None and "Traceback" in outcome.error["traceback"]


async def test_subgraph_runs_with_its_own_state_and_journal(rt: Runtime) -> None:
    class Inner(TypedDict, total=False):
        text: str
        words: int
        steps: Annotated[list[str], append]

    inner = Graph(Inner, name="inner")
    inner.node("count", lambda s: {"words": len(s["text"].split()), "steps": ["count"]})
    inner.edge(START, "count")
    inner.edge("count", END)

    outer = Graph(Doc, name="outer")
    outer.node("analyse", inner.compile())
    outer.node("tag", lambda s: {"tags": [f"w{s['words']}"]})
    outer.edge(START, "analyse")
    outer.edge("analyse", "tag")
    outer.edge("tag", END)
    handle = await rt.start(outer.compile(), {"text": "one two three"})
    out = await handle.result()
    assert out == {"text": "one two three", "words": 3, "tags": ["w3"]}, (
        "only shared keys flow back"
    )
    children = await rt.list_runs(graph="inner")
    assert len(children) == 1
    child = children[0]
    assert child.parent_run_id == handle.run_id and child.status is RunStatus.FINISHED
    child_events = await rt.events(child.run_id)
    assert child_events[0].data["parent"]["run_id"] == handle.run_id


async def test_dataclass_state(rt: Runtime) -> None:
    @dataclasses.dataclass
    class Counter:
        n: int = 0
        seen: Annotated[list[int], append] = dataclasses.field(default_factory=list)

    g = Graph(Counter, name="counter")
    g.node("inc", lambda s: {"n": s.n + 1, "seen": [s.n]})
    g.edge(START, "inc")
    g.branch("inc", lambda s: "inc" if s.n < 3 else END, ["inc", END])
    out = await rt.run(g.compile(), {})
    assert out == Counter(n=3, seen=[0, 1, 2])


class Note(BaseModel):
    author: str
    body: str


class Notes(BaseModel):
    title: str = ""
    notes: Annotated[list[Note], append] = []


async def test_pydantic_state_and_models_survive_the_journal(rt: Runtime) -> None:
    g = Graph(Notes, name="notes")

    @g.node
    async def write(s: Notes, ctx: Context) -> dict[str, Any]:
        ok = await ctx.interrupt("review?")
        return {"notes": [Note(author="bot", body=f"{s.title}:{ok}")]}

    g.edge(START, "write")
    g.edge("write", END)
    app = g.compile()
    handle = await rt.start(app, {"title": "t"})
    assert (await handle.wait()).status is RunStatus.INTERRUPTED
    await rt.resume(handle.run_id, "yes")
    out = await handle.result()
    assert isinstance(out, Notes)
    assert out.notes == [Note(author="bot", body="t:yes")]
    view = await rt.state(handle.run_id)
    assert isinstance(view.values.notes[0], Note), "state read back from the journal is typed"


async def test_bad_input_is_refused_before_anything_is_written(rt: Runtime) -> None:
    with pytest.raises(StateError, match="the input sets 'txt'"):
        await rt.start(eg.support, {"txt": "typo"})
    assert await rt.list_runs() == []


async def test_start_is_idempotent_by_run_id(rt: Runtime) -> None:
    first = await rt.start(eg.support, {"text": "hello"}, run_id="ticket-1", thread="cust-9")
    await first.result()
    again = await rt.start(eg.support, {"text": "hello"}, run_id="ticket-1", thread="cust-9")
    assert again.run_id == "ticket-1"
    assert (await again.result())["text"] == "hello", (
        "the existing run is returned, nothing new runs"
    )
    # The same id for a different request is refused, never answered with the old run.
    with pytest.raises(RunExistsError, match="started with a different input"):
        await rt.start(eg.support, {"text": "something else"}, run_id="ticket-1", thread="cust-9")
    with pytest.raises(RunExistsError, match="started with thread 'cust-9', not None"):
        await rt.start(eg.support, {"text": "hello"}, run_id="ticket-1")
    with pytest.raises(RunExistsError, match="started with a different input"):
        await rt.run(eg.support, {"text": "other"}, run_id="ticket-1", thread="cust-9")
    assert len(await rt.list_runs()) == 1
    threads = await rt.list_threads()
    assert [(t.thread, t.runs, t.last_run_id) for t in threads] == [("cust-9", 1, "ticket-1")]


async def test_blocking_sync_node_runs_in_a_worker_thread(rt: Runtime) -> None:
    import threading

    main = threading.get_ident()
    g = Graph(Doc)
    g.node("io", lambda s: {"words": int(threading.get_ident() != main)}, blocking=True)
    g.edge(START, "io")
    g.edge("io", END)
    assert (await rt.run(g.compile(name="io"), {}))["words"] == 1


async def test_live_event_stream_includes_custom_events(rt: Runtime) -> None:
    gate = anyio.Event()
    g = Graph(Doc)

    @g.node
    async def chatty(s: Doc, ctx: Context) -> dict[str, Any]:
        ctx.emit({"progress": 0.5})
        await gate.wait()
        ctx.emit({"progress": 1.0})
        return {"words": 1}

    g.edge(START, "chatty")
    g.edge("chatty", END)
    handle = await rt.start(g.compile(name="chatty"), {})
    seen: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def consume() -> None:
            async for event in handle.events():
                seen.append(event)

        tg.start_soon(consume)
        await anyio.sleep(0.05)
        gate.set()
    kinds = [e.kind for e in seen]
    assert kinds[0] is EventKind.RUN_STARTED and kinds[-1] is EventKind.FINISHED
    emitted = [e.data["data"] for e in seen if e.kind is EventKind.EMITTED]
    assert emitted == [{"progress": 0.5}, {"progress": 1.0}]
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1)), "no gaps, no duplicates"
    replayed = [e async for e in handle.events()]
    assert [e.seq for e in replayed] == [e.seq for e in seen], "a finished run streams its history"


async def test_list_runs_filters(rt: Runtime) -> None:
    await rt.run(eg.support, {"text": "a"}, thread="t1")
    parked = await rt.start(eg.support, {"text": "big refund"}, thread="t2")
    await parked.wait()
    assert {r.thread for r in await rt.list_runs()} == {"t1", "t2"}
    assert [r.run_id for r in await rt.list_runs(status="interrupted")] == [parked.run_id]
    assert len(await rt.list_runs(thread="t1", status=["finished"])) == 1
    assert await rt.list_runs(graph="nope") == []
    with pytest.raises(Exception, match="unknown run status"):
        await rt.list_runs(status="sleeping")

"""Double texting (docs/server.md): a new message on a thread whose run is still going is
rejected, enqueued, or replaces the open run (interrupt, rollback); and an agent's
threads and tool approvals over the API (approve, reject, edit with the toolbox's values).

Runs park on an interrupt or wait on an anyio.Event in a node: no sleeps, no timing.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import anyio
import httpx
import pytest
from fastapi import FastAPI

from mainspring import END, START, Graph, Runtime
from mainspring.agents import Agent
from mainspring.models import Gateway, ModelRequest, ScriptedModel, ToolCall
from mainspring.server import ServerConfig, create_app
from mainspring.server.multitask import ThreadQueues, complete_prefix, queues_of
from mainspring.tools import tool
from tests.cli_graphs import support
from tests.test_server_api import serve

pytestmark = pytest.mark.anyio

REFUND = {"text": "refund please", "amount": 250}  # parks on an approval
HELLO = {"text": "hello"}

RELEASE: dict[str, anyio.Event] = {}  # a running run waits here until the test sets it
ENTERED: dict[str, anyio.Event] = {}


class Hold(TypedDict, total=False):
    key: str
    done: bool


async def hold(s: Hold) -> dict[str, Any]:
    ENTERED[s["key"]].set()
    await RELEASE[s["key"]].wait()
    return {"done": True}


_g = Graph(Hold, name="hold")
_g.node(hold)
_g.edge(START, "hold")
_g.edge("hold", END)
holding = _g.compile()


@dataclass
class Served:
    client: httpx.AsyncClient
    app: FastAPI

    @property
    def queues(self) -> ThreadQueues:
        return queues_of(self.app.state.mainspring)

    async def post(self, thread: str, multitask: str, **body: Any) -> httpx.Response:
        return await self.client.post(
            f"/v1/threads/{thread}/runs", json={"graph": "support", "multitask": multitask, **body}
        )

    async def run(self, run_id: str) -> dict[str, Any]:
        got: dict[str, Any] = (await self.client.get(f"/v1/runs/{run_id}")).json()
        return got

    async def last_event(self, run_id: str) -> dict[str, Any]:
        events = (await self.client.get(f"/v1/runs/{run_id}/events")).json()["events"]
        last: dict[str, Any] = events[-1]
        return last


@asynccontextmanager
async def served(**options: Any) -> AsyncIterator[Served]:
    async with Runtime.open("memory://", **options) as rt:
        graphs = options.pop("graphs", None) or [support, holding]
        app = create_app(rt, graphs=graphs, config=ServerConfig(auth=False))
        async with serve(app) as client:
            yield Served(client, app)


@pytest.fixture
async def s() -> AsyncIterator[Served]:
    async with served() as got:
        yield got


async def park(s: Served, run_id: str, thread: str = "t") -> None:
    answer = await s.post(thread, "reject", input=REFUND, run_id=run_id, wait=True)
    assert answer.status_code == 201 and answer.json()["status"] == "interrupted", answer.text


async def test_reject_answers_409_naming_the_open_run(s: Served) -> None:
    await park(s, "p")
    busy = await s.post("t", "reject", input=HELLO)
    assert busy.status_code == 409
    error = busy.json()["error"]
    assert error["code"] == "thread_busy" and error["details"] == {"open_run_id": "p"}
    assert "enqueue" in error["message"]
    runs = (await s.client.get("/v1/runs")).json()["runs"]
    assert [r["run_id"] for r in runs] == ["p"]  # nothing started
    other = await s.post("u", "reject", input=HELLO, wait=True)  # another thread: free
    assert other.status_code == 201


async def test_enqueue_starts_the_runs_in_order_when_the_open_run_ends(s: Served) -> None:
    await park(s, "p")
    first = await s.post("t", "enqueue", input=HELLO, run_id="q1")
    second = await s.post("t", "enqueue", input={"text": "again"}, run_id="q2")
    assert first.status_code == 202 and second.status_code == 202
    assert first.json()["status"] == "queued" and first.json()["after"] == "p"
    assert second.json()["after"] == "q1"
    repeat = await s.post("t", "enqueue", input={"text": "again"}, run_id="q2")
    assert repeat.status_code == 202 and repeat.json() == second.json()  # queued once
    thread = (await s.client.get("/v1/threads/t")).json()
    assert thread["open_run_id"] == "p"
    assert [q["run_id"] for q in thread["queued"]] == ["q1", "q2"]
    busy = await s.post("t", "reject", input=HELLO)
    assert busy.json()["error"]["details"] == {"open_run_id": "q2"}  # the queue is open too
    bad = await s.post("t", "enqueue", input={"text": 3})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    items = s.queues.queued("", "t")
    assert (await s.client.get("/v1/runs/q1")).status_code == 404  # not started yet
    await s.client.post("/v1/runs/p/resume", json={"value": True})
    for item in items:
        await item.started.wait()
    for run_id, reply in (("q1", "re: hello"), ("q2", "re: again")):
        again = await s.client.post("/v1/runs", json={"graph": "support", "thread": "t",
                                    "run_id": run_id, "input": HELLO if run_id == "q1" else
                                    {"text": "again"}, "wait": True})  # fmt: skip
        assert again.status_code == 200, again.text  # the same start: idempotent
        assert again.json()["outcome"]["state"]["replies"] == [reply]
        assert again.json()["metadata"]["multitask"]["strategy"] == "enqueue"
    q1, q2 = await s.run("q1"), await s.run("q2")
    assert q1["created_at"] <= q2["created_at"]
    assert (await s.client.get("/v1/threads/t")).json()["queued"] == []


async def test_interrupt_cancels_the_parked_run_then_starts(s: Served) -> None:
    await park(s, "p")
    new = await s.post("t", "interrupt", input=HELLO, run_id="n", wait=True)
    assert new.status_code == 201, new.text
    body = new.json()
    assert body["status"] == "finished"
    assert body["metadata"]["multitask"] == {"strategy": "interrupt", "interrupted": "p"}
    assert (await s.run("p"))["status"] == "cancelled"
    cancelled = await s.last_event("p")
    assert cancelled["kind"] == "cancelled"
    assert cancelled["data"]["actor"] == "local: interrupted by run n"


async def test_interrupt_stops_a_running_run_in_its_node(s: Served) -> None:
    RELEASE["k"], ENTERED["k"] = anyio.Event(), anyio.Event()
    started = await s.client.post(
        "/v1/runs", json={"graph": "hold", "input": {"key": "k"}, "thread": "t", "run_id": "h"}
    )
    assert started.status_code == 201
    await ENTERED["k"].wait()
    assert (await s.run("h"))["status"] == "running"
    new = await s.post("t", "interrupt", input=HELLO, run_id="n", wait=True)
    assert new.json()["status"] == "finished"
    assert (await s.run("h"))["status"] == "cancelled"  # never released: cancelled in its node


async def test_rollback_marks_the_new_run_and_drops_the_queue(s: Served) -> None:
    await park(s, "p")
    queued = await s.post("t", "enqueue", input=HELLO, run_id="q")
    assert queued.status_code == 202
    item = s.queues.queued("", "t")[0]
    new = await s.post("t", "rollback", input=HELLO, run_id="n", wait=True)
    assert new.status_code == 201
    mark = new.json()["metadata"]["multitask"]
    assert mark == {"strategy": "rollback", "rolled_back": "p", "dropped": ["q"]}
    assert (await s.last_event("p"))["data"]["actor"] == "local: rolled back by run n"
    await item.started.wait()  # its task ended without starting it
    assert (await s.client.get("/v1/runs/q")).status_code == 404


async def test_a_free_thread_starts_whatever_the_strategy(s: Served) -> None:
    for i, strategy in enumerate(("reject", "enqueue", "interrupt", "rollback")):
        answer = await s.post("t", strategy, input=HELLO, run_id=f"r{i}", wait=True)
        assert answer.status_code == 201 and answer.json()["status"] == "finished"
        assert "multitask" not in answer.json()["metadata"]


# -- agents --------------------------------------------------------------------------------


def _texts(request: ModelRequest, role: str) -> list[str]:
    return [m.text for m in request.messages if m.role == role]


def _agent() -> tuple[Agent, ScriptedModel, list[tuple[str, int]]]:
    paid: list[tuple[str, int]] = []

    @tool(needs_approval=lambda args: args["amount"] > 100)
    def pay(to: str, amount: int) -> str:
        """Pay someone."""
        paid.append((to, amount))
        return f"paid {amount} to {to}"

    def script(request: ModelRequest) -> Any:
        users = _texts(request, "user")
        if users[-1].startswith("pay") and request.messages[-1].role == "user":
            return [ToolCall("c1", "pay", {"to": "ada", "amount": int(users[-1].split()[1])})]
        if request.messages[-1].role == "tool":
            return "outcome: " + request.messages[-1].text
        return "heard: " + " | ".join(users)

    model = ScriptedModel(script)
    return Agent("payer", "fast", "Pay.", tools=[pay]), model, paid


@asynccontextmanager
async def agent_served() -> AsyncIterator[tuple[Served, list[tuple[str, int]]]]:
    agent, model, paid = _agent()
    async with Runtime.open(
        "memory://", models=Gateway({"fast": model}), tools=agent.toolbox
    ) as rt:
        app = create_app(rt, graphs=[agent], config=ServerConfig(auth=False))
        async with serve(app) as client:
            yield Served(client, app), paid


async def say(s: Served, text: str, multitask: str = "reject", **body: Any) -> dict[str, Any]:
    answer = await s.client.post(
        "/v1/threads/c/runs",
        json={"graph": "agent:payer", "input": text, "multitask": multitask, "wait": True, **body},
    )
    assert answer.status_code == 201, answer.text
    run: dict[str, Any] = answer.json()
    return run


def user_texts(run: dict[str, Any]) -> list[str]:
    return [
        m["content"][0]["text"] for m in run["outcome"]["state"]["messages"] if m["role"] == "user"
    ]


async def test_an_agent_thread_goes_on_and_its_tool_approvals_are_answered() -> None:
    async with agent_served() as (s, paid):
        graphs = (await s.client.get("/v1/graphs")).json()["graphs"]
        assert graphs[0]["name"] == "agent:payer" and graphs[0]["kind"] == "agent"
        first = await say(s, "hello")
        assert first["outcome"]["state"]["messages"][-1]["content"][0]["text"] == "heard: hello"
        usage = (await s.run(first["run_id"]))["usage"]
        assert usage["model_calls"] == 1 and usage["input_tokens"] > 0
        assert usage["output_tokens"] > 0
        url = "/v1/runs/{}/interrupts/{}/{}"
        for verb, body, outcome in (
            ("approve", {}, "outcome: paid 500 to ada"),
            ("reject", {"reason": "too much"}, "not made: too much"),
            ("edit", {"args": {"to": "ada", "amount": 90}}, "outcome: paid 90 to ada"),
        ):
            parked = await say(s, "pay 500")
            assert parked["status"] == "interrupted"
            pending = (await s.client.get("/v1/interrupts")).json()["interrupts"]
            assert len(pending) == 1 and pending[0]["payload"]["data"]["tool"] == "pay"
            iid = pending[0]["interrupt_id"]
            done = await s.client.post(url.format(parked["run_id"], iid, verb),
                                       json={**body, "wait": True})  # fmt: skip
            assert done.status_code == 200, done.text
            text = done.json()["outcome"]["state"]["messages"][-1]["content"][0]["text"]
            assert text.endswith(outcome)
            decided = await s.client.get(
                f"/v1/runs/{parked['run_id']}/events", params={"kind": "effect_decided"}
            )
            decisions = [e["data"]["decision"] for e in decided.json()["events"]]
            assert decisions[0] == "approve"  # the tool's approval, asked and answered
        assert paid == [("ada", 500), ("ada", 90)]
        last = await say(s, "bye")  # the whole conversation so far: one thread
        assert user_texts(last) == ["hello", "pay 500", "pay 500", "pay 500", "bye"]


async def test_interrupt_carries_the_agents_conversation_and_rollback_drops_it() -> None:
    async with agent_served() as (s, paid):
        await say(s, "hello")
        await say(s, "pay 500")  # parks: the tool call waits for approval
        went_on = await say(s, "never mind", "interrupt")
        assert user_texts(went_on) == ["hello", "pay 500", "never mind"]
        messages = went_on["outcome"]["state"]["messages"]
        assert not any(p.get("type") == "tool_call" for m in messages for p in m["content"])
        await say(s, "pay 700")
        rolled = await say(s, "forget it", "rollback")
        assert user_texts(rolled) == ["hello", "pay 500", "never mind", "forget it"]
        assert paid == []


def test_complete_prefix_cuts_an_unanswered_tool_call() -> None:
    user = {"role": "user", "content": [{"type": "text", "text": "pay"}]}
    call = {"role": "assistant", "content": [{"type": "tool_call", "id": "c1"}]}
    result = {"role": "tool", "tool_call_id": "c1", "content": []}
    assert complete_prefix([user, call]) == [user]
    assert complete_prefix([user, call, result]) == [user, call, result]


def test_the_double_texting_example_of_the_docs_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "server.md").read_text()
    section = text[text.index("### Double texting") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    shown = re.search(r"\nprints\n\n```\n(.*?)```", section, re.S)
    assert code is not None and shown is not None
    module = types.ModuleType("server_docs_example")  # a real module: its type hints resolve
    sys.modules[module.__name__] = module
    try:
        exec(compile(code.group(1), "docs/server.md", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    assert capsys.readouterr().out == shown.group(1)

"""Queue mode (docs/server.md): the API starts runs in a run queue and a Worker, in its own
Runtime on the same PostgreSQL schema (as a `mainspring worker` process would), drives
them; resumes, approvals and cancels through the API reach the run wherever it is driven.

Runs wait on anyio events or park on interrupts: no sleeps decide anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypedDict

import anyio
import httpx
import pytest
from fastapi import FastAPI

from mainspring import END, START, Graph, RunStatus, Runtime, Worker
from mainspring.client import AsyncClient, Run
from mainspring.models import Gateway
from mainspring.server import ServerConfig, create_app
from mainspring.server.multitask import queues_of
from tests.cli_graphs import support
from tests.test_server_api import serve
from tests.test_server_multitask import _agent

pytestmark = pytest.mark.anyio

REFUND = {"text": "refund please", "amount": 250}  # parks on an approval
HELLO = {"text": "hello"}
ENTERED: dict[str, anyio.Event] = {}  # a run of hold_q sets its key's event in its node


class Hold(TypedDict, total=False):
    key: str
    done: bool


async def hold(s: Hold) -> dict[str, Any]:
    ENTERED[s["key"]].set()
    await anyio.sleep_forever()  # until cancelled
    return {"done": True}


_g = Graph(Hold, name="hold_q")
_g.node(hold)
_g.edge(START, "hold")
_g.edge("hold", END)
holding = _g.compile()


@dataclass
class Served:
    client: httpx.AsyncClient
    server: Runtime
    worker: Worker
    app: FastAPI


@asynccontextmanager
async def queued(url: str, queue: str | None = "q") -> AsyncIterator[Served]:
    """An API server in queue mode and a Worker of queue "q", each in its own Runtime."""
    async with (
        Runtime.open(url, graphs=[support, holding]) as server,
        Runtime.open(url, graphs=[support, holding], lease_ttl=5) as driver,
    ):
        worker = Worker(driver, ["q"])
        app = create_app(
            server, graphs=[support, holding], config=ServerConfig(auth=False, queue=queue)
        )
        async with anyio.create_task_group() as tg, serve(app) as client:
            tg.start_soon(worker.run)
            try:
                yield Served(client, server, worker, app)
            finally:
                worker.stop()


async def test_api_starts_are_driven_by_a_worker_and_waited_on_by_the_server(
    postgres_url: str,
) -> None:
    async with queued(postgres_url) as s:
        started = await s.client.post(
            "/v1/runs", json={"graph": "support", "input": HELLO, "wait": True}
        )
        assert started.status_code == 201, started.text
        assert started.json()["status"] == "finished"
        assert started.json()["outcome"]["state"]["replies"] == ["re: hello"]
        on_thread = await s.client.post(
            "/v1/threads/t/runs", json={"graph": "support", "input": HELLO, "wait": True}
        )
        assert on_thread.json()["status"] == "finished", on_thread.text
        assert s.server.live_runs() == []  # the server drove none of them
        assert s.worker.claimed_total == 2


async def test_an_approval_goes_back_to_the_queue_and_the_worker_finishes_the_run(
    postgres_url: str,
) -> None:
    async with queued(postgres_url) as s:
        parked = await s.client.post(
            "/v1/runs", json={"graph": "support", "input": REFUND, "run_id": "r", "wait": True}
        )
        assert parked.json()["status"] == "interrupted", parked.text
        assert s.worker.claimed_total == 1
        resumed = await s.client.post("/v1/runs/r/resume", json={"value": True, "wait": True})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "finished"
        assert s.worker.claimed_total == 2  # the rest was the worker's too
        assert s.server.live_runs() == []
        record = await s.server.get_run("r")
        assert record.queue is not None and record.queue.name == "q"


async def test_a_cancel_through_the_api_stops_the_run_in_the_worker(postgres_url: str) -> None:
    async with queued(postgres_url) as s:
        ENTERED["h"] = anyio.Event()
        started = await s.client.post(
            "/v1/runs", json={"graph": "hold_q", "run_id": "h", "input": {"key": "h"}}
        )
        assert started.status_code == 201, started.text
        await ENTERED["h"].wait()  # the worker is in the node
        cancelled = await s.client.post("/v1/runs/h/cancel", json={"reason": "enough"})
        assert cancelled.status_code == 200, cancelled.text
        run = (await s.client.get("/v1/runs/h")).json()
        assert run["status"] == "cancelled"
        assert s.server.live_runs() == []
        ENTERED["i"] = anyio.Event()
        body = {"graph": "hold_q", "thread": "t", "input": {"key": "i"}}
        await s.client.post("/v1/runs", json={**body, "run_id": "i"})
        await ENTERED["i"].wait()
        after = await s.client.post(  # on its thread: the worker's run is interrupted
            "/v1/runs", json={"graph": "support", "thread": "t", "input": HELLO,
                              "multitask": "interrupt", "wait": True},
        )  # fmt: skip
        assert after.status_code == 201 and after.json()["status"] == "finished", after.text
        assert after.json()["metadata"]["multitask"]["interrupted"] == "i"
        assert (await s.client.get("/v1/runs/i")).json()["status"] == "cancelled"


async def test_a_body_places_its_run_and_names_its_own_queue(postgres_url: str) -> None:
    async with queued(postgres_url, queue=None) as s:  # the server drives its own runs...
        here = await s.client.post(
            "/v1/runs", json={"graph": "support", "input": HELLO, "wait": True}
        )
        assert here.json()["status"] == "finished"
        assert s.worker.claimed_total == 0
        body = {"graph": "support", "input": HELLO, "queue": "q", "priority": 3,
                "concurrency_key": "k", "run_id": "w", "wait": True}  # fmt: skip
        there = await s.client.post("/v1/runs", json=body)  # ...unless a start names a queue
        assert there.json()["status"] == "finished", there.text
        assert s.worker.claimed_total == 1
        record = await s.server.get_run("w")
        assert record.queue is not None
        assert (record.queue.name, record.queue.priority) == ("q", 3)
        assert record.queue.concurrency_key == "k"
        transport = httpx.ASGITransport(app=s.app)
        async with AsyncClient("http://api", transport=transport) as ms:  # the Python client
            later = await ms.start("support", HELLO, queue="later", delay=3600, priority=-1)
        assert isinstance(later, Run) and later.status is RunStatus.RUNNING  # waits an hour
        assert later.queue is not None
        assert (later.queue["name"], later.queue["priority"]) == ("later", -1)
        assert later.queue["available_at"] is not None and later.queue["waiting"] is True
        shown = (await s.client.get("/v1/runs/w")).json()["queue"]
        assert shown == {"name": "q", "priority": 3, "available_at": None,
                         "concurrency_key": "k", "waiting": False}  # fmt: skip
        assert here.json()["queue"] is None  # driven by the server itself


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"queue": "a:b"}, "queue"),
        ({"queue": ""}, "queue"),
        ({"queue": "q", "delay": -1}, "delay"),
        ({"queue": "q", "priority": 2**40}, "priority"),
        ({"queue": "q", "concurrency_key": ""}, "concurrency_key"),
        ({"priority": 1}, "give 'queue' too"),
        ({"delay": 5}, "give 'queue' too"),
    ],
)
async def test_bad_queue_options_are_422_naming_what_to_fix(
    body: dict[str, Any], says: str
) -> None:
    async with Runtime.open("memory://") as rt:
        app = create_app(rt, graphs=[support], config=ServerConfig(auth=False))
        async with serve(app) as client:
            answer = await client.post("/v1/runs", json={"graph": "support", **body})
            assert answer.status_code == 422, answer.text
            assert says in answer.text


async def test_queues_need_postgresql() -> None:
    async with Runtime.open("memory://") as rt:
        app = create_app(rt, graphs=[support], config=ServerConfig(auth=False))
        async with serve(app) as client:
            answer = await client.post("/v1/runs", json={"graph": "support", "queue": "q"})
            assert answer.status_code == 422
            assert "PostgreSQL" in answer.json()["error"]["message"]
        with pytest.raises(ValueError, match="PostgreSQL"):
            create_app(rt, graphs=[support], config=ServerConfig(auth=False, queue="q"))


async def test_an_enqueued_start_goes_to_the_queue_when_its_turn_comes(postgres_url: str) -> None:
    async with queued(postgres_url) as s:
        post = {"graph": "support", "thread": "t"}
        parked = await s.client.post(
            "/v1/runs", json={**post, "input": REFUND, "run_id": "p", "wait": True}
        )
        assert parked.json()["status"] == "interrupted", parked.text
        later = await s.client.post(
            "/v1/runs", json={**post, "input": HELLO, "run_id": "q", "multitask": "enqueue"}
        )
        assert later.status_code == 202, later.text
        item = queues_of(s.app.state.mainspring).queued("", "t")[0]
        await s.client.post("/v1/runs/p/resume", json={"value": True})
        await item.started.wait()
        assert item.error is None
        done = await s.client.post("/v1/runs", json={**post, "input": HELLO, "run_id": "q",
                                   "wait": True})  # fmt: skip
        assert done.json()["status"] == "finished", done.text
        assert s.worker.claimed_total == 3  # p, p resumed, q
        assert s.server.live_runs() == []


@asynccontextmanager
async def agent_queued(url: str) -> AsyncIterator[tuple[Served, list[tuple[str, int]]]]:
    """The ``payer`` agent served in queue mode; its worker calls its model and tools."""
    agent, model, paid = _agent()
    options: dict[str, Any] = {"models": Gateway({"fast": model}), "tools": agent.toolbox}
    async with (
        Runtime.open(url, **options) as server,
        Runtime.open(url, lease_ttl=5, **options) as driver,
    ):
        driver.register(agent.graph)
        worker = Worker(driver, ["q"])
        app = create_app(server, graphs=[agent], config=ServerConfig(auth=False, queue="q"))
        async with anyio.create_task_group() as tg, serve(app) as client:
            tg.start_soon(worker.run)
            try:
                yield Served(client, server, worker, app), paid
            finally:
                worker.stop()


async def test_an_agents_turns_approvals_and_chat_endpoints_run_in_the_worker(
    postgres_url: str,
) -> None:
    async with agent_queued(postgres_url) as (s, paid):
        say = {"graph": "agent:payer", "wait": True}
        first = await s.client.post("/v1/threads/c/runs", json={**say, "input": "hello"})
        assert first.json()["status"] == "finished", first.text
        parked = await s.client.post("/v1/threads/c/runs", json={**say, "input": "pay 500"})
        assert parked.json()["status"] == "interrupted", parked.text
        run_id = parked.json()["run_id"]
        [pending] = (await s.client.get("/v1/interrupts")).json()["interrupts"]
        approved = await s.client.post(
            f"/v1/runs/{run_id}/interrupts/{pending['interrupt_id']}/approve", json={"wait": True}
        )
        assert approved.json()["status"] == "finished", approved.text
        assert paid == [("ada", 500)]  # the tool ran where the run went on: the worker
        chat = await s.client.post(
            "/v1/openai/chat/completions",
            json={"model": "payer", "messages": [{"role": "user", "content": "hi there"}]},
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == "heard: hi there"
        agui = await s.client.post("/v1/agui/payer", json=_agui("ui", "r1", "hello ui"))
        assert agui.status_code == 200 and "RUN_FINISHED" in agui.text, agui.text
        assert s.worker.claimed_total == 5  # hello, pay, pay approved, the chat, the AG-UI run
        assert s.server.live_runs() == []


def _agui(thread: str, run: str, text: str) -> dict[str, Any]:
    return {"threadId": thread, "runId": run, "state": {}, "tools": [], "context": [],
            "messages": [{"id": f"m-{run}", "role": "user", "content": text}],
            "forwardedProps": {}}  # fmt: skip

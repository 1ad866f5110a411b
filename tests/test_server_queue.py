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

from mainspring import END, START, Graph, Runtime, Worker
from mainspring.server import ServerConfig, create_app
from tests.cli_graphs import support
from tests.test_server_api import serve

pytestmark = pytest.mark.anyio

REFUND = {"text": "refund please", "amount": 250}  # parks on an approval
HELLO = {"text": "hello"}
ENTERED = anyio.Event()


class Hold(TypedDict, total=False):
    done: bool


async def hold(s: Hold) -> dict[str, Any]:
    ENTERED.set()
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
                yield Served(client, server, worker)
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
        started = await s.client.post("/v1/runs", json={"graph": "hold_q", "run_id": "h"})
        assert started.status_code == 201, started.text
        await ENTERED.wait()  # the worker is in the node
        cancelled = await s.client.post("/v1/runs/h/cancel", json={"reason": "enough"})
        assert cancelled.status_code == 200, cancelled.text
        run = (await s.client.get("/v1/runs/h")).json()
        assert run["status"] == "cancelled"
        assert s.server.live_runs() == []


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
        later = await s.client.post(
            "/v1/runs", json={"graph": "support", "input": HELLO, "queue": "later", "delay": 3600}
        )
        assert later.status_code == 201 and later.json()["status"] == "running"  # waits


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

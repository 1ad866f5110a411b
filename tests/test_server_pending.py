"""Durable ``enqueue`` double texting (docs/server.md): a start queued behind a thread's
open run is kept in the store, so a server that stops leaves it to the next server on
the store (or to another server on the same PostgreSQL store), which starts it once, when
the open run ends.

Runs park on an approval (``support`` with a refund): no sleeps, no timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mainspring import Runtime
from mainspring.server import ServerConfig, create_app
from mainspring.server.multitask import queues_of
from mainspring.server.pending import PendingStart, pending_starts_for
from mainspring.server.thread_queues import ThreadQueues
from tests.cli_graphs import support
from tests.conftest import postgres_schema_url
from tests.test_server_api import serve

pytestmark = pytest.mark.anyio

REFUND = {"text": "refund please", "amount": 250}  # parks on an approval
HELLO = {"text": "hello"}


@dataclass
class App:
    client: httpx.AsyncClient
    app: FastAPI

    @property
    def queues(self) -> ThreadQueues:
        return queues_of(self.app.state.mainspring)

    async def post(self, multitask: str, **body: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/threads/t/runs", json={"graph": "support", "multitask": multitask, **body}
        )


@asynccontextmanager
async def server(url: str) -> AsyncIterator[App]:
    async with Runtime.open(url, graphs=[support]) as rt:
        app = create_app(rt, graphs=[support], config=ServerConfig(auth=False))
        async with serve(app) as client:
            yield App(client, app)


@asynccontextmanager
async def store_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'ms.db'}"
    else:
        async with postgres_schema_url() as url:
            yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_new_server_starts_what_a_stopped_one_had_queued(kind: str, tmp_path: Path) -> None:
    async with store_url(kind, tmp_path) as url:
        async with server(url) as one:
            parked = await one.post("reject", input=REFUND, run_id="p", wait=True)
            assert parked.json()["status"] == "interrupted", parked.text
            for run_id, text in (("q1", "hello"), ("q2", "again")):
                queued = await one.post("enqueue", input={"text": text}, run_id=run_id)
                assert queued.status_code == 202, queued.text
            assert [r.run_id for r in await one.queues.pending.all()] == ["q1", "q2"]
        async with server(url) as two:  # the first server is gone; its queue is not
            thread = (await two.client.get("/v1/threads/t")).json()
            assert [q["run_id"] for q in thread["queued"]] == ["q1", "q2"]
            assert thread["queued"][1]["after"] == "q1"
            again = await two.post("enqueue", input={"text": "again"}, run_id="q2")
            assert again.status_code == 202  # the same request: still queued, once
            items = two.queues.queued("", "t")
            resumed = await two.client.post("/v1/runs/p/resume", json={"value": True})
            assert resumed.status_code == 200, resumed.text
            for item in items:
                await item.started.wait()
            assert [i.error for i in items] == [None, None]
            for run_id, reply in (("q1", "re: hello"), ("q2", "re: again")):
                run = await two.client.post(
                    "/v1/runs",
                    json={"graph": "support", "thread": "t", "run_id": run_id, "wait": True,
                          "input": {"text": reply[4:]}},
                )  # fmt: skip
                assert run.status_code == 200, run.text  # started already: a repeat
                assert run.json()["outcome"]["state"]["replies"] == [reply]
                assert run.json()["metadata"]["multitask"]["strategy"] == "enqueue"
            assert await two.queues.pending.all() == []  # started: removed
            runs = (await two.client.get("/v1/runs", params={"thread": "t"})).json()["runs"]
            assert sorted(r["run_id"] for r in runs) == ["p", "q1", "q2"]


async def test_two_servers_on_one_postgres_store_start_a_queued_run_once() -> None:
    async with postgres_schema_url() as url, AsyncExitStack() as stack:
        one = await stack.enter_async_context(server(url))
        two = await stack.enter_async_context(server(url))
        await one.post("reject", input=REFUND, run_id="p", wait=True)
        assert (await one.post("enqueue", input=HELLO, run_id="q")).status_code == 202
        assert await two.queues.rescan() == 1  # the other server's pending start, taken up
        busy = await two.post("reject", input=HELLO)
        assert busy.json()["error"]["details"] == {"open_run_id": "q"}
        items = [*one.queues.queued("", "t"), *two.queues.queued("", "t")]
        assert len(items) == 2  # both servers wait to start it
        await two.client.post("/v1/runs/p/resume", json={"value": True})
        for item in items:
            await item.started.wait()
        assert [i.error for i in items] == [None, None]
        runs = (await one.client.get("/v1/runs", params={"thread": "t"})).json()["runs"]
        assert sorted(r["run_id"] for r in runs) == ["p", "q"]  # one run, not two
        assert await one.queues.pending.all() == []


async def test_an_interrupt_drops_every_servers_pending_starts() -> None:
    async with postgres_schema_url() as url, AsyncExitStack() as stack:
        one = await stack.enter_async_context(server(url))
        two = await stack.enter_async_context(server(url))
        await one.post("reject", input=REFUND, run_id="p", wait=True)
        assert (await one.post("enqueue", input=HELLO, run_id="q")).status_code == 202
        items = one.queues.queued("", "t")
        now = await two.post("interrupt", input=HELLO, run_id="n", wait=True)
        assert now.status_code == 201, now.text
        assert now.json()["metadata"]["multitask"]["dropped"] == ["q"]
        assert await two.queues.pending.all() == []
        await items[0].started.wait()  # its server's task stood down: not started
        assert (await one.client.get("/v1/runs/q")).status_code == 404


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
async def test_the_pending_starts_table_keeps_order_and_each_start_once(
    kind: str, tmp_path: Path
) -> None:
    # the store opened first: its file or schema made whole, then the table beside it
    async with store_url(kind, tmp_path) as url, Runtime.open(url) as rt:
        pending = pending_starts_for(rt.store)
        await pending.open()
        try:
            rows = [PendingStart(f"r{i}", "acme", "t" if i < 3 else "u", "support",
                                 "p", 1.0 + i, {"input": {"n": i}}) for i in range(4)]  # fmt: skip
            for row in rows:
                await pending.add(row)
            await pending.add(rows[0])  # again (a retried write): kept once
            assert await pending.all() == rows
            assert await pending.holds("r1") and not await pending.holds("x")
            assert await pending.remove("r1") and not await pending.remove("r1")
            assert await pending.remove_thread("acme", "t") == ["r0", "r2"]
            assert await pending.all() == [rows[3]]
        finally:
            await pending.aclose()

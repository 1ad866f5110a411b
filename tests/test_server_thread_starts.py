"""Every start on a thread is one step with its look at the thread (docs/server.md, double
texting): ``POST /v1/runs`` with a thread, ``POST /v1/threads/{t}/runs``, the OpenAI and
AG-UI endpoints and a fork, in one server or in several sharing a PostgreSQL store; a
queued run's id is taken; the ids the chat endpoints take are the API's.

The race is forced, not hoped for: the store answers a thread's runs and then lets every
other task go on before the caller sees them (a stale answer, as a slow store's), so
without the critical section every concurrent start finds the thread free.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import httpx
import pytest
from anyio.lowlevel import checkpoint
from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError

from mainspring import Runtime
from mainspring.agents import Agent
from mainspring.models import Gateway, ModelRequest, ScriptedModel, ToolCall
from mainspring.server import ServerConfig, create_app
from mainspring.server.errors import ApiError
from mainspring.server.ids import checked_id
from mainspring.server.multitask import queues_of
from mainspring.server.schemas import Id
from mainspring.server.thread_locks import PostgresThreadLocks
from mainspring.store import RunQuery
from mainspring.store.memory import MemoryStore
from mainspring.tools import tool
from tests.cli_graphs import support
from tests.conftest import postgres_schema_url
from tests.test_server_api import serve

pytestmark = pytest.mark.anyio

REFUND = {"text": "refund please", "amount": 250}  # support parks on an approval
HELLO = {"text": "hello"}


ANY = RunQuery()


class StaleStore(MemoryStore):
    """A thread's runs, read, then every other ready task runs before the reader goes on."""

    async def list_runs(self, query: RunQuery = ANY) -> list[Any]:
        found = await super().list_runs(query)
        if query.thread is not None:
            for _ in range(20):
                await checkpoint()
        return found


def _payer() -> Agent:
    @tool(needs_approval=lambda args: args["amount"] > 100)
    def pay(to: str, amount: int) -> str:
        """Pay someone."""
        return f"paid {amount} to {to}"

    return Agent("payer", "fast", "Pay.", tools=[pay])


def _script(request: ModelRequest) -> Any:
    if request.messages[-1].role == "user":  # every turn asks to pay: the run parks
        return [ToolCall("c1", "pay", {"to": "ada", "amount": 250})]
    return "done: " + request.messages[-1].text


@dataclass
class App:
    client: httpx.AsyncClient
    app: FastAPI


@asynccontextmanager
async def served(store: Any = None, url: str | None = None) -> AsyncIterator[App]:
    agent = _payer()
    options: dict[str, Any] = {
        "models": Gateway({"fast": ScriptedModel(_script)}),
        "tools": agent.toolbox,
    }
    rt = Runtime.open(url, **options) if url else Runtime(store or StaleStore(), **options)
    async with rt:
        app = create_app(rt, graphs=[support, agent], config=ServerConfig(auth=False))
        async with serve(app) as client:
            yield App(client, app)


def _agui(thread: str, run: str, **extra: Any) -> dict[str, Any]:
    return {
        "threadId": thread,
        "runId": run,
        "messages": [{"id": f"m-{run}", "role": "user", "content": "pay ada"}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
        **extra,
    }


Start = Callable[[httpx.AsyncClient, str, int], Awaitable[httpx.Response]]


async def _openai(c: httpx.AsyncClient, thread: str, i: int) -> httpx.Response:
    body = {"model": "payer", "messages": [{"role": "user", "content": f"pay {i}"}]}
    return await c.post(
        "/v1/openai/chat/completions", json=body, headers={"X-Mainspring-Thread": thread}
    )


async def _agui_start(c: httpx.AsyncClient, thread: str, i: int) -> httpx.Response:
    return await c.post("/v1/agui/payer", json=_agui(thread, f"{thread}-r{i}"))


async def _message(c: httpx.AsyncClient, thread: str, i: int) -> httpx.Response:
    body = {"graph": "agent:payer", "input": f"pay {i}"}
    return await c.post(f"/v1/threads/{thread}/runs", json=body)


async def _graph_start(c: httpx.AsyncClient, thread: str, i: int) -> httpx.Response:
    return await c.post("/v1/runs", json={"graph": "support", "input": REFUND, "thread": thread})


PATHS: list[Start] = [_openai, _agui_start, _message, _graph_start]


async def _at_once(
    starts: Sequence[Callable[[], Awaitable[httpx.Response]]],
) -> list[httpx.Response]:
    answers: list[httpx.Response] = []

    async def one(start: Callable[[], Awaitable[httpx.Response]]) -> None:
        answers.append(await start())

    async with anyio.create_task_group() as tg:
        for start in starts:
            tg.start_soon(one, start)
    return answers


def _busy(answer: httpx.Response) -> bool:
    if answer.status_code != 409:
        return False
    body = answer.json()["error"]
    return "thread_busy" in (body.get("code"), body.get("type"))


async def test_starts_at_once_on_a_thread_by_every_path_start_one_run() -> None:
    async with served() as s:
        for round, thread in enumerate(("t1", "t2", "t3")):
            starts = [
                partial(path, s.client, thread, i)
                for i in range(3)
                for path in PATHS[round:] + PATHS[:round]  # each path first once
            ]
            answers = await _at_once(starts)
            ok = [a for a in answers if a.status_code < 300]
            assert len(ok) == 1, [(a.status_code, a.text[:200]) for a in answers]
            assert all(_busy(a) for a in answers if a not in ok), [a.text for a in answers]
            runs = (await s.client.get("/v1/runs", params={"thread": thread})).json()["runs"]
            assert len(runs) == 1 and runs[0]["status"] == "interrupted"


async def test_a_queued_runs_id_is_taken() -> None:
    async with served(MemoryStore()) as s:
        c = s.client
        parked = await c.post("/v1/threads/q/runs", json={"graph": "support", "input": REFUND,
                              "run_id": "p", "wait": True})  # fmt: skip
        assert parked.json()["status"] == "interrupted"
        queued = {"graph": "support", "input": HELLO, "multitask": "enqueue", "run_id": "q3"}
        first = await c.post("/v1/threads/q/runs", json=queued)
        assert first.status_code == 202
        again = await c.post("/v1/threads/q/runs", json=queued)
        assert again.status_code == 202 and again.json() == first.json()  # the same request
        for other in (
            {**queued, "input": {"text": "other"}},  # another input
            {**queued, "graph": "agent:payer", "input": "pay"},  # another graph
        ):
            answer = await c.post("/v1/threads/q/runs", json=other)
            assert answer.status_code == 409 and answer.json()["error"]["code"] == "run_exists"
        elsewhere = [
            c.post("/v1/runs", json={"graph": "support", "input": HELLO, "run_id": "q3"}),
            c.post("/v1/threads/u/runs", json={**queued, "multitask": "reject"}),
            c.post("/v1/runs/p/fork", json={"at": 1, "new_run_id": "q3", "thread": "f"}),
        ]
        for pending in elsewhere:
            answer = await pending
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["code"] == "run_exists"
            assert "queued" in answer.json()["error"]["message"]
        item = queues_of(s.app.state.mainspring).queued("", "q")[0]
        await c.post("/v1/runs/p/resume", json={"value": True})
        await item.started.wait()
        run = (await c.get("/v1/runs/q3")).json()  # it started: its id was kept for it
        assert run["thread"] == "q" and run["metadata"]["multitask"]["strategy"] == "enqueue"


async def test_a_fork_onto_a_busy_thread_is_409_and_onto_a_free_one_starts() -> None:
    async with served(MemoryStore()) as s:
        c = s.client
        body = {"graph": "support", "input": REFUND, "wait": True}
        await c.post("/v1/threads/busy/runs", json={**body, "run_id": "p"})
        done = await c.post("/v1/runs", json={"graph": "support", "input": HELLO, "wait": True,
                            "thread": "idle", "run_id": "d"})  # fmt: skip
        assert done.json()["status"] == "finished"
        fork = {"at": 1, "effects": "reuse"}
        for source, to in (("p", {}), ("d", {"thread": "busy"})):
            answer = await c.post(f"/v1/runs/{source}/fork", json={**fork, **to})
            assert answer.status_code == 409, answer.text
            error = answer.json()["error"]
            assert error["code"] == "thread_busy" and error["details"] == {"open_run_id": "p"}
        runs = (await c.get("/v1/runs", params={"thread": "busy"})).json()["runs"]
        assert [r["run_id"] for r in runs] == ["p"]
        own = await c.post("/v1/runs/d/fork", json={**fork, "new_run_id": "f1"})
        assert own.status_code == 201, own.text
        assert own.json()["thread"] == "idle"  # its idle thread
        elsewhere = await c.post("/v1/runs/p/fork", json={**fork, "thread": "new"})
        assert elsewhere.status_code == 201 and elsewhere.json()["thread"] == "new"


async def test_chat_endpoints_take_only_the_apis_ids() -> None:
    async with served(MemoryStore()) as s:
        c = s.client
        for body, where in (
            (_agui("x", "a/b"), "runId"),
            (_agui("x y/z", "r1"), "threadId"),
            (_agui("", "r2"), "threadId"),
        ):
            answer = await c.post("/v1/agui/payer", json=body)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"]["message"].startswith(f"{where}: ")
        for header in ("a/b c", "t" * 201):
            answer = await c.post(
                "/v1/openai/chat/completions",
                json={"model": "payer", "messages": [{"role": "user", "content": "hi"}]},
                headers={"X-Mainspring-Thread": header},
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["param"] == "X-Mainspring-Thread"
        assert (await c.get("/v1/runs")).json()["runs"] == []  # nothing started
        fine = await c.post("/v1/agui/payer", json=_agui("ui-7:a@b~c", "r.1_x"))
        assert fine.status_code == 200
        assert (await c.get("/v1/threads/ui-7:a@b~c")).status_code == 200
        assert (await c.get("/v1/runs/agui-r.1_x")).status_code == 200


@pytest.mark.parametrize(
    "value", ["a", "A-z_0.9:@~", "x" * 200, "", "x" * 201, "a/b", "a b", "é", "a\x1fb"]
)
def test_the_id_check_is_the_schemas(value: str) -> None:
    try:
        TypeAdapter(Id).validate_python(value)
        valid = True
    except ValidationError:
        valid = False
    try:
        checked_id(value, "id")
        checked = True
    except Exception:
        checked = False
    assert checked == valid


async def test_two_servers_on_one_postgres_store_start_one_run_per_thread() -> None:
    async with postgres_schema_url() as url, AsyncExitStack() as stack:
        one = await stack.enter_async_context(served(url=url))
        two = await stack.enter_async_context(served(url=url))
        locks = queues_of(one.app.state.mainspring).locks
        assert isinstance(locks, PostgresThreadLocks)
        threads = [f"t{i}" for i in range(8)]
        starts = [
            partial(PATHS[(i + n) % 4], server.client, thread, i)
            for n, thread in enumerate(threads)
            for i, server in enumerate((one, two, one, two))
        ]
        answers = await _at_once(starts)
        assert sum(a.status_code < 300 for a in answers) == len(threads), [
            (a.status_code, a.text[:200]) for a in answers if not _busy(a)
        ]
        for thread in threads:
            runs = (await one.client.get("/v1/runs", params={"thread": thread})).json()["runs"]
            assert len(runs) == 1, (thread, runs)


async def test_a_queued_run_waits_again_if_another_server_took_the_thread() -> None:
    async with served(MemoryStore()) as s:
        c, queues = s.client, queues_of(s.app.state.mainspring)
        rt: Runtime = s.app.state.mainspring.runtime
        await c.post("/v1/threads/t/runs", json={"graph": "support", "input": REFUND,
                     "run_id": "p", "wait": True})  # fmt: skip
        queued = {"graph": "support", "input": HELLO, "multitask": "enqueue", "run_id": "q"}
        assert (await c.post("/v1/threads/t/runs", json=queued)).status_code == 202
        item = queues.queued("", "t")[0]
        async with queues.locked("", "t"):  # as another server would, in the same section
            await rt.cancel("p")
            await rt.start(support, REFUND, run_id="r", thread="t")  # parks
        await rt.handle("r").wait()
        thread = (await c.get("/v1/threads/t")).json()
        assert thread["open_run_id"] == "r" and [q["run_id"] for q in thread["queued"]] == ["q"]
        await rt.cancel("r")
        await item.started.wait()
        run = (await c.get("/v1/runs/q")).json()
        assert run["thread"] == "t" and run["metadata"]["multitask"]["after"] == "p"


async def test_a_queued_run_that_cannot_start_is_seen_on_its_thread() -> None:
    async with served(MemoryStore()) as s:
        c, queues = s.client, queues_of(s.app.state.mainspring)
        rt: Runtime = s.app.state.mainspring.runtime
        await c.post("/v1/threads/t/runs", json={"graph": "support", "input": REFUND,
                     "run_id": "p", "wait": True})  # fmt: skip
        queued = {"graph": "support", "input": HELLO, "multitask": "enqueue", "run_id": "q"}
        assert (await c.post("/v1/threads/t/runs", json=queued)).status_code == 202
        item = queues.queued("", "t")[0]
        await rt.start(support, HELLO, run_id="q")  # its id, taken behind the server's back
        await rt.cancel("p")
        await item.started.wait()
        thread = (await c.get("/v1/threads/t")).json()
        [failed] = thread["queued"]
        assert failed["run_id"] == "q" and failed["status"] == "failed"
        assert "'q' is taken" in failed["error"]
        assert thread["open_run_id"] is None  # it does not hold the thread
        free = await c.post("/v1/threads/t/runs", json={"graph": "support", "input": HELLO})
        assert free.status_code == 201


async def test_the_postgres_thread_lock_waits_bounded_and_replaces_a_dead_connection() -> None:
    async with postgres_schema_url() as url:
        from mainspring.store.postgres import PostgresStore  # asyncpg: the fixture checked

        store = PostgresStore(url)
        locks = PostgresThreadLocks(url, store.target.schema, call_timeout=0.2)
        try:
            async with locks.locked("acme", "t"):  # opens one connection, kept when done
                pass
            [conn] = locks._idle
            conn.terminate()  # as a server restart leaves it
            async with locks.locked("acme", "t"):  # a fresh one, once
                pass
            assert len(locks._idle) == 1 and locks._idle[0] is not conn
            other = PostgresThreadLocks(url, store.target.schema, call_timeout=0.2)
            async with other.locked("acme", "t"):  # another server, in its section
                with pytest.raises(ApiError) as held:
                    async with locks.locked("acme", "t"):
                        raise AssertionError("two servers in one thread's section")
                async with locks.locked("acme", "u"):  # another thread: free
                    pass
            await other.aclose()
            assert held.value.status == 503 and "held by another server" in held.value.message
        finally:
            await locks.aclose()

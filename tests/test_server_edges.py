"""The HTTP API's edges (docs/server.md, "Limits" and "Errors"): values nested too deep,
sequence numbers near 64 bits, conflicting answers, paging while runs start, and the
status of each refusal; over a real runtime through the ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import httpx
import pytest
from anyio.abc import TaskStatus
from typer.testing import CliRunner

from mainspring import END, START, Graph, Runtime
from mainspring.cli import app as cli_app
from mainspring.client import AsyncClient
from mainspring.errors import RunNotFoundError
from mainspring.server import ServerConfig, create_app
from mainspring.server.depth import CLIPPED, MAX_JSON_DEPTH
from mainspring.server.keys.memory import MemoryKeyStore
from mainspring.server.schemas import MAX_SEQ
from mainspring.store import Durability, RunRecord, RunStatus
from tests.cli_graphs import support
from tests.conftest import STORE_BACKENDS, postgres_schema_url
from tests.test_server_api import REFUND, serve

pytestmark = pytest.mark.anyio


class Blob(TypedDict, total=False):
    blob: Any


def keep(s: Blob) -> dict[str, Any]:
    return {}


_g = Graph(Blob, name="blob")
_g.node(keep)
_g.edge(START, "keep")
_g.edge("keep", END)
blob = _g.compile()


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def raw(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@asynccontextmanager
async def api(
    url: str = "memory://", **config: Any
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with Runtime.open(url) as rt:
        app = create_app(rt, graphs=[support, blob], config=ServerConfig(auth=False, **config))
        async with serve(app) as client:
            yield rt, client


# -- H1: depth ---------------------------------------------------------------------------


async def test_values_nested_deeper_than_the_limit_are_refused_naming_the_field() -> None:
    over, at = raw(MAX_JSON_DEPTH + 1), raw(MAX_JSON_DEPTH)
    json = {"content-type": "application/json"}
    async with api() as (_, client):
        for field, body in [
            ("body.metadata", b'{"graph":"blob","metadata":{"a":' + at + b"}}"),
            ("body.input", b'{"graph":"blob","input":{"blob":' + over + b"}}"),
        ]:
            answer = await client.post("/v1/runs", content=body, headers=json)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"]["details"]["problems"][0]["at"] == field
        fine = b'{"graph":"blob","input":{"blob":' + raw(MAX_JSON_DEPTH - 1) + b"}}"
        assert (await client.post("/v1/runs", content=fine, headers=json)).status_code == 201
        parked = (await client.post("/v1/runs", json={"graph": "support", "input": REFUND,
                                                       "wait": True})).json()  # fmt: skip
        resume = b'{"value":' + over + b"}"
        answer = await client.post(f"/v1/runs/{parked['run_id']}/resume", content=resume,
                                   headers=json)  # fmt: skip
        assert answer.status_code == 422
        assert answer.json()["error"]["details"]["problems"][0]["at"] == "body.value"
        chat = {"model": "x", "messages": [{"role": "user", "content": nested(200)}]}
        answer = await client.post("/v1/openai/chat/completions", json=chat)
        assert answer.status_code in (400, 422), answer.text
        agui = {"threadId": "t", "runId": "r", "state": nested(200), "messages": [],
                "tools": [], "context": [], "forwardedProps": {}}  # fmt: skip
        answer = await client.post("/v1/agui/x", json=agui)
        assert answer.status_code == 422, answer.text
        assert "nested deeper than 64 levels" in answer.text


async def test_runs_stored_with_deep_values_are_shown_clipped_never_a_500(tmp_path: Path) -> None:
    async with api(f"sqlite:///{tmp_path / 'deep.db'}") as (rt, client):
        deep = nested(300)  # written through the Python API, which has no such limit
        handle = await rt.start(blob, {"blob": deep}, metadata={"a": deep})
        await handle.result()
        await rt.start(blob, {"blob": 1}, metadata={"fine": True})
        listed = await client.get("/v1/runs")
        assert listed.status_code == 200, listed.text
        runs = {r["run_id"]: r for r in listed.json()["runs"]}
        assert len(runs) == 2
        shown = runs[handle.run_id]["metadata"]["a"]
        for _ in range(MAX_JSON_DEPTH - 1):  # the 65th level
            shown = shown[0]
        assert shown == CLIPPED
        for path in ["", "/events", "/state", "/trace?io=true"]:
            answer = await client.get(f"/v1/runs/{handle.run_id}{path}")
            assert answer.status_code == 200, (path, answer.text)
        assert CLIPPED in (await client.get(f"/v1/runs/{handle.run_id}/events")).text


# -- M1: answers racing ------------------------------------------------------------------


async def test_the_same_interrupt_approved_at_once_is_answered_once_never_a_500(
    tmp_path: Path,
) -> None:
    async with api(f"sqlite:///{tmp_path / 'race.db'}") as (_, client):  # SQLite: it races
        for _ in range(3):
            run = (await client.post("/v1/runs", json={"graph": "support", "input": REFUND,
                                                        "wait": True})).json()  # fmt: skip
            iid = run["outcome"]["interrupts"][0]["interrupt_id"]
            path = f"/v1/runs/{run['run_id']}/interrupts/{iid}/approve"
            answers: list[httpx.Response] = []

            async def approve(path: str = path, into: list[httpx.Response] = answers) -> None:
                into.append(await client.post(path, json={"wait": True}))

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(approve)
            statuses = sorted(a.status_code for a in answers)
            assert set(statuses) <= {200, 404, 409}, [a.text for a in answers]
            assert statuses.count(200) >= 1
            for a in answers:
                if a.status_code == 409:
                    assert a.json()["error"]["code"] == "run_state"
            after = (await client.get(f"/v1/runs/{run['run_id']}")).json()
            assert after["status"] == "finished"


# -- M4, L5, L12, L13: probes and a store that is down -------------------------------------


class Proxy:
    """A TCP proxy in front of PostgreSQL that can stop passing bytes (a store that hangs)."""

    def __init__(self) -> None:
        self.flowing = anyio.Event()
        self.flowing.set()
        self.port = 0

    async def serve(self, *, task_status: TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._one)

    async def _one(self, client: anyio.abc.SocketStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", 5432)
        async with client, upstream, anyio.create_task_group() as tg:
            tg.start_soon(self._pipe, client, upstream, tg.cancel_scope)
            tg.start_soon(self._pipe, upstream, client, tg.cancel_scope)

    async def _pipe(
        self, a: anyio.abc.SocketStream, b: anyio.abc.SocketStream, scope: anyio.CancelScope
    ) -> None:
        try:
            async for chunk in a:
                await self.flowing.wait()
                await b.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        scope.cancel()

    def stop(self) -> None:
        self.flowing = anyio.Event()

    def resume(self) -> None:
        self.flowing.set()


async def test_a_hanging_store_makes_readiness_and_reads_503_soon() -> None:
    async with postgres_schema_url() as url, anyio.create_task_group() as tg:
        proxy = Proxy()
        await tg.start(proxy.serve)
        parts = urlsplit(url)
        proxied = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:"
                                                   f"{proxy.port}"))  # fmt: skip
        config = {"ready_timeout": 0.2, "request_store_timeout": 0.3}
        async with api(proxied, **config) as (_, client):
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.head("/healthz")).status_code == 200
            assert (await client.head("/readyz")).status_code == 200
            proxy.stop()
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "did not answer" in ready.json()["reason"]
            listed = await client.get("/v1/runs")
            assert listed.status_code == 503
            error = listed.json()["error"]
            assert error == {"code": "store_unavailable", "message": error["message"]}
            assert "127.0.0.1" not in error["message"] and str(proxy.port) not in listed.text
            proxy.resume()
            assert (await client.get("/readyz")).status_code == 200
        tg.cancel_scope.cancel()


async def test_probes_and_the_consoles_files_are_never_rate_limited() -> None:
    keys = MemoryKeyStore()
    config = ServerConfig(rate=0.001, burst=1)
    app = create_app("memory://", graphs=[support], keys=keys, config=config)
    async with serve(app) as client:
        bad = {"Authorization": "Bearer ms_nope_nope"}
        await client.get("/v1/runs", headers=bad)
        assert (await client.get("/v1/runs", headers=bad)).status_code == 429
        for _ in range(3):
            assert (await client.get("/healthz", headers=bad)).status_code == 200
            assert (await client.get("/readyz", headers=bad)).status_code == 200
            assert (await client.head("/healthz", headers=bad)).status_code == 200
            assert (await client.head("/readyz", headers=bad)).status_code == 200
            assert (await client.get("/")).status_code == 200  # a page loads before its key
            assert (await client.get("/console/auth.json")).status_code == 200


# -- M2: numbers near 64 bits ------------------------------------------------------------


@asynccontextmanager
async def a_store(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "postgres":
        async with postgres_schema_url() as url:
            yield url
    else:
        yield "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 's.db'}"


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_sequence_numbers_and_times_are_bounded_422_never_a_500(
    backend: str, tmp_path: Path
) -> None:
    async with a_store(backend, tmp_path) as url, api(url) as (_, client):
        run = (await client.post("/v1/runs", json={"graph": "support", "wait": True,
               "input": {"text": "hi", "amount": 10**30}})).json()  # fmt: skip
        base = f"/v1/runs/{run['run_id']}"
        for path, status in [
            (f"{base}/events?after={MAX_SEQ}", 200),
            (f"{base}/events?after={MAX_SEQ + 1}", 422),
            (f"{base}/events?after={2**63 - 1}", 422),
            (f"{base}/state?at={2**63}", 422),
            ("/v1/runs?created_after=inf", 422),
            ("/v1/runs?created_before=nan", 422),
            (f"{base}/events", 200),  # the int past 64 bits is shown as it is
        ]:
            answer = await client.get(path)
            assert answer.status_code == status, (path, answer.text)
        assert "1000000000000000000000000000000" in answer.text
        forked = await client.post(f"{base}/fork", json={"at": 2**63})
        assert forked.status_code == 422


# -- M7: keyset paging ---------------------------------------------------------------------


async def put_run(rt: Runtime, run_id: str, created_at: float) -> None:
    record = RunRecord(run_id, "support", None, RunStatus.FINISHED, created_at, created_at)
    await rt.store.create_run(record, [], Durability.SYNC)


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_paging_by_cursor_neither_repeats_nor_skips_while_runs_start(
    backend: str, tmp_path: Path
) -> None:
    async with a_store(backend, tmp_path) as url, api(url) as (rt, client):
        # Ties on created_at (the cursor's hard case) around runs created before and after.
        times = {"a": 999.0, "b": 999.0, **{f"t{i}": 1000.0 for i in range(7)}, "z": 1001.0}
        for run_id, at in times.items():
            await put_run(rt, run_id, at)
        expected = sorted(times, key=lambda r: (times[r], r), reverse=True)
        seen: list[str] = []
        page = (await client.get("/v1/runs", params={"limit": 2})).json()
        new = 0
        while True:
            seen += [r["run_id"] for r in page["runs"]]
            if page["next_cursor"] is None:
                break
            new += 1  # a run starts between pages: newer, so not on the later pages
            await put_run(rt, f"new{new}", 2000.0 + new)
            await put_run(rt, "t9", 1000.0)  # a tie sorting before the cursor: newer too
            params = {"limit": 2, "cursor": page["next_cursor"]}
            page = (await client.get("/v1/runs", params=params)).json()
        assert seen == expected
        bounded = await client.get("/v1/runs", params={"limit": 3, "created_before": 1000.5})
        cursor = bounded.json()["next_cursor"]
        rest = await client.get("/v1/runs", params={"cursor": cursor, "created_after": 999.5})
        assert [r["run_id"] for r in rest.json()["runs"]] == [
            "t4",
            "t3",
            "t2",
            "t1",
            "t0",
        ]  # after t9, t6, t5
        skipped = await client.get("/v1/runs", params={"cursor": cursor, "offset": 3})
        assert [r["run_id"] for r in skipped.json()["runs"]] == ["t1", "t0", "b", "a"]
        answer = await client.get("/v1/runs", params={"cursor": "nope"})
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "cursor_not_found"


async def test_the_clients_iter_runs_pages_by_cursor() -> None:
    async with api() as (rt, client):
        for i in range(5):
            await put_run(rt, f"r{i}", 1000.0 + i // 2)
        transport = client._transport  # the same app, lifespan running
        async with AsyncClient("http://api", transport=transport) as ms:
            found = []
            async for run in ms.iter_runs(page=2):
                found.append(run.run_id)
                if len(found) == 2:
                    await put_run(rt, "late", 5000.0)  # starts during the iteration
        assert found == ["r4", "r3", "r2", "r1", "r0"]


# -- L1, L3, L9, L10, L11: answers and their statuses ------------------------------------


async def test_approve_comment_is_journaled_and_bad_resumes_say_what_is_wrong() -> None:
    async with api() as (_, client):
        run = (await client.post("/v1/runs", json={"graph": "support", "input": REFUND,
                                                    "wait": True})).json()  # fmt: skip
        base = f"/v1/runs/{run['run_id']}"
        iid = run["outcome"]["interrupts"][0]["interrupt_id"]
        both = await client.post(f"{base}/resume", json={"value": 1, "values": {iid: 1}})
        assert both.status_code == 422, both.text
        unknown = await client.post(f"{base}/resume", json={"value": 1, "interrupt_id": "no"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "interrupt_not_found"
        unknown = await client.post(f"{base}/resume", json={"values": {"no": 1}})
        assert unknown.json()["error"]["code"] == "interrupt_not_found"
        approved = await client.post(f"{base}/interrupts/{iid}/approve",
                                     json={"comment": "ok by finance", "wait": True})  # fmt: skip
        assert approved.status_code == 200, approved.text
        events = (await client.get(f"{base}/events", params={"kind": "resumed"})).json()
        assert [e["data"].get("actor") for e in events["events"]] == ["local: ok by finance"]
        bad_tenant = {"graph": "support", "input": REFUND, "metadata": {"tenant": 5}}
        answer = await client.post("/v1/runs", json=bad_tenant)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["details"]["problems"][0]["at"] == "body.metadata"


class Gate(TypedDict, total=False):
    n: int


async def test_replaying_a_running_run_is_409_not_a_false_divergence() -> None:
    release = anyio.Event()
    entered = anyio.Event()

    async def hold(s: Gate) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return {"n": 1}

    g = Graph(Gate, name="gate")
    g.node(hold)
    g.edge(START, "hold")
    g.edge("hold", END)
    gate = g.compile()
    async with Runtime.open("memory://") as rt:
        app = create_app(rt, graphs=[gate], config=ServerConfig(auth=False))
        async with serve(app) as client:
            run = (await client.post("/v1/runs", json={"graph": "gate", "input": {}})).json()
            await entered.wait()
            replay = await client.post(f"/v1/runs/{run['run_id']}/replay")
            assert replay.status_code == 409, replay.text
            assert replay.json()["error"]["code"] == "run_state"
            release.set()
            await rt.handle(run["run_id"]).result()
            replay = await client.post(f"/v1/runs/{run['run_id']}/replay")
            assert replay.status_code == 200 and replay.json()["ok"] is True, replay.text


# -- L6, L14: the command's own errors; the client names the server ------------------------


def test_serve_on_a_file_that_is_no_store_says_so_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    result = CliRunner().invoke(cli_app, ["serve", "--store", f"sqlite:///{junk}", "--port", "0"])
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert "cannot open the store" in result.stderr and "is not a SQLite file" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_cors_origins_are_checked() -> None:
    for bad in ["not a url", "https://app.example.com/", "app.example.com"]:
        result = CliRunner().invoke(
            cli_app, ["serve", "--store", "memory://", "--no-auth", "--cors", bad]
        )
        assert result.exit_code != 0 and "--cors" in result.stderr, result.stderr
        with pytest.raises(ValueError, match="is not an origin"):
            create_app("memory://", config=ServerConfig(auth=False, cors_origins=(bad,)))
    create_app("memory://", config=ServerConfig(auth=False, cors_origins=("http://[::1]:8080",)))
    create_app("memory://", config=ServerConfig(auth=False, cors_origins=("*",)))  # warned


async def test_the_client_says_which_server_has_no_such_run() -> None:
    async with api() as (_, client), AsyncClient("http://api", transport=client._transport) as ms:
        with pytest.raises(RunNotFoundError, match="on the server at http://api"):
            await ms.get_run("nope")

"""Tenant isolation, generic over the app's own OpenAPI document and WebSocket routes.

Tenant A makes runs (one parked on an interrupt, one finished) on a thread. Then, for
every path and method the app serves (routes added later are covered as they come),
tenant B calls it with A's run, thread and interrupt ids in the path, the query and the
body: a route naming A's run or interrupt answers 404 (403 where B's key lacks the scope),
and no answer of any route carries A's data (an id B did not send, A's input, A's key).
A's own key, given the same paths, gets 200 from every GET: the sweep aims at real data.
Last, A's runs are as A left them: nothing B sent reached them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute
from starlette.routing import BaseRoute
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mainspring.server import ServerConfig, create_app
from mainspring.server.keys import Scope
from mainspring.server.keys.memory import MemoryKeyStore
from tests.cli_graphs import support
from tests.server_harness import serving

pytestmark = pytest.mark.anyio

A, B = "tenant-a-9c1", "tenant-b-4e7"
SECRET = "a-private-words-5d2e"
PARKED, DONE, THREAD = "ra-parked-77f0", "ra-done-31bc", "ta-thread-0d9a"
ALL = frozenset(Scope)


@dataclass
class World:
    app: FastAPI
    url: str
    client: httpx.AsyncClient
    a_key: dict[str, str]
    b_keys: dict[str, dict[str, str]]  # by what they may do: "admin", "read"
    interrupt_id: str = ""
    a_key_id: str = ""
    b_sent: list[str] = field(default_factory=list)  # what B sent so far (its to see again)

    @property
    def private(self) -> dict[str, str]:
        """What of A's no answer to B may carry (unless B sent it itself). Interrupt ids
        are left out: they are a run's own ("1.0.0"), so B's runs have the same ones."""
        return {
            "parked run": PARKED,
            "finished run": DONE,
            "thread": THREAD,
            "input": SECRET,
            "key": self.a_key_id,
            "tenant": A,
        }


@pytest.fixture(params=["memory", "sqlite"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 't.db'}"
    keys = MemoryKeyStore()
    app = create_app(url, graphs=[support], keys=keys, config=ServerConfig(rate=0))
    a_info, a_key = await keys.create(A, ALL)
    b_keys = {}
    for label, scopes in (("admin", ALL), ("read", frozenset({Scope.READ}))):
        _, key = await keys.create(B, scopes)
        b_keys[label] = {"Authorization": f"Bearer {key}"}
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        w = World(app, base, client, {"Authorization": f"Bearer {a_key}"}, b_keys)
        w.a_key_id = a_info.key_id
        await make_a_data(w)
        yield w


async def make_a_data(w: World) -> None:
    refund: dict[str, Any] = {"text": f"refund {SECRET}", "amount": 250}
    for run_id, text in ((DONE, {"text": f"hello {SECRET}"}), (PARKED, refund)):
        body: dict[str, Any] = {"graph": "support", "input": text, "run_id": run_id}
        body["thread"] = THREAD
        body |= {"wait": True, "multitask": "enqueue"}
        started = await w.client.post("/v1/runs", json=body, headers=w.a_key)
        assert started.status_code == 201, started.text
    parked = (await w.client.get(f"/v1/runs/{PARKED}", headers=w.a_key)).json()
    assert parked["status"] == "interrupted", parked
    w.interrupt_id = parked["outcome"]["interrupts"][0]["interrupt_id"]
    # B has data of its own too, so its lists are not empty by accident.
    mine = {"graph": "support", "input": {"text": "hello from b"}, "wait": True}
    assert (await w.client.post("/v1/runs", json=mine, headers=w.b_keys["admin"])).is_success


# -- requests built from the OpenAPI document -----------------------------------------------


def id_value(name: str, w: World) -> Any:
    """A's value for a parameter or field, by its name; None for names that carry no id."""
    values: dict[str, Any] = {
        "run_id": PARKED,
        "interrupt_id": w.interrupt_id,
        "iid": w.interrupt_id,
        "thread": THREAD,
        "name": "support",
        "graph": "support",
        "model": "support",  # the OpenAI-compatible endpoint's model: a graph's name
        "threadId": THREAD,  # AG-UI's names
        "runId": DONE,
        "values": {w.interrupt_id: True},
    }
    return values.get(name)


def resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The object schema a body refers to (through ``$ref`` and ``anyOf [X, null]``)."""
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return resolve(option, doc)
    if "$ref" in schema:
        found: dict[str, Any] = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            found = found[part]
        return resolve(found, doc)
    return schema


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # the template, e.g. /v1/runs/{run_id}
    url: str
    query: dict[str, Any]
    body: dict[str, Any] | None
    names_a_run: bool  # a path parameter is A's run or interrupt: 404 expected
    variant: str

    def sent(self) -> str:
        return json.dumps([self.url, self.query, self.body])


def calls(w: World) -> Iterator[Call]:
    doc = w.app.openapi()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            params = op.get("parameters", [])
            in_path = [p["name"] for p in params if p["in"] == "path"]
            url = path
            for name in in_path:
                value = id_value(name, w)
                assert value is not None, f"{method} {path}: no A value for {{{name}}}"
                url = url.replace(f"{{{name}}}", str(value))
            names_a_run = any(n in ("run_id", "interrupt_id", "iid") for n in in_path)
            query_names = [p["name"] for p in params if p["in"] == "query"]
            ids = {n: id_value(n, w) for n in query_names if isinstance(id_value(n, w), str)}
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            bodies: dict[str, dict[str, Any] | None] = {"plain": None}
            if schema:
                bodies = body_variants(resolve(schema["schema"], doc), w)
            for variant, body in bodies.items():
                yield Call(method.upper(), path, url, {}, body, names_a_run, variant)
            if ids:
                yield Call(
                    method.upper(), path, url, ids, bodies.get("required"), names_a_run, "query ids"
                )
            if "tenant" in query_names:
                query = {"tenant": A}
                yield Call(
                    method.upper(),
                    path,
                    url,
                    query,
                    bodies.get("required"),
                    names_a_run,
                    "query tenant",
                )


def body_variants(schema: dict[str, Any], w: World) -> dict[str, dict[str, Any] | None]:
    """Bodies to send: the required fields only, plus every id field set to A's, plus the
    tenant field (if any) set to A."""
    props: dict[str, Any] = schema.get("properties", {})
    required = {name: filler(name, w) for name in schema.get("required", [])}
    required |= {"wait": False} if "wait" in props else {}
    if "input" in props:
        required["input"] = {"text": "hello from b"}
    with_ids = dict(required)
    for name in props:
        value = id_value(name, w)
        if value is not None and name != "name":
            with_ids[name] = value
    if "run_id" in props:
        with_ids["run_id"] = DONE  # a run id A took: B may not get A's run back
    variants: dict[str, dict[str, Any] | None] = {"required": required, "ids": with_ids}
    if "tenant" in props:
        variants["tenant"] = {**required, "tenant": A}
    return variants


def filler(name: str, w: World) -> Any:
    value = id_value(name, w)
    if value is not None:
        return value
    return {"args": {}, "input": {"text": "hello from b"}}.get(name, "x")


def websocket_routes(
    routes: Sequence[BaseRoute], prefix: str = ""
) -> Iterator[tuple[str, APIWebSocketRoute]]:
    """Every WebSocket route (with its full path), in included routers too (FastAPI keeps
    those as routers of their own since 0.16x)."""
    for route in routes:
        if isinstance(route, APIWebSocketRoute):
            yield prefix + route.path, route
        router = getattr(route, "original_router", None)
        if router is not None:
            context = getattr(route, "include_context", None)
            yield from websocket_routes(router.routes, prefix + getattr(context, "prefix", ""))


# -- the sweep --------------------------------------------------------------------------------


async def send(w: World, call: Call, headers: dict[str, str]) -> httpx.Response:
    """The answer to ``call``; a stream is read to its first event (enough to see whose)."""
    request = w.client.build_request(
        call.method, call.url, params=call.query, json=call.body, headers=headers
    )
    response = await w.client.send(request, stream=True)
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            text = b""
            async for chunk in response.aiter_raw():
                text += chunk
                if b"\n\n" in text:  # the first event (or keep-alive comment)
                    break
            response._content = text  # what was read of the stream, for the checks
        else:
            await response.aread()
    finally:
        await response.aclose()
    return response


def leaked(w: World, call: Call, response: httpx.Response) -> list[str]:
    """What of A's the answer shows that B never sent (B may name a thread ``ta-...`` of
    its own: thread names are each tenant's own)."""
    w.b_sent.append(call.sent())
    sent = "".join(w.b_sent)
    text = response.content.decode(errors="replace")
    return [
        what for what, value in w.private.items() if value and value not in sent and value in text
    ]


async def test_another_tenants_ids_are_not_found_and_nothing_of_theirs_is_shown(
    world: World,
) -> None:
    w = world
    swept = list(calls(w))
    assert {c.path for c in swept} >= {"/v1/runs/{run_id}", "/v1/runs"}  # the API is there
    failures: list[str] = []
    for call in swept:
        for label, headers in w.b_keys.items():
            response = await send(w, call, headers)
            where = f"{call.method} {call.url} ({call.variant}, B {label} key)"
            status = response.status_code
            if response.status_code >= 500:
                failures.append(f"{where}: {status} {response.text[:200]}")
            if call.names_a_run and status != 404 and not (label == "read" and status == 403):
                failures.append(f"{where}: {status}, not 404: {response.text[:200]}")
            if call.variant.endswith("tenant") and status < 400:
                failures.append(f"{where}: {status} for tenant={A!r} (B's key)")
            if found := leaked(w, call, response):
                failures.append(f"{where}: shows A's {', '.join(found)}: {response.text[:300]}")
    assert not failures, "\n".join(failures)
    await a_runs_are_as_a_left_them(w)


async def a_runs_are_as_a_left_them(w: World) -> None:
    """Nothing B sent reached A's runs: the parked one waits on its interrupt still."""
    parked = (await w.client.get(f"/v1/runs/{PARKED}", headers=w.a_key)).json()
    assert parked["status"] == "interrupted"
    assert [i["interrupt_id"] for i in parked["outcome"]["interrupts"]] == [w.interrupt_id]
    done = (await w.client.get(f"/v1/runs/{DONE}", headers=w.a_key)).json()
    assert done["status"] == "finished"
    mine = (await w.client.get("/v1/runs", headers=w.a_key)).json()["runs"]
    assert sorted(r["run_id"] for r in mine) == sorted([PARKED, DONE])
    thread = (await w.client.get(f"/v1/threads/{THREAD}", headers=w.a_key)).json()
    assert {r["run_id"] for r in thread["runs"]} == {PARKED, DONE}


async def test_the_sweep_aims_at_real_data(world: World) -> None:
    """A's own key gets 200 from every GET of A's runs and threads the sweep sends B."""
    w = world
    aimed = 0
    for call in calls(w):
        if call.method != "GET" or call.variant != "plain":
            continue
        response = await send(w, call, w.a_key)
        assert response.status_code < 500, (call.url, response.text[:300])
        if call.names_a_run or "{thread}" in call.path:
            assert response.status_code == 200, (call.url, response.text[:300])
            aimed += 1
    assert aimed >= 6  # runs/{id}, its state, events, trace, stream; threads/{thread}


async def test_another_tenants_streams_are_refused_on_every_websocket_route(
    world: World,
) -> None:
    w = world
    routes = list(websocket_routes(w.app.routes))
    assert routes, "the streams' WebSocket route is expected"
    for path, route in routes:
        for name in route.param_convertors:
            path = path.replace(f"{{{name}}}", str(id_value(name, w)))
        key = w.b_keys["admin"]["Authorization"].removeprefix("Bearer ")
        url = w.url.replace("http", "ws", 1) + path
        async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                message = await ws.recv()
                pytest.fail(f"{path}: B received {message!r}")
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404, path
        assert SECRET not in closed.value.rcvd.reason

"""The HTTP API's edges (docs/server.md, "Limits" and "Errors"): values nested too deep,
sequence numbers near 64 bits, conflicting answers, paging while runs start, and the
status of each refusal; over a real runtime through the ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

import httpx
import pytest

from mainspring import END, START, Graph, Runtime
from mainspring.server import ServerConfig, create_app
from mainspring.server.depth import CLIPPED, MAX_JSON_DEPTH
from tests.cli_graphs import support
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


async def test_runs_stored_with_deep_values_are_shown_clipped_never_a_500(tmp_path: Any) -> None:
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

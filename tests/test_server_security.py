"""The server's guards over a real uvicorn server: keys and scopes, body size, rate limits,
CORS, security headers, and errors without tracebacks."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mainspring.server import ServerConfig, create_app
from mainspring.server.auth import Caller, require
from mainspring.server.keys import Scope
from mainspring.server.keys.memory import MemoryKeyStore
from mainspring.server.security import CONSOLE_CSP
from tests.cli_graphs import support
from tests.server_harness import serving

pytestmark = pytest.mark.anyio

probe = APIRouter()
Reader = Annotated[Caller, Depends(require(Scope.READ))]
Runner = Annotated[Caller, Depends(require(Scope.RUN))]


@probe.get("/v1/probe")
async def read_probe(request: Request, caller: Reader) -> dict[str, Any]:
    return {"tenant": caller.tenant, "key": caller.principal.key_id, "query": request.url.query}


@probe.post("/v1/probe")
async def run_probe(request: Request, caller: Runner) -> dict[str, int]:
    return {"received": len(await request.body())}


@probe.get("/v1/boom")
async def boom(caller: Reader) -> None:
    raise RuntimeError("password=hunter2 leaked into an exception")


class Server:
    def __init__(self, app: FastAPI, keys: MemoryKeyStore, client: httpx.AsyncClient) -> None:
        self.app, self.keys, self.client = app, keys, client

    async def key(self, *scopes: Scope, tenant: str = "acme") -> dict[str, str]:
        _, key = await self.keys.create(tenant, frozenset(scopes))
        return {"Authorization": f"Bearer {key}"}


async def start(config: ServerConfig) -> AsyncIterator[Server]:
    keys = MemoryKeyStore()
    app = create_app("memory://", graphs=[support], keys=keys, config=config)
    app.include_router(probe)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield Server(app, keys, client)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for s in start(ServerConfig(max_body_bytes=1000)):
        yield s


def assert_secured(response: httpx.Response, *, api: bool = True) -> None:
    h = response.headers
    assert h["x-content-type-options"] == "nosniff"
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "no-referrer"
    assert h["content-security-policy"] == CONSOLE_CSP
    assert "frame-ancestors 'none'" in CONSOLE_CSP and "'unsafe-inline'" not in CONSOLE_CSP
    assert re.fullmatch(r"[0-9a-f]{16}", h["x-request-id"])
    if api:
        assert h["cache-control"] == "no-store"


# -- keys and scopes ----------------------------------------------------------------------------


async def test_a_key_acts_as_its_tenant_within_its_scopes(server: Server) -> None:
    reader = await server.key(Scope.READ)
    ok = await server.client.get("/v1/probe", headers=reader)
    assert ok.status_code == 200 and ok.json()["tenant"] == "acme"
    assert_secured(ok)
    denied = await server.client.post("/v1/probe", headers=reader, content=b"{}")
    assert denied.status_code == 403
    assert denied.json()["error"] == {
        "code": "forbidden",
        "message": "this API key lacks the 'run' scope",
    }
    admin = await server.key(Scope.ADMIN)
    assert (await server.client.post("/v1/probe", headers=admin, content=b"{}")).status_code == 200
    operator = await server.key(Scope.READ, tenant="*")
    assert (await server.client.get("/v1/probe", headers=operator)).json()["tenant"] is None


async def test_missing_unknown_and_revoked_keys_get_401(server: Server) -> None:
    missing = await server.client.get("/v1/probe")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "mainspring keys create" in missing.json()["error"]["message"]
    assert_secured(missing)
    info, key = await server.keys.create("acme", frozenset({Scope.READ}))
    assert (await server.client.get("/v1/probe", headers={"X-API-Key": key})).status_code == 200
    await server.keys.revoke(info.key_id)
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    answers = [
        await server.client.get("/v1/probe", headers={"Authorization": f"Bearer {bad}"})
        for bad in (key, wrong_secret, "ms_0000000000000000_" + "A" * 43, "garbage")
    ]
    assert {r.status_code for r in answers} == {401}
    assert {r.json()["error"]["message"] for r in answers} == {"the API key is unknown or revoked"}


async def test_a_key_in_the_query_is_taken_then_removed_from_the_request(server: Server) -> None:
    _, key = await server.keys.create("acme", frozenset({Scope.READ}))
    found = await server.client.get("/v1/probe", params={"api_key": key, "after": "7"})
    assert found.status_code == 200
    assert found.json()["query"] == "after=7"  # the route (and the access log) never see it


# -- errors -------------------------------------------------------------------------------------


async def test_an_exception_in_a_route_is_a_500_with_a_request_id_and_no_traceback(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mainspring.server")
    response = await server.client.get("/v1/boom", headers=await server.key(Scope.READ))
    assert response.status_code == 500
    assert_secured(response)
    request_id = response.headers["x-request-id"]
    assert response.json() == {
        "error": {
            "code": "internal",
            "message": f"internal error; the server log has it as {request_id}",
            "details": {"request_id": request_id},
        }
    }
    assert "Traceback" not in response.text and "hunter2" not in response.text
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the log has the traceback


async def test_unknown_paths_and_methods_answer_the_error_json(server: Server) -> None:
    missing = await server.client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert_secured(missing)
    wrong = await server.client.delete("/v1/probe")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


# -- request size -------------------------------------------------------------------------------


async def test_bodies_over_the_limit_get_413_with_or_without_a_length(server: Server) -> None:
    runner = await server.key(Scope.RUN)
    at_limit = await server.client.post("/v1/probe", headers=runner, content=b"x" * 1000)
    assert at_limit.json() == {"received": 1000}
    declared = await server.client.post("/v1/probe", headers=runner, content=b"x" * 1001)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "too_large"
    assert "1000 bytes" in declared.json()["error"]["message"]
    assert_secured(declared)

    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"y" * 300

    small = await server.client.post("/v1/probe", headers=runner, content=chunks(3))
    assert small.json() == {"received": 900}
    chunked = await server.client.post("/v1/probe", headers=runner, content=chunks(10))
    assert "content-length" not in chunked.request.headers  # sent chunked
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "too_large"


# -- rate limits --------------------------------------------------------------------------------


@pytest.fixture
async def limited() -> AsyncIterator[Server]:
    # One token in 1000 s: the third request of a caller is refused, whatever the timing.
    async for s in start(ServerConfig(rate=0.001, burst=2)):
        yield s


async def test_each_key_has_its_own_bucket_and_429_says_when_to_retry(limited: Server) -> None:
    first, second = await limited.key(Scope.READ), await limited.key(Scope.READ)
    codes = [(await limited.client.get("/v1/probe", headers=first)).status_code for _ in range(2)]
    assert codes == [200, 200]
    refused = await limited.client.get("/v1/probe", headers=first)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1000"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "API key" in refused.json()["error"]["message"]
    assert_secured(refused)
    assert (await limited.client.get("/v1/probe", headers=second)).status_code == 200
    # Requests without a (valid) key share their client address's bucket, not a key's.
    # (Health and readiness probes are never limited.)
    anonymous = [(await limited.client.get("/v1/me")).status_code for _ in range(3)]
    assert anonymous == [401, 401, 429]
    assert (await limited.client.get("/healthz")).status_code == 200
    bad_key = {"Authorization": "Bearer ms_0000000000000000_" + "A" * 43}
    assert (await limited.client.get("/v1/probe", headers=bad_key)).status_code == 429


async def test_a_server_without_keys_has_no_rate_limit() -> None:
    async for s in start(ServerConfig(auth=False, rate=0.001, burst=1)):
        codes = {(await s.client.get("/v1/probe")).status_code for _ in range(3)}
        assert codes == {200}


async def test_websockets_take_from_the_same_buckets(limited: Server) -> None:
    key = (await limited.key(Scope.READ))["Authorization"].removeprefix("Bearer ")
    url = str(limited.client.base_url).replace("http", "ws", 1) + "/v1/runs/nope/ws"
    codes = []
    for _ in range(3):
        async with connect(f"{url}?api_key={key}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        codes.append(closed.value.rcvd.code)
    assert codes == [4404, 4404, 4429]  # not found twice (a token each), then limited


# -- CORS ---------------------------------------------------------------------------------------


async def test_cors_is_off_by_default(server: Server) -> None:
    reader = await server.key(Scope.READ)
    origin = {"Origin": "https://elsewhere.example"}
    simple = await server.client.get("/v1/probe", headers={**reader, **origin})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    preflight = await server.client.options(
        "/v1/probe", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.fixture
async def cors() -> AsyncIterator[Server]:
    async for s in start(ServerConfig(cors_origins=("https://console.example",))):
        yield s


async def test_cors_allows_the_configured_origins_only(cors: Server) -> None:
    preflight = await cors.client.options(
        "/v1/probe",
        headers={
            "Origin": "https://console.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://console.example"
    assert "access-control-allow-credentials" not in preflight.headers
    reader = await cors.key(Scope.READ)
    allowed = await cors.client.get(
        "/v1/probe", headers={**reader, "Origin": "https://console.example"}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://console.example"
    assert "Retry-After" in allowed.headers["access-control-expose-headers"]
    other = await cors.client.get("/v1/probe", headers={**reader, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# -- headers on pages ---------------------------------------------------------------------------


async def test_the_console_paths_get_the_strict_policy(server: Server) -> None:
    page = await server.client.get("/")
    assert_secured(page, api=False)


async def test_the_openapi_browser_allows_its_own_inline_script_by_hash(server: Server) -> None:
    docs = await server.client.get("/docs")
    assert docs.status_code == 200
    policy = docs.headers["content-security-policy"]
    scripts = re.findall(r"<script>(.*?)</script>", docs.text, re.S)
    assert scripts
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert docs.headers["x-frame-options"] == "DENY"


# -- the docs' example ----------------------------------------------------------------------------


def test_the_docs_example_prints_what_the_page_says(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "server-security.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    shown = re.search(r"\nprints\n\n```\n(.*?)```", text, re.S)
    assert code is not None and shown is not None
    exec(compile(code.group(1), "docs/server-security.md", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == shown.group(1)

"""The OpenAPI document of the core routes, fuzzed by schemathesis against a real uvicorn
server: every answer is declared (status, content type, body schema) and no input, however
odd, is a 500. A few runs exist (finished, parked, failed) so that ids can be hit too.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from mainspring.server import ServerConfig, create_app
from tests.cli_graphs import broken, support

CORE = r"^/(healthz|readyz|metrics|v1/(me|graphs|runs|threads|interrupts))"
LIVE = r"/(stream|ws)$"  # the streams' routes have their own tests


def _app() -> Any:
    return create_app("memory://", graphs=[support, broken], config=ServerConfig(auth=False))


schema = (
    schemathesis.openapi.from_dict(_app().openapi())
    .include(path_regex=CORE)
    .exclude(path_regex=LIVE)
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as client:
        while not server.started:  # uvicorn sets it once it listens
            if not thread.is_alive():
                raise RuntimeError("the server did not start")
            threading.Event().wait(0.01)
        for body in (
            {"graph": "support", "input": {"text": "hi"}, "run_id": "done", "thread": "t"},
            {"graph": "support", "input": {"text": "refund", "amount": 5}, "run_id": "parked"},
            {"graph": "broken", "input": {"n": 1}, "run_id": "failed"},
        ):
            assert client.post("/v1/runs", json={**body, "wait": True}).status_code == 201
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_keeps_its_openapi_promises(case: Any, base_url: str) -> None:
    case.call_and_validate(base_url=base_url)

"""The HTTP API fuzzed from its own OpenAPI document (schemathesis): every operation, with
auth on (a real key, the tenant's view of the runtime) and off (the operator's view).

Each server is a real uvicorn on a free port of 127.0.0.1, the app owning its runtime
(``memory://``); schemathesis reads ``/openapi.json`` from it and sends generated requests,
valid and invalid, to every operation. Checks: no 5xx (``not_a_server_error``), and the
answers conform to the document (status code, content type, response schema).

Random path parameters only ever reach 404s, so a few real runs (one finished, one parked
on an interrupt) are started first and the generated run ids, interrupt ids, threads and
graph names are drawn partly from them: the fuzz reaches the routes' working paths too.
Examples are bounded per operation so the file runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mainspring.server import ServerConfig, create_app
from mainspring.server.keys.memory import MemoryKeyStore
from mainspring.server.keys.protocol import Scope
from tests.cli_graphs import broken, support

#: The graphs served: one that parks on an interrupt or finishes, one that fails.
GRAPHS = [support, broken]

#: Generated examples per operation and generation mode (positive and negative).
EXAMPLES = int(os.environ.get("MAINSPRING_FUZZ_EXAMPLES", "12"))  # more: a deeper local run
#: Never a limit a fuzz request reaches: 429s are the rate limiter's tests' business.
UNLIMITED = ServerConfig(rate=1e9, burst=10**9)
#: ``/v1/watch`` streams for as long as the client listens: it is only checked to refuse a
#: request without a key. A run's stream is fuzzed with ``until=park`` (it ends at a park).
ENDLESS = r"^/v1/watch$"

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Live:
    """A served app: its base URL, the key to send (None with auth off) and the ids of the
    runs, interrupts and threads seeded into it."""

    url: str
    key: str | None
    reader: str | None = None  # a read-only key of the same tenant (auth on)
    runs: list[str] = field(default_factory=list)
    interrupts: list[str] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.key is None else {"Authorization": f"Bearer {self.key}"}


class _Server(uvicorn.Server):
    """uvicorn that says when it is serving (or has given up starting)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.up.set()


@pytest.fixture(scope="module")
def open_api() -> Iterator[Live]:
    app = create_app("memory://", graphs=GRAPHS, config=_config(auth=False))
    with _serve(app, None) as live:
        yield live


@pytest.fixture(scope="module")
def keyed_api() -> Iterator[Live]:
    keys = MemoryKeyStore()
    # A tenant's key with every scope (admin too, for /metrics): the tenant's view is fuzzed.
    _, key = asyncio.run(keys.create("acme", frozenset({Scope.ADMIN}), name="fuzz"))
    _, reader = asyncio.run(keys.create("acme", frozenset({Scope.READ}), name="fuzz-read"))
    app = create_app("memory://", graphs=GRAPHS, keys=keys, config=_config(auth=True))
    with _serve(app, key) as live:
        live.reader = reader
        yield live


def _config(*, auth: bool) -> ServerConfig:
    return ServerConfig(auth=auth, rate=UNLIMITED.rate, burst=UNLIMITED.burst, console=False)


class _serve:
    """Run ``app`` on uvicorn in a thread (its own event loop, the app's lifespan), seed it
    with runs, and stop it at the end."""

    def __init__(self, app: FastAPI, key: str | None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = _Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.live = Live(f"http://127.0.0.1:{port}", key)

    def __enter__(self) -> Live:
        self.thread.start()
        assert self.server.up.wait(30), "uvicorn did not start within 30 s"
        assert self.server.started, "uvicorn failed to start (see the log above)"
        _seed(self.live)
        return self.live

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def _seed(live: Live) -> None:
    """A finished run, a parked one (with its interrupt) and a failed one, on three threads."""
    with httpx.Client(base_url=live.url, headers=live.headers, timeout=30) as client:
        for run_id, graph, input, thread in (
            ("fuzz-done", "support", {"text": "hello"}, "t-done"),
            ("fuzz-parked", "support", {"text": "refund please"}, "t-parked"),
            ("fuzz-failed", "broken", {"n": 1}, "t-failed"),
        ):
            body = {"graph": graph, "input": input, "run_id": run_id, "thread": thread}
            started = client.post("/v1/runs", json={**body, "wait": True})
            assert started.status_code == 201, started.text
            live.runs.append(run_id)
            live.threads.append(thread)
        pending = client.get("/v1/interrupts").json()["interrupts"]
        live.interrupts.extend(i["interrupt_id"] for i in pending)
        assert live.interrupts, "the parked run has no pending interrupt"


#: The document the fuzz is generated from: the app's own, as served on /openapi.json.
DOCUMENT = schemathesis.openapi.from_dict(
    create_app("memory://", graphs=GRAPHS, config=_config(auth=False)).openapi()
)
SCHEMA = DOCUMENT.exclude(path_regex=ENDLESS)  # shares DOCUMENT's hooks


def _labels(schema: BaseSchema) -> list[str]:
    labels = []
    for found in schema.get_all_operations():
        if isinstance(found, Err):  # the document itself is broken: say where
            raise found.err()
        labels.append(found.ok().label)
    return sorted(labels)


OPERATIONS, EVERY_OPERATION = _labels(SCHEMA), _labels(DOCUMENT)
#: Real ids the generated path parameters and bodies draw from (filled by the servers' seeds).
KNOWN: dict[str, list[str]] = {"name": [g.name for g in GRAPHS]}


@DOCUMENT.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    if context.operation.path.endswith("/stream") and query is not None:
        return {**query, "until": "park"}  # the stream of a parked run ends, not waits
    return query


@DOCUMENT.hook
def flatmap_path_parameters(context: Any, path: dict[str, Any] | None) -> Any:
    # Often a real id in each slot: the route's working path, not only its 404.
    if not path:
        return st.just(path)
    return st.fixed_dictionaries(
        {
            name: st.sampled_from([value, *KNOWN[name]]) if KNOWN.get(name) else st.just(value)
            for name, value in path.items()
        }
    )


@DOCUMENT.hook
def flatmap_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and "graph" in body:
        return st.sampled_from([body, *({**body, "graph": g.name} for g in GRAPHS)])
    return st.just(body)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests in every CI run: a failure reproduces
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def fuzz(
    label: str,
    live: Live,
    mode: GenerationMode,
    also: Callable[[Case[Any], Any], None] | None = None,
) -> None:
    """Send ``EXAMPLES`` generated requests to one operation and check every answer (with
    ``also(case, response)`` too, if given)."""
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None, label
    KNOWN.update(run_id=live.runs, interrupt_id=live.interrupts, thread=live.threads)

    @FUZZ
    @given(case=operation.as_strategy(mode, hooks=SCHEMA.hooks))
    def check(case: Case[Any]) -> None:
        response = case.call_and_validate(
            base_url=live.url, headers=live.headers, checks=CHECKS, timeout=30
        )
        if also is not None:
            also(case, response)

    try:
        check()
    except Unsatisfiable:
        # Every input of this operation is valid (no body, free-form strings): no negative case.
        if mode is not GenerationMode.NEGATIVE:
            raise
        pytest.skip(f"{label}: no input of this operation can be invalid")


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_without_auth(label: str, mode: GenerationMode, open_api: Live) -> None:
    fuzz(label, open_api, mode)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_with_a_tenant_key(
    label: str, mode: GenerationMode, keyed_api: Live
) -> None:
    fuzz(label, keyed_api, mode)


@pytest.mark.parametrize("label", OPERATIONS)
def test_a_read_only_key_reads_and_is_refused_the_rest(label: str, keyed_api: Live) -> None:
    assert keyed_api.reader is not None
    reader = dataclasses.replace(keyed_api, key=keyed_api.reader)
    # Every POST needs run or approve, /metrics needs admin: a valid request is refused.
    refused = label.startswith("POST ") or label == "GET /metrics"

    def scoped(case: Case[Any], response: Any) -> None:
        lacks_scope = response.status_code == 403 and "scope" in response.text
        if refused:
            assert lacks_scope, (label, response.status_code, response.text)
        else:  # a 403 here may only be another tenant named (code "tenant"), never the scope
            assert not lacks_scope, (label, response.text)

    fuzz(label, reader, GenerationMode.POSITIVE, scoped)


@pytest.mark.parametrize("label", EVERY_OPERATION)
def test_every_operation_refuses_a_request_without_a_key(label: str, keyed_api: Live) -> None:
    operation = DOCUMENT.find_operation_by_label(label)
    assert operation is not None

    @settings(FUZZ, max_examples=3)
    @given(case=operation.as_strategy(hooks=DOCUMENT.hooks))
    def check(case: Case[Any]) -> None:
        response = case.call(base_url=keyed_api.url, timeout=30)
        if case.path in ("/healthz", "/readyz"):  # the only operations open to all
            assert response.status_code == 200
        else:
            assert response.status_code == 401, (label, response.text)

    check()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/runs/fuzz-done/events?after=9223372036854775808", {}),
        ("/v1/runs/fuzz-done/events?after=175822248810070192891616278085632000", {}),
        ("/v1/runs/fuzz-done/stream?after=9223372036854775808", {}),
        ("/v1/runs/fuzz-done/state?at=9223372036854775808", {}),
        ("/v1/runs/fuzz-done/stream", {"Last-Event-ID": "9223372036854775808"}),
    ],
)
def test_a_sequence_number_past_any_journal_is_refused_not_a_500(
    sqlite_api: Live, path: str, headers: dict[str, str]
) -> None:
    """Found by the fuzz: ``after`` beyond 64 bits overflowed SQLite's integers (and, past
    2**64, the JSON encoder) and answered 500. Now a 422 naming the bound, or, for a stream's
    ``Last-Event-ID`` (a header, not validated), capped: the finished run's stream just ends."""
    with httpx.Client(base_url=sqlite_api.url, timeout=30) as client:
        answer = client.get(path, headers=headers)
    if "Last-Event-ID" in headers:
        assert answer.status_code == 200 and "event: end" in answer.text, answer.text
    else:
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_request"


@pytest.fixture(scope="module")
def sqlite_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    db = tmp_path_factory.mktemp("fuzz") / "api.db"
    app = create_app(f"sqlite:///{db}", graphs=GRAPHS, config=_config(auth=False))
    with _serve(app, None) as live:
        yield live

"""The HTTP API's core routes (docs/server.md, "Endpoints"): graphs, runs, state, journal,
trace, interrupts, cancel, fork, replay, threads, metrics and health, over a real
runtime (memory and SQLite stores) through the ASGI app, with the app's lifespan run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mainspring import END, START, Graph, Runtime
from mainspring.server import (
    ALL_TENANTS,
    KeyInfo,
    Principal,
    Scope,
    ServerConfig,
    create_app,
)
from tests.cli_graphs import Ticket, answer, broken, classify, refund, route, support
from tests.conftest import STORE_BACKENDS, postgres_schema_url

pytestmark = pytest.mark.anyio

REFUND = {"text": "refund please", "amount": 250}  # parks on an approval
HELLO = {"text": "hello"}  # finishes at once


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` with the app's lifespan running (ASGITransport does not run it)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@asynccontextmanager
async def api(url: str = "memory://", **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with Runtime.open(url, **options) as rt:
        app = create_app(rt, graphs=[support, broken], config=ServerConfig(auth=False))
        async with serve(app) as client:
            yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with api() as c:
        yield c


async def start(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    answer = await client.post("/v1/runs", json={"graph": "support", "wait": True, **body})
    assert answer.status_code in (200, 201), answer.text
    run: dict[str, Any] = answer.json()
    return run


# -- graphs --------------------------------------------------------------------------------


async def test_graphs_list_their_versions_nodes_edges_and_mermaid(
    client: httpx.AsyncClient,
) -> None:
    listed = (await client.get("/v1/graphs")).json()["graphs"]
    by_name = {g["name"]: g for g in listed}
    assert by_name["support"]["kind"] == "graph"
    assert by_name["support"]["version"] == support.fingerprint
    assert by_name["support"]["versions"] == [support.fingerprint]
    assert by_name["support"]["nodes"] == ["classify", "refund", "answer"]
    one = (await client.get("/v1/graphs/support")).json()
    assert {"source": "classify", "target": "refund", "kind": "branch"} in one["edges"]
    assert {"source": "__start__", "target": "classify", "kind": "edge"} in one["edges"]
    assert one["mermaid"] == support.to_mermaid()
    missing = await client.get("/v1/graphs/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "graph_not_found"
    wrong = await client.get("/v1/graphs/support", params={"version": "v0"})
    assert wrong.status_code == 404


# -- runs ----------------------------------------------------------------------------------


async def test_a_run_started_and_waited_for_answers_its_outcome(
    client: httpx.AsyncClient,
) -> None:
    run = await start(client, input=HELLO, run_id="r1", metadata={"who": "me"})
    assert run["run_id"] == "r1" and run["status"] == "finished"
    assert run["version"] == support.fingerprint and run["metadata"] == {"who": "me"}
    assert run["outcome"]["state"]["replies"] == ["re: hello"]
    got = (await client.get("/v1/runs/r1")).json()
    assert got["outcome"] == run["outcome"] and got["version"] == support.fingerprint


async def test_starting_is_idempotent_by_run_id(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/runs", json={"graph": "support", "input": HELLO, "run_id": "a"})
    assert first.status_code == 201
    again = await client.post("/v1/runs", json={"graph": "support", "input": HELLO, "run_id": "a"})
    assert again.status_code == 200 and again.json()["run_id"] == "a"
    other = await client.post("/v1/runs", json={"graph": "support", "input": REFUND, "run_id": "a"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "run_exists"
    runs = (await client.get("/v1/runs")).json()["runs"]
    assert [r["run_id"] for r in runs] == ["a"]


async def test_bad_requests_are_4xx_naming_what_to_fix(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/v1/runs", json={"graph": "nope", "input": HELLO})
    assert unknown.status_code == 404 and "support" in unknown.json()["error"]["message"]
    bad_input = await client.post("/v1/runs", json={"graph": "support", "input": {"text": 3}})
    assert bad_input.status_code == 422, bad_input.text
    assert bad_input.json()["error"]["code"] == "invalid_input"
    typo = await client.post("/v1/runs", json={"graph": "support", "inputs": HELLO})
    assert typo.status_code == 422 and "inputs" in typo.json()["error"]["message"]
    missing = await client.get("/v1/runs/none")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"
    status = await client.get("/v1/runs", params={"status": "sleeping"})
    assert status.status_code == 422


async def test_a_failed_run_shows_its_error(client: httpx.AsyncClient) -> None:
    run = await start(client, graph="broken", input={"n": 1})
    assert run["status"] == "failed" and run["outcome"]["error"]["type"] == "ValueError"


async def test_runs_list_filters_and_pages(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await start(client, input=HELLO, run_id=f"h{i}", thread="t1")
    await start(client, input=REFUND, run_id="p")
    page = (await client.get("/v1/runs", params={"limit": 2})).json()
    assert [r["run_id"] for r in page["runs"]] == ["p", "h2"] and page["next_offset"] == 2
    rest = (await client.get("/v1/runs", params={"limit": 2, "offset": 2})).json()
    assert [r["run_id"] for r in rest["runs"]] == ["h1", "h0"] and rest["next_offset"] is None
    parked = (await client.get("/v1/runs", params={"status": "interrupted"})).json()["runs"]
    assert [r["run_id"] for r in parked] == ["p"]
    on_thread = (await client.get("/v1/runs", params={"thread": "t1"})).json()["runs"]
    assert len(on_thread) == 3


async def test_state_at_any_sequence_number_and_the_journal_in_pages(
    client: httpx.AsyncClient,
) -> None:
    run = await start(client, input=HELLO, run_id="r")
    last = run["last_seq"]
    now = (await client.get("/v1/runs/r/state")).json()
    assert now["seq"] == last and now["state"]["replies"] == ["re: hello"] and now["next"] == []
    early = (await client.get("/v1/runs/r/state", params={"at": 1})).json()
    assert early["seq"] == 1 and early["state"] == {"text": "hello"}
    assert early["status"] == "running"
    step = (await client.get("/v1/runs/r/state", params={"at": 2})).json()
    assert step["next"] == ["classify"]
    outside = await client.get("/v1/runs/r/state", params={"at": last + 1})
    assert outside.status_code == 409
    page = (await client.get("/v1/runs/r/events", params={"limit": 3})).json()
    assert [e["seq"] for e in page["events"]] == [1, 2, 3] and page["more"]
    assert page["events"][0]["kind"] == "run_started"
    rest = (await client.get("/v1/runs/r/events", params={"after": page["last_seq"]})).json()
    assert rest["events"][-1]["seq"] == last and rest["events"][-1]["kind"] == "finished"
    assert not rest["more"] and rest["last_seq"] == last


async def test_the_trace_is_derived_from_the_journal(client: httpx.AsyncClient) -> None:
    await start(client, input=HELLO, run_id="r")
    trace = (await client.get("/v1/runs/r/trace")).json()
    assert trace["run_id"] == "r" and trace["trace_id"]
    names = [s["name"] for s in trace["spans"]]
    assert any("classify" in n for n in names) and any("answer" in n for n in names)


# -- interrupts, resume, cancel, fork, replay -----------------------------------------------


async def test_interrupts_are_listed_across_runs_and_answered(client: httpx.AsyncClient) -> None:
    for run_id in ("p1", "p2", "p3"):
        assert (await start(client, input=REFUND, run_id=run_id))["status"] == "interrupted"
    await start(client, input=HELLO)
    pending = (await client.get("/v1/interrupts")).json()["interrupts"]
    assert [i["run_id"] for i in pending] == ["p1", "p2", "p3"]  # oldest first
    first = pending[0]
    assert first["node"] == "refund" and first["payload"] == {"approve_refund": 250}
    assert first["graph"] == "support" and first["tenant"] == ""
    url = "/v1/runs/{}/interrupts/{}/{}"
    approved = await client.post(url.format("p1", first["interrupt_id"], "approve"),
                                 json={"wait": True})  # fmt: skip
    assert approved.status_code == 200, approved.text
    assert approved.json()["outcome"]["state"]["replies"] == ["refund issued"]
    rejected = await client.post(url.format("p2", pending[1]["interrupt_id"], "reject"),
                                 json={"reason": "too much", "wait": True})  # fmt: skip
    assert rejected.json()["outcome"]["state"]["replies"] == ["refund declined"]
    edited = await client.post(url.format("p3", pending[2]["interrupt_id"], "edit"),
                               json={"args": {"amount": 10}, "wait": True})  # fmt: skip
    assert edited.json()["status"] == "finished"
    events = (await client.get("/v1/runs/p3/events")).json()["events"]
    resumed = [e for e in events if e["kind"] == "resumed"]
    assert list(resumed[0]["data"]["values"].values()) == [{"args": {"amount": 10}}]
    assert (await client.get("/v1/interrupts")).json()["interrupts"] == []
    gone = await client.post(url.format("p1", first["interrupt_id"], "approve"))
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "interrupt_not_found"


async def test_resume_cancel_fork_and_replay(client: httpx.AsyncClient) -> None:
    await start(client, input=REFUND, run_id="p")
    resumed = await client.post("/v1/runs/p/resume", json={"value": True, "wait": True})
    assert resumed.json()["outcome"]["state"]["replies"] == ["refund issued"]
    again = await client.post("/v1/runs/p/resume", json={"value": True})
    assert again.status_code == 409  # nothing parked any more
    await start(client, input=REFUND, run_id="c")
    cancelled = await client.post("/v1/runs/c/cancel", json={"reason": "duplicate"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    events = (await client.get("/v1/runs/c/events")).json()["events"]
    assert events[-1]["kind"] == "cancelled" and events[-1]["data"]["actor"] == "local: duplicate"
    twice = await client.post("/v1/runs/c/cancel")
    assert twice.status_code == 409
    forked = await client.post(
        "/v1/runs/p/fork", json={"at": 2, "new_run_id": "f", "effects": "reuse"}
    )
    assert forked.status_code == 201, forked.text
    fork = forked.json()
    assert fork["run_id"] == "f" and fork["metadata"]["forked_from"] == {"run_id": "p", "seq": 2}
    refused = await client.post("/v1/runs/p/fork", json={"at": 2})
    assert refused.status_code == 409 and "effects" in refused.json()["error"]["message"]
    report = (await client.post("/v1/runs/p/replay")).json()
    assert report["ok"] and report["divergence"] is None and report["compared"] > 0


# -- threads -------------------------------------------------------------------------------


async def test_threads_list_and_show_their_runs(client: httpx.AsyncClient) -> None:
    await start(client, input=HELLO, thread="t1", run_id="a")
    await start(client, input=HELLO, thread="t1", run_id="b")
    await start(client, input=HELLO, thread="t2", run_id="c")
    threads = (await client.get("/v1/threads")).json()["threads"]
    assert [(t["thread"], t["runs"], t["last_run_id"]) for t in threads] == [
        ("t2", 1, "c"),
        ("t1", 2, "b"),
    ]
    one = (await client.get("/v1/threads/t1")).json()
    assert [r["run_id"] for r in one["runs"]] == ["b", "a"] and one["open_run_id"] is None
    assert (await client.get("/v1/threads/t9")).status_code == 404
    posted = await client.post("/v1/threads/t2/runs", json={"graph": "support", "input": HELLO,
                                                            "wait": True})  # fmt: skip
    assert posted.status_code == 201 and posted.json()["thread"] == "t2"


# -- operations ----------------------------------------------------------------------------


async def test_health_readiness_me_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    me = (await client.get("/v1/me")).json()
    assert me == {"key_id": "local", "tenant": "*", "scopes": ["admin"]}
    await start(client, input=HELLO)
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'mainspring_runs_finished_total{graph="support"} 1.0' in metrics.text
    await start(client, input=HELLO)  # a scrape reads only what is new, and counts it once
    again = (await client.get("/metrics")).text
    assert 'mainspring_runs_finished_total{graph="support"} 2.0' in again


@pytest.fixture(params=STORE_BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'api.db'}"
    else:
        async with postgres_schema_url() as url:
            yield url


async def test_every_store_serves_the_same(store_url: str) -> None:
    async with api(store_url) as client:
        run = await start(client, input=REFUND, run_id="p", thread="t")
        assert run["status"] == "interrupted" and run["version"] == support.fingerprint
        busy = await client.post(
            "/v1/threads/t/runs", json={"graph": "support", "input": HELLO, "multitask": "reject"}
        )
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "thread_busy"
        pending = (await client.get("/v1/interrupts")).json()["interrupts"]
        assert [i["run_id"] for i in pending] == ["p"]
        iid = pending[0]["interrupt_id"]
        done = await client.post(f"/v1/runs/p/interrupts/{iid}/approve", json={"wait": True})
        assert done.json()["status"] == "finished"
        assert (await client.get("/v1/runs/p/state", params={"at": 1})).json()["seq"] == 1
        thread = (await client.get("/v1/threads/t")).json()
        assert thread["open_run_id"] is None and [r["run_id"] for r in thread["runs"]] == ["p"]


# -- keys and tenants ----------------------------------------------------------------------


class Keys:
    """A KeyStore in memory for the tests: key -> principal (the real ones hash, see keys/)."""

    def __init__(self, keys: dict[str, Principal]) -> None:
        self.keys = keys

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def create(
        self, tenant: str, scopes: frozenset[Scope], name: str = ""
    ) -> tuple[KeyInfo, str]:
        raise NotImplementedError

    async def verify(self, key: str) -> Principal | None:
        return self.keys.get(key)

    async def revoke(self, key_id: str) -> bool:
        raise NotImplementedError

    async def list(self, tenant: str | None = None) -> list[KeyInfo]:
        return []


def key(key_id: str, tenant: str, *scopes: Scope) -> tuple[str, Principal]:
    return f"ms_{key_id}_secret", Principal(key_id, tenant, frozenset(scopes))


async def test_keys_scope_every_route_to_their_tenant() -> None:
    keys = dict(
        [
            key("acme", "acme", Scope.READ, Scope.RUN, Scope.APPROVE),
            key("globex", "globex", Scope.READ, Scope.RUN),
            key("reader", "acme", Scope.READ),
            key("op", ALL_TENANTS, Scope.ADMIN),
        ]
    )

    def auth(key_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer ms_{key_id}_secret"}

    async with Runtime.open("memory://") as rt:
        app = create_app(rt, graphs=[support], keys=Keys(keys))
        async with serve(app) as client:
            assert (await client.get("/v1/runs")).status_code == 401
            bad = await client.get("/v1/runs", headers={"Authorization": "Bearer ms_x_y"})
            assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
            assert (await client.get("/healthz")).status_code == 200  # no key needed
            body = {
                "graph": "support",
                "input": REFUND,
                "run_id": "a1",
                "thread": "t",
                "wait": True,
            }
            started = await client.post("/v1/runs", json=body, headers=auth("acme"))
            assert started.status_code == 201 and started.json()["tenant"] == "acme"
            run = started.json()
            iid = run["outcome"]["interrupts"][0]["interrupt_id"]
            # globex: acme's run is not found anywhere, exactly as a missing one
            for path in ("/v1/runs/a1", "/v1/runs/a1/state", "/v1/runs/a1/events",
                         "/v1/runs/a1/trace"):  # fmt: skip
                answer = await client.get(path, headers=auth("globex"))
                assert answer.status_code == 404 and answer.json()["error"]["code"] == (
                    "run_not_found"
                ), path
            for path in ("/v1/runs/a1/cancel", "/v1/runs/a1/fork", "/v1/runs/a1/replay"):
                assert (await client.post(path, headers=auth("globex"))).status_code == 404
            assert (await client.get("/v1/runs", headers=auth("globex"))).json()["runs"] == []
            assert (await client.get("/v1/interrupts", headers=auth("globex"))).json() == {
                "interrupts": []
            }
            assert (await client.get("/v1/threads/t", headers=auth("globex"))).status_code == 404
            # the same run id in globex is refused, without a word about acme's run
            taken = await client.post("/v1/runs", json=body, headers=auth("globex"))
            assert taken.status_code == 409
            # globex's thread "t" is its own: free, though acme's "t" is busy
            own = await client.post("/v1/threads/t/runs", json={"graph": "support",
                                    "input": HELLO}, headers=auth("globex"))  # fmt: skip
            assert own.status_code == 201
            # naming another tenant: operator keys only
            other = await client.post("/v1/runs", json={**body, "run_id": "x", "tenant": "globex"},
                                      headers=auth("acme"))  # fmt: skip
            assert other.status_code == 403 and other.json()["error"]["code"] == "tenant"
            # scopes: a reader cannot start or approve, approve needs its scope, metrics admin
            assert (
                await client.post("/v1/runs", json=body, headers=auth("reader"))
            ).status_code == 403
            approve = f"/v1/runs/a1/interrupts/{iid}/approve"
            assert (await client.post(approve, headers=auth("reader"))).status_code == 403
            assert (await client.get("/metrics", headers=auth("acme"))).status_code == 403
            assert (await client.get("/v1/runs/a1", headers=auth("reader"))).status_code == 200
            # the operator sees and acts on every tenant
            runs = (await client.get("/v1/runs", headers=auth("op"))).json()["runs"]
            assert {r["tenant"] for r in runs} == {"acme", "globex"}
            only = await client.get("/v1/runs", params={"tenant": "acme"}, headers=auth("op"))
            assert [r["run_id"] for r in only.json()["runs"]] == ["a1"]
            for_globex = await client.post("/v1/runs", json={**body, "run_id": "g2", "thread": None,
                                           "tenant": "globex"}, headers=auth("op"))  # fmt: skip
            assert for_globex.status_code == 201 and for_globex.json()["tenant"] == "globex"
            thread = await client.get("/v1/threads/t", params={"tenant": "acme"},
                                      headers=auth("op"))  # fmt: skip
            assert thread.json()["open_run_id"] == "a1"
            done = await client.post(approve, json={"wait": True}, headers=auth("acme"))
            assert done.json()["status"] == "finished"
            events = (await client.get("/v1/runs/a1/events", headers=auth("op"))).json()["events"]
            resumed = [e for e in events if e["kind"] == "resumed"]
            assert resumed[0]["data"]["actor"] == "acme"
            assert (await client.get("/metrics", headers=auth("op"))).status_code == 200
            me = (await client.get("/v1/me", headers={"X-API-Key": "ms_reader_secret"})).json()
            assert me == {"key_id": "reader", "tenant": "acme", "scopes": ["read"]}


def polite(s: Ticket) -> dict[str, Any]:
    return {"replies": ["thank you"]}


_v2 = Graph(Ticket, name="support")  # support with one node more: another version
for _fn in (classify, refund, answer, polite):
    _v2.node(_fn)
_v2.edge(START, "classify")
_v2.branch("classify", route, {"refund": "refund", "other": "answer"})
_v2.edge("refund", "polite")
_v2.edge("answer", "polite")
_v2.edge("polite", END)
support_v2 = _v2.compile()


async def test_graphs_by_module_attr_with_two_versions_each_run_on_its_own() -> None:
    async with Runtime.open("memory://") as rt:
        app = create_app(
            rt, graphs=["tests.cli_graphs:support", support_v2], config=ServerConfig(auth=False)
        )
        async with serve(app) as client:
            (listed,) = (await client.get("/v1/graphs")).json()["graphs"]
            assert listed["ref"] == "tests.cli_graphs:support"
            assert listed["versions"] == [support.fingerprint, support_v2.fingerprint]
            assert listed["version"] == support_v2.fingerprint  # the newest by default
            old = await client.get("/v1/graphs/support", params={"version": support.fingerprint})
            assert old.json()["version"] == support.fingerprint
            run = await start(client, input=REFUND, run_id="old", version=support.fingerprint)
            assert run["version"] == support.fingerprint
            new = await start(client, input=REFUND, run_id="new")
            assert new["version"] == support_v2.fingerprint
            for run_id in ("old", "new"):  # each resumed and replayed by its own version
                done = await client.post(f"/v1/runs/{run_id}/resume", json={"value": True,
                                         "wait": True})  # fmt: skip
                assert done.json()["status"] == "finished"
                assert (await client.post(f"/v1/runs/{run_id}/replay")).json()["ok"]
            assert (await client.get("/v1/runs/old")).json()["version"] == support.fingerprint

"""Tenants (issue 13, item 5): every run belongs to a tenant, every query is scoped by it.

On memory, SQLite and PostgreSQL: the stores' tenant filters; a tenant's view
(``rt.tenant(...)``) that tries to read, list, resume, fork, cancel, replay and stream
another tenant's runs through every public call and gets "not found", exactly as for a
run that does not exist; the same through the CLI (``--tenant``, ``MAINSPRING_TENANT``);
threads that are per tenant (agents too); subgraph runs and forks that stay in their
tenant; per-tenant budgets and tool rate limits that one tenant exhausting leaves the
other untouched; and a store written before tenants, migrated with its tenants found.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from mainspring import (
    END,
    START,
    Context,
    Graph,
    RunExistsError,
    RunNotFoundError,
    RunStatus,
    Runtime,
    SyncRuntime,
    TenantError,
    TenantRuntime,
    append,
)
from mainspring.agents import Agent
from mainspring.cli import app as cli_app
from mainspring.errors import EffectDeniedError, MainspringError
from mainspring.models import Gateway, ModelRequest, ScriptedModel
from mainspring.models.budget_gate import BudgetGate
from mainspring.models.budgets import Budget
from mainspring.store import Durability, Journal, RunIndex, RunQuery, RunRecord, Store
from mainspring.tools import Tool, Toolbox
from tests.budget_graphs import agent_graph
from tests.cli_graphs import support
from tests.conftest import STORE_BACKENDS, needs, postgres_schema_url
from tests.test_store_conformance import events, record

pytestmark = pytest.mark.anyio

REFUND = {"text": "refund please", "amount": 250}  # parks on an approval
HELLO = {"text": "hello"}  # finishes at once


@pytest.fixture(params=STORE_BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh store URL of each backend."""
    backend: str = request.param
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'tenants.db'}"
    else:
        async with postgres_schema_url() as pg:
            yield pg


# -- the stores ----------------------------------------------------------------------------


@needs(Journal, RunIndex)
async def test_a_store_scopes_get_list_and_threads_by_the_tenant_of_the_metadata(
    store: Store,
) -> None:
    runs = {
        "a1": ("acme", "t", 1.0),
        "a2": ("acme", None, 2.0),
        "g1": ("globex", "t", 3.0),
        "d1": (None, "t", 4.0),
    }
    for run_id, (tenant, thread, at) in runs.items():
        meta = {"tenant": tenant} if tenant else {"user": "u"}
        rec = record(run_id, thread=thread, created_at=1e9 + at, metadata=meta)
        await store.create_run(rec, events(run_id, 0, 1), Durability.SYNC)
    got = await store.get_run("a1", tenant="acme")
    assert got is not None and got.tenant == "acme"
    assert await store.get_run("a1", tenant="globex") is None
    assert await store.get_run("a1", tenant="") is None
    assert await store.get_run("nope", tenant="acme") is None
    assert (await store.get_run("d1", tenant="")) is not None  # no tenant: the default one
    assert (await store.get_run("a1")) is not None  # unscoped: the admin's read

    def ids(found: list[RunRecord]) -> list[str]:
        return [r.run_id for r in found]

    assert ids(await store.list_runs(RunQuery(tenant="acme"))) == ["a2", "a1"]
    assert ids(await store.list_runs(RunQuery(tenant="globex", thread="t"))) == ["g1"]
    assert ids(await store.list_runs(RunQuery(tenant=""))) == ["d1"]
    assert ids(await store.list_runs(RunQuery(tenant="initech"))) == []
    assert ids(await store.list_runs()) == ["d1", "g1", "a2", "a1"]

    # One thread id, three tenants: three threads, each with its own run.
    everyone = await store.list_threads()
    assert sorted((t.tenant, t.thread, t.runs, t.last_run_id) for t in everyone) == [
        ("", "t", 1, "d1"),
        ("acme", "t", 1, "a1"),
        ("globex", "t", 1, "g1"),
    ]
    [acme] = await store.list_threads(tenant="acme")
    assert (acme.thread, acme.tenant, acme.last_run_id) == ("t", "acme", "a1")
    assert await store.list_threads(tenant="initech") == []


_NAMES = st.sampled_from([None, "", "acme", "a/b", "a|thread:b", "x y", "ÿ"])


@needs(Journal, RunIndex)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    runs=st.lists(
        st.tuples(_NAMES, st.sampled_from([None, "t", "u", "t/x"])), min_size=1, max_size=12
    )
)
async def test_scoped_queries_are_the_unscoped_ones_filtered_by_tenant(
    store: Store, runs: list[tuple[str | None, str | None]]
) -> None:
    """Whatever the tenant and thread names, a scoped query gives exactly this example's runs
    of that tenant, newest first, and its threads are (tenant, thread) pairs."""
    tag = uuid.uuid4().hex[:8]  # examples share the store: each has its own tenants
    model: dict[str, tuple[str, str | None]] = {}
    for i, (name, thread) in enumerate(runs):
        run_id = f"{tag}-{i:02d}"
        tenant = "" if not name else f"{tag}{name}"
        meta = {"tenant": tenant} if name is not None else {}
        rec = record(run_id, thread=thread, created_at=1e9 + i, metadata=meta)
        await store.create_run(rec, events(run_id, 0, 1), Durability.SYNC)
        model[run_id] = (tenant, thread)
    for tenant in {t for t, _ in model.values()}:
        found = await store.list_runs(RunQuery(tenant=tenant, limit=10_000))
        mine = [r.run_id for r in found if r.run_id.startswith(tag)]
        assert mine == sorted((k for k, v in model.items() if v[0] == tenant), reverse=True)
        assert all(r.tenant == tenant for r in found)
        for run_id, (owner, _) in model.items():
            got = await store.get_run(run_id, tenant=tenant)
            assert (got is not None) == (owner == tenant)
        if not tenant:
            continue  # the default tenant's threads hold other examples' runs too
        threads = await store.list_threads(tenant=tenant, limit=10_000)
        expected = {
            thread: [k for k, v in model.items() if v == (tenant, thread)]
            for thread in {v[1] for v in model.values() if v[0] == tenant and v[1] is not None}
        }
        assert {t.thread: (t.runs, t.last_run_id) for t in threads} == {
            thread: (len(ids), max(ids)) for thread, ids in expected.items()
        }
        assert all(t.tenant == tenant for t in threads)


# -- the public API: another tenant's runs are not there ---------------------------------


async def _not_found(call: Awaitable[Any]) -> str:
    with pytest.raises(RunNotFoundError) as caught:
        await call
    return str(caught.value)


async def _consume(handle_events: Any) -> list[Any]:
    return [e async for e in handle_events]


async def test_another_tenants_runs_are_not_found_through_any_call(url: str) -> None:
    async with Runtime.open(url, graphs=[support]) as rt:
        acme, globex = rt.tenant("acme"), rt.tenant("globex")
        parked = await acme.start(support, REFUND, thread="t")
        assert (await parked.wait()).status is RunStatus.INTERRUPTED
        done = await acme.run_outcome(support, HELLO, thread="t")
        assert done.status is RunStatus.FINISHED
        theirs = await globex.run_outcome(support, HELLO, thread="t")
        before = {r.run_id: r.last_seq for r in await rt.list_runs()}

        for run_id in (parked.run_id, done.run_id):
            missing = await _not_found(globex.get_run("no-such-run"))
            message = await _not_found(globex.get_run(run_id))
            # The same error, word for word, as for a run that does not exist.
            assert message == missing.replace("no-such-run", run_id)
            await _not_found(globex.events(run_id))
            await _not_found(globex.state(run_id))
            await _not_found(globex.outcome(run_id))
            await _not_found(globex.replay(run_id))
            await _not_found(globex.fork(run_id, effects="rerun"))
            await _not_found(globex.resume(run_id, True))
            await _not_found(globex.cancel(run_id))
            handle = globex.handle(run_id)
            await _not_found(handle.wait())
            await _not_found(handle.result())
            await _not_found(handle.status())
            await _not_found(handle.cancel())
            await _not_found(_consume(handle.events()))
        # Starting with another tenant's run id never returns that run, nor says what it is.
        with pytest.raises(RunExistsError) as taken:
            await globex.start(support, REFUND, run_id=parked.run_id, thread="t")
        assert "support" not in str(taken.value) and "thread" not in str(taken.value)
        with pytest.raises(RunExistsError):
            await globex.run(support, REFUND, run_id=done.run_id, thread="t")
        # Nor can a view start as another tenant.
        with pytest.raises(TenantError, match="acts for tenant 'globex'"):
            await globex.start(support, HELLO, metadata={"tenant": "acme"})

        listed = {r.run_id for r in await globex.list_runs()}
        assert listed == {theirs.run_id}
        assert {r.run_id for r in await globex.list_runs(thread="t", status="interrupted")} == set()
        [thread] = await globex.list_threads()
        assert (thread.thread, thread.runs, thread.last_run_id) == ("t", 1, theirs.run_id)
        assert globex.live_runs() == []

        # Nothing of acme's was touched by any of it.
        after = {r.run_id: r.last_seq for r in await rt.list_runs()}
        assert after == before
        assert (await acme.get_run(parked.run_id)).status is RunStatus.INTERRUPTED


async def test_a_tenant_sees_and_acts_on_its_own_runs(url: str) -> None:
    async with Runtime.open(url, graphs=[support]) as rt:
        acme = rt.tenant("acme")
        parked = await acme.start(support, REFUND, thread="t", metadata={"user": "ann"})
        assert (await parked.wait()).status is RunStatus.INTERRUPTED
        record = await acme.get_run(parked.run_id)
        assert record.tenant == "acme" and record.metadata == {"user": "ann", "tenant": "acme"}
        state = await acme.state(parked.run_id)
        assert state.interrupts and state.values["intent"] == "refund"
        streamed = await _consume(acme.handle(parked.run_id).events())
        assert [e.seq for e in streamed] == [e.seq for e in await acme.events(parked.run_id)]
        resumed = await acme.resume(parked.run_id, True)
        assert (await resumed.result())["replies"] == ["refund issued"]
        assert (await acme.replay(parked.run_id)).ok
        fork = await acme.fork(parked.run_id, at=3, effects="reuse")
        assert (await fork.wait()).status is RunStatus.INTERRUPTED
        forked = await acme.get_run(fork.run_id)
        assert forked.tenant == "acme"  # a fork stays in its tenant
        await acme.cancel(fork.run_id)
        assert (await acme.handle(fork.run_id).status()) is RunStatus.CANCELLED
        assert (await acme.outcome(parked.run_id)).status is RunStatus.FINISHED
        mine = {r.run_id for r in await acme.list_runs()}
        assert mine == {parked.run_id, fork.run_id}
        assert [t.runs for t in await acme.list_threads()] == [2]
        await _not_found(rt.tenant("globex").get_run(fork.run_id))
        # The admin view (the runtime) sees every tenant's runs.
        assert {r.run_id for r in await rt.list_runs()} == mine
        assert {r.run_id for r in await rt.list_runs(tenant="acme")} == mine
        assert await rt.list_runs(tenant="") == []


async def test_subgraph_runs_belong_to_their_parents_tenant(url: str) -> None:
    class Doc(TypedDict, total=False):
        text: str
        words: int
        steps: Annotated[list[str], append]

    inner = Graph(Doc, name="inner")
    inner.node("count", lambda s: {"words": len(s["text"].split()), "steps": ["count"]})
    inner.edge(START, "count")
    inner.edge("count", END)
    outer = Graph(Doc, name="outer")
    outer.node("analyse", inner.compile())
    outer.edge(START, "analyse")
    outer.edge("analyse", END)
    app = outer.compile()
    async with Runtime.open(url) as rt:
        acme = rt.tenant("acme")
        assert (await acme.run(app, {"text": "one two"}))["words"] == 2
        [child] = await acme.list_runs(graph="inner")
        assert child.parent_run_id is not None and child.tenant == "acme"
        assert await rt.tenant("globex").list_runs(graph="inner") == []


async def test_the_default_tenant_is_a_tenant_and_single_tenant_use_is_unchanged(
    url: str,
) -> None:
    async with Runtime.open(url, graphs=[support]) as rt:
        plain = await rt.run_outcome(support, HELLO, thread="t")  # no tenant at all
        acme = await rt.run_outcome(support, HELLO, thread="t", metadata={"tenant": "acme"})
        default = rt.tenant("")
        assert {r.run_id for r in await default.list_runs()} == {plain.run_id}
        assert (await default.get_run(plain.run_id)).metadata == {}
        await _not_found(default.get_run(acme.run_id))
        await _not_found(rt.tenant("acme").get_run(plain.run_id))
        # The runtime, unscoped, reads both, as before tenants existed.
        assert {r.run_id for r in await rt.list_runs()} == {plain.run_id, acme.run_id}
        assert (await rt.get_run(acme.run_id)).tenant == "acme"
        with pytest.raises(MainspringError, match="named by a string"):
            await rt.start(support, HELLO, metadata={"tenant": 7})
    with pytest.raises(TenantError, match="named by a string"):
        TenantRuntime(rt, 7)  # type: ignore[arg-type]


def test_the_sync_facade_has_tenant_views_too(tmp_path: Path) -> None:
    with SyncRuntime.open(f"sqlite:///{tmp_path / 's.db'}", graphs=[support]) as rt:
        acme, globex = rt.tenant("acme"), rt.tenant("globex")
        handle = acme.start(support, REFUND)
        assert handle.wait().status is RunStatus.INTERRUPTED
        assert [r.run_id for r in acme.list_runs()] == [handle.run_id]
        assert globex.list_runs() == []
        with pytest.raises(RunNotFoundError):
            globex.get_run(handle.run_id)
        with pytest.raises(RunNotFoundError):
            globex.handle(handle.run_id).wait()
        with pytest.raises(RunNotFoundError):
            list(globex.handle(handle.run_id).events())
        with pytest.raises(RunNotFoundError):
            globex.cancel(handle.run_id)
        assert acme.resume(handle.run_id, False).result()["replies"] == ["refund declined"]


def test_an_agent_runs_through_a_sync_tenant_view(tmp_path: Path) -> None:
    agent = Agent("host", "fast", "Be polite.")
    gateway = Gateway({"fast": ScriptedModel(lambda r: f"heard {len(r.messages)}")})
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with SyncRuntime.open(url, models=gateway) as rt:
        acme = rt.tenant("acme")
        first = agent.run_sync(acme, "hi", thread="t")
        again = agent.run_sync(acme, "hi again", thread="t")
        assert again.text == "heard 4" and first.text == "heard 2"  # system + the thread
        assert agent.run_sync(rt.tenant("globex"), "hi", thread="t").text == "heard 2"
        assert acme.get_run(first.run_id).tenant == "acme"


# -- threads: a thread id is each tenant's own ---------------------------------------------


async def test_an_agents_thread_is_per_tenant(url: str) -> None:
    def script(request: ModelRequest) -> Any:
        said = [m.text for m in request.messages if m.role == "user"]
        names = [s.removeprefix("I am ") for s in said if s.startswith("I am ")]
        if said[-1].startswith("I am "):
            return f"Hello {names[-1]}"
        return f"You are {names[-1]}" if names else "I do not know you"

    agent = Agent("host", "fast", "Be polite.")
    async with Runtime.open(url, models=Gateway({"fast": ScriptedModel(script)})) as rt:
        acme, globex = rt.tenant("acme"), rt.tenant("globex")
        await agent.run(acme, "I am Ada", thread="t1")
        await agent.run(globex, "I am Grace", thread="t1")
        assert (await agent.run(acme, "Who am I?", thread="t1")).text == "You are Ada"
        assert (await agent.run(globex, "Who am I?", thread="t1")).text == "You are Grace"
        # A plain runtime with the tenant in metadata continues that tenant's thread.
        meta = {"tenant": "acme"}
        again = await agent.run(rt, "Who am I?", thread="t1", metadata=meta)
        assert again.text == "You are Ada"
        assert (await agent.run(rt, "Who am I?", thread="t1")).text == "I do not know you"
        history = await agent.history(globex, "t1")
        assert [m.text for m in history][:2] == ["I am Grace", "Hello Grace"]
        assert [m.text for m in await agent.history(rt, "t1", tenant="acme")][:1] == ["I am Ada"]


# -- per-tenant budgets and rate limits ----------------------------------------------------


async def test_one_tenant_exhausting_its_budget_leaves_another_untouched(tmp_path: Path) -> None:
    budgets = [Budget(3, on="calls", per="tenant"), Budget(2, on="calls", per="thread")]
    app = agent_graph()
    async with Runtime.open(f"sqlite:///{tmp_path / 'b.db'}", gates=[BudgetGate(budgets)]) as rt:
        acme, globex = rt.tenant("acme"), rt.tenant("globex")
        spent = await acme.run(app, {"calls": 5})
        assert len(spent["models"]) == 3 and "calls per tenant" in spent["stopped"]
        refused = await acme.run(app, {"calls": 5})
        assert refused["models"] == [], "acme's budget is spent"
        fresh = await globex.run(app, {"calls": 3})
        assert len(fresh["models"]) == 3 and "stopped" not in fresh
        # Thread budgets: the same thread id in two tenants counts apart.
        thread_a = await rt.tenant("initech").run(app, {"calls": 5}, thread="t")
        thread_b = await rt.tenant("umbrella").run(app, {"calls": 5}, thread="t")
        assert len(thread_a["models"]) == len(thread_b["models"]) == 2
        assert "tenant:umbrella/thread:t" in thread_b["stopped"]


class Calls(TypedDict, total=False):
    n: int
    results: Annotated[list[str], append]


async def test_one_tenant_hitting_a_tool_rate_limit_leaves_another_untouched(
    tmp_path: Path,
) -> None:
    async def lookup(q: str) -> str:
        return f"found {q}"

    box = Toolbox([Tool(lookup, rate=0.01, burst=2, limit_wait=0, limit_per="tenant")])
    g = Graph(Calls, name="caller")

    @g.node
    async def call(s: Calls, ctx: Context) -> dict[str, Any]:
        results: list[str] = []
        for i in range(s.get("n", 1)):
            try:
                results.append(await ctx.tool("lookup", q=str(i)))
            except (EffectDeniedError, MainspringError) as exc:
                results.append(f"refused: {type(exc).__name__}")
        return {"results": results}

    g.edge(START, "call")
    g.edge("call", END)
    app = g.compile()
    async with Runtime.open(f"sqlite:///{tmp_path / 'r.db'}", tools=box) as rt:
        acme = await rt.tenant("acme").run(app, {"n": 3})
        globex = await rt.tenant("globex").run(app, {"n": 2})
    assert acme["results"][:2] == ["found 0", "found 1"]
    assert acme["results"][2].startswith("refused")
    assert globex["results"] == ["found 0", "found 1"]


# -- the CLI -------------------------------------------------------------------------------


def _cli(store: str, *args: str, tenant: str | None = None, env: str | None = None) -> Result:
    argv = [*args, "--store", store] + (["--tenant", tenant] if tenant is not None else [])
    environ = {"MAINSPRING_TENANT": env} if env is not None else {}
    return CliRunner().invoke(cli_app, argv, env=environ)


def _json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_the_cli_scopes_every_command_by_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MAINSPRING_STORE", "MAINSPRING_TENANT", "MAINSPRING_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    ref = "tests.cli_graphs:support"
    refund, hello = orjson.dumps(REFUND).decode(), orjson.dumps(HELLO).decode()
    parked = _cli(store, "run", ref, "-i", refund, "-t", "t", "--run-id", "p1", tenant="acme")
    assert parked.exit_code == 0, parked.stderr
    # What it says to do next acts as the same tenant.
    assert "mainspring resume p1 --value '<JSON>' --store" in parked.stdout
    assert parked.stdout.rstrip().endswith("--tenant acme")
    done = _cli(store, "run", ref, "-i", hello, "-t", "t", "--run-id", "d1", env="acme")
    assert done.exit_code == 0, done.stderr
    other = _cli(store, "run", ref, "-i", hello, "-t", "t", "--run-id", "g1", tenant="globex")
    assert other.exit_code == 0, other.stderr

    # Every command that reads or acts on a run: globex gets "not found", exit 3.
    for run_id in ("p1", "d1"):
        for command in (
            ["show", run_id],
            ["show", run_id, "--json"],
            ["state", run_id],
            ["replay", run_id],
            ["trace", run_id],
            ["fork", run_id, "--effects", "rerun"],
            ["resume", run_id, "-v", "true"],
            ["cancel", run_id],
        ):
            for how in ({"tenant": "globex"}, {"env": "globex"}):
                refused = _cli(store, *command, **how)
                assert refused.exit_code == 3, (command, refused.stdout, refused.stderr)
                assert f"no run with id '{run_id}'" in refused.stderr, command
                assert "support" not in refused.stdout + refused.stderr
    # Starting with acme's run id as globex shows nothing of acme's run.
    clash = _cli(store, "run", ref, "-i", refund, "-t", "t", "--run-id", "p1", tenant="globex")
    assert clash.exit_code == 3 and "is taken" in clash.stderr, clash.stderr
    # Lists: globex's own only; the admin (no --tenant) sees everything, with tenants.
    listed = _json_lines(_cli(store, "runs", "--json", tenant="globex"))
    assert [(r["run_id"], r["tenant"]) for r in listed] == [("g1", "globex")]
    threads = _json_lines(_cli(store, "threads", "--json", env="globex"))
    assert [(t["thread"], t["last_run_id"], t["runs"]) for t in threads] == [("t", "g1", 1)]
    stats = _cli(store, "stats", "support", "--json", tenant="initech")
    assert stats.exit_code == 3 and "no runs of graph" in stats.stderr
    assert len(_json_lines(_cli(store, "stats", "support", "--json", env="globex"))) > 0
    metrics = _cli(store, "metrics", "--once", tenant="globex")
    assert metrics.exit_code == 0, metrics.stderr
    assert 'mainspring_runs_started_total{graph="support"} 1.0' in metrics.stdout  # g1 only
    everyone = _cli(store, "metrics", "--once")
    assert 'mainspring_runs_started_total{graph="support"} 3.0' in everyone.stdout
    admin = _json_lines(_cli(store, "runs", "--json"))
    assert sorted((r["run_id"], r["tenant"]) for r in admin) == [
        ("d1", "acme"),
        ("g1", "globex"),
        ("p1", "acme"),
    ]
    table = _cli(store, "threads")
    assert table.exit_code == 0 and "tenant" in table.stdout and "globex" in table.stdout
    # Positive: acme reads and continues its own runs.
    shown = _json_lines(_cli(store, "show", "p1", "--json", tenant="acme"))
    assert shown[0]["kind"] == "run_started"
    resumed = _cli(store, "resume", "p1", "-v", "true", "--json", tenant="acme")
    assert resumed.exit_code == 0, resumed.stderr
    assert orjson.loads(resumed.stdout)["state"]["replies"] == ["refund issued"]
    forked = _cli(store, "fork", "d1", "--run-id", "f1", "--effects", "reuse", env="acme")
    assert forked.exit_code == 0, forked.stderr
    mine = _json_lines(_cli(store, "runs", "--json", env="acme"))
    assert sorted(r["run_id"] for r in mine) == ["d1", "f1", "p1"]
    assert all(r["tenant"] == "acme" for r in mine)


# -- migration: a store written before tenants ------------------------------------------


def _old_sqlite_store(path: Path) -> None:
    """A SQLite store at schema version 2 (before tenants) holding two runs."""
    from mainspring.store._sqlite_schema import APPLICATION_ID, MIGRATIONS

    conn = sqlite3.connect(path)
    for statements in MIGRATIONS[:2]:
        for statement in statements:
            conn.execute(statement)
    for run_id, meta in (("old-a", {"tenant": "acme"}), ("old-d", {"tenant": 5})):
        conn.execute(
            "INSERT INTO runs (run_id, graph, thread, status, created_at, updated_at, "
            "durability, metadata) VALUES (?, 'g', 't', 'finished', 1, 1, 'sync', ?)",
            (run_id, orjson.dumps(meta).decode()),
        )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


async def test_a_store_from_before_tenants_is_migrated_with_its_tenants(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_sqlite_store(path)
    async with Runtime.open(f"sqlite:///{path}", recover="off") as rt:
        assert [r.run_id for r in await rt.tenant("acme").list_runs()] == ["old-a"]
        # A tenant that is not a string never named one: the run is the default tenant's.
        assert [r.run_id for r in await rt.tenant("").list_runs()] == ["old-d"]
        [t] = await rt.list_threads(tenant="acme")
        assert t.last_run_id == "old-a"


async def test_a_postgres_schema_from_before_tenants_is_migrated_with_its_tenants() -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from mainspring.store._pg_schema import _MIGRATIONS, quote_ident

    async with postgres_schema_url() as url:
        schema = url.rpartition("schema=")[2]
        base = url.partition("?")[0]
        conn = await asyncpg.connect(base)
        try:
            s = quote_ident(schema)
            for statements in _MIGRATIONS[:2]:
                for statement in statements:
                    await conn.execute(statement.format(s=s))
            await conn.execute(
                f"INSERT INTO {s}.meta VALUES ('application', 'mainspring'), "
                "('schema_version', '2')"
            )
            await conn.execute(
                f"INSERT INTO {s}.runs (run_id, graph, status, created_at, updated_at, metadata)"
                " VALUES ('old-a', 'g', 'finished', 1, 1, '{\"tenant\": \"acme\"}'),"
                " ('old-d', 'g', 'finished', 2, 2, '{\"tenant\": 5}')"
            )
        finally:
            await conn.close()
        async with Runtime.open(url, recover="off") as rt:
            assert [r.run_id for r in await rt.tenant("acme").list_runs()] == ["old-a"]
            assert [r.run_id for r in await rt.tenant("").list_runs()] == ["old-d"]

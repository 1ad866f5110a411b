"""The run queue of the PostgreSQL store and the Worker, in one process (real PostgreSQL).

Claims are exercised directly where the order or the limits are the point (no timing in
the assertions); whole runs go through a Worker driving them in its own Runtime while the
test starts, resumes, cancels and waits from another Runtime on the same schema, as an
API server and a worker process would. Worker processes and their faults are in
test_worker_faults.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from mainspring import QueueConfig, RunStateError, RunStatus, Runtime, Worker
from mainspring.cli import app as cli
from mainspring.errors import StoreError
from mainspring.worker.schedules import tick_run_id
from tests.queue_graphs import asks, steps

pytestmark = pytest.mark.anyio


def queues_of(rt: Runtime) -> Any:
    return rt.store.queues  # type: ignore[attr-defined]


@asynccontextmanager
async def working(url: str, **options: Any) -> AsyncIterator[Worker]:
    """A Worker on queue "q" in a Runtime of its own, running until the block ends."""
    async with Runtime.open(url, graphs=[steps, asks], lease_ttl=2) as rt:
        worker = Worker(rt, ["q"], **options)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            try:
                yield worker
            finally:
                worker.stop()


async def test_queued_runs_are_driven_by_the_worker_and_waited_on_elsewhere(
    postgres_url: str,
) -> None:
    async with Runtime.open(postgres_url, graphs=[steps]) as api, working(postgres_url) as w:
        handles = [await api.start(steps, {"n": i}, queue="q") for i in range(6)]
        for handle in handles:
            outcome = await handle.wait()
            assert outcome.status is RunStatus.FINISHED
            assert [entry.split("@")[0] for entry in outcome.state["log"]] == ["a", "b", "c"]
        assert api.live_runs() == []  # the starter drove none of them
        assert w.claimed_total == 6
        record = await api.get_run(handles[0].run_id)
        assert record.queue is not None and record.queue.name == "q"
        assert record.owner is None  # finished: no lease left


async def test_claims_take_the_best_priority_then_the_oldest_and_skip_delayed(
    postgres_url: str,
) -> None:
    async with Runtime.open(postgres_url, graphs=[steps]) as api:
        q = queues_of(api)
        low = await api.start(steps, {}, queue="q", priority=0)
        high = await api.start(steps, {}, queue="q", priority=5)
        later = await api.start(steps, {}, queue="q", priority=9, delay=3600)
        low2 = await api.start(steps, {}, queue="q")
        claimed = await q.claim("q", "tester", 30, 10)
        assert [c.run_id for c in claimed] == [high.run_id, low.run_id, low2.run_id]
        assert all(c.fence == 1 and not c.took_over for c in claimed)
        assert later.run_id not in {c.run_id for c in claimed}
        stats = {s.name: s for s in await q.stats()}["q"]
        assert (stats.waiting, stats.delayed, stats.running) == (0, 1, 3)
        wake = await q.next_wake(["q"], "other")
        assert wake is not None and 0 < wake <= 3600  # the delayed run, or a lease


async def test_limits_per_tenant_per_key_and_in_all_hold_across_claims(
    postgres_url: str,
) -> None:
    async with Runtime.open(postgres_url, graphs=[steps]) as api:
        q = queues_of(api)
        await q.configure(QueueConfig("q", per_tenant=2, per_key=1, concurrency=4))
        for tenant in ("a", "a", "a", "b"):
            await api.start(steps, {}, queue="q", metadata={"tenant": tenant})
        await api.start(steps, {}, queue="q", concurrency_key="k", metadata={"tenant": "c"})
        await api.start(steps, {}, queue="q", concurrency_key="k", metadata={"tenant": "d"})
        first = await q.claim("q", "w1", 30, 10)
        tenants = sorted([(await api.get_run(c.run_id)).tenant for c in first])
        # two of a's three (per tenant), b, one of the two runs of key k; four in all
        assert len(first) == 4
        assert tenants.count("a") == 2 and "b" in tenants
        assert sum(t in ("c", "d") for t in tenants) == 1
        assert await q.claim("q", "w2", 30, 10) == []  # every limit is full
        await q.configure(QueueConfig("q", per_tenant=2, per_key=1))  # no limit in all
        second = await q.claim("q", "w2", 30, 10)
        assert second == []  # a is at 2, the key k at 1: nothing else may start
        await api.store.release(first[0].run_id, "w1")  # a slot frees (and the run waits again)
        third = await q.claim("q", "w2", 30, 10)
        assert [c.run_id for c in third] == [first[0].run_id]


async def test_a_start_rate_is_shared_by_every_claim(postgres_url: str) -> None:
    async with Runtime.open(postgres_url, graphs=[steps]) as api:
        q = queues_of(api)
        await q.configure(QueueConfig("q", rate="2/h"))
        for _ in range(4):
            await api.start(steps, {}, queue="q")
        assert len(await q.claim("q", "w1", 30, 10)) == 2
        assert await q.claim("q", "w2", 30, 10) == []  # the bucket is empty for an hour
        configs = await q.configs()
        assert configs["q"].rate == "2/h"


async def test_an_expired_lease_is_taken_over_with_a_new_fence_and_a_death(
    postgres_url: str,
) -> None:
    async with Runtime.open(postgres_url, graphs=[steps]) as api:
        q = queues_of(api)
        handle = await api.start(steps, {}, queue="q")
        [first] = await q.claim("q", "frozen", 0.05, 1)
        assert await q.claim("q", "w2", 30, 1) == []  # held
        await anyio.sleep(0.1)
        [second] = await q.claim("q", "w2", 30, 1)
        assert second.run_id == handle.run_id
        assert second.fence == first.fence + 1 and second.took_over and second.deaths == 1


async def test_a_run_that_kills_its_workers_is_failed_as_poisoned(postgres_url: str) -> None:
    async with Runtime.open(postgres_url, graphs=[steps]) as api:
        q = queues_of(api)
        await q.configure(QueueConfig("q", max_attempts=1))
        handle = await api.start(steps, {}, queue="q")
        await q.claim("q", "died", 0.01, 1)  # a worker that takes it, then dies
        await anyio.sleep(0.05)
        async with working(postgres_url):
            outcome = await handle.wait()
        assert outcome.status is RunStatus.FAILED
        record = await api.get_run(handle.run_id)
        assert record.error is not None and record.error.startswith("poisoned: 1 workers died")
        assert "fork it" in record.error
        events = await api.events(handle.run_id)
        assert events[-1].kind == "failed"
        stats = {s.name: s for s in await q.stats()}["q"]
        assert stats.poisoned == 1


async def test_resume_and_cancel_from_another_process_go_through_the_queue(
    postgres_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with Runtime.open(postgres_url, graphs=[steps, asks]) as api, working(postgres_url) as w:
        parked = await api.start(asks, {}, queue="q")
        assert (await parked.wait()).status is RunStatus.INTERRUPTED
        resumed = await api.resume(parked.run_id, "yes")
        assert api.live_runs() == []  # handed to the queue, not driven here
        outcome = await resumed.wait()
        assert outcome.status is RunStatus.FINISHED
        assert outcome.state["log"] == ["answer: yes"]

        held = await api.start(steps, {"gate": str(gate)}, queue="q")
        with anyio.fail_after(10):
            while held.run_id not in w.live:
                await anyio.sleep(0.01)
        await api.cancel(held.run_id, actor="ops@example")
        record = await api.get_run(held.run_id)
        assert record.status is RunStatus.CANCELLED
        cancelled = [e for e in await api.events(held.run_id) if e.kind == "cancelled"]
        assert cancelled and getattr(cancelled[0].data, "actor", None) == "ops@example"


async def test_a_schedule_tick_starts_exactly_one_run_across_workers(postgres_url: str) -> None:
    from mainspring import Schedule

    async with Runtime.open(postgres_url, graphs=[steps]) as api:
        tick = float(int(time.time()) - 30)
        schedule = Schedule(
            "nightly", "* * * * *", "tests.queue_graphs:steps", {"n": 7}, "q", {}, tick
        )
        await api.store.schedules.put(schedule)  # type: ignore[attr-defined]
        async with working(postgres_url), working(postgres_url):
            handle = api.handle(tick_run_id("nightly", tick))
            with anyio.fail_after(15):
                while True:
                    try:
                        outcome = await handle.wait()
                        break
                    except Exception:  # not started yet
                        await anyio.sleep(0.05)
        assert outcome.status is RunStatus.FINISHED
        runs = await api.list_runs(graph="steps")
        assert [r.run_id for r in runs] == [tick_run_id("nightly", tick)]
        [saved] = await api.store.schedules.all()  # type: ignore[attr-defined]
        assert saved.next_at > time.time() - 1 and saved.last_run == tick_run_id("nightly", tick)


async def test_bad_queue_input_says_what_to_fix(postgres_url: str, tmp_path: Path) -> None:
    async with Runtime.open(f"sqlite:///{tmp_path / 'x.db'}") as local:
        with pytest.raises(RunStateError, match="PostgreSQL"):
            await local.start(steps, {}, queue="q")
        with pytest.raises(RunStateError, match="PostgreSQL"):
            Worker(local, ["q"])
    async with Runtime.open(postgres_url) as api:
        for kwargs, fix in (
            ({"queue": ""}, "non-empty"),
            ({"queue": "a:b"}, "without ':'"),
            ({"queue": "q", "priority": "high"}, "whole number"),
            ({"queue": "q", "delay": -1}, "seconds >= 0"),
            ({"queue": "q", "concurrency_key": ""}, "non-empty"),
            ({"delay": 5}, "give queue="),
        ):
            with pytest.raises(RunStateError, match=fix):
                await api.start(steps, {}, **kwargs)
        assert await api.list_runs() == []  # nothing was started by a refused call
        with pytest.raises(RunStateError, match="at least one queue"):
            Worker(api, [])
        with pytest.raises(RunStateError, match="concurrency"):
            Worker(api, ["q"], concurrency=0)
    with pytest.raises(StoreError, match="50/s"):
        QueueConfig("q", rate="fast")
    with pytest.raises(StoreError, match="max_attempts"):
        QueueConfig("q", max_attempts=0)


def test_the_queue_commands(postgres_url_sync: str, tmp_path: Path) -> None:
    runner = CliRunner()
    url = postgres_url_sync
    done = runner.invoke(cli, ["queue", "set", "q", "--per-tenant", "2", "--rate", "5/s",
                               "--store", url])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "per tenant 2, rate 5/s" in done.output
    shown = runner.invoke(cli, ["queue", "--json", "--store", url])
    assert shown.exit_code == 0, shown.output
    assert '"per_tenant":2' in shown.output
    added = runner.invoke(cli, ["schedule", "add", "hourly", "--cron", "0 * * * *", "--graph",
                                "tests.queue_graphs:steps", "--queue", "q", "--store", url])  # fmt: skip
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli, ["schedule", "list", "--store", url])
    assert "hourly" in listed.output
    bad = runner.invoke(cli, ["schedule", "add", "x", "--cron", "every day", "--graph", "m:g",
                              "--queue", "q", "--store", url])  # fmt: skip
    assert bad.exit_code == 2 and "five fields" in bad.output
    assert runner.invoke(cli, ["schedule", "remove", "hourly", "--store", url]).exit_code == 0
    gone = runner.invoke(cli, ["schedule", "remove", "hourly", "--store", url])
    assert gone.exit_code == 3 and "no schedule" in gone.output
    local = runner.invoke(cli, ["queue", "--store", f"sqlite:///{tmp_path / 'x.db'}"])
    assert local.exit_code == 2 and "PostgreSQL" in local.output
    no_queue = runner.invoke(cli, ["worker", "--store", url])
    assert no_queue.exit_code == 2 and "--queue" in no_queue.output


async def test_the_worker_probes_and_metrics(postgres_url: str) -> None:
    import httpx

    from mainspring.worker.health import health_app

    async with Runtime.open(postgres_url, graphs=[steps]) as api, working(postgres_url) as w:
        await api.start(steps, {}, queue="q", delay=3600)
        transport = httpx.ASGITransport(app=health_app(w))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            with anyio.fail_after(10):
                while w.state != "running":
                    await anyio.sleep(0.01)
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["slots"] == 8
            metrics = (await client.get("/metrics")).text
            assert 'mainspring_queue_depth{queue="q"} 0.0' in metrics
            assert 'mainspring_queue_delayed{queue="q"} 1.0' in metrics
            assert "mainspring_worker_slots_total 8.0" in metrics
            w.stop()
            with anyio.fail_after(10):
                while w.state == "running":
                    await anyio.sleep(0.01)
            assert (await client.get("/readyz")).status_code == 503


async def test_a_run_the_worker_cannot_load_is_deferred_not_held(postgres_url: str) -> None:
    from mainspring import END, START, Graph
    from tests.queue_graphs import Steps

    def only_here(s: Steps) -> dict[str, Any]:
        return {"n": 1}

    g = Graph(Steps, name="unknown-to-workers")
    g.node(only_here)
    g.edge(START, "only_here")
    g.edge("only_here", END)
    local = g.compile()  # not importable by reference: no worker can load it
    async with Runtime.open(postgres_url, graphs=[local]) as api, working(postgres_url) as w:
        handle = await api.start(local, {}, queue="q")
        with anyio.fail_after(10):
            while True:
                record = await api.get_run(handle.run_id)
                if record.queue is not None and record.queue.available_at is not None:
                    break
                await anyio.sleep(0.02)
        assert record.owner is None and record.status is RunStatus.RUNNING
        assert record.queue.available_at > time.time()  # offered again a lease later, not held
        assert handle.run_id not in w.live


async def test_a_refused_resume_or_a_park_before_the_cancel_leaves_nothing_held(
    postgres_url: str,
) -> None:
    async with (
        Runtime.open(postgres_url, graphs=[asks]) as api1,
        Runtime.open(postgres_url, graphs=[asks]) as api2,
        working(postgres_url),
    ):
        handle = await api1.start(asks, {}, queue="q")
        assert (await handle.wait()).status is RunStatus.INTERRUPTED
        with pytest.raises(RunStateError, match="no pending interrupt 'nope'"):
            await api1.resume(handle.run_id, "yes", interrupt_id="nope")
        assert (await api1.get_run(handle.run_id)).owner is None  # the lease went back
        await api2.cancel(handle.run_id, actor="ops")  # from another process: it is free
        record = await api2.get_run(handle.run_id)
        assert record.status is RunStatus.CANCELLED


async def test_a_schedule_whose_start_is_refused_skips_the_tick_and_keeps_the_worker(
    postgres_url: str,
) -> None:
    from mainspring import Schedule

    async with Runtime.open(postgres_url, graphs=[steps]) as api:
        tick = float(int(time.time()) - 30)
        bad = Schedule("bad", "* * * * *", "tests.queue_graphs:steps", [1, 2], "q", {}, tick)
        good = Schedule("good", "* * * * *", "tests.queue_graphs:steps", {"n": 1}, "q", {}, tick)
        schedules = api.store.schedules  # type: ignore[attr-defined]
        await schedules.put(bad)
        await schedules.put(good)
        async with working(postgres_url) as w:
            outcome = None
            with anyio.fail_after(15):
                while outcome is None:
                    try:
                        outcome = await api.handle(tick_run_id("good", tick)).wait()
                    except Exception:
                        await anyio.sleep(0.05)
            with anyio.fail_after(15):
                while (await schedules.all())[0].next_at == tick:  # "bad" moves on too
                    await anyio.sleep(0.05)
            assert w.state == "running"
        assert outcome.status is RunStatus.FINISHED
        assert [r.run_id for r in await api.list_runs()] == [tick_run_id("good", tick)]


def test_rates_and_limits_are_read_strictly() -> None:
    from mainspring.store._pg_queue import parse_rate

    assert parse_rate("50/s") == (50.0, 1.0)
    assert parse_rate("2/mins") == (2.0, 60.0)
    assert parse_rate("3/hours") == (3.0, 3600.0)
    for bad in ("5/ms", "5/month", "x/s", "0/s", "5", "-1/s", "inf/s"):
        with pytest.raises(StoreError, match="starts per period"):
            parse_rate(bad)
    with pytest.raises(StoreError, match="whole number"):
        QueueConfig("q", concurrency=True)
    with pytest.raises(StoreError, match="max_attempts"):
        QueueConfig("q", max_attempts=True)

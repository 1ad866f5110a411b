"""Metrics read from the journal: Prometheus values after real runs, gauges, cardinality, OTel, polling."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mainspring import END, START, Context, Graph, RunStatus, Runtime
from mainspring.events import Event, ForkedFrom, RunStarted, StepFinished, StepStarted
from mainspring.store import MemoryStore
from mainspring.telemetry.metrics.aggregator import MetricsAggregator
from mainspring.telemetry.metrics.instruments import INSTRUMENTS
from mainspring.telemetry.metrics.poller import JournalPoller
from mainspring.telemetry.metrics.prometheus import JournalMetrics, PrometheusSink

from . import telemetry_graphs as tg

pytestmark = pytest.mark.anyio


def value(registry: CollectorRegistry, metric: str, /, **labels: str) -> float:
    found = registry.get_sample_value(metric, labels)
    return 0.0 if found is None else found


def _exploding() -> Any:
    g = Graph(tg.Doc, name="exploding")

    @g.node
    async def go(s: tg.Doc, ctx: Context) -> None:
        await ctx.step("explode", _raise)

    g.edge(START, "go")
    g.edge("go", END)
    return g.compile()


def _raise() -> None:
    raise RuntimeError("kaboom")


async def test_metrics_after_a_few_runs() -> None:
    store = MemoryStore()
    metrics = JournalMetrics(store=store, pricing=lambda model, i, o: 1.0)
    registry = metrics.registry
    async with Runtime(metrics.instrument(store), listeners=[metrics]) as rt:
        await rt.run(tg.agent, {"text": "hi"}, metadata={"tenant": "acme"})
        await (await rt.start(tg.failing, {})).wait()
        await (await rt.start(_exploding(), {})).wait()

        parked = await rt.start(tg.approval, {"text": "x"}, run_id="ap-1")
        assert (await parked.wait()).status is RunStatus.INTERRUPTED
        assert value(registry, "mainspring_interrupts_waiting", graph="approval") == 1
        assert value(registry, "mainspring_active_runs", graph="approval") == 0
        await rt.resume("ap-1", True)
        await parked.result()
        assert value(registry, "mainspring_interrupts_waiting", graph="approval") == 0

        cancelled = await rt.start(tg.approval, {"text": "y"}, run_id="ap-2")
        await cancelled.wait()
        await rt.cancel("ap-2")

    assert value(registry, "mainspring_runs_started_total", graph="agent") == 1
    assert value(registry, "mainspring_runs_finished_total", graph="agent") == 1
    assert value(registry, "mainspring_runs_failed_total", graph="failing") == 1
    assert value(registry, "mainspring_runs_started_total", graph="approval") == 2
    assert value(registry, "mainspring_runs_finished_total", graph="approval") == 1
    assert value(registry, "mainspring_runs_cancelled_total", graph="approval") == 1
    for graph in ("agent", "approval", "failing", "exploding"):
        assert value(registry, "mainspring_active_runs", graph=graph) == 0
    assert value(registry, "mainspring_interrupts_waiting", graph="approval") == 0

    step = "mainspring_step_duration_seconds_count"
    assert value(registry, step, graph="agent", node="work") == 3
    assert (
        value(registry, step, graph="agent", node="answer") == 2
    )  # the failed attempt and the retry
    assert value(registry, "mainspring_retries_total", graph="agent", node="answer") == 1
    assert (
        value(registry, "mainspring_step_duration_seconds_sum", graph="agent", node="work") > 0.003
    )

    effect = "mainspring_effect_duration_seconds_count"
    assert (
        value(registry, effect, kind="tool", name="search") == 1
    )  # replayed on retry, not run again
    assert value(registry, effect, kind="model", name="small-1") == 1
    assert value(registry, "mainspring_effect_errors_total", kind="effect", name="explode") == 1

    assert (
        value(
            registry, "mainspring_tokens_total", model="small-1", tenant="acme", direction="input"
        )
        == 12
    )
    assert (
        value(
            registry, "mainspring_tokens_total", model="small-1", tenant="acme", direction="output"
        )
        == 5
    )
    assert value(
        registry, "mainspring_cost_usd_total", model="small-1", tenant="acme"
    ) == pytest.approx(0.002)

    assert value(registry, "mainspring_journal_append_events_count", durability="sync") > 10
    assert (
        value(registry, "mainspring_journal_append_duration_seconds_count", durability="sync") > 10
    )
    assert value(registry, "mainspring_telemetry_dropped_events_total") == 0
    text = metrics.exposition().decode()
    assert "run_id" not in text and "ap-1" not in text  # no run ids as labels
    metrics.close()


def _started(run_id: str, graph: str) -> Event:
    return Event.of(run_id, 1, 1.0, RunStarted(graph))


def test_label_sets_are_bounded() -> None:
    sink = PrometheusSink()
    aggregator = MetricsAggregator(sink, max_series=3)
    for i in range(10):
        aggregator.feed(_started(f"r{i}", f"graph-{i}"))
    registry = sink.registry
    assert value(registry, "mainspring_runs_started_total", graph="graph-2") == 1
    assert value(registry, "mainspring_runs_started_total", graph="other") == 7


def test_names_follow_prometheus_conventions() -> None:
    for spec in INSTRUMENTS.values():
        assert spec.name.startswith("mainspring_") and spec.name == spec.name.lower()
        assert "run_id" not in spec.labels
        if spec.kind == "histogram" and spec.unit == "s":
            assert spec.name.endswith("_seconds")
        assert not spec.name.endswith("_total")  # the client adds it to counters


async def test_opentelemetry_metrics_when_asked() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    store = MemoryStore()
    metrics = JournalMetrics(store=store, meter_provider=MeterProvider(metric_readers=[reader]))
    async with Runtime(store, listeners=[metrics]) as rt:
        await rt.run(tg.linear, {})
        await rt.run(tg.linear, {})
    metrics.close()
    data = reader.get_metrics_data()
    assert data is not None
    found = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    started: Any = found["mainspring.runs.started"].data.data_points[0]
    assert started.value == 2 and dict(started.attributes or {}) == {"graph": "linear"}
    steps = found["mainspring.step.duration"]
    points: list[Any] = list(steps.data.data_points)
    assert steps.unit == "s" and sum(p.count for p in points) == 20


async def test_serve_exposes_metrics_over_http() -> None:
    store = MemoryStore()
    metrics = JournalMetrics(store=store)
    async with Runtime(store, listeners=[metrics]) as rt:
        await rt.run(tg.linear, {})
    server, _ = metrics.serve(0)
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        metrics.close()
    assert 'mainspring_runs_finished_total{graph="linear"} 1.0' in body


async def test_poller_reads_metrics_from_a_stores_journals(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    async with Runtime.open(url) as rt:
        for _ in range(3):
            await rt.run(tg.linear, {})
        await (await rt.start(tg.approval, {"text": "x"})).wait()
        sink = PrometheusSink()
        poller = JournalPoller(rt.store, MetricsAggregator(sink))
        assert await poller.poll() > 0
        assert await poller.poll() == 0  # nothing new: nothing counted twice
        await rt.run(tg.linear, {})
        assert (
            await poller.poll() == 22
        )  # run_started, 10 x (step_started, step_finished), finished
    registry = sink.registry
    assert value(registry, "mainspring_runs_finished_total", graph="linear") == 4
    assert value(registry, "mainspring_step_duration_seconds_count", graph="linear", node="n3") == 4
    assert value(registry, "mainspring_interrupts_waiting", graph="approval") == 1
    assert value(registry, "mainspring_active_runs", graph="approval") == 0
    assert value(registry, "mainspring_active_runs", graph="linear") == 0


async def test_group_commit_batch_sizes_come_from_the_store(tmp_path: Path) -> None:
    from mainspring.store import store_from_url

    store = store_from_url(f"sqlite:///{tmp_path / 'groups.db'}")
    metrics = JournalMetrics(store=store)
    registry = metrics.registry
    async with Runtime(metrics.instrument(store), listeners=[metrics], durability="batch") as rt:
        handles = [await rt.start(tg.linear, {}) for _ in range(50)]
        for handle in handles:
            await handle.result()
    commits = value(registry, "mainspring_journal_commit_writes_count", backend="sqlite")
    writes = value(registry, "mainspring_journal_commit_writes_sum", backend="sqlite")
    assert commits > 0 and writes >= 50 * 2, "every run's writes were counted"
    assert writes / commits > 1.5, "batch mode groups several runs' writes per commit"
    assert (
        value(registry, "mainspring_journal_commit_duration_seconds_count", backend="sqlite")
        == commits
    )


@pytest.mark.parametrize("listener", ["metrics", "logs", "traces"])
async def test_flush_is_false_once_events_were_dropped(listener: str) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from mainspring.telemetry.listener import EventPump
    from mainspring.telemetry.logs import JournalLogger
    from mainspring.telemetry.tracing.tracer import JournalTracer

    pump: EventPump
    if listener == "metrics":
        pump = JournalMetrics(capacity=3, interval=60)
    elif listener == "logs":
        pump = JournalLogger("mainspring.test.dropped", capacity=3, interval=60)
    else:
        pump = JournalTracer(InMemorySpanExporter(), capacity=3, interval=60)
    async with Runtime(MemoryStore(), listeners=[pump]) as rt:
        await rt.run(tg.linear, {})  # 23 events into a buffer of 3: most are dropped
    assert pump.dropped > 0
    assert pump.flush(5) is False
    pump.close()


@pytest.mark.parametrize("first_seen", [2, 4, 5])
def test_a_runs_start_read_back_is_this_processs_when_nothing_came_between(
    first_seen: int,
) -> None:
    """The runtime hands listeners no run_started (create_run writes it), and a fork's copied
    journal may not reach them either: read back, the start is counted as this process's when
    the first event handed over follows it or the copy directly; else it is history."""
    from mainspring.telemetry.listener import EventPump

    journal = [
        Event.of("f", 1, 1.0, RunStarted("g", forked_from=ForkedFrom("src", 3))),
        Event.of("f", 2, 1.1, StepStarted(0, 0, "a")),
        Event.of("f", 3, 1.2, StepFinished(0, 0, "a")),
        Event.of("f", 4, 1.3, StepStarted(1, 0, "b")),
        Event.of("f", 5, 1.4, StepFinished(1, 0, "b")),
    ]
    seen: list[tuple[int, bool]] = []

    class Recorder(EventPump):
        def consume(self, event: Event, replay: bool) -> None:
            seen.append((event.seq, replay))

    pump = Recorder(reader=lambda run_id, after, until: journal[after:until], interval=60)
    pump(journal[first_seen - 1])
    assert pump.flush(5)
    pump.close()
    ours = first_seen in (2, 4)  # right after run_started, or right after the copy (seq 3)
    assert seen == [(1, not ours)] + [(s, True) for s in range(2, first_seen)] + [
        (first_seen, False)
    ]

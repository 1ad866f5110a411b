"""`mainspring trace`, `stats` and `metrics`: the waterfall, percentiles, metrics from a store."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from mainspring import Runtime
from mainspring.cli import observe
from mainspring.cli._common import CliGroup
from mainspring.events import (
    EffectFinished,
    EffectStarted,
    ErrorInfo,
    Event,
    EventKind,
    RunStarted,
    StepFailed,
    StepFinished,
    StepStarted,
    make_event,
)
from mainspring.store import MemoryStore
from mainspring.telemetry.latency import latency_stats, percentile
from mainspring.telemetry.spans.derive import derive_spans
from mainspring.telemetry.waterfall import critical_path, layout, render, to_json

from . import telemetry_graphs as tg


def _app() -> typer.Typer:
    app = typer.Typer(cls=CliGroup)
    observe.register(app)
    return app


def _agent_spans() -> list:  # type: ignore[type-arg]
    async def go() -> list[Event]:
        async with Runtime(MemoryStore()) as rt:
            await rt.run(tg.agent, {"text": "hi"}, run_id="fan")
            return await rt.events("fan")

    return derive_spans(anyio.run(go))


def test_waterfall_shows_nesting_parallel_branches_critical_path_retries_and_tokens() -> None:
    spans = _agent_spans()
    console = Console(record=True, width=160, color_system="truecolor")
    console.print(render(spans, width=160))
    text = console.export_text(clear=False)
    lines = text.splitlines()
    row = {
        name: [ln for ln in lines if name in ln]
        for name in (
            "invoke_workflow agent",
            "node work",
            "node answer",
            "chat small-1",
            "execute_tool search",
        )
    }
    assert row["invoke_workflow agent"][0].startswith("●")
    assert len(row["node work"]) == 3 and all("‖" in ln for ln in row["node work"])
    assert "retry in" in row["node answer"][0] and "ConnectionError" in row["node answer"][0]
    assert "attempt 2" in row["node answer"][1]
    assert "12→5 tok" in row["chat small-1"][0]
    # effects sit under their attempt, one level deeper
    assert row["chat small-1"][0].index("↯") > row["node answer"][0].index("◆")
    html = console.export_html()
    assert "color: #800000" in html  # errors in red (the standard red of the export theme)
    # the slowest of the three parallel branches is on the critical path, the others are not
    works = sorted((r for r in layout(spans) if r.span.name == "node work"), key=lambda r: r.end_ns)
    assert [r.critical for r in works] == [False, False, True]


def test_critical_path_follows_the_last_finisher() -> None:
    events = [
        make_event("c", 1, EventKind.RUN_STARTED, 0.0, {"graph": "g"}),
        make_event("c", 2, EventKind.STEP_STARTED, 0.0, {"step": 0, "task": 0, "node": "a"}),
        make_event("c", 3, EventKind.STEP_STARTED, 0.0, {"step": 0, "task": 1, "node": "b"}),
        make_event("c", 4, EventKind.STEP_FINISHED, 1.0, {"step": 0, "task": 0, "node": "a"}),
        make_event("c", 5, EventKind.STEP_FINISHED, 3.0, {"step": 0, "task": 1, "node": "b"}),
        make_event("c", 6, EventKind.STEP_STARTED, 3.0, {"step": 1, "task": 0, "node": "c"}),
        make_event("c", 7, EventKind.STEP_FINISHED, 4.0, {"step": 1, "task": 0, "node": "c"}),
        make_event("c", 8, EventKind.FINISHED, 4.0, {}),
    ]
    spans = derive_spans(events)
    on_path = {s.name for s in spans if s.span_id in critical_path(spans, 0)}
    assert on_path == {"invoke_workflow g", "node b", "node c"}


def test_waterfall_json() -> None:
    doc = to_json(_agent_spans())
    assert doc["run_id"] == "fan" and len(doc["spans"]) == 9
    first = doc["spans"][0]
    assert first["depth"] == 0 and first["critical"] and first["parent_id"] is None
    assert {s["parent_id"] for s in doc["spans"][1:]} <= {s["span_id"] for s in doc["spans"]}


def test_percentiles() -> None:
    assert percentile([1.0], 0.99) == 1.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.95) == pytest.approx(95.05)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    events: list[Event] = []
    error = ErrorInfo("E", "m")
    for i in range(1, 101):  # 100 runs; node `a` takes i ms, its effect i/2 ms, and fails on run 7
        run = f"r{i}"
        end = StepFailed(0, 0, "a", attempt=1, error=error) if i == 7 else StepFinished(0, 0, "a")
        events += [
            Event.of(run, 1, 0.0, RunStarted("g")),
            Event.of(run, 2, 10.0, StepStarted(0, 0, "a")),
            Event.of(run, 3, 10.0, EffectStarted(0, 0, "a", effect=0, name="tool:t", key="k")),
            Event.of(
                run,
                4,
                10.0 + i / 2000,
                EffectFinished(0, 0, "a", effect=0, name="tool:t", result=1),
            ),
            Event.of(run, 5, 10.0 + i / 1000, end),
        ]
    node, effect = latency_stats(derive_spans(events))
    assert (node.kind, node.name, node.count, node.errors) == ("node", "a", 100, 1)
    assert node.p50 == pytest.approx(0.0505, abs=1e-6) and node.p99 == pytest.approx(
        0.09901, abs=1e-6
    )
    assert (effect.kind, effect.name, effect.count) == ("effect", "tool:t", 100)
    assert effect.p95 == pytest.approx(0.047525, abs=1e-6)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def fill() -> None:
        async with Runtime.open(url) as rt:
            for i in range(3):
                await rt.run(tg.agent, {"text": "hi"}, run_id=f"a{i}")
            handle = await rt.start(tg.parent, {}, run_id="p")
            await handle.wait()

    anyio.run(fill)
    return url


def test_trace_command(store_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(_app(), ["trace", "a0", "--store", store_url], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert (
        "invoke_workflow agent" in result.output and "●" in result.output and "‖" in result.output
    )
    result = runner.invoke(_app(), ["trace", "p", "--store", store_url, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    names = [s["name"] for s in doc["spans"]]
    assert "invoke_workflow approval" in names  # the subgraph run is part of the trace
    assert any(s["kind"] == "wait" and s["end_ns"] is None for s in doc["spans"])  # still waiting
    missing = runner.invoke(_app(), ["trace", "nope", "--store", store_url])
    assert missing.exit_code == 3 and "nope" in missing.output


def test_stats_command(store_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(_app(), ["stats", "agent", "--store", store_url], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for text in ("over 3 recent runs", "work", "answer", "tool:search", "model:small-1", "p95"):
        assert text in result.output
    result = runner.invoke(
        _app(), ["stats", "agent", "--store", store_url, "--json", "--limit", "2"]
    )
    rows = [json.loads(line) for line in result.output.splitlines()]
    work = next(r for r in rows if r["name"] == "work")
    assert (
        work["runs"] == 2
        and work["count"] == 6
        and work["p50"] <= work["p95"] <= work["p99"] <= work["max"]
    )
    answer = next(r for r in rows if r["name"] == "answer")
    assert answer["errors"] == 2  # one failed attempt per run
    unknown = runner.invoke(_app(), ["stats", "nothing", "--store", store_url])
    assert unknown.exit_code == 3


def test_metrics_command_once(store_url: str) -> None:
    result = CliRunner().invoke(_app(), ["metrics", "--once", "--store", store_url])
    assert result.exit_code == 0, result.output
    assert 'mainspring_runs_finished_total{graph="agent"} 3.0' in result.output
    assert 'mainspring_interrupts_waiting{graph="approval"} 1.0' in result.output
    assert 'mainspring_interrupts_waiting{graph="parent"} 1.0' not in result.output  # counted once
    assert (
        'mainspring_tokens_total{direction="input",model="small-1",tenant=""} 36.0' in result.output
    )


def test_metrics_command_serves_over_http(store_url: str) -> None:
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-c",
        "from mainspring.cli import main; main()",
        "metrics",
        "--port",
        str(port),
        "--store",
        store_url,
        "--interval",
        "0.2",
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        body, deadline = "", time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/metrics", timeout=2
                ) as response:
                    body = response.read().decode()
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1].decode()
                time.sleep(0.1)
        assert 'mainspring_runs_finished_total{graph="agent"} 3.0' in body
    finally:
        server.terminate()
        server.communicate(timeout=10)

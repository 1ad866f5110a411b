"""Spans a killed process never exported are exported by the process that resumes its runs.

The tracer records in the store how far each run's spans got out (cursors); a
process that resumes a run exports what lies between that point and where it
took over. Here for real: a worker process traces runs to a real OTLP receiver
and is SIGKILLed while spans sit in its export queue; a second process recovers
the runs. The receiver must end up with every span of the journals exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mainspring import Runtime, store_from_url
from mainspring.store import MemoryStore
from mainspring.telemetry.reader import trace_events
from mainspring.telemetry.spans.derive import derive_spans
from mainspring.telemetry.tracing.tracer import CURSOR, JournalTracer

from . import telemetry_graphs as tg
from .telemetry_graphs import http_collector

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent
RUNS = 4

WORKER = '''
"""Runs traced to an OTLP receiver. crash: stop them mid-run, flushed halfway; recover: end them."""
import sys
from typing import Any, TypedDict

import anyio

from mainspring import END, START, Context, Graph, Runtime
from mainspring.telemetry.tracing.tracer import setup_tracing

URL, ENDPOINT, PHASE, RUNS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


class S(TypedDict, total=False):
    n: int


class Gate:
    at_b = 0
    at_c = 0
    open: Any = None


g = Graph(S, name="crashy")


@g.node
async def a(s: S, ctx: Context) -> S:
    return {"n": await ctx.step("tool:a", lambda: 1)}


@g.node
async def b(s: S, ctx: Context) -> S:
    n = await ctx.step("tool:b", lambda: 2)
    if PHASE == "crash":
        Gate.at_b += 1
        await Gate.open.wait()
    return {"n": n}


@g.node
async def c(s: S, ctx: Context) -> S:
    n = await ctx.step("tool:c", lambda: 3)
    if PHASE == "crash":
        Gate.at_c += 1
        await anyio.sleep_forever()  # killed here
    return {"n": n}


g.edge(START, "a")
g.edge("a", "b")
g.edge("b", "c")
g.edge("c", END)
app = g.compile()


async def main() -> None:
    Gate.open = anyio.Event()
    tracer = setup_tracing("otlp-http", endpoint=ENDPOINT, store=URL, service_name="crashy")
    async with Runtime.open(URL, graphs=[app], listeners=[tracer]) as rt:
        if PHASE == "recover":  # the runs were recovered on open
            for i in range(RUNS):
                await rt.handle(f"k-{i}").result()
            print("DONE" if tracer.flush(20) else "NOT EXPORTED", flush=True)
            return
        for i in range(RUNS):
            await rt.start(app, {}, run_id=f"k-{i}")
        while Gate.at_b < RUNS:
            await anyio.sleep(0.01)
        assert tracer.flush(20)  # what is closed so far gets out, and its cursors are saved
        print("FLUSHED", flush=True)
        Gate.open.set()
        while Gate.at_c < RUNS:
            await anyio.sleep(0.01)
        await anyio.sleep(0.5)  # the tracer builds the new spans; they wait in its export queue
        print("STUCK", flush=True)
        await anyio.sleep_forever()
    tracer.shutdown()


anyio.run(main)
'''


def _start(script: Path, url: str, endpoint: str, phase: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO),
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # nothing leaves the export queue but on flush
    }
    return subprocess.Popen(
        [sys.executable, str(script), url, endpoint, phase, str(RUNS)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen[str], line: str, timeout: float = 60.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = proc.stdout.readline()
        if got.strip() == line:
            return
        if not got and proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"the worker never said {line!r}; stderr:\n{err}")


async def test_spans_a_killed_process_never_exported_are_exported_once_by_its_successor(
    tmp_path: Path,
) -> None:
    script = tmp_path / "crash_tracing.py"
    script.write_text(WORKER)
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    with http_collector() as (collector, endpoint):
        first = _start(script, url, endpoint, "crash")
        _wait_for(first, "FLUSHED")
        before_kill = {(r.span.trace_id, r.span.span_id) for r in collector.spans()}
        _wait_for(first, "STUCK")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        assert len(collector.spans()) == len(before_kill)  # the rest died in its export queue

        second = _start(script, url, endpoint, "recover")
        _wait_for(second, "DONE")
        assert second.wait(timeout=60) == 0, second.communicate()[1]
        received = collector.spans()

    store = store_from_url(url)
    await store.open()
    try:
        events = [e for i in range(RUNS) for e in await trace_events(store, f"k-{i}")]
    finally:
        await store.aclose()
    expected = derive_spans(events)
    assert all(s.end_ns is not None for s in expected)  # every run finished
    want = Counter((s.trace_id.to_bytes(16, "big"), s.span_id.to_bytes(8, "big")) for s in expected)
    got = Counter((r.span.trace_id, r.span.span_id) for r in received)
    assert got == want, "every span of the journals, exactly once"
    assert len({k[0] for k in got}) == RUNS  # one trace per run
    # What the first process closed but never exported came from the second, out of the journal.
    by_name = Counter(
        r.span.name for r in received if (r.span.trace_id, r.span.span_id) not in before_kill
    )
    assert by_name["execute_tool c"] == RUNS and by_name["node b"] == RUNS
    assert not {
        r.span.name for r in received if (r.span.trace_id, r.span.span_id) in before_kill
    } & {
        "execute_tool c",
        "node b",
    }


class Flaky(SpanExporter):
    def __init__(self) -> None:
        self.failing = False
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        if self.failing:
            return SpanExportResult.FAILURE
        self.exported.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


async def test_a_run_whose_spans_failed_to_export_keeps_its_cursor_below_them() -> None:
    store = MemoryStore()
    exporter = Flaky()
    tracer = JournalTracer(exporter, store=store)
    async with Runtime(store, listeners=[tracer]) as rt:
        await rt.run(tg.linear, {}, run_id="fine")
        handle = await rt.start(tg.approval, {"text": "t"}, run_id="held")
        assert (await handle.wait()).interrupts
        assert tracer.flush(10)
        parked = (await rt.get_run("held")).last_seq
        fine = (await rt.get_run("fine")).last_seq
        assert await store.load_cursors(CURSOR, ["fine", "held"]) == {"fine": fine, "held": parked}
        exporter.failing = True  # the collector goes away; the run goes on
        await (await rt.resume("held", True)).result()
        assert not tracer.flush(10)
        assert (await rt.get_run("held")).last_seq > parked
    # Its wait, node and run spans closed after ``parked`` never got out: the cursor stays there.
    assert await store.load_cursors(CURSOR, ["held"]) == {"held": parked}
    tracer.shutdown()

"""Export: real OTLP/HTTP and gRPC receivers, a dead collector, OTEL_* configuration, traceparent."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any, TypedDict

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mainspring import END, START, Context, Graph, Runtime
from mainspring.events import Event, StepStarted
from mainspring.store import MemoryStore
from mainspring.telemetry import ids
from mainspring.telemetry.propagation import trace_headers, traceparent, use_trace_context
from mainspring.telemetry.tracing.exporters import SafeExporter, make_exporter
from mainspring.telemetry.tracing.tracer import JournalTracer, setup_tracing

from . import telemetry_graphs as tg
from .telemetry_graphs import Collector, Received, http_collector

pytestmark = pytest.mark.anyio


@contextmanager
def grpc_collector() -> Iterator[tuple[Collector, str]]:
    import grpc  # type: ignore[import-untyped]
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    collector = Collector()

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            collector.receive(request.SerializeToString())
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield collector, f"http://127.0.0.1:{port}"
    finally:
        server.stop(0)


async def _run_agent(tracer: JournalTracer, store: MemoryStore, run_id: str) -> list[Event]:
    async with Runtime(store, listeners=[tracer]) as rt:
        await rt.run(tg.agent, {"text": "hi"}, run_id=run_id, thread="conv-9")
        return await rt.events(run_id)


def _check_received(received: list[Received], events: list[Event], run_id: str) -> None:
    by_id = {r.span.span_id: r for r in received}
    names = sorted(r.span.name for r in received)
    assert names == sorted(
        [
            "invoke_workflow agent",
            "node plan",
            "node answer",
            "node answer",
            "execute_tool search",
            "chat small-1",
        ]
        + ["node work"] * 3
    )
    trace = ids.trace_of(run_id, tg.started(events)).to_bytes(16, "big")
    assert {r.span.trace_id for r in received} == {trace}
    root = next(r for r in received if r.span.name == "invoke_workflow agent")
    assert root.span.parent_span_id == b""
    assert root.span.span_id == ids.run_span_id(run_id).to_bytes(8, "big")
    assert root.resource["service.name"] == "svc-test" and root.scope == "mainspring"
    assert root.span.start_time_unix_nano == int(events[0].ts * 1e9)
    assert root.span.end_time_unix_nano == int(events[-1].ts * 1e9)
    for r in received:
        assert r.span.end_time_unix_nano >= r.span.start_time_unix_nano
        if r is root:
            continue
        parent = by_id[r.span.parent_span_id]  # every parent was received
        assert parent.span.start_time_unix_nano <= r.span.start_time_unix_nano
        assert r.attrs["mainspring.run_id"] == run_id and isinstance(r.attrs["mainspring.seq"], int)
    chat = next(r for r in received if r.span.name == "chat small-1")
    assert chat.span.kind == Span.SPAN_KIND_CLIENT
    assert chat.attrs["gen_ai.operation.name"] == "chat"
    assert (
        chat.attrs["gen_ai.usage.input_tokens"] == 12
        and chat.attrs["gen_ai.usage.output_tokens"] == 5
    )
    assert chat.attrs["gen_ai.conversation.id"] == "conv-9"
    assert by_id[chat.span.parent_span_id].span.name == "node answer"
    tool = next(r for r in received if r.span.name == "execute_tool search")
    assert (
        tool.attrs["gen_ai.tool.name"] == "search"
        and tool.attrs["gen_ai.tool.call.id"] == f"{run_id}:2.0.0"
    )
    failed = [r for r in received if r.span.name == "node answer" and r.span.status.code == 2]
    assert len(failed) == 1 and "ConnectionError" in failed[0].span.status.message
    assert failed[0].span.events[0].name == "exception"


@pytest.mark.parametrize("exporter", ["otlp-http", "otlp-grpc"])
async def test_spans_reach_a_real_otlp_collector(exporter: str) -> None:
    collector_of = http_collector if exporter == "otlp-http" else grpc_collector
    with collector_of() as (collector, url):
        store = MemoryStore()
        tracer = setup_tracing(exporter, endpoint=url, service_name="svc-test", store=store)
        assert tracer is not None
        events = await _run_agent(tracer, store, f"{exporter}-1")
        assert tracer.flush(10)
        tracer.shutdown()
        received = collector.spans()
    if exporter == "otlp-http":
        assert set(collector.paths) == {"/v1/traces"}
    _check_received(received, events, f"{exporter}-1")


async def test_with_capture_a_collector_receives_the_models_reply() -> None:
    with http_collector() as (collector, url):
        store = MemoryStore()
        tracer = setup_tracing("otlp-http", endpoint=url, capture_io=True, store=store)
        assert tracer is not None
        await _run_agent(tracer, store, "reply-1")
        assert tracer.flush(10)
        tracer.shutdown()
        [chat] = [r for r in collector.spans() if r.span.name == "chat small-1"]
    assert orjson.loads(chat.attrs["gen_ai.output.messages"])[0]["parts"] == [
        {"type": "text", "content": "HI"}
    ]
    finish = [kv for kv in chat.span.attributes if kv.key == "gen_ai.response.finish_reasons"]
    assert [v.string_value for v in finish[0].value.array_value.values] == ["stop"]


async def test_configured_by_otel_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    with http_collector() as (collector, url):
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "svc-test")
        store = MemoryStore()
        tracer = setup_tracing(store=store)
        assert tracer is not None
        events = await _run_agent(tracer, store, "env-1")
        tracer.shutdown()
        _check_received(collector.spans(), events, "env-1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    grpc = make_exporter()
    assert isinstance(grpc, SafeExporter) and "grpc" in type(grpc.inner).__module__
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert isinstance(make_exporter(), ConsoleSpanExporter)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert setup_tracing() is None
    with pytest.raises(ValueError, match="unknown span exporter"):
        make_exporter("zipkin")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_dead_collector_costs_nothing_but_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = MemoryStore()
    tracer = setup_tracing(
        "otlp-http", endpoint=f"http://127.0.0.1:{_closed_port()}", store=store, timeout=0.5
    )
    assert tracer is not None
    started = time.perf_counter()
    async with Runtime(store, listeners=[tracer]) as rt:
        for _ in range(50):
            await rt.run(tg.linear, {})
    assert time.perf_counter() - started < 2.0  # 500 steps; runs never wait for the exporter
    tracer.flush(timeout=3.0)
    started = time.perf_counter()
    tracer.shutdown(timeout=1.0)
    assert time.perf_counter() - started < 2.5
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records
    ]
    assert any(
        "cannot export spans" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


@pytest.mark.parametrize("receiver", ["refusing", "down"])
async def test_flush_is_false_when_spans_could_not_be_exported(receiver: str) -> None:
    with contextlib.ExitStack() as stack:
        if receiver == "refusing":  # answers every export with 400 Bad Request
            _, url = stack.enter_context(http_collector(status=400))
        else:
            url = f"http://127.0.0.1:{_closed_port()}"
        store = MemoryStore()
        tracer = setup_tracing("otlp-http", endpoint=url, store=store, timeout=0.5)
        assert tracer is not None
        async with Runtime(store, listeners=[tracer]) as rt:
            await rt.run(tg.linear, {})
        assert tracer.flush(10) is False
        assert tracer.lost == 11  # the run and its 10 nodes
        assert tracer.flush(10) is False  # still: those spans never got out
        tracer.shutdown(timeout=1.0)
    with http_collector() as (collector, url):
        tracer = setup_tracing("otlp-http", endpoint=url, store=store)
        assert tracer is not None
        async with Runtime(store, listeners=[tracer]) as rt:
            await rt.run(tg.linear, {})
        assert tracer.flush(10) is True and tracer.lost == 0
        tracer.shutdown()
    assert len(collector.spans()) == 11


async def test_flush_is_false_when_a_span_processor_says_it_did_not_flush() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    class Stuck(SimpleSpanProcessor):
        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return False

    tracer = JournalTracer(processor=Stuck(InMemorySpanExporter()))
    async with Runtime(MemoryStore(), listeners=[tracer]) as rt:
        await rt.run(tg.linear, {})
    assert tracer.flush(5) is False
    tracer.shutdown()


async def test_the_listener_only_buffers_and_counts_what_it_drops() -> None:
    exporter = InMemorySpanExporter()
    tracer = JournalTracer(exporter, capacity=5, interval=60)
    event = Event.of("x", 2, time.time(), StepStarted(0, 0, "a"))
    started = time.perf_counter()
    for _ in range(20):
        tracer(event)
    assert tracer.dropped == 15
    many = 100_000
    for _ in range(many):
        tracer(event)
    per_call = (time.perf_counter() - started) / many
    assert per_call < 2e-6, f"{per_call * 1e9:.0f} ns per listener call"
    tracer.shutdown()


class Hop(TypedDict, total=False):
    seen: list[str]


def _hop_graph() -> Any:
    g = Graph(Hop, name="hop")

    @g.node
    async def call(s: Hop, ctx: Context) -> dict[str, Any]:
        def remote() -> list[str]:
            from opentelemetry import trace

            with use_trace_context(ctx):
                current = trace.get_current_span().get_span_context()
            return [
                traceparent(ctx) or "",
                trace_headers(ctx)["traceparent"],
                f"{current.span_id:016x}",
            ]

        return {"seen": await ctx.step("tool:remote", remote)}

    g.edge(START, "call")
    g.edge("call", END)
    return g.compile()


async def test_effects_get_the_traceparent_of_their_span() -> None:
    exporter = InMemorySpanExporter()
    store = MemoryStore()
    tracer = JournalTracer(exporter, store=store)
    async with Runtime(store, listeners=[tracer]) as rt:
        out = await rt.run(_hop_graph(), {}, run_id="hop-1")
    tracer.shutdown()
    header, again, current = out["seen"]
    tool = next(s for s in exporter.get_finished_spans() if s.name == "execute_tool remote")
    assert tool.context is not None
    assert header == again == f"00-{tool.context.trace_id:032x}-{tool.context.span_id:016x}-01"
    assert current == f"{tool.context.span_id:016x}"
    assert traceparent.__name__ == "traceparent"


async def test_subgraph_effects_get_the_traceparent_of_their_span() -> None:
    g = Graph(Hop, name="outer")
    g.node("hop", _hop_graph())
    g.edge(START, "hop")
    g.edge("hop", END)
    exporter = InMemorySpanExporter()
    store = MemoryStore()
    tracer = JournalTracer(exporter, store=store)
    async with Runtime(store, listeners=[tracer]) as rt:
        out = await rt.run(g.compile(), {}, run_id="outer-1")
        root = await rt.events("outer-1")
    tracer.shutdown()
    tool = next(s for s in exporter.get_finished_spans() if s.name == "execute_tool remote")
    assert tool.context is not None
    assert tool.context.trace_id == ids.trace_of("outer-1", tg.started(root))
    assert out["seen"][0] == f"00-{tool.context.trace_id:032x}-{tool.context.span_id:016x}-01"


class Parked(TypedDict, total=False):
    seen: list[str]
    ok: bool


async def test_a_run_resumed_from_a_snapshot_keeps_its_traceparent(tmp_path: Any) -> None:
    g = Graph(Parked, name="parked")

    @g.node
    async def ask(s: Parked, ctx: Context) -> dict[str, Any]:
        return {"ok": bool(await ctx.interrupt("go?"))}

    @g.node
    async def call(s: Parked, ctx: Context) -> dict[str, Any]:
        return {"seen": [await ctx.step("tool:remote", lambda: traceparent(ctx) or "")]}

    g.node("begin", lambda s: None)  # step 0: snapshots are taken from step 1 on
    g.edge(START, "begin")
    g.edge("begin", "ask")
    g.edge("ask", "call")
    g.edge("call", END)
    app = g.compile()
    url = f"sqlite:///{tmp_path / 'snap.db'}"
    async with Runtime.open(url, snapshot_every=1) as rt:
        assert (await (await rt.start(app, {}, run_id="snap-1")).wait()).interrupts
        assert await rt.store.load_snapshot("snap-1") is not None  # the resume folds from it
    exporter = InMemorySpanExporter()
    tracer = JournalTracer(exporter, store=url)
    async with Runtime.open(url, listeners=[tracer], snapshot_every=1) as rt:
        out = await (await rt.resume("snap-1", True, graph=app)).result()
        first = (await rt.events("snap-1", until=1))[0]
    tracer.shutdown()
    tool = next(s for s in exporter.get_finished_spans() if s.name == "execute_tool remote")
    assert tool.context is not None and tool.context.trace_id == ids.trace_of(
        "snap-1", tg.started([first])
    )
    assert out["seen"] == [f"00-{tool.context.trace_id:032x}-{tool.context.span_id:016x}-01"]


async def test_console_exporter_and_capture() -> None:
    buffer = io.StringIO()
    store = MemoryStore()
    tracer = setup_tracing(
        ConsoleSpanExporter(out=buffer),
        capture_io=True,
        store=store,
        redact=lambda key, value: "[redacted]" if key == "mainspring.input" else value,
    )
    assert tracer is not None
    async with Runtime(store, listeners=[tracer]) as rt:
        await rt.run(tg.linear, {"text": "secret"})
    tracer.shutdown()
    text = buffer.getvalue()
    assert '"invoke_workflow linear"' in text and "[redacted]" in text and "secret" not in text
    assert '"mainspring.update"' in text


async def test_a_new_run_is_traced_whole_without_a_journal_reader() -> None:
    exporter = InMemorySpanExporter()
    tracer = JournalTracer(exporter)  # no store=: a new run's events all reach the listener
    async with Runtime(MemoryStore(), listeners=[tracer]) as rt:
        await rt.run(tg.linear, {}, run_id="fresh")
    tracer.shutdown()
    spans = exporter.get_finished_spans()
    run = next(s for s in spans if s.parent is None)
    assert run.attributes is not None and "mainspring.partial" not in run.attributes
    assert run.context is not None and run.context.span_id == ids.run_span_id("fresh")
    assert all(
        s.parent is not None and s.parent.span_id == run.context.span_id
        for s in spans
        if s is not run
    )


async def test_a_span_processor_of_ones_own_gets_each_span() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = InMemorySpanExporter()
    store = MemoryStore()
    tracer = JournalTracer(processor=SimpleSpanProcessor(exporter), store=store)
    async with Runtime(store, listeners=[tracer]) as rt:
        await rt.run(tg.linear, {}, run_id="own")
    assert tracer.flush()
    assert len(exporter.get_finished_spans()) == 11
    tracer.shutdown()

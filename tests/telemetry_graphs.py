"""Graphs and helpers shared by the telemetry tests, and a tiny OTLP/HTTP receiver."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any, TypedDict

import anyio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from mainspring import END, START, Context, Graph, Retry, Send, append
from mainspring.events import Event, RunStarted
from mainspring.telemetry.spans.record import SpanRecord


class Doc(TypedDict, total=False):
    text: str
    n: int
    parts: Annotated[list[int], append]
    answer: str
    approved: bool


def _model_call(prompt: str) -> dict[str, Any]:
    return {
        "text": prompt.upper(),
        "usage": {"input_tokens": 12, "output_tokens": 5},
        "model": "small-1",
        "provider": "acme-ai",
        "cost_usd": 0.002,
    }


async def _search(query: str) -> list[str]:
    await anyio.sleep(0.002)
    return [query, query + "!"]


def build_agent() -> Graph[Doc]:
    """plan -> fan-out of 3 `work` tasks (Send) -> answer (tool + model effects, retried once)."""
    g = Graph(Doc, name="agent")

    @g.node
    def plan(s: Doc) -> None:
        return None

    @g.node
    async def work(arg: dict[str, int]) -> dict[str, Any]:
        await anyio.sleep(0.003 * (3 - arg["i"]))
        return {"parts": [arg["i"]]}

    @g.node(retry=Retry(attempts=3, backoff=0.001, jitter=False))
    async def answer(s: Doc, ctx: Context) -> dict[str, Any]:
        hits = await ctx.step("tool:search", _search, s["text"])
        reply = await ctx.step("model:small-1", _model_call, hits[0])
        if ctx.attempt == 1:
            raise ConnectionError("flaky upstream")
        return {"answer": reply["text"]}

    g.edge(START, "plan")
    g.branch("plan", lambda s: [Send("work", {"i": i}) for i in range(3)], ["work"])
    g.edge("work", "answer")
    g.edge("answer", END)
    return g


agent = build_agent().compile()


def build_approval() -> Graph[Doc]:
    """draft (an effect) -> approve (an interrupt) -> done."""
    g = Graph(Doc, name="approval")

    @g.node
    async def draft(s: Doc, ctx: Context) -> dict[str, Any]:
        text = await ctx.step("tool:draft", lambda t: t + " v1", s.get("text", ""))
        return {"text": text}

    @g.node
    async def approve(s: Doc, ctx: Context) -> dict[str, Any]:
        await ctx.step("notify", lambda: "sent")
        ok = await ctx.interrupt({"review": s["text"]})
        return {"approved": bool(ok)}

    @g.node
    def done(s: Doc) -> dict[str, Any]:
        return {"answer": "yes" if s.get("approved") else "no"}

    g.edge(START, "draft")
    g.edge("draft", "approve")
    g.edge("approve", "done")
    g.edge("done", END)
    return g


approval = build_approval().compile()


def build_parent() -> Graph[Doc]:
    """prepare -> review (the approval graph as a subgraph) -> publish."""
    g = Graph(Doc, name="parent")
    g.node("prepare", lambda s: {"text": "report"})
    g.node("review", approval)
    g.node("publish", lambda s: {"n": 1})
    g.edge(START, "prepare")
    g.edge("prepare", "review")
    g.edge("review", "publish")
    g.edge("publish", END)
    return g


parent = build_parent().compile()


def build_failing() -> Graph[Doc]:
    g = Graph(Doc, name="failing")

    @g.node
    def boom(s: Doc) -> None:
        raise ValueError("bad input")

    g.edge(START, "boom")
    g.edge("boom", END)
    return g


failing = build_failing().compile()


def build_linear(n: int = 10) -> Graph[Doc]:
    g = Graph(Doc, name="linear")
    previous = START
    for i in range(n):
        g.node(f"n{i}", lambda s: {"n": s.get("n", 0) + 1})
        g.edge(previous, f"n{i}")
        previous = f"n{i}"
    g.edge(previous, END)
    return g


linear = build_linear().compile()


def by_name(spans: Iterable[SpanRecord]) -> dict[str, list[SpanRecord]]:
    out: dict[str, list[SpanRecord]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def check_tree(spans: list[SpanRecord]) -> None:
    """Every span: one trace, a parent in the trace (but the root), ends after it starts, unique ids."""
    ids = [s.span_id for s in spans]
    assert len(ids) == len(set(ids)), "duplicate span ids"
    known = set(ids)
    roots = [s for s in spans if s.parent_id is None]
    assert len(roots) == 1, [s.name for s in roots]
    assert len({s.trace_id for s in spans}) == 1
    for s in spans:
        assert s.parent_id is None or s.parent_id in known, f"{s.name} has no parent in the trace"
        assert s.end_ns is None or s.end_ns >= s.start_ns, s.name


def run_events(events: Iterable[Event], run_id: str) -> list[Event]:
    return [e for e in events if e.run_id == run_id]


def started(events: Sequence[Event]) -> RunStarted:
    """The data of a journal's first event, its ``run_started``."""
    data = events[0].data
    assert isinstance(data, RunStarted), events[0]
    return data


# -- a tiny OTLP collector -----------------------------------------------------------


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    return None if which is None else getattr(v, which)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass
class Received:
    span: Span
    resource: dict[str, Any]
    scope: str

    @property
    def attrs(self) -> dict[str, Any]:
        return _attrs(self.span.attributes)


class Collector:
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def receive(self, body: bytes, path: str = "") -> None:
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            self.requests.append(request)
            self.paths.append(path)

    def spans(self) -> list[Received]:
        out: list[Received] = []
        with self.lock:
            for request in self.requests:
                for rs in request.resource_spans:
                    for ss in rs.scope_spans:
                        out.extend(
                            Received(s, _attrs(rs.resource.attributes), ss.scope.name)
                            for s in ss.spans
                        )
        return out


@contextmanager
def http_collector(status: int = 200) -> Iterator[tuple[Collector, str]]:
    """A real OTLP/HTTP receiver on a free port; ``status`` other than 200 refuses every export."""
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if status == 200:
                collector.receive(body, self.path)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

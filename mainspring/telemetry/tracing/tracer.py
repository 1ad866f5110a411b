"""OpenTelemetry traces from the journal: the :class:`JournalTracer` listener and ``setup_tracing``.

    tracer = setup_tracing(exporter="otlp-http", store=store)   # or configure with OTEL_* variables
    async with Runtime(store, listeners=[tracer]) as rt: ...
    tracer.shutdown()                                           # also done at exit

The listener only buffers events. Its thread derives spans (:mod:`..spans`) and
hands them to an export thread (:mod:`.batch_export`) that exports in bounded
batches to the exporter :mod:`.exporters` picks.
A collector that is down costs a logged warning: export failures never reach a
run, and shutdown gives up after its timeout; ``flush()`` says whether
everything got out.

With a store (``store=``), the tracer records in it how far each run's spans
were exported (the store's cursors, ``otel-spans`` by default), at most once
per export batch. A process that resumes a run started elsewhere (after a
crash, or an interrupt) exports again the spans the journal shows before the
resume point that never got out: those of a process killed before its
exporter flushed. A run the store has no cursor for is taken as exported
nowhere. Ids are deterministic, so a span exported twice (a process killed
between an export and the cursor's save) is the same span, not another one.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as OtelEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ...events import Event
from ...store import Store
from ..conventions import Capture, Redactor
from ..listener import DEFAULT_CAPACITY, EventPump
from ..reader import JournalReader, StoreReader, as_reader
from ..spans.derive import SpanBuilder
from ..spans.record import SpanRecord
from .batch_export import BatchExporter
from .exporters import SafeExporter, make_exporter

log = logging.getLogger("mainspring.telemetry")

_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_UNSET: Final = Status()
CURSOR: Final = "otel-spans"  # the store's cursor of what the tracer exported


class JournalTracer(EventPump):
    """A runtime listener that turns the journal into OpenTelemetry spans, off the hot path.

    ``cursor`` names the store's record of what this tracer exported (give two
    tracers of one store exporting to different backends different names; None:
    record nothing, and never export again what another process traced).
    Cursors need ``store=`` and the built-in export (no ``processor=``).
    """

    def __init__(
        self,
        exporter: SpanExporter | None = None,
        *,
        processor: SpanProcessor | None = None,
        resource: Resource | None = None,
        capture: Capture | None = None,
        store: Store | str | JournalReader | None = None,
        capacity: int = DEFAULT_CAPACITY,
        interval: float = 0.1,
        max_runs: int = 10_000,
        cursor: str | None = CURSOR,
    ) -> None:
        if processor is None and exporter is None:
            raise ValueError("JournalTracer needs a span exporter or a span processor")
        self.exporter = exporter
        self.processor = (
            processor  # a SpanProcessor gets each span; else whole batches go to the exporter
        )
        self.cursor = cursor
        self._batches = (
            BatchExporter(exporter, on_progress=self._save_progress)
            if processor is None and exporter is not None
            else None
        )
        self._pending: list[ReadableSpan] = []
        self._progress: dict[str, int] = {}  # run -> last seq that closed spans, this drain
        self.resource = resource or default_resource()
        self.builder = SpanBuilder(capture or Capture(), max_runs=max_runs)
        self._scope = InstrumentationScope("mainspring")
        self._contexts: dict[int, SpanContext] = {}
        self._shut = False
        super().__init__(
            reader=as_reader(store),
            capacity=capacity,
            interval=interval,
            max_runs=max_runs,
            name="mainspring-tracer",
        )
        atexit.register(_shutdown_at_exit, weakref.ref(self))

    def consume(self, event: Any, replay: bool) -> None:
        closed = self.builder.feed(event, replay=replay)
        if not closed:
            return
        # Progress only at events that close spans: those in between re-derive to nothing.
        self._progress[event.run_id] = event.seq
        for span in closed:
            if self.processor is not None:
                self.processor.on_end(self.readable(span))
            else:
                self._pending.append(self.readable(span))

    def after_batch(self) -> None:
        progress, self._progress = self._progress, {}
        if self._batches is None:
            return
        if not self._cursors_on():
            progress = {}
        if self._pending or progress:
            # Every span closed by the events of ``progress`` is in this batch or an earlier one.
            self._batches.submit(self._pending, progress)
            self._pending = []

    # -- cursors: what got out, so that a process resuming a run re-exports only the rest

    def _cursors_on(self) -> bool:
        return (
            self.cursor is not None
            and self._batches is not None
            and isinstance(self.reader, StoreReader)
        )

    def _save_progress(self, progress: dict[str, int]) -> None:
        """On the export thread, after an export: how far each run got out."""
        reader = self.reader
        if self.cursor is not None and isinstance(reader, StoreReader):
            reader.save_cursors(self.cursor, progress)

    def _backfill(self, run_id: str, last: int | None, seq: int) -> list[tuple[Event, bool]]:
        history = super()._backfill(run_id, last, seq)
        if last is not None or not history or not self._cursors_on():
            return history
        # First contact with a run traced elsewhere (its history is replayed, not exported):
        # what its cursor says never got out is exported now.
        assert isinstance(self.reader, StoreReader) and self.cursor is not None
        try:
            exported = self.reader.load_cursors(self.cursor, [run_id]).get(run_id, 0)
        except Exception as exc:
            log.warning("telemetry could not read how far run %s was exported: %s", run_id, exc)
            return history
        return [(e, replay and e.seq <= exported) for e, replay in history]

    def _context(self, trace: int, span: int) -> SpanContext:
        # Node spans share their run span as parent: one SpanContext per run, not per span.
        contexts = self._contexts
        found = contexts.get(span)
        if found is None:
            if len(contexts) > 100_000:
                contexts.clear()
            found = contexts[span] = SpanContext(trace, span, False, _SAMPLED)
        return found

    def readable(self, span: SpanRecord) -> ReadableSpan:
        context = SpanContext(span.trace_id, span.span_id, False, _SAMPLED)
        parent = None if span.parent_id is None else self._context(span.trace_id, span.parent_id)
        if span.kind == "run":
            self._contexts.pop(span.span_id, None)
        return ReadableSpan(
            span.name,
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=span.attributes,
            events=[OtelEvent(e.name, e.attributes, e.ts_ns) for e in span.events]
            if span.events
            else (),
            links=[trace_api.Link(SpanContext(t, s, False, _SAMPLED)) for t, s in span.links]
            if span.links
            else (),
            kind=SpanKind.CLIENT if span.client else SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, span.status_message)
            if span.status == "error"
            else _UNSET,
            start_time=span.start_ns,
            end_time=span.end_ns,
            instrumentation_scope=self._scope,
        )

    @property
    def lost(self) -> int:
        """Spans that could not be exported (export failed, or the export queue was full)."""
        return self._batches.lost if self._batches is not None else 0

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Export every span of the events recorded so far (waits at most ``timeout`` seconds).

        True only if all of them were exported: False if the wait timed out, or
        if any span since the tracer started could not be exported (``lost``) or
        any event was dropped from a full buffer (``dropped``).
        """
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        handled = super().flush(timeout)
        exported = self._flush_export(max(0.0, deadline - time.monotonic()))
        return handled and exported and not self.lost

    def _flush_export(self, timeout: float) -> bool:
        if self._batches is not None:
            return self._batches.flush(timeout)
        processor = self.processor
        assert processor is not None
        return _bounded(lambda: processor.force_flush(int(timeout * 1000)), timeout)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Export what is left (giving up after ``timeout`` seconds), then stop."""
        if self._shut:
            return
        self._shut = True
        deadline = time.monotonic() + timeout
        super().close(timeout, keep_reader=True)  # the last export still saves its cursors
        if not self._flush_export(max(0.0, deadline - time.monotonic())):
            log.warning("gave up exporting spans after %.1f s; the rest are dropped", timeout)
            if isinstance(self.exporter, SafeExporter):
                self.exporter.abort()  # stops its retries, so the export thread ends
        if self._batches is not None:
            self._batches.shutdown(timeout=0.5)
        elif self.processor is not None:
            self.processor.shutdown()
        self.release_reader()


def _shutdown_at_exit(ref: weakref.ReferenceType[JournalTracer]) -> None:
    tracer = ref()
    if tracer is not None:
        tracer.shutdown(timeout=2.0)


def _bounded(fn: Callable[[], object], timeout: float) -> bool:
    """Run ``fn`` in a helper thread; False if it took over ``timeout`` seconds or said False."""
    done = threading.Event()
    said: list[object] = [False]

    def call() -> None:
        try:
            said[0] = fn()
        except Exception as exc:
            log.warning("telemetry flush failed: %s", exc)
        finally:
            done.set()

    threading.Thread(target=call, name="mainspring-telemetry-flush", daemon=True).start()
    return done.wait(timeout) and said[0] is not False


def setup_tracing(
    exporter: str | SpanExporter | None = None,
    *,
    endpoint: str | None = None,
    headers: dict[str, str] | None = None,
    service_name: str | None = None,
    capture_io: bool = False,
    redact: Redactor | None = None,
    max_attr_bytes: int = 4096,
    store: Store | str | JournalReader | None = None,
    timeout: float | None = None,
) -> JournalTracer | None:
    """A tracer to pass as ``Runtime(listeners=[tracer])``; None when the exporter is ``none``.

    ``service_name`` defaults to ``OTEL_SERVICE_NAME``, else ``mainspring``
    (``OTEL_RESOURCE_ATTRIBUTES`` is honoured). With ``capture_io``, run inputs,
    node updates, effect results (a model's reply as ``gen_ai.output.messages``)
    and interrupt payloads become attributes, passed through
    ``redact(attribute, value)`` and cut to ``max_attr_bytes`` (see :class:`Capture`). ``store``
    (the runtime's Store object, or its URL) lets the tracer read journal parts
    it was not handed live: every run's start, and runs resumed from another process.
    """
    chosen = (
        exporter
        if isinstance(exporter, SpanExporter)
        else make_exporter(exporter, endpoint=endpoint, headers=headers, timeout=timeout)
    )
    if chosen is None:
        return None
    capture = Capture(capture_io, redact, max_attr_bytes)
    return JournalTracer(
        chosen, resource=default_resource(service_name), capture=capture, store=store
    )


def default_resource(service_name: str | None = None) -> Resource:
    """``service.name``: ``service_name``, else ``OTEL_SERVICE_NAME`` (or in ``OTEL_RESOURCE_ATTRIBUTES``), else mainspring."""
    attributes: dict[str, str] = {}
    if service_name is not None:
        attributes["service.name"] = service_name
    elif not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes["service.name"] = "mainspring"
    return Resource.create(attributes)

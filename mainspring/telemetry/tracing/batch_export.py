"""Span export on its own thread, fed whole batches at a time, saying how far each run got out.

The tracer's thread builds spans in batches (one per drain of its buffer) and
hands each batch over in one call; the SDK's ``BatchSpanProcessor`` takes them
one ``on_end`` at a time, which measured ~2 us per span: a quarter of W7's
budget. Same knobs, same environment variables (``OTEL_BSP_SCHEDULE_DELAY``,
``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``), but a larger
default queue, since a whole drain's spans arrive at once. Spans beyond the
queue are dropped, counted and warned about, never waited for.

Progress: with each batch of spans the tracer hands over, per run, the last
event that closed any (``{run_id: seq}``: every span closed by the run's events
up to ``seq`` is in this batch or an earlier one). Once everything queued
before it has left the queue, the progress goes to ``on_progress`` (at most
once per export batch), so a process that resumes a run after a crash
re-exports only what never got out. A run with a span that could not be
exported is held below that span for good.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..listener import Worker

log = logging.getLogger("mainspring.telemetry")

DEFAULT_QUEUE: Final = 65_536
_MAX_HELD: Final = 100_000  # runs held below a lost span (the oldest forgotten first)

#: Called on the export thread with each confirmed progress, ``{run_id: seq}``.
ProgressSink = Callable[[dict[str, int]], None]


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        log.warning("ignoring %s=%r: not an integer", name, os.environ.get(name))
        return default


class BatchExporter(Worker[ReadableSpan]):
    """Exports spans in batches of ``batch_size`` every ``delay`` seconds, or sooner when a batch is full."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue: int | None = None,
        batch_size: int | None = None,
        delay: float | None = None,
        on_progress: ProgressSink | None = None,
    ) -> None:
        self.exporter = exporter
        self.on_progress = on_progress
        self.lost = 0  # spans dropped (queue full) or whose export failed
        self._warned = 0.0
        self._batch = batch_size or _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
        self._queued = 0  # spans ever queued (the tracer's thread counts)
        self._taken = 0  # spans ever taken off the queue, exported or lost (the export thread's)
        self._marks: deque[tuple[int, Mapping[str, int]]] = deque()  # (_queued then, progress)
        self._held: dict[str, int] = {}  # run -> highest progress it may be confirmed at
        self._held_lock = threading.Lock()
        super().__init__(
            capacity=max_queue or _env_int("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_QUEUE),
            interval=delay
            if delay is not None
            else _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
            name="mainspring-span-export",
        )

    def submit(
        self, spans: Sequence[ReadableSpan], progress: Mapping[str, int] | None = None
    ) -> None:
        """Queue ``spans`` and the progress they complete (the tracer's thread; never blocks)."""
        room = self._cap - len(self._buf)
        if room < len(spans):
            dropped = spans[max(room, 0) :]
            spans = spans[: max(room, 0)]
            self.dropped += len(dropped)
            self._lose(dropped)
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning("span export queue full: %d spans dropped so far", self.dropped)
        self._buf.extend(spans)
        self._queued += len(spans)
        if progress:
            self._marks.append((self._queued, progress))
        if len(self._buf) >= self._batch:
            self._wake.set()

    def _drain(self) -> None:
        buf = self._buf
        while buf:
            batch = [buf.popleft() for _ in range(min(self._batch, len(buf)))]
            try:
                ok = self.exporter.export(batch) is SpanExportResult.SUCCESS
            except Exception as exc:
                log.warning("span export failed: %s", exc)
                ok = False
            if not ok:
                self._lose(batch)
            self._taken += len(batch)
            self._confirm()
        self._confirm()  # progress queued with no spans of its own

    def _lose(self, spans: Sequence[ReadableSpan]) -> None:
        """Hold each run of ``spans`` below the earliest of them, for good."""
        self.lost += len(spans)
        with self._held_lock:
            held = self._held
            for span in spans:
                attrs = span.attributes or {}
                run_id, seq = attrs.get("mainspring.run_id"), attrs.get("mainspring.seq")
                if isinstance(run_id, str) and isinstance(seq, int):
                    # The span opened at ``seq`` and closed later: below ``seq`` is safe.
                    held[run_id] = min(held.get(run_id, seq - 1), seq - 1)
            while len(held) > _MAX_HELD:
                del held[next(iter(held))]

    def _confirm(self) -> None:
        """Hand on the progress of every mark whose spans have all left the queue."""
        marks, taken = self._marks, self._taken
        if not marks or marks[0][0] > taken:
            return
        confirmed: dict[str, int] = {}
        while marks and marks[0][0] <= taken:
            for run_id, seq in marks.popleft()[1].items():
                if seq > confirmed.get(run_id, 0):
                    confirmed[run_id] = seq
        held = self._held
        if held:
            with self._held_lock:
                for run_id in confirmed.keys() & held.keys():
                    confirmed[run_id] = min(confirmed[run_id], held[run_id])
        if self.on_progress is None or not confirmed:
            return
        try:
            self.on_progress(confirmed)
        except Exception as exc:  # the spans are out; only a later recovery may repeat some
            log.warning("could not record how far spans were exported: %s", exc)

    def shutdown(self, timeout: float | None = 5.0) -> None:
        self.close(timeout)
        self.exporter.shutdown()

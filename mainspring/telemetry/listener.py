"""The base of telemetry's runtime listeners: an append on the hot path, everything else on a thread.

``Runtime(listeners=[...])`` calls a listener for every event as it is
recorded, inside the run's task. An :class:`EventPump` only appends the event
to a bounded buffer (counting what it drops when full) and returns; a daemon
thread drains the buffer every ``interval`` seconds, fills gaps in each run's
sequence from the journal, and hands the events to :meth:`EventPump.consume`.

:class:`Worker` is the thread half (a bounded buffer a daemon thread drains); the
span export thread is one too.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Final, Generic, TypeVar

from ..events import TERMINAL_KINDS, Event, RunStarted
from .reader import JournalReader, StoreReader

log = logging.getLogger("mainspring.telemetry")

DEFAULT_CAPACITY: Final = 100_000

T = TypeVar("T")


class Worker(Generic[T]):
    """A bounded buffer drained by a daemon thread every ``interval`` seconds (or on ``wake``)."""

    def __init__(self, *, capacity: int, interval: float, name: str) -> None:
        self._buf: deque[T] = deque()
        self._cap = capacity
        self.dropped = 0  # items not buffered because the buffer was full
        self._interval = interval
        self._wake = threading.Event()
        self._cv = threading.Condition()
        self._requested = 0
        self._done = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        """Take everything buffered and handle it (on the thread)."""
        raise NotImplementedError

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            with self._cv:
                requested, closing = self._requested, self._closed
            try:
                self._drain()
            except Exception:  # telemetry must never die quietly nor take anything down
                log.exception("telemetry failed to process its buffer")
            with self._cv:
                self._done = requested
                self._cv.notify_all()
            if closing:
                return

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until everything buffered before this call has been handled."""
        if not self._thread.is_alive():
            return not self._buf
        with self._cv:
            self._requested += 1
            target = self._requested
            self._wake.set()
            return self._cv.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Handle what is buffered, then stop the thread."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        self._thread.join(timeout)


class EventPump(Worker[Event]):
    """Base of the tracer, metrics and logger listeners; subclasses implement ``consume``."""

    def __init__(
        self,
        *,
        reader: JournalReader | None = None,
        capacity: int = DEFAULT_CAPACITY,
        interval: float = 0.1,
        max_runs: int = 10_000,
        name: str = "mainspring-telemetry",
    ) -> None:
        self.reader = reader
        self._max_runs = max_runs
        self._seqs: dict[str, int] = {}  # last seq handled, per run (oldest dropped first)
        self._warned = False
        super().__init__(capacity=capacity, interval=interval, name=name)

    def __call__(self, event: Event) -> None:
        """The hot path: buffer and return."""
        if len(self._buf) < self._cap:
            self._buf.append(event)
        else:
            self.dropped += 1

    def consume(self, event: Event, replay: bool) -> None:
        """Handle one event, in each run's order; ``replay``: history another process handled."""
        raise NotImplementedError

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every event recorded before this call has been handled.

        False if that took longer than ``timeout``, or if any event was ever
        dropped from a full buffer (``dropped``): what it meant may be missing.
        """
        return super().flush(timeout) and not self.dropped

    def after_batch(self) -> None:
        """Called after each drained batch (a place to hand work on)."""

    def _drain(self) -> None:
        buf = self._buf
        if not buf:
            return
        handle = self._handle
        while buf:
            handle(buf.popleft())
        self.after_batch()

    def _handle(self, event: Event) -> None:
        seqs = self._seqs
        run_id, seq = event.run_id, event.seq
        last = seqs.get(run_id)
        if last is not None and seq <= last:
            return  # already handled (a backfill read it first)
        if seq > (last or 0) + 1:
            if self.reader is not None:
                for old, replay in self._backfill(run_id, last, seq):
                    self.consume(old, replay)
            elif not self._warned:
                self._warned = True
                log.warning(
                    "%s cannot read the journal, so runs lack what it was not handed live (every "
                    "run's start, the past of resumed runs); pass store=<the runtime's store or URL>",
                    type(self).__name__,
                )
        self.consume(event, False)
        if event.kind in TERMINAL_KINDS:
            seqs.pop(run_id, None)
            return
        seqs[run_id] = seq
        if len(seqs) > self._max_runs:
            del seqs[next(iter(seqs))]

    def _backfill(self, run_id: str, last: int | None, seq: int) -> list[tuple[Event, bool]]:
        assert self.reader is not None
        try:
            history = self.reader(run_id, last or 0, seq - 1)
        except Exception as exc:
            log.warning("telemetry could not read the journal of run %s: %s", run_id, exc)
            return []
        if last is not None:  # events of a run seen here before: dropped from a full buffer
            return [(e, False) for e in history]
        # First contact. This process recorded the run's start if the first event it
        # got follows it directly (the runtime does not pass run_started to listeners),
        # or follows the copied journal of a fork; anything else was traced elsewhere.
        out = [(e, True) for e in history]
        started = out[0][0].data if out else None
        if isinstance(started, RunStarted):
            forked = started.forked_from
            if seq == 2 or (forked is not None and forked.seq == seq - 1):
                out[0] = (out[0][0], False)
        return out

    def close(self, timeout: float | None = 5.0, *, keep_reader: bool = False) -> None:
        super().close(timeout)
        if not keep_reader:
            self.release_reader()

    def release_reader(self) -> None:
        """Close the reader's own store connection, if it opened one."""
        if isinstance(self.reader, StoreReader):
            self.reader.close()

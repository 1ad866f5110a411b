"""Structured logs: every line carries run id, trace id, span id, node and event kind.

    configure_logging(json=True, level="INFO")               # JSON lines (pretty on a terminal if json=None)
    Runtime(store, listeners=[JournalLogger(store=store)])   # one line per journal event

Fields come from the record's ``extra`` if given, else from the context bound
with :func:`log_context` (or :func:`bind` for a node's ``ctx``), else null.
Library code only logs; it never prints.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

from ..events import (
    TASK_DATA,
    Cancelled,
    Discarded,
    EffectDecided,
    EffectFinished,
    EffectStarted,
    Emitted,
    Event,
    EventKind,
    Failed,
    Interrupted,
    Resumed,
    RunStarted,
    StepFailed,
    StepFinished,
    StepStarted,
)
from ..store import Store
from .ids import hex_span, hex_trace
from .listener import DEFAULT_CAPACITY, EventPump
from .reader import JournalReader, as_reader
from .spans.derive import SpanBuilder

if TYPE_CHECKING:
    from ..engine.context import Context

FIELDS: Final = ("run_id", "trace_id", "span_id", "node", "event")
_bound: ContextVar[dict[str, Any] | None] = ContextVar("mainspring_log_context", default=None)
_RESERVED: Final = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "seq",
    *FIELDS,
}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` (run_id, node, ...) to every record logged inside the block."""
    token = _bound.set({**(_bound.get() or {}), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


def bind(ctx: Context) -> Any:
    """``with bind(ctx): log.info(...)``: a node's records carry its run, node and trace (and effect span)."""
    from .propagation import span_context, trace_id

    found = span_context(ctx)
    fields: dict[str, Any] = {
        "run_id": ctx.run_id,
        "node": ctx.node,
        "trace_id": hex_trace(trace_id(ctx)),
    }
    if found is not None:
        fields["span_id"] = hex_span(found[1])
    return log_context(**fields)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    bound = _bound.get() or {}
    return {name: getattr(record, name, None) or bound.get(name) for name in FIELDS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the five fields, any extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        seq = getattr(record, "seq", None)
        if seq is not None:
            out["seq"] = seq
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # set (scrubbed) by SecretFilter
            out["exc"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


_COLORS: Final = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[36m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}


class PrettyFormatter(logging.Formatter):
    """``12:00:01.123 INFO  mainspring.events  message  run=.. node=.. event=.. trace=..``"""

    def __init__(self, color: bool = False) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        level = f"{record.levelname:<7}"
        if self.color:
            level = f"{_COLORS.get(record.levelname, '')}{level}\x1b[0m"
        fields = _fields(record)
        tail = " ".join(
            f"{short}={fields[name]}"
            for name, short in (
                ("run_id", "run"),
                ("node", "node"),
                ("event", "event"),
                ("trace_id", "trace"),
                ("span_id", "span"),
            )
            if fields[name] is not None
        )
        line = f"{when} {level} {record.name}  {record.getMessage()}" + (
            f"  {tail}" if tail else ""
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:  # set (scrubbed) by SecretFilter
            line += "\n" + record.exc_text
        return line


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(
    json: bool | None = None,
    level: int | str = logging.INFO,
    *,
    stream: IO[str] | None = None,
    logger: str | None = None,
) -> logging.Handler:
    """Send ``logger``'s records (default: the root logger's) to ``stream`` as JSON or pretty lines.

    ``json=None`` picks pretty output on a terminal and JSON otherwise. The handler
    scrubs the secret values this process handed to tools (``SecretFilter``).
    """
    from ..guard.secrets.scrub import SecretFilter

    stream = stream if stream is not None else sys.stderr
    tty = stream.isatty() if hasattr(stream, "isatty") else False
    use_json = not tty if json is None else json
    handler = _Handler(stream)
    handler.addFilter(SecretFilter())
    handler.setFormatter(JsonFormatter() if use_json else PrettyFormatter(color=tty))
    target = logging.getLogger(logger)
    for old in [h for h in target.handlers if isinstance(h, _Handler)]:
        target.removeHandler(old)
    target.addHandler(handler)
    target.setLevel(level)
    return handler


_LEVELS: Final = {
    EventKind.RUN_STARTED: logging.INFO,
    EventKind.EFFECT_DECIDED: logging.INFO,  # a gate hook's decision (policy, screen, budget)
    EventKind.INTERRUPTED: logging.INFO,
    EventKind.RESUMED: logging.INFO,
    EventKind.FINISHED: logging.INFO,
    EventKind.CANCELLED: logging.WARNING,
    EventKind.FAILED: logging.ERROR,
}
# Kinds whose level _describe may raise above _LEVELS (to WARNING or ERROR).
_RAISED: Final = frozenset({EventKind.STEP_FAILED, EventKind.EFFECT_FINISHED})


def _describe(event: Event) -> tuple[int, str]:
    """(level, message) of one event."""
    level = _LEVELS.get(event.kind, logging.DEBUG)
    match event.data:
        case RunStarted(graph=graph):
            return level, f"run started (graph {graph})"
        case StepStarted(node=node, step=step, attempt=attempt):
            return level, f"node {node} started (step {step}, attempt {attempt})"
        case StepFinished(node=node):
            return level, f"node {node} finished"
        case StepFailed(node=node, error=error, retry=retry, delay=delay):
            then = f"; retrying in {delay:.2f} s" if retry else ""
            return (logging.WARNING if retry else logging.ERROR), (
                f"node {node} failed: {error.summary}{then}"
            )
        case EffectStarted(name=name):
            return level, f"effect {name} started"
        case EffectDecided(name=name, decision=decision, hook=hook, reason=reason):
            why = f": {reason[:300]}" if reason else ""
            return level, f"effect {name}: {hook or 'a person'} decided {decision}{why}"
        case EffectFinished(name=name, error=error):
            if error is not None:
                return logging.WARNING, f"effect {name} raised {error.summary}"
            return level, f"effect {name} finished"
        case Interrupted(node=node, id=iid):
            return level, f"node {node} waits on interrupt {iid}"
        case Resumed(values=values):
            return level, f"resumed ({', '.join(map(str, values))})"
        case Emitted(node=node):
            return level, f"node {node} emitted an event"
        case Discarded(node=node, effect=effect, name=name, seconds=seconds):
            what = f"effect {name} of node {node}" if effect is not None else f"node {node}"
            return level, f"{what} finished {seconds:.1f} s late; what it returned was discarded"
        case Failed(error=error):
            return level, f"run failed: {error.summary}"
        case Cancelled(reason=reason):
            return level, f"run cancelled: {reason}"
    return level, "run finished"


class JournalLogger(EventPump):
    """A runtime listener that logs one structured record per journal event (from its own thread).

    Run-level events log at INFO (failures at WARNING and ERROR), steps and
    effects at DEBUG. The record's time is the event's time.
    """

    def __init__(
        self,
        logger: str | logging.Logger = "mainspring.events",
        *,
        store: Store | str | JournalReader | None = None,
        capacity: int = DEFAULT_CAPACITY,
        interval: float = 0.1,
    ) -> None:
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
        self._spans = SpanBuilder()  # gives each event its trace and span ids
        super().__init__(
            reader=as_reader(store), capacity=capacity, interval=interval, name="mainspring-logger"
        )

    def consume(self, event: Event, replay: bool) -> None:
        self._spans.feed(event, replay=replay)
        if replay:
            return
        logger, kind = self.logger, event.kind
        # Most events log at DEBUG: skip wording a message nobody will see.
        if not logger.isEnabledFor(_LEVELS.get(kind, logging.DEBUG)) and not (
            kind in _RAISED and logger.isEnabledFor(logging.WARNING)
        ):
            return
        level, message = _describe(event)
        if not self.logger.isEnabledFor(level):
            return
        trace, span = self._spans.current or (0, 0)
        data = event.data
        extra = {
            "run_id": event.run_id,
            "trace_id": hex_trace(trace),
            "span_id": hex_span(span),
            "node": data.node if isinstance(data, TASK_DATA) else None,
            "event": str(event.kind),
            "seq": event.seq,
        }
        record = self.logger.makeRecord(
            self.logger.name, level, __file__, 0, message, (), None, extra=extra
        )
        record.created = event.ts
        record.msecs = (event.ts % 1) * 1000
        self.logger.handle(record)

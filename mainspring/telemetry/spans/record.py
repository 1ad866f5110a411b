"""Span records: the spans :mod:`.derive` makes of a journal, before any OpenTelemetry object exists."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..conventions import AttrValue
from ..ids import hex_span, hex_trace

SpanKind = Literal["run", "node", "effect", "wait"]
Status = Literal["unset", "error"]


@dataclass(slots=True)
class SpanEvent:
    name: str
    ts_ns: int
    attributes: dict[str, AttrValue] = field(default_factory=dict)


@dataclass(slots=True)
class SpanRecord:
    """One span; ``end_ns`` is None while it is open."""

    name: str
    kind: SpanKind
    run_id: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int | None = None
    status: Status = "unset"
    status_message: str = ""
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    # Shared empty tuples until something is added: most spans have neither.
    events: list[SpanEvent] | tuple[()] = ()
    links: list[tuple[int, int]] | tuple[()] = ()  # (trace id, span id)
    client: bool = False  # a call out of the process (tool, model): span kind CLIENT

    def add_event(self, event: SpanEvent) -> None:
        if isinstance(self.events, tuple):
            self.events = []
        self.events.append(event)

    def add_link(self, trace_id: int, span_id: int) -> None:
        if isinstance(self.links, tuple):
            self.links = []
        self.links.append((trace_id, span_id))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "run_id": self.run_id,
            "trace_id": hex_trace(self.trace_id),
            "span_id": hex_span(self.span_id),
            "parent_id": None if self.parent_id is None else hex_span(self.parent_id),
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "status": self.status,
            "status_message": self.status_message,
            "attributes": self.attributes,
            "events": [
                {"name": e.name, "ts_ns": e.ts_ns, "attributes": e.attributes} for e in self.events
            ],
            "links": [{"trace_id": hex_trace(t), "span_id": hex_span(s)} for t, s in self.links],
        }


def ns(ts: float) -> int:
    """Event time (seconds) as span time (nanoseconds)."""
    return int(ts * 1e9)

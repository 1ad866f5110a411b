"""What Mainspring measures: the instruments, and the sink protocol their observations go to.

One catalogue for every exposition: :mod:`.prometheus` and :mod:`.otel` create
their instruments from :data:`INSTRUMENTS`; :class:`~.aggregator.MetricsAggregator`
and :mod:`.store_timing` report observations of them by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

Kind = Literal["counter", "histogram", "gauge"]

LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True, slots=True)
class Instrument:
    name: str  # Prometheus name (counters without the _total suffix the client adds)
    kind: Kind
    doc: str
    labels: tuple[str, ...]
    unit: str = ""
    buckets: tuple[float, ...] = LATENCY_BUCKETS

    @property
    def otel_name(self) -> str:
        return self.name.removesuffix("_seconds").replace("_", ".")


INSTRUMENTS: Final = {
    i.name: i
    for i in (
        Instrument("mainspring_runs_started", "counter", "Runs started.", ("graph",)),
        Instrument("mainspring_runs_finished", "counter", "Runs that finished.", ("graph",)),
        Instrument("mainspring_runs_failed", "counter", "Runs that failed.", ("graph",)),
        Instrument("mainspring_runs_cancelled", "counter", "Runs that were cancelled.", ("graph",)),
        Instrument("mainspring_active_runs", "gauge", "Runs in progress, not parked.", ("graph",)),
        Instrument(
            "mainspring_interrupts_waiting",
            "gauge",
            "Interrupts waiting for a resume value, by the graph that asked.",
            ("graph",),
        ),
        Instrument(
            "mainspring_step_duration_seconds",
            "histogram",
            "Duration of node attempts.",
            ("graph", "node"),
            "s",
        ),
        Instrument(
            "mainspring_retries",
            "counter",
            "Node attempts that failed and are retried.",
            ("graph", "node"),
        ),
        Instrument(
            "mainspring_effect_duration_seconds",
            "histogram",
            "Duration of effects (tool, model and other calls).",
            ("kind", "name"),
            "s",
        ),
        Instrument("mainspring_effect_errors", "counter", "Effects that raised.", ("kind", "name")),
        Instrument(
            "mainspring_tokens",
            "counter",
            "Model tokens, by direction (input, output; cached and reasoning: parts of them).",
            ("model", "tenant", "direction"),
        ),
        Instrument(
            "mainspring_cost_usd", "counter", "Model cost in US dollars.", ("model", "tenant")
        ),
        Instrument(
            "mainspring_model_ttft_seconds",
            "histogram",
            "Time to the first token of streamed model calls.",
            ("model",),
            "s",
        ),
        Instrument(
            "mainspring_tool_calls",
            "counter",
            "Tool calls by outcome (ok, failed, rejected by a breaker or limit, fallback).",
            ("tool", "outcome"),
        ),
        Instrument(
            "mainspring_tool_rejections",
            "counter",
            "Tool calls refused, by what refused them (breaker, rate, concurrency).",
            ("tool", "reason"),
        ),
        Instrument(
            "mainspring_tool_fallbacks",
            "counter",
            "Refused tool calls answered by a fallback (tool, cached, human).",
            ("tool", "kind"),
        ),
        Instrument(
            "mainspring_tool_breaker_state",
            "gauge",
            "A tool's circuit breaker as this process last saw it: 0 closed, 1 half-open, 2 open.",
            ("tool",),
        ),
        Instrument(
            "mainspring_journal_append_duration_seconds",
            "histogram",
            "Duration of journal appends.",
            ("durability",),
            "s",
        ),
        Instrument(
            "mainspring_journal_append_events",
            "histogram",
            "Events per journal append.",
            ("durability",),
            buckets=SIZE_BUCKETS,
        ),
        Instrument(
            "mainspring_journal_commit_writes",
            "histogram",
            "Run writes (appends and creates) per physical store commit: the group-commit batch size.",
            ("backend",),
            buckets=SIZE_BUCKETS,
        ),
        Instrument(
            "mainspring_journal_commit_duration_seconds",
            "histogram",
            "Duration of physical store commits.",
            ("backend",),
            "s",
        ),
    )
}


class MetricsSink(Protocol):
    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        """Add ``value`` to a counter or a gauge."""

    def observe(self, name: str, labels: Sequence[str], value: float) -> None:
        """Record ``value`` in a histogram."""


class FanoutSink:
    """Several sinks as one (Prometheus and OpenTelemetry at once)."""

    def __init__(self, sinks: Sequence[MetricsSink]) -> None:
        self.sinks = list(sinks)

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        for sink in self.sinks:
            sink.add(name, labels, value)

    def observe(self, name: str, labels: Sequence[str], value: float) -> None:
        for sink in self.sinks:
            sink.observe(name, labels, value)


def describe() -> list[dict[str, Any]]:
    """The metrics Mainspring exports (for docs and tests)."""
    return [
        {"name": i.name, "kind": i.kind, "labels": list(i.labels), "doc": i.doc}
        for i in INSTRUMENTS.values()
    ]

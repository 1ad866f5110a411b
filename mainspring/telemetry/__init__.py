"""Observability read from the journal: OpenTelemetry traces, Prometheus metrics, structured logs.

Telemetry is a reader of the journal, never a second instrumentation path.
Each piece is a runtime listener whose call on the hot path only appends the
event to a buffer; a thread of its own does the rest::

    from mainspring.telemetry import JournalLogger, JournalMetrics, configure_logging, setup_tracing

    store = store_from_url("sqlite:///agents.db")
    tracer = setup_tracing("otlp-http", store=store)   # or exporter=None: OTEL_TRACES_EXPORTER & co.
    metrics = JournalMetrics(store=store)
    configure_logging(json=True)
    async with Runtime(store, listeners=[tracer, metrics, JournalLogger(store=store)]) as rt:
        metrics.serve(9464)
        ...

Without listeners nothing runs. ``mainspring trace RUN`` and ``mainspring stats
GRAPH`` read the same spans from a store with no backend at all.

``setup_tracing`` and ``JournalTracer`` need the ``telemetry`` extra
(opentelemetry-sdk and the OTLP exporters); ``JournalMetrics`` needs
prometheus-client. They are imported on first use.

The package, by what it makes of the journal:

* ``spans/``: span records (no extra needed); ``tracing/``: those spans as OpenTelemetry
  traces, exported; ``metrics/``: counters and histograms for Prometheus and
  OpenTelemetry; ``logs.py``: structured log lines;
* ``listener.py``: the base of the three runtime listeners (the hot path only
  buffers); ``reader.py``: reading journals off the event loop;
* ``ids.py``: deterministic trace and span ids; ``propagation.py``: the running
  effect's ``traceparent``; ``conventions.py``: which effects are tool and model
  calls, their usage, and how inputs and outputs are captured;
* ``waterfall.py`` and ``latency.py``: the CLI's views of a run's spans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Modules of this package import one another by module (``from .ids import trace_id``), never
# through the package (``from . import ids``): this file imports them, so that is a cycle.
from . import ids
from .conventions import Capture, Usage, effect_kind, usage_of
from .latency import LatencyStats, latency_stats
from .logs import JournalLogger, bind, configure_logging, log_context
from .propagation import trace_headers, traceparent, use_trace_context
from .spans.derive import SpanBuilder, derive_spans
from .spans.record import SpanRecord

if TYPE_CHECKING:
    from .metrics.prometheus import JournalMetrics
    from .tracing.tracer import JournalTracer, setup_tracing

__all__ = [
    "Capture",
    "JournalLogger",
    "JournalMetrics",
    "JournalTracer",
    "LatencyStats",
    "SpanBuilder",
    "SpanRecord",
    "Usage",
    "bind",
    "configure_logging",
    "derive_spans",
    "effect_kind",
    "ids",
    "latency_stats",
    "log_context",
    "setup_tracing",
    "trace_headers",
    "traceparent",
    "usage_of",
    "use_trace_context",
]

_LAZY = {
    "JournalTracer": ".tracing.tracer",
    "setup_tracing": ".tracing.tracer",
    "JournalMetrics": ".metrics.prometheus",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    try:
        return getattr(import_module(module, __name__), name)
    except ImportError as exc:
        raise ImportError(
            f"mainspring.telemetry.{name} needs the telemetry extra ({exc}); "
            "pip install 'mainspring[telemetry]'"
        ) from exc

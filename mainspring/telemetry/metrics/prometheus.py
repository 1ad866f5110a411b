"""Prometheus metrics of a runtime: the :class:`JournalMetrics` listener and its registry.

    metrics = JournalMetrics(store=store)                 # its own CollectorRegistry
    async with Runtime(store, listeners=[metrics]) as rt: ...
    metrics.serve(9464)                                   # GET http://127.0.0.1:9464/metrics

A scrape first lets the listener's thread catch up, so what it returns
includes every event recorded before the scrape.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from threading import Thread
from typing import Any, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ...store import Store
from ..listener import DEFAULT_CAPACITY, EventPump
from ..reader import JournalReader, as_reader
from .aggregator import MetricsAggregator, Pricing
from .instruments import INSTRUMENTS, FanoutSink, MetricsSink

_Metric = Counter | Gauge | Histogram


class PrometheusSink:
    """The instruments of :data:`~.instruments.INSTRUMENTS` as prometheus-client collectors on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics: dict[str, _Metric] = {}
        self._children: dict[tuple[str, ...], Any] = {}
        for spec in INSTRUMENTS.values():
            metric: _Metric
            if spec.kind == "counter":
                metric = Counter(spec.name, spec.doc, spec.labels, registry=self.registry)
            elif spec.kind == "gauge":
                metric = Gauge(spec.name, spec.doc, spec.labels, registry=self.registry)
            else:
                metric = Histogram(
                    spec.name, spec.doc, spec.labels, registry=self.registry, buckets=spec.buckets
                )
            self._metrics[spec.name] = metric

    def _child(self, name: str, labels: Sequence[str]) -> Any:
        key = (name, *labels)
        child = self._children.get(key)
        if child is None:  # labels() takes a lock and validates: once per label set
            child = self._children[key] = self._metrics[name].labels(*labels)
        return child

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        self._child(name, labels).inc(value)

    def observe(self, name: str, labels: Sequence[str], value: float) -> None:
        self._child(name, labels).observe(value)


class _CatchUp(Collector):
    """Registered first: a scrape waits for buffered events, then reports what telemetry dropped."""

    def __init__(self, metrics: JournalMetrics) -> None:
        self._ref = weakref.ref(metrics)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "mainspring_telemetry_dropped_events", "Events telemetry dropped (buffer full)."
        )

    def collect(self) -> Iterator[Metric]:
        metrics = self._ref()
        dropped = 0
        if metrics is not None:
            metrics.flush(timeout=2.0)
            dropped = metrics.dropped
        yield CounterMetricFamily(
            "mainspring_telemetry_dropped_events",
            "Events telemetry dropped (buffer full).",
            value=dropped,
        )


class JournalMetrics(EventPump):
    """A runtime listener that keeps Prometheus (and, if asked, OpenTelemetry) metrics of its runs.

    ``meter_provider`` also records every observation as OpenTelemetry metrics.
    ``pricing(model, input_tokens, output_tokens)`` prices model calls whose
    result carries no ``cost_usd``. ``store``: see :func:`~mainspring.telemetry.tracing.tracer.setup_tracing`.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        store: Store | str | JournalReader | None = None,
        pricing: Pricing | None = None,
        meter_provider: Any = None,
        max_series: int = 1000,
        capacity: int = DEFAULT_CAPACITY,
        interval: float = 0.1,
        max_runs: int = 10_000,
    ) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        registry.register(_CatchUp(self))
        self.prometheus = PrometheusSink(registry)
        sink: MetricsSink = self.prometheus
        if meter_provider is not None:
            from .otel import OtelSink

            sink = FanoutSink([self.prometheus, OtelSink(meter_provider)])
        self.aggregator = MetricsAggregator(
            sink, pricing=pricing, max_series=max_series, max_runs=max_runs
        )
        super().__init__(
            reader=as_reader(store),
            capacity=capacity,
            interval=interval,
            max_runs=max_runs,
            name="mainspring-metrics",
        )

    @property
    def registry(self) -> CollectorRegistry:
        return self.prometheus.registry

    def consume(self, event: Any, replay: bool) -> None:
        self.aggregator.feed(event, replay)

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[Any, Thread]:
        """Serve ``/metrics`` over HTTP from a daemon thread; returns (server, thread)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return server, thread

    def instrument(self, store: Store) -> Store:
        """``store``, timing its appends into the journal append metrics (see :mod:`.store_timing`)."""
        from .store_timing import InstrumentedStore

        return cast(Store, InstrumentedStore(store, self.aggregator))

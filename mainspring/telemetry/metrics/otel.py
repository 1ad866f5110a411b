"""The same metrics as OpenTelemetry instruments, for a user who exports metrics over OTLP.

from opentelemetry.sdk.metrics import MeterProvider
metrics = JournalMetrics(meter_provider=MeterProvider(metric_readers=[reader]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .instruments import INSTRUMENTS


class OtelSink:
    """Records observations on instruments of ``meter_provider`` (counters, up-down counters, histograms)."""

    def __init__(self, meter_provider: Any) -> None:
        meter = meter_provider.get_meter("mainspring")
        self._instruments: dict[str, Any] = {}
        self._labels = {spec.name: spec.labels for spec in INSTRUMENTS.values()}
        for spec in INSTRUMENTS.values():
            if spec.kind == "counter":
                made = meter.create_counter(spec.otel_name, unit=spec.unit, description=spec.doc)
            elif spec.kind == "gauge":
                made = meter.create_up_down_counter(
                    spec.otel_name, unit=spec.unit, description=spec.doc
                )
            else:
                made = meter.create_histogram(
                    spec.otel_name,
                    unit=spec.unit,
                    description=spec.doc,
                    explicit_bucket_boundaries_advisory=list(spec.buckets),
                )
            self._instruments[spec.name] = made

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        self._instruments[name].add(value, dict(zip(self._labels[name], labels, strict=True)))

    def observe(self, name: str, labels: Sequence[str], value: float) -> None:
        self._instruments[name].record(value, dict(zip(self._labels[name], labels, strict=True)))

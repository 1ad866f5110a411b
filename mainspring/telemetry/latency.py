"""Latency percentiles per node and per effect over recent runs, read from their journals."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .spans.record import SpanRecord


@dataclass(frozen=True, slots=True)
class LatencyStats:
    kind: Literal["node", "effect"]
    name: str
    count: int
    errors: int
    p50: float  # seconds
    p95: float
    p99: float
    max: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, interpolated between closest ranks."""
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_stats(spans: Iterable[SpanRecord]) -> list[LatencyStats]:
    """Per node (attempts that finished or failed) and per effect (by effect name), slowest p95 first.

    Attempts that parked on an interrupt, were abandoned or cancelled are not latencies and are skipped.
    """
    samples: dict[tuple[Literal["node", "effect"], str], list[float]] = {}
    errors: dict[tuple[Literal["node", "effect"], str], int] = {}
    for span in spans:
        if span.end_ns is None or span.kind not in ("node", "effect"):
            continue
        if span.attributes.get("mainspring.outcome") in ("interrupted", "abandoned", "cancelled"):
            continue
        if span.kind == "node":
            key: tuple[Literal["node", "effect"], str] = (
                "node",
                str(span.attributes.get("mainspring.node", "")),
            )
        else:
            key = ("effect", str(span.attributes.get("mainspring.effect.name", span.name)))
        samples.setdefault(key, []).append((span.end_ns - span.start_ns) / 1e9)
        if span.status == "error":
            errors[key] = errors.get(key, 0) + 1
    out = []
    for (kind, name), values in samples.items():
        values.sort()
        out.append(
            LatencyStats(
                kind,
                name,
                len(values),
                errors.get((kind, name), 0),
                percentile(values, 0.5),
                percentile(values, 0.95),
                percentile(values, 0.99),
                values[-1],
            )
        )
    out.sort(key=lambda s: (s.kind != "node", -s.p95, s.name))
    return out

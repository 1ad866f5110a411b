"""``GET /metrics``: Prometheus text computed from the journals, as ``mainspring metrics``.

One aggregator per tenant asked about (an operator's: every tenant), kept for the server's
life: each scrape feeds it only what the recent runs appended since the last one (the
journal poller remembers its place), so a scrape costs what is new, not the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .context import ServerState
from .errors import ApiError

if TYPE_CHECKING:  # prometheus-client is the telemetry extra: imported on first scrape
    from prometheus_client import CollectorRegistry

    from ..telemetry.metrics.poller import JournalPoller


@dataclass(slots=True)
class _Metrics:
    registry: CollectorRegistry
    poller: JournalPoller
    lock: anyio.Lock


async def metrics_text(state: ServerState, tenant: str | None) -> tuple[bytes, str]:
    """The metrics of ``tenant``'s recent runs (None: every tenant's), and their content type."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from ..telemetry.metrics.aggregator import MetricsAggregator
        from ..telemetry.metrics.poller import JournalPoller
        from ..telemetry.metrics.prometheus import PrometheusSink
    except ImportError as exc:
        raise ApiError(
            503,
            "unavailable",
            f"metrics need prometheus-client ({exc}): pip install 'mainspring[telemetry]'",
        ) from None
    kept: dict[str | None, _Metrics] = state.extras.setdefault("metrics", {})
    found = kept.get(tenant)
    if found is None:
        sink = PrometheusSink()
        poller = JournalPoller(state.runtime.store, MetricsAggregator(sink), tenant=tenant)
        found = kept[tenant] = _Metrics(sink.registry, poller, anyio.Lock())
    async with found.lock:  # one scrape feeds the aggregator at a time
        await found.poller.poll()
        return generate_latest(found.registry), CONTENT_TYPE_LATEST

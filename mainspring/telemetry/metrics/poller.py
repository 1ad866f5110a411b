"""Metrics of a store's recent runs, read from their journals: ``mainspring metrics --store URL``.

For a runtime embedded in another process (one SQLite file, no listener): the
poller reads what the newest runs appended since its last look and feeds the
same aggregator the live listener uses. Each event is counted once.
"""

from __future__ import annotations

import logging

import anyio

from ...store import RunQuery, Store
from .aggregator import MetricsAggregator

log = logging.getLogger("mainspring.telemetry")


class JournalPoller:
    """Feeds ``aggregator`` with the new events of the ``limit`` most recent runs at each poll
    (of one ``tenant``'s runs only, if given)."""

    def __init__(
        self,
        store: Store,
        aggregator: MetricsAggregator,
        *,
        limit: int = 1000,
        tenant: str | None = None,
    ) -> None:
        self.store = store
        self.aggregator = aggregator
        self.limit = limit
        self.tenant = tenant
        self._seen: dict[str, int] = {}  # run id -> last seq fed

    async def poll(self) -> int:
        """Read and feed what is new; returns how many events were fed."""
        runs = await self.store.list_runs(RunQuery(limit=self.limit, tenant=self.tenant))
        fed = 0
        for record in sorted(
            runs, key=lambda r: (r.created_at, r.run_id)
        ):  # parents before children
            last = self._seen.get(record.run_id, 0)
            if record.last_seq and record.last_seq <= last:
                continue
            events = await self.store.read(record.run_id, after=last)
            for event in events:
                self.aggregator.feed(event)
            if events:
                self._seen[record.run_id] = events[-1].seq
                fed += len(events)
        current = {r.run_id for r in runs}
        for run_id in [r for r in self._seen if r not in current]:
            del self._seen[run_id]  # fell out of the window: its events are counted
        return fed

    async def run(self, interval: float = 5.0) -> None:
        """Poll every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.poll()
            except Exception as exc:  # keep serving what we have; say why it is stale
                log.warning("could not read the store for metrics: %s", exc)
            await anyio.sleep(interval)

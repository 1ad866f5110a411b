"""Journal append latency and batch size: the one thing the journal cannot say about itself.

Appends are not events, so they are measured where they happen: a thin proxy
around the store. ``Runtime(metrics.instrument(store), listeners=[metrics])``.

The proxy sees each ``append`` call (its duration as the run waits for it, and
its number of events); the store's ``commit_observer`` reports each physical
commit (how many runs' writes a group commit carried, and how long it took).
An in-memory store behind the proxy is treated by the runtime as a durable one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from ...events import Event
from ...store import Durability, RunStatus, Store
from ...store.records import CommitStats
from .aggregator import MetricsAggregator


class InstrumentedStore:
    """A Store that times ``append`` and ``create_run``; everything else passes through."""

    def __init__(self, store: Store, metrics: MetricsAggregator) -> None:
        self._store = store
        self._metrics = metrics
        self.url = store.url
        # Appends go through ``append`` here, to be timed: never append_now or append_off.
        self.capabilities = msgspec.structs.replace(
            store.capabilities, appends_without_waiting=False, accepts_off_now=False
        )
        self._backend = (store.url.partition("://")[0] or "store",)
        if hasattr(store, "commit_observer"):  # group commits as the store really makes them
            store.commit_observer = self._on_commit

    def _on_commit(self, stats: CommitStats) -> None:
        self._metrics.observe("mainspring_journal_commit_writes", self._backend, stats.writes)
        self._metrics.observe(
            "mainspring_journal_commit_duration_seconds", self._backend, stats.seconds
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _record(self, durability: Durability, started: float, events: int) -> None:
        labels = (str(durability),)
        self._metrics.observe(
            "mainspring_journal_append_duration_seconds", labels, time.perf_counter() - started
        )
        self._metrics.observe("mainspring_journal_append_events", labels, events)

    async def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[Event],
        *,
        status: RunStatus | None = None,
        error: str | None = None,
        durability: Durability = Durability.SYNC,
        fence: int | None = None,
    ) -> None:
        started = time.perf_counter()
        await self._store.append(
            run_id,
            expected_seq,
            events,
            status=status,
            error=error,
            durability=durability,
            fence=fence,
        )
        self._record(durability, started, len(events))

    async def create_run(self, record: Any, events: Sequence[Event], durability: Durability) -> Any:
        started = time.perf_counter()
        result = await self._store.create_run(record, events, durability)
        self._record(durability, started, len(events))
        return result

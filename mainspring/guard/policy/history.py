"""A run's history as policy rules see it: how many effects of each name it made so far.

Counted in this process as effects are called (the policy's after-hook); the first time a
policy that reads history meets a run, it reads the run's journal once, so a run resumed
in another process (or after a crash) is counted from its record, not from zero. Counted:
effects that were called (their ``effect_started``), not those a hook or person refused.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

from ...engine.gate import Effect
from ...events import EffectDecided, EffectStarted, Event


class JournalReader(Protocol):
    async def read(
        self, run_id: str, *, after: int = 0, until: int | None = None
    ) -> list[Event]: ...


class _Run:
    __slots__ = ("counts", "keys")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.keys: set[str] = set()


class History:
    """Per-run effect counts, for at most ``max_runs`` runs (the least recent forgotten,
    read again from the journal when met again)."""

    def __init__(self, max_runs: int = 10_000) -> None:
        self.store: JournalReader | None = None
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._max = max_runs

    async def counts(self, effect: Effect) -> dict[str, int]:
        run = self._runs.get(effect.run_id)
        if run is None:
            run = _Run()
            if self.store is not None:
                await self._backfill(run, effect)
            self._runs[effect.run_id] = run
            if len(self._runs) > self._max:
                self._runs.popitem(last=False)
        return run.counts

    def seed(self, run_id: str, counts: dict[str, int]) -> None:
        """Start ``run_id``'s counts at ``counts`` (offline cases)."""
        run = self._runs[run_id] = _Run()
        run.counts.update({str(k): int(v) for k, v in counts.items()})

    def called(self, effect: Effect) -> None:
        run = self._runs.get(effect.run_id)
        if run is None or effect.key in run.keys:
            return
        run.keys.add(effect.key)
        run.counts[effect.name] = run.counts.get(effect.name, 0) + 1

    async def _backfill(self, run: _Run, effect: Effect) -> None:
        assert self.store is not None
        events = await self.store.read(effect.run_id)
        started: dict[tuple[int, int, int], tuple[str, str]] = {}
        refused: set[tuple[int, int, int]] = set()
        for event in events:
            data: Any = event.data
            if isinstance(data, EffectStarted):
                started[(data.step, data.task, data.effect)] = (data.name, data.key)
            elif isinstance(data, EffectDecided) and data.decision in ("deny", "rejected"):
                refused.add((data.step, data.task, data.effect))
        for where, (name, key) in started.items():
            if where in refused or key == effect.key or key in run.keys:
                continue
            run.keys.add(key)
            run.counts[name] = run.counts.get(name, 0) + 1

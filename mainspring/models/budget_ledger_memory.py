"""The in-memory budget ledger: a dict, for the runs of one process on one event loop.

Atomic without a lock: no method awaits anything between its check and its
update, so on one event loop nothing can run in between. Not for threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .budget_ledger import Entry, Refusal, Reservation, passes, settled

Counter = tuple[str, str, int]


class MemoryLedger:
    """Counters in a dict (see :class:`~mainspring.models.budget_ledger.BudgetLedger`)."""

    __slots__ = ("_counts", "_starts")

    def __init__(self) -> None:
        self._counts: dict[Counter, float] = {}
        self._starts: dict[str, float] = {}

    async def reserve(self, entries: Sequence[Entry]) -> Reservation | Refusal:
        counts = self._counts
        for i, entry in enumerate(entries):
            if entry.limit is not None:
                spent = counts.get((entry.scope, entry.metric, entry.bucket), 0.0)
                if passes(spent, entry):
                    return Refusal(i, entry, spent)
        totals = []
        for entry in entries:
            counter = (entry.scope, entry.metric, entry.bucket)
            total = counts.get(counter, 0.0) + entry.amount
            counts[counter] = total
            totals.append(total)
        return Reservation(tuple(entries), tuple(totals))

    async def settle(self, reservation: Reservation, actual: Mapping[str, float]) -> None:
        for entry, correction in settled(reservation, actual):
            self._add(entry, correction)

    async def release(self, reservation: Reservation) -> None:
        for entry in reservation.entries:
            self._add(entry, -entry.amount)

    async def spent(self, scope: str, metric: str, bucket: int = 0) -> float:
        return self._counts.get((scope, metric, bucket), 0.0)

    async def started(self, scope: str, now: float) -> float:
        return self._starts.setdefault(scope, now)

    async def aclose(self) -> None:
        pass

    def _add(self, entry: Entry, amount: float) -> None:
        counter = (entry.scope, entry.metric, entry.bucket)
        self._counts[counter] = self._counts.get(counter, 0.0) + amount

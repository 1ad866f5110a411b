"""Where budgets are counted: the ledger protocol, and the records it trades in.

A ledger holds counters, each keyed by (scope, metric, bucket): ``("tenant:t1",
"tokens", 0)`` is tenant t1's tokens for ever, ``("tenant:t1/86400s", "cost", 20112)``
its cost on day 20112 of the epoch (``bucket = now // window``). The budget gate
(``budget_gate.py``) turns budgets into :class:`Entry` rows; the ledger only adds
and compares, so one conformance suite covers every backend
(``tests/test_budget_ledger.py``):

* :meth:`BudgetLedger.reserve` checks every entry that has a limit and, if none
  would pass it, adds every entry's amount, all at once or not at all (atomic across
  the tasks, processes and machines that share the ledger);
* :meth:`BudgetLedger.settle` replaces the reserved estimate with what the call used;
* :meth:`BudgetLedger.release` takes a reservation back (the call failed or was cancelled);
* :meth:`BudgetLedger.started` records when a scope was first seen (for wall-time budgets).

A reservation lost with its process (a crash between reserve and settle) stays
counted at its estimate: a ledger errs on the side of spending less.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import msgspec


class Entry(msgspec.Struct, frozen=True):
    """One counter to add ``amount`` to; refused when it would pass ``limit`` (None: only
    count, never refuse: a warning budget, or a call a person approved)."""

    scope: str  # "run:<id>", "thread:<id>", "user:<id>", "tenant:<id>", "/<window>s" when windowed
    metric: str  # "tokens", "input_tokens", "output_tokens", "cost", "calls"
    amount: float
    limit: float | None = None
    bucket: int = 0  # now // window for a windowed budget; 0 for one that never resets


class Reservation(msgspec.Struct, frozen=True):
    """Amounts added by :meth:`BudgetLedger.reserve`; ``totals`` are the counters after it."""

    entries: tuple[Entry, ...]
    totals: tuple[float, ...]


class Refusal(msgspec.Struct, frozen=True):
    """Nothing was added: ``entries[index]`` would pass its limit (``spent`` so far)."""

    index: int
    entry: Entry
    spent: float


def passes(spent: float, entry: Entry) -> bool:
    """Whether adding ``entry`` to ``spent`` passes its limit. A counter already at its
    limit refuses even a call estimated at nothing (a cost budget with no price known)."""
    limit = entry.limit
    return limit is not None and (spent + entry.amount > limit or spent >= limit)


def ordered(entries: Sequence[Entry]) -> list[Entry]:
    """Entries in one global order: SQL backends lock their rows in it (no deadlocks)."""
    return sorted(entries, key=lambda e: (e.scope, e.metric, e.bucket))


def settled(reservation: Reservation, actual: Mapping[str, float]) -> list[tuple[Entry, float]]:
    """(entry, correction) for each reserved entry whose metric ``actual`` reports: what the
    call used minus what was reserved. Metrics ``actual`` leaves out keep their estimate."""
    out = []
    for entry in reservation.entries:
        used = actual.get(entry.metric)
        if used is not None and used != entry.amount:
            out.append((entry, used - entry.amount))
    return out


@runtime_checkable
class BudgetLedger(Protocol):
    """Counters shared by every run that uses the ledger (see the module's docstring)."""

    async def reserve(self, entries: Sequence[Entry]) -> Reservation | Refusal:
        """Add every entry's amount, or none if one with a limit would pass it."""
        ...

    async def settle(self, reservation: Reservation, actual: Mapping[str, float]) -> None:
        """Replace the reserved amounts with ``actual`` (by metric; others stay as reserved)."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Take back every amount ``reservation`` added."""
        ...

    async def spent(self, scope: str, metric: str, bucket: int = 0) -> float:
        """A counter's value (0 when never used)."""
        ...

    async def started(self, scope: str, now: float) -> float:
        """When ``scope`` was first seen: ``now`` if this is the first time (kept, atomically)."""
        ...

    async def aclose(self) -> None: ...

"""Hedged calls: a second request when the first is slower than usual, the first answer wins.

A :class:`LatencyTracker` keeps a model's recent latencies (a bounded ring, kept
sorted beside it, so a quantile is one index); :func:`hedge_delay` turns it and a
:class:`~mainspring.models.spec.Hedge` into the wait before the second request; a
:class:`HedgeBudget` keeps hedges under ``max_extra`` of the calls; :func:`race_hedged`
runs the two requests in one task group and cancels the loser. The tail at scale
("The Tail at Scale", Dean and Barroso, 2013): hedging at the 95th percentile cuts
the 99th by far more than the 5% of extra requests it costs.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from .spec import Hedge

T = TypeVar("T")


class LatencyTracker:
    """The last ``size`` latencies of a model (seconds), with cheap quantiles."""

    __slots__ = ("_next", "_ring", "_sorted", "count", "size")

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError(f"a latency tracker needs a size of at least 1, not {size}")
        self.size = size
        self.count = 0  # latencies observed in all, evicted ones included
        self._ring: list[float] = []
        self._sorted: list[float] = []
        self._next = 0

    def observe(self, seconds: float) -> None:
        if len(self._ring) < self.size:
            self._ring.append(seconds)
        else:
            old = self._ring[self._next]
            self._ring[self._next] = seconds
            self._next = (self._next + 1) % self.size
            del self._sorted[bisect_left(self._sorted, old)]
        insort(self._sorted, seconds)
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q`` quantile of the kept latencies; None before the first."""
        n = len(self._sorted)
        if not n:
            return None
        return self._sorted[min(n - 1, max(0, math.ceil(q * n) - 1))]

    def __len__(self) -> int:
        return len(self._sorted)


class HedgeBudget:
    """A token bucket: each call earns ``max_extra`` of a hedge, a hedge spends one.

    Credit starts at zero, so hedges never exceed ``max_extra`` times the calls made,
    and it is capped at ``burst``, so a long quiet spell cannot fund a storm of hedges
    when the upstream slows down for everyone at once.
    """

    __slots__ = ("burst", "calls", "credit", "hedges", "max_extra")

    def __init__(self, max_extra: float, *, burst: float = 10.0) -> None:
        if not 0.0 <= max_extra <= 1.0:
            raise ValueError(f"Hedge.max_extra is a share of calls in [0, 1], not {max_extra}")
        self.max_extra = max_extra
        self.burst = max(1.0, burst)
        self.credit = 0.0
        self.calls = 0
        self.hedges = 0

    def add_call(self) -> None:
        self.calls += 1
        self.credit = min(self.credit + self.max_extra, self.burst)

    def try_spend(self) -> bool:
        if self.credit < 1.0:
            return False
        self.credit -= 1.0
        self.hedges += 1
        return True


def hedge_delay(hedge: Hedge, tracker: LatencyTracker) -> float | None:
    """Seconds to wait before hedging, or None for no hedge (still warming up)."""
    if hedge.delay is not None:
        return max(hedge.delay, 0.0)
    if tracker.count < hedge.warmup:
        return None
    observed = tracker.quantile(hedge.quantile)
    return None if observed is None else max(observed, hedge.min_delay)


async def race_hedged(
    call: Callable[[bool], Awaitable[T]], delay: float, may_hedge: Callable[[], bool]
) -> T:
    """``await call(False)``; if it has not finished after ``delay`` seconds and
    ``may_hedge()`` agrees, also ``call(True)``. The first to return wins and the other
    is cancelled; when every started request fails, the first error is raised.

    ``call`` records its own outcome (answered, failed or cancelled): both requests
    are accounted wherever the caller accounts. The first request runs in the caller's
    task and only the timer is a task of its own: most calls never hedge, and this
    keeps what an armed hedge costs them to one task and one cancel scope.
    """
    won: list[T] = []
    errors: list[Exception] = []
    hedging = False
    primary_over = anyio.Event()  # wakes the timer: cheaper than cancelling it
    async with anyio.create_task_group() as tg:

        async def leg(hedge: bool) -> None:
            try:
                value = await call(hedge)
            except Exception as exc:  # the other request may still answer
                errors.append(exc)
            else:
                if not won:
                    won.append(value)
                    tg.cancel_scope.cancel()

        async def hedge_later() -> None:
            nonlocal hedging
            with anyio.move_on_after(delay):
                await primary_over.wait()
            if not primary_over.is_set() and may_hedge():
                hedging = True
                await leg(True)

        tg.start_soon(hedge_later)
        try:
            await leg(False)
        finally:
            primary_over.set()  # a failure before the hedge started is not hedged
    if won:
        return won[0]
    raise errors[0]

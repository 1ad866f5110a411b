"""Rate limits: a token bucket per API key (per client address for requests without one).

Each bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a request
takes one, and a request that finds none is answered ``429`` with ``Retry-After`` (whole
seconds until a token is back). Buckets live in this process: with several server
processes behind a balancer, each allows its own ``rate`` (unless they share Redis:
``ratelimit_redis.py``). At most ``max_buckets`` are kept,
the least recently used dropped first (a dropped bucket was idle, so likely full again).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets by caller; ``rate <= 0`` turns limiting off."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_buckets: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate > 0 and burst < 1:
            raise ValueError(f"burst={burst!r} must be at least 1 when rate limiting is on")
        self.rate = rate
        self.burst = burst
        self._max = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    async def open(self) -> None:
        """Ready the limiter (the server's startup); nothing to do for local buckets."""

    async def aclose(self) -> None:
        """Release what ``open`` took."""

    async def acquire(self, caller: str) -> float:
        """``take``, where the buckets may live elsewhere (``ratelimit_redis.py``)."""
        return self.take(caller)

    def take(self, caller: str) -> float:
        """Take a token for ``caller``: 0.0 if it had one, else the seconds until it will."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def retry_after(wait: float) -> str:
    """``Retry-After``'s value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))

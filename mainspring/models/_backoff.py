"""How long routing waits before it retries a model: exponential backoff, full jitter,
the provider's retry-after honoured."""

from __future__ import annotations

import random

from .errors import ModelError
from .spec import ModelSpec


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retry)].

    Spreading retries over the whole window keeps many callers that failed together
    from retrying together (the thundering herd a fixed schedule causes).
    """
    return rng.uniform(0.0, min(cap, base * 2.0 ** min(retry, 62)))


def retry_delay(error: ModelError, retry: int, spec: ModelSpec, rng: random.Random) -> float | None:
    """Seconds to wait before retry ``retry`` (0 for the first) after ``error``; None when
    waiting is not worth it: the provider asks for longer than ``spec.max_backoff``, so
    the next model of the chain is tried at once instead."""
    delay = backoff_delay(retry, spec.backoff, spec.max_backoff, rng)
    after: float | None = getattr(error, "retry_after", None)
    if after is None:
        return delay
    if after > spec.max_backoff:
        return None
    return max(after, delay)

"""Small value types of graph authoring: entry/exit markers, Send and Retry."""

from __future__ import annotations

import random
from typing import Any, Final

import msgspec

START: Final = "__start__"
END: Final = "__end__"


class Send(msgspec.Struct, frozen=True):
    """Run ``node`` in the next step with ``arg`` as its input instead of the graph state.

    Returned by a router (one or several), it gives dynamic parallel fan-out:
    every Send becomes its own task, and their updates are joined into the
    state together, in the order the router returned them.
    """

    node: str
    arg: Any


class Retry(msgspec.Struct, frozen=True):
    """Retry policy of a node: ``attempts`` in all, exponential backoff with full jitter.

    ``on`` lists the exception types that are retried (timeouts included by
    default, since ``TimeoutError`` is an ``Exception``); anything else fails
    the run at once.

    A retried attempt calls its effects again with the SAME idempotency keys (the
    convention of Stripe and Temporal): an effect that failed after the far side
    acted (a lost reply, a timeout) is not done twice by a server that honours
    keys. ``fresh_keys=True`` gives each attempt keys of its own instead, for
    effects whose failures mean the far side did nothing and must try anew.
    """

    attempts: int = 3
    backoff: float = 0.2
    multiplier: float = 2.0
    max_backoff: float = 30.0
    jitter: bool = True
    on: tuple[type[BaseException], ...] = (Exception,)
    fresh_keys: bool = False

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Retry(attempts={self.attempts}): attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("Retry: backoff and max_backoff must be >= 0 and multiplier >= 1")

    def retries(self, exc: BaseException) -> bool:
        return isinstance(exc, self.on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling) if self.jitter else ceiling

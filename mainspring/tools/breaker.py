"""A tool's circuit breaker: closed, open, half-open; its state as plain JSON data.

``Tool(..., breaker=Breaker(failures=5, failure_rate=0.5, window=60, cooldown=30))``.
Closed, calls go through; it opens after ``failures`` consecutive failed calls, or
when at least ``min_calls`` calls in the last ``window`` seconds failed at a share of
``failure_rate`` or more. Open, calls are refused (``CircuitOpenError``, or the tool's
fallback) for ``cooldown`` seconds; then it is half-open: one call (the probe) goes
through, and its success closes the breaker, its failure opens it again.

A failed call is one that timed out or raised (``ToolTimeoutError``,
``ToolFailedError``, ``ToolResultError``), after its retries; invalid arguments never
reach the breaker, and refusals by the limits and cancellations count for nothing.

The state is a small JSON-able dict changed only by the pure functions below, so one
limits backend (memory, Redis, PostgreSQL) applies them atomically under its own lock;
``None`` is a closed breaker with nothing to remember (most calls write nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
GAUGE: Final = {CLOSED: 0.0, HALF_OPEN: 1.0, OPEN: 2.0}  # mainspring_tool_breaker_state
SLICES: Final = 10  # the failure-rate window is counted in this many slices

State = dict[str, Any]  # {"s": state, "c": consecutive failures, "o": opened at,
#                          "p": probe lease until, "w": [[slice, calls, failures], ...]}


@dataclass(frozen=True, slots=True)
class Breaker:
    """When a tool's breaker opens and for how long (see the module doc)."""

    failures: int | None = 5  # consecutive failed calls that open it (None: not this rule)
    failure_rate: float | None = 0.5  # share of failed calls in the window (None: not this rule)
    window: float = 60.0  # seconds
    min_calls: int = 20  # calls in the window before the rate rule may open it
    cooldown: float = 30.0  # seconds open before a probe
    per: Literal["tool", "tenant"] = "tool"  # one breaker per tool, or per (tool, tenant)

    def __post_init__(self) -> None:
        if self.failures is None and self.failure_rate is None:
            raise ValueError("Breaker: give failures= or failure_rate= (or both)")
        if self.failures is not None and self.failures < 1:
            raise ValueError(f"Breaker(failures={self.failures}): use 1 or more")
        if self.failure_rate is not None and not 0 < self.failure_rate <= 1:
            raise ValueError(f"Breaker(failure_rate={self.failure_rate}): use a share in (0, 1]")
        if self.window <= 0 or self.cooldown < 0 or self.min_calls < 1:
            raise ValueError("Breaker: window > 0, cooldown >= 0 and min_calls >= 1, please")
        if self.per not in ("tool", "tenant"):
            raise ValueError(f"Breaker(per={self.per!r}): use 'tool' or 'tenant'")


# What admit() answers: go (closed), go as the probe, or refused for so many seconds.
ADMIT: Final = 0.0
PROBE: Final = -1.0


def admit(cfg: Breaker, probe_ttl: float) -> Callable[[State | None, float], tuple[Any, float]]:
    """The update that lets a call through: ``ADMIT``, ``PROBE`` (the half-open breaker's
    one call, leased for ``probe_ttl`` s), or the seconds until it may try again."""

    def update(state: State | None, now: float) -> tuple[State | None, float]:
        if state is None or state["s"] == CLOSED:
            return state, ADMIT
        if state["s"] == OPEN:
            reopen = state["o"] + cfg.cooldown
            if now < reopen:
                return state, reopen - now
            state["s"] = HALF_OPEN
        elif state["p"] > now:  # half-open, a probe in flight
            return state, state["p"] - now
        state["p"] = now + probe_ttl
        return state, PROBE

    return update


def record(
    cfg: Breaker, failed: bool | None, probe: bool
) -> Callable[[State | None, float], tuple[Any, str]]:
    """The update after a call: ``failed`` True/False, or None for a call that counts for
    nothing (refused by a limit, cancelled); answers the breaker's state after it."""

    def update(state: State | None, now: float) -> tuple[State | None, str]:
        if failed is None:
            if probe and state is not None and state["s"] == HALF_OPEN:
                state["p"] = 0.0  # the probe did not happen: the next call may probe
            return state, CLOSED if state is None else state["s"]
        if probe or (state is not None and state["s"] != CLOSED):
            if not probe:  # a call let through before it opened: the probe decides
                return state, state["s"] if state is not None else CLOSED
            if failed:
                return _opened(now), OPEN
            return None, CLOSED
        return _closed(cfg, state, failed, now)

    return update


def _closed(cfg: Breaker, state: State | None, failed: bool, now: float) -> tuple[Any, str]:
    if not failed and cfg.failure_rate is None:
        return None, CLOSED  # nothing to remember: the common case writes nothing
    if state is None:
        state = {"s": CLOSED, "c": 0, "o": 0.0, "p": 0.0, "w": []}
    state["c"] = state["c"] + 1 if failed else 0
    if cfg.failures is not None and state["c"] >= cfg.failures:
        return _opened(now), OPEN
    if cfg.failure_rate is not None:
        calls, fails = _count(state["w"], cfg.window, now, failed)
        if calls >= cfg.min_calls and fails / calls >= cfg.failure_rate:
            return _opened(now), OPEN
    return state, CLOSED


def _count(window: list[list[Any]], length: float, now: float, failed: bool) -> tuple[int, int]:
    """Add the call to its slice, drop the slices out of the window; (calls, failures)."""
    current = int(now * SLICES // length)
    last = window[-1] if window else None
    if last is not None and last[0] == current:
        last[1] += 1
        if failed:
            last[2] += 1
    else:  # a new slice: the oldest may have left the window (only then)
        window.append([current, 1, int(failed)])
        while window[0][0] <= current - SLICES:
            window.pop(0)
    calls = fails = 0
    for _, n, f in window:  # one pass, no generators: this runs on every call
        calls += n
        fails += f
    return calls, fails


def _opened(now: float) -> State:
    return {"s": OPEN, "c": 0, "o": now, "p": 0.0, "w": []}


def describe(state: State | None, cfg: Breaker | None, now: float) -> tuple[str, float | None]:
    """A breaker's state as the CLI and ``Resilience.states()`` show it, with the seconds
    until an open one lets a probe through."""
    if state is None:
        return CLOSED, None
    if state["s"] == OPEN:
        cooldown = cfg.cooldown if cfg is not None else 0.0
        left = state["o"] + cooldown - now
        return (OPEN, left) if left > 0 or cfg is None else (HALF_OPEN, 0.0)
    return state["s"], None

"""Where tool limits and breakers keep their state: one small protocol, memory by default.

``Resilience(backend=MemoryLimits())`` (the default) keeps token buckets, concurrency
slots and breaker states in this process; ``RedisLimits(url)`` and
``PostgresLimits(url)`` share them between every process that reaches the server.

A backend offers one primitive, ``update(key, fn, ttl)``: read the key's state (JSON
data, or None), call ``fn(state, now)`` and store what it returns, atomically with
respect to every other update of the key, in every process; ``now`` is the backend's
clock (the server's, for shared ones, so hosts need not agree). The token bucket, the
slots and the breaker are pure functions of that kind (here and in :mod:`.breaker`),
so the three backends share their logic and one conformance suite.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import anyio

T = TypeVar("T")
Update = Callable[
    [Any, float], tuple[Any, T]
]  # (state or None, now) -> (new state or None, answer)


class LimitsBackend(Protocol):
    """Shared state of tool limits (see the module doc)."""

    @property
    def shared(self) -> bool:
        """Whether other processes see the same state (then calls poll when they wait)."""

    async def update(self, key: str, fn: Update[T], ttl: float) -> T:
        """Apply ``fn`` atomically to ``key``'s state; a state that is None is deleted, any
        other expires ``ttl`` seconds after its last update."""

    async def snapshot(self, prefix: str = "") -> dict[str, Any]:
        """Every key (under ``prefix``) and its state, with ``"now"``: the backend's clock."""

    async def released(self, key: str, timeout: float) -> None:
        """Wait up to ``timeout`` s for a release under ``key`` (or a moment, if shared)."""

    async def aclose(self) -> None: ...


# -- the token bucket and the slots: pure updates ----------------------------------------


def take_token(rate: float, burst: int, max_wait: float) -> Update[float | None]:
    """Take a token from a bucket refilled at ``rate`` per second up to ``burst``: the
    seconds to wait for it (0: now), taken ahead; or None when it comes later than
    ``max_wait`` (nothing taken). State: ``[tokens, at]``."""

    def update(state: list[float] | None, now: float) -> tuple[list[float], float | None]:
        if state is None:
            state = [float(burst), now]
        tokens = min(float(burst), state[0] + (now - state[1]) * rate)
        state[1] = now
        if tokens >= 1.0:
            state[0] = tokens - 1.0
            return state, 0.0
        wait = (1.0 - tokens) / rate
        if wait > max_wait:
            state[0] = tokens
            return state, None
        state[0] = tokens - 1.0  # taken ahead: the next caller waits behind this one
        return state, wait

    return update


def take_slot(limit: int, token: str, ttl: float) -> Update[bool]:
    """Hold one of ``limit`` slots as ``token`` until released or ``ttl`` s pass (a process
    that died holding it frees it then). State: ``{token: expires at}``."""

    def update(state: dict[str, float] | None, now: float) -> tuple[dict[str, float], bool]:
        if state is None:
            state = {}
        elif len(state) >= limit:
            for held, expires in list(state.items()):
                if expires <= now:
                    del state[held]
        if len(state) >= limit:
            return state, False
        state[token] = now + ttl
        return state, True

    return update


def give_slot(token: str) -> Update[int]:
    """Release ``token``'s slot; answers the slots still held."""

    def update(state: dict[str, float] | None, now: float) -> tuple[dict[str, float] | None, int]:
        if state is None:
            return None, 0
        state.pop(token, None)
        return (state or None), len(state)

    return update


def slot_token() -> str:
    return uuid.uuid4().hex


# -- in memory -------------------------------------------------------------------------


class MemoryLimits:
    """Limits of this process only (the default): a dict, and an event per key that a
    release sets. Updates never wait, so each is atomic on the event loop."""

    shared = False

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._states: dict[str, Any] = {}
        self._waiters: dict[str, anyio.Event] = {}
        self._clock = clock

    async def update(self, key: str, fn: Update[T], ttl: float) -> T:
        return self.update_now(key, fn)

    def update_now(self, key: str, fn: Update[T]) -> T:
        """``update`` without a coroutine (the in-memory hot path)."""
        states = self._states
        state, answer = fn(states.get(key), self._clock())
        if state is None:
            states.pop(key, None)
        else:
            states[key] = state
        if self._waiters:
            event = self._waiters.pop(key, None)
            if event is not None:  # a slot may be free: wake whoever waits on it
                event.set()
        return answer

    async def snapshot(self, prefix: str = "") -> dict[str, Any]:
        found = {k: v for k, v in self._states.items() if k.startswith(prefix)}
        return {"now": self._clock(), **{k: _copy(v) for k, v in found.items()}}

    async def released(self, key: str, timeout: float) -> None:
        event = self._waiters.get(key)
        if event is None:
            event = self._waiters[key] = anyio.Event()
        with anyio.move_on_after(timeout):
            await event.wait()

    async def aclose(self) -> None:
        self._states.clear()


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value

"""How a tool call is bounded: breaker, rate limit, concurrency limit, timeout, retries,
fallback.

``Resilience.call(tool, args, context)`` is the one place a tool's function is called
(after the gate and argument validation). Per tool, in this order:

1. the circuit breaker (:mod:`.breaker`) refuses while open (``CircuitOpenError``);
2. the token bucket (``rate`` per second, ``burst``) admits the call, waiting up to
   ``limit_wait`` seconds for a token, else ``RateLimitedToolError``;
3. the concurrency limit holds one of ``concurrency`` slots for the call, waiting up
   to what is left of ``limit_wait``, else ``RateLimitedToolError``;
4. each attempt runs under the tool's timeout, retried on its declared-retryable errors
   with full jitter; every attempt keeps the call's idempotency key;
5. a refusal by 1-3 goes to the tool's fallback (:mod:`.fallback`), if it has one.

``limit_per="tenant"`` (``Breaker(per="tenant")``) keeps limits (a breaker) per tenant.
The state lives in the backend: this process's memory by default, or Redis or
PostgreSQL (``Resilience(backend=RedisLimits(url))``), shared by every process that
uses it; slots expire, so a process that dies holding one frees it. With
``metrics=`` (a :class:`~mainspring.telemetry.metrics.instruments.MetricsSink`, e.g.
``JournalMetrics(...).prometheus``), calls, refusals, fallbacks and breaker states are
counted; ``await resilience.states(tools)`` reads them back (the CLI's ``mainspring tools``).
"""

from __future__ import annotations

import contextvars
import itertools
import random
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..engine._deadlines import DeadlinePassed, within
from .breaker import GAUGE, HALF_OPEN, OPEN, PROBE, Breaker, admit, record
from .errors import (
    CircuitOpenError,
    NeedsHuman,
    RateLimitedToolError,
    ToolError,
    ToolFailedError,
    ToolResultError,
    ToolTimeoutError,
)
from .fallback import AskHuman, CachedResult, ResultCache, Step, steps
from .limits import LimitsBackend, MemoryLimits, Update, give_slot, take_slot, take_token
from .states import ToolState, read_states
from .tool import Retry, Tool, ToolContext

if TYPE_CHECKING:
    from ..telemetry.metrics.instruments import MetricsSink


class Toolbox(Protocol):
    """Where a fallback tool is found (``mainspring.tools.Toolbox`` is one)."""

    async def call(
        self, name: str, args: Mapping[str, Any], context: ToolContext | None = None
    ) -> Any: ...

    def context_for(self, name: str, context: ToolContext) -> ToolContext: ...


_FAILURES = (ToolTimeoutError, ToolFailedError, ToolResultError)  # what the breaker counts
_REFUSALS = (CircuitOpenError, RateLimitedToolError)
_SLOTS = itertools.count()
_PROCESS = uuid.uuid4().hex[:8]
# The tools a fallback chain has gone through (a chain that comes back skips them).
_falling_back: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "mainspring_tool_fallbacks", default=frozenset()
)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a tool's calls go through, worked out once per tool."""

    plain: bool  # nothing but timeout and retries
    breaker: Breaker | None
    rate: float | None
    burst: int
    concurrency: int | None
    per_tenant: bool
    wait: float
    bound: float  # the longest a call may take: a slot's and a probe's lease
    fallback: tuple[Step, ...]
    cache_ttl: float | None  # the longest CachedResult ttl in the chain
    admit: Update[float] | None  # the breaker's updates, made once
    settle: dict[tuple[bool | None, bool], Update[str]]
    take: Update[float | None] | None  # the token bucket's update, made once
    ttl: float  # how long a breaker's state outlives its last update
    keys: tuple[str, str, str]  # breaker, bucket and slots keys ("": made per tenant)


class Resilience:
    """The bounds every tool call runs under (one per toolbox; several toolboxes may share
    one backend). ``limit_wait``: how long a call may wait for a token or a slot when its
    tool does not say; ``slot_ttl``: a slot's lease for a tool with no timeout."""

    def __init__(
        self,
        *,
        backend: LimitsBackend | None = None,
        metrics: MetricsSink | None = None,
        limit_wait: float = 5.0,
        slot_ttl: float = 300.0,
        cache_entries: int = 1024,
        rng: random.Random | None = None,
    ) -> None:
        self.backend: LimitsBackend = backend if backend is not None else MemoryLimits()
        self._local = self.backend.update_now if isinstance(self.backend, MemoryLimits) else None
        self.metrics = metrics
        self.limit_wait = limit_wait
        self.slot_ttl = slot_ttl
        self.results = ResultCache(cache_entries)
        self._rng = rng or random.Random()
        self._plans: dict[Tool, _Plan] = {}
        self._gauges: dict[str, float] = {}

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def states(self, tools: Iterable[Tool] | None = None) -> list[ToolState]:
        """Each tool's breaker state, tokens and calls in flight, read from the backend
        (``tools``: those given, else every tool called so far)."""
        chosen = list(self._plans) if tools is None else list(tools)
        return await read_states(self.backend, chosen)

    async def call(
        self,
        tool: Tool,
        args: Mapping[str, Any],
        context: ToolContext,
        *,
        toolbox: Toolbox | None = None,
    ) -> Any:
        """The call under its tool's bounds (``toolbox``: where a fallback tool is found)."""
        plan = self._plans.get(tool) or self._plan(tool)
        if plan.plain:
            return await self.attempts(tool, args, context)
        try:
            result = await self._guarded(plan, tool, args, context)
        except _REFUSALS as refused:
            if not plan.fallback:
                self._count(tool.name, "rejected")
                raise
            return await self._fall_back(plan, tool, args, context, toolbox, refused)
        except BaseException:
            self._count(tool.name, "failed")
            raise
        if plan.cache_ttl is not None:
            self.results.put(ResultCache.key(tool.name, context.tenant, args), result)
        if self.metrics is not None:
            self._count(tool.name, "ok")
        return result

    # -- 1. the breaker ------------------------------------------------------------------

    async def _guarded(
        self, plan: _Plan, tool: Tool, args: Mapping[str, Any], context: ToolContext
    ) -> Any:
        cfg = plan.breaker
        if cfg is None:
            return await self._limited(plan, tool, args, context)
        key = plan.keys[0] or f"b:{tool.name}:{context.tenant or '-'}"
        ttl, local = plan.ttl, self._local
        assert plan.admit is not None
        answer = (
            local(key, plan.admit) if local else await self.backend.update(key, plan.admit, ttl)
        )
        if answer > 0:
            self._gauge(tool.name, OPEN)
            self._reject(tool.name, "breaker")
            raise CircuitOpenError(
                f"tool {tool.name!r} is not called: its circuit breaker is open after "
                f"repeated failures; it lets a call through again in {answer:.1f} s"
            )
        probe = answer == PROBE
        if probe:
            self._gauge(tool.name, HALF_OPEN)
        try:
            result = await self._limited(plan, tool, args, context)
        except BaseException as exc:
            failed = True if isinstance(exc, _FAILURES) else None
            if failed or probe:
                await self._settle(key, plan.settle[failed, probe], ttl, tool.name)
            raise
        if local is not None:
            state = local(key, plan.settle[False, probe])
            if self.metrics is not None:
                self._gauge(tool.name, state)
        else:
            await self._settle(key, plan.settle[False, probe], ttl, tool.name)
        return result

    async def _settle(self, key: str, fn: Update[str], ttl: float, name: str) -> None:
        """Record a call's outcome in its breaker, even while being cancelled."""
        if self._local is not None:
            state = self._local(key, fn)
        else:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                state = await self.backend.update(key, fn, ttl)
        self._gauge(name, state)

    # -- 2. and 3. the limits ------------------------------------------------------------

    async def _limited(
        self, plan: _Plan, tool: Tool, args: Mapping[str, Any], context: ToolContext
    ) -> Any:
        if plan.rate is None and plan.concurrency is None:
            return await self.attempts(tool, args, context)
        scope = f"{tool.name}:{context.tenant or '-'}" if plan.per_tenant else ""
        deadline = time.monotonic() + plan.wait
        local = self._local
        if plan.take is not None and plan.rate is not None:
            key = plan.keys[1] or f"r:{scope}"
            if local is not None:
                wait = local(key, plan.take)
            else:
                wait = await self.backend.update(key, plan.take, plan.burst / plan.rate + 60.0)
            if wait is None:
                self._reject(tool.name, "rate")
                raise RateLimitedToolError(
                    f"tool {tool.name!r}: its rate limit ({plan.rate:g} calls/s, burst "
                    f"{plan.burst}) admits no call within {plan.wait:g} s; try again later, "
                    "or raise rate= or limit_wait="
                )
            if wait > 0:
                await anyio.sleep(wait)
        if plan.concurrency is None:
            return await self.attempts(tool, args, context)
        key, token = plan.keys[2] or f"c:{scope}", f"{_PROCESS}-{next(_SLOTS)}"
        take = take_slot(plan.concurrency, token, plan.bound)
        while not (local(key, take) if local else await self.backend.update(key, take, plan.bound)):
            left = deadline - time.monotonic()
            if left <= 0:
                self._reject(tool.name, "concurrency")
                raise RateLimitedToolError(
                    f"tool {tool.name!r}: all {plan.concurrency} of its concurrent calls are "
                    f"busy and none freed within {plan.wait:g} s; try again later, or raise "
                    "concurrency= or limit_wait="
                )
            await self.backend.released(key, left)
        try:
            return await self.attempts(tool, args, context)
        finally:
            if local is not None:
                local(key, give_slot(token))
            else:
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await self.backend.update(key, give_slot(token), plan.bound)

    # -- 4. timeout and retries ----------------------------------------------------------

    def attempts(self, tool: Tool, args: Mapping[str, Any], context: ToolContext) -> Awaitable[Any]:
        """The call, retried on the tool's declared-retryable errors with full jitter."""
        if tool.retry is None:
            return self._single(tool, args, context)
        return self._retried(tool, tool.retry, args, context)

    async def _single(self, tool: Tool, args: Mapping[str, Any], context: ToolContext) -> Any:
        """``attempts`` of a tool without retries (most): ``once`` in one coroutine, with
        no loop around it: a coroutine layer less a call."""
        try:
            if tool.timeout is None:
                return await tool.invoke(args, context)
            return await within(tool.timeout, tool.invoke(args, context))
        except DeadlinePassed:
            raise _timed_out(tool) from None
        except ToolError:
            raise
        except Exception as exc:
            raise _failed(tool, exc) from exc

    async def _retried(
        self, tool: Tool, retry: Retry, args: Mapping[str, Any], context: ToolContext
    ) -> Any:
        tries = retry.attempts
        for attempt in range(1, tries + 1):
            ctx = context if attempt == 1 else replace(context, attempt=attempt)
            try:
                return await self.once(tool, args, ctx)
            except Exception as exc:
                if attempt == tries or not isinstance(exc, retry.on):
                    if isinstance(exc, ToolError):
                        raise
                    raise _failed(tool, exc) from exc
                ceiling = min(retry.max_backoff, retry.backoff * 2 ** (attempt - 1))
                await anyio.sleep(self._rng.uniform(0, ceiling))
        raise AssertionError("unreachable: the loop returns or raises")

    async def once(self, tool: Tool, args: Mapping[str, Any], context: ToolContext) -> Any:
        """One attempt under the tool's timeout."""
        if tool.timeout is None:
            return await tool.invoke(args, context)
        # Timed only if the call suspends (engine/_deadlines.py): most do not.
        try:
            return await within(tool.timeout, tool.invoke(args, context))
        except DeadlinePassed:
            raise _timed_out(tool) from None

    # -- 5. the fallback -----------------------------------------------------------------

    async def _fall_back(
        self,
        plan: _Plan,
        tool: Tool,
        args: Mapping[str, Any],
        context: ToolContext,
        toolbox: Toolbox | None,
        refused: ToolError,
    ) -> Any:
        tried: list[str] = []
        for step in plan.fallback:
            if isinstance(step, CachedResult):
                key = ResultCache.key(tool.name, context.tenant, args)
                found, value = self.results.get(key, step.ttl)
                if found:
                    self._count(tool.name, "fallback", "cached")
                    return value
                tried.append(f"no result cached in the last {step.ttl:g} s")
            elif isinstance(step, AskHuman):
                self._count(tool.name, "fallback", "human")
                raise NeedsHuman.of(tool.name, args, f"{step.reason} ({refused})") from refused
            else:
                ok, value = await self._other_tool(step.name, tool, args, context, toolbox)
                if ok:
                    self._count(tool.name, "fallback", "tool")
                    return value
                tried.append(str(value))
        self._count(tool.name, "rejected")
        raise type(refused)(f"{refused}; fallbacks tried: {'; '.join(tried)}") from refused

    async def _other_tool(
        self,
        name: str,
        tool: Tool,
        args: Mapping[str, Any],
        context: ToolContext,
        toolbox: Toolbox | None,
    ) -> tuple[bool, Any]:
        """(True, its result), or (False, why not)."""
        chain = _falling_back.get() | {tool.name}
        if toolbox is None:
            return False, f"tool {name!r}: no toolbox to find it in"
        if name in chain:
            return False, f"tool {name!r}: already tried in this chain"
        token = _falling_back.set(chain)
        try:
            return True, await toolbox.call(name, args, toolbox.context_for(name, context))
        except ToolError as exc:
            return False, f"tool {name!r}: {type(exc).__name__}: {exc}"
        finally:
            _falling_back.reset(token)

    # -- plans and metrics ---------------------------------------------------------------

    def _plan(self, tool: Tool) -> _Plan:
        chain = steps(tool.name, tool.fallback)
        ttls = [s.ttl for s in chain if isinstance(s, CachedResult)]
        retry = tool.retry
        tries = retry.attempts if retry is not None else 1
        per_attempt = tool.timeout if tool.timeout is not None else self.slot_ttl
        backoff = retry.max_backoff * (tries - 1) if retry is not None else 0.0
        limited = tool.breaker is not None or tool.rate is not None or tool.concurrency
        cfg, burst = tool.breaker, tool.burst or max(1, int(tool.rate or 1))
        wait = self.limit_wait if tool.limit_wait is None else tool.limit_wait
        bound = per_attempt * tries + backoff + 1.0
        plan = _Plan(
            plain=not (limited or chain or self.metrics is not None),
            breaker=tool.breaker,
            rate=tool.rate,
            burst=burst,
            concurrency=tool.concurrency,
            per_tenant=tool.limit_per == "tenant",
            wait=wait,
            bound=bound,
            fallback=chain,
            cache_ttl=max(ttls) if ttls else None,
            admit=None if cfg is None else admit(cfg, bound),
            settle={}
            if cfg is None
            else {(f, p): record(cfg, f, p) for f in (True, False, None) for p in (True, False)},
            take=None if tool.rate is None else take_token(tool.rate, burst, wait),
            ttl=0.0 if cfg is None else max(cfg.window, cfg.cooldown) + bound + 60.0,
            keys=_keys(tool),
        )
        self._plans[tool] = plan
        return plan

    def _count(self, name: str, outcome: str, fallback: str | None = None) -> None:
        if self.metrics is not None:
            self.metrics.add("mainspring_tool_calls", (name, outcome), 1.0)
            if fallback is not None:
                self.metrics.add("mainspring_tool_fallbacks", (name, fallback), 1.0)

    def _reject(self, name: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.add("mainspring_tool_rejections", (name, reason), 1.0)

    def _gauge(self, name: str, state: str) -> None:
        if self.metrics is None:
            return
        value, before = GAUGE[state], self._gauges.get(name, 0.0)
        if value != before:  # a gauge the sinks only add to: add the change
            self._gauges[name] = value
            self.metrics.add("mainspring_tool_breaker_state", (name,), value - before)


def _failed(tool: Tool, exc: Exception) -> ToolFailedError:
    return ToolFailedError(f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}")


def _timed_out(tool: Tool) -> ToolTimeoutError:
    return ToolTimeoutError(
        f"tool {tool.name!r} did not finish within its timeout of {tool.timeout:g} s "
        "(cancelled); raise timeout= or make the tool faster"
    )


def _keys(tool: Tool) -> tuple[str, str, str]:
    """The backend keys of a tool's breaker, bucket and slots, made once ("" for those
    kept per tenant: made per call, see :mod:`.states`)."""
    breaker = tool.breaker is not None and tool.breaker.per == "tool"
    per_tool = tool.limit_per == "tool"
    name = tool.name
    return (
        f"b:{name}" if breaker else "",
        f"r:{name}" if per_tool else "",
        f"c:{name}" if per_tool else "",
    )

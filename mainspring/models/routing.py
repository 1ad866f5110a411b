"""Routing: named models and aliases, timeouts, retries, fallbacks, hedging, degradation.

``Router(models, aliases)`` sends a request to a named model and keeps going until
some model answers: a retryable error is retried with backoff (retry-after
honoured), then the model's fallbacks are tried depth first (each model once per
call), a prompt too long for a model's window goes to a model with a larger one,
a slow call is hedged, and when nothing answers a ``degrade=`` model or canned
answer may still reply. Every request made is in the answer's ``attempts`` and
its usage in the answer's usage (``_attempts.py``).

A stream that breaks after deltas reached the caller is retried or falls back
like a whole call, and the caller sees a :class:`StreamRestart` before the new
deltas; one that breaks before its first delta falls back silently.

The router knows nothing of caches, budgets, structured output or the journal:
the gateway composes those around it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from functools import partial
from types import MappingProxyType

import anyio
import msgspec

from ..engine._deadlines import within
from ._attempts import CallLog, TokenCounter, estimate_tokens
from ._backoff import retry_delay
from ._names import degradations, fallback_chains, known, resolve_aliases
from ._prepare import RequestDefaults, check_spec
from .errors import ModelError, ModelTimeoutError, ProviderError, UnknownModelError
from .hedging import HedgeBudget, LatencyTracker, hedge_delay, race_hedged
from .messages import ModelRequest, ModelResponse
from .protocol import ModelProvider, StreamEnd, StreamEvent, StreamRestart, TextDelta
from .spec import ModelSpec

_NO_ALIASES: Mapping[str, str] = MappingProxyType({})


class Router:
    """Calls named models with timeouts, retries, fallbacks, hedging and degradation.

    ``latencies[name]`` holds each model's recent latencies and ``hedge_budgets[name]``
    its hedges so far (for metrics); ``count_tokens`` estimates a prompt's tokens for
    context windows and for cancelled requests (default: JSON length / 4).
    """

    def __init__(
        self,
        models: Mapping[str, ModelSpec],
        aliases: Mapping[str, str] = _NO_ALIASES,
        *,
        degrade: Mapping[str, str | ModelResponse] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        rng: random.Random | None = None,
        count_tokens: TokenCounter | None = None,
    ) -> None:
        if not models:
            raise ValueError("a Router needs at least one model: Router({'fast': ModelSpec(...)})")
        for name, spec in models.items():
            check_spec(name, spec)
        self._models = dict(models)
        self._alias_names = dict(aliases)
        self._aliases = resolve_aliases(self._models, aliases)
        self._chains = fallback_chains(self._models, aliases)
        self._degrade = degradations(degrade, self._models, aliases)
        self._defaults = {
            name: RequestDefaults.of(name, spec) for name, spec in self._models.items()
        }
        self._clock = clock
        self._rng = rng or random.Random()
        self._count_tokens = count_tokens or estimate_tokens
        self.latencies = {name: LatencyTracker() for name in self._models}
        self.hedge_budgets = {
            name: HedgeBudget(spec.hedge.max_extra)
            for name, spec in self._models.items()
            if spec.hedge is not None
        }

    # --- names ---------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        """The model ``name`` means (itself, or what its alias chain ends at)."""
        if name in self._models:
            return name
        try:
            return self._aliases[name]
        except KeyError:
            raise UnknownModelError(
                f"unknown model {name!r}; known {known(self._models, self._alias_names)}"
            ) from None

    def spec(self, name: str) -> ModelSpec:
        return self._models[self.resolve(name)]

    def chain(self, name: str) -> tuple[str, ...]:
        """The models a call to ``name`` may try, in order (before any degradation)."""
        return self._chains[self.resolve(name)]

    def degradation(self, name: str) -> str | ModelResponse | None:
        """What answers for ``name`` when nothing else can (a model name or a canned answer);
        the gateway uses it too when a budget says no."""
        return self._degrade.get(self.resolve(name))

    # --- whole calls -----------------------------------------------------------------

    async def complete(self, name: str, request: ModelRequest) -> ModelResponse:
        first = self.resolve(name)
        log = CallLog(request.messages, self._count_tokens)
        started = self._clock()
        try:
            response = await self._complete_chain(log, first, request)
            if response is None:
                response = await self._complete_degraded(log, first, request)
        except ModelError as error:  # what the failed attempts spent goes with the error
            log.charged(error)
            raise
        return log.finish(response, self._clock() - started)

    async def _complete_chain(
        self, log: CallLog, first: str, request: ModelRequest
    ) -> ModelResponse | None:
        for name, spec in log.candidates(self._chains[first], self._models):
            try:
                return await self._complete_model(
                    log, name, spec, self._defaults[name].apply(request)
                )
            except ModelError as error:
                log.failed(spec, error)
        return None

    async def _complete_degraded(
        self, log: CallLog, first: str, request: ModelRequest
    ) -> ModelResponse:
        target = self._degrade.get(first)
        if target is None:
            raise log.exhausted(first)
        log.degraded = True
        if isinstance(target, ModelResponse):
            log.note(
                first,
                "degraded",
                message="every model failed: the canned answer of degrade=",
                usage=target.usage,
            )
            return target
        response = await self._complete_chain(log, target, request)
        if response is None:
            raise log.exhausted(first)
        return response

    async def _complete_model(
        self, log: CallLog, name: str, spec: ModelSpec, request: ModelRequest
    ) -> ModelResponse:
        """One model, retried with backoff while its errors are retryable."""
        retry = 0
        while True:
            try:
                return await self._complete_once(log, name, spec, request)
            except ModelError as error:
                delay = self._retry_delay(spec, error, retry)
                if delay is None:
                    raise
            await anyio.sleep(delay)
            retry += 1

    def _retry_delay(self, spec: ModelSpec, error: ModelError, retry: int) -> float | None:
        if not error.retryable or retry >= spec.retries:
            return None
        return retry_delay(error, retry, spec, self._rng)

    def _complete_once(
        self, log: CallLog, name: str, spec: ModelSpec, request: ModelRequest
    ) -> Awaitable[ModelResponse]:
        budget = self.hedge_budgets.get(name)
        if budget is None or spec.hedge is None:  # the request itself: no coroutine around it
            return self._request(log, name, spec, request, False)
        return self._hedged(log, name, spec, request, budget)

    async def _hedged(
        self, log: CallLog, name: str, spec: ModelSpec, request: ModelRequest, budget: HedgeBudget
    ) -> ModelResponse:
        assert spec.hedge is not None
        budget.add_call()
        delay = hedge_delay(spec.hedge, self.latencies[name])
        if delay is None:
            return await self._request(log, name, spec, request, False)
        call = partial(self._request, log, name, spec, request)
        return await race_hedged(call, delay, budget.try_spend)

    async def _request(
        self, log: CallLog, name: str, spec: ModelSpec, request: ModelRequest, hedge: bool
    ) -> ModelResponse:
        """One request to one provider, under the spec's timeout, recorded whatever happens."""
        started = self._clock()
        try:
            if spec.timeout is None:
                response = await spec.provider.complete(request)
            else:
                # Timed only if the call suspends (engine/_deadlines.py): a scripted,
                # instant or cached provider's call does not. Past it: DeadlinePassed, a
                # TimeoutError (below).
                response = await within(spec.timeout, spec.provider.complete(request))
        except anyio.get_cancelled_exc_class():
            log.note(
                name,
                "cancelled",
                latency=self._clock() - started,
                hedge=hedge,
                usage=log.estimated_input(),
            )
            raise
        except ModelError as error:
            log.note(name, "error", latency=self._clock() - started, error=error, hedge=hedge)
            raise
        except TimeoutError:
            timeout = _timed_out(name, spec, f"gave no answer within {spec.timeout} s")
            log.note(name, "error", latency=self._clock() - started, error=timeout, hedge=hedge)
            raise timeout from None
        latency = self._clock() - started
        self.latencies[name].observe(latency)
        log.note(name, "ok", latency=latency, hedge=hedge, usage=response.usage)
        return response

    # --- streams -----------------------------------------------------------------------

    async def stream(self, name: str, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Deltas of the first model that answers; a StreamRestart before a new attempt's
        deltas when an earlier one broke after the caller saw some; one StreamEnd."""
        first = self.resolve(name)
        log = CallLog(request.messages, self._count_tokens)
        started = self._clock()
        degrade = self._degrade.get(first)
        heads = [first, degrade] if isinstance(degrade, str) else [first]
        try:
            for n, head in enumerate(heads):
                log.degraded = n > 0  # the second head is the degradation
                for model, spec in log.candidates(self._chains[head], self._models):
                    request_for = self._defaults[model].apply(request)
                    last: StreamEvent | None = None
                    async with aclosing(
                        self._stream_model(log, model, spec, request_for, started)
                    ) as events:
                        async for last in events:
                            yield last
                    if isinstance(last, StreamEnd):
                        return
            if not isinstance(degrade, ModelResponse):
                raise log.exhausted(first)
        except ModelError as error:  # what the failed attempts spent goes with the error
            log.charged(error)
            raise
        log.degraded = True
        log.note(
            first,
            "degraded",
            message="every model failed: the canned answer of degrade=",
            usage=degrade.usage,
        )
        if log.restart_reason is not None:
            yield StreamRestart(log.restart_reason, first)
        if degrade.text:
            yield TextDelta(degrade.text)
        yield StreamEnd(log.finish(degrade, self._clock() - started))

    async def _stream_model(
        self, log: CallLog, name: str, spec: ModelSpec, request: ModelRequest, started: float
    ) -> AsyncGenerator[StreamEvent, None]:
        """One model's stream, retried while its errors are retryable; ends without a
        StreamEnd when the model gave up and another may answer."""
        retry = 0
        while True:
            try:
                async with aclosing(self._stream_once(log, name, spec, request, started)) as events:
                    async for event in events:
                        yield event
                return
            except ModelError as error:
                if log.streamed:  # the caller saw deltas that are now void
                    log.restart_reason = f"{type(error).__name__}: {error}"
                    log.streamed = False
                delay = self._retry_delay(spec, error, retry)
                if delay is None:
                    log.failed(spec, error)  # raises when no other model can help
                    return
            await anyio.sleep(delay)
            retry += 1

    async def _stream_once(
        self, log: CallLog, name: str, spec: ModelSpec, request: ModelRequest, started: float
    ) -> AsyncGenerator[StreamEvent, None]:
        attempt_started = self._clock()
        deadline = attempt_started + (spec.timeout if spec.timeout is not None else math.inf)
        first_by = attempt_started + (
            spec.first_token_timeout if spec.first_token_timeout is not None else math.inf
        )
        chars = 0
        ttft: float | None = None
        events = spec.provider.stream(request)
        try:
            while True:
                limit = deadline if ttft is not None else min(deadline, first_by)
                event = await self._next_event(
                    log, name, spec, events, limit, attempt_started, chars
                )
                if ttft is None:
                    ttft = self._clock() - started
                    if log.restart_reason is not None:
                        yield StreamRestart(log.restart_reason, name)
                        log.restart_reason = None
                if isinstance(event, StreamEnd):
                    latency = self._clock() - attempt_started
                    self.latencies[name].observe(latency)
                    log.note(name, "ok", latency=latency, usage=event.response.usage)
                    response = log.finish(event.response, self._clock() - started)
                    yield StreamEnd(msgspec.structs.replace(response, ttft=ttft))
                    return
                if isinstance(event, TextDelta):
                    chars += len(event.text)
                log.streamed = True
                yield event
        finally:
            await _close(events)

    async def _next_event(
        self,
        log: CallLog,
        name: str,
        spec: ModelSpec,
        events: AsyncIterator[StreamEvent],
        deadline: float,
        started: float,
        chars: int,
    ) -> StreamEvent:
        """The stream's next event by ``deadline``; a failure is recorded, with the usage
        of what was streamed so far, and raised as a ModelError."""
        error: ModelError
        try:
            if deadline == math.inf:
                return await anext(events)
            with _deadline_in(max(0.0, deadline - self._clock())):
                return await anext(events)
            raise TimeoutError  # the scope caught its own deadline: nothing else cancels it
        except anyio.get_cancelled_exc_class():
            log.note(
                name, "cancelled", latency=self._clock() - started, usage=log.partial_usage(chars)
            )
            raise
        except StopAsyncIteration:
            error = ProviderError(
                f"the stream of model {name!r} ended without a StreamEnd",
                provider=spec.provider.name,
                model=name,
            )
        except ModelError as exc:
            error = exc
        except TimeoutError:
            error = _timed_out(
                name,
                spec,
                "stream timed out (timeout="
                f"{spec.timeout} s, first_token_timeout={spec.first_token_timeout} s)",
            )
        usage = log.partial_usage(chars) if chars else None
        log.note(name, "error", latency=self._clock() - started, error=error, usage=usage)
        raise error

    # --- lifetime ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every distinct provider once (two specs may share one client)."""
        providers: dict[int, ModelProvider] = {}
        for spec in self._models.values():
            providers.setdefault(id(spec.provider), spec.provider)
        errors: list[Exception] = []
        for provider in providers.values():
            try:
                await provider.aclose()
            except Exception as exc:  # close the others before reporting it
                errors.append(exc)
        if errors:
            raise errors[0]


def _deadline_in(seconds: float | None) -> anyio.CancelScope:
    """A cancel scope ending ``seconds`` from now (never, for None): ``anyio.fail_after``
    without its two generator-based context managers, a few microseconds a call."""
    if seconds is None:
        return anyio.CancelScope()
    return anyio.CancelScope(deadline=anyio.current_time() + seconds)


def _timed_out(name: str, spec: ModelSpec, what: str) -> ModelTimeoutError:
    return ModelTimeoutError(f"model {name!r} {what}", provider=spec.provider.name, model=name)


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()

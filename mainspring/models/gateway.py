"""The model gateway: one object that makes every model call routed, cached, streamed,
validated and accounted, in a run (``ctx.model``, a journaled effect) or on its own.

``Gateway(models, aliases=..., cache=..., prices=..., budgets=...)``; give it to
``Runtime(store, models=gateway)``. In a run, a call is the effect ``model:<name>``:
the gate's hooks (policy, budgets, the loop breaker) decide before it, its arguments
(messages, tools, parameters; never a key) and its response with usage and cost are
journaled, and a resumed run gets the recorded response back without a call.
"""

from __future__ import annotations

import contextvars
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from ..engine.capabilities import DeltaSink, NodeCalls
from ..engine.effects import EffectCall
from ..errors import EffectDeniedError
from .accounting import Accountant
from .budget_gate import BudgetGate
from .budget_ledger import BudgetLedger
from .budgets import Budget, denial_error
from .cache import ResponseCache
from .call_cache import CacheOption, CallCache
from .errors import BudgetExceededError, ModelError
from .jsonstream import PartialJSON
from .ledger_url import ledger_from
from .loop_breaker import LoopBreaker
from .messages import (
    Message,
    ModelRequest,
    ModelResponse,
    OutputSpec,
    ToolSpec,
    Usage,
    as_messages,
)
from .pricing import PriceTable
from .protocol import (
    ModelProvider,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    StreamRestart,
    TextDelta,
    ToolCallDelta,
)
from .routing import Router
from .spec import ModelSpec
from .structured import complete_structured, output_spec, validate_output

if TYPE_CHECKING:
    from .semantic_cache import SemanticCache

_REQUEST_FIELDS = ("tool_choice", "temperature", "max_tokens", "stop")
_SCALARS = frozenset((str, int, float, bool))  # values JSON keeps as they are
_EFFECT_FNS = 256  # effect functions kept, one per output type
_SPECS_KEPT = 1024  # tool specs whose JSON is kept (_tools_json)


class Gateway:
    """Named models behind one call: ``await gateway.complete("fast", "hello")``.

    ``models`` maps names to a ``ModelSpec`` (or a bare provider, whose model id is
    the name); ``aliases`` maps other names to them. ``cache`` is the response cache
    calls opt into with ``cache=True`` (or a TTL); ``prices`` extends the price table;
    ``hooks`` are further gate hooks (budgets, the loop breaker) a runtime built with
    this gateway adds to its gate.
    """

    def __init__(
        self,
        models: Mapping[str, ModelSpec | ModelProvider],
        *,
        aliases: Mapping[str, str] | None = None,
        cache: ResponseCache | None = None,
        cache_ttl: float | None = 3600.0,
        semantic_cache: SemanticCache[ModelResponse] | None = None,
        prices: PriceTable | Mapping[str, Any] | None = None,
        budgets: Sequence[Budget] = (),
        ledger: BudgetLedger | str | None = None,
        loop_breaker: LoopBreaker | int | None = None,
        hooks: Sequence[object] = (),
        repairs: int = 2,
        degrade: Mapping[str, str | ModelResponse] | None = None,
    ) -> None:
        specs = {
            name: m if isinstance(m, ModelSpec) else ModelSpec(m, name)
            for name, m in models.items()
        }
        self.router = Router(specs, aliases or {}, degrade=degrade)
        self.caches = CallCache(cache, semantic_cache, cache_ttl)
        self.repairs = repairs
        self.accountant = Accountant(self.router, prices)
        self.budget_gate: BudgetGate | None = None
        if budgets:
            self.budget_gate = BudgetGate(
                budgets, ledger_from(ledger), price=self.accountant.price_of
            )
        elif ledger is not None:
            raise ValueError("Gateway(ledger=...) counts budgets: give budgets=[Budget(...)] too")
        if isinstance(loop_breaker, int) and not isinstance(loop_breaker, bool):
            loop_breaker = LoopBreaker(max_repeats=loop_breaker)
        # The loop breaker first, the budgets last: a later hook that denied a call the
        # budgets reserved for would leave the reservation counted at its estimate.
        self._hooks = (
            *([loop_breaker] if loop_breaker is not None else []),
            *hooks,
            *([self.budget_gate] if self.budget_gate is not None else []),
        )
        self._effect_fns: dict[Any, Callable[..., Any]] = {}  # output type -> effect function

    @property
    def gate_hooks(self) -> Sequence[object]:
        return self._hooks

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.router.aclose()
        if self.caches.exact is not None:
            await self.caches.exact.aclose()
        if self.budget_gate is not None:
            await self.budget_gate.ledger.aclose()

    # -- outside a run -------------------------------------------------------------

    async def complete(
        self, model: str, prompt: Any, /, *, on_delta: DeltaSink | None = None, **options: Any
    ) -> ModelResponse:
        """Ask ``model`` (a name or alias) once, with routing, caching and accounting.

        Options as ``ctx.model``'s; ``on_delta`` (or ``stream=True``) streams, and gets
        each piece as keyword fields (text=, reasoning=, tool_call=, partial=, restart=).
        Budgets and policy are gate hooks: they hold for calls made in runs.
        """
        call = _Call.of(model, prompt, options)
        self.caches.check(call.cache)
        response = await self._respond(call, on_delta)
        return _with_instance(response, call.output_type)

    async def stream(
        self, model: str, prompt: Any, /, **options: Any
    ) -> AsyncIterator[StreamEvent]:
        """The answer as it is generated: deltas, a StreamRestart if routing starts over,
        and one StreamEnd carrying the response (accounted, and cached when asked)."""
        call = _Call.of(model, prompt, options)
        self.caches.check(call.cache)
        if call.output_type is not None:
            raise TypeError(
                "stream() yields raw deltas: for structured output use complete(..., "
                "output=T, on_delta=fn), whose deltas carry the partial output"
            )
        request = call.request(self.router)
        hit = await self.caches.lookup(request, call.cache, call.tenant) if call.cache else None
        if hit is not None:
            yield TextDelta(hit.text)
            yield StreamEnd(hit)
            return
        async for event in self.router.stream(call.model, request):
            if isinstance(event, StreamEnd):
                response = self.accountant.account(request, event.response)
                if call.cache:
                    await self.caches.store(request, response, call.cache, call.tenant)
                yield StreamEnd(response)
            else:
                yield event

    # -- in a run: ctx.model -------------------------------------------------------

    async def call_in_run(
        self, node: NodeCalls, model: str, prompt: Any, options: Mapping[str, Any]
    ) -> ModelResponse:
        call = _Call.of(model, prompt, options)
        self.caches.check(call.cache)
        tenant = node.metadata.get("tenant")  # the run's tenant scopes its caches
        if tenant is not None:
            call.tenant = str(tenant)
        sink = node.delta_sink(f"model:{model}") if call.stream is not False else None
        fn = self._effect_fn(call.output_type)
        live = _Live(call, call.args(), sink)
        effect = EffectCall("model", f"model:{model}", fn, (), live.args, plain=call.plain())
        token = _live.set(live)
        try:
            recorded = await node.effect(effect)
        except EffectDeniedError as denied:  # a budget or the loop breaker: say which
            error = denial_error(denied)
            canned = self.router.degradation(model)
            if isinstance(error, BudgetExceededError) and isinstance(canned, ModelResponse):
                # Graceful degradation: the canned answer costs nothing, so it needs no
                # call (a cheaper *model* is Budget(action="fallback"): through the gate).
                note = {"model": model, "outcome": "degraded", "message": str(error)}
                return _with_instance(
                    msgspec.structs.replace(canned, attempts=[note]), call.output_type
                )
            raise error or denied from None
        finally:
            _live.reset(token)
        if live.response is not None and recorded is live.data:  # made now, kept as it was
            return _with_instance(live.response, call.output_type)
        return _with_instance(ModelResponse.from_dict(recorded), call.output_type)

    def _effect_fn(self, output_type: Any) -> Callable[..., Any]:
        """The effect's function, the same object for every call of an output type: the
        engine caches what it learns of an effect function (its signature, whether it is
        async) by identity, and a new function per call costs an inspect.signature
        (~15 us) and evicts the user's own functions from those caches. It holds the
        gateway weakly (no reference cycle through ``_effect_fns``); the call's stream
        sink comes with the call (``_live``)."""
        try:
            return self._effect_fns[output_type]
        except KeyError:
            fn = _effect_function(weakref.ref(self), output_type)
            if len(self._effect_fns) < _EFFECT_FNS:
                self._effect_fns[output_type] = fn
            return fn
        except TypeError:  # an unhashable output= (a schema dict)
            return _effect_function(weakref.ref(self), output_type)

    # -- the one path of a call ----------------------------------------------------

    def _respond(self, call: _Call, sink: DeltaSink | None) -> Awaitable[ModelResponse]:
        """The call's response: routed, and cached or made structured when it asks."""
        if call.cache or call.output_type is not None:
            return self._respond_fully(call, sink)
        # The plain call (most): its one routed request, with no coroutine around it
        # (with the effect function's own layer, ~7k instructions a call less by
        # callgrind, W12 2026-12-07).
        request = call.request(self.router)
        stream = sink is not None or call.stream is True
        return self._ask(call.model, request, sink, stream, request.messages)

    async def _respond_fully(self, call: _Call, sink: DeltaSink | None) -> ModelResponse:
        request = call.request(self.router)
        if call.cache:
            hit = await self.caches.lookup(request, call.cache, call.tenant)
            if hit is not None:
                return hit
        stream = sink is not None or call.stream is True
        if call.output_type is not None:
            repairs = call.repairs if call.repairs is not None else self.repairs
            ask = partial(self._ask, call.model, request, sink if stream else None, stream)
            _, response, _ = await complete_structured(  # response.output: its JSON data
                ask, request.messages, call.output_type, repairs=repairs
            )
        else:
            response = await self._ask(call.model, request, sink, stream, request.messages)
        if call.cache:
            await self.caches.store(request, response, call.cache, call.tenant)
        return response

    async def _ask(
        self,
        model: str,
        request: ModelRequest,
        sink: DeltaSink | None,
        stream: bool,
        messages: list[Message],
    ) -> ModelResponse:
        """One routed call with these messages (the structured-output loop may repeat it)."""
        if messages is not request.messages:  # a repair of invalid structured output
            request = msgspec.structs.replace(request, messages=messages)
            if sink is not None:
                sink(restart="the output did not validate: asking the model again")
        try:
            if not stream:
                response = await self.router.complete(model, request)
            else:
                response = await self._streamed(model, request, sink)
        except ModelError as error:  # what it spent before failing is priced for budgets
            self.accountant.charge(request, error)
            raise
        return self.accountant.account(request, response)

    async def _streamed(
        self, model: str, request: ModelRequest, sink: DeltaSink | None
    ) -> ModelResponse:
        partial_output = PartialJSON() if request.output is not None else None
        tool_args: dict[int, PartialJSON] = {}
        async for event in self.router.stream(model, request):
            if isinstance(event, StreamEnd):
                return event.response
            if sink is None:
                continue
            if isinstance(event, TextDelta):
                if partial_output is not None:
                    sink(text=event.text, partial=_feed(partial_output, event.text))
                else:
                    sink(text=event.text)
            elif isinstance(event, ToolCallDelta):
                parser = tool_args.setdefault(event.index, PartialJSON())
                fields = {"index": event.index, "id": event.id, "name": event.name,
                          "arguments": event.arguments}  # fmt: skip
                sink(tool_call=fields, partial=_feed(parser, event.arguments))
            elif isinstance(event, ReasoningDelta):
                sink(reasoning=event.text)
            elif isinstance(event, StreamRestart):
                partial_output = PartialJSON() if request.output is not None else None
                tool_args.clear()
                sink(restart=event.reason)
        raise RuntimeError(f"the stream of model {model!r} ended without its response")


class _Live:
    """A call in a run as ``call_in_run`` made it, for its effect's function: when the gate
    let the arguments through unchanged, the call is not rebuilt from them, and the
    response made now goes back to the node without a round trip through its record."""

    __slots__ = ("args", "call", "data", "response", "sink")

    def __init__(self, call: _Call, args: dict[str, Any], sink: DeltaSink | None) -> None:
        self.call = call
        self.args = args
        self.sink = sink  # where this call's tokens go (live subscribers), if anywhere
        self.response: ModelResponse | None = None
        self.data: dict[str, Any] | None = None

    def made_with(self, args: Mapping[str, Any]) -> bool:
        """Whether ``args`` are this call's own (the same objects: no hook replaced any)."""
        mine = self.args
        if len(args) != len(mine):
            return False
        for k, v in mine.items():  # noqa: SIM110  # a loop, not all(<generator>): no generator per call
            if args.get(k) is not v:
                return False
        return True


def _effect_function(gateway: weakref.ref[Gateway], output_type: Any) -> Callable[..., Any]:
    async def model_call(**args: Any) -> dict[str, Any]:
        """The effect's function: its arguments as the gate let them through (a budget
        may have rewritten ``model``), its response as the journal keeps it. (The work
        itself, not a call of a method doing it: a coroutine layer less a call.)"""
        made = gateway()
        if made is None:
            raise RuntimeError("the gateway this call was made through is gone")
        live = _live.get()
        sink = live.sink if live is not None else None
        if live is not None and live.made_with(args):  # as asked: no need to rebuild the call
            call = live.call
        else:  # rewritten by a hook (or edited by a person): the call from its arguments
            call = _Call.from_args(args, output_type)
        response = await made._respond(call, sink)
        data = response.to_dict()
        usage = data.setdefault("usage", {})
        usage["model"] = response.model  # budgets and metrics read the model from the usage
        if live is not None:
            live.response, live.data = response, data
        return data

    return model_call


# The call being made in this task (ctx.model -> its effect's function, same context).
_live: contextvars.ContextVar[_Live | None] = contextvars.ContextVar(
    "mainspring_model_call", default=None
)


class _Call(msgspec.Struct):
    """One call's options, checked: what ``ctx.model`` and ``complete`` were given."""

    model: str
    messages: list[Message]
    tools: list[ToolSpec] = []
    output: OutputSpec | None = None
    output_type: Any = None
    fields: dict[str, Any] = {}  # tool_choice, temperature, max_tokens, stop
    params: dict[str, Any] = {}
    cache: CacheOption = False
    stream: bool | None = None
    repairs: int | None = None
    tenant: str | None = None  # caches are scoped by it (a run's metadata, or tenant=)

    @classmethod
    def of(cls, model: str, prompt: Any, options: Mapping[str, Any]) -> _Call:
        if not isinstance(model, str) or not model:
            raise TypeError(f"the model must be a name or alias (a non-empty str), not {model!r}")
        if not options:  # the plain call: nothing to sort out
            return cls(model, as_messages(prompt))
        if len(options) == 1 and "tools" in options:  # an agent's turn: its tools only
            return cls(model, as_messages(prompt), [_tool(t) for t in options["tools"] or ()])
        opts = dict(options)
        output_type = opts.pop("output", None)
        tools = [_tool(t) for t in opts.pop("tools", None) or ()]
        fields = {f: opts.pop(f) for f in _REQUEST_FIELDS if opts.get(f) is not None}
        cache = opts.pop("cache", False)
        stream = opts.pop("stream", None)
        repairs = opts.pop("repairs", None)
        tenant = opts.pop("tenant", None)
        return cls(
            model, as_messages(prompt), tools, output_spec(output_type) if output_type else None,
            output_type, fields, opts, cache, stream, repairs, tenant,
        )  # fmt: skip

    @classmethod
    def from_args(cls, args: Mapping[str, Any], output_type: Any) -> _Call:
        """The call back from its effect's arguments (as the gate let them through)."""
        try:
            return cls(
                args["model"],
                msgspec.convert(args["messages"], list[Message]),
                msgspec.convert(args.get("tools", ()), list[ToolSpec]),
                msgspec.convert(args["output"], OutputSpec) if args.get("output") else None,
                output_type,
                {f: args[f] for f in _REQUEST_FIELDS if args.get(f) is not None},
                dict(args.get("params", {})),
                args.get("cache", False),
                args.get("stream"),
                args.get("repairs"),
                args.get("tenant"),
            )
        except (KeyError, msgspec.ValidationError) as exc:
            raise TypeError(
                f"a model call's arguments do not fit the gateway's request ({exc}); a gate "
                "hook that rewrites them must keep 'model' and 'messages'"
            ) from None

    def args(self) -> dict[str, Any]:
        """The call as the effect's arguments: JSON, what the journal records."""
        data: dict[str, Any] = {"model": self.model, "messages": msgspec.to_builtins(self.messages)}
        if self.tools:
            data["tools"] = _tools_json(self.tools)
        if self.output is not None:
            data["output"] = msgspec.to_builtins(self.output)
        data.update(self.fields)
        if self.params:
            data["params"] = self.params
        if self.cache:
            data["cache"] = self.cache
        if self.stream is not None:
            data["stream"] = self.stream
        if self.repairs is not None:
            data["repairs"] = self.repairs
        if self.tenant is not None:
            data["tenant"] = self.tenant
        return data

    def plain(self) -> bool:
        """Whether ``args()`` gives only JSON data made for the call (``EffectCall.plain``):
        messages, tools and output from ``to_builtins``; the caller's own values (provider
        parameters, a ``stop`` list) only when they are scalars. (A tool's JSON is shared
        by the calls offering it, ``_tools_json``: the gateway never changes it either.)"""
        return (
            not self.params
            and all(_json_scalar(v) for v in self.fields.values())
            and _json_scalar(self.cache)
        )

    def request(self, router: Router) -> ModelRequest:
        """The request, named by the model it resolves to (routing sets each provider's
        own model id as it tries them); the cache keys on it."""
        return ModelRequest(
            router.resolve(self.model), self.messages, self.tools, output=self.output,
            params=self.params, **self.fields,
        )  # fmt: skip


def _json_scalar(value: Any) -> bool:
    """A value JSON gives back as it is (not NaN or infinity: JSON keeps those as null)."""
    return type(value) in _SCALARS and (type(value) is not float or math.isfinite(value))


# A tool spec's JSON, by the spec's identity (kept with it, so that its id is not reused).
_spec_json: dict[int, tuple[ToolSpec, dict[str, Any]]] = {}


def _tools_json(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    """``to_builtins(tools)``, each spec converted once: an agent offers the same ToolSpec
    objects on every turn, and converting one costs ~7k instructions (callgrind, W12
    2026-12-07). A ToolSpec is frozen; one whose ``parameters`` dict is edited in place
    after its first call would be recorded as it was (make a new ToolSpec instead)."""
    out: list[dict[str, Any]] = []
    for spec in tools:
        hit = _spec_json.get(id(spec))
        if hit is None or hit[0] is not spec:
            if len(_spec_json) >= _SPECS_KEPT:
                _spec_json.clear()
            hit = _spec_json[id(spec)] = (spec, msgspec.to_builtins(spec))
        out.append(hit[1])
    return out


def _tool(tool: Any) -> ToolSpec:
    if isinstance(tool, ToolSpec):
        return tool
    if isinstance(tool, Mapping):
        return msgspec.convert(tool, ToolSpec)
    raise TypeError(
        f"a tool must be a ToolSpec or a dict with name, description and parameters, not {tool!r}"
    )


def _feed(parser: PartialJSON, fragment: str) -> Any:
    try:  # a snapshot: the parser updates its value in place as more arrives
        return msgspec.to_builtins(parser.feed(fragment))
    except ValueError:  # invalid so far: the end of the call reports it whole
        return None


def _with_instance(response: ModelResponse, output_type: Any) -> ModelResponse:
    """The response with its structured output as an instance of the type asked for."""
    if output_type is None or response.output is None:
        return response
    return msgspec.structs.replace(response, output=validate_output(output_type, response.output))


def _no_usage(response: ModelResponse) -> Usage:
    """A cache hit spent nothing: its tokens are not counted again."""
    return Usage(cost=0.0)

"""A deterministic model: a provider that answers from a script, for offline agents and tests.

Not a mock inside the engine: it sits behind the same ``ModelProvider`` protocol as
the HTTP providers, so routing, caching, budgets, streaming and the journal all
see an ordinary provider. A script is a list of turns, taken in order (the last
repeats unless ``cycle=False``), or a function of the request. A turn is a string
(the answer), a ``ModelResponse``/``Message``, a ``ToolCall`` or a list of them,
a dict (structured output, sent as its JSON) or an exception (raised).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeAlias

import anyio
import msgspec

from ..messages import Message, ModelRequest, ModelResponse, TextPart, ToolCall, Usage
from ..protocol import StreamEnd, StreamEvent, TextDelta, ToolCallDelta

Turn: TypeAlias = (
    "str | dict[str, Any] | Message | ModelResponse | ToolCall | list[ToolCall] | BaseException"
)
Script: TypeAlias = "Sequence[Turn] | Callable[[ModelRequest], Turn]"


class ScriptedModel:
    """Answers from ``script``; ``latency`` seconds per call, ``chunk`` characters per delta.

    ``latency`` may be a function called once per call (e.g. a seeded heavy-tailed
    draw); ``cancelled`` counts calls cancelled while they waited (a hedge's loser,
    a timeout), so tests can see that a provider was really cancelled.

    Usage is counted as whitespace-separated words (``estimated=True``), so budgets
    and accounting behave as they do with a real model.
    """

    def __init__(
        self,
        script: Script = ("ok",),
        *,
        name: str = "scripted",
        latency: float | Callable[[], float] = 0.0,
        chunk: int = 8,
        token_delay: float = 0.0,
        cycle: bool = True,
    ) -> None:
        self.name = name
        self.latency = latency
        self.chunk = max(1, chunk)
        self.token_delay = token_delay
        self.cycle = cycle
        self.calls: list[ModelRequest] = []  # what it was asked, in order
        self.cancelled = 0  # calls cancelled while they waited
        self._script = script
        self._turns = itertools.count()

    def _turn(self, request: ModelRequest) -> Any:
        self.calls.append(request)
        if callable(self._script):
            return self._script(request)
        n = next(self._turns)
        if n >= len(self._script):
            if not self.cycle or not self._script:
                raise IndexError(
                    f"scripted model {self.name!r} has {len(self._script)} turns and was "
                    f"called {n + 1} times; add turns or pass cycle=True"
                )
            n = len(self._script) - 1
        return self._script[n]

    def _response(self, request: ModelRequest, turn: Any) -> ModelResponse:
        if isinstance(turn, BaseException):
            raise turn
        if isinstance(turn, ModelResponse):
            return turn
        if isinstance(turn, Message):
            message = turn
        elif isinstance(turn, ToolCall):
            message = Message("assistant", [turn])
        elif isinstance(turn, list):
            message = Message("assistant", list(turn))
        elif isinstance(turn, dict):
            message = Message("assistant", [TextPart(msgspec.json.encode(turn).decode())])
        else:
            message = Message("assistant", [TextPart(str(turn))])
        finish = "tool_calls" if message.tool_calls else "stop"
        prompt = sum(len(m.text.split()) + 4 for m in request.messages)
        out = len(message.text.split()) + sum(
            len(msgspec.json.encode(c.arguments)) // 4 for c in message.tool_calls
        )
        usage = Usage(input_tokens=prompt, output_tokens=out, estimated=True)
        return ModelResponse(message, model=request.model, provider=self.name,
                             finish_reason=finish, usage=usage)  # fmt: skip

    async def _sleep(self, seconds: float) -> None:
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise

    async def _wait(self) -> None:
        seconds = self.latency() if callable(self.latency) else self.latency
        if seconds:
            await self._sleep(seconds)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        turn = self._turn(request)
        await self._wait()
        return self._response(request, turn)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        turn = self._turn(request)
        await self._wait()
        response = self._response(request, turn)
        text = response.text
        for i in range(0, len(text), self.chunk):
            if self.token_delay:
                await self._sleep(self.token_delay)
            yield TextDelta(text[i : i + self.chunk])
        for i, call in enumerate(response.tool_calls):
            args = msgspec.json.encode(call.arguments).decode()
            yield ToolCallDelta(i, call.id, call.name, args[: len(args) // 2])
            yield ToolCallDelta(i, None, None, args[len(args) // 2 :])
        yield StreamEnd(response)

    async def aclose(self) -> None:
        return None

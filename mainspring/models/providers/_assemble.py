"""What the HTTP providers share between wire formats: tool-call arguments parsed, deltas
assembled into the final message, and the clock of a call (ttft, latency).

Arguments a model wrote as invalid JSON are kept, not dropped or raised: the call
gets ``{"_raw": "<what the model wrote>"}``, so an agent (or the gateway's repair
loop) can see the mistake and answer it with a tool error.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..messages import Message, ModelRequest, ModelResponse, Part, TextPart, ToolCall, Usage
from ..protocol import ReasoningDelta, TextDelta, ToolCallDelta

RAW_ARGUMENTS = "_raw"


def parse_arguments(raw: str | dict[str, Any] | None) -> dict[str, Any]:
    """A tool call's arguments: the JSON object it wrote, or ``{"_raw": text}`` if it is not one."""
    if isinstance(raw, dict):
        return raw
    if raw is None or not raw.strip():
        return {}
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {RAW_ARGUMENTS: raw}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS: raw}


def parse_output(text: str) -> Any:
    """The JSON of a structured answer, or None when it is not JSON (the gateway validates)."""
    try:
        return msgspec.json.decode(text) if text else None
    except msgspec.DecodeError:
        return None


def response(
    provider: str,
    request: ModelRequest,
    message: Message,
    *,
    model: str | None,
    finish: str,
    usage: Usage,
    ident: str,
    clock: Clock,
    ttft: float | None = None,
) -> ModelResponse:
    """The response every wire format ends a call with: the structured output parsed from
    the text when one was asked for, the call's timing."""
    return ModelResponse(
        message,
        model=model or request.model,
        provider=provider,
        finish_reason=finish,
        usage=usage,
        id=ident,
        output=parse_output(message.text) if request.output else None,
        ttft=ttft,
        latency=clock.latency(),
    )


def dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class Clock:
    """A call's timing: ``ttft`` at the first delta, ``latency`` at the end, in seconds."""

    __slots__ = ("start", "ttft")

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ttft: float | None = None

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.start

    def latency(self) -> float:
        return time.perf_counter() - self.start


class Assembler:
    """Collects a stream's deltas (text, reasoning, tool calls by index) into one message."""

    def __init__(self) -> None:
        self.clock = Clock()
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]

    @property
    def started(self) -> bool:
        """Whether a delta was given out (after which a failure is an interruption)."""
        return self.clock.ttft is not None

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    def add_text(self, text: str) -> TextDelta:
        self.clock.first_token()
        self._text.append(text)
        return TextDelta(text)

    def add_reasoning(self, text: str) -> ReasoningDelta:
        self.clock.first_token()
        self._reasoning.append(text)
        return ReasoningDelta(text)

    def add_tool(
        self, index: int, id: str | None = None, name: str | None = None, arguments: str = ""
    ) -> ToolCallDelta:
        self.clock.first_token()
        call = self._calls.setdefault(index, ["", "", ""])
        if id:
            call[0] = id
        if name:
            call[1] = name
        call[2] += arguments
        return ToolCallDelta(index, id or None, name or None, arguments)

    def message(self) -> Message:
        parts: list[Part] = [TextPart(self.text)] if self._text else []
        for index in sorted(self._calls):
            id, name, arguments = self._calls[index]
            parts.append(ToolCall(id, name, parse_arguments(arguments)))
        return Message("assistant", parts)

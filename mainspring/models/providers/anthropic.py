"""The Anthropic Messages API (``POST {base_url}/v1/messages``): ``x-api-key`` and
``anthropic-version`` headers, the system prompt apart from the messages, content
blocks (text, image, tool_use, tool_result, thinking), ``max_tokens`` always sent.

Structured output is a forced tool whose input is the output: the model must call
it, and its input comes back as the answer's JSON text (streamed as text deltas).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from .._http import HTTPTransport, KeySource, SecretsProvider, interrupted, stream_error
from ..errors import ContentFilteredError
from ..messages import (
    ImagePart,
    Message,
    ModelRequest,
    ModelResponse,
    Part,
    TextPart,
    ToolCall,
    Usage,
)
from ..protocol import StreamEnd, StreamEvent
from ._assemble import Assembler, Clock, dumps, response

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


class Anthropic:
    """The Messages API; ``max_tokens`` is sent when a request gives none (the API needs it)."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        secrets: SecretsProvider | None = None,
        name: str = "anthropic",
        max_tokens: int = 4096,
        version: str = ANTHROPIC_VERSION,
        headers: dict[str, str] | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_connections: int = 100,
        http2: bool | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.max_tokens = max_tokens
        url = (base_url or ANTHROPIC_BASE_URL).rstrip("/")
        self._http = HTTPTransport(
            name,
            url,
            KeySource(api_key_env, api_key, secrets),
            lambda key: {"x-api-key": key},
            key_required=url == ANTHROPIC_BASE_URL,
            headers={"anthropic-version": version, **(headers or {})},
            timeout=timeout,
            max_connections=max_connections,
            http2=http2,
            client=client,
        )

    def __repr__(self) -> str:
        return f"Anthropic(name={self.name!r}, base_url={self._http.base_url!r})"

    def body(self, request: ModelRequest, *, stream: bool = False) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        system = "\n\n".join(m.text for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or self.max_tokens,
            "messages": wire_messages(request.messages),
        }
        if system:
            body["system"] = system
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        if request.output is not None:
            spec = request.output
            tools.append(
                {
                    "name": spec.name,
                    "description": "Answer with this tool: its input is the answer.",
                    "input_schema": spec.schema,
                }
            )
            body["tool_choice"] = {"type": "tool", "name": spec.name}
        elif request.tool_choice is not None:
            body["tool_choice"] = _CHOICE.get(request.tool_choice) or {
                "type": "tool",
                "name": request.tool_choice,
            }
        if tools:
            body["tools"] = tools
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = request.stop
        if stream:
            body["stream"] = True
        body.update(request.params)
        return body

    async def complete(self, request: ModelRequest) -> ModelResponse:
        clock = Clock()
        data = await self._http.post_json("/v1/messages", self.body(request), request.model)
        output = request.output.name if request.output else None
        parts: list[Part] = []
        for block in data.get("content") or ():
            kind = block.get("type")
            if kind == "text" and output is None:
                parts.append(TextPart(block.get("text", "")))
            elif kind == "tool_use" and block.get("name") == output:
                parts.append(TextPart(dumps(block.get("input") or {})))
            elif kind == "tool_use":
                parts.append(
                    ToolCall(block.get("id", ""), block.get("name", ""), block.get("input") or {})
                )
        message = Message("assistant", parts)
        return self._response(data, message, data.get("stop_reason"), request, clock, None)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        acc = Assembler()
        output = request.output.name if request.output else None
        blocks: dict[int, tuple[str, int]] = {}  # content block index -> (kind, tool index)
        head: dict[str, Any] = {}
        usage: dict[str, Any] = {}
        stop: str | None = None
        done = False
        body = self.body(request, stream=True)
        async for event in self._http.stream_sse(
            "/v1/messages", body, request.model, lambda: acc.text
        ):
            if done:  # after the end: read the body out, so the connection is reused
                continue
            data = _decode(event.data, self.name, request.model, acc)
            kind = data.get("type") or event.event
            if kind == "message_start":
                head = data.get("message") or {}
                usage.update(head.get("usage") or {})
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                delta = _block_start(acc, blocks, data.get("index", 0), block, output)
                if delta is not None:
                    yield delta
            elif kind == "content_block_delta":
                delta = _block_delta(acc, blocks, data.get("index", 0), data.get("delta") or {})
                if delta is not None:
                    yield delta
            elif kind == "message_delta":
                stop = (data.get("delta") or {}).get("stop_reason") or stop
                usage.update(data.get("usage") or {})
            elif kind == "message_stop":
                done = True
            elif kind == "error":
                raise stream_error(
                    self.name, request.model, event.data, acc.text if acc.started else None
                )
        if not done:
            raise interrupted(self.name, request.model, acc.text, "no message_stop event")
        message = acc.message()
        data = {**head, "usage": usage}
        yield StreamEnd(self._response(data, message, stop, request, acc.clock, acc.clock.ttft))

    def _response(
        self,
        data: dict[str, Any],
        message: Message,
        stop: str | None,
        request: ModelRequest,
        clock: Clock,
        ttft: float | None,
    ) -> ModelResponse:
        finish = _FINISH.get(stop or "end_turn", stop or "stop")
        if request.output is not None and finish == "tool_calls":
            finish = "stop"  # the forced output tool: an answer, not a call
        if finish == "content_filter" and not message.content:
            raise ContentFilteredError(
                f"{self.name} model {request.model!r} refused to answer (stop_reason refusal); "
                "rephrase the prompt, or fall back to another provider",
                provider=self.name,
                model=request.model,
            )
        return response(
            self.name, request, message, model=data.get("model"), finish=finish,
            usage=anthropic_usage(data.get("usage")), ident=data.get("id", ""), clock=clock,
            ttft=ttft,
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._http.aclose()


def wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages as Anthropic turns: tool results are user blocks, and adjacent turns of one
    role are merged (the API wants every result of a turn's calls in the next user turn)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.text}]
    blocks: list[dict[str, Any]] = []
    for p in m.content:
        if isinstance(p, TextPart):
            if p.text:
                blocks.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            blocks.append({"type": "image", "source": _image_source(p)})
        elif isinstance(p, ToolCall):
            blocks.append({"type": "tool_use", "id": p.id, "name": p.name, "input": p.arguments})
    return blocks


def _image_source(p: ImagePart) -> dict[str, Any]:
    if p.url is None:
        return {"type": "base64", "media_type": p.media_type, "data": p.data or ""}
    if p.url.startswith("data:") and ";base64," in p.url:
        head, data = p.url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": head or p.media_type, "data": data}
    return {"type": "url", "url": p.url}


def _block_start(
    acc: Assembler,
    blocks: dict[int, tuple[str, int]],
    index: int,
    block: dict[str, Any],
    output: str | None,
) -> StreamEvent | None:
    kind = block.get("type", "")
    if kind == "tool_use" and block.get("name") == output:
        blocks[index] = ("output", -1)
    elif kind == "tool_use":
        tool = sum(1 for k, _ in blocks.values() if k == "tool")
        blocks[index] = ("tool", tool)
        return acc.add_tool(tool, block.get("id"), block.get("name"))
    elif output is not None and kind == "text":
        blocks[index] = ("skip", -1)  # the answer is the output tool's input, nothing else
    else:
        blocks[index] = (kind, -1)
        if kind == "text" and block.get("text"):
            return acc.add_text(block["text"])
    return None


def _block_delta(
    acc: Assembler, blocks: dict[int, tuple[str, int]], index: int, delta: dict[str, Any]
) -> StreamEvent | None:
    kind, tool = blocks.get(index, ("text", -1))
    dtype = delta.get("type")
    if kind == "skip":
        return None
    if dtype == "text_delta":
        return acc.add_text(delta.get("text", ""))
    if dtype == "thinking_delta":
        return acc.add_reasoning(delta.get("thinking", ""))
    if dtype == "input_json_delta":
        fragment = delta.get("partial_json", "")
        if kind == "output":  # the structured answer forming, as text
            return acc.add_text(fragment) if fragment else None
        if kind == "tool":
            return acc.add_tool(tool, arguments=fragment)
        return None  # a server tool's input (web_search...): Anthropic runs it, not the caller
    return None  # signature_delta, citations: not part of the message model


def _decode(data: str, provider: str, model: str, acc: Assembler) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise interrupted(
            provider, model, acc.text, f"an unreadable event {data[:200]!r}"
        ) from None
    return value if isinstance(value, dict) else {}


def anthropic_usage(wire: dict[str, Any] | None) -> Usage:
    """Anthropic usage; its ``input_tokens`` leaves out cache reads and writes, ours counts them."""
    if not wire:
        return Usage()
    read = wire.get("cache_read_input_tokens") or 0
    written = wire.get("cache_creation_input_tokens") or 0
    return Usage(
        input_tokens=(wire.get("input_tokens") or 0) + read + written,
        output_tokens=wire.get("output_tokens") or 0,
        cached_tokens=read,
    )

"""The OpenAI Responses API (``POST {base_url}/responses``): typed input items, function
calls as items of their own, reasoning summaries, and a stream of semantic events that
ends with ``response.completed`` (or ``response.incomplete``), whose response is final.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from .._http import HTTPTransport, KeySource, SecretsProvider, interrupted, stream_error
from ..errors import BadRequestError, ContentFilteredError
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
from ._assemble import Assembler, Clock, dumps, parse_arguments, response
from .openai_chat import OPENAI_BASE_URL

_END_EVENTS = frozenset({"response.completed", "response.incomplete"})
# The schema says max_output_tokens; the API reference's response.incomplete example says
# max_tokens. Both are a cut at the token limit.
_LENGTH_REASONS = frozenset({"max_output_tokens", "max_tokens"})


class OpenAIResponses:
    """The Responses API. ``stop`` sequences are not part of it (a request with them is a
    BadRequestError); ``params`` go into the body as given (e.g. ``{"store": False}``)."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        secrets: SecretsProvider | None = None,
        name: str = "openai-responses",
        headers: dict[str, str] | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_connections: int = 100,
        http2: bool | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self._http = HTTPTransport(
            name,
            url,
            KeySource(api_key_env, api_key, secrets),
            lambda key: {"authorization": f"Bearer {key}"},
            key_required=url == OPENAI_BASE_URL,
            headers=headers,
            timeout=timeout,
            max_connections=max_connections,
            http2=http2,
            client=client,
        )

    def __repr__(self) -> str:
        return f"OpenAIResponses(name={self.name!r}, base_url={self._http.base_url!r})"

    def body(self, request: ModelRequest, *, stream: bool = False) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        if request.stop:
            raise BadRequestError(
                f"{self.name}: the Responses API has no stop sequences; drop stop= or use "
                "OpenAIChat",
                provider=self.name,
                model=request.model,
            )
        items: list[dict[str, Any]] = []
        for m in request.messages:
            items.extend(input_items(m))
        body: dict[str, Any] = {"model": request.model, "input": items}
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    "strict": False,
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            choice = request.tool_choice
            body["tool_choice"] = (
                choice
                if choice in ("auto", "none", "required")
                else {"type": "function", "name": choice}
            )
        if request.output is not None:
            spec = request.output
            body["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": spec.name,
                    "schema": spec.schema,
                    "strict": spec.strict,
                }
            }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_output_tokens"] = request.max_tokens
        if stream:
            body["stream"] = True
        body.update(request.params)
        return body

    async def complete(self, request: ModelRequest) -> ModelResponse:
        clock = Clock()
        data = await self._http.post_json("/responses", self.body(request), request.model)
        return self._response(data, request, clock, None)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        acc = Assembler()
        calls: dict[int, int] = {}  # output_index -> tool call index
        final: dict[str, Any] | None = None
        body = self.body(request, stream=True)
        async for event in self._http.stream_sse(
            "/responses", body, request.model, lambda: acc.text
        ):
            if final is not None:  # after the end: read the body out, so the connection is reused
                continue
            data = _decode(event.data, self.name, request.model, acc)
            kind = data.get("type") or event.event
            if kind in _END_EVENTS:
                final = data.get("response") or {}
                continue
            if kind in ("error", "response.failed"):
                raise stream_error(
                    self.name, request.model, _error_body(data), acc.text if acc.started else None
                )
            delta = _delta(acc, calls, kind, data)
            if delta is not None:
                yield delta
        if final is None:
            raise interrupted(self.name, request.model, acc.text, "no response.completed event")
        streamed = acc.message() if not final.get("output") else None
        yield StreamEnd(self._response(final, request, acc.clock, acc.clock.ttft, streamed))

    def _response(
        self,
        data: dict[str, Any],
        request: ModelRequest,
        clock: Clock,
        ttft: float | None,
        streamed: Message | None = None,
    ) -> ModelResponse:
        message, refusal = output_message(data.get("output") or [])
        if streamed is not None:  # a final response that omits its output: what streamed
            message = streamed
        incomplete = (data.get("incomplete_details") or {}).get("reason")
        if refusal is not None or (incomplete == "content_filter" and not message.content):
            raise ContentFilteredError(
                f"{self.name} model {request.model!r} refused: {refusal or incomplete!r}; "
                "rephrase the prompt, or fall back to another provider",
                provider=self.name,
                model=request.model,
            )
        if message.tool_calls:
            finish = "tool_calls"
        elif incomplete in _LENGTH_REASONS:
            finish = "length"
        else:
            finish = incomplete or "stop"
        return response(
            self.name, request, message, model=data.get("model"), finish=finish,
            usage=responses_usage(data.get("usage")), ident=data.get("id", ""), clock=clock,
            ttft=ttft,
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._http.aclose()


def input_items(m: Message) -> list[dict[str, Any]]:
    """One message as Responses input items (a tool call or result is an item of its own)."""
    if m.role == "tool":
        return [{"type": "function_call_output", "call_id": m.tool_call_id or "", "output": m.text}]
    if m.role == "assistant":
        items: list[dict[str, Any]] = []
        if m.text:
            items.append({"role": "assistant", "content": m.text})
        items.extend(
            {
                "type": "function_call",
                "call_id": c.id,
                "name": c.name,
                "arguments": dumps(c.arguments),
            }
            for c in m.tool_calls
        )
        return items
    if all(isinstance(p, TextPart) for p in m.content):
        return [{"role": m.role, "content": m.text}]
    content: list[dict[str, Any]] = []
    for p in m.content:
        if isinstance(p, TextPart):
            content.append({"type": "input_text", "text": p.text})
        elif isinstance(p, ImagePart):
            content.append({"type": "input_image", "image_url": p.as_url()})
    return [{"role": m.role, "content": content}]


def output_message(output: list[dict[str, Any]]) -> tuple[Message, str | None]:
    """The assistant message of a response's output items, and its refusal if it refused."""
    parts: list[Part] = []
    refusal: str | None = None
    for item in output:
        kind = item.get("type")
        if kind == "message":
            for c in item.get("content") or ():
                if c.get("type") == "output_text":
                    parts.append(TextPart(c.get("text", "")))
                elif c.get("type") == "refusal":
                    refusal = c.get("refusal", "")
        elif kind == "function_call":
            parts.append(
                ToolCall(
                    item.get("call_id") or item.get("id", ""),
                    item.get("name", ""),
                    parse_arguments(item.get("arguments")),
                )
            )
    text = "".join(p.text for p in parts if isinstance(p, TextPart))
    calls = [p for p in parts if isinstance(p, ToolCall)]
    return Message("assistant", [*([TextPart(text)] if text else []), *calls]), refusal


def _delta(
    acc: Assembler, calls: dict[int, int], kind: str, data: dict[str, Any]
) -> StreamEvent | None:
    if kind == "response.output_text.delta":
        return acc.add_text(data.get("delta", ""))
    if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
        return acc.add_reasoning(data.get("delta", ""))
    if kind == "response.output_item.added":
        item = data.get("item") or {}
        if item.get("type") == "function_call":
            index = calls.setdefault(data.get("output_index", 0), len(calls))
            return acc.add_tool(
                index, item.get("call_id"), item.get("name"), item.get("arguments") or ""
            )
    if kind == "response.function_call_arguments.delta":
        index = calls.setdefault(data.get("output_index", 0), len(calls))
        return acc.add_tool(index, arguments=data.get("delta", ""))
    return None


def _decode(data: str, provider: str, model: str, acc: Assembler) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise interrupted(
            provider, model, acc.text, f"an unreadable event {data[:200]!r}"
        ) from None
    return value if isinstance(value, dict) else {}


def _error_body(data: dict[str, Any]) -> str:
    """An ``error`` or ``response.failed`` event as an error body ``provider_reason`` reads."""
    err = data.get("error") or (data.get("response") or {}).get("error") or data
    return msgspec.json.encode({"error": err}).decode()


def responses_usage(wire: dict[str, Any] | None) -> Usage:
    """Responses usage, with cached input tokens and reasoning tokens."""
    if not wire:
        return Usage()
    return Usage(
        input_tokens=wire.get("input_tokens") or 0,
        output_tokens=wire.get("output_tokens") or 0,
        cached_tokens=(wire.get("input_tokens_details") or {}).get("cached_tokens") or 0,
        reasoning_tokens=(wire.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
    )
